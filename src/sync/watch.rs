//! File watches on local repositories: a commit or push to a repository on this machine
//! triggers its sync at once instead of at the next poll. I/O (inotify via `notify`).

use std::path::PathBuf;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Watches the refs of each `(project, git_dir)` and sends the project's name on `tx` when they
/// change. The returned watcher must be kept alive.
pub fn watch_refs(
    repos: &[(String, PathBuf)],
    tx: mpsc::Sender<String>,
) -> notify::Result<notify::RecommendedWatcher> {
    let dirs: Vec<(String, PathBuf)> = repos.to_vec();
    let lookup = dirs.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        for (project, dir) in &lookup {
            if event
                .paths
                .iter()
                .any(|p| p.starts_with(dir) && p.extension().is_none_or(|e| e != "lock"))
            {
                // A full channel already holds a wake-up for someone; dropping is fine.
                let _ = tx.try_send(project.clone());
            }
        }
    })?;
    for (_, dir) in &dirs {
        watcher.watch(&dir.join("refs"), RecursiveMode::Recursive)?;
        // packed-refs and HEAD live at the top of the git dir.
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}

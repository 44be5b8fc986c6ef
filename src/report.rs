//! Reporting back as commits: `.ai/status/<key>.yaml` for every finished task, several per
//! commit, on top of the remote's newest default branch, with the engine's identity. A push
//! that loses a race is fetched and rebuilt; files outside `.ai/status/` are never touched.

use std::collections::HashMap;
use std::path::Path;

use chrono::Utc;

use crate::config::{Config, ProjectConfig};
use crate::gitops::{self, cache_path, GitAuth, GitError};
use crate::model::status_of;
use crate::model::{transition, TaskRow};
use crate::spec::{render_status, status_path, TaskKey, TaskState};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot report status files of project {project}")]
    Git {
        project: String,
        #[source]
        source: GitError,
    },
    #[error("cannot build the status commit of project {project}")]
    Commit {
        project: String,
        #[source]
        source: git2::Error,
    },
    #[error("cannot report status files of project {project}")]
    Store {
        project: String,
        #[source]
        source: StoreError,
    },
    #[error("reporting for project {project} panicked")]
    Panicked { project: String },
}

const PUSH_TRIES: usize = 8;

/// Commits the status files `project` owes: of every completed task not reported yet, and
/// those kept for a generation a task left before its file was committed. Returns how many.
pub async fn report_project(
    store: &Store,
    config: &Config,
    project: &ProjectConfig,
    auth: &GitAuth,
) -> Result<usize, ReportError> {
    let name = project.name.clone();
    let store_err = |source| ReportError::Store {
        project: name.clone(),
        source,
    };
    let rows: Vec<TaskRow> = store
        .report_due(&project.name)
        .await
        .map_err(store_err)?
        .into_iter()
        .filter(|r| r.state() == TaskState::Completed)
        .collect();
    let owed = store
        .owed_status_files(&project.name)
        .await
        .map_err(store_err)?;
    // A task's current file is newer than one kept for a generation it left.
    let owed: Vec<_> = owed
        .into_iter()
        .filter(|o| !rows.iter().any(|r| r.key == o.key))
        .collect();
    if rows.is_empty() && owed.is_empty() {
        return Ok(0);
    }
    let mut files: Vec<(String, Vec<u8>)> = rows
        .iter()
        .filter_map(|r| {
            TaskKey::new(&r.key)
                .ok()
                .map(|k| (status_path(&k), render_status(&status_of(r))))
        })
        .collect();
    files.extend(owed.iter().filter_map(|o| {
        TaskKey::new(&o.key)
            .ok()
            .map(|k| (status_path(&k), o.body.clone().into_bytes()))
    }));
    let count = files.len();
    let mut message = format!(
        "swarm: status of {count} task{}\n\n",
        if count == 1 { "" } else { "s" }
    );
    for r in &rows {
        let outcome = match r.result() {
            Some(res) if res.success => "succeeded".to_string(),
            Some(res) => format!(
                "failed ({})",
                res.error_class.map_or("error", |c| c.as_str())
            ),
            None => "completed".into(),
        };
        message.push_str(&format!("- {}: {outcome}\n", r.key));
    }
    for o in &owed {
        message.push_str(&format!(
            "- {}: generation {} (it runs again since)\n",
            o.key, o.generation
        ));
    }
    message.push_str("\nSwarm-Status: true\n");
    let cache = cache_path(&config.data_dir, &project.name);
    let (url, branch, git) = (
        project.repo.clone(),
        project.default_branch.clone(),
        config.git.clone(),
    );
    let pname = project.name.clone();
    let auth = auth.clone();
    let commit = at_low_priority(move || {
        push_status_commit(
            &cache, &url, &branch, &files, &message, &git.name, &git.email, &pname, &auth,
        )
    })
    .await
    .ok_or_else(|| ReportError::Panicked {
        project: name.clone(),
    })??;
    // The tasks are marked reported unless they moved on meanwhile (the model decides on
    // each row as it is now); the kept files are forgotten unless a newer one replaced them.
    let generations: HashMap<i64, i32> = rows.iter().map(|r| (r.id, r.generation)).collect();
    let ids: Vec<i64> = generations.keys().copied().collect();
    store
        .modify_tasks(&ids, Utc::now(), |row| {
            let generation = generations.get(&row.id).copied().unwrap_or_default();
            (transition::reported(row, generation, &commit), ())
        })
        .await
        .map_err(store_err)?;
    let written: Vec<(String, i32)> = owed.iter().map(|o| (o.key.clone(), o.generation)).collect();
    store
        .forget_status_files(&project.name, &written)
        .await
        .map_err(store_err)?;
    Ok(count)
}

/// The CPU priority (nice value) of the status commit's git work.
pub const REPORT_NICE: i32 = 19;

/// Runs `f` on a thread of its own at the lowest CPU priority ([`REPORT_NICE`]), so that the
/// status commit's git work (building trees, writing a pack) yields the cores to dispatch and
/// the database whenever they want them: reporting is never what a claim waits behind.
/// `None` when `f` panicked or no thread could be started.
pub async fn at_low_priority<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("swarm-report".into())
        .spawn(move || {
            // On Linux the nice value belongs to the thread (PRIO_PROCESS with a thread id);
            // failing to lower it only costs the priority.
            #[cfg(target_os = "linux")]
            unsafe {
                let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                libc::setpriority(libc::PRIO_PROCESS, tid, REPORT_NICE);
            }
            let _ = tx.send(f());
        })
        .ok()?;
    rx.await.ok()
}

#[allow(clippy::too_many_arguments)]
fn push_status_commit(
    cache: &Path,
    url: &str,
    branch: &str,
    files: &[(String, Vec<u8>)],
    message: &str,
    name: &str,
    email: &str,
    project: &str,
    auth: &GitAuth,
) -> Result<String, ReportError> {
    let git = |source| ReportError::Git {
        project: project.to_string(),
        source,
    };
    let repo = gitops::open_cache(cache, url).map_err(git)?;
    let mut last = None;
    for _ in 0..PUSH_TRIES {
        let head = match gitops::remote_head(&repo, url, branch, auth).map_err(git)? {
            Some(h) => {
                gitops::bring_cache_to(&repo, url, branch, h, auth)
                    .map_err(git)?
                    .0
            }
            None => gitops::fetch(&repo, url, branch, auth).map_err(git)?,
        };
        let commit =
            gitops::commit_files(&repo, head, files, message, name, email).map_err(|source| {
                ReportError::Commit {
                    project: project.to_string(),
                    source,
                }
            })?;
        match gitops::push(&repo, url, &commit.to_string(), branch, auth) {
            Ok(()) => return Ok(commit.to_string()),
            Err(e) if e.is_non_fast_forward() => {
                tracing::debug!(
                    project,
                    "status push lost a race; fetching and trying again"
                );
                last = Some(e);
            }
            Err(e) => return Err(git(e)),
        }
    }
    Err(git(last.unwrap_or(GitError::NoBranch {
        url: url.into(),
        branch: branch.into(),
    })))
}

#[cfg(test)]
mod tests {
    /// The status commit's git work runs on a thread whose CPU priority is the lowest, so it
    /// yields the cores to dispatch; the caller's thread keeps its own.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_status_commit_runs_at_the_lowest_cpu_priority() {
        let nice = || unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::getpriority(libc::PRIO_PROCESS, tid)
        };
        let before = nice();
        let theirs = super::at_low_priority(nice).await.unwrap();
        assert_eq!(theirs, super::REPORT_NICE);
        assert_eq!(nice(), before, "the caller's priority is unchanged");
        assert!(
            super::at_low_priority(|| -> i32 { panic!("boom") })
                .await
                .is_none(),
            "a panic is an error, not a hang"
        );
    }
}

//! Repositories -> store: ask the remote for its head, fetch only when it moved, diff the last
//! synced commit against the new one under `.ai/tasks/`, parse what changed, plan, apply.
//! Git and database I/O at the ends; the planner (`crate::model::plan`) is the pure middle,
//! run by the store on the rows it holds under the sync's lock.

pub mod watch;

use std::collections::HashMap;
use std::path::Path;

use chrono::Utc;

use crate::config::ProjectConfig;
use crate::gitops::{self, cache_path, GitAuth, GitError};
use crate::model::{plan_sync, FileChange, MANAGER_TRAILER};
use crate::spec::{parse_task, read_status, status_path, StatusSpec, STATUS_DIR, TASKS_DIR};
use crate::store::{Store, StoreError, SyncScope};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("sync of project {project} failed")]
    Git {
        project: String,
        #[source]
        source: GitError,
    },
    #[error("sync of project {project}: cannot read the fetched commit")]
    Read {
        project: String,
        #[source]
        source: git2::Error,
    },
    #[error("sync of project {project} failed")]
    Store {
        project: String,
        #[source]
        source: StoreError,
    },
    #[error("sync of project {project} panicked")]
    Panicked { project: String },
}

/// What one sync pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub commit: String,
    /// Whether the remote had moved and was fetched.
    pub fetched: bool,
    pub changed_files: usize,
    pub actions: usize,
    pub bad_files: usize,
    /// Commits in this pass that changed `.ai/plan.md` and were not made by a manager run:
    /// a person steering the project manager.
    pub plan_edits: Vec<gitops::FileCommit>,
}

struct Fetched {
    head: String,
    fetched: bool,
    /// `None` when the head is already synced.
    changes: Option<Vec<FileChange>>,
    full: bool,
    /// On a full sync, the status files of the tree by key (see [`read_statuses`]).
    statuses: HashMap<String, StatusSpec>,
    plan_edits: Vec<gitops::FileCommit>,
}

/// One sync pass over one project. Its cost grows with the change, not the repository: an
/// unmoved remote costs one ls-remote, a moved one a fetch and a diff of `.ai/tasks/`.
pub async fn sync_project(
    store: &Store,
    data_dir: &Path,
    project: &ProjectConfig,
    auth: &GitAuth,
) -> Result<SyncReport, SyncError> {
    let name = project.name.clone();
    let store_err = |source| SyncError::Store {
        project: name.clone(),
        source,
    };
    let row = store.project(&project.name).await.map_err(store_err)?;
    let had_error = row.as_ref().is_some_and(|p| p.sync_error.is_some());
    let synced = row.and_then(|p| p.synced_commit);

    let cache = cache_path(data_dir, &project.name);
    let (url, branch, pname) = (
        project.repo.clone(),
        project.default_branch.clone(),
        project.name.clone(),
    );
    let auth = auth.clone();
    let fetched = tokio::task::spawn_blocking(move || {
        fetch_changes(&cache, &url, &branch, &pname, synced.as_deref(), &auth)
    })
    .await
    .map_err(|_| SyncError::Panicked {
        project: name.clone(),
    })??;

    let mut report = SyncReport {
        commit: fetched.head.clone(),
        fetched: fetched.fetched,
        plan_edits: fetched.plan_edits,
        ..SyncReport::default()
    };
    let Some(changes) = fetched.changes else {
        // Nothing new; but the remote answered, so an earlier error is over.
        if had_error {
            store
                .clear_sync_error(&project.name)
                .await
                .map_err(store_err)?;
        }
        return Ok(report);
    };
    let keys: Vec<String> = changes
        .iter()
        .filter_map(|c| crate::spec::task_key_of_path(&c.path).and_then(Result::ok))
        .map(|k| k.to_string())
        .collect();
    // No usable previous commit (first sync, or the cache was lost): the whole tree is
    // compared with every task of the project, and tasks the tree lacks are deleted.
    let scope = if fetched.full {
        SyncScope::All
    } else {
        SyncScope::Keys(&keys)
    };
    let (now, head, full) = (Utc::now(), fetched.head.clone(), fetched.full);
    let statuses = &fetched.statuses;
    let (changed, plan) = store
        .apply_sync(&project.name, &fetched.head, scope, now, |observed| {
            plan_sync(
                &project.name,
                &changes,
                observed,
                full,
                statuses,
                &head,
                now,
            )
        })
        .await
        .map_err(store_err)?;
    report.changed_files = changes.len();
    report.actions = changed;
    report.bad_files = plan.errors.len();
    for (path, e) in &plan.errors {
        tracing::warn!(project = %project.name, "{path}:{}:{}: {}", e.line, e.column, e.message);
    }
    Ok(report)
}

fn fetch_changes(
    cache: &Path,
    url: &str,
    branch: &str,
    project: &str,
    synced: Option<&str>,
    auth: &GitAuth,
) -> Result<Fetched, SyncError> {
    let git = |source| SyncError::Git {
        project: project.to_string(),
        source,
    };
    let read = |source| SyncError::Read {
        project: project.to_string(),
        source,
    };
    let mut repo = gitops::open_cache(cache, url).map_err(git)?;
    // A repository on this machine is read in place: its objects are shared, not fetched.
    let local = gitops::local_git_dir(url);
    if let Some(dir) = &local {
        match gitops::share_objects(&repo, dir) {
            Ok(true) => repo = gitops::open_cache(cache, url).map_err(git)?,
            Ok(false) => {}
            Err(e) => tracing::debug!(
                project,
                "cannot share the objects of {}: {e}",
                dir.display()
            ),
        }
    }
    let head = gitops::remote_head(&repo, url, branch, auth)
        .map_err(git)?
        .ok_or_else(|| {
            git(GitError::NoBranch {
                url: crate::config::redact_url(url),
                branch: branch.into(),
            })
        })?;
    let (_, fetched) = gitops::bring_cache_to(&repo, url, branch, head, auth).map_err(git)?;
    let head_str = head.to_string();
    if synced == Some(head_str.as_str()) {
        return Ok(Fetched {
            head: head_str,
            fetched,
            changes: None,
            full: false,
            statuses: HashMap::new(),
            plan_edits: Vec::new(),
        });
    }
    let old = synced
        .filter(|c| gitops::has_commit(&repo, c))
        .and_then(|c| git2::Oid::from_str(c).ok());
    let files = gitops::changed_files(&repo, old, head, TASKS_DIR).map_err(read)?;
    let changes = parse_all(files);
    let statuses = match old {
        None => read_statuses(&repo, head).map_err(read)?,
        Some(_) => HashMap::new(),
    };
    // A person's edit of the plan steers the manager; the manager's own edits do not.
    let plan_edits = match old {
        Some(old) => gitops::commits_touching(&repo, old, head, crate::spec::PLAN_FILE)
            .map_err(read)?
            .into_iter()
            .filter(|c| !c.message.contains(MANAGER_TRAILER))
            .collect(),
        None => Vec::new(),
    };
    Ok(Fetched {
        head: head_str,
        fetched,
        changes: Some(changes),
        full: old.is_none(),
        statuses,
        plan_edits,
    })
}

/// Parses changed task files, in order, on every core when there are many: a commit of 10,000
/// new tasks is 10,000 YAML documents, and nothing else of the sync runs meanwhile.
fn parse_all(files: Vec<gitops::ChangedFile>) -> Vec<FileChange> {
    /// Fewer files than this per thread are not worth a thread.
    const PER_THREAD: usize = 256;
    let parse = |f: gitops::ChangedFile| FileChange {
        content: f.content.as_deref().map(parse_task),
        path: f.path,
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(files.len() / PER_THREAD)
        .max(1);
    if threads == 1 {
        return files.into_iter().map(parse).collect();
    }
    let per = files.len().div_ceil(threads);
    let mut chunks = Vec::with_capacity(threads);
    let mut rest = files;
    while rest.len() > per {
        let tail = rest.split_off(per);
        chunks.push(rest);
        rest = tail;
    }
    chunks.push(rest);
    std::thread::scope(|s| {
        let parsing: Vec<_> = chunks
            .into_iter()
            .map(|c| s.spawn(move || c.into_iter().map(parse).collect::<Vec<_>>()))
            .collect();
        parsing
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// The status files at `head`, by key: what a database rebuilt from the repository knows of
/// each task's last completed generation. A file that does not read as a status file, or whose
/// name is not its key's, is left out (the task then runs as new, which is what it would do
/// without the file).
fn read_statuses(
    repo: &git2::Repository,
    head: git2::Oid,
) -> Result<HashMap<String, StatusSpec>, git2::Error> {
    let files = gitops::changed_files(repo, None, head, STATUS_DIR)?;
    Ok(files
        .into_iter()
        .filter_map(|f| {
            let status = read_status(f.content.as_deref()?)?;
            (status_path(&status.key) == f.path).then(|| (status.key.to_string(), status))
        })
        .collect())
}

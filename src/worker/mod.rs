//! What runs inside a job (`swarm worker`): clone the repository, check out or create the
//! task's branch, run the agent profile's command on the prompt, commit what changed, push, and
//! write the result. All I/O; one run per process.

mod agent;

use std::path::{Path, PathBuf};

use chrono::Utc;
use serde::{Deserialize, Serialize};

pub use agent::{expand_command, AgentOutput};

use crate::config::AgentProfile;
use crate::gitops;
use crate::runtime::local::{write_atomic, LOG_FILE, RESULT_FILE, STARTED_FILE, TASK_FILE};
use crate::spec::{truncate, ErrorClass, RunResult};

/// Everything a worker needs to know about its task, written by the engine as `task.json`.
/// It holds no database credentials and no secret values: secrets reach the agent only through
/// the environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerTask {
    pub project: String,
    pub key: String,
    pub generation: i32,
    pub attempt: i32,
    pub run_name: String,
    /// The repository to clone and push to.
    pub repo: String,
    pub branch: String,
    /// Where a new branch starts.
    pub base: String,
    pub kind: Option<String>,
    pub prompt: String,
    pub agent_name: String,
    pub agent: AgentProfile,
    pub git_name: String,
    pub git_email: String,
}

/// Runs the task in `run_dir` and writes `result.json` there. Returns the result as well.
pub fn run(run_dir: &Path) -> RunResult {
    let started_at = Utc::now();
    // First of all: from here on a lost run counts as one that ran.
    if let Err(e) = write_atomic(
        &run_dir.join(STARTED_FILE),
        started_at.to_rfc3339().as_bytes(),
    ) {
        tracing::error!("cannot mark the run as started: {e}");
    }
    let mut result = match std::fs::read(run_dir.join(TASK_FILE)) {
        Err(e) => RunResult::failure(
            ErrorClass::Crash,
            format!("cannot read {}: {e}", run_dir.join(TASK_FILE).display()),
        ),
        Ok(bytes) => match serde_json::from_slice::<WorkerTask>(&bytes) {
            Err(e) => RunResult::failure(
                ErrorClass::Crash,
                format!("{} does not parse: {e}", TASK_FILE),
            ),
            Ok(task) => {
                tracing::info!(project = %task.project, task = %task.key, run = %task.run_name, "worker starts");
                work(&task, run_dir)
            }
        },
    };
    result.started_at = Some(started_at);
    result.finished_at = Some(Utc::now());
    if let Ok(bytes) = serde_json::to_vec_pretty(&result) {
        if let Err(e) = write_atomic(&run_dir.join(RESULT_FILE), &bytes) {
            tracing::error!("cannot write the result: {e}");
        }
    }
    result
}

fn work(task: &WorkerTask, run_dir: &Path) -> RunResult {
    let checkout = run_dir.join("checkout");
    let _ = std::fs::remove_dir_all(&checkout);
    let repo = match prepare_checkout(task, &checkout) {
        Ok(r) => r,
        Err(e) => {
            return RunResult::failure(
                ErrorClass::Git,
                format!("cannot check out {}: {e}", task.branch),
            )
        }
    };
    let prompt_file = run_dir.join("prompt.md");
    if let Err(e) = std::fs::write(&prompt_file, &task.prompt) {
        return RunResult::failure(
            ErrorClass::Crash,
            format!("cannot write the prompt file: {e}"),
        );
    }
    let home = run_dir.join("home");
    let _ = std::fs::create_dir_all(&home);
    let output = match agent::run_agent(
        task,
        &checkout,
        &prompt_file,
        &home,
        &run_dir.join(LOG_FILE),
    ) {
        Ok(o) => o,
        Err(result) => return result,
    };
    let mut result = RunResult {
        success: output.success,
        branch: Some(task.branch.clone()),
        ..RunResult::default()
    };
    result.summary = output.summary.clone();
    if !output.success {
        result.error_class = Some(ErrorClass::Agent);
        result.error = Some(
            output
                .error
                .clone()
                .unwrap_or_else(|| "the agent failed".into()),
        );
    }
    // Whatever the agent did is kept, success or not: a failed attempt's work is evidence.
    match commit_and_push(task, &repo) {
        Ok(Some(commit)) => {
            result.changed = true;
            result.commit_sha = Some(commit);
        }
        Ok(None) => {
            if result.success && result.summary.is_none() {
                result.summary = Some("no changes".into());
            }
        }
        Err(e) => {
            return RunResult {
                success: false,
                error_class: Some(ErrorClass::Git),
                error: Some(format!("cannot commit or push {}: {e}", task.branch)),
                ..result
            }
        }
    }
    result
}

fn prepare_checkout(task: &WorkerTask, checkout: &Path) -> Result<git2::Repository, String> {
    let m = |e: git2::Error| e.message().to_string();
    let mut fetch = git2::FetchOptions::new();
    fetch.remote_callbacks(gitops::callbacks());
    let repo = git2::build::RepoBuilder::new()
        .fetch_options(fetch)
        .clone(&task.repo, checkout)
        .map_err(|e| format!("clone failed: {}", e.message()))?;
    let start = match repo.refname_to_id(&format!("refs/remotes/origin/{}", task.branch)) {
        Ok(id) => id,
        Err(_) => repo
            .refname_to_id(&format!("refs/remotes/origin/{}", task.base))
            .map_err(|_| {
                format!(
                    "neither the branch {} nor its base {} exists on the remote",
                    task.branch, task.base
                )
            })?,
    };
    // The clone has the remote's default branch checked out already; any other branch is
    // created (or reset) at its start and checked out.
    let current = repo
        .head()
        .ok()
        .and_then(|h| h.shorthand().map(str::to_string));
    if current.as_deref() != Some(task.branch.as_str()) {
        let commit = repo.find_commit(start).map_err(m)?;
        let refname = repo
            .branch(&task.branch, &commit, true)
            .map_err(m)?
            .get()
            .name()
            .unwrap_or_default()
            .to_string();
        repo.checkout_tree(
            commit.as_object(),
            Some(git2::build::CheckoutBuilder::new().force()),
        )
        .map_err(m)?;
        repo.set_head(&refname).map_err(m)?;
    }
    Ok(repo)
}

/// Commits every change in the work tree (if any) and pushes the branch. `None` when nothing
/// changed.
fn commit_and_push(task: &WorkerTask, repo: &git2::Repository) -> Result<Option<String>, String> {
    let m = |e: git2::Error| e.message().to_string();
    let mut index = repo.index().map_err(m)?;
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .map_err(m)?;
    index.update_all(["*"], None).map_err(m)?;
    index.write().map_err(m)?;
    let tree_id = index.write_tree().map_err(m)?;
    let head = repo.head().map_err(m)?.peel_to_commit().map_err(m)?;
    if head.tree_id() == tree_id {
        return Ok(None);
    }
    let tree = repo.find_tree(tree_id).map_err(m)?;
    let sig = git2::Signature::now(&task.git_name, &task.git_email).map_err(m)?;
    let first_line = task
        .prompt
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let message = format!(
        "swarm: {} ({})\n\n{}\n\nSwarm-Task: {}/{}\nSwarm-Run: {}\n",
        task.key,
        task.kind.as_deref().unwrap_or("task"),
        truncate(first_line, 200),
        task.project,
        task.key,
        task.run_name
    );
    let commit = repo
        .commit(Some("HEAD"), &sig, &sig, &message, &tree, &[&head])
        .map_err(m)?;
    gitops::push(repo, &task.repo, &commit.to_string(), &task.branch).map_err(|e| {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(inner) = src {
            s.push_str(": ");
            s.push_str(&inner.to_string());
            src = inner.source();
        }
        s
    })?;
    Ok(Some(commit.to_string()))
}

/// The run directory a worker was pointed at, made absolute.
pub fn resolve_run_dir(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

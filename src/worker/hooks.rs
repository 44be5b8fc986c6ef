//! The repository's own pre-commit hook (libgit2 runs no hooks): `.githooks/pre-commit` as the
//! run's start commit has it, run on the agent's staged work before the worker commits, in the
//! agent's sandbox (the local runtime's bubblewrap; a pod's agent container), with a time
//! limit. I/O.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::job::{truncate_start, JobSpec};
use crate::secrets::Redactor;
use crate::spec::{ErrorClass, RunResult};

/// Where a repository keeps the pre-commit hook the worker runs.
pub const HOOK_PATH: &str = ".githooks/pre-commit";

/// Most bytes of the hook's output kept in the result (its end).
const OUTPUT_KEPT: usize = 4000;

/// The hook as the checkout's `HEAD` has it, read before the agent runs (the agent could
/// rewrite the work tree's copy to let its own change pass). `None` when there is none, or
/// when the path is not a file.
pub(super) fn committed(repo: &git2::Repository) -> Option<Vec<u8>> {
    let tree = repo.head().ok()?.peel_to_tree().ok()?;
    let entry = tree.get_path(Path::new(HOOK_PATH)).ok()?;
    if entry.kind() != Some(git2::ObjectType::Blob) {
        return None;
    }
    let blob = repo.find_blob(entry.id()).ok()?;
    Some(blob.content().to_vec())
}

/// Whether the work tree or the branch differs from the commit the agent started from: only
/// then is there anything for the hook to check.
fn anything_changed(repo: &git2::Repository, start: git2::Oid) -> Result<bool, git2::Error> {
    let head = repo.head()?.peel_to_commit()?;
    if head.id() != start {
        return Ok(true);
    }
    Ok(stage_all(repo)? != head.tree_id())
}

/// Stages every change of the work tree, as the worker's commit will: the hook sees the
/// change in the index (`git diff --cached`), as it would before `git commit -a`.
fn stage_all(repo: &git2::Repository) -> Result<git2::Oid, git2::Error> {
    let mut index = repo.index()?;
    // The agent may have staged or committed with git itself: the index on disk is the truth.
    index.read(true)?;
    index.add_all(["*"], git2::IndexAddOption::DEFAULT, None)?;
    index.update_all(["*"], None)?;
    index.write()?;
    index.write_tree()
}

/// What the hook said.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The hook passed, or there was nothing for it to check.
    Passed,
    /// The hook refused: nothing is committed or pushed; the run's result says why.
    Refused(String),
    /// The worker could not run the hook (a `crash`): nothing is committed or pushed.
    Broken(String),
    /// The worker was asked to stop while the hook ran.
    Stopped,
}

/// Everything running the hook needs.
pub(super) struct HookRun<'a> {
    pub task: &'a JobSpec,
    pub repo: &'a git2::Repository,
    /// The commit the agent started from.
    pub start: git2::Oid,
    pub script: &'a [u8],
    pub run_dir: &'a Path,
    pub checkout: &'a Path,
    pub home: &'a Path,
    pub prompt_file: &'a Path,
    pub timeout: Duration,
    pub redactor: &'a Redactor,
}

/// Runs the hook on the agent's staged work, when it changed anything.
pub(super) fn run(h: &HookRun<'_>) -> Verdict {
    match anything_changed(h.repo, h.start) {
        Ok(false) => return Verdict::Passed,
        Ok(true) => {}
        Err(e) => {
            return Verdict::Broken(format!(
                "cannot stage the agent's work for the pre-commit hook: {}",
                e.message()
            ))
        }
    }
    // A file of its own, written after the agent ended, outside the checkout.
    let dir = h.run_dir.join("hooks");
    let hook = dir.join("pre-commit");
    let output = dir.join("pre-commit.out");
    if let Err(e) = write_executable(&dir, &hook, h.script) {
        return Verdict::Broken(format!("cannot write the pre-commit hook to run it: {e}"));
    }
    tracing::info!(hook = HOOK_PATH, "running the repository's pre-commit hook");
    let status = match spawn_and_wait(h, &hook, &output) {
        Ok(Some(status)) => status,
        Ok(None) => return Verdict::Stopped,
        Err(e) => return Verdict::Broken(e),
    };
    let said = std::fs::read(&output).unwrap_or_default();
    let said = h.redactor.redact(String::from_utf8_lossy(&said).trim());
    for line in said.lines() {
        eprintln!("pre-commit: {line}");
    }
    match status {
        HookEnd::Exited(0) => Verdict::Passed,
        HookEnd::Exited(_) | HookEnd::Signalled(_) => Verdict::Refused(format!(
            "the repository's pre-commit hook ({HOOK_PATH}) rejected the change ({}); nothing was committed or pushed. Its output:\n{}",
            status.describe(),
            truncate_start(&said, OUTPUT_KEPT)
        )),
        HookEnd::TimedOut => Verdict::Refused(format!(
            "the repository's pre-commit hook ({HOOK_PATH}) did not finish within {}; nothing was committed or pushed. Its output:\n{}",
            humantime::format_duration(h.timeout),
            truncate_start(&said, OUTPUT_KEPT)
        )),
    }
}

fn write_executable(dir: &Path, file: &Path, content: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    let _ = std::fs::remove_file(file);
    std::fs::write(file, content)?;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o755))
}

#[derive(Debug, Clone, Copy)]
enum HookEnd {
    Exited(i32),
    Signalled(i32),
    TimedOut,
}

impl HookEnd {
    fn describe(self) -> String {
        match self {
            HookEnd::Exited(code) => format!("exit code {code}"),
            HookEnd::Signalled(s) => format!("it was killed by signal {s}"),
            HookEnd::TimedOut => "it timed out".into(),
        }
    }
}

/// Starts the hook in the agent's sandbox, in its own process group, and waits for it up to
/// the time limit. `Ok(None)`: a stop request ended it.
fn spawn_and_wait(h: &HookRun<'_>, hook: &Path, output: &Path) -> Result<Option<HookEnd>, String> {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let argv = vec![hook.display().to_string()];
    let path = std::env::var("PATH").unwrap_or_default();
    let argv = match &h.task.agent.sandbox {
        Some(settings) => super::sandbox::wrap(
            &argv,
            settings,
            &super::sandbox::Paths {
                checkout: h.checkout,
                home: h.home,
                prompt_file: h.prompt_file,
                program: None,
                path: &path,
                extra_files: vec![PathBuf::from(hook)],
                local_repo: crate::gitops::local_git_dir(&h.task.repo),
                shared_objects: super::checkout::shared_objects(
                    h.task,
                    super::checkout::cache().as_deref(),
                ),
            },
        ),
        None => argv,
    };
    let out = std::fs::File::create(output)
        .map_err(|e| format!("cannot capture the hook's output: {e}"))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("cannot capture the hook's output: {e}"))?;
    let git_dir = h.repo.path().to_path_buf();
    let mut cmd = Command::new(&argv[0]);
    cmd.env_clear();
    // As the agent's: the allow-list of the worker's environment, no credential of any kind.
    for (k, v) in std::env::vars_os() {
        let name = k.to_string_lossy();
        if super::agent::AGENT_ENV.contains(&name.as_ref())
            || crate::job::NETWORK_ENV.contains(&name.as_ref())
            || name.starts_with("LC_")
        {
            cmd.env(&k, v);
        }
    }
    // What git gives a pre-commit hook: the work tree's top as its directory, the index.
    cmd.args(&argv[1..])
        .process_group(0)
        .current_dir(h.checkout)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .env("HOME", h.home)
        .env("GIT_INDEX_FILE", git_dir.join("index"))
        .env("GIT_AUTHOR_NAME", &h.task.git_name)
        .env("GIT_AUTHOR_EMAIL", &h.task.git_email)
        .env("GIT_COMMITTER_NAME", &h.task.git_name)
        .env("GIT_COMMITTER_EMAIL", &h.task.git_email)
        .env("SWARM_PROJECT", &h.task.project)
        .env("SWARM_TASK_KEY", &h.task.key)
        .env("SWARM_BRANCH", &h.task.branch);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run the repository's pre-commit hook ({HOOK_PATH}): {e}"))?;
    let pgid = child.id() as i32;
    let until = Instant::now() + h.timeout;
    let end = loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                break match status.code() {
                    Some(code) => HookEnd::Exited(code),
                    None => HookEnd::Signalled(status.signal().unwrap_or(0)),
                }
            }
            Ok(None) => {}
            Err(e) => return Err(format!("cannot wait for the pre-commit hook: {e}")),
        }
        if super::stop::requested() {
            super::stop::end_group(pgid, Duration::from_secs(2));
            let _ = child.wait();
            return Ok(None);
        }
        if Instant::now() >= until {
            super::stop::end_group(pgid, Duration::from_secs(2));
            let _ = child.wait();
            break HookEnd::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Whatever the hook left running in its group ends with it.
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pgid),
        nix::sys::signal::Signal::SIGKILL,
    );
    Ok(Some(end))
}

/// The result of a run whose hook refused (class `agent`) or could not run (`crash`): the
/// agent's own result (its summary, cost, turns), failed, with the hook's word.
pub(super) fn refused(result: RunResult, class: ErrorClass, message: String) -> RunResult {
    RunResult {
        success: false,
        error_class: Some(class),
        error: Some(message),
        changed: false,
        commit_sha: None,
        ..result
    }
}

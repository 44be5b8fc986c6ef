//! What runs inside a job (`swarm worker`): the safety check, a fresh clone, the task's branch,
//! the agent with its role prompt, a commit of what changed (refused if it holds a secret), the
//! push, and the result. All I/O; one run per process.

mod agent;
pub mod checkout;
pub mod claude;
mod git_guard;
pub mod hooks;
pub mod prompts;
pub mod sandbox;
mod stop;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use chrono::Utc;

pub use agent::{expand_command, expand_profile_env};

use crate::config::Secret;
use crate::gitops::{self, GitAuth};
use crate::job::{write_atomic, AgentKind, JobSpec, RunDir, STARTED_FILE, TASK_FILE};
use crate::secrets::{find_known, Known, Redactor};
use crate::spec::{truncate, ErrorClass, RunResult};

/// Which part of a run a `swarm worker` process does. The local runtime runs them all in one
/// process (`All`); a Kubernetes pod runs each in a container of its own, so the container
/// that runs the agent never holds the git credential: `Checkout` (clone, with the
/// credential), then `Agent` (the agent, with the model's credential only), then `Push`
/// (commit and push, with the credential, after the agent's container has ended).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    All,
    Checkout,
    Agent,
    Push,
}

/// What the checkout phase hands the push phase, in a directory the agent's container does
/// not mount (the agent could otherwise move the commit the secret check starts from).
const CHECKOUT_STATE: &str = "checkout.json";
/// The agent phase's result, for the push phase (the agent's own word, as its output is).
const AGENT_RESULT: &str = "agent-result.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct CheckoutState {
    started_at: chrono::DateTime<Utc>,
    /// The commit the run starts from; absent when the checkout failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start: Option<String>,
    /// Why the checkout failed: the run's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failed: Option<RunResult>,
}

/// `swarm worker`: runs `phase` of the task of `run_dir` (its `task.json`, or `task_json` when
/// the job got its task another way, as a pod does) and returns the exit code. With
/// `termination_log`, a compact result is also written there (Kubernetes keeps it as the
/// termination message). `state_dir` is where the checkout phase leaves what the push phase
/// needs (default: the run directory).
pub fn run_job(
    run_dir: &Path,
    task_json: Option<String>,
    termination_log: Option<&Path>,
    phase: Phase,
    state_dir: Option<&Path>,
) -> std::io::Result<u8> {
    stop::install();
    std::fs::create_dir_all(run_dir)?;
    let run_dir = resolve_run_dir(run_dir);
    let task_file = run_dir.join(TASK_FILE);
    // In a pod, the run directory is the agent's to write: a `task.json` left there could name
    // another remote for the push and its credential. Each phase takes the task from the
    // mounted ConfigMap (`task_json`) again; the agent's container has ended, with every
    // process of it, before the push container starts.
    if let Some(json) = task_json {
        if phase != Phase::All || !task_file.exists() {
            write_atomic(&task_file, json.as_bytes())?;
        }
    }
    let state_dir = state_dir.map_or_else(|| run_dir.clone(), Path::to_path_buf);
    let result = match phase {
        Phase::All => run(&run_dir),
        Phase::Checkout => {
            std::fs::create_dir_all(&state_dir)?;
            checkout_phase(&run_dir, &state_dir)?;
            return Ok(0);
        }
        Phase::Agent => {
            agent_phase(&run_dir)?;
            return Ok(0);
        }
        Phase::Push => push_phase(&run_dir, &state_dir),
    };
    if let Some(path) = termination_log {
        let compact = crate::job::JobResult::compact(&result, 4000);
        if let Err(e) = std::fs::write(path, compact) {
            tracing::error!(
                "cannot write the termination message {}: {e}",
                path.display()
            );
        }
    }
    Ok(exit_code(&result))
}

/// The exit code of `swarm worker` for a result.
pub fn exit_code(result: &RunResult) -> u8 {
    match (result.success, result.error_class) {
        (true, _) => 0,
        (false, Some(ErrorClass::BillingGuard)) => claude::EXIT_BILLING_GUARD,
        (false, _) => 2,
    }
}

/// Runs the task in `run_dir` and writes `result.json` there. Returns the result as well.
pub fn run(run_dir: &Path) -> RunResult {
    let started_at = Utc::now();
    close_lock_on_exec();
    git_guard::ignore_user_config();
    // First of all: from here on a lost run counts as one that ran.
    if let Err(e) = write_atomic(
        &run_dir.join(STARTED_FILE),
        started_at.to_rfc3339().as_bytes(),
    ) {
        tracing::error!("cannot mark the run as started: {e}");
    }
    let mut redactor = Redactor::from_env();
    let auth = git_auth_from_env();
    let result = match read_task(run_dir) {
        Err(failure) => failure,
        Ok(task) => {
            tracing::info!(project = %task.project, task = %task.key, run = %task.run_name, agent = %task.agent_name, "worker starts");
            work(&task, run_dir, &mut redactor, &auth)
        }
    };
    finish(run_dir, result, started_at, &redactor)
}

/// The job's git credential: the file `SWARM_GIT_TOKEN_FILE` names (read when it is used, so a
/// token the engine renews during a long run is the one pushed with), else `SWARM_GIT_TOKEN`
/// or `GITHUB_TOKEN` from the environment (the local runtime's engine passes its own, or one
/// minted for the job; on Kubernetes, the workers' Secret).
fn git_auth_from_env() -> GitAuth {
    if let Some(file) = std::env::var_os("SWARM_GIT_TOKEN_FILE") {
        return GitAuth::from_file(PathBuf::from(file));
    }
    GitAuth::new(
        std::env::var("SWARM_GIT_TOKEN")
            .ok()
            .or_else(|| std::env::var("GITHUB_TOKEN").ok())
            .and_then(Secret::new),
    )
}

fn read_task(run_dir: &Path) -> Result<JobSpec, RunResult> {
    match std::fs::read(run_dir.join(TASK_FILE)) {
        Err(e) => Err(RunResult::failure(
            ErrorClass::Crash,
            format!("cannot read {}: {e}", run_dir.join(TASK_FILE).display()),
        )),
        Ok(bytes) => JobSpec::from_json(&bytes).map_err(|e| e.to_result()),
    }
}

/// The end of every run: its times, redaction, the log line and `result.json`.
fn finish(
    run_dir: &Path,
    mut result: RunResult,
    started_at: chrono::DateTime<Utc>,
    redactor: &Redactor,
) -> RunResult {
    result.started_at = Some(started_at);
    result.finished_at = Some(Utc::now());
    let result = redact_result(result, redactor);
    match &result.error {
        Some(e) => tracing::warn!(
            "run failed ({}): {e}",
            result.error_class.map_or("error", ErrorClass::as_str)
        ),
        None => tracing::info!("run succeeded"),
    }
    if let Err(e) = RunDir::new(run_dir).write_result(&result) {
        tracing::error!("cannot write the result: {e}");
    }
    result
}

/// The pod's first container: the clone, with the git credential. What went wrong is left for
/// the push phase, which reports it; the container itself succeeds so the pod goes on.
fn checkout_phase(run_dir: &Path, state_dir: &Path) -> std::io::Result<()> {
    git_guard::ignore_user_config();
    let started_at = Utc::now();
    let redactor = Redactor::from_env();
    let auth = git_auth_from_env();
    let outcome = read_task(run_dir).and_then(|task| {
        tracing::info!(project = %task.project, task = %task.key, run = %task.run_name, "checkout starts");
        checkout_step(&task, run_dir, &auth).map(|(_, start)| start)
    });
    let state = match outcome {
        Ok(start) => CheckoutState {
            started_at,
            start: Some(start.to_string()),
            failed: None,
        },
        Err(failure) => CheckoutState {
            started_at,
            start: None,
            failed: Some(redact_result(failure, &redactor)),
        },
    };
    write_atomic(
        &state_dir.join(CHECKOUT_STATE),
        &serde_json::to_vec(&state).unwrap_or_default(),
    )
}

/// The pod's second container: the agent, with the model's credential and no git credential.
/// Its result goes to the push phase; the container succeeds so the pod goes on.
fn agent_phase(run_dir: &Path) -> std::io::Result<()> {
    let mut redactor = Redactor::from_env();
    let result: AgentDone = match read_task(run_dir) {
        Err(failure) => failure.into(),
        Ok(task) => {
            tracing::info!(project = %task.project, task = %task.key, run = %task.run_name, agent = %task.agent_name, "agent starts");
            let checkout = run_dir.join(crate::job::CHECKOUT_DIR);
            match prepare(&task, &mut redactor) {
                Err(refusal) => refusal.into(),
                // No checkout: the clone failed, and the push phase reports why.
                Ok(_) if !checkout.join(".git").exists() => {
                    RunResult::failure(ErrorClass::Git, "the checkout container left no checkout")
                        .into()
                }
                Ok((agent_env, credentials)) => match git2::Repository::open(&checkout) {
                    Err(e) => RunResult::failure(
                        ErrorClass::Git,
                        format!("cannot open the checkout: {}", e.message()),
                    )
                    .into(),
                    Ok(repo) => agent_step(
                        &task,
                        run_dir,
                        &repo,
                        &agent_env,
                        credentials,
                        &mut redactor,
                    ),
                },
            }
        }
    };
    let held = result.held;
    let result = redact_result(result.result, &redactor);
    let mut json = serde_json::to_value(crate::job::JobResult::new(result))
        .unwrap_or_else(|_| serde_json::json!({}));
    if let (true, Some(object)) = (held, json.as_object_mut()) {
        object.insert("held".into(), true.into());
    }
    write_atomic(
        &run_dir.join(AGENT_RESULT),
        &serde_json::to_vec_pretty(&json).unwrap_or_default(),
    )
}

/// What the agent phase did: its result, and whether its work is held back (the repository's
/// pre-commit hook refused it), so that nothing is committed or pushed.
struct AgentDone {
    result: RunResult,
    held: bool,
}

impl From<RunResult> for AgentDone {
    fn from(result: RunResult) -> Self {
        Self {
            result,
            held: false,
        }
    }
}

/// The `held` mark of the agent phase's result file.
#[derive(serde::Deserialize)]
struct HeldMark {
    #[serde(default)]
    held: bool,
}

/// The pod's last container: after the agent's container has ended, the checks, the commit
/// and the push, with the git credential; then the run's result.
fn push_phase(run_dir: &Path, state_dir: &Path) -> RunResult {
    git_guard::ignore_user_config();
    let mut redactor = Redactor::from_env();
    let auth = git_auth_from_env();
    let state: Option<CheckoutState> = std::fs::read(state_dir.join(CHECKOUT_STATE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let started_at = state.as_ref().map_or_else(Utc::now, |s| s.started_at);
    let result = match (read_task(run_dir), state) {
        (Err(failure), _) => failure,
        (Ok(_), None) => RunResult::failure(
            ErrorClass::Crash,
            "the checkout container left no state; the run cannot be pushed",
        ),
        (
            Ok(_),
            Some(CheckoutState {
                failed: Some(failure),
                ..
            }),
        ) => failure,
        (Ok(task), Some(state)) => {
            let start = state
                .start
                .as_deref()
                .and_then(|s| git2::Oid::from_str(s).ok());
            let agent_result = std::fs::read(run_dir.join(AGENT_RESULT)).ok().map(|b| {
                let held = serde_json::from_slice::<HeldMark>(&b).is_ok_and(|m| m.held);
                (crate::job::JobResult::read(&b), held)
            });
            match (start, agent_result) {
                (None, _) => RunResult::failure(
                    ErrorClass::Crash,
                    "the checkout container left no start commit",
                ),
                (Some(_), None) => RunResult::failure(
                    ErrorClass::Crash,
                    "the agent's container ended without a result",
                ),
                (Some(start), Some((mut result, held))) => {
                    // What the push establishes is not the agent's to claim.
                    result.changed = false;
                    result.commit_sha = None;
                    result.branch = None;
                    add_agent_secrets(&task, &mut redactor);
                    let done = AgentDone { result, held };
                    push_step(&task, run_dir, done, start, &mut redactor, &auth)
                }
            }
        }
    };
    finish(run_dir, result, started_at, &redactor)
}

/// The run's lock, inherited from the engine, stays with the worker: the agent must not get it
/// (a stray agent child would otherwise keep the run looking alive).
fn close_lock_on_exec() {
    let Some(fd) = std::env::var("SWARM_LOCK_FD")
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return;
    };
    // SAFETY: fcntl on a descriptor number the engine handed us; failure is harmless.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
}

fn redact_result(mut r: RunResult, redactor: &Redactor) -> RunResult {
    r.summary = r.summary.map(|s| redactor.redact(&s));
    r.error = r.error.map(|s| redactor.redact(&s));
    r.logs = r.logs.map(|s| redactor.redact(&s));
    r
}

fn work(task: &JobSpec, run_dir: &Path, redactor: &mut Redactor, auth: &GitAuth) -> RunResult {
    // The safety check comes before any network traffic, the clone included.
    let (agent_env, credentials) = match prepare(task, redactor) {
        Ok(p) => p,
        Err(refusal) => return refusal,
    };
    if stop::requested() {
        return stopped();
    }
    let (repo, start) = match checkout_step(task, run_dir, auth) {
        Ok(r) => r,
        Err(failure) => return failure,
    };
    let done = agent_step(task, run_dir, &repo, &agent_env, credentials, redactor);
    drop(repo);
    let result = push_step(task, run_dir, done, start, redactor, auth);
    if let Some(cache) = checkout::cache() {
        if let Err(e) = checkout::unpin(&cache, &task.run_name) {
            tracing::warn!(
                "cannot remove the run's pins from the cache: {}",
                e.message()
            );
        }
    }
    result
}

/// The agent's environment, its values known to the redactor as secrets.
fn add_agent_secrets(task: &JobSpec, redactor: &mut Redactor) -> BTreeMap<String, String> {
    let agent_env = expand_profile_env(&task.agent.env);
    redactor.add_env(&agent_env);
    // Whatever the profile takes from the engine's environment is treated as secret, whatever
    // its name; so is a password in the repository URL.
    for (k, v) in &task.agent.env {
        if v.contains("${") {
            if let Some(expanded) = agent_env.get(k) {
                redactor.add(k, expanded);
            }
        }
    }
    if let Some(password) = url_password(&task.repo) {
        redactor.add("repository URL password", &password);
    }
    agent_env
}

/// The agent's environment and, for Claude Code, the credentials the safety check accepted.
fn prepare(
    task: &JobSpec,
    redactor: &mut Redactor,
) -> Result<(BTreeMap<String, String>, Option<claude::Credentials>), RunResult> {
    let agent_env = add_agent_secrets(task, redactor);
    if task.agent.kind != AgentKind::Claude {
        return Ok((agent_env, None));
    }
    let worker_home = std::env::var_os("SWARM_WORKER_HOME")
        .or_else(|| std::env::var_os("HOME"))
        .map(PathBuf::from);
    let credentials = claude::safety_check(&agent_env, worker_home.as_deref())?;
    if let claude::Credentials::CredentialsFile(f) = &credentials {
        redactor.add_credentials_file(f);
    }
    Ok((agent_env, Some(credentials)))
}

/// A fresh clone in the run's `checkout`, on the task's branch.
fn checkout_step(
    task: &JobSpec,
    run_dir: &Path,
    auth: &GitAuth,
) -> Result<(git2::Repository, git2::Oid), RunResult> {
    let checkout = run_dir.join(crate::job::CHECKOUT_DIR);
    let cache = checkout::cache();
    let shared = checkout::shared_objects(task, cache.as_deref());
    let failed = |e: String| {
        RunResult::failure(
            ErrorClass::Git,
            format!("cannot check out {}: {e}", task.branch),
        )
    };
    // A repository on this machine may be repacked by the engine while it is read (its
    // loose objects packed and removed): a checkout that finds an object gone is tried again.
    let mut tries = 0;
    let prepared = loop {
        match checkout::prepare(task, &checkout, auth, cache.as_deref(), &shared) {
            Ok(c) => break c,
            Err(e)
                if (e.contains("object not found") || e.contains("no match for id"))
                    && tries < 3 =>
            {
                tries += 1;
                tracing::warn!("checkout found an object gone ({e}); checking out again");
                std::thread::sleep(std::time::Duration::from_millis(200 * tries));
            }
            Err(e) => return Err(failed(e)),
        }
    };
    if let Some(cache) = cache.filter(|_| !shared.is_empty()) {
        // Without its pins the run could lose what it borrows to a gc of the cache: it does
        // not start.
        checkout::pin(&cache, &task.run_name, &prepared.borrowed).map_err(|e| {
            failed(format!(
                "cannot pin its commits in the cache: {}",
                e.message()
            ))
        })?;
    }
    tracing::info!(
        borrowed_from = ?shared.first(),
        "checked out {} at {}",
        task.branch,
        prepared.start
    );
    Ok((prepared.repo, prepared.start))
}

/// The agent on the checkout, with its role prompt and a private HOME; then, when the agent
/// succeeded and changed anything, the repository's pre-commit hook on its work.
fn agent_step(
    task: &JobSpec,
    run_dir: &Path,
    repo: &git2::Repository,
    agent_env: &BTreeMap<String, String>,
    credentials: Option<claude::Credentials>,
    redactor: &mut Redactor,
) -> AgentDone {
    // The hook as the run's start commit has it, read before the agent can change it.
    let hook = task.hooks.as_ref().and_then(|settings| {
        hooks::committed(repo).map(|script| {
            let start = repo.head().and_then(|h| h.peel_to_commit()).map(|c| c.id());
            (settings.timeout, script, start)
        })
    });
    let result = run_agent_step(task, run_dir, repo, agent_env, credentials, redactor);
    let Some((timeout, script, start)) = hook else {
        return result.into();
    };
    if !result.success || stop::requested() {
        // A failed attempt's work is evidence, pushed as it is; a stopped one pushes nothing.
        return result.into();
    }
    let start = match start {
        Ok(start) => start,
        Err(e) => {
            let message = format!(
                "cannot find the commit the run started from: {}",
                e.message()
            );
            return AgentDone {
                result: hooks::refused(result, ErrorClass::Crash, message),
                held: true,
            };
        }
    };
    let verdict = hooks::run(&hooks::HookRun {
        task,
        repo,
        start,
        script: &script,
        run_dir,
        checkout: &run_dir.join(crate::job::CHECKOUT_DIR),
        home: &run_dir.join(crate::job::HOME_DIR),
        prompt_file: &run_dir.join("prompt.md"),
        timeout,
        redactor,
    });
    match verdict {
        hooks::Verdict::Passed => result.into(),
        hooks::Verdict::Stopped => AgentDone {
            result: stopped(),
            held: true,
        },
        hooks::Verdict::Refused(message) => AgentDone {
            result: hooks::refused(result, ErrorClass::Agent, message),
            held: true,
        },
        hooks::Verdict::Broken(message) => AgentDone {
            result: hooks::refused(result, ErrorClass::Crash, message),
            held: true,
        },
    }
}

fn run_agent_step(
    task: &JobSpec,
    run_dir: &Path,
    repo: &git2::Repository,
    agent_env: &BTreeMap<String, String>,
    credentials: Option<claude::Credentials>,
    redactor: &mut Redactor,
) -> RunResult {
    let checkout = run_dir.join(crate::job::CHECKOUT_DIR);
    let home = run_dir.join(crate::job::HOME_DIR);
    let prompt = prompts::compose(
        &prompts::role_prompt(repo, task.kind.as_deref()),
        &task.key,
        &task.branch,
        &task.prompt,
    );
    let prompt_file = run_dir.join("prompt.md");
    if let Err(e) = std::fs::write(&prompt_file, &prompt) {
        return RunResult::failure(
            ErrorClass::Crash,
            format!("cannot write the prompt file: {e}"),
        );
    }
    if let Err(e) = std::fs::create_dir_all(&home) {
        return RunResult::failure(
            ErrorClass::Crash,
            format!("cannot create the run's HOME: {e}"),
        );
    }
    if let Some(c) = &credentials {
        if let Err(e) = claude::prepare_home(&home, c) {
            return RunResult::failure(
                ErrorClass::Crash,
                format!("cannot prepare the run's HOME for Claude Code: {e}"),
            );
        }
    }
    let run = agent::AgentRun {
        task,
        checkout: &checkout,
        prompt: &prompt,
        prompt_file: &prompt_file,
        home: &home,
        env: agent_env,
        redactor,
    };
    agent::run_agent(&run)
}

/// After the agent: the checkout's git configuration restored, the checks, the commit and the
/// push of whatever the agent left.
fn push_step(
    task: &JobSpec,
    run_dir: &Path,
    done: AgentDone,
    start: git2::Oid,
    redactor: &mut Redactor,
    auth: &GitAuth,
) -> RunResult {
    let AgentDone { mut result, held } = done;
    let checkout = run_dir.join(crate::job::CHECKOUT_DIR);
    if stop::requested() {
        // Stopped: the agent's group is ended, and nothing of its work is pushed.
        return RunResult {
            session_id: result.session_id,
            ..stopped()
        };
    }
    if held {
        // The repository's pre-commit hook refused the work: nothing is committed or pushed.
        return result;
    }
    if matches!(
        result.error_class,
        Some(ErrorClass::MissingCli | ErrorClass::BillingGuard)
    ) {
        // The agent never ran; there is nothing to keep. Anything else (a rate limit after
        // forty turns, say) is committed and pushed, so the next attempt continues from it.
        return result;
    }
    result.branch = Some(task.branch.clone());
    // The agent could write the checkout's git configuration (a `url.<x>.insteadOf` sends the
    // push and its credential elsewhere): it is replaced before anything is pushed, and the
    // credential goes to the project's own remote only.
    let repo = match git_guard::restore_config(
        &checkout,
        &task.repo,
        &checkout::shared_objects(task, checkout::cache().as_deref()),
    ) {
        Ok(r) => r,
        Err(e) => {
            return RunResult {
                success: false,
                error_class: Some(ErrorClass::Git),
                error: Some(format!(
                    "cannot restore the checkout's git configuration: {e}"
                )),
                ..result
            };
        }
    };
    let auth = &auth.only_for(&task.repo);
    // Whatever the agent did is kept, success or not: a failed attempt's work is evidence.
    match commit_and_push(task, &repo, start, redactor, auth) {
        Ok(Some(pushed)) => {
            result.changed = true;
            result.commit_sha = Some(pushed.commit);
            if let Some(order) = pushed.run_order {
                // The manager's next activation shows in which order its new tasks will run.
                result.summary = Some(match result.summary.take() {
                    Some(summary) if !summary.trim().is_empty() => {
                        format!("{}\n\n{order}", summary.trim_end())
                    }
                    _ => order,
                });
            }
        }
        Ok(None) => {
            if result.success && result.summary.is_none() {
                result.summary = Some("no changes".into());
            }
        }
        Err(CommitError::Stopped) => {
            return RunResult {
                session_id: result.session_id,
                ..stopped()
            }
        }
        Err(CommitError::Secret(message) | CommitError::Invalid(message)) => {
            return RunResult {
                success: false,
                error_class: Some(ErrorClass::Agent),
                error: Some(message),
                ..result
            };
        }
        Err(CommitError::Git(e)) if !result.success => {
            // The agent's own failure says more; the push problem is added to it.
            let error = format!(
                "{}; and its work could not be pushed: {e}",
                result.error.clone().unwrap_or_default()
            );
            return RunResult {
                error: Some(error),
                ..result
            };
        }
        Err(CommitError::Git(e)) => {
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

/// The result of a run asked to stop.
fn stopped() -> RunResult {
    RunResult::failure(
        ErrorClass::Cancelled,
        "the run was stopped (the worker got SIGTERM); the agent was ended and nothing was pushed",
    )
}

enum CommitError {
    /// A stop request arrived before the push.
    Stopped,
    Git(String),
    Secret(String),
    Invalid(String),
}

/// What a run pushed: its head, and the order its new task files will run in, if it added any.
struct Pushed {
    commit: String,
    run_order: Option<String>,
}

/// Commits every change left in the work tree (if any) and pushes the branch when it moved
/// since `start` (the agent may have committed itself, e.g. a merge). `None` when nothing
/// changed. Refuses to commit or push anything that contains a secret value.
fn commit_and_push(
    task: &JobSpec,
    repo: &git2::Repository,
    start: git2::Oid,
    redactor: &Redactor,
    auth: &GitAuth,
) -> Result<Option<Pushed>, CommitError> {
    let m = |e: git2::Error| CommitError::Git(e.message().to_string());
    let mut index = repo.index().map_err(m)?;
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .map_err(m)?;
    index.update_all(["*"], None).map_err(m)?;
    index.write().map_err(m)?;
    let tree_id = index.write_tree().map_err(m)?;
    let head = repo.head().map_err(m)?.peel_to_commit().map_err(m)?;
    if head.tree_id() != tree_id {
        let tree = repo.find_tree(tree_id).map_err(m)?;
        let sig = git2::Signature::now(&task.git_name, &task.git_email).map_err(m)?;
        let first_line = task
            .prompt
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        let message = format!(
            "swarm: {} ({})\n\n{}\n\nSwarm-Task: {}/{}\nSwarm-Run: {}\nSwarm-Role: {}\n",
            task.key,
            task.kind.as_deref().unwrap_or("task"),
            truncate(&redactor.redact(first_line), 200),
            task.project,
            task.key,
            task.run_name,
            crate::model::Role::of_kind(task.kind.as_deref()).name()
        );
        repo.commit(Some("HEAD"), &sig, &sig, &message, &tree, &[&head])
            .map_err(m)?;
    }
    let new_head = repo.head().map_err(m)?.peel_to_commit().map_err(m)?;
    if new_head.id() == start {
        return Ok(None);
    }
    check_for_secrets(repo, start, new_head.id(), redactor)?;
    check_task_files(repo, start, new_head.id())?;
    let run_order = new_tasks(repo, start, new_head.id())
        .map_err(|e| CommitError::Git(e.message().to_string()))?;
    if stop::requested() {
        return Err(CommitError::Stopped);
    }
    let commit = push_with_replay(task, repo, start, new_head.id(), auth)?;
    Ok(Some(Pushed {
        commit,
        run_order: crate::model::describe_run_order(&run_order),
    }))
}

/// The task files that exist at `head` and did not at `start` (already validated), parsed.
fn new_tasks(
    repo: &git2::Repository,
    start: git2::Oid,
    head: git2::Oid,
) -> Result<Vec<(crate::spec::TaskKey, crate::spec::TaskSpec)>, git2::Error> {
    let before = repo.find_commit(start)?.tree()?;
    let mut out = Vec::new();
    for (path, content) in gitops::changed_paths(repo, start, head, crate::spec::TASKS_DIR)? {
        if before.get_path(Path::new(&path)).is_ok() {
            continue;
        }
        if let (Some(Ok(key)), Ok(spec)) = (
            crate::spec::task_key_of_path(&path),
            crate::spec::parse_task(&content),
        ) {
            out.push((key, spec));
        }
    }
    Ok(out)
}

/// Pushes `head`; when the branch moved meanwhile (the engine's status commits land on the
/// default branch too), replays this run's commits on the new head and tries again.
fn push_with_replay(
    task: &JobSpec,
    repo: &git2::Repository,
    start: git2::Oid,
    head: git2::Oid,
    auth: &GitAuth,
) -> Result<String, CommitError> {
    let mut head = head;
    let mut start = start;
    for _ in 0..5 {
        match gitops::push(repo, &task.repo, &head.to_string(), &task.branch, auth) {
            Ok(()) => return Ok(head.to_string()),
            Err(e) if e.is_non_fast_forward() => {
                tracing::info!(branch = %task.branch, "the branch moved on the remote; replaying this run's commits on it");
                let mut remote = repo
                    .remote_anonymous(&task.repo)
                    .map_err(|e| CommitError::Git(e.message().to_string()))?;
                let mut opts = auth.fetch_options();
                let refspec = format!("+refs/heads/{0}:refs/remotes/origin/{0}", task.branch);
                remote
                    .fetch(&[&refspec], Some(&mut opts), None)
                    .map_err(|e| {
                        CommitError::Git(format!("fetch after a rejected push: {}", e.message()))
                    })?;
                let onto = repo
                    .refname_to_id(&format!("refs/remotes/origin/{}", task.branch))
                    .map_err(|e| CommitError::Git(e.message().to_string()))?;
                head = gitops::replay(repo, start, head, onto)
                    .map_err(|e| CommitError::Git(e.message().to_string()))?;
                start = onto;
            }
            Err(e) => return Err(CommitError::Git(crate::display::error_chain(&e))),
        }
    }
    Err(CommitError::Git(format!(
        "the branch {} kept moving; gave up after 5 pushes",
        task.branch
    )))
}

/// Task files a run adds or changes must validate, and status files belong to the engine:
/// otherwise nothing is pushed and the errors are the result (the manager's next activation
/// sees them and fixes them).
fn check_task_files(
    repo: &git2::Repository,
    start: git2::Oid,
    head: git2::Oid,
) -> Result<(), CommitError> {
    // Only what this run's own (non-merge) commits change: content merged in from another
    // branch was checked where it was made.
    let m = |e: git2::Error| CommitError::Git(e.message().to_string());
    let mut changed = Vec::new();
    // Status files belong to the engine: adding, changing or deleting one is refused.
    let mut status_touched = std::collections::BTreeSet::new();
    let mut walk = repo.revwalk().map_err(m)?;
    walk.push(head).map_err(m)?;
    walk.hide(start).map_err(m)?;
    for id in walk {
        let commit = repo.find_commit(id.map_err(m)?).map_err(m)?;
        if commit.parent_count() != 1 {
            continue;
        }
        let parent = commit.parent_id(0).map_err(m)?;
        changed.extend(
            gitops::changed_paths(repo, parent, commit.id(), crate::spec::AI_DIR).map_err(m)?,
        );
        status_touched.extend(
            gitops::touched_paths(repo, parent, commit.id(), crate::spec::STATUS_DIR).map_err(m)?,
        );
    }
    let mut problems: Vec<String> = status_touched
        .iter()
        .map(|path| format!("{path}:1:1: status files are written by the engine only"))
        .collect();
    for (path, content) in changed {
        if path.starts_with(crate::spec::STATUS_DIR) {
            continue;
        }
        match crate::spec::task_key_of_path(&path) {
            None => {}
            Some(Err(message)) => problems.push(format!("{path}:1:1: {message}")),
            Some(Ok(_)) => {
                if let Err(e) = crate::spec::parse_task(&content) {
                    problems.push(format!("{path}:{}:{}: {}", e.line, e.column, e.message));
                }
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(CommitError::Invalid(format!(
        "invalid task files; nothing was pushed:\n{}",
        problems.join("\n")
    )))
}

/// Every blob and commit message between `start` and `head` is checked for secret values, in
/// any of their forms ([`Redactor::add`]); the commits the remote has nowhere yet also for
/// private keys and GitHub tokens ([`crate::secrets::find_known`]) that the file had in none
/// of the commit's parents (a test key the repository already had is not this run's leak).
fn check_for_secrets(
    repo: &git2::Repository,
    start: git2::Oid,
    head: git2::Oid,
    redactor: &Redactor,
) -> Result<(), CommitError> {
    let m = |e: git2::Error| CommitError::Git(e.message().to_string());
    // Commits merged in from the remote's branches publish nothing new.
    let mut fresh = repo.revwalk().map_err(m)?;
    fresh.push(head).map_err(m)?;
    fresh.hide(start).map_err(m)?;
    for reference in repo.references_glob("refs/remotes/*").map_err(m)? {
        if let Some(id) = reference.map_err(m)?.target() {
            fresh.hide(id).map_err(m)?;
        }
    }
    let fresh: HashSet<git2::Oid> = fresh.collect::<Result<_, _>>().map_err(m)?;
    let mut walk = repo.revwalk().map_err(m)?;
    walk.push(head).map_err(m)?;
    walk.hide(start).map_err(m)?;
    for oid in walk {
        let commit = repo.find_commit(oid.map_err(m)?).map_err(m)?;
        let is_fresh = fresh.contains(&commit.id());
        if let Some(name) = redactor.find_in(commit.message_bytes()) {
            return Err(CommitError::Secret(format!(
                "refused to push: a commit message contains the value of {name}"
            )));
        }
        if let Some(known) = find_known(commit.message_bytes())
            .first()
            .filter(|_| is_fresh)
        {
            return Err(CommitError::Secret(format!(
                "refused to push: a commit message contains {}",
                known.kind.describe()
            )));
        }
        let parent_tree = commit.parent(0).ok().and_then(|p| p.tree().ok());
        let diff = repo
            .diff_tree_to_tree(parent_tree.as_ref(), Some(&commit.tree().map_err(m)?), None)
            .map_err(m)?;
        for delta in diff.deltas() {
            // A nested repository (a gitlink) has no blob to read.
            if delta.status() == git2::Delta::Deleted
                || delta.new_file().mode() == git2::FileMode::Commit
            {
                continue;
            }
            let path = || {
                delta
                    .new_file()
                    .path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            };
            let blob = repo.find_blob(delta.new_file().id()).map_err(m)?;
            if let Some(name) = redactor.find_in(blob.content()) {
                return Err(CommitError::Secret(format!(
                    "refused to commit and push: {} contains the value of {name}; nothing was pushed",
                    path()
                )));
            }
            if !is_fresh {
                continue;
            }
            let found = find_known(blob.content());
            if found.is_empty() {
                continue;
            }
            // What the file had before, in any parent (a merge brings the other side's).
            let mut before: HashSet<Known> = HashSet::new();
            for parent in commit.parents() {
                let tree = parent.tree().map_err(m)?;
                for old in [delta.old_file().path(), delta.new_file().path()]
                    .into_iter()
                    .flatten()
                {
                    let Ok(entry) = tree.get_path(old) else {
                        continue;
                    };
                    if let Ok(old) = repo.find_blob(entry.id()) {
                        before.extend(find_known(old.content()));
                    }
                }
            }
            if let Some(new) = found.iter().find(|k| !before.contains(k)) {
                return Err(CommitError::Secret(format!(
                    "refused to commit and push: {} contains {}; nothing was pushed",
                    path(),
                    new.kind.describe()
                )));
            }
        }
    }
    Ok(())
}

/// The password of a `scheme://user:password@host/...` URL.
fn url_password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let creds = rest.split_once('@')?.0;
    creds
        .split_once(':')
        .map(|(_, p)| p.to_string())
        .filter(|p| !p.is_empty())
}

/// The run directory a worker was pointed at, made absolute.
pub fn resolve_run_dir(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

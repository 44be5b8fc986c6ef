//! Running an agent: its command line, a clean environment (an allow-list plus the profile's
//! env) with its own HOME, the prompt on stdin, output to the run's log (redacted) with a tail
//! kept, and for Claude Code the stream read up to its result event. I/O.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::claude::{self, StreamState};
use crate::job::truncate_start;
use crate::job::{AgentKind, JobSpec};
use crate::secrets::Redactor;
use crate::spec::{truncate, ErrorClass, RunResult};

/// Variables of the worker's environment an agent inherits, besides
/// [`crate::job::NETWORK_ENV`] (its proxies and certificate authorities).
pub(super) const AGENT_ENV: &[&str] = &[
    "PATH", "LANG", "LANGUAGE", "TERM", "TZ", "USER", "LOGNAME", "SHELL", "TMPDIR",
];

/// The most one argument may have on Linux (`MAX_ARG_STRLEN`, 32 pages), terminator included.
const MAX_ARG_BYTES: usize = 128 * 1024;

/// How long a Claude Code process may linger after its result event.
const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// Expands `{prompt}` (role prompt and task), `{prompt_file}` (a file holding the same),
/// `{key}`, `{kind}`, `{workdir}` and `{swarm}` in each argument.
pub fn expand_command(
    template: &[String],
    task: &JobSpec,
    prompt: &str,
    prompt_file: &Path,
    workdir: &Path,
    swarm: &Path,
) -> Vec<String> {
    template
        .iter()
        .map(|arg| {
            arg.replace("{prompt_file}", &prompt_file.display().to_string())
                .replace("{key}", &task.key)
                .replace("{kind}", task.kind.as_deref().unwrap_or("task"))
                .replace("{workdir}", &workdir.display().to_string())
                .replace("{swarm}", &swarm.display().to_string())
                .replace("{prompt}", prompt)
        })
        .collect()
}

/// The profile's env with `${NAME}` taken from the worker's environment. Never logged.
pub fn expand_profile_env(env: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    env.iter()
        .filter(|(k, _)| !crate::job::WITHHELD_ENV.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), expand_env(v)))
        .collect()
}

fn expand_env(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        match rest[start + 2..].find('}') {
            Some(end) => {
                let name = &rest[start + 2..start + 2 + end];
                out.push_str(&std::env::var(name).unwrap_or_default());
                rest = &rest[start + 3 + end..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Everything an agent run needs besides the task.
pub(super) struct AgentRun<'a> {
    pub task: &'a JobSpec,
    pub checkout: &'a Path,
    /// The full prompt (role + task) and the file holding it.
    pub prompt: &'a str,
    pub prompt_file: &'a Path,
    pub home: &'a Path,
    pub env: &'a BTreeMap<String, String>,
    pub redactor: &'a Redactor,
}

/// Runs the agent to its end. The result carries success, summary and, for Claude Code, turns,
/// cost and session; failures are classified. `branch`, commit and times are the caller's.
pub(super) fn run_agent(run: &AgentRun<'_>) -> RunResult {
    let task = run.task;
    let swarm = std::env::current_exe().unwrap_or_else(|_| "swarm".into());
    let argv: Vec<String> = match task.agent.kind {
        AgentKind::Command => expand_command(
            &task.agent.command,
            task,
            run.prompt,
            run.prompt_file,
            run.checkout,
            &swarm,
        ),
        AgentKind::Claude => {
            let mut a = task.agent.command.clone();
            if a.is_empty() {
                a.push("claude".into());
            }
            a.extend(claude::args(&task.agent));
            a
        }
    };
    if let Some(arg) = argv.iter().find(|a| a.len() >= MAX_ARG_BYTES) {
        return RunResult::failure(
            ErrorClass::Crash,
            format!(
                "the command of profile {:?} puts the prompt into one argument ({{prompt}}) of {} bytes, which Linux refuses from {MAX_ARG_BYTES}; read it from standard input, {{prompt_file}} or $SWARM_PROMPT_FILE instead",
                task.agent_name,
                arg.len()
            ),
        );
    }
    // In the local runtime's sandbox, when the engine asks for one (a pod is one already).
    let argv = match &task.agent.sandbox {
        Some(settings) => {
            let path = std::env::var("PATH").unwrap_or_default();
            let extra_files = [
                "SSL_CERT_FILE",
                "SSL_CERT_DIR",
                "NODE_EXTRA_CA_CERTS",
                "GIT_SSL_CAINFO",
            ]
            .iter()
            .filter_map(|v| std::env::var_os(v))
            .map(std::path::PathBuf::from)
            .filter(|p| p.is_absolute() && p.exists())
            .collect();
            super::sandbox::wrap(
                &argv,
                settings,
                &super::sandbox::Paths {
                    checkout: run.checkout,
                    home: run.home,
                    prompt_file: run.prompt_file,
                    program: super::sandbox::which(&argv[0], &path),
                    path: &path,
                    extra_files,
                    local_repo: crate::gitops::local_git_dir(&task.repo),
                    shared_objects: super::checkout::shared_objects(
                        task,
                        super::checkout::cache().as_deref(),
                    ),
                },
            )
        }
        None => argv,
    };
    let mut cmd = Command::new(&argv[0]);
    cmd.env_clear();
    for (k, v) in std::env::vars_os() {
        let name = k.to_string_lossy();
        if AGENT_ENV.contains(&name.as_ref())
            || crate::job::NETWORK_ENV.contains(&name.as_ref())
            || name.starts_with("LC_")
        {
            cmd.env(&k, v);
        }
    }
    if task.agent.kind == AgentKind::Claude {
        for (k, v) in claude::env() {
            cmd.env(k, v);
        }
    }
    // The prompt comes on standard input, from its file: never as one argument or variable,
    // which Linux limits to 128 KiB each.
    let stdin = match std::fs::File::open(run.prompt_file) {
        Ok(f) => f,
        Err(e) => {
            return RunResult::failure(
                ErrorClass::Crash,
                format!("cannot open the prompt file: {e}"),
            )
        }
    };
    // Its own process group, so that a stop ends the agent with everything it started.
    cmd.process_group(0);
    cmd.args(&argv[1..])
        .current_dir(run.checkout)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("HOME", run.home)
        .env("SWARM_PROJECT", &task.project)
        .env("SWARM_TASK_KEY", &task.key)
        .env("SWARM_TASK_KIND", task.kind.as_deref().unwrap_or("task"))
        .env("SWARM_BRANCH", &task.branch)
        .env("SWARM_PROMPT_FILE", run.prompt_file)
        .env("SWARM_GENERATION", task.generation.to_string())
        .env("SWARM_ATTEMPT", task.attempt.to_string())
        // The agent's own commits (a merge, say) carry the engine's git identity; it has no
        // other (its HOME is its own, and in the sandbox nothing of the engine's user is seen).
        .env("GIT_AUTHOR_NAME", &task.git_name)
        .env("GIT_AUTHOR_EMAIL", &task.git_email)
        .env("GIT_COMMITTER_NAME", &task.git_name)
        .env("GIT_COMMITTER_EMAIL", &task.git_email)
        .envs(run.env);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return RunResult::failure(
                ErrorClass::MissingCli,
                format!(
                    "the agent command {:?} of profile {:?} was not found on PATH",
                    argv[0], task.agent_name
                ),
            )
        }
        Err(e) => {
            return RunResult::failure(
                ErrorClass::Crash,
                format!("cannot start the agent {:?}: {e}", argv[0]),
            )
        }
    };
    let pgid = child.id() as i32;
    // A stop request ends the agent's group at once; the reads below then see its end.
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = std::thread::spawn({
        let watching = watching.clone();
        move || {
            while watching.load(Ordering::SeqCst) {
                if super::stop::requested() {
                    tracing::info!("stop requested; ending the agent");
                    super::stop::end_group(pgid, Duration::from_secs(2));
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    });
    let result = follow(run, &mut child);
    watching.store(false, Ordering::SeqCst);
    let _ = watcher.join();
    // Whatever the agent left running in its group ends with it.
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pgid),
        nix::sys::signal::Signal::SIGKILL,
    );
    result
}

/// Reads the running agent's output to its end (or its result event) and makes the result.
fn follow(run: &AgentRun<'_>, child: &mut Child) -> RunResult {
    let task = run.task;
    // stderr goes to the log (redacted) with its tail kept.
    let stderr = child.stderr.take();
    let mut err_lines = run.redactor.lines();
    let (err_tx, err_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut tail = String::new();
        let mut show = |lines: Vec<String>| {
            for line in lines {
                eprintln!("{line}");
                keep_tail(&mut tail, &line);
            }
        };
        if let Some(s) = stderr {
            for_each_line(s, |line| {
                show(err_lines.push(line));
                true
            });
        }
        show(err_lines.finish());
        let _ = err_tx.send(tail);
    });
    let mut out_tail = String::new();
    let mut stream = StreamState::default();
    let claude = task.agent.kind == AgentKind::Claude;
    if let Some(stdout) = child.stdout.take() {
        // Redacted across lines: a secret split over two lines is replaced whole.
        let mut out_lines = run.redactor.lines();
        let mut out = std::io::stdout();
        let mut show = |lines: Vec<String>| {
            for shown in lines {
                let _ = writeln!(out, "{shown}");
                keep_tail(&mut out_tail, &shown);
            }
        };
        for_each_line(stdout, |line| {
            show(out_lines.push(line));
            // The result event is the end: the CLI sometimes hangs after it. A CLI that says
            // it bills an API key is stopped at once.
            !(claude && (stream.feed(line) || stream.api_key_source.is_some()))
        });
        show(out_lines.finish());
    }
    if let Some(source) = &stream.api_key_source {
        kill_tree(child.id());
        let _ = child.wait();
        return RunResult::failure(
            ErrorClass::BillingGuard,
            format!("stopped Claude Code: it authenticated with an API key ({source}), which bills per token; remove it from the repository's .claude settings and the environment"),
        );
    }
    let grace = task.agent.grace.unwrap_or(DEFAULT_GRACE);
    let exit_ok = match wait_or_kill(child, if claude { grace } else { Duration::MAX }) {
        Ok(ok) => ok,
        Err(e) => {
            return RunResult::failure(ErrorClass::Crash, format!("cannot wait for the agent: {e}"))
        }
    };
    // A lingering grandchild may hold stderr open: wait for its tail only briefly.
    let err_tail = err_rx
        .recv_timeout(Duration::from_millis(500))
        .unwrap_or_default();
    let detail = if err_tail.trim().is_empty() {
        out_tail.trim().to_string()
    } else {
        err_tail.trim().to_string()
    };
    let redact = |text: &str| run.redactor.redact(text);
    if claude {
        return claude::classify(&stream, exit_ok, &detail, &redact);
    }
    let summary = out_tail
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| truncate(l.trim(), 2000));
    RunResult {
        success: exit_ok,
        summary,
        error_class: (!exit_ok).then_some(ErrorClass::Agent),
        error: (!exit_ok).then(|| format!("the agent failed: {}", truncate_start(&detail, 4000))),
        ..RunResult::default()
    }
}

/// Calls `f` with each line of `reader` (invalid UTF-8 replaced, never a reason to stop)
/// until the reader ends or `f` returns false.
fn for_each_line(reader: impl std::io::Read, mut f: impl FnMut(&str) -> bool) {
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                if !f(line.trim_end_matches(['\n', '\r'])) {
                    return;
                }
            }
        }
    }
}

/// Waits for the agent; after `grace` it and everything it started are terminated (SIGTERM,
/// then SIGKILL two seconds later). Whether it exited with success.
fn wait_or_kill(child: &mut Child, grace: Duration) -> std::io::Result<bool> {
    if grace == Duration::MAX {
        return Ok(child.wait()?.success());
    }
    let until = Instant::now() + grace;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status.success());
        }
        if Instant::now() >= until {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    tracing::info!("the agent is still running after its result; ending it");
    kill_tree(child.id());
    child.wait()?;
    // It had its result; how it was stopped does not change that.
    Ok(true)
}

/// The descendants of `pid`, deepest first (from /proc's children lists).
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.flatten().collect::<Vec<_>>())
        .unwrap_or_default();
    for t in tasks {
        let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        for child in children
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
        {
            out.extend(descendants(child));
            out.push(child);
        }
    }
    out
}

/// SIGTERM to `pid` and its descendants, SIGKILL two seconds later to what is left.
fn kill_tree(pid: u32) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let mut all = descendants(pid);
    all.push(pid);
    for p in &all {
        let _ = kill(Pid::from_raw(*p as i32), Signal::SIGTERM);
    }
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until
        && all
            .iter()
            .any(|p| kill(Pid::from_raw(*p as i32), None).is_ok() && !is_zombie(*p))
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    for p in &all {
        let _ = kill(Pid::from_raw(*p as i32), Signal::SIGKILL);
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

fn keep_tail(tail: &mut String, line: &str) {
    tail.push_str(line);
    tail.push('\n');
    if tail.len() > 16_384 {
        let mut cut = tail.len() - 8_192;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail.drain(..cut);
    }
}

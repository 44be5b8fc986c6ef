//! Running the agent profile's command: template expansion, a clean environment (an allow-list
//! plus the profile's env) with its own HOME, no stdin, output to the run's log with a tail kept
//! for the result.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use super::WorkerTask;
use crate::spec::{truncate, ErrorClass, RunResult};

/// What the agent's process left.
#[derive(Debug, Clone)]
pub struct AgentOutput {
    pub success: bool,
    pub summary: Option<String>,
    pub error: Option<String>,
}

/// Expands `{prompt}`, `{prompt_file}`, `{key}`, `{kind}`, `{workdir}` and `{swarm}` in each
/// argument.
pub fn expand_command(
    template: &[String],
    task: &WorkerTask,
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
                .replace("{prompt}", &task.prompt)
        })
        .collect()
}

/// `${NAME}` in a profile's env value is taken from the worker's environment.
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

/// Variables of the worker's environment an agent inherits.
const AGENT_ENV: &[&str] = &[
    "PATH", "LANG", "LANGUAGE", "TERM", "TZ", "USER", "LOGNAME", "SHELL", "TMPDIR",
];

pub(super) fn run_agent(
    task: &WorkerTask,
    checkout: &Path,
    prompt_file: &Path,
    home: &Path,
    _log: &Path,
) -> Result<AgentOutput, RunResult> {
    let swarm = std::env::current_exe().unwrap_or_else(|_| "swarm".into());
    let argv = expand_command(&task.agent.command, task, prompt_file, checkout, &swarm);
    let mut cmd = Command::new(&argv[0]);
    // A clean environment: only what a command needs to run, the task's own variables and the
    // profile's env. The worker's credentials (git token, ...) stay with the worker.
    cmd.env_clear();
    for (k, v) in std::env::vars_os() {
        let name = k.to_string_lossy();
        if AGENT_ENV.contains(&name.as_ref()) || name.starts_with("LC_") {
            cmd.env(&k, v);
        }
    }
    cmd.args(&argv[1..])
        .current_dir(checkout)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("HOME", home)
        .env("SWARM_PROJECT", &task.project)
        .env("SWARM_TASK_KEY", &task.key)
        .env("SWARM_TASK_KIND", task.kind.as_deref().unwrap_or("task"))
        .env("SWARM_BRANCH", &task.branch)
        .env("SWARM_PROMPT_FILE", prompt_file)
        .env("SWARM_GENERATION", task.generation.to_string())
        .env("SWARM_ATTEMPT", task.attempt.to_string());
    for (k, v) in &task.agent.env {
        if !crate::runtime::local::WITHHELD_ENV.contains(&k.as_str()) {
            cmd.env(k, expand_env(v));
        }
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RunResult::failure(
                ErrorClass::MissingCli,
                format!(
                    "the agent command {:?} of profile {:?} was not found",
                    argv[0], task.agent_name
                ),
            ))
        }
        Err(e) => {
            return Err(RunResult::failure(
                ErrorClass::Crash,
                format!("cannot start the agent {:?}: {e}", argv[0]),
            ))
        }
    };
    // stderr goes straight to the log; stdout is copied to the log with its tail kept.
    let stderr = child.stderr.take();
    let err_thread = std::thread::spawn(move || {
        let mut tail = String::new();
        if let Some(s) = stderr {
            for line in BufReader::new(s).lines().map_while(Result::ok) {
                eprintln!("{line}");
                keep_tail(&mut tail, &line);
            }
        }
        tail
    });
    let mut out_tail = String::new();
    if let Some(stdout) = child.stdout.take() {
        let mut out = std::io::stdout();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = writeln!(out, "{line}");
            keep_tail(&mut out_tail, &line);
        }
    }
    let status = child.wait().map_err(|e| {
        RunResult::failure(ErrorClass::Crash, format!("cannot wait for the agent: {e}"))
    })?;
    let err_tail = err_thread.join().unwrap_or_default();
    let summary = out_tail
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| truncate(l.trim(), 2000));
    let error = (!status.success()).then(|| {
        let detail = if err_tail.trim().is_empty() {
            out_tail.trim()
        } else {
            err_tail.trim()
        };
        truncate(&format!("the agent exited with {status}: {detail}"), 4000)
    });
    Ok(AgentOutput {
        success: status.success(),
        summary,
        error,
    })
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

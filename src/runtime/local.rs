//! The local runtime: one `swarm worker` process per run, in its own directory (task, log,
//! result, checkout, HOME) under `<data_dir>/runs/`, in its own process group, with a deadline.
//!
//! Liveness survives engine restarts through a lock: the engine takes an exclusive `flock` on
//! the run's `lock` file before it spawns the worker and hands the locked descriptor down to it,
//! so the lock is held exactly as long as the worker (or anything it started) lives. A restarted
//! engine that finds the lock held adopts the run; finds it free with a result, completes it;
//! finds it free without one, fails it over as lost. No gap exists in which a started run looks
//! unstarted, so nothing runs twice.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;

use super::{Completion, Launch, Runtime, RuntimeError};
use crate::job::{
    passed_to_worker, referenced_vars, write_atomic, JobResult, DEADLINE_FILE, LOCK_FILE, LOG_FILE,
    PID_FILE, RESULT_FILE, STARTED_FILE, TASK_FILE, WITHHELD_ENV,
};
use crate::spec::{truncate, ErrorClass, RunResult};

const GRACE: Duration = Duration::from_secs(5);
const ADOPTED_POLL: Duration = Duration::from_millis(250);

#[derive(Default)]
struct RunState {
    stop: AtomicBool,
}

/// Runs jobs as local processes and reports their ends on a channel.
#[derive(Clone)]
pub struct LocalRuntime {
    runs_dir: PathBuf,
    worker_exe: PathBuf,
    completions: mpsc::UnboundedSender<Completion>,
    runs: Arc<Mutex<HashMap<String, Arc<RunState>>>>,
    /// Variables given to every worker on top of the engine's own environment.
    env: Arc<Vec<(String, String)>>,
    /// The engine's data directory, whose per-project caches the workers' checkouts borrow
    /// their objects from.
    data_dir: Option<PathBuf>,
}

impl LocalRuntime {
    /// `worker_exe` is the `swarm` binary that runs `swarm worker`.
    pub fn new(
        runs_dir: PathBuf,
        worker_exe: PathBuf,
        completions: mpsc::UnboundedSender<Completion>,
    ) -> Self {
        Self {
            runs_dir,
            worker_exe,
            completions,
            runs: Arc::default(),
            env: Arc::default(),
            data_dir: None,
        }
    }

    /// Lets every worker's checkout borrow the objects of its project's cache under
    /// `data_dir` (the engine's), instead of copying the history.
    pub fn with_caches(mut self, data_dir: PathBuf) -> Self {
        self.data_dir = Some(data_dir);
        self
    }

    /// Gives every worker `vars` on top of the engine's environment: for an engine embedded in
    /// a process whose own environment must stay as it is (a test, say). The variables that
    /// are always withheld from workers stay withheld.
    pub fn with_env(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        self.env = Arc::new(vars.into_iter().collect());
        self
    }

    pub fn run_dir(&self, run_name: &str) -> PathBuf {
        self.runs_dir.join(run_name)
    }

    /// See [`Runtime::launch`]. Starts the run, or — when a run of that name exists already — adopts it (still alive),
    /// completes it (it left a result) or fails it over (it started and died without one).
    /// Idempotent: the run's lock decides, never a file written after the spawn.
    pub async fn launch(&self, launch: Launch) -> Result<(), RuntimeError> {
        let dir = self.run_dir(&launch.run_name);
        let prepare = |source| RuntimeError::Prepare {
            run: launch.run_name.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(prepare)?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .map_err(prepare)?;
        let held = match lock_exclusive(&lock, false) {
            Ok(()) => false,
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => true,
            Err(e) => return Err(prepare(e)),
        };
        if held {
            // Held: the worker of an earlier engine is alive.
            return self.adopt(
                launch.task_id,
                launch.attempt,
                &launch.run_name,
                launch.deadline,
            );
        }
        if dir.join(RESULT_FILE).exists() || dir.join(STARTED_FILE).exists() {
            // It ran and ended (with or without a result) while no engine watched.
            drop(lock);
            return self.adopt(
                launch.task_id,
                launch.attempt,
                &launch.run_name,
                launch.deadline,
            );
        }
        // Never started: we hold the lock, so nothing else can start it meanwhile.
        std::fs::create_dir_all(dir.join("home")).map_err(prepare)?;
        write_atomic(&dir.join(TASK_FILE), &launch.task.to_json()).map_err(prepare)?;
        write_atomic(
            &dir.join(DEADLINE_FILE),
            launch.deadline.to_rfc3339().as_bytes(),
        )
        .map_err(prepare)?;
        let log = File::options()
            .create(true)
            .append(true)
            .open(dir.join(LOG_FILE))
            .map_err(prepare)?;
        let log_err = log.try_clone().map_err(prepare)?;

        let mut cmd = std::process::Command::new(&self.worker_exe);
        cmd.arg("worker").arg("--run-dir").arg(&dir);
        cmd.stdin(Stdio::null()).stdout(log).stderr(log_err);
        // The worker's environment is an allow-list of the engine's (see `WORKER_ENV`): the
        // agent can read its worker's environment, so nothing else of the engine's is there.
        let referenced = referenced_vars(&launch.task.agent.env);
        cmd.env_clear();
        cmd.envs(std::env::vars_os().filter(|(name, _)| {
            name.to_str()
                .is_some_and(|n| passed_to_worker(n, &referenced))
        }));
        cmd.current_dir(&dir).env("HOME", dir.join("home"));
        // A mounted ~/.claude of the engine's user stays findable for the worker's safety
        // check, which copies its credentials into the run's own HOME.
        if let Some(home) = std::env::var_os("HOME") {
            cmd.env("SWARM_WORKER_HOME", home);
        }
        if let Some(data_dir) = &self.data_dir {
            let cache = crate::gitops::cache_path(data_dir, &launch.task.project);
            cmd.env(crate::job::CACHE_ENV, cache);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        for name in WITHHELD_ENV {
            cmd.env_remove(name);
        }
        if let Some(token) = &launch.git_token {
            // A token minted for this job: in a file of the run directory (which the sandbox
            // does not show the agent), read by the worker when it clones and pushes; the
            // engine's own token stays with the engine.
            let file = dir.join(GIT_TOKEN_FILE);
            write_private(&file, token.expose().as_bytes()).map_err(prepare)?;
            cmd.env_remove("SWARM_GIT_TOKEN")
                .env_remove("GITHUB_TOKEN")
                .env("SWARM_GIT_TOKEN_FILE", &file);
        }
        cmd.process_group(0);
        let lock_fd = lock.as_raw_fd();
        // The worker closes it for its agent, so a stray agent child cannot hold the lock.
        cmd.env("SWARM_LOCK_FD", lock_fd.to_string());
        // SAFETY: between fork and exec only async-signal-safe calls: fcntl clears close-on-exec
        // on the locked descriptor so the worker inherits the lock.
        unsafe {
            cmd.pre_exec(move || {
                let flags = libc::fcntl(lock_fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(lock_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = tokio::process::Command::from(cmd)
            .kill_on_drop(false)
            .spawn()
            .map_err(|source| RuntimeError::Spawn {
                run: launch.run_name.clone(),
                source,
            })?;
        let pid = child.id().unwrap_or_default();
        // The worker runs now: from here on nothing may fail the launch, or the engine would
        // retry a run that is going.
        let group = Group::of(pid as i32);
        if let Err(e) = write_atomic(&dir.join(PID_FILE), group.record().as_bytes()) {
            tracing::error!(run = %launch.run_name, "cannot record the worker's pid: {e}");
        }
        // Closing our descriptor does not release the lock: the worker holds the same open file.
        drop(lock);

        let state = self.track(&launch.run_name);
        let this = self.clone();
        tokio::spawn(async move {
            let deadline = to_instant(launch.deadline);
            let status = tokio::select! {
                s = child.wait() => Some(s),
                _ = tokio::time::sleep_until(deadline) => None,
            };
            let timed_out = status.is_none();
            if timed_out {
                group.kill(GRACE).await;
                let _ = child.wait().await;
            } else {
                // The worker is gone (and reaped: its pid is free again); end whatever it left
                // behind in its group.
                group.kill_now();
            }
            let exit = status.and_then(Result::ok).map(|s| s.to_string());
            this.finish(
                &launch.run_name,
                launch.task_id,
                launch.attempt,
                &state,
                timed_out,
                exit,
            );
        });
        Ok(())
    }

    /// Takes over a run started by an earlier engine (see the module doc).
    /// `deadline` applies when the run directory does not record one.
    fn adopt(
        &self,
        task_id: i64,
        attempt: i32,
        run_name: &str,
        deadline: chrono::DateTime<Utc>,
    ) -> Result<(), RuntimeError> {
        let dir = self.run_dir(run_name);
        let prepare = |source| RuntimeError::Prepare {
            run: run_name.to_string(),
            source,
        };
        let group = Group::read(&dir.join(PID_FILE));
        let deadline = std::fs::read_to_string(dir.join(DEADLINE_FILE))
            .ok()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s.trim()).ok())
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or(deadline);
        let lock = File::open(dir.join(LOCK_FILE)).map_err(prepare)?;
        let state = self.track(run_name);
        let this = self.clone();
        let run_name = run_name.to_string();
        tokio::spawn(async move {
            let deadline = to_instant(deadline);
            let mut timed_out = false;
            loop {
                if lock_exclusive(&lock, false).is_ok() {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    timed_out = true;
                    group.kill(GRACE).await;
                    break;
                }
                if state.stop.load(Ordering::SeqCst) {
                    group.kill(GRACE).await;
                    break;
                }
                tokio::time::sleep(ADOPTED_POLL).await;
            }
            // Whatever the adopted worker left in its group goes with it.
            group.kill_now();
            this.finish(&run_name, task_id, attempt, &state, timed_out, None);
        });
        Ok(())
    }

    /// Stops a run: SIGTERM to its process group, SIGKILL after a grace period. The run then
    /// completes as cancelled.
    pub async fn stop(&self, run_name: &str) {
        // Only a run this engine watches is signalled: a stale pid file of an ended run could
        // name a process group the system has given to someone else since.
        let state = self
            .runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(run_name)
            .cloned();
        match state {
            Some(state) if !state.stop.swap(true, Ordering::SeqCst) => {}
            _ => return,
        }
        let group = Group::read(&self.run_dir(run_name).join(PID_FILE));
        tokio::spawn(async move { group.kill(GRACE).await });
    }

    /// Whether a run of this name is being watched by this engine.
    pub fn is_tracked(&self, run_name: &str) -> bool {
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(run_name)
    }

    fn track(&self, run_name: &str) -> Arc<RunState> {
        let state = Arc::new(RunState::default());
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(run_name.to_string(), state.clone());
        state
    }

    fn finish(
        &self,
        run_name: &str,
        task_id: i64,
        attempt: i32,
        state: &RunState,
        timed_out: bool,
        exit: Option<String>,
    ) {
        let dir = self.run_dir(run_name);
        let log_tail = read_tail(&dir.join(LOG_FILE), 4000);
        let stopped = state.stop.load(Ordering::SeqCst);
        let mut result = if timed_out {
            RunResult::failure(
                ErrorClass::Timeout,
                "the run exceeded its timeout and was killed",
            )
        } else if stopped {
            RunResult::failure(ErrorClass::Cancelled, "the run was stopped")
        } else {
            match std::fs::read(dir.join(RESULT_FILE)) {
                // Stopped by a signal this engine did not send (a person, a shutdown): not a
                // decision to cancel the task, so it is retried.
                Ok(bytes) => match JobResult::read(&bytes) {
                    r if r.error_class == Some(ErrorClass::Cancelled) => RunResult::failure(
                        ErrorClass::Infrastructure,
                        "the worker was stopped by a signal the engine did not send",
                    ),
                    r => r,
                },
                Err(_) => RunResult::failure(
                    ErrorClass::Infrastructure,
                    match exit {
                        Some(status) => format!("the worker exited ({status}) without a result"),
                        None => {
                            "the run was lost: its worker is gone and left no result".to_string()
                        }
                    },
                ),
            }
        };
        if !result.success && result.logs.is_none() && !log_tail.is_empty() {
            result.logs = Some(log_tail);
        }
        if result.finished_at.is_none() {
            result.finished_at = Some(Utc::now());
        }
        // The checkout and HOME are scratch; the task, log and result stay for people to read.
        // Removing a large checkout takes a while: not on the engine's threads.
        let scratch = [dir.join("checkout"), dir.join("home")];
        tokio::task::spawn_blocking(move || {
            for d in scratch {
                let _ = std::fs::remove_dir_all(d);
            }
        });
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(run_name);
        let _ = self.completions.send(Completion {
            task_id,
            attempt,
            run_name: run_name.to_string(),
            result,
        });
    }
}

fn to_instant(deadline: chrono::DateTime<Utc>) -> tokio::time::Instant {
    let left = (deadline - Utc::now()).to_std().unwrap_or(Duration::ZERO);
    tokio::time::Instant::now() + left
}

/// `flock(LOCK_EX)`, waiting or not.
fn lock_exclusive(file: &File, wait: bool) -> std::io::Result<()> {
    let op = if wait {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A worker's process group as its pid file records it: the leader's pid and the leader's start
/// time (field 22 of `/proc/<pid>/stat`, clock ticks since boot). A pid alone may name an
/// unrelated process once the worker is gone and the system has given its pid to another; the
/// start time tells them apart, so a group is signalled only while it is the run's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Group {
    pid: i32,
    start: Option<u64>,
}

impl Group {
    fn of(pid: i32) -> Self {
        Self {
            pid,
            start: start_time(pid),
        }
    }

    /// The pid file's text: `<pid> <start time>`.
    fn record(self) -> String {
        match self.start {
            Some(start) => format!("{} {start}", self.pid),
            None => self.pid.to_string(),
        }
    }

    /// The group a pid file records; pid 0 (nothing to signal) when there is none.
    fn read(path: &Path) -> Self {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut words = text.split_whitespace();
        Self {
            pid: words.next().and_then(|w| w.parse().ok()).unwrap_or(0),
            start: words.next().and_then(|w| w.parse().ok()),
        }
    }

    /// Whether signalling the group reaches this run's processes only: its leader is the
    /// process recorded (same start time), or the leader is gone (no process holds its pid, so
    /// no other group can have that id while the run's group lives on). A pid file without a
    /// start time proves nothing and is not trusted.
    fn is_ours(self) -> bool {
        if self.pid <= 1 {
            return false;
        }
        match (start_time(self.pid), self.start) {
            (None, _) => true,
            (Some(now), Some(recorded)) => now == recorded,
            (Some(_), None) => false,
        }
    }

    async fn kill(self, grace: Duration) {
        if self.is_ours() {
            kill_group(self.pid, grace).await;
        } else if self.pid > 1 {
            tracing::warn!(
                pid = self.pid,
                "not signalling process group {}: its leader is another process now",
                self.pid
            );
        }
    }

    fn kill_now(self) {
        if self.is_ours() {
            kill_group_now(self.pid);
        }
    }
}

/// The start time of process `pid` (field 22 of `/proc/<pid>/stat`), if it exists.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or parentheses itself.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn kill_group_now(pgid: i32) {
    if pgid > 1 {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// SIGTERM to the group, then SIGKILL after `grace` if anything is left.
async fn kill_group(pgid: i32, grace: Duration) {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    if pgid <= 1 {
        return;
    }
    let group = Pid::from_raw(pgid);
    if killpg(group, Signal::SIGTERM).is_err() {
        return;
    }
    let until = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < until {
        // Signal 0 probes whether any process of the group is left.
        if killpg(group, None).is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = killpg(group, Signal::SIGKILL);
}

/// The last `max` bytes of a file, from a line start.
pub fn read_tail(path: &Path, max: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max as u64);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let text = if start > 0 {
        text.split_once('\n')
            .map_or(&*text, |(_, rest)| rest)
            .to_string()
    } else {
        text.into_owned()
    };
    truncate(text.trim_end(), max)
}

/// Up to `max` bytes of whole lines of the file at `path` from byte `offset` on (a tail -f
/// step); from its start again when the file is shorter than `offset`.
pub fn read_from(path: &Path, offset: u64, max: usize) -> std::io::Result<super::LogRead> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let (start, restarted) = if offset <= len {
        (offset, false)
    } else {
        (0, true)
    };
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.take(max as u64).read_to_end(&mut bytes)?;
    let mut end = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if end == 0 && bytes.len() == max {
        // One line longer than `max`: passed on in pieces rather than never.
        end = bytes.len();
    }
    bytes.truncate(end);
    Ok(super::LogRead {
        text: String::from_utf8_lossy(&bytes).into_owned(),
        next: start + end as u64,
        restarted,
    })
}

impl Runtime for LocalRuntime {
    async fn launch(&self, launch: Launch) -> Result<(), RuntimeError> {
        LocalRuntime::launch(self, launch).await
    }

    async fn stop(&self, run_name: &str) {
        LocalRuntime::stop(self, run_name).await
    }

    fn is_tracked(&self, run_name: &str) -> bool {
        LocalRuntime::is_tracked(self, run_name)
    }

    async fn logs(&self, run_name: &str) -> Result<String, RuntimeError> {
        let path = self.run_dir(run_name).join(LOG_FILE);
        if !path.exists() {
            return Err(RuntimeError::NoRun(run_name.to_string()));
        }
        Ok(read_tail(&path, 256 * 1024))
    }

    async fn read_log(&self, run_name: &str, offset: u64) -> Result<super::LogRead, RuntimeError> {
        let path = self.run_dir(run_name).join(LOG_FILE);
        if !path.exists() {
            return Err(RuntimeError::NoRun(run_name.to_string()));
        }
        let run = run_name.to_string();
        tokio::task::spawn_blocking(move || read_from(&path, offset, 256 * 1024))
            .await
            .map_err(|e| RuntimeError::Prepare {
                run: run.clone(),
                source: std::io::Error::other(e),
            })?
            .map_err(|source| RuntimeError::Prepare { run, source })
    }

    async fn ready(&self) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn renew_git_token(
        &self,
        run_name: &str,
        token: &crate::config::Secret,
    ) -> Result<(), RuntimeError> {
        // The worker reads the file when it pushes; a new one replaces it whole.
        let dir = self.run_dir(run_name);
        let file = dir.join(GIT_TOKEN_FILE);
        if !file.exists() {
            return Err(RuntimeError::NoRun(run_name.to_string()));
        }
        let tmp = dir.join(format!("{GIT_TOKEN_FILE}.new"));
        write_private(&tmp, token.expose().as_bytes())
            .and_then(|()| std::fs::rename(&tmp, &file))
            .map_err(|source| RuntimeError::Prepare {
                run: run_name.to_string(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_followed_log_is_read_in_whole_lines_from_where_the_reader_left_off() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut f = File::create(&path).unwrap();
        f.write_all(b"one\ntw").unwrap();
        let r = read_from(&path, 0, 1024).unwrap();
        assert_eq!((r.text.as_str(), r.next, r.restarted), ("one\n", 4, false));
        // Nothing new: nothing read, the same place.
        let again = read_from(&path, r.next, 1024).unwrap();
        assert_eq!((again.text.as_str(), again.next), ("", 4));
        f.write_all(b"o\nthree\n").unwrap();
        let r = read_from(&path, r.next, 1024).unwrap();
        assert_eq!((r.text.as_str(), r.next), ("two\nthree\n", 14));
        // A bounded read stops at the last whole line within the bound.
        let r = read_from(&path, 0, 9).unwrap();
        assert_eq!((r.text.as_str(), r.next), ("one\ntwo\n", 8));
        // A log that started over is read from its start, and says so.
        std::fs::write(&path, "new\n").unwrap();
        let r = read_from(&path, 14, 1024).unwrap();
        assert_eq!((r.text.as_str(), r.next, r.restarted), ("new\n", 4, true));
        // The default of other runtimes: what is past the offset of the log read again.
        let r = crate::runtime::LogRead::past("a\nb\nc".into(), 2);
        assert_eq!((r.text.as_str(), r.next, r.restarted), ("b\n", 4, false));
        let r = crate::runtime::LogRead::past("a\n".into(), 9);
        assert_eq!((r.text.as_str(), r.next, r.restarted), ("a\n", 2, true));
    }

    fn sleeper() -> std::process::Child {
        std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap()
    }

    #[tokio::test]
    async fn a_group_is_signalled_only_while_its_leader_is_the_process_recorded() {
        let mut run = sleeper();
        let group = Group::of(run.id() as i32);
        assert!(group.start.is_some(), "the start time is recorded");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pid"), group.record()).unwrap();
        assert_eq!(Group::read(&dir.path().join("pid")), group);
        assert!(group.is_ours());

        // The pid now names another process (the start time differs): never signalled.
        let mut other = sleeper();
        let reused = Group {
            pid: other.id() as i32,
            start: group.start.map(|s| s.wrapping_sub(1)),
        };
        assert!(!reused.is_ours());
        reused.kill_now();
        reused.kill(Duration::from_millis(100)).await;
        assert!(
            other.try_wait().unwrap().is_none(),
            "the other process lives"
        );
        // A pid file without a start time proves nothing.
        assert!(!Group {
            pid: other.id() as i32,
            start: None
        }
        .is_ours());

        group.kill_now();
        assert!(
            run.wait().unwrap().code().is_none(),
            "the run's group was killed"
        );
        other.kill().unwrap();
        other.wait().unwrap();
    }
}

/// The run directory's file holding a job's own git token.
pub const GIT_TOKEN_FILE: &str = "git-token";

/// Writes `bytes` to a new file only its owner can read.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

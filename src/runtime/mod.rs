//! Where jobs run: the [`Runtime`] trait and its two implementations, the local runtime (the
//! default: a process on this machine) and Kubernetes (a Job per run). Every method is keyed by
//! the persisted run name, so a restarted engine can adopt what is running.

pub mod followed;
pub mod kubernetes;
pub mod local;

use std::future::Future;

use chrono::{DateTime, Utc};

pub use kubernetes::KubeRuntime;
pub use local::LocalRuntime;

/// Where jobs run. Ends of runs are reported on the completion channel the runtime was made
/// with, exactly once per launch that the runtime accepted.
pub trait Runtime: Send + Sync + 'static {
    /// Starts the run, or adopts it when a run of that name exists already. Idempotent.
    fn launch(&self, launch: Launch) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Stops a run this runtime watches; it then completes as cancelled.
    fn stop(&self, run_name: &str) -> impl Future<Output = ()> + Send;
    /// Whether this runtime watches the run.
    fn is_tracked(&self, run_name: &str) -> bool;
    /// The run's log (the last part of it).
    fn logs(&self, run_name: &str) -> impl Future<Output = Result<String, RuntimeError>> + Send;
    /// Whether the runtime can start jobs now (for readiness).
    fn ready(&self) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Gives a running job a new git token in place of the one it was launched with (which
    /// is about to expire). Only for jobs launched with [`Launch::git_token`].
    fn renew_git_token(
        &self,
        run_name: &str,
        token: &crate::config::Secret,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// The run's log from byte `offset` on, as far as it goes now, for a reader that follows
    /// it. The default reads [`Runtime::logs`] again and answers what is past `offset` (the
    /// whole of it, marked `restarted`, when it is shorter): a poll of the log's last part.
    fn read_log(
        &self,
        run_name: &str,
        offset: u64,
    ) -> impl Future<Output = Result<LogRead, RuntimeError>> + Send {
        async move { Ok(LogRead::past(self.logs(run_name).await?, offset)) }
    }
}

/// A piece of a run's log, read by a reader that follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRead {
    /// Whole lines, each ending in a newline.
    pub text: String,
    /// Where the next read starts.
    pub next: u64,
    /// The log did not go on from `offset` (it was cut or replaced): `text` is read from its
    /// start again.
    pub restarted: bool,
}

impl LogRead {
    /// The whole lines of `log` past byte `offset`, or of all of it when it is shorter.
    pub fn past(log: String, offset: u64) -> Self {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let (start, restarted) = if start <= log.len() && log.is_char_boundary(start) {
            (start, false)
        } else {
            (0, true)
        };
        let mut text = log[start..].to_string();
        // Only whole lines: the rest comes with the next read.
        let end = text.rfind('\n').map_or(0, |i| i + 1);
        text.truncate(end);
        Self {
            next: (start + end) as u64,
            text,
            restarted,
        }
    }
}

use crate::job::JobSpec;
use crate::spec::RunResult;

/// A job to start.
#[derive(Debug, Clone)]
pub struct Launch {
    pub task_id: i64,
    pub attempt: i32,
    pub run_name: String,
    pub deadline: DateTime<Utc>,
    pub task: JobSpec,
    /// Set after an engine restart for a run that was launched before: the runtime adopts
    /// it if it still exists and reports it lost if not, but never starts it again.
    pub adopt_only: bool,
    /// A git token minted for this job alone (a GitHub App's installation token scoped to the
    /// project's repository), given to it instead of the workers' own.
    pub git_token: Option<crate::config::Secret>,
}

/// A job that ended, with its result.
#[derive(Debug, Clone)]
pub struct Completion {
    pub task_id: i64,
    pub attempt: i32,
    pub run_name: String,
    pub result: RunResult,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("the Kubernetes API refused {what}: {message} (check the engine's Role in deploy/base/role.yaml)")]
    Forbidden { what: String, message: String },
    #[error("the Kubernetes API failed to {what}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("no run {0}")]
    NoRun(String),
    #[error("cannot prepare run {run}")]
    Prepare {
        run: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start run {run}")]
    Spawn {
        run: String,
        #[source]
        source: std::io::Error,
    },
}

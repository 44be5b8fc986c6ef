//! The contract between the engine and a job: what the engine hands a job ([`JobSpec`], written
//! as `task.json` in the run directory or passed to a pod) and what the job hands back
//! ([`JobResult`], `result.json` or a Kubernetes termination message), with the names of the
//! files of a run directory. Versioned: a reader accepts any contract of its own major version,
//! ignoring fields it does not know, and refuses a newer major version with a clear error.
//! Runtimes and the worker meet here and never import each other. Pure apart from
//! [`write_atomic`] and the run directory's readers and writers.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{AgentKind as ConfigAgentKind, AgentProfile};
use crate::spec::{ErrorClass, RunResult};

/// The contract this engine and worker speak: `MAJOR.MINOR`. A new optional field bumps the
/// minor version; anything an older reader would misunderstand bumps the major version.
pub const VERSION: Version = Version { major: 1, minor: 1 };

/// Files of a run directory.
pub const TASK_FILE: &str = "task.json";
pub const RESULT_FILE: &str = "result.json";
pub const LOG_FILE: &str = "log";
pub const LOCK_FILE: &str = "lock";
pub const PID_FILE: &str = "pid";
pub const DEADLINE_FILE: &str = "deadline";
/// Written by the worker before it does anything else: the run has started.
pub const STARTED_FILE: &str = "started";
/// The agent's private HOME inside the run directory.
pub const HOME_DIR: &str = "home";
/// The clone the agent works in.
pub const CHECKOUT_DIR: &str = "checkout";

/// The variable that names the project's cache (a bare repository on this machine) to a worker
/// of the local runtime: its checkout borrows the cache's objects.
pub const CACHE_ENV: &str = "SWARM_GIT_CACHE";

/// What a worker takes from the engine's environment on the local runtime, nothing else (an
/// allow-list: the engine's GitHub token, API token, webhook secret and database URL stay with
/// the engine): what it needs to clone and push, to run the agent, and to reach anything
/// behind a proxy; plus every variable its agent profile names as `${NAME}`
/// ([`referenced_vars`]), and `LC_*`.
pub const WORKER_ENV: &[&str] = &[
    "PATH",
    "LANG",
    "LANGUAGE",
    "TERM",
    "TZ",
    "USER",
    "LOGNAME",
    "SHELL",
    "TMPDIR",
    "RUST_LOG",
    "RUST_BACKTRACE",
    "SWARM_GIT_TOKEN",
    "GITHUB_TOKEN",
];

/// What a corporate network needs to reach anything: its proxies and its certificate
/// authorities. Passed to the worker and on to its agent.
pub const NETWORK_ENV: &[&str] = &[
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
];

/// The variables `env` (an agent profile's) takes from the worker's environment: each `NAME`
/// of a `${NAME}` in its values.
pub fn referenced_vars(env: &BTreeMap<String, String>) -> Vec<String> {
    let mut names = Vec::new();
    for value in env.values() {
        let mut rest = value.as_str();
        while let Some(start) = rest.find("${") {
            let Some(end) = rest[start + 2..].find('}') else {
                break;
            };
            names.push(rest[start + 2..start + 2 + end].to_string());
            rest = &rest[start + 3 + end..];
        }
    }
    names
}

/// Whether the local runtime passes the engine's variable `name` to a worker whose agent
/// profile names `referenced`.
pub fn passed_to_worker(name: &str, referenced: &[String]) -> bool {
    !WITHHELD_ENV.contains(&name)
        && (WORKER_ENV.contains(&name)
            || NETWORK_ENV.contains(&name)
            || name.starts_with("LC_")
            || referenced.iter().any(|r| r == name))
}

/// Environment variables never passed to a job: `ANTHROPIC_API_KEY` would switch Claude Code to
/// pay-per-token billing; the engine's own database URL is not the job's business.
pub const WITHHELD_ENV: &[&str] = &[
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "SWARM_DATABASE_URL",
    "DATABASE_URL",
];

/// A contract version, written as `"MAJOR.MINOR"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl std::str::FromStr for Version {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (major, minor) = s.split_once('.').unwrap_or((s, "0"));
        let num = |p: &str| {
            p.trim()
                .parse::<u32>()
                .map_err(|_| format!("{s:?} is not a contract version like \"1.0\""))
        };
        Ok(Self {
            major: num(major)?,
            minor: num(minor)?,
        })
    }
}

impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

fn current_version() -> Version {
    VERSION
}

/// Why a contract document could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("{what} speaks job contract {found}, newer than this program's {supported}: run a worker image and engine of the same major version")]
    NewerMajor {
        what: &'static str,
        found: Version,
        supported: Version,
    },
    #[error("{what} is not a valid job contract document")]
    Invalid {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl ContractError {
    /// The failure a worker or engine reports for a document it cannot read: a version
    /// mismatch is the deployment's doing (infrastructure), a broken document a crash.
    pub fn to_result(&self) -> RunResult {
        let class = match self {
            Self::NewerMajor { .. } => ErrorClass::Infrastructure,
            Self::Invalid { .. } => ErrorClass::Crash,
        };
        RunResult::failure(class, crate::display::error_chain(self))
    }
}

/// Reads a contract document: its `version` first (missing means 1.0, the contract before
/// versions were written), then the whole document, ignoring fields this reader does not know.
fn read<T: serde::de::DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, ContractError> {
    #[derive(Deserialize)]
    struct Head {
        #[serde(default = "current_version")]
        version: Version,
    }
    let head: Head =
        serde_json::from_slice(bytes).map_err(|source| ContractError::Invalid { what, source })?;
    if head.version.major > VERSION.major {
        return Err(ContractError::NewerMajor {
            what,
            found: head.version,
            supported: VERSION,
        });
    }
    serde_json::from_slice(bytes).map_err(|source| ContractError::Invalid { what, source })
}

/// Everything a job needs to know about its task. It holds no database credentials and no
/// secret values: secrets reach the agent only through the environment (`${NAME}` in the
/// agent's env is expanded by the worker).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    #[serde(default = "current_version")]
    pub version: Version,
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
    pub agent: AgentSettings,
    pub git_name: String,
    pub git_email: String,
    /// Run the repository's pre-commit hook before the worker commits (contract 1.1); absent:
    /// no hook runs, as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<HookSettings>,
}

/// How the worker runs the repository's own pre-commit hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookSettings {
    /// The hook's time limit, as `5m`.
    #[serde(with = "humantime_serde_duration")]
    pub timeout: Duration,
}

mod humantime_serde_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim())
            .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration: {e}")))
    }
}

impl JobSpec {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, ContractError> {
        read("the job's task (task.json)", bytes)
    }
}

/// How the job runs its agent: the contract's own copy of the engine's agent profile, so the
/// config format can grow without breaking workers already deployed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentSettings {
    #[serde(default)]
    pub kind: AgentKind,
    #[serde(default)]
    pub command: Vec<String>,
    /// Extra environment; `${NAME}` values name variables of the worker's environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_budget_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
    /// How long the CLI may linger after its result before it is ended, as `5s`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_humantime"
    )]
    pub grace: Option<Duration>,
    /// Run the agent in a sandbox (the local runtime: bubblewrap, see `worker::sandbox`); a
    /// pod is one already.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxSettings>,
}

/// The agent's sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSettings {
    /// Whether the agent keeps the network (it needs it to reach its model's API).
    #[serde(default = "yes")]
    pub network: bool,
    /// More directories the agent may read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read_only: Vec<String>,
}

fn yes() -> bool {
    true
}

/// Which kind of agent runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentKind {
    #[default]
    Command,
    Claude,
}

impl From<&AgentProfile> for AgentSettings {
    fn from(p: &AgentProfile) -> Self {
        Self {
            kind: match p.kind {
                ConfigAgentKind::Command => AgentKind::Command,
                ConfigAgentKind::Claude => AgentKind::Claude,
            },
            command: p.command.clone(),
            env: p.env.clone(),
            max_turns: p.max_turns,
            max_budget_usd: p.max_budget_usd,
            model: p.model.clone(),
            extra_args: p.extra_args.clone(),
            grace: p.grace,
            sandbox: None,
        }
    }
}

mod opt_humantime {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.collect_str(&humantime::format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim())
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration: {e}")))
    }
}

/// What a job hands back: its result, under the contract's version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    #[serde(default = "current_version")]
    pub version: Version,
    #[serde(flatten)]
    pub result: RunResult,
}

impl JobResult {
    pub fn new(result: RunResult) -> Self {
        Self {
            version: VERSION,
            result,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Reads a result; one the engine cannot read becomes a failed result saying why.
    pub fn read(bytes: &[u8]) -> RunResult {
        match read::<JobResult>("the job's result", bytes) {
            Ok(r) => r.result,
            Err(e) => e.to_result(),
        }
    }

    /// The result as JSON of at most `max` bytes (a termination message holds 4096): long
    /// texts are cut until it fits.
    pub fn compact(result: &RunResult, max: usize) -> String {
        let fits = |r: &RunResult| {
            let json = serde_json::to_string(&JobResult::new(r.clone())).unwrap_or_default();
            (json.len() <= max).then_some(json)
        };
        let mut r = result.clone();
        for budget in [2000usize, 1000, 400, 100, 0] {
            if let Some(json) = fits(&r) {
                return json;
            }
            r.logs = None;
            r.summary = result
                .summary
                .as_deref()
                .map(|s| crate::spec::truncate(s, budget));
            r.error = result.error.as_deref().map(|s| truncate_start(s, budget));
        }
        serde_json::to_string(&JobResult::new(RunResult {
            success: r.success,
            error_class: r.error_class,
            ..RunResult::default()
        }))
        .unwrap_or_default()
    }
}

/// The last `max` bytes of `text` on a character boundary: error details end with the error.
pub fn truncate_start(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("[…] {}", &text[start..])
}

/// A run's directory: the files both sides of the contract agree on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir(pub PathBuf);

impl RunDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self(path.into())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn home(&self) -> PathBuf {
        self.0.join(HOME_DIR)
    }

    pub fn checkout(&self) -> PathBuf {
        self.0.join(CHECKOUT_DIR)
    }

    pub fn write_task(&self, task: &JobSpec) -> std::io::Result<()> {
        write_atomic(&self.file(TASK_FILE), &task.to_json())
    }

    pub fn write_result(&self, result: &RunResult) -> std::io::Result<()> {
        write_atomic(
            &self.file(RESULT_FILE),
            &JobResult::new(result.clone()).to_json(),
        )
    }

    /// The result the job left, if any.
    pub fn read_result(&self) -> Option<RunResult> {
        std::fs::read(self.file(RESULT_FILE))
            .ok()
            .map(|b| JobResult::read(&b))
    }
}

/// Writes `bytes` to `path` so a reader sees the old content or the new, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JobSpec {
        JobSpec {
            version: VERSION,
            project: "p".into(),
            key: "k".into(),
            generation: 1,
            attempt: 1,
            run_name: "p-k-g1-a1".into(),
            repo: "/tmp/r.git".into(),
            branch: "swarm/k".into(),
            base: "main".into(),
            kind: None,
            prompt: "do it".into(),
            agent_name: "claude".into(),
            agent: AgentSettings::from(&AgentProfile::default_claude()),
            git_name: "n".into(),
            git_email: "e@x".into(),
            hooks: Some(HookSettings {
                timeout: Duration::from_secs(300),
            }),
        }
    }

    #[test]
    fn a_contract_with_fields_this_reader_does_not_know_is_read() {
        let mut json: serde_json::Value = serde_json::from_slice(&spec().to_json()).unwrap();
        json["version"] = "1.7".into();
        json["sandbox"] = serde_json::json!({"network": "none"});
        json["agent"]["effort"] = "high".into();
        let read = JobSpec::from_json(json.to_string().as_bytes()).unwrap();
        assert_eq!(read.version, Version { major: 1, minor: 7 });
        assert_eq!(
            JobSpec {
                version: VERSION,
                ..read
            },
            spec()
        );
    }

    #[test]
    fn a_newer_major_version_is_refused_as_infrastructure() {
        let mut json: serde_json::Value = serde_json::from_slice(&spec().to_json()).unwrap();
        json["version"] = "2.0".into();
        let e = JobSpec::from_json(json.to_string().as_bytes()).unwrap_err();
        let r = e.to_result();
        assert_eq!(r.error_class, Some(ErrorClass::Infrastructure));
        let text = r.error.unwrap();
        assert!(text.contains("2.0") && text.contains("1.1"), "{text}");
        let mut result = serde_json::to_value(JobResult::new(RunResult::default())).unwrap();
        result["version"] = "3.1".into();
        let r = JobResult::read(result.to_string().as_bytes());
        assert_eq!(r.error_class, Some(ErrorClass::Infrastructure), "{r:?}");
    }

    #[test]
    fn a_contract_without_a_version_is_the_first_one() {
        let mut json: serde_json::Value = serde_json::from_slice(&spec().to_json()).unwrap();
        json.as_object_mut().unwrap().remove("version");
        assert_eq!(
            JobSpec::from_json(json.to_string().as_bytes()).unwrap(),
            spec()
        );
        let broken = JobSpec::from_json(b"{\"version\": \"1.0\"}").unwrap_err();
        assert_eq!(broken.to_result().error_class, Some(ErrorClass::Crash));
    }

    #[test]
    fn compact_results_fit_a_termination_message() {
        let big = RunResult {
            success: false,
            error_class: Some(ErrorClass::Agent),
            error: Some(format!("{}the real error at the end", "x".repeat(20_000))),
            summary: Some("s".repeat(20_000)),
            logs: Some("l".repeat(20_000)),
            ..RunResult::default()
        };
        let json = JobResult::compact(&big, 4000);
        assert!(json.len() <= 4000, "{}", json.len());
        let back = JobResult::read(json.as_bytes());
        assert_eq!(back.error_class, Some(ErrorClass::Agent));
        assert!(
            back.error.unwrap().ends_with("the real error at the end"),
            "the end of an error is kept"
        );
        let small = RunResult {
            success: true,
            summary: Some("done".into()),
            ..RunResult::default()
        };
        assert_eq!(
            JobResult::read(JobResult::compact(&small, 4000).as_bytes()),
            small
        );
    }
}

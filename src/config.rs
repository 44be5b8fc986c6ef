//! One typed configuration: `swarm.toml`, overridden by `SWARM_*` environment variables.
//! Reads files and the environment; validation is pure.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::spec::Label;

/// The name of the built-in agent profile used by `swarm up --demo`.
pub const DEMO_AGENT: &str = "demo";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
}

impl ConfigError {
    fn invalid(origin: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            origin: origin.into(),
            message: message.into(),
        }
    }
}

/// The whole configuration, after defaults, environment overrides and validation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the engine keeps repository caches, run directories and the SQLite database.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// `postgres://...` for production; when absent, an SQLite file in `data_dir`.
    #[serde(default)]
    pub database_url: Option<DatabaseUrl>,
    /// Where jobs run: `local` (default).
    #[serde(default)]
    pub runtime: RuntimeKind,
    /// The local runtime's sandbox for agents: `bwrap` (default; bubblewrap must work here, or
    /// the engine refuses to start) or `none` (agents run as the engine's user, unconfined).
    #[serde(default)]
    pub sandbox: SandboxMode,
    /// More directories the sandboxed agents may read (tools installed outside the system
    /// directories with more than their `PATH` directory, such as `~/.pyenv` or `~/.nvm`).
    #[serde(default)]
    pub sandbox_read_only: Vec<PathBuf>,
    /// The agent profile for tasks that name none.
    #[serde(default = "default_agent")]
    pub default_agent: String,
    /// Time limit of a run when the task names none.
    #[serde(default = "default_timeout", deserialize_with = "de_duration")]
    pub default_timeout: Duration,
    /// How often a project's remote is asked for its head, unless the project says otherwise.
    #[serde(default = "default_poll", deserialize_with = "de_duration")]
    pub poll_interval: Duration,
    /// How many times a run that failed for infrastructure reasons (crash, lost, git) is retried.
    #[serde(default = "default_infra_retries")]
    pub max_infra_retries: u32,
    /// Wait before the first retry of a failed run; doubles with each further retry.
    #[serde(default = "default_retry_backoff", deserialize_with = "de_duration")]
    pub retry_backoff: Duration,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub git: GitIdentity,
    #[serde(default)]
    pub kubernetes: KubernetesConfig,
    /// GitHub: webhooks in, status comments and commit statuses out. Off when absent.
    #[serde(default)]
    pub github: Option<GitHubConfig>,
    #[serde(default)]
    pub http: HttpConfig,
    /// Hard caps per epic; hitting one fails the epic.
    #[serde(default)]
    pub epics: crate::model::green::EpicCaps,
    #[serde(default)]
    pub agents: BTreeMap<String, AgentProfile>,
    #[serde(default)]
    pub projects: Vec<ProjectConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Runs at once, over all projects.
    #[serde(default = "default_max_running")]
    pub max_running: u32,
    /// Runs at once per project, unless the project says otherwise.
    #[serde(default = "default_max_running_per_project")]
    pub max_running_per_project: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_running: default_max_running(),
            max_running_per_project: default_max_running_per_project(),
        }
    }
}

/// The identity of commits the engine and its workers make, and whether workers run the
/// repository's own pre-commit hook before they commit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitIdentity {
    #[serde(default = "default_git_name")]
    pub name: String,
    #[serde(default = "default_git_email")]
    pub email: String,
    /// Run the repository's `.githooks/pre-commit` before a worker commits.
    #[serde(default = "yes")]
    pub run_hooks: bool,
    /// The hook's time limit.
    #[serde(default = "default_hook_timeout", deserialize_with = "de_duration")]
    pub hook_timeout: Duration,
}

impl Default for GitIdentity {
    fn default() -> Self {
        Self {
            name: default_git_name(),
            email: default_git_email(),
            run_hooks: true,
            hook_timeout: default_hook_timeout(),
        }
    }
}

/// How to run one kind of agent.
///
/// `kind = "command"` (the default) runs `command` as a template. Placeholders: `{prompt}`
/// (the full prompt, as one argument: only for small prompts), `{prompt_file}` (a file holding
/// it), `{key}`, `{kind}`, `{workdir}` and `{swarm}` (this binary). The whole prompt is also
/// on standard input and in the file `$SWARM_PROMPT_FILE`. Exit code 0 is success; the last
/// line of output is the summary.
///
/// `kind = "claude"` runs the Claude Code CLI headless: `command` is the CLI itself (default
/// `["claude"]`), the worker adds `-p` (the prompt comes on standard input), `--output-format stream-json --verbose
/// --dangerously-skip-permissions`, the caps below and `extra_args`, checks credentials first,
/// and reads the final `result` event as the outcome.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentProfile {
    #[serde(default)]
    pub kind: AgentKind,
    #[serde(default)]
    pub command: Vec<String>,
    /// Extra environment for the agent. Values may name a variable of the worker's
    /// environment as `${NAME}` (the engine's, for the local runtime; the pod's, from the
    /// Secret, for Kubernetes); the worker fills them in and never writes them to logs.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Claude: `--max-turns`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    /// Claude: `--max-budget-usd`, the most one run may spend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_budget_usd: Option<f64>,
    /// Claude: `--model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Claude: more arguments, appended as they are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
    /// Sandboxed agents: `on` (default) keeps the network, `none` gives the agent none.
    #[serde(default, skip_serializing_if = "is_on")]
    pub network: Network,
    /// Claude: how long the CLI may linger after its result before it is killed (it sometimes
    /// hangs there). Default 5s.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_humantime"
    )]
    pub grace: Option<Duration>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentKind {
    #[default]
    Command,
    Claude,
}

impl AgentProfile {
    /// A plain command profile.
    pub fn command(argv: Vec<String>) -> Self {
        Self {
            kind: AgentKind::Command,
            command: argv,
            env: BTreeMap::new(),
            max_turns: None,
            max_budget_usd: None,
            model: None,
            extra_args: Vec::new(),
            network: Network::On,
            grace: None,
        }
    }

    /// The `demo` agent profile: this binary's `demo-agent` subcommand (see `swarm up --demo`).
    pub fn demo() -> Self {
        Self::command(vec!["{swarm}".into(), "demo-agent".into()])
    }

    /// The profile used for `claude` when the config has none: the CLI from `PATH`, the
    /// long-lived subscription token from the environment, and sane caps.
    pub fn default_claude() -> Self {
        Self {
            kind: AgentKind::Claude,
            command: vec!["claude".into()],
            env: BTreeMap::from([(
                "CLAUDE_CODE_OAUTH_TOKEN".into(),
                "${CLAUDE_CODE_OAUTH_TOKEN}".into(),
            )]),
            max_turns: Some(100),
            max_budget_usd: Some(5.0),
            model: None,
            extra_args: Vec::new(),
            network: Network::On,
            grace: None,
        }
    }
}

mod opt_humantime {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim())
            .map(Some)
            .map_err(|e| {
                serde::de::Error::custom(format!("{text:?} is not a duration like 5s: {e}"))
            })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    pub name: String,
    /// A git URL (`https://`, `ssh://`, `git@host:...`, `file://`) or a local path.
    pub repo: String,
    #[serde(default = "default_branch")]
    pub default_branch: String,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub poll_interval: Option<Duration>,
    #[serde(default)]
    pub max_running: Option<u32>,
    /// The GitHub repository (`owner/name`) when `repo` does not say it (a mirror, say).
    #[serde(default)]
    pub github: Option<String>,
    /// The checks (check-run names or status contexts) a `merge` task waits for on the
    /// branches it merges. Unset: those the default branch's protection requires, else every
    /// check on the head. `[]`: tasks of this project wait for no checks.
    #[serde(default)]
    pub required_checks: Option<Vec<String>>,
}

impl ProjectConfig {
    /// `owner/name` on GitHub: `github`, or read from a github.com `repo` URL.
    pub fn github_repo(&self) -> Option<String> {
        if let Some(r) = &self.github {
            return Some(r.clone());
        }
        let rest = self
            .repo
            .strip_prefix("https://github.com/")
            .or_else(|| self.repo.strip_prefix("http://github.com/"))
            .or_else(|| self.repo.strip_prefix("git@github.com:"))
            .or_else(|| self.repo.strip_prefix("ssh://git@github.com/"))?;
        let rest = rest.trim_end_matches('/').trim_end_matches(".git");
        (rest.split('/').count() == 2).then(|| rest.to_string())
    }
}

/// The local runtime's sandbox for agents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxMode {
    #[default]
    Bwrap,
    None,
}

fn is_on(n: &Network) -> bool {
    *n == Network::On
}

/// Whether a sandboxed agent has the network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    #[default]
    On,
    None,
}

/// Where jobs run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    #[default]
    Local,
    Kubernetes,
}

/// The `kubernetes` runtime: one Job per run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// Where the Jobs run.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The worker image (see worker/).
    #[serde(default = "default_image")]
    pub image: String,
    #[serde(default)]
    pub image_pull_policy: Option<String>,
    /// The Secret whose keys become the workers' environment (by reference only).
    #[serde(default = "default_secret")]
    pub secret: String,
    /// How long a finished Job stays for inspection.
    #[serde(default = "default_ttl")]
    pub ttl_seconds_after_finished: i32,
    /// Requests per second to the API server, at most; a burst of tasks queues in the engine.
    #[serde(default = "default_rps")]
    pub requests_per_second: u64,
    #[serde(default)]
    pub resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default)]
    pub tolerations: Vec<k8s_openapi::api::core::v1::Toleration>,
    #[serde(default)]
    pub service_account: Option<String>,
    /// The API server, when not running in the cluster and not from ~/.kube/config.
    #[serde(default)]
    pub api_url: Option<String>,
    /// How long a run's pod may fail to pull its image (`ErrImagePull`, `ImagePullBackOff`)
    /// before the run fails as an infrastructure failure. A wrong image name or a missing
    /// Secret (`InvalidImageName`, `CreateContainerConfigError`) fails it at once.
    #[serde(default = "default_start_timeout", deserialize_with = "de_duration")]
    pub start_timeout: Duration,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            namespace: default_namespace(),
            image: default_image(),
            image_pull_policy: None,
            secret: default_secret(),
            ttl_seconds_after_finished: default_ttl(),
            requests_per_second: default_rps(),
            resources: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            service_account: None,
            api_url: None,
            start_timeout: default_start_timeout(),
        }
    }
}

fn default_namespace() -> String {
    "coding-swarm".into()
}
fn default_image() -> String {
    "coding-swarm-worker:latest".into()
}
fn default_secret() -> String {
    "coding-swarm-secrets".into()
}
fn default_ttl() -> i32 {
    3600
}
fn default_rps() -> u64 {
    20
}
fn default_start_timeout() -> Duration {
    Duration::from_secs(5 * 60)
}

/// GitHub. Credentials come from the environment, never from this file:
/// `SWARM_GITHUB_WEBHOOK_SECRET`; a token (`SWARM_GITHUB_TOKEN` or `GITHUB_TOKEN`) or a GitHub
/// App (`app_id` here, its private key PEM in `SWARM_GITHUB_APP_KEY`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitHubConfig {
    #[serde(default = "default_github_api")]
    pub api_url: String,
    #[serde(default)]
    pub app_id: Option<u64>,
    /// The App's installation; found per repository when absent.
    #[serde(default)]
    pub installation_id: Option<u64>,
    /// Open a draft pull request for a task's branch when a run first pushes commits to it.
    #[serde(default = "yes")]
    pub draft_pull_requests: bool,
    /// The least time between two writes (GitHub asks for about a second).
    #[serde(default = "default_write_interval", deserialize_with = "de_duration")]
    pub min_write_interval: Duration,
    /// What a comment mentions to ask the swarm for something.
    #[serde(default = "default_mention")]
    pub mention: String,
    /// How long a processed webhook delivery is kept, so that its redelivery is answered as a
    /// duplicate. Deliveries not processed yet are kept whatever their age.
    #[serde(
        default = "default_webhook_retention",
        deserialize_with = "de_duration"
    )]
    pub webhook_retention: Duration,
    /// With a GitHub App: how long after it was minted an installation token (the engine's
    /// own, or a running job's) is replaced by a new one. GitHub's last an hour.
    #[serde(default = "default_token_renewal", deserialize_with = "de_duration")]
    pub token_renewal: Duration,
    /// Whether a review that only comments (state `commented`) on a task's pull request wakes
    /// the project manager, as one that requests changes always does.
    #[serde(default)]
    pub react_to_commented_reviews: bool,
    /// Failed commits of one branch the project manager is asked to fix; from the next one on,
    /// it is told the cap is reached and to give up on that step.
    #[serde(default = "default_max_ci_fix_rounds")]
    pub max_ci_fix_rounds: u32,
    /// How much of the end of a failed GitHub Actions job's log the manager is shown, in KiB.
    #[serde(default = "default_ci_log_excerpt_kib")]
    pub ci_log_excerpt_kib: u32,
    /// How often the required checks of the tasks that wait for them are read from the API
    /// even when no delivery said they changed (deliveries can be missed).
    #[serde(default = "default_checks_interval", deserialize_with = "de_duration")]
    pub checks_interval: Duration,
}

fn default_checks_interval() -> Duration {
    Duration::from_secs(60)
}

fn default_max_ci_fix_rounds() -> u32 {
    3
}
fn default_ci_log_excerpt_kib() -> u32 {
    16
}

fn default_token_renewal() -> Duration {
    Duration::from_secs(30 * 60)
}

fn default_github_api() -> String {
    "https://api.github.com".into()
}
fn default_write_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_webhook_retention() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
fn default_mention() -> String {
    "@swarm".into()
}

/// The engine's HTTP server: health, readiness, metrics (and, later, the API).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Where to listen. Off when empty.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Where people reach the dashboard (`https://swarm.example.com`): links from pull request
    /// comments and commit statuses go to a task's page there. No links when absent.
    #[serde(default)]
    pub public_url: Option<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            public_url: None,
        }
    }
}

impl HttpConfig {
    /// The dashboard page of task `project`/`key` under `public_url`, when that is set.
    pub fn task_page(&self, project: &str, key: &str) -> Option<String> {
        self.public_url.as_deref().map(|base| {
            format!(
                "{}/tasks/{}/{}",
                base.trim_end_matches('/'),
                url_segment(project),
                url_segment(key)
            )
        })
    }
}

/// Whether an http(s) URL names a user before its host.
fn has_userinfo(u: &str) -> bool {
    u.split_once("://")
        .and_then(|(_, rest)| rest.split('/').next())
        .is_some_and(|authority| authority.contains('@'))
}

/// `s` for a URL path segment: anything but unreserved characters percent-encoded.
fn url_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

/// A secret value: it never prints (`Debug` and `Display` show `***`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// `None` for an empty value: an empty variable is an unset one.
    pub fn new(value: impl Into<String>) -> Option<Self> {
        let value = value.into();
        (!value.trim().is_empty()).then_some(Self(value))
    }

    /// The value, for the one place that hands it to a library.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The credentials the engine itself uses, read from its environment once, at start-up, by
/// the command line and passed to what needs them (never read from the environment deeper in).
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// `SWARM_GIT_TOKEN` (or `GITHUB_TOKEN`): HTTPS git remotes.
    pub git_token: Option<Secret>,
    /// `SWARM_GITHUB_TOKEN` (or `GITHUB_TOKEN`): the GitHub API with a personal access token.
    pub github_token: Option<Secret>,
    /// `SWARM_GITHUB_APP_KEY`: the GitHub App's private key (PEM).
    pub github_app_key: Option<Secret>,
    /// `SWARM_GITHUB_WEBHOOK_SECRET`: verifies webhook signatures.
    pub webhook_secret: Option<Secret>,
    /// `SWARM_API_TOKEN`: required of every dashboard and API request when bound beyond this machine.
    pub api_token: Option<Secret>,
}

impl Secrets {
    /// The secrets among `vars` (the process environment, for the command line).
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let vars: std::collections::HashMap<String, String> = vars.into_iter().collect();
        let get = |name: &str| vars.get(name).cloned().and_then(Secret::new);
        Self {
            git_token: get("SWARM_GIT_TOKEN").or_else(|| get("GITHUB_TOKEN")),
            github_token: get("SWARM_GITHUB_TOKEN").or_else(|| get("GITHUB_TOKEN")),
            github_app_key: get("SWARM_GITHUB_APP_KEY"),
            webhook_secret: get("SWARM_GITHUB_WEBHOOK_SECRET"),
            api_token: get("SWARM_API_TOKEN"),
        }
    }
}

/// A database URL; its password never prints.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct DatabaseUrl(pub String);

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

/// `scheme://user:secret@host` -> `scheme://user:***@host`.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((cred, host)) = rest.split_once('@') {
            if let Some((user, _)) = cred.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
    }
    url.to_string()
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(".swarm")
}
fn default_agent() -> String {
    "claude".into()
}
fn default_timeout() -> Duration {
    Duration::from_secs(45 * 60)
}
fn default_poll() -> Duration {
    Duration::from_secs(60)
}
fn default_infra_retries() -> u32 {
    3
}
fn default_retry_backoff() -> Duration {
    Duration::from_secs(10)
}
fn yes() -> bool {
    true
}

fn default_max_running() -> u32 {
    8
}
fn default_max_running_per_project() -> u32 {
    4
}
fn default_git_name() -> String {
    "coding-swarm".into()
}
fn default_git_email() -> String {
    "coding-swarm@localhost".into()
}
fn default_hook_timeout() -> Duration {
    Duration::from_secs(5 * 60)
}
fn default_branch() -> String {
    "main".into()
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(s.trim()).map_err(|e| {
        serde::de::Error::custom(format!("{s:?} is not a duration like 30s, 5m or 1h: {e}"))
    })
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

/// Top-level keys that `SWARM_<KEY>` (and `SWARM_<TABLE>__<KEY>`) may override. Other `SWARM_*`
/// variables belong to workers and are not configuration.
const ENV_KEYS: &[&str] = &[
    "data_dir",
    "database_url",
    "runtime",
    "default_agent",
    "default_timeout",
    "poll_interval",
    "max_infra_retries",
    "retry_backoff",
    "limits",
    "git",
    "epics",
    "kubernetes",
    "http",
    "github",
];

impl Config {
    /// Loads `path` (when given) and applies `SWARM_*` overrides from `env`. Relative paths in
    /// the file are relative to the file's directory.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let cwd = std::env::current_dir().unwrap_or_default();
        let (text, origin, base) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.into(),
                    source,
                })?;
                // Relative paths in the file are relative to the file, made absolute here so
                // that workers (which run in their own directories) see the same places.
                let base = cwd.join(p.parent().unwrap_or(Path::new("")));
                (text, p.display().to_string(), base)
            }
            None => (String::new(), "defaults".to_string(), cwd),
        };
        Self::parse(&text, &origin, &base, env)
    }

    /// Parses config text; see [`Config::load`].
    pub fn parse(
        text: &str,
        origin: &str,
        base: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table = toml::from_str(text)
            .map_err(|e| ConfigError::invalid(origin, toml_message(&e, text)))?;
        // The file on its own first, so its mistakes are reported with line and column.
        toml::from_str::<Config>(text)
            .map_err(|e| ConfigError::invalid(origin, toml_message(&e, text)))?;
        let mut overridden = Vec::new();
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("SWARM_") else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            if !ENV_KEYS.contains(&path[0].as_str()) {
                continue;
            }
            set_path(&mut table, &path, &value)
                .map_err(|m| ConfigError::invalid(format!("environment variable {name}"), m))?;
            overridden.push(name);
        }
        // Mistakes found from here on may come from the environment: say which variables.
        let origin = if overridden.is_empty() {
            origin.to_string()
        } else {
            format!("{origin} (with {})", overridden.join(", "))
        };
        let mut config: Config = Config::deserialize(toml::Value::Table(table))
            .map_err(|e| ConfigError::invalid(&origin, e.message().to_string()))?;
        if config.data_dir.is_relative() {
            config.data_dir = base.join(&config.data_dir);
        }
        for p in &mut config.projects {
            if !looks_like_url(&p.repo) && Path::new(&p.repo).is_relative() {
                p.repo = base.join(&p.repo).display().to_string();
            }
        }
        config
            .validate()
            .map_err(|m| ConfigError::invalid(&origin, m))?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if let Some(u) = &self.http.public_url {
            let rest = u
                .strip_prefix("https://")
                .or_else(|| u.strip_prefix("http://"));
            match rest {
                Some(r) if !r.is_empty() && !r.starts_with('/') && !u.contains(['?', '#', ' ']) => {}
                _ => {
                    return Err(format!(
                        "http.public_url = {u:?}: expected the dashboard's address, like https://swarm.example.com"
                    ))
                }
            }
            if redact_url(u) != *u || has_userinfo(u) {
                return Err(format!(
                    "http.public_url = {:?}: must not hold a user or password; it is shown on pull requests",
                    redact_url(u)
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, p) in self.projects.iter().enumerate() {
            Label::new(&p.name).map_err(|e| format!("projects[{i}].name: {e}"))?;
            if !names.insert(&p.name) {
                return Err(format!(
                    "projects[{i}].name: project {:?} is configured twice",
                    p.name
                ));
            }
            if p.repo.trim().is_empty() {
                return Err(format!("projects[{i}].repo: must not be empty"));
            }
            let userinfo = p
                .repo
                .split_once("://")
                .filter(|(scheme, _)| scheme.starts_with("http"))
                .and_then(|(_, rest)| rest.split('/').next())
                .is_some_and(|authority| authority.contains('@'));
            if redact_url(&p.repo) != p.repo || userinfo {
                return Err(format!(
                    "projects[{i}].repo: the URL holds a password; give credentials as SWARM_GIT_TOKEN (or an ssh-agent) instead, \
                     a URL is copied into logs and Jobs"
                ));
            }
            crate::spec::BranchName::new(&p.default_branch)
                .map_err(|e| format!("projects[{i}].default_branch: {e}"))?;
            if p.max_running == Some(0) {
                return Err(format!("projects[{i}].max_running: must be at least 1"));
            }
            if let Some(n) = p
                .required_checks
                .iter()
                .flatten()
                .position(|c| c.trim().is_empty())
            {
                return Err(format!(
                    "projects[{i}].required_checks[{n}]: a check name must not be empty"
                ));
            }
        }
        for (name, profile) in &self.agents {
            Label::new(name).map_err(|e| format!("agents.{name}: {e}"))?;
            if let Some(key) = ["ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"]
                .into_iter()
                .find(|k| profile.env.contains_key(*k))
            {
                return Err(format!(
                    "agents.{name}.env: {key} is refused: it switches Claude Code to pay-per-token billing; \
                     use CLAUDE_CODE_OAUTH_TOKEN (from `claude setup-token`)"
                ));
            }
            // The agent must never hold the git credential (it pushes nothing itself; the
            // worker does, after it has ended).
            if let Some((key, _)) = profile
                .env
                .iter()
                .find(|(_, v)| v.contains("${SWARM_GIT_TOKEN}") || v.contains("${GITHUB_TOKEN}"))
            {
                return Err(format!(
                    "agents.{name}.env.{key}: the git credential (SWARM_GIT_TOKEN, GITHUB_TOKEN) is refused: \
                     the agent never pushes itself; the worker pushes its work after it has ended"
                ));
            }
            if profile.kind == AgentKind::Command
                && (profile.command.is_empty() || profile.command[0].trim().is_empty())
            {
                return Err(format!("agents.{name}.command: must name a program"));
            }
            if profile
                .max_budget_usd
                .is_some_and(|b| !(b > 0.0 && b.is_finite()))
            {
                return Err(format!(
                    "agents.{name}.max_budget_usd: must be a positive amount"
                ));
            }
            if profile.max_turns == Some(0) {
                return Err(format!("agents.{name}.max_turns: must be at least 1"));
            }
        }
        if self.default_agent != DEMO_AGENT
            && !self.agents.contains_key(&self.default_agent)
            && self.default_agent != "claude"
        {
            return Err(format!(
                "default_agent: no agent profile named {:?} in [agents]",
                self.default_agent
            ));
        }
        if let Some(g) = &self.github {
            if g.mention.trim().len() < 2 || g.mention.contains(char::is_whitespace) {
                return Err(format!(
                    "github.mention: {:?} is not a mention like @swarm",
                    g.mention
                ));
            }
            if g.checks_interval < Duration::from_secs(1) {
                return Err("github.checks_interval: must be at least 1s".into());
            }
            // Installation tokens last an hour: one renewed later would have expired.
            if g.token_renewal.is_zero() || g.token_renewal > Duration::from_secs(55 * 60) {
                return Err(
                    "github.token_renewal: must be above 0 and at most 55m (installation tokens last an hour)".into(),
                );
            }
        }
        let caps = &self.epics;
        for (cap, zero) in [
            ("max_tasks", caps.max_tasks == 0),
            (
                "max_consecutive_failures",
                caps.max_consecutive_failures == 0,
            ),
            ("max_activations", caps.max_activations == 0),
            (
                "max_spend_usd",
                caps.max_spend_usd.is_nan() || caps.max_spend_usd <= 0.0,
            ),
        ] {
            if zero {
                return Err(format!(
                    "epics.{cap}: must be above 0 (a cap of 0 would end every epic at once)"
                ));
            }
        }
        if self.git.hook_timeout.is_zero() {
            return Err(
                "git.hook_timeout: must be above 0 (set run_hooks = false to skip the hook)".into(),
            );
        }
        if self.limits.max_running == 0 {
            return Err("limits.max_running: must be at least 1".into());
        }
        if self.limits.max_running_per_project == 0 {
            return Err("limits.max_running_per_project: must be at least 1".into());
        }
        if let Some(url) = &self.database_url {
            if !(url.0.starts_with("postgres://")
                || url.0.starts_with("postgresql://")
                || url.0.starts_with("sqlite:"))
            {
                return Err(format!(
                    "database_url: {url} is neither postgres://... nor sqlite:..."
                ));
            }
        }
        Ok(())
    }

    /// The database to use: the configured URL, or an SQLite file in the data directory.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.0.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("swarm.db").display()
            ),
        }
    }

    /// The agent profile called `name`: from `[agents]`, else the built-in `claude` and `demo`.
    pub fn agent(&self, name: &str) -> Option<AgentProfile> {
        if let Some(p) = self.agents.get(name) {
            let mut p = p.clone();
            if p.kind == AgentKind::Claude && p.command.is_empty() {
                p.command = vec!["claude".into()];
            }
            return Some(p);
        }
        match name {
            "claude" => Some(AgentProfile::default_claude()),
            DEMO_AGENT => Some(AgentProfile::demo()),
            _ => None,
        }
    }

    pub fn project(&self, name: &str) -> Option<&ProjectConfig> {
        self.projects.iter().find(|p| p.name == name)
    }

    /// Projects whose tasks may wait for required checks: those on GitHub, when `[github]` is
    /// configured, and not opted out with `required_checks = []`.
    pub fn gated_projects(&self) -> std::collections::HashSet<String> {
        if self.github.is_none() {
            return Default::default();
        }
        self.projects
            .iter()
            .filter(|p| p.github_repo().is_some())
            .filter(|p| p.required_checks.as_ref().is_none_or(|c| !c.is_empty()))
            .map(|p| p.name.clone())
            .collect()
    }

    pub fn max_running_for(&self, project: &ProjectConfig) -> u32 {
        project
            .max_running
            .unwrap_or(self.limits.max_running_per_project)
    }

    pub fn poll_interval_for(&self, project: &ProjectConfig) -> Duration {
        project.poll_interval.unwrap_or(self.poll_interval)
    }
}

fn looks_like_url(repo: &str) -> bool {
    repo.contains("://") || (repo.contains('@') && repo.contains(':'))
}

fn toml_message(e: &toml::de::Error, text: &str) -> String {
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("{line}:{column}: {}", e.message())
        }
        None => e.message().to_string(),
    }
}

/// Sets `path` in `table` to `value`, typed as TOML when it parses as a TOML value, else a string.
fn set_path(table: &mut toml::Table, path: &[String], value: &str) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty key")?;
    let mut cur = table;
    for (i, key) in parents.iter().enumerate() {
        let entry = cur
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry
            .as_table_mut()
            .ok_or_else(|| format!("{} is not a table", path[..=i].join(".")))?;
    }
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    cur.insert(last.clone(), parsed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::parse(
            text,
            "swarm.toml",
            Path::new("/cfg"),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn public_url_makes_task_page_links_and_refuses_what_is_not_an_address() {
        let c = parse("[http]\npublic_url = \"https://swarm.example.com/\"\n", &[]).unwrap();
        assert_eq!(
            c.http.task_page("web", "login form").as_deref(),
            Some("https://swarm.example.com/tasks/web/login%20form")
        );
        let c = parse("", &[("SWARM_HTTP__PUBLIC_URL", "http://10.0.0.5:8080")]).unwrap();
        assert_eq!(
            c.http.task_page("web", "a").as_deref(),
            Some("http://10.0.0.5:8080/tasks/web/a")
        );
        assert_eq!(parse("", &[]).unwrap().http.task_page("web", "a"), None);
        for (bad, needle) in [
            ("swarm.example.com", "expected the dashboard's address"),
            ("https://", "expected the dashboard's address"),
            ("https://x.example/?a=1", "expected the dashboard's address"),
            (
                "https://ann:secret@x.example",
                "must not hold a user or password",
            ),
        ] {
            let err = parse(&format!("[http]\npublic_url = {bad:?}\n"), &[])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("http.public_url") && err.contains(needle),
                "{bad}: {err}"
            );
            assert!(!err.contains("secret"), "{err}");
        }
    }

    #[test]
    fn defaults_are_embedded() {
        let c = parse("", &[]).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/cfg/.swarm"));
        assert!(c
            .database_url()
            .starts_with("sqlite:///cfg/.swarm/swarm.db"));
        assert_eq!(c.limits.max_running, 8);
    }

    #[test]
    fn a_full_file_parses_and_env_overrides_it() {
        let text = r#"
            data_dir = "/var/lib/swarm"
            poll_interval = "30s"
            [limits]
            max_running = 3
            [agents.claude]
            command = ["claude", "-p", "{prompt}"]
            [[projects]]
            name = "web"
            repo = "../web"
            default_branch = "trunk"
            max_running = 2
        "#;
        let c = parse(
            text,
            &[
                ("SWARM_LIMITS__MAX_RUNNING", "5"),
                ("SWARM_DATABASE_URL", "postgres://u:pw@h/db"),
                ("SWARM_TASK_KEY", "x"),
            ],
        )
        .unwrap();
        assert_eq!(c.limits.max_running, 5);
        assert_eq!(c.projects[0].repo, "/cfg/../web");
        assert_eq!(c.max_running_for(&c.projects[0]), 2);
        assert_eq!(
            format!("{:?}", c.database_url),
            "Some(postgres://u:***@h/db)"
        );
    }

    #[test]
    fn webhook_retention_defaults_to_seven_days() {
        let c = parse("[github]\n", &[]).unwrap();
        let week = Duration::from_secs(7 * 24 * 3600);
        assert_eq!(c.github.unwrap().webhook_retention, week);
        let c = parse("[github]\nwebhook_retention = \"2d\"\n", &[]).unwrap();
        let two_days = Duration::from_secs(2 * 24 * 3600);
        assert_eq!(c.github.unwrap().webhook_retention, two_days);
    }

    #[test]
    fn wrong_keys_are_named() {
        let err = parse("[limits]\nmax_runing = 3\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_runing"), "{err}");
        let err = parse("poll_interval = \"often\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("often"), "{err}");
        let err = parse("", &[("SWARM_LIMITS__MAX_RUNIN", "3")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("SWARM_LIMITS__MAX_RUNIN") && err.contains("max_runin"),
            "{err}"
        );
        let err = parse(
            "[[projects]]\nname = \"a\"\nrepo = \"x\"\n[[projects]]\nname = \"a\"\nrepo = \"y\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("projects[1].name"), "{err}");
        let err = parse("default_agent = \"codex\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("default_agent"), "{err}");
    }

    #[test]
    fn refusals_name_the_input_and_where() {
        let project = |repo: &str| format!("[[projects]]\nname = \"web\"\nrepo = {repo:?}\n");
        let profile = |env: &str| {
            format!("[agents.claude]\nkind = \"claude\"\nenv = {{ {env} = \"sk-ant-api03-secret-value\" }}\n")
        };
        // (config text, what the error must say, what it must never say)
        let table = [
            (
                project("https://ann:hunter2-secret@git.example.com/web.git"),
                "projects[0].repo: the URL holds a password",
                "hunter2-secret",
            ),
            (
                project("https://ghp_tokentokentoken@github.com/o/web.git"),
                "projects[0].repo: the URL holds a password",
                "ghp_tokentokentoken",
            ),
            (
                project("http://x-access-token:abc12345678@host/web.git"),
                "projects[0].repo: the URL holds a password",
                "abc12345678",
            ),
            (
                profile("ANTHROPIC_API_KEY"),
                "agents.claude.env: ANTHROPIC_API_KEY is refused",
                "sk-ant-api03-secret-value",
            ),
            (
                profile("ANTHROPIC_AUTH_TOKEN"),
                "agents.claude.env: ANTHROPIC_AUTH_TOKEN is refused",
                "sk-ant-api03-secret-value",
            ),
            (
                "[agents.claude]\nkind = \"claude\"\nenv = { GH = \"${SWARM_GIT_TOKEN}\" }\n".into(),
                "agents.claude.env.GH: the git credential (SWARM_GIT_TOKEN, GITHUB_TOKEN) is refused",
                "\u{0}",
            ),
            (
                "[github]\ntoken_renewal = \"2h\"\n".into(),
                "github.token_renewal: must be above 0 and at most 55m",
                "\u{0}",
            ),
            (
                "[epics]\nmax_tasks = 0\n".into(),
                "epics.max_tasks: must be above 0",
                "\u{0}",
            ),
            (
                "[epics]\nmax_consecutive_failures = 0\n".into(),
                "epics.max_consecutive_failures: must be above 0",
                "\u{0}",
            ),
            (
                "[epics]\nmax_activations = 0\n".into(),
                "epics.max_activations: must be above 0",
                "\u{0}",
            ),
            (
                "[epics]\nmax_spend_usd = 0.0\n".into(),
                "epics.max_spend_usd: must be above 0",
                "\u{0}",
            ),
            (
                "[epics]\nmax_spend_usd = -1.0\n".into(),
                "epics.max_spend_usd: must be above 0",
                "\u{0}",
            ),
            (
                "[epics]\nmax_spend_usd = nan\n".into(),
                "epics.max_spend_usd: must be above 0",
                "\u{0}",
            ),
        ];
        for (text, says, never) in &table {
            let err = parse(text, &[]).expect_err(text).to_string();
            assert!(
                err.starts_with("swarm.toml: ") && err.contains(says),
                "{text}: {err}"
            );
            assert!(!err.contains(never), "{text}: {err}");
        }
        // The same refusals when the value comes from the environment: the variable is named.
        let err = parse("", &[("SWARM_EPICS__MAX_TASKS", "0")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("SWARM_EPICS__MAX_TASKS") && err.contains("epics.max_tasks"),
            "{err}"
        );
        // What is not refused: URLs without a password, a profile with a subscription token.
        for repo in [
            "https://github.com/o/web.git",
            "ssh://git@github.com/o/web.git",
            "git@github.com:o/web.git",
            "/srv/git/web.git",
        ] {
            parse(&project(repo), &[]).unwrap_or_else(|e| panic!("{repo}: {e}"));
        }
        parse(&profile("CLAUDE_CODE_OAUTH_TOKEN"), &[]).unwrap();
    }
}

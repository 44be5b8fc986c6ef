//! The worker with the real Claude Code CLI against the scripted model server: the subscription
//! path, the safety checks, failures as the CLI reports them, timeouts and secrets.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use coding_swarm::config::{AgentKind, AgentProfile};
use coding_swarm::job::JobSpec;
use coding_swarm::spec::{ErrorClass, RunResult};
use serde_json::json;

use crate::model::{claude_bin, ModelServer, Step};
use crate::support::TestRepo;

const SWARM: &str = env!("CARGO_BIN_EXE_swarm");
pub const TOKEN: &str = "sk-ant-oat01-scripted-test-token-0123456789";

/// The local runtime, with the scripted model's token given to every worker as
/// `TEST_OAUTH_TOKEN` (the profiles name it as `${TEST_OAUTH_TOKEN}`). Given to the workers, not
/// set in the tests' own environment, which every test shares.
pub fn runtime_with_token(
    runs_dir: &Path,
    tx: tokio::sync::mpsc::UnboundedSender<coding_swarm::runtime::Completion>,
) -> coding_swarm::runtime::LocalRuntime {
    coding_swarm::runtime::LocalRuntime::new(runs_dir.to_path_buf(), SWARM.into(), tx)
        .with_env([("TEST_OAUTH_TOKEN".to_string(), TOKEN.to_string())])
}

/// An engine on [`runtime_with_token`], as `Engine::new` builds one on the local runtime.
pub fn engine_with_token(
    cfg: coding_swarm::config::Config,
    store: coding_swarm::store::Store,
) -> coding_swarm::engine::Engine<coding_swarm::runtime::LocalRuntime> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let runtime = runtime_with_token(&cfg.data_dir.join("runs"), tx);
    coding_swarm::engine::Engine::with_runtime(cfg, store, runtime, rx)
}

/// The `claude` profile as an operator would write it, pointed at the scripted server.
/// `IS_SANDBOX=1` lets the CLI skip permissions as root (CI runs as root); tests only.
pub fn profile(server: &ModelServer) -> AgentProfile {
    AgentProfile {
        kind: AgentKind::Claude,
        command: vec![claude_bin()],
        env: BTreeMap::from([
            (
                "CLAUDE_CODE_OAUTH_TOKEN".to_string(),
                "${TEST_OAUTH_TOKEN}".to_string(),
            ),
            ("ANTHROPIC_BASE_URL".to_string(), server.url.clone()),
            ("IS_SANDBOX".to_string(), "1".to_string()),
        ]),
        max_turns: Some(10),
        max_budget_usd: Some(2.0),
        model: None,
        extra_args: Vec::new(),
        network: Default::default(),
        grace: Some(Duration::from_secs(2)),
    }
}

pub(crate) fn task(repo: &TestRepo, agent: AgentProfile) -> JobSpec {
    JobSpec {
        version: coding_swarm::job::VERSION,
        project: "proj".into(),
        key: "feature".into(),
        generation: 1,
        attempt: 1,
        run_name: "proj-feature-g1-a1".into(),
        repo: repo.url(),
        branch: "swarm/feature".into(),
        base: "main".into(),
        kind: Some("implement".into()),
        prompt: "Create hello.txt and check it.".into(),
        agent_name: "claude".into(),
        agent: (&agent).into(),
        git_name: "Swarm Bot".into(),
        git_email: "bot@example.com".into(),
        hooks: None,
    }
}

pub(crate) fn worker(dir: &Path, task: &JobSpec, env: &[(&str, &str)]) -> (RunResult, Option<i32>) {
    std::fs::write(dir.join("task.json"), serde_json::to_vec(task).unwrap()).unwrap();
    let mut cmd = crate::support::command(SWARM);
    cmd.args(["worker", "--run-dir"])
        .arg(dir)
        .env("HOME", dir.join("worker-home"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let log = std::fs::File::create(dir.join("log")).unwrap();
    let status = cmd
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .status()
        .unwrap();
    let result = serde_json::from_slice(&std::fs::read(dir.join("result.json")).unwrap()).unwrap();
    (result, status.code())
}

pub(crate) fn repo() -> TestRepo {
    let repo = TestRepo::new();
    repo.commit(&[("README.md", Some("# project\n"))], "init");
    repo
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_writes_a_file_runs_a_command_and_the_worker_pushes_it() {
    let server = ModelServer::start(vec![
        Step::tool("Write", json!({"file_path": "{cwd}/hello.txt", "content": "hello from the scripted model\n"})),
        Step::tool("Bash", json!({"command": "echo ran > ran.txt && cat hello.txt", "description": "check the file"})),
        Step::text("Created hello.txt and checked it with a shell command."),
    ])
    .await;
    let repo = repo();
    let dir = tempfile::tempdir().unwrap();
    let t = task(&repo, profile(&server));
    let (result, code) = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || worker(&dir, &t, &[("TEST_OAUTH_TOKEN", TOKEN)])
    })
    .await
    .unwrap();
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
    assert!(result.success, "{result:?}\n{log}");
    assert_eq!(code, Some(0));
    assert_eq!(
        result.summary.as_deref(),
        Some("Created hello.txt and checked it with a shell command.")
    );
    assert_eq!(result.turns, Some(3), "{result:?}");
    assert!(result.cost_usd.is_some_and(|c| c > 0.0), "{result:?}");
    assert!(result.session_id.is_some());
    let head = repo.repo.refname_to_id("refs/heads/swarm/feature").unwrap();
    assert_eq!(
        result.commit_sha.as_deref(),
        Some(head.to_string().as_str())
    );
    assert_eq!(
        repo.read("swarm/feature", "hello.txt").as_deref(),
        Some("hello from the scripted model\n")
    );
    assert_eq!(
        repo.read("swarm/feature", "ran.txt").as_deref(),
        Some("ran\n"),
        "the Bash tool really ran"
    );

    // The subscription path: a bearer token, never an API key.
    let requests = server.messages_requests();
    assert!(requests.len() >= 3, "{} requests", requests.len());
    for r in &requests {
        assert_eq!(
            r.headers.get("authorization").map(String::as_str),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert!(!r.headers.contains_key("x-api-key"), "{:?}", r.headers);
        assert!(
            r.headers
                .get("anthropic-beta")
                .is_some_and(|b| b.contains("oauth")),
            "{:?}",
            r.headers
        );
    }
    // The role prompt and the task reached the model.
    let first = requests[0].body.to_string();
    assert!(
        first.contains("You are a worker in coding-swarm")
            && first.contains("Create hello.txt and check it.")
    );
    // The stream-json events are in the log, for live progress.
    assert!(
        log.contains(r#""type":"result""#) && log.contains(r#""type":"assistant""#),
        "{log}"
    );
    assert!(!log.contains(TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_in_reach_aborts_before_any_request() {
    let server = ModelServer::start(vec![Step::text("should never be asked")]).await;
    let repo = repo();
    let dir = tempfile::tempdir().unwrap();
    let t = task(&repo, profile(&server));
    let (result, code) = worker(
        dir.path(),
        &t,
        &[
            ("TEST_OAUTH_TOKEN", TOKEN),
            ("ANTHROPIC_API_KEY", "sk-ant-api03-would-bill-per-token"),
        ],
    );
    assert_eq!(
        result.error_class,
        Some(ErrorClass::BillingGuard),
        "{result:?}"
    );
    assert_eq!(code, Some(3), "a distinct exit code");
    assert!(result
        .error
        .as_deref()
        .unwrap()
        .contains("ANTHROPIC_API_KEY"));
    assert!(
        !dir.path().join("checkout").exists(),
        "not even the clone happened"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.requests().len(), 0);
    let on_disk = std::fs::read_to_string(dir.path().join("result.json")).unwrap()
        + &std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert!(
        !on_disk.contains("sk-ant-api03-would-bill-per-token"),
        "{on_disk}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credentials_is_a_clear_abort() {
    let server = ModelServer::start(vec![Step::text("should never be asked")]).await;
    let repo = repo();
    let dir = tempfile::tempdir().unwrap();
    let t = task(&repo, profile(&server));
    let (result, code) = worker(dir.path(), &t, &[]);
    assert_eq!(result.error_class, Some(ErrorClass::Auth), "{result:?}");
    assert_eq!(code, Some(2));
    let msg = result.error.unwrap();
    assert!(
        msg.contains("claude setup-token")
            && msg.contains("CLAUDE_CODE_OAUTH_TOKEN")
            && msg.contains(".credentials.json"),
        "{msg}"
    );
    assert_eq!(server.requests().len(), 0);

    // A mounted ~/.claude with credentials is accepted, and copied into the run's own HOME.
    let creds = dir.path().join("worker-home/.claude");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::write(creds.join(".credentials.json"), format!(r#"{{"claudeAiOauth":{{"accessToken":"{TOKEN}","refreshToken":"sk-ant-ort01-refresh-0123456789","expiresAt":4102444800000,"scopes":["user:inference"]}}}}"#)).unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir2.path().join("worker-home")).unwrap();
    let mut t2 = t.clone();
    t2.agent.env.remove("CLAUDE_CODE_OAUTH_TOKEN");
    std::fs::rename(
        dir.path().join("worker-home"),
        dir2.path().join("worker-home-mounted"),
    )
    .unwrap();
    let (result, _) = worker(
        dir2.path(),
        &t2,
        &[(
            "SWARM_WORKER_HOME",
            dir2.path().join("worker-home-mounted").to_str().unwrap(),
        )],
    );
    assert!(
        result.success,
        "{result:?}\n{}",
        std::fs::read_to_string(dir2.path().join("log")).unwrap_or_default()
    );
    let requests = server.messages_requests();
    assert!(!requests.is_empty());
    for r in requests {
        assert_eq!(
            r.headers.get("authorization").map(String::as_str),
            Some(format!("Bearer {TOKEN}").as_str())
        );
    }
    // The private copy lives in the run's HOME; the mounted original is untouched.
    assert!(dir2.path().join("home/.claude/.credentials.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clis_error_result_becomes_a_failure_with_its_message() {
    let server = ModelServer::start(vec![Step::Error {
        status: 400,
        kind: "invalid_request_error".into(),
        message: "the scripted model refuses: prompt is malformed".into(),
        headers: vec![],
    }])
    .await;
    let repo = repo();
    let dir = tempfile::tempdir().unwrap();
    let t = task(&repo, profile(&server));
    let (result, _) = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || worker(&dir, &t, &[("TEST_OAUTH_TOKEN", TOKEN)])
    })
    .await
    .unwrap();
    assert!(!result.success);
    assert_eq!(result.error_class, Some(ErrorClass::Agent), "{result:?}");
    assert!(
        result
            .error
            .as_deref()
            .unwrap()
            .contains("the scripted model refuses"),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_secret_never_reaches_logs_results_or_commits() {
    let server = ModelServer::start(vec![
        Step::tool("Bash", json!({"command": format!("echo leaking {TOKEN}; echo {TOKEN} > secret.txt"), "description": "leak"})),
        Step::text(&format!("Done. By the way, the token is {TOKEN}.")),
    ])
    .await;
    let repo = repo();
    let dir = tempfile::tempdir().unwrap();
    let t = task(&repo, profile(&server));
    let (result, _) = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || worker(&dir, &t, &[("TEST_OAUTH_TOKEN", TOKEN)])
    })
    .await
    .unwrap();
    assert!(
        !result.success,
        "a change holding a secret is refused: {result:?}"
    );
    assert!(
        result.error.as_deref().unwrap().contains("secret.txt"),
        "{result:?}"
    );
    assert!(
        result.summary.as_deref().unwrap().contains("[REDACTED:"),
        "{result:?}"
    );
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert!(
        log.contains("leaking [REDACTED:"),
        "the secret's place is visible in the log: {log}"
    );
    for (what, text) in [
        ("log", log),
        (
            "result.json",
            std::fs::read_to_string(dir.path().join("result.json")).unwrap(),
        ),
    ] {
        assert!(!text.contains(TOKEN), "{what} contains the secret");
    }
    assert!(
        repo.repo.refname_to_id("refs/heads/swarm/feature").is_err(),
        "nothing was pushed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_requeues_without_counting_and_pauses_the_credential() {
    use chrono::Utc;
    use coding_swarm::engine::RunOptions;
    use coding_swarm::spec::TaskState;

    let reset = Utc::now().timestamp() + 3600;
    let server = ModelServer::start(vec![Step::Error {
        status: 429,
        kind: "rate_limit_error".into(),
        message: "Number of requests has exceeded your rate limit".into(),
        headers: vec![
            ("x-should-retry".into(), "false".into()),
            ("retry-after".into(), "0".into()),
            (
                "anthropic-ratelimit-unified-status".into(),
                "rejected".into(),
            ),
            (
                "anthropic-ratelimit-unified-reset".into(),
                reset.to_string(),
            ),
        ],
    }])
    .await;
    let db = crate::support::TestDb::sqlite().await;
    let data = tempfile::tempdir().unwrap();
    let repo = repo();
    repo.commit(
        &[
            (
                ".ai/tasks/a-first.yaml",
                Some("addressee: wa\nprompt: first\n"),
            ),
            (
                ".ai/tasks/b-second.yaml",
                Some("addressee: wb\nprompt: second\n"),
            ),
            (
                ".ai/tasks/c-plain.yaml",
                Some("addressee: wc\nprompt: third\nagent: sh\n"),
            ),
        ],
        "tasks",
    );
    let p = profile(&server);
    let text = format!(
        r#"
data_dir = {data:?}
database_url = {db:?}
retry_backoff = "1s"
[limits]
max_running = 1
[agents.claude]
kind = "claude"
command = [{bin:?}]
env = {{ CLAUDE_CODE_OAUTH_TOKEN = "${{TEST_OAUTH_TOKEN}}", ANTHROPIC_BASE_URL = {url:?}, IS_SANDBOX = "1" }}
max_turns = 5
[agents.sh]
command = ["sh", "-c", "echo plain"]
[[projects]]
name = "proj"
repo = {repo:?}
"#,
        data = data.path().display().to_string(),
        db = db.url,
        bin = p.command[0],
        url = server.url,
        repo = repo.url()
    );
    let cfg = coding_swarm::config::Config::parse(&text, "test", data.path(), std::iter::empty())
        .unwrap();
    // The worker reads the token from its environment, as in production.
    let engine = engine_with_token(cfg, db.store.clone());
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let handle = tokio::spawn(engine.run(RunOptions { once: false }, stop_rx));
    let store = db.store.clone();
    let start = std::time::Instant::now();
    loop {
        let a = store.task("proj", "a-first").await.unwrap();
        let c = store.task("proj", "c-plain").await.unwrap();
        if let (Some(a), Some(c)) = (&a, &c) {
            if a.requeues == 1 && c.state() == TaskState::Completed {
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "a: {:?}; c: {:?}",
            a.map(|a| (a.state(), a.result)),
            c.map(|c| c.state())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let a = store.task("proj", "a-first").await.unwrap().unwrap();
    assert_eq!(a.state(), TaskState::Pending, "back in the queue");
    assert_eq!(
        a.attempts - a.infra_failures - a.requeues,
        0,
        "not counted as an attempt"
    );
    assert!(
        a.not_before.unwrap() > Utc::now() + chrono::Duration::seconds(60),
        "waits for the reset: {:?}",
        a.not_before
    );
    assert_eq!(a.result().unwrap().error_class, Some(ErrorClass::RateLimit));
    let pauses = store.agent_pauses(Utc::now()).await.unwrap();
    assert_eq!(
        pauses.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(),
        ["claude"]
    );
    // The other task of the same credential was never dispatched; the other agent's ran.
    let b_events: Vec<String> = store
        .events("proj", "b-second")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind.to_string())
        .collect();
    assert_eq!(b_events, ["created"]);
    let a_events: Vec<String> = store
        .events("proj", "a-first")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind.to_string())
        .collect();
    assert!(
        a_events.contains(&"requeued".to_string())
            && a_events.contains(&"agent_paused".to_string()),
        "{a_events:?}"
    );
    assert!(
        store
            .task("proj", "c-plain")
            .await
            .unwrap()
            .unwrap()
            .result()
            .unwrap()
            .success
    );
    stop.send(true).unwrap();
    handle.await.unwrap().unwrap();
    db.drop_db().await;
}

/// Processes whose working directory is inside `dir` (zombies excluded).
fn processes_in(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().to_string();
        if !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if let Ok(cwd) = std::fs::read_link(entry.path().join("cwd")) {
            if !zombie && cwd.starts_with(dir) {
                let cmd = std::fs::read_to_string(entry.path().join("cmdline"))
                    .unwrap_or_default()
                    .replace('\0', " ");
                found.push(format!("{pid}: {cmd}"));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_past_its_timeout_leaves_no_process_behind() {
    use coding_swarm::runtime::Launch;
    let server = ModelServer::start(vec![
        Step::tool("Bash", json!({"command": "python3 -c \"import time; time.sleep(120)\"", "description": "a long build"})),
    ])
    .await;
    let repo = repo();
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let rt = runtime_with_token(&dir.path().join("runs"), tx);
    let mut t = task(&repo, profile(&server));
    t.run_name = "slow".into();
    rt.launch(Launch {
        adopt_only: false,
        git_token: None,
        task_id: 1,
        attempt: 1,
        run_name: "slow".into(),
        deadline: chrono::Utc::now() + chrono::Duration::seconds(8),
        task: t,
    })
    .await
    .unwrap();
    // Wait until the agent's shell is in its long command.
    let checkout = dir.path().join("runs/slow/checkout");
    let start = std::time::Instant::now();
    while !processes_in(&checkout)
        .iter()
        .any(|p| p.contains("time.sleep(120)"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the agent never started its command: {:?}\n{}",
            processes_in(dir.path()),
            std::fs::read_to_string(dir.path().join("runs/slow/log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let c = tokio::time::timeout(Duration::from_secs(40), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        c.result.error_class,
        Some(ErrorClass::Timeout),
        "{:?}",
        c.result
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let left = processes_in(dir.path());
    assert!(left.is_empty(), "processes survived the timeout: {left:?}");
}

/// Text of exactly `len` characters that starts with `head` and ends with `tail`, with lines.
fn filler(head: &str, tail: &str, len: usize) -> String {
    let mut s = String::from(head);
    let line = "lorem ipsum dolor sit amet, consectetur adipiscing elit\n";
    while s.len() + line.len() + tail.len() <= len {
        s.push_str(line);
    }
    while s.len() + tail.len() < len {
        s.push('.');
    }
    s.push_str(tail);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_at_the_limits_reaches_the_model_whole() {
    let server = ModelServer::start(vec![Step::text("Read it all.")]).await;
    let repo = TestRepo::new();
    // The largest role prompt override the worker reads (64 KiB), and a task prompt at the
    // validator's limit: together far beyond the 128 KiB Linux allows one argument.
    let role = filler("ROLE-BEGIN\n", "\nROLE-END", 64 * 1024);
    repo.commit(
        &[
            ("README.md", Some("# project\n")),
            (".ai/prompts/implement.md", Some(&role)),
        ],
        "init",
    );
    let mut t = task(&repo, profile(&server));
    t.prompt = filler(
        "TASK-BEGIN\n",
        "\nTASK-END",
        coding_swarm::spec::Prompt::MAX_CHARS,
    );
    let prompt = t.prompt.clone();
    let file = format!(
        "addressee: w\nprompt: |-\n  {}\n",
        prompt.replace('\n', "\n  ")
    );
    assert!(
        coding_swarm::spec::parse_task(file.as_bytes()).is_ok(),
        "the prompt is within the validator's limit"
    );
    succeeded(t).await;
    let requests = server.messages_requests();
    let first = requests
        .iter()
        .find(|r| r.body.to_string().contains("TASK-BEGIN"))
        .expect("the task reached the model");
    // Every text the CLI sent, joined: the whole role prompt and the whole task are in it.
    let mut sent = String::new();
    collect_text(&first.body["messages"], &mut sent);
    assert!(sent.contains(role.trim_end()), "the whole role prompt");
    assert!(sent.contains(&prompt), "the whole task prompt");
}

fn collect_text(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::String(s) => out.push_str(s),
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_text(x, out)),
        serde_json::Value::Object(m) => m.values().for_each(|x| collect_text(x, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managers_result_names_the_order_its_new_tasks_will_run_in() {
    let server = ModelServer::start(vec![
        Step::tool("Write", json!({"file_path": "{cwd}/.ai/tasks/fix.yaml",
            "content": "addressee: worker-login\nprompt: Fix the login bug.\nkind: implement\n"})),
        Step::tool("Write", json!({"file_path": "{cwd}/.ai/tasks/add-test.yaml",
            "content": "addressee: worker-login\nprompt: Add a test for the login bug.\nkind: test\n"})),
        Step::tool("Write", json!({"file_path": "{cwd}/.ai/tasks/docs.yaml",
            "content": "addressee: worker-docs\nprompt: Document the login.\n"})),
        Step::text("Planned the fix and its test."),
    ])
    .await;
    let repo = repo();
    let mut t = task(&repo, profile(&server));
    t.key = "activation".into();
    t.kind = Some("epic".into());
    t.branch = "main".into();
    t.prompt = "Fix the login bug, with a test.".into();
    let result = succeeded(t).await;
    assert!(repo.read("main", ".ai/tasks/fix.yaml").is_some(), "pushed");
    let summary = result.summary.unwrap();
    assert!(
        summary.starts_with("Planned the fix and its test.")
            && summary.ends_with(
                "New tasks, in the order they will run:\n- worker-docs: docs\n- worker-login: add-test, then fix"
            ),
        "{summary}"
    );
    // The manager was told the rule.
    let first = server.messages_requests()[0].body.to_string();
    assert!(
        first.contains("in the order of their keys"),
        "the rule is in the role prompt"
    );
}

/// Runs the worker on `t` with the scripted model's token; the run must succeed.
async fn succeeded(t: JobSpec) -> RunResult {
    let dir = tempfile::tempdir().unwrap();
    let (result, _) = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || worker(&dir, &t, &[("TEST_OAUTH_TOKEN", TOKEN)])
    })
    .await
    .unwrap();
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
    assert!(
        result.success,
        "{result:?}\n{}",
        coding_swarm::job::truncate_start(&log, 3000)
    );
    result
}

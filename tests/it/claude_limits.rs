//! The real Claude Code CLI stopped by the limits it is given and by the provider's: a run cut
//! short by `--max-turns` and one by `--max-budget-usd` (the scripted model reports usage whose
//! price crosses it) each end as class `agent` with an error that says which cap stopped it;
//! and a usage limit whose reset is a few seconds ahead pauses the agent profile, the pause
//! ends by itself, and the requeued task then runs and succeeds.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use coding_swarm::engine::RunOptions;
use coding_swarm::spec::{ErrorClass, TaskState};
use serde_json::json;

use crate::claude::{engine_with_token, profile, repo, task, worker, TOKEN};
use crate::model::{ModelServer, Step};
use crate::support::{wait_for, TestDb};

async fn run_worker(
    t: coding_swarm::job::JobSpec,
) -> (coding_swarm::spec::RunResult, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (result, _) = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || worker(&dir, &t, &[("TEST_OAUTH_TOKEN", TOKEN)])
    })
    .await
    .unwrap();
    (result, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stopped_by_max_turns_is_an_agent_failure_that_says_so() {
    // The model wants three turns; the profile allows one.
    let server = ModelServer::start(vec![
        Step::tool(
            "Bash",
            json!({"command": "echo one > one.txt", "description": "first"}),
        ),
        Step::tool(
            "Bash",
            json!({"command": "echo two > two.txt", "description": "second"}),
        ),
        Step::text("Done after three turns."),
    ])
    .await;
    let repo = repo();
    let mut p = profile(&server);
    p.max_turns = Some(1);
    let (result, dir) = run_worker(task(&repo, p)).await;
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
    assert!(!result.success, "{result:?}\n{log}");
    assert_eq!(result.error_class, Some(ErrorClass::Agent), "{result:?}");
    let error = result.error.clone().unwrap();
    // The CLI's own words (`subtype: error_max_turns`).
    assert!(
        error.contains("maximum number of turns (1)"),
        "says that the turn cap stopped it: {error}"
    );
    assert!(
        server.messages_requests().len() <= 2,
        "the CLI stopped asking the model"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stopped_by_max_budget_usd_is_an_agent_failure_that_says_so() {
    // The first answer costs far more than the budget (a million output tokens); the model
    // would go on for two more turns.
    let server = ModelServer::start(vec![
        Step::Spend {
            step: Box::new(Step::tool(
                "Bash",
                json!({"command": "echo one > one.txt", "description": "first"}),
            )),
            output_tokens: 1_000_000,
        },
        Step::tool(
            "Bash",
            json!({"command": "echo two > two.txt", "description": "second"}),
        ),
        Step::text("Done after three turns."),
    ])
    .await;
    let repo = repo();
    let mut p = profile(&server);
    p.max_budget_usd = Some(0.5);
    let (result, dir) = run_worker(task(&repo, p)).await;
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
    assert!(!result.success, "{result:?}\n{log}");
    assert_eq!(result.error_class, Some(ErrorClass::Agent), "{result:?}");
    let error = result.error.clone().unwrap();
    // The CLI's own words (`subtype: error_max_budget_usd`).
    assert!(
        error.contains("maximum budget ($0.5)"),
        "says that the budget stopped it: {error}"
    );
    assert!(
        result.cost_usd.is_some_and(|c| c > 0.5),
        "the cost that crossed it is reported: {result:?}"
    );
    assert!(
        server.messages_requests().len() <= 2,
        "the CLI stopped asking the model"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_usage_limit_that_resets_in_seconds_pauses_then_the_task_runs_and_succeeds() {
    let reset = Utc::now().timestamp() + 6;
    let asked: Arc<Mutex<Vec<DateTime<Utc>>>> = Arc::default();
    let log = asked.clone();
    // The first request hits the subscription's usage limit; after it the model works: it
    // writes a file, then says it is done.
    let server = ModelServer::start_with(move |turn| {
        let first = {
            let mut l = log.lock().unwrap();
            l.push(Utc::now());
            l.len() == 1
        };
        if first {
            return Step::Error {
                status: 429,
                kind: "rate_limit_error".into(),
                message: "Claude AI usage limit reached".into(),
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
            };
        }
        match turn.index {
            0 => Step::tool(
                "Write",
                json!({"file_path": "{cwd}/after.txt", "content": "after the reset\n"}),
            ),
            _ => Step::text("Wrote after.txt."),
        }
    })
    .await;
    let db = TestDb::sqlite().await;
    let data = tempfile::tempdir().unwrap();
    let repo = repo();
    repo.commit(
        &[(
            ".ai/tasks/limited.yaml",
            Some("addressee: wa\nprompt: write after.txt\n"),
        )],
        "a task",
    );
    let p = profile(&server);
    let text = format!(
        r#"
data_dir = {data:?}
database_url = {db:?}
retry_backoff = "1s"
poll_interval = "1s"
[agents.claude]
kind = "claude"
command = [{bin:?}]
env = {{ CLAUDE_CODE_OAUTH_TOKEN = "${{TEST_OAUTH_TOKEN}}", ANTHROPIC_BASE_URL = {url:?}, IS_SANDBOX = "1" }}
max_turns = 5
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
    let engine = engine_with_token(cfg, db.store.clone());
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let handle = tokio::spawn(engine.run(RunOptions { once: false }, stop_rx));
    let store = db.store.clone();
    wait_for(
        "the task to succeed after the reset",
        Duration::from_secs(150),
        async || {
            store
                .task("proj", "limited")
                .await
                .unwrap()
                .is_some_and(|t| t.state() == TaskState::Completed)
        },
    )
    .await;
    let t = store.task("proj", "limited").await.unwrap().unwrap();
    let result = t.result().unwrap();
    assert!(result.success, "{result:?}");
    assert_eq!(t.requeues, 1, "requeued once, by the usage limit");
    assert_eq!(
        t.attempts - t.infra_failures - t.requeues,
        1,
        "the limited run is not counted as an attempt"
    );
    assert_eq!(
        repo.read("swarm/limited", "after.txt").as_deref(),
        Some("after the reset\n")
    );
    let events: Vec<String> = store
        .events("proj", "limited")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind.to_string())
        .collect();
    assert!(
        events.contains(&"requeued".to_string()) && events.contains(&"agent_paused".to_string()),
        "{events:?}"
    );
    let asked = asked.lock().unwrap().clone();
    let reset_at = DateTime::from_timestamp(reset, 0).unwrap();
    assert!(
        asked.len() >= 3 && asked[1] >= reset_at,
        "the model was asked again only after the reset at {reset_at}: {asked:?}"
    );
    assert!(
        store.agent_pauses(Utc::now()).await.unwrap().is_empty(),
        "the pause ended by itself"
    );
    stop.send(true).unwrap();
    handle.await.unwrap().unwrap();
    db.drop_db().await;
}

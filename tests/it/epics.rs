//! How an epic ends (README section 4, "How an epic ends"): failed by the manager's
//! `EPIC FAILED: reason` and by each of the caps `max_tasks`, `max_activations` and
//! `max_spend_usd`, when its pending tasks complete as cancelled with the reason and get their
//! status files; complete by `EPIC COMPLETE`, when its pending tasks still run. Either way a
//! task of the epic still running finishes, and nothing activates the manager again. And a
//! stopped run of an active epic activates nothing.

use std::path::Path;
use std::time::Duration;

use coding_swarm::engine::RunOptions;
use coding_swarm::model::{EpicRow, EpicState};
use coding_swarm::spec::{ErrorClass, StatusSpec, TaskState};
use coding_swarm::store::{Store, TaskFilter};

use crate::model::{claude_bin, ModelServer, Step, Turn};
use crate::support::{config, wait_for, Backend, TestDb, TestRepo};

crate::on_both_backends!(
    the_managers_epic_failed_ends_the_epic,
    a_complete_epics_pending_tasks_still_run,
    a_stopped_run_of_an_epic_activates_nothing,
    max_tasks_ends_the_epic_at_the_sync_that_passes_it,
    max_activations_ends_the_epic
);

/// One epic run to its failure. `manager_says` is the last line the manager's `sh` run prints
/// (its summary); `extra` goes into the config.
struct Scenario<'a> {
    extra: &'a str,
    manager_says: &'a str,
    /// `agent:` of the epic's task file, when not the `sh` profile.
    manager_agent: Option<&'a str>,
}

impl<'a> Scenario<'a> {
    /// The manager is the `sh` profile, saying `manager_says`.
    fn sh(extra: &'a str, manager_says: &'a str) -> Self {
        Self {
            extra,
            manager_says,
            manager_agent: None,
        }
    }
}

/// The agent: `blocker` waits for `release` (so worker-b's queue stays busy), the manager
/// prints its line, anything else just works.
fn script(release: &Path, manager_says: &str) -> String {
    format!(
        "case \"$SWARM_TASK_KEY\" in \
           blocker) while [ ! -e {release} ]; do sleep 0.1; done; echo released;; \
           epic-*) echo {manager_says:?};; \
           *) echo worked;; \
         esac",
        release = release.display()
    )
}

const EPIC: &str =
    "addressee: project-mgr-proj\nprompt: Do the impossible.\nkind: epic\nepic: doomed\n";
const WORKER: &str =
    "addressee: worker-b\nprompt: One step of the epic.\nkind: implement\nepic: doomed\n";

/// Runs `s` to the epic's end on `backend` and checks what every end of an epic does. The
/// epic's worker tasks `w1` and `w2` wait behind `blocker`, a task of the epic that runs while
/// the epic ends: a failed epic cancels them, a complete one lets them run. Returns the ended
/// epic.
async fn end_an_epic(backend: Backend, s: Scenario<'_>, server: Option<&ModelServer>) -> EpicRow {
    let db = TestDb::new(backend).await;
    let data = tempfile::tempdir().unwrap();
    let release = data.path().join("release");
    let repo = TestRepo::new();
    repo.commit(
        &[(".ai/tasks/blocker.yaml", Some(WORKER))],
        "a worker task that holds worker-b",
    );
    let mut extra = s.extra.to_string();
    if let Some(server) = server {
        extra += &format!(
            "\n[agents.claude]\nkind = \"claude\"\ncommand = [{bin:?}]\n\
             env = {{ CLAUDE_CODE_OAUTH_TOKEN = \"${{TEST_OAUTH_TOKEN}}\", ANTHROPIC_BASE_URL = {url:?}, IS_SANDBOX = \"1\" }}\n",
            bin = claude_bin(),
            url = server.url
        );
    }
    let cfg = config(
        data.path(),
        &db,
        &repo,
        &script(&release, s.manager_says),
        &extra,
    );
    let engine = crate::claude::engine_with_token(cfg, db.store.clone());
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let handle = tokio::spawn(engine.run(RunOptions { once: false }, stop_rx));
    let store = &db.store;
    wait_for("the blocker to run", Duration::from_secs(30), async || {
        status(store, "blocker").await == Some(TaskState::Running)
    })
    .await;

    let epic_file = match s.manager_agent {
        Some(agent) => format!("{EPIC}agent: {agent}\n"),
        None => EPIC.to_string(),
    };
    repo.commit(
        &[
            (".ai/tasks/epic-doomed.yaml", Some(&epic_file)),
            (".ai/tasks/w1.yaml", Some(WORKER)),
            (".ai/tasks/w2.yaml", Some(WORKER)),
        ],
        "an epic and two of its tasks",
    );
    wait_for("the epic to end", Duration::from_secs(60), async || {
        store
            .epic("proj", "doomed")
            .await
            .unwrap()
            .is_some_and(|e| !e.is_active())
    })
    .await;
    let epic = store.epic("proj", "doomed").await.unwrap().unwrap();
    let workers = ["w1", "w2"];
    if epic.state == EpicState::Failed {
        expect_cancelled(store, &repo, &epic, &workers).await;
    } else {
        // A complete epic's pending tasks still run.
        for key in workers {
            assert_eq!(status(store, key).await, Some(TaskState::Pending), "{key}");
        }
    }

    // The running task of the epic finishes; its result is recorded and activates nothing.
    std::fs::write(&release, "").unwrap();
    let ran: Vec<&str> = match epic.state {
        EpicState::Failed => vec!["blocker"],
        _ => vec!["blocker", "w1", "w2"],
    };
    wait_until_all(store, "the queue to run", &ran, TaskState::Completed).await;
    for key in ran {
        let t = store.task("proj", key).await.unwrap().unwrap();
        assert!(t.result().unwrap().success, "{t:?}");
    }
    let keys = keys_after(store, Duration::from_millis(500)).await;
    assert!(
        !keys.iter().any(|k| k.starts_with("activation-")),
        "nothing activates the manager of an ended epic: {keys:?}"
    );
    stop.send(true).unwrap();
    handle.await.unwrap().unwrap();
    db.drop_db().await;
    epic
}

/// The epic's pending `keys` completed as cancelled, with its reason, and their status files
/// say so.
async fn expect_cancelled(store: &Store, repo: &TestRepo, epic: &EpicRow, keys: &[&str]) {
    let cancelled = format!("epic doomed failed: {}", epic.reason.as_deref().unwrap());
    for key in keys {
        let t = store.task("proj", key).await.unwrap().unwrap();
        let r = t.result().unwrap();
        assert_eq!(
            (t.state(), t.attempts, r.error_class, r.error.as_deref()),
            (
                TaskState::Completed,
                0,
                Some(ErrorClass::Cancelled),
                Some(cancelled.as_str())
            ),
            "{key}"
        );
    }
    wait_for(
        "the cancelled tasks' status files",
        Duration::from_secs(30),
        async || keys.iter().all(|k| status_file(repo, k).is_some()),
    )
    .await;
    for key in keys {
        let st = status_file(repo, key).unwrap();
        let r = st.result.unwrap();
        assert_eq!(
            (st.status, r.error_class, r.error.as_deref()),
            (
                TaskState::Completed,
                Some(ErrorClass::Cancelled),
                Some(cancelled.as_str())
            ),
            "{key}"
        );
    }
}

/// The reason `s` failed its epic with.
async fn fail_an_epic(backend: Backend, s: Scenario<'_>, server: Option<&ModelServer>) -> String {
    let epic = end_an_epic(backend, s, server).await;
    assert_eq!(epic.state, EpicState::Failed, "{epic:?}");
    epic.reason.unwrap()
}

/// The keys of all tasks after `wait`, the time a runaway activation would need to show.
async fn keys_after(store: &Store, wait: Duration) -> Vec<String> {
    tokio::time::sleep(wait).await;
    let tasks = store.list(&TaskFilter::default()).await.unwrap();
    tasks.into_iter().map(|t| t.key).collect()
}

/// Waits until every task of `keys` is in `state`.
async fn wait_until_all(store: &Store, what: &str, keys: &[&str], state: TaskState) {
    wait_for(what, Duration::from_secs(30), async || {
        for key in keys {
            if status(store, key).await != Some(state) {
                return false;
            }
        }
        true
    })
    .await;
}

async fn status(store: &Store, key: &str) -> Option<TaskState> {
    store.task("proj", key).await.unwrap().map(|t| t.state())
}

fn status_file(repo: &TestRepo, key: &str) -> Option<StatusSpec> {
    let text = repo.read("main", &format!(".ai/status/{key}.yaml"))?;
    Some(serde_saphyr::from_str(&text).unwrap())
}

async fn the_managers_epic_failed_ends_the_epic(backend: Backend) {
    let s = Scenario::sh("", "EPIC FAILED: the API it needs does not exist");
    let reason = fail_an_epic(backend, s, None).await;
    assert_eq!(
        reason,
        "the project manager gave up: the API it needs does not exist"
    );
}

async fn a_complete_epics_pending_tasks_still_run(backend: Backend) {
    let s = Scenario::sh("", "Both steps are planned. EPIC COMPLETE");
    let epic = end_an_epic(backend, s, None).await;
    assert_eq!((epic.state, epic.reason), (EpicState::Complete, None));
}

async fn max_tasks_ends_the_epic_at_the_sync_that_passes_it(backend: Backend) {
    // One run at a time, so nothing of the epic (its own task included) is claimed before the
    // sync's check; w1 and w2 are one task too many.
    let s = Scenario::sh(
        "[limits]\nmax_running = 1\n[epics]\nmax_tasks = 1\n",
        "planned",
    );
    let reason = fail_an_epic(backend, s, None).await;
    assert_eq!(reason, "cap reached: 2 tasks (max_tasks = 1)");
}

async fn max_activations_ends_the_epic(backend: Backend) {
    // The epic's own task is its first manager run: with max_activations = 1 it is the last.
    let s = Scenario::sh("[epics]\nmax_activations = 1\n", "planned the next step");
    let reason = fail_an_epic(backend, s, None).await;
    assert_eq!(
        reason,
        "cap reached: 1 manager activations (max_activations = 1)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_spend_usd_ends_the_epic() {
    // The real CLI as the manager: it reports what its run cost, which counts against the cap.
    let server = ModelServer::start_with(|_: &Turn| Step::text("Planned the next step.")).await;
    let s = Scenario {
        extra: "[epics]\nmax_spend_usd = 0.0001\n",
        manager_says: "unused",
        manager_agent: Some("claude"),
    };
    let reason = fail_an_epic(Backend::Sqlite, s, Some(&server)).await;
    assert!(
        reason.starts_with("cap reached: $") && reason.ends_with("spent (max_spend_usd = 0.00)"),
        "{reason}"
    );
}

/// README section 4: a task stopped with `swarm task stop`, the manager's own run or a worker's,
/// activates nothing: a stop is a person's decision, not a result. The manager's run still
/// counts as one of its runs; the worker's stop is no failure.
async fn a_stopped_run_of_an_epic_activates_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let data = tempfile::tempdir().unwrap();
    let repo = TestRepo::new();
    repo.commit(
        &[
            (".ai/tasks/epic-doomed.yaml", Some(EPIC)),
            (".ai/tasks/w1.yaml", Some(WORKER)),
        ],
        "an epic and a task",
    );
    // Both run until stopped.
    let never = data.path().join("never");
    let script = format!("while [ ! -e {} ]; do sleep 0.1; done", never.display());
    let cfg = config(data.path(), &db, &repo, &script, "");
    let engine = crate::claude::engine_with_token(cfg, db.store.clone());
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let handle = tokio::spawn(engine.run(RunOptions { once: false }, stop_rx));
    let store = &db.store;
    let keys = ["epic-doomed", "w1"];
    wait_until_all(store, "both to run", &keys, TaskState::Running).await;
    for key in keys {
        coding_swarm::steer::stop(store, "proj", key, "ann")
            .await
            .unwrap();
    }
    wait_until_all(store, "both to stop", &keys, TaskState::Completed).await;
    for key in keys {
        let t = store.task("proj", key).await.unwrap().unwrap();
        assert_eq!(
            t.result().unwrap().error_class,
            Some(ErrorClass::Cancelled),
            "{key}"
        );
    }
    let all = keys_after(store, Duration::from_secs(1)).await;
    assert_eq!(all.len(), 2, "no activation: {all:?}");
    let epic = store.epic("proj", "doomed").await.unwrap().unwrap();
    assert_eq!(
        (epic.state, epic.activations, epic.consecutive_failures),
        (EpicState::Active, 1, 0),
        "{epic:?}"
    );
    stop.send(true).unwrap();
    handle.await.unwrap().unwrap();
    db.drop_db().await;
}

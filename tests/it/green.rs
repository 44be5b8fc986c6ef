//! The green layer end to end, with the real Claude Code CLI as both project manager and
//! workers, against a scripted model that looks at the checkout as a real one would: an epic
//! carried to the end, caps that stop a failing loop, a manager's invalid task file fed back
//! to it, coalesced activations, and plan edits by people.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use coding_swarm::config::Config;
use coding_swarm::engine::{Engine, RunOptions};
use coding_swarm::model::green::ActivationItem;
use coding_swarm::model::TaskRow;
use coding_swarm::spec::TaskState;
use coding_swarm::store::{Store, TaskFilter};
use serde_json::json;

use crate::model::{ModelServer, Step, Turn};
use crate::support::{create_plan, task, Backend, TestDb, TestRepo};

const SWARM: &str = env!("CARGO_BIN_EXE_swarm");

fn config(data: &Path, db: &TestDb, repo: &TestRepo, server: &ModelServer, extra: &str) -> Config {
    let text = format!(
        r#"
data_dir = {data:?}
database_url = {db:?}
retry_backoff = "500ms"
poll_interval = "1s"
{extra}
{agent}
[[projects]]
name = "proj"
repo = {repo:?}
"#,
        data = data.display().to_string(),
        db = db.url,
        agent = crate::model::claude_agent_toml(server, 8),
        repo = repo.url()
    );
    Config::parse(&text, "test", data, std::iter::empty()).unwrap()
}

/// A shell command that writes `content` to `path` (relative to the checkout).
pub(crate) fn write_file(path: &str, content: &str) -> String {
    let dir = Path::new(path)
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    format!("mkdir -p '{dir}' && cat > '{path}' <<'SWARM_EOF'\n{content}SWARM_EOF\n")
}

fn task_yaml(
    addressee: &str,
    kind: &str,
    epic: &str,
    prompt: &str,
    branch: Option<&str>,
) -> String {
    let branch = branch.map(|b| format!("branch: {b}\n")).unwrap_or_default();
    format!("addressee: {addressee}\nkind: {kind}\nepic: {epic}\n{branch}created_by: project-mgr-proj\nprompt: |\n  {prompt}\n")
}

pub(crate) fn bash(command: String) -> Step {
    Step::tool(
        "Bash",
        json!({"command": command, "description": "scripted step"}),
    )
}

pub(crate) fn read(cwd: &str, path: &str) -> Option<String> {
    std::fs::read_to_string(Path::new(cwd).join(path)).ok()
}

/// The scripted world of the complete-epic test: a manager that plans two implementations,
/// then a review, then a merge, then declares the epic complete; and the workers for each.
fn epic_world(t: &Turn) -> Step {
    let key = t.task_key.as_str();
    let manager = key.starts_with("epic-") || key.starts_with("activation-");
    if t.index > 0 {
        return Step::text(&match key {
            "impl-hello" => "Implemented hello.txt.".to_string(),
            "impl-bye" => "Implemented bye.txt.".to_string(),
            "review" => "APPROVED: both branches do what the plan says.".to_string(),
            "merge" => "MERGED swarm/impl-hello and swarm/impl-bye into main.".to_string(),
            _ if manager => {
                let plan = read(&t.cwd, ".ai/plan.md").unwrap_or_default();
                if plan.contains("EPIC COMPLETE") {
                    "Everything is merged and reviewed. EPIC COMPLETE".into()
                } else {
                    "Plan updated; next step scheduled.".into()
                }
            }
            _ => "Done.".into(),
        });
    }
    match key {
        "impl-hello" => bash("sleep 2 && echo hello > hello.txt".into()),
        "impl-bye" => bash("sleep 2 && echo bye > bye.txt".into()),
        "review" => bash("git log --oneline -1 origin/swarm/impl-hello && git log --oneline -1 origin/swarm/impl-bye".into()),
        "merge" => bash("git merge --no-edit origin/swarm/impl-hello origin/swarm/impl-bye".into()),
        _ if manager => bash(manager_action(&t.cwd, &t.text)),
        other => Step::text(&format!("nothing scripted for {other}")),
    }
}

/// The scripted manager: reads the plan in the checkout and the results in its prompt, marks
/// what succeeded, and writes the next task (or the end) — only the next step.
fn manager_action(cwd: &str, prompt: &str) -> String {
    let Some(mut plan) = read(cwd, ".ai/plan.md") else {
        let plan = "# Plan: greetings\n\n- [ ] impl-hello (retries: 0)\n- [ ] impl-bye (retries: 0)\n- [ ] review\n- [ ] merge\n";
        return [
            write_file(".ai/plan.md", plan),
            write_file(
                ".ai/tasks/impl-hello.yaml",
                &task_yaml(
                    "worker-hello",
                    "implement",
                    "greetings",
                    "Write hello.txt.",
                    None,
                ),
            ),
            write_file(
                ".ai/tasks/impl-bye.yaml",
                &task_yaml(
                    "worker-bye",
                    "implement",
                    "greetings",
                    "Write bye.txt.",
                    None,
                ),
            ),
        ]
        .join("");
    };
    for step in ["impl-hello", "impl-bye", "review", "merge"] {
        if prompt.contains(&format!("Task `{step}` succeeded")) {
            plan = plan.replace(&format!("- [ ] {step}"), &format!("- [x] {step}"));
        }
    }
    let done = |s: &str| plan.contains(&format!("- [x] {s}"));
    let exists = |s: &str| Path::new(cwd).join(format!(".ai/tasks/{s}.yaml")).exists();
    let mut cmd = String::new();
    if done("merge") {
        plan.push_str("\nEPIC COMPLETE\n");
    } else if done("review") && !exists("merge") {
        cmd += &write_file(
            ".ai/tasks/merge.yaml",
            &task_yaml(
                "worker-merge",
                "merge",
                "greetings",
                "Merge swarm/impl-hello and swarm/impl-bye into main.",
                Some("main"),
            ),
        );
    } else if done("impl-hello") && done("impl-bye") && !exists("review") {
        cmd += &write_file(
            ".ai/tasks/review.yaml",
            &task_yaml(
                "worker-review",
                "review",
                "greetings",
                "Review swarm/impl-hello and swarm/impl-bye.",
                Some("swarm/review"),
            ),
        );
    }
    write_file(".ai/plan.md", &plan) + &cmd
}

async fn run_until(
    engine: Engine,
    what: &str,
    timeout: Duration,
    store: &Store,
    mut done: impl AsyncFnMut(&Store) -> bool,
) {
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let handle = tokio::spawn(engine.run(RunOptions { once: false }, stop_rx));
    let start = Instant::now();
    while !done(store).await {
        if start.elapsed() > timeout {
            let tasks = store.list(&TaskFilter::default()).await.unwrap();
            let summary: Vec<String> = tasks
                .iter()
                .map(|t| {
                    format!(
                        "{} {} {:?}",
                        t.key,
                        t.status,
                        t.result().map(|r| (&r.summary, &r.error))
                    )
                })
                .collect();
            panic!("timed out waiting for {what}: {summary:#?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.send(true).unwrap();
    handle.await.unwrap().unwrap();
}

fn span(t: &TaskRow) -> (DateTime<Utc>, DateTime<Utc>) {
    let r = t
        .result()
        .unwrap_or_else(|| panic!("{} has no result", t.key));
    (r.started_at.unwrap(), r.finished_at.unwrap())
}

async fn manager_tasks(store: &Store) -> Vec<TaskRow> {
    let mut tasks: Vec<TaskRow> = store
        .list(&TaskFilter {
            addressee: Some("project-mgr-proj".into()),
            ..TaskFilter::default()
        })
        .await
        .unwrap();
    tasks.sort_by_key(|t| t.result().and_then(|r| r.started_at));
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_epic_is_carried_to_the_end() {
    let server = ModelServer::start_with(epic_world).await;
    let db = TestDb::sqlite().await;
    let data = tempfile::tempdir().unwrap();
    let repo = TestRepo::new();
    repo.commit(&[("README.md", Some("# greeter\n"))], "init");
    let cfg = config(data.path(), &db, &repo, &server, "");
    let submitted = coding_swarm::epic::submit(
        &cfg,
        "proj",
        "Say hello and goodbye in files.",
        Some("greetings"),
        &coding_swarm::gitops::GitAuth::default(),
    )
    .await
    .unwrap();
    assert_eq!(submitted.path, ".ai/tasks/epic-greetings.yaml");
    let engine = crate::claude::engine_with_token(cfg, db.store.clone());
    run_until(
        engine,
        "the epic to complete",
        Duration::from_secs(240),
        &db.store,
        async |s| {
            s.epic("proj", "greetings")
                .await
                .unwrap()
                .is_some_and(|e| e.state.as_str() != "active")
        },
    )
    .await;
    let store = &db.store;
    let epic = store.epic("proj", "greetings").await.unwrap().unwrap();
    assert_eq!(epic.state.as_str(), "complete", "{epic:?}");

    // The final repository: the work merged on main, the plan complete.
    let results: Vec<String> = store
        .list(&TaskFilter::default())
        .await
        .unwrap()
        .iter()
        .map(|t| format!("{}: {:?}", t.key, t.result()))
        .collect();
    assert_eq!(
        repo.read("main", "hello.txt").as_deref(),
        Some("hello\n"),
        "{results:#?}"
    );
    assert_eq!(repo.read("main", "bye.txt").as_deref(), Some("bye\n"));
    let plan = repo.read("main", ".ai/plan.md").unwrap();
    assert!(
        plan.contains("EPIC COMPLETE") && plan.contains("- [x] merge"),
        "{plan}"
    );

    // Every task completed and every task file has its status file (reports may trail a moment).
    let file_tasks: Vec<TaskRow> = store
        .list(&TaskFilter::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.origin.as_str() == "file")
        .collect();
    let keys: Vec<&str> = file_tasks.iter().map(|t| t.key.as_str()).collect();
    for k in [
        "epic-greetings",
        "impl-hello",
        "impl-bye",
        "review",
        "merge",
    ] {
        assert!(keys.contains(&k), "{k} in {keys:?}");
    }
    let start = Instant::now();
    while file_tasks.iter().any(|t| {
        repo.read("main", &format!(".ai/status/{}.yaml", t.key))
            .is_none()
    }) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "status files missing"
        );
        let engine = crate::claude::engine_with_token(
            config(data.path(), &db, &repo, &server, ""),
            db.store.clone(),
        );
        let (_s, rx) = tokio::sync::watch::channel(false);
        engine.run(RunOptions { once: true }, rx).await.unwrap();
    }
    for t in &file_tasks {
        assert!(
            t.state() == TaskState::Completed && t.result().unwrap().success,
            "{}: {:?}",
            t.key,
            t.result()
        );
    }

    // The two implementations ran in parallel; manager runs never overlapped.
    let by_key: HashMap<&str, &TaskRow> = file_tasks.iter().map(|t| (t.key.as_str(), t)).collect();
    let (h, b) = (span(by_key["impl-hello"]), span(by_key["impl-bye"]));
    assert!(
        h.0 < b.1 && b.0 < h.1,
        "the implementations should overlap: {h:?} {b:?}"
    );
    let managers = manager_tasks(store).await;
    for pair in managers.windows(2) {
        assert!(
            span(&pair[0]).1 <= span(&pair[1]).0,
            "manager runs {} and {} overlap",
            pair[0].key,
            pair[1].key
        );
    }
    // The order of activations: the epic, then results of the implementations, the review,
    // the merge.
    assert_eq!(managers[0].key, "epic-greetings");
    let mut seen = Vec::new();
    for m in &managers[1..] {
        assert_eq!(m.origin.as_str(), "engine");
        for item in m.context.clone() {
            if let ActivationItem::Result {
                key, success: true, ..
            } = item
            {
                seen.push(key);
            }
        }
    }
    let pos = |k: &str| {
        seen.iter()
            .position(|s| s == k)
            .unwrap_or_else(|| panic!("{k} never reached the manager: {seen:?}"))
    };
    assert!(
        pos("impl-hello").max(pos("impl-bye")) < pos("review") && pos("review") < pos("merge"),
        "{seen:?}"
    );
    assert_eq!(
        epic.activations as usize,
        managers.len(),
        "every manager run counted"
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_always_fails_is_stopped_by_the_caps() {
    let server = ModelServer::start_with(|t: &Turn| {
        let key = t.task_key.as_str();
        if key.starts_with("impl-") {
            return Step::Error {
                status: 400,
                kind: "invalid_request_error".into(),
                message: "this worker always fails".into(),
                headers: vec![],
            };
        }
        if t.index > 0 {
            return Step::text("Scheduled another attempt.");
        }
        // A stubborn manager: every activation tries again with a new task.
        let n = std::fs::read_dir(Path::new(&t.cwd).join(".ai/tasks"))
            .map(|d| d.count())
            .unwrap_or(0);
        bash(write_file(
            &format!(".ai/tasks/impl-{n}.yaml"),
            &task_yaml("worker-a", "implement", "doomed", "Try again.", None),
        ))
    })
    .await;
    let db = TestDb::sqlite().await;
    let data = tempfile::tempdir().unwrap();
    let repo = TestRepo::new();
    repo.commit(&[("README.md", Some("x\n"))], "init");
    let cfg = config(
        data.path(),
        &db,
        &repo,
        &server,
        "[epics]\nmax_consecutive_failures = 3\n",
    );
    coding_swarm::epic::submit(
        &cfg,
        "proj",
        "Do the impossible.",
        Some("doomed"),
        &coding_swarm::gitops::GitAuth::default(),
    )
    .await
    .unwrap();
    let engine = crate::claude::engine_with_token(cfg, db.store.clone());
    run_until(
        engine,
        "the epic to fail",
        Duration::from_secs(180),
        &db.store,
        async |s| {
            s.epic("proj", "doomed")
                .await
                .unwrap()
                .is_some_and(|e| e.state.as_str() != "active")
        },
    )
    .await;
    let store = &db.store;
    let epic = store.epic("proj", "doomed").await.unwrap().unwrap();
    assert_eq!(epic.state.as_str(), "failed");
    assert!(
        epic.reason
            .as_deref()
            .unwrap()
            .contains("consecutive failures"),
        "{epic:?}"
    );
    // Give a runaway loop the chance to show itself: nothing more happens.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tasks = store.list(&TaskFilter::default()).await.unwrap();
    let workers: Vec<&TaskRow> = tasks
        .iter()
        .filter(|t| t.key.starts_with("impl-"))
        .collect();
    assert_eq!(
        workers.len(),
        3,
        "{:?}",
        workers.iter().map(|t| &t.key).collect::<Vec<_>>()
    );
    assert!(workers
        .iter()
        .all(|t| t.attempts == 1 && !t.result().unwrap().success));
    assert_eq!(
        manager_tasks(store).await.len(),
        3,
        "the epic and two activations; none after the cap"
    );
    assert!(tasks.iter().all(|t| t.state() == TaskState::Completed));
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managers_invalid_task_file_fails_its_run_and_is_fed_back() {
    let server = ModelServer::start_with(|t: &Turn| {
        let first = t.task_key.starts_with("epic-");
        match (first, t.index) {
            (true, 0) => bash(write_file(
                ".ai/tasks/typo.yaml",
                "addressee: worker-a\nprompt: x\npriorty: 1\n",
            )),
            (true, _) => Step::text("Created the task."),
            (false, 0) if t.text.contains("priorty") => bash(write_file(
                ".ai/plan.md",
                "# Plan\n\nFixed the task file; nothing left to do.\nEPIC COMPLETE\n",
            )),
            (false, 0) => Step::text("I was not told what went wrong."),
            (false, _) => Step::text("Fixed. EPIC COMPLETE"),
        }
    })
    .await;
    let db = TestDb::sqlite().await;
    let data = tempfile::tempdir().unwrap();
    let repo = TestRepo::new();
    repo.commit(&[("README.md", Some("x\n"))], "init");
    let cfg = config(data.path(), &db, &repo, &server, "");
    coding_swarm::epic::submit(
        &cfg,
        "proj",
        "Make a task.",
        Some("typo"),
        &coding_swarm::gitops::GitAuth::default(),
    )
    .await
    .unwrap();
    let engine = crate::claude::engine_with_token(cfg, db.store.clone());
    run_until(
        engine,
        "the epic to end",
        Duration::from_secs(120),
        &db.store,
        async |s| {
            s.epic("proj", "typo")
                .await
                .unwrap()
                .is_some_and(|e| e.state.as_str() != "active")
        },
    )
    .await;
    let store = &db.store;
    let first = store.task("proj", "epic-typo").await.unwrap().unwrap();
    let r = first.result().unwrap();
    assert!(!r.success, "{r:?}");
    let error = r.error.clone().unwrap();
    assert!(
        error.contains(".ai/tasks/typo.yaml:3:1:") && error.contains("priorty"),
        "{error}"
    );
    assert!(
        repo.read("main", ".ai/tasks/typo.yaml").is_none(),
        "the invalid file was not pushed"
    );
    let managers = manager_tasks(store).await;
    assert_eq!(managers.len(), 2);
    let context = managers[1].context.clone();
    assert!(
        matches!(&context[0], ActivationItem::ManagerFailed { error, .. } if error.contains("priorty")),
        "{context:?}"
    );
    assert!(server.messages_requests().iter().any(|r| r
        .body
        .to_string()
        .contains("Your last run")
        && r.body.to_string().contains("priorty")));
    assert_eq!(
        store
            .epic("proj", "typo")
            .await
            .unwrap()
            .unwrap()
            .state
            .as_str(),
        "complete"
    );
    db.drop_db().await;
}

crate::on_both_backends!(
    results_arriving_while_an_activation_waits_are_coalesced,
    two_activations_in_the_same_millisecond_get_two_keys
);

/// Hands `item` to the manager of `project` (default branch main), as the engine does.
pub(crate) async fn activate(
    s: &Store,
    project: &str,
    epic: Option<&str>,
    item: ActivationItem,
) -> (String, bool) {
    let project = coding_swarm::config::ProjectConfig {
        name: project.into(),
        repo: "unused".into(),
        default_branch: "main".into(),
        poll_interval: None,
        max_running: None,
        github: None,
        required_checks: None,
    };
    coding_swarm::steer::activate(s, &project, epic, item)
        .await
        .unwrap()
}

async fn results_arriving_while_an_activation_waits_are_coalesced(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let item = |k: &str| ActivationItem::Result {
        key: k.into(),
        epic: Some("e".into()),
        success: true,
        summary: None,
        error: None,
        error_class: None,
        branch: None,
        commit: None,
        queued: Vec::new(),
    };
    let (k1, created1) = activate(s, "p", Some("e"), item("a")).await;
    let (k2, created2) = activate(s, "p", Some("e"), item("b")).await;
    let (k3, created3) = activate(s, "p", Some("e"), item("c")).await;
    assert_eq!((created1, created2, created3), (true, false, false));
    assert!(k1 == k2 && k2 == k3);
    let row = s.task("p", &k1).await.unwrap().unwrap();
    assert_eq!(
        (
            row.origin.as_str(),
            row.addressee.as_str(),
            row.kind.as_deref(),
            row.branch.as_str()
        ),
        ("engine", "project-mgr-p", Some("plan"), "main")
    );
    assert_eq!(row.context.len(), 3);
    // Once it runs, the next result starts a new activation.
    let limits = coding_swarm::model::ClaimLimits {
        max_running: 5,
        max_running_per_project: 5,
        per_project_overrides: HashMap::new(),
        batch: 5,
        paused_agents: Default::default(),
        default_agent: "claude".into(),
        ..Default::default()
    };
    assert_eq!(crate::support::claim(s, &limits, Utc::now()).await.len(), 1);
    let (k4, created4) = activate(s, "p", Some("e"), item("d")).await;
    assert!(created4 && k4 != k1);
    // Two at the same moment never make two.
    let (a, b) = tokio::join!(
        activate(s, "q", None, item("x")),
        activate(s, "q", None, item("y"))
    );
    assert_eq!(a.1 as u8 + b.1 as u8, 1);
    let _ = create_plan(vec![task("unused", "addressee: w\nprompt: p\n")]);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persons_plan_edit_activates_the_manager_and_its_own_do_not() {
    let db = TestDb::sqlite().await;
    let data = tempfile::tempdir().unwrap();
    let repo = TestRepo::new();
    repo.commit(
        &[(".ai/plan.md", Some("# Plan\n- [ ] one\n- [ ] two\n"))],
        "init",
    );
    let text = format!(
        "data_dir = {:?}\ndatabase_url = {:?}\ndefault_agent = \"sh\"\npoll_interval = \"1h\"\n[agents.sh]\ncommand = [\"sh\", \"-c\", \"printf '# Plan\\\\n- [x] two\\\\n- [ ] one\\\\n' > .ai/plan.md; echo marked two done\"]\n[[projects]]\nname = \"proj\"\nrepo = {:?}\n",
        data.path().display().to_string(),
        db.url,
        repo.url()
    );
    let cfg = Config::parse(&text, "test", data.path(), std::iter::empty()).unwrap();
    let engine = Engine::new(cfg, db.store.clone(), SWARM.into());
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let handle = tokio::spawn(engine.run(RunOptions { once: false }, stop_rx));
    let store = db.store.clone();
    // Synced up to `commit` or past it (the manager's pushes move main on).
    let synced = |commit: git2::Oid| {
        let store = store.clone();
        let repo = &repo;
        async move {
            let start = Instant::now();
            loop {
                let at = store
                    .project("proj")
                    .await
                    .unwrap()
                    .and_then(|p| p.synced_commit)
                    .and_then(|c| git2::Oid::from_str(&c).ok());
                if at.is_some_and(|at| {
                    at == commit || repo.repo.graph_descendant_of(at, commit).unwrap_or(false)
                }) {
                    break;
                }
                assert!(start.elapsed() < Duration::from_secs(20), "not synced");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    synced(repo.head().unwrap()).await;
    let activations = || async {
        store
            .list(&TaskFilter::default())
            .await
            .unwrap()
            .into_iter()
            .filter(|t| t.origin.as_str() == "engine")
            .collect::<Vec<_>>()
    };
    assert!(
        activations().await.is_empty(),
        "the first sync of an existing plan activates nothing"
    );

    // A person reorders the plan: the manager is activated once, with the change.
    let edit = repo.commit(
        &[(".ai/plan.md", Some("# Plan\n- [ ] two\n- [ ] one\n"))],
        "Do two first",
    );
    synced(edit).await;
    crate::support::wait_for("the activation", Duration::from_secs(20), async || {
        !activations().await.is_empty()
    })
    .await;
    let found = activations().await;
    assert_eq!(found.len(), 1);
    let context = found[0].context.clone();
    assert!(
        matches!(&context[0], ActivationItem::PlanEdit { author, message, diff, .. }
        if author == "Test Person" && message == "Do two first" && diff.contains("+- [ ] one")),
        "{context:?}"
    );

    // The manager's own plan commits activate nothing. The activation ran the manager; its
    // agent edited the plan, and the worker committed that with its trailer and pushed it.
    let mut manager = None;
    crate::support::wait_for("the manager's run", Duration::from_secs(30), async || {
        manager = store.task("proj", &found[0].key).await.unwrap();
        manager
            .as_ref()
            .is_some_and(|t| t.state() == TaskState::Completed)
    })
    .await;
    let run = manager.unwrap().result().cloned().unwrap();
    assert!(run.success && run.changed, "{run:?}");
    let own = git2::Oid::from_str(run.commit_sha.as_deref().unwrap()).unwrap();
    let message = repo
        .repo
        .find_commit(own)
        .unwrap()
        .message()
        .unwrap()
        .to_string();
    assert!(message.contains("Swarm-Role: manager"), "{message}");
    assert_eq!(
        repo.read("main", ".ai/plan.md").as_deref(),
        Some("# Plan\n- [x] two\n- [ ] one\n")
    );
    // Sync passes run one after another, each making its activations before the next starts:
    // once two later commits are synced, the pass that took in the manager's has ended.
    for note in ["a note\n", "another note\n"] {
        let later = loop {
            if let Ok(c) = repo.try_commit(&[("NOTES.md", Some(note))], "A note") {
                break c;
            }
        };
        synced(later).await;
    }
    assert_eq!(activations().await.len(), 1);
    stop.send(true).unwrap();
    handle.await.unwrap().unwrap();
    db.drop_db().await;
}

/// The engine names an activation after the millisecond it is made in: a second one made in
/// the same millisecond (the first already claimed) gets a key of its own.
async fn two_activations_in_the_same_millisecond_get_two_keys(backend: Backend) {
    use coding_swarm::model::transition;
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let item = |k: &str| ActivationItem::ManagerFailed {
        key: k.into(),
        error: "x".into(),
    };
    let now = Utc::now();
    let make = |k: &'static str| {
        s.activate("p", "project-mgr-p", now, move |pending, last| {
            transition::activate(
                pending,
                last,
                "p",
                "project-mgr-p",
                Some("e"),
                "main",
                item(k),
                now,
            )
        })
    };
    let (first, created) = make("a").await.unwrap();
    assert!(created);
    let limits = coding_swarm::model::ClaimLimits {
        max_running: 5,
        max_running_per_project: 5,
        per_project_overrides: HashMap::new(),
        batch: 5,
        paused_agents: Default::default(),
        default_agent: "claude".into(),
        ..Default::default()
    };
    assert_eq!(
        crate::support::claim(s, &limits, now).await.len(),
        1,
        "the first runs"
    );
    let (second, created) = make("b")
        .await
        .expect("a second activation in the same millisecond");
    assert!(created && second != first, "{first} {second}");
    assert_eq!(second, format!("{first}-2"));
    assert_eq!(
        s.task("p", &second).await.unwrap().unwrap().context.len(),
        1
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activation_names_what_its_addressee_runs_next_in_order() {
    let db = TestDb::sqlite().await;
    let data = tempfile::tempdir().unwrap();
    let repo = TestRepo::new();
    let file = |prompt: &str| format!("addressee: worker-x\nprompt: {prompt}\nepic: e\n");
    let (fix, add_test, first) = (file("fix it"), file("test it"), file("start"));
    // One commit: the epic, and for one addressee `01-start` first, then, at equal priority,
    // `add-test` before `fix`.
    repo.commit(
        &[
            (
                ".ai/tasks/epic-e.yaml",
                Some("addressee: project-mgr-proj\nprompt: an epic\nkind: epic\nepic: e\n"),
            ),
            (".ai/tasks/01-start.yaml", Some(first.as_str())),
            (".ai/tasks/fix.yaml", Some(fix.as_str())),
            (".ai/tasks/add-test.yaml", Some(add_test.as_str())),
        ],
        "three tasks for one addressee",
    );
    let cfg = crate::support::config(data.path(), &db, &repo, "true", "");
    crate::support::run_engine_once(cfg, &db.store).await;
    let mut queues = HashMap::new();
    for m in manager_tasks(&db.store).await {
        for item in m.context.clone() {
            if let ActivationItem::Result { key, queued, .. } = item {
                queues.insert(key, queued);
            }
        }
    }
    assert_eq!(
        queues.get("01-start").map(Vec::as_slice),
        Some(&["add-test".to_string(), "fix".to_string()][..]),
        "{queues:?}"
    );
    assert_eq!(
        queues.get("add-test").map(Vec::as_slice),
        Some(&["fix".to_string()][..]),
        "{queues:?}"
    );
    let prompt = coding_swarm::model::green::render(
        &manager_tasks(&db.store)
            .await
            .into_iter()
            .flat_map(|m| m.context)
            .collect::<Vec<_>>(),
    );
    assert!(
        prompt.contains("next for its addressee, in this order: `add-test`, then `fix`"),
        "{prompt}"
    );
}

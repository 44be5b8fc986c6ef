//! End to end on the local runtime: real git remotes, real `swarm worker` processes, a real
//! agent command. Ordering within an addressee, overlap across addressees, branches and status
//! files on the remote; and an engine killed mid-run and started again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use coding_swarm::engine::{Engine, RunOptions};
use coding_swarm::spec::{StatusSpec, TaskState};
use coding_swarm::store::{Store, TaskFilter};

use crate::support::{
    agent_script, config, start_engine, wait_exit, wait_for, write_config, Backend, TestDb,
    TestRepo, SWARM,
};

crate::on_both_backends!(
    three_addressees_run_to_completion,
    a_task_made_pending_by_another_process_is_dispatched_at_once
);

fn nine_tasks() -> Vec<(String, String)> {
    let mut files = Vec::new();
    for a in ["alpha", "beta", "gamma"] {
        for i in 1..=3 {
            files.push((
                format!(".ai/tasks/{a}-{i}.yaml"),
                format!("addressee: worker-{a}\nprompt: step {i} of {a}\nkind: implement\n"),
            ));
        }
    }
    files
}

async fn three_addressees_run_to_completion(backend: Backend) {
    let db = TestDb::new(backend).await;
    let data = tempfile::tempdir().unwrap();
    let repo = TestRepo::new();
    let files = nine_tasks();
    let refs: Vec<(&str, Option<&str>)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), Some(c.as_str())))
        .collect();
    repo.commit(&refs, "nine tasks");
    let runlog = data.path().join("runlog");
    let cfg = config(data.path(), &db, &repo, &agent_script(&runlog, "0.4"), "");
    crate::support::run_engine_once(cfg, &db.store).await;

    let tasks = db.store.list(&TaskFilter::default()).await.unwrap();
    assert_eq!(tasks.len(), 9);
    let mut spans: HashMap<String, Vec<(String, DateTime<Utc>, DateTime<Utc>)>> = HashMap::new();
    for t in &tasks {
        let r = t
            .result()
            .unwrap_or_else(|| panic!("{} has no result", t.key));
        assert!(
            r.success && t.state() == TaskState::Completed,
            "{}: {r:?}",
            t.key
        );
        assert_eq!(t.attempts, 1);
        spans.entry(t.addressee.clone()).or_default().push((
            t.key.clone(),
            r.started_at.unwrap(),
            r.finished_at.unwrap(),
        ));
        // The branch exists on the remote with the agent's file, and the status file is on main.
        assert_eq!(
            repo.read(&t.branch, &format!("out/{}.txt", t.key))
                .as_deref(),
            Some(format!("{}\n", t.key).as_str()),
            "{}",
            t.branch
        );
        assert_eq!(
            r.commit_sha.as_deref(),
            repo.repo
                .refname_to_id(&format!("refs/heads/{}", t.branch))
                .ok()
                .map(|o| o.to_string())
                .as_deref()
        );
        let status = repo
            .read("main", &format!(".ai/status/{}.yaml", t.key))
            .unwrap_or_else(|| panic!("no status file for {}", t.key));
        let status: StatusSpec = serde_saphyr::from_str(&status).unwrap();
        assert_eq!(
            (
                status.status,
                status.result.unwrap().success,
                status.generation
            ),
            (TaskState::Completed, true, 1)
        );
    }
    // Within an addressee: in order, never overlapping.
    for (addressee, mut runs) in spans.clone() {
        runs.sort_by_key(|r| r.1);
        let keys: Vec<&str> = runs.iter().map(|r| r.0.as_str()).collect();
        let name = addressee.trim_start_matches("worker-");
        assert_eq!(
            keys,
            [
                format!("{name}-1"),
                format!("{name}-2"),
                format!("{name}-3")
            ],
            "order within {addressee}"
        );
        for pair in runs.windows(2) {
            assert!(
                pair[0].2 <= pair[1].1,
                "{} and {} overlap",
                pair[0].0,
                pair[1].0
            );
        }
    }
    // Across addressees: runs overlap.
    let all: Vec<(String, DateTime<Utc>, DateTime<Utc>)> =
        spans.values().flatten().cloned().collect();
    let overlapping = all.iter().any(|a| {
        all.iter()
            .any(|b| a.0 != b.0 && a.0[..3] != b.0[..3] && a.1 < b.2 && b.1 < a.2)
    });
    assert!(
        overlapping,
        "runs of different addressees should overlap: {all:?}"
    );
    // The task files and everything else on main are untouched by status commits.
    for (path, content) in files {
        assert_eq!(repo.read("main", &path).as_deref(), Some(content.as_str()));
    }
    assert!(
        repo.read("main", "out/alpha-1.txt").is_none(),
        "work stays on task branches"
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_killed_mid_run_loses_nothing_and_runs_nothing_twice() {
    let db = TestDb::sqlite().await;
    let data = tempfile::tempdir().unwrap();
    let repo = TestRepo::new();
    let mut files = Vec::new();
    for a in ["a", "b", "c"] {
        for i in 1..=2 {
            files.push((
                format!(".ai/tasks/{a}{i}.yaml"),
                format!("addressee: w-{a}\nprompt: {a} {i}\n"),
            ));
        }
    }
    let refs: Vec<(&str, Option<&str>)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), Some(c.as_str())))
        .collect();
    repo.commit(&refs, "six tasks");
    let runlog = data.path().join("runlog");
    let cfg_path = write_config(data.path(), &db.url, &repo, &agent_script(&runlog, "2"), "");
    let log = data.path().join("engine.log");
    let store: Store = db.store.clone();

    let mut engine = start_engine(&cfg_path, &log, false);
    // Kill it while three agents are in the middle of their work.
    wait_for(
        "three running agents",
        Duration::from_secs(60),
        async || {
            std::fs::read_to_string(&runlog)
                .map(|l| l.lines().filter(|l| l.starts_with("start")).count() >= 3)
                .unwrap_or(false)
        },
    )
    .await;
    engine.kill().unwrap();
    engine.wait().unwrap();
    let running = store.counts().await.unwrap().running;
    assert_eq!(running, 3, "three tasks were running when the engine died");

    let again = start_engine(&cfg_path, &log, true);
    let status = wait_exit(again, Duration::from_secs(120), "the restarted engine").await;
    let engine_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "restarted engine failed:\n{engine_log}");
    assert!(
        engine_log.contains("taking over a run of an earlier engine"),
        "{engine_log}"
    );

    let runs = std::fs::read_to_string(&runlog).unwrap();
    let mut starts: HashMap<&str, usize> = HashMap::new();
    for line in runs.lines().filter(|l| l.starts_with("start")) {
        *starts
            .entry(line.split_whitespace().nth(1).unwrap())
            .or_default() += 1;
    }
    assert_eq!(starts.len(), 6, "every task ran: {runs}");
    assert!(
        starts.values().all(|n| *n == 1),
        "no task ran twice: {runs}"
    );
    let tasks = store.list(&TaskFilter::default()).await.unwrap();
    for t in &tasks {
        assert!(
            t.state() == TaskState::Completed && t.result().unwrap().success,
            "{}: {:?}",
            t.key,
            t.result()
        );
        assert_eq!(t.attempts, 1, "{}", t.key);
        assert!(
            repo.read("main", &format!(".ai/status/{}.yaml", t.key))
                .is_some(),
            "status of {}",
            t.key
        );
        let kinds: Vec<String> = store
            .events("proj", &t.key)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind.to_string())
            .collect();
        assert_eq!(
            kinds.iter().filter(|k| *k == "claimed").count(),
            1,
            "{}: {kinds:?}",
            t.key
        );
    }
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_to_a_local_repository_syncs_at_once() {
    let db = TestDb::sqlite().await;
    let data = tempfile::tempdir().unwrap();
    let repo = TestRepo::new();
    repo.commit(&[("README.md", Some("x"))], "init");
    // Polling once an hour: only the file watch can make this sync quickly.
    let (stop, handle) = start_hourly_engine(&db, &repo, data.path()).await;
    let store = db.store.clone();
    repo.commit(
        &[(".ai/tasks/watched.yaml", Some("addressee: w\nprompt: p\n"))],
        "a task",
    );
    let committed = Instant::now();
    wait_for(
        "the watched commit to sync",
        Duration::from_secs(10),
        async || store.task("proj", "watched").await.unwrap().is_some(),
    )
    .await;
    assert!(committed.elapsed() < Duration::from_secs(10));
    stop.send(true).unwrap();
    handle.await.unwrap().unwrap();
    db.drop_db().await;
}

/// Another process (the CLI, a second engine's sync) makes a task pending: the engine learns
/// of it by Postgres NOTIFY or by SQLite's data version, not by its 30 s backstop, with
/// nothing of its own in-process wake-up involved (the writer is a separate pool).
async fn a_task_made_pending_by_another_process_is_dispatched_at_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let data = tempfile::tempdir().unwrap();
    let repo = TestRepo::new();
    let head = repo.commit(&[("README.md", Some("x"))], "init");
    let (stop, handle) = start_hourly_engine(&db, &repo, data.path()).await;
    let store = db.store.clone();
    // Let the engine settle into its idle wait.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let other = Store::connect(&db.url).await.unwrap();
    crate::support::apply(
        &other,
        "proj",
        &head.to_string(),
        crate::support::create_plan(vec![crate::support::task(
            "elsewhere",
            "addressee: w\nprompt: p\n",
        )]),
    )
    .await;
    let written = Instant::now();
    wait_for(
        "the task written elsewhere to run",
        Duration::from_secs(15),
        async || {
            store
                .task("proj", "elsewhere")
                .await
                .unwrap()
                .is_some_and(|t| t.state() != TaskState::Pending)
        },
    )
    .await;
    assert!(written.elapsed() < Duration::from_secs(15));
    stop.send(true).unwrap();
    handle.await.unwrap().unwrap();
    other.close().await;
    db.drop_db().await;
}

/// An engine in this process on `repo`, polling only once an hour, after its first sync.
async fn start_hourly_engine(
    db: &TestDb,
    repo: &TestRepo,
    data: &std::path::Path,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let mut cfg = config(data, db, repo, "echo ok", "");
    cfg.poll_interval = Duration::from_secs(3600);
    let engine = Engine::new(cfg, db.store.clone(), SWARM.into());
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let handle = tokio::spawn(engine.run(RunOptions { once: false }, stop_rx));
    let store = db.store.clone();
    wait_for("the first sync", Duration::from_secs(20), async || {
        store
            .project("proj")
            .await
            .unwrap()
            .is_some_and(|p| p.synced_commit.is_some())
    })
    .await;
    (stop, handle)
}

/// The wiring of `swarm up`, started in this process as a test (or another program) can:
/// health before leadership, the engine running tasks, ready once it leads, stopped on request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_wires_a_whole_engine_in_process() {
    use coding_swarm::app::{App, Ended};
    let db = TestDb::sqlite().await;
    let data = tempfile::tempdir().unwrap();
    let repo = TestRepo::new();
    repo.commit(
        &[(
            ".ai/tasks/hello.yaml",
            Some("addressee: w\nprompt: say hello\n"),
        )],
        "a task",
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = config(
        data.path(),
        &db,
        &repo,
        "echo hello > hello.txt; echo said hello",
        &format!("[http]\nlisten = \"127.0.0.1:{port}\""),
    );
    let app = App {
        config: cfg,
        secrets: Default::default(),
        worker_exe: SWARM.into(),
        once: false,
    };
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let handle = tokio::spawn(async move {
        let store = app.store().await?;
        app.run(&store, stop_rx).await
    });
    let get = |path: &str| {
        let url = format!("http://127.0.0.1:{port}{path}");
        async move {
            tokio::task::spawn_blocking(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                agent
                    .get(&url)
                    .call()
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            })
            .await
            .unwrap()
        }
    };
    wait_for(
        "the engine to be ready",
        Duration::from_secs(20),
        async || get("/readyz").await == 200,
    )
    .await;
    let store = db.store.clone();
    wait_for(
        "the task to complete",
        Duration::from_secs(30),
        async || {
            store
                .task("proj", "hello")
                .await
                .unwrap()
                .is_some_and(|t| t.result().is_some_and(|r| r.success))
        },
    )
    .await;
    assert_eq!(
        repo.read("swarm/hello", "hello.txt").as_deref(),
        Some("hello\n")
    );
    stop.send(true).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(20), handle)
        .await
        .expect("the engine stops when asked")
        .unwrap()
        .unwrap();
    assert_eq!(ended, Ended::Stopped);
    db.drop_db().await;
}

/// The worker's environment is an allow-list of the engine's: an agent that reads its worker's
/// `/proc/<pid>/environ` finds the git token it needs for nothing, and none of the engine's
/// other secrets (its GitHub token, API token, webhook secret, database URL, a variable no
/// profile names); a variable its profile names as `${NAME}` is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_holds_only_the_engines_variables_it_needs() {
    let data = tempfile::tempdir().unwrap();
    let repo = TestRepo::new();
    repo.commit(
        &[(".ai/tasks/peek.yaml", Some("addressee: w\nprompt: peek\n"))],
        "a task",
    );
    let seen = data.path().join("worker-environ");
    let script = format!(
        "tr '\\0' '\\n' < /proc/$PPID/environ > {0} 2>/dev/null || echo UNREADABLE > {0}; echo \"$FROM_PROFILE\" >> {0}; echo looked",
        seen.display()
    );
    let db = TestDb::sqlite().await;
    let cfg = write_config(data.path(), &db.url, &repo, &script, "");
    // The profile names one variable of the engine's environment.
    let text = std::fs::read_to_string(&cfg).unwrap()
        + "\n[agents.sh.env]\nFROM_PROFILE = \"${PROFILE_VALUE}\"\n";
    std::fs::write(&cfg, text).unwrap();
    let canaries = [
        ("SWARM_GITHUB_TOKEN", "ghp_canaryGithubToken0123456789"),
        ("SWARM_API_TOKEN", "canary-api-token-0123456789"),
        ("SWARM_GITHUB_WEBHOOK_SECRET", "canary-webhook-secret-0123"),
        ("SOME_OTHER_SECRET", "canary-unnamed-variable-0123"),
    ];
    let out = tokio::task::spawn_blocking({
        let cfg = cfg.clone();
        move || {
            let mut cmd = crate::support::command(SWARM);
            cmd.args(["up", "--once", "--config"]).arg(&cfg);
            for (k, v) in canaries {
                cmd.env(k, v);
            }
            cmd.env("PROFILE_VALUE", "named-by-the-profile")
                .env("SWARM_GIT_TOKEN", "git-token-for-the-worker")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let environ = std::fs::read_to_string(&seen).unwrap();
    assert!(
        environ.lines().any(|l| l == "named-by-the-profile"),
        "{environ}"
    );
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        // The worker is not dumpable: another process of its user cannot read its environment
        // at all. (Root can, so as root the allow-list below is what protects it.)
        assert!(environ.starts_with("UNREADABLE"), "{environ}");
        db.drop_db().await;
        return;
    }
    for (name, value) in canaries {
        assert!(
            !environ.contains(value),
            "{name} reached the worker:\n{environ}"
        );
    }
    assert!(
        environ.contains("SWARM_GIT_TOKEN=git-token-for-the-worker"),
        "{environ}"
    );
    assert!(environ.contains("PATH="), "{environ}");
    assert!(
        environ.lines().any(|l| l == "named-by-the-profile"),
        "{environ}"
    );
    db.drop_db().await;
}

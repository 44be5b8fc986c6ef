//! The store's behaviour, one suite on both backends: task model, claims and their limits,
//! run outcomes, stop and retry, the append-only log, and the sequencing invariant under
//! concurrent claimers.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use coding_swarm::engine::Outcome;
use coding_swarm::spec::{ErrorClass, RunResult, TaskState};
use coding_swarm::store::{ClaimLimits, Store, TaskFilter};

use crate::support::{create_plan, task, Backend, TestDb};

crate::on_both_backends!(
    creates_tasks_with_events,
    claims_one_per_addressee_by_priority_then_age,
    claims_respect_global_and_project_limits,
    outcomes_move_tasks_as_decided,
    stop_and_retry,
    database_enforces_the_invariant_and_the_log_is_append_only,
    concurrent_claimers_keep_the_invariant,
);

fn limits(max: u32, per_project: u32) -> ClaimLimits {
    ClaimLimits {
        max_running: max,
        max_running_per_project: per_project,
        per_project_overrides: HashMap::new(),
        batch: 512,
        paused_agents: Default::default(),
        default_agent: "claude".into(),
    }
}

fn y(addressee: &str, extra: &str) -> String {
    format!("addressee: {addressee}\nprompt: do it\n{extra}")
}

async fn creates_tasks_with_events(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let plan = create_plan(vec![
        task("a", &y("w1", "priority: 3\ntimeout: 10m\n")),
        task("b", &y("w2", "branch: feat/b\n")),
    ]);
    s.apply_sync("p", "c0ffee", &plan, Utc::now())
        .await
        .unwrap();
    let a = s.task("p", "a").await.unwrap().unwrap();
    assert_eq!(
        (
            a.state(),
            a.priority,
            a.timeout_secs,
            a.generation,
            a.attempts
        ),
        (TaskState::Pending, 3, Some(600), 1, 0)
    );
    assert_eq!(a.branch, "swarm/a");
    assert_eq!(a.source_commit.as_deref(), Some("c0ffee"));
    assert_eq!(a.spec.0.addressee.as_str(), "w1");
    assert_eq!(s.task("p", "b").await.unwrap().unwrap().branch, "feat/b");
    assert_eq!(
        s.project("p")
            .await
            .unwrap()
            .unwrap()
            .synced_commit
            .as_deref(),
        Some("c0ffee")
    );
    let events = s.events("p", "a").await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, "created");
    let keys = vec!["b".to_string(), "zz".to_string()];
    let found = s.tasks_by_keys("p", Some(&keys)).await.unwrap();
    assert_eq!(
        found.iter().map(|t| t.key.as_str()).collect::<Vec<_>>(),
        ["b"]
    );
    assert_eq!(s.counts().await.unwrap().pending, 2);
    db.drop_db().await;
}

async fn claims_one_per_addressee_by_priority_then_age(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let plan = create_plan(vec![
        task("w1-first", &y("w1", "")),
        task("w1-urgent", &y("w1", "priority: 9\n")),
        task("w1-last", &y("w1", "")),
        task("w2-only", &y("w2", "")),
        task("w3-low", &y("w3", "priority: -5\n")),
    ]);
    s.apply_sync("p", "c1", &plan, Utc::now()).await.unwrap();
    let claimed = s.claim(&limits(10, 10), Utc::now()).await.unwrap();
    let keys: Vec<&str> = claimed.iter().map(|t| t.key.as_str()).collect();
    // Highest priority first across addressees, one per addressee.
    assert_eq!(keys, ["w1-urgent", "w2-only", "w3-low"]);
    assert!(claimed
        .iter()
        .all(|t| t.state() == TaskState::Running && t.attempts == 1));
    // Nothing more while those run.
    assert!(s
        .claim(&limits(10, 10), Utc::now())
        .await
        .unwrap()
        .is_empty());
    let urgent = &claimed[0];
    s.finish_run(urgent.id, 1, &Outcome::Completed(ok()), Utc::now())
        .await
        .unwrap();
    let next = s.claim(&limits(10, 10), Utc::now()).await.unwrap();
    assert_eq!(
        next.iter().map(|t| t.key.as_str()).collect::<Vec<_>>(),
        ["w1-first"],
        "then oldest first"
    );
    db.drop_db().await;
}

async fn claims_respect_global_and_project_limits(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let many = |prefix: &str, n: usize| {
        (0..n)
            .map(|i| task(&format!("{prefix}{i}"), &y(&format!("{prefix}-w{i}"), "")))
            .collect::<Vec<_>>()
    };
    s.apply_sync("p1", "c", &create_plan(many("a", 6)), Utc::now())
        .await
        .unwrap();
    s.apply_sync("p2", "c", &create_plan(many("b", 6)), Utc::now())
        .await
        .unwrap();
    let mut l = limits(5, 3);
    l.per_project_overrides.insert("p2".into(), 1);
    let claimed = s.claim(&l, Utc::now()).await.unwrap();
    let per: HashMap<&str, usize> = claimed.iter().fold(HashMap::new(), |mut m, t| {
        *m.entry(t.project.as_str()).or_default() += 1;
        m
    });
    assert_eq!((per.get("p1"), per.get("p2")), (Some(&3), Some(&1)));
    assert!(
        s.claim(&l, Utc::now()).await.unwrap().is_empty(),
        "both projects are at their limits"
    );
    let mut small = limits(100, 100);
    small.batch = 2;
    let more = s.claim(&small, Utc::now()).await.unwrap();
    assert_eq!(more.len(), 2, "a claim takes at most one batch");
    db.drop_db().await;
}

fn ok() -> RunResult {
    RunResult {
        success: true,
        summary: Some("done".into()),
        ..RunResult::default()
    }
}

async fn outcomes_move_tasks_as_decided(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    s.apply_sync(
        "p",
        "c",
        &create_plan(vec![task("t", &y("w", ""))]),
        Utc::now(),
    )
    .await
    .unwrap();
    let t = s.claim(&limits(1, 1), Utc::now()).await.unwrap().remove(0);

    // A rate limit requeues without counting the attempt, and waits.
    let later = Utc::now() + chrono::Duration::seconds(3600);
    let rl = RunResult::failure(ErrorClass::RateLimit, "429");
    assert!(s
        .finish_run(
            t.id,
            1,
            &Outcome::Requeue {
                result: rl,
                not_before: later
            },
            Utc::now()
        )
        .await
        .unwrap());
    let row = s.task("p", "t").await.unwrap().unwrap();
    assert_eq!(
        (row.state(), row.attempts, row.requeues),
        (TaskState::Pending, 1, 1)
    );
    assert!(
        s.claim(&limits(1, 1), Utc::now()).await.unwrap().is_empty(),
        "not before its time"
    );
    // The engine sleeps until then (and nothing else is due).
    let due = s.next_due(Utc::now()).await.unwrap().expect("a retry is due");
    assert!((due - later).num_milliseconds().abs() <= 1, "{due} != {later}");
    assert_eq!(s.next_due(later).await.unwrap(), None, "nothing after it");
    let t = s
        .claim(&limits(1, 1), later + chrono::Duration::seconds(1))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        t.attempts, 2,
        "every run has its own attempt number (and run name)"
    );

    // An infrastructure retry counts.
    let crash = RunResult::failure(ErrorClass::Infrastructure, "lost");
    s.finish_run(
        t.id,
        2,
        &Outcome::Retry {
            result: crash,
            not_before: Utc::now(),
            infrastructure: true,
        },
        Utc::now(),
    )
    .await
    .unwrap();
    let row = s.task("p", "t").await.unwrap().unwrap();
    assert_eq!(
        (row.state(), row.attempts, row.infra_failures),
        (TaskState::Pending, 2, 1)
    );
    let t = s.claim(&limits(1, 1), Utc::now()).await.unwrap().remove(0);
    assert_eq!(t.attempts, 3);

    // Finishing is idempotent: the wrong attempt, or a second call, changes nothing.
    assert!(!s
        .finish_run(t.id, 2, &Outcome::Completed(ok()), Utc::now())
        .await
        .unwrap());
    assert!(s
        .finish_run(t.id, 3, &Outcome::Completed(ok()), Utc::now())
        .await
        .unwrap());
    assert!(!s
        .finish_run(t.id, 3, &Outcome::Completed(ok()), Utc::now())
        .await
        .unwrap());
    let row = s.task("p", "t").await.unwrap().unwrap();
    assert_eq!(row.state(), TaskState::Completed);
    assert!(row.report_due && row.result().unwrap().success);
    assert_eq!(s.report_due("p").await.unwrap().len(), 1);
    s.mark_reported(&[(row.id, row.generation)], "abc", Utc::now())
        .await
        .unwrap();
    assert!(s.report_due("p").await.unwrap().is_empty());

    let kinds: Vec<String> = s
        .events("p", "t")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            "created",
            "claimed",
            "requeued",
            "claimed",
            "retry",
            "claimed",
            "completed",
            "reported"
        ]
    );
    db.drop_db().await;
}

async fn stop_and_retry(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    s.apply_sync(
        "p",
        "c",
        &create_plan(vec![task("run", &y("w1", "")), task("wait", &y("w1", ""))]),
        Utc::now(),
    )
    .await
    .unwrap();
    let running = s.claim(&limits(5, 5), Utc::now()).await.unwrap().remove(0);
    assert_eq!(running.key, "run");
    assert_eq!(
        s.request_stop("p", "wait", "tester", Utc::now())
            .await
            .unwrap(),
        TaskState::Pending
    );
    let wait = s.task("p", "wait").await.unwrap().unwrap();
    assert_eq!(wait.state(), TaskState::Completed);
    assert_eq!(
        wait.result().unwrap().error_class,
        Some(ErrorClass::Cancelled)
    );
    assert_eq!(
        s.request_stop("p", "run", "tester", Utc::now())
            .await
            .unwrap(),
        TaskState::Running
    );
    assert!(s.task("p", "run").await.unwrap().unwrap().cancel_requested);
    assert!(
        s.request_stop("p", "wait", "tester", Utc::now())
            .await
            .is_err(),
        "nothing to stop"
    );
    assert!(
        s.retry("p", "run", "tester", Utc::now()).await.is_err(),
        "a running task cannot be retried"
    );
    assert_eq!(s.retry("p", "wait", "tester", Utc::now()).await.unwrap(), 2);
    let wait = s.task("p", "wait").await.unwrap().unwrap();
    assert_eq!(
        (wait.state(), wait.generation, wait.attempts),
        (TaskState::Pending, 2, 0)
    );
    assert!(wait.result.is_none());
    let listed = s
        .list(&TaskFilter {
            status: Some(TaskState::Pending),
            ..TaskFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    db.drop_db().await;
}

async fn database_enforces_the_invariant_and_the_log_is_append_only(backend: Backend) {
    let db = TestDb::new(backend).await;
    db.store
        .apply_sync(
            "p",
            "c",
            &create_plan(vec![task("a", &y("same", "")), task("b", &y("same", ""))]),
            Utc::now(),
        )
        .await
        .unwrap();
    db.execute("UPDATE tasks SET status = 'running' WHERE key = 'a'")
        .await
        .unwrap();
    let second = db
        .execute("UPDATE tasks SET status = 'running' WHERE key = 'b'")
        .await;
    assert!(
        second.is_err(),
        "two running tasks for one addressee must be refused by the database"
    );
    assert!(db
        .execute("UPDATE task_events SET message = 'rewritten'")
        .await
        .is_err());
    assert!(db.execute("DELETE FROM task_events").await.is_err());
    assert!(
        db.execute("UPDATE tasks SET status = 'blocked' WHERE key = 'b'")
            .await
            .is_err(),
        "only three statuses"
    );
    db.drop_db().await;
}

async fn concurrent_claimers_keep_the_invariant(backend: Backend) {
    const ADDRESSEES: usize = 40;
    const PER: usize = 8;
    const CLAIMERS: usize = 12;
    let db = TestDb::new(backend).await;
    let mut tasks = Vec::new();
    for i in 0..PER {
        for a in 0..ADDRESSEES {
            tasks.push(task(&format!("t{a:02}-{i}"), &y(&format!("w{a:02}"), "")));
        }
    }
    db.store
        .apply_sync("p", "c", &create_plan(tasks), Utc::now())
        .await
        .unwrap();
    let running: Arc<Mutex<HashSet<String>>> = Arc::default();
    let claimed: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let violations: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut handles = Vec::new();
    for c in 0..CLAIMERS {
        let (store, running, claimed, violations): (Store, _, _, _) = (
            db.store.clone(),
            running.clone(),
            claimed.clone(),
            violations.clone(),
        );
        handles.push(tokio::spawn(async move {
            let l = ClaimLimits {
                max_running: 30,
                max_running_per_project: 30,
                per_project_overrides: HashMap::new(),
                batch: 1 + (c as u32 % 7),
                paused_agents: Default::default(),
                default_agent: "claude".into(),
            };
            let mut idle = 0;
            while idle < 50 {
                let got = store.claim(&l, Utc::now()).await.unwrap();
                if got.is_empty() {
                    idle += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                idle = 0;
                for t in &got {
                    if !running.lock().unwrap().insert(t.addressee.clone()) {
                        violations.lock().unwrap().push(format!(
                            "{} claimed while {} was running",
                            t.key, t.addressee
                        ));
                    }
                    claimed
                        .lock()
                        .unwrap()
                        .push((t.addressee.clone(), t.key.clone()));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
                for t in got {
                    running.lock().unwrap().remove(&t.addressee);
                    assert!(store
                        .finish_run(t.id, t.attempts, &Outcome::Completed(ok()), Utc::now())
                        .await
                        .unwrap());
                }
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    assert!(
        violations.lock().unwrap().is_empty(),
        "{:?}",
        violations.lock().unwrap()
    );
    let claimed = claimed.lock().unwrap().clone();
    assert_eq!(
        claimed.len(),
        ADDRESSEES * PER,
        "every task claimed exactly once"
    );
    let unique: HashSet<&String> = claimed.iter().map(|(_, k)| k).collect();
    assert_eq!(unique.len(), ADDRESSEES * PER);
    // Within an addressee, tasks ran in creation order.
    let mut by_addressee: HashMap<&str, Vec<&str>> = HashMap::new();
    for (a, k) in &claimed {
        by_addressee.entry(a).or_default().push(k);
    }
    for (a, keys) in by_addressee {
        let mut sorted = keys.clone();
        sorted.sort_by_key(|k| k.rsplit('-').next().unwrap().parse::<u32>().unwrap());
        assert_eq!(keys, sorted, "order within {a}");
    }
    assert_eq!(
        db.store.counts().await.unwrap().completed as usize,
        ADDRESSEES * PER
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_notifications_wake_the_engine_across_connections() {
    let db = TestDb::postgres().await;
    let listener = db.store.clone();
    let wake = listener.wake_handle();
    let listening = tokio::spawn(async move { listener.listen().await });
    // Give LISTEN a moment to be registered, then change tasks from another connection, as a
    // person in psql or another process would.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let other = Store::connect(&db.url).await.unwrap();
    let notified = wake.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    other
        .apply_sync(
            "p",
            "c",
            &create_plan(vec![task("x", &y("w", ""))]),
            Utc::now(),
        )
        .await
        .unwrap();
    // The other store's in-process wake-up is its own; only NOTIFY can reach this one.
    tokio::time::timeout(Duration::from_secs(5), notified)
        .await
        .expect("a NOTIFY from the other connection");
    let notified = wake.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    db.execute("UPDATE tasks SET priority = 5 WHERE key = 'x'")
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), notified)
        .await
        .expect("a NOTIFY after a manual UPDATE");
    listening.abort();
    other.close().await;
    db.drop_db().await;
}

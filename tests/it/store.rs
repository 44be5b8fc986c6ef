//! The store's behaviour, one suite on both backends: task model, claims and their limits,
//! run outcomes, stop and retry, the append-only log, and the sequencing invariant under
//! concurrent claimers.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use coding_swarm::model::transition::{self, StopOutcome};
use coding_swarm::model::{ClaimLimits, EpicState, EventKind, Outcome};
use coding_swarm::spec::{ErrorClass, RunResult, TaskState};
use coding_swarm::steer::{self, SteerError};
use coding_swarm::store::{Store, TaskFilter};

use crate::support::{apply, claim, create_plan, finish, task, Backend, TestDb};

crate::on_both_backends!(
    creates_tasks_with_events,
    claims_one_per_addressee_by_priority_then_age,
    claims_respect_global_and_project_limits,
    outcomes_move_tasks_as_decided,
    stop_and_retry,
    database_enforces_the_invariant_and_the_log_is_append_only,
    concurrent_claimers_keep_the_invariant,
    the_change_feed_follows_commits,
    a_value_this_engine_does_not_know_is_an_error_naming_it,
    a_reused_epic_name_opens_a_new_epic_and_keeps_the_old_as_history,
    a_deposed_leader_writes_nothing_after_a_new_one_leads,
    a_retry_keeps_its_place_and_a_paused_profile_holds_its_queues,
    a_failed_epic_cancels_its_pending_tasks_and_activations_alike,
);

fn limits(max: u32, per_project: u32) -> ClaimLimits {
    ClaimLimits {
        max_running: max,
        max_running_per_project: per_project,
        per_project_overrides: HashMap::new(),
        batch: 512,
        paused_agents: Default::default(),
        default_agent: "claude".into(),
        ..Default::default()
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
    apply(s, "p", "c0ffee", plan).await;
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
    assert_eq!(a.spec.addressee.as_str(), "w1");
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
    assert_eq!(events[0].kind, EventKind::Created);
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
    apply(s, "p", "c1", plan).await;
    let claimed = claim(s, &limits(10, 10), Utc::now()).await;
    let keys: Vec<&str> = claimed.iter().map(|t| t.key.as_str()).collect();
    // Highest priority first across addressees, one per addressee.
    assert_eq!(keys, ["w1-urgent", "w2-only", "w3-low"]);
    assert!(claimed
        .iter()
        .all(|t| t.state() == TaskState::Running && t.attempts == 1));
    // Nothing more while those run.
    assert!(claim(s, &limits(10, 10), Utc::now()).await.is_empty());
    let urgent = &claimed[0];
    finish(s, urgent.id, 1, &Outcome::Completed(ok()), Utc::now()).await;
    let next = claim(s, &limits(10, 10), Utc::now()).await;
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
    apply(s, "p1", "c", create_plan(many("a", 6))).await;
    apply(s, "p2", "c", create_plan(many("b", 6))).await;
    let mut l = limits(5, 3);
    l.per_project_overrides.insert("p2".into(), 1);
    let claimed = claim(s, &l, Utc::now()).await;
    let per: HashMap<&str, usize> = claimed.iter().fold(HashMap::new(), |mut m, t| {
        *m.entry(t.project.as_str()).or_default() += 1;
        m
    });
    assert_eq!((per.get("p1"), per.get("p2")), (Some(&3), Some(&1)));
    assert!(
        claim(s, &l, Utc::now()).await.is_empty(),
        "both projects are at their limits"
    );
    let mut small = limits(100, 100);
    small.batch = 2;
    let more = claim(s, &small, Utc::now()).await;
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
    apply(s, "p", "c", create_plan(vec![task("t", &y("w", ""))])).await;
    let t = claim(s, &limits(1, 1), Utc::now()).await.remove(0);

    // A rate limit requeues without counting the attempt, and waits.
    let later = Utc::now() + chrono::Duration::seconds(3600);
    let rl = RunResult::failure(ErrorClass::RateLimit, "429");
    assert!(
        finish(
            s,
            t.id,
            1,
            &Outcome::Requeue {
                result: rl,
                not_before: later
            },
            Utc::now()
        )
        .await
    );
    let row = s.task("p", "t").await.unwrap().unwrap();
    assert_eq!(
        (row.state(), row.attempts, row.requeues),
        (TaskState::Pending, 1, 1)
    );
    assert!(
        claim(s, &limits(1, 1), Utc::now()).await.is_empty(),
        "not before its time"
    );
    // The engine sleeps until then (and nothing else is due).
    let due = s
        .next_due(Utc::now())
        .await
        .unwrap()
        .expect("a retry is due");
    assert!(
        (due - later).num_milliseconds().abs() <= 1,
        "{due} != {later}"
    );
    assert_eq!(s.next_due(later).await.unwrap(), None, "nothing after it");
    let t = claim(s, &limits(1, 1), later + chrono::Duration::seconds(1))
        .await
        .remove(0);
    assert_eq!(
        t.attempts, 2,
        "every run has its own attempt number (and run name)"
    );

    // An infrastructure retry counts.
    let crash = RunResult::failure(ErrorClass::Infrastructure, "lost");
    finish(
        s,
        t.id,
        2,
        &Outcome::Retry {
            result: crash,
            not_before: Utc::now(),
            infrastructure: true,
        },
        Utc::now(),
    )
    .await;
    let row = s.task("p", "t").await.unwrap().unwrap();
    assert_eq!(
        (row.state(), row.attempts, row.infra_failures),
        (TaskState::Pending, 2, 1)
    );
    let t = claim(s, &limits(1, 1), Utc::now()).await.remove(0);
    assert_eq!(t.attempts, 3);

    // Finishing is idempotent: the wrong attempt, or a second call, changes nothing.
    assert!(!finish(s, t.id, 2, &Outcome::Completed(ok()), Utc::now()).await);
    assert!(finish(s, t.id, 3, &Outcome::Completed(ok()), Utc::now()).await);
    assert!(!finish(s, t.id, 3, &Outcome::Completed(ok()), Utc::now()).await);
    let row = s.task("p", "t").await.unwrap().unwrap();
    assert_eq!(row.state(), TaskState::Completed);
    assert!(row.report_due && row.result().unwrap().success);
    assert_eq!(s.report_due("p").await.unwrap().len(), 1);
    s.modify_tasks(&[row.id], Utc::now(), |r| {
        (transition::reported(r, row.generation, "abc"), ())
    })
    .await
    .unwrap();
    assert!(s.report_due("p").await.unwrap().is_empty());

    let kinds: Vec<String> = s
        .events("p", "t")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind.to_string())
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
    apply(
        s,
        "p",
        "c",
        create_plan(vec![task("run", &y("w1", "")), task("wait", &y("w1", ""))]),
    )
    .await;
    let running = claim(s, &limits(5, 5), Utc::now()).await.remove(0);
    assert_eq!(running.key, "run");
    assert_eq!(
        steer::stop(s, "p", "wait", "tester").await.unwrap(),
        StopOutcome::CancelledBeforeItRan
    );
    let wait = s.task("p", "wait").await.unwrap().unwrap();
    assert_eq!(wait.state(), TaskState::Completed);
    assert_eq!(
        wait.result().unwrap().error_class,
        Some(ErrorClass::Cancelled)
    );
    assert_eq!(
        steer::stop(s, "p", "run", "tester").await.unwrap(),
        StopOutcome::StopRequested
    );
    assert!(s.task("p", "run").await.unwrap().unwrap().cancel_requested);
    let nothing = steer::stop(s, "p", "wait", "tester").await.unwrap_err();
    assert!(
        matches!(nothing, SteerError::Refused { .. })
            && nothing.to_string().contains("nothing to stop"),
        "{nothing}"
    );
    assert!(
        matches!(
            steer::retry(s, "p", "run", "tester").await,
            Err(SteerError::Refused { .. })
        ),
        "a running task cannot be retried"
    );
    assert_eq!(steer::retry(s, "p", "wait", "tester").await.unwrap(), 2);
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
    apply(
        &db.store,
        "p",
        "c",
        create_plan(vec![task("a", &y("same", "")), task("b", &y("same", ""))]),
    )
    .await;
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
    apply(&db.store, "p", "c", create_plan(tasks)).await;
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
                ..Default::default()
            };
            let mut idle = 0;
            while idle < 50 {
                let got = claim(&store, &l, Utc::now()).await;
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
                    assert!(
                        finish(
                            &store,
                            t.id,
                            t.attempts,
                            &Outcome::Completed(ok()),
                            Utc::now()
                        )
                        .await
                    );
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
    apply(&other, "p", "c", create_plan(vec![task("x", &y("w", ""))])).await;
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

/// The change feed (what the GitHub reporter and the dashboard follow) never skips a
/// transaction that commits after a later one: an event whose id came first but whose
/// transaction commits last is still read, in commit order, by a reader that polled between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_that_commits_after_a_later_one_is_still_in_the_change_feed() {
    use sqlx::Connection;
    let db = TestDb::postgres().await;
    let s = &db.store;
    apply(
        s,
        "p",
        "c",
        create_plan(vec![task("a", &y("w1", "")), task("b", &y("w2", ""))]),
    )
    .await;
    // Past the creation of both (the feed may hold them back while transactions of other
    // databases on this cluster are open).
    let (_, start) = read_feed(s, Default::default(), 2).await;
    // A slow writer: its transaction appends an event of task a (taking the smaller id) and
    // stays open.
    let mut slow = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut slow).await.unwrap();
    let slow_id: i64 = sqlx::query_scalar(
        "INSERT INTO task_events (task_id, project, key, generation, at, kind, message)
         SELECT id, project, key, generation, now(), 'priority', 'the slow change' FROM tasks WHERE key = 'a'
         RETURNING id",
    )
    .fetch_one(&mut slow)
    .await
    .unwrap();
    // A later writer commits first.
    steer::set_priority(s, "p", "b", 5, "the fast one")
        .await
        .unwrap();
    let fast_id: i64 = s.events("p", "b").await.unwrap().last().unwrap().id;
    assert!(slow_id < fast_id, "the slow change has the smaller id");
    // A reader polling now sees nothing past the open transaction, so it does not move past it.
    let (seen, cursor) = s.feed_after(start, 100).await.unwrap();
    assert!(seen.is_empty(), "{seen:?}");
    sqlx::query("COMMIT").execute(&mut slow).await.unwrap();
    let (seen, _) = read_feed(s, cursor, 2).await;
    let messages: Vec<&str> = seen.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        messages,
        ["the slow change", "priority 0 -> 5 by the fast one"],
        "both, in commit order"
    );
    db.drop_db().await;
}

/// Each backend reads its feed in commit order from where a reader started, and a reader that
/// starts at the head sees only what comes after.
async fn the_change_feed_follows_commits(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    apply(s, "p", "c", create_plan(vec![task("a", &y("w1", ""))])).await;
    let (created, _) = read_feed(s, Default::default(), 1).await;
    assert_eq!(
        (created[0].key.as_str(), created[0].kind),
        ("a", EventKind::Created)
    );
    apply(s, "p", "c2", create_plan(vec![task("b", &y("w2", ""))])).await;
    steer::set_priority(s, "p", "a", 3, "t").await.unwrap();
    let (after, next) = read_feed(s, Default::default(), 3).await;
    let got: Vec<(String, EventKind)> = after.iter().map(|e| (e.key.clone(), e.kind)).collect();
    assert_eq!(
        got,
        [
            ("a".to_string(), EventKind::Created),
            ("b".to_string(), EventKind::Created),
            ("a".to_string(), EventKind::Priority)
        ]
    );
    let b = s.task("p", "b").await.unwrap().unwrap();
    assert_eq!(after[1].task_id, Some(b.id), "events name their task's row");
    assert!(
        s.feed_after(next, 100).await.unwrap().0.is_empty(),
        "nothing more"
    );
    db.drop_db().await;
}

/// The first `n` events of the feed after `cursor`, and the cursor past them, waiting for
/// them: on Postgres the feed waits for every transaction of the cluster older than an event,
/// and tests of other databases run beside this one.
async fn read_feed(
    s: &Store,
    cursor: coding_swarm::store::FeedCursor,
    n: usize,
) -> (
    Vec<coding_swarm::model::EventRow>,
    coding_swarm::store::FeedCursor,
) {
    let mut seen = Vec::new();
    let mut cursor = cursor;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while seen.len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "only {seen:?} in the feed"
        );
        let (events, next) = s.feed_after(cursor, (n - seen.len()) as i64).await.unwrap();
        seen.extend(events);
        cursor = next;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (seen, cursor)
}

/// A row holding a value this engine does not know (written by a newer version, or by hand) is
/// an error that names the column and the value, never read as something else.
async fn a_value_this_engine_does_not_know_is_an_error_naming_it(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    apply(s, "p", "c", create_plan(vec![task("a", &y("w1", ""))])).await;
    db.execute(
        "INSERT INTO task_events (task_id, project, key, generation, at, kind, message)
         SELECT id, project, key, 1, created_at, 'exploded', 'from the future' FROM tasks",
    )
    .await
    .unwrap();
    let e = s.events("p", "a").await.unwrap_err().to_string()
        + &format!("{:?}", s.events("p", "a").await.unwrap_err());
    assert!(
        e.contains("task_events.kind") && e.contains("\"exploded\"") && e.contains("p/a"),
        "{e}"
    );
    db.drop_db().await;
}

/// An epic that ended, named again by a new epic file: a new epic opens (its counters from
/// zero, its manager runs again), and the ended one is kept as history.
async fn a_reused_epic_name_opens_a_new_epic_and_keeps_the_old_as_history(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let epic = |key: &str| {
        task(
            key,
            "addressee: project-mgr-p\nkind: epic\nepic: x\nprompt: build x\n",
        )
    };
    let part = |key: &str| task(key, "addressee: w1\nepic: x\nprompt: a part\n");
    apply(
        s,
        "p",
        "c1",
        create_plan(vec![part("a-part"), epic("epic-x")]),
    )
    .await;
    let first = s.epic("p", "x").await.unwrap().unwrap();
    assert_eq!(
        (first.state, first.tasks),
        (EpicState::Active, 1),
        "the part counts, whatever the file order"
    );
    assert!(s
        .end_epic(
            "p",
            "x",
            Utc::now(),
            |e| coding_swarm::model::green::end_epic(e, None),
            |_| { coding_swarm::model::Change::None }
        )
        .await
        .unwrap());
    assert_eq!(
        s.epic("p", "x").await.unwrap().unwrap().state,
        EpicState::Complete
    );
    apply(s, "p", "c2", create_plan(vec![epic("epic-x-again")])).await;
    let second = s.epic("p", "x").await.unwrap().unwrap();
    assert_eq!(
        (second.state, second.tasks, second.activations),
        (EpicState::Active, 0, 0),
        "a new epic: {second:?}"
    );
    let history = s.epic_history("p", "x").await.unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(
        (history[0].state, history[0].tasks),
        (EpicState::Complete, 1)
    );
    // An active epic named again by another file stays the one epic.
    apply(s, "p", "c3", create_plan(vec![epic("epic-x-third")])).await;
    apply(s, "p", "c4", create_plan(vec![part("b-part")])).await;
    assert_eq!(s.epic("p", "x").await.unwrap().unwrap().tasks, 1);
    assert_eq!(s.epic_history("p", "x").await.unwrap().len(), 1);
    db.drop_db().await;
}

/// Fencing: once another engine has taken leadership (raised the epoch), the old leader's
/// claims, run ends and syncs fail as deposed, and it learns it must stop; the new leader's
/// work goes on. A store that never led (a CLI command) is not fenced.
async fn a_deposed_leader_writes_nothing_after_a_new_one_leads(backend: Backend) {
    let db = TestDb::new(backend).await;
    let old = Store::connect(&db.url).await.unwrap();
    let new = Store::connect(&db.url).await.unwrap();
    apply(
        &db.store,
        "p",
        "c",
        create_plan(vec![task("a", &y("w1", "")), task("b", &y("w2", ""))]),
    )
    .await;
    assert_eq!(old.lead("old", Utc::now()).await.unwrap(), 1);
    let running = claim(&old, &limits(1, 1), Utc::now()).await.remove(0);
    assert_eq!(new.lead("new", Utc::now()).await.unwrap(), 2);
    let deposed = old.deposed();
    let e = old
        .claim(Utc::now(), |_, heads| {
            heads
                .iter()
                .map(|h| transition::claim(h, Utc::now()))
                .collect()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            coding_swarm::store::StoreError::Deposed {
                ours: 1,
                current: 2
            }
        ),
        "{e}"
    );
    assert!(*deposed.borrow(), "the old leader learns it must stop");
    let end = Outcome::Completed(RunResult::default());
    let e = old
        .modify_tasks(&[running.id], Utc::now(), |row| {
            (transition::finish(row, 1, &end, Utc::now()), ())
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no longer leads"), "{e}");
    assert_eq!(
        db.store
            .task("p", &running.key)
            .await
            .unwrap()
            .unwrap()
            .status,
        TaskState::Running,
        "the deposed leader's run end was not written"
    );
    // The new leader goes on: it records the run's end and claims the next task.
    assert!(finish(&new, running.id, 1, &end, Utc::now()).await);
    assert_eq!(claim(&new, &limits(1, 1), Utc::now()).await.len(), 1);
    assert_eq!(
        new.leadership().await.unwrap().unwrap(),
        (2, "new".to_string())
    );
    // A store that never led writes as before.
    apply(
        &db.store,
        "p",
        "c2",
        create_plan(vec![task("c", &y("w3", ""))]),
    )
    .await;
    db.drop_db().await;
}

/// README section 8: a task waiting for a retry keeps its place (later tasks of its addressee
/// wait behind it); a paused profile holds the queues it heads while other profiles run; a
/// later pause extends an earlier one and an earlier one shortens nothing.
async fn a_retry_keeps_its_place_and_a_paused_profile_holds_its_queues(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    // Whole seconds: Postgres keeps microseconds only.
    let now = DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap();
    let hour = chrono::Duration::hours(1);
    apply(
        s,
        "p",
        "c",
        create_plan(vec![
            task("first", &y("w", "priority: 9\n")),
            task("second", &y("w", "")),
        ]),
    )
    .await;
    let t = claim(s, &limits(8, 8), now).await.remove(0);
    assert_eq!(t.key, "first");
    let failed = RunResult::failure(ErrorClass::Agent, "tests failed");
    let retry = Outcome::Retry {
        result: failed,
        not_before: now + hour,
        infrastructure: false,
    };
    assert!(finish(s, t.id, 1, &retry, now).await);
    assert!(
        claim(s, &limits(8, 8), now).await.is_empty(),
        "second waits behind first's retry"
    );
    let t = claim(s, &limits(8, 8), now + hour).await.remove(0);
    assert_eq!((t.key.as_str(), t.attempts), ("first", 2));
    assert!(finish(s, t.id, 2, &Outcome::Completed(ok()), now + hour).await);

    // Pauses: the latest end wins, whatever order they come in.
    s.pause_agent("claude", now + hour, "usage limit", now)
        .await
        .unwrap();
    s.pause_agent("claude", now + hour / 2, "rate limit", now)
        .await
        .unwrap();
    let until = |p: Vec<(String, DateTime<Utc>, String)>| -> Vec<(String, i64)> {
        p.into_iter()
            .map(|(a, u, _)| (a, (u - now).num_seconds()))
            .collect()
    };
    assert_eq!(
        until(s.agent_pauses(now).await.unwrap()),
        [("claude".to_string(), 3600)]
    );
    s.pause_agent("claude", now + hour * 2, "usage limit", now)
        .await
        .unwrap();
    assert_eq!(
        until(s.agent_pauses(now).await.unwrap()),
        [("claude".to_string(), 7200)]
    );
    assert!(s.agent_pauses(now + hour * 2).await.unwrap().is_empty());

    // A paused profile: the queue it heads waits, all of it (second, of the default profile,
    // and behind-it, of another one behind paused-head); another profile's queue runs.
    apply(
        s,
        "p",
        "c2",
        create_plan(vec![
            task("paused-head", &y("x", "priority: 9\n")),
            task("behind-it", &y("x", "agent: other\n")),
            task("other", &y("z", "agent: other\n")),
        ]),
    )
    .await;
    let mut paused = limits(8, 8);
    paused.paused_agents = ["claude".to_string()].into();
    let keys: Vec<String> = claim(s, &paused, now + hour)
        .await
        .into_iter()
        .map(|t| t.key)
        .collect();
    assert_eq!(keys, ["other"]);
    db.drop_db().await;
}

/// README section 4: when an epic fails, its pending tasks, task files and activations alike,
/// complete at once as cancelled, each owing a status file; a running one is left to finish.
async fn a_failed_epic_cancels_its_pending_tasks_and_activations_alike(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let now = Utc::now();
    apply(
        s,
        "p",
        "c1",
        create_plan(vec![
            task(
                "epic-x",
                "addressee: project-mgr-p\nkind: epic\nepic: x\nprompt: build x\n",
            ),
            task("a-part", "addressee: w1\nepic: x\nprompt: a part\n"),
            task(
                "b-part",
                "addressee: w1\nepic: x\nprompt: b part\npriority: 1\n",
            ),
        ]),
    )
    .await;
    // The manager and b-part run; a result waits for the manager as an activation.
    let running: Vec<String> = claim(s, &limits(8, 8), now)
        .await
        .into_iter()
        .map(|t| t.key)
        .collect();
    assert_eq!(running.len(), 2, "{running:?}");
    assert!(running.contains(&"b-part".to_string()), "{running:?}");
    let item = coding_swarm::model::ActivationItem::result("old-part", Some("x"), &ok());
    let (activation, created) = crate::green::activate(s, "p", Some("x"), item).await;
    assert!(created);

    let reason = "cap reached: 4 tasks (max_tasks = 3)";
    assert!(s
        .end_epic(
            "p",
            "x",
            now,
            |e| coding_swarm::model::green::end_epic(e, Some(reason)),
            |t| transition::cancel_for_failed_epic(t, "x", reason, now),
        )
        .await
        .unwrap());
    let cancelled = format!("epic x failed: {reason}");
    for key in ["a-part", activation.as_str()] {
        let t = s.task("p", key).await.unwrap().unwrap();
        let r = t.result().unwrap();
        assert_eq!(
            (t.state(), r.error_class, r.error.as_deref(), t.report_due),
            (
                TaskState::Completed,
                Some(ErrorClass::Cancelled),
                Some(cancelled.as_str()),
                true
            ),
            "{key}"
        );
    }
    for key in ["epic-x", "b-part"] {
        assert_eq!(
            s.task("p", key).await.unwrap().unwrap().state(),
            TaskState::Running,
            "{key}"
        );
    }
    db.drop_db().await;
}

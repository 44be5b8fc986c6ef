//! A person's stop, retry and priority change race the engine's claim and run ends, many times,
//! on both databases: each decision is taken on the row as locked, so what the caller is told
//! is what happened to the task.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use coding_swarm::model::transition::StopOutcome;
use coding_swarm::model::{ClaimLimits, EventKind, Outcome};
use coding_swarm::spec::{ErrorClass, RunResult, TaskState};
use coding_swarm::steer::{self, SteerError};
use coding_swarm::store::Store;
use tokio::sync::Barrier;

use crate::support::{apply, claim, config, create_plan, finish, task, Backend, TestDb, TestRepo};

crate::on_both_backends!(
    stop_racing_a_claim_says_what_happened,
    a_priority_change_racing_a_claim_is_kept_or_refused,
    retry_racing_a_run_end_reports_the_generation_it_set,
    a_status_file_owed_by_an_earlier_generation_is_still_committed,
);

const ROUNDS: usize = 25;

fn limits() -> ClaimLimits {
    ClaimLimits {
        max_running: 1000,
        max_running_per_project: 1000,
        per_project_overrides: HashMap::new(),
        batch: 512,
        paused_agents: Default::default(),
        default_agent: "claude".into(),
        ..Default::default()
    }
}

/// One pending task `key` of its own addressee.
async fn pending(s: &Store, key: &str) {
    let yaml = format!("addressee: {key}-w\nprompt: do it\n");
    apply(
        s,
        "p",
        &format!("c-{key}"),
        create_plan(vec![task(key, &yaml)]),
    )
    .await;
}

/// Runs `a` and `b` at the same moment, on two tasks of the runtime.
async fn race<A, B>(
    a: impl FnOnce() -> A + Send + 'static,
    b: impl FnOnce() -> B + Send + 'static,
) -> (A::Output, B::Output)
where
    A: std::future::Future + Send + 'static,
    B: std::future::Future + Send + 'static,
    A::Output: Send + 'static,
    B::Output: Send + 'static,
{
    let barrier = Arc::new(Barrier::new(2));
    let (ba, bb) = (barrier.clone(), barrier);
    let a = tokio::spawn(async move {
        ba.wait().await;
        a().await
    });
    let b = tokio::spawn(async move {
        bb.wait().await;
        b().await
    });
    (a.await.unwrap(), b.await.unwrap())
}

async fn stop_racing_a_claim_says_what_happened(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = db.store.clone();
    let mut seen = HashMap::<&str, usize>::new();
    for i in 0..ROUNDS {
        let key = format!("t{i:02}");
        pending(&s, &key).await;
        let (s1, s2, k) = (s.clone(), s.clone(), key.clone());
        let (stopped, claimed) = race(
            move || async move { steer::stop(&s1, "p", &k, "tester").await.unwrap() },
            move || async move { claim(&s2, &limits(), Utc::now()).await },
        )
        .await;
        let row = s.task("p", &key).await.unwrap().unwrap();
        let was_claimed = claimed.iter().any(|r| r.key == key);
        match stopped {
            StopOutcome::CancelledBeforeItRan => {
                assert!(!was_claimed, "{key}: told cancelled, but it was claimed");
                assert_eq!(
                    (row.status, row.attempts),
                    (TaskState::Completed, 0),
                    "{key}"
                );
                assert_eq!(
                    row.result.as_ref().and_then(|r| r.error_class),
                    Some(ErrorClass::Cancelled),
                    "{key}"
                );
                *seen.entry("cancelled").or_default() += 1;
            }
            StopOutcome::StopRequested => {
                assert!(was_claimed, "{key}: told it runs, but nobody claimed it");
                assert_eq!(row.status, TaskState::Running, "{key}");
                assert!(row.cancel_requested, "{key}: the stop is recorded");
                *seen.entry("stop requested").or_default() += 1;
            }
            StopOutcome::AlreadyCompleted => panic!("{key}: it never completed"),
        }
        let kinds: Vec<EventKind> = s
            .events("p", &key)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            kinds.contains(&EventKind::Claimed),
            was_claimed,
            "{key}: the log says what happened: {kinds:?}"
        );
        // What runs is stopped before the next round; the ledger stays one-per-addressee.
        if was_claimed {
            let end = Outcome::Completed(RunResult::failure(ErrorClass::Cancelled, "stopped"));
            assert!(finish(&s, row.id, row.attempts, &end, Utc::now()).await);
        }
    }
    eprintln!("{backend:?}: {seen:?}");
    db.drop_db().await;
}

async fn a_priority_change_racing_a_claim_is_kept_or_refused(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = db.store.clone();
    let mut seen = HashMap::<&str, usize>::new();
    for i in 0..ROUNDS {
        let key = format!("t{i:02}");
        pending(&s, &key).await;
        let (s1, s2, k) = (s.clone(), s.clone(), key.clone());
        let (set, claimed) = race(
            move || async move { steer::set_priority(&s1, "p", &k, 7, "tester").await },
            move || async move { claim(&s2, &limits(), Utc::now()).await },
        )
        .await;
        let row = s.task("p", &key).await.unwrap().unwrap();
        let was_claimed = claimed.iter().any(|r| r.key == key);
        match set {
            Ok(()) => {
                assert_eq!(row.priority, 7, "{key}: told set, so it is kept");
                *seen.entry("set").or_default() += 1;
            }
            Err(SteerError::Refused { refused, .. }) => {
                assert_eq!(refused.status, TaskState::Running, "{key}");
                assert!(
                    was_claimed,
                    "{key}: refused as running, but nobody claimed it"
                );
                assert_eq!(row.priority, 0, "{key}: refused, so unchanged");
                *seen.entry("refused").or_default() += 1;
            }
            Err(e) => panic!("{key}: {e}"),
        }
        if was_claimed {
            let end = Outcome::Completed(RunResult::default());
            assert!(finish(&s, row.id, row.attempts, &end, Utc::now()).await);
        }
    }
    eprintln!("{backend:?}: {seen:?}");
    db.drop_db().await;
}

async fn retry_racing_a_run_end_reports_the_generation_it_set(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = db.store.clone();
    let mut seen = HashMap::<&str, usize>::new();
    for i in 0..ROUNDS {
        let key = format!("t{i:02}");
        pending(&s, &key).await;
        let running = claim(&s, &limits(), Utc::now())
            .await
            .into_iter()
            .find(|r| r.key == key)
            .expect("claimed");
        let (s1, s2, k) = (s.clone(), s.clone(), key.clone());
        let (retried, ended) = race(
            move || async move { steer::retry(&s1, "p", &k, "tester").await },
            move || async move {
                let done = Outcome::Completed(RunResult {
                    success: true,
                    ..RunResult::default()
                });
                finish(&s2, running.id, running.attempts, &done, Utc::now()).await
            },
        )
        .await;
        assert!(ended, "{key}: the run's end is recorded either way");
        let row = s.task("p", &key).await.unwrap().unwrap();
        match retried {
            Ok(generation) => {
                assert_eq!(
                    (generation, row.generation, row.status, row.attempts),
                    (2, 2, TaskState::Pending, 0),
                    "{key}: the generation reported is the one set"
                );
                *seen.entry("retried").or_default() += 1;
            }
            Err(SteerError::Refused { refused, .. }) => {
                assert_eq!(refused.status, TaskState::Running, "{key}");
                assert_eq!(
                    (row.generation, row.status),
                    (1, TaskState::Completed),
                    "{key}: refused, so the run's end stands"
                );
                *seen.entry("refused").or_default() += 1;
            }
            Err(e) => panic!("{key}: {e}"),
        }
        // A retried task runs its new generation and ends before the next round.
        if let Some(r) = claim(&s, &limits(), Utc::now())
            .await
            .into_iter()
            .find(|r| r.key == key)
        {
            let end = Outcome::Completed(RunResult::default());
            assert!(finish(&s, r.id, r.attempts, &end, Utc::now()).await);
        }
    }
    eprintln!("{backend:?}: {seen:?}");
    db.drop_db().await;
}

/// A task completes and is retried before its status file was committed: the file of the
/// generation that completed is still committed (then the next generation's, when it ends).
async fn a_status_file_owed_by_an_earlier_generation_is_still_committed(backend: Backend) {
    use coding_swarm::gitops::GitAuth;
    use coding_swarm::spec::StatusSpec;
    let db = TestDb::new(backend).await;
    let s = db.store.clone();
    let data = tempfile::tempdir().unwrap();
    let repo = TestRepo::new();
    repo.commit(
        &[(".ai/tasks/t.yaml", Some("addressee: w\nprompt: do it\n"))],
        "a task",
    );
    let cfg = config(data.path(), &db, &repo, "true", "");
    let project = cfg.projects[0].clone();
    apply(
        &s,
        &project.name,
        "c",
        create_plan(vec![task("t", "addressee: w\nprompt: do it\n")]),
    )
    .await;
    let run = claim(&s, &limits(), Utc::now()).await.remove(0);
    let done = |summary: &str| {
        Outcome::Completed(RunResult {
            success: true,
            summary: Some(summary.into()),
            ..RunResult::default()
        })
    };
    assert!(finish(&s, run.id, 1, &done("first"), Utc::now()).await);
    // Retried before the reporter ran.
    assert_eq!(
        steer::retry(&s, &project.name, "t", "ann").await.unwrap(),
        2
    );
    let reported = coding_swarm::report::report_project(&s, &cfg, &project, &GitAuth::default())
        .await
        .unwrap();
    assert_eq!(reported, 1);
    let file: StatusSpec =
        serde_saphyr::from_str(&repo.read("main", ".ai/status/t.yaml").expect("committed"))
            .unwrap();
    assert_eq!(
        (file.generation, file.result.and_then(|r| r.summary)),
        (1, Some("first".to_string())),
        "the first generation's file"
    );
    assert_eq!(
        coding_swarm::report::report_project(&s, &cfg, &project, &GitAuth::default())
            .await
            .unwrap(),
        0,
        "owed once"
    );
    // The next generation runs and its own file replaces it.
    let run = claim(&s, &limits(), Utc::now()).await.remove(0);
    assert!(finish(&s, run.id, 1, &done("second"), Utc::now()).await);
    coding_swarm::report::report_project(&s, &cfg, &project, &GitAuth::default())
        .await
        .unwrap();
    let file: StatusSpec =
        serde_saphyr::from_str(&repo.read("main", ".ai/status/t.yaml").unwrap()).unwrap();
    assert_eq!(file.generation, 2);
    db.drop_db().await;
}

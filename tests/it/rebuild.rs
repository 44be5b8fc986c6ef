//! Git is the truth: a database lost, or new, is rebuilt from the repositories' task and status
//! files. `swarm up --once` on an empty database after a run reproduces the same task list and
//! runs no agent; a task whose file changed since its status file runs as its next generation;
//! a database wiped in the middle of an epic keeps what was done and goes on with the rest.

use std::path::Path;
use std::time::Duration;

use coding_swarm::model::{EpicState, EventKind, Origin};
use coding_swarm::spec::TaskState;
use coding_swarm::store::{Store, TaskFilter};

use crate::support::{start_engine, wait_exit, write_config, Backend, TestDb, TestRepo};

crate::on_both_backends!(
    a_lost_database_is_rebuilt_from_the_repository_and_runs_no_agent,
    a_database_wiped_in_the_middle_of_an_epic_keeps_what_was_done,
    a_task_file_deleted_and_added_back_is_a_new_task,
);

/// Workers write a file; the manager's activations say `EPIC COMPLETE` once `finish` exists.
fn script(runlog: &Path, finish: &Path) -> String {
    format!(
        "set -e; echo \"start $SWARM_TASK_KEY\" >> {log}; case \"$SWARM_TASK_KEY\" in \
         activation-*) if [ -f {fin} ]; then echo 'EPIC COMPLETE'; else echo 'next step planned'; fi ;; \
         *) mkdir -p out; echo \"$SWARM_TASK_KEY\" > \"out/$SWARM_TASK_KEY.txt\"; echo \"wrote $SWARM_TASK_KEY\" ;; esac",
        log = runlog.display(),
        fin = finish.display(),
    )
}

fn starts(runlog: &Path) -> Vec<String> {
    std::fs::read_to_string(runlog)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("start ").map(str::to_string))
        .collect()
}

/// Runs `swarm up --once` on `db` until it ends; panics with its log if it fails.
async fn up_once(data: &Path, db: &TestDb, repo: &TestRepo, script: &str) {
    let cfg = write_config(data, &db.url, repo, script, "");
    let log = data.join(format!("engine-{}.log", rand_suffix()));
    let engine = start_engine(&cfg, &log, true);
    let status = wait_exit(engine, Duration::from_secs(180), "swarm up --once").await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "swarm up --once failed:\n{text}");
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// What `swarm task list` shows of each task, in key order.
type Listed = (
    String,
    TaskState,
    i32,
    i32,
    Origin,
    Option<bool>,
    Option<String>,
);

async fn listed(store: &Store) -> Vec<Listed> {
    let mut rows: Vec<Listed> = store
        .list(&TaskFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|t| {
            (
                t.key.clone(),
                t.status,
                t.generation,
                t.attempts,
                t.origin,
                t.result.as_ref().map(|r| r.success),
                t.result.as_ref().and_then(|r| r.summary.clone()),
            )
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

fn epic_files() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            ".ai/tasks/epic-e1.yaml",
            "addressee: project-mgr-proj\nkind: epic\nepic: e1\nprompt: build e1\n",
        ),
        (
            ".ai/tasks/a1.yaml",
            "addressee: worker-a\nepic: e1\nprompt: first part\n",
        ),
        (
            ".ai/tasks/a2.yaml",
            "addressee: worker-a\nepic: e1\nprompt: second part\n",
        ),
        (
            ".ai/tasks/loose.yaml",
            "addressee: worker-b\nprompt: unrelated\n",
        ),
    ]
}

fn commit(repo: &TestRepo, files: &[(&str, &str)], message: &str) {
    let refs: Vec<(&str, Option<&str>)> = files.iter().map(|(p, c)| (*p, Some(*c))).collect();
    repo.commit(&refs, message);
}

async fn a_lost_database_is_rebuilt_from_the_repository_and_runs_no_agent(backend: Backend) {
    let data = tempfile::tempdir().unwrap();
    let repo = TestRepo::new();
    commit(&repo, &epic_files(), "an epic and a loose task");
    let (runlog, finish) = (data.path().join("runlog"), data.path().join("finish"));
    std::fs::write(&finish, "").unwrap();
    let script = script(&runlog, &finish);

    let first = TestDb::new(backend).await;
    up_once(data.path(), &first, &repo, &script).await;
    let ran = starts(&runlog);
    let before = listed(&first.store).await;
    assert!(
        before
            .iter()
            .all(|t| t.1 == TaskState::Completed && t.5 == Some(true)),
        "{before:#?}"
    );
    assert!(
        before.iter().any(|t| t.4 == Origin::Engine),
        "the manager was activated: {before:#?}"
    );
    let epic = first.store.epic("proj", "e1").await.unwrap().unwrap();
    assert_eq!(epic.state, EpicState::Complete, "{epic:?}");

    // The database is lost: a new one, the same repository.
    let second = TestDb::new(backend).await;
    up_once(data.path(), &second, &repo, &script).await;
    assert_eq!(starts(&runlog), ran, "no agent ran again");
    assert_eq!(listed(&second.store).await, before, "the same task list");
    let rebuilt = second.store.epic("proj", "e1").await.unwrap().unwrap();
    assert_eq!(
        (rebuilt.state, rebuilt.activations, rebuilt.tasks),
        (epic.state, epic.activations, epic.tasks),
        "{rebuilt:?} was {epic:?}"
    );
    let events = second.store.events("proj", "a1").await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [EventKind::Restored],
        "{events:?}"
    );
    assert!(
        events[0].message.contains(".ai/status/a1.yaml"),
        "{events:?}"
    );

    // A task file changed since its status file: it runs as its next generation, alone.
    commit(
        &repo,
        &[(
            ".ai/tasks/loose.yaml",
            "addressee: worker-b\nprompt: unrelated, done better\n",
        )],
        "change the loose task",
    );
    let third = TestDb::new(backend).await;
    up_once(data.path(), &third, &repo, &script).await;
    let again = starts(&runlog);
    assert_eq!(
        &again[ran.len()..],
        ["loose"],
        "only the changed task ran: {again:?}"
    );
    let loose = third.store.task("proj", "loose").await.unwrap().unwrap();
    assert_eq!(
        (loose.status, loose.generation, loose.attempts),
        (TaskState::Completed, 2, 1)
    );
    for db in [first, second, third] {
        db.drop_db().await;
    }
}

async fn a_database_wiped_in_the_middle_of_an_epic_keeps_what_was_done(backend: Backend) {
    let data = tempfile::tempdir().unwrap();
    let repo = TestRepo::new();
    let files = epic_files();
    // The first half of the epic: its epic file and a1. The manager plans the next step.
    commit(&repo, &files[..2], "epic e1, part one");
    let (runlog, finish) = (data.path().join("runlog"), data.path().join("finish"));
    let script = script(&runlog, &finish);
    let first = TestDb::new(backend).await;
    up_once(data.path(), &first, &repo, &script).await;
    let ran = starts(&runlog);
    assert!(ran.contains(&"a1".to_string()), "{ran:?}");
    let epic = first.store.epic("proj", "e1").await.unwrap().unwrap();
    assert_eq!(epic.state, EpicState::Active);

    // The database is wiped; the manager's next step lands in the repository meanwhile.
    commit(&repo, &files[2..3], "epic e1, part two");
    std::fs::write(&finish, "").unwrap();
    let second = TestDb::new(backend).await;
    up_once(data.path(), &second, &repo, &script).await;
    let now = starts(&runlog);
    let new_runs = &now[ran.len()..];
    assert_eq!(new_runs[0], "a2", "only the new work runs: {now:?}");
    assert!(
        new_runs[1..].iter().all(|k| k.starts_with("activation-")),
        "then the manager: {now:?}"
    );
    let a1 = second.store.task("proj", "a1").await.unwrap().unwrap();
    assert_eq!((a1.status, a1.attempts), (TaskState::Completed, 1));
    let epic = second.store.epic("proj", "e1").await.unwrap().unwrap();
    assert_eq!(
        (epic.state, epic.tasks),
        (EpicState::Complete, 2),
        "the rebuilt epic counts both tasks and ends: {epic:?}"
    );
    for db in [first, second] {
        db.drop_db().await;
    }
}

/// Identity: a key deleted and added back is a new incarnation. Its run has a name of its own,
/// so it never adopts or completes from the earlier incarnation's run directory; its agent
/// runs; its event log starts empty.
async fn a_task_file_deleted_and_added_back_is_a_new_task(backend: Backend) {
    let data = tempfile::tempdir().unwrap();
    let repo = TestRepo::new();
    let (runlog, finish) = (data.path().join("runlog"), data.path().join("finish"));
    let script = script(&runlog, &finish);
    let db = TestDb::new(backend).await;
    commit(
        &repo,
        &[(".ai/tasks/a.yaml", "addressee: w\nprompt: one\n")],
        "add a",
    );
    up_once(data.path(), &db, &repo, &script).await;
    let first = db.store.task("proj", "a").await.unwrap().unwrap();
    repo.commit(&[(".ai/tasks/a.yaml", None)], "delete a");
    up_once(data.path(), &db, &repo, &script).await;
    assert!(db.store.task("proj", "a").await.unwrap().is_none());
    commit(
        &repo,
        &[(".ai/tasks/a.yaml", "addressee: w\nprompt: two\n")],
        "add a again",
    );
    up_once(data.path(), &db, &repo, &script).await;
    assert_eq!(starts(&runlog), ["a", "a"], "the new task's agent ran");
    let second = db.store.task("proj", "a").await.unwrap().unwrap();
    assert_ne!(second.incarnation, first.incarnation);
    assert_eq!(
        (second.status, second.generation, second.attempts),
        (TaskState::Completed, 1, 1)
    );
    assert!(
        second.result.as_ref().unwrap().started_at > first.result.as_ref().unwrap().finished_at,
        "its own run's result, not the earlier one's"
    );
    let kinds: Vec<EventKind> = db
        .store
        .events("proj", "a")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds.first(), Some(&EventKind::Created), "{kinds:?}");
    assert_eq!(
        kinds.iter().filter(|k| **k == EventKind::Created).count(),
        1,
        "only this incarnation's events: {kinds:?}"
    );
    db.drop_db().await;
}

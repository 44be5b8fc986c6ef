//! Every transition of the task state machine, table by table, with no database.

use chrono::{Duration, TimeZone, Utc};

use super::*;
use crate::model::green::ActivationItem;
use crate::model::outcome::Outcome;
use crate::spec::{parse_task, ErrorClass, RunResult, TaskKey, TaskState};

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
}

fn task(key: &str, yaml: &str) -> NewTask {
    NewTask::from_spec(
        &TaskKey::new(key).unwrap(),
        &parse_task(yaml.as_bytes()).unwrap(),
    )
}

/// A task of `origin` in `status`, generation 2, attempt 1.
fn row(status: TaskState, origin: Origin) -> TaskRow {
    let mut r = task("k", "addressee: w\nprompt: do it\n").into_row("p", origin, Some("c0"), at(0));
    r.id = 42;
    r.status = status;
    r.generation = 2;
    if status != TaskState::Pending {
        r.attempts = 1;
        r.run_spec_hash = Some(r.spec_hash.clone());
        r.started_at = Some(at(1));
    }
    if status == TaskState::Completed {
        r.result = Some(ok());
        r.completed_at = Some(at(2));
    }
    r
}

fn ok() -> RunResult {
    RunResult {
        success: true,
        summary: Some("done".into()),
        ..RunResult::default()
    }
}

fn failed(class: ErrorClass) -> RunResult {
    RunResult::failure(class, "it broke")
}

/// The new row and the kinds of the events of an update.
fn updated(c: &Change) -> (&TaskRow, Vec<EventKind>) {
    match c {
        Change::Update { row, events, .. } => (row, events.iter().map(|e| e.kind).collect()),
        other => panic!("expected an update, got {other:?}"),
    }
}

#[test]
fn a_new_file_is_a_pending_task_of_generation_one() {
    let c = created(
        "p",
        task("k", "addressee: w\nprompt: x\n"),
        "abcdef0123456789",
        at(5),
    );
    let Change::Insert { row, events } = &c else {
        panic!("{c:?}")
    };
    assert_eq!(
        (row.status, row.generation, row.attempts, row.origin, row.id),
        (TaskState::Pending, 1, 0, Origin::File, 0)
    );
    assert_eq!(row.source_commit.as_deref(), Some("abcdef0123456789"));
    assert_eq!(events[0].kind, EventKind::Created);
    assert_eq!(events[0].message, "task file added in abcdef0123");
}

#[test]
fn a_changed_file_replaces_pending_queues_running_and_reruns_completed() {
    let new = task("k", "addressee: other\nprompt: changed\n");
    // (status before, status after, generation after, addressee after, event)
    let table = [
        (
            TaskState::Pending,
            TaskState::Pending,
            2,
            "other",
            EventKind::Updated,
        ),
        (
            TaskState::Running,
            TaskState::Running,
            2,
            "w",
            EventKind::Updated,
        ),
        (
            TaskState::Completed,
            TaskState::Pending,
            3,
            "other",
            EventKind::NewGeneration,
        ),
    ];
    for (before, after, generation, addressee, kind) in table {
        let old = row(before, Origin::File);
        let c = spec_changed(&old, &new, "c1", at(9));
        let Change::Update {
            row: r,
            spec,
            events,
            owed,
        } = &c
        else {
            panic!("{before:?}: {c:?}")
        };
        assert!(spec, "{before:?}: the spec columns are written");
        assert_eq!(*owed, None, "{before:?}: nothing was left unreported");
        assert_eq!(
            (r.status, r.generation, r.addressee.as_str(), events[0].kind),
            (after, generation, addressee, kind),
            "{before:?}"
        );
        assert_eq!(r.prompt, "changed");
        assert_eq!(r.spec_hash, new.spec_hash);
        if before == TaskState::Completed {
            assert_eq!(
                (r.attempts, r.result.clone(), r.report_due),
                (0, None, false)
            );
            assert_eq!(
                events[0].generation, 3,
                "the event belongs to the new generation"
            );
        }
        if before == TaskState::Running {
            assert_eq!(r.attempts, 1, "the running attempt goes on");
            assert_ne!(
                r.run_spec_hash.as_deref(),
                Some(r.spec_hash.as_str()),
                "the new spec runs next"
            );
        }
    }
    // An unchanged file changes nothing.
    let same = row(TaskState::Completed, Origin::File);
    let t = task("k", "addressee: w\nprompt: do it\n");
    assert_eq!(spec_changed(&same, &t, "c1", at(9)), Change::None);
}

#[test]
fn a_file_added_back_while_its_task_is_being_stopped_keeps_it_running() {
    let mut r = row(TaskState::Running, Origin::File);
    r.cancel_requested = true;
    r.file_deleted = true;
    let same = task("k", "addressee: w\nprompt: do it\n");
    let c = spec_changed(&r, &same, "c2", at(9));
    let (new, _) = updated(&c);
    assert!(!new.cancel_requested && !new.file_deleted);
}

#[test]
fn a_deleted_file_removes_the_task_or_stops_its_run() {
    for status in [TaskState::Pending, TaskState::Completed] {
        let c = file_deleted(&row(status, Origin::File), "c3", at(9));
        let Change::Delete { id, events } = &c else {
            panic!("{status:?}: {c:?}")
        };
        assert_eq!((*id, events[0].kind), (42, EventKind::Removed));
    }
    let c = file_deleted(&row(TaskState::Running, Origin::File), "c3", at(9));
    let (new, kinds) = updated(&c);
    assert!(new.cancel_requested && new.file_deleted);
    assert_eq!(new.status, TaskState::Running);
    assert_eq!(kinds, [EventKind::StopRequested]);
}

#[test]
fn a_claim_starts_the_next_attempt_of_a_pending_task_only() {
    let mut pending = row(TaskState::Pending, Origin::File);
    pending.not_before = Some(at(3));
    pending.result = Some(failed(ErrorClass::Crash));
    let c = claim(&pending, at(10));
    let (new, kinds) = updated(&c);
    assert_eq!(
        (
            new.status,
            new.attempts,
            new.started_at,
            new.not_before.is_none(),
            new.result.is_none()
        ),
        (TaskState::Running, 1, Some(at(10)), true, true)
    );
    assert_eq!(new.run_spec_hash.as_deref(), Some(new.spec_hash.as_str()));
    assert_eq!(
        new.updated_at, pending.updated_at,
        "updated_at still says since when it waited"
    );
    assert_eq!(kinds, [EventKind::Claimed]);
    for status in [TaskState::Running, TaskState::Completed] {
        assert_eq!(
            claim(&row(status, Origin::File), at(10)),
            Change::None,
            "{status:?}"
        );
    }
}

#[test]
fn a_run_end_moves_the_task_as_its_outcome_says() {
    let later = at(100);
    // (outcome, status, generation, attempts, infra, requeues, not_before, report_due, event)
    type Row = (
        Outcome,
        TaskState,
        i32,
        i32,
        i32,
        i32,
        Option<DateTime<Utc>>,
        bool,
        EventKind,
    );
    let table: Vec<Row> = vec![
        (
            Outcome::Completed(ok()),
            TaskState::Completed,
            2,
            1,
            0,
            0,
            None,
            true,
            EventKind::Completed,
        ),
        (
            Outcome::Completed(failed(ErrorClass::Agent)),
            TaskState::Completed,
            2,
            1,
            0,
            0,
            None,
            true,
            EventKind::Completed,
        ),
        (
            Outcome::Retry {
                result: failed(ErrorClass::Crash),
                not_before: later,
                infrastructure: true,
            },
            TaskState::Pending,
            2,
            1,
            1,
            0,
            Some(later),
            false,
            EventKind::Retry,
        ),
        (
            Outcome::Retry {
                result: failed(ErrorClass::Agent),
                not_before: later,
                infrastructure: false,
            },
            TaskState::Pending,
            2,
            1,
            0,
            0,
            Some(later),
            false,
            EventKind::Retry,
        ),
        (
            Outcome::Requeue {
                result: failed(ErrorClass::RateLimit),
                not_before: later,
            },
            TaskState::Pending,
            2,
            1,
            0,
            1,
            Some(later),
            false,
            EventKind::Requeued,
        ),
        (
            Outcome::NextGeneration(ok()),
            TaskState::Pending,
            3,
            0,
            0,
            0,
            None,
            false,
            EventKind::NextGeneration,
        ),
    ];
    for (outcome, status, generation, attempts, infra, requeues, not_before, report_due, kind) in
        table
    {
        let running = row(TaskState::Running, Origin::File);
        let c = finish(&running, 1, &outcome, at(50));
        let (new, kinds) = updated(&c);
        assert_eq!(
            (
                new.status,
                new.generation,
                new.attempts,
                new.infra_failures,
                new.requeues,
                new.not_before,
                new.report_due
            ),
            (status, generation, attempts, infra, requeues, not_before, report_due),
            "{outcome:?}"
        );
        assert_eq!(kinds, [kind], "{outcome:?}");
        assert_eq!(
            new.result.as_ref(),
            Some(outcome.result()),
            "{outcome:?}: the result is kept"
        );
        assert!(!new.cancel_requested);
        assert_eq!(new.completed_at.is_some(), status == TaskState::Completed);
        let data = c.events()[0].data.clone().unwrap();
        assert_eq!(
            data["success"],
            outcome.result().success,
            "the event carries the result"
        );
    }
}

#[test]
fn a_run_end_of_an_activation_owes_its_status_file_too() {
    // A database rebuilt from the repository finds the manager's activations there.
    let running = row(TaskState::Running, Origin::Engine);
    let c = finish(&running, 1, &Outcome::Completed(ok()), at(50));
    assert!(updated(&c).0.report_due);
}

#[test]
fn the_next_generation_takes_the_addressee_of_the_new_spec() {
    let mut running = row(TaskState::Running, Origin::File);
    running.spec = parse_task(b"addressee: new-one\nprompt: x\n").unwrap();
    let c = finish(&running, 1, &Outcome::NextGeneration(ok()), at(50));
    assert_eq!(updated(&c).0.addressee, "new-one");
}

#[test]
fn a_run_end_of_a_deleted_task_removes_it() {
    let running = row(TaskState::Running, Origin::File);
    let c = finish(
        &running,
        1,
        &Outcome::Deleted(failed(ErrorClass::Cancelled)),
        at(50),
    );
    let Change::Delete { id, events } = &c else {
        panic!("{c:?}")
    };
    assert_eq!((*id, events[0].kind), (42, EventKind::Removed));
}

#[test]
fn finishing_is_idempotent() {
    let running = row(TaskState::Running, Origin::File);
    assert_eq!(
        finish(&running, 2, &Outcome::Completed(ok()), at(50)),
        Change::None,
        "another attempt"
    );
    for status in [TaskState::Pending, TaskState::Completed] {
        assert_eq!(
            finish(
                &row(status, Origin::File),
                1,
                &Outcome::Completed(ok()),
                at(50)
            ),
            Change::None
        );
    }
}

#[test]
fn a_stop_says_what_it_did() {
    let (c, out) = stop(&row(TaskState::Pending, Origin::File), "ann", at(7));
    assert_eq!(out, StopOutcome::CancelledBeforeItRan);
    let (new, kinds) = updated(&c);
    let result = new.result.clone().unwrap();
    assert_eq!(
        (new.status, result.error_class),
        (TaskState::Completed, Some(ErrorClass::Cancelled))
    );
    assert!(result.error.unwrap().contains("ann"));
    assert!(new.report_due, "a file task owes its status file");
    assert_eq!(kinds, [EventKind::Cancelled]);

    let (c, out) = stop(&row(TaskState::Running, Origin::File), "ann", at(7));
    assert_eq!(out, StopOutcome::StopRequested);
    let (new, kinds) = updated(&c);
    assert!(new.cancel_requested);
    assert_eq!(
        (new.status, kinds),
        (TaskState::Running, vec![EventKind::StopRequested])
    );

    let (c, out) = stop(&row(TaskState::Completed, Origin::File), "ann", at(7));
    assert_eq!((c, out), (Change::None, StopOutcome::AlreadyCompleted));

    let (c, _) = stop(&row(TaskState::Pending, Origin::Engine), "ann", at(7));
    assert!(
        updated(&c).0.report_due,
        "a cancelled activation gets its status file too"
    );
}

#[test]
fn a_retry_reruns_a_completed_task_and_refuses_others() {
    let (c, generation) = retry(&row(TaskState::Completed, Origin::File), "ann", at(8)).unwrap();
    let (new, kinds) = updated(&c);
    assert_eq!(generation, 3);
    assert_eq!(
        (
            new.status,
            new.generation,
            new.attempts,
            new.result.is_none()
        ),
        (TaskState::Pending, 3, 0, true)
    );
    assert_eq!(
        (kinds, c.events()[0].generation),
        (vec![EventKind::Retry], 3)
    );
    for status in [TaskState::Pending, TaskState::Running] {
        let refused = retry(&row(status, Origin::File), "ann", at(8)).unwrap_err();
        assert_eq!(refused.status, status);
    }
}

#[test]
fn a_priority_changes_only_while_pending() {
    let c = set_priority(&row(TaskState::Pending, Origin::File), 7, "ann", at(8)).unwrap();
    let (new, kinds) = updated(&c);
    assert_eq!((new.priority, kinds), (7, vec![EventKind::Priority]));
    assert_eq!(c.events()[0].message, "priority 0 -> 7 by ann");
    for status in [TaskState::Running, TaskState::Completed] {
        assert!(set_priority(&row(status, Origin::File), 7, "ann", at(8)).is_err());
    }
}

#[test]
fn a_failed_epic_cancels_its_pending_tasks() {
    let c = cancel_for_failed_epic(
        &row(TaskState::Pending, Origin::File),
        "e",
        "cap reached",
        at(9),
    );
    let (new, kinds) = updated(&c);
    assert_eq!(new.status, TaskState::Completed);
    assert!(new
        .result
        .clone()
        .unwrap()
        .error
        .unwrap()
        .contains("epic e failed: cap reached"));
    assert_eq!(kinds, [EventKind::Cancelled]);
    for status in [TaskState::Running, TaskState::Completed] {
        assert_eq!(
            cancel_for_failed_epic(&row(status, Origin::File), "e", "x", at(9)),
            Change::None
        );
    }
}

#[test]
fn a_status_file_is_marked_reported_for_its_own_generation_only() {
    let mut done = row(TaskState::Completed, Origin::File);
    done.report_due = true;
    let c = reported(&done, 2, "c4");
    let (new, kinds) = updated(&c);
    assert!(!new.report_due);
    assert_eq!(kinds, [EventKind::Reported]);
    assert_eq!(
        reported(&done, 1, "c4"),
        Change::None,
        "an older generation's file"
    );
    done.report_due = false;
    assert_eq!(reported(&done, 2, "c4"), Change::None, "already reported");
}

#[test]
fn activations_coalesce_while_one_waits() {
    let item = |k: &str| ActivationItem::ManagerFailed {
        key: k.into(),
        error: "x".into(),
    };
    let c = activate(
        None,
        None,
        "p",
        "project-mgr-p",
        Some("e"),
        "main",
        item("a"),
        at(0),
    );
    let Change::Insert { row: first, .. } = &c else {
        panic!("{c:?}")
    };
    assert_eq!(
        (first.origin, first.branch.as_str(), first.epic.as_deref()),
        (Origin::Engine, "main", Some("e"))
    );
    assert_eq!(first.context.len(), 1);
    let c = activate(
        Some(first),
        Some(&first.key),
        "p",
        "project-mgr-p",
        Some("e"),
        "main",
        item("b"),
        at(1),
    );
    let (new, kinds) = updated(&c);
    assert_eq!((new.context.len(), kinds), (2, vec![EventKind::Coalesced]));
}

#[test]
fn activation_keys_made_in_one_millisecond_differ() {
    let now = Utc.timestamp_millis_opt(1_800_000_000_123).unwrap();
    let a = next_activation_key(now, None);
    assert_eq!(a.as_str(), "activation-20270115-080000-123");
    let b = next_activation_key(now, Some(a.as_str()));
    let c = next_activation_key(now, Some(b.as_str()));
    assert_eq!(
        (b.as_str(), c.as_str()),
        (
            "activation-20270115-080000-123-2",
            "activation-20270115-080000-123-3"
        )
    );
    let later = next_activation_key(now + Duration::milliseconds(1), Some(c.as_str()));
    assert_eq!(later.as_str(), "activation-20270115-080000-124");
}

#[test]
fn a_completed_generation_not_reported_yet_still_owes_its_status_file() {
    let new = task("k", "addressee: w\nprompt: changed\n");
    let mut old = row(TaskState::Completed, Origin::File);
    old.report_due = true;
    let Change::Update { row: r, owed, .. } = spec_changed(&old, &new, "c1", at(9)) else {
        panic!("an update")
    };
    let owed = owed.expect("the old generation's status file is owed");
    assert_eq!((owed.generation, r.generation), (2, 3));
    assert_eq!(owed.status, TaskState::Completed);
    let mut reported = row(TaskState::Completed, Origin::File);
    reported.report_due = false;
    let Change::Update { owed, .. } = spec_changed(&reported, &new, "c1", at(9)) else {
        panic!("an update")
    };
    assert_eq!(owed, None, "a reported generation owes nothing");
}

#[test]
fn reviews_and_failed_checks_merge_into_one_pending_item_and_are_not_reacted_to_twice() {
    use crate::model::green::{FailedCheck, ReviewComment};
    let comment = |id: u64| ReviewComment {
        id,
        path: "src/a.rs".into(),
        line: Some(id),
        diff_hunk: "@@ -1 +1 @@".into(),
        body: format!("comment {id}"),
    };
    let review = |comments: Vec<ReviewComment>| ActivationItem::Review {
        pull_request: 7,
        branch: "swarm/a".into(),
        task: Some("a".into()),
        review_id: 9,
        author: "ann".into(),
        state: "changes_requested".into(),
        body: "no".into(),
        comments,
    };
    let none = Reacted::default();
    let react_to = |pending: Option<&TaskRow>, item, reacted: &Reacted| {
        react(
            pending,
            None,
            "p",
            "project-mgr-p",
            None,
            "main",
            item,
            reacted,
            3,
            at(0),
        )
    };
    let c = react_to(None, review(vec![comment(1)]), &none);
    let Change::Insert { row: first, .. } = &c else {
        panic!("{c:?}")
    };
    // A later delivery of the same review adds its missing comment; one it has adds nothing.
    let c = react_to(Some(first), review(vec![comment(2)]), &none);
    let (merged, kinds) = updated(&c);
    assert_eq!(kinds, [EventKind::Coalesced]);
    assert!(
        matches!(&merged.context[..], [ActivationItem::Review { comments, .. }] if comments.len() == 2),
        "{:?}",
        merged.context
    );
    assert_eq!(
        react_to(Some(merged), review(vec![comment(1)]), &none),
        Change::None
    );
    // A review reacted to before, no longer pending: nothing.
    let seen = Reacted {
        refs: vec!["review:9".into()],
        rounds: vec![],
    };
    assert_eq!(
        react_to(None, review(vec![comment(3)]), &seen),
        Change::None
    );

    // Failed checks: numbered by the branch's failed commits; a check seen before is dropped.
    let check = |id: &str| FailedCheck {
        id: id.into(),
        name: id.into(),
        conclusion: "failure".into(),
        details_url: None,
        log: None,
    };
    let failed = |sha: &str, checks| ActivationItem::CiFailed {
        branch: "swarm/a".into(),
        task: Some("a".into()),
        sha: sha.into(),
        round: 0,
        max_rounds: 0,
        checks,
    };
    let reacted = Reacted {
        refs: vec![
            "s1/check:1".into(),
            "s2/check:1".into(),
            "s3/check:1".into(),
        ],
        rounds: vec!["s1".into(), "s2".into(), "s3".into()],
    };
    let c = react_to(None, failed("s4", vec![check("check:1")]), &reacted);
    let Change::Insert { row, .. } = &c else {
        panic!("{c:?}")
    };
    assert!(
        matches!(
            &row.context[..],
            [ActivationItem::CiFailed {
                round: 4,
                max_rounds: 3,
                ..
            }]
        ),
        "{:?}",
        row.context
    );
    assert!(crate::model::green::render(&row.context).contains("cap of 3 fix rounds is reached"));
    assert_eq!(
        react_to(None, failed("s2", vec![check("check:1")]), &reacted),
        Change::None,
        "a redelivery"
    );
    let c = react_to(
        None,
        failed("s2", vec![check("check:1"), check("check:2")]),
        &reacted,
    );
    let Change::Insert { row, .. } = &c else {
        panic!("{c:?}")
    };
    assert!(
        matches!(&row.context[..], [ActivationItem::CiFailed { round: 2, checks, .. }] if checks.len() == 1 && checks[0].id == "check:2"),
        "another check of a commit seen before keeps its round: {:?}",
        row.context
    );
}

#[test]
fn a_file_whose_status_file_holds_another_spec_runs_as_the_next_generation() {
    // (generation in the status file, generation that runs)
    for (held, runs) in [(0, 1), (1, 2), (3, 4)] {
        let mut status = status_of(&row(TaskState::Completed, Origin::File));
        status.generation = held;
        let c = created_after(
            "p",
            task("k", "addressee: w\nprompt: another spec\n"),
            &status,
            "c1",
            at(5),
        );
        let Change::Insert { row, events } = &c else {
            panic!("expected an insert, got {c:?}");
        };
        assert_eq!((row.generation, row.state()), (runs, TaskState::Pending));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, EventKind::NewGeneration);
        assert!(
            events[0].message.contains(&format!(
                "holds generation {held} of another spec, so generation {runs} runs"
            )),
            "{}",
            events[0].message
        );
    }
}

#[test]
fn a_change_shows_its_row_and_events() {
    let inserted = created("p", task("k", "addressee: w\nprompt: p\n"), "c1", at(0));
    assert_eq!(inserted.row().map(|r| r.key.as_str()), Some("k"));
    assert_eq!(inserted.events().len(), 1);
    let pending = row(TaskState::Pending, Origin::File);
    let updated = Change::update(
        pending.clone(),
        NewEvent::of(&pending, EventKind::Claimed, "claimed"),
    );
    assert_eq!(updated.row(), Some(&pending));
    assert_eq!(updated.events().len(), 1);
    let deleted = Change::Delete {
        id: 42,
        events: Vec::new(),
    };
    assert_eq!(deleted.row(), None);
    assert_eq!(Change::None.row(), None);
    assert!(Change::None.events().is_empty() && Change::None.is_none());
}

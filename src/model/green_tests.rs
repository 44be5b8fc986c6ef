//! The activation items' bookkeeping, table by table: which deliveries are about the same
//! subject (one review, one failed commit of a branch), what merging a later one adds, and the
//! manager's addressee. Found missing by cargo-mutants (README section 11).

use super::*;
use crate::model::task::TaskRow;

fn comment(id: u64) -> ReviewComment {
    ReviewComment {
        id,
        path: "src/lib.rs".into(),
        line: Some(id),
        diff_hunk: "@@ -1 +1 @@\n+x".into(),
        body: format!("comment {id}"),
    }
}

fn review(review_id: u64, comments: &[u64]) -> ActivationItem {
    ActivationItem::Review {
        pull_request: 7,
        branch: "swarm/a".into(),
        task: Some("a".into()),
        review_id,
        author: "ann".into(),
        state: "changes_requested".into(),
        body: String::new(),
        comments: comments.iter().map(|&id| comment(id)).collect(),
    }
}

fn check(id: &str) -> FailedCheck {
    FailedCheck {
        id: id.into(),
        name: id.into(),
        conclusion: "failure".into(),
        details_url: None,
        log: None,
    }
}

fn ci(branch: &str, sha: &str, checks: &[&str]) -> ActivationItem {
    ActivationItem::CiFailed {
        branch: branch.into(),
        task: None,
        sha: sha.into(),
        round: 1,
        max_rounds: 3,
        checks: checks.iter().map(|&id| check(id)).collect(),
    }
}

fn ids(item: &ActivationItem) -> Vec<String> {
    match item {
        ActivationItem::Review { comments, .. } => {
            comments.iter().map(|c| c.id.to_string()).collect()
        }
        ActivationItem::CiFailed { checks, .. } => checks.iter().map(|c| c.id.clone()).collect(),
        _ => Vec::new(),
    }
}

#[test]
fn the_managers_addressee_is_named_after_its_project() {
    assert_eq!(manager_addressee("webapp"), "project-mgr-webapp");
}

#[test]
fn a_review_or_a_failed_commit_is_one_subject_and_nothing_else_is() {
    let plan = ActivationItem::ManagerFailed {
        key: "m".into(),
        error: "e".into(),
    };
    // (a, b, same subject)
    let table = [
        (review(1, &[]), review(1, &[5]), true),
        (review(1, &[]), review(2, &[]), false),
        (
            ci("swarm/a", "abc", &[]),
            ci("swarm/a", "abc", &["x"]),
            true,
        ),
        (ci("swarm/a", "abc", &[]), ci("swarm/b", "abc", &[]), false),
        (ci("swarm/a", "abc", &[]), ci("swarm/a", "def", &[]), false),
        (ci("swarm/a", "abc", &[]), ci("swarm/b", "def", &[]), false),
        (review(1, &[]), ci("swarm/a", "abc", &[]), false),
        (plan.clone(), plan, false),
    ];
    for (a, b, same) in table {
        assert_eq!(a.same_subject(&b), same, "{a:?} / {b:?}");
        assert_eq!(b.same_subject(&a), same, "{b:?} / {a:?}");
    }
}

#[test]
fn merging_adds_only_what_is_new_and_says_whether_it_did() {
    // (into, from, added, ids after)
    let table = [
        (review(1, &[5]), review(1, &[5, 6]), true, vec!["5", "6"]),
        (review(1, &[5, 6]), review(1, &[6]), false, vec!["5", "6"]),
        (
            ci("b", "s", &["c:1"]),
            ci("b", "s", &["c:1", "c:2"]),
            true,
            vec!["c:1", "c:2"],
        ),
        (
            ci("b", "s", &["c:1", "c:2"]),
            ci("b", "s", &["c:2"]),
            false,
            vec!["c:1", "c:2"],
        ),
        (ci("b", "s", &[]), ci("b", "s", &[]), false, vec![]),
        (ci("b", "s", &["c:1"]), review(1, &[5]), false, vec!["c:1"]),
    ];
    for (mut into, from, added, after) in table {
        assert_eq!(into.merge(&from), added, "{into:?} <- {from:?}");
        assert_eq!(ids(&into), after, "{into:?}");
    }
}

#[test]
fn a_review_without_comments_on_the_diff_shows_no_comment_section() {
    let text = render(&[review(1, &[])]);
    assert!(!text.contains("comment(s) on the diff"), "{text}");
    let text = render(&[review(1, &[5, 6])]);
    assert!(text.contains("### 2 comment(s) on the diff"), "{text}");
}

#[test]
fn the_ci_prompt_says_when_the_cap_of_fix_rounds_is_reached() {
    // (round, max_rounds, the cap is reached)
    for (round, max, capped) in [(1, 3, false), (3, 3, false), (4, 3, true), (2, 1, true)] {
        let mut item = ci("swarm/a", "abc", &["c:1"]);
        if let ActivationItem::CiFailed {
            round: r,
            max_rounds: m,
            ..
        } = &mut item
        {
            (*r, *m) = (round, max);
        }
        let text = render(&[item]);
        let heading = format!("fix round {round} of {max})");
        assert_eq!(text.contains(&heading), !capped, "{round}/{max}: {text}");
        assert_eq!(
            text.contains(&format!("the cap of {max} fix rounds is reached")),
            capped,
            "{round}/{max}: {text}"
        );
        assert_eq!(text.contains("Give up on this step"), capped, "{text}");
        assert_eq!(text.contains("Decide the fix"), !capped, "{text}");
    }
}

#[test]
fn the_caps_default_to_the_readmes_numbers() {
    // README section 9, `[epics]`.
    let want = EpicCaps {
        max_tasks: 50,
        max_consecutive_failures: 3,
        max_activations: 60,
        max_spend_usd: 25.0,
    };
    assert_eq!(EpicCaps::default(), want);
    let read: EpicCaps = serde_json::from_str("{}").unwrap();
    assert_eq!(read, want);
}

#[test]
fn epic_states_are_stored_by_name_and_an_unknown_one_is_an_error() {
    for state in [EpicState::Active, EpicState::Complete, EpicState::Failed] {
        let name = state.as_str();
        assert_eq!(
            serde_json::to_value(state).unwrap(),
            serde_json::json!(name)
        );
        assert_eq!(EpicState::try_from(name.to_string()).unwrap(), state);
    }
    let e = EpicState::try_from("paused".to_string()).unwrap_err();
    assert_eq!((e.column, e.value.as_str()), ("epics.state", "paused"));
}

fn epic(state: EpicState) -> EpicRow {
    let at = chrono::TimeZone::timestamp_opt(&Utc, 1_800_000_000, 0).unwrap();
    EpicRow {
        project: "p".into(),
        name: "e".into(),
        state,
        reason: None,
        tasks: 4,
        consecutive_failures: -1,
        activations: 2,
        spend_usd: 1.5,
        created_at: at,
        updated_at: at,
    }
}

#[test]
fn an_epic_row_counts_and_ends_only_once() {
    assert_eq!(
        epic(EpicState::Active).counters(),
        EpicCounters {
            tasks: 4,
            consecutive_failures: 0,
            activations: 2,
            spend_usd: 1.5,
        }
    );
    // (state, failed, is active, the end)
    let table = [
        (
            EpicState::Active,
            None,
            true,
            Some((EpicState::Complete, None)),
        ),
        (
            EpicState::Active,
            Some("tests never pass"),
            true,
            Some((EpicState::Failed, Some("tests never pass".to_string()))),
        ),
        (EpicState::Complete, None, false, None),
        (EpicState::Failed, Some("again"), false, None),
    ];
    for (state, failed, active, end) in table {
        let row = epic(state);
        assert_eq!(row.is_active(), active, "{state:?}");
        assert_eq!(end_epic(&row, failed), end, "{state:?} {failed:?}");
    }
}

#[test]
fn a_run_counts_against_its_epic_by_role_finality_and_success() {
    let ok = RunResult {
        success: true,
        ..RunResult::default()
    };
    let failed = RunResult::failure(ErrorClass::Agent, "no");
    let cancelled = RunResult::failure(ErrorClass::Cancelled, "stopped");
    let retry = |r: &RunResult| Outcome::Retry {
        result: r.clone(),
        not_before: Utc::now(),
        infrastructure: false,
    };
    // (role, outcome, count)
    let table = [
        (
            Role::Manager,
            Outcome::Completed(ok.clone()),
            EpicCount::ManagerRan,
        ),
        (
            Role::Manager,
            Outcome::Completed(failed.clone()),
            EpicCount::ManagerRan,
        ),
        (Role::Manager, retry(&failed), EpicCount::CostOnly),
        (
            Role::Implement,
            Outcome::Completed(ok.clone()),
            EpicCount::WorkerSucceeded,
        ),
        (
            Role::Review,
            Outcome::Completed(failed.clone()),
            EpicCount::WorkerFailed,
        ),
        (
            Role::Implement,
            Outcome::Completed(cancelled),
            EpicCount::CostOnly,
        ),
        (Role::Implement, retry(&failed), EpicCount::CostOnly),
        (Role::Implement, retry(&ok), EpicCount::CostOnly),
    ];
    for (role, outcome, count) in table {
        assert_eq!(epic_count(role, &outcome), count, "{role:?} {outcome:?}");
    }
}

#[test]
fn a_new_task_opens_or_counts_against_its_epic_by_kind() {
    // (kind, epic, change)
    let table = [
        (Some("epic"), Some("e"), Some(EpicChange::Open("e".into()))),
        (
            Some("implement"),
            Some("e"),
            Some(EpicChange::CountTask("e".into())),
        ),
        (None, Some("e"), Some(EpicChange::CountTask("e".into()))),
        (Some("plan"), Some("e"), None),
        (Some("implement"), None, None),
        (Some("epic"), None, None),
    ];
    for (kind, name, change) in table {
        assert_eq!(
            epic_change_of_new_task(kind, name),
            change,
            "{kind:?} {name:?}"
        );
    }
}

fn restored(
    key: &str,
    kind: &str,
    epic: Option<&str>,
    summary: &str,
    cost: f64,
    at: i64,
) -> TaskRow {
    use crate::model::task::{NewTask, Origin};
    let spec = crate::spec::parse_task(
        format!("addressee: w-{key}\nprompt: p\nkind: {kind}\n").as_bytes(),
    )
    .unwrap();
    let t0 = chrono::TimeZone::timestamp_opt(&Utc, 1_800_000_000, 0).unwrap();
    let mut row = NewTask::from_spec(&crate::spec::TaskKey::new(key).unwrap(), &spec).into_row(
        "p",
        Origin::File,
        None,
        t0,
    );
    row.epic = epic.map(str::to_string);
    row.status = crate::spec::TaskState::Completed;
    row.completed_at = Some(t0 + chrono::Duration::seconds(at));
    row.result = Some(RunResult {
        success: true,
        summary: Some(summary.into()),
        cost_usd: Some(cost),
        ..RunResult::default()
    });
    row
}

#[test]
fn epics_are_rebuilt_from_their_tasks_status_files() {
    let rows = [
        // Epic `a`: its own task, a worker and two plan runs; the last plan run ends it.
        restored(
            "a",
            "epic",
            Some("a"),
            "EPIC COMPLETE (the epic's own run)",
            1.0,
            1,
        ),
        restored(
            "a-impl",
            "implement",
            Some("a"),
            "EPIC FAILED: a worker says so",
            2.0,
            2,
        ),
        restored(
            "a-plan-1",
            "plan",
            Some("a"),
            "EPIC FAILED: too early",
            0.5,
            3,
        ),
        restored(
            "a-plan-2",
            "plan",
            Some("a"),
            "all done. EPIC COMPLETE",
            0.25,
            4,
        ),
        // Epic `b`: only its own task, which failed it.
        restored("b", "epic", Some("b"), "EPIC FAILED: no API", 1.0, 5),
        // Epic `c`: a manager run that said nothing: still active.
        restored("c", "epic", Some("c"), "EPIC COMPLETE", 0.0, 6),
        restored("c-plan", "plan", Some("c"), "next: the form", 0.0, 7),
        // No epic: not rebuilt.
        restored("lone", "plan", None, "EPIC FAILED: ignored", 9.0, 8),
    ];
    let refs: Vec<&TaskRow> = rows.iter().collect();
    let got = rebuild_epics(&refs);
    let want = vec![
        EpicRebuild {
            name: "a".into(),
            state: EpicState::Complete,
            reason: None,
            activations: 3,
            spend_usd: 3.75,
        },
        EpicRebuild {
            name: "b".into(),
            state: EpicState::Failed,
            reason: Some("no API".into()),
            activations: 1,
            spend_usd: 1.0,
        },
        EpicRebuild {
            name: "c".into(),
            state: EpicState::Active,
            reason: None,
            activations: 2,
            spend_usd: 0.0,
        },
    ];
    assert_eq!(got, want);
}

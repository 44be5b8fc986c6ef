//! The retry policy, table by table: what `decide` makes of each finished run, with no
//! database. The numbers are the README's (section 8, "Error classes and retries").

use chrono::{Duration, TimeZone, Utc};

use super::*;
use crate::model::task::{NewTask, Origin};
use crate::spec::{parse_task, TaskKey, TaskState};

const BACKOFF_SECS: i64 = 10;

fn now() -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000, 0).unwrap()
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        max_infra_retries: 3,
        backoff: std::time::Duration::from_secs(BACKOFF_SECS as u64),
    }
}

/// A running task with `max_attempts`, in its run number `attempts` of the generation, after
/// `infra` infrastructure retries and `requeues` rate-limit requeues.
fn running(max_attempts: i32, attempts: i32, infra: i32, requeues: i32) -> TaskRow {
    let spec = parse_task(b"addressee: w\nprompt: do it\n").unwrap();
    let mut r = NewTask::from_spec(&TaskKey::new("k").unwrap(), &spec).into_row(
        "p",
        Origin::File,
        Some("c0"),
        now(),
    );
    r.status = TaskState::Running;
    r.max_attempts = max_attempts;
    r.attempts = attempts;
    r.infra_failures = infra;
    r.requeues = requeues;
    r.run_spec_hash = Some(r.spec_hash.clone());
    r
}

fn failed(class: ErrorClass) -> RunResult {
    RunResult::failure(class, "it broke")
}

/// What was decided, in short: "completed", or "retry"/"infra retry"/"requeue" with the wait in
/// seconds.
fn short(o: &Outcome) -> (&'static str, Option<i64>) {
    let wait = |t: &DateTime<Utc>| Some((*t - now()).num_seconds());
    match o {
        Outcome::Completed(_) => ("completed", None),
        Outcome::Retry {
            not_before,
            infrastructure: false,
            ..
        } => ("retry", wait(not_before)),
        Outcome::Retry {
            not_before,
            infrastructure: true,
            ..
        } => ("infra retry", wait(not_before)),
        Outcome::Requeue { not_before, .. } => ("requeue", wait(not_before)),
        Outcome::NextGeneration(_) => ("next generation", None),
        Outcome::Deleted(_) => ("deleted", None),
    }
}

#[test]
fn agent_failures_are_retried_after_the_backoff_until_max_attempts() {
    let b = Some(BACKOFF_SECS);
    // (max_attempts, attempts so far, infrastructure retries, requeues, class, decision)
    let table = [
        (1, 1, 0, 0, ErrorClass::Agent, ("completed", None)),
        (2, 1, 0, 0, ErrorClass::Agent, ("retry", b)),
        (2, 2, 0, 0, ErrorClass::Agent, ("completed", None)),
        (3, 2, 0, 0, ErrorClass::Agent, ("retry", b)),
        (3, 3, 0, 0, ErrorClass::Agent, ("completed", None)),
        // Infrastructure retries and requeues are not attempts: the 4th run is the 2nd attempt.
        (2, 4, 1, 2, ErrorClass::Agent, ("retry", b)),
        (2, 5, 1, 2, ErrorClass::Agent, ("completed", None)),
        // Every class that is not transient counts as an attempt.
        (2, 1, 0, 0, ErrorClass::Timeout, ("retry", b)),
        (2, 1, 0, 0, ErrorClass::MissingCli, ("retry", b)),
        (2, 1, 0, 0, ErrorClass::Auth, ("retry", b)),
        (2, 1, 0, 0, ErrorClass::BillingGuard, ("retry", b)),
        (1, 1, 0, 0, ErrorClass::Timeout, ("completed", None)),
        // A stop is final, attempts left or not.
        (5, 1, 0, 0, ErrorClass::Cancelled, ("completed", None)),
    ];
    for (max, attempts, infra, requeues, class, want) in table {
        let row = running(max, attempts, infra, requeues);
        let got = decide(&row, failed(class), &policy(), now());
        assert_eq!(
            short(&got),
            want,
            "max_attempts {max}, run {attempts} ({infra} infra, {requeues} requeues), {class:?}"
        );
        if let Outcome::Completed(r) = &got {
            assert_eq!(r.error.as_deref(), Some("it broke"), "the result is kept");
        }
    }
}

#[test]
fn infrastructure_failures_back_off_doubling_up_to_their_cap() {
    // (infrastructure retries so far, decision): 10 s, doubling, at most 32 times 10 s.
    let table = [
        (0, ("infra retry", Some(10))),
        (1, ("infra retry", Some(20))),
        (2, ("infra retry", Some(40))),
        (3, ("infra retry", Some(80))),
        (4, ("infra retry", Some(160))),
        (5, ("infra retry", Some(320))),
        (6, ("infra retry", Some(320))),
        (9, ("infra retry", Some(320))),
        (10, ("completed", None)),
    ];
    let many = RetryPolicy {
        max_infra_retries: 10,
        ..policy()
    };
    for class in [
        ErrorClass::Crash,
        ErrorClass::Git,
        ErrorClass::Infrastructure,
    ] {
        for (infra, want) in table {
            // max_attempts 1 and its one attempt used: infrastructure retries do not need it.
            let row = running(1, infra + 1, infra, 0);
            let got = decide(&row, failed(class), &many, now());
            assert_eq!(short(&got), want, "{class:?} after {infra} retries");
        }
    }
    // The default cap: 3 retries, the 4th failure is final.
    for (infra, want) in [(2, ("infra retry", Some(40))), (3, ("completed", None))] {
        let got = decide(
            &running(1, infra + 1, infra, 0),
            failed(ErrorClass::Crash),
            &policy(),
            now(),
        );
        assert_eq!(
            short(&got),
            want,
            "max_infra_retries 3, after {infra} retries"
        );
    }
}

#[test]
fn rate_limits_requeue_until_the_reset_within_a_week_or_back_off_and_give_up_after_twenty() {
    let limited = |reset: Option<DateTime<Utc>>| RunResult {
        rate_limit_reset: reset,
        ..failed(ErrorClass::RateLimit)
    };
    let hours = |h: i64| Some(now() + Duration::hours(h));
    let week = Duration::days(7).num_seconds();
    // (requeues so far, the provider's reset, decision)
    let table = [
        // The reset time, when it lies ahead within 7 days.
        (0, hours(1), ("requeue", Some(3600))),
        (5, hours(24 * 7 - 1), ("requeue", Some(week - 3600))),
        // Otherwise the backoff, doubling with each requeue, at most 32 times.
        (0, None, ("requeue", Some(10))),
        (1, None, ("requeue", Some(20))),
        (5, None, ("requeue", Some(320))),
        (19, None, ("requeue", Some(320))),
        (0, hours(-1), ("requeue", Some(10))),
        (0, Some(now()), ("requeue", Some(10))),
        (0, hours(24 * 7), ("requeue", Some(10))),
        (2, hours(24 * 30), ("requeue", Some(40))),
        // The 21st rate-limited run of a generation is final.
        (20, hours(1), ("completed", None)),
        (20, None, ("completed", None)),
    ];
    for (requeues, reset, want) in table {
        // Attempts and infrastructure retries used up: a requeue needs neither.
        let row = running(1, requeues + 4, 3, requeues);
        let got = decide(&row, limited(reset), &policy(), now());
        assert_eq!(
            short(&got),
            want,
            "after {requeues} requeues, reset {reset:?}"
        );
    }
    let Outcome::Completed(r) = decide(&running(1, 21, 0, 20), limited(None), &policy(), now())
    else {
        unreachable!()
    };
    assert_eq!(
        (r.error_class, r.error.as_deref()),
        (
            Some(ErrorClass::RateLimit),
            Some("it broke (gave up after 20 rate-limited runs)")
        )
    );
    assert_eq!(MAX_REQUEUES, 20);
}

#[test]
fn success_a_changed_spec_and_a_deleted_file_come_first() {
    let ok = RunResult {
        success: true,
        ..RunResult::default()
    };
    let mut changed = running(3, 1, 0, 0);
    changed.spec_hash = "another spec".into();
    let mut deleted = changed.clone();
    deleted.file_deleted = true;
    // (row, result, decision)
    let table = [
        (running(1, 1, 0, 0), ok.clone(), "completed"),
        (changed.clone(), ok.clone(), "next generation"),
        (changed, failed(ErrorClass::Crash), "next generation"),
        (deleted.clone(), ok, "deleted"),
        (deleted, failed(ErrorClass::RateLimit), "deleted"),
    ];
    for (row, result, want) in table {
        let got = decide(&row, result, &policy(), now());
        assert_eq!(short(&got).0, want, "{got:?}");
    }
}

#[test]
fn each_outcome_is_recorded_counted_and_final_as_the_readme_says() {
    let at = now() + Duration::seconds(30);
    let ok = RunResult {
        success: true,
        summary: Some("did it".into()),
        ..RunResult::default()
    };
    let unclassified = RunResult {
        success: false,
        summary: Some("no error text, a summary".into()),
        ..RunResult::default()
    };
    let t = at.to_rfc3339();
    // (outcome, event kind, event text, metric label of swarm_runs_total, final)
    let table = [
        (
            Outcome::Completed(ok.clone()),
            EventKind::Completed,
            "attempt 2 succeeded".to_string(),
            "succeeded",
            true,
        ),
        (
            Outcome::Completed(failed(ErrorClass::Timeout)),
            EventKind::Completed,
            "attempt 2 failed (timeout): it broke".into(),
            "timeout",
            true,
        ),
        (
            Outcome::Completed(unclassified.clone()),
            EventKind::Completed,
            "attempt 2 failed (error): no error text, a summary".into(),
            "failed",
            true,
        ),
        (
            Outcome::Retry {
                result: failed(ErrorClass::Agent),
                not_before: at,
                infrastructure: false,
            },
            EventKind::Retry,
            format!("attempt 2 failed (agent): it broke; retrying after {t}"),
            "retried",
            false,
        ),
        (
            Outcome::Retry {
                result: failed(ErrorClass::Crash),
                not_before: at,
                infrastructure: true,
            },
            EventKind::Retry,
            format!("attempt 2 failed (crash, infrastructure): it broke; retrying after {t}"),
            "retried",
            false,
        ),
        (
            Outcome::Requeue {
                result: failed(ErrorClass::RateLimit),
                not_before: at,
            },
            EventKind::Requeued,
            format!(
                "rate or usage limit: it broke; back in the queue after {t} (not counted as an attempt)"
            ),
            "rate_limited",
            false,
        ),
        (
            Outcome::NextGeneration(ok.clone()),
            EventKind::NextGeneration,
            "attempt 2 ended; the spec changed meanwhile and runs again".into(),
            "superseded",
            false,
        ),
        (
            Outcome::Deleted(failed(ErrorClass::Cancelled)),
            EventKind::Removed,
            "run ended; task file was deleted".into(),
            "deleted",
            false,
        ),
    ];
    for (outcome, kind, text, label, is_final) in table {
        assert_eq!(outcome.describe(2), (kind, text), "{outcome:?}");
        assert_eq!(outcome.label(), label, "{outcome:?}");
        assert_eq!(outcome.is_final(), is_final, "{outcome:?}");
        let summary = outcome.result().summary.clone();
        let error = outcome.result().error.clone();
        assert!(
            summary.is_some() || error.as_deref() == Some("it broke"),
            "result() is the run's own: {outcome:?}"
        );
    }
}

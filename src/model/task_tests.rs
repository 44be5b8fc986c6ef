//! A task row's columns and read models, table by table: the columns that read back, what a
//! claim may take, the run name and the words shown for a task's state, with no database. Found
//! missing by cargo-mutants (README section 11).

use std::collections::HashMap;

use chrono::{TimeZone, Utc};

use super::*;
use crate::spec::{parse_task, ErrorClass, TaskKey};

/// Row `id`: a pending task `key` of `project` for the addressee `<key>-worker`, whose file
/// says `prompt: p` and then `yaml`.
fn row(id: i64, project: &str, key: &str, yaml: &str) -> TaskRow {
    let spec =
        parse_task(format!("addressee: {key}-worker\nprompt: p\n{yaml}").as_bytes()).unwrap();
    let mut r = NewTask::from_spec(&TaskKey::new(key).unwrap(), &spec).into_row(
        project,
        Origin::File,
        Some("c0"),
        Utc.timestamp_opt(1_800_000_000, 0).unwrap(),
    );
    r.id = id;
    r
}

#[test]
fn origins_and_states_read_back_from_their_columns_and_other_values_are_named() {
    for (origin, column) in [(Origin::File, "file"), (Origin::Engine, "engine")] {
        assert_eq!(origin.as_str(), column);
        assert_eq!(Origin::try_from(column.to_string()), Ok(origin));
    }
    assert_eq!(
        Origin::try_from("git".to_string()).unwrap_err().to_string(),
        "column tasks.origin holds \"git\", which is not one of file, engine"
    );
    for state in [TaskState::Pending, TaskState::Running, TaskState::Completed] {
        assert_eq!(status_from_column(state.as_str().to_string()), Ok(state));
    }
    assert_eq!(
        status_from_column("blocked".to_string())
            .unwrap_err()
            .to_string(),
        "column tasks.status holds \"blocked\", which is not one of pending, running, completed"
    );
}

/// Limits of 3 at once over all projects, 2 per project, batches of 10.
fn limits() -> ClaimLimits {
    ClaimLimits {
        max_running: 3,
        max_running_per_project: 2,
        batch: 10,
        default_agent: "claude".into(),
        ..ClaimLimits::default()
    }
}

#[test]
fn a_claim_takes_heads_in_order_within_every_limit_and_skips_those_that_wait() {
    const MERGE: &str = "kind: merge\n";
    // (what the case shows, what it changes in the limits, the heads as (project, the rest of
    // the task file), running per project, the heads chosen)
    type Case = (
        &'static str,
        fn(&mut ClaimLimits),
        Vec<(&'static str, &'static str)>,
        Vec<(&'static str, u32)>,
        Vec<usize>,
    );
    let cases: Vec<Case> = vec![
        (
            "nothing runs",
            |_| {},
            vec![("web", ""), ("api", "")],
            vec![],
            vec![0, 1],
        ),
        (
            "two per project",
            |_| {},
            vec![("web", ""), ("web", ""), ("web", ""), ("api", "")],
            vec![],
            vec![0, 1, 3],
        ),
        (
            "one runs in web",
            |_| {},
            vec![("web", ""), ("web", ""), ("api", "")],
            vec![("web", 1)],
            vec![0, 2],
        ),
        (
            "three at once over all projects",
            |_| {},
            vec![("web", ""), ("api", ""), ("docs", ""), ("ops", "")],
            vec![],
            vec![0, 1, 2],
        ),
        (
            "two run elsewhere: one more",
            |_| {},
            vec![("web", ""), ("api", "")],
            vec![("ops", 2)],
            vec![0],
        ),
        (
            "a batch of one",
            |l| l.batch = 1,
            vec![("web", ""), ("api", "")],
            vec![],
            vec![0],
        ),
        (
            "web may run three, api one",
            |l| {
                l.max_running = 10;
                l.per_project_overrides = HashMap::from([("web".into(), 3), ("api".into(), 1)]);
            },
            vec![
                ("web", ""),
                ("web", ""),
                ("web", ""),
                ("api", ""),
                ("api", ""),
            ],
            vec![],
            vec![0, 1, 2, 3],
        ),
        (
            "the default agent is paused, another is not",
            |l| l.paused_agents = ["claude".to_string()].into(),
            vec![("web", ""), ("api", "agent: codex\n")],
            vec![],
            vec![1],
        ),
        (
            // In the gated project a merge and a task that asks wait (ids 1 and 2), a green
            // merge (id 3) and a task that does not ask do not; nor does a merge elsewhere.
            "gated heads wait until green",
            |l| {
                l.max_running = 10;
                l.max_running_per_project = 10;
                l.gated_projects = ["web".to_string()].into();
                l.green_gates = [3].into();
            },
            vec![
                ("web", MERGE),
                ("web", "requires_checks: true\n"),
                ("web", MERGE),
                ("web", ""),
                ("api", MERGE),
            ],
            vec![],
            vec![2, 3, 4],
        ),
    ];
    for (name, change, specs, running, want) in cases {
        let mut l = limits();
        change(&mut l);
        let heads: Vec<TaskRow> = specs
            .iter()
            .enumerate()
            .map(|(i, (project, yaml))| row(i as i64 + 1, project, &format!("t{i}"), yaml))
            .collect();
        let running = running.iter().map(|(p, n)| (p.to_string(), *n)).collect();
        assert_eq!(l.select(&heads, &running), want, "{name}");
    }
    // A head that is no longer pending is passed over.
    let mut heads = vec![row(1, "web", "a", ""), row(2, "web", "b", "")];
    heads[0].status = TaskState::Running;
    assert_eq!(limits().select(&heads, &HashMap::new()), [1]);
}

#[test]
fn a_row_reads_its_state_result_role_and_run_name_and_describes_its_state() {
    let failed = |class| {
        Some(RunResult {
            error_class: class,
            ..RunResult::default()
        })
    };
    let succeeded = Some(RunResult {
        success: true,
        ..RunResult::default()
    });
    // (status, result, what people see)
    for (status, result, shown) in [
        (TaskState::Pending, None, "pending"),
        (TaskState::Running, None, "running"),
        (TaskState::Completed, succeeded, "completed (succeeded)"),
        (
            TaskState::Completed,
            failed(Some(ErrorClass::Timeout)),
            "completed (failed: timeout)",
        ),
        (
            TaskState::Completed,
            failed(None),
            "completed (failed: error)",
        ),
    ] {
        let mut r = row(1, "web", "a", "kind: review\n");
        r.status = status;
        r.result = result.clone();
        assert_eq!(
            (r.state(), r.result(), r.role(), describe_state(&r).as_str()),
            (status, result.as_ref(), Role::Review, shown)
        );
    }

    let mut r = row(1, "Web App", "a", "");
    r.incarnation = "0a1b".into();
    r.generation = 2;
    r.attempts = 3;
    let name = crate::model::run_name("Web App", "a", "0a1b", 2, 3);
    assert_eq!(r.run_name(), name);
    let running = RunningRun {
        id: r.id,
        incarnation: r.incarnation.clone(),
        project: r.project.clone(),
        key: r.key.clone(),
        generation: 2,
        attempts: 3,
        cancel_requested: false,
    };
    assert_eq!(running.run_name(), name);
}

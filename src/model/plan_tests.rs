//! A database rebuilt from the repository, table by table: which status files make a task
//! completed, the next generation or new, and which restore the manager's activations (no
//! task file). Found missing by cargo-mutants (README section 11).

use super::*;
use crate::spec::{parse_task, Addressee, RunResult};

fn file(key: &str, yaml: &str) -> FileChange {
    FileChange {
        path: format!(".ai/tasks/{key}.yaml"),
        content: Some(parse_task(yaml.as_bytes())),
    }
}

fn status(
    key: &str,
    addressee: &str,
    state: TaskState,
    hash: &str,
    epic: Option<&str>,
) -> StatusSpec {
    StatusSpec {
        key: TaskKey::new(key).unwrap(),
        addressee: Addressee::new(addressee).unwrap(),
        status: state,
        generation: 4,
        attempts: 1,
        spec_hash: hash.into(),
        source_commit: None,
        epic: epic.map(str::to_string),
        completed_at: None,
        duration_seconds: None,
        result: Some(RunResult {
            success: true,
            summary: Some("done".into()),
            ..RunResult::default()
        }),
    }
}

fn hash(yaml: &str) -> String {
    parse_task(yaml.as_bytes()).unwrap().hash()
}

/// Each change as `key origin status generation first-event`.
fn describe(plan: &SyncPlan) -> Vec<String> {
    plan.changes
        .iter()
        .map(|c| match c {
            Change::Insert { row, events } => format!(
                "{} {:?} {} g{} {}",
                row.key,
                row.origin,
                row.status.as_str(),
                row.generation,
                events[0].kind
            ),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn a_rebuilt_database_takes_results_from_status_files_whose_spec_matches() {
    let same = "addressee: w1\nprompt: same\n";
    let new = "addressee: w2\nprompt: changed\n";
    let files = [
        file("done", same),
        file("changed", new),
        file("unfinished", same),
        // A new manager run of epic `e`: created, and not counted as a restored activation.
        file("fresh", "addressee: w3\nprompt: p\nkind: plan\nepic: e\n"),
        // A file named like an activation is a task of its own (its status file too).
        file("activation-9", same),
    ];
    let mgr = "project-mgr-p";
    let statuses: HashMap<String, StatusSpec> = [
        status("done", "w1", TaskState::Completed, &hash(same), None),
        status("changed", "w2", TaskState::Completed, &hash(same), None),
        status("unfinished", "w1", TaskState::Pending, &hash(same), None),
        status("activation-9", mgr, TaskState::Completed, &hash(same), None),
        // The manager's activations: restored, without task files.
        status("activation-1", mgr, TaskState::Completed, "h", Some("e")),
        status("activation-4", mgr, TaskState::Completed, "h", Some("e")),
        // Not the manager's, not completed, not an activation's name: not restored.
        status(
            "activation-2",
            "someone-else",
            TaskState::Completed,
            "h",
            None,
        ),
        status("activation-3", mgr, TaskState::Pending, "h", None),
        status("plan-by-hand", mgr, TaskState::Completed, "h", None),
    ]
    .into_iter()
    .map(|s| (s.key.to_string(), s))
    .collect();
    let plan = plan_sync("p", &files, &[], true, &statuses, "c1", Utc::now());
    assert_eq!(
        describe(&plan),
        [
            "done File completed g4 restored",
            "changed File pending g5 new_generation",
            "unfinished File pending g5 new_generation",
            "fresh File pending g1 created",
            "activation-9 File completed g4 restored",
            "activation-1 Engine completed g4 restored",
            "activation-4 Engine completed g4 restored",
        ],
        "{plan:#?}"
    );
    assert!(
        plan.epics
            .iter()
            .any(|e| matches!(e, EpicChange::Rebuilt(r) if r.name == "e" && r.activations == 2)),
        "{:?}",
        plan.epics
    );
}

#[test]
fn an_activation_the_store_already_holds_is_not_restored_again() {
    let mgr = "project-mgr-p";
    let statuses: HashMap<String, StatusSpec> =
        [status("activation-1", mgr, TaskState::Completed, "h", None)]
            .into_iter()
            .map(|s| (s.key.to_string(), s))
            .collect();
    let spec = super::super::green::activation_spec(mgr, None);
    let mut held = NewTask::from_spec(&TaskKey::new("activation-1").unwrap(), &spec).into_row(
        "p",
        Origin::Engine,
        None,
        Utc::now(),
    );
    held.status = TaskState::Completed;
    let plan = plan_sync("p", &[], &[held], true, &statuses, "c1", Utc::now());
    assert_eq!(describe(&plan), Vec::<String>::new(), "{plan:#?}");
}

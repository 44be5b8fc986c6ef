//! The pure middle of a sync: given the task files that changed and what the store holds for
//! them (read under a lock), decide every change. No I/O.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::event::EventKind;
use super::green::{
    activation_spec, epic_change_of_new_task, manager_addressee, rebuild_epics, EpicChange,
};
use super::task::{NewTask, Origin, TaskRow};
use super::transition::{self, Change};
use crate::spec::{
    task_key_of_path, task_path, SpecError, StatusSpec, TaskKey, TaskSpec, TaskState,
};

/// A task file that changed between the last synced commit and the new one.
#[derive(Debug, Clone)]
pub struct FileChange {
    /// Path from the repository root, e.g. `.ai/tasks/login.yaml`.
    pub path: String,
    /// The parsed file, or why it does not parse; `None` when the file was deleted.
    pub content: Option<Result<TaskSpec, SpecError>>,
}

/// Everything one sync pass changes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncPlan {
    /// One change per task that changed (never [`Change::None`]).
    pub changes: Vec<Change>,
    /// Epics opened or counted by new tasks.
    pub epics: Vec<EpicChange>,
    /// Bad files with their errors (they replace the previous error of the same path).
    pub errors: Vec<(String, SpecError)>,
    /// Paths whose previous error no longer applies.
    pub cleared_errors: Vec<String>,
}

/// Decides what a set of changed files means for `project`'s tasks. `observed` holds the
/// store's rows of the changed keys; with `full` (no usable previous commit: a first sync, or
/// a lost cache) `changes` is the whole tree and `observed` every task of the project, so a
/// task whose file is gone is deleted. A bad file never affects the others, and never removes
/// or changes the task it used to describe: the last good spec stays until the file is fixed.
///
/// `statuses` (read on a full sync) are the status files of the tree, by key: a key the store
/// does not know is rebuilt from its status file ([`transition::restored`]: completed with the
/// same spec, so it does not run again; [`transition::created_after`]: the next generation of
/// a changed spec), and so are the project manager's activations, which have no task file.
pub fn plan_sync(
    project: &str,
    changes: &[FileChange],
    observed: &[TaskRow],
    full: bool,
    statuses: &HashMap<String, StatusSpec>,
    commit: &str,
    now: DateTime<Utc>,
) -> SyncPlan {
    let rows: HashMap<&str, &TaskRow> = observed.iter().map(|r| (r.key.as_str(), r)).collect();
    let mut plan = SyncPlan::default();
    let mut missing: Vec<FileChange> = Vec::new();
    if full {
        let present: HashSet<&str> = changes.iter().map(|c| c.path.as_str()).collect();
        missing = observed
            .iter()
            .filter(|r| r.origin == Origin::File)
            .filter_map(|r| TaskKey::new(&r.key).ok())
            .map(|k| task_path(&k))
            .filter(|p| !present.contains(p.as_str()))
            .map(|path| FileChange {
                path,
                content: None,
            })
            .collect();
    }
    for change in changes.iter().chain(&missing) {
        let key = match task_key_of_path(&change.path) {
            None => continue,
            Some(Err(message)) => {
                if change.content.is_some() {
                    plan.errors
                        .push((change.path.clone(), SpecError::whole_file(message)));
                } else {
                    plan.cleared_errors.push(change.path.clone());
                }
                continue;
            }
            Some(Ok(key)) => key,
        };
        let seen = rows.get(key.as_str()).copied();
        if seen.is_some_and(|r| r.origin == Origin::Engine) {
            // Engine-made tasks are not described by files: a file of the same name is refused
            // rather than allowed to take one over.
            if change.content.is_some() {
                plan.errors.push((
                    change.path.clone(),
                    SpecError::whole_file(format!(
                        "{key} names a task the engine made (a project-manager activation); rename the file"
                    )),
                ));
            }
            continue;
        }
        let decided = match (&change.content, seen) {
            (None, None) => {
                plan.cleared_errors.push(change.path.clone());
                continue;
            }
            (None, Some(row)) => {
                plan.cleared_errors.push(change.path.clone());
                transition::file_deleted(row, commit, now)
            }
            (Some(Err(e)), _) => {
                plan.errors.push((change.path.clone(), e.clone()));
                continue;
            }
            (Some(Ok(spec)), seen) => {
                plan.cleared_errors.push(change.path.clone());
                let task = NewTask::from_spec(&key, spec);
                match seen {
                    None => {
                        plan.epics.extend(epic_change_of_new_task(
                            task.kind.as_deref(),
                            task.epic.as_deref(),
                        ));
                        match statuses.get(key.as_str()) {
                            Some(st)
                                if st.status == TaskState::Completed
                                    && st.spec_hash == task.spec_hash =>
                            {
                                transition::restored(project, task, Origin::File, st, commit, now)
                            }
                            Some(st) => transition::created_after(project, task, st, commit, now),
                            None => transition::created(project, task, commit, now),
                        }
                    }
                    Some(row) => transition::spec_changed(row, &task, commit, now),
                }
            }
        };
        if !decided.is_none() {
            plan.changes.push(decided);
        }
    }
    if !statuses.is_empty() {
        restore_engine_tasks(project, changes, &rows, statuses, commit, now, &mut plan);
    }
    // Two files of kind `epic` naming one epic open it once; an epic opens before the tasks
    // of the same commit count against it, whatever their names' order.
    let mut opened = HashSet::new();
    plan.epics
        .retain(|e| !matches!(e, EpicChange::Open(name) if !opened.insert(name.clone())));
    plan.epics.sort_by_key(|e| match e {
        EpicChange::Open(_) => 0,
        EpicChange::CountTask(_) => 1,
        EpicChange::Rebuilt(_) => 2,
    });
    plan
}

/// The project manager's activations of a rebuilt database: engine-made, so without task
/// files, but with status files. Then the epics, from everything restored.
fn restore_engine_tasks(
    project: &str,
    changes: &[FileChange],
    rows: &HashMap<&str, &TaskRow>,
    statuses: &HashMap<String, StatusSpec>,
    commit: &str,
    now: DateTime<Utc>,
    plan: &mut SyncPlan,
) {
    let in_tree: HashSet<String> = changes
        .iter()
        .filter_map(|c| task_key_of_path(&c.path).and_then(Result::ok))
        .map(|k| k.to_string())
        .collect();
    let manager = manager_addressee(project);
    let mut keys: Vec<&String> = statuses.keys().collect();
    keys.sort();
    for key in keys {
        let st = &statuses[key];
        let engine_made = key.starts_with("activation-")
            && st.addressee.as_str() == manager
            && st.status == TaskState::Completed;
        if !engine_made || in_tree.contains(key) || rows.contains_key(key.as_str()) {
            continue;
        }
        let spec = activation_spec(&manager, st.epic.as_deref());
        let task = NewTask::from_spec(&st.key, &spec);
        plan.changes.push(transition::restored(
            project,
            task,
            Origin::Engine,
            st,
            commit,
            now,
        ));
    }
    let restored: Vec<&TaskRow> = plan
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::Insert { row, events }
                if events.iter().any(|e| e.kind == EventKind::Restored) =>
            {
                Some(row)
            }
            _ => None,
        })
        .collect();
    plan.epics.extend(
        rebuild_epics(&restored)
            .into_iter()
            .map(EpicChange::Rebuilt),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EventKind;
    use crate::spec::{parse_task, TaskState};

    fn file(key: &str, yaml: Option<&str>) -> FileChange {
        FileChange {
            path: format!(".ai/tasks/{key}.yaml"),
            content: yaml.map(|y| parse_task(y.as_bytes())),
        }
    }

    fn seen(key: &str, state: TaskState, yaml: &str) -> TaskRow {
        let spec = parse_task(yaml.as_bytes()).unwrap();
        let mut row = NewTask::from_spec(&TaskKey::new(key).unwrap(), &spec).into_row(
            "p",
            Origin::File,
            Some("c0"),
            Utc::now(),
        );
        row.status = state;
        row.generation = 3;
        row.id = 7;
        row
    }

    fn describe(c: &Change) -> String {
        match c {
            Change::Insert { row, .. } => format!("create {}", row.key),
            Change::Update { row, events, .. } => {
                format!("{} {} g{}", events[0].kind, row.key, row.generation)
            }
            Change::Delete { events, .. } => format!("{} {}", events[0].kind, events[0].key),
            Change::None => "none".into(),
        }
    }

    #[test]
    fn gitops_semantics() {
        let a = "addressee: w\nprompt: a\n";
        let b = "addressee: w\nprompt: b\n";
        let observed = vec![
            seen("pend", TaskState::Pending, a),
            seen("done", TaskState::Completed, a),
            seen("run", TaskState::Running, a),
            seen("same", TaskState::Completed, a),
            seen("gone-run", TaskState::Running, a),
            seen("gone-pend", TaskState::Pending, a),
            seen("broken", TaskState::Pending, a),
        ];
        let changes = vec![
            file("new", Some(a)),
            file("pend", Some(b)),
            file("done", Some(b)),
            file("run", Some(b)),
            file("same", Some(a)),
            file("gone-run", None),
            file("gone-pend", None),
            file("broken", Some("addressee: w\nprompt: b\nbogus: 1\n")),
            FileChange {
                path: ".ai/tasks/Bad Name.yaml".into(),
                content: Some(parse_task(a.as_bytes())),
            },
        ];
        let plan = plan_sync(
            "p",
            &changes,
            &observed,
            false,
            &HashMap::new(),
            "c1",
            Utc::now(),
        );
        let kinds: Vec<String> = plan.changes.iter().map(describe).collect();
        assert_eq!(
            kinds,
            [
                "create new",
                "updated pend g3",
                "new_generation done g4",
                "updated run g3",
                "stop_requested gone-run g3",
                "removed gone-pend"
            ]
        );
        let bad: Vec<(&str, u64)> = plan
            .errors
            .iter()
            .map(|(p, e)| (p.as_str(), e.line))
            .collect();
        assert_eq!(
            bad,
            [(".ai/tasks/broken.yaml", 3), (".ai/tasks/Bad Name.yaml", 1)]
        );
        assert!(!plan
            .cleared_errors
            .contains(&".ai/tasks/broken.yaml".to_string()));
        assert!(plan
            .cleared_errors
            .contains(&".ai/tasks/new.yaml".to_string()));
    }

    #[test]
    fn a_full_sync_deletes_what_the_tree_lacks_but_not_engine_tasks() {
        let a = "addressee: w\nprompt: a\n";
        let mut activation = seen("activation-1", TaskState::Pending, a);
        activation.origin = Origin::Engine;
        let observed = vec![
            seen("kept", TaskState::Completed, a),
            seen("gone", TaskState::Pending, a),
            activation,
        ];
        let plan = plan_sync(
            "p",
            &[file("kept", Some(a))],
            &observed,
            true,
            &HashMap::new(),
            "c1",
            Utc::now(),
        );
        let kinds: Vec<String> = plan.changes.iter().map(describe).collect();
        assert_eq!(kinds, ["removed gone"]);
        assert_eq!(plan.changes[0].events()[0].kind, EventKind::Removed);
    }

    #[test]
    fn new_tasks_open_and_count_their_epic() {
        let changes = vec![
            file(
                "epic-x",
                Some("addressee: project-mgr-p\nprompt: e\nkind: epic\nepic: x\n"),
            ),
            file("impl", Some("addressee: w\nprompt: i\nepic: x\n")),
            file(
                "plan",
                Some("addressee: project-mgr-p\nprompt: p\nkind: plan\nepic: x\n"),
            ),
            file("loose", Some("addressee: w\nprompt: l\n")),
        ];
        let plan = plan_sync("p", &changes, &[], false, &HashMap::new(), "c1", Utc::now());
        assert_eq!(
            plan.epics,
            [
                EpicChange::Open("x".into()),
                EpicChange::CountTask("x".into())
            ]
        );
    }

    #[test]
    fn defaults_fill_the_columns() {
        let spec = parse_task(b"addressee: w\nprompt: p\n").unwrap();
        let t = NewTask::from_spec(&TaskKey::new("login").unwrap(), &spec);
        assert_eq!(
            (
                t.branch.as_str(),
                t.max_attempts,
                t.priority,
                t.timeout_secs
            ),
            ("swarm/login", 1, 0, None)
        );
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod rebuild_tests;

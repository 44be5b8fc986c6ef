//! The pure middle of a sync: given the task files that changed and what the store holds for
//! them, decide what to do. No I/O.

use std::collections::HashMap;

use crate::spec::{task_key_of_path, SpecError, TaskKey, TaskSpec, TaskState};
use crate::store::{NewTask, TaskRow};

/// A task file that changed between the last synced commit and the new one.
#[derive(Debug, Clone)]
pub struct FileChange {
    /// Path from the repository root, e.g. `.ai/tasks/login.yaml`.
    pub path: String,
    /// The parsed file, or why it does not parse; `None` when the file was deleted.
    pub content: Option<Result<TaskSpec, SpecError>>,
}

/// What the store holds about a task, as far as planning cares.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub state: TaskState,
    pub spec_hash: String,
    pub generation: i32,
}

impl From<&TaskRow> for Observed {
    fn from(row: &TaskRow) -> Self {
        Self {
            state: row.state(),
            spec_hash: row.spec_hash.clone(),
            generation: row.generation,
        }
    }
}

/// One change to the store.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncAction {
    /// A new file: a pending task.
    Create(NewTask),
    /// A changed spec. `new_generation` when the task had completed: it runs again.
    Update { task: NewTask, new_generation: bool },
    /// A deleted file of a task that is not running: the task goes away.
    Remove { key: String, generation: i32 },
    /// A deleted file of a running task: stop it.
    Stop { key: String, generation: i32 },
}

/// Everything one sync pass changes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncPlan {
    pub actions: Vec<SyncAction>,
    /// Bad files with their errors (they replace the previous error of the same path).
    pub errors: Vec<(String, SpecError)>,
    /// Paths whose previous error no longer applies.
    pub cleared_errors: Vec<String>,
}

/// Decides what a set of changed files means for the store. A bad file never affects the
/// others, and never removes or changes the task it used to describe: the last good spec
/// stays until the file is fixed.
pub fn plan_sync(changes: &[FileChange], observed: &HashMap<String, Observed>) -> SyncPlan {
    let mut plan = SyncPlan::default();
    for change in changes {
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
        let seen = observed.get(key.as_str());
        match &change.content {
            None => {
                plan.cleared_errors.push(change.path.clone());
                match seen {
                    None => {}
                    Some(o) if o.state == TaskState::Running => {
                        plan.actions.push(SyncAction::Stop {
                            key: key.to_string(),
                            generation: o.generation,
                        })
                    }
                    Some(o) => plan.actions.push(SyncAction::Remove {
                        key: key.to_string(),
                        generation: o.generation,
                    }),
                }
            }
            Some(Err(e)) => plan.errors.push((change.path.clone(), e.clone())),
            Some(Ok(spec)) => {
                plan.cleared_errors.push(change.path.clone());
                let task = new_task(&key, spec);
                match seen {
                    None => plan.actions.push(SyncAction::Create(task)),
                    Some(o) if o.spec_hash == task.spec_hash => {}
                    Some(o) => plan.actions.push(SyncAction::Update {
                        new_generation: o.state == TaskState::Completed,
                        task,
                    }),
                }
            }
        }
    }
    plan
}

/// The store columns of a task file.
pub fn new_task(key: &TaskKey, spec: &TaskSpec) -> NewTask {
    NewTask {
        key: key.to_string(),
        addressee: spec.addressee.to_string(),
        prompt: spec.prompt.as_str().to_string(),
        spec: spec.clone(),
        spec_hash: spec.hash(),
        kind: spec.kind.as_ref().map(ToString::to_string),
        epic: spec.epic.as_ref().map(ToString::to_string),
        agent: spec.agent.as_ref().map(ToString::to_string),
        branch: spec
            .branch
            .as_ref()
            .map_or_else(|| format!("swarm/{key}"), ToString::to_string),
        base: spec.base.as_ref().map(ToString::to_string),
        created_by: spec.created_by.as_ref().map(ToString::to_string),
        priority: spec.priority.map_or(0, |p| p.get()),
        max_attempts: spec.max_attempts.map_or(1, |m| m.get() as i32),
        timeout_secs: spec.timeout.map(|t| t.duration().as_secs() as i64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::parse_task;

    fn file(key: &str, yaml: Option<&str>) -> FileChange {
        FileChange {
            path: format!(".ai/tasks/{key}.yaml"),
            content: yaml.map(|y| parse_task(y.as_bytes())),
        }
    }

    fn seen(state: TaskState, yaml: &str) -> Observed {
        Observed {
            state,
            spec_hash: parse_task(yaml.as_bytes()).unwrap().hash(),
            generation: 3,
        }
    }

    #[test]
    fn gitops_semantics() {
        let a = "addressee: w\nprompt: a\n";
        let b = "addressee: w\nprompt: b\n";
        let observed: HashMap<String, Observed> = [
            ("pend".to_string(), seen(TaskState::Pending, a)),
            ("done".to_string(), seen(TaskState::Completed, a)),
            ("run".to_string(), seen(TaskState::Running, a)),
            ("same".to_string(), seen(TaskState::Completed, a)),
            ("gone-run".to_string(), seen(TaskState::Running, a)),
            ("gone-pend".to_string(), seen(TaskState::Pending, a)),
            ("broken".to_string(), seen(TaskState::Pending, a)),
        ]
        .into_iter()
        .collect();
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
        let plan = plan_sync(&changes, &observed);
        let kinds: Vec<String> = plan
            .actions
            .iter()
            .map(|a| match a {
                SyncAction::Create(t) => format!("create {}", t.key),
                SyncAction::Update {
                    task,
                    new_generation,
                } => format!("update {} {new_generation}", task.key),
                SyncAction::Remove { key, generation } => format!("remove {key} {generation}"),
                SyncAction::Stop { key, generation } => format!("stop {key} {generation}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "create new",
                "update pend false",
                "update done true",
                "update run false",
                "stop gone-run 3",
                "remove gone-pend 3"
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
    fn defaults_fill_the_columns() {
        let spec = parse_task(b"addressee: w\nprompt: p\n").unwrap();
        let t = new_task(&TaskKey::new("login").unwrap(), &spec);
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

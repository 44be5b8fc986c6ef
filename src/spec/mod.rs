//! What lives in git: task files, status files and the plan; parsing and validation. Pure, no I/O
//! except [`validate_repository`], which reads a checkout from disk.

mod ids;
mod result;
mod status;
mod task;
mod validate;
mod yaml;

pub use ids::{Addressee, BranchName, Label, TaskKey};
pub use result::{truncate, ErrorClass, RunResult};
pub use status::{read_status, render_status, StatusSpec, TaskState};
pub use task::{parse_task, MaxAttempts, MergeBranches, Priority, Prompt, TaskSpec, Timeout};
pub use validate::{validate_repository, Problem};
pub use yaml::{SpecError, MAX_FILE_BYTES};

/// Directory of the repository contract, relative to the repository root.
pub const AI_DIR: &str = ".ai";
/// Where task files live.
pub const TASKS_DIR: &str = ".ai/tasks";
/// Where the engine writes status files.
pub const STATUS_DIR: &str = ".ai/status";
/// The project manager's plan.
pub const PLAN_FILE: &str = ".ai/plan.md";

/// The path of the task file for `key`.
pub fn task_path(key: &TaskKey) -> String {
    format!("{TASKS_DIR}/{key}.yaml")
}

/// The path of the status file for `key`.
pub fn status_path(key: &TaskKey) -> String {
    format!("{STATUS_DIR}/{key}.yaml")
}

/// If `path` is a task file (`.ai/tasks/<key>.yaml`), its key, or why the name is not a key.
/// `None` when the path is not under `.ai/tasks/` or not a YAML file at all.
pub fn task_key_of_path(path: &str) -> Option<Result<TaskKey, String>> {
    let name = path.strip_prefix(TASKS_DIR)?.strip_prefix('/')?;
    if name.contains('/') {
        return Some(Err(format!(
            "task files must sit directly in {TASKS_DIR}/, not in a subdirectory"
        )));
    }
    if let Some(stem) = name.strip_suffix(".yml") {
        return Some(Err(format!(
            "task files end in .yaml; rename to {TASKS_DIR}/{stem}.yaml"
        )));
    }
    let stem = name.strip_suffix(".yaml")?;
    Some(TaskKey::new(stem))
}

/// The JSON Schema of task files, generated from [`TaskSpec`]; `schemas/task.schema.json` is
/// this, committed.
pub fn task_schema() -> serde_json::Value {
    with_id(schemars::schema_for!(TaskSpec), "task.schema.json")
}

/// The JSON Schema of status files, generated from [`StatusSpec`].
pub fn status_schema() -> serde_json::Value {
    with_id(schemars::schema_for!(StatusSpec), "status.schema.json")
}

fn with_id(schema: schemars::Schema, name: &str) -> serde_json::Value {
    let mut value = schema.to_value();
    if let Some(obj) = value.as_object_mut() {
        obj.insert(
            "$id".into(),
            format!("urn:coding-swarm:schemas:{name}").into(),
        );
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `tests/it/schema.rs` checks against the files, here as a unit test beside the types
    /// (to update the files: `SWARM_UPDATE_SCHEMAS=1 cargo test --test it schema`).
    #[test]
    fn the_committed_schemas_are_the_generated_ones() {
        for (name, generated, committed) in [
            (
                "task",
                task_schema(),
                include_str!("../../schemas/task.schema.json"),
            ),
            (
                "status",
                status_schema(),
                include_str!("../../schemas/status.schema.json"),
            ),
        ] {
            let committed: serde_json::Value = serde_json::from_str(committed).unwrap();
            assert_eq!(generated, committed, "schemas/{name}.schema.json is stale");
        }
    }

    #[test]
    fn a_key_has_its_task_and_status_paths() {
        let key = TaskKey::new("login-form").unwrap();
        assert_eq!(task_path(&key), ".ai/tasks/login-form.yaml");
        assert_eq!(status_path(&key), ".ai/status/login-form.yaml");
        assert_eq!(task_key_of_path(&task_path(&key)), Some(Ok(key)));
    }
}

//! The published contract: `schemas/*.schema.json` are current (generated from the Rust
//! types), and the Rust parser and the schema agree on every file in `examples/`.

use std::path::{Path, PathBuf};

use coding_swarm::spec::{parse_task, status_schema, task_schema, StatusSpec};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn check_current(name: &str, generated: serde_json::Value) {
    let path = root().join("schemas").join(name);
    let text = serde_json::to_string_pretty(&generated).unwrap() + "\n";
    if std::env::var_os("SWARM_UPDATE_SCHEMAS").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        committed, text,
        "{name} is stale: run SWARM_UPDATE_SCHEMAS=1 cargo test --test it schema"
    );
}

#[test]
fn committed_schemas_are_current() {
    check_current("task.schema.json", task_schema());
    check_current("status.schema.json", status_schema());
}

fn as_json(path: &Path) -> Option<serde_json::Value> {
    serde_saphyr::from_str::<serde_json::Value>(&std::fs::read_to_string(path).unwrap()).ok()
}

#[test]
fn rust_types_and_schemas_agree_on_every_example() {
    let task = jsonschema::validator_for(&task_schema()).unwrap();
    let status = jsonschema::validator_for(&status_schema()).unwrap();
    let files = yaml_files(&root().join("examples"));
    let (mut tasks, mut invalid, mut statuses) = (0, 0, 0);
    for path in files {
        let rel = path.strip_prefix(root()).unwrap().display().to_string();
        let bytes = std::fs::read(&path).unwrap();
        let json = as_json(&path);
        if rel.contains("/.ai/tasks/") || rel.contains("/invalid-tasks/") {
            let expect_valid = !rel.contains("/invalid-tasks/");
            let rust = parse_task(&bytes);
            let schema_ok = json.as_ref().is_some_and(|j| task.is_valid(j));
            assert_eq!(
                rust.is_ok(),
                expect_valid,
                "{rel}: the parser says {rust:?}"
            );
            assert_eq!(
                schema_ok, expect_valid,
                "{rel}: the schema disagrees with the parser"
            );
            if expect_valid {
                tasks += 1
            } else {
                invalid += 1
            }
        } else if rel.contains("/.ai/status/") || rel.contains("/status-files/") {
            let rust = serde_saphyr::from_slice::<StatusSpec>(&bytes);
            assert!(rust.is_ok(), "{rel}: {rust:?}");
            assert!(
                json.as_ref().is_some_and(|j| status.is_valid(j)),
                "{rel}: the status schema rejects it"
            );
            statuses += 1;
        }
    }
    assert!(
        tasks >= 3 && invalid >= 5 && statuses >= 2,
        "examples found: {tasks} tasks, {invalid} invalid, {statuses} statuses"
    );
}

#[test]
fn the_demo_embeds_every_example_file() {
    let dir = root().join("examples/repo-layout");
    let mut on_disk = Vec::new();
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                on_disk.push(p.strip_prefix(&dir).unwrap().display().to_string());
            }
        }
    }
    on_disk.sort();
    let mut embedded: Vec<String> = coding_swarm::demo::EXAMPLE_FILES
        .iter()
        .map(|(p, _)| p.to_string())
        .collect();
    embedded.sort();
    assert_eq!(embedded, on_disk);
    for (path, content) in coding_swarm::demo::EXAMPLE_FILES {
        assert_eq!(std::fs::read_to_string(dir.join(path)).unwrap(), *content);
    }
}

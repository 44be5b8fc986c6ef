//! The order the engine runs the tasks of one addressee that one commit creates: by priority
//! (higher first), then by key (the commit's task files are created in path order, and
//! dispatch takes equal priorities oldest first). Pure; the worker tells the manager this
//! order in its result, so the next activation shows it.

use std::collections::BTreeMap;

use crate::spec::{TaskKey, TaskSpec};

/// The new tasks grouped by addressee (in name order), each group in the order it will run.
pub fn run_order(new: &[(TaskKey, TaskSpec)]) -> Vec<(String, Vec<String>)> {
    let mut groups: BTreeMap<String, Vec<(i32, String)>> = BTreeMap::new();
    for (key, spec) in new {
        groups
            .entry(spec.addressee.as_str().to_string())
            .or_default()
            .push((
                spec.priority.map_or(0, |p| p.get()),
                key.as_str().to_string(),
            ));
    }
    groups
        .into_iter()
        .map(|(addressee, mut tasks)| {
            tasks.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            (addressee, tasks.into_iter().map(|(_, k)| k).collect())
        })
        .collect()
}

/// [`run_order`] as the lines a result's summary ends with; `None` without new tasks.
pub fn describe_run_order(new: &[(TaskKey, TaskSpec)]) -> Option<String> {
    let groups = run_order(new);
    if groups.is_empty() {
        return None;
    }
    let mut text = String::from("New tasks, in the order they will run:");
    for (addressee, keys) in groups {
        text.push_str(&format!("\n- {addressee}: {}", keys.join(", then ")));
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(key: &str, yaml: &str) -> (TaskKey, TaskSpec) {
        (
            TaskKey::new(key).unwrap(),
            crate::spec::parse_task(yaml.as_bytes()).unwrap(),
        )
    }

    #[test]
    fn priority_first_then_key() {
        let new = [
            task("fix", "addressee: w\nprompt: fix it\n"),
            task("add-test", "addressee: w\nprompt: test it\n"),
            task("urgent", "addressee: w\nprompt: now\npriority: 5\n"),
            task("docs", "addressee: d\nprompt: write\n"),
        ];
        assert_eq!(
            run_order(&new),
            [
                ("d".to_string(), vec!["docs".to_string()]),
                (
                    "w".to_string(),
                    vec!["urgent".into(), "add-test".into(), "fix".into()]
                ),
            ]
        );
        assert_eq!(
            describe_run_order(&new).unwrap(),
            "New tasks, in the order they will run:\n- d: docs\n- w: urgent, then add-test, then fix"
        );
        assert_eq!(describe_run_order(&[]), None);
    }
}

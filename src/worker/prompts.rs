//! Role prompts: what an agent is told before its task. Built in for each role, overridable
//! per repository by `.ai/prompts/<role>.md`. Pure apart from reading the override.

use std::path::Path;

/// A role, chosen by the task's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Manager,
    Implement,
    Review,
    Test,
    Merge,
}

impl Role {
    /// `epic`, `plan` and `manager` tasks are the project manager's; `review`, `test` and
    /// `merge` have their own roles; everything else implements.
    pub fn of_kind(kind: Option<&str>) -> Self {
        match kind.unwrap_or("implement") {
            "epic" | "plan" | "manager" => Self::Manager,
            "review" => Self::Review,
            "test" => Self::Test,
            "merge" => Self::Merge,
            _ => Self::Implement,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Manager => "manager",
            Self::Implement => "implement",
            Self::Review => "review",
            Self::Test => "test",
            Self::Merge => "merge",
        }
    }

    pub fn builtin(self) -> &'static str {
        match self {
            Self::Manager => include_str!("../../prompts/manager.md"),
            Self::Implement => include_str!("../../prompts/implement.md"),
            Self::Review => include_str!("../../prompts/review.md"),
            Self::Test => include_str!("../../prompts/test.md"),
            Self::Merge => include_str!("../../prompts/merge.md"),
        }
    }
}

/// The role prompt for `kind` in `checkout`: the repository's override, else the built-in.
pub fn role_prompt(checkout: &Path, kind: Option<&str>) -> String {
    let role = Role::of_kind(kind);
    let custom = checkout
        .join(".ai/prompts")
        .join(format!("{}.md", role.name()));
    match std::fs::read_to_string(custom) {
        Ok(text) if !text.trim().is_empty() => text,
        _ => role.builtin().to_string(),
    }
}

/// The whole prompt an agent gets: its role, then the task.
pub fn compose(role: &str, key: &str, branch: &str, task_prompt: &str) -> String {
    format!(
        "{}\n\n---\n\n# Your task: {key} (branch {branch})\n\n{}\n",
        role.trim_end(),
        task_prompt.trim_end()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_choose_roles_and_repositories_override_them() {
        assert_eq!(Role::of_kind(Some("epic")), Role::Manager);
        assert_eq!(Role::of_kind(Some("review")), Role::Review);
        assert_eq!(Role::of_kind(None), Role::Implement);
        assert_eq!(Role::of_kind(Some("docs")), Role::Implement);
        let dir = tempfile::tempdir().unwrap();
        assert!(role_prompt(dir.path(), Some("review")).contains("reviewer"));
        std::fs::create_dir_all(dir.path().join(".ai/prompts")).unwrap();
        std::fs::write(
            dir.path().join(".ai/prompts/review.md"),
            "Review like a hawk.",
        )
        .unwrap();
        assert_eq!(
            role_prompt(dir.path(), Some("review")),
            "Review like a hawk."
        );
        assert!(role_prompt(dir.path(), Some("test")).contains("tester"));
        let p = compose("ROLE", "k", "swarm/k", "do x\n");
        assert!(
            p.starts_with("ROLE")
                && p.contains("# Your task: k (branch swarm/k)")
                && p.ends_with("do x\n")
        );
    }
}

//! Role prompts: what an agent is told before its task. Built in for each role, overridable
//! per repository by `.ai/prompts/<role>.md`. Pure apart from reading the override.

use std::path::Path;

use crate::model::Role;

/// The built-in prompt of `role`.
pub fn builtin(role: Role) -> &'static str {
    match role {
        Role::Manager => include_str!("../../prompts/manager.md"),
        Role::Implement => include_str!("../../prompts/implement.md"),
        Role::Review => include_str!("../../prompts/review.md"),
        Role::Test => include_str!("../../prompts/test.md"),
        Role::Merge => include_str!("../../prompts/merge.md"),
    }
}

/// Largest role prompt override read from a repository.
const MAX_OVERRIDE: usize = 64 * 1024;

/// The role prompt for `kind`: the repository's `.ai/prompts/<role>.md` as committed at HEAD
/// (read from git, not the work tree, so a symlink cannot smuggle in another file), else the
/// built-in one.
pub fn role_prompt(repo: &git2::Repository, kind: Option<&str>) -> String {
    let role = Role::of_kind(kind);
    let path = format!(".ai/prompts/{}.md", role.name());
    let custom = (|| {
        let tree = repo.head().ok()?.peel_to_tree().ok()?;
        let entry = tree.get_path(Path::new(&path)).ok()?;
        if entry.filemode() != i32::from(git2::FileMode::Blob)
            && entry.filemode() != i32::from(git2::FileMode::BlobExecutable)
        {
            return None;
        }
        let blob = repo.find_blob(entry.id()).ok()?;
        if blob.size() > MAX_OVERRIDE {
            return None;
        }
        String::from_utf8(blob.content().to_vec()).ok()
    })();
    match custom {
        Some(text) if !text.trim().is_empty() => text,
        _ => builtin(role).to_string(),
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
        let repo = git2::Repository::init(dir.path()).unwrap();
        assert!(
            role_prompt(&repo, Some("review")).contains("reviewer"),
            "no commit yet"
        );
        let mut prompts = repo.treebuilder(None).unwrap();
        let hawk = repo.blob(b"Review like a hawk.").unwrap();
        prompts
            .insert("review.md", hawk, i32::from(git2::FileMode::Blob))
            .unwrap();
        let link = repo.blob(b"/proc/self/environ").unwrap();
        prompts
            .insert("test.md", link, i32::from(git2::FileMode::Link))
            .unwrap();
        let mut ai = repo.treebuilder(None).unwrap();
        ai.insert(
            "prompts",
            prompts.write().unwrap(),
            i32::from(git2::FileMode::Tree),
        )
        .unwrap();
        let mut top = repo.treebuilder(None).unwrap();
        top.insert(".ai", ai.write().unwrap(), i32::from(git2::FileMode::Tree))
            .unwrap();
        let tree = repo.find_tree(top.write().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        repo.commit(Some("HEAD"), &sig, &sig, "prompts", &tree, &[])
            .unwrap();
        assert_eq!(role_prompt(&repo, Some("review")), "Review like a hawk.");
        assert!(
            role_prompt(&repo, Some("test")).contains("tester"),
            "a symlink is not followed"
        );
        assert!(role_prompt(&repo, Some("merge")).contains("merger"));
        let p = compose("ROLE", "k", "swarm/k", "do x\n");
        assert!(
            p.starts_with("ROLE")
                && p.contains("# Your task: k (branch swarm/k)")
                && p.ends_with("do x\n")
        );
    }
}

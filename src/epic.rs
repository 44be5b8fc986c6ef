//! Epics in: a person's request becomes a task file for the project manager, committed to the
//! project's default branch (what `swarm epic add` and the dashboard do). I/O: git.

use chrono::Utc;

use crate::config::{Config, ProjectConfig};
use crate::gitops::{self, GitAuth, GitError};
use crate::model::green::manager_addressee;
use crate::spec::{Addressee, Label, Prompt, TaskKey, TaskSpec};

#[derive(Debug, thiserror::Error)]
pub enum EpicError {
    #[error("no project named {0:?} in the config")]
    NoProject(String),
    #[error("the epic's text is not usable: {0}")]
    Text(String),
    #[error("the epic name {name:?} is not usable: {why}")]
    Name { name: String, why: String },
    #[error("cannot commit the epic to {project}")]
    Git {
        project: String,
        #[source]
        source: GitError,
    },
    #[error("cannot build the epic's commit for {project}")]
    Commit {
        project: String,
        #[source]
        source: git2::Error,
    },
    #[error("submitting the epic panicked")]
    Panicked,
}

/// What was committed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SubmittedEpic {
    pub project: String,
    pub epic: String,
    pub key: String,
    pub path: String,
    pub commit: String,
}

/// A label from free text: lower-case words joined by `-`, at most 40 characters.
pub fn slug(text: &str) -> String {
    let mut out = String::new();
    for word in text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        if out.len() + word.len() + 1 > 40 {
            break;
        }
        if !out.is_empty() {
            out.push('-');
        }
        out.push_str(&word.to_ascii_lowercase());
    }
    if out.is_empty() {
        format!("epic-{}", Utc::now().format("%Y%m%d%H%M%S"))
    } else {
        out
    }
}

/// The task file of an epic.
pub fn epic_spec(project: &str, epic: &str, text: &str) -> Result<TaskSpec, EpicError> {
    let spec = TaskSpec {
        addressee: Addressee::new(manager_addressee(project)).map_err(EpicError::Text)?,
        prompt: Prompt::new(format!("New epic `{epic}`:\n\n{}\n", text.trim()))
            .map_err(EpicError::Text)?,
        branch: None,
        base: None,
        kind: Some(Label::new("epic").map_err(EpicError::Text)?),
        epic: Some(Label::new(epic).map_err(|why| EpicError::Name {
            name: epic.into(),
            why,
        })?),
        agent: None,
        timeout: None,
        max_attempts: None,
        priority: None,
        created_by: None,
        merges: None,
        requires_checks: None,
    };
    Ok(spec)
}

/// Commits `.ai/tasks/epic-<name>.yaml` for `project` on its default branch and pushes it.
pub async fn submit(
    config: &Config,
    project: &str,
    text: &str,
    name: Option<&str>,
    auth: &GitAuth,
) -> Result<SubmittedEpic, EpicError> {
    let p: ProjectConfig = config
        .project(project)
        .cloned()
        .ok_or_else(|| EpicError::NoProject(project.into()))?;
    let epic = match name {
        Some(n) => n.to_string(),
        None => slug(text),
    };
    // Check it as the engine will, before touching git.
    let spec = epic_spec(&p.name, &epic, text)?;
    let body = serde_saphyr::to_string(&spec).map_err(|e| EpicError::Text(e.to_string()))?;
    crate::spec::parse_task(body.as_bytes()).map_err(|e| EpicError::Text(e.to_string()))?;
    let text = text.to_string();
    let cache = gitops::cache_path(&config.data_dir, &p.name);
    let auth = auth.clone();
    let (git_name, git_email) = (config.git.name.clone(), config.git.email.clone());
    let pname = p.name.clone();
    tokio::task::spawn_blocking(move || -> Result<SubmittedEpic, EpicError> {
        let git = |source| EpicError::Git {
            project: pname.clone(),
            source,
        };
        let commit_err = |source| EpicError::Commit {
            project: pname.clone(),
            source,
        };
        let repo = gitops::open_cache(&cache, &p.repo).map_err(git)?;
        for _ in 0..5 {
            let head = gitops::fetch(&repo, &p.repo, &p.default_branch, &auth).map_err(git)?;
            let tree = repo
                .find_commit(head)
                .and_then(|c| c.tree())
                .map_err(commit_err)?;
            // A unique key: epic-<name>, epic-<name>-2, ...
            let mut key = format!("epic-{epic}");
            let mut n = 1;
            while tree
                .get_path(std::path::Path::new(&format!(
                    "{}/{key}.yaml",
                    crate::spec::TASKS_DIR
                )))
                .is_ok()
            {
                n += 1;
                key = format!("epic-{epic}-{n}");
            }
            let key = TaskKey::new(&key).map_err(|why| EpicError::Name {
                name: key.clone(),
                why,
            })?;
            // The epic's name follows its key, so a reused name makes a new epic.
            let epic = key.as_str().trim_start_matches("epic-").to_string();
            let spec = epic_spec(&pname, &epic, &text)?;
            let body = format!(
                "# An epic for the project manager, submitted with `swarm epic add`.\n{}",
                serde_saphyr::to_string(&spec).map_err(|e| EpicError::Text(e.to_string()))?
            );
            let path = crate::spec::task_path(&key);
            let message = format!("swarm: new epic {epic}\n\nSwarm-Epic: {epic}\n");
            let commit = gitops::commit_files(
                &repo,
                head,
                &[(path.clone(), body.clone().into_bytes())],
                &message,
                &git_name,
                &git_email,
            )
            .map_err(commit_err)?;
            match gitops::push(
                &repo,
                &p.repo,
                &commit.to_string(),
                &p.default_branch,
                &auth,
            ) {
                Ok(()) => {
                    return Ok(SubmittedEpic {
                        project: pname.clone(),
                        epic: epic.clone(),
                        key: key.to_string(),
                        path,
                        commit: commit.to_string(),
                    })
                }
                Err(e) if e.is_non_fast_forward() => continue,
                Err(e) => return Err(git(e)),
            }
        }
        Err(EpicError::Text(
            "the default branch kept moving; try again".into(),
        ))
    })
    .await
    .map_err(|_| EpicError::Panicked)?
}

#[cfg(test)]
mod tests {
    #[test]
    fn slugs() {
        assert_eq!(
            super::slug("Implement gamification features 1-20!"),
            "implement-gamification-features-1-20"
        );
        assert!(super::slug("!!!").starts_with("epic-"));
        assert!(super::slug(&"word ".repeat(30)).len() <= 40);
    }
}

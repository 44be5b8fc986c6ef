//! `swarm validate`: checks a checkout's `.ai/` directory and lists every problem with its file,
//! line and column. Reads files from disk; everything else is pure.

use std::fmt;
use std::path::{Path, PathBuf};

use super::status::StatusSpec;
use super::yaml::{from_yaml, SpecError};
use super::{parse_task, task_key_of_path, AI_DIR, STATUS_DIR, TASKS_DIR};

/// One problem in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Path relative to the repository root, with `/` separators.
    pub path: String,
    pub error: SpecError,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.path, self.error.line, self.error.column, self.error.message
        )
    }
}

/// Checks every task and status file under `root/.ai/`. An empty list means all is well.
pub fn validate_repository(root: &Path) -> std::io::Result<Vec<Problem>> {
    let mut problems = Vec::new();
    if !root.join(AI_DIR).is_dir() {
        problems.push(Problem {
            path: AI_DIR.into(),
            error: SpecError::whole_file(format!("no {AI_DIR}/ directory in {}", root.display())),
        });
        return Ok(problems);
    }
    for path in list_files(&root.join(TASKS_DIR))? {
        let rel = relative(root, &path);
        match task_key_of_path(&rel) {
            None => {
                if !rel.ends_with(".md") && !is_hidden(&rel) {
                    problems.push(Problem {
                        path: rel,
                        error: SpecError::whole_file(format!(
                            "only <key>.yaml task files belong in {TASKS_DIR}/"
                        )),
                    });
                }
            }
            Some(Err(message)) => problems.push(Problem {
                path: rel,
                error: SpecError::whole_file(message),
            }),
            Some(Ok(_key)) => {
                let bytes = std::fs::read(&path)?;
                if let Err(error) = parse_task(&bytes) {
                    problems.push(Problem { path: rel, error });
                }
            }
        }
    }
    for path in list_files(&root.join(STATUS_DIR))? {
        let rel = relative(root, &path);
        if !rel.ends_with(".yaml") {
            continue;
        }
        let bytes = std::fs::read(&path)?;
        if let Err(error) = from_yaml::<StatusSpec>(&bytes) {
            problems.push(Problem { path: rel, error });
        }
    }
    problems.sort_by(|a, b| a.path.cmp(&b.path).then(a.error.line.cmp(&b.error.line)));
    Ok(problems)
}

fn is_hidden(rel: &str) -> bool {
    rel.rsplit('/').next().is_some_and(|n| n.starts_with('.'))
}

fn list_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let ty = entry.file_type()?;
            if ty.is_dir() {
                stack.push(entry.path());
            } else if ty.is_file() {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

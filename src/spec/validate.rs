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

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// Each problem as `path:line:column: message`, as `swarm validate` prints it.
    fn shown(root: &Path) -> Vec<String> {
        validate_repository(root)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn every_bad_file_under_ai_is_listed_with_its_place_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let no_ai = shown(root);
        assert_eq!(no_ai.len(), 1, "{no_ai:?}");
        assert!(
            no_ai[0].starts_with(".ai:1:1: no .ai/ directory in "),
            "{no_ai:?}"
        );

        // Good files, and files that are not tasks or status files: nothing to say.
        write(root, ".ai/tasks/good.yaml", "addressee: w\nprompt: p\n");
        write(root, ".ai/tasks/notes.md", "# notes\n");
        write(root, ".ai/tasks/.keep", "");
        write(
            root,
            ".ai/status/good.yaml",
            "key: good\naddressee: w\nstatus: completed\ngeneration: 1\nattempts: 1\nspec_hash: abc\n",
        );
        write(root, ".ai/status/notes.txt", "not yaml: [\n");
        write(root, ".ai/plan.md", "# plan\n");
        assert_eq!(shown(root), Vec::<String>::new());

        // Bad ones.
        write(root, ".ai/tasks/bad.yaml", "addressee: w\nprompty: p\n");
        write(root, ".ai/tasks/stray.txt", "x");
        write(root, ".ai/status/broken.yaml", "key: broken\n");
        let got = shown(root);
        let places: Vec<String> = got
            .iter()
            .map(|p| p.splitn(4, ':').take(3).collect::<Vec<_>>().join(":"))
            .collect();
        assert_eq!(
            places,
            [
                ".ai/status/broken.yaml:1:1",
                ".ai/tasks/bad.yaml:2:1",
                ".ai/tasks/stray.txt:1:1",
            ],
            "{got:?}"
        );
        assert!(got[1].contains("prompty"), "{got:?}");
        assert!(
            got[2].ends_with("only <key>.yaml task files belong in .ai/tasks/"),
            "{got:?}"
        );
    }
}

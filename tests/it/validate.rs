//! `swarm validate` and the pre-commit hook that calls it, as a person uses them: the real
//! binary, a real git repository, real `git commit`.

use std::path::{Path, PathBuf};
use std::process::Command;

const SWARM: &str = env!("CARGO_BIN_EXE_swarm");

fn write(root: &Path, path: &str, content: &str) {
    let p = root.join(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

#[test]
fn validate_prints_path_line_column_per_problem() {
    let ok = crate::support::command(SWARM)
        .arg("validate")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/repo-layout"))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    assert!(ok.stdout.is_empty());

    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        ".ai/tasks/good.yaml",
        "addressee: w\nprompt: fine\n",
    );
    write(
        dir.path(),
        ".ai/tasks/bad.yaml",
        "addressee: w\nprompt: fine\npriority: 5000\n",
    );
    write(
        dir.path(),
        ".ai/tasks/worse.yml",
        "addressee: w\nprompt: fine\n",
    );
    write(
        dir.path(),
        ".ai/status/good.yaml",
        "key: good\nstatus: done\n",
    );
    let out = crate::support::command(SWARM)
        .arg("validate")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0].starts_with(".ai/status/good.yaml:"), "{stdout}");
    assert!(
        lines[1].starts_with(".ai/tasks/bad.yaml:3:11: ") && lines[1].contains("priority"),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with(".ai/tasks/worse.yml:1:1: ") && lines[2].contains(".yaml"),
        "{stdout}"
    );
}

fn git(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .env("SWARM", SWARM)
        .output()
        .unwrap()
}

#[test]
fn the_pre_commit_hook_rejects_a_bad_staged_task_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(git(d, &["init", "-q", "-b", "main"]).status.success());
    let hook = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/hooks/pre-commit");
    std::fs::copy(&hook, d.join(".git/hooks/pre-commit")).unwrap();

    write(d, ".ai/tasks/one.yaml", "addressee: w\nprompt: fine\n");
    git(d, &["add", "."]);
    let out = git(d, &["commit", "-qm", "good"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    write(
        d,
        ".ai/tasks/two.yaml",
        "addressee: w\nprompt: fine\nbranchh: x\n",
    );
    git(d, &["add", "."]);
    let out = git(d, &["commit", "-qm", "bad"]);
    assert!(!out.status.success(), "the hook must refuse the commit");
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(".ai/tasks/two.yaml:3:1:") && said.contains("branchh"),
        "{said}"
    );

    // The staged content counts, not the work tree: fixing only the work tree is not enough.
    write(d, ".ai/tasks/two.yaml", "addressee: w\nprompt: fine\n");
    assert!(!git(d, &["commit", "-qm", "still bad"]).status.success());
    git(d, &["add", "."]);
    assert!(git(d, &["commit", "-qm", "fixed"]).status.success());
}

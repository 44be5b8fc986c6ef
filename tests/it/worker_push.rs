//! The worker's push, before and after: a run that changes a status file is refused and
//! pushes nothing, and a push that loses a race to another commit on its branch is replayed on
//! top of it (or fails as `git` when the replay conflicts).

use coding_swarm::spec::{ErrorClass, RunResult};

use crate::support::TestRepo;
use crate::worker::{run_worker, task};

#[test]
fn a_run_that_changes_a_status_file_pushes_nothing() {
    let repo = TestRepo::new();
    repo.commit(
        &[
            ("README.md", Some("hello\n")),
            (".ai/status/old.yaml", Some("written by the engine\n")),
        ],
        "init",
    );
    let before = repo.head();
    // (branch, kind, what the agent does, the status file it touched)
    let table = [
        (
            "swarm/status",
            "implement",
            "mkdir -p .ai/status && echo done > .ai/status/job.yaml && echo work > work.txt",
            ".ai/status/job.yaml",
        ),
        // The manager, on the default branch, editing one the engine wrote.
        (
            "main",
            "plan",
            "echo forged > .ai/status/old.yaml && echo plan > .ai/plan.md",
            ".ai/status/old.yaml",
        ),
        // Deleting one is changing it too.
        (
            "main",
            "plan",
            "git rm -q .ai/status/old.yaml && echo plan > .ai/plan.md",
            ".ai/status/old.yaml",
        ),
    ];
    for (branch, kind, script, path) in table {
        let dir = tempfile::tempdir().unwrap();
        let mut t = task(&repo, branch, script);
        t.kind = Some(kind.into());
        let result = run_worker(dir.path(), &t);
        let error = result.error.as_deref().unwrap_or_default();
        assert_eq!(
            (result.success, result.error_class),
            (false, Some(ErrorClass::Agent)),
            "{branch}: {result:?}"
        );
        assert!(
            error.contains("nothing was pushed")
                && error.contains(&format!(
                    "{path}:1:1: status files are written by the engine only"
                )),
            "{branch}: {error}"
        );
        assert_eq!(repo.head(), before, "{branch}: main did not move");
        assert_eq!(repo.branches(), ["main"], "{branch}: no branch was pushed");
    }
}

/// A manager's run on `main` whose agent, while it works, has someone else push `file` with
/// `theirs` to `main`, then writes `own` into its checkout. Returns the remote, the run's
/// directory and its result.
fn run_a_race(file: &str, own: &str) -> (TestRepo, tempfile::TempDir, RunResult) {
    let repo = TestRepo::new();
    repo.commit(&[("README.md", Some("hello\n"))], "init");
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "set -e; git clone -q {url} {side}; cd {side}; \
         echo theirs > {file}; git add {file}; \
         git -c user.name=Ann -c user.email=ann@example.com commit -qm 'a person, meanwhile'; \
         git push -q origin main; cd - >/dev/null; echo mine > {own}; echo worked",
        url = repo.url(),
        side = dir.path().join("side").display()
    );
    let mut t = task(&repo, "main", &script);
    t.kind = Some("plan".into());
    let result = run_worker(dir.path(), &t);
    (repo, dir, result)
}

#[test]
fn a_push_that_lost_a_race_is_replayed_on_the_moved_branch() {
    let (repo, dir, result) = run_a_race("person.txt", "mine.txt");
    assert!(result.success, "{result:?}");
    // Both commits are on main: the person's first, the run's replayed on top of it.
    let head = repo.head().unwrap();
    assert_eq!(
        result.commit_sha.as_deref(),
        Some(head.to_string().as_str())
    );
    let commit = repo.repo.find_commit(head).unwrap();
    assert!(commit.message().unwrap().contains("Swarm-Task: proj/job"));
    let parent = commit.parent(0).unwrap();
    assert_eq!(parent.message(), Some("a person, meanwhile\n"));
    assert_eq!(repo.read("main", "person.txt").as_deref(), Some("theirs\n"));
    assert_eq!(repo.read("main", "mine.txt").as_deref(), Some("mine\n"));
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert!(log.contains("replaying this run's commits"), "{log}");
}

#[test]
fn a_replay_that_conflicts_fails_as_git_and_keeps_the_other_commit() {
    // Both change README.md: the replay cannot apply the run's change.
    let (repo, _dir, result) = run_a_race("README.md", "README.md");
    assert_eq!(
        (result.success, result.error_class),
        (false, Some(ErrorClass::Git)),
        "{result:?}"
    );
    let error = result.error.as_deref().unwrap();
    assert!(
        error.contains("on the new remote head conflicts"),
        "{error}"
    );
    assert_eq!(repo.read("main", "README.md").as_deref(), Some("theirs\n"));
    let head = repo.repo.find_commit(repo.head().unwrap()).unwrap();
    assert_eq!(head.message(), Some("a person, meanwhile\n"));
}

/// An agent that replaces the checkout's `.git` with a link to another repository gets nothing
/// pushed, and the other repository is not written through it.
#[test]
fn a_checkout_whose_git_dir_was_replaced_pushes_nothing() {
    let repo = TestRepo::new();
    repo.commit(&[("README.md", Some("hello\n"))], "init");
    let elsewhere = tempfile::tempdir().unwrap();
    let script = format!(
        "git init -q {0}/other && mv .git {0}/moved && ln -s {0}/other/.git .git && echo x > f",
        elsewhere.path().display()
    );
    let dir = tempfile::tempdir().unwrap();
    let result = run_worker(dir.path(), &task(&repo, "swarm/swap", &script));
    assert!(!result.success, "{result:?}");
    assert!(
        result
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("replaced the checkout's .git"),
        "{result:?}"
    );
    assert_eq!(repo.branches(), ["main"], "nothing was pushed");
    let other = std::fs::read_to_string(elsewhere.path().join("other/.git/config")).unwrap();
    assert!(!other.contains("remote \"origin\""), "{other}");
}

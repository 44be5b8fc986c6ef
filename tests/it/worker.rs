//! `swarm worker` as the runtime starts it: a fresh clone, the task's branch, the agent in a
//! clean environment, commit and push to a real bare remote, the result file.

use std::collections::BTreeMap;
use std::path::Path;

use coding_swarm::config::AgentProfile;
use coding_swarm::job::JobSpec;
use coding_swarm::spec::{ErrorClass, RunResult};

use crate::support::TestRepo;

const SWARM: &str = env!("CARGO_BIN_EXE_swarm");

fn task(repo: &TestRepo, branch: &str, script: &str) -> JobSpec {
    JobSpec {
        version: coding_swarm::job::VERSION,
        project: "proj".into(),
        key: "job".into(),
        generation: 1,
        attempt: 1,
        run_name: "proj-job-g1-a1".into(),
        repo: repo.url(),
        branch: branch.into(),
        base: "main".into(),
        kind: Some("implement".into()),
        prompt: "Write the file.\nMore detail.".into(),
        agent_name: "sh".into(),
        agent: (&AgentProfile {
            env: BTreeMap::from([("FROM_PROFILE".to_string(), "${PROFILE_SOURCE}".to_string())]),
            ..AgentProfile::command(vec!["sh".into(), "-c".into(), script.into()])
        })
            .into(),
        git_name: "Swarm Bot".into(),
        git_email: "bot@example.com".into(),
    }
}

fn run_worker(dir: &Path, task: &JobSpec) -> RunResult {
    std::fs::write(dir.join("task.json"), serde_json::to_vec(task).unwrap()).unwrap();
    let status = crate::support::command(SWARM)
        .args(["worker", "--run-dir"])
        .arg(dir)
        .env("SWARM_GIT_TOKEN", "token-for-the-worker-only")
        .env("ANTHROPIC_API_KEY", "sk-must-not-leak")
        .env("PROFILE_SOURCE", "from-the-engine")
        .status()
        .unwrap();
    let result: RunResult =
        serde_json::from_slice(&std::fs::read(dir.join("result.json")).unwrap()).unwrap();
    assert_eq!(status.success(), result.success);
    result
}

#[test]
fn the_worker_commits_and_pushes_the_agents_work_on_a_new_branch() {
    let repo = TestRepo::new();
    repo.commit(&[("README.md", Some("hello\n"))], "init");
    let dir = tempfile::tempdir().unwrap();
    let script = "env > ../agent-env; echo changed >> README.md; mkdir -p new; echo x > new/file.txt; echo all done";
    let result = run_worker(dir.path(), &task(&repo, "swarm/job", script));
    assert!(result.success && result.changed, "{result:?}");
    assert_eq!(result.summary.as_deref(), Some("all done"));
    let head = repo.repo.refname_to_id("refs/heads/swarm/job").unwrap();
    assert_eq!(result.commit_sha, Some(head.to_string()));
    assert_eq!(
        repo.read("swarm/job", "README.md").as_deref(),
        Some("hello\nchanged\n")
    );
    assert_eq!(
        repo.read("swarm/job", "new/file.txt").as_deref(),
        Some("x\n")
    );
    assert_eq!(
        repo.read("main", "README.md").as_deref(),
        Some("hello\n"),
        "main untouched"
    );
    let commit = repo.repo.find_commit(head).unwrap();
    assert_eq!(commit.author().name(), Some("Swarm Bot"));
    assert!(commit.message().unwrap().contains("Swarm-Task: proj/job"));

    // The agent's environment is clean: the worker's secrets stay with the worker.
    let env = std::fs::read_to_string(dir.path().join("agent-env")).unwrap();
    assert!(
        !env.contains("token-for-the-worker-only") && !env.contains("sk-must-not-leak"),
        "{env}"
    );
    assert!(env.contains("FROM_PROFILE=from-the-engine"), "{env}");
    assert!(env.contains("SWARM_TASK_KEY=job") && env.contains("SWARM_BRANCH=swarm/job"));
    assert!(
        env.contains(&format!("HOME={}", dir.path().join("home").display())),
        "{env}"
    );

    // A second run continues the branch where the first left it.
    let dir2 = tempfile::tempdir().unwrap();
    let result = run_worker(
        dir2.path(),
        &task(
            &repo,
            "swarm/job",
            "test -f new/file.txt && echo more >> new/file.txt",
        ),
    );
    assert!(result.success, "{result:?}");
    assert_eq!(
        repo.read("swarm/job", "new/file.txt").as_deref(),
        Some("x\nmore\n")
    );
}

#[test]
fn nothing_changed_a_failing_agent_a_missing_command_and_the_default_branch() {
    let repo = TestRepo::new();
    repo.commit(&[("README.md", Some("hello\n"))], "init");

    let dir = tempfile::tempdir().unwrap();
    let result = run_worker(dir.path(), &task(&repo, "swarm/review", "echo looks good"));
    assert!(
        result.success && !result.changed && result.commit_sha.is_none(),
        "{result:?}"
    );
    assert!(
        !repo.branches().contains(&"swarm/review".to_string()),
        "no empty branch is pushed"
    );

    let dir = tempfile::tempdir().unwrap();
    let result = run_worker(
        dir.path(),
        &task(
            &repo,
            "swarm/fail",
            "echo partial > part.txt; echo 'tests failed' >&2; exit 3",
        ),
    );
    assert!(!result.success);
    assert_eq!(result.error_class, Some(ErrorClass::Agent));
    assert!(
        result.error.as_deref().unwrap().contains("tests failed"),
        "{result:?}"
    );
    // A failed attempt's work is kept on its branch, on the remote.
    assert_eq!(
        repo.read("swarm/fail", "part.txt").as_deref(),
        Some("partial\n"),
        "{result:?}"
    );
    let head = repo.repo.refname_to_id("refs/heads/swarm/fail").unwrap();
    assert_eq!(result.commit_sha, Some(head.to_string()));
    assert!(result.changed);

    let dir = tempfile::tempdir().unwrap();
    let mut missing = task(&repo, "swarm/x", "");
    missing.agent.command = vec!["no-such-agent-cli".into()];
    let result = run_worker(dir.path(), &missing);
    assert_eq!(
        result.error_class,
        Some(ErrorClass::MissingCli),
        "{result:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let result = run_worker(dir.path(), &task(&repo, "main", "echo direct >> README.md"));
    assert!(result.success && result.changed, "{result:?}");
    assert_eq!(
        result.commit_sha,
        repo.head().map(|h| h.to_string()),
        "main's head on the remote is the run's commit"
    );
    assert_eq!(
        repo.read("main", "README.md").as_deref(),
        Some("hello\ndirect\n")
    );

    let dir = tempfile::tempdir().unwrap();
    let mut no_base = task(&repo, "swarm/y", "true");
    no_base.base = "develop".into();
    let result = run_worker(dir.path(), &no_base);
    assert_eq!(result.error_class, Some(ErrorClass::Git), "{result:?}");
    assert!(result.error.as_deref().unwrap().contains("develop"));
}

//! The repository's own pre-commit hook (`.githooks/pre-commit`): the worker runs it on the
//! agent's staged change before it commits, in the agent's sandbox, with a time limit. A hook
//! that refuses fails the run with class `agent` and its output, and nothing is pushed; one
//! that passes lets the work go; `[git] run_hooks = false` skips it.

use std::path::Path;
use std::time::Duration;

use coding_swarm::spec::{ErrorClass, RunResult};

use crate::support::{command, TestRepo, SWARM};
use crate::worker::{run_worker, task};

/// A hook that refuses any staged file named `forbidden.txt`, after 3000 lines of noise, and
/// that tries to write into `repo` (a path of this machine) on the way.
fn rejecting_hook(repo: &Path) -> String {
    format!(
        "#!/bin/sh\n\
         touch {repo}/hook-was-here 2>/dev/null\n\
         seq 1 3000 | sed 's/^/noise /'\n\
         if git diff --cached --name-only | grep -q '^forbidden.txt$'; then\n\
         \x20 echo 'lint: forbidden.txt may not be committed' >&2\n\
         \x20 exit 1\n\
         fi\n",
        repo = repo.display()
    )
}

/// A repository whose main has `hook` as `.githooks/pre-commit` and one task `job`.
fn repo_with_hook(hook: &str) -> TestRepo {
    let repo = TestRepo::new();
    commit_hook(&repo, hook);
    repo
}

fn commit_hook(repo: &TestRepo, hook: &str) {
    repo.commit(
        &[
            ("README.md", Some("hello\n")),
            (".githooks/pre-commit", Some(hook)),
            (
                ".ai/tasks/job.yaml",
                Some("addressee: w\nprompt: write the file\n"),
            ),
        ],
        "init",
    );
}

/// Runs `swarm up --once` on `repo` with the default sandbox (bubblewrap), the agent `script`
/// and `extra` config; returns the task's result from the status file the engine committed.
fn run_once(repo: &TestRepo, script: &str, extra: &str) -> RunResult {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("swarm.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {data:?}\ndefault_agent = \"sh\"\n{extra}\n[agents.sh]\ncommand = [\"sh\", \"-c\", {script:?}]\n[[projects]]\nname = \"proj\"\nrepo = {:?}\n",
            repo.url(),
            data = data.display().to_string(),
        ),
    )
    .unwrap();
    let out = command(SWARM)
        .args(["up", "--once", "--config"])
        .arg(&config)
        .env("HOME", dir.path())
        .output()
        .unwrap();
    let status = repo
        .read("main", ".ai/status/job.yaml")
        .expect("the engine committed the task's status file");
    let result = coding_swarm::spec::read_status(status.as_bytes())
        .unwrap_or_else(|| panic!("unreadable status file:\n{status}"))
        .result
        .unwrap_or_else(|| panic!("a status file without a result:\n{status}"));
    // `--once` exits 1 when a task failed.
    assert_eq!(
        out.status.success(),
        result.success,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    result
}

/// The agent weakens the hook in its own change and adds the forbidden file.
const CHEAT: &str =
    "printf '#!/bin/sh\\nexit 0\\n' > .githooks/pre-commit; echo no > forbidden.txt; echo done";

#[test]
fn a_hook_that_rejects_the_change_fails_the_run_with_its_output_and_nothing_is_pushed() {
    let repo = TestRepo::new();
    commit_hook(&repo, &rejecting_hook(&repo.path()));
    let result = run_once(&repo, CHEAT, "");
    assert!(!result.success, "{result:?}");
    assert_eq!(result.error_class, Some(ErrorClass::Agent), "{result:?}");
    let error = result.error.clone().unwrap_or_default();
    assert!(
        error.contains(".githooks/pre-commit") && error.contains("exit code 1"),
        "{error}"
    );
    // The hook's own words, the end of its output (cut: the noise's start is gone).
    assert!(
        error.contains("lint: forbidden.txt may not be committed"),
        "{error}"
    );
    assert!(
        error.contains("noise 3000") && !error.contains("noise 1\n"),
        "{error}"
    );
    assert!(error.len() < 5000, "cut to its end: {} bytes", error.len());
    // The agent's summary stays; nothing was committed or pushed.
    assert_eq!(result.summary.as_deref(), Some("done"), "{result:?}");
    assert!(!result.changed && result.commit_sha.is_none(), "{result:?}");
    assert!(
        !repo.branches().contains(&"swarm/job".to_string()),
        "nothing is pushed: {:?}",
        repo.branches()
    );
    // In the agent's sandbox, the project's repository on this machine is read-only.
    assert!(
        !repo.path().join("hook-was-here").exists(),
        "the hook ran outside the sandbox"
    );
}

#[test]
fn with_run_hooks_false_the_hook_is_not_run_and_the_change_is_pushed() {
    let repo = repo_with_hook(&rejecting_hook(Path::new("/nonexistent")));
    let result = run_once(&repo, CHEAT, "[git]\nrun_hooks = false\n");
    assert!(result.success && result.changed, "{result:?}");
    assert_eq!(
        repo.read("swarm/job", "forbidden.txt").as_deref(),
        Some("no\n")
    );
}

#[test]
fn a_passing_hook_sees_the_staged_change_and_lets_the_work_be_pushed() {
    // The hook records what is staged, in the run's HOME (outside the checkout).
    let repo = repo_with_hook(
        "#!/bin/sh\ngit diff --cached --name-only > \"$HOME/staged\"\necho \"$PWD\" >> \"$HOME/staged\"\nenv > \"$HOME/hook-env\"\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let result = run_worker(
        dir.path(),
        &task(&repo, "swarm/job", "echo yes > allowed.txt; echo done"),
    );
    assert!(result.success && result.changed, "{result:?}");
    assert_eq!(
        repo.read("swarm/job", "allowed.txt").as_deref(),
        Some("yes\n")
    );
    let staged = std::fs::read_to_string(dir.path().join("home/staged")).unwrap();
    let checkout = dir.path().canonicalize().unwrap().join("checkout");
    assert_eq!(
        staged,
        format!("allowed.txt\n{}\n", checkout.display()),
        "the hook runs at the work tree's top on the staged change"
    );
    // The agent's clean environment, without the profile's env or the worker's credentials.
    let env = std::fs::read_to_string(dir.path().join("home/hook-env")).unwrap();
    assert!(
        !env.contains("token-for-the-worker-only")
            && !env.contains("sk-must-not-leak")
            && !env.contains("FROM_PROFILE"),
        "{env}"
    );
    assert!(env.contains("SWARM_TASK_KEY=job"), "{env}");
}

#[test]
fn a_hook_that_outlives_its_time_limit_fails_the_run_and_nothing_is_pushed() {
    // It also prints the value of a configured secret (the profile's `${PROFILE_SOURCE}`).
    let repo = repo_with_hook("#!/bin/sh\necho checking from-the-engine\nexec sleep 60\n");
    let dir = tempfile::tempdir().unwrap();
    let mut job = task(&repo, "swarm/job", "echo yes > allowed.txt");
    job.hooks = Some(coding_swarm::job::HookSettings {
        timeout: Duration::from_secs(1),
    });
    let started = std::time::Instant::now();
    let result = run_worker(dir.path(), &job);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the hook was ended"
    );
    assert_eq!(result.error_class, Some(ErrorClass::Agent), "{result:?}");
    let error = result.error.clone().unwrap_or_default();
    assert!(
        error.contains("did not finish within 1s")
            && error.contains("checking [REDACTED:FROM_PROFILE]")
            && !error.contains("from-the-engine"),
        "{error}"
    );
    assert!(!repo.branches().contains(&"swarm/job".to_string()));
}

/// A worker pod's containers as three processes, in Kubernetes' order: the hook runs in the
/// agent's container (it has run before the push container starts), and the push container,
/// which holds the git credential, pushes nothing after the hook refused.
#[test]
fn in_a_pod_the_hook_runs_in_the_agents_container_and_the_push_container_pushes_nothing() {
    let repo =
        repo_with_hook("#!/bin/sh\necho ran >> \"$HOME/hook-ran\"\necho 'lint: no' >&2\nexit 3\n");
    let pod = tempfile::tempdir().unwrap();
    let (run, state) = (pod.path().join("run"), pod.path().join("state"));
    std::fs::create_dir_all(&run).unwrap();
    let task_file = pod.path().join("task.json");
    std::fs::write(
        &task_file,
        serde_json::to_vec(&task(&repo, "swarm/job", "echo x > new.txt")).unwrap(),
    )
    .unwrap();
    let container = |phase: &str| {
        let mut cmd = command(SWARM);
        cmd.args(["worker", "--phase", phase, "--run-dir"])
            .arg(&run)
            .arg("--task-file")
            .arg(&task_file);
        if phase != "agent" {
            cmd.arg("--state-dir").arg(&state);
        }
        if phase == "push" {
            cmd.arg("--termination-log")
                .arg(pod.path().join("termination"));
            cmd.env("SWARM_GIT_TOKEN", "token-of-the-push-container");
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let checkout = container("checkout");
    assert_eq!(checkout.0, Some(0), "{}", checkout.1);
    let agent = container("agent");
    assert_eq!(agent.0, Some(0), "{}", agent.1);
    assert_eq!(
        std::fs::read_to_string(run.join("home/hook-ran")).unwrap(),
        "ran\n",
        "the hook ran in the agent's container"
    );
    let push = container("push");
    assert_ne!(push.0, Some(0), "{}", push.1);
    let result =
        coding_swarm::job::JobResult::read(&std::fs::read(pod.path().join("termination")).unwrap());
    assert_eq!(result.error_class, Some(ErrorClass::Agent), "{result:?}");
    let error = result.error.clone().unwrap_or_default();
    assert!(
        error.contains("exit code 3") && error.contains("lint: no"),
        "{error}"
    );
    assert_eq!(
        std::fs::read_to_string(run.join("home/hook-ran")).unwrap(),
        "ran\n",
        "not again in the push container"
    );
    assert!(
        !repo.branches().contains(&"swarm/job".to_string()),
        "nothing is pushed: {:?}",
        repo.branches()
    );
}

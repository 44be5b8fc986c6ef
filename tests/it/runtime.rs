//! The local runtime with real processes: timeouts and stops end the whole process group, and
//! a run directory left by an earlier engine is adopted, completed or failed over by its lock.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use coding_swarm::config::AgentProfile;
use coding_swarm::job::JobSpec;
use coding_swarm::job::{LOCK_FILE, RESULT_FILE, STARTED_FILE};
use coding_swarm::runtime::{Completion, Launch, LocalRuntime};
use coding_swarm::spec::{ErrorClass, RunResult};
use tokio::sync::mpsc;

use crate::support::TestRepo;

const SWARM: &str = env!("CARGO_BIN_EXE_swarm");

fn launch(repo: &TestRepo, name: &str, script: &str, timeout: Duration) -> Launch {
    Launch {
        adopt_only: false,
        git_token: None,
        task_id: 7,
        attempt: 1,
        run_name: name.into(),
        deadline: Utc::now() + chrono::Duration::from_std(timeout).unwrap(),
        task: JobSpec {
            version: coding_swarm::job::VERSION,
            project: "proj".into(),
            key: name.into(),
            generation: 1,
            attempt: 1,
            run_name: name.into(),
            repo: repo.url(),
            branch: format!("swarm/{name}"),
            base: "main".into(),
            kind: None,
            prompt: "p".into(),
            agent_name: "sh".into(),
            agent: (&AgentProfile::command(vec!["sh".into(), "-c".into(), script.into()])).into(),
            git_name: "swarm".into(),
            git_email: "swarm@example.com".into(),
            hooks: None,
        },
    }
}

fn runtime(dir: &Path) -> (LocalRuntime, mpsc::UnboundedReceiver<Completion>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (LocalRuntime::new(dir.join("runs"), SWARM.into(), tx), rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Completion>, within: Duration) -> Completion {
    tokio::time::timeout(within, rx.recv())
        .await
        .expect("a completion in time")
        .expect("channel open")
}

/// Whether `pid` is a live process (a zombie waiting for its parent to reap it is not).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                != Some("Z")
        }
        Err(_) => false,
    }
}

fn pids_in(file: &Path) -> Vec<i32> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

async fn wait_file(path: &Path) {
    for _ in 0..300 {
        if path.exists()
            && std::fs::metadata(path)
                .map(|m| m.len() > 0)
                .unwrap_or(false)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never appeared", path.display());
}

#[tokio::test]
async fn a_run_past_its_timeout_is_killed_with_its_whole_process_tree() {
    let repo = TestRepo::new();
    repo.commit(&[("README.md", Some("x"))], "init");
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    // The agent starts a grandchild and both would sleep for a minute.
    let script = format!(
        "sleep 60 & echo $! >> {p}; echo $$ >> {p}; wait",
        p = pids.display()
    );
    let (rt, mut rx) = runtime(dir.path());
    rt.launch(launch(&repo, "slow", &script, Duration::from_secs(3)))
        .await
        .unwrap();
    wait_file(&pids).await;
    let c = next(&mut rx, Duration::from_secs(30)).await;
    assert_eq!(
        c.result.error_class,
        Some(ErrorClass::Timeout),
        "{:?}",
        c.result
    );
    let pids = pids_in(&pids);
    assert_eq!(pids.len(), 2);
    for pid in pids {
        assert!(!alive(pid), "process {pid} of the timed-out run survived");
    }
}

#[tokio::test]
async fn stop_kills_the_process_group_and_cancels() {
    let repo = TestRepo::new();
    repo.commit(&[("README.md", Some("x"))], "init");
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let script = format!(
        "sleep 60 & echo $! >> {p}; echo $$ >> {p}; wait",
        p = pids.display()
    );
    let (rt, mut rx) = runtime(dir.path());
    rt.launch(launch(&repo, "stopme", &script, Duration::from_secs(120)))
        .await
        .unwrap();
    wait_file(&pids).await;
    rt.stop("stopme").await;
    let c = next(&mut rx, Duration::from_secs(30)).await;
    assert_eq!(
        c.result.error_class,
        Some(ErrorClass::Cancelled),
        "{:?}",
        c.result
    );
    for pid in pids_in(&pids) {
        assert!(!alive(pid), "process {pid} of the stopped run survived");
    }
}

#[tokio::test]
async fn a_worker_stopped_by_someone_else_is_retried_not_cancelled() {
    let repo = TestRepo::new();
    repo.commit(&[("README.md", Some("x"))], "init");
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let script = format!("echo $$ >> {p}; sleep 60", p = pids.display());
    let (rt, mut rx) = runtime(dir.path());
    rt.launch(launch(&repo, "killed", &script, Duration::from_secs(120)))
        .await
        .unwrap();
    wait_file(&pids).await;
    // The pid file holds the worker's pid and its start time.
    let worker: i32 = std::fs::read_to_string(dir.path().join("runs/killed/pid"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let c = next(&mut rx, Duration::from_secs(30)).await;
    assert_eq!(
        c.result.error_class,
        Some(ErrorClass::Infrastructure),
        "{:?}",
        c.result
    );
    for pid in pids_in(&pids) {
        assert!(!alive(pid), "the agent {pid} survived");
    }
}

#[tokio::test]
async fn an_earlier_engines_runs_are_adopted_completed_or_failed_over() {
    let repo = TestRepo::new();
    repo.commit(&[("README.md", Some("x"))], "init");
    let dir = tempfile::tempdir().unwrap();
    let (rt, mut rx) = runtime(dir.path());
    let runs = dir.path().join("runs");

    // Started and died without a result: lost, an infrastructure failure.
    std::fs::create_dir_all(runs.join("lost")).unwrap();
    std::fs::write(runs.join("lost").join(STARTED_FILE), "x").unwrap();
    rt.launch(launch(&repo, "lost", "true", Duration::from_secs(60)))
        .await
        .unwrap();
    let c = next(&mut rx, Duration::from_secs(10)).await;
    assert_eq!(
        (c.run_name.as_str(), c.result.error_class),
        ("lost", Some(ErrorClass::Infrastructure))
    );

    // Finished while nobody watched: its result is taken, nothing runs again.
    std::fs::create_dir_all(runs.join("done")).unwrap();
    let earlier = RunResult {
        success: true,
        summary: Some("finished alone".into()),
        ..RunResult::default()
    };
    std::fs::write(
        runs.join("done").join(RESULT_FILE),
        serde_json::to_vec(&earlier).unwrap(),
    )
    .unwrap();
    rt.launch(launch(&repo, "done", "exit 1", Duration::from_secs(60)))
        .await
        .unwrap();
    let c = next(&mut rx, Duration::from_secs(10)).await;
    assert_eq!(c.result.summary.as_deref(), Some("finished alone"));
    assert!(c.result.success);

    // Still alive (its lock is held): adopted, completed when it lets go.
    let alive_dir = runs.join("alive");
    std::fs::create_dir_all(&alive_dir).unwrap();
    std::fs::write(alive_dir.join(STARTED_FILE), "x").unwrap();
    let lock = File::create(alive_dir.join(LOCK_FILE)).unwrap();
    // SAFETY: flock on our own descriptor.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    rt.launch(launch(&repo, "alive", "exit 1", Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(800), rx.recv())
            .await
            .is_err(),
        "no completion while it lives"
    );
    let later = RunResult {
        success: true,
        summary: Some("adopted".into()),
        ..RunResult::default()
    };
    std::fs::write(
        alive_dir.join(RESULT_FILE),
        serde_json::to_vec(&later).unwrap(),
    )
    .unwrap();
    drop(lock);
    let c = next(&mut rx, Duration::from_secs(10)).await;
    assert_eq!(c.result.summary.as_deref(), Some("adopted"));

    // Claimed but never started: this is its first start.
    std::fs::create_dir_all(runs.join("fresh")).unwrap();
    rt.launch(launch(
        &repo,
        "fresh",
        "echo did it",
        Duration::from_secs(60),
    ))
    .await
    .unwrap();
    let c = next(&mut rx, Duration::from_secs(30)).await;
    assert!(c.result.success, "{:?}", c.result);
    assert_eq!(c.result.summary.as_deref(), Some("did it"));
}

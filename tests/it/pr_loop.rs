//! The pull-request loop end to end: a running `swarm up` with the real Claude Code CLI (against
//! the scripted model) as project manager and workers, GitHub as the HTTP-level fake, and
//! signed deliveries made from GitHub's example payloads. An epic is implemented, a person
//! requests changes in a review, the manager schedules the fix, CI fails once and the manager
//! has it fixed, the merge waits for the required check and lands when it passes, and the epic
//! completes.

use std::time::Duration;

use coding_swarm::model::{EpicState, EventKind};
use coding_swarm::store::Store;
use serde_json::{json, Value};

use crate::ghapi::{GitHubServer, Review};
use crate::github::{deliver_processed, free_port, get};
use crate::green::{bash, read, write_file};
use crate::model::{ModelServer, Step, Turn};
use crate::payloads::{example, in_repo, set, user};
use crate::support::{wait_for, TestRepo};

fn task_yaml(addressee: &str, kind: &str, extra: &str, prompt: &str) -> String {
    format!("addressee: {addressee}\nkind: {kind}\nepic: login\n{extra}created_by: project-mgr-webapp\nprompt: |\n  {prompt}\n")
}

/// The scripted manager: only the next step, from what its activation says.
fn manager_action(cwd: &str, prompt: &str) -> String {
    let plan = |state: &str| {
        write_file(
            ".ai/plan.md",
            &format!("# Plan: login\n\n- [x] the form\n\nState: {state}\n"),
        )
    };
    if prompt.contains("Task `merge` succeeded") {
        return plan("merged. EPIC COMPLETE");
    }
    if prompt.contains("Task `fix-ci` succeeded") {
        return [
            plan("CI fixed, merging"),
            write_file(
                ".ai/tasks/merge.yaml",
                &task_yaml(
                    "merger",
                    "merge",
                    "branch: main\nmerges: [swarm/impl]\n",
                    "Merge swarm/impl into main.",
                ),
            ),
        ]
        .concat();
    }
    if prompt.contains("CI failed on branch `swarm/impl`") {
        return [
            plan("CI failed once, fixing"),
            write_file(
                ".ai/tasks/fix-ci.yaml",
                &task_yaml("dev", "implement", "branch: swarm/impl\n", "Make CI pass."),
            ),
        ]
        .concat();
    }
    if prompt.contains("requested changes on pull request") {
        return [
            plan("review asks for v2"),
            write_file(
                ".ai/tasks/fix.yaml",
                &task_yaml(
                    "dev",
                    "implement",
                    "branch: swarm/impl\n",
                    "Address the review: login.txt says v2.",
                ),
            ),
        ]
        .concat();
    }
    if read(cwd, ".ai/plan.md").is_some() {
        // A finished implementation or fix: its review and CI come from GitHub.
        return plan("waiting for the review and CI");
    }
    [
        plan("implementing"),
        write_file(
            ".ai/tasks/impl.yaml",
            &task_yaml(
                "dev",
                "implement",
                "branch: swarm/impl\n",
                "Write login.txt.",
            ),
        ),
    ]
    .concat()
}

fn world(t: &Turn) -> Step {
    let key = t.task_key.as_str();
    let manager = key.starts_with("epic-") || key.starts_with("activation-");
    if t.index > 0 {
        return Step::text(&match key {
            "merge" => "MERGED swarm/impl into main.".to_string(),
            _ if manager => {
                if read(&t.cwd, ".ai/plan.md").is_some_and(|p| p.contains("EPIC COMPLETE")) {
                    "Everything is merged. EPIC COMPLETE".into()
                } else {
                    "Plan updated.".into()
                }
            }
            other => format!("Did {other}."),
        });
    }
    match key {
        "impl" => bash("echo v1 > login.txt".into()),
        "fix" => bash("echo v2 > login.txt".into()),
        "fix-ci" => bash("echo v3 > login.txt".into()),
        "merge" => bash("git merge --no-edit origin/swarm/impl".into()),
        _ if manager => bash(manager_action(&t.cwd, &t.text)),
        other => Step::text(&format!("nothing scripted for {other}")),
    }
}

/// What the engine did, for a failure's message: its tasks and the end of its log.
async fn state(s: &Store, dir: &std::path::Path) -> String {
    let tasks: Vec<String> = s
        .list(&coding_swarm::store::TaskFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|t| {
            format!(
                "{} {} {:?}",
                t.key,
                t.status.as_str(),
                t.result.map(|r| (r.success, r.error, r.summary))
            )
        })
        .collect();
    let log = std::fs::read_to_string(dir.join("engine.log")).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(60).collect();
    format!(
        "tasks:\n{}\nengine log (last lines):\n{}",
        tasks.join("\n"),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )
}

/// Waits up to `secs` for `key` to succeed; on a timeout, says what the engine did.
async fn until_done(s: &Store, dir: &std::path::Path, key: &str, secs: u64) {
    let start = std::time::Instant::now();
    while !completed(s, key).await {
        if start.elapsed() > Duration::from_secs(secs) {
            panic!("timed out waiting for {key}\n{}", state(s, dir).await);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn completed(s: &Store, key: &str) -> bool {
    s.task("webapp", key)
        .await
        .unwrap()
        .is_some_and(|t| t.status.as_str() == "completed" && t.result.is_some_and(|r| r.success))
}

fn check_run(sha: &str, conclusion: &str) -> Value {
    let mut v = in_repo(example("check_run", Some("completed")), "acme/webapp");
    set(&mut v, "/check_run/name", json!("ci/test"));
    set(&mut v, "/check_run/conclusion", json!(conclusion));
    set(&mut v, "/check_run/head_sha", json!(sha));
    set(
        &mut v,
        "/check_run/check_suite/head_branch",
        json!("swarm/impl"),
    );
    set(&mut v, "/check_run/check_suite/head_sha", json!(sha));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_epic_goes_through_review_and_ci_and_its_merge_waits_for_green() {
    let model = ModelServer::start_with(world).await;
    let github = GitHubServer::start().await;
    {
        let mut hub = github.hub();
        hub.permissions.insert("ann".into(), "write".into());
        hub.protection.insert("main".into(), vec!["ci/test".into()]);
    }
    let repo = TestRepo::new();
    repo.commit(
        &[
            ("README.md", Some("# webapp\n")),
            (
                ".ai/tasks/epic-login.yaml",
                Some("addressee: project-mgr-webapp\nkind: epic\nepic: login\nprompt: A login form.\n"),
            ),
        ],
        "an epic",
    );
    // GitHub's branches are the repository's: the fake follows it.
    let mirror = {
        let hub = github.fake.hub.clone();
        let path = repo.path();
        tokio::spawn(async move {
            loop {
                if let Ok(r) = git2::Repository::open_bare(&path) {
                    let heads: Vec<(String, String)> = r
                        .branches(Some(git2::BranchType::Local))
                        .unwrap()
                        .filter_map(|b| {
                            let b = b.ok()?.0;
                            Some((b.name().ok()??.to_string(), b.get().target()?.to_string()))
                        })
                        .collect();
                    hub.lock().unwrap().branches.extend(heads);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join("swarm.toml"),
        format!(
            r#"
data_dir = "d"
default_agent = "claude"
sandbox = "none"
poll_interval = "1s"
[http]
listen = "127.0.0.1:{port}"
[github]
api_url = "{github}"
min_write_interval = "10ms"
checks_interval = "1s"
{agent}
[[projects]]
name = "webapp"
repo = {repo:?}
github = "acme/webapp"
"#,
            github = github.url,
            agent = crate::model::claude_agent_toml(&model, 8),
            repo = repo.url()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("engine.log")).unwrap();
    let child = crate::support::command(env!("CARGO_BIN_EXE_swarm"))
        .args(["up", "--config", "swarm.toml"])
        .current_dir(dir.path())
        .env("SWARM_GITHUB_WEBHOOK_SECRET", crate::github::SECRET)
        .env("SWARM_GITHUB_TOKEN", crate::ghapi::TOKEN)
        .env(
            "TEST_OAUTH_TOKEN",
            "sk-ant-oat01-test-token-for-the-scripted-model",
        )
        .env("RUST_LOG", "info")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    // Stopped however the test ends.
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _engine = Stop(child);
    let engine_log = || std::fs::read_to_string(dir.path().join("engine.log")).unwrap_or_default();
    wait_for("the engine", Duration::from_secs(60), async || {
        get(port, "/healthz").await.is_some() && dir.path().join("d/swarm.db").exists()
    })
    .await;
    let s = Store::connect(&format!(
        "sqlite://{}",
        dir.path().join("d/swarm.db").display()
    ))
    .await
    .unwrap();

    // The implementation, and its draft pull request.
    until_done(&s, dir.path(), "impl", 180).await;
    let pull = {
        let found = async || {
            github
                .hub()
                .pulls
                .iter()
                .find(|(_, p)| p.head == "swarm/impl")
                .map(|(n, p)| (*n, p.draft))
        };
        wait_for(
            "the draft pull request",
            Duration::from_secs(30),
            async || found().await.is_some(),
        )
        .await;
        let (n, draft) = found().await.unwrap();
        assert!(draft, "opened as a draft");
        n
    };

    // A person requests changes.
    github.hub().reviews.insert(
        55,
        Review {
            pull,
            login: "ann".into(),
            kind: "User".into(),
            state: "CHANGES_REQUESTED".into(),
            body: "Not yet.".into(),
            comments: vec![(
                560,
                "login.txt".into(),
                1,
                "@@ -0,0 +1 @@\n+v1".into(),
                "This must say v2.".into(),
            )],
        },
    );
    let mut review = in_repo(
        example("pull_request_review", Some("submitted")),
        "acme/webapp",
    );
    set(&mut review, "/review/id", json!(55));
    set(&mut review, "/review/state", json!("changes_requested"));
    set(&mut review, "/review/body", json!("Not yet."));
    user(&mut review, "/review/user", "ann", "User");
    set(&mut review, "/pull_request/number", json!(pull));
    set(&mut review, "/pull_request/head/ref", json!("swarm/impl"));
    deliver_processed(port, &s, "pull_request_review", "review-1", &review).await;
    until_done(&s, dir.path(), "fix", 180).await;
    assert_eq!(
        repo.read("swarm/impl", "login.txt").as_deref(),
        Some("v2\n")
    );

    // CI fails on the fix's commit.
    let fixed = s.task("webapp", "fix").await.unwrap().unwrap();
    let sha2 = fixed
        .result
        .and_then(|r| r.commit_sha)
        .expect("the fix's commit");
    let mirrored = async |sha: &str| {
        wait_for(
            "GitHub to see the branch's head",
            Duration::from_secs(10),
            async || github.hub().branches.get("swarm/impl").map(String::as_str) == Some(sha),
        )
        .await
    };
    mirrored(&sha2).await;
    github
        .hub()
        .add_run(&sha2, "ci/test", "completed", Some("failure"));
    deliver_processed(port, &s, "check_run", "ci-1", &check_run(&sha2, "failure")).await;
    until_done(&s, dir.path(), "fix-ci", 180).await;
    let sha3 = s
        .task("webapp", "fix-ci")
        .await
        .unwrap()
        .unwrap()
        .result
        .and_then(|r| r.commit_sha)
        .expect("the CI fix's commit");

    // The merge waits for CI on the new head, and lands once it passes.
    wait_for("the merge waiting", Duration::from_secs(120), async || {
        s.events("webapp", "merge").await.unwrap().iter().any(|e| {
            e.kind == EventKind::Checks
                && e.message == "waits for required checks: `swarm/impl`: ci/test pending"
        })
    })
    .await;
    assert_eq!(
        s.task("webapp", "merge")
            .await
            .unwrap()
            .unwrap()
            .status
            .as_str(),
        "pending"
    );
    mirrored(&sha3).await;
    github
        .hub()
        .add_run(&sha3, "ci/test", "completed", Some("success"));
    deliver_processed(port, &s, "check_run", "ci-2", &check_run(&sha3, "success")).await;
    wait_for("the epic's end", Duration::from_secs(120), async || {
        s.epics(Some("webapp"))
            .await
            .unwrap()
            .iter()
            .any(|e| e.name == "login" && e.state != EpicState::Active)
    })
    .await;
    let epic = s.epics(Some("webapp")).await.unwrap().pop().unwrap();
    assert_eq!(
        epic.state,
        EpicState::Complete,
        "{epic:?}\n{}",
        engine_log()
    );
    assert_eq!(repo.read("main", "login.txt").as_deref(), Some("v3\n"));
    let merge = s.events("webapp", "merge").await.unwrap();
    let passed = merge
        .iter()
        .position(|e| e.kind == EventKind::Checks && e.message == "required checks passed");
    let claimed = merge.iter().position(|e| e.kind == EventKind::Claimed);
    assert!(
        passed.is_some() && claimed.is_some() && passed < claimed,
        "{merge:?}"
    );
    // The manager saw the review's comment and the failed check.
    let asked: String = model
        .messages_requests()
        .iter()
        .map(|r| r.body.to_string())
        .collect();
    assert!(asked.contains("This must say v2."));
    assert!(asked.contains("`ci/test`: failure"));
    mirror.abort();
}

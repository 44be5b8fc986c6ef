//! The rest of the pull-request loop: a merge waits for green required checks, a pull request's
//! events reach its task at once, the queue position in a comment moves, with a GitHub App a
//! task is a check run with "Re-run", and a request is acknowledged with a reaction. A running
//! `swarm up` gets signed deliveries made from GitHub's example payloads
//! (`@octokit/webhooks-examples`) and reads the rest from the HTTP-level fake GitHub.

use std::process::Child;
use std::time::Duration;

use coding_swarm::model::EventKind;
use coding_swarm::store::Store;
use serde_json::{json, Value};

use crate::ghapi::{GitHubServer, Pull};
use crate::github::{deliver, deliver_processed, free_port, get, signed};
use crate::payloads::{example, in_repo, set, user};
use crate::support::{wait_for, Backend, TestDb, TestRepo};

crate::on_both_backends!(a_merge_waits_for_its_required_checks_and_says_what_for);

const FEATURE_SHA: &str = "1111111111111111111111111111111111111111";

struct Engine {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    _repo: TestRepo,
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Engine {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("engine.log")).unwrap_or_default()
    }
}

/// `swarm up` with project `webapp` (`acme/webapp`) on a repository holding `tasks`, the agent
/// `sh -c SCRIPT`; `github_extra` goes into `[github]`; with `app`, the engine is a GitHub
/// App. Returns once every task is synced.
async fn engine(
    db_url: Option<&str>,
    github: &GitHubServer,
    tasks: &[(&str, &str)],
    script: &str,
    github_extra: &str,
    app: bool,
) -> (Engine, Store) {
    let repo = TestRepo::new();
    let files: Vec<(String, String)> = tasks
        .iter()
        .map(|(k, y)| (format!(".ai/tasks/{k}.yaml"), y.to_string()))
        .collect();
    let files: Vec<(&str, Option<&str>)> = files
        .iter()
        .map(|(p, y)| (p.as_str(), Some(y.as_str())))
        .collect();
    repo.commit(&files, "tasks");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let database = db_url
        .map(|u| format!("database_url = {u:?}"))
        .unwrap_or_default();
    let auth = if app { "app_id = 12345\n" } else { "" };
    std::fs::write(
        dir.path().join("swarm.toml"),
        format!(
            r#"
data_dir = "d"
{database}
default_agent = "sh"
sandbox = "none"
poll_interval = "1h"
[http]
listen = "127.0.0.1:{port}"
public_url = "https://swarm.example.test"
[github]
api_url = "{}"
min_write_interval = "10ms"
{auth}{github_extra}
[agents.sh]
command = ["sh", "-c", {script:?}]
[[projects]]
name = "webapp"
repo = "{}"
github = "acme/webapp"
"#,
            github.url,
            repo.url()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("engine.log")).unwrap();
    let mut cmd = crate::support::command(env!("CARGO_BIN_EXE_swarm"));
    cmd.args(["up", "--config", "swarm.toml"])
        .current_dir(dir.path())
        .env("SWARM_GITHUB_WEBHOOK_SECRET", crate::github::SECRET)
        .env("RUST_LOG", "info")
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    if app {
        let key = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/github-app-test-key.pem"),
        )
        .unwrap();
        cmd.env("SWARM_GITHUB_APP_KEY", key);
    } else {
        cmd.env("SWARM_GITHUB_TOKEN", crate::ghapi::TOKEN);
    }
    let child = cmd.spawn().unwrap();
    let e = Engine {
        child,
        port,
        dir,
        _repo: repo,
    };
    let store = match db_url {
        Some(u) => Store::connect(u).await.unwrap(),
        None => {
            wait_for("the database", Duration::from_secs(30), async || {
                e.dir.path().join("d/swarm.db").exists()
            })
            .await;
            Store::connect(&format!(
                "sqlite://{}",
                e.dir.path().join("d/swarm.db").display()
            ))
            .await
            .unwrap()
        }
    };
    let keys: Vec<&str> = tasks.iter().map(|(k, _)| *k).collect();
    wait_for(
        "the engine and its sync",
        Duration::from_secs(60),
        async || {
            if get(e.port, "/healthz").await.is_none() {
                return false;
            }
            for k in &keys {
                if store.task("webapp", k).await.ok().flatten().is_none() {
                    return false;
                }
            }
            true
        },
    )
    .await;
    (e, store)
}

/// The events of task `key` as (kind, message), oldest first.
async fn events(s: &Store, key: &str) -> Vec<(EventKind, String)> {
    s.events("webapp", key)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, e.message))
        .collect()
}

/// The body of task `key`'s status comment on pull request `pull`, if there is one.
fn comment_of(github: &GitHubServer, pull: u64, key: &str) -> Option<String> {
    github
        .hub()
        .comments
        .values()
        .find(|(n, b)| *n == pull && b.contains(&format!("task `{key}`")))
        .map(|(_, b)| b.clone())
}

/// A `check_run.completed` delivery of `name` on the head of `swarm/feature`.
fn check_run_completed(name: &str, conclusion: &str) -> Value {
    let mut v = in_repo(example("check_run", Some("completed")), "acme/webapp");
    set(&mut v, "/check_run/name", json!(name));
    set(&mut v, "/check_run/conclusion", json!(conclusion));
    set(&mut v, "/check_run/head_sha", json!(FEATURE_SHA));
    set(
        &mut v,
        "/check_run/check_suite/head_branch",
        json!("swarm/feature"),
    );
    set(
        &mut v,
        "/check_run/check_suite/head_sha",
        json!(FEATURE_SHA),
    );
    v
}

/// README section 6, "Merges wait for green": a merge task is not claimed while a check the
/// default branch's protection requires is pending or failing on the branch it merges; the
/// dashboard's API and the status comment on that branch's pull request say what it waits
/// for; a check that is not required does not count; a failure learned from a delivery keeps
/// it waiting; a pass nobody delivered is found by the engine's own look at the API, and then
/// the merge runs.
async fn a_merge_waits_for_its_required_checks_and_says_what_for(backend: Backend) {
    let db = TestDb::new(backend).await;
    let github = GitHubServer::start().await;
    let build = {
        let mut hub = github.hub();
        hub.branches
            .insert("swarm/feature".into(), FEATURE_SHA.into());
        hub.branches.insert("main".into(), "2".repeat(40));
        hub.protection.insert("main".into(), vec!["ci/test".into()]);
        hub.add_pull(7, "swarm/feature");
        hub.add_run(FEATURE_SHA, "lint", "completed", Some("failure"));
        hub.add_run(FEATURE_SHA, "ci/test", "in_progress", None)
    };
    let merge = "addressee: merger\nkind: merge\nbranch: main\nmerges: [swarm/feature]\nprompt: Merge swarm/feature.\n";
    let (e, s) = engine(
        Some(&db.url),
        &github,
        &[("merge-feature", merge)],
        "echo MERGED",
        "checks_interval = \"1s\"\n",
        false,
    )
    .await;
    let pending = "required checks: `swarm/feature`: ci/test pending";
    wait_for(
        "the gate's first look",
        Duration::from_secs(30),
        async || {
            events(&s, "merge-feature")
                .await
                .iter()
                .any(|(k, m)| *k == EventKind::Checks && m == &format!("waits for {pending}"))
        },
    )
    .await;
    let (code, body) = get(e.port, "/api/tasks/webapp/merge-feature")
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let view: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["waiting"], json!(pending), "{body}");
    wait_for(
        "the comment on the merged branch's pull request",
        Duration::from_secs(30),
        async || {
            comment_of(&github, 7, "merge-feature").is_some_and(|b| {
                b.contains("Waits for required checks: `swarm/feature`: ci/test pending.")
            })
        },
    )
    .await;

    // The required check fails, and a delivery says so: still waiting, now for a failure.
    {
        let mut hub = github.hub();
        let run = hub.commit_runs.iter_mut().find(|r| r.id == build).unwrap();
        run.status = "completed".into();
        run.conclusion = Some("failure".into());
    }
    deliver_processed(
        e.port,
        &s,
        "check_run",
        "c-1",
        &check_run_completed("ci/test", "failure"),
    )
    .await;
    wait_for("the failure seen", Duration::from_secs(30), async || {
        events(&s, "merge-feature")
            .await
            .iter()
            .any(|(k, m)| *k == EventKind::Checks && m.ends_with("`swarm/feature`: ci/test failed"))
    })
    .await;
    wait_for(
        "the comment saying it",
        Duration::from_secs(30),
        async || {
            comment_of(&github, 7, "merge-feature").is_some_and(|b| {
                b.contains("Waits for required checks: `swarm/feature`: ci/test failed.")
            })
        },
    )
    .await;

    // Re-run and green, with no delivery: the engine's own look finds it, and the merge runs.
    github
        .hub()
        .add_run(FEATURE_SHA, "ci/test", "completed", Some("success"));
    wait_for("the merge's run", Duration::from_secs(60), async || {
        s.task("webapp", "merge-feature")
            .await
            .unwrap()
            .is_some_and(|t| t.status.as_str() == "completed")
    })
    .await;
    let log = events(&s, "merge-feature").await;
    let passed = log
        .iter()
        .position(|(k, m)| *k == EventKind::Checks && m == "required checks passed")
        .unwrap_or_else(|| panic!("{log:?}\n{}", e.log()));
    let claimed = log
        .iter()
        .position(|(k, _)| *k == EventKind::Claimed)
        .unwrap_or_else(|| panic!("{log:?}"));
    assert!(passed < claimed, "claimed only once green: {log:?}");
    assert_eq!(
        log.iter().filter(|(k, _)| *k == EventKind::Claimed).count(),
        1,
        "{log:?}"
    );
    drop(e);
    db.drop_db().await;
}

/// README section 6, "Pull requests": a pull request a person opens for a task's branch gets
/// the task's status comment at once (not at the task's next change), and its end (merged,
/// closed) is recorded on the task; the queue position in a comment moves when the tasks
/// ahead run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_gets_its_comment_at_once_and_its_queue_place_moves() {
    let github = GitHubServer::start().await;
    {
        let mut hub = github.hub();
        hub.permissions.insert("ann".into(), "write".into());
        hub.add_pull(13, "swarm/a3");
    }
    let (e, s) = engine(
        None,
        &github,
        &[
            ("feature", "addressee: solo\nprompt: Build it.\n"),
            ("a1", "addressee: worker-a\nprompt: one\n"),
            ("a2", "addressee: worker-a\nprompt: two\n"),
            ("a3", "addressee: worker-a\nprompt: three\n"),
        ],
        "sleep 2; echo done",
        "",
        false,
    )
    .await;

    // The place of a3 as its comment shows it, each time it changes, until it runs.
    let mut seen: Vec<String> = Vec::new();
    wait_for("a3 running", Duration::from_secs(60), async || {
        if let Some(b) = comment_of(&github, 13, "a3") {
            let line = b
                .lines()
                .find(|l| l.starts_with("**") && !l.starts_with("**coding-swarm**"))
                .unwrap_or("")
                .to_string();
            if seen.last() != Some(&line) {
                seen.push(line.clone());
            }
            return line.starts_with("**Running**");
        }
        false
    })
    .await;
    let ahead_of = |who: &str| {
        seen.iter()
            .position(|l| l.contains(&format!("queue of `worker-a`, behind `{who}` (running)")))
    };
    let (first, second) = (ahead_of("a1"), ahead_of("a2"));
    assert!(
        first.is_some_and(|f| second.is_some_and(|n| f < n)),
        "the place moved from behind a1 to behind a2: {seen:?}"
    );
    assert!(
        seen[second.unwrap()].contains("Place 1 in the queue"),
        "{seen:?}"
    );

    // `feature` finished long ago, with no pull request; one is opened by a person.
    wait_for("feature done", Duration::from_secs(60), async || {
        s.task("webapp", "feature")
            .await
            .unwrap()
            .is_some_and(|t| t.status.as_str() == "completed")
    })
    .await;
    assert!(comment_of(&github, 7, "feature").is_none());
    github.hub().pulls.insert(7, Pull::open("swarm/feature"));
    let mut opened = in_repo(example("pull_request", Some("opened")), "acme/webapp");
    set(&mut opened, "/number", json!(7));
    set(&mut opened, "/pull_request/number", json!(7));
    set(
        &mut opened,
        "/pull_request/head/ref",
        json!("swarm/feature"),
    );
    user(&mut opened, "/pull_request/user", "ann", "User");
    deliver_processed(e.port, &s, "pull_request", "pr-1", &opened).await;
    wait_for(
        "the comment on the new pull request",
        Duration::from_secs(20),
        async || comment_of(&github, 7, "feature").is_some_and(|b| b.contains("**Succeeded**")),
    )
    .await;
    let mut closed = in_repo(example("pull_request", Some("closed")), "acme/webapp");
    set(&mut closed, "/number", json!(7));
    set(&mut closed, "/pull_request/number", json!(7));
    set(&mut closed, "/pull_request/merged", json!(true));
    set(
        &mut closed,
        "/pull_request/head/ref",
        json!("swarm/feature"),
    );
    user(&mut closed, "/pull_request/user", "ann", "User");
    deliver_processed(e.port, &s, "pull_request", "pr-2", &closed).await;
    let log = events(&s, "feature").await;
    let prs: Vec<&str> = log
        .iter()
        .filter(|(k, _)| *k == EventKind::PullRequest)
        .map(|(_, m)| m.as_str())
        .collect();
    assert_eq!(
        prs,
        [
            "pull request #7 opened (by ann)",
            "pull request #7 merged (by ann)"
        ],
        "{log:?}"
    );
}

/// README section 6, "Check runs": with a GitHub App, a task is the check run `swarm/<key>`
/// on its branch head (queued, in progress, completed with its conclusion; one per commit,
/// updated in place), with a summary and a link to its page; "Re-run" on it runs the task
/// again. A request to the manager in a comment is acknowledged with "eyes", not a reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_app_a_task_is_a_check_run_that_can_be_rerun() {
    let github = GitHubServer::start().await;
    {
        let mut hub = github.hub();
        hub.permissions.insert("ann".into(), "write".into());
        hub.branches
            .insert("swarm/feature".into(), FEATURE_SHA.into());
        hub.add_pull(7, "swarm/feature");
    }
    let (e, s) = engine(
        None,
        &github,
        &[("feature", "addressee: solo\nprompt: Build it.\n")],
        "echo built it",
        "",
        true,
    )
    .await;
    let done =
        async |generation: i32| {
            wait_for(
                &format!("generation {generation} done"),
                Duration::from_secs(60),
                async || {
                    s.task("webapp", "feature").await.unwrap().is_some_and(|t| {
                        t.generation == generation && t.status.as_str() == "completed"
                    }) && github.hub().runs_named("swarm/feature").iter().any(|r| {
                        r.conclusion.as_deref() == Some("success")
                            && r.body["output"]["summary"]
                                .as_str()
                                .is_some_and(|s| s.contains("built it"))
                    })
                },
            )
            .await;
        };
    done(1).await;
    let runs = github.hub().runs_named("swarm/feature");
    assert_eq!(runs.len(), 1, "one check run per commit: {runs:?}");
    let run = &runs[0];
    assert_eq!(run.sha, FEATURE_SHA);
    assert_eq!(run.status, "completed");
    assert_eq!(
        run.body["details_url"],
        json!("https://swarm.example.test/tasks/webapp/feature"),
        "{run:?}"
    );
    assert_eq!(run.body["output"]["title"], json!("Succeeded"));
    let summary = run.body["output"]["summary"].as_str().unwrap();
    assert!(summary.starts_with("Branch `swarm/feature`."), "{summary}");
    // No commit status beside the check run.
    assert!(github.hub().statuses.is_empty());

    // "Re-run", by a writer.
    let mut rerun = in_repo(example("check_run", Some("rerequested")), "acme/webapp");
    set(&mut rerun, "/check_run/name", json!("swarm/feature"));
    set(&mut rerun, "/check_run/head_sha", json!(FEATURE_SHA));
    user(&mut rerun, "/sender", "ann", "User");
    deliver_processed(e.port, &s, "check_run", "rr-1", &rerun).await;
    done(2).await;
    let log = events(&s, "feature").await;
    assert!(
        log.iter()
            .any(|(_, m)| m.contains("@ann on GitHub (Re-run)")),
        "{log:?}"
    );
    // The same commit: the same check run, updated in place.
    wait_for(
        "the check run of generation 2",
        Duration::from_secs(30),
        async || {
            github.hub().seen.iter().any(|r| {
                r.method == "PATCH"
                    && r.path.contains("/check-runs/")
                    && r.body["conclusion"] == "success"
            })
        },
    )
    .await;
    let writes: Vec<String> = github
        .hub()
        .seen
        .iter()
        .filter(|r| r.path.contains("/check-runs") && r.method != "GET")
        .map(|r| format!("{} {}", r.method, r.body["status"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        writes.iter().filter(|w| w.starts_with("POST")).count(),
        1,
        "{writes:?}"
    );
    assert!(writes.iter().any(|w| w.starts_with("PATCH")), "{writes:?}");
    assert_eq!(github.hub().runs_named("swarm/feature").len(), 1);
    // A redelivery of the same "Re-run" does not run it a third time.
    let (code, text) = deliver(e.port, "check_run", "rr-1", &rerun, signed(&rerun)).await;
    assert!((200..300).contains(&code), "{code} {text}");

    // A request to the manager: "eyes" on the comment, and no reply.
    let mut ask = in_repo(example("issue_comment", Some("created")), "acme/webapp");
    set(&mut ask, "/comment/id", json!(4242));
    set(
        &mut ask,
        "/comment/body",
        json!("@swarm please add a test for the empty form"),
    );
    user(&mut ask, "/comment/user", "ann", "User");
    set(&mut ask, "/issue/number", json!(7));
    // The examples hold no comment on a pull request; GitHub marks one with
    // `issue.pull_request` ("issue_comment" webhook: "if the issue is a pull request").
    ask["issue"]["pull_request"] =
        json!({"url": "https://api.github.com/repos/acme/webapp/pulls/7"});
    deliver_processed(e.port, &s, "issue_comment", "ask-1", &ask).await;
    wait_for("the reaction", Duration::from_secs(20), async || {
        github
            .hub()
            .reactions
            .contains(&("issues".to_string(), 4242, "eyes".to_string()))
    })
    .await;
    assert_eq!(
        s.task("webapp", "feature")
            .await
            .unwrap()
            .unwrap()
            .generation,
        2
    );
    assert!(
        !github
            .hub()
            .comments
            .values()
            .any(|(_, b)| b.contains("will look at this")),
        "a reply that adds nothing is not written"
    );
}

//! Closing the pull-request loop: reviews and failed checks on a task's branch wake the
//! project manager. A running `swarm up` gets signed deliveries made from GitHub's own example
//! payloads (`@octokit/webhooks-examples`), and reads the rest from the HTTP-level fake GitHub.
//! Both databases.

use std::process::Child;
use std::time::Duration;

use coding_swarm::model::green::{render, ActivationItem};
use coding_swarm::model::TaskRow;
use coding_swarm::store::{Store, TaskFilter};
use serde_json::{json, Value};

use crate::ghapi::{GitHubServer, Review};
use crate::github::{deliver_processed, free_port, get, repo_with_task, start_up, write_config_on};
use crate::payloads::{example, in_repo, set, user};
use crate::support::{wait_for, Backend, TestDb, TestRepo};

crate::on_both_backends!(
    a_review_requesting_changes_wakes_the_manager_once_with_every_comment,
    failed_checks_on_the_branch_head_wake_the_manager_until_the_cap,
);

const BRANCH: &str = "swarm/feature";
const PULL: u64 = 7;

struct Engine {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
    _repo: TestRepo,
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `swarm up` on `db` with the project `acme/webapp` (one task, `feature`, on
/// `swarm/feature`), its agent doing nothing; returns once the task is synced.
async fn engine(db: &TestDb, github: &GitHubServer) -> Engine {
    let repo = repo_with_task();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    write_config_on(
        dir.path(),
        Some(&db.url),
        port,
        &github.url,
        &repo.url(),
        "echo looked",
    );
    let child = start_up(dir.path(), false);
    let e = Engine {
        child,
        port,
        _dir: dir,
        _repo: repo,
    };
    wait_for(
        "the engine and its first sync",
        Duration::from_secs(60),
        async || {
            get(e.port, "/healthz").await.is_some()
                && db.store.task("webapp", "feature").await.unwrap().is_some()
        },
    )
    .await;
    e
}

/// The project manager's activations, oldest first.
async fn activations(s: &Store) -> Vec<TaskRow> {
    let mut all: Vec<TaskRow> = s
        .list(&TaskFilter::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.origin.as_str() == "engine")
        .collect();
    all.sort_by_key(|t| t.id);
    all
}

fn items(all: &[TaskRow]) -> Vec<ActivationItem> {
    all.iter().flat_map(|t| t.context.clone()).collect()
}

/// A `pull_request_review.submitted` delivery of review `id` by `login` (`kind`), in `state`.
fn review(id: u64, login: &str, kind: &str, state: &str, body: &str) -> Value {
    let mut v = in_repo(
        example("pull_request_review", Some("submitted")),
        "acme/webapp",
    );
    set(&mut v, "/review/id", json!(id));
    set(&mut v, "/review/state", json!(state));
    set(&mut v, "/review/body", json!(body));
    user(&mut v, "/review/user", login, kind);
    user(&mut v, "/sender", login, kind);
    set(&mut v, "/pull_request/number", json!(PULL));
    set(&mut v, "/pull_request/head/ref", json!(BRANCH));
    v
}

/// A `pull_request_review_comment.created` delivery of comment `id` of review `review`.
fn review_comment(review: u64, id: u64, login: &str, body: &str) -> Value {
    let mut v = in_repo(
        example("pull_request_review_comment", Some("created")),
        "acme/webapp",
    );
    set(&mut v, "/comment/id", json!(id));
    set(&mut v, "/comment/pull_request_review_id", json!(review));
    set(&mut v, "/comment/body", json!(body));
    user(&mut v, "/comment/user", login, "User");
    set(&mut v, "/pull_request/number", json!(PULL));
    set(&mut v, "/pull_request/head/ref", json!(BRANCH));
    v
}

/// GitHub's record of review `id` with two comments on the diff.
fn two_comment_review(login: &str, kind: &str) -> Review {
    Review {
        pull: PULL,
        login: login.into(),
        kind: kind.into(),
        state: "CHANGES_REQUESTED".into(),
        body: "Two things before this can go in.".into(),
        comments: vec![
            (
                901,
                "src/login.rs".into(),
                42,
                "@@ -40,3 +40,4 @@ fn login() {\n     let user = find(name);\n+    user.unwrap()"
                    .into(),
                "Do not unwrap here: an unknown name must give a 401.".into(),
            ),
            (
                902,
                "tests/login.rs".into(),
                7,
                "@@ -1,2 +1,8 @@\n+#[test]\n+fn logs_in() {".into(),
                "Add a test for the empty password.".into(),
            ),
        ],
    }
}

async fn a_review_requesting_changes_wakes_the_manager_once_with_every_comment(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let github = GitHubServer::start().await;
    {
        let mut hub = github.hub();
        hub.add_pull(PULL, BRANCH);
        for (who, p) in [
            ("writer", "write"),
            ("reader", "read"),
            ("swarm-bot", "admin"),
        ] {
            hub.permissions.insert(who.into(), p.into());
        }
        hub.reviews.insert(1, two_comment_review("writer", "User"));
        hub.reviews.insert(2, two_comment_review("reader", "User"));
        hub.reviews
            .insert(3, two_comment_review("swarm-bot", "User"));
        hub.reviews
            .insert(4, two_comment_review("lint-bot[bot]", "Bot"));
    }
    let e = engine(&db, &github).await;

    // GitHub sends each comment of a review as a delivery of its own, and the review: all
    // three make one item of one activation, with both comments, their files and lines.
    let c1 = review_comment(
        1,
        901,
        "writer",
        "Do not unwrap here: an unknown name must give a 401.",
    );
    let c2 = review_comment(1, 902, "writer", "Add a test for the empty password.");
    let r = review(
        1,
        "writer",
        "User",
        "changes_requested",
        "Two things before this can go in.",
    );
    deliver_processed(e.port, s, "pull_request_review_comment", "rc-1", &c1).await;
    deliver_processed(e.port, s, "pull_request_review_comment", "rc-2", &c2).await;
    deliver_processed(e.port, s, "pull_request_review", "r-1", &r).await;
    let all = activations(s).await;
    assert_eq!(all.len(), 1, "one activation: {:?}", items(&all));
    let got = items(&all);
    assert_eq!(got.len(), 1, "one item: {got:?}");
    let ActivationItem::Review {
        pull_request,
        branch,
        task,
        author,
        state,
        comments,
        ..
    } = &got[0]
    else {
        panic!("{got:?}")
    };
    assert_eq!(
        (
            *pull_request,
            branch.as_str(),
            task.as_deref(),
            author.as_str(),
            state.as_str()
        ),
        (PULL, BRANCH, Some("feature"), "writer", "changes_requested")
    );
    assert_eq!(comments.len(), 2, "{comments:?}");
    let prompt = render(&got);
    for want in [
        "writer requested changes on pull request #7 (branch `swarm/feature`, task `feature`)",
        "> Two things before this can go in.",
        "`src/login.rs`, line 42:",
        "+    user.unwrap()",
        "> Do not unwrap here: an unknown name must give a 401.",
        "`tests/login.rs`, line 7:",
        "> Add a test for the empty password.",
    ] {
        assert!(prompt.contains(want), "{want}:\n{prompt}");
    }

    // The same review delivered again (a redelivery under a new id) starts nothing new.
    deliver_processed(e.port, s, "pull_request_review", "r-1-again", &r).await;
    // A reader's review, the engine's own (its token's login), and a bot's start nothing,
    // and neither does an approval.
    let reader = review(2, "reader", "User", "changes_requested", "No.");
    deliver_processed(e.port, s, "pull_request_review", "r-2", &reader).await;
    let own = review(3, "swarm-bot", "User", "changes_requested", "No.");
    deliver_processed(e.port, s, "pull_request_review", "r-3", &own).await;
    let bot = review(4, "lint-bot[bot]", "Bot", "changes_requested", "No.");
    deliver_processed(e.port, s, "pull_request_review", "r-4", &bot).await;
    let bots_comment = {
        let mut v = review_comment(4, 903, "lint-bot[bot]", "nit");
        user(&mut v, "/comment/user", "lint-bot[bot]", "Bot");
        v
    };
    deliver_processed(
        e.port,
        s,
        "pull_request_review_comment",
        "rc-4",
        &bots_comment,
    )
    .await;
    github.hub().reviews.insert(
        5,
        Review {
            state: "APPROVED".into(),
            ..two_comment_review("writer", "User")
        },
    );
    let approved = review(5, "writer", "User", "approved", "Fine.");
    deliver_processed(e.port, s, "pull_request_review", "r-5", &approved).await;
    let after = activations(s).await;
    assert_eq!(
        items(&after).len(),
        1,
        "nothing from a redelivery, a reader, the engine, a bot or an approval: {:?}",
        items(&after)
    );
    db.drop_db().await;
}

/// Sets the head of the task's branch on the fake GitHub.
fn head(github: &GitHubServer, sha: &str) {
    github.hub().branches.insert(BRANCH.into(), sha.into());
}

fn sha(n: u32) -> String {
    format!("{n:040x}")
}

/// A failed `check_run.completed` of GitHub Actions job `id` on `sha`.
fn failed_check_run(id: u64, name: &str, sha: &str) -> Value {
    let mut v = in_repo(example("check_run", Some("completed")), "acme/webapp");
    set(&mut v, "/check_run/id", json!(id));
    set(&mut v, "/check_run/name", json!(name));
    set(&mut v, "/check_run/head_sha", json!(sha));
    set(&mut v, "/check_run/conclusion", json!("failure"));
    set(
        &mut v,
        "/check_run/details_url",
        json!(format!(
            "https://github.com/acme/webapp/actions/runs/1/job/{id}"
        )),
    );
    set(&mut v, "/check_run/app/slug", json!("github-actions"));
    set(&mut v, "/check_run/check_suite/head_branch", json!(BRANCH));
    set(&mut v, "/check_run/check_suite/head_sha", json!(sha));
    v
}

async fn failed_checks_on_the_branch_head_wake_the_manager_until_the_cap(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let github = GitHubServer::start().await;
    // A long log: only its end reaches the manager (16 KiB by default).
    let long_log = format!(
        "EARLY LINE that is cut\n{}error[E0308]: mismatched types at src/login.rs:42\n",
        "compiling...\n".repeat(4000)
    );
    {
        let mut hub = github.hub();
        hub.add_pull(PULL, BRANCH);
        hub.job_logs.insert(501, long_log.clone());
        hub.job_logs
            .insert(502, "running tests\ntest logs_in ... FAILED\n".into());
        hub.jobs.insert(
            9001,
            vec![
                (502, "test".into(), "failure".into()),
                (503, "lint".into(), "success".into()),
            ],
        );
        hub.check_runs.insert(
            601,
            (77, "coverage".into(), "timed_out".into(), "codecov".into()),
        );
        hub.check_runs
            .insert(602, (77, "docs".into(), "success".into(), "codecov".into()));
    }
    head(&github, &sha(1));
    let e = engine(&db, &github).await;

    // Round 1: a failed check run (an Actions job) and a failed workflow run on the head.
    let run = failed_check_run(501, "build", &sha(1));
    deliver_processed(e.port, s, "check_run", "c-1", &run).await;
    let mut workflow = in_repo(example("workflow_run", Some("completed")), "acme/webapp");
    set(&mut workflow, "/workflow_run/id", json!(9001));
    set(&mut workflow, "/workflow_run/name", json!("CI"));
    set(&mut workflow, "/workflow_run/conclusion", json!("failure"));
    set(&mut workflow, "/workflow_run/head_branch", json!(BRANCH));
    set(&mut workflow, "/workflow_run/head_sha", json!(sha(1)));
    deliver_processed(e.port, s, "workflow_run", "w-1", &workflow).await;
    // Once the manager has run, the same failed job seen again as a check run, and a
    // redelivery of the first check run, add nothing.
    wait_for(
        "the activation's run",
        Duration::from_secs(60),
        async || {
            let all = activations(s).await;
            !all.is_empty() && all.iter().all(|t| t.status.as_str() == "completed")
        },
    )
    .await;
    deliver_processed(
        e.port,
        s,
        "check_run",
        "c-1-job",
        &failed_check_run(502, "test", &sha(1)),
    )
    .await;
    deliver_processed(e.port, s, "check_run", "c-1-again", &run).await;
    // A failure on a commit that is no longer the head is ignored.
    deliver_processed(
        e.port,
        s,
        "check_run",
        "c-old",
        &failed_check_run(510, "build", &sha(0)),
    )
    .await;

    let got = items(&activations(s).await);
    let checks: Vec<_> = got
        .iter()
        .filter_map(|i| match i {
            ActivationItem::CiFailed {
                sha: at,
                round,
                max_rounds,
                checks,
                ..
            } => Some((at.clone(), *round, *max_rounds, checks.clone())),
            _ => None,
        })
        .collect();
    let all_checks: Vec<_> = checks.iter().flat_map(|c| c.3.clone()).collect();
    assert_eq!(
        all_checks.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["check:501", "check:502"],
        "{:?}",
        all_checks
            .iter()
            .map(|c| (&c.id, &c.name))
            .collect::<Vec<_>>()
    );
    assert!(
        checks
            .iter()
            .all(|c| (c.0.as_str(), c.1, c.2) == (sha(1).as_str(), 1, 3)),
        "{checks:?}"
    );
    let build = &all_checks[0];
    let log = build.log.as_deref().expect("the job's log");
    assert!(log.contains("mismatched types at src/login.rs:42"), "{log}");
    assert!(!log.contains("EARLY LINE"), "the beginning is cut");
    assert!(log.len() <= 16 * 1024 + 64, "bounded: {} bytes", log.len());
    assert_eq!(all_checks[1].name, "CI / test");
    assert!(all_checks[1]
        .log
        .as_deref()
        .is_some_and(|l| l.contains("test logs_in ... FAILED")));
    let prompt = render(&got);
    for want in [
        "CI failed on branch `swarm/feature`, task `feature` at",
        "(fix round 1 of 3)",
        "`build`: failure (https://github.com/acme/webapp/actions/runs/1/job/501)",
        "mismatched types at src/login.rs:42",
    ] {
        assert!(prompt.contains(want), "{want}:\n{prompt}");
    }

    // Rounds 2 and 3: a legacy commit status, and a check suite whose failed run is listed
    // from the API; round 4 is past the cap.
    head(&github, &sha(2));
    let mut status = in_repo(example("status", None), "acme/webapp");
    set(&mut status, "/sha", json!(sha(2)));
    set(&mut status, "/state", json!("error"));
    set(&mut status, "/context", json!("ci/jenkins"));
    set(
        &mut status,
        "/target_url",
        json!("https://jenkins.example/job/1"),
    );
    set(
        &mut status,
        "/branches",
        json!([{"name": BRANCH, "commit": {"sha": sha(2), "url": ""}, "protected": false}]),
    );
    deliver_processed(e.port, s, "status", "s-2", &status).await;
    head(&github, &sha(3));
    let mut suite = in_repo(example("check_suite", Some("completed")), "acme/webapp");
    set(&mut suite, "/check_suite/id", json!(77));
    set(&mut suite, "/check_suite/conclusion", json!("failure"));
    set(&mut suite, "/check_suite/head_branch", json!(BRANCH));
    set(&mut suite, "/check_suite/head_sha", json!(sha(3)));
    deliver_processed(e.port, s, "check_suite", "cs-3", &suite).await;
    head(&github, &sha(4));
    deliver_processed(
        e.port,
        s,
        "check_run",
        "c-4",
        &failed_check_run(504, "build", &sha(4)),
    )
    .await;

    let got = items(&activations(s).await);
    let rounds: Vec<(String, u32, Vec<String>)> = got
        .iter()
        .filter_map(|i| match i {
            ActivationItem::CiFailed {
                sha: at,
                round,
                checks,
                ..
            } => Some((
                at.clone(),
                *round,
                checks.iter().map(|c| c.name.clone()).collect(),
            )),
            _ => None,
        })
        .filter(|r| r.0 != sha(1))
        .collect();
    assert_eq!(
        rounds,
        [
            (sha(2), 2, vec!["ci/jenkins".to_string()]),
            (sha(3), 3, vec!["coverage".to_string()]),
            (sha(4), 4, vec!["build".to_string()]),
        ]
    );
    let last = render(&got[got.len() - 1..]);
    assert!(
        last.contains("the cap of 3 fix rounds is reached"),
        "{last}"
    );
    assert!(last.contains("Give up on this step"), "{last}");
    db.drop_db().await;
}

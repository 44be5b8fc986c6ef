//! GitHub, the parts README section 6 promises that other modules leave out, with a real
//! `swarm up` against the fake GitHub: the draft pull request opened for a finished
//! implementation (`draft_pull_requests`, on by default), and comment commands given in a review
//! (`pull_request_review`) and in a review comment (`pull_request_review_comment`): `/swarm stop`
//! and an unknown command, answered with the list of commands.

use std::process::Child;
use std::time::Duration;

use coding_swarm::spec::{ErrorClass, TaskState};
use serde_json::Value;

use crate::ghapi::GitHubServer;
use crate::github::{deliver, free_port, get, signed, start_up, write_config_on};
use crate::payloads::{example, in_repo, set, user};
use crate::support::{wait_for, TestDb, TestRepo};

struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A review submitted by `author` with `body` on pull request `number` (branch `head`):
/// GitHub's `pull_request_review` example with those fields changed.
fn review(author: &str, number: u64, head: &str, body: &str) -> Value {
    let mut v = in_repo(
        example("pull_request_review", Some("submitted")),
        "acme/webapp",
    );
    set(&mut v, "/review/body", body.into());
    set(&mut v, "/review/state", "commented".into());
    user(&mut v, "/review/user", author, "User");
    user(&mut v, "/sender", author, "User");
    set(&mut v, "/pull_request/number", number.into());
    set(&mut v, "/pull_request/head/ref", head.into());
    v
}

/// A comment on a line of a pull request's diff: GitHub's `pull_request_review_comment`
/// example with its author, body, pull request and branch changed.
fn review_comment(author: &str, number: u64, head: &str, body: &str) -> Value {
    let mut v = in_repo(
        example("pull_request_review_comment", Some("created")),
        "acme/webapp",
    );
    set(&mut v, "/comment/body", body.into());
    user(&mut v, "/comment/user", author, "User");
    user(&mut v, "/sender", author, "User");
    set(&mut v, "/pull_request/number", number.into());
    set(&mut v, "/pull_request/head/ref", head.into());
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draft_pull_request_and_commands_in_reviews_and_review_comments() {
    let db = TestDb::sqlite().await;
    let github = GitHubServer::start().await;
    {
        let mut hub = github.hub();
        hub.permissions.insert("writer".into(), "write".into());
        // The branch exists on GitHub once the worker pushed it; the fake does not see pushes.
        hub.branches.insert(
            "swarm/feature".into(),
            "0123456789abcdef0123456789abcdef01234567".into(),
        );
    }
    let repo = TestRepo::new();
    repo.commit(
        &[
            (
                ".ai/tasks/feature.yaml",
                Some("addressee: worker-a\nprompt: |\n  \n  Build the feature.\n  With care.\n"),
            ),
            (
                ".ai/tasks/slow.yaml",
                Some("addressee: worker-b\nprompt: Take your time.\n"),
            ),
        ],
        "two tasks",
    );
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let port = free_port();
    write_config_on(
        dir.path(),
        Some(&db.url),
        port,
        &github.url,
        &repo.url(),
        &format!(
            "if [ \"$SWARM_TASK_KEY\" = slow ]; then for i in $(seq 1200); do [ -f {} ] && break; sleep 0.1; done; fi; \
             echo changed > \"out-$SWARM_TASK_KEY.txt\"; echo \"did it for @ann <b>now</b>\"",
            gate.display()
        ),
    );
    let config = dir.path().join("swarm.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "min_write_interval = \"20ms\"\n",
            "min_write_interval = \"20ms\"\n",
        ),
    )
    .unwrap();
    let _up = Up(start_up(dir.path(), false));
    let s = &db.store;

    // The finished implementation gets its draft pull request, and its comment goes there.
    wait_for(
        "the draft pull request",
        Duration::from_secs(60),
        async || !github.hub().created_pulls.is_empty(),
    )
    .await;
    let created = github.hub().created_pulls.clone();
    assert_eq!(created.len(), 1, "{created:?}");
    let p = &created[0];
    assert_eq!(p["title"], "swarm: Build the feature.");
    assert_eq!(
        (p["head"].as_str(), p["base"].as_str()),
        (Some("swarm/feature"), Some("main"))
    );
    assert_eq!(p["draft"], true);
    assert_eq!(
        p["body"],
        "Opened by coding-swarm for task `feature`.\n\ndid it for @\u{200b}ann <b>now</b>"
    );
    let number = *github.hub().pulls.keys().next().unwrap();
    let on_pull = |github: &GitHubServer| -> Vec<String> {
        github
            .hub()
            .comments
            .values()
            .filter(|(n, _)| *n == number)
            .map(|(_, b)| b.clone())
            .collect()
    };
    wait_for(
        "the status comment on the draft",
        Duration::from_secs(30),
        async || on_pull(&github).iter().any(|b| b.contains("**Succeeded**")),
    )
    .await;

    // `/swarm stop` in a review comment stops the running task; the answer goes to the
    // conversation.
    wait_for(
        "the slow task to run",
        Duration::from_secs(30),
        async || {
            s.task("webapp", "slow")
                .await
                .unwrap()
                .is_some_and(|t| t.state() == TaskState::Running)
        },
    )
    .await;
    let c = review_comment("writer", number, "swarm/feature", "/swarm stop slow");
    let (code, text) = deliver(port, "pull_request_review_comment", "rc-1", &c, signed(&c)).await;
    assert_eq!(code, 202, "{text}");
    wait_for("the stop", Duration::from_secs(30), async || {
        s.task("webapp", "slow").await.unwrap().is_some_and(|t| {
            t.state() == TaskState::Completed
                && t.result()
                    .is_some_and(|r| r.error_class == Some(ErrorClass::Cancelled))
        })
    })
    .await;
    wait_for(
        "the answer to the stop",
        Duration::from_secs(30),
        async || {
            on_pull(&github)
                .iter()
                .any(|b| b.contains("@writer stopping `slow`."))
        },
    )
    .await;

    // An unknown command in a review is answered with the commands there are.
    let r = review(
        "writer",
        number,
        "swarm/feature",
        "Looks fine.\n/swarm help",
    );
    let (code, text) = deliver(port, "pull_request_review", "rv-1", &r, signed(&r)).await;
    assert_eq!(code, 202, "{text}");
    wait_for("the answer to help", Duration::from_secs(30), async || {
        on_pull(&github).iter().any(|b| {
            b.contains("I do not know `/swarm help`. I understand `/swarm status`, `/swarm retry KEY`, `/swarm stop KEY`, and `@swarm <request>`")
        })
    })
    .await;
    let replies: Vec<String> = on_pull(&github)
        .into_iter()
        .filter(|b| b.contains("<!-- coding-swarm:reply -->"))
        .collect();
    assert_eq!(replies.len(), 2, "one answer each: {replies:?}");
    assert_eq!(
        github.hub().created_pulls.len(),
        1,
        "no second pull request"
    );
    std::fs::write(&gate, "").unwrap();
    let (_, scrape) = get(port, "/metrics").await.unwrap();
    crate::readiness::assert_labels_documented(&scrape);
    drop(_up);
    db.drop_db().await;
}

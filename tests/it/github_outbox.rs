//! The GitHub outbox of a running `swarm up`, as README section 6 ("How writes are queued")
//! promises it, observed through the fake GitHub's request log: a used-up primary rate limit
//! stops every request (the reads a write needs too) until `X-RateLimit-Reset`, the task's
//! changes coalesce meanwhile and are written once afterwards; other failures are retried after
//! 2^attempts seconds (at most 512), and a write with 15 attempts that fails again is given up,
//! removed, with an error in the log.

use std::process::Child;
use std::time::Duration;

use chrono::{DateTime, Utc};
use coding_swarm::store::OutboxKind;
use serde_json::json;

use crate::ghapi::GitHubServer;
use crate::github::{free_port, get, start_up, write_config_on};
use crate::support::{wait_for, TestDb, TestRepo};

/// An engine process, killed when dropped.
struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The value of the sample `series` in the engine's `/metrics`, if it has one.
async fn sample(port: u16, series: &str) -> Option<f64> {
    let (_, body) = get(port, "/metrics").await?;
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_up_rate_limit_stops_every_request_until_its_reset_and_the_writes_coalesce() {
    let db = TestDb::sqlite().await;
    let github = GitHubServer::start().await;
    github.hub().add_pull(7, "swarm/feature");
    // The engine's first request uses up the limit; it resets 10 s later.
    github.hub().exhaust_next = Some(Duration::from_secs(10));
    let repo = crate::github::repo_with_task();
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let port = free_port();
    write_config_on(
        dir.path(),
        Some(&db.url),
        port,
        &github.url,
        &repo.url(),
        // The run ends only once the test saw the limit used up.
        &format!(
            "for i in $(seq 1200); do [ -f {} ] && break; sleep 0.1; done; echo changed > out.txt; echo did it",
            gate.display()
        ),
    );
    let _up = Up(start_up(dir.path(), false));
    wait_for(
        "the engine's first GitHub request",
        Duration::from_secs(60),
        async || github.hub().primary_reset.is_some(),
    )
    .await;
    let reset = github.hub().primary_reset.unwrap();
    let s = &db.store;
    // The refused write waits, with why, and the wait is not counted as a failed attempt.
    wait_for(
        "the refused write's row to say why it waits",
        Duration::from_secs(8),
        async || {
            s.outbox_all().await.unwrap().iter().any(|r| {
                r.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("API rate limit exceeded"))
            })
        },
    )
    .await;
    for row in s.outbox_all().await.unwrap() {
        assert_eq!(row.attempts, 0, "a rate-limit wait is no attempt: {row:?}");
        if row.last_error.is_some() {
            assert_eq!(row.due_at, reset, "the refused write is due at the reset");
        }
    }
    std::fs::write(&gate, "").unwrap();
    wait_for("the run to succeed", Duration::from_secs(60), async || {
        s.task("webapp", "feature")
            .await
            .unwrap()
            .is_some_and(|t| t.result().is_some_and(|r| r.success))
    })
    .await;
    let completed = Utc::now();
    wait_for("the comment on #7", Duration::from_secs(60), async || {
        github.hub().comments.values().any(|(n, _)| *n == 7)
    })
    .await;
    wait_for("the commit status", Duration::from_secs(30), async || {
        !github.hub().statuses.is_empty()
    })
    .await;

    {
        let hub = github.hub();
        let seen = &hub.seen;
        let refused = &seen[0];
        let during: Vec<_> = seen[1..].iter().filter(|x| x.wall < reset).collect();
        assert!(
            during.is_empty(),
            "no request, read or write, between the refusal at {} and the reset at {reset}: {during:?}",
            refused.wall
        );
        // The run ended while writing was stopped, so what was queued before coalesced into the
        // final state: one comment created (never edited), one status.
        assert!(
            completed < reset,
            "the run ended after the reset: this test needs a less busy machine"
        );
        let comments: Vec<_> = hub.comments.values().filter(|(n, _)| *n == 7).collect();
        assert_eq!(comments.len(), 1, "{comments:?}");
        assert!(comments[0].1.contains("**Succeeded**"), "{}", comments[0].1);
        assert!(
            !seen.iter().any(|x| x.method == "PATCH"),
            "the comment was written once, in its last state"
        );
        let states: Vec<_> = hub
            .statuses
            .iter()
            .map(|(_, b)| b["state"].clone())
            .collect();
        assert_eq!(states, [json!("success")]);
    }
    let log = std::fs::read_to_string(dir.path().join("engine.log")).unwrap();
    assert!(
        log.contains(&format!("GitHub rate limit until {reset}")),
        "the log says until when: {log}"
    );
    assert_eq!(
        sample(
            port,
            "swarm_github_writes_total{kind=\"comment\",result=\"rate_limited\"}"
        )
        .await,
        Some(1.0)
    );
    assert_eq!(
        sample(
            port,
            "swarm_github_writes_total{kind=\"comment\",result=\"written\"}"
        )
        .await,
        Some(1.0)
    );
    drop(_up);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_write_waits_twice_as_long_each_time_up_to_512_s_and_is_given_up_after_15() {
    let db = TestDb::sqlite().await;
    let github = GitHubServer::start().await;
    github.hub().add_pull(7, "swarm/feature");
    github.hub().fail_writes = Some(502);
    let repo = TestRepo::new();
    repo.commit(&[("README.md", Some("x\n"))], "init");
    let s = &db.store;
    // Replies whose writes failed 5, 8, 9, 14 and 15 times already.
    let tries = [5, 8, 9, 14, 15];
    for n in tries {
        s.outbox_put(
            "acme/webapp",
            OutboxKind::Reply,
            &format!("r-{n}"),
            &json!({"number": 7, "body": format!("reply r-{n}")}),
            Utc::now(),
        )
        .await
        .unwrap();
        db.execute(&format!(
            "UPDATE github_outbox SET attempts = {n} WHERE target = 'r-{n}'"
        ))
        .await
        .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    write_config_on(
        dir.path(),
        Some(&db.url),
        port,
        &github.url,
        &repo.url(),
        "echo ok",
    );
    let _up = Up(start_up(dir.path(), false));
    wait_for(
        "one failed try of each",
        Duration::from_secs(60),
        async || {
            let rows = s.outbox_all().await.unwrap();
            rows.len() == 4 && rows.iter().all(|r| r.last_error.is_some())
        },
    )
    .await;
    let looked = Utc::now();
    let tried_at = |n: i32| -> Vec<DateTime<Utc>> {
        github
            .hub()
            .seen
            .iter()
            .filter(|x| x.method == "POST" && x.body["body"] == json!(format!("reply r-{n}")))
            .map(|x| x.wall)
            .collect()
    };
    for row in s.outbox_all().await.unwrap() {
        let n: i32 = row.target.strip_prefix("r-").unwrap().parse().unwrap();
        let at = tried_at(n);
        assert_eq!(at.len(), 1, "{}: tried once", row.target);
        assert_eq!(row.attempts, n + 1, "{row:?}");
        assert!(
            row.last_error.as_deref().unwrap().contains("502"),
            "{row:?}"
        );
        let wait = chrono::Duration::seconds(1 << n.min(9));
        assert!(
            row.due_at >= at[0] + wait && row.due_at <= looked + wait,
            "{}: after {n} failures the next try waits {wait}: due {} after a try at {}",
            row.target,
            row.due_at,
            at[0]
        );
    }
    assert_eq!(
        tried_at(15).len(),
        1,
        "the 16th try was made, and was the last"
    );
    let log = std::fs::read_to_string(dir.path().join("engine.log")).unwrap();
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains("r-15")
            && l.contains("giving up on a GitHub write after 15 attempts")),
        "{log}"
    );
    assert_eq!(
        log.lines().filter(|l| l.contains("giving up")).count(),
        1,
        "only the write with 15 attempts is given up: {log}"
    );
    assert_eq!(
        sample(
            port,
            "swarm_github_writes_total{kind=\"reply\",result=\"gave_up\"}"
        )
        .await,
        Some(1.0)
    );
    assert_eq!(
        sample(
            port,
            "swarm_github_writes_total{kind=\"reply\",result=\"retried\"}"
        )
        .await,
        Some(4.0)
    );
    assert_eq!(github.hub().comments.len(), 0);
    let (_, scrape) = get(port, "/metrics").await.unwrap();
    let families = crate::readiness::assert_labels_documented(&scrape);
    assert!(
        families.contains(&"swarm_github_writes_total".to_string()),
        "{families:?}"
    );
    drop(_up);
    db.drop_db().await;
}

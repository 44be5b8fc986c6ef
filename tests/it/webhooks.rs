//! Durable webhooks: a delivery is stored whole before it is answered, processed by the
//! leader from the database in arrival order, exactly once (also across a SIGKILL between the
//! answer and the processing, and when a standby accepted it), and forgotten after the
//! retention period once processed. Both databases.

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use coding_swarm::engine::leader;
use coding_swarm::model::transition::StopOutcome;
use coding_swarm::spec::TaskState;
use coding_swarm::steer::{self, SteerError};
use coding_swarm::store::{Receipt, Store, StoreError, Stored};
use serde_json::json;

use crate::ghapi::GitHubServer;
use crate::github::{
    deliver, free_port, get, issue_comment, replies, repo_with_task, signed, start_up,
    write_config_on,
};
use crate::payloads::{example, in_repo};
use crate::support::{apply, create_plan, task, wait_exit, wait_for, Backend, TestDb};

crate::on_both_backends!(
    a_delivery_is_stored_once_waits_in_arrival_order_and_is_forgotten_once_processed,
    a_commands_change_its_mark_and_its_reply_are_one_transaction,
    a_delivery_accepted_by_a_standby_killed_with_sigkill_is_processed_once_by_the_next_leader,
    ids_seen_before_the_migration_stay_duplicates,
);

async fn waiting_ids(s: &Store) -> Vec<String> {
    s.deliveries_waiting(100)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.delivery_id)
        .collect()
}

async fn a_delivery_is_stored_once_waits_in_arrival_order_and_is_forgotten_once_processed(
    backend: Backend,
) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let now = Utc::now();
    let body = br#"{"zen":"Keep it logically awesome."}"#;
    assert_eq!(
        s.store_delivery("d-1", "ping", body, now).await.unwrap(),
        Stored::New
    );
    // Arrival order is the order of storing, not of `received_at`.
    assert_eq!(
        s.store_delivery(
            "d-2",
            "issue_comment",
            b"{}",
            now - chrono::Duration::days(30)
        )
        .await
        .unwrap(),
        Stored::New
    );
    // A redelivery of one still waiting is not stored again, and is not a duplicate.
    assert_eq!(
        s.store_delivery("d-1", "ping", body, now).await.unwrap(),
        Stored::Waiting
    );
    let waiting = s.deliveries_waiting(100).await.unwrap();
    assert_eq!(waiting.len(), 2, "one row per delivery id");
    assert_eq!(
        (
            waiting[0].delivery_id.as_str(),
            waiting[0].event.as_str(),
            waiting[0].body.as_slice()
        ),
        ("d-1", "ping", &body[..]),
        "stored whole"
    );
    assert!(waiting[0].seq < waiting[1].seq);

    // Processed: a redelivery is a duplicate; a reply is queued with the mark.
    s.finish_delivery(&waiting[0], None, now).await.unwrap();
    let reply = json!({"number": 7, "body": "@writer done"});
    s.finish_delivery(&waiting[1], Some(("acme/webapp", &reply)), now)
        .await
        .unwrap();
    assert_eq!(
        s.store_delivery("d-1", "ping", body, now).await.unwrap(),
        Stored::Processed
    );
    assert!(waiting_ids(s).await.is_empty());
    let outbox = s.outbox_all().await.unwrap();
    assert_eq!(
        outbox
            .iter()
            .map(|r| (r.kind.as_str(), r.target.as_str()))
            .collect::<Vec<_>>(),
        [("reply", "d-2")]
    );

    // Retention: processed deliveries go once older than the period; waiting ones never do.
    assert_eq!(
        s.store_delivery("d-3", "push", b"{}", now - chrono::Duration::days(30))
            .await
            .unwrap(),
        Stored::New
    );
    assert_eq!(
        s.forget_processed_deliveries_before(now - chrono::Duration::days(7))
            .await
            .unwrap(),
        0,
        "processed just now"
    );
    assert_eq!(
        s.forget_processed_deliveries_before(now + chrono::Duration::seconds(1))
            .await
            .unwrap(),
        2
    );
    assert_eq!(waiting_ids(s).await, ["d-3"], "a waiting delivery stays");
    assert!(s.delivery("d-1").await.unwrap().is_none());
    // A redelivery after that is new again, and is processed.
    assert_eq!(
        s.store_delivery("d-1", "ping", body, now).await.unwrap(),
        Stored::New
    );
    assert_eq!(waiting_ids(s).await, ["d-3", "d-1"]);
    db.drop_db().await;
}

async fn a_commands_change_its_mark_and_its_reply_are_one_transaction(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    apply(
        s,
        "p",
        "c",
        create_plan(vec![task("t", "addressee: w\nprompt: p\n")]),
    )
    .await;
    let now = Utc::now();
    for id in ["stop", "retry", "refused", "missing"] {
        s.store_delivery(id, "issue_comment", b"{}", now)
            .await
            .unwrap();
    }
    let delivery = async |id: &str| s.delivery(id).await.unwrap().unwrap();
    let reply = |text: String| Some(("acme/webapp".to_string(), json!({ "body": text })));
    let replies = async || {
        s.outbox_all()
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.target, r.payload.0["body"].as_str().unwrap().to_string()))
            .collect::<Vec<_>>()
    };

    let d = delivery("stop").await;
    let receipt = Receipt::new(&d, |r: &Result<StopOutcome, SteerError>| {
        reply(format!("{:?}", r.as_ref().ok()))
    });
    assert_eq!(
        steer::stop_marking(s, "p", "t", "tester", Some(receipt))
            .await
            .unwrap(),
        StopOutcome::CancelledBeforeItRan
    );
    let d = delivery("retry").await;
    let receipt = Receipt::new(&d, |r: &Result<i32, SteerError>| {
        reply(format!("{:?}", r.as_ref().ok()))
    });
    assert_eq!(
        steer::retry_marking(s, "p", "t", "tester", Some(receipt))
            .await
            .unwrap(),
        2
    );
    let t = s.task("p", "t").await.unwrap().unwrap();
    assert_eq!((t.state(), t.generation), (TaskState::Pending, 2));
    // A refusal is an outcome too: answered, and the delivery processed.
    let d = delivery("refused").await;
    let receipt = Receipt::new(&d, |r: &Result<i32, SteerError>| {
        reply(r.as_ref().err().map(|e| e.to_string()).unwrap_or_default())
    });
    assert!(matches!(
        steer::retry_marking(s, "p", "t", "tester", Some(receipt)).await,
        Err(SteerError::Refused { .. })
    ));
    // A change that fails writes nothing: no reply, and its delivery still waits.
    let d = delivery("missing").await;
    let receipt = Receipt::new(&d, |_: &Result<i32, SteerError>| reply("never".into()));
    assert!(matches!(
        steer::retry_marking(s, "p", "nope", "tester", Some(receipt)).await,
        Err(SteerError::Store(_))
    ));
    // A delivery processed already (by an engine that overlapped this one, say) changes
    // nothing, and is not answered again.
    s.store_delivery("twice", "issue_comment", b"{}", now)
        .await
        .unwrap();
    let d = delivery("twice").await;
    s.finish_delivery(&d, None, now).await.unwrap();
    let receipt = Receipt::new(&d, |_: &Result<StopOutcome, SteerError>| {
        reply("never".into())
    });
    assert!(matches!(
        steer::stop_marking(s, "p", "t", "tester", Some(receipt)).await,
        Err(SteerError::Store(StoreError::DeliveryProcessed { .. }))
    ));
    let t = s.task("p", "t").await.unwrap().unwrap();
    assert_eq!(
        (t.state(), t.generation),
        (TaskState::Pending, 2),
        "not stopped"
    );
    s.finish_delivery(&d, Some(("acme/webapp", &json!({"body": "never"}))), now)
        .await
        .unwrap();
    assert_eq!(waiting_ids(s).await, ["missing"]);
    assert_eq!(
        replies().await,
        [
            ("stop".to_string(), "Some(CancelledBeforeItRan)".to_string()),
            ("retry".to_string(), "Some(2)".to_string()),
            (
                "refused".to_string(),
                "task p/t it is pending; only a completed task can be retried".to_string()
            ),
        ]
    );
    db.drop_db().await;
}

/// A database with the migrations before 0007 only, and a delivery id recorded the old way:
/// after the migration, its redelivery is still a duplicate.
async fn ids_seen_before_the_migration_stay_duplicates(backend: Backend) {
    use sqlx::Connection;
    let (dir, name) = (
        tempfile::tempdir().unwrap(),
        format!("swarm_webhooks_{}", std::process::id()),
    );
    let (url, folder) = match backend {
        Backend::Sqlite => (
            format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display()),
            "migrations/sqlite",
        ),
        Backend::Postgres => {
            let admin = crate::support::pg_admin_url();
            let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
            for sql in [
                format!("DROP DATABASE IF EXISTS {name}"),
                format!("CREATE DATABASE {name}"),
            ] {
                sqlx::query(&sql).execute(&mut c).await.unwrap();
            }
            let base = admin.rsplit_once('/').unwrap().0;
            (format!("{base}/{name}"), "migrations/postgres")
        }
    };
    let mut before =
        sqlx::migrate::Migrator::new(Path::new(env!("CARGO_MANIFEST_DIR")).join(folder))
            .await
            .unwrap();
    before.migrations = before
        .migrations
        .iter()
        .filter(|m| m.version < 7)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    let insert = "INSERT INTO webhook_deliveries (id, event, received_at) VALUES ('old-1', 'push', '2026-11-30T10:00:00Z')";
    match backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
            before.run(&mut c).await.unwrap();
            sqlx::query(insert).execute(&mut c).await.unwrap();
            c.close().await.unwrap();
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
            before.run(&mut c).await.unwrap();
            sqlx::query(insert).execute(&mut c).await.unwrap();
            c.close().await.unwrap();
        }
    }
    let s = Store::connect(&url).await.unwrap();
    assert_eq!(
        s.store_delivery("old-1", "push", b"{}", Utc::now())
            .await
            .unwrap(),
        Stored::Processed
    );
    assert_eq!(
        s.store_delivery("new-1", "push", b"{}", Utc::now())
            .await
            .unwrap(),
        Stored::New
    );
    assert_eq!(waiting_ids(&s).await, ["new-1"]);
    s.close().await;
    if let Backend::Postgres = backend {
        let mut c = sqlx::PgConnection::connect(&crate::support::pg_admin_url())
            .await
            .unwrap();
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut c)
            .await;
    }
}

/// The issue's test: a standby (another engine holds the leader lock) answers 202 to a
/// `/swarm retry` and stores it; it is SIGKILLed before anything processes it; the next engine
/// to lead processes it once: the task runs again once, one reply is written, and GitHub's
/// redeliveries are answered as they should be (waiting: 202, processed: duplicate). A second
/// command stored after it is processed after it, and 20 pings stored before it before it.
async fn a_delivery_accepted_by_a_standby_killed_with_sigkill_is_processed_once_by_the_next_leader(
    backend: Backend,
) {
    let db = TestDb::new(backend).await;
    let github = GitHubServer::start().await;
    {
        let mut hub = github.hub();
        hub.permissions.insert("writer".into(), "write".into());
        hub.add_pull(7, "swarm/feature");
    }
    let repo = repo_with_task();
    let dir = tempfile::tempdir().unwrap();
    let runlog = dir.path().join("runs.log");
    let port = free_port();
    let script = format!(
        "echo \"run $SWARM_TASK_KEY\" >> {}; echo changed > out.txt; echo did it",
        runlog.display()
    );
    write_config_on(
        dir.path(),
        Some(&db.url),
        port,
        &github.url,
        &repo.url(),
        &script,
    );
    let runs = || {
        std::fs::read_to_string(&runlog)
            .unwrap_or_default()
            .lines()
            .filter(|l| *l == "run feature")
            .count()
    };
    let s = &db.store;

    // Generation 1 runs to its end.
    let once = start_up(dir.path(), true);
    assert!(wait_exit(once, Duration::from_secs(60), "swarm up --once")
        .await
        .success());
    assert_eq!(runs(), 1);

    // Another engine leads: this one is a standby. It stores and answers, and processes nothing.
    let rival = leader::acquire(&db.url, &dir.path().join("d"), || {})
        .await
        .unwrap();
    let mut standby = start_up(dir.path(), false);
    wait_for(
        "the standby's HTTP server",
        Duration::from_secs(30),
        async || get(port, "/healthz").await.is_some(),
    )
    .await;
    // More deliveries than the leader reads at once (16) come first.
    let ping = in_repo(example("ping", None), "acme/webapp");
    for i in 0..20 {
        let id = format!("p-{i:02}");
        assert_eq!(
            deliver(port, "ping", &id, &ping, signed(&ping)).await.0,
            202
        );
    }
    let c = issue_comment("writer", "User", 7, "/swarm retry feature");
    let (code, text) = deliver(port, "issue_comment", "c-1", &c, signed(&c)).await;
    assert_eq!(code, 202, "{text}");
    let (code, text) = deliver(port, "issue_comment", "c-1", &c, signed(&c)).await;
    assert_eq!(
        (code, text.contains("already waiting")),
        (202, true),
        "a redelivery of a waiting delivery is not a duplicate: {text}"
    );
    // A second command after it, to see the order they are processed in.
    let status = issue_comment("writer", "User", 7, "/swarm status");
    assert_eq!(
        deliver(port, "issue_comment", "c-2", &status, signed(&status))
            .await
            .0,
        202
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stored = s.delivery("c-1").await.unwrap().expect("stored before 202");
    assert!(stored.processed_at.is_none());
    assert_eq!(stored.body, c.to_string().into_bytes());
    assert_eq!(
        s.task("webapp", "feature")
            .await
            .unwrap()
            .unwrap()
            .generation,
        1
    );

    // kill -9 between the 202 and the processing; the lock goes; a new engine leads.
    standby.kill().unwrap();
    standby.wait().unwrap();
    drop(rival);
    let mut next = start_up(dir.path(), false);
    wait_for(
        "the delivery to be processed",
        Duration::from_secs(30),
        async || {
            s.delivery("c-1")
                .await
                .unwrap()
                .is_some_and(|d| d.processed_at.is_some())
        },
    )
    .await;
    wait_for(
        "generation 2 to complete",
        Duration::from_secs(30),
        async || {
            s.task("webapp", "feature")
                .await
                .unwrap()
                .is_some_and(|t| t.generation == 2 && t.state() == TaskState::Completed)
        },
    )
    .await;
    wait_for("the replies", Duration::from_secs(10), async || {
        replies(&github).len() >= 2
    })
    .await;
    let (code, text) = deliver(port, "issue_comment", "c-1", &c, signed(&c)).await;
    assert_eq!((code, text.contains("duplicate")), (200, true), "{text}");
    assert!(waiting_ids(s).await.is_empty(), "all 22 processed");
    let at = async |id: &str| s.delivery(id).await.unwrap().unwrap().processed_at.unwrap();
    let retried_at = at("c-1").await;
    for i in 0..20 {
        assert!(
            at(&format!("p-{i:02}")).await <= retried_at,
            "the pings arrived first"
        );
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let t = s.task("webapp", "feature").await.unwrap().unwrap();
    assert_eq!((t.generation, t.state()), (2, TaskState::Completed));
    let retries = s
        .events("webapp", "feature")
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind.as_str() == "retry")
        .count();
    assert_eq!(retries, 1, "the retry happened once");
    assert_eq!(runs(), 2, "generation 1 and generation 2, once each");
    let replies = replies(&github);
    assert_eq!(replies.len(), 2, "one reply each: {replies:?}");
    assert!(
        replies[0].contains("runs again (generation 2)") && replies[1].contains("| `feature` |"),
        "processed in the order they arrived: {replies:?}"
    );
    let _ = next.kill();
    let _ = next.wait();
    db.drop_db().await;
}

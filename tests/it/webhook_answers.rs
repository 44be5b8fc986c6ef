//! Every answer of `POST /webhooks/github` that README section 6 ("What the endpoint answers")
//! lists and `tests/it/github.rs` does not already cover, through real HTTP against a running
//! `swarm up`: 404 without `[github]`, without a project on GitHub or without the secret; 413
//! for a body over 5 MiB (with and without a `Content-Length`); 400 without the delivery or
//! event header; 202 for a signed body that is not JSON (stored, then processed as nothing to
//! do); 503 when the delivery cannot be stored. Each time the delivery is checked in the
//! database (nothing kept where nothing may be), counted in `swarm_webhook_deliveries_total`,
//! and a later good delivery of the same id is accepted, so a refused one is not lost.

use std::process::Child;
use std::time::Duration;

use coding_swarm::store::Store;
use coding_swarm::web::MAX_WEBHOOK_BODY;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::ghapi::GitHubServer;
use crate::githttp::GitHttpServer;
use crate::github::{
    deliver, free_port, get, http, push, signed, start_up, write_config_on, GIT_TOKEN,
};
use crate::payloads::{example, in_repo, set};
use crate::support::{wait_for, Backend, TestDb, TestRepo};

crate::on_both_backends!(refusals_keep_nothing_and_lose_nothing);

/// An engine process, killed when dropped.
struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn started(port: u16, child: Child) -> Up {
    let up = Up(child);
    wait_for(
        "the engine's HTTP server",
        Duration::from_secs(30),
        async || get(port, "/healthz").await.is_some(),
    )
    .await;
    up
}

/// The value of the sample `name{labels}` in the engine's `/metrics`, if it has one.
async fn sample(port: u16, series: &str) -> Option<f64> {
    let (code, body) = get(port, "/metrics").await?;
    assert_eq!(code, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// A `POST /webhooks/github` with `headers` and `body` as given, sending the body while the
/// answer is read (a server may answer before it has read a body it refuses).
async fn post_raw(port: u16, headers: &str, body: Vec<u8>) -> (u16, String) {
    let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut rd, mut wr) = s.into_split();
    let head = format!(
        "POST /webhooks/github HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{headers}Connection: close\r\n\r\n"
    );
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(head.as_bytes()).await;
        let _ = wr.write_all(&body).await;
        wr
    });
    let mut buf = Vec::new();
    let _ = rd.read_to_end(&mut buf).await;
    drop(writer.await);
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// `body` in HTTP/1.1 chunks of 64 KiB, ended by the last chunk.
fn chunked(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in body.chunks(64 * 1024) {
        out.extend(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend(c);
        out.extend(b"\r\n");
    }
    out.extend(b"0\r\n\r\n");
    out
}

/// GitHub's `ping` example for acme/webapp.
fn ping() -> serde_json::Value {
    in_repo(example("ping", None), "acme/webapp")
}

/// A ping whose JSON text is exactly `len` bytes long (its `zen` padded).
fn ping_of_len(len: usize) -> Vec<u8> {
    let mut v = ping();
    set(&mut v, "/zen", json!(""));
    let frame = v.to_string().len();
    set(&mut v, "/zen", json!("x".repeat(len - frame)));
    let body = v.to_string().into_bytes();
    assert_eq!(body.len(), len);
    body
}

fn sig(body: &[u8]) -> String {
    coding_swarm::forge::webhook::sign(b"webhook-secret-for-the-tests", body)
}

/// Makes the database refuse to store deliveries (as a full disk would), or lifts that.
async fn refuse_deliveries(db: &TestDb, refuse: bool) {
    let sql: &[&str] = match (db.url.starts_with("sqlite:"), refuse) {
        (true, true) => &[
            "CREATE TRIGGER refuse_deliveries BEFORE INSERT ON webhook_deliveries \
             BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END",
        ],
        (false, true) => &[
            "CREATE FUNCTION refuse_deliveries() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'could not extend file: No space left on device'; END $$",
            "CREATE TRIGGER refuse_deliveries BEFORE INSERT ON webhook_deliveries \
             FOR EACH ROW EXECUTE FUNCTION refuse_deliveries()",
        ],
        (true, false) => &["DROP TRIGGER refuse_deliveries"],
        (false, false) => &[
            "DROP TRIGGER refuse_deliveries ON webhook_deliveries",
            "DROP FUNCTION refuse_deliveries",
        ],
    };
    for s in sql {
        db.execute(s).await.unwrap();
    }
}

async fn kept(s: &Store, id: &str) -> bool {
    s.delivery(id).await.unwrap().is_some()
}

/// 413, 400, a body that is not JSON, and 503: what each keeps, what each counts, and that the
/// same delivery id sent properly afterwards is accepted and processed.
async fn refusals_keep_nothing_and_lose_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let github = GitHubServer::start().await;
    let repo = TestRepo::new();
    repo.commit(&[("README.md", Some("x\n"))], "init");
    // Over HTTP, so that no file watch of a local remote syncs: only pushes and polls do.
    let git = GitHttpServer::start(repo.dir.path().to_path_buf(), GIT_TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    write_config_on(
        dir.path(),
        Some(&db.url),
        port,
        &github.url,
        &format!("{}/remote.git", git.base),
        "echo ok",
    );
    let _up = started(port, start_up(dir.path(), false)).await;
    let s = &db.store;
    wait_for("the first sync", Duration::from_secs(30), async || {
        s.project("webapp")
            .await
            .unwrap()
            .is_some_and(|p| p.synced_commit.is_some())
    })
    .await;

    // Over 5 MiB, signed and with both headers: 413, announced by Content-Length or not.
    let big = ping_of_len(MAX_WEBHOOK_BODY + 1);
    let headers = |id: &str, body: &[u8]| {
        format!(
            "X-GitHub-Event: ping\r\nX-GitHub-Delivery: {id}\r\nX-Hub-Signature-256: {}\r\n",
            sig(body)
        )
    };
    let (code, _) = post_raw(
        port,
        &format!("{}Content-Length: {}\r\n", headers("big", &big), big.len()),
        big.clone(),
    )
    .await;
    assert_eq!(code, 413, "a body over 5 MiB with its Content-Length");
    let (code, _) = post_raw(
        port,
        &format!("{}Transfer-Encoding: chunked\r\n", headers("big", &big)),
        chunked(&big),
    )
    .await;
    assert_eq!(code, 413, "a body over 5 MiB in chunks");
    assert!(!kept(s, "big").await, "nothing of a 413 is kept");
    // At exactly 5 MiB it is taken.
    let most = ping_of_len(MAX_WEBHOOK_BODY);
    let (code, text) = post_raw(
        port,
        &format!(
            "{}Content-Length: {}\r\n",
            headers("big", &most),
            most.len()
        ),
        most.clone(),
    )
    .await;
    assert_eq!((code, text.as_str()), (202, "accepted\n"));
    assert_eq!(s.delivery("big").await.unwrap().unwrap().body, most);

    // Signed, but without the delivery id or the event: 400, nothing kept.
    let ping = ping();
    let text = ping.to_string();
    for (missing, hdrs) in [
        (
            "X-GitHub-Delivery",
            format!(
                "X-GitHub-Event: ping\r\nX-Hub-Signature-256: {}\r\n",
                sig(text.as_bytes())
            ),
        ),
        (
            "X-GitHub-Event",
            format!(
                "X-GitHub-Delivery: no-event\r\nX-Hub-Signature-256: {}\r\n",
                sig(text.as_bytes())
            ),
        ),
    ] {
        let (code, answer) = post_raw(
            port,
            &format!("{hdrs}Content-Length: {}\r\n", text.len()),
            text.clone().into_bytes(),
        )
        .await;
        assert_eq!(
            (code, answer.as_str()),
            (400, "X-GitHub-Delivery and X-GitHub-Event are required\n"),
            "without {missing}"
        );
    }
    assert!(!kept(s, "no-event").await, "nothing of a 400 is kept");
    assert_eq!(
        sample(
            port,
            "swarm_webhook_deliveries_total{event=\"ping\",answer=\"bad_request\"}"
        )
        .await,
        Some(1.0)
    );
    assert_eq!(
        sample(
            port,
            "swarm_webhook_deliveries_total{event=\"none\",answer=\"bad_request\"}"
        )
        .await,
        Some(1.0),
        "a delivery without its event header is counted as event \"none\""
    );
    let (code, _) = deliver(port, "ping", "no-event", &ping, signed(&ping)).await;
    assert_eq!(code, 202, "the same id with its headers is taken");

    // Signed, but not JSON: taken (the signature says GitHub sent it), then processed as
    // nothing to do, with a warning naming the delivery.
    let garbage = b"this is not JSON {".to_vec();
    let (code, answer) = post_raw(
        port,
        &format!(
            "X-GitHub-Event: push\r\nX-GitHub-Delivery: garbage\r\nX-Hub-Signature-256: {}\r\nContent-Length: {}\r\n",
            sig(&garbage),
            garbage.len()
        ),
        garbage,
    )
    .await;
    assert_eq!((code, answer.as_str()), (202, "accepted\n"));
    wait_for(
        "the unreadable delivery to be processed",
        Duration::from_secs(20),
        async || {
            s.delivery("garbage")
                .await
                .unwrap()
                .is_some_and(|d| d.processed_at.is_some())
        },
    )
    .await;
    let log = std::fs::read_to_string(dir.path().join("engine.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("garbage") && l.contains("push")),
        "a warning names the delivery and its event: {log}"
    );

    // The store refuses: 503, nothing kept, and GitHub's redelivery afterwards is processed.
    let head = repo.commit(
        &[(".ai/tasks/pushed.yaml", Some("addressee: w\nprompt: p\n"))],
        "a task by push",
    );
    let body = push("acme/webapp", &head.to_string());
    refuse_deliveries(&db, true).await;
    let (code, answer) = deliver(port, "push", "full", &body, signed(&body)).await;
    assert_eq!(
        (code, answer.as_str()),
        (
            503,
            "database query failed while trying to store a webhook delivery\n"
        )
    );
    assert!(!kept(s, "full").await, "nothing of a 503 is kept");
    assert_eq!(
        sample(
            port,
            "swarm_webhook_deliveries_total{event=\"push\",answer=\"unavailable\"}"
        )
        .await,
        Some(1.0)
    );
    refuse_deliveries(&db, false).await;
    assert!(
        s.task("webapp", "pushed").await.unwrap().is_none(),
        "no sync yet: polling is hourly"
    );
    let (code, answer) = deliver(port, "push", "full", &body, signed(&body)).await;
    assert_eq!((code, answer.as_str()), (202, "accepted\n"), "redelivered");
    wait_for(
        "the redelivered push to sync",
        Duration::from_secs(20),
        async || s.task("webapp", "pushed").await.unwrap().is_some(),
    )
    .await;
    assert_eq!(
        sample(
            port,
            "swarm_webhook_deliveries_total{event=\"push\",answer=\"accepted\"}"
        )
        .await,
        Some(2.0),
        "the unreadable push and the redelivery"
    );
    let (_, scrape) = get(port, "/metrics").await.unwrap();
    let families = crate::readiness::assert_labels_documented(&scrape);
    assert!(
        families.contains(&"swarm_webhook_deliveries_total".to_string()),
        "{families:?}"
    );
    drop(_up);
    db.drop_db().await;
}

/// 404 `GitHub webhooks are not configured` in each of the three cases README section 6
/// names, signed or not, counted with event `unverified`; the delivery is not stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_github_webhooks_are_not_found() {
    let github = GitHubServer::start().await;
    let repo = TestRepo::new();
    repo.commit(&[("README.md", Some("x\n"))], "init");
    let ping = ping();
    for case in ["no [github]", "no project on GitHub", "no secret"] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        write_config_on(dir.path(), None, port, &github.url, &repo.url(), "echo ok");
        let path = dir.path().join("swarm.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let text = match case {
            "no [github]" => text
                .replace("[github]\n", "")
                .replace(&format!("api_url = \"{}\"\n", github.url), "")
                .replace("min_write_interval = \"20ms\"\n", "")
                .replace("github = \"acme/webapp\"\n", ""),
            "no project on GitHub" => text.replace("github = \"acme/webapp\"\n", ""),
            _ => text,
        };
        std::fs::write(&path, text).unwrap();
        let child = if case == "no secret" {
            let log = std::fs::File::create(dir.path().join("engine.log")).unwrap();
            crate::support::command(env!("CARGO_BIN_EXE_swarm"))
                .args(["up", "--config", "swarm.toml"])
                .current_dir(dir.path())
                .env("SWARM_GITHUB_TOKEN", crate::ghapi::TOKEN)
                .env("RUST_LOG", "info")
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap()
        } else {
            start_up(dir.path(), false)
        };
        let up = started(port, child).await;
        for signature in [signed(&ping), None] {
            let (code, text) = deliver(port, "ping", "d-1", &ping, signature).await;
            assert_eq!(
                (code, text.as_str()),
                (404, "GitHub webhooks are not configured\n"),
                "{case}"
            );
        }
        // Only POST is routed.
        let (code, _) = http(
            port,
            "GET /webhooks/github HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".into(),
        )
        .await
        .unwrap();
        assert_eq!(code, 405, "{case}");
        assert_eq!(
            sample(
                port,
                "swarm_webhook_deliveries_total{event=\"unverified\",answer=\"not_configured\"}"
            )
            .await,
            Some(2.0),
            "{case}"
        );
        let store = Store::connect(&format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("d/swarm.db").display()
        ))
        .await
        .unwrap();
        assert!(store.delivery("d-1").await.unwrap().is_none(), "{case}");
        if case == "no secret" {
            let log = std::fs::read_to_string(dir.path().join("engine.log")).unwrap();
            assert!(
                log.contains("SWARM_GITHUB_WEBHOOK_SECRET is not set"),
                "the engine says why: {log}"
            );
        }
        store.close().await;
        drop(up);
    }
}

//! The JSON API of a running engine, as the CLI and scripts use it: the token when bound beyond
//! this machine, the CSRF header on writes, clear errors for bad requests, the actions, the CLI's
//! remote mode, and every route documented in `schemas/openapi.json`.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::TestRepo;

const TOKEN: &str = "api-token-for-the-tests-0123456789";

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, head.to_string(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_with_a_token_csrf_and_clear_errors() {
    let repo = TestRepo::new();
    repo.commit(
        &[
            (".ai/tasks/first.yaml", Some("addressee: w1\nprompt: one\n")),
            (
                ".ai/tasks/second.yaml",
                Some("addressee: w1\nprompt: two\n"),
            ),
        ],
        "tasks",
    );
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        "data_dir = \"d\"\ndefault_agent = \"sh\"\n[http]\nlisten = \"0.0.0.0:{port}\"\n[agents.sh]\ncommand = [\"sh\", \"-c\", \"sleep 30\"]\n[[projects]]\nname = \"web\"\nrepo = {:?}\n",
        repo.url()
    );
    std::fs::write(dir.path().join("swarm.toml"), &config).unwrap();
    // Bound beyond this machine without a token, or with an empty one (what the deploy
    // overlay's engine.env.example holds): refused.
    for token in [None, Some("")] {
        let mut cmd = crate::support::command(env!("CARGO_BIN_EXE_swarm"));
        cmd.args(["up"]).current_dir(dir.path());
        match token {
            Some(t) => cmd.env("SWARM_API_TOKEN", t),
            None => cmd.env_remove("SWARM_API_TOKEN"),
        };
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{token:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("SWARM_API_TOKEN"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let _engine = Proc(
        crate::support::command(env!("CARGO_BIN_EXE_swarm"))
            .args(["up"])
            .current_dir(dir.path())
            .env("SWARM_API_TOKEN", TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("Authorization", bearer.as_str())];
    let start = Instant::now();
    loop {
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let _ = s.shutdown().await;
            let (code, _, body) = http(port, "GET", "/api/tasks?project=web", &auth, "").await;
            if code == 200 && body.contains("\"second\"") && body.contains("\"running\"") {
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the engine never came up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The token is needed for the dashboard and the API, not for health.
    assert_eq!(http(port, "GET", "/api/tasks", &[], "").await.0, 401);
    assert_eq!(http(port, "GET", "/", &[], "").await.0, 401);
    assert_eq!(
        http(
            port,
            "GET",
            "/api/tasks",
            &[("Authorization", "Bearer wrong")],
            ""
        )
        .await
        .0,
        401
    );
    // The dashboard's newer endpoints follow the same rule.
    for path in [
        "/api/stats",
        "/api/queues",
        "/api/pauses",
        "/api/tasks/web/second/transcript",
    ] {
        assert_eq!(http(port, "GET", path, &[], "").await.0, 401, "{path}");
    }
    for path in ["/api/stats?since=2h&step=30m", "/api/queues", "/api/pauses"] {
        let (code, _, body) = http(port, "GET", path, &auth, "").await;
        assert_eq!(code, 200, "{path}: {body}");
    }
    // A task that has not run: its transcript ends at once.
    let (code, _, body) = http(port, "GET", "/api/tasks/web/second/transcript", &auth, "").await;
    assert_eq!(code, 200);
    assert!(
        body.contains("event: end") && body.contains("has not run yet"),
        "{body}"
    );
    assert_eq!(http(port, "GET", "/healthz", &[], "").await.0, 200);
    let (code, head, _) = http(port, "GET", &format!("/login?token={TOKEN}"), &[], "").await;
    assert_eq!(code, 303);
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert!(
        head.contains("HttpOnly") && head.contains("SameSite=Strict"),
        "{head}"
    );
    assert_eq!(
        http(
            port,
            "GET",
            "/api/projects",
            &[("Cookie", cookie.as_str())],
            ""
        )
        .await
        .0,
        200
    );

    // Writes need the CSRF header: a cross-site form, even with the cookie, cannot.
    let (code, _, body) = http(
        port,
        "POST",
        "/api/tasks/web/second/priority",
        &[("Cookie", cookie.as_str())],
        r#"{"priority": 5}"#,
    )
    .await;
    assert_eq!(code, 403, "{body}");
    let csrf = [("Authorization", bearer.as_str()), ("X-Swarm-Csrf", "1")];

    // Bad requests are named.
    let (code, _, body) = http(
        port,
        "POST",
        "/api/tasks/web/second/priority",
        &csrf,
        r#"{"priority": "high"}"#,
    )
    .await;
    assert_eq!(code, 400);
    assert!(body.contains("priority"), "{body}");
    let (code, _, body) = http(
        port,
        "POST",
        "/api/tasks/web/second/priority",
        &csrf,
        r#"{"priority": 5000}"#,
    )
    .await;
    assert!(
        code == 400 && body.contains("5000") && body.contains("-1000..=1000"),
        "{code} {body}"
    );
    let (code, _, body) = http(
        port,
        "POST",
        "/api/tasks/web/second/priority",
        &csrf,
        r#"{"priority": 5, "urgent": true}"#,
    )
    .await;
    assert!(code == 400 && body.contains("urgent"), "{code} {body}");
    let (code, _, body) = http(port, "GET", "/api/tasks?status=blocked", &auth, "").await;
    assert!(code == 400 && body.contains("blocked"), "{code} {body}");
    let (code, _, body) = http(port, "GET", "/api/tasks/web/nope", &auth, "").await;
    assert!(
        code == 404 && body.contains("no task web/nope"),
        "{code} {body}"
    );
    let (code, _, body) = http(
        port,
        "POST",
        "/api/projects/web/epics",
        &csrf,
        r#"{"text": "   "}"#,
    )
    .await;
    assert!(code == 400 && body.contains("text"), "{code} {body}");
    let (code, _, body) = http(
        port,
        "POST",
        "/api/projects/elsewhere/epics",
        &csrf,
        r#"{"text": "x"}"#,
    )
    .await;
    assert!(code == 404 && body.contains("elsewhere"), "{code} {body}");

    // The actions.
    let (code, _, body) = http(
        port,
        "POST",
        "/api/tasks/web/second/priority",
        &csrf,
        r#"{"priority": 7}"#,
    )
    .await;
    assert_eq!((code, body.as_str()), (200, r#"{"priority":7}"#));
    let (code, _, body) = http(
        port,
        "POST",
        "/api/tasks/web/first/priority",
        &csrf,
        r#"{"priority": 7}"#,
    )
    .await;
    assert_eq!(code, 409, "a running task's priority stays: {body}");
    let (_, _, body) = http(port, "GET", "/api/tasks/web/second", &auth, "").await;
    assert!(
        body.contains("\"priority\":7") && body.contains("behind first"),
        "{body}"
    );

    // The CLI through the API.
    let cli = |args: &[&str]| {
        crate::support::command(env!("CARGO_BIN_EXE_swarm"))
            .args(args)
            .current_dir(dir.path())
            .env("SWARM_API_URL", format!("http://127.0.0.1:{port}"))
            .env("SWARM_API_TOKEN", TOKEN)
            .output()
            .unwrap()
    };
    let out = cli(&["task", "list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tasks: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(tasks.len(), 2);
    let out = cli(&["task", "stop", "web/second"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("cancelled before it ran"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["task", "stop", "web/first"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("stop requested"));
    let out = cli(&["task", "show", "web/nope"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("404"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_route_is_in_the_openapi_document() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("schemas/openapi.json")).unwrap())
            .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let mut routes = Vec::new();
    for file in ["src/web/api.rs", "src/web/mod.rs"] {
        let src = std::fs::read_to_string(root.join(file)).unwrap();
        for part in src.split(".route(").skip(1) {
            let path = part
                .trim_start()
                .trim_start_matches('"')
                .split('"')
                .next()
                .unwrap()
                .to_string();
            routes.push(path);
        }
    }
    assert!(routes.len() >= 14, "{routes:?}");
    for r in routes.iter().filter(|r| {
        r.starts_with("/api")
            || r.starts_with("/webhooks")
            || ["/healthz", "/readyz", "/metrics"].contains(&r.as_str())
    }) {
        assert!(
            paths.contains_key(r),
            "{r} is not documented in schemas/openapi.json"
        );
    }
    for p in paths.keys() {
        assert!(routes.contains(p), "{p} is documented but not served");
    }
}

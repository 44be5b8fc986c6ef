//! A git remote over smart HTTP with Basic authentication: the real `git http-backend` behind a
//! small CGI bridge on loopback, for the paths where credentials matter. Also used by
//! `benches/checkout.rs` (included by path), so it needs nothing of the test binary.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use tokio::io::AsyncWriteExt;

/// Which passwords the server takes.
pub type Accept = Arc<dyn Fn(&str) -> bool + Send + Sync>;

#[derive(Clone)]
struct GitState {
    root: PathBuf,
    accept: Accept,
    /// Every Authorization header and URL seen, to check nothing leaks into URLs.
    seen: Arc<Mutex<Vec<String>>>,
}

pub struct GitHttpServer {
    /// `http://127.0.0.1:PORT/` + repository path relative to the root.
    pub base: String,
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl GitHttpServer {
    /// Serves the repositories under `root`; pushes and fetches need user `x-access-token`
    /// with `password`.
    pub async fn start(root: PathBuf, password: &str) -> Self {
        let password = password.to_string();
        Self::start_accepting(root, Arc::new(move |p| p == password)).await
    }

    /// Serves the repositories under `root` to user `x-access-token` with a password `accept`
    /// takes (GitHub's installation tokens, say).
    pub async fn start_accepting(root: PathBuf, accept: Accept) -> Self {
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let state = GitState {
            root,
            accept,
            seen: seen.clone(),
        };
        let app = Router::new().fallback(cgi).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { base, seen, task }
    }

    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn cgi(
    State(state): State<GitState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    state
        .seen
        .lock()
        .unwrap()
        .push(format!("{method} {uri} auth={}", !auth.is_empty()));
    let password = auth
        .strip_prefix("Basic ")
        .and_then(|b| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(b).ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|up| up.strip_prefix("x-access-token:").map(str::to_string));
    if !password.is_some_and(|p| (state.accept)(&p)) {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header("www-authenticate", "Basic realm=\"git\"")
            .body(Body::empty())
            .unwrap();
    }
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", &state.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REMOTE_USER", "x-access-token")
        .env("REQUEST_METHOD", method.as_str())
        .env("PATH_INFO", uri.path())
        .env("QUERY_STRING", uri.query().unwrap_or(""))
        .env(
            "CONTENT_TYPE",
            headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        )
        .env("CONTENT_LENGTH", body.len().to_string())
        .env(
            "HTTP_CONTENT_ENCODING",
            headers
                .get("content-encoding")
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        )
        .env("GIT_HTTP_MAX_REQUEST_BUFFER", "100M")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = body.to_vec();
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&input).await;
    });
    let out = child.wait_with_output().await.unwrap();
    let _ = writer.await;
    // CGI output: headers, a blank line, the body.
    let raw = out.stdout;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, 4))
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2)));
    let (head, rest) = match split {
        Some((p, n)) => (&raw[..p], &raw[p + n..]),
        None => (&raw[..0], &raw[..]),
    };
    let mut resp = Response::builder().status(StatusCode::OK);
    for line in String::from_utf8_lossy(head).lines() {
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("status") {
                let code: u16 = v
                    .split_whitespace()
                    .next()
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(500);
                resp = resp.status(code);
            } else {
                resp = resp.header(k.trim(), v.trim());
            }
        }
    }
    resp.body(Body::from(rest.to_vec())).unwrap()
}

//! A GitHub REST API at the HTTP level, for the real octocrab client: collaborator permissions,
//! pull requests, issue comments (create, list, edit), branches, commit statuses, App
//! installation tokens; answering with the documented payload shapes, recording every request,
//! and refusing writes on demand the way GitHub's secondary rate limit does.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub auth: String,
    pub at: Instant,
}

#[derive(Default)]
pub struct Hub {
    pub permissions: HashMap<String, String>,
    /// number -> head branch
    pub pulls: BTreeMap<u64, String>,
    /// id -> (issue number, body)
    pub comments: BTreeMap<u64, (u64, String)>,
    pub next_comment: u64,
    pub branches: HashMap<String, String>,
    /// (sha, status body)
    pub statuses: Vec<(String, Value)>,
    pub created_pulls: Vec<Value>,
    pub seen: Vec<Seen>,
    /// Answers for the next writes (POST/PATCH), in order: (status, retry-after seconds).
    pub refuse_writes: VecDeque<(u16, Option<u64>)>,
    pub tokens_issued: u32,
    /// Seconds until an issued installation token expires.
    pub token_lifetime: i64,
}

#[derive(Clone)]
pub struct FakeGitHub {
    pub hub: Arc<Mutex<Hub>>,
}

pub struct GitHubServer {
    pub url: String,
    pub fake: FakeGitHub,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GitHubServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GitHubServer {
    pub async fn start() -> Self {
        let fake = FakeGitHub {
            hub: Arc::new(Mutex::new(Hub {
                next_comment: 1000,
                token_lifetime: 3600,
                ..Hub::default()
            })),
        };
        let app = Router::new().fallback(handle).with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, fake, task }
    }

    pub fn hub(&self) -> std::sync::MutexGuard<'_, Hub> {
        self.fake.hub.lock().unwrap()
    }
}

fn user(login: &str, kind: &str) -> Value {
    json!({"login": login, "id": 1, "node_id": "U_1", "type": kind, "site_admin": false, "url": format!("https://api.github.com/users/{login}")})
}

fn error(code: u16, message: &str) -> Response {
    (
        StatusCode::from_u16(code).unwrap(),
        axum::Json(
            json!({"message": message, "documentation_url": "https://docs.github.com/rest"}),
        ),
    )
        .into_response()
}

fn pull(number: u64, head: &str) -> Value {
    json!({"number": number, "state": "open", "title": format!("PR {number}"), "draft": false,
        "head": {"ref": head, "sha": "0123456789abcdef0123456789abcdef01234567", "label": format!("acme:{head}")},
        "base": {"ref": "main", "sha": "fedcba9876543210fedcba9876543210fedcba98", "label": "acme:main"},
        "html_url": format!("https://github.com/acme/webapp/pull/{number}"), "user": user("someone", "User")})
}

fn comment(id: u64, number: u64, body: &str) -> Value {
    json!({"id": id, "node_id": format!("IC_{id}"), "body": body, "user": user("coding-swarm[bot]", "Bot"),
        "html_url": format!("https://github.com/acme/webapp/pull/{number}#issuecomment-{id}"),
        "issue_url": format!("https://api.github.com/repos/acme/webapp/issues/{number}"), "created_at": "2026-11-26T09:00:00Z", "updated_at": "2026-11-26T09:00:00Z"})
}

async fn handle(
    State(fake): State<FakeGitHub>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or("").to_string();
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut hub = fake.hub.lock().unwrap();
    hub.seen.push(Seen {
        method: method.to_string(),
        path: format!("{path}?{query}"),
        auth,
        at: Instant::now(),
    });
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if matches!(method, Method::POST | Method::PATCH) && !path.starts_with("/app/") {
        if let Some((code, retry)) = hub.refuse_writes.pop_front() {
            let mut r = error(code, "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.");
            if let Some(s) = retry {
                r.headers_mut()
                    .insert("retry-after", s.to_string().parse().unwrap());
            }
            return r;
        }
    }
    match (method.clone(), parts.as_slice()) {
        (Method::POST, ["app", "installations", id, "access_tokens"]) => {
            hub.tokens_issued += 1;
            let n = hub.tokens_issued;
            let expires = chrono::Utc::now() + chrono::Duration::seconds(hub.token_lifetime);
            (StatusCode::CREATED, axum::Json(json!({"token": format!("ghs_installation_token_{n}"), "expires_at": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "permissions": {"issues": "write", "pull_requests": "write", "statuses": "write", "contents": "read"}, "repository_selection": "all", "installation": id}))).into_response()
        }
        (Method::GET, ["repos", _, _, "installation"]) => axum::Json(json!({"id": 77, "app_id": 12345, "target_type": "Organization", "account": user("acme", "Organization")})).into_response(),
        (Method::GET, ["repos", _, _, "collaborators", login, "permission"]) => {
            let p = hub.permissions.get(*login).cloned().unwrap_or_else(|| "none".into());
            axum::Json(json!({"permission": p, "role_name": p, "user": user(login, "User")})).into_response()
        }
        (Method::GET, ["repos", _, _, "pulls"]) => {
            let head = query.split('&').find_map(|kv| kv.strip_prefix("head=")).map(|h| h.replace("%3A", ":").replace("%2F", "/")).unwrap_or_default();
            let branch = head.split_once(':').map(|(_, b)| b.to_string()).unwrap_or(head);
            let list: Vec<Value> = hub.pulls.iter().filter(|(_, h)| **h == branch).map(|(n, h)| pull(*n, h)).collect();
            axum::Json(Value::Array(list)).into_response()
        }
        (Method::GET, ["repos", _, _, "pulls", n]) => match hub.pulls.get(&n.parse().unwrap_or(0)) {
            Some(h) => axum::Json(pull(n.parse().unwrap(), h)).into_response(),
            None => error(404, "Not Found"),
        },
        (Method::POST, ["repos", _, _, "pulls"]) => {
            let n = 100 + hub.created_pulls.len() as u64;
            hub.created_pulls.push(body.clone());
            let head = body["head"].as_str().unwrap_or("").to_string();
            hub.pulls.insert(n, head.clone());
            (StatusCode::CREATED, axum::Json(pull(n, &head))).into_response()
        }
        (Method::GET, ["repos", _, _, "issues", n, "comments"]) => {
            let n: u64 = n.parse().unwrap_or(0);
            let list: Vec<Value> = hub.comments.iter().filter(|(_, (i, _))| *i == n).map(|(id, (i, b))| comment(*id, *i, b)).collect();
            axum::Json(Value::Array(list)).into_response()
        }
        (Method::POST, ["repos", _, _, "issues", n, "comments"]) => {
            let n: u64 = n.parse().unwrap_or(0);
            let id = hub.next_comment;
            hub.next_comment += 1;
            let text = body["body"].as_str().unwrap_or("").to_string();
            hub.comments.insert(id, (n, text.clone()));
            (StatusCode::CREATED, axum::Json(comment(id, n, &text))).into_response()
        }
        (Method::PATCH, ["repos", _, _, "issues", "comments", id]) => {
            let id: u64 = id.parse().unwrap_or(0);
            let text = body["body"].as_str().unwrap_or("").to_string();
            match hub.comments.get_mut(&id) {
                Some(c) => {
                    c.1 = text.clone();
                    let n = c.0;
                    axum::Json(comment(id, n, &text)).into_response()
                }
                None => error(404, "Not Found"),
            }
        }
        (Method::GET, ["repos", _, _, "branches", rest @ ..]) => {
            let name = rest.join("/");
            match hub.branches.get(&name) {
                Some(sha) => axum::Json(json!({"name": name, "commit": {"sha": sha, "url": ""}, "protected": false})).into_response(),
                None => error(404, "Branch not found"),
            }
        }
        (Method::POST, ["repos", _, _, "statuses", sha]) => {
            hub.statuses.push((sha.to_string(), body.clone()));
            (StatusCode::CREATED, axum::Json(json!({"id": hub.statuses.len(), "state": body["state"], "context": body["context"], "description": body["description"], "created_at": "2026-11-26T09:00:00Z"}))).into_response()
        }
        _ => error(404, "Not Found"),
    }
}

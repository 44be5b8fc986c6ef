//! A GitHub REST API at the HTTP level, for the real octocrab client: collaborator permissions,
//! pull requests, issue comments (create, list, edit), branches, commit statuses, App
//! installation tokens. It answers with the documented payload shapes and keeps to GitHub's
//! rules where the engine relies on them: the token is checked, every answer carries the
//! rate-limit headers, lists are paginated with a `Link` header, pull requests keep their state
//! and the list filters honour it, and what GitHub refuses is refused with its 401 or 422 body.
//! It records every request (with its time and body), and on demand refuses writes the way
//! GitHub's secondary rate limit does, uses up its primary rate limit (every request is then
//! refused until the reset), or fails every write with a server error.
//!
//! GitHub's REST documentation for each rule is cited beside its code.

use std::collections::VecDeque;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

/// The personal access token the engine under test is given.
pub const TOKEN: &str = "ghp_personal-token-for-the-tests";
/// The GitHub App whose JWTs the fake accepts.
pub const APP_ID: u64 = 12345;
const OWNER: &str = "acme";
const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub auth: String,
    pub at: Instant,
    /// The same moment on the wall clock, to compare with `X-RateLimit-Reset`.
    pub wall: chrono::DateTime<chrono::Utc>,
    /// The request's JSON body (`null` for none).
    pub body: Value,
}

/// A pull request as GitHub keeps it.
#[derive(Debug, Clone)]
pub struct Pull {
    pub head: String,
    pub base: String,
    /// `open` or `closed`.
    pub state: String,
    pub draft: bool,
    pub merged: bool,
    pub title: String,
    pub body: String,
}

impl Pull {
    pub fn open(head: &str) -> Self {
        Self {
            head: head.into(),
            base: "main".into(),
            state: "open".into(),
            draft: false,
            merged: false,
            title: format!("Work on {head}"),
            body: String::new(),
        }
    }
}

#[derive(Default)]
pub struct Hub {
    pub permissions: HashMap<String, String>,
    pub pulls: BTreeMap<u64, Pull>,
    /// Issues that are not pull requests.
    pub issues: HashSet<u64>,
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
    /// Tokens GitHub accepts, with when they expire: the personal token, and the installation
    /// tokens it issued.
    pub tokens: HashMap<String, Option<chrono::DateTime<chrono::Utc>>>,
    /// Requests counted against the primary rate limit this hour.
    pub rate_used: u32,
    /// The bodies of the installation token requests, in order.
    pub token_requests: Vec<Value>,
    /// What each issued installation token may do: its repositories (`None`: all of the
    /// installation's) and permissions.
    pub token_scopes: HashMap<String, (Option<Vec<String>>, Value)>,
    /// Installation tokens revoked with `DELETE /installation/token`.
    pub revoked: Vec<String>,
    /// Reviews by id.
    pub reviews: BTreeMap<u64, Review>,
    /// Check runs by id: `(check suite id, name, conclusion, app slug)`.
    pub check_runs: BTreeMap<u64, (u64, String, String, String)>,
    /// Workflow runs' jobs: run id -> `(job id, name, conclusion)`; a job's id is its check
    /// run's.
    pub jobs: BTreeMap<u64, Vec<(u64, String, String)>>,
    /// Actions job logs by job id.
    pub job_logs: HashMap<u64, String>,
    /// Set by a test: the next API request uses up the primary rate limit, which then resets
    /// this long after it (rounded up to the second, as `X-RateLimit-Reset` is).
    pub exhaust_next: Option<std::time::Duration>,
    /// While set and in the future, the primary rate limit is used up until then.
    pub primary_reset: Option<chrono::DateTime<chrono::Utc>>,
    /// Set by a test: every write (POST/PATCH) fails with this server error.
    pub fail_writes: Option<u16>,
    /// Set by a test: installation tokens are issued only this many times; later requests
    /// are refused as for a suspended installation (403).
    pub issue_tokens: Option<u32>,
    /// Protected branches and the checks their protection requires.
    pub protection: HashMap<String, Vec<String>>,
    /// Check runs on commits (`GET /commits/{sha}/check-runs`): seeded by tests and created
    /// by the engine (`POST /check-runs`).
    pub commit_runs: Vec<CommitRun>,
    /// Reactions added: `(issues|pulls, comment id, content)`.
    pub reactions: Vec<(String, u64, String)>,
}

/// A check run on a commit, as GitHub keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct CommitRun {
    pub id: u64,
    pub sha: String,
    pub name: String,
    /// `queued`, `in_progress`, `completed`, ...
    pub status: String,
    pub conclusion: Option<String>,
    /// The App that owns it: only that App may update it.
    pub app: String,
    /// The last body written to it (create or update), merged.
    pub body: Value,
}

impl Hub {
    /// Seeds a check run `name` on `sha` by `app`; returns its id.
    pub fn add_run(
        &mut self,
        sha: &str,
        name: &str,
        status: &str,
        conclusion: Option<&str>,
    ) -> u64 {
        let id = 9000 + self.commit_runs.len() as u64;
        self.commit_runs.push(CommitRun {
            id,
            sha: sha.into(),
            name: name.into(),
            status: status.into(),
            conclusion: conclusion.map(str::to_string),
            app: "github-actions".into(),
            body: Value::Null,
        });
        id
    }

    /// The engine's check runs named `name`, oldest first.
    pub fn runs_named(&self, name: &str) -> Vec<CommitRun> {
        self.commit_runs
            .iter()
            .filter(|r| r.name == name)
            .cloned()
            .collect()
    }
}

/// What "Create a check run" and "Update a check run" refuse
/// (<https://docs.github.com/en/rest/checks/runs#create-a-check-run>): an unknown `status` or
/// `conclusion`, a `completed` run without a conclusion, and `output` without `title` and
/// `summary`.
fn check_run_problems(body: &Value, creating: bool) -> Vec<Value> {
    let mut errors = Vec::new();
    let problem =
        |field: &str, code: &str| json!({"resource": "CheckRun", "field": field, "code": code});
    if creating {
        for k in ["name", "head_sha"] {
            if body[k].as_str().is_none_or(str::is_empty) {
                errors.push(problem(k, "missing_field"));
            }
        }
    }
    let status = body["status"].as_str();
    if status.is_some_and(|s| {
        !matches!(
            s,
            "queued" | "in_progress" | "completed" | "waiting" | "requested" | "pending"
        )
    }) {
        errors.push(problem("status", "invalid"));
    }
    let conclusion = body["conclusion"].as_str();
    if conclusion.is_some_and(|c| {
        !matches!(
            c,
            "action_required"
                | "cancelled"
                | "failure"
                | "neutral"
                | "success"
                | "skipped"
                | "stale"
                | "timed_out"
        )
    }) {
        errors.push(problem("conclusion", "invalid"));
    }
    if status == Some("completed") && conclusion.is_none() {
        errors.push(problem("conclusion", "missing_field"));
    }
    if !body["output"].is_null()
        && (body["output"]["title"].as_str().is_none()
            || body["output"]["summary"].as_str().is_none())
    {
        errors.push(problem("output", "missing_field"));
    }
    errors
}

fn run_json(r: &CommitRun) -> Value {
    json!({"id": r.id, "head_sha": r.sha, "node_id": format!("CR_{}", r.id), "name": r.name, "status": r.status,
        "conclusion": r.conclusion, "external_id": r.body["external_id"], "details_url": r.body["details_url"],
        "html_url": format!("https://github.com/acme/webapp/runs/{}", r.id), "output": r.body["output"],
        "started_at": "2026-11-26T09:00:00Z", "completed_at": null, "check_suite": {"id": 1},
        "app": {"id": 1, "slug": r.app, "name": r.app}, "pull_requests": []})
}

/// A pull request review as GitHub keeps it.
#[derive(Debug, Clone)]
pub struct Review {
    pub pull: u64,
    pub login: String,
    /// `User` or `Bot`.
    pub kind: String,
    /// As the REST API writes it: `CHANGES_REQUESTED`, `COMMENTED`, `APPROVED`.
    pub state: String,
    pub body: String,
    /// `(comment id, path, line, diff hunk, body)`
    pub comments: Vec<(u64, String, u64, String, String)>,
}

impl Hub {
    /// Whether `token` is an installation token GitHub would accept now for writing the
    /// contents of repository `name` (what a git push over HTTPS needs).
    pub fn may_push(&self, token: &str, name: &str) -> bool {
        let live = self
            .tokens
            .get(token)
            .is_some_and(|e| e.is_none_or(|e| e > chrono::Utc::now()));
        let scoped = self.token_scopes.get(token).is_some_and(|(repos, perms)| {
            repos.as_ref().is_none_or(|r| r.iter().any(|r| r == name))
                && perms["contents"] == "write"
        });
        live && scoped
    }
}

impl Hub {
    /// An open pull request `number` from `head` into `main`.
    pub fn add_pull(&mut self, number: u64, head: &str) {
        self.pulls.insert(number, Pull::open(head));
    }
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
                tokens: HashMap::from([(TOKEN.to_string(), None)]),
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

/// An error the way GitHub writes one: `message`, `documentation_url` and the status as a
/// string ("Troubleshooting the REST API",
/// <https://docs.github.com/en/rest/using-the-rest-api/troubleshooting-the-rest-api>).
fn error(code: u16, message: &str) -> Response {
    (
        StatusCode::from_u16(code).unwrap(),
        axum::Json(json!({"message": message, "documentation_url": "https://docs.github.com/rest", "status": code.to_string()})),
    )
        .into_response()
}

/// 422 Unprocessable Entity for a failed validation: "Validation Failed" with one error object
/// per problem (`resource`, `field`, `code`, and for `custom` a `message`).
fn invalid(docs: &str, errors: Value) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        axum::Json(json!({"message": "Validation Failed", "errors": errors, "documentation_url": docs, "status": "422"})),
    )
        .into_response()
}

fn pull_json(number: u64, p: &Pull, in_list: bool) -> Value {
    let merged_at = p.merged.then_some("2026-11-26T10:00:00Z");
    let closed_at = (p.state == "closed").then_some("2026-11-26T10:00:00Z");
    let mut v = json!({"number": number, "state": p.state, "title": p.title, "body": p.body, "draft": p.draft, "locked": false,
        "merged_at": merged_at, "closed_at": closed_at, "created_at": "2026-11-26T09:00:00Z", "updated_at": "2026-11-26T09:30:00Z",
        "head": {"ref": p.head, "sha": SHA, "label": format!("{OWNER}:{}", p.head)},
        "base": {"ref": p.base, "sha": "fedcba9876543210fedcba9876543210fedcba98", "label": format!("{OWNER}:{}", p.base)},
        "html_url": format!("https://github.com/acme/webapp/pull/{number}"), "user": user("someone", "User")});
    // The list items have `merged_at` but no `merged`; only a single pull request has it
    // ("List pull requests" vs "Get a pull request",
    // <https://docs.github.com/en/rest/pulls/pulls>).
    if !in_list {
        v["merged"] = json!(p.merged);
        v["mergeable"] = json!(p.state == "open");
    }
    v
}

fn review_json(id: u64, r: &Review) -> Value {
    json!({"id": id, "node_id": format!("PRR_{id}"), "user": user(&r.login, &r.kind), "body": r.body, "state": r.state,
        "html_url": format!("https://github.com/acme/webapp/pull/{}#pullrequestreview-{id}", r.pull),
        "pull_request_url": format!("https://api.github.com/repos/acme/webapp/pulls/{}", r.pull),
        "author_association": "MEMBER", "submitted_at": "2026-11-26T09:00:00Z", "commit_id": SHA})
}

fn comment(id: u64, number: u64, body: &str) -> Value {
    json!({"id": id, "node_id": format!("IC_{id}"), "body": body, "user": user("coding-swarm[bot]", "Bot"),
        "html_url": format!("https://github.com/acme/webapp/pull/{number}#issuecomment-{id}"),
        "issue_url": format!("https://api.github.com/repos/acme/webapp/issues/{number}"), "created_at": "2026-11-26T09:00:00Z", "updated_at": "2026-11-26T09:00:00Z"})
}

/// One page of `items`, with the `Link` header GitHub sends ("Using pagination in the REST
/// API", <https://docs.github.com/en/rest/using-the-rest-api/using-pagination-in-the-rest-api>):
/// `per_page` defaults to 30 and is at most 100; the links are absolute, keep the query, and
/// are left out when everything fits on one page.
fn page(
    items: Vec<Value>,
    base: &str,
    path: &str,
    query: &[(String, String)],
) -> (Vec<Value>, Option<String>) {
    let get = |k: &str| {
        query
            .iter()
            .find(|(q, _)| q == k)
            .and_then(|(_, v)| v.parse::<usize>().ok())
    };
    let per_page = get("per_page").unwrap_or(30).clamp(1, 100);
    let page = get("page").unwrap_or(1).max(1);
    let last = items.len().div_ceil(per_page).max(1);
    let link = |n: usize| {
        let mut q: Vec<String> = query
            .iter()
            .filter(|(k, _)| k != "page")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        q.push(format!("page={n}"));
        format!("<{base}{path}?{}>", q.join("&"))
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!("{}; rel=\"prev\"", link(page - 1)));
    }
    if page < last {
        links.push(format!("{}; rel=\"next\"", link(page + 1)));
        links.push(format!("{}; rel=\"last\"", link(last)));
    }
    if page > 1 {
        links.push(format!("{}; rel=\"first\"", link(1)));
    }
    let items = items
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    (items, (!links.is_empty()).then(|| links.join(", ")))
}

fn paged(items: Vec<Value>, base: &str, path: &str, query: &[(String, String)]) -> Response {
    let (items, link) = page(items, base, path, query);
    let mut r = axum::Json(Value::Array(items)).into_response();
    if let Some(l) = link {
        r.headers_mut()
            .insert("link", HeaderValue::from_str(&l).unwrap());
    }
    r
}

/// Whether `auth` is a JWT of the App: three parts, the payload's `iss` the App's id, not yet
/// expired. (The signature is not checked: the fake has no public key.)
fn app_jwt(auth: &str) -> bool {
    use base64::Engine;
    let Some(jwt) = auth.strip_prefix("Bearer ") else {
        return false;
    };
    let parts: Vec<&str> = jwt.split('.').collect();
    let Some(payload) = parts
        .get(1)
        .filter(|_| parts.len() == 3)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
    else {
        return false;
    };
    let iss_ok = payload["iss"].as_u64() == Some(APP_ID)
        || payload["iss"].as_str() == Some(&APP_ID.to_string());
    iss_ok && payload["exp"].as_i64() > Some(chrono::Utc::now().timestamp())
}

async fn handle(
    State(fake): State<FakeGitHub>,
    method: Method,
    uri: Uri,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut response = respond(&fake, &method, &uri, &query, &headers, body);
    // "Rate limits for the REST API"
    // (<https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api>): every
    // answer says the primary limit, what is left and used of it, when it resets, and which
    // resource it counts against. A used-up limit says 0 left until its reset.
    let (used, reset) = {
        let mut hub = fake.hub.lock().unwrap();
        hub.rate_used += 1;
        match hub.primary_reset {
            Some(r) if r > chrono::Utc::now() => (5000, r.timestamp()),
            _ => (
                hub.rate_used,
                (chrono::Utc::now() + chrono::Duration::hours(1)).timestamp(),
            ),
        }
    };
    for (k, v) in [
        ("x-ratelimit-limit", "5000".to_string()),
        (
            "x-ratelimit-remaining",
            5000u32.saturating_sub(used).to_string(),
        ),
        ("x-ratelimit-used", used.to_string()),
        ("x-ratelimit-reset", reset.to_string()),
        ("x-ratelimit-resource", "core".to_string()),
    ] {
        response
            .headers_mut()
            .insert(k, HeaderValue::from_str(&v).unwrap());
    }
    response
}

fn respond(
    fake: &FakeGitHub,
    method: &Method,
    uri: &Uri,
    query: &[(String, String)],
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let path = uri.path().to_string();
    let raw_query = uri.query().unwrap_or("").to_string();
    let param = |k: &str| query.iter().find(|(q, _)| q == k).map(|(_, v)| v.as_str());
    let base = format!(
        "http://{}",
        headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost")
    );
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut hub = fake.hub.lock().unwrap();
    hub.seen.push(Seen {
        method: method.to_string(),
        path: format!("{path}?{raw_query}"),
        auth: auth.clone(),
        at: Instant::now(),
        wall: chrono::Utc::now(),
        body: body.clone(),
    });
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // A job log's download URL is signed in its query and takes no other credentials: storage
    // refuses a request that also carries an `Authorization` header.
    if let ["_blob", "job-logs", id] = parts.as_slice() {
        if !auth.is_empty() {
            return error(400, "Only one auth mechanism allowed");
        }
        if param("sig") != Some("signed") {
            return error(403, "Signature not valid");
        }
        return match id
            .parse()
            .ok()
            .and_then(|id: u64| hub.job_logs.get(&id).cloned())
        {
            Some(log) => (StatusCode::OK, [("content-type", "text/plain")], log).into_response(),
            None => error(404, "Not Found"),
        };
    }
    // Authentication ("Authenticating to the REST API",
    // <https://docs.github.com/en/rest/authentication/authenticating-to-the-rest-api>): a token as
    // `Authorization: Bearer` or `token`; the App's own endpoints take its JWT, as Bearer.
    let app_endpoint = parts.first() == Some(&"app")
        || matches!(parts.as_slice(), ["repos", _, _, "installation"]);
    let now = chrono::Utc::now();
    let authenticated = if app_endpoint {
        app_jwt(&auth)
    } else {
        auth.strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("token "))
            .and_then(|t| hub.tokens.get(t))
            .is_some_and(|expires| expires.is_none_or(|e| e > now))
    };
    if auth.is_empty() {
        return error(401, "Requires authentication");
    }
    if !authenticated {
        return error(401, "Bad credentials");
    }
    // A used-up primary limit refuses every request of the token, reads too, until its reset:
    // 403 (or 429) with `x-ratelimit-remaining: 0` ("Exceeding the rate limit", same page).
    if !app_endpoint {
        if let Some(after) = hub.exhaust_next.take() {
            let reset = (now + chrono::Duration::from_std(after).unwrap()).timestamp() + 1;
            hub.primary_reset = chrono::DateTime::from_timestamp(reset, 0);
        }
        if hub.primary_reset.is_some_and(|r| r > now) {
            return error(403, "API rate limit exceeded for user ID 1. If you reach out to GitHub Support for help, please include the request ID.");
        }
    }
    if matches!(*method, Method::POST | Method::PATCH) && !app_endpoint {
        if let Some(code) = hub.fail_writes {
            return error(code, "Server Error");
        }
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
            // "Create an installation access token for an app"
            // (<https://docs.github.com/en/rest/apps/apps#create-an-installation-access-token-for-an-app>):
            // `repositories` and `permissions` narrow the token; a permission the App was not
            // granted is refused with 422. This App has contents: write at most.
            let granted = json!({"issues": "write", "pull_requests": "write", "statuses": "write", "contents": "write", "checks": "write", "metadata": "read"});
            let asked = body["permissions"].clone();
            for (k, v) in asked.as_object().into_iter().flatten() {
                let rank = |p: &Value| match p.as_str() { Some("read") => 1, Some("write") => 2, _ => 0 };
                if rank(v) == 0 || rank(v) > rank(&granted[k]) {
                    return invalid("https://docs.github.com/rest/apps/apps#create-an-installation-access-token-for-an-app", json!([{"resource": "Installation", "field": "permissions", "code": "invalid"}]));
                }
            }
            if hub.issue_tokens.is_some_and(|n| hub.tokens_issued >= n) {
                return error(403, "This installation has been suspended");
            }
            let repos: Option<Vec<String>> = body["repositories"].as_array().map(|r| {
                r.iter().filter_map(|x| x.as_str().map(str::to_string)).collect()
            });
            hub.token_requests.push(body.clone());
            hub.tokens_issued += 1;
            let n = hub.tokens_issued;
            let expires = now + chrono::Duration::seconds(hub.token_lifetime);
            let token = format!("ghs_installation_token_{n}");
            hub.tokens.insert(token.clone(), Some(expires));
            let permissions = if asked.is_object() { asked } else { granted };
            hub.token_scopes.insert(token.clone(), (repos.clone(), permissions.clone()));
            let mut answer = json!({"token": token, "expires_at": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "permissions": permissions, "repository_selection": if repos.is_some() { "selected" } else { "all" }, "installation": id});
            if let Some(r) = repos {
                answer["repositories"] = json!(r.iter().map(|n| json!({"name": n, "full_name": format!("acme/{n}")})).collect::<Vec<_>>());
            }
            (StatusCode::CREATED, axum::Json(answer)).into_response()
        }
        // "Revoke an installation access token": authenticated by the token itself.
        (Method::DELETE, ["installation", "token"]) => {
            let token = auth
                .strip_prefix("Bearer ")
                .or_else(|| auth.strip_prefix("token "))
                .unwrap_or("")
                .to_string();
            hub.tokens.remove(&token);
            hub.revoked.push(token);
            StatusCode::NO_CONTENT.into_response()
        }
        // "Get the authenticated user": the token's own user; an installation token is not
        // a user ("Resource not accessible by integration").
        (Method::GET, ["user"]) => {
            if auth.contains("ghs_") {
                return error(403, "Resource not accessible by integration");
            }
            axum::Json(user("swarm-bot", "User")).into_response()
        }
        // "Get the authenticated app": the App its JWT is signed for.
        (Method::GET, ["app"]) => axum::Json(json!({"id": APP_ID, "slug": "coding-swarm-test", "node_id": "A_1", "name": "coding-swarm (test)",
            "owner": user(OWNER, "Organization"), "permissions": {"issues": "write", "pull_requests": "write", "statuses": "write", "contents": "read"},
            "events": ["push", "issue_comment", "pull_request"], "installations_count": 1})).into_response(),
        (Method::GET, ["repos", _, _, "installation"]) => axum::Json(json!({"id": 77, "app_id": APP_ID, "target_type": "Organization", "account": user("acme", "Organization")})).into_response(),
        (Method::GET, ["repos", _, _, "collaborators", login, "permission"]) => {
            let p = hub.permissions.get(*login).cloned().unwrap_or_else(|| "none".into());
            axum::Json(json!({"permission": p, "role_name": p, "user": user(login, "User")})).into_response()
        }
        (Method::GET, ["repos", owner, _, "pulls"]) => {
            // "List pull requests": `state` is open (the default), closed or all; `head` is
            // `user:ref-name`, the owner of the head repository and the branch.
            let state = param("state").unwrap_or("open");
            if !matches!(state, "open" | "closed" | "all") {
                return invalid("https://docs.github.com/rest/pulls/pulls#list-pull-requests", json!([{"resource": "PullRequest", "field": "state", "code": "invalid"}]));
            }
            let head = param("head").map(|h| match h.split_once(':') {
                Some((o, b)) => (o.to_string(), b.to_string()),
                None => (owner.to_string(), h.to_string()),
            });
            let base_ref = param("base");
            // Newest first: `sort=created`, `direction=desc` are the defaults.
            let list: Vec<Value> = hub
                .pulls
                .iter()
                .rev()
                .filter(|(_, p)| state == "all" || p.state == state)
                .filter(|(_, p)| head.as_ref().is_none_or(|(o, b)| o == OWNER && *b == p.head))
                .filter(|(_, p)| base_ref.is_none_or(|b| b == p.base))
                .map(|(n, p)| pull_json(*n, p, true))
                .collect();
            paged(list, &base, &path, query)
        }
        (Method::GET, ["repos", _, _, "pulls", n]) => match n.parse().ok().and_then(|n| hub.pulls.get(&n).map(|p| (n, p))) {
            Some((n, p)) => axum::Json(pull_json(n, p, false)).into_response(),
            None => error(404, "Not Found"),
        },
        (Method::POST, ["repos", _, _, "pulls"]) => {
            // "Create a pull request": `title`, `head` and `base` are required; a second open
            // pull request for the same head and base is refused.
            let docs = "https://docs.github.com/rest/pulls/pulls#create-a-pull-request";
            let field = |k: &str| body[k].as_str().filter(|s| !s.is_empty()).map(str::to_string);
            let missing: Vec<Value> = ["title", "head", "base"]
                .iter()
                .filter(|k| field(k).is_none())
                .map(|k| json!({"resource": "PullRequest", "field": k, "code": "missing_field"}))
                .collect();
            if !missing.is_empty() {
                return invalid(docs, Value::Array(missing));
            }
            let (title, head, base_ref) = (field("title").unwrap(), field("head").unwrap(), field("base").unwrap());
            let head = head.split_once(':').map_or(head.clone(), |(_, b)| b.to_string());
            if !hub.branches.contains_key(&head) {
                return invalid(docs, json!([{"resource": "PullRequest", "field": "head", "code": "invalid"}]));
            }
            if hub.pulls.values().any(|p| p.state == "open" && p.head == head && p.base == base_ref) {
                return invalid(docs, json!([{"resource": "PullRequest", "code": "custom",
                    "message": format!("A pull request already exists for {OWNER}:{head}.")}]));
            }
            let n = 100 + hub.created_pulls.len() as u64;
            hub.created_pulls.push(body.clone());
            let pull = Pull {
                head,
                base: base_ref,
                state: "open".into(),
                draft: body["draft"].as_bool().unwrap_or(false),
                merged: false,
                title,
                body: body["body"].as_str().unwrap_or_default().to_string(),
            };
            let out = pull_json(n, &pull, false);
            hub.pulls.insert(n, pull);
            (StatusCode::CREATED, axum::Json(out)).into_response()
        }
        (Method::GET, ["repos", _, _, "issues", n, "comments"]) => {
            let n: u64 = n.parse().unwrap_or(0);
            if !hub.pulls.contains_key(&n) && !hub.issues.contains(&n) {
                return error(404, "Not Found");
            }
            let list: Vec<Value> = hub.comments.iter().filter(|(_, (i, _))| *i == n).map(|(id, (i, b))| comment(*id, *i, b)).collect();
            paged(list, &base, &path, query)
        }
        (Method::POST, ["repos", _, _, "issues", n, "comments"]) => {
            let n: u64 = n.parse().unwrap_or(0);
            if !hub.pulls.contains_key(&n) && !hub.issues.contains(&n) {
                return error(404, "Not Found");
            }
            // "Create an issue comment": `body` is required.
            let Some(text) = body["body"].as_str().filter(|b| !b.is_empty()).map(str::to_string) else {
                return invalid("https://docs.github.com/rest/issues/comments#create-an-issue-comment",
                    json!([{"resource": "IssueComment", "field": "body", "code": "missing_field"}]));
            };
            let id = hub.next_comment;
            hub.next_comment += 1;
            hub.comments.insert(id, (n, text.clone()));
            (StatusCode::CREATED, axum::Json(comment(id, n, &text))).into_response()
        }
        (Method::PATCH, ["repos", _, _, "issues", "comments", id]) => {
            let id: u64 = id.parse().unwrap_or(0);
            let Some(text) = body["body"].as_str().filter(|b| !b.is_empty()).map(str::to_string) else {
                return invalid("https://docs.github.com/rest/issues/comments#update-an-issue-comment",
                    json!([{"resource": "IssueComment", "field": "body", "code": "missing_field"}]));
            };
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
            // "Get a branch": a protected branch carries its `protection`, with the required
            // status checks (contexts, and checks with the App that must report them).
            match hub.branches.get(&name) {
                Some(sha) => {
                    let mut b = json!({"name": name, "commit": {"sha": sha, "url": ""}, "protected": false,
                        "protection": {"enabled": false, "required_status_checks": {"enforcement_level": "off", "contexts": [], "checks": []}}});
                    if let Some(required) = hub.protection.get(&name) {
                        b["protected"] = json!(true);
                        b["protection"] = json!({"enabled": true, "required_status_checks": {"enforcement_level": "non_admins",
                            "contexts": required, "checks": required.iter().map(|c| json!({"context": c, "app_id": null})).collect::<Vec<_>>()}});
                    }
                    axum::Json(b).into_response()
                }
                None => error(404, "Branch not found"),
            }
        }
        // "List check runs for a Git reference": `check_name` filters by name, `filter=latest`
        // (the default) keeps the newest run of each name; `{total_count, check_runs}`.
        (Method::GET, ["repos", _, _, "commits", sha, "check-runs"]) => {
            let name = param("check_name");
            let latest = param("filter").unwrap_or("latest") == "latest";
            let mut runs: Vec<&CommitRun> = hub.commit_runs.iter().rev()
                .filter(|r| r.sha == *sha && name.is_none_or(|n| n == r.name)).collect();
            if latest {
                let mut seen = HashSet::new();
                runs.retain(|r| seen.insert(r.name.clone()));
            }
            let per_page: usize = param("per_page").and_then(|p| p.parse().ok()).unwrap_or(30);
            if per_page > 100 {
                return invalid("https://docs.github.com/rest/checks/runs", json!([{"resource": "CheckRun", "field": "per_page", "code": "invalid"}]));
            }
            let list: Vec<Value> = runs.iter().take(per_page).map(|r| run_json(r)).collect();
            axum::Json(json!({"total_count": runs.len(), "check_runs": list})).into_response()
        }
        // "Get the combined status for a specific reference": the latest status of each
        // context, and the combined `state` (failure if any failed, pending if any is pending
        // or none exists, else success).
        (Method::GET, ["repos", _, _, "commits", sha, "status"]) => {
            let mut latest: Vec<Value> = Vec::new();
            for (s, body) in hub.statuses.iter().rev() {
                if s == sha && !latest.iter().any(|l| l["context"] == body["context"]) {
                    latest.push(json!({"context": body["context"], "state": body["state"], "description": body["description"],
                        "target_url": body["target_url"], "created_at": "2026-11-26T09:00:00Z"}));
                }
            }
            let state = if latest.iter().any(|l| matches!(l["state"].as_str(), Some("failure" | "error"))) {
                "failure"
            } else if latest.is_empty() || latest.iter().any(|l| l["state"] == "pending") {
                "pending"
            } else {
                "success"
            };
            axum::Json(json!({"state": state, "statuses": latest, "sha": sha, "total_count": latest.len(),
                "repository": {"full_name": "acme/webapp"}})).into_response()
        }
        (Method::POST, ["repos", _, _, "check-runs"]) => {
            // Check runs are the Apps' ("Create a check run": "OAuth apps and authenticated
            // users are not able to create a check suite"): a personal token gets 403.
            if !auth.contains("ghs_") {
                return error(403, "You must authenticate via a GitHub App.");
            }
            let problems = check_run_problems(&body, true);
            if !problems.is_empty() {
                return invalid("https://docs.github.com/rest/checks/runs#create-a-check-run", Value::Array(problems));
            }
            let id = 9000 + hub.commit_runs.len() as u64;
            let run = CommitRun {
                id,
                sha: body["head_sha"].as_str().unwrap_or_default().to_string(),
                name: body["name"].as_str().unwrap_or_default().to_string(),
                status: body["status"].as_str().unwrap_or("queued").to_string(),
                conclusion: body["conclusion"].as_str().map(str::to_string),
                app: "coding-swarm-test".into(),
                body: body.clone(),
            };
            let out = run_json(&run);
            hub.commit_runs.push(run);
            (StatusCode::CREATED, axum::Json(out)).into_response()
        }
        (Method::PATCH, ["repos", _, _, "check-runs", id]) => {
            if !auth.contains("ghs_") {
                return error(403, "You must authenticate via a GitHub App.");
            }
            let problems = check_run_problems(&body, false);
            if !problems.is_empty() {
                return invalid("https://docs.github.com/rest/checks/runs#update-a-check-run", Value::Array(problems));
            }
            let id: u64 = id.parse().unwrap_or(0);
            let Some(run) = hub.commit_runs.iter_mut().find(|r| r.id == id) else {
                return error(404, "Not Found");
            };
            // Only the App that created a check run may update it.
            if run.app != "coding-swarm-test" {
                return error(403, "Invalid app_id `1` - check run can only be modified by the GitHub App that created it.");
            }
            if let Some(st) = body["status"].as_str() {
                run.status = st.to_string();
            }
            if let Some(c) = body["conclusion"].as_str() {
                run.conclusion = Some(c.to_string());
                run.status = "completed".into();
            }
            for (k, v) in body.as_object().into_iter().flatten() {
                run.body[k] = v.clone();
            }
            axum::Json(run_json(run)).into_response()
        }
        // "Create reaction for an issue comment" / "... for a pull request review comment":
        // 201 for a new reaction, 200 when the same one is there already; an unknown content
        // is a 422.
        (Method::POST, ["repos", _, _, kind @ ("issues" | "pulls"), "comments", id, "reactions"]) => {
            let content = body["content"].as_str().unwrap_or_default().to_string();
            if !matches!(content.as_str(), "+1" | "-1" | "laugh" | "confused" | "heart" | "hooray" | "rocket" | "eyes") {
                return invalid("https://docs.github.com/rest/reactions/reactions", json!([{"resource": "Reaction", "field": "content", "code": "invalid"}]));
            }
            let id: u64 = id.parse().unwrap_or(0);
            let entry = (kind.to_string(), id, content.clone());
            let code = if hub.reactions.contains(&entry) { StatusCode::OK } else { StatusCode::CREATED };
            hub.reactions.push(entry);
            (code, axum::Json(json!({"id": hub.reactions.len(), "content": content, "user": user("swarm-bot", "Bot")}))).into_response()
        }
        // "Get a review for a pull request"
        // (<https://docs.github.com/en/rest/pulls/reviews#get-a-review-for-a-pull-request>).
        (Method::GET, ["repos", _, _, "pulls", n, "reviews", id]) => {
            let (n, id): (u64, u64) = (n.parse().unwrap_or(0), id.parse().unwrap_or(0));
            match hub.reviews.get(&id).filter(|r| r.pull == n) {
                Some(r) => axum::Json(review_json(id, r)).into_response(),
                None => error(404, "Not Found"),
            }
        }
        // "List comments for a pull request review": paginated, the review comment objects.
        (Method::GET, ["repos", _, _, "pulls", n, "reviews", id, "comments"]) => {
            let (n, id): (u64, u64) = (n.parse().unwrap_or(0), id.parse().unwrap_or(0));
            let Some(r) = hub.reviews.get(&id).filter(|r| r.pull == n) else {
                return error(404, "Not Found");
            };
            let list: Vec<Value> = r.comments.iter().map(|(cid, file, line, hunk, text)| json!({
                "url": format!("https://api.github.com/repos/acme/webapp/pulls/comments/{cid}"), "pull_request_review_id": id,
                "id": cid, "node_id": format!("PRRC_{cid}"), "diff_hunk": hunk, "path": file, "position": 1, "original_position": 1,
                "commit_id": SHA, "original_commit_id": SHA, "in_reply_to_id": null, "user": user(&r.login, &r.kind), "body": text,
                "created_at": "2026-11-26T09:00:00Z", "updated_at": "2026-11-26T09:00:00Z",
                "html_url": format!("https://github.com/acme/webapp/pull/{n}#discussion_r{cid}"),
                "pull_request_url": format!("https://api.github.com/repos/acme/webapp/pulls/{n}"), "author_association": "MEMBER",
                "start_line": null, "original_start_line": null, "start_side": null, "line": line, "original_line": line, "side": "RIGHT",
                "subject_type": "line"})).collect();
            paged(list, &base, &path, query)
        }
        // "List check runs in a check suite": `{total_count, check_runs}`.
        (Method::GET, ["repos", _, _, "check-suites", id, "check-runs"]) => {
            let id: u64 = id.parse().unwrap_or(0);
            let runs: Vec<Value> = hub.check_runs.iter().filter(|(_, r)| r.0 == id).map(|(rid, (suite, name, conclusion, app))| json!({
                "id": rid, "head_sha": SHA, "node_id": format!("CR_{rid}"), "external_id": "", "url": format!("https://api.github.com/repos/acme/webapp/check-runs/{rid}"),
                "html_url": format!("https://github.com/acme/webapp/runs/{rid}"), "details_url": format!("https://github.com/acme/webapp/actions/runs/1/job/{rid}"),
                "status": "completed", "conclusion": conclusion, "started_at": "2026-11-26T09:00:00Z", "completed_at": "2026-11-26T09:05:00Z",
                "output": {"title": null, "summary": null, "text": null, "annotations_count": 0}, "name": name,
                "check_suite": {"id": suite}, "app": {"id": 15368, "slug": app, "name": app}, "pull_requests": []})).collect();
            axum::Json(json!({"total_count": runs.len(), "check_runs": runs})).into_response()
        }
        // "List jobs for a workflow run": `{total_count, jobs}`.
        (Method::GET, ["repos", _, _, "actions", "runs", id, "jobs"]) => {
            let id: u64 = id.parse().unwrap_or(0);
            let Some(jobs) = hub.jobs.get(&id) else {
                return error(404, "Not Found");
            };
            let jobs: Vec<Value> = jobs.iter().map(|(jid, name, conclusion)| json!({
                "id": jid, "run_id": id, "run_url": format!("https://api.github.com/repos/acme/webapp/actions/runs/{id}"), "node_id": format!("CR_{jid}"),
                "head_sha": SHA, "url": format!("https://api.github.com/repos/acme/webapp/actions/jobs/{jid}"),
                "html_url": format!("https://github.com/acme/webapp/actions/runs/{id}/job/{jid}"), "status": "completed", "conclusion": conclusion,
                "started_at": "2026-11-26T09:00:00Z", "completed_at": "2026-11-26T09:05:00Z", "name": name, "steps": [],
                "check_run_url": format!("https://api.github.com/repos/acme/webapp/check-runs/{jid}"), "labels": ["ubuntu-latest"],
                "runner_id": 1, "runner_name": "GitHub Actions 1", "workflow_name": "CI", "head_branch": "main"})).collect();
            axum::Json(json!({"total_count": jobs.len(), "jobs": jobs})).into_response()
        }
        // "Download job logs for a workflow run": 302 to a URL that expires after a minute.
        (Method::GET, ["repos", _, _, "actions", "jobs", id, "logs"]) => {
            let id: u64 = id.parse().unwrap_or(0);
            if !hub.job_logs.contains_key(&id) {
                return error(404, "Not Found");
            }
            let mut r = StatusCode::FOUND.into_response();
            r.headers_mut().insert("location", HeaderValue::from_str(&format!("{base}/_blob/job-logs/{id}?sig=signed")).unwrap());
            r
        }
        (Method::POST, ["repos", _, _, "statuses", sha]) => {
            // "Create a commit status": `state` is one of error, failure, pending, success.
            if !matches!(body["state"].as_str(), Some("error" | "failure" | "pending" | "success")) {
                return invalid("https://docs.github.com/rest/commits/statuses#create-a-commit-status",
                    json!([{"resource": "Status", "field": "state", "code": "custom", "message": "state is not included in the list"}]));
            }
            hub.statuses.push((sha.to_string(), body.clone()));
            let context = body["context"].as_str().unwrap_or("default");
            (StatusCode::CREATED, axum::Json(json!({"id": hub.statuses.len(), "state": body["state"], "context": context, "description": body["description"], "target_url": body["target_url"], "created_at": "2026-11-26T09:00:00Z"}))).into_response()
        }
        _ => error(404, "Not Found"),
    }
}

//! A scripted Anthropic Messages API on loopback, for the real Claude Code CLI. Only the model
//! is scripted: the CLI, its tools, the worker and git are real. Each request is answered by
//! the step of the script that matches how many assistant turns the conversation already has,
//! so the script reads like the conversation: write a file, run a command, say you are done.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Step {
    /// A final text answer (`end_turn`).
    Text(String),
    /// A tool call; `{cwd}` in string inputs becomes the CLI's working directory.
    Tool { name: String, input: Value },
    /// `step`, reporting `output_tokens` in its usage (which the CLI prices into its cost).
    Spend { step: Box<Step>, output_tokens: u64 },
    /// An HTTP error with an Anthropic error body and extra headers.
    Error {
        status: u16,
        kind: String,
        message: String,
        headers: Vec<(String, String)>,
    },
}

impl Step {
    pub fn text(t: &str) -> Self {
        Self::Text(t.into())
    }
    pub fn tool(name: &str, input: Value) -> Self {
        Self::Tool {
            name: name.into(),
            input,
        }
    }
}

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Value,
}

/// What the scripted model knows about the conversation it answers.
#[derive(Debug, Clone)]
pub struct Turn {
    /// Assistant turns so far in this conversation.
    pub index: usize,
    /// The CLI's working directory (the checkout), from its system prompt.
    pub cwd: String,
    /// The key in "# Your task: KEY (branch B)" of the first user message.
    pub task_key: String,
    /// The whole request body as text, to look for things in.
    pub text: String,
}

type Script = Arc<dyn Fn(&Turn) -> Step + Send + Sync>;

#[derive(Clone)]
struct ServerState {
    script: Script,
    seen: Arc<Mutex<Vec<Seen>>>,
}

pub struct ModelServer {
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ModelServer {
    /// Answers turn N of every conversation with `script[N]`, then "Done.".
    pub async fn start(script: Vec<Step>) -> Self {
        Self::start_with(move |t: &Turn| {
            script
                .get(t.index)
                .cloned()
                .unwrap_or_else(|| Step::text("Done."))
        })
        .await
    }

    /// Answers with whatever `script` decides for the turn.
    pub async fn start_with(script: impl Fn(&Turn) -> Step + Send + Sync + 'static) -> Self {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let state = ServerState {
            script: Arc::new(script),
            seen: seen.clone(),
        };
        let app = Router::new().fallback(post(answer)).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, seen, task }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests to the Messages API.
    pub fn messages_requests(&self) -> Vec<Seen> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.starts_with("/v1/messages"))
            .collect()
    }
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn sse(event: &str, data: Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

fn cwd_of(body: &Value) -> String {
    let text = body.to_string();
    text.split("Primary working directory: ")
        .nth(1)
        .and_then(|rest| rest.split(['\\', '"']).next())
        .unwrap_or("")
        .trim()
        .to_string()
}

fn fill(v: &Value, cwd: &str) -> Value {
    match v {
        Value::String(s) => Value::String(s.replace("{cwd}", cwd)),
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), fill(v, cwd))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(|v| fill(v, cwd)).collect()),
        other => other.clone(),
    }
}

async fn answer(
    State(state): State<ServerState>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let headers_map = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                v.to_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    state.seen.lock().unwrap().push(Seen {
        path: uri.to_string(),
        headers: headers_map,
        body: body.clone(),
    });
    if !uri.path().starts_with("/v1/messages") || uri.path().contains("count_tokens") {
        return (StatusCode::OK, axum::Json(json!({"input_tokens": 10}))).into_response();
    }
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("claude-test")
        .to_string();
    let turn = body
        .get("messages")
        .and_then(Value::as_array)
        .map_or(0, |m| m.iter().filter(|x| x["role"] == "assistant").count());
    let cwd = cwd_of(&body);
    let text = body.to_string();
    let task_key = text
        .split("# Your task: ")
        .nth(1)
        .and_then(|r| r.split([' ', '\\']).next())
        .unwrap_or("")
        .to_string();
    let script = state.script.clone();
    let info = Turn {
        index: turn,
        cwd: cwd.clone(),
        task_key,
        text,
    };
    // The script may look at the checkout (as a real model would, through tools): off the
    // async threads.
    let step = tokio::task::spawn_blocking(move || script(&info))
        .await
        .unwrap();
    let (step, output_tokens) = match step {
        Step::Spend {
            step,
            output_tokens,
        } => (*step, output_tokens),
        step => (step, 20),
    };
    let streaming = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let (block, stop) = match &step {
        Step::Error {
            status,
            kind,
            message,
            headers,
        } => {
            let mut r = (
                StatusCode::from_u16(*status).unwrap(),
                axum::Json(json!({"type": "error", "error": {"type": kind, "message": message}})),
            )
                .into_response();
            for (k, v) in headers {
                r.headers_mut().insert(
                    axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            return r;
        }
        Step::Spend { .. } => unreachable!("unwrapped above"),
        Step::Text(t) => (json!({"type": "text", "text": t}), "end_turn"),
        Step::Tool { name, input } => (
            json!({"type": "tool_use", "id": format!("toolu_{turn}"), "name": name, "input": fill(input, &cwd)}),
            "tool_use",
        ),
    };
    let usage = json!({"input_tokens": 100, "output_tokens": output_tokens, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0});
    if !streaming {
        let msg = json!({"id": format!("msg_{turn}"), "type": "message", "role": "assistant", "model": model, "content": [block], "stop_reason": stop, "stop_sequence": null, "usage": usage});
        return (StatusCode::OK, axum::Json(msg)).into_response();
    }
    let mut out = sse(
        "message_start",
        json!({"type": "message_start", "message": {"id": format!("msg_{turn}"), "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 100, "output_tokens": 1}}}),
    );
    match &block["type"].as_str() {
        Some("text") => {
            out += &sse(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            );
            out += &sse(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": block["text"]}}),
            );
        }
        _ => {
            out += &sse(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}}),
            );
            out += &sse(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": block["input"].to_string()}}),
            );
        }
    }
    out += &sse(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    );
    out += &sse(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": output_tokens}}),
    );
    out += &sse("message_stop", json!({"type": "message_stop"}));
    ([("content-type", "text/event-stream")], out).into_response()
}

/// The Claude Code CLI the tests run: `SWARM_TEST_CLAUDE`, else where `.ci/run` installs it.
/// The `[agents.claude]` table of a config for the real CLI against `server`, its OAuth token
/// taken from `TEST_OAUTH_TOKEN` (given to the engine, not set in the tests' environment).
pub fn claude_agent_toml(server: &ModelServer, max_turns: u32) -> String {
    format!(
        "[agents.claude]\nkind = \"claude\"\ncommand = [{bin:?}]\n\
         env = {{ CLAUDE_CODE_OAUTH_TOKEN = \"${{TEST_OAUTH_TOKEN}}\", ANTHROPIC_BASE_URL = {url:?}, IS_SANDBOX = \"1\" }}\n\
         max_turns = {max_turns}\n",
        bin = claude_bin(),
        url = server.url
    )
}

pub fn claude_bin() -> String {
    if let Ok(p) = std::env::var("SWARM_TEST_CLAUDE") {
        return p;
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let p = format!("{home}/.cache/coding-swarm/claude/node_modules/.bin/claude");
    assert!(
        std::path::Path::new(&p).exists(),
        "the Claude Code CLI is needed for this test: run .ci/run (it installs it at {p}) or set SWARM_TEST_CLAUDE"
    );
    p
}

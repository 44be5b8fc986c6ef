//! A run's log as a conversation, live: `GET /api/tasks/{project}/{key}/transcript` follows the
//! log of the task's latest run (a file tail on the local runtime) and sends each line, read as
//! Claude Code `stream-json`, as server-sent events; it ends when the run does. Parsing is pure;
//! the stream reads the runtime and the store.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use serde::Serialize;
use serde_json::Value;

use super::api::ApiError;
use super::WebState;
use crate::spec::TaskState;

/// Longest text of an entry; the rest is cut, saying how much.
pub const MAX_TEXT: usize = 2000;
/// Longest tool input or tool result.
pub const MAX_TOOL: usize = 1000;
/// How often a followed log is read while nothing new came.
const POLL: Duration = Duration::from_millis(250);

/// One part of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    /// The session started: the model and how many tools it has.
    System { text: String },
    /// What the agent says.
    Text { text: String },
    /// What the agent thinks, when the model shows it.
    Thinking { text: String },
    /// A tool call, its input as JSON text.
    Tool {
        id: String,
        name: String,
        input: String,
    },
    /// What a tool answered.
    ToolResult {
        id: String,
        text: String,
        is_error: bool,
    },
    /// The run's final answer.
    Final {
        text: String,
        is_error: bool,
        turns: Option<u64>,
        cost_usd: Option<f64>,
    },
    /// A line that is not part of the conversation (the worker's own, say).
    Note { text: String },
}

/// `text` cut to `max` characters, saying how many more there were.
pub fn cut(text: &str, max: usize) -> String {
    let n = text.chars().count();
    if n <= max {
        return text.to_string();
    }
    let head: String = text.chars().take(max).collect();
    format!("{head}… ({} more characters)", n - max)
}

fn content_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| match p.get("type").and_then(Value::as_str) {
                Some("text") => p.get("text").and_then(Value::as_str).map(str::to_string),
                Some(other) => Some(format!("[{other}]")),
                None => None,
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The entries one log line makes: a `stream-json` event of Claude Code, or a note.
pub fn parse_line(line: &str) -> Vec<Entry> {
    let line = line.trim_end();
    if line.trim().is_empty() {
        return Vec::new();
    }
    let note = || {
        vec![Entry::Note {
            text: cut(line, MAX_TEXT),
        }]
    };
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return note();
    };
    let str_of = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let blocks = || {
        v.pointer("/message/content")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    match v.get("type").and_then(Value::as_str) {
        Some("system") if v.get("subtype").and_then(Value::as_str) == Some("init") => {
            let tools = v.get("tools").and_then(Value::as_array).map_or(0, Vec::len);
            vec![Entry::System {
                text: format!(
                    "session started: model {}, {tools} tools",
                    str_of(&v, "model")
                ),
            }]
        }
        Some("system") => Vec::new(),
        Some("assistant") => blocks()
            .iter()
            .filter_map(|b| match b.get("type").and_then(Value::as_str) {
                Some("text") => Some(Entry::Text {
                    text: cut(&str_of(b, "text"), MAX_TEXT),
                }),
                Some("thinking") => Some(Entry::Thinking {
                    text: cut(&str_of(b, "thinking"), MAX_TEXT),
                }),
                Some("tool_use") => Some(Entry::Tool {
                    id: str_of(b, "id"),
                    name: str_of(b, "name"),
                    input: cut(
                        &b.get("input").map(Value::to_string).unwrap_or_default(),
                        MAX_TOOL,
                    ),
                }),
                _ => None,
            })
            .collect(),
        Some("user") => blocks()
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
            .map(|b| Entry::ToolResult {
                id: str_of(b, "tool_use_id"),
                text: cut(
                    &content_text(b.get("content").unwrap_or(&Value::Null)),
                    MAX_TOOL,
                ),
                is_error: b.get("is_error").and_then(Value::as_bool).unwrap_or(false),
            })
            .collect(),
        Some("result") => vec![Entry::Final {
            text: cut(&str_of(&v, "result"), MAX_TEXT),
            is_error: v.get("is_error").and_then(Value::as_bool).unwrap_or(false),
            turns: v.get("num_turns").and_then(Value::as_u64),
            cost_usd: v.get("total_cost_usd").and_then(Value::as_f64),
        }],
        _ => note(),
    }
}

/// Where a followed transcript is.
struct Follow {
    s: WebState,
    project: String,
    key: String,
    task_id: i64,
    attempt: i32,
    run: String,
    offset: u64,
    queue: VecDeque<SseEvent>,
    /// The run has ended: one more read, then the end.
    draining: bool,
    done: bool,
}

fn event(name: &str, data: &impl Serialize) -> SseEvent {
    SseEvent::default()
        .event(name)
        .data(serde_json::to_string(data).unwrap_or_default())
}

impl Follow {
    /// Reads what is new, or finds that the run ended, or waits.
    async fn step(&mut self) {
        let Some(read) = self.s.runtime_read_log.get() else {
            self.end("the runtime is not up yet");
            return;
        };
        if let Ok(r) = read(self.run.clone(), self.offset).await {
            if r.restarted {
                self.queue
                    .push_back(event("restart", &serde_json::json!({})));
            }
            for line in r.text.lines() {
                for e in parse_line(line) {
                    self.queue.push_back(event("entry", &e));
                }
            }
            let got = r.next != self.offset || r.restarted;
            self.offset = r.next;
            if got {
                return;
            }
        }
        let running = match self.s.store.task(&self.project, &self.key).await {
            Ok(Some(t)) => {
                t.id == self.task_id && t.attempts == self.attempt && t.status == TaskState::Running
            }
            Ok(None) => false,
            // The database failed for a moment: keep following.
            Err(_) => true,
        };
        if running {
            tokio::time::sleep(POLL).await;
        } else if self.draining {
            self.end("the run ended");
        } else {
            self.draining = true;
        }
    }

    fn end(&mut self, why: &str) {
        self.queue
            .push_back(event("end", &serde_json::json!({ "reason": why })));
        self.done = true;
    }
}

pub async fn transcript(
    State(s): State<WebState>,
    Path((project, key)): Path<(String, String)>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let t = super::api::find(&s, &project, &key).await?;
    let mut f = Follow {
        run: t.run_name(),
        task_id: t.id,
        attempt: t.attempts,
        s,
        project,
        key,
        offset: 0,
        queue: VecDeque::new(),
        draining: false,
        done: false,
    };
    if t.attempts == 0 {
        f.end("the task has not run yet");
    }
    let stream = futures::stream::unfold(f, |mut f| async move {
        loop {
            if let Some(e) = f.queue.pop_front() {
                return Some((Ok(e), f));
            }
            if f.done {
                return None;
            }
            f.step().await;
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_json_lines_become_a_conversation_and_long_parts_are_cut() {
        let init = r#"{"type":"system","subtype":"init","model":"claude-x","tools":["Bash","Edit"],"session_id":"s"}"#;
        assert_eq!(
            parse_line(init),
            [Entry::System {
                text: "session started: model claude-x, 2 tools".into()
            }]
        );
        let assistant = r#"{"type":"assistant","message":{"content":[{"type":"text","text":"Let me look."},{"type":"tool_use","id":"t1","name":"Bash","input":{"command":"ls"}}]}}"#;
        assert_eq!(
            parse_line(assistant),
            [
                Entry::Text {
                    text: "Let me look.".into()
                },
                Entry::Tool {
                    id: "t1".into(),
                    name: "Bash".into(),
                    input: r#"{"command":"ls"}"#.into()
                }
            ]
        );
        let long = "x".repeat(MAX_TOOL + 5);
        let user = format!(
            r#"{{"type":"user","message":{{"content":[{{"type":"tool_result","tool_use_id":"t1","content":[{{"type":"text","text":"{long}"}}],"is_error":true}}]}}}}"#
        );
        match &parse_line(&user)[..] {
            [Entry::ToolResult { id, text, is_error }] => {
                assert_eq!((id.as_str(), *is_error), ("t1", true));
                assert!(text.ends_with("… (5 more characters)"), "{text}");
                assert_eq!(text.chars().filter(|c| *c == 'x').count(), MAX_TOOL);
            }
            other => panic!("{other:?}"),
        }
        let result = r#"{"type":"result","subtype":"success","is_error":false,"result":"Done.","num_turns":3,"total_cost_usd":0.25}"#;
        assert_eq!(
            parse_line(result),
            [Entry::Final {
                text: "Done.".into(),
                is_error: false,
                turns: Some(3),
                cost_usd: Some(0.25)
            }]
        );
        assert_eq!(
            parse_line("worker starts: clone"),
            [Entry::Note {
                text: "worker starts: clone".into()
            }]
        );
        assert_eq!(parse_line("   "), []);
        assert_eq!(
            serde_json::to_value(&parse_line(result)[0]).unwrap()["kind"],
            "final"
        );
    }
}

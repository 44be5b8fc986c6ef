//! The Claude Code CLI, headless: the safety check that keeps runs on the subscription, the
//! command line, and the reading of its `stream-json` output into a classified result. Pure
//! except the safety check's look at the environment and the credentials file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;

use crate::job::AgentSettings;
use crate::spec::{truncate, ErrorClass, RunResult};

/// Exit code of `swarm worker` when it refused to run because `ANTHROPIC_API_KEY` was set.
pub const EXIT_BILLING_GUARD: u8 = 3;

/// How the run authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `CLAUDE_CODE_OAUTH_TOKEN` (from `claude setup-token`): the recommended way.
    OauthToken,
    /// A mounted `~/.claude/.credentials.json`, copied into the run's own HOME.
    CredentialsFile(PathBuf),
}

/// The check before anything else (before any network traffic, the clone included):
/// `ANTHROPIC_API_KEY` anywhere in reach would switch the CLI to pay-per-token billing, so the
/// run refuses; and without subscription credentials it refuses with instructions.
pub fn safety_check(
    agent_env: &BTreeMap<String, String>,
    worker_home: Option<&Path>,
) -> Result<Credentials, RunResult> {
    let set = |name: &str| {
        std::env::var(name).is_ok_and(|v| !v.trim().is_empty())
            || agent_env.get(name).is_some_and(|v| !v.trim().is_empty())
    };
    if set("ANTHROPIC_API_KEY") || set("ANTHROPIC_AUTH_TOKEN") {
        return Err(RunResult::failure(
            ErrorClass::BillingGuard,
            "refusing to run Claude Code: ANTHROPIC_API_KEY is set, which would bill this run per token \
             instead of using the subscription. Remove it from the worker's environment (and from any \
             Secret the job mounts); use CLAUDE_CODE_OAUTH_TOKEN instead.",
        ));
    }
    if agent_env
        .get("CLAUDE_CODE_OAUTH_TOKEN")
        .is_some_and(|v| !v.trim().is_empty())
    {
        return Ok(Credentials::OauthToken);
    }
    if let Some(home) = worker_home {
        let file = home.join(".claude").join(".credentials.json");
        if file.is_file() {
            return Ok(Credentials::CredentialsFile(file));
        }
    }
    Err(RunResult::failure(
        ErrorClass::Auth,
        "no Claude Code subscription credentials: run `claude setup-token` on a machine where you are \
         logged in and give the engine the token as CLAUDE_CODE_OAUTH_TOKEN (the `claude` profile passes \
         it on), or mount a ~/.claude directory holding .credentials.json into the worker's HOME.",
    ))
}

/// The CLI's arguments after the program: print mode, stream-json output, no permission
/// prompts, the profile's caps and extra arguments. No prompt: `claude -p` without a prompt
/// argument reads it from standard input, where the worker gives it the prompt file (one
/// argument of 128 KiB or more is refused by Linux with E2BIG).
pub fn args(profile: &AgentSettings) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "-p".into(),
        "--output-format".into(),
        "stream-json".into(),
        "--verbose".into(),
        "--dangerously-skip-permissions".into(),
    ];
    if let Some(t) = profile.max_turns {
        a.extend(["--max-turns".into(), t.to_string()]);
    }
    if let Some(b) = profile.max_budget_usd {
        a.extend(["--max-budget-usd".into(), format!("{b}")]);
    }
    if let Some(m) = &profile.model {
        a.extend(["--model".into(), m.clone()]);
    }
    a.extend(profile.extra_args.iter().cloned());
    a
}

/// Environment the CLI needs beyond the profile's: no side traffic (telemetry, updates).
pub fn env() -> [(&'static str, &'static str); 2] {
    [
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
        ("DISABLE_AUTOUPDATER", "1"),
    ]
}

/// Prepares the run's own HOME: `~/.claude.json` (the CLI wants it writable) and, for file
/// credentials, a private copy, so concurrent runs never share (and race on) one token file.
pub fn prepare_home(home: &Path, credentials: &Credentials) -> std::io::Result<()> {
    std::fs::create_dir_all(home.join(".claude"))?;
    let config = home.join(".claude.json");
    if !config.exists() {
        std::fs::write(&config, r#"{"hasCompletedOnboarding":true}"#)?;
    }
    if let Credentials::CredentialsFile(src) = credentials {
        std::fs::copy(src, home.join(".claude").join(".credentials.json"))?;
    }
    Ok(())
}

/// The final event of a run: the truth about it, whatever the exit code says.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ResultEvent {
    #[serde(default)]
    pub subtype: String,
    #[serde(default)]
    pub is_error: bool,
    #[serde(default)]
    pub result: Option<String>,
    #[serde(default)]
    pub num_turns: Option<u32>,
    #[serde(default)]
    pub total_cost_usd: Option<f64>,
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub api_error_status: Option<u16>,
    #[serde(default)]
    pub errors: Option<Vec<String>>,
}

impl ResultEvent {
    /// Field by field, so one field of an unexpected type in another CLI version loses only
    /// that field, not the run's outcome.
    fn read(v: &serde_json::Value) -> Self {
        let str_of = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        Self {
            subtype: str_of("subtype").unwrap_or_default(),
            // Absent is false; anything but a boolean counts as an error, never as a success.
            is_error: v
                .get("is_error")
                .is_some_and(|x| x.as_bool() != Some(false)),
            result: str_of("result"),
            num_turns: v
                .get("num_turns")
                .and_then(|x| x.as_u64())
                .map(|n| n as u32),
            total_cost_usd: v.get("total_cost_usd").and_then(|x| x.as_f64()),
            session_id: str_of("session_id"),
            api_error_status: v
                .get("api_error_status")
                .and_then(|x| x.as_u64())
                .map(|n| n as u16),
            errors: v.get("errors").and_then(|x| x.as_array()).map(|a| {
                a.iter()
                    .map(|e| {
                        e.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| e.to_string())
                    })
                    .collect()
            }),
        }
    }
}

/// What the stream told us besides the result.
#[derive(Debug, Clone, Default)]
pub struct StreamState {
    pub result: Option<ResultEvent>,
    /// When a rejected rate limit resets, from a `rate_limit_event`.
    pub rate_limit_reset: Option<DateTime<Utc>>,
    pub rate_limited: bool,
    pub session_id: Option<String>,
    /// Set when the CLI's init event says it authenticates with an API key (pay per token).
    pub api_key_source: Option<String>,
    pub lines: usize,
    pub unparsed: usize,
}

impl StreamState {
    /// Reads one line of `stream-json` output. Returns true at the result event: stop reading.
    pub fn feed(&mut self, line: &str) -> bool {
        let line = line.trim();
        if line.is_empty() {
            return false;
        }
        self.lines += 1;
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            self.unparsed += 1;
            return false;
        };
        if self.session_id.is_none() {
            self.session_id = v
                .get("session_id")
                .and_then(|s| s.as_str())
                .map(str::to_string);
        }
        match v.get("type").and_then(|t| t.as_str()) {
            Some("rate_limit_event") => {
                let info = v.get("rate_limit_info");
                let status = info
                    .and_then(|i| i.get("status"))
                    .and_then(|s| s.as_str())
                    .unwrap_or("");
                if status == "rejected" {
                    self.rate_limited = true;
                    self.rate_limit_reset = info.and_then(|i| i.get("resetsAt")).and_then(epoch);
                }
                false
            }
            Some("system") if v.get("subtype").and_then(|s| s.as_str()) == Some("init") => {
                // "none" means subscription (OAuth) credentials; anything else is an API key
                // from the environment, a settings file or an apiKeyHelper.
                match v.get("apiKeySource").and_then(|s| s.as_str()) {
                    Some(source) if source != "none" => {
                        self.api_key_source = Some(source.to_string())
                    }
                    _ => {}
                }
                false
            }
            Some("result") => {
                self.result = Some(ResultEvent::read(&v));
                true
            }
            _ => false,
        }
    }
}

fn epoch(v: &serde_json::Value) -> Option<DateTime<Utc>> {
    let n = v
        .as_i64()
        .or_else(|| v.as_f64().map(|f| f as i64))
        .or_else(|| v.as_str()?.parse().ok())?;
    // Seconds, or milliseconds for large values.
    let secs = if n > 100_000_000_000 { n / 1000 } else { n };
    Utc.timestamp_opt(secs, 0).single()
}

/// A reset time written into a usage-limit message, e.g. `Claude AI usage limit reached|1767225600`.
fn reset_in_text(text: &str) -> Option<DateTime<Utc>> {
    let (_, tail) = text.rsplit_once('|')?;
    let digits: String = tail
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    epoch(&serde_json::Value::String(digits))
}

/// The run's outcome from what the stream said and how the process ended.
/// Texts are redacted with `redact` before they are cut to size, so a cut never splits a
/// secret into an unrecognisable prefix.
pub fn classify(
    state: &StreamState,
    exit_ok: bool,
    output_tail: &str,
    redact: &dyn Fn(&str) -> String,
) -> RunResult {
    let Some(r) = &state.result else {
        let why = if state.lines == 0 {
            "printed nothing"
        } else {
            "ended without a result event"
        };
        return RunResult {
            session_id: state.session_id.clone(),
            ..RunResult::failure(
                if state.rate_limited {
                    ErrorClass::RateLimit
                } else {
                    ErrorClass::Crash
                },
                format!(
                    "Claude Code {why} (exit {}): {}",
                    if exit_ok { "ok" } else { "failed" },
                    crate::job::truncate_start(&redact(output_tail.trim()), 2000)
                ),
            )
        };
    };
    let text = r
        .result
        .clone()
        .or_else(|| r.errors.as_ref().map(|e| e.join("; ")))
        .unwrap_or_default();
    let mut result = RunResult {
        success: r.subtype == "success" && !r.is_error,
        summary: (!text.trim().is_empty()).then(|| truncate(text.trim(), 4000)),
        turns: r.num_turns,
        cost_usd: r.total_cost_usd,
        session_id: r.session_id.clone().or_else(|| state.session_id.clone()),
        ..RunResult::default()
    };
    if result.success {
        return result;
    }
    // The CLI reports API errors as subtype "success" with is_error; only then does the text
    // speak for the API (an agent's own failure may mention "authentication" in passing).
    let api_error = r.subtype == "success" && r.is_error;
    let lower = text.to_ascii_lowercase();
    let class = if r.api_error_status == Some(429)
        || state.rate_limited
        || (api_error
            && (lower.contains("usage limit")
                || lower.contains("rate limit")
                || lower.contains("rate_limit")))
    {
        result.rate_limit_reset = state.rate_limit_reset.or_else(|| reset_in_text(&text));
        ErrorClass::RateLimit
    } else if matches!(r.api_error_status, Some(401 | 403))
        || (api_error
            && (lower.contains("invalid api key")
                || lower.contains("oauth token")
                || lower.contains("please run /login")
                || lower.contains("authentication_error")))
    {
        ErrorClass::Auth
    } else {
        ErrorClass::Agent
    };
    result.error_class = Some(class);
    result.error = Some(if text.trim().is_empty() {
        format!(
            "Claude Code reported an error ({})",
            if r.subtype.is_empty() {
                "no detail"
            } else {
                &r.subtype
            }
        )
    } else {
        truncate(text.trim(), 4000)
    });
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(lines: &[&str]) -> StreamState {
        let mut s = StreamState::default();
        for l in lines {
            if s.feed(l) {
                break;
            }
        }
        s
    }

    #[test]
    fn the_result_event_is_the_truth() {
        let s = run(&[
            r#"{"type":"system","subtype":"init","session_id":"s1"}"#,
            "not json",
            r#"{"type":"result","subtype":"success","is_error":false,"result":"Done.","num_turns":3,"total_cost_usd":0.25,"session_id":"s1"}"#,
            r#"{"type":"ignored-after-result"}"#,
        ]);
        let r = classify(&s, false, "", &|t| t.to_string());
        assert!(r.success, "exit code does not matter: {r:?}");
        assert_eq!(
            (
                r.summary.as_deref(),
                r.turns,
                r.cost_usd,
                r.session_id.as_deref()
            ),
            (Some("Done."), Some(3), Some(0.25), Some("s1"))
        );
        assert_eq!(s.lines, 3);
    }

    #[test]
    fn failures_are_classified() {
        let rl = run(&[
            r#"{"type":"result","subtype":"success","is_error":true,"api_error_status":429,"result":"API Error: 429 rate limited"}"#,
        ]);
        assert_eq!(
            classify(&rl, true, "", &|t| t.to_string()).error_class,
            Some(ErrorClass::RateLimit),
            "exit 0 with is_error is a failure"
        );
        let usage = run(&[
            r#"{"type":"result","subtype":"success","is_error":true,"result":"Claude AI usage limit reached|1767225600"}"#,
        ]);
        let r = classify(&usage, false, "", &|t| t.to_string());
        assert_eq!(r.error_class, Some(ErrorClass::RateLimit));
        assert_eq!(r.rate_limit_reset.unwrap().timestamp(), 1767225600);
        let event = run(&[
            r#"{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":1767229200}}"#,
            r#"{"type":"result","subtype":"error_during_execution","is_error":true,"result":"limit"}"#,
        ]);
        assert_eq!(
            classify(&event, false, "", &|t| t.to_string())
                .rate_limit_reset
                .unwrap()
                .timestamp(),
            1767229200
        );
        let auth = run(&[
            r#"{"type":"result","subtype":"success","is_error":true,"api_error_status":401,"result":"Invalid API key · Please run /login"}"#,
        ]);
        assert_eq!(
            classify(&auth, false, "", &|t| t.to_string()).error_class,
            Some(ErrorClass::Auth)
        );
        let agent = run(&[
            r#"{"type":"result","subtype":"error_max_turns","is_error":true,"num_turns":10}"#,
        ]);
        let r = classify(&agent, false, "", &|t| t.to_string());
        assert_eq!(r.error_class, Some(ErrorClass::Agent));
        assert!(r.error.unwrap().contains("error_max_turns"));
        let crash = run(&["garbage", "more garbage"]);
        let r = classify(&crash, false, "segfault", &|t| t.to_string());
        assert_eq!(r.error_class, Some(ErrorClass::Crash));
        assert!(r.error.unwrap().contains("segfault"));
    }

    #[test]
    fn an_api_key_in_use_is_noticed_at_init() {
        let mut s = StreamState::default();
        assert!(!s.feed(r#"{"type":"system","subtype":"init","apiKeySource":"none"}"#));
        assert_eq!(s.api_key_source, None);
        s.feed(r#"{"type":"system","subtype":"init","apiKeySource":"ANTHROPIC_API_KEY"}"#);
        assert_eq!(s.api_key_source.as_deref(), Some("ANTHROPIC_API_KEY"));
        let odd = run(&[
            r#"{"type":"result","subtype":"success","is_error":false,"result":"ok","errors":[{"code":1}],"num_turns":"two"}"#,
        ]);
        let r = classify(&odd, true, "", &|t| t.to_string());
        assert!(
            r.success && r.turns.is_none(),
            "odd fields lose only themselves: {r:?}"
        );
    }

    #[test]
    fn args_carry_the_caps() {
        let mut p = AgentSettings::from(&crate::config::AgentProfile::default_claude());
        p.max_turns = Some(7);
        p.max_budget_usd = Some(1.5);
        p.model = Some("opus".into());
        p.extra_args = vec!["--add-dir".into(), "/x".into()];
        let a = args(&p);
        assert_eq!(a[0], "-p");
        assert_eq!(
            a.last().map(String::as_str),
            Some("/x"),
            "no prompt argument: it comes on standard input"
        );
        let joined = a.join(" ");
        for want in [
            "--output-format stream-json",
            "--verbose",
            "--dangerously-skip-permissions",
            "--max-turns 7",
            "--max-budget-usd 1.5",
            "--model opus",
            "--add-dir /x",
        ] {
            assert!(joined.contains(want), "{joined} lacks {want}");
        }
    }
}

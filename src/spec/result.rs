//! The result of one run: what a worker reports, what the store keeps, what a status file shows.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Why a run did not succeed. The engine acts on the class: transient classes are retried,
/// the others are final results that go to the project manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The agent ran and could not do the work (tests failed, gave up, reported an error).
    Agent,
    /// The model provider's rate or usage limit; retried after the limit resets.
    RateLimit,
    /// The run took longer than its timeout.
    Timeout,
    /// The worker or agent crashed or printed output that could not be understood.
    Crash,
    /// The agent's command could not be found.
    MissingCli,
    /// The agent's credentials were rejected or missing.
    Auth,
    /// `ANTHROPIC_API_KEY` was set; the run refused to start (it would bill per token).
    BillingGuard,
    /// Cloning, committing or pushing failed.
    Git,
    /// The run was lost: the process or pod disappeared without a result.
    Infrastructure,
    /// A person or a deleted task file stopped the run.
    Cancelled,
}

impl ErrorClass {
    /// Whether the engine retries a run that failed this way (up to its infrastructure cap).
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Self::Crash | Self::Git | Self::Infrastructure | Self::RateLimit
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::RateLimit => "rate_limit",
            Self::Timeout => "timeout",
            Self::Crash => "crash",
            Self::MissingCli => "missing_cli",
            Self::Auth => "auth",
            Self::BillingGuard => "billing_guard",
            Self::Git => "git",
            Self::Infrastructure => "infrastructure",
            Self::Cancelled => "cancelled",
        }
    }
}

/// One run's outcome. Written by the worker as JSON, kept in the store, shown in status files.
/// Fields a reader does not know are ignored: a result from a newer worker (see the job
/// contract, `crate::job`) or a status file from a newer engine still reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunResult {
    pub success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<ErrorClass>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the agent says it did, truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// The commit pushed to `branch`, when the run changed anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_sha: Option<String>,
    /// Whether the run changed any file (a review may legitimately change nothing).
    #[serde(default)]
    pub changed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turns: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// For `rate_limit`: when the provider says the limit resets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_reset: Option<DateTime<Utc>>,
    /// The last lines of the run's log, for failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<String>,
}

impl RunResult {
    /// A failed result of `class` with `error`.
    pub fn failure(class: ErrorClass, error: impl Into<String>) -> Self {
        Self {
            success: false,
            error_class: Some(class),
            error: Some(error.into()),
            ..Self::default()
        }
    }

    pub fn duration_seconds(&self) -> Option<f64> {
        let (s, f) = (self.started_at?, self.finished_at?);
        Some((f - s).num_milliseconds() as f64 / 1000.0)
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary, marking the cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [truncated, {} bytes in all]", &text[..end], text.len())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn each_class_has_its_column_name_and_only_the_passing_troubles_are_retried() {
        use ErrorClass::*;
        for (class, name, transient) in [
            (Agent, "agent", false),
            (RateLimit, "rate_limit", true),
            (Timeout, "timeout", false),
            (Crash, "crash", true),
            (MissingCli, "missing_cli", false),
            (Auth, "auth", false),
            (BillingGuard, "billing_guard", false),
            (Git, "git", true),
            (Infrastructure, "infrastructure", true),
            (Cancelled, "cancelled", false),
        ] {
            assert_eq!(
                (class.as_str(), class.is_transient()),
                (name, transient),
                "{class:?}"
            );
            assert_eq!(serde_json::to_value(class).unwrap(), name);
        }
    }

    #[test]
    fn a_failure_carries_its_class_and_error_and_a_run_its_duration() {
        let f = RunResult::failure(ErrorClass::Git, "push refused");
        assert_eq!(
            (f.success, f.error_class, f.error.as_deref()),
            (false, Some(ErrorClass::Git), Some("push refused"))
        );
        let at = |ms| Utc.timestamp_millis_opt(1_800_000_000_000 + ms).unwrap();
        let run = |started: Option<i64>, finished: Option<i64>| RunResult {
            started_at: started.map(at),
            finished_at: finished.map(at),
            ..RunResult::default()
        };
        assert_eq!(run(Some(500), Some(3_000)).duration_seconds(), Some(2.5));
        assert_eq!(run(Some(0), None).duration_seconds(), None);
        assert_eq!(run(None, Some(0)).duration_seconds(), None);
    }

    #[test]
    fn a_long_text_is_cut_on_a_character_boundary_and_says_so() {
        for (text, max, want) in [
            ("short", 5, "short"),
            ("abcdef", 3, "abc… [truncated, 6 bytes in all]"),
            // `é` is two bytes, 1 and 2: a cut after byte 2 would split it.
            ("aébc", 2, "a… [truncated, 5 bytes in all]"),
            ("aébc", 3, "aé… [truncated, 5 bytes in all]"),
        ] {
            assert_eq!(truncate(text, max), want, "{text} {max}");
        }
    }
}

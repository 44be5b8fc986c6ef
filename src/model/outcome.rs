//! What a finished run means for its task: complete it, retry it, requeue it, or run the next
//! generation; the retry policy that decides it. Pure.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::event::EventKind;
use super::task::TaskRow;
use crate::spec::{ErrorClass, RunResult};

/// The decision for a finished run; the store applies it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Final: the result goes to the status file and the project manager.
    Completed(RunResult),
    /// Back to pending after `not_before`. `infrastructure` counts against the engine's
    /// infrastructure retry cap; otherwise against the task's `max_attempts`.
    Retry {
        result: RunResult,
        not_before: DateTime<Utc>,
        infrastructure: bool,
    },
    /// A rate or usage limit: back to pending after `not_before`, not counted as an attempt.
    Requeue {
        result: RunResult,
        not_before: DateTime<Utc>,
    },
    /// The spec changed while the run was going: the new spec runs as the next generation.
    NextGeneration(RunResult),
    /// The task file was deleted while the run was going: the task goes away.
    Deleted(RunResult),
}

impl Outcome {
    /// The event kind and message that record this outcome.
    pub fn describe(&self, attempt: i32) -> (EventKind, String) {
        let why = |r: &RunResult| {
            r.error
                .clone()
                .unwrap_or_else(|| r.summary.clone().unwrap_or_default())
        };
        match self {
            Self::Completed(r) if r.success => (EventKind::Completed, format!("attempt {attempt} succeeded")),
            Self::Completed(r) => (
                EventKind::Completed,
                format!("attempt {attempt} failed ({}): {}", r.error_class.map_or("error", ErrorClass::as_str), why(r)),
            ),
            Self::Retry { result, not_before, infrastructure } => (
                EventKind::Retry,
                format!(
                    "attempt {attempt} failed ({}{}): {}; retrying after {}",
                    result.error_class.map_or("error", ErrorClass::as_str),
                    if *infrastructure { ", infrastructure" } else { "" },
                    why(result),
                    not_before.to_rfc3339()
                ),
            ),
            Self::Requeue { result, not_before } => (
                EventKind::Requeued,
                format!("rate or usage limit: {}; back in the queue after {} (not counted as an attempt)", why(result), not_before.to_rfc3339()),
            ),
            Self::NextGeneration(_) => (EventKind::NextGeneration, format!("attempt {attempt} ended; the spec changed meanwhile and runs again")),
            Self::Deleted(_) => (EventKind::Removed, "run ended; task file was deleted".into()),
        }
    }
}

impl Outcome {
    /// The run's result, whatever was decided.
    pub fn result(&self) -> &RunResult {
        match self {
            Self::Completed(r)
            | Self::Retry { result: r, .. }
            | Self::Requeue { result: r, .. }
            | Self::NextGeneration(r)
            | Self::Deleted(r) => r,
        }
    }

    /// Whether the result is the task's final one (it goes to the status file and the manager).
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Completed(_))
    }

    /// How the outcome is counted in metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Completed(r) if r.success => "succeeded",
            Self::Completed(r) => r.error_class.map_or("failed", ErrorClass::as_str),
            Self::Retry { .. } => "retried",
            Self::Requeue { .. } => "rate_limited",
            Self::NextGeneration(_) => "superseded",
            Self::Deleted(_) => "deleted",
        }
    }
}

/// Rate-limited runs of one generation before the result is final: a limit that never lifts
/// must not keep a task in the queue for ever.
pub const MAX_REQUEUES: u32 = 20;

/// How the engine retries.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_infra_retries: u32,
    /// Backoff before the first retry; doubles each time, capped at 32 times this.
    pub backoff: Duration,
}

impl RetryPolicy {
    fn delay(&self, n: u32) -> chrono::Duration {
        let d = self.backoff.saturating_mul(1 << n.min(5));
        chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
    }
}

/// Decides what `result` of the current run of `row` means.
pub fn decide(
    row: &TaskRow,
    result: RunResult,
    policy: &RetryPolicy,
    now: DateTime<Utc>,
) -> Outcome {
    if row.file_deleted {
        return Outcome::Deleted(result);
    }
    if row
        .run_spec_hash
        .as_deref()
        .is_some_and(|h| h != row.spec_hash)
    {
        return Outcome::NextGeneration(result);
    }
    if result.success {
        return Outcome::Completed(result);
    }
    match result.error_class {
        Some(ErrorClass::Cancelled) => Outcome::Completed(result),
        Some(ErrorClass::RateLimit) if (row.requeues as u32) >= MAX_REQUEUES => {
            Outcome::Completed(RunResult {
                error: Some(format!(
                    "{} (gave up after {MAX_REQUEUES} rate-limited runs)",
                    result.error.clone().unwrap_or_default()
                )),
                ..result
            })
        }
        Some(ErrorClass::RateLimit) => {
            // The provider's reset time when it gave one (within a week), else backoff.
            let backoff = now + policy.delay(row.requeues as u32);
            let not_before = result
                .rate_limit_reset
                .filter(|t| *t > now && *t < now + chrono::Duration::days(7))
                .unwrap_or(backoff);
            Outcome::Requeue { result, not_before }
        }
        Some(class) if class.is_transient() => {
            if (row.infra_failures as u32) < policy.max_infra_retries {
                let not_before = now + policy.delay(row.infra_failures as u32);
                Outcome::Retry {
                    result,
                    not_before,
                    infrastructure: true,
                }
            } else {
                Outcome::Completed(result)
            }
        }
        _ => {
            let agent_attempts = row.attempts - row.infra_failures - row.requeues;
            if agent_attempts < row.max_attempts {
                Outcome::Retry {
                    result,
                    not_before: now + policy.delay(0),
                    infrastructure: false,
                }
            } else {
                Outcome::Completed(result)
            }
        }
    }
}

#[cfg(test)]
#[path = "outcome_tests.rs"]
mod tests;

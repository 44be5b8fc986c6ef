//! The green layer's rules, pure: epics and their states, what a project-manager activation
//! carries, how it is shown to the manager, how the manager says an epic is done, how a run
//! counts against its epic, and the hard caps that end every loop.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::outcome::Outcome;
use super::role::Role;
use super::task::BadColumn;
use crate::spec::{truncate, ErrorClass, RunResult};

/// The addressee of a project's manager: its runs never overlap.
pub fn manager_addressee(project: &str) -> String {
    format!("project-mgr-{project}")
}

/// One thing that happened since the manager last ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ActivationItem {
    /// A task of an epic finished.
    Result {
        key: String,
        epic: Option<String>,
        success: bool,
        summary: Option<String>,
        error: Option<String>,
        error_class: Option<String>,
        branch: Option<String>,
        commit: Option<String>,
        /// The tasks of the same addressee still waiting when it finished, in the order they
        /// will run.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        queued: Vec<String>,
    },
    /// The manager's own last run failed (for example with invalid task files).
    ManagerFailed { key: String, error: String },
    /// A person changed `.ai/plan.md`.
    PlanEdit {
        commit: String,
        author: String,
        message: String,
        diff: String,
    },
    /// A person asked for something on a pull request (a comment mentioning the swarm).
    Request {
        pull_request: u64,
        branch: String,
        task: Option<String>,
        author: String,
        body: String,
    },
    /// A person with write access reviewed a task's pull request: changes requested (or, by
    /// config, comments), with every comment of the review on the diff.
    Review {
        pull_request: u64,
        branch: String,
        task: Option<String>,
        review_id: u64,
        author: String,
        /// GitHub's review state, lower case: `changes_requested` or `commented`.
        state: String,
        body: String,
        comments: Vec<ReviewComment>,
    },
    /// Checks failed on the head commit of a task's branch.
    CiFailed {
        branch: String,
        task: Option<String>,
        sha: String,
        /// This commit's place among the branch's failed commits (1 for the first).
        round: u32,
        /// The cap (`[github] max_ci_fix_rounds`): past it, the manager is told to give up.
        max_rounds: u32,
        checks: Vec<FailedCheck>,
    },
}

/// One comment of a review on the diff.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewComment {
    pub id: u64,
    pub path: String,
    /// The line in the file it is on (`None` for a comment on a line no longer in the diff).
    pub line: Option<u64>,
    /// The diff hunk it is on, ending at its line.
    pub diff_hunk: String,
    pub body: String,
}

/// A check that failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedCheck {
    /// What names it across deliveries: `check:<check run id>` (an Actions job's id is its
    /// check run's) or `status:<context>`.
    pub id: String,
    pub name: String,
    /// `failure`, `timed_out`, `startup_failure` (checks) or `failure`, `error` (statuses).
    pub conclusion: String,
    pub details_url: Option<String>,
    /// The end of its log (GitHub Actions jobs), cut to `[github] ci_log_excerpt_kib`.
    pub log: Option<String>,
}

impl ActivationItem {
    /// The same review or the same failed commit: what a later delivery merges into.
    pub fn same_subject(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Review { review_id: a, .. }, Self::Review { review_id: b, .. }) => a == b,
            (
                Self::CiFailed {
                    branch: a, sha: x, ..
                },
                Self::CiFailed {
                    branch: b, sha: y, ..
                },
            ) => a == b && x == y,
            _ => false,
        }
    }

    /// Adds what `other` (about the same subject) has that this one lacks: review comments,
    /// failed checks. Whether anything was added.
    pub fn merge(&mut self, other: &Self) -> bool {
        match (self, other) {
            (Self::Review { comments, .. }, Self::Review { comments: more, .. }) => {
                let before = comments.len();
                for c in more {
                    if !comments.iter().any(|x| x.id == c.id) {
                        comments.push(c.clone());
                    }
                }
                comments.len() > before
            }
            (Self::CiFailed { checks, .. }, Self::CiFailed { checks: more, .. }) => {
                let before = checks.len();
                for c in more {
                    if !checks.iter().any(|x| x.id == c.id) {
                        checks.push(c.clone());
                    }
                }
                checks.len() > before
            }
            _ => false,
        }
    }
}

impl ActivationItem {
    pub fn result(key: &str, epic: Option<&str>, r: &RunResult) -> Self {
        Self::Result {
            key: key.into(),
            epic: epic.map(str::to_string),
            success: r.success,
            summary: r.summary.as_deref().map(|s| truncate(s, 2000)),
            error: r.error.as_deref().map(|s| truncate(s, 2000)),
            error_class: r.error_class.map(|c| c.as_str().to_string()),
            branch: r.branch.clone(),
            commit: r.commit_sha.clone(),
            queued: Vec::new(),
        }
    }

    /// A result with the tasks of its addressee still waiting, in run order.
    pub fn with_queue(mut self, keys: Vec<String>) -> Self {
        if let Self::Result { queued, .. } = &mut self {
            *queued = keys;
        }
        self
    }
}

/// The prompt of an activation: what happened, for the manager to decide the next step.
pub fn render(items: &[ActivationItem]) -> String {
    let mut out = String::from("# What happened since your last run\n");
    for item in items {
        out.push('\n');
        match item {
            ActivationItem::Result {
                key,
                epic,
                success,
                summary,
                error,
                error_class,
                branch,
                commit,
                queued,
            } => {
                out.push_str(&format!(
                    "## Task `{key}` {}{}\n",
                    if *success { "succeeded" } else { "FAILED" },
                    epic.as_deref()
                        .map(|e| format!(" (epic {e})"))
                        .unwrap_or_default()
                ));
                if let Some(b) = branch {
                    out.push_str(&format!(
                        "- branch: `{b}`{}\n",
                        commit
                            .as_deref()
                            .map(|c| format!(" at {c}"))
                            .unwrap_or_default()
                    ));
                }
                if let Some(c) = error_class {
                    out.push_str(&format!("- error class: {c}\n"));
                }
                if let Some(e) = error {
                    out.push_str(&format!("- error: {e}\n"));
                }
                if let Some(s) = summary {
                    out.push_str(&format!("- summary: {s}\n"));
                }
                out.push_str(&format!("- status file: `.ai/status/{key}.yaml`\n"));
                if !queued.is_empty() {
                    let keys: Vec<String> = queued.iter().map(|k| format!("`{k}`")).collect();
                    out.push_str(&format!(
                        "- next for its addressee, in this order: {}\n",
                        keys.join(", then ")
                    ));
                }
            }
            ActivationItem::ManagerFailed { key, error } => {
                out.push_str(&format!("## Your last run (`{key}`) FAILED\n\n{error}\n\nFix what it says; task files must validate.\n"));
            }
            ActivationItem::Request {
                pull_request,
                branch,
                task,
                author,
                body,
            } => {
                out.push_str(&format!(
                    "## {author} asks on pull request #{pull_request} (branch `{branch}`{})\n\n{}\n\nDecide what to do about it: usually a task on that branch.\n",
                    task.as_deref().map(|t| format!(", task `{t}`")).unwrap_or_default(),
                    body.lines().map(|l| format!("> {l}")).collect::<Vec<_>>().join("\n")
                ));
            }
            ActivationItem::Review {
                pull_request,
                branch,
                task,
                author,
                state,
                body,
                comments,
                ..
            } => render_review(
                &mut out,
                *pull_request,
                branch,
                task.as_deref(),
                author,
                state,
                body,
                comments,
            ),
            ActivationItem::CiFailed {
                branch,
                task,
                sha,
                round,
                max_rounds,
                checks,
            } => render_ci(
                &mut out,
                branch,
                task.as_deref(),
                sha,
                *round,
                *max_rounds,
                checks,
            ),
            ActivationItem::PlanEdit {
                commit,
                author,
                message,
                diff,
            } => {
                out.push_str(&format!(
                    "## A person ({author}) edited `.ai/plan.md` in {commit}: {message}\n\nFollow the plan as it is now. The change:\n\n```diff\n{diff}\n```\n"
                ));
            }
        }
    }
    out
}

/// Lines of a review comment's diff hunk shown: the end of it, where its line is.
const HUNK_LINES: usize = 12;

#[allow(clippy::too_many_arguments)]
fn render_review(
    out: &mut String,
    pull_request: u64,
    branch: &str,
    task: Option<&str>,
    author: &str,
    state: &str,
    body: &str,
    comments: &[ReviewComment],
) {
    let what = if state == "changes_requested" {
        "requested changes on"
    } else {
        "commented in a review of"
    };
    out.push_str(&format!(
        "## {author} {what} pull request #{pull_request} (branch `{branch}`{})\n",
        task.map(|t| format!(", task `{t}`")).unwrap_or_default()
    ));
    if !body.trim().is_empty() {
        out.push('\n');
        out.push_str(&quote(body));
        out.push('\n');
    }
    if !comments.is_empty() {
        out.push_str(&format!(
            "\n### {} comment(s) on the diff\n",
            comments.len()
        ));
    }
    for c in comments {
        let at = c.line.map(|l| format!(", line {l}")).unwrap_or_default();
        let lines: Vec<&str> = c.diff_hunk.lines().collect();
        let hunk = lines[lines.len().saturating_sub(HUNK_LINES)..].join("\n");
        out.push_str(&format!(
            "\n`{}`{at}:\n\n```diff\n{hunk}\n```\n\n{}\n",
            c.path,
            quote(&c.body)
        ));
    }
    out.push_str("\nAddress every point of this review: usually a task on that branch.\n");
}

fn render_ci(
    out: &mut String,
    branch: &str,
    task: Option<&str>,
    sha: &str,
    round: u32,
    max_rounds: u32,
    checks: &[FailedCheck],
) {
    let task = task.map(|t| format!(", task `{t}`")).unwrap_or_default();
    if round > max_rounds {
        out.push_str(&format!(
            "## CI failed again on branch `{branch}`{task} at {sha}: the cap of {max_rounds} fix rounds is reached\n"
        ));
    } else {
        out.push_str(&format!(
            "## CI failed on branch `{branch}`{task} at {sha} (fix round {round} of {max_rounds})\n"
        ));
    }
    for c in checks {
        out.push_str(&format!(
            "\n- `{}`: {}{}\n",
            c.name,
            c.conclusion,
            c.details_url
                .as_deref()
                .map(|u| format!(" ({u})"))
                .unwrap_or_default()
        ));
        if let Some(log) = &c.log {
            out.push_str(&format!(
                "\n  The end of its log:\n\n```text\n{}\n```\n",
                log.trim_end()
            ));
        }
    }
    if round > max_rounds {
        out.push_str("\nGive up on this step: schedule no further fix for this branch's checks. Record in the plan that CI still fails and why, and go on without it (or end the epic with EPIC FAILED if nothing else can proceed).\n");
    } else {
        out.push_str(
            "\nDecide the fix: usually a task on that branch that makes these checks pass.\n",
        );
    }
}

/// `text` as a Markdown quote.
fn quote(text: &str) -> String {
    text.lines()
        .map(|l| format!("> {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What a manager's final message says about its epic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EpicMarker {
    Complete,
    Failed(String),
}

/// `EPIC COMPLETE` or `EPIC FAILED: reason` in the manager's final message.
pub fn epic_marker(summary: &str) -> Option<EpicMarker> {
    if let Some(i) = summary.find("EPIC FAILED") {
        let rest = summary[i + "EPIC FAILED".len()..].trim_start_matches([':', ' ', '-']);
        let reason = rest.lines().next().unwrap_or("").trim();
        return Some(EpicMarker::Failed(if reason.is_empty() {
            "the project manager gave up".into()
        } else {
            truncate(reason, 500)
        }));
    }
    summary
        .contains("EPIC COMPLETE")
        .then_some(EpicMarker::Complete)
}

/// Hard caps per epic; hitting one fails the epic.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpicCaps {
    #[serde(default = "d_tasks")]
    pub max_tasks: u32,
    #[serde(default = "d_failures")]
    pub max_consecutive_failures: u32,
    #[serde(default = "d_activations")]
    pub max_activations: u32,
    #[serde(default = "d_spend")]
    pub max_spend_usd: f64,
}

fn d_tasks() -> u32 {
    50
}
fn d_failures() -> u32 {
    3
}
fn d_activations() -> u32 {
    60
}
fn d_spend() -> f64 {
    25.0
}

impl Default for EpicCaps {
    fn default() -> Self {
        Self {
            max_tasks: d_tasks(),
            max_consecutive_failures: d_failures(),
            max_activations: d_activations(),
            max_spend_usd: d_spend(),
        }
    }
}

/// The counters a cap looks at.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EpicCounters {
    pub tasks: u32,
    pub consecutive_failures: u32,
    pub activations: u32,
    pub spend_usd: f64,
}

/// The first cap an epic has hit, as a reason for people.
pub fn cap_hit(c: &EpicCounters, caps: &EpicCaps) -> Option<String> {
    if c.tasks > caps.max_tasks {
        return Some(format!(
            "cap reached: {} tasks (max_tasks = {})",
            c.tasks, caps.max_tasks
        ));
    }
    if c.consecutive_failures >= caps.max_consecutive_failures {
        return Some(format!(
            "cap reached: {} consecutive failures (max_consecutive_failures = {})",
            c.consecutive_failures, caps.max_consecutive_failures
        ));
    }
    if c.activations >= caps.max_activations {
        return Some(format!(
            "cap reached: {} manager activations (max_activations = {})",
            c.activations, caps.max_activations
        ));
    }
    if c.spend_usd >= caps.max_spend_usd {
        return Some(format!(
            "cap reached: ${:.2} spent (max_spend_usd = {:.2})",
            c.spend_usd, caps.max_spend_usd
        ));
    }
    None
}

/// Where an epic stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EpicState {
    Active,
    Complete,
    Failed,
}

impl EpicState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Complete => "complete",
            Self::Failed => "failed",
        }
    }
}

impl TryFrom<String> for EpicState {
    type Error = BadColumn;
    fn try_from(value: String) -> Result<Self, BadColumn> {
        match value.as_str() {
            "active" => Ok(Self::Active),
            "complete" => Ok(Self::Complete),
            "failed" => Ok(Self::Failed),
            _ => Err(BadColumn {
                column: "epics.state",
                value,
                expected: "active, complete, failed",
            }),
        }
    }
}

/// An epic as the database holds it, with the counters its caps look at.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpicRow {
    pub project: String,
    pub name: String,
    pub state: EpicState,
    pub reason: Option<String>,
    pub tasks: i32,
    pub consecutive_failures: i32,
    pub activations: i32,
    pub spend_usd: f64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl EpicRow {
    pub fn counters(&self) -> EpicCounters {
        EpicCounters {
            tasks: self.tasks.max(0) as u32,
            consecutive_failures: self.consecutive_failures.max(0) as u32,
            activations: self.activations.max(0) as u32,
            spend_usd: self.spend_usd,
        }
    }

    pub fn is_active(&self) -> bool {
        self.state == EpicState::Active
    }
}

/// Ending `epic`: complete, or failed with `failed`'s reason. `None` when it is not active any
/// more (it ended before; nothing changes).
pub fn end_epic(epic: &EpicRow, failed: Option<&str>) -> Option<(EpicState, Option<String>)> {
    if !epic.is_active() {
        return None;
    }
    Some(match failed {
        Some(reason) => (EpicState::Failed, Some(reason.to_string())),
        None => (EpicState::Complete, None),
    })
}

/// How a finished run counts against its epic's caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpicCount {
    WorkerSucceeded,
    WorkerFailed,
    ManagerRan,
    /// A run that will be retried, or a cancelled one: only its cost counts.
    CostOnly,
}

/// How a run of a task of `role` that ended as `outcome` counts against its epic.
pub fn epic_count(role: Role, outcome: &Outcome) -> EpicCount {
    let result = outcome.result();
    match (role == Role::Manager, outcome.is_final(), result.success) {
        (true, true, _) => EpicCount::ManagerRan,
        (false, true, true) => EpicCount::WorkerSucceeded,
        (false, true, false) if result.error_class != Some(ErrorClass::Cancelled) => {
            EpicCount::WorkerFailed
        }
        _ => EpicCount::CostOnly,
    }
}

/// What an epic change asks the store to do: a task file of kind `epic` opens its epic; every
/// other (non-manager) task of an open epic counts against its `max_tasks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EpicChange {
    /// Opens the epic; one that ended is kept as history and opened anew.
    Open(String),
    CountTask(String),
    /// What the status files of a database rebuilt from the repository tell about the epic.
    Rebuilt(EpicRebuild),
}

/// An epic as far as the status files tell it: how its last manager run ended it (`EPIC
/// COMPLETE` / `EPIC FAILED` in its summary), the manager runs it had and what its runs cost.
/// Not kept in the repository, so not rebuilt: consecutive failures (they start at 0 again).
#[derive(Debug, Clone, PartialEq)]
pub struct EpicRebuild {
    pub name: String,
    pub state: EpicState,
    pub reason: Option<String>,
    pub activations: i32,
    pub spend_usd: f64,
}

impl Eq for EpicRebuild {}

/// Rebuilds the epics of `restored` (the tasks a rebuild recorded completed from their status
/// files), each from its own tasks.
pub fn rebuild_epics(restored: &[&super::task::TaskRow]) -> Vec<EpicRebuild> {
    let mut by_epic: std::collections::BTreeMap<&str, Vec<&super::task::TaskRow>> =
        Default::default();
    for row in restored {
        if let Some(e) = row.epic.as_deref() {
            by_epic.entry(e).or_default().push(row);
        }
    }
    by_epic
        .into_iter()
        .map(|(name, rows)| {
            let managers: Vec<&&super::task::TaskRow> = rows
                .iter()
                .filter(|r| Role::of_kind(r.kind.as_deref()) == Role::Manager)
                .collect();
            let last = managers
                .iter()
                .filter(|r| r.kind.as_deref() != Some("epic") || managers.len() == 1)
                .max_by_key(|r| (r.completed_at, r.key.clone()));
            let marker = last
                .and_then(|r| r.result.as_ref())
                .and_then(|r| r.summary.as_deref())
                .and_then(epic_marker);
            let (state, reason) = match marker {
                Some(EpicMarker::Complete) => (EpicState::Complete, None),
                Some(EpicMarker::Failed(why)) => (EpicState::Failed, Some(why)),
                None => (EpicState::Active, None),
            };
            EpicRebuild {
                name: name.to_string(),
                state,
                reason,
                activations: managers.len() as i32,
                spend_usd: rows
                    .iter()
                    .filter_map(|r| r.result.as_ref().and_then(|x| x.cost_usd))
                    .sum(),
            }
        })
        .collect()
}

/// What the creation of a task with these fields does to its epic, if it has one.
pub fn epic_change_of_new_task(kind: Option<&str>, epic: Option<&str>) -> Option<EpicChange> {
    let epic = epic?;
    if kind == Some("epic") {
        Some(EpicChange::Open(epic.to_string()))
    } else if Role::of_kind(kind) != Role::Manager {
        Some(EpicChange::CountTask(epic.to_string()))
    } else {
        None
    }
}

/// The spec of an engine-made activation task: the manager's addressee, kind `plan`.
pub fn activation_spec(addressee: &str, epic: Option<&str>) -> crate::spec::TaskSpec {
    let mut yaml = format!(
        "addressee: {addressee}\nkind: plan\nprompt: |\n  You are activated: read .ai/plan.md, the results below and the status files, and decide the next step.\ncreated_by: engine\n"
    );
    if let Some(e) = epic {
        yaml.push_str(&format!("epic: {e}\n"));
    }
    crate::spec::parse_task(yaml.as_bytes()).expect("the activation spec is valid by construction")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epic_failed_wins_and_its_reason_is_the_rest_of_its_line_cut_at_500_bytes() {
        // (final message, marker): README section 4, "How an epic ends".
        let long = format!("EPIC FAILED: {}\nnext line", "é".repeat(400));
        let table = [
            (
                "EPIC COMPLETE\nEPIC FAILED: tests never pass",
                "tests never pass",
            ),
            (
                "EPIC FAILED: tests never pass. EPIC COMPLETE",
                "tests never pass. EPIC COMPLETE",
            ),
            ("I quote it: EPIC FAILED - no API\nthe rest", "no API"),
            (
                "EPIC FAILED:   \nwhy is on the next line",
                "the project manager gave up",
            ),
            (long.as_str(), "é"),
        ];
        for (message, reason) in table {
            let Some(EpicMarker::Failed(got)) = epic_marker(message) else {
                panic!("{message}: no EPIC FAILED");
            };
            assert!(got.starts_with(reason), "{message}: {got}");
            let kept = got.split("… [truncated").next().unwrap();
            assert!(
                kept.len() <= 500 && !kept.contains('\n'),
                "{message}: {got}"
            );
        }
        let Some(EpicMarker::Failed(cut)) = epic_marker(&long) else {
            unreachable!()
        };
        assert!(cut.ends_with("… [truncated, 800 bytes in all]"), "{cut}");
    }

    #[test]
    fn markers_and_caps() {
        assert_eq!(
            epic_marker("All merged.\nEPIC COMPLETE"),
            Some(EpicMarker::Complete)
        );
        assert_eq!(
            epic_marker("EPIC FAILED: the API does not exist\nmore"),
            Some(EpicMarker::Failed("the API does not exist".into()))
        );
        assert_eq!(
            epic_marker("EPIC FAILED"),
            Some(EpicMarker::Failed("the project manager gave up".into()))
        );
        assert_eq!(epic_marker("next: review"), None);
        let caps = EpicCaps {
            max_tasks: 3,
            max_consecutive_failures: 2,
            max_activations: 5,
            max_spend_usd: 1.0,
        };
        let ok = EpicCounters {
            tasks: 3,
            consecutive_failures: 1,
            activations: 4,
            spend_usd: 0.5,
        };
        assert_eq!(cap_hit(&ok, &caps), None);
        assert!(cap_hit(&EpicCounters { tasks: 4, ..ok }, &caps)
            .unwrap()
            .contains("max_tasks"));
        assert!(cap_hit(
            &EpicCounters {
                consecutive_failures: 2,
                ..ok
            },
            &caps
        )
        .unwrap()
        .contains("consecutive"));
        assert!(cap_hit(
            &EpicCounters {
                activations: 5,
                ..ok
            },
            &caps
        )
        .unwrap()
        .contains("activations"));
        assert!(cap_hit(
            &EpicCounters {
                spend_usd: 1.0,
                ..ok
            },
            &caps
        )
        .unwrap()
        .contains("$1.00"));
    }

    #[test]
    fn render_shows_results_failures_and_plan_edits() {
        let items = vec![
            ActivationItem::result(
                "impl-a",
                Some("e"),
                &RunResult {
                    success: true,
                    summary: Some("did a".into()),
                    branch: Some("swarm/impl-a".into()),
                    commit_sha: Some("abc".into()),
                    ..RunResult::default()
                },
            )
            .with_queue(vec!["add-test".into(), "fix".into()]),
            ActivationItem::ManagerFailed {
                key: "plan-1".into(),
                error: ".ai/tasks/x.yaml:3:1: unknown field `bogus`".into(),
            },
            ActivationItem::PlanEdit {
                commit: "def".into(),
                author: "Ann".into(),
                message: "cut step 3".into(),
                diff: "-- [ ] step 3".into(),
            },
        ];
        let text = render(&items);
        for want in [
            "Task `impl-a` succeeded (epic e)",
            "swarm/impl-a` at abc",
            "summary: did a",
            "next for its addressee, in this order: `add-test`, then `fix`",
            "FAILED",
            "unknown field `bogus`",
            "Ann",
            "cut step 3",
            "-- [ ] step 3",
        ] {
            assert!(text.contains(want), "{want}: {text}");
        }
    }

    #[test]
    fn render_shows_reviews_with_their_comments_and_failed_checks_with_their_logs() {
        let items = vec![
            ActivationItem::Review {
                pull_request: 7,
                branch: "swarm/a".into(),
                task: Some("a".into()),
                review_id: 9,
                author: "ann".into(),
                state: "changes_requested".into(),
                body: "Two things.".into(),
                comments: vec![ReviewComment {
                    id: 1,
                    path: "src/lib.rs".into(),
                    line: Some(12),
                    diff_hunk: "@@ -10,3 +10,3 @@\n-old\n+new".into(),
                    body: "Handle the empty case.".into(),
                }],
            },
            ActivationItem::CiFailed {
                branch: "swarm/a".into(),
                task: Some("a".into()),
                sha: "abc".into(),
                round: 1,
                max_rounds: 3,
                checks: vec![FailedCheck {
                    id: "check:5".into(),
                    name: "test".into(),
                    conclusion: "failure".into(),
                    details_url: Some("https://ci/5".into()),
                    log: Some("assertion failed".into()),
                }],
            },
        ];
        let text = render(&items);
        for want in [
            "ann requested changes on pull request #7 (branch `swarm/a`, task `a`)",
            "> Two things.",
            "`src/lib.rs`, line 12:",
            "+new",
            "> Handle the empty case.",
            "CI failed on branch `swarm/a`, task `a` at abc (fix round 1 of 3)",
            "`test`: failure (https://ci/5)",
            "assertion failed",
        ] {
            assert!(text.contains(want), "{want}: {text}");
        }
    }
}

#[cfg(test)]
#[path = "green_tests.rs"]
mod table_tests;

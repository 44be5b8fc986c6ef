//! What a task's status comment and commit status say. Pure: rendered from the task's row and
//! its place in the queue; the marker lets the engine find its comment again after a restart.

use serde_json::{json, Value};

use crate::model::TaskRow;
use crate::spec::{ErrorClass, TaskState};

/// The hidden marker of a task's status comment.
pub fn marker(project: &str, key: &str) -> String {
    format!("<!-- coding-swarm:task={project}/{key} -->")
}

/// Where a pending task waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuePlace {
    /// 1 = next for its addressee.
    pub place: i64,
    /// The running task of its addressee, if any.
    pub behind: Option<String>,
}

/// Text from agents shown as text: no HTML, no mentions that ping people.
fn quote(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('@', "@\u{200b}")
        .lines()
        .map(|l| format!("> {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn duration(secs: f64) -> String {
    let s = secs.round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

/// The status comment of a task, with links into github.com.
pub fn comment_body(
    row: &TaskRow,
    repo: &str,
    default_branch: &str,
    queue: Option<&QueuePlace>,
) -> String {
    comment_body_on(row, "https://github.com", repo, default_branch, queue, None)
}

/// The web address of a GitHub whose API is at `api_url` (GitHub Enterprise serves both from
/// one host).
pub fn web_url(api_url: &str) -> String {
    let api = api_url.trim_end_matches('/');
    if api == "https://api.github.com" {
        return "https://github.com".into();
    }
    api.strip_suffix("/api/v3").unwrap_or(api).to_string()
}

/// [`comment_body`] with links into the GitHub at `web`, and to the task's dashboard page
/// `page` when there is one (`[http] public_url`).
pub fn comment_body_on(
    row: &TaskRow,
    web: &str,
    repo: &str,
    default_branch: &str,
    queue: Option<&QueuePlace>,
    page: Option<&str>,
) -> String {
    let mut out = format!(
        "{}\n**coding-swarm** · task `{}`",
        marker(&row.project, &row.key),
        row.key
    );
    if row.generation > 1 {
        out.push_str(&format!(" (generation {})", row.generation));
    }
    out.push_str("\n\n");
    match (row.state(), row.result()) {
        (TaskState::Pending, _) => {
            out.push_str("**Pending.**");
            if let Some(q) = queue {
                out.push_str(&format!(
                    " Place {} in the queue of `{}`",
                    q.place, row.addressee
                ));
                match &q.behind {
                    Some(b) => out.push_str(&format!(", behind `{b}` (running).")),
                    None => out.push('.'),
                }
            }
            if let Some(nb) = row.not_before {
                out.push_str(&format!(
                    " Waits until {} (a retry or a usage limit).",
                    nb.format("%Y-%m-%d %H:%M UTC")
                ));
            }
            out.push('\n');
        }
        (TaskState::Running, _) => {
            out.push_str(&format!("**Running** (attempt {}", row.attempts));
            if let Some(s) = row.started_at {
                out.push_str(&format!(", since {}", s.format("%H:%M:%S UTC")));
            }
            out.push_str(").\n");
        }
        (TaskState::Completed, Some(r)) => {
            let verdict = if r.success {
                "**Succeeded**".to_string()
            } else if r.error_class == Some(ErrorClass::Cancelled) {
                "**Stopped**".to_string()
            } else {
                format!(
                    "**Failed** ({})",
                    r.error_class.map_or("error", ErrorClass::as_str)
                )
            };
            out.push_str(&verdict);
            let mut facts = Vec::new();
            if let Some(d) = r.duration_seconds() {
                facts.push(format!("in {}", duration(d)));
            }
            if let Some(c) = r.cost_usd {
                facts.push(format!("${c:.2}"));
            }
            if let Some(t) = r.turns {
                facts.push(format!("{t} turns"));
            }
            if !facts.is_empty() {
                out.push_str(&format!(" · {}", facts.join(" · ")));
            }
            out.push_str(".\n");
            if let Some(e) = r.error.as_deref().filter(|_| !r.success) {
                out.push_str(&format!("\n{}\n", quote(&crate::spec::truncate(e, 1500))));
            }
            if let Some(s) = &r.summary {
                out.push_str(&format!("\n{}\n", quote(&crate::spec::truncate(s, 3000))));
            }
        }
        (TaskState::Completed, None) => out.push_str("**Completed.**\n"),
    }
    let branch = row
        .result()
        .and_then(|r| r.branch.clone())
        .unwrap_or_else(|| row.branch.clone());
    out.push_str(&format!(
        "\nBranch [`{branch}`]({web}/{repo}/tree/{branch}) · status file [`.ai/status/{key}.yaml`]({web}/{repo}/blob/{default_branch}/.ai/status/{key}.yaml)",
        key = row.key
    ));
    if let Some(page) = page {
        out.push_str(&format!(" · [task page]({page})"));
    }
    out.push('\n');
    out
}

/// The commit status `swarm/<key>` of a task.
pub fn commit_status(row: &TaskRow) -> Value {
    let (state, description) = match (row.state(), row.result()) {
        (TaskState::Pending, _) => ("pending", "waiting in the queue".to_string()),
        (TaskState::Running, _) => ("pending", format!("running (attempt {})", row.attempts)),
        (TaskState::Completed, Some(r)) if r.success => ("success", "succeeded".to_string()),
        (TaskState::Completed, Some(r)) if r.error_class == Some(ErrorClass::Cancelled) => {
            ("error", "stopped".to_string())
        }
        (TaskState::Completed, Some(r)) => (
            "failure",
            format!(
                "failed ({})",
                r.error_class.map_or("error", ErrorClass::as_str)
            ),
        ),
        (TaskState::Completed, None) => ("success", "completed".to_string()),
    };
    json!({"state": state, "context": format!("swarm/{}", row.key), "description": crate::spec::truncate(&description, 130)})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_comment_links_to_the_task_page_when_there_is_one() {
        let spec = crate::spec::parse_task(b"addressee: w\nprompt: p\n").unwrap();
        let task =
            crate::model::NewTask::from_spec(&crate::spec::TaskKey::new("login").unwrap(), &spec);
        let row = task.into_row(
            "web",
            crate::model::Origin::File,
            Some("abc"),
            chrono::Utc::now(),
        );
        let page = "https://swarm.example.com/tasks/web/login";
        let with = comment_body_on(&row, "https://github.com", "o/r", "main", None, Some(page));
        assert!(
            with.trim_end()
                .ends_with(&format!(" · [task page]({page})")),
            "{with}"
        );
        let without = comment_body(&row, "o/r", "main", None);
        assert!(!without.contains("task page"), "{without}");
        assert_eq!(
            with.replace(&format!(" · [task page]({page})"), ""),
            without
        );
    }
}

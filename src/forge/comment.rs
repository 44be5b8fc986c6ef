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
    /// The required checks it waits for, in words (see [`crate::model::checks::waits_for`]).
    pub waits_for: Option<String>,
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

/// Text from elsewhere (check names come from CI) within a line: no HTML, no mentions.
fn inline(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('@', "@\u{200b}")
        .replace(['\r', '\n'], " ")
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
                if let Some(w) = &q.waits_for {
                    out.push_str(&format!(" Waits for {}.", inline(w)));
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

/// The check run `swarm/<key>` of a task (with a GitHub App): its status and conclusion, a
/// title and a summary (result, cost, turns, duration, branch), and `details_url` to the task's
/// page. The head commit and the run's id are the writer's.
pub fn check_run(row: &TaskRow, branch: &str, page: Option<&str>) -> Value {
    let mut run = json!({"name": format!("swarm/{}", row.key), "external_id": row.key});
    let mut facts = vec![format!("Branch `{}`.", inline(branch))];
    let title = match (row.state(), row.result()) {
        (TaskState::Pending, _) => {
            run["status"] = json!("queued");
            "Waiting in the queue".to_string()
        }
        (TaskState::Running, _) => {
            run["status"] = json!("in_progress");
            if let Some(s) = row.started_at {
                run["started_at"] = json!(s.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            }
            format!("Running (attempt {})", row.attempts)
        }
        (TaskState::Completed, result) => {
            run["status"] = json!("completed");
            let (conclusion, title) = match result {
                Some(r) if r.success => ("success", "Succeeded".to_string()),
                Some(r) if r.error_class == Some(ErrorClass::Cancelled) => {
                    ("cancelled", "Stopped".to_string())
                }
                Some(r) => (
                    "failure",
                    format!(
                        "Failed ({})",
                        r.error_class.map_or("error", ErrorClass::as_str)
                    ),
                ),
                None => ("success", "Completed".to_string()),
            };
            run["conclusion"] = json!(conclusion);
            if let Some(r) = result {
                if let Some(d) = r.duration_seconds() {
                    facts.push(format!("Took {}.", duration(d)));
                }
                if let Some(c) = r.cost_usd {
                    facts.push(format!("Cost ${c:.2}."));
                }
                if let Some(t) = r.turns {
                    facts.push(format!("{t} turns."));
                }
                if let Some(e) = &r.error {
                    facts.push(format!("\n{}", quote(&crate::spec::truncate(e, 2000))));
                }
                if let Some(s) = &r.summary {
                    facts.push(format!("\n{}", quote(&crate::spec::truncate(s, 20_000))));
                }
            }
            if let Some(f) = row.completed_at {
                run["completed_at"] = json!(f.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            }
            title
        }
    };
    run["output"] = json!({"title": title, "summary": facts.join(" ")});
    if let Some(p) = page {
        run["details_url"] = json!(p);
    }
    run
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::model::{NewTask, Origin};
    use crate::spec::{parse_task, RunResult, TaskKey};

    fn row(state: TaskState, result: Option<RunResult>) -> TaskRow {
        let spec = parse_task(b"addressee: worker-a\nprompt: do it\n").unwrap();
        let at = Utc.with_ymd_and_hms(2026, 11, 26, 9, 12, 4).unwrap();
        let mut r = NewTask::from_spec(&TaskKey::new("login-form").unwrap(), &spec).into_row(
            "webapp",
            Origin::File,
            Some("c0"),
            at,
        );
        r.status = state;
        r.attempts = 1;
        r.started_at = Some(at);
        r.result = result;
        r
    }

    fn ended(success: bool, class: Option<ErrorClass>) -> RunResult {
        let start = Utc.with_ymd_and_hms(2026, 11, 26, 9, 0, 0).unwrap();
        RunResult {
            success,
            error_class: class,
            error: (!success).then(|| "tests <b>failed</b> for @ann & co".to_string()),
            summary: Some("Did it.\nAsk @bob.".into()),
            started_at: Some(start),
            finished_at: Some(start + chrono::Duration::seconds(252)),
            cost_usd: Some(0.42),
            turns: Some(17),
            ..RunResult::default()
        }
    }

    /// README section 6, "What people see on a pull request": the state line and the commit
    /// status of each state.
    #[test]
    fn each_state_reads_as_the_readme_shows() {
        let wait = Utc.with_ymd_and_hms(2026, 11, 26, 9, 30, 0).unwrap();
        let mut waiting = row(TaskState::Pending, None);
        waiting.not_before = Some(wait);
        let queue = QueuePlace {
            place: 2,
            behind: Some("setup".into()),
            waits_for: None,
        };
        let first = QueuePlace {
            place: 1,
            behind: None,
            waits_for: None,
        };
        let gated = QueuePlace {
            place: 1,
            behind: None,
            waits_for: Some("required checks: `swarm/a`: <ci>@team\nfailed".into()),
        };
        // (row, queue place, a line of the comment, commit status state and description)
        let table = [
            (
                row(TaskState::Pending, None),
                Some(&queue),
                "**Pending.** Place 2 in the queue of `worker-a`, behind `setup` (running).",
                ("pending", "waiting in the queue"),
            ),
            (
                waiting,
                Some(&first),
                "**Pending.** Place 1 in the queue of `worker-a`. Waits until 2026-11-26 09:30 UTC (a retry or a usage limit).",
                ("pending", "waiting in the queue"),
            ),
            (
                row(TaskState::Pending, None),
                None,
                "**Pending.**",
                ("pending", "waiting in the queue"),
            ),
            (
                row(TaskState::Pending, None),
                Some(&gated),
                "**Pending.** Place 1 in the queue of `worker-a`. Waits for required checks: `swarm/a`: &lt;ci&gt;@\u{200b}team failed.",
                ("pending", "waiting in the queue"),
            ),
            (
                row(TaskState::Running, None),
                None,
                "**Running** (attempt 1, since 09:12:04 UTC).",
                ("pending", "running (attempt 1)"),
            ),
            (
                row(TaskState::Completed, Some(ended(true, None))),
                None,
                "**Succeeded** · in 4m 12s · $0.42 · 17 turns.",
                ("success", "succeeded"),
            ),
            (
                row(
                    TaskState::Completed,
                    Some(ended(false, Some(ErrorClass::Timeout))),
                ),
                None,
                "**Failed** (timeout) · in 4m 12s · $0.42 · 17 turns.",
                ("failure", "failed (timeout)"),
            ),
            (
                row(TaskState::Completed, Some(ended(false, None))),
                None,
                "**Failed** (error) · in 4m 12s · $0.42 · 17 turns.",
                ("failure", "failed (error)"),
            ),
            (
                row(
                    TaskState::Completed,
                    Some(ended(false, Some(ErrorClass::Cancelled))),
                ),
                None,
                "**Stopped** · in 4m 12s · $0.42 · 17 turns.",
                ("error", "stopped"),
            ),
            (
                row(TaskState::Completed, None),
                None,
                "**Completed.**",
                ("success", "completed"),
            ),
        ];
        for (r, q, line, (state, description)) in table {
            let body = comment_body(&r, "acme/webapp", "main", q);
            let lines: Vec<&str> = body.lines().collect();
            assert_eq!(lines[0], "<!-- coding-swarm:task=webapp/login-form -->");
            assert_eq!(lines[1], "**coding-swarm** · task `login-form`");
            assert_eq!(lines[3], line, "{body}");
            assert_eq!(
                lines.last().copied(),
                Some("Branch [`swarm/login-form`](https://github.com/acme/webapp/tree/swarm/login-form) · status file [`.ai/status/login-form.yaml`](https://github.com/acme/webapp/blob/main/.ai/status/login-form.yaml)")
            );
            let s = commit_status(&r);
            assert_eq!(
                (s["state"].as_str(), s["description"].as_str()),
                (Some(state), Some(description)),
                "{line}"
            );
            assert_eq!(s["context"], "swarm/login-form");
        }
    }

    #[test]
    fn agents_text_is_quoted_escaped_and_mentions_no_one() {
        let r = row(
            TaskState::Completed,
            Some(ended(false, Some(ErrorClass::Agent))),
        );
        let body = comment_body(&r, "acme/webapp", "main", None);
        assert!(
            body.contains(
                "\n> tests &lt;b&gt;failed&lt;/b&gt; for @\u{200b}ann &amp; co\n\n> Did it.\n> Ask @\u{200b}bob.\n"
            ),
            "{body}"
        );
        assert!(!body.contains("<b>") && !body.contains("@ann") && !body.contains("@bob"));
        // A success shows its summary, not an error.
        let ok = comment_body(
            &row(TaskState::Completed, Some(ended(true, None))),
            "acme/webapp",
            "main",
            None,
        );
        assert!(!ok.contains("failed") && ok.contains("> Did it."), "{ok}");
        // From the second generation on, the generation is in the head line.
        let mut second = r.clone();
        second.generation = 2;
        let body = comment_body(&second, "acme/webapp", "main", None);
        assert!(
            body.contains("**coding-swarm** · task `login-form` (generation 2)\n"),
            "{body}"
        );
    }

    #[test]
    fn durations_and_web_addresses() {
        for (secs, text) in [
            (0.0, "0s"),
            (59.4, "59s"),
            (60.0, "1m 0s"),
            (3599.0, "59m 59s"),
            (3600.0, "1h 0m"),
            (7384.0, "2h 3m"),
        ] {
            assert_eq!(duration(secs), text);
        }
        for (api, web) in [
            ("https://api.github.com", "https://github.com"),
            ("https://api.github.com/", "https://github.com"),
            ("https://ghe.example.com/api/v3", "https://ghe.example.com"),
            ("https://ghe.example.com/api/v3/", "https://ghe.example.com"),
            ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
        ] {
            assert_eq!(web_url(api), web);
        }
    }

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

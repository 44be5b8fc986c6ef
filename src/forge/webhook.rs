//! GitHub webhooks, the pure part: the signature check (HMAC-SHA256 over the raw body,
//! compared in constant time), the events we act on, and comment commands.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

/// Whether `signature` (the `X-Hub-Signature-256` header, `sha256=<hex>`) is the HMAC-SHA256 of
/// `body` under `secret`. Constant-time in the comparison.
pub fn verify_signature(secret: &[u8], body: &[u8], signature: Option<&str>) -> bool {
    let Some(hex_sig) = signature.and_then(|s| s.strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_sig.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// The signature GitHub would send for `body`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any size");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[derive(Debug, Clone, Deserialize)]
pub struct Repository {
    pub full_name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub login: String,
    #[serde(rename = "type", default)]
    pub kind: String,
}

#[derive(Debug, Clone, Deserialize)]
struct Comment {
    #[serde(default)]
    id: Option<u64>,
    body: Option<String>,
    user: User,
}

#[derive(Debug, Clone, Deserialize)]
struct Issue {
    number: u64,
    #[serde(default)]
    pull_request: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
struct PullRequestRef {
    #[serde(rename = "ref")]
    name: String,
}

#[derive(Debug, Clone, Deserialize)]
struct PullRequest {
    number: u64,
    head: PullRequestRef,
}

/// The webhook events the engine acts on: what a webhook or a GitHub App subscribes to
/// (`deploy/github-app/manifest.json`, README section 6).
pub const EVENTS: &[&str] = &[
    "push",
    "issue_comment",
    "pull_request",
    "pull_request_review",
    "pull_request_review_comment",
    "check_run",
    "check_suite",
    "workflow_run",
    "status",
];

/// An event we act on.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A push to a branch (`refs/heads/...`).
    Push {
        repo: String,
        branch: String,
        after: String,
    },
    /// A comment on an issue or a pull request (also a review's body).
    Comment {
        repo: String,
        number: u64,
        /// The comment's id (none for a review's body).
        comment_id: Option<u64>,
        is_pull_request: bool,
        head_branch: Option<String>,
        author: String,
        author_is_bot: bool,
        body: String,
    },
    /// A review submitted on a pull request (`pull_request_review.submitted`).
    Review {
        repo: String,
        number: u64,
        head_branch: String,
        review_id: u64,
        author: String,
        author_is_bot: bool,
        /// Lower case, as webhooks send it: `changes_requested`, `commented`, `approved`.
        state: String,
        body: String,
    },
    /// A comment on a pull request's diff (`pull_request_review_comment.created`); every such
    /// comment belongs to a review.
    ReviewComment {
        repo: String,
        number: u64,
        comment_id: Option<u64>,
        head_branch: String,
        review_id: Option<u64>,
        author: String,
        author_is_bot: bool,
        body: String,
    },
    /// Checks that completed on a commit, with what is known of them from the delivery.
    ChecksCompleted {
        repo: String,
        /// The branch the delivery names (`None` when GitHub gives none, as for a fork's).
        branches: Vec<String>,
        sha: String,
        source: CheckSource,
    },
    /// A pull request opened, reopened, marked ready, pushed to (`synchronize`) or closed.
    PullRequest {
        repo: String,
        number: u64,
        head_branch: String,
        /// `opened`, `reopened`, `ready_for_review`, `synchronize` or `closed`.
        action: String,
        merged: bool,
        author: String,
    },
    /// Re-run asked for on a check run (`check_run.rerequested`, GitHub's "Re-run" button).
    CheckRerun {
        repo: String,
        name: String,
        author: String,
    },
    /// Anything else (ping, other actions): acknowledged, nothing to do.
    Ignored { event: String },
}

/// Where completed checks come from, and what more the API tells about them.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckSource {
    /// One check run (`check_run.completed`).
    Run {
        id: u64,
        name: String,
        conclusion: String,
        details_url: Option<String>,
        /// Run by GitHub Actions: its id is the job's, whose log can be read.
        actions: bool,
    },
    /// A check suite (`check_suite.completed`): its failing runs are listed from the API.
    Suite { id: u64, conclusion: String },
    /// A GitHub Actions workflow run (`workflow_run.completed`): its failing jobs are listed
    /// from the API.
    Workflow {
        id: u64,
        name: String,
        conclusion: String,
    },
    /// A commit status (`status`), the legacy API.
    Status {
        context: String,
        state: String,
        target_url: Option<String>,
    },
}

/// Whether a check run's (or suite's, or workflow run's) conclusion is a failure to fix.
pub fn is_failing(conclusion: &str) -> bool {
    matches!(conclusion, "failure" | "timed_out" | "startup_failure")
}

#[derive(Debug, thiserror::Error)]
#[error("the {event} payload is not what GitHub sends: {source}")]
pub struct PayloadError {
    pub event: String,
    #[source]
    pub source: serde_json::Error,
}

/// Parses a verified delivery by its `X-GitHub-Event` name. A body that is not JSON is an
/// error whatever the event; so is a field the engine reads that is missing or not of the type
/// GitHub sends (an object where GitHub sends an object, not a list that serde would also take).
pub fn parse_event(event: &str, body: &[u8]) -> Result<Event, PayloadError> {
    let err = |source| PayloadError {
        event: event.to_string(),
        source,
    };
    let value: serde_json::Value = serde_json::from_slice(body).map_err(err)?;
    let action = value
        .get("action")
        .and_then(|a| a.as_str())
        .unwrap_or_default()
        .to_string();
    // The payload as `T`, once each of `objects` (JSON pointers), where present, is an object.
    fn read<T: serde::de::DeserializeOwned>(
        value: &serde_json::Value,
        objects: &[&str],
    ) -> Result<T, serde_json::Error> {
        use serde::de::Error;
        for at in objects {
            match value.pointer(at) {
                Some(v) if !v.is_object() => {
                    let kind = match v {
                        serde_json::Value::Null => "null",
                        serde_json::Value::Bool(_) => "a boolean",
                        serde_json::Value::Number(_) => "a number",
                        serde_json::Value::String(_) => "a string",
                        serde_json::Value::Array(_) => "a list",
                        serde_json::Value::Object(_) => "an object",
                    };
                    return Err(serde_json::Error::custom(format!(
                        "invalid type: {kind} at {at}, expected an object"
                    )));
                }
                _ => {}
            }
        }
        T::deserialize(value)
    }
    match event {
        "push" => {
            #[derive(Deserialize)]
            struct Push {
                #[serde(rename = "ref")]
                name: String,
                #[serde(default)]
                after: String,
                repository: Repository,
            }
            let p: Push = read(&value, &["/repository"]).map_err(err)?;
            match p.name.strip_prefix("refs/heads/") {
                Some(branch) => Ok(Event::Push {
                    repo: p.repository.full_name,
                    branch: branch.to_string(),
                    after: p.after,
                }),
                None => Ok(Event::Ignored {
                    event: format!("push to {}", p.name),
                }),
            }
        }
        "issue_comment" if action == "created" => {
            #[derive(Deserialize)]
            struct P {
                comment: Comment,
                issue: Issue,
                repository: Repository,
            }
            let p: P = read(
                &value,
                &["/comment", "/comment/user", "/issue", "/repository"],
            )
            .map_err(err)?;
            Ok(Event::Comment {
                repo: p.repository.full_name,
                number: p.issue.number,
                comment_id: p.comment.id,
                is_pull_request: p.issue.pull_request.is_some(),
                head_branch: None,
                author_is_bot: p.comment.user.kind == "Bot",
                author: p.comment.user.login,
                body: p.comment.body.unwrap_or_default(),
            })
        }
        "pull_request_review" if action == "submitted" => {
            #[derive(Deserialize)]
            struct Review {
                id: u64,
                body: Option<String>,
                user: User,
                state: String,
            }
            #[derive(Deserialize)]
            struct P {
                review: Review,
                pull_request: PullRequest,
                repository: Repository,
            }
            let p: P = read(
                &value,
                &[
                    "/review",
                    "/review/user",
                    "/pull_request",
                    "/pull_request/head",
                    "/repository",
                ],
            )
            .map_err(err)?;
            Ok(Event::Review {
                repo: p.repository.full_name,
                number: p.pull_request.number,
                head_branch: p.pull_request.head.name,
                review_id: p.review.id,
                author_is_bot: p.review.user.kind == "Bot",
                author: p.review.user.login,
                state: p.review.state.to_ascii_lowercase(),
                body: p.review.body.unwrap_or_default(),
            })
        }
        "pull_request_review_comment" if action == "created" => {
            #[derive(Deserialize)]
            struct ReviewComment {
                #[serde(default)]
                id: Option<u64>,
                body: Option<String>,
                user: User,
                #[serde(default)]
                pull_request_review_id: Option<u64>,
            }
            #[derive(Deserialize)]
            struct P {
                comment: ReviewComment,
                pull_request: PullRequest,
                repository: Repository,
            }
            let p: P = read(
                &value,
                &[
                    "/comment",
                    "/comment/user",
                    "/pull_request",
                    "/pull_request/head",
                    "/repository",
                ],
            )
            .map_err(err)?;
            Ok(Event::ReviewComment {
                repo: p.repository.full_name,
                number: p.pull_request.number,
                comment_id: p.comment.id,
                head_branch: p.pull_request.head.name,
                review_id: p.comment.pull_request_review_id,
                author_is_bot: p.comment.user.kind == "Bot",
                author: p.comment.user.login,
                body: p.comment.body.unwrap_or_default(),
            })
        }
        "pull_request"
            if matches!(
                action.as_str(),
                "opened" | "reopened" | "ready_for_review" | "synchronize" | "closed"
            ) =>
        {
            #[derive(Deserialize)]
            struct Pull {
                number: u64,
                head: PullRequestRef,
                #[serde(default)]
                merged: Option<bool>,
                user: User,
            }
            #[derive(Deserialize)]
            struct P {
                pull_request: Pull,
                repository: Repository,
            }
            let p: P = read(
                &value,
                &[
                    "/pull_request",
                    "/pull_request/head",
                    "/pull_request/user",
                    "/repository",
                ],
            )
            .map_err(err)?;
            Ok(Event::PullRequest {
                repo: p.repository.full_name,
                number: p.pull_request.number,
                head_branch: p.pull_request.head.name,
                action,
                merged: p.pull_request.merged.unwrap_or(false),
                author: p.pull_request.user.login,
            })
        }
        "check_run" if action == "rerequested" => {
            #[derive(Deserialize)]
            struct Run {
                name: String,
            }
            #[derive(Deserialize)]
            struct P {
                check_run: Run,
                repository: Repository,
                sender: User,
            }
            let p: P = read(&value, &["/check_run", "/repository", "/sender"]).map_err(err)?;
            Ok(Event::CheckRerun {
                repo: p.repository.full_name,
                name: p.check_run.name,
                author: p.sender.login,
            })
        }
        "check_run" if action == "completed" => {
            #[derive(Deserialize)]
            struct Suite {
                head_branch: Option<String>,
            }
            #[derive(Deserialize)]
            struct App {
                slug: Option<String>,
            }
            #[derive(Deserialize)]
            struct Run {
                id: u64,
                name: String,
                head_sha: String,
                conclusion: Option<String>,
                details_url: Option<String>,
                html_url: Option<String>,
                check_suite: Suite,
                app: Option<App>,
            }
            #[derive(Deserialize)]
            struct P {
                check_run: Run,
                repository: Repository,
            }
            let p: P = read(
                &value,
                &["/check_run", "/check_run/check_suite", "/repository"],
            )
            .map_err(err)?;
            let r = p.check_run;
            Ok(Event::ChecksCompleted {
                repo: p.repository.full_name,
                branches: r.check_suite.head_branch.into_iter().collect(),
                sha: r.head_sha,
                source: CheckSource::Run {
                    id: r.id,
                    name: r.name,
                    conclusion: r.conclusion.unwrap_or_default(),
                    details_url: r.details_url.filter(|u| !u.is_empty()).or(r.html_url),
                    actions: r.app.and_then(|a| a.slug).as_deref() == Some("github-actions"),
                },
            })
        }
        "check_suite" if action == "completed" => {
            #[derive(Deserialize)]
            struct Suite {
                id: u64,
                head_branch: Option<String>,
                head_sha: String,
                conclusion: Option<String>,
            }
            #[derive(Deserialize)]
            struct P {
                check_suite: Suite,
                repository: Repository,
            }
            let p: P = read(&value, &["/check_suite", "/repository"]).map_err(err)?;
            let s = p.check_suite;
            Ok(Event::ChecksCompleted {
                repo: p.repository.full_name,
                branches: s.head_branch.into_iter().collect(),
                sha: s.head_sha,
                source: CheckSource::Suite {
                    id: s.id,
                    conclusion: s.conclusion.unwrap_or_default(),
                },
            })
        }
        "workflow_run" if action == "completed" => {
            #[derive(Deserialize)]
            struct Run {
                id: u64,
                name: Option<String>,
                head_branch: Option<String>,
                head_sha: String,
                conclusion: Option<String>,
            }
            #[derive(Deserialize)]
            struct P {
                workflow_run: Run,
                repository: Repository,
            }
            let p: P = read(&value, &["/workflow_run", "/repository"]).map_err(err)?;
            let r = p.workflow_run;
            Ok(Event::ChecksCompleted {
                repo: p.repository.full_name,
                branches: r.head_branch.into_iter().collect(),
                sha: r.head_sha,
                source: CheckSource::Workflow {
                    id: r.id,
                    name: r.name.unwrap_or_default(),
                    conclusion: r.conclusion.unwrap_or_default(),
                },
            })
        }
        "status" => {
            #[derive(Deserialize)]
            struct Branch {
                name: String,
            }
            #[derive(Deserialize)]
            struct P {
                sha: String,
                context: String,
                state: String,
                target_url: Option<String>,
                #[serde(default)]
                branches: Vec<Branch>,
                repository: Repository,
            }
            let p: P = read(&value, &["/repository"]).map_err(err)?;
            Ok(Event::ChecksCompleted {
                repo: p.repository.full_name,
                branches: p.branches.into_iter().map(|b| b.name).collect(),
                sha: p.sha,
                source: CheckSource::Status {
                    context: p.context,
                    state: p.state,
                    target_url: p.target_url,
                },
            })
        }
        other => Ok(Event::Ignored {
            event: if action.is_empty() {
                other.to_string()
            } else {
                format!("{other}.{action}")
            },
        }),
    }
}

/// What a comment asks of the swarm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Retry(String),
    Stop(String),
    Status,
    /// `@swarm <request>` on a pull request: a green run with the comment as context.
    Request(String),
    /// `/swarm something-else`: answered with the list of commands.
    Unknown(String),
}

/// The command in a comment, if any: a line starting with `/swarm`, or a mention of `mention`.
pub fn parse_command(body: &str, mention: &str) -> Option<Command> {
    for line in body.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("/swarm") {
            if !(rest.is_empty() || rest.starts_with(char::is_whitespace)) {
                continue;
            }
            let mut words = rest.split_whitespace();
            return Some(match (words.next(), words.next()) {
                (Some("retry"), Some(key)) => Command::Retry(key.to_string()),
                (Some("stop"), Some(key)) => Command::Stop(key.to_string()),
                (Some("status"), _) => Command::Status,
                _ => Command::Unknown(rest.trim().to_string()),
            });
        }
    }
    // The mention as a word of its own: `@swarm`, not `@swarmbot` or `me@swarm.example`.
    let lower = body.to_ascii_lowercase();
    let m = mention.to_ascii_lowercase();
    if m.is_empty() {
        return None;
    }
    let mut from = 0;
    while let Some(i) = lower[from..].find(&m).map(|i| i + from) {
        let before = lower[..i].chars().next_back();
        let rest = &lower[i + m.len()..];
        let starts = before.is_none_or(|c| c.is_whitespace() || matches!(c, '(' | '>' | '"'));
        let ends = match rest.chars().next() {
            None => true,
            Some('.') => rest[1..].chars().next().is_none_or(char::is_whitespace),
            Some(c) => !(c.is_alphanumeric() || matches!(c, '-' | '_' | '@')),
        };
        if starts && ends {
            return Some(Command::Request(
                body[i + m.len()..]
                    .trim_start_matches([',', ':', '.'])
                    .trim()
                    .to_string(),
            ));
        }
        from = i + m.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_to_fix_are_failing() {
        for (conclusion, failing) in [
            ("failure", true),
            ("timed_out", true),
            ("startup_failure", true),
            ("success", false),
            ("neutral", false),
            ("cancelled", false),
            ("skipped", false),
            ("action_required", false),
            ("stale", false),
        ] {
            assert_eq!(is_failing(conclusion), failing, "{conclusion}");
        }
    }

    /// An `issue_comment` delivery with `action` and `repository`, the fields the engine reads.
    fn comment(action: &str, repository: serde_json::Value) -> Vec<u8> {
        serde_json::json!({"action": action,
            "comment": {"id": 5, "body": "/swarm status", "user": {"login": "ann", "type": "User"}},
            "issue": {"number": 7, "pull_request": {"url": "u"}}, "repository": repository})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn reviews_count_when_submitted_and_review_comments_when_created() {
        let user = serde_json::json!({"login": "ann", "type": "User"});
        let pull = serde_json::json!({"number": 7, "head": {"ref": "swarm/a", "sha": "0123"}});
        let repository = serde_json::json!({"id": 1, "full_name": "acme/webapp"});
        // (event, the action it acts on, another action, the rest of the payload)
        let table = [
            (
                "pull_request_review",
                "submitted",
                "dismissed",
                serde_json::json!({"review": {"id": 6, "body": "b", "user": user, "state": "commented"}}),
            ),
            (
                "pull_request_review_comment",
                "created",
                "edited",
                serde_json::json!({"comment": {"id": 8, "body": "b", "user": user, "pull_request_review_id": 6}}),
            ),
        ];
        for (event, acted, other, rest) in table {
            for (action, ignored) in [(acted, false), (other, true)] {
                let mut v = rest.clone();
                v["action"] = action.into();
                v["pull_request"] = pull.clone();
                v["repository"] = repository.clone();
                let got = parse_event(event, v.to_string().as_bytes()).unwrap();
                assert_eq!(
                    matches!(got, Event::Ignored { .. }),
                    ignored,
                    "{event}.{action}: {got:?}"
                );
            }
        }
    }

    #[test]
    fn checks_count_when_completed_pull_requests_on_their_actions_and_reruns_when_asked() {
        let user = serde_json::json!({"login": "ann", "type": "User"});
        let repository = serde_json::json!({"id": 1, "full_name": "acme/webapp"});
        let run = serde_json::json!({"check_run": {"id": 1, "name": "swarm/a", "head_sha": "0123", "status": "completed",
            "conclusion": "failure", "check_suite": {"head_branch": "swarm/a"}}});
        let suite = serde_json::json!({"check_suite": {"id": 1, "head_branch": "swarm/a", "head_sha": "0123", "conclusion": "failure"}});
        let workflow = serde_json::json!({"workflow_run": {"id": 1, "name": "CI", "head_branch": "swarm/a", "head_sha": "0123", "conclusion": "failure"}});
        let pull = serde_json::json!({"number": 7, "pull_request": {"number": 7, "head": {"ref": "swarm/a"}, "merged": true, "user": user}});
        // (event, action, what it parses to: "checks", "rerun", "pull" or "ignored", payload)
        let table = [
            ("check_run", "completed", "checks", &run),
            ("check_run", "rerequested", "rerun", &run),
            ("check_run", "created", "ignored", &run),
            ("check_run", "requested_action", "ignored", &run),
            ("check_suite", "completed", "checks", &suite),
            ("check_suite", "requested", "ignored", &suite),
            ("check_suite", "rerequested", "ignored", &suite),
            ("workflow_run", "completed", "checks", &workflow),
            ("workflow_run", "requested", "ignored", &workflow),
            ("workflow_run", "in_progress", "ignored", &workflow),
            ("pull_request", "opened", "pull", &pull),
            ("pull_request", "reopened", "pull", &pull),
            ("pull_request", "ready_for_review", "pull", &pull),
            ("pull_request", "synchronize", "pull", &pull),
            ("pull_request", "closed", "pull", &pull),
            ("pull_request", "labeled", "ignored", &pull),
            ("pull_request", "edited", "ignored", &pull),
        ];
        for (event, action, want, rest) in table {
            let mut v = rest.clone();
            v["action"] = action.into();
            v["repository"] = repository.clone();
            v["sender"] = user.clone();
            let got = parse_event(event, v.to_string().as_bytes()).unwrap();
            let kind = match &got {
                Event::ChecksCompleted { branches, sha, .. } => {
                    assert_eq!(
                        (branches.as_slice(), sha.as_str()),
                        (&["swarm/a".to_string()][..], "0123")
                    );
                    "checks"
                }
                Event::CheckRerun { name, author, .. } => {
                    assert_eq!((name.as_str(), author.as_str()), ("swarm/a", "ann"));
                    "rerun"
                }
                Event::PullRequest {
                    number,
                    head_branch,
                    action: a,
                    merged,
                    author,
                    ..
                } => {
                    assert_eq!(
                        (
                            *number,
                            head_branch.as_str(),
                            a.as_str(),
                            *merged,
                            author.as_str()
                        ),
                        (7, "swarm/a", action, true, "ann")
                    );
                    "pull"
                }
                Event::Ignored { .. } => "ignored",
                other => panic!("{event}.{action}: {other:?}"),
            };
            assert_eq!(kind, want, "{event}.{action}: {got:?}");
        }
    }

    #[test]
    fn a_new_comment_is_read_an_edited_one_ignored_and_a_list_for_an_object_refused() {
        let repository = serde_json::json!({"id": 1, "full_name": "acme/webapp"});
        let created = parse_event("issue_comment", &comment("created", repository.clone()));
        assert!(
            matches!(&created, Ok(Event::Comment { repo, number: 7, .. }) if repo == "acme/webapp"),
            "{created:?}"
        );
        let edited = parse_event("issue_comment", &comment("edited", repository));
        assert!(matches!(edited, Ok(Event::Ignored { .. })), "{edited:?}");
        let listed = parse_event(
            "issue_comment",
            &comment("created", serde_json::json!([{"full_name": "acme/webapp"}])),
        )
        .unwrap_err()
        .to_string();
        assert!(
            listed.contains("invalid type: a list at /repository, expected an object"),
            "{listed}"
        );
    }

    #[test]
    fn githubs_published_example_verifies() {
        // From GitHub's "Validating webhook deliveries" documentation.
        let secret = b"It's a Secret to Everybody";
        let body = b"Hello, World!";
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(verify_signature(secret, body, Some(sig)));
        assert_eq!(sign(secret, body), sig);
        assert!(!verify_signature(secret, b"Hello, World?", Some(sig)));
        assert!(!verify_signature(b"another secret", body, Some(sig)));
        assert!(!verify_signature(secret, body, None));
        assert!(!verify_signature(secret, body, Some("sha1=757107ea")));
        assert!(!verify_signature(secret, body, Some("sha256=zz")));
    }

    #[test]
    fn commands() {
        assert_eq!(
            parse_command("/swarm retry login-form", "@swarm"),
            Some(Command::Retry("login-form".into()))
        );
        assert_eq!(
            parse_command("please\n/swarm stop x\n", "@swarm"),
            Some(Command::Stop("x".into()))
        );
        assert_eq!(
            parse_command("/swarm status", "@swarm"),
            Some(Command::Status)
        );
        assert_eq!(
            parse_command("/swarm dance", "@swarm"),
            Some(Command::Unknown("dance".into()))
        );
        assert_eq!(
            parse_command("@Swarm the tests fail on empty input", "@swarm"),
            Some(Command::Request("the tests fail on empty input".into()))
        );
        assert_eq!(parse_command("/swarmy retry x", "@swarm"), None);
        assert_eq!(parse_command("ping @swarmbot about it", "@swarm"), None);
        assert_eq!(parse_command("mail me@swarm.example.com", "@swarm"), None);
        assert_eq!(
            parse_command("@swarm, please add a test", "@swarm"),
            Some(Command::Request("please add a test".into()))
        );
        assert_eq!(parse_command("looks good to me", "@swarm"), None);
    }

    #[test]
    fn a_bot_is_known_by_its_type_and_a_check_run_by_its_links_and_app() {
        let repository = serde_json::json!({"id": 1, "full_name": "acme/webapp"});
        let pull = serde_json::json!({"number": 7, "head": {"ref": "swarm/a"}});
        for kind in ["Bot", "User"] {
            let user = serde_json::json!({"login": "ann", "type": kind});
            let deliveries = [
                (
                    "issue_comment",
                    serde_json::json!({"action": "created", "comment": {"id": 5, "body": "b", "user": user},
                        "issue": {"number": 7}, "repository": repository}),
                ),
                (
                    "pull_request_review",
                    serde_json::json!({"action": "submitted", "review": {"id": 6, "body": "b", "user": user, "state": "COMMENTED"},
                        "pull_request": pull, "repository": repository}),
                ),
                (
                    "pull_request_review_comment",
                    serde_json::json!({"action": "created", "comment": {"id": 8, "body": "b", "user": user},
                        "pull_request": pull, "repository": repository}),
                ),
            ];
            for (event, v) in deliveries {
                let got = parse_event(event, v.to_string().as_bytes()).unwrap();
                let bot = match &got {
                    Event::Comment { author_is_bot, .. }
                    | Event::Review { author_is_bot, .. }
                    | Event::ReviewComment { author_is_bot, .. } => *author_is_bot,
                    other => panic!("{event}: {other:?}"),
                };
                assert_eq!(bot, kind == "Bot", "{event} by a {kind}");
            }
        }

        // (details_url, app, the link the event keeps, whether its log is an Actions job's)
        let cases = [
            (
                Some("https://ci/d"),
                Some("github-actions"),
                Some("https://ci/d"),
                true,
            ),
            (Some(""), Some("circleci"), Some("https://github/h"), false),
            (None, None, Some("https://github/h"), false),
        ];
        for (details, app, want_url, want_actions) in cases {
            let mut run = serde_json::json!({"id": 1, "name": "ci", "head_sha": "0123", "conclusion": "failure",
                "html_url": "https://github/h", "check_suite": {"head_branch": "swarm/a"}});
            if let Some(d) = details {
                run["details_url"] = d.into();
            }
            if let Some(a) = app {
                run["app"] = serde_json::json!({"slug": a});
            }
            let v = serde_json::json!({"action": "completed", "check_run": run, "repository": repository});
            let got = parse_event("check_run", v.to_string().as_bytes()).unwrap();
            let Event::ChecksCompleted {
                source:
                    CheckSource::Run {
                        details_url,
                        actions,
                        ..
                    },
                ..
            } = &got
            else {
                panic!("{got:?}");
            };
            assert_eq!(
                (details_url.as_deref(), *actions),
                (want_url, want_actions),
                "{details:?} {app:?}"
            );
        }
    }

    #[test]
    fn the_mention_counts_after_a_space_or_an_opening_and_after_a_longer_name() {
        for (body, want) in [
            ("thanks, @swarm please retry", Some("please retry")),
            ("(@swarm fix the build)", Some("fix the build)")),
            (">@swarm quoted", Some("quoted")),
            ("\"@swarm said\"", Some("said\"")),
            ("ping @swarmbot, then @swarm go", Some("go")),
            ("ask x@swarm about it", None),
        ] {
            assert_eq!(
                parse_command(body, "@swarm"),
                want.map(|w| Command::Request(w.into())),
                "{body}"
            );
        }
    }
}

//! The GitHub REST API through octocrab: with a personal access token or as a GitHub App (a
//! JWT for an installation token, which octocrab caches and refreshes before it expires).
//! Raw requests, so the rate-limit headers (`Retry-After`, `X-RateLimit-*`) reach the outbox.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use http_body_util::BodyExt;
use octocrab::Octocrab;
use serde_json::{json, Value};

use crate::config::GitHubConfig;

#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    #[error("GitHub asks to wait until {until}: {message}")]
    RateLimited {
        until: DateTime<Utc>,
        message: String,
    },
    #[error("GitHub answered {status} to {what}: {message}")]
    Http {
        what: String,
        status: u16,
        message: String,
    },
    #[error("cannot reach GitHub to {what}")]
    Client {
        what: String,
        #[source]
        source: octocrab::Error,
    },
    #[error("no GitHub credentials: set SWARM_GITHUB_TOKEN (or GITHUB_TOKEN), or app_id with SWARM_GITHUB_APP_KEY")]
    NoCredentials,
    #[error("the GitHub App key in SWARM_GITHUB_APP_KEY is not an RSA private key in PEM form")]
    BadAppKey,
}

struct Response {
    status: u16,
    headers: http::HeaderMap,
    body: Value,
}

enum Auth {
    Token(Octocrab),
    App {
        app: Octocrab,
        installation: Option<u64>,
        clients: Mutex<HashMap<String, Octocrab>>,
    },
    None,
}

/// A GitHub client for the configured repositories.
pub struct GitHub {
    auth: Auth,
    api_url: String,
    permissions: Mutex<HashMap<(String, String), (String, Instant)>>,
}

const PERMISSION_TTL: Duration = Duration::from_secs(300);
/// Pages of 100 comments read when looking for a task's comment: a loop guard, far above what a
/// pull request holds.
const MAX_COMMENT_PAGES: u32 = 100;

impl GitHub {
    /// From the config and the engine's credentials: the App (`app_id` and its private key)
    /// when both are there, else the personal access token, else none (reads fail clearly).
    pub fn new(cfg: &GitHubConfig, secrets: &crate::config::Secrets) -> Result<Self, ForgeError> {
        let base = || {
            octocrab::OctocrabBuilder::new()
                .base_uri(cfg.api_url.as_str())
                .map_err(|source| ForgeError::Client {
                    what: "use api_url".into(),
                    source,
                })
        };
        let auth = if let (Some(app_id), Some(key)) = (cfg.app_id, &secrets.github_app_key) {
            let key = jsonwebtoken::EncodingKey::from_rsa_pem(key.expose().as_bytes())
                .map_err(|_| ForgeError::BadAppKey)?;
            let app = base()?
                .app(octocrab::models::AppId(app_id), key)
                .build()
                .map_err(|source| ForgeError::Client {
                    what: "build the App client".into(),
                    source,
                })?;
            Auth::App {
                app,
                installation: cfg.installation_id,
                clients: Mutex::default(),
            }
        } else if let Some(token) = &secrets.github_token {
            Auth::Token(
                base()?
                    .personal_token(token.expose().to_string())
                    .build()
                    .map_err(|source| ForgeError::Client {
                        what: "build the client".into(),
                        source,
                    })?,
            )
        } else {
            Auth::None
        };
        Ok(Self {
            auth,
            api_url: cfg.api_url.to_string(),
            permissions: Mutex::default(),
        })
    }

    /// The client for `repo`: the token client, or the App's installation client.
    async fn client(&self, repo: &str) -> Result<Octocrab, ForgeError> {
        match &self.auth {
            Auth::Token(c) => Ok(c.clone()),
            Auth::None => Err(ForgeError::NoCredentials),
            Auth::App {
                app,
                installation,
                clients,
            } => {
                if let Some(c) = clients.lock().unwrap_or_else(|p| p.into_inner()).get(repo) {
                    return Ok(c.clone());
                }
                let id = self.installation_id(app, *installation, repo).await?;
                let c = app
                    .installation(octocrab::models::InstallationId(id))
                    .map_err(|source| ForgeError::Client {
                        what: "use the App's installation".into(),
                        source,
                    })?;
                clients
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(repo.to_string(), c.clone());
                Ok(c)
            }
        }
    }

    /// The App's installation on `repo`: the configured one, else GitHub's answer.
    async fn installation_id(
        &self,
        app: &Octocrab,
        installation: Option<u64>,
        repo: &str,
    ) -> Result<u64, ForgeError> {
        if let Some(id) = installation {
            return Ok(id);
        }
        let r = self
            .send(
                app,
                http::Method::GET,
                &format!("/repos/{repo}/installation"),
                None,
            )
            .await?;
        expect_ok(&r, "find the App's installation")?;
        r.body["id"].as_u64().ok_or_else(|| ForgeError::Http {
            what: "find the App's installation".into(),
            status: r.status,
            message: "no id".into(),
        })
    }

    /// Whether the engine authenticates as a GitHub App (and so can mint tokens per job).
    pub fn is_app(&self) -> bool {
        matches!(self.auth, Auth::App { .. })
    }

    /// A new installation token for `repo` alone, with `contents: write` and nothing else (what
    /// a clone and a push need), and when it expires (GitHub: an hour). `None` without App
    /// auth: a personal access token cannot be narrowed.
    pub async fn mint_repo_token(
        &self,
        repo: &str,
    ) -> Result<Option<(crate::config::Secret, DateTime<Utc>)>, ForgeError> {
        let Auth::App {
            app, installation, ..
        } = &self.auth
        else {
            return Ok(None);
        };
        let id = self.installation_id(app, *installation, repo).await?;
        let name = repo.rsplit('/').next().unwrap_or(repo);
        let body = json!({
            "repositories": [name],
            "permissions": { "contents": "write" },
        });
        let what = "mint an installation token for a job";
        let r = self
            .send(
                app,
                http::Method::POST,
                &format!("/app/installations/{id}/access_tokens"),
                Some(&body),
            )
            .await?;
        if r.status != 201 {
            return Err(http_error(&r, what));
        }
        let token = r.body["token"]
            .as_str()
            .and_then(|t| crate::config::Secret::new(t.to_string()))
            .ok_or_else(|| ForgeError::Http {
                what: what.into(),
                status: r.status,
                message: "no token in the answer".into(),
            })?;
        let expires = r.body["expires_at"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map_or_else(
                || Utc::now() + chrono::Duration::minutes(55),
                |t| t.with_timezone(&Utc),
            );
        Ok(Some((token, expires)))
    }

    /// Revokes an installation token (`DELETE /installation/token`, authenticated by the token
    /// itself), so a job's token does not outlive its run.
    pub async fn revoke_token(&self, token: &crate::config::Secret) -> Result<(), ForgeError> {
        let client = octocrab::OctocrabBuilder::new()
            .base_uri(self.api_url.as_str())
            .and_then(|b| b.personal_token(token.expose().to_string()).build())
            .map_err(|source| ForgeError::Client {
                what: "build a client for the job's token".into(),
                source,
            })?;
        let r = self
            .send(&client, http::Method::DELETE, "/installation/token", None)
            .await?;
        match r.status {
            204 | 401 => Ok(()),
            _ => Err(http_error(&r, "revoke a job's installation token")),
        }
    }

    async fn send(
        &self,
        client: &Octocrab,
        method: http::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Response, ForgeError> {
        let what = format!("{method} {}", path.split('?').next().unwrap_or(path));
        let client_err = |source| ForgeError::Client {
            what: what.clone(),
            source,
        };
        let res = match method {
            http::Method::GET => client._get(path).await,
            http::Method::POST => client._post(path, body).await,
            http::Method::PATCH => client._patch(path, body).await,
            _ => client._delete(path, body).await,
        }
        .map_err(client_err)?;
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = res
            .into_body()
            .collect()
            .await
            .map_err(|e| ForgeError::Client {
                what: what.clone(),
                source: e,
            })?
            .to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let r = Response {
            status,
            headers,
            body,
        };
        if let Some(until) = rate_limited(&r) {
            return Err(ForgeError::RateLimited {
                until,
                message: message(&r),
            });
        }
        Ok(r)
    }

    /// Who the credentials are, by one authenticated request: `GET /user` for a token (the
    /// login), `GET /app` with the App's JWT (the App's slug). A 401 or 403 is an error.
    pub async fn whoami(&self) -> Result<String, ForgeError> {
        let (client, path, field) = match &self.auth {
            Auth::Token(c) => (c, "/user", "login"),
            Auth::App { app, .. } => (app, "/app", "slug"),
            Auth::None => return Err(ForgeError::NoCredentials),
        };
        let what = format!("GET {path}");
        let r = self.send(client, http::Method::GET, path, None).await?;
        expect_ok(&r, &what)?;
        let name = r.body[field].as_str().unwrap_or_default().to_string();
        Ok(match &self.auth {
            Auth::App { .. } => format!("the GitHub App {name}"),
            _ => name,
        })
    }

    async fn call(
        &self,
        repo: &str,
        method: http::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Response, ForgeError> {
        let client = self.client(repo).await?;
        self.send(&client, method, path, body).await
    }

    /// [`Self::call`], refused unless GitHub answered with a success.
    async fn checked(
        &self,
        repo: &str,
        method: http::Method,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Response, ForgeError> {
        let r = self.call(repo, method, path, body).await?;
        expect_ok(&r, what)?;
        Ok(r)
    }

    /// The permission of `user` on `repo` (`admin`, `write`, `read` or `none`), cached.
    pub async fn permission(&self, repo: &str, user: &str) -> Result<String, ForgeError> {
        let key = (repo.to_string(), user.to_string());
        if let Some((p, at)) = self
            .permissions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            if at.elapsed() < PERMISSION_TTL {
                return Ok(p.clone());
            }
        }
        let r = self
            .call(
                repo,
                http::Method::GET,
                &format!("/repos/{repo}/collaborators/{user}/permission"),
                None,
            )
            .await?;
        let permission = match r.status {
            200 => r.body["permission"].as_str().unwrap_or("none").to_string(),
            404 => "none".to_string(),
            _ => return Err(http_error(&r, "check a collaborator's permission")),
        };
        self.permissions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (permission.clone(), Instant::now()));
        Ok(permission)
    }

    /// The open pull request whose head is `branch`, if any.
    pub async fn pull_for_branch(
        &self,
        repo: &str,
        branch: &str,
    ) -> Result<Option<u64>, ForgeError> {
        let owner = repo.split('/').next().unwrap_or("");
        let r = self
            .checked(
                repo,
                http::Method::GET,
                &format!("/repos/{repo}/pulls?head={owner}:{branch}&state=open&per_page=1"),
                None,
                "find a pull request",
            )
            .await?;
        Ok(r.body
            .as_array()
            .and_then(|a| a.first())
            .and_then(|p| p["number"].as_u64()))
    }

    /// Whether any pull request, open or closed, has `branch` as its head.
    pub async fn any_pull_for_branch(&self, repo: &str, branch: &str) -> Result<bool, ForgeError> {
        let owner = repo.split('/').next().unwrap_or("");
        let r = self
            .checked(
                repo,
                http::Method::GET,
                &format!("/repos/{repo}/pulls?head={owner}:{branch}&state=all&per_page=1"),
                None,
                "find a pull request",
            )
            .await?;
        Ok(r.body.as_array().is_some_and(|a| !a.is_empty()))
    }

    /// The head branch of pull request `number`.
    pub async fn pull_head(&self, repo: &str, number: u64) -> Result<String, ForgeError> {
        let r = self
            .checked(
                repo,
                http::Method::GET,
                &format!("/repos/{repo}/pulls/{number}"),
                None,
                "read a pull request",
            )
            .await?;
        Ok(r.body["head"]["ref"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// The comment on issue or pull request `number` that holds `marker`, if any. Reads the
    /// comments page by page, following the `Link` header's `rel="next"` as GitHub asks
    /// (<https://docs.github.com/en/rest/using-the-rest-api/using-pagination-in-the-rest-api>).
    pub async fn find_comment(
        &self,
        repo: &str,
        number: u64,
        marker: &str,
    ) -> Result<Option<u64>, ForgeError> {
        let mut next = Some(format!(
            "/repos/{repo}/issues/{number}/comments?per_page=100"
        ));
        let mut pages = 0;
        while let Some(path) = next.take() {
            pages += 1;
            let r = self.call(repo, http::Method::GET, &path, None).await?;
            expect_ok(&r, "list comments")?;
            let Some(comments) = r.body.as_array() else {
                return Ok(None);
            };
            if let Some(c) = comments
                .iter()
                .find(|c| c["body"].as_str().is_some_and(|b| b.contains(marker)))
            {
                return Ok(c["id"].as_u64());
            }
            next = link(&r.headers, "next");
            if pages >= MAX_COMMENT_PAGES && next.is_some() {
                tracing::warn!(%repo, number, "more than {MAX_COMMENT_PAGES} pages of comments; the status comment is looked for in the first ones only");
                break;
            }
        }
        Ok(None)
    }

    pub async fn create_comment(
        &self,
        repo: &str,
        number: u64,
        body: &str,
    ) -> Result<u64, ForgeError> {
        let r = self
            .checked(
                repo,
                http::Method::POST,
                &format!("/repos/{repo}/issues/{number}/comments"),
                Some(&json!({"body": body})),
                "create a comment",
            )
            .await?;
        r.body["id"]
            .as_u64()
            .ok_or_else(|| http_error(&r, "create a comment"))
    }

    /// Edits a comment; false when it no longer exists.
    pub async fn update_comment(
        &self,
        repo: &str,
        id: u64,
        body: &str,
    ) -> Result<bool, ForgeError> {
        let r = self
            .call(
                repo,
                http::Method::PATCH,
                &format!("/repos/{repo}/issues/comments/{id}"),
                Some(&json!({"body": body})),
            )
            .await?;
        if r.status == 404 {
            return Ok(false);
        }
        expect_ok(&r, "edit a comment")?;
        Ok(true)
    }

    /// The commit at the head of `branch`, if the branch exists.
    pub async fn branch_head(
        &self,
        repo: &str,
        branch: &str,
    ) -> Result<Option<String>, ForgeError> {
        let r = self
            .call(
                repo,
                http::Method::GET,
                &format!("/repos/{repo}/branches/{branch}"),
                None,
            )
            .await?;
        if r.status == 404 {
            return Ok(None);
        }
        expect_ok(&r, "read a branch")?;
        Ok(r.body["commit"]["sha"].as_str().map(str::to_string))
    }

    pub async fn create_status(
        &self,
        repo: &str,
        sha: &str,
        status: &Value,
    ) -> Result<(), ForgeError> {
        self.checked(
            repo,
            http::Method::POST,
            &format!("/repos/{repo}/statuses/{sha}"),
            Some(status),
            "set a commit status",
        )
        .await
        .map(|_| ())
    }

    /// The checks a protected branch requires before a merge ("Get a branch": its
    /// `protection.required_status_checks`, readable with `contents: read`, unlike the branch
    /// protection endpoints, which need administration). `None` when the branch is not
    /// protected or requires no checks; an error when the branch does not exist.
    pub async fn required_checks(
        &self,
        repo: &str,
        branch: &str,
    ) -> Result<Option<Vec<String>>, ForgeError> {
        let r = self
            .checked(
                repo,
                http::Method::GET,
                &format!("/repos/{repo}/branches/{branch}"),
                None,
                "read a branch's protection",
            )
            .await?;
        let checks = &r.body["protection"]["required_status_checks"];
        if r.body["protected"] != true || !checks.is_object() {
            return Ok(None);
        }
        let mut names: Vec<String> = checks["checks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["context"].as_str())
            .chain(
                checks["contexts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.as_str()),
            )
            .map(str::to_string)
            .collect();
        names.sort();
        names.dedup();
        Ok((!names.is_empty()).then_some(names))
    }

    /// Every check reported on commit `sha`: its latest check run of each name ("List check
    /// runs for a Git reference", `filter=latest`) and its latest status of each context ("Get
    /// the combined status for a specific reference").
    pub async fn commit_checks(
        &self,
        repo: &str,
        sha: &str,
    ) -> Result<Vec<crate::model::checks::Reported>, ForgeError> {
        use crate::model::checks::{CheckState, Reported};
        let runs = self
            .list(
                repo,
                format!("/repos/{repo}/commits/{sha}/check-runs?filter=latest&per_page=100"),
                Some("check_runs"),
                "list a commit's check runs",
            )
            .await?;
        let mut out: Vec<Reported> = runs
            .iter()
            .map(|c| Reported {
                name: c["name"].as_str().unwrap_or_default().to_string(),
                state: CheckState::of_run(
                    c["status"].as_str().unwrap_or_default(),
                    c["conclusion"].as_str(),
                ),
            })
            .collect();
        let statuses = self
            .list(
                repo,
                format!("/repos/{repo}/commits/{sha}/status?per_page=100"),
                Some("statuses"),
                "read a commit's combined status",
            )
            .await?;
        out.extend(statuses.iter().map(|c| Reported {
            name: c["context"].as_str().unwrap_or_default().to_string(),
            state: CheckState::of_status(c["state"].as_str().unwrap_or_default()),
        }));
        Ok(out)
    }

    /// The id of the latest check run named `name` on commit `sha` ("List check runs for a
    /// Git reference", `check_name`), if there is one.
    pub async fn find_check_run(
        &self,
        repo: &str,
        sha: &str,
        name: &str,
    ) -> Result<Option<u64>, ForgeError> {
        let r = self
            .call(
                repo,
                http::Method::GET,
                &format!(
                    "/repos/{repo}/commits/{sha}/check-runs?check_name={}&filter=latest&per_page=1",
                    form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>()
                ),
                None,
            )
            .await?;
        if r.status == 404 || r.status == 422 {
            return Ok(None);
        }
        expect_ok(&r, "find a check run")?;
        Ok(r.body["check_runs"][0]["id"].as_u64())
    }

    /// Adds reaction `content` to comment `id`: an issue comment, or (`on_diff`) a review
    /// comment ("Create reaction for an issue comment" / "... for a pull request review
    /// comment"; 200 when it was there already).
    pub async fn react(
        &self,
        repo: &str,
        id: u64,
        on_diff: bool,
        content: &str,
    ) -> Result<(), ForgeError> {
        let kind = if on_diff { "pulls" } else { "issues" };
        self.checked(
            repo,
            http::Method::POST,
            &format!("/repos/{repo}/{kind}/comments/{id}/reactions"),
            Some(&serde_json::json!({ "content": content })),
            "react to a comment",
        )
        .await
        .map(|_| ())
    }

    /// Creates a check run ("Create a check run"); returns its id.
    pub async fn create_check_run(&self, repo: &str, run: &Value) -> Result<u64, ForgeError> {
        let r = self
            .checked(
                repo,
                http::Method::POST,
                &format!("/repos/{repo}/check-runs"),
                Some(run),
                "create a check run",
            )
            .await?;
        Ok(r.body["id"].as_u64().unwrap_or_default())
    }

    /// Updates check run `id` ("Update a check run"); false when it is gone.
    pub async fn update_check_run(
        &self,
        repo: &str,
        id: u64,
        run: &Value,
    ) -> Result<bool, ForgeError> {
        let r = self
            .call(
                repo,
                http::Method::PATCH,
                &format!("/repos/{repo}/check-runs/{id}"),
                Some(run),
            )
            .await?;
        if r.status == 404 {
            return Ok(false);
        }
        expect_ok(&r, "update a check run")?;
        Ok(true)
    }

    /// A review of pull request `number`: its state (`CHANGES_REQUESTED`, `COMMENTED`,
    /// `APPROVED`, ...), body and author ("Get a review for a pull request").
    pub async fn review(&self, repo: &str, number: u64, id: u64) -> Result<Value, ForgeError> {
        let r = self
            .checked(
                repo,
                http::Method::GET,
                &format!("/repos/{repo}/pulls/{number}/reviews/{id}"),
                None,
                "read a review",
            )
            .await?;
        Ok(r.body)
    }

    /// Every comment of a review, page by page ("List comments for a pull request review").
    pub async fn review_comments(
        &self,
        repo: &str,
        number: u64,
        id: u64,
    ) -> Result<Vec<Value>, ForgeError> {
        self.list(
            repo,
            format!("/repos/{repo}/pulls/{number}/reviews/{id}/comments?per_page=100"),
            None,
            "list a review's comments",
        )
        .await
    }

    /// The check runs of a check suite ("List check runs in a check suite").
    pub async fn suite_check_runs(&self, repo: &str, suite: u64) -> Result<Vec<Value>, ForgeError> {
        self.list(
            repo,
            format!("/repos/{repo}/check-suites/{suite}/check-runs?per_page=100"),
            Some("check_runs"),
            "list a check suite's runs",
        )
        .await
    }

    /// The jobs of a workflow run's latest attempt ("List jobs for a workflow run").
    pub async fn run_jobs(&self, repo: &str, run: u64) -> Result<Vec<Value>, ForgeError> {
        self.list(
            repo,
            format!("/repos/{repo}/actions/runs/{run}/jobs?per_page=100"),
            Some("jobs"),
            "list a workflow run's jobs",
        )
        .await
    }

    /// The last `max` bytes of a GitHub Actions job's log, from the line after the cut on
    /// ("Download job logs for a workflow run": a 302 to a short-lived URL, which is fetched
    /// without the GitHub credentials, as such URLs are signed themselves). `None` when GitHub
    /// has no log for it (gone, or not an Actions job).
    pub async fn job_log_tail(
        &self,
        repo: &str,
        job: u64,
        max: usize,
    ) -> Result<Option<String>, ForgeError> {
        let what = "download a job's log";
        let r = self
            .call(
                repo,
                http::Method::GET,
                &format!("/repos/{repo}/actions/jobs/{job}/logs"),
                None,
            )
            .await?;
        if matches!(r.status, 404 | 410) {
            return Ok(None);
        }
        if r.status != 302 {
            return Err(http_error(&r, what));
        }
        let Some(location) = r
            .headers
            .get(http::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(str::to_string)
        else {
            return Err(ForgeError::Http {
                what: what.into(),
                status: r.status,
                message: "no Location".into(),
            });
        };
        let (tail, cut) =
            tokio::task::spawn_blocking(move || -> Result<(Vec<u8>, bool), String> {
                use std::io::Read;
                let mut res = ureq::get(&location).call().map_err(|e| e.to_string())?;
                let mut reader = res.body_mut().with_config().limit(u64::MAX).reader();
                // Only the end is kept: twice the excerpt at most in memory, however long the log.
                let mut tail: Vec<u8> = Vec::with_capacity(2 * max);
                let mut buf = [0u8; 16 * 1024];
                let mut total = 0usize;
                loop {
                    let n = reader.read(&mut buf).map_err(|e| e.to_string())?;
                    if n == 0 {
                        break;
                    }
                    total += n;
                    tail.extend_from_slice(&buf[..n]);
                    if tail.len() > 2 * max {
                        tail.drain(..tail.len() - max);
                    }
                }
                if tail.len() > max {
                    tail.drain(..tail.len() - max);
                }
                Ok((tail, total > max))
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r)
            .map_err(|message| ForgeError::Http {
                what: what.into(),
                status: 0,
                message,
            })?;
        Ok(Some(log_excerpt(&tail, cut)))
    }

    /// The items of a list endpoint, following `Link: rel="next"`; `field` names the array in
    /// an object answer (`{"total_count": n, "jobs": [...]}`).
    async fn list(
        &self,
        repo: &str,
        first: String,
        field: Option<&str>,
        what: &str,
    ) -> Result<Vec<Value>, ForgeError> {
        let mut out = Vec::new();
        let mut next = Some(first);
        let mut pages = 0;
        while let Some(path) = next.take() {
            pages += 1;
            let r = self.call(repo, http::Method::GET, &path, None).await?;
            expect_ok(&r, what)?;
            let items = match field {
                Some(f) => r.body[f].as_array(),
                None => r.body.as_array(),
            };
            out.extend(items.into_iter().flatten().cloned());
            next = link(&r.headers, "next");
            if pages >= MAX_COMMENT_PAGES {
                break;
            }
        }
        Ok(out)
    }

    pub async fn create_pull(&self, repo: &str, pull: &Value) -> Result<u64, ForgeError> {
        let r = self
            .checked(
                repo,
                http::Method::POST,
                &format!("/repos/{repo}/pulls"),
                Some(pull),
                "open a pull request",
            )
            .await?;
        r.body["number"]
            .as_u64()
            .ok_or_else(|| http_error(&r, "open a pull request"))
    }
}

/// The end of a log (`tail`; `cut` when its beginning was left out): from its first whole
/// line, as text (invalid UTF-8 replaced), with a note that the beginning was cut.
pub fn log_excerpt(tail: &[u8], cut: bool) -> String {
    let mut tail = tail;
    if cut {
        if let Some(i) = tail.iter().position(|b| *b == b'\n') {
            tail = &tail[i + 1..];
        }
    }
    let text = String::from_utf8_lossy(tail);
    if cut {
        format!("[... the beginning of the log is cut]\n{text}")
    } else {
        text.into_owned()
    }
}

/// GitHub's message, with what each error of a 422 says (`errors[].message`, or its field and
/// code): "Validation Failed" alone does not say what failed.
fn message(r: &Response) -> String {
    let mut text = r.body["message"].as_str().unwrap_or("").to_string();
    let details: Vec<String> = r.body["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| match e["message"].as_str() {
            Some(m) => m.to_string(),
            None => [&e["resource"], &e["field"], &e["code"]]
                .iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        })
        .filter(|d| !d.is_empty())
        .collect();
    if !details.is_empty() {
        text = format!("{text}: {}", details.join("; "));
    }
    text
}

/// The URL of the `rel` link in a `Link` header (`<URL>; rel="next", <URL>; rel="last"`).
fn link(headers: &http::HeaderMap, rel: &str) -> Option<String> {
    let want = format!("rel=\"{rel}\"");
    headers
        .get_all(http::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find(|l| l.split(';').skip(1).any(|p| p.trim() == want))
        .and_then(|l| l.split(';').next())
        .map(|u| {
            u.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
}

fn http_error(r: &Response, what: &str) -> ForgeError {
    ForgeError::Http {
        what: what.to_string(),
        status: r.status,
        message: message(r),
    }
}

fn expect_ok(r: &Response, what: &str) -> Result<(), ForgeError> {
    if (200..300).contains(&r.status) {
        Ok(())
    } else {
        Err(http_error(r, what))
    }
}

/// When a response says to stop writing: `Retry-After` (secondary limits), or an exhausted
/// primary limit (`X-RateLimit-Remaining: 0` until `X-RateLimit-Reset`).
fn rate_limited(r: &Response) -> Option<DateTime<Utc>> {
    if !matches!(r.status, 403 | 429) {
        return None;
    }
    let header = |name: &str| {
        r.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    if let Some(secs) = header("retry-after").and_then(|v| v.trim().parse::<i64>().ok()) {
        return Some(Utc::now() + chrono::Duration::seconds(secs.clamp(0, 3600)));
    }
    if header("x-ratelimit-remaining").as_deref() == Some("0") {
        if let Some(reset) = header("x-ratelimit-reset").and_then(|v| v.parse::<i64>().ok()) {
            return Utc.timestamp_opt(reset, 0).single();
        }
    }
    message(r)
        .to_ascii_lowercase()
        .contains("rate limit")
        .then(|| Utc::now() + chrono::Duration::seconds(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, body: Value, link: Option<&str>) -> Response {
        let mut headers = http::HeaderMap::new();
        if let Some(l) = link {
            headers.insert(http::header::LINK, l.parse().unwrap());
        }
        Response {
            status,
            headers,
            body,
        }
    }

    #[test]
    fn the_next_page_is_read_from_the_link_header() {
        let r = response(
            200,
            json!([]),
            Some(
                r#"<https://api.github.com/repositories/1/issues/7/comments?per_page=100&page=1>; rel="prev", <https://api.github.com/repositories/1/issues/7/comments?per_page=100&page=3>; rel="next", <https://api.github.com/repositories/1/issues/7/comments?per_page=100&page=5>; rel="last""#,
            ),
        );
        assert_eq!(
            link(&r.headers, "next").as_deref(),
            Some("https://api.github.com/repositories/1/issues/7/comments?per_page=100&page=3")
        );
        assert_eq!(
            link(&r.headers, "last").as_deref(),
            Some("https://api.github.com/repositories/1/issues/7/comments?per_page=100&page=5")
        );
        assert_eq!(link(&r.headers, "first"), None);
        assert_eq!(link(&response(200, json!([]), None).headers, "next"), None);
    }

    #[test]
    fn a_log_excerpt_starts_at_a_whole_line() {
        assert_eq!(log_excerpt(b"one\ntwo\n", false), "one\ntwo\n");
        assert_eq!(
            log_excerpt(b"ne\ntwo\n", true),
            "[... the beginning of the log is cut]\ntwo\n"
        );
    }

    #[test]
    fn a_validation_failure_says_what_failed() {
        let r = response(
            422,
            json!({"message": "Validation Failed", "errors": [{"resource": "PullRequest", "code": "custom", "message": "A pull request already exists for acme:swarm/a."}]}),
            None,
        );
        assert_eq!(
            message(&r),
            "Validation Failed: A pull request already exists for acme:swarm/a."
        );
        let r = response(
            422,
            json!({"message": "Validation Failed", "errors": [{"resource": "IssueComment", "field": "body", "code": "missing_field"}]}),
            None,
        );
        assert_eq!(
            message(&r),
            "Validation Failed: IssueComment body missing_field"
        );
        let r = response(401, json!({"message": "Bad credentials"}), None);
        assert_eq!(message(&r), "Bad credentials");
    }
}

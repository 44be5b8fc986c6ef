//! GitHub with the real octocrab client against an HTTP-level fake GitHub, and the real webhook
//! endpoint of a running `swarm up` over real HTTP: signatures, redeliveries, pushes, comment
//! commands by writers and readers, one status comment edited in place (also across a restart),
//! commit statuses, a secondary rate limit, and App token refresh.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use coding_swarm::forge::webhook::sign;
use coding_swarm::store::Store;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::ghapi::GitHubServer;
use crate::githttp::GitHttpServer;
use crate::payloads::{example, in_repo, on_pull_request, set, user};
use crate::support::TestRepo;

pub(crate) const SECRET: &str = "webhook-secret-for-the-tests";
pub(crate) const GIT_TOKEN: &str = "ghs_git-token-for-the-tests-0123456789";

struct Running {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_config(dir: &Path, port: u16, github: &str, repo_url: &str, script: &str) {
    write_config_on(dir, None, port, github, repo_url, script)
}

/// The config of a `swarm up` with one project on GitHub (`acme/webapp`), on `database_url`
/// (by default SQLite in `d/`), the agent `sh -c SCRIPT`, polling hourly.
pub(crate) fn write_config_on(
    dir: &Path,
    database_url: Option<&str>,
    port: u16,
    github: &str,
    repo_url: &str,
    script: &str,
) {
    let database = database_url
        .map(|u| format!("database_url = {u:?}"))
        .unwrap_or_default();
    std::fs::write(
        dir.join("swarm.toml"),
        format!(
            r#"
data_dir = "d"
{database}
default_agent = "sh"
# Some agents here keep a ledger in the test's directory, which the sandbox would hide.
sandbox = "none"
poll_interval = "1h"
retry_backoff = "200ms"
[http]
listen = "127.0.0.1:{port}"
public_url = "https://swarm.example.test"
[github]
api_url = "{github}"
min_write_interval = "20ms"
[agents.sh]
command = ["sh", "-c", {script:?}]
[[projects]]
name = "webapp"
repo = "{repo_url}"
github = "acme/webapp"
"#
        ),
    )
    .unwrap();
}

fn start(dir: &Path) -> Child {
    start_up(dir, false)
}

/// `swarm up [--once]` in `dir` with GitHub's credentials, its output appended to `engine.log`.
pub(crate) fn start_up(dir: &Path, once: bool) -> Child {
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(dir.join("engine.log"))
        .unwrap();
    let mut cmd = crate::support::command(env!("CARGO_BIN_EXE_swarm"));
    cmd.args(["up", "--config", "swarm.toml"]);
    if once {
        cmd.arg("--once");
    }
    cmd.current_dir(dir)
        .env("SWARM_GITHUB_WEBHOOK_SECRET", SECRET)
        .env("SWARM_GITHUB_TOKEN", crate::ghapi::TOKEN)
        .env("SWARM_GIT_TOKEN", GIT_TOKEN)
        .env("RUST_LOG", "info")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

async fn engine(github: &GitHubServer, git: &GitHttpServer, script: &str) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    write_config(
        dir.path(),
        port,
        &github.url,
        &format!("{}/remote.git", git.base),
        script,
    );
    let child = start(dir.path());
    let r = Running { child, port, dir };
    wait(
        "the engine's HTTP server",
        Duration::from_secs(30),
        || async { get(r.port, "/healthz").await.is_some() },
    )
    .await;
    r
}

async fn store(r: &Running) -> Store {
    Store::connect(&format!(
        "sqlite://{}?mode=rwc",
        r.dir.path().join("d/swarm.db").display()
    ))
    .await
    .unwrap()
}

async fn wait<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn http(port: u16, request: String) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(request.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((
        code,
        text.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    ))
}

pub(crate) async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    http(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// Delivers `body` as `event` to the engine on `port`, signed, and waits until it has
/// processed it.
pub(crate) async fn deliver_processed(
    port: u16,
    s: &Store,
    event: &str,
    id: &str,
    body: &serde_json::Value,
) {
    let (code, text) = deliver(port, event, id, body, signed(body)).await;
    assert_eq!(code, 202, "{text}");
    crate::support::wait_for(
        &format!("delivery {id} processed"),
        Duration::from_secs(30),
        async || {
            s.delivery(id)
                .await
                .unwrap()
                .is_some_and(|d| d.processed_at.is_some())
        },
    )
    .await;
}

/// Delivers a webhook the way GitHub does: JSON body, event and delivery headers, signature.
pub(crate) async fn deliver(
    port: u16,
    event: &str,
    delivery: &str,
    body: &serde_json::Value,
    signature: Option<String>,
) -> (u16, String) {
    let body = body.to_string();
    let sig = signature
        .map(|s| format!("X-Hub-Signature-256: {s}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "POST /webhooks/github HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nUser-Agent: GitHub-Hookshot/abc\r\nX-GitHub-Event: {event}\r\nX-GitHub-Delivery: {delivery}\r\nX-GitHub-Hook-ID: 1\r\n{sig}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    http(port, req).await.expect("the engine answers")
}

pub(crate) fn signed(body: &serde_json::Value) -> Option<String> {
    Some(sign(SECRET.as_bytes(), body.to_string().as_bytes()))
}

/// A `push` delivery to `repo`'s `main` at `after`: GitHub's example (`@octokit/webhooks-examples`),
/// with only the repository, the ref and the commits changed.
pub(crate) fn push(repo: &str, after: &str) -> serde_json::Value {
    let mut v = in_repo(example("push", None), repo);
    set(&mut v, "/ref", "refs/heads/main".into());
    set(&mut v, "/after", after.into());
    set(&mut v, "/created", false.into());
    set(&mut v, "/repository/default_branch", "main".into());
    v
}

/// An `issue_comment` delivery (action `created`) by `author` (`kind`: `User` or `Bot`) on pull
/// request `number` of acme/webapp: GitHub's example with those fields changed.
pub(crate) fn issue_comment(
    author: &str,
    kind: &str,
    number: u64,
    body: &str,
) -> serde_json::Value {
    let mut v = in_repo(example("issue_comment", Some("created")), "acme/webapp");
    on_pull_request(&mut v, "acme/webapp", number);
    set(&mut v, "/comment/id", 555.into());
    set(&mut v, "/comment/body", body.into());
    user(&mut v, "/comment/user", author, kind);
    user(&mut v, "/sender", author, kind);
    set(&mut v, "/repository/default_branch", "main".into());
    v
}

/// The engine's replies to comment commands on the fake GitHub, oldest first.
pub(crate) fn replies(github: &GitHubServer) -> Vec<String> {
    github
        .hub()
        .comments
        .values()
        .filter(|(_, b)| b.contains("coding-swarm:reply"))
        .map(|(_, b)| b.clone())
        .collect()
}

pub(crate) fn repo_with_task() -> TestRepo {
    let repo = TestRepo::new();
    repo.commit(
        &[(
            ".ai/tasks/feature.yaml",
            Some("addressee: worker-a\nprompt: Build the feature.\n"),
        )],
        "a task",
    );
    repo
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_verified_deduplicated_and_a_push_syncs_at_once() {
    let github = GitHubServer::start().await;
    let repo = TestRepo::new();
    repo.commit(&[("README.md", Some("x\n"))], "init");
    let git = GitHttpServer::start(repo.dir.path().to_path_buf(), GIT_TOKEN).await;
    let r = engine(&github, &git, "echo ok").await;
    let s = store(&r).await;
    wait("the first sync", Duration::from_secs(20), || async {
        s.project("webapp")
            .await
            .unwrap()
            .is_some_and(|p| p.synced_commit.is_some())
    })
    .await;

    // Nothing happens without the right signature, and a refused delivery is not remembered.
    let head = repo.commit(
        &[(".ai/tasks/pushed.yaml", Some("addressee: w\nprompt: p\n"))],
        "a task by push",
    );
    let body = push("acme/webapp", &head.to_string());
    assert_eq!(deliver(r.port, "push", "d-1", &body, None).await.0, 401);
    assert_eq!(
        deliver(
            r.port,
            "push",
            "d-1",
            &body,
            Some(sign(b"wrong secret", body.to_string().as_bytes()))
        )
        .await
        .0,
        401
    );
    let mut forged = body.clone();
    forged["ref"] = json!("refs/heads/other");
    assert_eq!(
        deliver(r.port, "push", "d-1", &forged, signed(&body))
            .await
            .0,
        401,
        "a signature of another body"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        s.task("webapp", "pushed").await.unwrap().is_none(),
        "no sync from a refused delivery (polling is hourly)"
    );

    // A signed push syncs at once.
    let sent = Instant::now();
    let (code, _) = deliver(r.port, "push", "d-1", &body, signed(&body)).await;
    assert_eq!(code, 202);
    wait("the pushed task", Duration::from_secs(5), || async {
        s.task("webapp", "pushed").await.unwrap().is_some()
    })
    .await;
    let took = sent.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "the push synced after {took:?}"
    );

    // A redelivery is processed once.
    let (code, text) = deliver(r.port, "push", "d-1", &body, signed(&body)).await;
    assert_eq!((code, text.contains("duplicate")), (200, true), "{text}");
    // Other repositories and events are acknowledged and ignored.
    let other = push("someone/else", &head.to_string());
    assert_eq!(
        deliver(r.port, "push", "d-2", &other, signed(&other))
            .await
            .0,
        202
    );
    let ping = in_repo(example("ping", None), "acme/webapp");
    assert_eq!(
        deliver(r.port, "ping", "d-3", &ping, signed(&ping)).await.0,
        202
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comment_commands_need_write_access() {
    let github = GitHubServer::start().await;
    {
        let mut hub = github.hub();
        hub.permissions.insert("writer".into(), "write".into());
        hub.permissions.insert("reader".into(), "read".into());
        hub.add_pull(7, "swarm/feature");
    }
    let repo = repo_with_task();
    let git = GitHttpServer::start(repo.dir.path().to_path_buf(), GIT_TOKEN).await;
    let r = engine(&github, &git, "echo changed > out.txt; echo did it").await;
    let s = store(&r).await;
    wait("the task to complete", Duration::from_secs(30), || async {
        s.task("webapp", "feature")
            .await
            .unwrap()
            .is_some_and(|t| t.status.as_str() == "completed")
    })
    .await;

    // A reader is refused politely, and nothing else happens.
    let c = issue_comment("reader", "User", 7, "/swarm retry feature");
    assert_eq!(
        deliver(r.port, "issue_comment", "c-1", &c, signed(&c))
            .await
            .0,
        202
    );
    wait("the refusal", Duration::from_secs(10), || async {
        replies(&github)
            .iter()
            .any(|b| b.contains("@reader") && b.contains("write access"))
    })
    .await;
    assert_eq!(
        s.task("webapp", "feature")
            .await
            .unwrap()
            .unwrap()
            .generation,
        1
    );
    // A bot's comment never triggers anything.
    let c = issue_comment("other-bot[bot]", "Bot", 7, "/swarm retry feature");
    assert_eq!(
        deliver(r.port, "issue_comment", "c-2", &c, signed(&c))
            .await
            .0,
        202
    );
    // A writer's retry runs the task again.
    let c = issue_comment("writer", "User", 7, "Looks off.\n/swarm retry feature");
    assert_eq!(
        deliver(r.port, "issue_comment", "c-3", &c, signed(&c))
            .await
            .0,
        202
    );
    wait("the retry", Duration::from_secs(10), || async {
        s.task("webapp", "feature")
            .await
            .unwrap()
            .unwrap()
            .generation
            == 2
    })
    .await;
    wait("the answer", Duration::from_secs(10), || async {
        replies(&github)
            .iter()
            .any(|b| b.contains("@writer") && b.contains("runs again"))
    })
    .await;
    let all = replies(&github);
    assert_eq!(
        all.len(),
        2,
        "one refusal, one answer, nothing for the bot: {all:?}"
    );
    // Status: a table of tasks.
    let c = issue_comment("writer", "User", 7, "/swarm status");
    deliver(r.port, "issue_comment", "c-4", &c, signed(&c)).await;
    wait("the status answer", Duration::from_secs(10), || async {
        replies(&github).iter().any(|b| b.contains("| `feature` |"))
    })
    .await;
    let seen_permissions = github
        .hub()
        .seen
        .iter()
        .filter(|x| x.path.contains("/permission"))
        .count();
    assert_eq!(seen_permissions, 2, "permissions are cached per person");

    // The engine's own comments start nothing, whoever GitHub says wrote them.
    let own = all[0].clone();
    let c = issue_comment("writer", "User", 7, &own);
    deliver(r.port, "issue_comment", "c-5", &c, signed(&c)).await;
    // A plain request on a swarm pull request wakes the project manager with it.
    let c = issue_comment("writer", "User", 7, "@swarm the tests fail on empty input");
    deliver(r.port, "issue_comment", "c-6", &c, signed(&c)).await;
    // Acknowledged with "eyes" on the comment: a reply would add nothing.
    wait(
        "the request's acknowledgement",
        Duration::from_secs(10),
        || async {
            github
                .hub()
                .reactions
                .contains(&("issues".to_string(), 555, "eyes".to_string()))
        },
    )
    .await;
    let activation = s
        .list(&coding_swarm::store::TaskFilter::default())
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.origin.as_str() == "engine")
        .expect("an activation");
    let items = activation.context;
    assert!(
        matches!(&items[0], coding_swarm::model::green::ActivationItem::Request { pull_request: 7, branch, task: Some(t), author, body }
        if branch == "swarm/feature" && t == "feature" && author == "writer" && body == "the tests fail on empty input"),
        "{items:?}"
    );
    assert_eq!(
        replies(&github).len(),
        3,
        "nothing for the engine's own comment, nor for the request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tasks_comment_is_edited_in_place_also_across_a_restart() {
    let github = GitHubServer::start().await;
    github.hub().add_pull(7, "swarm/feature");
    github
        .hub()
        .permissions
        .insert("writer".into(), "admin".into());
    let repo = repo_with_task();
    let git = GitHttpServer::start(repo.dir.path().to_path_buf(), GIT_TOKEN).await;
    let mut r = engine(
        &github,
        &git,
        "sleep 1; echo changed > out.txt; echo did it",
    )
    .await;
    let s = store(&r).await;
    let on_pr = |github: &GitHubServer| {
        github
            .hub()
            .comments
            .values()
            .filter(|(n, b)| *n == 7 && b.contains("coding-swarm:task=webapp/feature"))
            .map(|(_, b)| b.clone())
            .collect::<Vec<_>>()
    };
    wait("the final comment", Duration::from_secs(30), || async {
        on_pr(&github).iter().any(|b| b.contains("**Succeeded**"))
    })
    .await;
    let sha = s
        .task("webapp", "feature")
        .await
        .unwrap()
        .unwrap()
        .result()
        .unwrap()
        .commit_sha
        .clone()
        .unwrap();
    wait("the commit status", Duration::from_secs(10), || async {
        github.hub().statuses.iter().any(|(at, st)| {
            *at == sha && st["context"] == "swarm/feature" && st["state"] == "success"
        })
    })
    .await;
    // `[http] public_url`: the comment and the status link to the task's page.
    let page = "https://swarm.example.test/tasks/webapp/feature";
    assert!(
        on_pr(&github)[0].contains(&format!("[task page]({page})")),
        "{:?}",
        on_pr(&github)
    );
    assert!(github
        .hub()
        .statuses
        .iter()
        .filter(|(at, _)| *at == sha)
        .all(|(_, st)| st["target_url"] == page));
    assert_eq!(on_pr(&github).len(), 1);
    let patches = github
        .hub()
        .seen
        .iter()
        .filter(|x| x.method == "PATCH")
        .count();
    let posts = github
        .hub()
        .seen
        .iter()
        .filter(|x| x.method == "POST" && x.path.contains("/issues/7/comments"))
        .count();
    assert_eq!(posts, 1, "created once");
    assert!(patches >= 1, "then edited");

    // Restart, with the engine's memory of the comment gone: the marker finds it again.
    let _ = r.child.kill();
    let _ = r.child.wait();
    {
        let db = format!("sqlite://{}", r.dir.path().join("d/swarm.db").display());
        let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect(&db)
            .await
            .unwrap();
        sqlx::query("DELETE FROM github_comments")
            .execute(&mut c)
            .await
            .unwrap();
    }
    r.child = start(r.dir.path());
    let out = crate::support::command(env!("CARGO_BIN_EXE_swarm"))
        .args(["task", "retry", "webapp/feature", "--config", "swarm.toml"])
        .current_dir(r.dir.path())
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait(
        "the second generation's final comment",
        Duration::from_secs(40),
        || async {
            on_pr(&github)
                .iter()
                .any(|b| b.contains("generation 2") && b.contains("**Succeeded**"))
        },
    )
    .await;
    assert_eq!(on_pr(&github).len(), 1, "still one comment");
    assert_eq!(
        github
            .hub()
            .seen
            .iter()
            .filter(|x| x.method == "POST" && x.path.contains("/issues/7/comments"))
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secondary_rate_limit_delays_and_then_delivers() {
    let github = GitHubServer::start().await;
    github.hub().add_pull(7, "swarm/feature");
    github.hub().refuse_writes.push_back((403, Some(2)));
    let repo = repo_with_task();
    let git = GitHttpServer::start(repo.dir.path().to_path_buf(), GIT_TOKEN).await;
    let r = engine(&github, &git, "echo changed > out.txt; echo did it").await;
    let on_pr = |github: &GitHubServer| {
        github
            .hub()
            .comments
            .values()
            .filter(|(n, _)| *n == 7)
            .map(|(_, b)| b.clone())
            .collect::<Vec<_>>()
    };
    wait("the final comment", Duration::from_secs(40), || async {
        on_pr(&github).iter().any(|b| b.contains("**Succeeded**"))
    })
    .await;
    let seen = github.hub().seen.clone();
    let writes: Vec<_> = seen
        .iter()
        .filter(|x| x.method == "POST" || x.method == "PATCH")
        .collect();
    let refused = writes[0].at;
    let next = writes[1].at;
    assert!(
        next.duration_since(refused) >= Duration::from_millis(1900),
        "waited {:?} after Retry-After: 2",
        next.duration_since(refused)
    );
    let s = store(&r).await;
    wait("an empty outbox", Duration::from_secs(10), || async {
        s.outbox_all().await.unwrap().is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_token_is_refreshed_when_it_expires() {
    let github = GitHubServer::start().await;
    github.hub().token_lifetime = 20; // inside octocrab's 30-second refresh margin
    github.hub().permissions.insert("a".into(), "write".into());
    github.hub().permissions.insert("b".into(), "read".into());
    let key = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/github-app-test-key.pem"),
    )
    .unwrap();
    let cfg: coding_swarm::config::GitHubConfig =
        toml::from_str(&format!("api_url = \"{}\"\napp_id = 12345\n", github.url)).unwrap();
    let secrets = coding_swarm::config::Secrets {
        github_app_key: coding_swarm::config::Secret::new(key),
        ..Default::default()
    };
    let gh = coding_swarm::forge::GitHub::new(&cfg, &secrets).unwrap();
    assert_eq!(gh.permission("acme/webapp", "a").await.unwrap(), "write");
    assert_eq!(gh.permission("acme/webapp", "b").await.unwrap(), "read");
    let hub = github.hub();
    assert_eq!(hub.tokens_issued, 2, "the expiring token was refreshed");
    let token_requests: Vec<_> = hub
        .seen
        .iter()
        .filter(|x| x.path.starts_with("/app/installations/77/access_tokens"))
        .collect();
    assert!(
        token_requests
            .iter()
            .all(|x| x.auth.starts_with("Bearer ") && x.auth.matches('.').count() == 2),
        "tokens are asked for with the App's JWT"
    );
    let api: Vec<_> = hub
        .seen
        .iter()
        .filter(|x| x.path.contains("/permission"))
        .collect();
    assert!(
        api[0].auth.contains("ghs_installation_token_1")
            && api[1].auth.contains("ghs_installation_token_2"),
        "{:?}",
        api.iter().map(|x| &x.auth).collect::<Vec<_>>()
    );
}

/// The engine's GitHub client against GitHub's rules, as the fake keeps them: a closed pull
/// request is no open one but still counts as one; the status comment is found past the first
/// page of comments; and the 401 and 422 answers come back as errors that say why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_keeps_to_githubs_rules() {
    use crate::ghapi::{Pull, TOKEN};
    use coding_swarm::forge::{ForgeError, GitHub};
    let github = GitHubServer::start().await;
    let cfg: coding_swarm::config::GitHubConfig =
        toml::from_str(&format!("api_url = \"{}\"\n", github.url)).unwrap();
    let gh = GitHub::new(
        &cfg,
        &coding_swarm::config::Secrets {
            github_token: coding_swarm::config::Secret::new(TOKEN),
            ..Default::default()
        },
    )
    .unwrap();
    {
        let mut hub = github.hub();
        hub.add_pull(7, "swarm/open");
        hub.pulls.insert(
            8,
            Pull {
                state: "closed".into(),
                ..Pull::open("swarm/closed")
            },
        );
        hub.pulls.insert(
            9,
            Pull {
                draft: true,
                ..Pull::open("swarm/draft")
            },
        );
        hub.pulls.insert(
            10,
            Pull {
                state: "closed".into(),
                merged: true,
                ..Pull::open("swarm/merged")
            },
        );
        hub.branches.insert("swarm/new".into(), "0123".into());
        hub.branches.insert("swarm/open".into(), "4567".into());
    }
    let repo = "acme/webapp";
    assert_eq!(
        gh.pull_for_branch(repo, "swarm/open").await.unwrap(),
        Some(7)
    );
    assert_eq!(
        gh.pull_for_branch(repo, "swarm/draft").await.unwrap(),
        Some(9)
    );
    for closed in ["swarm/closed", "swarm/merged"] {
        assert_eq!(
            gh.pull_for_branch(repo, closed).await.unwrap(),
            None,
            "{closed}"
        );
        assert!(
            gh.any_pull_for_branch(repo, closed).await.unwrap(),
            "{closed}"
        );
    }
    assert!(!gh.any_pull_for_branch(repo, "swarm/none").await.unwrap());

    // 250 comments, 100 a page: the marker on the third page is found by following the links.
    {
        let mut hub = github.hub();
        for i in 0..250u64 {
            let body = if i == 240 {
                "<!-- coding-swarm:task=webapp/late -->".to_string()
            } else {
                format!("comment {i}")
            };
            hub.comments.insert(2000 + i, (7, body));
        }
    }
    let before = github.hub().seen.len();
    assert_eq!(
        gh.find_comment(repo, 7, "coding-swarm:task=webapp/late")
            .await
            .unwrap(),
        Some(2240)
    );
    assert_eq!(
        gh.find_comment(repo, 7, "coding-swarm:task=webapp/absent")
            .await
            .unwrap(),
        None
    );
    let pages: Vec<String> = github.hub().seen[before..]
        .iter()
        .map(|s| s.path.clone())
        .collect();
    assert_eq!(pages.len(), 6, "three pages each: {pages:?}");
    assert!(
        pages[1].ends_with("per_page=100&page=2") && pages[2].ends_with("per_page=100&page=3"),
        "{pages:?}"
    );

    // 422 where GitHub answers it, with what failed.
    let pull = json!({"title": "again", "head": "swarm/open", "base": "main", "draft": true});
    match gh.create_pull(repo, &pull).await {
        Err(ForgeError::Http {
            status: 422,
            message,
            ..
        }) => {
            assert!(
                message.contains("A pull request already exists for acme:swarm/open."),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
    let unknown = json!({"title": "t", "head": "swarm/unpushed", "base": "main"});
    assert!(matches!(
        gh.create_pull(repo, &unknown).await,
        Err(ForgeError::Http { status: 422, .. })
    ));
    let fresh = json!({"title": "t", "head": "swarm/new", "base": "main", "draft": true});
    let n = gh.create_pull(repo, &fresh).await.unwrap();
    assert_eq!(
        gh.pull_for_branch(repo, "swarm/new").await.unwrap(),
        Some(n)
    );
    assert!(github.hub().pulls[&n].draft);
    let bad_state = json!({"state": "running", "context": "swarm/x", "description": "d"});
    assert!(matches!(
        gh.create_status(repo, "0123", &bad_state).await,
        Err(ForgeError::Http { status: 422, .. })
    ));
    assert!(matches!(
        gh.create_comment(repo, 7, "").await,
        Err(ForgeError::Http { status: 422, .. })
    ));
    assert!(matches!(
        gh.create_comment(repo, 4242, "hello").await,
        Err(ForgeError::Http { status: 404, .. })
    ));

    // A wrong token: 401 Bad credentials.
    let wrong = GitHub::new(
        &cfg,
        &coding_swarm::config::Secrets {
            github_token: coding_swarm::config::Secret::new("ghp_not-a-token-github-knows"),
            ..Default::default()
        },
    )
    .unwrap();
    match wrong.pull_for_branch(repo, "swarm/open").await {
        Err(ForgeError::Http {
            status: 401,
            message,
            ..
        }) => assert_eq!(message, "Bad credentials"),
        other => panic!("{other:?}"),
    }
    // Every answer carries the rate-limit headers, the refusals too.
    for (path, auth) in [
        ("/repos/acme/webapp/pulls", format!("Bearer {TOKEN}")),
        ("/repos/acme/webapp/pulls", String::new()),
    ] {
        let mut req = ureq::get(&format!("{}{path}", github.url));
        if !auth.is_empty() {
            req = req.header("authorization", &auth);
        }
        let r = req
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .unwrap();
        for h in [
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-used",
            "x-ratelimit-reset",
            "x-ratelimit-resource",
        ] {
            assert!(r.headers().contains_key(h), "{h} missing on {}", r.status());
        }
    }
}

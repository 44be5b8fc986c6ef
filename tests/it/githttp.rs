//! A git remote over smart HTTP with Basic authentication (`githttp_server.rs`, the real `git
//! http-backend` behind a small CGI bridge on loopback), an HTTPS proxy, and the worker's
//! pushes through them, for the paths where credentials matter.

#[path = "githttp_server.rs"]
mod server;

pub use server::GitHttpServer;

use std::sync::Arc;

use tokio::io::AsyncWriteExt;

/// An HTTPS proxy on loopback, as a corporate network has one: it takes `CONNECT host:port`
/// (what libgit2 sends through a proxy for `https://` remotes; it sends `http://` ones past any
/// proxy), answers for every host with `identity` (a certificate the client must trust through
/// `SSL_CERT_FILE`), and carries the plain requests to `upstream`. It counts the tunnels.
pub struct HttpProxy {
    pub url: String,
    carried: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpProxy {
    pub async fn start(
        upstream: std::net::SocketAddr,
        identity: native_tls_identity::Identity,
    ) -> Self {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let carried: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let count = carried.clone();
        let acceptor = tokio_native_tls::TlsAcceptor::from(
            tokio_native_tls::native_tls::TlsAcceptor::new(identity).unwrap(),
        );
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let count = count.clone();
                tokio::spawn(async move {
                    // The request's head, up to its blank line.
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if client.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    if !head.starts_with(b"CONNECT ") {
                        let _ = client.write_all(b"HTTP/1.1 405 CONNECT only\r\n\r\n").await;
                        return;
                    }
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if client
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let Ok(mut tls) = acceptor.accept(client).await else {
                        return;
                    };
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
                });
            }
        });
        Self { url, carried, task }
    }

    pub fn carried(&self) -> usize {
        self.carried.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The TLS identity type of the proxy.
pub mod native_tls_identity {
    pub use tokio_native_tls::native_tls::Identity;

    /// A self-signed certificate for `host` made by the openssl CLI in `dir`: its identity, and
    /// the path of its certificate (for `SSL_CERT_FILE`).
    pub fn self_signed(dir: &std::path::Path, host: &str) -> (Identity, std::path::PathBuf) {
        let status = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "2", "-subj", &format!("/CN={host}")])
            .args(["-addext", &format!("subjectAltName=DNS:{host}")])
            .args(["-keyout", "proxy.key", "-out", "proxy.pem"])
            .current_dir(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "openssl req");
        let cert = std::fs::read(dir.join("proxy.pem")).unwrap();
        let key = std::fs::read(dir.join("proxy.key")).unwrap();
        (
            Identity::from_pkcs8(&cert, &key).unwrap(),
            dir.join("proxy.pem"),
        )
    }
}

impl Drop for HttpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub mod tests {

    use coding_swarm::config::AgentProfile;
    use coding_swarm::job::JobSpec;
    use coding_swarm::spec::{ErrorClass, RunResult};

    use std::sync::Arc;

    use super::{GitHttpServer, HttpProxy};
    use crate::support::TestRepo;

    const SWARM: &str = env!("CARGO_BIN_EXE_swarm");
    const GIT_TOKEN: &str = "ghs_test-git-token-0123456789abcdef";

    fn task(url: &str) -> JobSpec {
        JobSpec {
            version: coding_swarm::job::VERSION,
            project: "proj".into(),
            key: "over-http".into(),
            generation: 1,
            attempt: 1,
            run_name: "proj-over-http-g1-a1".into(),
            repo: url.into(),
            branch: "swarm/over-http".into(),
            base: "main".into(),
            kind: None,
            prompt: "p".into(),
            agent_name: "sh".into(),
            agent: (&AgentProfile::command(vec![
                "sh".into(),
                "-c".into(),
                "echo hi > new.txt; echo wrote it".into(),
            ]))
                .into(),
            git_name: "Swarm Bot".into(),
            git_email: "bot@example.com".into(),
            hooks: None,
        }
    }

    fn worker(dir: &std::path::Path, task: &JobSpec, token: Option<&str>) -> RunResult {
        std::fs::write(dir.join("task.json"), serde_json::to_vec(task).unwrap()).unwrap();
        let mut cmd = crate::support::command(SWARM);
        cmd.args(["worker", "--run-dir"]).arg(dir);
        if let Some(t) = token {
            cmd.env("SWARM_GIT_TOKEN", t);
        }
        let log = std::fs::File::create(dir.join("log")).unwrap();
        cmd.stdout(log.try_clone().unwrap())
            .stderr(log)
            .status()
            .unwrap();
        serde_json::from_slice(&std::fs::read(dir.join("result.json")).unwrap()).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_worker_pushes_over_http_with_a_token_that_never_lands_in_a_url() {
        let repo = TestRepo::new();
        repo.commit(&[("README.md", Some("x\n"))], "init");
        let server = GitHttpServer::start(repo.dir.path().to_path_buf(), GIT_TOKEN).await;
        let url = format!("{}/remote.git", server.base);

        let dir = tempfile::tempdir().unwrap();
        let t = task(&url);
        let d = dir.path().to_path_buf();
        let result = tokio::task::spawn_blocking(move || worker(&d, &t, Some(GIT_TOKEN)))
            .await
            .unwrap();
        assert!(
            result.success && result.changed,
            "{result:?}\n{}",
            std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
        );
        assert_eq!(
            repo.read("swarm/over-http", "new.txt").as_deref(),
            Some("hi\n")
        );
        let config = std::fs::read_to_string(dir.path().join("checkout/.git/config")).unwrap();
        assert!(
            config.contains(&url) && !config.contains(GIT_TOKEN),
            "{config}"
        );
        for file in ["log", "result.json", "task.json"] {
            assert!(
                !std::fs::read_to_string(dir.path().join(file))
                    .unwrap()
                    .contains(GIT_TOKEN),
                "{file}"
            );
        }
        assert!(server.seen().iter().all(|s| !s.contains(GIT_TOKEN)));
        assert!(
            server
                .seen()
                .iter()
                .any(|s| s.contains("git-receive-pack") && s.ends_with("auth=true")),
            "{:?}",
            server.seen()
        );

        // Without the token: a clear git failure, nothing pushed.
        let dir = tempfile::tempdir().unwrap();
        let mut t = task(&url);
        t.branch = "swarm/no-token".into();
        let d = dir.path().to_path_buf();
        let result = tokio::task::spawn_blocking(move || worker(&d, &t, None))
            .await
            .unwrap();
        assert_eq!(result.error_class, Some(ErrorClass::Git), "{result:?}");
        assert!(repo
            .repo
            .refname_to_id("refs/heads/swarm/no-token")
            .is_err());
    }

    /// A worker pod's three containers, as three processes in the order Kubernetes runs them:
    /// the checkout and the push get the git token, the agent's process does not (its whole
    /// environment is written into its commit to show it), and its work still reaches the
    /// remote, pushed with the token. The checkout's state is kept apart from the agent's
    /// directories; a push without it pushes nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pods_containers_push_with_a_credential_the_agent_never_had() {
        const TOKEN: &str = "ghs_podPhaseToken-0123456789abcdef";
        let repo = TestRepo::new();
        repo.commit(&[("README.md", Some("x\n"))], "init");
        let server = GitHttpServer::start(repo.dir.path().to_path_buf(), TOKEN).await;
        let url = format!("{}/remote.git", server.base);
        let pod = tempfile::tempdir().unwrap();
        let (run, state) = (pod.path().join("workspace/run"), pod.path().join("state"));
        std::fs::create_dir_all(&run).unwrap();
        let mut t = task(&url);
        // A server that would take any credential, where the agent tries to send the push.
        let elsewhere_repo = TestRepo::new();
        elsewhere_repo.commit(&[("README.md", Some("x\n"))], "init");
        let elsewhere = GitHttpServer::start_accepting(
            elsewhere_repo.dir.path().to_path_buf(),
            Arc::new(|_| true),
        )
        .await;
        // The agent also rewrites the run's task.json (its parent directory in a pod is the
        // shared volume) to name that server as the project's remote.
        t.agent = (&AgentProfile::command(vec![
            "sh".into(),
            "-c".into(),
            format!(
                "env > agent-env.txt; echo hi > new.txt; sed -i 's#{}#{}#' ../task.json",
                server.base, elsewhere.base
            ),
        ]))
            .into();
        let task_file = pod.path().join("task.json");
        std::fs::write(&task_file, serde_json::to_vec(&t).unwrap()).unwrap();
        let (r, st, termination) = (run.clone(), state.clone(), pod.path().join("termination"));
        let container = move |phase: &str, token: bool| {
            let mut cmd = crate::support::command(SWARM);
            cmd.args(["worker", "--phase", phase, "--run-dir"])
                .arg(&r)
                .arg("--task-file")
                .arg(&task_file);
            if phase != "agent" {
                cmd.arg("--state-dir").arg(&st);
            }
            if phase == "push" {
                cmd.arg("--termination-log").arg(&termination);
            }
            if token {
                cmd.env("SWARM_GIT_TOKEN", TOKEN);
            }
            let out = cmd.output().unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).to_string(),
            )
        };
        let (checkout, push) = tokio::task::spawn_blocking(move || {
            let checkout = container("checkout", true);
            let agent = container("agent", false);
            assert_eq!(agent.0, Some(0), "{}", agent.1);
            (checkout, container("push", true))
        })
        .await
        .unwrap();
        assert_eq!(checkout.0, Some(0), "{}", checkout.1);
        // The git CLI fetched (the task's branch, which the remote lacks, dropped; the token in
        // its environment only) and wrote the tree; libgit2 did neither.
        for said in [
            "fetched +refs/heads/main:refs/remotes/origin/main with the git CLI",
            "wrote the work tree with the git CLI",
        ] {
            assert!(
                checkout.1.contains(said),
                "{said:?} not in:\n{}",
                checkout.1
            );
        }
        assert!(
            !checkout.1.contains("libgit2") && !checkout.1.contains(TOKEN),
            "{}",
            checkout.1
        );
        assert_eq!(push.0, Some(0), "{}", push.1);
        let result: RunResult = coding_swarm::job::JobResult::read(
            &std::fs::read(pod.path().join("termination")).unwrap(),
        );
        assert!(result.success && result.changed, "{result:?}");
        assert_eq!(
            repo.read("swarm/over-http", "new.txt").as_deref(),
            Some("hi\n")
        );
        let agent_env = repo.read("swarm/over-http", "agent-env.txt").unwrap();
        assert!(
            agent_env.contains("SWARM_TASK_KEY=over-http"),
            "{agent_env}"
        );
        assert!(!agent_env.contains(TOKEN) && !agent_env.contains("SWARM_GIT_TOKEN"));
        assert!(
            server
                .seen()
                .iter()
                .any(|s| s.contains("git-receive-pack") && s.ends_with("auth=true")),
            "pushed with the token: {:?}",
            server.seen()
        );
        assert!(state.join("checkout.json").exists());
        assert!(
            elsewhere.seen().is_empty(),
            "the push went where the mounted task says, not where the agent wrote: {:?}",
            elsewhere.seen()
        );

        // The push container without the checkout's state (another pod's, or removed):
        // nothing is pushed, and the result says why.
        let before = repo.read("swarm/over-http", "new.txt");
        std::fs::remove_dir_all(&state).unwrap();
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(run.join("checkout/more.txt"), "more\n").unwrap();
        let mut cmd = crate::support::command(SWARM);
        cmd.args(["worker", "--phase", "push", "--run-dir"])
            .arg(&run)
            .arg("--state-dir")
            .arg(&state)
            .env("SWARM_GIT_TOKEN", TOKEN);
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        assert_ne!(out.status.code(), Some(0));
        let result: RunResult =
            coding_swarm::job::JobResult::read(&std::fs::read(run.join("result.json")).unwrap());
        assert_eq!(result.error_class, Some(ErrorClass::Crash), "{result:?}");
        assert!(result.error.unwrap().contains("left no state"));
        assert_eq!(repo.read("swarm/over-http", "more.txt"), None);
        assert_eq!(repo.read("swarm/over-http", "new.txt"), before);
    }

    /// With a GitHub App and no git token at all: the engine fetches and pushes its status
    /// files with installation tokens it mints, and the job gets a token of its own, asked for
    /// one repository and `contents: write` only, and revoked when the run ends. The git
    /// server takes only live tokens GitHub would let push to that repository.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_a_github_app_each_job_gets_a_token_for_its_repository_alone() {
        let github = crate::ghapi::GitHubServer::start().await;
        let repo = TestRepo::new();
        repo.commit(
            &[(".ai/tasks/app-task.yaml", Some("addressee: w\nprompt: p\n"))],
            "task",
        );
        // Tokens last 4 seconds here, less than the run: its push works only with a token the
        // engine renewed while it ran.
        github.hub().token_lifetime = 4;
        let hub = github.fake.hub.clone();
        let server = GitHttpServer::start_accepting(
            repo.dir.path().to_path_buf(),
            Arc::new(move |p| hub.lock().unwrap().may_push(p, "webapp")),
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("swarm.toml"),
            format!(
                "data_dir = \"d\"\ndefault_agent = \"sh\"\nsandbox = \"none\"\n[github]\napi_url = \"{}\"\napp_id = 12345\ntoken_renewal = \"1s\"\n\
                 [agents.sh]\ncommand = [\"sh\", \"-c\", \"sleep 6; echo hi > new.txt\"]\n\
                 [[projects]]\nname = \"webapp\"\nrepo = \"{}/remote.git\"\ngithub = \"acme/webapp\"\n",
                github.url, server.base
            ),
        )
        .unwrap();
        let key = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/github-app-test-key.pem"),
        )
        .unwrap();
        let d = dir.path().to_path_buf();
        let out = tokio::task::spawn_blocking(move || {
            crate::support::command(SWARM)
                .args(["up", "--once", "--config", "swarm.toml"])
                .current_dir(&d)
                .env("SWARM_GITHUB_APP_KEY", key)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let log = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{log}");
        assert_eq!(
            repo.read("swarm/app-task", "new.txt").as_deref(),
            Some("hi\n"),
            "{log}"
        );
        assert!(
            repo.read("main", ".ai/status/app-task.yaml").is_some(),
            "the engine pushed the status file: {log}"
        );
        let hub = github.hub();
        // The engine's own token and the job's: each for the one repository, contents: write.
        assert!(hub.token_requests.len() >= 2, "{:?}", hub.token_requests);
        for body in &hub.token_requests {
            assert_eq!(
                body,
                &serde_json::json!({"repositories": ["webapp"], "permissions": {"contents": "write"}})
            );
        }
        // The job's tokens, renewed while it ran, are gone with it; tokens appear in no log.
        assert!(log.contains("renewed the run's git token"), "{log}");
        assert!(
            hub.revoked.len() >= 2,
            "renewed and revoked: {:?}",
            hub.revoked
        );
        for token in hub.token_scopes.keys() {
            assert!(!log.contains(token.as_str()), "{token} in the log");
        }
        assert!(server
            .seen()
            .iter()
            .any(|s| s.contains("git-receive-pack") && s.ends_with("auth=true")));
    }

    /// With a GitHub App whose installation stops issuing tokens after the engine's own: the
    /// run cannot get its token and fails as `infrastructure`, retried as such, and nothing is
    /// cloned or pushed without one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_without_its_own_token_fails_as_infrastructure() {
        let github = crate::ghapi::GitHubServer::start().await;
        github.hub().issue_tokens = Some(1);
        let repo = TestRepo::new();
        repo.commit(
            &[(".ai/tasks/app-task.yaml", Some("addressee: w\nprompt: p\n"))],
            "task",
        );
        let hub = github.fake.hub.clone();
        let server = GitHttpServer::start_accepting(
            repo.dir.path().to_path_buf(),
            Arc::new(move |p| hub.lock().unwrap().may_push(p, "webapp")),
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("swarm.toml"),
            format!(
                "data_dir = \"d\"\ndefault_agent = \"sh\"\nsandbox = \"none\"\nmax_infra_retries = 1\nretry_backoff = \"100ms\"\n\
                 [github]\napi_url = \"{}\"\napp_id = 12345\n\
                 [agents.sh]\ncommand = [\"sh\", \"-c\", \"echo hi > new.txt\"]\n\
                 [[projects]]\nname = \"webapp\"\nrepo = \"{}/remote.git\"\ngithub = \"acme/webapp\"\n",
                github.url, server.base
            ),
        )
        .unwrap();
        let key = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/github-app-test-key.pem"),
        )
        .unwrap();
        let d = dir.path().to_path_buf();
        let out = tokio::task::spawn_blocking(move || {
            crate::support::command(SWARM)
                .args(["up", "--once", "--config", "swarm.toml"])
                .current_dir(&d)
                .env("SWARM_GITHUB_APP_KEY", key)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let log = String::from_utf8_lossy(&out.stderr).to_string();
        let status = repo
            .read("main", ".ai/status/app-task.yaml")
            .unwrap_or_else(|| panic!("no status file: {log}"));
        assert!(status.contains("infrastructure"), "{status}");
        assert!(
            status.contains("cannot mint the job's git token"),
            "{status}"
        );
        // Tried again as an infrastructure failure: two requests after the engine's own.
        assert_eq!(github.hub().token_requests.len(), 1, "{log}");
        assert!(
            github
                .hub()
                .seen
                .iter()
                .filter(|s| s.path.contains("/access_tokens"))
                .count()
                >= 3,
            "{log}"
        );
        assert_eq!(repo.read("swarm/app-task", "new.txt"), None);
    }

    /// `swarm up --once` with the token in its environment (given to the process, never set in
    /// the tests' own): it syncs over HTTP, runs the task, pushes the status file, and the
    /// token lands in no URL and no config of the cache.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_engine_syncs_over_http_with_the_token() {
        let repo = TestRepo::new();
        repo.commit(
            &[(
                ".ai/tasks/remote-task.yaml",
                Some("addressee: w\nprompt: p\n"),
            )],
            "task",
        );
        let server = GitHttpServer::start(repo.dir.path().to_path_buf(), GIT_TOKEN).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("swarm.toml"),
            format!(
                "data_dir = \"d\"\ndefault_agent = \"sh\"\n[agents.sh]\ncommand = [\"sh\", \"-c\", \"echo ok\"]\n[[projects]]\nname = \"proj\"\nrepo = \"{}/remote.git\"\n",
                server.base
            ),
        )
        .unwrap();
        let out = tokio::task::spawn_blocking({
            let dir = dir.path().to_path_buf();
            move || {
                crate::support::command(SWARM)
                    .args(["up", "--once", "--config", "swarm.toml"])
                    .current_dir(dir)
                    .env("SWARM_GIT_TOKEN", GIT_TOKEN)
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{log}");
        assert!(!log.contains(GIT_TOKEN));
        let store = coding_swarm::store::Store::connect(&format!(
            "sqlite://{}",
            dir.path().join("d/swarm.db").display()
        ))
        .await
        .unwrap();
        let task = store.task("proj", "remote-task").await.unwrap().unwrap();
        assert!(task.result().is_some_and(|r| r.success), "{task:?}");
        assert!(
            repo.read("main", ".ai/status/remote-task.yaml").is_some(),
            "the status file was pushed over HTTP"
        );
        let cache_config = std::fs::read_to_string(
            coding_swarm::gitops::cache_path(&dir.path().join("d"), "proj").join("config"),
        )
        .unwrap();
        assert!(!cache_config.contains(GIT_TOKEN), "{cache_config}");
        assert!(server.seen().iter().all(|s| !s.contains(GIT_TOKEN)));
        assert!(
            server
                .seen()
                .iter()
                .any(|s| s.contains("git-receive-pack") && s.ends_with("auth=true")),
            "{:?}",
            server.seen()
        );
    }

    /// Behind a proxy: the remote's host resolves nowhere (`.invalid`), so `swarm up --once`
    /// reaches it only through the proxy of `https_proxy`, for the sync's ls-remote and fetch,
    /// the worker's clone and push and the status push, trusting the proxy's certificate by
    /// `SSL_CERT_FILE`; the agent gets the proxy and CA variables.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_engine_and_its_workers_reach_the_remote_through_the_proxy() {
        let repo = TestRepo::new();
        repo.commit(
            &[(".ai/tasks/proxied.yaml", Some("addressee: w\nprompt: p\n"))],
            "task",
        );
        let server = GitHttpServer::start(repo.dir.path().to_path_buf(), GIT_TOKEN).await;
        let upstream: std::net::SocketAddr =
            server.base.trim_start_matches("http://").parse().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (identity, cert) = super::native_tls_identity::self_signed(dir.path(), "git.invalid");
        let proxy = HttpProxy::start(upstream, identity).await;
        // The agent (in its sandbox) records what it got in its own work, which is pushed.
        let script = "mkdir -p out; echo \"$https_proxy|$NO_PROXY|$SSL_CERT_FILE|$NODE_EXTRA_CA_CERTS\" > out/env; \
             test -r \"$SSL_CERT_FILE\" && echo readable >> out/env; echo x > out/f; echo ok";
        std::fs::write(
            dir.path().join("swarm.toml"),
            format!(
                "data_dir = \"d\"\ndefault_agent = \"sh\"\n[agents.sh]\ncommand = [\"sh\", \"-c\", {script:?}]\n[[projects]]\nname = \"proj\"\nrepo = \"https://git.invalid:{}/remote.git\"\n",
                upstream.port()
            ),
        )
        .unwrap();
        let run = |with_proxy: bool| {
            let dir = dir.path().to_path_buf();
            let proxy_url = proxy.url.clone();
            let cert = cert.clone();
            tokio::task::spawn_blocking(move || {
                let mut cmd = crate::support::command(SWARM);
                cmd.args(["up", "--once", "--config", "swarm.toml"])
                    .current_dir(dir)
                    .env("SWARM_GIT_TOKEN", GIT_TOKEN);
                if with_proxy {
                    cmd.env("https_proxy", &proxy_url)
                        .env("NO_PROXY", "example.org")
                        .env("SSL_CERT_FILE", &cert)
                        .env("NODE_EXTRA_CA_CERTS", &cert);
                }
                cmd.output().unwrap()
            })
        };
        // Without the proxy the host does not resolve: the sync fails, nothing runs.
        let out = run(false).await.unwrap();
        let log = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{log}");
        assert_eq!(proxy.carried(), 0);

        let out = run(true).await.unwrap();
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{log}");
        assert!(
            proxy.carried() >= 3,
            "ls-remote, fetch, clone, pushes: {}",
            proxy.carried()
        );
        assert!(
            repo.read("swarm/proxied", "out/f").is_some(),
            "the worker pushed through it"
        );
        assert!(
            repo.read("main", ".ai/status/proxied.yaml").is_some(),
            "the status file was pushed through it"
        );
        assert_eq!(
            repo.read("swarm/proxied", "out/env")
                .unwrap_or_default()
                .trim(),
            format!(
                "{}|example.org|{c}|{c}\nreadable",
                proxy.url,
                c = cert.display()
            ),
            "the agent got the proxy and CA variables, and can read the CA file in its sandbox"
        );
    }

    /// The agent rewrites the checkout's git configuration and its HOME's (`insteadOf` to a
    /// server of its own, a proxy, an include): the worker restores the configuration the clone
    /// wrote, reads no other, and gives the token to the project's remote only. The push lands
    /// on the project's remote; the other server never hears from the worker.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_agent_that_rewrites_the_git_config_cannot_redirect_the_push_or_the_token() {
        let repo = TestRepo::new();
        repo.commit(&[("README.md", Some("x\n"))], "init");
        let server = GitHttpServer::start(repo.dir.path().to_path_buf(), GIT_TOKEN).await;
        let url = format!("{}/remote.git", server.base);
        let elsewhere_repo = TestRepo::new();
        elsewhere_repo.commit(&[("README.md", Some("x\n"))], "init");
        let elsewhere = GitHttpServer::start(elsewhere_repo.dir.path().to_path_buf(), "any").await;
        let evil = format!("{}/remote.git", elsewhere.base);
        let script = format!(
            "git config url.{evil}.insteadOf {url}; git config url.{evil}.pushInsteadOf {url}; \
             git config http.proxy http://127.0.0.1:9; \
             printf '[url \\\"{evil}\\\"]\\n\\tinsteadOf = {url}\\n' > \"$HOME/.gitconfig\"; \
             echo hi > new.txt; echo rewired"
        );
        let mut t = task(&url);
        t.agent = (&AgentProfile::command(vec!["sh".into(), "-c".into(), script])).into();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let result = tokio::task::spawn_blocking(move || worker(&d, &t, Some(GIT_TOKEN)))
            .await
            .unwrap();
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
        assert!(result.success && result.changed, "{result:?}\n{log}");
        let gitconfig =
            std::fs::read_to_string(dir.path().join("home/.gitconfig")).unwrap_or_default();
        assert!(
            gitconfig.contains("insteadOf"),
            "the agent did write its HOME's config: {gitconfig}"
        );
        assert_eq!(
            repo.read("swarm/over-http", "new.txt").as_deref(),
            Some("hi\n"),
            "the push reached the project's remote"
        );
        assert!(
            elsewhere.seen().is_empty(),
            "the other server heard from the worker: {:?}",
            elsewhere.seen()
        );
        assert!(elsewhere_repo.read("swarm/over-http", "new.txt").is_none());
    }
}

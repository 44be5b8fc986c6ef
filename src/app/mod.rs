//! Wiring: the whole engine built from a [`Config`] and the [`Secrets`] it needs (passed in,
//! never read from the environment here): the store, the HTTP server (health first, so a
//! standby is alive but not ready), leadership, the GitHub forge and its webhook deliveries,
//! the runtime, and the engine loop. The command line (`swarm up`) and the tests start it the
//! same way. The command bodies of the CLI live in [`commands`].

pub mod commands;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use tokio::sync::{mpsc, watch};

use crate::config::{Config, RuntimeKind, Secrets};
use crate::display::error_chain;
use crate::engine::{Engine, RunOptions};
use crate::forge::Forge;
use crate::gitops::GitAuth;
use crate::runtime::{Completion, KubeRuntime, LocalRuntime, Runtime};
use crate::store::Store;
use crate::web::{WebState, WebhookIn};

/// One engine, as configured.
pub struct App {
    pub config: Config,
    pub secrets: Secrets,
    /// The binary the local runtime starts as `swarm worker`.
    pub worker_exe: PathBuf,
    /// Stop once nothing is pending, running or waiting to be reported (no HTTP server).
    pub once: bool,
}

/// How a run of the engine ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Asked to stop, or (with `once`) all work done.
    Stopped,
    /// Another engine may lead now: this one stopped as soon as it noticed.
    LeadershipLost,
}

impl App {
    /// Connects to the configured database and brings its schema up to date.
    pub async fn store(&self) -> anyhow::Result<Store> {
        Ok(Store::connect(&self.config.database_url()).await?)
    }

    /// Runs the engine on `store` until `shutdown` turns true (or, with `once`, all work is
    /// done), or leadership is lost.
    pub async fn run(
        &self,
        store: &Store,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Ended> {
        let config = &self.config;
        if config.projects.is_empty() {
            bail!("no projects configured: add a [[projects]] table to swarm.toml (see README.md), or try `swarm up --demo`");
        }
        tracing::info!(database = %crate::config::redact_url(&config.database_url()), projects = config.projects.len(), runtime = ?config.runtime, "engine starting");
        check_sandbox(config)?;
        let web = self.web(store)?;
        let (web_stop_tx, web_stop_rx) = watch::channel(false);
        if let Some(state) = web.clone() {
            let listen = config.http.listen.clone();
            tokio::spawn(async move {
                if let Err(e) =
                    crate::web::serve(&listen, crate::web::router(state), web_stop_rx).await
                {
                    tracing::error!("the HTTP server on {listen} failed: {e}");
                }
            });
        }
        let ended = self.lead(store, shutdown, web.as_ref()).await;
        let _ = web_stop_tx.send(true);
        ended
    }

    /// The HTTP server's state, when it serves (not in `once` mode, and `http.listen` set).
    fn web(&self, store: &Store) -> anyhow::Result<Option<WebState>> {
        let config = &self.config;
        // Webhooks only when something reads them: [github] and a project on GitHub.
        let on_github = config.projects.iter().any(|p| p.github_repo().is_some());
        let webhook = match (
            config.github.as_ref().filter(|_| on_github),
            &self.secrets.webhook_secret,
        ) {
            (Some(_), Some(secret)) => Some(WebhookIn {
                secret: secret.expose().as_bytes().to_vec(),
            }),
            (Some(_), None) => {
                tracing::warn!("[github] is configured but SWARM_GITHUB_WEBHOOK_SECRET is not set: webhooks are refused");
                None
            }
            _ => None,
        };
        let api_token = self
            .secrets
            .api_token
            .as_ref()
            .map(|t| t.expose().to_string());
        if self.once || config.http.listen.is_empty() {
            return Ok(None);
        }
        // Bound beyond this machine, the dashboard and API need a token.
        if !crate::web::auth::is_loopback(&config.http.listen) && api_token.is_none() {
            bail!(
                "http.listen = {:?} is reachable from other machines: set SWARM_API_TOKEN (every request then needs it), or listen on 127.0.0.1",
                config.http.listen
            );
        }
        Ok(Some(WebState::new(
            Arc::new(config.clone()),
            store.clone(),
            webhook,
            api_token,
            GitAuth::new(self.secrets.git_token.clone()),
        )))
    }

    /// Waits for leadership, then runs the engine on the configured runtime.
    async fn lead(
        &self,
        store: &Store,
        shutdown: watch::Receiver<bool>,
        web: Option<&WebState>,
    ) -> anyhow::Result<Ended> {
        let config = &self.config;
        let leader =
            crate::engine::leader::acquire(&config.database_url(), &config.data_dir, || {
                tracing::info!("another engine leads; waiting to take over")
            })
            .await?;
        let holder = format!(
            "{}/{}",
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "engine".into()),
            std::process::id()
        );
        let epoch = store
            .lead(&holder, chrono::Utc::now())
            .await
            .context("cannot record the leadership")?;
        tracing::info!(epoch, "this engine leads");
        // The engine stops on the caller's shutdown, or as soon as leadership is lost.
        let (stop_tx, stop_rx) = watch::channel(false);
        let leadership_lost = Arc::new(AtomicBool::new(false));
        {
            let (mut lost, mut shutdown, stop_tx, flag, mut deposed) = (
                leader.lost.clone(),
                shutdown.clone(),
                stop_tx.clone(),
                leadership_lost.clone(),
                store.deposed(),
            );
            tokio::spawn(async move {
                loop {
                    if *shutdown.borrow() {
                        let _ = stop_tx.send(true);
                        return;
                    }
                    if *lost.borrow() || *deposed.borrow() {
                        tracing::error!(
                            "lost the leader lock: stopping, another engine may take over"
                        );
                        flag.store(true, Ordering::SeqCst);
                        let _ = stop_tx.send(true);
                        return;
                    }
                    tokio::select! {
                        r = shutdown.changed() => if r.is_err() { return },
                        r = lost.changed() => if r.is_err() { return },
                        r = deposed.changed() => if r.is_err() { return },
                    }
                }
            });
        }
        let (tx, rx) = mpsc::unbounded_channel();
        match config.runtime {
            RuntimeKind::Local => {
                let runtime =
                    LocalRuntime::new(config.data_dir.join("runs"), self.worker_exe.clone(), tx)
                        .with_caches(config.data_dir.clone());
                self.run_engine(store, runtime, rx, stop_rx, web).await?
            }
            RuntimeKind::Kubernetes => {
                let runtime = KubeRuntime::connect(&config.kubernetes, tx).await?;
                self.run_engine(store, runtime, rx, stop_rx, web).await?
            }
        }
        drop(leader);
        Ok(if leadership_lost.load(Ordering::SeqCst) {
            Ended::LeadershipLost
        } else {
            Ended::Stopped
        })
    }

    /// Runs the engine on `runtime`; with the HTTP server's state, readiness follows the
    /// runtime and the metrics are the engine's.
    async fn run_engine<R: Runtime + Clone>(
        &self,
        store: &Store,
        runtime: R,
        completions: mpsc::UnboundedReceiver<Completion>,
        stop: watch::Receiver<bool>,
        web: Option<&WebState>,
    ) -> anyhow::Result<()> {
        let config = &self.config;
        let mut engine =
            Engine::with_runtime(config.clone(), store.clone(), runtime.clone(), completions)
                .with_git_auth(GitAuth::new(self.secrets.git_token.clone()));
        if let Some(github) = app_github(config, &self.secrets)? {
            // A GitHub App: the engine's own fetches and status pushes use installation
            // tokens it renews, and each job gets one of its own.
            let tokens = crate::gitops::PerRemoteTokens::default();
            renew_engine_tokens(&github, config, &tokens).await;
            tokio::spawn(keep_engine_tokens(
                github.clone(),
                Arc::new(config.clone()),
                tokens.clone(),
                stop.clone(),
            ));
            engine = engine
                .with_git_auth(GitAuth::per_remote(tokens))
                .with_job_tokens(github);
        }
        if let Some(web) = web {
            engine = engine.with_metrics(web.metrics.clone());
        }
        if !self.once {
            if let Some(forge) = Forge::new(
                Arc::new(config.clone()),
                store.clone(),
                &self.secrets,
                engine.metrics(),
            )
            .context("cannot set up GitHub")?
            {
                tracing::info!("GitHub: reporting to pull requests and taking webhooks");
                tokio::spawn(forge.clone().run(stop.clone()));
                // Deliveries stored by any engine (this one, or earlier as a standby, or
                // before a crash) are processed here, by the leader only.
                tokio::spawn(forge.process_deliveries(engine.sync_triggers(), stop.clone()));
            }
        }
        if let Some(web) = web {
            let for_ready = runtime.clone();
            let ready: crate::web::ReadyCheck = Arc::new(move || {
                let rt = for_ready.clone();
                Box::pin(async move { rt.ready().await.map_err(|e| error_chain(&e)) })
            });
            let _ = web.runtime_ready.set(ready);
            let rt = runtime.clone();
            let logs: crate::web::LogsFn = Arc::new(move |run: String| {
                let rt = rt.clone();
                Box::pin(async move { rt.logs(&run).await.map_err(|e| error_chain(&e)) })
            });
            let _ = web.runtime_logs.set(logs);
            let rt = runtime.clone();
            let read_log: crate::web::ReadLogFn = Arc::new(move |run: String, offset: u64| {
                let rt = rt.clone();
                Box::pin(
                    async move { rt.read_log(&run, offset).await.map_err(|e| error_chain(&e)) },
                )
            });
            let _ = web.runtime_read_log.set(read_log);
            tokio::spawn(crate::web::api::publish_changes(web.clone(), stop.clone()));
        }
        engine.metrics().leader.set(1);
        engine.run(RunOptions { once: self.once }, stop).await
    }
}

/// The local runtime's agents run in bubblewrap unless the config says `sandbox = "none"`: an
/// engine whose sandbox does not work refuses to start, and says how to fix it.
pub fn check_sandbox(config: &Config) -> anyhow::Result<()> {
    use crate::config::SandboxMode;
    if config.runtime != RuntimeKind::Local {
        return Ok(());
    }
    match config.sandbox {
        SandboxMode::None => {
            tracing::warn!("sandbox = \"none\": agents run as this engine's user, unconfined; they can read its files and its other runs");
            Ok(())
        }
        SandboxMode::Bwrap => crate::worker::sandbox::probe().map_err(|why| {
            anyhow::anyhow!(
                "the agents' sandbox does not work on this machine: {why}. Install bubblewrap \
                 (Debian and Ubuntu: apt install bubblewrap) and allow unprivileged user namespaces \
                 (sysctl kernel.unprivileged_userns_clone=1; on Ubuntu 24.04 and later also \
                 kernel.apparmor_restrict_unprivileged_userns=0), or set sandbox = \"none\" in the \
                 config to run agents unconfined (README, section 3, \"The sandbox\")"
            )
        }),
    }
}

/// The GitHub client when the engine authenticates as a GitHub App, else `None`.
fn app_github(
    config: &Config,
    secrets: &crate::config::Secrets,
) -> anyhow::Result<Option<Arc<crate::forge::GitHub>>> {
    let Some(cfg) = &config.github else {
        return Ok(None);
    };
    let github = crate::forge::GitHub::new(cfg, secrets).context("cannot set up GitHub")?;
    Ok(github.is_app().then(|| Arc::new(github)))
}

/// Mints the engine's installation token for each project's repository (by remote URL).
async fn renew_engine_tokens(
    github: &crate::forge::GitHub,
    config: &Config,
    tokens: &crate::gitops::PerRemoteTokens,
) {
    for project in &config.projects {
        let Some(repo) = project.github_repo() else {
            continue;
        };
        match github.mint_repo_token(&repo).await {
            Ok(Some((token, _))) => {
                tokens
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(project.repo.clone(), token);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(
                project = %project.name,
                "cannot mint the engine's installation token for {repo}: {}",
                error_chain(&e)
            ),
        }
    }
}

/// Renews the engine's installation tokens every `[github] token_renewal` (they last an hour)
/// until `stop`.
async fn keep_engine_tokens(
    github: Arc<crate::forge::GitHub>,
    config: Arc<Config>,
    tokens: crate::gitops::PerRemoteTokens,
    mut stop: watch::Receiver<bool>,
) {
    let every = config
        .github
        .as_ref()
        .map_or(std::time::Duration::from_secs(30 * 60), |g| g.token_renewal);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        renew_engine_tokens(&github, &config, &tokens).await;
    }
}

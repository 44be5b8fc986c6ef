//! The `swarm` command line: run the engine, run a worker, validate task files, inspect and
//! steer tasks, migrate the database.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::Utc;
use clap::{Parser, Subcommand};
use coding_swarm::config::Config;
use coding_swarm::engine::{describe_state, Engine, RunOptions};
use coding_swarm::spec::TaskState;
use coding_swarm::store::{Store, TaskFilter, TaskRow};

#[derive(Parser)]
#[command(
    name = "swarm",
    version,
    about = "Runs AI coding agents on your repositories, driven by task files in git"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct ConfigArg {
    /// The configuration file (default: ./swarm.toml when it exists, else built-in defaults).
    #[arg(long, short, env = "SWARM_CONFIG", global = true)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine: sync repositories, dispatch tasks, report results.
    Up {
        #[command(flatten)]
        config: ConfigArg,
        /// Stop when nothing is pending, running or waiting to be reported (for scripts and CI).
        #[arg(long)]
        once: bool,
        /// First run: create a scratch repository from examples/repo-layout and run its tasks
        /// with the built-in demo agent (no credentials needed). Implies --once.
        #[arg(long)]
        demo: bool,
        /// Where --demo puts its scratch repository and data (default: a new temporary directory).
        #[arg(long, requires = "demo")]
        demo_dir: Option<PathBuf>,
    },
    /// Run one task inside a job (started by the engine's runtime).
    Worker {
        /// The run directory holding task.json (or SWARM_TASK_JSON); result.json is written there.
        #[arg(long)]
        run_dir: PathBuf,
        /// Also write a compact result here (Kubernetes keeps it as the termination message).
        #[arg(long)]
        termination_log: Option<PathBuf>,
    },
    /// The built-in demo agent (deterministic file edits; used by the `demo` profile).
    #[command(hide = true)]
    DemoAgent,
    /// Check a repository's .ai/ directory; prints path:line:column: message per problem.
    Validate {
        /// The repository root (default: the current directory).
        path: Option<PathBuf>,
    },
    /// Print the JSON Schema of task or status files (what schemas/ holds).
    #[command(hide = true)]
    Schema {
        /// task or status
        which: String,
    },
    /// Check what real runs need: the agent CLI, credentials, git identity, database, remotes.
    Doctor {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Create or update the database schema.
    Migrate {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Drop in epics for a project manager and see how they go.
    Epic {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        command: EpicCommand,
    },
    /// Inspect and steer tasks (in the database, or through a running engine with --api).
    Task {
        #[command(flatten)]
        config: ConfigArg,
        /// Talk to a running engine's API (e.g. http://127.0.0.1:8080) instead of the database.
        #[arg(long, env = "SWARM_API_URL", global = true)]
        api: Option<String>,
        #[command(subcommand)]
        command: TaskCommand,
    },
}

#[derive(Subcommand)]
enum EpicCommand {
    /// Commit a new epic for PROJECT's manager (`.ai/tasks/epic-<name>.yaml` on its default branch).
    Add {
        #[arg(long)]
        project: String,
        /// A short label for the epic (default: made from the text).
        #[arg(long)]
        name: Option<String>,
        /// What the epic is about, in plain words.
        text: String,
    },
    /// Each epic's state, progress and spend.
    List {
        #[arg(long)]
        project: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum TaskCommand {
    /// List tasks.
    List {
        #[arg(long)]
        project: Option<String>,
        /// pending, running or completed.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        addressee: Option<String>,
        #[arg(long)]
        epic: Option<String>,
        #[arg(long, default_value_t = 200)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Show a task with its result and event log. KEY may be written PROJECT/KEY.
    Show {
        key: String,
        #[arg(long)]
        project: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show the log of a task's latest run (local run directory or Kubernetes pod).
    Logs {
        key: String,
        #[arg(long)]
        project: Option<String>,
    },
    /// Stop a task: a pending one is cancelled, a running one is stopped by the engine.
    Stop {
        key: String,
        #[arg(long)]
        project: Option<String>,
    },
    /// Run a completed task again (a new generation with the same spec).
    Retry {
        key: String,
        #[arg(long)]
        project: Option<String>,
    },
}

mod remote;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet = !matches!(cli.command, Command::Up { .. } | Command::Worker { .. });
    init_tracing(quiet);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", coding_swarm::engine::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(quiet: bool) {
    let default = if quiet { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Worker {
            run_dir,
            termination_log,
        } => {
            std::fs::create_dir_all(&run_dir)
                .with_context(|| format!("cannot create {}", run_dir.display()))?;
            let run_dir = coding_swarm::worker::resolve_run_dir(&run_dir);
            // In a pod the task comes in the environment.
            let task_file = run_dir.join(coding_swarm::runtime::local::TASK_FILE);
            if let (false, Ok(json)) = (task_file.exists(), std::env::var("SWARM_TASK_JSON")) {
                std::fs::write(&task_file, json)
                    .with_context(|| format!("cannot write {}", task_file.display()))?;
            }
            let result = coding_swarm::worker::run(&run_dir);
            if let Some(path) = termination_log {
                let compact = coding_swarm::worker::compact_result(&result, 4000);
                if let Err(e) = std::fs::write(&path, compact) {
                    tracing::error!(
                        "cannot write the termination message {}: {e}",
                        path.display()
                    );
                }
            }
            Ok(ExitCode::from(coding_swarm::worker::exit_code(&result)))
        }
        Command::DemoAgent => {
            let summary = coding_swarm::demo::run_demo_agent(&std::env::current_dir()?)?;
            println!("{summary}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema { which } => {
            let schema = match which.as_str() {
                "task" => coding_swarm::spec::task_schema(),
                "status" => coding_swarm::spec::status_schema(),
                other => bail!("no schema {other:?}: expected task or status"),
            };
            println!("{}", serde_json::to_string_pretty(&schema)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { path } => validate(&path.unwrap_or_else(|| PathBuf::from("."))),
        Command::Up {
            config,
            once,
            demo,
            demo_dir,
        } => tokio_main(up(config, once, demo, demo_dir)),
        Command::Doctor { config } => tokio_main(async move {
            let config = load_config(&config)?;
            let checks = coding_swarm::doctor::run(&config).await;
            for c in &checks {
                println!("{c}");
            }
            Ok(if checks.iter().all(|c| c.ok) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }),
        Command::Migrate { config } => tokio_main(async move {
            let config = load_config(&config)?;
            let store = Store::connect_without_migrating(&config.database_url()).await?;
            store.migrate().await?;
            println!(
                "database schema is up to date ({})",
                coding_swarm::config::redact_url(&config.database_url())
            );
            Ok(ExitCode::SUCCESS)
        }),
        Command::Task {
            api: Some(url),
            command,
            ..
        } => remote::task_command(&url, command),
        Command::Task {
            config, command, ..
        } => tokio_main(task_command(config, command)),
        Command::Epic { config, command } => tokio_main(epic_command(config, command)),
    }
}

fn tokio_main(
    fut: impl std::future::Future<Output = anyhow::Result<ExitCode>>,
) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(fut)
}

fn load_config(arg: &ConfigArg) -> anyhow::Result<Config> {
    let path = match &arg.config {
        Some(p) => Some(p.clone()),
        None => Some(PathBuf::from("swarm.toml")).filter(|p| p.exists()),
    };
    Ok(Config::load(path.as_deref(), std::env::vars())?)
}

fn validate(root: &Path) -> anyhow::Result<ExitCode> {
    let problems = coding_swarm::spec::validate_repository(root)
        .with_context(|| format!("cannot read {}", root.display()))?;
    for p in &problems {
        println!("{p}");
    }
    if problems.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "{} problem{} in {}",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" },
            root.join(".ai").display()
        );
        Ok(ExitCode::FAILURE)
    }
}

async fn up(
    config_arg: ConfigArg,
    once: bool,
    demo: bool,
    demo_dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let (config, once) = if demo {
        let root = demo_dir.unwrap_or_else(coding_swarm::demo::default_root);
        println!(
            "demo: creating a scratch repository from examples/repo-layout in {}",
            root.display()
        );
        (coding_swarm::demo::scaffold(&root)?, true)
    } else {
        (load_config(&config_arg)?, once)
    };
    if config.projects.is_empty() {
        bail!("no projects configured: add a [[projects]] table to swarm.toml (see README.md), or try `swarm up --demo`");
    }
    let store = Store::connect(&config.database_url()).await?;
    tracing::info!(database = %coding_swarm::config::redact_url(&config.database_url()), projects = config.projects.len(), runtime = ?config.runtime, "engine starting");
    // Health comes first: a standby engine waiting for the lock is alive, just not ready.
    let (delivery_tx, deliveries) = tokio::sync::mpsc::channel(1000);
    // Webhooks only when something reads them: [github] and a project on GitHub.
    let on_github = config.projects.iter().any(|p| p.github_repo().is_some());
    let webhook = match (
        config.github.as_ref().filter(|_| on_github),
        std::env::var("SWARM_GITHUB_WEBHOOK_SECRET"),
    ) {
        (Some(_), Ok(secret)) if !secret.is_empty() => Some(coding_swarm::web::WebhookIn {
            secret: secret.into_bytes(),
            deliveries: delivery_tx,
        }),
        (Some(_), _) => {
            tracing::warn!("[github] is configured but SWARM_GITHUB_WEBHOOK_SECRET is not set: webhooks are refused");
            None
        }
        _ => None,
    };
    // Bound beyond this machine, the dashboard and API need a token.
    let api_token = std::env::var("SWARM_API_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    if !once
        && !config.http.listen.is_empty()
        && !coding_swarm::web::auth::is_loopback(&config.http.listen)
        && api_token.is_none()
    {
        bail!(
            "http.listen = {:?} is reachable from other machines: set SWARM_API_TOKEN (every request then needs it), or listen on 127.0.0.1",
            config.http.listen
        );
    }
    let web = (!once && !config.http.listen.is_empty()).then(|| {
        coding_swarm::web::WebState::new(
            Arc::new(config.clone()),
            store.clone(),
            webhook.clone(),
            api_token.clone(),
        )
    });
    let (web_stop_tx, web_stop_rx) = tokio::sync::watch::channel(false);
    if let Some(state) = web.clone() {
        let listen = config.http.listen.clone();
        tokio::spawn(async move {
            if let Err(e) =
                coding_swarm::web::serve(&listen, coding_swarm::web::router(state), web_stop_rx)
                    .await
            {
                tracing::error!("the HTTP server on {listen} failed: {e}");
            }
        });
    }
    let leader =
        coding_swarm::engine::leader::acquire(&config.database_url(), &config.data_dir, || {
            tracing::info!("another engine leads; waiting to take over")
        })
        .await?;
    tracing::info!("this engine leads");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    {
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
            let _ = stop_tx.send(true);
        });
    }
    let leadership_lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let (mut lost, stop_tx, flag) = (
            leader.lost.clone(),
            stop_tx.clone(),
            leadership_lost.clone(),
        );
        tokio::spawn(async move {
            while !*lost.borrow() {
                if lost.changed().await.is_err() {
                    return;
                }
            }
            tracing::error!("lost the leader lock: stopping, another engine may take over");
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = stop_tx.send(true);
        });
    }
    let progress = once.then(|| tokio::spawn(show_progress(store.clone())));
    let exe = std::env::current_exe().context("cannot find the swarm binary for workers")?;
    match config.runtime {
        coding_swarm::config::RuntimeKind::Local => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let runtime =
                coding_swarm::runtime::LocalRuntime::new(config.data_dir.join("runs"), exe, tx);
            run_engine(
                &config,
                &store,
                runtime,
                rx,
                once,
                stop_rx,
                web.as_ref(),
                deliveries,
            )
            .await?;
        }
        coding_swarm::config::RuntimeKind::Kubernetes => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let runtime =
                coding_swarm::runtime::KubeRuntime::connect(&config.kubernetes, tx).await?;
            run_engine(
                &config,
                &store,
                runtime,
                rx,
                once,
                stop_rx,
                web.as_ref(),
                deliveries,
            )
            .await?;
        }
    }
    let _ = web_stop_tx.send(true);
    drop(leader);
    if leadership_lost.load(std::sync::atomic::Ordering::SeqCst) {
        bail!("stopped: the leader lock was lost");
    }
    if let Some(p) = progress {
        p.abort();
    }
    if once {
        print_summary(&store, &config).await?;
    }
    let failed = store
        .list(&TaskFilter {
            status: Some(TaskState::Completed),
            ..TaskFilter::default()
        })
        .await?
        .iter()
        .any(|t| t.result().is_some_and(|r| !r.success));
    let sync_errors = store
        .projects()
        .await?
        .iter()
        .any(|p| p.sync_error.is_some());
    store.close().await;
    Ok(if once && (failed || sync_errors) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Runs the engine on `runtime`; with the HTTP server's state, readiness follows the runtime
/// and the metrics are the engine's.
#[allow(clippy::too_many_arguments)]
async fn run_engine<R: coding_swarm::runtime::Runtime + Clone>(
    config: &Config,
    store: &Store,
    runtime: R,
    completions: tokio::sync::mpsc::UnboundedReceiver<coding_swarm::runtime::Completion>,
    once: bool,
    stop: tokio::sync::watch::Receiver<bool>,
    web: Option<&coding_swarm::web::WebState>,
    mut deliveries: tokio::sync::mpsc::Receiver<coding_swarm::forge::Delivery>,
) -> anyhow::Result<()> {
    let mut engine =
        Engine::with_runtime(config.clone(), store.clone(), runtime.clone(), completions);
    if !once {
        if let Some(forge) =
            coding_swarm::forge::Forge::new(Arc::new(config.clone()), store.clone())?
        {
            tracing::info!("GitHub: reporting to pull requests and taking webhooks");
            tokio::spawn(forge.clone().run(stop.clone()));
            let triggers = engine.sync_triggers();
            tokio::spawn(async move {
                while let Some(d) = deliveries.recv().await {
                    forge.handle(&d, &triggers).await;
                }
            });
        }
    }
    if let Some(web) = web {
        engine = engine.with_metrics(web.metrics.clone());
        let for_ready = runtime.clone();
        let ready: coding_swarm::web::ReadyCheck = Arc::new(move || {
            let rt = for_ready.clone();
            Box::pin(async move {
                coding_swarm::runtime::Runtime::ready(&rt)
                    .await
                    .map_err(|e| coding_swarm::engine::error_chain(&e))
            })
        });
        let _ = web.runtime_ready.set(ready);
        let rt = runtime.clone();
        let logs: coding_swarm::web::LogsFn = Arc::new(move |run: String| {
            let rt = rt.clone();
            Box::pin(async move {
                coding_swarm::runtime::Runtime::logs(&rt, &run)
                    .await
                    .map_err(|e| coding_swarm::engine::error_chain(&e))
            })
        });
        let _ = web.runtime_logs.set(logs);
        tokio::spawn(coding_swarm::web::api::publish_changes(
            web.clone(),
            stop.clone(),
        ));
    }
    engine.metrics().leader.set(1);
    engine.run(RunOptions { once }, stop).await
}

async fn show_progress(store: Store) {
    let mut last = None;
    loop {
        if let Ok(c) = store.counts().await {
            let line = format!(
                "pending {}, running {}, completed {}",
                c.pending, c.running, c.completed
            );
            if last.as_ref() != Some(&line) {
                println!("  {line}");
                last = Some(line);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn print_summary(store: &Store, config: &Config) -> anyhow::Result<()> {
    println!();
    for p in store.projects().await? {
        if let Some(e) = &p.sync_error {
            println!("project {}: sync error: {e}", p.name);
        }
    }
    for e in store.spec_errors(None).await? {
        println!(
            "{}: {}:{}:{}: {}",
            e.project, e.path, e.line, e.col, e.message
        );
    }
    let tasks = store.list(&TaskFilter::default()).await?;
    for t in &tasks {
        let extra = t
            .result()
            .map(|r| {
                r.commit_sha
                    .as_deref()
                    .map(|c| {
                        format!(
                            " -> {} @ {}",
                            r.branch.as_deref().unwrap_or(&t.branch),
                            &c[..c.len().min(10)]
                        )
                    })
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        println!("{}/{}: {}{extra}", t.project, t.key, describe_state(t));
    }
    for p in &config.projects {
        println!("\nresults of {} are in {}:", p.name, p.repo);
        println!(
            "  branches swarm/*, status files in .ai/status/ on {}",
            p.default_branch
        );
        println!(
            "  see them with: git clone {} && git -C <clone> log --all --oneline",
            p.repo
        );
    }
    println!(
        "engine data (database, run logs) is in {}",
        config.data_dir.display()
    );
    Ok(())
}

async fn epic_command(config_arg: ConfigArg, command: EpicCommand) -> anyhow::Result<ExitCode> {
    let config = load_config(&config_arg)?;
    match command {
        EpicCommand::Add {
            project,
            name,
            text,
        } => {
            let submitted =
                coding_swarm::epic::submit(&config, &project, &text, name.as_deref()).await?;
            println!(
                "epic {} committed to {} as {} ({}); the project manager takes it from here",
                submitted.epic,
                submitted.project,
                submitted.path,
                &submitted.commit[..10]
            );
        }
        EpicCommand::List { project, json } => {
            let store = Store::connect(&config.database_url()).await?;
            let epics = store.epics(project.as_deref()).await?;
            let mut rows = Vec::new();
            for e in &epics {
                let tasks = store
                    .list(&TaskFilter {
                        project: Some(e.project.clone()),
                        epic: Some(e.name.clone()),
                        limit: Some(100_000),
                        ..TaskFilter::default()
                    })
                    .await?;
                let work: Vec<&TaskRow> = tasks
                    .iter()
                    .filter(|t| t.origin == "file" && !t.addressee.starts_with("project-mgr-"))
                    .collect();
                let done = work
                    .iter()
                    .filter(|t| t.state() == TaskState::Completed)
                    .count();
                rows.push(serde_json::json!({
                    "project": e.project, "epic": e.name, "state": e.state, "reason": e.reason,
                    "tasks_done": done, "tasks": work.len(), "activations": e.activations,
                    "consecutive_failures": e.consecutive_failures, "spend_usd": e.spend_usd,
                }));
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<14} {:<28} {:<9} {:>9} {:>9} {:>11}  {}",
                    "PROJECT", "EPIC", "STATE", "PROGRESS", "SPEND", "ACTIVATIONS", "REASON"
                );
                for r in rows {
                    println!(
                        "{:<14} {:<28} {:<9} {:>9} {:>9} {:>11}  {}",
                        r["project"].as_str().unwrap_or(""),
                        r["epic"].as_str().unwrap_or(""),
                        r["state"].as_str().unwrap_or(""),
                        format!("{}/{}", r["tasks_done"], r["tasks"]),
                        format!("${:.2}", r["spend_usd"].as_f64().unwrap_or(0.0)),
                        r["activations"],
                        r["reason"].as_str().unwrap_or("")
                    );
                }
            }
            store.close().await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Finds the one task a person means by KEY (or PROJECT/KEY, or --project).
async fn find_task(store: &Store, key: &str, project: Option<&str>) -> anyhow::Result<TaskRow> {
    let (project, key) = match (project, key.split_once('/')) {
        (Some(p), _) => (Some(p.to_string()), key.to_string()),
        (None, Some((p, k))) => (Some(p.to_string()), k.to_string()),
        (None, None) => (None, key.to_string()),
    };
    match project {
        Some(p) => store
            .task(&p, &key)
            .await?
            .with_context(|| format!("no task {p}/{key}")),
        None => {
            let mut found = store.tasks_with_key(&key).await?;
            match found.len() {
                0 => bail!("no task {key} in any project"),
                1 => Ok(found.remove(0)),
                _ => bail!(
                    "task {key} exists in several projects ({}); say which with --project or PROJECT/KEY",
                    found.iter().map(|t| t.project.as_str()).collect::<Vec<_>>().join(", ")
                ),
            }
        }
    }
}

async fn task_command(config_arg: ConfigArg, command: TaskCommand) -> anyhow::Result<ExitCode> {
    let config = load_config(&config_arg)?;
    let store = Store::connect(&config.database_url()).await?;
    let who = std::env::var("USER").unwrap_or_else(|_| "a person".into());
    match command {
        TaskCommand::List {
            project,
            status,
            addressee,
            epic,
            limit,
            json,
        } => {
            let status = match status.as_deref() {
                None => None,
                Some(s) => Some(TaskState::parse(s).with_context(|| {
                    format!("--status {s:?}: expected pending, running or completed")
                })?),
            };
            let rows = store
                .list(&TaskFilter {
                    project,
                    status,
                    addressee,
                    epic,
                    limit: Some(limit),
                    offset: None,
                })
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<16} {:<28} {:<24} {:<24} {:>3} {:>3}",
                    "PROJECT", "KEY", "ADDRESSEE", "STATUS", "GEN", "ATT"
                );
                for t in rows {
                    println!(
                        "{:<16} {:<28} {:<24} {:<24} {:>3} {:>3}",
                        t.project,
                        t.key,
                        t.addressee,
                        describe_state(&t),
                        t.generation,
                        t.attempts
                    );
                }
            }
        }
        TaskCommand::Show { key, project, json } => {
            let task = find_task(&store, &key, project.as_deref()).await?;
            let events = store.events(&task.project, &task.key).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({ "task": task, "events": events })
                    )?
                );
            } else {
                println!(
                    "{}/{}  {}  (generation {}, attempt {})",
                    task.project,
                    task.key,
                    describe_state(&task),
                    task.generation,
                    task.attempts
                );
                println!("addressee: {}\nbranch:    {}", task.addressee, task.branch);
                if let Some(r) = task.result() {
                    println!("result:\n{}", serde_json::to_string_pretty(r)?);
                }
                println!("prompt:\n{}", task.prompt.trim_end());
                println!("events:");
                for e in events {
                    println!(
                        "  {}  g{}  {:<16} {}",
                        e.at.format("%Y-%m-%d %H:%M:%S"),
                        e.generation,
                        e.kind,
                        e.message
                    );
                }
            }
        }
        TaskCommand::Stop { key, project } => {
            let task = find_task(&store, &key, project.as_deref()).await?;
            let was = store
                .request_stop(&task.project, &task.key, &who, Utc::now())
                .await?;
            match was {
                TaskState::Running => println!(
                    "stop requested: the engine stops {}/{} at its next pass",
                    task.project, task.key
                ),
                _ => println!("{}/{} cancelled before it ran", task.project, task.key),
            }
        }
        TaskCommand::Logs { key, project } => {
            let task = find_task(&store, &key, project.as_deref()).await?;
            if task.attempts == 0 {
                bail!("{}/{} has not run yet", task.project, task.key);
            }
            let name = coding_swarm::runtime::run_name(
                &task.project,
                &task.key,
                task.generation,
                task.attempts,
            );
            let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
            let log = match config.runtime {
                coding_swarm::config::RuntimeKind::Local => {
                    let rt = coding_swarm::runtime::LocalRuntime::new(
                        config.data_dir.join("runs"),
                        std::env::current_exe()?,
                        tx,
                    );
                    coding_swarm::runtime::Runtime::logs(&rt, &name).await?
                }
                coding_swarm::config::RuntimeKind::Kubernetes => {
                    let rt =
                        coding_swarm::runtime::KubeRuntime::connect(&config.kubernetes, tx).await?;
                    coding_swarm::runtime::Runtime::logs(&rt, &name).await?
                }
            };
            print!("{log}");
        }
        TaskCommand::Retry { key, project } => {
            let task = find_task(&store, &key, project.as_deref()).await?;
            let generation = store
                .retry(&task.project, &task.key, &who, Utc::now())
                .await?;
            println!(
                "{}/{} is pending again as generation {generation}",
                task.project, task.key
            );
        }
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

//! The bodies of the `swarm` commands that talk to the database or run the engine: what they
//! print and their exit codes. `main.rs` parses the arguments and calls these.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::sync::watch;

use super::{App, Ended};
use crate::config::{Config, RuntimeKind, Secrets};
use crate::gitops::GitAuth;
use crate::model::transition::StopOutcome;
use crate::model::{describe_state, Origin, Role, TaskRow};
use crate::spec::TaskState;
use crate::store::{Store, TaskFilter};

/// `swarm up`: runs the engine until a signal (or, with `once`, until all work is done and
/// reported; then prints a summary and fails when a task failed or a project did not sync).
pub async fn up(config: Config, secrets: Secrets, once: bool) -> anyhow::Result<ExitCode> {
    let app = App {
        config,
        secrets,
        worker_exe: std::env::current_exe().context("cannot find the swarm binary for workers")?,
        once,
    };
    let store = app.store().await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        let _ = stop_tx.send(true);
    });
    let progress = once.then(|| tokio::spawn(show_progress(store.clone())));
    let ended = app.run(&store, stop_rx).await?;
    if ended == Ended::LeadershipLost {
        bail!("stopped: the leader lock was lost");
    }
    if let Some(p) = progress {
        p.abort();
    }
    if once {
        print_summary(&store, &app.config).await?;
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
            .and_then(|r| {
                r.commit_sha.as_deref().map(|c| {
                    format!(
                        " -> {} @ {}",
                        r.branch.as_deref().unwrap_or(&t.branch),
                        crate::display::short(c)
                    )
                })
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

/// How `swarm validate` prints its problems.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ValidateFormat {
    Text,
    Json,
    Github,
}

/// `swarm validate`: prints each problem of the repository's `.ai/` directory.
pub fn validate(root: &Path, format: ValidateFormat) -> anyhow::Result<ExitCode> {
    let problems = crate::spec::validate_repository(root)
        .with_context(|| format!("cannot read {}", root.display()))?;
    match format {
        ValidateFormat::Text => {
            for p in &problems {
                println!("{p}");
            }
        }
        ValidateFormat::Json => {
            let items: Vec<serde_json::Value> = problems
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "path": p.path,
                        "line": p.error.line,
                        "column": p.error.column,
                        "message": p.error.message,
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&items)?);
        }
        ValidateFormat::Github => {
            for p in &problems {
                println!("{}", github_annotation(p));
            }
        }
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

/// A GitHub Actions workflow command for `p`: `::error file=F,line=L,col=C::MESSAGE`, with
/// `%`, CR and LF escaped in the message, and `:` and `,` too in the properties (GitHub's
/// "Workflow commands" escaping).
pub fn github_annotation(p: &crate::spec::Problem) -> String {
    fn data(s: &str) -> String {
        s.replace('%', "%25")
            .replace('\r', "%0D")
            .replace('\n', "%0A")
    }
    fn property(s: &str) -> String {
        data(s).replace(':', "%3A").replace(',', "%2C")
    }
    format!(
        "::error file={},line={},col={}::{}",
        property(&p.path),
        p.error.line,
        p.error.column,
        data(&p.error.message)
    )
}

/// `swarm doctor`: one line per check (or one JSON object each); fails when one fails.
pub async fn doctor(config: &Config, secrets: &Secrets, json: bool) -> anyhow::Result<ExitCode> {
    let checks = crate::doctor::run(config, secrets).await;
    if json {
        let items: Vec<serde_json::Value> = checks
            .iter()
            .map(|c| serde_json::json!({"ok": c.ok, "name": c.name, "detail": c.detail}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
    } else {
        for c in &checks {
            println!("{c}");
        }
    }
    Ok(if checks.iter().all(|c| c.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `swarm migrate`: brings the database schema up to date.
pub async fn migrate(config: &Config) -> anyhow::Result<ExitCode> {
    let store = Store::connect_without_migrating(&config.database_url()).await?;
    store.migrate().await?;
    println!(
        "database schema is up to date ({})",
        crate::config::redact_url(&config.database_url())
    );
    Ok(ExitCode::SUCCESS)
}

/// `swarm epic add`: commits a new epic for the project manager.
pub async fn epic_add(
    config: &Config,
    secrets: &Secrets,
    project: &str,
    name: Option<&str>,
    text: &str,
) -> anyhow::Result<ExitCode> {
    let auth = GitAuth::new(secrets.git_token.clone());
    let submitted = crate::epic::submit(config, project, text, name, &auth).await?;
    println!(
        "epic {} committed to {} as {} ({}); the project manager takes it from here",
        submitted.epic,
        submitted.project,
        submitted.path,
        crate::display::short(&submitted.commit)
    );
    Ok(ExitCode::SUCCESS)
}

/// `swarm epic list`: each epic's state, progress and spend.
pub async fn epic_list(
    config: &Config,
    project: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let store = Store::connect(&config.database_url()).await?;
    let epics = store.epics(project).await?;
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
            .filter(|t| t.origin == Origin::File && t.role() != Role::Manager)
            .collect();
        let done = work
            .iter()
            .filter(|t| t.status == TaskState::Completed)
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
            "{:<14} {:<28} {:<9} {:>9} {:>9} {:>11}  REASON",
            "PROJECT", "EPIC", "STATE", "PROGRESS", "SPEND", "ACTIVATIONS"
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
    Ok(ExitCode::SUCCESS)
}

/// Finds the one task a person means by KEY (or PROJECT/KEY, or `project`).
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

/// What `swarm task` does.
#[derive(Debug, Clone)]
pub enum TaskAction {
    List {
        filter: TaskFilter,
        json: bool,
    },
    Show {
        key: String,
        project: Option<String>,
        json: bool,
    },
    Logs {
        key: String,
        project: Option<String>,
    },
    Stop {
        key: String,
        project: Option<String>,
    },
    Retry {
        key: String,
        project: Option<String>,
    },
}

/// `swarm task ...` on the database; `who` is the person, for the event log.
pub async fn task(config: &Config, who: &str, action: TaskAction) -> anyhow::Result<ExitCode> {
    let store = Store::connect(&config.database_url()).await?;
    match action {
        TaskAction::List { filter, json } => {
            let rows = store.list(&filter).await?;
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
        TaskAction::Show { key, project, json } => {
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
        TaskAction::Stop { key, project } => {
            let task = find_task(&store, &key, project.as_deref()).await?;
            match crate::steer::stop(&store, &task.project, &task.key, who).await? {
                StopOutcome::StopRequested => println!(
                    "stop requested: the engine stops {}/{} at its next pass",
                    task.project, task.key
                ),
                _ => println!("{}/{} cancelled before it ran", task.project, task.key),
            }
        }
        TaskAction::Logs { key, project } => {
            let task = find_task(&store, &key, project.as_deref()).await?;
            if task.attempts == 0 {
                bail!("{}/{} has not run yet", task.project, task.key);
            }
            let name = task.run_name();
            let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
            let log = match config.runtime {
                RuntimeKind::Local => {
                    let rt = crate::runtime::LocalRuntime::new(
                        config.data_dir.join("runs"),
                        PathBuf::new(),
                        tx,
                    );
                    crate::runtime::Runtime::logs(&rt, &name).await?
                }
                RuntimeKind::Kubernetes => {
                    let rt = crate::runtime::KubeRuntime::connect(&config.kubernetes, tx).await?;
                    crate::runtime::Runtime::logs(&rt, &name).await?
                }
            };
            print!("{log}");
        }
        TaskAction::Retry { key, project } => {
            let task = find_task(&store, &key, project.as_deref()).await?;
            let generation = crate::steer::retry(&store, &task.project, &task.key, who).await?;
            println!(
                "{}/{} is pending again as generation {generation}",
                task.project, task.key
            );
        }
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

//! The `swarm` command line: arguments only. Each command's body is in the library
//! (`coding_swarm::app::commands`, the worker, the remote client); the environment is read
//! here, once.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use coding_swarm::app::commands::{self, TaskAction};
use coding_swarm::config::{Config, Secrets};
use coding_swarm::spec::TaskState;
use coding_swarm::store::TaskFilter;
use coding_swarm::worker::Phase;

#[derive(Parser)]
#[command(
    name = "swarm",
    version,
    about = "Runs AI coding agents on your repositories, driven by task files in git"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines are written: `text` for people; `json`, one object a line with the
    /// fields of its spans (sync, claim, launch, run_end, report, github_write,
    /// webhook_delivery: project, task, run), for log shippers.
    #[arg(
        long,
        value_enum,
        env = "SWARM_LOG_FORMAT",
        global = true,
        default_value = "text"
    )]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
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
        /// Read the task from this file when the run directory has no task.json (a pod's
        /// mounted ConfigMap).
        #[arg(long)]
        task_file: Option<PathBuf>,
        /// Which part of the run: `all` (the local runtime), or one container's part of a
        /// Kubernetes pod: `checkout` (with the git credential), `agent` (without it), `push`.
        #[arg(long, value_enum, default_value = "all")]
        phase: WorkerPhase,
        /// Where `checkout` leaves what `push` needs, out of the agent's reach (default: the
        /// run directory).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// The built-in demo agent (deterministic file edits; used by the `demo` profile).
    #[command(hide = true)]
    DemoAgent,
    /// Check a repository's .ai/ directory; prints path:line:column: message per problem.
    Validate {
        /// The repository root (default: the current directory).
        path: Option<PathBuf>,
        /// `text` (path:line:column: message), `json` (an array of objects), or `github`
        /// (workflow annotations: `::error file=...,line=...,col=...::message`).
        #[arg(long, value_enum, default_value = "text")]
        format: commands::ValidateFormat,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to standard output.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) to standard output: `swarm man | man -l -`.
    Man,
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
        /// One JSON object a check: `ok`, `name`, `detail`.
        #[arg(long)]
        json: bool,
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

/// A task state, as `--status` takes it.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum StatusArg {
    Pending,
    Running,
    Completed,
}

impl From<StatusArg> for TaskState {
    fn from(s: StatusArg) -> Self {
        match s {
            StatusArg::Pending => TaskState::Pending,
            StatusArg::Running => TaskState::Running,
            StatusArg::Completed => TaskState::Completed,
        }
    }
}

#[derive(Subcommand)]
pub(crate) enum TaskCommand {
    /// List tasks.
    List {
        /// Only this project's tasks.
        #[arg(long)]
        project: Option<String>,
        /// Only tasks in this state.
        #[arg(long, value_enum)]
        status: Option<StatusArg>,
        /// Only this addressee's tasks.
        #[arg(long)]
        addressee: Option<String>,
        /// Only this epic's tasks.
        #[arg(long)]
        epic: Option<String>,
        /// At most this many tasks.
        #[arg(long, default_value_t = 200)]
        limit: u32,
        /// One JSON array instead of a table.
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

#[cfg(feature = "otel")]
mod otel;
mod remote;

fn main() -> ExitCode {
    // Another process of this user (an agent, above all) may not read this one's memory or
    // /proc/<pid>/environ, where the engine's secrets and the worker's git token are. Root
    // still can: run the engine as a user of its own.
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    let cli = Cli::parse();
    let quiet = !matches!(cli.command, Command::Up { .. } | Command::Worker { .. });
    let telemetry = init_tracing(quiet, cli.log_format);
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", coding_swarm::display::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    };
    drop(telemetry);
    code
}

/// Logs to stderr (filtered by `RUST_LOG`); with the `otel` feature and an OTLP endpoint in
/// the environment, the spans are exported too (flushed when what this returns is dropped).
fn init_tracing(quiet: bool, format: LogFormat) -> Telemetry {
    use tracing_subscriber::prelude::*;
    let default = if quiet { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let fmt = match format {
        LogFormat::Text => fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
        LogFormat::Json => fmt
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .boxed(),
    };
    let registry = tracing_subscriber::registry().with(fmt.with_filter(filter));
    #[cfg(feature = "otel")]
    {
        let (layer, export) = otel::layer();
        registry.with(layer).init();
        Telemetry { _export: export }
    }
    #[cfg(not(feature = "otel"))]
    {
        registry.init();
        Telemetry {}
    }
}

/// What outlives the command: the span export, flushed when dropped (nothing without the
/// `otel` feature).
struct Telemetry {
    #[cfg(feature = "otel")]
    _export: Option<otel::Export>,
}

/// The parts of a worker's run (`coding_swarm::worker::Phase`).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum WorkerPhase {
    All,
    Checkout,
    Agent,
    Push,
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Worker {
            run_dir,
            termination_log,
            task_file,
            phase,
            state_dir,
        } => {
            let task_json = match task_file {
                Some(file) => Some(
                    std::fs::read_to_string(&file)
                        .with_context(|| format!("cannot read the task {}", file.display()))?,
                ),
                None => std::env::var("SWARM_TASK_JSON").ok(),
            };
            Ok(ExitCode::from(coding_swarm::worker::run_job(
                &run_dir,
                task_json,
                termination_log.as_deref(),
                match phase {
                    WorkerPhase::All => Phase::All,
                    WorkerPhase::Checkout => Phase::Checkout,
                    WorkerPhase::Agent => Phase::Agent,
                    WorkerPhase::Push => Phase::Push,
                },
                state_dir.as_deref(),
            )?))
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
        Command::Validate { path, format } => {
            commands::validate(&path.unwrap_or_else(|| PathBuf::from(".")), format)
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd, "swarm", &mut out);
            // A closed pipe (`| head`) is not an error of ours.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &out);
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command().name("swarm");
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut out)?;
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &out);
            Ok(ExitCode::SUCCESS)
        }
        Command::Up {
            config,
            once,
            demo,
            demo_dir,
        } => tokio_main(async move {
            let (config, once) = if demo {
                let root = demo_dir.unwrap_or_else(coding_swarm::demo::default_root);
                println!(
                    "demo: creating a scratch repository from examples/repo-layout in {}",
                    root.display()
                );
                (coding_swarm::demo::scaffold(&root)?, true)
            } else {
                (load_config(&config)?, once)
            };
            commands::up(config, secrets(), once).await
        }),
        Command::Doctor { config, json } => {
            tokio_main(
                async move { commands::doctor(&load_config(&config)?, &secrets(), json).await },
            )
        }
        Command::Migrate { config } => {
            tokio_main(async move { commands::migrate(&load_config(&config)?).await })
        }
        Command::Task {
            api: Some(url),
            command,
            ..
        } => remote::task_command(&url, command),
        Command::Task {
            config, command, ..
        } => tokio_main(async move {
            let config = load_config(&config)?;
            let who = std::env::var("USER").unwrap_or_else(|_| "a person".into());
            commands::task(&config, &who, task_action(command)?).await
        }),
        Command::Epic { config, command } => tokio_main(async move {
            let config = load_config(&config)?;
            match command {
                EpicCommand::Add {
                    project,
                    name,
                    text,
                } => {
                    commands::epic_add(&config, &secrets(), &project, name.as_deref(), &text).await
                }
                EpicCommand::List { project, json } => {
                    commands::epic_list(&config, project.as_deref(), json).await
                }
            }
        }),
    }
}

/// The engine's credentials, from its environment.
fn secrets() -> Secrets {
    Secrets::from_vars(std::env::vars())
}

fn task_action(command: TaskCommand) -> anyhow::Result<TaskAction> {
    Ok(match command {
        TaskCommand::List {
            project,
            status,
            addressee,
            epic,
            limit,
            json,
        } => {
            let status = status.map(TaskState::from);
            TaskAction::List {
                filter: TaskFilter {
                    project,
                    status,
                    addressee,
                    epic,
                    limit: Some(limit),
                    offset: None,
                },
                json,
            }
        }
        TaskCommand::Show { key, project, json } => TaskAction::Show { key, project, json },
        TaskCommand::Logs { key, project } => TaskAction::Logs { key, project },
        TaskCommand::Stop { key, project } => TaskAction::Stop { key, project },
        TaskCommand::Retry { key, project } => TaskAction::Retry { key, project },
    })
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

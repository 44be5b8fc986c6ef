//! The figures of BENCHMARKS.md: sync, dispatch, wake-up latency, webhook acknowledgement and
//! the idle engine, each on Postgres and on SQLite, with a no-op runtime where the jobs
//! themselves are not the point; and, with `--peer`, graphile-worker on the same Postgres.
//!
//! ```text
//! cargo bench --bench figures                          # everything, both backends
//! cargo bench --bench figures -- --only sync,dispatch --backend postgres
//! cargo bench --bench figures -- --quick               # fewer rounds and files, a smoke run
//! cargo bench --bench figures -- --only latency --latency-gap-ms 300
//! cargo bench --bench figures -- --only dispatch --peer   # needs: cd bench/graphile && npm ci
//! ```
//!
//! Postgres comes from `SWARM_BENCH_PG` (an admin URL; default the local server), where every
//! benchmark makes and drops its own database. Progress goes to stderr; the results, as JSON,
//! to stdout and to `target/bench/figures.json`.

#[path = "rows/checkout.rs"]
mod checkout_rows;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coding_swarm::config::{Config, ProjectConfig};
use coding_swarm::engine::{Engine, RunOptions};
use coding_swarm::model::{plan_sync, FileChange};
use coding_swarm::runtime::{Completion, Launch, Runtime, RuntimeError};
use coding_swarm::spec::RunResult;
use coding_swarm::store::Store;
use coding_swarm::store::SyncScope;
use coding_swarm::sync::sync_project;
use git2::{Oid, Repository, Signature};
use serde_json::{json, Value};
use sqlx::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const SWARM: &str = env!("CARGO_BIN_EXE_swarm");

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

struct Options {
    backends: Vec<Backend>,
    only: Option<HashSet<String>>,
    quick: bool,
    peer: bool,
    /// Pause between latency samples (the status report of each sample's task runs 200 ms
    /// after it ends; a pause above that keeps the reporter out of the next sample).
    latency_gap: Duration,
}

fn options() -> Options {
    let mut o = Options {
        backends: vec![Backend::Postgres, Backend::Sqlite],
        only: None,
        quick: false,
        peer: false,
        latency_gap: Duration::from_millis(5),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--peer" => o.peer = true,
            "--latency-gap-ms" => {
                o.latency_gap = Duration::from_millis(
                    args.next()
                        .and_then(|v| v.parse().ok())
                        .expect("--latency-gap-ms needs a number"),
                )
            }
            "--only" => {
                o.only = Some(
                    args.next()
                        .expect("--only needs a list")
                        .split(',')
                        .map(str::to_string)
                        .collect(),
                )
            }
            "--backend" => {
                o.backends = match args.next().as_deref() {
                    Some("postgres") => vec![Backend::Postgres],
                    Some("sqlite") => vec![Backend::Sqlite],
                    Some("both") => vec![Backend::Postgres, Backend::Sqlite],
                    other => panic!("--backend postgres|sqlite|both, not {other:?}"),
                }
            }
            // cargo bench passes --bench to every bench target.
            "--bench" => {}
            other => panic!("unknown option {other}"),
        }
    }
    o
}

impl Options {
    fn wants(&self, name: &str) -> bool {
        self.only.as_ref().is_none_or(|o| o.contains(name))
    }
}

// ---- statistics ---------------------------------------------------------------------------

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// p50, p90, p99 and max of samples in milliseconds.
fn summary_ms(samples: &[Duration]) -> Value {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    json!({
        "n": ms.len(),
        "p50": round3(percentile(&ms, 50.0)),
        "p90": round3(percentile(&ms, 90.0)),
        "p99": round3(percentile(&ms, 99.0)),
        "max": round3(ms.last().copied().unwrap_or(f64::NAN)),
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(&v, 50.0)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

// ---- fixtures -----------------------------------------------------------------------------

/// A fresh database for one benchmark; dropped (Postgres) or deleted (SQLite) after.
struct Db {
    url: String,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

static DB_COUNTER: AtomicU64 = AtomicU64::new(0);

fn pg_admin() -> String {
    std::env::var("SWARM_BENCH_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

impl Db {
    async fn new(backend: Backend) -> Db {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                Db {
                    url: format!(
                        "sqlite://{}?mode=rwc",
                        dir.path().join("swarm.db").display()
                    ),
                    pg_name: None,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let admin = pg_admin();
                let name = format!(
                    "swarm_bench_{}_{}",
                    std::process::id(),
                    DB_COUNTER.fetch_add(1, Ordering::SeqCst)
                );
                let mut c = sqlx::PgConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| panic!("Postgres at {admin} (SWARM_BENCH_PG): {e}"));
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut c)
                    .await
                    .unwrap();
                let (base, _) = admin.rsplit_once('/').expect("an URL ending in /DATABASE");
                Db {
                    url: format!("{base}/{name}"),
                    pg_name: Some(name),
                    _dir: None,
                }
            }
        }
    }

    async fn drop(self) {
        if let Some(name) = &self.pg_name {
            let mut c = sqlx::PgConnection::connect(&pg_admin()).await.unwrap();
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut c)
                .await
                .unwrap();
        }
    }
}

/// A bare repository whose `main` holds `.ai/tasks/` with generated task files.
struct Remote {
    dir: tempfile::TempDir,
    repo: Repository,
    files: usize,
}

fn task_yaml(i: usize, addressees: usize, round: usize) -> String {
    format!(
        "addressee: a{:04}\nprompt: |\n  Task {i}, revision {round}: change the greeting in src/lib.rs and add a test.\nkind: implement\n",
        i % addressees
    )
}

fn task_name(i: usize) -> String {
    format!("t{i:06}.yaml")
}

impl Remote {
    fn new(files: usize, addressees: usize) -> Remote {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path().join("remote.git")).unwrap();
        let r = Remote { dir, repo, files };
        let tasks = r.tasks_tree(files, addressees);
        r.commit_tasks(tasks, None, "tasks");
        r
    }

    /// A `.ai/tasks` tree of `files` generated task files.
    fn tasks_tree(&self, files: usize, addressees: usize) -> Oid {
        let mut tb = self.repo.treebuilder(None).unwrap();
        for i in 0..files {
            let blob = self
                .repo
                .blob(task_yaml(i, addressees, 0).as_bytes())
                .unwrap();
            tb.insert(task_name(i), blob, 0o100644).unwrap();
        }
        tb.write().unwrap()
    }

    /// Replaces the task files with `files` new ones, in one commit on top of `main`.
    fn commit_new_tasks(&self, files: usize, addressees: usize) {
        let head = self.repo.refname_to_id("refs/heads/main").unwrap();
        let tasks = self.tasks_tree(files, addressees);
        self.commit_tasks(tasks, Some(head), "new tasks");
    }

    fn url(&self) -> String {
        self.dir.path().join("remote.git").display().to_string()
    }

    fn commit_tasks(&self, tasks: Oid, parent: Option<Oid>, message: &str) -> Oid {
        let repo = &self.repo;
        let mut ai = repo.treebuilder(None).unwrap();
        ai.insert("tasks", tasks, 0o040000).unwrap();
        let plan = repo.blob(b"# Plan\n").unwrap();
        ai.insert("plan.md", plan, 0o100644).unwrap();
        let ai = ai.write().unwrap();
        let mut root = repo.treebuilder(None).unwrap();
        root.insert(".ai", ai, 0o040000).unwrap();
        let readme = repo.blob(b"# bench\n").unwrap();
        root.insert("README.md", readme, 0o100644).unwrap();
        let root = repo.find_tree(root.write().unwrap()).unwrap();
        let sig = Signature::now("bench", "bench@example.com").unwrap();
        let parents: Vec<git2::Commit> = parent
            .map(|p| repo.find_commit(p).unwrap())
            .into_iter()
            .collect();
        let parents: Vec<&git2::Commit> = parents.iter().collect();
        let id = repo
            .commit(None, &sig, &sig, message, &root, &parents)
            .unwrap();
        repo.reference("refs/heads/main", id, true, message)
            .unwrap();
        id
    }

    /// Adds the task file `key` on top of `main` and moves `main` only from the head it read,
    /// so a status commit the engine pushed meanwhile is never overwritten (it tries again).
    fn add_task(&self, key: &str, yaml: &str) -> Oid {
        loop {
            let head = self.repo.refname_to_id("refs/heads/main").unwrap();
            let commit = self.repo.find_commit(head).unwrap();
            let mut index = git2::Index::new().unwrap();
            index.read_tree(&commit.tree().unwrap()).unwrap();
            let blob = self.repo.blob(yaml.as_bytes()).unwrap();
            let path = format!(".ai/tasks/{key}.yaml");
            let entry = git2::IndexEntry {
                ctime: git2::IndexTime::new(0, 0),
                mtime: git2::IndexTime::new(0, 0),
                dev: 0,
                ino: 0,
                mode: 0o100644,
                uid: 0,
                gid: 0,
                file_size: yaml.len() as u32,
                id: blob,
                flags: path.len() as u16,
                flags_extended: 0,
                path: path.into_bytes(),
            };
            index.add(&entry).unwrap();
            let tree = self
                .repo
                .find_tree(index.write_tree_to(&self.repo).unwrap())
                .unwrap();
            let sig = Signature::now("bench", "bench@example.com").unwrap();
            let id = self
                .repo
                .commit(None, &sig, &sig, &format!("add {key}"), &tree, &[&commit])
                .unwrap();
            if self
                .repo
                .reference_matching("refs/heads/main", id, true, head, "add a task")
                .is_ok()
            {
                return id;
            }
        }
    }

    /// Changes the prompt of one task file and commits.
    fn change_one(&self, i: usize, round: usize, addressees: usize) {
        let head = self.repo.refname_to_id("refs/heads/main").unwrap();
        let tree = self.repo.find_commit(head).unwrap().tree().unwrap();
        let tasks = tree
            .get_path(Path::new(".ai/tasks"))
            .unwrap()
            .to_object(&self.repo)
            .unwrap()
            .peel_to_tree()
            .unwrap();
        let mut tb = self.repo.treebuilder(Some(&tasks)).unwrap();
        let blob = self
            .repo
            .blob(task_yaml(i, addressees, round).as_bytes())
            .unwrap();
        tb.insert(task_name(i), blob, 0o100644).unwrap();
        let tasks = tb.write().unwrap();
        self.commit_tasks(tasks, Some(head), &format!("change {i}"));
    }
}

fn config(data_dir: &Path, db: &Db, projects: &[(String, String)], extra: &str) -> Config {
    let mut text = format!(
        "data_dir = {:?}\ndatabase_url = {:?}\ndefault_agent = \"noop\"\npoll_interval = \"1h\"\n{extra}\n[agents.noop]\ncommand = [\"true\"]\n",
        data_dir.display().to_string(),
        db.url
    );
    for (name, url) in projects {
        text.push_str(&format!(
            "\n[[projects]]\nname = {name:?}\nrepo = {url:?}\ndefault_branch = \"main\"\n"
        ));
    }
    Config::parse(&text, "bench config", data_dir, std::iter::empty())
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn project(cfg: &Config) -> ProjectConfig {
    cfg.projects[0].clone()
}

// ---- the no-op runtime ----------------------------------------------------------------------

/// Completes every run at once, successfully, and tells the benchmark when it launched.
struct NoopRuntime {
    completions: mpsc::UnboundedSender<Completion>,
    launched: Option<mpsc::UnboundedSender<(String, Instant)>>,
    count: Arc<AtomicU64>,
}

impl Runtime for NoopRuntime {
    async fn launch(&self, launch: Launch) -> Result<(), RuntimeError> {
        let now = Instant::now();
        self.count.fetch_add(1, Ordering::SeqCst);
        if let Some(tx) = &self.launched {
            let _ = tx.send((launch.task.key.clone(), now));
        }
        let result = RunResult {
            success: true,
            summary: Some("nothing to do".into()),
            started_at: Some(chrono::Utc::now()),
            finished_at: Some(chrono::Utc::now()),
            ..RunResult::default()
        };
        let _ = self.completions.send(Completion {
            task_id: launch.task_id,
            attempt: launch.attempt,
            run_name: launch.run_name,
            result,
        });
        Ok(())
    }
    async fn stop(&self, _run_name: &str) {}
    fn is_tracked(&self, _run_name: &str) -> bool {
        true
    }
    async fn logs(&self, run_name: &str) -> Result<String, RuntimeError> {
        Err(RuntimeError::NoRun(run_name.into()))
    }
    async fn ready(&self) -> Result<(), RuntimeError> {
        Ok(())
    }
    async fn renew_git_token(
        &self,
        _run_name: &str,
        _token: &coding_swarm::config::Secret,
    ) -> Result<(), RuntimeError> {
        Ok(())
    }
}

struct NoopEngine {
    /// Makes the (only) project sync at once, as a webhook or the file watch does.
    sync_now: Option<Arc<tokio::sync::Notify>>,
    stop: tokio::sync::watch::Sender<bool>,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    count: Arc<AtomicU64>,
}

fn start_noop_engine(
    cfg: Config,
    store: Store,
    launched: Option<mpsc::UnboundedSender<(String, Instant)>>,
) -> NoopEngine {
    let (tx, rx) = mpsc::unbounded_channel();
    let count = Arc::new(AtomicU64::new(0));
    let runtime = NoopRuntime {
        completions: tx,
        launched,
        count: count.clone(),
    };
    let engine = Engine::with_runtime(cfg, store, runtime, rx);
    let sync_now = engine.sync_triggers().into_values().next();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let handle = tokio::spawn(engine.run(RunOptions { once: false }, stop_rx));
    NoopEngine {
        sync_now,
        stop,
        handle,
        count,
    }
}

/// Limits out of the way: the addressees are the only bound, as the peer's queues are its.
const NO_LIMITS: &str = "[limits]\nmax_running = 100000\nmax_running_per_project = 100000\n";

impl NoopEngine {
    /// Waits until `tasks` runs were launched (counted without touching the database) and
    /// then until the store has them all completed; checks that each launched once.
    async fn wait_for_all(&self, store: &Store, tasks: u64) {
        let count = self.count.clone();
        wait_until(
            "every task to launch",
            Duration::from_secs(600),
            async || count.load(Ordering::SeqCst) >= tasks,
        )
        .await;
        wait_until(
            "every task to complete",
            Duration::from_secs(60),
            async || {
                let c = store.counts().await.unwrap();
                c.completed == tasks && c.pending == 0 && c.running == 0
            },
        )
        .await;
        assert_eq!(
            self.count.load(Ordering::SeqCst),
            tasks,
            "every task launched exactly once"
        );
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.handle).await;
    }
}

async fn wait_until(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

// ---- the benchmarks -------------------------------------------------------------------------

/// Full first sync, then one changed file at a time, at several repository sizes.
async fn bench_sync(backend: Backend, quick: bool) -> Value {
    let sizes: &[usize] = if quick {
        &[1_000, 10_000]
    } else {
        &[1_000, 10_000, 100_000]
    };
    let rounds = if quick { 7 } else { 25 };
    let mut out = Vec::new();
    for &files in sizes {
        let db = Db::new(backend).await;
        let store = Store::connect(&db.url).await.unwrap();
        let data = tempfile::tempdir().unwrap();
        let addressees = (files / 10).max(1);
        let made = Instant::now();
        let remote = Remote::new(files, addressees);
        eprintln!(
            "  sync {}: {} task files written in {:.1}s",
            backend.name(),
            remote.files,
            made.elapsed().as_secs_f64()
        );
        let cfg = config(data.path(), &db, &[("bench".into(), remote.url())], "");
        let p = project(&cfg);

        let t = Instant::now();
        let report = sync_project(&store, &cfg.data_dir, &p, &Default::default())
            .await
            .unwrap();
        let first = t.elapsed();
        assert_eq!(report.actions, files, "the first sync creates every task");
        assert_eq!(store.counts().await.unwrap().pending, files as u64);

        let mut incremental = Vec::new();
        for round in 1..=rounds + 2 {
            remote.change_one((round * 7919) % files, round, addressees);
            let t = Instant::now();
            let report = sync_project(&store, &cfg.data_dir, &p, &Default::default())
                .await
                .unwrap();
            let took = t.elapsed();
            assert_eq!(
                (report.changed_files, report.actions),
                (1, 1),
                "one file changed"
            );
            if round > 2 {
                incremental.push(took);
            }
        }
        // An unmoved remote: the pass every poll makes.
        let mut unmoved = Vec::new();
        for _ in 0..rounds {
            let t = Instant::now();
            let report = sync_project(&store, &cfg.data_dir, &p, &Default::default())
                .await
                .unwrap();
            unmoved.push(t.elapsed());
            assert!(!report.fetched);
        }
        store.close().await;
        db.drop().await;
        let row = json!({
            "files": files,
            "first_sync_s": round3(first.as_secs_f64()),
            "incremental_ms": summary_ms(&incremental),
            "unmoved_ms": summary_ms(&unmoved),
        });
        eprintln!("  {row}");
        out.push(row);
    }
    json!(out)
}

/// 10,000 pending tasks over 1,000 addressees, claimed, launched and completed.
async fn bench_dispatch(backend: Backend, quick: bool) -> Value {
    let (tasks, addressees) = (10_000usize, 1_000usize);
    let rounds = if quick { 2 } else { 5 };
    let mut rates = Vec::new();
    for _ in 0..rounds {
        // A remote of its own: the status files an earlier round committed would make a
        // first sync find those tasks done.
        let remote = Remote::new(tasks, addressees);
        let db = Db::new(backend).await;
        let store = Store::connect(&db.url).await.unwrap();
        let data = tempfile::tempdir().unwrap();
        let cfg = config(
            data.path(),
            &db,
            &[("bench".into(), remote.url())],
            NO_LIMITS,
        );
        sync_project(&store, &cfg.data_dir, &project(&cfg), &Default::default())
            .await
            .unwrap();
        assert_eq!(store.counts().await.unwrap().pending, tasks as u64);
        let t = Instant::now();
        let engine = start_noop_engine(cfg, store.clone(), None);
        engine.wait_for_all(&store, tasks as u64).await;
        let took = t.elapsed();
        engine.stop().await;
        let rate = tasks as f64 / took.as_secs_f64();
        eprintln!(
            "  dispatch {}: {tasks} tasks in {:.2}s, {rate:.0}/s",
            backend.name(),
            took.as_secs_f64()
        );
        rates.push(rate);
        store.close().await;
        db.drop().await;
    }
    // As the peer is measured: the engine already runs, the work arrives (here: a commit of
    // 10,000 task files is on the remote, and the sync is triggered as a webhook would), and
    // the clock runs until every task has completed: sync, claims, launches and run ends.
    let mut arrivals = Vec::new();
    for _ in 0..rounds {
        let db = Db::new(backend).await;
        let store = Store::connect(&db.url).await.unwrap();
        let data = tempfile::tempdir().unwrap();
        let remote = Remote::new(0, 1);
        let cfg = config(
            data.path(),
            &db,
            &[("bench".into(), remote.url())],
            NO_LIMITS,
        );
        let engine = start_noop_engine(cfg, store.clone(), None);
        wait_until("the first sync", Duration::from_secs(30), async || {
            store
                .project("bench")
                .await
                .unwrap()
                .is_some_and(|p| p.synced_commit.is_some())
        })
        .await;
        remote.commit_new_tasks(tasks, addressees);
        let t = Instant::now();
        engine.sync_now.as_ref().unwrap().notify_one();
        engine.wait_for_all(&store, tasks as u64).await;
        let took = t.elapsed();
        engine.stop().await;
        let rate = tasks as f64 / took.as_secs_f64();
        eprintln!(
            "  arrival to completion {}: {tasks} tasks in {:.2}s, {rate:.0}/s",
            backend.name(),
            took.as_secs_f64()
        );
        arrivals.push(rate);
        store.close().await;
        db.drop().await;
    }
    json!({
        "tasks": tasks,
        "addressees": addressees,
        "rounds_tasks_per_s": rates.iter().map(|r| r.round()).collect::<Vec<_>>(),
        "median_tasks_per_s": median(rates).round(),
        "arrival_to_completion": {
            "rounds_tasks_per_s": arrivals.iter().map(|r| r.round()).collect::<Vec<_>>(),
            "median_tasks_per_s": median(arrivals).round(),
        },
    })
}

/// From a task becoming pending (a sync transaction by another connection) to its launch.
async fn bench_latency(backend: Backend, quick: bool, gap: Duration) -> Value {
    let samples = if quick { 100 } else { 500 };
    let warmup = 20;
    let db = Db::new(backend).await;
    let engine_store = Store::connect(&db.url).await.unwrap();
    // Postgres: a second pool, so the engine can only learn of the task by LISTEN/NOTIFY.
    // SQLite has one writer in one process; the sync loop shares the engine's store.
    let writer = match backend {
        Backend::Postgres => Store::connect(&db.url).await.unwrap(),
        Backend::Sqlite => engine_store.clone(),
    };
    let data = tempfile::tempdir().unwrap();
    let remote = Remote::new(1, 1);
    let cfg = config(data.path(), &db, &[("bench".into(), remote.url())], "");
    let head = remote
        .repo
        .refname_to_id("refs/heads/main")
        .unwrap()
        .to_string();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let engine = start_noop_engine(cfg, engine_store.clone(), Some(tx));
    // The first sync's task runs first.
    let (first, _) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("the first task launches")
        .unwrap();
    assert_eq!(first, "t000000");
    let mut lat = Vec::new();
    for i in 0..warmup + samples {
        let key = format!("lat{i:05}");
        let spec = coding_swarm::spec::parse_task(
            format!("addressee: lat{}\nprompt: measure\n", i % 7).as_bytes(),
        )
        .unwrap();
        let files = vec![FileChange {
            path: coding_swarm::spec::task_path(&coding_swarm::spec::TaskKey::new(&key).unwrap()),
            content: Some(Ok(spec)),
        }];
        let keys = vec![key.clone()];
        let t = Instant::now();
        let now = chrono::Utc::now();
        writer
            .apply_sync("bench", &head, SyncScope::Keys(&keys), now, |rows| {
                plan_sync(
                    "bench",
                    &files,
                    rows,
                    false,
                    &Default::default(),
                    &head,
                    now,
                )
            })
            .await
            .unwrap();
        let (got, at) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("{key} was not launched within 10 s"))
            .unwrap();
        assert_eq!(got, key);
        if i >= warmup {
            lat.push(at - t);
        }
        // Let the completion land before the next, as the peer does.
        tokio::time::sleep(gap).await;
    }
    engine.stop().await;
    writer.close().await;
    engine_store.close().await;
    db.drop().await;
    let s = summary_ms(&lat);
    eprintln!("  latency {}: {s}", backend.name());
    s
}

/// Signed webhook deliveries at a fixed rate, open loop, over keep-alive connections.
async fn bench_webhook(backend: Backend, quick: bool) -> Value {
    let rate = 500u64;
    let seconds = if quick { 5 } else { 20 };
    let total = rate * seconds;
    let connections = 32usize;
    let db = Db::new(backend).await;
    let store = Store::connect(&db.url).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let cfg = Arc::new(config(data.path(), &db, &[], ""));
    let secret = b"bench-webhook-secret".to_vec();
    let state = coding_swarm::web::WebState::new(
        cfg,
        store.clone(),
        Some(coding_swarm::web::WebhookIn {
            secret: secret.clone(),
        }),
        None,
        Default::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, coding_swarm::web::router(state))
            .await
            .unwrap()
    });
    let body = serde_json::to_vec(&json!({
        "ref": "refs/heads/main",
        "before": "0000000000000000000000000000000000000000",
        "after": "1111111111111111111111111111111111111111",
        "repository": {"full_name": "someone/elsewhere", "name": "elsewhere", "owner": {"login": "someone"}},
        "sender": {"login": "someone", "type": "User"},
        "commits": [],
    }))
    .unwrap();
    let signature = coding_swarm::forge::webhook::sign(&secret, &body);

    // One sender per connection; a scheduler hands out request i at start + i / rate.
    let mut senders = Vec::new();
    let (rtx, mut rrx) = mpsc::unbounded_channel::<(u16, Duration)>();
    for _ in 0..connections {
        let (tx, mut rx) = mpsc::unbounded_channel::<(u64, Instant)>();
        let (body, signature, rtx) = (body.clone(), signature.clone(), rtx.clone());
        tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let mut buf = Vec::with_capacity(4096);
            while let Some((i, due)) = rx.recv().await {
                let mut req = format!(
                    "POST /webhooks/github HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
                     X-GitHub-Event: push\r\nX-GitHub-Delivery: bench-{i:08}\r\nX-Hub-Signature-256: {signature}\r\n\
                     Content-Length: {}\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                req.extend_from_slice(&body);
                stream.write_all(&req).await.unwrap();
                let status = read_response(&mut stream, &mut buf).await;
                let _ = rtx.send((status, due.elapsed()));
            }
        });
        senders.push(tx);
    }
    drop(rtx);
    let start = Instant::now() + Duration::from_millis(50);
    for i in 0..total {
        let due = start + Duration::from_nanos(i * 1_000_000_000 / rate);
        tokio::time::sleep_until(due.into()).await;
        senders[i as usize % connections].send((i, due)).unwrap();
    }
    drop(senders);
    let mut lat = Vec::new();
    let mut statuses: HashMap<u16, u64> = HashMap::new();
    while let Some((status, took)) = rrx.recv().await {
        *statuses.entry(status).or_default() += 1;
        lat.push(took);
    }
    let sent_for = start.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.abort();
    let recorded: i64 = match backend {
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query_scalar("SELECT COUNT(*) FROM webhook_deliveries")
                .fetch_one(&mut c)
                .await
                .unwrap()
        }
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::query_scalar("SELECT COUNT(*) FROM webhook_deliveries")
                .fetch_one(&mut c)
                .await
                .unwrap()
        }
    };
    store.close().await;
    db.drop().await;
    let accepted = statuses.get(&202).copied().unwrap_or(0);
    let s = summary_ms(&lat);
    eprintln!(
        "  webhook {}: {total} sent, {accepted} accepted, {recorded} stored; {s}",
        backend.name()
    );
    json!({
        "rate_per_s": rate,
        "sent": total,
        "accepted_202": accepted,
        "statuses": statuses.iter().map(|(k, v)| (k.to_string(), *v)).collect::<HashMap<_, _>>(),
        "recorded": recorded,
        "achieved_rate_per_s": (total as f64 / sent_for.as_secs_f64()).round(),
        "ack_ms": s,
    })
}

/// From a signed push delivery to the agent's process started: `swarm up` as a user runs it
/// (the local runtime, its bubblewrap sandbox, a small repository), one new task file per
/// sample. Each stage is read from where it happened: the webhook's answer, the task's
/// `created` and `launched` events, the worker's log lines and the agent's own clock.
async fn bench_agent_start(backend: Backend, quick: bool) -> Value {
    let samples = if quick { 20 } else { 100 };
    let warmup = 3;
    let db = Db::new(backend).await;
    let data = tempfile::tempdir().unwrap();
    let remote = Remote::new(1, 1);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The agent says when it started, by bash's own clock (no process of its own to read it).
    // `[github]` with no token: webhooks are read, nothing is written to GitHub.
    let text = format!(
        "data_dir = {:?}\ndatabase_url = {:?}\ndefault_agent = \"stamp\"\npoll_interval = \"1h\"\n\
         [http]\nlisten = \"127.0.0.1:{port}\"\n\
         [github]\napi_url = \"http://127.0.0.1:9\"\n\
         [agents.stamp]\ncommand = [\"bash\", \"-c\", \"echo AGENT_EXEC $EPOCHREALTIME\"]\n\
         [[projects]]\nname = \"bench\"\nrepo = {:?}\ndefault_branch = \"main\"\ngithub = \"bench/small\"\n",
        data.path().join("d").display().to_string(),
        db.url,
        remote.url(),
    );
    let cfg_path = data.path().join("swarm.toml");
    std::fs::write(&cfg_path, text).unwrap();
    let secret = "bench-agent-start-secret";
    // The schema first, so the engine and this connection do not both migrate.
    let store = Store::connect(&db.url).await.unwrap();
    let log_path = data.path().join("engine.log");
    let child = KillOnDrop(
        std::process::Command::new(SWARM)
            .args(["up", "--config"])
            .arg(&cfg_path)
            .env("SWARM_GITHUB_WEBHOOK_SECRET", secret)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let engine_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut up = false;
    for _ in 0..3000 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        up,
        "the engine's HTTP server did not come up\n{}",
        engine_log()
    );
    let mut buf = Vec::with_capacity(4096);
    let runs = data.path().join("d/runs");
    let reported = async |key: &str| {
        wait_until(
            &format!("{key}'s status report"),
            Duration::from_secs(60),
            async || {
                store.events("bench", key).await.is_ok_and(|e| {
                    e.iter()
                        .any(|e| e.kind == coding_swarm::model::EventKind::Reported)
                })
            },
        )
        .await
    };
    reported("t000000").await;

    let stamp = |line: &str| {
        chrono::DateTime::parse_from_rfc3339(line.split_whitespace().next()?)
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc))
    };
    let ms = |a: chrono::DateTime<chrono::Utc>, b: chrono::DateTime<chrono::Utc>| {
        Duration::from_micros((b - a).num_microseconds().unwrap_or(0).max(0) as u64)
    };
    let names = [
        "ack",
        "webhook_to_synced",
        "synced_to_launched",
        "launched_to_worker",
        "checkout",
        "agent_exec",
        "total",
    ];
    let mut stages: Vec<Vec<Duration>> = vec![Vec::new(); names.len()];
    for i in 0..warmup + samples {
        let key = format!("s{i:05}");
        let after = remote.add_task(&key, &format!("addressee: a{}\nprompt: start\n", i % 7));
        let body = serde_json::to_vec(&json!({
            "ref": "refs/heads/main",
            "before": "0000000000000000000000000000000000000000",
            "after": after.to_string(),
            "repository": {"full_name": "bench/small", "name": "small", "owner": {"login": "bench"}},
            "sender": {"login": "someone", "type": "User"},
            "commits": [],
        }))
        .unwrap();
        let signature = coding_swarm::forge::webhook::sign(secret.as_bytes(), &body);
        let mut req = format!(
            "POST /webhooks/github HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             X-GitHub-Event: push\r\nX-GitHub-Delivery: bench-start-{i}\r\nX-Hub-Signature-256: {signature}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(&body);
        let t0 = chrono::Utc::now();
        let sent = Instant::now();
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        stream.write_all(&req).await.unwrap();
        let status = read_response(&mut stream, &mut buf).await;
        let ack = sent.elapsed();
        drop(stream);
        assert_eq!(status, 202, "{}", engine_log());
        // The agent's line in its run's log (the run directory starts with the run's name).
        let prefix = format!("bench-{key}-");
        let mut log = String::new();
        wait_until(
            &format!("{key}'s agent to start"),
            Duration::from_secs(60),
            async || {
                let Some(dir) = std::fs::read_dir(&runs).ok().and_then(|d| {
                    d.flatten()
                        .find(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                }) else {
                    return false;
                };
                log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
                log.contains("AGENT_EXEC ")
            },
        )
        .await;
        let line = |needle: &str| {
            log.lines()
                .find(|l| l.contains(needle))
                .and_then(stamp)
                .unwrap_or_else(|| panic!("no {needle:?} in the run's log:\n{log}"))
        };
        let exec: f64 = log
            .lines()
            .find_map(|l| l.split("AGENT_EXEC ").nth(1))
            .and_then(|v| v.trim().parse().ok())
            .expect("the agent's stamp");
        let exec = chrono::DateTime::from_timestamp_micros((exec * 1e6) as i64).unwrap();
        let (worker, checked_out) = (line(" worker starts"), line(" checked out "));
        reported(&key).await;
        if i + 1 == warmup + samples && std::env::var_os("SWARM_BENCH_SHOW_LOG").is_some() {
            eprintln!("the last run's log:\n{log}");
        }
        let events = store.events("bench", &key).await.unwrap();
        let at = |kind: coding_swarm::model::EventKind| {
            events
                .iter()
                .find(|e| e.kind == kind)
                .map(|e| e.at)
                .expect("the event")
        };
        let (created, launched) = (
            at(coding_swarm::model::EventKind::Created),
            at(coding_swarm::model::EventKind::Launched),
        );
        if i >= warmup {
            for (s, d) in stages.iter_mut().zip([
                ack,
                ms(t0, created),
                ms(created, launched),
                ms(launched, worker),
                ms(worker, checked_out),
                ms(checked_out, exec),
                ms(t0, exec),
            ]) {
                s.push(d);
            }
        }
    }
    drop(child);
    store.close().await;
    db.drop().await;
    let mut out = serde_json::Map::new();
    out.insert("samples".into(), json!(samples));
    for (name, s) in names.iter().zip(&stages) {
        out.insert(format!("{name}_ms"), summary_ms(s));
    }
    let v = Value::Object(out);
    eprintln!("  agent_start {}: {v}", backend.name());
    v
}

/// Reads one HTTP/1.1 response with a Content-Length body; returns its status.
async fn read_response(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> u16 {
    buf.clear();
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end])
                .unwrap()
                .to_ascii_lowercase();
            let status: u16 = head[9..12].parse().unwrap();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed mid-response");
                buf.extend_from_slice(&chunk[..n]);
            }
            return status;
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before a response");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `swarm up` with ten projects and nothing to do: resident memory and CPU over a minute.
async fn bench_idle(backend: Backend, quick: bool) -> Value {
    let window = Duration::from_secs(if quick { 15 } else { 60 });
    let db = Db::new(backend).await;
    let data = tempfile::tempdir().unwrap();
    let remotes: Vec<Remote> = (0..10).map(|_| Remote::new(3, 3)).collect();
    let projects: Vec<(String, String)> = remotes
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("p{i}"), r.url()))
        .collect();
    // The default poll interval, and the dashboard on: the engine as a user would run it.
    let mut text = format!(
        "data_dir = {:?}\ndatabase_url = {:?}\ndefault_agent = \"noop\"\n[http]\nlisten = \"127.0.0.1:0\"\n[agents.noop]\ncommand = [\"true\"]\n",
        data.path().display().to_string(),
        db.url
    );
    for (name, url) in &projects {
        text.push_str(&format!(
            "\n[[projects]]\nname = {name:?}\nrepo = {url:?}\n"
        ));
    }
    let cfg_path = data.path().join("swarm.toml");
    std::fs::write(&cfg_path, text).unwrap();
    // The schema first, so the engine and this connection do not both migrate.
    let store = Store::connect(&db.url).await.unwrap();
    let child = KillOnDrop(
        std::process::Command::new(SWARM)
            .args(["up", "--config"])
            .arg(&cfg_path)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(data.path().join("engine.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    // Let it sync and run the 30 tasks, then measure the quiet.
    let started = Instant::now();
    loop {
        match store.counts().await {
            Ok(c) if c.completed == 30 && c.report_due == 0 => break,
            state => assert!(
                started.elapsed() < Duration::from_secs(180),
                "the idle engine's first tasks did not finish: {state:?}\n{}",
                std::fs::read_to_string(data.path().join("engine.log")).unwrap_or_default()
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ticks0 = cpu_ticks(pid);
    tokio::time::sleep(window).await;
    let ticks1 = cpu_ticks(pid);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb = |field: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let (rss, hwm) = (kb("VmRSS:"), kb("VmHWM:"));
    let threads = kb("Threads:");
    drop(child);
    store.close().await;
    db.drop().await;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu_s = (ticks1 - ticks0) as f64 / hz;
    let v = json!({
        "projects": 10,
        "window_s": window.as_secs(),
        "rss_mb": round3(rss as f64 / 1024.0),
        "peak_rss_mb": round3(hwm as f64 / 1024.0),
        "threads": threads,
        "cpu_s_in_window": round3(cpu_s),
        "cpu_percent": round3(100.0 * cpu_s / window.as_secs_f64()),
    });
    eprintln!("  idle {}: {v}", backend.name());
    v
}

/// A `swarm up` the harness started: killed and reaped when dropped, on a failed assertion too,
/// so a row that panics leaves no engine running.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

// ---- the peer -----------------------------------------------------------------------------

/// graphile-worker on the same Postgres (bench/graphile), when its packages are installed.
fn run_peer(quick: bool) -> Value {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/graphile");
    if !dir.join("node_modules").exists() {
        panic!(
            "--peer needs graphile-worker: cd {} && npm ci",
            dir.display()
        );
    }
    let admin = pg_admin();
    let (base, _) = admin.rsplit_once('/').unwrap();
    let mut cmd = std::process::Command::new("node");
    cmd.current_dir(&dir)
        .arg("bench.mjs")
        .arg("--database")
        .arg(format!("{base}/swarm_bench_graphile"));
    if quick {
        cmd.args(["--rounds", "2", "--latency-samples", "100"]);
    }
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("node runs");
    assert!(out.status.success(), "the graphile-worker benchmark failed");
    serde_json::from_slice(&out.stdout).expect("the peer prints one JSON object")
}

// ---- the targets of issue #17 ------------------------------------------------------------------

/// The engine's rows of issue #17's table, from this run's figures on Postgres and, where the
/// target is relative to the peer, this run's graphile-worker figures: each with its numbers,
/// its ratio and whether it was met (and the checkout rows, when measured). `None` when none was.
fn issue_17_targets(results: &serde_json::Map<String, Value>) -> Option<Value> {
    let none = json!({});
    let pg = results.get("postgres").unwrap_or(&none);
    let peer = results.get("graphile_worker");
    let peer_configs: Vec<&Value> = peer
        .and_then(|p| p["configs"].as_array())
        .map(|c| c.iter().collect())
        .unwrap_or_default();
    let mut out = serde_json::Map::new();

    if let Some(lat) = pg.get("latency") {
        let (p50, p99) = (lat["p50"].as_f64()?, lat["p99"].as_f64()?);
        let peer_lat: Vec<Value> = peer_configs
            .iter()
            .map(|c| {
                json!({
                    "config": c["name"], "concurrency": c["concurrency"],
                    "p50": c["latency_ms"]["p50"], "p99": c["latency_ms"]["p99"],
                })
            })
            .collect();
        let best = |field: &str| {
            peer_lat
                .iter()
                .filter_map(|c| c[field].as_f64())
                .min_by(f64::total_cmp)
        };
        let (peer_p50, peer_p99) = (best("p50"), best("p99"));
        let ahead = |ours: f64, theirs: Option<f64>| theirs.map(|t| ours < t);
        out.insert(
            "pending_to_launch".into(),
            json!({
                "target": "p99 <= 5 ms, and ahead of graphile-worker's pickup latency at p50 and p99",
                "p50_ms": p50, "p99_ms": p99,
                "peer_best_p50_ms": peer_p50, "peer_best_p99_ms": peer_p99,
                "peer": peer_lat,
                "ratio_p50": peer_p50.map(|t| round3(p50 / t)),
                "ratio_p99": peer_p99.map(|t| round3(p99 / t)),
                "met": p99 <= 5.0 && ahead(p50, peer_p50) == Some(true) && ahead(p99, peer_p99) == Some(true),
            }),
        );
    }

    if let Some(sizes) = pg.get("sync").and_then(Value::as_array) {
        let at = |files: u64| {
            sizes
                .iter()
                .find(|r| r["files"].as_u64() == Some(files))
                .and_then(|r| r["incremental_ms"]["p50"].as_f64())
        };
        if let (Some(small), Some(large)) = (at(1_000), at(100_000)) {
            out.insert(
                "incremental_sync".into(),
                json!({
                    "target": "one file changed: <= 10 ms at 100,000 task files, within 2 x of the 1,000-file figure",
                    "p50_ms_at_1000": small, "p50_ms_at_10000": at(10_000), "p50_ms_at_100000": large,
                    "ratio_100000_to_1000": round3(large / small),
                    "met": large <= 10.0 && large <= 2.0 * small,
                }),
            );
        }
    }

    if let Some(c) = results.get("checkout") {
        let ratio = |row: &str| c[row]["ratio"].as_f64();
        let history = c["history"]["ratio_100000_to_1000"].as_f64();
        if let (Some(local), Some(history)) = (ratio("local_path"), history) {
            out.insert(
                "checkout_local".into(),
                json!({
                    "target": "p50 <= 0.6 x git clone --depth 1 --single-branch, flat in history length",
                    "ratio_path": local, "ratio_file_url": ratio("local_file_url"),
                    "ratio_remote_http": ratio("remote_http"),
                    "ratio_100000_to_1000_commits": history,
                    // "Flat": the 100-times longer history costs at most a fifth more.
                    "met": local <= 0.6 && ratio("local_file_url").is_none_or(|r| r <= 0.6) && history <= 1.2,
                }),
            );
        }
        if let (Some(pod), Some(disk)) = (ratio("pod_http"), c["pod_http"]["disk_ratio"].as_f64()) {
            out.insert(
                "checkout_pod".into(),
                json!({
                    "target": "<= 1.0 x git's shallow clone over the same HTTP, disk <= 1.2 x the tree",
                    "ratio": pod, "disk_ratio": disk,
                    "met": pod <= 1.0 && disk <= 1.2,
                }),
            );
        }
    }

    if let Some(start) = pg.get("agent_start") {
        let total = &start["total_ms"];
        let (p50, p99) = (total["p50"].as_f64()?, total["p99"].as_f64()?);
        out.insert(
            "push_to_agent_start".into(),
            json!({
                "target": "p50 <= 150 ms, p99 <= 400 ms, each stage reported",
                "p50_ms": p50, "p99_ms": p99,
                "stages": start,
                "met": p50 <= 150.0 && p99 <= 400.0,
            }),
        );
    }

    if let Some(ours) = pg
        .get("dispatch")
        .and_then(|d| d["arrival_to_completion"]["median_tasks_per_s"].as_f64())
    {
        // The peer's configurations that ran one job at a time per named queue in every round.
        let one_at_a_time: Vec<Value> = peer_configs
            .iter()
            .filter(|c| {
                c["throughput"]["same_queue_jobs_locked_together"]
                    .as_array()
                    .is_some_and(|r| r.iter().all(|n| n.as_u64() == Some(0)))
            })
            .map(|c| {
                json!({
                    "config": c["name"], "concurrency": c["concurrency"],
                    "median_jobs_per_s": c["throughput"]["median_jobs_per_s"],
                })
            })
            .collect();
        let best = one_at_a_time
            .iter()
            .filter_map(|c| c["median_jobs_per_s"].as_f64())
            .max_by(f64::total_cmp);
        out.insert(
            "arrival_to_completion".into(),
            json!({
                "target": ">= 10,000 tasks/s, and ahead of every graphile-worker configuration that kept one job at a time per queue",
                "median_tasks_per_s": ours,
                "dispatch_only_median_tasks_per_s": pg["dispatch"]["median_tasks_per_s"],
                "peer_one_at_a_time": one_at_a_time,
                "peer_best": best,
                "ratio_to_peer_best": best.map(|b| round3(ours / b)),
                "met": ours >= 10_000.0 && best.is_some_and(|b| ours > b),
            }),
        );
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

// ---- main -----------------------------------------------------------------------------------

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let mem_gb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map(|kb| (kb / 1024.0 / 1024.0).round())
        .unwrap_or(0.0);
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory_gb": mem_gb,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "date": chrono::Utc::now().to_rfc3339(),
    })
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let o = options();
    let mut results = serde_json::Map::new();
    results.insert("machine".into(), machine());
    for &backend in &o.backends {
        let mut r = serde_json::Map::new();
        for (name, run) in [
            ("sync", 0),
            ("dispatch", 1),
            ("latency", 2),
            ("webhook", 3),
            ("idle", 4),
            ("agent_start", 5),
        ] {
            if !o.wants(name) {
                continue;
            }
            eprintln!("== {name} on {}", backend.name());
            // Each row starts with nothing of the last one left to write back (the sync rows
            // write 100,000s of files; their write-back slowed the next row's file writes).
            // SAFETY: sync(2) takes no arguments and cannot fail.
            unsafe { libc::sync() };
            let v = match run {
                0 => bench_sync(backend, o.quick).await,
                1 => bench_dispatch(backend, o.quick).await,
                2 => bench_latency(backend, o.quick, o.latency_gap).await,
                3 => bench_webhook(backend, o.quick).await,
                5 => bench_agent_start(backend, o.quick).await,
                _ => bench_idle(backend, o.quick).await,
            };
            r.insert(name.into(), v);
        }
        results.insert(backend.name().into(), Value::Object(r));
    }
    // The checkout rows of `benches/checkout.rs`, in the same invocation (they need no database).
    if o.only
        .as_ref()
        .is_some_and(|only| only.contains("checkout"))
    {
        eprintln!("== checkout");
        let rows = checkout_rows::Options {
            rounds: if o.quick { 3 } else { 7 },
            only: None,
        };
        let v = tokio::task::block_in_place(|| {
            std::thread::spawn(move || checkout_rows::measure(&rows))
                .join()
                .unwrap()
        });
        results.insert("checkout".into(), v);
    }
    if o.peer {
        eprintln!("== graphile-worker on the same Postgres");
        results.insert("graphile_worker".into(), run_peer(o.quick));
    }
    if let Some(t) = issue_17_targets(&results) {
        eprintln!("== the targets of issue #17 (this run)\n{t:#}");
        results.insert("issue_17".into(), t);
    }
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let text = serde_json::to_string_pretty(&Value::Object(results)).unwrap();
    std::fs::write(out.join("figures.json"), &text).unwrap();
    println!("{text}");
}

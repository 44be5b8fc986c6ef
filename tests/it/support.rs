//! Test fixtures: throwaway databases on both backends, bare git repositories built commit by
//! commit, configs pointing at them, and child processes with an explicit environment.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use coding_swarm::config::Config;
use coding_swarm::model::{
    plan_sync, transition, ClaimLimits, FileChange, NewTask, Outcome, TaskRow,
};
use coding_swarm::spec::{parse_task, task_path, TaskKey};
use coding_swarm::store::{Store, SyncScope};
use git2::{Oid, Repository};
use sqlx::Connection;

/// What a child process of the tests takes from the test process's environment. Everything
/// else it needs is given explicitly (`Command::env`): the tests run in parallel threads of one
/// process, so nothing may reach a child through the process's environment, and nothing of the
/// environment the tests run in (a developer's `GITHUB_TOKEN`, say) reaches the product.
const INHERITED: &[&str] = &[
    "PATH",
    "HOME",
    "TMPDIR",
    "LANG",
    "LC_ALL",
    "USER",
    "LOGNAME",
    "RUST_BACKTRACE",
    "LLVM_PROFILE_FILE",
];

/// `Command::new(program)` with a cleared environment but for [`INHERITED`].
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear();
    for name in INHERITED {
        if let Some(value) = std::env::var_os(name) {
            cmd.env(name, value);
        }
    }
    cmd
}

pub fn pg_admin_url() -> String {
    std::env::var("SWARM_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh database, dropped (Postgres) or deleted (SQLite) at the end.
pub struct TestDb {
    pub url: String,
    pub store: Store,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestDb {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("swarm.db").display()
        );
        let store = Store::connect(&url).await.unwrap();
        Self {
            url,
            store,
            pg_name: None,
            _dir: Some(dir),
        }
    }

    pub async fn postgres() -> Self {
        let admin = pg_admin_url();
        let name = format!(
            "swarm_test_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| {
                panic!("Postgres is needed for this test ({admin}; set SWARM_TEST_PG): {e}")
            });
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.ok();
        let url = match admin.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("SWARM_TEST_PG must end in /DATABASE"),
        };
        let store = Store::connect(&url).await.unwrap();
        Self {
            url,
            store,
            pg_name: Some(name),
            _dir: None,
        }
    }

    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => Self::sqlite().await,
            Backend::Postgres => Self::postgres().await,
        }
    }

    /// Runs raw SQL against the same database, outside the store.
    pub async fn execute(&self, sql: &str) -> Result<u64, sqlx::Error> {
        if self.url.starts_with("sqlite:") {
            let mut c = sqlx::SqliteConnection::connect(&self.url).await?;
            Ok(sqlx::query(sql).execute(&mut c).await?.rows_affected())
        } else {
            let mut c = sqlx::PgConnection::connect(&self.url).await?;
            Ok(sqlx::query(sql).execute(&mut c).await?.rows_affected())
        }
    }

    pub async fn drop_db(self) {
        self.store.close().await;
        if let Some(name) = self.pg_name {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_admin_url()).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates `sqlite` and `postgres` variants of async tests that take a [`Backend`].
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::support::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::support::Backend::Postgres).await;
                }
            )*
        }
    };
}

/// A task as the sync planner would create it.
pub fn task(key: &str, yaml: &str) -> NewTask {
    let spec = parse_task(yaml.as_bytes()).unwrap_or_else(|e| panic!("{key}: {e}"));
    NewTask::from_spec(&TaskKey::new(key).unwrap(), &spec)
}

/// Task files added in one commit, as a sync would see them.
pub fn create_plan(tasks: Vec<NewTask>) -> Vec<FileChange> {
    tasks
        .into_iter()
        .map(|t| FileChange {
            path: task_path(&TaskKey::new(&t.key).unwrap()),
            content: Some(Ok(t.spec)),
        })
        .collect()
}

/// Syncs `files` into `project` as of `commit`, through the real planner, as a sync pass does.
pub async fn apply(store: &Store, project: &str, commit: &str, files: Vec<FileChange>) {
    let keys: Vec<String> = files
        .iter()
        .filter_map(|f| coding_swarm::spec::task_key_of_path(&f.path).and_then(Result::ok))
        .map(|k| k.to_string())
        .collect();
    let now = Utc::now();
    store
        .apply_sync(project, commit, SyncScope::Keys(&keys), now, |rows| {
            plan_sync(
                project,
                &files,
                rows,
                false,
                &Default::default(),
                commit,
                now,
            )
        })
        .await
        .unwrap();
}

/// Claims what `limits` allow, as the engine's dispatch does.
pub async fn claim(store: &Store, limits: &ClaimLimits, now: DateTime<Utc>) -> Vec<TaskRow> {
    store
        .claim(now, |running, heads| {
            limits
                .select(heads, running)
                .into_iter()
                .map(|i| transition::claim(&heads[i], now))
                .collect()
        })
        .await
        .unwrap()
}

/// Records the end of run `attempt` of task `id` as `outcome`, as the engine does; whether it
/// changed the task.
pub async fn finish(
    store: &Store,
    id: i64,
    attempt: i32,
    outcome: &Outcome,
    now: DateTime<Utc>,
) -> bool {
    store
        .modify_tasks(&[id], now, |row| {
            let c = transition::finish(row, attempt, outcome, now);
            let changed = !c.is_none();
            (c, changed)
        })
        .await
        .unwrap()
        .first()
        .is_some_and(|(_, changed)| *changed)
}

/// A bare repository on disk with a `main` branch we commit to directly.
pub struct TestRepo {
    pub dir: tempfile::TempDir,
    pub repo: Repository,
}

impl TestRepo {
    pub fn new() -> Self {
        Self::new_in(&std::env::temp_dir())
    }

    /// A repository in a new directory under `parent`.
    pub fn new_in(parent: &Path) -> Self {
        let dir = tempfile::tempdir_in(parent).unwrap();
        let repo = Repository::init_bare(dir.path().join("remote.git")).unwrap();
        repo.set_head("refs/heads/main").unwrap();
        Self { dir, repo }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("remote.git")
    }

    pub fn url(&self) -> String {
        self.path().display().to_string()
    }

    pub fn head(&self) -> Option<Oid> {
        self.repo.refname_to_id("refs/heads/main").ok()
    }

    /// Commits on `main`: `Some(content)` writes a file, `None` deletes it. When `main` moved
    /// under it (an engine pushed a status commit meanwhile), it commits again on the new head,
    /// as a person's push after a pull would.
    pub fn commit(&self, files: &[(&str, Option<&str>)], message: &str) -> Oid {
        let mut tries = 0;
        loop {
            match self.try_commit(files, message) {
                Ok(id) => return id,
                Err(e) if e.code() == git2::ErrorCode::Modified && tries < 50 => tries += 1,
                Err(e) => panic!("cannot commit {message:?}: {e}"),
            }
        }
    }

    /// [`TestRepo::commit`], failing (instead of panicking) when `main` moved under it, as it
    /// may while an engine pushes status commits.
    pub fn try_commit(
        &self,
        files: &[(&str, Option<&str>)],
        message: &str,
    ) -> Result<Oid, git2::Error> {
        let parent = self.head().map(|h| self.repo.find_commit(h).unwrap());
        let base = match &parent {
            Some(p) => p.tree().unwrap(),
            None => self
                .repo
                .find_tree(self.repo.treebuilder(None).unwrap().write().unwrap())
                .unwrap(),
        };
        let mut update = git2::build::TreeUpdateBuilder::new();
        for (path, content) in files {
            match content {
                Some(c) => {
                    let blob = self.repo.blob(c.as_bytes()).unwrap();
                    update.upsert(*path, blob, git2::FileMode::Blob);
                }
                None => {
                    update.remove(*path);
                }
            }
        }
        let tree = self
            .repo
            .find_tree(update.create_updated(&self.repo, &base).unwrap())
            .unwrap();
        let sig = git2::Signature::now("Test Person", "person@example.com").unwrap();
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        self.repo.commit(
            Some("refs/heads/main"),
            &sig,
            &sig,
            message,
            &tree,
            &parents,
        )
    }

    /// Points `main` at `commit` (a force-push).
    pub fn force_main(&self, commit: Oid) {
        self.repo
            .reference("refs/heads/main", commit, true, "force-push")
            .unwrap();
    }

    /// A file's content on a branch of the remote.
    pub fn read(&self, branch: &str, path: &str) -> Option<String> {
        let id = self
            .repo
            .refname_to_id(&format!("refs/heads/{branch}"))
            .ok()?;
        let tree = self.repo.find_commit(id).ok()?.tree().ok()?;
        let entry = tree.get_path(Path::new(path)).ok()?;
        let blob = self.repo.find_blob(entry.id()).ok()?;
        Some(String::from_utf8_lossy(blob.content()).into_owned())
    }

    pub fn branches(&self) -> Vec<String> {
        self.repo
            .branches(Some(git2::BranchType::Local))
            .unwrap()
            .filter_map(|b| b.ok()?.0.name().ok()?.map(str::to_string))
            .collect()
    }
}

/// The `swarm` binary of this build.
pub const SWARM: &str = env!("CARGO_BIN_EXE_swarm");

/// The text of a `swarm.toml` for one project on `repo`, with `db` and an agent profile named
/// `sh` running `script` with `sh -c`; `extra` goes in at the top level.
pub fn config_text(
    data_dir: &Path,
    db_url: &str,
    repo: &TestRepo,
    script: &str,
    extra: &str,
) -> String {
    format!(
        r#"
data_dir = {data:?}
database_url = {db_url:?}
default_agent = "sh"
# The agents of these tests write ledgers into the test's own directory, outside their
# checkout, which the sandbox would hide from them: tests/it/sandbox.rs tests the sandbox.
sandbox = "none"
poll_interval = "1s"
retry_backoff = "200ms"
default_timeout = "2m"
{extra}

[agents.sh]
command = ["sh", "-c", {script:?}]

[[projects]]
name = "proj"
repo = {repo:?}
"#,
        data = data_dir.display().to_string(),
        repo = repo.url(),
    )
}

/// A config for one project on `repo` (see [`config_text`]).
pub fn config(data_dir: &Path, db: &TestDb, repo: &TestRepo, script: &str, extra: &str) -> Config {
    let text = config_text(data_dir, &db.url, repo, script, extra);
    Config::parse(&text, "test config", data_dir, std::iter::empty())
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Writes the config of [`config_text`] to `<data_dir>/swarm.toml` for a `swarm up` process,
/// and returns its path.
pub fn write_config(
    data_dir: &Path,
    db_url: &str,
    repo: &TestRepo,
    script: &str,
    extra: &str,
) -> PathBuf {
    let text = config_text(data_dir, db_url, repo, script, extra);
    Config::parse(&text, "test config", data_dir, std::iter::empty())
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    let path = data_dir.join("swarm.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// An agent that logs its start and end, works a little, and writes one file.
pub fn agent_script(runlog: &Path, pause: &str) -> String {
    format!(
        "set -e; echo \"start $SWARM_TASK_KEY $$\" >> {log}; sleep {pause}; mkdir -p out; \
         echo \"$SWARM_TASK_KEY\" > \"out/$SWARM_TASK_KEY.txt\"; echo \"end $SWARM_TASK_KEY\" >> {log}; \
         echo \"wrote out/$SWARM_TASK_KEY.txt\"",
        log = runlog.display()
    )
}

/// Starts `swarm up --config CONFIG [--once]` as a process, its output appended to `log`.
pub fn start_engine(config: &Path, log: &Path, once: bool) -> Child {
    let mut cmd = command(SWARM);
    cmd.arg("up").arg("--config").arg(config);
    if once {
        cmd.arg("--once");
    }
    let out = || {
        std::fs::File::options()
            .create(true)
            .append(true)
            .open(log)
            .unwrap()
    };
    cmd.env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out())
        .stderr(out())
        .spawn()
        .unwrap()
}

/// Waits until `check` holds, looking every 100 ms; panics after `timeout`.
pub async fn wait_for(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for a process to exit; kills it and panics after `timeout`.
pub async fn wait_exit(mut child: Child, timeout: Duration, what: &str) -> ExitStatus {
    let what = what.to_string();
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} did not finish within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap()
}

/// Runs an engine on the local runtime with `cfg` until nothing is left to do (`once`), within
/// two minutes.
pub async fn run_engine_once(cfg: coding_swarm::config::Config, store: &Store) {
    let engine =
        coding_swarm::engine::Engine::new(cfg, store.clone(), env!("CARGO_BIN_EXE_swarm").into());
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    tokio::time::timeout(
        Duration::from_secs(120),
        engine.run(coding_swarm::engine::RunOptions { once: true }, stop_rx),
    )
    .await
    .expect("the engine finishes")
    .unwrap();
}

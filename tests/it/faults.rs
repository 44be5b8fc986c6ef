//! The fault suite: `swarm up` SIGKILLed twenty times during a 500-task run on the local
//! runtime, and a private Postgres cluster restarted under a running engine. Both check the
//! promise of the README: every task completes exactly once per generation, none is lost, and
//! tasks of one addressee run one at a time, in priority then creation order. Then the faults
//! those runs turned up, each on its own: status pushes racing a person's commits on a local
//! remote, git locks left by a killed writer, and a leader whose lock connection dies.
//! RELIABILITY.md reports what was tried and what held.
//!
//! The kill schedule comes from a seeded PRNG. The seed is printed; `SWARM_FAULT_SEED=<seed>`
//! replays a run.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use coding_swarm::gitops;
use coding_swarm::model::TaskRow;
use coding_swarm::spec::{StatusSpec, TaskState};
use coding_swarm::store::{Store, TaskFilter};

use crate::support::{start_engine, wait_exit, wait_for, write_config, Backend, TestDb, TestRepo};

crate::on_both_backends!(five_hundred_tasks_survive_twenty_sigkills);

/// xorshift64*, seeded through splitmix64 so that any seed (0 included) gives a good stream.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Self((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough in `0..n` for a test.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `SWARM_FAULT_SEED`, or a fresh seed; printed either way so that a failure can be replayed.
fn seed(test: &str) -> u64 {
    let seed = match std::env::var("SWARM_FAULT_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("SWARM_FAULT_SEED={s:?} is not a number")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    };
    eprintln!("{test}: seed {seed} (replay with SWARM_FAULT_SEED={seed})");
    seed
}

/// The agent of these tests: appends `start|end <key> <addressee> <ns> <pid>` to the ledger
/// (`>>` is O_APPEND: each line is one write, whole and in order), sleeps `pause`, writes one
/// file. Keys are `<addressee>-<n>`, so the addressee is the key's first part.
fn ledger_agent(ledger: &Path, pause: &str) -> String {
    format!(
        "set -e; a=${{SWARM_TASK_KEY%%-*}}; \
         echo \"start $SWARM_TASK_KEY $a $(date +%s%N) $$\" >> {log}; sleep {pause}; mkdir -p out; \
         echo \"$SWARM_TASK_KEY\" > \"out/$SWARM_TASK_KEY.txt\"; \
         echo \"end $SWARM_TASK_KEY $a $(date +%s%N) $$\" >> {log}",
        log = ledger.display()
    )
}

/// One line of the ledger.
#[derive(Debug, Clone)]
struct Entry {
    start: bool,
    key: String,
    addressee: String,
    ns: u128,
    pid: u32,
}

fn read_ledger(path: &Path) -> Vec<Entry> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert!(
                f.len() == 5 && (f[0] == "start" || f[0] == "end"),
                "a torn or foreign ledger line: {l:?}"
            );
            Entry {
                start: f[0] == "start",
                key: f[1].to_string(),
                addressee: f[2].to_string(),
                ns: f[3].parse().unwrap_or_else(|_| panic!("{l:?}")),
                pid: f[4].parse().unwrap_or_else(|_| panic!("{l:?}")),
            }
        })
        .collect()
}

fn ledger_ends(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().filter(|l| l.starts_with("end ")).count())
        .unwrap_or(0)
}

/// Processes whose command line or working directory is inside `dir`: the engine, its
/// workers, their agents (and anything those started).
fn processes_in(dir: &Path) -> Vec<(i32, String)> {
    let dir = dir.display().to_string();
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let cwd = std::fs::read_link(e.path().join("cwd"))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if cmdline.contains(&dir) || cwd.starts_with(&dir) {
            found.push((pid, format!("{} (cwd {cwd})", cmdline.trim())));
        }
    }
    found
}

/// Kills whatever engine it holds, and every process left in the test's directory, when the
/// test ends (also by a panic): a failed test leaves no workers behind.
struct Reaper {
    dir: PathBuf,
    engine: Option<Child>,
}

impl Reaper {
    fn kill_engine(&mut self) {
        if let Some(mut c) = self.engine.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Reaper {
    /// Waits until `done` holds while the engine keeps running; panics with the end of its
    /// log when it exits or `timeout` passes.
    /// `check` says what is missing, or nothing when done.
    async fn wait_running(
        &mut self,
        log: &Path,
        timeout: Duration,
        mut check: impl FnMut() -> Option<String>,
    ) {
        let start = Instant::now();
        while let Some(missing) = check() {
            if let Some(Ok(Some(status))) = self.engine.as_mut().map(Child::try_wait) {
                panic!(
                    "the engine exited ({status}) before {missing}:\n{}",
                    tail(log, 60)
                );
            }
            assert!(
                start.elapsed() < timeout,
                "still {missing} after {timeout:?}:\n{}",
                tail(log, 60)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.kill_engine();
        for _ in 0..3 {
            for (pid, _) in processes_in(&self.dir) {
                // SAFETY: a signal to a process of this test.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A task of the generated repository.
#[derive(Debug, Clone)]
struct Planned {
    key: String,
    addressee: String,
    priority: i32,
    /// Committed in the second commit, while the engine runs.
    late: bool,
}

impl Planned {
    fn path(&self) -> String {
        format!(".ai/tasks/{}.yaml", self.key)
    }

    fn yaml(&self) -> String {
        let mut y = format!(
            "addressee: {}\nprompt: task {} of {}\n",
            self.addressee, self.key, self.addressee
        );
        if self.priority != 0 {
            y.push_str(&format!("priority: {}\n", self.priority));
        }
        y
    }
}

const TASKS: usize = 500;
const ADDRESSEES: u64 = 40;
const KILLS: usize = 20;

/// 500 tasks over 40 addressees with priorities from -1 to 2. Every fifth task is late: it is
/// committed mid-run, so its key sorts among the early ones but it was created after them.
fn plan_tasks(rng: &mut Rng) -> Vec<Planned> {
    (0..TASKS)
        .map(|i| {
            let addressee = format!("w{:02}", rng.below(ADDRESSEES));
            Planned {
                key: format!("{addressee}-{i:03}"),
                addressee,
                priority: rng.below(4) as i32 - 1,
                late: i % 5 == 2,
            }
        })
        .collect()
}

fn commit_tasks(repo: &TestRepo, tasks: &[&Planned], message: &str) {
    let files: Vec<(String, String)> = tasks.iter().map(|t| (t.path(), t.yaml())).collect();
    let refs: Vec<(&str, Option<&str>)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), Some(c.as_str())))
        .collect();
    // The engine pushes status commits to main meanwhile: try again when main moved. An
    // engine SIGKILLed while it pushed leaves main's lock behind, which the next engine
    // removes once it is stale (gitops::STALE_LOCK, 10 s): a person's commit waits that long.
    let until = std::time::Instant::now() + Duration::from_secs(40);
    while std::time::Instant::now() < until {
        if repo.try_commit(&refs, message).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("cannot commit {message}");
}

/// Whether the engine had to run `a` before `b` (both of one addressee). Tasks committed
/// together are all pending at once, so they run by priority (higher first), then creation
/// order (the store's id). A late task may overtake an early one only with a higher priority,
/// and only if it was there by then, so the order between such a pair is left open.
fn must_precede(a: &(Planned, i64), b: &(Planned, i64)) -> bool {
    let ((pa, ida), (pb, idb)) = (a, b);
    match (pa.late, pb.late) {
        (x, y) if x == y => (-pa.priority, *ida) < (-pb.priority, *idb),
        (false, true) => pa.priority >= pb.priority,
        _ => false,
    }
}

/// Where the 500-task run keeps its repository and run directories: on tmpfs when there is
/// one. Every worker clones the whole repository (each task file, each status file, a ref per
/// task branch), so the run creates a few hundred thousand files, and on a virtual machine's
/// disk a file creation can cost a millisecond (RELIABILITY.md has the figures).
fn scratch() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if tempfile::tempdir_in(shm).is_ok() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

async fn five_hundred_tasks_survive_twenty_sigkills(backend: Backend) {
    let name = format!("five_hundred_tasks_survive_twenty_sigkills ({backend:?})");
    let mut rng = Rng::new(seed(&name));
    let db = TestDb::new(backend).await;
    let data = tempfile::tempdir_in(scratch()).unwrap();
    let mut reaper = Reaper {
        dir: data.path().to_path_buf(),
        engine: None,
    };
    let repo = TestRepo::new_in(&scratch());
    let plan = plan_tasks(&mut rng);
    let early: Vec<&Planned> = plan.iter().filter(|t| !t.late).collect();
    let late: Vec<&Planned> = plan.iter().filter(|t| t.late).collect();
    commit_tasks(&repo, &early, "400 tasks");
    let ledger = data.path().join("ledger");
    let cfg = write_config(
        data.path(),
        &db.url,
        &repo,
        &ledger_agent(&ledger, "0.002"),
        "[limits]\nmax_running = 8\nmax_running_per_project = 8\n[http]\nlisten = \"\"\n",
    );
    let log = data.path().join("engine.log");
    let store: Store = db.store.clone();

    // Kill points: after a random number of agent runs has ended, plus a random 0-700 ms.
    // Some land during a start-up (adoption, the first sync), some while nothing but status
    // reports is left.
    let mut targets: Vec<usize> = (0..KILLS)
        .map(|_| rng.below(TASKS as u64 + 1) as usize)
        .collect();
    targets.sort();
    let started = Instant::now();
    let mut late_committed = false;
    let mut kills = Vec::new();
    for (i, target) in targets.iter().enumerate() {
        reaper.engine = Some(start_engine(&cfg, &log, false));
        if !late_committed && (*target > 150 || i == KILLS / 2) {
            // Only once the first 400 are in the store: committed later, they must run as later.
            reaper
                .wait_running(&log, Duration::from_secs(60), || {
                    let runs = std::fs::read_dir(data.path().join("runs"));
                    (!runs.is_ok_and(|mut d| d.next().is_some()))
                        .then(|| "no run started".to_string())
                })
                .await;
            tokio::time::sleep(Duration::from_millis(rng.below(500))).await;
            commit_tasks(&repo, &late, "100 more tasks");
            late_committed = true;
        }
        let target = if late_committed {
            *target
        } else {
            (*target).min(early.len())
        };
        reaper
            .wait_running(&log, Duration::from_secs(180), || {
                let n = ledger_ends(&ledger);
                (n < target).then(|| format!("{n} of the {target} agent runs to wait for ended"))
            })
            .await;
        tokio::time::sleep(Duration::from_millis(rng.below(700))).await;
        reaper.kill_engine();
        let c = store.counts().await.unwrap();
        kills.push(format!(
            "kill {:2} at {:5.1}s: {} agent runs ended; store: {} pending, {} running, {} completed, {} unreported",
            i + 1,
            started.elapsed().as_secs_f64(),
            ledger_ends(&ledger),
            c.pending,
            c.running,
            c.completed,
            c.report_due
        ));
    }
    let killed_for = started.elapsed();
    let status = wait_exit(
        start_engine(&cfg, &log, true),
        Duration::from_secs(300),
        "the last engine (--once)",
    )
    .await;
    let total = started.elapsed();
    assert!(
        status.success(),
        "the last engine failed ({status}):\n{}",
        tail(&log, 60)
    );
    let left = processes_in(data.path());
    assert!(left.is_empty(), "processes outlived the run: {left:?}");

    // The store: every task completed once, successfully, in its first generation.
    let rows: Vec<TaskRow> = store
        .list(&TaskFilter {
            limit: Some(10_000),
            ..TaskFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), TASKS, "every task file became a task");
    let by_key: HashMap<&str, &TaskRow> = rows.iter().map(|r| (r.key.as_str(), r)).collect();
    let mut adopted = 0;
    for t in &rows {
        let r = t
            .result()
            .unwrap_or_else(|| panic!("{} has no result", t.key));
        assert!(
            t.state() == TaskState::Completed && r.success,
            "{}: {:?} {r:?}",
            t.key,
            t.state()
        );
        let events = store.events("proj", &t.key).await.unwrap();
        assert_eq!(
            (t.generation, t.attempts, t.infra_failures),
            (1, 1, 0),
            "{}: one attempt of generation 1: {events:#?}",
            t.key
        );
        let count = |kind: &str| events.iter().filter(|e| e.kind.as_str() == kind).count();
        assert_eq!(count("claimed"), 1, "{}: {events:?}", t.key);
        assert_eq!(count("completed"), 1, "{}: {events:?}", t.key);
        assert_eq!(count("retry"), 0, "{}: {events:?}", t.key);
        adopted += count("adopted");
        // The branch holds the agent's commit, and the status file is on main.
        assert_eq!(
            r.commit_sha.as_deref(),
            repo.repo
                .refname_to_id(&format!("refs/heads/{}", t.branch))
                .ok()
                .map(|o| o.to_string())
                .as_deref(),
            "{}",
            t.key
        );
        let status = repo
            .read("main", &format!(".ai/status/{}.yaml", t.key))
            .unwrap_or_else(|| panic!("no status file for {}", t.key));
        let status: StatusSpec = serde_saphyr::from_str(&status).unwrap();
        assert_eq!(
            (
                status.status,
                status.result.map(|r| r.success),
                status.generation
            ),
            (TaskState::Completed, Some(true), 1),
            "{}",
            t.key
        );
    }
    // One run directory per task: no run was started twice under another attempt.
    let runs: Vec<String> = std::fs::read_dir(data.path().join("runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(runs.len(), TASKS, "{runs:?}");
    assert!(runs.iter().all(|r| r.ends_with("-g1-a1")), "{runs:?}");

    // The ledger: exactly one start and one end per task, by the agent of that task.
    let entries = read_ledger(&ledger);
    let mut starts: HashMap<&str, usize> = HashMap::new();
    let mut ends: HashMap<&str, usize> = HashMap::new();
    for e in &entries {
        let row = by_key
            .get(e.key.as_str())
            .unwrap_or_else(|| panic!("the ledger names an unknown task {}", e.key));
        assert_eq!(e.addressee, row.addressee, "{}", e.key);
        *(if e.start { &mut starts } else { &mut ends })
            .entry(e.key.as_str())
            .or_default() += 1;
    }
    let twice: Vec<_> = starts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "agents ran twice: {twice:?}");
    assert_eq!(starts.len(), TASKS, "every task's agent ran");
    assert_eq!(ends.len(), TASKS, "every task's agent finished");

    // Per addressee, in ledger order (appends are ordered): start, end, start, end..., each
    // end from the same agent process as its start, the clock never going back, and the tasks
    // in the order the engine promises.
    let planned: HashMap<&str, &Planned> = plan.iter().map(|p| (p.key.as_str(), p)).collect();
    let mut per: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
    for e in &entries {
        per.entry(e.addressee.as_str()).or_default().push(e);
    }
    for (addressee, lines) in &per {
        for pair in lines.chunks(2) {
            let [s, e] = pair else {
                panic!("{addressee}: a start without an end: {pair:?}")
            };
            assert!(
                s.start && !e.start && s.key == e.key && s.pid == e.pid && s.ns <= e.ns,
                "{addressee}: runs overlap or interleave: {s:?} then {e:?}"
            );
        }
        for w in lines.windows(2) {
            assert!(
                w[0].ns <= w[1].ns,
                "{addressee}: {:?} then {:?}",
                w[0],
                w[1]
            );
        }
        let order: Vec<(Planned, i64)> = lines
            .iter()
            .filter(|e| e.start)
            .map(|e| {
                (
                    (*planned[e.key.as_str()]).clone(),
                    by_key[e.key.as_str()].id,
                )
            })
            .collect();
        for (i, later) in order.iter().enumerate() {
            for earlier in &order[..i] {
                assert!(
                    !must_precede(later, earlier),
                    "{addressee}: {} (priority {}, id {}, late {}) ran after {} (priority {}, id {}, late {}); order {:?}",
                    later.0.key, later.0.priority, later.1, later.0.late,
                    earlier.0.key, earlier.0.priority, earlier.1, earlier.0.late,
                    order.iter().map(|o| &o.0.key).collect::<Vec<_>>()
                );
            }
        }
    }
    // The workers' own spans (from start to result) of one addressee never overlap either.
    let mut spans: HashMap<&str, Vec<(&str, _, _)>> = HashMap::new();
    for t in &rows {
        let r = t.result().unwrap();
        spans.entry(t.addressee.as_str()).or_default().push((
            t.key.as_str(),
            r.started_at.unwrap(),
            r.finished_at.unwrap(),
        ));
    }
    for (addressee, mut s) in spans {
        s.sort_by_key(|x| x.1);
        for w in s.windows(2) {
            assert!(w[0].2 <= w[1].1, "{addressee}: workers overlap: {w:?}");
        }
    }
    assert!(
        adopted > 0,
        "no kill caught a run in flight: the test did not test adoption"
    );
    let engine_log = std::fs::read_to_string(&log).unwrap_or_default();
    let stale_locks = engine_log.matches("a lock left").count();
    let watched_again = engine_log.matches("watching a run again").count();
    eprintln!(
        "{name}: {TASKS} tasks, {KILLS} kills in {:.1}s, done after {:.1}s; {adopted} runs taken over by a restarted engine, \
         {watched_again} ended runs watched again, 0 lost, 0 retried; {stale_locks} stale git locks removed\n{}",
        killed_for.as_secs_f64(),
        total.as_secs_f64(),
        kills.join("\n")
    );
    drop(reaper);
    db.drop_db().await;
}

/// A Postgres cluster of this test's own, on a free port, so that it can be restarted without
/// disturbing the shared one. Stopped when dropped. `initdb` refuses to run as root: as root,
/// the directory belongs to `postgres` and the tools run as that user.
struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl PgCluster {
    fn start() -> Self {
        let bin = Command::new("pg_config")
            .arg("--bindir")
            .output()
            .ok()
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
            .filter(|b| b.join("initdb").exists())
            .or_else(|| {
                let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                    .ok()?
                    .flatten()
                    .map(|e| e.path().join("bin"))
                    .filter(|b| b.join("initdb").exists())
                    .collect();
                dirs.sort();
                dirs.pop()
            })
            .expect("the Postgres server binaries (initdb, pg_ctl) are needed for this test");
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Self { dir, bin, port };
        if cluster.as_root() {
            let ok = Command::new("chown")
                .arg("-R")
                .arg("postgres:")
                .arg(cluster.dir.path())
                .status()
                .unwrap();
            assert!(ok.success(), "chown of the cluster's directory failed");
        }
        let data = cluster.data().display().to_string();
        cluster.tool(
            "initdb",
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        );
        cluster.start_server();
        cluster
    }

    fn as_root(&self) -> bool {
        // SAFETY: geteuid cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs a server tool (as `postgres` when we are root); panics with its output on failure.
    fn tool(&self, name: &str, args: &[&str]) {
        let exe = self.bin.join(name);
        let mut cmd = if self.as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .current_dir(self.dir.path())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name} {args:?} failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        );
    }

    fn start_server(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={}",
            self.port,
            self.dir.path().display()
        );
        let (data, log) = (
            self.data().display().to_string(),
            self.dir.path().join("server.log").display().to_string(),
        );
        self.tool(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-o", &options, "-w", "-t", "60", "start",
            ],
        );
    }

    /// Stops the server as a crash would: no checkpoint, every connection cut.
    fn crash(&self) {
        let data = self.data().display().to_string();
        self.tool("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data().display().to_string();
        let exe = self.bin.join("pg_ctl");
        let args = ["-D", data.as_str(), "-m", "immediate", "-w", "stop"];
        let _ = if self.as_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .output()
        } else {
            Command::new(&exe).args(args).output()
        };
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_run_the_engine_reconnects_and_finishes() {
    const N: usize = 80;
    let cluster = PgCluster::start();
    {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&cluster.url("postgres"))
            .await
            .unwrap();
        sqlx::query("CREATE DATABASE swarm")
            .execute(&mut c)
            .await
            .unwrap();
        c.close().await.unwrap();
    }
    let url = cluster.url("swarm");
    let data = tempfile::tempdir().unwrap();
    let mut reaper = Reaper {
        dir: data.path().to_path_buf(),
        engine: None,
    };
    let repo = TestRepo::new();
    let tasks: Vec<Planned> = (0..N)
        .map(|i| {
            let addressee = format!("w{}", i % 10);
            Planned {
                key: format!("{addressee}-{i:03}"),
                addressee,
                priority: 0,
                late: false,
            }
        })
        .collect();
    commit_tasks(&repo, &tasks.iter().collect::<Vec<_>>(), "80 tasks");
    let ledger = data.path().join("ledger");
    let cfg = write_config(
        data.path(),
        &url,
        &repo,
        &ledger_agent(&ledger, "0.2"),
        "[limits]\nmax_running = 8\nmax_running_per_project = 8\n",
    );
    let log = data.path().join("engine.log");
    let started = Instant::now();
    reaper.engine = Some(start_engine(&cfg, &log, true));
    reaper
        .wait_running(&log, Duration::from_secs(120), || {
            let n = ledger_ends(&ledger);
            (n < 16).then(|| format!("{n} of 16 agent runs ended"))
        })
        .await;

    // Postgres goes down hard for three seconds and comes back.
    let ended_before = ledger_ends(&ledger);
    cluster.crash();
    let down = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.start_server();
    let up = Instant::now();
    let up_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let outage = up - down;

    let engine = reaper.engine.take().unwrap();
    let status = wait_exit(engine, Duration::from_secs(180), "the engine").await;
    let total = started.elapsed();
    let engine_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.success(),
        "the engine did not survive the restart ({status}):\n{}",
        tail(&log, 80)
    );
    assert!(
        ended_before < N,
        "the restart came after the run ended: it tested nothing"
    );
    let left = processes_in(data.path());
    assert!(left.is_empty(), "processes outlived the run: {left:?}");

    let store = Store::connect(&url).await.unwrap();
    let rows = store.list(&TaskFilter::default()).await.unwrap();
    assert_eq!(rows.len(), N);
    for t in &rows {
        let r = t.result();
        assert!(
            t.state() == TaskState::Completed && r.is_some_and(|r| r.success),
            "{}: {:?} {r:?}",
            t.key,
            t.state()
        );
        assert_eq!((t.generation, t.attempts), (1, 1), "{}", t.key);
        assert!(
            repo.read("main", &format!(".ai/status/{}.yaml", t.key))
                .is_some(),
            "no status file for {}",
            t.key
        );
    }
    let entries = read_ledger(&ledger);
    let mut starts: HashMap<&str, usize> = HashMap::new();
    for e in entries.iter().filter(|e| e.start) {
        *starts.entry(e.key.as_str()).or_default() += 1;
    }
    assert_eq!(starts.len(), N, "every task ran");
    assert!(
        starts.values().all(|n| *n == 1),
        "no task ran twice: {starts:?}"
    );
    // How long after Postgres accepted connections again the engine started new work.
    let resumed = entries
        .iter()
        .filter(|e| e.start && e.ns > up_ns)
        .map(|e| Duration::from_nanos((e.ns - up_ns) as u64))
        .min();
    let errors = engine_log
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
        .count();
    eprintln!(
        "postgres restart: down {:.1}s after {ended_before} of {N} runs ended; first new run {:.2}s after it was back; run took {:.1}s; {errors} warnings and errors in the engine's log",
        outage.as_secs_f64(),
        resumed.map_or(f64::NAN, |d| d.as_secs_f64()),
        total.as_secs_f64()
    );
    store.close().await;
    drop(reaper);
}

/// Pushes status commits from a cache to a bare repository on this machine while another
/// writer commits to the same branch; returns how many pushes landed and the writer's commits
/// missing from the branch afterwards.
fn race_pushes_against_commits(commits: usize) -> (usize, Vec<usize>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let repo = TestRepo::new();
    repo.commit(&[("README.md", Some("x"))], "init");
    let url = repo.url();
    let cache = tempfile::tempdir().unwrap();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let pusher = {
        let (stop, url, cache) = (stop.clone(), url.clone(), cache.path().join("c.git"));
        std::thread::spawn(move || {
            let r = gitops::open_cache(&cache, &url).unwrap();
            let mut pushed = 0;
            while !stop.load(Ordering::SeqCst) {
                let head = gitops::fetch(&r, &url, "main", &gitops::GitAuth::default()).unwrap();
                let file = (format!(".ai/status/s{pushed}.yaml"), b"x".to_vec());
                let c = gitops::commit_files(&r, head, &[file], "status", "swarm", "s@x").unwrap();
                match gitops::push(
                    &r,
                    &url,
                    &c.to_string(),
                    "main",
                    &gitops::GitAuth::default(),
                ) {
                    Ok(()) => pushed += 1,
                    // Lost the race, or met the other writer's lock on the ref.
                    Err(e) => assert!(
                        e.is_non_fast_forward()
                            || coding_swarm::display::error_chain(&e).contains("lock"),
                        "{e}"
                    ),
                }
            }
            pushed
        })
    };
    for i in 0..commits {
        let path = format!("work/{i}");
        while repo
            .try_commit(&[(path.as_str(), Some("x"))], "work")
            .is_err()
        {}
        std::thread::sleep(Duration::from_millis(2 + 2 * (i % 8) as u64));
    }
    stop.store(true, Ordering::SeqCst);
    let pushed = pusher.join().unwrap();
    let missing = (0..commits)
        .filter(|i| repo.read("main", &format!("work/{i}")).is_none())
        .collect();
    (pushed, missing)
}

/// libgit2's local transport moves the remote's ref without a compare-and-swap: a commit that
/// landed between the push's look at the remote and its ref update dropped out of the branch.
#[test]
fn a_push_to_a_local_remote_never_drops_a_commit_that_landed_meanwhile() {
    let (pushed, missing) = race_pushes_against_commits(250);
    assert!(
        missing.is_empty(),
        "{} of 250 commits were dropped from main by {pushed} status pushes: {missing:?}",
        missing.len()
    );
    assert!(pushed > 0, "no push landed: the race was not run");
    eprintln!("{pushed} status pushes landed among 250 commits");
}

/// A writer killed while it held a ref's lock (the engine SIGKILLed during a status push or
/// a fetch) leaves `<ref>.lock` behind, and git refuses that ref for ever. A lock older than
/// `STALE_LOCK` is removed; a fresh one is respected.
#[test]
fn a_lock_left_by_a_killed_writer_is_removed_once_stale() {
    let age = |path: &Path, secs: u64| {
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(std::time::SystemTime::now() - Duration::from_secs(secs))
            .unwrap();
    };
    let repo = TestRepo::new();
    repo.commit(&[("README.md", Some("x"))], "init");
    let url = repo.url();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache_path = cache_dir.path().join("c.git");
    let cache = gitops::open_cache(&cache_path, &url).unwrap();
    let head = gitops::fetch(&cache, &url, "main", &gitops::GitAuth::default()).unwrap();
    let status = (".ai/status/a.yaml".to_string(), b"x".to_vec());
    let c = gitops::commit_files(&cache, head, &[status], "status", "swarm", "s@x").unwrap();

    // In the remote: a fresh lock fails the push and stays; a stale one goes.
    let lock = repo.path().join("refs/heads/main.lock");
    std::fs::write(&lock, "").unwrap();
    let e = gitops::push(
        &cache,
        &url,
        &c.to_string(),
        "main",
        &gitops::GitAuth::default(),
    )
    .unwrap_err();
    assert!(!e.is_non_fast_forward(), "{e}");
    assert!(lock.exists(), "a fresh lock is someone's");
    assert_eq!(repo.head(), Some(head));
    age(&lock, gitops::STALE_LOCK.as_secs() + 5);
    gitops::push(
        &cache,
        &url,
        &c.to_string(),
        "main",
        &gitops::GitAuth::default(),
    )
    .unwrap();
    assert!(!lock.exists());
    assert_eq!(repo.head(), Some(c));

    // In the cache: stale locks of a killed fetch go when the cache is opened; a fresh one stays.
    let stale = [
        cache_path.join("refs/remotes/origin/main.lock"),
        cache_path.join("FETCH_HEAD.lock"),
    ];
    let fresh = cache_path.join("refs/heads/other.lock");
    for l in stale.iter().chain([&fresh]) {
        std::fs::create_dir_all(l.parent().unwrap()).unwrap();
        std::fs::write(l, "").unwrap();
    }
    for l in &stale {
        age(l, gitops::STALE_LOCK.as_secs() + 5);
    }
    drop(cache);
    let cache = gitops::open_cache(&cache_path, &url).unwrap();
    assert!(stale.iter().all(|l| !l.exists()), "stale locks stay");
    assert!(fresh.exists(), "a fresh lock is someone's");
    assert_eq!(
        gitops::fetch(&cache, &url, "main", &gitops::GitAuth::default()).unwrap(),
        c
    );
}

/// The leader's lock lives on one connection. When that connection dies (a database restart,
/// here a terminated backend), the engine takes the lock again and keeps leading; if another
/// engine took it first, it gives up leadership. Never both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lock_connection_dies_takes_the_lock_again_or_stops() {
    use coding_swarm::engine::leader;
    use sqlx::Connection;
    let db = TestDb::postgres().await;
    let data = tempfile::tempdir().unwrap();
    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let cut = "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_locks
               WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";
    let holders = "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
                     AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";
    let first = leader::acquire(&db.url, data.path(), || {}).await.unwrap();

    // Nobody else wants it: the leader takes it again, on a new connection, and stays the
    // leader. `pg_terminate_backend` returns before the backend has exited, and until then the
    // dying connection still holds the lock: only a new holder's pid, with the old backend
    // gone, shows the lock was taken again.
    let old: Vec<i32> = sqlx::query_scalar(holders)
        .fetch_all(&mut admin)
        .await
        .unwrap();
    assert_eq!(old.len(), 1, "the leader's lock connection: {old:?}");
    let n: i64 = sqlx::query_scalar(cut).fetch_one(&mut admin).await.unwrap();
    assert_eq!(n, 1, "the leader's lock connection");
    wait_for(
        "the lock to be held again by a new connection",
        Duration::from_secs(20),
        async || {
            let now: Vec<i32> = sqlx::query_scalar(holders)
                .fetch_all(&mut admin)
                .await
                .unwrap();
            let old_alive: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)")
                    .bind(old[0])
                    .fetch_one(&mut admin)
                    .await
                    .unwrap();
            !old_alive && now.len() == 1 && now[0] != old[0]
        },
    )
    .await;
    assert!(
        !*first.lost.borrow(),
        "the leader gave up a lock nobody took"
    );

    // Another engine takes it between the cut and the leader's next look: the leader stops.
    let mut other = sqlx::PgConnection::connect(&db.url).await.unwrap();
    wait_for(
        "another engine to take the lock",
        Duration::from_secs(30),
        async || {
            sqlx::query_scalar::<_, i64>(cut)
                .fetch_one(&mut admin)
                .await
                .unwrap();
            // The engine's key, 0x737761726d ("swarm").
            sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock(495924114029)")
                .fetch_one(&mut other)
                .await
                .unwrap()
        },
    )
    .await;
    let mut lost = first.lost.clone();
    tokio::time::timeout(Duration::from_secs(20), lost.wait_for(|l| *l))
        .await
        .expect("the leader stops when another engine holds the lock")
        .unwrap();
    drop(first);
    other.close().await.unwrap();
    admin.close().await.unwrap();
    db.drop_db().await;
}

/// A leader whose lock session stalls (its database backend stopped, as a paused VM, a network
/// blip or a frozen process would leave it) for longer than the keepalive: the leader notices,
/// finds the lock still held by its own old session, ends that session, and takes the lock
/// back once the server lets go; it does not step down for a lock nobody else took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lock_session_stalls_takes_the_lock_back() {
    use coding_swarm::engine::leader;
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use sqlx::Connection;
    let db = TestDb::postgres().await;
    let data = tempfile::tempdir().unwrap();
    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let holders = "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
                     AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";
    let first = leader::acquire(&db.url, data.path(), || {}).await.unwrap();
    // Another installation on the same server leads its own database with the same key: its
    // lock is no rival of this one.
    let neighbour = TestDb::postgres().await;
    let mut other = sqlx::PgConnection::connect(&neighbour.url).await.unwrap();
    assert!(
        sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock(495924114029)")
            .fetch_one(&mut other)
            .await
            .unwrap()
    );
    let old: Vec<i32> = sqlx::query_scalar(holders)
        .fetch_all(&mut admin)
        .await
        .unwrap();
    assert_eq!(old.len(), 1, "the leader's lock session: {old:?}");
    let backend = Pid::from_raw(old[0]);
    kill(backend, Signal::SIGSTOP).unwrap();
    // Longer than the keepalive's probe and timeout (5 s each): the leader has noticed, and
    // found its own stalled session holding the lock.
    tokio::time::sleep(Duration::from_secs(14)).await;
    kill(backend, Signal::SIGCONT).unwrap();
    wait_for(
        "the lock to be held again by a new session",
        Duration::from_secs(40),
        async || {
            let now: Vec<i32> = sqlx::query_scalar(holders)
                .fetch_all(&mut admin)
                .await
                .unwrap();
            now.len() == 1 && now[0] != old[0]
        },
    )
    .await;
    assert!(
        !*first.lost.borrow(),
        "the leader stepped down for a lock only its own old session held"
    );
    drop(first);
    admin.close().await.unwrap();
    other.close().await.unwrap();
    neighbour.drop_db().await;
    db.drop_db().await;
}

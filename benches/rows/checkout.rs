//! The checkout rows of BENCHMARKS.md ("Checkout"), shared by `benches/checkout.rs` and
//! `figures -- --only checkout`: the run's checkout before its agent starts, beside the git CLI's
//! `clone --depth 1 --single-branch` of the same branch, on a generated repository (100,000
//! commits, 20,000 files, made once with `git fast-import` and kept under
//! `target/bench/checkout/`) or on any repository `SWARM_BENCH_REPO` names.
//!
//! Rows: `local` (the project's repository a path on this machine, then a `file://` URL),
//! `http` (a remote over HTTP, the cache fetched from it as sync does), `history` (the same
//! tree under 1,000 and 100,000 commits: flat in history length?) and `pod` (a Kubernetes
//! worker: no cache, over HTTP; its disk use beside the checked-out tree).

#[path = "../../tests/it/githttp_server.rs"]
#[allow(dead_code)]
mod githttp_server;

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use coding_swarm::config::{AgentProfile, Secret};
use coding_swarm::gitops::{self, GitAuth};
use coding_swarm::job::JobSpec;
use coding_swarm::worker::checkout;
use serde_json::{json, Value};

const TOKEN: &str = "bench-token";
const FILES: usize = 20_000;
const COMMITS: usize = 100_000;

/// What to run: `rounds` of each row, the rows `only` names (all when `None`).
pub struct Options {
    pub rounds: usize,
    pub only: Option<HashSet<String>>,
}

impl Options {
    fn wants(&self, row: &str) -> bool {
        self.only.as_ref().is_none_or(|o| o.contains(row))
    }
}

fn bench_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench/checkout")
}

/// A bare repository of `commits` commits over `files` files (20 lines each, one file changed
/// per commit after the first), generated once with `git fast-import` and kept.
fn generated(commits: usize, files: usize) -> PathBuf {
    let repo = bench_dir().join(format!("repo-{commits}x{files}.git"));
    let done = repo.join("generated");
    if done.exists() {
        return repo;
    }
    eprintln!(
        "generating {} ({commits} commits, {files} files)...",
        repo.display()
    );
    let _ = std::fs::remove_dir_all(&repo);
    std::fs::create_dir_all(&repo).unwrap();
    run(Command::new("git")
        .args(["init", "-q", "--bare", "-b", "main"])
        .arg(&repo));
    let mut child = Command::new("git")
        .arg("-C")
        .arg(&repo)
        .args(["fast-import", "--quiet"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut w = std::io::BufWriter::new(child.stdin.take().unwrap());
        let content = |i: usize, rev: usize| {
            let mut s = format!("// file {i} revision {rev}\n");
            for j in 0..20 {
                s.push_str(&format!(
                    "line {j} of file {i}: lorem ipsum dolor sit amet {}\n",
                    (i * 31 + j * 7) % 997
                ));
            }
            s
        };
        let path = |i: usize| format!("d{:03}/f{:03}.txt", i / 100, i % 100);
        for c in 0..commits {
            let msg = format!("commit {c}\n");
            write!(
                w,
                "commit refs/heads/main\ncommitter Bench <bench@example.com> {} +0000\ndata {}\n{msg}",
                1_700_000_000 + c,
                msg.len()
            )
            .unwrap();
            let changed: Vec<usize> = if c == 0 {
                (0..files).collect()
            } else {
                vec![(c * 7919) % files]
            };
            for i in changed {
                let d = content(i, c);
                write!(w, "M 644 inline {}\ndata {}\n{d}", path(i), d.len()).unwrap();
            }
            writeln!(w).unwrap();
        }
    }
    assert!(child.wait().unwrap().success(), "git fast-import failed");
    std::fs::write(&done, "").unwrap();
    repo
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The branch `HEAD` of a repository names.
fn head_branch(repo: &Path) -> String {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(
            repo.join(".git")
                .is_dir()
                .then(|| repo.join(".git"))
                .unwrap_or(repo.to_path_buf()),
        )
        .args(["symbolic-ref", "--short", "HEAD"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn task(url: &str, base: &str) -> JobSpec {
    JobSpec {
        version: coding_swarm::job::VERSION,
        project: "bench".into(),
        key: "checkout".into(),
        generation: 1,
        attempt: 1,
        run_name: "bench-checkout-g1-a1".into(),
        repo: url.into(),
        branch: "swarm/bench-checkout".into(),
        base: base.into(),
        kind: None,
        prompt: "p".into(),
        agent_name: "true".into(),
        agent: (&AgentProfile::command(vec!["true".into()])).into(),
        git_name: "Bench".into(),
        git_email: "bench@example.com".into(),
        hooks: None,
    }
}

fn auth() -> GitAuth {
    GitAuth::new(Secret::new(TOKEN))
}

/// The project's cache as sync keeps it for `url`: a repository on this machine shared, a
/// remote fetched.
fn cache_for(url: &str, branch: &str, dir: &Path) -> PathBuf {
    let cache = gitops::cache_path(dir, "bench");
    let repo = gitops::open_cache(&cache, url).unwrap();
    if let Some(local) = gitops::local_git_dir(url) {
        gitops::share_objects(&repo, &local).unwrap();
    }
    let repo = gitops::open_cache(&cache, url).unwrap();
    let head = gitops::remote_head(&repo, url, branch, &auth())
        .unwrap()
        .expect("the branch exists");
    gitops::bring_cache_to(&repo, url, branch, head, &auth()).unwrap();
    cache
}

/// The worker's checkout step as a run of the local runtime does it (with the cache named:
/// checkout and pins; `cache` None: as in a pod). Seconds.
fn ours(task: &JobSpec, dest: &Path, cache: Option<&Path>) -> f64 {
    let _ = std::fs::remove_dir_all(dest);
    let t = Instant::now();
    let shared = checkout::shared_objects(task, cache);
    let c = checkout::prepare(task, dest, &auth(), cache, &shared).unwrap();
    if let Some(cache) = cache {
        checkout::pin(cache, &task.run_name, &c.borrowed).unwrap();
    }
    let s = t.elapsed().as_secs_f64();
    if let Some(cache) = cache {
        checkout::unpin(cache, &task.run_name).unwrap();
    }
    s
}

/// `git clone --depth 1 --single-branch` of `branch`. Seconds.
fn git_shallow(url: &str, branch: &str, dest: &Path) -> f64 {
    let _ = std::fs::remove_dir_all(dest);
    let t = Instant::now();
    run(Command::new("git")
        .args([
            "clone",
            "-q",
            "--depth",
            "1",
            "--single-branch",
            "--branch",
            branch,
        ])
        .arg(url)
        .arg(dest));
    t.elapsed().as_secs_f64()
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Bytes on disk under `dir` (as `du`), without `skip` directories.
fn disk_use(dir: &Path, skip: Option<&str>) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if skip.is_some_and(|s| e.file_name() == s) {
                continue;
            }
            let m = e.metadata().unwrap();
            total += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}

/// Writes back what the page cache holds (`sync(2)`), so a round does not pay for the last.
fn settle() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// Ours against the CLI, alternating, `rounds` times.
fn side_by_side(
    name: &str,
    rounds: usize,
    mut ours: impl FnMut() -> f64,
    mut theirs: impl FnMut() -> f64,
) -> Value {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        // Each starts with nothing left to write back: 20,000 files of the last one would
        // otherwise be flushed while the next is timed.
        settle();
        a.push(ours());
        settle();
        b.push(theirs());
        eprintln!(
            "  {name} round {}: ours {:.3} s, git clone --depth 1 {:.3} s",
            r + 1,
            a[r],
            b[r]
        );
    }
    let (ma, mb) = (median(&a), median(&b));
    eprintln!(
        "{name}: ours p50 {ma:.3} s, git p50 {mb:.3} s, ratio {:.2}",
        ma / mb
    );
    json!({"ours_s": a, "git_shallow_s": b, "ours_p50_s": ma, "git_shallow_p50_s": mb, "ratio": ma / mb})
}

/// Every row `o` asks for, as JSON (also written to `target/bench/checkout.json`).
pub fn measure(o: &Options) -> Value {
    let work = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let (repo, label) = match std::env::var_os("SWARM_BENCH_REPO") {
        Some(r) => {
            let p = std::fs::canonicalize(PathBuf::from(r)).unwrap();
            (p.clone(), p.display().to_string())
        }
        None => (
            generated(COMMITS, FILES),
            format!("generated: {COMMITS} commits, {FILES} files"),
        ),
    };
    let branch = head_branch(&repo);
    eprintln!("repository {label}, branch {branch}");
    let mut out = json!({"repository": label, "branch": branch, "rounds": o.rounds});
    let path_url = repo.display().to_string();
    let file_url = format!("file://{}", repo.display());
    let dest = work.path().join("checkout");
    let theirs = work.path().join("theirs");

    if o.wants("local") {
        for (row, url) in [("local_path", &path_url), ("local_file_url", &file_url)] {
            let data = work.path().join(format!("data-{row}"));
            let cache = cache_for(url, &branch, &data);
            let t = task(url, &branch);
            out[row] = side_by_side(
                row,
                o.rounds,
                || ours(&t, &dest, Some(&cache)),
                || git_shallow(&file_url, &branch, &theirs),
            );
        }
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let served = work.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    std::os::unix::fs::symlink(&repo, served.join("repo.git")).unwrap();
    let server = rt.block_on(githttp_server::GitHttpServer::start(served.clone(), TOKEN));
    let http_url = format!("{}/repo.git", server.base);
    let cli_url = http_url.replacen("http://", &format!("http://x-access-token:{TOKEN}@"), 1);

    if o.wants("http") {
        let data = work.path().join("data-http");
        let cache = cache_for(&http_url, &branch, &data);
        let t = task(&http_url, &branch);
        out["remote_http"] = side_by_side(
            "remote_http",
            o.rounds,
            || ours(&t, &dest, Some(&cache)),
            || git_shallow(&cli_url, &branch, &theirs),
        );
    }

    if o.wants("pod") {
        let t = task(&http_url, &branch);
        let mut row = side_by_side(
            "pod_http",
            o.rounds,
            || ours(&t, &dest, None),
            || git_shallow(&cli_url, &branch, &theirs),
        );
        let tree = disk_use(&dest, Some(".git"));
        let whole = disk_use(&dest, None);
        eprintln!(
            "pod_http disk: checkout {:.1} MB, tree {:.1} MB, ratio {:.2}",
            whole as f64 / 1e6,
            tree as f64 / 1e6,
            whole as f64 / tree as f64
        );
        row["disk_bytes"] = json!(whole);
        row["tree_bytes"] = json!(tree);
        row["disk_ratio"] = json!(whole as f64 / tree as f64);
        out["pod_http"] = row;
    }

    if o.wants("history") && std::env::var_os("SWARM_BENCH_REPO").is_none() {
        let mut row = json!({});
        for commits in [1_000, COMMITS] {
            let repo = generated(commits, FILES);
            let url = format!("file://{}", repo.display());
            let data = work.path().join(format!("data-history-{commits}"));
            let cache = cache_for(&url, "main", &data);
            let t = task(&url, "main");
            let times: Vec<f64> = (0..o.rounds)
                .map(|_| {
                    settle();
                    ours(&t, &dest, Some(&cache))
                })
                .collect();
            eprintln!("history {commits}: ours p50 {:.3} s", median(&times));
            row[format!("commits_{commits}_p50_s")] = json!(median(&times));
        }
        row["ratio_100000_to_1000"] = json!(
            row["commits_100000_p50_s"].as_f64().unwrap()
                / row["commits_1000_p50_s"].as_f64().unwrap()
        );
        out["history"] = row;
    }
    drop(server);

    let text = serde_json::to_string_pretty(&out).unwrap();
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench/checkout.json");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, text).unwrap();
    out
}

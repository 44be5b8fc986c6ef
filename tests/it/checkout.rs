//! The run's checkout on this machine borrows the project's cache (alternates) instead of
//! copying the history: it fetches only what the cache lacks, pins what it borrows while the
//! run goes (a force-push and a `git gc --prune=now` of the cache meanwhile break nothing), and
//! still pushes. The remote is served over HTTP, so the cache holds the objects itself.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use coding_swarm::config::AgentProfile;
use coding_swarm::gitops::{self, GitAuth};
use coding_swarm::job::JobSpec;
use coding_swarm::spec::RunResult;

use crate::githttp::GitHttpServer;
use crate::support::{command, TestRepo, SWARM};

const TOKEN: &str = "ghs_checkout-test-token-0123456789abcdef";

fn task(url: &str, script: &str) -> JobSpec {
    JobSpec {
        version: coding_swarm::job::VERSION,
        project: "proj".into(),
        key: "job".into(),
        generation: 1,
        attempt: 1,
        run_name: "proj-job-g1-a1".into(),
        repo: url.into(),
        branch: "swarm/job".into(),
        base: "main".into(),
        kind: None,
        prompt: "p".into(),
        agent_name: "sh".into(),
        agent: (&AgentProfile::command(vec!["sh".into(), "-c".into(), script.into()])).into(),
        git_name: "Swarm Bot".into(),
        git_email: "bot@example.com".into(),
        hooks: None,
    }
}

/// `swarm worker` as the local runtime starts it, with the project's cache named; without
/// one, as in a pod.
fn worker(dir: &Path, task: &JobSpec, cache: Option<&Path>) -> RunResult {
    std::fs::write(dir.join("task.json"), serde_json::to_vec(task).unwrap()).unwrap();
    let log = std::fs::File::create(dir.join("log")).unwrap();
    let mut cmd = command(SWARM);
    if let Some(cache) = cache {
        cmd.env(coding_swarm::job::CACHE_ENV, cache);
    }
    cmd.args(["worker", "--run-dir"])
        .arg(dir)
        .env("SWARM_GIT_TOKEN", TOKEN)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .status()
        .unwrap();
    serde_json::from_slice(&std::fs::read(dir.join("result.json")).unwrap()).unwrap()
}

/// The project's cache as sync keeps it: `main` fetched from `url`.
fn cache_of(url: &str, dir: &Path) -> PathBuf {
    let cache = gitops::cache_path(dir, "proj");
    let repo = gitops::open_cache(&cache, url).unwrap();
    gitops::fetch(
        &repo,
        url,
        "main",
        &GitAuth::new(coding_swarm::config::Secret::new(TOKEN)),
    )
    .unwrap();
    cache
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Objects in a repository's own object directory (not those it borrows).
fn own_objects(git_dir: &Path) -> u64 {
    git(git_dir, &["count-objects", "-v"])
        .lines()
        .filter_map(|l| l.split_once(": "))
        .filter(|(k, _)| *k == "count" || *k == "in-pack")
        .map(|(_, v)| v.parse::<u64>().unwrap())
        .sum()
}

fn history(repo: &TestRepo, commits: usize) {
    for i in 0..commits {
        repo.commit(
            &[(
                &format!("src/f{}.txt", i % 7),
                Some(&format!("version {i}\n")),
            )],
            &format!("commit {i}"),
        );
    }
}

/// The run succeeded and changed something; else its result and log, to say why.
fn assert_changed(result: &RunResult, dir: &Path) {
    assert!(
        result.success && result.changed,
        "{result:?}\n{}",
        log_of(dir)
    );
}

/// What the agent's script wrote to `count` beside the checkout (a number of commits).
fn counted(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("count"))
        .unwrap()
        .trim()
        .to_string()
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("log")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_borrows_the_caches_history_fetches_only_what_is_new_and_pushes() {
    let repo = TestRepo::new();
    history(&repo, 60);
    let server = GitHttpServer::start(repo.dir.path().to_path_buf(), TOKEN).await;
    let url = format!("{}/remote.git", server.base);
    let data = tempfile::tempdir().unwrap();
    let cache = cache_of(&url, data.path());
    // The remote moves on after the cache's last fetch: that commit is fetched, nothing else.
    let newest = repo.commit(&[("NEWS", Some("one more\n"))], "after the cache");

    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "git rev-list --count HEAD > ../count; git --git-dir={} for-each-ref refs/swarm/pins > ../pins; echo done > work.txt",
        cache.display()
    );
    let (d, t, c) = (dir.path().to_path_buf(), task(&url, &script), cache.clone());
    let result = tokio::task::spawn_blocking(move || worker(&d, &t, Some(&c)))
        .await
        .unwrap();
    assert_changed(&result, dir.path());

    let checkout = dir.path().join("checkout");
    assert_eq!(
        std::fs::read_to_string(checkout.join(".git/objects/info/alternates")).unwrap(),
        format!("{}\n", cache.join("objects").display()),
        "the checkout borrows the cache's objects"
    );
    // The agent had the whole history to read: 61 commits.
    assert_eq!(counted(dir.path()), "61");
    // Its own object directory holds the one new commit (commit, two trees, a blob) and the
    // run's commit (commit, tree, blob), not the 60 commits before.
    let own = own_objects(&checkout);
    assert!(
        own <= 8,
        "{own} objects of its own:\n{}",
        log_of(dir.path())
    );
    // While it ran, what it borrowed was pinned in the cache; the pins went with the run.
    let pins = std::fs::read_to_string(dir.path().join("pins")).unwrap();
    assert!(pins.contains("refs/swarm/pins/proj-job-g1-a1/"), "{pins:?}");
    assert_eq!(git(&cache, &["for-each-ref", "refs/swarm"]), "");
    // And the branch reached the remote, on the newest commit of main.
    let pushed = repo.repo.refname_to_id("refs/heads/swarm/job").unwrap();
    assert_eq!(result.commit_sha, Some(pushed.to_string()));
    let commit = repo.repo.find_commit(pushed).unwrap();
    assert_eq!(commit.parent_id(0).unwrap(), newest);
    assert_eq!(
        repo.read("swarm/job", "work.txt").as_deref(),
        Some("done\n")
    );
}

/// A force-push rewrites `main` and a `git gc --prune=now` of the cache runs while the agent
/// works: the run keeps reading its history and pushes it, as the cache kept what it pinned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_force_push_and_a_gc_of_the_cache_during_a_run_do_not_break_it() {
    let repo = TestRepo::new();
    history(&repo, 30);
    let old_head = repo.head().unwrap();
    let server = GitHttpServer::start(repo.dir.path().to_path_buf(), TOKEN).await;
    let url = format!("{}/remote.git", server.base);
    let data = tempfile::tempdir().unwrap();
    let cache = cache_of(&url, data.path());

    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("agent-started");
    let go = dir.path().join("agent-go");
    for fifo in [&started, &go] {
        nix::unistd::mkfifo(fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    }
    let script = format!(
        "echo > {started}; cat {go} > /dev/null; git rev-list --count HEAD > ../count; git log -p > /dev/null && echo done > work.txt",
        started = started.display(),
        go = go.display()
    );
    let (d, t, c, s) = (
        dir.path().to_path_buf(),
        task(&url, &script),
        cache.clone(),
        started.clone(),
    );
    let run = std::thread::spawn(move || {
        let result = worker(&d, &t, Some(&c));
        // A worker that ended before its agent started must not leave the test waiting.
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&s);
        result
    });
    let s = started.clone();
    tokio::task::spawn_blocking(move || std::fs::read(s).unwrap())
        .await
        .unwrap();
    assert!(
        !run.is_finished(),
        "the worker ended early:\n{}",
        log_of(dir.path())
    );

    // A new root commit replaces main's history; the cache follows it and collects garbage.
    let sig = git2::Signature::now("Person", "p@example.com").unwrap();
    let tree = {
        let mut b = repo.repo.treebuilder(None).unwrap();
        b.insert("other.txt", repo.repo.blob(b"other\n").unwrap(), 0o100644)
            .unwrap();
        b.write().unwrap()
    };
    let tree = repo.repo.find_tree(tree).unwrap();
    let rewritten = repo
        .repo
        .commit(None, &sig, &sig, "rewritten", &tree, &[])
        .unwrap();
    repo.force_main(rewritten);
    let c = cache.clone();
    let u = url.clone();
    tokio::task::spawn_blocking(move || {
        let r = gitops::open_cache(&c, &u).unwrap();
        gitops::fetch(
            &r,
            &u,
            "main",
            &GitAuth::new(coding_swarm::config::Secret::new(TOKEN)),
        )
        .unwrap();
    })
    .await
    .unwrap();
    git(&cache, &["gc", "--prune=now", "--quiet"]);
    // The old history survived in the cache only through the run's pins.
    assert_eq!(
        git(&cache, &["cat-file", "-t", &old_head.to_string()]),
        "commit"
    );
    tokio::task::spawn_blocking(move || std::fs::write(go, "go").unwrap())
        .await
        .unwrap();

    let result = tokio::task::spawn_blocking(move || run.join().unwrap())
        .await
        .unwrap();
    assert_changed(&result, dir.path());
    assert_eq!(counted(dir.path()), "30");
    let pushed = repo.repo.refname_to_id("refs/heads/swarm/job").unwrap();
    assert_eq!(
        repo.repo.find_commit(pushed).unwrap().parent_id(0).unwrap(),
        old_head
    );
    // Unpinned at the end, the next gc may take the old history.
    assert_eq!(git(&cache, &["for-each-ref", "refs/swarm"]), "");
}

/// A pod has no cache: its checkout fetches the branch and its base only, one commit deep, and
/// deepens them until they meet when the branch exists (a review diffs against the base).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pods_checkout_is_shallow_and_still_pushes() {
    let repo = TestRepo::new();
    history(&repo, 80);
    let fork = repo.head().unwrap();
    history(&repo, 20);
    let main = repo.head().unwrap();
    // The branch under review: two commits on main as it was 20 commits ago.
    let sig = git2::Signature::now("Person", "p@example.com").unwrap();
    let mut tip = fork;
    for i in 0..2 {
        let parent = repo.repo.find_commit(tip).unwrap();
        let mut b = repo
            .repo
            .treebuilder(Some(&parent.tree().unwrap()))
            .unwrap();
        let blob = repo.repo.blob(format!("change {i}\n").as_bytes()).unwrap();
        b.insert("change.txt", blob, 0o100644).unwrap();
        let tree = repo.repo.find_tree(b.write().unwrap()).unwrap();
        tip = repo
            .repo
            .commit(
                Some("refs/heads/swarm/job"),
                &sig,
                &sig,
                "change",
                &tree,
                &[&parent],
            )
            .unwrap();
    }
    let server = GitHttpServer::start(repo.dir.path().to_path_buf(), TOKEN).await;
    let url = format!("{}/remote.git", server.base);

    let script = "git rev-list --count HEAD > ../count; git merge-base HEAD origin/main > ../base; git diff --stat origin/main...HEAD > ../diff; echo reviewed > review.txt";
    let dir = tempfile::tempdir().unwrap();
    let mut t = task(&url, script);
    t.kind = Some("review".into());
    let d = dir.path().to_path_buf();
    let result = tokio::task::spawn_blocking(move || worker(&d, &t, None))
        .await
        .unwrap();
    assert_changed(&result, dir.path());
    let checkout = dir.path().join("checkout");
    assert!(checkout.join(".git/shallow").exists(), "a shallow checkout");
    assert!(!checkout.join(".git/objects/info/alternates").exists());
    let count: u32 = counted(dir.path()).parse().unwrap();
    assert!(count < 60, "{count} of 82 commits fetched");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("base"))
            .unwrap()
            .trim(),
        fork.to_string()
    );
    assert!(std::fs::read_to_string(dir.path().join("diff"))
        .unwrap()
        .contains("change.txt"));
    let pushed = repo.repo.refname_to_id("refs/heads/swarm/job").unwrap();
    assert_eq!(
        repo.repo.find_commit(pushed).unwrap().parent_id(0).unwrap(),
        tip
    );

    // A new branch: one commit deep, nothing more.
    let dir = tempfile::tempdir().unwrap();
    let mut t = task(
        &url,
        "git rev-list --count HEAD > ../count; echo new > new.txt",
    );
    t.branch = "swarm/new".into();
    let d = dir.path().to_path_buf();
    let result = tokio::task::spawn_blocking(move || worker(&d, &t, None))
        .await
        .unwrap();
    assert_changed(&result, dir.path());
    assert_eq!(counted(dir.path()), "1");
    let pushed = repo.repo.refname_to_id("refs/heads/swarm/new").unwrap();
    assert_eq!(
        repo.repo.find_commit(pushed).unwrap().parent_id(0).unwrap(),
        main
    );
}

/// The agent points the checkout's `objects/info/alternates` at another repository on the
/// machine and commits a file whose content only that repository has: the worker writes the
/// alternates again before it pushes, so the commit cannot be read and nothing of the other
/// repository reaches the remote.
#[test]
fn what_the_agent_writes_into_alternates_lends_the_push_nothing() {
    let repo = TestRepo::new();
    history(&repo, 3);
    let other = TestRepo::new();
    let stolen = other
        .repo
        .blob(b"another project's private file\n")
        .unwrap();
    let script = format!(
        "echo {objects} >> .git/objects/info/alternates; \
         git update-index --add --cacheinfo 100644,{stolen},stolen.txt && \
         git -c user.name=a -c user.email=a@example.com commit -q -m take && echo took",
        objects = other.path().join("objects").display()
    );
    let dir = tempfile::tempdir().unwrap();
    let result = worker(dir.path(), &task(&repo.url(), &script), None);
    assert_eq!(
        result.summary.as_deref(),
        Some("took"),
        "{result:?}\n{}",
        log_of(dir.path())
    );
    assert!(!result.success, "{result:?}");
    assert!(
        repo.repo.find_blob(stolen).is_err(),
        "the other repository's blob was pushed"
    );
    assert!(repo.repo.refname_to_id("refs/heads/swarm/job").is_err());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("checkout/.git/objects/info/alternates")).unwrap(),
        format!("{}\n", repo.path().join("objects").display())
    );
}

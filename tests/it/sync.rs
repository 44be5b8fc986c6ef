//! Sync semantics against real bare git repositories: create, update, new generation, delete of
//! a pending and of a running task, a bad file beside good ones, a force-pushed history, an
//! unmoved remote, and a lost cache.

use std::collections::HashMap;

use chrono::Utc;
use coding_swarm::config::ProjectConfig;
use coding_swarm::gitops::cache_path;
use coding_swarm::model::ClaimLimits;
use coding_swarm::model::Outcome;
use coding_swarm::spec::{RunResult, TaskState};
use coding_swarm::store::Store;
use coding_swarm::sync::{sync_project, SyncReport};

use crate::support::{Backend, TestDb, TestRepo};

crate::on_both_backends!(
    gitops_semantics,
    bad_files_are_reported_and_never_stop_good_ones,
    force_push_and_lost_cache
);

fn project(repo: &TestRepo) -> ProjectConfig {
    ProjectConfig {
        name: "proj".into(),
        repo: repo.url(),
        default_branch: "main".into(),
        poll_interval: None,
        max_running: None,
        github: None,
        required_checks: None,
    }
}

async fn sync(store: &Store, data: &std::path::Path, repo: &TestRepo) -> SyncReport {
    sync_project(
        store,
        data,
        &project(repo),
        &coding_swarm::gitops::GitAuth::default(),
    )
    .await
    .unwrap()
}

async fn state(store: &Store, key: &str) -> Option<(TaskState, i32, String)> {
    store
        .task("proj", key)
        .await
        .unwrap()
        .map(|t| (t.state(), t.generation, t.prompt))
}

fn limits() -> ClaimLimits {
    ClaimLimits {
        max_running: 10,
        max_running_per_project: 10,
        per_project_overrides: HashMap::new(),
        batch: 10,
        paused_agents: Default::default(),
        default_agent: "claude".into(),
        ..Default::default()
    }
}

async fn gitops_semantics(backend: Backend) {
    let db = TestDb::new(backend).await;
    let data = tempfile::tempdir().unwrap();
    let repo = TestRepo::new();
    let s = &db.store;
    repo.commit(&[("README.md", Some("hi\n"))], "init");
    let r = sync(s, data.path(), &repo).await;
    assert_eq!((r.fetched, r.changed_files), (true, 0));

    repo.commit(
        &[
            (".ai/tasks/pend.yaml", Some("addressee: w1\nprompt: one\n")),
            (".ai/tasks/done.yaml", Some("addressee: w2\nprompt: one\n")),
            (".ai/tasks/run.yaml", Some("addressee: w3\nprompt: one\n")),
            (
                ".ai/tasks/removed.yaml",
                Some("addressee: w1\nprompt: later\n"),
            ),
            (".ai/plan.md", Some("# plan\n")),
        ],
        "tasks",
    );
    let r = sync(s, data.path(), &repo).await;
    assert_eq!((r.changed_files, r.actions, r.bad_files), (4, 4, 0));
    for k in ["pend", "done", "run", "removed"] {
        assert_eq!(state(s, k).await.unwrap().0, TaskState::Pending, "{k}");
    }

    // An unmoved remote costs an ls-remote: nothing fetched, nothing changed.
    let r = sync(s, data.path(), &repo).await;
    assert_eq!((r.fetched, r.changed_files), (false, 0));

    // Run two, complete one of them.
    let claimed = crate::support::claim(s, &limits(), Utc::now()).await;
    let by_key: HashMap<&str, _> = claimed.iter().map(|t| (t.key.as_str(), t)).collect();
    let done = by_key["done"];
    crate::support::finish(
        s,
        done.id,
        1,
        &Outcome::Completed(RunResult {
            success: true,
            ..RunResult::default()
        }),
        Utc::now(),
    )
    .await;
    assert_eq!(
        state(s, "pend").await.unwrap().0,
        TaskState::Running,
        "pend is first for w1"
    );
    // pend is running now; make "removed" the pending one we delete, and "run" the running one.
    repo.commit(
        &[
            (".ai/tasks/done.yaml", Some("addressee: w2\nprompt: two\n")),
            (
                ".ai/tasks/pend.yaml",
                Some("addressee: w3\nprompt: changed while running\n"),
            ),
            (".ai/tasks/removed.yaml", None),
            (".ai/tasks/run.yaml", None),
            (".ai/tasks/new.yaml", Some("addressee: w4\nprompt: fresh\n")),
            ("src/unrelated.rs", Some("fn main() {}\n")),
        ],
        "changes",
    );
    let r = sync(s, data.path(), &repo).await;
    assert_eq!(r.changed_files, 5, "only .ai/tasks/ is read");

    // Changed spec of a completed task: a new generation, pending again.
    assert_eq!(
        state(s, "done").await.unwrap(),
        (TaskState::Pending, 2, "two".into())
    );
    // Deleted pending task: gone.
    assert!(state(s, "removed").await.is_none());
    // Deleted running task: asked to stop.
    let run = s.task("proj", "run").await.unwrap().unwrap();
    assert!(run.cancel_requested && run.file_deleted && run.state() == TaskState::Running);
    // Changed spec of a running task: stored, runs again after the current run.
    let pend = s.task("proj", "pend").await.unwrap().unwrap();
    assert_eq!(
        (pend.state(), pend.prompt.as_str()),
        (TaskState::Running, "changed while running")
    );
    assert_ne!(pend.run_spec_hash.as_deref(), Some(pend.spec_hash.as_str()));
    // Its new addressee (w3) has a running task too: the move waits for the run to end.
    assert_eq!(pend.addressee, "w1");
    assert_eq!(state(s, "new").await.unwrap().0, TaskState::Pending);
    let outcome = coding_swarm::model::decide(
        &pend,
        RunResult {
            success: true,
            ..RunResult::default()
        },
        &coding_swarm::model::RetryPolicy {
            max_infra_retries: 3,
            backoff: std::time::Duration::from_secs(1),
        },
        Utc::now(),
    );
    assert!(matches!(outcome, Outcome::NextGeneration(_)), "{outcome:?}");
    crate::support::finish(s, pend.id, 1, &outcome, Utc::now()).await;
    let pend = s.task("proj", "pend").await.unwrap().unwrap();
    assert_eq!(
        (
            pend.state(),
            pend.generation,
            pend.attempts,
            pend.addressee.as_str()
        ),
        (TaskState::Pending, 2, 0, "w3")
    );

    let kinds: Vec<String> = s
        .events("proj", "removed")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind.to_string())
        .collect();
    assert_eq!(kinds, ["created", "removed"]);
    let kinds: Vec<String> = s
        .events("proj", "done")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind.to_string())
        .collect();
    assert_eq!(kinds, ["created", "claimed", "completed", "new_generation"]);

    // A changed pending spec updates in place.
    repo.commit(
        &[(
            ".ai/tasks/new.yaml",
            Some("addressee: w4\nprompt: fresher\n"),
        )],
        "edit",
    );
    sync(s, data.path(), &repo).await;
    assert_eq!(
        state(s, "new").await.unwrap(),
        (TaskState::Pending, 1, "fresher".into())
    );
    // Reformatting without changing meaning changes nothing.
    repo.commit(
        &[(
            ".ai/tasks/new.yaml",
            Some("# same task\nprompt: \"fresher\"\naddressee: w4\n"),
        )],
        "format",
    );
    let r = sync(s, data.path(), &repo).await;
    assert_eq!((r.changed_files, r.actions), (1, 0));
    db.drop_db().await;
}

async fn bad_files_are_reported_and_never_stop_good_ones(backend: Backend) {
    let db = TestDb::new(backend).await;
    let data = tempfile::tempdir().unwrap();
    let repo = TestRepo::new();
    let s = &db.store;
    repo.commit(
        &[
            (
                ".ai/tasks/good-1.yaml",
                Some("addressee: w1\nprompt: fine\n"),
            ),
            (
                ".ai/tasks/bad.yaml",
                Some("addressee: w2\nprompt: fine\nretries: 3\n"),
            ),
            (
                ".ai/tasks/broken.yaml",
                Some("addressee: w3\nprompt: [unclosed\n"),
            ),
            (
                ".ai/tasks/Not A Key.yaml",
                Some("addressee: w4\nprompt: fine\n"),
            ),
            (
                ".ai/tasks/good-2.yaml",
                Some("addressee: w5\nprompt: fine\n"),
            ),
        ],
        "mixed",
    );
    let r = sync(s, data.path(), &repo).await;
    assert_eq!((r.actions, r.bad_files), (2, 3));
    assert!(state(s, "good-1").await.is_some() && state(s, "good-2").await.is_some());
    assert!(state(s, "bad").await.is_none());
    let errors = s.spec_errors(Some("proj")).await.unwrap();
    let by_path: HashMap<&str, (i64, i64, &str)> = errors
        .iter()
        .map(|e| (e.path.as_str(), (e.line, e.col, e.message.as_str())))
        .collect();
    let (line, col, msg) = by_path[".ai/tasks/bad.yaml"];
    assert_eq!((line, col), (3, 1), "{msg}");
    assert!(msg.contains("retries"), "{msg}");
    assert_eq!(
        by_path[".ai/tasks/broken.yaml"].0, 2,
        "{:?}",
        by_path[".ai/tasks/broken.yaml"]
    );
    assert!(by_path.contains_key(".ai/tasks/Not A Key.yaml"));

    // A good task that turns bad keeps its last good spec; fixing the file clears the error.
    repo.commit(
        &[(
            ".ai/tasks/good-1.yaml",
            Some("addressee: w1\nprompt: fine\nmax_attempts: 0\n"),
        )],
        "break",
    );
    sync(s, data.path(), &repo).await;
    assert_eq!(state(s, "good-1").await.unwrap().2, "fine");
    assert!(s
        .spec_errors(Some("proj"))
        .await
        .unwrap()
        .iter()
        .any(|e| e.path == ".ai/tasks/good-1.yaml" && e.line == 3));
    repo.commit(
        &[
            (
                ".ai/tasks/good-1.yaml",
                Some("addressee: w1\nprompt: fixed\n"),
            ),
            (".ai/tasks/bad.yaml", Some("addressee: w2\nprompt: fixed\n")),
        ],
        "fix",
    );
    sync(s, data.path(), &repo).await;
    assert_eq!(state(s, "good-1").await.unwrap().2, "fixed");
    assert!(state(s, "bad").await.is_some());
    let left: Vec<String> = s
        .spec_errors(Some("proj"))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert_eq!(left, [".ai/tasks/Not A Key.yaml", ".ai/tasks/broken.yaml"]);
    db.drop_db().await;
}

async fn force_push_and_lost_cache(backend: Backend) {
    let db = TestDb::new(backend).await;
    let data = tempfile::tempdir().unwrap();
    let repo = TestRepo::new();
    let s = &db.store;
    let base = repo.commit(
        &[(".ai/tasks/keep.yaml", Some("addressee: w1\nprompt: keep\n"))],
        "base",
    );
    repo.commit(
        &[
            (
                ".ai/tasks/keep.yaml",
                Some("addressee: w1\nprompt: keep v2\n"),
            ),
            (
                ".ai/tasks/extra.yaml",
                Some("addressee: w2\nprompt: extra\n"),
            ),
        ],
        "more",
    );
    sync(s, data.path(), &repo).await;
    assert_eq!(state(s, "keep").await.unwrap().2, "keep v2");
    assert!(state(s, "extra").await.is_some());

    // History rewritten: main goes back to `base` plus a different commit.
    repo.force_main(base);
    repo.commit(
        &[(
            ".ai/tasks/other.yaml",
            Some("addressee: w3\nprompt: other\n"),
        )],
        "rewritten",
    );
    let r = sync(s, data.path(), &repo).await;
    assert!(r.fetched);
    assert_eq!(state(s, "keep").await.unwrap().2, "keep");
    assert!(
        state(s, "extra").await.is_none(),
        "a task that is not in the new history is gone"
    );
    assert!(state(s, "other").await.is_some());

    // The cache is lost: a full comparison rebuilds the same picture.
    std::fs::remove_dir_all(cache_path(data.path(), "proj")).unwrap();
    repo.commit(
        &[
            (".ai/tasks/other.yaml", None),
            (".ai/tasks/late.yaml", Some("addressee: w4\nprompt: late\n")),
        ],
        "after loss",
    );
    sync(s, data.path(), &repo).await;
    assert!(state(s, "other").await.is_none());
    assert!(state(s, "late").await.is_some());
    assert_eq!(state(s, "keep").await.unwrap().2, "keep");

    // An unreachable remote is an error that names the project, and changes nothing.
    let mut broken = super::sync::project(&repo);
    broken.repo = "/nonexistent/remote.git".into();
    let err = sync_project(
        s,
        data.path(),
        &broken,
        &coding_swarm::gitops::GitAuth::default(),
    )
    .await
    .unwrap_err();
    assert!(
        coding_swarm::display::error_chain(&err).contains("proj"),
        "{err}"
    );
    assert!(state(s, "late").await.is_some());
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_remote_is_a_visible_error_and_then_recovers() {
    use coding_swarm::engine::{Engine, RunOptions};
    let db = TestDb::sqlite().await;
    let data = tempfile::tempdir().unwrap();
    let repo = TestRepo::new();
    repo.commit(
        &[(".ai/tasks/before.yaml", Some("addressee: w\nprompt: p\n"))],
        "before",
    );
    let text = format!(
        "data_dir = {:?}\ndatabase_url = {:?}\ndefault_agent = \"sh\"\npoll_interval = \"400ms\"\n[agents.sh]\ncommand = [\"true\"]\n[[projects]]\nname = \"proj\"\nrepo = {:?}\n",
        data.path().display().to_string(),
        db.url,
        repo.url()
    );
    let cfg = coding_swarm::config::Config::parse(&text, "test", data.path(), std::iter::empty())
        .unwrap();
    let engine = Engine::new(cfg, db.store.clone(), env!("CARGO_BIN_EXE_swarm").into());
    let (stop, rx) = tokio::sync::watch::channel(false);
    let handle = tokio::spawn(engine.run(RunOptions { once: false }, rx));
    let s = db.store.clone();
    let wait =
        |what: &'static str,
         f: Box<dyn Fn(Option<coding_swarm::store::ProjectRow>) -> bool + Send>| {
            let s = s.clone();
            async move {
                let start = std::time::Instant::now();
                loop {
                    if f(s.project("proj").await.unwrap()) {
                        return;
                    }
                    assert!(
                        start.elapsed() < std::time::Duration::from_secs(30),
                        "timed out waiting for {what}"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        };
    wait(
        "the first sync",
        Box::new(|p| p.is_some_and(|p| p.synced_commit.is_some())),
    )
    .await;

    // The task has run and its status commit is on the remote: nothing is left to push, so
    // the remote stays unchanged while it is away.
    let start = std::time::Instant::now();
    while !s
        .task("proj", "before")
        .await
        .unwrap()
        .is_some_and(|t| t.state() == TaskState::Completed && !t.report_due)
    {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "the first task never finished"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let before_outage = repo.head();
    wait(
        "the status commit to sync",
        Box::new(move |p| {
            p.is_some_and(|p| p.synced_commit == before_outage.map(|h| h.to_string()))
        }),
    )
    .await;

    // The remote goes away: the error is recorded for people, nothing else changes.
    let moved = repo.dir.path().join("gone.git");
    std::fs::rename(repo.path(), &moved).unwrap();
    wait(
        "a sync error",
        Box::new(|p| p.is_some_and(|p| p.sync_error.is_some())),
    )
    .await;
    let error = s
        .project("proj")
        .await
        .unwrap()
        .unwrap()
        .sync_error
        .unwrap();
    assert!(
        error.contains("proj") && error.contains("remote.git"),
        "{error}"
    );
    assert!(
        s.task("proj", "before").await.unwrap().is_some(),
        "known tasks stay"
    );

    // It comes back unchanged: the error clears, though there is nothing new to apply.
    std::fs::rename(&moved, repo.path()).unwrap();
    assert_eq!(repo.head(), before_outage);
    wait(
        "the error to clear",
        Box::new(|p| p.is_some_and(|p| p.sync_error.is_none())),
    )
    .await;

    // New work arrives: synced.
    repo.commit(
        &[(".ai/tasks/after.yaml", Some("addressee: w2\nprompt: p\n"))],
        "after",
    );
    wait(
        "the recovery",
        Box::new(|p| p.is_some_and(|p| p.sync_error.is_none())),
    )
    .await;
    let start = std::time::Instant::now();
    while s.task("proj", "after").await.unwrap().is_none() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "the new task never synced"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    stop.send(true).unwrap();
    handle.await.unwrap().unwrap();
    db.drop_db().await;
}

/// The fast diff of the tasks directory (a merge walk over raw tree objects) finds exactly what
/// libgit2's general tree diff finds: changed, added, deleted and re-moded files, with names
/// that sort around each other; a subdirectory falls back to the general diff.
#[test]
fn the_tasks_diff_agrees_with_the_general_tree_diff() {
    use coding_swarm::gitops::changed_files;
    use git2::{Oid, Repository};

    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init_bare(dir.path()).unwrap();
    // A commit whose `.ai/tasks` holds `files` (name -> (mode, content)).
    let commit = |files: &[(String, i32, String)]| -> Oid {
        let mut tasks = repo.treebuilder(None).unwrap();
        for (name, mode, content) in files {
            if let Some((sub, leaf)) = name.split_once('/') {
                let blob = repo.blob(content.as_bytes()).unwrap();
                let mut tb = repo.treebuilder(None).unwrap();
                tb.insert(leaf, blob, 0o100644).unwrap();
                tasks.insert(sub, tb.write().unwrap(), 0o040000).unwrap();
            } else {
                let blob = repo.blob(content.as_bytes()).unwrap();
                tasks.insert(name.as_str(), blob, *mode).unwrap();
            }
        }
        let tasks = tasks.write().unwrap();
        let mut ai = repo.treebuilder(None).unwrap();
        ai.insert("tasks", tasks, 0o040000).unwrap();
        let ai = ai.write().unwrap();
        let mut root = repo.treebuilder(None).unwrap();
        root.insert(".ai", ai, 0o040000).unwrap();
        let root = repo.find_tree(root.write().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        repo.commit(None, &sig, &sig, "m", &root, &[]).unwrap()
    };
    // What the general diff says, as sorted (path, content) pairs.
    let general = |old: Option<Oid>, new: Oid| -> Vec<(String, Option<String>)> {
        let sub = |c: Oid| {
            let t = repo.find_commit(c).unwrap().tree().unwrap();
            repo.find_tree(t.get_path(std::path::Path::new(".ai/tasks")).unwrap().id())
                .unwrap()
        };
        let old = old.map(sub);
        let new = sub(new);
        let diff = repo
            .diff_tree_to_tree(old.as_ref(), Some(&new), None)
            .unwrap();
        let mut out: Vec<(String, Option<String>)> = diff
            .deltas()
            .map(|d| {
                let deleted = d.status() == git2::Delta::Deleted;
                let f = if deleted { d.old_file() } else { d.new_file() };
                let content = (!deleted).then(|| {
                    String::from_utf8(repo.find_blob(f.id()).unwrap().content().to_vec()).unwrap()
                });
                (
                    format!(".ai/tasks/{}", f.path().unwrap().to_str().unwrap()),
                    content,
                )
            })
            .collect();
        out.sort();
        out
    };
    let fast = |old: Option<Oid>, new: Oid| -> Vec<(String, Option<String>)> {
        let mut out: Vec<(String, Option<String>)> = changed_files(&repo, old, new, ".ai/tasks")
            .unwrap()
            .into_iter()
            .map(|f| (f.path, f.content.map(|c| String::from_utf8(c).unwrap())))
            .collect();
        out.sort();
        out
    };

    // A small deterministic generator: many rounds of random edits over names chosen to sort
    // close together (a, a-b, a.b, a0, ab...).
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let names = [
        "a", "a-b", "a.b", "a0", "ab", "b", "b_", "t1", "t10", "t2", "z",
    ];
    let mut files: Vec<(String, i32, String)> = Vec::new();
    let mut previous = None;
    let mut changes_seen = 0;
    for round in 0..200 {
        let mut next_files = files.clone();
        for _ in 0..=next(4) {
            let name = format!("{}.yaml", names[next(names.len() as u64) as usize]);
            match next(4) {
                0 => next_files.retain(|f| f.0 != name),
                1 => {
                    if let Some(f) = next_files.iter_mut().find(|f| f.0 == name) {
                        f.1 = if f.1 == 0o100644 { 0o100755 } else { 0o100644 };
                    }
                }
                _ => {
                    next_files.retain(|f| f.0 != name);
                    next_files.push((name, 0o100644, format!("prompt: {round}\n")));
                }
            }
        }
        // Now and then a subdirectory, which the fast walk leaves to the general diff.
        if round % 50 == 49 {
            next_files.push(("sub/x.yaml".into(), 0o100644, format!("r{round}")));
        } else {
            next_files.retain(|f| !f.0.starts_with("sub/"));
        }
        let c = commit(&next_files);
        let (want, got) = (general(previous, c), fast(previous, c));
        assert_eq!(got, want, "round {round}: {files:?} -> {next_files:?}");
        changes_seen += got.len();
        previous = Some(c);
        files = next_files;
    }
    assert!(
        changes_seen > 200,
        "the rounds changed files: {changes_seen}"
    );
}

/// A sync keeps the listing of `.ai/tasks` it read last in memory, so the next pass reads
/// only the new listing (at 100,000 task files each is a 4 MB object to inflate): with the
/// last listing's object gone from the repository, the next diff still works, from memory;
/// and a diff from any other commit reads that commit's listing, not the kept one.
#[test]
fn the_last_tasks_listing_is_kept_and_only_used_for_its_own_tree() {
    use coding_swarm::gitops::changed_files;
    use git2::{Oid, Repository};

    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init_bare(dir.path()).unwrap();
    // A commit whose `.ai/tasks` holds t0..t49, with `t{changed}` at revision `rev`; returns
    // the commit and its tasks tree.
    let commit = |changed: &[(usize, usize)]| -> (Oid, Oid) {
        let mut tasks = repo.treebuilder(None).unwrap();
        for i in 0..50 {
            let rev = changed.iter().find(|c| c.0 == i).map_or(0, |c| c.1);
            let blob = repo
                .blob(format!("addressee: a\nprompt: task {i} rev {rev}\n").as_bytes())
                .unwrap();
            tasks
                .insert(format!("t{i:02}.yaml"), blob, 0o100644)
                .unwrap();
        }
        let tasks = tasks.write().unwrap();
        let mut ai = repo.treebuilder(None).unwrap();
        ai.insert("tasks", tasks, 0o040000).unwrap();
        let mut root = repo.treebuilder(None).unwrap();
        root.insert(".ai", ai.write().unwrap(), 0o040000).unwrap();
        let root = repo.find_tree(root.write().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        (
            repo.commit(None, &sig, &sig, "m", &root, &[]).unwrap(),
            tasks,
        )
    };
    let paths = |repo: &Repository, old: Option<Oid>, new: Oid| -> Vec<String> {
        let mut p: Vec<String> = changed_files(repo, old, new, ".ai/tasks")
            .unwrap()
            .into_iter()
            .map(|f| f.path)
            .collect();
        p.sort();
        p
    };
    let (c1, _) = commit(&[]);
    let (c2, tasks2) = commit(&[(7, 1)]);
    let (c3, _) = commit(&[(7, 1), (31, 1)]);
    assert_eq!(paths(&repo, Some(c1), c2), [".ai/tasks/t07.yaml"]);

    // The listing synced last is gone from the object database (a loose object here).
    let hex = tasks2.to_string();
    let loose = dir.path().join("objects").join(&hex[..2]).join(&hex[2..]);
    std::fs::remove_file(&loose).unwrap();
    // A new handle: libgit2 keeps objects it read in a cache of its own, per handle.
    let repo = Repository::open_bare(dir.path()).unwrap();
    assert!(
        repo.odb().unwrap().read(tasks2).is_err(),
        "the listing is gone from git"
    );
    assert_eq!(
        paths(&repo, Some(c2), c3),
        [".ai/tasks/t31.yaml"],
        "the next pass diffs from the kept listing"
    );
    // c3's listing is kept now; a diff from c1 must read c1's, not reuse c3's.
    assert_eq!(
        paths(&repo, Some(c1), c3),
        [".ai/tasks/t07.yaml", ".ai/tasks/t31.yaml"]
    );
}

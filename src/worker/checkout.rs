//! The run's checkout, without copying history it does not need: on this machine the
//! repository borrows its objects from the project's cache by reference (git's alternates, as
//! `git clone --shared` does), fetches only what the cache lacks, and pins what it borrowed in
//! the cache for as long as the run goes; elsewhere (a pod) it fetches the task's branch and
//! base only, shallow, as deep as they need to meet (a merge: every branch, whole). I/O.

use std::path::{Path, PathBuf};

use git2::{Oid, Repository};

use crate::gitops::GitAuth;
use crate::job::{JobSpec, CACHE_ENV};
use crate::model::Role;

/// Where a run's pins live in the cache: one ref per commit it borrowed, removed when it ends.
const PINS: &str = "refs/swarm/pins";

/// The object directories a checkout of `task` borrows from, nearest first: the project's
/// `cache` when the engine named one (and the directories that cache borrows from itself), else
/// the repository's own when it is on this machine. Empty: the checkout borrows nothing.
pub fn shared_objects(task: &JobSpec, cache: Option<&Path>) -> Vec<PathBuf> {
    let cache = cache.map(|c| c.join("objects")).filter(|o| o.is_dir());
    let first = cache.or_else(|| {
        crate::gitops::local_git_dir(&task.repo)
            .map(|d| d.join("objects"))
            .filter(|o| o.is_dir())
    });
    let mut out = Vec::new();
    let mut next = first.into_iter().collect::<Vec<_>>();
    // git follows alternates five deep; so does libgit2.
    for _ in 0..5 {
        let mut further = Vec::new();
        for dir in next {
            if out.contains(&dir) {
                continue;
            }
            further.extend(alternates_of(&dir));
            out.push(dir);
        }
        if further.is_empty() {
            break;
        }
        next = further;
    }
    out
}

/// The absolute directories an object directory's `info/alternates` names.
fn alternates_of(objects: &Path) -> Vec<PathBuf> {
    std::fs::read_to_string(objects.join("info").join("alternates"))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| objects.join(l))
        .filter(|p| p.is_dir())
        .collect()
}

/// Writes the checkout's `objects/info/alternates` as the worker decided it (`shared`'s first
/// entry, which names the rest), and removes `http-alternates`: what the agent wrote there
/// could lend the push another repository's objects.
pub fn write_alternates(git_dir: &Path, shared: &[PathBuf]) -> std::io::Result<()> {
    let info = git_dir.join("objects").join("info");
    std::fs::create_dir_all(&info)?;
    let _ = std::fs::remove_file(info.join("http-alternates"));
    let file = info.join("alternates");
    let _ = std::fs::remove_file(&file);
    match shared.first() {
        Some(dir) => std::fs::write(&file, format!("{}\n", dir.display())),
        None => Ok(()),
    }
}

/// What the checkout borrowed from the cache: the commits to pin there for the run.
pub struct Checkout {
    pub repo: Repository,
    /// The commit the run starts from.
    pub start: Oid,
    /// The commits of the cache it borrows from (pin them: [`pin`]).
    pub borrowed: Vec<Oid>,
}

/// A new repository in `checkout` on the task's branch: the remote's, if it exists, else a new
/// one from the base. Every branch of the remote is there as `origin/<branch>`, as after a
/// clone, but only objects the `shared` directories ([`shared_objects`]) lack are fetched.
pub fn prepare(
    task: &JobSpec,
    checkout: &Path,
    auth: &GitAuth,
    cache: Option<&Path>,
    shared: &[PathBuf],
) -> Result<Checkout, String> {
    let m = |e: git2::Error| e.message().to_string();
    let _ = std::fs::remove_dir_all(checkout);
    let git_dir = checkout.join(".git");
    Repository::init(checkout).map_err(m)?;
    write_alternates(&git_dir, shared)
        .map_err(|e| format!("cannot write {}: {e}", git_dir.display()))?;
    // Opened again: libgit2 reads the alternates when it opens the object database.
    let repo = Repository::open(checkout).map_err(m)?;
    repo.remote("origin", &task.repo).map_err(m)?;
    // The cache's copies of the remote's branches, as if fetched before: the fetch tells the
    // remote it has them, and receives only what is newer.
    let mut borrowed = Vec::new();
    if let Some(cache) = cache.filter(|_| !shared.is_empty()) {
        if let Ok(cache) = Repository::open_bare(cache) {
            for r in cache
                .references_glob("refs/remotes/origin/*")
                .map_err(m)?
                .flatten()
            {
                let (Some(name), Some(id)) = (r.name(), r.target()) else {
                    continue;
                };
                if repo.find_commit(id).is_ok() {
                    repo.reference(name, id, true, "from the cache")
                        .map_err(m)?;
                    borrowed.push(id);
                }
            }
        }
    }
    let repo = if shared.is_empty() && Role::of_kind(task.kind.as_deref()) != Role::Merge {
        fetch_shallow(repo, task, auth)?
    } else {
        let mut remote = repo.find_remote("origin").map_err(m)?;
        let mut opts = auth.fetch_options();
        opts.prune(git2::FetchPrune::On);
        remote
            .fetch::<&str>(&[], Some(&mut opts), None)
            .map_err(|e| format!("fetch failed: {}", e.message()))?;
        drop(remote);
        repo
    };
    let start = match repo.refname_to_id(&format!("refs/remotes/origin/{}", task.branch)) {
        Ok(id) => id,
        Err(_) => repo
            .refname_to_id(&format!("refs/remotes/origin/{}", task.base))
            .map_err(|_| {
                format!(
                    "neither the branch {} nor its base {} exists on the remote",
                    task.branch, task.base
                )
            })?,
    };
    if !borrowed.contains(&start) {
        borrowed.push(start);
    }
    {
        // A reference, not `git branch`: HEAD of the new repository is unborn, and may name
        // the task's branch already.
        let refname = format!("refs/heads/{}", task.branch);
        repo.reference(&refname, start, true, "the run's branch")
            .map_err(m)?;
        repo.set_head(&refname).map_err(m)?;
    }
    let repo = write_work_tree(repo, checkout)?;
    // Commits the agent makes itself (a merge, say) carry the engine's identity.
    let mut config = repo.config().map_err(m)?;
    config.set_str("user.name", &task.git_name).map_err(m)?;
    config.set_str("user.email", &task.git_email).map_err(m)?;
    drop(config);
    Ok(Checkout {
        repo,
        start,
        borrowed,
    })
}

/// Writes HEAD's files into the (empty) work tree of `repo` at `dir`, and returns the
/// repository opened again (its index is the one written here).
///
/// With the git CLI when it is on the machine: its parallel checkout (`checkout.workers`)
/// writes several files at once, and writing the files is what a checkout costs once the
/// objects are borrowed. On the machines measured, creating a file waits on the file system
/// more than on a core: `git checkout` wrote 20,000 files in 1.1 s with four writers and in 5.8
/// to 7.4 s with one, as libgit2 writes (issue #17, BENCHMARKS.md "Checkout"). The CLI reads no configuration but the
/// checkout's own (no system or global file, no hooks, no fsmonitor), as libgit2 in the worker
/// does not ([`super::git_guard`]). Without git, or if it fails, libgit2 writes the tree.
fn write_work_tree(repo: Repository, dir: &Path) -> Result<Repository, String> {
    let workers = std::thread::available_parallelism()
        .map_or(4, |n| n.get())
        .max(4);
    let mut git = std::process::Command::new("git");
    git.env_clear()
        .envs(std::env::var_os("PATH").map(|p| ("PATH", p)))
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("LC_ALL", "C")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "core.fsmonitor=false",
        ])
        .arg("-c")
        .arg(format!("checkout.workers={workers}"))
        .args(["checkout", "--quiet", "--force"])
        .stdin(std::process::Stdio::null());
    match git.output() {
        Ok(out) if out.status.success() => {
            tracing::info!(workers, "wrote the work tree with the git CLI");
            drop(repo);
            return Repository::open(dir).map_err(|e| e.message().to_string());
        }
        Ok(out) => tracing::warn!(
            "git checkout failed ({}), libgit2 writes the tree: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("cannot run git checkout ({e}), libgit2 writes the tree"),
    }
    repo.checkout_head(Some(git2::build::CheckoutBuilder::new().force()))
        .map_err(|e| e.message().to_string())?;
    Ok(repo)
}

/// Depths a shallow checkout deepens to, in turn, until its branch and base meet (the last:
/// the whole history).
const DEEPEN: &[i32] = &[32, 512, 8192, i32::MAX];

/// With nothing on this machine to borrow from (a pod): the task's branch and its base only,
/// one commit deep; when the branch exists apart from its base, deepened until they meet, so
/// `git diff base...branch` (a review) and `git log base..` work. Returns the repository opened
/// again (after the CLI wrote to it).
///
/// Over HTTP(S) with the git CLI when it is on the machine (the worker image has it): its
/// fetch indexes the pack on every core, libgit2's on one (BENCHMARKS.md, "Checkout").
/// Otherwise, or if the CLI fails, libgit2.
fn fetch_shallow(repo: Repository, task: &JobSpec, auth: &GitAuth) -> Result<Repository, String> {
    let mut branches = vec![task.branch.as_str()];
    if task.base != task.branch {
        branches.push(task.base.as_str());
    }
    let refspecs: Vec<String> = branches
        .iter()
        .map(|b| format!("+refs/heads/{b}:refs/remotes/origin/{b}"))
        .collect();
    let git_dir = repo.path().to_path_buf();
    let mut cli = task.repo.starts_with("https://") || task.repo.starts_with("http://");
    // The CLI, unlike libgit2, refuses a refspec whose branch the remote lacks (a new task's
    // branch): such a refspec is dropped and the fetch made again.
    let mut cli_specs = refspecs.clone();
    let mut fetch = |depth: i32| -> Result<(), String> {
        while cli {
            match fetch_cli(&git_dir, &task.repo, &cli_specs, depth, auth) {
                Ok(()) => {
                    tracing::info!(depth, "fetched {} with the git CLI", cli_specs.join(" "));
                    return Ok(());
                }
                Err(Some(why))
                    if cli_specs.len() > 1 && why.contains("couldn't find remote ref") =>
                {
                    let before = cli_specs.len();
                    cli_specs.retain(|spec| {
                        let src = spec.trim_start_matches('+').split(':').next().unwrap_or("");
                        !why.contains(&format!("remote ref {src}"))
                    });
                    if cli_specs.len() == before {
                        tracing::warn!("git fetch failed, libgit2 fetches instead: {why}");
                        cli = false;
                    }
                }
                Err(why) => {
                    if let Some(why) = why {
                        tracing::warn!("git fetch failed, libgit2 fetches instead: {why}");
                    }
                    cli = false;
                }
            }
        }
        let repo = Repository::open(&git_dir).map_err(|e| e.message().to_string())?;
        let mut remote = repo
            .find_remote("origin")
            .map_err(|e| e.message().to_string())?;
        let mut opts = auth.fetch_options();
        opts.depth(depth);
        remote
            .fetch(&refspecs, Some(&mut opts), None)
            .map_err(|e| format!("fetch failed: {}", e.message()))
    };
    drop(repo);
    fetch(1)?;
    let reopen = || Repository::open(&git_dir).map_err(|e| e.message().to_string());
    let repo = reopen()?;
    let head = |r: &Repository, b: &str| r.refname_to_id(&format!("refs/remotes/origin/{b}")).ok();
    let (Some(branch), Some(base)) = (head(&repo, &task.branch), head(&repo, &task.base)) else {
        return Ok(repo);
    };
    let mut repo = repo;
    for depth in DEEPEN {
        if branch == base || repo.merge_base(branch, base).is_ok() {
            return Ok(repo);
        }
        drop(repo);
        fetch(*depth)?;
        // Opened again: the shallow boundary moved.
        repo = reopen()?;
    }
    Ok(repo)
}

/// `git fetch --depth DEPTH` of `refspecs` from `url` into `git_dir`, the token (if any) in
/// the CLI's environment as an `http.extraHeader`, no configuration but the repository's own,
/// no redirects (a header must not follow one to another host). `Err(None)`: no git on this
/// machine; `Err(Some(why))`: it failed (what it said, without the header).
fn fetch_cli(
    git_dir: &Path,
    url: &str,
    refspecs: &[String],
    depth: i32,
    auth: &GitAuth,
) -> Result<(), Option<String>> {
    let mut git = std::process::Command::new("git");
    git.env_clear();
    for (k, v) in std::env::vars_os() {
        let Some(name) = k.to_str() else { continue };
        // What the CLI needs to reach the remote as libgit2 would: the path, proxies, CAs.
        if name == "PATH"
            || name.eq_ignore_ascii_case("http_proxy")
            || name.eq_ignore_ascii_case("https_proxy")
            || name.eq_ignore_ascii_case("all_proxy")
            || name.eq_ignore_ascii_case("no_proxy")
            || matches!(
                name,
                "SSL_CERT_FILE" | "SSL_CERT_DIR" | "GIT_SSL_CAINFO" | "GIT_SSL_CAPATH"
            )
        {
            git.env(k, v);
        }
    }
    git.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C");
    let mut config = vec![
        ("http.followRedirects".to_string(), "false".to_string()),
        ("core.hooksPath".into(), "/dev/null".into()),
    ];
    let header = auth.cli_header_for(url);
    if let Some(h) = &header {
        config.push(("http.extraHeader".into(), h.expose().to_string()));
    }
    git.env("GIT_CONFIG_COUNT", config.len().to_string());
    for (i, (k, v)) in config.iter().enumerate() {
        git.env(format!("GIT_CONFIG_KEY_{i}"), k)
            .env(format!("GIT_CONFIG_VALUE_{i}"), v);
    }
    git.arg("--git-dir")
        .arg(git_dir)
        .args(["fetch", "--quiet", "--no-tags", "--no-write-fetch-head"])
        .arg(if depth == i32::MAX {
            "--unshallow".to_string()
        } else {
            format!("--depth={depth}")
        })
        .arg(url)
        .args(refspecs)
        .stdin(std::process::Stdio::null());
    match git.output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => {
            let mut said = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if let Some(h) = &header {
                said = said.replace(h.expose(), "[redacted]");
            }
            Err(Some(format!("{}: {said}", out.status)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(None),
        Err(e) => Err(Some(e.to_string())),
    }
}

/// The cache the engine named to this worker, if any.
pub(super) fn cache() -> Option<PathBuf> {
    std::env::var_os(CACHE_ENV).map(PathBuf::from)
}

fn pin_prefix(run_name: &str) -> String {
    format!("{PINS}/{run_name}/")
}

/// Pins `commits` in the cache for the run `run_name`: whatever removes unreachable objects
/// there (a `git gc` after a force-push) keeps them while the run borrows them. Commits the
/// cache does not have are the checkout's own and need no pin.
pub fn pin(cache: &Path, run_name: &str, commits: &[Oid]) -> Result<(), git2::Error> {
    let repo = Repository::open_bare(cache)?;
    for id in commits {
        if repo.find_commit(*id).is_err() {
            continue;
        }
        repo.reference(
            &format!("{}{id}", pin_prefix(run_name)),
            *id,
            true,
            "pinned for a run",
        )?;
    }
    Ok(())
}

/// Removes the run's pins from the cache.
pub fn unpin(cache: &Path, run_name: &str) -> Result<(), git2::Error> {
    let repo = Repository::open_bare(cache)?;
    let glob = format!("{}*", pin_prefix(run_name));
    for r in repo.references_glob(&glob)? {
        r?.delete()?;
    }
    Ok(())
}

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
    if shared.is_empty() && Role::of_kind(task.kind.as_deref()) != Role::Merge {
        fetch_shallow(&repo, task, auth)?;
    } else {
        let mut remote = repo.find_remote("origin").map_err(m)?;
        let mut opts = auth.fetch_options();
        opts.prune(git2::FetchPrune::On);
        remote
            .fetch::<&str>(&[], Some(&mut opts), None)
            .map_err(|e| format!("fetch failed: {}", e.message()))?;
    }
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
        repo.checkout_head(Some(git2::build::CheckoutBuilder::new().force()))
            .map_err(m)?;
    }
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

/// Depths a shallow checkout deepens to, in turn, until its branch and base meet (the last:
/// the whole history).
const DEEPEN: &[i32] = &[32, 512, 8192, i32::MAX];

/// With nothing on this machine to borrow from (a pod): the task's branch and its base only,
/// one commit deep; when the branch exists apart from its base, deepened until they meet, so
/// `git diff base...branch` (a review) and `git log base..` work.
fn fetch_shallow(repo: &Repository, task: &JobSpec, auth: &GitAuth) -> Result<(), String> {
    let mut branches = vec![task.branch.as_str()];
    if task.base != task.branch {
        branches.push(task.base.as_str());
    }
    let refspecs: Vec<String> = branches
        .iter()
        .map(|b| format!("+refs/heads/{b}:refs/remotes/origin/{b}"))
        .collect();
    let fetch = |depth: i32| {
        let mut remote = repo
            .find_remote("origin")
            .map_err(|e| e.message().to_string())?;
        let mut opts = auth.fetch_options();
        opts.depth(depth);
        remote
            .fetch(&refspecs, Some(&mut opts), None)
            .map_err(|e| format!("fetch failed: {}", e.message()))
    };
    fetch(1)?;
    let head = |b: &str| repo.refname_to_id(&format!("refs/remotes/origin/{b}")).ok();
    let (Some(branch), Some(base)) = (head(&task.branch), head(&task.base)) else {
        return Ok(());
    };
    for depth in DEEPEN {
        if branch == base || repo.merge_base(branch, base).is_ok() {
            return Ok(());
        }
        fetch(*depth)?;
    }
    Ok(())
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

//! Git plumbing shared by sync, the status reporter and the worker, on libgit2: ls-remote,
//! fetch into a bare cache, tree diffs limited to `.ai/`, commits built without a work tree,
//! and pushes that report rejections. Blocking I/O: call from `spawn_blocking`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use git2::{
    Cred, CredentialType, Direction, ErrorCode, FetchOptions, Oid, PushOptions, RemoteCallbacks,
    Repository,
};

/// A lock file older than this was left by a writer that died (git and libgit2 hold a ref's
/// lock only while they write it, for milliseconds); it is removed instead of failing every
/// later fetch or push on it.
pub const STALE_LOCK: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("git: cannot {step} ({url})")]
    Git {
        step: &'static str,
        url: String,
        #[source]
        source: git2::Error,
    },
    #[error("git: the remote {url} has no branch {branch}")]
    NoBranch { url: String, branch: String },
    #[error("git: the remote {url} rejected the push of {refname}: {message}")]
    Rejected {
        url: String,
        refname: String,
        message: String,
    },
}

impl GitError {
    /// A push that lost a race with another writer; fetch and try again.
    pub fn is_non_fast_forward(&self) -> bool {
        match self {
            Self::Rejected { message, .. } => {
                let m = message.to_ascii_lowercase();
                m.contains("fast-forward")
                    || m.contains("fast forward")
                    || m.contains("fetch first")
                    || m.contains("stale")
            }
            Self::Git { source, .. } => source.code() == git2::ErrorCode::NotFastForward,
            _ => false,
        }
    }
}

pub type Result<T, E = GitError> = std::result::Result<T, E>;

fn err<'a>(step: &'static str, url: &'a str) -> impl FnOnce(git2::Error) -> GitError + 'a {
    move |source| GitError::Git {
        step,
        url: crate::config::redact_url(url),
        source,
    }
}

/// Whether `asking` (the URL a remote asks for credentials for) is the remote `own`: the same
/// URL, but for a trailing slash or `.git`, and any user name in it.
fn same_remote(asking: &str, own: &str) -> bool {
    fn norm(u: &str) -> String {
        let u = u.trim_end_matches('/');
        let u = u.strip_suffix(".git").unwrap_or(u);
        match u.split_once("://") {
            Some((scheme, rest)) => {
                let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
                let host = authority.rsplit('@').next().unwrap_or(authority);
                format!(
                    "{}://{}/{}",
                    scheme.to_ascii_lowercase(),
                    host.to_ascii_lowercase(),
                    path
                )
            }
            None => u.to_string(),
        }
    }
    norm(asking) == norm(own)
}

/// How every remote operation (ls-remote, fetch, clone, push) finds its proxy: libgit2's
/// auto-detection, which takes the remote's `http.proxy` git configuration, else the
/// environment's `https_proxy`/`HTTPS_PROXY` (for `https://` remotes) or `http_proxy` (for
/// `http://`), and leaves out the hosts of `no_proxy`/`NO_PROXY`. Without any of them, no proxy.
pub fn proxy() -> git2::ProxyOptions<'static> {
    let mut p = git2::ProxyOptions::new();
    p.auto();
    p
}

/// How the engine or a worker authenticates to git remotes: an SSH agent for `ssh://` and
/// `git@` URLs; for HTTPS the token it was given (the engine's `SWARM_GIT_TOKEN`, passed in by
/// the wiring; a worker's from its job). The token is handed to libgit2 only; it is never part
/// of a URL, so it never reaches `.git/config` or a log line.
#[derive(Clone, Default)]
pub struct GitAuth {
    token: TokenSource,
    /// When set, credentials are given to this remote URL only (see [`GitAuth::only_for`]).
    only_for: Option<String>,
}

/// Where the HTTPS token comes from, looked up each time a remote asks for credentials.
#[derive(Clone, Default)]
enum TokenSource {
    #[default]
    None,
    Fixed(crate::config::Secret),
    /// A file (a job's token the engine may renew while the job runs).
    File(std::path::PathBuf),
    /// Per remote URL, kept fresh by the engine (a GitHub App's installation tokens).
    PerRemote(PerRemoteTokens),
}

/// Tokens by remote URL, shared between the task that renews them and the fetches that use
/// them.
pub type PerRemoteTokens =
    std::sync::Arc<std::sync::RwLock<std::collections::HashMap<String, crate::config::Secret>>>;

impl std::fmt::Debug for GitAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.token {
            TokenSource::None => "none",
            TokenSource::Fixed(_) => "***",
            TokenSource::File(_) => "file",
            TokenSource::PerRemote(_) => "per remote",
        };
        f.debug_struct("GitAuth").field("token", &kind).finish()
    }
}

impl GitAuth {
    /// Authentication with an HTTPS token (and the SSH agent for SSH remotes).
    pub fn new(token: Option<crate::config::Secret>) -> Self {
        Self {
            token: token.map_or(TokenSource::None, TokenSource::Fixed),
            only_for: None,
        }
    }

    /// The token in `file`, read each time it is needed.
    pub fn from_file(file: std::path::PathBuf) -> Self {
        Self {
            token: TokenSource::File(file),
            only_for: None,
        }
    }

    /// The token `tokens` holds for the remote URL asked about.
    pub fn per_remote(tokens: PerRemoteTokens) -> Self {
        Self {
            token: TokenSource::PerRemote(tokens),
            only_for: None,
        }
    }

    /// The same credentials, given only when the remote asking for them is `url` (the
    /// project's own remote, as configured): a remote the push was redirected to gets none.
    pub fn only_for(&self, url: &str) -> Self {
        Self {
            token: self.token.clone(),
            only_for: Some(url.to_string()),
        }
    }

    /// The token for `url`, if any.
    fn token_for(&self, url: &str) -> Option<crate::config::Secret> {
        match &self.token {
            TokenSource::None => None,
            TokenSource::Fixed(t) => Some(t.clone()),
            TokenSource::File(path) => std::fs::read_to_string(path)
                .ok()
                .and_then(|t| crate::config::Secret::new(t.trim().to_string())),
            TokenSource::PerRemote(tokens) => {
                let tokens = tokens.read().unwrap_or_else(|p| p.into_inner());
                tokens
                    .iter()
                    .find(|(remote, _)| same_remote(url, remote))
                    .map(|(_, t)| t.clone())
            }
        }
    }

    /// What the git CLI needs to send this auth's token to `url`: the value of an
    /// `http.extraHeader` (`Authorization: Basic`, user `x-access-token`, as libgit2 sends it),
    /// for the CLI's environment (`GIT_CONFIG_*`), never its arguments or a URL. `None`: no
    /// token, or `url` is not the remote this auth is for.
    pub fn cli_header_for(&self, url: &str) -> Option<crate::config::Secret> {
        if self
            .only_for
            .as_ref()
            .is_some_and(|own| !same_remote(url, own))
        {
            return None;
        }
        use base64::Engine as _;
        let token = self.token_for(url)?;
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("x-access-token:{}", token.expose()));
        crate::config::Secret::new(format!("Authorization: Basic {basic}"))
    }

    /// Options for a fetch (or clone): [`Self::callbacks`] and [`proxy`].
    pub fn fetch_options(&self) -> FetchOptions<'_> {
        let mut opts = FetchOptions::new();
        opts.remote_callbacks(self.callbacks());
        opts.proxy_options(proxy());
        opts
    }

    /// The callbacks that answer a remote's request for credentials.
    pub fn callbacks(&self) -> RemoteCallbacks<'_> {
        let mut cb = RemoteCallbacks::new();
        let mut tried = 0u8;
        cb.credentials(move |url, username, allowed| {
            tried += 1;
            if tried > 3 {
                return Err(git2::Error::from_str("authentication failed"));
            }
            if let Some(own) = &self.only_for {
                if !same_remote(url, own) {
                    return Err(git2::Error::from_str(&format!(
                        "refused to send credentials to {}: not the project's remote {}",
                        crate::config::redact_url(url),
                        crate::config::redact_url(own)
                    )));
                }
            }
            if allowed.contains(CredentialType::SSH_KEY) {
                return Cred::ssh_key_from_agent(username.unwrap_or("git"));
            }
            if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
                if let Some(token) = self.token_for(url) {
                    return Cred::userpass_plaintext("x-access-token", token.expose());
                }
            }
            Cred::default()
        });
        cb
    }
}

/// Opens (or creates) the bare cache repository for a project at `path` with `url` as origin.
pub fn open_cache(path: &Path, url: &str) -> Result<Repository> {
    // libgit2 hashes every object it reads again to check it (SHA-1 with collision detection:
    // 10 ms for the 4 MB listing of 100,000 task files); git itself does not on reads. The
    // objects are the engine's own cache and the remote's it fetched or shares.
    static NO_READ_HASHING: std::sync::Once = std::sync::Once::new();
    NO_READ_HASHING.call_once(|| git2::opts::strict_hash_verification(false));
    let repo = match Repository::open_bare(path) {
        Ok(r) => r,
        Err(_) => {
            std::fs::create_dir_all(path).map_err(|e| GitError::Git {
                step: "create the cache",
                url: url.into(),
                source: git2::Error::from_str(&e.to_string()),
            })?;
            Repository::init_bare(path).map_err(err("create the cache", url))?
        }
    };
    // Only the engine and the CLI write the cache; a lock left by one that was killed
    // mid-fetch would stop every sync of the project.
    remove_stale_locks(repo.path());
    match repo.find_remote("origin") {
        Ok(r) if r.url() == Some(url) => {}
        Ok(_) => repo
            .remote_set_url("origin", url)
            .map_err(err("set the cache's remote", url))?,
        Err(_) => {
            repo.remote("origin", url)
                .map_err(err("add the cache's remote", url))?;
        }
    }
    Ok(repo)
}

/// Asks the remote where `branch` points, without fetching anything (an ls-remote).
pub fn remote_head(
    repo: &Repository,
    url: &str,
    branch: &str,
    auth: &GitAuth,
) -> Result<Option<Oid>> {
    let mut remote = repo
        .remote_anonymous(url)
        .map_err(err("reach the remote", url))?;
    let conn = remote
        .connect_auth(Direction::Fetch, Some(auth.callbacks()), Some(proxy()))
        .map_err(err("reach the remote", url))?;
    let want = format!("refs/heads/{branch}");
    let head = conn
        .list()
        .map_err(err("list the remote's branches", url))?
        .iter()
        .find(|h| h.name() == want)
        .map(|h| h.oid());
    Ok(head)
}

/// The local copy of the remote's `branch` in a cache repository, if fetched before.
pub fn cached_head(repo: &Repository, branch: &str) -> Option<Oid> {
    repo.refname_to_id(&format!("refs/remotes/origin/{branch}"))
        .ok()
}

/// Fetches `branch` into `refs/remotes/origin/<branch>` (force: a rewritten history is followed).
pub fn fetch(repo: &Repository, url: &str, branch: &str, auth: &GitAuth) -> Result<Oid> {
    let mut remote = repo
        .remote_anonymous(url)
        .map_err(err("reach the remote", url))?;
    let mut opts = auth.fetch_options();
    opts.download_tags(git2::AutotagOption::None);
    let refspec = format!("+refs/heads/{branch}:refs/remotes/origin/{branch}");
    remote
        .fetch(&[&refspec], Some(&mut opts), None)
        .map_err(err("fetch", url))?;
    cached_head(repo, branch).ok_or_else(|| GitError::NoBranch {
        url: crate::config::redact_url(url),
        branch: branch.into(),
    })
}

/// Pushes `local_ref` (a commit id or ref) to `refs/heads/<branch>` on the remote, without
/// force. A rejection (for example not a fast-forward) is an error, not a silent success.
pub fn push(
    repo: &Repository,
    url: &str,
    source: &str,
    branch: &str,
    auth: &GitAuth,
) -> Result<()> {
    if let Some(remote) = local_git_dir(url)
        .and_then(|dir| Repository::open(dir).ok())
        .filter(Repository::is_bare)
    {
        return push_local(repo, &remote, url, source, branch);
    }
    let rejection = std::cell::RefCell::new(None::<String>);
    let mut remote = repo
        .remote_anonymous(url)
        .map_err(err("reach the remote", url))?;
    let mut cb = auth.callbacks();
    cb.push_update_reference(|refname, status| {
        if let Some(message) = status {
            *rejection.borrow_mut() = Some(format!("{refname}: {message}"));
        }
        Ok(())
    });
    let mut opts = PushOptions::new();
    opts.remote_callbacks(cb);
    opts.proxy_options(proxy());
    let refspec = format!("{source}:refs/heads/{branch}");
    remote
        .push(&[&refspec], Some(&mut opts))
        .map_err(err("push", url))?;
    drop(opts);
    drop(remote);
    if let Some(message) = rejection.into_inner() {
        return Err(GitError::Rejected {
            url: crate::config::redact_url(url),
            refname: format!("refs/heads/{branch}"),
            message,
        });
    }
    Ok(())
}

/// A push to a bare repository on this machine. libgit2's local transport moves the remote's
/// ref without checking that it still points where it did when the push began, so a commit
/// that lands on the branch meanwhile (a person's, say) would silently drop out of it. Here
/// the objects are written first, then the ref moves by compare-and-swap under its lock.
fn push_local(
    repo: &Repository,
    remote: &Repository,
    url: &str,
    source: &str,
    branch: &str,
) -> Result<()> {
    let refname = format!("refs/heads/{branch}");
    let rejected = |message: &str| GitError::Rejected {
        url: crate::config::redact_url(url),
        refname: refname.clone(),
        message: format!("{refname}: {message}"),
    };
    let new = repo
        .revparse_single(source)
        .and_then(|o| o.peel_to_commit())
        .map_err(err("find the commit to push", url))?
        .id();
    let old = remote.refname_to_id(&refname).ok();
    if let Some(old) = old {
        if old == new {
            return Ok(());
        }
        let fast_forward = repo.find_commit(old).is_ok()
            && repo
                .graph_descendant_of(new, old)
                .map_err(err("push", url))?;
        if !fast_forward {
            return Err(rejected("not a fast-forward (fetch first)"));
        }
    }
    // The objects the remote lacks: everything not reachable from the tips it has.
    let mut walk = repo.revwalk().map_err(err("push", url))?;
    walk.push(new).map_err(err("push", url))?;
    for r in remote
        .references()
        .map_err(err("list the remote's branches", url))?
        .flatten()
    {
        if let Some(id) = r.target().filter(|id| repo.find_commit(*id).is_ok()) {
            let _ = walk.hide(id);
        }
    }
    let mut pack = repo.packbuilder().map_err(err("push", url))?;
    pack.insert_walk(&mut walk).map_err(err("push", url))?;
    if pack.object_count() > 0 {
        pack.write(&remote.path().join("objects").join("pack"), 0)
            .map_err(err("push", url))?;
    }
    let lock = remote.path().join(format!("{refname}.lock"));
    let mut stale_lock_removed = false;
    loop {
        let moved = match old {
            Some(old) => remote.reference_matching(&refname, new, true, old, "push"),
            None => remote.reference(&refname, new, false, "push"),
        };
        return match moved {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.code(), ErrorCode::Modified | ErrorCode::Exists) => {
                Err(rejected("the branch moved during the push (fetch first)"))
            }
            Err(e) if e.code() == ErrorCode::Locked && !stale_lock_removed => {
                stale_lock_removed = remove_if_stale(&lock);
                if stale_lock_removed {
                    continue;
                }
                Err(err("push", url)(e))
            }
            Err(e) => Err(err("push", url)(e)),
        };
    }
}

/// Removes the lock files in a git directory (at its top and under `refs/`) that are older
/// than [`STALE_LOCK`].
pub fn remove_stale_locks(git_dir: &Path) {
    fn walk(dir: &Path, recurse: bool) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() && recurse => walk(&path, true),
                Ok(t) if t.is_file() && path.extension().is_some_and(|x| x == "lock") => {
                    remove_if_stale(&path);
                }
                _ => {}
            }
        }
    }
    walk(git_dir, false);
    walk(&git_dir.join("refs"), true);
}

/// Removes `lock` if it is older than [`STALE_LOCK`]; returns whether it did.
fn remove_if_stale(lock: &Path) -> bool {
    let age = std::fs::metadata(lock)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok());
    match age {
        Some(age) if age > STALE_LOCK && std::fs::remove_file(lock).is_ok() => {
            tracing::warn!(
                "removed {}, a lock left {}s ago by a git writer that died",
                lock.display(),
                age.as_secs()
            );
            true
        }
        _ => false,
    }
}

/// A file under a directory that differs between two commits: its path and its new content
/// (`None` when deleted).
#[derive(Debug, Clone)]
pub struct ChangedFile {
    pub path: String,
    pub content: Option<Vec<u8>>,
}

/// The files under `dir` that differ between `old` and `new` (every file when `old` is
/// `None`). Compares the directory's tree ids first, so an unchanged directory costs nothing
/// and a changed one costs a walk of that one directory listing, not of the repository.
pub fn changed_files(
    repo: &Repository,
    old: Option<Oid>,
    new: Oid,
    dir: &str,
) -> Result<Vec<ChangedFile>, git2::Error> {
    // Ids only: the directory's tree object is read (once) by the diff itself.
    let subtree = |commit: Oid| -> Result<Option<Oid>, git2::Error> {
        let tree = repo.find_commit(commit)?.tree()?;
        match tree.get_path(Path::new(dir)) {
            Ok(entry) if entry.kind() == Some(git2::ObjectType::Tree) => Ok(Some(entry.id())),
            Ok(_) => Ok(None),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    };
    let new_id = subtree(new)?;
    let old_id = match old {
        Some(o) => subtree(o)?,
        None => None,
    };
    if old_id.is_some() && old_id == new_id {
        return Ok(Vec::new());
    }
    if let Some(flat) = flat_changes(repo, old_id, new_id, dir)? {
        return Ok(flat);
    }
    let old_tree = old_id.map(|id| repo.find_tree(id)).transpose()?;
    let new_tree = new_id.map(|id| repo.find_tree(id)).transpose()?;
    let mut out = Vec::new();
    let diff = repo.diff_tree_to_tree(old_tree.as_ref(), new_tree.as_ref(), None)?;
    for delta in diff.deltas() {
        let file = if delta.status() == git2::Delta::Deleted {
            delta.old_file()
        } else {
            delta.new_file()
        };
        let Some(rel) = file.path().and_then(|p| p.to_str()) else {
            continue;
        };
        let path = format!("{dir}/{rel}");
        let content = match delta.status() {
            git2::Delta::Deleted => None,
            _ => Some(repo.find_blob(delta.new_file().id())?.content().to_vec()),
        };
        out.push(ChangedFile { path, content });
    }
    Ok(out)
}

/// One entry of a raw tree object: `<mode> <name>\0<20-byte id>`.
struct RawEntry<'a> {
    mode: &'a [u8],
    name: &'a [u8],
    id: &'a [u8],
}

impl RawEntry<'_> {
    fn is_tree(&self) -> bool {
        self.mode == b"40000"
    }
}

/// The entries of a raw tree object, or `None` when it does not parse.
fn raw_entries(data: &[u8]) -> Option<Vec<RawEntry<'_>>> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let sp = rest.iter().position(|&b| b == b' ')?;
        let nul = sp + 1 + rest[sp + 1..].iter().position(|&b| b == 0)?;
        let end = nul + 1 + 20;
        if end > rest.len() {
            return None;
        }
        out.push(RawEntry {
            mode: &rest[..sp],
            name: &rest[sp + 1..nul],
            id: &rest[nul + 1..end],
        });
        rest = &rest[end..];
    }
    Some(out)
}

/// The last listing of a directory read by [`changed_files`], per repository and directory:
/// the tree's id and its raw object. A sync diffs the listing it synced last against the new
/// one, so keeping the last one in memory halves what a pass reads and inflates (4 MB each
/// for a flat directory of 100,000 files). Only a cache: a restarted engine reads the old
/// listing from git again, once.
type Listings = std::collections::HashMap<(PathBuf, String), (Oid, std::sync::Arc<[u8]>)>;
static LISTINGS: std::sync::Mutex<Option<Listings>> = std::sync::Mutex::new(None);

/// The raw tree object `id`, from the last listing kept for `key` when it is that tree.
fn listing(
    repo: &Repository,
    key: &(PathBuf, String),
    id: Oid,
) -> Result<std::sync::Arc<[u8]>, git2::Error> {
    let kept = LISTINGS
        .lock()
        .ok()
        .and_then(|l| l.as_ref()?.get(key).filter(|(k, _)| *k == id).cloned());
    if let Some((_, raw)) = kept {
        return Ok(raw);
    }
    let odb = repo.odb()?;
    let object = odb.read(id)?;
    Ok(std::sync::Arc::from(object.data()))
}

fn remember_listing(key: (PathBuf, String), id: Oid, raw: std::sync::Arc<[u8]>) {
    if let Ok(mut l) = LISTINGS.lock() {
        l.get_or_insert_with(Default::default)
            .insert(key, (id, raw));
    }
}

/// The changes between two versions of a directory of files, by a merge walk over the raw
/// tree objects: for a directory of 100,000 task files this is a scan of two buffers, where
/// a general tree diff builds an entry per file. `None` when the directory holds
/// subdirectories (the general diff then recurses as before).
fn flat_changes(
    repo: &Repository,
    old: Option<Oid>,
    new: Option<Oid>,
    dir: &str,
) -> Result<Option<Vec<ChangedFile>>, git2::Error> {
    let key = (repo.path().to_path_buf(), dir.to_string());
    let (old_raw, new_raw) = (
        old.map(|id| listing(repo, &key, id)).transpose()?,
        new.map(|id| listing(repo, &key, id)).transpose()?,
    );
    // The next pass diffs from this one's listing: keep it, so that pass reads one tree.
    if let (Some(id), Some(raw)) = (new, &new_raw) {
        remember_listing(key, id, raw.clone());
    }
    let (a, b) = (
        old_raw
            .as_deref()
            .map_or(Some(Vec::new()), |o| raw_entries(o)),
        new_raw
            .as_deref()
            .map_or(Some(Vec::new()), |o| raw_entries(o)),
    );
    let (Some(a), Some(b)) = (a, b) else {
        return Ok(None);
    };
    if a.iter().chain(&b).any(RawEntry::is_tree) {
        return Ok(None);
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    let mut emit = |e: &RawEntry<'_>, deleted: bool| -> Result<(), git2::Error> {
        let Ok(name) = std::str::from_utf8(e.name) else {
            return Ok(());
        };
        let content = if deleted {
            None
        } else {
            Some(repo.find_blob(Oid::from_bytes(e.id)?)?.content().to_vec())
        };
        out.push(ChangedFile {
            path: format!("{dir}/{name}"),
            content,
        });
        Ok(())
    };
    // Without subdirectories, git orders entries by their names' bytes.
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x.name == y.name => {
                if x.id != y.id || x.mode != y.mode {
                    emit(y, false)?;
                }
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x.name < y.name => {
                emit(x, true)?;
                i += 1;
            }
            (Some(x), None) => {
                emit(x, true)?;
                i += 1;
            }
            (_, Some(y)) => {
                emit(y, false)?;
                j += 1;
            }
            (None, None) => break,
        }
    }
    Ok(Some(out))
}

/// Lets a cache read a repository on this machine directly (git's alternates, as in
/// `git clone --shared`), so a sync of a local project needs no fetch. Returns whether the
/// alternates file was written now (the repository must then be opened again to see it).
pub fn share_objects(cache: &Repository, git_dir: &Path) -> std::io::Result<bool> {
    let objects = git_dir.join("objects");
    let line = format!("{}\n", objects.display());
    let info = cache.path().join("objects").join("info");
    let file = info.join("alternates");
    if std::fs::read_to_string(&file).is_ok_and(|s| s == line) {
        return Ok(false);
    }
    std::fs::create_dir_all(&info)?;
    std::fs::write(&file, line)?;
    Ok(true)
}

/// Brings the cache's copy of `branch` to the remote's `head`: nothing to do when it is there,
/// a ref update when the cache shares the objects of a repository on this machine (see
/// [`share_objects`]), a fetch otherwise. Returns the head and whether it moved.
pub fn bring_cache_to(
    repo: &Repository,
    url: &str,
    branch: &str,
    head: Oid,
    auth: &GitAuth,
) -> Result<(Oid, bool)> {
    let present = repo.find_commit(head).is_ok();
    if present && cached_head(repo, branch) == Some(head) {
        return Ok((head, false));
    }
    if present && local_git_dir(url).is_some() {
        repo.reference(
            &format!("refs/remotes/origin/{branch}"),
            head,
            true,
            "shared objects",
        )
        .map_err(err("update the cache", url))?;
        return Ok((head, true));
    }
    Ok((fetch(repo, url, branch, auth)?, true))
}

/// Whether `commit` is present in the repository's object database.
pub fn has_commit(repo: &Repository, commit: &str) -> bool {
    Oid::from_str(commit)
        .ok()
        .is_some_and(|oid| repo.find_commit(oid).is_ok())
}

/// Builds a commit on top of `parent` that writes `files` (path -> content) and nothing else,
/// without a work tree.
pub fn commit_files(
    repo: &Repository,
    parent: Oid,
    files: &[(String, Vec<u8>)],
    message: &str,
    name: &str,
    email: &str,
) -> Result<Oid, git2::Error> {
    let parent = repo.find_commit(parent)?;
    let base = parent.tree()?;
    let mut update = git2::build::TreeUpdateBuilder::new();
    for (path, content) in files {
        let blob = repo.blob(content)?;
        update.upsert(path.as_str(), blob, git2::FileMode::Blob);
    }
    let tree_id = update.create_updated(repo, &base)?;
    let tree = repo.find_tree(tree_id)?;
    let sig = git2::Signature::now(name, email)?;
    repo.commit(None, &sig, &sig, message, &tree, &[&parent])
}

/// A commit that changed one file: who, why, and the change as a unified diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCommit {
    pub id: String,
    pub author: String,
    pub message: String,
    pub diff: String,
}

/// The commits in `old..new` that changed `path`, oldest first. Merges are skipped (their
/// changes are in the merged commits).
pub fn commits_touching(
    repo: &Repository,
    old: Oid,
    new: Oid,
    path: &str,
) -> Result<Vec<FileCommit>, git2::Error> {
    let mut walk = repo.revwalk()?;
    walk.push(new)?;
    walk.hide(old)?;
    walk.set_sorting(git2::Sort::TOPOLOGICAL | git2::Sort::REVERSE)?;
    let mut out = Vec::new();
    for id in walk {
        let commit = repo.find_commit(id?)?;
        if commit.parent_count() > 1 {
            continue;
        }
        let parent_tree = commit.parent(0).ok().map(|p| p.tree()).transpose()?;
        let mut opts = git2::DiffOptions::new();
        opts.pathspec(path).disable_pathspec_match(true);
        let diff =
            repo.diff_tree_to_tree(parent_tree.as_ref(), Some(&commit.tree()?), Some(&mut opts))?;
        if diff.deltas().len() == 0 {
            continue;
        }
        let mut text = String::new();
        diff.print(git2::DiffFormat::Patch, |_, _, line| {
            if matches!(line.origin(), '+' | '-' | ' ') {
                text.push(line.origin());
            }
            text.push_str(&String::from_utf8_lossy(line.content()));
            true
        })?;
        out.push(FileCommit {
            id: commit.id().to_string(),
            author: commit.author().name().unwrap_or("someone").to_string(),
            message: commit.message().unwrap_or("").to_string(),
            diff: crate::spec::truncate(&text, 6000),
        });
    }
    Ok(out)
}

/// Replays the commits of `start..head` on top of `onto` (after losing a push race), oldest
/// first, keeping their messages and authors. Fails on a conflict.
pub fn replay(repo: &Repository, start: Oid, head: Oid, onto: Oid) -> Result<Oid, git2::Error> {
    let mut walk = repo.revwalk()?;
    walk.push(head)?;
    walk.hide(start)?;
    walk.set_sorting(git2::Sort::TOPOLOGICAL | git2::Sort::REVERSE)?;
    let mut base = repo.find_commit(onto)?;
    for id in walk {
        let commit = repo.find_commit(id?)?;
        let mainline = if commit.parent_count() > 1 { 1 } else { 0 };
        let mut index = repo.cherrypick_commit(&commit, &base, mainline, None)?;
        if index.has_conflicts() {
            return Err(git2::Error::from_str(&format!(
                "replaying {} on the new remote head conflicts",
                commit.id()
            )));
        }
        let tree = repo.find_tree(index.write_tree_to(repo)?)?;
        let message = commit.message().unwrap_or("");
        let new = repo.commit(
            None,
            &commit.author(),
            &commit.committer(),
            message,
            &tree,
            &[&base],
        )?;
        base = repo.find_commit(new)?;
    }
    Ok(base.id())
}

/// The paths under `dir` that `start..head` added or changed (not deleted).
pub fn changed_paths(
    repo: &Repository,
    start: Oid,
    head: Oid,
    dir: &str,
) -> Result<Vec<(String, Vec<u8>)>, git2::Error> {
    let old = repo.find_commit(start)?.tree()?;
    let new = repo.find_commit(head)?.tree()?;
    let mut opts = git2::DiffOptions::new();
    opts.pathspec(dir);
    let diff = repo.diff_tree_to_tree(Some(&old), Some(&new), Some(&mut opts))?;
    let mut out = Vec::new();
    for delta in diff.deltas() {
        if delta.status() == git2::Delta::Deleted
            || delta.new_file().mode() == git2::FileMode::Commit
        {
            continue;
        }
        let Some(path) = delta.new_file().path().and_then(|p| p.to_str()) else {
            continue;
        };
        out.push((
            path.to_string(),
            repo.find_blob(delta.new_file().id())?.content().to_vec(),
        ));
    }
    Ok(out)
}

/// The paths under `dir` that `head` adds, changes or deletes compared with `start`.
pub fn touched_paths(
    repo: &Repository,
    start: Oid,
    head: Oid,
    dir: &str,
) -> Result<Vec<String>, git2::Error> {
    let old = repo.find_commit(start)?.tree()?;
    let new = repo.find_commit(head)?.tree()?;
    let mut opts = git2::DiffOptions::new();
    opts.pathspec(dir);
    let diff = repo.diff_tree_to_tree(Some(&old), Some(&new), Some(&mut opts))?;
    Ok(diff
        .deltas()
        .filter_map(|d| {
            d.new_file()
                .path()
                .or_else(|| d.old_file().path())
                .and_then(|p| p.to_str())
                .map(str::to_string)
        })
        .collect())
}

/// A file's content at `commit` in a repository on disk, if it is there.
pub fn read_file(repo: &Path, commit: &str, path: &str) -> Option<Vec<u8>> {
    let repo = Repository::open(repo).ok()?;
    let tree = repo
        .find_commit(Oid::from_str(commit).ok()?)
        .ok()?
        .tree()
        .ok()?;
    let id = tree.get_path(Path::new(path)).ok()?.id();
    let content = repo.find_blob(id).ok()?.content().to_vec();
    Some(content)
}

/// The git directory of a local repository path (bare or not), if it is one.
pub fn local_git_dir(repo: &str) -> Option<PathBuf> {
    let path = Path::new(repo.strip_prefix("file://").unwrap_or(repo));
    if !path.is_absolute() || !path.exists() {
        return None;
    }
    if path.join("refs").is_dir() && path.join("HEAD").is_file() {
        return Some(path.to_path_buf());
    }
    let dotgit = path.join(".git");
    dotgit.join("refs").is_dir().then_some(dotgit)
}

/// Where the bare cache of a project lives.
pub fn cache_path(data_dir: &Path, project: &str) -> PathBuf {
    data_dir.join("repos").join(format!("{project}.git"))
}

#[cfg(test)]
mod tests {
    use super::same_remote;

    #[test]
    fn credentials_go_to_the_projects_remote_only() {
        let own = "https://github.com/acme/app.git";
        for same in [
            "https://github.com/acme/app.git",
            "https://github.com/acme/app",
            "https://x-access-token@GitHub.com/acme/app/",
        ] {
            assert!(same_remote(same, own), "{same}");
        }
        for other in [
            "https://github.com/acme/other.git",
            "https://evil.example/acme/app.git",
            "http://github.com/acme/app.git",
            "https://github.com.evil.example/acme/app.git",
        ] {
            assert!(!same_remote(other, own), "{other}");
        }
    }
}

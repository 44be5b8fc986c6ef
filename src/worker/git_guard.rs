//! What the agent could write to redirect the push: the checkout's `.git/config` (a
//! `url.<x>.insteadOf` or `pushInsteadOf`, an `http.proxy`, an `include.path`) and, as the
//! worker shares the run's HOME with it, `~/.gitconfig` and `$XDG_CONFIG_HOME/git/config`.
//! The worker reads no configuration but the repository's own, and restores that to what the
//! clone wrote before it commits and pushes; so are the objects it borrows (`objects/info/
//! alternates`). I/O.

use std::path::Path;

use git2::{ConfigLevel, Repository};

/// From here on libgit2 in this process reads no global, XDG or system configuration: the
/// worker's HOME is the agent's too.
pub(super) fn ignore_user_config() {
    for level in [
        ConfigLevel::Global,
        ConfigLevel::XDG,
        ConfigLevel::System,
        ConfigLevel::ProgramData,
    ] {
        // SAFETY: called once at the worker's start, before any other libgit2 call of the
        // process (set_search_path is not thread-safe against concurrent libgit2 use).
        if let Err(e) = unsafe { git2::opts::set_search_path(level, "") } {
            tracing::warn!("cannot clear libgit2's {level:?} configuration path: {e}");
        }
    }
}

/// Replaces the checkout's configuration with the one the clone wrote (its remote `origin` at
/// `url`, nothing else) and opens the repository afresh, so nothing the agent wrote into it
/// applies to the commit and the push.
pub(super) fn restore_config(
    checkout: &Path,
    url: &str,
    shared: &[std::path::PathBuf],
) -> Result<Repository, git2::Error> {
    let git_dir = checkout.join(".git");
    // A `.git` the agent turned into a symlink or a gitfile points the push at another
    // repository: refused before anything is written through it.
    let real_dir = std::fs::symlink_metadata(&git_dir).is_ok_and(|m| m.file_type().is_dir());
    if !real_dir {
        return Err(git2::Error::from_str(
            "the agent replaced the checkout's .git; nothing is pushed",
        ));
    }
    let config = format!(
        "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n\tlogallrefupdates = true\n\
         [remote \"origin\"]\n\turl = {url}\n\tfetch = +refs/heads/*:refs/remotes/origin/*\n"
    );
    for name in ["config", "config.worktree"] {
        let path = git_dir.join(name);
        // Whatever it is now (a symlink to elsewhere, say): gone, then written anew.
        let _ = std::fs::remove_file(&path);
        if name == "config" {
            std::fs::write(&path, &config).map_err(|e| {
                git2::Error::from_str(&format!("cannot write {}: {e}", path.display()))
            })?;
        }
    }
    // A checkout turned into a linked worktree or given a `commondir` points its repository
    // elsewhere: refused, not followed.
    if git_dir.join("commondir").exists() {
        return Err(git2::Error::from_str(
            "the agent replaced the checkout's .git; nothing is pushed",
        ));
    }
    // The objects the checkout borrows: from where the worker said, nowhere else (another
    // repository's objects named there would be packed into the push).
    super::checkout::write_alternates(&git_dir, shared).map_err(|e| {
        git2::Error::from_str(&format!(
            "cannot restore {}/objects/info: {e}",
            git_dir.display()
        ))
    })?;
    Repository::open(checkout)
}

//! The local runtime's sandbox for agents: bubblewrap (`bwrap`), with its own user, PID, IPC
//! and UTS namespaces (and network namespace when the profile says `network = "none"`). The
//! agent sees read-only system directories (`/usr`, `/bin`, `/lib*`, `/etc`), the directories
//! of its `PATH` and of its own program, a private `/tmp` and `/dev`, a `/proc` of its own PID
//! namespace (so no other process of the machine, the worker and the engine included), and
//! read-write only its checkout and its HOME; read-only the object directory of its project's
//! cache, which the checkout borrows from. Nothing else of the engine: not its data directory,
//! database, config, other caches, or other runs. I/O (paths only; the caller spawns).

use std::path::{Path, PathBuf};

use crate::job::SandboxSettings;

/// Read-only system directories, bound when they exist.
const SYSTEM: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
    "/lib32",
    "/libx32",
    "/etc",
    // Where /etc/resolv.conf points on systemd-resolved machines.
    "/run/systemd/resolve",
];

/// What the sandbox gives the agent besides the system.
pub(super) struct Paths<'a> {
    pub checkout: &'a Path,
    pub home: &'a Path,
    /// The file the agent's standard input comes from (and `$SWARM_PROMPT_FILE`).
    pub prompt_file: &'a Path,
    /// The agent's program, as found on `PATH`.
    pub program: Option<PathBuf>,
    /// The worker's `PATH`.
    pub path: &'a str,
    /// Files the agent's environment names and needs to read (CA bundles).
    pub extra_files: Vec<PathBuf>,
    /// The project's repository when it is a directory on this machine: the agent may read it
    /// (fetch from it), as it would a remote over the network, but not write it.
    pub local_repo: Option<PathBuf>,
    /// The object directories the checkout borrows from (the project's cache): the agent reads
    /// its history from them, and cannot write them.
    pub shared_objects: Vec<PathBuf>,
}

/// The `bwrap` command line that runs `argv` in the sandbox.
pub(super) fn wrap(argv: &[String], settings: &SandboxSettings, p: &Paths<'_>) -> Vec<String> {
    let mut a: Vec<String> = [
        "bwrap",
        "--die-with-parent",
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
    ]
    .map(String::from)
    .to_vec();
    if !settings.network {
        a.push("--unshare-net".into());
    }
    let ro = |a: &mut Vec<String>, path: &Path| {
        let s = path.display().to_string();
        a.extend(["--ro-bind-try".into(), s.clone(), s]);
    };
    for dir in SYSTEM {
        ro(&mut a, Path::new(dir));
    }
    a.extend(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"].map(String::from));
    // Tools on PATH outside the system directories (~/.local/bin, a node_modules/.bin).
    for dir in p.path.split(':').filter(|d| d.starts_with('/')) {
        if !under_system(Path::new(dir)) && Path::new(dir).is_dir() {
            ro(&mut a, Path::new(dir));
        }
    }
    // The program itself, where it really lives: a node package is bound whole.
    if let Some(program) = &p.program {
        if !under_system(program) {
            ro(&mut a, program);
        }
        if let Ok(real) = program.canonicalize() {
            let package = real
                .ancestors()
                .find(|d| d.file_name().is_some_and(|n| n == "node_modules"))
                .map(Path::to_path_buf)
                .or_else(|| real.parent().map(Path::to_path_buf));
            if let Some(dir) = package {
                if !under_system(&dir) {
                    ro(&mut a, &dir);
                }
            }
        }
    }
    for file in p.extra_files.iter().filter(|f| !under_system(f)) {
        ro(&mut a, file);
    }
    for dir in settings
        .read_only
        .iter()
        .map(Path::new)
        .filter(|d| !under_system(d))
    {
        ro(&mut a, dir);
    }
    ro(&mut a, p.prompt_file);
    // The project's repository on this machine is read-only: the agent's work reaches it
    // through the worker's checks and push, never directly (a hook written into it would run
    // for the next person who pushes there).
    if let Some(repo) = &p.local_repo {
        ro(&mut a, repo);
    }
    for dir in &p.shared_objects {
        if p.local_repo.as_ref().is_none_or(|r| !dir.starts_with(r)) && !under_system(dir) {
            ro(&mut a, dir);
        }
    }
    for rw in [p.checkout, p.home] {
        let s = rw.display().to_string();
        a.extend(["--bind".into(), s.clone(), s]);
    }
    a.extend(["--chdir".into(), p.checkout.display().to_string()]);
    a.push("--".into());
    a.extend(argv.iter().cloned());
    a
}

/// Whether `path` is inside a system directory, bound already (binding it again would need a
/// mount point inside a read-only bind).
fn under_system(path: &Path) -> bool {
    SYSTEM.iter().any(|s| path.starts_with(s))
}

/// `program` as `PATH` finds it (as it is when it names a path).
pub(super) fn which(program: &str, path: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    path.split(':')
        .map(|d| Path::new(d).join(program))
        .find(|c| c.is_file())
}

/// Whether the sandbox works on this machine: runs `true` in it. `Err` says why not.
pub fn probe() -> Result<(), String> {
    let settings = SandboxSettings {
        network: true,
        read_only: Vec::new(),
    };
    let dir = std::env::temp_dir();
    let argv = wrap(
        &["true".to_string()],
        &settings,
        &Paths {
            checkout: &dir,
            home: &dir,
            prompt_file: Path::new("/dev/null"),
            program: None,
            path: "",
            extra_files: Vec::new(),
            local_repo: None,
            shared_objects: Vec::new(),
        },
    );
    match std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "bwrap failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err("bubblewrap (bwrap) is not installed".into())
        }
        Err(e) => Err(format!("cannot run bwrap: {e}")),
    }
}

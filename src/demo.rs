//! The built-in `demo` agent profile and `swarm up --demo`: a first run with no credentials.
//! The demo agent is not an AI: it makes a deterministic file edit per task (it writes
//! `demo/<key>.md` with the task's prompt), so the whole pipeline can be watched end to end.
//! I/O: creates a scratch repository on disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{Config, DEMO_AGENT};

/// The files of `examples/repo-layout/`, embedded so `swarm up --demo` works from anywhere.
pub const EXAMPLE_FILES: &[(&str, &str)] = &[
    (
        "README.md",
        include_str!("../examples/repo-layout/README.md"),
    ),
    (
        "src/greeter.py",
        include_str!("../examples/repo-layout/src/greeter.py"),
    ),
    (
        ".ai/plan.md",
        include_str!("../examples/repo-layout/.ai/plan.md"),
    ),
    (
        ".ai/tasks/add-greeting.yaml",
        include_str!("../examples/repo-layout/.ai/tasks/add-greeting.yaml"),
    ),
    (
        ".ai/tasks/add-farewell.yaml",
        include_str!("../examples/repo-layout/.ai/tasks/add-farewell.yaml"),
    ),
    (
        ".ai/tasks/review-greeting.yaml",
        include_str!("../examples/repo-layout/.ai/tasks/review-greeting.yaml"),
    ),
];

/// What `swarm demo-agent` does inside a checkout: write `demo/<key>.md`, after a short pause
/// (`SWARM_DEMO_DELAY_MS`, default 500) so runs visibly overlap.
pub fn run_demo_agent(workdir: &Path) -> std::io::Result<String> {
    let key = std::env::var("SWARM_TASK_KEY").unwrap_or_else(|_| "task".into());
    let prompt = match std::env::var("SWARM_PROMPT_FILE") {
        Ok(f) => std::fs::read_to_string(f)?,
        Err(_) => String::new(),
    };
    let delay = std::env::var("SWARM_DEMO_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    std::thread::sleep(Duration::from_millis(delay));
    let dir = workdir.join("demo");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{key}.md"));
    let body = format!(
        "# {key}\n\nThe demo agent was asked:\n\n{}\n",
        prompt.trim_end()
    );
    std::fs::write(&path, body)?;
    Ok(format!("demo agent wrote demo/{key}.md"))
}

/// Creates `root/remote.git`, a bare repository holding `examples/repo-layout/` on `main`, and
/// returns a config for it on the embedded defaults (SQLite, local runtime, demo agent).
pub fn scaffold(root: &Path) -> anyhow::Result<Config> {
    std::fs::create_dir_all(root)?;
    let root = &std::fs::canonicalize(root)?;
    let remote = root.join("remote.git");
    if !remote.exists() {
        let repo = git2::Repository::init_bare(&remote)?;
        let mut dirs: BTreeMap<String, Vec<(String, git2::Oid)>> = BTreeMap::new();
        for (path, content) in EXAMPLE_FILES {
            let blob = repo.blob(content.as_bytes())?;
            let (dir, name) = path.rsplit_once('/').map_or(("", *path), |(d, n)| (d, n));
            dirs.entry(dir.to_string())
                .or_default()
                .push((name.to_string(), blob));
        }
        let top = build_tree(&repo, &dirs, "")?;
        let tree = repo.find_tree(top)?;
        let sig = git2::Signature::now("coding-swarm demo", "demo@localhost")?;
        repo.commit(
            Some("refs/heads/main"),
            &sig,
            &sig,
            "Example project for coding-swarm",
            &tree,
            &[],
        )?;
        repo.set_head("refs/heads/main")?;
    }
    let data_dir = root.join("data");
    let text = format!(
        "data_dir = {data:?}\ndefault_agent = \"{DEMO_AGENT}\"\npoll_interval = \"5s\"\nretry_backoff = \"1s\"\n{sandbox}\n[[projects]]\nname = \"greeter\"\nrepo = {repo:?}\ndefault_branch = \"main\"\n",
        data = data_dir.display().to_string(),
        repo = remote.display().to_string(),
        sandbox = demo_sandbox(),
    );
    std::fs::create_dir_all(root)?;
    std::fs::write(root.join("swarm.toml"), &text)?;
    Ok(Config::parse(
        &text,
        "demo config",
        root,
        std::iter::empty(),
    )?)
}

/// The demo's agent is this binary's own demo agent, not a model acting on text anyone can
/// write: where bubblewrap does not work, the demo runs it unconfined rather than not at all
/// (a real config refuses to start instead).
fn demo_sandbox() -> String {
    match crate::worker::sandbox::probe() {
        Ok(()) => String::new(),
        Err(why) => {
            tracing::warn!("the demo runs its agent without a sandbox: {why}");
            format!("# The sandbox does not work here ({}); the demo's own agent runs unconfined.\nsandbox = \"none\"\n", why.replace('\n', " "))
        }
    }
}

fn build_tree(
    repo: &git2::Repository,
    dirs: &BTreeMap<String, Vec<(String, git2::Oid)>>,
    dir: &str,
) -> Result<git2::Oid, git2::Error> {
    let mut builder = repo.treebuilder(None)?;
    if let Some(files) = dirs.get(dir) {
        for (name, blob) in files {
            builder.insert(name, *blob, git2::FileMode::Blob.into())?;
        }
    }
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let children: std::collections::BTreeSet<String> = dirs
        .keys()
        .filter_map(|d| {
            d.strip_prefix(&prefix)
                .filter(|rest| !rest.is_empty() && (dir.is_empty() || d.starts_with(&prefix)))
        })
        .map(|rest| rest.split('/').next().unwrap_or(rest).to_string())
        .collect();
    for child in children {
        let sub = format!("{prefix}{child}");
        let oid = build_tree(repo, dirs, &sub)?;
        builder.insert(&child, oid, git2::FileMode::Tree.into())?;
    }
    builder.write()
}

/// Where `swarm up --demo` puts its scratch repository and data.
pub fn default_root() -> PathBuf {
    std::env::temp_dir().join(format!("coding-swarm-demo-{}", std::process::id()))
}

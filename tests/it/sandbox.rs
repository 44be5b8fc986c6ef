//! The local runtime's sandbox (bubblewrap): an agent that looks for everything it could steal
//! finds nothing of the engine with the sandbox on, and finds it all with `sandbox = "none"`.
//! What it finds goes into its own work, which the worker pushes, so the test reads it from
//! the task's branch.

use std::path::Path;

use crate::support::{command, TestRepo, SWARM};

/// The agent: every place it tries, and what it found there, one `name: value` line each.
fn snoop(data: &Path, config: &Path, home: &Path, repo: &Path) -> String {
    format!(
        "mkdir -p out; exec > out/found 2>/dev/null; \
         echo \"db: $(ls {data}/swarm.db)\"; \
         echo \"config: $(grep -c projects {config})\"; \
         echo \"runs: $(ls {data}/runs | wc -l)\"; \
         echo \"ssh: $(cat {home}/.ssh/id_canary)\"; \
         echo \"environ: $(cat /proc/*/environ | tr '\\0' '\\n' | grep -c CANARY_SECRET)\"; \
         echo \"processes: $(ls -d /proc/[0-9]* | wc -l)\"; \
         echo \"interfaces: $(grep -c : /proc/net/dev)\"; \
         echo \"repo_write: $(touch {repo}/agent-was-here && echo yes)\"; \
         echo done",
        data = data.display(),
        config = config.display(),
        home = home.display(),
        repo = repo.display(),
    )
}

fn found(repo: &TestRepo, branch: &str) -> std::collections::BTreeMap<String, String> {
    repo.read(branch, "out/found")
        .unwrap_or_else(|| panic!("no findings on {branch}"))
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// Runs `swarm up --once` on a fresh project with `extra` in its config; returns the findings.
fn run(extra: &str, network: &str) -> std::collections::BTreeMap<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::write(home.join(".ssh/id_canary"), "ssh-canary-key-material").unwrap();
    let repo = TestRepo::new();
    repo.commit(
        &[
            // Runs first (key order, one addressee): its run directory is there to be found.
            (
                ".ai/tasks/a-first.yaml",
                Some("addressee: w\nprompt: go first\n"),
            ),
            (
                ".ai/tasks/snoop.yaml",
                Some("addressee: w\nprompt: look around\n"),
            ),
        ],
        "two tasks",
    );
    let data = dir.path().join("data");
    let config = dir.path().join("swarm.toml");
    let script = snoop(&data, &config, &home, Path::new(&repo.url()));
    std::fs::write(
        &config,
        format!(
            "data_dir = {data:?}\ndefault_agent = \"sh\"\n{extra}\n[agents.sh]\ncommand = [\"sh\", \"-c\", {script:?}]\n{network}\n[[projects]]\nname = \"proj\"\nrepo = {:?}\n",
            repo.url(),
            data = data.display().to_string(),
        ),
    )
    .unwrap();
    let out = command(SWARM)
        .args(["up", "--once", "--config"])
        .arg(&config)
        .env("HOME", &home)
        .env("CANARY_SECRET", "the-engines-canary-secret")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    found(&repo, "swarm/snoop")
}

#[test]
fn a_sandboxed_agent_sees_nothing_of_the_engine_and_an_unconfined_one_sees_it_all() {
    let open = run("sandbox = \"none\"", "");
    assert!(open["db"].ends_with("swarm.db"), "{open:?}");
    assert_ne!(open["config"], "", "{open:?}");
    assert_eq!(open["runs"], "2", "its own run and the other: {open:?}");
    assert_eq!(open["ssh"], "ssh-canary-key-material", "{open:?}");
    assert_ne!(open["environ"], "0", "the engine's environment: {open:?}");
    assert_eq!(open["repo_write"], "yes", "{open:?}");

    // The default: bubblewrap.
    let boxed = run("", "");
    assert_eq!(boxed["db"], "", "{boxed:?}");
    assert_eq!(boxed["config"], "", "{boxed:?}");
    assert_eq!(boxed["runs"], "1", "only its own run: {boxed:?}");
    assert_eq!(boxed["ssh"], "", "{boxed:?}");
    assert_eq!(
        boxed["repo_write"], "",
        "the project's repository on this machine is read-only: {boxed:?}"
    );
    assert_eq!(
        boxed["environ"], "0",
        "no other process's environment: {boxed:?}"
    );
    let processes: u32 = boxed["processes"].parse().unwrap();
    assert!(processes <= 8, "its own PID namespace: {boxed:?}");
    assert!(
        boxed["interfaces"].parse::<u32>().unwrap() >= 2,
        "the network stays: {boxed:?}"
    );

    // `network = "none"`: only loopback.
    let offline = run("", "network = \"none\"");
    assert_eq!(offline["interfaces"], "1", "{offline:?}");
}

//! `swarm worker` as the runtime starts it: a fresh clone, the task's branch, the agent in a
//! clean environment, commit and push to a real bare remote, the result file.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use coding_swarm::store::TaskFilter;

use coding_swarm::config::AgentProfile;
use coding_swarm::job::JobSpec;
use coding_swarm::spec::{ErrorClass, RunResult};

use crate::support::{config, TestDb, TestRepo};

const SWARM: &str = env!("CARGO_BIN_EXE_swarm");

pub(crate) fn task(repo: &TestRepo, branch: &str, script: &str) -> JobSpec {
    JobSpec {
        version: coding_swarm::job::VERSION,
        project: "proj".into(),
        key: "job".into(),
        generation: 1,
        attempt: 1,
        run_name: "proj-job-g1-a1".into(),
        repo: repo.url(),
        branch: branch.into(),
        base: "main".into(),
        kind: Some("implement".into()),
        prompt: "Write the file.\nMore detail.".into(),
        agent_name: "sh".into(),
        agent: (&AgentProfile {
            env: BTreeMap::from([("FROM_PROFILE".to_string(), "${PROFILE_SOURCE}".to_string())]),
            ..AgentProfile::command(vec!["sh".into(), "-c".into(), script.into()])
        })
            .into(),
        git_name: "Swarm Bot".into(),
        git_email: "bot@example.com".into(),
        hooks: Some(coding_swarm::job::HookSettings {
            timeout: Duration::from_secs(60),
        }),
    }
}

/// A repository with one commit: a README.
fn hello_repo() -> TestRepo {
    let repo = TestRepo::new();
    repo.commit(&[("README.md", Some("hello\n"))], "init");
    repo
}

/// Runs `swarm worker` on `task` in `dir`, its output in `dir/log` as the local runtime keeps it.
pub(crate) fn run_worker(dir: &Path, task: &JobSpec) -> RunResult {
    std::fs::write(dir.join("task.json"), serde_json::to_vec(task).unwrap()).unwrap();
    let log = std::fs::File::create(dir.join("log")).unwrap();
    let status = crate::support::command(SWARM)
        .args(["worker", "--run-dir"])
        .arg(dir)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .env("SWARM_GIT_TOKEN", "token-for-the-worker-only")
        .env("ANTHROPIC_API_KEY", "sk-must-not-leak")
        .env("PROFILE_SOURCE", "from-the-engine")
        .status()
        .unwrap();
    let result: RunResult =
        serde_json::from_slice(&std::fs::read(dir.join("result.json")).unwrap()).unwrap();
    assert_eq!(status.success(), result.success);
    result
}

#[test]
fn the_worker_commits_and_pushes_the_agents_work_on_a_new_branch() {
    let repo = hello_repo();
    let dir = tempfile::tempdir().unwrap();
    let script = "env > ../agent-env; echo changed >> README.md; mkdir -p new; echo x > new/file.txt; echo all done";
    let result = run_worker(dir.path(), &task(&repo, "swarm/job", script));
    assert!(result.success && result.changed, "{result:?}");
    assert_eq!(result.summary.as_deref(), Some("all done"));
    let head = repo.repo.refname_to_id("refs/heads/swarm/job").unwrap();
    assert_eq!(result.commit_sha, Some(head.to_string()));
    assert_eq!(
        repo.read("swarm/job", "README.md").as_deref(),
        Some("hello\nchanged\n")
    );
    assert_eq!(
        repo.read("swarm/job", "new/file.txt").as_deref(),
        Some("x\n")
    );
    assert_eq!(
        repo.read("main", "README.md").as_deref(),
        Some("hello\n"),
        "main untouched"
    );
    let commit = repo.repo.find_commit(head).unwrap();
    assert_eq!(commit.author().name(), Some("Swarm Bot"));
    assert!(commit.message().unwrap().contains("Swarm-Task: proj/job"));

    // The agent's environment is clean: the worker's secrets stay with the worker.
    let env = std::fs::read_to_string(dir.path().join("agent-env")).unwrap();
    assert!(
        !env.contains("token-for-the-worker-only") && !env.contains("sk-must-not-leak"),
        "{env}"
    );
    assert!(env.contains("FROM_PROFILE=from-the-engine"), "{env}");
    assert!(env.contains("SWARM_TASK_KEY=job") && env.contains("SWARM_BRANCH=swarm/job"));
    assert!(
        env.contains(&format!("HOME={}", dir.path().join("home").display())),
        "{env}"
    );

    // A second run continues the branch where the first left it.
    let dir2 = tempfile::tempdir().unwrap();
    let result = run_worker(
        dir2.path(),
        &task(
            &repo,
            "swarm/job",
            "test -f new/file.txt && echo more >> new/file.txt",
        ),
    );
    assert!(result.success, "{result:?}");
    assert_eq!(
        repo.read("swarm/job", "new/file.txt").as_deref(),
        Some("x\nmore\n")
    );
}

#[test]
fn nothing_changed_a_failing_agent_a_missing_command_and_the_default_branch() {
    let repo = hello_repo();

    let dir = tempfile::tempdir().unwrap();
    let result = run_worker(dir.path(), &task(&repo, "swarm/review", "echo looks good"));
    assert!(
        result.success && !result.changed && result.commit_sha.is_none(),
        "{result:?}"
    );
    assert!(
        !repo.branches().contains(&"swarm/review".to_string()),
        "no empty branch is pushed"
    );

    let dir = tempfile::tempdir().unwrap();
    let result = run_worker(
        dir.path(),
        &task(
            &repo,
            "swarm/fail",
            "echo partial > part.txt; echo 'tests failed' >&2; exit 3",
        ),
    );
    assert!(!result.success);
    assert_eq!(result.error_class, Some(ErrorClass::Agent));
    assert!(
        result.error.as_deref().unwrap().contains("tests failed"),
        "{result:?}"
    );
    // A failed attempt's work is kept on its branch, on the remote.
    assert_eq!(
        repo.read("swarm/fail", "part.txt").as_deref(),
        Some("partial\n"),
        "{result:?}"
    );
    let head = repo.repo.refname_to_id("refs/heads/swarm/fail").unwrap();
    assert_eq!(result.commit_sha, Some(head.to_string()));
    assert!(result.changed);

    let dir = tempfile::tempdir().unwrap();
    let mut missing = task(&repo, "swarm/x", "");
    missing.agent.command = vec!["no-such-agent-cli".into()];
    let result = run_worker(dir.path(), &missing);
    assert_eq!(
        result.error_class,
        Some(ErrorClass::MissingCli),
        "{result:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let result = run_worker(dir.path(), &task(&repo, "main", "echo direct >> README.md"));
    assert!(result.success && result.changed, "{result:?}");
    assert_eq!(
        result.commit_sha,
        repo.head().map(|h| h.to_string()),
        "main's head on the remote is the run's commit"
    );
    assert_eq!(
        repo.read("main", "README.md").as_deref(),
        Some("hello\ndirect\n")
    );

    let dir = tempfile::tempdir().unwrap();
    let mut no_base = task(&repo, "swarm/y", "true");
    no_base.base = "develop".into();
    let result = run_worker(dir.path(), &no_base);
    assert_eq!(result.error_class, Some(ErrorClass::Git), "{result:?}");
    assert!(result.error.as_deref().unwrap().contains("develop"));
}

/// A configured secret (an agent profile's `DEPLOY_TOKEN`) with characters each encoding
/// changes.
const SECRET: &str = "s3cr3t/Value+with spaces&more=1@host%";

/// Shell that prints `$DEPLOY_TOKEN` in one form: base64; base64url after two bytes, unpadded;
/// hex; URL-encoded with `+` for a space; split over two lines.
const FORMS: &[(&str, &str)] = &[
    ("base64", r#"printf %s "$DEPLOY_TOKEN" | base64 -w0; echo"#),
    (
        "base64url",
        r#"printf 'xy%s' "$DEPLOY_TOKEN" | base64 -w0 | tr '+/' '-_' | tr -d =; echo"#,
    ),
    (
        "hex",
        r#"printf %s "$DEPLOY_TOKEN" | od -An -tx1 | tr -d ' \n'; echo"#,
    ),
    (
        "url",
        r#"printf %s "$DEPLOY_TOKEN" | sed -e 's/%/%25/g' -e 's|/|%2F|g' -e 's/+/%2B/g' -e 's/ /+/g' -e 's/&/%26/g' -e 's/=/%3D/g' -e 's/@/%40/g'; echo"#,
    ),
    (
        "split",
        r#"printf '%s\n' "$DEPLOY_TOKEN" | cut -c1-12; printf '%s\n' "$DEPLOY_TOKEN" | cut -c13-"#,
    ),
];

/// The forms of [`SECRET`] that `text` holds, line breaks (real or escaped) removed. Computed
/// here, independently of the worker's redactor.
fn leaks(text: &str) -> Vec<&'static str> {
    let flat = text
        .replace("\\r", "")
        .replace("\\n", "")
        .replace(['\r', '\n'], "");
    let base64 = STANDARD.encode(SECRET);
    let base64url = URL_SAFE_NO_PAD.encode(format!("xy{SECRET}"));
    [
        ("plain", SECRET.to_string()),
        ("base64", base64[..base64.len() - 4].to_string()),
        ("base64url", base64url[3..base64url.len() - 2].to_string()),
        ("hex", hex::encode(SECRET)),
        (
            "url",
            "s3cr3t%2FValue%2Bwith+spaces%26more%3D1%40host%25".to_string(),
        ),
    ]
    .into_iter()
    .filter(|(_, form)| flat.contains(form.as_str()))
    .map(|(name, _)| name)
    .collect()
}

#[test]
fn each_encoding_of_a_configured_secret_is_refused_by_its_name() {
    let repo = hello_repo();
    for (form, command) in FORMS {
        let dir = tempfile::tempdir().unwrap();
        let branch = format!("swarm/{form}");
        let file = format!("{form}.txt");
        let mut t = task(
            &repo,
            &branch,
            &format!("{{ {command}; }} > {file}; echo wrote it"),
        );
        t.agent.env.insert("DEPLOY_TOKEN".into(), SECRET.into());
        let result = run_worker(dir.path(), &t);
        // The agent did write the secret in that form.
        let written = std::fs::read_to_string(dir.path().join("checkout").join(&file)).unwrap();
        assert!(
            !leaks(&written).is_empty(),
            "{form}: the agent wrote no form of the secret"
        );
        assert!(!result.success, "{form}: {result:?}");
        assert_eq!(result.error_class, Some(ErrorClass::Agent), "{form}");
        let error = result.error.as_deref().unwrap();
        assert!(
            error.contains(&file)
                && error.contains("DEPLOY_TOKEN")
                && error.contains("nothing was pushed"),
            "{form}: {error}"
        );
        assert!(
            !repo.branches().contains(&branch),
            "{form}: nothing was pushed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_in_every_encoding_is_not_pushed_logged_reported_or_recorded() {
    let db = TestDb::sqlite().await;
    let data = tempfile::tempdir().unwrap();
    let repo = TestRepo::new();
    repo.commit(
        &[(
            ".ai/tasks/leak.yaml",
            Some("addressee: worker-a\nprompt: leak it\nkind: implement\nmax_attempts: 1\n"),
        )],
        "a task",
    );
    // Every form into one file and into the agent's output, whose last lines (its final
    // message) are the two halves of the value.
    let script: Vec<String> = FORMS
        .iter()
        .map(|(_, command)| format!("{{ {command}; }} | tee -a leak.txt"))
        .collect();
    let mut cfg = config(data.path(), &db, &repo, &script.join("; "), "");
    cfg.agents
        .get_mut("sh")
        .unwrap()
        .env
        .insert("DEPLOY_TOKEN".into(), SECRET.into());
    crate::support::run_engine_once(cfg, &db.store).await;

    let task = db
        .store
        .list(&TaskFilter::default())
        .await
        .unwrap()
        .remove(0);
    let result = task.result().expect("the run ended");
    assert!(!result.success, "{result:?}");
    let error = result.error.as_deref().unwrap();
    assert!(
        error.contains("leak.txt") && error.contains("DEPLOY_TOKEN"),
        "{error}"
    );
    assert!(
        repo.read(&task.branch, "leak.txt").is_none(),
        "nothing was pushed"
    );
    let mut texts = Vec::new();
    let mut logs = String::new();
    for run in std::fs::read_dir(data.path().join("runs")).unwrap() {
        let run = run.unwrap().path();
        let log = std::fs::read_to_string(run.join("log")).unwrap();
        logs.push_str(&log);
        texts.push(("log", log));
        texts.push((
            "result.json",
            std::fs::read_to_string(run.join("result.json")).unwrap(),
        ));
    }
    assert!(!logs.is_empty(), "a run left its log");
    let events = db.store.events("proj", "leak").await.unwrap();
    assert!(!events.is_empty());
    texts.push(("events", serde_json::to_string(&events).unwrap()));
    texts.push(("the task's result", serde_json::to_string(result).unwrap()));
    texts.push((
        "the status file",
        repo.read("main", ".ai/status/leak.yaml")
            .expect("the engine reported the run"),
    ));
    for (what, text) in &texts {
        assert_eq!(leaks(text), Vec::<&str>::new(), "{what} holds the secret");
    }
    // Each form's place is visible in the log.
    assert!(
        logs.matches("[REDACTED:DEPLOY_TOKEN]").count() >= FORMS.len(),
        "{logs}"
    );
    db.drop_db().await;
}

/// The secret part of a file the agent made: the first line of a key's material, or what
/// follows `=` in `NAME=value`.
fn secret_part(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    let line = text.lines().find(|l| !l.starts_with("-----")).unwrap();
    line.rsplit('=').next().unwrap().to_string()
}

#[test]
fn a_private_key_or_github_token_never_configured_is_refused() {
    let repo = TestRepo::new();
    // A key the repository has already, as a test fixture.
    let fixtures = tempfile::tempdir().unwrap();
    let fixture = fixtures.path().join("key.pem");
    let made = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&fixture)
        .status()
        .unwrap();
    assert!(made.success());
    let fixture = std::fs::read_to_string(&fixture).unwrap();
    repo.commit(
        &[
            ("README.md", Some("hello\n")),
            ("tests/key.pem", Some(fixture.as_str())),
        ],
        "init",
    );
    for (file, make, what) in [
        (
            "deploy_key.pem",
            "openssl genpkey -algorithm ed25519 -out deploy_key.pem",
            "a private key",
        ),
        (
            "id_ed25519",
            "ssh-keygen -q -t ed25519 -N '' -C '' -f id_ed25519",
            "a private key",
        ),
        (
            "gh.env",
            "printf 'GH_TOKEN=ghp_%s\\n' \"$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \\n')\" > gh.env",
            "a GitHub token",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let branch = format!("swarm/{file}");
        let script = format!("{make} && cat {file} && echo made it");
        let result = run_worker(dir.path(), &task(&repo, &branch, &script));
        assert!(!result.success, "{file}: {result:?}");
        let error = result.error.as_deref().unwrap();
        assert!(
            error.contains(file) && error.contains(what),
            "{file}: {error}"
        );
        assert!(!repo.branches().contains(&branch), "{file}: nothing was pushed");
        // The agent printed it: the log shows where, not what.
        let secret_line = secret_part(&dir.path().join("checkout").join(file));
        assert!(secret_line.len() >= 36, "{file}: the agent made it");
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
        assert!(!log.contains(&secret_line), "{file}: the log shows it");
        assert!(log.contains("[REDACTED:"), "{file}: {log}");
    }
    // A token in a commit message the agent wrote itself.
    let dir = tempfile::tempdir().unwrap();
    let script = "echo x > x.txt && git add x.txt && git commit -q -m \"use ghp_$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \\n')\"";
    let result = run_worker(dir.path(), &task(&repo, "swarm/message", script));
    assert!(!result.success, "{result:?}");
    assert!(
        result
            .error
            .as_deref()
            .unwrap()
            .contains("a commit message contains a GitHub token"),
        "{result:?}"
    );
    assert!(!repo.branches().contains(&"swarm/message".to_string()));

    // The key the repository had, in a file the agent changes: not this run's leak.
    let dir = tempfile::tempdir().unwrap();
    let result = run_worker(
        dir.path(),
        &task(
            &repo,
            "swarm/fixture",
            "echo '# for the tests' >> tests/key.pem",
        ),
    );
    assert!(result.success && result.changed, "{result:?}");

    // A key that comes with commits the remote has already (the agent merges the default
    // branch, which gained a test key after the task's branch was made): not this run's leak.
    let init = repo.head().unwrap();
    repo.repo
        .reference("refs/heads/swarm/merge", init, false, "the task's branch")
        .unwrap();
    let other = fixtures.path().join("other.pem");
    let made = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(made.success());
    let other = std::fs::read_to_string(&other).unwrap();
    repo.commit(
        &[("tests/other.pem", Some(other.as_str()))],
        "another test key",
    );
    let dir = tempfile::tempdir().unwrap();
    let result = run_worker(
        dir.path(),
        &task(
            &repo,
            "swarm/merge",
            "git merge --no-edit origin/main && echo merged >> README.md",
        ),
    );
    assert!(result.success && result.changed, "{result:?}");
    assert_eq!(
        repo.read("swarm/merge", "tests/other.pem").as_deref(),
        Some(other.as_str())
    );
}

#[test]
fn a_custom_agent_gets_the_whole_prompt_on_stdin_and_in_its_file() {
    let repo = hello_repo();
    let dir = tempfile::tempdir().unwrap();
    let mut t = task(
        &repo,
        "swarm/job",
        r#"cat > ../stdin.txt; cp "$SWARM_PROMPT_FILE" ../file.txt; echo read it"#,
    );
    // A prompt at the validator's limit: one argument that long would be refused (E2BIG).
    t.prompt = format!(
        "BEGIN {} END",
        "x".repeat(coding_swarm::spec::Prompt::MAX_CHARS - 10)
    );
    let result = run_worker(dir.path(), &t);
    assert!(result.success, "{result:?}");
    let stdin = std::fs::read_to_string(dir.path().join("stdin.txt")).unwrap();
    let file = std::fs::read_to_string(dir.path().join("file.txt")).unwrap();
    assert_eq!(stdin, file, "the same whole prompt both ways");
    assert!(
        stdin.contains(&t.prompt) && stdin.contains("You are a worker"),
        "role prompt and task"
    );
    // `{prompt}` puts it into one argument: too long for Linux, said so clearly.
    let dir = tempfile::tempdir().unwrap();
    t.agent.command = vec!["echo".into(), "{prompt}".into()];
    t.prompt = "é".repeat(coding_swarm::spec::Prompt::MAX_CHARS);
    let result = run_worker(dir.path(), &t);
    assert_eq!(result.error_class, Some(ErrorClass::Crash), "{result:?}");
    assert!(
        result
            .error
            .as_deref()
            .unwrap()
            .contains("$SWARM_PROMPT_FILE"),
        "{result:?}"
    );
}

/// Live processes (not zombies) of the process group `pgid`.
fn group_members(pgid: i32) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // state, ppid, pgrp
        if fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string() {
            found.push(stat);
        }
    }
    found
}

#[test]
fn sigterm_ends_the_agents_group_and_pushes_nothing() {
    let repo = hello_repo();
    let dir = tempfile::tempdir().unwrap();
    // The agent changes a file, starts a child in the background and waits for a long time.
    let t = task(
        &repo,
        "swarm/job",
        "echo changed >> README.md; sleep 300 & echo $$ > ../agent.pid; sleep 300; echo finished",
    );
    std::fs::write(
        dir.path().join("task.json"),
        serde_json::to_vec(&t).unwrap(),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let mut worker = crate::support::command(SWARM)
        .args(["worker", "--run-dir"])
        .arg(dir.path())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let pid_file = dir.path().join("agent.pid");
    let start = std::time::Instant::now();
    let agent: i32 = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break pid;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the agent never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        group_members(agent).len() >= 2,
        "the agent runs in its own group with its child"
    );
    // Only the worker gets the signal, as PID 1 of a pod does.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = worker.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the worker did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let result: RunResult =
        serde_json::from_slice(&std::fs::read(dir.path().join("result.json")).unwrap()).unwrap();
    assert_eq!(
        result.error_class,
        Some(ErrorClass::Cancelled),
        "{result:?}"
    );
    assert!(
        result.error.as_deref().unwrap().contains("stopped"),
        "{result:?}"
    );
    assert!(
        repo.repo
            .find_branch("swarm/job", git2::BranchType::Local)
            .is_err(),
        "nothing was pushed"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        group_members(agent),
        Vec::<String>::new(),
        "the agent's group is gone"
    );
}

#[test]
fn the_worker_reads_its_task_from_a_mounted_file() {
    let repo = hello_repo();
    let dir = tempfile::tempdir().unwrap();
    let mount = tempfile::tempdir().unwrap();
    let t = task(&repo, "swarm/job", "echo from-the-mount > mounted.txt");
    let file = mount.path().join("task.json");
    std::fs::write(&file, serde_json::to_vec(&t).unwrap()).unwrap();
    let status = crate::support::command(SWARM)
        .args(["worker", "--run-dir"])
        .arg(dir.path())
        .arg("--task-file")
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        repo.read("swarm/job", "mounted.txt").as_deref(),
        Some("from-the-mount\n")
    );
}

#[test]
fn what_the_agent_leaves_running_in_its_group_is_ended() {
    let repo = hello_repo();
    let dir = tempfile::tempdir().unwrap();
    let t = task(
        &repo,
        "swarm/job",
        "sleep 300 >/dev/null 2>&1 & echo $$ > ../agent.pid; echo done",
    );
    let result = run_worker(dir.path(), &t);
    assert!(result.success, "{result:?}");
    let agent: i32 = std::fs::read_to_string(dir.path().join("agent.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        group_members(agent),
        Vec::<String>::new(),
        "the background child is gone"
    );
}

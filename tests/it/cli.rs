//! The command line as a person uses it: `swarm up --once`, `swarm task list|show|stop|retry`,
//! `swarm migrate`, and clear errors for a bad config.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use crate::support::TestRepo;

const SWARM: &str = env!("CARGO_BIN_EXE_swarm");

fn swarm(dir: &Path, args: &[&str]) -> Output {
    crate::support::command(SWARM)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn up_once_then_inspect_retry_and_stop_tasks() {
    let repo = TestRepo::new();
    repo.commit(
        &[
            (".ai/tasks/first.yaml", Some("addressee: w1\nprompt: one\n")),
            (
                ".ai/tasks/second.yaml",
                Some("addressee: w2\nprompt: two\n"),
            ),
        ],
        "tasks",
    );
    let dir = tempfile::tempdir().unwrap();
    // A relative config path with relative paths inside: they resolve against the file.
    std::fs::create_dir(dir.path().join("conf")).unwrap();
    std::fs::write(
        dir.path().join("conf/swarm.toml"),
        format!(
            "data_dir = \"data\"\ndefault_agent = \"sh\"\n[agents.sh]\ncommand = [\"sh\", \"-c\", \"echo did $SWARM_TASK_KEY > out.txt; echo finished\"]\n[[projects]]\nname = \"proj\"\nrepo = {:?}\n",
            repo.url()
        ),
    )
    .unwrap();
    let up = swarm(dir.path(), &["up", "--once", "--config", "conf/swarm.toml"]);
    assert!(up.status.success(), "{}", text(&up));
    assert!(dir.path().join("conf/data/swarm.db").exists());
    assert!(
        text(&up).contains("proj/first: completed (succeeded)"),
        "{}",
        text(&up)
    );

    let list = swarm(
        dir.path(),
        &["task", "list", "--json", "-c", "conf/swarm.toml"],
    );
    assert!(list.status.success(), "{}", text(&list));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows
        .iter()
        .all(|r| r["status"] == "completed" && r["result"]["success"] == true));

    let show = swarm(
        dir.path(),
        &["task", "show", "proj/first", "-c", "conf/swarm.toml"],
    );
    let shown = text(&show);
    assert!(
        shown.contains("completed (succeeded)")
            && shown.contains("claimed")
            && shown.contains("reported"),
        "{shown}"
    );

    let retry = swarm(
        dir.path(),
        &["task", "retry", "first", "-c", "conf/swarm.toml"],
    );
    assert!(text(&retry).contains("generation 2"), "{}", text(&retry));
    let stop = swarm(
        dir.path(),
        &["task", "stop", "first", "-c", "conf/swarm.toml"],
    );
    assert!(
        text(&stop).contains("cancelled before it ran"),
        "{}",
        text(&stop)
    );
    let again = swarm(
        dir.path(),
        &["task", "stop", "first", "-c", "conf/swarm.toml"],
    );
    assert!(
        !again.status.success() && text(&again).contains("nothing to stop"),
        "{}",
        text(&again)
    );
    let missing = swarm(
        dir.path(),
        &["task", "show", "nope", "-c", "conf/swarm.toml"],
    );
    assert!(
        !missing.status.success() && text(&missing).contains("no task nope"),
        "{}",
        text(&missing)
    );
}

#[test]
fn migrate_and_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("swarm.toml"), "data_dir = \"d\"\n").unwrap();
    let out = swarm(dir.path(), &["migrate"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(dir.path().join("d/swarm.db").exists());

    std::fs::write(
        dir.path().join("bad.toml"),
        "[limits]\nmax_running = 4\nmax_runing_per_project = 2\n",
    )
    .unwrap();
    let out = swarm(dir.path(), &["up", "--config", "bad.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out);
    assert!(
        said.contains("bad.toml")
            && said.contains("max_runing_per_project")
            && said.contains("3:1"),
        "{said}"
    );

    let out = crate::support::command(SWARM)
        .args(["up"])
        .current_dir(dir.path())
        .env("SWARM_LIMITS__MAX_RUNNING", "many")
        .output()
        .unwrap();
    let said = text(&out);
    assert!(
        !out.status.success() && said.contains("SWARM_LIMITS__MAX_RUNNING"),
        "{said}"
    );
}

#[test]
fn doctor_says_what_is_missing() {
    let repo = TestRepo::new();
    repo.commit(&[("README.md", Some("x"))], "init");
    let dir = tempfile::tempdir().unwrap();
    let claude = crate::model::claude_bin();
    std::fs::write(
        dir.path().join("swarm.toml"),
        format!(
            "data_dir = \"d\"\n[agents.claude]\nkind = \"claude\"\ncommand = [{claude:?}]\nenv = {{ CLAUDE_CODE_OAUTH_TOKEN = \"${{DOCTOR_TOKEN}}\" }}\n\
             [[projects]]\nname = \"good\"\nrepo = {:?}\n[[projects]]\nname = \"gone\"\nrepo = \"/nonexistent/remote.git\"\n",
            repo.url()
        ),
    )
    .unwrap();
    let run = |env: &[(&str, &str)]| {
        let mut cmd = crate::support::command(SWARM);
        cmd.arg("doctor")
            .current_dir(dir.path())
            .env("HOME", dir.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let out = run(&[("DOCTOR_TOKEN", "sk-ant-oat01-doctor-0123456789")]);
    let said = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the missing remote fails it: {said}"
    );
    let line = |prefix: &str| {
        said.lines()
            .find(|l| l.contains(prefix))
            .unwrap_or_else(|| panic!("no line for {prefix}: {said}"))
            .to_string()
    };
    assert!(line("ANTHROPIC_API_KEY").starts_with("ok"), "{said}");
    assert!(
        line("agent claude: CLI").starts_with("ok")
            && line("agent claude: CLI").contains("Claude Code"),
        "{said}"
    );
    assert!(
        line("agent claude: credentials").starts_with("ok")
            && line("credentials").contains("subscription"),
        "{said}"
    );
    assert!(line("git identity").starts_with("ok"));
    assert!(line("database").starts_with("ok"));
    assert!(
        line("project good").starts_with("ok") && line("project good").contains("main at"),
        "{said}"
    );
    assert!(line("project gone").starts_with("FAIL"), "{said}");
    assert!(
        !said.contains("sk-ant-oat01-doctor-0123456789"),
        "no secret in the output"
    );

    let out = run(&[
        ("ANTHROPIC_API_KEY", "sk-ant-api03-x"),
        ("DOCTOR_TOKEN", "sk-ant-api03-not-a-subscription"),
    ]);
    let said = text(&out);
    assert!(
        line_of(&said, "ANTHROPIC_API_KEY").starts_with("FAIL"),
        "{said}"
    );
    assert!(
        line_of(&said, "agent claude: credentials").starts_with("FAIL")
            && said.contains("setup-token"),
        "{said}"
    );
    let out = run(&[]);
    assert!(line_of(&text(&out), "agent claude: credentials").starts_with("FAIL"));
}

fn line_of(text: &str, prefix: &str) -> String {
    text.lines()
        .find(|l| l.contains(prefix))
        .unwrap_or_default()
        .to_string()
}

/// A `swarm.toml` in `dir` for one project on `repo` with the `sh` agent running `script`.
fn write_sh_config(dir: &Path, repo: &str, script: &str) {
    std::fs::write(
        dir.join("swarm.toml"),
        format!(
            "data_dir = \"data\"\ndefault_agent = \"sh\"\nretry_backoff = \"100ms\"\n\
             [agents.sh]\ncommand = [\"sh\", \"-c\", {script:?}]\n[[projects]]\nname = \"proj\"\nrepo = {repo:?}\n"
        ),
    )
    .unwrap();
}

#[test]
fn up_once_exits_1_for_a_failed_task_or_an_unsynced_project_and_task_logs_shows_the_run() {
    let repo = TestRepo::new();
    repo.commit(
        &[
            (".ai/tasks/good.yaml", Some("addressee: w1\nprompt: one\n")),
            (".ai/tasks/bad.yaml", Some("addressee: w2\nprompt: two\n")),
            (
                ".ai/tasks/long.yaml",
                Some("addressee: w3\nprompt: three\n"),
            ),
        ],
        "tasks",
    );
    let dir = tempfile::tempdir().unwrap();
    let script = "echo \"log line of $SWARM_TASK_KEY\"; \
                  [ \"$SWARM_TASK_KEY\" != long ] || seq 1 60000; [ \"$SWARM_TASK_KEY\" != bad ]";
    write_sh_config(dir.path(), &repo.url(), script);
    let up = swarm(dir.path(), &["up", "--once"]);
    let said = text(&up);
    assert_eq!(up.status.code(), Some(1), "a task failed: {said}");
    assert!(
        said.contains("proj/good: completed (succeeded)")
            && said.contains("proj/bad: completed (failed"),
        "{said}"
    );
    // Every result is reported all the same.
    assert!(repo.read("main", ".ai/status/bad.yaml").is_some());

    let logs = swarm(dir.path(), &["task", "logs", "good"]);
    assert!(logs.status.success(), "{}", text(&logs));
    assert!(
        String::from_utf8_lossy(&logs.stdout).contains("log line of good"),
        "{}",
        text(&logs)
    );
    let logs = swarm(dir.path(), &["task", "logs", "proj/bad"]);
    assert!(
        String::from_utf8_lossy(&logs.stdout).contains("log line of bad"),
        "{}",
        text(&logs)
    );
    // Of a long log, the last 256 KiB, from a line's start.
    let logs = swarm(dir.path(), &["task", "logs", "long"]);
    let out = String::from_utf8_lossy(&logs.stdout);
    assert!(logs.status.success(), "{}", text(&logs));
    assert!(
        out.len() <= 256 * 1024 && out.len() > 200 * 1024,
        "{} bytes",
        out.len()
    );
    assert!(out.contains("\n59999\n60000\n") && !out.contains("log line of long"));
    let first: u32 = out.lines().next().unwrap().parse().unwrap();
    assert!(
        out.contains(&format!("{first}\n{}\n", first + 1)),
        "{first}"
    );
    // A new generation that has not run yet has no log.
    let retry = swarm(dir.path(), &["task", "retry", "good"]);
    assert!(retry.status.success(), "{}", text(&retry));
    let logs = swarm(dir.path(), &["task", "logs", "good"]);
    assert!(
        !logs.status.success() && text(&logs).contains("proj/good has not run yet"),
        "{}",
        text(&logs)
    );

    // Everything succeeds, but a project cannot be synced: 1 as well.
    let gone = tempfile::tempdir().unwrap();
    let missing = gone.path().join("missing.git");
    write_sh_config(gone.path(), &missing.display().to_string(), "true");
    let up = swarm(gone.path(), &["up", "--once"]);
    let said = text(&up);
    assert_eq!(up.status.code(), Some(1), "{said}");
    assert!(said.contains("project proj: sync error"), "{said}");
}

#[test]
fn epic_add_twice_with_one_name_makes_a_second_epic_and_epic_list_shows_how_each_ended() {
    let repo = TestRepo::new();
    repo.commit(&[("README.md", Some("x\n"))], "init");
    let dir = tempfile::tempdir().unwrap();
    // Three managers: one gives up, one is done, one plans.
    let script = "case \"$SWARM_TASK_KEY\" in \
                  epic-login) echo 'EPIC FAILED: no session code to build on';; \
                  epic-login-2) echo 'EPIC COMPLETE';; \
                  *) echo planned;; esac";
    write_sh_config(dir.path(), &repo.url(), script);
    let add = |name: Option<&str>| {
        let mut args = vec!["epic", "add", "--project", "proj"];
        if let Some(n) = name {
            args.extend(["--name", n]);
        }
        args.push("Add a login page with email and password!");
        swarm(dir.path(), &args)
    };
    let first = add(Some("login"));
    assert!(
        first.status.success()
            && text(&first).contains("epic login committed to proj as .ai/tasks/epic-login.yaml"),
        "{}",
        text(&first)
    );
    let second = add(Some("login"));
    assert!(
        second.status.success()
            && text(&second)
                .contains("epic login-2 committed to proj as .ai/tasks/epic-login-2.yaml"),
        "{}",
        text(&second)
    );
    // Without --name, the name is made from the text.
    let third = add(None);
    assert!(
        text(&third).contains(".ai/tasks/epic-add-a-login-page-with-email-and-password.yaml"),
        "{}",
        text(&third)
    );
    let file = repo.read("main", ".ai/tasks/epic-login-2.yaml").unwrap();
    assert!(
        file.contains("epic: login-2") && file.contains("addressee: project-mgr-proj"),
        "{file}"
    );

    let up = swarm(dir.path(), &["up", "--once"]);
    assert!(up.status.success(), "{}", text(&up));
    let list = swarm(dir.path(), &["epic", "list"]);
    let said = text(&list);
    assert!(list.status.success(), "{said}");
    let row = |epic: &str| {
        said.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(epic))
            .unwrap_or_else(|| panic!("no row for {epic}: {said}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert!(said.starts_with("PROJECT"), "{said}");
    // PROJECT EPIC STATE PROGRESS SPEND ACTIVATIONS REASON: each manager ran once and created
    // no task.
    let reason = "the project manager gave up: no session code to build on";
    let table = [
        ("login", "failed", reason),
        ("login-2", "complete", ""),
        ("add-a-login-page-with-email-and-password", "active", ""),
    ];
    for (epic, state, reason) in table {
        let r = row(epic);
        assert_eq!(
            (&r[..6], r[6..].join(" ")),
            (
                &["proj", epic, state, "0/0", "$0.00", "1"][..],
                reason.to_string()
            ),
            "{said}"
        );
    }
    let json = swarm(dir.path(), &["epic", "list", "--json", "--project", "proj"]);
    let epics: Vec<serde_json::Value> = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(epics.len(), 3, "{epics:?}");
    let states: Vec<(&str, &str)> = epics
        .iter()
        .map(|e| (e["epic"].as_str().unwrap(), e["state"].as_str().unwrap()))
        .collect();
    for (epic, state, _) in table {
        assert!(states.contains(&(epic, state)), "{epics:?}");
    }
    assert!(
        epics.iter().all(|e| e["consecutive_failures"] == 0),
        "{epics:?}"
    );

    // A cap lowered below an active epic's count, and a restart: its next sync ends the epic.
    let config = dir.path().join("swarm.toml");
    let before = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{before}[epics]\nmax_activations = 1\n")).unwrap();
    let up = swarm(dir.path(), &["up", "--once"]);
    assert!(up.status.success(), "{}", text(&up));
    let list = swarm(dir.path(), &["epic", "list"]);
    let said = text(&list);
    let line = said
        .lines()
        .find(|l| l.contains("add-a-login-page-with-email-and-password"))
        .unwrap();
    assert!(
        line.contains(" failed ")
            && line.ends_with("cap reached: 1 manager activations (max_activations = 1)"),
        "{said}"
    );
}

#[test]
fn the_demo_runs_its_three_tasks_and_leaves_branches_and_status_files() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let out = crate::support::command(SWARM)
        .args(["up", "--demo", "--demo-dir"])
        .arg(&demo)
        .env("SWARM_DEMO_DELAY_MS", "50")
        .output()
        .unwrap();
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    for key in ["add-greeting", "add-farewell", "review-greeting"] {
        assert!(
            said.contains(&format!("greeter/{key}: completed (succeeded)")),
            "{said}"
        );
    }
    assert!(
        said.contains(&format!(
            "results of greeter are in {}",
            demo.join("remote.git").display()
        )),
        "{said}"
    );
    let remote = git2::Repository::open_bare(demo.join("remote.git")).unwrap();
    let main = remote
        .revparse_single("main")
        .unwrap()
        .peel_to_tree()
        .unwrap();
    for key in ["add-greeting", "add-farewell", "review-greeting"] {
        assert!(
            main.get_path(Path::new(&format!(".ai/status/{key}.yaml")))
                .is_ok(),
            "status file of {key}"
        );
    }
    // swarm/add-farewell has one commit over main's base, swarm/add-greeting two (the
    // implementation, then the review on the same branch).
    let ahead = |branch: &str| {
        let tip = remote.revparse_single(branch).unwrap().id();
        let base = remote
            .merge_base(tip, remote.revparse_single("main").unwrap().id())
            .unwrap();
        remote.graph_ahead_behind(tip, base).unwrap().0
    };
    assert_eq!(
        (ahead("swarm/add-farewell"), ahead("swarm/add-greeting")),
        (1, 2)
    );
    assert!(demo.join("swarm.toml").exists() && demo.join("data").is_dir());
    // No epic task, so no epic and no manager: the label alone opens nothing.
    let list = crate::support::command(SWARM)
        .args(["epic", "list", "--json", "--config"])
        .arg(demo.join("swarm.toml"))
        .output()
        .unwrap();
    let epics: Vec<serde_json::Value> = serde_json::from_slice(&list.stdout).unwrap();
    assert!(epics.is_empty(), "{}", text(&list));

    // Without --demo-dir: a new directory under $TMPDIR, named after the process.
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let child = crate::support::command(SWARM)
        .args(["up", "--demo"])
        .env("TMPDIR", &tmp)
        .env("SWARM_DEMO_DELAY_MS", "50")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let root = tmp.join(format!("coding-swarm-demo-{}", child.id()));
    let out = child.wait_with_output().unwrap();
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "demo: creating a scratch repository from examples/repo-layout in {}",
            root.display()
        )) && root.join("remote.git").is_dir(),
        "{said}"
    );
}

#[tokio::test]
async fn up_once_exits_1_when_the_status_files_cannot_be_committed() {
    let repo = TestRepo::new();
    repo.commit(
        &[(".ai/tasks/job.yaml", Some("addressee: w1\nprompt: one\n"))],
        "a task",
    );
    let dir = tempfile::tempdir().unwrap();
    write_sh_config(dir.path(), &repo.url(), "echo worked > out.txt");
    let log = dir.path().join("up.log");
    let child = crate::support::start_engine(&dir.path().join("swarm.toml"), &log, true);
    // Someone holds main's lock for as long as the engine runs, renewed so it never looks stale:
    // the run's branch can be pushed, the status commit to main cannot.
    let lock = repo.path().join("refs/heads/main.lock");
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let holder = {
        let (lock, done) = (lock.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                std::fs::write(&lock, "0000000000000000000000000000000000000000\n").unwrap();
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    let status = crate::support::wait_exit(child, Duration::from_secs(60), "swarm up --once").await;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    holder.join().unwrap();
    std::fs::remove_file(&lock).ok();
    let said = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(1), "{said}");
    assert!(
        said.contains("all tasks finished, but their status files could not be committed"),
        "{said}"
    );
    // The run itself went through; only its report is missing.
    assert!(repo.branches().contains(&"swarm/job".to_string()), "{said}");
    assert!(repo.read("main", ".ai/status/job.yaml").is_none());
}

/// Shell completions and the manual page come from the CLI's own definition.
#[test]
fn completions_and_the_manual_page() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, mark) in [
        ("bash", "_swarm()"),
        ("zsh", "#compdef swarm"),
        ("fish", "complete -c swarm"),
    ] {
        let out = swarm(dir.path(), &["completions", shell]);
        let t = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && t.contains(mark),
            "{shell}: {}",
            text(&out)
        );
        assert!(
            t.contains("validate") && t.contains("doctor"),
            "{shell}: the subcommands"
        );
    }
    let man = swarm(dir.path(), &["man"]);
    let t = String::from_utf8_lossy(&man.stdout);
    assert!(
        man.status.success() && t.contains(".TH swarm 1"),
        "{}",
        text(&man)
    );
    assert!(t.contains("validate") && t.contains("completions"), "{t}");
}

/// `swarm validate --format json|github`: the same problems, as data and as GitHub workflow
/// annotations (with GitHub's escaping of `%`, line breaks, `:` and `,`).
#[test]
fn validate_speaks_json_and_github_annotations() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(".ai/tasks")).unwrap();
    std::fs::write(
        dir.path().join(".ai/tasks/bad.yaml"),
        "addressee: w\nprompt: p\nbogus: 1\n",
    )
    .unwrap();
    let json = swarm(dir.path(), &["validate", "--format", "json"]);
    assert_eq!(json.status.code(), Some(1), "{}", text(&json));
    let items: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(items[0]["path"], ".ai/tasks/bad.yaml");
    assert_eq!(
        (items[0]["line"].as_u64(), items[0]["column"].as_u64()),
        (Some(3), Some(1))
    );
    assert!(items[0]["message"].as_str().unwrap().contains("bogus"));
    let gh = swarm(dir.path(), &["validate", "--format", "github"]);
    assert_eq!(gh.status.code(), Some(1));
    let line = String::from_utf8_lossy(&gh.stdout).trim().to_string();
    assert!(
        line.starts_with("::error file=.ai/tasks/bad.yaml,line=3,col=1::unknown field `bogus`"),
        "{line}"
    );
    let problem = coding_swarm::spec::Problem {
        path: "a:b,c.yaml".into(),
        error: coding_swarm::spec::SpecError {
            line: 2,
            column: 5,
            message: "100% wrong\nsecond line".into(),
        },
    };
    assert_eq!(
        coding_swarm::app::commands::github_annotation(&problem),
        "::error file=a%3Ab%2Cc.yaml,line=2,col=5::100%25 wrong%0Asecond line"
    );
}

/// `swarm doctor --json` is one object a check, and the doctor changes no database: a missing
/// SQLite file is not created, and an existing one is not migrated.
#[test]
fn doctor_speaks_json_and_never_changes_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let repo = TestRepo::new();
    repo.commit(&[("README.md", Some("x\n"))], "init");
    std::fs::write(
        dir.path().join("swarm.toml"),
        format!(
            "data_dir = \"data\"\ndefault_agent = \"sh\"\nsandbox = \"none\"\n[agents.sh]\ncommand = [\"true\"]\n[[projects]]\nname = \"proj\"\nrepo = {:?}\n",
            repo.url()
        ),
    )
    .unwrap();
    let out = swarm(dir.path(), &["doctor", "--json"]);
    let checks: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    let database = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "database")
        .unwrap();
    assert!(
        database["detail"]
            .as_str()
            .unwrap()
            .contains("does not exist yet"),
        "{database}"
    );
    assert!(
        !dir.path().join("data/swarm.db").exists(),
        "the doctor created no database"
    );
    assert!(checks
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "sandbox"));
    // An empty database file: reported as needing its migrations, and left without them.
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/swarm.db"), "").unwrap();
    for _ in 0..2 {
        // The second time too: the first did not apply them.
        let out = swarm(dir.path(), &["doctor"]);
        assert!(
            text(&out).contains("migration(s) to apply"),
            "{}",
            text(&out)
        );
    }
}

/// `--status` takes only the three states, and says which (clap's value check, exit 2).
#[test]
fn task_list_status_is_one_of_the_three_states() {
    let dir = tempfile::tempdir().unwrap();
    let out = swarm(dir.path(), &["task", "list", "--status", "blocked"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("[possible values: pending, running, completed]"),
        "{}",
        text(&out)
    );
}

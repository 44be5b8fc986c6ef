//! The command line as a person uses it: `swarm up --once`, `swarm task list|show|stop|retry`,
//! `swarm migrate`, and clear errors for a bad config.

use std::path::Path;
use std::process::Output;

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

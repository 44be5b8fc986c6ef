//! The dashboard in a real headless Chromium (Debian's package, driven over WebDriver by
//! chromedriver) against a running `swarm up`: an epic submitted and its task appearing on the
//! board without a reload, a task moving pending -> running -> completed live, a running task
//! stopped from its page, a bad task file's error with its line, a prompt with HTML shown as
//! text. Screenshots of the main pages go to `test-artifacts/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::support::TestRepo;

pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub async fn browser() -> (Client, Proc) {
    let port = free_port();
    let driver = std::env::var("SWARM_TEST_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    let child = Command::new(&driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{driver} is needed for the dashboard tests (.ci/run installs chromium-driver): {e}"));
    let proc = Proc(child);
    let chromium =
        std::env::var("SWARM_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let profile = tempfile::tempdir().unwrap().keep();
    let caps = json!({"goog:chromeOptions": {"binary": chromium, "args": [
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
        format!("--user-data-dir={}", profile.display())]}});
    let caps: serde_json::Map<String, serde_json::Value> = caps.as_object().unwrap().clone();
    let start = Instant::now();
    loop {
        match ClientBuilder::native()
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => return (c, proc),
            Err(e) if start.elapsed() < Duration::from_secs(20) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot start Chromium through chromedriver: {e}"),
        }
    }
}

pub async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    let path = artifacts().join(format!("dashboard-{name}.png"));
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
}

pub async fn until<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The status column a task's card is in, if it is on the board.
async fn column_of(c: &Client, id: &str) -> Option<String> {
    let v = c
        .execute("const e = document.getElementById(arguments[0]); return e ? e.closest('section').id : null;", vec![json!(id)])
        .await
        .ok()?;
    v.as_str().map(str::to_string)
}

fn engine(dir: &Path, port: u16, repo: &TestRepo) -> Proc {
    let script = r#"case "$SWARM_TASK_KEY" in stoppable) exec sleep 120;; blocker) sleep 4;; watched) sleep 3;; *) sleep 1;; esac; echo done > "out-$SWARM_TASK_KEY.txt"; echo finished $SWARM_TASK_KEY"#;
    std::fs::write(
        dir.join("swarm.toml"),
        format!(
            "data_dir = \"d\"\ndefault_agent = \"sh\"\npoll_interval = \"1h\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n[agents.sh]\ncommand = [\"sh\", \"-c\", {script:?}]\n[[projects]]\nname = \"web\"\nrepo = {:?}\n",
            repo.url()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("engine.log")).unwrap();
    Proc(
        crate::support::command(env!("CARGO_BIN_EXE_swarm"))
            .args(["up", "--config", "swarm.toml"])
            .current_dir(dir)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_a_real_browser() {
    let repo = TestRepo::new();
    repo.commit(
        &[
            ("README.md", Some("# web\n")),
            (".ai/plan.md", Some("# Plan\n- [x] start\n- [ ] finish\n")),
            (".ai/tasks/html.yaml", Some("addressee: w-html\nprompt: \"<img src=x onerror=alert(1)><b>bold</b> & <script>document.title='pwned'</script>\"\n")),
            (".ai/tasks/broken.yaml", Some("addressee: w-b\nprompt: fine\npriorty: 1\n")),
        ],
        "init",
    );
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _engine = engine(dir.path(), port, &repo);
    let base = format!("http://127.0.0.1:{port}");
    let (c, _driver) = browser().await;

    // The overview: the project, its plan progress, its bad file.
    until("the overview", Duration::from_secs(30), || async {
        c.goto(&format!("{base}/")).await.is_ok()
            && c.find(Locator::Css(".project .counts")).await.is_ok()
    })
    .await;
    // Read in one script: the page re-renders as its data arrives, so an element found first
    // and read after may be gone.
    until("the synced project", Duration::from_secs(20), || async {
        c.execute(
            "const e = document.querySelector('.project'); return e ? e.textContent : '';",
            vec![],
        )
        .await
        .is_ok_and(|v| v.as_str().unwrap_or("").contains("plan: 1/2 steps done"))
    })
    .await;
    shot(&c, "overview").await;

    // The board, kept open from here on: no reloads.
    c.goto(&format!("{base}/board?project=web")).await.unwrap();
    // The columns are drawn by the page's script once the board's data has arrived.
    until("the board's columns", Duration::from_secs(20), || async {
        c.find(Locator::Id("col-pending")).await.is_ok()
    })
    .await;
    c.execute("window.__notReloaded = 42;", vec![])
        .await
        .unwrap();

    // Submit an epic; its task appears on the board.
    c.find(Locator::Css("#epic-form input[name=epic-text]"))
        .await
        .unwrap()
        .send_keys("Make the greeter friendlier")
        .await
        .unwrap();
    c.find(Locator::Css("#epic-form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        "the epic's task on the board",
        Duration::from_secs(20),
        || async {
            column_of(&c, "task-web/epic-make-the-greeter-friendlier")
                .await
                .is_some()
        },
    )
    .await;

    // A task goes pending -> running -> completed before our eyes.
    repo.commit(
        &[
            (
                ".ai/tasks/blocker.yaml",
                Some("addressee: w-live\nprompt: first\n"),
            ),
            (
                ".ai/tasks/watched.yaml",
                Some("addressee: w-live\nprompt: second\n"),
            ),
        ],
        "two tasks for one addressee",
    );
    let mut seen: Vec<String> = Vec::new();
    let start = Instant::now();
    loop {
        if let Some(col) = column_of(&c, "task-web/watched").await {
            if seen.last() != Some(&col) {
                if col == "col-pending" {
                    let card = c
                        .execute(
                            "const e = document.querySelector(\"[id='task-web/watched'] .waiting\"); return e ? e.textContent : '';",
                            vec![],
                        )
                        .await
                        .unwrap()
                        .as_str()
                        .unwrap_or("")
                        .to_string();
                    assert!(
                        card.contains("behind blocker"),
                        "a pending task says what it waits for: {card}"
                    );
                    shot(&c, "board").await;
                }
                seen.push(col.clone());
            }
            if col == "col-completed" {
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "the watched task never completed: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        seen,
        ["col-pending", "col-running", "col-completed"],
        "seen live"
    );
    assert_eq!(
        c.execute("return window.__notReloaded;", vec![])
            .await
            .unwrap(),
        json!(42),
        "the page was never reloaded"
    );

    // Stop a running task from its page.
    repo.commit(
        &[(
            ".ai/tasks/stoppable.yaml",
            Some("addressee: w-stop\nprompt: run for a long time\n"),
        )],
        "a long task",
    );
    until("the long task to run", Duration::from_secs(20), || async {
        column_of(&c, "task-web/stoppable").await.as_deref() == Some("col-running")
    })
    .await;
    c.goto(&format!("{base}/tasks/web/stoppable"))
        .await
        .unwrap();
    until("the task page", Duration::from_secs(10), || async {
        c.find(Locator::Id("state")).await.is_ok_and(|_| true)
    })
    .await;
    until("a log line", Duration::from_secs(10), || async {
        c.execute(
            "return document.getElementById('transcript').textContent;",
            vec![],
        )
        .await
        .unwrap()
        .as_str()
        .unwrap_or("")
        .contains("worker starts")
    })
    .await;
    shot(&c, "task-running").await;
    c.find(Locator::Id("stop"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The page re-renders as the task changes: read the state in one go.
    until("the stop", Duration::from_secs(20), || async {
        let v = c.execute("const s = document.getElementById('state'); return s ? s.dataset.status + ' ' + s.textContent : '';", vec![]).await.unwrap();
        let v = v.as_str().unwrap_or("").to_string();
        v.starts_with("completed") && v.contains("cancelled")
    })
    .await;
    shot(&c, "task-stopped").await;

    // A prompt with HTML is text.
    c.goto(&format!("{base}/tasks/web/html")).await.unwrap();
    let text_of = |id: &'static str| {
        let c = c.clone();
        async move {
            c.execute(
                "const e = document.getElementById(arguments[0]); return e ? e.textContent : '';",
                vec![json!(id)],
            )
            .await
            .unwrap()
            .as_str()
            .unwrap_or("")
            .to_string()
        }
    };
    until("the prompt", Duration::from_secs(10), || async {
        text_of("prompt").await.contains("bold")
    })
    .await;
    let prompt = text_of("prompt").await;
    assert!(
        prompt.contains("<img src=x onerror=alert(1)><b>bold</b> & <script>"),
        "{prompt}"
    );
    let elements = c
        .execute(
            "return document.querySelectorAll('#prompt *, img, #main b').length;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(elements, json!(0), "no element came from the prompt");
    assert_ne!(
        c.execute("return document.title;", vec![]).await.unwrap(),
        json!("pwned")
    );
    shot(&c, "task-html").await;

    // A bad task file's error, with its line.
    c.goto(&format!("{base}/errors")).await.unwrap();
    until("the error list", Duration::from_secs(10), || async {
        c.find(Locator::Css(".spec-error .where")).await.is_ok()
    })
    .await;
    let row = c
        .find(Locator::Css(".spec-error"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        row.contains(".ai/tasks/broken.yaml:3:1") && row.contains("priorty"),
        "{row}"
    );
    shot(&c, "errors").await;
    c.close().await.unwrap();
}

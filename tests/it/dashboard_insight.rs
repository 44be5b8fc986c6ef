//! The dashboard's answers, in a real headless Chromium against a running `swarm up` whose
//! database holds a seeded history of several days (see `stats::seed_history`): the charts
//! with the right number of points and totals (read from their data attributes), the banner
//! of the paused agent with its reset time, the cost and turns on task cards, a queue whose
//! positions move when its head completes, and a running task's transcript growing live and
//! stopping when the run ends. Screenshots go to `test-artifacts/` (their paths are printed).

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, DurationRound, Utc};
use fantoccini::Client;
use serde_json::{json, Value};

use crate::dashboard::{browser, free_port, shot, until, Proc};
use crate::stats::{seed_history, HIST, PAUSED_AGENT};
use crate::support::TestRepo;

/// The agent of the live tasks: `talker` prints Claude Code `stream-json` lines in three
/// parts, each after a flag file appears; `qa` and `qb` wait for theirs.
fn script(flags: &Path) -> String {
    let f = flags.display();
    format!(
        r#"F='{f}'
wait_for() {{ while [ ! -f "$F/$1" ]; do sleep 0.1; done; }}
case "$SWARM_TASK_KEY" in
  talker)
    echo '{{"type":"system","subtype":"init","model":"claude-test","tools":["Bash"],"session_id":"s1"}}'
    echo '{{"type":"assistant","message":{{"content":[{{"type":"text","text":"I will list the files."}},{{"type":"tool_use","id":"tu1","name":"Bash","input":{{"command":"ls -la"}}}}]}}}}'
    wait_for t1
    echo '{{"type":"user","message":{{"content":[{{"type":"tool_result","tool_use_id":"tu1","content":"README.md","is_error":false}}]}}}}'
    echo '{{"type":"assistant","message":{{"content":[{{"type":"text","text":"The repository has a README."}}]}}}}'
    wait_for t2
    echo '{{"type":"result","subtype":"success","is_error":false,"result":"Looked around.","num_turns":2,"total_cost_usd":0.0123}}'
    ;;
  qa) wait_for qa ;;
  qb) wait_for qb ;;
esac
echo done > "out-$SWARM_TASK_KEY.txt""#
    )
}

async fn js(c: &Client, code: &str) -> Value {
    c.execute(code, vec![]).await.unwrap_or(Value::Null)
}

/// An attribute of the first element `selector` matches, or null.
async fn attr(c: &Client, selector: &str, name: &str) -> Value {
    c.execute(
        "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null;",
        vec![json!(selector), json!(name)],
    )
    .await
    .unwrap_or(Value::Null)
}

async fn attr_is(c: &Client, selector: &str, name: &str, want: &str) -> bool {
    attr(c, selector, name).await.as_str() == Some(want)
}

/// The queue of `addressee` on the queues page: what runs, and (task, position) in order.
async fn queue_of(c: &Client, addressee: &str) -> (String, Vec<(String, String)>) {
    let v = c
        .execute(
            "const q = document.querySelector(`section.queue[data-addressee='${arguments[0]}']`);
             if (!q) return null;
             return [q.querySelector('.running').textContent,
                     [...q.querySelectorAll('li.queued')].map((l) => [l.dataset.task, l.dataset.position])];",
            vec![json!(addressee)],
        )
        .await
        .unwrap_or(Value::Null);
    if v.is_null() {
        return (String::new(), Vec::new());
    }
    let pairs = v[1]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_string(),
                p[1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (v[0].as_str().unwrap_or("").to_string(), pairs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charts_pauses_queues_and_a_live_transcript_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let flags = dir.path().join("flags");
    std::fs::create_dir_all(&flags).unwrap();
    let db_url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("swarm.db").display()
    );
    let now = Utc::now()
        .duration_trunc(chrono::Duration::seconds(1))
        .unwrap();
    let history = {
        let store = coding_swarm::store::Store::connect(&db_url).await.unwrap();
        let h = seed_history(&store, &db_url, now).await;
        store.close().await;
        h
    };
    let seeded_p50 = {
        let mut secs: Vec<i64> = history.runs.iter().map(|r| r.secs).collect();
        secs.sort_unstable();
        secs[(50 * secs.len()).div_ceil(100) - 1]
    };

    let repo = TestRepo::new();
    repo.commit(&[("README.md", Some("# web\n"))], "init");
    let port = free_port();
    std::fs::write(
        dir.path().join("swarm.toml"),
        format!(
            "data_dir = \"d\"\ndatabase_url = {db_url:?}\ndefault_agent = \"sh\"\nsandbox = \"none\"\npoll_interval = \"1h\"\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\n[agents.sh]\ncommand = [\"sh\", \"-c\", {:?}]\n\
             [agents.claude]\ncommand = [\"sh\", \"-c\", \"exit 0\"]\n[[projects]]\nname = \"web\"\nrepo = {:?}\n",
            script(&flags),
            repo.url()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("engine.log")).unwrap();
    let _engine = Proc(
        crate::support::command(env!("CARGO_BIN_EXE_swarm"))
            .args(["up", "--config", "swarm.toml"])
            .current_dir(dir.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let (c, _driver) = browser().await;

    // The charts, a week by days.
    until("the stats page", Duration::from_secs(30), || async {
        c.goto(&format!("{base}/stats?since=7d&step=1d"))
            .await
            .is_ok()
            && attr(&c, "#chart-runs", "data-points").await.is_string()
    })
    .await;
    assert!(attr_is(&c, "#chart-runs", "data-points", "7").await);
    assert_eq!(
        attr(&c, "#chart-runs", "data-total").await,
        json!(history.runs.len().to_string()),
        "every run of the seed, once"
    );
    assert_eq!(
        attr(&c, "#chart-runs g[data-series='failed']", "data-total").await,
        json!("2")
    );
    assert_eq!(
        attr(
            &c,
            "#chart-runs g[data-series='rate_limited']",
            "data-total"
        )
        .await,
        json!("2")
    );
    assert!(attr_is(&c, "#chart-pending", "data-points", "7").await);
    assert_eq!(
        attr(
            &c,
            &format!("#chart-pending polyline[data-series='{HIST}']"),
            "data-last"
        )
        .await,
        json!("6"),
        "two rate-limited and four queued tasks pending now"
    );
    let until_at: DateTime<Utc> = js(
        &c,
        "return document.getElementById('charts').dataset.until;",
    )
    .await
    .as_str()
    .unwrap()
    .parse()
    .unwrap();
    let days = ((until_at - chrono::Duration::seconds(1)).date_naive()
        - (until_at - chrono::Duration::days(7)).date_naive())
    .num_days()
        + 1;
    assert_eq!(
        attr(&c, "#chart-spend-project", "data-points").await,
        json!(days.to_string())
    );
    let spent: f64 = history.runs.iter().filter_map(|r| r.cost).sum();
    let shown: f64 = attr(&c, "#chart-spend-project", "data-total")
        .await
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((shown - spent).abs() < 0.005, "{shown} vs {spent}");
    let by_agent: f64 = attr(&c, "#chart-spend-agent", "data-total")
        .await
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((by_agent - spent).abs() < 0.005, "{by_agent} vs {spent}");
    assert_eq!(attr(&c, "#chart-queues g", "data-name").await, json!("h-q"));
    assert_eq!(attr(&c, "#chart-queues g", "data-value").await, json!("4"));
    assert_eq!(
        attr(
            &c,
            "#chart-epics g[data-name='hist/big-feature']",
            "data-value"
        )
        .await,
        json!("3.5")
    );
    assert_eq!(
        attr(
            &c,
            "#chart-epics g[data-name='hist/big-feature']",
            "data-cap"
        )
        .await,
        json!("25")
    );
    assert_eq!(
        attr(&c, "#durations", "data-runs").await,
        json!(history.runs.len().to_string())
    );
    assert_eq!(
        attr(&c, "#durations", "data-p50").await,
        json!(seeded_p50.to_string())
    );

    // The banner of the paused agent, with its reset time, on every page.
    let reset = history
        .paused_until
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let banner = format!("#pauses .banner[data-agent='{PAUSED_AGENT}']");
    until("the pause banner", Duration::from_secs(10), || async {
        js(
            &c,
            &format!(
                "const b = document.querySelector(\"{banner}\"); return b ? b.textContent : '';"
            ),
        )
        .await
        .as_str()
        .is_some_and(|t| t.contains(&reset) && t.contains("usage limit"))
    })
    .await;
    shot(&c, "stats").await;

    // Cost and turns on the cards of the seeded tasks.
    c.goto(&format!("{base}/board?project={HIST}"))
        .await
        .unwrap();
    // Each read in one script: the board re-renders as its data arrives.
    until("a card with its cost", Duration::from_secs(10), || async {
        js(
            &c,
            "const e = document.querySelector(\"[id='task-hist/t05'] .cost\"); \
             return e ? [e.dataset.turns, e.dataset.cost, e.textContent] : null;",
        )
        .await
            == json!(["21", "1.25", "$1.25 · 21 turns"])
    })
    .await;
    assert!(
        js(
            &c,
            &format!("return !!document.querySelector(\"{banner}\");")
        )
        .await
            == json!(true)
    );
    shot(&c, "board-costs").await;

    // A queue: positions move when its head completes.
    repo.commit(
        &[
            (".ai/tasks/qa.yaml", Some("addressee: w-q\nprompt: first\n")),
            (
                ".ai/tasks/qb.yaml",
                Some("addressee: w-q\nprompt: second\n"),
            ),
            (".ai/tasks/qc.yaml", Some("addressee: w-q\nprompt: third\n")),
        ],
        "a queue of three",
    );
    c.goto(&format!("{base}/queues")).await.unwrap();
    c.execute("window.__notReloaded = 7;", vec![])
        .await
        .unwrap();
    until(
        "qa running, qb and qc queued",
        Duration::from_secs(30),
        || async {
            queue_of(&c, "w-q").await
                == (
                    "running: web/qa".to_string(),
                    vec![("web/qb".into(), "1".into()), ("web/qc".into(), "2".into())],
                )
        },
    )
    .await;
    let hq = queue_of(&c, "h-q").await.1;
    assert_eq!(hq.len(), 4, "{hq:?}");
    let waits = js(&c, "return document.querySelector(\"section.queue[data-addressee='w-q'] li.queued .waiting\").textContent;").await;
    assert!(waits.as_str().unwrap().contains("behind qa"), "{waits}");
    shot(&c, "queues").await;
    std::fs::write(flags.join("qa"), "").unwrap();
    until(
        "qb running, qc first in line",
        Duration::from_secs(30),
        || async {
            queue_of(&c, "w-q").await
                == (
                    "running: web/qb".to_string(),
                    vec![("web/qc".into(), "1".into())],
                )
        },
    )
    .await;
    assert_eq!(
        js(&c, "return window.__notReloaded;").await,
        json!(7),
        "updated live"
    );
    std::fs::write(flags.join("qb"), "").unwrap();

    // A transcript that grows live and stops when the run ends, on a page opened before its
    // task file was pushed: it waits for the task, then follows its run.
    c.goto(&format!("{base}/tasks/web/talker")).await.unwrap();
    c.execute("window.__notReloaded = 8;", vec![])
        .await
        .unwrap();
    until(
        "the page to wait for its task",
        Duration::from_secs(10),
        || async { js(&c, "return !!document.getElementById('not-yet');").await == json!(true) },
    )
    .await;
    repo.commit(
        &[(
            ".ai/tasks/talker.yaml",
            Some("addressee: w-talk\nprompt: look around\n"),
        )],
        "a talking task",
    );
    let text = || async {
        js(
            &c,
            "const t = document.getElementById('transcript'); return t ? t.textContent : '';",
        )
        .await
        .as_str()
        .unwrap_or("")
        .to_string()
    };
    until(
        "the first part of the conversation",
        Duration::from_secs(40),
        || async { text().await.contains("I will list the files.") },
    )
    .await;
    assert!(attr_is(&c, "#transcript", "data-state", "live").await);
    let tool = js(&c, "const e = document.querySelector('#transcript .entry.tool'); return e ? e.textContent : '';").await;
    assert!(
        tool.as_str().unwrap().contains("Bash") && tool.as_str().unwrap().contains("ls -la"),
        "{tool}"
    );
    assert!(!text().await.contains("The repository has a README."));
    let first: usize = attr(&c, "#transcript", "data-entries")
        .await
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    shot(&c, "transcript-live").await;

    std::fs::write(flags.join("t1"), "").unwrap();
    until("the second part", Duration::from_secs(20), || async {
        text().await.contains("The repository has a README.")
    })
    .await;
    assert!(
        attr_is(&c, "#transcript", "data-state", "live").await,
        "still running, still followed"
    );
    let second: usize = attr(&c, "#transcript", "data-entries")
        .await
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(second >= first + 2, "{first} -> {second}");
    assert_eq!(
        attr(&c, "#transcript .entry.tool_result", "data-kind").await,
        json!("tool_result")
    );

    std::fs::write(flags.join("t2"), "").unwrap();
    until("the end of the run", Duration::from_secs(30), || async {
        attr_is(&c, "#transcript", "data-state", "ended").await
    })
    .await;
    let final_text = js(&c, "const e = document.querySelector('#transcript .entry.final'); return e ? e.textContent : '';").await;
    assert!(
        final_text.as_str().unwrap().contains("Looked around.")
            && final_text.as_str().unwrap().contains("2 turns"),
        "{final_text}"
    );
    assert_eq!(
        js(&c, "return window.__notReloaded;").await,
        json!(8),
        "followed live, no reload"
    );
    assert_eq!(
        attr(&c, "#raw-log", "href").await,
        json!("/api/tasks/web/talker/log")
    );
    shot(&c, "transcript-ended").await;
    c.close().await.unwrap();
}

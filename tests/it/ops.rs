//! Operating the engine: one leader at a time (on both databases), and the HTTP endpoints for
//! health, readiness and metrics of a running `swarm up`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use coding_swarm::engine::leader;

use crate::support::{Backend, TestDb, TestRepo};

crate::on_both_backends!(a_second_engine_waits_and_takes_over);

async fn a_second_engine_waits_and_takes_over(backend: Backend) {
    let db = TestDb::new(backend).await;
    let data = tempfile::tempdir().unwrap();
    let first = leader::acquire(&db.url, data.path(), || {}).await.unwrap();
    let (url, dir) = (db.url.clone(), data.path().to_path_buf());
    let waited = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = waited.clone();
    let second = tokio::spawn(async move {
        leader::acquire(&url, &dir, move || {
            flag.store(true, std::sync::atomic::Ordering::SeqCst)
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !second.is_finished(),
        "the second engine must wait while the first leads"
    );
    assert!(waited.load(std::sync::atomic::Ordering::SeqCst));
    drop(first);
    let second = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the second takes over")
        .unwrap()
        .unwrap();
    assert!(!*second.lost.borrow());
    drop(second);
    db.drop_db().await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn get(url: &str) -> Option<(u16, String)> {
    let uri: axum::http::Uri = url.parse().unwrap();
    let mut stream = tokio::net::TcpStream::connect(uri.authority().unwrap().as_str())
        .await
        .ok()?;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        uri.path(),
        uri.authority().unwrap()
    );
    stream.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_of_a_running_engine() {
    let repo = TestRepo::new();
    repo.commit(
        &[(".ai/tasks/one.yaml", Some("addressee: w\nprompt: p\n"))],
        "task",
    );
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join("swarm.toml"),
        format!(
            "data_dir = \"d\"\ndefault_agent = \"sh\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n[agents.sh]\ncommand = [\"sh\", \"-c\", \"echo ok\"]\n[[projects]]\nname = \"proj\"\nrepo = {:?}\n[[projects]]\nname = \"broken\"\nrepo = {:?}\n",
            repo.url(),
            dir.path().join("no-such-repository.git").display().to_string()
        ),
    )
    .unwrap();
    let mut engine = crate::support::command(env!("CARGO_BIN_EXE_swarm"))
        .args(["up", "--config", "swarm.toml"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    // A project whose repository does not exist fails every sync pass; the other syncs.
    let failed_syncs = |body: &str, project: &str| {
        body.lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "swarm_sync_errors_total{{project=\"{project}\"}} "
                ))
            })
            .and_then(|n| n.trim().parse::<f64>().ok())
    };
    let metrics = loop {
        if let Some((200, body)) = get(&format!("{base}/metrics")).await {
            if body.contains("swarm_tasks{status=\"completed\"} 1")
                && failed_syncs(&body, "broken").is_some()
            {
                break body;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "metrics never showed the completed task and the failed sync"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(metrics.contains("swarm_leader 1"), "{metrics}");
    assert!(
        metrics.contains("swarm_runs_total{outcome=\"succeeded\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("swarm_dispatch_latency_seconds_count 1"),
        "{metrics}"
    );
    // Each sample has the labels README's metric table gives its family.
    crate::readiness::assert_labels_documented(&metrics);
    assert!(
        failed_syncs(&metrics, "broken").unwrap() >= 1.0,
        "{metrics}"
    );
    // Every family issue 16 asks for is registered with its Prometheus type; those this run
    // gave samples are in the scraped text with it; and the samples are what the run did.
    let registered = coding_swarm::metrics::Metrics::default()
        .families()
        .to_vec();
    let scraped = crate::deploy_monitoring::served_families(&metrics);
    for (name, kind) in scraped.iter() {
        assert!(
            registered.iter().any(|(n, k)| n == name && k == kind),
            "{name} ({kind}) is scraped as registered: {registered:?}"
        );
    }
    for (name, kind) in [
        ("swarm_build_info", "gauge"),
        ("swarm_leader", "gauge"),
        ("swarm_tasks", "gauge"),
        ("swarm_queue_wait_seconds", "histogram"),
        ("swarm_dispatch_latency_seconds", "histogram"),
        ("swarm_run_duration_seconds", "histogram"),
        ("swarm_runs_ended", "counter"),
        ("swarm_consecutive_run_failures", "gauge"),
        ("swarm_agent_cost_usd", "counter"),
        ("swarm_agent_paused", "gauge"),
        ("swarm_github_outbox_depth", "gauge"),
        ("swarm_github_writes", "counter"),
        ("swarm_webhook_deliveries", "counter"),
        ("swarm_last_sync_success_timestamp_seconds", "gauge"),
        ("swarm_sync_errors", "counter"),
    ] {
        assert!(
            registered.contains(&(name.to_string(), kind)),
            "{name} ({kind}) is not registered: {registered:?}"
        );
    }
    for name in [
        "swarm_build_info",
        "swarm_leader",
        "swarm_tasks",
        "swarm_queue_wait_seconds",
        "swarm_run_duration_seconds",
        "swarm_runs_ended",
        "swarm_consecutive_run_failures",
        "swarm_github_outbox_depth",
        "swarm_last_sync_success_timestamp_seconds",
        "swarm_sync_errors",
    ] {
        assert!(
            scraped.iter().any(|(n, _)| n == name),
            "{name} not scraped: {metrics}"
        );
    }
    let sample = |prefix: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    assert!(
        sample(&format!(
            "swarm_build_info{{version=\"{}\"}} ",
            env!("CARGO_PKG_VERSION")
        )) == Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample("swarm_runs_ended_total{class=\"succeeded\"} "),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample("swarm_run_duration_seconds_count{outcome=\"succeeded\"} "),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample("swarm_queue_wait_seconds_count "),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample("swarm_consecutive_run_failures{project=\"proj\"} "),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(sample("swarm_github_outbox_depth "), Some(0.0), "{metrics}");
    let synced =
        sample("swarm_last_sync_success_timestamp_seconds{project=\"proj\"} ").unwrap_or(0.0);
    assert!(
        synced > 1.7e9,
        "the project's last good sync, as Unix time: {metrics}"
    );
    assert_eq!(
        sample("swarm_last_sync_success_timestamp_seconds{project=\"broken\"} "),
        None,
        "the broken project never synced: {metrics}"
    );
    assert_eq!(failed_syncs(&metrics, "proj"), None, "{metrics}");
    assert_eq!(get(&format!("{base}/healthz")).await.unwrap().0, 200);
    // Without a token the dashboard answers only to this machine's names (no DNS rebinding).
    assert_eq!(get(&format!("{base}/api/projects")).await.unwrap().0, 200);
    let rebound = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(
            b"GET /api/projects HTTP/1.1\r\nHost: attacker.example:80\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf).to_string()
    };
    assert!(rebound.starts_with("HTTP/1.1 403"), "{rebound}");
    assert_eq!(
        get(&format!("{base}/readyz")).await.unwrap(),
        (200, "ready\n".to_string())
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(engine.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let status = engine.wait().unwrap();
    assert!(
        status.success(),
        "SIGTERM stops the engine cleanly: {status:?}"
    );
}

/// `--log-format json`: every line of `swarm up --once` is one JSON object, and a task's key is
/// in the spans of its claim, its launch and its run's end (and the sync has its project).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_task_in_the_spans_of_its_claim_launch_and_end() {
    let data = tempfile::tempdir().unwrap();
    let repo = crate::support::TestRepo::new();
    repo.commit(
        &[(".ai/tasks/logged.yaml", Some("addressee: w\nprompt: p\n"))],
        "a task",
    );
    let db = crate::support::TestDb::sqlite().await;
    let cfg = crate::support::write_config(data.path(), &db.url, &repo, "echo done", "");
    let out = tokio::task::spawn_blocking(move || {
        crate::support::command(env!("CARGO_BIN_EXE_swarm"))
            .args(["up", "--once", "--log-format", "json", "--config"])
            .arg(&cfg)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() > 3, "{stderr}");
    // Some line logged inside span `name` whose field `field` is `value`.
    let in_span = |name: &str, field: &str, value: &str| {
        lines.iter().any(|l| {
            l["spans"]
                .as_array()
                .is_some_and(|spans| spans.iter().any(|s| s["name"] == name && s[field] == value))
        })
    };
    assert!(in_span("launch", "task", "logged"), "{stderr}");
    assert!(in_span("run_end", "task", "logged"), "{stderr}");
    assert!(
        lines.iter().any(|l| l["spans"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["name"] == "claim"))
            && l["fields"]["task"] == "logged"),
        "the claim's event names the task: {stderr}"
    );
    assert!(in_span("sync", "project", "proj"), "{stderr}");
    db.drop_db().await;
}

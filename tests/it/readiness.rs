//! `/readyz` of a running `swarm up`, each reason for "not ready" that README section 5
//! ("Health, readiness and metrics") names made to happen: the database unreachable
//! (`store: ...`), another engine leading (`waiting for leadership`), the Kubernetes API server
//! unreachable (`runtime: ...`); and readiness coming back once the cause is gone. Also the
//! label sets of the metric families: every sample an engine serves has exactly the labels the
//! README's metric table documents for its family ([`assert_labels_documented`], called after
//! the runs of several modules).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::Connection;

use crate::github::{free_port, get};
use crate::support::{pg_admin_url, start_engine, wait_for, write_config, TestDb, TestRepo};

/// The label names of each metric family, as README section 5's metric table documents them
/// (`swarm_tasks{status}` -> `swarm_tasks`: `["status"]`).
pub fn documented_labels() -> BTreeMap<String, Vec<String>> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut out = BTreeMap::new();
    for line in readme.lines() {
        let Some(rest) = line.strip_prefix("| `swarm_") else {
            continue;
        };
        let Some((series, _)) = rest.split_once('`') else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (
                n,
                l.trim_end_matches('}')
                    .split(',')
                    .map(str::to_string)
                    .collect(),
            ),
            None => (series, Vec::new()),
        };
        out.insert(format!("swarm_{name}"), labels);
    }
    assert!(out.len() >= 15, "the README's metric table: {out:?}");
    out
}

/// Every sample in `scrape` (OpenMetrics text) belongs to a documented family and carries
/// exactly its documented labels (histograms' `le` aside). Returns the families seen.
pub fn assert_labels_documented(scrape: &str) -> Vec<String> {
    let documented = documented_labels();
    let mut seen = Vec::new();
    for line in scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let series = line.rsplit_once(' ').map_or(line, |(s, _)| s);
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (
                n,
                l.trim_end_matches('}')
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|p| p.split_once('=').map_or(p, |(k, _)| k).to_string())
                    .filter(|k| k != "le")
                    .collect::<Vec<_>>(),
            ),
            None => (series, Vec::new()),
        };
        let family = documented
            .keys()
            .filter(|f| name.starts_with(f.as_str()))
            .max_by_key(|f| f.len())
            .unwrap_or_else(|| panic!("{name} is not in the README's metric table: {line}"));
        let mut want = documented[family].clone();
        let mut got = labels;
        want.sort();
        got.sort();
        assert_eq!(got, want, "the labels of {line}");
        if !seen.contains(family) {
            seen.push(family.clone());
        }
    }
    seen
}

/// A TCP proxy to `upstream` that the test can take down (open connections are cut, new ones
/// closed at once) and bring up again: an API server that becomes unreachable.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let open: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (flag, conns) = (up.clone(), open.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let upstream = upstream.clone();
                let t = tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                conns.lock().unwrap().push(t.abort_handle());
            }
        });
        Self {
            port,
            up,
            open,
            task,
        }
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if !up {
            for c in self.open.lock().unwrap().drain(..) {
                c.abort();
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `swarm up` on `db_url` with its HTTP server on `port`, its data in `data`.
fn engine(data: &Path, db_url: &str, repo: &TestRepo, port: u16, extra: &str) -> Up {
    let config = write_config(
        data,
        db_url,
        repo,
        "echo ok",
        &format!("{extra}\n[http]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    Up(start_engine(&config, &data.join("engine.log"), false))
}

/// Waits until `/readyz` on `port` answers `code` with a body that starts with `text`; says
/// what the engine logged (in `data`) if it never does.
async fn readyz_becomes(
    (port, data): (u16, &Path),
    code: u16,
    text: &str,
    within: Duration,
) -> String {
    let mut last = None;
    let start = std::time::Instant::now();
    loop {
        let got = get(port, "/readyz").await;
        if let Some((c, body)) = &got {
            if *c == code && body.starts_with(text) {
                return body.clone();
            }
        }
        assert!(
            start.elapsed() < within,
            "/readyz never answered {code} {text:?}; last: {last:?}; the engine's log:\n{}",
            std::fs::read_to_string(data.join("engine.log")).unwrap_or_default()
        );
        last = got;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn metric(port: u16, series: &str) -> Option<f64> {
    let (_, body) = get(port, "/metrics").await?;
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Postgres: ready; a second engine waits (`waiting for leadership`, alive all the while) and
/// is ready once the first stops; then the database refuses connections (`store: ...`) and
/// comes back, and the engine is ready again once it holds its lock again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_while_the_database_is_away_or_another_engine_leads() {
    let db = TestDb::postgres().await;
    let name = db.url.rsplit('/').next().unwrap().to_string();
    let repo = TestRepo::new();
    repo.commit(
        &[(".ai/tasks/one.yaml", Some("addressee: w\nprompt: p\n"))],
        "task",
    );
    let (first_dir, second_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (p1, p2) = (free_port(), free_port());
    let first = engine(first_dir.path(), &db.url, &repo, p1, "");
    let (one, two) = ((p1, first_dir.path()), (p2, second_dir.path()));
    readyz_becomes(one, 200, "ready\n", Duration::from_secs(60)).await;

    // A second engine on the same database: alive, not ready, not leading.
    let second = engine(second_dir.path(), &db.url, &repo, p2, "");
    wait_for(
        "the second engine's HTTP server",
        Duration::from_secs(30),
        async || get(p2, "/healthz").await.is_some_and(|(c, _)| c == 200),
    )
    .await;
    let why = readyz_becomes(two, 503, "", Duration::from_secs(30)).await;
    assert_eq!(why, "waiting for leadership\n");
    assert_eq!(metric(p2, "swarm_leader").await, Some(0.0));
    assert_eq!(get(p1, "/readyz").await.unwrap().0, 200);
    assert_eq!(metric(p1, "swarm_leader").await, Some(1.0));

    // The first stops (SIGTERM): the second takes over and is ready.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    readyz_becomes(two, 200, "ready\n", Duration::from_secs(60)).await;
    assert_eq!(metric(p2, "swarm_leader").await, Some(1.0));

    // The database goes away: its connections end, and new ones are refused.
    let mut admin = sqlx::PgConnection::connect(&pg_admin_url()).await.unwrap();
    // The backend that holds the leader lock, if one does.
    let holder = async |admin: &mut sqlx::PgConnection| -> Option<i32> {
        sqlx::query_scalar(
            "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND a.datname = $1",
        )
        .bind(&name)
        .fetch_optional(&mut *admin)
        .await
        .unwrap()
    };
    let session = holder(&mut admin).await.expect("the leader holds the lock");
    let away = async |admin: &mut sqlx::PgConnection, allow: bool| {
        sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS {allow}"))
            .execute(&mut *admin)
            .await
            .unwrap();
        if !allow {
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            )
            .bind(&name)
            .execute(&mut *admin)
            .await
            .unwrap();
        }
    };
    away(&mut admin, false).await;
    let why = readyz_becomes(two, 503, "store: ", Duration::from_secs(90)).await;
    assert!(
        why.contains("database") && !why.contains("postgres://"),
        "says the store failed, without the URL: {why}"
    );
    assert_eq!(get(p2, "/healthz").await.unwrap().0, 200, "alive meanwhile");
    away(&mut admin, true).await;
    // The leader notices that its lock went with its connection (it looks every 5 seconds)
    // and takes it again on a new one (pg_terminate_backend returns before the old backend
    // is gone, so the old session may show the lock for a moment).
    wait_for(
        "the engine to hold the leader lock on a new connection",
        Duration::from_secs(60),
        async || holder(&mut admin).await.is_some_and(|pid| pid != session),
    )
    .await;
    readyz_becomes(two, 200, "ready\n", Duration::from_secs(90)).await;
    assert_eq!(metric(p2, "swarm_leader").await, Some(1.0));
    let (_, scrape) = get(p2, "/metrics").await.unwrap();
    assert_labels_documented(&scrape);
    drop((first, second));
    db.drop_db().await;
}

/// Kubernetes: ready while the API server answers `GET /version`; `runtime: ...` while it
/// cannot be reached; ready again once it can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_while_the_kubernetes_api_server_is_unreachable() {
    let api = crate::kubeapi::ApiServer::start().await;
    let proxy = Proxy::start(api.url.trim_start_matches("http://").to_string()).await;
    let db = TestDb::sqlite().await;
    let repo = TestRepo::new();
    repo.commit(&[("README.md", Some("x\n"))], "init");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _up = engine(
        dir.path(),
        &db.url,
        &repo,
        port,
        &format!(
            "runtime = \"kubernetes\"\n[kubernetes]\nnamespace = \"{}\"\napi_url = \"http://127.0.0.1:{}\"\n",
            crate::kubeapi::NS,
            proxy.port
        ),
    );
    readyz_becomes((port, dir.path()), 200, "ready\n", Duration::from_secs(60)).await;
    let asked = api
        .api
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/version"))
        .count();
    assert!(asked >= 1, "readiness asked the API server");
    proxy.set_up(false);
    let why = readyz_becomes(
        (port, dir.path()),
        503,
        "runtime: ",
        Duration::from_secs(60),
    )
    .await;
    assert!(why.contains("reach the API server"), "{why}");
    assert_eq!(get(port, "/healthz").await.unwrap().0, 200);
    proxy.set_up(true);
    readyz_becomes((port, dir.path()), 200, "ready\n", Duration::from_secs(60)).await;
    drop(_up);
    db.drop_db().await;
}

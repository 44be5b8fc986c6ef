//! `GET /api/stats` and `GET /api/queues` on both databases, through the real router: a
//! history of several days (successes, failures, retries, rate limits, stops, spend, a paused
//! agent) is seeded through the store as the engine writes it, and each answer is checked
//! against the same events counted in SQL directly here, against the task rows, and against
//! what the seed itself knows. Bad parameters answer 400 naming the parameter.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, DurationRound, Utc};
use coding_swarm::model::{plan_sync, transition, Outcome};
use coding_swarm::spec::{ErrorClass, RunResult};
use coding_swarm::store::{Store, SyncScope};
use serde_json::Value;
use sqlx::Connection;

use crate::support::{self, Backend, TestDb};

/// The project the history is seeded in (not configured: the engine leaves its tasks alone).
pub const HIST: &str = "hist";
/// The agent profile the seed pauses: its pending tasks stay pending.
pub const PAUSED_AGENT: &str = "claude";

/// A run the seed ended, as the seed knows it.
#[derive(Debug, Clone)]
pub struct SeededRun {
    pub ended: DateTime<Utc>,
    pub secs: i64,
    pub agent: Option<&'static str>,
    pub cost: Option<f64>,
}

/// What [`seed_history`] wrote.
pub struct History {
    /// The start of the first hour of the history.
    pub base: DateTime<Utc>,
    pub runs: Vec<SeededRun>,
    /// When the paused agent's pause ends.
    pub paused_until: DateTime<Utc>,
    /// The keys queued for `h-q`, oldest first.
    pub queued: Vec<String>,
}

fn success(cost: f64, turns: u32) -> RunResult {
    RunResult {
        success: true,
        cost_usd: Some(cost),
        turns: Some(turns),
        summary: Some("done".into()),
        ..RunResult::default()
    }
}

fn with_cost(mut r: RunResult, cost: f64) -> RunResult {
    r.cost_usd = Some(cost);
    r
}

async fn create(store: &Store, key: &str, yaml: &str, at: DateTime<Utc>) -> i64 {
    let files = support::create_plan(vec![support::task(key, yaml)]);
    let keys = vec![key.to_string()];
    store
        .apply_sync(HIST, "seed", SyncScope::Keys(&keys), at, |rows| {
            plan_sync(HIST, &files, rows, false, &Default::default(), "seed", at)
        })
        .await
        .unwrap();
    store.task(HIST, key).await.unwrap().unwrap().id
}

async fn claim(store: &Store, id: i64, at: DateTime<Utc>) -> i32 {
    store
        .modify_tasks(&[id], at, |row| (transition::claim(row, at), ()))
        .await
        .unwrap();
    store
        .task(HIST, &store.tasks_by_ids(&[id]).await.unwrap()[0].key)
        .await
        .unwrap()
        .unwrap()
        .attempts
}

/// Runs a SQL statement with `$1` bound to `at`, on whichever database `url` is.
async fn execute_at(url: &str, sql: &str, at: DateTime<Utc>) {
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query(sql).bind(at).execute(&mut c).await.unwrap();
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(sql).bind(at).execute(&mut c).await.unwrap();
    }
}

/// Seeds three days of history in project [`HIST`] of the database at `url`, ending before
/// `now`: twelve tasks of three addressees, each run once (two retried and run again), ending
/// as succeeded, failed, retried, rate-limited or stopped, with costs; four tasks queued for
/// `h-q` in the last hours; the agent [`PAUSED_AGENT`] paused for two hours; an active epic.
pub async fn seed_history(store: &Store, url: &str, now: DateTime<Utc>) -> History {
    let base = now.duration_trunc(Duration::hours(1)).unwrap() - Duration::hours(72);
    let mut runs = Vec::new();
    for i in 0..12i64 {
        let key = format!("t{i:02}");
        let addressee = ["h-a", "h-b", "h-c"][(i % 3) as usize];
        let agent = (i % 2 == 1).then_some(PAUSED_AGENT);
        let yaml = format!(
            "addressee: {addressee}\nprompt: step {i}\n{}",
            agent.map(|a| format!("agent: {a}\n")).unwrap_or_default()
        );
        let created = base + Duration::hours(5 * i) + Duration::minutes(10);
        let id = create(store, &key, &yaml, created).await;
        let claimed = created + Duration::minutes(30 + i);
        let attempt = claim(store, id, claimed).await;
        let secs = (i + 1) * 180;
        let ended = claimed + Duration::seconds(secs);
        let (outcome, cost) = match i % 6 {
            0 => (Outcome::Completed(success(0.40, 7)), Some(0.40)),
            1 => (
                Outcome::Completed(with_cost(
                    RunResult::failure(ErrorClass::Agent, "tests failed"),
                    0.10,
                )),
                Some(0.10),
            ),
            2 => (
                Outcome::Retry {
                    result: RunResult::failure(ErrorClass::Infrastructure, "pod evicted"),
                    not_before: ended + Duration::minutes(1),
                    infrastructure: true,
                },
                None,
            ),
            3 => (
                Outcome::Requeue {
                    result: RunResult::failure(ErrorClass::RateLimit, "usage limit"),
                    not_before: ended + Duration::minutes(1),
                },
                None,
            ),
            4 => (
                Outcome::Completed(with_cost(
                    RunResult::failure(ErrorClass::Cancelled, "stopped by ann"),
                    0.05,
                )),
                Some(0.05),
            ),
            _ => (Outcome::Completed(success(1.25, 21)), Some(1.25)),
        };
        assert!(support::finish(store, id, attempt, &outcome, ended).await);
        runs.push(SeededRun {
            ended,
            secs,
            agent,
            cost,
        });
        if i % 6 == 2 {
            // The retry runs again and succeeds.
            let claimed = ended + Duration::minutes(20);
            let attempt = claim(store, id, claimed).await;
            let ended = claimed + Duration::seconds(300);
            let outcome = Outcome::Completed(success(0.20, 4));
            assert!(support::finish(store, id, attempt, &outcome, ended).await);
            runs.push(SeededRun {
                ended,
                secs: 300,
                agent,
                cost: Some(0.20),
            });
        }
    }
    let mut queued = Vec::new();
    for k in 0..4i64 {
        let key = format!("q{k}");
        let at = now - Duration::hours(3) + Duration::minutes(30 * k);
        create(
            store,
            &key,
            &format!("addressee: h-q\nprompt: queued {k}\nagent: {PAUSED_AGENT}\n"),
            at,
        )
        .await;
        queued.push(key);
    }
    let paused_until = (now + Duration::hours(2))
        .duration_trunc(Duration::seconds(1))
        .unwrap();
    store
        .pause_agent(
            PAUSED_AGENT,
            paused_until,
            "rate or usage limit hit by hist/t09",
            now - Duration::minutes(5),
        )
        .await
        .unwrap();
    execute_at(
        url,
        "INSERT INTO epics (project, name, state, spend_usd, created_at, updated_at)
         VALUES ('hist', 'big-feature', 'active', 3.5, $1, $1),
                ('hist', 'old-feature', 'complete', 9.0, $1, $1)",
        base,
    )
    .await;
    History {
        base,
        runs,
        paused_until,
        queued,
    }
}

/// GET `path` from the real router; the status and the JSON (or text) answer.
pub async fn get(router: &axum::Router, path: &str) -> (u16, Value) {
    use tower::Service;
    let req = axum::http::Request::builder()
        .uri(path)
        .header("host", "localhost")
        .body(axum::body::Body::empty())
        .unwrap();
    let res = router.clone().call(req).await.unwrap();
    let status = res.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8_lossy(&bytes).to_string();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A connection of the test's own, for counting in SQL.
enum Conn {
    Pg(sqlx::PgConnection),
    Sqlite(sqlx::SqliteConnection),
}

impl Conn {
    async fn open(url: &str) -> Self {
        if url.starts_with("sqlite:") {
            Self::Sqlite(sqlx::SqliteConnection::connect(url).await.unwrap())
        } else {
            Self::Pg(sqlx::PgConnection::connect(url).await.unwrap())
        }
    }

    /// A number counted in SQL: `sql` with `$1` and `$2` bound to two times, and `$3` to text.
    async fn count(&mut self, sql: &str, a: DateTime<Utc>, b: DateTime<Utc>, s: &str) -> i64 {
        match self {
            Self::Sqlite(c) => sqlx::query_scalar(sql)
                .bind(a)
                .bind(b)
                .bind(s)
                .fetch_one(c)
                .await
                .unwrap(),
            Self::Pg(c) => sqlx::query_scalar(sql)
                .bind(a)
                .bind(b)
                .bind(s)
                .fetch_one(c)
                .await
                .unwrap(),
        }
    }
}

/// The run-end events of each outcome, by their kind and message (not by their result).
const RUNS_BY_MESSAGE: &str = "SELECT COUNT(*) FROM task_events WHERE at >= $1 AND at < $2 AND (
       ($3 = 'succeeded' AND kind = 'completed' AND message LIKE '%succeeded')
    OR ($3 = 'failed' AND kind = 'completed' AND message LIKE '%failed (%' AND message NOT LIKE '%(cancelled)%')
    OR ($3 = 'cancelled' AND kind = 'completed' AND message LIKE '%(cancelled)%')
    OR ($3 = 'retried' AND kind = 'retry' AND message LIKE 'attempt%')
    OR ($3 = 'rate_limited' AND kind = 'requeued')
    OR ($3 = 'superseded' AND kind = 'next_generation')
    OR ($3 = 'deleted' AND kind = 'removed' AND message LIKE 'run ended%'))";

/// Tasks of project `$3` pending at `$2`: their last state-setting event before it leaves them
/// pending (`$1` is unused).
const PENDING_AT: &str = "SELECT COUNT(*) FROM task_events e WHERE e.project = $3 AND e.at < $2 AND e.at >= $1
      AND e.kind IN ('created', 'new_generation', 'retry', 'requeued', 'next_generation')
      AND NOT EXISTS (SELECT 1 FROM task_events l WHERE l.task_id = e.task_id AND l.id > e.id AND l.at < $2
          AND l.kind IN ('created', 'new_generation', 'retry', 'requeued', 'next_generation', 'claimed',
                         'completed', 'cancelled', 'restored', 'removed'))";

/// The value at rank ceil(p% of n) of `xs` sorted.
fn nearest_rank(xs: &[i64], p: usize) -> Option<i64> {
    let mut xs = xs.to_vec();
    xs.sort_unstable();
    (!xs.is_empty()).then(|| xs[(p * xs.len()).div_ceil(100) - 1])
}

async fn the_stats_answer_what_the_events_say(backend: Backend) {
    let db = TestDb::new(backend).await;
    let now = Utc::now().duration_trunc(Duration::seconds(1)).unwrap();
    let h = seed_history(&db.store, &db.url, now).await;
    let dir = tempfile::tempdir().unwrap();
    let repo = support::TestRepo::new();
    let config = Arc::new(support::config(dir.path(), &db, &repo, "true", ""));
    let state = coding_swarm::web::WebState::new(
        config.clone(),
        db.store.clone(),
        None,
        None,
        Default::default(),
    );
    let router = coding_swarm::web::router(state);
    let mut sql = Conn::open(&db.url).await;

    let since = h.base.to_rfc3339();
    let until = now.to_rfc3339();
    let window = format!(
        "since={}&until={}",
        since.replace('+', "%2B"),
        until.replace('+', "%2B")
    );
    let (code, d) = get(&router, &format!("/api/stats?{window}&step=1h")).await;
    assert_eq!(code, 200, "{d}");
    let steps = d["steps"].as_array().unwrap();
    let n = ((now - h.base).num_seconds() + 3599) / 3600;
    assert_eq!(steps.len() as i64, n);
    assert_eq!(d["step_secs"], 3600);

    // Runs ended per step and outcome: as counted from the events' kinds and messages.
    let mut totals = BTreeMap::new();
    for (outcome, series) in d["runs"].as_object().unwrap() {
        let series = series.as_array().unwrap();
        assert_eq!(series.len() as i64, n, "{outcome}");
        for (i, v) in series.iter().enumerate() {
            let from = h.base + Duration::hours(i as i64);
            let to = (from + Duration::hours(1)).min(now);
            let expected = sql.count(RUNS_BY_MESSAGE, from, to, outcome).await;
            assert_eq!(v.as_i64().unwrap(), expected, "{outcome} in step {i}");
        }
        totals.insert(
            outcome.clone(),
            series.iter().map(|v| v.as_i64().unwrap()).sum::<i64>(),
        );
    }
    let expect: BTreeMap<String, i64> = [
        ("succeeded", 6),
        ("failed", 2),
        ("cancelled", 2),
        ("retried", 2),
        ("rate_limited", 2),
        ("superseded", 0),
        ("deleted", 0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(totals, expect, "the seed's runs");

    // Pending over time, per project: as counted in SQL at the end of each step; at the end,
    // what the task rows say now.
    let pending = d["pending"][HIST].as_array().unwrap();
    assert_eq!(pending.len() as i64, n);
    for (i, v) in pending.iter().enumerate() {
        let end = (h.base + Duration::hours(i as i64 + 1)).min(now);
        let expected = sql
            .count(PENDING_AT, h.base - Duration::days(365), end, HIST)
            .await;
        assert_eq!(
            v.as_i64().unwrap(),
            expected,
            "pending at the end of step {i}"
        );
    }
    let now_pending = sql.count(
        "SELECT COUNT(*) FROM tasks WHERE status = 'pending' AND project = $3 AND created_at >= $1 AND created_at < $2",
        h.base - Duration::days(1),
        now,
        HIST,
    )
    .await;
    assert_eq!(now_pending, 6, "two rate-limited, four queued");
    assert_eq!(pending.last().unwrap().as_i64().unwrap(), now_pending);
    assert!(
        pending.iter().any(|v| v.as_i64() == Some(0))
            && pending.iter().any(|v| v.as_i64() == Some(1)),
        "the pending line moves: {pending:?}"
    );
    assert!(
        d["pending"]["proj"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v == 0),
        "a configured project without tasks is a line of zeros"
    );

    // The longest queues now.
    assert_eq!(
        d["queues"][0],
        serde_json::json!({"addressee": "h-q", "pending": 4})
    );
    assert_eq!(
        d["queues"][1],
        serde_json::json!({"addressee": "h-a", "pending": 2})
    );

    // Spend per day, by project and by agent: what the seed spent, day by day.
    let days: Vec<String> = d["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        days.first().unwrap(),
        &h.base.format("%Y-%m-%d").to_string()
    );
    assert_eq!(
        days.last().unwrap(),
        &(now - Duration::seconds(1)).format("%Y-%m-%d").to_string()
    );
    let mut by_agent: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut by_day = vec![0.0; days.len()];
    for r in &h.runs {
        let Some(c) = r.cost else { continue };
        let day = days
            .iter()
            .position(|d| *d == r.ended.format("%Y-%m-%d").to_string())
            .unwrap();
        by_day[day] += c;
        by_agent
            .entry(r.agent.unwrap_or("sh").to_string())
            .or_insert_with(|| vec![0.0; days.len()])[day] += c;
    }
    let close = |a: &Value, b: &[f64]| {
        let a: Vec<f64> = a
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9)
    };
    assert!(
        close(&d["spend_by_project"][HIST], &by_day),
        "{} vs {by_day:?}",
        d["spend_by_project"][HIST]
    );
    assert_eq!(
        d["spend_by_agent"].as_object().unwrap().len(),
        by_agent.len(),
        "{}",
        d["spend_by_agent"]
    );
    for (agent, days) in &by_agent {
        assert!(
            close(&d["spend_by_agent"][agent], days),
            "{agent}: {} vs {days:?}",
            d["spend_by_agent"][agent]
        );
    }
    let total: f64 = by_day.iter().sum();
    assert!(
        (total - (2.0 * 0.40 + 2.0 * 0.10 + 2.0 * 0.20 + 2.0 * 0.05 + 2.0 * 1.25)).abs() < 1e-9
    );

    // The active epic against its cap; the completed one is left out.
    assert_eq!(
        d["epics"],
        serde_json::json!([{"project": "hist", "name": "big-feature", "spend_usd": 3.5, "cap_usd": config.epics.max_spend_usd}])
    );

    // Durations, claim to end, by the nearest rank.
    let secs: Vec<i64> = h.runs.iter().map(|r| r.secs).collect();
    assert_eq!(d["durations"]["runs"], secs.len());
    for p in [50, 90, 99] {
        assert_eq!(
            d["durations"][format!("p{p}_secs")].as_i64(),
            nearest_rank(&secs, p),
            "p{p} of {secs:?}"
        );
    }

    // A window that starts later sees fewer runs, and by days.
    let (code, d) = get(&router, "/api/stats?since=1d&step=1d").await;
    assert_eq!(code, 200, "{d}");
    assert_eq!(d["steps"].as_array().unwrap().len(), 1);
    let ended_last_day = h
        .runs
        .iter()
        .filter(|r| r.ended >= now - Duration::days(1))
        .count() as i64;
    let sum: i64 = d["runs"]
        .as_object()
        .unwrap()
        .values()
        .map(|s| s[0].as_i64().unwrap())
        .sum();
    // `since=1d` is a day back from the moment the engine answers, a little after `now`.
    assert!(sum <= ended_last_day, "{sum} > {ended_last_day}");

    // Bad parameters: 400, naming the parameter.
    for (query, needle) in [
        ("since=yesterday", "since \"yesterday\""),
        ("step=often", "step \"often\""),
        ("step=10s", "step \"10s\": at least 1m"),
        ("since=30d&step=1m", "step \"1m\": makes 43200 steps"),
        ("until=2020-01-01T00:00:00Z&since=1h&step=1x", "step \"1x\""),
    ] {
        let (code, body) = get(&router, &format!("/api/stats?{query}")).await;
        assert_eq!(code, 400, "{query}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(needle),
            "{query}: {body}"
        );
    }

    // What waits on what: the queue of h-q in order, each behind the pause of its agent.
    let (code, q) = get(&router, "/api/queues").await;
    assert_eq!(code, 200, "{q}");
    assert_eq!(q["pauses"][0]["agent"], PAUSED_AGENT);
    assert_eq!(
        q["pauses"][0]["until"]
            .as_str()
            .map(|t| DateTime::parse_from_rfc3339(t).unwrap()),
        Some(h.paused_until.fixed_offset())
    );
    let hq = q["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["addressee"] == "h-q")
        .unwrap();
    let order: Vec<(String, u64)> = hq["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["key"].as_str().unwrap().to_string(),
                t["position"].as_u64().unwrap(),
            )
        })
        .collect();
    let expect: Vec<(String, u64)> = h.queued.iter().cloned().zip(1..).collect();
    assert_eq!(order, expect);
    assert!(
        hq["pending"][0]["waiting"]
            .as_str()
            .unwrap()
            .contains(&format!("usage limit of agent {PAUSED_AGENT}")),
        "{hq}"
    );
    assert_eq!(q["queues"][0]["addressee"], "h-q", "longest first");
    let (code, p) = get(&router, "/api/pauses").await;
    assert_eq!(
        (code, p[0]["agent"].clone()),
        (200, Value::from(PAUSED_AGENT))
    );

    // A task whose file is deleted leaves the database; its runs' spend stays, under
    // `(task removed)`.
    let gone = vec![coding_swarm::model::FileChange {
        path: coding_swarm::spec::task_path(&coding_swarm::spec::TaskKey::new("t05").unwrap()),
        content: None,
    }];
    let keys = vec!["t05".to_string()];
    db.store
        .apply_sync(HIST, "seed2", SyncScope::Keys(&keys), now, |rows| {
            plan_sync(HIST, &gone, rows, false, &Default::default(), "seed2", now)
        })
        .await
        .unwrap();
    assert!(db.store.task(HIST, "t05").await.unwrap().is_none());
    let (_, d) = get(&router, &format!("/api/stats?{window}&step=1h")).await;
    let removed: f64 = d["spend_by_agent"]["(task removed)"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .sum();
    assert!((removed - 1.25).abs() < 1e-9, "{}", d["spend_by_agent"]);
    let claude: f64 = d["spend_by_agent"][PAUSED_AGENT]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .sum();
    let seeded: f64 = by_agent[PAUSED_AGENT].iter().sum();
    assert!((claude - (seeded - 1.25)).abs() < 1e-9);
    drop(sql);
    db.drop_db().await;
}

crate::on_both_backends!(the_stats_answer_what_the_events_say);

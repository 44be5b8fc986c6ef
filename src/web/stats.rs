//! `GET /api/stats` and `GET /api/queues`: the numbers behind the dashboard's charts, and what
//! waits on what. The counting is the store's (SQL over the event log); here the query is
//! checked, and sparse rows become one value per step or day, ready to draw.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::Json;
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::api::{bad, ApiResult};
use super::WebState;
use crate::model::TaskRow;
use crate::spec::TaskState;
use crate::store::{Durations, QueueLength, StatsWindow, TaskFilter};

/// How a run ended, in the order the charts stack them.
pub const OUTCOMES: [&str; 7] = [
    "succeeded",
    "failed",
    "cancelled",
    "retried",
    "rate_limited",
    "superseded",
    "deleted",
];

/// Most steps one answer has.
pub const MAX_STEPS: i64 = 1000;
/// Most days of spend one answer has.
pub const MAX_DAYS: i64 = 1000;
/// The shortest step.
pub const MIN_STEP_SECS: i64 = 60;
const DAY: i64 = 86_400;

#[derive(Debug, Default, Deserialize)]
pub struct StatsQuery {
    since: Option<String>,
    until: Option<String>,
    step: Option<String>,
}

/// A time: RFC 3339, or a duration back from `now` (`24h`, `7d`).
fn parse_time(name: &str, value: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let v = value.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Ok(t.with_timezone(&Utc));
    }
    match humantime::parse_duration(v) {
        Ok(d) => chrono::Duration::from_std(d)
            .ok()
            .and_then(|d| now.checked_sub_signed(d))
            .ok_or_else(|| format!("{name} {value:?}: too far back")),
        Err(_) => Err(format!(
            "{name} {value:?}: expected an RFC 3339 time like 2026-01-31T09:00:00Z, or a duration back from now like 24h or 7d"
        )),
    }
}

/// Checks the query: the window, its step, and the whole days its spend covers.
pub fn window(q: &StatsQuery, now: DateTime<Utc>) -> Result<StatsWindow, String> {
    let empty = |v: &Option<String>| {
        v.as_deref()
            .filter(|v| !v.trim().is_empty())
            .map(str::to_string)
    };
    let until = match empty(&q.until) {
        Some(v) => parse_time("until", &v, now)?,
        None => now,
    };
    let since = match empty(&q.since) {
        Some(v) => parse_time("since", &v, until)?,
        None => until - chrono::Duration::hours(24),
    };
    let step = match empty(&q.step) {
        Some(v) => humantime::parse_duration(v.trim())
            .map_err(|_| format!("step {v:?}: expected a duration like 15m, 1h or 1d"))?
            .as_secs() as i64,
        None => 3600,
    };
    if step < MIN_STEP_SECS {
        return Err(format!(
            "step {:?}: at least 1m",
            q.step.as_deref().unwrap_or_default()
        ));
    }
    let (since, until) = (since.timestamp(), until.timestamp());
    if since >= until {
        return Err(format!(
            "since {:?}: must be before until ({})",
            q.since.as_deref().unwrap_or_default(),
            Utc.timestamp_opt(until, 0)
                .single()
                .unwrap_or(now)
                .to_rfc3339()
        ));
    }
    let w = StatsWindow { since, until, step };
    if w.buckets() > MAX_STEPS {
        return Err(format!(
            "step {:?}: makes {} steps from since to until; at most {MAX_STEPS}",
            q.step.as_deref().unwrap_or("1h"),
            w.buckets()
        ));
    }
    if until.div_euclid(DAY) - since.div_euclid(DAY) + 1 > MAX_DAYS {
        return Err(format!(
            "since {:?}: at most {MAX_DAYS} days back",
            q.since.as_deref().unwrap_or_default()
        ));
    }
    Ok(w)
}

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, 0).single().unwrap_or_default()
}

/// An active epic's spend against its cap.
#[derive(Debug, Serialize)]
pub struct EpicBudget {
    pub project: String,
    pub name: String,
    pub spend_usd: f64,
    pub cap_usd: f64,
}

/// The answer of `GET /api/stats`.
#[derive(Debug, Serialize)]
pub struct StatsView {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub step_secs: i64,
    /// The start of each step.
    pub steps: Vec<DateTime<Utc>>,
    /// Runs that ended in each step, per outcome (every outcome, zeros included).
    pub runs: BTreeMap<String, Vec<i64>>,
    /// Pending tasks at the end of each step (the last: at `until`), per project.
    pub pending: BTreeMap<String, Vec<i64>>,
    /// The addressees with the most pending tasks now, longest first (at most 10).
    pub queues: Vec<QueueLength>,
    /// The UTC days the window touches, as `YYYY-MM-DD`.
    pub days: Vec<String>,
    /// Reported cost of the runs that ended on each day, per project, in US dollars.
    pub spend_by_project: BTreeMap<String, Vec<f64>>,
    /// The same per agent profile.
    pub spend_by_agent: BTreeMap<String, Vec<f64>>,
    /// Each active epic's spend against `[epics] max_spend_usd`.
    pub epics: Vec<EpicBudget>,
    /// Durations, claim to end, of the runs that ended in the window.
    pub durations: Durations,
}

pub async fn stats(State(s): State<WebState>, Query(q): Query<StatsQuery>) -> ApiResult<StatsView> {
    let w = window(&q, Utc::now()).map_err(bad)?;
    let n = w.buckets() as usize;
    let steps = (0..n as i64).map(|i| at(w.since + i * w.step)).collect();

    let mut runs: BTreeMap<String, Vec<i64>> = OUTCOMES
        .iter()
        .map(|o| (o.to_string(), vec![0; n]))
        .collect();
    for r in s.store.runs_ended(w).await? {
        let series = runs.entry(r.outcome).or_insert_with(|| vec![0; n]);
        if let Some(v) = series.get_mut(r.bucket as usize) {
            *v += r.runs;
        }
    }

    let mut pending: BTreeMap<String, Vec<i64>> = s
        .config
        .projects
        .iter()
        .map(|p| (p.name.clone(), vec![0; n]))
        .collect();
    for r in s.store.pending_over_time(w).await? {
        let series = pending.entry(r.project).or_insert_with(|| vec![0; n]);
        if let Some(v) = series.get_mut(r.bucket as usize) {
            *v += r.pending;
        }
    }
    // The changes from step to step, summed up.
    for series in pending.values_mut() {
        let mut sum = 0;
        for v in series.iter_mut() {
            sum += *v;
            *v = sum;
        }
    }

    let first_day = w.since.div_euclid(DAY);
    let last_day = (w.until - 1).div_euclid(DAY);
    let d = (last_day - first_day + 1) as usize;
    let days = (first_day..=last_day)
        .map(|day| at(day * DAY).format("%Y-%m-%d").to_string())
        .collect();
    let mut spend_by_project: BTreeMap<String, Vec<f64>> = s
        .config
        .projects
        .iter()
        .map(|p| (p.name.clone(), vec![0.0; d]))
        .collect();
    let mut spend_by_agent: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in s
        .store
        .spend_per_day(first_day * DAY, w.until, &s.config.default_agent)
        .await?
    {
        let i = (r.day - first_day) as usize;
        for (map, name) in [
            (&mut spend_by_project, r.project),
            (&mut spend_by_agent, r.agent),
        ] {
            if let Some(v) = map.entry(name).or_insert_with(|| vec![0.0; d]).get_mut(i) {
                *v += r.usd;
            }
        }
    }

    let cap = s.config.epics.max_spend_usd;
    let epics = s
        .store
        .epics(None)
        .await?
        .into_iter()
        .filter(|e| e.state == crate::model::EpicState::Active)
        .map(|e| EpicBudget {
            project: e.project,
            name: e.name,
            spend_usd: e.spend_usd,
            cap_usd: cap,
        })
        .collect();

    Ok(Json(StatsView {
        since: at(w.since),
        until: at(w.until),
        step_secs: w.step,
        steps,
        runs,
        pending,
        queues: s.store.longest_queues(10).await?,
        days,
        spend_by_project,
        spend_by_agent,
        epics,
        durations: s.store.run_durations(w.since, w.until).await?,
    }))
}

/// A paused agent profile.
#[derive(Debug, Serialize)]
pub struct PauseView {
    pub agent: String,
    pub until: DateTime<Utc>,
    pub reason: String,
}

/// The agent profiles paused by a rate or usage limit now, with when dispatch resumes.
pub async fn pauses(State(s): State<WebState>) -> ApiResult<Vec<PauseView>> {
    Ok(Json(
        s.store
            .agent_pauses(Utc::now())
            .await?
            .into_iter()
            .map(|(agent, until, reason)| PauseView {
                agent,
                until,
                reason,
            })
            .collect(),
    ))
}

/// A task in a queue.
#[derive(Debug, Serialize)]
pub struct QueuedTask {
    pub project: String,
    pub key: String,
    /// 1 for the task that runs next.
    pub position: usize,
    pub priority: i32,
    pub agent: String,
    /// What it waits for, as `GET /api/tasks` says it.
    pub waiting: Option<String>,
}

/// One addressee: what runs for it, and what waits, in the order it will run.
#[derive(Debug, Serialize)]
pub struct AddresseeQueue {
    pub addressee: String,
    pub running: Option<String>,
    pub pending: Vec<QueuedTask>,
}

/// The answer of `GET /api/queues`.
#[derive(Debug, Serialize)]
pub struct QueuesView {
    pub pauses: Vec<PauseView>,
    pub running: usize,
    pub max_running: u32,
    pub queues: Vec<AddresseeQueue>,
}

/// Most pending tasks `GET /api/queues` reads.
const QUEUE_LIMIT: u32 = 2000;

pub async fn queues(State(s): State<WebState>) -> ApiResult<QueuesView> {
    let running = s.store.running().await?;
    // Pending tasks come out by priority and age: each addressee's in the order they run.
    let pending = s
        .store
        .list(&TaskFilter {
            status: Some(TaskState::Pending),
            limit: Some(QUEUE_LIMIT),
            ..TaskFilter::default()
        })
        .await?;
    let ctx = super::api::WaitContext::read(&s).await?;
    let mut queues: BTreeMap<String, AddresseeQueue> = BTreeMap::new();
    let name = |t: &TaskRow| format!("{}/{}", t.project, t.key);
    for t in &running {
        queues
            .entry(t.addressee.clone())
            .or_insert_with(|| AddresseeQueue {
                addressee: t.addressee.clone(),
                running: None,
                pending: Vec::new(),
            })
            .running = Some(name(t));
    }
    for t in &pending {
        let q = queues
            .entry(t.addressee.clone())
            .or_insert_with(|| AddresseeQueue {
                addressee: t.addressee.clone(),
                running: None,
                pending: Vec::new(),
            });
        // Pending tasks come in the order they run, so the place in the list is the place in
        // the queue; the running task is named as `GET /api/tasks` names it.
        let position = q.pending.len() + 1;
        let behind = running
            .iter()
            .find(|r| r.addressee == t.addressee)
            .map(|r| {
                if r.project == t.project {
                    r.key.clone()
                } else {
                    name(r)
                }
            });
        let waiting = ctx.waiting(t, position as i64, behind.as_deref());
        q.pending.push(QueuedTask {
            project: t.project.clone(),
            key: t.key.clone(),
            position,
            priority: t.priority,
            agent: t
                .agent
                .clone()
                .unwrap_or_else(|| s.config.default_agent.clone()),
            waiting,
        });
    }
    let mut queues: Vec<AddresseeQueue> = queues.into_values().collect();
    // Longest first; then by name.
    queues.sort_by(|a, b| {
        b.pending
            .len()
            .cmp(&a.pending.len())
            .then_with(|| a.addressee.cmp(&b.addressee))
    });
    Ok(Json(QueuesView {
        pauses: ctx
            .pauses
            .into_iter()
            .map(|(agent, until, reason)| PauseView {
                agent,
                until,
                reason,
            })
            .collect(),
        running: running.len(),
        max_running: s.config.limits.max_running,
        queues,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(since: &str, until: &str, step: &str) -> StatsQuery {
        let o = |v: &str| (!v.is_empty()).then(|| v.to_string());
        StatsQuery {
            since: o(since),
            until: o(until),
            step: o(step),
        }
    }

    #[test]
    fn the_window_defaults_to_a_day_by_hours_and_names_a_bad_parameter() {
        let now = DateTime::parse_from_rfc3339("2026-03-10T12:00:30Z")
            .unwrap()
            .with_timezone(&Utc);
        let w = window(&q("", "", ""), now).unwrap();
        assert_eq!(w.until, now.timestamp());
        assert_eq!(w.since, now.timestamp() - 86_400);
        assert_eq!((w.step, w.buckets()), (3600, 24));

        let w = window(&q("7d", "", "1d"), now).unwrap();
        assert_eq!((w.since, w.buckets()), (now.timestamp() - 7 * 86_400, 7));
        let w = window(
            &q("2026-03-10T10:00:00Z", "2026-03-10T11:30:00+00:00", "1h"),
            now,
        )
        .unwrap();
        assert_eq!(w.buckets(), 2, "the last step is cut short by until");

        for (query, needle) in [
            (
                q("yesterday", "", ""),
                "since \"yesterday\": expected an RFC 3339 time",
            ),
            (q("", "soon", ""), "until \"soon\": expected"),
            (q("", "", "hourly"), "step \"hourly\": expected a duration"),
            (q("", "", "30s"), "step \"30s\": at least 1m"),
            (q("1d", "", "1m"), "step \"1m\": makes 1440 steps"),
            (
                q("2026-03-11T00:00:00Z", "", ""),
                "since \"2026-03-11T00:00:00Z\": must be before until",
            ),
            (
                q("2000d", "", "30d"),
                "since \"2000d\": at most 1000 days back",
            ),
        ] {
            let e = window(&query, now).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
    }
}

//! The numbers behind the dashboard's charts, counted in SQL from the append-only event log
//! (and, for what is true now, the task rows): runs ended per time step by outcome, pending
//! tasks over time, spend per day, run durations, the longest queues. Both dialects; I/O only.
//!
//! Times are compared as whole Unix seconds (`epoch`), the one form both databases compute
//! from their own timestamp columns.

use super::{q, Backend, Result, Store};

/// The event kinds that end a run, when they carry the run's result (`data`).
const RUN_END_KINDS: &str = "'completed', 'retry', 'requeued', 'next_generation', 'removed'";

/// The event kinds that set a task's state, and so the kinds after which it is pending.
const STATE_KINDS: &str = "'created', 'new_generation', 'retry', 'requeued', 'next_generation', \
     'claimed', 'completed', 'cancelled', 'restored', 'removed'";
const PENDING_KINDS: &str = "'created', 'new_generation', 'retry', 'requeued', 'next_generation'";

/// The SQL spelling of what differs between the dialects.
struct Dialect {
    /// Whole Unix seconds of the column `at`.
    epoch: &'static str,
    /// True when the run result in `data` succeeded.
    success: &'static str,
    /// The result's error class, as text.
    class: &'static str,
    /// The result's `cost_usd`, as a float (NULL when absent).
    cost: &'static str,
}

const PG: Dialect = Dialect {
    epoch: "floor(extract(epoch FROM at))::bigint",
    success: "(data->>'success') = 'true'",
    class: "(data->>'error_class')",
    cost: "(data->>'cost_usd')::double precision",
};

const SQLITE: Dialect = Dialect {
    epoch: "CAST(strftime('%s', at) AS INTEGER)",
    success: "json_extract(data, '$.success') = 1",
    class: "json_extract(data, '$.error_class')",
    cost: "CAST(json_extract(data, '$.cost_usd') AS REAL)",
};

/// The window the numbers are counted over: `buckets` steps of `step` seconds from `since`,
/// every bound a whole Unix second; the last step ends at `until` at the latest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsWindow {
    pub since: i64,
    pub until: i64,
    pub step: i64,
}

impl StatsWindow {
    /// How many steps cover the window (the last may be cut short by `until`).
    pub fn buckets(&self) -> i64 {
        (self.until - self.since + self.step - 1) / self.step
    }
}

/// Runs ended in one step with one outcome.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RunsEnded {
    pub bucket: i64,
    pub outcome: String,
    pub runs: i64,
}

/// How the number of one project's pending tasks changed from the end of the step before to
/// the end of this one (`pending` is the change; a step without a change has no row).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PendingAt {
    pub bucket: i64,
    pub project: String,
    pub pending: i64,
}

/// Reported cost of the runs that ended on one day (days since the Unix epoch, UTC) in one
/// project with one agent profile.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct SpendOn {
    pub day: i64,
    pub project: String,
    pub agent: String,
    pub usd: f64,
}

/// Run durations, in whole seconds, by the nearest-rank method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct Durations {
    pub runs: i64,
    pub p50_secs: Option<i64>,
    pub p90_secs: Option<i64>,
    pub p99_secs: Option<i64>,
}

/// An addressee's queue now.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct QueueLength {
    pub addressee: String,
    pub pending: i64,
}

/// How a run ended, by its end event: `succeeded`, `failed`, `cancelled` (completed), `retried`,
/// `rate_limited` (requeued), `superseded` (its spec changed meanwhile), `deleted`.
fn outcome_sql(d: &Dialect) -> String {
    format!(
        "CASE kind WHEN 'completed' THEN CASE WHEN {success} THEN 'succeeded'
                                        WHEN {class} = 'cancelled' THEN 'cancelled'
                                        ELSE 'failed' END
                   WHEN 'retry' THEN 'retried'
                   WHEN 'requeued' THEN 'rate_limited'
                   WHEN 'next_generation' THEN 'superseded'
                   ELSE 'deleted' END",
        success = d.success,
        class = d.class,
    )
}

fn runs_sql(d: &Dialect) -> String {
    format!(
        "SELECT (ep - $1) / $2 AS bucket, outcome, COUNT(*) AS runs FROM (
             SELECT {epoch} AS ep, {outcome} AS outcome FROM task_events
             WHERE kind IN ({RUN_END_KINDS}) AND data IS NOT NULL
         ) e
         WHERE ep >= $1 AND ep < $3
         GROUP BY 1, 2 ORDER BY 1, 2",
        epoch = d.epoch,
        outcome = outcome_sql(d),
    )
}

/// Changes of the pending count per step: each stretch a task spends pending (from an event
/// that leaves it pending to its next state-setting event) counts at the end of each step that
/// falls inside it, so it adds one from the first step that ends after it began, and takes
/// that one away from the first step that ends after it ended. A running sum of these is the
/// count at the end of each step.
fn pending_sql(d: &Dialect) -> String {
    format!(
        "WITH s AS (
             SELECT project, kind, {epoch} AS t,
                    LEAD({epoch}) OVER (PARTITION BY task_id ORDER BY id) AS next_t
             FROM task_events WHERE task_id IS NOT NULL AND kind IN ({STATE_KINDS})
         ),
         p AS (SELECT project, t, next_t FROM s
               WHERE kind IN ({PENDING_KINDS}) AND t < $3 AND (next_t IS NULL OR next_t >= $1)),
         d AS (
             SELECT project, CASE WHEN t < $1 THEN 0 ELSE (t - $1) / $2 END AS bucket, 1 AS delta FROM p
             UNION ALL
             SELECT project, CASE WHEN next_t < $1 THEN 0 ELSE (next_t - $1) / $2 END, -1 FROM p
             WHERE next_t IS NOT NULL AND next_t < $3
         )
         SELECT bucket, project, CAST(SUM(delta) AS BIGINT) AS pending FROM d
         GROUP BY 1, 2 HAVING SUM(delta) <> 0 ORDER BY 1, 2",
        epoch = d.epoch,
    )
}

fn spend_sql(d: &Dialect) -> String {
    format!(
        "SELECT e.ep / 86400 AS day, e.project AS project,
                CASE WHEN t.id IS NULL THEN '(task removed)' ELSE COALESCE(t.agent, $3) END AS agent,
                SUM(e.usd) AS usd
         FROM (SELECT task_id, project, {epoch} AS ep, {cost} AS usd FROM task_events
               WHERE kind IN ({RUN_END_KINDS}) AND data IS NOT NULL) e
         LEFT JOIN tasks t ON t.id = e.task_id
         WHERE e.ep >= $1 AND e.ep < $2 AND e.usd IS NOT NULL
         GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        epoch = d.epoch,
        cost = d.cost,
    )
}

/// Durations from a run's claim to its end, of the runs that ended in the window.
fn durations_sql(d: &Dialect) -> String {
    format!(
        "WITH r AS (
             SELECT kind, {epoch} AS t,
                    LAG(kind) OVER (PARTITION BY task_id ORDER BY id) AS prev_kind,
                    LAG({epoch}) OVER (PARTITION BY task_id ORDER BY id) AS prev_t
             FROM task_events
             WHERE task_id IS NOT NULL
               AND (kind = 'claimed' OR (kind IN ({RUN_END_KINDS}) AND data IS NOT NULL))
         ),
         d AS (SELECT t - prev_t AS dur FROM r
               WHERE kind <> 'claimed' AND prev_kind = 'claimed' AND t >= $1 AND t < $2),
         o AS (SELECT dur, ROW_NUMBER() OVER (ORDER BY dur) AS rn, COUNT(*) OVER () AS n FROM d)
         SELECT COUNT(*) AS runs,
                MAX(CASE WHEN rn <= (50 * n + 99) / 100 THEN dur END) AS p50_secs,
                MAX(CASE WHEN rn <= (90 * n + 99) / 100 THEN dur END) AS p90_secs,
                MAX(CASE WHEN rn <= (99 * n + 99) / 100 THEN dur END) AS p99_secs
         FROM o",
        epoch = d.epoch,
    )
}

impl Store {
    fn dialect(&self) -> &'static Dialect {
        match self.backend {
            Backend::Postgres(_) => &PG,
            Backend::Sqlite(_) => &SQLITE,
        }
    }

    /// Runs that ended in `w`, per step and outcome (steps and outcomes without runs left out).
    pub async fn runs_ended(&self, w: StatsWindow) -> Result<Vec<RunsEnded>> {
        let sql = runs_sql(self.dialect());
        super::on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(w.since).bind(w.step).bind(w.until)
            .fetch_all(pool).await.map_err(q("count the runs that ended")))
    }

    /// Pending tasks per project at the end of each step of `w` (the last step: at `until`),
    /// as changes from step to step (see [`PendingAt`]); their running sum is the count.
    pub async fn pending_over_time(&self, w: StatsWindow) -> Result<Vec<PendingAt>> {
        let sql = pending_sql(self.dialect());
        super::on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(w.since).bind(w.step).bind(w.until)
            .fetch_all(pool).await.map_err(q("count pending tasks over time")))
    }

    /// Reported cost of the runs that ended from `since` to `until` (Unix seconds), per UTC day,
    /// project and agent profile; a task without an agent counts for `default_agent`.
    pub async fn spend_per_day(
        &self,
        since: i64,
        until: i64,
        default_agent: &str,
    ) -> Result<Vec<SpendOn>> {
        let sql = spend_sql(self.dialect());
        super::on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(since).bind(until).bind(default_agent)
            .fetch_all(pool).await.map_err(q("sum the spend per day")))
    }

    /// Percentiles of the durations of the runs that ended from `since` to `until`.
    pub async fn run_durations(&self, since: i64, until: i64) -> Result<Durations> {
        let sql = durations_sql(self.dialect());
        super::on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(since).bind(until)
            .fetch_one(pool).await.map_err(q("measure run durations")))
    }

    /// The `limit` addressees with the most pending tasks now, longest first.
    pub async fn longest_queues(&self, limit: i64) -> Result<Vec<QueueLength>> {
        super::on_pool!(self, pool => sqlx::query_as(
            "SELECT addressee, COUNT(*) AS pending FROM tasks WHERE status = 'pending'
             GROUP BY addressee ORDER BY COUNT(*) DESC, addressee LIMIT $1")
            .bind(limit)
            .fetch_all(pool).await.map_err(q("find the longest queues")))
    }
}

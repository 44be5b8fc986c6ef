//! Persisting decided changes: the one write path of task rows and their events, inside the
//! transaction that read the rows under a lock. Postgres writes a batch in a few set-based
//! statements (a round trip per row would bound dispatch at a few thousand tasks a second);
//! SQLite runs in-process, where a statement per row costs microseconds.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde_json::{json, Value};
use sqlx::types::Json;
use sqlx::{PgConnection, SqliteConnection};

use super::{q, Result, StoreError};
use crate::model::{Change, NewEvent, TaskRow};
use crate::spec::{render_status, StatusSpec};

/// The SQL of each backend where the two differ.
pub(super) trait Dialect: sqlx::Database {
    fn write<'c>(
        conn: &'c mut Self::Connection,
        changes: Vec<Change>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'c, Result<Vec<TaskRow>>>;
    fn append<'c>(
        conn: &'c mut Self::Connection,
        events: &'c [NewEvent],
        now: DateTime<Utc>,
    ) -> BoxFuture<'c, Result<()>>;
}

impl Dialect for sqlx::Postgres {
    fn write<'c>(
        conn: &'c mut PgConnection,
        changes: Vec<Change>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'c, Result<Vec<TaskRow>>> {
        Box::pin(postgres(conn, changes, now))
    }
    fn append<'c>(
        conn: &'c mut PgConnection,
        events: &'c [NewEvent],
        now: DateTime<Utc>,
    ) -> BoxFuture<'c, Result<()>> {
        Box::pin(append_postgres(conn, events, now))
    }
}

impl Dialect for sqlx::Sqlite {
    fn write<'c>(
        conn: &'c mut SqliteConnection,
        changes: Vec<Change>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'c, Result<Vec<TaskRow>>> {
        Box::pin(sqlite(conn, changes, now))
    }
    fn append<'c>(
        conn: &'c mut SqliteConnection,
        events: &'c [NewEvent],
        now: DateTime<Utc>,
    ) -> BoxFuture<'c, Result<()>> {
        Box::pin(append_sqlite(conn, events, now))
    }
}

/// Persists `changes` in the transaction `tx` (which read their rows under its lock). Returns
/// the rows as written, new ones with their ids.
pub(super) async fn changes<DB: Dialect>(
    tx: &mut sqlx::Transaction<'_, DB>,
    changes: Vec<Change>,
    now: DateTime<Utc>,
) -> Result<Vec<TaskRow>> {
    DB::write(&mut **tx, changes, now).await
}

/// Appends `events` in the transaction `tx`.
pub(super) async fn events<DB: Dialect>(
    tx: &mut sqlx::Transaction<'_, DB>,
    events: &[NewEvent],
    now: DateTime<Utc>,
) -> Result<()> {
    DB::append(&mut **tx, events, now).await
}

/// A timestamp as Postgres stores it: microseconds, cut (not rounded) as when it is bound as a
/// parameter, so a time written and the same time compared later agree.
fn ts(t: Option<DateTime<Utc>>) -> Option<String> {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

/// The columns a transition may change without the task file changing.
fn state_json(r: &TaskRow) -> Value {
    json!({
        "id": r.id, "addressee": r.addressee, "status": r.status.as_str(), "priority": r.priority,
        "generation": r.generation, "attempts": r.attempts, "infra_failures": r.infra_failures,
        "requeues": r.requeues, "cancel_requested": r.cancel_requested, "file_deleted": r.file_deleted,
        "run_spec_hash": r.run_spec_hash, "not_before": ts(r.not_before), "result": r.result,
        "report_due": r.report_due, "updated_at": ts(Some(r.updated_at)), "started_at": ts(r.started_at),
        "completed_at": ts(r.completed_at),
        "context": (!r.context.is_empty()).then_some(&r.context),
    })
}

/// Every column, for rows whose task file changed and for new rows.
fn full_json(r: &TaskRow) -> Value {
    let mut v = state_json(r);
    let extra = json!({
        "project": r.project, "key": r.key, "origin": r.origin.as_str(), "prompt": r.prompt,
        "spec": r.spec, "spec_hash": r.spec_hash, "source_commit": r.source_commit, "kind": r.kind,
        "epic": r.epic, "agent": r.agent, "branch": r.branch, "base": r.base,
        "created_by": r.created_by, "max_attempts": r.max_attempts, "timeout_secs": r.timeout_secs,
        "created_at": ts(Some(r.created_at)),
    });
    if let (Some(v), Value::Object(extra)) = (v.as_object_mut(), extra) {
        v.extend(extra);
    }
    v
}

const STATE_RECORD: &str = "id bigint, addressee text, status text, priority int, generation int, attempts int, \
    infra_failures int, requeues int, cancel_requested bool, file_deleted bool, run_spec_hash text, \
    not_before timestamptz, result jsonb, report_due bool, updated_at timestamptz, started_at timestamptz, \
    completed_at timestamptz, context jsonb";

const SPEC_RECORD: &str =
    "project text, key text, origin text, prompt text, spec jsonb, spec_hash text, \
    source_commit text, kind text, epic text, agent text, branch text, base text, created_by text, \
    max_attempts int, timeout_secs bigint, created_at timestamptz";

const STATE_SET: &str = "addressee = x.addressee, status = x.status, priority = x.priority, \
    generation = x.generation, attempts = x.attempts, infra_failures = x.infra_failures, \
    requeues = x.requeues, cancel_requested = x.cancel_requested, file_deleted = x.file_deleted, \
    run_spec_hash = x.run_spec_hash, not_before = x.not_before, result = x.result, \
    report_due = x.report_due, updated_at = x.updated_at, started_at = x.started_at, \
    completed_at = x.completed_at, context = x.context";

const SPEC_SET: &str = "prompt = x.prompt, spec = x.spec, spec_hash = x.spec_hash, \
    source_commit = x.source_commit, kind = x.kind, epic = x.epic, agent = x.agent, branch = x.branch, \
    base = x.base, created_by = x.created_by, max_attempts = x.max_attempts, timeout_secs = x.timeout_secs";

const INSERT_COLUMNS: &str = "project, key, origin, addressee, status, prompt, spec, spec_hash, source_commit, \
    kind, epic, agent, branch, base, created_by, priority, max_attempts, timeout_secs, generation, attempts, \
    infra_failures, requeues, cancel_requested, file_deleted, run_spec_hash, not_before, result, report_due, \
    created_at, updated_at, started_at, completed_at, context";

/// Keeps a status file owed for a generation its task has left (the newest per task wins).
const OWE: &str = "INSERT INTO status_files (project, key, task_id, generation, body, owed_at)
    SELECT project, $1, $2, $3, $4, $5 FROM tasks WHERE id = $2
    ON CONFLICT (project, key) DO UPDATE SET task_id = $2, generation = $3, body = $4, owed_at = $5";

/// Splits changes into what each statement writes; returns the rows as written, in order.
struct Batch {
    inserts: Vec<TaskRow>,
    updates: Vec<TaskRow>,
    spec_updates: Vec<TaskRow>,
    deletes: Vec<i64>,
    events: Vec<NewEvent>,
    /// Status files still owed for a generation a task has left: (task id, the file).
    owed: Vec<(i64, StatusSpec)>,
}

impl Batch {
    fn of(changes: Vec<Change>) -> Self {
        let mut b = Batch {
            inserts: Vec::new(),
            updates: Vec::new(),
            spec_updates: Vec::new(),
            deletes: Vec::new(),
            events: Vec::new(),
            owed: Vec::new(),
        };
        for c in changes {
            match c {
                Change::None => {}
                Change::Insert { row, events } => {
                    b.inserts.push(row);
                    b.events.extend(events);
                }
                Change::Update {
                    row,
                    spec,
                    events,
                    owed,
                } => {
                    if let Some(file) = owed {
                        b.owed.push((row.id, file));
                    }
                    if spec {
                        b.spec_updates.push(row);
                    } else {
                        b.updates.push(row);
                    }
                    b.events.extend(events);
                }
                Change::Delete { id, events } => {
                    b.deletes.push(id);
                    b.events.extend(events);
                }
            }
        }
        b
    }

    /// Gives new rows the ids and incarnations the database assigned, and their events the ids.
    fn assign_ids(&mut self, ids: &HashMap<(String, String), (i64, String)>) -> Result<()> {
        for row in &mut self.inserts {
            let (id, incarnation) = ids
                .get(&(row.project.clone(), row.key.clone()))
                .ok_or_else(|| StoreError::Raced {
                    project: row.project.clone(),
                    key: row.key.clone(),
                })?;
            row.id = *id;
            row.incarnation = incarnation.clone();
        }
        for e in self.events.iter_mut().filter(|e| e.task_id == 0) {
            e.task_id = ids
                .get(&(e.project.clone(), e.key.clone()))
                .map(|(id, _)| *id)
                .unwrap_or_default();
        }
        Ok(())
    }

    fn written(self) -> Vec<TaskRow> {
        let mut rows = self.inserts;
        rows.extend(self.updates);
        rows.extend(self.spec_updates);
        rows
    }
}

/// Writes `changes` on Postgres. Returns the rows as written (new ones with their ids).
async fn postgres(
    tx: &mut PgConnection,
    changes: Vec<Change>,
    now: DateTime<Utc>,
) -> Result<Vec<TaskRow>> {
    let mut b = Batch::of(changes);
    if !b.inserts.is_empty() {
        let rows: Vec<Value> = b.inserts.iter().map(full_json).collect();
        let sql = format!(
            "INSERT INTO tasks ({INSERT_COLUMNS})
             SELECT {INSERT_COLUMNS} FROM jsonb_to_recordset($1::jsonb) AS x({STATE_RECORD}, {SPEC_RECORD})
             ON CONFLICT (project, key) DO NOTHING RETURNING project, key, id, incarnation"
        );
        let ids: Vec<(String, String, i64, String)> = sqlx::query_as(&sql)
            .bind(Value::Array(rows).to_string())
            .fetch_all(&mut *tx)
            .await
            .map_err(q("create tasks"))?;
        let ids = ids
            .into_iter()
            .map(|(p, k, id, inc)| ((p, k), (id, inc)))
            .collect();
        b.assign_ids(&ids)?;
    }
    type Shape<'a> = (&'a Vec<TaskRow>, fn(&TaskRow) -> Value, String, String);
    let shapes: [Shape; 2] = [
        (
            &b.updates,
            state_json,
            STATE_SET.into(),
            STATE_RECORD.into(),
        ),
        (
            &b.spec_updates,
            full_json,
            format!("{STATE_SET}, {SPEC_SET}"),
            format!("{STATE_RECORD}, {SPEC_RECORD}"),
        ),
    ];
    // The events ride on the last update when nothing else comes between (a claim, a batch
    // of run ends): one round trip fewer for each.
    let mut events_left = !b.events.is_empty();
    let last_update = if b.spec_updates.is_empty() { 0 } else { 1 };
    for (i, (rows, to_json, set, record)) in shapes.into_iter().enumerate() {
        if rows.is_empty() {
            continue;
        }
        let json: Vec<Value> = rows.iter().map(to_json).collect();
        let update = format!(
            "UPDATE tasks t SET {set} FROM jsonb_to_recordset($1::jsonb) AS x({record}) WHERE t.id = x.id"
        );
        if events_left && i == last_update && b.deletes.is_empty() && b.owed.is_empty() {
            events_left = false;
            sqlx::query(&format!(
                "WITH updated AS ({update} RETURNING 1) {}",
                append_events_sql(2, 3)
            ))
            .bind(Value::Array(json).to_string())
            .bind(now)
            .bind(serde_json::to_string(&b.events).unwrap_or_default())
            .execute(&mut *tx)
            .await
            .map_err(q("update tasks and log their events"))?;
            continue;
        }
        sqlx::query(&update)
            .bind(Value::Array(json).to_string())
            .execute(&mut *tx)
            .await
            .map_err(q("update tasks"))?;
    }
    if !b.deletes.is_empty() {
        sqlx::query("DELETE FROM tasks WHERE id = ANY($1)")
            .bind(&b.deletes)
            .execute(&mut *tx)
            .await
            .map_err(q("remove tasks"))?;
    }
    for (task_id, file) in &b.owed {
        sqlx::query(OWE)
            .bind(file.key.as_str())
            .bind(*task_id)
            .bind(file.generation as i64)
            .bind(String::from_utf8_lossy(&render_status(file)).into_owned())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(q("keep an owed status file"))?;
    }
    if events_left {
        append_postgres(tx, &b.events, now).await?;
    }
    Ok(b.written())
}

/// Appends the events given as a JSON array at parameter `events`, at the time at `at`.
fn append_events_sql(at: u8, events: u8) -> String {
    format!(
        "INSERT INTO task_events (task_id, project, key, generation, at, kind, message, data)
         SELECT NULLIF(x.task_id, 0), x.project, x.key, x.generation, ${at}, x.kind, x.message, x.data
         FROM jsonb_to_recordset(${events}::jsonb)
             AS x(task_id bigint, project text, key text, generation int, kind text, message text, data jsonb)"
    )
}

/// Appends events on Postgres, in one statement.
async fn append_postgres(
    tx: &mut PgConnection,
    events: &[NewEvent],
    now: DateTime<Utc>,
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    sqlx::query(&append_events_sql(1, 2))
        .bind(now)
        .bind(serde_json::to_string(events).unwrap_or_default())
        .execute(&mut *tx)
        .await
        .map_err(q("append events"))?;
    Ok(())
}

/// Writes `changes` on SQLite, a statement per row. Returns the rows as written.
async fn sqlite(
    tx: &mut SqliteConnection,
    changes: Vec<Change>,
    now: DateTime<Utc>,
) -> Result<Vec<TaskRow>> {
    let mut b = Batch::of(changes);
    let mut ids = HashMap::new();
    for r in &b.inserts {
        let placeholders: Vec<String> = (1..=33).map(|i| format!("${i}")).collect();
        let sql = format!(
            "INSERT INTO tasks ({INSERT_COLUMNS}, incarnation) VALUES ({}, lower(hex(randomblob(16))))
             ON CONFLICT (project, key) DO NOTHING RETURNING id, incarnation",
            placeholders.join(", ")
        );
        let id: Option<(i64, String)> = sqlx::query_as(&sql)
            .bind(&r.project)
            .bind(&r.key)
            .bind(r.origin.as_str())
            .bind(&r.addressee)
            .bind(r.status.as_str())
            .bind(&r.prompt)
            .bind(Json(&r.spec))
            .bind(&r.spec_hash)
            .bind(&r.source_commit)
            .bind(&r.kind)
            .bind(&r.epic)
            .bind(&r.agent)
            .bind(&r.branch)
            .bind(&r.base)
            .bind(&r.created_by)
            .bind(r.priority)
            .bind(r.max_attempts)
            .bind(r.timeout_secs)
            .bind(r.generation)
            .bind(r.attempts)
            .bind(r.infra_failures)
            .bind(r.requeues)
            .bind(r.cancel_requested)
            .bind(r.file_deleted)
            .bind(&r.run_spec_hash)
            .bind(r.not_before)
            .bind(r.result.as_ref().map(Json))
            .bind(r.report_due)
            .bind(r.created_at)
            .bind(r.updated_at)
            .bind(r.started_at)
            .bind(r.completed_at)
            .bind((!r.context.is_empty()).then_some(Json(&r.context)))
            .fetch_optional(&mut *tx)
            .await
            .map_err(q("create a task"))?;
        if let Some(id) = id {
            ids.insert((r.project.clone(), r.key.clone()), id);
        }
    }
    b.assign_ids(&ids)?;
    for (r, spec) in b
        .updates
        .iter()
        .map(|r| (r, false))
        .chain(b.spec_updates.iter().map(|r| (r, true)))
    {
        let state = "addressee = $2, status = $3, priority = $4, generation = $5, attempts = $6, \
            infra_failures = $7, requeues = $8, cancel_requested = $9, file_deleted = $10, \
            run_spec_hash = $11, not_before = $12, result = $13, report_due = $14, updated_at = $15, \
            started_at = $16, completed_at = $17, context = $18";
        let sql = if spec {
            format!(
                "UPDATE tasks SET {state}, prompt = $19, spec = $20, spec_hash = $21, source_commit = $22, \
                 kind = $23, epic = $24, agent = $25, branch = $26, base = $27, created_by = $28, \
                 max_attempts = $29, timeout_secs = $30 WHERE id = $1"
            )
        } else {
            format!("UPDATE tasks SET {state} WHERE id = $1")
        };
        let mut query = sqlx::query(&sql)
            .bind(r.id)
            .bind(&r.addressee)
            .bind(r.status.as_str())
            .bind(r.priority)
            .bind(r.generation)
            .bind(r.attempts)
            .bind(r.infra_failures)
            .bind(r.requeues)
            .bind(r.cancel_requested)
            .bind(r.file_deleted)
            .bind(&r.run_spec_hash)
            .bind(r.not_before)
            .bind(r.result.as_ref().map(Json))
            .bind(r.report_due)
            .bind(r.updated_at)
            .bind(r.started_at)
            .bind(r.completed_at)
            .bind((!r.context.is_empty()).then_some(Json(&r.context)));
        if spec {
            query = query
                .bind(&r.prompt)
                .bind(Json(&r.spec))
                .bind(&r.spec_hash)
                .bind(&r.source_commit)
                .bind(&r.kind)
                .bind(&r.epic)
                .bind(&r.agent)
                .bind(&r.branch)
                .bind(&r.base)
                .bind(&r.created_by)
                .bind(r.max_attempts)
                .bind(r.timeout_secs);
        }
        query.execute(&mut *tx).await.map_err(q("update a task"))?;
    }
    for id in &b.deletes {
        sqlx::query("DELETE FROM tasks WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(q("remove a task"))?;
    }
    for (task_id, file) in &b.owed {
        sqlx::query(OWE)
            .bind(file.key.as_str())
            .bind(*task_id)
            .bind(file.generation as i64)
            .bind(String::from_utf8_lossy(&render_status(file)).into_owned())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(q("keep an owed status file"))?;
    }
    append_sqlite(tx, &b.events, now).await?;
    Ok(b.written())
}

/// Appends events on SQLite.
async fn append_sqlite(
    tx: &mut SqliteConnection,
    events: &[NewEvent],
    now: DateTime<Utc>,
) -> Result<()> {
    for e in events {
        sqlx::query(
            "INSERT INTO task_events (task_id, project, key, generation, at, kind, message, data)
             VALUES (NULLIF($1, 0), $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(e.task_id)
        .bind(&e.project)
        .bind(&e.key)
        .bind(e.generation)
        .bind(now)
        .bind(e.kind.as_str())
        .bind(&e.message)
        .bind(e.data.as_ref().map(Json))
        .execute(&mut *tx)
        .await
        .map_err(q("append an event"))?;
    }
    Ok(())
}

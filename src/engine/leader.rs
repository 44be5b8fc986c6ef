//! One engine at a time. With Postgres: a session-level advisory lock on a connection of its
//! own, which Postgres releases when that connection dies (the engine crashed, its pod went
//! away). With SQLite: an exclusive `flock` on `<data_dir>/engine.lock`. A second engine waits
//! and takes over when the first is gone. The database invariants (one running task per
//! addressee, serialised claims) hold even if two engines ever overlapped.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::time::Duration;

use sqlx::Connection;
use tokio::sync::watch;

/// The advisory lock key: "swarm" in ASCII.
const LOCK_KEY: i64 = 0x73_77_61_72_6d;
const RETRY: Duration = Duration::from_secs(2);
const CHECK: Duration = Duration::from_secs(5);
/// How long a leader whose lock connection failed tries to take the lock again (a database
/// restart) before it gives up leadership.
const RETAKE_FOR: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("cannot reach the database {url} to take the leader lock")]
    Connect {
        /// Without its password.
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot open the leader lock file {path}")]
    LockFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Held leadership. Dropping it gives leadership up. `lost` turns true if the lock's
/// connection fails: the engine must stop then, as another may have taken over.
pub struct Leader {
    pub lost: watch::Receiver<bool>,
    _hold: Hold,
}

enum Hold {
    Postgres(tokio::task::JoinHandle<()>),
    File {
        _file: File,
        _tx: watch::Sender<bool>,
    },
}

impl Drop for Leader {
    fn drop(&mut self) {
        if let Hold::Postgres(task) = &self._hold {
            task.abort();
        }
    }
}

/// Waits until this engine leads. `on_wait` is called once when another engine leads now.
pub async fn acquire(
    database_url: &str,
    data_dir: &std::path::Path,
    mut on_wait: impl FnMut(),
) -> Result<Leader, LeaderError> {
    let (tx, rx) = watch::channel(false);
    if database_url.starts_with("postgres") {
        let mut waited = false;
        let failed = |source| LeaderError::Connect {
            url: crate::config::redact_url(database_url),
            source,
        };
        loop {
            let mut conn = sqlx::PgConnection::connect(database_url)
                .await
                .map_err(failed)?;
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(LOCK_KEY)
                .fetch_one(&mut conn)
                .await
                .map_err(failed)?;
            if got {
                // Keep the connection (and with it the lock); watch that it stays alive.
                let mut session: Option<i32> = sqlx::query_scalar("SELECT pg_backend_pid()")
                    .fetch_one(&mut conn)
                    .await
                    .ok();
                let url = database_url.to_string();
                let task = tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(CHECK).await;
                        let alive =
                            tokio::time::timeout(CHECK, sqlx::query("SELECT 1").execute(&mut conn))
                                .await;
                        if matches!(alive, Ok(Ok(_))) {
                            continue;
                        }
                        // The lock went with its connection. Unless another engine took it
                        // meanwhile, this one still leads once it holds it again.
                        match retake(&url, session).await {
                            Some((c, pid)) => {
                                conn = c;
                                session = pid;
                            }
                            None => {
                                let _ = tx.send(true);
                                return;
                            }
                        }
                    }
                });
                return Ok(Leader {
                    lost: rx,
                    _hold: Hold::Postgres(task),
                });
            }
            let _ = conn.close().await;
            if !waited {
                waited = true;
                on_wait();
            }
            tokio::time::sleep(RETRY).await;
        }
    }
    std::fs::create_dir_all(data_dir).map_err(|source| LeaderError::LockFile {
        path: data_dir.display().to_string(),
        source,
    })?;
    let path = data_dir.join("engine.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| LeaderError::LockFile {
            path: path.display().to_string(),
            source,
        })?;
    let mut waited = false;
    loop {
        // SAFETY: flock on our own descriptor.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(Leader {
                lost: rx,
                _hold: Hold::File {
                    _file: file,
                    _tx: tx,
                },
            });
        }
        if !waited {
            waited = true;
            on_wait();
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// After the leader lock's connection failed (a database restart, a pause, a network blip):
/// takes the lock again on a new connection, trying for up to [`RETAKE_FOR`]. When the lock is
/// still held by this engine's own old session (`old`, its backend pid: the server has not
/// noticed yet that the connection is gone), that session is ended, and the lock taken once
/// the server has released it. `None` when another engine holds it or the database stays
/// unreachable. Returns the new connection and its backend pid.
async fn retake(database_url: &str, old: Option<i32>) -> Option<(sqlx::PgConnection, Option<i32>)> {
    tracing::warn!("the leader lock's connection failed; taking the lock again");
    let until = tokio::time::Instant::now() + RETAKE_FOR;
    loop {
        if let Ok(mut conn) = sqlx::PgConnection::connect(database_url).await {
            match sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
                .bind(LOCK_KEY)
                .fetch_one(&mut conn)
                .await
            {
                Ok(true) => {
                    tracing::info!("the leader lock is held again");
                    let pid = sqlx::query_scalar("SELECT pg_backend_pid()")
                        .fetch_one(&mut conn)
                        .await
                        .ok();
                    return Some((conn, pid));
                }
                Ok(false) => match lock_holder(&mut conn).await {
                    Some(holder) if Some(holder) == old => {
                        tracing::warn!(
                            backend = holder,
                            "the leader lock is still held by this engine's old session; ending it"
                        );
                        let _ = sqlx::query("SELECT pg_terminate_backend($1)")
                            .bind(holder)
                            .execute(&mut conn)
                            .await;
                    }
                    // Released meanwhile: the next try takes it.
                    None => {}
                    Some(_) => {
                        tracing::error!("another engine took the leader lock");
                        return None;
                    }
                },
                Err(_) => {}
            }
        }
        if tokio::time::Instant::now() >= until {
            tracing::error!(
                "cannot take the leader lock again within {}s",
                RETAKE_FOR.as_secs()
            );
            return None;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The backend pid of the session that holds the leader lock of this database, if any. A
/// bigint advisory lock shows in `pg_locks` as its high and low 32 bits (`classid`, `objid`)
/// with `objsubid` 1; advisory locks are per database, and other databases of the server (other
/// installations) hold the same key.
async fn lock_holder(conn: &mut sqlx::PgConnection) -> Option<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND classid = ($1 >> 32)::oid AND objid = ($1 & 4294967295)::oid AND objsubid = 1",
    )
    .bind(LOCK_KEY)
    .fetch_optional(conn)
    .await
    .ok()
    .flatten()
}

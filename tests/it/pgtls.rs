//! Postgres over TLS: a throwaway CA and a server certificate naming only `localhost`, a Postgres
//! cluster of the tests' own (`ssl = on`, TCP over TLS only), and the store, the leader lock,
//! `LISTEN` and `swarm migrate` connecting with each `sslmode`; wrong CAs, wrong hosts and plain
//! connections fail with errors that say why and name the URL without its password.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use coding_swarm::config::redact_url;
use coding_swarm::display::error_chain;
use coding_swarm::engine::leader;
use coding_swarm::store::Store;
use sqlx::Connection;

use crate::support::SWARM;

/// In every URL below; the cluster trusts everyone, so it is never checked, but it must never
/// be shown.
const PASSWORD: &str = "pw-never-shown-7Qx";

/// A Postgres cluster in a temporary directory, stopped when the last test using it is done.
struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// Runs the server's tools as `postgres` (initdb refuses root).
    as_postgres: bool,
}

impl Cluster {
    /// The cluster of the tests running now: started by the first, stopped after the last.
    fn shared() -> Arc<Cluster> {
        static SHARED: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cluster) = shared.upgrade() {
            return cluster;
        }
        let cluster = Arc::new(Cluster::start());
        *shared = Arc::downgrade(&cluster);
        cluster
    }

    fn start() -> Cluster {
        let bin = server_bin();
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: geteuid has no preconditions and cannot fail.
        let as_postgres = unsafe { libc::geteuid() } == 0;
        let cluster = Cluster {
            port: free_port(),
            bin,
            as_postgres,
            dir,
        };
        cluster.make_certificates();
        let d = cluster.dir.path();
        if as_postgres {
            run(Command::new("chown").args(["-R", "postgres:"]).arg(d));
        }
        run(cluster
            .tool("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(d.join("data")));
        let conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{dir}'\n\
             ssl = on\nssl_cert_file = '{dir}/server.pem'\nssl_key_file = '{dir}/server.key'\n\
             fsync = off\n",
            port = cluster.port,
            dir = d.display()
        );
        append(&d.join("data/postgresql.conf"), &conf);
        // TCP only over TLS: a plain connection finds no entry.
        std::fs::write(
            d.join("data/pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        if as_postgres {
            run(Command::new("chown").args(["-R", "postgres:"]).arg(d));
        }
        run(cluster
            .tool("pg_ctl")
            .args(["-w", "-t", "120", "-l"])
            .arg(d.join("server.log"))
            .arg("-D")
            .arg(d.join("data"))
            .arg("start"));
        cluster
    }

    /// A throwaway CA, a server certificate it signs for `localhost` only, and another CA
    /// that signed nothing here.
    fn make_certificates(&self) {
        let d = self.dir.path();
        let openssl = |args: &[&str]| run(Command::new("openssl").args(args).current_dir(d));
        for ca in ["ca", "wrong-ca"] {
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=swarm test {ca}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
            ]);
        }
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName = DNS:localhost\nbasicConstraints = critical,CA:FALSE\n\
             keyUsage = critical,digitalSignature\nextendedKeyUsage = serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "1",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ]);
        // Postgres wants its key private.
        std::fs::set_permissions(
            d.join("server.key"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
    }

    /// A command of the server's tools, as `postgres` when the tests run as root.
    fn tool(&self, name: &str) -> Command {
        let path = self.bin.join(name);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn wrong_ca(&self) -> PathBuf {
        self.dir.path().join("wrong-ca.pem")
    }

    /// `postgres://postgres:PASSWORD@host:port/db?query`.
    fn url(&self, host: &str, db: &str, query: &str) -> String {
        let url = format!("postgres://postgres:{PASSWORD}@{host}:{}/{db}", self.port);
        if query.is_empty() {
            url
        } else {
            format!("{url}?{query}")
        }
    }

    /// A new database, over TLS.
    async fn database(&self, name: &str) -> String {
        let mut admin =
            sqlx::PgConnection::connect(&self.url("127.0.0.1", "postgres", "sslmode=require"))
                .await
                .unwrap();
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        name.to_string()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .tool("pg_ctl")
            .args(["-w", "-m", "immediate", "-D"])
            .arg(self.dir.path().join("data"))
            .arg("stop")
            .output();
    }
}

/// The directory of initdb and pg_ctl: `SWARM_TEST_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian's layout).
fn server_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("SWARM_TEST_PG_BIN") {
        return dir.into();
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "these tests run a Postgres cluster of their own and need its server binaries \
             (initdb, pg_ctl): install Debian's postgresql package (.ci/run does), or set \
             SWARM_TEST_PG_BIN to their directory"
        )
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::File::options().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// One value from the cluster, asked over TLS as the admin.
async fn ask<T>(cluster: &Cluster, sql: &str, db: &str) -> T
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
{
    let mut admin =
        sqlx::PgConnection::connect(&cluster.url("127.0.0.1", "postgres", "sslmode=require"))
            .await
            .unwrap();
    sqlx::query_scalar(sql)
        .bind(db)
        .fetch_one(&mut admin)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sslmode_carries_the_store_the_leader_lock_and_listen() {
    let pg = Cluster::shared();
    let ca = pg.ca().display().to_string();
    for (i, (mode, host, query)) in [
        // No sslmode: sqlx prefers TLS when the server offers it.
        ("the default", "127.0.0.1", String::new()),
        ("require", "127.0.0.1", "sslmode=require".to_string()),
        (
            "verify-ca",
            "127.0.0.1",
            format!("sslmode=verify-ca&sslrootcert={ca}"),
        ),
        (
            "verify-full",
            "localhost",
            format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let db = pg.database(&format!("tls_modes_{i}")).await;
        let url = pg.url(host, &db, &query);
        // The store connects and migrates.
        let store = Store::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{mode}: {}", error_chain(&e)));
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        let tls: bool =
            sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        assert!(tls, "{mode}: the connection is encrypted");
        let tables: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'tasks'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(tables, 1, "{mode}: migrated");

        // The leader lock, on its own connection, over TLS.
        let data = tempfile::tempdir().unwrap();
        let leader = leader::acquire(&url, data.path(), || {})
            .await
            .unwrap_or_else(|e| panic!("{mode}: {}", error_chain(&e)));
        let held: Option<bool> = ask(
            &pg,
            "SELECT bool_and(s.ssl) FROM pg_locks l JOIN pg_stat_ssl s USING (pid) \
             WHERE l.locktype = 'advisory' AND l.granted \
             AND l.database = (SELECT oid FROM pg_database WHERE datname = $1)",
            &db,
        )
        .await;
        assert_eq!(held, Some(true), "{mode}: the lock is held over TLS");

        // LISTEN, on its own connection, over TLS: a NOTIFY from elsewhere wakes the store.
        let wake = store.wake_handle();
        let listening = tokio::spawn({
            let store = store.clone();
            async move { store.listen().await }
        });
        let started = Instant::now();
        loop {
            let listeners: Option<bool> = ask(
                &pg,
                "SELECT bool_and(s.ssl) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
                 WHERE a.datname = $1 AND a.query ILIKE 'LISTEN%'",
                &db,
            )
            .await;
            if listeners == Some(true) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30) && !listening.is_finished(),
                "{mode}: the store does not listen"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sqlx::query("NOTIFY swarm_tasks")
            .execute(&mut conn)
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(30), wake.notified())
            .await
            .unwrap_or_else(|_| panic!("{mode}: the notification did not arrive"));
        listening.abort();
        drop(leader);
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_a_wrong_host_or_no_tls_fails_clearly() {
    let pg = Cluster::shared();
    let db = pg.database("tls_failures").await;
    let ca = pg.ca().display().to_string();
    let wrong = pg.wrong_ca().display().to_string();
    for (what, host, query, says) in [
        (
            "a CA that did not sign the server's certificate",
            "localhost",
            format!("sslmode=verify-full&sslrootcert={wrong}"),
            "certificate verify failed",
        ),
        (
            "verify-ca with that CA",
            "127.0.0.1",
            format!("sslmode=verify-ca&sslrootcert={wrong}"),
            "certificate verify failed",
        ),
        (
            "no sslrootcert: the system's trust store does not know the CA",
            "localhost",
            "sslmode=verify-full".to_string(),
            "certificate verify failed",
        ),
        (
            "a host the certificate does not name",
            "127.0.0.1",
            format!("sslmode=verify-full&sslrootcert={ca}"),
            "mismatch",
        ),
        (
            "no TLS where the server requires it",
            "127.0.0.1",
            "sslmode=disable".to_string(),
            "no encryption",
        ),
    ] {
        let url = pg.url(host, &db, &query);
        let shown = redact_url(&url);
        assert!(!shown.contains(PASSWORD));
        let store = Store::connect(&url).await.map(|_| ()).unwrap_err();
        let leader = leader::acquire(&url, Path::new("/nonexistent"), || {})
            .await
            .map(|_| ())
            .unwrap_err();
        for (who, error) in [
            ("store", error_chain(&store)),
            ("leader", error_chain(&leader)),
        ] {
            assert!(
                error.contains(says) && error.contains(&shown) && !error.contains(PASSWORD),
                "{what} ({who}): {error}"
            );
            assert_eq!(error.matches(says).count(), 1, "said once: {error}");
            if says != "no encryption" {
                assert!(error.contains("TLS"), "{what} ({who}): {error}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_migrate_over_verify_full() {
    let pg = Cluster::shared();
    let db = pg.database("tls_cli").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("swarm.toml"), "data_dir = \"d\"\n").unwrap();
    let migrate = |query: String, env: &[(&str, &Path)]| {
        let url = pg.url("localhost", &db, &query);
        let out = Command::new(SWARM)
            .arg("migrate")
            .current_dir(dir.path())
            .env_remove("SWARM_CONFIG")
            .env("SWARM_DATABASE_URL", &url)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!said.contains(PASSWORD), "{said}");
        (out.status.success(), said, redact_url(&url))
    };
    let ca = pg.ca();
    let (ok, said, shown) = migrate(
        format!("sslmode=verify-full&sslrootcert={}", ca.display()),
        &[],
    );
    assert!(ok, "{said}");
    assert!(
        said.contains("database schema is up to date") && said.contains(&shown),
        "{said}"
    );
    // The system's trust store, as `SSL_CERT_FILE` names it, serves when sslrootcert is not set.
    let (ok, said, _) = migrate("sslmode=verify-full".into(), &[("SSL_CERT_FILE", &ca)]);
    assert!(ok, "{said}");
    // sslrootcert adds to the system's trust store; it does not replace it.
    let (ok, said, _) = migrate(
        format!(
            "sslmode=verify-full&sslrootcert={}",
            pg.wrong_ca().display()
        ),
        &[("SSL_CERT_FILE", &ca)],
    );
    assert!(ok, "{said}");
    let (ok, said, shown) = migrate(
        format!(
            "sslmode=verify-full&sslrootcert={}",
            pg.wrong_ca().display()
        ),
        &[],
    );
    assert!(
        !ok && said.contains("certificate verify failed") && said.contains(&shown),
        "{said}"
    );
    assert_eq!(
        said.matches("certificate verify failed").count(),
        1,
        "{said}"
    );
}

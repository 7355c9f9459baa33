//! Test engines: SQLite in a temporary directory, and a throwaway PostgreSQL server started by
//! the tests themselves (Debian's `postgresql` package, `/usr/lib/postgresql/<v>/bin`).
//!
//! - One shared server per test binary ([`shared`]), a database per test; it is stopped at exit
//!   (an `atexit` handler) and, should the binary be killed, by a watchdog process that waits
//!   for the binary to go. A test that stops its server starts its own ([`PgServer::start`]),
//!   stopped and removed on drop (also when the test panics).
//! - As root (PostgreSQL refuses to run as root), `initdb` and `pg_ctl` run as `nobody` through
//!   `su nobody -s /bin/sh -c …` on a temporary directory owned by nobody.
//! - Missing binaries FAIL the test with "apt-get install postgresql": never a silent skip.
//! - The server listens on 127.0.0.1 on a free port and on a Unix socket in its directory, with
//!   `fsync=off` (the tests check transactions, not the disk; start-up and commits are faster).

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use defender_fleet::store::{Engine, Settings};
use sqlx::Connection;

/// The newest `/usr/lib/postgresql/<v>/bin` with `initdb` and `pg_ctl`.
fn pg_bin() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((v, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL server binaries not found (/usr/lib/postgresql/<version>/bin/initdb): \
             the store tests need them: apt-get install postgresql"
        ),
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A throwaway PostgreSQL server.
pub struct PgServer {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    as_nobody: bool,
    watchdog: Mutex<Option<Child>>,
}

impl PgServer {
    /// initdb + start; panics (failing the test) with the server's log when it cannot.
    pub fn start() -> PgServer {
        let bin = pg_bin();
        let as_nobody = is_root();
        let dir = tempfile::Builder::new()
            .prefix("fleet-pg-")
            .tempdir()
            .expect("temporary directory")
            .keep();
        if as_nobody {
            let out = Command::new("chown")
                .arg("nobody")
                .arg(&dir)
                .output()
                .expect("chown");
            assert!(
                out.status.success(),
                "chown nobody {}: {out:?}",
                dir.display()
            );
        }
        let mut server = PgServer {
            dir,
            bin,
            port: 0,
            as_nobody,
            watchdog: Mutex::new(None),
        };
        server.run(&format!(
            "{} -D {} -U postgres -A trust -E UTF8 --no-sync > {}/initdb.log 2>&1",
            server.tool("initdb"),
            server.data(),
            server.dir.display()
        ));
        server.start_watchdog();
        let mut last = String::new();
        for _ in 0..5 {
            server.port = free_port();
            match server.try_pg_ctl_start() {
                Ok(()) => return server,
                Err(e) => last = e,
            }
        }
        panic!("PostgreSQL did not start: {last}");
    }

    fn tool(&self, name: &str) -> String {
        self.bin.join(name).display().to_string()
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// Runs a shell command as the server's user; Err with its output when it fails.
    fn sh(&self, cmd: &str) -> Result<(), String> {
        let out = if self.as_nobody {
            Command::new("su")
                .args(["nobody", "-s", "/bin/sh", "-c", cmd])
                .stdin(Stdio::null())
                .output()
        } else {
            Command::new("/bin/sh")
                .args(["-c", cmd])
                .stdin(Stdio::null())
                .output()
        }
        .map_err(|e| format!("{cmd}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
            Err(format!(
                "{cmd}: {}\n{}{}\nserver log:\n{log}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn run(&self, cmd: &str) {
        if let Err(e) = self.sh(cmd) {
            panic!("{e}");
        }
    }

    fn try_pg_ctl_start(&self) -> Result<(), String> {
        self.sh(&format!(
            "{} -D {} -o '-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c max_connections=200' -l {}/log -w -t 60 start > /dev/null",
            self.tool("pg_ctl"),
            self.data(),
            self.port,
            self.dir.display(),
            self.dir.display()
        ))
    }

    /// A process that stops the server and removes its directory once this test binary is
    /// gone, however it went (kill -9 included). Killed by a normal teardown.
    fn start_watchdog(&self) {
        let me = std::process::id();
        let stop = self.stop_cmd("immediate");
        let cleanup = if self.as_nobody {
            format!("su nobody -s /bin/sh -c '{stop}'")
        } else {
            stop
        };
        let script = format!(
            "while [ -d /proc/{me} ]; do sleep 1; done; {cleanup} > /dev/null 2>&1; rm -rf {}",
            self.dir.display()
        );
        let child = Command::new("/bin/sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("watchdog");
        *self.watchdog.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
    }

    fn stop_cmd(&self, mode: &str) -> String {
        format!(
            "{} -D {} -m {mode} -w -t 60 stop",
            self.tool("pg_ctl"),
            self.data()
        )
    }

    /// Stops the server (fast shutdown: open sessions are ended).
    pub fn stop(&self) {
        self.run(&format!("{} > /dev/null", self.stop_cmd("fast")));
    }

    /// Starts it again on the same port and data.
    pub fn restart(&self) {
        if let Err(e) = self.try_pg_ctl_start() {
            panic!("PostgreSQL did not restart: {e}");
        }
    }

    /// The server's URL for database `db` (over TCP on the loopback).
    pub fn url(&self, db: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A new empty database; its URL.
    pub async fn create_database(&self, name: &str) -> String {
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .expect("connect to the test server");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("CREATE DATABASE");
        let _ = conn.close().await;
        self.url(name)
    }

    fn teardown(&self) {
        let _ = self.sh(&format!("{} > /dev/null 2>&1", self.stop_cmd("immediate")));
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(mut w) = self
            .watchdog
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.teardown();
    }
}

static SHARED: OnceLock<PgServer> = OnceLock::new();

extern "C" fn teardown_shared() {
    if let Some(s) = SHARED.get() {
        s.teardown();
    }
}

/// The server shared by the tests of this binary (started on first use).
pub fn shared() -> &'static PgServer {
    SHARED.get_or_init(|| {
        let s = PgServer::start();
        // SAFETY: registers a plain extern "C" function; it runs once at process exit.
        unsafe {
            libc::atexit(teardown_shared);
        }
        s
    })
}

/// A unique database name for a test.
pub fn db_name(test: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let clean: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    format!("t{}_{clean}", N.fetch_add(1, Ordering::Relaxed))
}

/// Where a test's store lives; keeps the SQLite directory alive.
pub struct TestEngine {
    /// Settings to open (and reopen) the store with.
    pub settings: Settings,
    /// "sqlite" or "postgres".
    pub name: &'static str,
    _dir: Option<tempfile::TempDir>,
}

/// Fast-failing settings for tests (a down database answers within 2 s).
fn test_settings(engine: Engine) -> Settings {
    let mut s = Settings::new(engine);
    s.acquire_timeout = std::time::Duration::from_secs(2);
    s
}

/// SQLite in a fresh temporary directory.
pub fn sqlite() -> TestEngine {
    let dir = tempfile::tempdir().expect("temporary directory");
    TestEngine {
        settings: test_settings(Engine::sqlite_in(dir.path())),
        name: "sqlite",
        _dir: Some(dir),
    }
}

/// A fresh database on the shared PostgreSQL server.
pub async fn postgres(test: &str) -> TestEngine {
    let url = shared().create_database(&db_name(test)).await;
    TestEngine {
        settings: test_settings(Engine::Postgres { url }),
        name: "postgres",
        _dir: None,
    }
}

/// A fresh database on a given server.
pub async fn postgres_on(server: &PgServer, test: &str) -> TestEngine {
    let url = server.create_database(&db_name(test)).await;
    TestEngine {
        settings: test_settings(Engine::Postgres { url }),
        name: "postgres",
        _dir: None,
    }
}

/// The SQLite file of an engine, if any.
pub fn sqlite_path(e: &TestEngine) -> Option<&Path> {
    match &e.settings.engine {
        Engine::Sqlite { path } => Some(path),
        Engine::Postgres { .. } => None,
    }
}
// The agent's test certificates (rcgen, made at test time), not a copy: one file serves both
// test crates. Not every test binary of this crate uses every helper in it.
#[allow(dead_code)]
#[path = "../../../tests/integration/support/certs.rs"]
pub mod certs;
pub mod mosquitto;
pub mod mqtt;
pub mod procs;
pub mod sim;
pub mod snapshot;

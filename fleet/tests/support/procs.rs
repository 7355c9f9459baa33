//! The processes of the end-to-end tests: `defender-fleet serve` instances (config written
//! for a [`TestEngine`]), real `defender-agent` daemons (built once into this workspace's
//! target), and the Python reference agent (from the test venv of `tests/run.sh`). Each one's
//! stderr/stdout goes to a log file; killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use defender_fleet::store::Engine;

use super::certs::Pki;
use super::TestEngine;

/// The service binary.
pub const FLEET: &str = env!("CARGO_BIN_EXE_defender-fleet");

/// The agent binary, built once (`cargo build -p defender-agent`) into this workspace's target.
pub fn agent_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "-p", "defender-agent", "--bin", "defender-agent"])
                .current_dir(&root);
            // Not the variables cargo set for this test (CARGO_MANIFEST_DIR, CARGO_PKG_*, …):
            // ring's build script is fingerprinted with CARGO_MANIFEST_DIR, so inheriting it
            // made this build and the next `cargo test` rebuild ring, rustls, rumqttc and the
            // agent in turn (20–50 s each time).
            for (k, _) in std::env::vars_os() {
                let k = k.to_string_lossy().into_owned();
                if [
                    "CARGO_MANIFEST_",
                    "CARGO_PKG_",
                    "CARGO_CRATE_",
                    "CARGO_BIN_EXE_",
                    "CARGO_PRIMARY_",
                ]
                .iter()
                .any(|p| k.starts_with(p))
                {
                    cmd.env_remove(k);
                }
            }
            let status = cmd.status().expect("run cargo build -p defender-agent");
            assert!(status.success(), "cargo build -p defender-agent failed");
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target"));
            target.join("debug").join("defender-agent")
        })
        .clone()
}

/// The Python venv with the reference agent (PyPI `AWSIoTDeviceDefenderAgentSDK`), boto3,
/// awscli and paho-mqtt: `$DEFENDER_TEST_VENV` (set by `tests/run.sh`), else `target/test-venv`
/// when it exists. Missing: the test FAILS saying how to make it.
pub fn python_venv() -> PathBuf {
    let venv = std::env::var_os("DEFENDER_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-venv"));
    let module = "AWSIoTDeviceDefenderAgentSDK";
    let ok = venv.join("bin/python").is_file()
        && Command::new(venv.join("bin/python"))
            .args(["-c", &format!("import {module}, paho.mqtt, boto3")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the Python test venv is missing or incomplete at {} (DEFENDER_TEST_VENV): run \
         tests/run.sh, which makes it, or: apt-get install -y python3-venv && python3 -m venv {0} \
         && {0}/bin/pip install boto3 awscli paho-mqtt {module}",
        venv.display()
    );
    venv
}

/// A child process with its output in a file; killed on drop.
pub struct Proc {
    /// The process.
    pub child: Child,
    /// Its log (stderr, and stdout when asked).
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stderr in `log` (stdout discarded).
    pub fn start(cmd: &mut Command, log: PathBuf) -> Proc {
        let f = std::fs::File::create(&log).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .expect("spawn");
        Proc { child, log }
    }

    /// Starts `cmd` with stdout and stderr in `log`.
    pub fn start_both(cmd: &mut Command, log: PathBuf) -> Proc {
        let f = std::fs::File::create(&log).expect("log file");
        let g = f.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f)
            .stderr(g)
            .spawn()
            .expect("spawn");
        Proc { child, log }
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) for `needle` in the log; fails the test with the log.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{needle:?} not logged within {timeout:?}:\n{}", self.log());
    }

    /// SIGTERM and the exit code (20 s at most).
    pub fn terminate(&mut self) -> Option<i32> {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no exit within 20 s of SIGTERM:\n{}", self.log());
    }

    /// SIGKILL (kill -9), reaped.
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// Sends `sig` (SIGHUP for a reload, …).
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid (not reaped yet: we hold the Child).
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, sig);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How an instance reaches the broker.
pub enum Broker<'a> {
    /// Plain MQTT on 127.0.0.1.
    Plain(u16),
    /// Mutual TLS to `localhost` with a client certificate of the PKI (CN = the client id).
    MutualTls(u16, &'a Pki),
}

impl Broker<'_> {
    /// The `[mqtt]` keys for `client_id` (a fresh client certificate for TLS).
    pub fn mqtt_toml(&self, client_id: &str) -> String {
        match self {
            Broker::Plain(port) => {
                format!("endpoint = \"127.0.0.1\"\nport = {port}\ntls = false\n")
            }
            Broker::MutualTls(port, pki) => {
                let c = pki.client(client_id);
                format!(
                    "endpoint = \"localhost\"\nport = {port}\ntls = true\nca_file = {:?}\n\
                     cert_file = {:?}\nkey_file = {:?}\n",
                    pki.ca_file().display().to_string(),
                    c.cert.display().to_string(),
                    c.key.display().to_string()
                )
            }
        }
    }
}

/// Writes an instance's config into `dir` (`<client_id>.toml`) for engine `e`, the profiles in
/// `profiles`, the extra lines of `[mqtt]`, `[ingest]` and `[detect]`, and checks it with
/// `check-config`.
pub fn fleet_config(
    dir: &Path,
    e: &TestEngine,
    broker: &Broker<'_>,
    client_id: &str,
    profiles: &Path,
    extra: [&str; 3],
) -> PathBuf {
    let (state_dir, store_toml) = match &e.settings.engine {
        Engine::Sqlite { path } => (
            path.parent()
                .expect("the SQLite file's directory")
                .to_path_buf(),
            "engine = \"sqlite\"".to_owned(),
        ),
        Engine::Postgres { url } => (
            dir.join(format!("state-{client_id}")),
            format!("engine = \"postgres\"\nurl = {url:?}"),
        ),
    };
    let [mqtt, ingest, detect] = extra;
    let config = dir.join(format!("{client_id}.toml"));
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\n[mqtt]\n{}client_id = \"{client_id}\"\nreconnect_max_secs = 1\n\
             {mqtt}\n[ingest]\n{ingest}\n[store]\n{store_toml}\n\
             [detect]\nprofiles = [{:?}]\ndimensions = []\ncustom_metrics = []\n{detect}\n",
            state_dir.display().to_string(),
            broker.mqtt_toml(client_id),
            profiles.display().to_string()
        ),
    )
    .expect("write the fleet config");
    let out = Command::new(FLEET)
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .expect("run defender-fleet check-config");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    config
}

/// Starts `defender-fleet serve --config <config>` (log `<config>.log`) and waits until it
/// is subscribed.
pub fn start_fleet(config: &Path) -> Proc {
    let p = Proc::start(
        Command::new(FLEET).args(["serve", "--config"]).arg(config),
        config.with_extension("log"),
    );
    p.wait_log("Subscribed.", Duration::from_secs(30));
    // Both SUBACKs (json, cbor) come together.
    std::thread::sleep(Duration::from_millis(200));
    p
}

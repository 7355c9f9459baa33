//! A real mosquitto broker per test: generated config, free loopback port, mutual TLS with
//! generated certificates, optional ACL; stopped on drop, restartable on the same port.
//!
//! ```ignore
//! let pki = Pki::new();
//! let mut broker = Mosquitto::start(MosquittoOptions::mutual_tls(&pki));
//! // … connect to ("localhost", broker.port()) with pki.ca_file() and pki.client("dev1") …
//! broker.stop();      // outage
//! broker.restart();   // same port
//! assert!(broker.wait_for_log("Received DISCONNECT from dev1", Duration::from_secs(5)));
//! ```
//! The broker's stderr (`log_type all`) goes to a file; [`Mosquitto::log`] reads it, and a
//! failed start panics with it. A missing `mosquitto` binary is a test failure, never a skip.

use std::fs::{self, File};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::certs::Pki;

/// How long a start may take before the test fails (mosquitto is ready in 25–45 ms here).
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Fresh ports tried when the chosen one was taken between probing and binding.
const PORT_ATTEMPTS: usize = 5;

/// The broker's TLS files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// CA that signs client certificates (`cafile`).
    pub cafile: PathBuf,
    /// Server certificate (`certfile`).
    pub certfile: PathBuf,
    /// Server key (`keyfile`).
    pub keyfile: PathBuf,
}

/// What the broker should look like.
#[derive(Debug, Clone, Default)]
pub struct MosquittoOptions {
    /// TLS on the listener; `None` = plain MQTT.
    pub tls: Option<TlsFiles>,
    /// Refuse clients without a certificate from `cafile` (and use its CN as user name).
    pub require_certificate: bool,
    /// Contents of an `acl_file` (mosquitto syntax: `user <cn>` then `topic read|write|readwrite <filter>`).
    pub acl: Option<String>,
    /// Extra lines appended to the generated config.
    pub extra: String,
}

impl MosquittoOptions {
    /// Plain MQTT, anonymous.
    pub fn plain() -> MosquittoOptions {
        MosquittoOptions::default()
    }

    /// Mutual TLS: the PKI's server certificate, client certificates from its CA required.
    pub fn mutual_tls(pki: &Pki) -> MosquittoOptions {
        MosquittoOptions {
            tls: Some(TlsFiles {
                cafile: pki.ca_file().to_path_buf(),
                certfile: pki.server.cert.clone(),
                keyfile: pki.server.key.clone(),
            }),
            require_certificate: true,
            acl: None,
            extra: String::new(),
        }
    }

    /// The same options with the dynamic-security plugin refusing `user`'s SUBSCRIBE to each of
    /// `filters` (SUBACK 0x80) and allowing everything else. Needed because mosquitto 2.0's
    /// `acl_file` never refuses a subscription, it only withholds messages. The plugin's JSON is
    /// written into `dir`.
    pub fn with_subscribe_denied(
        mut self,
        dir: &Path,
        user: &str,
        filters: &[&str],
    ) -> MosquittoOptions {
        let acls: Vec<serde_json::Value> = filters
            .iter()
            .map(|f| serde_json::json!({"acltype": "subscribeLiteral", "topic": f, "priority": 0, "allow": false}))
            .collect();
        let doc = serde_json::json!({
            "defaultACLAccess": {
                "publishClientSend": true, "publishClientReceive": true,
                "subscribe": true, "unsubscribe": true
            },
            "clients": [{"username": user, "roles": [{"rolename": "denied"}]}],
            "groups": [],
            "roles": [{"rolename": "denied", "acls": acls}]
        });
        let path = dir.join(format!("dynsec-{user}.json"));
        fs::write(&path, serde_json::to_vec_pretty(&doc).expect("dynsec JSON"))
            .expect("write dynsec JSON");
        let plugin = dynamic_security_plugin();
        self.extra.push_str(&format!(
            "plugin {}\nplugin_opt_config_file {}\n",
            plugin.display(),
            path.display()
        ));
        self
    }

    /// The same options with an ACL file. Note: mosquitto 2.0's `acl_file` only withholds
    /// messages; it never refuses a SUBSCRIBE or a PUBLISH (use
    /// [`MosquittoOptions::with_subscribe_denied`] for SUBACK 0x80).
    pub fn with_acl(mut self, acl: &str) -> MosquittoOptions {
        self.acl = Some(acl.to_string());
        self
    }
}

/// A running (or stopped) mosquitto process.
pub struct Mosquitto {
    options: MosquittoOptions,
    dir: TempDir,
    port: u16,
    child: Option<Child>,
    log_path: PathBuf,
    starts: usize,
}

/// The mosquitto binary: on `PATH` or in the sbin directories Debian uses.
fn mosquitto_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("mosquitto"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("mosquitto not found: install it with `apt-get install -y mosquitto`")
        })
}

/// Debian's dynamic-security plugin, shipped in the mosquitto package.
fn dynamic_security_plugin() -> PathBuf {
    ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib/arm-linux-gnueabihf", "/usr/lib", "/usr/local/lib"]
        .iter()
        .map(|d| Path::new(d).join("mosquitto_dynamic_security.so"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("mosquitto_dynamic_security.so not found: install it with `apt-get install -y mosquitto`"))
}

/// A port that was free a moment ago (bind 127.0.0.1:0, read it, release it).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

impl Mosquitto {
    /// Writes the config, starts mosquitto on a free loopback port and waits until it accepts
    /// connections. Panics (with the broker's log) if it does not come up.
    pub fn start(options: MosquittoOptions) -> Mosquitto {
        let dir = tempfile::Builder::new()
            .prefix("defender-mosquitto-")
            .tempdir()
            .expect("temp dir");
        let log_path = dir.path().join("mosquitto.log");
        let mut broker = Mosquitto {
            options,
            dir,
            port: 0,
            child: None,
            log_path,
            starts: 0,
        };
        for attempt in 1..=PORT_ATTEMPTS {
            broker.port = free_port();
            match broker.launch() {
                Ok(()) => return broker,
                Err(log) if log.contains("Address already in use") && attempt < PORT_ATTEMPTS => {
                    continue
                }
                Err(log) => panic!("mosquitto did not start on port {}:\n{log}", broker.port),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// The listener's port (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the config, ACL and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Link settings for this broker over mutual TLS: endpoint `localhost` (the server
    /// certificate's name), the PKI's CA, a fresh client certificate with CN = `thing`, JSON
    /// format, fast reconnects (50 ms doubling, capped at 2 s) so outage tests stay short.
    pub fn link_settings(&self, pki: &Pki, thing: &str) -> defender_agent::mqtt::Settings {
        let client = pki.client(thing);
        defender_agent::mqtt::Settings {
            endpoint: "localhost".into(),
            port: self.port,
            proxy: None,
            tls: true,
            ca_file: pki.ca_file().to_path_buf(),
            cert_file: client.cert,
            key_file: client.key,
            alpn: String::new(),
            client_id: thing.into(),
            thing_name: thing.into(),
            format: defender_agent::report::Format::Json,
            topic_root: Default::default(),
            keep_alive: Duration::from_secs(30),
            clean_session: true,
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(2),
            answer_timeout: defender_agent::mqtt::DEFAULT_ANSWER_TIMEOUT,
            subscriptions: Vec::new(),
        }
    }

    /// The fixed `[mqtt]` keys of an agent config file for this broker (for CLI/agent tests):
    /// endpoint, port, tls, ca_file, cert_file, key_file; a client certificate with CN = `thing`
    /// is generated.
    pub fn mqtt_toml(&self, pki: &Pki, thing: &str) -> String {
        let client = pki.client(thing);
        format!(
            "[mqtt]\nendpoint = \"localhost\"\nport = {}\ntls = true\nca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\n",
            self.port,
            pki.ca_file().display().to_string(),
            client.cert.display().to_string(),
            client.key.display().to_string(),
        )
    }

    /// Is the process running?
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the broker (an outage: clients see their connection drop).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the broker if it runs, then starts it again on the same port (a fresh broker:
    /// persistence is off, so no sessions or subscriptions survive).
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.launch() {
                Ok(()) => return,
                // The old socket may linger for a moment; the port is ours to retry.
                Err(log) if log.contains("Address already in use") && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(log) => panic!("mosquitto did not restart on port {}:\n{log}", self.port),
            }
        }
    }

    /// Everything the broker has logged so far (all starts).
    pub fn log(&self) -> String {
        let mut all = String::new();
        for n in 1..=self.starts {
            let path = self.log_file(n);
            all.push_str(&fs::read_to_string(&path).unwrap_or_default());
        }
        all
    }

    /// Waits (bounded) until the log contains `needle`; true if it did.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_file(&self, start: usize) -> PathBuf {
        self.log_path.with_extension(format!("{start}.log"))
    }

    fn config(&self) -> String {
        let mut conf = String::new();
        conf.push_str("# generated by tests/integration/support/mosquitto.rs\n");
        conf.push_str("per_listener_settings false\n");
        conf.push_str("persistence false\n");
        conf.push_str("log_dest stderr\n");
        conf.push_str("log_type all\n");
        conf.push_str("connection_messages true\n");
        // Started as root, mosquitto drops to user `mosquitto`, which cannot read our 0600 keys
        // (notes/toolchain.md); ignored when not root.
        conf.push_str("user root\n");
        conf.push_str("allow_anonymous true\n");
        if let Some(acl) = &self.options.acl {
            let acl_path = self.dir.path().join("acl");
            fs::write(&acl_path, acl).expect("write ACL file");
            conf.push_str(&format!("acl_file {}\n", acl_path.display()));
        }
        conf.push_str(&format!("listener {} 127.0.0.1\n", self.port));
        if let Some(tls) = &self.options.tls {
            conf.push_str(&format!("cafile {}\n", tls.cafile.display()));
            conf.push_str(&format!("certfile {}\n", tls.certfile.display()));
            conf.push_str(&format!("keyfile {}\n", tls.keyfile.display()));
            if self.options.require_certificate {
                conf.push_str("require_certificate true\n");
                conf.push_str("use_identity_as_username true\n");
            }
        }
        conf.push_str(&self.options.extra);
        conf.push('\n');
        conf
    }

    /// One start on `self.port`: Ok when the port accepts connections, Err(log) if the process
    /// exited or the port never opened.
    fn launch(&mut self) -> Result<(), String> {
        let conf_path = self.dir.path().join("mosquitto.conf");
        fs::write(&conf_path, self.config()).expect("write mosquitto.conf");
        self.starts += 1;
        let log_path = self.log_file(self.starts);
        let log = File::create(&log_path).expect("create log file");
        let mut child = Command::new(mosquitto_binary())
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn mosquitto");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!("mosquitto exited with {status}\n{log}"));
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                let log = fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!(
                    "port {} not open after {START_TIMEOUT:?}\n{log}",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

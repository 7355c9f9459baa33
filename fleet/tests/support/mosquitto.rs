//! A mosquitto broker on a free loopback port for the fleet's tests (the small part of the
//! agent's `tests/integration/support/mosquitto.rs` they need: the agent's tests are a separate
//! crate): plain and anonymous ([`Mosquitto::start`]) or mutual TLS with the certificates of a
//! [`Pki`] ([`Mosquitto::start_mutual_tls`]: client certificates from its CA required, their CN
//! is the user name). Stopped on drop; a missing binary fails the test, never a skip.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::certs::Pki;

/// A running mosquitto.
pub struct Mosquitto {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
    acl_file: Option<PathBuf>,
}

static ACLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

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

impl Mosquitto {
    /// Starts a plain, anonymous broker and waits until it accepts connections.
    pub fn start() -> Mosquitto {
        Mosquitto::launch("")
    }

    /// Starts a broker with mutual TLS: `pki`'s server certificate, client certificates signed
    /// by its CA required (CN = user name).
    pub fn start_mutual_tls(pki: &Pki) -> Mosquitto {
        Mosquitto::launch(&Mosquitto::tls_lines(pki))
    }

    /// [`Mosquitto::start_mutual_tls`] with an ACL file holding `acl` (mosquitto syntax:
    /// `user <cn>` then `topic read|write|readwrite <filter>`; it withholds messages, it never
    /// refuses a SUBSCRIBE). Change it with [`Mosquitto::set_acl`].
    pub fn start_mutual_tls_with_acl(pki: &Pki, acl: &str) -> Mosquitto {
        let acl_file = std::env::temp_dir().join(format!(
            "fleet-acl-{}-{}",
            std::process::id(),
            ACLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::write(&acl_file, acl).expect("write the ACL file");
        let mut m = Mosquitto::launch(&format!(
            "{}acl_file {}\n",
            Mosquitto::tls_lines(pki),
            acl_file.display()
        ));
        m.acl_file = Some(acl_file);
        m
    }

    /// Replaces the ACL and has the broker reload it (SIGHUP); waits for the reload in its log.
    pub fn set_acl(&self, acl: &str) {
        let file = self
            .acl_file
            .as_ref()
            .expect("a broker started with an ACL");
        std::fs::write(file, acl).expect("write the ACL file");
        let before = self.log().matches("Reloading config").count();
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGHUP);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.log().matches("Reloading config").count() == before {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not reload:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn tls_lines(pki: &Pki) -> String {
        format!(
            "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n\
             use_identity_as_username true\n",
            pki.ca_file().display(),
            pki.server.cert.display(),
            pki.server.key.display()
        )
    }

    fn launch(listener_extra: &str) -> Mosquitto {
        let mut dir = tempfile::tempdir().expect("temp dir");
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port");
            let conf = dir.path().join("mosquitto.conf");
            std::fs::write(
                &conf,
                format!(
                    "per_listener_settings false\nuser root\n\
                     listener {port} 127.0.0.1\n{listener_extra}allow_anonymous true\n\
                     persistence false\nlog_dest stderr\nlog_type all\n\
                     max_packet_size 200000\nmax_queued_messages 100000\n"
                ),
            )
            .expect("write mosquitto.conf");
            let log = std::fs::File::create(dir.path().join("mosquitto.log")).expect("log file");
            let child = Command::new(mosquitto_binary())
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn mosquitto");
            let mut broker = Mosquitto {
                dir,
                port,
                child,
                acl_file: None,
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return broker;
                }
                if let Ok(Some(_)) = broker.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = broker.child.kill();
            let _ = broker.child.wait();
            let log = broker.log();
            if !log.contains("Address already in use") {
                panic!("mosquitto did not start on port {port}:\n{log}");
            }
            dir = std::mem::replace(&mut broker.dir, tempfile::tempdir().expect("temp dir"));
        }
        panic!("mosquitto: no free port after 5 attempts")
    }

    /// Stops the broker (SIGKILL: an outage, not a shutdown); [`Mosquitto::restart`] starts it
    /// again on the same port with the same configuration.
    #[allow(dead_code)]
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the stopped broker again on its port (the port stays free in between: nothing
    /// else on this machine binds ports the tests picked).
    #[allow(dead_code)]
    pub fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("mosquitto.log"))
            .expect("log file");
        self.child = Command::new(mosquitto_binary())
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn mosquitto");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not restart on {}:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The broker's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(f) = &self.acl_file {
            let _ = std::fs::remove_file(f);
        }
    }
}

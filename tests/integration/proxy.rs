//! `[mqtt] proxy`: the daemon (the real binary) reporting to mosquitto over mutual TLS through a
//! real HTTP CONNECT proxy (Debian's tinyproxy on loopback), with and without basic auth, and
//! proxies that refuse, are down or are not proxies: a clear cause logged once, the normal
//! backoff, the spool filling meanwhile, and never the password in a log, `status` or
//! `check-config`.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::agent_bin;
use crate::support::certs::Pki;
use crate::support::endpoint::{accept_any_report, DefenderEndpoint};
use crate::support::mosquitto::{Mosquitto, MosquittoOptions};

/// The proxy's basic-auth password in these tests: no log line may contain it.
const PASSWORD: &str = "s3cret-pw";
/// The same, percent-encoded in the URL (decoding is part of what is tested).
const PASSWORD_IN_URL: &str = "s3cret%2Dpw";
/// A wrong password, which must not appear either.
const WRONG_PASSWORD: &str = "wr0ng-pw";

const WAIT: Duration = Duration::from_secs(20);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free loopback port")
        .port()
}

/// tinyproxy in the foreground on a free loopback port; killed on drop.
struct Tinyproxy {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

impl Tinyproxy {
    /// Allows CONNECT to `connect_port` only; `auth` adds `BasicAuth user password`.
    fn start(connect_port: u16, auth: Option<(&str, &str)>) -> Tinyproxy {
        let bin = ["/usr/bin/tinyproxy", "/usr/sbin/tinyproxy"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .or_else(|| {
                Command::new("tinyproxy")
                    .arg("-v")
                    .output()
                    .ok()
                    .map(|_| PathBuf::from("tinyproxy"))
            })
            .unwrap_or_else(|| {
                panic!("tinyproxy not found: apt-get install tinyproxy (tests/run.sh does it)")
            });
        let dir = tempfile::Builder::new()
            .prefix("defender-tinyproxy-")
            .tempdir()
            .unwrap();
        for _ in 0..5 {
            let port = free_port();
            let mut conf = format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 30\nAllow 127.0.0.1\nConnectPort {connect_port}\n\
                 MaxClients 20\nLogFile \"{}\"\nLogLevel Info\n",
                dir.path().join("tinyproxy.log").display()
            );
            if let Some((user, password)) = auth {
                conf.push_str(&format!("BasicAuth {user} {password}\n"));
            }
            let conf_path = dir.path().join("tinyproxy.conf");
            std::fs::write(&conf_path, conf).unwrap();
            let mut child = Command::new(&bin)
                .arg("-d")
                .arg("-c")
                .arg(&conf_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
                .spawn()
                .expect("start tinyproxy");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Tinyproxy { dir, port, child };
                }
                if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break; // port taken meanwhile, or a slow start: try another port
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!(
            "tinyproxy did not start; log:\n{}",
            std::fs::read_to_string(dir.path().join("tinyproxy.log")).unwrap_or_default()
        );
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tinyproxy.log")).unwrap_or_default()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config reporting every second to `broker` through `proxy` (a URL), backlog "all" so
/// that pending reports pile up during an outage.
fn config_text(
    broker: &Mosquitto,
    pki: &Pki,
    thing: &str,
    state_dir: &Path,
    proxy: &str,
) -> String {
    format!(
        "thing_name = \"{thing}\"\nstate_dir = {state:?}\nshutdown_timeout_secs = 5\n\
         [collect]\nsample_interval_secs = 1\n\
         [report]\ninterval_secs = 1\nstartup_jitter_secs = 0\n\
         {mqtt}proxy = \"{proxy}\"\nreconnect_min_secs = 1\nreconnect_max_secs = 2\nanswer_timeout_secs = 3\n\
         [spool]\nbacklog = \"all\"\n",
        state = state_dir.display().to_string(),
        mqtt = broker.mqtt_toml(pki, thing),
    )
}

/// The agent binary running `run --config`; killed on drop.
struct Agent {
    child: Option<Child>,
    log: PathBuf,
    config: PathBuf,
}

impl Agent {
    fn start(dir: &Path, config: &str) -> Agent {
        let config_path = dir.join("agent.toml");
        std::fs::write(&config_path, config).unwrap();
        let log = dir.join("agent.log");
        let child = Command::new(agent_bin())
            .args(["run", "--config"])
            .arg(&config_path)
            .env("DEFENDER_AGENT_LOG", "info,defender_agent=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start defender-agent");
        Agent {
            child: Some(child),
            log,
            config: config_path,
        }
    }

    fn log(&self) -> String {
        let mut s = String::new();
        let _ = std::fs::File::open(&self.log).and_then(|mut f| f.read_to_string(&mut s));
        s
    }

    /// Waits (bounded) until the log contains `needle` at least `count` times.
    fn wait_log(&self, needle: &str, count: usize) {
        let deadline = Instant::now() + WAIT;
        while self.log().matches(needle).count() < count {
            assert!(
                Instant::now() < deadline,
                "no {count}x {needle:?} in the agent log within {WAIT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `status --json` (waiting, bounded, for the first status file): the parsed JSON and the
    /// raw output.
    fn status(&self) -> (serde_json::Value, String) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = Command::new(agent_bin())
                .args(["status", "--json", "--config"])
                .arg(&self.config)
                .output()
                .unwrap();
            if out.status.success() {
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                return (serde_json::from_str(&text).unwrap(), text);
            }
            assert!(Instant::now() < deadline, "status: {:?}", out);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, and a clean exit within 10 s.
    fn terminate(&mut self) {
        let mut child = self.child.take().expect("agent running");
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "exit {status:?}; log:\n{}", self.log());
                return;
            }
            assert!(Instant::now() < deadline, "no exit; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The agent log, status and `check-config` output hold none of `secrets`.
fn assert_no_secret(agent: &Agent, secrets: &[&str]) {
    let (_, status) = agent.status();
    let check = Command::new(agent_bin())
        .args(["check-config", "--config"])
        .arg(&agent.config)
        .output()
        .unwrap();
    let texts = [
        ("agent log", agent.log()),
        ("status --json", status),
        (
            "check-config",
            String::from_utf8_lossy(&check.stdout).into_owned(),
        ),
        (
            "check-config",
            String::from_utf8_lossy(&check.stderr).into_owned(),
        ),
    ];
    for (what, text) in texts {
        for secret in secrets {
            for line in text.lines() {
                assert!(!line.contains(secret), "{what} shows the password: {line}");
            }
        }
    }
}

/// Lines of `log` at WARN that contain `needle`.
fn warn_lines(log: &str, needle: &str) -> usize {
    log.lines()
        .filter(|l| l.contains(" WARN ") && l.contains(needle))
        .count()
}

/// Reports are accepted through `proxy_url` (two answers), and tinyproxy logged the CONNECT
/// to the broker.
async fn reports_arrive_through(
    dir: &Path,
    proxy: &Tinyproxy,
    broker: &Mosquitto,
    pki: &Pki,
    proxy_url: &str,
) -> Agent {
    let mut endpoint = DefenderEndpoint::start(broker, pki, accept_any_report).await;
    let agent = Agent::start(
        dir,
        &config_text(broker, pki, "gw-proxied", &dir.join("state"), proxy_url),
    );
    for _ in 0..2 {
        let r = endpoint.next_report().await;
        assert!(r.accepted, "{:?}", r.invalid);
        assert_eq!(r.thing, "gw-proxied");
    }
    agent.wait_log("Report accepted.", 1);
    agent.wait_log("MQTT tunnelled through an HTTP CONNECT proxy.", 1);
    let connect = format!("CONNECT localhost:{} HTTP/1.1", broker.port());
    assert!(
        proxy.log().contains(&connect),
        "tinyproxy did not log {connect:?}:\n{}",
        proxy.log()
    );
    agent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_travel_through_an_http_connect_proxy_to_the_broker_over_mutual_tls() {
    let pki = Pki::new();
    let broker = Mosquitto::start(MosquittoOptions::mutual_tls(&pki));
    let proxy = Tinyproxy::start(broker.port(), None);
    let url = format!("http://127.0.0.1:{}", proxy.port);
    let dir = tempfile::tempdir().unwrap();
    let mut agent = reports_arrive_through(dir.path(), &proxy, &broker, &pki, &url).await;
    agent.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_with_the_right_password_tunnels_and_a_wrong_or_missing_one_is_refused_clearly()
{
    let pki = Pki::new();
    let broker = Mosquitto::start(MosquittoOptions::mutual_tls(&pki));
    let proxy = Tinyproxy::start(broker.port(), Some(("alice", PASSWORD)));
    let addr = format!("127.0.0.1:{}", proxy.port);

    let url = format!("http://alice:{PASSWORD_IN_URL}@{addr}");
    let dir = tempfile::tempdir().unwrap();
    let mut agent = reports_arrive_through(dir.path(), &proxy, &broker, &pki, &url).await;
    assert_no_secret(&agent, &[PASSWORD, PASSWORD_IN_URL]);
    agent.terminate();

    // tinyproxy answers a wrong password with 401, no credentials with 407.
    let cases = [
        (
            format!("http://alice:{WRONG_PASSWORD}@{addr}"),
            format!("cause=proxy {addr} refused the tunnel: HTTP 401 Unauthorized (check the user and password in mqtt.proxy)"),
        ),
        (
            format!("http://{addr}"),
            format!("cause=proxy {addr} refused the tunnel: HTTP 407 Proxy Authentication Required (check the user and password in mqtt.proxy)"),
        ),
    ];
    for (url, cause) in cases {
        let dir = tempfile::tempdir().unwrap();
        let agent = Agent::start(
            dir.path(),
            &config_text(&broker, &pki, "gw-refused", &dir.path().join("state"), &url),
        );
        agent.wait_log("MQTT connection attempt failed again.", 2);
        let log = agent.log();
        assert_eq!(warn_lines(&log, &cause), 1, "{cause}, once at warn:\n{log}");
        assert!(!log.contains("Report accepted."), "{log}");
        assert_no_secret(&agent, &[PASSWORD, PASSWORD_IN_URL, WRONG_PASSWORD]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_refuses_the_broker_port_is_a_clear_error_with_backoff_while_the_spool_fills()
{
    let pki = Pki::new();
    let broker = Mosquitto::start(MosquittoOptions::mutual_tls(&pki));
    let proxy = Tinyproxy::start(broker.port().wrapping_add(1).max(1), None);
    let addr = format!("127.0.0.1:{}", proxy.port);
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(
        dir.path(),
        &config_text(
            &broker,
            &pki,
            "gw-refused",
            &dir.path().join("state"),
            &format!("http://{addr}"),
        ),
    );
    let cause = format!("cause=proxy {addr} refused the tunnel: HTTP 403 Forbidden");
    agent.wait_log(&cause, 1);
    let started = Instant::now();
    let (first, _) = agent.status();
    agent.wait_log("MQTT connection attempt failed again.", 3);
    let elapsed = started.elapsed();
    let (later, _) = agent.status();

    let log = agent.log();
    assert_eq!(warn_lines(&log, &cause), 1, "once at warn:\n{log}");
    // Backoff between 1 and 2 s: attempts are spaced, not a loop.
    let refused = proxy
        .log()
        .matches("Refused CONNECT method on port")
        .count();
    let most = 2 + elapsed.as_secs() as usize;
    assert!(
        (3..=most).contains(&refused),
        "{refused} attempts in {elapsed:?}:\n{}",
        proxy.log()
    );
    assert!(
        later["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(&format!("proxy {addr}"))),
        "{later}"
    );
    let pending = |s: &serde_json::Value| s["spool"]["pending"].as_u64().unwrap();
    assert!(
        pending(&later) > pending(&first),
        "reports keep being spooled: {first} then {later}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_is_down_or_answers_garbage_is_a_clear_error() {
    let pki = Pki::new();
    let broker = Mosquitto::start(MosquittoOptions::mutual_tls(&pki));

    // Something that is not an HTTP proxy (an SSH banner), answering every connection.
    let garbage = TcpListener::bind("127.0.0.1:0").unwrap();
    let garbage_addr = format!("127.0.0.1:{}", garbage.local_addr().unwrap().port());
    std::thread::spawn(move || {
        for mut conn in garbage.incoming().flatten() {
            let _ = conn.write_all(b"SSH-2.0-OpenSSH_9.2\r\n\r\n");
        }
    });
    // The same on IPv6 loopback: the agent reaches a proxy written as [::1]:port.
    let garbage6 = TcpListener::bind("[::1]:0").expect("IPv6 loopback");
    let garbage6_port = garbage6.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in garbage6.incoming().flatten() {
            let _ = conn.write_all(b"SSH-2.0-OpenSSH_9.2\r\n\r\n");
        }
    });
    let down = format!("127.0.0.1:{}", free_port());
    let garbage6_addr = format!("[::1]:{garbage6_port}");
    let cases = [
        (
            garbage6_addr.clone(),
            format!("cause=proxy {garbage6_addr}: not an HTTP proxy answer (HTTP parse error: invalid HTTP version)"),
        ),
        (down.clone(), format!("cause=proxy {down}: connection refused")),
        (
            garbage_addr.clone(),
            format!("cause=proxy {garbage_addr}: not an HTTP proxy answer (HTTP parse error: invalid HTTP version)"),
        ),
    ];
    for (addr, cause) in cases {
        let dir = tempfile::tempdir().unwrap();
        let agent = Agent::start(
            dir.path(),
            &config_text(
                &broker,
                &pki,
                "gw-down",
                &dir.path().join("state"),
                &format!("http://{addr}"),
            ),
        );
        agent.wait_log("MQTT connection attempt failed again.", 2);
        let log = agent.log();
        assert_eq!(warn_lines(&log, &cause), 1, "{cause}, once at warn:\n{log}");
    }
}

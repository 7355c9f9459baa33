//! Issue 16, defects 2 and 10: `check-config`, `run` and a SIGHUP reload check the deployment (TLS
//! files, endpoint, Detect files, state directory), and a second agent on one state directory
//! refuses to start.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rcgen::{CertificateParams, DnType, KeyPair};

use crate::support::agent_bin;
use crate::support::certs::{write_private, Pki};

fn run(args: &[&str]) -> Output {
    Command::new(agent_bin())
        .args(args)
        .env("DEFENDER_AGENT_LOG", "warn")
        .output()
        .expect("run defender-agent")
}

/// The TLS files of a deployment that works.
struct Files {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// A config whose link goes to `endpoint` on a port nobody listens on.
fn config(state: &Path, endpoint: &str, f: &Files, port: u16) -> String {
    format!(
        "thing_name = \"gw-deploy\"\nstate_dir = {state:?}\nshutdown_timeout_secs = 5\n\
         [report]\ninterval_secs = 300\nstartup_jitter_secs = 0\n\
         [mqtt]\nendpoint = {endpoint:?}\nport = {port}\nca_file = {ca:?}\ncert_file = {cert:?}\nkey_file = {key:?}\n\
         reconnect_min_secs = 1\nreconnect_max_secs = 2\n",
        state = state.display().to_string(),
        ca = f.ca.display().to_string(),
        cert = f.cert.display().to_string(),
        key = f.key.display().to_string(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn check(dir: &Path, text: &str) -> (i32, String) {
    let path = dir.join("check.toml");
    std::fs::write(&path, text).unwrap();
    let out = run(&["check-config", "--config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), stderr)
}

/// A self-signed certificate valid from `from` to `until` (year, month, day) with its own key.
fn dated_cert(
    dir: &Path,
    stem: &str,
    from: (i32, u8, u8),
    until: (i32, u8, u8),
) -> (PathBuf, PathBuf) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, stem);
    params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
    params.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (c, k) = (
        dir.join(format!("{stem}.crt.pem")),
        dir.join(format!("{stem}.key.pem")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    write_private(&k, &key.serialize_pem());
    (c, k)
}

#[test]
fn check_config_refuses_every_deployment_that_run_cannot_start_and_names_the_key() {
    // Regression, issue 16 defect 2: these 15 passed check-config and made `run` exit 1.
    let pki = Pki::new();
    let dev = pki.client("gw-deploy");
    let other = pki.client("someone-else");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let good = Files {
        ca: pki.ca_file().to_owned(),
        cert: dev.cert.clone(),
        key: dev.key.clone(),
    };
    let (code, stderr) = check(dir.path(), &config(&state, "localhost", &good, 8883));
    assert_eq!(code, 0, "the good deployment passes: {stderr}");

    let missing = dir.path().join("missing.pem");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let text = dir.path().join("text.pem");
    std::fs::write(&text, "not a PEM file\n").unwrap();
    let directory = dir.path().join("a-directory");
    std::fs::create_dir(&directory).unwrap();
    let with = |which: &str, path: &Path| {
        let mut f = Files {
            ca: good.ca.clone(),
            cert: good.cert.clone(),
            key: good.key.clone(),
        };
        match which {
            "ca_file" => f.ca = path.to_owned(),
            "cert_file" => f.cert = path.to_owned(),
            _ => f.key = path.to_owned(),
        }
        f
    };
    let mut cases: Vec<(String, Files, &str, &str)> = Vec::new();
    for which in ["ca_file", "cert_file", "key_file"] {
        cases.push((
            format!("missing {which}"),
            with(which, &missing),
            which,
            "No such file",
        ));
        cases.push((
            format!("empty {which}"),
            with(which, &empty),
            which,
            "is empty",
        ));
        cases.push((format!("non-PEM {which}"), with(which, &text), which, "no "));
        cases.push((
            format!("directory {which}"),
            with(which, &directory),
            which,
            "is a directory",
        ));
    }
    let swapped = Files {
        ca: good.ca.clone(),
        cert: good.key.clone(),
        key: good.cert.clone(),
    };
    cases.push(("swapped".into(), swapped, "cert_file", "swapped"));
    cases.push((
        "mismatch".into(),
        with("key_file", &other.key),
        "key_file",
        "does not fit",
    ));
    for (name, files, key, says) in &cases {
        let (code, stderr) = check(dir.path(), &config(&state, "localhost", files, 8883));
        assert_eq!(code, 2, "{name}: {stderr}");
        let line = stderr
            .lines()
            .find(|l| l.contains(&format!("`mqtt.{key}`")))
            .unwrap_or_else(|| panic!("{name}: no mqtt.{key} problem in {stderr}"));
        assert!(line.contains("error: line "), "{name}: {line}");
        assert!(line.contains(says), "{name}: {line}");
    }
    for endpoint in [
        "mqtts://localhost",
        "localhost:8883",
        "local host",
        "localhost/x",
    ] {
        let (code, stderr) = check(dir.path(), &config(&state, endpoint, &good, 8883));
        assert_eq!(code, 2, "{endpoint}: {stderr}");
        assert!(
            stderr.contains("line 8, column 12: `mqtt.endpoint`"),
            "{endpoint}: {stderr}"
        );
    }
    // Every problem is listed, not only the first.
    let broken = Files {
        ca: missing.clone(),
        cert: empty.clone(),
        key: directory.clone(),
    };
    let (code, stderr) = check(dir.path(), &config(&state, "local host", &broken, 8883));
    assert_eq!(code, 2);
    for key in [
        "mqtt.endpoint",
        "mqtt.ca_file",
        "mqtt.cert_file",
        "mqtt.key_file",
    ] {
        assert!(stderr.contains(&format!("`{key}`")), "{key}: {stderr}");
    }
    assert!(stderr.contains("4 error(s)"), "{stderr}");
}

#[test]
fn check_config_refuses_an_expired_certificate_and_warns_about_one_expiring_soon() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (cert, key) = dated_cert(dir.path(), "old", (2020, 1, 1), (2021, 1, 1));
    let files = Files {
        ca: pki.ca_file().to_owned(),
        cert,
        key,
    };
    let (code, stderr) = check(dir.path(), &config(&state, "localhost", &files, 8883));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("expired on 2021-01-01"), "{stderr}");

    // rcgen takes dates only: ten days from now, at midnight.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (y, m, d) = civil(now / 86_400 + 10);
    let (cert, key) = dated_cert(dir.path(), "soon", (2020, 1, 1), (y, m, d));
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let files = Files {
        ca: pki.ca_file().to_owned(),
        cert,
        key,
    };
    let (code, stderr) = check(dir.path(), &config(&state, "localhost", &files, 8883));
    assert_eq!(code, 0, "warnings only: {stderr}");
    assert!(
        stderr.contains("warning: line 11") && stderr.contains("expires in"),
        "{stderr}"
    );
    assert!(stderr.contains("mode 640"), "{stderr}");
}

/// (year, month, day) of a day number since 1970-01-01.
fn civil(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year as i32, month as u8, day as u8)
}

#[test]
fn check_config_reports_what_run_would_leave_out_of_a_detect_file() {
    // Regression, issue 16 defect 2: a dimension with the filter `a/#/b` passed silently.
    let dir = tempfile::tempdir().unwrap();
    let dim = dir.path().join("dimension.json");
    std::fs::write(
        &dim,
        r#"{"name": "Bad", "type": "TOPIC_FILTER", "stringValues": ["a/#/b"]}"#,
    )
    .unwrap();
    let text = format!(
        "thing_name = \"t\"\nstate_dir = {:?}\n[detect]\ndimensions = [{:?}]\n",
        dir.path().join("state").display().to_string(),
        dim.display().to_string()
    );
    let (code, stderr) = check(dir.path(), &text);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("warning: line 3")
            && stderr.contains("dimension Bad")
            && stderr.contains("a/#/b"),
        "{stderr}"
    );
    // A Detect file that does not load is an error, as `run` refuses it.
    std::fs::write(&dim, "{").unwrap();
    let (code, stderr) = check(dir.path(), &text);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("`detect`"), "{stderr}");
}

/// The daemon with a config file, its stderr in a file; killed on drop.
struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    fn start(config: &Path, log: PathBuf) -> Daemon {
        let child = Command::new(agent_bin())
            .args(["run", "--config"])
            .arg(config)
            .env("DEFENDER_AGENT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start defender-agent");
        Daemon {
            child: Some(child),
            log,
        }
    }

    fn log(&self) -> String {
        let mut s = String::new();
        let _ = std::fs::File::open(&self.log).and_then(|mut f| f.read_to_string(&mut s));
        s
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    fn wait_log(&self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} within {within:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exit code, waiting at most `within`; `None` while it runs.
    fn exit_within(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut()?;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn good_deployment(pki: &Pki) -> Files {
    let dev = pki.client("gw-deploy");
    Files {
        ca: pki.ca_file().to_owned(),
        cert: dev.cert,
        key: dev.key,
    }
}

#[test]
fn sighup_with_a_certificate_that_cannot_load_keeps_the_daemon_running_and_logs_the_refusal_once() {
    // Regression, issue 16 defect 2: the daemon exited 1 ("Configuration reloaded; restarting").
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let port = free_port();
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        config(&state, "127.0.0.1", &good_deployment(&pki), port),
    )
    .unwrap();
    let mut daemon = Daemon::start(&path, dir.path().join("agent.log"));
    daemon.wait_log("Spool opened.", Duration::from_secs(20));
    let directory = dir.path().join("cert-dir");
    std::fs::create_dir(&directory).unwrap();
    let broken = Files {
        cert: directory,
        ..good_deployment(&pki)
    };
    std::fs::write(&path, config(&state, "127.0.0.1", &broken, port)).unwrap();
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(daemon.pid(), libc::SIGHUP) };
    daemon.wait_log("the new configuration is invalid", Duration::from_secs(10));
    assert_eq!(
        daemon.exit_within(Duration::from_secs(3)),
        None,
        "{}",
        daemon.log()
    );
    let log = daemon.log();
    assert_eq!(
        log.matches("the new configuration is invalid").count(),
        1,
        "{log}"
    );
    assert!(log.contains("is a directory"), "{log}");
    assert!(!log.contains("Configuration reloaded"), "{log}");
    // SAFETY: as above.
    unsafe { libc::kill(daemon.pid(), libc::SIGTERM) };
    assert_eq!(
        daemon.exit_within(Duration::from_secs(15)),
        Some(0),
        "{}",
        daemon.log()
    );
}

#[test]
fn run_refuses_a_deployment_that_check_config_refuses_with_exit_2_and_the_list() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let broken = Files {
        key: dir.path().join("missing.key.pem"),
        ..good_deployment(&pki)
    };
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, config(&state, "localhost:8883", &broken, 8883)).unwrap();
    let out = run(&["run", "--config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`mqtt.endpoint`") && stderr.contains("`mqtt.key_file`"),
        "{stderr}"
    );
}

#[test]
fn a_second_agent_on_the_same_state_directory_refuses_to_start_with_exit_2() {
    // Regression, issue 16 defect 10: the second one ran memory-only, fighting for the client id.
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        config(&state, "127.0.0.1", &good_deployment(&pki), free_port()),
    )
    .unwrap();
    let first = Daemon::start(&path, dir.path().join("first.log"));
    first.wait_log("Spool opened.", Duration::from_secs(20));
    let mut second = Daemon::start(&path, dir.path().join("second.log"));
    let code = second.exit_within(Duration::from_secs(20));
    assert_eq!(code, Some(2), "{}", second.log());
    assert!(
        second.log().contains("another defender-agent is running"),
        "{}",
        second.log()
    );
    assert!(!second.log().contains("kept in memory"), "{}", second.log());
}

#[test]
fn a_spool_log_that_is_a_directory_stops_run_with_exit_2() {
    // Regression, issue 16 defect 8: a spool that is not a file ran memory-only, silently.
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(state.join("spool").join("spool.log")).unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        config(&state, "127.0.0.1", &good_deployment(&pki), free_port()),
    )
    .unwrap();
    let (code, stderr) = check(dir.path(), &std::fs::read_to_string(&path).unwrap());
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("`state_dir`") && stderr.contains("not a regular file"),
        "{stderr}"
    );
    // `run` checks the same before it starts.
    let out = run(&["run", "--config", path.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

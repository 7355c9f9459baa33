//! Offline alarm outputs: every unsuppressed violation event goes to the log (always), and to the
//! configured `[[alarms]]`: a JSON-lines file, an MQTT topic (through the agent's link: the agent
//! owns the link handle, so this module only hands it the publishes), and a command (argv, never a
//! shell, the event JSON on stdin, killed after its timeout).
//!
//! Delivery never blocks evaluation: file and command outputs run on one worker task fed by a
//! bounded queue ([`QUEUE_CAPACITY`]; when full the event is dropped for those outputs with a
//! warning — it is already in the violation store). Each delivery is tried [`ATTEMPTS`] times with
//! a growing pause; a failure is logged once per episode per output (until it works again).
//! MQTT publishes the link cannot take are kept in a bounded queue ([`QUEUE_CAPACITY`], oldest
//! dropped) and offered again on the next connection. `via = "tap"` alarms go to the local broker
//! named by `[tap]` over a connection of their own (client id `<tap client_id>-alarms`; the tap
//! itself never publishes), fed by a bounded queue, reconnecting over the shared MQTT session
//! with the tap's reconnect delays (jittered backoff).
//! spec: detect.md §6.4 (suppressAlerts).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::detect::ViolationEvent;
use crate::tap;
use crate::text::{untrusted, MAX_LOGGED_CHARS};

/// Capacity of the worker queue and of the pending-publish queue.
pub const QUEUE_CAPACITY: usize = 256;

/// Tries per delivery.
pub const ATTEMPTS: u32 = 3;

/// Pause before the second try (doubled for the next).
const FIRST_PAUSE: Duration = Duration::from_millis(500);

/// Most characters of a violation event's JSON in the "Detect alarm." log line (the whole event
/// is in the violation store and the file output).
const EVENT_LOGGED_CHARS: usize = 16 * MAX_LOGGED_CHARS;

/// Most characters of the local broker connection's error in a log line (it may quote the broker).
const ERROR_LOGGED_CHARS: usize = 4 * MAX_LOGGED_CHARS;

/// Where an MQTT alarm output publishes (`via`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The agent's own connection (`[mqtt]`).
    Link,
    /// The local broker of `[tap]`.
    Tap,
}

/// One `[[alarms]]` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The log (always on; listing it is allowed and changes nothing).
    Log,
    /// JSON lines appended to a file.
    File {
        /// The file.
        path: PathBuf,
    },
    /// An MQTT topic.
    Mqtt {
        /// The topic.
        topic: String,
        /// QoS 0, 1 or 2.
        qos: u8,
        /// Which connection.
        via: Via,
    },
    /// A command (argv, never a shell) with the event JSON on stdin.
    Command {
        /// Program and arguments.
        argv: Vec<String>,
        /// Killed after this long.
        timeout: Duration,
    },
}

/// An MQTT alarm for the agent to publish on its link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttAlarm {
    /// Topic.
    pub topic: String,
    /// The event JSON.
    pub payload: Vec<u8>,
    /// QoS.
    pub qos: u8,
}

/// A file or command output, delivered by the worker.
#[derive(Debug, Clone)]
enum Delivery {
    File(PathBuf),
    Command {
        argv: Vec<String>,
        timeout: Duration,
    },
}

/// The configured outputs.
#[derive(Debug)]
pub struct Alarms {
    mqtt: Vec<(String, u8)>,
    worker: Option<mpsc::Sender<Vec<u8>>>,
    /// The local broker publisher (`via = "tap"` outputs).
    local: Option<mpsc::Sender<Vec<u8>>>,
    pending: VecDeque<MqttAlarm>,
    queue_full_logged: bool,
    local_full_logged: bool,
}

impl Alarms {
    /// Sets up the outputs; spawns the worker task when a file or command output exists, and
    /// the local broker publisher for `via = "tap"` outputs (`local` = the `[tap]` broker; call
    /// inside a tokio runtime then).
    pub fn new(outputs: &[Output], local: Option<tap::Settings>) -> Alarms {
        let mut mqtt = Vec::new();
        let mut local_topics = Vec::new();
        let mut deliveries = Vec::new();
        for o in outputs {
            match o {
                Output::Log => {}
                Output::File { path } => deliveries.push(Delivery::File(path.clone())),
                Output::Command { argv, timeout } => deliveries.push(Delivery::Command {
                    argv: argv.clone(),
                    timeout: *timeout,
                }),
                Output::Mqtt {
                    topic,
                    qos,
                    via: Via::Link,
                } => mqtt.push((topic.clone(), *qos)),
                Output::Mqtt {
                    topic,
                    qos,
                    via: Via::Tap,
                } => local_topics.push((topic.clone(), *qos)),
            }
        }
        let worker = (!deliveries.is_empty()).then(|| {
            let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
            tokio::spawn(run_worker(deliveries, rx));
            tx
        });
        let local = match (local_topics.is_empty(), local) {
            (true, _) => None,
            (false, None) => {
                // Invariant: config refuses via = "tap" without an enabled [tap]; defensive.
                warn!(
                    "MQTT alarms via = \"tap\" need an enabled [tap]; those outputs are skipped."
                );
                None
            }
            (false, Some(settings)) => {
                let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
                tokio::spawn(run_local(settings, local_topics, rx));
                Some(tx)
            }
        };
        Alarms {
            mqtt,
            worker,
            local,
            pending: VecDeque::new(),
            queue_full_logged: false,
            local_full_logged: false,
        }
    }

    /// Sends one event to every output; returns the MQTT publishes for the link. Suppressed
    /// events (`notify == false`) are only logged at debug level by the caller.
    pub fn emit(&mut self, event: &ViolationEvent) -> Vec<MqttAlarm> {
        let json = match serde_json::to_vec(event) {
            Ok(j) => j,
            Err(e) => {
                warn!(error = %e, "Cannot encode a violation event.");
                return Vec::new();
            }
        };
        // Names and values may come from a pushed profile or a device's data: escaped, bounded.
        info!(
            violation_id = %event.violation_id,
            profile = %untrusted(&event.security_profile_name),
            behavior = %untrusted(&event.behavior.name),
            event = %untrusted(&String::from_utf8_lossy(&json)).max_chars(EVENT_LOGGED_CHARS),
            "Detect alarm."
        );
        if let Some(tx) = &self.worker {
            match tx.try_send(json.clone()) {
                Ok(()) => self.queue_full_logged = false,
                Err(_) => {
                    if !self.queue_full_logged {
                        warn!("Alarm outputs are behind; this event is not sent to the file/command outputs (it is in the violation store).");
                        self.queue_full_logged = true;
                    }
                }
            }
        }
        if let Some(tx) = &self.local {
            match tx.try_send(json.clone()) {
                Ok(()) => self.local_full_logged = false,
                Err(_) => {
                    if !self.local_full_logged {
                        warn!("The local broker alarm output is behind; this event is not published there (it is in the violation store).");
                        self.local_full_logged = true;
                    }
                }
            }
        }
        self.mqtt
            .iter()
            .map(|(topic, qos)| MqttAlarm {
                topic: topic.clone(),
                payload: json.clone(),
                qos: *qos,
            })
            .collect()
    }

    /// Keeps an MQTT alarm the link could not take, for [`Self::take_pending`] (oldest dropped
    /// beyond [`QUEUE_CAPACITY`]).
    pub fn keep(&mut self, alarm: MqttAlarm) {
        if self.pending.len() >= QUEUE_CAPACITY {
            self.pending.pop_front();
            warn!("Too many MQTT alarms waiting for the link; the oldest is dropped (it is in the violation store).");
        }
        self.pending.push_back(alarm);
    }

    /// The kept MQTT alarms, oldest first.
    pub fn take_pending(&mut self) -> Vec<MqttAlarm> {
        self.pending.drain(..).collect()
    }
}

/// Publishes alarms on the local broker until the [`Alarms`] is dropped, over the shared MQTT
/// session (the tap's connection settings, client id `<tap client_id>-alarms`, the backoff
/// starting over at every CONNACK). A failure is logged once per outage.
async fn run_local(
    settings: tap::Settings,
    topics: Vec<(String, u8)>,
    mut rx: mpsc::Receiver<Vec<u8>>,
) {
    use crate::mqtt::session::{Session, SessionEvent};
    use rumqttc::QoS;
    let client_id = format!("{}-alarms", settings.client_id);
    let mut options = tap::session_options(&settings, &client_id);
    // Room for a queue's worth of alarms while the connection is down.
    options.request_channel_capacity = QUEUE_CAPACITY;
    let mut session = match Session::new(options) {
        Ok(s) => s,
        Err(e) => {
            let e = tap::Error::from(e);
            warn!(error = %e, "Cannot set up the local broker alarm connection; via = \"tap\" alarms are not published (they are in the violation store).");
            while rx.recv().await.is_some() {}
            return;
        }
    };
    let client = session.client();
    let qos = |q: u8| match q {
        0 => QoS::AtMostOnce,
        2 => QoS::ExactlyOnce,
        _ => QoS::AtLeastOnce,
    };
    let mut failing = false;
    let mut full_logged = false;
    loop {
        // Alarms wait in `rx` while the session waits out its backoff.
        let accepting = !session.backing_off();
        tokio::select! {
            msg = rx.recv(), if accepting => {
                let Some(json) = msg else {
                    session.disconnect().await;
                    return;
                };
                for (topic, q) in &topics {
                    match client.try_publish(topic.as_str(), qos(*q), false, json.clone()) {
                        Ok(()) => full_logged = false,
                        Err(e) if !full_logged => {
                            warn!(%topic, error = %e, "Local broker alarm publish dropped (queue full); the event is in the violation store.");
                            full_logged = true;
                        }
                        Err(_) => {}
                    }
                }
            }
            event = session.next() => match event {
                SessionEvent::Connected { .. } => {
                    if failing {
                        info!(client_id = %client_id, "Local broker alarm connection works again.");
                    }
                    failing = false;
                }
                SessionEvent::Failed { error, .. } if !failing => {
                    let error = untrusted(&error.to_string()).max_chars(ERROR_LOGGED_CHARS).to_string();
                    warn!(client_id = %client_id, error = %error, "Cannot reach the local broker for alarms; retrying (events stay in the violation store).");
                    failing = true;
                }
                _ => {}
            }
        }
    }
}

async fn run_worker(deliveries: Vec<Delivery>, mut rx: mpsc::Receiver<Vec<u8>>) {
    let mut failing = vec![false; deliveries.len()];
    while let Some(json) = rx.recv().await {
        for (i, d) in deliveries.iter().enumerate() {
            let mut pause = FIRST_PAUSE;
            let mut result = Ok(());
            for attempt in 1..=ATTEMPTS {
                result = deliver(d, &json).await;
                if result.is_ok() || attempt == ATTEMPTS {
                    break;
                }
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            match (result, failing[i]) {
                (Ok(()), true) => {
                    info!(output = %describe(d), "Alarm output works again.");
                    failing[i] = false;
                }
                (Err(e), false) => {
                    warn!(output = %describe(d), error = %e, attempts = ATTEMPTS, "Alarm output failed; the event is in the violation store. Further failures are not logged until it works again.");
                    failing[i] = true;
                }
                _ => {}
            }
        }
    }
}

fn describe(d: &Delivery) -> String {
    match d {
        Delivery::File(p) => format!("file {}", p.display()),
        Delivery::Command { argv, .. } => format!("command {}", argv.join(" ")),
    }
}

async fn deliver(d: &Delivery, json: &[u8]) -> Result<(), String> {
    match d {
        Delivery::File(path) => {
            let path = path.clone();
            let mut line = json.to_vec();
            line.push(b'\n');
            // std::fs off the agent loop (tokio's fs feature is not enabled).
            tokio::task::spawn_blocking(move || {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)?;
                // One write per line, so concurrent appenders never interleave within a line.
                f.write_all(&line)
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
        }
        Delivery::Command { argv, timeout } => {
            let (program, args) = argv.split_first().ok_or("empty argv")?;
            let mut child = tokio::process::Command::new(program)
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot start: {e}"))?;
            let run = async {
                if let Some(mut stdin) = child.stdin.take() {
                    // A command that does not read stdin is fine: ignore a broken pipe.
                    let _ = stdin.write_all(json).await;
                    let _ = stdin.write_all(b"\n").await;
                }
                child.wait().await
            };
            match tokio::time::timeout(*timeout, run).await {
                Ok(Ok(status)) if status.success() => Ok(()),
                Ok(Ok(status)) => Err(format!("exited with {status}")),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("killed after {} s", timeout.as_secs())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::engine::{DetectEngine, DeviceReport, EngineSettings, PortList};
    use crate::detect::{SecurityProfile, ValidationContext};

    fn event() -> ViolationEvent {
        let p: SecurityProfile = serde_json::from_str(
            r#"{"securityProfileName":"P","behaviors":[{"name":"ports","metric":"aws:listening-tcp-ports",
            "criteria":{"comparisonOperator":"in-port-set","value":{"ports":[1]}}}]}"#,
        )
        .unwrap();
        let mut e = DetectEngine::new(
            EngineSettings::new("t"),
            &[p],
            &ValidationContext::default(),
        );
        let r = DeviceReport {
            tcp_ports: Some(PortList {
                ports: vec![8080],
                total: Some(1),
            }),
            ..DeviceReport::default()
        };
        e.evaluate_report(&r, 1_764_000_000_000).remove(0).event
    }

    async fn wait_for_lines(path: &std::path::Path, n: usize) -> String {
        for _ in 0..200 {
            if let Ok(t) = std::fs::read_to_string(path) {
                if t.lines().count() >= n {
                    return t;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{} never got {n} lines", path.display());
    }

    #[tokio::test]
    async fn file_and_command_outputs_get_the_event_json_and_mqtt_is_handed_back() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("alarms.jsonl");
        let copied = dir.path().join("copied.json");
        let mut a = Alarms::new(
            &[
                Output::Log,
                Output::File { path: file.clone() },
                Output::Command {
                    argv: vec![
                        "/bin/sh".into(),
                        "-c".into(),
                        format!("cat > {}", copied.display()),
                    ],
                    timeout: Duration::from_secs(10),
                },
                Output::Mqtt {
                    topic: "alarms/t".into(),
                    qos: 1,
                    via: Via::Link,
                },
            ],
            None,
        );
        let ev = event();
        let mqtt = a.emit(&ev);
        assert_eq!(mqtt.len(), 1);
        assert_eq!(mqtt[0].topic, "alarms/t");
        let back: ViolationEvent = serde_json::from_slice(&mqtt[0].payload).unwrap();
        assert_eq!(back, ev);
        let text = wait_for_lines(&file, 1).await;
        let line: ViolationEvent = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line.violation_id, ev.violation_id);
        let text = wait_for_lines(&copied, 1).await;
        assert!(text.contains(&ev.violation_id));
    }

    #[tokio::test]
    async fn a_failing_command_is_retried_and_never_blocks_emit() {
        let dir = tempfile::tempdir().unwrap();
        let count = dir.path().join("count");
        let mut a = Alarms::new(
            &[Output::Command {
                argv: vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    format!("echo x >> {}; exit 1", count.display()),
                ],
                timeout: Duration::from_secs(10),
            }],
            None,
        );
        assert!(a.emit(&event()).is_empty());
        let text = wait_for_lines(&count, ATTEMPTS as usize).await;
        assert_eq!(text.lines().count(), ATTEMPTS as usize);
    }

    #[test]
    fn kept_publishes_are_bounded_oldest_dropped() {
        let mut a = Alarms::new(&[], None);
        for i in 0..QUEUE_CAPACITY + 2 {
            a.keep(MqttAlarm {
                topic: format!("t/{i}"),
                payload: Vec::new(),
                qos: 0,
            });
        }
        let p = a.take_pending();
        assert_eq!(p.len(), QUEUE_CAPACITY);
        assert_eq!(p[0].topic, "t/2");
    }
}

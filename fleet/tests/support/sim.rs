//! A simulated fleet: realistic metrics reports built with the agent's own report encoder
//! (`defender_agent::report::encode`: listening TCP/UDP ports, network counters, established
//! connections), published over real MQTT by devices that behave like the agent: each device
//! sends its reports in order, one at a time, and re-publishes a report that got no answer
//! within `retry_after` (its answer timeout) until it is answered.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use defender_agent::report::{
    encode, ConnectionList, Format, KeySet, Metrics, MetricsReport, NetworkStats, PortList, VERSION,
};
use defender_agent::sample::{Connection, ListeningPort};

use super::mqtt::TestClient;

/// What one report of a simulated device says.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    /// `network_stats.bytes_out` (the other counters follow from it).
    pub bytes_out: u64,
    /// Listening TCP ports.
    pub tcp_ports: Vec<u16>,
    /// Established connections.
    pub connections: usize,
}

impl Shape {
    /// A quiet device: ports 22 and 443, two connections.
    pub fn normal(bytes_out: u64) -> Shape {
        Shape {
            bytes_out,
            tcp_ports: vec![22, 443],
            connections: 2,
        }
    }
}

/// The report `rid` of a device in `shape`.
pub fn report(rid: u64, shape: &Shape) -> MetricsReport {
    let ports = |ps: &[u16]| PortList {
        ports: ps
            .iter()
            .map(|&port| ListeningPort {
                port,
                interface: None,
            })
            .collect(),
        total: ps.len() as u64,
    };
    let connections: Vec<Connection> = (0..shape.connections)
        .map(|i| Connection {
            remote: SocketAddr::from((
                Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250 + 1) as u8),
                443,
            )),
            local_port: 40_000 + i as u16,
            local_interface: Some("eth0".to_owned()),
        })
        .collect();
    MetricsReport {
        report_id: rid,
        version: VERSION.to_owned(),
        metrics: Some(Metrics {
            listening_tcp_ports: Some(ports(&shape.tcp_ports)),
            listening_udp_ports: Some(ports(&[68, 123])),
            network_stats: Some(NetworkStats {
                bytes_in: shape.bytes_out / 2 + 100,
                bytes_out: shape.bytes_out,
                packets_in: shape.bytes_out / 1000 + 1,
                packets_out: shape.bytes_out / 500 + 1,
            }),
            tcp_connections: Some(ConnectionList {
                total: connections.len() as u64,
                connections,
            }),
        }),
        custom_metrics: Vec::new(),
    }
}

/// One simulated device and the reports it will send, in order.
#[derive(Debug, Clone)]
pub struct Device {
    /// Thing name.
    pub thing: String,
    /// Wire format.
    pub format: Format,
    /// (report id, payload), in sending order.
    pub reports: Vec<(u64, Vec<u8>)>,
}

impl Device {
    /// A device sending `shapes` as reports `rids` (same length), in `format` with `keys`.
    pub fn new(thing: &str, format: Format, keys: KeySet, reports: &[(u64, Shape)]) -> Device {
        Device {
            thing: thing.to_owned(),
            format,
            reports: reports
                .iter()
                .map(|(rid, s)| (*rid, encode(&report(*rid, s), format, keys)))
                .collect(),
        }
    }
}

/// What the devices saw.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// (thing, report id) answered accepted.
    pub accepted: Vec<(String, u64)>,
    /// (thing, report id, ErrorCode) answered rejected.
    pub rejected: Vec<(String, u64, String)>,
    /// PUBLISHes sent, first sends and re-sends.
    pub published: usize,
    /// Re-sends of a report left unanswered for `retry_after`.
    pub republished: usize,
}

/// Sends every device's reports like the agent does (in order, one in flight per device,
/// re-published after `retry_after` without an answer) until each is answered; `progress` is
/// called with the number of reports answered so far after every pass (e.g. to kill an instance
/// mid-run). Fails the test if it is not done within `timeout`.
pub async fn send_like_devices(
    client: &TestClient,
    devices: &[Device],
    retry_after: Duration,
    timeout: Duration,
    mut progress: impl FnMut(usize),
) -> Outcome {
    let start = Instant::now();
    let mut out = Outcome::default();
    let mut next = vec![0usize; devices.len()];
    let mut sent_at = vec![start; devices.len()];
    for (i, d) in devices.iter().enumerate() {
        if let Some((_, payload)) = d.reports.first() {
            client
                .publish_report(&d.thing, d.format, payload.clone())
                .await;
            out.published += 1;
            sent_at[i] = Instant::now();
        }
    }
    let total: usize = devices.iter().map(|d| d.reports.len()).sum();
    let mut answered = 0;
    loop {
        for (i, d) in devices.iter().enumerate() {
            let Some((rid, payload)) = d.reports.get(next[i]) else {
                continue;
            };
            if let Some(a) = client.answer_for(&d.thing, *rid) {
                if a.accepted {
                    out.accepted.push((d.thing.clone(), *rid));
                } else {
                    out.rejected
                        .push((d.thing.clone(), *rid, a.code.clone().unwrap_or_default()));
                }
                answered += 1;
                next[i] += 1;
                if let Some((_, payload)) = d.reports.get(next[i]) {
                    client
                        .publish_report(&d.thing, d.format, payload.clone())
                        .await;
                    out.published += 1;
                    sent_at[i] = Instant::now();
                }
            } else if sent_at[i].elapsed() >= retry_after {
                client
                    .publish_report(&d.thing, d.format, payload.clone())
                    .await;
                out.published += 1;
                out.republished += 1;
                sent_at[i] = Instant::now();
            }
        }
        progress(answered);
        if answered == total {
            return out;
        }
        assert!(
            start.elapsed() < timeout,
            "{answered} of {total} reports answered within {timeout:?} ({} re-sends)",
            out.republished
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Epoch seconds now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

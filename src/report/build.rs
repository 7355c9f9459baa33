//! `ReportBuilder`: turns the samples of one report interval into a [`MetricsReport`].
//!
//! Sampling may run more often than reporting (architecture: "Report cadence vs sample
//! cadence"), so the builder summarises every sample since the previous report:
//!
//! - **Counters** become deltas (spec: D.2). Each sample is compared with the previous successful
//!   one, interface by interface, and the steps are summed. A counter below its previous value was
//!   reset (reboot, interface down/up, driver reload): the step is the new value, never negative
//!   or wrapped. A 32-bit source that wraps looks like a reset too and is undercounted, never
//!   overcounted; the collector reads 64-bit counters.
//! - **Interfaces** that disappear are forgotten (their steps so far stay counted). One that
//!   appears after the first sample is new to the kernel, so its counters started at zero and count
//!   in full. The first sample after start or [`ReportBuilder::rebaseline`] only sets the
//!   baseline, so the first report has no `network_stats` block (no delta exists yet).
//! - **Ports, connections, custom metrics**: the latest successful value within the interval. A
//!   collector that failed for the whole interval leaves its block out (spec: D.9); nothing is
//!   carried into the next interval.
//! - **Lists** are deduplicated (ports, by (port, interface), spec: D.8), sorted, and capped at
//!   `max_list_len`, keeping the first entries in sort order so the sent set does not flap;
//!   `total` is the full count.
//!
//! Bounds: the builder holds one sample's worth of lists and counters, plus one value per custom
//! metric name seen in the interval (bounded by the configuration).

use std::cmp::Ordering;
use std::net::SocketAddr;

use super::{ConnectionList, Metrics, MetricsReport, NetworkStats, PortList, Settings, VERSION};
use crate::custom_metric::{self, CustomRuleError, CustomValue};
use crate::sample::{Connection, InterfaceCounters, ListeningPort, Sample};

/// A report plus the custom metrics left out of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Built {
    /// The report.
    pub report: MetricsReport,
    /// Custom metrics dropped because their name or value breaks the AWS rules (the service would
    /// drop them silently, spec: D.10), with the reason; the caller logs them.
    pub dropped: Vec<(String, CustomRuleError)>,
}

/// Accumulates samples between reports; see the module docs for the rules.
#[derive(Debug, Clone)]
pub struct ReportBuilder {
    max_list_len: usize,
    /// Counters of the last successful interface sample, sorted by name; `None` = no baseline.
    baseline: Option<Vec<InterfaceCounters>>,
    /// Sum of the steps since the last build; `None` = no step yet.
    delta: Option<NetworkStats>,
    tcp_listen: Option<Vec<ListeningPort>>,
    udp_listen: Option<Vec<ListeningPort>>,
    connections: Option<Vec<Connection>>,
    /// Latest value per name, in order of first appearance in the interval (configuration order).
    custom: Vec<(String, CustomValue)>,
}

impl ReportBuilder {
    /// A builder with no baseline.
    pub fn new(settings: &Settings) -> Self {
        ReportBuilder {
            // spec: D.9 — a cap of 0 would send empty lists, which mean "conforming".
            max_list_len: settings.max_list_len.max(1),
            baseline: None,
            delta: None,
            tcp_listen: None,
            udp_listen: None,
            connections: None,
            custom: Vec::new(),
        }
    }

    /// Takes in one sample.
    pub fn observe(&mut self, sample: &Sample) {
        if let Some(interfaces) = &sample.interfaces {
            self.observe_counters(interfaces);
        }
        if let Some(ports) = &sample.tcp_listen {
            self.tcp_listen = Some(ports.clone());
        }
        if let Some(ports) = &sample.udp_listen {
            self.udp_listen = Some(ports.clone());
        }
        if let Some(conns) = &sample.connections {
            self.connections = Some(conns.clone());
        }
        for (name, value) in &sample.custom {
            match self.custom.iter_mut().find(|(n, _)| n == name) {
                Some((_, slot)) => *slot = value.clone(),
                None => self.custom.push((name.clone(), value.clone())),
            }
        }
    }

    fn observe_counters(&mut self, interfaces: &[InterfaceCounters]) {
        let mut current = interfaces.to_vec();
        current.sort_by(|a, b| a.name.cmp(&b.name));
        current.dedup_by(|a, b| a.name == b.name);
        if let Some(previous) = &self.baseline {
            let mut step = NetworkStats::default();
            for cur in &current {
                let prev = previous
                    .binary_search_by(|p| p.name.as_str().cmp(&cur.name))
                    .ok()
                    .and_then(|i| previous.get(i));
                add(&mut step, &counter_step(prev, cur));
            }
            add(self.delta.get_or_insert_with(NetworkStats::default), &step);
        }
        self.baseline = Some(current);
    }

    /// Builds the report for the samples since the last build and starts a new interval (counter
    /// baselines are kept, so the next interval's deltas continue from the last sample).
    pub fn build(&mut self, report_id: u64) -> Built {
        let cap = self.max_list_len;
        let metrics = Metrics {
            listening_tcp_ports: self.tcp_listen.take().map(|p| port_list(p, cap)),
            listening_udp_ports: self.udp_listen.take().map(|p| port_list(p, cap)),
            network_stats: self.delta.take(),
            tcp_connections: self.connections.take().map(|c| connection_list(c, cap)),
        };
        let mut custom_metrics = Vec::new();
        let mut dropped = Vec::new();
        for (name, value) in std::mem::take(&mut self.custom) {
            let checked = custom_metric::check_custom_metric_name(&name)
                .and_then(|()| custom_metric::check_value(&value));
            match checked {
                Ok(()) => custom_metrics.push((name, value)),
                Err(e) => dropped.push((name, e)),
            }
        }
        let report = MetricsReport {
            report_id,
            version: VERSION.to_owned(),
            metrics: (!metrics.is_empty()).then_some(metrics),
            custom_metrics,
        };
        Built { report, dropped }
    }

    /// Forgets counter baselines and the deltas so far (after an outage), so no `network_stats`
    /// block spans the gap: the next sample is a new baseline (spec: D.12).
    pub fn rebaseline(&mut self) {
        self.baseline = None;
        self.delta = None;
    }
}

/// One interface's traffic since its previous sample.
fn counter_step(prev: Option<&InterfaceCounters>, cur: &InterfaceCounters) -> NetworkStats {
    // spec: D.2 — a counter that went backwards was reset: everything it holds is new.
    let d = |p: Option<u64>, c: u64| match p {
        Some(p) if c >= p => c - p,
        _ => c,
    };
    NetworkStats {
        bytes_in: d(prev.map(|p| p.bytes_in), cur.bytes_in),
        bytes_out: d(prev.map(|p| p.bytes_out), cur.bytes_out),
        packets_in: d(prev.map(|p| p.packets_in), cur.packets_in),
        packets_out: d(prev.map(|p| p.packets_out), cur.packets_out),
    }
}

fn add(acc: &mut NetworkStats, step: &NetworkStats) {
    acc.bytes_in = acc.bytes_in.saturating_add(step.bytes_in);
    acc.bytes_out = acc.bytes_out.saturating_add(step.bytes_out);
    acc.packets_in = acc.packets_in.saturating_add(step.packets_in);
    acc.packets_out = acc.packets_out.saturating_add(step.packets_out);
}

fn port_list(mut ports: Vec<ListeningPort>, cap: usize) -> PortList {
    ports.sort_unstable();
    ports.dedup();
    let total = ports.len() as u64;
    ports.truncate(cap);
    PortList { ports, total }
}

fn connection_list(mut connections: Vec<Connection>, cap: usize) -> ConnectionList {
    for c in &mut connections {
        // spec: D.7 — `::ffff:a.b.c.d` becomes `a.b.c.d` so IPv4 CIDR rules match.
        if let SocketAddr::V6(v6) = c.remote {
            if let Some(v4) = v6.ip().to_ipv4_mapped() {
                c.remote = SocketAddr::new(v4.into(), v6.port());
            }
        }
    }
    connections.sort_unstable_by(compare_connections);
    let total = connections.len() as u64;
    connections.truncate(cap);
    ConnectionList { connections, total }
}

/// Remote address, then local port, then interface (the derived order, spelled out so the sent
/// subset stays stable if the struct changes).
fn compare_connections(a: &Connection, b: &Connection) -> Ordering {
    (a.remote, a.local_port, &a.local_interface).cmp(&(b.remote, b.local_port, &b.local_interface))
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn iface(
        name: &str,
        bytes_in: u64,
        bytes_out: u64,
        packets_in: u64,
        packets_out: u64,
    ) -> InterfaceCounters {
        InterfaceCounters {
            name: name.to_owned(),
            bytes_in,
            bytes_out,
            packets_in,
            packets_out,
        }
    }

    fn counters(list: Vec<InterfaceCounters>) -> Sample {
        Sample {
            interfaces: Some(list),
            ..Sample::default()
        }
    }

    fn stats(bytes_in: u64, bytes_out: u64, packets_in: u64, packets_out: u64) -> NetworkStats {
        NetworkStats {
            bytes_in,
            bytes_out,
            packets_in,
            packets_out,
        }
    }

    fn builder(max: usize) -> ReportBuilder {
        ReportBuilder::new(&Settings {
            max_list_len: max,
            ..Settings::default()
        })
    }

    fn network(b: &mut ReportBuilder) -> Option<NetworkStats> {
        b.build(1).report.metrics.and_then(|m| m.network_stats)
    }

    fn port(port: u16, interface: Option<&str>) -> ListeningPort {
        ListeningPort {
            port,
            interface: interface.map(str::to_owned),
        }
    }

    fn conn(remote: &str, local_port: u16) -> Connection {
        Connection {
            remote: remote.parse().unwrap_or_else(|e| panic!("{remote}: {e}")),
            local_port,
            local_interface: Some("eth0".to_owned()),
        }
    }

    #[test]
    fn the_first_report_has_no_network_stats() {
        let mut b = builder(50);
        b.observe(&counters(vec![iface("eth0", 1_000, 2_000, 10, 20)]));
        let built = b.build(1);
        assert_eq!(built.report.metrics, None);
        assert_eq!(built.report.version, VERSION);
    }

    #[test]
    fn deltas_add_up_across_several_samples() {
        let mut b = builder(50);
        b.observe(&counters(vec![iface("eth0", 1_000, 2_000, 10, 20)]));
        assert_eq!(network(&mut b), None);
        b.observe(&counters(vec![iface("eth0", 1_500, 2_100, 15, 21)]));
        b.observe(&counters(vec![iface("eth0", 1_700, 2_400, 18, 25)]));
        assert_eq!(network(&mut b), Some(stats(700, 400, 8, 5)));
        // The next interval starts from the last sample, not from zero.
        b.observe(&counters(vec![iface("eth0", 1_800, 2_400, 19, 25)]));
        assert_eq!(network(&mut b), Some(stats(100, 0, 1, 0)));
    }

    #[test]
    fn deltas_are_summed_over_interfaces() {
        let mut b = builder(50);
        b.observe(&counters(vec![
            iface("eth0", 100, 100, 1, 1),
            iface("wlan0", 10, 10, 1, 1),
        ]));
        b.observe(&counters(vec![
            iface("wlan0", 15, 30, 2, 3),
            iface("eth0", 150, 100, 2, 1),
        ]));
        assert_eq!(network(&mut b), Some(stats(55, 20, 2, 2)));
    }

    #[test]
    fn a_counter_that_goes_backwards_is_a_reset() {
        let mut b = builder(50);
        b.observe(&counters(vec![iface("eth0", 10_000, 20_000, 100, 200)]));
        b.observe(&counters(vec![iface("eth0", 10_500, 20_500, 105, 205)]));
        // Interface down/up mid-interval: counters restart from zero.
        b.observe(&counters(vec![iface("eth0", 300, 400, 3, 4)]));
        assert_eq!(network(&mut b), Some(stats(800, 900, 8, 9)));
    }

    #[test]
    fn a_reset_of_one_counter_leaves_the_others_alone() {
        let mut b = builder(50);
        b.observe(&counters(vec![iface("eth0", 1_000, 1_000, 10, 10)]));
        b.observe(&counters(vec![iface("eth0", 50, 1_200, 12, 11)]));
        assert_eq!(network(&mut b), Some(stats(50, 200, 2, 1)));
    }

    #[test]
    fn counters_above_two_to_the_32_are_kept_whole() {
        let base = 5u64 << 32;
        let mut b = builder(50);
        b.observe(&counters(vec![iface("eth0", base, base, base, base)]));
        b.observe(&counters(vec![iface(
            "eth0",
            base + (3 << 32),
            base + 7,
            base + 1,
            base,
        )]));
        assert_eq!(network(&mut b), Some(stats(3 << 32, 7, 1, 0)));
    }

    #[test]
    fn huge_deltas_saturate_instead_of_wrapping() {
        let mut b = builder(50);
        b.observe(&counters(vec![
            iface("a", 0, 0, 0, 0),
            iface("b", 0, 0, 0, 0),
        ]));
        b.observe(&counters(vec![
            iface("a", u64::MAX, 0, 0, 0),
            iface("b", u64::MAX, 0, 0, 0),
        ]));
        assert_eq!(network(&mut b), Some(stats(u64::MAX, 0, 0, 0)));
    }

    #[test]
    fn a_disappearing_interface_keeps_its_counted_traffic_and_is_then_forgotten() {
        let mut b = builder(50);
        b.observe(&counters(vec![
            iface("eth0", 100, 0, 1, 0),
            iface("ppp0", 50, 0, 1, 0),
        ]));
        b.observe(&counters(vec![
            iface("eth0", 110, 0, 2, 0),
            iface("ppp0", 80, 0, 3, 0),
        ]));
        b.observe(&counters(vec![iface("eth0", 120, 0, 3, 0)]));
        assert_eq!(network(&mut b), Some(stats(50, 0, 4, 0)));
        // ppp0 comes back: a new kernel interface whose counters started at zero.
        b.observe(&counters(vec![
            iface("eth0", 120, 0, 3, 0),
            iface("ppp0", 7, 0, 1, 0),
        ]));
        assert_eq!(network(&mut b), Some(stats(7, 0, 1, 0)));
    }

    #[test]
    fn an_interface_appearing_after_the_first_sample_counts_in_full() {
        let mut b = builder(50);
        b.observe(&counters(vec![iface("eth0", 100, 100, 1, 1)]));
        b.observe(&counters(vec![
            iface("eth0", 100, 100, 1, 1),
            iface("wwan0", 40, 30, 2, 1),
        ]));
        assert_eq!(network(&mut b), Some(stats(40, 30, 2, 1)));
    }

    #[test]
    fn no_interfaces_counted_still_reports_zero_traffic() {
        let mut b = builder(50);
        b.observe(&counters(vec![]));
        b.observe(&counters(vec![]));
        assert_eq!(network(&mut b), Some(stats(0, 0, 0, 0)));
    }

    #[test]
    fn a_failed_counter_sample_is_bridged_by_the_next_one() {
        let mut b = builder(50);
        b.observe(&counters(vec![iface("eth0", 100, 0, 1, 0)]));
        b.observe(&Sample::default());
        b.observe(&counters(vec![iface("eth0", 160, 0, 4, 0)]));
        assert_eq!(network(&mut b), Some(stats(60, 0, 3, 0)));
    }

    #[test]
    fn an_interval_without_a_counter_step_has_no_network_stats() {
        let mut b = builder(50);
        b.observe(&counters(vec![iface("eth0", 100, 0, 1, 0)]));
        b.observe(&counters(vec![iface("eth0", 200, 0, 2, 0)]));
        assert!(network(&mut b).is_some());
        b.observe(&Sample::default());
        assert_eq!(network(&mut b), None);
    }

    #[test]
    fn rebaseline_drops_the_deltas_that_would_span_an_outage() {
        let mut b = builder(50);
        b.observe(&counters(vec![iface("eth0", 100, 0, 1, 0)]));
        b.observe(&counters(vec![iface("eth0", 200, 0, 2, 0)]));
        b.rebaseline();
        b.observe(&counters(vec![iface("eth0", 9_000_000, 0, 9_000, 0)]));
        assert_eq!(network(&mut b), None);
        b.observe(&counters(vec![iface("eth0", 9_000_010, 0, 9_001, 0)]));
        assert_eq!(network(&mut b), Some(stats(10, 0, 1, 0)));
    }

    #[test]
    fn lists_are_sorted_deduplicated_and_capped_with_the_true_total() {
        let mut b = builder(2);
        let ports = vec![
            port(8883, None),
            port(22, Some("eth0")),
            port(443, None),
            port(22, None),
            port(22, Some("eth0")),
        ];
        b.observe(&Sample {
            tcp_listen: Some(ports.clone()),
            ..Sample::default()
        });
        let first = b
            .build(1)
            .report
            .metrics
            .and_then(|m| m.listening_tcp_ports);
        assert_eq!(
            first,
            Some(PortList {
                ports: vec![port(22, None), port(22, Some("eth0"))],
                total: 4,
            })
        );
        // Same set in another order: the same capped subset.
        let mut reversed = ports;
        reversed.reverse();
        b.observe(&Sample {
            tcp_listen: Some(reversed),
            ..Sample::default()
        });
        assert_eq!(
            b.build(2)
                .report
                .metrics
                .and_then(|m| m.listening_tcp_ports),
            first
        );
    }

    #[test]
    fn connections_are_sorted_capped_and_counted() {
        let mut b = builder(2);
        b.observe(&Sample {
            connections: Some(vec![
                conn("[2001:db8::10]:443", 51000),
                conn("203.0.113.10:8883", 49822),
                conn("198.51.100.1:443", 40000),
            ]),
            ..Sample::default()
        });
        let list = b.build(1).report.metrics.and_then(|m| m.tcp_connections);
        assert_eq!(
            list,
            Some(ConnectionList {
                connections: vec![
                    conn("198.51.100.1:443", 40000),
                    conn("203.0.113.10:8883", 49822)
                ],
                total: 3,
            })
        );
    }

    #[test]
    fn ipv4_mapped_remotes_are_normalised() {
        let mut b = builder(50);
        b.observe(&Sample {
            connections: Some(vec![conn("[::ffff:203.0.113.10]:8883", 1)]),
            ..Sample::default()
        });
        let list = b.build(1).report.metrics.and_then(|m| m.tcp_connections);
        let remote = list.and_then(|l| l.connections.first().map(|c| c.remote));
        assert_eq!(remote, "203.0.113.10:8883".parse().ok());
    }

    #[test]
    fn a_zero_cap_still_sends_one_entry() {
        let mut b = builder(0);
        b.observe(&Sample {
            udp_listen: Some(vec![port(53, None), port(5353, None)]),
            ..Sample::default()
        });
        let list = b
            .build(1)
            .report
            .metrics
            .and_then(|m| m.listening_udp_ports);
        assert_eq!(list.map(|l| (l.ports.len(), l.total)), Some((1, 2)));
    }

    #[test]
    fn a_failed_collector_omits_its_block_and_never_sends_an_empty_list() {
        let mut b = builder(50);
        b.observe(&Sample {
            tcp_listen: Some(vec![port(22, None)]),
            udp_listen: None,
            connections: None,
            ..Sample::default()
        });
        let m = b.build(1).report.metrics;
        let m = m.unwrap_or_default();
        assert!(m.listening_tcp_ports.is_some());
        assert_eq!(m.listening_udp_ports, None);
        assert_eq!(m.tcp_connections, None);
    }

    #[test]
    fn a_successful_empty_list_is_sent_as_empty() {
        let mut b = builder(50);
        b.observe(&Sample {
            udp_listen: Some(vec![]),
            ..Sample::default()
        });
        let list = b
            .build(1)
            .report
            .metrics
            .and_then(|m| m.listening_udp_ports);
        assert_eq!(
            list,
            Some(PortList {
                ports: vec![],
                total: 0
            })
        );
    }

    #[test]
    fn the_latest_successful_list_of_the_interval_wins() {
        let mut b = builder(50);
        b.observe(&Sample {
            tcp_listen: Some(vec![port(22, None)]),
            ..Sample::default()
        });
        b.observe(&Sample {
            tcp_listen: Some(vec![port(80, None)]),
            ..Sample::default()
        });
        b.observe(&Sample::default()); // collector failed on the last sample
        let list = b
            .build(1)
            .report
            .metrics
            .and_then(|m| m.listening_tcp_ports);
        assert_eq!(list.map(|l| l.ports), Some(vec![port(80, None)]));
    }

    #[test]
    fn lists_are_not_carried_into_the_next_interval() {
        let mut b = builder(50);
        b.observe(&Sample {
            tcp_listen: Some(vec![port(22, None)]),
            ..Sample::default()
        });
        assert!(b.build(1).report.has_data());
        let built = b.build(2);
        assert_eq!(built.report.metrics, None);
        assert!(!built.report.has_data());
    }

    #[test]
    fn all_collectors_failing_gives_no_metrics_block() {
        let mut b = builder(50);
        b.observe(&Sample::default());
        assert_eq!(b.build(7).report.metrics, None);
    }

    #[test]
    fn invalid_custom_values_are_dropped_and_listed() {
        let mut b = builder(50);
        b.observe(&Sample {
            custom: vec![
                ("cpu_usage".to_owned(), CustomValue::Number(12.5)),
                ("bad_number".to_owned(), CustomValue::Number(f64::NAN)),
                (
                    "ssids".to_owned(),
                    CustomValue::StringList(vec!["has space".to_owned()]),
                ),
                ("aws:reserved".to_owned(), CustomValue::Number(1.0)),
                (
                    "gateways".to_owned(),
                    CustomValue::IpList(vec![IpAddr::from([192, 0, 2, 1])]),
                ),
            ],
            ..Sample::default()
        });
        let built = b.build(1);
        let kept: Vec<&str> = built
            .report
            .custom_metrics
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(kept, vec!["cpu_usage", "gateways"]);
        let dropped: Vec<&str> = built.dropped.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(dropped, vec!["bad_number", "ssids", "aws:reserved"]);
        assert!(matches!(
            built.dropped.first(),
            Some((_, CustomRuleError::NotFinite(_)))
        ));
    }

    #[test]
    fn custom_metrics_keep_configuration_order_and_the_latest_value() {
        let mut b = builder(50);
        let sample = |v: f64| Sample {
            custom: vec![
                ("zeta".to_owned(), CustomValue::Number(v)),
                ("alpha".to_owned(), CustomValue::Number(1.0)),
            ],
            ..Sample::default()
        };
        b.observe(&sample(1.0));
        b.observe(&Sample {
            custom: vec![("alpha".to_owned(), CustomValue::Number(2.0))],
            ..Sample::default()
        });
        b.observe(&sample(3.0));
        let built = b.build(1);
        assert_eq!(
            built.report.custom_metrics,
            vec![
                ("zeta".to_owned(), CustomValue::Number(3.0)),
                ("alpha".to_owned(), CustomValue::Number(1.0)),
            ]
        );
        assert!(b.build(2).report.custom_metrics.is_empty());
    }
}

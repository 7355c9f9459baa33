//! The two key sets of a report (long and short names), shared by the encoders and the reader.
//!
//! spec: metrics-report.md A.2 (tables), D.11 (short mode shortens every nested key). Custom metric
//! names and their inner keys (`number`, `number_list`, …) have no short form and are not here.

use super::KeySet;

/// Every fixed key of a report, in one key set.
#[derive(Debug)]
pub(crate) struct Keys {
    pub header: &'static str,
    pub report_id: &'static str,
    pub version: &'static str,
    pub metrics: &'static str,
    pub custom_metrics: &'static str,
    pub listening_tcp_ports: &'static str,
    pub listening_udp_ports: &'static str,
    pub ports: &'static str,
    pub port: &'static str,
    pub interface: &'static str,
    pub total: &'static str,
    pub network_stats: &'static str,
    pub bytes_in: &'static str,
    pub bytes_out: &'static str,
    pub packets_in: &'static str,
    pub packets_out: &'static str,
    pub tcp_connections: &'static str,
    pub established_connections: &'static str,
    pub connections: &'static str,
    pub remote_addr: &'static str,
    pub local_port: &'static str,
    pub local_interface: &'static str,
}

pub(crate) const LONG: Keys = Keys {
    header: "header",
    report_id: "report_id",
    version: "version",
    metrics: "metrics",
    custom_metrics: "custom_metrics",
    listening_tcp_ports: "listening_tcp_ports",
    listening_udp_ports: "listening_udp_ports",
    ports: "ports",
    port: "port",
    interface: "interface",
    total: "total",
    network_stats: "network_stats",
    bytes_in: "bytes_in",
    bytes_out: "bytes_out",
    packets_in: "packets_in",
    packets_out: "packets_out",
    tcp_connections: "tcp_connections",
    established_connections: "established_connections",
    connections: "connections",
    remote_addr: "remote_addr",
    local_port: "local_port",
    local_interface: "local_interface",
};

pub(crate) const SHORT: Keys = Keys {
    header: "hed",
    report_id: "rid",
    version: "v",
    metrics: "met",
    custom_metrics: "cmet",
    listening_tcp_ports: "tp",
    listening_udp_ports: "up",
    ports: "pts",
    port: "pt",
    interface: "if",
    total: "t",
    network_stats: "ns",
    bytes_in: "bi",
    bytes_out: "bo",
    packets_in: "pi",
    packets_out: "po",
    tcp_connections: "tc",
    established_connections: "ec",
    connections: "cs",
    remote_addr: "rad",
    local_port: "lp",
    local_interface: "li",
};

/// The inner keys of a custom metric value (same in both key sets).
pub(crate) const CUSTOM_VALUE_KEYS: [&str; 4] = ["number", "number_list", "string_list", "ip_list"];

impl KeySet {
    pub(crate) fn keys(self) -> &'static Keys {
        match self {
            KeySet::Long => &LONG,
            KeySet::Short => &SHORT,
        }
    }

    pub(crate) fn other(self) -> KeySet {
        match self {
            KeySet::Long => KeySet::Short,
            KeySet::Short => KeySet::Long,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(k: &Keys) -> Vec<&'static str> {
        vec![
            k.header,
            k.report_id,
            k.version,
            k.metrics,
            k.custom_metrics,
            k.listening_tcp_ports,
            k.listening_udp_ports,
            k.ports,
            k.port,
            k.interface,
            k.total,
            k.network_stats,
            k.bytes_in,
            k.bytes_out,
            k.packets_in,
            k.packets_out,
            k.tcp_connections,
            k.established_connections,
            k.connections,
            k.remote_addr,
            k.local_port,
            k.local_interface,
        ]
    }

    #[test]
    fn no_key_belongs_to_both_sets() {
        let long = all(&LONG);
        for short in all(&SHORT) {
            assert!(!long.contains(&short), "{short} is in both key sets");
        }
    }

    #[test]
    fn every_short_key_differs_from_its_long_key() {
        for (l, s) in all(&LONG).into_iter().zip(all(&SHORT)) {
            assert_ne!(l, s);
            assert!(s.len() <= 4, "{s} is not short");
        }
    }
}

//! `Sample`: everything measured on the device at one instant, before it becomes a report.
//!
//! A block that is `None` means its collector failed: the report leaves the block out, because an
//! empty list means "conforming" to AWS and would clear real violations (spec: metrics-report.md D.9).

use std::net::SocketAddr;

use crate::custom_metric::CustomValue;

/// Cumulative kernel counters of one network interface (from `/proc/net/dev`), 64-bit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceCounters {
    /// Interface name, e.g. `eth0`, `br-lan`, `eth0.100`.
    pub name: String,
    /// Received bytes since the counter started.
    pub bytes_in: u64,
    /// Transmitted bytes.
    pub bytes_out: u64,
    /// Received packets.
    pub packets_in: u64,
    /// Transmitted packets.
    pub packets_out: u64,
}

/// One listening port. `interface` is `None` for a wildcard listener (`0.0.0.0` / `::`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListeningPort {
    /// Local port, > 0.
    pub port: u16,
    /// Interface that owns the bound address; `None` for wildcard listeners.
    pub interface: Option<String>,
}

/// One established TCP connection.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Connection {
    /// Remote end; IPv4-mapped IPv6 addresses are already normalised to IPv4.
    pub remote: SocketAddr,
    /// Local port.
    pub local_port: u16,
    /// Interface that owns the local address, when it could be resolved.
    pub local_interface: Option<String>,
}

/// Everything measured at one instant. `None` = the collector failed (block omitted from reports).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// Per-interface cumulative counters, already filtered by include/exclude patterns.
    pub interfaces: Option<Vec<InterfaceCounters>>,
    /// Listening TCP ports, deduplicated by (port, interface).
    pub tcp_listen: Option<Vec<ListeningPort>>,
    /// Listening (bound, unconnected) UDP ports, deduplicated by (port, interface).
    pub udp_listen: Option<Vec<ListeningPort>>,
    /// Established TCP connections.
    pub connections: Option<Vec<Connection>>,
    /// Custom metrics in configuration order; a metric whose source failed is absent.
    pub custom: Vec<(String, CustomValue)>,
}

//! The one `Serialize` view of a report, parameterised by key set; both encoders drive it.
//!
//! Maps always declare their exact length (CBOR needs definite lengths, spec: A.7); optional
//! fields are omitted, never written as null. Borrowed throughout: no intermediate value tree.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use super::keys::Keys;
use super::{ConnectionList, KeySet, Metrics, MetricsReport, NetworkStats, PortList};
use crate::metric::CustomValue;
use crate::sample::{Connection, ListeningPort};

/// Largest magnitude written as an integer: beyond 2^53 an f64 no longer holds every integer.
const MAX_EXACT_INTEGER: f64 = 9_007_199_254_740_992.0;

/// A report seen through one key set.
pub(crate) struct ReportView<'a> {
    report: &'a MetricsReport,
    keys: &'static Keys,
}

impl<'a> ReportView<'a> {
    pub(crate) fn new(report: &'a MetricsReport, keys: KeySet) -> Self {
        ReportView {
            report,
            keys: keys.keys(),
        }
    }

    /// A rough size guess so the output buffer rarely grows.
    pub(crate) fn size_hint(&self) -> usize {
        let m = self.report.metrics.as_ref();
        let ports = m
            .map(|m| {
                m.listening_tcp_ports.as_ref().map_or(0, |p| p.ports.len())
                    + m.listening_udp_ports.as_ref().map_or(0, |p| p.ports.len())
            })
            .unwrap_or(0);
        let conns = m
            .and_then(|m| m.tcp_connections.as_ref())
            .map_or(0, |c| c.connections.len());
        256 + ports * 32 + conns * 72 + self.report.custom_metrics.len() * 64
    }
}

/// Writes a map with a known number of entries.
fn map<S: Serializer>(s: S, len: usize) -> Result<S::SerializeMap, S::Error> {
    s.serialize_map(Some(len))
}

impl Serialize for ReportView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (r, k) = (self.report, self.keys);
        let len = 1 + usize::from(r.metrics.is_some()) + usize::from(!r.custom_metrics.is_empty());
        let mut m = map(s, len)?;
        m.serialize_entry(k.header, &Header { r, k })?;
        if let Some(metrics) = &r.metrics {
            m.serialize_entry(k.metrics, &MetricsView { m: metrics, k })?;
        }
        if !r.custom_metrics.is_empty() {
            m.serialize_entry(k.custom_metrics, &CustomView(&r.custom_metrics))?;
        }
        m.end()
    }
}

struct Header<'a> {
    r: &'a MetricsReport,
    k: &'static Keys,
}

impl Serialize for Header<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = map(s, 2)?;
        m.serialize_entry(self.k.report_id, &self.r.report_id)?;
        m.serialize_entry(self.k.version, &self.r.version)?;
        m.end()
    }
}

struct MetricsView<'a> {
    m: &'a Metrics,
    k: &'static Keys,
}

impl Serialize for MetricsView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (x, k) = (self.m, self.k);
        let len = usize::from(x.listening_tcp_ports.is_some())
            + usize::from(x.listening_udp_ports.is_some())
            + usize::from(x.network_stats.is_some())
            + usize::from(x.tcp_connections.is_some());
        let mut m = map(s, len)?;
        if let Some(p) = &x.listening_tcp_ports {
            m.serialize_entry(k.listening_tcp_ports, &PortsView { p, k })?;
        }
        if let Some(p) = &x.listening_udp_ports {
            m.serialize_entry(k.listening_udp_ports, &PortsView { p, k })?;
        }
        if let Some(n) = &x.network_stats {
            m.serialize_entry(k.network_stats, &StatsView { n, k })?;
        }
        if let Some(c) = &x.tcp_connections {
            m.serialize_entry(k.tcp_connections, &TcpView { c, k })?;
        }
        m.end()
    }
}

struct PortsView<'a> {
    p: &'a PortList,
    k: &'static Keys,
}

impl Serialize for PortsView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let k = self.k;
        let mut m = map(s, 2)?;
        m.serialize_entry(k.ports, &List(&self.p.ports, k))?;
        m.serialize_entry(k.total, &self.p.total)?;
        m.end()
    }
}

/// A list of items that each need the key set.
struct List<'a, T>(&'a [T], &'static Keys);

impl Serialize for List<'_, ListeningPort> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let k = self.1;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for p in self.0 {
            seq.serialize_element(&PortView { p, k })?;
        }
        seq.end()
    }
}

impl Serialize for List<'_, Connection> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let k = self.1;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for c in self.0 {
            seq.serialize_element(&ConnectionView { c, k })?;
        }
        seq.end()
    }
}

struct PortView<'a> {
    p: &'a ListeningPort,
    k: &'static Keys,
}

impl Serialize for PortView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (p, k) = (self.p, self.k);
        // spec: D.6 — a wildcard listener has no interface; the field is omitted.
        let mut m = map(s, 1 + usize::from(p.interface.is_some()))?;
        m.serialize_entry(k.port, &p.port)?;
        if let Some(name) = &p.interface {
            m.serialize_entry(k.interface, name)?;
        }
        m.end()
    }
}

struct StatsView<'a> {
    n: &'a NetworkStats,
    k: &'static Keys,
}

impl Serialize for StatsView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (n, k) = (self.n, self.k);
        let mut m = map(s, 4)?;
        m.serialize_entry(k.bytes_in, &n.bytes_in)?;
        m.serialize_entry(k.bytes_out, &n.bytes_out)?;
        m.serialize_entry(k.packets_in, &n.packets_in)?;
        m.serialize_entry(k.packets_out, &n.packets_out)?;
        m.end()
    }
}

struct TcpView<'a> {
    c: &'a ConnectionList,
    k: &'static Keys,
}

impl Serialize for TcpView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = map(s, 1)?;
        m.serialize_entry(
            self.k.established_connections,
            &EstablishedView(self.c, self.k),
        )?;
        m.end()
    }
}

struct EstablishedView<'a>(&'a ConnectionList, &'static Keys);

impl Serialize for EstablishedView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (c, k) = (self.0, self.1);
        let mut m = map(s, 2)?;
        m.serialize_entry(k.connections, &List(&c.connections, k))?;
        m.serialize_entry(k.total, &c.total)?;
        m.end()
    }
}

struct ConnectionView<'a> {
    c: &'a Connection,
    k: &'static Keys,
}

impl Serialize for ConnectionView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (c, k) = (self.c, self.k);
        let mut m = map(s, 2 + usize::from(c.local_interface.is_some()))?;
        m.serialize_entry(k.remote_addr, &RemoteAddr(c.remote))?;
        m.serialize_entry(k.local_port, &c.local_port)?;
        if let Some(name) = &c.local_interface {
            m.serialize_entry(k.local_interface, name)?;
        }
        m.end()
    }
}

/// `"ip:port"`, or `"[v6]:port"` without scope id or flow info (spec: A.2, D.7; PY precedent).
pub(crate) struct RemoteAddr(pub SocketAddr);

impl fmt::Display for RemoteAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            SocketAddr::V4(a) => write!(f, "{}:{}", a.ip(), a.port()),
            SocketAddr::V6(a) => write!(f, "[{}]:{}", a.ip(), a.port()),
        }
    }
}

impl Serialize for RemoteAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The `custom_metrics` block: names verbatim, in the given order.
struct CustomView<'a>(&'a [(String, CustomValue)]);

impl Serialize for CustomView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = map(s, self.0.len())?;
        for (name, value) in self.0 {
            m.serialize_entry(name, &Wrapped(value))?;
        }
        m.end()
    }
}

/// `[ { <type key>: value } ]`: the one-element array every custom metric needs, `number`
/// included (spec: A.2, D.10).
struct Wrapped<'a>(&'a CustomValue);

impl Serialize for Wrapped<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(1))?;
        seq.serialize_element(&Inner(self.0))?;
        seq.end()
    }
}

struct Inner<'a>(&'a CustomValue);

impl Serialize for Inner<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = self.0;
        let mut m = map(s, 1)?;
        let key = v.metric_type().report_key();
        match v {
            CustomValue::Number(n) => m.serialize_entry(key, &Number(*n))?,
            CustomValue::NumberList(ns) => m.serialize_entry(key, &Numbers(ns))?,
            CustomValue::StringList(ss) => m.serialize_entry(key, ss)?,
            CustomValue::IpList(ips) => m.serialize_entry(key, &Ips(ips))?,
        }
        m.end()
    }
}

/// A custom number: integral values as integers (41, not 41.0), others as float64.
struct Number(f64);

impl Serialize for Number {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = self.0;
        if v.fract() == 0.0 && v.abs() <= MAX_EXACT_INTEGER {
            // The range check makes both casts exact.
            if v >= 0.0 {
                s.serialize_u64(v as u64)
            } else {
                s.serialize_i64(v as i64)
            }
        } else {
            s.serialize_f64(v)
        }
    }
}

struct Numbers<'a>(&'a [f64]);

impl Serialize for Numbers<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for v in self.0 {
            seq.serialize_element(&Number(*v))?;
        }
        seq.end()
    }
}

struct Ips<'a>(&'a [IpAddr]);

impl Serialize for Ips<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for ip in self.0 {
            seq.serialize_element(&IpText(*ip))?;
        }
        seq.end()
    }
}

struct IpText(IpAddr);

impl Serialize for IpText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

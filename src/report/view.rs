//! The one `Serialize` view of a report, parameterised by key set; both encoders drive it.
//!
//! Maps always declare their exact length (CBOR needs definite lengths, spec: A.7); optional
//! fields are omitted, never written as null. Borrowed throughout: no intermediate value tree.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use super::keys::Keys;
use super::{ConnectionList, KeySet, Metrics, MetricsReport, NetworkStats, PortList};
use crate::custom_metric::CustomValue;
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

impl Serialize for RemoteAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut text = AddrText::new();
        match self.0 {
            SocketAddr::V4(a) => text.ipv4(a.ip().octets()),
            SocketAddr::V6(a) => {
                text.byte(b'[');
                text.ipv6(a.ip());
                text.byte(b']');
            }
        }
        text.byte(b':');
        text.decimal(self.0.port());
        s.serialize_str(text.as_str())
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
        let mut text = AddrText::new();
        match self.0 {
            IpAddr::V4(ip) => text.ipv4(ip.octets()),
            IpAddr::V6(ip) => text.ipv6(&ip),
        }
        s.serialize_str(text.as_str())
    }
}

/// Address text built on the stack without `core::fmt`, which was the encoders' hot spot (about
/// 40% of encode time). Produces exactly what `Display` produces (RFC 5952 for IPv6, `::ffff:`
/// dotted form for IPv4-mapped); a test compares the two.
pub(crate) struct AddrText {
    // Longest text: "[" + 39-char IPv6 + "]:" + 5-digit port = 47 bytes.
    buf: [u8; 48],
    len: usize,
}

impl AddrText {
    pub(crate) fn new() -> Self {
        AddrText {
            buf: [0; 48],
            len: 0,
        }
    }

    #[inline]
    fn byte(&mut self, b: u8) {
        // Invariant: callers write at most 47 bytes (see `buf`), so the slot always exists.
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
    }

    fn decimal(&mut self, v: u16) {
        let mut digits = [0u8; 5];
        let mut n = v;
        let mut i = digits.len();
        loop {
            // Invariant: a u16 has at most 5 decimal digits, so `i` stops at 0.
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for &d in &digits[i..] {
            self.byte(d);
        }
    }

    fn hex(&mut self, v: u16) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut started = false;
        for shift in [12u16, 8, 4, 0] {
            let nibble = usize::from((v >> shift) & 0xf);
            if started || nibble != 0 || shift == 0 {
                started = true;
                // Invariant: nibble is masked to 0..=15.
                self.byte(HEX[nibble]);
            }
        }
    }

    pub(crate) fn ipv4(&mut self, octets: [u8; 4]) {
        for (i, o) in octets.into_iter().enumerate() {
            if i > 0 {
                self.byte(b'.');
            }
            if o >= 100 {
                self.byte(b'0' + o / 100);
            }
            if o >= 10 {
                self.byte(b'0' + (o / 10) % 10);
            }
            self.byte(b'0' + o % 10);
        }
    }

    pub(crate) fn ipv6(&mut self, ip: &Ipv6Addr) {
        if let Some(v4) = ip.to_ipv4_mapped() {
            for &b in b"::ffff:" {
                self.byte(b);
            }
            self.ipv4(v4.octets());
            return;
        }
        let segments = ip.segments();
        // RFC 5952: the longest run (first on ties) of two or more zero groups becomes "::".
        let (mut best_start, mut best_len, mut start, mut len) = (0, 0, 0, 0);
        for (i, &seg) in segments.iter().enumerate() {
            if seg == 0 {
                if len == 0 {
                    start = i;
                }
                len += 1;
                if len > best_len {
                    (best_start, best_len) = (start, len);
                }
            } else {
                len = 0;
            }
        }
        let groups = |text: &mut Self, part: &[u16]| {
            for (i, &seg) in part.iter().enumerate() {
                if i > 0 {
                    text.byte(b':');
                }
                text.hex(seg);
            }
        };
        if best_len > 1 {
            groups(self, segments.get(..best_start).unwrap_or(&[]));
            self.byte(b':');
            self.byte(b':');
            groups(self, segments.get(best_start + best_len..).unwrap_or(&[]));
        } else {
            groups(self, &segments);
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII digits, hex letters and punctuation are ever written.
        std::str::from_utf8(self.buf.get(..self.len).unwrap_or(&[])).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV6};

    use proptest::prelude::*;

    use super::*;

    fn remote(addr: SocketAddr) -> String {
        serde_json::to_string(&RemoteAddr(addr)).unwrap_or_default()
    }

    fn ip_text(ip: IpAddr) -> String {
        let mut t = AddrText::new();
        match ip {
            IpAddr::V4(v4) => t.ipv4(v4.octets()),
            IpAddr::V6(v6) => t.ipv6(&v6),
        }
        t.as_str().to_owned()
    }

    #[test]
    fn remote_addresses_are_ip_colon_port_with_brackets_for_ipv6() {
        assert_eq!(
            remote(
                "203.0.113.10:8883"
                    .parse()
                    .unwrap_or_else(|e| panic!("{e}"))
            ),
            "\"203.0.113.10:8883\""
        );
        assert_eq!(
            remote(
                "[2001:db8::10]:443"
                    .parse()
                    .unwrap_or_else(|e| panic!("{e}"))
            ),
            "\"[2001:db8::10]:443\""
        );
        let scoped = SocketAddr::V6(SocketAddrV6::new(
            "fe80::1".parse().unwrap_or(Ipv6Addr::LOCALHOST),
            22,
            7,
            3,
        ));
        assert_eq!(remote(scoped), "\"[fe80::1]:22\"");
        assert_eq!(
            remote(
                "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"
                    .parse()
                    .unwrap_or_else(|e| panic!("{e}"))
            )
            .len(),
            49
        );
    }

    #[test]
    fn address_text_matches_display_on_edge_cases() {
        for s in [
            "::",
            "::1",
            "1::",
            "2001:db8::",
            "2001:db8:0:0:1:0:0:1",
            "2001:0:0:1:0:0:0:1",
            "0:0:1:0:0:1:0:0",
            "1:0:1:0:1:0:1:0",
            "::ffff:192.0.2.1",
            "::192.0.2.1",
            "64:ff9b::c000:201",
            "fe80::abcd:ef01",
            "0.0.0.0",
            "255.255.255.255",
            "10.0.0.1",
        ] {
            let ip: IpAddr = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(ip_text(ip), ip.to_string(), "{s}");
        }
        assert_eq!(
            ip_text(IpAddr::V4(Ipv4Addr::new(1, 20, 255, 0))),
            "1.20.255.0"
        );
    }

    proptest! {
        #[test]
        fn address_text_matches_display(segments in prop::array::uniform8(prop_oneof![Just(0u16), Just(1u16), any::<u16>()]), v4 in any::<u32>()) {
            let v6 = IpAddr::V6(Ipv6Addr::from(segments));
            prop_assert_eq!(ip_text(v6), v6.to_string());
            let v4 = IpAddr::V4(Ipv4Addr::from(v4));
            prop_assert_eq!(ip_text(v4), v4.to_string());
        }
    }

    #[test]
    fn integral_numbers_are_written_as_integers() {
        let json = |v: f64| serde_json::to_string(&Number(v)).unwrap_or_default();
        assert_eq!(json(41.0), "41");
        assert_eq!(json(-3.0), "-3");
        assert_eq!(json(-0.0), "0");
        assert_eq!(json(43.5), "43.5");
        assert_eq!(json(9_007_199_254_740_992.0), "9007199254740992");
        assert_eq!(json(1e20), "1e+20"); // beyond 2^53: a float, still valid JSON
    }
}

//! Reads a document tree as a report: the one reading behind both `decode` and `validate`.
//!
//! It walks the whole tree, records every problem with its path (keys as written) and builds the
//! best report it can; `decode` refuses the report when any problem is an error. Custom metrics
//! with a value warning are left out of the report, as AWS drops them (spec: A.2).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use super::keys::{Keys, CUSTOM_VALUE_KEYS};
use super::tree::Node;
use super::validate::Problem;
use super::{ConnectionList, Format, KeySet, Metrics, MetricsReport, NetworkStats, PortList};
use crate::custom_metric::{self, CustomValue};
use crate::sample::{Connection, ListeningPort};

/// What a reading found.
pub(crate) struct Reading {
    /// The report as far as it could be read (fields with errors hold defaults).
    pub report: MetricsReport,
    /// Every problem, in document order.
    pub problems: Vec<Problem>,
}

/// Reads `node` (parsed from `format`) as a report.
pub(crate) fn read(node: &Node, format: Format) -> Reading {
    let mut r = Reader {
        set: KeySet::Long,
        keys: KeySet::Long.keys(),
        other: KeySet::Short.keys(),
        format,
        problems: Vec::new(),
    };
    let report = r.report(node);
    Reading {
        report,
        problems: r.problems,
    }
}

/// Picks a field name out of a key set.
type Field = fn(&Keys) -> &'static str;

struct Reader {
    set: KeySet,
    keys: &'static Keys,
    other: &'static Keys,
    format: Format,
    problems: Vec<Problem>,
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

impl Reader {
    fn error(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem::error(path, message));
    }

    fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem::warning(path, message));
    }

    fn missing(&mut self, path: &str, what: &str) {
        self.error(path, format!("missing ({what})"));
    }

    fn indefinite(&mut self, path: &str, definite: bool) {
        if !definite && self.format == Format::Cbor {
            // spec: A.7 — CAG sends indefinite lengths; AWS acceptance is unverified.
            self.warn(
                path,
                "indefinite-length CBOR container (AWS acceptance unverified; use definite lengths)",
            );
        }
    }

    fn map<'n>(&mut self, path: &str, node: &'n Node) -> Option<&'n [(Node, Node)]> {
        match node {
            Node::Map { entries, definite } => {
                self.indefinite(path, *definite);
                Some(entries)
            }
            other => {
                self.error(path, format!("must be an object, found {}", other.kind()));
                None
            }
        }
    }

    fn array<'n>(&mut self, path: &str, node: &'n Node) -> Option<&'n [Node]> {
        match node {
            Node::Array { items, definite } => {
                self.indefinite(path, *definite);
                Some(items)
            }
            other => {
                self.error(path, format!("must be an array, found {}", other.kind()));
                None
            }
        }
    }

    /// Finds the given fields of a map in the active key set. Every other key is a problem: a
    /// non-text key, a duplicate, the same field in the other key set (mixed sets, spec: A.2), or
    /// an unknown key.
    fn fields<'n, const N: usize>(
        &mut self,
        path: &str,
        entries: &'n [(Node, Node)],
        names: [Field; N],
    ) -> [Option<&'n Node>; N] {
        let mut found: [Option<&'n Node>; N] = [None; N];
        for (key, value) in entries {
            let Node::Text(key) = key else {
                self.error(path, format!("map keys must be text, found {}", key.kind()));
                continue;
            };
            let here = child(path, key);
            if let Some(i) = names.iter().position(|f| f(self.keys) == key) {
                match found.get_mut(i) {
                    Some(slot @ None) => *slot = Some(value),
                    _ => self.error(&here, "duplicate key"),
                }
            } else if names.iter().any(|f| f(self.other) == key) {
                let (this, that) = (self.set.other(), self.set);
                self.error(
                    &here,
                    format!("{key:?} is a {this} key in a {that}-key report (key sets must not be mixed)"),
                );
            } else {
                self.error(&here, format!("unknown key {key:?}"));
            }
        }
        found
    }

    /// An integer >= 0 (deltas, totals, ports).
    fn uint(&mut self, path: &str, node: &Node) -> Option<u64> {
        match node {
            Node::UInt(v) => Some(*v),
            Node::NegInt(v) => {
                self.error(path, format!("must be >= 0, found {v}"));
                None
            }
            Node::BigUInt(v) => {
                self.error(path, format!("{v} does not fit in 64 bits"));
                None
            }
            Node::Float(v) => {
                self.error(path, format!("must be an integer, found {v}"));
                None
            }
            other => {
                self.error(path, format!("must be an integer, found {}", other.kind()));
                None
            }
        }
    }

    fn text<'n>(&mut self, path: &str, node: &'n Node) -> Option<&'n str> {
        match node {
            Node::Text(s) => Some(s),
            other => {
                self.error(path, format!("must be a string, found {}", other.kind()));
                None
            }
        }
    }

    /// Chooses the key set from the root keys: the header's set wins, else the majority.
    fn choose_key_set(&mut self, entries: &[(Node, Node)]) {
        let has = |k: &str| {
            entries
                .iter()
                .any(|(key, _)| matches!(key, Node::Text(t) if t == k))
        };
        let count = |k: &Keys| {
            [k.header, k.metrics, k.custom_metrics]
                .iter()
                .filter(|name| has(name))
                .count()
        };
        let set = if has(super::keys::LONG.header) {
            KeySet::Long
        } else if has(super::keys::SHORT.header)
            || count(&super::keys::SHORT) > count(&super::keys::LONG)
        {
            KeySet::Short
        } else {
            KeySet::Long
        };
        self.set = set;
        self.keys = set.keys();
        self.other = set.other().keys();
    }

    fn report(&mut self, node: &Node) -> MetricsReport {
        let mut report = MetricsReport {
            report_id: 0,
            version: String::new(),
            metrics: None,
            custom_metrics: Vec::new(),
        };
        let Some(root) = self.map("", node) else {
            return report;
        };
        self.choose_key_set(root);
        let [header, metrics, custom] = self.fields(
            "",
            root,
            [|k| k.header, |k| k.metrics, |k| k.custom_metrics],
        );
        let k = self.keys;
        match header {
            Some(h) => self.header(&child("", k.header), h, &mut report),
            None => self.missing(k.header, "the header block is required"),
        }
        if metrics.is_none() && custom.is_none() {
            self.error(
                "",
                format!(
                    "a report needs a {} or {} block",
                    k.metrics, k.custom_metrics
                ),
            );
        }
        if let Some(m) = metrics {
            report.metrics = self.metrics(k.metrics, m);
        }
        if let Some(c) = custom {
            report.custom_metrics = self.custom_metrics(k.custom_metrics, c);
        }
        report
    }

    fn header(&mut self, path: &str, node: &Node, report: &mut MetricsReport) {
        let Some(entries) = self.map(path, node) else {
            return;
        };
        let [id, version] = self.fields(path, entries, [|k| k.report_id, |k| k.version]);
        let k = self.keys;
        let id_path = child(path, k.report_id);
        match id {
            None => self.missing(&id_path, "report_id is required"),
            Some(Node::UInt(0)) | Some(Node::NegInt(_)) => {
                self.error(&id_path, "must be a positive integer")
            }
            Some(Node::UInt(v)) => report.report_id = *v,
            Some(other) => {
                let found = match other {
                    Node::Float(f) => f.to_string(),
                    other => other.kind().to_owned(),
                };
                self.error(
                    &id_path,
                    format!("must be a positive integer, found {found}"),
                );
            }
        }
        let v_path = child(path, k.version);
        match version {
            None => self.missing(&v_path, "version is required"),
            Some(Node::Text(v)) if is_major_minor(v) => report.version = v.clone(),
            Some(Node::Text(v)) => self.error(
                &v_path,
                format!("must be \"Major.Minor\" (e.g. \"1.0\"), found {v:?}"),
            ),
            Some(other) => self.error(
                &v_path,
                format!("must be a \"Major.Minor\" string, found {}", other.kind()),
            ),
        }
    }

    fn metrics(&mut self, path: &str, node: &Node) -> Option<Metrics> {
        let entries = self.map(path, node)?;
        let [tp, up, ns, tc] = self.fields(
            path,
            entries,
            [
                |k| k.listening_tcp_ports,
                |k| k.listening_udp_ports,
                |k| k.network_stats,
                |k| k.tcp_connections,
            ],
        );
        let k = self.keys;
        Some(Metrics {
            listening_tcp_ports: tp
                .and_then(|n| self.ports(&child(path, k.listening_tcp_ports), n)),
            listening_udp_ports: up
                .and_then(|n| self.ports(&child(path, k.listening_udp_ports), n)),
            network_stats: ns.and_then(|n| self.network_stats(&child(path, k.network_stats), n)),
            tcp_connections: tc
                .and_then(|n| self.tcp_connections(&child(path, k.tcp_connections), n)),
        })
    }

    fn ports(&mut self, path: &str, node: &Node) -> Option<PortList> {
        let entries = self.map(path, node)?;
        let [ports, total] = self.fields(path, entries, [|k| k.ports, |k| k.total]);
        let k = self.keys;
        let list_path = child(path, k.ports);
        let mut list = Vec::new();
        if let Some(items) = ports.and_then(|p| self.array(&list_path, p)) {
            let mut seen = HashSet::new();
            for (i, item) in items.iter().enumerate() {
                let item_path = index(&list_path, i);
                if let Some(port) = self.port(&item_path, item) {
                    if !seen.insert(port.clone()) {
                        // spec: D.8 — dedup by (port, interface); `total` counts unique entries.
                        self.warn(&item_path, "duplicate (port, interface) entry");
                    }
                    list.push(port);
                }
            }
        }
        let total = self.total(&child(path, k.total), total, list.len(), "ports");
        Some(PortList { ports: list, total })
    }

    fn port(&mut self, path: &str, node: &Node) -> Option<ListeningPort> {
        let entries = self.map(path, node)?;
        let [port, interface] = self.fields(path, entries, [|k| k.port, |k| k.interface]);
        let k = self.keys;
        let port_path = child(path, k.port);
        let port = match port {
            None => {
                self.missing(&port_path, "every entry needs a port");
                None
            }
            Some(n) => match self.uint(&port_path, n) {
                Some(p @ 1..=65535) => u16::try_from(p).ok(),
                Some(p) => {
                    self.error(&port_path, format!("must be 1-65535, found {p}"));
                    None
                }
                None => None,
            },
        };
        let interface = interface
            .and_then(|n| self.text(&child(path, k.interface), n))
            .map(str::to_owned);
        Some(ListeningPort {
            port: port?,
            interface,
        })
    }

    /// A list's `total`: >= the listed entries (more means a capped list, spec: D.8). Missing:
    /// the list length.
    fn total(&mut self, path: &str, node: Option<&Node>, listed: usize, what: &str) -> u64 {
        let listed = listed as u64;
        let Some(node) = node else {
            return listed;
        };
        match self.uint(path, node) {
            Some(t) if t < listed => {
                self.error(
                    path,
                    format!("total {t} is less than the {listed} {what} listed"),
                );
                listed
            }
            Some(t) => t,
            None => listed,
        }
    }

    fn network_stats(&mut self, path: &str, node: &Node) -> Option<NetworkStats> {
        let entries = self.map(path, node)?;
        let fields: [Field; 4] = [
            |k| k.bytes_in,
            |k| k.bytes_out,
            |k| k.packets_in,
            |k| k.packets_out,
        ];
        let found = self.fields(path, entries, fields);
        let mut values = [0u64; 4];
        let mut complete = true;
        for ((f, node), value) in fields.iter().zip(found).zip(values.iter_mut()) {
            let here = child(path, f(self.keys));
            match node {
                // spec: A.2 — deltas, >= 0, integers.
                Some(n) => match self.uint(&here, n) {
                    Some(v) => *value = v,
                    None => complete = false,
                },
                None => {
                    self.warn(
                        &here,
                        "missing (optional in the spec, but without it the block is not read)",
                    );
                    complete = false;
                }
            }
        }
        let [bytes_in, bytes_out, packets_in, packets_out] = values;
        complete.then_some(NetworkStats {
            bytes_in,
            bytes_out,
            packets_in,
            packets_out,
        })
    }

    fn tcp_connections(&mut self, path: &str, node: &Node) -> Option<ConnectionList> {
        let entries = self.map(path, node)?;
        let [ec] = self.fields(path, entries, [|k| k.established_connections]);
        let k = self.keys;
        let ec_path = child(path, k.established_connections);
        let Some(ec) = ec else {
            self.warn(&ec_path, "missing: the block carries no connections");
            return None;
        };
        let entries = self.map(&ec_path, ec)?;
        let [cs, total] = self.fields(&ec_path, entries, [|k| k.connections, |k| k.total]);
        let list_path = child(&ec_path, k.connections);
        let mut list = Vec::new();
        if let Some(items) = cs.and_then(|c| self.array(&list_path, c)) {
            for (i, item) in items.iter().enumerate() {
                if let Some(c) = self.connection(&index(&list_path, i), item) {
                    list.push(c);
                }
            }
        }
        let total = self.total(&child(&ec_path, k.total), total, list.len(), "connections");
        Some(ConnectionList {
            connections: list,
            total,
        })
    }

    fn connection(&mut self, path: &str, node: &Node) -> Option<Connection> {
        let entries = self.map(path, node)?;
        let [rad, lp, li] = self.fields(
            path,
            entries,
            [|k| k.remote_addr, |k| k.local_port, |k| k.local_interface],
        );
        let k = self.keys;
        let rad_path = child(path, k.remote_addr);
        let remote = match rad {
            None => {
                self.missing(&rad_path, "remote_addr is required");
                None
            }
            Some(n) => self
                .text(&rad_path, n)
                .and_then(|s| self.remote_addr(&rad_path, s)),
        };
        let lp_path = child(path, k.local_port);
        let local_port = match lp {
            // Optional in the spec; no Detect metric reads it, so 0 stands in.
            None => Some(0),
            Some(n) => match self.uint(&lp_path, n) {
                Some(p) => match u16::try_from(p) {
                    Ok(p) => Some(p),
                    Err(_) => {
                        self.error(&lp_path, format!("must be 0-65535, found {p}"));
                        None
                    }
                },
                None => None,
            },
        };
        let local_interface = li
            .and_then(|n| self.text(&child(path, k.local_interface), n))
            .map(str::to_owned);
        Some(Connection {
            remote: remote?,
            local_port: local_port?,
            local_interface,
        })
    }

    fn remote_addr(&mut self, path: &str, s: &str) -> Option<SocketAddr> {
        match s.parse::<SocketAddr>() {
            Ok(mut addr) => {
                if let IpAddr::V6(v6) = addr.ip() {
                    if v6.to_ipv4_mapped().is_some() {
                        // spec: D.7 — CIDR rules for aws:destination-ip-addresses expect IPv4.
                        self.warn(path, "IPv4-mapped IPv6 address; send the plain IPv4 form");
                    }
                }
                if let SocketAddr::V6(v6) = &mut addr {
                    if v6.scope_id() != 0 {
                        // "ip:port" has no zone: the report format cannot carry it (found by
                        // fuzz target validate_json: it was lost on re-encoding).
                        self.warn(
                            path,
                            "IPv6 zone id (%…) is not part of \"ip:port\"; ignored",
                        );
                        v6.set_scope_id(0);
                    }
                }
                Some(addr)
            }
            Err(_) => {
                self.error(
                    path,
                    format!("must be \"ip:port\" or \"[ipv6]:port\", found {s:?}"),
                );
                None
            }
        }
    }

    fn custom_metrics(&mut self, path: &str, node: &Node) -> Vec<(String, CustomValue)> {
        let mut out = Vec::new();
        let Some(entries) = self.map(path, node) else {
            return out;
        };
        let mut seen = HashSet::new();
        for (key, value) in entries {
            let Node::Text(name) = key else {
                self.error(
                    path,
                    format!("metric names must be text, found {}", key.kind()),
                );
                continue;
            };
            let here = child(path, name);
            if !seen.insert(name.as_str()) {
                self.error(&here, "duplicate key");
                continue;
            }
            if let Err(e) = custom_metric::check_custom_metric_name(name) {
                self.error(&here, e.to_string());
                continue;
            }
            if let Some(v) = self.custom_value(&here, value) {
                out.push((name.clone(), v));
            }
        }
        out
    }

    /// `[ { <type key>: value } ]` (spec: A.2, D.10). `None` when malformed or when a value breaks
    /// the value rules (AWS drops those silently).
    fn custom_value(&mut self, path: &str, node: &Node) -> Option<CustomValue> {
        const WRAP: &str = "must be wrapped in a one-element array, e.g. [{\"number\": 1}]";
        let items = match node {
            Node::Array { items, definite } => {
                self.indefinite(path, *definite);
                items
            }
            other => {
                self.error(path, format!("{WRAP}, found {}", other.kind()));
                return None;
            }
        };
        let [only] = items.as_slice() else {
            self.error(
                path,
                format!(
                    "must be an array with exactly one object, found {} elements",
                    items.len()
                ),
            );
            return None;
        };
        let inner_path = index(path, 0);
        let entries = self.map(&inner_path, only)?;
        let [(key, value)] = entries else {
            self.error(
                &inner_path,
                format!(
                    "must hold exactly one of number, number_list, string_list, ip_list; found {} keys",
                    entries.len()
                ),
            );
            return None;
        };
        let Node::Text(key) = key else {
            self.error(
                &inner_path,
                format!("keys must be text, found {}", key.kind()),
            );
            return None;
        };
        let here = child(&inner_path, key);
        let before = self.problems.len();
        let value = match key.as_str() {
            "number" => self.number(&here, value).map(CustomValue::Number),
            "number_list" => self
                .list(&here, value, Self::number)
                .map(CustomValue::NumberList),
            "string_list" => self
                .list(&here, value, Self::string)
                .map(CustomValue::StringList),
            "ip_list" => self.list(&here, value, Self::ip).map(CustomValue::IpList),
            other => {
                self.error(
                    &here,
                    format!(
                        "unknown value key {other:?} (expected one of {})",
                        CUSTOM_VALUE_KEYS.join(", ")
                    ),
                );
                None
            }
        };
        // Any problem (even a warning) means AWS would not keep the value.
        if self.problems.len() > before {
            None
        } else {
            value
        }
    }

    fn list<T>(
        &mut self,
        path: &str,
        node: &Node,
        item: fn(&mut Self, &str, &Node) -> Option<T>,
    ) -> Option<Vec<T>> {
        let items = self.array(path, node)?;
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, n) in items.iter().enumerate() {
            match item(self, &index(path, i), n) {
                Some(v) => out.push(v),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn number(&mut self, path: &str, node: &Node) -> Option<f64> {
        let v = match node {
            Node::UInt(v) => *v as f64,
            Node::NegInt(v) => *v as f64,
            Node::BigUInt(v) => *v as f64,
            Node::Float(v) => *v,
            other => {
                self.error(path, format!("must be a number, found {}", other.kind()));
                return None;
            }
        };
        match custom_metric::check_number(v) {
            Ok(()) => Some(v),
            Err(e) => {
                self.warn(path, format!("{e} (AWS drops such values silently)"));
                None
            }
        }
    }

    fn string(&mut self, path: &str, node: &Node) -> Option<String> {
        let s = self.text(path, node)?;
        match custom_metric::check_string(s) {
            Ok(()) => Some(s.to_owned()),
            Err(e) => {
                self.warn(path, format!("{e} (AWS drops such values silently)"));
                None
            }
        }
    }

    fn ip(&mut self, path: &str, node: &Node) -> Option<IpAddr> {
        let s = self.text(path, node)?;
        match s.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                self.warn(
                    path,
                    format!(
                        "{s:?} is not an IPv4 or IPv6 address (AWS drops such values silently)"
                    ),
                );
                None
            }
        }
    }
}

/// `"Major.Minor"`: two runs of ASCII digits around one dot.
fn is_major_minor(v: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    matches!(v.split_once('.'), Some((major, minor)) if digits(major) && digits(minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_major_dot_minor() {
        assert!(is_major_minor("1.0"));
        assert!(is_major_minor("10.12"));
        assert!(!is_major_minor("1"));
        assert!(!is_major_minor("1.0.0"));
        assert!(!is_major_minor(".0"));
        assert!(!is_major_minor("1.x"));
    }
}

//! Reads a document tree as a report: the one reading behind `validate`, `decode` and
//! `decode_validated`.
//!
//! It walks the whole tree, records every problem with its path (keys as written) and builds the
//! best report it can; `decode` refuses the report when any problem is an error. Custom metrics
//! with a value warning are left out of the report, as AWS drops them (spec: A.2).
//!
//! Paths are built on the stack as the walk descends ([`Path`]) and written out as text only when
//! a problem is recorded: a valid report costs no path strings.

use std::collections::HashSet;
use std::fmt::Write as _;
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
pub(crate) fn read(node: &Node<'_>, format: Format) -> Reading {
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

/// Where a value is in the document: the keys (as written) and indexes leading to it.
#[derive(Clone, Copy)]
enum Path<'p> {
    /// The document as a whole.
    Root,
    /// The value of key `.1` in the map at `.0`.
    Key(&'p Path<'p>, &'p str),
    /// Element `.1` of the array at `.0`.
    Index(&'p Path<'p>, usize),
}

impl<'p> Path<'p> {
    fn key(&'p self, key: &'p str) -> Path<'p> {
        Path::Key(self, key)
    }

    fn index(&'p self, i: usize) -> Path<'p> {
        Path::Index(self, i)
    }

    /// `metrics.listening_tcp_ports.ports[1].port`; empty for the root. A key is joined with a
    /// dot unless the text so far is empty.
    fn render(&self) -> String {
        let mut s = String::new();
        self.write(&mut s);
        s
    }

    fn write(&self, s: &mut String) {
        match self {
            Path::Root => {}
            Path::Key(parent, key) => {
                parent.write(s);
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(key);
            }
            Path::Index(parent, i) => {
                parent.write(s);
                // Writing into a String cannot fail.
                let _ = write!(s, "[{i}]");
            }
        }
    }
}

struct Reader {
    set: KeySet,
    keys: &'static Keys,
    other: &'static Keys,
    format: Format,
    problems: Vec<Problem>,
}

impl Reader {
    fn error(&mut self, path: &Path<'_>, message: impl Into<String>) {
        self.problems.push(Problem::error(path.render(), message));
    }

    fn warn(&mut self, path: &Path<'_>, message: impl Into<String>) {
        self.problems.push(Problem::warning(path.render(), message));
    }

    fn missing(&mut self, path: &Path<'_>, what: &str) {
        self.error(path, format!("missing ({what})"));
    }

    fn indefinite(&mut self, path: &Path<'_>, definite: bool) {
        if !definite && self.format == Format::Cbor {
            // spec: A.7 — CAG sends indefinite lengths; AWS acceptance is unverified.
            self.warn(
                path,
                "indefinite-length CBOR container (AWS acceptance unverified; use definite lengths)",
            );
        }
    }

    fn map<'n, 't>(
        &mut self,
        path: &Path<'_>,
        node: &'n Node<'t>,
    ) -> Option<&'n [(Node<'t>, Node<'t>)]> {
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

    fn array<'n, 't>(&mut self, path: &Path<'_>, node: &'n Node<'t>) -> Option<&'n [Node<'t>]> {
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
    fn fields<'n, 't, const N: usize>(
        &mut self,
        path: &Path<'_>,
        entries: &'n [(Node<'t>, Node<'t>)],
        names: [Field; N],
    ) -> [Option<&'n Node<'t>>; N] {
        let mut found: [Option<&'n Node<'t>>; N] = [None; N];
        for (key, value) in entries {
            let Some(key) = key.as_text() else {
                self.error(path, format!("map keys must be text, found {}", key.kind()));
                continue;
            };
            if let Some(i) = names.iter().position(|f| f(self.keys) == key) {
                match found.get_mut(i) {
                    Some(slot @ None) => *slot = Some(value),
                    _ => self.error(&path.key(key), "duplicate key"),
                }
            } else if names.iter().any(|f| f(self.other) == key) {
                let (this, that) = (self.set.other(), self.set);
                self.error(
                    &path.key(key),
                    format!("{key:?} is a {this} key in a {that}-key report (key sets must not be mixed)"),
                );
            } else {
                self.error(&path.key(key), format!("unknown key {key:?}"));
            }
        }
        found
    }

    /// An integer >= 0 (deltas, totals, ports).
    fn uint(&mut self, path: &Path<'_>, node: &Node<'_>) -> Option<u64> {
        match node {
            Node::UInt(v) => Some(*v),
            Node::NegInt(_) | Node::BigNegInt(_) => {
                let v = node.negative_value().unwrap_or_default();
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

    fn text<'n>(&mut self, path: &Path<'_>, node: &'n Node<'_>) -> Option<&'n str> {
        match node {
            Node::Text(s) => Some(s),
            other => {
                self.error(path, format!("must be a string, found {}", other.kind()));
                None
            }
        }
    }

    /// Chooses the key set from the root keys: the header's set wins, else the majority.
    fn choose_key_set(&mut self, entries: &[(Node<'_>, Node<'_>)]) {
        let has = |k: &str| entries.iter().any(|(key, _)| key.as_text() == Some(k));
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

    fn report(&mut self, node: &Node<'_>) -> MetricsReport {
        let mut report = MetricsReport {
            report_id: 0,
            version: String::new(),
            metrics: None,
            custom_metrics: Vec::new(),
        };
        let root = Path::Root;
        let Some(entries) = self.map(&root, node) else {
            return report;
        };
        self.choose_key_set(entries);
        let [header, metrics, custom] = self.fields(
            &root,
            entries,
            [|k| k.header, |k| k.metrics, |k| k.custom_metrics],
        );
        let k = self.keys;
        match header {
            Some(h) => self.header(&root.key(k.header), h, &mut report),
            None => self.missing(&root.key(k.header), "the header block is required"),
        }
        if metrics.is_none() && custom.is_none() {
            self.error(
                &root,
                format!(
                    "a report needs a {} or {} block",
                    k.metrics, k.custom_metrics
                ),
            );
        }
        if let Some(m) = metrics {
            report.metrics = self.metrics(&root.key(k.metrics), m);
        }
        if let Some(c) = custom {
            report.custom_metrics = self.custom_metrics(&root.key(k.custom_metrics), c);
        }
        report
    }

    fn header(&mut self, path: &Path<'_>, node: &Node<'_>, report: &mut MetricsReport) {
        let Some(entries) = self.map(path, node) else {
            return;
        };
        let [id, version] = self.fields(path, entries, [|k| k.report_id, |k| k.version]);
        let k = self.keys;
        let id_path = path.key(k.report_id);
        match id {
            None => self.missing(&id_path, "report_id is required"),
            Some(Node::UInt(0) | Node::NegInt(_) | Node::BigNegInt(_)) => {
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
        let v_path = path.key(k.version);
        match version {
            None => self.missing(&v_path, "version is required"),
            Some(Node::Text(v)) if is_major_minor(v) => report.version = v.as_ref().to_owned(),
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

    fn metrics(&mut self, path: &Path<'_>, node: &Node<'_>) -> Option<Metrics> {
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
            listening_tcp_ports: tp.and_then(|n| self.ports(&path.key(k.listening_tcp_ports), n)),
            listening_udp_ports: up.and_then(|n| self.ports(&path.key(k.listening_udp_ports), n)),
            network_stats: ns.and_then(|n| self.network_stats(&path.key(k.network_stats), n)),
            tcp_connections: tc.and_then(|n| self.tcp_connections(&path.key(k.tcp_connections), n)),
        })
    }

    fn ports(&mut self, path: &Path<'_>, node: &Node<'_>) -> Option<PortList> {
        let entries = self.map(path, node)?;
        let [ports, total] = self.fields(path, entries, [|k| k.ports, |k| k.total]);
        let k = self.keys;
        let list_path = path.key(k.ports);
        let mut list = Vec::new();
        if let Some(items) = ports.and_then(|p| self.array(&list_path, p)) {
            list.reserve(items.len());
            // Keys borrowed from the tree: checking for duplicates copies no names. While the
            // entries come sorted (as agents send them), an entry above the one before cannot
            // repeat any earlier one, and no set is needed.
            let mut sorted: Vec<(u16, Option<&str>)> = Vec::with_capacity(items.len());
            let mut seen: Option<HashSet<(u16, Option<&str>)>> = None;
            for (i, item) in items.iter().enumerate() {
                let item_path = list_path.index(i);
                if let Some((port, interface)) = self.port(&item_path, item) {
                    let key = (port, interface);
                    let repeated = match &mut seen {
                        Some(set) => !set.insert(key),
                        None if sorted.last().is_none_or(|&prev| prev < key) => {
                            sorted.push(key);
                            false
                        }
                        None => {
                            let mut set: HashSet<_> = sorted.drain(..).collect();
                            let repeated = !set.insert(key);
                            seen = Some(set);
                            repeated
                        }
                    };
                    if repeated {
                        // spec: D.8 — dedup by (port, interface); `total` counts unique entries.
                        self.warn(&item_path, "duplicate (port, interface) entry");
                    }
                    list.push(ListeningPort {
                        port,
                        interface: interface.map(str::to_owned),
                    });
                }
            }
        }
        let total = self.total(&path.key(k.total), total, list.len(), "ports");
        Some(PortList { ports: list, total })
    }

    fn port<'n>(&mut self, path: &Path<'_>, node: &'n Node<'_>) -> Option<(u16, Option<&'n str>)> {
        let entries = self.map(path, node)?;
        let [port, interface] = self.fields(path, entries, [|k| k.port, |k| k.interface]);
        let k = self.keys;
        let port_path = path.key(k.port);
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
        let interface = interface.and_then(|n| self.text(&path.key(k.interface), n));
        Some((port?, interface))
    }

    /// A list's `total`: >= the listed entries (more means a capped list, spec: D.8). Missing:
    /// the list length.
    fn total(
        &mut self,
        path: &Path<'_>,
        node: Option<&Node<'_>>,
        listed: usize,
        what: &str,
    ) -> u64 {
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

    fn network_stats(&mut self, path: &Path<'_>, node: &Node<'_>) -> Option<NetworkStats> {
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
            let here = path.key(f(self.keys));
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

    fn tcp_connections(&mut self, path: &Path<'_>, node: &Node<'_>) -> Option<ConnectionList> {
        let entries = self.map(path, node)?;
        let [ec] = self.fields(path, entries, [|k| k.established_connections]);
        let k = self.keys;
        let ec_path = path.key(k.established_connections);
        let Some(ec) = ec else {
            self.warn(&ec_path, "missing: the block carries no connections");
            return None;
        };
        let entries = self.map(&ec_path, ec)?;
        let [cs, total] = self.fields(&ec_path, entries, [|k| k.connections, |k| k.total]);
        let list_path = ec_path.key(k.connections);
        let mut list = Vec::new();
        if let Some(items) = cs.and_then(|c| self.array(&list_path, c)) {
            list.reserve(items.len());
            for (i, item) in items.iter().enumerate() {
                if let Some(c) = self.connection(&list_path.index(i), item) {
                    list.push(c);
                }
            }
        }
        let total = self.total(&ec_path.key(k.total), total, list.len(), "connections");
        Some(ConnectionList {
            connections: list,
            total,
        })
    }

    fn connection(&mut self, path: &Path<'_>, node: &Node<'_>) -> Option<Connection> {
        let entries = self.map(path, node)?;
        let [rad, lp, li] = self.fields(
            path,
            entries,
            [|k| k.remote_addr, |k| k.local_port, |k| k.local_interface],
        );
        let k = self.keys;
        let rad_path = path.key(k.remote_addr);
        let remote = match rad {
            None => {
                self.missing(&rad_path, "remote_addr is required");
                None
            }
            Some(n) => self
                .text(&rad_path, n)
                .and_then(|s| self.remote_addr(&rad_path, s)),
        };
        let lp_path = path.key(k.local_port);
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
            .and_then(|n| self.text(&path.key(k.local_interface), n))
            .map(str::to_owned);
        Some(Connection {
            remote: remote?,
            local_port: local_port?,
            local_interface,
        })
    }

    fn remote_addr(&mut self, path: &Path<'_>, s: &str) -> Option<SocketAddr> {
        match plain_ipv4_socket(s).map_or_else(|| s.parse::<SocketAddr>(), Ok) {
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

    fn custom_metrics(&mut self, path: &Path<'_>, node: &Node<'_>) -> Vec<(String, CustomValue)> {
        let mut out = Vec::new();
        let Some(entries) = self.map(path, node) else {
            return out;
        };
        let mut seen = HashSet::new();
        for (key, value) in entries {
            let Some(name) = key.as_text() else {
                self.error(
                    path,
                    format!("metric names must be text, found {}", key.kind()),
                );
                continue;
            };
            let here = path.key(name);
            if !seen.insert(name) {
                self.error(&here, "duplicate key");
                continue;
            }
            if let Err(e) = custom_metric::check_custom_metric_name(name) {
                self.error(&here, e.to_string());
                continue;
            }
            if let Some(v) = self.custom_value(&here, value) {
                out.push((name.to_owned(), v));
            }
        }
        out
    }

    /// `[ { <type key>: value } ]` (spec: A.2, D.10). `None` when malformed or when a value breaks
    /// the value rules (AWS drops those silently).
    fn custom_value(&mut self, path: &Path<'_>, node: &Node<'_>) -> Option<CustomValue> {
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
        let inner_path = path.index(0);
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
        let Some(key) = key.as_text() else {
            self.error(
                &inner_path,
                format!("keys must be text, found {}", key.kind()),
            );
            return None;
        };
        let here = inner_path.key(key);
        let before = self.problems.len();
        let value = match key {
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
        path: &Path<'_>,
        node: &Node<'_>,
        item: fn(&mut Self, &Path<'_>, &Node<'_>) -> Option<T>,
    ) -> Option<Vec<T>> {
        let items = self.array(path, node)?;
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, n) in items.iter().enumerate() {
            match item(self, &path.index(i), n) {
                Some(v) => out.push(v),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn number(&mut self, path: &Path<'_>, node: &Node<'_>) -> Option<f64> {
        let v = match node {
            Node::UInt(v) => *v as f64,
            Node::NegInt(_) | Node::BigNegInt(_) => {
                node.negative_value().unwrap_or_default() as f64
            }
            Node::BigUInt(v) => **v as f64,
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

    fn string(&mut self, path: &Path<'_>, node: &Node<'_>) -> Option<String> {
        let s = self.text(path, node)?;
        match custom_metric::check_string(s) {
            Ok(()) => Some(s.to_owned()),
            Err(e) => {
                self.warn(path, format!("{e} (AWS drops such values silently)"));
                None
            }
        }
    }

    fn ip(&mut self, path: &Path<'_>, node: &Node<'_>) -> Option<IpAddr> {
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

/// `"a.b.c.d:port"` in its plain form (decimal, no leading zeros), read without the general
/// parser, which was a tenth of decoding time; `None` for anything else, which `SocketAddr`'s
/// parser then reads (it accepts everything this accepts, with the same result, and more).
fn plain_ipv4_socket(s: &str) -> Option<SocketAddr> {
    let b = s.as_bytes();
    let mut octets = [0u8; 4];
    let mut i = 0;
    for (k, octet) in octets.iter_mut().enumerate() {
        let (v, next) = plain_decimal(b, i, 3)?;
        *octet = u8::try_from(v).ok()?;
        let sep = if k < 3 { b'.' } else { b':' };
        if b.get(next) != Some(&sep) {
            return None;
        }
        i = next + 1;
    }
    let (port, end) = plain_decimal(b, i, 5)?;
    if end != b.len() {
        return None;
    }
    Some(SocketAddr::from((octets, u16::try_from(port).ok()?)))
}

/// Up to `max` decimal digits at `start`, without a leading zero (a lone `0` is fine), followed
/// by a non-digit or the end: the value and where the digits end.
fn plain_decimal(b: &[u8], start: usize, max: usize) -> Option<(u32, usize)> {
    let digits = b
        .get(start..)?
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .count();
    if digits == 0 || digits > max || (digits > 1 && b.get(start) == Some(&b'0')) {
        return None;
    }
    let v = b
        .get(start..start + digits)?
        .iter()
        .fold(0u32, |acc, &c| acc * 10 + u32::from(c - b'0'));
    Some((v, start + digits))
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
    fn plain_ipv4_sockets_read_as_socket_addr_reads_them() {
        for s in [
            "203.0.113.10:8883",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "1.2.3.4:5",
        ] {
            assert_eq!(plain_ipv4_socket(s), s.parse().ok(), "{s}");
        }
        for s in [
            "01.2.3.4:5",
            "1.2.3.4:05",
            "256.1.1.1:1",
            "1.2.3.4:65536",
            "1.2.3:4",
            "1.2.3.4.5:6",
            "1.2.3.4:",
            "1.2.3.4",
            "[::1]:5",
            " 1.2.3.4:5",
            "1.2.3.4:5 ",
            "1.2.3.4:123456",
        ] {
            assert_eq!(plain_ipv4_socket(s), None, "{s}");
        }
    }

    proptest::proptest! {
        #[test]
        fn plain_ipv4_sockets_agree_with_the_general_parser(s in "[0-9.:]{0,24}") {
            if let Some(addr) = plain_ipv4_socket(&s) {
                proptest::prop_assert_eq!(Ok(addr), s.parse::<SocketAddr>());
            }
        }

        #[test]
        fn formatted_ipv4_sockets_take_the_plain_path(ip in proptest::prelude::any::<[u8; 4]>(), port in proptest::prelude::any::<u16>()) {
            let addr = SocketAddr::from((ip, port));
            proptest::prop_assert_eq!(plain_ipv4_socket(&addr.to_string()), Some(addr));
        }

        #[test]
        fn duplicate_ports_are_found_in_any_order(
            ports in proptest::collection::vec((1u16..6, proptest::option::of(proptest::prelude::prop_oneof![proptest::prelude::Just("a"), proptest::prelude::Just("b")])), 0..10)
        ) {
            let items: Vec<String> = ports
                .iter()
                .map(|(p, i)| match i {
                    Some(i) => format!(r#"{{"port":{p},"interface":"{i}"}}"#),
                    None => format!(r#"{{"port":{p}}}"#),
                })
                .collect();
            let json = format!(
                r#"{{"header":{{"report_id":1,"version":"1.0"}},"metrics":{{"listening_tcp_ports":{{"ports":[{}],"total":99}}}}}}"#,
                items.join(",")
            );
            let reading = super::super::validate::check(json.as_bytes(), Format::Json);
            let warned: Vec<String> = reading.problems.iter().map(|p| p.path.clone()).collect();
            let mut seen = HashSet::new();
            let expected: Vec<String> = ports
                .iter()
                .enumerate()
                .filter(|(_, k)| !seen.insert(**k))
                .map(|(i, _)| format!("metrics.listening_tcp_ports.ports[{i}]"))
                .collect();
            proptest::prop_assert_eq!(warned, expected);
        }
    }

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

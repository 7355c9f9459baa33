//! Checks any report (ours or another agent's; JSON or CBOR; long or short keys) against the spec
//! and names every violation with its path.
//!
//! Severity: an [`Severity::Error`] makes the report malformed (AWS answers `InvalidPayload`) or
//! breaks a rule this agent holds to (mixed key sets, unknown keys). A [`Severity::Warning`] is
//! accepted by AWS but loses data or is unverified: custom values outside the value rules (AWS
//! drops them silently, spec: A.2), indefinite-length CBOR (acceptance unverified, spec: A.7 — we
//! never send it but accept it), duplicate ports (D.8), IPv4-mapped remote addresses (D.7), an
//! incomplete `network_stats` block.
//!
//! Not checked, and why: the CBOR reader (`cbor_read.rs`, which reads as ciborium did) joins
//! indefinite-length *text strings* before we see them, so only indefinite maps and arrays are
//! reported.

use std::fmt;

use super::read;
use super::tree;
use super::{Format, MetricsReport, MAX_PAYLOAD_BYTES};

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The report is malformed or breaks a rule of the spec.
    Error,
    /// Accepted, but data is lost or acceptance is unverified.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One violation, at one place in the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where, with the keys as written in the document, e.g.
    /// `metrics.listening_tcp_ports.ports[1].port`; empty for the document as a whole.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// Error or warning.
    pub severity: Severity,
}

impl Problem {
    /// Whether this problem makes the report invalid.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    pub(crate) fn error(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            message: message.into(),
            severity: Severity::Error,
        }
    }

    pub(crate) fn warning(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            message: message.into(),
            severity: Severity::Warning,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(report)"
        } else {
            &self.path
        };
        write!(f, "{}: {}: {}", self.severity, path, self.message)
    }
}

/// Guesses the format: JSON when the first non-whitespace byte is `{`, CBOR otherwise (a CBOR map
/// head is 0xa0–0xbf, never `{`).
pub fn sniff(bytes: &[u8]) -> Format {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Format::Json,
        _ => Format::Cbor,
    }
}

/// Checks `bytes` against every rule of the spec; `format: None` sniffs it. An empty result means
/// the report is valid; see [`Problem::is_error`] for which problems make it invalid.
pub fn validate(bytes: &[u8], format: Option<Format>) -> Vec<Problem> {
    let format = format.unwrap_or_else(|| sniff(bytes));
    check(bytes, format).problems
}

/// The one checking pass behind [`validate`] and [`super::decode_validated`]: the payload limit,
/// then the document read as a report.
pub(crate) fn check(bytes: &[u8], format: Format) -> Reading {
    let mut problems = Vec::new();
    if bytes.len() > MAX_PAYLOAD_BYTES {
        // spec: A.1 — AWS IoT Core refuses it (PAYLOAD_LIMIT_EXCEEDED) before Defender sees it.
        problems.push(Problem::error(
            "",
            format!(
                "payload is {} bytes, over the 128 KB ({MAX_PAYLOAD_BYTES} bytes) MQTT limit",
                bytes.len()
            ),
        ));
    }
    match tree::parse(bytes, format) {
        Ok(node) => {
            let reading = read::read(&node, format);
            problems.extend(reading.problems);
            Reading {
                report: Some(reading.report),
                problems,
            }
        }
        Err(e) => {
            problems.push(Problem::error("", e.to_string()));
            Reading {
                report: None,
                problems,
            }
        }
    }
}

/// What [`check`] found.
pub(crate) struct Reading {
    /// The report as far as it could be read; `None` when the payload is not JSON or CBOR.
    pub report: Option<MetricsReport>,
    /// Every problem, the payload limit first, then in document order.
    pub problems: Vec<Problem>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid long-key report with every block, as compact JSON text to edit in tests.
    const VALID: &str = r#"{"header":{"report_id":1717171717,"version":"1.0"},"metrics":{"listening_tcp_ports":{"ports":[{"port":22,"interface":"eth0"},{"port":8883}],"total":2},"listening_udp_ports":{"ports":[{"port":5353,"interface":"wlan0"}],"total":1},"network_stats":{"bytes_in":120443,"bytes_out":98113,"packets_in":912,"packets_out":877},"tcp_connections":{"established_connections":{"connections":[{"remote_addr":"203.0.113.10:8883","local_port":49822,"local_interface":"eth0"},{"remote_addr":"[2001:db8::10]:443","local_port":51000,"local_interface":"eth0"}],"total":2}}},"custom_metrics":{"cpu_usage":[{"number":12.5}],"temperatures":[{"number_list":[41,43.5]}],"wifi_ssids":[{"string_list":["plant-a","plant-b"]}],"gateways":[{"ip_list":["192.0.2.1","2001:db8::1"]}]}}"#;

    fn check(json: &str) -> Vec<Problem> {
        validate(json.as_bytes(), Some(Format::Json))
    }

    /// The problems of `VALID` with one substring replaced.
    fn with(from: &str, to: &str) -> Vec<Problem> {
        assert!(VALID.contains(from), "test edit {from:?} does not apply");
        check(&VALID.replacen(from, to, 1))
    }

    fn has(problems: &[Problem], severity: Severity, path: &str, needle: &str) -> bool {
        problems
            .iter()
            .any(|p| p.severity == severity && p.path == path && p.message.contains(needle))
    }

    #[track_caller]
    fn expect_error(problems: &[Problem], path: &str, needle: &str) {
        assert!(
            has(problems, Severity::Error, path, needle),
            "no error at {path:?} mentioning {needle:?} in {problems:#?}"
        );
    }

    #[track_caller]
    fn expect_warning(problems: &[Problem], path: &str, needle: &str) {
        assert!(
            has(problems, Severity::Warning, path, needle),
            "no warning at {path:?} mentioning {needle:?} in {problems:#?}"
        );
        assert!(problems.iter().all(|p| !p.is_error()), "{problems:#?}");
    }

    #[test]
    fn the_valid_example_has_no_problems() {
        assert_eq!(check(VALID), vec![]);
    }

    #[test]
    fn a_missing_header_is_an_error() {
        let p = check(r#"{"metrics":{}}"#);
        expect_error(&p, "header", "missing");
    }

    #[test]
    fn a_header_that_is_not_an_object_is_an_error() {
        let p = with(r#"{"report_id":1717171717,"version":"1.0"}"#, "7");
        expect_error(&p, "header", "must be an object");
    }

    #[test]
    fn a_missing_report_id_is_an_error() {
        let p = with(r#""report_id":1717171717,"#, "");
        expect_error(&p, "header.report_id", "missing");
    }

    #[test]
    fn report_id_must_be_a_positive_integer() {
        expect_error(&with("1717171717", "0"), "header.report_id", "positive");
        expect_error(&with("1717171717", "-5"), "header.report_id", "positive");
        expect_error(&with("1717171717", "17.5"), "header.report_id", "integer");
        expect_error(
            &with("1717171717", "\"1717171717\""),
            "header.report_id",
            "integer",
        );
    }

    #[test]
    fn version_must_be_a_major_minor_string() {
        expect_error(
            &with(r#","version":"1.0""#, ""),
            "header.version",
            "missing",
        );
        expect_error(&with(r#""1.0""#, "1.0"), "header.version", "string");
        expect_error(&with(r#""1.0""#, r#""1""#), "header.version", "Major.Minor");
        expect_error(
            &with(r#""1.0""#, r#""v1.0""#),
            "header.version",
            "Major.Minor",
        );
        assert_eq!(with(r#""1.0""#, r#""1.12""#), vec![]);
    }

    #[test]
    fn a_report_without_metrics_or_custom_metrics_is_an_error() {
        let p = check(r#"{"header":{"report_id":1,"version":"1.0"}}"#);
        expect_error(&p, "", "metrics or custom_metrics");
    }

    #[test]
    fn a_custom_metrics_only_report_is_valid() {
        let p = check(
            r#"{"header":{"report_id":1,"version":"1.0"},"custom_metrics":{"x":[{"number":1}]}}"#,
        );
        assert_eq!(p, vec![]);
    }

    #[test]
    fn network_deltas_must_be_non_negative_integers() {
        expect_error(
            &with("\"bytes_in\":120443", "\"bytes_in\":-1"),
            "metrics.network_stats.bytes_in",
            ">= 0",
        );
        expect_error(
            &with("\"packets_out\":877", "\"packets_out\":8.5"),
            "metrics.network_stats.packets_out",
            "integer",
        );
    }

    #[test]
    fn an_incomplete_network_stats_block_is_a_warning() {
        let p = with(",\"packets_out\":877", "");
        expect_warning(&p, "metrics.network_stats.packets_out", "missing");
    }

    #[test]
    fn ports_must_be_between_1_and_65535() {
        let p = with("{\"port\":8883}", "{\"port\":0}");
        expect_error(&p, "metrics.listening_tcp_ports.ports[1].port", "1-65535");
        let p = with("{\"port\":8883}", "{\"port\":65536}");
        expect_error(&p, "metrics.listening_tcp_ports.ports[1].port", "1-65535");
        let p = with("{\"port\":8883}", "{\"interface\":\"eth1\"}");
        expect_error(&p, "metrics.listening_tcp_ports.ports[1].port", "missing");
    }

    #[test]
    fn a_total_below_the_list_length_is_an_error() {
        let p = with("\"total\":1}", "\"total\":0}");
        expect_error(&p, "metrics.listening_udp_ports.total", "less than");
        let p = with("\"total\":2}", "\"total\":-2}");
        expect_error(&p, "metrics.listening_tcp_ports.total", ">= 0");
    }

    #[test]
    fn a_total_above_the_list_length_is_a_capped_list() {
        assert_eq!(with("\"total\":1}", "\"total\":9}"), vec![]);
    }

    #[test]
    fn duplicate_ports_are_a_warning() {
        let p = with("{\"port\":8883}", "{\"port\":22,\"interface\":\"eth0\"}");
        expect_warning(&p, "metrics.listening_tcp_ports.ports[1]", "duplicate");
    }

    #[test]
    fn remote_addr_must_be_ip_colon_port() {
        let path = "metrics.tcp_connections.established_connections.connections[0].remote_addr";
        expect_error(&with("203.0.113.10:8883", "203.0.113.10"), path, "ip:port");
        expect_error(
            &with("203.0.113.10:8883", "2001:db8::10:443"),
            path,
            "ip:port",
        );
        expect_error(&with("\"203.0.113.10:8883\"", "3232235777"), path, "string");
        expect_error(
            &with("\"remote_addr\":\"203.0.113.10:8883\",", ""),
            path,
            "missing",
        );
    }

    #[test]
    fn an_ipv4_mapped_remote_addr_is_a_warning() {
        let p = with("203.0.113.10:8883", "[::ffff:203.0.113.10]:8883");
        expect_warning(
            &p,
            "metrics.tcp_connections.established_connections.connections[0].remote_addr",
            "IPv4-mapped",
        );
    }

    #[test]
    fn local_port_must_fit_a_port() {
        let p = with("49822", "70000");
        expect_error(
            &p,
            "metrics.tcp_connections.established_connections.connections[0].local_port",
            "0-65535",
        );
    }

    #[test]
    fn a_custom_metric_not_wrapped_in_an_array_is_an_error() {
        let p = with("[{\"number\":12.5}]", "{\"number\":0}");
        expect_error(&p, "custom_metrics.cpu_usage", "one-element array");
        let p = with("[{\"number\":12.5}]", "12.5");
        expect_error(&p, "custom_metrics.cpu_usage", "one-element array");
    }

    #[test]
    fn a_custom_metric_array_must_hold_exactly_one_object() {
        let p = with("[{\"number\":12.5}]", "[{\"number\":1},{\"number\":2}]");
        expect_error(&p, "custom_metrics.cpu_usage", "exactly one");
        let p = with("[{\"number\":12.5}]", "[]");
        expect_error(&p, "custom_metrics.cpu_usage", "exactly one");
        let p = with(
            "[{\"number\":12.5}]",
            "[{\"number\":1,\"number_list\":[1]}]",
        );
        expect_error(&p, "custom_metrics.cpu_usage[0]", "exactly one");
    }

    #[test]
    fn an_unknown_inner_key_is_an_error() {
        let p = with("{\"number\":12.5}", "{\"numbers\":12.5}");
        expect_error(&p, "custom_metrics.cpu_usage[0].numbers", "unknown");
    }

    #[test]
    fn an_inner_value_of_the_wrong_type_is_an_error() {
        let p = with("{\"number\":12.5}", "{\"number\":\"12.5\"}");
        expect_error(&p, "custom_metrics.cpu_usage[0].number", "number");
        let p = with("[\"plant-a\",\"plant-b\"]", "[\"plant-a\",7]");
        expect_error(&p, "custom_metrics.wifi_ssids[0].string_list[1]", "string");
    }

    #[test]
    fn custom_metric_names_follow_the_api_pattern() {
        expect_error(
            &with("\"cpu_usage\"", "\"aws:cpu\""),
            "custom_metrics.aws:cpu",
            "aws:",
        );
        expect_error(
            &with("\"cpu_usage\"", "\"cpu usage\""),
            "custom_metrics.cpu usage",
            "[a-zA-Z0-9:_-]",
        );
        let long = format!("\"{}\"", "x".repeat(129));
        let p = with("\"cpu_usage\"", &long);
        assert!(
            p.iter()
                .any(|p| p.is_error() && p.message.contains("1-128")),
            "{p:#?}"
        );
    }

    #[test]
    fn a_number_with_more_than_15_digits_is_a_warning() {
        let p = with("12.5", "1234567890.1234567");
        expect_warning(
            &p,
            "custom_metrics.cpu_usage[0].number",
            "15 significant digits",
        );
        let p = with("[41,43.5]", "[41,1234567890123456]");
        expect_warning(
            &p,
            "custom_metrics.temperatures[0].number_list[1]",
            "15 significant digits",
        );
    }

    #[test]
    fn a_string_outside_the_charset_is_a_warning() {
        let p = with("\"plant-b\"", "\"plant b\"");
        expect_warning(
            &p,
            "custom_metrics.wifi_ssids[0].string_list[1]",
            "characters",
        );
    }

    #[test]
    fn a_bad_ip_in_an_ip_list_is_a_warning() {
        let p = with("\"192.0.2.1\"", "\"192.0.2.300\"");
        expect_warning(&p, "custom_metrics.gateways[0].ip_list[0]", "IP");
    }

    #[test]
    fn mixed_key_sets_are_an_error() {
        let p = with("\"report_id\"", "\"rid\"");
        expect_error(&p, "header.rid", "short key");
        let p = with("\"port\":22", "\"pt\":22");
        expect_error(&p, "metrics.listening_tcp_ports.ports[0].pt", "short key");
        let p = check(r#"{"hed":{"rid":1,"v":"1.0"},"met":{"tp":{"pts":[{"port":22}],"t":1}}}"#);
        expect_error(&p, "met.tp.pts[0].port", "long key");
    }

    #[test]
    fn unknown_keys_are_an_error() {
        expect_error(
            &with("\"version\":\"1.0\"", "\"version\":\"1.0\",\"ts\":5"),
            "header.ts",
            "unknown key",
        );
        expect_error(
            &with("{\"header\"", "{\"extra\":1,\"header\""),
            "extra",
            "unknown key",
        );
    }

    #[test]
    fn duplicate_keys_are_an_error() {
        let p = with(
            "\"version\":\"1.0\"",
            "\"version\":\"1.0\",\"version\":\"1.0\"",
        );
        expect_error(&p, "header.version", "duplicate");
        let p = with("\"gateways\"", "\"cpu_usage\"");
        expect_error(&p, "custom_metrics.cpu_usage", "duplicate");
    }

    #[test]
    fn a_block_of_the_wrong_type_is_an_error() {
        expect_error(
            &with(
                r#""ports":[{"port":22,"interface":"eth0"},{"port":8883}]"#,
                r#""ports":{"port":22}"#,
            ),
            "metrics.listening_tcp_ports.ports",
            "array",
        );
        expect_error(
            &check(r#"{"header":{"report_id":1,"version":"1.0"},"metrics":[]}"#),
            "metrics",
            "object",
        );
    }

    #[test]
    fn a_payload_over_128_kb_is_an_error() {
        let big = format!(
            r#"{{"header":{{"report_id":1,"version":"1.0"}},"custom_metrics":{{"x":[{{"string_list":["{}"]}}]}}}}"#,
            "a".repeat(MAX_PAYLOAD_BYTES)
        );
        expect_error(&check(&big), "", "128 KB");
    }

    #[test]
    fn malformed_json_is_an_error() {
        expect_error(&check("{\"header\":"), "", "not valid JSON");
        expect_error(&check("[1,2]"), "", "must be an object");
    }

    #[test]
    fn indefinite_length_cbor_is_a_warning() {
        // {_ "hed": {"rid": 1, "v": "1.0"}, "cmet": {"x": [{"number": 1}]}}
        let hex = concat!(
            "bf",
            "63686564",
            "a2",
            "63726964",
            "01",
            "6176",
            "63312e30",
            "64636d6574",
            "a1",
            "6178",
            "81",
            "a1",
            "666e756d626572",
            "01",
            "ff"
        );
        let bytes = crate::hex::decode(hex).expect("hex");
        let p = validate(&bytes, None);
        expect_warning(&p, "", "indefinite");
    }

    #[test]
    fn a_nan_number_in_cbor_is_a_warning() {
        // {"hed": {"rid": 1, "v": "1.0"}, "cmet": {"x": [{"number": NaN}]}}
        let hex = concat!(
            "a2",
            "63686564",
            "a2",
            "63726964",
            "01",
            "6176",
            "63312e30",
            "64636d6574",
            "a1",
            "6178",
            "81",
            "a1",
            "666e756d626572",
            "fb7ff8000000000000"
        );
        let bytes = crate::hex::decode(hex).expect("hex");
        let p = validate(&bytes, Some(Format::Cbor));
        expect_warning(&p, "cmet.x[0].number", "not a finite number");
    }

    #[test]
    fn trailing_bytes_after_a_cbor_report_are_an_error() {
        let p = validate(&[0xa0, 0x00], Some(Format::Cbor));
        expect_error(&p, "", "trailing");
    }

    #[test]
    fn the_format_is_sniffed_from_the_first_byte() {
        assert_eq!(sniff(b"  \n{\"a\":1}"), Format::Json);
        assert_eq!(sniff(&[0xa3, 0x63]), Format::Cbor);
        assert_eq!(sniff(b""), Format::Cbor);
    }

    #[test]
    fn problems_print_with_severity_and_path() {
        let p = Problem::error("header.report_id", "missing");
        assert_eq!(p.to_string(), "error: header.report_id: missing");
        assert_eq!(
            Problem::warning("", "x").to_string(),
            "warning: (report): x"
        );
    }
}

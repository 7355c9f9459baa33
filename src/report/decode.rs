//! Decoding a report (JSON or CBOR, long or short keys) back into a [`MetricsReport`].

use super::read;
use super::tree::{self, SyntaxError};
use super::validate::{self, Problem};
use super::{Format, MetricsReport};

/// Why bytes are not a report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not a single well-formed JSON or CBOR value.
    #[error("{0}")]
    Syntax(String),
    /// Well-formed, but breaks the report rules; every error-severity problem is listed.
    #[error("invalid metrics report: {}", summary(.0))]
    Invalid(Vec<Problem>),
}

impl From<SyntaxError> for DecodeError {
    fn from(e: SyntaxError) -> Self {
        DecodeError::Syntax(e.to_string())
    }
}

fn summary(problems: &[Problem]) -> String {
    let mut s = problems
        .iter()
        .take(3)
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect::<Vec<_>>()
        .join("; ");
    if problems.len() > 3 {
        s.push_str(&format!("; and {} more", problems.len() - 3));
    }
    s
}

/// Decodes a report in either key set (not mixed). Fails on any error-severity problem (see
/// [`super::validate`]); warnings are tolerated, and custom metrics whose values AWS would drop
/// (value warnings) are left out, as the service leaves them out. Unlike [`decode_validated`], it
/// does not hold the payload to the 128 KB MQTT limit.
pub fn decode(bytes: &[u8], format: Format) -> Result<MetricsReport, DecodeError> {
    let node = tree::parse(bytes, format)?;
    let reading = read::read(&node, format);
    let errors: Vec<Problem> = reading
        .problems
        .into_iter()
        .filter(Problem::is_error)
        .collect();
    if errors.is_empty() {
        Ok(reading.report)
    } else {
        Err(DecodeError::Invalid(errors))
    }
}

/// Validates and decodes in one pass, for a service that must answer every report: exactly
/// [`validate::validate`]`(bytes, Some(format))` (same rules, same problems, same order) and the
/// report [`decode`] gives.
///
/// `Ok((report, warnings))` when validate finds no error (`warnings` is then everything it
/// found); `Err(problem)` with the first error it finds otherwise (the payload limit, a syntax
/// error, or the first rule broken in document order).
pub fn decode_validated(
    bytes: &[u8],
    format: Format,
) -> Result<(MetricsReport, Vec<Problem>), Problem> {
    let validate::Reading { report, problems } = validate::check(bytes, format);
    if let Some(first) = problems.iter().position(Problem::is_error) {
        let mut problems = problems;
        return Err(problems.swap_remove(first));
    }
    match report {
        Some(report) => Ok((report, problems)),
        // Invariant: a payload that does not parse has a syntax error among its problems.
        None => Err(Problem::error("", "not a metrics report")),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

    use proptest::prelude::*;

    use super::super::validate::validate;
    use super::super::{
        encode, ConnectionList, KeySet, Metrics, NetworkStats, PortList, MAX_PAYLOAD_BYTES,
    };
    use super::*;
    use crate::custom_metric::CustomValue;
    use crate::sample::{Connection, ListeningPort};

    const GOLDEN: [(&str, Format); 4] = [
        (
            include_str!("../../tests/golden/spec-example-long.json"),
            Format::Json,
        ),
        (
            include_str!("../../tests/golden/spec-example-short.json"),
            Format::Json,
        ),
        (
            include_str!("../../tests/golden/spec-example-long.cbor.hex"),
            Format::Cbor,
        ),
        (
            include_str!("../../tests/golden/spec-example-short.cbor.hex"),
            Format::Cbor,
        ),
    ];

    fn golden() -> Vec<(Vec<u8>, Format)> {
        GOLDEN
            .iter()
            .map(|(text, format)| match format {
                Format::Json => (text.trim().as_bytes().to_vec(), *format),
                Format::Cbor => {
                    let digits: String = text.split_whitespace().collect();
                    (crate::hex::decode(&digits).expect("hex"), *format)
                }
            })
            .collect()
    }

    /// What the fleet did before `decode_validated`: validate, stop at the first error, decode.
    fn validate_then_decode(
        bytes: &[u8],
        format: Format,
    ) -> Result<(MetricsReport, Vec<Problem>), Problem> {
        let problems = validate(bytes, Some(format));
        if let Some(p) = problems.iter().find(|p| p.is_error()) {
            return Err(p.clone());
        }
        match decode(bytes, format) {
            Ok(report) => Ok((report, problems)),
            Err(e) => panic!("validate found no error but decode failed: {e}"),
        }
    }

    #[track_caller]
    fn same_as_before(bytes: &[u8], format: Format) {
        assert_eq!(
            decode_validated(bytes, format),
            validate_then_decode(bytes, format),
            "for {:?}",
            String::from_utf8_lossy(bytes)
        );
    }

    #[test]
    fn the_golden_reports_decode_validated_as_before() {
        for (bytes, format) in golden() {
            let (report, warnings) = decode_validated(&bytes, format).expect("valid");
            assert_eq!(warnings, vec![]);
            assert_eq!(Ok(report), decode(&bytes, format));
            same_as_before(&bytes, format);
        }
    }

    #[test]
    fn edited_golden_reports_fail_or_warn_as_before() {
        let long = GOLDEN[0].0.trim();
        for (from, to) in [
            ("\"report_id\"", "\"rid\""),
            ("\"report_id\"", "\"report_id\":0,\"report_id\""),
            ("\"version\":\"1.0\"", "\"version\":1"),
            ("\"port\"", "\"pt\""),
            ("\"header\"", "\"headers\""),
            ("{\"port\"", "{\"port\":0,\"x\":1,\"port\""),
            ("\"total\"", "\"total\":-1,\"t\""),
            ("[{", "[7,{"),
            ("\"ports\":[", "\"ports\":{\"a\":"),
            (":", ":\"x\",\"y\":"),
            (
                "\"metrics\"",
                "\"custom_metrics\":{\"a b\":[{\"number\":1}]},\"metrics\"",
            ),
            (
                "\"metrics\"",
                "\"custom_metrics\":{\"t\":[{\"number\":1e300}]},\"metrics\"",
            ),
            (
                "\"metrics\"",
                "\"custom_metrics\":{\"t\":[{\"ip_list\":[\"::ffff:1.2.3.4\",\"x\"]}]},\"metrics\"",
            ),
        ] {
            assert!(long.contains(from), "{from}");
            for n in 1..4 {
                same_as_before(long.replacen(from, to, n).as_bytes(), Format::Json);
            }
        }
        let big = format!(
            r#"{{"header":{{"report_id":1,"version":"1.0"}},"custom_metrics":{{"x":[{{"string_list":["{}"]}}]}}}}"#,
            "a".repeat(MAX_PAYLOAD_BYTES)
        );
        let err = decode_validated(big.as_bytes(), Format::Json).expect_err("too big");
        assert!(err.message.contains("128 KB"), "{err}");
        same_as_before(big.as_bytes(), Format::Json);
    }

    #[test]
    fn malformed_payloads_fail_with_the_syntax_error_validate_reports() {
        for (bytes, format) in [
            (&b"{\"header\":"[..], Format::Json),
            (b"[1,2]", Format::Json),
            (b"", Format::Json),
            (b"", Format::Cbor),
            (&[0xa0, 0x00], Format::Cbor),
            (&[0xc1, 0x1a, 0x66, 0x59, 0xf6, 0x05], Format::Cbor),
            (&[0xa2, 0x61, 0x61], Format::Cbor),
            (&[0x1c], Format::Cbor),
            (b"{\"header\":1}", Format::Cbor),
        ] {
            let err = decode_validated(bytes, format).expect_err("malformed");
            assert!(err.is_error());
            same_as_before(bytes, format);
        }
    }

    #[test]
    fn every_truncation_and_byte_flip_of_the_golden_reports_reads_as_before() {
        for (bytes, format) in golden() {
            for cut in 0..bytes.len() {
                same_as_before(&bytes[..cut], format);
            }
            for i in 0..bytes.len() {
                for flip in [0x01u8, 0x20, 0x80] {
                    let mut b = bytes.clone();
                    b[i] ^= flip;
                    same_as_before(&b, format);
                }
            }
        }
    }

    fn port() -> impl Strategy<Value = ListeningPort> {
        (
            1u16..,
            prop::option::of(prop_oneof![Just("eth0"), Just("wlan0"), Just("lo")]),
        )
            .prop_map(|(port, interface)| ListeningPort {
                port,
                interface: interface.map(str::to_owned),
            })
    }

    fn ports() -> impl Strategy<Value = Option<PortList>> {
        prop::option::of((prop::collection::vec(port(), 0..12), 0u64..3).prop_map(
            |(ports, extra)| PortList {
                total: ports.len() as u64 + extra,
                ports,
            },
        ))
    }

    fn connection() -> impl Strategy<Value = Connection> {
        (
            prop_oneof![
                any::<u32>().prop_map(|v| IpAddr::V4(Ipv4Addr::from(v))),
                any::<u128>().prop_map(|v| IpAddr::V6(Ipv6Addr::from(v))),
            ],
            any::<u16>(),
            any::<u16>(),
            prop::option::of(Just("eth0")),
        )
            .prop_map(|(ip, port, local_port, li)| Connection {
                remote: SocketAddr::new(ip, port),
                local_port,
                local_interface: li.map(str::to_owned),
            })
    }

    fn custom_value() -> impl Strategy<Value = CustomValue> {
        prop_oneof![
            (-1e6f64..1e6).prop_map(CustomValue::Number),
            any::<i32>().prop_map(|v| CustomValue::Number(f64::from(v))),
            prop::collection::vec(-1000i64..1000, 0..4).prop_map(|v| CustomValue::NumberList(
                v.into_iter().map(|n| n as f64 / 4.0).collect()
            )),
            prop::collection::vec("[a-z0-9 .]{0,6}", 0..4).prop_map(CustomValue::StringList),
            prop::collection::vec(any::<u32>(), 0..3).prop_map(|v| CustomValue::IpList(
                v.into_iter()
                    .map(|n| IpAddr::V4(Ipv4Addr::from(n)))
                    .collect()
            )),
        ]
    }

    fn report() -> impl Strategy<Value = MetricsReport> {
        let metrics = prop::option::of(
            (
                ports(),
                ports(),
                prop::option::of(any::<[u64; 4]>()),
                prop::option::of((prop::collection::vec(connection(), 0..12), 0u64..3)),
            )
                .prop_map(|(tp, up, ns, tc)| Metrics {
                    listening_tcp_ports: tp,
                    listening_udp_ports: up,
                    network_stats: ns.map(|[a, b, c, d]| NetworkStats {
                        bytes_in: a,
                        bytes_out: b,
                        packets_in: c,
                        packets_out: d,
                    }),
                    tcp_connections: tc.map(|(connections, extra)| ConnectionList {
                        total: connections.len() as u64 + extra,
                        connections,
                    }),
                }),
        );
        (
            any::<u64>(),
            metrics,
            prop::collection::vec(("[a-z_:-]{1,8}", custom_value()), 0..4),
        )
            .prop_map(|(report_id, metrics, custom_metrics)| MetricsReport {
                report_id,
                version: "1.0".to_owned(),
                metrics,
                custom_metrics,
            })
    }

    proptest! {
        #[test]
        fn generated_reports_decode_validated_as_before(
            report in report(),
            cbor in any::<bool>(),
            short in any::<bool>(),
        ) {
            let format = if cbor { Format::Cbor } else { Format::Json };
            let keys = if short { KeySet::Short } else { KeySet::Long };
            let bytes = encode(&report, format, keys);
            prop_assert_eq!(decode_validated(&bytes, format), validate_then_decode(&bytes, format));
        }

        #[test]
        fn damaged_generated_reports_decode_validated_as_before(
            report in report(),
            cbor in any::<bool>(),
            short in any::<bool>(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let format = if cbor { Format::Cbor } else { Format::Json };
            let keys = if short { KeySet::Short } else { KeySet::Long };
            let mut bytes = encode(&report, format, keys);
            let i = at.index(bytes.len());
            bytes[i] = byte;
            prop_assert_eq!(decode_validated(&bytes, format), validate_then_decode(&bytes, format));
        }
    }
}

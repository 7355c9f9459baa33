//! Golden tests for `report`: the spec's A.6/A.7 example built from samples, encoded in both key
//! sets and both formats byte for byte, decoded back, and validated.

use std::net::IpAddr;

use defender_agent::custom_metric::CustomValue;
use defender_agent::hex::encode as hex;
use defender_agent::report::validate::{self, Severity};
use defender_agent::report::{
    decode, encode, Format, KeySet, MetricsReport, ReportBuilder, Settings,
};
use defender_agent::sample::{Connection, InterfaceCounters, ListeningPort, Sample};
use proptest::prelude::*;

const LONG_JSON: &str = include_str!("../golden/spec-example-long.json");
const SHORT_JSON: &str = include_str!("../golden/spec-example-short.json");
const SHORT_CBOR_HEX: &str = include_str!("../golden/spec-example-short.cbor.hex");
const LONG_CBOR_HEX: &str = include_str!("../golden/spec-example-long.cbor.hex");

fn unhex(text: &str) -> Vec<u8> {
    let digits: String = text.split_whitespace().collect();
    defender_agent::hex::decode(&digits).unwrap_or_else(|| panic!("bad hex {digits:?}"))
}

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

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// The A.6 example, produced the way the agent produces it: two samples through the builder.
fn spec_example() -> MetricsReport {
    let mut builder = ReportBuilder::new(&Settings::default());
    let first = Sample {
        interfaces: Some(vec![
            iface("eth0", 5_000_000_000, 7_000_000_000, 4_000_000, 3_000_000),
            iface("wlan0", 900_000, 900_000, 9_000, 9_000),
        ]),
        ..Sample::default()
    };
    builder.observe(&first);
    // Second sample: eth0 adds 100 000 / 90 000 / 900 / 800 (above 2^32, as 64-bit counters do);
    // wlan0 was reset (counters restarted) and holds 20 443 / 8 113 / 12 / 77. Lists arrive
    // unsorted, as collectors give them.
    let second = Sample {
        interfaces: Some(vec![
            iface("wlan0", 20_443, 8_113, 12, 77),
            iface("eth0", 5_000_100_000, 7_000_090_000, 4_000_900, 3_000_800),
        ]),
        tcp_listen: Some(vec![
            ListeningPort {
                port: 8883,
                interface: None,
            },
            ListeningPort {
                port: 22,
                interface: Some("eth0".into()),
            },
        ]),
        udp_listen: Some(vec![ListeningPort {
            port: 5353,
            interface: Some("wlan0".into()),
        }]),
        connections: Some(vec![
            Connection {
                remote: "[2001:db8::10]:443"
                    .parse()
                    .unwrap_or_else(|e| panic!("{e}")),
                local_port: 51000,
                local_interface: Some("eth0".into()),
            },
            Connection {
                remote: "203.0.113.10:8883"
                    .parse()
                    .unwrap_or_else(|e| panic!("{e}")),
                local_port: 49822,
                local_interface: Some("eth0".into()),
            },
        ]),
        custom: vec![
            ("cpu_usage".into(), CustomValue::Number(12.5)),
            (
                "temperatures".into(),
                CustomValue::NumberList(vec![41.0, 43.5]),
            ),
            (
                "wifi_ssids".into(),
                CustomValue::StringList(vec!["plant-a".into(), "plant-b".into()]),
            ),
            (
                "gateways".into(),
                CustomValue::IpList(vec![ip("192.0.2.1"), ip("2001:db8::1")]),
            ),
        ],
    };
    builder.observe(&second);
    let built = builder.build(1_717_171_717);
    assert!(built.dropped.is_empty(), "{:?}", built.dropped);
    built.report
}

#[test]
fn the_spec_example_in_long_keys_matches_the_compact_json_byte_for_byte() {
    let bytes = encode(&spec_example(), Format::Json, KeySet::Long);
    assert_eq!(String::from_utf8_lossy(&bytes), LONG_JSON);
    assert_eq!(bytes.len(), 752);
}

#[test]
fn the_spec_example_in_short_keys_matches_the_compact_json_byte_for_byte() {
    let bytes = encode(&spec_example(), Format::Json, KeySet::Short);
    assert_eq!(String::from_utf8_lossy(&bytes), SHORT_JSON);
    assert_eq!(bytes.len(), 511);
}

#[test]
fn the_spec_example_in_short_keys_matches_the_spec_cbor_hex_byte_for_byte() {
    let bytes = encode(&spec_example(), Format::Cbor, KeySet::Short);
    assert_eq!(hex(&bytes), hex(&unhex(SHORT_CBOR_HEX)));
    assert_eq!(bytes.len(), 365);
}

#[test]
fn the_spec_example_in_long_keys_matches_the_long_cbor_golden() {
    let bytes = encode(&spec_example(), Format::Cbor, KeySet::Long);
    assert_eq!(hex(&bytes), hex(&unhex(LONG_CBOR_HEX)));
}

#[test]
fn the_long_cbor_golden_says_what_the_long_json_says() {
    // Cross-check with ciborium's own decoder, independent of ours.
    let value: ciborium::Value = ciborium::de::from_reader(unhex(LONG_CBOR_HEX).as_slice())
        .unwrap_or_else(|e| panic!("{e}"));
    let as_json = serde_json::to_value(&value).unwrap_or_else(|e| panic!("{e}"));
    let json: serde_json::Value = serde_json::from_str(LONG_JSON).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(as_json, json);
}

fn goldens() -> Vec<(&'static str, Vec<u8>, Format, KeySet)> {
    vec![
        (
            "long json",
            LONG_JSON.as_bytes().to_vec(),
            Format::Json,
            KeySet::Long,
        ),
        (
            "short json",
            SHORT_JSON.as_bytes().to_vec(),
            Format::Json,
            KeySet::Short,
        ),
        (
            "short cbor",
            unhex(SHORT_CBOR_HEX),
            Format::Cbor,
            KeySet::Short,
        ),
        (
            "long cbor",
            unhex(LONG_CBOR_HEX),
            Format::Cbor,
            KeySet::Long,
        ),
    ]
}

#[test]
fn validate_accepts_all_four_golden_encodings() {
    for (name, bytes, format, _) in goldens() {
        assert_eq!(validate::validate(&bytes, Some(format)), vec![], "{name}");
        // Sniffing finds the same format.
        assert_eq!(validate::validate(&bytes, None), vec![], "{name} (sniffed)");
    }
}

#[test]
fn every_golden_decodes_to_the_spec_example() {
    let expected = spec_example();
    for (name, bytes, format, _) in goldens() {
        assert_eq!(decode(&bytes, format).as_ref(), Ok(&expected), "{name}");
    }
}

#[test]
fn decoding_and_re_encoding_a_golden_gives_the_same_bytes() {
    for (name, bytes, format, keys) in goldens() {
        let report = decode(&bytes, format).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(hex(&encode(&report, format, keys)), hex(&bytes), "{name}");
    }
}

#[test]
fn an_unknown_key_in_the_short_cbor_golden_is_an_error_at_its_path() {
    // Swap "rid" (63 726964) for "xyz": an unknown key, and report_id goes missing.
    let mut bytes = unhex(SHORT_CBOR_HEX);
    let pos = bytes
        .windows(4)
        .position(|w| w == [0x63, b'r', b'i', b'd'])
        .unwrap_or_else(|| panic!("rid not found"));
    bytes[pos + 1..pos + 4].copy_from_slice(b"xyz");
    let problems = validate::validate(&bytes, Some(Format::Cbor));
    assert!(problems
        .iter()
        .any(|p| p.severity == Severity::Error && p.path == "hed.xyz"));
    assert!(problems.iter().any(|p| p.path == "hed.rid"));
    assert!(decode(&bytes, Format::Cbor).is_err());
}

fn arb_custom() -> impl Strategy<Value = CustomValue> {
    let number = prop_oneof![
        (-1_000_000i64..1_000_000).prop_map(|v| v as f64),
        (-1_000_000i64..1_000_000).prop_map(|v| v as f64 / 8.0),
    ];
    prop_oneof![
        number.clone().prop_map(CustomValue::Number),
        prop::collection::vec(number, 0..4).prop_map(CustomValue::NumberList),
        prop::collection::vec("[A-Za-z0-9:_/.-]{0,12}", 0..4).prop_map(CustomValue::StringList),
        prop::collection::vec(any::<IpAddr>(), 0..4).prop_map(CustomValue::IpList),
    ]
}

fn arb_interface() -> impl Strategy<Value = Option<String>> {
    prop::option::of("[a-z]{1,5}[0-9]")
}

fn arb_sample() -> impl Strategy<Value = Sample> {
    let port = || {
        (1u16.., arb_interface()).prop_map(|(port, interface)| ListeningPort { port, interface })
    };
    let conn = (any::<std::net::SocketAddr>(), any::<u16>(), arb_interface()).prop_map(
        |(remote, local_port, local_interface): (std::net::SocketAddr, u16, Option<String>)| {
            Connection {
                // The wire form has no IPv6 scope id or flow label.
                remote: std::net::SocketAddr::new(remote.ip(), remote.port()),
                local_port,
                local_interface,
            }
        },
    );
    let custom =
        prop::collection::vec(("[a-z][a-z0-9_]{0,10}", arb_custom()), 0..4).prop_map(|mut v| {
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v.dedup_by(|a, b| a.0 == b.0);
            v
        });
    (
        prop::option::of(prop::collection::vec(port(), 0..6)),
        prop::option::of(prop::collection::vec(port(), 0..6)),
        prop::option::of(prop::collection::vec(conn, 0..6)),
        custom,
    )
        .prop_map(|(tcp_listen, udp_listen, connections, custom)| Sample {
            interfaces: None,
            tcp_listen,
            udp_listen,
            connections,
            custom,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_built_report_round_trips_and_validates(sample in arb_sample(), id in 1u64..) {
        let mut builder = ReportBuilder::new(&Settings { max_list_len: 4, ..Settings::default() });
        builder.observe(&sample);
        let report = builder.build(id).report;
        prop_assume!(report.has_data());
        for format in [Format::Json, Format::Cbor] {
            for keys in [KeySet::Long, KeySet::Short] {
                let bytes = encode(&report, format, keys);
                let problems = validate::validate(&bytes, Some(format));
                prop_assert!(problems.iter().all(|p| !p.is_error()), "{format} {keys}: {problems:?}");
                let decoded = decode(&bytes, format);
                prop_assert_eq!(decoded.as_ref(), Ok(&report));
            }
        }
    }
}

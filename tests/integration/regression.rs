//! Regression tests for what fuzzing (fuzz/, cargo-fuzz) and the panic audit found: each test names
//! the target or audit item it reproduces. Inputs are built here, byte by byte, so they stay
//! readable; the crashing artifacts themselves are in fuzz/corpus/<target>/ as seeds.

use defender_agent::spool::record::{encode, file_header, Record};
use defender_agent::spool::{Entry, Settings, Spool, LOG_NAME};

/// Writes a spool log made of `records` into `<dir>/spool/` and returns the settings to open it.
fn spool_with(dir: &std::path::Path, records: &[Record]) -> Settings {
    let mut image = file_header().to_vec();
    for r in records {
        encode(r, &mut image);
    }
    let spool_dir = dir.join("spool");
    std::fs::create_dir_all(&spool_dir).unwrap();
    std::fs::write(spool_dir.join(LOG_NAME), image).unwrap();
    Settings::new(dir)
}

#[test]
fn fuzz_spool_open_meta_dropped_total_at_u64_max_then_a_drop_record_does_not_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let settings = spool_with(
        dir.path(),
        &[
            Record::Meta {
                last_id: None,
                dropped_total: u64::MAX,
            },
            Record::Append(Entry {
                id: 1,
                format: defender_agent::report::Format::Json,
                payload: b"{}".to_vec(),
            }),
            Record::Drop { id: 1 },
        ],
    );
    let (spool, _) = Spool::open(settings).unwrap();
    assert_eq!(spool.stats().dropped_total, u64::MAX);
    assert_eq!(spool.stats().pending, 0);
}

#[test]
fn fuzz_spool_open_meta_dropped_total_at_u64_max_then_bounded_appends_do_not_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = spool_with(
        dir.path(),
        &[Record::Meta {
            last_id: Some(5),
            dropped_total: u64::MAX,
        }],
    );
    settings.max_reports = 1;
    let (mut spool, _) = Spool::open(settings).unwrap();
    for id in 6..9 {
        let entry = Entry {
            id,
            format: defender_agent::report::Format::Json,
            payload: b"{}".to_vec(),
        };
        spool.append(entry).unwrap();
    }
    assert_eq!(spool.stats().dropped_total, u64::MAX);
    assert_eq!(spool.stats().pending, 1);
}

#[test]
fn fuzz_proc_net_sockets_a_row_mixing_an_ipv6_local_and_an_ipv4_remote_address_is_refused() {
    use defender_agent::collect::{parse_proc_net, ProcNetFault, Proto};
    let table = concat!(
        "  sl  local_address                         remote_address                        st\n",
        "   0: 00000000000000000000000000000000:22B3 00000000:01BB 01 00000000:00000000\n",
    );
    let error = parse_proc_net(table, Proto::Tcp).unwrap_err();
    assert_eq!(error.line, 2);
    assert_eq!(error.reason, ProcNetFault::BadAddress);
}

/// The replay fixture engine (tests/fixtures/detect/replay-*.json).
fn replay_engine() -> defender_agent::detect::DetectEngine {
    use defender_agent::detect::*;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/detect");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    let dimension = load_dimension(
        &read("replay-dimension.json"),
        "d",
        Format::Json,
        Mode::Strict,
    );
    let metric = load_custom_metric(&read("replay-custom-metric.json"), "m", Format::Json);
    let ctx = ValidationContext::new(vec![dimension.unwrap()], vec![metric.unwrap()]);
    let profile = load_profile(
        &read("replay-profile.json"),
        "p",
        Format::Json,
        &ctx,
        Mode::Load,
    );
    DetectEngine::new(EngineSettings::new("t1"), &[profile.unwrap().profile], &ctx)
}

#[test]
fn fuzz_detect_replay_a_fifty_year_jump_between_lines_is_refused_instead_of_ticking_for_minutes() {
    let input = concat!(
        "{\"time\": 1560276000, \"publish\": {\"topic\": \"a\", \"bytes\": 1}}\n",
        "{\"time\": 3120552206, \"publish\": {\"topic\": \"a\", \"bytes\": 1}}\n",
    );
    let error = defender_agent::detect::replay::replay(input, replay_engine(), "c1").unwrap_err();
    assert!(error.to_string().contains("line 2"), "{error}");
    assert!(error.to_string().contains("31 days"), "{error}");
}

#[test]
fn fuzz_detect_replay_a_time_beyond_year_9999_is_refused_instead_of_overflowing() {
    let input = "{\"time\": 1e300, \"tick\": {}}\n";
    let error = defender_agent::detect::replay::replay(input, replay_engine(), "c1").unwrap_err();
    assert!(error.to_string().contains("line 1"), "{error}");
}

/// validate_json / validate_cbor: a custom `number_list` value written in exponent form ("9e64",
/// as serde_json writes such a float) parsed to a neighbouring f64 (9.000000000000001e64), which
/// has 16 significant digits, so the re-decoded report dropped the metric: decode(encode(r)) ≠ r.
#[test]
fn fuzz_validate_json_an_exponent_form_number_decodes_to_the_float_it_was_encoded_from() {
    use defender_agent::custom_metric::CustomValue;
    use defender_agent::report::{self, Format, KeySet};
    for number in [
        "9e64",
        "89999999999999999999999999999999999999999999999999999999999999995.2",
    ] {
        let text = format!(
            r#"{{"header":{{"report_id":1,"version":"1.0"}},"custom_metrics":{{"t":[{{"number_list":[{number},349]}}]}}}}"#
        );
        let r = report::decode(text.as_bytes(), Format::Json).expect("a valid report");
        assert_eq!(
            r.custom_metrics,
            vec![("t".to_owned(), CustomValue::NumberList(vec![9e64, 349.0]))],
            "{number}"
        );
        for format in [Format::Json, Format::Cbor] {
            for keys in [KeySet::Long, KeySet::Short] {
                let e = report::EncodedReport::new(&r, format, keys);
                assert_eq!(
                    report::decode(&e.bytes, format).unwrap(),
                    r,
                    "{format:?} {keys:?}"
                );
            }
        }
    }
}

/// validate_json: a `remote_addr` with an IPv6 zone id ("[2001:db8::%10]:43") decoded with the
/// zone, but the encoder writes "[ip]:port", so decode(encode(r)) ≠ r. The zone is now a warning
/// and dropped on decoding.
#[test]
fn fuzz_validate_json_an_ipv6_zone_id_in_remote_addr_is_a_warning_and_dropped() {
    use defender_agent::report::{self, validate::validate, Format, KeySet};
    let text = br#"{"hed":{"rid":1,"v":"1.0"},"met":{"tc":{"ec":{"cs":[{"rad":"[2001:db8::%10]:43","lp":51000}],"t":1}}}}"#;
    let problems = validate(text, Some(Format::Json));
    assert!(
        problems
            .iter()
            .any(|p| !p.is_error() && p.to_string().contains("zone id")),
        "{problems:?}"
    );
    let r = report::decode(text, Format::Json).expect("valid with a warning");
    let conns = &r
        .metrics
        .as_ref()
        .unwrap()
        .tcp_connections
        .as_ref()
        .unwrap()
        .connections;
    assert_eq!(conns[0].remote.to_string(), "[2001:db8::]:43");
    for keys in [KeySet::Long, KeySet::Short] {
        let e = report::EncodedReport::new(&r, Format::Json, keys);
        assert_eq!(
            report::decode(&e.bytes, Format::Json).unwrap(),
            r,
            "{keys:?}"
        );
    }
}

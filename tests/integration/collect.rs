//! Collectors against fixture procfs trees and against this machine (real loopback sockets,
//! real commands and files).

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use defender_agent::collect::{
    Builtin, CollectorId, Collectors, CustomError, CustomMetricSettings, CustomSource, Error,
    HostPaths, ParseFault, Sampler, Settings, SocketSource,
};
use defender_agent::custom_metric::{CustomMetricType, CustomValue};
use defender_agent::sample::{Connection, InterfaceCounters, ListeningPort, Sample};

use crate::support::fixture;

fn fixture_settings(case: &str) -> Settings {
    Settings {
        paths: HostPaths {
            proc_root: fixture(&format!("proc/{case}")),
            sys_root: PathBuf::from("/sys"),
        },
        ..Settings::default()
    }
}

fn sample_with(settings: Settings) -> (Sample, Vec<Error>) {
    Collectors::new(settings).expect("valid settings").sample()
}

fn port(port: u16, interface: Option<&str>) -> ListeningPort {
    ListeningPort {
        port,
        interface: interface.map(str::to_owned),
    }
}

fn counters(name: &str, bi: u64, pi: u64, bo: u64, po: u64) -> InterfaceCounters {
    InterfaceCounters {
        name: name.into(),
        bytes_in: bi,
        bytes_out: bo,
        packets_in: pi,
        packets_out: po,
    }
}

#[test]
fn a_gateway_fixture_yields_every_block() {
    let (sample, errors) = sample_with(fixture_settings("gateway"));
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        sample.interfaces.unwrap(),
        [
            counters("eth0", 5_000_000_000, 4_000_000, 6_000_000_000, 3_000_000),
            counters("br-lan", 123_456, 789, 654_321, 987),
            counters("eth0.100", 4_294_967_296, 10, 4_294_967_297, 11),
            counters("wlan0-1", 1, 2, 3, 4),
        ]
    );
    // 22 and 8883 on both 0.0.0.0 and :: are one wildcard entry each; port 0 is dropped.
    assert_eq!(
        sample.tcp_listen.unwrap(),
        [
            port(22, None),
            port(53, Some("lo")),
            port(8080, Some("lo")),
            port(8883, None)
        ]
    );
    // The connected UDP sockets (v4 and v6) are clients, not listeners.
    assert_eq!(
        sample.udp_listen.unwrap(),
        [
            port(53, Some("lo")),
            port(68, None),
            port(323, Some("lo")),
            port(5353, None)
        ]
    );
    let connections: Vec<(String, u16, Option<String>)> = sample
        .connections
        .unwrap()
        .into_iter()
        .map(|c| (c.remote.to_string(), c.local_port, c.local_interface))
        .collect();
    assert_eq!(
        connections,
        [
            ("127.0.0.1:8080".into(), 40000, Some("lo".into())),
            ("198.51.100.7:443".into(), 51000, None),
            ("203.0.113.10:8883".into(), 49822, None),
            ("[2001:db8::99]:443".into(), 40000, None),
        ]
    );
}

#[test]
fn interface_patterns_choose_the_counted_interfaces() {
    let settings = Settings {
        interfaces_include: vec!["eth*".into(), "lo".into()],
        interfaces_exclude: vec!["*.*".into()],
        ..fixture_settings("gateway")
    };
    let names: Vec<String> = sample_with(settings)
        .0
        .interfaces
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["lo", "eth0"]);
}

#[test]
fn reset_fixtures_show_counters_going_backwards_and_no_ipv6_tables_is_fine() {
    let (before, errors_before) = sample_with(fixture_settings("reset-before"));
    let (after, errors_after) = sample_with(fixture_settings("reset-after"));
    assert!(errors_before.is_empty() && errors_after.is_empty());
    let eth0 = |s: &Sample| s.interfaces.as_ref().unwrap()[0].clone();
    assert_eq!(eth0(&before).name, "eth0");
    assert!(eth0(&after).bytes_in < eth0(&before).bytes_in);
    assert!(eth0(&after).bytes_out < eth0(&before).bytes_out);
    // tcp6/udp6 absent (kernel without IPv6): v4 only, no error.
    assert_eq!(after.tcp_listen.unwrap(), [port(22, None)]);
    assert_eq!(after.udp_listen.unwrap(), []);
}

#[test]
fn broken_tables_leave_their_blocks_out_and_say_where() {
    let (sample, errors) = sample_with(fixture_settings("broken"));
    assert_eq!(sample.interfaces, None);
    assert_eq!(sample.tcp_listen, None);
    assert_eq!(sample.connections, None);
    // UDP is readable on its own: its block survives.
    assert_eq!(sample.udp_listen.unwrap(), [port(5353, None)]);
    let messages: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(errors.len(), 2, "{messages:?}");
    assert_eq!(errors[0].collector(), CollectorId::Network);
    assert!(messages[0].contains("broken/net/dev") && messages[0].contains("line 3"));
    assert_eq!(errors[1].collector(), CollectorId::Sockets);
    assert!(messages[1].contains("broken/net/tcp") && messages[1].contains("line 2"));
}

#[test]
fn a_missing_proc_root_fails_every_os_block_without_panicking() {
    let settings = Settings {
        paths: HostPaths {
            proc_root: PathBuf::from("/nonexistent/proc"),
            sys_root: PathBuf::from("/sys"),
        },
        ..Settings::default()
    };
    let (sample, errors) = sample_with(settings);
    assert_eq!(sample, Sample::default());
    assert_eq!(errors.len(), 3, "{errors:?}");
}

/// Real sockets on loopback, kept open while sampling.
struct LiveSockets {
    tcp_v4: TcpListener,
    tcp_v6: TcpListener,
    tcp_any: TcpListener,
    udp_v4: UdpSocket,
    udp_v6: UdpSocket,
    udp_connected: UdpSocket,
    client: TcpStream,
    _server_side: TcpStream,
}

impl LiveSockets {
    fn open() -> Self {
        let tcp_v4 = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let tcp_v6 = TcpListener::bind("[::1]:0").expect("bind [::1] (IPv6 loopback needed)");
        let tcp_any = TcpListener::bind("0.0.0.0:0").expect("bind 0.0.0.0");
        let udp_v4 = UdpSocket::bind("127.0.0.1:0").expect("bind udp 127.0.0.1");
        let udp_v6 = UdpSocket::bind("[::1]:0").expect("bind udp [::1]");
        let udp_connected = UdpSocket::bind("127.0.0.1:0").expect("bind udp client");
        udp_connected
            .connect(udp_v4.local_addr().unwrap())
            .expect("connect udp");
        let client = TcpStream::connect(tcp_v4.local_addr().unwrap()).expect("connect tcp");
        let (server_side, _) = tcp_v4.accept().expect("accept");
        LiveSockets {
            tcp_v4,
            tcp_v6,
            tcp_any,
            udp_v4,
            udp_v6,
            udp_connected,
            client,
            _server_side: server_side,
        }
    }
}

fn live_sample(source: SocketSource) -> Sample {
    let settings = Settings {
        socket_source: source,
        ..Settings::default()
    };
    let (sample, errors) = sample_with(settings);
    assert!(errors.is_empty(), "{source:?}: {errors:?}");
    sample
}

fn assert_live_sockets_are_seen(source: SocketSource) {
    let live = LiveSockets::open();
    let sample = live_sample(source);
    let port_of = |a: SocketAddr| a.port();
    let tcp = sample.tcp_listen.unwrap();
    let udp = sample.udp_listen.unwrap();
    let connections = sample.connections.unwrap();
    let lo = Some("lo");
    for (listener, interface) in [
        (&live.tcp_v4, lo),
        (&live.tcp_v6, lo),
        (&live.tcp_any, None),
    ] {
        let want = port(port_of(listener.local_addr().unwrap()), interface);
        assert!(tcp.contains(&want), "{source:?}: {want:?} not in {tcp:?}");
    }
    for socket in [&live.udp_v4, &live.udp_v6] {
        let want = port(port_of(socket.local_addr().unwrap()), lo);
        assert!(udp.contains(&want), "{source:?}: {want:?} not in {udp:?}");
    }
    let connected_port = port_of(live.udp_connected.local_addr().unwrap());
    assert!(
        udp.iter().all(|p| p.port != connected_port),
        "{source:?}: connected UDP port {connected_port} reported as a listener"
    );
    let client = Connection {
        remote: live.tcp_v4.local_addr().unwrap(),
        local_port: port_of(live.client.local_addr().unwrap()),
        local_interface: Some("lo".into()),
    };
    assert!(
        connections.contains(&client),
        "{source:?}: {client:?} not in {connections:?}"
    );
    let server_side = Connection {
        remote: live.client.local_addr().unwrap(),
        local_port: port_of(live.tcp_v4.local_addr().unwrap()),
        local_interface: Some("lo".into()),
    };
    assert!(connections.contains(&server_side), "{source:?}");
}

#[test]
fn live_loopback_sockets_are_seen_over_netlink() {
    assert_live_sockets_are_seen(SocketSource::Netlink);
}

#[test]
fn live_loopback_sockets_are_seen_in_proc_net() {
    assert_live_sockets_are_seen(SocketSource::Procfs);
}

#[test]
fn live_loopback_sockets_are_seen_with_the_automatic_source() {
    assert_live_sockets_are_seen(SocketSource::Auto);
}

#[test]
fn the_live_network_block_lists_this_machines_interfaces() {
    let settings = Settings {
        interfaces_exclude: vec![],
        ..Settings::default()
    };
    let interfaces = sample_with(settings).0.interfaces.unwrap();
    assert!(interfaces.iter().any(|c| c.name == "lo"), "{interfaces:?}");
    let default = sample_with(Settings::default()).0.interfaces.unwrap();
    assert!(default.iter().all(|c| c.name != "lo"));
}

fn custom(name: &str, metric_type: CustomMetricType, source: CustomSource) -> CustomMetricSettings {
    CustomMetricSettings {
        name: name.into(),
        metric_type,
        source,
    }
}

fn command(argv: &[&str], timeout_ms: u64) -> CustomSource {
    CustomSource::Command {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        timeout: Duration::from_millis(timeout_ms),
    }
}

fn custom_sample(metrics: Vec<CustomMetricSettings>) -> (Vec<(String, CustomValue)>, Vec<Error>) {
    let settings = Settings {
        custom: metrics,
        ..fixture_settings("gateway")
    };
    let (sample, errors) = sample_with(settings);
    (sample.custom, errors)
}

#[test]
fn command_output_is_parsed_per_type() {
    let (values, errors) = custom_sample(vec![
        custom(
            "n",
            CustomMetricType::Number,
            command(&["/bin/echo", "42"], 5_000),
        ),
        custom(
            "nl",
            CustomMetricType::NumberList,
            command(&["/usr/bin/printf", "41,43.5\n44"], 5_000),
        ),
        custom(
            "sl",
            CustomMetricType::StringList,
            command(&["/usr/bin/printf", " plant-a\n\nplant-b \n"], 5_000),
        ),
        custom(
            "ips",
            CustomMetricType::IpAddressList,
            command(&["/bin/echo", "192.0.2.1 2001:db8::1"], 5_000),
        ),
    ]);
    assert!(errors.is_empty(), "{errors:?}");
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(
        values,
        [
            ("n".to_string(), CustomValue::Number(42.0)),
            (
                "nl".to_string(),
                CustomValue::NumberList(vec![41.0, 43.5, 44.0])
            ),
            (
                "sl".to_string(),
                CustomValue::StringList(vec!["plant-a".into(), "plant-b".into()])
            ),
            (
                "ips".to_string(),
                CustomValue::IpList(vec![ip("192.0.2.1"), ip("2001:db8::1")])
            ),
        ]
    );
}

fn single_error(metric: CustomMetricSettings) -> CustomError {
    let (values, mut errors) = custom_sample(vec![metric]);
    assert!(values.is_empty(), "{values:?}");
    assert_eq!(errors.len(), 1, "{errors:?}");
    match errors.remove(0) {
        Error::Custom { cause, .. } => cause,
        other => panic!("not a custom metric error: {other}"),
    }
}

#[test]
fn a_command_that_outlives_its_timeout_is_killed_and_reported() {
    // sh forks sleep (a command follows it), so the kill must reach the process group.
    let cause = single_error(custom(
        "slow",
        CustomMetricType::Number,
        command(&["/bin/sh", "-c", "sleep 5; echo 1"], 200),
    ));
    assert!(matches!(cause, CustomError::Timeout { .. }), "{cause}");
}

#[test]
fn argv_is_not_interpreted_by_a_shell() {
    let cause = single_error(custom(
        "literal",
        CustomMetricType::Number,
        command(&["/bin/echo", "$((6*7))"], 5_000),
    ));
    assert!(
        matches!(&cause, CustomError::Parse { fault: ParseFault::NotANumber(t), .. } if t == "$((6*7))"),
        "{cause}"
    );
}

#[test]
fn failing_and_missing_commands_are_errors_with_their_cause() {
    let cause = single_error(custom(
        "fails",
        CustomMetricType::Number,
        command(&["/bin/sh", "-c", "echo oops >&2; exit 3"], 5_000),
    ));
    match cause {
        CustomError::Exit { status, stderr, .. } => {
            assert_eq!(status.code(), Some(3));
            assert_eq!(stderr, "oops");
        }
        other => panic!("{other}"),
    }
    let cause = single_error(custom(
        "missing",
        CustomMetricType::Number,
        command(&["/nonexistent/program"], 5_000),
    ));
    assert!(matches!(cause, CustomError::Spawn { .. }), "{cause}");
}

#[test]
fn a_command_printing_too_much_is_stopped() {
    let cause = single_error(custom(
        "flood",
        CustomMetricType::StringList,
        command(&["/usr/bin/yes", "a"], 5_000),
    ));
    assert!(matches!(cause, CustomError::OutputTooLarge), "{cause}");
}

#[test]
fn file_sources_are_read_each_sample_and_validated() {
    let dir = tempfile::tempdir().unwrap();
    let temp = dir.path().join("temp");
    let settings = Settings {
        custom: vec![custom(
            "temp",
            CustomMetricType::Number,
            CustomSource::File { path: temp.clone() },
        )],
        ..fixture_settings("gateway")
    };
    let collectors = Collectors::new(settings).unwrap();
    std::fs::write(&temp, "42123\n").unwrap();
    assert_eq!(
        collectors.sample().0.custom,
        [("temp".to_string(), CustomValue::Number(42123.0))]
    );
    std::fs::write(&temp, "1234567890.1234567\n").unwrap();
    let (sample, errors) = collectors.sample();
    assert!(sample.custom.is_empty());
    assert!(
        matches!(
            &errors[..],
            [Error::Custom {
                cause: CustomError::Rule(_),
                ..
            }]
        ),
        "{errors:?}"
    );
    std::fs::remove_file(&temp).unwrap();
    let (_, errors) = collectors.sample();
    assert!(
        matches!(
            &errors[..],
            [Error::Custom {
                cause: CustomError::File { .. },
                ..
            }]
        ),
        "{errors:?}"
    );
}

#[test]
fn builtins_return_plausible_values() {
    let percent = |name: &str, b| custom(name, CustomMetricType::Number, CustomSource::Builtin(b));
    let settings = Settings {
        custom: vec![
            percent("cpu", Builtin::CpuUsagePercent),
            percent("mem", Builtin::MemoryUsedPercent),
            percent(
                "disk",
                Builtin::DiskUsedPercent {
                    mount: PathBuf::from("/"),
                },
            ),
            custom(
                "load",
                CustomMetricType::NumberList,
                CustomSource::Builtin(Builtin::LoadAverage),
            ),
            percent("load1", Builtin::LoadAverage),
            percent("uptime", Builtin::UptimeSecs),
            percent("procs", Builtin::ProcessCount),
        ],
        ..Settings::default()
    };
    let collectors = Collectors::new(settings).unwrap();
    collectors.sample(); // CPU usage needs two readings
    let (sample, errors) = collectors.sample();
    assert!(errors.is_empty(), "{errors:?}");
    let value = |name: &str| {
        sample
            .custom
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    let number = |name: &str| match value(name) {
        CustomValue::Number(v) => v,
        other => panic!("{name}: {other:?}"),
    };
    for name in ["cpu", "mem", "disk"] {
        let v = number(name);
        assert!((0.0..=100.0).contains(&v), "{name} = {v}");
    }
    match value("load") {
        CustomValue::NumberList(l) => {
            assert_eq!(l.len(), 3);
            assert!(l.iter().all(|v| *v >= 0.0));
            assert_eq!(l[0], number("load1"));
        }
        other => panic!("{other:?}"),
    }
    assert!(number("uptime") > 0.0);
    assert!(number("procs") >= 1.0);
}

#[test]
fn builtins_that_cannot_measure_say_why() {
    let cause = single_error(custom(
        "t",
        CustomMetricType::Number,
        CustomSource::Builtin(Builtin::Temperature {
            sensor: "no-such-sensor-on-any-board".into(),
        }),
    ));
    assert!(
        matches!(
            cause,
            CustomError::Builtin {
                builtin: "temperature",
                ..
            }
        ),
        "{cause}"
    );
    let cause = single_error(custom(
        "d",
        CustomMetricType::Number,
        CustomSource::Builtin(Builtin::DiskUsedPercent {
            mount: PathBuf::from("/no/such/mount"),
        }),
    ));
    assert!(
        matches!(
            cause,
            CustomError::Builtin {
                builtin: "disk_used_percent",
                ..
            }
        ),
        "{cause}"
    );
}

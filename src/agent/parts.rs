//! Builds each module's `Settings` from the validated [`Config`]: the one place that knows both.

use crate::collect;
use crate::config::{self, Config};
use crate::mqtt;
use crate::report;
use crate::spool;
use crate::tap;

/// `[collect]` + `[[custom_metrics]]` → collector settings.
pub fn collect_settings(c: &Config) -> collect::Settings {
    collect::Settings {
        paths: collect::HostPaths {
            proc_root: c.collect.procfs_root.clone(),
            sys_root: c.collect.sysfs_root.clone(),
        },
        interfaces_include: c.collect.interfaces_include.clone(),
        interfaces_exclude: c.collect.interfaces_exclude.clone(),
        socket_source: match c.collect.sockets {
            config::Sockets::Auto => collect::SocketSource::Auto,
            config::Sockets::Netlink => collect::SocketSource::Netlink,
            config::Sockets::Procfs => collect::SocketSource::Procfs,
        },
        custom: c
            .custom_metrics
            .iter()
            .map(|m| collect::CustomMetricSettings {
                name: m.name.clone(),
                metric_type: m.metric_type,
                source: custom_source(&m.source),
            })
            .collect(),
    }
}

fn custom_source(s: &config::CustomSource) -> collect::CustomSource {
    use config::Builtin as B;
    match s {
        config::CustomSource::Builtin(b) => collect::CustomSource::Builtin(match b {
            B::CpuUsagePercent => collect::Builtin::CpuUsagePercent,
            B::MemoryUsedPercent => collect::Builtin::MemoryUsedPercent,
            B::DiskUsedPercent { mount } => collect::Builtin::DiskUsedPercent {
                mount: mount.clone(),
            },
            B::LoadAverage => collect::Builtin::LoadAverage,
            B::UptimeSecs => collect::Builtin::UptimeSecs,
            B::ProcessCount => collect::Builtin::ProcessCount,
            B::TemperatureCelsius { sensor } => collect::Builtin::Temperature {
                sensor: sensor.clone(),
            },
        }),
        config::CustomSource::Command { argv, timeout } => collect::CustomSource::Command {
            argv: argv.clone(),
            timeout: *timeout,
        },
        config::CustomSource::File { path } => collect::CustomSource::File { path: path.clone() },
    }
}

/// The configured report format.
pub fn format(f: config::ReportFormat) -> report::Format {
    match f {
        config::ReportFormat::Json => report::Format::Json,
        config::ReportFormat::Cbor => report::Format::Cbor,
    }
}

/// The configured key set.
pub fn keys(k: config::ReportKeys) -> report::KeySet {
    match k {
        config::ReportKeys::Long => report::KeySet::Long,
        config::ReportKeys::Short => report::KeySet::Short,
    }
}

/// `[report]` → report builder settings.
pub fn report_settings(c: &Config) -> report::Settings {
    report::Settings {
        format: format(c.report.format),
        keys: keys(c.report.keys),
        max_list_len: c.report.max_list_len,
    }
}

/// `[spool]` + `state_dir` → spool settings.
pub fn spool_settings(c: &Config) -> spool::Settings {
    spool::Settings {
        dir: c.state_dir.clone(),
        max_reports: c.spool.max_reports,
        max_bytes: c.spool.max_bytes,
        backlog: match c.spool.backlog {
            config::Backlog::Latest => spool::Backlog::Latest,
            config::Backlog::All => spool::Backlog::All,
        },
    }
}

/// `[mqtt]` → link settings (`None` without an `[mqtt]` table).
pub fn mqtt_settings(c: &Config) -> Option<mqtt::Settings> {
    let m = c.mqtt.as_ref()?;
    Some(mqtt::Settings {
        endpoint: m.endpoint.clone(),
        port: m.port,
        tls: m.tls,
        ca_file: m.ca_file.clone(),
        cert_file: m.cert_file.clone(),
        key_file: m.key_file.clone(),
        alpn: m.alpn.clone(),
        client_id: m.client_id.clone(),
        thing_name: c.thing_name.clone(),
        format: match c.report.format {
            config::ReportFormat::Json => mqtt::ReportFormat::Json,
            config::ReportFormat::Cbor => mqtt::ReportFormat::Cbor,
        },
        keep_alive: m.keep_alive,
        clean_session: m.clean_session,
        reconnect_min: m.reconnect_min,
        reconnect_max: m.reconnect_max,
        subscriptions: c
            .detect
            .as_ref()
            .and_then(|d| d.push.as_ref())
            .map(|p| vec![p.topic.clone()])
            .unwrap_or_default(),
    })
}

/// The spool's opaque format tag for a report format.
pub fn format_tag(f: report::Format) -> u8 {
    match f {
        report::Format::Json => 0,
        report::Format::Cbor => 1,
    }
}

/// `[tap]` → tap settings (`None` without an enabled `[tap]` table).
pub fn tap_settings(c: &Config) -> Option<tap::Settings> {
    let t = c.tap.as_ref()?;
    Some(tap::Settings {
        host: t.host.clone(),
        port: t.port,
        tls: t.tls,
        ca_file: t.ca_file.clone(),
        cert_file: t.cert_file.clone(),
        key_file: t.key_file.clone(),
        client_id: t.client_id.clone(),
        outbound: t.outbound.clone(),
        inbound: t.inbound.clone(),
        reconnect_min: tap::DEFAULT_RECONNECT_MIN,
        reconnect_max: tap::DEFAULT_RECONNECT_MAX,
    })
}

//! `[collect]` → [`collect::Settings`], `[[custom_metrics]]` → its `custom` list.

use std::path::PathBuf;

use serde_spanned::Spanned;

use super::{file, Validator};
use crate::collect::{self, Builtin, CustomMetricSettings, CustomSource, SocketSource};
use crate::custom_metric::{check_custom_metric_name, CustomMetricType};

impl Validator<'_> {
    /// `[collect]`; the custom metrics are [`Validator::custom_metrics`]'s.
    pub(super) fn collect(&mut self, c: &file::Collect) -> collect::Settings {
        collect::Settings {
            paths: collect::HostPaths {
                proc_root: self.path("collect.procfs_root", &c.procfs_root, "/proc"),
                sys_root: self.path("collect.sysfs_root", &c.sysfs_root, "/sys"),
            },
            sample_interval: self.secs(
                "collect.sample_interval_secs",
                &c.sample_interval_secs,
                60,
                1,
                86_400,
            ),
            interfaces_include: self.globs(
                "collect.interfaces_include",
                &c.interfaces_include,
                &[],
            ),
            interfaces_exclude: self.globs(
                "collect.interfaces_exclude",
                &c.interfaces_exclude,
                &["lo"],
            ),
            socket_source: self.choice(
                "collect.sockets",
                &c.sockets,
                SocketSource::Auto,
                &[
                    ("auto", SocketSource::Auto),
                    ("netlink", SocketSource::Netlink),
                    ("procfs", SocketSource::Procfs),
                ],
            ),
            custom: Vec::new(),
        }
    }

    /// `[[custom_metrics]]`, in file order, names unique.
    pub(super) fn custom_metrics(
        &mut self,
        list: &[Spanned<file::CustomMetric>],
    ) -> Vec<CustomMetricSettings> {
        let mut custom_metrics = Vec::new();
        for (i, m) in list.iter().enumerate() {
            if let Some(c) = self.custom_metric(i, m) {
                if custom_metrics
                    .iter()
                    .any(|o: &CustomMetricSettings| o.name == c.name)
                {
                    self.error(
                        &format!("custom_metrics[{i}].name"),
                        &m.get_ref().name,
                        format!("duplicate custom metric name \"{}\"", c.name),
                    );
                }
                custom_metrics.push(c);
            }
        }
        custom_metrics
    }

    fn custom_metric(
        &mut self,
        i: usize,
        m: &Spanned<file::CustomMetric>,
    ) -> Option<CustomMetricSettings> {
        let key = format!("custom_metrics[{i}]");
        let c = m.get_ref();
        let mut ok = true;
        if let Err(e) = check_custom_metric_name(c.name.get_ref()) {
            self.error(&format!("{key}.name"), &c.name, e.to_string());
            ok = false;
        }
        let metric_type = match c.metric_type.get_ref().as_str() {
            "number" => Some(CustomMetricType::Number),
            "number-list" => Some(CustomMetricType::NumberList),
            "string-list" => Some(CustomMetricType::StringList),
            "ip-address-list" => Some(CustomMetricType::IpAddressList),
            other => {
                self.error(
                    &format!("{key}.type"),
                    &c.metric_type,
                    format!("must be one of \"number\", \"number-list\", \"string-list\", \"ip-address-list\", got \"{other}\""),
                );
                None
            }
        };
        let sources = [c.builtin.is_some(), c.command.is_some(), c.file.is_some()];
        if sources.iter().filter(|s| **s).count() != 1 {
            self.error(
                &key,
                m,
                "needs exactly one source: `builtin`, `command` or `file`",
            );
            return None;
        }
        let source = if let Some(b) = &c.builtin {
            self.builtin(&key, c, b, metric_type)?
        } else if let Some(argv) = &c.command {
            // Invariant: `||` reads [0] only when the list is non-empty.
            if argv.get_ref().is_empty() || argv.get_ref()[0].is_empty() {
                self.error(
                    &format!("{key}.command"),
                    argv,
                    "must name a program: [\"/path/to/program\", \"arg\", ...]",
                );
                ok = false;
            }
            CustomSource::Command {
                argv: argv.get_ref().clone(),
                timeout: self.secs(&format!("{key}.timeout_secs"), &c.timeout_secs, 5, 1, 300),
            }
        } else if let Some(path) = &c.file {
            CustomSource::File {
                path: self.path(&format!("{key}.file"), &Some(path.clone()), ""),
            }
        } else {
            return None;
        };
        if c.timeout_secs.is_some() && !matches!(source, CustomSource::Command { .. }) {
            if let Some(t) = &c.timeout_secs {
                self.error(
                    &format!("{key}.timeout_secs"),
                    t,
                    "only applies to `command` sources",
                );
            }
        }
        if let (Some(mount), false) = (
            &c.mount,
            matches!(
                source,
                CustomSource::Builtin(Builtin::DiskUsedPercent { .. })
            ),
        ) {
            self.error(
                &format!("{key}.mount"),
                mount,
                "only applies to builtin = \"disk_used_percent\"",
            );
        }
        if let (Some(sensor), false) = (
            &c.sensor,
            matches!(source, CustomSource::Builtin(Builtin::Temperature { .. })),
        ) {
            self.error(
                &format!("{key}.sensor"),
                sensor,
                "only applies to builtin = \"temperature_celsius\"",
            );
        }
        if !ok {
            return None;
        }
        Some(CustomMetricSettings {
            name: c.name.get_ref().clone(),
            metric_type: metric_type?,
            source,
        })
    }

    fn builtin(
        &mut self,
        key: &str,
        c: &file::CustomMetric,
        b: &Spanned<String>,
        ty: Option<CustomMetricType>,
    ) -> Option<CustomSource> {
        let builtin = match b.get_ref().as_str() {
            "cpu_usage_percent" => Builtin::CpuUsagePercent,
            "memory_used_percent" => Builtin::MemoryUsedPercent,
            "disk_used_percent" => Builtin::DiskUsedPercent {
                mount: c
                    .mount
                    .as_ref()
                    .map_or_else(|| PathBuf::from("/"), |m| PathBuf::from(m.get_ref())),
            },
            "load_average" => Builtin::LoadAverage,
            "uptime_secs" => Builtin::UptimeSecs,
            "process_count" => Builtin::ProcessCount,
            "temperature_celsius" => Builtin::Temperature {
                sensor: c
                    .sensor
                    .as_ref()
                    .map_or_else(String::new, |s| s.get_ref().clone()),
            },
            other => {
                self.error(
                    &format!("{key}.builtin"),
                    b,
                    format!(
                        "unknown built-in \"{other}\"; one of \"cpu_usage_percent\", \"memory_used_percent\", \"disk_used_percent\", \"load_average\", \"uptime_secs\", \"process_count\", \"temperature_celsius\""
                    ),
                );
                return None;
            }
        };
        let allowed: &[CustomMetricType] = match builtin {
            Builtin::LoadAverage => &[CustomMetricType::Number, CustomMetricType::NumberList],
            _ => &[CustomMetricType::Number],
        };
        if let Some(ty) = ty {
            if !allowed.contains(&ty) {
                self.error(
                    &format!("{key}.type"),
                    &c.metric_type,
                    format!(
                        "built-in \"{}\" gives a {}, not a {ty}",
                        b.get_ref(),
                        allowed
                            .iter()
                            .map(|t| t.as_str())
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ),
                );
                return None;
            }
        }
        Some(CustomSource::Builtin(builtin))
    }

    fn globs(
        &mut self,
        key: &str,
        v: &Option<Vec<Spanned<String>>>,
        default: &[&str],
    ) -> Vec<String> {
        let Some(list) = v else {
            return default.iter().map(|s| s.to_string()).collect();
        };
        let mut out = Vec::new();
        for (i, g) in list.iter().enumerate() {
            let text = g.get_ref();
            if text.is_empty() || text.contains('/') || text.len() > 64 {
                self.error(
                    &format!("{key}[{i}]"),
                    g,
                    "must be an interface name glob (1-64 characters, no '/'), e.g. \"eth*\"",
                );
            } else {
                out.push(text.clone());
            }
        }
        out
    }
}

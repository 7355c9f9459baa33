//! `[detect]` (and `[detect.push]`) → [`detect::Settings`].

use std::path::PathBuf;
use std::time::Duration;

use serde_spanned::Spanned;

use super::{file, Validator};
use crate::detect::{self, MlMode, Mode, PushSettings, StatMode};

impl Validator<'_> {
    /// `[detect]` (`None` when absent or disabled).
    pub(super) fn detect(&mut self, d: &Spanned<file::Detect>) -> Option<detect::Settings> {
        let df = d.get_ref();
        if !df.enabled.as_ref().is_none_or(|e| *e.get_ref()) {
            return None;
        }
        let retention_days = match &df.retention_days {
            None => 14,
            Some(v) if (1..=365).contains(v.get_ref()) => *v.get_ref(),
            Some(v) => {
                self.error(
                    "detect.retention_days",
                    v,
                    format!("must be between 1 and 365, got {}", v.get_ref()),
                );
                14
            }
        };
        let max_events = match &df.max_events {
            None => 10_000,
            Some(v) if (100..=1_000_000).contains(v.get_ref()) => *v.get_ref() as usize,
            Some(v) => {
                self.error(
                    "detect.max_events",
                    v,
                    format!("must be between 100 and 1000000, got {}", v.get_ref()),
                );
                10_000
            }
        };
        let source_ip = match &df.source_ip {
            None => None,
            Some(v) => match v.get_ref().parse::<std::net::IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    self.error(
                        "detect.source_ip",
                        v,
                        format!("must be an IPv4 or IPv6 address, got {:?}", v.get_ref()),
                    );
                    None
                }
            },
        };
        let region = df.region.as_ref().and_then(|r| {
            let ok = !r.get_ref().is_empty()
                && r.get_ref().len() <= 32
                && r.get_ref()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                self.error(
                    "detect.region",
                    r,
                    format!(
                        "must be a region name like \"eu-west-1\", got {:?}",
                        r.get_ref()
                    ),
                );
            }
            ok.then(|| r.get_ref().clone())
        });
        let account_id = df.account_id.as_ref().and_then(|a| {
            let ok = a.get_ref().len() == 12 && a.get_ref().bytes().all(|b| b.is_ascii_digit());
            if !ok {
                self.error(
                    "detect.account_id",
                    a,
                    format!("must be 12 digits, got {:?}", a.get_ref()),
                );
            }
            ok.then(|| a.get_ref().clone())
        });
        let push = df.push.as_ref().and_then(|p| self.detect_push(p));
        Some(detect::Settings {
            profiles: self.paths("detect.profiles", &df.profiles),
            dimensions: self.paths("detect.dimensions", &df.dimensions),
            custom_metrics: self.paths("detect.custom_metrics", &df.custom_metrics),
            mode: self.choice(
                "detect.mode",
                &df.mode,
                Mode::Load,
                &[("load", Mode::Load), ("strict", Mode::Strict)],
            ),
            statistical: self.choice(
                "detect.statistical",
                &df.statistical,
                StatMode::Off,
                &[
                    ("off", StatMode::Off),
                    ("local-history", StatMode::LocalHistory),
                ],
            ),
            ml: self.choice(
                "detect.ml",
                &df.ml,
                MlMode::Off,
                &[
                    ("off", MlMode::Off),
                    ("local-baseline", MlMode::LocalBaseline),
                ],
            ),
            retention: Duration::from_secs(retention_days * 86_400),
            max_events,
            source_ip,
            disconnect_duration: df
                .disconnect_duration
                .as_ref()
                .is_some_and(|v| *v.get_ref()),
            region,
            account_id,
            push,
        })
    }

    /// `[detect.push]` (`None` when disabled or invalid).
    fn detect_push(&mut self, p: &Spanned<file::DetectPush>) -> Option<PushSettings> {
        let x = p.get_ref();
        if !x.enabled.as_ref().is_none_or(|e| *e.get_ref()) {
            return None;
        }
        let mut topic =
            |key: &str, t: &Spanned<String>| match crate::topic_filter::validate_topic(t.get_ref())
            {
                Ok(()) if !t.get_ref().is_empty() => Some(t.get_ref().clone()),
                Ok(()) => {
                    self.error(key, t, "must not be empty");
                    None
                }
                Err(e) => {
                    self.error(key, t, e.to_string());
                    None
                }
            };
        let push_topic = topic("detect.push.topic", &x.topic);
        let response_topic = topic("detect.push.response_topic", &x.response_topic);
        let max = crate::mqtt::MAX_PAYLOAD_BYTES as u64;
        let max_bytes = match &x.max_bytes {
            None => detect::settings::DEFAULT_PUSH_MAX_BYTES,
            Some(v) if (1..=max).contains(v.get_ref()) => *v.get_ref() as usize,
            Some(v) => {
                self.error(
                    "detect.push.max_bytes",
                    v,
                    format!(
                        "must be between 1 and {max} (the largest MQTT payload AWS IoT carries), got {}",
                        v.get_ref()
                    ),
                );
                detect::settings::DEFAULT_PUSH_MAX_BYTES
            }
        };
        let (topic, response_topic) = (push_topic?, response_topic?);
        if topic == response_topic {
            // The agent would read its own answers as pushes.
            self.error(
                "detect.push.response_topic",
                &x.response_topic,
                "must differ from detect.push.topic",
            );
            return None;
        }
        Some(PushSettings {
            topic,
            response_topic,
            max_bytes,
        })
    }

    fn paths(&mut self, key: &str, v: &Option<Vec<Spanned<String>>>) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for (i, p) in v.iter().flatten().enumerate() {
            if p.get_ref().is_empty() {
                self.error(&format!("{key}[{i}]"), p, "must not be empty");
            } else {
                out.push(PathBuf::from(p.get_ref()));
            }
        }
        out
    }
}

//! [`Settings`]: how the local Detect engine is set up (the `[detect]` config section, validated),
//! plain data from which the daemon builds its engine ([`Settings::engine_settings`]).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::engine::{EngineSettings, MlMode, StatMode};
use super::validate::Mode;

/// Default `[detect] retention_days`, as a duration.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(14 * 86_400);

/// Default `[detect] max_events`.
pub const DEFAULT_MAX_EVENTS: usize = 10_000;

/// Default `[detect.push] max_bytes`.
pub const DEFAULT_PUSH_MAX_BYTES: usize = 64 * 1024;

/// The local Detect engine: where profiles come from, how they are checked and evaluated, how
/// long events are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Profile files or directories.
    pub profiles: Vec<PathBuf>,
    /// Dimension files or directories.
    pub dimensions: Vec<PathBuf>,
    /// Custom metric definition files or directories.
    pub custom_metrics: Vec<PathBuf>,
    /// How strictly profiles are checked when loaded (LOAD or STRICT).
    pub mode: Mode,
    /// Statistical thresholds: [`StatMode::Off`] or [`StatMode::LocalHistory`] (from this
    /// device's own history).
    pub statistical: StatMode,
    /// ML behaviors: [`MlMode::Off`] or [`MlMode::LocalBaseline`] (a local robust baseline).
    pub ml: MlMode,
    /// How long violation events are kept.
    pub retention: Duration,
    /// Bound on stored violation events.
    pub max_events: usize,
    /// The device's public (post-NAT) address, the value of `aws:source-ip-address` at each
    /// successful connection; without it such behaviors are not evaluable.
    pub source_ip: Option<IpAddr>,
    /// Evaluate `aws:disconnect-duration` with the unverified reconstruction (detect.md §2.3).
    pub disconnect_duration: bool,
    /// Region in the ARNs of managed profiles and dimensions (None: `DEFENDER_AGENT_REGION`,
    /// else `local`).
    pub region: Option<String>,
    /// Account in those ARNs (None: `DEFENDER_AGENT_ACCOUNT`, else `000000000000`).
    pub account_id: Option<String>,
    /// `[detect.push]`, when present and enabled.
    pub push: Option<PushSettings>,
}

/// `[detect.push]`: security profiles and dimensions pushed over the agent's MQTT link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushSettings {
    /// Subscribed topic (a retained message there reaches every device when it connects).
    pub topic: String,
    /// Where the outcome of each message is published (QoS 1).
    pub response_topic: String,
    /// Larger messages are refused unread.
    pub max_bytes: usize,
}

impl Settings {
    /// Defaults (LOAD mode, statistics and ML off, 14 days, 10,000 events) over the given files.
    pub fn new(profiles: Vec<PathBuf>, dimensions: Vec<PathBuf>) -> Settings {
        Settings {
            profiles,
            dimensions,
            custom_metrics: Vec::new(),
            mode: Mode::Load,
            statistical: StatMode::Off,
            ml: MlMode::Off,
            retention: DEFAULT_RETENTION,
            max_events: DEFAULT_MAX_EVENTS,
            source_ip: None,
            disconnect_duration: false,
            region: None,
            account_id: None,
            push: None,
        }
    }

    /// The engine settings for `thing_name`: the engine's defaults with this section's modes,
    /// source IP and feature flag.
    pub fn engine_settings(&self, thing_name: &str) -> EngineSettings {
        let mut s = EngineSettings::new(thing_name);
        s.statistical = self.statistical;
        s.ml = self.ml;
        s.source_ip = self.source_ip;
        s.disconnect_duration = self.disconnect_duration;
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_settings_take_the_modes_source_ip_and_flag() {
        let mut d = Settings::new(vec!["/p".into()], Vec::new());
        d.statistical = StatMode::LocalHistory;
        d.ml = MlMode::LocalBaseline;
        d.source_ip = Some("192.0.2.1".parse().unwrap());
        d.disconnect_duration = true;
        let e = d.engine_settings("t");
        let mut want = EngineSettings::new("t");
        want.statistical = StatMode::LocalHistory;
        want.ml = MlMode::LocalBaseline;
        want.source_ip = d.source_ip;
        want.disconnect_duration = true;
        assert_eq!(e, want);
    }
}

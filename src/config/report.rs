//! `[report]` → [`report::Settings`].

use super::{file, Severity, Validator, AWS_MIN_REPORT_INTERVAL_SECS};
use crate::report::{self, Format, KeySet};

impl Validator<'_> {
    /// `[report]`.
    pub(super) fn report(&mut self, r: &file::Report) -> report::Settings {
        let interval = self.secs("report.interval_secs", &r.interval_secs, 300, 1, 86_400);
        if let Some(s) = &r.interval_secs {
            if *s.get_ref() >= 1 && *s.get_ref() < AWS_MIN_REPORT_INTERVAL_SECS {
                self.push(
                    Severity::Warning,
                    "report.interval_secs",
                    s,
                    format!(
                        "{} s is below {AWS_MIN_REPORT_INTERVAL_SECS} s: AWS IoT Device Defender throttles reports to one per 5 minutes per device, so reports may be discarded",
                        s.get_ref()
                    ),
                );
            }
        }
        let max_list_len = match &r.max_list_len {
            None => 100,
            Some(s) if (1..=10_000).contains(s.get_ref()) => *s.get_ref() as usize,
            Some(s) => {
                self.error(
                    "report.max_list_len",
                    s,
                    format!("must be between 1 and 10000, got {}", s.get_ref()),
                );
                100
            }
        };
        report::Settings {
            interval,
            format: self.choice(
                "report.format",
                &r.format,
                Format::Json,
                &[("json", Format::Json), ("cbor", Format::Cbor)],
            ),
            keys: self.choice(
                "report.keys",
                &r.keys,
                KeySet::Long,
                &[("long", KeySet::Long), ("short", KeySet::Short)],
            ),
            max_list_len,
            startup_jitter: self.secs(
                "report.startup_jitter_secs",
                &r.startup_jitter_secs,
                30,
                0,
                3_600,
            ),
        }
    }
}

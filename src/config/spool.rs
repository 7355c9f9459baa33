//! `[spool]` (with `state_dir`) → [`spool::Settings`].

use std::path::Path;

use super::{file, Validator};
use crate::spool::{self, Backlog};

impl Validator<'_> {
    /// `[spool]`; the spool lives in `state_dir`.
    pub(super) fn spool(&mut self, s: &file::Spool, state_dir: &Path) -> spool::Settings {
        let max_reports = match &s.max_reports {
            None => 1000,
            Some(v) if (1..=1_000_000).contains(v.get_ref()) => *v.get_ref() as usize,
            Some(v) => {
                self.error(
                    "spool.max_reports",
                    v,
                    format!("must be between 1 and 1000000, got {}", v.get_ref()),
                );
                1000
            }
        };
        let max_bytes = match &s.max_bytes {
            None => 1_048_576,
            // At least one maximum-size MQTT payload (128 KiB) must fit.
            Some(v) if (131_072..=1 << 34).contains(v.get_ref()) => *v.get_ref(),
            Some(v) => {
                self.error(
                    "spool.max_bytes",
                    v,
                    format!(
                        "must be between 131072 (one 128 KiB report) and 17179869184, got {}",
                        v.get_ref()
                    ),
                );
                1_048_576
            }
        };
        spool::Settings {
            dir: state_dir.to_owned(),
            max_reports,
            max_bytes,
            backlog: self.choice(
                "spool.backlog",
                &s.backlog,
                Backlog::Latest,
                &[("latest", Backlog::Latest), ("all", Backlog::All)],
            ),
            drain_interval: self.secs(
                "spool.drain_interval_secs",
                &s.drain_interval_secs,
                spool::DEFAULT_DRAIN_INTERVAL.as_secs(),
                0,
                3600,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::{Config, Error};

    fn drain(text: &str) -> Result<Duration, Vec<String>> {
        let src = format!("thing_name = \"t\"\n[spool]\n{text}");
        match Config::parse(&src, "test") {
            Ok(c) => Ok(c.spool.drain_interval),
            Err(Error::Invalid { problems, .. }) => {
                Err(problems.into_iter().map(|p| p.key).collect())
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn drain_interval_secs_defaults_to_one_second_and_is_bounded() {
        assert_eq!(drain(""), Ok(Duration::from_secs(1)));
        assert_eq!(drain("drain_interval_secs = 0\n"), Ok(Duration::ZERO));
        assert_eq!(
            drain("drain_interval_secs = 3600\n"),
            Ok(Duration::from_secs(3600))
        );
        assert_eq!(
            drain("drain_interval_secs = 3601\n"),
            Err(vec!["spool.drain_interval_secs".to_owned()])
        );
    }
}

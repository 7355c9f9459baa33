//! `defender-agent report`: sample this machine twice, one interval apart, and build one report.

use std::time::{Duration, SystemTime};

use tracing::warn;

use super::{epoch_secs, Error};
use crate::collect::{Collectors, Sampler};
use crate::config::Config;
use crate::report::{self, EncodedReport, ReportBuilder};
use crate::store::ReportIdFile;

/// What `report` should produce.
#[derive(Debug, Clone)]
pub struct Options {
    /// Override of `report.format`.
    pub format: Option<report::Format>,
    /// Override of `report.keys`.
    pub keys: Option<report::KeySet>,
    /// Time between the two samples (the deltas cover it).
    pub interval: Duration,
    /// Persist the report id in the state directory (with `--config`).
    pub persist_id: bool,
}

/// Samples twice and builds one report; also returns the collectors' errors (logged by the
/// caller) so that a failing block is explained.
pub fn report_once(config: &Config, opts: &Options) -> Result<(EncodedReport, Vec<String>), Error> {
    let collectors = Collectors::new(config.collect.clone())?;
    let mut settings = config.report.clone();
    if let Some(f) = opts.format {
        settings.format = f;
    }
    if let Some(k) = opts.keys {
        settings.keys = k;
    }
    let mut builder = ReportBuilder::new(&settings);
    let (first, _) = collectors.sample();
    builder.observe(&first);
    // The first report after start has no network_stats: build (and discard) it on the baseline
    // so the second one carries the deltas over `interval`.
    let _ = builder.build(0);
    std::thread::sleep(opts.interval);
    let (second, errors) = collectors.sample();
    builder.observe(&second);

    let id_file = ReportIdFile::new(&config.state_dir);
    let last = if opts.persist_id {
        id_file.load().unwrap_or_else(|e| {
            warn!(error = %e, "Cannot read the last report id; continuing from the clock.");
            None
        })
    } else {
        None
    };
    let id = report::next_report_id(epoch_secs(SystemTime::now()), last);
    if opts.persist_id {
        if let Err(e) = id_file.save(id) {
            warn!(error = %e, "Cannot persist the report id (ids still increase with the clock).");
        }
    }
    let built = builder.build(id);
    let mut notes: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    for (name, why) in &built.dropped {
        notes.push(format!("custom metric {name} left out: {why}"));
    }
    Ok((
        EncodedReport::new(&built.report, settings.format, settings.keys),
        notes,
    ))
}

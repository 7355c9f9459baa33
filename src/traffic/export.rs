//! `[[traffic_exports]]`: which traffic counts are reported as `number` custom metrics (plain data;
//! the agent reads them out of [`super::TrafficCounters::export`]).

/// One traffic count exported as a `number` custom metric (spec: metrics-report.md D.16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// The custom metric's name in the report.
    pub name: String,
    /// The AWS metric counted (`aws:num-messages-sent`, …).
    pub metric: String,
    /// The dimension scoping the count; `None` = all traffic.
    pub dimension: Option<String>,
    /// NOT_IN instead of IN.
    pub not_in: bool,
}

//! `[[traffic_exports]]` → [`traffic::Export`]s.

use serde_spanned::Spanned;

use super::{file, Validator};
use crate::custom_metric::check_custom_metric_name;
use crate::traffic;

impl Validator<'_> {
    /// `[[traffic_exports]]`, in file order.
    pub(super) fn traffic_exports(
        &mut self,
        list: &[Spanned<file::TrafficExport>],
    ) -> Vec<traffic::Export> {
        list.iter()
            .enumerate()
            .filter_map(|(i, e)| self.traffic_export(i, e))
            .collect()
    }

    fn traffic_export(
        &mut self,
        i: usize,
        e: &Spanned<file::TrafficExport>,
    ) -> Option<traffic::Export> {
        let key = format!("traffic_exports[{i}]");
        let x = e.get_ref();
        if let Err(err) = check_custom_metric_name(x.name.get_ref()) {
            self.error(&format!("{key}.name"), &x.name, err.to_string());
            return None;
        }
        const METRICS: [&str; 6] = [
            "aws:num-messages-sent",
            "aws:num-messages-received",
            "aws:num-authorization-failures",
            "aws:num-connection-attempts",
            "aws:num-disconnects",
            "aws:message-byte-size",
        ];
        if !METRICS.contains(&x.metric.get_ref().as_str()) {
            self.error(
                &format!("{key}.metric"),
                &x.metric,
                format!("must be one of {}", METRICS.join(", ")),
            );
            return None;
        }
        let not_in = match x.operator.as_ref().map(|o| o.get_ref().as_str()) {
            None | Some("IN") => false,
            Some("NOT_IN") => true,
            Some(other) => {
                if let Some(o) = &x.operator {
                    self.error(
                        &format!("{key}.operator"),
                        o,
                        format!("must be \"IN\" or \"NOT_IN\", got \"{other}\""),
                    );
                }
                false
            }
        };
        Some(traffic::Export {
            name: x.name.get_ref().clone(),
            metric: x.metric.get_ref().clone(),
            dimension: x.dimension.as_ref().map(|d| d.get_ref().clone()),
            not_in,
        })
    }
}

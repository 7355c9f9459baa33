//! JSON encoding of a report: compact serde_json over the shared view.

use super::view::ReportView;

/// Writes `view` as compact JSON.
pub(crate) fn encode(view: &ReportView<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(view.size_hint());
    // Invariant: writing into a Vec cannot fail, and the view only emits text keys, strings,
    // integers and floats; serde_json errors only on I/O or non-string map keys.
    #[allow(clippy::expect_used)]
    serde_json::to_writer(&mut out, view)
        .expect("Invariant: a report view always serialises to JSON");
    out
}

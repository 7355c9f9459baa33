//! Decoding a report (JSON or CBOR, long or short keys) back into a [`MetricsReport`].

use super::read;
use super::tree::{self, SyntaxError};
use super::validate::Problem;
use super::{Format, MetricsReport};

/// Why bytes are not a report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not a single well-formed JSON or CBOR value.
    #[error("{0}")]
    Syntax(String),
    /// Well-formed, but breaks the report rules; every error-severity problem is listed.
    #[error("invalid metrics report: {}", summary(.0))]
    Invalid(Vec<Problem>),
}

impl From<SyntaxError> for DecodeError {
    fn from(e: SyntaxError) -> Self {
        DecodeError::Syntax(e.to_string())
    }
}

fn summary(problems: &[Problem]) -> String {
    let mut s = problems
        .iter()
        .take(3)
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect::<Vec<_>>()
        .join("; ");
    if problems.len() > 3 {
        s.push_str(&format!("; and {} more", problems.len() - 3));
    }
    s
}

/// Decodes a report in either key set (not mixed). Fails on any error-severity problem (see
/// [`super::validate`]); warnings are tolerated, and custom metrics whose values AWS would drop
/// (value warnings) are left out, as the service leaves them out.
pub fn decode(bytes: &[u8], format: Format) -> Result<MetricsReport, DecodeError> {
    let node = tree::parse(bytes, format)?;
    let reading = read::read(&node, format);
    let errors: Vec<Problem> = reading
        .problems
        .into_iter()
        .filter(Problem::is_error)
        .collect();
    if errors.is_empty() {
        Ok(reading.report)
    } else {
        Err(DecodeError::Invalid(errors))
    }
}

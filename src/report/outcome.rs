//! Parses the answers AWS publishes on `.../accepted` and `.../rejected` (spec: A.3, D.13).
//!
//! Shape: `{thingName, reportId, status, statusDetails: {ErrorCode, ErrorMessage}, timestamp}`.
//! The documented accepted example carries a typo'd key (`"12334567"`) instead of `reportId`;
//! such a key is ignored like any unknown key. `ErrorCode` is an open string (only
//! `InvalidPayload` is documented). Answers on the CBOR topic are CBOR.

use super::tree::{self, Node};
use super::Format;

/// One answer to a published report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `thingName`, when present.
    pub thing_name: Option<String>,
    /// `reportId`: correlates the answer with the spooled report. A rejected answer without it
    /// means the header itself could not be read (see [`Outcome::is_malformed`]).
    pub report_id: Option<u64>,
    /// Accepted or rejected.
    pub status: Status,
    /// `timestamp`, milliseconds since the epoch.
    pub timestamp_ms: Option<u64>,
}

impl Outcome {
    /// A rejection without `reportId`: AWS could not read the report's header (spec: D.13).
    pub fn is_malformed(&self) -> bool {
        matches!(self.status, Status::Rejected { .. }) && self.report_id.is_none()
    }
}

/// `status` and, for rejections, `statusDetails`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// `"ACCEPTED"`.
    Accepted,
    /// `"REJECTED"`, with `ErrorCode` and `ErrorMessage` verbatim (empty when absent).
    Rejected {
        /// `statusDetails.ErrorCode`, e.g. `InvalidPayload`.
        code: String,
        /// `statusDetails.ErrorMessage`, e.g. `Malformed metrics report`.
        message: String,
    },
}

/// Why an answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutcomeError {
    /// Not well-formed JSON/CBOR.
    #[error("answer is not valid {format}: {detail}")]
    Syntax {
        /// Encoding expected from the topic.
        format: Format,
        /// Parser message.
        detail: String,
    },
    /// The top level is not an object.
    #[error("answer is not an object")]
    NotAnObject,
    /// No `status` field.
    #[error("answer has no status")]
    MissingStatus,
    /// `status` is neither `ACCEPTED` nor `REJECTED`.
    #[error("answer has unknown status {0:?}")]
    UnknownStatus(String),
    /// A known field with the wrong type.
    #[error("answer field {field} must be {expected}")]
    WrongType {
        /// Field name as in the answer.
        field: &'static str,
        /// What it should be.
        expected: &'static str,
    },
}

/// Parses one answer payload.
pub fn parse(bytes: &[u8], format: Format) -> Result<Outcome, OutcomeError> {
    let node = tree::parse(bytes, format).map_err(|e| OutcomeError::Syntax {
        format,
        detail: e.to_string(),
    })?;
    let Node::Map { entries, .. } = &node else {
        return Err(OutcomeError::NotAnObject);
    };
    let get = |name: &str| {
        entries
            .iter()
            .find(|(k, _)| matches!(k, Node::Text(t) if t == name))
            .map(|(_, v)| v)
    };
    let thing_name = optional_text(get("thingName"), "thingName")?;
    let report_id = optional_uint(get("reportId"), "reportId")?;
    let timestamp_ms = optional_uint(get("timestamp"), "timestamp")?;
    let status = match get("status") {
        None => return Err(OutcomeError::MissingStatus),
        Some(Node::Text(s)) if s == "ACCEPTED" => Status::Accepted,
        Some(Node::Text(s)) if s == "REJECTED" => {
            let (code, message) = details(get("statusDetails"))?;
            Status::Rejected { code, message }
        }
        Some(Node::Text(s)) => return Err(OutcomeError::UnknownStatus(s.to_string())),
        Some(_) => {
            return Err(OutcomeError::WrongType {
                field: "status",
                expected: "a string",
            })
        }
    };
    Ok(Outcome {
        thing_name,
        report_id,
        status,
        timestamp_ms,
    })
}

fn details(node: Option<&Node>) -> Result<(String, String), OutcomeError> {
    let Some(node) = node else {
        return Ok((String::new(), String::new()));
    };
    let Node::Map { entries, .. } = node else {
        return Err(OutcomeError::WrongType {
            field: "statusDetails",
            expected: "an object",
        });
    };
    let get = |name: &str| {
        entries
            .iter()
            .find(|(k, _)| matches!(k, Node::Text(t) if t == name))
            .map(|(_, v)| v)
    };
    let code = optional_text(get("ErrorCode"), "ErrorCode")?.unwrap_or_default();
    let message = optional_text(get("ErrorMessage"), "ErrorMessage")?.unwrap_or_default();
    Ok((code, message))
}

fn optional_text(node: Option<&Node>, field: &'static str) -> Result<Option<String>, OutcomeError> {
    match node {
        None | Some(Node::Null) => Ok(None),
        Some(Node::Text(s)) => Ok(Some(s.to_string())),
        Some(_) => Err(OutcomeError::WrongType {
            field,
            expected: "a string",
        }),
    }
}

fn optional_uint(node: Option<&Node>, field: &'static str) -> Result<Option<u64>, OutcomeError> {
    match node {
        None | Some(Node::Null) => Ok(None),
        Some(Node::UInt(v)) => Ok(Some(*v)),
        Some(_) => Err(OutcomeError::WrongType {
            field,
            expected: "a non-negative integer",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_accepted_answer_names_the_report() {
        let o = parse(
            br#"{"thingName":"myThing","reportId":1635800375,"status":"ACCEPTED","timestamp":1635801636023}"#,
            Format::Json,
        );
        assert_eq!(
            o,
            Ok(Outcome {
                thing_name: Some("myThing".into()),
                report_id: Some(1635800375),
                status: Status::Accepted,
                timestamp_ms: Some(1635801636023),
            })
        );
    }

    #[test]
    fn the_documented_accepted_example_with_its_typo_still_parses() {
        let o = parse(
            br#"{"thingName":"myThing","12334567":1635800375,"status":"ACCEPTED","timestamp":1635801636023}"#,
            Format::Json,
        );
        let o = o.ok();
        assert_eq!(o.as_ref().map(|o| &o.status), Some(&Status::Accepted));
        assert_eq!(o.and_then(|o| o.report_id), None);
    }

    #[test]
    fn a_rejected_answer_without_report_id_is_malformed() {
        let o = parse(
            br#"{"thingName":"myThing","status":"REJECTED","statusDetails":{"ErrorCode":"InvalidPayload","ErrorMessage":"Malformed metrics report"},"timestamp":1635802047699}"#,
            Format::Json,
        );
        let Ok(o) = o else { panic!("{o:?}") };
        assert_eq!(
            o.status,
            Status::Rejected {
                code: "InvalidPayload".into(),
                message: "Malformed metrics report".into()
            }
        );
        assert!(o.is_malformed());
    }

    #[test]
    fn a_rejected_answer_with_report_id_and_an_unknown_code_is_kept_verbatim() {
        let o = parse(
            br#"{"reportId":7,"status":"REJECTED","statusDetails":{"ErrorCode":"Throttled"}}"#,
            Format::Json,
        );
        let Ok(o) = o else { panic!("{o:?}") };
        assert!(!o.is_malformed());
        assert_eq!(
            o.status,
            Status::Rejected {
                code: "Throttled".into(),
                message: String::new()
            }
        );
    }

    #[test]
    fn cbor_answers_are_read_as_cbor() {
        // {"reportId": 5, "status": "ACCEPTED"}
        let bytes = [
            0xa2, 0x68, b'r', b'e', b'p', b'o', b'r', b't', b'I', b'd', 0x05, 0x66, b's', b't',
            b'a', b't', b'u', b's', 0x68, b'A', b'C', b'C', b'E', b'P', b'T', b'E', b'D',
        ];
        let o = parse(&bytes, Format::Cbor);
        assert_eq!(
            o.ok().map(|o| (o.report_id, o.status)),
            Some((Some(5), Status::Accepted))
        );
    }

    #[test]
    fn answers_without_a_known_status_are_errors() {
        assert_eq!(
            parse(br#"{"reportId":1}"#, Format::Json),
            Err(OutcomeError::MissingStatus)
        );
        assert_eq!(
            parse(br#"{"status":"MAYBE"}"#, Format::Json),
            Err(OutcomeError::UnknownStatus("MAYBE".into()))
        );
        assert_eq!(parse(b"[]", Format::Json), Err(OutcomeError::NotAnObject));
        assert!(matches!(
            parse(b"{", Format::Json),
            Err(OutcomeError::Syntax { .. })
        ));
        assert!(matches!(
            parse(br#"{"status":"ACCEPTED","reportId":"7"}"#, Format::Json),
            Err(OutcomeError::WrongType {
                field: "reportId",
                ..
            })
        ));
    }
}

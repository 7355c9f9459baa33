//! The metrics report: build from samples, encode as JSON or CBOR, validate, parse answers.

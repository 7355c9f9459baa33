//! Text from outside the agent (Device Defender's answers, topics, pushed documents, a broker's
//! words) as it may go into a log line: [`untrusted`] escapes the characters that would forge or
//! hide log content — control characters (`\n`, `\r`, ESC, DEL, C1), the line and paragraph
//! separators and the bidirectional overrides — so one value stays one stretch of one line and
//! reads as it is; and it cuts the value at a bound with a marker, so a hostile value cannot fill
//! the log. A backslash is left as it is, so text that is already escaped (a `{:?}` rendering, a
//! JSON document) reads the same.
//!
//! Pure vocabulary: no I/O, nothing logged here.

use std::fmt;

/// Most characters of one untrusted value written to a log line, escapes counted as printed
/// (an `ErrorCode`, a topic, a broker's error text); longer values are cut with [`CUT_MARKER`].
pub const MAX_LOGGED_CHARS: usize = 256;

/// Written after a cut value, followed by how many bytes of the original were left out.
pub const CUT_MARKER: &str = "…[cut, +";

/// `text` as it may be logged (`%untrusted(x)` in a tracing field): escaped, and cut after
/// [`MAX_LOGGED_CHARS`] printed characters (see [`Untrusted::max_chars`]).
pub fn untrusted(text: &str) -> Untrusted<'_> {
    Untrusted {
        text,
        max_chars: MAX_LOGGED_CHARS,
    }
}

/// An untrusted string, displayed escaped and bounded. Built by [`untrusted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Untrusted<'a> {
    text: &'a str,
    max_chars: usize,
}

impl<'a> Untrusted<'a> {
    /// The same text with another bound on the printed characters (before the marker).
    pub fn max_chars(self, max_chars: usize) -> Untrusted<'a> {
        Untrusted { max_chars, ..self }
    }
}

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut printed = 0;
        for (at, c) in self.text.char_indices() {
            let escaped = Escaped::of(c);
            if printed + escaped.len() > self.max_chars {
                return write!(f, "{CUT_MARKER}{} bytes]", self.text.len() - at);
            }
            printed += escaped.len();
            escaped.write(f)?;
        }
        Ok(())
    }
}

/// One character as printed.
enum Escaped {
    /// Printed as it is.
    Plain(char),
    /// A backslash and a letter (`\n`, `\r`, `\t`).
    Short(char),
    /// `\u{…}` with the code point in hex.
    Code(u32),
}

impl Escaped {
    fn of(c: char) -> Escaped {
        match c {
            '\n' => Escaped::Short('n'),
            '\r' => Escaped::Short('r'),
            '\t' => Escaped::Short('t'),
            c if c.is_control() || is_layout_override(c) => Escaped::Code(c as u32),
            c => Escaped::Plain(c),
        }
    }

    /// Printed characters.
    fn len(&self) -> usize {
        match self {
            Escaped::Plain(_) => 1,
            Escaped::Short(_) => 2,
            // `\u{` + hex digits + `}`.
            Escaped::Code(v) => 4 + (32 - v.leading_zeros().min(31)).div_ceil(4) as usize,
        }
    }

    fn write(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Escaped::Plain(c) => write!(f, "{c}"),
            Escaped::Short(c) => write!(f, "\\{c}"),
            Escaped::Code(v) => write!(f, "\\u{{{v:x}}}"),
        }
    }
}

/// Characters that move or reorder what follows on the screen: the line and paragraph
/// separators and the bidirectional marks, embeddings, overrides and isolates.
fn is_layout_override(c: char) -> bool {
    matches!(
        c,
        '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_text_is_logged_as_it_is() {
        assert_eq!(untrusted("InvalidPayload").to_string(), "InvalidPayload");
        assert_eq!(untrusted("héllo wörld").to_string(), "héllo wörld");
        assert_eq!(untrusted("").to_string(), "");
    }

    #[test]
    fn a_newline_cannot_forge_a_log_line() {
        let s = untrusted("x\nINFO Report accepted. id=424242 FORGED\r").to_string();
        assert_eq!(s, r"x\nINFO Report accepted. id=424242 FORGED\r");
        assert!(!s.contains('\n'));
    }

    #[test]
    fn control_and_bidirectional_override_characters_are_escaped() {
        assert_eq!(
            untrusted("a\u{1b}[31mb\u{7f}\u{85}\u{202e}c\u{2066}").to_string(),
            r"a\u{1b}[31mb\u{7f}\u{85}\u{202e}c\u{2066}"
        );
        // Already escaped text reads the same.
        assert_eq!(untrusted(r#"["a \"b\""]"#).to_string(), r#"["a \"b\""]"#);
        assert_eq!(untrusted("\0\t").to_string(), r"\u{0}\t");
    }

    #[test]
    fn a_long_value_is_cut_at_the_bound_with_a_marker() {
        let long = "x".repeat(100_000);
        let s = untrusted(&long).to_string();
        assert_eq!(
            s,
            format!(
                "{}{CUT_MARKER}{} bytes]",
                "x".repeat(MAX_LOGGED_CHARS),
                100_000 - MAX_LOGGED_CHARS
            )
        );
        assert_eq!(
            untrusted("abcdef").max_chars(3).to_string(),
            "abc…[cut, +3 bytes]"
        );
        // An escape is never split.
        assert_eq!(
            untrusted("ab\ncd").max_chars(3).to_string(),
            "ab…[cut, +3 bytes]"
        );
    }

    proptest! {
        #[test]
        fn untrusted_text_is_one_bounded_line_without_layout_characters(
            s in any::<String>(),
            max in 0usize..64,
        ) {
            let out = untrusted(&s).max_chars(max).to_string();
            prop_assert!(!out.chars().any(|c| c.is_control() || is_layout_override(c)), "{out:?}");
            let body = out.split(CUT_MARKER).next().unwrap_or_default();
            prop_assert!(body.chars().count() <= max, "{out:?}");
            if !out.contains(CUT_MARKER) {
                prop_assert!(s.len() <= out.len());
            }
        }
    }
}

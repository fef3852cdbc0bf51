//! Text from clients: free-text fields (names, notes) are bounded and free of control characters,
//! and error messages quote at most a short, sanitised prefix of what a client sent.
//!
//! An error that echoed a megabyte-long value whole would not even reach a client with gRPC's
//! default 16 KiB metadata limit; a name carrying ANSI escapes or a bidirectional override would
//! show on a receipt or an operator's terminal other than it is stored.

use std::fmt::Write as _;

use crate::error::{Error, Result};

/// Most characters of a client's value an error message quotes.
pub const QUOTE_CHARS: usize = 32;

/// A client's value as an error message may show it: in double quotes, at most [`QUOTE_CHARS`]
/// characters, control and direction-changing characters escaped, `…` when cut short.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(QUOTE_CHARS + 8);
    out.push('"');
    let mut chars = value.chars();
    for c in chars.by_ref().take(QUOTE_CHARS) {
        if forbidden(c) || c == '"' || c == '\\' {
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
    }
    out.push('"');
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// Whether `c` is refused in text: control characters (C0, DEL and C1, which includes the ANSI
/// escape) and Unicode's bidirectional embeddings, overrides and isolates.
pub fn forbidden(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Validates free text such as a name: trimmed, required, at most `max_chars` characters, no
/// control or direction-changing characters.
pub fn text(field: &str, value: &str, max_chars: usize) -> Result<String> {
    let value = optional_text(field, value, max_chars)?;
    if value.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    Ok(value)
}

/// Like [`text`], but empty is allowed.
pub fn optional_text(field: &str, value: &str, max_chars: usize) -> Result<String> {
    // A character is at most four bytes: a longer value is refused without reading it.
    if value.len() > max_chars.saturating_mul(4) {
        return Err(too_long(field, value.len(), max_chars));
    }
    let value = value.trim();
    let mut count = 0usize;
    for (i, c) in value.chars().enumerate() {
        if forbidden(c) {
            return Err(Error::invalid(
                field,
                format!("contains the control character {} at position {i}; use plain text", c.escape_unicode()),
            ));
        }
        count = i + 1;
    }
    if count > max_chars {
        return Err(Error::invalid(field, format!("is {count} characters long; at most {max_chars} are allowed")));
    }
    Ok(value.to_owned())
}

fn too_long(field: &str, bytes: usize, max_chars: usize) -> Error {
    Error::invalid(field, format!("is {bytes} bytes long; at most {max_chars} characters are allowed"))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn quotes_are_short_and_escape_what_a_terminal_would_act_on() {
        assert_eq!(quote("EUR"), "\"EUR\"");
        let long = "x".repeat(1_000_000);
        let quoted = quote(&long);
        assert_eq!(quoted, format!("\"{}\"…", "x".repeat(QUOTE_CHARS)));
        assert_eq!(quote("a\u{1b}[31mb"), "\"a\\u{1b}[31mb\"");
        assert_eq!(quote("\u{202E}evil"), "\"\\u{202e}evil\"");
        assert_eq!(quote("say \"hi\""), "\"say \\\"hi\\\"\"");
    }

    #[test]
    fn text_is_trimmed_bounded_and_free_of_control_characters() {
        assert_eq!(text("name", "  Till 1 ", 10).unwrap(), "Till 1");
        assert_eq!(text("name", "  ", 10).unwrap_err().field(), Some("name"));
        assert_eq!(optional_text("note", "", 10).unwrap(), "");
        assert!(text("name", "Été café", 8).is_ok(), "characters, not bytes, are counted");
        assert!(text("name", "123456789", 8).is_err());
        for bad in ["a\0b", "a\u{1b}[2Jb", "a\u{7f}", "a\u{85}b", "\u{202E}gpj.exe", "a\u{2066}b", "a\nb"] {
            let err = text("name", bad, 100).unwrap_err();
            assert_eq!(err.field(), Some("name"), "{bad:?}");
        }
        let huge = "x".repeat(4_000_000);
        let err = text("name", &huge, 200).unwrap_err();
        assert!(err.to_string().len() < 200, "the error does not echo the value: {err}");
    }

    proptest! {
        #[test]
        fn a_quote_is_bounded_and_has_no_control_characters(value in any::<String>()) {
            let q = quote(&value);
            prop_assert!(q.chars().count() <= QUOTE_CHARS * 10 + 3);
            prop_assert!(!q.chars().any(forbidden));
        }

        #[test]
        fn accepted_text_has_no_control_characters_and_fits(value in any::<String>()) {
            if let Ok(t) = optional_text("f", &value, 50) {
                prop_assert!(t.chars().count() <= 50);
                prop_assert!(!t.chars().any(forbidden));
            }
        }
    }
}

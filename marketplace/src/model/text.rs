//! Names, titles and authors: the text the catalogue stores and shows.
//!
//! A mobile screen shows these strings as they are, so a string is refused
//! when it holds a control character (NUL included: PostgreSQL cannot store
//! it in `TEXT`) or a bidirectional override or isolate (U+202A..U+202E,
//! U+2066..U+2069), which can make a name read as something else. Leading
//! and trailing whitespace is trimmed before anything is checked, so a name
//! of spaces only is empty. Lengths are counted in characters (Unicode
//! scalar values), as both PostgreSQL's and SQLite's `length()` count them.

use serde::{Deserialize, Deserializer};

/// Why `text` cannot be stored as a name, title or author, if it cannot
/// (its length is checked separately).
pub fn text_error(text: &str) -> Option<&'static str> {
    if text.chars().any(char::is_control) {
        Some("must not contain control characters (U+0000..U+001F, U+007F..U+009F)")
    } else if text.chars().any(is_bidi_control) {
        Some(
            "must not contain bidirectional overrides or isolates (U+202A..U+202E, U+2066..U+2069)",
        )
    } else {
        None
    }
}

/// The explicit embeddings, overrides and isolates of the Unicode
/// bidirectional algorithm.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Deserializes a string with its leading and trailing whitespace removed.
pub fn trimmed<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let text = String::deserialize(deserializer)?;
    let trimmed = text.trim();
    Ok(if trimmed.len() == text.len() {
        text
    } else {
        trimmed.to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_and_bidi_overrides_are_refused() {
        for text in [
            "a\0b",
            "a\u{7}b",
            "a\nb",
            "a\u{85}b",
            "a\u{202E}b",
            "a\u{2066}b",
        ] {
            assert!(text_error(text).is_some(), "{text:?}");
        }
        for text in ["Ann", "Zoë Łukasz 李", "O'Brien – Jr.", "a\u{200D}b"] {
            assert_eq!(text_error(text), None, "{text:?}");
        }
    }

    #[test]
    fn surrounding_whitespace_is_trimmed() {
        let trim = |json: &str| trimmed(&mut serde_json::Deserializer::from_str(json)).unwrap();
        assert_eq!(trim(r#""  Ann \t""#), "Ann");
        assert_eq!(trim(r#""   ""#), "");
        assert_eq!(trim(r#""Ann Lee""#), "Ann Lee");
    }
}

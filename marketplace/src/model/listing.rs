//! How the catalogue is listed: the words a search looks for, and the key
//! a cursor page starts after.
//!
//! A search text is split into words, each a run of letters, digits and
//! combining marks; everything else (spaces, punctuation, quotes,
//! operators of any query language) only separates words, so nothing a
//! client types reaches a database as syntax. A book matches when every
//! word matches a word of its title or author, the last word as a prefix
//! (the user may still be typing it); case and accents are ignored by the
//! database's folding.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Longest search text, in characters, once trimmed.
pub const MAX_SEARCH_CHARS: usize = 200;

/// Most words in a search text.
pub const MAX_SEARCH_WORDS: usize = 8;

/// Why a search text is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    /// Empty once trimmed, or longer than [`MAX_SEARCH_CHARS`].
    #[error("must be 1 to {MAX_SEARCH_CHARS} characters once trimmed")]
    Length,
    /// No letter or digit: nothing to look for.
    #[error("must contain a letter or a digit")]
    NoWord,
    /// More than [`MAX_SEARCH_WORDS`] words.
    #[error("must have at most {MAX_SEARCH_WORDS} words")]
    TooManyWords,
}

/// The words of a search text, in the order typed; the last one is matched
/// as a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchTerms {
    words: Vec<String>,
}

impl SearchTerms {
    /// Splits `text` into words (runs of letters, digits and combining
    /// marks), refusing an empty, overlong or wordless text and one of
    /// more than [`MAX_SEARCH_WORDS`] words.
    pub fn parse(text: &str) -> Result<Self, SearchError> {
        let text = text.trim();
        let length = text.chars().count();
        if length == 0 || length > MAX_SEARCH_CHARS {
            return Err(SearchError::Length);
        }
        let words: Vec<String> = text
            .split(|c: char| !is_word_char(c))
            .filter(|word| word.chars().any(char::is_alphanumeric))
            .map(str::to_owned)
            .collect();
        if words.is_empty() {
            return Err(SearchError::NoWord);
        }
        if words.len() > MAX_SEARCH_WORDS {
            return Err(SearchError::TooManyWords);
        }
        Ok(Self { words })
    }

    /// The words, each made of letters, digits and combining marks only;
    /// never empty.
    pub fn words(&self) -> &[String] {
        &self.words
    }
}

/// A letter, a digit, or a combining diacritical mark (so that a
/// decomposed `é`, `e` + U+0301, stays one word).
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '\u{0300}'..='\u{036F}')
}

/// A book's place in a cursor-paged list: the sort key of the last book of
/// a page, which the next page starts after.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum BookKey {
    /// Registration order: the store's registration key (microseconds of
    /// `created_at` on PostgreSQL, the row's `position` on SQLite) and the
    /// book's id.
    #[serde(rename = "r")]
    Registered(i64, Uuid),
    /// A search's order, best match first: the book's relevance as the
    /// store ranks it, then its id.
    #[serde(rename = "s")]
    Ranked(f64, Uuid),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        SearchTerms::parse(text).unwrap().words().to_vec()
    }

    #[test]
    fn a_search_text_is_split_into_words_of_letters_and_digits() {
        assert_eq!(words("  Émile  Zola "), ["Émile", "Zola"]);
        assert_eq!(words("O'Brien: 1984!"), ["O", "Brien", "1984"]);
        assert_eq!(
            words("\"dune\" & (herb*) | !x NEAR"),
            ["dune", "herb", "x", "NEAR"]
        );
        assert_eq!(words("Go\u{308}del"), ["Go\u{308}del"]);
        assert_eq!(words("李白 詩"), ["李白", "詩"]);
    }

    #[test]
    fn empty_wordless_overlong_and_wordy_texts_are_refused() {
        assert_eq!(SearchTerms::parse("   "), Err(SearchError::Length));
        assert_eq!(
            SearchTerms::parse(&"a".repeat(MAX_SEARCH_CHARS + 1)),
            Err(SearchError::Length)
        );
        assert!(SearchTerms::parse(&"a".repeat(MAX_SEARCH_CHARS)).is_ok());
        for text in ["\"", "'", ":*", "&|!()", "*", "\u{301}"] {
            assert_eq!(SearchTerms::parse(text), Err(SearchError::NoWord), "{text}");
        }
        assert_eq!(
            SearchTerms::parse("a b c d e f g h i"),
            Err(SearchError::TooManyWords)
        );
        assert!(SearchTerms::parse("a b c d e f g h").is_ok());
    }

    #[test]
    fn a_key_survives_a_round_trip_through_json() {
        for key in [
            BookKey::Registered(1_795_000_000_123_456, Uuid::new_v4()),
            BookKey::Ranked(0.060_792_7_f32 as f64, Uuid::new_v4()),
            BookKey::Ranked(-1.234_567_890_123e-6, Uuid::new_v4()),
        ] {
            let json = serde_json::to_string(&key).unwrap();
            assert_eq!(serde_json::from_str::<BookKey>(&json).unwrap(), key);
        }
    }
}

//! Names: folding text so that `Eastside  Womens-Refuge`, `EASTSIDE WOMEN'S
//! REFUGE` and `eastside%20women%27s%20refuge` all read the same, and
//! matching configured names as whole phrases.
//!
//! Folding is Unicode NFKD with combining marks dropped (so `Café` reads as
//! `cafe`), lower case, apostrophes removed (`Women's` -> `womens`), and every
//! other non-alphanumeric character turned into a single space.

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// CNAM (caller name delivery) carries at most 15 characters, and carriers
/// usually upper-case them.
pub const CNAM_LEN: usize = 15;

/// Fold text to lower-case words separated by single spaces.
pub fn normalise(s: &str) -> String {
    if s.is_ascii() {
        return fold_chars(s.chars(), s.len());
    }
    fold_chars(s.nfkd(), s.len())
}

fn fold_chars(chars: impl Iterator<Item = char>, len: usize) -> String {
    let mut out = String::with_capacity(len);
    let mut pending_space = false;
    for c in chars {
        if is_combining_mark(c) || matches!(c, '\'' | '\u{2019}' | '\u{2018}' | '`' | '\u{00b4}') {
            continue;
        }
        if c.is_alphanumeric() {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            if c.is_ascii() {
                out.push(c.to_ascii_lowercase());
            } else {
                out.extend(c.to_lowercase());
            }
        } else {
            pending_space = true;
        }
    }
    out
}

/// A configured name, prepared for matching.
#[derive(Debug, Clone)]
pub struct NamePattern {
    /// As written in the config.
    pub label: String,
    /// Folded words, space separated.
    pub phrase: String,
    /// The words run together (`eastsidewomensrefuge`), for hosts and user
    /// parts that drop the spaces. Only set for multi-word names long enough
    /// not to collide with ordinary words.
    pub compact: Option<String>,
    /// Folded forms of the name cut to CNAM length, for display names.
    pub truncated: Vec<String>,
}

impl NamePattern {
    pub fn new(label: &str) -> NamePattern {
        let phrase = normalise(label);
        let compact = phrase
            .contains(' ')
            .then(|| phrase.replace(' ', ""))
            .filter(|c| c.len() >= 8);
        let mut truncated = Vec::new();
        let no_apostrophes: String = label
            .chars()
            .filter(|c| !matches!(c, '\'' | '\u{2019}'))
            .collect();
        for spelling in [label.to_string(), no_apostrophes, phrase.clone()] {
            let cut: String = spelling.trim().chars().take(CNAM_LEN).collect();
            let folded = normalise(&cut);
            if folded != phrase && !folded.is_empty() && !truncated.contains(&folded) {
                truncated.push(folded);
            }
        }
        NamePattern {
            label: label.to_string(),
            phrase,
            compact,
            truncated,
        }
    }

    /// Is the phrase (or its run-together form) present in folded text, as
    /// whole words?
    pub fn found_in(&self, folded: &str) -> bool {
        !self.phrase.is_empty()
            && (contains_words(folded, &self.phrase)
                || self
                    .compact
                    .as_deref()
                    .is_some_and(|c| contains_words(folded, c)))
    }

    /// Does a display name (folded) show this name, possibly cut to CNAM
    /// length? Only for display names: a cut name elsewhere is just words.
    pub fn shown_as_display(&self, folded_display: &str) -> bool {
        if self.found_in(folded_display) {
            return true;
        }
        if folded_display.is_empty() {
            return false;
        }
        if self.truncated.iter().any(|t| t == folded_display) {
            return true;
        }
        // Other cuts of the same name: a prefix of at least two whole words
        // and 12 characters (`Eastside Women` from `Eastside Women's Refuge`).
        folded_display.len() >= 12
            && folded_display.contains(' ')
            && self.phrase.starts_with(folded_display)
            && self.phrase[folded_display.len()..].starts_with(' ')
    }
}

/// Whole-word containment on folded text.
pub fn contains_words(hay: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return false;
    }
    let mut from = 0;
    while let Some(pos) = hay[from..].find(needle) {
        let s = from + pos;
        let e = s + needle.len();
        let left_ok = s == 0 || hay.as_bytes()[s - 1] == b' ';
        let right_ok = e == hay.len() || hay.as_bytes()[e] == b' ';
        if left_ok && right_ok {
            return true;
        }
        from = s + hay[s..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

/// Words that say "no identity here" in display names and user parts.
const ANON_CORE: &[&str] = &[
    "anonymous",
    "anon",
    "restricted",
    "unavailable",
    "unknown",
    "private",
    "withheld",
    "blocked",
    "unlisted",
    "hidden",
    "suppressed",
    "presentation",
];

/// Words that may accompany them ("Number Withheld", "No Caller ID",
/// "Out of area").
const ANON_FILLER: &[&str] = &[
    "number",
    "caller",
    "id",
    "no",
    "not",
    "available",
    "out",
    "of",
    "area",
    "call",
    "name",
    "cli",
    "restricted",
];

/// Is this display name or user part an anonymity marker?
pub fn is_anonymous_text(s: &str) -> bool {
    let f = normalise(s);
    if f.is_empty() {
        return false;
    }
    let words: Vec<&str> = f.split(' ').collect();
    let core = words.iter().any(|w| ANON_CORE.contains(w));
    let out_of_area = f == "out of area";
    let no_caller_id = f == "no caller id";
    (core || out_of_area || no_caller_id)
        && words
            .iter()
            .all(|w| ANON_CORE.contains(w) || ANON_FILLER.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding() {
        assert_eq!(
            normalise("Eastside  Womens-Refuge"),
            "eastside womens refuge"
        );
        assert_eq!(
            normalise("EASTSIDE WOMEN'S REFUGE"),
            "eastside womens refuge"
        );
        assert_eq!(normalise("Café  Ünïcode"), "cafe unicode");
        assert_eq!(normalise("\u{FF25}astside"), "eastside"); // full-width E
    }

    #[test]
    fn whole_phrase_only() {
        let p = NamePattern::new("Eastside Women's Refuge");
        assert!(p.found_in(&normalise("\"Eastside Womens-Refuge\" <sip:x>")));
        assert!(p.found_in(&normalise("pbx.eastsidewomensrefuge.org")));
        assert!(!p.found_in(&normalise("Eastside Medical")));
        assert!(!p.found_in(&normalise("Westeastside Women's Refuges")));
    }

    #[test]
    fn cnam_truncation() {
        let p = NamePattern::new("Eastside Women's Refuge");
        assert!(p.shown_as_display(&normalise("EASTSIDE WOMENS")));
        assert!(p.shown_as_display(&normalise("EASTSIDE WOMEN'")));
        assert!(!p.shown_as_display(&normalise("EASTSIDE")));
    }

    #[test]
    fn anonymity_words() {
        for s in [
            "Anonymous",
            "anonymous",
            "Number Withheld",
            "No Caller ID",
            "PRIVATE",
            "Unavailable",
            "Out of area",
        ] {
            assert!(is_anonymous_text(s), "{s}");
        }
        for s in ["Reception", "Anonymous Refuge", "", "id"] {
            assert!(!is_anonymous_text(s), "{s}");
        }
    }
}

//! Escaping text that came off the wire before it reaches a person: HTML for
//! the dashboard's pages and the alert emails' HTML part; control characters
//! for terminals, log lines, email subjects, CSV and plain-text findings.
//! Every value that came from a SIP message is hostile. The exact bytes stay
//! in the evidence; only what is shown is escaped.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Escape for HTML element content and double- or single-quoted attribute
/// values.
pub fn html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Characters that must not reach a terminal or a log raw: C0 controls (CR,
/// LF, ESC, BEL, TAB...), DEL, C1 controls (some terminals act on U+009B as
/// CSI), and the Unicode bidirectional overrides and isolates, which reorder
/// what a reader sees (a number shown reversed, say).
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// One unit of shown text: a character as itself, an unsafe character as a
/// Rust-style escape, or a byte that is not UTF-8 as `\xNN`. A cut never
/// falls inside a unit.
enum Unit {
    Char(char),
    Escaped(char),
    Byte(u8),
}

impl Unit {
    fn of(c: char) -> Unit {
        if is_unsafe(c) {
            Unit::Escaped(c)
        } else {
            Unit::Char(c)
        }
    }

    /// Characters it takes when shown.
    fn width(&self) -> usize {
        match self {
            Unit::Char(_) => 1,
            Unit::Escaped('\t' | '\r' | '\n') => 2,
            // \u{...}: 4 around the hex digits.
            Unit::Escaped(c) => 4 + format!("{:x}", *c as u32).len(),
            Unit::Byte(_) => 4,
        }
    }

    fn push(&self, out: &mut String) {
        // Writing to a String can't fail.
        let _ = match self {
            Unit::Char(c) => write!(out, "{c}"),
            Unit::Escaped('\t') => write!(out, "\\t"),
            Unit::Escaped('\r') => write!(out, "\\r"),
            Unit::Escaped('\n') => write!(out, "\\n"),
            Unit::Escaped(c) => write!(out, "\\u{{{:x}}}", *c as u32),
            Unit::Byte(b) => write!(out, "\\x{b:02x}"),
        };
    }
}

/// Show units, cut to at most `max` characters with "…" marking a cut.
fn show(units: impl Iterator<Item = Unit>, max: usize, hint: usize) -> String {
    let mut out = String::with_capacity(hint.min(max.saturating_mul(4)));
    let mut used = 0usize;
    // Units that fit within max - 1 are certain; the last one may still fit
    // exactly if nothing follows it.
    let mut units = units.peekable();
    while let Some(u) = units.next() {
        let w = u.width();
        let last = units.peek().is_none();
        let room = if last { max } else { max.saturating_sub(1) };
        if used + w > room {
            out.push('…');
            return out;
        }
        used += w;
        u.push(&mut out);
    }
    out
}

/// Text with every control character escaped as Rust writes them (`\r`,
/// `\n`, `\t`, `\u{1b}`, `\u{9b}`, `\u{202e}`...), safe for a terminal, a
/// log line, an email subject or a CSV cell. Borrowed when there was nothing
/// to escape.
pub fn control(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(show(s.chars().map(Unit::of), usize::MAX, s.len() + 8))
}

/// [`control`], cut to at most `max` characters of output, with "…" marking
/// the cut. For values quoted in findings and one-line summaries, where a
/// 60 KiB header must not become a 60 KiB reason.
pub fn clip(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max && !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(show(s.chars().map(Unit::of), max, s.len()))
}

/// Bytes shown as text: valid UTF-8 as itself, every other byte as `\xNN`,
/// control characters escaped as in [`control`], cut to at most `max`
/// characters. For input that may be binary (a body, a header with raw
/// bytes) quoted in a reason or a log line.
pub fn bytes(b: &[u8], max: usize) -> String {
    show(utf8_units(b), max, b.len())
}

fn utf8_units(b: &[u8]) -> impl Iterator<Item = Unit> + '_ {
    b.utf8_chunks().flat_map(|chunk| {
        chunk
            .valid()
            .chars()
            .map(Unit::of)
            .chain(chunk.invalid().iter().map(|b| Unit::Byte(*b)))
    })
}

/// Every digit except the last two becomes `•`: how a number that must not
/// be shown in full (a stranger's, or the organisation's on a chat channel)
/// is written for people. Other characters are kept, so the shape stays.
pub fn mask_digits(s: &str) -> String {
    let total = s.chars().filter(char::is_ascii_digit).count();
    let mut seen = 0;
    s.chars()
        .map(|c| {
            if c.is_ascii_digit() {
                seen += 1;
                if seen + 2 <= total {
                    return '•';
                }
            }
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_plain_text_borrowed() {
        assert!(matches!(control("Eastside Refuge"), Cow::Borrowed(_)));
        assert_eq!(
            control("a\x1b[2Jb\x07\r\nc\td"),
            "a\\u{1b}[2Jb\\u{7}\\r\\nc\\td"
        );
        assert_eq!(control("x\u{9b}31m\u{7f}"), "x\\u{9b}31m\\u{7f}");
        assert_eq!(control("call \u{202e}2410"), "call \\u{202e}2410");
        assert_eq!(control("Women’s Refuge é"), "Women’s Refuge é");
    }

    #[test]
    fn clip_cuts_after_escaping() {
        assert_eq!(clip("abcdef", 10), "abcdef");
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("\x1b\x1b\x1b", 8), "\\u{1b}…");
        // An escape is never cut in half.
        assert_eq!(clip("\x1b\x1b\x1b", 5), "…");
        assert_eq!(clip("ab\x1b", 8), "ab\\u{1b}");
    }

    #[test]
    fn bytes_show_invalid_utf8_as_hex() {
        assert_eq!(bytes(b"ok\xff\xfe\x1bz", 100), "ok\\xff\\xfe\\u{1b}z");
        assert_eq!(bytes("é\u{0}".as_bytes(), 100), "é\\u{0}");
        assert_eq!(bytes(&[0u8; 1000], 12), "\\u{0}\\u{0}…");
        assert_eq!(bytes(b"\\\xff", 5), "\\\\xff");
        assert_eq!(bytes(b"", 5), "");
    }

    #[test]
    fn masking_keeps_the_last_two_digits() {
        assert_eq!(mask_digits("+61 4 9157 0156"), "+•• • •••• ••56");
        assert_eq!(mask_digits("42"), "42");
        assert_eq!(mask_digits("anonymous"), "anonymous");
    }
}

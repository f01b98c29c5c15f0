//! What kind of byte each byte is, looked up in one table, and a text's
//! profile: which kinds it holds at all, read in one pass, so the scan
//! skips what can't be there (no digits: no number; no `%`: nothing to
//! percent-decode) instead of searching each text once per question.

/// An ASCII letter or digit.
pub const ALNUM: u16 = 1;
/// An ASCII digit.
pub const DIGIT: u16 = 1 << 1;
/// A character of a domain or IPv4 token: a letter, digit, `.`, `-`, `_`.
pub const TOKEN: u16 = 1 << 2;
/// `%`: the text may hold percent-escapes.
pub const PERCENT: u16 = 1 << 3;
/// `?`: the text may hold RFC 2047 encoded words.
pub const QUESTION: u16 = 1 << 4;
/// A byte of a non-ASCII character.
pub const NON_ASCII: u16 = 1 << 5;
/// `:`: the text may hold an IPv6 address.
pub const COLON: u16 = 1 << 6;

/// The kinds of each byte.
pub const CLASS: [u16; 256] = classes();

const fn classes() -> [u16; 256] {
    let mut t = [0u16; 256];
    let mut b = 0usize;
    while b < 256 {
        let c = b as u8;
        let mut k = 0;
        if c.is_ascii_alphanumeric() {
            k |= ALNUM | TOKEN;
        }
        if c.is_ascii_digit() {
            k |= DIGIT;
        }
        if c == b'.' || c == b'-' || c == b'_' {
            k |= TOKEN;
        }
        if c == b'%' {
            k |= PERCENT;
        }
        if c == b'?' {
            k |= QUESTION;
        }
        if c == b':' {
            k |= COLON;
        }
        if c >= 0x80 {
            k |= NON_ASCII;
        }
        t[b] = k;
        b += 1;
    }
    t
}

/// Every kind of byte `s` holds.
pub fn profile(s: &[u8]) -> u16 {
    s.iter().fold(0, |p, &b| p | CLASS[usize::from(b)])
}

/// Whether `b` is of kind `kind`.
pub fn is(b: u8, kind: u16) -> bool {
    CLASS[usize::from(b)] & kind != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_profiles() {
        assert!(is(b'a', ALNUM | TOKEN) && is(b'7', DIGIT) && is(b'-', TOKEN));
        assert!(!is(b'-', ALNUM) && !is(b' ', TOKEN) && !is(b'@', TOKEN));
        let p = profile("sip:+61%20x@é".as_bytes());
        assert_eq!(
            p & (DIGIT | PERCENT | NON_ASCII | COLON),
            DIGIT | PERCENT | NON_ASCII | COLON
        );
        assert_eq!(profile(b"abc") & (DIGIT | QUESTION), 0);
    }
}

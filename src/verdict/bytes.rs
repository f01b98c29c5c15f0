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

/// `'` or `` ` ``: words may run across it (`women's` folds to `womens`).
pub const APOSTROPHE: u16 = 1 << 7;

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
        if c == b'\'' || c == b'`' {
            k |= APOSTROPHE;
        }
        t[b] = k;
        b += 1;
    }
    t
}

/// Every kind of byte `s` holds, a byte at a time ([`Masks::read`] finds
/// the same faster; this is what it is tested against).
#[cfg(test)]
pub fn profile(s: &[u8]) -> u16 {
    s.iter().fold(0, |p, &b| p | CLASS[usize::from(b)])
}

/// Whether `b` is of kind `kind`.
pub fn is(b: u8, kind: u16) -> bool {
    CLASS[usize::from(b)] & kind != 0
}

/// Where the letters, digits and token characters of a text are, one bit
/// per byte (bit `i % 64` of word `i / 64` for byte `i`), and the text's
/// [`profile`]. Read once per text, eight bytes at a time, so the number,
/// host and name searches jump from one place of interest to the next
/// instead of each testing every byte. Reused from text to text.
#[derive(Debug, Default)]
pub struct Masks {
    /// ASCII letters and digits.
    pub alnum: Vec<u64>,
    /// ASCII digits.
    pub digit: Vec<u64>,
    /// Characters of a domain or IPv4 token ([`TOKEN`]).
    pub token: Vec<u64>,
    /// Colons (IPv6 addresses have two or more).
    pub colon: Vec<u64>,
    /// Every kind of byte the text holds, as [`profile`] gives it.
    pub profile: u16,
    /// The text's length in bytes.
    pub len: usize,
}

/// A byte's value in every byte of a word.
const fn splat(b: u8) -> u64 {
    0x0101_0101_0101_0101 * b as u64
}

/// The top bit of every byte.
const HIGH: u64 = splat(0x80);

/// The top bit of each byte of `x` (bytes below 0x80) set where the byte is
/// `k` or more (0 < k <= 0x80): adding 0x80 - k carries into the top bit
/// exactly then, and never into the next byte.
fn at_least(x: u64, k: u8) -> u64 {
    x.wrapping_add(splat(0x80 - k)) & HIGH
}

/// The top bit of each byte of `x` (bytes below 0x80) set where the byte is
/// `k` (below 0x80).
fn equal(x: u64, k: u8) -> u64 {
    !(x ^ splat(k)).wrapping_add(splat(0x7f)) & HIGH
}

/// What kinds of byte [`Masks::read`] has seen so far, each as the top bits
/// of the bytes where it was seen (or'ed over the words read).
#[derive(Default)]
struct Seen {
    /// Letters or digits.
    alnum: u64,
    /// Digits.
    digit: u64,
    /// `.`, `-` or `_`.
    token: u64,
    /// `%`.
    percent: u64,
    /// `?`.
    question: u64,
    /// `:`.
    colon: u64,
    /// `'` or `` ` ``.
    apostrophe: u64,
    /// Bytes of non-ASCII characters.
    non_ascii: u64,
}

impl Seen {
    /// The digits, the letters and digits, the token characters and the
    /// colons of eight bytes (as [`gather`] gives them), noting what kinds
    /// they hold.
    fn classify(&mut self, raw: u64) -> (u64, u64, u64, u64) {
        let high = raw & HIGH;
        self.non_ascii |= high;
        // Non-ASCII bytes are of no kind below: their top bit is cleared
        // for the arithmetic and their results masked off.
        let x = raw & !HIGH;
        let ascii = !high & HIGH;
        let d = at_least(x, b'0') & !at_least(x, b'9' + 1) & ascii;
        let lower = x | splat(0x20);
        let a = (at_least(lower, b'a') & !at_least(lower, b'z' + 1) & ascii) | d;
        // `-` and `.` are neighbours (0x2d, 0x2e).
        let t = ((at_least(x, b'-') & !at_least(x, b'.' + 1)) | equal(x, b'_')) & ascii;
        self.alnum |= a;
        self.digit |= d;
        self.token |= t;
        self.percent |= equal(x, b'%') & ascii;
        self.question |= equal(x, b'?') & ascii;
        let c = equal(x, b':') & ascii;
        self.colon |= c;
        self.apostrophe |= (equal(x, b'\'') | equal(x, b'`')) & ascii;
        (gather(d), gather(a), gather(a | t), gather(c))
    }
}

/// The top bits of the eight bytes of `m` (nothing else set), as eight bits.
fn gather(m: u64) -> u64 {
    // Each byte's bit lands in the top byte, in order, without carries.
    (m >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56
}

impl Masks {
    /// Read `s`.
    pub fn read(&mut self, s: &[u8]) {
        self.alnum.clear();
        self.digit.clear();
        self.token.clear();
        self.colon.clear();
        self.len = s.len();
        let mut seen = Seen::default();
        for block in s.chunks(64) {
            let (mut alnum, mut digit, mut token, mut colon) = (0u64, 0u64, 0u64, 0u64);
            let mut words = block.chunks_exact(8);
            let mut shift = 0;
            for word in &mut words {
                // chunks_exact gives eight bytes; zeros are of no kind.
                let raw = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
                let (d, a, t, c) = seen.classify(raw);
                digit |= d << shift;
                alnum |= a << shift;
                token |= t << shift;
                colon |= c << shift;
                shift += 8;
            }
            let rest = words.remainder();
            if !rest.is_empty() {
                // The text's last eight bytes, shifted so that only the
                // ones not yet read remain (zeros are of no kind); a text
                // shorter than eight bytes is copied.
                let last = match s.len().checked_sub(8).and_then(|from| s.get(from..)) {
                    Some(tail) => {
                        u64::from_le_bytes(tail.try_into().unwrap_or([0; 8]))
                            >> (8 * (8 - rest.len()))
                    }
                    None => {
                        let mut short = [0u8; 8];
                        for (to, from) in short.iter_mut().zip(rest) {
                            *to = *from;
                        }
                        u64::from_le_bytes(short)
                    }
                };
                let (d, a, t, c) = seen.classify(last);
                digit |= d << shift;
                alnum |= a << shift;
                token |= t << shift;
                colon |= c << shift;
            }
            self.alnum.push(alnum);
            self.digit.push(digit);
            self.token.push(token);
            self.colon.push(colon);
        }
        let any = |m: u64, kind: u16| if m != 0 { kind } else { 0 };
        self.profile = any(seen.alnum, ALNUM | TOKEN)
            | any(seen.digit, DIGIT)
            | any(seen.token, TOKEN)
            | any(seen.percent, PERCENT)
            | any(seen.question, QUESTION)
            | any(seen.colon, COLON)
            | any(seen.apostrophe, APOSTROPHE)
            | any(seen.non_ascii, NON_ASCII);
    }

    /// Is byte `i` set in `mask`?
    pub fn has(mask: &[u64], i: usize) -> bool {
        mask.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// The first byte at or after `from` set in `mask`, if any.
    pub fn next_set(mask: &[u64], from: usize) -> Option<usize> {
        let mut w = from / 64;
        let mut bits = mask.get(w)? & (!0u64 << (from % 64));
        while bits == 0 {
            w += 1;
            bits = *mask.get(w)?;
        }
        Some(w * 64 + bits.trailing_zeros() as usize)
    }

    /// Where the run of set bytes in `mask` that holds byte `at` (set)
    /// starts.
    pub fn run_start(&self, mask: &[u64], at: usize) -> usize {
        let mut w = at / 64;
        // The clear bits at or below `at` in its word.
        let below = if at % 64 == 63 {
            !0u64
        } else {
            (1u64 << (at % 64 + 1)) - 1
        };
        let mut clear = !mask.get(w).copied().unwrap_or(0) & below;
        loop {
            if clear != 0 {
                return w * 64 + 64 - clear.leading_zeros() as usize;
            }
            if w == 0 {
                return 0;
            }
            w -= 1;
            clear = !mask.get(w).copied().unwrap_or(0);
        }
    }

    /// The first byte at or after `from` not set in `mask` (the text's
    /// length if every byte to its end is).
    pub fn next_clear(&self, mask: &[u64], from: usize) -> usize {
        let mut w = from / 64;
        let Some(first) = mask.get(w) else {
            return self.len;
        };
        let mut bits = !first & (!0u64 << (from % 64));
        while bits == 0 {
            w += 1;
            match mask.get(w) {
                Some(m) => bits = !m,
                None => return self.len,
            }
        }
        (w * 64 + bits.trailing_zeros() as usize).min(self.len)
    }
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

    #[test]
    fn masks_agree_with_the_byte_table() {
        let mut texts: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"sip:+61%20x@\xc3\xa9 women's `x` a?b:c".to_vec(),
            (0u8..=255).collect(),
            (0u8..=255).rev().cycle().take(1000).collect(),
        ];
        texts.push("Caf\u{e9} 03-7010_0142.x".repeat(9).into_bytes());
        let mut m = Masks::default();
        for t in &texts {
            m.read(t);
            assert_eq!(m.profile, profile(t), "{t:?}");
            for (i, &b) in t.iter().enumerate() {
                assert_eq!(Masks::has(&m.alnum, i), is(b, ALNUM), "{i}");
                assert_eq!(Masks::has(&m.digit, i), is(b, DIGIT), "{i}");
                assert_eq!(Masks::has(&m.token, i), is(b, TOKEN), "{i}");
                assert_eq!(Masks::has(&m.colon, i), b == b':', "{i}");
            }
            for from in 0..=t.len() {
                let set = (from..t.len()).find(|&i| is(t[i], DIGIT));
                assert_eq!(Masks::next_set(&m.digit, from), set);
                let clear = (from..t.len())
                    .find(|&i| !is(t[i], TOKEN))
                    .unwrap_or(t.len());
                assert_eq!(m.next_clear(&m.token, from), clear);
                if from < t.len() && is(t[from], TOKEN) {
                    let start = (0..=from).rev().take_while(|&i| is(t[i], TOKEN)).last();
                    assert_eq!(Some(m.run_start(&m.token, from)), start, "{from}");
                }
            }
        }
    }
}

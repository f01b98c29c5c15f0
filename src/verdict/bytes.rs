//! What kind of byte each byte is, and where each kind is in a text
//! ([`Masks`]): read once per text, sixteen bytes at a time, so the scan
//! skips what can't be there (no digits: no number; no `%`: nothing to
//! percent-decode) and each search jumps to the places that matter instead
//! of testing every byte once per question.

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

/// Where the letters, digits, token characters and colons of a text are,
/// one bit per byte (bit `i % 64` of word `i / 64` for byte `i`), and the
/// kinds of byte it holds. Read once per text, sixteen bytes at a time, so
/// the number, host and name searches jump from one place of interest to
/// the next instead of each testing every byte. Reused from text to text.
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
    /// Every kind of byte the text holds ([`ALNUM`], [`DIGIT`]...).
    pub profile: u16,
    /// The text's length in bytes.
    pub len: usize,
}

/// What [`classify`] notes of each byte beyond the masks (or'ed over a
/// text, they say which of these it holds at all): the profile's bits
/// themselves, so the or is the profile's lower byte.
const SAW_PERCENT: u8 = PERCENT as u8;
/// A `?`.
const SAW_QUESTION: u8 = QUESTION as u8;
/// A `'` or `` ` ``.
const SAW_APOSTROPHE: u8 = APOSTROPHE as u8;
/// A byte of a non-ASCII character.
const SAW_NON_ASCII: u8 = NON_ASCII as u8;

/// The kinds of sixteen bytes: bit masks of the digits, the letters and
/// digits, the token characters and the colons, with what else was seen
/// or'ed into `seen`. Each byte's kinds are written to arrays of 0 or 0x80
/// a byte at a time, which the compiler turns into comparisons of all
/// sixteen at once; the top bits are then gathered into masks.
// Kept out of line: on its own the loop below is compiled to comparisons
// of all sixteen bytes at once, which inlining into a larger loop can undo.
#[inline(never)]
fn classify(block: &[u8; 16], seen: &mut [u8; 16]) -> (u16, u16, u16, u16) {
    let (mut d, mut a, mut t, mut c) = ([0u8; 16], [0u8; 16], [0u8; 16], [0u8; 16]);
    for i in 0..16 {
        let b = block[i];
        // Non-short-circuiting operators throughout, so that every byte
        // is computed the same way, without branches.
        let digit = u8::from(b.wrapping_sub(b'0') < 10);
        // Upper or lower case alike (bytes from 0x80 never match).
        let letter = u8::from((b | 0x20).wrapping_sub(b'a') < 26);
        let sep = u8::from((b == b'.') | (b == b'-') | (b == b'_'));
        d[i] = digit << 7;
        a[i] = (digit | letter) << 7;
        t[i] = (digit | letter | sep) << 7;
        c[i] = u8::from(b == b':') << 7;
        seen[i] |= (u8::from(b == b'%') * SAW_PERCENT)
            | (u8::from(b == b'?') * SAW_QUESTION)
            | (u8::from((b == b'\'') | (b == b'`')) * SAW_APOSTROPHE)
            | (u8::from(b >= 0x80) * SAW_NON_ASCII);
    }
    (gather(&d), gather(&a), gather(&t), gather(&c))
}

/// The top bits of sixteen bytes (nothing else set), as sixteen bits.
fn gather(m: &[u8; 16]) -> u16 {
    let (lo, hi) = m.split_at(8);
    // Both halves are eight bytes long.
    let lo = u64::from_le_bytes(lo.try_into().unwrap_or([0; 8]));
    let hi = u64::from_le_bytes(hi.try_into().unwrap_or([0; 8]));
    // Each byte's top bit lands in the top byte, in order, without
    // carries.
    let eight = |x: u64| (x >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56;
    (eight(lo) | (eight(hi) << 8)) as u16
}

impl Masks {
    /// The bytes its buffers hold on to.
    pub fn heap_bytes(&self) -> usize {
        (self.alnum.capacity()
            + self.digit.capacity()
            + self.token.capacity()
            + self.colon.capacity())
            * std::mem::size_of::<u64>()
    }

    /// Read `s`.
    pub fn read(&mut self, s: &[u8]) {
        self.alnum.clear();
        self.digit.clear();
        self.token.clear();
        self.colon.clear();
        self.len = s.len();
        // Room for a kilobyte's masks at once: most texts fit, and the
        // vectors are not grown text by text.
        let words = s.len().div_ceil(64).max(16);
        for mask in [
            &mut self.alnum,
            &mut self.digit,
            &mut self.token,
            &mut self.colon,
        ] {
            mask.reserve(words);
        }
        let mut seen = [0u8; 16];
        let (mut any_alnum, mut any_digit, mut any_token, mut any_colon) = (0, 0, 0, 0);
        for block in s.chunks(64) {
            let (mut alnum, mut digit, mut token, mut colon) = (0u64, 0u64, 0u64, 0u64);
            for (k, chunk) in block.chunks(16).enumerate() {
                let (d, a, t, c) = match <&[u8; 16]>::try_from(chunk) {
                    Ok(bytes) => classify(bytes, &mut seen),
                    Err(_) => Self::classify_end(s, chunk.len(), &mut seen),
                };
                let shift = 16 * k;
                digit |= u64::from(d) << shift;
                alnum |= u64::from(a) << shift;
                token |= u64::from(t) << shift;
                colon |= u64::from(c) << shift;
            }
            self.alnum.push(alnum);
            self.digit.push(digit);
            self.token.push(token);
            self.colon.push(colon);
            any_alnum |= alnum;
            any_digit |= digit;
            any_token |= token;
            any_colon |= colon;
        }
        // The or of the sixteen bytes of `seen`, eight at a time.
        let (lo, hi) = seen.split_at(8);
        let mut saw = u64::from_le_bytes(lo.try_into().unwrap_or([0; 8]))
            | u64::from_le_bytes(hi.try_into().unwrap_or([0; 8]));
        saw |= saw >> 32;
        saw |= saw >> 16;
        saw |= saw >> 8;
        self.profile = u16::from(saw as u8)
            | (u16::from(any_alnum != 0) * ALNUM)
            | (u16::from(any_digit != 0) * DIGIT)
            | (u16::from(any_token != 0) * TOKEN)
            | (u16::from(any_colon != 0) * COLON);
    }

    /// [`classify`] of the last `n` (fewer than sixteen) bytes of `s`:
    /// the last sixteen are read and the masks shifted to leave only the
    /// `n` (what else is seen was seen already); a text shorter than
    /// sixteen bytes is copied, zeros being of no kind.
    fn classify_end(s: &[u8], n: usize, seen: &mut [u8; 16]) -> (u16, u16, u16, u16) {
        match s
            .len()
            .checked_sub(16)
            .and_then(|from| <&[u8; 16]>::try_from(&s[from..]).ok())
        {
            Some(last) => {
                let (d, a, t, c) = classify(last, seen);
                let drop = 16 - n;
                (d >> drop, a >> drop, t >> drop, c >> drop)
            }
            None => {
                let mut short = [0u8; 16];
                if let (Some(to), Some(from)) = (short.get_mut(..n), s.get(s.len() - n..)) {
                    to.copy_from_slice(from);
                }
                classify(&short, seen)
            }
        }
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

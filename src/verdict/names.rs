//! Names: folding text so that `Eastside  Womens-Refuge`, `EASTSIDE WOMEN'S
//! REFUGE` and `eastside%20women%27s%20refuge` all read the same, and
//! matching configured names as whole phrases.
//!
//! Folding is Unicode NFKD with combining marks dropped (so `Café` reads as
//! `cafe`), lower case, apostrophes removed (`Women's` -> `womens`), and every
//! other non-alphanumeric character turned into a single space.
//!
//! Every folded form of the organisation's names and a line's descriptors
//! is compiled once into one automaton ([`Lexicon`]), so a text is folded
//! once and searched once for all of them; a match counts only as whole
//! words.

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

use super::automaton::Patterns;
use super::bytes::{self, Masks};

/// CNAM (caller name delivery) carries at most 15 characters, and carriers
/// usually upper-case them.
pub const CNAM_LEN: usize = 15;

/// Fold text to lower-case words separated by single spaces.
pub fn normalise(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    normalise_into(s, &mut out);
    out
}

/// [`normalise`] into a buffer (cleared first), so a caller folding many
/// texts reuses one allocation.
pub fn normalise_into(s: &str, out: &mut String) {
    out.clear();
    if s.is_ascii() {
        fold_ascii(s.as_bytes(), out);
    } else {
        fold(s.nfkd().map(|c| (c, ())), out, |_, _| {});
    }
}

/// [`fold`] for ASCII text, which is most of SIP: no decomposition, and
/// each byte is a character.
fn fold_ascii(s: &[u8], out: &mut String) {
    let mut pending_space = false;
    for &b in s {
        if b.is_ascii_alphanumeric() {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.push(char::from(b.to_ascii_lowercase()));
        } else if b != b'\'' && b != b'`' {
            pending_space = true;
        }
    }
}

/// Fold `chars` into `out`, each with a tag (where it came from);
/// `record(tag, n)` is told of every `n` bytes pushed for a tagged
/// character, spaces included, so a match in the folded text can be traced
/// back to the original.
fn fold<T: Copy>(
    chars: impl Iterator<Item = (char, T)>,
    out: &mut String,
    mut record: impl FnMut(T, usize),
) {
    let mut pending_space = false;
    for (c, tag) in chars {
        if is_combining_mark(c) || matches!(c, '\'' | '\u{2019}' | '\u{2018}' | '`' | '\u{00b4}') {
            continue;
        }
        if c.is_alphanumeric() {
            if pending_space && !out.is_empty() {
                out.push(' ');
                record(tag, 1);
            }
            pending_space = false;
            let before = out.len();
            if c.is_ascii() {
                out.push(c.to_ascii_lowercase());
            } else {
                out.extend(c.to_lowercase());
            }
            record(tag, out.len() - before);
        } else {
            pending_space = true;
        }
    }
}

/// Where `needle` (folded words) first appears as whole words in `text`,
/// as `text` spells it: `Eastside  WOMENS-Refuge` for
/// `eastside womens refuge`. For quoting what matched in a finding.
pub fn find_original<'a>(text: &'a str, needle: &str) -> Option<&'a str> {
    // The byte range in `text` of the character behind each folded byte.
    let mut spans: Vec<(usize, usize)> = Vec::with_capacity(text.len());
    let chars = text.char_indices().flat_map(|(i, c)| {
        let span = (i, i + c.len_utf8());
        std::iter::once(c).nfkd().map(move |d| (d, span))
    });
    let mut folded = String::with_capacity(text.len());
    fold(chars, &mut folded, |span, n| {
        spans.extend(std::iter::repeat_n(span, n));
    });
    let (s, e) = word_match(&folded, needle)?;
    let start = spans.get(s)?.0;
    let end = spans.get(e.checked_sub(1)?)?.1;
    text.get(start..end)
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

impl NamePattern {
    /// The text in `text` this name matched as, as written there (the
    /// phrase, or its run-together form in a host name).
    pub fn locate<'a>(&self, text: &'a str) -> Option<&'a str> {
        find_original(text, &self.phrase)
            .or_else(|| self.compact.as_deref().and_then(|c| find_original(text, c)))
    }
}

/// Phrases that reveal what kind of service is calling, whatever the
/// organisation is called: a survivor's abuser who sees "Shelter" or "DV"
/// on a phone knows who called. The built-in English list; a config adds
/// to it with `organisation.descriptors` or leaves it out with
/// `default_descriptors = false`.
pub const DEFAULT_DESCRIPTORS: &[&str] = &[
    "refuge",
    "women's refuge",
    "shelter",
    "women's shelter",
    "safe house",
    "domestic violence",
    "domestic abuse",
    "family violence",
    "intimate partner violence",
    "DV",
    "DFV",
    "IPV",
    "sexual assault",
    "sexual violence",
    "rape crisis",
    "crisis centre",
    "crisis center",
    "women's aid",
];

/// A name or descriptor in a [`PhraseSet`].
#[derive(Debug, Clone)]
pub struct Phrase {
    /// Whole words, folded, run together in hosts.
    pub pattern: NamePattern,
    /// A word of three letters or fewer ("DV"): only a token of its own in
    /// ordinary text counts, never letters inside an encoded blob or a
    /// codec name, where such short words turn up by chance.
    pub short: bool,
}

/// Names or descriptors, in configured order.
#[derive(Debug, Clone, Default)]
pub struct PhraseSet {
    /// The phrases, in configured order.
    pub items: Vec<Phrase>,
}

impl PhraseSet {
    /// Configured names, in their order; none is short (a name is matched
    /// as whole words wherever it is).
    pub fn names(patterns: &[NamePattern]) -> PhraseSet {
        PhraseSet {
            items: patterns
                .iter()
                .map(|p| Phrase {
                    pattern: p.clone(),
                    short: false,
                })
                .collect(),
        }
    }

    /// Compile descriptors as written; empty and repeated ones are dropped.
    pub fn new<'a>(labels: impl IntoIterator<Item = &'a str>) -> PhraseSet {
        let mut set = PhraseSet::default();
        for label in labels {
            let pattern = NamePattern::new(label);
            if pattern.phrase.is_empty()
                || set.items.iter().any(|d| d.pattern.phrase == pattern.phrase)
            {
                continue;
            }
            let short = !pattern.phrase.contains(' ') && pattern.phrase.chars().count() <= 3;
            set.items.push(Phrase { pattern, short });
        }
        set
    }

    /// The same set without the descriptors `drop` picks.
    pub fn without(&self, drop: impl Fn(&Phrase) -> bool) -> PhraseSet {
        PhraseSet {
            items: self.items.iter().filter(|d| !drop(d)).cloned().collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether descriptor `i` counts where it was found in `raw`: a short
    /// one only as a token of its own, and only where short words are
    /// words (`allow_short`, false on codec lines).
    pub fn counts(&self, i: usize, raw: &str, allow_short: bool) -> bool {
        self.items
            .get(i)
            .is_some_and(|d| !d.short || (allow_short && short_token_in(raw, &d.pattern.phrase)))
    }

    /// A display name of exactly CNAM length (so probably cut) that ends in
    /// the start of a descriptor, cut inside a word: `EASTSIDE DOMESTIC
    /// VIOL`, `NORTHERN SHELTE`. A cut at a word's end (`... WOMENS`) is
    /// too ambiguous to count.
    pub fn cut_in_display(&self, folded: &str, display: &str) -> Option<usize> {
        if display.trim().chars().count() != CNAM_LEN {
            return None;
        }
        let mut starts = vec![0];
        starts.extend(folded.match_indices(' ').map(|(i, _)| i + 1));
        for s in starts {
            let tail = &folded[s..];
            if tail.len() < 4 {
                continue;
            }
            for (i, d) in self.items.iter().enumerate() {
                let p = &d.pattern.phrase;
                if p.len() > tail.len()
                    && p.starts_with(tail)
                    && p.as_bytes().get(tail.len()).is_some_and(|b| *b != b' ')
                {
                    return Some(i);
                }
            }
        }
        None
    }
}

/// Which list a form in a [`Lexicon`] belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum List {
    Names,
    Descriptors,
}

/// The organisation's names and a line's descriptors, compiled into one
/// automaton over all their folded forms (each one's words, and the
/// run-together form of the longer ones), walked from each word of a
/// folded text that could begin one.
#[derive(Debug, Clone)]
pub struct Lexicon {
    /// Every form; None when there are none.
    automaton: Option<Patterns>,
    /// What each of the automaton's patterns stands for: the list and the
    /// index in it (one form can stand for several phrases).
    meanings: Vec<Vec<(List, usize)>>,
    /// The first two bytes of every form, as a bit set indexed by
    /// `first * 128 + second` (any second byte for a one-byte form); forms
    /// that start with non-ASCII are left out, as ASCII text can't hold
    /// them. An ASCII text none of whose words starts so is not folded.
    pairs: Vec<u64>,
    /// The same for the first three bytes (a short form followed by a
    /// space), indexed by [`triple`]: sharper, for texts without
    /// apostrophes, where the next bytes are simply the next bytes.
    triples: Vec<u64>,
    /// For each [`CODE`]: some form is that letter or digit alone, or
    /// starts with it and a space.
    first_then_space: [bool; 37],
}

/// [`CODE`] of a space.
const SPACE: u8 = 36;

/// Each ASCII byte as folded, numbered for [`triple`]: a letter (either
/// case) 0 to 25, a digit 26 to 35, anything else [`SPACE`] (it separates
/// words). Bytes of non-ASCII characters too, but texts holding them are
/// not looked up this way.
const CODE: [u8; 256] = {
    let mut t = [SPACE; 256];
    let mut b = 0;
    while b < 128 {
        let c = (b as u8).to_ascii_lowercase();
        if c.is_ascii_lowercase() {
            t[b] = c - b'a';
        } else if c.is_ascii_digit() {
            t[b] = 26 + c - b'0';
        }
        b += 1;
    }
    t
};

/// The index of three folded ASCII bytes (letters, digits or a space) in
/// [`Lexicon`]'s `triples`; None for anything else.
fn triple(a: u8, b: u8, c: u8) -> Option<usize> {
    let code = |x: u8| match x {
        b'a'..=b'z' => Some(usize::from(x - b'a')),
        b'0'..=b'9' => Some(26 + usize::from(x - b'0')),
        b' ' => Some(36),
        _ => None,
    };
    Some((code(a)? * 37 + code(b)?) * 37 + code(c)?)
}

/// What [`Lexicon::find`] found in one text: indexes into the names and
/// into the descriptors, each in order of first appearance (and in list
/// order where several start at the same word). Reused from text to text.
#[derive(Debug, Default)]
pub struct Found {
    /// Indexes of the names found.
    pub names: Vec<usize>,
    /// Indexes of the descriptors found (before the short-word rule).
    pub descriptors: Vec<usize>,
    /// Whole-word matches: (start, list, index).
    matches: Vec<(usize, List, usize)>,
    /// The text folded, when [`Lexicon::fold_and_find`] folded it.
    folded: Vec<u8>,
    /// Where the words that could begin a form start in it.
    starts: Vec<usize>,
}

impl Found {
    /// The bytes its buffers hold on to.
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        self.names.capacity() * size_of::<usize>()
            + self.descriptors.capacity() * size_of::<usize>()
            + self.matches.capacity() * size_of::<(usize, List, usize)>()
            + self.folded.capacity()
            + self.starts.capacity() * size_of::<usize>()
    }

    /// Nothing found.
    pub fn clear(&mut self) {
        self.names.clear();
        self.descriptors.clear();
    }
}

impl Lexicon {
    pub fn new(names: &[NamePattern], descriptors: &PhraseSet) -> Lexicon {
        let mut forms: Vec<&str> = Vec::new();
        let mut meanings: Vec<Vec<(List, usize)>> = Vec::new();
        let lists = names
            .iter()
            .enumerate()
            .map(|(i, p)| (List::Names, i, p))
            .chain(
                descriptors
                    .items
                    .iter()
                    .enumerate()
                    .map(|(i, d)| (List::Descriptors, i, &d.pattern)),
            );
        for (list, i, p) in lists {
            for form in std::iter::once(p.phrase.as_str()).chain(p.compact.as_deref()) {
                if form.is_empty() {
                    continue;
                }
                match forms.iter().position(|f| *f == form) {
                    Some(k) => meanings[k].push((list, i)),
                    None => {
                        forms.push(form);
                        meanings.push(vec![(list, i)]);
                    }
                }
            }
        }
        let automaton = (!forms.is_empty()).then(|| Patterns::new(&forms, false));
        let mut pairs = vec![0u64; 128 * 128 / 64];
        let mut triples = vec![0u64; (37 * 37 * 37usize).div_ceil(64)];
        let folded_bytes: Vec<u8> = (b'a'..=b'z').chain(b'0'..=b'9').chain([b' ']).collect();
        for form in &forms {
            let f = form.as_bytes();
            let mark = |bits: &mut Vec<u64>, a: u8, b: u8, c: u8| {
                if let Some(t) = triple(a, b, c) {
                    bits[t / 64] |= 1 << (t % 64);
                }
            };
            match *f {
                [a, b, c, ..] => mark(&mut triples, a, b, c),
                // A whole word: a space (or the end) follows.
                [a, b] => mark(&mut triples, a, b, b' '),
                [a] => {
                    for &b in &folded_bytes {
                        for &c in &folded_bytes {
                            mark(&mut triples, a, b, c);
                        }
                    }
                }
                [] => {}
            }
        }
        for form in &forms {
            let seconds = match *form.as_bytes() {
                [a, b, ..] if a.is_ascii() && b.is_ascii() => b..=b,
                [a] if a.is_ascii() => 0..=127,
                _ => continue,
            };
            for b in seconds {
                let bit = usize::from(form.as_bytes()[0]) * 128 + usize::from(b);
                pairs[bit / 64] |= 1 << (bit % 64);
            }
        }
        let mut first_then_space = [false; 37];
        for form in &forms {
            if let [a, rest @ ..] = form.as_bytes() {
                if (rest.is_empty() || rest[0] == b' ') && a.is_ascii_alphanumeric() {
                    first_then_space[usize::from(CODE[usize::from(*a)])] = true;
                }
            }
        }
        Lexicon {
            automaton,
            meanings,
            pairs,
            triples,
            first_then_space,
        }
    }

    /// Could some name or descriptor be in `text` (whose `masks` have been
    /// read) as whole words? False only when none can: no word of an
    /// ASCII text starts as any form does. Text with non-ASCII characters
    /// is not looked at (folding may change its length).
    pub fn may_hold(&self, text: &str, masks: &Masks) -> bool {
        if self.automaton.is_none() {
            return false;
        }
        if masks.profile & bytes::NON_ASCII != 0 {
            return true;
        }
        if masks.profile & bytes::APOSTROPHE == 0 {
            self.may_hold_masked(text.as_bytes(), masks)
        } else {
            self.may_hold_ascii(text.as_bytes())
        }
    }

    /// Is this pair of folded bytes how some form starts?
    fn pair(&self, first: u8, second: u8) -> bool {
        let bit = usize::from(first & 0x7f) * 128 + usize::from(second & 0x7f);
        self.pairs[bit / 64] & (1 << (bit % 64)) != 0
    }

    /// Could a form start at some word of `s` (ASCII, no apostrophes)? The
    /// words are found from the masks: a letter or digit with none before
    /// it.
    fn may_hold_masked(&self, s: &[u8], masks: &Masks) -> bool {
        // Whether the byte before the current mask word is a letter or digit.
        let mut carry = 0u64;
        for (w, &alnum) in masks.alnum.iter().enumerate() {
            let mut starts = alnum & !((alnum << 1) | carry);
            carry = alnum >> 63;
            while starts != 0 {
                let i = w * 64 + starts.trailing_zeros() as usize;
                starts &= starts - 1;
                // This byte and the next two as folded (ASCII without
                // apostrophes: each byte is a letter or digit, or stands
                // for a space, as does the text's end).
                let code = |k: usize| s.get(k).map_or(SPACE, |&x| CODE[usize::from(x)]);
                let (first, second) = (code(i), code(i + 1));
                let hit = if second == SPACE {
                    // A one-letter word: what follows the space may be
                    // further on; the first letter decides.
                    self.first_then_space[usize::from(first)]
                } else {
                    let t = (usize::from(first) * 37 + usize::from(second)) * 37
                        + usize::from(code(i + 2));
                    self.triples
                        .get(t / 64)
                        .is_some_and(|w| w & (1 << (t % 64)) != 0)
                };
                if hit {
                    return true;
                }
            }
        }
        false
    }

    /// Could a form start at some word of `s` (ASCII)? Its words' first
    /// two bytes, as folded, are looked up in `pairs`: most texts of a
    /// message have no word starting like any name or descriptor.
    fn may_hold_ascii(&self, s: &[u8]) -> bool {
        // Whether the last letter, digit or separator seen was a letter or
        // digit (apostrophes fold to nothing: `women's` is one word).
        let mut in_word = false;
        for (i, &b) in s.iter().enumerate() {
            let c = FOLD[usize::from(b & 0x7f)];
            if c > DROP {
                if !in_word {
                    // The folded byte after the first: a letter or digit,
                    // or a space for whatever else follows (or nothing).
                    let next = s
                        .get(i + 1..)
                        .unwrap_or_default()
                        .iter()
                        .map(|&x| FOLD[usize::from(x & 0x7f)])
                        .find(|&x| x != DROP);
                    let second = next.filter(|&x| x > DROP).unwrap_or(b' ');
                    if self.pair(c, second) {
                        return true;
                    }
                }
                in_word = true;
            } else if c == 0 {
                in_word = false;
            }
        }
        false
    }

    /// The names and descriptors present as whole words in `folded`
    /// (text already folded by [`normalise`]).
    pub fn find(&self, folded: &str, found: &mut Found) {
        found.starts.clear();
        if let Some(a) = &self.automaton {
            let b = folded.as_bytes();
            found.starts.extend(
                (0..b.len()).filter(|&i| (i == 0 || b[i - 1] == b' ') && a.may_start(b[i])),
            );
        }
        self.find_at_starts(folded.as_bytes(), found);
    }

    /// Fold `text` as [`normalise`] does and find the names and
    /// descriptors present in it as whole words. ASCII text is folded, and
    /// its promising word starts noted, in one pass, and only if one of
    /// its words starts like a form. `masks` are the text's.
    pub fn fold_and_find(&self, text: &str, masks: &Masks, found: &mut Found) {
        let mut folded = std::mem::take(&mut found.folded);
        folded.clear();
        found.starts.clear();
        if let Some(a) = &self.automaton {
            if masks.profile & bytes::NON_ASCII == 0 {
                if !self.may_hold(text, masks) {
                    found.clear();
                    found.folded = folded;
                    return;
                }
                let starts = &mut found.starts;
                fold_ascii_noting(text.as_bytes(), &mut folded, |at, b| {
                    if a.may_start(b) {
                        starts.push(at);
                    }
                });
            } else {
                folded.extend_from_slice(normalise(text).as_bytes());
                let b = &folded;
                found.starts.extend(
                    (0..b.len()).filter(|&i| (i == 0 || b[i - 1] == b' ') && a.may_start(b[i])),
                );
            }
        }
        self.find_at_starts(&folded, found);
        found.folded = folded;
    }

    /// The whole-word forms starting at `found.starts` in `b`.
    fn find_at_starts(&self, b: &[u8], found: &mut Found) {
        found.names.clear();
        found.descriptors.clear();
        found.matches.clear();
        let Some(automaton) = &self.automaton else {
            return;
        };
        let (meanings, matches) = (&self.meanings, &mut found.matches);
        for &at in &found.starts {
            automaton.prefixes(&b[at..], |n, pattern| {
                let e = at + n;
                if e == b.len() || b[e] == b' ' {
                    if let Some(meant) = meanings.get(pattern) {
                        matches.extend(meant.iter().map(|&(l, i)| (at, l, i)));
                    }
                }
            });
        }
        if matches.is_empty() {
            return;
        }
        matches.sort_unstable();
        for &(_, list, i) in matches.iter() {
            let into = match list {
                List::Names => &mut found.names,
                List::Descriptors => &mut found.descriptors,
            };
            if !into.contains(&i) {
                into.push(i);
            }
        }
    }
}

/// How [`fold_ascii_noting`] folds each ASCII byte: a letter or digit to
/// its lower case, an apostrophe to [`DROP`], anything else to 0 (it
/// separates words).
const FOLD: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        t[b] = if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else if c == b'\'' || c == b'`' {
            DROP
        } else {
            0
        };
        b += 1;
    }
    t
};

/// [`FOLD`] of a byte left out of the folded text.
const DROP: u8 = 1;

/// [`normalise`] of ASCII text into bytes, telling `word(at, first byte)`
/// where each word starts.
fn fold_ascii_noting(s: &[u8], out: &mut Vec<u8>, mut word: impl FnMut(usize, u8)) {
    // Folding never lengthens ASCII text: written in place, then cut.
    out.clear();
    out.resize(s.len(), 0);
    let mut n = 0;
    let mut pending_space = false;
    for &b in s {
        let c = FOLD[usize::from(b & 0x7f)];
        if c > DROP {
            if pending_space && n > 0 {
                out[n] = b' ';
                n += 1;
                word(n, c);
            } else if n == 0 {
                word(0, c);
            }
            pending_space = false;
            out[n] = c;
            n += 1;
        } else if c == 0 {
            pending_space = true;
        }
    }
    out.truncate(n);
}

/// Is `word` (a short folded descriptor) a token of its own in `raw`? Tokens
/// are split at spaces and SIP punctuation; inside one, words are split at
/// `.`, `-`, `_`, `/`, `+` (`dv-shelter-pbx.local`). A long token mixing
/// upper case, lower case and digits is an encoded blob (base64, a tag):
/// letters in it are chance, not words.
pub fn short_token_in(raw: &str, word: &str) -> bool {
    raw.split(|c: char| {
        c.is_whitespace()
            || matches!(
                c,
                '<' | '>'
                    | '"'
                    | '\''
                    | ';'
                    | ','
                    | '@'
                    | ':'
                    | '='
                    | '('
                    | ')'
                    | '['
                    | ']'
                    | '{'
                    | '}'
                    | '?'
                    | '&'
                    | '|'
                    | '!'
                    | '*'
                    | '#'
                    | '%'
                    | '^'
                    | '~'
                    | '`'
            )
    })
    .filter(|tok| {
        let blob = tok.len() >= 16
            && tok.bytes().any(|b| b.is_ascii_uppercase())
            && tok.bytes().any(|b| b.is_ascii_lowercase())
            && tok.bytes().any(|b| b.is_ascii_digit());
        !blob
    })
    .any(|tok| {
        tok.split(|c: char| !c.is_alphanumeric())
            .any(|w| normalise(w) == word)
    })
}

/// Whole-word containment on folded text.
pub fn contains_words(hay: &str, needle: &str) -> bool {
    word_match(hay, needle).is_some()
}

/// The byte range of the first whole-word occurrence of `needle` in `hay`.
/// Only the starts of words are tried: texts here are short, and building
/// a substring searcher for each would cost more than the search.
fn word_match(hay: &str, needle: &str) -> Option<(usize, usize)> {
    if needle.is_empty() {
        return None;
    }
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    let mut s = 0;
    while s + n.len() <= h.len() {
        let e = s + n.len();
        if &h[s..e] == n && (e == h.len() || h[e] == b' ') {
            return Some((s, e));
        }
        // The next word start: after the next space.
        match h[s..].iter().position(|b| *b == b' ') {
            Some(k) => s += k + 1,
            None => break,
        }
    }
    None
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
    if s.is_ascii() {
        return is_anonymous_ascii(s.as_bytes());
    }
    anonymous_folded(&normalise(s))
}

/// [`is_anonymous_text`] of ASCII text, folded a word at a time as
/// [`normalise`] folds it, without building the folded text.
fn is_anonymous_ascii(s: &[u8]) -> bool {
    // Every marker and filler word is shorter than this.
    const LONGEST: usize = 16;
    let (mut core, mut count) = (false, 0usize);
    // The words in order, for the two phrases made of fillers alone.
    let mut phrase = [ANON_PHRASE_NONE; 3];
    let mut word = [0u8; LONGEST];
    let mut len = 0usize;
    let mut end_word = |word: &[u8]| -> bool {
        let Ok(w) = std::str::from_utf8(word) else {
            return false;
        };
        let is_core = ANON_CORE.contains(&w);
        if !is_core && !ANON_FILLER.contains(&w) {
            return false;
        }
        core |= is_core;
        if let Some(p) = phrase.get_mut(count) {
            *p = match w {
                "out" => 0,
                "of" => 1,
                "area" => 2,
                "no" => 3,
                "caller" => 4,
                "id" => 5,
                _ => ANON_PHRASE_NONE,
            };
        }
        count += 1;
        true
    };
    for &b in s {
        if b.is_ascii_alphanumeric() {
            match word.get_mut(len) {
                Some(c) => *c = b.to_ascii_lowercase(),
                None => return false,
            }
            len += 1;
        } else if b != b'\'' && b != b'`' && len > 0 {
            if !end_word(&word[..len]) {
                return false;
            }
            len = 0;
        }
    }
    if len > 0 && !end_word(&word[..len]) {
        return false;
    }
    let exactly = |p: [u8; 3]| count == 3 && phrase == p;
    count > 0 && (core || exactly([0, 1, 2]) || exactly([3, 4, 5]))
}

/// A word of neither phrase (see [`is_anonymous_ascii`]).
const ANON_PHRASE_NONE: u8 = u8::MAX;

/// [`is_anonymous_text`] of folded text.
fn anonymous_folded(f: &str) -> bool {
    if f.is_empty() {
        return false;
    }
    let words = || f.split(' ');
    let core = words().any(|w| ANON_CORE.contains(&w));
    let out_of_area = f == "out of area";
    let no_caller_id = f == "no caller id";
    (core || out_of_area || no_caller_id)
        && words().all(|w| ANON_CORE.contains(&w) || ANON_FILLER.contains(&w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymity_read_word_by_word_as_when_folded_whole() {
        let words = [
            "anonymous",
            "Anonymous",
            "ANON",
            "with'held",
            "Number",
            "caller",
            "ID",
            "out",
            "of",
            "area",
            "no",
            "x",
            "Restricted",
            "presentationpresentation",
            "unavailable",
            "",
            "'",
            "`",
            "-",
            " ",
            "  ",
            ".",
            "0",
            "private!",
            "n\u{e9}",
        ];
        let mut texts: Vec<String> = Vec::new();
        for a in words {
            for b in words {
                for sep in ["", " ", "-", "'", "  ", "\"", "<>"] {
                    texts.push(format!("{a}{sep}{b}"));
                    texts.push(format!("{sep}{a}{sep}{b}{sep}{a}"));
                }
            }
        }
        texts.extend(
            [
                "Out of Area",
                "out-of-area",
                "No Caller ID",
                "no caller id x",
                "of area",
                "out of area out of area",
            ]
            .map(String::from),
        );
        for t in texts.iter().filter(|t| t.is_ascii()) {
            assert_eq!(
                is_anonymous_ascii(t.as_bytes()),
                anonymous_folded(&normalise(t)),
                "{t:?}"
            );
        }
    }

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

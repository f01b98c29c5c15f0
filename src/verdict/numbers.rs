//! Phone numbers: reading the configured numbers and ranges, and finding them
//! in whatever form they take inside a SIP message.
//!
//! Configured numbers are parsed once with the `phonenumber` crate (Google's
//! libphonenumber metadata), which tells us each number's country code,
//! national significant number (NSN), the region's trunk and international
//! prefixes and, for fixed lines, where the area code ends. Matching then
//! runs on plain digit strings with an interval index, so a 1,000-number
//! range list costs a binary search per candidate, not a scan.
//!
//! A candidate digit string matches only if one whole interpretation of it is
//! a configured number: E.164 with or without `+`, after an international
//! prefix (`00`, `0011`, `011`...), national with the trunk prefix, the bare
//! NSN, or (only as a stand-alone token) the local subscriber number of a
//! fixed line; the trunk prefix kept after the country code (`+61 (0)3 7010
//! 0142`, `0061 03 ...`) is the same number. A digit run that merely shares
//! digits with a configured number never matches.
//!
//! The same module owns how numbers are *written*: [`fold`] turns what people
//! paste (no-break spaces, Unicode dashes, full-width digits) into plain
//! characters, [`dialable`] is the one place a configured number becomes what
//! goes on the wire, and [`in_context`] is the one reading of an RFC 3966
//! `phone-context`, used for identity headers and the free-text scan alike.

use std::str::FromStr;

use phonenumber::country;
use phonenumber::metadata::DATABASE;

use super::bytes::Masks;

/// Why a configured number could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    #[error("unknown region {0:?}")]
    UnknownRegion(String),
    #[error("not a phone number ({0})")]
    Unparseable(String),
    #[error("the range end {end:?} must have at most as many digits as the number and not be below its start")]
    BadRange { end: String },
    #[error("the number is too short to be matched safely (fewer than 4 national digits)")]
    TooShort,
}

/// Why a number, a dial prefix or a dial template can't go on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialableError {
    #[error("it is empty")]
    Empty,
    #[error("{0:?} is a letter: a number is digits, a leading +, * and #, with spaces, dashes, dots or brackets between them")]
    Letter(char),
    #[error("{0:?} can't be dialled: a number is digits, a leading +, * and #, with spaces, dashes, dots or brackets between them")]
    Character(char),
    #[error("a + can only come first (it means an international number)")]
    Plus,
    #[error("it has no digits")]
    NoDigits,
}

/// What people paste into numbers, folded to what it means: Unicode spaces
/// (no-break, thin, narrow, ideographic) and zero-width characters to a
/// space, Unicode dashes and minus signs to `-`, full-width digits, plus,
/// brackets and dot to ASCII. Everything else is left alone (and refused
/// later if it can't be in a number).
pub fn fold(c: char) -> char {
    match c {
        '\t'
        | '\u{00A0}'
        | '\u{2000}'..='\u{200B}'
        | '\u{202F}'
        | '\u{205F}'
        | '\u{2060}'
        | '\u{3000}'
        | '\u{FEFF}' => ' ',
        '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{FE58}' | '\u{FE63}' | '\u{FF0D}' => '-',
        '\u{FF0B}' => '+',
        '\u{FF08}' => '(',
        '\u{FF09}' => ')',
        '\u{FF0E}' => '.',
        // Full-width digits: the offset keeps them in 0-9.
        '\u{FF10}'..='\u{FF19}' => char::from_u32(c as u32 - 0xFF10 + u32::from(b'0')).unwrap_or(c),
        _ => c,
    }
}

/// Visual separators people put between digits: RFC 3966's `-`, `.`, `(`,
/// `)`, and the space and slash they type.
fn is_visual(c: char) -> bool {
    matches!(c, ' ' | '-' | '.' | '(' | ')' | '/')
}

/// The dial string of a number as written: what goes in a Request-URI's
/// user part. Visual separators go (also the no-break spaces and Unicode
/// dashes people paste), a trunk prefix kept after the country code goes
/// (`+61 (0)3 9999 0000`, `+61 03 ...`, `0061 (0)3 ...` dial `+61399990000`
/// and `0061399990000`), `*` and `#` stay, and the leading `+` or the
/// national form stays as written: the PBX's dial plan decides what it
/// accepts, and the user wrote what the line would dial. Letters and other
/// characters are refused. `region` (ISO 3166) says which international
/// prefix to recognise besides `00`.
pub fn dialable(text: &str, region: Option<&str>) -> Result<String, DialableError> {
    let (plus, mut kept) = dial_chars(text)?;
    if kept.is_empty() {
        return Err(DialableError::NoDigits);
    }
    // A service code (`*67`, `#31#`) is not a phone number: as written.
    if !kept.contains(['*', '#']) {
        let idd = if plus {
            Some(0)
        } else {
            international_prefix_len(&kept, region)
        };
        if let Some(idd) = idd {
            if let Some((cc, trunk)) = trunk_after_code(&kept[idd..]) {
                kept.replace_range(idd + cc..idd + cc + trunk, "");
            }
        }
    }
    Ok(format!("{}{kept}", if plus { "+" } else { "" }))
}

/// The characters of a dial string as written, without the visual
/// separators: whether it starts with `+`, and the digits, `*` and `#`.
/// Letters and other characters are refused; the result may be empty.
pub fn dial_chars(text: &str) -> Result<(bool, String), DialableError> {
    let folded: String = text.chars().map(fold).collect();
    let t = folded.trim();
    if t.is_empty() {
        return Err(DialableError::Empty);
    }
    let mut plus = false;
    let mut kept = String::with_capacity(t.len());
    for c in t.chars() {
        match c {
            '0'..='9' | '*' | '#' => kept.push(c),
            '+' if !plus && kept.is_empty() => plus = true,
            '+' => return Err(DialableError::Plus),
            c if is_visual(c) => {}
            c if c.is_alphabetic() => return Err(DialableError::Letter(c)),
            c => return Err(DialableError::Character(c)),
        }
    }
    Ok((plus, kept))
}

/// Length of the international prefix a digit string starts with: `00`
/// anywhere, and the region's own (`0011` in Australia, `011` in North
/// America).
fn international_prefix_len(digits: &str, region: Option<&str>) -> Option<usize> {
    let own = region
        .and_then(region_id)
        .and_then(|id| DATABASE.by_id(id.as_ref()))
        .and_then(|m| m.preferred_international_prefix())
        .filter(|p| p.len() >= 2 && p.bytes().all(|b| b.is_ascii_digit()));
    let mut prefixes: Vec<&str> = own.into_iter().collect();
    prefixes.push("00");
    prefixes
        .into_iter()
        .find(|p| digits.len() > p.len() + 4 && digits.starts_with(p))
        .map(str::len)
}

/// The trunk (national) prefix of the country a code belongs to: `0` for
/// +61 and +44, none for +39 (Italian numbers keep their 0).
fn trunk_for(code: u16) -> Option<String> {
    let metas = DATABASE.by_code(&code)?;
    let main = metas
        .iter()
        .find(|m| m.is_main_country_for_code())
        .or(metas.first())?;
    main.national_prefix()
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_string)
}

/// A trunk prefix kept after the country code in an E.164 digit string
/// (`610399990000`): the lengths of the code and of the trunk prefix. The
/// number plan decides, as libphonenumber reads a number: only a country
/// with a trunk prefix, and only when what follows is still long enough to
/// be a number there (`+7 800 ...` keeps its 8).
fn trunk_after_code(e164: &str) -> Option<(usize, usize)> {
    let n = phonenumber::parse(None, format!("+{e164}")).ok()?;
    let code = n.code().value();
    let cc = code.to_string();
    let trunk = trunk_for(code)?;
    let nsn = nsn_digits(&n);
    let rest = e164
        .strip_prefix(cc.as_str())?
        .strip_prefix(trunk.as_str())?;
    // The parser strips a trunk prefix whenever what is left is not too
    // short; a length the plan allows is asked for too, so `+7 800 ...`
    // (Russia's trunk prefix is 8) keeps its 8.
    (rest == nsn && possible_length(&n, nsn.len())).then_some((cc.len(), trunk.len()))
}

/// A configured number as the phone-number parser should see it: folded,
/// and an international number written with `00` read as one (`0061 3 ...`
/// is `+61 3 ...` whatever the region's own international prefix).
fn read_number(text: &str, region: country::Id) -> Option<phonenumber::PhoneNumber> {
    let folded: String = text.chars().map(fold).collect();
    let t = folded.trim();
    let digits: String = t.chars().filter(char::is_ascii_digit).collect();
    let parsed = phonenumber::parse(Some(region), t).ok();
    let international = parsed
        .as_ref()
        .is_some_and(|n| n.code().source() != country::Source::Default);
    if !international && !t.starts_with('+') && digits.starts_with("00") {
        let rest = t.trim_start_matches(|c: char| c == '0' || is_visual(c));
        if let Ok(n) = phonenumber::parse(None, format!("+{rest}")) {
            return Some(n);
        }
    }
    parsed
}

/// The forms a PBX or carrier may deliver a number configured as `text`
/// in (a Request-URI user part, reduced to its digits): the dial string as
/// written, E.164 without `+`, and for a number of the home region its
/// national form with the trunk prefix and, when long enough to be safe,
/// without. Empty when `text` is not a number (a user name).
pub fn delivered_forms(text: &str, region: &str) -> Vec<String> {
    let Ok(dial) = dialable(text, Some(region)) else {
        return Vec::new();
    };
    let mut out = vec![dial.trim_start_matches('+').to_string()];
    let (Some(id), false) = (region_id(region), dial.contains(['*', '#'])) else {
        return out;
    };
    let Some(n) = read_number(&dial, id) else {
        return out;
    };
    let cc = n.code().value();
    let nsn = nsn_digits(&n);
    // An extension ("4000") is not a phone number to reformat.
    if nsn.len() < 6 {
        return out;
    }
    let mut forms = vec![format!("{cc}{nsn}")];
    if let Some(home) = DATABASE
        .by_id(id.as_ref())
        .filter(|m| m.country_code() == cc)
    {
        if let Some(t) = home.national_prefix() {
            forms.push(format!("{t}{nsn}"));
        }
        forms.push(nsn);
    }
    for f in forms {
        if !out.contains(&f) {
            out.push(f);
        }
    }
    out
}

/// How a number in a URI is read, the one way cidguard reads it everywhere
/// (identity headers and the free-text scan): a global number (`+...`) is
/// E.164 and its context is ignored; a local number with a global-number
/// `phone-context` (`tel:02-9000-0000;phone-context=+61`) is the context's
/// digits followed by its own (RFC 3966 section 5.1.5), here +61 0 2 9000
/// 0000, which the trunk rule reads as +61 2 9000 0000; a local number with
/// a domain-name context, or none, is read in the organisation's region.
/// Returns the digits and whether they are E.164.
pub fn in_context(digits: &str, plus: bool, context: Option<&str>) -> (String, bool) {
    match context.and_then(global_context) {
        Some(c) if !plus => (format!("{c}{digits}"), true),
        _ => (digits.to_string(), plus),
    }
}

/// The digits of a global-number `phone-context` (`+61`, `+61-3`); None for
/// a domain name or anything else.
pub fn global_context(context: &str) -> Option<String> {
    let rest = context.trim().strip_prefix('+')?;
    let digits: String = rest.chars().filter(|c| !is_visual(*c)).collect();
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
}

/// The number a URI's user part (or a tel: URI's number) holds, read with
/// its `phone-context` as [`in_context`] does: `number` is the part before
/// any `;`, with visual separators. None when it is not all digits.
pub fn read_uri_number(number: &str, context: Option<&str>) -> Option<(String, bool)> {
    let compact: String = number
        .chars()
        .map(fold)
        .filter(|c| !is_visual(*c))
        .collect();
    let (plus, digits) = match compact.strip_prefix('+') {
        Some(d) => (true, d),
        None => (false, compact.as_str()),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(in_context(digits, plus, context))
}

/// Look up an ISO 3166 region code (case-insensitive).
pub fn region_id(region: &str) -> Option<country::Id> {
    country::Id::from_str(&region.trim().to_ascii_uppercase()).ok()
}

/// Digits of a national number, keeping leading zeros (Italian numbers have them).
fn nsn_digits(n: &phonenumber::PhoneNumber) -> String {
    let nat = n.national();
    let zeros = "0".repeat(nat.zeros() as usize);
    format!("{zeros}{}", nat.value())
}

/// One configured entry, as the user wrote it and as parsed.
#[derive(Debug, Clone)]
pub struct NumberEntry {
    /// Exactly as written in the config, for reports.
    pub label: String,
    /// Index in the configured list.
    pub index: usize,
    pub country_code: u16,
    /// First and last NSN of the range (equal for a single number).
    pub first: String,
    pub last: String,
    /// Length of the area code when the number is a fixed line with one,
    /// so the local subscriber form can be matched.
    pub area_len: Option<usize>,
    /// The NSN has a length the numbering plan allows.
    pub possible_length: bool,
}

impl NumberEntry {
    /// E.164 form of the first number, for messages.
    pub fn e164(&self) -> String {
        format!("+{}{}", self.country_code, self.first)
    }
}

/// Interval indexes by (country code, length): a handful at most, so a
/// list searched in order, which is cheaper than hashing the key and keeps
/// the order they were made in.
#[derive(Debug, Default, Clone)]
struct Indexes(Vec<((u16, usize), IntervalIndex)>);

impl Indexes {
    fn get(&self, key: &(u16, usize)) -> Option<&IntervalIndex> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, ix)| ix)
    }

    fn entry(&mut self, key: (u16, usize)) -> &mut IntervalIndex {
        let at = match self.0.iter().position(|(k, _)| *k == key) {
            Some(at) => at,
            None => {
                self.0.push((key, IntervalIndex::default()));
                self.0.len() - 1
            }
        };
        &mut self.0[at].1
    }

    fn keys(&self) -> impl Iterator<Item = &(u16, usize)> {
        self.0.iter().map(|(k, _)| k)
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut IntervalIndex> {
        self.0.iter_mut().map(|(_, ix)| ix)
    }
}

/// Intervals of equal-length digit strings, searchable by value.
#[derive(Debug, Default, Clone)]
struct IntervalIndex {
    /// (first, last, entry index), sorted by first.
    spans: Vec<(u64, u64, usize)>,
    /// Running maximum of `last`, so overlapping ranges are still found.
    max_last: Vec<u64>,
}

impl IntervalIndex {
    fn finish(&mut self) {
        self.spans.sort_unstable();
        let mut m = 0;
        self.max_last = self
            .spans
            .iter()
            .map(|s| {
                m = m.max(s.1);
                m
            })
            .collect();
    }

    fn find(&self, v: u64) -> Option<usize> {
        let mut i = self.spans.partition_point(|s| s.0 <= v);
        while i > 0 {
            i -= 1;
            if self.max_last[i] < v {
                return None;
            }
            if self.spans[i].1 >= v {
                return Some(self.spans[i].2);
            }
        }
        None
    }
}

/// What a digit string was read as when it matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    International,
    InternationalPrefix,
    /// International (with `+` or a prefix) with the trunk prefix kept
    /// after the country code: `+61 (0)3 7010 0142`.
    InternationalTrunk,
    NationalTrunk,
    National,
    Local,
}

impl Form {
    pub fn describe(self) -> &'static str {
        match self {
            Form::International => "international (E.164) form",
            Form::InternationalPrefix => "form with an international dialling prefix",
            Form::InternationalTrunk => {
                "international form with the trunk prefix kept after the country code"
            }
            Form::NationalTrunk => "national form with trunk prefix",
            Form::National => "national number without trunk prefix",
            Form::Local => "local subscriber number",
        }
    }
}

/// A configured set of numbers and ranges with fast lookup.
#[derive(Debug, Clone, Default)]
pub struct NumberSet {
    pub entries: Vec<NumberEntry>,
    /// (country code, NSN length) -> intervals.
    full: Indexes,
    /// (country code, subscriber length) -> intervals of local numbers.
    local: Indexes,
    /// Country codes present (as text, for splitting E.164 digit strings),
    /// with their country's trunk prefix.
    codes: Vec<(String, u16, Option<String>)>,
    /// The home region's country code, trunk prefix and international prefixes.
    home_code: u16,
    trunk: Option<String>,
    intl_prefixes: Vec<String>,
    /// Lengths of the forms that may be found inside a longer digit run.
    windows: Vec<usize>,
    /// Bit n set: a digit string of length n may be some form of a
    /// configured number. Every other candidate is refused without a lookup.
    lengths: u32,
    /// For each length, bit n set (n the first two digits, 0 to 99): a
    /// digit string of that length starting so may be some form of a
    /// configured number. Most digit strings in a message (addresses,
    /// ports, timestamps) are refused here.
    leads: [u128; MAX_CANDIDATE + 1],
    /// The shortest length in `lengths`: a digit sequence with fewer digits
    /// in all can only match in a phone-context or a window.
    shortest: usize,
    /// The narrowest of `windows` (usize::MAX without any): only a digit
    /// group longer than this is searched for a number buried inside it.
    narrowest: usize,
    /// `leads` of every length together: a digit sequence none of whose
    /// groups starts so holds no span worth copying.
    any_lead: u128,
}

/// Length of the longest digit string worth looking at (E.164 max is 15,
/// plus an international prefix of up to 4 digits).
const MAX_CANDIDATE: usize = 19;

impl NumberSet {
    /// Parse one configured number or range, to validate config.
    pub fn parse_one(text: &str, region: &str) -> Result<Vec<NumberEntry>, NumberError> {
        let id = region_id(region).ok_or_else(|| NumberError::UnknownRegion(region.into()))?;
        parse_entry(text, id, 0)
    }

    /// Build the set. Entries that don't parse are skipped (config validation
    /// reports them before we get here).
    pub fn new<S: AsRef<str>>(numbers: &[S], region: &str) -> Result<NumberSet, NumberError> {
        let id = region_id(region).ok_or_else(|| NumberError::UnknownRegion(region.into()))?;
        let meta = DATABASE.by_id(id.as_ref());
        let home_code = meta.map(|m| m.country_code()).unwrap_or(0);
        let trunk = meta.and_then(|m| m.national_prefix()).map(str::to_string);
        let mut intl_prefixes: Vec<String> = ["00", "011", "0011", "010", "001"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Some(p) = meta.and_then(|m| m.preferred_international_prefix()) {
            if p.bytes().all(|b| b.is_ascii_digit()) && !intl_prefixes.iter().any(|x| x == p) {
                intl_prefixes.push(p.to_string());
            }
        }
        // Longest first so `0011` is tried before `00`.
        intl_prefixes.sort_by_key(|p| std::cmp::Reverse(p.len()));

        let mut set = NumberSet {
            home_code,
            trunk,
            intl_prefixes,
            ..Default::default()
        };
        for (i, text) in numbers.iter().enumerate() {
            set.entries.extend(parse_entry(text.as_ref(), id, i)?);
        }
        for (idx, e) in set.entries.iter().enumerate() {
            let (Ok(a), Ok(b)) = (e.first.parse::<u64>(), e.last.parse::<u64>()) else {
                continue;
            };
            set.full
                .entry((e.country_code, e.first.len()))
                .spans
                .push((a, b, idx));
            if let Some(al) = e.area_len {
                if let (Ok(la), Ok(lb)) =
                    (e.first[al..].parse::<u64>(), e.last[al..].parse::<u64>())
                {
                    // A range that crosses an area-code boundary can't be
                    // expressed as one local interval; it can't happen with
                    // ranges that only vary the last digits, but be safe.
                    if e.first[..al] == e.last[..al] {
                        set.local
                            .entry((e.country_code, e.first.len() - al))
                            .spans
                            .push((la, lb, idx));
                    }
                }
            }
            if !set.codes.iter().any(|c| c.1 == e.country_code) {
                set.codes.push((
                    e.country_code.to_string(),
                    e.country_code,
                    trunk_for(e.country_code),
                ));
            }
        }
        for ix in set.full.values_mut().chain(set.local.values_mut()) {
            ix.finish();
        }
        set.windows = set.window_lengths();
        set.lengths = set.candidate_lengths();
        set.leads = set.lead_digits();
        set.shortest = set.lengths.trailing_zeros() as usize;
        set.any_lead = set.leads.iter().fold(0, |all, m| all | m);
        set.narrowest = set.windows.iter().copied().min().unwrap_or(usize::MAX);
        Ok(set)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn lookup_full(&self, cc: u16, nsn: &str) -> Option<usize> {
        if nsn.is_empty() || nsn.len() > 17 {
            return None;
        }
        let ix = self.full.get(&(cc, nsn.len()))?;
        ix.find(nsn.parse().ok()?)
    }

    /// The match for entry `i`, seen as national number `nsn` of `cc`.
    fn matched(&self, i: usize, form: Form, cc: u16, nsn: &str) -> Option<NumberMatch<'_>> {
        Some(NumberMatch {
            entry: &self.entries[i],
            form,
            seen: format!("+{cc}{nsn}"),
        })
    }

    /// An E.164 digit string (after `+` or an international prefix, `idd`).
    fn lookup_e164(&self, digits: &str, idd: bool) -> Option<NumberMatch<'_>> {
        for (text, cc, trunk) in &self.codes {
            let Some(rest) = digits.strip_prefix(text.as_str()) else {
                continue;
            };
            if let Some(i) = self.lookup_full(*cc, rest) {
                let form = if idd {
                    Form::InternationalPrefix
                } else {
                    Form::International
                };
                return self.matched(i, form, *cc, rest);
            }
            // The trunk prefix kept after the country code, as people write
            // it ("+61 (0)3 7010 0142", "0061 03 ..."): the same number.
            if let Some(nsn) = trunk.as_ref().and_then(|t| rest.strip_prefix(t.as_str())) {
                if let Some(i) = self.lookup_full(*cc, nsn) {
                    return self.matched(i, Form::InternationalTrunk, *cc, nsn);
                }
            }
        }
        None
    }

    /// Does this digit string (as found in a message) denote a configured
    /// number? `plus` says it was written with a leading `+` (so it can only
    /// be E.164); `standalone` says it is a whole token, which allows the
    /// local subscriber form.
    pub fn match_digits(
        &self,
        digits: &str,
        plus: bool,
        standalone: bool,
    ) -> Option<NumberMatch<'_>> {
        if self.entries.is_empty()
            || digits.len() < 4
            || digits.len() > MAX_CANDIDATE
            || self.lengths & (1 << digits.len()) == 0
            || lead(digits).is_some_and(|n| self.leads[digits.len()] & (1 << n) == 0)
        {
            return None;
        }
        if plus {
            return self.lookup_e164(digits, false);
        }
        for p in &self.intl_prefixes {
            if let Some(rest) = digits.strip_prefix(p.as_str()) {
                if let Some(m) = self.lookup_e164(rest, true) {
                    return Some(m);
                }
            }
        }
        if let Some(m) = self.lookup_e164(digits, false) {
            return Some(m);
        }
        let home = self.home_code;
        if let Some(t) = &self.trunk {
            if let Some(rest) = digits.strip_prefix(t.as_str()) {
                if let Some(i) = self.lookup_full(home, rest) {
                    return self.matched(i, Form::NationalTrunk, home, rest);
                }
            }
        }
        if let Some(i) = self.lookup_full(home, digits) {
            return self.matched(i, Form::National, home, digits);
        }
        if standalone && digits.len() >= 6 {
            if let Some(ix) = self.local.get(&(home, digits.len())) {
                if let Some(i) = digits.parse().ok().and_then(|v| ix.find(v)) {
                    let e = &self.entries[i];
                    let area = e.area_len.and_then(|a| e.first.get(..a)).unwrap_or("");
                    return self.matched(i, Form::Local, home, &format!("{area}{digits}"));
                }
            }
        }
        None
    }

    /// Every length [`NumberSet::match_digits`] can match, as a bit mask: a
    /// national number, after its country code (with or without a kept
    /// trunk prefix, after any international prefix), after the home trunk
    /// prefix, and the local subscriber numbers.
    fn candidate_lengths(&self) -> u32 {
        let home_trunk = self.trunk.as_ref().map_or(0, |t| t.len());
        let mut mask = 0u32;
        let mut set = |l: usize| {
            if l <= MAX_CANDIDATE {
                mask |= 1 << l;
            }
        };
        for &(cc, len) in self.full.keys() {
            let (cc_len, kept) = self
                .codes
                .iter()
                .find(|c| c.1 == cc)
                .map_or((0, 0), |c| (c.0.len(), c.2.as_ref().map_or(0, |t| t.len())));
            set(len);
            set(len + home_trunk);
            for idd in std::iter::once(0).chain(self.intl_prefixes.iter().map(|p| p.len())) {
                set(idd + cc_len + len);
                set(idd + cc_len + kept + len);
            }
        }
        for &(_, len) in self.local.keys() {
            set(len);
        }
        mask
    }

    /// Every first two digits [`NumberSet::match_digits`] can match, as a
    /// bit mask for each length: of each form of each entry (its national
    /// number, after the trunk prefix, after its country code with or
    /// without a kept trunk prefix, after any international prefix, and its
    /// local subscriber number). More than can match (every form of every
    /// entry, whatever its country), never less.
    fn lead_digits(&self) -> [u128; MAX_CANDIDATE + 1] {
        let mut masks = [0u128; MAX_CANDIDATE + 1];
        // The first two digits of `prefix` followed by any number from
        // `first` to `last`.
        let mut add = |prefix: &str, first: &str, last: &str| {
            let p = prefix.as_bytes();
            let (f, l) = (first.as_bytes(), last.as_bytes());
            let digit = |b: u8| u32::from(b.wrapping_sub(b'0')).min(9);
            let (lo, hi) = match (p, f, l) {
                ([a, b, ..], _, _) => {
                    let n = digit(*a) * 10 + digit(*b);
                    (n, n)
                }
                ([a], [f0, ..], [l0, ..]) => {
                    (digit(*a) * 10 + digit(*f0), digit(*a) * 10 + digit(*l0))
                }
                ([], [f0, f1, ..], [l0, l1, ..]) => {
                    (digit(*f0) * 10 + digit(*f1), digit(*l0) * 10 + digit(*l1))
                }
                // Too short to be matched (fewer than four digits).
                _ => return,
            };
            // The ends of a range have the same length; should they not,
            // every length between them is marked.
            let (short, long) = (f.len().min(l.len()), f.len().max(l.len()));
            for len in (p.len() + short)..=(p.len() + long).min(MAX_CANDIDATE) {
                if let Some(mask) = masks.get_mut(len) {
                    for n in lo..=hi.max(lo) {
                        *mask |= 1 << n;
                    }
                }
            }
        };
        let home_trunk = self.trunk.as_deref().unwrap_or("");
        for e in &self.entries {
            let kept = self
                .codes
                .iter()
                .find(|c| c.1 == e.country_code)
                .and_then(|c| c.2.as_deref())
                .unwrap_or("");
            let cc = e.country_code.to_string();
            let mut prefixes = vec![String::new(), home_trunk.to_string()];
            for idd in std::iter::once("").chain(self.intl_prefixes.iter().map(String::as_str)) {
                prefixes.push(format!("{idd}{cc}"));
                prefixes.push(format!("{idd}{cc}{kept}"));
            }
            for p in &prefixes {
                add(p, &e.first, &e.last);
            }
            if let Some(al) = e.area_len {
                if let (Some(f), Some(l)) = (e.first.get(al..), e.last.get(al..)) {
                    add("", f, l);
                }
            }
        }
        masks
    }

    /// Lengths of the forms that may be found inside a longer digit run
    /// (never the local form: too short to be safe there).
    fn window_lengths(&self) -> Vec<usize> {
        let mut v: Vec<usize> = Vec::new();
        let trunk = self.trunk.as_ref().map_or(0, |t| t.len());
        for &(cc, len) in self.full.keys() {
            let cc_len = cc.to_string().len();
            // The trunk prefix kept after the country code makes one more.
            let kept = self
                .codes
                .iter()
                .find(|c| c.1 == cc)
                .and_then(|c| c.2.as_ref())
                .map_or(0, |t| t.len());
            for l in [len, len + cc_len, len + trunk, len + cc_len + kept] {
                if l >= 8 && !v.contains(&l) {
                    v.push(l);
                }
            }
        }
        v
    }

    /// Find every configured number in free text. Returns (entry, form, the
    /// text as it appeared).
    pub fn find_in(&self, text: &str) -> Vec<NumberHit<'_>> {
        let mut masks = Masks::default();
        masks.read(text.as_bytes());
        self.find_in_with(text, &masks, &mut Scratch::default())
    }

    /// [`NumberSet::find_in`] in a text whose [`Masks`] have been read, with
    /// buffers reused from text to text. The text is read a digit group at
    /// a time, found from the masks; nothing is allocated unless a number
    /// is found.
    pub fn find_in_with(
        &self,
        text: &str,
        masks: &Masks,
        scratch: &mut Scratch,
    ) -> Vec<NumberHit<'_>> {
        let mut out: Vec<NumberHit<'_>> = Vec::new();
        if self.entries.is_empty() {
            return out;
        }
        let b = text.as_bytes();
        let Scratch {
            groups,
            digits,
            before,
        } = scratch;
        groups.clear();
        let mut seq = Seq {
            plus: false,
            plus_at: 0,
            standalone: true,
        };
        // Digits in the sequence being read, and in its longest group.
        let (mut total, mut longest) = (0usize, 0usize);
        // Whether the text mentions a phone-context at all, once asked.
        let mut contexts = None;
        // With fewer digits in all than any form of a configured number
        // has, and none in a group longer than a window, only a
        // phone-context could make a number of them (most texts).
        let count: usize = masks.digit.iter().map(|w| w.count_ones() as usize).sum();
        if count < self.shortest && count <= self.narrowest {
            if !(b.contains(&b';') && mentions_phone_context(b)) {
                return out;
            }
            contexts = Some(true);
        }
        let mut i = 0;
        // Each group of digits, from the masks.
        while let Some(start) = Masks::next_set(&masks.digit, i) {
            i = masks.next_clear(&masks.digit, start);
            let len = i - start;
            // A short group with letters on both sides (the digits of an
            // encoded token, a hex tag) is a sequence of its own, too
            // short for any number and followed by no parameter: it is
            // passed over. (Letters stand between it and any other group,
            // so the groups around it are read as they would have been.)
            let letter = |k: usize| b.get(k).is_some_and(u8::is_ascii_alphabetic);
            if start > 0
                && letter(start - 1)
                && letter(i)
                && len < self.shortest
                && len <= self.narrowest
            {
                continue;
            }
            // Does this group continue the sequence being read? Groups join
            // when only a few visual separators stand between them.
            let joined = groups.last().is_some_and(|&(_, prev_end)| {
                let gap = b.get(prev_end..start).unwrap_or_default();
                if gap.len() <= 3 && !gap.is_empty() && gap.iter().all(|c| is_separator(*c)) {
                    true
                } else if gap.len() <= 12 && !gap.is_ascii() {
                    // What people paste: no-break spaces, Unicode dashes
                    // (at most three characters of at most four bytes).
                    // Both ends are ASCII digits, so this is whole
                    // characters.
                    let between = text.get(prev_end..start).unwrap_or("");
                    between.chars().count() <= 3
                        && between
                            .chars()
                            .map(fold)
                            .all(|c| c.is_ascii() && is_separator(c as u8))
                } else {
                    false
                }
            });
            if !joined {
                if let Some(&(_, end)) = groups.last() {
                    if self.worth_reading(b, end, total, longest) {
                        let buffers = (&mut *digits, &mut *before);
                        self.read_sequence(text, groups, &seq, buffers, &mut contexts, &mut out);
                    }
                    groups.clear();
                }
                (total, longest) = (0, 0);
                // Look back over an opening parenthesis or spaces for a '+'.
                let mut j = start;
                while j > 0 && matches!(b[j - 1], b'(' | b' ') && start - j < 2 {
                    j -= 1;
                }
                let plus = j > 0 && b[j - 1] == b'+';
                let before = if plus {
                    j.checked_sub(2)
                } else {
                    start.checked_sub(1)
                };
                let glued_before = before.is_some_and(|k| b[k].is_ascii_alphabetic());
                seq = Seq {
                    plus,
                    plus_at: if plus { j - 1 } else { start },
                    standalone: !glued_before,
                };
            }
            groups.push((start, i));
            total += len;
            longest = longest.max(len);
            if b.get(i).is_some_and(|c| c.is_ascii_alphabetic()) {
                seq.standalone = false;
            }
        }
        if let Some(&(_, end)) = groups.last() {
            if self.worth_reading(b, end, total, longest) {
                let buffers = (&mut *digits, &mut *before);
                self.read_sequence(text, groups, &seq, buffers, &mut contexts, &mut out);
            }
        }
        out
    }

    /// Can a digit sequence ending at `end` in `b`, with `total` digits and
    /// its longest group `longest` digits long, hold a configured number?
    /// Most sequences (ports, octets, counters, the digits of an encoded
    /// token) are too short for any form of one, whole or in a window, and
    /// are not followed by URI parameters that could give them a context:
    /// they are refused here, before they are read.
    fn worth_reading(&self, b: &[u8], end: usize, total: usize, longest: usize) -> bool {
        total >= self.shortest || longest > self.narrowest || b.get(end) == Some(&b';')
    }

    /// The configured number in one digit sequence (its `groups` of
    /// digits in `text`), if any, added to `out`.
    fn read_sequence<'s>(
        &'s self,
        text: &str,
        groups: &[(usize, usize)],
        seq: &Seq,
        (digits, before): (&mut String, &mut Vec<usize>),
        contexts: &mut Option<bool>,
        out: &mut Vec<NumberHit<'s>>,
    ) {
        let (Some(&(first_start, first_end)), Some(&(_, end))) = (groups.first(), groups.last())
        else {
            return;
        };
        let total: usize = groups.iter().map(|g| g.1 - g.0).sum();
        // After a '+' or an international prefix, a span from the middle
        // is the tail of a foreign number, not a national number.
        let first = &text[first_start..first_end];
        let anchored = seq.plus || first.starts_with("00") || first == "011";
        // A local number in a global phone-context (a tel: URI, a sip:
        // user part with user=phone) is read in that context and no
        // other way, as the identity headers read it.
        // Parameters follow the sequence in a URI, and the text names a
        // phone-context somewhere (looked for once per text, and only then).
        let may_have_context = text.as_bytes().get(end) == Some(&b';')
            && *contexts.get_or_insert_with(|| mentions_phone_context(text.as_bytes()));
        if !seq.plus && may_have_context {
            if let Some(ctx) = phone_context_after(text, end) {
                if global_context(ctx).is_some() {
                    let digits: String = groups.iter().map(|g| &text[g.0..g.1]).collect();
                    let (digits, plus) = in_context(&digits, false, Some(ctx));
                    if let Some(m) = self.match_digits(&digits, plus, seq.standalone) {
                        out.push(NumberHit {
                            number: m,
                            as_written: text[first_start..end].to_string(),
                        });
                    }
                    return;
                }
            }
        }
        // No span of a sequence shorter than every form can match, nor of
        // one none of whose groups (the first, if anchored) starts as some
        // form does (an address, a port, a timestamp, most of the time).
        let t = text.as_bytes();
        let starts = if anchored { &groups[..1] } else { groups };
        let some_lead = starts.iter().enumerate().any(|(k, g)| {
            let second = if g.1 - g.0 >= 2 {
                Some(g.0 + 1)
            } else {
                groups.get(k + 1).map(|h| h.0)
            };
            match (t.get(g.0), second.and_then(|j| t.get(j))) {
                (Some(a), Some(b)) => {
                    let lead =
                        u32::from(a.wrapping_sub(b'0')) * 10 + u32::from(b.wrapping_sub(b'0'));
                    lead >= 100 || self.any_lead & (1 << lead) != 0
                }
                // A lone digit: no span of four or more starts there.
                _ => false,
            }
        });
        if total >= self.shortest && some_lead {
            before.clear();
            before.push(0);
            for g in groups {
                before.push(before.last().copied().unwrap_or(0) + g.1 - g.0);
            }
            // Every contiguous span of groups, longest first, so "(03) 7010
            // 0142" is reported whole rather than as "7010 0142".
            for span in (1..=groups.len()).rev() {
                let last_start = if anchored { 0 } else { groups.len() - span };
                for i in 0..=last_start {
                    // Most spans can't be any form of a configured number:
                    // refused on their length before any digits are copied.
                    let len = before[i + span] - before[i];
                    if len > MAX_CANDIDATE || self.lengths & (1 << len) == 0 {
                        continue;
                    }
                    // Nor can most that pass: refused on their first two
                    // digits, as match_digits would.
                    let first = groups[i].0;
                    let second = if groups[i].1 - first >= 2 {
                        Some(first + 1)
                    } else {
                        groups.get(i + 1).map(|g| g.0)
                    };
                    if let (Some(a), Some(b)) = (t.get(first), second.and_then(|k| t.get(k))) {
                        let lead =
                            u32::from(a.wrapping_sub(b'0')) * 10 + u32::from(b.wrapping_sub(b'0'));
                        if lead < 100 && self.leads[len] & (1 << lead) == 0 {
                            continue;
                        }
                    }
                    digits.clear();
                    for g in &groups[i..i + span] {
                        digits.push_str(&text[g.0..g.1]);
                    }
                    let plus = i == 0 && seq.plus;
                    let standalone = seq.standalone && span == groups.len();
                    if let Some(m) = self.match_digits(digits, plus, standalone) {
                        let start = if plus { seq.plus_at } else { groups[i].0 };
                        out.push(NumberHit {
                            number: m,
                            as_written: text[start..groups[i + span - 1].1].to_string(),
                        });
                        return;
                    }
                }
            }
        }
        // A configured number buried in a longer run of digits
        // (`callid-0370100142169...`): look at windows of the full forms.
        for g in groups.iter().filter(|g| g.1 - g.0 > self.narrowest) {
            let run = &text[g.0..g.1];
            for &w in &self.windows {
                if run.len() <= w {
                    continue;
                }
                for s in 0..=(run.len() - w) {
                    // Refused on the first two digits, as match_digits would.
                    let r = run.as_bytes();
                    let lead = u32::from(r[s] - b'0') * 10 + u32::from(r[s + 1] - b'0');
                    if self.leads.get(w).is_none_or(|m| m & (1 << lead) == 0) {
                        continue;
                    }
                    if let Some(m) = self.match_digits(&run[s..s + w], false, false) {
                        out.push(NumberHit {
                            number: m,
                            as_written: run.to_string(),
                        });
                        return;
                    }
                }
            }
        }
    }
}

/// The first two digits of a digit string as a number (0 to 99), if it
/// starts with two ASCII digits.
fn lead(digits: &str) -> Option<u32> {
    match digits.as_bytes() {
        [a @ b'0'..=b'9', b @ b'0'..=b'9', ..] => {
            Some(u32::from(a - b'0') * 10 + u32::from(b - b'0'))
        }
        _ => None,
    }
}

/// Buffers [`NumberSet::find_in_with`] reuses from text to text.
#[derive(Debug, Default)]
pub struct Scratch {
    /// Byte ranges of the digit groups of the sequence being read.
    groups: Vec<(usize, usize)>,
    /// A candidate's digits, run together.
    digits: String,
    /// Digits before each group of the sequence being read (and in all,
    /// last), so a span's length is one subtraction.
    before: Vec<usize>,
}

impl Scratch {
    /// The bytes its buffers hold on to.
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        self.groups.capacity() * size_of::<(usize, usize)>()
            + self.digits.capacity()
            + self.before.capacity() * size_of::<usize>()
    }
}

/// A configured number recognised in a digit string.
#[derive(Debug, Clone)]
pub struct NumberMatch<'a> {
    /// The configured entry (a single number or a range) it falls in.
    pub entry: &'a NumberEntry,
    /// How the digits were read.
    pub form: Form,
    /// The number actually seen, in E.164 (`+61370100150`): for a range,
    /// the number inside it, not the range's first.
    pub seen: String,
}

impl NumberMatch<'_> {
    /// The number seen and where it falls, for a finding:
    /// `+61370100150 (in the range configured as "+61 3 7010 0100-0199",
    /// read in national form with trunk prefix)`.
    pub fn describe(&self) -> String {
        let e = self.entry;
        let entry = if e.first == e.last {
            format!("configured as {:?}", e.label)
        } else {
            format!("in the range configured as {:?}", e.label)
        };
        format!("{} ({entry}, read in {})", self.seen, self.form.describe())
    }
}

/// A configured number found in text.
#[derive(Debug, Clone)]
pub struct NumberHit<'a> {
    /// What it is and how it was read.
    pub number: NumberMatch<'a>,
    /// The text as it appeared.
    pub as_written: String,
}

/// The `phone-context` value in the URI parameters right after a digit
/// sequence ending at `end` (`02-9000-0000;phone-context=+61>`), if any.
/// Does `text` say `phone-context` (in any case) anywhere? Without it no
/// [`phone_context_after`] can be found.
fn mentions_phone_context(text: &[u8]) -> bool {
    // From each hyphen (found a vector at a time), the word around it.
    memchr::memchr_iter(b'-', text).any(|k| {
        k.checked_sub(5)
            .and_then(|from| text.get(from..k + 8))
            .is_some_and(|w| w.eq_ignore_ascii_case(b"phone-context"))
    })
}

fn phone_context_after(text: &str, end: usize) -> Option<&str> {
    let rest = text.get(end..)?;
    if !rest.starts_with(';') {
        return None;
    }
    // The parameters end where the URI part does.
    let stop = rest
        .find(|c: char| matches!(c, '@' | '>' | '<' | ',' | '?' | '"') || c.is_whitespace())
        .unwrap_or(rest.len());
    rest[..stop].split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("phone-context").then_some(v)
    })
}

/// What is known of a digit sequence (digit groups joined by visual
/// separators) besides its groups.
#[derive(Debug)]
struct Seq {
    /// A `+` came right before the first group.
    plus: bool,
    /// Where the sequence is quoted from: its `+`, or its first digit.
    plus_at: usize,
    /// Not glued to letters on either side.
    standalone: bool,
}

fn is_separator(b: u8) -> bool {
    // RFC 3966 visual separators plus the space and slash people type.
    matches!(b, b' ' | b'-' | b'.' | b'(' | b')' | b'/')
}

fn parse_entry(
    text: &str,
    region: country::Id,
    index: usize,
) -> Result<Vec<NumberEntry>, NumberError> {
    let label = text.trim();
    // What people paste (no-break spaces, en dashes) reads as what it means.
    let folded: String = label.chars().map(fold).collect();
    let t = folded.trim();
    let labelled = |mut e: NumberEntry| {
        e.label = label.to_string();
        e
    };
    // A single number of a possible length first: "03-7010-0142" uses '-' as
    // a separator, not a range; "+61 3 7010 0100-0199" is too long to be one.
    let single = parse_single(t, region, index);
    if let Some(e) = single.as_ref().filter(|e| e.possible_length) {
        return Ok(vec![labelled(e.clone())]);
    }
    if let Some(r) = parse_range(t, region, index) {
        return r.map(|v| v.into_iter().map(labelled).collect());
    }
    single
        .map(|e| vec![labelled(e)])
        .ok_or_else(|| NumberError::Unparseable(label.to_string()))
}

fn parse_range(
    t: &str,
    region: country::Id,
    index: usize,
) -> Option<Result<Vec<NumberEntry>, NumberError>> {
    if let Some((start, end)) = t.rsplit_once('-') {
        let end_digits: String = end.chars().filter(|c| c.is_ascii_digit()).collect();
        let end_ok = !end_digits.is_empty()
            && end
                .chars()
                .all(|c| c.is_ascii_digit() || c == ' ' || c == '+');
        if end_ok {
            let mut e = parse_single(start.trim(), region, index)?;
            let bad = || {
                Some(Err(NumberError::BadRange {
                    end: end.trim().into(),
                }))
            };
            let last = if end.trim_start().starts_with('+') {
                match parse_single(end.trim(), region, index) {
                    Some(x) if x.country_code == e.country_code => x.first,
                    _ => return bad(),
                }
            } else if end_digits.len() <= e.first.len() {
                format!(
                    "{}{}",
                    &e.first[..e.first.len() - end_digits.len()],
                    end_digits
                )
            } else {
                return bad();
            };
            if last.len() != e.first.len() || last < e.first {
                return bad();
            }
            e.last = last;
            e.label = t.to_string();
            return Some(Ok(vec![e]));
        }
    }
    None
}

fn parse_single(text: &str, region: country::Id, index: usize) -> Option<NumberEntry> {
    if !text.chars().any(|c| c.is_ascii_digit())
        || !text
            .chars()
            .all(|c| c.is_ascii_digit() || " +-.()/".contains(c))
    {
        return None;
    }
    let n = read_number(text, region)?;
    let nsn = nsn_digits(&n);
    if nsn.len() < 4 || nsn.len() > 17 {
        return None;
    }
    // Only accept what the parser read as a whole: "+61 3 7010 0100-0199"
    // must not parse as one long number.
    let input_digits: String = text.chars().filter(|c| c.is_ascii_digit()).collect();
    if !input_digits.ends_with(&nsn) {
        return None;
    }
    Some(NumberEntry {
        label: text.to_string(),
        index,
        country_code: n.code().value(),
        first: nsn.clone(),
        last: nsn.clone(),
        area_len: area_code_len(&n, &nsn),
        possible_length: possible_length(&n, nsn.len()),
    })
}

/// Is `len` a national-number length the number's plan allows (for any
/// kind of number)?
fn possible_length(n: &phonenumber::PhoneNumber, len: usize) -> bool {
    n.metadata(&DATABASE).is_some_and(|m| {
        let d = m.descriptors();
        let len = len as u16;
        [
            Some(d.general()),
            d.fixed_line(),
            d.mobile(),
            d.toll_free(),
            d.voip(),
            d.uan(),
            d.shared_cost(),
            d.personal_number(),
        ]
        .into_iter()
        .flatten()
        .any(|x| x.possible_length().contains(&len))
    })
}

/// Area-code length of a fixed-line number, read from its national format
/// ("(03) 7010 0142" -> 1 digit after the trunk prefix). None for mobiles and
/// numbers without an area code, and when the rest would be under 6 digits.
fn area_code_len(n: &phonenumber::PhoneNumber, nsn: &str) -> Option<usize> {
    use phonenumber::Type;
    match n.number_type(&DATABASE) {
        Type::FixedLine | Type::FixedLineOrMobile => {}
        _ => return None,
    }
    let national = n.format().mode(phonenumber::Mode::National).to_string();
    let first_group: String = national
        .trim_start_matches(|c: char| !c.is_ascii_digit())
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    let meta = n.metadata(&DATABASE)?;
    let trunk = meta.national_prefix().unwrap_or("");
    let area = first_group.strip_prefix(trunk).unwrap_or(&first_group);
    let len = area.len();
    if len == 0 || len >= nsn.len() || nsn.len() - len < 6 || !nsn.starts_with(area) {
        return None;
    }
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org() -> NumberSet {
        NumberSet::new(&["+61 3 7010 0142", "+61 3 7010 0100-0199"], "AU").unwrap()
    }

    #[test]
    fn configured_forms_parse() {
        let s = org();
        assert_eq!(s.entries.len(), 2);
        assert_eq!(s.entries[0].first, "370100142");
        assert_eq!(s.entries[1].first, "370100100");
        assert_eq!(s.entries[1].last, "370100199");
        assert_eq!(s.entries[0].area_len, Some(1));
    }

    #[test]
    fn separators_are_not_ranges() {
        let e = NumberSet::parse_one("03-7010-0142", "AU").unwrap();
        assert_eq!(e[0].first, e[0].last);
    }

    #[test]
    fn finds_every_form() {
        let s = org();
        for t in [
            "+61370100142",
            "61370100142",
            "0370100142",
            "(03) 7010-0142",
            "03 7010 0142",
            "0011 61 3 7010 0142",
            "+61 (3) 7010 0142",
            "sip:370100142@x",
            "7010 0142",
            "abc0370100142xyz",
            "+61 3 7010 0150",
            // Pasted: no-break spaces, an en dash, a non-breaking hyphen.
            "+61\u{a0}3\u{a0}7010\u{a0}0142",
            "(03) 7010\u{2013}0142",
            "03\u{2011}7010\u{2011}0142",
        ] {
            assert!(!s.find_in(t).is_empty(), "{t} should match");
        }
    }

    #[test]
    fn near_misses_do_not_match() {
        let s = org();
        for t in [
            "+61 3 7010 0242",
            "+61 2 7010 0142",
            "0142",
            "a84b4c76e66710",
            "z9hG4bK70100142x",
            "+44 3 7010 0142",
            "+61 3 9000 0142",
            // The trunk rule reads only a configured number's own digits.
            "+61 (0)3 7010 0242",
            "+44 (0)3 7010 0142",
            "+610270100142",
            "00610370100242",
            // A local number in another country's context is that country's.
            "tel:03-7010-0142;phone-context=+44",
            "tel:7010-0142;phone-context=+612",
        ] {
            assert!(s.find_in(t).is_empty(), "{t} should not match");
        }
    }

    #[test]
    fn trunk_kept_after_the_country_code_is_the_same_number() {
        let s = org();
        for t in [
            "+61 (0)3 7010 0142",
            "+61 03 7010 0142",
            "+61-03-7010-0142",
            "+61 (0) 3 7010 0142",
            "0061 (0)3 7010 0142",
            "0011 61 (0)3 7010 0142",
            "+610370100142",
            "00610370100142",
            "sip:+610370100142@x",
        ] {
            let hits = s.find_in(t);
            assert_eq!(hits.len(), 1, "{t}: {hits:?}");
            assert_eq!(hits[0].number.seen, "+61370100142", "{t}");
            assert_eq!(hits[0].number.form, Form::InternationalTrunk, "{t}");
        }
        let m = s.match_digits("610370100142", true, true).unwrap();
        assert_eq!(m.form, Form::InternationalTrunk);
    }

    #[test]
    fn phone_context_is_read_one_way() {
        let s = org();
        for t in [
            "tel:7010-0142;phone-context=+613",
            "<tel:03-7010-0142;phone-context=+61>",
            "<tel:7010-0142;isub=1;phone-context=+61-3>",
            "sip:70100142;phone-context=+613@carrier.example;user=phone",
            "sip:0370100142;phone-context=+61@carrier.example;user=phone",
            // A domain-name context: read in the organisation's region.
            "tel:03-7010-0142;phone-context=carrier.example",
        ] {
            let hits = s.find_in(t);
            assert_eq!(hits.len(), 1, "{t}: {hits:?}");
            assert_eq!(hits[0].number.seen, "+61370100142", "{t}");
        }
        assert_eq!(
            in_context("0290000000", false, Some("+61")),
            ("610290000000".to_string(), true)
        );
        assert_eq!(
            in_context("61290000000", true, Some("+44")),
            ("61290000000".to_string(), true)
        );
        assert_eq!(
            in_context("90000000", false, Some("example.com")),
            ("90000000".to_string(), false)
        );
        assert_eq!(
            read_uri_number("02-9000-0000", Some("+61")),
            Some(("610290000000".to_string(), true))
        );
        assert_eq!(read_uri_number("anonymous", None), None);
    }

    /// A match inside a range names the number seen, not the range's first.
    #[test]
    fn a_range_hit_names_the_number_seen() {
        let s = org();
        let hits = s.find_in("call (03) 7010-0150 back");
        assert_eq!(hits[0].number.seen, "+61370100150");
        let d = hits[0].number.describe();
        assert!(
            d.starts_with("+61370100150 (in the range configured as \"+61 3 7010 0100-0199\""),
            "{d}"
        );
        let single = s.match_digits("61370100142", true, true).unwrap();
        assert!(
            single
                .describe()
                .starts_with("+61370100142 (configured as \"+61 3 7010 0142\""),
            "{}",
            single.describe()
        );
        let local = s.find_in("7010 0150");
        assert_eq!(local[0].number.seen, "+61370100150");
        assert_eq!(local[0].number.form, Form::Local);
    }

    #[test]
    fn configured_numbers_in_the_forms_people_write() {
        for written in [
            "+61 (0)3 7010 0142",
            "+61 03 7010 0142",
            "0061 3 7010 0142",
            "0011 61 3 7010 0142",
            "+61\u{a0}3\u{a0}7010\u{a0}0142",
            "+61 3 7010\u{2011}0142",
            "(03) 7010 0142",
        ] {
            let e = NumberSet::parse_one(written, "AU").unwrap();
            assert_eq!(
                (e[0].country_code, e[0].first.as_str()),
                (61, "370100142"),
                "{written}"
            );
            assert_eq!(e[0].label, written.trim());
        }
        let r = NumberSet::parse_one("+61 (0)3 7010 0100\u{2013}0199", "AU").unwrap();
        assert_eq!(
            (r[0].first.as_str(), r[0].last.as_str()),
            ("370100100", "370100199")
        );
    }

    #[test]
    fn dialable_forms() {
        for (written, dial) in [
            ("+61 3 9999 0000", "+61399990000"),
            ("+61 (0)3 9999 0000", "+61399990000"),
            ("+61 03 9999 0000", "+61399990000"),
            ("+610399990000", "+61399990000"),
            ("(03) 9999-0000", "0399990000"),
            ("0011 61 (0)3 9999 0000", "001161399990000"),
            ("0061 (0)3 9999 0000", "0061399990000"),
            ("+44 (0)20 7946 0000", "+442079460000"),
            ("+39 06 1234 5678", "+390612345678"),
            ("+7 800 555 3535", "+78005553535"),
            ("\u{ff0b}\u{ff16}\u{ff11} 3 9999 0000", "+61399990000"),
            ("*67", "*67"),
            ("#31#", "#31#"),
            ("  1831 ", "1831"),
        ] {
            assert_eq!(
                dialable(written, Some("AU")).as_deref(),
                Ok(dial),
                "{written}"
            );
        }
        assert_eq!(dialable("", None), Err(DialableError::Empty));
        assert_eq!(
            dialable("03 9999 OOOO", None),
            Err(DialableError::Letter('O'))
        );
        assert_eq!(dialable("61+3", None), Err(DialableError::Plus));
        assert_eq!(dialable("--", None), Err(DialableError::NoDigits));
        assert_eq!(
            dialable("03;9999", None),
            Err(DialableError::Character(';'))
        );
        assert_eq!(
            dialable("03\u{202e}9999", None),
            Err(DialableError::Character('\u{202e}'))
        );
    }

    #[test]
    fn delivered_forms_of_an_endpoint_number() {
        let f = delivered_forms("+61 3 9999 0000", "AU");
        for d in ["61399990000", "0399990000", "399990000"] {
            assert!(f.iter().any(|x| x == d), "{d} in {f:?}");
        }
        let f = delivered_forms("0399990000", "AU");
        assert!(f.iter().any(|x| x == "61399990000"), "{f:?}");
        // A foreign number has no national forms here.
        let f = delivered_forms("+44 20 7946 0000", "AU");
        assert_eq!(f, ["442079460000"]);
        assert!(delivered_forms("cidguard", "AU").is_empty());
        assert_eq!(delivered_forms("4000", "AU"), ["4000"]);
    }
}

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
//! fixed line. A digit run that merely shares digits with a configured number
//! never matches.

use std::collections::HashMap;
use std::str::FromStr;

use phonenumber::country;
use phonenumber::metadata::DATABASE;

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
    NationalTrunk,
    National,
    Local,
}

impl Form {
    pub fn describe(self) -> &'static str {
        match self {
            Form::International => "international (E.164) form",
            Form::InternationalPrefix => "form with an international dialling prefix",
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
    full: HashMap<(u16, usize), IntervalIndex>,
    /// (country code, subscriber length) -> intervals of local numbers.
    local: HashMap<(u16, usize), IntervalIndex>,
    /// Country codes present, as strings, for splitting E.164 digit strings.
    codes: Vec<String>,
    /// The home region's country code, trunk prefix and international prefixes.
    home_code: u16,
    trunk: Option<String>,
    intl_prefixes: Vec<String>,
    /// Lengths of the forms that may be found inside a longer digit run.
    windows: Vec<usize>,
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
                .or_default()
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
                            .or_default()
                            .spans
                            .push((la, lb, idx));
                    }
                }
            }
            let cc = e.country_code.to_string();
            if !set.codes.contains(&cc) {
                set.codes.push(cc);
            }
        }
        for ix in set.full.values_mut().chain(set.local.values_mut()) {
            ix.finish();
        }
        set.windows = set.window_lengths();
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

    fn lookup_e164(&self, digits: &str) -> Option<usize> {
        for cc in &self.codes {
            if let Some(rest) = digits.strip_prefix(cc.as_str()) {
                if let Ok(code) = cc.parse() {
                    if let Some(i) = self.lookup_full(code, rest) {
                        return Some(i);
                    }
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
    ) -> Option<(&NumberEntry, Form)> {
        if self.entries.is_empty() || digits.len() < 4 || digits.len() > MAX_CANDIDATE {
            return None;
        }
        let hit = |i: usize, f: Form| Some((&self.entries[i], f));
        if plus {
            return self
                .lookup_e164(digits)
                .and_then(|i| hit(i, Form::International));
        }
        for p in &self.intl_prefixes {
            if let Some(rest) = digits.strip_prefix(p.as_str()) {
                if let Some(i) = self.lookup_e164(rest) {
                    return hit(i, Form::InternationalPrefix);
                }
            }
        }
        if let Some(i) = self.lookup_e164(digits) {
            return hit(i, Form::International);
        }
        if let Some(t) = &self.trunk {
            if let Some(rest) = digits.strip_prefix(t.as_str()) {
                if let Some(i) = self.lookup_full(self.home_code, rest) {
                    return hit(i, Form::NationalTrunk);
                }
            }
        }
        if let Some(i) = self.lookup_full(self.home_code, digits) {
            return hit(i, Form::National);
        }
        if standalone && digits.len() >= 6 {
            if let Some(ix) = self.local.get(&(self.home_code, digits.len())) {
                if let Some(i) = digits.parse().ok().and_then(|v| ix.find(v)) {
                    return hit(i, Form::Local);
                }
            }
        }
        None
    }

    /// Lengths of the forms that may be found inside a longer digit run
    /// (never the local form: too short to be safe there).
    fn window_lengths(&self) -> Vec<usize> {
        let mut v: Vec<usize> = Vec::new();
        let trunk = self.trunk.as_ref().map_or(0, |t| t.len());
        for &(cc, len) in self.full.keys() {
            let cc_len = cc.to_string().len();
            for l in [len, len + cc_len, len + trunk] {
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
        let mut out: Vec<NumberHit<'_>> = Vec::new();
        if self.entries.is_empty() {
            return out;
        }
        let windows = &self.windows;
        for seq in digit_sequences(text) {
            let groups = &seq.groups;
            let mut found_in_seq = false;
            // After a '+' or an international prefix, a span from the middle
            // is the tail of a foreign number, not a national number.
            let first = &text[groups[0].0..groups[0].1];
            let anchored = seq.plus || first.starts_with("00") || first == "011";
            // Every contiguous span of groups, longest first, so "(03) 7010
            // 0142" is reported whole rather than as "7010 0142".
            'spans: for span in (1..=groups.len()).rev() {
                let last_start = if anchored { 0 } else { groups.len() - span };
                for i in 0..=last_start {
                    let digits: String = groups[i..i + span]
                        .iter()
                        .map(|g| &text[g.0..g.1])
                        .collect();
                    if digits.len() > MAX_CANDIDATE {
                        continue;
                    }
                    let plus = i == 0 && seq.plus;
                    let standalone = seq.standalone && span == groups.len();
                    if let Some((e, f)) = self.match_digits(&digits, plus, standalone) {
                        let start = if plus { seq.plus_at } else { groups[i].0 };
                        out.push(NumberHit {
                            entry: e,
                            form: f,
                            as_written: text[start..groups[i + span - 1].1].to_string(),
                        });
                        found_in_seq = true;
                        break 'spans;
                    }
                }
            }
            if found_in_seq {
                continue;
            }
            // A configured number buried in a longer run of digits
            // (`callid-0370100142169...`): look at windows of the full forms.
            for g in groups {
                let run = &text[g.0..g.1];
                for &w in windows {
                    if run.len() <= w {
                        continue;
                    }
                    for s in 0..=(run.len() - w) {
                        if let Some((e, f)) = self.match_digits(&run[s..s + w], false, false) {
                            out.push(NumberHit {
                                entry: e,
                                form: f,
                                as_written: run.to_string(),
                            });
                            found_in_seq = true;
                            break;
                        }
                    }
                    if found_in_seq {
                        break;
                    }
                }
            }
        }
        out
    }
}

/// A configured number found in text.
#[derive(Debug, Clone)]
pub struct NumberHit<'a> {
    pub entry: &'a NumberEntry,
    pub form: Form,
    pub as_written: String,
}

/// A run of digit groups joined by visual separators.
#[derive(Debug)]
struct DigitSeq {
    /// Byte ranges of the digit groups.
    groups: Vec<(usize, usize)>,
    /// A `+` came right before the first group.
    plus: bool,
    plus_at: usize,
    /// Not glued to letters on either side.
    standalone: bool,
}

fn is_separator(b: u8) -> bool {
    // RFC 3966 visual separators plus the space and slash people type.
    matches!(b, b' ' | b'-' | b'.' | b'(' | b')' | b'/')
}

/// Split text into sequences of digit groups. Groups join when only a few
/// visual separators stand between them.
fn digit_sequences(text: &str) -> Vec<DigitSeq> {
    let b = text.as_bytes();
    let mut out: Vec<DigitSeq> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let group = (start, i);
        // Does this group continue the previous sequence?
        let joined = match out.last_mut() {
            Some(seq) => {
                let prev_end = seq.groups.last().map_or(0, |g| g.1);
                let between = &b[prev_end..start];
                if !between.is_empty()
                    && between.len() <= 3
                    && between.iter().all(|&c| is_separator(c))
                {
                    seq.groups.push(group);
                    true
                } else {
                    false
                }
            }
            None => false,
        };
        if !joined {
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
            out.push(DigitSeq {
                groups: vec![group],
                plus,
                plus_at: if plus { j - 1 } else { start },
                standalone: !glued_before,
            });
        }
        if let Some(seq) = out.last_mut() {
            let glued_after = b.get(i).is_some_and(|c| c.is_ascii_alphabetic());
            if glued_after {
                seq.standalone = false;
            }
        }
    }
    out
}

fn parse_entry(
    text: &str,
    region: country::Id,
    index: usize,
) -> Result<Vec<NumberEntry>, NumberError> {
    let t = text.trim();
    // A single number of a possible length first: "03-7010-0142" uses '-' as
    // a separator, not a range; "+61 3 7010 0100-0199" is too long to be one.
    let single = parse_single(t, region, index);
    if let Some(e) = single.as_ref().filter(|e| e.possible_length) {
        return Ok(vec![e.clone()]);
    }
    if let Some(r) = parse_range(t, region, index) {
        return r;
    }
    single
        .map(|e| vec![e])
        .ok_or_else(|| NumberError::Unparseable(t.to_string()))
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
    let n = phonenumber::parse(Some(region), text).ok()?;
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
    let possible_length = n.metadata(&DATABASE).is_some_and(|m| {
        let d = m.descriptors();
        let len = nsn.len() as u16;
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
    });
    Some(NumberEntry {
        label: text.to_string(),
        index,
        country_code: n.code().value(),
        first: nsn.clone(),
        last: nsn.clone(),
        area_len: area_code_len(&n, &nsn),
        possible_length,
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
        ] {
            assert!(s.find_in(t).is_empty(), "{t} should not match");
        }
    }
}

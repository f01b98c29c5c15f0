//! Keeping the people the organisation called out of what is shown.
//!
//! The people a frontline service calls are survivors: a capture of real
//! calls names them in the To header, the Request-URI and anywhere a
//! number is carried. Before anything from a captured message is printed
//! or written as JSON, it goes through [`Redactor::text`]:
//!
//! - the called party as this INVITE names it (the Request-URI's user
//!   part, the To header, its display name, its words and its user part) is
//!   replaced wherever it appears, whole-word and case-insensitively;
//! - every other run of 6 or more digits (separators such as spaces,
//!   dashes, dots and brackets allowed between them, a leading `+` too)
//!   that is not one of the organisation's configured numbers (or an
//!   umbrella's) is replaced.
//!
//! Replacements are tokens `#h:` + 8 hex digits: a keyed hash (SHA-256
//! with a random salt chosen per run) of the digits, or of the lower-cased
//! text. The same number gives the same token within one run, so repeated
//! calls to one person can be grouped; a new run draws a new salt, so
//! tokens don't link across runs, and a token can't be turned back into a
//! number by trying every number without the salt. Dotted-quad IPv4
//! addresses are left alone (they identify hosts, not people); the
//! organisation's own numbers stay, since they are the leak.

use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::sip::header::{parse_name_addr, parse_uri, percent_decode};
use crate::verdict::names::normalise;
use crate::verdict::numbers::{NumberError, NumberSet};

/// Digit runs shorter than this are left alone (extensions, short codes,
/// ports, times).
const MIN_DIGITS: usize = 6;
/// Length of a token: `#h:` and 8 hex digits.
const TOKEN_HEX: usize = 8;
/// Words of a called party's name never treated as the name itself.
const NOT_NAMES: &[&str] = &[
    "sip",
    "sips",
    "tel",
    "user",
    "phone",
    "the",
    "and",
    "anonymous",
    "unknown",
    "private",
];

/// Redacts called parties and foreign numbers, with one salt per run.
#[derive(Debug)]
pub struct Redactor {
    /// Keys the hash; random per run unless given.
    salt: [u8; 16],
    /// The organisation's numbers and every line's umbrella numbers.
    own: NumberSet,
    /// Those numbers as written in the config (they appear in findings).
    labels: Vec<String>,
    /// Folded words of the organisation's and umbrellas' names: never a
    /// called party's private word.
    own_words: Vec<String>,
}

/// The called party of one INVITE: what must not appear, and its token.
#[derive(Debug, Default, Clone)]
pub struct Called {
    /// Lower-cased texts that name the called party, longest first (their
    /// tokens are made only when one is found: most texts hold none).
    secrets: Vec<String>,
    /// Token for the called party (Request-URI user, else To user).
    pub token: Option<String>,
    /// The called number's last digits (at most 8), to find it glued inside
    /// an identifier.
    digits: Vec<String>,
}

impl Redactor {
    /// A redactor for this config's organisation, with a random salt.
    pub fn new(cfg: &Config) -> Result<Redactor, NumberError> {
        Redactor::with_salt(cfg, rand::random())
    }

    /// A redactor with a given salt (tests; grouping across runs).
    pub fn with_salt(cfg: &Config, salt: [u8; 16]) -> Result<Redactor, NumberError> {
        let org = &cfg.organisation;
        let mut labels: Vec<String> = org.numbers.clone();
        let mut words: Vec<String> = Vec::new();
        let mut names: Vec<&str> = vec![org.name.as_str()];
        names.extend(org.names.iter().map(String::as_str));
        for l in &cfg.lines {
            if let Some(u) = &l.umbrella {
                labels.extend(u.numbers.iter().cloned());
                names.push(&u.name);
            }
        }
        for n in names {
            for w in normalise(n).split(' ') {
                if !w.is_empty() && !words.iter().any(|x| x == w) {
                    words.push(w.to_string());
                }
            }
        }
        labels.sort_by_key(|l| std::cmp::Reverse(l.len()));
        labels.dedup();
        Ok(Redactor {
            salt,
            own: NumberSet::new(&labels, &org.region)?,
            labels,
            own_words: words,
        })
    }

    /// The token for a value (digits if it is a number, else lower case).
    pub fn token(&self, value: &str) -> String {
        let key = normal_key(value);
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update(key.as_bytes());
        let d = h.finalize();
        let mut s = String::with_capacity(3 + TOKEN_HEX);
        s.push_str("#h:");
        for b in &d[..TOKEN_HEX / 2] {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// The called party of an INVITE, from its Request-URI and To value.
    pub fn called(&self, request_uri: Option<&str>, to: Option<&str>) -> Called {
        let mut secrets: Vec<String> = Vec::new();
        let mut token_of: Option<String> = None;
        if let Some(r) = request_uri {
            if let Some(u) = user_of(r) {
                token_of = Some(u.clone());
                push_forms(&mut secrets, &u);
            }
        }
        if let Some(to) = to {
            let to = to.trim();
            secrets.push(to.to_string());
            if let Ok(na) = parse_name_addr(to) {
                secrets.push(na.uri.clone());
                if let Some(u) = user_of(&na.uri) {
                    if token_of.is_none() {
                        token_of = Some(u.clone());
                    }
                    push_forms(&mut secrets, &u);
                }
                if let Some(d) = na
                    .display
                    .as_deref()
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                {
                    push_forms(&mut secrets, d);
                    for w in d.split(|c: char| !c.is_alphanumeric() && c != '\'') {
                        let folded = normalise(w);
                        if w.chars().count() >= 2
                            && !folded.is_empty()
                            && !NOT_NAMES.contains(&folded.as_str())
                            && !self.own_words.contains(&folded)
                        {
                            secrets.push(w.to_string());
                        }
                    }
                }
            }
        }
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        let mut digits: Vec<String> = Vec::new();
        for sec in &secrets {
            let k = normal_key(sec);
            if k.len() >= MIN_DIGITS && k.bytes().all(|b| b.is_ascii_digit()) {
                let tail = k[k.len().saturating_sub(8)..].to_string();
                if !digits.contains(&tail) {
                    digits.push(tail);
                }
            }
        }
        Called {
            secrets,
            token: token_of.map(|u| self.token(&u)),
            digits,
        }
    }

    /// Text from a captured message (a header value, a finding's detail, a
    /// Call-ID), made safe to show.
    pub fn text(&self, s: &str, called: &Called) -> String {
        let mut out = s.to_string();
        let mut lower = out.to_ascii_lowercase();
        for secret in &called.secrets {
            if !lower.contains(secret.as_str()) {
                continue;
            }
            // Same input, same token (the token lower-cases text itself).
            out = replace_words(&out, secret, &self.token(secret));
            lower = out.to_ascii_lowercase();
        }
        self.numbers(&out, &called.digits)
    }

    /// Replace every digit run that is not one of the organisation's numbers.
    fn numbers(&self, s: &str, called: &[String]) -> String {
        let b = s.as_bytes();
        if b.iter().filter(|c| c.is_ascii_digit()).count() < MIN_DIGITS {
            // No run can be long enough.
            return s.to_string();
        }
        let protected = self.protected(s);
        let mut out = String::with_capacity(s.len());
        let mut i = 0;
        let mut copied = 0;
        while i < b.len() {
            if let Some(&(_, end)) = protected.iter().find(|(a, e)| *a <= i && i < *e) {
                i = end;
                continue;
            }
            let starts = b[i].is_ascii_digit()
                || (b[i] == b'+' && b.get(i + 1).is_some_and(u8::is_ascii_digit));
            if !starts {
                i += 1;
                continue;
            }
            // A long hexadecimal identifier (a Call-ID, a tag, a branch) is
            // random, not a written number: it stays whole, so it can still
            // be looked up in the capture, unless the called number is
            // glued inside it.
            if let Some((ws, we)) = hex_word(b, i) {
                let word = &s[ws..we];
                if called.iter().any(|d| word.contains(d.as_str())) {
                    out.push_str(&s[copied..ws]);
                    out.push_str(&self.token(word));
                    copied = we;
                }
                i = we;
                continue;
            }
            // Digits inside any other word count (a number glued to text).
            let run = phone_run(b, i, &protected);
            for (a, e, digits) in self.foreign_parts(s, &run) {
                out.push_str(&s[copied..a]);
                out.push_str(&self.token(&digits));
                copied = e;
            }
            i = run.end.max(i + 1);
        }
        out.push_str(&s[copied..]);
        out
    }

    /// Byte ranges not to touch: configured numbers as written, and tokens.
    fn protected(&self, s: &str) -> Vec<(usize, usize)> {
        let mut v = Vec::new();
        for l in &self.labels {
            if l.is_empty() {
                continue;
            }
            for (at, _) in s.match_indices(l.as_str()) {
                v.push((at, at + l.len()));
            }
        }
        for (at, _) in s.match_indices("#h:") {
            v.push((at, (at + 3 + TOKEN_HEX).min(s.len())));
        }
        v.extend(dotted_quads(s.as_bytes()));
        v
    }

    /// The parts of a run to replace: (start, end, digits). The longest
    /// spans of groups that are the organisation's numbers stay; each
    /// stretch between them with enough digits goes.
    fn foreign_parts(&self, s: &str, run: &Run) -> Vec<(usize, usize, String)> {
        let g = &run.groups;
        if g.is_empty() {
            return Vec::new();
        }
        let total: usize = g.iter().map(|(a, e)| e - a).sum();
        if total < MIN_DIGITS {
            return Vec::new();
        }
        let digits = |from: usize, to: usize| -> String {
            g[from..to].iter().map(|(a, e)| &s[*a..*e]).collect()
        };
        // Which groups belong to one of the organisation's numbers.
        let mut own = vec![false; g.len()];
        let mut i = 0;
        while i < g.len() {
            let mut hit = 0;
            for span in (1..=g.len() - i).rev() {
                let d = digits(i, i + span);
                let plus = i == 0 && run.plus;
                let whole = span == g.len();
                if self.own.match_digits(&d, plus, whole).is_some() {
                    hit = span;
                    break;
                }
            }
            if hit > 0 {
                for o in own.iter_mut().skip(i).take(hit) {
                    *o = true;
                }
                i += hit;
            } else {
                i += 1;
            }
        }
        let mut parts = Vec::new();
        let mut i = 0;
        while i < g.len() {
            if own[i] {
                i += 1;
                continue;
            }
            let start = i;
            while i < g.len() && !own[i] {
                i += 1;
            }
            let d = digits(start, i);
            if d.len() >= MIN_DIGITS {
                let a = if start == 0 && run.plus {
                    run.start
                } else {
                    g[start].0
                };
                parts.push((a, g[i - 1].1, d));
            }
        }
        parts
    }
}

/// A run of digit groups with separators between them.
#[derive(Debug)]
struct Run {
    /// Where the run starts (at the `+` if there is one).
    start: usize,
    /// Just past its last digit.
    end: usize,
    plus: bool,
    /// Byte ranges of the digit groups.
    groups: Vec<(usize, usize)>,
}

/// IPv4 addresses written as dotted quads: hosts, not people.
fn dotted_quads(b: &[u8]) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let boundary = i == 0 || !(b[i - 1].is_ascii_digit() || b[i - 1] == b'.');
        if b[i].is_ascii_digit() && boundary {
            if let Some(end) = quad_at(b, i) {
                v.push((i, end));
                i = end;
                continue;
            }
        }
        i += 1;
    }
    v
}

/// The end of a dotted quad starting at `i`, if one does.
fn quad_at(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i;
    for part in 0..4 {
        let start = j;
        let mut value: u32 = 0;
        while j < b.len() && b[j].is_ascii_digit() && j - start < 3 {
            value = value * 10 + u32::from(b[j] - b'0');
            j += 1;
        }
        if j == start || value > 255 || b.get(j).is_some_and(u8::is_ascii_digit) {
            return None;
        }
        if part < 3 {
            if b.get(j) != Some(&b'.') {
                return None;
            }
            j += 1;
        }
    }
    // Not part of a longer dotted run (a version number, a date).
    let longer = b.get(j) == Some(&b'.') && b.get(j + 1).is_some_and(u8::is_ascii_digit);
    (!longer).then_some(j)
}

/// The bounds of the word around `i` when it is a long hexadecimal
/// identifier: 12 or more hex digits with at least one letter.
fn hex_word(b: &[u8], i: usize) -> Option<(usize, usize)> {
    let mut ws = i;
    while ws > 0 && b[ws - 1].is_ascii_alphanumeric() {
        ws -= 1;
    }
    let mut we = i;
    while we < b.len() && b[we].is_ascii_alphanumeric() {
        we += 1;
    }
    let w = &b[ws..we];
    (w.len() >= 12 && w.iter().all(u8::is_ascii_hexdigit) && w.iter().any(u8::is_ascii_alphabetic))
        .then_some((ws, we))
}

/// Visual separators allowed inside a written number.
fn is_sep(c: u8) -> bool {
    matches!(c, b' ' | b'-' | b'.' | b'(' | b')' | b'/')
}

/// The run starting at `i` (a digit or a `+` before one).
fn phone_run(b: &[u8], i: usize, protected: &[(usize, usize)]) -> Run {
    let plus = b[i] == b'+';
    let mut j = if plus { i + 1 } else { i };
    let mut groups = Vec::new();
    loop {
        let g0 = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        groups.push((g0, j));
        // Up to two separators, then another digit, continue the run.
        let mut k = j;
        while k < b.len() && k - j < 2 && is_sep(b[k]) {
            k += 1;
        }
        let continues = k > j
            && k < b.len()
            && b[k].is_ascii_digit()
            && !protected.iter().any(|(a, e)| *a <= k && k < *e);
        if !continues {
            break;
        }
        j = k;
    }
    let end = groups.last().map_or(j, |g| g.1);
    Run {
        start: i,
        end,
        plus,
        groups,
    }
}

/// The user part of a SIP/tel URI (or a bare one), percent-decoded, without
/// user parameters.
fn user_of(uri: &str) -> Option<String> {
    let u = parse_uri(uri.trim().trim_start_matches('<').trim_end_matches('>'));
    let user = u.user?;
    let user = user.split(';').next().unwrap_or(&user).trim().to_string();
    (!user.is_empty()).then(|| percent_decode(&user))
}

/// A value and the forms it may be written in elsewhere.
fn push_forms(secrets: &mut Vec<String>, v: &str) {
    secrets.push(v.to_string());
    let decoded = percent_decode(v);
    if decoded != v {
        secrets.push(decoded.clone());
    }
    if decoded.contains(' ') {
        secrets.push(decoded.replace(' ', "%20"));
    }
    // Quoted as in a display name.
    secrets.push(format!("\"{decoded}\""));
}

/// What a token hashes: the digits of a number, else the lower-cased text.
fn normal_key(v: &str) -> String {
    let t = v.trim();
    let compact: String = t.chars().filter(|c| !" -.()/+".contains(*c)).collect();
    if compact.len() >= 3 && compact.bytes().all(|b| b.is_ascii_digit()) {
        return compact;
    }
    t.to_lowercase()
}

/// Replace whole-word, ASCII-case-insensitive occurrences of `needle`
/// (already lower-cased).
fn replace_words(hay: &str, needle: &str, with: &str) -> String {
    if needle.is_empty() || hay.len() < needle.len() {
        return hay.to_string();
    }
    let lower = hay.to_ascii_lowercase();
    let nb = needle.as_bytes();
    let first_alnum = nb.first().is_some_and(u8::is_ascii_alphanumeric);
    let last_alnum = nb.last().is_some_and(u8::is_ascii_alphanumeric);
    let hb = lower.as_bytes();
    let mut out = String::with_capacity(hay.len());
    let mut copied = 0;
    let mut from = 0;
    while let Some(pos) = lower[from..].find(needle) {
        let at = from + pos;
        let end = at + needle.len();
        let ok_before = !first_alnum || at == 0 || !hb[at - 1].is_ascii_alphanumeric();
        let ok_after = !last_alnum || end >= hb.len() || !hb[end].is_ascii_alphanumeric();
        // Never inside a token already placed.
        let in_token = lower[..at]
            .rfind("#h:")
            .is_some_and(|t| at < t + 3 + TOKEN_HEX);
        if ok_before
            && ok_after
            && !in_token
            && hay.is_char_boundary(at)
            && hay.is_char_boundary(end)
        {
            out.push_str(&hay[copied..at]);
            out.push_str(with);
            copied = end;
            from = end;
        } else {
            from = at + lower[at..].chars().next().map_or(1, char::len_utf8);
        }
        if from >= lower.len() {
            break;
        }
    }
    out.push_str(&hay[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor() -> Redactor {
        let toml = r#"
[organisation]
name = "Eastside Women's Refuge"
region = "AU"
numbers = ["+61 3 7010 0142", "+61 3 7010 0100-0199"]
names = ["Eastside Refuge"]
hosts = ["pbx.eastside-refuge.org.au", "203.0.113.10"]

[[line]]
name = "outreach"
expect = "umbrella"
umbrella = { name = "Salvation Army", numbers = ["+61 2 9000 0000"] }
"#;
        let cfg = Config::from_toml(toml, std::path::Path::new("t.toml")).unwrap();
        Redactor::with_salt(&cfg, [7; 16]).unwrap()
    }

    #[test]
    fn foreign_numbers_go_the_organisations_stay() {
        let r = redactor();
        let none = Called::default();
        let t = r.text(
            "PAI <sip:+61370100142@pbx>, called 0491 570 156, (03) 9999-0000 and +61 2 9000 0000",
            &none,
        );
        assert!(t.contains("+61370100142"), "{t}");
        assert!(t.contains("+61 2 9000 0000"), "{t}");
        assert!(!t.contains("570"), "{t}");
        assert!(!t.contains("9999"), "{t}");
        // The same digits give the same token, however written.
        assert_eq!(r.token("0491570156"), r.token("0491 570 156"));
        assert!(t.contains(&r.token("0491570156")), "{t}");
        // Configured labels, ranges included, stay as written.
        let d = r.text("configured as \"+61 3 7010 0100-0199\"", &none);
        assert!(d.contains("+61 3 7010 0100-0199"), "{d}");
        // Short numbers, ports and addresses stay.
        let v = r.text(
            "SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bK77 ext 201",
            &none,
        );
        assert_eq!(v, "SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bK77 ext 201");
        // Hex identifiers stay whole, unless the called number is inside.
        let id = "9b9da519c2a66fd7a4e13@192.0.2.10";
        assert_eq!(r.text(id, &none), id);
        let c = r.called(Some("sip:0491570156@carrier"), None);
        let glued = r.text("a0491570156fe3b21@x and c0ffee1234567890@x", &c);
        assert!(!glued.contains("491570156"), "{glued}");
        assert!(glued.contains("c0ffee1234567890@x"), "{glued}");
        // Other words: digits glued to letters still go.
        assert!(!r.text("user0491570157", &none).contains("0491570157"));
        // An organisation number next to a foreign one: only the foreign goes.
        let m = r.text("+61370100142 0491570156", &none);
        assert!(m.starts_with("+61370100142 #h:"), "{m}");
    }

    #[test]
    fn the_called_party_goes_everywhere() {
        let r = redactor();
        let c = r.called(
            Some("sip:jane.citizen@carrier.example;user=phone"),
            Some("\"Jane Citizen\" <sip:jane.citizen@carrier.example>"),
        );
        let t = r.text(
            "To: \"Jane Citizen\" <sip:jane.citizen@carrier.example>; X-Note: call JANE about Citizen's case; Jane%20Citizen",
            &c,
        );
        let lower = t.to_lowercase();
        assert!(!lower.contains("jane"), "{t}");
        assert!(!lower.contains("citizen"), "{t}");
        assert_eq!(c.token, Some(r.token("jane.citizen")));
        // The organisation's own words are not the called party's.
        let c = r.called(None, Some("\"Eastside Clinic\" <sip:clinic@x>"));
        let t = r.text("Eastside Women's Refuge calling the Clinic", &c);
        assert!(t.contains("Eastside Women's Refuge"), "{t}");
        assert!(!t.contains("Clinic"), "{t}");
    }

    #[test]
    fn tokens_depend_on_the_salt() {
        let r = redactor();
        let toml = "[organisation]\nname = \"X\"\nregion = \"AU\"\n[[line]]\nname = \"l\"\nexpect = \"withheld\"\n";
        let cfg = Config::from_toml(toml, std::path::Path::new("t.toml")).unwrap();
        let other = Redactor::with_salt(&cfg, [8; 16]).unwrap();
        assert_ne!(r.token("0491570156"), other.token("0491570156"));
        assert_eq!(r.token("0491570156").len(), 11);
    }
}

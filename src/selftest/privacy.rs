//! The caller's privacy on a call-in: a number or name that is not the
//! organisation's or a device's (a worker's partner calling from home, a
//! wrong number) is never stored, logged or shown.
//!
//! Before a call-in's result leaves the endpoint's handler:
//! - a finding or presented identity that carries such a number gets the
//!   sentence [`NUMBER_NOT_KEPT`] instead (its kind and header stay, so the
//!   outcome and the summary are still right); a stranger's name gets
//!   [`NAME_NOT_KEPT`];
//! - the evidence keeps every header, but every run of 5 or more digits
//!   that is not a number [`Keep`] keeps is masked digit by digit, and
//!   display names in identity headers that are not the organisation's
//!   (or an umbrella's) are replaced.
//!
//! Evidence is kept (masked) rather than dropped: a leak from a worker's
//! phone is diagnosed from the headers that carried it (which header, with
//! what privacy flags, through which hosts), and those stay.
//!
//! What is said to the caller is built before this, from the verdict as
//! judged: reading the number back to the phone that sent it is the point
//! of the self-test.

use crate::plan::Keep;
use crate::sip::header::split_list;
use crate::verdict::names::is_anonymous_text;
use crate::verdict::{Kind, Verdict};

/// What a stranger's number is replaced with.
pub const NUMBER_NOT_KEPT: &str = "a number that is not the organisation's was shown (not kept)";
/// What a stranger's name is replaced with.
pub const NAME_NOT_KEPT: &str = "a name that is not the organisation's was shown (not kept)";
/// A display name or user part not kept, inside a header value.
const NOT_KEPT: &str = "(not kept)";
/// Digit runs shorter than this are left alone (ports, lengths, CSeq).
const MIN_DIGITS: usize = 5;

/// The masking character for a digit not kept.
const MASK: char = '•';

/// Whether text is a number (digits, with `+` and separators).
fn numeric(s: &str) -> bool {
    let s = s.split(';').next().unwrap_or_default().trim();
    let s = s.strip_prefix('+').unwrap_or(s);
    s.chars().any(|c| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_digit() || "-.() ".contains(c))
}

/// The digits of a number written with separators.
fn digits_of(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// Whether a dotted run is an IPv4 address (hosts are not people).
fn dotted_quad(run: &str) -> bool {
    let parts: Vec<&str> = run.split('.').collect();
    parts.len() == 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.chars().all(|c| c.is_ascii_digit()))
}

/// Mask every run of [`MIN_DIGITS`] or more digits (separators such as
/// spaces, dashes, dots and brackets allowed between them, a leading `+`
/// too) that is not a number `keep` keeps. IPv4 addresses stay.
pub fn mask_numbers(text: &str, keep: &Keep) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let starts =
            c.is_ascii_digit() || (c == '+' && chars.get(i + 1).is_some_and(char::is_ascii_digit));
        if !starts {
            out.push(c);
            i += 1;
            continue;
        }
        // The run: digits, and separators followed by more digits.
        let mut end = i + 1;
        let mut last_digit = if c.is_ascii_digit() { i } else { i + 1 };
        while end < chars.len() {
            let d = chars[end];
            if d.is_ascii_digit() {
                last_digit = end;
                end += 1;
            } else if " -.()".contains(d) {
                end += 1;
            } else {
                break;
            }
        }
        let end = last_digit + 1;
        let run: String = chars[i..end].iter().collect();
        let digits = digits_of(&run);
        let keep_it = digits.len() < MIN_DIGITS
            || dotted_quad(&run)
            || keep.number(&digits, run.starts_with('+'));
        if keep_it {
            out.push_str(&run);
        } else {
            out.extend(
                run.chars()
                    .map(|c| if c.is_ascii_digit() { MASK } else { c }),
            );
        }
        i = end;
    }
    out
}

/// A header value with display names not kept replaced, then numbers
/// masked.
fn scrub_identity_value(value: &str, keep: &Keep) -> String {
    let entries: Vec<String> = split_list(value)
        .into_iter()
        .map(|entry| {
            let trimmed = entry.trim_start();
            let (display, rest) = if let Some(body) = trimmed.strip_prefix('"') {
                // The closing quote, skipping escaped characters.
                let mut close = None;
                let mut escaped = false;
                for (i, ch) in body.char_indices() {
                    match ch {
                        _ if escaped => escaped = false,
                        '\\' => escaped = true,
                        '"' => {
                            close = Some(i);
                            break;
                        }
                        _ => {}
                    }
                }
                match close {
                    Some(i) => (Some(&body[..i]), &body[i + 1..]),
                    // Unterminated: the whole entry may be a name.
                    None => (Some(body), ""),
                }
            } else {
                match trimmed.find('<') {
                    Some(i) if i > 0 => (Some(trimmed[..i].trim()), &trimmed[i..]),
                    _ => (None, trimmed),
                }
            };
            match display {
                Some(d) if !keep.name(d) && !is_anonymous_text(d) => {
                    format!("\"{NOT_KEPT}\" {}", rest.trim_start())
                }
                _ => trimmed.to_string(),
            }
        })
        .collect();
    mask_numbers(&entries.join(", "), keep)
}

/// Headers that carry someone's identity (long and compact names).
const IDENTITY: [&str; 12] = [
    "from",
    "f",
    "to",
    "t",
    "contact",
    "m",
    "p-asserted-identity",
    "p-preferred-identity",
    "remote-party-id",
    "diversion",
    "history-info",
    "reply-to",
];

/// A captured message made safe to keep: identity headers' display names
/// not kept are replaced, and every number not kept is masked (headers and
/// body). Headers themselves all stay.
pub fn scrub_message(text: &str, keep: &Keep) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_body = false;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        let eol = &line[body.len()..];
        if body.is_empty() {
            in_body = true;
        }
        match body.split_once(':') {
            Some((name, value))
                if !in_body && IDENTITY.contains(&name.trim().to_ascii_lowercase().as_str()) =>
            {
                out.push_str(name);
                out.push_str(": ");
                out.push_str(&scrub_identity_value(value.trim(), keep));
                out.push_str(eol);
            }
            _ => {
                out.push_str(&mask_numbers(body, keep));
                out.push_str(eol);
            }
        }
    }
    out
}

/// A verdict on a call-in made safe to keep: see the module's notes.
pub fn scrub_verdict(v: &mut Verdict, keep: &Keep) {
    for f in &mut v.findings {
        let stranger = match f.kind {
            Kind::Presentation if numeric(&f.matched) => {
                let digits = digits_of(&f.matched);
                let plus = f.matched.trim_start().starts_with('+');
                (!keep.number(&digits, plus)).then_some(NUMBER_NOT_KEPT)
            }
            Kind::Presentation
                if !f.matched.trim().is_empty()
                    && !is_anonymous_text(&f.matched)
                    && !keep.name(&f.matched) =>
            {
                Some(NAME_NOT_KEPT)
            }
            _ => None,
        };
        match stranger {
            Some(sentence) => {
                let quoted = !f.matched.trim().is_empty();
                if quoted {
                    f.detail = f.detail.replace(&f.matched, NOT_KEPT);
                }
                f.matched = sentence.to_string();
                f.value = sentence.to_string();
                f.seen.clear();
            }
            None => {
                f.value = scrub_identity_value(&f.value, keep);
            }
        }
        f.detail = mask_numbers(&f.detail, keep);
        f.seen = mask_numbers(&f.seen, keep);
    }
    for id in &mut v.presented.identities {
        if let Some(d) = &id.display {
            if !keep.name(d) && !is_anonymous_text(d) {
                id.display = Some(NAME_NOT_KEPT.into());
            }
        }
        if let Some(u) = &id.user {
            let kept = if numeric(u) {
                keep.number(&digits_of(u), u.trim_start().starts_with('+'))
            } else {
                is_anonymous_text(u) || keep.name(u)
            };
            if !kept {
                id.user = Some(if numeric(u) {
                    NUMBER_NOT_KEPT.into()
                } else {
                    NAME_NOT_KEPT.into()
                });
            }
        }
    }
    for n in &mut v.notes {
        *n = mask_numbers(n, keep);
    }
    if let Some(r) = &mut v.reason {
        *r = mask_numbers(r, keep);
    }
}

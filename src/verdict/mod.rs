//! The verdict engine: from one received INVITE and a line's policy, decide
//! whether the organisation's identity leaked.
//!
//! ```text
//!   raw bytes ──parse──▶ Message ──┬─ identity headers (From, PAI, PPI, RPID): presentation rules
//!                                  ├─ Identity (PASSporT claims)
//!                                  ├─ every display name and name-like parameter: name rules
//!                                  ├─ every header, Request-URI, body: numbers / names / hosts / descriptors
//!                                  │    each also decoded (decode.rs): Content-Encoding, multipart,
//!                                  │    transfer encodings, RFC 2047 words, User-to-User, mojibake
//!                                  └─▶ Verdict { outcome, findings, notes }
//! ```
//!
//! Pure: no I/O, no async, no SIP-library types. A leak is a result
//! ([`Outcome::Fail`] with findings), not an error; anything that stops the
//! message being fully judged makes the outcome [`Outcome::Inconclusive`],
//! never [`Outcome::Pass`].
//!
//! The engine depends on nothing above it: it takes its own plain inputs
//! ([`OrgSpec`], [`LineSpec`]), which the configuration converts its types
//! into, and reads messages with [`crate::sip`]'s parser.

mod automaton;
mod bytes;
pub mod hosts;
pub mod names;
pub mod numbers;
mod passport;

use crate::sip::body as decode;
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::escape;
use crate::sip::header::{parse_name_addr, parse_uri, percent_decode, split_list, Uri};
use crate::sip::message::MessageRef;
use crate::sip::{self, Message, StartLine};
use hosts::HostSet;
use names::{contains_words, is_anonymous_text, normalise, Found, Lexicon, NamePattern, PhraseSet};
use numbers::{NumberError, NumberSet};

/// The organisation's identity as configured: what the engine protects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrgSpec {
    /// The organisation's real name (also matched as a name).
    pub name: String,
    /// More names and words that must never be shown.
    pub names: Vec<String>,
    /// Numbers and ranges (`+61 3 7010 0100-0199`) that must never be shown.
    pub numbers: Vec<String>,
    /// Domains and IP addresses that identify the organisation.
    pub hosts: Vec<String>,
    /// ISO 3166 region national-format numbers are read in (`AU`).
    pub region: String,
    /// Phrases that reveal the kind of service, added to the built-in list.
    pub descriptors: Vec<String>,
    /// Whether the built-in descriptors apply as well.
    pub default_descriptors: bool,
}

/// What a line must present to the called party.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    /// No number and no name: anonymous.
    Withheld,
    /// Only the umbrella agency's name, and its number or none.
    Umbrella,
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Expect::Withheld => "withheld",
            Expect::Umbrella => "umbrella",
        })
    }
}

/// One line as the engine judges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineSpec {
    /// The line's name, carried into its verdicts.
    pub name: String,
    /// What the line must present.
    pub expect: Expect,
    /// The identity it may show instead of its own, for `Umbrella`.
    pub umbrella: Option<UmbrellaSpec>,
}

/// The umbrella identity a line may present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UmbrellaSpec {
    /// The umbrella agency's name, as it should be displayed.
    pub name: String,
    /// Numbers it may present (read in the organisation's region); empty
    /// means the number must be withheld.
    pub numbers: Vec<String>,
}

/// The organisation's identity, compiled once and shared by every line.
#[derive(Debug)]
pub struct OrgMatcher {
    pub name: String,
    /// The region numbers are read in, for the lines' umbrella numbers.
    region: String,
    pub numbers: NumberSet,
    pub names: Vec<NamePattern>,
    pub hosts: HostSet,
    /// Phrases that reveal the kind of service ("shelter", "DV").
    pub descriptors: PhraseSet,
    /// `names` and all of `descriptors`, compiled for the free-text scan;
    /// shared by every line that judges all the descriptors.
    lexicon: Arc<Lexicon>,
}

/// The descriptors in force for an organisation, as written: the built-in
/// list (unless `default_descriptors = false`), then the configured ones.
pub fn descriptors_in_force(org: &OrgSpec) -> Vec<&str> {
    let builtin = if org.default_descriptors {
        names::DEFAULT_DESCRIPTORS
    } else {
        &[]
    };
    builtin
        .iter()
        .copied()
        .chain(org.descriptors.iter().map(String::as_str))
        .collect()
}

impl OrgMatcher {
    pub fn new(org: &OrgSpec) -> Result<OrgMatcher, NumberError> {
        let mut names: Vec<NamePattern> = Vec::new();
        for n in std::iter::once(&org.name).chain(org.names.iter()) {
            let p = NamePattern::new(n);
            if !p.phrase.is_empty() && !names.iter().any(|q| q.phrase == p.phrase) {
                names.push(p);
            }
        }
        let descriptors = PhraseSet::new(descriptors_in_force(org));
        Ok(OrgMatcher {
            lexicon: Arc::new(Lexicon::new(&names, &descriptors)),
            name: org.name.clone(),
            region: org.region.clone(),
            numbers: NumberSet::new(&org.numbers, &org.region)?,
            names,
            hosts: HostSet::new(&org.hosts),
            descriptors,
        })
    }
}

/// The umbrella identity a line may show.
#[derive(Debug)]
struct UmbrellaMatcher {
    name: String,
    pattern: NamePattern,
    numbers: NumberSet,
}

impl UmbrellaMatcher {
    /// Does a display name show the umbrella name? Case, spacing and
    /// punctuation don't matter, nor a cut to CNAM length.
    fn name_matches(&self, display: &str) -> bool {
        let f = normalise(display);
        f == self.pattern.phrase || self.pattern.truncated.contains(&f)
    }
}

/// Everything needed to judge one line's calls.
#[derive(Debug, Clone)]
pub struct Policy {
    pub line: String,
    pub expect: Expect,
    org: Arc<OrgMatcher>,
    umbrella: Option<Arc<UmbrellaMatcher>>,
    /// Only the organisation-wide rules (its numbers, names and hosts
    /// nowhere); no line's presentation rules. See [`Policy::organisation`].
    org_only: bool,
    /// The descriptors judged on this line: the organisation's, less any
    /// the line's umbrella name itself contains.
    descriptors: Arc<PhraseSet>,
    /// The organisation's names and `descriptors`, compiled for the scan.
    lexicon: Arc<Lexicon>,
    /// Descriptors left out on this line because the umbrella name has them.
    descriptors_dropped: Vec<String>,
}

impl Policy {
    pub fn new(org: Arc<OrgMatcher>, line: &LineSpec) -> Result<Policy, NumberError> {
        let umbrella = match &line.umbrella {
            Some(u) => Some(Arc::new(UmbrellaMatcher {
                name: u.name.clone(),
                pattern: NamePattern::new(&u.name),
                numbers: NumberSet::new(&u.numbers, &org.region)?,
            })),
            None => None,
        };
        // An umbrella line may show its umbrella name; a descriptor inside
        // that name ("Women's Refuge Network") can't be a leak there.
        let in_umbrella = |d: &names::Phrase| {
            umbrella.as_ref().is_some_and(|u| {
                let phrase = &u.pattern.phrase;
                contains_words(phrase, &d.pattern.phrase)
                    || d.pattern.compact.as_deref().is_some_and(|c| {
                        contains_words(phrase, c) || u.pattern.compact.as_deref() == Some(c)
                    })
            })
        };
        let dropped: Vec<String> = org
            .descriptors
            .items
            .iter()
            .filter(|d| in_umbrella(d))
            .map(|d| d.pattern.label.clone())
            .collect();
        let (descriptors, lexicon) = if dropped.is_empty() {
            (Arc::new(org.descriptors.clone()), org.lexicon.clone())
        } else {
            let d = org.descriptors.without(in_umbrella);
            let lexicon = Arc::new(Lexicon::new(&org.names, &d));
            (Arc::new(d), lexicon)
        };
        Ok(Policy {
            line: line.name.clone(),
            expect: line.expect,
            org,
            umbrella,
            org_only: false,
            descriptors,
            lexicon,
            descriptors_dropped: dropped,
        })
    }

    /// The organisation alone, for calls that may come from any line (a
    /// capture of real traffic): its numbers, names, hosts and service
    /// descriptors must appear nowhere, while rules that depend on a line
    /// (withheld or umbrella presentation) are not applied. `line` is empty.
    pub fn organisation(org: &OrgSpec) -> Result<Policy, NumberError> {
        let org = Arc::new(OrgMatcher::new(org)?);
        Ok(Policy {
            line: String::new(),
            expect: Expect::Withheld,
            descriptors: Arc::new(org.descriptors.clone()),
            lexicon: org.lexicon.clone(),
            descriptors_dropped: Vec::new(),
            org,
            umbrella: None,
            org_only: true,
        })
    }

    /// True for [`Policy::organisation`].
    pub fn is_organisation_only(&self) -> bool {
        self.org_only
    }

    /// The descriptors judged on this line, as written.
    pub fn descriptors(&self) -> impl Iterator<Item = &str> {
        self.descriptors
            .items
            .iter()
            .map(|d| d.pattern.label.as_str())
    }

    /// Descriptors not judged on this line because its umbrella name
    /// contains them.
    pub fn descriptors_not_applied(&self) -> &[String] {
        &self.descriptors_dropped
    }

    /// Policies for every line of an organisation, sharing its compiled
    /// identity. (The plan's `line_policies` does this for a
    /// validated config.)
    pub fn for_lines(org: &OrgSpec, lines: &[LineSpec]) -> Result<Vec<Policy>, NumberError> {
        let org = Arc::new(OrgMatcher::new(org)?);
        lines.iter().map(|l| Policy::new(org.clone(), l)).collect()
    }

    /// What the line should present, in words.
    pub fn expectation(&self) -> String {
        if self.org_only {
            return "the organisation's numbers, names and hosts nowhere (no line's presentation rules)".into();
        }
        match (&self.expect, &self.umbrella) {
            (Expect::Umbrella, Some(u)) if u.numbers.is_empty() => {
                format!("the umbrella name {:?} with the number withheld", u.name)
            }
            (Expect::Umbrella, Some(u)) => format!(
                "the umbrella name {:?} with no number or one of {}",
                u.name,
                u.numbers
                    .entries
                    .iter()
                    .map(|e| e.label.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => "no number and no name (withheld)".into(),
        }
    }
}

/// The result of judging one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
    Inconclusive,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Inconclusive => "inconclusive",
        })
    }
}

/// What kind of identity a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// One of the organisation's numbers.
    Number,
    /// One of the organisation's names.
    Name,
    /// One of the organisation's domains or addresses.
    Host,
    /// Not the organisation's identity as configured, but not what the line
    /// must present either (a number shown on a withheld line, a missing
    /// umbrella name).
    Presentation,
    /// Words that reveal the kind of service calling ("shelter", "DV"),
    /// whatever the organisation is called.
    Descriptor,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Number => "number",
            Kind::Name => "name",
            Kind::Host => "host",
            Kind::Presentation => "presentation",
            Kind::Descriptor => "descriptor",
        })
    }
}

impl Kind {
    /// What went wrong, as a report's heading says it: `number leaked`,
    /// `wrong presentation`, `kind of service leaked`.
    pub fn what_went_wrong(self) -> &'static str {
        match self {
            Kind::Number => "number leaked",
            Kind::Name => "name leaked",
            Kind::Host => "host leaked",
            Kind::Presentation => "wrong presentation",
            Kind::Descriptor => "kind of service leaked",
        }
    }
}

/// One place where identity showed up that should not have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Finding {
    /// Canonical header name, `Request-URI` or `SDP`.
    pub header: String,
    /// The header value (or body line) as received.
    pub value: String,
    pub kind: Kind,
    /// Whether phones or carriers typically display this place.
    pub shown: bool,
    /// A sentence saying what matched and why it matters.
    pub detail: String,
    /// The configured entry that matched (a number, name or host as written
    /// in the config), or the presented text for presentation findings.
    pub matched: String,
    /// The text as the message wrote it, when it differs from `matched`
    /// (a number inside a configured range, a name in capitals or cut to
    /// caller-name length); empty when they are the same or not known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub seen: String,
}

/// A person's view of one identity header entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PresentedIdentity {
    pub header: String,
    pub display: Option<String>,
    pub user: Option<String>,
    pub host: String,
}

impl fmt::Display for PresentedIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values from the wire: control characters escaped, cut short.
        match &self.display {
            Some(d) => write!(f, "{} ", quote(d))?,
            None => f.write_str("(no name) ")?,
        }
        let host = escape::clip(&self.host, 80);
        match (&self.user, self.host.is_empty()) {
            (Some(u), true) => write!(f, "tel:{}", escape::clip(u, 80)),
            (Some(u), false) => write!(f, "{}@{host}", escape::clip(u, 80)),
            (None, _) => write!(f, "{host}"),
        }
    }
}

/// What the call presented, for reports and drift detection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Presented {
    pub identities: Vec<PresentedIdentity>,
    /// The Privacy header values, if any.
    pub privacy: Option<String>,
    /// Names of the identity-bearing headers present, in order (the "shape").
    pub identity_headers: Vec<String>,
}

/// The verdict on one message for one line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Verdict {
    pub line: String,
    pub outcome: Outcome,
    pub expected: Expect,
    pub findings: Vec<Finding>,
    /// Why the outcome is inconclusive (None otherwise).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    /// Observations that don't change the outcome (Privacy values, parse
    /// oddities, a compact PASSporT).
    pub notes: Vec<String>,
    pub presented: Presented,
}

impl Verdict {
    /// A short summary for subjects and one-line reports:
    /// `number shown in From, name in P-Asserted-Identity`.
    pub fn summary(&self) -> String {
        summarise(
            self.outcome,
            self.expected,
            self.reason.as_deref(),
            &self.findings,
        )
    }

    fn inconclusive(policy: &Policy, reason: String) -> Verdict {
        Verdict {
            line: policy.line.clone(),
            outcome: Outcome::Inconclusive,
            expected: policy.expect,
            findings: Vec::new(),
            reason: Some(reason),
            notes: Vec::new(),
            presented: Presented::default(),
        }
    }
}

/// A short summary of an outcome for subjects and one-line reports:
/// `number shown in From, name shown in P-Asserted-Identity`.
pub fn summarise(
    outcome: Outcome,
    expected: Expect,
    reason: Option<&str>,
    findings: &[Finding],
) -> String {
    match outcome {
        Outcome::Pass if expected == Expect::Umbrella => {
            "umbrella identity shown as expected".into()
        }
        Outcome::Pass => "identity withheld as expected".into(),
        Outcome::Inconclusive => reason.unwrap_or("could not be judged").to_string(),
        Outcome::Fail => {
            let mut parts: Vec<String> = Vec::new();
            for f in findings {
                let what = match f.kind {
                    Kind::Presentation => "wrong presentation".to_string(),
                    Kind::Descriptor => "kind of service shown".to_string(),
                    k => format!("{k} shown"),
                };
                let s = format!("{what} in {}", f.header);
                if !parts.contains(&s) {
                    parts.push(s);
                }
            }
            parts.join(", ")
        }
    }
}

/// Headers that carry the caller's identity and are displayed.
const IDENTITY_HEADERS: &[&str] = &[
    "From",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Remote-Party-ID",
];

/// Judge raw bytes as received.
pub fn judge(policy: &Policy, raw: &[u8]) -> Verdict {
    // Header bytes that are not UTF-8 are read as Windows-1252 (what a
    // Latin-1 PBX sends for `Café`), not replaced by U+FFFD and lost.
    let original = raw;
    let head_end = if std::str::from_utf8(raw).is_ok() {
        0
    } else {
        sip::message::header_end(raw).unwrap_or(raw.len())
    };
    let transcoded;
    let (raw, latin_head) = if std::str::from_utf8(&raw[..head_end]).is_ok() {
        (raw, false)
    } else {
        let mut v = decode::utf8_or_1252(&raw[..head_end])
            .into_owned()
            .into_bytes();
        v.extend_from_slice(&raw[head_end..]);
        transcoded = v;
        (&transcoded[..], true)
    };
    // Read in place, without copying a header out of the bytes; the copy
    // only when the header section is still not UTF-8 (leading blank lines
    // hid where it ends), read as the parser reads it.
    let owned;
    let parsed = match sip::message::parse_borrowed(raw) {
        Some(parsed) => parsed,
        None => {
            owned = sip::parse(raw);
            owned.as_ref().map(Message::borrowed).map_err(Clone::clone)
        }
    };
    match parsed {
        Ok(m) => {
            let mut v = judge_parsed(policy, &m);
            if latin_head {
                v.notes
                    .push("header bytes that are not UTF-8 were read as Windows-1252".into());
            }
            v
        }
        Err(sip::message::ParseError::BadStartLine(_)) => {
            // Quoted from the bytes as they arrived, not as transcoded.
            let mut first = original
                .iter()
                .skip_while(|b| b.is_ascii_whitespace())
                .take_while(|b| **b != b'\n')
                .copied()
                .collect::<Vec<u8>>();
            if first.last() == Some(&b'\r') {
                first.pop();
            }
            Verdict::inconclusive(
                policy,
                format!(
                    "the message can't be read as SIP: the first line is not a SIP request or status line: \"{}\"",
                    escape::bytes(&first, 80)
                ),
            )
        }
        Err(e) => Verdict::inconclusive(
            policy,
            format!(
                "the message can't be read as SIP: {}",
                escape::clip(&e.to_string(), 200)
            ),
        ),
    }
}

/// A value from the wire quoted for a sentence: control characters
/// escaped, cut to a readable length.
fn quote(s: &str) -> String {
    format!("\"{}\"", escape::clip(s, 80))
}

/// Judge a parsed message.
pub fn judge_message(policy: &Policy, msg: &Message) -> Verdict {
    judge_parsed(policy, &msg.borrowed())
}

/// [`judge_message`] of a message read in place.
fn judge_parsed(policy: &Policy, msg: &MessageRef<'_>) -> Verdict {
    match &msg.start {
        StartLine::Request { method, .. } if method == "INVITE" => {}
        StartLine::Request { method, .. } => {
            return Verdict::inconclusive(policy, format!("this is a {} request, not an INVITE: only an INVITE carries the call's presentation", escape::clip(method, 40)))
        }
        StartLine::Response { code, reason, .. } => {
            return Verdict::inconclusive(policy, format!("this is a response ({code} {}), not an INVITE", escape::clip(reason, 60)))
        }
    }
    let mut j = Judge {
        policy,
        findings: Vec::new(),
        notes: msg
            .anomalies
            .iter()
            .map(|a| escape::clip(a, 200).into_owned())
            .collect(),
        doubts: Vec::new(),
        presented: Presented::default(),
        layer: None,
        allow_short: true,
        scratch: SCRATCH.take(),
    };
    let privacy: Vec<&str> = msg.headers_named("Privacy").map(|h| &*h.value).collect();
    if !privacy.is_empty() {
        j.presented.privacy = Some(privacy.join(", "));
        j.notes.push(format!(
            "Privacy: {}",
            escape::clip(&privacy.join(", "), 200)
        ));
    }

    if let Some(uri) = msg.request_uri() {
        j.scan_views("Request-URI", uri, uri, false, "Request-URI");
    }
    let from_count = msg.headers_named("From").count();
    match from_count {
        0 => j.doubts.push("the INVITE has no From header".into()),
        1 => {}
        n => j.doubts.push(format!("the INVITE has {n} From headers")),
    }
    for h in &msg.headers {
        let canonical = h.canonical;
        let shown = IDENTITY_HEADERS.contains(&canonical) || canonical == "Identity";
        if canonical == "Remote-Party-ID" {
            j.presented.identity_headers.push(canonical.to_string());
            j.identity_header(canonical, &h.value);
            // An entry for the called party is not the caller's identity:
            // the organisation's number there is still wrong, but not shown
            // as the caller.
            for entry in split_list(&h.value) {
                let caller = !is_called_party(entry);
                j.scan_views(canonical, &h.value, entry, caller, "header value");
            }
        } else if IDENTITY_HEADERS.contains(&canonical) {
            j.presented.identity_headers.push(canonical.to_string());
            j.identity_header(canonical, &h.value);
            j.scan_views(canonical, &h.value, &h.value, true, "header value");
        } else if canonical == "Identity" {
            j.presented.identity_headers.push(canonical.to_string());
            j.identity_passport(&h.value);
            j.scan_views(canonical, &h.value, &h.value, true, "header value");
        } else {
            // Unknown and X- headers can carry the name in their own name:
            // a header is searched with its name unless it came under
            // another spelling of a known one (a compact form, another
            // case), whose value alone is searched.
            if canonical != h.name {
                j.scan_views(canonical, &h.value, &h.value, false, "header value");
            } else {
                let mut line = std::mem::take(&mut j.scratch.line);
                line.clear();
                line.push_str(h.name);
                line.push_str(": ");
                line.push_str(&h.value);
                j.scan_views(canonical, &h.value, &line, false, "header value");
                j.scratch.line = line;
            }
            if matches!(canonical, "Diversion" | "History-Info" | "P-Charge-Info") {
                j.presented.identity_headers.push(canonical.to_string());
            }
            if h.name.eq_ignore_ascii_case("User-to-User")
                || h.name.eq_ignore_ascii_case("X-User-to-User")
            {
                j.user_to_user(canonical, &h.value);
            }
        }
        j.display_names(canonical, h.name, &h.value, shown);
    }
    if msg.truncated {
        j.notes.retain(|n| !n.starts_with("Content-Length is"));
        j.doubts.push(format!(
            "the message is truncated (Content-Length {}, {} bytes arrived), so part of the body was never seen",
            escape::clip(msg.header("Content-Length").unwrap_or("?"), 20),
            msg.body.len()
        ));
    }
    let content_type = msg.header("Content-Type");
    let content_encoding = msg.header("Content-Encoding");
    if !msg.body.is_empty() {
        match std::str::from_utf8(msg.body) {
            // The common case, read in place: plain text, nothing to undo.
            Ok(text) if !decode::body_needs_decoding(content_type, content_encoding, msg.body) => {
                j.scan_lines(decode::place_for(content_type), text, None);
            }
            _ => {
                let body = decode::body(content_type, content_encoding, msg.body);
                j.doubts.extend(body.doubts);
                j.notes.extend(body.notes);
                for t in &body.texts {
                    j.scan_lines(t.place, &t.text, t.layer.clone());
                }
            }
        }
    }
    if !msg.trailing.is_empty() {
        let text = String::from_utf8_lossy(msg.trailing);
        j.scan_lines(
            "SDP",
            &text,
            Some("bytes after the declared Content-Length".into()),
        );
    }

    let (outcome, reason) = if !j.findings.is_empty() {
        (Outcome::Fail, None)
    } else if !j.doubts.is_empty() {
        (Outcome::Inconclusive, Some(j.doubts.join("; ")))
    } else {
        (Outcome::Pass, None)
    };
    if outcome == Outcome::Fail && !j.doubts.is_empty() {
        j.notes.extend(j.doubts.iter().cloned());
    }
    // Displayed places first; otherwise in message order.
    j.findings.sort_by_key(|f| !f.shown);
    // Kept for the next verdict unless a large text grew it (a big
    // decoded body): a thread holds on to no more than this.
    if j.scratch.heap_bytes() <= SCRATCH_KEPT {
        SCRATCH.set(j.scratch);
    }
    Verdict {
        line: policy.line.clone(),
        outcome,
        expected: policy.expect,
        findings: j.findings,
        reason,
        notes: j.notes,
        presented: j.presented,
    }
}

/// Is this Remote-Party-ID entry about the called party (`party=called`)?
fn is_called_party(entry: &str) -> bool {
    parse_name_addr(entry).is_ok_and(|na| {
        na.param("party")
            .flatten()
            .is_some_and(|p| p.eq_ignore_ascii_case("called"))
    })
}

/// A header or parameter name that says its value is a name
/// (`Organization`, `X-Caller-Name`, `;cnam=`, `;display=`): the value is
/// judged like a display name wherever it is.
fn name_like(name: &str) -> bool {
    const WORDS: [&[u8]; 6] = [
        b"name", b"display", b"cnam", b"organi", b"purpose", b"label",
    ];
    // Each word starts with its own letter: for each byte, the word it may
    // start (its index plus one; 0 for none), in either case.
    const STARTS: [u8; 256] = {
        let mut t = [0u8; 256];
        let mut w = 0;
        while w < WORDS.len() {
            let first = WORDS[w][0];
            t[first as usize] = w as u8 + 1;
            t[first.to_ascii_uppercase() as usize] = w as u8 + 1;
            w += 1;
        }
        t
    };
    let n = name.as_bytes();
    n.iter().enumerate().any(|(i, &b)| {
        let w = STARTS[usize::from(b)];
        w != 0
            && WORDS.get(usize::from(w) - 1).is_some_and(|word| {
                n.get(i..i + word.len())
                    .is_some_and(|here| here.eq_ignore_ascii_case(word))
            })
    })
}

/// Characters of an unquoted display name (RFC 3261 token characters and
/// spaces; anything beyond ASCII for senders that don't quote): the rule
/// [`all_display_chars`] applies, kept to test it against.
#[cfg(test)]
fn display_char(c: char) -> bool {
    c.is_alphanumeric() || !c.is_ascii() || c.is_whitespace() || "-.!%*_+`'~".contains(c)
}

/// Is every character of `text` a [`display_char`]? Read a byte at a time:
/// every byte of a non-ASCII character is 0x80 or more, and every such
/// character is one.
fn all_display_chars(text: &str) -> bool {
    text.bytes().all(|b| DISPLAY_BYTE[usize::from(b)])
}

/// [`all_display_chars`]'s test of each byte.
const DISPLAY_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c >= 0x80
            || c.is_ascii_alphanumeric()
            // char::is_whitespace on ASCII, then the token characters.
            || matches!(
                c,
                b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' '
                    | b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        b += 1;
    }
    t
};

/// Could this header value hold a display name or a name-like parameter?
/// A cheap look before parsing it: most headers (Via, Call-ID, CSeq,
/// Identity...) can't.
fn may_carry_names(value: &str) -> bool {
    // None of the three characters below: nothing to look at (one vector
    // search instead of three).
    let b = value.as_bytes();
    if memchr::memchr3(b'"', b'<', b'=', b).is_none() {
        return false;
    }
    memchr::memchr(b'"', b).is_some()
        || (memchr::memchr(b'<', b).is_some()
            && value.split(',').any(|e| {
                e.find('<').is_some_and(|i| {
                    let before = e[..i].trim();
                    !before.is_empty() && all_display_chars(before)
                })
            }))
        || (memchr::memchr(b'=', b).is_some()
            && value
                .split(';')
                .skip(1)
                .any(|p| name_like(p.split('=').next().unwrap_or_default())))
}

/// Where a place stands, for sentences.
fn where_(shown: bool) -> &'static str {
    if shown {
        "a place phones display"
    } else {
        "not normally displayed, but readable by whoever receives the call"
    }
}

/// Is a descriptor part of an organisation name already found in the same
/// place ("Refuge" in "Eastside Women's Refuge")? Then the name finding says
/// it all.
fn covered_by_name(d: &names::Phrase, named: &[&NamePattern]) -> bool {
    named.iter().any(|n| {
        contains_words(&n.phrase, &d.pattern.phrase)
            || d.pattern
                .compact
                .as_deref()
                .is_some_and(|c| contains_words(&n.phrase, c))
    })
}

/// Working state while judging one message.
struct Judge<'p> {
    policy: &'p Policy,
    findings: Vec<Finding>,
    notes: Vec<String>,
    /// Things that stop a pass (a From we can't read...).
    doubts: Vec<String>,
    presented: Presented,
    /// The decoding layer of the text being scanned ("gzip-decoded SDP
    /// body"); findings made meanwhile name it.
    layer: Option<String>,
    /// False on SDP codec lines, where a short descriptor ("DV") is a
    /// codec's name, not words.
    allow_short: bool,
    /// Buffers reused from text to text.
    scratch: Scratch,
}

thread_local! {
    /// The scratch buffers of the last verdict on this thread, taken by the
    /// next (a verdict within a verdict finds none and makes its own).
    static SCRATCH: std::cell::Cell<Scratch> = std::cell::Cell::new(Scratch::default());
}

/// The most scratch memory a thread keeps between verdicts.
const SCRATCH_KEPT: usize = 256 * 1024;

/// Buffers the scan of one message reuses from text to text, and from
/// message to message on a thread, so judging a clean message allocates
/// little beyond its verdict.
#[derive(Default)]
struct Scratch {
    /// The names and descriptors found in the text being scanned. (This
    /// and the masks are boxed so that lending them out while `self` is
    /// in use moves a pointer, not the buffers' bookkeeping.)
    found: Option<Box<Found>>,
    /// The number search's buffers.
    numbers: numbers::Scratch,
    /// Where the letters, digits and token characters of the text being
    /// scanned are.
    masks: Option<Box<bytes::Masks>>,
    /// A header as `Name: value`, for headers whose name is searched too.
    line: String,
}

impl Scratch {
    /// The bytes its buffers hold on to.
    fn heap_bytes(&self) -> usize {
        self.found.as_ref().map_or(0, |f| f.heap_bytes())
            + self.numbers.heap_bytes()
            + self.masks.as_ref().map_or(0, |m| m.heap_bytes())
            + self.line.capacity()
    }
}

/// How a URI's user part reads.
enum UserPart {
    Absent,
    Anonymous,
    Number { digits: String, plus: bool },
    Text(String),
}

fn classify_user(uri: &Uri) -> UserPart {
    let Some(raw) = uri.user.as_deref() else {
        return UserPart::Absent;
    };
    // User parameters (`+61...;npdi;rn=...`) are not part of the number.
    let user = raw.split(';').next().unwrap_or(raw).trim();
    if user.is_empty() {
        return UserPart::Absent;
    }
    if is_anonymous_text(user) {
        return UserPart::Anonymous;
    }
    // A local number with phone-context (RFC 3966) is read in that context:
    // a user parameter of a sip: user part (RFC 3261 19.1.6), or a tel:
    // URI's own parameter.
    let context = raw
        .split(';')
        .skip(1)
        .find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("phone-context")
                .then_some(v.trim())
        })
        .or_else(|| uri.param("phone-context").flatten());
    match numbers::read_uri_number(user, context) {
        Some((digits, plus)) if digits.len() >= 3 => UserPart::Number { digits, plus },
        _ => UserPart::Text(user.to_string()),
    }
}

impl Judge<'_> {
    fn push(&mut self, mut f: Finding) {
        // One finding per place and kind of identity: the display-name rule
        // and the free-text scan often see the same name or number.
        let dup = self.findings.iter().any(|g| {
            g.header == f.header
                && g.kind == f.kind
                && g.value == f.value
                && (g.matched == f.matched
                    || matches!(f.kind, Kind::Name | Kind::Number | Kind::Descriptor))
        });
        if !dup {
            if let Some(layer) = &self.layer {
                f.detail = format!("In the {layer}: {}", f.detail);
            }
            self.findings.push(f);
        }
    }

    /// Scan a text as received and every decoding of it: RFC 2047 encoded
    /// words, and UTF-8 misread as Windows-1252. `noun` names the text for
    /// a layer's label ("header value", "SDP body").
    fn scan_views(&mut self, header: &str, value: &str, text: &str, shown: bool, noun: &str) {
        let mut masks = self.scratch.masks.take().unwrap_or_default();
        masks.read(text.as_bytes());
        let profile = masks.profile;
        self.scan_masked(header, value, text, &mut masks, shown);
        self.scratch.masks = Some(masks);
        // Encoded words need a `?`, mojibake a non-ASCII character.
        let words = if profile & bytes::QUESTION != 0 {
            decode::encoded_words(text)
        } else {
            None
        };
        let repaired = if profile & bytes::NON_ASCII != 0 {
            decode::unmojibake(text)
        } else {
            None
        };
        if words.is_none() && repaired.is_none() {
            // The common case: nothing encoded, nothing more to read.
            return;
        }
        let base = self.layer.clone();
        let what = base.as_deref().unwrap_or(noun).to_string();
        if let Some(words) = words {
            for f in &words.failures {
                let d = format!("could not fully decode {header}: {f}");
                if !self.doubts.contains(&d) {
                    self.doubts.push(d);
                }
            }
            self.layer = Some(format!("RFC 2047-decoded {what}"));
            self.scan(header, value, &words.text, shown);
            if let Some(m) = decode::unmojibake(&words.text) {
                self.layer = Some(format!(
                    "RFC 2047-decoded {what}, read back as UTF-8 (it had been read as Windows-1252)"
                ));
                self.scan(header, value, &m, shown);
            }
            self.layer = base.clone();
        }
        if let Some(m) = repaired {
            self.layer = Some(format!(
                "{what} read back as UTF-8 (it had been read as Windows-1252)"
            ));
            self.scan(header, value, &m, shown);
            self.layer = base;
        }
    }

    /// Scan a body text line by line.
    fn scan_lines(&mut self, place: &str, text: &str, layer: Option<String>) {
        let noun = if place == "SDP" { "SDP body" } else { "body" };
        self.layer = layer;
        for line in text.lines() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            // rtpmap and fmtp name codecs (RFC 6469's is "DV").
            self.allow_short = !(line.starts_with("a=rtpmap:") || line.starts_with("a=fmtp:"));
            self.scan_views(place, line, line, false, noun);
        }
        self.allow_short = true;
        self.layer = None;
    }

    /// The name rules for every display name and name-like parameter of a
    /// header (and the whole value of a header named for a name): the
    /// organisation's names, cut to CNAM length too, and descriptors. One
    /// mechanism for every header whose value parses as a name-addr list,
    /// rather than a list of headers that would go stale.
    fn display_names(&mut self, header: &str, name: &str, value: &str, shown: bool) {
        if name_like(name) {
            self.name_text(header, value, value, shown, "value");
        }
        if !may_carry_names(value) {
            return;
        }
        for entry in split_list(value) {
            let Ok(na) = parse_name_addr(entry) else {
                continue;
            };
            let shown = shown && !(header == "Remote-Party-ID" && is_called_party(entry));
            // An unquoted display name is tokens (RFC 3261 section 25.1):
            // text before a '<' with ';', '=' or '/' in it is something
            // else (an Identity token's parameters, say).
            let display = na
                .display
                .as_deref()
                .filter(|d| entry.trim_start().starts_with('"') || all_display_chars(d));
            if let Some(d) = display {
                self.name_text(header, value, d, shown, "display name");
            }
            let uri_params = if na.uri.contains(';') && na.uri.contains('=') {
                parse_uri(&na.uri).params
            } else {
                Vec::new()
            };
            for (k, v) in na.params.iter().chain(uri_params.iter()) {
                if let Some(v) = v.as_deref().filter(|_| name_like(k)) {
                    let what = format!("{} parameter", escape::clip(k, 30));
                    self.name_text(header, value, v, shown, &what);
                }
            }
        }
    }

    /// One display name (or name-like text), as sent and decoded.
    fn name_text(&mut self, header: &str, value: &str, text: &str, shown: bool, what: &str) {
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        let mut views: Vec<(Option<String>, std::borrow::Cow<'_, str>)> =
            vec![(None, std::borrow::Cow::Borrowed(text))];
        if let Some(words) = decode::encoded_words(text) {
            for f in &words.failures {
                let d = format!("could not fully decode {header}: {f}");
                if !self.doubts.contains(&d) {
                    self.doubts.push(d);
                }
            }
            views.push((
                Some(format!("RFC 2047-decoded {what}")),
                std::borrow::Cow::Owned(words.text),
            ));
        }
        let repaired: Vec<(Option<String>, std::borrow::Cow<'_, str>)> = views
            .iter()
            .filter_map(|(l, t)| {
                decode::unmojibake(t).map(|m| {
                    let label = format!(
                        "{} read back as UTF-8 (it had been read as Windows-1252)",
                        l.as_deref().unwrap_or(what)
                    );
                    (Some(label), std::borrow::Cow::Owned(m))
                })
            })
            .collect();
        views.extend(repaired);
        let org = self.policy.org.clone();
        let descriptors = self.policy.descriptors.clone();
        let base = self.layer.clone();
        for (label, t) in &views {
            // No word of the text starts like any name or descriptor:
            // none is shown, whole or cut (a cut name or descriptor starts
            // as the whole one does), and nothing need be folded.
            let mut masks = self.scratch.masks.take().unwrap_or_default();
            masks.read(t.as_bytes());
            let may_hold = self.policy.lexicon.may_hold(t, &masks);
            self.scratch.masks = Some(masks);
            if !may_hold {
                continue;
            }
            if label.is_some() {
                self.layer = label.clone();
            }
            let folded = normalise(t);
            let mut named: Vec<&NamePattern> = Vec::new();
            for p in &org.names {
                if p.shown_as_display(&folded) {
                    let cut = if p.found_in(&folded) {
                        ""
                    } else {
                        ", cut short as caller-name (CNAM) delivery does"
                    };
                    self.push(Finding {
                        header: header.into(),
                        value: value.into(),
                        kind: Kind::Name,
                        shown,
                        detail: format!(
                            "the {what} {} shows the organisation's name {}{cut}; {header} is {}.",
                            quote(t),
                            quote(&p.label),
                            where_(shown)
                        ),
                        matched: p.label.clone(),
                        seen: t.to_string(),
                    });
                    named.push(p);
                }
            }
            let mut found = self.scratch.found.take().unwrap_or_default();
            self.policy.lexicon.find(&folded, &mut found);
            let mut hits: Vec<usize> = found
                .descriptors
                .iter()
                .copied()
                .filter(|&i| descriptors.counts(i, t, self.allow_short))
                .collect();
            self.scratch.found = Some(found);
            if hits.is_empty() {
                hits.extend(descriptors.cut_in_display(&folded, t));
            }
            hits.retain(|i| !covered_by_name(&descriptors.items[*i], &named));
            if !hits.is_empty() {
                self.descriptor_finding(header, value, shown, t, &descriptors, &hits);
            }
            self.layer = base.clone();
        }
    }

    /// One finding for the descriptors found in one place, quoting each as
    /// written.
    fn descriptor_finding(
        &mut self,
        header: &str,
        value: &str,
        shown: bool,
        text: &str,
        set: &PhraseSet,
        hits: &[usize],
    ) {
        let words: Vec<String> = hits
            .iter()
            .map(|i| {
                let p = &set.items[*i].pattern;
                match p.locate(text) {
                    Some(w) if w != p.label => {
                        format!("{} (as {})", quote(&p.label), quote(w))
                    }
                    _ => quote(&p.label),
                }
            })
            .collect();
        let detail = format!(
            "{} {} what kind of service is calling, whatever the organisation is called; {header} is {}.",
            words.join(", "),
            if hits.len() == 1 { "reveals" } else { "reveal" },
            where_(shown)
        );
        self.push(Finding {
            header: header.into(),
            value: value.into(),
            kind: Kind::Descriptor,
            shown,
            detail,
            matched: set.items[hits[0]].pattern.label.clone(),
            seen: set.items[hits[0]]
                .pattern
                .locate(text)
                .unwrap_or_default()
                .to_string(),
        });
    }

    /// RFC 7433 User-to-User data, decoded and searched.
    fn user_to_user(&mut self, header: &str, value: &str) {
        match decode::uui(value) {
            None => {}
            Some(decode::Uui::Unreadable(why)) => {
                self.doubts.push(format!("could not fully decode: {why}"))
            }
            Some(decode::Uui::Decoded {
                text,
                encoding,
                binary_note,
            }) => {
                self.notes.extend(binary_note);
                self.layer = Some(format!("{encoding}-decoded User-to-User data"));
                self.scan_views(header, value, &text, false, "User-to-User data");
                self.layer = None;
            }
        }
    }

    fn privacy_note(&self, header: &str) -> String {
        if header == "From" {
            return String::new();
        }
        match &self.presented.privacy {
            Some(p) => format!(
                " The call carries Privacy: {p}, but the endpoint is outside any trust domain and many phones display {header} anyway."
            ),
            None => " There is no Privacy header.".into(),
        }
    }

    /// Look for the organisation's numbers, names and hosts in free text.
    /// `value` is what is reported; `text` is what is searched.
    fn scan(&mut self, header: &str, value: &str, text: &str, shown: bool) {
        let mut masks = self.scratch.masks.take().unwrap_or_default();
        masks.read(text.as_bytes());
        self.scan_masked(header, value, text, &mut masks, shown);
        self.scratch.masks = Some(masks);
    }

    /// [`Judge::scan`] of a text whose `masks` have been read (they are
    /// read again for each text derived from it).
    fn scan_masked(
        &mut self,
        header: &str,
        value: &str,
        text: &str,
        masks: &mut bytes::Masks,
        shown: bool,
    ) {
        // Not through `self`, so the scratch buffers can be lent meanwhile.
        let policy = self.policy;
        let org = &*policy.org;
        let decoded: Cow<'_, str> = if masks.profile & bytes::PERCENT != 0 {
            let d = percent_decode(text);
            masks.read(d.as_bytes());
            Cow::Owned(d)
        } else {
            Cow::Borrowed(text)
        };
        let where_ = if shown {
            "a place phones display"
        } else {
            "not normally displayed, but readable by whoever receives the call"
        };
        let numbers = if masks.profile & bytes::DIGIT != 0 {
            org.numbers
                .find_in_with(&decoded, masks, &mut self.scratch.numbers)
        } else {
            Vec::new()
        };
        for hit in numbers {
            let detail = format!(
                "the organisation's number {} appears as {:?}; {header} is {where_}.{}",
                hit.number.describe(),
                hit.as_written,
                if shown {
                    self.privacy_note(header)
                } else {
                    String::new()
                },
            );
            self.push(Finding {
                header: header.into(),
                value: value.into(),
                kind: Kind::Number,
                shown,
                detail,
                matched: hit.number.entry.label.clone(),
                seen: hit.as_written.clone(),
            });
        }
        // Hosts first: a configured domain such as `eastside-refuge.org.au`
        // is reported as a host, not again as the name inside it.
        let host_hits = org.hosts.find_masked(&decoded, masks);
        let name_text: Cow<'_, str> = if host_hits.is_empty() {
            Cow::Borrowed(&decoded)
        } else {
            let mut t = decoded.to_string();
            for (_, tok) in &host_hits {
                t = t.replace(tok.as_str(), " ");
            }
            masks.read(t.as_bytes());
            Cow::Owned(t)
        };
        let mut found = self.scratch.found.take().unwrap_or_default();
        // Without a letter or digit the folded text is empty.
        if masks.profile & (bytes::ALNUM | bytes::NON_ASCII) != 0 {
            policy.lexicon.fold_and_find(&name_text, masks, &mut found);
        } else {
            found.clear();
        }
        let mut named: Vec<&NamePattern> = Vec::new();
        for &i in &found.names {
            let Some(p) = org.names.get(i) else {
                continue;
            };
            let seen = p.locate(&name_text).unwrap_or_default().to_string();
            let as_written = if seen.is_empty() {
                String::new()
            } else {
                format!(" as {}", quote(&seen))
            };
            let detail = format!(
                "the organisation's name {} appears{as_written}; {header} is {where_}.{}",
                quote(&p.label),
                if shown {
                    self.privacy_note(header)
                } else {
                    String::new()
                },
            );
            self.push(Finding {
                header: header.into(),
                value: value.into(),
                kind: Kind::Name,
                shown,
                detail,
                matched: p.label.clone(),
                seen,
            });
            named.push(p);
        }
        if !found.descriptors.is_empty() {
            let descriptors = &*policy.descriptors;
            let mut hits: Vec<usize> = found
                .descriptors
                .iter()
                .copied()
                .filter(|&i| descriptors.counts(i, &name_text, self.allow_short))
                .collect();
            hits.retain(|i| !covered_by_name(&descriptors.items[*i], &named));
            if !hits.is_empty() {
                self.descriptor_finding(header, value, shown, &name_text, descriptors, &hits);
            }
        }
        self.scratch.found = Some(found);
        for (p, tok) in host_hits {
            let detail = format!(
                "the organisation's host {} appears as {}; {header} is {where_}.",
                quote(&p.label),
                quote(&tok)
            );
            self.push(Finding {
                header: header.into(),
                value: value.into(),
                kind: Kind::Host,
                shown,
                detail,
                matched: p.label.clone(),
                seen: tok.clone(),
            });
        }
    }

    fn presentation(&mut self, header: &str, value: &str, matched: &str, what: String) {
        if self.policy.org_only {
            // Presentation depends on the line; the organisation alone
            // only forbids its own identity.
            return;
        }
        let detail = format!(
            "{what}; the line expects {}.{}",
            self.policy.expectation(),
            self.privacy_note(header)
        );
        self.push(Finding {
            header: header.into(),
            value: value.into(),
            kind: Kind::Presentation,
            shown: true,
            detail,
            matched: matched.into(),
            seen: String::new(),
        });
    }

    /// Apply the presentation rules to From / PAI / PPI / RPID.
    fn identity_header(&mut self, header: &str, value: &str) {
        let entries = if header == "From" {
            vec![value]
        } else {
            split_list(value)
        };
        for entry in entries {
            let na = match parse_name_addr(entry) {
                Ok(na) => na,
                Err(e) => {
                    self.doubts
                        .push(format!("can't read {header} {}: {e}", quote(entry)));
                    continue;
                }
            };
            if header == "Remote-Party-ID" && is_called_party(entry) {
                self.notes.push(
                    "a Remote-Party-ID entry has party=called: it names the called party, so it is not judged as the caller's identity (it is still searched)".into(),
                );
                continue;
            }
            let uri = parse_uri(&na.uri);
            if !matches!(uri.scheme.as_str(), "sip" | "sips" | "tel") {
                self.notes.push(format!(
                    "{header} has a {} URI; checked as text only",
                    quote(&uri.scheme)
                ));
            }
            // The display name as a phone shows it: encoded words decoded,
            // UTF-8 misread as Windows-1252 read back.
            let mut display = na.display.clone();
            let mut layer: Option<String> = None;
            if let Some(words) = na.display.as_deref().and_then(decode::encoded_words) {
                if words.failures.is_empty() {
                    display = Some(words.text);
                    layer = Some("RFC 2047-decoded display name".into());
                } else {
                    for f in &words.failures {
                        self.doubts.push(format!(
                            "could not fully decode {header}'s display name: {f}"
                        ));
                    }
                    display = None;
                }
            }
            if let Some(m) = display.as_deref().and_then(decode::unmojibake) {
                display = Some(m);
                layer = Some(format!(
                    "{} read back as UTF-8 (it had been read as Windows-1252)",
                    layer.as_deref().unwrap_or("display name")
                ));
            }
            self.presented.identities.push(PresentedIdentity {
                header: header.into(),
                display: display.clone().or_else(|| na.display.clone()),
                user: uri.user.clone(),
                host: uri.host.clone(),
            });
            if header == "Remote-Party-ID" {
                if let Some(p) = na.param("privacy").flatten() {
                    self.notes
                        .push(format!("Remote-Party-ID privacy={}", escape::clip(p, 40)));
                }
            }
            let undecodable = display.is_none() && na.display.is_some();
            if !undecodable {
                self.layer = layer;
                self.check_display(header, value, display.as_deref());
                self.layer = None;
            }
            self.check_user(header, value, &uri);
        }
    }

    fn check_display(&mut self, header: &str, value: &str, display: Option<&str>) {
        let umbrella = self.policy.umbrella.clone();
        let expect_umbrella = self.policy.expect == Expect::Umbrella;
        let display = display.map(str::trim).filter(|d| !d.is_empty());
        let org = self.policy.org.clone();
        match display {
            Some(d) => {
                let folded = normalise(d);
                if let Some(p) = org.names.iter().find(|p| p.shown_as_display(&folded)) {
                    self.push(Finding {
                        header: header.into(),
                        value: value.into(),
                        kind: Kind::Name,
                        shown: true,
                        detail: format!(
                            "the display name {} shows the organisation's name {}{}.{}",
                            quote(d),
                            quote(&p.label),
                            if p.found_in(&folded) {
                                ""
                            } else {
                                ", cut short as caller-name (CNAM) delivery does"
                            },
                            self.privacy_note(header)
                        ),
                        matched: p.label.clone(),
                        seen: d.to_string(),
                    });
                } else if expect_umbrella && umbrella.as_ref().is_some_and(|u| u.name_matches(d)) {
                    // The umbrella name: what this line should show.
                } else if is_anonymous_text(d) {
                    if expect_umbrella && header == "From" {
                        self.presentation(
                            header,
                            value,
                            d,
                            format!("the display name is {}, not the umbrella name", quote(d)),
                        );
                    }
                } else {
                    self.presentation(
                        header,
                        value,
                        d,
                        format!("a name is presented: {}", quote(d)),
                    );
                }
            }
            None => {
                if expect_umbrella && header == "From" {
                    self.presentation(header, value, "", "no display name is presented".into());
                }
            }
        }
    }

    fn check_user(&mut self, header: &str, value: &str, uri: &Uri) {
        let org = self.policy.org.clone();
        match classify_user(uri) {
            UserPart::Absent | UserPart::Anonymous => {}
            UserPart::Number { digits, plus } => {
                if let Some(m) = org.numbers.match_digits(&digits, plus, true) {
                    let shown_as = uri.user.clone().unwrap_or_default();
                    self.push(Finding {
                        header: header.into(),
                        value: value.into(),
                        kind: Kind::Number,
                        shown: true,
                        detail: format!(
                            "the caller number {shown_as:?} is the organisation's number {}.{}",
                            m.describe(),
                            self.privacy_note(header)
                        ),
                        matched: m.entry.label.clone(),
                        seen: shown_as.clone(),
                    });
                    return;
                }
                let umbrella_ok = self.policy.expect == Expect::Umbrella
                    && self
                        .policy
                        .umbrella
                        .as_ref()
                        .is_some_and(|u| u.numbers.match_digits(&digits, plus, true).is_some());
                if !umbrella_ok {
                    let shown_as = uri.user.clone().unwrap_or_default();
                    self.presentation(
                        header,
                        value,
                        &shown_as,
                        format!("a number is presented: {shown_as:?}"),
                    );
                }
            }
            UserPart::Text(t) => {
                self.presentation(
                    header,
                    value,
                    &t,
                    format!("the user part {t:?} is not an anonymity marker"),
                );
            }
        }
    }

    /// STIR/SHAKEN Identity header (RFC 8224/8225/8588): decode the
    /// PASSporT and check the claims a terminating device can read.
    fn identity_passport(&mut self, value: &str) {
        match passport::decode(value) {
            passport::Decoded::Compact => self.notes.push(
                "Identity header in compact form (no payload): the claims are not in the message, nothing to read".into(),
            ),
            passport::Decoded::Legacy => self
                .notes
                .push("Identity header is not a PASSporT (an older RFC 4474 signature): checked as text only".into()),
            passport::Decoded::Unreadable(why) => self
                .doubts
                .push(format!("the Identity header's PASSporT can't be decoded ({why}), so its claims were not checked")),
            passport::Decoded::Claims(c) => {
                if let Some(tn) = &c.orig_tn {
                    let uri = Uri {
                        scheme: "tel".into(),
                        user: Some(tn.clone()),
                        ..Default::default()
                    };
                    self.check_user_claim("orig.tn", value, &uri);
                }
                if let Some(u) = &c.orig_uri {
                    self.check_user_claim("orig.uri", value, &parse_uri(u));
                }
                for tn in &c.div_tn {
                    let digits: String = tn.chars().filter(char::is_ascii_digit).collect();
                    if let Some(m) = self.policy.org.numbers.match_digits(&digits, tn.starts_with('+'), true) {
                        self.push(Finding {
                            header: "Identity".into(),
                            value: value.into(),
                            kind: Kind::Number,
                            shown: true,
                            detail: format!(
                                "the PASSporT div.tn claim {tn:?} is the organisation's number {}",
                                m.describe()
                            ),
                            matched: m.entry.label.clone(),
                            seen: tn.clone(),
                        });
                    }
                }
                if let Some(nam) = &c.rcd_nam {
                    let before = self.findings.len();
                    self.check_display("Identity", value, Some(nam));
                    for f in &mut self.findings[before..] {
                        f.detail = format!("PASSporT rcd.nam: {}", f.detail.replace(" There is no Privacy header.", ""));
                    }
                }
                // Anything else in the claims (rcd jCard, icn URLs...).
                self.scan("Identity", value, &c.payload_text, true);
            }
        }
    }

    fn check_user_claim(&mut self, claim: &str, value: &str, uri: &Uri) {
        let before = self.findings.len();
        self.check_user("Identity", value, uri);
        for f in &mut self.findings[before..] {
            f.detail = format!("PASSporT {claim}: {}", f.detail);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_characters_read_as_bytes_as_as_characters() {
        for c in (0..0x3100u32)
            .chain([0xfeff, 0x1_f600])
            .filter_map(char::from_u32)
        {
            assert_eq!(all_display_chars(&c.to_string()), display_char(c), "{c:?}");
        }
        assert!(all_display_chars("Eastside Women's Refuge"));
        assert!(!all_display_chars("a;b") && !all_display_chars("<sip:x>"));
    }

    #[test]
    fn name_like_words_anywhere_in_any_case() {
        let words = ["name", "display", "cnam", "organi", "purpose", "label"];
        for n in [
            "X-Caller-NAME",
            "cnam",
            "Organization",
            "x-purposes",
            "Label",
            "DISPLAY",
        ] {
            assert!(name_like(n), "{n}");
        }
        for n in ["Via", "tag", "nam", "x-organ", "lab", "", "n"] {
            assert!(!name_like(n), "{n}");
        }
        // The same as looking for each word at each position.
        for n in [
            "abcnamex",
            "xxdisplay",
            "purpos",
            "labelname",
            "ORGANIzation",
        ] {
            let slow = words.iter().any(|k| {
                n.as_bytes()
                    .windows(k.len())
                    .any(|w| w.eq_ignore_ascii_case(k.as_bytes()))
            });
            assert_eq!(name_like(n), slow, "{n}");
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// The organisation of the example configuration.
    fn org() -> OrgSpec {
        OrgSpec {
            name: "Eastside Women's Refuge".into(),
            region: "AU".into(),
            numbers: strings(&["+61 3 7010 0142", "+61 3 7010 0100-0199"]),
            names: strings(&["Eastside Women's Refuge", "Eastside Refuge"]),
            hosts: strings(&["pbx.eastside-refuge.org.au", "203.0.113.10"]),
            descriptors: Vec::new(),
            default_descriptors: true,
        }
    }

    fn line(expect: Expect, umbrella: Option<(&str, &[&str])>) -> LineSpec {
        LineSpec {
            name: "l".into(),
            expect,
            umbrella: umbrella.map(|(name, numbers)| UmbrellaSpec {
                name: name.into(),
                numbers: strings(numbers),
            }),
        }
    }

    #[test]
    fn a_thread_keeps_little_scratch_between_verdicts() {
        let p = policy("withheld");
        let kept = || {
            let s = SCRATCH.take();
            let bytes = s.heap_bytes();
            SCRATCH.set(s);
            bytes
        };
        // A body of one-letter words and digit groups grows every buffer.
        let body = "a 1 ".repeat(30_000);
        let msg = format!(
            "INVITE sip:1@x SIP/2.0\r\nFrom: <sip:anonymous@anonymous.invalid>\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        judge(&p, msg.as_bytes());
        assert!(kept() <= SCRATCH_KEPT, "{}", kept());
        // A small message afterwards finds and keeps its buffers.
        judge(
            &p,
            b"INVITE sip:1@x SIP/2.0\r\nFrom: <sip:anonymous@anonymous.invalid>\r\n\r\n",
        );
        let small = kept();
        assert!(small > 0 && small <= SCRATCH_KEPT, "{small}");
    }

    fn policy(expect: &str) -> Policy {
        let line = if expect == "umbrella" {
            line(
                Expect::Umbrella,
                Some(("Salvation Army", &["+61 2 9000 0000"])),
            )
        } else {
            line(Expect::Withheld, None)
        };
        Policy::for_lines(&org(), &[line]).unwrap().remove(0)
    }

    fn invite(from: &str, extra: &str) -> Vec<u8> {
        format!(
            "INVITE sip:5550100@endpoint.test SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK1\r\nFrom: {from};tag=1\r\nTo: <sip:5550100@endpoint.test>\r\nCall-ID: a84b4c76e66710@carrier.test\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn anonymous_passes() {
        let v = judge(
            &policy("withheld"),
            &invite("\"Anonymous\" <sip:anonymous@anonymous.invalid>", ""),
        );
        assert_eq!(v.outcome, Outcome::Pass, "{v:?}");
    }

    #[test]
    fn pai_with_privacy_still_fails() {
        let v = judge(
            &policy("withheld"),
            &invite(
                "<sip:anonymous@anonymous.invalid>",
                "P-Asserted-Identity: <sip:+61370100142@pbx.eastside-refuge.org.au>\r\nPrivacy: id\r\n",
            ),
        );
        assert_eq!(v.outcome, Outcome::Fail);
        assert!(v.findings.iter().any(|f| f.header == "P-Asserted-Identity"
            && f.kind == Kind::Number
            && f.detail.contains("Privacy: id")));
    }

    #[test]
    fn umbrella_in_capitals_passes() {
        let v = judge(
            &policy("umbrella"),
            &invite("\"SALVATION ARMY\" <sip:+61290000000@carrier.test>", ""),
        );
        assert_eq!(v.outcome, Outcome::Pass, "{v:?}");
        let v = judge(
            &policy("umbrella"),
            &invite("<sip:anonymous@anonymous.invalid>", ""),
        );
        assert_eq!(v.outcome, Outcome::Fail);
    }

    #[test]
    fn other_number_on_withheld_line_fails_as_presentation() {
        let v = judge(
            &policy("withheld"),
            &invite("<sip:+61299999999@carrier.test>", ""),
        );
        assert_eq!(v.outcome, Outcome::Fail);
        assert_eq!(v.findings[0].kind, Kind::Presentation);
    }

    #[test]
    fn organisation_only_skips_presentation_rules() {
        let org = Policy::organisation(&OrgSpec {
            numbers: strings(&["+61 3 7010 0142"]),
            names: Vec::new(),
            hosts: Vec::new(),
            ..org()
        })
        .unwrap();
        // Another number and name on show: a line's rule, not the organisation's.
        let v = judge(
            &org,
            &invite("\"Dr Smith\" <sip:+61299999999@carrier.test>", ""),
        );
        assert_eq!(v.outcome, Outcome::Pass, "{v:?}");
        let v = judge(
            &org,
            &invite(
                "\"Eastside Womens Refuge\" <sip:anonymous@anonymous.invalid>",
                "",
            ),
        );
        assert_eq!(v.outcome, Outcome::Fail);
        assert_eq!(v.findings[0].kind, Kind::Name);
    }

    #[test]
    fn not_an_invite_is_inconclusive() {
        let v = judge(&policy("withheld"), b"SIP/2.0 200 OK\r\n\r\n");
        assert_eq!(v.outcome, Outcome::Inconclusive);
        let v = judge(&policy("withheld"), b"");
        assert_eq!(v.outcome, Outcome::Inconclusive);
    }

    /// The example organisation with one number and these descriptors,
    /// and a line with this umbrella name (withheld without one).
    fn policy_from(descriptors: &[&str], defaults: bool, umbrella: Option<&str>) -> Policy {
        let org = OrgSpec {
            numbers: strings(&["+61 3 7010 0142"]),
            names: Vec::new(),
            hosts: Vec::new(),
            descriptors: strings(descriptors),
            default_descriptors: defaults,
            ..org()
        };
        let line = match umbrella {
            Some(u) => line(Expect::Umbrella, Some((u, &[]))),
            None => line(Expect::Withheld, None),
        };
        Policy::for_lines(&org, &[line]).unwrap().remove(0)
    }

    #[test]
    fn descriptors_are_judged_on_umbrella_lines_unless_the_umbrella_name_has_them() {
        let p = policy_from(&[], true, Some("Women's Refuge Network"));
        assert!(p.descriptors_not_applied().contains(&"refuge".to_string()));
        assert!(p
            .descriptors_not_applied()
            .contains(&"women's refuge".to_string()));
        let v = judge(
            &p,
            &invite(
                "\"Women's Refuge Network\" <sip:anonymous@anonymous.invalid>",
                "",
            ),
        );
        assert_eq!(v.outcome, Outcome::Pass, "{v:#?}");
        assert_eq!(v.summary(), "umbrella identity shown as expected");
        let v = judge(
            &p,
            &invite(
                "\"Women's Refuge Network\" <sip:anonymous@anonymous.invalid>",
                "Subject: shelter intake\r\n",
            ),
        );
        assert_eq!(v.outcome, Outcome::Fail, "{v:#?}");
        assert_eq!(v.findings[0].kind, Kind::Descriptor);
        assert_eq!(v.summary(), "kind of service shown in Subject");
    }

    #[test]
    fn descriptors_extend_or_replace_the_built_in_list() {
        let extended = policy_from(&["Women's Health"], true, None);
        let replaced = policy_from(&["Women's Health"], false, None);
        assert!(extended.descriptors().any(|d| d == "shelter"));
        assert_eq!(
            replaced.descriptors().collect::<Vec<_>>(),
            ["Women's Health"]
        );
        let health = invite(
            "<sip:anonymous@anonymous.invalid>",
            "Subject: WOMENS HEALTH\r\n",
        );
        let shelter = invite("<sip:anonymous@anonymous.invalid>", "Subject: Shelter\r\n");
        assert_eq!(judge(&extended, &health).outcome, Outcome::Fail);
        assert_eq!(judge(&extended, &shelter).outcome, Outcome::Fail);
        assert_eq!(judge(&replaced, &health).outcome, Outcome::Fail);
        assert_eq!(judge(&replaced, &shelter).outcome, Outcome::Pass);
    }

    #[test]
    fn findings_quote_what_matched() {
        let v = judge(
            &policy("withheld"),
            &invite(
                "<sip:anonymous@anonymous.invalid>",
                "Subject: call EASTSIDE  WOMENS-REFUGE back\r\nVia: SIP/2.0/UDP dv-shelter-pbx.local\r\n",
            ),
        );
        let name = v.findings.iter().find(|f| f.kind == Kind::Name).unwrap();
        assert!(
            name.detail
                .contains(r#"appears as "EASTSIDE  WOMENS-REFUGE""#),
            "{name:#?}"
        );
        let d = v
            .findings
            .iter()
            .find(|f| f.kind == Kind::Descriptor)
            .unwrap();
        assert!(
            d.detail.contains(r#""shelter""#) && d.detail.contains(r#""DV" (as "dv")"#),
            "{d:#?}"
        );
    }

    #[test]
    fn binary_input_is_quoted_escaped_in_the_reason() {
        let v = judge(&policy("withheld"), b"\x1b[31mINVITE\xff\xfe sip:x\r\n\r\n");
        let r = v.reason.unwrap();
        assert!(r.contains(r"\u{1b}[31mINVITE\xff\xfe"), "{r}");
        assert!(!r.contains('\u{1b}') && !r.contains('\u{fffd}'), "{r}");
        let v = judge(&policy("withheld"), b"\x1b]0;x\x07 sip:x SIP/2.0\r\n\r\n");
        let r = v.reason.unwrap();
        assert!(!r.chars().any(char::is_control), "{r}");
    }

    #[test]
    fn latin1_header_bytes_are_read_as_windows_1252() {
        // 0x92 is Windows-1252's right single quote.
        let raw = invite(
            "<sip:anonymous@anonymous.invalid>",
            "Organization: Eastside Women\u{0}s Refuge\r\n",
        );
        let raw: Vec<u8> = raw
            .iter()
            .map(|b| if *b == 0 { 0x92 } else { *b })
            .collect();
        let v = judge(&policy("withheld"), &raw);
        assert_eq!(v.outcome, Outcome::Fail, "{v:#?}");
        assert!(v
            .findings
            .iter()
            .any(|f| f.kind == Kind::Name && f.value.contains('’')));
    }

    #[test]
    fn rpid_for_the_called_party_is_not_the_caller() {
        let v = judge(
            &policy("withheld"),
            &invite(
                "<sip:anonymous@anonymous.invalid>",
                "Remote-Party-ID: \"Cidguard\" <sip:5550100@endpoint.test>;party=called\r\n",
            ),
        );
        assert_eq!(v.outcome, Outcome::Pass, "{v:#?}");
        assert!(v
            .presented
            .identities
            .iter()
            .all(|i| i.header != "Remote-Party-ID"));
        let v = judge(
            &policy("withheld"),
            &invite(
                "<sip:anonymous@anonymous.invalid>",
                "Remote-Party-ID: <sip:+61370100142@carrier.test>;party=called\r\n",
            ),
        );
        assert_eq!(v.outcome, Outcome::Fail);
        assert!(v.findings.iter().all(|f| !f.shown), "{v:#?}");
    }

    #[test]
    fn an_undecodable_display_name_is_a_doubt_not_a_pass() {
        let v = judge(
            &policy("umbrella"),
            &invite(
                "\"=?KOI8-R?B?98/T1MPJ?=\" <sip:anonymous@anonymous.invalid>",
                "",
            ),
        );
        assert_eq!(v.outcome, Outcome::Inconclusive, "{v:#?}");
        assert!(v.reason.unwrap().contains("KOI8-R"));
    }
}

//! The verdict engine: from one received INVITE and a line's policy, decide
//! whether the organisation's identity leaked.
//!
//! ```text
//!   raw bytes ──parse──▶ Message ──┬─ identity headers (From, PAI, PPI, RPID): presentation rules
//!                                  ├─ Identity (PASSporT claims)
//!                                  ├─ every header, Request-URI, body: numbers / names / hosts
//!                                  └─▶ Verdict { outcome, findings, notes }
//! ```
//!
//! Pure: no I/O, no async, no SIP-library types. A leak is a result
//! ([`Outcome::Fail`] with findings), not an error; anything that stops the
//! message being fully judged makes the outcome [`Outcome::Inconclusive`],
//! never [`Outcome::Pass`].

pub mod hosts;
pub mod names;
pub mod numbers;
mod passport;

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::config::{Config, Expect, Line, Organisation};
use crate::sip::header::{parse_name_addr, parse_uri, percent_decode, split_list, Uri};
use crate::sip::{self, Message, StartLine};
use hosts::{find_host, HostPattern};
use names::{is_anonymous_text, normalise, NamePattern};
use numbers::{NumberError, NumberSet};

/// The organisation's identity, compiled once and shared by every line.
#[derive(Debug)]
pub struct OrgMatcher {
    pub name: String,
    pub numbers: NumberSet,
    pub names: Vec<NamePattern>,
    pub hosts: Vec<HostPattern>,
}

impl OrgMatcher {
    pub fn new(org: &Organisation) -> Result<OrgMatcher, NumberError> {
        let mut names: Vec<NamePattern> = Vec::new();
        for n in std::iter::once(&org.name).chain(org.names.iter()) {
            let p = NamePattern::new(n);
            if !p.phrase.is_empty() && !names.iter().any(|q| q.phrase == p.phrase) {
                names.push(p);
            }
        }
        Ok(OrgMatcher {
            name: org.name.clone(),
            numbers: NumberSet::new(&org.numbers, &org.region)?,
            names,
            hosts: org.hosts.iter().map(|h| HostPattern::new(h)).collect(),
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
}

impl Policy {
    pub fn new(org: Arc<OrgMatcher>, line: &Line, region: &str) -> Result<Policy, NumberError> {
        let umbrella = match &line.umbrella {
            Some(u) => Some(Arc::new(UmbrellaMatcher {
                name: u.name.clone(),
                pattern: NamePattern::new(&u.name),
                numbers: NumberSet::new(&u.numbers, region)?,
            })),
            None => None,
        };
        Ok(Policy {
            line: line.name.clone(),
            expect: line.expect,
            org,
            umbrella,
            org_only: false,
        })
    }

    /// The organisation alone, for calls that may come from any line (a
    /// capture of real traffic): its numbers, names and hosts must appear
    /// nowhere, while rules that depend on a line (withheld or umbrella
    /// presentation) are not applied. `line` is empty.
    pub fn organisation(org: &Organisation) -> Result<Policy, NumberError> {
        Ok(Policy {
            line: String::new(),
            expect: Expect::Withheld,
            org: Arc::new(OrgMatcher::new(org)?),
            umbrella: None,
            org_only: true,
        })
    }

    /// True for [`Policy::organisation`].
    pub fn is_organisation_only(&self) -> bool {
        self.org_only
    }

    /// Policies for every line of a validated config.
    pub fn for_config(cfg: &Config) -> Result<Vec<Policy>, NumberError> {
        let org = Arc::new(OrgMatcher::new(&cfg.organisation)?);
        cfg.lines
            .iter()
            .map(|l| Policy::new(org.clone(), l, &cfg.organisation.region))
            .collect()
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
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Number => "number",
            Kind::Name => "name",
            Kind::Host => "host",
            Kind::Presentation => "presentation",
        })
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
        match &self.display {
            Some(d) => write!(f, "{:?} ", d)?,
            None => f.write_str("(no name) ")?,
        }
        match (&self.user, self.host.is_empty()) {
            (Some(u), true) => write!(f, "tel:{u}"),
            (Some(u), false) => write!(f, "{u}@{}", self.host),
            (None, _) => write!(f, "{}", self.host),
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
        summarise(self.outcome, self.reason.as_deref(), &self.findings)
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
pub fn summarise(outcome: Outcome, reason: Option<&str>, findings: &[Finding]) -> String {
    match outcome {
        Outcome::Pass => "identity withheld as expected".into(),
        Outcome::Inconclusive => reason.unwrap_or("could not be judged").to_string(),
        Outcome::Fail => {
            let mut parts: Vec<String> = Vec::new();
            for f in findings {
                let what = match f.kind {
                    Kind::Presentation => "wrong presentation".to_string(),
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
    match sip::parse(raw) {
        Ok(m) => judge_message(policy, &m),
        Err(e) => Verdict::inconclusive(policy, format!("the message can't be read as SIP: {e}")),
    }
}

/// Judge a parsed message.
pub fn judge_message(policy: &Policy, msg: &Message) -> Verdict {
    match &msg.start {
        StartLine::Request { method, .. } if method == "INVITE" => {}
        StartLine::Request { method, .. } => {
            return Verdict::inconclusive(policy, format!("this is a {method} request, not an INVITE: only an INVITE carries the call's presentation"))
        }
        StartLine::Response { code, reason, .. } => {
            return Verdict::inconclusive(policy, format!("this is a response ({code} {reason}), not an INVITE"))
        }
    }
    let mut j = Judge {
        policy,
        findings: Vec::new(),
        notes: msg.anomalies.clone(),
        doubts: Vec::new(),
        presented: Presented::default(),
    };
    let privacy: Vec<&str> = msg
        .headers_named("Privacy")
        .map(|h| h.value.as_str())
        .collect();
    if !privacy.is_empty() {
        j.presented.privacy = Some(privacy.join(", "));
        j.notes.push(format!("Privacy: {}", privacy.join(", ")));
    }

    if let Some(uri) = msg.request_uri() {
        j.scan("Request-URI", uri, uri, false);
    }
    let from_count = msg.headers_named("From").count();
    match from_count {
        0 => j.doubts.push("the INVITE has no From header".into()),
        1 => {}
        n => j.doubts.push(format!("the INVITE has {n} From headers")),
    }
    for h in &msg.headers {
        let canonical = h.canonical.as_str();
        if IDENTITY_HEADERS.contains(&canonical) {
            j.presented.identity_headers.push(canonical.to_string());
            j.identity_header(canonical, &h.value);
            j.scan(canonical, &h.value, &h.value, true);
        } else if canonical == "Identity" {
            j.presented.identity_headers.push(canonical.to_string());
            j.identity_passport(&h.value);
            j.scan(canonical, &h.value, &h.value, true);
        } else {
            // Unknown and X- headers can carry the name in their own name.
            let known = canonical != h.name || sip::message::canonical_name(&h.name) != h.name;
            let text = if known {
                h.value.clone()
            } else {
                format!("{}: {}", h.name, h.value)
            };
            j.scan(canonical, &h.value, &text, false);
            if matches!(canonical, "Diversion" | "History-Info" | "P-Charge-Info") {
                j.presented.identity_headers.push(canonical.to_string());
            }
        }
    }
    if msg.truncated {
        j.notes.retain(|n| !n.starts_with("Content-Length is"));
        j.doubts.push(format!(
            "the message is truncated (Content-Length {}, {} bytes arrived), so part of the body was never seen",
            msg.header("Content-Length").unwrap_or("?"),
            msg.body.len()
        ));
    }
    for part in [&msg.body, &msg.trailing] {
        if part.is_empty() {
            continue;
        }
        let text = String::from_utf8_lossy(part);
        for line in text.lines() {
            let line = line.trim_end_matches('\r');
            if !line.trim().is_empty() {
                j.scan("SDP", line, line, false);
            }
        }
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

/// Working state while judging one message.
struct Judge<'p> {
    policy: &'p Policy,
    findings: Vec<Finding>,
    notes: Vec<String>,
    /// Things that stop a pass (a From we can't read...).
    doubts: Vec<String>,
    presented: Presented,
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
    fn push(&mut self, f: Finding) {
        // One finding per place and kind of identity: the display-name rule
        // and the free-text scan often see the same name or number.
        let dup = self.findings.iter().any(|g| {
            g.header == f.header
                && g.kind == f.kind
                && g.value == f.value
                && (g.matched == f.matched || matches!(f.kind, Kind::Name | Kind::Number))
        });
        if !dup {
            self.findings.push(f);
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
        let decoded = percent_decode(text);
        let org = self.policy.org.clone();
        let where_ = if shown {
            "a place phones display"
        } else {
            "not normally displayed, but readable by whoever receives the call"
        };
        for hit in org.numbers.find_in(&decoded) {
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
            });
        }
        // Hosts first: a configured domain such as `eastside-refuge.org.au`
        // is reported as a host, not again as the name inside it.
        let host_hits = find_host(&org.hosts, &decoded);
        let mut name_text = decoded.clone();
        for (_, tok) in &host_hits {
            name_text = name_text.replace(tok.as_str(), " ");
        }
        let folded = normalise(&name_text);
        for p in &org.names {
            if p.found_in(&folded) {
                let detail = format!(
                    "the organisation's name {:?} appears; {header} is {where_}.{}",
                    p.label,
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
                });
            }
        }
        for (p, tok) in host_hits {
            let detail = format!(
                "the organisation's host {:?} appears as {tok:?}; {header} is {where_}.",
                p.label
            );
            self.push(Finding {
                header: header.into(),
                value: value.into(),
                kind: Kind::Host,
                shown,
                detail,
                matched: p.label.clone(),
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
                        .push(format!("can't read {header} {entry:?}: {e}"));
                    continue;
                }
            };
            let uri = parse_uri(&na.uri);
            if !matches!(uri.scheme.as_str(), "sip" | "sips" | "tel") {
                self.notes.push(format!(
                    "{header} has a {:?} URI; checked as text only",
                    uri.scheme
                ));
            }
            self.presented.identities.push(PresentedIdentity {
                header: header.into(),
                display: na.display.clone(),
                user: uri.user.clone(),
                host: uri.host.clone(),
            });
            if header == "Remote-Party-ID" {
                if let Some(p) = na.param("privacy").flatten() {
                    self.notes.push(format!("Remote-Party-ID privacy={p}"));
                }
            }
            self.check_display(header, value, na.display.as_deref());
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
                            "the display name {d:?} shows the organisation's name {:?}.{}",
                            p.label,
                            self.privacy_note(header)
                        ),
                        matched: p.label.clone(),
                    });
                } else if expect_umbrella && umbrella.as_ref().is_some_and(|u| u.name_matches(d)) {
                    // The umbrella name: what this line should show.
                } else if is_anonymous_text(d) {
                    if expect_umbrella && header == "From" {
                        self.presentation(
                            header,
                            value,
                            d,
                            format!("the display name is {d:?}, not the umbrella name"),
                        );
                    }
                } else {
                    self.presentation(header, value, d, format!("a name is presented: {d:?}"));
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

    fn policy(expect: &str) -> Policy {
        let toml = format!(
            r#"
[organisation]
name = "Eastside Women's Refuge"
region = "AU"
numbers = ["+61 3 7010 0142", "+61 3 7010 0100-0199"]
names = ["Eastside Women's Refuge", "Eastside Refuge"]
hosts = ["pbx.eastside-refuge.org.au", "203.0.113.10"]

[[line]]
name = "l"
expect = "{expect}"
{}
"#,
            if expect == "umbrella" {
                r#"umbrella = { name = "Salvation Army", numbers = ["+61 2 9000 0000"] }"#
            } else {
                ""
            }
        );
        let cfg = Config::from_toml(&toml, std::path::Path::new("t.toml")).unwrap();
        Policy::for_config(&cfg).unwrap().remove(0)
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
        let cfg = Config::from_toml(
            "[organisation]\nname = \"Eastside Women's Refuge\"\nregion = \"AU\"\nnumbers = [\"+61 3 7010 0142\"]\n[[line]]\nname = \"l\"\nexpect = \"withheld\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        let org = Policy::organisation(&cfg.organisation).unwrap();
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
}

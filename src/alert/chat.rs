//! What a notice says on a chat or push channel (ntfy, Teams, Slack,
//! Matrix): a title, a few short lines, what leaked, and the dashboard link
//! that carries the detail. Each channel lays this out in its own format.
//!
//! Chat rooms and phone lock screens are less private than an IT mailbox,
//! so numbers are masked here by default (the channel can turn it off):
//! the organisation's numbers in every form the verdict engine knows
//! ([`Renderer::mask`]), and any other run of six or more digits in a value
//! that came off the wire (a stranger's or a staff member's number shown
//! instead of the line's). Masking keeps the last two digits. The evidence
//! (the captured SIP messages) never goes into a chat message.

use super::notice::{Facts, LastKnown, Notice};
use super::render::{
    fmt_duration, fmt_rfc3339, fmt_time, one_line, strip_prefix, trigger_text, truncate, Renderer,
};
use super::AlertKind;
use crate::verdict::Kind;

/// Longest value quoted in a chat message.
const MAX_VALUE: usize = 160;
/// Findings listed before "and N more".
const MAX_FINDINGS: usize = 6;

/// How loud a notice is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// A leak or wrong presentation.
    Alarm,
    /// Can't test, or something to look at.
    Warn,
    /// Private again.
    Good,
    /// Drift, tests.
    Info,
}

/// One finding, for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatFinding {
    /// `number leaked in From (shown to the called party)`.
    pub title: String,
    /// The header value, masked and cut short.
    pub value: String,
}

/// A notice for a chat channel, not yet laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// How loud.
    pub severity: Severity,
    /// One line (the email's subject without `[cidguard] `).
    pub title: String,
    /// Label and value pairs (`Line`, `reception`).
    pub facts: Vec<(String, String)>,
    /// Sentences, after the facts.
    pub notes: Vec<String>,
    /// What leaked or was wrong.
    pub findings: Vec<ChatFinding>,
    /// Findings not listed.
    pub more_findings: usize,
    /// The dashboard page with the detail and the evidence.
    pub link: Option<String>,
    /// `cidguard: caller-ID privacy checks for <organisation>`.
    pub footer: String,
}

impl ChatMessage {
    /// Plain text: title, facts, findings, notes, link.
    pub fn text(&self) -> String {
        let mut out = vec![self.title.clone()];
        for (k, v) in &self.facts {
            out.push(format!("{k}: {v}"));
        }
        for f in &self.findings {
            out.push(format!("- {}: {}", f.title, f.value));
        }
        if self.more_findings > 0 {
            out.push(format!("- and {} more", self.more_findings));
        }
        out.extend(self.notes.iter().cloned());
        if let Some(l) = &self.link {
            out.push(format!("Details: {l}"));
        }
        out.join("\n")
    }
}

/// Mask every run of six or more digits (a phone number in any common
/// writing: `+61 3 7010 0142`, `0370100142`, `03-7010-0142`) but its last
/// two digits. For values that came off the wire, on masked channels.
pub fn mask_long_numbers(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        // A run: digits, with single spaces or dashes between them.
        let start = i;
        let mut end = i;
        let mut j = i;
        while j < chars.len() {
            if chars[j].is_ascii_digit() {
                end = j + 1;
                j += 1;
            } else if matches!(chars[j], ' ' | '-')
                && j + 1 < chars.len()
                && chars[j + 1].is_ascii_digit()
            {
                j += 1;
            } else {
                break;
            }
        }
        let run: String = chars[start..end].iter().collect();
        if run.chars().filter(char::is_ascii_digit).count() >= 6 {
            out.push_str(&crate::escape::mask_digits(&run));
        } else {
            out.push_str(&run);
        }
        i = end;
    }
    out
}

/// What came off the wire (or quotes it: a reason, a summary), for a chat
/// message: one line, controls escaped, the organisation's numbers masked
/// (when the renderer masks) and, on a masking channel, any other long
/// number too; cut short.
fn wire(r: &Renderer, s: &str) -> String {
    let masked = r.mask(&one_line(s));
    let masked = if r.masks() {
        mask_long_numbers(&masked)
    } else {
        masked
    };
    crate::escape::clip(&masked, MAX_VALUE).into_owned()
}

/// Build the chat message of a notice with the channel's renderer.
pub fn chat(r: &Renderer, n: &Notice) -> ChatMessage {
    let email = r.email(n);
    let title = strip_prefix(&email.subject);
    let footer = format!("cidguard: caller-ID privacy checks for {}", r.org_name());
    let mut m = ChatMessage {
        severity: Severity::Info,
        title,
        facts: Vec::new(),
        notes: Vec::new(),
        findings: Vec::new(),
        more_findings: 0,
        link: n.link.clone(),
        footer,
    };
    let line = n.line.clone().unwrap_or_default();
    let expected = n.expected.clone().unwrap_or_default();
    let check = |c: &super::notice::CheckFacts| {
        format!(
            "#{} at {} ({})",
            n.check_id.unwrap_or(0),
            fmt_rfc3339(&c.started_at),
            trigger_text(&c.trigger)
        )
    };
    match &n.facts {
        Facts::Leak {
            check: c, since, ..
        }
        | Facts::Reminder {
            check: c, since, ..
        } => {
            m.severity = Severity::Alarm;
            let identity = c.findings.iter().any(|f| f.kind != Kind::Presentation);
            m.facts.push(("Line".into(), line));
            m.facts.push((
                if identity {
                    "Leaking since"
                } else {
                    "Failing since"
                }
                .into(),
                fmt_time(*since),
            ));
            m.facts.push(("Must present".into(), expected));
            m.facts.push(("Check".into(), check(c)));
            for (i, f) in c.findings.iter().enumerate() {
                if i >= MAX_FINDINGS {
                    m.more_findings = c.findings.len() - MAX_FINDINGS;
                    break;
                }
                let what = f.kind.what_went_wrong();
                let place = if f.shown {
                    "shown to the called party"
                } else {
                    "readable by whoever receives the call"
                };
                m.findings.push(ChatFinding {
                    title: format!("{what} in {} ({place})", crate::escape::clip(&f.header, 60)),
                    value: wire(r, &f.value),
                });
            }
            m.notes.push(format!(
                "Re-check: {}",
                r.recheck(n.line.as_deref().unwrap_or(""))
            ));
        }
        Facts::Resolved {
            check: c,
            failed_since,
            failed_summary,
        } => {
            m.severity = Severity::Good;
            m.facts.push(("Line".into(), line));
            m.facts.push(("Presents".into(), expected));
            if let Some(since) = failed_since {
                m.facts.push((
                    "Had been failing".into(),
                    format!(
                        "since {} (for {})",
                        fmt_time(*since),
                        fmt_duration((n.at - *since).to_std().unwrap_or_default())
                    ),
                ));
                if let Some(s) = failed_summary {
                    m.facts.push(("It was".into(), wire(r, s)));
                }
            }
            m.facts.push(("Check".into(), check(c)));
        }
        Facts::CantTest {
            check: c,
            run,
            since,
            reasons,
            last,
        } => {
            m.severity = Severity::Warn;
            m.facts.push(("Line".into(), line));
            m.facts.push((
                "Inconclusive".into(),
                format!("the last {run} checks, since {}", fmt_time(*since)),
            ));
            for why in reasons.iter().rev().take(3) {
                m.facts.push(("Why".into(), wire(r, why)));
            }
            m.facts.push(("Check".into(), check(c)));
            m.notes.push(
                "This is not a leak report: until a check gets through, cidguard can't tell whether the line is still private."
                    .into(),
            );
            if let LastKnown::Failing { since, summary } = last {
                m.notes.push(format!(
                    "The last check that got through found a LEAK (failing since {}: {}). Assume it is still leaking.",
                    fmt_time(*since),
                    wire(r, summary)
                ));
            }
        }
        Facts::Drift {
            check: c,
            before,
            after,
        } => {
            m.severity = Severity::Info;
            m.facts.push(("Line".into(), line));
            for change in before.changes(after).iter().take(MAX_FINDINGS) {
                m.facts.push(("Changed".into(), wire(r, change)));
            }
            m.facts.push(("Check".into(), check(c)));
            m.notes.push(
                "Nothing leaked, but the identity headers changed shape since the line's last pass: worth a look before it turns into a leak."
                    .into(),
            );
        }
        Facts::MaintenanceSummary { lines } => {
            m.severity = if lines
                .iter()
                .any(|l| matches!(l.now, LastKnown::Failing { .. }))
            {
                Severity::Alarm
            } else if lines.iter().any(|l| l.cant_test) {
                Severity::Warn
            } else {
                Severity::Good
            };
            for l in lines {
                let state = match (&l.now, l.cant_test) {
                    (LastKnown::Failing { .. }, _) => "STILL LEAKING",
                    (_, true) => "can't be tested",
                    (LastKnown::Passing, false) => "private",
                    (LastKnown::Unconfirmed { .. }, false) => "unconfirmed leak",
                    (LastKnown::Unknown, false) => "not judged yet",
                };
                m.facts.push((
                    format!("Line {}", truncate(&l.line, 60)),
                    format!("{state} ({} held)", l.held.len() + l.dropped as usize),
                ));
            }
            if m.link.is_none() {
                // The latest held check's page, as the email links it.
                m.link = lines
                    .iter()
                    .flat_map(|l| l.held.iter().rev())
                    .find_map(|h| h.notice.as_ref().and_then(|n| n.link.clone()));
            }
        }
        Facts::DeviceReminder {
            device,
            number,
            last_call_in,
            ..
        } => {
            m.severity = Severity::Info;
            m.facts.push(("Device".into(), device.clone()));
            m.facts.push(("Number to dial".into(), number.clone()));
            m.facts.push((
                "Last call-in".into(),
                last_call_in.map(fmt_time).unwrap_or_else(|| "never".into()),
            ));
            m.notes.push(format!(
                "From the phone {device:?}, dial {number} to hear whether it hides its caller ID."
            ));
        }
        Facts::Test {} => {
            // The email's subject says "Test email"; this is not one.
            m.title = "Test notice".into();
            m.facts.push(("Sent".into(), fmt_time(n.at)));
            m.notes.push(format!(
                "This is a test notice from cidguard for {}. If you can read it, alerts reach this channel.",
                r.org_name()
            ));
        }
        Facts::LegacyEmail { .. } => {
            m.title = wire(r, &m.title);
        }
    }
    if r.masks() {
        m.title = mask_long_numbers(&m.title);
    }
    if n.kind == AlertKind::Test {
        m.severity = Severity::Info;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_numbers_are_masked_short_ones_kept() {
        assert_eq!(
            mask_long_numbers("<sip:+61412345678@x>;tag=12"),
            "<sip:+•••••••••78@x>;tag=12"
        );
        assert_eq!(
            mask_long_numbers("call 0412 345 678 now"),
            "call •••• ••• •78 now"
        );
        assert_eq!(mask_long_numbers("03-7010-0142"), "••-••••-••42");
        assert_eq!(
            mask_long_numbers("check #4211 at 10:00"),
            "check #4211 at 10:00"
        );
        assert_eq!(mask_long_numbers("no digits"), "no digits");
    }
}

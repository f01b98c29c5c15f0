//! What an alert email says: subject, a plain-text part and an HTML part,
//! rendered from a [`Notice`] when the email channel delivers it. Pure: no
//! I/O, no clock.
//!
//! Both parts come from one document model ([`Doc`]), so they always say
//! the same thing, and every string goes through the same cleaning on its
//! way out: control and bidirectional-override characters from SIP messages
//! (hostile input: anyone can send the endpoint an INVITE) are shown as
//! escapes (`\r`, `\u{1b}`, `\u{202e}`: [`crate::escape::control`]; the
//! subject is one line, so its line breaks are escaped too), and the HTML
//! part escapes every character that means something in HTML. There is no
//! path from a SIP value to raw HTML.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::check::result::{CheckResult, Trigger};
use crate::config::Config;
use crate::verdict::numbers::{NumberError, NumberSet};
use crate::verdict::Kind;

use super::notice::{Facts, LastKnown, LeakBasis, Notice, SummaryLine};
use super::shape::IdentityShape;
use super::state::HeldAlert;
use super::AlertKind;

/// A rendered email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    /// One line, controls escaped.
    pub subject: String,
    /// The text/plain part.
    pub text: String,
    /// The text/html part.
    pub html: String,
}

/// Why a renderer can't be set up.
#[derive(Debug, thiserror::Error)]
pub enum RenderSetupError {
    #[error("the organisation's numbers can't be read for masking: {0}")]
    Numbers(#[from] NumberError),
}

/// What a line notice's email says beyond its check: from the notice.
struct About {
    /// The check's history id.
    check_id: i64,
    /// What the line must present, in words.
    expected: String,
    /// The check's dashboard page.
    link: Option<String>,
}

impl About {
    fn of(n: &Notice) -> About {
        About {
            check_id: n.check_id.unwrap_or(0),
            expected: n
                .expected
                .clone()
                .unwrap_or_else(|| "(this line is no longer in the config)".into()),
            link: n.link.clone(),
        }
    }
}

/// Everything from the config that a channel's messages need, compiled
/// once per channel (masking is the channel's choice).
#[derive(Debug, Clone)]
pub struct Renderer {
    /// Named in footers.
    org_name: String,
    /// The email channel's recipients (listed in the test email).
    recipients: Vec<String>,
    /// The dashboard's base URL, for links in test emails and in summaries
    /// of notices held by an earlier cidguard.
    dashboard_url: Option<String>,
    /// Named in the re-check command.
    config_path: String,
    /// Hide the organisation's numbers but their last two digits.
    mask: bool,
    /// The organisation's numbers, to find them in any form.
    numbers: NumberSet,
    /// The configured lines (listed in the test email).
    lines: Vec<String>,
}

/// Longest finding value shown; SIP headers can be kilobytes long.
const MAX_VALUE_CHARS: usize = 400;

impl Renderer {
    /// `config_path` is what the re-check command in emails names; give the
    /// path the daemon was started with, absolute if possible.
    /// This is the `email` channel's renderer (`[alerts]`'s recipients and
    /// masking); [`Renderer::for_channel`] gives another channel's.
    pub fn from_config(cfg: &Config, config_path: &Path) -> Result<Renderer, RenderSetupError> {
        let alerts = cfg.alerts.as_ref();
        Ok(Renderer {
            org_name: cfg.organisation.name.clone(),
            recipients: alerts.map(|a| a.recipients.clone()).unwrap_or_default(),
            dashboard_url: alerts
                .and_then(|a| a.dashboard_url.as_deref())
                .map(|u| u.trim().trim_end_matches('/').to_string()),
            config_path: config_path.display().to_string(),
            mask: alerts.is_some_and(|a| a.mask_numbers),
            numbers: NumberSet::new(&cfg.organisation.numbers, &cfg.organisation.region)?,
            lines: cfg.lines.iter().map(|l| l.name.clone()).collect(),
        })
    }

    /// The same, with a channel's recipients (email) and masking.
    pub fn for_channel(&self, recipients: Vec<String>, mask: bool) -> Renderer {
        Renderer {
            recipients,
            mask,
            ..self.clone()
        }
    }

    /// The email channel's recipients.
    pub fn recipients(&self) -> &[String] {
        &self.recipients
    }

    /// Whether numbers are masked.
    pub fn masks(&self) -> bool {
        self.mask
    }

    /// The organisation's name.
    pub fn org_name(&self) -> &str {
        &self.org_name
    }

    /// The re-check command for a line, as emails print it.
    pub fn recheck(&self, line: &str) -> String {
        self.recheck_command(line)
    }

    /// A notice's email.
    pub fn email(&self, n: &Notice) -> Email {
        let about = About::of(n);
        match &n.facts {
            Facts::Leak {
                check,
                since,
                basis,
            } => self.leak(&check.to_result(), &about, *since, basis),
            Facts::Reminder {
                check,
                since,
                every_secs,
            } => self.reminder(
                &check.to_result(),
                &about,
                *since,
                n.at,
                Duration::from_secs(*every_secs),
            ),
            Facts::Resolved {
                check,
                failed_since,
                failed_summary,
            } => self.resolved(
                &check.to_result(),
                &about,
                failed_since.map(|s| (s, failed_summary.clone().unwrap_or_default())),
                n.at,
            ),
            Facts::CantTest {
                check,
                run,
                since,
                reasons,
                last,
            } => self.cant_test(&check.to_result(), &about, *run, *since, reasons, last),
            Facts::Drift {
                check,
                before,
                after,
            } => self.drift(&check.to_result(), &about, before, after),
            Facts::MaintenanceSummary { lines } => self.maintenance_summary(lines, n.at),
            Facts::Test {} => self.test_email(n.at),
            Facts::DeviceReminder {
                device,
                owner,
                number,
                every_secs,
                last_call_in,
            } => self.device_reminder(
                device,
                owner,
                number,
                Duration::from_secs(*every_secs),
                *last_call_in,
            ),
            Facts::LegacyEmail {
                subject,
                text,
                html,
                ..
            } => Email {
                subject: subject.clone(),
                text: text.clone(),
                html: html.clone(),
            },
        }
    }

    /// The subject of a held notice, as its own email would have had it.
    fn held_subject(&self, h: &HeldAlert) -> String {
        match &h.notice {
            Some(n) if h.subject.is_empty() => self.email(n).subject,
            _ => h.subject.clone(),
        }
    }

    /// The text part of a held leak or reminder, for the summary to quote.
    fn held_text(&self, h: &HeldAlert) -> Option<String> {
        if h.text.is_some() {
            return h.text.clone();
        }
        h.notice
            .as_ref()
            .filter(|n| matches!(n.kind, AlertKind::Leak | AlertKind::Reminder))
            .map(|n| self.email(n).text)
    }

    /// Hide the organisation's numbers (when masking is on): every digit of
    /// a configured number, in whatever form it appears, becomes `•` except
    /// the last two.
    pub fn mask(&self, text: &str) -> String {
        if !self.mask || self.numbers.is_empty() {
            return text.to_string();
        }
        let mut out = text.to_string();
        // The config labels first: a range label ("+61 3 7010 0100-0199")
        // is longer than the number the scanner would find in it.
        let mut labels: Vec<&str> = self
            .numbers
            .entries
            .iter()
            .map(|e| e.label.as_str())
            .collect();
        labels.sort_by_key(|l| std::cmp::Reverse(l.len()));
        for l in labels {
            if l.chars().filter(char::is_ascii_digit).count() > 2 && out.contains(l) {
                out = out.replace(l, &crate::escape::mask_digits(l));
            }
        }
        // Then every other form the verdict engine recognises (E.164,
        // national, with prefixes, embedded in longer tokens). A few passes,
        // since masking one hit can expose the next as a separate token.
        for _ in 0..3 {
            let hits: Vec<String> = self
                .numbers
                .find_in(&out)
                .into_iter()
                .map(|h| h.as_written)
                .filter(|w| w.chars().filter(char::is_ascii_digit).count() > 2)
                .collect();
            if hits.is_empty() {
                break;
            }
            for w in hits {
                out = out.replace(&w, &crate::escape::mask_digits(&w));
            }
        }
        out
    }

    fn recheck_command(&self, line: &str) -> String {
        format!(
            "cidguard check --config {} --line {}",
            shell_quote(&self.config_path),
            shell_quote(line)
        )
    }

    fn check_link(&self, check_id: i64) -> Option<String> {
        self.dashboard_url
            .as_ref()
            .map(|u| format!("{u}/checks/{check_id}"))
    }

    /// The closing blocks every line alert has: re-check command, link. A
    /// call-in's check is not a line's: it is repeated by calling again.
    fn closing(&self, doc: &mut Doc, r: &CheckResult, a: &About) {
        if let Trigger::CallIn { device } = &r.trigger {
            doc.push(Block::Heading("Test again".into()));
            doc.push(Block::Para(match device {
                Some(d) => format!(
                    "After changing the phone's caller-ID setting, call the self-test number again from {d:?}: the call is judged the same way and the result is spoken to the caller."
                ),
                None => "After changing the phone's caller-ID setting, call the self-test number again from the same phone: the call is judged the same way and the result is spoken to the caller.".into(),
            }));
        } else {
            doc.push(Block::Heading("Re-check now".into()));
            doc.push(Block::Command(self.recheck_command(&r.line)));
        }
        if let Some(url) = a.link.clone() {
            doc.push(Block::Link {
                label: "Details and evidence".into(),
                url,
            });
        }
        doc.push(Block::Footer(format!(
            "cidguard: caller-ID privacy checks for {}",
            self.org_name
        )));
    }

    /// `number shown in From, name shown in P-Asserted-Identity`, at most
    /// three items for a subject.
    fn short_summary(&self, r: &CheckResult) -> String {
        let full = self.mask(&r.summary());
        let parts: Vec<&str> = full.split(", ").collect();
        if parts.len() > 3 {
            format!("{} and {} more", parts[..3].join(", "), parts.len() - 3)
        } else {
            full
        }
    }

    fn facts_for_check(&self, r: &CheckResult, check_id: i64) -> Vec<(String, String)> {
        let mut facts = vec![(
            "Check".to_string(),
            format!(
                "#{check_id} at {} ({})",
                fmt_rfc3339(&r.started_at),
                trigger_text(&r.trigger)
            ),
        )];
        if let Some(s) = &r.pbx_software {
            facts.push(("PBX software".into(), s.clone()));
        }
        facts
    }

    fn findings_block(&self, r: &CheckResult) -> Block {
        Block::Findings(
            r.findings
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let what = f.kind.what_went_wrong();
                    let place = if f.shown {
                        "shown to the called party"
                    } else {
                        "not displayed, but readable by whoever receives the call"
                    };
                    FindingView {
                        title: format!("{}. {what} in {} ({place})", i + 1, f.header),
                        value: truncate(&self.mask(&f.value), MAX_VALUE_CHARS),
                        why: self.mask(&f.detail),
                    }
                })
                .collect(),
        )
    }

    fn arrived_block(&self, r: &CheckResult) -> Option<Block> {
        let mut items: Vec<String> = r
            .presented
            .identities
            .iter()
            .map(|i| truncate(&self.mask(&format!("{}: {i}", i.header)), MAX_VALUE_CHARS))
            .collect();
        if let Some(p) = &r.presented.privacy {
            items.push(truncate(&format!("Privacy: {p}"), MAX_VALUE_CHARS));
        }
        (!items.is_empty()).then_some(Block::List(items))
    }

    fn leak_doc(
        &self,
        r: &CheckResult,
        a: &About,
        title: String,
        intro: Vec<String>,
        since: DateTime<Utc>,
    ) -> Doc {
        let check_id = a.check_id;
        let identity = r.findings.iter().any(|f| f.kind != Kind::Presentation);
        let mut doc = Doc::new(Tone::Alarm, title);
        for p in intro {
            doc.push(Block::Para(p));
        }
        let mut facts = vec![
            (capitalised(noun(r)), r.line.clone()),
            (
                if identity {
                    "Leaking since"
                } else {
                    "Failing since"
                }
                .to_string(),
                fmt_time(since),
            ),
            ("The line must present".to_string(), a.expected.clone()),
        ];
        facts.extend(self.facts_for_check(r, check_id));
        doc.push(Block::Facts(facts));
        doc.push(Block::Heading(format!(
            "{} ({})",
            if identity {
                "What leaked"
            } else {
                "What was wrong"
            },
            r.findings.len()
        )));
        doc.push(self.findings_block(r));
        if let Some(b) = self.arrived_block(r) {
            doc.push(Block::Heading("What the call presented".into()));
            doc.push(b);
        }
        if !r.notes.is_empty() {
            doc.push(Block::Heading("Notes".into()));
            doc.push(Block::List(
                r.notes
                    .iter()
                    .take(8)
                    .map(|n| truncate(&self.mask(n), MAX_VALUE_CHARS))
                    .collect(),
            ));
        }
        self.closing(&mut doc, r, a);
        doc
    }

    /// A confirmed (or repeated) leak.
    fn leak(&self, r: &CheckResult, a: &About, since: DateTime<Utc>, basis: &LeakBasis) -> Email {
        let check_id = a.check_id;
        let identity = r.findings.iter().any(|f| f.kind != Kind::Presentation);
        let what = if identity {
            "PRIVACY LEAK"
        } else {
            "WRONG CALLER ID"
        };
        let intermittent = matches!(basis, LeakBasis::Repeated { count, .. } if *count > 1);
        let subject = format!(
            "[cidguard] {}{what} on {} {:?}: {}",
            if intermittent { "INTERMITTENT " } else { "" },
            noun(r),
            r.line,
            self.short_summary(r)
        );
        let mut intro = vec![if identity {
            format!(
                "A test call from line {:?} showed the organisation's identity to the person called. Every call this line makes may show it.",
                r.line
            )
        } else {
            format!(
                "A test call from line {:?} did not present what the line must present: it showed a number or name that is not the organisation's, but not what this line should show either.",
                r.line
            )
        }];
        intro.push(match basis {
            LeakBasis::Confirmed { first_check_id } => format!(
                "Check #{first_check_id} found it and an immediate re-check (#{check_id}) confirmed it: this is a configuration change, not a network blip."
            ),
            LeakBasis::Repeated { count, window } if *count > 1 => format!(
                "This line failed {count} checks within {}, while the re-checks in between passed: the leak comes and goes (one of several trunks or routes, a failover path, a PBX with several nodes). Every such call really disclosed it.",
                fmt_duration(*window)
            ),
            LeakBasis::Repeated { .. } => {
                "Alerts are set to fire on the first failed check, without waiting for a re-check."
                    .to_string()
            }
            LeakBasis::CallIn { device: Some(d) } => format!(
                "Someone called the self-test number from the device {d:?} and heard this result: its calls show it. Nothing was re-checked first: a person just heard it."
            ),
            LeakBasis::CallIn { device: None } => "Someone called the self-test number and heard this result. The phone is not one of the configured devices, so its number is not kept; ask who tested their phone just now. Nothing was re-checked first: a person just heard it.".to_string(),
        });
        if matches!(basis, LeakBasis::CallIn { .. }) {
            // The call-in was not a test call from a line.
            intro.remove(0);
        }
        let doc = self.leak_doc(r, a, strip_prefix(&subject), intro, since);
        doc.email(subject)
    }

    /// Still failing, `every` after the last alert.
    fn reminder(
        &self,
        r: &CheckResult,
        a: &About,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
        every: Duration,
    ) -> Email {
        let check_id = a.check_id;
        let identity = r.findings.iter().any(|f| f.kind != Kind::Presentation);
        let how_long = fmt_duration((now - since).to_std().unwrap_or(Duration::ZERO));
        let subject = format!(
            "[cidguard] {} on line {:?} (for {how_long}): {}",
            if identity {
                "STILL LEAKING"
            } else {
                "STILL WRONG CALLER ID"
            },
            r.line,
            self.short_summary(r)
        );
        let intro = vec![format!(
            "Line {:?} has been failing since {} and check #{check_id} still fails. This is a reminder; another follows every {} until the line passes.",
            r.line,
            fmt_time(since),
            fmt_duration(every)
        )];
        let doc = self.leak_doc(r, a, strip_prefix(&subject), intro, since);
        doc.email(subject)
    }

    /// A failing line passes again (`failed_since` set), or a line that
    /// could not be tested can be again (`failed_since` None).
    fn resolved(
        &self,
        r: &CheckResult,
        a: &About,
        failed_since: Option<(DateTime<Utc>, String)>,
        now: DateTime<Utc>,
    ) -> Email {
        let check_id = a.check_id;
        let (subject, para) = match &failed_since {
            Some((since, summary)) => (
                format!("[cidguard] Resolved: line {:?} is private again", r.line),
                format!(
                    "Check #{check_id} passed: line {:?} presents {} again. It had been failing since {} (for {}): {}.",
                    r.line,
                    a.expected.clone(),
                    fmt_time(*since),
                    fmt_duration((now - *since).to_std().unwrap_or(Duration::ZERO)),
                    self.mask(summary)
                ),
            ),
            None => (
                format!(
                    "[cidguard] Line {:?} can be tested again: private",
                    r.line
                ),
                format!(
                    "Check #{check_id} could test line {:?} again, and it passed: it presents {}.",
                    r.line,
                    a.expected.clone()
                ),
            ),
        };
        let mut doc = Doc::new(Tone::Good, strip_prefix(&subject));
        doc.push(Block::Para(para));
        let mut facts = vec![(capitalised(noun(r)), r.line.clone())];
        facts.extend(self.facts_for_check(r, check_id));
        doc.push(Block::Facts(facts));
        if let Some(b) = self.arrived_block(r) {
            doc.push(Block::Heading("What the call presented".into()));
            doc.push(b);
        }
        self.closing(&mut doc, r, a);
        doc.email(subject)
    }

    /// `run` consecutive inconclusive results: cidguard can't test the line.
    fn cant_test(
        &self,
        r: &CheckResult,
        a: &About,
        run: u32,
        since: DateTime<Utc>,
        reasons: &[String],
        last: &LastKnown,
    ) -> Email {
        let check_id = a.check_id;
        let reason = reasons
            .last()
            .cloned()
            .or_else(|| r.reason.clone())
            .unwrap_or_else(|| "no reason given".into());
        let subject = format!(
            "[cidguard] Can't test line {:?}: {}",
            r.line,
            truncate(&one_line(&self.mask(&reason)), 90)
        );
        let mut doc = Doc::new(Tone::Warn, strip_prefix(&subject));
        doc.push(Block::Para(format!(
            "cidguard could not test line {:?}: the last {run} checks, since {}, were inconclusive. This is not a leak report: until a check gets through, cidguard can't tell whether the line is still private.",
            r.line,
            fmt_time(since)
        )));
        if let Some(h) = hint(&reason) {
            doc.push(Block::Para(h.to_string()));
        }
        doc.push(Block::Heading("Why".into()));
        let mut why: Vec<String> = reasons
            .iter()
            .map(|x| truncate(&self.mask(x), MAX_VALUE_CHARS))
            .collect();
        if why.is_empty() {
            why.push(truncate(&self.mask(&reason), MAX_VALUE_CHARS));
        }
        doc.push(Block::List(why));
        let last_text = match last {
            LastKnown::Unknown => "The line has not been judged yet.".to_string(),
            LastKnown::Passing => "The last check that got through passed.".to_string(),
            LastKnown::Failing { since, summary } => format!(
                "The last check that got through found a LEAK (failing since {}: {}). Assume it is still leaking.",
                fmt_time(*since),
                self.mask(summary)
            ),
            LastKnown::Unconfirmed { at, check_id } => format!(
                "Check #{check_id} at {} found a leak; the re-check to confirm it could not get through.",
                fmt_time(*at)
            ),
        };
        doc.push(Block::Para(last_text));
        let mut facts = vec![
            ("Line".to_string(), r.line.clone()),
            ("The line must present".to_string(), a.expected.clone()),
        ];
        facts.extend(self.facts_for_check(r, check_id));
        doc.push(Block::Facts(facts));
        self.closing(&mut doc, r, a);
        doc.email(subject)
    }

    /// A passing line's identity headers changed shape since its last pass.
    fn drift(
        &self,
        r: &CheckResult,
        a: &About,
        before: &IdentityShape,
        after: &IdentityShape,
    ) -> Email {
        let check_id = a.check_id;
        let subject = format!(
            "[cidguard] Caller-ID headers changed on line {:?} (still private)",
            r.line
        );
        let mut doc = Doc::new(Tone::Info, strip_prefix(&subject));
        doc.push(Block::Para(format!(
            "Check #{check_id} passed: nothing leaked. But the identity headers the call arrived with have a different shape from the line's last pass. Something changed on the PBX or the carrier (an update, a new trunk, a routing change): worth a look before it turns into a leak."
        )));
        doc.push(Block::Heading("What changed".into()));
        doc.push(Block::List(
            before
                .changes(after)
                .iter()
                .map(|c| truncate(&self.mask(c), MAX_VALUE_CHARS))
                .collect(),
        ));
        if let Some(b) = self.arrived_block(r) {
            doc.push(Block::Heading("What the call presented".into()));
            doc.push(b);
        }
        let mut facts = vec![
            ("Line".to_string(), r.line.clone()),
            ("The line must present".to_string(), a.expected.clone()),
        ];
        facts.extend(self.facts_for_check(r, check_id));
        doc.push(Block::Facts(facts));
        self.closing(&mut doc, r, a);
        doc.email(subject)
    }

    /// One email for everything held during a maintenance window.
    pub fn maintenance_summary(&self, lines: &[SummaryLine], now: DateTime<Utc>) -> Email {
        let leaking: Vec<&str> = lines
            .iter()
            .filter(|l| matches!(l.now, LastKnown::Failing { .. }))
            .map(|l| l.line.as_str())
            .collect();
        let untestable: Vec<&str> = lines
            .iter()
            .filter(|l| l.cant_test)
            .map(|l| l.line.as_str())
            .collect();
        let held: usize = lines
            .iter()
            .map(|l| l.held.len() + l.dropped as usize)
            .sum();
        let quoted = |v: &[&str]| {
            v.iter()
                .map(|l| format!("{l:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (tone, subject) = if !leaking.is_empty() {
            (
                Tone::Alarm,
                format!(
                    "[cidguard] Maintenance ended: PRIVACY LEAK on {} {}",
                    if leaking.len() == 1 { "line" } else { "lines" },
                    quoted(&leaking)
                ),
            )
        } else if !untestable.is_empty() {
            (
                Tone::Warn,
                format!(
                    "[cidguard] Maintenance ended: can't test {} {}",
                    if untestable.len() == 1 {
                        "line"
                    } else {
                        "lines"
                    },
                    quoted(&untestable)
                ),
            )
        } else {
            (
                Tone::Good,
                format!(
                    "[cidguard] Maintenance ended: {held} held {}, no line leaking now",
                    if held == 1 { "alert" } else { "alerts" }
                ),
            )
        };
        let mut doc = Doc::new(tone, strip_prefix(&subject));
        doc.push(Block::Para(format!(
            "A maintenance window ended at {}. Checks ran during it; the {held} {} they raised were held until now and are summarised here, line by line, with where each line stands now.",
            fmt_time(now),
            if held == 1 { "alert" } else { "alerts" }
        )));
        for l in lines {
            let state = match (&l.now, l.cant_test) {
                (LastKnown::Failing { .. }, _) => "STILL LEAKING",
                (_, true) => "can't be tested",
                (LastKnown::Passing, false) => "private",
                (LastKnown::Unconfirmed { .. }, false) => "unconfirmed leak",
                (LastKnown::Unknown, false) => "not judged yet",
            };
            doc.push(Block::Heading(format!("Line {:?}: {state}", l.line)));
            let mut items: Vec<String> = l
                .held
                .iter()
                .map(|h| {
                    format!(
                        "{} (check #{}): {}",
                        fmt_time(h.at),
                        h.check_id.map_or("-".to_string(), |c| c.to_string()),
                        strip_prefix(&self.held_subject(h))
                    )
                })
                .collect();
            if l.dropped > 0 {
                items.push(format!(
                    "and {} earlier alerts not kept (only the latest are kept while held)",
                    l.dropped
                ));
            }
            doc.push(Block::List(items));
            if matches!(l.now, LastKnown::Failing { .. }) {
                if let Some(text) = l.held.iter().rev().find_map(|h| self.held_text(h)) {
                    doc.push(Block::Pre(text));
                }
                doc.push(Block::Command(self.recheck_command(&l.line)));
            }
            if let Some(url) = l
                .held
                .iter()
                .rev()
                .find_map(|h| h.check_id)
                .and_then(|c| self.check_link(c))
            {
                doc.push(Block::Link {
                    label: "Latest check".into(),
                    url,
                });
            }
        }
        doc.push(Block::Footer(format!(
            "cidguard: caller-ID privacy checks for {}",
            self.org_name
        )));
        doc.email(subject)
    }

    /// `cidguard alert test`.
    /// A device not tested for `every`: its owner is asked to call.
    fn device_reminder(
        &self,
        device: &str,
        owner: &str,
        number: &str,
        every: Duration,
        last: Option<DateTime<Utc>>,
    ) -> Email {
        let subject = format!("[cidguard] Please test the phone {device:?}: call {number}");
        let mut doc = Doc::new(Tone::Info, strip_prefix(&subject).to_string());
        doc.push(Block::Para(format!(
            "The phone {device:?} has not called the self-test number for {}. From that phone, please dial {number}: you will hear whether it hides its caller ID, and the call is never answered (it costs nothing). If it says your number or name is shown, the phone's settings or its carrier show it: stop using it for calls to clients until it is fixed.",
            fmt_duration(every)
        )));
        doc.push(Block::Facts(vec![
            ("Device".to_string(), device.to_string()),
            ("Owner".to_string(), owner.to_string()),
            ("Number to dial".to_string(), number.to_string()),
            (
                "Last call-in".to_string(),
                last.map(fmt_time).unwrap_or_else(|| "never".into()),
            ),
        ]));
        doc.push(Block::Footer(format!(
            "cidguard: caller-ID privacy checks for {}",
            self.org_name
        )));
        doc.email(subject)
    }

    pub fn test_email(&self, now: DateTime<Utc>) -> Email {
        let subject = "[cidguard] Test email".to_string();
        let mut doc = Doc::new(Tone::Info, "Test email".into());
        doc.push(Block::Para(format!(
            "This is a test email from cidguard for {}. If you can read it, alerts reach you.",
            self.org_name
        )));
        let mut facts = vec![
            ("Sent".to_string(), fmt_time(now)),
            ("Config".to_string(), self.config_path.clone()),
            ("Lines".to_string(), self.lines.join(", ")),
            (
                "Numbers masked".to_string(),
                if self.mask { "yes" } else { "no" }.into(),
            ),
        ];
        facts.push(("Recipients".to_string(), self.recipients.join(", ")));
        doc.push(Block::Facts(facts));
        if let Some(u) = &self.dashboard_url {
            doc.push(Block::Link {
                label: "Dashboard".into(),
                url: u.clone(),
            });
        }
        doc.push(Block::Footer(format!(
            "cidguard: caller-ID privacy checks for {}",
            self.org_name
        )));
        doc.email(subject)
    }
}

/// What a result is about, in words: a line, or the phone that called in
/// (a device, or "self-test" for a phone that is not one).
fn noun(r: &CheckResult) -> &'static str {
    match r.trigger {
        Trigger::CallIn { .. } => "phone",
        _ => "line",
    }
}

fn capitalised(word: &str) -> String {
    let mut c = word.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// Subject without the `[cidguard] ` tag, as the email's title.
pub(crate) fn strip_prefix(subject: &str) -> String {
    subject
        .strip_prefix("[cidguard] ")
        .unwrap_or(subject)
        .to_string()
}

/// A plain-language reading of a reason, when one is recognisable.
pub(crate) fn hint(reason: &str) -> Option<&'static str> {
    let r = reason.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| r.contains(w));
    if has(&[
        "401",
        "403",
        "407",
        "auth",
        "credential",
        "password",
        "forbidden",
    ]) {
        Some("The PBX refused the line's login: check the line's SIP username and password in the config and on the PBX.")
    } else if has(&[
        "unreachable",
        "refused",
        "no response",
        "no reply",
        "timed out",
        "timeout",
        "resolve",
        "connect",
    ]) {
        Some("The PBX could not be reached: check that it is up and that this host can reach it.")
    } else if has(&["arriv", "endpoint"]) {
        Some("The test call did not reach cidguard's endpoint: check the route from the PBX to the endpoint number.")
    } else {
        None
    }
}

pub(crate) fn trigger_text(t: &Trigger) -> String {
    match t {
        Trigger::Schedule => "scheduled".into(),
        Trigger::Manual { label: None, .. } => "run by hand".into(),
        Trigger::Manual { label: Some(l), .. } => format!("run by hand: {l}"),
        Trigger::PbxChange { to, .. } => format!("PBX software changed to {to}"),
        Trigger::Confirm => "re-check to confirm a failure".into(),
        Trigger::Api { label: None, .. } => "through the API".into(),
        Trigger::Api { label: Some(l), .. } => format!("through the API: {l}"),
        Trigger::CallIn { device: Some(d) } => format!("a call to the self-test number from {d}"),
        Trigger::CallIn { device: None } => "a call to the self-test number".into(),
    }
}

/// `2025-03-01 14:05 UTC`
pub fn fmt_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

pub(crate) fn fmt_rfc3339(s: &str) -> String {
    DateTime::parse_from_rfc3339(s)
        .map(|t| fmt_time(t.with_timezone(&Utc)))
        .unwrap_or_else(|_| s.to_string())
}

/// `3 days`, `5 hours`, `12 minutes`, `40 seconds`: the largest unit.
pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (n, unit) = if s >= 2 * 86400 {
        (s / 86400, "day")
    } else if s >= 2 * 3600 {
        (s / 3600, "hour")
    } else if s >= 120 {
        (s / 60, "minute")
    } else {
        (s, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// Quote for a POSIX shell when needed, so the command can be pasted.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@+,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

pub(crate) fn one_line(s: &str) -> String {
    s.split(['\r', '\n']).collect::<Vec<_>>().join(" ")
}

/// Make untrusted text safe to show: control characters (other than line
/// breaks, which a text body keeps) and bidirectional overrides, which can
/// hide or reorder what a reader sees, become visible escapes, through the
/// one escaper every output uses ([`crate::escape::control`]).
fn clean(s: &str) -> String {
    s.split('\n')
        .map(crate::escape::control)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Clean, then escape: the only way text reaches the HTML part.
fn h(s: &str) -> String {
    crate::escape::html(&clean(s))
}

/// Clean, on one line: the only way text reaches the text part's fields.
fn t(s: &str) -> String {
    clean(s)
}

#[derive(Debug, Clone, Copy)]
enum Tone {
    Alarm,
    Warn,
    Good,
    Info,
}

impl Tone {
    fn colour(self) -> &'static str {
        match self {
            Tone::Alarm => "#b00020",
            Tone::Warn => "#a15c00",
            Tone::Good => "#1b7a2f",
            Tone::Info => "#1f4e8c",
        }
    }
}

struct FindingView {
    title: String,
    value: String,
    why: String,
}

enum Block {
    Para(String),
    Heading(String),
    Facts(Vec<(String, String)>),
    Findings(Vec<FindingView>),
    List(Vec<String>),
    Command(String),
    Link { label: String, url: String },
    Pre(String),
    Footer(String),
}

/// One email's content, rendered to both parts.
struct Doc {
    tone: Tone,
    title: String,
    blocks: Vec<Block>,
}

impl Doc {
    fn new(tone: Tone, title: String) -> Doc {
        Doc {
            tone,
            title,
            blocks: Vec::new(),
        }
    }

    fn push(&mut self, b: Block) {
        self.blocks.push(b);
    }

    fn email(&self, subject: String) -> Email {
        Email {
            // One line: every control character escaped, line breaks too.
            subject: crate::escape::clip(&subject, 200).into_owned(),
            text: self.text(),
            html: self.html(),
        }
    }

    fn text(&self) -> String {
        let mut o = String::new();
        let title = t(&self.title);
        let _ = writeln!(
            o,
            "{title}\n{}\n",
            "=".repeat(title.chars().count().min(78))
        );
        for b in &self.blocks {
            match b {
                Block::Para(p) => {
                    let _ = writeln!(o, "{}\n", t(p));
                }
                Block::Heading(hd) => {
                    let hd = t(hd);
                    let _ = writeln!(o, "{hd}\n{}", "-".repeat(hd.chars().count().min(78)));
                }
                Block::Facts(facts) => {
                    let w = facts
                        .iter()
                        .map(|(k, _)| k.chars().count())
                        .max()
                        .unwrap_or(0)
                        + 1;
                    for (k, v) in facts {
                        let _ = writeln!(o, "  {:w$} {}", format!("{}:", t(k)), t(&one_line(v)));
                    }
                    o.push('\n');
                }
                Block::Findings(fs) => {
                    for f in fs {
                        let _ = writeln!(o, "  {}", t(&f.title));
                        let _ = writeln!(o, "     value: {}", t(&one_line(&f.value)));
                        let _ = writeln!(o, "     why:   {}", t(&one_line(&f.why)));
                    }
                    o.push('\n');
                }
                Block::List(items) => {
                    for i in items {
                        let _ = writeln!(o, "  - {}", t(&one_line(i)));
                    }
                    o.push('\n');
                }
                Block::Command(c) => {
                    let _ = writeln!(o, "    {}\n", t(c));
                }
                Block::Link { label, url } => {
                    let _ = writeln!(o, "{}: {}\n", t(label), t(url));
                }
                Block::Pre(p) => {
                    for line in t(p).lines() {
                        let _ = writeln!(o, "  | {line}");
                    }
                    o.push('\n');
                }
                Block::Footer(f) => {
                    let _ = writeln!(o, "-- \n{}", t(f));
                }
            }
        }
        o
    }

    fn html(&self) -> String {
        let colour = self.tone.colour();
        let mut o = String::new();
        o.push_str("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>");
        o.push_str(&h(&self.title));
        o.push_str("</title></head>\n<body style=\"font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;font-size:15px;line-height:1.45;color:#1a1a1a;max-width:760px\">\n");
        let _ = writeln!(
            o,
            "<h1 style=\"font-size:20px;color:{colour};border-bottom:3px solid {colour};padding-bottom:4px\">{}</h1>",
            h(&self.title)
        );
        for b in &self.blocks {
            match b {
                Block::Para(p) => {
                    let _ = writeln!(o, "<p>{}</p>", h(p));
                }
                Block::Heading(hd) => {
                    let _ = writeln!(
                        o,
                        "<h2 style=\"font-size:16px;margin:18px 0 6px\">{}</h2>",
                        h(hd)
                    );
                }
                Block::Facts(facts) => {
                    o.push_str("<table style=\"border-collapse:collapse\">\n");
                    for (k, v) in facts {
                        let _ = writeln!(
                            o,
                            "<tr><th style=\"text-align:left;padding:2px 12px 2px 0;vertical-align:top\">{}</th><td style=\"padding:2px 0\">{}</td></tr>",
                            h(k),
                            h(v)
                        );
                    }
                    o.push_str("</table>\n");
                }
                Block::Findings(fs) => {
                    o.push_str("<ol style=\"padding-left:20px\">\n");
                    for f in fs {
                        let _ = writeln!(
                            o,
                            "<li style=\"margin-bottom:10px\"><strong>{}</strong><br>\n<span style=\"color:#555\">value:</span> <code style=\"word-break:break-all\">{}</code><br>\n<span style=\"color:#555\">why:</span> {}</li>",
                            h(f.title.split_once(". ").map_or(&f.title, |(_, rest)| rest)),
                            h(&f.value),
                            h(&f.why)
                        );
                    }
                    o.push_str("</ol>\n");
                }
                Block::List(items) => {
                    o.push_str("<ul>\n");
                    for i in items {
                        let _ = writeln!(
                            o,
                            "<li><code style=\"word-break:break-all\">{}</code></li>",
                            h(i)
                        );
                    }
                    o.push_str("</ul>\n");
                }
                Block::Command(c) => {
                    let _ = writeln!(
                        o,
                        "<pre style=\"background:#f3f3f3;padding:8px;white-space:pre-wrap\">{}</pre>",
                        h(c)
                    );
                }
                Block::Link { label, url } => {
                    let _ = writeln!(o, "<p><a href=\"{}\">{}</a></p>", h(url), h(label));
                }
                Block::Pre(p) => {
                    let _ = writeln!(
                        o,
                        "<pre style=\"border-left:3px solid #ccc;padding-left:8px;white-space:pre-wrap\">{}</pre>",
                        h(p)
                    );
                }
                Block::Footer(f) => {
                    let _ = writeln!(o, "<hr><p style=\"color:#777;font-size:12px\">{}</p>", h(f));
                }
            }
        }
        o.push_str("</body></html>\n");
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::result::CallSummary;
    use crate::config::Expect;
    use crate::verdict::{Finding, Outcome, Presented, PresentedIdentity};

    /// What a notice about check `check_id` of line "reception" says
    /// beyond the check, as the state machine makes it from the config.
    fn about(check_id: i64) -> About {
        let toml = renderer_toml(false);
        let plan = crate::plan::Plan::from_toml(&toml, Path::new("t.toml")).unwrap();
        let p = crate::alert::AlertPolicy::from_plan(&plan);
        About {
            check_id,
            expected: p.expectation("reception"),
            link: p.check_link(check_id),
        }
    }

    fn renderer(mask: bool) -> Renderer {
        let toml = renderer_toml(mask);
        let cfg = Config::from_toml(&toml, Path::new("t.toml")).unwrap();
        Renderer::from_config(&cfg, Path::new("/etc/cidguard/cidguard.toml")).unwrap()
    }

    fn renderer_toml(mask: bool) -> String {
        format!(
            r#"
[organisation]
name = "Eastside Women's Refuge"
region = "AU"
numbers = ["+61 3 7010 0142", "+61 3 7010 0100-0199"]

[[line]]
name = "reception"
expect = "withheld"

[alerts]
recipients = ["noc@example.org"]
from = "cidguard <cidguard@example.org>"
dashboard_url = "https://cidguard.example/"
mask_numbers = {mask}
file = {{ dir = "/tmp/x" }}
"#
        )
    }

    fn leak_result(value: &str) -> CheckResult {
        CheckResult {
            line: "reception".into(),
            outcome: Outcome::Fail,
            expected: Expect::Withheld,
            findings: vec![Finding {
                header: "From".into(),
                value: value.into(),
                kind: Kind::Number,
                shown: true,
                detail: "the caller number \"+61370100142\" is the organisation's number +61370100142 (configured as \"+61 3 7010 0142\", read in international (E.164) form).".into(),
                matched: "+61 3 7010 0142".into(),
                seen: String::new(),
            }],
            reason: None,
            notes: vec![],
            presented: Presented {
                identities: vec![PresentedIdentity {
                    header: "From".into(),
                    display: Some("<b>Eastside</b>".into()),
                    user: Some("+61370100142".into()),
                    host: "pbx.example".into(),
                }],
                privacy: None,
                identity_headers: vec!["From".into()],
            },
            started_at: "2025-03-01T10:00:00.000Z".into(),
            duration_ms: 10,
            call: CallSummary::default(),
            trigger: Trigger::Confirm,
            pbx_software: Some("FreePBX 17".into()),
            evidence_ref: None,
            evidence: vec![],
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn leak_email_says_what_where_since_and_how_to_recheck() {
        let r = leak_result("\"Eastside\" <sip:+61370100142@pbx.example>");
        let e = renderer(false).leak(
            &r,
            &about(42),
            at("2025-03-01T09:59:00Z"),
            &LeakBasis::Confirmed { first_check_id: 41 },
        );
        assert_eq!(
            e.subject,
            "[cidguard] PRIVACY LEAK on line \"reception\": number shown in From"
        );
        for part in [&e.text, &e.html] {
            assert!(part.contains("+61370100142"), "{part}");
            assert!(part.contains("2025-03-01 09:59 UTC"), "{part}");
            assert!(part.contains("no number and no name (withheld)"), "{part}");
            assert!(
                part.contains(
                    "cidguard check --config /etc/cidguard/cidguard.toml --line reception"
                ),
                "{part}"
            );
            assert!(
                part.contains("https://cidguard.example/checks/42"),
                "{part}"
            );
            assert!(part.contains("#41"), "{part}");
        }
    }

    #[test]
    fn masking_hides_all_but_the_last_two_digits() {
        let r = leak_result("<sip:+61370100142@pbx.example>;tag=1");
        let e = renderer(true).leak(
            &r,
            &about(42),
            at("2025-03-01T09:59:00Z"),
            &LeakBasis::Confirmed { first_check_id: 41 },
        );
        for part in [&e.text, &e.html] {
            assert!(!part.contains("370100142"), "{part}");
            assert!(!part.contains("7010 0142"), "{part}");
            assert!(part.contains("+•••••••••42"), "{part}");
            assert!(part.contains("+•• • •••• ••42"), "{part}");
        }
        let m =
            renderer(true).mask("range +61 3 7010 0100-0199 and 03 7010 0150 and %2B61370100142");
        assert!(!m.contains("0100") && !m.contains("7010"), "{m}");
    }

    #[test]
    fn html_escapes_hostile_sip_values() {
        let r = leak_result("\"<script>alert(1)</script>\u{202e}\" <sip:x@y>");
        let e = renderer(false).leak(
            &r,
            &about(1),
            at("2025-03-01T09:59:00Z"),
            &LeakBasis::Confirmed { first_check_id: 1 },
        );
        assert!(!e.html.contains("<script>"), "{}", e.html);
        assert!(!e.html.contains("<b>Eastside"), "{}", e.html);
        assert!(e.html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!e.html.contains('\u{202e}') && !e.text.contains('\u{202e}'));
        assert!(e.text.contains("\\u{202e}"));
    }

    /// No raw control, line break or bidirectional override reaches a
    /// subject or the text part from a reason phrase or a header name.
    #[test]
    fn subjects_are_one_line_with_controls_escaped() {
        let hostile = "403 Forbidden\u{1b}]0;pwned\u{7}\r\nBcc: x@evil.example\u{9b}31m\u{202e}";
        let raw = |s: &str| {
            s.chars().find(|c| {
                c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
            })
        };
        let mut r = leak_result("x");
        r.outcome = Outcome::Inconclusive;
        r.findings.clear();
        r.reason = Some(format!("registration refused: {hostile}"));
        let e = renderer(false).cant_test(
            &r,
            &about(1),
            3,
            at("2025-03-01T09:59:00Z"),
            &[r.reason.clone().unwrap_or_default()],
            &LastKnown::Unknown,
        );
        assert_eq!(raw(&e.subject), None, "{:?}", e.subject);
        assert!(e.subject.contains("\\u{1b}]0;pwned\\u{7}"), "{}", e.subject);
        let body_lines_ok = e.text.lines().all(|l| raw(l).is_none());
        assert!(body_lines_ok, "{:?}", e.text);
        assert!(!e.text.contains("\nBcc:"), "{}", e.text);
        let mut r = leak_result("x");
        r.findings[0].header = format!("X-Evil{hostile}");
        let e = renderer(false).leak(
            &r,
            &about(1),
            at("2025-03-01T09:59:00Z"),
            &LeakBasis::Confirmed { first_check_id: 1 },
        );
        assert_eq!(raw(&e.subject), None, "{:?}", e.subject);
        assert!(
            e.subject.contains("X-Evil403 Forbidden\\u{1b}"),
            "{}",
            e.subject
        );
        assert!(e.text.lines().all(|l| raw(l).is_none()), "{:?}", e.text);
    }

    #[test]
    fn no_dashboard_no_link() {
        let toml = r#"
[organisation]
name = "Org"
region = "AU"
[[line]]
name = "reception"
expect = "withheld"
[alerts]
recipients = ["noc@example.org"]
from = "cidguard@example.org"
file = { dir = "/tmp/x" }
"#;
        let plan = crate::plan::Plan::from_toml(toml, Path::new("t.toml")).unwrap();
        let rd = Renderer::from_config(plan.config(), Path::new("my config.toml")).unwrap();
        let e = rd.leak(
            &leak_result("x"),
            &About {
                link: None,
                ..about(3)
            },
            at("2025-03-01T09:59:00Z"),
            &LeakBasis::Confirmed { first_check_id: 2 },
        );
        assert!(!e.text.contains("/checks/") && !e.html.contains("<a "));
        assert!(e
            .text
            .contains("--config 'my config.toml' --line reception"));
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(fmt_duration(Duration::from_secs(3 * 86400 + 5)), "3 days");
        assert_eq!(fmt_duration(Duration::from_secs(3600)), "60 minutes");
        assert_eq!(fmt_duration(Duration::from_secs(1)), "1 second");
    }
}

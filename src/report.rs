//! Turning verdicts into what people read: a human report and JSON.
//!
//! Every value in the text reports that came from a SIP message (header
//! names and values, reason phrases, Call-IDs, the PBX's product string,
//! reasons and notes that quote them) goes through [`crate::escape`] on its
//! way to the terminal, so an ESC, BEL, CR or bidirectional override in a
//! header shows as `\u{1b}` and can't act on the terminal. JSON output is
//! escaped by serde and keeps the exact text.

pub mod capture;

use std::fmt::Write as _;

use crate::escape::{clip, control as esc};

use crate::config::Expect;
use crate::plan::Plan;
use crate::verdict::{Outcome, Policy, Verdict};

/// Process exit status for an outcome: 0 pass, 1 fail, 3 inconclusive
/// (2 is kept for usage and config errors).
pub fn exit_code(outcome: Outcome) -> i32 {
    match outcome {
        Outcome::Pass => 0,
        Outcome::Fail => 1,
        Outcome::Inconclusive => 3,
    }
}

/// The combined exit status of several results: any fail wins, then any
/// inconclusive.
pub fn combined_exit_code<'a>(outcomes: impl IntoIterator<Item = &'a Outcome>) -> i32 {
    let mut code = 0;
    for o in outcomes {
        match o {
            Outcome::Fail => return 1,
            Outcome::Inconclusive => code = 3,
            Outcome::Pass => {}
        }
    }
    code
}

fn outcome_word(o: Outcome) -> &'static str {
    match o {
        Outcome::Pass => "PASS",
        Outcome::Fail => "FAIL",
        Outcome::Inconclusive => "INCONCLUSIVE",
    }
}

/// A plain-text report of one verdict.
pub fn human(v: &Verdict, policy: &Policy) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Line {:?}: expects {}",
        v.line,
        esc(&policy.expectation())
    );
    let _ = writeln!(
        s,
        "Outcome: {} ({})",
        outcome_word(v.outcome),
        esc(&v.summary())
    );
    if !v.presented.identities.is_empty() || v.presented.privacy.is_some() {
        let _ = writeln!(s, "\nPresented:");
        write_presented(&mut s, &v.presented);
    }
    if !v.findings.is_empty() {
        s.push('\n');
        write_findings(&mut s, &v.findings);
    }
    if !v.notes.is_empty() {
        let _ = writeln!(s, "\nNotes:");
        for n in &v.notes {
            let _ = writeln!(s, "  - {}", esc(n));
        }
    }
    s
}

/// The identities a call presented, one per line, escaped.
fn write_presented(s: &mut String, p: &crate::verdict::Presented) {
    for id in &p.identities {
        let _ = writeln!(
            s,
            "  {:<22} {}",
            format!("{}:", esc(&id.header)),
            esc(&id.to_string())
        );
    }
    if let Some(p) = &p.privacy {
        let _ = writeln!(s, "  {:<22} {}", "Privacy:", clip(p, 160));
    }
}

/// A summary of a plan, for `config check`.
pub fn config_summary(plan: &Plan) -> String {
    let cfg = plan.config();
    let mut s = String::new();
    let org = &cfg.organisation;
    let _ = writeln!(
        s,
        "Organisation: {} (numbers read as region {})",
        org.name, org.region
    );
    let _ = writeln!(
        s,
        "  {} number entr{} / {} name{} / {} host{} protected",
        org.numbers.len(),
        if org.numbers.len() == 1 { "y" } else { "ies" },
        org.names.len(),
        if org.names.len() == 1 { "" } else { "s" },
        org.hosts.len(),
        if org.hosts.len() == 1 { "" } else { "s" },
    );
    let spec = crate::verdict::OrgSpec::from(org);
    let descriptors = crate::verdict::descriptors_in_force(&spec);
    let _ = writeln!(
        s,
        "  {} descriptor{} of the kind of service ({}): {}",
        descriptors.len(),
        if descriptors.len() == 1 { "" } else { "s" },
        match (org.default_descriptors, org.descriptors.len()) {
            (true, 0) => "the built-in list".to_string(),
            (true, n) => format!("the built-in list and {n} of yours"),
            (false, _) => "yours only; the built-in list is off".to_string(),
        },
        if descriptors.is_empty() {
            "none: a phrase like \"shelter\" or \"DV\" would not be caught".to_string()
        } else {
            descriptors
                .iter()
                .map(|d| format!("{d:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let _ = writeln!(s, "Lines ({}):", cfg.lines.len());
    for (line, compiled) in cfg.lines.iter().zip(plan.lines()) {
        let p = compiled.policy();
        let how = match &line.account {
            Some(a) => format!(
                "calls as {} via {} ({})",
                a.username, a.registrar, a.transport
            ),
            None => "no account: can be inspected, not called".into(),
        };
        let tag = match line.expect {
            Expect::Withheld => "withheld",
            Expect::Umbrella => "umbrella",
        };
        let _ = writeln!(
            s,
            "  {:<16} {:<9} {}; {}",
            line.name,
            tag,
            p.expectation(),
            how
        );
        // The exact Request-URI of each test call: the one the line dials.
        if let Some(ep) = plan.endpoint() {
            for uri in (0..ep.numbers().len()).filter_map(|i| compiled.target(i)) {
                let _ = writeln!(
                    s,
                    "  {:<16} dials {}",
                    line.name,
                    crate::escape::control(uri)
                );
            }
        }
        let dropped = p.descriptors_not_applied();
        if !dropped.is_empty() {
            let _ = writeln!(
                s,
                "  {:<16} {:<9} descriptors not judged on this line (the umbrella name has them): {}",
                "",
                "",
                dropped
                    .iter()
                    .map(|d| format!("{d:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    match &cfg.endpoint {
        Some(ep) => {
            let numbers: Vec<String> = ep
                .numbers
                .iter()
                .map(
                    |n| match crate::plan::dial::dial_user(n, Some(&org.region)) {
                        Ok(d) if d != *n => format!("{n}, dialled as {d}"),
                        _ => n.clone(),
                    },
                )
                .collect();
            let _ = writeln!(
                s,
                "Endpoint: {} number{} ({}), matching by {:?}, listening on {}",
                ep.numbers.len(),
                if ep.numbers.len() == 1 { "" } else { "s" },
                numbers.join("; "),
                ep.matching,
                ep.listen.join(", ")
            );
            let _ = write!(s, "{}", endpoint_exposure(ep));
        }
        None => {
            let _ = writeln!(s, "Endpoint: not configured (needed for `check`)");
        }
    }
    s.push_str(&crate::selftest::summary(cfg));
    s
}

/// Who the endpoint answers, for `config check`: the allow-list in force,
/// or plainly that it answers everyone, with the advice to set one when it
/// listens beyond loopback.
pub fn endpoint_exposure(ep: &crate::config::Endpoint) -> String {
    let mut s = String::new();
    let public = ep
        .listen
        .iter()
        .any(|l| crate::sip::transport::parse_listen(l).is_ok_and(|(_, a)| !a.ip().is_loopback()));
    if ep.allow.is_empty() {
        let _ = writeln!(
            s,
            "  Answers: every address (no endpoint.allow){}",
            if public {
                ""
            } else {
                "; it listens on loopback only"
            }
        );
        if public {
            let _ = writeln!(
                s,
                "  Recommended: SIP scanners find every public SIP port within hours. Set endpoint.allow \
                 to your SIP provider's and PBX's addresses (nothing else is then answered at all), and \
                 let only those through the firewall."
            );
        }
    } else {
        let _ = writeln!(
            s,
            "  Answers only: {}{}; from anywhere else nothing is answered, not even an error",
            ep.allow
                .iter()
                .map(|a| a.trim())
                .collect::<Vec<_>>()
                .join(", "),
            if ep.register.is_some() {
                ", and the registrar it registers at"
            } else {
                ""
            }
        );
    }
    s
}

/// A plain-text report of one check result.
pub fn human_check(r: &crate::check::result::CheckResult, policy: Option<&Policy>) -> String {
    let mut s = String::new();
    let expects = policy.map_or_else(|| r.expected.to_string(), Policy::expectation);
    let _ = writeln!(s, "Line {:?}: expects {}", r.line, esc(&expects));
    let _ = writeln!(
        s,
        "Outcome: {} ({})",
        outcome_word(r.outcome),
        esc(&r.summary())
    );
    let _ = writeln!(s, "Started: {} ({} ms)", esc(&r.started_at), r.duration_ms);
    let c = &r.call;
    if c.call_id.is_some() || c.final_status.is_some() {
        let status = match (c.final_status, &c.final_reason) {
            (Some(code), Some(reason)) => format!("{code} {}", esc(reason)),
            (Some(code), None) => code.to_string(),
            _ => "none".into(),
        };
        let ms = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| format!("{v} ms"));
        let _ = writeln!(
            s,
            "Call: final response {status}; first 1xx after {}, final after {}; Call-ID {}",
            ms(c.first_provisional_ms),
            ms(c.final_response_ms),
            esc(c.call_id.as_deref().unwrap_or("-"))
        );
    }
    if let Some(m) = &c.matching {
        let _ = writeln!(s, "Matched: {}", esc(m));
    }
    if let Some(p) = &r.pbx_software {
        let _ = writeln!(s, "PBX software: {}", esc(p));
    }
    if !r.presented.identities.is_empty() || r.presented.privacy.is_some() {
        let _ = writeln!(s, "Presented:");
        write_presented(&mut s, &r.presented);
    }
    write_findings(&mut s, &r.findings);
    if !r.notes.is_empty() {
        let _ = writeln!(s, "Notes:");
        for n in &r.notes {
            let _ = writeln!(s, "  - {}", esc(n));
        }
    }
    if let Some(e) = &r.evidence_ref {
        let _ = writeln!(s, "Evidence: {}", esc(e));
    }
    s
}

fn write_findings(s: &mut String, findings: &[crate::verdict::Finding]) {
    if findings.is_empty() {
        return;
    }
    let _ = writeln!(s, "Findings ({}):", findings.len());
    for (i, f) in findings.iter().enumerate() {
        let place = if f.shown {
            "shown to the called party"
        } else {
            "not displayed, but readable"
        };
        let what = f.kind.what_went_wrong();
        let _ = writeln!(s, "  {}. {} in {} ({place})", i + 1, what, esc(&f.header));
        let _ = writeln!(s, "     value:  {}", clip(&f.value, 160));
        let _ = writeln!(s, "     why:    {}", esc(&f.detail));
    }
}

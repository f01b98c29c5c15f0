//! Turning verdicts into what people read: a human report and JSON.

use std::fmt::Write as _;

use crate::config::{Config, Expect};
use crate::verdict::{Kind, Outcome, Policy, Verdict};

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
    let _ = writeln!(s, "Line {:?}: expects {}", v.line, policy.expectation());
    let _ = writeln!(s, "Outcome: {} ({})", outcome_word(v.outcome), v.summary());
    if !v.presented.identities.is_empty() || v.presented.privacy.is_some() {
        let _ = writeln!(s, "\nPresented:");
        for id in &v.presented.identities {
            let _ = writeln!(s, "  {:<22} {}", format!("{}:", id.header), id);
        }
        if let Some(p) = &v.presented.privacy {
            let _ = writeln!(s, "  {:<22} {}", "Privacy:", p);
        }
    }
    if !v.findings.is_empty() {
        let _ = writeln!(s, "\nFindings ({}):", v.findings.len());
        for (i, f) in v.findings.iter().enumerate() {
            let place = if f.shown {
                "shown to the called party"
            } else {
                "not displayed, but readable"
            };
            let what = match f.kind {
                Kind::Presentation => "wrong presentation".to_string(),
                k => format!("{k} leaked"),
            };
            let _ = writeln!(s, "  {}. {} in {} ({place})", i + 1, what, f.header);
            let _ = writeln!(s, "     value:  {}", clip(&f.value, 160));
            let _ = writeln!(s, "     why:    {}", f.detail);
        }
    }
    if !v.notes.is_empty() {
        let _ = writeln!(s, "\nNotes:");
        for n in &v.notes {
            let _ = writeln!(s, "  - {n}");
        }
    }
    s
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n).collect();
        t.push('…');
        t
    }
}

/// A summary of a config, for `config check`.
pub fn config_summary(cfg: &Config, policies: &[Policy]) -> String {
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
    let _ = writeln!(s, "Lines ({}):", cfg.lines.len());
    for (line, p) in cfg.lines.iter().zip(policies) {
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
    }
    match &cfg.endpoint {
        Some(ep) => {
            let _ = writeln!(
                s,
                "Endpoint: {} number{} ({}), matching by {:?}, listening on {}",
                ep.numbers.len(),
                if ep.numbers.len() == 1 { "" } else { "s" },
                ep.numbers.join(", "),
                ep.matching,
                ep.listen.join(", ")
            );
        }
        None => {
            let _ = writeln!(s, "Endpoint: not configured (needed for `check`)");
        }
    }
    s
}

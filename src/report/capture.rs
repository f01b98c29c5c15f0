//! Output of `cidguard inspect --pcap`: a line per failing or inconclusive
//! call and a summary in text, or JSON lines (one object per judged call,
//! then a summary object). Everything from the wire arrives here already
//! redacted ([`crate::capture::redact`]) and is escaped for the terminal.

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::capture::file::{End, Format};
use crate::capture::hosts::Selector;
use crate::capture::inspect::{CallRecord, Overall, Report};
use crate::capture::link;
use crate::escape;
use crate::verdict::{Finding, Kind, Outcome, Policy};

/// What was judged, and how, for the header and the summary.
pub struct Setup<'a> {
    /// The capture file as named on the command line.
    pub file: &'a str,
    /// The policy every INVITE was judged against.
    pub policy: &'a Policy,
    /// The direction judged.
    pub selector: &'a Selector,
}

impl Setup<'_> {
    /// "line "reception" (expects ...)" or "the organisation alone (...)".
    fn against(&self) -> String {
        if self.policy.is_organisation_only() {
            format!("the organisation alone: {}", self.policy.expectation())
        } else {
            format!(
                "line {:?}: expects {}",
                self.policy.line,
                self.policy.expectation()
            )
        }
    }

    fn direction(&self) -> String {
        let s = self.selector;
        if s.is_everything() {
            return "every direction (use --from-host/--to-host to pick the PBX's leg to the carrier)".into();
        }
        let list = |v: &[crate::capture::hosts::HostSpec]| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match (s.from.is_empty(), s.to.is_empty()) {
            (false, false) => format!("from {} to {}", list(&s.from), list(&s.to)),
            (false, true) => format!("from {}", list(&s.from)),
            _ => format!("to {}", list(&s.to)),
        }
    }
}

/// Capture time as RFC 3339 UTC with milliseconds.
pub fn time(ns: i64) -> String {
    chrono::DateTime::from_timestamp(
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000) as u32,
    )
    .map_or_else(
        || format!("{ns} ns"),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    )
}

fn outcome_word(o: Outcome) -> &'static str {
    match o {
        Outcome::Pass => "PASS",
        Outcome::Fail => "FAIL",
        Outcome::Inconclusive => "INCONCLUSIVE",
    }
}

/// The first lines: what is judged against what.
pub fn text_start(s: &Setup<'_>, format: Format) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Capture: {} ({format})", escape::control(s.file));
    let _ = writeln!(out, "Judged against {}", s.against());
    let _ = writeln!(out, "Direction: {}", s.direction());
    out.push_str("Called parties and numbers that are not the organisation's are shown as #h: tokens (a hash salted afresh each run: one person, one token, within this run).\n\n");
    out
}

/// What leaked where, in a few words: `number "+61 3 7010 0142" in
/// P-Asserted-Identity; name "Eastside Refuge" in From`.
fn findings_line(findings: &[Finding]) -> String {
    let mut parts: Vec<String> = Vec::new();
    for f in findings {
        let s = match f.kind {
            Kind::Presentation => format!("wrong presentation in {}", f.header),
            k => format!("{k} {:?} in {}", f.matched, f.header),
        };
        if !parts.contains(&s) {
            parts.push(s);
        }
    }
    parts.join("; ")
}

/// One line for a failing or inconclusive call; None for a pass.
pub fn text_call(r: &CallRecord) -> Option<String> {
    if r.outcome == Outcome::Pass {
        return None;
    }
    let what = match r.outcome {
        Outcome::Fail => findings_line(&r.findings),
        _ => r.reason.clone().unwrap_or_else(|| r.summary.clone()),
    };
    Some(format!(
        "{}  {:<12}  {} {} -> {}  Call-ID {}  called {}  {}\n",
        time(r.time_ns),
        outcome_word(r.outcome),
        r.transport,
        r.src,
        r.dst,
        escape::clip(&r.call_id, 80),
        r.called.as_deref().unwrap_or("-"),
        escape::clip(&what, 400),
    ))
}

/// The summary after the calls.
pub fn text_summary(rep: &Report) -> String {
    let c = &rep.counters;
    let i = &rep.invites;
    let mut out = String::new();
    if i.fail + i.inconclusive > 0 {
        out.push('\n');
    }
    let ifaces: Vec<String> =
        rep.interfaces
            .iter()
            .map(|f| link::name(f.link_type))
            .fold(Vec::new(), |mut v, n| {
                if !v.contains(&n) {
                    v.push(n);
                }
                v
            });
    let _ = writeln!(
        out,
        "Summary: {}, {} interface{} ({}), {} packet{}",
        rep.format,
        rep.interfaces.len(),
        if rep.interfaces.len() == 1 { "" } else { "s" },
        ifaces.join(", "),
        c.packets,
        if c.packets == 1 { "" } else { "s" }
    );
    if let (Some(a), Some(b)) = (c.first_ns, c.last_ns) {
        let _ = writeln!(
            out,
            "Time span: {} to {} ({})",
            time(a),
            time(b),
            span(b.saturating_sub(a))
        );
    }
    let _ = writeln!(
        out,
        "SIP messages: {} ({} TCP stream{} carried SIP)",
        c.sip_messages,
        c.tcp_sip_streams,
        if c.tcp_sip_streams == 1 { "" } else { "s" }
    );
    let _ = writeln!(
        out,
        "INVITEs: {} seen, {} judged: {} pass, {} fail, {} inconclusive",
        i.seen, i.judged, i.pass, i.fail, i.inconclusive
    );
    let mut also = Vec::new();
    if i.other_direction > 0 {
        also.push(format!(
            "{} in other directions not judged",
            i.other_direction
        ));
    }
    if i.retransmissions > 0 {
        also.push(format!(
            "{} copies (retransmissions) judged once",
            i.retransmissions
        ));
    }
    if i.in_dialog > 0 {
        also.push(format!(
            "{} re-INVITEs inside a dialog not judged",
            i.in_dialog
        ));
    }
    if !also.is_empty() {
        let _ = writeln!(out, "         ({})", also.join("; "));
    }
    let nr = c.not_readable();
    if nr == 0 {
        let _ = writeln!(out, "Not readable: none");
    } else {
        let parts: Vec<String> = [
            ("TLS", c.tls),
            ("IPsec", c.esp),
            ("cut by snap length", c.cut_by_snaplen),
            ("TCP gaps", c.tcp_lost),
            ("TCP unframed", c.tcp_unframed),
            ("TCP half-read", c.tcp_incomplete),
            ("fragments incomplete", c.fragments_incomplete),
            ("oversized records", c.oversized_records),
        ]
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(w, n)| format!("{w} {n}"))
        .collect();
        let _ = writeln!(out, "Not readable: {nr} ({})", parts.join(", "));
    }
    if c.media > 0 {
        let _ = writeln!(out, "Media (RTP/SRTP), not read: {} datagrams", c.media);
    }
    for w in rep.warnings() {
        let _ = writeln!(out, "Warning: {w}");
    }
    let verdict = match rep.overall() {
        Overall::Pass => format!(
            "PASS (every one of {} INVITE{} judged kept the organisation's identity private)",
            i.judged,
            if i.judged == 1 { "" } else { "s" }
        ),
        Overall::Fail => format!(
            "FAIL ({} call{} showed the organisation's identity)",
            i.fail,
            if i.fail == 1 { "" } else { "s" }
        ),
        Overall::Inconclusive => {
            let mut why = Vec::new();
            if i.judged == 0 {
                why.push("no INVITE was judged".to_string());
            }
            if i.inconclusive > 0 {
                why.push(format!(
                    "{} call{} could not be fully judged",
                    i.inconclusive,
                    if i.inconclusive == 1 { "" } else { "s" }
                ));
            }
            if nr > 0 {
                why.push("part of the capture could not be read".into());
            }
            if rep.end != End::Clean {
                why.push("the file is incomplete".into());
            }
            format!("INCONCLUSIVE ({})", why.join("; "))
        }
    };
    let _ = writeln!(out, "Outcome: {verdict}");
    out
}

/// A duration in words: `1 h 2 min 3 s`, `850 ms`.
fn span(ns: i64) -> String {
    let ms = ns / 1_000_000;
    if ms < 1000 {
        return format!("{ms} ms");
    }
    let s = ms / 1000;
    let (h, m, s) = (s / 3600, (s / 60) % 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{s} s"),
        (0, _) => format!("{m} min {s} s"),
        _ => format!("{h} h {m} min {s} s"),
    }
}

/// One judged call as a JSON object.
pub fn json_call(r: &CallRecord) -> Value {
    let mut v = json!({
        "record": "call",
        "time": time(r.time_ns),
        "transport": r.transport,
        "src": r.src.to_string(),
        "dst": r.dst.to_string(),
        "call_id": r.call_id,
        "called": r.called,
        "outcome": r.outcome,
        "summary": r.summary,
        "findings": r.findings,
        "notes": r.notes,
        "cut": r.cut,
    });
    if let (Some(reason), Some(o)) = (&r.reason, v.as_object_mut()) {
        o.insert("reason".into(), json!(reason));
    }
    v
}

/// The summary object, last.
pub fn json_summary(s: &Setup<'_>, rep: &Report) -> Value {
    let c = &rep.counters;
    let against = if s.policy.is_organisation_only() {
        json!({"mode": "organisation", "expects": s.policy.expectation()})
    } else {
        json!({"mode": "line", "line": s.policy.line, "expects": s.policy.expectation()})
    };
    let end = match &rep.end {
        End::Clean => json!({"state": "complete"}),
        End::Truncated { at } => json!({"state": "truncated", "at_byte": at}),
        End::Damaged { at, what } => json!({"state": "damaged", "at_byte": at, "what": what}),
    };
    json!({
        "record": "summary",
        "file": s.file,
        "format": rep.format.to_string(),
        "interfaces": rep.interfaces.iter().map(|i| json!({
            "link_type": i.link_type,
            "name": link::name(i.link_type),
            "snaplen": i.snaplen,
        })).collect::<Vec<_>>(),
        "judged_against": against,
        "from_host": s.selector.from.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "to_host": s.selector.to.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "first": c.first_ns.map(time),
        "last": c.last_ns.map(time),
        "packets": c.packets,
        "sip_messages": c.sip_messages,
        "invites": rep.invites,
        "not_readable": {
            "total": c.not_readable(),
            "tls": c.tls,
            "ipsec": c.esp,
            "cut_by_snaplen": c.cut_by_snaplen,
            "tcp_gaps": c.tcp_lost,
            "tcp_unframed": c.tcp_unframed,
            "tcp_half_read": c.tcp_incomplete,
            "fragments_incomplete": c.fragments_incomplete,
            "oversized_records": c.oversized_records,
        },
        "media_datagrams": c.media,
        "file_end": end,
        "warnings": rep.warnings(),
        "outcome": match rep.overall() {
            Overall::Pass => "pass",
            Overall::Fail => "fail",
            Overall::Inconclusive => "inconclusive",
        },
        "exit_code": rep.exit_code(),
        "counters": c,
        "peak_remembered_invites": rep.peak_remembered,
    })
}

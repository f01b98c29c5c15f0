//! `cidguard history`: a line's checks from the history, as a text table,
//! a JSON array, or CSV with a header row. Oldest first, like a log.

use std::fmt::Write as _;

use chrono_tz::Tz;
use serde_json::Value;

use crate::store::{ms_of_rfc3339, CheckQuery, HistoryRead, StoreError, StoredCheck};
use crate::verdict::Outcome;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Csv,
}

/// Every check of `line` started at or after `since_ms`, oldest first.
pub fn checks_since(
    store: &dyn HistoryRead,
    line: &str,
    since_ms: Option<i64>,
) -> Result<Vec<StoredCheck>, StoreError> {
    let mut q = CheckQuery::line(line);
    q.since_ms = since_ms;
    q.limit = 1000;
    let mut out = Vec::new();
    loop {
        let page = store.checks(&q)?;
        out.extend(page.checks);
        match page.next {
            Some(c) => q.after = Some(c),
            None => break,
        }
    }
    out.reverse();
    Ok(out)
}

/// The output of `cidguard history`.
pub fn render(checks: &[StoredCheck], format: Format, tz: Tz) -> String {
    match format {
        Format::Text => text(checks, tz),
        Format::Json => json(checks),
        Format::Csv => csv(checks),
    }
}

fn outcome_word(c: &StoredCheck) -> &'static str {
    if c.interrupted {
        return "interrupted";
    }
    match c.result.outcome {
        Outcome::Pass => "pass",
        Outcome::Fail => "FAIL",
        Outcome::Inconclusive => "inconclusive",
    }
}

fn trigger_text(c: &StoredCheck) -> String {
    use crate::check::result::Trigger;
    let t = &c.result.trigger;
    match t {
        Trigger::PbxChange { from, to } => format!(
            "{} ({} -> {to})",
            t.kind(),
            from.as_deref().unwrap_or("unknown")
        ),
        other => labelled(other.kind(), other.label()),
    }
}

fn labelled(kind: &str, label: Option<&str>) -> String {
    match label {
        Some(l) => format!("{kind} ({l})"),
        None => kind.to_string(),
    }
}

fn local_time(c: &StoredCheck, tz: Tz) -> String {
    match ms_of_rfc3339(&c.result.started_at).and_then(chrono::DateTime::from_timestamp_millis) {
        Some(t) => t
            .with_timezone(&tz)
            .format("%Y-%m-%d %H:%M:%S %Z")
            .to_string(),
        None => c.result.started_at.clone(),
    }
}

/// Text output: one row per check, columns aligned; control characters in
/// PBX-supplied text are shown escaped so they can't move the terminal.
fn text(checks: &[StoredCheck], tz: Tz) -> String {
    if checks.is_empty() {
        return "no checks in this period\n".into();
    }
    let header = [
        "ID", "STARTED", "TRIGGER", "OUTCOME", "TOOK", "PBX", "SUMMARY",
    ];
    let rows: Vec<[String; 7]> = checks
        .iter()
        .map(|c| {
            [
                c.id.to_string(),
                local_time(c, tz),
                clean(&trigger_text(c)),
                outcome_word(c).to_string(),
                format!("{:.1}s", c.result.duration_ms as f64 / 1000.0),
                clean(c.result.pbx_software.as_deref().unwrap_or("-")),
                clean(&c.result.summary()),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths.iter()).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ", w = *w);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&header);
    for r in &rows {
        let cells: Vec<&str> = r.iter().map(String::as_str).collect();
        line(&cells);
    }
    let fails = checks
        .iter()
        .filter(|c| !c.interrupted && c.result.outcome == Outcome::Fail)
        .count();
    let _ = writeln!(
        out,
        "{} check{}, {fails} failed",
        checks.len(),
        if checks.len() == 1 { "" } else { "s" }
    );
    out
}

fn clean(s: &str) -> String {
    crate::escape::control(s).into_owned()
}

/// JSON output: an array of stored checks (the check result's fields, plus
/// `id`, `recorded_at_ms`, `interrupted`, `evidence_pruned`, `summary`),
/// without evidence.
fn json(checks: &[StoredCheck]) -> String {
    let arr: Vec<Value> = checks
        .iter()
        .map(|c| {
            let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut v {
                m.insert("summary".into(), Value::String(c.result.summary()));
            }
            v
        })
        .collect();
    let mut s = serde_json::to_string_pretty(&arr).unwrap_or_else(|_| "[]".into());
    s.push('\n');
    s
}

const CSV_HEADER: &str = "id,started_at,line,trigger,trigger_label,outcome,interrupted,reason,duration_ms,pbx_software,summary";

/// CSV output (RFC 4180), a header row first. Times are UTC RFC 3339.
/// Control characters in every field are escaped like in the text output
/// (a PBX's Server header or a reason phrase could otherwise put a raw CR
/// or ESC into a spreadsheet or a terminal running `cat`), so every record
/// is one line.
fn csv(checks: &[StoredCheck]) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push_str("\r\n");
    for c in checks {
        let r = &c.result;
        let (kind, label) = (r.trigger.kind(), r.trigger.note());
        let fields = [
            c.id.to_string(),
            r.started_at.clone(),
            r.line.clone(),
            kind.to_string(),
            label.unwrap_or("").to_string(),
            r.outcome.to_string(),
            c.interrupted.to_string(),
            r.reason.clone().unwrap_or_default(),
            r.duration_ms.to_string(),
            r.pbx_software.clone().unwrap_or_default(),
            r.summary(),
        ];
        let cells: Vec<String> = fields.iter().map(|f| csv_field(&clean(f))).collect();
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out
}

/// Quote a CSV field when needed. Text that a spreadsheet would run as a
/// formula (`=`, `+`, `-`, `@` first) gets a leading `'`: a PBX's Server
/// header ends up here and is not ours to trust.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quoting_and_formula_guard() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }

    /// Regression: a raw CR, LF or ESC from a PBX's Server header reached
    /// the CSV export.
    #[test]
    fn csv_cells_have_no_raw_control_characters() {
        assert_eq!(
            csv_field(&clean("Asterisk\r\n\u{1b}[2J=1")),
            "Asterisk\\r\\n\\u{1b}[2J=1"
        );
    }

    #[test]
    fn control_characters_are_escaped_in_text() {
        assert_eq!(clean("Asterisk\u{1b}[2J"), "Asterisk\\u{1b}[2J");
    }
}

//! The HTML pages.

use std::fmt::Write;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use chrono::{DateTime, Utc};

use super::html::{badge, device_badge, esc, highlight, page, run_form, signed_in_note};
use super::{
    call_in_view, configured_lines, cursor_text, db, expectation_of, has_call_ins, next_check,
    org_selftest_numbers, parse_cursor, parse_id, run_results, state_word, AppState, CallInView,
    WebError, WebResult,
};
use crate::check::result::{EvidenceMessage, Trigger};
use crate::maintenance::{self, Window};
use crate::store::{rfc3339_of_ms, CheckMark, CheckQuery, Ratio, StoredCheck};
use crate::verdict::{Finding, Kind, Outcome};

/// Cells in a line's history bar on the overview.
const BAR_CELLS: usize = 30;
/// Checks per page on a line's timeline.
const PAGE_SIZE: usize = 50;

fn pct(r: &Ratio) -> String {
    match r.pass_ratio() {
        Some(p) => format!(
            "{:.0}% <small>({} check{})</small>",
            p * 100.0,
            r.total(),
            if r.total() == 1 { "" } else { "s" }
        ),
        None => "–".into(),
    }
}

fn trigger_text(t: &Trigger) -> String {
    match t {
        Trigger::Schedule => "scheduled".into(),
        Trigger::Manual { label, .. } => match label {
            Some(l) => format!("manual run: “{}”", esc(l)),
            None => "manual run".into(),
        },
        Trigger::Api { label, .. } => match label {
            Some(l) => format!("API run: “{}”", esc(l)),
            None => "API run".into(),
        },
        Trigger::PbxChange { to, .. } => format!("PBX changed to {}", esc(to)),
        Trigger::Confirm => "confirming a failure".into(),
        Trigger::CallIn { device: Some(d) } => format!("call-in from {}", esc(d)),
        Trigger::CallIn { device: None } => {
            "call-in from a phone that is not a configured device".into()
        }
    }
}

fn check_state(c: &StoredCheck) -> &'static str {
    state_word(Some(c))
}

fn mark_state(m: &CheckMark) -> &'static str {
    match (m.interrupted, m.outcome) {
        (true, _) | (false, Outcome::Inconclusive) => "inconclusive",
        (false, Outcome::Pass) => "pass",
        (false, Outcome::Fail) => "fail",
    }
}

fn bar(marks: &[CheckMark]) -> String {
    let mut s = String::from("<div class=\"bar\" role=\"list\">");
    // Oldest first, so time runs left to right.
    for m in marks.iter().rev() {
        let st = mark_state(m);
        let icon = match st {
            "pass" => "✓",
            "fail" => "✗",
            _ => "?",
        };
        let at = rfc3339_of_ms(m.started_at_ms);
        let _ = write!(
            s,
            "<a role=\"listitem\" class=\"{st}\" href=\"/checks/{}\" title=\"{at} {st}\" aria-label=\"{at} {st}\">{icon}</a>",
            m.id,
        );
    }
    s.push_str("</div>");
    s
}

/// An RFC 3339 time from the history as a `<time>` in the daemon's time
/// zone, to the second; the stored text as it is if it doesn't parse.
fn local_time(rfc3339: &str, tz: chrono_tz::Tz) -> String {
    match chrono::DateTime::parse_from_rfc3339(rfc3339) {
        Ok(t) => format!(
            "<time datetime=\"{}\">{}</time>",
            esc(rfc3339),
            esc(&t
                .with_timezone(&tz)
                .format("%Y-%m-%d %H:%M:%S %Z")
                .to_string())
        ),
        Err(_) => esc(rfc3339),
    }
}

/// What to highlight in a message for the findings: the text as the
/// message wrote it, if the finding knows it; else the configured entry a
/// finding matched, if it appears as written; else the presented text the
/// finding's sentence quotes (`the caller number "+61370100142"`), if it is
/// in the message; else the whole header value.
fn leak_needles<'a>(findings: &'a [crate::verdict::Finding], text: &str) -> Vec<&'a str> {
    findings
        .iter()
        .map(|f| {
            if !f.seen.is_empty() && text.contains(f.seen.as_str()) {
                return f.seen.as_str();
            }
            if !f.matched.is_empty() && text.contains(f.matched.as_str()) {
                return f.matched.as_str();
            }
            let quoted = f.detail.split('"').skip(1).step_by(2);
            for q in quoted {
                if q.chars().count() >= 3 && f.value.contains(q) && text.contains(q) {
                    return q;
                }
            }
            f.value.as_str()
        })
        .collect()
}

/// "in 25 min", "in 3 h", "in 2 days".
fn from_now(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let mins = (t - now).num_minutes().max(0);
    if mins < 1 {
        "in under a minute".into()
    } else if mins < 90 {
        format!("in {mins} min")
    } else if mins < 48 * 60 {
        format!("in {} h", (mins + 30) / 60)
    } else {
        format!("in {} days", (mins + 720) / (24 * 60))
    }
}

/// The overview's "next check" cell: the schedule's next time in the
/// daemon's time zone, and whether alerts are held for maintenance.
fn next_check_cell(
    next: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    tz: chrono_tz::Tz,
    window: Option<&Window>,
) -> String {
    let mut s = match next {
        Some(t) => format!(
            "<time datetime=\"{}\">{}</time><br><small>{}</small>",
            esc(&rfc3339_of_ms(t.timestamp_millis())),
            esc(&t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string()),
            esc(&from_now(t, now))
        ),
        None => "not scheduled <small>(no account)</small>".into(),
    };
    if let Some(w) = window {
        let _ = write!(
            s,
            "<br><small>alerts held (maintenance until {})</small>",
            esc(&w
                .end
                .with_timezone(&tz)
                .format("%Y-%m-%d %H:%M %Z")
                .to_string())
        );
    }
    s
}

#[derive(Deserialize)]
pub struct OverviewParams {
    /// What the demo switch just did, to say so.
    demo: Option<String>,
}

pub async fn overview(
    State(st): State<AppState>,
    Query(p): Query<OverviewParams>,
    headers: HeaderMap,
) -> WebResult<Response> {
    let signed_in = super::signed_in(&st, &headers);
    let plan = st.plan();
    let names = configured_lines(&plan);
    let now = Utc::now();
    let in_db = plan.clone();
    let (ov, bars, changes, window) = db(&st, move |s| {
        let ov = s.overview(Some(&names), now.timestamp_millis())?;
        let bars = names
            .iter()
            .map(|n| s.recent_marks(n, BAR_CELLS))
            .collect::<Result<Vec<_>, _>>()?;
        let changes = s.pbx_changes(None, 20)?;
        let window = maintenance::active(&in_db, s, now)?;
        Ok((ov, bars, changes, window))
    })
    .await?;
    let call_ins = if has_call_ins(&plan) {
        Some(call_in_view(&st, &plan, now).await?)
    } else {
        None
    };
    let tz = plan.tz();
    let mut rows: Vec<(usize, String)> = Vec::new();
    for (o, checks) in ov.iter().zip(&bars) {
        let state = state_word(o.latest.as_ref());
        let rank = match state {
            "fail" => 0,
            "inconclusive" => 1,
            "unchecked" => 2,
            _ => 3,
        };
        let expected = plan
            .line(&o.line)
            .map(|l| match l.umbrella() {
                Some(u) => format!("umbrella: {}", esc(u)),
                None => l.expected().to_string(),
            })
            .unwrap_or_default();
        let last = o
            .latest
            .as_ref()
            .map(|c| {
                format!(
                    "<a href=\"/checks/{}\">{}</a><br><small>{}</small>",
                    c.id,
                    local_time(&c.result.started_at, tz),
                    esc(&c.result.summary())
                )
            })
            .unwrap_or_else(|| "never".into());
        rows.push((
            rank,
            format!(
                "<tr><td data-label=\"Line\"><a href=\"/lines/{n}\">{n}</a></td><td data-label=\"State\">{}</td>\
<td data-label=\"Expected\">{expected}</td><td data-label=\"Last check\">{last}</td>\
<td data-label=\"Next check\">{}</td><td class=\"wide\" data-label=\"Recent checks\">{}</td>\
<td data-label=\"Pass 24 h\">{}</td><td class=\"wide\" data-label=\"7 days\">{}</td>\
<td class=\"wide\" data-label=\"90 days\">{}</td></tr>",
                badge(state),
                next_check_cell(next_check(&plan, &o.line, now), now, tz, window.as_ref()),
                bar(checks),
                pct(&o.day),
                pct(&o.week),
                pct(&o.quarter),
                n = esc(&o.line),
            ),
        ));
    }
    // Failing lines first, then the rest in configured order.
    rows.sort_by_key(|(rank, _)| *rank);
    let mut body = String::new();
    if let Some(switch) = st.inner.demo.get() {
        match p.demo.as_deref() {
            Some("leak") => body.push_str(&format!(
                "<p class=\"notice\" role=\"status\">The demo PBX now sends {}'s number and name. \
Its next check should fail and an alert go out.</p>",
                esc(&switch.line)
            )),
            Some("restore") => body.push_str(
                "<p class=\"notice\" role=\"status\">The demo PBX's rules are back as they were.</p>",
            ),
            _ => {}
        }
    }
    body.push_str(
        "<table class=\"lines\"><caption>Lines, failing first</caption><thead><tr><th>Line</th><th>State</th>\
<th>Expected</th><th>Last check</th><th>Next check</th><th class=\"wide\">Recent checks</th><th>Pass 24 h</th>\
<th class=\"wide\">7 days</th><th class=\"wide\">90 days</th></tr></thead><tbody>",
    );
    for (_, r) in rows {
        body.push_str(&r);
    }
    body.push_str("</tbody></table>");
    if let Some(view) = &call_ins {
        body.push_str(&call_in_section(&plan, view, now, tz));
    }
    body.push_str("<h2>PBX software</h2>");
    if changes.is_empty() {
        body.push_str("<p>No PBX software changes seen.</p>");
    } else {
        body.push_str("<table><thead><tr><th>PBX</th><th>From</th><th>To</th><th>When</th></tr></thead><tbody>");
        for c in &changes {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&c.registrar),
                esc(c.from.as_deref().unwrap_or("(first seen)")),
                esc(&c.to),
                esc(&rfc3339_of_ms(c.at_ms))
            );
        }
        body.push_str("</tbody></table>");
    }
    body.push_str(signed_in_note(signed_in));
    body.push_str(&run_form(None, signed_in));
    if let Some(switch) = st.inner.demo.get() {
        body.push_str(&super::html::demo_form(&switch.line, signed_in));
    }
    Ok(Html(page("Overview", "", &body)).into_response())
}

/// A time from the history as a link to its check, in the daemon's zone.
fn check_link(c: &StoredCheck, tz: chrono_tz::Tz) -> String {
    format!(
        "<a href=\"/checks/{}\">{}</a>",
        c.id,
        local_time(&c.result.started_at, tz)
    )
}

/// The overview's "Phones tested by calling in": the numbers to dial, each
/// device with its last call-in, state and when its next one is due, and
/// the latest call-ins from other phones. Laid out as labelled cards on a
/// phone, like the lines table.
fn call_in_section(
    plan: &crate::plan::Plan,
    view: &CallInView,
    now: DateTime<Utc>,
    tz: chrono_tz::Tz,
) -> String {
    let mut b = String::from("<h2 id=\"call-ins\">Phones tested by calling in</h2>");
    let numbers = org_selftest_numbers(plan);
    if numbers.is_empty() {
        b.push_str(
            "<p>Each device below is tested by calling its own self-test number from it: \
the caller hears whether its caller ID is hidden, and the call is judged and recorded like a check.</p>",
        );
    } else {
        let list: Vec<String> = numbers
            .iter()
            .map(|n| format!("<strong>{}</strong>", esc(n)))
            .collect();
        let _ = write!(
            b,
            "<p>Any phone of the organisation's (a worker's mobile, a handset at another office) \
can call {} and hear whether its caller ID is hidden; every call is judged and recorded like a check.</p>",
            list.join(" or ")
        );
    }
    if !view.devices.is_empty() {
        b.push_str(
            "<table class=\"lines\"><caption>Devices</caption><thead><tr><th>Device</th><th>State</th>\
<th>Expected</th><th>Its self-test number</th><th>Last call-in</th><th>Next call-in due</th></tr></thead><tbody>",
        );
        for d in &view.devices {
            let dp = plan.callin().device(&d.name);
            let number = dp
                .and_then(|p| p.selftest_number())
                .map_or_else(|| "–".to_string(), esc);
            let last = d.last.as_ref().map_or_else(
                || "never".to_string(),
                |c| {
                    format!(
                        "{}<br><small>{}</small>",
                        check_link(c, tz),
                        esc(&c.result.summary())
                    )
                },
            );
            let due = match d.due {
                None => "no reminders".to_string(),
                Some(t) => {
                    let at = format!(
                        "<time datetime=\"{}\">{}</time>",
                        esc(&rfc3339_of_ms(t.timestamp_millis())),
                        esc(&t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string())
                    );
                    if t <= now {
                        format!("<strong>overdue</strong> since {at}")
                    } else {
                        format!("{at}<br><small>{}</small>", esc(&from_now(t, now)))
                    }
                }
            };
            let _ = write!(
                b,
                "<tr><td data-label=\"Device\">{}</td><td data-label=\"State\">{}</td>\
<td data-label=\"Expected\">{}</td><td data-label=\"Its self-test number\">{number}</td>\
<td data-label=\"Last call-in\">{last}</td><td data-label=\"Next call-in due\">{due}</td></tr>",
                esc(&d.name),
                device_badge(state_word(d.last.as_ref())),
                esc(&expectation_of(plan, &d.name).unwrap_or_default()),
            );
        }
        b.push_str("</tbody></table>");
    }
    if !numbers.is_empty() || !view.unattributed.is_empty() {
        if view.unattributed.is_empty() {
            b.push_str("<p>No call-ins from other phones yet.</p>");
        } else {
            b.push_str(
                "<table class=\"lines\"><caption>Latest call-ins from other phones \
(not a configured device)</caption><thead><tr><th>When</th><th>Outcome</th><th>Summary</th></tr>\
</thead><tbody>",
            );
            for c in &view.unattributed {
                let _ = write!(
                    b,
                    "<tr><td data-label=\"When\">{}</td><td data-label=\"Outcome\">{}</td>\
<td data-label=\"Summary\">{}</td></tr>",
                    check_link(c, tz),
                    badge(check_state(c)),
                    esc(&c.result.summary())
                );
            }
            b.push_str("</tbody></table>");
        }
    }
    b
}

#[derive(Deserialize)]
pub struct LineParams {
    cursor: Option<String>,
}

pub async fn line(
    State(st): State<AppState>,
    Path(name): Path<String>,
    Query(p): Query<LineParams>,
    headers: HeaderMap,
) -> WebResult<Response> {
    let signed_in = super::signed_in(&st, &headers);
    let plan = st.plan();
    let Some(line_plan) = plan.line(&name) else {
        return Err(WebError::NotFound);
    };
    let mut q = CheckQuery::line(&name);
    q.limit = PAGE_SIZE;
    q.after = p.cursor.as_deref().map(parse_cursor).transpose()?;
    // Only the changes of this line's own PBX.
    let registrar = line_plan.account().map(|a| a.registrar.clone());
    let (pg, changes) = db(&st, move |s| {
        let pg = s.checks(&q)?;
        let changes = match registrar {
            Some(r) => s.pbx_changes(Some(&r), 20)?,
            None => Vec::new(),
        };
        Ok((pg, changes))
    })
    .await?;
    let mut body = String::new();
    // Incidents: runs of failures on this page, newest first.
    let mut incidents = String::new();
    let mut i = 0;
    let cs = &pg.checks;
    while i < cs.len() {
        if check_state(&cs[i]) == "fail" {
            let newest = i;
            while i + 1 < cs.len() && check_state(&cs[i + 1]) == "fail" {
                i += 1;
            }
            let oldest = &cs[i];
            let until = if newest == 0 {
                "still failing".to_string()
            } else {
                format!("until {}", esc(&cs[newest - 1].result.started_at))
            };
            let _ = write!(
                incidents,
                "<li>From {} {until}: {} (<a href=\"/checks/{}\">first failing check</a>)</li>",
                esc(&oldest.result.started_at),
                esc(&oldest.result.summary()),
                oldest.id
            );
        }
        i += 1;
    }
    body.push_str("<h2>Incidents</h2>");
    if incidents.is_empty() {
        body.push_str("<p>No failures among these checks.</p>");
    } else {
        let _ = write!(body, "<ul>{incidents}</ul>");
    }
    body.push_str("<h2>Checks</h2><table><thead><tr><th>Started</th><th>State</th><th>Why it ran</th><th>Summary</th></tr></thead><tbody>");
    for c in cs {
        let why = trigger_text(&c.result.trigger);
        let marked = if matches!(c.result.trigger, Trigger::Schedule) {
            why
        } else {
            format!("<strong>{why}</strong>")
        };
        let _ = write!(
            body,
            "<tr><td><a href=\"/checks/{}\">{}</a></td><td>{}</td><td>{marked}</td><td>{}</td></tr>",
            c.id,
            esc(&c.result.started_at),
            badge(check_state(c)),
            esc(&c.result.summary())
        );
    }
    body.push_str("</tbody></table>");
    if let Some(next) = &pg.next {
        let _ = write!(
            body,
            "<p><a href=\"/lines/{}?cursor={}\">Older checks</a></p>",
            esc(&name),
            esc(&cursor_text(next))
        );
    }
    if !changes.is_empty() {
        body.push_str("<h2>PBX changes</h2><ul>");
        for c in &changes {
            let _ = write!(
                body,
                "<li>{}: {} → {} ({})</li>",
                esc(&c.registrar),
                esc(c.from.as_deref().unwrap_or("(first seen)")),
                esc(&c.to),
                esc(&rfc3339_of_ms(c.at_ms))
            );
        }
        body.push_str("</ul>");
    }
    body.push_str(signed_in_note(signed_in));
    body.push_str(&run_form(Some(&name), signed_in));
    Ok(Html(page(&format!("Line {name}"), "", &body)).into_response())
}

pub async fn check(State(st): State<AppState>, Path(id): Path<String>) -> WebResult<Response> {
    let id = parse_id(&id)?;
    let c = db(&st, move |s| s.check(id))
        .await?
        .ok_or(WebError::NotFound)?;
    let r = &c.result;
    let plan = st.plan();
    let mut b = String::new();
    // A call-in's "line" is a device or "self-test", which have no line
    // page: it links to the overview's call-in section.
    let whose = if matches!(r.trigger, Trigger::CallIn { .. }) {
        format!("<a href=\"/#call-ins\">{}</a>", esc(&r.line))
    } else {
        format!("<a href=\"/lines/{l}\">{l}</a>", l = esc(&r.line))
    };
    let _ = write!(
        b,
        "<p>{} {whose} · started {} · {} · took {} ms</p><p><strong>{}</strong></p>",
        badge(check_state(&c)),
        esc(&r.started_at),
        trigger_text(&r.trigger),
        r.duration_ms,
        esc(&r.summary()),
    );
    if let Some(reason) = &r.reason {
        let _ = write!(b, "<p>Why inconclusive: {}</p>", esc(reason));
    }
    if c.interrupted {
        b.push_str(
            "<p>The daemon stopped before this check finished; it says nothing about the line.</p>",
        );
    }
    b.push_str("<h2>Findings</h2>");
    if r.findings.is_empty() {
        b.push_str("<p>Nothing identifying was found.</p>");
    } else {
        b.push_str("<ul class=\"findings\">");
        for f in &r.findings {
            let _ = write!(
                b,
                "<li><p>{}</p><p><small>{}: {}</small><br>value: <code>{}</code></p></li>",
                finding_sentence(f),
                esc(&f.kind.to_string()),
                esc(&f.detail),
                esc(&f.value)
            );
        }
        b.push_str("</ul>");
    }
    // The umbrella the line (or device, or self-test) presents now.
    let umbrella = expectation_of(&plan, &r.line)
        .and_then(|e| e.strip_prefix("umbrella: ").map(str::to_string));
    let expected = match umbrella {
        Some(u) => format!("{} (umbrella: {})", r.expected, esc(&u)),
        None => format!("{} (no number, no name)", r.expected),
    };
    let presented: Vec<String> = r
        .presented
        .identities
        .iter()
        .map(|i| {
            format!(
                "<li><code>{}</code>: {}</li>",
                esc(&i.header),
                esc(&i.to_string())
            )
        })
        .collect();
    let _ = write!(
        b,
        "<div class=\"cols\"><section><h2>Expected</h2><p>{expected}</p></section>\
<section><h2>Presented</h2><ul>{}</ul><p>Privacy: {}</p></section></div>",
        if presented.is_empty() {
            "<li>nothing</li>".to_string()
        } else {
            presented.join("")
        },
        esc(r.presented.privacy.as_deref().unwrap_or("(none)"))
    );
    b.push_str("<h2>Call ladder</h2>");
    if r.evidence.is_empty() {
        b.push_str(if c.evidence_pruned {
            "<p>The messages of this check were deleted by the retention policy.</p>"
        } else {
            "<p>No messages were captured.</p>"
        });
    } else {
        if matches!(r.trigger, Trigger::CallIn { .. }) {
            b.push_str(
                "<p>A person called a self-test number: cidguard placed no call, so only \
the messages between the PBX and its endpoint are here.</p>",
            );
        }
        b.push_str(&ladder(&r.evidence));
        b.push_str(
            "<h2>Messages</h2><p>Highlighted: what each finding names, in the messages \
that arrived at cidguard's endpoint (the INVITE there is what was judged).</p>",
        );
        for (i, e) in r.evidence.iter().enumerate() {
            // Only what arrived is evidence of a leak: the line's own
            // messages and the endpoint's answers (which echo From) are not.
            let needles: Vec<&str> = if hop(e) == Hop::PbxToEndpoint {
                leak_needles(&r.findings, &e.text)
            } else {
                Vec::new()
            };
            let _ = write!(
                b,
                "<h3 id=\"m{i}\">{} · {} {} · {}</h3><pre>{}</pre>",
                esc(&message_label(&e.text)),
                esc(&e.side),
                esc(&e.direction),
                esc(&e.flow),
                highlight(&e.text, &needles)
            );
        }
    }
    let _ = write!(
        b,
        "<p><a href=\"/checks/{id}/evidence.json\" download>Download the evidence (JSON, credentials redacted)</a></p>"
    );
    Ok(Html(page(&format!("Check {id}"), "", &b)).into_response())
}

pub async fn run_progress(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> WebResult<Response> {
    let id: u64 = id.parse().map_err(|_| WebError::NotFound)?;
    let (info, found) = run_results(&st, id).await?;
    let done = found.iter().all(|(_, c)| c.is_some());
    let mut b = String::new();
    let _ = write!(
        b,
        "<p>Requested {}{}</p>",
        esc(&rfc3339_of_ms(info.requested_at_ms)),
        match &info.label {
            Some(l) => format!(" · label: “{}”", esc(l)),
            None => " · no label".into(),
        }
    );
    if info.restored {
        b.push_str(
            "<p>cidguard was restarted since this run was asked for: these are the \
results it recorded for it. Checks that had not finished were not run; start \
them again if you need them.</p>",
        );
    }
    let finished = found.iter().filter(|(_, c)| c.is_some()).count();
    let _ = write!(
        b,
        "<p>{finished} of {} lines checked.</p><table><caption>Lines in this run</caption>\
<thead><tr><th>Line</th><th>State</th><th>Result</th></tr></thead><tbody>",
        found.len()
    );
    for (line, c) in &found {
        match c {
            Some(c) => {
                let _ = write!(
                    b,
                    "<tr><td>{}</td><td>{}</td><td><a href=\"/checks/{}\">{}</a></td></tr>",
                    esc(line),
                    badge(check_state(c)),
                    c.id,
                    esc(&c.result.summary())
                );
            }
            None => {
                let _ = write!(
                    b,
                    "<tr><td>{}</td><td><span class=\"badge unchecked\"><span aria-hidden=\"true\">…</span> Running</span></td><td>waiting…</td></tr>",
                    esc(line)
                );
            }
        }
    }
    b.push_str("</tbody></table>");
    let head = if done {
        b.push_str("<p>All done.</p>");
        ""
    } else {
        b.push_str("<p>This page refreshes itself every 3 seconds.</p>");
        "<meta http-equiv=\"refresh\" content=\"3\">"
    };
    Ok(Html(page(&format!("Run {id}"), head, &b)).into_response())
}

/// Where a header is seen, in words: why its finding matters.
fn where_shown(header: &str, shown: bool) -> &'static str {
    match header.to_ascii_lowercase().as_str() {
        "from" => "which the phone being called shows as the caller",
        "p-asserted-identity" => "which phones show when Privacy is missing",
        "p-preferred-identity" => {
            "which the next network may turn into the caller that phones show"
        }
        "remote-party-id" => "which many phones and carriers show as the caller",
        "contact" => "which the called side can see and call back",
        "sdp" => "the call's media description, which the called side can read",
        _ if shown => "which is shown to the person called",
        _ => "which isn't usually shown, but travels with the call to the person called",
    }
}

/// A finding in plain language (HTML; every value escaped): what was found,
/// in which header, and why that header matters.
pub(crate) fn finding_sentence(f: &Finding) -> String {
    let header = format!("<code>{}</code>", esc(&f.header));
    let place = where_shown(&f.header, f.shown);
    // The text as the message wrote it, with the configured entry it fell
    // in when they differ (a number inside a range, a name in capitals).
    let as_configured = if f.seen.is_empty() || f.seen == f.matched {
        String::new()
    } else {
        format!(" (configured as {})", esc(&f.matched))
    };
    let shown = if f.seen.is_empty() {
        &f.matched
    } else {
        &f.seen
    };
    match f.kind {
        Kind::Number => format!(
            "The organisation's number <strong>{}</strong>{as_configured} is in {header}, {place}.",
            esc(shown)
        ),
        Kind::Name => format!(
            "The organisation's name <strong>“{}”</strong>{as_configured} is in {header}, {place}.",
            esc(shown)
        ),
        Kind::Host => format!(
            "The organisation's address <strong>{}</strong> is in {header}, {place}; it points to the organisation.",
            esc(&f.matched)
        ),
        Kind::Descriptor => format!(
            "Words that reveal what kind of service is calling, <strong>“{}”</strong>, are in {header}, {place}.",
            esc(&f.matched)
        ),
        Kind::Presentation if f.matched.is_empty() => format!(
            "{header} does not present what this line should present, {place}."
        ),
        Kind::Presentation => format!(
            "{header} presents <strong>“{}”</strong>, which this line should not present, {place}.",
            esc(&f.matched)
        ),
    }
}

/// A message's ladder label: the request method, or the status code and
/// reason (raw text: escape it).
pub(crate) fn message_label(text: &str) -> String {
    let first = text.lines().next().unwrap_or("").trim();
    if let Some(status) = first.strip_prefix("SIP/2.0 ") {
        return status.chars().take(60).collect();
    }
    match first.split_whitespace().next() {
        Some(method) if first.ends_with("SIP/2.0") => method.chars().take(30).collect(),
        _ => first.chars().take(60).collect(),
    }
}

/// Which way a captured message went between the three parties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hop {
    LineToPbx,
    PbxToLine,
    PbxToEndpoint,
    EndpointToPbx,
}

pub(crate) fn hop(e: &EvidenceMessage) -> Hop {
    let sent = e.direction == "sent";
    match (e.side == "endpoint", sent) {
        (false, true) => Hop::LineToPbx,
        (false, false) => Hop::PbxToLine,
        (true, false) => Hop::PbxToEndpoint,
        (true, true) => Hop::EndpointToPbx,
    }
}

/// The call as a ladder between Line, PBX and Endpoint, in time order:
/// one row per message, the arrow written as text, each linking to the
/// message below.
pub(crate) fn ladder(evidence: &[EvidenceMessage]) -> String {
    let t0 = evidence.iter().map(|e| e.at_ms).min().unwrap_or(0);
    let mut order: Vec<usize> = (0..evidence.len()).collect();
    // Stable: messages captured in the same millisecond keep their order.
    order.sort_by_key(|&i| evidence[i].at_ms);
    let mut b = String::from(
        "<div class=\"scroll\"><table class=\"ladder\"><caption>Every message of the call in time order. \
Arrows point from sender to receiver: the line calls through the PBX to cidguard's endpoint.</caption>\
<thead><tr><th scope=\"col\">+ms</th><th scope=\"col\">Line</th><th scope=\"col\">PBX</th>\
<th scope=\"col\">Endpoint</th></tr></thead><tbody>",
    );
    for i in order {
        let e = &evidence[i];
        let h = hop(e);
        let words = match h {
            Hop::LineToPbx => "line to PBX",
            Hop::PbxToLine => "PBX to line",
            Hop::PbxToEndpoint => "PBX to endpoint",
            Hop::EndpointToPbx => "endpoint to PBX",
        };
        let link = format!(
            "<a href=\"#m{i}\">{}</a><span class=\"vh\"> ({words})</span>",
            esc(&message_label(&e.text))
        );
        let cells = match h {
            Hop::LineToPbx => format!("<td colspan=\"2\" class=\"to-r\">{link} ──→</td><td></td>"),
            Hop::PbxToLine => format!("<td colspan=\"2\" class=\"to-l\">←── {link}</td><td></td>"),
            Hop::PbxToEndpoint => {
                format!("<td></td><td colspan=\"2\" class=\"to-r\">{link} ──→</td>")
            }
            Hop::EndpointToPbx => {
                format!("<td></td><td colspan=\"2\" class=\"to-l\">←── {link}</td>")
            }
        };
        let _ = write!(b, "<tr><td>{}</td>{cells}</tr>", e.at_ms.saturating_sub(t0));
    }
    b.push_str("</tbody></table></div>");
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(side: &str, direction: &str, at_ms: u64, text: &str) -> EvidenceMessage {
        EvidenceMessage {
            side: side.into(),
            direction: direction.into(),
            at_ms,
            flow: "udp".into(),
            text: text.into(),
        }
    }

    #[test]
    fn findings_read_as_sentences_with_header_and_value_escaped() {
        let f = Finding {
            header: "P-Asserted-Identity".into(),
            value: "<sip:+441632960123@pbx>".into(),
            kind: Kind::Number,
            shown: true,
            detail: "x".into(),
            matched: "01632 960123".into(),
            seen: String::new(),
        };
        assert_eq!(
            finding_sentence(&f),
            "The organisation's number <strong>01632 960123</strong> is in \
<code>P-Asserted-Identity</code>, which phones show when Privacy is missing."
        );
        // A number inside a configured range: the number seen, and the
        // range it fell in.
        let in_range = Finding {
            matched: "+61 3 7010 0100-0199".into(),
            seen: "+61370100150".into(),
            ..f.clone()
        };
        assert_eq!(
            finding_sentence(&in_range),
            "The organisation's number <strong>+61370100150</strong> (configured as \
+61 3 7010 0100-0199) is in <code>P-Asserted-Identity</code>, which phones show when \
Privacy is missing."
        );
        let hostile = Finding {
            header: "X-<b>".into(),
            kind: Kind::Name,
            shown: false,
            matched: "<script>".into(),
            seen: String::new(),
            ..f
        };
        let s = finding_sentence(&hostile);
        assert!(!s.contains("<script>") && !s.contains("<b>"), "{s}");
        assert!(
            s.contains("&lt;script&gt;") && s.contains("isn't usually shown"),
            "{s}"
        );
    }

    #[test]
    fn ladder_is_in_time_order_with_text_arrows() {
        let ev = vec![
            msg("line", "sent", 1000, "INVITE sip:a SIP/2.0\r\n\r\n"),
            msg("line", "received", 1050, "SIP/2.0 486 Busy Here\r\n\r\n"),
            msg("endpoint", "received", 1010, "INVITE sip:b SIP/2.0\r\n\r\n"),
            msg("endpoint", "sent", 1040, "SIP/2.0 <i>486</i> Busy\r\n\r\n"),
        ];
        let l = ladder(&ev);
        let at = |s: &str| l.find(s).unwrap_or_else(|| panic!("{s} missing in {l}"));
        // Time order, with each message's own anchor.
        assert!(at("#m0") < at("#m2") && at("#m2") < at("#m3") && at("#m3") < at("#m1"));
        assert!(
            l.contains("<a href=\"#m0\">INVITE</a><span class=\"vh\"> (line to PBX)</span> ──→")
        );
        assert!(l.contains("←── <a href=\"#m1\">486 Busy Here</a>"));
        assert!(l.contains("<td></td><td colspan=\"2\" class=\"to-r\"><a href=\"#m2\">INVITE</a>"));
        assert!(l.contains("(endpoint to PBX)"));
        assert!(l.contains("<td>40</td>") && l.contains("<td>0</td>"));
        assert!(!l.contains("<i>"), "escaped: {l}");
        assert!(l.contains("<th scope=\"col\">Line</th><th scope=\"col\">PBX</th>"));
    }

    #[test]
    fn labels_are_methods_or_statuses() {
        assert_eq!(message_label("ACK sip:x SIP/2.0\r\n"), "ACK");
        assert_eq!(message_label("SIP/2.0 180 Ringing\r\n"), "180 Ringing");
        assert_eq!(message_label("garbage"), "garbage");
    }
}

#[derive(Deserialize)]
pub struct LoginParams {
    next: Option<String>,
}

/// The sign-in page.
pub async fn login(Query(p): Query<LoginParams>) -> Response {
    login_form(&super::safe_next(p.next.as_deref()), false, StatusCode::OK)
}

/// The sign-in page, after a wrong token too.
pub(crate) fn login_form(next: &str, wrong: bool, status: StatusCode) -> Response {
    (
        status,
        Html(page("Sign in", "", &super::html::login_form(next, wrong))),
    )
        .into_response()
}

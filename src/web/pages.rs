//! The HTML pages.

use std::fmt::Write;

use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use super::html::{badge, esc, highlight, page, run_form};
use super::{
    configured_lines, cursor_text, db, now_ms, parse_cursor, parse_id, run_results, state_word,
    AppState, WebError, WebResult,
};
use crate::check::result::Trigger;
use crate::store::{rfc3339_of_ms, CheckQuery, Ratio, StoredCheck};

/// Cells in a line's history bar on the overview.
const BAR_CELLS: usize = 30;
/// Checks per page on a line's timeline.
const PAGE_SIZE: usize = 50;

fn pct(r: &Ratio) -> String {
    match r.pass_ratio() {
        Some(p) => format!("{:.0}% <small>({} checks)</small>", p * 100.0, r.total()),
        None => "–".into(),
    }
}

fn trigger_text(t: &Trigger) -> String {
    match t {
        Trigger::Schedule => "scheduled".into(),
        Trigger::Manual { label } => match label {
            Some(l) => format!("manual run: “{}”", esc(l)),
            None => "manual run".into(),
        },
        Trigger::Api { label } => match label {
            Some(l) => format!("API run: “{}”", esc(l)),
            None => "API run".into(),
        },
        Trigger::PbxChange { to, .. } => format!("PBX changed to {}", esc(to)),
        Trigger::Confirm => "confirming a failure".into(),
    }
}

fn check_state(c: &StoredCheck) -> &'static str {
    state_word(Some(c))
}

fn bar(checks: &[StoredCheck]) -> String {
    let mut s = String::from("<div class=\"bar\" role=\"list\">");
    // Oldest first, so time runs left to right.
    for c in checks.iter().rev() {
        let st = check_state(c);
        let icon = match st {
            "pass" => "✓",
            "fail" => "✗",
            _ => "?",
        };
        let _ = write!(
            s,
            "<a role=\"listitem\" class=\"{st}\" href=\"/checks/{}\" title=\"{} {st}\" aria-label=\"{} {st}\">{icon}</a>",
            c.id,
            esc(&c.result.started_at),
            esc(&c.result.started_at)
        );
    }
    s.push_str("</div>");
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
) -> WebResult<Response> {
    let names = configured_lines(&st);
    let (ov, bars, changes) = db(&st, move |s| {
        let ov = s.overview(Some(&names), now_ms())?;
        let mut bars = Vec::with_capacity(names.len());
        for n in &names {
            let mut q = CheckQuery::line(n);
            q.limit = BAR_CELLS;
            bars.push(s.checks(&q)?.checks);
        }
        let changes = s.pbx_changes(None, 20)?;
        Ok((ov, bars, changes))
    })
    .await?;
    let mut rows: Vec<(usize, String)> = Vec::new();
    for (o, checks) in ov.iter().zip(&bars) {
        let state = state_word(o.latest.as_ref());
        let rank = match state {
            "fail" => 0,
            "inconclusive" => 1,
            "unchecked" => 2,
            _ => 3,
        };
        let expected = st
            .inner
            .config
            .line(&o.line)
            .map(|l| match &l.umbrella {
                Some(u) => format!("umbrella: {}", esc(&u.name)),
                None => l.expect.to_string(),
            })
            .unwrap_or_default();
        let last = o
            .latest
            .as_ref()
            .map(|c| {
                format!(
                    "<a href=\"/checks/{}\">{}</a><br><small>{}</small>",
                    c.id,
                    esc(&c.result.started_at),
                    esc(&c.result.summary())
                )
            })
            .unwrap_or_else(|| "never".into());
        rows.push((
            rank,
            format!(
                "<tr><td><a href=\"/lines/{n}\">{n}</a></td><td>{}</td><td>{expected}</td><td>{last}</td>\
<td class=\"wide\">{}</td><td>{}</td><td class=\"wide\">{}</td><td class=\"wide\">{}</td></tr>",
                badge(state),
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
    if st.inner.demo.get().is_some() {
        match p.demo.as_deref() {
            Some("leak") => body.push_str(&format!(
                "<p class=\"notice\" role=\"status\">The demo PBX now sends {}'s number and name. \
Its next check should fail and an alert go out.</p>",
                crate::demo::FLIP_LINE
            )),
            Some("restore") => body.push_str(
                "<p class=\"notice\" role=\"status\">The demo PBX's rules are back as they were.</p>",
            ),
            _ => {}
        }
    }
    body.push_str(
        "<table><caption>Lines, failing first</caption><thead><tr><th>Line</th><th>State</th>\
<th>Expected</th><th>Last check</th><th class=\"wide\">Recent checks</th><th>Pass 24 h</th>\
<th class=\"wide\">7 days</th><th class=\"wide\">90 days</th></tr></thead><tbody>",
    );
    for (_, r) in rows {
        body.push_str(&r);
    }
    body.push_str("</tbody></table><h2>PBX software</h2>");
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
    body.push_str(&run_form(None));
    if st.inner.demo.get().is_some() {
        body.push_str(&super::html::demo_form(crate::demo::FLIP_LINE));
    }
    Ok(Html(page("Overview", "", &body)).into_response())
}

#[derive(Deserialize)]
pub struct LineParams {
    cursor: Option<String>,
}

pub async fn line(
    State(st): State<AppState>,
    Path(name): Path<String>,
    Query(p): Query<LineParams>,
) -> WebResult<Response> {
    if st.inner.config.line(&name).is_none() {
        return Err(WebError::NotFound);
    }
    let mut q = CheckQuery::line(&name);
    q.limit = PAGE_SIZE;
    q.after = p.cursor.as_deref().map(parse_cursor).transpose()?;
    // Only the changes of this line's own PBX.
    let registrar = st
        .inner
        .config
        .line(&name)
        .and_then(|l| l.account.as_ref())
        .map(|a| a.registrar.clone());
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
    body.push_str(&run_form(Some(&name)));
    Ok(Html(page(&format!("Line {name}"), "", &body)).into_response())
}

pub async fn check(State(st): State<AppState>, Path(id): Path<String>) -> WebResult<Response> {
    let id = parse_id(&id)?;
    let c = db(&st, move |s| s.check(id))
        .await?
        .ok_or(WebError::NotFound)?;
    let r = &c.result;
    let mut b = String::new();
    let _ = write!(
        b,
        "<p>{} <a href=\"/lines/{l}\">{l}</a> · started {} · {} · took {} ms</p><p><strong>{}</strong></p>",
        badge(check_state(&c)),
        esc(&r.started_at),
        trigger_text(&r.trigger),
        r.duration_ms,
        esc(&r.summary()),
        l = esc(&r.line),
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
        b.push_str("<ul>");
        for f in &r.findings {
            let _ =
                write!(
                b,
                "<li><strong>{}</strong> in <code>{}</code>{}: {}<br>value: <code>{}</code></li>",
                esc(&format!("{:?}", f.kind)),
                esc(&f.header),
                if f.shown { " (shown to the person called)" } else { "" },
                esc(&f.detail),
                esc(&f.value)
            );
        }
        b.push_str("</ul>");
    }
    let expected = match st
        .inner
        .config
        .line(&r.line)
        .and_then(|l| l.umbrella.as_ref())
    {
        Some(u) => format!("{} (umbrella: {})", r.expected, esc(&u.name)),
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
        let t0 = r.evidence.iter().map(|e| e.at_ms).min().unwrap_or(0);
        b.push_str("<table><thead><tr><th>+ms</th><th>Side</th><th>Direction</th><th>Message</th></tr></thead><tbody>");
        for (i, e) in r.evidence.iter().enumerate() {
            let first = e.text.lines().next().unwrap_or("");
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td><a href=\"#m{i}\">{}</a></td></tr>",
                e.at_ms.saturating_sub(t0),
                esc(&e.side),
                if e.direction == "sent" {
                    "→ sent"
                } else {
                    "← received"
                },
                esc(first)
            );
        }
        b.push_str("</tbody></table><h2>Messages</h2>");
        let needles: Vec<&str> = r
            .findings
            .iter()
            .flat_map(|f| [f.value.as_str(), f.matched.as_str()])
            .collect();
        for (i, e) in r.evidence.iter().enumerate() {
            let _ = write!(
                b,
                "<h3 id=\"m{i}\">{} {} · {}</h3><pre>{}</pre>",
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
    if let Some(l) = &info.label {
        let _ = write!(b, "<p>Label: “{}”</p>", esc(l));
    }
    b.push_str("<ul>");
    for (line, c) in &found {
        match c {
            Some(cid) => {
                let _ = write!(
                    b,
                    "<li>{}: <a href=\"/checks/{cid}\">result</a></li>",
                    esc(line)
                );
            }
            None => {
                let _ = write!(b, "<li>{}: waiting…</li>", esc(line));
            }
        }
    }
    b.push_str("</ul>");
    let head = if done {
        b.push_str("<p>All done.</p>");
        ""
    } else {
        b.push_str("<p>This page refreshes itself every 3 seconds.</p>");
        "<meta http-equiv=\"refresh\" content=\"3\">"
    };
    Ok(Html(page(&format!("Run {id}"), head, &b)).into_response())
}

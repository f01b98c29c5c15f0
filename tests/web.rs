//! The dashboard and API over HTTP: pages, escaping of hostile values,
//! auth and cross-site refusal, pagination, metrics, run-now through the
//! daemon's channel, the OpenAPI document, and a real socket; host names
//! a DNS-rebinding page would use, server-side sessions and where a
//! sign-in may send the browser.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use cidguard::check::result::{EvidenceMessage, Trigger};
use cidguard::daemon::RunRequest;
use cidguard::plan::Plan;
use cidguard::store::{Record, Store, DAY_MS};
use cidguard::verdict::{Finding, Kind, Outcome};
use cidguard::web::{app, AppState, ROUTES};
use tokio::sync::mpsc;
use tower::ServiceExt;

use crate::store::result_at;

const TOKEN: &str = "0123456789abcdef-test-token";

fn config(lines: &[&str], read_auth: bool) -> Arc<Plan> {
    let mut t = String::from(
        "[organisation]\nname = \"Safe Haven\"\nregion = \"AU\"\nnumbers = [\"+61 3 7010 0142\"]\n",
    );
    for l in lines {
        t.push_str(&format!(
            "[[line]]\nname = \"{l}\"\nexpect = \"withheld\"\n"
        ));
    }
    t.push_str(&format!(
        "[dashboard]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\nread_auth = {read_auth}\n"
    ));
    Arc::new(Plan::from_toml(&t, Path::new("web.toml")).unwrap())
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    cfg: Arc<Plan>,
}

impl Fixture {
    fn new(lines: &[&str], read_auth: bool) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open_in(dir.path()).unwrap());
        Fixture {
            _dir: dir,
            store,
            cfg: config(lines, read_auth),
        }
    }
    fn state(&self, runs: Option<mpsc::Sender<RunRequest>>) -> AppState {
        let dash = self.cfg.config().dashboard.clone().unwrap();
        // A plan that never changes: its channel's sender is dropped.
        let (_, plans) = tokio::sync::watch::channel(self.cfg.clone());
        AppState::new(self.store.clone(), plans, &dash, runs).unwrap()
    }
    fn record(&self, line: &str, outcome: Outcome, at_ms: i64) -> i64 {
        let r = result_at(line, outcome, at_ms);
        self.store
            .record_check(
                &r,
                &Record {
                    recorded_at_ms: at_ms,
                    ..Record::default()
                },
            )
            .unwrap()
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

async fn send(
    app: &axum::Router,
    req: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let r = app.clone().oneshot(req).await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let body = axum::body::to_bytes(r.into_body(), 10 << 20).await.unwrap();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

async fn get(app: &axum::Router, uri: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    send(app, Request::get(uri).body(Body::empty()).unwrap()).await
}

fn hostile_result(at_ms: i64) -> cidguard::check::result::CheckResult {
    let mut r = result_at("refuge", Outcome::Fail, at_ms);
    r.findings = vec![Finding {
        header: "From".into(),
        value: "<script>alert(1)</script>".into(),
        kind: Kind::Name,
        shown: true,
        detail: "the organisation's name <b>".into(),
        matched: "+61370100142".into(),
        seen: String::new(),
    }];
    r.evidence = vec![
        EvidenceMessage {
            side: "endpoint".into(),
            direction: "received".into(),
            at_ms: at_ms as u64,
            flow: "udp 127.0.0.1:5060 -> 127.0.0.1:5080".into(),
            text: "INVITE sip:x SIP/2.0\r\nFrom: \"<script>alert(1)</script>\" <sip:+61370100142@pbx>\r\n\r\n".into(),
        },
        EvidenceMessage {
            side: "line".into(),
            direction: "received".into(),
            at_ms: at_ms as u64 + 40,
            flow: "udp 127.0.0.1:5080 -> 127.0.0.1:5060".into(),
            text: "SIP/2.0 486 Busy Here\r\n\r\n".into(),
        },
    ];
    r
}

#[tokio::test]
async fn pages_escape_hostile_values_and_highlight_them() {
    let f = Fixture::new(&["refuge", "helpline"], false);
    let t = now() - 3_600_000;
    f.record("helpline", Outcome::Pass, t);
    let id = f
        .store
        .record_check(
            &hostile_result(t),
            &Record {
                recorded_at_ms: t,
                ..Record::default()
            },
        )
        .unwrap();
    f.store
        .observe_pbx("sip:pbx.example.org", "FreePBX 16", t)
        .unwrap();
    f.store
        .observe_pbx("sip:pbx.example.org", "FreePBX <17>", t + 1000)
        .unwrap();
    let app = app(f.state(None));

    let (s, h, body) = get(&app, "/").await;
    assert!(
        body.contains("FreePBX &lt;17&gt;"),
        "PBX change shown: {body}"
    );
    assert_eq!(s, StatusCode::OK);
    for name in [
        "content-security-policy",
        "x-content-type-options",
        "referrer-policy",
        "x-frame-options",
    ] {
        assert!(h.contains_key(name), "{name} missing");
    }
    assert!(h["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));
    // Failing line first, state in words as well as colour.
    let refuge = body.find("/lines/refuge").unwrap();
    let helpline = body.find("/lines/helpline").unwrap();
    assert!(refuge < helpline, "failing line first");
    assert!(body.contains("FAIL") && body.contains("Pass"));
    assert!(!body.contains("<script>"), "{body}");

    let (s, _, body) = get(&app, &format!("/checks/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(!body.contains("<script>"), "unescaped value in {body}");
    assert!(!body.contains("<b>"), "unescaped detail");
    // The finding's matched number is marked where it arrived; the hostile
    // display name around it stays escaped.
    assert!(
        body.contains("From: &quot;&lt;script&gt;alert(1)&lt;/script&gt;&quot; &lt;sip:<mark>+61370100142</mark>@pbx&gt;"),
        "{body}"
    );
    assert!(
        body.contains("486 Busy Here") && body.contains("<td>40</td>"),
        "ladder"
    );

    let (s, h, body) = get(&app, &format!("/checks/{id}/evidence.json")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h[header::CONTENT_DISPOSITION]
        .to_str()
        .unwrap()
        .contains("attachment"));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["evidence"].as_array().unwrap().len(), 2);

    let (s, _, body) = get(&app, "/lines/refuge").await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("still failing"), "incident shown: {body}");
    assert!(!body.contains("<script>"));
    assert_eq!(get(&app, "/lines/nope").await.0, StatusCode::NOT_FOUND);
    assert_eq!(get(&app, "/checks/999999").await.0, StatusCode::NOT_FOUND);
    assert_eq!(get(&app, "/checks/abc").await.0, StatusCode::NOT_FOUND);
    // No secret in any page.
    for uri in ["/", "/lines/refuge", "/api/v1/lines", "/metrics"] {
        assert!(
            !get(&app, uri).await.2.contains(TOKEN),
            "{uri} shows the token"
        );
    }
}

#[tokio::test]
async fn check_page_explains_findings_and_draws_the_ladder() {
    let f = Fixture::new(&["refuge"], false);
    let t = now() - 3_600_000;
    let mut r = hostile_result(t);
    r.findings.push(Finding {
        header: "P-Asserted-Identity".into(),
        value: "<sip:+61370100142@pbx>".into(),
        kind: Kind::Number,
        shown: true,
        detail: "the organisation's number".into(),
        matched: "03 7010 0142".into(),
        seen: String::new(),
    });
    // The endpoint's 486 and the line's INVITE, captured out of time order.
    r.evidence.insert(
        0,
        EvidenceMessage {
            side: "line".into(),
            direction: "sent".into(),
            at_ms: t as u64 - 10,
            flow: "udp 127.0.0.1:5062 -> 127.0.0.1:5060".into(),
            text: "INVITE sip:+61399990000@pbx SIP/2.0\r\n\r\n".into(),
        },
    );
    r.evidence.push(EvidenceMessage {
        side: "endpoint".into(),
        direction: "sent".into(),
        at_ms: t as u64 + 20,
        flow: "udp 127.0.0.1:5080 -> 127.0.0.1:5060".into(),
        text: "SIP/2.0 486 <script>x</script>\r\n\r\n".into(),
    });
    let id = f
        .store
        .record_check(
            &r,
            &Record {
                recorded_at_ms: t,
                ..Record::default()
            },
        )
        .unwrap();
    let app = app(f.state(None));
    let (s, _, body) = get(&app, &format!("/checks/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    // Plain language, keeping the header name and the value.
    assert!(
        body.contains(
            "The organisation's number <strong>03 7010 0142</strong> is in \
<code>P-Asserted-Identity</code>, which phones show when Privacy is missing."
        ),
        "{body}"
    );
    assert!(body.contains("<code>&lt;sip:+61370100142@pbx&gt;</code>"));
    assert!(
        body.contains(
            "The organisation's name <strong>“&lt;script&gt;alert(1)&lt;/script&gt;”</strong>"
        ) || body
            .contains("is in <code>From</code>, which the phone being called shows as the caller"),
        "{body}"
    );
    // The ladder: three parties, text arrows, time order, links to messages.
    let ladder =
        &body[body.find("class=\"ladder\"").unwrap()..body.find("<h2>Messages</h2>").unwrap()];
    assert!(ladder.contains("<caption>") && ladder.contains("<th scope=\"col\">Endpoint</th>"));
    let row = |needle: &str| {
        ladder
            .find(needle)
            .unwrap_or_else(|| panic!("{needle}: {ladder}"))
    };
    let invite_out = row("<a href=\"#m0\">INVITE</a><span class=\"vh\"> (line to PBX)</span> ──→");
    let invite_in =
        row("<a href=\"#m1\">INVITE</a><span class=\"vh\"> (PBX to endpoint)</span> ──→");
    let busy_ep = row("←── <a href=\"#m3\">486 &lt;script&gt;x&lt;/script&gt;</a><span class=\"vh\"> (endpoint to PBX)</span>");
    let busy_line =
        row("←── <a href=\"#m2\">486 Busy Here</a><span class=\"vh\"> (PBX to line)</span>");
    assert!(invite_out < invite_in && invite_in < busy_ep && busy_ep < busy_line);
    assert!(
        ladder.contains("<td>0</td>") && ladder.contains("<td>50</td>"),
        "{ladder}"
    );
    assert!(!body.contains("<script>"), "{body}");
    // Every message still has its anchor, its marks and the download link.
    for i in 0..4 {
        assert!(body.contains(&format!("id=\"m{i}\"")));
    }
    assert!(
        body.contains("<mark>&lt;sip:+61370100142@pbx&gt;</mark>"),
        "{body}"
    );
    // Marks only in what arrived at the endpoint, not in the line's own
    // INVITE or the endpoint's answer.
    assert!(body.contains("<pre>INVITE sip:+61399990000@pbx SIP/2.0\r\n\r\n</pre>"));
    assert_eq!(body.matches("<mark>").count(), 1, "{body}");
    assert!(body.contains(&format!("href=\"/checks/{id}/evidence.json\" download")));
}

/// An umbrella line's pass reads as an umbrella pass, not "withheld"; a
/// descriptor finding is summarised and explained in plain words.
#[tokio::test]
async fn umbrella_passes_and_descriptor_findings_read_right() {
    let f = Fixture::new(&["outreach", "intake"], false);
    let t = now() - 60_000;
    let rec = Record {
        recorded_at_ms: t,
        ..Record::default()
    };
    let mut r = result_at("outreach", Outcome::Pass, t);
    r.expected = cidguard::config::Expect::Umbrella;
    f.store.record_check(&r, &rec).unwrap();
    let mut r = result_at("intake", Outcome::Fail, t);
    r.findings = vec![Finding {
        header: "Via".into(),
        value: "SIP/2.0/UDP dv-shelter-pbx.local:5060".into(),
        kind: Kind::Descriptor,
        shown: false,
        detail: "\"shelter\" reveals what kind of service is calling".into(),
        matched: "shelter".into(),
        seen: String::new(),
    }];
    let id = f.store.record_check(&r, &rec).unwrap();
    let app = app(f.state(None));
    let (_, _, body) = get(&app, "/").await;
    assert!(
        body.contains("umbrella identity shown as expected"),
        "{body}"
    );
    assert!(!body.contains("identity withheld as expected"), "{body}");
    assert!(body.contains("kind of service shown in Via"), "{body}");
    let (_, _, body) = get(&app, &format!("/checks/{id}")).await;
    assert!(
        body.contains("Words that reveal what kind of service is calling, <strong>“shelter”</strong>, are in <code>Via</code>"),
        "{body}"
    );
}

#[tokio::test]
async fn overview_and_api_say_when_each_line_is_next_checked() {
    let mut f = Fixture::new(&["refuge"], false);
    let text = format!(
        "[organisation]\nname = \"Safe Haven\"\nregion = \"AU\"\n\
[daemon]\ntime_zone = \"Australia/Sydney\"\ndefault_schedule = \"0 * * * *\"\n\
[[daemon.maintenance]]\nstart = \"2020-01-01T00:00:00Z\"\nend = \"2099-01-01T00:00:00Z\"\nreason = \"move\"\n\
[dashboard]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\
[[line]]\nname = \"refuge\"\nexpect = \"withheld\"\nschedule = \"30 2 * * *\"\n\
[line.account]\nregistrar = \"sip:127.0.0.1:5999\"\nusername = \"201\"\npassword = \"s3cret\"\n\
[[line]]\nname = \"inspect-only\"\nexpect = \"withheld\"\n"
    );
    f.cfg = Arc::new(Plan::from_toml(&text, Path::new("web.toml")).unwrap());
    let app = app(f.state(None));
    let (s, _, body) = get(&app, "/").await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("<th>Next check</th>"), "{body}");
    // 02:30 in Sydney, shown in the daemon's zone with the UTC instant.
    assert!(body.contains(" 02:30 AE"), "{body}");
    assert!(body.contains("<time datetime=\""));
    assert!(body.contains("not scheduled"), "{body}");
    assert!(
        body.contains("alerts held (maintenance until 2099-01-01"),
        "{body}"
    );
    let v: serde_json::Value = serde_json::from_str(&get(&app, "/api/v1/lines").await.2).unwrap();
    let at = v["lines"][0]["next_check_at"].as_str().unwrap();
    let at = chrono::DateTime::parse_from_rfc3339(at).unwrap();
    let left = at.timestamp_millis() - now();
    assert!(left > 0 && left <= DAY_MS + 3_600_000, "{at}");
    assert_eq!(
        at.with_timezone(&chrono_tz::Australia::Sydney)
            .format("%H:%M")
            .to_string(),
        "02:30"
    );
    assert!(v["lines"][1]["next_check_at"].is_null());
    // Every field the API gives is documented.
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml")).unwrap();
    for key in v["lines"][0].as_object().unwrap().keys() {
        assert!(
            doc.contains(&format!("                        {key}: ")),
            "/api/v1/lines field {key} is not in docs/openapi.yaml"
        );
    }
}

#[tokio::test]
async fn api_pages_through_checks_and_reports_status() {
    let f = Fixture::new(&["refuge", "helpline"], false);
    let t0 = now() - 10 * 3_600_000;
    for i in 0..7 {
        f.record(
            "refuge",
            if i == 3 { Outcome::Fail } else { Outcome::Pass },
            t0 + i * 3_600_000,
        );
    }
    let app = app(f.state(None));
    let mut cursor: Option<String> = None;
    let mut seen = Vec::new();
    loop {
        let uri = match &cursor {
            Some(c) => format!("/api/v1/lines/refuge/checks?limit=3&cursor={c}"),
            None => "/api/v1/lines/refuge/checks?limit=3".into(),
        };
        let (s, _, body) = get(&app, &uri).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        for c in v["checks"].as_array().unwrap() {
            seen.push(c["id"].as_i64().unwrap());
        }
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7);
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "newest first, no repeats: {seen:?}"
    );
    let (_, _, body) = get(&app, "/api/v1/lines/refuge/checks?outcome=fail").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["checks"].as_array().unwrap().len(), 1);
    assert_eq!(
        get(&app, "/api/v1/lines/refuge/checks?outcome=maybe")
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(&app, "/api/v1/lines/refuge/checks?cursor=x").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(&app, "/api/v1/lines/refuge/checks?since=yesterday")
            .await
            .0,
        StatusCode::BAD_REQUEST
    );

    let (_, _, body) = get(&app, "/api/v1/status").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    // helpline was never checked.
    assert_eq!(v["status"], "inconclusive", "{v}");
    f.record("helpline", Outcome::Fail, now());
    let v: serde_json::Value = serde_json::from_str(&get(&app, "/api/v1/status").await.2).unwrap();
    assert_eq!(v["status"], "failing");
    assert_eq!(v["failing"], serde_json::json!(["helpline"]));
    let v: serde_json::Value = serde_json::from_str(&get(&app, "/api/v1/lines").await.2).unwrap();
    assert_eq!(v["lines"].as_array().unwrap().len(), 2);
}

fn post_json(uri: &str, body: &str) -> axum::http::request::Builder {
    let _ = body;
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::HOST, "127.0.0.1:8080")
}

#[tokio::test]
async fn changes_need_the_token_and_the_same_site() {
    let f = Fixture::new(&["refuge"], false);
    let app = app(f.state(None));
    let body =
        r#"{"start":"2030-01-01T00:00:00Z","end":"2030-01-01T02:00:00Z","reason":"upgrade"}"#;
    let (s, h, _) = send(
        &app,
        post_json("/api/v1/maintenance", body)
            .body(Body::from(body))
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(h.contains_key(header::WWW_AUTHENTICATE));
    let bad = send(
        &app,
        post_json("/api/v1/maintenance", body)
            .header(header::AUTHORIZATION, "Bearer wrong-token-wrong-token")
            .body(Body::from(body))
            .unwrap(),
    )
    .await;
    assert_eq!(bad.0, StatusCode::UNAUTHORIZED);
    // From another site: refused even with the token.
    let cross = send(
        &app,
        post_json("/api/v1/maintenance", body)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::ORIGIN, "https://evil.example")
            .body(Body::from(body))
            .unwrap(),
    )
    .await;
    assert_eq!(cross.0, StatusCode::FORBIDDEN);
    let form = send(
        &app,
        Request::post("/run")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header("sec-fetch-site", "cross-site")
            .body(Body::from(format!("token={TOKEN}")))
            .unwrap(),
    )
    .await;
    assert_eq!(form.0, StatusCode::FORBIDDEN);
    let ok = send(
        &app,
        post_json("/api/v1/maintenance", body)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::ORIGIN, "http://127.0.0.1:8080")
            .body(Body::from(body))
            .unwrap(),
    )
    .await;
    assert_eq!(ok.0, StatusCode::CREATED, "{}", ok.2);
    let id = serde_json::from_str::<serde_json::Value>(&ok.2).unwrap()["id"]
        .as_i64()
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&get(&app, "/api/v1/maintenance").await.2).unwrap();
    assert_eq!(v["windows"][0]["reason"], "upgrade");
    let del = |auth: bool| {
        let mut b = Request::delete(format!("/api/v1/maintenance/{id}"));
        if auth {
            b = b.header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
        }
        b.body(Body::empty()).unwrap()
    };
    assert_eq!(send(&app, del(false)).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(send(&app, del(true)).await.0, StatusCode::NO_CONTENT);
    assert_eq!(send(&app, del(true)).await.0, StatusCode::NOT_FOUND);
    // Run-now without a daemon behind it: said plainly.
    let run = send(
        &app,
        post_json("/api/v1/checks", "")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::from(r#"{"lines":["refuge"]}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(run.0, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn read_auth_guards_reading_but_not_health() {
    let f = Fixture::new(&["refuge"], true);
    let app = app(f.state(None));
    assert_eq!(get(&app, "/").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(get(&app, "/api/v1/lines").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(get(&app, "/healthz").await.0, StatusCode::OK);
    let r = send(
        &app,
        Request::get("/")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.0, StatusCode::OK);
}

/// A person with a browser under `read_auth`: sent to sign in, signs in
/// with the token once, then reads pages and runs checks with the cookie;
/// a wrong token, a sign-in from another site and an open redirect are
/// refused.
#[tokio::test]
async fn signing_in_with_the_token_sets_a_cookie_for_pages_and_forms() {
    let f = Fixture::new(&["refuge"], true);
    let (tx, mut rx) = mpsc::channel::<RunRequest>(4);
    let app = app(f.state(Some(tx)));
    let html_get = |uri: &str| {
        Request::get(uri)
            .header(header::ACCEPT, "text/html,application/xhtml+xml")
            .body(Body::empty())
            .unwrap()
    };
    // A page is a redirect to the sign-in page, which itself is open.
    let (s, h, _) = send(&app, html_get("/lines/refuge?cursor=x")).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(
        h[header::LOCATION],
        "/login?next=/lines/refuge%3Fcursor%3Dx"
    );
    let (s, _, body) = send(&app, html_get("/login?next=/lines/refuge")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        body.contains("name=\"next\" value=\"/lines/refuge\""),
        "{body}"
    );
    let login = |form: String, site: &str| {
        Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header("sec-fetch-site", site)
            .body(Body::from(form))
            .unwrap()
    };
    // Wrong token: the form again, no cookie.
    let (s, h, body) = send(&app, login("token=nope&next=/".into(), "same-origin")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(!h.contains_key(header::SET_COOKIE) && body.contains("not right"));
    // From another site: refused even with the right token.
    let (s, h, _) = send(&app, login(format!("token={TOKEN}"), "cross-site")).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(!h.contains_key(header::SET_COOKIE));
    // The right token, and a `next` pointing at another site: home instead.
    let (s, h, _) = send(
        &app,
        login(format!("token={TOKEN}&next=//evil.example/"), "same-origin"),
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h[header::LOCATION], "/");
    let set = h[header::SET_COOKIE].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(set.contains(attr), "{attr} in {set}");
    }
    assert!(!set.contains(TOKEN), "the cookie is not the token: {set}");
    let cookie = set.split(';').next().unwrap().to_string();
    // Pages and the API with the cookie; forms without a token field.
    let with_cookie = |r: axum::http::request::Builder| r.header(header::COOKIE, cookie.clone());
    let (s, _, body) = send(
        &app,
        with_cookie(Request::get("/")).body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        body.contains("Signed in") && !body.contains("name=\"token\""),
        "{body}"
    );
    let (s, _, _) = send(
        &app,
        with_cookie(Request::get("/api/v1/lines"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // Run now with the cookie alone.
    let daemon = tokio::spawn(async move {
        let req = rx.recv().await.unwrap();
        req.reply.send(Ok(req.lines.clone())).unwrap();
    });
    let (s, _, body) = send(
        &app,
        with_cookie(Request::post("/run"))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header("sec-fetch-site", "same-origin")
            .body(Body::from("line=refuge&label=after+upgrade"))
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{body}");
    daemon.await.unwrap();
    // A forged cookie is nobody.
    let (s, _, _) = send(
        &app,
        Request::get("/api/v1/lines")
            .header(header::COOKIE, "cidguard_session=0000")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Signing out clears the cookie.
    let (s, h, _) = send(
        &app,
        with_cookie(Request::post("/logout"))
            .header("sec-fetch-site", "same-origin")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert!(h[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
}

#[tokio::test]
async fn run_now_goes_to_the_daemon_and_the_progress_page_follows_it() {
    let f = Fixture::new(&["refuge"], false);
    let (tx, mut rx) = mpsc::channel::<RunRequest>(4);
    let app = app(f.state(Some(tx)));
    // A stand-in daemon: accept, then record the result as the daemon would.
    let daemon = tokio::spawn(async move {
        let req = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(req.lines, vec!["refuge".to_string()]);
        // The run's id travels with the check, so its result is found by id.
        assert!(
            matches!(&req.trigger, Trigger::Manual { label: Some(l), run: Some(_) } if l == "after upgrade"),
            "{:?}",
            req.trigger
        );
        req.reply.send(Ok(req.lines.clone())).unwrap();
        req.trigger
    });
    let (s, h, _) = send(
        &app,
        Request::post("/run")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header("sec-fetch-site", "same-origin")
            .body(Body::from(format!(
                "token={TOKEN}&line=refuge&label=after+upgrade"
            )))
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let progress = h[header::LOCATION].to_str().unwrap().to_string();
    let trigger = daemon.await.unwrap();
    let (_, _, body) = get(&app, &progress).await;
    assert!(
        body.contains("http-equiv=\"refresh\"") && body.contains("waiting"),
        "{body}"
    );
    assert!(body.contains("0 of 1 lines checked"), "{body}");
    let Trigger::Manual { run: Some(run), .. } = trigger else {
        panic!("{trigger:?}")
    };
    assert!(progress.ends_with(&format!("/runs/{run}")), "{progress}");
    // Another run's check of the same line, started before this one was
    // asked for, is not this run's result.
    let mut other = result_at("refuge", Outcome::Fail, now() - 60_000);
    other.trigger = Trigger::Manual {
        label: None,
        run: Some(run + 1),
    };
    f.store.record_check(&other, &Record::default()).unwrap();
    assert!(get(&app, &progress)
        .await
        .2
        .contains("0 of 1 lines checked"));
    let mut r = result_at("refuge", Outcome::Pass, now());
    r.trigger = trigger;
    let id = f
        .store
        .record_check(
            &r,
            &Record {
                recorded_at_ms: now(),
                ..Record::default()
            },
        )
        .unwrap();
    let (_, _, body) = get(&app, &progress).await;
    assert!(!body.contains("http-equiv=\"refresh\""), "{body}");
    assert!(body.contains(&format!("/checks/{id}")));
    assert!(body.contains("label: “after upgrade”"), "{body}");
    assert!(
        body.contains("✓</span> Pass") && body.contains("identity withheld as expected"),
        "outcome and summary shown: {body}"
    );
    let (_, _, body) = get(&app, &progress.replace("/runs/", "/api/v1/runs/")).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["done"], true);
    assert_eq!(v["checks"][0]["check"], id);
    // The line page marks the manual run with its label.
    assert!(get(&app, "/lines/refuge")
        .await
        .2
        .contains("manual run: “after upgrade”"));

    // After a restart the dashboard has forgotten the run, but the history
    // has its check: the progress page and the API piece it together.
    let restarted = cidguard::web::app(f.state(None));
    let (s, _, body) = get(&restarted, &progress).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(
        body.contains("was restarted") && body.contains(&format!("/checks/{id}")),
        "{body}"
    );
    assert!(body.contains("label: “after upgrade”"), "{body}");
    let (_, _, body) = get(&restarted, &progress.replace("/runs/", "/api/v1/runs/")).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["done"].clone(), v["restored"].clone()),
        (true.into(), true.into())
    );
    assert_eq!(v["checks"][0]["check"], id);
    // A run it never had is not found, restart or not.
    let (s, _, _) = get(&restarted, &format!("/runs/{}", run ^ 1)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let f = Fixture::new(&["refuge", "helpline"], false);
    f.record("refuge", Outcome::Fail, now() - 1000);
    f.record("refuge", Outcome::Pass, now() - 2 * DAY_MS);
    let app = app(f.state(None));
    let (s, h, body) = get(&app, "/metrics").await;
    assert_eq!(s, StatusCode::OK);
    assert!(h[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    assert!(
        body.contains("cidguard_line_state{line=\"refuge\",state=\"fail\"} 1"),
        "{body}"
    );
    assert!(body.contains("cidguard_line_state{line=\"helpline\",state=\"unchecked\"} 1"));
    assert!(body.contains("cidguard_checks_total{line=\"refuge\",outcome=\"pass\"} 1"));
    assert!(body.contains("cidguard_alert_outbox_pending 0"));
    assert!(body.contains("cidguard_check_duration_seconds{line=\"refuge\"} 4.2"));
    // Every sample line is `name{labels} value` or `name value`, with its TYPE.
    for l in body.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = l.rsplit_once(' ').unwrap();
        value.parse::<f64>().unwrap();
        let metric = name.split('{').next().unwrap();
        assert!(
            body.contains(&format!("# TYPE {metric} ")),
            "{metric} has no TYPE"
        );
    }
}

#[test]
fn openapi_lists_exactly_the_api_routes() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml")).unwrap();
    let documented: Vec<String> = doc
        .lines()
        .filter(|l| l.starts_with("  /") && l.trim_end().ends_with(':'))
        .map(|l| l.trim().trim_end_matches(':').to_string())
        .collect();
    let served: Vec<String> = ROUTES
        .iter()
        .filter(|r| r.starts_with("/api/") || ["/metrics", "/healthz"].contains(r))
        .map(|r| r.to_string())
        .collect();
    for r in &served {
        assert!(
            documented.contains(r),
            "{r} is served but not in docs/openapi.yaml"
        );
    }
    for d in &documented {
        assert!(served.contains(d), "{d} is documented but not served");
    }
}

/// The app served on a port-0 loopback listener, and how to stop it.
struct Served {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), cidguard::web::WebError>>,
}

impl Served {
    async fn start(state: AppState) -> Served {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(cidguard::web::serve(listener, state, async {
            let _ = stopped.await;
        }));
        Served { addr, stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn serves_on_a_real_socket_and_stops() {
    let f = Fixture::new(&["refuge"], false);
    let server = Served::start(f.state(None)).await;
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.contains("x-frame-options: DENY") || out.contains("x-frame-options: deny"),
        "{out}"
    );
    tokio::time::timeout(Duration::from_secs(10), server.stop())
        .await
        .unwrap();
}

/// One HTTP/1.1 request over a real socket; returns the whole response.
async fn http(addr: std::net::SocketAddr, req: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_serves_the_dashboard_and_runs_checks_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[organisation]\nname = \"Safe Haven\"\nregion = \"AU\"\n\
[daemon]\nstate_dir = \"{}\"\njitter = \"0s\"\n\
[dashboard]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\
[[line]]\nname = \"refuge\"\nexpect = \"withheld\"\nschedule = \"0 0 1 1 *\"\n\
[line.account]\nregistrar = \"sip:127.0.0.1:5999\"\nusername = \"201\"\npassword = \"s3cret\"\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let deps = cidguard::daemon::Deps {
        checker: Arc::new(cidguard::daemon::UnavailableChecker),
        probe: Arc::new(cidguard::daemon::NoProbe),
        alerts: Arc::new(cidguard::daemon::NoAlerts),
        clock: Arc::new(cidguard::daemon::SystemClock),
        notifier: cidguard::daemon::notify::Notifier::disabled(),
        events: None,
        runs: None,
    };
    let (_reload_tx, reload) = mpsc::channel(1);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // The service binds the dashboard on a free port and says which.
    let service = cidguard::service::Service::prepare(&cfg).await.unwrap();
    let addr = service.dashboard_addr().unwrap();
    let port = addr.port();
    let daemon = tokio::spawn(async move {
        service
            .run(deps, reload, async {
                let _ = stop_rx.await;
            })
            .await
    });
    let body = r#"{"lines":["refuge"],"label":"smoke"}"#;
    let r = http(
        addr,
        format!(
            "POST /api/v1/checks HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n\
Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 202"), "{r}");
    let poll = r
        .split("\"poll\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    let check = loop {
        let r = http(
            addr,
            format!("GET {poll} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        let json = &r[r.find("\r\n\r\n").unwrap() + 4..];
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        if v["done"] == true {
            break v["checks"][0]["check"].as_i64().unwrap();
        }
        assert!(Instant::now() < deadline, "no result: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let r = http(
        addr,
        format!("GET /api/v1/checks/{check} HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(
        r.contains("\"kind\":\"api\"") && r.contains("\"label\":\"smoke\""),
        "{r}"
    );
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), daemon)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still listening after stop"
    );
}

/// A config for the reload test: `lines` are (name, schedule), each with an
/// account so it is scheduled; `extra_daemon` goes into `[daemon]`.
fn reload_config(state: &Path, lines: &[(&str, &str)], extra_daemon: &str) -> String {
    let mut t = format!(
        "[organisation]\nname = \"Safe Haven\"\nregion = \"AU\"\n\
[daemon]\nstate_dir = \"{}\"\njitter = \"0s\"\ntime_zone = \"UTC\"\n{extra_daemon}\n\
[dashboard]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n",
        state.display()
    );
    for (name, schedule) in lines {
        t.push_str(&format!(
            "[[line]]\nname = \"{name}\"\nexpect = \"withheld\"\nschedule = \"{schedule}\"\n\
[line.account]\nregistrar = \"sip:127.0.0.1:5999\"\nusername = \"201\"\npassword = \"s3cret\"\n"
        ));
    }
    t
}

/// GET over the real socket; the body.
async fn get_body(addr: std::net::SocketAddr, path: &str) -> String {
    let r = http(
        addr,
        format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            addr.port()
        ),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{path}: {r}");
    r[r.find("\r\n\r\n").unwrap() + 4..].to_string()
}

/// Each line of `/api/v1/lines` with its next check.
async fn api_lines(addr: std::net::SocketAddr) -> Vec<(String, String)> {
    let v: serde_json::Value =
        serde_json::from_str(&get_body(addr, "/api/v1/lines").await).unwrap();
    v["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["line"].as_str().unwrap().to_string(),
                l["next_check_at"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// The daemon's next event matching `pred`, within 10 s.
async fn next_event(
    events: &mut mpsc::UnboundedReceiver<cidguard::daemon::Event>,
    what: &str,
    pred: impl Fn(&cidguard::daemon::Event) -> bool,
) -> cidguard::daemon::Event {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let e = events.recv().await.expect("the daemon ended");
            if pred(&e) {
                return e;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {what} within 10 s"))
}

/// Regression: a reload re-read the config for the daemon, but the
/// dashboard kept the config it started with, so its overview and API
/// showed the old lines and schedules. Through the service (port-0
/// listeners): a line added to the file shows, with its schedule, as soon
/// as the reload is done; a file with a problem is refused and the
/// dashboard keeps showing the plan in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_shows_the_new_lines_and_schedules_on_the_dashboard_at_once() {
    use cidguard::daemon::Event;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = dir.path().join("cidguard.toml");
    std::fs::write(&cfg, reload_config(&state, &[("refuge", "0 3 * * *")], "")).unwrap();
    let service = cidguard::service::Service::prepare(&cfg).await.unwrap();
    let addr = service.dashboard_addr().unwrap();
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let deps = cidguard::daemon::Deps {
        checker: Arc::new(cidguard::daemon::UnavailableChecker),
        probe: Arc::new(cidguard::daemon::NoProbe),
        alerts: Arc::new(cidguard::daemon::NoAlerts),
        clock: Arc::new(cidguard::daemon::SystemClock),
        notifier: cidguard::daemon::notify::Notifier::disabled(),
        events: Some(events_tx),
        runs: None,
    };
    let (reload_tx, reload) = mpsc::channel(1);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        service
            .run(deps, reload, async {
                let _ = stop_rx.await;
            })
            .await
    });
    next_event(&mut events, "ready", |e| *e == Event::Ready).await;

    let lines = api_lines(addr).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].0, "refuge");
    assert!(lines[0].1.ends_with("T03:00:00.000Z"), "{lines:?}");
    let page = get_body(addr, "/").await;
    assert!(
        page.contains("refuge") && !page.contains("helpline"),
        "{page}"
    );

    // A line added, another schedule for the first: both at once.
    std::fs::write(
        &cfg,
        reload_config(
            &state,
            &[("refuge", "15 5 * * *"), ("helpline", "30 4 * * *")],
            "",
        ),
    )
    .unwrap();
    reload_tx.send(()).await.unwrap();
    let e = next_event(&mut events, "the reload", |e| {
        matches!(e, Event::Reloaded { .. })
    })
    .await;
    assert!(matches!(e, Event::Reloaded { ok: true, .. }), "{e:?}");
    let lines = api_lines(addr).await;
    let names: Vec<&str> = lines.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["refuge", "helpline"], "{lines:?}");
    assert!(lines[0].1.ends_with("T05:15:00.000Z"), "{lines:?}");
    assert!(lines[1].1.ends_with("T04:30:00.000Z"), "{lines:?}");
    let page = get_body(addr, "/").await;
    assert!(page.contains("/lines/helpline"), "{page}");
    assert!(
        page.contains("04:30 UTC") && page.contains("05:15 UTC"),
        "{page}"
    );
    assert!(!page.contains("03:00 UTC"), "{page}");
    let line_page = get_body(addr, "/lines/helpline").await;
    assert!(line_page.contains("Line helpline"), "{line_page}");

    // A file with a problem: refused, and the dashboard still shows the
    // plan in force.
    std::fs::write(
        &cfg,
        reload_config(&state, &[("refuge", "0 3 * * *")], "jitter = \"soon\""),
    )
    .unwrap();
    reload_tx.send(()).await.unwrap();
    let e = next_event(&mut events, "the refused reload", |e| {
        matches!(e, Event::Reloaded { .. })
    })
    .await;
    assert!(matches!(e, Event::Reloaded { ok: false, .. }), "{e:?}");
    assert_eq!(api_lines(addr).await, lines);
    let page = get_body(addr, "/").await;
    assert!(
        page.contains("/lines/helpline") && page.contains("04:30 UTC"),
        "{page}"
    );

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// `cidguard check` handing its run to a daemon that finishes without a
/// result for every line it queued (it was restarted in between): the
/// command fails and names the missing line instead of reporting on the
/// rest, since a line not checked must never pass.
#[tokio::test]
async fn check_via_daemon_fails_when_a_queued_line_has_no_result() {
    use axum::routing::{get as get_route, post};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // A daemon's API as it answers after such a restart.
    let stand_in = axum::Router::new()
        .route(
            "/api/v1/checks",
            post(|| async {
                (
                    StatusCode::ACCEPTED,
                    axum::Json(serde_json::json!({
                        "run": 1, "lines": ["refuge", "helpline"], "poll": "/api/v1/runs/1"
                    })),
                )
            }),
        )
        .route(
            "/api/v1/runs/1",
            get_route(|| async {
                axum::Json(serde_json::json!({
                    "run": 1, "done": true, "restored": true,
                    "checks": [{ "line": "refuge", "check": 7 }]
                }))
            }),
        );
    let server = tokio::spawn(async move { axum::serve(listener, stand_in).await });
    let mut cfg = config(&["refuge", "helpline"], false).config().clone();
    if let Some(d) = cfg.dashboard.as_mut() {
        d.listen = addr.to_string();
    }
    let lines = vec!["refuge".to_string(), "helpline".to_string()];
    let err = cidguard::web::client::check_via_daemon(&cfg, &lines, None, Duration::from_secs(5))
        .await
        .expect_err("an incomplete run is an error");
    let text = err.to_string();
    assert!(text.contains("without checking helpline"), "{text}");
    server.abort();
}

/// A request naming the host a DNS-rebinding page would use.
fn with_host(uri: &str, host: &str) -> Request<Body> {
    Request::get(uri)
        .header(header::HOST, host)
        .body(Body::empty())
        .unwrap()
}

/// Regression: the Host header was not checked, so a page whose DNS name
/// was rebound to the dashboard's address could read the open dashboard
/// and the evidence JSON. Now: 421 for any name that isn't ours, before
/// any data is read; IP literals, localhost and `/healthz` still answer.
#[tokio::test]
async fn a_dns_rebinding_host_is_refused_before_anything_is_read() {
    let f = Fixture::new(&["refuge"], false);
    let id = f
        .store
        .record_check(&hostile_result(now()), &Record::default())
        .unwrap();
    let app = app(f.state(None));
    for uri in [
        "/".to_string(),
        format!("/checks/{id}/evidence.json"),
        format!("/api/v1/checks/{id}"),
        "/api/v1/lines".into(),
        "/metrics".into(),
        "/lines/refuge".into(),
    ] {
        for host in [
            "rebind.evil.example:8080",
            "rebind.evil.example",
            "localhost.evil.example:8080",
        ] {
            let (s, h, body) = send(&app, with_host(&uri, host)).await;
            assert_eq!(s, StatusCode::MISDIRECTED_REQUEST, "{uri} as {host}");
            assert!(
                h[header::CONTENT_TYPE]
                    .to_str()
                    .unwrap()
                    .starts_with("text/plain")
                    && h.contains_key(header::CONTENT_SECURITY_POLICY),
                "{h:?}"
            );
            assert!(
                !body.contains("refuge") && !body.contains("script") && !body.contains("evil"),
                "{body}"
            );
        }
        for host in [
            "127.0.0.1:8080",
            "localhost:8080",
            "localhost",
            "[::1]:8080",
            "127.0.0.1",
        ] {
            assert_eq!(
                send(&app, with_host(&uri, host)).await.0,
                StatusCode::OK,
                "{uri} as {host}"
            );
        }
    }
    // Liveness carries no data: any name may ask.
    assert_eq!(
        send(&app, with_host("/healthz", "rebind.evil.example"))
            .await
            .0,
        StatusCode::OK
    );
    // Two Host headers: refused.
    let two = Request::get("/")
        .header(header::HOST, "127.0.0.1:8080")
        .header(header::HOST, "rebind.evil.example")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, two).await.0, StatusCode::MISDIRECTED_REQUEST);
    // The name in public_url is ours.
    let mut dash = f.cfg.config().dashboard.clone().unwrap();
    dash.public_url = Some("https://cidguard.example.org/".into());
    let (_, plans) = tokio::sync::watch::channel(f.cfg.clone());
    let app = cidguard::web::app(AppState::new(f.store.clone(), plans, &dash, None).unwrap());
    assert_eq!(
        send(&app, with_host("/", "cidguard.example.org")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, with_host("/", "other.example.org")).await.0,
        StatusCode::MISDIRECTED_REQUEST
    );
}

/// The same over a real socket: the Host header, and a request line that
/// names another host in absolute form.
#[tokio::test]
async fn a_dns_rebinding_host_is_refused_on_a_real_socket() {
    let f = Fixture::new(&["refuge"], false);
    let id = f
        .store
        .record_check(&hostile_result(now()), &Record::default())
        .unwrap();
    let server = Served::start(f.state(None)).await;
    let addr = server.addr;
    let port = addr.port();
    let get = |target: String, host: String| {
        http(
            addr,
            format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
    };
    let evidence = format!("/checks/{id}/evidence.json");
    let r = get(evidence.clone(), format!("rebind.evil.example:{port}")).await;
    assert!(r.starts_with("HTTP/1.1 421"), "{r}");
    assert!(!r.contains("INVITE"), "{r}");
    let r = get(
        format!("http://rebind.evil.example:{port}{evidence}"),
        format!("127.0.0.1:{port}"),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 421"), "{r}");
    let r = get(evidence.clone(), format!("127.0.0.1:{port}")).await;
    assert!(r.starts_with("HTTP/1.1 200") && r.contains("INVITE"), "{r}");
    tokio::time::timeout(Duration::from_secs(10), server.stop())
        .await
        .unwrap();
}

/// Sign in with the token (same site); returns the cookie pair to send.
async fn sign_in(app: &axum::Router, next: &str) -> (StatusCode, axum::http::HeaderMap) {
    let (s, h, _) = send(
        app,
        Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header("sec-fetch-site", "same-origin")
            .body(Body::from(format!("token={TOKEN}&next={next}")))
            .unwrap(),
    )
    .await;
    (s, h)
}

fn cookie_of(h: &axum::http::HeaderMap) -> String {
    h[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

async fn read_with(app: &axum::Router, cookie: &str) -> StatusCode {
    send(
        app,
        Request::get("/api/v1/lines")
            .header(header::COOKIE, cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .0
}

/// Regression: every sign-in got the same cookie value, so signing out
/// revoked nothing. Now each sign-in is its own random session kept by the
/// server: signing out ends that one (a copy of the cookie is nobody), the
/// others go on, and a restart ends them all.
#[tokio::test]
async fn every_sign_in_is_its_own_session_and_signing_out_ends_it() {
    let f = Fixture::new(&["refuge"], true);
    let app = app(f.state(None));
    let (s, one) = sign_in(&app, "/").await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (_, two) = sign_in(&app, "/").await;
    let (one, two) = (cookie_of(&one), cookie_of(&two));
    assert_ne!(one, two, "two sign-ins, two sessions");
    let id = one.split_once('=').unwrap().1;
    assert!(
        id.len() >= 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{one}"
    );
    assert_eq!(read_with(&app, &one).await, StatusCode::OK);
    assert_eq!(read_with(&app, &two).await, StatusCode::OK);
    let (s, _, _) = send(
        &app,
        Request::post("/logout")
            .header(header::COOKIE, one.clone())
            .header("sec-fetch-site", "same-origin")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(
        read_with(&app, &one).await,
        StatusCode::UNAUTHORIZED,
        "signed out"
    );
    assert_eq!(
        read_with(&app, &two).await,
        StatusCode::OK,
        "the other sign-in goes on"
    );
    // A restart (a new state over the same history) ends every sign-in.
    let restarted = cidguard::web::app(f.state(None));
    assert_eq!(read_with(&restarted, &two).await, StatusCode::UNAUTHORIZED);
}

/// Regression: the 12-hour limit was only the cookie's Max-Age, which a
/// copied cookie ignores. Now the server ends the session: with the
/// lifetime shortened to nothing, the cookie is refused at once.
#[tokio::test]
async fn an_expired_sign_in_is_refused_by_the_server() {
    let f = Fixture::new(&["refuge"], true);
    let state = f.state(None);
    let app = app(state.clone());
    let (_, h) = sign_in(&app, "/").await;
    let fresh = cookie_of(&h);
    assert!(h[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=43200"));
    assert_eq!(read_with(&app, &fresh).await, StatusCode::OK);
    state.set_session_lifetime(Duration::ZERO);
    let (_, h) = sign_in(&app, "/").await;
    let expired = cookie_of(&h);
    assert_eq!(read_with(&app, &expired).await, StatusCode::UNAUTHORIZED);
    // The earlier sign-in keeps its own 12 hours.
    assert_eq!(read_with(&app, &fresh).await, StatusCode::OK);
}

/// Regression: `next=/\t/host` was accepted (browsers drop the tab: that is
/// //host, another site) and a `next` holding a newline answered 500. Every
/// such `next` now goes home, and nothing reaches a header but the session.
#[tokio::test]
async fn a_sign_in_only_sends_the_browser_to_a_path_on_this_site() {
    let f = Fixture::new(&["refuge"], true);
    let app = app(f.state(None));
    for next in [
        "/%0d%0aSet-Cookie:x=1",
        "/%0aLocation:%20https://evil.example/",
        "/%09/evil.example",
        "/%5C%5Cevil.example",
        "/%5Cevil.example",
        "//evil.example",
        "https://evil.example/",
        "evil.example",
    ] {
        let (s, h) = sign_in(&app, next).await;
        assert_eq!(s, StatusCode::SEE_OTHER, "{next}");
        assert_eq!(h[header::LOCATION], "/", "{next}");
        assert_eq!(h.get_all(header::SET_COOKIE).iter().count(), 1, "{next}");
        let (s, _, body) = send(
            &app,
            Request::get(format!("/login?next={next}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{next}");
        assert!(body.contains("name=\"next\" value=\"/\""), "{next}: {body}");
    }
    let (_, h) = sign_in(&app, "/lines/refuge%3Fcursor%3Dx").await;
    assert_eq!(h[header::LOCATION], "/lines/refuge?cursor=x");
}

// ----- the call-in section ------------------------------------------------

/// The organisation's self-test number, jo-mobile's and outreach-mobile's.
const ORG_SELFTEST: &str = "+61 3 9999 0001";
const JO_SELFTEST: &str = "+61 3 9999 0002";
const OUTREACH_SELFTEST: &str = "+61 3 9999 0003";
const DESK_SELFTEST: &str = "+61 3 9999 0004";

/// A config with a line, `[selftest]` (when `selftest`) and four devices:
/// jo-mobile (withheld, reminded every 30 days), outreach-mobile
/// (umbrella, every 30 days), desk-phone (own number, every 7 days, never
/// tested) and spare-mobile (no self-test number, no reminders).
fn call_in_fixture(selftest: bool) -> Fixture {
    let mut t = format!(
        r#"
[organisation]
name = "Safe Haven"
region = "AU"
numbers = ["+61 3 7010 0142"]

[endpoint]
listen = ["udp:127.0.0.1:0"]
numbers = ["0399990000"]

[dashboard]
listen = "127.0.0.1:0"
token = "{TOKEN}"

[[line]]
name = "reception"
expect = "withheld"

[[device]]
name = "jo-mobile"
owner = "jo@safe-haven.example.org"
numbers = ["+61 491 570 156"]
selftest_number = "{JO_SELFTEST}"
remind_every = "30d"

[[device]]
name = "outreach-mobile"
owner = "outreach@safe-haven.example.org"
numbers = ["+61 491 570 157"]
expect = "umbrella"
umbrella = {{ name = "Salvation Army", numbers = ["+61 2 9000 0000"] }}
selftest_number = "{OUTREACH_SELFTEST}"
remind_every = "30d"

[[device]]
name = "desk-phone"
owner = "office@safe-haven.example.org"
numbers = ["+61 491 570 158"]
selftest_number = "{DESK_SELFTEST}"
remind_every = "7d"

[[device]]
name = "spare-mobile"
owner = "office@safe-haven.example.org"
numbers = ["+61 491 570 159"]
"#
    );
    if selftest {
        t.push_str(&format!("\n[selftest]\nnumbers = [\"{ORG_SELFTEST}\"]\n"));
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open_in(dir.path()).unwrap());
    Fixture {
        _dir: dir,
        store,
        cfg: Arc::new(Plan::from_toml(&t, Path::new("web.toml")).unwrap()),
    }
}

impl Fixture {
    /// Record a call-in: `line` is the device's name or "self-test".
    fn record_call_in(&self, line: &str, outcome: Outcome, at_ms: i64) -> i64 {
        let mut r = result_at(line, outcome, at_ms);
        r.trigger = Trigger::CallIn {
            device: (line != "self-test").then(|| line.to_string()),
        };
        if let Some(d) = self.cfg.callin().device(line) {
            r.expected = d.expected();
        }
        self.store
            .record_check(
                &r,
                &Record {
                    recorded_at_ms: at_ms,
                    ..Record::default()
                },
            )
            .unwrap()
    }
}

/// The part of the overview between the call-in heading and the next one.
fn call_in_part(overview: &str) -> &str {
    let start = overview
        .find("<h2 id=\"call-ins\">Phones tested by calling in</h2>")
        .unwrap_or_else(|| panic!("no call-in section: {overview}"));
    let rest = &overview[start..];
    let end = rest.find("<h2>PBX software</h2>").unwrap();
    &rest[..end]
}

/// The row of a table that names `what`.
fn row_of<'a>(html: &'a str, what: &str) -> &'a str {
    let at = html
        .find(what)
        .unwrap_or_else(|| panic!("{what} missing: {html}"));
    let start = html[..at].rfind("<tr>").unwrap();
    let end = at + html[at..].find("</tr>").unwrap();
    &html[start..end]
}

/// The overview's call-in section: the number to dial; each device with
/// its expectation, own number, last call-in (linked, in the daemon's
/// zone), state badge and when its next call-in is due ("overdue" past
/// it, counted as the daemon's reminders count); the latest ten call-ins
/// from other phones, escaped; labelled cells for the phone layout.
#[tokio::test]
async fn the_overview_shows_phones_tested_by_calling_in() {
    let f = call_in_fixture(true);
    let day = DAY_MS;
    let t = now();
    // jo-mobile leaked 40 days ago: its next call-in was due 10 days ago.
    let jo = f.record_call_in("jo-mobile", Outcome::Fail, t - 40 * day);
    // outreach-mobile passed 2 days ago: due in 28 days.
    f.record_call_in("outreach-mobile", Outcome::Fail, t - 5 * day);
    let outreach = f.record_call_in("outreach-mobile", Outcome::Pass, t - 2 * day);
    // desk-phone was never tested; the daemon started counting its
    // reminders 10 days ago (its own reminder step, on this history).
    cidguard::alert::step::device_reminders(
        &*f.store,
        &[],
        &f.cfg.callin().devices()[2..3],
        chrono::Utc::now() - chrono::Duration::days(10),
    )
    .unwrap();
    // Twelve call-ins from other phones: the newest ten are shown, one
    // with hostile text from the wire.
    let mut other = Vec::new();
    for i in 0..12 {
        other.push(f.record_call_in("self-test", Outcome::Pass, t - (20 - i) * 60_000));
    }
    let mut hostile = result_at("self-test", Outcome::Fail, t - 60_000);
    hostile.trigger = Trigger::CallIn { device: None };
    hostile.findings[0].value = "<script>alert(1)</script>".into();
    hostile.findings[0].detail = "<b>bold</b>".into();
    hostile.findings[0].header = "X-<i>".into();
    let hostile_id = f.store.record_check(&hostile, &Record::default()).unwrap();
    let app = app(f.state(None));
    let (s, _, page) = get(&app, "/").await;
    assert_eq!(s, StatusCode::OK);
    assert!(!page.contains("<script>") && !page.contains("<b>") && !page.contains("<i>"));
    let part = call_in_part(&page);
    assert!(
        part.contains(&format!("<strong>{ORG_SELFTEST}</strong>")),
        "{part}"
    );

    let jo_row = row_of(part, ">jo-mobile<");
    assert!(jo_row.contains("<span class=\"badge fail\">"), "{jo_row}");
    assert!(
        jo_row.contains("<td data-label=\"Expected\">withheld</td>"),
        "{jo_row}"
    );
    assert!(jo_row.contains(JO_SELFTEST), "{jo_row}");
    assert!(
        jo_row.contains(&format!("<a href=\"/checks/{jo}\"><time datetime=")),
        "{jo_row}"
    );
    // The daemon's zone (UTC in this config), to the second.
    assert!(jo_row.contains(" UTC</time></a>"), "{jo_row}");
    assert!(
        jo_row.contains("number shown in P-Asserted-Identity"),
        "{jo_row}"
    );
    assert!(
        jo_row.contains("<strong>overdue</strong> since"),
        "{jo_row}"
    );

    let outreach_row = row_of(part, ">outreach-mobile<");
    assert!(
        outreach_row.contains("<span class=\"badge pass\">"),
        "{outreach_row}"
    );
    assert!(
        outreach_row.contains("umbrella: Salvation Army"),
        "{outreach_row}"
    );
    assert!(outreach_row.contains(&format!("/checks/{outreach}\"")));
    assert!(outreach_row.contains("in 28 days") && !outreach_row.contains("overdue"));

    let desk_row = row_of(part, ">desk-phone<");
    assert!(desk_row.contains("Never tested"), "{desk_row}");
    assert!(desk_row.contains("<td data-label=\"Last call-in\">never</td>"));
    // Seven days after the daemon started counting, ten days ago.
    assert!(
        desk_row.contains("<strong>overdue</strong> since"),
        "{desk_row}"
    );

    let spare_row = row_of(part, ">spare-mobile<");
    assert!(spare_row.contains("Never tested") && spare_row.contains("no reminders"));
    assert!(spare_row.contains("<td data-label=\"Its self-test number\">–</td>"));

    // Other phones: the newest ten, newest first, the hostile one first.
    let other_part = &part[part.find("Latest call-ins from other phones").unwrap()..];
    let links = other_part.matches("<a href=\"/checks/").count();
    assert_eq!(links, 10, "{other_part}");
    assert!(other_part.contains(&format!("/checks/{hostile_id}\"")));
    assert!(other_part.contains(&format!("/checks/{}\"", other[11])));
    assert!(other_part.contains(&format!("/checks/{}\"", other[3])));
    assert!(!other_part.contains(&format!("/checks/{}\"", other[2])));
    assert!(
        other_part.find(&format!("/checks/{hostile_id}\""))
            < other_part.find(&format!("/checks/{}\"", other[11]))
    );
    assert!(other_part.contains("<td data-label=\"Outcome\"><span class=\"badge fail\">"));
    // Phone layout: the tables are the labelled-card kind.
    assert_eq!(part.matches("<table class=\"lines\">").count(), 2);
    for l in [
        "Device",
        "State",
        "Expected",
        "Last call-in",
        "Next call-in due",
        "When",
        "Summary",
    ] {
        assert!(part.contains(&format!("data-label=\"{l}\"")), "{l}");
    }
}

/// A call-in's check page renders: a device's reads "call-in from" the
/// device with its umbrella, another phone's says it was not a device,
/// and neither links to a line page that doesn't exist.
#[tokio::test]
async fn a_call_ins_check_page_names_the_device_and_links_to_the_section() {
    let f = call_in_fixture(true);
    let dev = f.record_call_in("outreach-mobile", Outcome::Pass, now() - 60_000);
    let other = f.record_call_in("self-test", Outcome::Fail, now() - 30_000);
    let app = app(f.state(None));
    let (s, _, page) = get(&app, &format!("/checks/{dev}")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(page.contains("call-in from outreach-mobile"), "{page}");
    assert!(
        page.contains("<a href=\"/#call-ins\">outreach-mobile</a>"),
        "{page}"
    );
    assert!(!page.contains("/lines/outreach-mobile"));
    assert!(
        page.contains("umbrella (umbrella: Salvation Army)"),
        "{page}"
    );
    let (s, _, page) = get(&app, &format!("/checks/{other}")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        page.contains("call-in from a phone that is not a configured device"),
        "{page}"
    );
    assert!(page.contains("<a href=\"/#call-ins\">self-test</a>"));
    assert!(page.contains("number shown in P-Asserted-Identity"));
}

/// `/api/v1/call-ins` and `cidguard_device_state` say what the section
/// shows; every field is in docs/openapi.yaml.
#[tokio::test]
async fn call_ins_api_and_metrics_give_each_devices_state() {
    let f = call_in_fixture(true);
    let t = now();
    let jo = f.record_call_in("jo-mobile", Outcome::Fail, t - 40 * DAY_MS);
    f.record_call_in("outreach-mobile", Outcome::Pass, t - 2 * DAY_MS);
    let other = f.record_call_in("self-test", Outcome::Inconclusive, t - 1000);
    let app = app(f.state(None));
    let (s, _, body) = get(&app, "/api/v1/call-ins").await;
    assert_eq!(s, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["selftest_numbers"], serde_json::json!([ORG_SELFTEST]));
    let devices = v["devices"].as_array().unwrap();
    let names: Vec<&str> = devices
        .iter()
        .map(|d| d["device"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["jo-mobile", "outreach-mobile", "desk-phone", "spare-mobile"]
    );
    let d = &devices[0];
    assert_eq!(d["state"], "fail");
    assert_eq!(d["expected"], "withheld");
    assert_eq!(d["selftest_number"], JO_SELFTEST);
    assert_eq!(d["last_call_in"], jo);
    assert_eq!(d["remind_every_secs"], 30 * 24 * 3600);
    assert_eq!(d["overdue"], true);
    assert!(d["summary"]
        .as_str()
        .unwrap()
        .contains("P-Asserted-Identity"));
    assert!(d["last_call_in_at"].is_string() && d["call_in_due_at"].is_string());
    assert_eq!(devices[1]["state"], "pass");
    assert_eq!(devices[1]["expected"], "umbrella: Salvation Army");
    assert_eq!(devices[1]["overdue"], false);
    // Never tested, and nothing known of when the daemon started
    // counting: due a full period from now.
    assert_eq!(devices[2]["state"], "unchecked");
    assert!(devices[2]["last_call_in"].is_null());
    assert_eq!(devices[2]["overdue"], false);
    assert!(devices[3]["call_in_due_at"].is_null() && devices[3]["remind_every_secs"].is_null());
    assert!(devices[3]["selftest_number"].is_null());
    let un = v["unattributed"].as_array().unwrap();
    assert_eq!(un.len(), 1);
    assert_eq!(un[0]["check"], other);
    assert_eq!(un[0]["state"], "inconclusive");
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml")).unwrap();
    let api = &doc[doc.find("  /api/v1/call-ins:").unwrap()..];
    let api = &api[..api.find("  /api/v1/maintenance:").unwrap()];
    for key in d
        .as_object()
        .unwrap()
        .keys()
        .chain(un[0].as_object().unwrap().keys())
    {
        assert!(api.contains(&format!(" {key}:")), "{key} is not documented");
    }

    let (_, _, m) = get(&app, "/metrics").await;
    assert!(m.contains("# TYPE cidguard_device_state gauge"), "{m}");
    assert!(m.contains("cidguard_device_state{device=\"jo-mobile\",state=\"fail\"} 1"));
    assert!(m.contains("cidguard_device_state{device=\"jo-mobile\",state=\"pass\"} 0"));
    assert!(m.contains("cidguard_device_state{device=\"outreach-mobile\",state=\"pass\"} 1"));
    assert!(m.contains("cidguard_device_state{device=\"desk-phone\",state=\"unchecked\"} 1"));
    // Call-ins are not lines.
    assert!(!m.contains("line=\"self-test\"") && !m.contains("line=\"jo-mobile\""));
}

/// Without `[selftest]` and devices there is no call-in section, and the
/// API and metrics have nothing to say; devices alone show the section
/// without a number to dial or a list of other phones.
#[tokio::test]
async fn no_call_in_section_without_a_self_test() {
    let f = Fixture::new(&["refuge"], false);
    f.record("refuge", Outcome::Pass, now() - 1000);
    let app = app(f.state(None));
    let (s, _, page) = get(&app, "/").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        !page.contains("calling in") && !page.contains("call-ins"),
        "{page}"
    );
    let (_, _, body) = get(&app, "/api/v1/call-ins").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"selftest_numbers": [], "devices": [], "unattributed": []})
    );
    let (_, _, m) = get(&app, "/metrics").await;
    assert!(!m.contains("cidguard_device_state"));

    let f = call_in_fixture(false);
    let app = cidguard::web::app(f.state(None));
    let (_, _, page) = get(&app, "/").await;
    let part = call_in_part(&page);
    assert!(part.contains("its own self-test number"), "{part}");
    assert!(!part.contains(ORG_SELFTEST) && !part.contains("other phones"));
    assert!(part.contains(">jo-mobile<"));
}

//! Dashboard render times over a big history: 100 lines × a year of hourly
//! checks (876,000 checks), through the real router.
//!
//! Run: `cargo bench --bench dashboard`
//!
//! The history is written through the store's own insert path (the same
//! tables and daily counts as the daemon writes), in batches of one
//! transaction each. Results are realistic: mostly passes, runs of failures
//! with findings, some inconclusive and a few interrupted checks; failing and
//! inconclusive checks and the last week's checks carry a small ladder of
//! evidence (retention has pruned the rest).
//!
//! Filling takes a while, so the filled file is kept under
//! `target/bench-dashboard/`, keyed by the schema version, the fill's own
//! version and the UTC date (the history ends at the hour it was filled, and
//! the dashboard's ratios are relative to now). Each run copies it to a
//! fresh temporary directory. `CIDGUARD_BENCH_REFILL=1` fills anew.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use criterion::{criterion_group, criterion_main, Criterion};
use tower::ServiceExt;

use cidguard::check::result::{CallSummary, CheckResult, EvidenceMessage, Trigger};
use cidguard::config::Expect;
use cidguard::plan::Plan;
use cidguard::store::{rfc3339_of_ms, schema, CheckQuery, Record, Store};
use cidguard::verdict::{Finding, Kind, Outcome, Presented, PresentedIdentity};
use cidguard::web::{app, AppState};

const LINES: usize = 100;
const HOURS: i64 = 365 * 24;
const HOUR_MS: i64 = 3_600_000;
/// Bump when the generated history changes, so a cached file is refilled.
const FILL_VERSION: u32 = 1;
/// Hours written per transaction.
const BATCH_HOURS: i64 = 24;

fn line_name(i: usize) -> String {
    format!("line-{i:03}")
}

fn config() -> Plan {
    let mut t = String::from(
        "[organisation]\nname = \"Eastside Women's Refuge\"\nregion = \"AU\"\n\
numbers = [\"+61 3 7010 0142\", \"+61 3 7010 0100-0199\"]\n\
names = [\"Eastside Women's Refuge\", \"Eastside Refuge\"]\n\
hosts = [\"pbx.eastside-refuge.org.au\"]\n\
[daemon]\ntime_zone = \"Australia/Melbourne\"\ndefault_schedule = \"0 * * * *\"\n\
[dashboard]\nlisten = \"127.0.0.1:0\"\ntoken = \"bench-token-0123456789abcdef\"\n",
    );
    for i in 0..LINES {
        t.push_str(&format!(
            "[[line]]\nname = \"{}\"\nexpect = \"withheld\"\n\
[line.account]\nregistrar = \"sip:127.0.0.1:5060\"\nusername = \"{}\"\npassword = \"bench\"\n",
            line_name(i),
            200 + i
        ));
    }
    Plan::from_toml(&t, Path::new("bench.toml")).expect("bench config")
}

/// The outcome of line `i`'s check at hour `h`, and whether it was
/// interrupted: a six-hour failure run on each line every few weeks, now
/// and then an inconclusive check (no call arrived), rarely a daemon stop.
fn outcome(i: usize, h: i64) -> (Outcome, bool) {
    let day = h / 24;
    let i = i as i64;
    if (day + i) % 23 == 0 && (2..8).contains(&(h % 24)) {
        (Outcome::Fail, false)
    } else if (h * 7 + i) % 211 == 0 {
        (Outcome::Inconclusive, false)
    } else if (h * 13 + i) % 4001 == 0 {
        (Outcome::Pass, true)
    } else {
        (Outcome::Pass, false)
    }
}

fn evidence(i: usize, at_ms: i64, fail: bool) -> Vec<EvidenceMessage> {
    let t = at_ms as u64;
    let num = format!("+613701001{:02}", i % 100);
    let from = if fail {
        format!("\"Eastside Refuge\" <sip:{num}@pbx.eastside-refuge.org.au>;tag=a{i}")
    } else {
        "\"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=a1".to_string()
    };
    let invite = |to_pbx: bool| {
        format!(
            "INVITE sip:+61399990000@{} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK{t}\r\n\
From: {from}\r\nTo: <sip:+61399990000@cidguard.example>\r\nCall-ID: {t}-{i}@127.0.0.1\r\nCSeq: 2 INVITE\r\n\
Privacy: {}\r\nContent-Length: 0\r\n\r\n",
            if to_pbx { "127.0.0.1:5060" } else { "127.0.0.1:5080" },
            if fail { "none" } else { "id" }
        )
    };
    let resp = |code: &str| {
        format!("SIP/2.0 {code}\r\nCall-ID: {t}-{i}@127.0.0.1\r\nCSeq: 2 INVITE\r\nContent-Length: 0\r\n\r\n")
    };
    let m = |side: &str, dir: &str, dt: u64, flow: &str, text: String| EvidenceMessage {
        side: side.into(),
        direction: dir.into(),
        at_ms: t + dt,
        flow: flow.into(),
        text,
    };
    let line_out = "udp 127.0.0.1:5062 -> 127.0.0.1:5060";
    let line_in = "udp 127.0.0.1:5060 -> 127.0.0.1:5062";
    let ep_in = "udp 127.0.0.1:5060 -> 127.0.0.1:5080";
    let ep_out = "udp 127.0.0.1:5080 -> 127.0.0.1:5060";
    vec![
        m("line", "sent", 0, line_out, invite(true)),
        m("line", "received", 2, line_in, resp("100 Trying")),
        m("endpoint", "received", 9, ep_in, invite(false)),
        m("endpoint", "sent", 10, ep_out, resp("180 Ringing")),
        m("line", "received", 12, line_in, resp("180 Ringing")),
        m("endpoint", "sent", 4010, ep_out, resp("486 Busy Here")),
        m("line", "received", 4013, line_in, resp("486 Busy Here")),
        m(
            "line",
            "sent",
            4014,
            line_out,
            format!("ACK sip:+61399990000@127.0.0.1:5060 SIP/2.0\r\nCall-ID: {t}-{i}@127.0.0.1\r\nCSeq: 2 ACK\r\n\r\n"),
        ),
    ]
}

fn result(i: usize, h: i64, start_ms: i64, last_week_from: i64) -> (CheckResult, Record) {
    let at_ms = start_ms + h * HOUR_MS + i as i64 * 1000;
    let (outcome, interrupted) = outcome(i, h);
    let findings = if outcome == Outcome::Fail {
        let mut f = vec![Finding {
            header: "P-Asserted-Identity".into(),
            value: format!(
                "\"Eastside Refuge\" <sip:+613701001{:02}@pbx.eastside-refuge.org.au>",
                i % 100
            ),
            kind: Kind::Number,
            shown: true,
            detail: "the organisation's number +61 3 7010 0100-0199".into(),
            matched: "+61 3 7010 0100-0199".into(),
            seen: String::new(),
        }];
        if h % 2 == 0 {
            f.push(Finding {
                header: "From".into(),
                value: "\"Eastside Refuge\" <sip:anonymous@anonymous.invalid>".into(),
                kind: Kind::Name,
                shown: true,
                detail: "the organisation's name".into(),
                matched: "Eastside Refuge".into(),
                seen: String::new(),
            });
        }
        f
    } else {
        Vec::new()
    };
    let with_evidence = outcome != Outcome::Pass || at_ms >= last_week_from;
    let trigger = if h % (24 * 30) == 100 {
        Trigger::Manual {
            label: Some("after PBX upgrade".into()),
            run: None,
        }
    } else {
        Trigger::Schedule
    };
    let r = CheckResult {
        line: line_name(i),
        outcome,
        expected: Expect::Withheld,
        findings,
        reason: (outcome == Outcome::Inconclusive)
            .then(|| "no call arrived at the endpoint".into()),
        notes: vec!["Privacy: id".into()],
        presented: Presented {
            identities: vec![PresentedIdentity {
                header: "From".into(),
                display: Some("Anonymous".into()),
                user: Some("anonymous".into()),
                host: "anonymous.invalid".into(),
            }],
            privacy: Some("id".into()),
            identity_headers: vec!["From".into()],
        },
        started_at: rfc3339_of_ms(at_ms),
        duration_ms: 4100 + (h as u64 % 7) * 13,
        call: CallSummary {
            final_status: (outcome != Outcome::Inconclusive).then_some(486),
            final_reason: (outcome != Outcome::Inconclusive).then(|| "Busy Here".into()),
            call_id: Some(format!("{at_ms}-{i}@127.0.0.1")),
            first_provisional_ms: Some(2),
            final_response_ms: Some(4013),
            exchange_us: Some(4_013_000),
            matching: Some("number".into()),
        },
        trigger,
        pbx_software: Some("FreePBX 17.0.19".into()),
        evidence_ref: None,
        evidence: if with_evidence {
            evidence(i, at_ms, outcome == Outcome::Fail)
        } else {
            Vec::new()
        },
    };
    let rec = Record {
        recorded_at_ms: at_ms + 4200,
        interrupted,
        slot_ms: Some(start_ms + h * HOUR_MS),
    };
    (r, rec)
}

fn fill(path: &Path, end_ms: i64) {
    let store = Store::open(path).expect("open the bench history");
    let start_ms = end_ms - HOURS * HOUR_MS;
    let last_week_from = end_ms - 7 * 24 * HOUR_MS;
    let t = Instant::now();
    let mut h = 0;
    while h < HOURS {
        let batch: Vec<(CheckResult, Record)> = (h..(h + BATCH_HOURS).min(HOURS))
            .flat_map(|h| (0..LINES).map(move |i| result(i, h, start_ms, last_week_from)))
            .collect();
        store
            .record_checks(batch.iter().map(|(r, rec)| (r, rec)))
            .expect("record a batch");
        h += BATCH_HOURS;
    }
    for (k, at) in [(0, 120), (1, 200), (2, 300)] {
        store
            .observe_pbx(
                "sip:127.0.0.1:5060",
                &format!("FreePBX 17.0.{}", 17 + k),
                end_ms - at * 24 * HOUR_MS,
            )
            .expect("record PBX software");
    }
    eprintln!(
        "filled {} checks in {:.1} s",
        LINES as i64 * HOURS,
        t.elapsed().as_secs_f64()
    );
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// A filled history in a fresh temporary directory.
fn history() -> (tempfile::TempDir, PathBuf) {
    let now = chrono::Utc::now();
    let cache_dir = target_dir().join("bench-dashboard");
    let cached = cache_dir.join(format!(
        "history-s{}-f{FILL_VERSION}-{}.sqlite3",
        schema::current_version(),
        now.format("%Y%m%d")
    ));
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(Store::FILE_NAME);
    if cached.exists() && std::env::var_os("CIDGUARD_BENCH_REFILL").is_none() {
        std::fs::copy(&cached, &path).expect("copy the cached history");
        eprintln!("using the cached history {}", cached.display());
        return (dir, path);
    }
    let end_ms = now.timestamp_millis() / HOUR_MS * HOUR_MS;
    fill(&path, end_ms);
    // Closed: the WAL is checkpointed into the file, which can be copied.
    std::fs::create_dir_all(&cache_dir).expect("cache dir");
    if let Ok(old) = std::fs::read_dir(&cache_dir) {
        for e in old.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let tmp = cached.with_extension("partial");
    std::fs::copy(&path, &tmp).expect("cache the history");
    std::fs::rename(&tmp, &cached).expect("cache the history");
    (dir, path)
}

async fn get(app: &axum::Router, uri: &str) -> usize {
    let r = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
        .await
        .expect("response");
    assert_eq!(r.status(), StatusCode::OK, "{uri}");
    axum::body::to_bytes(r.into_body(), 64 << 20)
        .await
        .expect("body")
        .len()
}

fn bench(c: &mut Criterion) {
    let (_dir, path) = history();
    let store = Arc::new(Store::open(&path).expect("open the history"));
    let cfg = Arc::new(config());
    let dash = cfg.config().dashboard.clone().expect("dashboard section");
    let (_, plans) = tokio::sync::watch::channel(cfg.clone());
    let state = AppState::new(store.clone(), plans, &dash, None).expect("app state");
    let router = app(state);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // The newest failing check of a line, with its evidence.
    let mut q = CheckQuery::line(&line_name(50));
    q.outcome = Some(Outcome::Fail);
    q.limit = 1;
    let failing = store.checks(&q).expect("a failing check").checks[0].id;
    let uris = [
        ("overview", "/".to_string()),
        ("line_page", format!("/lines/{}", line_name(50))),
        ("check_page", format!("/checks/{failing}")),
        ("api_lines", "/api/v1/lines".to_string()),
        ("metrics", "/metrics".to_string()),
    ];
    let mut g = c.benchmark_group("dashboard_100_lines_year_hourly");
    g.sample_size(20);
    g.measurement_time(std::time::Duration::from_secs(4));
    for (name, uri) in &uris {
        let bytes = rt.block_on(get(&router, uri));
        eprintln!("{uri}: {bytes} bytes");
        g.bench_function(*name, |b| b.iter(|| rt.block_on(get(&router, uri))));
    }
    // The store alone, for where the time goes.
    let names: Vec<String> = (0..LINES).map(line_name).collect();
    let now = chrono::Utc::now().timestamp_millis();
    g.bench_function("store_overview", |b| {
        b.iter(|| store.overview(Some(&names), now).expect("overview"))
    });
    g.bench_function("store_recent_marks", |b| {
        b.iter(|| {
            for n in &names {
                store.recent_marks(n, 30).expect("marks");
            }
        })
    });
    g.bench_function("store_totals", |b| {
        b.iter(|| store.totals().expect("totals"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

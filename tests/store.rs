//! The history database: round trips, queries, retention, the outbox,
//! migrations, and surviving `kill -9` mid-write.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cidguard::check::result::{CallSummary, CheckResult, EvidenceMessage, Trigger};
use cidguard::config::Expect;
use cidguard::store::{
    schema, AlertStateStore, AlertStep, CheckQuery, DeliveryStatus, NewNotice, OutboxStore,
    PbxObservation, Record, StateWrite, StepOutcome, Store, StoreError, DAY_MS,
};
use cidguard::verdict::{Finding, Kind, Outcome, Presented, PresentedIdentity};
use sha2::Digest;

/// 2025-01-01T00:00:00Z
pub const T0: i64 = 1_735_689_600_000;

pub fn result_at(line: &str, outcome: Outcome, at_ms: i64) -> CheckResult {
    let findings = if outcome == Outcome::Fail {
        vec![Finding {
            header: "P-Asserted-Identity".into(),
            value: "<sip:+61370100142@pbx.example.org>".into(),
            kind: Kind::Number,
            shown: true,
            detail: "the organisation's number".into(),
            matched: "+61 3 7010 0142".into(),
            seen: String::new(),
        }]
    } else {
        Vec::new()
    };
    CheckResult {
        line: line.into(),
        outcome,
        expected: Expect::Withheld,
        findings,
        reason: (outcome == Outcome::Inconclusive).then(|| "no call arrived".to_string()),
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
        started_at: cidguard::store::rfc3339_of_ms(at_ms),
        duration_ms: 4200,
        call: CallSummary {
            final_status: Some(486),
            final_reason: Some("Busy Here".into()),
            call_id: Some("abc@127.0.0.1".into()),
            first_provisional_ms: Some(30),
            final_response_ms: Some(4100),
            exchange_us: Some(4_100_000),
            matching: Some("timing".into()),
        },
        trigger: Trigger::Schedule,
        pbx_software: Some("FreePBX 17".into()),
        evidence_ref: None,
        evidence: Vec::new(),
    }
}

fn rec(at_ms: i64) -> Record {
    Record {
        recorded_at_ms: at_ms,
        ..Record::default()
    }
}

fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_in(&dir.path().join("state")).unwrap();
    (dir, store)
}

#[test]
fn a_check_round_trips_with_redacted_evidence() {
    let (_dir, store) = temp_store();
    let mut r = result_at("reception", Outcome::Fail, T0);
    r.trigger = Trigger::PbxChange {
        from: Some("FreePBX 16".into()),
        to: "FreePBX 17".into(),
    };
    r.evidence = vec![EvidenceMessage {
        side: "line".into(),
        direction: "sent".into(),
        at_ms: T0 as u64,
        flow: "udp 127.0.0.1:5060 -> 127.0.0.1:5080".into(),
        // A producer that forgot to redact: the store must not keep it.
        text: "INVITE sip:1@x SIP/2.0\r\nAuthorization: Digest username=\"201\", realm=\"pbx\", nonce=\"n\", response=\"deadbeefcafe\"\r\n\r\n".into(),
    }];
    let id = store.record_check(&r, &rec(T0 + 5000)).unwrap();
    let got = store.check(id).unwrap().unwrap();
    assert_eq!(got.id, id);
    assert!(!got.interrupted && !got.evidence_pruned);
    assert_eq!(got.result.evidence.len(), 1);
    let text = &got.result.evidence[0].text;
    assert!(
        !text.contains("deadbeefcafe") && text.contains("username=\"201\""),
        "{text}"
    );
    let mut want = r.clone();
    want.evidence_ref = Some(id.to_string());
    want.evidence = got.result.evidence.clone();
    assert_eq!(got.result, want);
    assert!(store.check(id + 1).unwrap().is_none());
    let latest = store.latest("reception").unwrap().unwrap();
    assert_eq!(latest.id, id);
    assert!(
        latest.result.evidence.is_empty(),
        "listings leave evidence out"
    );
}

#[test]
fn listing_filters_and_pages() {
    let (_dir, store) = temp_store();
    let outcomes = [Outcome::Pass, Outcome::Fail, Outcome::Inconclusive];
    let mut ids = Vec::new();
    for i in 0..30 {
        let at = T0 + i * 3_600_000;
        ids.push(
            store
                .record_check(
                    &result_at("reception", outcomes[i as usize % 3], at),
                    &rec(at),
                )
                .unwrap(),
        );
        store
            .record_check(&result_at("outreach", Outcome::Pass, at), &rec(at))
            .unwrap();
    }
    // Pages of 7, newest first, following the cursor, give every check once.
    let mut seen = Vec::new();
    let mut q = CheckQuery::line("reception");
    q.limit = 7;
    loop {
        let page = store.checks(&q).unwrap();
        assert!(page.checks.len() <= 7);
        seen.extend(page.checks.iter().map(|c| c.id));
        match page.next {
            Some(c) => q.after = Some(c),
            None => break,
        }
    }
    let mut want = ids.clone();
    want.reverse();
    assert_eq!(seen, want);
    // Time range and outcome.
    let mut q = CheckQuery::line("reception");
    q.since_ms = Some(T0 + 3 * 3_600_000);
    q.until_ms = Some(T0 + 12 * 3_600_000);
    q.outcome = Some(Outcome::Fail);
    let page = store.checks(&q).unwrap();
    let hours: Vec<i64> = page
        .checks
        .iter()
        .map(|c| (cidguard::store::ms_of_rfc3339(&c.result.started_at).unwrap() - T0) / 3_600_000)
        .collect();
    assert_eq!(hours, [10, 7, 4]);
    assert!(page.next.is_none());
    assert_eq!(store.lines().unwrap(), ["outreach", "reception"]);
}

#[test]
fn ratios_and_overview_skip_interrupted_checks() {
    let (_dir, store) = temp_store();
    // Mid-day, so each period starts part-way through a day.
    let now = T0 + 100 * DAY_MS + 5 * 3_600_000 + 37 * 60_000;
    // Two days ago: pass; eight days ago: fail; 100 days ago: fail (outside);
    // just inside and just outside the 7 days.
    for (age, o) in [
        (2 * DAY_MS, Outcome::Pass),
        (8 * DAY_MS, Outcome::Fail),
        (100 * DAY_MS, Outcome::Fail),
        (3_600_000, Outcome::Pass),
        (7 * DAY_MS, Outcome::Inconclusive),
        (7 * DAY_MS + 1, Outcome::Fail),
    ] {
        store
            .record_check(&result_at("a", o, now - age), &rec(now - age))
            .unwrap();
    }
    let interrupted = Record {
        interrupted: true,
        ..rec(now - 60_000)
    };
    store
        .record_check(
            &result_at("a", Outcome::Inconclusive, now - 60_000),
            &interrupted,
        )
        .unwrap();
    let ov = store.overview(None, now).unwrap();
    assert_eq!(ov.len(), 1);
    assert_eq!((ov[0].day.pass, ov[0].day.total()), (1, 1));
    assert_eq!(
        (ov[0].week.pass, ov[0].week.fail, ov[0].week.inconclusive),
        (2, 0, 1)
    );
    assert_eq!((ov[0].quarter.pass, ov[0].quarter.fail), (2, 2));
    assert_eq!(ov[0].quarter.pass_ratio(), Some(2.0 / 5.0));
    assert!(ov[0].latest.as_ref().unwrap().interrupted);
    // A configured line with no history yet is still listed.
    let ov = store
        .overview(Some(&["a".to_string(), "new".to_string()]), now)
        .unwrap();
    assert!(ov[1].latest.is_none() && ov[1].quarter.pass_ratio().is_none());
    assert_eq!(store.ratio("a", now - 7 * DAY_MS).unwrap().total(), 3);
    assert_eq!(store.ratio("a", now - 200 * DAY_MS).unwrap().total(), 6);
}

#[test]
fn evidence_expires_but_verdicts_stay() {
    let (_dir, store) = temp_store();
    let mut old = result_at("a", Outcome::Fail, T0);
    old.evidence = vec![
        EvidenceMessage {
            side: "endpoint".into(),
            direction: "received".into(),
            at_ms: T0 as u64,
            flow: "udp".into(),
            text: "INVITE".into(),
        };
        5
    ];
    let old_id = store.record_check(&old, &rec(T0)).unwrap();
    let new_id = store.record_check(&old, &rec(T0 + 100 * DAY_MS)).unwrap();
    let cutoff = T0 + 10 * DAY_MS;
    let mut deleted = 0;
    loop {
        let n = store.prune_evidence(cutoff, 2).unwrap();
        if n == 0 {
            break;
        }
        deleted += n;
    }
    assert_eq!(deleted, 5);
    let o = store.check(old_id).unwrap().unwrap();
    assert!(o.evidence_pruned && o.result.evidence.is_empty());
    assert_eq!(o.result.findings.len(), 1);
    assert_eq!(
        store.check(new_id).unwrap().unwrap().result.evidence.len(),
        5
    );
}

fn notice(key: &str, at_ms: i64, channels: &[&str]) -> NewNotice {
    NewNotice {
        key: key.into(),
        kind: "leak".into(),
        line: Some("reception".into()),
        check_id: Some(1),
        json: format!("{{\"key\":\"{key}\"}}"),
        created_at_ms: at_ms,
        channels: channels.iter().map(|c| c.to_string()).collect(),
    }
}

#[test]
fn outbox_dedupes_and_retries_each_channel_on_its_own() {
    let (_dir, store) = temp_store();
    assert_eq!(
        store
            .enqueue(&[notice("leak:a:1", T0, &["email", "chat"])])
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .enqueue(&[notice("leak:a:1", T0, &["email", "chat"])])
            .unwrap(),
        0,
        "dedupe"
    );
    assert_eq!(
        store
            .enqueue(&[notice("leak:a:2", T0 + 10, &["email"])])
            .unwrap(),
        1
    );
    assert_eq!(store.pending().unwrap(), 3);
    let due = store.due("email", T0, 10).unwrap();
    assert_eq!(due.len(), 1);
    let a = &due[0];
    assert_eq!(
        (
            a.kind.as_str(),
            a.key.as_str(),
            a.notice_key.as_str(),
            a.channel.as_str()
        ),
        ("leak", "leak:a:1:email", "leak:a:1", "email")
    );
    assert_eq!(a.notice_json, "{\"key\":\"leak:a:1\"}");
    store.mark_failed(a.id, "smtp: 451", T0 + 60_000).unwrap();
    assert_eq!(
        store.due("email", T0 + 59_999, 10).unwrap().len(),
        1,
        "only the second"
    );
    // The other channel's delivery of the same notice is not held back.
    assert_eq!(store.due("chat", T0, 10).unwrap().len(), 1);
    let retry = store.due("email", T0 + 60_000, 10).unwrap();
    assert_eq!(retry.len(), 2);
    assert_eq!(retry[1].attempts, 1);
    assert_eq!(retry[1].last_error.as_deref(), Some("smtp: 451"));
    store
        .mark_delivered(retry[0].id, T0 + 60_001, "250 ok")
        .unwrap();
    store
        .mark_delivered(retry[1].id, T0 + 60_001, "250 ok")
        .unwrap();
    assert_eq!(store.pending().unwrap(), 1);
    assert!(store.due("email", i64::MAX, 10).unwrap().is_empty());
    let chat = store.due("chat", i64::MAX, 10).unwrap();
    store.mark_dropped(chat[0].id, "unreadable").unwrap();
    assert_eq!(store.pending().unwrap(), 0);
    let all = store.deliveries(Some("leak:a:1"), 10).unwrap();
    assert_eq!(all.len(), 2);
    assert!(all
        .iter()
        .any(|d| d.status == DeliveryStatus::Delivered && d.answer.as_deref() == Some("250 ok")));
    assert!(all.iter().any(|d| d.status == DeliveryStatus::Dropped));
}

/// The alert step: state, mark and notices in one transaction, refused for
/// a check already taken in; the checks not yet taken in are found.
#[test]
fn alert_step_is_one_transaction_and_applied_once() {
    let (_dir, store) = temp_store();
    let ids: Vec<i64> = (0..3)
        .map(|i| {
            store
                .record_check(&result_at("a", Outcome::Fail, T0 + i), &rec(T0 + i))
                .unwrap()
        })
        .collect();
    store
        .record_check(&result_at("b", Outcome::Pass, T0 + 5), &rec(T0 + 5))
        .unwrap();
    // Never stepped: every check of the line, oldest first.
    assert!(store.line_state("a").unwrap().is_none());
    let pending: Vec<i64> = store
        .checks_to_take_in("a", None, 10)
        .unwrap()
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(pending, ids);
    let step = |through: i64, key: &str| AlertStep {
        states: vec![StateWrite {
            line: "a".into(),
            state_json: format!("{{\"through\":{through}}}"),
            through_check_id: Some(through),
        }],
        notices: vec![notice(key, T0, &["email"])],
        at_ms: T0,
    };
    assert_eq!(
        store.apply_alert_step(&step(ids[1], "leak:a:x")).unwrap(),
        StepOutcome::Applied { deliveries: 1 }
    );
    let row = store.line_state("a").unwrap().unwrap();
    assert_eq!(row.through_check_id, Some(ids[1]));
    assert_eq!(row.state_json, format!("{{\"through\":{}}}", ids[1]));
    // Only the newer check is left; the older step is refused whole.
    let left: Vec<i64> = store
        .checks_to_take_in("a", row.through_check_id, 10)
        .unwrap()
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(left, [ids[2]]);
    assert_eq!(
        store.apply_alert_step(&step(ids[0], "leak:a:y")).unwrap(),
        StepOutcome::AlreadyTakenIn
    );
    assert!(store.deliveries(Some("leak:a:y"), 10).unwrap().is_empty());
    // A step with no check (a summary) keeps the mark.
    let summary = AlertStep {
        states: vec![StateWrite {
            line: "a".into(),
            state_json: "{}".into(),
            through_check_id: None,
        }],
        notices: vec![],
        at_ms: T0,
    };
    store.apply_alert_step(&summary).unwrap();
    assert_eq!(
        store.line_state("a").unwrap().unwrap().through_check_id,
        Some(ids[1])
    );
    // At most the newest `limit` when many are waiting.
    let newest: Vec<i64> = store
        .checks_to_take_in("a", None, 2)
        .unwrap()
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(newest, [ids[1], ids[2]]);
}

/// Upgrading from the email-only outbox: its pending emails stay pending
/// (on the `email` channel, as rendered), its sent ones stay sent, held
/// ones are never sent; the lines' marks start at their newest check.
#[test]
fn migration_keeps_the_old_outbox_and_marks_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.sqlite3");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(schema::MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        for (key, status) in [
            ("leak:r:7", "pending"),
            ("leak:r:3", "sent"),
            ("leak:r:5", "held"),
        ] {
            conn.execute(
                "INSERT INTO outbox (dedupe_key, kind, line, check_id, recipients_json, subject, text, html, \
                 attempts, created_at_ms, next_attempt_at_ms, status) VALUES (?1, 'leak', 'r', 7, \
                 '[\"noc@example.org\"]', 'S', 'T', '<p>H</p>', 2, ?2, ?2, ?3)",
                rusqlite::params![key, T0, status],
            )
            .unwrap();
        }
        conn.execute(
            "INSERT INTO alert_state (line, state_json, updated_at_ms) VALUES ('r', '{\"status\":\"failing\"}', 1)",
            [],
        )
        .unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.pending().unwrap(), 1);
    let due = store.due("email", i64::MAX, 10).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(
        (due[0].key.as_str(), due[0].attempts),
        ("leak:r:7:email", 2)
    );
    let n: cidguard::alert::Notice = serde_json::from_str(&due[0].notice_json).unwrap();
    assert_eq!(n.key, "leak:r:7");
    assert_eq!(n.at.timestamp_millis(), T0);
    match n.facts {
        cidguard::alert::Facts::LegacyEmail {
            recipients,
            subject,
            text,
            html,
        } => assert_eq!(
            (recipients, subject.as_str(), text.as_str(), html.as_str()),
            (vec!["noc@example.org".to_string()], "S", "T", "<p>H</p>")
        ),
        other => panic!("not the old email: {other:?}"),
    }
    let all = store.deliveries(None, 10).unwrap();
    let status = |k: &str| all.iter().find(|d| d.notice_key == k).map(|d| d.status);
    assert_eq!(status("leak:r:3"), Some(DeliveryStatus::Delivered));
    assert_eq!(status("leak:r:5"), Some(DeliveryStatus::Dropped));
    // The old state is kept; its mark starts empty (no checks then).
    let row = store.line_state("r").unwrap().unwrap();
    assert_eq!(row.state_json, "{\"status\":\"failing\"}");
    assert_eq!(store.integrity_check().unwrap(), "ok");

    // A line with history before the upgrade starts marked at its newest
    // check: the upgrade does not replay old results.
    let path2 = dir.path().join("h2.sqlite3");
    {
        let conn = rusqlite::Connection::open(&path2).unwrap();
        conn.execute_batch(schema::MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
    }
    {
        // Record checks with version-1 statements only (the columns of
        // migration 1), as the old build did.
        let conn = rusqlite::Connection::open(&path2).unwrap();
        for i in 0..3 {
            conn.execute(
                "INSERT INTO checks (line, trigger_kind, trigger_json, started_at_ms, duration_ms, outcome, \
                 expected, presented_json, findings_json, notes_json, call_json, summary, recorded_at_ms) \
                 VALUES ('old', 'schedule', '{\"kind\":\"schedule\"}', ?1, 1, 'pass', 'withheld', '{}', '[]', '[]', '{}', 'ok', ?1)",
                [T0 + i],
            )
            .unwrap();
        }
    }
    let store = Store::open(&path2).unwrap();
    let row = store.line_state("old").unwrap().unwrap();
    assert_eq!(row.through_check_id, Some(3));
    assert!(store
        .checks_to_take_in("old", row.through_check_id, 10)
        .unwrap()
        .is_empty());
}

#[test]
fn pbx_changes_maintenance_alert_state_and_last_runs() {
    let (_dir, store) = temp_store();
    let r = "sip:pbx.example.org";
    assert_eq!(
        store.observe_pbx(r, "FreePBX 16", T0).unwrap(),
        PbxObservation::First
    );
    assert_eq!(
        store.observe_pbx(r, "FreePBX 16", T0 + 1).unwrap(),
        PbxObservation::Unchanged
    );
    assert!(matches!(
        store.observe_pbx(r, "FreePBX 17", T0 + 2).unwrap(),
        PbxObservation::Changed { from, .. } if from == "FreePBX 16"
    ));
    store.observe_pbx("sip:other", "Asterisk", T0 + 3).unwrap();
    let changes = store.pbx_changes(None, 10).unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(
        (
            changes[0].from.as_deref(),
            changes[0].to.as_str(),
            changes[0].at_ms
        ),
        (Some("FreePBX 16"), "FreePBX 17", T0 + 2)
    );
    assert_eq!(store.pbx_changes(Some("sip:other"), 10).unwrap().len(), 0);
    assert_eq!(
        store.pbx_software(r).unwrap().as_deref(),
        Some("FreePBX 17")
    );

    let id = store
        .add_maintenance(T0, T0 + 3_600_000, Some("PBX upgrade"))
        .unwrap();
    assert_eq!(store.maintenance_windows(T0).unwrap().len(), 1);
    assert!(store
        .maintenance_windows(T0 + 3_600_000)
        .unwrap()
        .is_empty());
    assert!(store.remove_maintenance(id).unwrap());
    assert!(!store.remove_maintenance(id).unwrap());

    assert!(store.alert_state("a").unwrap().is_none());
    let state = serde_json::json!({"state": "failing", "since": 3});
    store.set_alert_state("a", &state, T0).unwrap();
    assert_eq!(store.alert_state("a").unwrap(), Some(state));

    store.set_last_slot("a", T0 + 10).unwrap();
    store.set_last_slot("a", T0).unwrap();
    let r = result_at("b", Outcome::Pass, T0);
    store
        .record_check(
            &r,
            &Record {
                slot_ms: Some(T0 + 7),
                ..rec(T0)
            },
        )
        .unwrap();
    let slots = store.last_slots().unwrap();
    assert_eq!(slots.get("a"), Some(&(T0 + 10)), "never moves backwards");
    assert_eq!(slots.get("b"), Some(&(T0 + 7)));
}

#[test]
fn migrations_are_forward_only_and_pinned() {
    // Migration 1 is released: its text must never change. A schema change
    // is a new migration appended to the list.
    let hash = hex(&sha2::Sha256::digest(schema::MIGRATIONS[0].as_bytes()));
    assert_eq!(
        hash, "44451f63984c6b32744823692ebd8307c168b3ed579b53d0847e5fd6c6b8bd51",
        "migration 1 was edited; add a new migration instead"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.sqlite3");
    // A database made by the first release, with data in it...
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(schema::MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO last_runs (line, slot_ms) VALUES ('old', 42)",
            [],
        )
        .unwrap();
    }
    // ...opens, is brought to the current version, and keeps its data.
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), schema::current_version());
    assert_eq!(store.last_slots().unwrap().get("old"), Some(&42));
    drop(store);
    // Opening again changes nothing.
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), schema::current_version());
    assert_eq!(store.integrity_check().unwrap(), "ok");
    drop(store);
    // A database from a newer cidguard is refused, not written to.
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", schema::current_version() + 1)
            .unwrap();
    }
    assert!(matches!(
        Store::open(&path),
        Err(StoreError::TooNew { found, .. }) if found == schema::current_version() + 1
    ));
    // Readers never create a database.
    let missing = dir.path().join("missing.sqlite3");
    assert!(matches!(
        Store::open_existing(&missing),
        Err(StoreError::Missing { .. })
    ));
    assert!(!missing.exists());
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

const CRASH_DB: &str = "CIDGUARD_TEST_CRASH_DB";

/// The child half of `kill_9_mid_write_loses_nothing`: writes results in a
/// loop, printing each id once `record_check` has returned it. Does nothing
/// when run as a normal test.
#[test]
fn crash_child() {
    let Some(path) = std::env::var_os(CRASH_DB) else {
        return;
    };
    let store = Store::open(std::path::Path::new(&path)).unwrap();
    let mut r = result_at("crash", Outcome::Fail, T0);
    r.evidence = vec![
        EvidenceMessage {
            side: "line".into(),
            direction: "sent".into(),
            at_ms: T0 as u64,
            flow: "udp".into(),
            text: "INVITE sip:x SIP/2.0\r\n".repeat(40),
        };
        8
    ];
    // Bounded, in case the parent dies without killing us.
    for i in 0..200_000 {
        let id = store.record_check(&r, &rec(T0 + i)).unwrap();
        println!("id={id}");
    }
}

#[test]
fn kill_9_mid_write_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.sqlite3");
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "store::crash_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_DB, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(id) = line.strip_prefix("id=") {
                    if tx.send(id.parse::<i64>().unwrap()).is_err() {
                        break;
                    }
                }
            }
        });
        // Kill at a different point each round, while it is writing.
        let want = 50 + round * 37;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut ids = Vec::new();
        while ids.len() < want {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(id) => ids.push(id),
                Err(e) => {
                    let _ = child.kill();
                    panic!("child wrote {} results, then {e}", ids.len());
                }
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Ids printed after the count was reached were committed too.
        while let Ok(id) = rx.recv_timeout(Duration::from_millis(200)) {
            ids.push(id);
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.integrity_check().unwrap(), "ok");
        for id in &ids {
            let c = store
                .check(*id)
                .unwrap()
                .unwrap_or_else(|| panic!("round {round}: committed check {id} lost"));
            assert_eq!(c.result.evidence.len(), 8);
        }
    }
}

#[test]
fn a_batch_stores_what_one_by_one_stores() {
    let (_d1, one) = temp_store();
    let (_d2, batch) = temp_store();
    let mut checks = Vec::new();
    for i in 0..30i64 {
        let o = match i % 5 {
            0 => Outcome::Fail,
            1 => Outcome::Inconclusive,
            _ => Outcome::Pass,
        };
        let at = T0 + i * 3 * 3_600_000;
        let mut r = result_at(if i % 2 == 0 { "a" } else { "b" }, o, at);
        if i == 0 {
            r.evidence = vec![EvidenceMessage {
                side: "line".into(),
                direction: "sent".into(),
                at_ms: at as u64,
                flow: "udp".into(),
                text: "INVITE sip:x SIP/2.0\r\nAuthorization: Digest username=\"1\", response=\"secret\"\r\n\r\n".into(),
            }];
        }
        let rc = Record {
            recorded_at_ms: at,
            interrupted: i == 27,
            slot_ms: Some(at),
        };
        checks.push((r, rc));
    }
    for (r, rc) in &checks {
        one.record_check(r, rc).unwrap();
    }
    let ids = batch
        .record_checks(checks.iter().map(|(r, rc)| (r, rc)))
        .unwrap();
    assert_eq!(ids.len(), 30);
    let now = T0 + 4 * DAY_MS;
    let lines = ["a".to_string(), "b".to_string()];
    let (x, y) = (
        one.overview(Some(&lines), now).unwrap(),
        batch.overview(Some(&lines), now).unwrap(),
    );
    for (x, y) in x.iter().zip(&y) {
        assert_eq!((x.day, x.week, x.quarter), (y.day, y.week, y.quarter));
        assert_eq!(x.latest, y.latest);
    }
    assert_eq!(one.totals().unwrap(), batch.totals().unwrap());
    assert_eq!(one.last_slots().unwrap(), batch.last_slots().unwrap());
    // Interrupted checks are not counted; all-time totals match the ratio.
    let t = batch.totals().unwrap();
    assert_eq!(t["a"], batch.ratio("a", i64::MIN / 2).unwrap());
    assert_eq!(t["a"].total() + t["b"].total(), 29);
    // Evidence redacted on the batch path too.
    let c = batch.check(ids[0]).unwrap().unwrap();
    assert!(!c.result.evidence[0].text.contains("secret"));
    // Marks: newest first, from the index.
    let marks = batch.recent_marks("b", 3).unwrap();
    let page = batch.checks(&CheckQuery::line("b")).unwrap();
    assert_eq!(
        marks.iter().map(|m| m.id).collect::<Vec<_>>(),
        page.checks.iter().take(3).map(|c| c.id).collect::<Vec<_>>()
    );
    assert!(marks.iter().any(|m| m.interrupted));
}

#[test]
fn the_history_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, store) = temp_store();
    store
        .record_check(&result_at("refuge", Outcome::Fail, 1_000), &rec(1_000))
        .unwrap();
    let mut seen = 0;
    for entry in std::fs::read_dir(dir.path().join("state")).unwrap() {
        let path = entry.unwrap().path();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}", path.display());
        seen += 1;
    }
    // The database and its WAL at least.
    assert!(seen >= 2, "{seen} files");
}

//! The history schema as forward-only migrations.
//!
//! `PRAGMA user_version` holds how many migrations have run. Each migration
//! runs in its own transaction together with the version bump, so a crash
//! mid-migration leaves the previous version intact. A released migration is
//! never edited (a test pins its text); a change is a new migration appended
//! to [`MIGRATIONS`]. A database newer than this build is refused rather
//! than written to.

use std::path::Path;

use rusqlite::Connection;

use super::StoreError;

/// Migration N (1-based) is `MIGRATIONS[N - 1]`.
pub const MIGRATIONS: &[&str] = &[
    // 1: the first release.
    r#"
CREATE TABLE checks (
    id              INTEGER PRIMARY KEY,
    line            TEXT    NOT NULL,
    trigger_kind    TEXT    NOT NULL,
    trigger_label   TEXT,
    trigger_json    TEXT    NOT NULL,
    started_at_ms   INTEGER NOT NULL,
    duration_ms     INTEGER NOT NULL,
    outcome         TEXT    NOT NULL CHECK (outcome IN ('pass', 'fail', 'inconclusive')),
    reason          TEXT,
    expected        TEXT    NOT NULL,
    presented_json  TEXT    NOT NULL,
    findings_json   TEXT    NOT NULL,
    notes_json      TEXT    NOT NULL,
    call_json       TEXT    NOT NULL,
    pbx_software    TEXT,
    summary         TEXT    NOT NULL,
    recorded_at_ms  INTEGER NOT NULL,
    interrupted     INTEGER NOT NULL DEFAULT 0,
    evidence_count  INTEGER NOT NULL DEFAULT 0
);
-- A line's checks by time; also covers the outcome counts.
CREATE INDEX checks_line_time ON checks (line, started_at_ms, outcome, interrupted);
CREATE INDEX checks_time ON checks (started_at_ms);

-- Outcome counts per line and UTC day (by start time, interrupted checks
-- left out), kept with each insert: pass ratios over 90 days read 90 rows
-- instead of every check.
CREATE TABLE daily_counts (
    line            TEXT    NOT NULL,
    day             INTEGER NOT NULL,
    pass            INTEGER NOT NULL DEFAULT 0,
    fail            INTEGER NOT NULL DEFAULT 0,
    inconclusive    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (line, day)
) WITHOUT ROWID;

CREATE TABLE evidence (
    id              INTEGER PRIMARY KEY,
    check_id        INTEGER NOT NULL REFERENCES checks (id) ON DELETE CASCADE,
    seq             INTEGER NOT NULL,
    side            TEXT    NOT NULL,
    direction       TEXT    NOT NULL,
    at_ms           INTEGER NOT NULL,
    flow            TEXT    NOT NULL,
    text            TEXT    NOT NULL,
    recorded_at_ms  INTEGER NOT NULL
);
CREATE INDEX evidence_check ON evidence (check_id, seq);
CREATE INDEX evidence_recorded ON evidence (recorded_at_ms);

CREATE TABLE pbx_software (
    registrar       TEXT PRIMARY KEY,
    software        TEXT    NOT NULL,
    seen_at_ms      INTEGER NOT NULL
);
CREATE TABLE pbx_changes (
    id              INTEGER PRIMARY KEY,
    registrar       TEXT    NOT NULL,
    from_software   TEXT,
    to_software     TEXT    NOT NULL,
    at_ms           INTEGER NOT NULL
);
CREATE INDEX pbx_changes_time ON pbx_changes (registrar, at_ms);

-- status: pending (to send), sent, held (maintenance), summarised (a held
-- alert folded into a maintenance summary).
CREATE TABLE outbox (
    id                  INTEGER PRIMARY KEY,
    dedupe_key          TEXT    NOT NULL UNIQUE,
    kind                TEXT    NOT NULL,
    line                TEXT,
    check_id            INTEGER,
    recipients_json     TEXT    NOT NULL,
    subject             TEXT    NOT NULL,
    text                TEXT    NOT NULL,
    html                TEXT    NOT NULL,
    attempts            INTEGER NOT NULL DEFAULT 0,
    created_at_ms       INTEGER NOT NULL,
    next_attempt_at_ms  INTEGER NOT NULL,
    last_error          TEXT,
    status              TEXT    NOT NULL DEFAULT 'pending',
    sent_at_ms          INTEGER
);
CREATE INDEX outbox_due ON outbox (status, next_attempt_at_ms);

CREATE TABLE maintenance (
    id              INTEGER PRIMARY KEY,
    start_ms        INTEGER NOT NULL,
    end_ms          INTEGER NOT NULL,
    reason          TEXT
);

CREATE TABLE alert_state (
    line            TEXT PRIMARY KEY,
    state_json      TEXT    NOT NULL,
    updated_at_ms   INTEGER NOT NULL
);

CREATE TABLE last_runs (
    line            TEXT PRIMARY KEY,
    slot_ms         INTEGER NOT NULL
);
"#,
    // 2: alerts on several channels. A notice (what to tell, as the alert
    // side's JSON) is stored once; each channel it goes to has its own
    // delivery row with its own attempts, backoff and delivered mark. The
    // rendered emails of the old outbox become notices of the email channel
    // (their JSON keeps the rendered parts); its held and summarised rows
    // were never to be sent and are kept as dropped. The line's alert state
    // records the last check it has taken in (`through_check_id`), written
    // in the same transaction as the state and the notices, so a check
    // recorded just before a crash is taken in after the restart, once.
    r#"
CREATE TABLE notices (
    id              INTEGER PRIMARY KEY,
    key             TEXT    NOT NULL UNIQUE,
    kind            TEXT    NOT NULL,
    line            TEXT,
    check_id        INTEGER,
    notice_json     TEXT    NOT NULL,
    created_at_ms   INTEGER NOT NULL
);

-- status: pending (to deliver), delivered, dropped (never to be sent).
CREATE TABLE deliveries (
    id                  INTEGER PRIMARY KEY,
    notice_id           INTEGER NOT NULL REFERENCES notices (id) ON DELETE CASCADE,
    channel             TEXT    NOT NULL,
    key                 TEXT    NOT NULL UNIQUE,
    status              TEXT    NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'delivered', 'dropped')),
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms  INTEGER NOT NULL,
    last_error          TEXT,
    answer              TEXT,
    delivered_at_ms     INTEGER
);
CREATE INDEX deliveries_due ON deliveries (channel, status, next_attempt_at_ms);
CREATE INDEX deliveries_notice ON deliveries (notice_id);

INSERT INTO notices (id, key, kind, line, check_id, notice_json, created_at_ms)
SELECT id, dedupe_key, kind, line, check_id,
       json_object(
           'key', dedupe_key,
           'kind', kind,
           'line', line,
           'check_id', check_id,
           'at', strftime('%Y-%m-%dT%H:%M:%fZ', created_at_ms / 1000.0, 'unixepoch'),
           'facts', json_object(
               'type', 'legacy-email',
               'recipients', json(recipients_json),
               'subject', subject,
               'text', text,
               'html', html)),
       created_at_ms
FROM outbox;

INSERT INTO deliveries (notice_id, channel, key, status, attempts, next_attempt_at_ms,
                        last_error, delivered_at_ms)
SELECT id, 'email', dedupe_key || ':email',
       CASE status WHEN 'pending' THEN 'pending' WHEN 'sent' THEN 'delivered' ELSE 'dropped' END,
       attempts, next_attempt_at_ms, last_error, sent_at_ms
FROM outbox;

DROP TABLE outbox;

ALTER TABLE alert_state ADD COLUMN through_check_id INTEGER;
UPDATE alert_state
SET through_check_id = (SELECT max(id) FROM checks WHERE checks.line = alert_state.line);
INSERT INTO alert_state (line, state_json, updated_at_ms, through_check_id)
SELECT line, '{}', 0, max(id) FROM checks GROUP BY line
ON CONFLICT (line) DO NOTHING;
"#,
    // 3: the latest call-ins found without reading the whole history (the
    // dashboard shows them on every overview; call-ins are rare among
    // scheduled checks, so walking the time index for them read a year of
    // checks).
    r#"
CREATE INDEX checks_call_ins ON checks (started_at_ms) WHERE trigger_kind = 'call-in';
"#,
];

/// The schema version this build writes.
pub fn current_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Bring a database up to [`current_version`].
pub fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|source| StoreError::Migrate { version: 0, source })?;
    if found > current_version() {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found,
            supported: current_version(),
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        let version = i as i64 + 1;
        let err = |source| StoreError::Migrate { version, source };
        // IMMEDIATE: take the write lock first, so two processes opening a
        // new file at once can't both run the same migration.
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let now: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(err)?;
        if now >= version {
            continue;
        }
        tx.execute_batch(sql).map_err(err)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(err)?;
        tx.commit().map_err(err)?;
    }
    Ok(())
}

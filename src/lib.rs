//! cidguard: caller-ID privacy regression tester.
//!
//! Frontline services (domestic-violence lines, refuges) call people whose
//! abusers may watch their phones; those calls must never show the
//! service's number or name. cidguard places real SIP test calls from each
//! line and proves, from what actually arrives, that the identity is still
//! withheld (or shows only an umbrella agency).
//!
//! Data flows one way:
//!
//! ```text
//! config ─▶ scheduler ─▶ call (line side, sip) ─▶ endpoint (receiving side, sip)
//!                                                    │ raw bytes as received
//!                                                    ▼
//!                                 verdict (pure) ─▶ store ─▶ alerts / dashboard
//! ```
//!
//! Modules:
//! - [`config`]: the TOML file, validated, with secrets from env/file/credential.
//! - [`sip`]: the wire format (our own tolerant parser), and the user agents.
//! - [`verdict`]: the pure engine: `judge(policy, raw bytes) -> Verdict`.
//! - [`report`]: human and JSON output, exit codes.
//! - [`capture`]: reading SIP out of pcap/pcapng captures (streamed,
//!   bounded) and judging every call in one, without showing whom the
//!   organisation called.
//! - [`daemon`]: `cidguard run`: schedules, catch-up, PBX change checks,
//!   maintenance, systemd integration; the checker, PBX probe and alert
//!   side plug in through its traits.
//! - [`store`]: the history (SQLite): checks, evidence, PBX changes, the
//!   alert outbox, maintenance windows, alert state, last run times.
//! - [`history`]: `cidguard history` output (text, JSON, CSV).
//! - [`web`]: the dashboard, JSON API and metrics served by `cidguard run`.
//! - [`crash`]: named crash points for crash-consistency tests (debug
//!   builds only).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod alert;
pub mod capture;
pub mod check;
pub mod config;
pub mod crash;
pub mod daemon;
pub mod demo;
pub mod escape;
pub mod history;
pub mod report;
pub mod sip;
pub mod store;
pub mod verdict;
pub mod web;

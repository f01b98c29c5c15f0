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
//! config ─▶ plan ─▶ scheduler ─▶ call (line side, sip) ─▶ endpoint (receiving side, sip)
//!                                                            │ raw bytes as received
//!                                                            ▼
//!                                         verdict (pure) ─▶ store ─▶ alerts / dashboard
//! ```
//!
//! Modules read top-down: each imports only modules below it, and the
//! top-level modules have no import cycles.
//!
//! ```text
//!  main.rs                 the command line: parse, call one function, print, exit status
//!  service                 binds the listeners, runs daemon + web with one stop signal; the demo runner
//!  daemon   web   demo     orchestration and presentation; never import each other
//!  history  report  capture  maintenance          what people read; windows from the plan and the store
//!  check   alert   store   checks placed and judged; alert decisions and mail; the history
//!  plan                    the config validated and compiled once
//!  verdict  schedule       judging bytes against a policy; cron in a zone
//!  config                  the file as written
//!  sip                     wire format, transports, user agents; knows nothing of lines
//!  secret  escape  crash   leaves: secrets that never print; showing wire text to people; crash points
//! ```
//!
//! One line each on what a module owns:
//! - [`secret`]: secrets from the config, inline or from env/file/systemd credential; never printed.
//! - [`escape`]: showing values from the wire to people (control characters, bidi, clipping).
//! - [`sip`]: the SIP wire format (our own tolerant parser), transports, transactions, the
//!   line (UAC) and the endpoint (UAS), with its own types (transport, account, endpoint spec).
//! - [`config`]: the TOML file as written, with `deny_unknown_fields`.
//! - [`schedule`]: cron schedules evaluated in a time zone.
//! - [`verdict`]: the pure engine: `judge(policy, raw bytes) -> Verdict`.
//! - [`plan`]: the config validated and compiled once (time zone, policies, schedules,
//!   accounts, Request-URIs, endpoint, maintenance windows); the one place policies are built.
//! - [`check`]: one test call placed, matched (one type per matching mode) and judged; the
//!   result, evidence files, run-now requests.
//! - [`store`]: the history in SQLite behind one trait per consumer: checks, evidence, PBX
//!   changes, the alert outbox, maintenance windows, alert state, last run times.
//! - [`alert`]: alert decisions (a pure state machine) as notices, the alert step, email and
//!   chat rendering per channel at delivery, the channels (email, webhook, ntfy, Teams, Slack,
//!   Matrix) and their senders.
//! - [`maintenance`]: maintenance windows, from the plan and from the store.
//! - [`history`]: `cidguard history` output (text, JSON, CSV).
//! - [`report`]: human and JSON output, exit codes.
//! - [`capture`]: reading SIP out of pcap/pcapng captures (streamed, bounded) and judging
//!   every call in one, without showing whom the organisation called.
//! - [`daemon`]: `cidguard run`'s loop: schedules, catch-up, PBX change checks, maintenance,
//!   reloads (publishing the plan), systemd integration; checker, probe and alerts plug in.
//! - [`web`]: the dashboard, JSON API and metrics; reads the plan channel and the store, asks
//!   for checks on a channel.
//! - [`demo`]: `cidguard demo`'s own part: the demo PBX and the demo's lines and config.
//! - [`service`]: the service wired in one place (listeners bound first, daemon and dashboard
//!   with one stop signal), and the demo runner.
//! - [`media`]: what a self-test caller hears: G.711, WAV, RTP, SDP offer
//!   and answer, the spoken prompts.
//! - [`selftest`]: the call-in self-test: the policy its calls are judged
//!   by and what is said for each verdict.
//! - [`crash`]: named crash points for crash-consistency tests (debug builds only).
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
pub mod maintenance;
pub mod media;
pub mod plan;
pub mod report;
pub mod schedule;
pub mod secret;
pub mod selftest;
pub mod service;
pub mod sip;
pub mod store;
pub mod verdict;
pub mod web;

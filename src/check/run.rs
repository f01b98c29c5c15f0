//! Running checks: the endpoint listens, each line places its test call
//! through the PBX, the arrival is matched to the call, and the INVITE that
//! arrived is judged.
//!
//! ```text
//!  Checker::check_line ── open window(number, hold|token) ──▶ Arbiter
//!        │                                                     ▲
//!        ├─ Line::register / Line::call ──▶ PBX ──▶ Endpoint ──┘ on_invite / on_finished
//!        │
//!        └─ close window ─▶ matching::by_* ─▶ verdict::judge ─▶ CheckResult
//! ```
//!
//! Never a false pass: anything short of "our own call arrived, was
//! positively matched, and was judged clean" is inconclusive with a reason
//! (or a fail, when what arrived leaks).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, Semaphore};
use tracing::{info, info_span, warn, Instrument};

// Call-IDs, dialled numbers and summaries quoting the wire reach the log
// escaped: a CR could forge a log line, an ESC drive the terminal.
use crate::escape::control as esc;

use crate::check::matching::{self, Arrival, Match, Placed};
use crate::check::result::{redact, CallSummary, CheckResult, EvidenceMessage, Trigger};
use crate::check::token;
use crate::config::{Config, Matching, Transport};
use crate::sip::endpoint::{
    normalise_number, CallHandler, Disposition, Endpoint, EndpointHandle, EndpointOptions,
    FinishedCall, IncomingCall, Then,
};
use crate::sip::transport::{CapturedMessage, Direction};
use crate::sip::uac::{CallOptions, CallReport, Line, LineOptions};
use crate::verdict::{self, Policy};

/// Why checks can't run at all (as opposed to one line being inconclusive).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("the config has no [endpoint] table: checks need somewhere for test calls to arrive")]
    NoEndpoint,
    #[error("can't start the endpoint: {0}")]
    Endpoint(#[from] crate::sip::endpoint::EndpointError),
    #[error("organisation numbers: {0}")]
    Numbers(#[from] crate::verdict::numbers::NumberError),
    #[error("the [endpoint] settings changed: restart cidguard to apply them")]
    EndpointChanged,
}

fn compile(cfg: &Config) -> Result<HashMap<String, Policy>, CheckError> {
    Ok(Policy::for_config(cfg)?
        .into_iter()
        .map(|p| (p.line.clone(), p))
        .collect())
}

/// Tunables that tests and benchmarks change; the config gives the rest.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// How late the line's final response may come after the endpoint
    /// released the call, for the timing signature.
    pub timing_tolerance: Duration,
    /// Distinct holds differ by at least this much.
    pub hold_gap: Duration,
    /// Digits in a media token.
    pub token_len: usize,
    /// How long the endpoint keeps an answered call up (media matching).
    pub answered_for: Duration,
    /// Local address lines bind (port 0).
    pub line_bind: Option<SocketAddr>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            timing_tolerance: Duration::from_millis(1500),
            hold_gap: Duration::from_millis(250),
            token_len: 6,
            answered_for: Duration::from_secs(8),
            line_bind: None,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section below leaves the maps consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One call that arrived while a window was open.
struct Seen {
    call_id: String,
    received_at: SystemTime,
    invite: Vec<u8>,
    finished: Option<FinishedCall>,
    decoder: Option<Arc<Mutex<token::Decoder>>>,
}

/// What a check waits for at the endpoint.
struct Window {
    line: String,
    hold: Duration,
    mode: Matching,
    seen: Vec<Seen>,
    changed: Arc<Notify>,
}

/// The endpoint's call handler: gives each arrival the treatment its
/// window asks for, and rejects everything else as stray.
struct Arbiter {
    windows: Mutex<HashMap<String, Window>>,
    reject_code: u16,
    answered_for: Duration,
}

impl CallHandler for Arbiter {
    fn on_invite(&self, call: &IncomingCall) -> Disposition {
        let key = normalise_number(&call.number);
        let mut windows = lock(&self.windows);
        let Some(w) = windows.get_mut(&key) else {
            warn!(call_id = %esc(&call.call_id), source = %call.source, number = %esc(&call.number),
                "stray call: no check is waiting for a call to this number; rejected, not judged");
            return Disposition::Reject(self.reject_code);
        };
        let decoder =
            (w.mode == Matching::Media).then(|| Arc::new(Mutex::new(token::Decoder::new())));
        if let Some(d) = &decoder {
            spawn_token_reader(call, d.clone(), self.answered_for);
        }
        w.seen.push(Seen {
            call_id: call.call_id.clone(),
            received_at: call.received_at,
            invite: call.invite.clone(),
            finished: None,
            decoder,
        });
        w.changed.notify_waiters();
        if w.seen.len() > 1 {
            warn!(line = %w.line, call_id = %esc(&call.call_id), "a second call arrived during the check window; the check will be inconclusive");
            return Disposition::Reject(self.reject_code);
        }
        info!(line = %w.line, call_id = %esc(&call.call_id), hold_ms = w.hold.as_millis() as u64, "test call arrived");
        match w.mode {
            Matching::Media => Disposition::Hold {
                hold: w.hold,
                then: Then::Answer {
                    hangup_after: self.answered_for,
                },
            },
            Matching::Timing | Matching::Numbers => Disposition::Hold {
                hold: w.hold,
                then: Then::Reject(self.reject_code),
            },
        }
    }

    fn on_finished(&self, call: FinishedCall) {
        let mut windows = lock(&self.windows);
        for w in windows.values_mut() {
            if let Some(s) = w.seen.iter_mut().find(|s| s.call_id == call.call_id) {
                s.finished = Some(call);
                w.changed.notify_waiters();
                return;
            }
        }
    }

    // Stray calls (to numbers that are not the endpoint's) are counted and
    // logged by the endpoint, at most every few seconds: a scanner's
    // thousands must not each make a log line.
}

/// Read RTP from an answered call's socket into the token decoder until the
/// call's time is up.
fn spawn_token_reader(
    call: &IncomingCall,
    decoder: Arc<Mutex<token::Decoder>>,
    for_how_long: Duration,
) {
    let sock = call.rtp.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        let deadline = tokio::time::Instant::now() + for_how_long + Duration::from_secs(2);
        while let Ok(Ok((n, _))) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await
        {
            lock(&decoder).push(&buf[..n]);
        }
    });
}

/// The configuration in force and the policies compiled from it.
struct Current {
    cfg: Arc<Config>,
    policies: Arc<HashMap<String, Policy>>,
}

/// Runs checks for a config; owns the endpoint.
pub struct Checker {
    current: std::sync::RwLock<Current>,
    endpoint: EndpointHandle,
    arbiter: Arc<Arbiter>,
    /// Calls in flight at once: 1 for timing and media matching, the number
    /// of endpoint numbers for number matching.
    gate: Arc<Semaphore>,
    /// Endpoint numbers not in use by a check.
    free_numbers: Mutex<Vec<String>>,
    recent_holds: Mutex<Vec<Duration>>,
    opts: CheckOptions,
}

impl Checker {
    /// Start the endpoint and get ready to check.
    pub async fn start(cfg: Arc<Config>, opts: CheckOptions) -> Result<Checker, CheckError> {
        let ep = cfg.endpoint.clone().ok_or(CheckError::NoEndpoint)?;
        let policies = compile(&cfg)?;
        let arbiter = Arc::new(Arbiter {
            windows: Mutex::new(HashMap::new()),
            reject_code: ep.reject_code,
            answered_for: opts.answered_for,
        });
        let parallel = match ep.matching {
            Matching::Numbers => ep.numbers.len().max(1),
            Matching::Timing | Matching::Media => 1,
        };
        // Test calls all come from the PBX (or the carrier's edge): one
        // source. The flood limit must let a whole parallel sweep through
        // while still stopping a scanner.
        let mut eo = EndpointOptions::default();
        eo.invite_burst = eo.invite_burst.max(2.0 * parallel as f64 + 10.0);
        eo.invite_rate = eo.invite_rate.max(parallel as f64);
        eo.max_calls = eo.max_calls.max(2 * parallel + 16);
        eo.region = Some(cfg.organisation.region.clone());
        // The PBX's share of everything: each call is an INVITE, an ACK,
        // perhaps a CANCEL or BYE and their retransmissions over UDP.
        if let Some(l) = eo.stack.transport.limits.as_mut() {
            l.burst = l.burst.max(8.0 * parallel as f64 + 100.0);
            l.rate = l.rate.max(4.0 * parallel as f64);
            l.max_transactions = l.max_transactions.max(4 * parallel + 64);
            l.max_queued = l.max_queued.max(4 * parallel + 64);
        }
        let endpoint = Endpoint::start_with(&ep, arbiter.clone(), eo).await?;
        Ok(Checker {
            current: std::sync::RwLock::new(Current {
                cfg: cfg.clone(),
                policies: Arc::new(policies),
            }),
            endpoint,
            arbiter,
            gate: Arc::new(Semaphore::new(parallel)),
            free_numbers: Mutex::new(ep.numbers.iter().rev().cloned().collect()),
            recent_holds: Mutex::new(Vec::new()),
            opts,
        })
    }

    fn current(&self) -> (Arc<Config>, Arc<HashMap<String, Policy>>) {
        let c = self.current.read().unwrap_or_else(|p| p.into_inner());
        (c.cfg.clone(), c.policies.clone())
    }

    /// Take a new configuration (a reload). The endpoint keeps running, so
    /// its settings must not change: that needs a restart, and the new
    /// configuration is refused (the old one stays in force).
    pub fn reconfigure(&self, cfg: Arc<Config>) -> Result<(), CheckError> {
        let (old, _) = self.current();
        if format!("{:?}", old.endpoint) != format!("{:?}", cfg.endpoint) {
            return Err(CheckError::EndpointChanged);
        }
        let policies = Arc::new(compile(&cfg)?);
        let mut c = self.current.write().unwrap_or_else(|p| p.into_inner());
        *c = Current { cfg, policies };
        Ok(())
    }

    /// Where the endpoint listens (tests point the PBX here).
    pub fn endpoint_addr(&self, t: Transport) -> Option<SocketAddr> {
        self.endpoint.addr(t)
    }

    /// The endpoint's counters (calls, stray calls, rate-limited INVITEs...).
    pub fn endpoint_stats(&self) -> crate::sip::endpoint::EndpointStats {
        self.endpoint.stats()
    }

    /// Check these lines (all when empty), concurrently where the matching
    /// mode allows. Results come back in the order asked.
    pub async fn check_lines(&self, lines: &[String], trigger: Trigger) -> Vec<CheckResult> {
        let names: Vec<String> = if lines.is_empty() {
            self.current()
                .0
                .lines
                .iter()
                .map(|l| l.name.clone())
                .collect()
        } else {
            lines.to_vec()
        };
        let futs = names.iter().map(|n| self.check_line(n, trigger.clone()));
        futures_util::future::join_all(futs).await
    }

    /// Check one line. Never fails: problems are inconclusive results.
    pub async fn check_line(&self, name: &str, trigger: Trigger) -> CheckResult {
        let span = info_span!("check", line = %name);
        self.check_line_inner(name, trigger).instrument(span).await
    }

    async fn check_line_inner(&self, name: &str, trigger: Trigger) -> CheckResult {
        let started = SystemTime::now();
        let (cfg, policies) = self.current();
        let Some(policy) = policies.get(name) else {
            return CheckResult::inconclusive(
                name,
                crate::config::Expect::Withheld,
                started,
                format!("no line named {name:?} in the config"),
                trigger,
            );
        };
        let inconclusive = |reason: String, trigger: Trigger| {
            CheckResult::inconclusive(name, policy.expect, started, reason, trigger)
        };
        let Some(line_cfg) = cfg.line(name) else {
            return inconclusive(format!("no line named {name:?} in the config"), trigger);
        };
        let Some(account) = &line_cfg.account else {
            return inconclusive(
                "the line has no [line.account]: it can be inspected, not called".into(),
                trigger,
            );
        };
        let Some(ep) = &cfg.endpoint else {
            return inconclusive("no [endpoint] configured".into(), trigger);
        };

        // One call per endpoint number at a time (and one at all for the
        // timing and media signatures).
        let Ok(_permit) = self.gate.acquire().await else {
            return inconclusive("the checker is shutting down".into(), trigger);
        };
        let number = {
            let mut free = lock(&self.free_numbers);
            match free.pop() {
                Some(n) => n,
                None => return inconclusive("no free endpoint number".into(), trigger),
            }
        };
        let result =
            match crate::sip::dial::for_line(account, ep, &number, &cfg.organisation.region) {
                Ok(target) => {
                    self.call_and_judge(
                        name, policy, account, ep, &number, &target, started, trigger,
                    )
                    .await
                }
                Err(e) => inconclusive(format!("can't dial the endpoint: {e}"), trigger),
            };
        lock(&self.free_numbers).push(number);
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn call_and_judge(
        &self,
        name: &str,
        policy: &Policy,
        account: &crate::config::Account,
        ep: &crate::config::Endpoint,
        number: &str,
        target: &str,
        started: SystemTime,
        trigger: Trigger,
    ) -> CheckResult {
        let inconclusive = |reason: String| {
            CheckResult::inconclusive(name, policy.expect, started, reason, trigger.clone())
        };
        let hold = match ep.matching {
            Matching::Timing => {
                let mut recent = lock(&self.recent_holds);
                let h = matching::choose_hold(
                    rand::random::<f64>(),
                    ep.hold_min,
                    ep.hold_max,
                    &recent,
                    self.opts.hold_gap,
                );
                recent.push(h);
                if recent.len() > 8 {
                    recent.remove(0);
                }
                h
            }
            Matching::Numbers | Matching::Media => ep.hold_min,
        };
        let token =
            (ep.matching == Matching::Media).then(|| token::random_token(self.opts.token_len));
        let key = normalise_number(number);
        let changed = Arc::new(Notify::new());
        lock(&self.arbiter.windows).insert(
            key.clone(),
            Window {
                line: name.to_string(),
                hold,
                mode: ep.matching,
                seen: Vec::new(),
                changed: changed.clone(),
            },
        );
        let outcome = self.place_call(account, target, hold, token.clone()).await;
        // Give the endpoint's side time to report the call it saw.
        let settle = Duration::from_secs(5);
        let deadline = tokio::time::Instant::now() + settle;
        loop {
            let notified = changed.notified();
            let done = {
                let windows = lock(&self.arbiter.windows);
                windows.get(&key).is_some_and(|w| {
                    !w.seen.is_empty() && w.seen.iter().all(|s| s.finished.is_some())
                })
            };
            if done
                || outcome.is_err()
                    && lock(&self.arbiter.windows)
                        .get(&key)
                        .is_some_and(|w| w.seen.is_empty())
            {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        let window = lock(&self.arbiter.windows).remove(&key);
        let seen = window.map(|w| w.seen).unwrap_or_default();

        let (pbx_software, report, line_evidence) = match outcome {
            Ok(x) => x,
            Err(reason) => {
                let mut r = inconclusive(reason);
                r.evidence = endpoint_evidence(&seen);
                return r;
            }
        };
        let mut call = CallSummary {
            final_status: (report.status != 0).then_some(report.status),
            final_reason: Some(report.reason.clone()),
            call_id: Some(report.call_id.clone()),
            first_provisional_ms: report.first_provisional.map(|d| d.as_millis() as u64),
            final_response_ms: Some(report.final_response.as_millis() as u64),
            exchange_us: Some(report.final_response_since_first.as_micros() as u64),
            matching: None,
        };
        let placed = Placed {
            invite_sent_at: first_invite_sent(&line_evidence).unwrap_or(started),
            final_received_at: final_received(&line_evidence),
            final_status: call.final_status,
        };
        let arrivals: Vec<Arrival> = seen
            .iter()
            .map(|s| Arrival {
                call_id: s.call_id.clone(),
                received_at: s.received_at,
                final_sent_at: s
                    .finished
                    .as_ref()
                    .and_then(|f| f.final_after.map(|d| f.received_at + d)),
                final_status: s.finished.as_ref().and_then(|f| f.final_status),
                token: s.decoder.as_ref().map(|d| lock(d).digits()),
            })
            .collect();
        let m = match (ep.matching, &token) {
            (Matching::Timing, _) => {
                matching::by_timing(&placed, &arrivals, hold, self.opts.timing_tolerance)
            }
            (Matching::Numbers, _) => matching::by_number(&placed, &arrivals, number),
            (Matching::Media, Some(t)) => matching::by_token(&placed, &arrivals, t),
            (Matching::Media, None) => Match::Mismatch {
                detail: "no token was chosen".into(),
            },
        };
        let mut evidence = line_evidence_messages(&line_evidence);
        evidence.extend(endpoint_evidence(&seen));
        let mut result = match m {
            Match::Matched {
                index,
                evidence: how,
            } => {
                call.matching = Some(how);
                let v = verdict::judge(policy, &seen[index].invite);
                CheckResult::from_verdict(v, started, call, trigger.clone())
            }
            other => {
                let mut reason = other.reason().unwrap_or_default();
                if let Some(s) = call.final_status {
                    reason.push_str(&format!(
                        "; the line's call ended with {s} {}",
                        report.reason
                    ));
                    if s == 433 {
                        reason.push_str(" (Anonymity Disallowed: something on the path refuses anonymous calls)");
                    }
                }
                call.matching = Some(reason.clone());
                let mut r = inconclusive(reason);
                r.call = call;
                r
            }
        };
        result.pbx_software = pbx_software;
        result.evidence = evidence;
        info!(outcome = %result.outcome, summary = %esc(&result.summary()), "check finished");
        result
    }

    /// Register (if the line must) and place the call to `target` (the
    /// Request-URI from [`crate::sip::dial::for_line`]). Err is a reason for
    /// an inconclusive result.
    async fn place_call(
        &self,
        account: &crate::config::Account,
        target: &str,
        hold: Duration,
        token: Option<String>,
    ) -> Result<(Option<String>, CallReport, Vec<CapturedMessage>), String> {
        let mut lo = LineOptions::default();
        if let Some(b) = self.opts.line_bind {
            lo.bind = b;
        }
        let line = Line::new(account, lo)
            .await
            .map_err(|e| format!("can't set up the line: {e}"))?;
        let mut pbx_software = None;
        let mut registered = false;
        if account.register {
            match line.register().await {
                Ok(r) if r.registered() => {
                    pbx_software = r.server.clone();
                    registered = true;
                }
                Ok(r) => {
                    let why = match r.status {
                        401 | 403 | 407 => " (the PBX refused the line's credentials)",
                        _ => "",
                    };
                    line.close();
                    return Err(format!(
                        "registration failed: {} {}{why}",
                        r.status, r.reason
                    ));
                }
                Err(e) => {
                    line.close();
                    return Err(format!("registration failed: {e}"));
                }
            }
        }
        let opts = CallOptions {
            ring_timeout: Some(account.ring_timeout.max(hold + Duration::from_secs(10))),
            ..Default::default()
        };
        let report = match token {
            Some(tok) => {
                line.call_with(target, opts, move |answered| async move {
                    send_token(&answered, &tok).await;
                })
                .await
            }
            None => line.call(target, opts).await,
        };
        if registered {
            let _ = line.unregister().await;
        }
        line.close();
        let report = report.map_err(|e| format!("the test call failed: {e}"))?;
        if pbx_software.is_none() {
            pbx_software = pbx_software_in(&report.messages);
        }
        let msgs = report.messages.clone();
        Ok((pbx_software, report, msgs))
    }

    /// Stop the endpoint.
    pub async fn shutdown(self) {
        self.endpoint.shutdown().await;
    }
}

/// Send the token as RFC 4733 events to where the far end wants media,
/// paced at 20 ms a packet.
async fn send_token(answered: &crate::sip::uac::Answered, tok: &str) {
    let Some(to) = answered.remote_rtp else {
        warn!("the answer had no usable media address; no token sent");
        return;
    };
    let ssrc: u32 = rand::random();
    let seq: u16 = rand::random();
    let ts: u32 = rand::random();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for pkt in token::encode(tok, ssrc, seq, ts) {
        tick.tick().await;
        if let Err(e) = answered.rtp.send_to(&pkt, to).await {
            warn!(error = %e, "sending the media token failed");
            return;
        }
    }
    // Let the last end packets land before hanging up.
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// The PBX's own product string from a call: only responses the PBX
/// itself generates (100 Trying, auth challenges) count; the final response
/// comes from the far end (our endpoint) and would name it instead.
fn pbx_software_in(msgs: &[CapturedMessage]) -> Option<String> {
    msgs.iter()
        .filter(|m| m.direction == Direction::Received)
        .filter_map(|m| crate::sip::parse(&m.bytes).ok())
        .filter(|p| matches!(p.status(), Some(100 | 401 | 407)))
        .find_map(|p| {
            p.header("Server")
                .or_else(|| p.header("User-Agent"))
                .map(str::to_string)
        })
}

fn first_invite_sent(msgs: &[CapturedMessage]) -> Option<SystemTime> {
    msgs.iter()
        .filter(|m| m.direction == Direction::Sent && m.bytes.starts_with(b"INVITE "))
        .map(|m| m.wall)
        .next_back()
}

/// When the final response to the INVITE reached the line.
fn final_received(msgs: &[CapturedMessage]) -> Option<SystemTime> {
    msgs.iter()
        .filter(|m| m.direction == Direction::Received)
        .filter_map(|m| crate::sip::parse(&m.bytes).ok().map(|p| (m.wall, p)))
        .filter(|(_, p)| {
            p.status().is_some_and(|s| s >= 200 && s != 401 && s != 407)
                && p.cseq().is_some_and(|(_, method)| method == "INVITE")
        })
        .map(|(w, _)| w)
        .next()
}

fn evidence_of(side: &str, m: &CapturedMessage) -> EvidenceMessage {
    EvidenceMessage {
        side: side.to_string(),
        direction: match m.direction {
            Direction::Sent => "sent".into(),
            Direction::Received => "received".into(),
        },
        at_ms: m
            .wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        flow: format!("{} {} -> {}", m.flow.transport, m.flow.local, m.flow.remote),
        text: redact(&m.bytes),
    }
}

fn line_evidence_messages(msgs: &[CapturedMessage]) -> Vec<EvidenceMessage> {
    msgs.iter().map(|m| evidence_of("line", m)).collect()
}

fn endpoint_evidence(seen: &[Seen]) -> Vec<EvidenceMessage> {
    let mut out = Vec::new();
    for s in seen {
        match &s.finished {
            Some(f) => out.extend(f.messages.iter().map(|m| evidence_of("endpoint", m))),
            None => out.push(EvidenceMessage {
                side: "endpoint".into(),
                direction: "received".into(),
                at_ms: s
                    .received_at
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0),
                flow: String::new(),
                text: redact(&s.invite),
            }),
        }
    }
    out
}

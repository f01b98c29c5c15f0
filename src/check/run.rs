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
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tracing::{info, info_span, warn, Instrument};

// Call-IDs, dialled numbers and summaries quoting the wire reach the log
// escaped: a CR could forge a log line, an ESC drive the terminal.
use crate::escape::control as esc;

use crate::check::matching::{self, Arrival, Match, Placed, Sent};
use crate::check::result::{redact, CallSummary, CheckResult, EvidenceMessage, Trigger};
use crate::check::token;
use crate::config::Expect;
use crate::media::Audio;
use crate::plan::{EndpointPlan, LinePlan, Owner, Plan};
use crate::selftest;
use crate::sip::endpoint::{
    normalise_number, CallHandler, Disposition, Endpoint, EndpointHandle, EndpointOptions,
    FinishedCall, IncomingCall, Listeners, Then,
};
use crate::sip::transport::{CapturedMessage, Direction};
use crate::sip::uac::{CallOptions, CallReport, Line, LineOptions};
use crate::sip::{Account, Transport};
use crate::verdict;

/// Why checks can't run at all (as opposed to one line being inconclusive).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("the config has no [endpoint] table: checks need somewhere for test calls to arrive")]
    NoEndpoint,
    #[error("can't start the endpoint: {0}")]
    Endpoint(#[from] crate::sip::endpoint::EndpointError),
    #[error("the [endpoint] settings changed (or how its numbers are read, organisation.region): restart cidguard to apply them")]
    EndpointChanged,
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
    /// Call-ins (calls to a self-test number) taken per minute from one
    /// source address...
    pub call_ins_per_minute: f64,
    /// ...and how many at once above that rate. Over it: 486 at once,
    /// neither judged nor recorded (each call-in plays audio and writes the
    /// history, so a flood must not drive either).
    pub call_in_burst: f64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            timing_tolerance: Duration::from_millis(1500),
            hold_gap: Duration::from_millis(250),
            token_len: 6,
            answered_for: Duration::from_secs(8),
            line_bind: None,
            call_ins_per_minute: 6.0,
            call_in_burst: 3.0,
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
    /// The line whose call it is.
    line: String,
    /// How long to hold the call.
    hold: Duration,
    /// Answer it (and read a token from its media) rather than reject it.
    answer: bool,
    /// The calls that arrived.
    seen: Vec<Seen>,
    /// Woken when a call arrives or finishes.
    changed: Arc<Notify>,
}

/// Call-ins allowed per source address: a token bucket each.
struct CallInLimit {
    /// Tokens added per second.
    rate: f64,
    /// The most a bucket holds.
    burst: f64,
    /// Each source's tokens and when they were last counted.
    buckets: HashMap<IpAddr, (f64, Instant)>,
}

/// Sources tracked at most: full buckets are forgotten beyond this.
const MAX_CALL_IN_SOURCES: usize = 4096;

impl CallInLimit {
    /// Take a token for `ip`; false when it has none left.
    fn take(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.buckets.len() >= MAX_CALL_IN_SOURCES {
            let (rate, burst) = (self.rate, self.burst);
            self.buckets.retain(|_, (t, at)| {
                *t + now.saturating_duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = self.buckets.entry(ip).or_insert((self.burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * self.rate)
            .min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Call-ins refused over the rate limit: counted, and logged at most this
/// often.
const REFUSED_LOG_EVERY: Duration = Duration::from_secs(10);

/// The call-in side of the handler: calls to a self-test number are judged
/// at once, told to the caller, and handed on once they end.
struct CallIns {
    /// Where judged call-ins go (the daemon records them).
    tx: mpsc::Sender<CheckResult>,
    /// Per-source rate limit.
    limit: Mutex<CallInLimit>,
    /// Judged call-ins whose call is still going, by Call-ID: their
    /// evidence is added when it ends.
    pending: Mutex<HashMap<String, CheckResult>>,
    /// Call-ins refused over the rate limit, all told.
    refused: AtomicU64,
    /// Refused since the last log line, and when that was.
    refused_log: Mutex<(u64, Option<Instant>)>,
}

/// The endpoint's call handler: gives each arrival the treatment its
/// window asks for, judges calls to a self-test number at once, and
/// rejects everything else as stray.
struct Arbiter {
    windows: Mutex<HashMap<String, Window>>,
    reject_code: u16,
    answered_for: Duration,
    /// The plan in force: whose each self-test number is, the policies
    /// and prompts of call-ins.
    plans: watch::Receiver<Arc<Plan>>,
    /// Call-ins.
    call_ins: CallIns,
}

impl Arbiter {
    /// A call to a self-test number: judged now, never waiting on a check
    /// window, and told to the caller as early media before it is
    /// rejected (never answered).
    fn call_in(&self, plan: &Plan, owner: &Owner, call: &IncomingCall) -> Disposition {
        let callin = plan.callin();
        if !lock(&self.call_ins.limit).take(call.source.ip(), Instant::now()) {
            self.call_ins.refused.fetch_add(1, Ordering::Relaxed);
            let mut log = lock(&self.call_ins.refused_log);
            log.0 += 1;
            if log.1.is_none_or(|at| at.elapsed() >= REFUSED_LOG_EVERY) {
                warn!(refused = log.0, source = %call.source.ip(),
                    "call-ins over the rate limit refused 486, neither judged nor recorded");
                *log = (0, Some(Instant::now()));
            }
            return Disposition::Reject(486);
        }
        let Some(judged) = selftest::judge_call_in(callin, owner, &call.invite) else {
            // A number without its section: validation refuses that.
            return Disposition::Reject(callin.reject_code());
        };
        let audio = Audio::new(callin.prompts().render(&judged.clips));
        let call_summary = CallSummary {
            call_id: Some(call.call_id.clone()),
            matching: Some(
                "a call to a self-test number: the call itself is what was judged".into(),
            ),
            ..CallSummary::default()
        };
        let result = CheckResult::from_verdict(
            judged.verdict,
            call.received_at,
            call_summary,
            Trigger::CallIn {
                device: judged.device,
            },
        );
        // Nothing of the caller's identity: the line (a device or
        // "self-test") and the outcome in words of kinds and headers.
        info!(line = %result.line, call_id = %esc(&call.call_id), outcome = %result.outcome,
            summary = %esc(&result.summary()), "call-in judged; the result is played to the caller");
        lock(&self.call_ins.pending).insert(call.call_id.clone(), result);
        Disposition::Announce {
            audio,
            then: callin.reject_code(),
        }
    }

    /// A call-in ended: its evidence (made safe to keep) is added and the
    /// result handed to whoever records it.
    fn call_in_finished(&self, mut result: CheckResult, call: FinishedCall) {
        let plan = self.plans.borrow().clone();
        let keep = plan.callin().keep();
        result.evidence = call
            .messages
            .iter()
            .map(|m| {
                let mut e = evidence_of("endpoint", m);
                e.text = selftest::privacy::scrub_message(&e.text, keep);
                e
            })
            .collect();
        result.call.final_status = call.final_status;
        result.call.final_reason = None;
        result.call.final_response_ms = call.final_after.map(|d| d.as_millis() as u64);
        if let Some(d) = call.final_after {
            result.duration_ms = d.as_millis() as u64;
        }
        if let Err(e) = self.call_ins.tx.try_send(result) {
            warn!(line = %e.into_inner().line, "a call-in could not be handed on to be recorded (too many at once, or nothing records them)");
        }
    }
}

impl CallHandler for Arbiter {
    fn on_invite(&self, call: &IncomingCall) -> Disposition {
        let plan = self.plans.borrow().clone();
        if let Some(owner) = plan.callin().owner_of(&call.number) {
            return self.call_in(&plan, owner, call);
        }
        let key = normalise_number(&call.number);
        let mut windows = lock(&self.windows);
        let Some(w) = windows.get_mut(&key) else {
            warn!(call_id = %esc(&call.call_id), source = %call.source, number = %esc(&call.number),
                "stray call: no check is waiting for a call to this number; rejected, not judged");
            return Disposition::Reject(self.reject_code);
        };
        let decoder = w
            .answer
            .then(|| Arc::new(Mutex::new(token::Decoder::new())));
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
        let then = if w.answer {
            Then::Answer {
                hangup_after: self.answered_for,
            }
        } else {
            Then::Reject(self.reject_code)
        };
        Disposition::Hold { hold: w.hold, then }
    }

    fn on_finished(&self, call: FinishedCall) {
        if let Some(r) = lock(&self.call_ins.pending).remove(&call.call_id) {
            self.call_in_finished(r, call);
            return;
        }
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

/// Judged call-ins waiting to be recorded; more are logged and dropped
/// (the rate limit keeps this far away).
const CALL_INS_QUEUED: usize = 256;

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

/// Runs checks; owns the endpoint.
pub struct Checker {
    /// The plan in force: a daemon publishes each new one here; a one-off
    /// check's plan never changes.
    plans: watch::Receiver<Arc<Plan>>,
    /// The endpoint settings it runs with: a plan with others is refused
    /// (they need a restart).
    endpoint_plan: EndpointPlan,
    /// The endpoint test calls arrive at.
    endpoint: EndpointHandle,
    /// The endpoint's call handler, holding each check's window.
    arbiter: Arc<Arbiter>,
    /// Calls in flight at once: the matching mode's limit.
    gate: Arc<Semaphore>,
    /// Endpoint numbers (their index in `endpoint.numbers`) not in use by
    /// a check.
    free_numbers: Mutex<Vec<usize>>,
    /// The holds of recent checks, so timing signatures stay distinct.
    recent_holds: Mutex<Vec<Duration>>,
    /// Tunables.
    opts: CheckOptions,
    /// Judged call-ins, as their calls end.
    call_ins: tokio::sync::Mutex<mpsc::Receiver<CheckResult>>,
}

impl Checker {
    /// Start the endpoint for a plan that won't change (`cidguard check`).
    pub async fn start(plan: Arc<Plan>, opts: CheckOptions) -> Result<Checker, CheckError> {
        let (_, plans) = watch::channel(plan.clone());
        Checker::follow(&plan, plans, None, opts).await
    }

    /// Start the endpoint for `start`, on `listeners` when they were bound
    /// already, and from then on check with whatever plan `plans` holds.
    pub async fn follow(
        start: &Plan,
        plans: watch::Receiver<Arc<Plan>>,
        listeners: Option<Listeners>,
        opts: CheckOptions,
    ) -> Result<Checker, CheckError> {
        let ep = start.endpoint().ok_or(CheckError::NoEndpoint)?.clone();
        let (tx, call_ins) = mpsc::channel(CALL_INS_QUEUED);
        let arbiter = Arc::new(Arbiter {
            windows: Mutex::new(HashMap::new()),
            reject_code: ep.reject_code(),
            answered_for: opts.answered_for,
            plans: plans.clone(),
            call_ins: CallIns {
                tx,
                limit: Mutex::new(CallInLimit {
                    rate: opts.call_ins_per_minute.max(0.0) / 60.0,
                    burst: opts.call_in_burst.max(1.0),
                    buckets: HashMap::new(),
                }),
                pending: Mutex::new(HashMap::new()),
                refused: AtomicU64::new(0),
                refused_log: Mutex::new((0, None)),
            },
        });
        let parallel = matching::mode(ep.matching()).in_flight(ep.numbers().len());
        // Test calls all come from the PBX (or the carrier's edge): one
        // source. The flood limit must let a whole parallel sweep through
        // while still stopping a scanner.
        let mut eo = EndpointOptions::default();
        eo.invite_burst = eo.invite_burst.max(2.0 * parallel as f64 + 10.0);
        eo.invite_rate = eo.invite_rate.max(parallel as f64);
        eo.max_calls = eo.max_calls.max(2 * parallel + 16);
        // The PBX's share of everything: each call is an INVITE, an ACK,
        // perhaps a CANCEL or BYE and their retransmissions over UDP.
        if let Some(l) = eo.stack.transport.limits.as_mut() {
            l.burst = l.burst.max(8.0 * parallel as f64 + 100.0);
            l.rate = l.rate.max(4.0 * parallel as f64);
            l.max_transactions = l.max_transactions.max(4 * parallel + 64);
            l.max_queued = l.max_queued.max(4 * parallel + 64);
        }
        let endpoint = match listeners {
            Some(l) => Endpoint::start_on(ep.sip(), l, arbiter.clone(), eo).await?,
            None => Endpoint::start_with(ep.sip(), arbiter.clone(), eo).await?,
        };
        Ok(Checker {
            plans,
            free_numbers: Mutex::new((0..ep.numbers().len()).rev().collect()),
            endpoint_plan: ep,
            endpoint,
            arbiter,
            gate: Arc::new(Semaphore::new(parallel)),
            recent_holds: Mutex::new(Vec::new()),
            opts,
            call_ins: tokio::sync::Mutex::new(call_ins),
        })
    }

    /// The next call-in, judged, once its call has ended (None when the
    /// endpoint is gone). Cancel-safe: nothing is lost when the future is
    /// dropped before it completes.
    pub async fn next_call_in(&self) -> Option<CheckResult> {
        self.call_ins.lock().await.recv().await
    }

    /// Call-ins refused over the per-source rate limit since the start.
    pub fn call_ins_refused(&self) -> u64 {
        self.arbiter.call_ins.refused.load(Ordering::Relaxed)
    }

    /// The plan in force.
    fn plan(&self) -> Arc<Plan> {
        self.plans.borrow().clone()
    }

    /// Whether a new plan can be taken while the endpoint keeps running:
    /// its settings must not change (that needs a restart), else the plan
    /// is refused and the old one stays in force.
    pub fn accepts(&self, plan: &Plan) -> Result<(), CheckError> {
        if plan.endpoint() != Some(&self.endpoint_plan) {
            return Err(CheckError::EndpointChanged);
        }
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
            self.plan()
                .lines()
                .iter()
                .map(|l| l.name().to_string())
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
        let plan = self.plan();
        let Some(line) = plan.line(name) else {
            return CheckResult::inconclusive(
                name,
                Expect::Withheld,
                started,
                format!("no line named {name:?} in the config"),
                trigger,
            );
        };
        let inconclusive = |reason: String, trigger: Trigger| {
            CheckResult::inconclusive(name, line.expected(), started, reason, trigger)
        };
        let Some(account) = line.account() else {
            return inconclusive(
                "the line has no [line.account]: it can be inspected, not called".into(),
                trigger,
            );
        };
        let Some(ep) = plan.endpoint() else {
            return inconclusive("no [endpoint] configured".into(), trigger);
        };

        // One call per endpoint number at a time (and one at all for the
        // timing and media signatures).
        let Ok(_permit) = self.gate.acquire().await else {
            return inconclusive("the checker is shutting down".into(), trigger);
        };
        let Some(index) = lock(&self.free_numbers).pop() else {
            return inconclusive("no free endpoint number".into(), trigger);
        };
        let result = match (ep.numbers().get(index), line.target(index)) {
            (Some(number), Some(target)) => {
                self.call_and_judge(line, account, ep, number, target, started, trigger)
                    .await
            }
            _ => inconclusive(
                "the line has no Request-URI for this endpoint number".into(),
                trigger,
            ),
        };
        lock(&self.free_numbers).push(index);
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn call_and_judge(
        &self,
        line: &LinePlan,
        account: &Account,
        ep: &EndpointPlan,
        number: &str,
        target: &str,
        started: SystemTime,
        trigger: Trigger,
    ) -> CheckResult {
        let name = line.name();
        let policy = line.policy();
        let inconclusive = |reason: String| {
            CheckResult::inconclusive(name, policy.expect, started, reason, trigger.clone())
        };
        let mode = matching::mode(ep.matching());
        let hold = {
            let mut recent = lock(&self.recent_holds);
            let h = mode.hold(
                (ep.hold_min(), ep.hold_max()),
                &recent,
                self.opts.hold_gap,
                rand::random::<f64>(),
            );
            recent.push(h);
            if recent.len() > 8 {
                recent.remove(0);
            }
            h
        };
        let token = mode
            .answers()
            .then(|| token::random_token(self.opts.token_len));
        let key = normalise_number(number);
        let changed = Arc::new(Notify::new());
        lock(&self.arbiter.windows).insert(
            key.clone(),
            Window {
                line: name.to_string(),
                hold,
                answer: mode.answers(),
                seen: Vec::new(),
                changed: changed.clone(),
            },
        );
        let outcome = self.place_call(account, target, hold, token.clone()).await;
        // Give the endpoint's side time to report the call it saw (a PBX
        // may still be delivering it after the line's side has ended).
        let settle = ep.arrival_timeout();
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
        let m = mode.decide(
            &placed,
            &arrivals,
            &Sent {
                hold,
                number,
                token: token.as_deref(),
                tolerance: self.opts.timing_tolerance,
            },
        );
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
    /// Request-URI the plan built for it). Err is a reason for an
    /// inconclusive result.
    async fn place_call(
        &self,
        account: &Account,
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

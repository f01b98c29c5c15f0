//! `cidguard run`: the daemon. It checks every line on its cron schedule,
//! catches up on checks missed while it was down, re-checks every line on a
//! PBX whose software changed, records every result in the history, hands
//! each stored result to the alert side, and behaves as a systemd service
//! (readiness, watchdog, status, reload on SIGHUP, clean stop on SIGTERM).
//!
//! The parts built elsewhere plug in through [`Deps`]:
//!
//! ```text
//!            schedule / catch-up / PBX change / alert follow-ups
//!                                   │
//!                              queue of checks ──▶ Checker::check (≤ slots in flight)
//!                                                        │ CheckResult
//!          HistoryWrite::record_check (blocking thread) ◀┘
//!                                   │ StoredCheck
//!                         AlertSink::on_result ──▶ follow-ups (recheck now / later)
//! ```
//!
//! Everything runs on one task that owns the state; checks, the writes of
//! their results and PBX probes run as their own tasks and report back (a
//! line keeps its slot until its result is written, so one line's results
//! reach the history and the alert side in order). Every wait is bounded: a check by
//! `daemon.check_timeout`, a probe by [`PROBE_TIMEOUT`], a stop by
//! `daemon.grace`. Wall-clock time comes from a [`Clock`], so tests can run
//! the daemon on tokio's paused time.
//!
//! The plan in force sits on a `watch` channel the daemon owns the sending
//! side of: the checker and the dashboard read it from there, and a reload
//! publishes the new plan whole once the checker has accepted it. The
//! daemon knows nothing of the dashboard: run-now requests reach it as
//! [`RunRequest`]s on a channel ([`crate::service`] wires the two).

pub mod notify;
pub mod wiring;

pub use crate::check::RunRequest;
pub use crate::maintenance;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio::task::{Id, JoinError, JoinSet};
use tokio::time::Instant;
use tracing::Instrument;

use crate::check::result::{CheckResult, Trigger};
use crate::config::ConfigError;
use crate::plan::Plan;
use crate::schedule::Schedule;
use crate::sip::Account;
use crate::store::{HistoryWrite, PbxObservation, Record, Store, StoreError, StoredCheck};
use crate::verdict::Outcome;
use notify::Notifier;

/// Errors from the parts plugged into the daemon.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long one PBX software probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often expired evidence is deleted.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// How long the checker may take to apply a configuration.
pub const CONFIGURE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stop waits for results still being written to the history.
const WRITES_AT_STOP: Duration = Duration::from_secs(10);
/// The loop wakes at least this often, to see wall-clock changes
/// (suspend, NTP steps) and maintenance windows set through the API.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// One check to run.
#[derive(Debug, Clone)]
pub struct CheckRequest {
    /// The plan in force when the check started.
    pub plan: Arc<Plan>,
    /// The line to check.
    pub line: String,
    /// Why it is checked.
    pub trigger: Trigger,
    /// The check's place among those in flight, `0..limit` where the limit
    /// comes from `endpoint.matching` (1 for `timing` and `media`, the
    /// number of endpoint numbers for `numbers`). No two checks in flight
    /// share a slot, so with `numbers` matching the check dials
    /// `endpoint.numbers[slot]`.
    pub slot: usize,
}

/// Places test calls and judges them (the SIP side implements it).
#[async_trait]
pub trait Checker: Send + Sync + 'static {
    /// Bring up the receiving side for this plan (bind the endpoint's
    /// listeners, register). Called before the daemon reports ready, and
    /// again with each new plan on reload, before it is published; an error
    /// there refuses the new plan, so this should either take it fully or
    /// leave the previous one running.
    async fn configure(&self, plan: &Arc<Plan>) -> Result<(), BoxError>;

    /// Check one line. The daemon runs up to the matching mode's limit of
    /// these at once and records each result as soon as it returns; a check
    /// that can't be judged returns an inconclusive result, not an error.
    /// The future may be dropped (timeout, stop): the call must then be
    /// torn down by its drop.
    async fn check(&self, request: CheckRequest) -> CheckResult;

    /// The next call-in: a call someone made to a self-test number, judged
    /// and played to them already; the daemon records it like any result
    /// and hands it to the alert side. Must be cancel-safe (the daemon's
    /// loop drops the future whenever something else happens first). The
    /// default never yields one.
    async fn next_call_in(&self) -> Option<CheckResult> {
        std::future::pending().await
    }
}

/// Asks a PBX what software it runs (the SIP side implements it with
/// OPTIONS, reading Server / User-Agent).
#[async_trait]
pub trait PbxProbe: Send + Sync + 'static {
    /// `registrar` is as configured; `account` is one of the lines using it
    /// (transport, outbound proxy). None: the PBX answered without saying.
    async fn software(
        &self,
        registrar: &str,
        account: &Account,
    ) -> Result<Option<String>, BoxError>;
}

/// What the alert side asks the daemon to do after a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowUp {
    /// Check the line again after `after` (zero: now), e.g. to confirm a
    /// new failure with `Trigger::Confirm`.
    Recheck {
        line: String,
        trigger: Trigger,
        after: Duration,
    },
}

/// What the alert side is told along with a result.
pub struct AlertContext<'a> {
    /// The history (alert state and outbox live there too).
    pub store: &'a Arc<Store>,
    /// The plan in force.
    pub plan: &'a Arc<Plan>,
    /// The daemon's wall-clock time.
    pub now: DateTime<Utc>,
    /// Alerts are being held (a maintenance window is open).
    pub in_maintenance: bool,
}

/// Receives every stored result (the alert side implements it). Called on
/// the daemon's task: keep it quick (state machine and outbox writes; the
/// sending happens elsewhere).
pub trait AlertSink: Send + Sync + 'static {
    /// The history is open and this plan is in force: at start (before
    /// ready) and after each accepted reload. A place to start a sender
    /// task on the store.
    fn configure(&self, _store: &Arc<Store>, _plan: &Arc<Plan>) {}

    /// A check was stored with id `check.id`.
    fn on_result(&self, check: &StoredCheck, ctx: &AlertContext<'_>) -> Vec<FollowUp>;

    /// At start, once the schedules are known: take in checks recorded
    /// before a crash that the alert side never saw. Its follow-ups are
    /// handled like `on_result`'s.
    fn catch_up(&self, _ctx: &AlertContext<'_>) -> Vec<FollowUp> {
        Vec::new()
    }

    /// A maintenance window opened (`active`) or closed: the moment to
    /// summarise the alerts held in the lines' states.
    fn maintenance_changed(&self, _active: bool, _ctx: &AlertContext<'_>) {}

    /// The daemon's periodic tick (at start, then every [`ALERT_TICK`] or
    /// the shortest device `remind_every`, whichever is shorter): the
    /// moment for reminders that no result causes (devices not tested).
    fn tick(&self, _ctx: &AlertContext<'_>) {}
}

/// How often [`AlertSink::tick`] runs at most apart.
pub const ALERT_TICK: Duration = Duration::from_secs(60);

/// Alerts off: results are only recorded.
#[derive(Debug, Default)]
pub struct NoAlerts;

impl AlertSink for NoAlerts {
    fn on_result(&self, _check: &StoredCheck, _ctx: &AlertContext<'_>) -> Vec<FollowUp> {
        Vec::new()
    }
}

/// No PBX probing: software is never known, so never changes.
#[derive(Debug, Default)]
pub struct NoProbe;

#[async_trait]
impl PbxProbe for NoProbe {
    async fn software(&self, _r: &str, _a: &Account) -> Result<Option<String>, BoxError> {
        Ok(None)
    }
}

/// An inconclusive result for a request that can't be checked at all.
pub fn uncheckable(req: CheckRequest, reason: &str) -> CheckResult {
    let expected = req.plan.expect_of(&req.line);
    CheckResult::inconclusive(
        &req.line,
        expected,
        SystemTime::now(),
        reason.into(),
        req.trigger,
    )
}

/// For tests and a build without SIP: every check is recorded as
/// inconclusive, saying why.
#[derive(Debug, Default)]
pub struct UnavailableChecker;

#[async_trait]
impl Checker for UnavailableChecker {
    async fn configure(&self, _plan: &Arc<Plan>) -> Result<(), BoxError> {
        Ok(())
    }
    async fn check(&self, req: CheckRequest) -> CheckResult {
        uncheckable(req, "this build of cidguard can't place test calls yet")
    }
}

/// Wall-clock time, for schedules and records.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A wall clock that follows tokio's clock from a given start, so paused
/// time (tests) moves schedules too.
#[derive(Debug)]
pub struct TokioClock {
    base: DateTime<Utc>,
    start: Instant,
}

impl TokioClock {
    pub fn starting_at(base: DateTime<Utc>) -> TokioClock {
        TokioClock {
            base,
            start: Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        self.base + chrono_dur(self.start.elapsed())
    }
}

/// What the daemon did, for observers (tests, and later the dashboard's
/// live view).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// History open, checker configured, READY=1 sent.
    Ready,
    CheckStarted {
        line: String,
        trigger: Trigger,
        slot: usize,
    },
    Recorded {
        id: i64,
        line: String,
        trigger: Trigger,
        outcome: Outcome,
        interrupted: bool,
    },
    PbxChanged {
        registrar: String,
        from: String,
        to: String,
    },
    Reloaded {
        ok: bool,
        message: String,
    },
    MaintenanceChanged {
        active: bool,
    },
    /// Expired evidence was deleted (how many messages).
    EvidencePruned {
        messages: usize,
    },
    /// Every queued check is done; `status` is what STATUS= says.
    SweepDone {
        status: String,
    },
    Stopped,
}

/// The parts the daemon is built from.
pub struct Deps {
    /// Places the test calls.
    pub checker: Arc<dyn Checker>,
    /// Asks each PBX what software it runs.
    pub probe: Arc<dyn PbxProbe>,
    /// Is told every stored result.
    pub alerts: Arc<dyn AlertSink>,
    /// Wall-clock time.
    pub clock: Arc<dyn Clock>,
    /// systemd notifications.
    pub notifier: Notifier,
    /// Where to report [`Event`]s, if anyone listens.
    pub events: Option<mpsc::UnboundedSender<Event>>,
    /// Run-now requests (from the dashboard and API), if anything sends
    /// them.
    pub runs: Option<mpsc::Receiver<RunRequest>>,
}

impl Deps {
    /// The given parts with the system clock and systemd notification
    /// from the environment.
    pub fn new(
        checker: Arc<dyn Checker>,
        probe: Arc<dyn PbxProbe>,
        alerts: Arc<dyn AlertSink>,
    ) -> Deps {
        Deps {
            checker,
            probe,
            alerts,
            clock: Arc::new(SystemClock),
            notifier: Notifier::from_env(),
            events: None,
            runs: None,
        }
    }
}

/// Why the daemon could not start (once running, problems are logged and
/// it carries on).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("can't start checking: {0}")]
    Checker(BoxError),
    #[error("can't listen for signals: {0}")]
    Signals(std::io::Error),
}

/// SIGHUP as a stream of reload requests, and SIGTERM or SIGINT as the
/// stop request, for [`run`].
pub fn unix_signals() -> Result<(mpsc::Receiver<()>, impl Future<Output = ()>), DaemonError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            // A reload already pending covers this one too.
            let _ = tx.try_send(());
        }
    });
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    Ok((rx, stop))
}

/// What the daemon runs on: the plan channel and the history, prepared by
/// whoever wires the service.
pub struct Setup {
    /// Where the config was read from: a reload reads it again.
    pub config_path: PathBuf,
    /// The plan in force; a reload publishes the new one here.
    pub plan: watch::Sender<Arc<Plan>>,
    /// The history.
    pub store: Arc<Store>,
}

impl Setup {
    /// Read the config and open the history in its state directory.
    pub fn open(config_path: &Path) -> Result<Setup, DaemonError> {
        let plan = Plan::load(config_path)?;
        let store = Store::open_in(&plan.state_dir())?;
        Ok(Setup {
            config_path: config_path.to_path_buf(),
            plan: watch::channel(Arc::new(plan)).0,
            store: Arc::new(store),
        })
    }
}

/// Run the daemon on `config_path` until `shutdown` completes (no
/// dashboard: [`crate::service`] runs one beside it). Each message on
/// `reload` re-reads the file. Returns Ok after a clean stop.
pub async fn run(
    config_path: &Path,
    deps: Deps,
    reload: mpsc::Receiver<()>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    run_on(Setup::open(config_path)?, deps, reload, shutdown).await
}

/// Run the daemon on a prepared [`Setup`] until `shutdown` completes.
pub async fn run_on(
    setup: Setup,
    deps: Deps,
    reload: mpsc::Receiver<()>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let plan = setup.plan.borrow().clone();
    let state_dir = plan.state_dir();
    tracing::info!("history at {}", setup.store.path().display());
    configure(deps.checker.as_ref(), &plan)
        .await
        .map_err(DaemonError::Checker)?;
    deps.alerts.configure(&setup.store, &plan);
    let mut d = Daemon::new(setup, state_dir, deps);
    d.start()?;
    d.main_loop(reload, shutdown).await;
    d.stop().await;
    Ok(())
}

/// The next run-now request, or never when there is no channel.
async fn next_run(runs: &mut Option<mpsc::Receiver<RunRequest>>) -> Option<RunRequest> {
    match runs {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// [`Checker::configure`], bounded so a stuck endpoint can't hang the start
/// or a reload.
async fn configure(checker: &dyn Checker, plan: &Arc<Plan>) -> Result<(), BoxError> {
    match tokio::time::timeout(CONFIGURE_TIMEOUT, checker.configure(plan)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "the endpoint was not ready within {} s",
            CONFIGURE_TIMEOUT.as_secs()
        )
        .into()),
    }
}

/// A check waiting to run.
#[derive(Debug, Clone)]
struct Pending {
    line: String,
    trigger: Trigger,
    /// The scheduled time it runs for (scheduled and catch-up checks).
    slot_ms: Option<i64>,
}

/// A check in flight, until its result is in the history.
#[derive(Debug)]
struct Running {
    /// Why it runs.
    trigger: Trigger,
    /// The scheduled time it runs for (scheduled and catch-up checks).
    slot_ms: Option<i64>,
    /// Its place among the checks in flight.
    slot: usize,
    /// When it was started.
    started: DateTime<Utc>,
    /// Its task.
    task: Id,
    /// The check is done and its result is being written.
    writing: bool,
}

/// What a check task hands back.
struct Done {
    /// The line checked.
    line: String,
    /// What was found.
    result: CheckResult,
}

/// A result written to the history (off the daemon's task), or not.
struct Written {
    /// The line whose check it is.
    line: String,
    /// The result, how it was recorded and its id; Err: why it could not
    /// be stored.
    stored: Result<(CheckResult, Record, i64), String>,
}

/// A line's place in the schedule.
#[derive(Debug)]
struct LineSchedule {
    schedule: Schedule,
    /// The next cron occurrence.
    next_slot: DateTime<Utc>,
    /// When it is started: the occurrence plus random jitter.
    fire_at: DateTime<Utc>,
}

/// Outcome counts of the checks since the queue was last empty.
#[derive(Debug, Default)]
struct Sweep {
    started: Option<DateTime<Utc>>,
    pass: u32,
    fail: u32,
    inconclusive: u32,
}

/// What the PBX probing reports.
enum PbxReport {
    /// A PBX answered (or didn't).
    Seen {
        /// The PBX, as configured.
        registrar: String,
        /// What it says it runs; None when it didn't say.
        software: Result<Option<String>, String>,
    },
    /// Every PBX of this round has reported.
    PollDone,
}

struct Daemon {
    /// Where the config was read from, for reloads.
    config_path: PathBuf,
    /// The plan in force, published to the checker and the dashboard.
    plan: watch::Sender<Arc<Plan>>,
    /// The history.
    store: Arc<Store>,
    state_dir: PathBuf,
    deps: Deps,
    lines: BTreeMap<String, LineSchedule>,
    queue: VecDeque<Pending>,
    delayed: Vec<(DateTime<Utc>, Pending)>,
    running: HashMap<String, Running>,
    free_slots: BTreeSet<usize>,
    limit: usize,
    tasks: JoinSet<Done>,
    /// Results being written to the history.
    writes: JoinSet<Written>,
    sweep: Sweep,
    in_maintenance: bool,
    maintenance_next: Option<DateTime<Utc>>,
    next_watchdog: Option<Instant>,
    next_poll: Instant,
    polling: bool,
    pbx_tx: mpsc::Sender<PbxReport>,
    pbx_rx: mpsc::Receiver<PbxReport>,
    retention: watch::Sender<Duration>,
    pruner: Option<tokio::task::JoinHandle<()>>,
    /// When the alert side's tick is next due.
    next_alert_tick: Instant,
}

fn chrono_dur(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// The number of checks that may be in flight under a plan: the matching
/// mode's limit (one without an endpoint).
pub fn concurrency_limit(plan: &Plan) -> usize {
    plan.endpoint().map_or(1, |ep| {
        crate::check::matching::mode(ep.matching()).in_flight(ep.numbers().len())
    })
}

impl Daemon {
    fn new(setup: Setup, state_dir: PathBuf, deps: Deps) -> Daemon {
        let (pbx_tx, pbx_rx) = mpsc::channel(64);
        let plan = setup.plan.borrow().clone();
        let (retention, _) = watch::channel(plan.config().daemon.evidence_retention);
        let limit = concurrency_limit(&plan);
        Daemon {
            config_path: setup.config_path,
            next_watchdog: deps
                .notifier
                .watchdog_interval()
                .map(|i| Instant::now() + i),
            plan: setup.plan,
            store: setup.store,
            state_dir,
            deps,
            lines: BTreeMap::new(),
            queue: VecDeque::new(),
            delayed: Vec::new(),
            running: HashMap::new(),
            free_slots: (0..limit).collect(),
            limit,
            tasks: JoinSet::new(),
            writes: JoinSet::new(),
            sweep: Sweep::default(),
            in_maintenance: false,
            maintenance_next: None,
            next_poll: Instant::now(),
            polling: false,
            pbx_tx,
            pbx_rx,
            retention,
            pruner: None,
            next_alert_tick: Instant::now(),
        }
    }

    /// The alert side's periodic tick, when due.
    fn alert_tick_if_due(&mut self, now: DateTime<Utc>) {
        if Instant::now() < self.next_alert_tick {
            return;
        }
        let plan = self.plan();
        let every = plan
            .callin()
            .devices()
            .iter()
            .filter(|d| d.selftest_number().is_some())
            .filter_map(|d| d.remind_every())
            .min()
            .map_or(ALERT_TICK, |d| {
                d.clamp(Duration::from_millis(200), ALERT_TICK)
            });
        self.next_alert_tick = Instant::now() + every;
        let ctx = AlertContext {
            store: &self.store,
            plan: &plan,
            now,
            in_maintenance: self.in_maintenance,
        };
        self.deps.alerts.tick(&ctx);
    }

    fn emit(&self, e: Event) {
        if let Some(tx) = &self.deps.events {
            let _ = tx.send(e);
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.deps.clock.now()
    }

    /// The plan in force.
    fn plan(&self) -> Arc<Plan> {
        self.plan.borrow().clone()
    }

    /// Schedules, catch-up, the pruner, READY=1.
    fn start(&mut self) -> Result<(), DaemonError> {
        let now = self.now();
        let last = HistoryWrite::last_slots(&*self.store)?;
        self.lines = self.build_schedules(now, None);
        for (name, ls) in &self.lines {
            match last.get(name) {
                Some(&last_ms) => {
                    // Due while the daemon was down: run once, soon, for
                    // the latest missed occurrence.
                    if let Some(missed) = ls.schedule.latest_at_or_before(now) {
                        if missed.timestamp_millis() > last_ms {
                            tracing::info!(
                                line = %name,
                                "a scheduled check was due at {missed} while cidguard was not running; checking now"
                            );
                            self.queue.push_back(Pending {
                                line: name.clone(),
                                trigger: Trigger::Schedule,
                                slot_ms: Some(missed.timestamp_millis()),
                            });
                        }
                    }
                }
                // First sight of the line: count downtime from now on.
                None => HistoryWrite::set_last_slot(&*self.store, name, now.timestamp_millis())?,
            }
        }
        self.pruner = Some(tokio::spawn(prune_loop(
            self.store.clone(),
            self.deps.clock.clone(),
            self.retention.subscribe(),
            self.deps.events.clone(),
        )));
        self.update_maintenance(now);
        // Results recorded just before a crash, never seen by the alerts.
        let plan = self.plan();
        let ctx = AlertContext {
            store: &self.store,
            plan: &plan,
            now,
            in_maintenance: self.in_maintenance,
        };
        let follow = self.deps.alerts.catch_up(&ctx);
        self.follow_up(follow, now);
        let status = format!(
            "ready: {} line{} scheduled{}",
            self.lines.len(),
            if self.lines.len() == 1 { "" } else { "s" },
            self.next_check_text()
        );
        tracing::info!("{status}");
        self.deps.notifier.ready(&status);
        self.emit(Event::Ready);
        Ok(())
    }

    /// Schedules for every callable line, keeping the next occurrence of
    /// lines whose schedule didn't change (`old`).
    fn build_schedules(
        &self,
        now: DateTime<Utc>,
        old: Option<&BTreeMap<String, LineSchedule>>,
    ) -> BTreeMap<String, LineSchedule> {
        let plan = self.plan();
        let mut out = BTreeMap::new();
        for line in plan.lines() {
            let Some(schedule) = line.schedule() else {
                tracing::info!(line = %line.name(), "no [line.account]: not scheduled (it can still be inspected)");
                continue;
            };
            if let Some(prev) = old.and_then(|o| o.get(line.name())) {
                if prev.schedule == *schedule {
                    out.insert(
                        line.name().to_string(),
                        LineSchedule {
                            schedule: schedule.clone(),
                            next_slot: prev.next_slot,
                            fire_at: prev.fire_at,
                        },
                    );
                    continue;
                }
            }
            let Some(next_slot) = schedule.next_after(now) else {
                tracing::error!(line = %line.name(), "schedule {schedule} has no next occurrence");
                continue;
            };
            out.insert(
                line.name().to_string(),
                LineSchedule {
                    fire_at: next_slot
                        .checked_add_signed(self.jitter())
                        .unwrap_or(next_slot),
                    schedule: schedule.clone(),
                    next_slot,
                },
            );
        }
        out
    }

    fn jitter(&self) -> chrono::Duration {
        let max = self
            .plan()
            .config()
            .daemon
            .jitter
            .as_millis()
            .min(i64::MAX as u128) as i64;
        if max == 0 {
            return chrono::Duration::zero();
        }
        chrono::Duration::milliseconds(rand::thread_rng().gen_range(0..=max))
    }

    fn next_check_text(&self) -> String {
        let tz = self.plan().tz();
        self.lines
            .values()
            .map(|l| l.next_slot)
            .min()
            .map(|t| {
                format!(
                    "; next check {}",
                    t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z")
                )
            })
            .unwrap_or_default()
    }

    async fn main_loop(
        &mut self,
        mut reload: mpsc::Receiver<()>,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut reload_open = true;
        let mut runs = self.deps.runs.take();
        let checker = self.deps.checker.clone();
        loop {
            let now = self.now();
            self.fire_due(now);
            self.update_maintenance(now);
            self.start_poll_if_due();
            self.dispatch();
            self.finish_sweep_if_idle();
            self.ping_watchdog_if_due();
            self.alert_tick_if_due(now);
            let wake = self.next_wake(now);
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                r = reload.recv(), if reload_open => match r {
                    Some(()) => self.reload().await,
                    None => reload_open = false,
                },
                Some(joined) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    self.finish(joined);
                }
                Some(written) = self.writes.join_next(), if !self.writes.is_empty() => {
                    self.recorded(written);
                }
                Some(seen) = self.pbx_rx.recv() => self.on_pbx(seen),
                Some(call_in) = checker.next_call_in() => self.on_call_in(call_in),
                r = next_run(&mut runs) => match r {
                    Some(req) => self.on_run_request(req),
                    // The dashboard is gone: stop listening, don't spin.
                    None => runs = None,
                },
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// When the loop must wake up next.
    fn next_wake(&self, now: DateTime<Utc>) -> Instant {
        let base = Instant::now();
        let mut wake = base + MAX_SLEEP;
        let wall = self
            .lines
            .values()
            .map(|l| l.fire_at)
            .chain(self.delayed.iter().map(|(t, _)| *t))
            .chain(self.maintenance_next)
            .min();
        if let Some(t) = wall {
            let d = (t - now).to_std().unwrap_or(Duration::ZERO);
            wake = wake.min(base + d.min(MAX_SLEEP));
        }
        if let Some(w) = self.next_watchdog {
            wake = wake.min(w);
        }
        if !self.polling {
            wake = wake.min(self.next_poll);
        }
        wake.min(self.next_alert_tick)
    }

    fn ping_watchdog_if_due(&mut self) {
        if let (Some(next), Some(every)) =
            (self.next_watchdog, self.deps.notifier.watchdog_interval())
        {
            let now = Instant::now();
            if now >= next {
                self.deps.notifier.watchdog();
                self.next_watchdog = Some(now + every);
            }
        }
    }

    /// Queue scheduled checks and delayed re-checks that are due.
    fn fire_due(&mut self, now: DateTime<Utc>) {
        let due: Vec<String> = self
            .lines
            .iter()
            .filter(|(_, ls)| ls.fire_at <= now)
            .map(|(name, _)| name.clone())
            .collect();
        let mut fired = Vec::new();
        for name in due {
            let jitter = self.jitter();
            let Some(ls) = self.lines.get_mut(&name) else {
                continue;
            };
            fired.push(Pending {
                line: name,
                trigger: Trigger::Schedule,
                slot_ms: Some(ls.next_slot.timestamp_millis()),
            });
            // After a long stall (suspend), skip to the future rather than
            // run every missed occurrence.
            let mut next = ls.schedule.next_after(ls.next_slot);
            if next.is_some_and(|n| n <= now) {
                next = ls.schedule.next_after(now);
            }
            // None is unreachable for validated schedules; park the line.
            let next = next.unwrap_or(DateTime::<Utc>::MAX_UTC);
            ls.next_slot = next;
            ls.fire_at = next.checked_add_signed(jitter).unwrap_or(next);
        }
        let (ready, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.delayed)
            .into_iter()
            .partition(|(t, _)| *t <= now);
        self.delayed = later;
        for p in fired.into_iter().chain(ready.into_iter().map(|(_, p)| p)) {
            self.enqueue(p);
        }
    }

    /// Queue checks asked for through the dashboard or API.
    fn on_run_request(&mut self, req: RunRequest) {
        let lines: Vec<String> = if req.lines.is_empty() {
            self.lines.keys().cloned().collect()
        } else {
            req.lines
        };
        let unknown: Vec<&String> = lines
            .iter()
            .filter(|l| !self.lines.contains_key(*l))
            .collect();
        let answer = if !unknown.is_empty() {
            Err(format!(
                "not a scheduled line: {}",
                unknown
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        } else if lines.is_empty() {
            Err("no lines are scheduled".into())
        } else {
            for line in &lines {
                tracing::info!(line = %line, trigger = req.trigger.kind(), "check asked for");
                self.enqueue(Pending {
                    line: line.clone(),
                    trigger: req.trigger.clone(),
                    slot_ms: None,
                });
            }
            Ok(lines)
        };
        // The asker may have given up waiting: nothing to do then.
        let _ = req.reply.send(answer);
    }

    /// Add a check to the queue, merging with one for the same line that
    /// hasn't started: a more specific trigger wins, and the later slot.
    fn enqueue(&mut self, p: Pending) {
        if !self.lines.contains_key(&p.line) {
            tracing::warn!(line = %p.line, "not checked: no such callable line in the configuration");
            return;
        }
        if let Some(q) = self.queue.iter_mut().find(|q| q.line == p.line) {
            if q.trigger == Trigger::Schedule && p.trigger != Trigger::Schedule {
                q.trigger = p.trigger;
            }
            q.slot_ms = q.slot_ms.max(p.slot_ms);
            return;
        }
        // A PBX change or confirmation goes before routine checks.
        if p.trigger != Trigger::Schedule {
            let at = self
                .queue
                .iter()
                .position(|q| q.trigger == Trigger::Schedule)
                .unwrap_or(self.queue.len());
            self.queue.insert(at, p);
        } else {
            self.queue.push_back(p);
        }
    }

    /// Start queued checks while slots are free.
    fn dispatch(&mut self) {
        while !self.free_slots.is_empty() {
            let Some(pos) = self
                .queue
                .iter()
                .position(|p| !self.running.contains_key(&p.line))
            else {
                return;
            };
            let Some(p) = self.queue.remove(pos) else {
                return;
            };
            let Some(slot) = self.free_slots.pop_first() else {
                return;
            };
            let now = self.now();
            self.sweep.started.get_or_insert(now);
            let plan = self.plan();
            let timeout = plan.config().daemon.check_timeout;
            let expected = plan.expect_of(&p.line);
            let req = CheckRequest {
                plan,
                line: p.line.clone(),
                trigger: p.trigger.clone(),
                slot,
            };
            let checker = self.deps.checker.clone();
            let span = tracing::info_span!("check", line = %p.line, trigger = p.trigger.kind());
            let line = p.line.clone();
            let trigger = p.trigger.clone();
            let clock = self.deps.clock.clone();
            let handle = self.tasks.spawn(
                async move {
                    tracing::info!("started");
                    let result = match tokio::time::timeout(timeout, checker.check(req)).await {
                        Ok(r) => r,
                        Err(_) => {
                            let mut r = CheckResult::inconclusive(
                                &line,
                                expected,
                                SystemTime::now(),
                                format!(
                                    "the check did not finish within {} s (daemon.check_timeout)",
                                    timeout.as_secs()
                                ),
                                trigger,
                            );
                            stamp(&mut r, now, clock.now());
                            r
                        }
                    };
                    // The summary may quote the wire (a reason phrase).
                    tracing::info!(outcome = %result.outcome, "{}", crate::escape::control(&result.summary()));
                    Done { line, result }
                }
                .instrument(span),
            );
            self.running.insert(
                p.line.clone(),
                Running {
                    trigger: p.trigger.clone(),
                    slot_ms: p.slot_ms,
                    slot,
                    started: now,
                    task: handle.id(),
                    writing: false,
                },
            );
            self.emit(Event::CheckStarted {
                line: p.line,
                trigger: p.trigger,
                slot,
            });
        }
    }

    /// A check task ended: write its result to the history.
    fn finish(&mut self, joined: Result<(Id, Done), JoinError>) {
        let (line, mut result) = match joined {
            Ok((_, done)) => (done.line, done.result),
            Err(e) => {
                let Some(line) = self
                    .running
                    .iter()
                    .find(|(_, r)| r.task == e.id())
                    .map(|(l, _)| l.clone())
                else {
                    return;
                };
                let why = if e.is_panic() {
                    "the check failed unexpectedly (a bug: see the log)".to_string()
                } else {
                    "the check was cancelled".to_string()
                };
                tracing::error!(line = %line, "check task ended without a result: {e}");
                let r = self.placeholder_result(&line, why);
                (line, r)
            }
        };
        let Some(run) = self.running.get_mut(&line) else {
            return;
        };
        run.writing = true;
        // The daemon's view of what was checked and why is authoritative.
        result.line = line;
        result.trigger = run.trigger.clone();
        let slot_ms = run.slot_ms;
        match result.outcome {
            Outcome::Pass => self.sweep.pass += 1,
            Outcome::Fail => self.sweep.fail += 1,
            Outcome::Inconclusive => self.sweep.inconclusive += 1,
        }
        self.write(result, slot_ms, false);
    }

    /// An inconclusive result for a line whose check gave none.
    /// A call-in, judged by the checker: recorded like any result (then
    /// the alert side takes it in). It holds no slot and no schedule.
    fn on_call_in(&mut self, result: CheckResult) {
        tracing::info!(line = %result.line, outcome = %result.outcome, "recording a call-in");
        self.write(result, None, false);
    }

    fn placeholder_result(&self, line: &str, why: String) -> CheckResult {
        let started = self
            .running
            .get(line)
            .map(|r| r.started)
            .unwrap_or_else(|| self.now());
        let trigger = self
            .running
            .get(line)
            .map(|r| r.trigger.clone())
            .unwrap_or(Trigger::Schedule);
        let expected = self.plan().expect_of(line);
        let mut r = CheckResult::inconclusive(line, expected, SystemTime::now(), why, trigger);
        stamp(&mut r, started, self.now());
        r
    }

    /// Write a result to the history on a blocking thread, so a slow disk
    /// holds up neither the schedule nor the other checks; the line keeps
    /// its slot until [`Daemon::recorded`] has it.
    fn write(&mut self, result: CheckResult, slot_ms: Option<i64>, interrupted: bool) {
        let rec = Record {
            recorded_at_ms: self.now().timestamp_millis(),
            interrupted,
            // An interrupted check didn't happen: leave its slot due, so it
            // is caught up after the restart.
            slot_ms: if interrupted { None } else { slot_ms },
        };
        let store = self.store.clone();
        let line = result.line.clone();
        self.writes.spawn(async move {
            let stored = tokio::task::spawn_blocking(move || {
                HistoryWrite::record_check(&*store, &result, &rec)
                    .map(|id| {
                        // A test can end the process here: recorded, not yet
                        // seen by the alert side (taken in at the next start).
                        crate::crash::crash_point("after-check-recorded");
                        (result, rec, id)
                    })
                    .map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            Written { line, stored }
        });
    }

    /// A result is in the history (or could not be written): free the
    /// line's slot, and hand the result to the alert side.
    fn recorded(&mut self, written: Result<Written, JoinError>) {
        let Written { line, stored } = match written {
            Ok(w) => w,
            // Only a panic in the write's own task could get here; the
            // blocking write's failures come back as Err in `stored`.
            Err(e) => {
                tracing::error!("writing a result failed: {e}");
                return;
            }
        };
        if let Some(run) = self.running.remove(&line) {
            if run.slot < self.limit {
                self.free_slots.insert(run.slot);
            }
        }
        let (result, rec, id) = match stored {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(line = %line, "the result could not be stored: {e}");
                self.deps
                    .notifier
                    .status(&format!("error: can't write the history: {e}"));
                return;
            }
        };
        let interrupted = rec.interrupted;
        let recorded = Event::Recorded {
            id,
            line: result.line.clone(),
            trigger: result.trigger.clone(),
            outcome: result.outcome,
            interrupted,
        };
        if interrupted {
            // Not a verdict on the line: nothing to alert on.
            self.emit(recorded);
            return;
        }
        let mut stored = StoredCheck {
            id,
            recorded_at_ms: rec.recorded_at_ms,
            interrupted,
            evidence_pruned: false,
            result,
        };
        stored.result.evidence_ref = Some(id.to_string());
        let now = self.now();
        let plan = self.plan();
        let ctx = AlertContext {
            store: &self.store,
            plan: &plan,
            now,
            in_maintenance: self.in_maintenance,
        };
        let follow = self.deps.alerts.on_result(&stored, &ctx);
        self.follow_up(follow, now);
        self.emit(recorded);
    }

    /// Queue what the alert side asked for.
    fn follow_up(&mut self, follow: Vec<FollowUp>, now: DateTime<Utc>) {
        for f in follow {
            match f {
                FollowUp::Recheck {
                    line,
                    trigger,
                    after,
                } => {
                    let p = Pending {
                        line,
                        trigger,
                        slot_ms: None,
                    };
                    if after.is_zero() {
                        self.enqueue(p);
                    } else {
                        self.delayed.push((now + chrono_dur(after), p));
                    }
                }
            }
        }
    }

    fn finish_sweep_if_idle(&mut self) {
        if !self.queue.is_empty() || !self.running.is_empty() {
            return;
        }
        let Some(started) = self.sweep.started else {
            return;
        };
        let s = std::mem::take(&mut self.sweep);
        let tz = self.plan().tz();
        let n = s.pass + s.fail + s.inconclusive;
        let status = format!(
            "last sweep {}: {n} checked, {} pass, {} fail, {} inconclusive{}{}",
            started.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z"),
            s.pass,
            s.fail,
            s.inconclusive,
            if self.in_maintenance {
                "; maintenance: alerts held"
            } else {
                ""
            },
            self.next_check_text()
        );
        tracing::info!("{status}");
        self.deps.notifier.status(&status);
        self.emit(Event::SweepDone { status });
    }

    fn update_maintenance(&mut self, now: DateTime<Utc>) {
        let plan = self.plan();
        let windows = match maintenance::windows(&plan, &*self.store, now) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!("can't read maintenance windows: {e}");
                return;
            }
        };
        self.maintenance_next = maintenance::next_boundary(&windows, now);
        let active = windows.iter().any(|w| w.contains(now));
        if active != self.in_maintenance {
            self.in_maintenance = active;
            if active {
                tracing::info!("maintenance window open: checks go on, alerts are held");
            } else {
                tracing::info!("maintenance window closed: alerts resume");
            }
            let ctx = AlertContext {
                store: &self.store,
                plan: &plan,
                now,
                in_maintenance: active,
            };
            self.deps.alerts.maintenance_changed(active, &ctx);
            self.emit(Event::MaintenanceChanged { active });
        }
    }

    fn start_poll_if_due(&mut self) {
        if self.polling || Instant::now() < self.next_poll {
            return;
        }
        let plan = self.plan();
        self.next_poll = Instant::now() + plan.config().daemon.pbx_poll;
        let pbxs = plan.pbxs();
        if pbxs.is_empty() {
            return;
        }
        self.polling = true;
        let probe = self.deps.probe.clone();
        let tx = self.pbx_tx.clone();
        tokio::spawn(
            async move {
                let mut set = JoinSet::new();
                for (registrar, account) in pbxs {
                    let probe = probe.clone();
                    set.spawn(async move {
                        let software = match tokio::time::timeout(
                            PROBE_TIMEOUT,
                            probe.software(&registrar, &account),
                        )
                        .await
                        {
                            Ok(Ok(s)) => Ok(s),
                            Ok(Err(e)) => Err(e.to_string()),
                            Err(_) => {
                                Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs()))
                            }
                        };
                        PbxReport::Seen {
                            registrar,
                            software,
                        }
                    });
                }
                while let Some(r) = set.join_next().await {
                    if let Ok(seen) = r {
                        let _ = tx.send(seen).await;
                    }
                }
                let _ = tx.send(PbxReport::PollDone).await;
            }
            .instrument(tracing::info_span!("pbx-poll")),
        );
    }

    fn on_pbx(&mut self, report: PbxReport) {
        let (registrar, software) = match report {
            PbxReport::PollDone => {
                self.polling = false;
                return;
            }
            PbxReport::Seen {
                registrar,
                software,
            } => (registrar, software),
        };
        let software = match software {
            Ok(Some(s)) if !s.trim().is_empty() => s.trim().to_string(),
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(pbx = %registrar, "can't ask the PBX for its software: {}", crate::escape::control(&e.to_string()));
                return;
            }
        };
        let now = self.now();
        match HistoryWrite::observe_pbx(&*self.store, &registrar, &software, now.timestamp_millis())
        {
            Ok(PbxObservation::Changed { from, .. }) => {
                // The Server header is the PBX's text, not ours: escaped.
                tracing::warn!(pbx = %registrar, "PBX software changed from \"{}\" to \"{}\": checking its lines now", crate::escape::control(&from), crate::escape::control(&software));
                for line in self.plan().lines_on(&registrar) {
                    self.enqueue(Pending {
                        line,
                        trigger: Trigger::PbxChange {
                            from: Some(from.clone()),
                            to: software.clone(),
                        },
                        slot_ms: None,
                    });
                }
                self.emit(Event::PbxChanged {
                    registrar,
                    from,
                    to: software,
                });
            }
            Ok(PbxObservation::First) => {
                tracing::info!(pbx = %registrar, "PBX runs \"{}\"", crate::escape::control(&software));
            }
            Ok(PbxObservation::Unchanged) => {}
            Err(e) => tracing::error!("can't record PBX software: {e}"),
        }
    }

    /// Re-read the config; keep the running one if the new one is refused.
    async fn reload(&mut self) {
        self.deps.notifier.reloading();
        let (ok, message) = match self.try_reload().await {
            Ok(msg) => {
                tracing::info!("{msg}");
                (true, msg)
            }
            Err(why) => {
                let msg =
                    format!("reload refused, the previous configuration stays in force: {why}");
                tracing::error!("{msg}");
                (false, msg)
            }
        };
        self.deps.notifier.ready(&message);
        self.emit(Event::Reloaded { ok, message });
    }

    async fn try_reload(&mut self) -> Result<String, String> {
        let new = Arc::new(Plan::load(&self.config_path).map_err(|e| e.to_string())?);
        let old = self.plan();
        if new.state_dir() != self.state_dir {
            tracing::warn!(
                "daemon.state_dir changed; the history stays at {} until restart",
                self.state_dir.display()
            );
        }
        if new.config().dashboard != old.config().dashboard {
            tracing::warn!(
                "the [dashboard] settings changed; the dashboard keeps its address and token until restart (it shows the new lines at once)"
            );
        }
        configure(self.deps.checker.as_ref(), &new)
            .await
            .map_err(|e| format!("the checker refused it: {e}"))?;
        // From here on the checker and the dashboard see the new plan.
        self.plan.send_replace(new.clone());
        let now = self.now();
        let old = std::mem::take(&mut self.lines);
        self.lines = self.build_schedules(now, Some(&old));
        for name in self.lines.keys() {
            if !old.contains_key(name) {
                if let Err(e) =
                    HistoryWrite::set_last_slot(&*self.store, name, now.timestamp_millis())
                {
                    tracing::error!("{e}");
                }
            }
        }
        let lines = &self.lines;
        self.queue.retain(|p| lines.contains_key(&p.line));
        self.delayed.retain(|(_, p)| lines.contains_key(&p.line));
        self.limit = concurrency_limit(&new);
        let busy: BTreeSet<usize> = self.running.values().map(|r| r.slot).collect();
        self.free_slots = (0..self.limit).filter(|s| !busy.contains(s)).collect();
        let _ = self.retention.send(new.config().daemon.evidence_retention);
        self.deps.alerts.configure(&self.store, &new);
        self.update_maintenance(now);
        Ok(format!(
            "configuration reloaded: {} line{} scheduled{}",
            self.lines.len(),
            if self.lines.len() == 1 { "" } else { "s" },
            self.next_check_text()
        ))
    }

    /// No new checks; give those in flight `daemon.grace` to finish, then
    /// record the rest as interrupted.
    async fn stop(&mut self) {
        self.deps.notifier.stopping();
        tracing::info!(
            "stopping: {} check{} in progress",
            self.running.len(),
            if self.running.len() == 1 { "" } else { "s" }
        );
        self.queue.clear();
        self.delayed.clear();
        let deadline = Instant::now() + self.plan().config().daemon.grace;
        while !self.tasks.is_empty() {
            // Keep the watchdog fed while waiting.
            let until = match self.deps.notifier.watchdog_interval() {
                Some(i) => deadline.min(Instant::now() + i),
                None => deadline,
            };
            // Results of checks done in the meantime are recorded as they
            // come, not held back until the grace period is over.
            enum Next {
                Check(Result<(Id, Done), JoinError>),
                Written(Result<Written, JoinError>),
            }
            let next = tokio::time::timeout_at(until, async {
                tokio::select! {
                    Some(j) = self.tasks.join_next_with_id() => Some(Next::Check(j)),
                    Some(w) = self.writes.join_next(), if !self.writes.is_empty() => {
                        Some(Next::Written(w))
                    }
                    else => None,
                }
            })
            .await;
            match next {
                Ok(Some(Next::Check(j))) => self.finish(j),
                Ok(Some(Next::Written(w))) => self.recorded(w),
                Ok(None) => break,
                Err(_) if Instant::now() < deadline => self.deps.notifier.watchdog(),
                Err(_) => break,
            }
        }
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        let left: Vec<String> = self
            .running
            .iter()
            .filter(|(_, r)| !r.writing)
            .map(|(l, _)| l.clone())
            .collect();
        for line in left {
            let r = self.placeholder_result(
                &line,
                "interrupted: cidguard stopped before the check finished".into(),
            );
            tracing::warn!(line = %line, "check interrupted by the stop");
            if let Some(run) = self.running.get_mut(&line) {
                run.writing = true;
                let slot_ms = run.slot_ms;
                self.write(r, slot_ms, true);
            }
        }
        // Every result that finished is written before the stop completes.
        let deadline = Instant::now() + WRITES_AT_STOP;
        loop {
            match tokio::time::timeout_at(deadline, self.writes.join_next()).await {
                Ok(Some(w)) => self.recorded(w),
                Ok(None) => break,
                Err(_) => {
                    tracing::error!(
                        "{} result{} still being written to the history at the stop",
                        self.writes.len(),
                        if self.writes.len() == 1 { "" } else { "s" }
                    );
                    break;
                }
            }
        }
        if let Some(p) = self.pruner.take() {
            p.abort();
        }
        tracing::info!("stopped");
        self.emit(Event::Stopped);
    }
}

/// Put the daemon's clock times on a result it made itself.
fn stamp(r: &mut CheckResult, started: DateTime<Utc>, now: DateTime<Utc>) {
    r.started_at = started.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    r.duration_ms = (now - started).num_milliseconds().max(0) as u64;
}

/// Delete expired evidence every [`PRUNE_EVERY`], in small batches off the
/// async threads.
async fn prune_loop(
    store: Arc<dyn HistoryWrite>,
    clock: Arc<dyn Clock>,
    mut retention: watch::Receiver<Duration>,
    events: Option<mpsc::UnboundedSender<Event>>,
) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let keep = *retention.borrow_and_update();
        let before = (clock.now() - chrono_dur(keep)).timestamp_millis();
        let store = store.clone();
        let pruned = tokio::task::spawn_blocking(move || {
            let mut total = 0usize;
            loop {
                match store.prune_evidence(before, 500) {
                    Ok(0) => return Ok(total),
                    Ok(n) => total += n,
                    Err(e) => return Err(e),
                }
            }
        })
        .await;
        match pruned {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => {
                tracing::info!("deleted {n} evidence messages past retention");
                if let Some(tx) = &events {
                    let _ = tx.send(Event::EvidencePruned { messages: n });
                }
            }
            Ok(Err(e)) => tracing::error!("pruning evidence: {e}"),
            Err(e) => tracing::error!("pruning evidence: {e}"),
        }
    }
}

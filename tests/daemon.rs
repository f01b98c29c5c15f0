//! The daemon loop driven with fakes on tokio's paused clock: schedules,
//! catch-up, matching-mode concurrency, PBX changes, reload, stop,
//! maintenance, follow-ups and systemd notifications.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use cidguard::check::result::{CheckResult, Trigger};
use cidguard::config::Expect;
use cidguard::daemon::notify::Notifier;
use cidguard::daemon::{
    self, maintenance, AlertContext, AlertSink, BoxError, CheckRequest, Checker, Clock,
    DaemonError, Deps, Event, FollowUp, PbxProbe, TokioClock,
};
use cidguard::plan::Plan;
use cidguard::sip::Account;
use cidguard::store::{Store, StoredCheck};
use cidguard::verdict::Outcome;

fn utc(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, h, m, 0).unwrap()
}

/// `at` is `want`, give or take the timer's millisecond resolution.
#[track_caller]
fn near(at: DateTime<Utc>, want: DateTime<Utc>) {
    assert!(
        at >= want && at < want + chrono::Duration::seconds(1),
        "at {at}, want {want}"
    );
}

/// A line in a test config: name, registrar, own schedule.
struct L(&'static str, &'static str, Option<&'static str>);

fn config_text(state: &Path, matching: &str, numbers: usize, daemon: &str, lines: &[L]) -> String {
    let nums: Vec<String> = (0..numbers)
        .map(|i| format!("\"+61 3 9999 00{i:02}\""))
        .collect();
    let mut s = format!(
        r#"
[organisation]
name = "Eastside Women's Refuge"
region = "AU"
numbers = ["+61 3 7010 0142"]

[endpoint]
numbers = [{}]
matching = "{matching}"

[daemon]
state_dir = "{}"
jitter = "0s"
{daemon}
"#,
        nums.join(", "),
        state.display()
    );
    for L(name, registrar, schedule) in lines {
        s.push_str(&format!(
            "\n[[line]]\nname = \"{name}\"\nexpect = \"withheld\"\n"
        ));
        if let Some(sch) = schedule {
            s.push_str(&format!("schedule = \"{sch}\"\n"));
        }
        s.push_str(&format!(
            "[line.account]\nregistrar = \"{registrar}\"\nusername = \"201\"\npassword = \"s3cret\"\n"
        ));
    }
    s
}

#[derive(Default)]
struct FakeState {
    in_flight: usize,
    max_in_flight: usize,
    slots: BTreeSet<usize>,
    slot_clash: bool,
    calls: Vec<(String, Trigger, DateTime<Utc>)>,
}

/// Takes `hold` per check (per line if set), then returns `outcome`.
struct FakeChecker {
    clock: Arc<dyn Clock>,
    hold: Mutex<HashMap<String, Duration>>,
    default_hold: Duration,
    outcome: Mutex<HashMap<String, Outcome>>,
    refuse_configure: Mutex<bool>,
    state: Mutex<FakeState>,
}

impl FakeChecker {
    fn new(clock: Arc<dyn Clock>, default_hold: Duration) -> Arc<FakeChecker> {
        Arc::new(FakeChecker {
            clock,
            hold: Mutex::default(),
            default_hold,
            outcome: Mutex::default(),
            refuse_configure: Mutex::new(false),
            state: Mutex::default(),
        })
    }
}

/// Marks a check finished even when its future is dropped.
struct InFlight<'a>(&'a FakeChecker, usize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut s = self.0.state.lock().unwrap();
        s.in_flight -= 1;
        s.slots.remove(&self.1);
    }
}

#[async_trait]
impl Checker for FakeChecker {
    async fn configure(&self, _plan: &Arc<Plan>) -> Result<(), BoxError> {
        if *self.refuse_configure.lock().unwrap() {
            return Err("can't bind udp:127.0.0.1:5080: address in use".into());
        }
        Ok(())
    }

    async fn check(&self, req: CheckRequest) -> CheckResult {
        let started = self.clock.now();
        {
            let mut s = self.state.lock().unwrap();
            s.in_flight += 1;
            s.max_in_flight = s.max_in_flight.max(s.in_flight);
            if !s.slots.insert(req.slot) {
                s.slot_clash = true;
            }
            s.calls
                .push((req.line.clone(), req.trigger.clone(), started));
        }
        let _guard = InFlight(self, req.slot);
        let hold = self
            .hold
            .lock()
            .unwrap()
            .get(&req.line)
            .copied()
            .unwrap_or(self.default_hold);
        tokio::time::sleep(hold).await;
        let outcome = self
            .outcome
            .lock()
            .unwrap()
            .get(&req.line)
            .copied()
            .unwrap_or(Outcome::Pass);
        let mut r = CheckResult::inconclusive(
            &req.line,
            Expect::Withheld,
            std::time::SystemTime::now(),
            "fake".into(),
            req.trigger,
        );
        r.outcome = outcome;
        r.reason = (outcome == Outcome::Inconclusive).then(|| "fake".into());
        r.started_at = started.to_rfc3339();
        r.duration_ms = hold.as_millis() as u64;
        r
    }
}

/// Answers each registrar's software from a table; reports each call.
struct FakeProbe {
    software: Mutex<HashMap<String, String>>,
    calls: mpsc::UnboundedSender<String>,
}

#[async_trait]
impl PbxProbe for FakeProbe {
    async fn software(
        &self,
        registrar: &str,
        account: &Account,
    ) -> Result<Option<String>, BoxError> {
        assert_eq!(account.registrar, registrar);
        let _ = self.calls.send(registrar.to_string());
        Ok(self.software.lock().unwrap().get(registrar).cloned())
    }
}

/// Records what the alert side is told; asks for a confirmation of each
/// scheduled failure after `confirm_after`.
#[derive(Default)]
struct FakeAlerts {
    results: Mutex<Vec<(i64, String, bool)>>,
    maintenance: Mutex<Vec<bool>>,
    confirm_after: Option<Duration>,
}

impl AlertSink for FakeAlerts {
    fn on_result(&self, check: &StoredCheck, ctx: &AlertContext<'_>) -> Vec<FollowUp> {
        // The stored check is the one in the history.
        assert!(ctx.store.check(check.id).unwrap().is_some());
        self.results.lock().unwrap().push((
            check.id,
            check.result.line.clone(),
            ctx.in_maintenance,
        ));
        match (
            self.confirm_after,
            check.result.outcome,
            &check.result.trigger,
        ) {
            (Some(after), Outcome::Fail, Trigger::Schedule) => vec![FollowUp::Recheck {
                line: check.result.line.clone(),
                trigger: Trigger::Confirm,
                after,
            }],
            _ => Vec::new(),
        }
    }

    fn maintenance_changed(&self, active: bool, ctx: &AlertContext<'_>) {
        assert_eq!(ctx.in_maintenance, active);
        self.maintenance.lock().unwrap().push(active);
    }
}

struct Harness {
    _dir: Option<tempfile::TempDir>,
    state: PathBuf,
    config_path: PathBuf,
    clock: Arc<TokioClock>,
    checker: Arc<FakeChecker>,
    probe: Arc<FakeProbe>,
    probe_calls: mpsc::UnboundedReceiver<String>,
    alerts: Arc<FakeAlerts>,
    events: mpsc::UnboundedReceiver<Event>,
    seen: Vec<Event>,
    reload: mpsc::Sender<()>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), DaemonError>>>,
}

struct Opts {
    start: DateTime<Utc>,
    hold: Duration,
    notifier: Notifier,
    alerts: FakeAlerts,
    software: HashMap<String, String>,
    /// Reuse this directory (a restart).
    dir: Option<(Option<tempfile::TempDir>, PathBuf)>,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            start: utc(0, 5),
            hold: Duration::from_secs(5),
            notifier: Notifier::disabled(),
            alerts: FakeAlerts::default(),
            software: HashMap::new(),
            dir: None,
        }
    }
}

impl Harness {
    /// `config` gets the state directory's path.
    async fn start(config: impl Fn(&Path) -> String, o: Opts) -> Harness {
        let (dir, root) = match o.dir {
            Some(d) => d,
            None => {
                let t = tempfile::tempdir().unwrap();
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let state = root.join("state");
        let config_path = root.join("cidguard.toml");
        std::fs::write(&config_path, config(&state)).unwrap();
        let clock = Arc::new(TokioClock::starting_at(o.start));
        let checker = FakeChecker::new(clock.clone(), o.hold);
        let (calls_tx, probe_calls) = mpsc::unbounded_channel();
        let probe = Arc::new(FakeProbe {
            software: Mutex::new(o.software),
            calls: calls_tx,
        });
        let alerts = Arc::new(o.alerts);
        let (ev_tx, events) = mpsc::unbounded_channel();
        let deps = Deps {
            checker: checker.clone(),
            probe: probe.clone(),
            alerts: alerts.clone(),
            clock: clock.clone(),
            notifier: o.notifier,
            events: Some(ev_tx),
            runs: None,
        };
        let (reload, reload_rx) = mpsc::channel(4);
        let (stop, stop_rx) = oneshot::channel::<()>();
        let path = config_path.clone();
        let task = tokio::spawn(async move {
            daemon::run(&path, deps, reload_rx, async {
                let _ = stop_rx.await;
            })
            .await
        });
        let mut h = Harness {
            _dir: dir,
            state,
            config_path,
            clock,
            checker,
            probe,
            probe_calls,
            alerts,
            events,
            seen: Vec::new(),
            reload,
            stop: Some(stop),
            task: Some(task),
        };
        h.wait("ready", Duration::from_secs(5), |e| *e == Event::Ready)
            .await;
        h
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The next event matching `pred`, within `within` of (virtual) time.
    async fn wait(&mut self, what: &str, within: Duration, pred: impl Fn(&Event) -> bool) -> Event {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) => {
                    self.seen.push(e.clone());
                    if pred(&e) {
                        return e;
                    }
                }
                Ok(None) => panic!(
                    "the daemon ended while waiting for {what}; seen {:#?}",
                    self.seen
                ),
                Err(_) => panic!("no {what} within {within:?}; seen {:#?}", self.seen),
            }
        }
    }

    /// Events until `within` passes with none matching `pred` (fails if one does).
    async fn none_for(&mut self, what: &str, within: Duration, pred: impl Fn(&Event) -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) => {
                    assert!(
                        !pred(&e),
                        "unexpected {what}: {e:?} at {}",
                        self.clock.now()
                    );
                    self.seen.push(e);
                }
                Ok(None) | Err(_) => return,
            }
        }
    }

    async fn started(&mut self, within: Duration) -> (String, Trigger, usize, DateTime<Utc>) {
        match self
            .wait("a check", within, |e| {
                matches!(e, Event::CheckStarted { .. })
            })
            .await
        {
            Event::CheckStarted {
                line,
                trigger,
                slot,
            } => (line, trigger, slot, self.clock.now()),
            _ => unreachable!(),
        }
    }

    async fn recorded(&mut self, within: Duration) -> (i64, String, bool) {
        match self
            .wait("a recorded check", within, |e| {
                matches!(e, Event::Recorded { .. })
            })
            .await
        {
            Event::Recorded {
                id,
                line,
                interrupted,
                ..
            } => (id, line, interrupted),
            _ => unreachable!(),
        }
    }

    async fn stop(&mut self) -> Result<(), DaemonError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .expect("the daemon did not stop within 120 s")
            .unwrap()
    }

    fn store(&self) -> Store {
        Store::open(&self.state.join(Store::FILE_NAME)).unwrap()
    }

    /// Keep the directory for a restart.
    fn into_dir(mut self) -> (Option<tempfile::TempDir>, PathBuf) {
        let root = self.config_path.parent().unwrap().to_path_buf();
        (self._dir.take(), root)
    }
}

const SECOND: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test(start_paused = true)]
async fn scheduled_checks_fire_on_time() {
    let mut h = Harness::start(
        |s| {
            config_text(
                s,
                "numbers",
                2,
                "",
                &[
                    L("a", "sip:pbx1", Some("*/15 * * * *")),
                    L("b", "sip:pbx1", Some("0 * * * *")),
                ],
            )
        },
        Opts::default(),
    )
    .await;
    // 00:15: only a; 00:30: a; 00:45: a; 01:00: both.
    let mut got = Vec::new();
    for _ in 0..5 {
        let (line, trigger, _, at) = h.started(HOUR).await;
        assert_eq!(trigger, Trigger::Schedule);
        got.push((line, at));
    }
    let want = [
        ("a", utc(0, 15)),
        ("a", utc(0, 30)),
        ("a", utc(0, 45)),
        ("a", utc(1, 0)),
        ("b", utc(1, 0)),
    ];
    for ((line, at), (wl, wt)) in got.iter().zip(want) {
        assert_eq!(line, wl);
        near(*at, wt);
    }
    let (id, _, interrupted) = h.recorded(HOUR).await;
    assert!(!interrupted);
    let stored = h.store().check(id).unwrap().unwrap();
    assert_eq!(stored.result.trigger, Trigger::Schedule);
    h.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn jitter_delays_within_its_bound() {
    let mut h = Harness::start(
        |s| {
            config_text(s, "timing", 1, "", &[L("a", "sip:pbx1", Some("0 * * * *"))])
                .replace("jitter = \"0s\"", "jitter = \"10m\"")
        },
        Opts::default(),
    )
    .await;
    for hour in 1..=4 {
        let (_, _, _, at) = h.started(2 * HOUR).await;
        assert!(
            at >= utc(hour, 0) && at <= utc(hour, 10),
            "run for {hour}:00 started at {at}"
        );
    }
    h.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn missed_checks_are_caught_up_once_after_downtime() {
    let cfg = |s: &Path| config_text(s, "timing", 1, "", &[L("a", "sip:pbx1", Some("0 * * * *"))]);
    // First start at 00:05, stopped at once: the line is known from 00:05.
    let mut h = Harness::start(cfg, Opts::default()).await;
    h.stop().await.unwrap();
    let dir = h.into_dir();
    // Down until 03:10: 01:00, 02:00 and 03:00 were missed; one check now.
    let mut h = Harness::start(
        cfg,
        Opts {
            start: utc(3, 10),
            dir: Some(dir),
            ..Opts::default()
        },
    )
    .await;
    let (line, trigger, _, at) = h.started(SECOND).await;
    assert_eq!((line.as_str(), trigger), ("a", Trigger::Schedule));
    assert!(at < utc(3, 11));
    let (_, _, interrupted) = h.recorded(HOUR).await;
    assert!(!interrupted);
    assert_eq!(
        h.store().last_slots().unwrap().get("a"),
        Some(&utc(3, 0).timestamp_millis())
    );
    // Only once: the next check is the 04:00 one.
    let (_, _, _, at) = h.started(HOUR).await;
    assert!(at >= utc(4, 0), "second check at {at}");
    h.stop().await.unwrap();
    let dir = h.into_dir();
    // A restart with nothing missed runs nothing early.
    let mut h = Harness::start(
        cfg,
        Opts {
            start: utc(4, 30),
            dir: Some(dir),
            ..Opts::default()
        },
    )
    .await;
    let (_, _, _, at) = h.started(HOUR).await;
    assert!(at >= utc(5, 0), "check at {at}");
    h.stop().await.unwrap();
}

async fn max_concurrency(matching: &str, numbers: usize) -> usize {
    let names = ["l1", "l2", "l3", "l4", "l5"];
    let mut h = Harness::start(
        |s| {
            let lines: Vec<L> = names.iter().map(|n| L(n, "sip:pbx1", None)).collect();
            config_text(s, matching, numbers, "", &lines)
        },
        Opts {
            hold: Duration::from_secs(20),
            ..Opts::default()
        },
    )
    .await;
    let mut lines = BTreeSet::new();
    for _ in 0..names.len() {
        let (_, line, _) = h.recorded(2 * HOUR).await;
        lines.insert(line);
    }
    assert_eq!(lines.len(), names.len(), "every line checked once");
    h.stop().await.unwrap();
    let s = h.checker.state.lock().unwrap();
    assert!(!s.slot_clash, "two checks in flight shared a slot");
    s.max_in_flight
}

#[tokio::test(start_paused = true)]
async fn matching_mode_limits_checks_in_flight() {
    assert_eq!(max_concurrency("timing", 1).await, 1);
    assert_eq!(max_concurrency("media", 1).await, 1);
    assert_eq!(max_concurrency("numbers", 3).await, 3);
}

#[tokio::test(start_paused = true)]
async fn pbx_software_change_checks_that_pbxs_lines_now() {
    let yearly = Some("0 0 1 7 *");
    let mut h = Harness::start(
        |s| {
            config_text(
                s,
                "numbers",
                3,
                "pbx_poll = \"1m\"",
                &[
                    L("a", "sip:pbx1", yearly),
                    L("b", "sip:pbx1", yearly),
                    L("c", "sip:pbx2", yearly),
                ],
            )
        },
        Opts {
            software: HashMap::from([
                ("sip:pbx1".to_string(), "FreePBX 16.0.40".to_string()),
                ("sip:pbx2".to_string(), "Asterisk 20".to_string()),
            ]),
            ..Opts::default()
        },
    )
    .await;
    // The first poll (at start) only learns the versions.
    for _ in 0..2 {
        tokio::time::timeout(SECOND, h.probe_calls.recv())
            .await
            .unwrap();
    }
    h.probe
        .software
        .lock()
        .unwrap()
        .insert("sip:pbx1".into(), "FreePBX 17.0.2".into());
    let e = h
        .wait("a PBX change", 2 * Duration::from_secs(60), |e| {
            matches!(e, Event::PbxChanged { .. })
        })
        .await;
    assert_eq!(
        e,
        Event::PbxChanged {
            registrar: "sip:pbx1".into(),
            from: "FreePBX 16.0.40".into(),
            to: "FreePBX 17.0.2".into()
        }
    );
    let want = Trigger::PbxChange {
        from: Some("FreePBX 16.0.40".into()),
        to: "FreePBX 17.0.2".into(),
    };
    let mut lines = BTreeSet::new();
    for _ in 0..2 {
        let (line, trigger, _, _) = h.started(SECOND).await;
        assert_eq!(trigger, want);
        lines.insert(line);
    }
    assert_eq!(lines, BTreeSet::from(["a".to_string(), "b".to_string()]));
    h.none_for(
        "check of c",
        10 * Duration::from_secs(60),
        |e| matches!(e, Event::CheckStarted { line, .. } if line == "c"),
    )
    .await;
    let changes = h.store().pbx_changes(None, 10).unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].registrar, "sip:pbx1");
    h.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn sighup_reload_applies_a_valid_config_and_refuses_an_invalid_one() {
    let yearly = Some("0 0 1 7 *");
    let sock_dir = tempfile::tempdir().unwrap();
    let sock_path = sock_dir.path().join("notify.sock");
    let sock = tokio::net::UnixDatagram::bind(&sock_path).unwrap();
    let mut h = Harness::start(
        |s| config_text(s, "timing", 1, "", &[L("a", "sip:pbx1", yearly)]),
        Opts {
            notifier: Notifier::to_socket(sock_path.to_str().unwrap(), None).unwrap(),
            ..Opts::default()
        },
    )
    .await;
    let state = h.state.clone();
    let mut buf = vec![0u8; 4096];
    let mut recv = async || {
        let n = tokio::time::timeout(SECOND, sock.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    assert!(recv()
        .await
        .starts_with("READY=1\nSTATUS=ready: 1 line scheduled"));

    // Valid: a new line on a ten-minute schedule.
    std::fs::write(
        &h.config_path,
        config_text(
            &state,
            "timing",
            1,
            "",
            &[
                L("a", "sip:pbx1", yearly),
                L("b", "sip:pbx1", Some("*/10 * * * *")),
            ],
        ),
    )
    .unwrap();
    h.reload.send(()).await.unwrap();
    let e = h
        .wait("a reload", SECOND, |e| matches!(e, Event::Reloaded { .. }))
        .await;
    assert!(
        matches!(&e, Event::Reloaded { ok: true, message } if message.contains("2 lines")),
        "{e:?}"
    );
    assert_eq!(recv().await, "RELOADING=1");
    assert!(recv()
        .await
        .starts_with("READY=1\nSTATUS=configuration reloaded"));
    let (line, _, _, at) = h.started(HOUR).await;
    assert_eq!(line, "b");
    near(at, utc(0, 10));

    // Invalid: refused with the field named; the old config keeps running.
    std::fs::write(
        &h.config_path,
        config_text(
            &state,
            "timing",
            1,
            "time_zone = \"Mars/Olympus\"",
            &[L("a", "sip:pbx1", yearly)],
        ),
    )
    .unwrap();
    h.reload.send(()).await.unwrap();
    let e = h
        .wait("a reload", SECOND, |e| matches!(e, Event::Reloaded { .. }))
        .await;
    assert!(
        matches!(&e, Event::Reloaded { ok: false, message } if message.contains("daemon.time_zone")),
        "{e:?}"
    );
    let (line, _, _, at) = h.started(HOUR).await;
    assert_eq!(line, "b", "b still on its schedule");
    near(at, utc(0, 20));

    // Refused by the checker (it can't apply the new endpoint): same.
    std::fs::write(
        &h.config_path,
        config_text(&state, "timing", 1, "", &[L("a", "sip:pbx1", yearly)]),
    )
    .unwrap();
    *h.checker.refuse_configure.lock().unwrap() = true;
    h.reload.send(()).await.unwrap();
    let e = h
        .wait("a reload", SECOND, |e| matches!(e, Event::Reloaded { .. }))
        .await;
    assert!(
        matches!(&e, Event::Reloaded { ok: false, message } if message.contains("address in use")),
        "{e:?}"
    );
    let (line, _, _, at) = h.started(HOUR).await;
    assert_eq!(line, "b");
    near(at, utc(0, 30));
    h.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn stop_gives_a_grace_period_then_records_interrupted_checks() {
    let mut h = Harness::start(
        |s| {
            config_text(
                s,
                "numbers",
                2,
                "grace = \"20s\"",
                &[
                    L("quick", "sip:pbx1", Some("0 * * * *")),
                    L("stuck", "sip:pbx1", Some("0 * * * *")),
                ],
            )
        },
        Opts::default(),
    )
    .await;
    h.checker
        .hold
        .lock()
        .unwrap()
        .insert("quick".into(), Duration::from_secs(10));
    h.checker
        .hold
        .lock()
        .unwrap()
        .insert("stuck".into(), Duration::from_secs(3600));
    h.started(HOUR).await;
    h.started(SECOND).await;
    let stop_at = h.now();
    let seen_before_stop = h.seen.len();
    let stop = h.stop.take().unwrap();
    let _ = stop.send(());
    // The quick one finishes within the grace period and counts.
    let (id, line, interrupted) = h.recorded(15 * SECOND).await;
    assert_eq!((line.as_str(), interrupted), ("quick", false));
    let (sid, line, interrupted) = h.recorded(30 * SECOND).await;
    assert_eq!((line.as_str(), interrupted), ("stuck", true));
    assert!(h.now() >= stop_at + chrono::Duration::seconds(20));
    h.wait("stopped", SECOND, |e| *e == Event::Stopped).await;
    assert!(
        !h.seen[seen_before_stop..]
            .iter()
            .any(|e| matches!(e, Event::CheckStarted { .. })),
        "no new checks after the stop: {:?}",
        &h.seen[seen_before_stop..]
    );
    h.task.take().unwrap().await.unwrap().unwrap();
    let store = h.store();
    let stuck = store.check(sid).unwrap().unwrap();
    assert!(stuck.interrupted);
    assert_eq!(stuck.result.outcome, Outcome::Inconclusive);
    assert!(stuck.result.reason.unwrap().contains("interrupted"));
    assert!(!store.check(id).unwrap().unwrap().interrupted);
    let slots = store.last_slots().unwrap();
    assert_eq!(slots["quick"], utc(1, 0).timestamp_millis());
    assert_eq!(
        slots["stuck"],
        utc(0, 5).timestamp_millis(),
        "an interrupted check stays due"
    );
    assert_eq!(
        h.alerts.results.lock().unwrap().len(),
        1,
        "only the real result is alerted on"
    );
}

#[tokio::test(start_paused = true)]
async fn maintenance_holds_alerts_but_checks_go_on() {
    let mut h = Harness::start(
        |s| {
            config_text(
                s,
                "timing",
                1,
                "[[daemon.maintenance]]\nstart = \"2025-01-01 01:00\"\nend = 2025-01-01T02:00:00Z\nreason = \"PBX upgrade\"",
                &[L("a", "sip:pbx1", Some("*/30 * * * *"))],
            )
        },
        Opts::default(),
    )
    .await;
    let mut windows = Vec::new();
    loop {
        let e = h
            .wait("a change", 3 * HOUR, |e| {
                matches!(e, Event::MaintenanceChanged { .. } | Event::Recorded { .. })
            })
            .await;
        if let Event::MaintenanceChanged { active } = e {
            windows.push((active, h.now()));
        }
        if h.now() >= utc(2, 30) {
            break;
        }
    }
    assert_eq!(windows.len(), 2, "{windows:?}");
    assert!(windows[0].0 && !windows[1].0);
    near(windows[0].1, utc(1, 0));
    near(windows[1].1, utc(2, 0));
    assert_eq!(*h.alerts.maintenance.lock().unwrap(), [true, false]);
    let told: Vec<bool> = h
        .alerts
        .results
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.2)
        .collect();
    // Checks at 00:30, 01:00, 01:30, 02:00, 02:30, each taking 5 s.
    assert_eq!(told, [false, true, true, false, false]);
    // A window set through the API counts too.
    let store = h.store();
    let plan = Plan::load(&h.config_path).unwrap();
    store
        .add_maintenance(
            utc(5, 0).timestamp_millis(),
            utc(6, 0).timestamp_millis(),
            None,
        )
        .unwrap();
    assert!(maintenance::in_maintenance(&plan, &store, utc(5, 30)).unwrap());
    assert!(!maintenance::in_maintenance(&plan, &store, utc(6, 0)).unwrap());
    assert!(maintenance::in_maintenance(&plan, &store, utc(1, 59)).unwrap());
    h.wait("the API window", 4 * HOUR, |e| {
        *e == Event::MaintenanceChanged { active: true }
    })
    .await;
    assert!(h.now() >= utc(5, 0) && h.now() < utc(5, 2), "{}", h.now());
    h.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn alert_follow_ups_recheck_the_line() {
    let mut h = Harness::start(
        |s| config_text(s, "timing", 1, "", &[L("a", "sip:pbx1", Some("0 * * * *"))]),
        Opts {
            alerts: FakeAlerts {
                confirm_after: Some(Duration::from_secs(120)),
                ..FakeAlerts::default()
            },
            ..Opts::default()
        },
    )
    .await;
    h.checker
        .outcome
        .lock()
        .unwrap()
        .insert("a".into(), Outcome::Fail);
    let (_, t, _, _) = h.started(HOUR).await;
    assert_eq!(t, Trigger::Schedule);
    let (_, t, _, at) = h.started(HOUR).await;
    assert_eq!(t, Trigger::Confirm);
    // 01:00 + 5 s check + 2 min.
    assert!(at >= utc(1, 2) && at < utc(1, 3), "{at}");
    h.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn notifies_ready_watchdog_and_sweep_status() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = tokio::net::UnixDatagram::bind(&path).unwrap();
    let mut h = Harness::start(
        |s| {
            config_text(
                s,
                "numbers",
                2,
                "",
                &[L("a", "sip:pbx1", None), L("b", "sip:pbx1", None)],
            )
        },
        Opts {
            notifier: Notifier::to_socket(path.to_str().unwrap(), Some(Duration::from_secs(30)))
                .unwrap(),
            ..Opts::default()
        },
    )
    .await;
    let mut buf = vec![0u8; 4096];
    let mut msgs = Vec::new();
    let mut watchdogs = Vec::new();
    // Until the 01:00 sweep is reported.
    loop {
        let n = tokio::time::timeout(2 * HOUR, sock.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let m = String::from_utf8_lossy(&buf[..n]).to_string();
        if m == "WATCHDOG=1" {
            watchdogs.push(h.now());
        }
        let done = m.starts_with("STATUS=last sweep");
        msgs.push(m);
        if done {
            break;
        }
    }
    assert!(
        msgs[0].starts_with(
            "READY=1\nSTATUS=ready: 2 lines scheduled; next check 2025-01-01 01:00 UTC"
        ),
        "{msgs:?}"
    );
    assert_eq!(
        msgs.last().unwrap(),
        "STATUS=last sweep 2025-01-01 01:00 UTC: 2 checked, 2 pass, 0 fail, 0 inconclusive; next check 2025-01-01 02:00 UTC"
    );
    // Every 15 s (half of WatchdogSec), never more than that apart.
    assert!(watchdogs.len() >= 200, "{}", watchdogs.len());
    for w in watchdogs.windows(2) {
        assert!(
            w[1] - w[0] <= chrono::Duration::seconds(16),
            "{} -> {}",
            w[0],
            w[1]
        );
    }
    h.stop().await.unwrap();
    let mut rest = Vec::new();
    while let Ok(Ok(n)) = tokio::time::timeout(SECOND, sock.recv(&mut buf)).await {
        rest.push(String::from_utf8_lossy(&buf[..n]).to_string());
    }
    assert!(rest.iter().any(|m| m.starts_with("STOPPING=1")), "{rest:?}");
}

#[test]
fn notify_reaches_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let name = format!(
        "cidguard-test-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    );
    let sock =
        UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = Notifier::to_socket(&format!("@{name}"), None).unwrap();
    n.status("checking\nREADY=1");
    let mut buf = [0u8; 256];
    let len = sock.recv(&mut buf).unwrap();
    assert_eq!(&buf[..len], b"STATUS=checking READY=1");
}

#[tokio::test]
async fn a_bad_config_or_state_dir_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[organisation]\nname = \"x\"\n").unwrap();
    let deps = || Deps {
        checker: Arc::new(daemon::UnavailableChecker),
        probe: Arc::new(daemon::NoProbe),
        alerts: Arc::new(daemon::NoAlerts),
        clock: Arc::new(daemon::SystemClock),
        notifier: Notifier::disabled(),
        events: None,
        runs: None,
    };
    let (_tx, rx) = mpsc::channel(1);
    let r = daemon::run(&cfg, deps(), rx, std::future::pending::<()>()).await;
    assert!(matches!(r, Err(DaemonError::Config(_))), "{r:?}");
    // A state directory that can't be created (a file is in the way).
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "").unwrap();
    std::fs::write(
        &cfg,
        config_text(
            &blocker.join("state"),
            "timing",
            1,
            "",
            &[L("a", "sip:pbx1", None)],
        ),
    )
    .unwrap();
    let (_tx, rx) = mpsc::channel(1);
    let r = daemon::run(&cfg, deps(), rx, std::future::pending::<()>()).await;
    assert!(matches!(r, Err(DaemonError::Store(_))), "{r:?}");
}

#[tokio::test(start_paused = true)]
async fn expired_evidence_is_pruned_in_the_background() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().to_path_buf();
    {
        let store = Store::open_in(&path.join("state")).unwrap();
        let mut r = crate::store::result_at("a", Outcome::Fail, utc(0, 0).timestamp_millis());
        r.evidence = vec![
            cidguard::check::result::EvidenceMessage {
                side: "endpoint".into(),
                direction: "received".into(),
                at_ms: 0,
                flow: "udp".into(),
                text: "INVITE".into(),
            };
            3
        ];
        let old = (utc(0, 0) - chrono::Duration::days(100)).timestamp_millis();
        let rec = cidguard::store::Record {
            recorded_at_ms: old,
            ..Default::default()
        };
        store.record_check(&r, &rec).unwrap();
        let rec = cidguard::store::Record {
            recorded_at_ms: utc(0, 0).timestamp_millis(),
            ..Default::default()
        };
        store.record_check(&r, &rec).unwrap();
    }
    let mut h = Harness::start(
        |s| {
            config_text(
                s,
                "timing",
                1,
                "evidence_retention = \"30d\"",
                &[L("a", "sip:pbx1", None)],
            )
        },
        Opts {
            dir: Some((Some(root), path)),
            ..Opts::default()
        },
    )
    .await;
    let pruned = Event::EvidencePruned { messages: 3 };
    if !h.seen.contains(&pruned) {
        h.wait("pruning", 10 * SECOND, |e| *e == pruned).await;
    }
    let store = h.store();
    let old = store.check(1).unwrap().unwrap();
    assert!(old.evidence_pruned && old.result.findings.len() == 1);
    assert_eq!(store.check(2).unwrap().unwrap().result.evidence.len(), 3);
    h.stop().await.unwrap();
}

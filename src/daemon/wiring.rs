//! The real parts plugged into the daemon: the SIP checker, the OPTIONS
//! probe of each PBX, and alerts on every channel through the durable
//! outbox.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

use super::{AlertContext, AlertSink, BoxError, CheckRequest, Checker, FollowUp, PbxProbe};
use crate::alert::channel::{self, Route};
use crate::alert::{self, step, AlertPolicy, SenderOptions};
use crate::check::result::{CheckResult, Trigger};
use crate::check::run::{self, CheckOptions};
use crate::plan::Plan;
use crate::sip::endpoint::Listeners;
use crate::sip::uac::{Line, LineOptions};
use crate::sip::Account;
use crate::store::{Store, StoredCheck};

/// Places real test calls: owns the endpoint (started on the first plan
/// with an `[endpoint]`, kept across reloads), and checks with the plan in
/// force on the daemon's plan channel.
pub struct SipChecker {
    /// The daemon's plan channel.
    plans: watch::Receiver<Arc<Plan>>,
    /// The endpoint's sockets when they were bound before the start; taken
    /// by the first start.
    listeners: Mutex<Option<Listeners>>,
    /// The running checker, once started.
    inner: tokio::sync::Mutex<Option<Arc<run::Checker>>>,
    /// A clone for `check`, which must not wait on `configure` (shared
    /// with [`SipChecker::stats_source`]).
    ready: Arc<Mutex<Option<Arc<run::Checker>>>>,
}

impl SipChecker {
    /// A checker that follows `plans` and starts its endpoint on
    /// `listeners` (bound from `endpoint.listen` when None).
    pub fn new(plans: watch::Receiver<Arc<Plan>>, listeners: Option<Listeners>) -> SipChecker {
        SipChecker {
            plans,
            listeners: Mutex::new(listeners),
            inner: tokio::sync::Mutex::new(None),
            ready: Arc::new(Mutex::new(None)),
        }
    }

    /// Reads the endpoint's counters once it runs (for /metrics).
    pub fn stats_source(
        &self,
    ) -> Arc<dyn Fn() -> Option<crate::sip::endpoint::EndpointStats> + Send + Sync> {
        let ready = self.ready.clone();
        Arc::new(move || {
            ready
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(|c| c.endpoint_stats())
        })
    }
}

#[async_trait]
impl Checker for SipChecker {
    async fn configure(&self, plan: &Arc<Plan>) -> Result<(), BoxError> {
        let mut inner = self.inner.lock().await;
        if plan.endpoint().is_none() {
            // Nothing to receive test calls: run anyway, so the history and
            // the alerts say plainly that lines can't be tested.
            warn!(
                "no [endpoint] in the config: every check will be inconclusive until one is added"
            );
            return Ok(());
        }
        match inner.as_ref() {
            Some(c) => c.accepts(plan)?,
            None => {
                let listeners = self
                    .listeners
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                let c = Arc::new(
                    run::Checker::follow(
                        plan,
                        self.plans.clone(),
                        listeners,
                        CheckOptions::default(),
                    )
                    .await?,
                );
                *self.ready.lock().unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
                *inner = Some(c);
            }
        }
        Ok(())
    }

    async fn next_call_in(&self) -> Option<CheckResult> {
        let checker = self.ready.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match checker {
            Some(c) => c.next_call_in().await,
            // No endpoint yet: nothing can call in.
            None => std::future::pending().await,
        }
    }

    async fn check(&self, req: CheckRequest) -> CheckResult {
        let checker = self.ready.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match checker {
            Some(c) => c.check_line(&req.line, req.trigger).await,
            None => super::uncheckable(
                req,
                "cidguard's endpoint is not running: add an [endpoint] table so test calls have somewhere to arrive",
            ),
        }
    }
}

/// Every name the alert side keeps a state for: the lines, the devices,
/// and the call-ins from other phones.
fn alerted_names(plan: &Plan) -> Vec<String> {
    plan.lines()
        .iter()
        .map(|l| l.name().to_string())
        .chain(plan.callin().devices().iter().map(|d| d.name().to_string()))
        .chain(
            plan.callin()
                .policy()
                .map(|_| crate::plan::SELFTEST_LINE.to_string()),
        )
        .collect()
}

/// Asks a PBX for OPTIONS and reads its Server / User-Agent.
#[derive(Debug, Default)]
pub struct OptionsProbe;

#[async_trait]
impl PbxProbe for OptionsProbe {
    async fn software(
        &self,
        _registrar: &str,
        account: &Account,
    ) -> Result<Option<String>, BoxError> {
        let line = Line::new(account, LineOptions::default()).await?;
        let r = line.options().await;
        line.close();
        let (_status, server) = r?;
        Ok(server)
    }
}

/// Alerts on every configured channel: each recorded check taken in by the
/// pure state machine, its new state and its notices (one outbox delivery
/// per channel that wants it) written in one transaction, and a background
/// sender per channel. Checks recorded before a crash but not yet taken in
/// are taken in at start ([`AlertSink::catch_up`]) and before the line's
/// next step.
pub struct ChannelAlerts {
    /// The config file, named in the emails' re-check command.
    config_path: PathBuf,
    /// What is in force.
    active: Mutex<Active>,
    /// Tells the running senders to stop when a new configuration replaces
    /// them.
    sender_stop: Mutex<Option<watch::Sender<bool>>>,
    /// The running senders (one task that ends when they all have): the
    /// next configuration's senders start only after these stopped, so a
    /// delivery in flight during a reload is never sent twice.
    senders: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// How long a reload waits for the previous senders to finish what they
/// are sending (each step of a delivery has its own time limit).
const SENDER_STOP_WAIT: Duration = Duration::from_secs(120);

/// The name the daemon's alert side had when email was its only channel.
pub type EmailAlerts = ChannelAlerts;

/// The policy and routes in force.
#[derive(Default)]
struct Active {
    /// When to alert; None when alerts are off (no `[alerts]`).
    policy: Option<Arc<AlertPolicy>>,
    /// Which channel wants which notice.
    routes: Vec<Route>,
    /// Wakes each running sender.
    wakes: Vec<Arc<Notify>>,
}

impl ChannelAlerts {
    pub fn new(config_path: &Path) -> ChannelAlerts {
        ChannelAlerts {
            config_path: config_path.to_path_buf(),
            active: Mutex::new(Active::default()),
            sender_stop: Mutex::new(None),
            senders: Mutex::new(None),
        }
    }

    fn snapshot(&self) -> (Option<Arc<AlertPolicy>>, Vec<Route>, Vec<Arc<Notify>>) {
        let a = self.active.lock().unwrap_or_else(|p| p.into_inner());
        (a.policy.clone(), a.routes.clone(), a.wakes.clone())
    }

    /// Take in a line's unseen checks; the follow-ups they ask for.
    fn take_in(&self, line: &str, ctx: &AlertContext<'_>) -> Vec<FollowUp> {
        let (policy, routes, wakes) = self.snapshot();
        let taken = match step::take_in_line(
            &**ctx.store,
            policy.as_deref(),
            &routes,
            line,
            ctx.now,
            ctx.in_maintenance,
        ) {
            Ok(t) => t,
            Err(e) => {
                warn!(%line, error = %e, "the alert side could not take a result in; it will at the line's next result or at restart");
                return Vec::new();
            }
        };
        for (n, to) in &taken.queued {
            info!(kind = %n.kind, %line, key = %n.key, channels = %to.join(", "), "alert queued");
        }
        for n in &taken.held {
            info!(kind = %n.kind, %line, key = %n.key, "alert held for the maintenance window");
        }
        if !taken.queued.is_empty() {
            for w in &wakes {
                w.notify_one();
            }
        }
        if taken.recheck {
            vec![FollowUp::Recheck {
                line: line.to_string(),
                trigger: Trigger::Confirm,
                after: Duration::ZERO,
            }]
        } else {
            Vec::new()
        }
    }
}

impl AlertSink for ChannelAlerts {
    fn configure(&self, store: &Arc<Store>, plan: &Arc<Plan>) {
        let config = plan.config();
        // Stop the senders of the previous configuration, if any.
        if let Some(stop) = self
            .sender_stop
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = stop.send(true);
        }
        let Some(alerts) = &config.alerts else {
            *self.active.lock().unwrap_or_else(|p| p.into_inner()) = Active::default();
            return;
        };
        let policy = Arc::new(AlertPolicy::from_plan(plan));
        let routes = channel::routes(config);
        let (stop, stopped) = watch::channel(false);
        let mut wakes = Vec::new();
        let mut runs = Vec::new();
        for built in channel::build_each(config, &self.config_path) {
            let ch = match built {
                Ok(c) => c,
                Err(e) => {
                    // Its notices are still queued: they wait in the outbox
                    // until the channel can be set up (fix it, then reload).
                    tracing::error!(error = %e, "an alert channel can't be set up; its alerts wait in the outbox");
                    continue;
                }
            };
            let mut opts = SenderOptions::from_config(alerts);
            let wake = Arc::new(Notify::new());
            opts.wake = wake.clone();
            wakes.push(wake);
            runs.push((ch, opts));
        }
        let previous = self
            .senders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let store = store.clone();
        let task = tokio::spawn(async move {
            if let Some(p) = previous {
                if tokio::time::timeout(SENDER_STOP_WAIT, p).await.is_err() {
                    warn!("the previous alert senders did not stop in time; starting the new ones");
                }
            }
            let mut set = tokio::task::JoinSet::new();
            for (ch, opts) in runs {
                let store = store.clone();
                let mut stopped = stopped.clone();
                set.spawn(async move {
                    let name = ch.name().to_string();
                    let stats = alert::run_sender(store, ch, opts, async move {
                        while !*stopped.borrow() {
                            if stopped.changed().await.is_err() {
                                break;
                            }
                        }
                    })
                    .await;
                    info!(channel = %name, ?stats, "alert sender stopped");
                });
            }
            while set.join_next().await.is_some() {}
        });
        *self.senders.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        *self.sender_stop.lock().unwrap_or_else(|p| p.into_inner()) = Some(stop);
        *self.active.lock().unwrap_or_else(|p| p.into_inner()) = Active {
            policy: Some(policy),
            routes,
            wakes,
        };
    }

    fn on_result(&self, check: &StoredCheck, ctx: &AlertContext<'_>) -> Vec<FollowUp> {
        self.take_in(&check.result.line, ctx)
    }

    fn catch_up(&self, ctx: &AlertContext<'_>) -> Vec<FollowUp> {
        let lines = alerted_names(ctx.plan);
        lines.iter().flat_map(|l| self.take_in(l, ctx)).collect()
    }

    fn tick(&self, ctx: &AlertContext<'_>) {
        let (policy, routes, wakes) = self.snapshot();
        if policy.is_none() {
            return;
        }
        match step::device_reminders(&**ctx.store, &routes, ctx.plan.callin().devices(), ctx.now) {
            Ok(queued) => {
                for (n, to) in &queued {
                    info!(kind = %n.kind, line = ?n.line, key = %n.key, channels = %to.join(", "), "alert queued");
                }
                if !queued.is_empty() {
                    for w in &wakes {
                        w.notify_one();
                    }
                }
            }
            Err(e) => warn!(error = %e, "can't check the devices' reminders"),
        }
    }

    fn maintenance_changed(&self, active: bool, ctx: &AlertContext<'_>) {
        if active {
            return;
        }
        let (policy, routes, wakes) = self.snapshot();
        let Some(policy) = policy else { return };
        let lines = alerted_names(ctx.plan);
        match step::summarise_maintenance(&**ctx.store, &policy, &routes, &lines, ctx.now) {
            Ok(Some((n, to))) => {
                info!(kind = %n.kind, key = %n.key, channels = %to.join(", "), "alert queued");
                for w in &wakes {
                    w.notify_one();
                }
            }
            Ok(None) => {}
            Err(e) => warn!(error = %e, "can't queue the maintenance summary"),
        }
    }
}

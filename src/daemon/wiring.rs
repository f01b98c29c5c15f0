//! The real parts plugged into the daemon: the SIP checker, the OPTIONS
//! probe of each PBX, and email alerts through the durable outbox.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

use super::{AlertContext, AlertSink, BoxError, CheckRequest, Checker, FollowUp, PbxProbe};
use crate::alert::{self, Action, AlertPolicy, LineAlertState, Mailer, OutboxStore, SenderOptions};
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
    /// A clone for `check`, which must not wait on `configure`.
    ready: Mutex<Option<Arc<run::Checker>>>,
}

impl SipChecker {
    /// A checker that follows `plans` and starts its endpoint on
    /// `listeners` (bound from `endpoint.listen` when None).
    pub fn new(plans: watch::Receiver<Arc<Plan>>, listeners: Option<Listeners>) -> SipChecker {
        SipChecker {
            plans,
            listeners: Mutex::new(listeners),
            inner: tokio::sync::Mutex::new(None),
            ready: Mutex::new(None),
        }
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

/// Email alerts: the pure state machine per line, persisted in the store,
/// alerts queued in the outbox, and a background sender.
pub struct EmailAlerts {
    config_path: PathBuf,
    policy: Mutex<Option<Arc<AlertPolicy>>>,
    wake: Arc<Notify>,
    /// Stops the running sender when a new configuration replaces it.
    sender_stop: Mutex<Option<Arc<Notify>>>,
}

impl EmailAlerts {
    pub fn new(config_path: &Path) -> EmailAlerts {
        EmailAlerts {
            config_path: config_path.to_path_buf(),
            policy: Mutex::new(None),
            wake: Arc::new(Notify::new()),
            sender_stop: Mutex::new(None),
        }
    }

    fn policy(&self) -> Option<Arc<AlertPolicy>> {
        self.policy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn load_state(store: &Store, line: &str) -> LineAlertState {
        match store.alert_state(line) {
            Ok(Some(v)) => serde_json::from_value(v).unwrap_or_else(|e| {
                warn!(%line, error = %e, "unreadable alert state; starting afresh");
                LineAlertState::default()
            }),
            Ok(None) => LineAlertState::default(),
            Err(e) => {
                warn!(%line, error = %e, "can't read alert state; starting afresh");
                LineAlertState::default()
            }
        }
    }

    fn save_state(store: &Store, line: &str, state: &LineAlertState, now_ms: i64) {
        match serde_json::to_value(state) {
            Ok(v) => {
                if let Err(e) = store.set_alert_state(line, &v, now_ms) {
                    warn!(%line, error = %e, "can't save alert state");
                }
            }
            Err(e) => warn!(%line, error = %e, "can't encode alert state"),
        }
    }

    fn queue(&self, store: &Store, a: &alert::OutgoingAlert) {
        match store.enqueue(a) {
            Ok(true) => {
                info!(kind = %a.kind, subject = %a.subject, "alert queued");
                self.wake.notify_one();
            }
            Ok(false) => {}
            Err(e) => warn!(error = %e, subject = %a.subject, "can't queue alert"),
        }
    }
}

impl AlertSink for EmailAlerts {
    fn configure(&self, store: &Arc<Store>, plan: &Arc<Plan>) {
        // Stop the sender of the previous configuration, if any.
        if let Some(stop) = self
            .sender_stop
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            stop.notify_one();
        }
        let Some(alerts) = &plan.config().alerts else {
            *self.policy.lock().unwrap_or_else(|p| p.into_inner()) = None;
            return;
        };
        let policy = match AlertPolicy::from_plan(plan, &self.config_path) {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "alerts are off: the [alerts] settings can't be used");
                return;
            }
        };
        let mailer = match Mailer::from_config(alerts) {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "alerts are off: the mail transport can't be set up");
                return;
            }
        };
        *self.policy.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(policy));
        let stop = Arc::new(Notify::new());
        *self.sender_stop.lock().unwrap_or_else(|p| p.into_inner()) = Some(stop.clone());
        let mut opts = SenderOptions::from_config(alerts);
        opts.wake = self.wake.clone();
        let store = store.clone();
        tokio::spawn(async move {
            let stats =
                alert::run_sender(store, mailer, opts, async move { stop.notified().await }).await;
            info!(?stats, "alert sender stopped");
        });
    }

    fn on_result(&self, check: &StoredCheck, ctx: &AlertContext<'_>) -> Vec<FollowUp> {
        let Some(policy) = self.policy() else {
            return Vec::new();
        };
        let line = check.result.line.clone();
        let state = Self::load_state(ctx.store, &line);
        let (next, actions) = alert::on_result(
            &state,
            &check.result,
            check.id,
            ctx.now,
            &policy,
            ctx.in_maintenance,
        );
        Self::save_state(ctx.store, &line, &next, ctx.now.timestamp_millis());
        let mut follow = Vec::new();
        for a in actions {
            match a {
                Action::RecheckNow => follow.push(FollowUp::Recheck {
                    line: line.clone(),
                    trigger: Trigger::Confirm,
                    after: Duration::ZERO,
                }),
                Action::Queue(alert) => self.queue(ctx.store, &alert),
                // Held alerts live in the line's state until the window ends.
                Action::Hold(_) => {}
            }
        }
        follow
    }

    fn maintenance_changed(&self, active: bool, ctx: &AlertContext<'_>) {
        if active {
            return;
        }
        let Some(policy) = self.policy() else { return };
        let lines: Vec<String> = ctx
            .plan
            .lines()
            .iter()
            .map(|l| l.name().to_string())
            .collect();
        let mut states: HashMap<String, LineAlertState> = lines
            .iter()
            .map(|l| (l.clone(), Self::load_state(ctx.store, l)))
            .collect();
        let summary = alert::maintenance_summary(
            states.iter_mut().map(|(k, v)| (k.as_str(), v)),
            ctx.now,
            &policy,
        );
        if let Some(a) = summary {
            self.queue(ctx.store, &a);
            for (line, s) in &states {
                Self::save_state(ctx.store, line, s, ctx.now.timestamp_millis());
            }
        }
    }
}

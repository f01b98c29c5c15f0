//! The service, wired in one place: `cidguard run` (and `cidguard demo`)
//! read the plan, open the history, bind the endpoint's and the dashboard's
//! listeners, and only then start the daemon and the dashboard side by
//! side, with one stop signal.
//!
//! ```text
//!  Service::prepare ── Plan::load ─ Store::open ─ bind endpoint sockets ─ bind dashboard listener
//!        │
//!  Service::run ──┬── daemon::run_on(plan channel, store, deps{SipChecker on the bound sockets, ...})
//!                 └── web::serve(dashboard listener, AppState{plan channel, store, run-now channel})
//! ```
//!
//! Binding first means a port in use is reported before anything runs, and
//! a listener on port 0 can be read back (the tests and the demo use that
//! instead of guessing free ports). The daemon and the dashboard never see
//! each other: the plan reaches both on the daemon's `watch` channel, and
//! run-now requests go from the dashboard to the daemon on an `mpsc`
//! channel created here.

pub mod demo;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use crate::config::ConfigError;
use crate::daemon::wiring::{EmailAlerts, OptionsProbe, SipChecker};
use crate::daemon::{self, DaemonError, Deps};
use crate::plan::Plan;
use crate::sip::endpoint::{EndpointError, Listeners};
use crate::sip::transport::TransportOptions;
use crate::sip::Transport;
use crate::store::{Store, StoreError};
use crate::web::{self, AppState, DemoSwitch};

/// How many run-now requests may wait for the daemon to take them.
const RUN_QUEUE: usize = 16;

/// Why the service could not start (once running, problems are logged and
/// it carries on).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("can't listen for test calls: {0}")]
    Endpoint(#[from] EndpointError),
    #[error("can't listen for the dashboard on {listen}: {source}")]
    DashboardListen {
        /// `dashboard.listen` as written.
        listen: String,
        source: std::io::Error,
    },
    #[error("can't start the dashboard: {0}")]
    Dashboard(String),
    #[error(transparent)]
    Daemon(#[from] DaemonError),
}

/// Everything bound and opened, not yet running.
pub struct Service {
    /// Where the config was read from (reloads read it again).
    config_path: PathBuf,
    /// The plan channel: the daemon publishes, the checker and the
    /// dashboard read.
    plan: watch::Sender<Arc<Plan>>,
    /// The history.
    store: Arc<Store>,
    /// The endpoint's sockets until the checker takes them.
    endpoint: Option<Listeners>,
    /// Where they listen (kept after the checker took them).
    endpoint_addrs: Vec<(Transport, SocketAddr)>,
    /// The dashboard's listener, when `[dashboard]` is there.
    dashboard: Option<tokio::net::TcpListener>,
    /// `cidguard demo`'s switch, to show on the dashboard.
    demo: Option<DemoSwitch>,
    /// The endpoint's counters, for the dashboard's /metrics, once the
    /// checker that owns the endpoint was made.
    endpoint_stats: Option<web::EndpointStatsSource>,
}

impl Service {
    /// Read and compile the config, open the history, and bind the
    /// endpoint's sockets and the dashboard's listener.
    pub async fn prepare(config_path: &Path) -> Result<Service, ServiceError> {
        let plan = Plan::load(config_path)?;
        let store = Store::open_in(&plan.state_dir())?;
        let endpoint = match plan.endpoint() {
            Some(ep) => {
                Some(Listeners::bind(&ep.sip().listen, &TransportOptions::default()).await?)
            }
            None => None,
        };
        let dashboard =
            match &plan.config().dashboard {
                Some(d) => Some(tokio::net::TcpListener::bind(&d.listen).await.map_err(
                    |source| ServiceError::DashboardListen {
                        listen: d.listen.clone(),
                        source,
                    },
                )?),
                None => None,
            };
        Ok(Service {
            config_path: config_path.to_path_buf(),
            endpoint_addrs: endpoint.as_ref().map(Listeners::addrs).unwrap_or_default(),
            plan: watch::channel(Arc::new(plan)).0,
            store: Arc::new(store),
            endpoint,
            dashboard,
            demo: None,
            endpoint_stats: None,
        })
    }

    /// The plan read at start.
    pub fn plan(&self) -> Arc<Plan> {
        self.plan.borrow().clone()
    }

    /// The plan channel, to read the plan in force from.
    pub fn plans(&self) -> watch::Receiver<Arc<Plan>> {
        self.plan.subscribe()
    }

    /// The history.
    pub fn store(&self) -> Arc<Store> {
        self.store.clone()
    }

    /// Where the endpoint listens (port 0 resolved).
    pub fn endpoint_addrs(&self) -> &[(Transport, SocketAddr)] {
        &self.endpoint_addrs
    }

    /// Where the dashboard listens (port 0 resolved).
    pub fn dashboard_addr(&self) -> Option<SocketAddr> {
        self.dashboard.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The SIP checker, on the endpoint's bound sockets, following the
    /// plan channel.
    pub fn sip_checker(&mut self) -> SipChecker {
        let checker = SipChecker::new(self.plans(), self.endpoint.take());
        self.endpoint_stats = Some(checker.stats_source());
        checker
    }

    /// Show `cidguard demo`'s switch on the dashboard.
    pub fn show_demo(&mut self, switch: DemoSwitch) {
        self.demo = Some(switch);
    }

    /// Run the daemon with `deps`, and the dashboard when configured, until
    /// `shutdown` completes; each message on `reload` re-reads the config.
    /// The dashboard sends run-now requests to the daemon unless `deps`
    /// brings its own channel for them.
    pub async fn run(
        self,
        deps: Deps,
        reload: mpsc::Receiver<()>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServiceError> {
        let mut deps = deps;
        let plan = self.plan();
        let web = match (self.dashboard, &plan.config().dashboard) {
            (Some(listener), Some(dash)) => {
                let runs_tx = if deps.runs.is_none() {
                    let (tx, rx) = mpsc::channel(RUN_QUEUE);
                    deps.runs = Some(rx);
                    Some(tx)
                } else {
                    None
                };
                let state = AppState::new(self.store.clone(), self.plan.subscribe(), dash, runs_tx)
                    .map_err(ServiceError::Dashboard)?;
                if let Some(switch) = self.demo {
                    state.set_demo(switch);
                }
                if let Some(stats) = self.endpoint_stats {
                    state.set_endpoint_stats(stats);
                }
                let (stop, stopped) = oneshot::channel::<()>();
                let task = tokio::spawn(web::serve(listener, state, async {
                    let _ = stopped.await;
                }));
                Some((stop, task))
            }
            _ => None,
        };
        let setup = daemon::Setup {
            config_path: self.config_path,
            plan: self.plan,
            store: self.store,
        };
        let result = daemon::run_on(setup, deps, reload, shutdown).await;
        if let Some((stop, task)) = web {
            let _ = stop.send(());
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!("dashboard: {e}"),
                Err(e) => tracing::error!("dashboard task: {e}"),
            }
        }
        Ok(result?)
    }
}

/// `cidguard run`: the service with its real parts (the SIP checker on the
/// bound endpoint, OPTIONS probes of each PBX, email alerts), until
/// `shutdown`; each message on `reload` re-reads `config_path`.
pub async fn run(
    config_path: &Path,
    reload: mpsc::Receiver<()>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServiceError> {
    let mut service = Service::prepare(config_path).await?;
    let deps = Deps::new(
        Arc::new(service.sip_checker()),
        Arc::new(OptionsProbe),
        Arc::new(EmailAlerts::new(config_path)),
    );
    service.run(deps, reload, shutdown).await
}

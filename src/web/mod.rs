//! The dashboard, JSON API and metrics, served by `cidguard run` when the
//! config has a `[dashboard]` section.
//!
//! Pages are rendered on the server as plain HTML with inline CSS, so they
//! work without JavaScript and with a strict Content-Security-Policy.
//! Everything that came from a SIP message is hostile input: every value is
//! escaped through [`html::esc`] before it reaches a page.
//!
//! Reading is open unless `read_auth` is set; anything that changes state
//! needs the token (a bearer header, a form field, or a sign-in session)
//! and is refused from other sites, so a page elsewhere can't make a
//! browser run checks. A request naming a host the dashboard is not served
//! under is refused before anything else (421), so a page that rebinds its
//! own DNS name to this address can't read the dashboard either.
//!
//! What it shows comes from the plan in force, read from the daemon's plan
//! channel on every request (a reload shows at once), and from the history
//! through the store's read traits. It asks for checks by sending a
//! [`RunRequest`] on a channel, and shows `cidguard demo`'s switch as a
//! plain [`DemoSwitch`]: it knows neither the daemon nor the demo.

pub mod client;
pub mod html;
mod pages;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{delete, get, post};
use axum::{Form, Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use chrono::{DateTime, Utc};

use crate::alert::{LineAlertState, OutboxStore};
use crate::check::result::Trigger;
use crate::check::RunRequest;
use crate::config::Dashboard;
use crate::plan::Plan;
use crate::store::{
    AlertStateStore, CheckQuery, Cursor, HistoryRead, MaintenanceStore, StoreError, StoredCheck,
};
use crate::verdict::Outcome;

/// What the dashboard needs of the history: reading it, the maintenance
/// windows, the alert outbox's size, and the alert states (when a device's
/// reminders started counting). The SQLite store is one.
pub trait Backend:
    HistoryRead
    + MaintenanceStore
    + OutboxStore<Error = StoreError>
    + AlertStateStore<Error = StoreError>
    + 'static
{
}

impl<T> Backend for T where
    T: HistoryRead
        + MaintenanceStore
        + OutboxStore<Error = StoreError>
        + AlertStateStore<Error = StoreError>
        + 'static
{
}

/// Every route the app serves; the OpenAPI document must list the API ones
/// (a test holds both to each other).
pub const ROUTES: &[&str] = &[
    "/",
    "/lines/{name}",
    "/checks/{id}",
    "/checks/{id}/evidence.json",
    "/run",
    "/runs/{id}",
    "/metrics",
    "/healthz",
    "/api/v1/lines",
    "/api/v1/lines/{name}/checks",
    "/api/v1/checks",
    "/api/v1/checks/{id}",
    "/api/v1/runs/{id}",
    "/api/v1/status",
    "/api/v1/call-ins",
    "/api/v1/maintenance",
    "/api/v1/maintenance/{id}",
    "/demo",
    "/login",
    "/logout",
];

/// How long a run-now request waits for the daemon to accept it.
const RUN_ACCEPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Run-now requests remembered for their progress pages; the oldest are
/// forgotten first, so a busy API can't grow memory without bound.
const RUNS_KEPT: usize = 1000;
/// Longest label kept with a run-now request.
const LABEL_MAX: usize = 200;

/// How long a stopping server may take to finish requests in progress.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why a request failed. User errors (bad input, auth) are answered and not
/// logged as internal problems.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
    #[error("a valid token is required")]
    Unauthorized,
    #[error("refused: the request came from another site")]
    CrossSite,
    #[error("run-now is not available: {0}")]
    Unavailable(String),
    #[error("history: {0}")]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = match &self {
            WebError::NotFound => StatusCode::NOT_FOUND,
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::Unauthorized => StatusCode::UNAUTHORIZED,
            WebError::CrossSite => StatusCode::FORBIDDEN,
            WebError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            WebError::Store(_) | WebError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!("dashboard: {self}");
            // Details stay in the log: they may name files.
            "internal error (see the cidguard log)".to_string()
        } else {
            self.to_string()
        };
        let mut r = (status, Json(serde_json::json!({ "error": message }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

type WebResult<T> = Result<T, WebError>;

/// A run-now request as the dashboard remembers it, to show its progress.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub id: u64,
    pub lines: Vec<String>,
    pub label: Option<String>,
    pub requested_at_ms: i64,
    /// Pieced together from the history: this dashboard was restarted
    /// since the run was asked for, so only its recorded checks are known.
    #[serde(skip)]
    pub restored: bool,
}

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    /// The history.
    store: Arc<dyn Backend>,
    /// The daemon's plan channel: the plan in force.
    plans: watch::Receiver<Arc<Plan>>,
    /// The token for changes (and reading, with `read_auth`), read once.
    token: Option<String>,
    /// Signed-in browsers, kept here only: a restart ends every sign-in.
    sessions: Mutex<Sessions>,
    /// Reading needs the token too.
    read_auth: bool,
    /// The host names and addresses requests may name (DNS rebinding).
    hosts: AllowedHosts,
    /// Where run-now requests go (the daemon); None: run-now unavailable.
    runs_tx: Option<mpsc::Sender<RunRequest>>,
    /// `scheme://host[:port]` of `public_url`: requests a proxy forwards
    /// carry this origin while the Host header names the backend.
    public_origin: Option<String>,
    /// Run-now requests remembered for their progress pages.
    runs: Mutex<HashMap<u64, RunInfo>>,
    /// `cidguard demo` only: its PBX rule switch.
    demo: std::sync::OnceLock<DemoSwitch>,
    /// The endpoint's counters for /metrics, when an endpoint runs here.
    endpoint_stats: std::sync::OnceLock<EndpointStatsSource>,
}

/// Reads the endpoint's counters (None while no endpoint is running).
pub type EndpointStatsSource =
    Arc<dyn Fn() -> Option<crate::sip::endpoint::EndpointStats> + Send + Sync>;

/// What the demo's controls on the overview can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoAction {
    /// Make the demo's withheld line leak.
    Leak,
    /// Put every demo PBX rule back.
    Restore,
}

/// `cidguard demo`'s switch on the overview: the line it makes leak (named
/// on its buttons) and what to call when someone uses it.
#[derive(Clone)]
pub struct DemoSwitch {
    /// The line the switch makes leak.
    pub line: String,
    /// Called with what was asked for.
    pub flip: Arc<dyn Fn(DemoAction) + Send + Sync>,
}

impl AppState {
    /// The token is read here, once, so a missing secret stops the start.
    /// `plans` is the daemon's plan channel; `runs_tx` where run-now
    /// requests go (None: run-now is unavailable).
    pub fn new(
        store: Arc<dyn Backend>,
        plans: watch::Receiver<Arc<Plan>>,
        dash: &Dashboard,
        runs_tx: Option<mpsc::Sender<RunRequest>>,
    ) -> Result<AppState, String> {
        let token = match &dash.token {
            Some(t) => Some(t.reveal().map_err(|e| format!("dashboard.token: {e}"))?),
            None => None,
        };
        Ok(AppState {
            inner: Arc::new(Inner {
                store,
                plans,
                token,
                sessions: Mutex::new(Sessions::new(SESSION_LIFETIME)),
                read_auth: dash.read_auth,
                hosts: AllowedHosts::new(dash),
                runs_tx,
                public_origin: dash.public_url.as_deref().map(|u| {
                    let rest = u.split_once("://").map(|(_, r)| r).unwrap_or(u);
                    let host = rest.split('/').next().unwrap_or("");
                    let scheme = u.split_once("://").map(|(s, _)| s).unwrap_or("https");
                    format!("{scheme}://{host}")
                }),
                runs: Mutex::new(HashMap::new()),
                demo: std::sync::OnceLock::new(),
                endpoint_stats: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Show the demo's rule switch on the overview (only `cidguard demo`
    /// does this; a real daemon never has one).
    pub fn set_demo(&self, switch: DemoSwitch) {
        let _ = self.inner.demo.set(switch);
    }

    /// Where /metrics reads the endpoint's counters (what the guard shed,
    /// stray calls, connections).
    pub fn set_endpoint_stats(&self, source: EndpointStatsSource) {
        let _ = self.inner.endpoint_stats.set(source);
    }

    /// The plan in force.
    pub fn plan(&self) -> Arc<Plan> {
        self.inner.plans.borrow().clone()
    }

    fn runs(&self) -> std::sync::MutexGuard<'_, HashMap<u64, RunInfo>> {
        self.inner.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// How long a sign-in lasts from now on (12 hours unless changed; the
    /// tests shorten it to see expiry enforced by the server).
    pub fn set_session_lifetime(&self, lifetime: Duration) {
        self.sessions().lifetime = lifetime;
    }
}

/// When a line's schedule next fires after `now` (the daemon adds its
/// jitter); None for a line that is not scheduled.
pub(crate) fn next_check(plan: &Plan, line: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    plan.line(line)?.schedule()?.next_after(now)
}

/// Run a store call off the async threads (SQLite blocks).
async fn db<T: Send + 'static>(
    st: &AppState,
    f: impl FnOnce(&dyn Backend) -> Result<T, StoreError> + Send + 'static,
) -> WebResult<T> {
    let store = st.inner.store.clone();
    tokio::task::spawn_blocking(move || f(&*store))
        .await
        .map_err(|e| WebError::Internal(e.to_string()))?
        .map_err(WebError::from)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The router; serving is separate so tests can call it directly.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(pages::overview))
        .route("/lines/{name}", get(pages::line))
        .route("/checks/{id}", get(pages::check))
        .route("/checks/{id}/evidence.json", get(evidence_json))
        .route("/run", post(run_form))
        .route("/runs/{id}", get(pages::run_progress))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/api/v1/lines", get(api_lines))
        .route("/api/v1/lines/{name}/checks", get(api_line_checks))
        .route("/api/v1/checks", post(api_run))
        .route("/api/v1/checks/{id}", get(api_check))
        .route("/api/v1/runs/{id}", get(api_run_status))
        .route("/api/v1/status", get(api_status))
        .route("/api/v1/call-ins", get(api_call_ins))
        .route(
            "/api/v1/maintenance",
            get(api_maintenance).post(api_add_maintenance),
        )
        .route("/api/v1/maintenance/{id}", delete(api_remove_maintenance))
        .route("/demo", post(demo_form))
        .route("/login", get(pages::login).post(login))
        .route("/logout", post(logout))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            read_guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            host_guard,
        ))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state)
}

/// The names a request's Host may give. The point is DNS rebinding: a
/// page on `evil.example` whose name the attacker re-points at this
/// address is same-origin with itself, so the browser lets it read the
/// answers; only the Host header (`evil.example`) gives it away. Rebinding
/// needs a name, so IP literals are safe; names are allowed only when they
/// are ours: `localhost` and `public_url`'s host. Ports are not compared:
/// they don't make a name any more ours, and an ssh tunnel or a proxy
/// shows the dashboard under another port.
struct AllowedHosts {
    /// The address the dashboard listens on: from `listen`, or from the
    /// socket once bound (a `listen` that names a host).
    listen: OnceLock<IpAddr>,
    /// `public_url`'s host, lower case, without brackets or port.
    public: Option<String>,
}

impl AllowedHosts {
    fn new(dash: &Dashboard) -> AllowedHosts {
        let listen = OnceLock::new();
        if let Ok(a) = dash.listen.parse::<std::net::SocketAddr>() {
            let _ = listen.set(a.ip());
        }
        let public = dash.public_url.as_deref().and_then(|u| {
            let rest = u.split_once("://").map_or(u, |(_, r)| r);
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            // user:password@host is not a host.
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            split_host(host).map(|(name, _)| name)
        });
        AllowedHosts { listen, public }
    }

    /// Whether a Host header value names this dashboard.
    fn allows(&self, host: &str) -> bool {
        let Some((name, _port)) = split_host(host) else {
            return false;
        };
        if name == "localhost" || self.public.as_deref() == Some(name.as_str()) {
            return true;
        }
        let Ok(ip) = name.parse::<IpAddr>() else {
            return false;
        };
        match self.listen.get() {
            _ if ip.is_loopback() => true,
            // Listening on every interface: which addresses the machine
            // has can't all be known, and an address is never rebound.
            Some(l) if l.is_unspecified() => true,
            Some(l) => *l == ip,
            None => false,
        }
    }
}

/// A Host header value as (lower-case name or address without brackets,
/// port); None when it is not one (empty, a bare IPv6 address, a bad port,
/// characters no host name has).
fn split_host(h: &str) -> Option<(String, Option<u16>)> {
    let (name, port) = if let Some(rest) = h.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        inside.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (inside, port)
    } else {
        match h.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (h, None),
        }
    };
    let port = match port {
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse().ok()?),
        Some(_) => return None,
        None => None,
    };
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
    ok.then(|| (name.to_ascii_lowercase(), port))
}

/// Refuse a request for a host this dashboard is not (421 Misdirected
/// Request, a short plain answer). `/healthz` is exempt: it carries no
/// data, and monitors may reach it by any name.
async fn host_guard(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let header_ok = match (hosts.next(), hosts.next()) {
        // No Host at all: not a browser (every browser sends one), so not
        // a rebinding page; in-process calls and HTTP/1.0 tools.
        (None, _) => true,
        (Some(h), None) => h.to_str().is_ok_and(|h| st.inner.hosts.allows(h)),
        // Two Host headers: which one a proxy believed is anyone's guess.
        (Some(_), Some(_)) => false,
    };
    // A request line in absolute form names its host too.
    let uri_ok = req
        .uri()
        .authority()
        .is_none_or(|a| st.inner.hosts.allows(a.as_str()));
    if header_ok && uri_ok {
        return next.run(req).await;
    }
    (
        StatusCode::MISDIRECTED_REQUEST,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        "This dashboard is not served under that host name. Use its address (or localhost, or its public_url).\n",
    )
        .into_response()
}

/// Headers on every response, errors included.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// With `read_auth`, every request but `/healthz` and signing in needs the
/// token or a sign-in. A browser asking for a page is sent to sign in.
async fn read_guard(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if st.inner.read_auth
        && path != "/healthz"
        && path != "/login"
        && !signed_in(&st, req.headers())
    {
        let wants_page = req.method() == axum::http::Method::GET
            && req
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.contains("text/html"));
        if wants_page {
            let here = req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string();
            return Redirect::to(&format!("/login?next={}", percent_encode(&here))).into_response();
        }
        return WebError::Unauthorized.into_response();
    }
    next.run(req).await
}

/// The sign-in cookie's name.
const SESSION_COOKIE: &str = "cidguard_session";
/// How long a sign-in lasts, enforced here (the cookie's Max-Age only asks
/// the browser); a restart or signing out ends it sooner.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);
/// Sign-ins kept at once; beyond this the one ending soonest is dropped, so
/// repeated sign-ins can't grow memory without bound.
const SESSIONS_MAX: usize = 1000;

/// Signed-in browsers: each sign-in gets its own random id, and only ids
/// found here with time left are signed in. Ids are never logged.
struct Sessions {
    /// Session id (256 random bits, hex) to when the sign-in ends.
    ends: HashMap<String, Instant>,
    /// How long a new sign-in lasts.
    lifetime: Duration,
}

impl Sessions {
    fn new(lifetime: Duration) -> Sessions {
        Sessions {
            ends: HashMap::new(),
            lifetime,
        }
    }

    /// A new sign-in at `now`; returns its id.
    fn start(&mut self, now: Instant) -> String {
        self.ends.retain(|_, end| *end > now);
        while self.ends.len() >= SESSIONS_MAX {
            let Some(oldest) = self
                .ends
                .iter()
                .min_by_key(|(_, end)| **end)
                .map(|(id, _)| id.clone())
            else {
                break;
            };
            self.ends.remove(&oldest);
        }
        let bytes: [u8; 32] = rand::random();
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        // Past the end of time: a lifetime too long for the clock ends now.
        let end = now.checked_add(self.lifetime).unwrap_or(now);
        self.ends.insert(id.clone(), end);
        id
    }

    /// Whether `id` is a sign-in with time left at `now`.
    fn valid(&self, id: &str, now: Instant) -> bool {
        self.ends.get(id).is_some_and(|end| *end > now)
    }

    /// Sign out: the id is nobody from now on.
    fn end(&mut self, id: &str) {
        self.ends.remove(id);
    }
}

/// The sign-in cookie values a request carries.
fn session_cookies(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .filter(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
}

/// The request carries the cookie of a sign-in that has not ended.
fn session_ok(st: &AppState, headers: &HeaderMap) -> bool {
    let now = Instant::now();
    let sessions = st.sessions();
    session_cookies(headers).any(|id| sessions.valid(id, now))
}

/// The token as a bearer header, or the sign-in cookie.
pub(crate) fn signed_in(st: &AppState, headers: &HeaderMap) -> bool {
    bearer_ok(st, headers) || session_ok(st, headers)
}

/// Percent-encode everything but unreserved characters and `/`.
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Where to go after signing in: a path on this site only, else `/`. It
/// must start with one `/` (not `//host` or `/\host`, which browsers read
/// as another site, nor `https://...`), and have no backslash and no
/// control character anywhere (browsers drop a tab or newline inside a URL,
/// so `/\t/host` is `//host`; a CR or LF must never reach a header).
/// Anything outside printable ASCII is percent-encoded, so the result is
/// always a valid Location header.
pub(crate) fn safe_next(next: Option<&str>) -> String {
    let home = || "/".to_string();
    let Some(n) = next else {
        return home();
    };
    let second = n.chars().nth(1);
    if !n.starts_with('/')
        || matches!(second, Some('/' | '\\'))
        || n.chars().any(|c| c.is_control() || c == '\\')
    {
        return home();
    }
    let mut out = String::with_capacity(n.len());
    for c in n.chars() {
        if c.is_ascii_graphic() {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

/// Compare without stopping at the first difference, so timing doesn't
/// reveal how much of a guess was right.
fn token_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn bearer_ok(st: &AppState, headers: &HeaderMap) -> bool {
    let Some(expected) = &st.inner.token else {
        return false;
    };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| token_eq(t.trim(), expected))
}

/// Refuse a state change a browser was made to send from another site.
/// Fetch metadata (`Sec-Fetch-Site`), which every current browser sends,
/// decides; only without it is the Origin header compared with the host.
/// (A browser may send `Origin: null` for its own same-origin form under
/// some referrer policies, so Origin alone can't be trusted to tell.)
fn same_origin(st: &AppState, headers: &HeaderMap) -> WebResult<()> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return if matches!(site, "same-origin" | "none") {
            Ok(())
        } else {
            Err(WebError::CrossSite)
        };
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or("");
        let public = st.inner.public_origin.as_deref() == Some(origin);
        if origin == "null" || (origin_host != host && !public) {
            return Err(WebError::CrossSite);
        }
    }
    Ok(())
}

/// A state change: same site, and the token (header or form field).
fn authorise_change(st: &AppState, headers: &HeaderMap, form_token: Option<&str>) -> WebResult<()> {
    same_origin(st, headers)?;
    let Some(expected) = &st.inner.token else {
        return Err(WebError::Unauthorized);
    };
    if signed_in(st, headers) || form_token.is_some_and(|t| token_eq(t.trim(), expected)) {
        Ok(())
    } else {
        Err(WebError::Unauthorized)
    }
}

// ----- signing in ---------------------------------------------------------

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: Option<String>,
}

/// Check the token and set the sign-in cookie: HttpOnly, SameSite=Strict,
/// Secure when the dashboard is published over https.
async fn login(
    State(st): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> WebResult<Response> {
    same_origin(&st, &headers)?;
    let Some(expected) = &st.inner.token else {
        return Err(WebError::Unauthorized);
    };
    let next = safe_next(f.next.as_deref());
    if !token_eq(f.token.trim(), expected) {
        tracing::warn!("dashboard: a sign-in with a wrong token");
        return Ok(pages::login_form(&next, true, StatusCode::UNAUTHORIZED));
    }
    let secure = if st
        .inner
        .public_origin
        .as_deref()
        .is_some_and(|o| o.starts_with("https://"))
    {
        "; Secure"
    } else {
        ""
    };
    let (session, max_age) = {
        let mut sessions = st.sessions();
        (sessions.start(Instant::now()), sessions.lifetime.as_secs())
    };
    let cookie = format!(
        "{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    );
    let mut r = Redirect::to(&next).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(r)
}

/// Sign out: the session ends on the server (a copy of the cookie is
/// nobody from now on), and the browser is told to forget it.
async fn logout(State(st): State<AppState>, headers: HeaderMap) -> WebResult<Response> {
    same_origin(&st, &headers)?;
    {
        let mut sessions = st.sessions();
        for id in session_cookies(&headers) {
            sessions.end(id);
        }
    }
    let mut r = Redirect::to("/").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("cidguard_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    Ok(r)
}

// ----- run now ------------------------------------------------------------

/// Who asked for a run.
#[derive(Clone, Copy)]
enum Via {
    Form,
    Api,
}

/// Bits of a run id below the request time.
const RUN_ID_RANDOM_BITS: u32 = 10;

/// How long after a run-now request its checks are looked for. A run's
/// checks start as soon as the daemon has a free slot, within seconds to
/// minutes; the bound keeps a late look at an old run from paging through
/// every check since.
const RUN_RESULT_WINDOW_MS: i64 = 60 * 60 * 1000;

/// A run id: the request time in milliseconds, then random bits, so ids
/// stay unique across restarts (a stored check carries its run's id) and a
/// restarted dashboard knows where in the history to look for a run it no
/// longer remembers. Below 2^53 for centuries, so JSON readers keep it
/// exact.
fn new_run_id(requested_at_ms: i64) -> u64 {
    use rand::Rng;
    let time = u64::try_from(requested_at_ms).unwrap_or(0);
    (time << RUN_ID_RANDOM_BITS) | rand::thread_rng().gen_range(0..(1u64 << RUN_ID_RANDOM_BITS))
}

/// When the run with this id was asked for.
fn run_requested_at_ms(id: u64) -> i64 {
    i64::try_from(id >> RUN_ID_RANDOM_BITS).unwrap_or(i64::MAX)
}

/// Whether a check was run for this run id.
fn is_run(c: &StoredCheck, id: u64) -> bool {
    matches!(
        c.result.trigger,
        Trigger::Api { run: Some(r), .. } | Trigger::Manual { run: Some(r), .. } if r == id
    )
}

async fn start_run(
    st: &AppState,
    lines: Vec<String>,
    label: Option<String>,
    via: Via,
) -> WebResult<RunInfo> {
    let Some(tx) = &st.inner.runs_tx else {
        return Err(WebError::Unavailable(
            "the daemon is not running this dashboard".into(),
        ));
    };
    if label
        .as_ref()
        .is_some_and(|l| l.chars().count() > LABEL_MAX)
    {
        return Err(WebError::BadRequest(format!(
            "label: at most {LABEL_MAX} characters"
        )));
    }
    let requested_at_ms = now_ms();
    let id = new_run_id(requested_at_ms);
    let trigger = match via {
        Via::Form => Trigger::Manual {
            label: label.clone(),
            run: Some(id),
        },
        Via::Api => Trigger::Api {
            label: label.clone(),
            run: Some(id),
        },
    };
    let (reply, answer) = oneshot::channel();
    let req = RunRequest {
        lines,
        trigger,
        reply,
    };
    let accepted = tokio::time::timeout(RUN_ACCEPT_TIMEOUT, async {
        tx.send(req)
            .await
            .map_err(|_| WebError::Unavailable("the daemon is stopping".into()))?;
        answer
            .await
            .map_err(|_| WebError::Unavailable("the daemon is stopping".into()))
    })
    .await
    .map_err(|_| WebError::Unavailable("the daemon did not answer in time".into()))??;
    let lines = accepted.map_err(WebError::BadRequest)?;
    let info = RunInfo {
        id,
        lines,
        label,
        requested_at_ms,
        restored: false,
    };
    {
        let mut runs = st.runs();
        if runs.len() >= RUNS_KEPT {
            if let Some(oldest) = runs.keys().min().copied() {
                runs.remove(&oldest);
            }
        }
        runs.insert(id, info.clone());
    }
    Ok(info)
}

/// Each line of a run with its result once recorded: the line's check that
/// carries the run's id. A run this dashboard no longer remembers (it was
/// restarted) is pieced together from the history: the checks carrying its
/// id, found from the request time in the id.
async fn run_results(
    st: &AppState,
    id: u64,
) -> WebResult<(RunInfo, Vec<(String, Option<StoredCheck>)>)> {
    let remembered = st.runs().get(&id).cloned();
    let requested = remembered
        .as_ref()
        .map_or_else(|| run_requested_at_ms(id), |i| i.requested_at_ms);
    let lines = remembered
        .as_ref()
        .map_or_else(|| configured_lines(&st.plan()), |i| i.lines.clone());
    let may_merge = remembered.is_some();
    // The daemon starts a run's checks after the request was taken, on the
    // same wall clock; a small allowance covers the clock being read on
    // different tasks, without reaching back to an earlier run's check.
    let since = requested.saturating_sub(20);
    let until = requested.saturating_add(RUN_RESULT_WINDOW_MS);
    let found = db(st, move |s| {
        let mut out = Vec::new();
        for line in lines {
            let mut q = CheckQuery::line(&line);
            q.since_ms = Some(since);
            q.until_ms = Some(until);
            q.limit = 1000;
            let mut checks: Vec<StoredCheck> = s.checks(&q)?.checks;
            checks.reverse();
            // The check carrying this run's id; failing that, the first
            // run-now check started since the request: the daemon merges a
            // request into one for the same line still waiting in its queue,
            // and that check, started after this request, answers both.
            let own = checks.iter().position(|c| is_run(c, id));
            let merged = || {
                checks.iter().position(|c| {
                    may_merge
                        && matches!(
                            c.result.trigger,
                            Trigger::Api { .. } | Trigger::Manual { .. }
                        )
                })
            };
            let found = own.or_else(merged).map(|i| checks.swap_remove(i));
            out.push((line, found));
        }
        Ok(out)
    })
    .await?;
    if let Some(info) = remembered {
        return Ok((info, found));
    }
    let found: Vec<(String, Option<StoredCheck>)> =
        found.into_iter().filter(|(_, c)| c.is_some()).collect();
    if found.is_empty() {
        return Err(WebError::NotFound);
    }
    let label = found.iter().find_map(|(_, c)| {
        c.as_ref()
            .and_then(|c| c.result.trigger.label().map(str::to_string))
    });
    let info = RunInfo {
        id,
        lines: found.iter().map(|(l, _)| l.clone()).collect(),
        label,
        requested_at_ms: requested,
        restored: true,
    };
    Ok((info, found))
}

#[derive(Deserialize)]
struct RunForm {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    line: Option<String>,
    #[serde(default)]
    label: Option<String>,
}

async fn run_form(
    State(st): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<RunForm>,
) -> WebResult<Response> {
    authorise_change(&st, &headers, f.token.as_deref())?;
    let lines = f.line.filter(|l| !l.is_empty()).into_iter().collect();
    let label = f
        .label
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty());
    let info = start_run(&st, lines, label, Via::Form).await?;
    Ok(Redirect::to(&format!("/runs/{}", info.id)).into_response())
}

#[derive(Deserialize)]
struct DemoForm {
    #[serde(default)]
    token: Option<String>,
    action: String,
}

/// The demo's rule switch: same protection as any state change.
async fn demo_form(
    State(st): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<DemoForm>,
) -> WebResult<Response> {
    let Some(switch) = st.inner.demo.get() else {
        return Err(WebError::NotFound);
    };
    authorise_change(&st, &headers, f.token.as_deref())?;
    let action = match f.action.as_str() {
        "leak" => DemoAction::Leak,
        "restore" => DemoAction::Restore,
        other => {
            return Err(WebError::BadRequest(format!(
                "action {other:?}: expected leak or restore"
            )))
        }
    };
    (switch.flip)(action);
    let done = match action {
        DemoAction::Leak => "leak",
        DemoAction::Restore => "restore",
    };
    Ok(Redirect::to(&format!("/?demo={done}")).into_response())
}

#[derive(Deserialize)]
struct RunBody {
    #[serde(default)]
    lines: Vec<String>,
    #[serde(default)]
    label: Option<String>,
}

async fn api_run(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Option<Json<RunBody>>,
) -> WebResult<Response> {
    authorise_change(&st, &headers, None)?;
    let Some(Json(b)) = body else {
        return Err(WebError::BadRequest(
            "expected a JSON body {\"lines\": [...], \"label\": \"...\"}".into(),
        ));
    };
    let info = start_run(&st, b.lines, b.label, Via::Api).await?;
    let poll = format!("/api/v1/runs/{}", info.id);
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "run": info.id, "lines": info.lines, "poll": poll })),
    )
        .into_response())
}

async fn api_run_status(State(st): State<AppState>, Path(id): Path<u64>) -> WebResult<Response> {
    let (info, found) = run_results(&st, id).await?;
    let done = found.iter().all(|(_, c)| c.is_some());
    let checks: Vec<_> = found
        .iter()
        .map(|(l, c)| serde_json::json!({ "line": l, "check": c.as_ref().map(|c| c.id) }))
        .collect();
    Ok(Json(serde_json::json!({
        "run": info.id, "label": info.label, "done": done, "checks": checks,
        "restored": info.restored
    }))
    .into_response())
}

// ----- JSON API -----------------------------------------------------------

fn configured_lines(plan: &Plan) -> Vec<String> {
    plan.lines().iter().map(|l| l.name().to_string()).collect()
}

fn state_word(c: Option<&StoredCheck>) -> &'static str {
    match c {
        None => "unchecked",
        Some(c) if c.interrupted => "inconclusive",
        Some(c) => match c.result.outcome {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Inconclusive => "inconclusive",
        },
    }
}

async fn api_lines(State(st): State<AppState>) -> WebResult<Response> {
    let plan = st.plan();
    let names = configured_lines(&plan);
    let now = Utc::now();
    let ov = db(&st, move |s| {
        s.overview(Some(&names), now.timestamp_millis())
    })
    .await?;
    let lines: Vec<_> = ov
        .iter()
        .map(|o| {
            serde_json::json!({
                "line": o.line,
                "state": state_word(o.latest.as_ref()),
                "expected": plan.line(&o.line).map(|l| l.expected().to_string()),
                "last_check": o.latest.as_ref().map(|c| c.id),
                "last_checked_at": o.latest.as_ref().map(|c| c.result.started_at.clone()),
                "summary": o.latest.as_ref().map(|c| c.result.summary()),
                "ratio": { "day": o.day, "week": o.week, "quarter": o.quarter },
                "next_check_at": next_check(&plan, &o.line, now)
                    .map(|t| crate::store::rfc3339_of_ms(t.timestamp_millis())),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "lines": lines })).into_response())
}

#[derive(Deserialize)]
struct ChecksParams {
    since: Option<String>,
    until: Option<String>,
    outcome: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

pub(crate) fn parse_cursor(s: &str) -> WebResult<Cursor> {
    let bad = || WebError::BadRequest(format!("cursor {s:?} is not one this API gave"));
    let (a, b) = s.split_once('.').ok_or_else(bad)?;
    Ok(Cursor {
        started_at_ms: a.parse().map_err(|_| bad())?,
        id: b.parse().map_err(|_| bad())?,
    })
}

pub(crate) fn cursor_text(c: &Cursor) -> String {
    format!("{}.{}", c.started_at_ms, c.id)
}

fn parse_outcome(s: &str) -> WebResult<Outcome> {
    match s {
        "pass" => Ok(Outcome::Pass),
        "fail" => Ok(Outcome::Fail),
        "inconclusive" => Ok(Outcome::Inconclusive),
        _ => Err(WebError::BadRequest(format!(
            "outcome {s:?}: expected pass, fail or inconclusive"
        ))),
    }
}

fn parse_time_param(name: &str, s: &str) -> WebResult<i64> {
    crate::store::ms_of_rfc3339(s).ok_or_else(|| {
        WebError::BadRequest(format!(
            "{name} {s:?}: expected RFC 3339, e.g. 2025-01-31T00:00:00Z"
        ))
    })
}

async fn api_line_checks(
    State(st): State<AppState>,
    Path(name): Path<String>,
    Query(p): Query<ChecksParams>,
) -> WebResult<Response> {
    if st.plan().line(&name).is_none() {
        return Err(WebError::NotFound);
    }
    let mut q = CheckQuery::line(&name);
    q.since_ms = p
        .since
        .as_deref()
        .map(|s| parse_time_param("since", s))
        .transpose()?;
    q.until_ms = p
        .until
        .as_deref()
        .map(|s| parse_time_param("until", s))
        .transpose()?;
    q.outcome = p.outcome.as_deref().map(parse_outcome).transpose()?;
    q.limit = p.limit.unwrap_or(100).clamp(1, 1000);
    q.after = p.cursor.as_deref().map(parse_cursor).transpose()?;
    let page = db(&st, move |s| s.checks(&q)).await?;
    Ok(Json(serde_json::json!({
        "checks": page.checks,
        "next_cursor": page.next.as_ref().map(cursor_text),
    }))
    .into_response())
}

fn parse_id(s: &str) -> WebResult<i64> {
    s.parse().map_err(|_| WebError::NotFound)
}

async fn api_check(State(st): State<AppState>, Path(id): Path<String>) -> WebResult<Response> {
    let id = parse_id(&id)?;
    let c = db(&st, move |s| s.check(id))
        .await?
        .ok_or(WebError::NotFound)?;
    Ok(Json(c).into_response())
}

async fn evidence_json(State(st): State<AppState>, Path(id): Path<String>) -> WebResult<Response> {
    let id = parse_id(&id)?;
    // Evidence was redacted when stored; nothing here can add credentials.
    let c = db(&st, move |s| s.check(id))
        .await?
        .ok_or(WebError::NotFound)?;
    let mut r = Json(c).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"cidguard-check-{id}.json\""
    )) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

async fn api_status(State(st): State<AppState>) -> WebResult<Response> {
    let names = configured_lines(&st.plan());
    let ov = db(&st, move |s| s.overview(Some(&names), now_ms())).await?;
    let words: Vec<&str> = ov.iter().map(|o| state_word(o.latest.as_ref())).collect();
    let status = if words.contains(&"fail") {
        "failing"
    } else if words
        .iter()
        .any(|w| *w == "inconclusive" || *w == "unchecked")
    {
        "inconclusive"
    } else {
        "ok"
    };
    let failing: Vec<&str> = ov
        .iter()
        .filter(|o| state_word(o.latest.as_ref()) == "fail")
        .map(|o| o.line.as_str())
        .collect();
    Ok(Json(serde_json::json!({ "status": status, "failing": failing })).into_response())
}

async fn api_maintenance(State(st): State<AppState>) -> WebResult<Response> {
    let w = db(&st, |s| s.maintenance_windows(now_ms())).await?;
    Ok(Json(serde_json::json!({ "windows": w })).into_response())
}

#[derive(Deserialize)]
struct WindowBody {
    start: String,
    end: String,
    #[serde(default)]
    reason: Option<String>,
}

async fn api_add_maintenance(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Option<Json<WindowBody>>,
) -> WebResult<Response> {
    authorise_change(&st, &headers, None)?;
    let Some(Json(b)) = body else {
        return Err(WebError::BadRequest(
            "expected a JSON body {\"start\": \"RFC 3339\", \"end\": \"RFC 3339\", \"reason\": \"...\"}".into(),
        ));
    };
    let start = parse_time_param("start", &b.start)?;
    let end = parse_time_param("end", &b.end)?;
    if end <= start {
        return Err(WebError::BadRequest("end must be after start".into()));
    }
    let reason = b.reason;
    let id = db(&st, move |s| {
        s.add_maintenance(start, end, reason.as_deref())
    })
    .await?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "id": id }))).into_response())
}

async fn api_remove_maintenance(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> WebResult<Response> {
    authorise_change(&st, &headers, None)?;
    let id = parse_id(&id)?;
    if db(&st, move |s| s.remove_maintenance(id)).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(WebError::NotFound)
    }
}

// ----- call-ins -----------------------------------------------------------

/// Call-ins from phones that are not a configured device shown at once:
/// the latest few say whether people are testing and what they found.
const UNATTRIBUTED_SHOWN: usize = 10;

/// A configured device as the call-in view shows it.
pub(crate) struct DeviceView {
    /// Its name (the "line" its call-ins are recorded under).
    pub name: String,
    /// Its latest call-in, if it has had one.
    pub last: Option<StoredCheck>,
    /// When its next call-in is due: `remind_every` after its last
    /// call-in, or after the daemon started counting (as the daemon's
    /// reminders count); None for a device without reminders.
    pub due: Option<DateTime<Utc>>,
}

/// What the dashboard shows of the call-in self-test.
pub(crate) struct CallInView {
    /// Every configured device, in file order.
    pub devices: Vec<DeviceView>,
    /// The latest call-ins not attributed to a device, newest first.
    pub unattributed: Vec<StoredCheck>,
}

/// Whether the plan has a call-in self-test at all (`[selftest]` or a
/// device): without one the dashboard shows no call-in section.
pub(crate) fn has_call_ins(plan: &Plan) -> bool {
    plan.config().selftest.is_some() || !plan.callin().devices().is_empty()
}

/// The organisation's self-test numbers (`[selftest]`), as configured.
pub(crate) fn org_selftest_numbers(plan: &Plan) -> Vec<&str> {
    plan.callin()
        .numbers()
        .iter()
        .filter(|(_, o)| *o == crate::plan::Owner::Organisation)
        .map(|(n, _)| n.as_str())
        .collect()
}

/// What a device's, a line's or the self-test's calls must present, in
/// words: `withheld` or `umbrella: <name>` (raw: escape it for a page).
pub(crate) fn expectation_of(plan: &Plan, name: &str) -> Option<String> {
    let umbrella = |e: crate::config::Expect, u: Option<&crate::config::Umbrella>| match u {
        Some(u) if e == crate::config::Expect::Umbrella => format!("umbrella: {}", u.name),
        _ => e.to_string(),
    };
    if let Some(l) = plan.line(name) {
        return Some(match l.umbrella() {
            Some(u) => format!("umbrella: {u}"),
            None => l.expected().to_string(),
        });
    }
    let cfg = plan.config();
    if let Some(d) = cfg.devices.iter().find(|d| d.name == name) {
        return Some(umbrella(d.expect, d.umbrella.as_ref()));
    }
    if name == crate::plan::SELFTEST_LINE {
        return cfg
            .selftest
            .as_ref()
            .map(|s| umbrella(s.expect, s.umbrella.as_ref()));
    }
    None
}

/// When a device's next call-in is due: `every` after the later of its
/// last call-in and when the daemon started counting its reminders (the
/// daemon's own rule); from `now` when neither is known yet (the daemon
/// starts counting on its next tick).
pub(crate) fn call_in_due(
    every: Duration,
    last: Option<&StoredCheck>,
    counting_since: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let last = last
        .and_then(|c| crate::store::ms_of_rfc3339(&c.result.started_at))
        .and_then(DateTime::<Utc>::from_timestamp_millis);
    let base = [last, counting_since].into_iter().flatten().max();
    base.unwrap_or(now)
        .checked_add_signed(chrono::Duration::from_std(every).ok()?)
}

/// Read the call-in view for the plan in force.
pub(crate) async fn call_in_view(
    st: &AppState,
    plan: &Plan,
    now: DateTime<Utc>,
) -> WebResult<CallInView> {
    // Reminders go out only for devices with their own self-test number
    // (the number they name); validation requires one with remind_every.
    let devices: Vec<(String, Option<Duration>)> = plan
        .callin()
        .devices()
        .iter()
        .map(|d| {
            let every = d.remind_every().filter(|_| d.selftest_number().is_some());
            (d.name().to_string(), every)
        })
        .collect();
    db(st, move |s| {
        let mut out = Vec::with_capacity(devices.len());
        for (name, every) in devices {
            let last = s.last_call_in(&name)?;
            let due = match every {
                Some(every) => {
                    // An unreadable state is one the daemon starts afresh.
                    let since = s
                        .line_state(&name)?
                        .and_then(|row| {
                            serde_json::from_str::<LineAlertState>(&row.state_json).ok()
                        })
                        .and_then(|st| st.device_seen_at);
                    call_in_due(every, last.as_ref(), since, now)
                }
                None => None,
            };
            out.push(DeviceView { name, last, due });
        }
        let mut q = CheckQuery::line(crate::plan::SELFTEST_LINE);
        q.limit = UNATTRIBUTED_SHOWN;
        // No line or device may be called "self-test": every check under
        // that name is a call-in; the filter only makes sure.
        let unattributed = s
            .checks(&q)?
            .checks
            .into_iter()
            .filter(|c| matches!(c.result.trigger, Trigger::CallIn { .. }))
            .collect();
        Ok(CallInView {
            devices: out,
            unattributed,
        })
    })
    .await
}

async fn api_call_ins(State(st): State<AppState>) -> WebResult<Response> {
    let plan = st.plan();
    let now = Utc::now();
    let view = call_in_view(&st, &plan, now).await?;
    let devices: Vec<_> = view
        .devices
        .iter()
        .map(|d| {
            let dp = plan.callin().device(&d.name);
            serde_json::json!({
                "device": d.name,
                "expected": expectation_of(&plan, &d.name),
                "selftest_number": dp.and_then(|p| p.selftest_number()),
                "state": state_word(d.last.as_ref()),
                "last_call_in": d.last.as_ref().map(|c| c.id),
                "last_call_in_at": d.last.as_ref().map(|c| c.result.started_at.clone()),
                "summary": d.last.as_ref().map(|c| c.result.summary()),
                "remind_every_secs": d.due.and(dp.and_then(|p| p.remind_every())).map(|e| e.as_secs()),
                "call_in_due_at": d.due.map(|t| crate::store::rfc3339_of_ms(t.timestamp_millis())),
                "overdue": d.due.is_some_and(|t| t <= now),
            })
        })
        .collect();
    let unattributed: Vec<_> = view
        .unattributed
        .iter()
        .map(|c| {
            serde_json::json!({
                "check": c.id,
                "at": c.result.started_at,
                "state": state_word(Some(c)),
                "summary": c.result.summary(),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({
        "selftest_numbers": org_selftest_numbers(&plan),
        "devices": devices,
        "unattributed": unattributed,
    }))
    .into_response())
}

// ----- metrics ------------------------------------------------------------

/// A Prometheus label value: backslash, quote and newline escaped.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

async fn metrics(State(st): State<AppState>) -> WebResult<Response> {
    use std::fmt::Write;
    let plan = st.plan();
    let names = configured_lines(&plan);
    let devices: Vec<String> = plan
        .callin()
        .devices()
        .iter()
        .map(|d| d.name().to_string())
        .collect();
    let (ov, totals, pending, changes, device_last) = db(&st, move |s| {
        let ov = s.overview(Some(&names), now_ms())?;
        // All-time counts: one grouped read of the daily counts.
        let mut all = s.totals()?;
        let totals: Vec<_> = names
            .iter()
            .map(|n| all.remove(n).unwrap_or_default())
            .collect();
        let pending = s.pending()?;
        let changes = s.pbx_changes(None, 1000)?;
        let device_last = devices
            .into_iter()
            .map(|d| Ok((s.last_call_in(&d)?, d)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok((ov, totals, pending, changes, device_last))
    })
    .await?;
    let mut m = String::new();
    let _ = writeln!(
        m,
        "# HELP cidguard_line_state The line's current state (1 for the state it is in)."
    );
    let _ = writeln!(m, "# TYPE cidguard_line_state gauge");
    for o in &ov {
        let now = state_word(o.latest.as_ref());
        for s in ["pass", "fail", "inconclusive", "unchecked"] {
            let _ = writeln!(
                m,
                "cidguard_line_state{{line=\"{}\",state=\"{s}\"}} {}",
                label(&o.line),
                u8::from(s == now)
            );
        }
    }
    if !device_last.is_empty() {
        let _ = writeln!(
            m,
            "# HELP cidguard_device_state The device's state from its latest call-in (1 for the state it is in)."
        );
        let _ = writeln!(m, "# TYPE cidguard_device_state gauge");
        for (last, d) in &device_last {
            let now = state_word(last.as_ref());
            for s in ["pass", "fail", "inconclusive", "unchecked"] {
                let _ = writeln!(
                    m,
                    "cidguard_device_state{{device=\"{}\",state=\"{s}\"}} {}",
                    label(d),
                    u8::from(s == now)
                );
            }
        }
    }
    let _ = writeln!(
        m,
        "# HELP cidguard_check_duration_seconds How long the line's latest check took."
    );
    let _ = writeln!(m, "# TYPE cidguard_check_duration_seconds gauge");
    for o in &ov {
        if let Some(c) = &o.latest {
            let _ = writeln!(
                m,
                "cidguard_check_duration_seconds{{line=\"{}\"}} {}",
                label(&o.line),
                c.result.duration_ms as f64 / 1000.0
            );
        }
    }
    let _ = writeln!(
        m,
        "# HELP cidguard_checks_total Checks recorded, by outcome."
    );
    let _ = writeln!(m, "# TYPE cidguard_checks_total counter");
    for (o, t) in ov.iter().zip(&totals) {
        for (word, n) in [
            ("pass", t.pass),
            ("fail", t.fail),
            ("inconclusive", t.inconclusive),
        ] {
            let _ = writeln!(
                m,
                "cidguard_checks_total{{line=\"{}\",outcome=\"{word}\"}} {n}",
                label(&o.line)
            );
        }
    }
    let _ = writeln!(
        m,
        "# HELP cidguard_alert_outbox_pending Alerts waiting to be sent."
    );
    let _ = writeln!(m, "# TYPE cidguard_alert_outbox_pending gauge");
    let _ = writeln!(m, "cidguard_alert_outbox_pending {pending}");
    let _ = writeln!(
        m,
        "# HELP cidguard_pbx_last_change_timestamp_seconds When the PBX's software last changed."
    );
    let _ = writeln!(m, "# TYPE cidguard_pbx_last_change_timestamp_seconds gauge");
    let mut latest: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
    for c in &changes {
        let e = latest.entry(c.registrar.as_str()).or_insert(c.at_ms);
        *e = (*e).max(c.at_ms);
    }
    for (r, at) in latest {
        let _ = writeln!(
            m,
            "cidguard_pbx_last_change_timestamp_seconds{{registrar=\"{}\"}} {}",
            label(r),
            at / 1000
        );
    }
    if let Some(stats) = st.inner.endpoint_stats.get().and_then(|f| f()) {
        endpoint_metrics(&mut m, &stats);
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        m,
    )
        .into_response())
}

/// The endpoint's counters: what it received, what its guard shed and why,
/// stray calls, connections. The traffic an endpoint on the open internet
/// turns away, so an operator can see a scan or a flood, and a
/// misconfigured allow-list, without reading logs.
fn endpoint_metrics(m: &mut String, s: &crate::sip::endpoint::EndpointStats) {
    use std::fmt::Write;
    let t = &s.transport;
    let g = &t.guard;
    let counter = |m: &mut String, name: &str, help: &str, rows: &[(&str, u64)]| {
        let _ = writeln!(m, "# HELP {name} {help}");
        let _ = writeln!(m, "# TYPE {name} counter");
        for (labels, v) in rows {
            if labels.is_empty() {
                let _ = writeln!(m, "{name} {v}");
            } else {
                let _ = writeln!(m, "{name}{{{labels}}} {v}");
            }
        }
    };
    counter(
        m,
        "cidguard_endpoint_messages_total",
        "SIP messages the endpoint received and sent.",
        &[
            ("direction=\"in\"", t.messages_in),
            ("direction=\"out\"", t.messages_out),
        ],
    );
    counter(
        m,
        "cidguard_endpoint_dropped_total",
        "Messages and connections the endpoint turned away, by reason.",
        &[
            ("reason=\"not-allowed\"", g.not_allowed),
            ("reason=\"over-budget\"", g.over_budget),
            ("reason=\"source-connections\"", g.connections_refused),
            ("reason=\"source-buffer\"", g.buffer_limit),
            ("reason=\"source-transactions\"", g.transactions_refused),
            ("reason=\"queue-full\"", t.queue_full),
            ("reason=\"queue-pushed-out\"", t.queue_pushed_out),
            ("reason=\"not-sip\"", t.garbage),
            ("reason=\"bad-framing\"", t.connections_closed_bad_framing),
            ("reason=\"message-timeout\"", t.message_timeouts),
            ("reason=\"write-timeout\"", t.write_timeouts),
            ("reason=\"connection-limit\"", t.connections_refused),
            ("reason=\"connection-evicted\"", t.connections_evicted),
            ("reason=\"unanswerable\"", s.stack.unanswerable),
            ("reason=\"stray-response\"", s.stack.stray_responses),
        ],
    );
    counter(
        m,
        "cidguard_endpoint_stateless_responses_total",
        "Requests answered without keeping state (OPTIONS, stray calls, malformed, over a limit).",
        &[("", s.stack.stateless_responses)],
    );
    counter(
        m,
        "cidguard_endpoint_calls_total",
        "INVITEs for the endpoint's numbers, and those turned away.",
        &[
            ("kind=\"handled\"", s.calls),
            ("kind=\"stray\"", s.stray),
            ("kind=\"rate-limited\"", s.rate_limited),
            ("kind=\"over-capacity\"", s.over_capacity),
        ],
    );
    let _ = writeln!(
        m,
        "# HELP cidguard_endpoint_connections TCP/TLS connections open now."
    );
    let _ = writeln!(m, "# TYPE cidguard_endpoint_connections gauge");
    let _ = writeln!(m, "cidguard_endpoint_connections {}", t.connections);
    let _ = writeln!(
        m,
        "# HELP cidguard_endpoint_sources Sources (addresses, IPv6 /64s) the guard tracks now."
    );
    let _ = writeln!(m, "# TYPE cidguard_endpoint_sources gauge");
    let _ = writeln!(m, "cidguard_endpoint_sources {}", g.sources);
}

// ----- serving ------------------------------------------------------------

/// Serve the app on `listener` until `shutdown` completes, then let the
/// requests in progress finish (for at most a few seconds).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), WebError> {
    let addr = listener
        .local_addr()
        .map_err(|e| WebError::Internal(format!("the dashboard's listener: {e}")))?;
    // A `listen` that named a host: the address it became.
    let _ = state.inner.hosts.listen.set(addr.ip());
    tracing::info!("dashboard at http://{addr}/");
    let (stopping, mut stopped) = watch::channel(false);
    let mut task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app(state))
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!("dashboard stopped: {e}");
        }
    });
    tokio::select! {
        _ = shutdown => {}
        // The server ended by itself (its error is logged).
        _ = &mut task => return Ok(()),
    }
    let _ = stopping.send(true);
    if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
        .await
        .is_err()
    {
        tracing::warn!("dashboard: requests still open after the grace period; closing");
        task.abort();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: `next=/\t/host` was accepted (browsers drop the tab and
    /// go to //host), and a newline in `next` answered 500.
    #[test]
    fn next_is_a_path_on_this_site_or_home() {
        for (given, want) in [
            ("/lines/refuge?cursor=x", "/lines/refuge?cursor=x"),
            ("/", "/"),
            ("/checks/1#x", "/checks/1#x"),
            ("/lines/r%C3%A9fuge", "/lines/r%C3%A9fuge"),
            // Outside printable ASCII: encoded, so always a valid header.
            ("/lines/réfuge now", "/lines/r%C3%A9fuge%20now"),
            ("//evil.example/", "/"),
            ("/\\evil.example", "/"),
            ("/\t/evil.example", "/"),
            ("/a\\b", "/"),
            ("/\r\nSet-Cookie: x=1", "/"),
            ("/x\u{7f}", "/"),
            ("/x\u{9b}", "/"),
            ("https://evil.example/", "/"),
            ("javascript:alert(1)", "/"),
            ("evil.example", "/"),
            ("", "/"),
        ] {
            assert_eq!(safe_next(Some(given)), want, "{given:?}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn host_names_are_split_and_checked() {
        assert_eq!(
            split_host("LocalHost:8080"),
            Some(("localhost".into(), Some(8080)))
        );
        assert_eq!(split_host("[::1]:80"), Some(("::1".into(), Some(80))));
        assert_eq!(split_host("[::1]"), Some(("::1".into(), None)));
        for bad in [
            "", ":80", "::1", "[::1", "[nope]", "a:b:c", "a:", "a:99999", "a b", "a%2eb", "a/b",
        ] {
            assert_eq!(split_host(bad), None, "{bad:?}");
        }
        let dash = |listen: &str, public: Option<&str>| Dashboard {
            listen: listen.into(),
            public_url: public.map(str::to_string),
            ..Dashboard::default()
        };
        let loopback = AllowedHosts::new(&dash("127.0.0.1:8080", None));
        for ok in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "127.0.0.1:9000",
            "localhost",
            "localhost:8080",
            "[::1]:8080",
            "[::1]",
        ] {
            assert!(loopback.allows(ok), "{ok}");
        }
        for no in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "192.0.2.1:8080",
            "localhost.",
        ] {
            assert!(!loopback.allows(no), "{no}");
        }
        let public = AllowedHosts::new(&dash(
            "192.0.2.5:8080",
            Some("https://admin@Dash.Example.org:8443/cidguard/"),
        ));
        for ok in [
            "dash.example.org",
            "dash.example.org:8443",
            "192.0.2.5:8080",
            "127.0.0.1:8080",
        ] {
            assert!(public.allows(ok), "{ok}");
        }
        for no in ["192.0.2.6:8080", "example.org", "evil.example"] {
            assert!(!public.allows(no), "{no}");
        }
        // Every interface: any address, but still no foreign names.
        let any = AllowedHosts::new(&dash("0.0.0.0:8080", None));
        assert!(any.allows("192.0.2.6:8080") && any.allows("[2001:db8::1]:8080"));
        assert!(!any.allows("evil.example:8080"));
    }

    #[test]
    fn sessions_are_random_expire_and_end() {
        let mut s = Sessions::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let a = s.start(t0);
        let b = s.start(t0);
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(s.valid(&a, t0 + Duration::from_secs(59)));
        assert!(!s.valid(&a, t0 + Duration::from_secs(60)));
        s.end(&b);
        assert!(!s.valid(&b, t0));
        assert!(!s.valid("", t0) && !s.valid("00", t0));
    }

    #[test]
    fn sessions_are_bounded_dropping_the_oldest() {
        let mut s = Sessions::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let first = s.start(t0);
        let ids: Vec<String> = (1..=SESSIONS_MAX as u64)
            .map(|i| s.start(t0 + Duration::from_millis(i)))
            .collect();
        assert_eq!(s.ends.len(), SESSIONS_MAX);
        assert!(!s.valid(&first, t0));
        assert!(ids.iter().all(|id| s.valid(id, t0)));
    }
}

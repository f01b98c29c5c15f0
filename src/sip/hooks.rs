//! Library entry points behind command-line subcommands: test a line's
//! registration, and listen for calls while reporting who they claim to be
//! from. The binary only parses arguments and prints.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::Rng;

use super::account::Account;
use super::endpoint::{
    CallHandler, Disposition, Endpoint, EndpointError, EndpointOptions, EndpointSpec, FinishedCall,
    IncomingCall, StrayCall, Then,
};
use super::transport::Transport;
use super::uac::{Line, LineOptions, RegisterReport, UacError};

impl fmt::Display for RegisterReport {
    /// One line for a person: status, lifetime granted, and the PBX's
    /// product string (which often names its version). The reason phrase
    /// and the product string come from the wire: control characters are
    /// escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::escape::control as esc;
        write!(f, "{} {}", self.status, esc(&self.reason))?;
        if let Some(e) = self.expires {
            write!(f, ", registered for {}s", e.as_secs())?;
        }
        write!(f, " after {} REGISTER(s)", self.attempts)?;
        match &self.server {
            Some(s) => write!(f, "; registrar says it is \"{}\"", esc(s)),
            None => write!(f, "; registrar sent no Server or User-Agent"),
        }
    }
}

/// Register a line once to check its account, then remove the binding
/// again so the test leaves nothing behind. Returns the REGISTER's report.
pub async fn register_line(
    account: &Account,
    opts: LineOptions,
) -> Result<RegisterReport, UacError> {
    let line = Line::new(account, opts).await?;
    let report = line.register().await;
    if let Ok(r) = &report {
        if r.registered() {
            if let Err(e) = line.unregister().await {
                tracing::warn!(error = %crate::escape::control(&e.to_string()), "could not remove the test registration");
            }
        }
    }
    line.close();
    report
}

/// What a listener reports for each call that arrives.
#[derive(Debug, Clone)]
pub struct CallIdentity {
    pub call_id: String,
    /// The endpoint number dialled; None for a stray call (answered 404).
    pub number: Option<String>,
    /// The user part dialled (masked to its last two digits for a stray
    /// call).
    pub dialled: String,
    pub transport: Transport,
    pub source: SocketAddr,
    pub received_at: SystemTime,
    /// From, P-Asserted-Identity, P-Preferred-Identity, Remote-Party-ID,
    /// Privacy, Identity, Diversion, History-Info and Contact, as received
    /// (none for a stray call, whose caller may be anyone).
    pub headers: Vec<(String, String)>,
}

/// How a listener treats each call: rings for a random time between `min`
/// and `max`, then rejects it with `reject_code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// Shortest ring before the reject.
    pub min: Duration,
    /// Longest ring before the reject.
    pub max: Duration,
    /// The final response (4xx-6xx).
    pub reject_code: u16,
}

struct Reporter<F> {
    /// Called for each arriving call.
    report: F,
    /// What every call gets.
    hold: Hold,
}

impl<F: Fn(&CallIdentity) + Send + Sync + 'static> CallHandler for Reporter<F> {
    fn on_invite(&self, call: &IncomingCall) -> Disposition {
        (self.report)(&CallIdentity {
            call_id: call.call_id.clone(),
            number: Some(call.number.clone()),
            dialled: call.dialled.clone(),
            transport: call.transport,
            source: call.source,
            received_at: call.received_at,
            headers: call.identity.clone(),
        });
        let Hold {
            min,
            max,
            reject_code,
        } = self.hold;
        let hold = if max > min {
            rand::thread_rng().gen_range(min..=max)
        } else {
            min
        };
        Disposition::Hold {
            hold,
            then: Then::Reject(reject_code),
        }
    }

    fn on_finished(&self, _call: FinishedCall) {}

    fn on_stray(&self, call: &StrayCall) {
        // A call to a number that isn't ours may be anyone's (a misrouted
        // real call): its dialled number is shown masked and its caller's
        // identity not at all.
        (self.report)(&CallIdentity {
            call_id: call.call_id.clone(),
            number: None,
            dialled: crate::escape::mask_digits(&call.dialled),
            transport: call.transport,
            source: call.source,
            received_at: call.received_at,
            headers: Vec::new(),
        });
    }
}

/// Run the endpoint until `shutdown` resolves, reporting each arriving
/// call's identity headers. Calls ring for a random hold between the
/// configured bounds and are then rejected with the configured code.
pub async fn listen<F, S>(
    spec: &EndpointSpec,
    hold: Hold,
    opts: EndpointOptions,
    report: F,
    shutdown: S,
) -> Result<(), EndpointError>
where
    F: Fn(&CallIdentity) + Send + Sync + 'static,
    S: Future<Output = ()>,
{
    let handler = Arc::new(Reporter { report, hold });
    let handle = Endpoint::start_with(spec, handler, opts).await?;
    shutdown.await;
    handle.shutdown().await;
    Ok(())
}

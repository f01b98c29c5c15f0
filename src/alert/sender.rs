//! The background sender: drains the outbox, retries with exponential
//! backoff, and marks an alert sent only once the server has accepted it.
//!
//! Checks never wait for it: they only enqueue (a database write). An SMTP
//! outage only makes alerts wait in the outbox, with their attempts and last
//! error visible there; a restart picks up whatever is unsent.
//!
//! Delivery is at least once, not exactly once, at one edge: if the process
//! dies (or the database refuses the write) after the server answered 250 to
//! the message but before `mark_sent` is stored, the alert is sent again
//! after the restart. Closing that gap would need the server to deduplicate;
//! instead the copy carries the same Message-ID (derived from the dedupe
//! key), which lets mail clients fold it. Within one run, an alert whose
//! `mark_sent` failed is remembered and not sent again; marking is retried.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::config::Alerts;

use super::mailer::{now_ms, Mailer, SendError};
use super::{OutboxStore, OutgoingAlert};

/// Exponential backoff: `initial`, doubling per failed attempt, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    /// The wait after the `failures`-th failed attempt (1 for the first).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(62);
        let factor = 1u64 << doublings;
        let ms = u64::try_from(self.initial.as_millis())
            .unwrap_or(u64::MAX)
            .saturating_mul(factor);
        Duration::from_millis(ms).min(self.max)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_secs(30),
            max: Duration::from_secs(3600),
        }
    }
}

/// How the sender runs.
#[derive(Debug, Clone)]
pub struct SenderOptions {
    pub retry: RetryPolicy,
    /// How often to look for due alerts when nothing wakes the sender.
    pub poll_every: Duration,
    /// Alerts taken from the outbox per round.
    pub batch: usize,
    /// Notify after enqueueing so the alert goes out at once.
    pub wake: Arc<Notify>,
}

impl SenderOptions {
    pub fn from_config(a: &Alerts) -> SenderOptions {
        SenderOptions {
            retry: RetryPolicy {
                initial: a.retry_initial,
                max: a.retry_max,
            },
            ..SenderOptions::default()
        }
    }
}

impl Default for SenderOptions {
    fn default() -> Self {
        SenderOptions {
            retry: RetryPolicy::default(),
            poll_every: Duration::from_secs(5),
            batch: 20,
            wake: Arc::new(Notify::new()),
        }
    }
}

/// What a sender did before it stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderStats {
    pub sent: u64,
    pub failed_attempts: u64,
}

/// A store call failed or could not run.
#[derive(Debug, thiserror::Error)]
enum StoreCallError<E: std::error::Error + 'static> {
    #[error("{what}: {source}")]
    Store { what: &'static str, source: E },
    #[error("{what}: the store call did not complete: {source}")]
    Join {
        what: &'static str,
        source: tokio::task::JoinError,
    },
}

/// Run a store method on the blocking pool: a database call must not stall
/// the async workers that run the checks.
async fn blocking<S, T, F>(
    store: &Arc<S>,
    what: &'static str,
    f: F,
) -> Result<T, StoreCallError<S::Error>>
where
    S: OutboxStore + 'static,
    T: Send + 'static,
    F: FnOnce(&S) -> Result<T, S::Error> + Send + 'static,
{
    let s = Arc::clone(store);
    match tokio::task::spawn_blocking(move || f(&s)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(StoreCallError::Store { what, source }),
        Err(source) => Err(StoreCallError::Join { what, source }),
    }
}

/// Send queued alerts until `shutdown` completes. A message being sent when
/// shutdown comes is finished first (each SMTP step has a time limit), so
/// stopping doesn't widen the at-least-once edge described above.
pub async fn run_sender<S, F>(
    store: Arc<S>,
    mailer: Mailer,
    options: SenderOptions,
    shutdown: F,
) -> SenderStats
where
    S: OutboxStore + 'static,
    F: Future<Output = ()>,
{
    let mut stats = SenderStats::default();
    // Sent, but the store did not take `mark_sent`: id -> sent at.
    let mut unmarked: HashMap<i64, i64> = HashMap::new();
    tokio::pin!(shutdown);
    let mut stopping = false;
    // Polls the shutdown future once without waiting; it is never polled
    // again after completing.
    macro_rules! check_shutdown {
        () => {
            if !stopping {
                tokio::select! {
                    biased;
                    _ = &mut shutdown => stopping = true,
                    _ = std::future::ready(()) => {}
                }
            }
        };
    }
    tracing::info!(via = %mailer.describe(), "alert sender started");
    loop {
        check_shutdown!();
        if stopping {
            break;
        }
        retry_marks(&store, &mut unmarked).await;

        let now = now_ms();
        let batch = options.batch.max(1);
        match blocking(&store, "reading due alerts", move |s| s.due(now, batch)).await {
            Err(e) => tracing::warn!(error = %e, "alert outbox"),
            Ok(due) => {
                let mut server_down: Option<String> = None;
                for alert in due {
                    check_shutdown!();
                    if stopping {
                        break;
                    }
                    if unmarked.contains_key(&alert.id) {
                        continue;
                    }
                    let outcome = if let Some(e) = server_down.clone() {
                        // The server could not be used for the previous
                        // alert: don't hammer it, count this one as failed
                        // with the same error and let the backoff work.
                        Err(e)
                    } else {
                        mailer.send(&alert).await.map_err(|e| {
                            let text = e.to_string();
                            if e.is_server_level() {
                                server_down = Some(text.clone());
                            }
                            log_failure(&alert, &e);
                            text
                        })
                    };
                    match outcome {
                        Ok(d) => {
                            stats.sent += 1;
                            for r in &d.refused {
                                tracing::warn!(
                                    id = alert.id,
                                    recipient = %r.recipient,
                                    reply = %r.reply,
                                    "alert recipient refused; sent to the others"
                                );
                            }
                            tracing::info!(
                                id = alert.id,
                                kind = %alert.kind,
                                line = alert.line.as_deref().unwrap_or("-"),
                                reply = %d.reply,
                                "alert sent"
                            );
                            let (id, at) = (alert.id, now_ms());
                            if let Err(e) = blocking(&store, "marking an alert sent", move |s| {
                                s.mark_sent(id, at)
                            })
                            .await
                            {
                                tracing::warn!(id, error = %e, "alert sent but not yet marked; will retry marking");
                                unmarked.insert(id, at);
                            }
                        }
                        Err(text) => {
                            stats.failed_attempts += 1;
                            let failures = alert.attempts.saturating_add(1);
                            let delay = options.retry.delay(failures);
                            let next = now_ms().saturating_add(
                                i64::try_from(delay.as_millis()).unwrap_or(i64::MAX),
                            );
                            let id = alert.id;
                            if let Err(e) = blocking(&store, "recording a failed send", move |s| {
                                s.mark_failed(id, &text, next)
                            })
                            .await
                            {
                                tracing::warn!(id, error = %e, "alert outbox");
                            }
                        }
                    }
                }
            }
        }
        if stopping {
            break;
        }
        tokio::select! {
            _ = &mut shutdown => stopping = true,
            _ = options.wake.notified() => {}
            _ = tokio::time::sleep(options.poll_every) => {}
        }
        if stopping {
            break;
        }
    }
    retry_marks(&store, &mut unmarked).await;
    tracing::info!(
        sent = stats.sent,
        failed_attempts = stats.failed_attempts,
        unmarked = unmarked.len(),
        "alert sender stopped"
    );
    stats
}

fn log_failure(alert: &OutgoingAlert, e: &SendError) {
    tracing::warn!(
        id = alert.id,
        kind = %alert.kind,
        attempts = alert.attempts + 1,
        error = %e,
        "alert not sent; will retry"
    );
}

async fn retry_marks<S: OutboxStore + 'static>(store: &Arc<S>, unmarked: &mut HashMap<i64, i64>) {
    let pending: Vec<(i64, i64)> = unmarked.iter().map(|(k, v)| (*k, *v)).collect();
    for (id, at) in pending {
        if blocking(store, "marking an alert sent", move |s| s.mark_sent(id, at))
            .await
            .is_ok()
        {
            unmarked.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            initial: Duration::from_secs(30),
            max: Duration::from_secs(3600),
        };
        let secs: Vec<u64> = (1..=10).map(|n| p.delay(n).as_secs()).collect();
        assert_eq!(secs, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
        // No overflow however many attempts.
        assert_eq!(p.delay(u32::MAX), Duration::from_secs(3600));
        assert_eq!(p.delay(0), Duration::from_secs(30));
    }
}

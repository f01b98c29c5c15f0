//! The background senders: one per channel, each draining that channel's
//! deliveries from the outbox, retrying with exponential backoff, and
//! marking a delivery done only once the far end has taken it.
//!
//! Checks never wait for them: they only queue (a database write). A
//! channel's outage only makes its own deliveries wait in the outbox, with
//! their attempts and last error visible there; the other channels' senders
//! run on as if nothing happened. A restart picks up whatever is pending.
//!
//! Delivery is at least once, not exactly once, at one edge: if the process
//! dies (or the database refuses the write) after the far end took a notice
//! but before `mark_delivered` is stored, it is sent again after the
//! restart. The copy carries the same delivery id (email Message-ID,
//! webhook `Idempotency-Key`, Matrix transaction id) so the receiver can
//! drop it. Within one run, a delivery whose mark failed is remembered and
//! not sent again; marking is retried.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::config::Alerts;
use crate::store::{Delivery, OutboxStore};

use super::channel::Channel;
use super::mailer::now_ms;
use super::notice::Notice;

/// Exponential backoff: `initial`, doubling per failed attempt, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first wait.
    pub initial: Duration,
    /// The longest wait.
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

/// How a sender runs.
#[derive(Debug, Clone)]
pub struct SenderOptions {
    /// Backoff between attempts of one delivery.
    pub retry: RetryPolicy,
    /// How often to look for due deliveries when nothing wakes the sender.
    pub poll_every: Duration,
    /// Deliveries taken from the outbox per round.
    pub batch: usize,
    /// Notified after queueing, so the notice goes out at once.
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
    /// Deliveries the far end took.
    pub sent: u64,
    /// Attempts that failed.
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

/// The notice of a delivery, if its JSON can be read.
fn notice_of(d: &Delivery) -> Result<Notice, String> {
    serde_json::from_str(&d.notice_json)
        .map_err(|e| format!("the stored notice can't be read: {e}"))
}

/// Deliver a channel's pending notices until `shutdown` completes. A
/// delivery in progress when shutdown comes is finished first (every step
/// has a time limit), so stopping doesn't widen the at-least-once edge
/// described above.
pub async fn run_sender<S, F>(
    store: Arc<S>,
    channel: Arc<dyn Channel>,
    options: SenderOptions,
    shutdown: F,
) -> SenderStats
where
    S: OutboxStore + 'static,
    F: Future<Output = ()>,
{
    let name = channel.name().to_string();
    let mut stats = SenderStats::default();
    // Delivered, but the store did not take `mark_delivered`: id -> (at, answer).
    let mut unmarked: HashMap<i64, (i64, String)> = HashMap::new();
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
    tracing::info!(channel = %name, via = %channel.describe(), "alert sender started");
    loop {
        check_shutdown!();
        if stopping {
            break;
        }
        retry_marks(&store, &mut unmarked).await;

        let now = now_ms();
        let batch = options.batch.max(1);
        let ch = name.clone();
        match blocking(&store, "reading due deliveries", move |s| {
            s.due(&ch, now, batch)
        })
        .await
        {
            Err(e) => tracing::warn!(channel = %name, error = %e, "alert outbox"),
            Ok(due) => {
                let mut down: Option<(String, Option<Duration>)> = None;
                for d in due {
                    check_shutdown!();
                    if stopping {
                        break;
                    }
                    if unmarked.contains_key(&d.id) {
                        continue;
                    }
                    let notice = match notice_of(&d) {
                        Ok(n) => n,
                        Err(e) => {
                            tracing::error!(channel = %name, id = d.id, error = %e, "alert dropped");
                            let id = d.id;
                            let _ = blocking(&store, "dropping a delivery", move |s| {
                                s.mark_dropped(id, &e)
                            })
                            .await;
                            continue;
                        }
                    };
                    let outcome = if let Some(e) = down.clone() {
                        // The channel could not be used for the previous
                        // notice: don't hammer it, count this one as failed
                        // with the same error and let the backoff work.
                        Err(e)
                    } else {
                        channel.deliver(&notice).await.map_err(|e| {
                            let text = e.to_string();
                            tracing::warn!(
                                channel = %name,
                                id = d.id,
                                kind = %d.kind,
                                attempts = d.attempts + 1,
                                error = %text,
                                "alert not delivered; will retry"
                            );
                            if e.channel_down {
                                down = Some((text.clone(), e.retry_after));
                            }
                            (text, e.retry_after)
                        })
                    };
                    match outcome {
                        Ok(done) => {
                            crate::crash::crash_point(&format!("after-deliver:{name}"));
                            stats.sent += 1;
                            tracing::info!(
                                channel = %name,
                                id = d.id,
                                kind = %d.kind,
                                line = d.line.as_deref().unwrap_or("-"),
                                answer = %crate::escape::clip(&done.answer, 200),
                                "alert delivered"
                            );
                            let (id, at, answer) = (d.id, now_ms(), done.answer);
                            let a2 = answer.clone();
                            if let Err(e) = blocking(&store, "marking a delivery done", move |s| {
                                s.mark_delivered(id, at, &a2)
                            })
                            .await
                            {
                                tracing::warn!(channel = %name, id, error = %e, "alert delivered but not yet marked; will retry marking");
                                unmarked.insert(id, (at, answer));
                            }
                            crate::crash::crash_point(&format!("after-mark:{name}"));
                        }
                        Err((text, retry_after)) => {
                            stats.failed_attempts += 1;
                            let failures = d.attempts.saturating_add(1);
                            let mut delay = options.retry.delay(failures);
                            if let Some(wait) = retry_after {
                                delay = delay.max(wait.min(options.retry.max));
                            }
                            let next = now_ms().saturating_add(
                                i64::try_from(delay.as_millis()).unwrap_or(i64::MAX),
                            );
                            let id = d.id;
                            if let Err(e) =
                                blocking(&store, "recording a failed delivery", move |s| {
                                    s.mark_failed(id, &text, next)
                                })
                                .await
                            {
                                tracing::warn!(channel = %name, id, error = %e, "alert outbox");
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
        channel = %name,
        sent = stats.sent,
        failed_attempts = stats.failed_attempts,
        unmarked = unmarked.len(),
        "alert sender stopped"
    );
    stats
}

async fn retry_marks<S: OutboxStore + 'static>(
    store: &Arc<S>,
    unmarked: &mut HashMap<i64, (i64, String)>,
) {
    let pending: Vec<(i64, i64, String)> = unmarked
        .iter()
        .map(|(k, (at, a))| (*k, *at, a.clone()))
        .collect();
    for (id, at, answer) in pending {
        if blocking(store, "marking a delivery done", move |s| {
            s.mark_delivered(id, at, &answer)
        })
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

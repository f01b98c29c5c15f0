//! The systemd notification protocol (`sd_notify`), spoken directly: one
//! datagram of `KEY=value` lines to the unix socket named in
//! `$NOTIFY_SOCKET` (a path, or an abstract name written with a leading
//! '@'). Outside systemd there is no socket and every call is a no-op.
//!
//! Written here rather than taken from a crate: it is a dozen lines over
//! the standard library's `UnixDatagram`.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Sends readiness, status and watchdog pings to the service manager.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier {
            target: None,
            watchdog: None,
        }
    }

    /// From the environment systemd sets: `NOTIFY_SOCKET`, and
    /// `WATCHDOG_USEC` (honoured only when `WATCHDOG_PID` is unset or ours).
    pub fn from_env() -> Notifier {
        let socket = std::env::var("NOTIFY_SOCKET").ok();
        let watchdog = watchdog_from(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        match socket.filter(|s| !s.is_empty()) {
            Some(s) => Notifier::to_socket(&s, watchdog).unwrap_or_else(|e| {
                tracing::warn!("can't use NOTIFY_SOCKET {s:?}: {e}; not notifying systemd");
                Notifier::disabled()
            }),
            None => Notifier::disabled(),
        }
    }

    /// Notify the socket at `addr` (a path, or `@name` for an abstract
    /// socket). `watchdog` is systemd's WatchdogSec; pings go at half of it.
    pub fn to_socket(addr: &str, watchdog: Option<Duration>) -> io::Result<Notifier> {
        let sa = match addr.strip_prefix('@') {
            Some(name) => abstract_addr(name.as_bytes())?,
            None => SocketAddr::from_pathname(addr)?,
        };
        Ok(Notifier {
            target: Some((UnixDatagram::unbound()?, sa)),
            watchdog,
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// How often to send WATCHDOG=1: half of WatchdogSec, as systemd advises.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|w| (w / 2).max(Duration::from_millis(1)))
    }

    /// Send raw `KEY=value` lines. Failures are logged, never fatal: the
    /// daemon's work matters more than telling systemd about it.
    pub fn notify(&self, state: &str) {
        if let Some((sock, addr)) = &self.target {
            if let Err(e) = sock.send_to_addr(state.as_bytes(), addr) {
                tracing::debug!("sd_notify failed: {e}");
            }
        }
    }

    pub fn ready(&self, status: &str) {
        self.notify(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    pub fn reloading(&self) {
        self.notify("RELOADING=1");
    }

    pub fn stopping(&self) {
        self.notify("STOPPING=1\nSTATUS=stopping");
    }

    pub fn status(&self, status: &str) {
        self.notify(&format!("STATUS={}", one_line(status)));
    }

    pub fn watchdog(&self) {
        self.notify("WATCHDOG=1");
    }
}

/// A status is one line: a newline would start another assignment.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(target_os = "linux")]
fn abstract_addr(name: &[u8]) -> io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(target_os = "linux"))]
fn abstract_addr(_name: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract sockets exist only on Linux",
    ))
}

/// WatchdogSec as systemd passes it; None when not set, not for us, or 0.
pub fn watchdog_from(usec: Option<&str>, pid: Option<&str>, our_pid: u32) -> Option<Duration> {
    if let Some(p) = pid {
        if p.trim().parse::<u32>().ok() != Some(our_pid) {
            return None;
        }
    }
    let us: u64 = usec?.trim().parse().ok()?;
    (us > 0).then(|| Duration::from_micros(us))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_settings() {
        assert_eq!(
            watchdog_from(Some("30000000"), None, 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            watchdog_from(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(watchdog_from(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_from(None, None, 7), None);
        assert_eq!(watchdog_from(Some("x"), None, 7), None);
    }

    #[test]
    fn disabled_is_a_no_op() {
        let n = Notifier::disabled();
        assert!(!n.is_enabled());
        n.ready("x");
        n.watchdog();
        assert_eq!(n.watchdog_interval(), None);
    }

    #[test]
    fn status_is_one_line() {
        assert_eq!(one_line("a\nREADY=1"), "a READY=1");
    }
}

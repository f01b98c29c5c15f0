//! Choosing the direction that matters: `--from-host` / `--to-host`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// An address, a network (CIDR) or an address with a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostSpec {
    /// The address or network address.
    addr: IpAddr,
    /// Prefix length in bits (32 or 128 for one address).
    prefix: u8,
    /// Only this port, when given.
    port: Option<u16>,
}

/// Why a host spec can't be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not an address, a network or an address with a port (write 203.0.113.5, 203.0.113.0/24, 203.0.113.5:5060, 2001:db8::/32 or [2001:db8::5]:5060)")]
pub struct HostSpecError {
    /// What was given.
    pub text: String,
}

impl FromStr for HostSpec {
    type Err = HostSpecError;

    fn from_str(s: &str) -> Result<HostSpec, HostSpecError> {
        let t = s.trim();
        let err = || HostSpecError {
            text: s.to_string(),
        };
        if let Ok(a) = t.parse::<IpAddr>() {
            return Ok(HostSpec::single(a, None));
        }
        if let Ok(sa) = t.parse::<SocketAddr>() {
            return Ok(HostSpec::single(sa.ip(), Some(sa.port())));
        }
        let (a, p) = t.split_once('/').ok_or_else(err)?;
        let addr: IpAddr = a.parse().map_err(|_| err())?;
        let prefix: u8 = p.parse().map_err(|_| err())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(err());
        }
        Ok(HostSpec {
            addr,
            prefix,
            port: None,
        })
    }
}

impl fmt::Display for HostSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let full = if self.addr.is_ipv4() { 32 } else { 128 };
        match (self.port, self.prefix == full) {
            (Some(p), _) => write!(f, "{}", SocketAddr::new(self.addr, p)),
            (None, true) => write!(f, "{}", self.addr),
            (None, false) => write!(f, "{}/{}", self.addr, self.prefix),
        }
    }
}

impl HostSpec {
    fn single(addr: IpAddr, port: Option<u16>) -> HostSpec {
        HostSpec {
            addr,
            prefix: if addr.is_ipv4() { 32 } else { 128 },
            port,
        }
    }

    /// Does this address (and port) fall under the spec?
    pub fn matches(&self, sa: SocketAddr) -> bool {
        if self.port.is_some_and(|p| p != sa.port()) {
            return false;
        }
        // An IPv4 peer seen through an IPv6 socket (::ffff:a.b.c.d).
        let ip = match sa.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), self.prefix),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), self.prefix),
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let bits = usize::from(bits);
    let whole = bits / 8;
    if a[..whole] != b[..whole] {
        return false;
    }
    let rem = bits % 8;
    if rem == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rem);
    (a[whole] & mask) == (b[whole] & mask)
}

/// Which messages are judged: from any of `from` (or anywhere when empty)
/// to any of `to` (or anywhere when empty).
#[derive(Debug, Clone, Default)]
pub struct Selector {
    /// Senders whose messages are judged (any when empty).
    pub from: Vec<HostSpec>,
    /// Receivers whose messages are judged (any when empty).
    pub to: Vec<HostSpec>,
}

impl Selector {
    pub fn selects(&self, src: SocketAddr, dst: SocketAddr) -> bool {
        (self.from.is_empty() || self.from.iter().any(|h| h.matches(src)))
            && (self.to.is_empty() || self.to.iter().any(|h| h.matches(dst)))
    }

    /// True when every direction is judged.
    pub fn is_everything(&self) -> bool {
        self.from.is_empty() && self.to.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn specs_parse_and_match() {
        let net: HostSpec = "203.0.113.0/24".parse().unwrap();
        assert!(net.matches(sa("203.0.113.77:5060")));
        assert!(!net.matches(sa("203.0.114.1:5060")));
        assert!(net.matches(sa("[::ffff:203.0.113.9]:5060")));
        let hp: HostSpec = "127.0.0.1:5080".parse().unwrap();
        assert!(hp.matches(sa("127.0.0.1:5080")));
        assert!(!hp.matches(sa("127.0.0.1:5081")));
        let v6: HostSpec = "2001:db8::/33".parse().unwrap();
        assert!(v6.matches(sa("[2001:db8:7fff::1]:5060")));
        assert!(!v6.matches(sa("[2001:db8:8000::1]:5060")));
        let v6p: HostSpec = "[::1]:5060".parse().unwrap();
        assert!(v6p.matches(sa("[::1]:5060")));
        assert_eq!(v6p.to_string(), "[::1]:5060");
        assert_eq!(net.to_string(), "203.0.113.0/24");
        for bad in ["", "pbx.example", "10.0.0.0/33", "10.0.0.1:99999", "::/129"] {
            assert!(bad.parse::<HostSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn selector_needs_both_sides() {
        let s = Selector {
            from: vec!["10.0.0.1".parse().unwrap()],
            to: vec!["203.0.113.0/24".parse().unwrap()],
        };
        assert!(s.selects(sa("10.0.0.1:5060"), sa("203.0.113.5:5060")));
        assert!(!s.selects(sa("203.0.113.5:5060"), sa("10.0.0.1:5060")));
        assert!(Selector::default().selects(sa("1.1.1.1:1"), sa("2.2.2.2:2")));
    }
}

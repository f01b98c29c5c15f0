//! Hosts: the organisation's domains and IP addresses, found as whole tokens.
//!
//! A configured domain also matches its subdomains (`eastside-refuge.org.au`
//! catches `pbx.eastside-refuge.org.au`), never a longer label
//! (`xeastside-refuge.org.au`). Addresses are compared as parsed IPs, so
//! `203.0.113.10` doesn't match `203.0.113.100` and IPv6 spellings agree.

use std::net::IpAddr;

#[derive(Debug, Clone)]
pub struct HostPattern {
    pub label: String,
    kind: HostKind,
}

#[derive(Debug, Clone)]
enum HostKind {
    Domain(String),
    Ip(IpAddr),
}

impl HostPattern {
    pub fn new(label: &str) -> HostPattern {
        let t = label.trim().trim_start_matches('[').trim_end_matches(']');
        let kind = match t.parse::<IpAddr>() {
            Ok(ip) => HostKind::Ip(ip),
            Err(_) => HostKind::Domain(t.trim_end_matches('.').to_ascii_lowercase()),
        };
        HostPattern {
            label: label.to_string(),
            kind,
        }
    }
}

/// `tok` is the domain `d` (lower-case) or one of its subdomains, ignoring case.
fn domain_matches(tok: &str, d: &str) -> bool {
    let (t, d) = (tok.as_bytes(), d.as_bytes());
    if t.len() < d.len() {
        return false;
    }
    let tail = &t[t.len() - d.len()..];
    tail.eq_ignore_ascii_case(d) && (t.len() == d.len() || t[t.len() - d.len() - 1] == b'.')
}

/// The first configured host present in `text`, with the token as written.
pub fn find_host<'p>(patterns: &'p [HostPattern], text: &str) -> Vec<(&'p HostPattern, String)> {
    let mut out = Vec::new();
    if patterns.is_empty() {
        return out;
    }
    // Domain-ish and IPv4 tokens: letters, digits, '.', '-'.
    for tok in
        text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_'))
    {
        let tok = tok.trim_matches('.');
        if tok.is_empty() {
            continue;
        }
        // Only tokens that start with a digit can be IPv4 addresses.
        let ip = if tok.as_bytes()[0].is_ascii_digit() {
            tok.parse::<IpAddr>().ok()
        } else {
            None
        };
        for p in patterns {
            let hit = match &p.kind {
                HostKind::Domain(d) => domain_matches(tok, d),
                HostKind::Ip(want) => ip.as_ref() == Some(want),
            };
            if hit
                && !out
                    .iter()
                    .any(|(q, _): &(&HostPattern, String)| std::ptr::eq(*q, p))
            {
                out.push((p, tok.to_string()));
            }
        }
    }
    // IPv6 tokens: hex digits, ':' and '.', with at least two colons.
    if patterns
        .iter()
        .any(|p| matches!(p.kind, HostKind::Ip(IpAddr::V6(_))))
    {
        for tok in text.split(|c: char| !(c.is_ascii_hexdigit() || c == ':' || c == '.')) {
            if tok.matches(':').count() < 2 {
                continue;
            }
            let Ok(ip) = tok.parse::<IpAddr>() else {
                continue;
            };
            for p in patterns {
                if matches!(&p.kind, HostKind::Ip(want) if *want == ip)
                    && !out.iter().any(|(q, _)| std::ptr::eq(*q, p))
                {
                    out.push((p, tok.to_string()));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_and_ips() {
        let pats = vec![
            HostPattern::new("eastside-refuge.org.au"),
            HostPattern::new("203.0.113.10"),
            HostPattern::new("2001:db8::10"),
        ];
        assert_eq!(
            find_host(&pats, "sip:201@PBX.Eastside-Refuge.org.au:5060").len(),
            1
        );
        assert_eq!(
            find_host(&pats, "SIP/2.0/UDP 203.0.113.10:5060;rport").len(),
            1
        );
        assert!(find_host(&pats, "203.0.113.100").is_empty());
        assert!(find_host(&pats, "xeastside-refuge.org.au").is_empty());
        assert_eq!(find_host(&pats, "c=IN IP6 2001:0db8:0:0::10").len(), 1);
    }
}

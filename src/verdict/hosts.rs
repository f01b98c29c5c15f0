//! Hosts: the organisation's domains and IP addresses, found as whole tokens.
//!
//! A configured domain also matches its subdomains (`eastside-refuge.org.au`
//! catches `pbx.eastside-refuge.org.au`), never a longer label
//! (`xeastside-refuge.org.au`). Addresses are compared as parsed IPs, so
//! `203.0.113.10` doesn't match `203.0.113.100` and IPv6 spellings agree.
//!
//! A token is a run of letters, digits, `.`, `-` and `_`, with dots at its
//! ends trimmed. Domains and IPv4 addresses are found with one automaton
//! over the text (an IPv4 address has one spelling: the parser refuses
//! leading zeros), then checked against the token around the match; IPv6
//! addresses, which have many spellings, are read from the tokens around
//! colons and parsed.

use std::net::IpAddr;

use super::automaton::Patterns;
use super::bytes::{self, Masks};

#[derive(Debug, Clone)]
pub struct HostPattern {
    /// As written in the config, for findings.
    pub label: String,
    /// What it matches.
    kind: HostKind,
}

#[derive(Debug, Clone)]
enum HostKind {
    /// A domain, lower case, without a trailing dot: itself and its
    /// subdomains.
    Domain(String),
    /// An address, whatever its spelling.
    Ip(IpAddr),
}

/// The configured hosts, compiled once.
#[derive(Debug, Clone, Default)]
pub struct HostSet {
    /// In configured order, which is the order of findings in one token.
    pub patterns: Vec<HostPattern>,
    /// Every domain and IPv4 address that can match a token, as text
    /// reversed (they are found at a token's end, walking back), matched
    /// regardless of ASCII case; None when there is none.
    automaton: Option<Patterns>,
    /// The index in `patterns` of each of the automaton's patterns.
    ids: Vec<usize>,
    /// The last two characters of each of the automaton's patterns, lower
    /// case, last first (0 for the second of a one-character pattern: any):
    /// a token that ends otherwise is not walked.
    tails: Vec<(u8, u8)>,
    /// Whether any pattern is an IPv6 address.
    v6: bool,
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

/// A character of a domain or IPv4 token.
fn is_token_byte(b: u8) -> bool {
    bytes::is(b, bytes::TOKEN)
}

/// A character of an IPv6 token.
fn is_v6_byte(b: u8) -> bool {
    b.is_ascii_hexdigit() || matches!(b, b':' | b'.')
}

impl HostSet {
    pub fn new<S: AsRef<str>>(labels: &[S]) -> HostSet {
        let patterns: Vec<HostPattern> = labels
            .iter()
            .map(|h| HostPattern::new(h.as_ref()))
            .collect();
        let mut texts: Vec<Vec<u8>> = Vec::new();
        let mut ids = Vec::new();
        for (i, p) in patterns.iter().enumerate() {
            let text = match &p.kind {
                HostKind::Domain(d) => d.clone(),
                HostKind::Ip(IpAddr::V4(a)) => a.to_string(),
                HostKind::Ip(IpAddr::V6(_)) => continue,
            };
            // A domain with a character no token has can never match one.
            if !text.is_empty() && text.bytes().all(is_token_byte) {
                texts.push(text.bytes().rev().collect::<Vec<u8>>());
                ids.push(i);
            }
        }
        let automaton = (!texts.is_empty()).then(|| Patterns::new(&texts, true));
        let mut tails: Vec<(u8, u8)> = texts
            .iter()
            .filter_map(|t| match t.as_slice() {
                [last, before, ..] => {
                    Some((last.to_ascii_lowercase(), before.to_ascii_lowercase()))
                }
                [last] => Some((last.to_ascii_lowercase(), 0)),
                [] => None,
            })
            .collect();
        tails.sort_unstable();
        tails.dedup();
        HostSet {
            tails,
            v6: patterns
                .iter()
                .any(|p| matches!(p.kind, HostKind::Ip(IpAddr::V6(_)))),
            patterns,
            automaton,
            ids,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Every configured host present in `text`, each once with the first
    /// token it is in, as written: in the order of those tokens (and in
    /// configured order within one), domains and IPv4 addresses before
    /// IPv6 addresses. The same as [`find_host`], found faster.
    pub fn find(&self, text: &str) -> Vec<(&HostPattern, String)> {
        let mut masks = Masks::default();
        masks.read(text.as_bytes());
        self.find_masked(text, &masks)
    }

    /// Add to `hits` (token start, pattern, token end) for each domain or
    /// IPv4 address the token `b[run_start..run_end]` is (or, for a
    /// domain, is a subdomain of), dots at its ends trimmed.
    fn token_hits(
        &self,
        automaton: &Patterns,
        b: &[u8],
        run_start: usize,
        run_end: usize,
        hits: &mut Vec<(usize, usize, usize)>,
    ) {
        let tok = &b[run_start..run_end];
        let Some(first) = tok.iter().position(|c| *c != b'.') else {
            return;
        };
        let last = tok.iter().rposition(|c| *c != b'.').unwrap_or(first);
        let (start, end) = (run_start + first, run_start + last + 1);
        if !automaton.may_start(b[end - 1]) {
            return;
        }
        // Every configured text the token ends with.
        automaton.suffixes_reversed(&b[start..end], |n, pattern| {
            let Some(&p) = self.ids.get(pattern) else {
                return;
            };
            let s = end - n;
            let hit = match &self.patterns[p].kind {
                // The domain itself, or a subdomain: a dot before it.
                HostKind::Domain(_) => s == start || b[s - 1] == b'.',
                // The whole token.
                HostKind::Ip(_) => s == start,
            };
            if hit {
                hits.push((start, p, end));
            }
        });
    }

    /// [`HostSet::find`] in a text whose [`Masks`] have been read.
    pub fn find_masked(&self, text: &str, masks: &Masks) -> Vec<(&HostPattern, String)> {
        let mut out = Vec::new();
        let b = text.as_bytes();
        if let Some(automaton) = &self.automaton {
            // (token start, pattern, token end) of each hit.
            let mut hits: Vec<(usize, usize, usize)> = Vec::new();
            // The last character of each token, from the masks: most end
            // in a character no configured host ends in, and are passed
            // over without being read.
            let token = &masks.token;
            for (w, &bits) in token.iter().enumerate() {
                let next_first = token.get(w + 1).map_or(0, |n| n & 1);
                let mut ends = bits & !((bits >> 1) | (next_first << 63));
                while ends != 0 {
                    let e = w * 64 + ends.trailing_zeros() as usize;
                    ends &= ends - 1;
                    let Some(&last) = b.get(e) else {
                        continue;
                    };
                    if last != b'.' {
                        // The token ends at `e` exactly: its last two
                        // characters must be some pattern's.
                        if !automaton.may_start(last) {
                            continue;
                        }
                        let last = last.to_ascii_lowercase();
                        let before = match e.checked_sub(1) {
                            Some(k) if Masks::has(token, k) => b[k].to_ascii_lowercase(),
                            _ => 0,
                        };
                        if !self
                            .tails
                            .iter()
                            .any(|&(l, p)| l == last && (p == 0 || p == before))
                        {
                            continue;
                        }
                    }
                    let run_start = masks.run_start(token, e);
                    self.token_hits(automaton, b, run_start, e + 1, &mut hits);
                }
            }
            hits.sort_unstable();
            for (start, i, end) in hits {
                let p = &self.patterns[i];
                if !out
                    .iter()
                    .any(|(q, _): &(&HostPattern, String)| std::ptr::eq(*q, p))
                {
                    out.push((p, text[start..end].to_string()));
                }
            }
        }
        if self.v6 && masks.profile & bytes::COLON != 0 {
            // IPv6 tokens: hex digits, ':' and '.', with at least two colons.
            let mut from = 0;
            while let Some(colon) = Masks::next_set(&masks.colon, from) {
                // The first colon of its token (any before it in the same
                // token would have been found first): the token's second
                // colon, if any, is after it.
                let mut end = colon + 1;
                let mut colons = 1;
                while end < b.len() && is_v6_byte(b[end]) {
                    colons += usize::from(b[end] == b':');
                    end += 1;
                }
                from = end;
                if colons < 2 {
                    continue;
                }
                let mut start = colon;
                while start > 0 && is_v6_byte(b[start - 1]) {
                    start -= 1;
                }
                let tok = &text[start..end];
                let Ok(ip) = tok.parse::<IpAddr>() else {
                    continue;
                };
                for p in &self.patterns {
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

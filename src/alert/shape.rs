//! The "shape" of what a passing call presented: which identity headers
//! came, what kind of name, user and host each carried, and the Privacy
//! tokens. Values that legitimately vary from call to call (tags, the exact
//! digits of an allowed umbrella number, a carrier's rotating SBC address)
//! are reduced to their kind, so a change in shape means the PBX or the
//! carrier changed how the line is presented: still private, but worth a
//! look before it turns into a leak.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::verdict::{Presented, PresentedIdentity};

/// The comparable shape of one call's presentation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdentityShape {
    /// Identity-bearing header names, sorted, repeats kept (a second
    /// P-Asserted-Identity is a change).
    pub headers: Vec<String>,
    /// One entry per presented identity, sorted:
    /// `P-Asserted-Identity: name none, user "anonymous", host "anonymous.invalid"`.
    pub identities: Vec<String>,
    /// Privacy tokens, lower case, sorted, without repeats.
    pub privacy: Vec<String>,
}

impl IdentityShape {
    pub fn of(p: &Presented) -> IdentityShape {
        let mut headers = p.identity_headers.clone();
        headers.sort();
        let mut identities: Vec<String> = p.identities.iter().map(identity_shape).collect();
        identities.sort();
        let mut privacy: Vec<String> = p
            .privacy
            .as_deref()
            .unwrap_or("")
            .split([';', ','])
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect();
        privacy.sort();
        privacy.dedup();
        IdentityShape {
            headers,
            identities,
            privacy,
        }
    }

    /// What changed from `self` (the earlier shape) to `new`, one sentence
    /// each, for the drift email.
    pub fn changes(&self, new: &IdentityShape) -> Vec<String> {
        let mut out = Vec::new();
        for h in multiset_minus(&new.headers, &self.headers) {
            out.push(format!("{h} header added"));
        }
        for h in multiset_minus(&self.headers, &new.headers) {
            out.push(format!("{h} header removed"));
        }
        for i in multiset_minus(&self.identities, &new.identities) {
            out.push(format!("was: {i}"));
        }
        for i in multiset_minus(&new.identities, &self.identities) {
            out.push(format!("now: {i}"));
        }
        if self.privacy != new.privacy {
            out.push(format!(
                "Privacy: {} → {}",
                privacy_text(&self.privacy),
                privacy_text(&new.privacy)
            ));
        }
        out
    }
}

impl fmt::Display for IdentityShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "headers [{}]; privacy {}",
            self.headers.join(", "),
            privacy_text(&self.privacy)
        )
    }
}

fn privacy_text(tokens: &[String]) -> String {
    if tokens.is_empty() {
        "(none)".into()
    } else {
        tokens.join("; ")
    }
}

/// Items of `a` not matched one-for-one in `b`.
fn multiset_minus<'a>(a: &'a [String], b: &[String]) -> Vec<&'a str> {
    let mut rest: Vec<&str> = b.iter().map(String::as_str).collect();
    let mut out = Vec::new();
    for x in a {
        if let Some(i) = rest.iter().position(|y| *y == x.as_str()) {
            rest.swap_remove(i);
        } else {
            out.push(x.as_str());
        }
    }
    out
}

fn identity_shape(id: &PresentedIdentity) -> String {
    let name = match id.display.as_deref().map(collapse_spaces) {
        None => "none".to_string(),
        Some(d) if d.is_empty() => "none".to_string(),
        // On a passing line a name is an anonymity word or the umbrella
        // name: both stable, so the text itself is the shape.
        Some(d) => format!("{:?}", d.to_lowercase()),
    };
    let user = match id
        .user
        .as_deref()
        .map(|u| u.split(';').next().unwrap_or(u).trim())
    {
        None | Some("") => "none".to_string(),
        Some(u) if is_number(u) => {
            if u.starts_with('+') {
                "an international number".to_string()
            } else {
                "a number".to_string()
            }
        }
        Some(u) => format!("{:?}", u.to_lowercase()),
    };
    let host = if id.host.is_empty() {
        "none".to_string()
    } else if id
        .host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok()
    {
        // Carriers rotate SBC addresses; a different address is not a
        // different presentation.
        "an IP address".to_string()
    } else {
        format!("{:?}", id.host.to_lowercase())
    };
    format!("{}: name {name}, user {user}, host {host}", id.header)
}

fn collapse_spaces(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn is_number(u: &str) -> bool {
    let digits = u.strip_prefix('+').unwrap_or(u);
    let mut n = 0;
    for c in digits.chars() {
        if c.is_ascii_digit() {
            n += 1;
        } else if !" -.()".contains(c) {
            return false;
        }
    }
    n >= 3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(
        header: &str,
        display: Option<&str>,
        user: Option<&str>,
        host: &str,
    ) -> PresentedIdentity {
        PresentedIdentity {
            header: header.into(),
            display: display.map(str::to_string),
            user: user.map(str::to_string),
            host: host.into(),
        }
    }

    fn presented(ids: Vec<PresentedIdentity>, privacy: Option<&str>) -> Presented {
        Presented {
            identity_headers: ids.iter().map(|i| i.header.clone()).collect(),
            identities: ids,
            privacy: privacy.map(str::to_string),
        }
    }

    #[test]
    fn varying_values_keep_the_shape() {
        let a = presented(
            vec![id(
                "From",
                Some("Salvation Army"),
                Some("+61290000000"),
                "10.0.0.1",
            )],
            Some("id"),
        );
        let b = presented(
            vec![id(
                "From",
                Some("SALVATION  ARMY"),
                Some("+61290000001"),
                "10.0.0.2",
            )],
            Some("Id"),
        );
        assert_eq!(IdentityShape::of(&a), IdentityShape::of(&b));
    }

    #[test]
    fn added_header_and_privacy_change_are_reported() {
        let a = presented(
            vec![id(
                "From",
                Some("Anonymous"),
                Some("anonymous"),
                "anonymous.invalid",
            )],
            Some("id"),
        );
        let b = presented(
            vec![
                id(
                    "From",
                    Some("Anonymous"),
                    Some("anonymous"),
                    "anonymous.invalid",
                ),
                id(
                    "P-Asserted-Identity",
                    None,
                    Some("anonymous"),
                    "anonymous.invalid",
                ),
            ],
            None,
        );
        let (sa, sb) = (IdentityShape::of(&a), IdentityShape::of(&b));
        assert_ne!(sa, sb);
        let c = sa.changes(&sb);
        assert!(
            c.iter().any(|s| s == "P-Asserted-Identity header added"),
            "{c:?}"
        );
        assert!(c.iter().any(|s| s == "Privacy: id → (none)"), "{c:?}");
    }
}

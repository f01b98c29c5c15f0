//! Request-URIs cidguard sends: whether a text is one, and a strict check
//! of one before it goes on the wire (a PBX refuses a malformed Request-URI
//! and the call never happens).

use super::header::parse_uri;

/// Does this start with a URI scheme cidguard dials (`sip:`, `sips:`, `tel:`)?
pub fn is_uri(text: &str) -> bool {
    let lower = text.trim_start().to_ascii_lowercase();
    ["sip:", "sips:", "tel:"]
        .iter()
        .any(|s| lower.starts_with(s))
}

/// `#` is the one dial character that must be escaped in a URI (RFC 3261
/// `user` does not allow it; RFC 3966 asks for `%23`).
pub fn escape_user(s: &str) -> String {
    s.replace('#', "%23")
}

/// RFC 3261 `user`: unreserved, escaped and user-unreserved characters.
fn user_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_.!~*'()&=+$,;?/".contains(c)
}

/// Characters of URI parameters and headers (RFC 3261 `paramchar`,
/// `hnv-unreserved` and the separators between them).
fn param_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_.!~*'()[]/:&+$=;?".contains(c)
}

/// Every `%` starts a two-digit hex escape.
fn escapes_ok(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter().enumerate().all(|(i, &c)| {
        c != b'%'
            || (b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    })
}

/// A strict check of a Request-URI cidguard is about to send: a `sip:`,
/// `sips:` or `tel:` URI read by the project's own URI parser, with no
/// whitespace or control characters, a user part of RFC 3261 `user`
/// characters, a host, and a tel: number RFC 3966 allows. The reason when
/// it is not.
pub fn check_uri(uri: &str) -> Result<(), String> {
    if let Some(c) = uri.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("it contains {c:?}"));
    }
    if let Some(c) = uri.chars().find(|c| !c.is_ascii()) {
        return Err(format!(
            "it contains {c:?} (a URI is ASCII; escape it as %XX)"
        ));
    }
    if !escapes_ok(uri) {
        return Err("a % is not followed by two hex digits".into());
    }
    let parsed = parse_uri(uri);
    let Some((_, rest)) = uri.split_once(':') else {
        return Err("it has no scheme (write sip:, sips: or tel:)".into());
    };
    match parsed.scheme.as_str() {
        "sip" | "sips" => {
            let (user, hostpart) = match rest.rfind('@') {
                Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
                None => (None, rest),
            };
            if let Some(u) = user {
                if u.is_empty() {
                    return Err("the user part before '@' is empty".into());
                }
                if u.contains(':') {
                    return Err("the user part carries a password (':')".into());
                }
                if let Some(c) = u.chars().find(|&c| c != '%' && !user_char(c)) {
                    return Err(format!("{c:?} is not allowed in a SIP user part"));
                }
            }
            let end = hostpart.find([';', '?']).unwrap_or(hostpart.len());
            let (host, params) = hostpart.split_at(end);
            let host_ok = !parsed.host.is_empty()
                && if let Some(v6) = host.strip_prefix('[') {
                    v6.split(']')
                        .next()
                        .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok())
                } else {
                    let name = host.rsplit_once(':').map_or(host, |(h, p)| {
                        if p.parse::<u16>().is_ok() {
                            h
                        } else {
                            host
                        }
                    });
                    !name.is_empty()
                        && name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
                };
            if !host_ok {
                return Err(format!("{host:?} is not a host[:port]"));
            }
            if let Some(c) = params.chars().find(|&c| c != '%' && !param_char(c)) {
                return Err(format!("{c:?} is not allowed in URI parameters"));
            }
            Ok(())
        }
        "tel" => {
            let (number, params) = rest.split_at(rest.find(';').unwrap_or(rest.len()));
            let (global, digits) = match number.strip_prefix('+') {
                Some(d) => (true, d),
                None => (false, number),
            };
            let digits = digits.replace("%23", "#");
            let ok_char = |c: char| {
                c.is_ascii_digit()
                    || "-.()".contains(c)
                    || (!global && (c.is_ascii_hexdigit() || c == '*' || c == '#'))
            };
            if !digits.chars().any(|c| c.is_ascii_digit()) {
                return Err("the tel: number has no digits".into());
            }
            if let Some(c) = digits.chars().find(|&c| !ok_char(c)) {
                return Err(format!("{c:?} is not allowed in a tel: number"));
            }
            if !global && !params.to_ascii_lowercase().contains(";phone-context=") {
                return Err(
                    "a local tel: number needs ;phone-context= (RFC 3966), or write it with +"
                        .into(),
                );
            }
            if let Some(c) = params.chars().find(|&c| c != '%' && !param_char(c)) {
                return Err(format!("{c:?} is not allowed in URI parameters"));
            }
            Ok(())
        }
        other => Err(format!("the scheme {other:?} is not sip:, sips: or tel:")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_uri_check() {
        for ok in [
            "sip:+61399990000@pbx.example.org",
            "sip:+61399990000@127.0.0.1:5060;transport=tcp",
            "sips:4000@[2001:db8::1]:5061",
            "sip:70100142;phone-context=+613@carrier.example;user=phone",
            "tel:+61-3-9999-0000",
            "tel:7010-0142;phone-context=+613",
            "sip:pbx.example.org",
        ] {
            assert_eq!(check_uri(ok), Ok(()), "{ok}");
        }
        for bad in [
            "sip:+61 3 9999 0000@pbx.example.org",
            "sip:+61399990000@",
            "sip:a:b@pbx.example.org",
            "sip:4000@pbx.example.org;x=\"y\"",
            "http://pbx.example.org",
            "tel:+61-3-9999-ABCD",
            "sip:%2@pbx",
            "sip:40#0@pbx",
        ] {
            assert!(check_uri(bad).is_err(), "{bad}");
        }
    }
}

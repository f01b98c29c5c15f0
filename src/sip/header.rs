//! Reading the inside of header values: comma-separated lists, name-addr with
//! quoted display names, SIP/tel URIs, parameters, percent-escapes.
//!
//! Written for real traffic rather than for the grammar alone: a quoted display
//! name may hold `<`, `>`, `,` and escaped quotes; an addr-spec may come without
//! angle brackets; parameters may have no value.

/// Split a header value at the commas that separate list entries, ignoring
/// commas inside quoted strings and inside `<...>`.
pub fn split_list(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0u32;
    let mut in_quotes = false;
    let mut escaped = false;
    let mut start = 0;
    for (i, c) in value.char_indices() {
        if in_quotes {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quotes = false;
            }
            continue;
        }
        match c {
            '"' => in_quotes = true,
            '<' => depth += 1,
            '>' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value[start..].trim());
    out.retain(|s| !s.is_empty());
    out
}

/// A `name-addr` or `addr-spec` with its header parameters
/// (From, To, Contact, P-Asserted-Identity, Remote-Party-ID, Diversion...).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NameAddr {
    /// Display name with quotes removed and escapes undone; None when absent.
    pub display: Option<String>,
    /// The URI text as it appeared (inside the angle brackets if any).
    pub uri: String,
    /// Header parameters after the address (`;tag=..`, `;privacy=full`).
    pub params: Vec<(String, Option<String>)>,
}

impl NameAddr {
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("unterminated quoted string")]
    UnterminatedQuote,
    #[error("'<' without a matching '>'")]
    UnterminatedAngle,
    #[error("no address")]
    Empty,
}

/// Parse one name-addr / addr-spec entry (already split from its list).
pub fn parse_name_addr(input: &str) -> Result<NameAddr, HeaderError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(HeaderError::Empty);
    }
    let mut display = None;
    let mut rest = s;
    if let Some(after) = s.strip_prefix('"') {
        let (text, consumed) = read_quoted(after).ok_or(HeaderError::UnterminatedQuote)?;
        display = Some(text);
        rest = after[consumed..].trim_start();
    }
    if let Some(lt) = find_unquoted(rest, '<') {
        if display.is_none() {
            let token = rest[..lt].trim();
            if !token.is_empty() {
                display = Some(token.to_string());
            }
        }
        let after = &rest[lt + 1..];
        let gt = after.find('>').ok_or(HeaderError::UnterminatedAngle)?;
        let uri = after[..gt].trim().to_string();
        let params = parse_params(&after[gt + 1..]);
        return Ok(NameAddr {
            display,
            uri,
            params,
        });
    }
    // addr-spec without angle brackets: parameters after the URI belong to the
    // header (RFC 3261 section 20.10), and a display name can't be present.
    let rest = rest.trim();
    let (uri, params) = match rest.find(';') {
        Some(i) => (&rest[..i], parse_params(&rest[i..])),
        None => (rest, Vec::new()),
    };
    if uri.is_empty() {
        return Err(HeaderError::Empty);
    }
    Ok(NameAddr {
        display,
        uri: uri.trim().to_string(),
        params,
    })
}

/// Read a quoted string body (after the opening quote). Returns the unescaped
/// text and the number of bytes consumed including the closing quote.
pub fn read_quoted(s: &str) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                let (_, n) = chars.next()?;
                out.push(n);
            }
            '"' => return Some((out, i + 1)),
            _ => out.push(c),
        }
    }
    None
}

fn find_unquoted(s: &str, target: char) -> Option<usize> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if in_quotes {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quotes = false;
            }
        } else if c == '"' {
            in_quotes = true;
        } else if c == target {
            return Some(i);
        }
    }
    None
}

/// Parse `;a=b;c;d="x;y"` into pairs. Quoted values keep their text unquoted.
pub fn parse_params(s: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while let Some(r) = rest.strip_prefix(';') {
        rest = r.trim_start();
        let end = rest.find([';', '=']).unwrap_or(rest.len());
        let name = rest[..end].trim().to_string();
        rest = &rest[end..];
        let mut value = None;
        if let Some(r) = rest.strip_prefix('=') {
            let r = r.trim_start();
            if let Some(q) = r.strip_prefix('"') {
                match read_quoted(q) {
                    Some((text, used)) => {
                        value = Some(text);
                        rest = q[used..].trim_start();
                    }
                    None => {
                        value = Some(q.to_string());
                        rest = "";
                    }
                }
            } else {
                let end = r.find(';').unwrap_or(r.len());
                value = Some(r[..end].trim().to_string());
                rest = &r[end..];
            }
        }
        if !name.is_empty() {
            out.push((name, value));
        }
        rest = rest.trim_start();
        if !rest.starts_with(';') && !rest.is_empty() {
            // Junk between parameters: skip to the next ';'.
            match rest.find(';') {
                Some(i) => rest = &rest[i..],
                None => break,
            }
        }
    }
    out
}

/// A SIP, SIPS or tel URI, split into the parts identity checks care about.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Uri {
    /// Lower-cased scheme (`sip`, `sips`, `tel`, or whatever else was there).
    pub scheme: String,
    /// User part (for tel: the number), percent-decoded; None when absent.
    pub user: Option<String>,
    /// Host (lower-cased; IPv6 without brackets); empty for tel:.
    pub host: String,
    pub port: Option<u16>,
    /// URI parameters (`;user=phone`, `;transport=tcp`, `;phone-context=..`).
    pub params: Vec<(String, Option<String>)>,
    /// Escaped headers after `?`, percent-decoded.
    pub headers: Option<String>,
}

impl Uri {
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }
}

/// Parse a URI leniently. Never fails: what can't be read lands in `host`.
pub fn parse_uri(input: &str) -> Uri {
    let s = input.trim();
    let (scheme, rest) = match s.split_once(':') {
        Some((sch, rest)) if is_scheme(sch) => (sch.to_ascii_lowercase(), rest),
        _ => (String::new(), s),
    };
    let (rest, headers) = match rest.split_once('?') {
        Some((a, h)) => (a, Some(percent_decode(h))),
        None => (rest, None),
    };
    if scheme == "tel" {
        let (num, params) = match rest.find(';') {
            Some(i) => (&rest[..i], parse_params(&rest[i..])),
            None => (rest, Vec::new()),
        };
        return Uri {
            scheme,
            user: Some(percent_decode(num)),
            host: String::new(),
            port: None,
            params,
            headers,
        };
    }
    // The user part ends at the last '@' (a '@' can't appear unescaped in
    // the host, but hostile or sloppy user parts sometimes hold one).
    let (user, hostport_params) = match rest.rfind('@') {
        Some(i) => {
            let u = &rest[..i];
            // user may carry a password after ':'; keep only the user.
            let u = u.split(':').next().unwrap_or(u);
            (Some(percent_decode(u)), &rest[i + 1..])
        }
        None => (None, rest),
    };
    let (hostport, params) = match hostport_params.find(';') {
        Some(i) => (&hostport_params[..i], parse_params(&hostport_params[i..])),
        None => (hostport_params, Vec::new()),
    };
    let (host, port) = split_host_port(hostport);
    Uri {
        scheme,
        user,
        host,
        port,
        params,
        headers,
    }
}

/// An RFC 3986 scheme: a letter, then letters, digits, `+`, `-` or `.`
/// (`soap.beep` in RFC 4475 section 3.3.3 is one).
fn is_scheme(s: &str) -> bool {
    let mut b = s.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphabetic())
        && b.all(|c| c.is_ascii_alphanumeric() || b"+-.".contains(&c))
}

fn split_host_port(hp: &str) -> (String, Option<u16>) {
    let hp = hp.trim();
    if let Some(r) = hp.strip_prefix('[') {
        if let Some(end) = r.find(']') {
            let host = r[..end].to_ascii_lowercase();
            let port = r[end + 1..].strip_prefix(':').and_then(|p| p.parse().ok());
            return (host, port);
        }
    }
    match hp.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h.to_ascii_lowercase(), p.parse().ok()),
        _ => (hp.to_ascii_lowercase(), None),
    }
}

/// Undo `%XX` escapes; invalid escapes are kept as they are. Bytes that don't
/// form UTF-8 are replaced, never dropped silently.
pub fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parameters of an auth challenge or credentials header
/// (`Digest realm="x", nonce="y", qop="auth,auth-int"`): the scheme and a
/// list of (lower-cased name, unquoted value).
pub fn parse_auth_params(value: &str) -> (String, Vec<(String, String)>) {
    let v = value.trim();
    let (scheme, rest) = match v.find(char::is_whitespace) {
        Some(i) => (&v[..i], &v[i..]),
        None => (v, ""),
    };
    let mut out = Vec::new();
    for item in split_list(rest) {
        if let Some((k, val)) = item.split_once('=') {
            let val = val.trim();
            let val = match val.strip_prefix('"') {
                Some(q) => read_quoted(q)
                    .map(|(t, _)| t)
                    .unwrap_or_else(|| q.to_string()),
                None => val.to_string(),
            };
            out.push((k.trim().to_ascii_lowercase(), val));
        }
    }
    (scheme.to_string(), out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_display_with_angle_brackets_and_escapes() {
        let na = parse_name_addr(
            r#""Eve \"<sip:x@y>\" , Ltd" <sip:+61370100142@pbx.example;user=phone>;tag=9"#,
        )
        .unwrap();
        assert_eq!(na.display.as_deref(), Some(r#"Eve "<sip:x@y>" , Ltd"#));
        assert_eq!(na.uri, "sip:+61370100142@pbx.example;user=phone");
        assert_eq!(na.param("tag"), Some(Some("9")));
    }

    #[test]
    fn list_split_respects_quotes_and_angles() {
        let v = split_list(r#""a, b" <sip:1@x>, <sip:2@y;p=1,2>, tel:+613"#);
        assert_eq!(v.len(), 3);
    }

    #[test]
    fn addr_spec_params_belong_to_header() {
        let na = parse_name_addr("sip:anonymous@anonymous.invalid;tag=abc").unwrap();
        assert_eq!(na.uri, "sip:anonymous@anonymous.invalid");
        assert_eq!(na.param("tag"), Some(Some("abc")));
    }

    #[test]
    fn uris() {
        let u = parse_uri("sip:%2B61370100142@[2001:db8::1]:5070;user=phone");
        assert_eq!(u.user.as_deref(), Some("+61370100142"));
        assert_eq!(u.host, "2001:db8::1");
        assert_eq!(u.port, Some(5070));
        let t = parse_uri("tel:7010-0142;phone-context=+613");
        assert_eq!(t.user.as_deref(), Some("7010-0142"));
        assert_eq!(t.param("phone-context"), Some(Some("+613")));
    }

    #[test]
    fn auth_params() {
        let (s, p) = parse_auth_params(
            r#"Digest realm="x", nonce="n,1", qop="auth,auth-int", algorithm=SHA-256"#,
        );
        assert_eq!(s, "Digest");
        assert!(p.contains(&("qop".into(), "auth,auth-int".into())));
        assert!(p.contains(&("nonce".into(), "n,1".into())));
    }
}

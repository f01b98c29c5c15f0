//! A tolerant SIP message parser that we own.
//!
//! It keeps every header exactly as received (name spelling, order, repeats)
//! and only undoes what RFC 3261 says carries no meaning: line folding
//! (section 7.3.1), the choice of CRLF or bare LF, and whitespace around the
//! colon. Identity inspection and the user agent both build on it, so the
//! verdict never depends on a third-party parser's idea of a quoted string.
//!
//! Parsing is bounded: a message larger than [`MAX_MESSAGE`] or with more than
//! [`MAX_HEADERS`] header lines is refused, never buffered without limit.

use std::fmt;

/// Largest message accepted (bytes). SIP over UDP is limited to 65,535 bytes
/// by the datagram; over TCP we apply the same bound so a hostile peer can't
/// make us buffer forever.
pub const MAX_MESSAGE: usize = 128 * 1024;
/// Most header lines accepted in one message.
pub const MAX_HEADERS: usize = 512;

/// The first line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request {
        method: String,
        uri: String,
        version: String,
    },
    Response {
        version: String,
        code: u16,
        reason: String,
    },
}

/// One header line as received, unfolded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The name exactly as spelled on the wire (`f`, `FROM`, `X-Foo`).
    pub name: String,
    /// The canonical long form (`From` for `f`, `from` or `FROM`); unknown
    /// headers keep their received spelling.
    pub canonical: String,
    /// The value with folding undone and outer whitespace trimmed.
    pub value: String,
    /// 1-based line number of the header in the message, for error reports.
    pub line: usize,
}

/// A parsed SIP message. Owned, cheap to clone, no I/O types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub start: StartLine,
    pub headers: Vec<Header>,
    /// Everything after the blank line. When Content-Length is present and
    /// smaller than what follows, the body is cut to it and the rest is kept
    /// in `trailing`.
    pub body: Vec<u8>,
    /// Bytes after the declared Content-Length (usually empty).
    pub trailing: Vec<u8>,
    /// Things that were odd but not fatal (bad Content-Length, a header line
    /// without a colon...). Inspection reports these; the user agent ignores them.
    pub anomalies: Vec<String>,
    /// True when Content-Length promised more bytes than arrived.
    pub truncated: bool,
}

/// Why bytes could not be read as a SIP message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the message is empty")]
    Empty,
    #[error("the message is larger than {MAX_MESSAGE} bytes")]
    TooLarge,
    #[error("the message has more than {MAX_HEADERS} header lines")]
    TooManyHeaders,
    #[error("the first line is not a SIP request or status line: {0:?}")]
    BadStartLine(String),
    #[error("line {line} is not a header (no colon): {text:?}")]
    BadHeaderLine { line: usize, text: String },
}

impl Message {
    /// True for a request with this method (case-sensitive, as RFC 3261 says).
    pub fn is_request(&self, method: &str) -> bool {
        matches!(&self.start, StartLine::Request { method: m, .. } if m == method)
    }

    pub fn method(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    pub fn request_uri(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    /// Every header with this canonical name, in order.
    pub fn headers_named<'a, 'n>(
        &'a self,
        canonical: &'n str,
    ) -> impl Iterator<Item = &'a Header> + use<'a, 'n> {
        self.headers
            .iter()
            .filter(move |h| h.canonical.eq_ignore_ascii_case(canonical))
    }

    /// The first value of a header (by canonical name).
    pub fn header(&self, canonical: &str) -> Option<&str> {
        self.headers_named(canonical)
            .next()
            .map(|h| h.value.as_str())
    }

    /// The CSeq method and number.
    pub fn cseq(&self) -> Option<(u32, &str)> {
        let v = self.header("CSeq")?;
        let mut it = v.split_whitespace();
        let n = it.next()?.parse().ok()?;
        Some((n, it.next()?))
    }

    pub fn call_id(&self) -> Option<&str> {
        self.header("Call-ID")
    }
}

impl fmt::Display for StartLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartLine::Request {
                method,
                uri,
                version,
            } => write!(f, "{method} {uri} {version}"),
            StartLine::Response {
                version,
                code,
                reason,
            } => write!(f, "{version} {code} {reason}"),
        }
    }
}

/// Map a header name (any case, compact or long) to its canonical long form.
pub fn canonical_name(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    let long = match lower.as_str() {
        // RFC 3261 section 7.3.3 and later compact forms (RFC 3515, 3841, 3891, 4028, 4474...).
        "i" | "call-id" => "Call-ID",
        "m" | "contact" => "Contact",
        "e" | "content-encoding" => "Content-Encoding",
        "l" | "content-length" => "Content-Length",
        "c" | "content-type" => "Content-Type",
        "f" | "from" => "From",
        "s" | "subject" => "Subject",
        "k" | "supported" => "Supported",
        "t" | "to" => "To",
        "v" | "via" => "Via",
        "r" | "refer-to" => "Refer-To",
        "b" | "referred-by" => "Referred-By",
        "x" | "session-expires" => "Session-Expires",
        "o" | "event" => "Event",
        "u" | "allow-events" => "Allow-Events",
        "a" | "accept-contact" => "Accept-Contact",
        "j" | "reject-contact" => "Reject-Contact",
        "d" | "request-disposition" => "Request-Disposition",
        "y" | "identity" => "Identity",
        "n" | "identity-info" => "Identity-Info",
        "cseq" => "CSeq",
        "p-asserted-identity" => "P-Asserted-Identity",
        "p-preferred-identity" => "P-Preferred-Identity",
        "remote-party-id" => "Remote-Party-ID",
        "privacy" => "Privacy",
        "diversion" => "Diversion",
        "history-info" => "History-Info",
        "p-charge-info" => "P-Charge-Info",
        "record-route" => "Record-Route",
        "route" => "Route",
        "reply-to" => "Reply-To",
        "organization" => "Organization",
        "user-agent" => "User-Agent",
        "server" => "Server",
        "call-info" => "Call-Info",
        "alert-info" => "Alert-Info",
        "www-authenticate" => "WWW-Authenticate",
        "proxy-authenticate" => "Proxy-Authenticate",
        "authorization" => "Authorization",
        "proxy-authorization" => "Proxy-Authorization",
        "max-forwards" => "Max-Forwards",
        "expires" => "Expires",
        "allow" => "Allow",
        "require" => "Require",
        "proxy-require" => "Proxy-Require",
        "unsupported" => "Unsupported",
        "p-called-party-id" => "P-Called-Party-ID",
        "p-access-network-info" => "P-Access-Network-Info",
        "reason" => "Reason",
        "date" => "Date",
        "accept" => "Accept",
        "min-expires" => "Min-Expires",
        "retry-after" => "Retry-After",
        "warning" => "Warning",
        _ => return name.to_string(),
    };
    long.to_string()
}

/// Where the header section ends: the index just after the blank line, for
/// CRLF CRLF or bare LF LF. None if the blank line hasn't arrived yet.
pub fn header_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' {
            // Look at the next line: blank if it is "\n" or "\r\n".
            match buf.get(i + 1) {
                Some(b'\n') => return Some(i + 2),
                Some(b'\r') if buf.get(i + 2) == Some(&b'\n') => return Some(i + 3),
                _ => {}
            }
        }
        i += 1;
    }
    None
}

/// Read the Content-Length out of a header block without a full parse
/// (used by stream framing). Returns Ok(None) when absent.
pub fn sniff_content_length(head: &[u8]) -> Result<Option<usize>, std::num::ParseIntError> {
    let text = String::from_utf8_lossy(head);
    for line in text.lines().skip(1) {
        if let Some((name, value)) = line.split_once(':') {
            let n = name.trim();
            if n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("l") {
                return value.trim().parse::<usize>().map(Some);
            }
        }
    }
    Ok(None)
}

/// Outcome of looking for one whole message at the front of a stream buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole message of this many bytes is at the front.
    Complete(usize),
    /// Need more bytes.
    Incomplete,
    /// Leading CRLFs (RFC 5626 keep-alive pings); skip this many bytes.
    KeepAlive(usize),
    /// The stream can't be framed (no or bad Content-Length, or too big).
    Invalid(&'static str),
}

/// Frame a message on a stream transport (TCP/TLS), where Content-Length is
/// mandatory (RFC 3261 section 18.3).
pub fn frame_stream(buf: &[u8]) -> Frame {
    let ws = buf
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    if ws > 0 {
        return Frame::KeepAlive(ws);
    }
    let Some(end) = header_end(buf) else {
        return if buf.len() > MAX_MESSAGE {
            Frame::Invalid("header section too large")
        } else {
            Frame::Incomplete
        };
    };
    match sniff_content_length(&buf[..end]) {
        Ok(Some(len)) => {
            if end + len > MAX_MESSAGE {
                Frame::Invalid("message too large")
            } else if buf.len() >= end + len {
                Frame::Complete(end + len)
            } else {
                Frame::Incomplete
            }
        }
        Ok(None) => Frame::Invalid("no Content-Length on a stream transport"),
        Err(_) => Frame::Invalid("unreadable Content-Length"),
    }
}

/// Parse one SIP message.
pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(ParseError::TooLarge);
    }
    // Leading blank lines are allowed before a message (RFC 3261 section 7.5).
    let start_at = bytes
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n' | b' ' | b'\t'))
        .count();
    let bytes = &bytes[start_at..];
    if bytes.is_empty() {
        return Err(ParseError::Empty);
    }
    let (head, rest) = match header_end(bytes) {
        Some(end) => (&bytes[..end], &bytes[end..]),
        None => (bytes, &[][..]),
    };
    let head_text = String::from_utf8_lossy(head);
    let mut lines = head_text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l));
    let first = lines.next().unwrap_or_default();
    let start = parse_start_line(first)?;

    let mut anomalies = Vec::new();
    let mut headers: Vec<Header> = Vec::new();
    for (idx, line) in lines.enumerate() {
        let line_no = idx + 2;
        if line.is_empty() {
            continue; // the blank line ending the header section
        }
        if line.starts_with([' ', '\t']) {
            // Folded continuation of the previous header.
            match headers.last_mut() {
                Some(prev) => {
                    if !prev.value.is_empty() {
                        prev.value.push(' ');
                    }
                    prev.value.push_str(line.trim());
                }
                None => {
                    return Err(ParseError::BadHeaderLine {
                        line: line_no,
                        text: truncate(line),
                    })
                }
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(ParseError::BadHeaderLine {
                line: line_no,
                text: truncate(line),
            });
        };
        let name = name.trim_end_matches([' ', '\t']);
        if name.is_empty() || name.contains([' ', '\t']) {
            return Err(ParseError::BadHeaderLine {
                line: line_no,
                text: truncate(line),
            });
        }
        if headers.len() >= MAX_HEADERS {
            return Err(ParseError::TooManyHeaders);
        }
        headers.push(Header {
            name: name.to_string(),
            canonical: canonical_name(name),
            value: value.trim().to_string(),
            line: line_no,
        });
    }

    let mut body = rest.to_vec();
    let mut trailing = Vec::new();
    let mut truncated = false;
    let lengths: Vec<&Header> = headers
        .iter()
        .filter(|h| h.canonical == "Content-Length")
        .collect();
    if lengths.len() > 1 {
        anomalies.push(format!("{} Content-Length headers", lengths.len()));
    }
    match lengths.first() {
        None if !body.is_empty() => {
            anomalies.push("no Content-Length header; the body runs to the end".into())
        }
        None => {}
        Some(h) => match h.value.trim().parse::<usize>() {
            Ok(n) if n < body.len() => {
                trailing = body.split_off(n);
                anomalies.push(format!(
                    "Content-Length is {n} but {} bytes follow the headers",
                    n + trailing.len()
                ));
            }
            Ok(n) if n > body.len() => {
                truncated = true;
                anomalies.push(format!(
                    "Content-Length is {n} but only {} bytes arrived: the message is truncated",
                    body.len()
                ));
            }
            Ok(_) => {}
            Err(_) => anomalies.push(format!("unreadable Content-Length {:?}", h.value)),
        },
    }
    Ok(Message {
        start,
        headers,
        body,
        trailing,
        anomalies,
        truncated,
    })
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

fn parse_start_line(line: &str) -> Result<StartLine, ParseError> {
    let bad = || ParseError::BadStartLine(truncate(line));
    let mut parts = line.splitn(3, ' ');
    let a = parts.next().ok_or_else(bad)?;
    let b = parts.next().ok_or_else(bad)?;
    let c = parts.next().unwrap_or_default();
    if is_sip_version(a) {
        let code: u16 = b.parse().map_err(|_| bad())?;
        if !(100..=699).contains(&code) {
            return Err(bad());
        }
        return Ok(StartLine::Response {
            version: a.to_string(),
            code,
            reason: c.to_string(),
        });
    }
    let version = c.trim();
    if !is_sip_version(version) || a.is_empty() || !a.bytes().all(is_token_byte) || b.is_empty() {
        return Err(bad());
    }
    Ok(StartLine::Request {
        method: a.to_string(),
        uri: b.to_string(),
        version: version.to_string(),
    })
}

/// `SIP/` and something after it. Compared as bytes: slicing the text at 4
/// would panic inside a multi-byte character of a garbage first line.
fn is_sip_version(s: &str) -> bool {
    s.len() > 4 && s.as_bytes()[..4].eq_ignore_ascii_case(b"SIP/")
}

/// RFC 3261 `token` characters.
pub fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_folded_and_bare_lf() {
        let m = parse(
            b"INVITE sip:bob@example.com SIP/2.0\nf : \"A\" <sip:a@x>\n ;tag=1\ni:abc\nl: 0\n\n",
        )
        .unwrap();
        assert_eq!(m.header("From"), Some("\"A\" <sip:a@x> ;tag=1"));
        assert_eq!(m.header("Call-ID"), Some("abc"));
        assert!(m.anomalies.is_empty());
    }

    #[test]
    fn content_length_mismatch_is_reported() {
        let m = parse(b"INVITE sip:b@x SIP/2.0\r\nContent-Length: 10\r\n\r\nabc").unwrap();
        assert!(m.truncated);
        let m = parse(b"INVITE sip:b@x SIP/2.0\r\nContent-Length: 1\r\n\r\nabc").unwrap();
        assert_eq!(m.body, b"a");
        assert_eq!(m.trailing, b"bc");
    }

    #[test]
    fn garbage_first_lines_are_errors_not_panics() {
        for junk in [
            "Rw{\u{fffd}\u{fffd} x y",
            "ab\u{e9}\u{e9} sip:x SIP/2.0",
            "INVITE sip:x \u{e9}\u{e9}\u{e9}",
        ] {
            assert!(parse(junk.as_bytes()).is_err(), "{junk:?}");
        }
        let _ = parse(b"SIP/\xc3\xa9 200 OK\r\n\r\n");
        // Any bytes at all: an error or a message, never a panic.
        let mut x: u32 = 1;
        for len in 0..2000usize {
            let bytes: Vec<u8> = (0..len % 200)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = parse(&bytes);
            let _ = frame_stream(&bytes);
        }
    }

    #[test]
    fn stream_framing() {
        let msg = b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 2\r\n\r\nhi";
        assert_eq!(frame_stream(msg), Frame::Complete(msg.len()));
        assert_eq!(frame_stream(&msg[..10]), Frame::Incomplete);
        assert_eq!(frame_stream(b"\r\n\r\n"), Frame::KeepAlive(4));
    }
}

//! Just enough SIP to read the messages a peer logged: start line, headers
//! by name, body. Kept separate from the crate's own parser on purpose: the
//! tests judge what went over the wire, not what cidguard thinks of it.

/// One SIP message from a SIPp message log (`-trace_msg`).
#[derive(Clone, Debug)]
pub struct TraceMessage {
    /// True for a message the peer received, false for one it sent.
    pub received: bool,
    /// "UDP", "TCP", ...
    pub transport: String,
    /// The message exactly as on the wire.
    pub text: String,
}

/// Compact header forms (RFC 3261 section 7.3.3 and extensions).
const COMPACT: &[(&str, &str)] = &[
    ("f", "from"),
    ("t", "to"),
    ("i", "call-id"),
    ("m", "contact"),
    ("v", "via"),
    ("l", "content-length"),
    ("c", "content-type"),
    ("k", "supported"),
    ("s", "subject"),
    ("e", "content-encoding"),
    ("y", "identity"),
];

fn canonical(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    COMPACT
        .iter()
        .find(|(short, _)| *short == lower)
        .map_or(lower, |(_, long)| long.to_string())
}

impl TraceMessage {
    pub fn start_line(&self) -> &str {
        self.text.lines().next().unwrap_or("")
    }

    pub fn is_request(&self, method: &str) -> bool {
        self.start_line()
            .split(' ')
            .next()
            .is_some_and(|m| m == method)
    }

    /// Status code of a response.
    pub fn status(&self) -> Option<u16> {
        self.start_line()
            .strip_prefix("SIP/2.0 ")?
            .get(..3)?
            .parse()
            .ok()
    }

    /// The Request-URI of a request.
    pub fn request_uri(&self) -> Option<&str> {
        let mut parts = self.start_line().split(' ');
        parts.next()?;
        parts.next()
    }

    fn head(&self) -> &str {
        match self.text.find("\r\n\r\n") {
            Some(i) => &self.text[..i],
            None => &self.text,
        }
    }

    /// Header lines unfolded, as (name, value).
    pub fn headers(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for line in self.head().split("\r\n").skip(1) {
            if line.starts_with([' ', '\t']) {
                if let Some(last) = out.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(line.trim());
                }
                continue;
            }
            if let Some((name, value)) = line.split_once(':') {
                out.push((name.trim().to_string(), value.trim().to_string()));
            }
        }
        out
    }

    /// Values of every header with this name (case-insensitive, compact
    /// forms included), in order.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        let wanted = canonical(name);
        self.headers()
            .into_iter()
            .filter(|(n, _)| canonical(n) == wanted)
            .map(|(_, v)| v)
            .collect()
    }

    /// Value of the first header with this name.
    pub fn header(&self, name: &str) -> Option<String> {
        self.header_all(name).into_iter().next()
    }

    pub fn body(&self) -> &str {
        match self.text.find("\r\n\r\n") {
            Some(i) => &self.text[i + 4..],
            None => "",
        }
    }
}

/// Parses a SIPp message log. Each record is a separator line, a line like
/// `UDP message received [789] bytes :` or `TCP message sent (539 bytes):`,
/// an empty line, then exactly that many bytes of message.
pub fn parse_trace(log: &str) -> Vec<TraceMessage> {
    let mut out = Vec::new();
    let mut rest = log;
    while let Some(pos) = rest.find(" message ") {
        // Start of the line holding " message ".
        let line_start = rest[..pos].rfind('\n').map_or(0, |i| i + 1);
        let Some(line_end) = rest[pos..].find('\n').map(|i| pos + i) else {
            break;
        };
        let line = &rest[line_start..line_end];
        let after = &rest[line_end + 1..];
        let parsed = parse_record_line(line);
        let Some((transport, received, len)) = parsed else {
            rest = after;
            continue;
        };
        let body = after.strip_prefix('\n').unwrap_or(after);
        let take = len.min(body.len());
        // The count is in bytes; stay on a character boundary regardless.
        let mut end = take;
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        out.push(TraceMessage {
            received,
            transport,
            text: body[..end].to_string(),
        });
        rest = &body[end..];
    }
    out
}

fn parse_record_line(line: &str) -> Option<(String, bool, usize)> {
    let (transport, rest) = line.split_once(" message ")?;
    if transport.contains(' ') || transport.is_empty() {
        return None;
    }
    let received = rest.starts_with("received");
    if !received && !rest.starts_with("sent") {
        return None;
    }
    let digits: String = rest
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .collect();
    Some((transport.to_string(), received, digits.parse().ok()?))
}

/// The user part of a name-addr or addr-spec, e.g. `"X" <sip:+613@h>;tag=1`
/// gives `+613`.
pub fn uri_user(value: &str) -> Option<&str> {
    let start = value.find("sip:").or_else(|| value.find("sips:"))?;
    let uri = &value[start..];
    let uri = &uri[uri.find(':')? + 1..];
    let end = uri.find(['>', ';', ' ']).unwrap_or(uri.len());
    let uri = &uri[..end];
    uri.split_once('@').map(|(user, _)| user)
}

/// A header value without its `;tag=` parameter (From/To comparison).
pub fn without_tag(value: &str) -> &str {
    match value.find(";tag=") {
        Some(i) => &value[..i],
        None => value,
    }
}

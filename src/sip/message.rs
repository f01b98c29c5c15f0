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

use std::borrow::Cow;
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

/// One header line as received, borrowed from the message's bytes: a
/// [`Header`] without the copies, for a reader done with the message before
/// its bytes go (the verdict).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderRef<'a> {
    /// The name exactly as spelled on the wire (`f`, `FROM`, `X-Foo`).
    pub name: &'a str,
    /// The canonical long form (`From` for `f`, `from` or `FROM`); unknown
    /// headers keep their received spelling.
    pub canonical: &'a str,
    /// The value with folding undone and outer whitespace trimmed: owned
    /// only when continuation lines had to be joined.
    pub value: Cow<'a, str>,
    /// 1-based line number of the header in the message, for error reports.
    pub line: usize,
}

/// A parsed SIP message borrowing from its bytes ([`parse_borrowed`]): a
/// [`Message`] without the copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRef<'a> {
    /// The request or status line.
    pub start: StartLine,
    /// The headers in order.
    pub headers: Vec<HeaderRef<'a>>,
    /// Everything after the blank line, cut to Content-Length when that
    /// is smaller than what follows.
    pub body: &'a [u8],
    /// Bytes after the declared Content-Length (usually empty).
    pub trailing: &'a [u8],
    /// Things that were odd but not fatal, as [`Message::anomalies`].
    pub anomalies: Vec<String>,
    /// True when Content-Length promised more bytes than arrived.
    pub truncated: bool,
}

impl MessageRef<'_> {
    /// The same message, owned.
    pub fn to_message(&self) -> Message {
        Message {
            start: self.start.clone(),
            headers: self
                .headers
                .iter()
                .map(|h| Header {
                    name: h.name.to_string(),
                    canonical: h.canonical.to_string(),
                    value: h.value.to_string(),
                    line: h.line,
                })
                .collect(),
            body: self.body.to_vec(),
            trailing: self.trailing.to_vec(),
            anomalies: self.anomalies.clone(),
            truncated: self.truncated,
        }
    }

    /// The Request-URI of a request.
    pub fn request_uri(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    /// Every header with this canonical name, in order.
    pub fn headers_named<'s, 'n>(
        &'s self,
        canonical: &'n str,
    ) -> impl Iterator<Item = &'s HeaderRef<'s>> + use<'s, 'n> {
        self.headers
            .iter()
            .filter(move |h| h.canonical.eq_ignore_ascii_case(canonical))
    }

    /// The first value of a header (by canonical name).
    pub fn header(&self, canonical: &str) -> Option<&str> {
        self.headers_named(canonical).next().map(|h| &*h.value)
    }
}

impl Message {
    /// The same message as a [`MessageRef`] borrowing from this one.
    pub fn borrowed(&self) -> MessageRef<'_> {
        MessageRef {
            start: self.start.clone(),
            headers: self
                .headers
                .iter()
                .map(|h| HeaderRef {
                    name: &h.name,
                    canonical: &h.canonical,
                    value: Cow::Borrowed(&h.value),
                    line: h.line,
                })
                .collect(),
            body: &self.body,
            trailing: &self.trailing,
            anomalies: self.anomalies.clone(),
            truncated: self.truncated,
        }
    }
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
    /// A status line whose code is not three digits from 100 to 699
    /// (RFC 3261 section 7.2; RFC 4475 section 3.1.2.19 sends 4294967301).
    #[error("the status code {0:?} is not three digits from 100 to 699")]
    BadStatusCode(String),
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
    known_name(name).unwrap_or(name).to_string()
}

/// The canonical long form of a header name the parser knows (any case,
/// compact or long), without allocating; None for other names.
pub fn known_name(name: &str) -> Option<&'static str> {
    // Every known name is short: lower-case it on the stack.
    let mut buf = [0u8; 24];
    let lower = buf.get_mut(..name.len())?;
    lower.copy_from_slice(name.as_bytes());
    lower.make_ascii_lowercase();
    // RFC 3261 section 7.3.3 and later compact forms (RFC 3515, 3841, 3891,
    // 4028, 4474...), grouped by length so that a name is compared only
    // with the few of its own length.
    let long = match (lower.len(), &*lower) {
        (1, b"i") => "Call-ID",
        (1, b"m") => "Contact",
        (1, b"e") => "Content-Encoding",
        (1, b"l") => "Content-Length",
        (1, b"c") => "Content-Type",
        (1, b"f") => "From",
        (1, b"s") => "Subject",
        (1, b"k") => "Supported",
        (1, b"t") => "To",
        (1, b"v") => "Via",
        (1, b"r") => "Refer-To",
        (1, b"b") => "Referred-By",
        (1, b"x") => "Session-Expires",
        (1, b"o") => "Event",
        (1, b"u") => "Allow-Events",
        (1, b"a") => "Accept-Contact",
        (1, b"j") => "Reject-Contact",
        (1, b"d") => "Request-Disposition",
        (1, b"y") => "Identity",
        (1, b"n") => "Identity-Info",
        (2, b"to") => "To",
        (3, b"via") => "Via",
        (4, b"from") => "From",
        (4, b"cseq") => "CSeq",
        (4, b"date") => "Date",
        (5, b"event") => "Event",
        (5, b"route") => "Route",
        (5, b"allow") => "Allow",
        (6, b"server") => "Server",
        (6, b"reason") => "Reason",
        (6, b"accept") => "Accept",
        (7, b"call-id") => "Call-ID",
        (7, b"contact") => "Contact",
        (7, b"subject") => "Subject",
        (7, b"privacy") => "Privacy",
        (7, b"expires") => "Expires",
        (7, b"require") => "Require",
        (7, b"warning") => "Warning",
        (8, b"refer-to") => "Refer-To",
        (8, b"identity") => "Identity",
        (8, b"reply-to") => "Reply-To",
        (9, b"supported") => "Supported",
        (9, b"diversion") => "Diversion",
        (9, b"call-info") => "Call-Info",
        (10, b"user-agent") => "User-Agent",
        (10, b"alert-info") => "Alert-Info",
        (11, b"referred-by") => "Referred-By",
        (11, b"unsupported") => "Unsupported",
        (11, b"min-expires") => "Min-Expires",
        (11, b"retry-after") => "Retry-After",
        (12, b"content-type") => "Content-Type",
        (12, b"allow-events") => "Allow-Events",
        (12, b"history-info") => "History-Info",
        (12, b"record-route") => "Record-Route",
        (12, b"organization") => "Organization",
        (12, b"max-forwards") => "Max-Forwards",
        (13, b"identity-info") => "Identity-Info",
        (13, b"p-charge-info") => "P-Charge-Info",
        (13, b"authorization") => "Authorization",
        (13, b"proxy-require") => "Proxy-Require",
        (14, b"content-length") => "Content-Length",
        (14, b"accept-contact") => "Accept-Contact",
        (14, b"reject-contact") => "Reject-Contact",
        (15, b"session-expires") => "Session-Expires",
        (15, b"remote-party-id") => "Remote-Party-ID",
        (16, b"content-encoding") => "Content-Encoding",
        (16, b"www-authenticate") => "WWW-Authenticate",
        (17, b"p-called-party-id") => "P-Called-Party-ID",
        (18, b"proxy-authenticate") => "Proxy-Authenticate",
        (19, b"request-disposition") => "Request-Disposition",
        (19, b"p-asserted-identity") => "P-Asserted-Identity",
        (19, b"proxy-authorization") => "Proxy-Authorization",
        (20, b"p-preferred-identity") => "P-Preferred-Identity",
        (21, b"p-access-network-info") => "P-Access-Network-Info",
        _ => return None,
    };
    Some(long)
}

/// Where the header section ends: the index just after the blank line, for
/// CRLF CRLF or bare LF LF. None if the blank line hasn't arrived yet.
pub fn header_end(buf: &[u8]) -> Option<usize> {
    header_end_from(buf, 0)
}

/// [`header_end`], knowing that no blank line ends before `from` (a stream
/// reader remembers how far it has looked, so a message arriving a byte at
/// a time is scanned once, not once per byte).
pub fn header_end_from(buf: &[u8], from: usize) -> Option<usize> {
    // Back up two bytes: the end marker may straddle what was already seen.
    let start = from.saturating_sub(2);
    for i in memchr::memchr_iter(b'\n', buf.get(start..)?).map(|k| start + k) {
        // Look at the next line: blank if it is "\n" or "\r\n".
        match buf.get(i + 1) {
            Some(b'\n') => return Some(i + 2),
            Some(b'\r') if buf.get(i + 2) == Some(&b'\n') => return Some(i + 3),
            _ => {}
        }
    }
    None
}

/// Why a stream can't be framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("no Content-Length on a stream transport")]
    NoContentLength,
    #[error("unreadable Content-Length")]
    BadContentLength,
    #[error("a Content-Length larger than a message may be")]
    ContentLengthTooLarge,
    #[error("header section too large")]
    HeaderTooLarge,
    #[error("message too large")]
    MessageTooLarge,
    #[error("the stream is not SIP")]
    NotSip,
}

/// Most digits read of a Content-Length: enough for any length below
/// [`MAX_MESSAGE`] with leading zeros to spare, few enough that the value
/// fits a u64 without overflow.
const MAX_LENGTH_DIGITS: usize = 12;

/// Read the Content-Length out of a header block without a full parse
/// (used by stream framing). Ok(None) when absent. A folded value is
/// unfolded; the value must be digits only (RFC 3261 section 20.14 has no
/// sign); and a length that could never fit a message is refused here, so
/// no sum with it can overflow. With several Content-Length headers the
/// first frames the stream (the parser then finds the message malformed,
/// and it is answered 400).
pub fn sniff_content_length(head: &[u8]) -> Result<Option<usize>, FramingError> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .skip(1)
        .peekable();
    while let Some(line) = lines.next() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let n = name.trim_end_matches([' ', '\t']);
        if !(n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("l")) {
            continue;
        }
        let mut value = value.to_string();
        while let Some(next) = lines.next_if(|l| l.starts_with([' ', '\t'])) {
            value.push(' ');
            value.push_str(next);
        }
        return read_length(value.trim()).map(Some);
    }
    Ok(None)
}

/// A Content-Length value: 1 to [`MAX_LENGTH_DIGITS`] ASCII digits, at most
/// [`MAX_MESSAGE`].
fn read_length(v: &str) -> Result<usize, FramingError> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FramingError::BadContentLength);
    }
    let digits = v.trim_start_matches('0');
    if digits.len() > MAX_LENGTH_DIGITS {
        return Err(FramingError::ContentLengthTooLarge);
    }
    // Cannot overflow: at most 12 digits.
    let n = digits
        .bytes()
        .fold(0u64, |n, b| n * 10 + u64::from(b - b'0'));
    match usize::try_from(n) {
        Ok(n) if n <= MAX_MESSAGE => Ok(n),
        _ => Err(FramingError::ContentLengthTooLarge),
    }
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
    Invalid(FramingError),
}

/// Frame a message on a stream transport (TCP/TLS), where Content-Length is
/// mandatory (RFC 3261 section 18.3). Every length from the wire is checked
/// against [`MAX_MESSAGE`] before it is added to anything.
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
            Frame::Invalid(FramingError::HeaderTooLarge)
        } else {
            Frame::Incomplete
        };
    };
    match frame_length(&buf[..end]) {
        Ok(total) if buf.len() >= total => Frame::Complete(total),
        Ok(_) => Frame::Incomplete,
        Err(e) => Frame::Invalid(e),
    }
}

/// The whole length of a message whose header section is `head`.
fn frame_length(head: &[u8]) -> Result<usize, FramingError> {
    let len = sniff_content_length(head)?.ok_or(FramingError::NoContentLength)?;
    match head.len().checked_add(len) {
        Some(total) if total <= MAX_MESSAGE => Ok(total),
        _ => Err(FramingError::MessageTooLarge),
    }
}

/// Longest first line waited for on a stream before deciding it is not SIP.
pub const MAX_START_LINE: usize = 8 * 1024;

/// What a [`StreamFramer`] found at the front of its buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Framed {
    /// One whole message, taken off the buffer.
    Message(Vec<u8>),
    /// Leading CRLFs taken off the buffer: a ping (RFC 5626 section 4.4.1)
    /// when they held a double CRLF, else a pong or noise.
    KeepAlive { ping: bool },
    /// Need more bytes.
    Incomplete,
}

/// The receive side of one stream connection: a buffer that never holds
/// more than one message, and the framing state, so each byte is looked at
/// a bounded number of times however the peer slices its sends.
#[derive(Debug, Default)]
pub struct StreamFramer {
    /// Bytes received and not yet framed.
    buf: Vec<u8>,
    /// No blank line ends before this index of `buf`.
    scanned: usize,
    /// The first line has been seen and looks like SIP.
    start_ok: bool,
    /// Once the header section is complete: the whole message's length.
    total: Option<usize>,
}

impl StreamFramer {
    pub fn new() -> StreamFramer {
        StreamFramer::default()
    }

    /// Bytes held.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Room for the message in progress: a read never needs more than this
    /// (the rest of a framed message, or up to [`MAX_MESSAGE`] in all).
    pub fn room(&self) -> usize {
        match self.total {
            Some(t) => t.saturating_sub(self.buf.len()).max(1),
            None => MAX_MESSAGE.saturating_sub(self.buf.len()).max(1),
        }
    }

    /// Add received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Take the next thing off the front of the buffer. An error means the
    /// stream can't be framed any more: close it (RFC 3261 section 18.3).
    pub fn next_frame(&mut self) -> Result<Framed, FramingError> {
        if !self.start_ok {
            // Between messages: CRLFs are keep-alives, not a message.
            let ws = self
                .buf
                .iter()
                .take_while(|b| **b == b'\r' || **b == b'\n')
                .count();
            if ws > 0 {
                let ping = self.buf[..ws].windows(4).any(|w| w == b"\r\n\r\n");
                self.buf.drain(..ws);
                return Ok(Framed::KeepAlive { ping });
            }
            match opening(&self.buf) {
                Opening::Sip => self.start_ok = true,
                Opening::Waiting => return Ok(Framed::Incomplete),
                Opening::NotSip => return Err(FramingError::NotSip),
            }
        }
        let total = match self.total {
            Some(t) => t,
            None => match header_end_from(&self.buf, self.scanned) {
                Some(end) => {
                    let t = frame_length(&self.buf[..end])?;
                    self.total = Some(t);
                    t
                }
                None => {
                    self.scanned = self.buf.len();
                    if self.buf.len() > MAX_MESSAGE {
                        return Err(FramingError::HeaderTooLarge);
                    }
                    return Ok(Framed::Incomplete);
                }
            },
        };
        if self.buf.len() < total {
            return Ok(Framed::Incomplete);
        }
        let rest = self.buf.split_off(total);
        let msg = std::mem::replace(&mut self.buf, rest);
        self.scanned = 0;
        self.total = None;
        self.start_ok = false;
        Ok(Framed::Message(msg))
    }
}

/// Whether the front of a stream buffer can become a SIP message.
enum Opening {
    Sip,
    Waiting,
    NotSip,
}

/// The first line must be a request line ending in a `SIP/` version or a
/// status line; a stream that sends anything else (HTTP, a TLS hello on the
/// plain port, noise) is not held open waiting for a blank line.
fn opening(buf: &[u8]) -> Opening {
    let head = &buf[..buf.len().min(MAX_START_LINE)];
    let Some(end) = head.iter().position(|b| *b == b'\n') else {
        return if buf.len() >= MAX_START_LINE {
            Opening::NotSip
        } else {
            Opening::Waiting
        };
    };
    let line = head[..end].strip_suffix(b"\r").unwrap_or(&head[..end]);
    // Trailing spaces after the version are read liberally by the parser
    // (RFC 4475 section 3.1.2.9), so they must not make a stream "not SIP".
    let line = match line.iter().rposition(|b| *b != b' ' && *b != b'\t') {
        Some(i) => &line[..=i],
        None => &line[..0],
    };
    let is_sip = |t: &[u8]| t.len() > 4 && t[..4].eq_ignore_ascii_case(b"SIP/");
    let last = line.rsplit(|b| *b == b' ').next().unwrap_or_default();
    if is_sip(line) || (line.contains(&b' ') && is_sip(last)) {
        Opening::Sip
    } else {
        Opening::NotSip
    }
}

/// Parse one SIP message.
pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
    let (head, rest) = split_message(bytes)?;
    // Valid UTF-8 (almost every message) is read in place; anything else
    // with U+FFFD for what is not.
    let head_text = String::from_utf8_lossy(head);
    parse_text(&head_text, rest).map(|m| m.to_message())
}

/// [`parse`] without copying anything out of `bytes`: the headers and body
/// borrow from them. None when the header section is not UTF-8 ([`parse`]
/// reads that with U+FFFD for what is not). The same reading as
/// [`parse`]'s, which is this one copied.
pub fn parse_borrowed(bytes: &[u8]) -> Option<Result<MessageRef<'_>, ParseError>> {
    let (head, rest) = match split_message(bytes) {
        Ok(parts) => parts,
        Err(e) => return Some(Err(e)),
    };
    let head_text = std::str::from_utf8(head).ok()?;
    Some(parse_text(head_text, rest))
}

/// A message's header section and what follows it, leading blank lines
/// skipped.
fn split_message(bytes: &[u8]) -> Result<(&[u8], &[u8]), ParseError> {
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
    Ok(match header_end(bytes) {
        Some(end) => (&bytes[..end], &bytes[end..]),
        None => (bytes, &[][..]),
    })
}

/// Parse a message whose header section is `head_text` and the rest `rest`.
fn parse_text<'a>(head_text: &'a str, rest: &'a [u8]) -> Result<MessageRef<'a>, ParseError> {
    let mut lines = split_lines(head_text).map(|l| l.strip_suffix('\r').unwrap_or(l));
    let first = lines.next().unwrap_or_default();
    let start = parse_start_line(first)?;

    let mut anomalies = Vec::new();
    // Room for a header a line (folded lines aside), made once.
    let line_count = memchr::memchr_iter(b'\n', head_text.as_bytes()).count();
    let mut headers: Vec<HeaderRef<'a>> = Vec::with_capacity(line_count.min(MAX_HEADERS) + 1);
    for (idx, line) in lines.enumerate() {
        let line_no = idx + 2;
        if line.is_empty() {
            continue; // the blank line ending the header section
        }
        if line.starts_with([' ', '\t']) {
            // Folded continuation of the previous header.
            match headers.last_mut() {
                Some(prev) => {
                    let value = prev.value.to_mut();
                    if !value.is_empty() {
                        value.push(' ');
                    }
                    value.push_str(line.trim());
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
        let Some((name, value)) = split_at_colon(line) else {
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
        headers.push(HeaderRef {
            name,
            canonical: known_name(name).unwrap_or(name),
            value: Cow::Borrowed(trim(value)),
            line: line_no,
        });
    }

    let mut body = rest;
    let mut trailing: &[u8] = &[];
    let mut truncated = false;
    let mut lengths = headers.iter().filter(|h| h.canonical == "Content-Length");
    let first_length = lengths.next();
    let more = lengths.count();
    if more > 0 {
        anomalies.push(format!("{} Content-Length headers", more + 1));
    }
    match first_length {
        None if !body.is_empty() => {
            anomalies.push("no Content-Length header; the body runs to the end".into())
        }
        None => {}
        Some(h) => match h.value.trim().parse::<usize>() {
            Ok(n) if n < body.len() => {
                (body, trailing) = body.split_at(n);
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
    Ok(MessageRef {
        start,
        headers,
        body,
        trailing,
        anomalies,
        truncated,
    })
}

/// `s.split('\n')`, each line end found a word or a vector at a time.
fn split_lines(s: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let r = rest?;
        match memchr::memchr(b'\n', r.as_bytes()) {
            // A line feed is one byte of its own: both sides are whole
            // characters.
            Some(k) => {
                rest = r.get(k + 1..);
                r.get(..k)
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// `line.split_once(':')`, the colon found a word or a vector at a time.
fn split_at_colon(line: &str) -> Option<(&str, &str)> {
    let k = memchr::memchr(b':', line.as_bytes())?;
    Some((line.get(..k)?, line.get(k + 1..)?))
}

/// `s.trim()`: ASCII whitespace is trimmed a byte at a time, and only text
/// that then starts or ends with a non-ASCII character (which may be
/// Unicode whitespace) is trimmed the general way.
fn trim(s: &str) -> &str {
    // char::is_whitespace on ASCII: tab, line feed, vertical tab, form
    // feed, carriage return and space.
    let t = s.trim_matches(|c: char| matches!(c, '\t' | '\n' | '\x0b' | '\x0c' | '\r' | ' '));
    match (t.as_bytes().first(), t.as_bytes().last()) {
        (Some(a), Some(b)) if !a.is_ascii() || !b.is_ascii() => s.trim(),
        _ => t,
    }
}

/// Why a request that could be read must still be refused: RFC 3261's
/// rules for a request's start line and mandatory headers, as RFC 4475's
/// invalid messages (section 3.1.2) exercise them. [`Malformed::status`] is
/// the response code to send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Anything but SIP/2.0 (RFC 4475 section 3.1.2.16: 505).
    #[error("SIP version {0:?} is not supported")]
    Version(String),
    /// A Request-URI in angle brackets, with whitespace inside or without
    /// a scheme (RFC 4475 sections 3.1.2.7 and 3.1.2.8). The reason only:
    /// the URI itself may hold someone's number, which errors never carry.
    #[error("the Request-URI is not a URI: {0}")]
    RequestUri(&'static str),
    /// Mandatory headers that are absent (RFC 4475 section 3.3.1).
    #[error("no {} header", .0.join(", no "))]
    Missing(Vec<&'static str>),
    /// A header that must appear once appears more often (RFC 4475
    /// section 3.3.8).
    #[error("{count} {header} headers where one is allowed")]
    Repeated { header: &'static str, count: usize },
    /// From or To can't be read as an address (RFC 4475 section 3.1.2.6).
    #[error("{header} can't be read: {why}")]
    Address { header: &'static str, why: String },
    /// CSeq is not a number and a method.
    #[error("CSeq {0:?} is not a sequence number and a method")]
    CSeq(String),
    /// The CSeq number is 2**31 or more (RFC 3261 section 8.1.1.5; RFC 4475
    /// section 3.1.2.4 sends one above 2**32).
    #[error("the CSeq number {0:?} is not below 2**31")]
    CSeqRange(String),
    /// The CSeq method differs from the request's (RFC 4475 sections
    /// 3.1.2.17 and 3.1.2.18).
    #[error("the CSeq method {cseq:?} is not the request method {method:?}")]
    CSeqMethod { method: String, cseq: String },
    /// Max-Forwards is not a number from 0 to 255.
    #[error("Max-Forwards {0:?} is not a number from 0 to 255")]
    MaxForwards(String),
    /// A Content-Length that is not a number (RFC 4475 section 3.1.2.3
    /// sends -999).
    #[error("Content-Length {0:?} is not a number")]
    ContentLength(String),
    /// More than one Content-Length (RFC 4475 section 3.3.9).
    #[error("{0} Content-Length headers")]
    ContentLengths(usize),
    /// Content-Length promises more bytes than arrived (RFC 4475 section
    /// 3.1.2.2, over UDP).
    #[error("Content-Length {declared} but only {arrived} bytes arrived")]
    Truncated { declared: String, arrived: usize },
    /// An empty value or parameter in a Via or Contact list (RFC 4475
    /// section 3.1.2.1). The header's name only, as for the Request-URI.
    #[error("{0} has an empty value or parameter")]
    EmptyPart(&'static str),
    /// The top Via branch is only the RFC 3261 magic cookie, so it
    /// identifies no transaction (RFC 4475 section 3.2.1).
    #[error("the Via branch {0:?} has no transaction identifier after the magic cookie")]
    Branch(String),
}

impl Malformed {
    /// The response code: 505 for a version we don't speak, else 400.
    pub fn status(&self) -> u16 {
        match self {
            Malformed::Version(_) => 505,
            _ => 400,
        }
    }
}

/// The RFC 3261 magic cookie that starts every RFC 3261 branch.
const BRANCH_COOKIE: &str = "z9hG4bK";

/// Check a request against the rules every element applies before it
/// processes it (RFC 3261 sections 8.1.1, 8.2 and 20; RFC 4475 section 3.1.2),
/// in the order that names the reason RFC 4475 gives for each of its invalid
/// messages. Responses are not checked (Ok). Being liberal where RFC 4475
/// allows it (extra spaces in the start line, a Date in another zone, escaped
/// headers in the Request-URI, spaces inside `<...>`, an unquoted display
/// name) is deliberate: a call the endpoint refuses can't be judged, so a
/// sloppy but readable INVITE is taken as it is.
pub fn check_request(m: &Message) -> Result<(), Malformed> {
    let StartLine::Request {
        method,
        uri,
        version,
    } = &m.start
    else {
        return Ok(());
    };
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return Err(Malformed::Version(truncate(version)));
    }
    if let Some(why) = not_a_uri(uri) {
        return Err(Malformed::RequestUri(why));
    }
    let required = ["From", "To", "Call-ID", "CSeq", "Via"];
    let missing: Vec<&'static str> = required
        .into_iter()
        .filter(|h| m.headers_named(h).next().is_none())
        .collect();
    if !missing.is_empty() {
        return Err(Malformed::Missing(missing));
    }
    for header in ["From", "To", "Call-ID", "CSeq"] {
        let count = m.headers_named(header).count();
        if count != 1 {
            return Err(Malformed::Repeated { header, count });
        }
    }
    for header in ["From", "To"] {
        if let Some(Err(e)) = m.header(header).map(super::header::parse_name_addr) {
            return Err(Malformed::Address {
                header,
                why: e.to_string(),
            });
        }
    }
    let cseq = m.header("CSeq").unwrap_or_default();
    let mut words = cseq.split_whitespace();
    let (Some(number), Some(cseq_method), None) = (words.next(), words.next(), words.next()) else {
        return Err(Malformed::CSeq(truncate(cseq)));
    };
    if wire_number(number, (1 << 31) - 1).is_none() {
        return Err(if number.bytes().all(|b| b.is_ascii_digit()) {
            Malformed::CSeqRange(truncate(number))
        } else {
            Malformed::CSeq(truncate(cseq))
        });
    }
    if cseq_method != method {
        return Err(Malformed::CSeqMethod {
            method: truncate(method),
            cseq: truncate(cseq_method),
        });
    }
    if let Some(mf) = m.header("Max-Forwards") {
        if wire_number(mf, 255).is_none() {
            return Err(Malformed::MaxForwards(truncate(mf)));
        }
    }
    let lengths: Vec<&str> = m
        .headers_named("Content-Length")
        .map(|h| h.value.as_str())
        .collect();
    if lengths.len() > 1 {
        return Err(Malformed::ContentLengths(lengths.len()));
    }
    if let Some(cl) = lengths.first() {
        if wire_number(cl, u64::MAX).is_none() {
            return Err(Malformed::ContentLength(truncate(cl)));
        }
    }
    if m.truncated {
        return Err(Malformed::Truncated {
            declared: truncate(lengths.first().copied().unwrap_or_default()),
            arrived: m.body.len(),
        });
    }
    for header in ["Via", "Contact"] {
        for h in m.headers_named(header) {
            if has_empty_part(&h.value) {
                return Err(Malformed::EmptyPart(header));
            }
        }
    }
    let top_branch = m
        .header("Via")
        .and_then(|v| {
            let first = super::header::split_list(v).into_iter().next()?;
            let params = first.find(';').map(|i| &first[i..]).unwrap_or("");
            super::header::parse_params(params)
                .into_iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("branch"))
        })
        .and_then(|(_, v)| v);
    if let Some(b) = top_branch {
        let b = b.trim();
        if b.is_empty() || b.eq_ignore_ascii_case(BRANCH_COOKIE) {
            return Err(Malformed::Branch(truncate(b)));
        }
    }
    Ok(())
}

/// An unsigned decimal number from the wire (`1*DIGIT`, leading zeros
/// allowed, surrounding whitespace ignored) that is at most `max`, computed
/// with checked arithmetic: None for anything else, however long. Rust's own
/// `parse` would also take a leading `+`.
pub fn wire_number(text: &str, max: u64) -> Option<u64> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for b in t.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        if n > max {
            return None;
        }
    }
    Some(n)
}

/// RFC 3261 delta-seconds (Expires, Min-Expires, Retry-After, the expires
/// parameter): a 32-bit count of seconds. None when it isn't one, so the
/// caller falls back to its default (RFC 4475 section 3.1.2.4 suggests the
/// default for an out-of-range expiry).
pub fn delta_seconds(text: &str) -> Option<u32> {
    wire_number(text, u64::from(u32::MAX)).and_then(|n| u32::try_from(n).ok())
}

/// Why a Request-URI is not `scheme ":" ...` with an RFC 3986 scheme and
/// no whitespace or angle brackets anywhere; None when it is.
fn not_a_uri(uri: &str) -> Option<&'static str> {
    if uri.contains(['<', '>']) {
        return Some("in angle brackets");
    }
    if uri.contains(char::is_whitespace) {
        return Some("whitespace inside");
    }
    let Some((scheme, rest)) = uri.split_once(':') else {
        return Some("no scheme");
    };
    let mut sb = scheme.bytes();
    let scheme_ok = sb.next().is_some_and(|b| b.is_ascii_alphabetic())
        && sb.all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    if !scheme_ok || rest.is_empty() {
        return Some("no scheme");
    }
    None
}

/// A comma-separated header value with an empty element or an empty
/// `;` parameter outside quotes and `<...>` (`a;;b`, `a;`, `a,,b`).
fn has_empty_part(value: &str) -> bool {
    let mut in_quotes = false;
    let mut escaped = false;
    let mut depth = 0u32;
    // Whether anything but whitespace was seen since the last separator.
    let mut seen = false;
    for c in value.chars() {
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
            '"' => {
                in_quotes = true;
                seen = true;
            }
            '<' => {
                depth += 1;
                seen = true;
            }
            '>' => {
                depth = depth.saturating_sub(1);
                seen = true;
            }
            ';' | ',' if depth == 0 => {
                if !seen {
                    return true;
                }
                seen = false;
            }
            c if c.is_whitespace() => {}
            _ => seen = true,
        }
    }
    !seen
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

fn parse_start_line(line: &str) -> Result<StartLine, ParseError> {
    let bad = || ParseError::BadStartLine(truncate(line));
    // RFC 3261 wants exactly one SP between the parts. Extra spaces between
    // them or after the version are read liberally, as RFC 4475 sections
    // 3.1.2.9 and 3.1.2.10 allow: the parts are still unambiguous.
    let trimmed = line.trim_end_matches([' ', '\t']);
    let (a, rest) = trimmed.split_once(' ').ok_or_else(bad)?;
    let rest = rest.trim_start_matches(' ');
    if is_sip_version(a) {
        let (b, c) = rest.split_once(' ').unwrap_or((rest, ""));
        // Status-Code = 3DIGIT; Rust's integer parse would also take "+20".
        let code = match b.as_bytes() {
            [x, y, z] if [x, y, z].iter().all(|d| d.is_ascii_digit()) => {
                u16::from(x - b'0') * 100 + u16::from(y - b'0') * 10 + u16::from(z - b'0')
            }
            _ => return Err(ParseError::BadStatusCode(truncate(b))),
        };
        if !(100..=699).contains(&code) {
            return Err(ParseError::BadStatusCode(truncate(b)));
        }
        return Ok(StartLine::Response {
            version: a.to_string(),
            code,
            reason: c.trim_start_matches(' ').to_string(),
        });
    }
    // The version is the last word: a Request-URI with whitespace inside
    // (RFC 4475 section 3.1.2.8) is read whole here, so that the request can
    // be answered 400 with the reason (see [`check_request`]).
    let (uri, version) = rest.rsplit_once(' ').ok_or_else(bad)?;
    let uri = uri.trim_matches(' ');
    if !is_sip_version(version) || a.is_empty() || !a.bytes().all(is_token_byte) || uri.is_empty() {
        return Err(bad());
    }
    Ok(StartLine::Request {
        method: a.to_string(),
        uri: uri.to_string(),
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
    fn read_in_place_as_parse_reads() {
        let cases: [&[u8]; 9] = [
            b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nSubject: one\r\n  two\r\n\tthree\r\nContent-Length: 3\r\n\r\nabcdef",
            b"\r\n\r\nINVITE sip:a@b SIP/2.0\r\nf: \"A\" <sip:x@y>\r\nl: 10\r\n\r\nshort",
            b"SIP/2.0 200 OK\nCall-ID: x\n\n",
            b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"INVITE sip:a@b SIP/2.0\r\nBad Header: x\r\n\r\n",
            b"INVITE sip:a@b SIP/2.0\r\n continuation first\r\n\r\n",
            b"not sip at all",
            b"INVITE sip:a@b SIP/2.0\r\nX: \xe2\x80\x83spaced\xe2\x80\x83 \r\nContent-Length: x\r\n\r\nbody",
            b"",
        ];
        for bytes in cases {
            let in_place = parse_borrowed(bytes).map(|r| r.map(|m| m.to_message()));
            assert_eq!(
                in_place,
                Some(parse(bytes)),
                "{}",
                String::from_utf8_lossy(bytes)
            );
            if let Ok(m) = parse(bytes) {
                assert_eq!(m.borrowed().to_message(), m);
            }
        }
        // A header section that is not UTF-8 is left to parse.
        assert!(parse_borrowed(b"INVITE sip:a@b SIP/2.0\r\nX: caf\xe9\r\n\r\n").is_none());
    }

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
    fn wire_numbers_are_capped_without_overflow() {
        assert_eq!(wire_number("0068", 255), Some(68));
        assert_eq!(wire_number(" 255 ", 255), Some(255));
        for bad in [
            "256",
            "-1",
            "+5",
            "",
            " ",
            "1 2",
            "0x10",
            "99999999999999999999999",
        ] {
            assert_eq!(wire_number(bad, 255), None, "{bad:?}");
        }
        assert_eq!(
            wire_number("18446744073709551615", u64::MAX),
            Some(u64::MAX)
        );
        assert_eq!(wire_number("18446744073709551616", u64::MAX), None);
        assert_eq!(delta_seconds("4294967295"), Some(u32::MAX));
        assert_eq!(delta_seconds("4294967296"), None);
    }

    #[test]
    fn start_line_spaces_and_status_codes() {
        let m = parse(b"INVITE  sip:a@b  SIP/2.0 \r\n\r\n").unwrap();
        assert_eq!(m.request_uri(), Some("sip:a@b"));
        let m = parse(b"INVITE sip:a@b; lr SIP/2.0\r\n\r\n").unwrap();
        assert_eq!(m.request_uri(), Some("sip:a@b; lr"));
        assert!(matches!(check_request(&m), Err(Malformed::RequestUri(_))));
        for code in ["4294967301", "+20", "99", "700", "2000"] {
            let r = parse(format!("SIP/2.0 {code} X\r\n\r\n").as_bytes());
            assert!(matches!(r, Err(ParseError::BadStatusCode(_))), "{code}");
        }
        assert_eq!(parse(b"SIP/2.0 100 \r\n\r\n").unwrap().status(), Some(100));
    }

    #[test]
    fn stream_framing() {
        let msg = b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 2\r\n\r\nhi";
        assert_eq!(frame_stream(msg), Frame::Complete(msg.len()));
        assert_eq!(frame_stream(&msg[..10]), Frame::Incomplete);
        assert_eq!(frame_stream(b"\r\n\r\n"), Frame::KeepAlive(4));
    }

    /// The issue's 73-byte TCP message: the framing added this length to
    /// the header end unchecked, the sum wrapped and the reader spun.
    #[test]
    fn content_length_near_u64_max_is_refused_not_wrapped() {
        let msg =
            b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nContent-Length: 18446744073709551543\r\n\r\n";
        assert_eq!(msg.len(), 73);
        assert_eq!(
            frame_stream(msg),
            Frame::Invalid(FramingError::ContentLengthTooLarge)
        );
        let mut f = StreamFramer::new();
        f.push(msg);
        assert_eq!(f.next_frame(), Err(FramingError::ContentLengthTooLarge));
    }

    #[test]
    fn content_length_values_from_the_wire() {
        let framed = |v: &str| {
            let m = format!("OPTIONS sip:x SIP/2.0\r\nContent-Length: {v}\r\n\r\n");
            frame_stream(m.as_bytes())
        };
        for v in [
            "18446744073709551615",
            "18446744073709551616",
            "340282366920938463463374607431768211456",
            "131073",
        ] {
            assert_eq!(
                framed(v),
                Frame::Invalid(FramingError::ContentLengthTooLarge),
                "{v}"
            );
        }
        // Within the number's bound but not with the headers added.
        assert_eq!(
            framed("131072"),
            Frame::Invalid(FramingError::MessageTooLarge)
        );
        for v in ["+5", "-1", "5 5", "0x10", "", "1e3", "\u{665}"] {
            assert_eq!(
                framed(v),
                Frame::Invalid(FramingError::BadContentLength),
                "{v:?}"
            );
        }
        // Leading zeros are still a small number.
        let zeros = "OPTIONS sip:x SIP/2.0\r\nContent-Length: 0000000000000000000000\r\n\r\n";
        assert_eq!(frame_stream(zeros.as_bytes()), Frame::Complete(zeros.len()));
        // With two, the first frames (and the parser finds two).
        let two = b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 5\r\nl: 99999999999999\r\n\r\nhello";
        assert_eq!(frame_stream(two), Frame::Complete(two.len()));
        // A folded value is read whole.
        let folded = b"OPTIONS sip:x SIP/2.0\r\nContent-Length:\r\n 2\r\n\r\nhi";
        assert_eq!(frame_stream(folded), Frame::Complete(folded.len()));
        assert_eq!(
            frame_stream(b"OPTIONS sip:x SIP/2.0\r\nVia: x\r\n\r\n"),
            Frame::Invalid(FramingError::NoContentLength)
        );
    }

    /// However the peer slices its sends (a byte at a time included), the
    /// framer yields the same messages and keep-alives, and never holds
    /// more than one message.
    #[test]
    fn stream_framer_any_slicing() {
        let a = b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\nContent-Length: 3\r\n\r\nabc".to_vec();
        let b = b"SIP/2.0 200 OK\nl: 0\n\n".to_vec();
        let mut stream = Vec::new();
        stream.extend_from_slice(b"\r\n\r\n");
        stream.extend_from_slice(&a);
        stream.extend_from_slice(&b);
        stream.extend_from_slice(b"\r\n");
        stream.extend_from_slice(&a);
        let mut x: u32 = 7;
        for slicing in 0..200 {
            let mut f = StreamFramer::new();
            let mut got = Vec::new();
            let mut i = 0;
            while i < stream.len() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let n = if slicing == 0 { 1 } else { 1 + x as usize % 40 };
                let n = n.min(stream.len() - i).min(f.room());
                f.push(&stream[i..i + n]);
                i += n;
                loop {
                    match f.next_frame().unwrap() {
                        Framed::Incomplete => break,
                        other => got.push(other),
                    }
                }
                assert!(f.buffered() <= MAX_MESSAGE);
            }
            let messages: Vec<&Framed> = got
                .iter()
                .filter(|g| matches!(g, Framed::Message(_)))
                .collect();
            assert_eq!(
                messages,
                [
                    &Framed::Message(a.clone()),
                    &Framed::Message(b.clone()),
                    &Framed::Message(a.clone())
                ],
                "slicing {slicing}"
            );
            assert_eq!(f.buffered(), 0);
        }
    }

    #[test]
    fn stream_framer_refuses_what_is_not_sip_early() {
        let mut f = StreamFramer::new();
        f.push(b"GET / HTTP/1.1\r\nHost: x\r\n");
        assert_eq!(f.next_frame(), Err(FramingError::NotSip));
        let mut f = StreamFramer::new();
        f.push(b"\x16\x03\x01\x02\x00\x01\n");
        assert_eq!(f.next_frame(), Err(FramingError::NotSip));
        let mut f = StreamFramer::new();
        f.push(&[b'a'; MAX_START_LINE]);
        assert_eq!(f.next_frame(), Err(FramingError::NotSip));
        let mut f = StreamFramer::new();
        f.push(b"INVITE sip:a@b SIP/2.");
        assert_eq!(f.next_frame(), Ok(Framed::Incomplete));
        // Trailing spaces after the version (RFC 4475 3.1.2.9 reads them
        // liberally) arriving split across reads are still SIP.
        let mut f = StreamFramer::new();
        f.push(b"OPTIONS sip:a@b SIP/2.0  \r\n");
        assert_eq!(f.next_frame(), Ok(Framed::Incomplete));
        f.push(b"Content-Length: 0\r\n\r\n");
        assert!(matches!(f.next_frame(), Ok(Framed::Message(_))));
        // A header section that never ends is refused at the size limit.
        let mut f = StreamFramer::new();
        f.push(b"OPTIONS sip:x SIP/2.0\r\n");
        while f.buffered() <= MAX_MESSAGE {
            assert_eq!(f.next_frame(), Ok(Framed::Incomplete));
            f.push(&[b'x'; 4096]);
        }
        assert_eq!(f.next_frame(), Err(FramingError::HeaderTooLarge));
        // Keep-alives: a ping (double CRLF) and a pong (one CRLF).
        let mut f = StreamFramer::new();
        f.push(b"\r\n\r\n");
        assert_eq!(f.next_frame(), Ok(Framed::KeepAlive { ping: true }));
        f.push(b"\r\n");
        assert_eq!(f.next_frame(), Ok(Framed::KeepAlive { ping: false }));
    }
}

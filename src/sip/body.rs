//! Decoding before judging: what a PBX or carrier encoded is undone before
//! the scanner reads it, and what can't be undone is said, never passed.
//!
//! - Bodies: the `Content-Encoding` chain (gzip, deflate as zlib or raw,
//!   br), `multipart/*` walked part by part (nested), each part's
//!   `Content-Transfer-Encoding` (base64, quoted-printable) and
//!   `Content-Encoding`. Decoded output is capped ([`MAX_DECODED`] in all,
//!   across every layer) and nesting is capped ([`MAX_DEPTH`]): a
//!   compression bomb is a doubt, not a hang or an out-of-memory.
//! - RFC 2047 encoded words (`=?UTF-8?B?...?=`, `?Q?`) in UTF-8, US-ASCII,
//!   ISO-8859-1, ISO-8859-15 and Windows-1252.
//! - RFC 7433 `User-to-User` data, hex (the default) or base64.
//! - Mojibake: UTF-8 that was read as Windows-1252 or Latin-1 on the way
//!   (`Womenâ€™s` for `Women’s`), read back.
//!
//! Pure: bytes in, text and doubts out. Every decoded text carries a label
//! naming its layers ("gzip-decoded SDP body"), which findings quote.

use std::borrow::Cow;
use std::io::Read;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

use crate::escape;
use crate::sip::header::parse_params;

/// Most bytes decoding may produce for one message, over every layer
/// together. A SIP message is at most 128 KiB; a body that inflates past
/// 1 MiB is not a call's presentation but a bomb.
pub const MAX_DECODED: usize = 1024 * 1024;

/// Deepest nesting of encodings and multipart bodies followed.
pub const MAX_DEPTH: usize = 8;

/// Most multipart parts read in one message, over every level: a call's
/// body has a handful; thousands of tiny parts would only cost time.
pub const MAX_PARTS: usize = 100;

/// Lenient base64: padding optional, standard or URL-safe alphabet (tried
/// in that order), whitespace ignored by the caller.
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);
const B64_URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Base64 with whitespace and either alphabet; None when it isn't base64.
pub fn base64(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    B64.decode(&compact)
        .or_else(|_| B64_URL.decode(&compact))
        .ok()
}

/// One text of a body for the scanner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyText {
    /// Where findings are reported: `SDP` for session descriptions (and a
    /// body without a Content-Type, as before), `Body` for anything else.
    pub place: &'static str,
    /// The layers undone and where the text sits ("gzip-decoded SDP body",
    /// "SDP in part 1 of the multipart/mixed body"); None for a plain body
    /// read as it arrived.
    pub layer: Option<String>,
    /// The text, decoded.
    pub text: String,
}

/// A body, decoded as far as it goes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Body {
    /// Every text to scan, in message order.
    pub texts: Vec<BodyText>,
    /// What could not be decoded: each one stops a pass.
    pub doubts: Vec<String>,
    /// Observations that don't change the outcome.
    pub notes: Vec<String>,
}

/// Does this body need more than reading as text? False for the common
/// case (no Content-Encoding, not multipart, UTF-8 without binary), which
/// the caller then reads directly, without allocating.
pub fn body_needs_decoding(
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    body: &[u8],
) -> bool {
    content_encoding.is_some_and(|e| !is_identity(e))
        || content_type.is_some_and(|t| media_type(t).starts_with("multipart/"))
        || match std::str::from_utf8(body) {
            Ok(s) => has_binary(s),
            Err(_) => true,
        }
}

fn is_identity(encoding: &str) -> bool {
    encoding
        .split(',')
        .all(|e| e.trim().is_empty() || e.trim().eq_ignore_ascii_case("identity"))
}

/// The media type of a Content-Type value, lower-cased, without parameters.
fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Control characters that don't occur in text (tabs, line ends and form
/// feeds do).
fn has_binary(s: &str) -> bool {
    if s.is_ascii() {
        // The same test a byte at a time: ASCII's controls are below 0x20
        // and 0x7f.
        // Without stopping early, so that the compiler tests many bytes
        // at once (bodies are short).
        return s.bytes().fold(false, |found, b| {
            found
                | ((b < 0x20) & (b != b'\t') & (b != b'\n') & (b != b'\r') & (b != 0x0c))
                | (b == 0x7f)
        });
    }
    s.chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r' | '\x0c'))
}

/// Where findings in a body of this Content-Type are reported: `SDP` for a
/// session description (or no Content-Type), `Body` for anything else.
pub fn place_for(content_type: Option<&str>) -> &'static str {
    match content_type.map(media_type).as_deref() {
        None | Some("") | Some("application/sdp") => "SDP",
        Some(_) => "Body",
    }
}

/// Bytes as text: UTF-8 where they are, every other byte read as
/// Windows-1252 (borrowed when all UTF-8).
pub fn utf8_or_1252(b: &[u8]) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(b) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(b.len() + 16);
    for chunk in b.utf8_chunks() {
        out.push_str(chunk.valid());
        out.extend(chunk.invalid().iter().map(|b| cp1252_char(*b)));
    }
    Cow::Owned(out)
}

/// Decode a message body: its Content-Type and Content-Encoding headers as
/// received, and its bytes.
pub fn body(content_type: Option<&str>, content_encoding: Option<&str>, bytes: &[u8]) -> Body {
    let mut w = Walker {
        budget: MAX_DECODED,
        parts: 0,
        out: Body::default(),
    };
    w.entity(
        Entity {
            bytes: Cow::Borrowed(bytes),
            content_type,
            transfer_encoding: None,
            content_encoding,
        },
        &Place::Top,
        Vec::new(),
        0,
    );
    w.out
}

/// One MIME entity: the whole body, or a part of a multipart body.
struct Entity<'a> {
    bytes: Cow<'a, [u8]>,
    content_type: Option<&'a str>,
    transfer_encoding: Option<&'a str>,
    content_encoding: Option<&'a str>,
}

/// Where an entity sits, for naming it.
enum Place<'p> {
    Top,
    /// Part `n` (1-based) of the multipart entity described by `parent`.
    Part {
        n: usize,
        parent: &'p str,
    },
}

struct Walker {
    /// Bytes decoding may still produce.
    budget: usize,
    /// Multipart parts read so far, over every level.
    parts: usize,
    out: Body,
}

impl Walker {
    fn doubt(&mut self, s: String) {
        if !self.out.doubts.contains(&s) {
            self.out.doubts.push(s);
        }
    }

    /// What an entity of this type at this place is called: "SDP body",
    /// "application/pidf+xml in part 2 of the multipart/mixed body".
    fn name(content_type: Option<&str>, place: &Place) -> (String, &'static str) {
        let media = content_type.map(media_type);
        let (kind, slot) = match media.as_deref() {
            None | Some("") => match place {
                Place::Top => ("SDP".to_string(), "SDP"),
                // RFC 2046: a part without a Content-Type is text/plain.
                Place::Part { .. } => ("text/plain".to_string(), "Body"),
            },
            Some("application/sdp") => ("SDP".to_string(), "SDP"),
            Some(m) => (escape::clip(m, 60).into_owned(), "Body"),
        };
        let name = match place {
            Place::Top => format!("{kind} body"),
            Place::Part { n, parent } => format!("{kind} in part {n} of the {parent}"),
        };
        (name, slot)
    }

    fn entity(&mut self, e: Entity<'_>, place: &Place, mut layers: Vec<String>, depth: usize) {
        let (name, slot) = Self::name(e.content_type, place);
        if depth > MAX_DEPTH {
            self.doubt(format!(
                "could not fully decode: the {name} is nested more than {MAX_DEPTH} levels deep"
            ));
            return;
        }
        let mut bytes = e.bytes;
        // Transfer encoding first (it wraps everything), then the content
        // codings, last applied first.
        if let Some(te) = e.transfer_encoding {
            let te = te.trim().to_ascii_lowercase();
            match te.as_str() {
                "" | "7bit" | "8bit" | "binary" => {}
                "base64" => {
                    let text = String::from_utf8_lossy(&bytes);
                    match base64(&text) {
                        Some(b) => {
                            bytes = Cow::Owned(b);
                            layers.push("base64-decoded".into());
                        }
                        None => {
                            self.doubt(format!(
                                "could not fully decode: the {name} is marked base64 but isn't (\"{}\")",
                                escape::bytes(&bytes, 40)
                            ));
                            self.leftovers(&bytes, &name, slot, &layers);
                            return;
                        }
                    }
                }
                "quoted-printable" => {
                    bytes = Cow::Owned(quoted_printable(&bytes));
                    layers.push("quoted-printable-decoded".into());
                }
                other => {
                    self.doubt(format!(
                        "could not fully decode: the {name} has Content-Transfer-Encoding \"{}\", which cidguard can't decode",
                        escape::clip(other, 40)
                    ));
                    self.leftovers(&bytes, &name, slot, &layers);
                    return;
                }
            }
        }
        if let Some(ce) = e.content_encoding {
            let codings: Vec<String> = ce
                .split(',')
                .map(|c| c.trim().to_ascii_lowercase())
                .filter(|c| !c.is_empty() && c != "identity")
                .collect();
            for coding in codings.iter().rev() {
                match self.inflate(coding, &bytes, &name) {
                    Ok(b) => {
                        bytes = Cow::Owned(b);
                        layers.push(format!("{}-decoded", coding_name(coding)));
                    }
                    Err(why) => {
                        self.doubt(why);
                        self.leftovers(&bytes, &name, slot, &layers);
                        return;
                    }
                }
            }
        }
        let media = e.content_type.map(media_type).unwrap_or_default();
        if media.starts_with("multipart/") {
            self.multipart(
                &bytes,
                e.content_type.unwrap_or_default(),
                &name,
                &layers,
                depth,
            );
            return;
        }
        self.leaf(&bytes, &name, slot, &layers);
    }

    /// Undo one content coding within the budget.
    fn inflate(&mut self, coding: &str, bytes: &[u8], name: &str) -> Result<Vec<u8>, String> {
        let cap = self.budget;
        let result = match coding {
            "gzip" | "x-gzip" => read_capped(flate2::read::MultiGzDecoder::new(bytes), cap),
            // RFC 9110: "deflate" is the zlib format; some senders use raw
            // deflate, so a body without a zlib header is read as that.
            "deflate" if is_zlib(bytes) => read_capped(flate2::read::ZlibDecoder::new(bytes), cap),
            "deflate" => read_capped(flate2::read::DeflateDecoder::new(bytes), cap),
            "br" => read_capped(brotli_decompressor::Decompressor::new(bytes, 4096), cap),
            other => {
                return Err(format!(
                    "could not fully decode: the {name} has Content-Encoding \"{}\", which cidguard can't decode",
                    escape::clip(other, 40)
                ))
            }
        };
        let what = coding_name(coding);
        match result {
            Ok(out) => {
                self.budget -= out.len();
                Ok(out)
            }
            Err(Inflate::TooLarge) => Err(format!(
                "could not fully decode: {what} {name} larger than {} when decoded (a compression bomb?)",
                size(MAX_DECODED)
            )),
            Err(Inflate::Bad(e)) => Err(format!(
                "could not fully decode: the {what}-encoded {name} can't be decoded ({e})"
            )),
        }
    }

    fn multipart(
        &mut self,
        bytes: &[u8],
        content_type: &str,
        name: &str,
        layers: &[String],
        depth: usize,
    ) {
        let params = content_type
            .find(';')
            .map(|i| parse_params(&content_type[i..]))
            .unwrap_or_default();
        let boundary = params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("boundary"))
            .and_then(|(_, v)| v.clone())
            .filter(|b| !b.is_empty());
        let Some(boundary) = boundary else {
            self.doubt(format!(
                "could not fully decode: the {name} has no boundary parameter, so its parts can't be told apart"
            ));
            self.leftovers(bytes, name, "Body", layers);
            return;
        };
        let Some(split) = split_multipart(bytes, boundary.as_bytes()) else {
            self.doubt(format!(
                "could not fully decode: the {name}'s boundary \"{}\" never appears in it",
                escape::clip(&boundary, 60)
            ));
            self.leftovers(bytes, name, "Body", layers);
            return;
        };
        let prefix = prefix(layers);
        if !split.closed {
            self.out.notes.push(format!(
                "the {name} has no closing boundary; its last part was read to the end"
            ));
        }
        for (what, text) in [("preamble", split.preamble), ("epilogue", split.epilogue)] {
            if !text.iter().all(u8::is_ascii_whitespace) {
                self.leaf(text, &format!("{what} of the {name}"), "Body", layers);
            }
        }
        for (i, part) in split.parts.iter().enumerate() {
            self.parts += 1;
            if self.parts > MAX_PARTS {
                self.doubt(format!(
                    "could not fully decode: the body has more than {MAX_PARTS} multipart parts"
                ));
                let rest: Vec<u8> = split.parts[i..].concat();
                self.leftovers(&rest, name, "Body", layers);
                return;
            }
            let (head, content) = split_part(part);
            let headers = part_headers(head);
            let get = |n: &str| {
                headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(n))
                    .map(|(_, v)| v.as_str())
            };
            let parent = format!("{prefix}{name}");
            let place = Place::Part {
                n: i + 1,
                parent: &parent,
            };
            if !head.is_empty() {
                let text = String::from_utf8_lossy(head).into_owned();
                self.out.texts.push(BodyText {
                    place: "Body",
                    layer: Some(format!("headers of part {} of the {parent}", i + 1)),
                    text,
                });
            }
            self.entity(
                Entity {
                    bytes: Cow::Borrowed(content),
                    content_type: get("content-type"),
                    transfer_encoding: get("content-transfer-encoding"),
                    content_encoding: get("content-encoding"),
                },
                &place,
                Vec::new(),
                depth + 1,
            );
        }
    }

    /// A decoded entity that is not multipart: text to scan, or binary that
    /// can't be read.
    fn leaf(&mut self, bytes: &[u8], name: &str, slot: &'static str, layers: &[String]) {
        let text = utf8_or_1252(bytes);
        let latin = matches!(text, Cow::Owned(_));
        if has_binary(&text) {
            self.doubt(format!(
                "could not fully decode: the {} is binary ({} bytes: \"{}\"), so it was not read",
                prefixed(layers, name),
                bytes.len(),
                escape::bytes(bytes, 24)
            ));
            self.leftovers(bytes, name, slot, layers);
            return;
        }
        let mut label = prefixed(layers, name);
        if latin {
            label.push_str(" (not UTF-8: read as Windows-1252)");
        }
        let plain_top =
            layers.is_empty() && !latin && name.ends_with(" body") && !name.contains(" of the ");
        self.out.texts.push(BodyText {
            place: slot,
            layer: (!plain_top).then_some(label),
            text: text.into_owned(),
        });
    }

    /// Text runs in what couldn't be decoded, so a leak in it is still
    /// found (the outcome can't be a pass anyway).
    fn leftovers(&mut self, bytes: &[u8], name: &str, slot: &'static str, layers: &[String]) {
        let runs = text_runs(bytes, 4);
        if !runs.is_empty() {
            self.out.texts.push(BodyText {
                place: slot,
                layer: Some(format!("undecoded {}", prefixed(layers, name))),
                text: runs,
            });
        }
    }
}

/// "gzip-decoded, " style prefix for a list of layers.
fn prefix(layers: &[String]) -> String {
    if layers.is_empty() {
        String::new()
    } else {
        format!("{} ", layers.join(", "))
    }
}

fn prefixed(layers: &[String], name: &str) -> String {
    format!("{}{name}", prefix(layers))
}

fn coding_name(coding: &str) -> &str {
    match coding {
        "x-gzip" => "gzip",
        "br" => "brotli",
        other => other,
    }
}

fn size(n: usize) -> String {
    if n % (1024 * 1024) == 0 {
        format!("{} MiB", n / (1024 * 1024))
    } else {
        format!("{n} bytes")
    }
}

/// Why a content coding couldn't be undone.
enum Inflate {
    /// More output than the budget allows.
    TooLarge,
    /// Not a valid stream.
    Bad(std::io::Error),
}

/// Read a decoder to its end, refusing more than `cap` bytes of output.
fn read_capped(r: impl Read, cap: usize) -> Result<Vec<u8>, Inflate> {
    let mut out = Vec::new();
    match r.take(cap as u64 + 1).read_to_end(&mut out) {
        Ok(_) if out.len() > cap => Err(Inflate::TooLarge),
        Ok(_) => Ok(out),
        Err(e) => Err(Inflate::Bad(e)),
    }
}

/// A zlib header (RFC 1950): deflate method, a window size, a check sum.
fn is_zlib(b: &[u8]) -> bool {
    b.len() >= 2
        && b[0] & 0x0f == 8
        && b[0] >> 4 <= 7
        && (u16::from(b[0]) << 8 | u16::from(b[1])) % 31 == 0
}

/// Quoted-printable (RFC 2045 section 6.7), leniently: a bad escape stays
/// as it was.
pub fn quoted_printable(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' {
            // Soft line break: "=" then optional spaces then a line end.
            let mut j = i + 1;
            while j < b.len() && matches!(b[j], b' ' | b'\t') {
                j += 1;
            }
            if b.get(j) == Some(&b'\n') {
                i = j + 1;
                continue;
            }
            if b.get(j) == Some(&b'\r') && b.get(j + 1) == Some(&b'\n') {
                i = j + 2;
                continue;
            }
            if let (Some(h), Some(l)) = (
                b.get(i + 1).and_then(|c| (*c as char).to_digit(16)),
                b.get(i + 2).and_then(|c| (*c as char).to_digit(16)),
            ) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// A multipart body split at its boundary.
struct Multipart<'a> {
    preamble: &'a [u8],
    parts: Vec<&'a [u8]>,
    epilogue: &'a [u8],
    /// Whether the closing delimiter (`--boundary--`) was there.
    closed: bool,
}

/// Split a multipart body (RFC 2046 section 5.1.1). None when the boundary
/// never starts a line.
fn split_multipart<'a>(body: &'a [u8], boundary: &[u8]) -> Option<Multipart<'a>> {
    let mut delim = Vec::with_capacity(boundary.len() + 2);
    delim.extend_from_slice(b"--");
    delim.extend_from_slice(boundary);
    // Each delimiter: (start of the line-end before it, end of its own line, closing?).
    let mut found: Vec<(usize, usize, bool)> = Vec::new();
    let mut from = 0;
    while let Some(p) = find(&body[from..], &delim).map(|p| p + from) {
        let at_line_start = p == 0 || body[p - 1] == b'\n';
        from = p + delim.len();
        if !at_line_start {
            continue;
        }
        let before = if p >= 2 && body[p - 2] == b'\r' {
            p - 2
        } else {
            p.saturating_sub(1)
        };
        let closing = body[from..].starts_with(b"--");
        let line_end = body[from..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(body.len(), |i| from + i + 1);
        found.push((before, line_end, closing));
        if closing {
            break;
        }
        from = line_end;
    }
    let first = found.first()?;
    let preamble = &body[..first.0.min(body.len())];
    let mut parts = Vec::new();
    for w in found.windows(2) {
        let (_, start, _) = w[0];
        let (end, _, _) = w[1];
        parts.push(&body[start..end.max(start)]);
    }
    let last = found[found.len() - 1];
    let closed = last.2;
    let epilogue: &[u8] = if closed {
        &body[last.1..]
    } else {
        parts.push(&body[last.1..]);
        &[]
    };
    Some(Multipart {
        preamble,
        parts,
        epilogue,
        closed,
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A part's header block and content. A part that starts with a line end
/// has no headers; one without a blank line is all headers when its first
/// line is a header, else all content.
fn split_part(part: &[u8]) -> (&[u8], &[u8]) {
    if part.starts_with(b"\r\n") {
        return (&[], &part[2..]);
    }
    if part.starts_with(b"\n") {
        return (&[], &part[1..]);
    }
    if let Some(end) = crate::sip::message::header_end(part) {
        return (&part[..end], &part[end..]);
    }
    let first = part.split(|b| *b == b'\n').next().unwrap_or_default();
    let looks_like_header = first.iter().position(|b| *b == b':').is_some_and(|i| {
        i > 0
            && first[..i]
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
    });
    if looks_like_header {
        (part, &[])
    } else {
        (&[], part)
    }
}

/// A part's headers, unfolded: (name, value).
fn part_headers(head: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(head);
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
            continue;
        }
        if let Some((n, v)) = line.split_once(':') {
            out.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

/// Printable runs of at least `min` characters in bytes that are not all
/// text, joined by spaces (what `strings` shows).
pub fn text_runs(bytes: &[u8], min: usize) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        let mut run = String::new();
        for c in chunk.valid().chars() {
            if c.is_control() && c != '\t' {
                flush_run(&mut out, &mut run, min);
            } else {
                run.push(c);
            }
        }
        flush_run(&mut out, &mut run, min);
    }
    out
}

fn flush_run(out: &mut String, run: &mut String, min: usize) {
    if run.trim().chars().count() >= min {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(run.trim());
    }
    run.clear();
}

// --- Character sets -------------------------------------------------------

/// Windows-1252's characters for bytes 0x80..=0x9F (None: unassigned, read
/// as the Latin-1 control of the same number).
const CP1252_HIGH: [Option<char>; 32] = [
    Some('€'),
    None,
    Some('‚'),
    Some('ƒ'),
    Some('„'),
    Some('…'),
    Some('†'),
    Some('‡'),
    Some('ˆ'),
    Some('‰'),
    Some('Š'),
    Some('‹'),
    Some('Œ'),
    None,
    Some('Ž'),
    None,
    None,
    Some('‘'),
    Some('’'),
    Some('“'),
    Some('”'),
    Some('•'),
    Some('–'),
    Some('—'),
    Some('˜'),
    Some('™'),
    Some('š'),
    Some('›'),
    Some('œ'),
    None,
    Some('ž'),
    Some('Ÿ'),
];

fn cp1252_char(b: u8) -> char {
    match b {
        0x80..=0x9f => CP1252_HIGH[usize::from(b - 0x80)].unwrap_or(char::from(b)),
        _ => char::from(b),
    }
}

/// The byte a character came from when bytes were read as Windows-1252 (or
/// Latin-1).
fn cp1252_byte(c: char) -> Option<u8> {
    let n = u32::from(c);
    if n < 0x100 {
        return u8::try_from(n).ok();
    }
    CP1252_HIGH
        .iter()
        .position(|x| *x == Some(c))
        .and_then(|i| u8::try_from(0x80 + i).ok())
}

/// Bytes read as Windows-1252.
pub fn windows_1252(b: &[u8]) -> String {
    b.iter().map(|b| cp1252_char(*b)).collect()
}

/// ISO-8859-15: Latin-1 with eight places changed (the euro sign...).
fn latin9(b: &[u8]) -> String {
    b.iter()
        .map(|b| match b {
            0xa4 => '€',
            0xa6 => 'Š',
            0xa8 => 'š',
            0xb4 => 'Ž',
            0xb8 => 'ž',
            0xbc => 'Œ',
            0xbd => 'œ',
            0xbe => 'Ÿ',
            b => char::from(*b),
        })
        .collect()
}

/// Bytes in a named charset; None when cidguard can't read the charset.
fn charset_text(charset: &str, b: &[u8]) -> Option<Result<String, String>> {
    // RFC 2231 adds a language after '*'.
    let cs = charset
        .split('*')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    Some(match cs.as_str() {
        "utf-8" | "utf8" => match String::from_utf8(b.to_vec()) {
            Ok(s) => Ok(s),
            Err(e) => Err(String::from_utf8_lossy(e.as_bytes()).into_owned()),
        },
        // US-ASCII with high bytes is mislabelled: read them as Windows-1252.
        "us-ascii" | "ascii" | "windows-1252" | "cp1252" | "x-cp1252" => Ok(windows_1252(b)),
        "iso-8859-1" | "iso8859-1" | "iso_8859-1" | "latin1" | "latin-1" | "l1" => {
            Ok(b.iter().map(|b| char::from(*b)).collect())
        }
        "iso-8859-15" | "iso8859-15" | "iso_8859-15" | "latin-9" | "latin9" => Ok(latin9(b)),
        _ => return None,
    })
}

// --- RFC 2047 ---------------------------------------------------------------

/// A header text with its encoded words decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Words {
    /// The text with every decodable word decoded (the others left as sent).
    pub text: String,
    /// Why a word couldn't be decoded, one sentence each.
    pub failures: Vec<String>,
}

/// One encoded word found in a text.
struct Word<'a> {
    start: usize,
    end: usize,
    charset: &'a str,
    bytes: Option<Vec<u8>>,
}

/// Parse `=?charset?B|Q?text?=` at the start of `s`.
fn word_at(s: &str, start: usize) -> Option<Word<'_>> {
    let rest = s.get(start + 2..)?;
    let q1 = rest.find('?')?;
    let charset = &rest[..q1];
    if charset.is_empty() || charset.len() > 40 || !charset.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let after = &rest[q1 + 1..];
    let mut it = after.chars();
    let enc = it.next()?;
    if it.next()? != '?' {
        return None;
    }
    let body = &after[2..];
    let close = body.find("?=")?;
    let text = &body[..close];
    if text.contains(char::is_whitespace) {
        return None;
    }
    let bytes = match enc {
        'B' | 'b' => base64(text),
        'Q' | 'q' => Some(q_decode(text)),
        _ => return None,
    };
    let end = start + 2 + q1 + 1 + 2 + close + 2;
    Some(Word {
        start,
        end,
        charset,
        bytes,
    })
}

fn q_decode(t: &str) -> Vec<u8> {
    let replaced: Vec<u8> = t
        .bytes()
        .map(|b| if b == b'_' { b' ' } else { b })
        .collect();
    quoted_printable(&replaced)
}

/// Decode the RFC 2047 encoded words in a header text. None when it has
/// none (the common case, checked without allocating).
pub fn encoded_words(s: &str) -> Option<Words> {
    // A byte scan: cheaper than a substring search's set-up on the many
    // short texts that have no encoded word.
    if !s.contains('?') || !s.as_bytes().windows(2).any(|w| w == b"=?") {
        return None;
    }
    let mut words: Vec<Word> = Vec::new();
    let mut from = 0;
    while let Some(p) = s[from..].find("=?") {
        let at = from + p;
        match word_at(s, at) {
            Some(w) => {
                from = w.end;
                words.push(w);
            }
            None => from = at + 2,
        }
    }
    if words.is_empty() {
        return None;
    }
    let mut text = String::with_capacity(s.len());
    let mut failures = Vec::new();
    let mut last = 0;
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        text.push_str(&s[last..w.start]);
        // Adjacent words of one charset (only whitespace between them) are
        // one text: the whitespace goes, and a character split across
        // them is joined.
        let mut j = i;
        let mut bytes: Vec<u8> = Vec::new();
        let mut ok = true;
        while j < words.len() {
            let wj = &words[j];
            if j > i {
                let gap = &s[words[j - 1].end..wj.start];
                if !gap.trim().is_empty() || !wj.charset.eq_ignore_ascii_case(w.charset) {
                    break;
                }
            }
            match &wj.bytes {
                Some(b) => bytes.extend_from_slice(b),
                None => ok = false,
            }
            j += 1;
        }
        let raw = &s[w.start..words[j - 1].end];
        if !ok {
            failures.push(format!(
                "the encoded word \"{}\" isn't valid base64",
                escape::clip(raw, 60)
            ));
            text.push_str(raw);
        } else {
            match charset_text(w.charset, &bytes) {
                Some(Ok(t)) => text.push_str(&t),
                Some(Err(lossy)) => {
                    failures.push(format!(
                        "the encoded word \"{}\" isn't valid {}",
                        escape::clip(raw, 60),
                        escape::clip(w.charset, 20)
                    ));
                    text.push_str(&lossy);
                }
                None => {
                    failures.push(format!(
                        "the encoded word \"{}\" is in the charset {}, which cidguard can't read",
                        escape::clip(raw, 60),
                        escape::clip(w.charset, 20)
                    ));
                    text.push_str(raw);
                }
            }
        }
        last = words[j - 1].end;
        // Whitespace between this run and a following word of another
        // charset is still dropped (RFC 2047 section 6.2).
        if j < words.len() && s[last..words[j].start].trim().is_empty() {
            last = words[j].start;
        }
        i = j;
    }
    text.push_str(&s[last..]);
    Some(Words { text, failures })
}

// --- Mojibake -----------------------------------------------------------------

/// Text that was UTF-8 but got read as Windows-1252 or Latin-1 somewhere on
/// the way (`Womenâ€™s`), read back (`Women’s`); up to twice misread. None
/// when there is nothing to repair (always for ASCII).
pub fn unmojibake(s: &str) -> Option<String> {
    if s.is_ascii() {
        return None;
    }
    let once = repair(s)?;
    Some(repair(&once).unwrap_or(once))
}

fn repair(s: &str) -> Option<String> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut changed = false;
    let mut i = 0;
    while i < chars.len() {
        let lead = cp1252_byte(chars[i]);
        let n = match lead {
            Some(0xc2..=0xdf) => 1,
            Some(0xe0..=0xef) => 2,
            Some(0xf0..=0xf4) => 3,
            _ => 0,
        };
        if n > 0 && i + n < chars.len() {
            let mut bytes = Vec::with_capacity(n + 1);
            bytes.extend(lead);
            for c in &chars[i + 1..=i + n] {
                match cp1252_byte(*c) {
                    Some(b @ 0x80..=0xbf) => bytes.push(b),
                    _ => break,
                }
            }
            if bytes.len() == n + 1 {
                if let Ok(t) = std::str::from_utf8(&bytes) {
                    out.push_str(t);
                    changed = true;
                    i += n + 1;
                    continue;
                }
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    changed.then_some(out)
}

// --- User-to-User ---------------------------------------------------------

/// What a User-to-User header (RFC 7433) carries, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uui {
    /// Decoded: the text in it (text runs, if it is partly binary), what
    /// the encoding was, and a note when part of it is binary.
    Decoded {
        text: String,
        encoding: &'static str,
        binary_note: Option<String>,
    },
    /// Marked with an encoding but not decodable as it.
    Unreadable(String),
}

/// Decode a User-to-User value. None when it carries no encoding to undo
/// (no `encoding` parameter and not hex: sent as plain text).
pub fn uui(value: &str) -> Option<Uui> {
    let (data, params) = match value.find(';') {
        Some(i) => (&value[..i], parse_params(&value[i..])),
        None => (value, Vec::new()),
    };
    let data = data.trim().trim_matches('"');
    let encoding = params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("encoding"))
        .map(|(_, v)| v.as_deref().unwrap_or_default().to_ascii_lowercase());
    let (bytes, enc) = match encoding.as_deref() {
        // RFC 7433: hex is the default encoding.
        None => (hex(data)?, "hex"),
        Some("hex") => match hex(data) {
            Some(b) => (b, "hex"),
            None => {
                return Some(Uui::Unreadable(
                    "the User-to-User data is marked encoding=hex but isn't hex".into(),
                ))
            }
        },
        Some("base64") => match base64(data) {
            Some(b) => (b, "base64"),
            None => {
                return Some(Uui::Unreadable(
                    "the User-to-User data is marked encoding=base64 but isn't base64".into(),
                ))
            }
        },
        Some(other) => {
            return Some(Uui::Unreadable(format!(
                "the User-to-User data has encoding={}, which cidguard can't decode",
                escape::clip(other, 20)
            )))
        }
    };
    // A leading protocol discriminator (Q.931: 0x04 for IA5 text, 0x00 for
    // user-specific) is not part of the text.
    let payload = match bytes.first() {
        Some(0x00..=0x08) => &bytes[1..],
        _ => &bytes[..],
    };
    Some(match std::str::from_utf8(payload) {
        Ok(s) if !has_binary(s) => Uui::Decoded {
            text: s.to_string(),
            encoding: enc,
            binary_note: None,
        },
        _ => Uui::Decoded {
            text: text_runs(payload, 3),
            encoding: enc,
            // Not quoted: contact-centre data can carry a customer's
            // account or number, which is not the organisation's to keep.
            binary_note: Some(format!(
                "User-to-User carries {} bytes of binary data; the text in it was searched",
                bytes.len()
            )),
        },
    })
}

/// Hex digits (an even number of them) as bytes.
fn hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if s.is_empty() || s.len() % 2 != 0 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The SDP offer of an INVITE body: the body itself when it is SDP (or has
/// no Content-Type), else the first SDP part of a multipart body, undoing
/// any Content-Encoding (the same decoder the verdict reads bodies with).
pub fn sdp_offer(
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    bytes: &[u8],
) -> Option<String> {
    if bytes.is_empty() {
        return None;
    }
    body(content_type, content_encoding, bytes)
        .texts
        .into_iter()
        .find(|t| t.place == "SDP")
        .map(|t| t.text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdp_offers_inside_multipart_bodies() {
        let offer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
        let mp = format!(
            "--b\r\nContent-Type: application/sdp\r\n\r\n{offer}\r\n--b\r\nContent-Type: application/isup\r\n\r\nxx\r\n--b--\r\n"
        );
        let text = sdp_offer(Some("multipart/mixed;boundary=b"), None, mp.as_bytes()).unwrap();
        assert!(text.contains("m=audio 4000 RTP/AVP 0"));
        assert_eq!(sdp_offer(None, None, b""), None);
        assert!(sdp_offer(Some("application/sdp"), None, offer.as_bytes()).is_some());
    }
    use std::io::Write;

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn plain_sdp_needs_nothing() {
        assert!(!body_needs_decoding(
            Some("application/sdp"),
            None,
            b"v=0\r\ns=-\r\n"
        ));
        assert!(!body_needs_decoding(None, Some("identity"), b"v=0\r\n"));
        assert!(body_needs_decoding(None, Some("gzip"), b"v=0\r\n"));
        assert!(body_needs_decoding(
            Some("multipart/mixed;boundary=x"),
            None,
            b""
        ));
        assert!(body_needs_decoding(None, None, b"\x01\x02"));
    }

    #[test]
    fn gzip_body() {
        let b = body(
            Some("application/sdp"),
            Some("gzip"),
            &gzip(b"s=Eastside Refuge\r\n"),
        );
        assert!(b.doubts.is_empty(), "{b:?}");
        assert_eq!(b.texts[0].text, "s=Eastside Refuge\r\n");
        assert_eq!(b.texts[0].layer.as_deref(), Some("gzip-decoded SDP body"));
        assert_eq!(b.texts[0].place, "SDP");
    }

    #[test]
    fn deflate_zlib_and_raw() {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(b"s=zlib").unwrap();
        let b = body(None, Some("deflate"), &z.finish().unwrap());
        assert_eq!(b.texts[0].text, "s=zlib", "{b:?}");
        let mut d = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        d.write_all(b"s=raw").unwrap();
        let b = body(None, Some("deflate"), &d.finish().unwrap());
        assert_eq!(b.texts[0].text, "s=raw", "{b:?}");
    }

    #[test]
    fn bomb_is_a_doubt() {
        let big = vec![b'a'; MAX_DECODED + 10];
        let b = body(None, Some("gzip"), &gzip(&big));
        assert!(b.doubts[0].contains("compression bomb"), "{b:?}");
        assert!(b.doubts[0].contains("1 MiB"), "{b:?}");
    }

    #[test]
    fn unknown_coding_and_bad_stream_are_doubts() {
        let b = body(None, Some("compress"), b"xyz");
        assert!(b.doubts[0].contains("\"compress\""), "{b:?}");
        let b = body(None, Some("gzip"), b"not gzip at all");
        assert!(b.doubts[0].contains("can't be decoded"), "{b:?}");
        // A leak in what couldn't be decoded is still seen.
        assert!(b.texts[0].text.contains("not gzip at all"));
    }

    #[test]
    fn multipart_nested_with_transfer_encodings() {
        let inner = "--in\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nEastside Wom=\r\nen=E2=80=99s\r\n--in--\r\n";
        let sdp64 = base64::engine::general_purpose::STANDARD.encode("s=Secret\r\n");
        let body_text = format!(
            "preamble\r\n--out\r\nContent-Type: application/sdp\r\nContent-Transfer-Encoding: base64\r\n\r\n{sdp64}\r\n--out\r\nContent-Type: multipart/alternative; boundary=\"in\"\r\n\r\n{inner}\r\n--out--\r\n"
        );
        let b = body(
            Some("multipart/mixed;boundary=out"),
            None,
            body_text.as_bytes(),
        );
        assert!(b.doubts.is_empty(), "{b:#?}");
        let texts: Vec<(&str, Option<&str>, &str)> = b
            .texts
            .iter()
            .map(|t| (t.place, t.layer.as_deref(), t.text.as_str()))
            .collect();
        assert!(
            texts.contains(&(
                "SDP",
                Some("base64-decoded SDP in part 1 of the multipart/mixed body"),
                "s=Secret\r\n"
            )),
            "{texts:#?}"
        );
        assert!(texts.iter().any(|(_, l, t)| *t == "Eastside Women’s"
            && l.is_some_and(|l| l.contains("quoted-printable-decoded text/plain in part 1 of the multipart/alternative in part 2"))), "{texts:#?}");
    }

    #[test]
    fn too_many_parts_is_a_doubt() {
        let mut text = String::new();
        for i in 0..(MAX_PARTS + 5) {
            text.push_str(&format!("--b\r\n\r\npart {i}\r\n"));
        }
        text.push_str("--b--\r\n");
        let b = body(Some("multipart/mixed;boundary=b"), None, text.as_bytes());
        assert!(b.doubts[0].contains("more than 100"), "{:?}", b.doubts);
        assert!(b.texts.iter().any(|t| t.text.contains("part 104")));
    }

    #[test]
    fn multipart_without_boundary_is_a_doubt() {
        let b = body(Some("multipart/mixed"), None, b"--x\r\n\r\nhello\r\n--x--");
        assert!(b.doubts[0].contains("no boundary"), "{b:?}");
        let b = body(
            Some("multipart/mixed; boundary=zz"),
            None,
            b"--x\r\n\r\nhello\r\n--x--",
        );
        assert!(b.doubts[0].contains("never appears"), "{b:?}");
    }

    #[test]
    fn binary_part_is_a_doubt_with_escaped_bytes() {
        let b = body(
            Some("application/isup"),
            None,
            b"\x01\x00\x60\x01\x0a\x00\x02\x09\x07Refuge!",
        );
        assert!(b.doubts[0].contains("\\u{1}\\u{0}"), "{b:?}");
        assert!(b.texts.iter().any(|t| t.text.contains("Refuge!")), "{b:?}");
    }

    #[test]
    fn latin1_body_is_text() {
        let b = body(Some("application/sdp"), None, b"s=Caf\xe9\r\n");
        assert!(b.doubts.is_empty());
        assert_eq!(b.texts[0].text, "s=Café\r\n");
        assert!(b.texts[0]
            .layer
            .as_deref()
            .unwrap()
            .contains("Windows-1252"));
    }

    #[test]
    fn rfc2047_words() {
        let w = encoded_words("=?UTF-8?B?RWFzdHNpZGUgV29tZW7igJlz?= =?utf-8?q?_Refuge?= <sip:x>")
            .unwrap();
        assert_eq!(w.text, "Eastside Women’s Refuge <sip:x>");
        assert!(w.failures.is_empty());
        let w = encoded_words("=?ISO-8859-1?Q?Caf=E9?=").unwrap();
        assert_eq!(w.text, "Café");
        // A UTF-8 character split across two words is joined.
        let w = encoded_words("=?UTF-8?Q?Women=E2=80?= =?UTF-8?Q?=99s?=").unwrap();
        assert_eq!(w.text, "Women’s");
        let w = encoded_words("=?KOI8-R?B?98/T?= x").unwrap();
        assert!(w.failures[0].contains("KOI8-R"), "{w:?}");
        assert_eq!(w.text, "=?KOI8-R?B?98/T?= x");
        assert!(encoded_words("a=?b c").is_none());
        assert!(encoded_words("plain").is_none());
    }

    #[test]
    fn mojibake_is_read_back() {
        assert_eq!(
            unmojibake("Womenâ€™s Refuge").as_deref(),
            Some("Women’s Refuge")
        );
        assert_eq!(unmojibake("CafÃ©").as_deref(), Some("Café"));
        // Twice misread.
        assert_eq!(unmojibake("CafÃƒÂ©").as_deref(), Some("Café"));
        assert_eq!(unmojibake("Café"), None);
        assert_eq!(unmojibake("plain"), None);
    }

    #[test]
    fn user_to_user() {
        let hexed: String = "Eastside Refuge"
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect();
        match uui(&format!("04{hexed};encoding=hex;purpose=isdn-uui")) {
            Some(Uui::Decoded {
                text,
                encoding,
                binary_note,
            }) => {
                assert_eq!(text, "Eastside Refuge");
                assert_eq!(encoding, "hex");
                assert!(binary_note.is_none());
            }
            other => panic!("{other:?}"),
        }
        match uui("RWFzdHNpZGU=;encoding=base64") {
            Some(Uui::Decoded { text, .. }) => assert_eq!(text, "Eastside"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(uui("zz;encoding=hex"), Some(Uui::Unreadable(_))));
        assert!(matches!(
            uui("abc;encoding=rot13"),
            Some(Uui::Unreadable(_))
        ));
        assert_eq!(uui("plain words"), None);
    }

    #[test]
    fn quoted_printable_soft_breaks() {
        assert_eq!(quoted_printable(b"a=\r\nb=3Dc=zz"), b"ab=c=zz");
    }
}

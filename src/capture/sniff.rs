//! Telling payloads apart by their content, not their port: SIP start
//! lines, TLS (and DTLS) records, RTP/RTCP.

/// Does a SIP start line begin here and end (with LF) within `data`?
/// Returns the length of the line including its line end.
pub fn start_line(data: &[u8]) -> Option<usize> {
    // Request lines are short in practice; a long R-URI is allowed.
    let end = data.iter().take(8192).position(|b| *b == b'\n')?;
    let line = &data[..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    is_start_line(line).then_some(end + 1)
}

/// A request line (`METHOD uri SIP/2.0`) or a status line (`SIP/2.0 200 ...`).
pub fn is_start_line(line: &[u8]) -> bool {
    if let Some(rest) = strip_prefix_ci(line, b"SIP/2.0 ") {
        return rest.len() >= 3
            && rest[..3].iter().all(u8::is_ascii_digit)
            && (rest.len() == 3 || rest[3] == b' ');
    }
    let Some(sp) = line.iter().position(|b| *b == b' ') else {
        return false;
    };
    let method = &line[..sp];
    if !(2..=24).contains(&method.len())
        || !method
            .iter()
            .all(|b| b.is_ascii_uppercase() || *b == b'-' || *b == b'_')
    {
        return false;
    }
    let rest = &line[sp + 1..];
    let Some(sp2) = rest.iter().position(|b| *b == b' ') else {
        return false;
    };
    let uri = &rest[..sp2];
    uri.len() >= 3 && uri.contains(&b':') && rest[sp2 + 1..].eq_ignore_ascii_case(b"SIP/2.0")
}

fn strip_prefix_ci<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

/// Find the next line start (the beginning of `data`, or just after a LF)
/// where a SIP start line begins. Returns its offset.
pub fn find_start(data: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        if start_line(&data[at..]).is_some() {
            return Some(at);
        }
        let nl = data[at..].iter().position(|b| *b == b'\n')?;
        at += nl + 1;
        if at >= data.len() {
            return None;
        }
    }
}

/// Does a SIP message (after keep-alive line ends) start here? For UDP
/// datagrams, which carry one whole message each.
pub fn is_sip(payload: &[u8]) -> bool {
    let ws = payload
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count();
    let rest = &payload[ws..];
    match start_line(rest) {
        Some(_) => true,
        // A datagram cut by the snap length before the line ended.
        None => {
            let line = &rest[..rest.len().min(200)];
            line.starts_with(b"SIP/2.0 ")
                || (line.starts_with(b"INVITE sip")
                    || line.starts_with(b"INVITE tel")
                    || line.starts_with(b"INVITE sips"))
        }
    }
}

/// A TLS record header (handshake, alert, change-cipher-spec, application
/// data; SSL 3.0 to TLS 1.3), or a DTLS one.
pub fn is_tls_record(p: &[u8]) -> bool {
    if p.len() < 5 || !(20..=23).contains(&p[0]) {
        return false;
    }
    let tls = p[1] == 3 && p[2] <= 4;
    let dtls = p[1] == 0xfe && matches!(p[2], 0xfd | 0xff);
    let len = usize::from(u16::from_be_bytes([p[3], p[4]]));
    (tls || dtls) && len > 0 && len <= (1 << 14) + 2048
}

/// Somewhere in a stream that is not SIP: does a TLS record header show?
/// (A stream picked up mid-record starts anywhere inside one.)
pub fn contains_tls_record(p: &[u8]) -> bool {
    p.windows(5)
        .any(|w| w[0] == 23 && w[1] == 3 && (1..=4).contains(&w[2]))
}

/// RTP or RTCP version 2 (media, or SRTP: the header is the same).
pub fn is_rtp(p: &[u8]) -> bool {
    p.len() >= 12 && p[0] >> 6 == 2
}

/// Only line ends (keep-alives).
pub fn is_keepalive(p: &[u8]) -> bool {
    !p.is_empty() && p.iter().all(|b| matches!(b, b'\r' | b'\n' | 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_lines() {
        assert!(is_start_line(b"INVITE sip:bob@example.com SIP/2.0"));
        assert!(is_start_line(b"SIP/2.0 180 Ringing"));
        assert!(is_start_line(b"SIP/2.0 200"));
        assert!(!is_start_line(b"Via: SIP/2.0/UDP x"));
        assert!(!is_start_line(b"invite sip:x SIP/2.0"));
        assert!(!is_start_line(b"GET / HTTP/1.1"));
        assert_eq!(
            find_start(b"a=x\r\nv=0\r\nBYE sip:a@b SIP/2.0\r\n"),
            Some(10)
        );
        assert_eq!(find_start(b"a=x\r\nBYE sip:a@b SIP/2.0"), None);
    }

    #[test]
    fn tls_and_media() {
        assert!(is_tls_record(&[22, 3, 1, 0, 200, 1]));
        assert!(is_tls_record(&[23, 0xfe, 0xfd, 0, 20, 0]));
        assert!(!is_tls_record(b"INVITE sip:x SIP/2.0"));
        assert!(is_rtp(&[0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]));
    }
}

//! Loopback ports and a minimal SIP OPTIONS probe (UDP, TCP, TLS).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// Value of the `transport` URI parameter.
    pub fn param(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }

    /// As written in a Via header.
    pub fn via(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.param())
    }
}

/// A loopback port currently free for both UDP and TCP (SIP peers listen on
/// the same port number for both). Another process may take it before the
/// peer binds it; peers retry with fresh ports when their bind fails.
pub fn free_port() -> Result<u16> {
    for _ in 0..50 {
        let tcp = TcpListener::bind((LOOPBACK, 0))?;
        let port = tcp.local_addr()?.port();
        if UdpSocket::bind((LOOPBACK, port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no loopback port free for both UDP and TCP")
}

/// A UDP port `p` with `p + 2` free as well (SIPp's audio and video media
/// sockets).
pub fn free_media_port() -> Result<u16> {
    for _ in 0..50 {
        let a = UdpSocket::bind((LOOPBACK, 0))?;
        let port = a.local_addr()?.port();
        if port < u16::MAX - 2 && UdpSocket::bind((LOOPBACK, port + 2)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free UDP media port pair")
}

/// True when something listens on the loopback port: a bound UDP socket, or
/// a TCP socket in LISTEN state. Read from the kernel's socket tables, so the
/// check itself never takes the port.
pub fn port_is_bound(transport: Transport, port: u16) -> bool {
    let (table, state) = match transport {
        Transport::Udp => ("/proc/net/udp", "07"),
        Transport::Tcp | Transport::Tls => ("/proc/net/tcp", "0A"),
    };
    let Ok(text) = std::fs::read_to_string(table) else {
        return false;
    };
    // 127.0.0.1 in the kernel's little-endian hex, or any address.
    let wanted = [
        format!("0100007F:{port:04X}"),
        format!("00000000:{port:04X}"),
    ];
    text.lines().skip(1).any(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        cols.len() > 3 && wanted.iter().any(|w| w == cols[1]) && cols[3] == state
    })
}

static PROBE_SEQ: AtomicU32 = AtomicU32::new(1);

fn options_request(transport: Transport, local: SocketAddr, target: SocketAddr) -> String {
    let n = PROBE_SEQ.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    format!(
        "OPTIONS sip:{target} SIP/2.0\r\n\
         Via: SIP/2.0/{via} {local};branch=z9hG4bK-probe-{pid}-{n};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:probe@{local}>;tag=probe{pid}x{n}\r\n\
         To: <sip:{target}>\r\n\
         Call-ID: probe-{pid}-{n}@127.0.0.1\r\n\
         CSeq: 1 OPTIONS\r\n\
         Accept: application/sdp\r\n\
         Content-Length: 0\r\n\r\n",
        via = transport.via(),
    )
}

/// Sends one OPTIONS to `target` and returns the first final response (raw
/// text). UDP retransmits every 100 ms until the deadline, so it can be used
/// to wait for a peer that is still starting.
pub fn options(
    transport: Transport,
    target: SocketAddr,
    tls: Option<&super::tls::TestCa>,
    timeout: Duration,
) -> Result<String> {
    match transport {
        Transport::Udp => options_udp(target, timeout),
        Transport::Tcp => {
            let mut stream = connect(target, timeout)?;
            let request = options_request(transport, stream.local_addr()?, target);
            stream_exchange(&mut stream, &request, timeout)
        }
        Transport::Tls => {
            let ca = tls.context("TLS probe needs the test CA")?;
            options_tls(target, ca, timeout)
        }
    }
}

fn options_udp(target: SocketAddr, timeout: Duration) -> Result<String> {
    let sock = UdpSocket::bind((LOOPBACK, 0))?;
    let request = options_request(Transport::Udp, sock.local_addr()?, target);
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 65536];
    loop {
        let now = Instant::now();
        if now >= deadline {
            bail!("no final reply to OPTIONS from udp:{target} within {timeout:?}");
        }
        sock.send_to(request.as_bytes(), target)?;
        let resend_at = (now + Duration::from_millis(100)).min(deadline);
        while let Some(left) = resend_at.checked_duration_since(Instant::now()) {
            if left.is_zero() {
                break;
            }
            sock.set_read_timeout(Some(left))?;
            match sock.recv_from(&mut buf) {
                Ok((n, from)) if from == target => {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if is_final(&text) {
                        return Ok(text);
                    }
                }
                Ok(_) => {}
                // Timeout, or the port is not bound yet: send again.
                Err(_) => break,
            }
        }
    }
}

fn is_final(response: &str) -> bool {
    response
        .strip_prefix("SIP/2.0 ")
        .and_then(|r| r.get(..1))
        .is_some_and(|d| d != "1")
}

fn connect(target: SocketAddr, timeout: Duration) -> Result<TcpStream> {
    let deadline = Instant::now() + timeout;
    loop {
        match TcpStream::connect_timeout(&target, timeout) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= deadline => {
                return Err(e).with_context(|| format!("connecting to tcp:{target}"))
            }
            // Not listening yet.
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Writes a request on a stream and reads until a complete final response.
fn stream_exchange<S: Read + Write>(
    stream: &mut S,
    request: &str,
    timeout: Duration,
) -> Result<String> {
    stream.write_all(request.as_bytes())?;
    stream.flush()?;
    let deadline = Instant::now() + timeout;
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        while let Some((msg, rest)) = split_stream_message(&data) {
            if is_final(&msg) {
                return Ok(msg);
            }
            data = rest;
        }
        if Instant::now() >= deadline {
            bail!("no final reply to OPTIONS within {timeout:?}");
        }
        let n = stream.read(&mut buf).context("reading reply")?;
        if n == 0 {
            bail!(
                "connection closed before a reply: {:?}",
                String::from_utf8_lossy(&data)
            );
        }
        data.extend_from_slice(&buf[..n]);
    }
}

/// Splits one message (headers + Content-Length body) off a stream buffer.
fn split_stream_message(data: &[u8]) -> Option<(String, Vec<u8>)> {
    let end = data.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&data[..end]);
    let len = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            let name = name.trim();
            (name.eq_ignore_ascii_case("content-length") || name == "l")
                .then(|| value.trim().parse::<usize>().ok())
                .flatten()
        })
        .unwrap_or(0);
    if data.len() < end + len {
        return None;
    }
    Some((
        String::from_utf8_lossy(&data[..end + len]).into_owned(),
        data[end + len..].to_vec(),
    ))
}

fn options_tls(target: SocketAddr, ca: &super::tls::TestCa, timeout: Duration) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.ca_der())?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::from(target.ip());

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        tokio::time::timeout(timeout, async {
            let tcp = tokio::net::TcpStream::connect(target).await?;
            let local = tcp.local_addr()?;
            let mut tls = connector
                .connect(name, tcp)
                .await
                .context("TLS handshake")?;
            let request = options_request(Transport::Tls, local, target);
            tls.write_all(request.as_bytes()).await?;
            tls.flush().await?;
            let mut data = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                while let Some((msg, rest)) = split_stream_message(&data) {
                    if is_final(&msg) {
                        return Ok(msg);
                    }
                    data = rest;
                }
                let n = tls.read(&mut buf).await?;
                if n == 0 {
                    bail!("TLS connection closed before a reply");
                }
                data.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .with_context(|| format!("no reply to OPTIONS over tls:{target} within {timeout:?}"))?
    })
}

/// Sends OPTIONS over a stream until the deadline, reconnecting as needed:
/// used to wait for a TCP/TLS listener that is still starting.
pub fn wait_for_options(
    transport: Transport,
    target: SocketAddr,
    tls: Option<&super::tls::TestCa>,
    timeout: Duration,
) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match options(transport, target, tls, left.min(Duration::from_secs(2))) {
            Ok(r) => return Ok(r),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

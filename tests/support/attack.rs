//! Hostile traffic for the endpoint, from many loopback source addresses:
//! SIP scanner patterns (SIPVicious svmap/svwar), floods and slow
//! connections; a well-behaved peer timing its OPTIONS meanwhile; and the
//! target process's CPU time and memory, read from /proc.
//!
//! On Linux the whole of 127.0.0.0/8 is loopback, so every attacker gets an
//! address of its own in 127.1.0.0/16 (never 127.0.0.0/24, which the
//! well-behaved peers and the PBX use). Nothing here sends anywhere else.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

/// The `i`th attacker address: 127.1.0.1, 127.1.0.2, ... 127.1.0.250,
/// 127.1.1.1, ...
pub fn attacker(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 1, (i / 250) as u8, (1 + i % 250) as u8))
}

/// The well-behaved peer's address (inside 127.0.0.0/24, like the PBX).
pub const GOOD_PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 200));

static SEQ: AtomicU64 = AtomicU64::new(1);

/// A fresh token for branches, tags and Call-IDs.
pub fn token() -> String {
    format!(
        "{:x}{:x}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// One SIP request as a scanner or a flood writes it.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: &'static str,
    /// User part of the Request-URI and To.
    pub user: String,
    /// A To tag: the request claims to be inside a dialog.
    pub to_tag: bool,
    /// Via transport token (UDP, TCP).
    pub via: &'static str,
    /// The User-Agent SIPVicious sends unless told otherwise.
    pub scanner: bool,
    /// Send a response with this status (to the method's CSeq) instead of
    /// the request.
    pub status: Option<u16>,
}

impl Req {
    pub fn new(method: &'static str, user: &str) -> Req {
        Req {
            method,
            user: user.to_string(),
            to_tag: false,
            via: "UDP",
            scanner: false,
            status: None,
        }
    }

    /// A response to a request never sent: matches nothing.
    pub fn response(mut self, status: u16) -> Req {
        self.status = Some(status);
        self
    }

    pub fn in_dialog(mut self) -> Req {
        self.to_tag = true;
        self
    }

    pub fn scanner(mut self) -> Req {
        self.scanner = true;
        self
    }

    pub fn over(mut self, via: &'static str) -> Req {
        self.via = via;
        self
    }

    /// The request's bytes, with a fresh branch (returned too).
    pub fn build(&self, local: SocketAddr, target: SocketAddr) -> (String, Vec<u8>) {
        let t = token();
        let branch = format!("z9hG4bK-h{t}");
        let to_tag = if self.to_tag {
            format!(";tag=t{t}")
        } else {
            String::new()
        };
        let ua = if self.scanner {
            "friendly-scanner"
        } else {
            "hostile-test"
        };
        let (body, ctype) = if self.method == "INVITE" {
            let sdp = format!(
                "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
                ip = local.ip()
            );
            (sdp, "Content-Type: application/sdp\r\n")
        } else {
            (String::new(), "")
        };
        let start = match self.status {
            Some(code) => format!("SIP/2.0 {code} OK"),
            None => format!("{} sip:{}@{target} SIP/2.0", self.method, self.user),
        };
        let text = format!(
            "{start}\r\n\
             Via: SIP/2.0/{via} {local};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: \"{u}\" <sip:{u}@{ip}>;tag=f{t}\r\n\
             To: \"{u}\" <sip:{u}@{target}>{to_tag}\r\n\
             Call-ID: {t}@{ip}\r\n\
             CSeq: 1 {m}\r\n\
             Contact: <sip:{u}@{local}>\r\n\
             User-Agent: {ua}\r\n\
             Accept: application/sdp\r\n\
             {ctype}Content-Length: {len}\r\n\r\n{body}",
            m = self.method,
            u = self.user,
            via = self.via,
            ip = local.ip(),
            len = body.len(),
        );
        (branch, text.into_bytes())
    }
}

/// The top Via branch of a response, and its status code.
pub fn branch_and_status(resp: &[u8]) -> Option<(String, u16)> {
    let text = std::str::from_utf8(resp).ok()?;
    let code = text.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()?;
    let at = text.find("branch=")? + "branch=".len();
    let rest = &text[at..];
    let end = rest.find([';', '\r', '\n', ',']).unwrap_or(rest.len());
    Some((rest[..end].to_string(), code))
}

/// What an attack sent and what came back.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub requests: u64,
    pub responses: u64,
    /// Responses per request branch.
    pub per_branch: HashMap<String, u32>,
    /// Status codes seen, with counts.
    pub codes: HashMap<u16, u64>,
}

impl Tally {
    /// The most responses any one request drew.
    pub fn most_for_one_request(&self) -> u32 {
        self.per_branch.values().copied().max().unwrap_or(0)
    }

    pub fn merge(&mut self, other: &Tally) {
        self.requests += other.requests;
        self.responses += other.responses;
        for (b, n) in &other.per_branch {
            *self.per_branch.entry(b.clone()).or_default() += n;
        }
        for (c, n) in &other.codes {
            *self.codes.entry(*c).or_default() += n;
        }
    }

    fn count_response(&mut self, bytes: &[u8]) {
        self.responses += 1;
        if let Some((b, c)) = branch_and_status(bytes) {
            *self.per_branch.entry(b).or_default() += 1;
            *self.codes.entry(c).or_default() += 1;
        }
    }
}

/// Sends `total` requests over UDP, spread evenly over `sources` attacker
/// addresses and paced over `over`; then keeps listening for `linger` to
/// catch late responses (retransmissions). `make(i)` builds the ith request.
pub async fn udp_flood(
    target: SocketAddr,
    sources: usize,
    total: usize,
    over: Duration,
    linger: Duration,
    make: impl Fn(usize) -> Req,
) -> Result<Tally> {
    udp_flood_from(0, target, sources, total, over, linger, make).await
}

/// [`udp_flood`] from attacker addresses `first..first + sources` (so
/// attacks in a row don't share their sources' budgets).
pub async fn udp_flood_from(
    first: usize,
    target: SocketAddr,
    sources: usize,
    total: usize,
    over: Duration,
    linger: Duration,
    make: impl Fn(usize) -> Req,
) -> Result<Tally> {
    let mut socks = Vec::new();
    for i in first..first + sources {
        let s = UdpSocket::bind(SocketAddr::new(attacker(i), 0))
            .await
            .with_context(|| format!("binding {}", attacker(i)))?;
        socks.push(Arc::new(s));
    }
    let done = Arc::new(AtomicBool::new(false));
    let tallies: Vec<Arc<Mutex<Tally>>> = socks.iter().map(|_| Default::default()).collect();
    let mut readers = Vec::new();
    for (s, t) in socks.iter().zip(&tallies) {
        let (s, t, done) = (s.clone(), t.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                let r =
                    tokio::time::timeout(Duration::from_millis(50), s.recv_from(&mut buf)).await;
                match r {
                    Ok(Ok((n, _))) => lock(&t).count_response(&buf[..n]),
                    Ok(Err(_)) => {}
                    Err(_) if done.load(Ordering::Relaxed) => return,
                    Err(_) => {}
                }
            }
        }));
    }
    // Pace in 10 ms slices.
    let slices = (over.as_millis() / 10).max(1) as usize;
    let start = tokio::time::Instant::now();
    let mut sent = 0usize;
    for slice in 0..slices {
        let upto = total * (slice + 1) / slices;
        while sent < upto {
            let k = sent % socks.len();
            let s = &socks[k];
            let (_, bytes) = make(sent).build(s.local_addr()?, target);
            // A full socket buffer (ENOBUFS) is the flood's own problem.
            if s.send_to(&bytes, target).await.is_ok() {
                lock(&tallies[k]).requests += 1;
            }
            sent += 1;
        }
        tokio::time::sleep_until(start + Duration::from_millis(10 * (slice as u64 + 1))).await;
    }
    tokio::time::sleep(linger).await;
    done.store(true, Ordering::Relaxed);
    for r in readers {
        let _ = r.await;
    }
    let mut all = Tally::default();
    for t in &tallies {
        all.merge(&lock(t));
    }
    Ok(all)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A TCP connection from a chosen loopback source address.
pub async fn tcp_from(src: IpAddr, target: SocketAddr) -> Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(src, 0))?;
    Ok(sock.connect(target).await?)
}

/// True when the peer closed (or reset) the connection within `within`:
/// reads and discards whatever else arrives meanwhile.
pub async fn closed_by_peer(c: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, c.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Read whole SIP messages off a stream until `within` passes; returns
/// them (raw).
pub async fn read_messages(c: &mut TcpStream, within: Duration) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        while let Some(n) = whole_message(&data) {
            out.push(data.drain(..n).collect());
        }
        match tokio::time::timeout_at(deadline, c.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => data.extend_from_slice(&buf[..n]),
            _ => return out,
        }
    }
}

/// Length of the first whole message in `data` (headers and body), if any.
fn whole_message(data: &[u8]) -> Option<usize> {
    let skip = data
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count();
    if skip > 0 {
        return Some(skip);
    }
    let end = data.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&data[..end]);
    let len = head
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())
                .flatten()
        })
        .unwrap_or(0);
    (data.len() >= end + len).then_some(end + len)
}

/// One probe of the well-behaved peer: how long its OPTIONS took to be
/// answered, or why it wasn't.
pub type Probe = Result<Duration, String>;

/// A well-behaved peer asking OPTIONS every `every` on its own thread (its
/// own runtime, so the attack's tasks can't delay its clock), over UDP and
/// TCP (a new connection per probe, timed from the connect). Each probe is
/// sent once and waits up to `give_up`.
pub struct GoodPeer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<(&'static str, Probe)>>>,
}

impl GoodPeer {
    pub fn start(udp: SocketAddr, tcp: Option<SocketAddr>, every: Duration) -> GoodPeer {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return vec![("setup", Err(e.to_string()))],
            };
            rt.block_on(async move {
                let mut out = Vec::new();
                let give_up = Duration::from_secs(2);
                while !s.load(Ordering::Relaxed) {
                    let next = tokio::time::Instant::now() + every;
                    out.push(("udp", probe_udp(udp, give_up).await));
                    if let Some(tcp) = tcp {
                        out.push(("tcp", probe_tcp(tcp, give_up).await));
                    }
                    tokio::time::sleep_until(next).await;
                }
                out
            })
        });
        GoodPeer {
            stop,
            thread: Some(thread),
        }
    }

    /// Stop probing and return every probe, labelled with its transport.
    pub fn finish(mut self) -> Vec<(&'static str, Probe)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for GoodPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Summary of probes: count, worst latency and failures, for messages.
pub fn describe_probes(probes: &[(&'static str, Probe)]) -> String {
    let worst = probes
        .iter()
        .filter_map(|(_, p)| p.as_ref().ok())
        .max()
        .copied()
        .unwrap_or_default();
    let failed: Vec<String> = probes
        .iter()
        .filter_map(|(t, p)| p.as_ref().err().map(|e| format!("{t}: {e}")))
        .take(5)
        .collect();
    format!(
        "{} probes, worst {:?}, failures: {:?}",
        probes.len(),
        worst,
        failed
    )
}

/// Every probe answered 200 within `bound`.
pub fn all_within(probes: &[(&'static str, Probe)], bound: Duration) -> bool {
    !probes.is_empty()
        && probes
            .iter()
            .all(|(_, p)| p.as_ref().is_ok_and(|d| *d <= bound))
}

async fn probe_udp(target: SocketAddr, give_up: Duration) -> Probe {
    let s = UdpSocket::bind(SocketAddr::new(GOOD_PEER, 0))
        .await
        .map_err(|e| e.to_string())?;
    let local = s.local_addr().map_err(|e| e.to_string())?;
    let (branch, bytes) = Req::new("OPTIONS", "probe").build(local, target);
    let t0 = tokio::time::Instant::now();
    s.send_to(&bytes, target).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, _) = tokio::time::timeout_at(t0 + give_up, s.recv_from(&mut buf))
            .await
            .map_err(|_| format!("no answer within {give_up:?}"))?
            .map_err(|e| e.to_string())?;
        match branch_and_status(&buf[..n]) {
            Some((b, code)) if b == branch && code >= 200 => {
                return if code == 200 {
                    Ok(t0.elapsed())
                } else {
                    Err(format!("answered {code}"))
                };
            }
            _ => {}
        }
    }
}

async fn probe_tcp(target: SocketAddr, give_up: Duration) -> Probe {
    let t0 = tokio::time::Instant::now();
    let work = async {
        let mut c = tcp_from(GOOD_PEER, target)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let local = c.local_addr().map_err(|e| e.to_string())?;
        let (branch, bytes) = Req::new("OPTIONS", "probe")
            .over("TCP")
            .build(local, target);
        c.write_all(&bytes).await.map_err(|e| e.to_string())?;
        let mut data = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            while let Some(n) = whole_message(&data) {
                let msg: Vec<u8> = data.drain(..n).collect();
                if let Some((b, code)) = branch_and_status(&msg) {
                    if b == branch && code >= 200 {
                        return if code == 200 {
                            Ok(t0.elapsed())
                        } else {
                            Err(format!("answered {code}"))
                        };
                    }
                }
            }
            let n = c.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed without an answer".into());
            }
            data.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(give_up, work)
        .await
        .map_err(|_| format!("no answer within {give_up:?}"))?
}

/// User and system CPU time a process has used so far.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; the rest follows its ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unreadable /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the whole line: utime and stime, in clock ticks.
    let ticks: u64 = fields
        .get(11..13)
        .context("short /proc stat")?
        .iter()
        .map(|f| f.parse::<u64>().unwrap_or(0))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Ok(Duration::from_micros(ticks * 1_000_000 / hz))
}

/// CPU time a process uses over `window` of wall time, from now.
pub fn cpu_over(pid: u32, window: Duration) -> Result<Duration> {
    let a = cpu_time(pid)?;
    std::thread::sleep(window);
    let b = cpu_time(pid)?;
    Ok(b.saturating_sub(a))
}

/// A memory figure of a process from /proc/PID/status, in KiB: `VmRSS`
/// (now) or `VmHWM` (the peak so far).
pub fn memory_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    let kib = line
        .split_whitespace()
        .nth(1)
        .context("no value")?
        .parse()?;
    Ok(kib)
}

/// GET /healthz over plain HTTP; how long it took.
pub fn healthz(addr: SocketAddr, within: Duration) -> Result<Duration> {
    use std::io::{Read, Write};
    let t0 = Instant::now();
    let mut s = std::net::TcpStream::connect_timeout(&addr, within)?;
    s.set_read_timeout(Some(within))?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    if !resp.starts_with("HTTP/1.1 200") {
        bail!("healthz answered {:?}", resp.lines().next());
    }
    Ok(t0.elapsed())
}

/// The dashboard's /metrics text.
pub fn metrics(addr: SocketAddr, within: Duration) -> Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, within)?;
    s.set_read_timeout(Some(within))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    if !resp.starts_with("HTTP/1.1 200") {
        bail!("/metrics answered {:?}", resp.lines().next());
    }
    Ok(resp)
}

/// A sample's value in Prometheus text (`name{labels} value`), if there.
pub fn metric(text: &str, sample: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        l.strip_prefix(sample)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// What a slow-connection attack saw.
#[derive(Debug, Default, Clone)]
pub struct Slow {
    /// Connections that got as far as sending a byte.
    pub opened: u64,
    /// Connections closed by the endpoint while the attack went on.
    pub closed_by_endpoint: u64,
    /// The longest any connection lived, from its connect until the
    /// endpoint closed it (or the attack ended).
    pub longest: Duration,
}

/// `per_source` connections from each of `sources` addresses, each sending
/// one byte of a never-finished request every `every`, for `for_how_long`;
/// a connection the endpoint closes is opened again a second later (as
/// slow-connection tools do).
pub async fn slow_connections(
    target: SocketAddr,
    sources: usize,
    per_source: usize,
    every: Duration,
    for_how_long: Duration,
) -> Slow {
    let end = tokio::time::Instant::now() + for_how_long;
    let out = Arc::new(Mutex::new(Slow::default()));
    let mut tasks = Vec::new();
    for i in 0..sources * per_source {
        let src = attacker(i % sources);
        let out = out.clone();
        tasks.push(tokio::spawn(async move {
            let request = b"INVITE sip:4000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP x";
            while tokio::time::Instant::now() < end {
                let Ok(mut c) = tcp_from(src, target).await else {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                };
                let born = tokio::time::Instant::now();
                let mut sent_any = false;
                let mut buf = [0u8; 256];
                let mut k = 0;
                let closed = loop {
                    if c.write_all(&request[k % request.len()..][..1])
                        .await
                        .is_err()
                    {
                        break true;
                    }
                    k += 1;
                    if !sent_any {
                        sent_any = true;
                        lock(&out).opened += 1;
                    }
                    let next = (tokio::time::Instant::now() + every).min(end);
                    match tokio::time::timeout_at(next, c.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => break true,
                        Ok(Ok(_)) => {}
                        Err(_) if tokio::time::Instant::now() >= end => break false,
                        Err(_) => {}
                    }
                };
                {
                    let mut o = lock(&out);
                    o.longest = o.longest.max(born.elapsed());
                    if closed && sent_any {
                        o.closed_by_endpoint += 1;
                    }
                }
                if closed {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let o = lock(&out).clone();
    o
}

//! Judging every call in a capture: `cidguard inspect --pcap`.
//!
//! Every initial INVITE (an INVITE request without a To tag) in the chosen
//! direction is judged once (retransmissions, and the same packet captured
//! twice, share Call-ID, CSeq and top Via branch) against a line's policy
//! or the organisation alone. Each judged call comes back as a
//! [`CallRecord`] whose every text from the wire has been through the
//! [`Redactor`]; the [`Report`] counts everything and gives the exit
//! status. Pure apart from the `Read` it is given.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::net::SocketAddr;

use serde::Serialize;

use super::file::{End, Format, Interface};
use super::hosts::Selector;
use super::redact::{Called, Redactor};
use super::{Capture, CaptureError, Counters, Limits, SipMessage, Transport};
use crate::sip;
use crate::verdict::{self, Finding, Outcome, Policy, Verdict};

/// How long (capture time) an INVITE's key is remembered to recognise its
/// retransmissions: twice Timer B (64 * T1 = 32 s).
const RETRANSMISSION_WINDOW_NS: i64 = 64_000_000_000;
/// Most keys remembered at once (bounded memory on huge captures).
const MAX_REMEMBERED: usize = 262_144;

/// One judged call, safe to show: no called party, no foreign number.
#[derive(Debug, Clone)]
pub struct CallRecord {
    /// Capture time, ns since the epoch.
    pub time_ns: i64,
    /// UDP or TCP.
    pub transport: Transport,
    /// Who sent the INVITE.
    pub src: SocketAddr,
    /// Who it was sent to.
    pub dst: SocketAddr,
    /// The Call-ID (long digit runs replaced).
    pub call_id: String,
    /// A token for the called party, to group calls to the same person.
    pub called: Option<String>,
    /// Pass, fail or inconclusive.
    pub outcome: Outcome,
    /// Short summary of the findings, or why it is inconclusive.
    pub summary: String,
    /// Why the outcome is inconclusive.
    pub reason: Option<String>,
    /// What leaked where (values and details redacted).
    pub findings: Vec<Finding>,
    /// Observations that don't change the outcome (redacted).
    pub notes: Vec<String>,
    /// Part of the INVITE was not captured (snap length).
    pub cut: bool,
}

/// INVITEs, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct InviteCounts {
    /// Initial INVITEs found, both directions, each counted once.
    pub seen: u64,
    /// Of those, judged (in the chosen direction).
    pub judged: u64,
    /// Judged and passed.
    pub pass: u64,
    /// Judged and failed.
    pub fail: u64,
    /// Judged but not fully.
    pub inconclusive: u64,
    /// Copies of an INVITE already counted (retransmissions, or the same
    /// packet captured twice).
    pub retransmissions: u64,
    /// Initial INVITEs in other directions, not judged.
    pub other_direction: u64,
    /// INVITEs inside a dialog (re-INVITEs, with a To tag), not judged.
    pub in_dialog: u64,
}

/// Everything known after reading a capture.
#[derive(Debug, Clone)]
pub struct Report {
    /// pcap or pcapng.
    pub format: Format,
    /// Every capture interface described in the file.
    pub interfaces: Vec<Interface>,
    /// What the reader saw and held.
    pub counters: Counters,
    /// Why reading stopped.
    pub end: End,
    /// INVITEs seen and judged.
    pub invites: InviteCounts,
    /// Most INVITE keys remembered at once.
    pub peak_remembered: usize,
}

/// The overall result of a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overall {
    /// Every INVITE judged passed, and nothing in the direction judged was
    /// unreadable.
    Pass,
    /// At least one INVITE leaked.
    Fail,
    /// Nothing failed, but not everything could be judged (or nothing was).
    Inconclusive,
}

impl Report {
    /// Pass only when something was judged, all of it passed, and nothing
    /// that might have been SIP in that direction was unreadable.
    pub fn overall(&self) -> Overall {
        let i = &self.invites;
        if i.fail > 0 {
            Overall::Fail
        } else if i.inconclusive > 0
            || i.judged == 0
            || self.counters.not_readable() > 0
            || self.end != End::Clean
        {
            Overall::Inconclusive
        } else {
            Overall::Pass
        }
    }

    /// 0 pass, 1 any fail, 3 otherwise (as for one message).
    pub fn exit_code(&self) -> u8 {
        match self.overall() {
            Overall::Pass => 0,
            Overall::Fail => 1,
            Overall::Inconclusive => 3,
        }
    }

    /// Things the reader must know, in words.
    pub fn warnings(&self) -> Vec<String> {
        let c = &self.counters;
        let mut w = Vec::new();
        match &self.end {
            End::Clean => {}
            End::Truncated { at } => w.push(format!(
                "the file ends in the middle of a packet record (at byte {at}): it was cut short (copied incompletely, or still being written); everything before that was read"
            )),
            End::Damaged { at, what } => w.push(format!(
                "the file is damaged at byte {at} ({what}): reading stopped there"
            )),
        }
        if c.packets == 0 {
            w.push("the capture holds no packets".into());
        } else if c.sip_messages == 0 {
            w.push(format!(
                "no SIP found in {} packet{} (SIP over UDP and TCP is found on any port; TLS can't be read)",
                c.packets,
                plural(c.packets)
            ));
        } else if self.invites.judged == 0 {
            if self.invites.other_direction > 0 {
                w.push(format!(
                    "no initial INVITE in the chosen direction; {} in other directions (check --from-host/--to-host)",
                    self.invites.other_direction
                ));
            } else {
                w.push(format!(
                    "no initial INVITE among {} SIP message{}: nothing was proven",
                    c.sip_messages,
                    plural(c.sip_messages)
                ));
            }
        }
        if c.cut_by_snaplen > 0 {
            let snap = self
                .interfaces
                .iter()
                .map(|i| i.snaplen)
                .filter(|s| *s > 0)
                .min()
                .map_or(String::new(), |s| format!(" ({s} bytes)"));
            w.push(format!(
                "{} SIP message{} cut by the capture's snap length{snap}: capture again with a full snap length (tcpdump -s 0)",
                c.cut_by_snaplen,
                plural(c.cut_by_snaplen)
            ));
        }
        if c.tls > 0 {
            w.push(format!(
                "{} TLS stream{} or datagram{} in the chosen direction: encrypted, not readable (capture where SIP is not yet encrypted, or use the PBX's own SIP trace)",
                c.tls,
                plural(c.tls),
                plural(c.tls)
            ));
        }
        if c.esp > 0 {
            w.push(format!(
                "{} IPsec ESP packet{}: encrypted, not readable",
                c.esp,
                plural(c.esp)
            ));
        }
        let tcp = c.tcp_lost + c.tcp_unframed + c.tcp_incomplete;
        if tcp > 0 {
            w.push(format!(
                "SIP over TCP not fully readable: {} gap{} in a stream (packets missing from the capture), {} stretch{} that could not be framed, {} message{} half-read when the stream or the capture ended",
                c.tcp_lost,
                plural(c.tcp_lost),
                c.tcp_unframed,
                if c.tcp_unframed == 1 { "" } else { "es" },
                c.tcp_incomplete,
                plural(c.tcp_incomplete)
            ));
        }
        if c.fragments_incomplete > 0 {
            w.push(format!(
                "{} IP datagram{} whose fragments never all arrived",
                c.fragments_incomplete,
                plural(c.fragments_incomplete)
            ));
        }
        if c.oversized_records > 0 {
            w.push(format!(
                "{} packet record{} larger than 256 KiB skipped",
                c.oversized_records,
                plural(c.oversized_records)
            ));
        }
        if c.unsupported_link > 0 {
            let kinds: Vec<String> = self
                .interfaces
                .iter()
                .filter(|i| !super::link::supported(i.link_type))
                .map(|i| super::link::name(i.link_type))
                .collect();
            w.push(format!(
                "{} frame{} of a link type this reader does not decode ({}) skipped",
                c.unsupported_link,
                plural(c.unsupported_link),
                kinds.join(", ")
            ));
        }
        if c.tcp_evicted > 0 {
            w.push(format!(
                "{} TCP stream{} dropped to stay within memory limits",
                c.tcp_evicted,
                plural(c.tcp_evicted)
            ));
        }
        w
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Read a capture and judge every initial INVITE in the chosen direction.
/// `on_call` gets each judged call, in capture order, as it is judged.
pub fn inspect_capture<R: Read>(
    input: R,
    policy: &Policy,
    redactor: &Redactor,
    selector: Selector,
    limits: Limits,
    on_call: &mut impl FnMut(&CallRecord),
) -> Result<Report, CaptureError> {
    Inspection::open(input, policy, redactor, selector, limits)?.run(on_call)
}

/// A capture whose header has been read, ready to be judged.
pub struct Inspection<'a, R: Read> {
    /// The capture being read.
    cap: Capture<R>,
    /// Picks the INVITEs to judge (on the reading thread).
    triage: Triage,
    /// Judges them (on any thread).
    judge: Judge<'a>,
}

impl<'a, R: Read> Inspection<'a, R> {
    /// Read the file header: fails at once for a file that is not a capture.
    pub fn open(
        input: R,
        policy: &'a Policy,
        redactor: &'a Redactor,
        selector: Selector,
        limits: Limits,
    ) -> Result<Inspection<'a, R>, CaptureError> {
        Ok(Inspection {
            cap: Capture::open(input, selector, limits)?,
            triage: Triage {
                seen: Seen::default(),
                counts: InviteCounts::default(),
            },
            judge: Judge { policy, redactor },
        })
    }

    /// pcap or pcapng.
    pub fn format(&self) -> Format {
        self.cap.format()
    }

    /// Read it all, judging as it goes, on one thread per CPU.
    pub fn run(self, on_call: &mut impl FnMut(&CallRecord)) -> Result<Report, CaptureError> {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        self.run_with(cpus, on_call)
    }

    /// Read it all with `workers` judging threads (1: all on this thread).
    /// The calls reach `on_call` in capture order either way.
    pub fn run_with(
        mut self,
        workers: usize,
        on_call: &mut impl FnMut(&CallRecord),
    ) -> Result<Report, CaptureError> {
        let triage = &mut self.triage;
        let judge = &self.judge;
        let mut out = Delivery {
            counts: InviteCounts::default(),
            on_call,
        };
        let ran = if workers <= 1 {
            self.cap.run(&mut |m: &SipMessage<'_>| {
                if let Some(job) = triage.message(m) {
                    out.deliver(judge.job(&job));
                }
            })
        } else {
            run_parallel(&mut self.cap, triage, judge, &mut out, workers)
        };
        ran?;
        let mut invites = self.triage.counts;
        let d = out.counts;
        invites.seen -= d.in_dialog;
        invites.in_dialog += d.in_dialog;
        invites.judged = d.judged;
        invites.pass = d.pass;
        invites.fail = d.fail;
        invites.inconclusive = d.inconclusive;
        Ok(Report {
            format: self.cap.format(),
            interfaces: self.cap.interfaces().to_vec(),
            counters: self.cap.counters(),
            end: self.cap.end().clone(),
            invites,
            peak_remembered: self.triage.seen.peak,
        })
    }
}

/// Judging threads: the reader hands out owned INVITEs in batches (a
/// bounded queue, so the reader waits rather than buffers; a batch, so
/// threads meet once per [`BATCH`] calls rather than once per call),
/// workers judge them, and the results are put back in capture order
/// before anyone sees them.
fn run_parallel<R: Read, F: FnMut(&CallRecord)>(
    cap: &mut Capture<R>,
    triage: &mut Triage,
    judge: &Judge<'_>,
    out: &mut Delivery<'_, F>,
    workers: usize,
) -> Result<(), CaptureError> {
    use std::collections::BTreeMap;
    use std::sync::mpsc;
    use std::sync::{Arc, Mutex};

    /// Calls handed to a worker at once.
    const BATCH: usize = 64;
    // Each batch starts at its first call's number.
    let (job_tx, job_rx) = mpsc::sync_channel::<(u64, Vec<Job>)>(workers * 2);
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (res_tx, res_rx) = mpsc::channel::<(u64, Vec<Judged>)>();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let rx = Arc::clone(&job_rx);
            let tx = res_tx.clone();
            scope.spawn(move || loop {
                // A poisoned lock means another worker panicked: stop too.
                let next = match rx.lock() {
                    Ok(guard) => guard.recv(),
                    Err(_) => return,
                };
                let Ok((first, jobs)) = next else { return };
                let judged = jobs.iter().map(|job| judge.job(job)).collect();
                if tx.send((first, judged)).is_err() {
                    return;
                }
            });
        }
        drop(res_tx);
        let mut sent = 0u64;
        let mut next = 0u64;
        let mut batch: Vec<Job> = Vec::with_capacity(BATCH);
        let mut waiting: BTreeMap<u64, Vec<Judged>> = BTreeMap::new();
        let flush = |waiting: &mut BTreeMap<u64, Vec<Judged>>,
                     next: &mut u64,
                     out: &mut Delivery<'_, F>| {
            while let Some(judged) = waiting.remove(next) {
                *next += judged.len() as u64;
                for j in judged {
                    out.deliver(j);
                }
            }
        };
        let ran = cap.run(&mut |m: &SipMessage<'_>| {
            let Some(job) = triage.message(m) else { return };
            batch.push(job);
            if batch.len() < BATCH {
                return;
            }
            let jobs = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            let first = sent;
            sent += jobs.len() as u64;
            // Workers only stop early if one panicked; the scope reports it.
            let _ = job_tx.send((first, jobs));
            while let Ok((first, j)) = res_rx.try_recv() {
                waiting.insert(first, j);
            }
            flush(&mut waiting, &mut next, out);
        });
        if !batch.is_empty() {
            let first = sent;
            sent += batch.len() as u64;
            let _ = job_tx.send((first, batch));
        }
        drop(job_tx);
        while next < sent {
            match res_rx.recv() {
                Ok((first, j)) => {
                    waiting.insert(first, j);
                    flush(&mut waiting, &mut next, out);
                }
                Err(_) => break,
            }
        }
        ran
    })
}

/// Counting and handing on judged calls, in order.
struct Delivery<'o, F: FnMut(&CallRecord)> {
    /// Judged and in-dialog counts, as results arrive.
    counts: InviteCounts,
    /// Where each judged call goes.
    on_call: &'o mut F,
}

impl<F: FnMut(&CallRecord)> Delivery<'_, F> {
    fn deliver(&mut self, j: Judged) {
        match j {
            // The parser found a To tag the glance missed.
            Judged::InDialog => self.counts.in_dialog += 1,
            Judged::Call(record) => {
                self.counts.judged += 1;
                match record.outcome {
                    Outcome::Pass => self.counts.pass += 1,
                    Outcome::Fail => self.counts.fail += 1,
                    Outcome::Inconclusive => self.counts.inconclusive += 1,
                }
                (self.on_call)(&record);
            }
        }
    }
}

/// An initial INVITE to judge, owned so it can go to another thread.
struct Job {
    /// Capture time, ns since the epoch.
    time_ns: i64,
    /// UDP or TCP.
    transport: Transport,
    /// Who sent it.
    src: SocketAddr,
    /// Who it was sent to.
    dst: SocketAddr,
    /// The message as captured.
    bytes: Vec<u8>,
    /// The snap length cut it.
    cut: bool,
}

/// What judging a job gave.
enum Judged {
    /// Not an initial INVITE after all (a To tag only the parser found).
    InDialog,
    Call(Box<CallRecord>),
}

/// The reader's side: which messages are initial INVITEs to judge.
struct Triage {
    /// Keys of INVITEs already counted.
    seen: Seen,
    /// Seen, copies, other directions, in-dialog (as the glance reads them).
    counts: InviteCounts,
}

impl Triage {
    /// Count a message; an initial INVITE in the chosen direction, seen for
    /// the first time, comes back to be judged.
    fn message(&mut self, m: &SipMessage<'_>) -> Option<Job> {
        let q = quick_scan(m.bytes)?;
        if q.to_tag {
            if m.selected {
                self.counts.in_dialog += 1;
            }
            return None;
        }
        if !self.seen.insert(q.key(), m.time_ns) {
            self.counts.retransmissions += 1;
            return None;
        }
        self.counts.seen += 1;
        if !m.selected {
            self.counts.other_direction += 1;
            return None;
        }
        Some(Job {
            time_ns: m.time_ns,
            transport: m.transport,
            src: m.src,
            dst: m.dst,
            bytes: m.bytes.to_vec(),
            cut: m.cut,
        })
    }
}

/// The judging side: pure, shared by the workers.
struct Judge<'a> {
    /// The line's or the organisation's policy.
    policy: &'a Policy,
    /// Keeps the called party out of the records.
    redactor: &'a Redactor,
}

impl Judge<'_> {
    fn job(&self, job: &Job) -> Judged {
        // A cut message ends mid-line: judge only its whole lines (the cut
        // line is unknowable, and would make the headers unreadable).
        let bytes = if job.cut {
            job.bytes
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(&job.bytes[..], |i| &job.bytes[..=i])
        } else {
            &job.bytes[..]
        };
        // Read in place (a copy only when the header section is not
        // UTF-8), as the verdict reads it.
        let owned;
        let parsed = match sip::message::parse_borrowed(bytes) {
            Some(Ok(msg)) => Some(msg),
            Some(Err(_)) => None,
            None => {
                owned = sip::parse(bytes).ok();
                owned.as_ref().map(sip::Message::borrowed)
            }
        };
        // The parser's reading of To is the one that counts.
        if let Some(msg) = &parsed {
            if msg.header("To").is_some_and(|t| has_tag(t.as_bytes())) {
                return Judged::InDialog;
            }
        }
        // The same verdict as `inspect` gives the message on its own.
        let mut v = verdict::judge(self.policy, bytes);
        if job.cut {
            snap_cut(&mut v, job.bytes.len());
        }
        // Who was called, as the glance reads it (also when the parser
        // could not read the message).
        let q = quick_scan(&job.bytes);
        let call_id = match (&parsed, &q) {
            (Some(msg), _) => msg.header("Call-ID").unwrap_or_default().to_string(),
            (None, Some(q)) => String::from_utf8_lossy(q.call_id).into_owned(),
            (None, None) => String::new(),
        };
        let to = q
            .as_ref()
            .and_then(|q| q.to)
            .map(|t| String::from_utf8_lossy(t).into_owned());
        let called = self
            .redactor
            .called(q.as_ref().map(|q| q.request_uri), to.as_deref());
        Judged::Call(Box::new(self.record(job, &v, &call_id, &called)))
    }

    fn record(&self, m: &Job, v: &Verdict, call_id: &str, called: &Called) -> CallRecord {
        let r = self.redactor;
        let findings = v
            .findings
            .iter()
            .map(|f| {
                let mut f = f.clone();
                // The To header is the called party, whole.
                f.value = if f.header == "To" {
                    r.token(&f.value)
                } else {
                    r.text(&f.value, called)
                };
                f.detail = r.text(&f.detail, called);
                f.matched = r.text(&f.matched, called);
                f
            })
            .collect();
        CallRecord {
            time_ns: m.time_ns,
            transport: m.transport,
            src: m.src,
            dst: m.dst,
            call_id: r.text(call_id, called),
            called: called.token.clone(),
            outcome: v.outcome,
            summary: r.text(&v.summary(), called),
            reason: v.reason.as_deref().map(|x| r.text(x, called)),
            findings,
            notes: v.notes.iter().map(|n| r.text(n, called)).collect(),
            cut: m.cut,
        }
    }
}

/// A message the snap length cut can't pass: what is missing was never
/// seen. A leak in what is there is still a fail.
fn snap_cut(v: &mut Verdict, have: usize) {
    let why = format!(
        "the capture's snap length cut this message after {have} bytes: the rest was never seen"
    );
    match v.outcome {
        Outcome::Fail => v.notes.push(why),
        Outcome::Pass => {
            v.outcome = Outcome::Inconclusive;
            v.reason = Some(why);
        }
        Outcome::Inconclusive => {
            v.reason = Some(match v.reason.take() {
                Some(r) => format!("{why}; {r}"),
                None => why,
            });
        }
    }
}

/// INVITE keys remembered to recognise copies, for a while and up to a
/// number.
#[derive(Default)]
struct Seen {
    /// Key -> capture time it was last seen.
    set: HashMap<u128, i64>,
    /// Keys in the order they came, for forgetting the oldest.
    order: VecDeque<(i64, u128)>,
    /// Most keys remembered at once.
    peak: usize,
}

impl Seen {
    /// False if this key was seen within the window.
    fn insert(&mut self, key: u128, t: i64) -> bool {
        while let Some(&(t0, k)) = self.order.front() {
            let old = t.saturating_sub(t0) > RETRANSMISSION_WINDOW_NS;
            if !old && self.order.len() < MAX_REMEMBERED {
                break;
            }
            self.order.pop_front();
            if self.set.get(&k) == Some(&t0) {
                self.set.remove(&k);
            }
        }
        if let Some(t0) = self.set.get(&key) {
            if t.saturating_sub(*t0).abs() <= RETRANSMISSION_WINDOW_NS {
                return false;
            }
        }
        self.set.insert(key, t);
        self.order.push_back((t, key));
        self.peak = self.peak.max(self.order.len());
        true
    }
}

/// What a glance at an INVITE's headers gives, without parsing it.
struct Quick<'a> {
    /// The Request-URI (empty if not UTF-8).
    request_uri: &'a str,
    /// The Call-ID value.
    call_id: &'a [u8],
    /// The CSeq value.
    cseq: &'a [u8],
    /// The top Via's branch parameter.
    branch: &'a [u8],
    /// The To value.
    to: Option<&'a [u8]>,
    /// To carries a tag: inside a dialog.
    to_tag: bool,
}

impl Quick<'_> {
    /// Call-ID, CSeq and top Via branch, hashed to 128 bits.
    fn key(&self) -> u128 {
        let mut a = DefaultHasher::new();
        let mut b = DefaultHasher::new();
        0xa5u8.hash(&mut b);
        for h in [&mut a, &mut b] {
            self.call_id.hash(h);
            self.cseq.hash(h);
            self.branch.hash(h);
        }
        (u128::from(a.finish()) << 64) | u128::from(b.finish())
    }
}

/// An INVITE request's key headers, or None for anything else.
fn quick_scan(bytes: &[u8]) -> Option<Quick<'_>> {
    let lead = bytes
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n' | b' ' | b'\t'))
        .count();
    let b = &bytes[lead..];
    if !b.starts_with(b"INVITE ") {
        return None;
    }
    let mut lines = b
        .split(|c| *c == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let first = lines.next()?;
    let uri = first
        .get(7..)?
        .split(|c| *c == b' ')
        .next()
        .unwrap_or_default();
    let mut q = Quick {
        request_uri: std::str::from_utf8(uri).unwrap_or(""),
        call_id: b"",
        cseq: b"",
        branch: b"",
        to: None,
        to_tag: false,
    };
    let mut via_seen = false;
    let mut last_was_to = false;
    for line in lines {
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if last_was_to && has_tag(line) {
                q.to_tag = true;
            }
            continue;
        }
        last_was_to = false;
        let Some(colon) = line.iter().position(|c| *c == b':') else {
            continue;
        };
        let name = trim(&line[..colon]);
        let value = trim(&line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"call-id") || name.eq_ignore_ascii_case(b"i") {
            q.call_id = value;
        } else if name.eq_ignore_ascii_case(b"cseq") {
            q.cseq = value;
        } else if (name.eq_ignore_ascii_case(b"via") || name.eq_ignore_ascii_case(b"v"))
            && !via_seen
        {
            via_seen = true;
            q.branch = param(value, b"branch").unwrap_or_default();
        } else if (name.eq_ignore_ascii_case(b"to") || name.eq_ignore_ascii_case(b"t"))
            && q.to.is_none()
        {
            q.to = Some(value);
            q.to_tag = has_tag(value);
            last_was_to = true;
            continue;
        }
        // All four found (they come early): the rest needn't be read, once
        // a folded To continuation had its chance.
        if q.to.is_some() && via_seen && !q.call_id.is_empty() && !q.cseq.is_empty() {
            break;
        }
    }
    Some(q)
}

fn trim(b: &[u8]) -> &[u8] {
    let s = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let e = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(s, |i| i + 1);
    &b[s..e]
}

/// A header parameter's value (first Via entry, or the To's parameters).
fn param<'a>(value: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    // Only the first entry of a comma-separated Via.
    let first = value.split(|c| *c == b',').next().unwrap_or(value);
    for p in first.split(|c| *c == b';').skip(1) {
        let p = trim(p);
        let (k, v) = match p.iter().position(|c| *c == b'=') {
            Some(i) => (trim(&p[..i]), trim(&p[i + 1..])),
            None => (p, &p[p.len()..]),
        };
        if k.eq_ignore_ascii_case(name) {
            return Some(v);
        }
    }
    None
}

/// Does a To value carry a tag parameter (outside the URI's brackets)?
fn has_tag(value: &[u8]) -> bool {
    let params = match value.iter().rposition(|c| *c == b'>') {
        Some(i) => &value[i..],
        None => value,
    };
    params.split(|c| *c == b';').skip(1).any(|p| {
        let p = trim(p);
        p.len() >= 3 && p[..3].eq_ignore_ascii_case(b"tag") && trim(&p[3..]).first() == Some(&b'=')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_scan_reads_the_key_headers() {
        let m = b"\r\nINVITE sip:0491570156@carrier SIP/2.0\r\nv: SIP/2.0/UDP a;branch=z9hG4bKx;rport\r\nVia: SIP/2.0/UDP b;branch=other\r\nt: \"A;tag=no\" <sip:x@y>\r\ni: abc@x\r\nCSeq: 2 INVITE\r\n\r\nv=0\r\n";
        let q = quick_scan(m).unwrap();
        assert_eq!(q.request_uri, "sip:0491570156@carrier");
        assert_eq!(q.branch, b"z9hG4bKx");
        assert_eq!(q.call_id, b"abc@x");
        assert_eq!(q.cseq, b"2 INVITE");
        assert!(!q.to_tag);
        assert!(has_tag(b"<sip:x@y>;tag=1"));
        assert!(has_tag(b"sip:x@y ; TAG = 1"));
        assert!(quick_scan(b"SIP/2.0 200 OK\r\n\r\n").is_none());
    }

    #[test]
    fn copies_are_recognised_within_the_window() {
        let mut s = Seen::default();
        assert!(s.insert(1, 0));
        assert!(!s.insert(1, 1_000_000_000));
        assert!(s.insert(2, 1_000_000_000));
        // Long after: a new INVITE that happens to reuse the key.
        assert!(s.insert(1, 200_000_000_000));
        assert!(s.order.len() <= 2);
    }
}

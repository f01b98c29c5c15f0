//! Who may talk to the endpoint, and how much each may take.
//!
//! An endpoint on a public address is found by SIP scanners within hours.
//! Everything here is checked before a byte is parsed:
//!
//! - the allow-list (`endpoint.allow`): from anywhere else nothing is
//!   answered at all, datagrams are dropped and connections closed at
//!   accept;
//! - each source's share: messages per second of every kind (requests in
//!   or out of dialog, CANCEL, ACK, responses, keep-alive pings), open
//!   connections, bytes buffered on them and transactions, so one address,
//!   or a few, can't take what the others need;
//! - a fair inbound queue: messages wait in one queue per source and are
//!   taken in turn, so a flood from some sources delays a quiet one by one
//!   message per busy source, not by the whole flood.
//!
//! A source is an IPv4 address, or an IPv6 /64 (what one customer usually
//! holds). What is dropped is counted, and logged at most every
//! [`NOTICE_EVERY`], never once per packet.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::warn;

/// Shortest time between two log lines about the same kind of dropped
/// traffic.
pub const NOTICE_EVERY: Duration = Duration::from_secs(10);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here leaves the table consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An address block: `203.0.113.0/24`, `2001:db8::/32`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address, with the host bits cleared.
    net: IpAddr,
    /// Leading bits that must match.
    prefix: u8,
}

impl Cidr {
    /// Read `ADDR` or `ADDR/PREFIX`. Host bits set below the prefix are an
    /// error (`10.0.0.1/8` is probably a typo for something).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?}: {addr:?} is not an IPv4 or IPv6 address"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && !p.starts_with('+') => n,
                _ => {
                    return Err(format!(
                        "{s:?}: the prefix length must be a number from 0 to {max}"
                    ))
                }
            },
        };
        let net = mask(ip, prefix);
        if net != ip {
            return Err(format!(
                "{s:?}: host bits are set below /{prefix}; the block is {net}/{prefix}"
            ));
        }
        Ok(Cidr { net, prefix })
    }

    /// True when `ip` is inside the block (an IPv4-mapped IPv6 address
    /// counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.net.is_ipv4() && mask(ip, self.prefix) == self.net
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let max = if self.net.is_ipv4() { 32 } else { 128 };
        if self.prefix == max {
            write!(f, "{}", self.net)
        } else {
            write!(f, "{}/{}", self.net, self.prefix)
        }
    }
}

/// `ip` with every bit after the first `prefix` cleared.
fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6((bits & m).into())
        }
    }
}

/// The addresses the endpoint answers. Empty: everyone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList(Vec<Cidr>);

impl AllowList {
    /// Everyone.
    pub fn open() -> AllowList {
        AllowList(Vec::new())
    }

    /// Read a configured list; the error names the entry's index.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<AllowList, (usize, String)> {
        items
            .iter()
            .enumerate()
            .map(|(i, s)| Cidr::parse(s.as_ref()).map_err(|e| (i, e)))
            .collect::<Result<Vec<_>, _>>()
            .map(AllowList)
    }

    /// True when no list is set (everyone is answered).
    pub fn is_open(&self) -> bool {
        self.0.is_empty()
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        self.0.is_empty() || self.0.iter().any(|c| c.contains(ip))
    }

    pub fn blocks(&self) -> &[Cidr] {
        &self.0
    }
}

/// The key a source is counted under: an IPv4 address, or the /64 of an
/// IPv6 one.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        v6 => mask(v6, 64),
    }
}

/// What one source may take. The defaults suit a PBX (or a provider's
/// edge) sending test calls from one address: a sweep of dozens of
/// parallel calls fits the burst, a scanner soon runs out.
#[derive(Debug, Clone)]
pub struct SourceLimits {
    /// Messages per second of every kind, sustained...
    pub rate: f64,
    /// ...and how many may come at once above that rate.
    pub burst: f64,
    /// Open TCP/TLS connections.
    pub max_connections: usize,
    /// Bytes held in receive buffers over all its connections (a message
    /// in progress may be up to 128 KiB).
    pub max_buffered: usize,
    /// Server transactions in progress.
    pub max_transactions: usize,
    /// Messages waiting in the inbound queue.
    pub max_queued: usize,
    /// Sources tracked at once; beyond it, sources holding nothing are
    /// forgotten (and start again with a full budget).
    pub max_sources: usize,
}

impl Default for SourceLimits {
    fn default() -> Self {
        SourceLimits {
            rate: 100.0,
            burst: 300.0,
            max_connections: 8,
            max_buffered: 512 * 1024,
            max_transactions: 256,
            max_queued: 128,
            max_sources: 16_384,
        }
    }
}

/// Counters of what the guard let through and what it turned away.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuardStats {
    /// Datagrams, stream messages and connections from outside the
    /// allow-list, ignored.
    pub not_allowed: u64,
    /// Messages dropped because their source was over its rate.
    pub over_budget: u64,
    /// Connections refused at a source's connection limit.
    pub connections_refused: u64,
    /// Connections closed because their source held too many bytes in
    /// receive buffers.
    pub buffer_limit: u64,
    /// Requests dropped at a source's transaction limit.
    pub transactions_refused: u64,
    /// Sources tracked now.
    pub sources: usize,
    /// Sources forgotten to make room for new ones.
    pub sources_forgotten: u64,
}

#[derive(Default)]
struct Counters {
    not_allowed: AtomicU64,
    over_budget: AtomicU64,
    connections_refused: AtomicU64,
    buffer_limit: AtomicU64,
    transactions_refused: AtomicU64,
    sources_forgotten: AtomicU64,
}

/// One log line per [`NOTICE_EVERY`] at most for a kind of event, saying
/// how many happened since the last line.
pub struct Notice {
    /// When the last line was written.
    last: Mutex<Option<Instant>>,
    /// Events since that line.
    since: AtomicU64,
}

impl Notice {
    pub const fn new() -> Notice {
        Notice {
            last: Mutex::new(None),
            since: AtomicU64::new(0),
        }
    }

    /// Count an event; `log(n)` is called (to write the line) when one is
    /// due, with the number of events it covers.
    pub fn hit(&self, log: impl FnOnce(u64)) {
        self.since.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut last = lock(&self.last);
        if last.is_some_and(|l| now.saturating_duration_since(l) < NOTICE_EVERY) {
            return;
        }
        *last = Some(now);
        drop(last);
        log(self.since.swap(0, Ordering::Relaxed));
    }
}

impl Default for Notice {
    fn default() -> Self {
        Notice::new()
    }
}

/// One source's share in use.
struct Source {
    /// Message tokens left (negative: in debt for messages over the rate).
    tokens: f64,
    /// When the tokens were last brought up to date.
    last: Instant,
    /// Open connections.
    conns: usize,
    /// Bytes in receive buffers over all its connections.
    buffered: usize,
    /// Server transactions in progress.
    transactions: usize,
}

impl Source {
    fn holds_nothing(&self) -> bool {
        self.conns == 0 && self.buffered == 0 && self.transactions == 0
    }
}

/// The allow-list and the per-source table.
pub struct Guard {
    /// Addresses answered at all.
    allow: AllowList,
    /// Addresses we chose to talk to (the provider's registrar the endpoint
    /// registers at), answered even when the allow-list leaves them out.
    also: Mutex<Vec<IpAddr>>,
    /// None: no per-source limits (the line's own stack, which only hears
    /// its PBX).
    limits: Option<SourceLimits>,
    /// Each source's share in use, by [`source_key`].
    table: Mutex<HashMap<IpAddr, Source>>,
    /// What was turned away, for [`GuardStats`].
    counters: Counters,
    /// The rate-limited log lines.
    notices: Notices,
}

/// The rate-limited log lines, one per kind of dropped traffic.
#[derive(Default)]
struct Notices {
    /// Traffic from outside the allow-list.
    not_allowed: Notice,
    /// Messages over a source's rate.
    over_budget: Notice,
    /// Connections refused at a source's limit.
    connections: Notice,
    /// Connections closed for a source's buffered bytes.
    buffers: Notice,
    /// Requests dropped at a source's transaction limit.
    transactions: Notice,
}

/// Which share a [`Held`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Share {
    Connection,
    Buffered,
    Transaction,
}

impl Guard {
    pub fn new(allow: AllowList, limits: Option<SourceLimits>) -> Guard {
        Guard {
            allow,
            also: Mutex::new(Vec::new()),
            limits,
            table: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            notices: Notices::default(),
        }
    }

    pub fn allow_list(&self) -> &AllowList {
        &self.allow
    }

    pub fn limits(&self) -> Option<&SourceLimits> {
        self.limits.as_ref()
    }

    pub fn stats(&self) -> GuardStats {
        let c = &self.counters;
        GuardStats {
            not_allowed: c.not_allowed.load(Ordering::Relaxed),
            over_budget: c.over_budget.load(Ordering::Relaxed),
            connections_refused: c.connections_refused.load(Ordering::Relaxed),
            buffer_limit: c.buffer_limit.load(Ordering::Relaxed),
            transactions_refused: c.transactions_refused.load(Ordering::Relaxed),
            sources: lock(&self.table).len(),
            sources_forgotten: c.sources_forgotten.load(Ordering::Relaxed),
        }
    }

    /// Answer `ip` too, whatever the allow-list says: a peer we chose to
    /// talk to (the registrar the endpoint registers at must be heard).
    pub fn also_allow(&self, ip: IpAddr) {
        let ip = ip.to_canonical();
        let mut also = lock(&self.also);
        if !also.contains(&ip) {
            also.push(ip);
        }
    }

    /// True when `ip` is on the allow-list. Otherwise counted and, at most
    /// every [`NOTICE_EVERY`], logged.
    pub fn allowed(&self, ip: IpAddr) -> bool {
        if self.allow.allows(ip) || lock(&self.also).contains(&ip.to_canonical()) {
            return true;
        }
        self.counters.not_allowed.fetch_add(1, Ordering::Relaxed);
        self.notices.not_allowed.hit(|n| {
            warn!(
                ignored = n,
                latest = %ip,
                "ignoring traffic from addresses outside endpoint.allow (no answer sent)"
            )
        });
        false
    }

    /// One message (datagram, stream message or keep-alive ping) from
    /// `ip`: on the allow-list and within its source's rate.
    pub fn admit(&self, ip: IpAddr) -> bool {
        if !self.allowed(ip) {
            return false;
        }
        let Some(limits) = &self.limits else {
            return true;
        };
        let now = Instant::now();
        let mut table = lock(&self.table);
        let s = self.entry(&mut table, ip, now);
        let refill = now.saturating_duration_since(s.last).as_secs_f64() * limits.rate;
        s.tokens = (s.tokens + refill).min(limits.burst);
        s.last = now;
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            return true;
        }
        // Each message over the rate deepens the debt a little, so a
        // source that keeps flooding stays shut out; bounded, so it can
        // recover once it stops.
        if s.tokens > -limits.burst {
            s.tokens -= 0.1;
        }
        drop(table);
        self.counters.over_budget.fetch_add(1, Ordering::Relaxed);
        self.notices.over_budget.hit(|n| {
            warn!(
                dropped = n,
                latest = %source_key(ip),
                "dropping messages from sources over their rate"
            )
        });
        false
    }

    /// Open connections of `ip`'s source.
    pub fn connections_of(&self, ip: IpAddr) -> usize {
        lock(&self.table)
            .get(&source_key(ip))
            .map_or(0, |s| s.conns)
    }

    /// A connection slot for `ip`'s source (allow-list checked by the
    /// caller), released when the [`Held`] is dropped; None at the
    /// source's limit.
    pub fn connection(self: &Arc<Self>, ip: IpAddr) -> Option<Held> {
        let max = self
            .limits
            .as_ref()
            .map_or(usize::MAX, |l| l.max_connections);
        if self.take(ip, Share::Connection, 1, max) {
            return Some(self.held(ip, Share::Connection, 1));
        }
        self.counters
            .connections_refused
            .fetch_add(1, Ordering::Relaxed);
        self.notices.connections.hit(|n| {
            warn!(
                refused = n,
                latest = %source_key(ip),
                "refusing connections from sources at their connection limit"
            )
        });
        None
    }

    /// A transaction slot for `ip`'s source; None at its limit.
    pub fn transaction(self: &Arc<Self>, ip: IpAddr) -> Option<Held> {
        let max = self
            .limits
            .as_ref()
            .map_or(usize::MAX, |l| l.max_transactions);
        if self.take(ip, Share::Transaction, 1, max) {
            return Some(self.held(ip, Share::Transaction, 1));
        }
        self.counters
            .transactions_refused
            .fetch_add(1, Ordering::Relaxed);
        self.notices.transactions.hit(|n| {
            warn!(
                dropped = n,
                latest = %source_key(ip),
                "dropping requests from sources at their transaction limit"
            )
        });
        None
    }

    /// An empty account of bytes buffered for `ip`'s source, to grow and
    /// shrink with [`Held::resize`].
    pub fn buffer(self: &Arc<Self>, ip: IpAddr) -> Held {
        self.held(ip, Share::Buffered, 0)
    }

    fn held(self: &Arc<Self>, ip: IpAddr, share: Share, amount: usize) -> Held {
        Held {
            guard: self.clone(),
            ip,
            share,
            amount,
        }
    }

    /// Add `n` to a share of `ip`'s source if that keeps it within `max`.
    fn take(&self, ip: IpAddr, share: Share, n: usize, max: usize) -> bool {
        let now = Instant::now();
        let mut table = lock(&self.table);
        let s = self.entry(&mut table, ip, now);
        let field = match share {
            Share::Connection => &mut s.conns,
            Share::Buffered => &mut s.buffered,
            Share::Transaction => &mut s.transactions,
        };
        match field.checked_add(n) {
            Some(v) if v <= max => {
                *field = v;
                true
            }
            _ => false,
        }
    }

    fn give_back(&self, ip: IpAddr, share: Share, n: usize) {
        let mut table = lock(&self.table);
        if let Some(s) = table.get_mut(&source_key(ip)) {
            let field = match share {
                Share::Connection => &mut s.conns,
                Share::Buffered => &mut s.buffered,
                Share::Transaction => &mut s.transactions,
            };
            *field = field.saturating_sub(n);
        }
    }

    /// The entry for `ip`'s source, made (with a full budget) if new. When
    /// the table is full, sources that hold nothing and owe nothing are
    /// forgotten; if that frees too little, every source holding nothing
    /// is. So each new source costs O(1) on average, and the table never
    /// grows past its bound by more than the sources holding connections
    /// or transactions (which have their own bounds).
    fn entry<'t>(
        &self,
        table: &'t mut HashMap<IpAddr, Source>,
        ip: IpAddr,
        now: Instant,
    ) -> &'t mut Source {
        let key = source_key(ip);
        let (max, burst, rate) = self.limits.as_ref().map_or((usize::MAX, 1.0, 1.0), |l| {
            (l.max_sources.max(1), l.burst.max(1.0), l.rate.max(0.001))
        });
        if table.len() >= max && !table.contains_key(&key) {
            let before = table.len();
            let full_after = Duration::from_secs_f64(burst / rate);
            table.retain(|_, s| {
                !(s.holds_nothing() && now.saturating_duration_since(s.last) >= full_after)
            });
            if table.len() > max - max / 4 {
                table.retain(|_, s| !s.holds_nothing());
            }
            self.counters
                .sources_forgotten
                .fetch_add((before - table.len()) as u64, Ordering::Relaxed);
        }
        table.entry(key).or_insert(Source {
            tokens: burst,
            last: now,
            conns: 0,
            buffered: 0,
            transactions: 0,
        })
    }

    /// Count a connection closed for holding too many buffered bytes.
    pub fn note_buffer_limit(&self, ip: IpAddr) {
        self.counters.buffer_limit.fetch_add(1, Ordering::Relaxed);
        self.notices.buffers.hit(|n| {
            warn!(
                closed = n,
                latest = %source_key(ip),
                "closing connections of sources holding too many buffered bytes"
            )
        });
    }
}

/// A share of a source's limits in use (a connection, a transaction, or
/// bytes buffered), given back when dropped.
pub struct Held {
    /// Where to give it back.
    guard: Arc<Guard>,
    /// The source's address (keyed by [`source_key`]).
    ip: IpAddr,
    /// Which share.
    share: Share,
    /// How much of it (1 for a connection or transaction, bytes when buffered).
    amount: usize,
}

impl Held {
    /// Make the held amount `n` (buffered bytes); false, leaving it as it
    /// was, when that would take the source over its limit.
    pub fn resize(&mut self, n: usize) -> bool {
        if n <= self.amount {
            self.guard.give_back(self.ip, self.share, self.amount - n);
            self.amount = n;
            return true;
        }
        let max = self
            .guard
            .limits
            .as_ref()
            .map_or(usize::MAX, |l| l.max_buffered);
        if self.guard.take(self.ip, self.share, n - self.amount, max) {
            self.amount = n;
            true
        } else {
            false
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.amount > 0 {
            self.guard.give_back(self.ip, self.share, self.amount);
        }
    }
}

impl fmt::Debug for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Held")
            .field("ip", &self.ip)
            .field("share", &self.share)
            .field("amount", &self.amount)
            .finish()
    }
}

/// Items waiting from one source.
struct Lane<T> {
    /// Each item with its cost in bytes, oldest first.
    items: VecDeque<(T, usize)>,
    /// Sum of the items' costs (bytes).
    bytes: usize,
}

struct QueueState<T> {
    /// One lane per source with something waiting.
    lanes: HashMap<IpAddr, Lane<T>>,
    /// Sources with something waiting, in the order they are served.
    turn: VecDeque<IpAddr>,
    /// Every lane by its length, to find the longest at once.
    by_len: BTreeSet<(usize, IpAddr)>,
    /// Items waiting in all lanes.
    items: usize,
    /// Their bytes.
    bytes: usize,
}

impl<T> QueueState<T> {
    /// Record a lane's length changing from `from` to `to`.
    fn relen(&mut self, key: IpAddr, from: usize, to: usize) {
        if from > 0 {
            self.by_len.remove(&(from, key));
        }
        if to > 0 {
            self.by_len.insert((to, key));
        }
    }

    fn lane_len(&self, key: &IpAddr) -> usize {
        self.lanes.get(key).map_or(0, |l| l.items.len())
    }

    /// Drop the newest item of the longest lane, if that lane is longer
    /// than `than` items. False when there is none.
    fn push_out(&mut self, than: usize) -> bool {
        let Some(&(len, key)) = self.by_len.last() else {
            return false;
        };
        if len <= than {
            return false;
        }
        let Some(lane) = self.lanes.get_mut(&key) else {
            return false;
        };
        let Some((_, bytes)) = lane.items.pop_back() else {
            return false;
        };
        lane.bytes -= bytes;
        let empty = lane.items.is_empty();
        if empty {
            self.lanes.remove(&key);
            self.turn.retain(|k| *k != key);
        }
        self.relen(key, len, len - 1);
        self.items -= 1;
        self.bytes -= bytes;
        true
    }
}

/// Limits of a [`FairQueue`].
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Items waiting in all...
    pub items: usize,
    /// ...and their bytes.
    pub bytes: usize,
    /// Items waiting from one source...
    pub items_per_source: usize,
    /// ...and their bytes (one item bigger than this still goes into an
    /// empty lane).
    pub bytes_per_source: usize,
}

/// A bounded queue with one lane per source, served in turn (one item per
/// source per round), for many producers and one consumer.
pub struct FairQueue<T> {
    /// The lanes and the turn.
    state: Mutex<QueueState<T>>,
    /// Its bounds.
    limits: QueueLimits,
    /// Wakes the consumer.
    ready: Notify,
    /// Wakes producers waiting for room.
    room: Notify,
    /// Set by [`FairQueue::close`].
    closed: AtomicBool,
    /// Items dropped to make room for another source's.
    pushed_out: AtomicU64,
}

impl<T> FairQueue<T> {
    pub fn new(limits: QueueLimits) -> FairQueue<T> {
        FairQueue {
            state: Mutex::new(QueueState {
                lanes: HashMap::new(),
                turn: VecDeque::new(),
                by_len: BTreeSet::new(),
                items: 0,
                bytes: 0,
            }),
            limits: QueueLimits {
                items: limits.items.max(1),
                bytes: limits.bytes.max(1),
                items_per_source: limits.items_per_source.max(1),
                bytes_per_source: limits.bytes_per_source.max(1),
            },
            ready: Notify::new(),
            room: Notify::new(),
            closed: AtomicBool::new(false),
            pushed_out: AtomicU64::new(0),
        }
    }

    /// Queue `item` (costing `bytes`) in `ip`'s source's lane, or give it
    /// back when its lane is full, or the queue is and no source has more
    /// waiting than this one. When the queue is full, the newest item of
    /// the longest lane makes room for a source with fewer waiting: a flood
    /// from many sources can't shut a quiet one out.
    pub fn try_push(&self, ip: IpAddr, item: T, bytes: usize) -> Result<(), T> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(item);
        }
        let key = source_key(ip);
        let l = self.limits;
        let mut st = lock(&self.state);
        // An item larger than a lane's byte limit still goes into an empty
        // lane: a single big message must not be refused for ever.
        let (lane_items, lane_bytes) = st
            .lanes
            .get(&key)
            .map_or((0, 0), |lane| (lane.items.len(), lane.bytes));
        let fits_lane = lane_items < l.items_per_source
            && (lane_items == 0 || lane_bytes.saturating_add(bytes) <= l.bytes_per_source);
        if !fits_lane {
            return Err(item);
        }
        let fits_all = |st: &QueueState<T>| {
            st.items < l.items && (st.items == 0 || st.bytes.saturating_add(bytes) <= l.bytes)
        };
        while !fits_all(&st) {
            // Only a lane at least two longer than ours gives way, so two
            // busy sources don't take turns pushing each other out.
            if !st.push_out(lane_items + 1) {
                return Err(item);
            }
            self.pushed_out.fetch_add(1, Ordering::Relaxed);
        }
        let len = st.lane_len(&key);
        let lane = st.lanes.entry(key).or_insert_with(|| Lane {
            items: VecDeque::new(),
            bytes: 0,
        });
        lane.items.push_back((item, bytes));
        lane.bytes += bytes;
        if len == 0 {
            st.turn.push_back(key);
        }
        st.relen(key, len, len + 1);
        st.items += 1;
        st.bytes += bytes;
        drop(st);
        self.ready.notify_one();
        Ok(())
    }

    /// Items dropped from the longest lane to make room for another source.
    pub fn pushed_out(&self) -> u64 {
        self.pushed_out.load(Ordering::Relaxed)
    }

    /// Queue `item`, waiting for room until `deadline` (a stream, which
    /// can't lose a message, waits; a datagram doesn't).
    pub async fn push(
        &self,
        ip: IpAddr,
        item: T,
        bytes: usize,
        deadline: Instant,
    ) -> Result<(), T> {
        let mut item = item;
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_push(ip, item, bytes) {
                Ok(()) => return Ok(()),
                Err(back) => item = back,
            }
            if self.closed.load(Ordering::Relaxed)
                || tokio::time::timeout_at(deadline, room).await.is_err()
            {
                return Err(item);
            }
        }
    }

    /// The next item, taking sources in turn; None once closed.
    pub async fn pop(&self) -> Option<T> {
        // Take part in tokio's cooperative budget: a consumer that always
        // finds an item waiting still lets other tasks run.
        tokio::task::consume_budget().await;
        loop {
            if let Some(item) = self.try_pop() {
                return Some(item);
            }
            if self.closed.load(Ordering::Relaxed) {
                return None;
            }
            self.ready.notified().await;
        }
    }

    fn try_pop(&self) -> Option<T> {
        let mut st = lock(&self.state);
        while let Some(key) = st.turn.pop_front() {
            let len = st.lane_len(&key);
            let Some(lane) = st.lanes.get_mut(&key) else {
                continue;
            };
            let Some((item, bytes)) = lane.items.pop_front() else {
                st.lanes.remove(&key);
                continue;
            };
            lane.bytes -= bytes;
            if lane.items.is_empty() {
                st.lanes.remove(&key);
            } else {
                st.turn.push_back(key);
            }
            st.relen(key, len, len - 1);
            st.items -= 1;
            st.bytes -= bytes;
            drop(st);
            self.room.notify_waiters();
            return Some(item);
        }
        None
    }

    /// Items waiting now.
    pub fn len(&self) -> usize {
        lock(&self.state).items
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stop: pushes fail, and the consumer gets None once it has taken
    /// what is left... or at once, as nothing more will be handled.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let mut st = lock(&self.state);
        st.lanes.clear();
        st.turn.clear();
        st.by_len.clear();
        st.items = 0;
        st.bytes = 0;
        drop(st);
        self.ready.notify_one();
        self.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs() {
        let c = Cidr::parse("203.0.113.0/24").unwrap();
        assert!(c.contains(ip("203.0.113.7")));
        assert!(c.contains(ip("::ffff:203.0.113.7")));
        assert!(!c.contains(ip("203.0.114.7")));
        assert!(!c.contains(ip("2001:db8::1")));
        assert_eq!(c.to_string(), "203.0.113.0/24");
        let one = Cidr::parse("192.0.2.10").unwrap();
        assert!(one.contains(ip("192.0.2.10")) && !one.contains(ip("192.0.2.11")));
        assert_eq!(one.to_string(), "192.0.2.10");
        let v6 = Cidr::parse("2001:db8:1::/48").unwrap();
        assert!(v6.contains(ip("2001:db8:1:ffff::5")));
        assert!(!v6.contains(ip("2001:db8:2::5")));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains(ip("198.51.100.1")));
        assert!(Cidr::parse("::/0").unwrap().contains(ip("::1")));
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "2001:db8::/129",
            "example.org",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0/8",
            "",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Cidr::parse("10.0.0.1/8")
            .unwrap_err()
            .contains("10.0.0.0/8"));
    }

    #[test]
    fn allow_lists() {
        let open = AllowList::open();
        assert!(open.is_open() && open.allows(ip("198.51.100.1")));
        let l = AllowList::parse(&["203.0.113.0/24", "2001:db8::/32"]).unwrap();
        assert!(l.allows(ip("203.0.113.200")) && l.allows(ip("2001:db8::9")));
        assert!(!l.allows(ip("127.0.0.1")));
        assert_eq!(
            AllowList::parse(&["203.0.113.0/24", "nope"]).unwrap_err().0,
            1
        );
    }

    #[test]
    fn sources_are_addresses_or_ipv6_64s() {
        assert_eq!(source_key(ip("192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(source_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(source_key(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
    }

    fn limits() -> SourceLimits {
        SourceLimits {
            rate: 1.0,
            burst: 3.0,
            max_connections: 2,
            max_buffered: 100,
            max_transactions: 1,
            max_queued: 2,
            max_sources: 4,
        }
    }

    #[tokio::test]
    async fn a_source_gets_its_share_and_no_more() {
        let g = Arc::new(Guard::new(AllowList::open(), Some(limits())));
        let a = ip("192.0.2.1");
        let b = ip("192.0.2.2");
        assert!((0..3).all(|_| g.admit(a)));
        assert!(!g.admit(a));
        // Another source is not affected.
        assert!(g.admit(b));
        // Connections.
        let c1 = g.connection(a).unwrap();
        let _c2 = g.connection(a).unwrap();
        assert!(g.connection(a).is_none());
        assert_eq!(g.connections_of(a), 2);
        drop(c1);
        assert!(g.connection(a).is_some());
        // Buffered bytes, over all of a source's connections.
        let mut b1 = g.buffer(a);
        let mut b2 = g.buffer(a);
        assert!(b1.resize(60));
        assert!(!b2.resize(41));
        assert!(b2.resize(40));
        assert!(b1.resize(10) && b2.resize(90));
        drop(b2);
        assert!(b1.resize(100));
        // Transactions.
        let t = g.transaction(a).unwrap();
        assert!(g.transaction(a).is_none());
        drop(t);
        assert!(g.transaction(a).is_some());
        let st = g.stats();
        assert_eq!(
            (
                st.over_budget,
                st.connections_refused,
                st.transactions_refused
            ),
            (1, 1, 1)
        );
    }

    #[tokio::test]
    async fn the_table_stays_bounded_and_keeps_sources_holding_something() {
        let g = Arc::new(Guard::new(AllowList::open(), Some(limits())));
        let holder = ip("192.0.2.1");
        let _conn = g.connection(holder).unwrap();
        for i in 0..1000u32 {
            let src = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            g.admit(src);
            assert!(g.stats().sources <= 4, "{i}");
        }
        assert_eq!(g.connections_of(holder), 1);
        assert!(g.stats().sources_forgotten > 0);
    }

    #[tokio::test]
    async fn outside_the_allow_list_nothing_is_admitted() {
        let g = Arc::new(Guard::new(
            AllowList::parse(&["192.0.2.0/24"]).unwrap(),
            None,
        ));
        assert!(g.admit(ip("192.0.2.77")));
        assert!(!g.admit(ip("198.51.100.1")));
        assert!(!g.allowed(ip("2001:db8::1")));
        assert_eq!(g.stats().not_allowed, 2);
        g.also_allow(ip("2001:db8::1"));
        assert!(g.allowed(ip("2001:db8::1")));
    }

    #[tokio::test]
    async fn the_queue_serves_sources_in_turn() {
        let q = FairQueue::new(QueueLimits {
            items: 100,
            bytes: 1 << 20,
            items_per_source: 50,
            bytes_per_source: 1 << 20,
        });
        let flood = ip("192.0.2.1");
        let quiet = ip("192.0.2.2");
        for i in 0..50 {
            q.try_push(flood, i, 10).unwrap();
        }
        // The flood's lane is full; the quiet source still gets in...
        assert!(q.try_push(flood, 99, 10).is_err());
        q.try_push(quiet, 1000, 10).unwrap();
        // ...and is served second, not 51st.
        assert_eq!(q.pop().await, Some(0));
        assert_eq!(q.pop().await, Some(1000));
        assert_eq!(q.pop().await, Some(1));
        assert_eq!(q.len(), 48);
        q.close();
        assert_eq!(q.pop().await, None);
        assert!(q.try_push(quiet, 1, 1).is_err());
    }

    /// Many flooding sources fill the whole queue; a quiet one still gets
    /// in, in place of the newest item of the longest lane.
    #[tokio::test]
    async fn a_full_queue_makes_room_for_a_quieter_source() {
        let q = FairQueue::new(QueueLimits {
            items: 10,
            bytes: 1 << 20,
            items_per_source: 8,
            bytes_per_source: 1 << 20,
        });
        let a = ip("192.0.2.1");
        let b = ip("192.0.2.2");
        let quiet = ip("192.0.2.3");
        for i in 0..6 {
            q.try_push(a, i, 1).unwrap();
        }
        for i in 10..14 {
            q.try_push(b, i, 1).unwrap();
        }
        // Full. a's newest gives way to the quiet source...
        q.try_push(quiet, 100, 1).unwrap();
        assert_eq!(q.pushed_out(), 1);
        // ...but b (4 waiting) can't push a (5) out, only a lane two longer.
        assert!(q.try_push(b, 14, 1).is_err());
        assert_eq!(q.len(), 10);
        let mut got = Vec::new();
        while !q.is_empty() {
            got.push(q.pop().await.unwrap());
        }
        assert_eq!(got, [0, 10, 100, 1, 11, 2, 12, 3, 13, 4]);
    }

    #[tokio::test]
    async fn the_queue_is_bounded_in_bytes_and_a_producer_can_wait() {
        let q = Arc::new(FairQueue::new(QueueLimits {
            items: 10,
            bytes: 100,
            items_per_source: 10,
            bytes_per_source: 60,
        }));
        let a = ip("192.0.2.1");
        let b = ip("192.0.2.2");
        q.try_push(a, 1, 60).unwrap();
        assert!(q.try_push(a, 2, 1).is_err(), "lane bytes");
        q.try_push(b, 3, 40).unwrap();
        assert!(q.try_push(b, 4, 1).is_err(), "queue bytes");
        // A waiting producer gets in once there is room.
        let q2 = q.clone();
        let waiter = tokio::spawn(async move {
            q2.push(b, 5, 20, Instant::now() + Duration::from_secs(10))
                .await
        });
        assert_eq!(q.pop().await, Some(1));
        assert!(waiter.await.unwrap().is_ok());
        // And gives up at its deadline.
        q.try_push(a, 6, 40).unwrap();
        let r = q
            .push(b, 7, 50, Instant::now() + Duration::from_millis(20))
            .await;
        assert_eq!(r, Err(7));
        // One message bigger than a lane may hold still goes into an empty lane.
        let big = FairQueue::new(QueueLimits {
            items: 10,
            bytes: 100,
            items_per_source: 10,
            bytes_per_source: 10,
        });
        big.try_push(a, 1, 90).unwrap();
    }
}

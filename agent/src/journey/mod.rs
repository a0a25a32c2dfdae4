//! Observations in, packet journeys out. Pure: no I/O, no clocks of its own,
//! so every rule here is unit-tested.
//!
//! Time is the events' own (their kernel timestamps, CLOCK_MONOTONIC): a
//! journey is idle when no hop of it is newer than `idle` before the
//! **watermark** the caller passes to [`Builder::expire`], the time up to
//! which every plugin's events have been read. Behind a flood the watermark
//! lags the clock, so a reader that falls behind does not cut journeys in
//! two (it did when idleness was measured on the arrival clock).
//!
//! A journey is every observation of one packet id on this host, in time
//! order. It ends when
//! - a hook reports a drop ([`End::Dropped`]),
//! - a terminal hook sees it, e.g. delivery to a socket ([`End::Terminal`]),
//! - no hook has seen it for the idle timeout ([`End::Idle`]),
//! - the same hook on the same device sees the same id again: a retransmit
//!   or an identical packet starts a new journey ([`End::Idle`] for the old),
//! - too many journeys are open: the one idle longest ends early
//!   ([`End::Evicted`]),
//! - the agent stops ([`End::Shutdown`]).
//!
//! CPU intervals (a vCPU descheduled from t1 to t2) are kept per CPU for a
//! while and attached to the journeys whose hops ran on that CPU during them.
//!
//! Every journey also gets a [`Verdict`], what became of the packet on this
//! host, from its hops (docs/output.md, "Verdicts"):
//! - delivered: a process read it from its socket (a terminal hook), or its
//!   last hop was a receive addressed to this host (`PACKET_HOST`) that no
//!   drop followed, or it was freed with a reason that means "discarded by
//!   its socket's owner" (unread data purged at close);
//! - dropped: freed with any other drop reason;
//! - forwarded: its last hop was a transmit: it left the devices this host
//!   watches (a physical NIC, a tunnel);
//! - unknown: anything else.
//!
//! A terminal hop (a socket read) that finds no open journey of its packet
//! (read after the idle timeout, or read twice) starts none: it is counted
//! in [`BuilderStats::late_terminal`].

use std::collections::{HashMap, VecDeque};

use foldhash::fast::RandomState;
use vnt_plugin_api::{Direction, Flow, IntervalObservation, PacketObservation, PACKET_HOST};

mod join;

/// What became of the packet on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It reached its destination here.
    Delivered(DeliveredTo),
    /// It left through a device this host watches last.
    Forwarded,
    /// It died here, with a reason.
    Dropped,
    /// Nothing says.
    Unknown,
}

/// Where a delivered packet went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveredTo {
    /// A process read it from its socket (hop `hop`, which names the process).
    Socket {
        /// Index of the reading hop.
        hop: usize,
    },
    /// Into its socket, which discarded it unread (closed): hop `hop` has
    /// the reason.
    SocketUnread {
        /// Index of the freeing hop.
        hop: usize,
    },
    /// Up the local stack: its last hop was a receive addressed to this
    /// host and nothing dropped it, but no socket read was seen (UDP reads
    /// and TCP acknowledgments have no tracepoint).
    Stack,
}

impl Verdict {
    /// `delivered`, `forwarded`, `dropped`, `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Delivered(_) => "delivered",
            Verdict::Forwarded => "forwarded",
            Verdict::Dropped => "dropped",
            Verdict::Unknown => "unknown",
        }
    }
}

/// Why a journey ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// No hook saw the packet for the idle timeout.
    Idle,
    /// Dropped, with a reason on the last hop.
    Dropped,
    /// Reached a terminal hook.
    Terminal,
    /// Ended early: too many journeys in flight.
    Evicted,
    /// The agent stopped.
    Shutdown,
}

impl End {
    /// Lowercase name for output.
    pub fn as_str(self) -> &'static str {
        match self {
            End::Idle => "idle",
            End::Dropped => "dropped",
            End::Terminal => "terminal",
            End::Evicted => "evicted",
            End::Shutdown => "shutdown",
        }
    }
}

/// One observation of the packet, with the index of the plugin that made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Hop {
    /// Index of the plugin in the agent's plugin list.
    pub plugin: u16,
    /// What the plugin saw.
    pub obs: PacketObservation,
}

/// A finished journey.
#[derive(Debug, Clone, PartialEq)]
pub struct Journey {
    /// Packet id.
    pub pkt_id: u64,
    /// Hops (and substeps) in time order.
    pub hops: Vec<Hop>,
    /// Why it ended.
    pub end: End,
    /// What became of the packet.
    pub verdict: Verdict,
    /// CPU intervals that overlapped the journey on a CPU one of its hops ran on.
    pub intervals: Vec<(u16, IntervalObservation)>,
}

/// The verdict of hops in time order; `benign` says which drop reason codes
/// mean "discarded by its socket's owner".
pub fn verdict(hops: &[Hop], benign: &[u32]) -> Verdict {
    let Some((last_i, last)) = hops
        .iter()
        .enumerate()
        .rev()
        .find(|(_, h)| h.obs.substep.is_none() && says_where(h))
    else {
        return Verdict::Unknown;
    };
    if let Some(code) = last.obs.drop_reason {
        return if benign.contains(&code) {
            Verdict::Delivered(DeliveredTo::SocketUnread { hop: last_i })
        } else {
            Verdict::Dropped
        };
    }
    if last.obs.terminal {
        return Verdict::Delivered(DeliveredTo::Socket { hop: last_i });
    }
    match last.obs.direction {
        Direction::Tx => Verdict::Forwarded,
        Direction::Rx if last.obs.pkt_type == Some(PACKET_HOST) => {
            Verdict::Delivered(DeliveredTo::Stack)
        }
        _ => Verdict::Unknown,
    }
}

/// Whether a hop tells where the packet went: a device hop (transmit or
/// receive), a drop, or a terminal hook. A hop that only annotates the
/// packet (a TCP retransmission joined by sequence number) does not decide
/// the verdict.
fn says_where(h: &Hop) -> bool {
    h.obs.drop_reason.is_some()
        || h.obs.terminal
        || h.obs.direction != Direction::None
        || h.obs.pkt_type.is_some()
}

impl Journey {
    /// Flow of the first hop.
    pub fn flow(&self) -> Flow {
        self.hops.first().map(|h| h.obs.flow).unwrap_or_default()
    }

    /// First and last timestamps.
    pub fn span_ns(&self) -> (u64, u64) {
        let first = self.hops.first().map(|h| h.obs.ts_ns).unwrap_or(0);
        let last = self
            .hops
            .iter()
            .map(|h| {
                h.obs
                    .substep
                    .map_or(h.obs.ts_ns, |(_, end)| end.max(h.obs.ts_ns))
            })
            .max()
            .unwrap_or(first);
        (first, last)
    }

    /// The hop where the packet was dropped.
    pub fn drop_hop(&self) -> Option<&Hop> {
        self.hops.iter().rev().find(|h| h.obs.drop_reason.is_some())
    }
}

/// Counters of the builder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BuilderStats {
    /// Packet observations taken.
    pub observations: u64,
    /// Interval observations taken.
    pub intervals: u64,
    /// Journeys ended, by reason.
    pub idle: u64,
    /// Dropped.
    pub dropped: u64,
    /// Terminal.
    pub terminal: u64,
    /// Evicted.
    pub evicted: u64,
    /// Shutdown.
    pub shutdown: u64,
    /// Verdicts: delivered.
    pub delivered: u64,
    /// Forwarded.
    pub forwarded: u64,
    /// Dropped (a drop reason that is not benign).
    pub verdict_dropped: u64,
    /// Unknown.
    pub unknown: u64,
    /// Terminal hops (socket reads) that found no open journey.
    pub late_terminal: u64,
    /// Observations older than the drop or terminal hop that ended their
    /// journey, read after it from another plugin's ring buffer, that
    /// joined it while it waited for the watermark
    /// ([`Builder::with_several_rings`]).
    pub late_joined: u64,
    /// Observations without a packet id joined to a journey by flow and TCP
    /// sequence number.
    pub joined: u64,
    /// Of those, ones that found no packet of that flow and sequence number
    /// within the join wait: counted, not output.
    pub unjoined: u64,
}

impl BuilderStats {
    fn count_verdict(&mut self, v: &Verdict) {
        *self.verdict_counter(v) += 1;
    }

    fn uncount_verdict(&mut self, v: &Verdict) {
        let c = self.verdict_counter(v);
        *c = c.saturating_sub(1);
    }

    fn verdict_counter(&mut self, v: &Verdict) -> &mut u64 {
        match v {
            Verdict::Delivered(_) => &mut self.delivered,
            Verdict::Forwarded => &mut self.forwarded,
            Verdict::Dropped => &mut self.verdict_dropped,
            Verdict::Unknown => &mut self.unknown,
        }
    }

    /// All journeys ended.
    pub fn journeys(&self) -> u64 {
        self.idle + self.dropped + self.terminal + self.evicted + self.shutdown
    }
}

struct Open {
    hops: Vec<Hop>,
    /// Generation of the newest deadline entry; older entries are stale.
    gen: u64,
    /// Newest hop timestamp.
    last_ns: u64,
}

/// Hops a journey has room for before its first reallocation: the six of a
/// packet through two veth pairs and a bridge. It also keeps the allocation
/// under 1 KiB, which glibc serves from its per-size caches; larger ones
/// made it merge its free lists on every journey (BENCHMARKS.md, "User space").
pub const HOPS_RESERVED: usize = 6;

/// What the builder holds per open journey of up to [`HOPS_RESERVED`] hops,
/// at most, counting the growth of its tables: its hops (one allocation and
/// malloc's 16-byte header); its table entry and control byte, at up to 16/7
/// buckets per entry (power-of-two capacity at a 7/8 load factor) plus the
/// old table while it grows (3.5 buckets in all); its deadline entries, up to
/// two per journey (the list is compacted beyond that), at up to twice that
/// capacity, plus the old buffer while it grows (6 in all). The builder's
/// memory is `max_in_flight` times this, plus [`COMPACT_SLACK`] deadline
/// entries and the CPU intervals (bounded per CPU), whatever the traffic:
/// `tests/journey_memory.rs` holds it to that with a million flows.
pub const fn bytes_per_open_journey() -> usize {
    HOPS_RESERVED * std::mem::size_of::<Hop>()
        + 16
        + (7 * (8 + std::mem::size_of::<Open>() + 1)).div_ceil(2)
        + 6 * std::mem::size_of::<(u64, u64, u64)>()
}

/// Stale deadline entries tolerated beyond the open journeys before a
/// compaction.
pub const COMPACT_SLACK: usize = 1024;

/// How long an observation to be joined by sequence number waits for the
/// packet it belongs to (at least; the join linger when longer).
const JOIN_WAIT_NS: u64 = 100_000_000;

/// How long CPU intervals are kept for joining.
const INTERVAL_KEEP_NS: u64 = 5_000_000_000;
/// At most this many intervals per CPU.
const INTERVAL_KEEP_MAX: usize = 4096;

/// The journey builder.
pub struct Builder {
    idle_ns: u64,
    max_open: usize,
    open: HashMap<u64, Open, RandomState>,
    /// (deadline, pkt_id, gen) in arrival order: nearly deadline order (the
    /// events of different CPUs and plugins arrive a batch apart at most), so
    /// a journey may end a little after its deadline, never before. Entries
    /// whose journey has a newer one are stale; [`Builder::compact`] keeps
    /// them fewer than the open journeys (plus a constant).
    deadlines: VecDeque<(u64, u64, u64)>,
    next_gen: u64,
    intervals: HashMap<u32, VecDeque<(u16, IntervalObservation)>, RandomState>,
    stats: BuilderStats,
    benign_drops: Vec<u32>,
    /// Packet ids by flow and TCP sequence number, for joins.
    seq: join::SeqIndex,
    /// How long a finished journey stays open to joins before it is output
    /// (0: output at once).
    linger_ns: u64,
    /// Finished journeys waiting out `linger_ns` (or the watermark), in
    /// finishing order.
    closing: VecDeque<(u64, Journey)>,
    /// How many journeys of each packet id wait in `closing`.
    closing_ids: HashMap<u64, u32, RandomState>,
    /// Finished journeys wait until the watermark passes their end
    /// ([`Builder::with_several_rings`]).
    wait_watermark: bool,
    /// The latest `now` seen.
    last_now: u64,
    /// Index packets by TCP sequence number ([`Builder::with_seq_joins`]).
    seq_joins: bool,
}

impl Builder {
    /// A builder ending journeys after `idle_ns` without observations and
    /// following at most `max_open` at once.
    pub fn new(idle_ns: u64, max_open: usize) -> Builder {
        Builder {
            idle_ns,
            max_open: max_open.max(1),
            open: HashMap::default(),
            deadlines: VecDeque::new(),
            next_gen: 0,
            intervals: HashMap::default(),
            stats: BuilderStats::default(),
            benign_drops: Vec::new(),
            seq: join::SeqIndex::default(),
            linger_ns: 0,
            closing: VecDeque::new(),
            closing_ids: HashMap::default(),
            wait_watermark: false,
            last_now: 0,
            seq_joins: false,
        }
    }

    /// Join observations by TCP sequence number (journey::join): index
    /// packets by flow and sequence number, and keep finished journeys open
    /// to joins for `linger_ns` before output (a retransmission may be read
    /// after the hops that ended its journey, from another plugin's ring
    /// buffer). Off unless a loaded plugin joins so: the index costs every
    /// TCP hop.
    pub fn with_seq_joins(mut self, linger_ns: u64) -> Builder {
        self.seq_joins = true;
        self.linger_ns = linger_ns;
        self
    }

    /// Observations come from several ring buffers (one per plugin), each
    /// read on its own: a journey ended by one plugin's drop or terminal hop
    /// may be read before another plugin's older hops of the same packet
    /// (an OVS datapath hop, a decapsulation). Finished journeys then wait
    /// until the watermark (every plugin has read up to their end) passes
    /// their last hop, and an observation of their packet older than that
    /// joins them ([`BuilderStats::late_joined`]). Costs each finished
    /// journey a hash insert and the output a drain interval of delay.
    pub fn with_several_rings(mut self, several: bool) -> Builder {
        self.wait_watermark = several;
        self
    }

    /// Drop reason codes that mean "discarded by its socket's owner", not a
    /// drop (`QUEUE_PURGE`: unread data freed when its socket closed).
    pub fn with_benign_drops(mut self, codes: Vec<u32>) -> Builder {
        self.benign_drops = codes;
        self
    }

    /// Counters so far.
    pub fn stats(&self) -> BuilderStats {
        self.stats
    }

    /// Journeys currently open.
    pub fn in_flight(&self) -> usize {
        self.open.len()
    }

    /// Deadline entries held (open journeys' current ones and stale ones).
    pub fn deadline_entries(&self) -> usize {
        self.deadlines.len()
    }

    /// Take a packet observation.
    pub fn packet(&mut self, plugin: u16, obs: PacketObservation, out: &mut Vec<Journey>) {
        self.stats.observations += 1;
        // Event time: the newest event seen (lingering and join waits count on it).
        self.last_now = self.last_now.max(obs.ts_ns);
        let mut obs = obs;
        let mut released = Vec::new();
        if obs.substep.is_none() && self.seq_joins {
            if let Some(seq) = obs.tcp_seq {
                if obs.pkt_id == 0 {
                    match self.seq.lookup(&obs.flow, seq, obs.ts_ns) {
                        Some(id) => {
                            obs.pkt_id = id;
                            self.place_joined(plugin, obs, out);
                            return;
                        }
                        None => {
                            let deadline = self
                                .last_now
                                .saturating_add(self.linger_ns.max(JOIN_WAIT_NS));
                            if !self.seq.park(plugin, obs, deadline) {
                                self.stats.unjoined += 1;
                            }
                            return;
                        }
                    }
                } else {
                    released = self.seq.index(obs.flow, seq, obs.pkt_id, obs.ts_ns);
                }
            }
        }
        if obs.pkt_id == 0 {
            // Nothing to join by: not a packet of any journey.
            self.stats.unjoined += 1;
            return;
        }
        self.take(plugin, obs, out);
        for (p, mut o) in released {
            match self.seq.lookup(&o.flow, o.tcp_seq.unwrap_or(0), o.ts_ns) {
                Some(id) => {
                    o.pkt_id = id;
                    self.place_joined(p, o, out);
                }
                None => self.stats.unjoined += 1,
            }
        }
    }

    /// Put an observation joined by sequence number on its journey: open,
    /// or finished and lingering. A journey already output cannot take it:
    /// counted as unjoined, never a journey of its own.
    fn place_joined(&mut self, plugin: u16, obs: PacketObservation, out: &mut Vec<Journey>) {
        if self.open.contains_key(&obs.pkt_id) {
            self.stats.joined += 1;
            self.take(plugin, obs, out);
        } else if self.join_closing(plugin, &obs) {
            self.stats.joined += 1;
        } else {
            self.stats.unjoined += 1;
        }
    }

    /// Add a joined observation to a finished journey still lingering;
    /// false when its journey is not among them.
    fn join_closing(&mut self, plugin: u16, obs: &PacketObservation) -> bool {
        let Some((_, j)) = self
            .closing
            .iter_mut()
            .rev()
            .find(|(_, j)| j.pkt_id == obs.pkt_id)
        else {
            return false;
        };
        let at = j.hops.partition_point(|h| h.obs.ts_ns <= obs.ts_ns);
        j.hops.insert(
            at,
            Hop {
                plugin,
                obs: obs.clone(),
            },
        );
        // Hop indexes in the verdict moved: compute it again (an annotating
        // hop never changes what it is).
        j.verdict = verdict(&j.hops, &self.benign_drops);
        true
    }

    /// An observation of a packet whose journey already finished, but no
    /// later than its end: it belongs in that journey, still waiting for
    /// the watermark ([`Builder::with_several_rings`]).
    fn join_late(&mut self, plugin: u16, obs: &PacketObservation) -> bool {
        if !self.closing_ids.contains_key(&obs.pkt_id) {
            return false;
        }
        let Some((_, j)) = self
            .closing
            .iter_mut()
            .rev()
            .find(|(_, j)| j.pkt_id == obs.pkt_id && obs.ts_ns <= j.span_ns().1)
        else {
            return false;
        };
        let at = j.hops.partition_point(|h| h.obs.ts_ns <= obs.ts_ns);
        j.hops.insert(
            at,
            Hop {
                plugin,
                obs: obs.clone(),
            },
        );
        let before = j.verdict;
        j.verdict = verdict(&j.hops, &self.benign_drops);
        let after = j.verdict;
        if std::mem::discriminant(&before) != std::mem::discriminant(&after) {
            self.stats.uncount_verdict(&before);
            self.stats.count_verdict(&after);
        }
        self.stats.late_joined += 1;
        true
    }

    fn take(&mut self, plugin: u16, obs: PacketObservation, out: &mut Vec<Journey>) {
        let id = obs.pkt_id;
        if self.wait_watermark && self.join_late(plugin, &obs) {
            return;
        }
        let repeat = self.open.get(&id).is_some_and(|j| {
            obs.substep.is_none()
                && j.hops.iter().any(|h| {
                    h.plugin == plugin
                        && h.obs.substep.is_none()
                        && h.obs.hook == obs.hook
                        && h.obs.ifindex == obs.ifindex
                        && h.obs.netns == obs.netns
                })
        });
        if repeat {
            self.finish(id, End::Idle, out);
        }
        if obs.terminal && obs.drop_reason.is_none() && !self.open.contains_key(&id) {
            // A read of a packet whose journey already ended (or a second
            // read of it): not a journey of its own.
            self.stats.late_terminal += 1;
            return;
        }
        if !self.open.contains_key(&id) && self.open.len() >= self.max_open {
            self.evict_one(out);
        }
        let ends = if obs.drop_reason.is_some() {
            Some(End::Dropped)
        } else if obs.terminal {
            Some(End::Terminal)
        } else {
            None
        };
        let ts = obs.ts_ns;
        let j = self.open.entry(id).or_insert_with(|| Open {
            hops: Vec::with_capacity(HOPS_RESERVED),
            gen: 0,
            last_ns: ts,
        });
        j.hops.push(Hop { plugin, obs });
        if let Some(end) = ends {
            self.finish(id, end, out);
            return;
        }
        if ts < j.last_ns && j.gen != 0 {
            // An older hop arriving late: the deadline stands.
            return;
        }
        j.last_ns = ts;
        self.next_gen += 1;
        j.gen = self.next_gen;
        self.deadlines
            .push_back((ts.saturating_add(self.idle_ns), id, self.next_gen));
        if self.deadlines.len() > 2 * self.open.len() + COMPACT_SLACK {
            self.compact();
        }
    }

    /// Drop the stale deadline entries. Called when they outnumber the open
    /// journeys, so its cost is amortised over as many observations as it
    /// removes, and the list stays under 2 x open journeys + a constant
    /// however long the idle timeout and however high the rate (it used to
    /// grow with rate x idle timeout).
    fn compact(&mut self) {
        let open = &self.open;
        self.deadlines
            .retain(|(_, id, gen)| open.get(id).is_some_and(|j| j.gen == *gen));
        self.deadlines
            .shrink_to(2 * self.open.len() + COMPACT_SLACK);
    }

    /// Take a CPU interval.
    pub fn interval(&mut self, plugin: u16, obs: IntervalObservation) {
        self.stats.intervals += 1;
        let q = self.intervals.entry(obs.cpu).or_default();
        q.push_back((plugin, obs));
        while q.len() > INTERVAL_KEEP_MAX {
            q.pop_front();
        }
    }

    /// End the journeys whose newest hop is `idle` or more before
    /// `watermark_ns`: the time up to which every event has been read.
    pub fn expire(&mut self, watermark_ns: u64, out: &mut Vec<Journey>) {
        self.last_now = self.last_now.max(watermark_ns);
        self.release(watermark_ns, out);
        while let Some(&(deadline, id, gen)) = self.deadlines.front() {
            if deadline > watermark_ns {
                break;
            }
            self.deadlines.pop_front();
            if self.open.get(&id).is_some_and(|j| j.gen == gen) {
                self.finish(id, End::Idle, out);
            }
        }
        for q in self.intervals.values_mut() {
            while q
                .front()
                .is_some_and(|(_, i)| i.end_ns.saturating_add(INTERVAL_KEEP_NS) < watermark_ns)
            {
                q.pop_front();
            }
        }
    }

    /// Output lingering journeys whose time is up, and count parked joins
    /// that found nothing.
    fn release(&mut self, now_ns: u64, out: &mut Vec<Journey>) {
        while self.closing.front().is_some_and(|(d, _)| *d <= now_ns) {
            if let Some((_, j)) = self.closing.pop_front() {
                if let Some(n) = self.closing_ids.get_mut(&j.pkt_id) {
                    *n -= 1;
                    if *n == 0 {
                        self.closing_ids.remove(&j.pkt_id);
                    }
                }
                out.push(j);
            }
        }
        self.stats.unjoined += self.seq.expire(now_ns);
    }

    /// End every open journey (the agent is stopping).
    pub fn flush(&mut self, out: &mut Vec<Journey>) {
        let mut ids: Vec<(u64, u64)> = self.open.iter().map(|(id, j)| (j.gen, *id)).collect();
        ids.sort_unstable();
        for (_, id) in ids {
            self.finish(id, End::Shutdown, out);
        }
        self.deadlines.clear();
        self.release(u64::MAX, out);
    }

    fn evict_one(&mut self, out: &mut Vec<Journey>) {
        while let Some((_, id, gen)) = self.deadlines.pop_front() {
            if self.open.get(&id).is_some_and(|j| j.gen == gen) {
                self.finish(id, End::Evicted, out);
                return;
            }
        }
        // Every open journey without a deadline entry: end any one.
        if let Some(&id) = self.open.keys().next() {
            self.finish(id, End::Evicted, out);
        }
    }

    fn finish(&mut self, id: u64, end: End, out: &mut Vec<Journey>) {
        let Some(open) = self.open.remove(&id) else {
            return;
        };
        let mut hops = open.hops;
        hops.sort_by_key(|h| h.obs.ts_ns);
        let verdict = verdict(&hops, &self.benign_drops);
        self.stats.count_verdict(&verdict);
        match end {
            End::Idle => self.stats.idle += 1,
            End::Dropped => self.stats.dropped += 1,
            End::Terminal => self.stats.terminal += 1,
            End::Evicted => self.stats.evicted += 1,
            End::Shutdown => self.stats.shutdown += 1,
        }
        let mut j = Journey {
            pkt_id: id,
            hops,
            end,
            verdict,
            intervals: vec![],
        };
        self.join_intervals(&mut j);
        if self.linger_ns == 0 && !self.wait_watermark {
            out.push(j);
        } else {
            // Lingering deadlines follow the ingest clock, which never goes
            // back: the queue stays in deadline order. Without lingering, a
            // journey waits for the watermark to pass its end, which is
            // behind the ingest clock: released a little late, never early.
            let deadline = if self.linger_ns > 0 {
                self.last_now.saturating_add(self.linger_ns)
            } else {
                j.span_ns().1.saturating_add(1)
            };
            *self.closing_ids.entry(j.pkt_id).or_default() += 1;
            self.closing.push_back((deadline, j));
        }
    }

    fn join_intervals(&self, j: &mut Journey) {
        if self.intervals.is_empty() {
            return;
        }
        let (start, end) = j.span_ns();
        let mut cpus: Vec<u32> = j.hops.iter().map(|h| h.obs.cpu).collect();
        cpus.sort_unstable();
        cpus.dedup();
        for cpu in cpus {
            if let Some(q) = self.intervals.get(&cpu) {
                j.intervals.extend(
                    q.iter()
                        .filter(|(_, i)| i.start_ns < end && i.end_ns > start)
                        .cloned(),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(id: u64, hook: u16, ts: u64, ifindex: u32) -> PacketObservation {
        PacketObservation {
            hook,
            ts_ns: ts,
            pkt_id: id,
            ifindex,
            netns: 1,
            ..Default::default()
        }
    }

    const MS: u64 = 1_000_000;

    fn tcp(id: u64, hook: u16, ts: u64, seq: u32) -> PacketObservation {
        PacketObservation {
            flow: Flow {
                family: 4,
                proto: 6,
                sport: 40000,
                dport: 5201,
                ..Default::default()
            },
            tcp_seq: Some(seq),
            direction: if id == 0 {
                Direction::None
            } else {
                Direction::Tx
            },
            ..obs(id, hook, ts, 3)
        }
    }

    #[test]
    fn a_retransmission_joins_its_segment_by_sequence_number() {
        let mut b = Builder::new(100 * MS, 100).with_seq_joins(0);
        let mut out = vec![];
        b.packet(0, tcp(7, 1, 10, 1000), &mut out);
        b.packet(0, tcp(8, 1, 11, 2000), &mut out);
        // Another plugin's retransmission of the segment at 2000.
        b.packet(1, tcp(0, 9, 12, 2000), &mut out);
        b.flush(&mut out);
        let j8 = out.iter().find(|j| j.pkt_id == 8).unwrap();
        assert_eq!(j8.hops.len(), 2);
        assert_eq!((j8.hops[1].plugin, j8.hops[1].obs.hook), (1, 9));
        assert_eq!(
            j8.verdict,
            Verdict::Forwarded,
            "an annotating hop keeps the verdict"
        );
        assert_eq!(out.iter().find(|j| j.pkt_id == 7).unwrap().hops.len(), 1);
        assert_eq!((b.stats().joined, b.stats().unjoined), (1, 0));
    }

    #[test]
    fn a_join_read_first_waits_for_its_packet_and_a_finished_journey_lingers() {
        let mut b = Builder::new(100 * MS, 100).with_seq_joins(20 * MS);
        let mut out = vec![];
        // The retransmission is read before the segment's hops.
        b.packet(1, tcp(0, 9, 12, 2000), &mut out);
        let mut drop = tcp(8, 4, 11, 2000);
        drop.drop_reason = Some(5);
        b.packet(0, drop, &mut out);
        assert!(out.is_empty(), "a finished journey lingers");
        // A second retransmission, after the journey finished.
        b.packet(1, tcp(0, 9, 30, 2000), &mut out);
        b.expire(30 * MS, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].hops.len(), 3);
        assert_eq!(out[0].verdict, Verdict::Dropped);
        assert_eq!(b.stats().joined, 2);
        // Nothing to join: counted, not output.
        b.packet(1, tcp(0, 9, 40, 999), &mut out);
        b.expire(200 * MS, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(b.stats().unjoined, 1);
    }

    #[test]
    fn a_retransmission_skips_the_segments_earlier_transmission() {
        let mut b = Builder::new(100 * MS, 100).with_seq_joins(20 * MS);
        let mut out = vec![];
        // The first transmission of the segment at 2000, dropped.
        let mut first = tcp(7, 4, 0, 2000);
        first.drop_reason = Some(5);
        b.packet(0, first, &mut out);
        b.expire(100 * MS, &mut out);
        assert_eq!(out.len(), 1);
        // 300 ms later the retransmission is read before its new packet's
        // hops: the old entry is too old to take it, so it waits...
        b.packet(1, tcp(0, 9, 300 * MS + 5, 2000), &mut out);
        // ... for the resent packet, which it joins.
        b.packet(0, tcp(8, 1, 300 * MS, 2000), &mut out);
        b.flush(&mut out);
        let j8 = out.iter().find(|j| j.pkt_id == 8).unwrap();
        assert_eq!(j8.hops.len(), 2, "{:?}", j8.hops);
        assert_eq!(out.iter().filter(|j| j.pkt_id == 7).count(), 1);
        assert_eq!((b.stats().joined, b.stats().unjoined), (1, 0));
    }

    #[test]
    fn a_join_to_a_journey_already_output_is_counted_not_output() {
        let mut b = Builder::new(100 * MS, 100).with_seq_joins(MS);
        let mut out = vec![];
        b.packet(0, tcp(8, 1, 0, 2000), &mut out);
        b.expire(200 * MS, &mut out);
        // Idle at 200 ms, then lingering 1 ms.
        b.expire(202 * MS, &mut out);
        assert_eq!(out.len(), 1);
        b.packet(1, tcp(0, 9, 5 * MS, 2000), &mut out);
        b.flush(&mut out);
        assert_eq!(out.len(), 1, "no journey of its own");
        assert_eq!(b.stats().unjoined, 1);
    }

    #[test]
    fn hops_of_one_packet_form_one_journey_in_time_order() {
        let mut b = Builder::new(100 * MS, 10);
        let mut out = vec![];
        b.packet(0, obs(7, 1, 300, 2), &mut out);
        b.packet(0, obs(7, 3, 100, 1), &mut out);
        b.packet(0, obs(7, 2, 200, 1), &mut out);
        b.packet(0, obs(8, 1, 250, 1), &mut out);
        assert!(out.is_empty());
        b.expire(250 + 100 * MS - 1, &mut out);
        assert!(out.is_empty(), "not idle yet");
        b.expire(300 + 100 * MS, &mut out);
        assert_eq!(out.len(), 2);
        let j = out.iter().find(|j| j.pkt_id == 7).unwrap();
        let ts: Vec<u64> = j.hops.iter().map(|h| h.obs.ts_ns).collect();
        assert_eq!(ts, vec![100, 200, 300]);
        assert_eq!(j.end, End::Idle);
        assert_eq!(b.stats().observations, 4);
        assert_eq!(b.stats().idle, 2);
        assert_eq!(b.in_flight(), 0);
    }

    #[test]
    fn a_new_observation_postpones_the_idle_end() {
        let mut b = Builder::new(10, 10);
        let mut out = vec![];
        b.packet(0, obs(1, 1, 0, 1), &mut out);
        b.packet(0, obs(1, 2, 5, 1), &mut out);
        b.expire(12, &mut out);
        assert!(out.is_empty(), "the second hop is of time 5, deadline 15");
        b.expire(15, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].hops.len(), 2);
    }

    #[test]
    fn a_drop_ends_the_journey_at_once() {
        let mut b = Builder::new(100 * MS, 10);
        let mut out = vec![];
        b.packet(0, obs(1, 1, 10, 1), &mut out);
        let mut d = obs(1, 4, 20, 1);
        d.drop_reason = Some(12);
        b.packet(0, d, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].end, End::Dropped);
        assert_eq!(out[0].drop_hop().unwrap().obs.drop_reason, Some(12));
        // the stale deadline of the first hop does nothing later
        b.expire(u64::MAX, &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn a_terminal_hook_ends_the_journey() {
        let mut b = Builder::new(100 * MS, 10);
        let mut out = vec![];
        b.packet(0, obs(1, 1, 5, 1), &mut out);
        let mut t = obs(1, 9, 10, 1);
        t.terminal = true;
        b.packet(0, t.clone(), &mut out);
        assert_eq!(out[0].end, End::Terminal);
        assert_eq!(
            out[0].verdict,
            Verdict::Delivered(DeliveredTo::Socket { hop: 1 })
        );
        // A second read of the same packet starts no journey.
        b.packet(0, t, &mut out);
        b.flush(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(b.stats().late_terminal, 1);
    }

    fn dev_hop(direction: Direction, pkt_type: Option<u8>) -> Hop {
        Hop {
            plugin: 0,
            obs: PacketObservation {
                direction,
                pkt_type,
                ..obs(1, 1, 1, 1)
            },
        }
    }

    #[test]
    fn verdicts_follow_the_last_hop() {
        let tx = dev_hop(Direction::Tx, Some(0));
        let rx_host = dev_hop(Direction::Rx, Some(PACKET_HOST));
        let rx_other = dev_hop(Direction::Rx, Some(3));
        let mut purge = dev_hop(Direction::None, None);
        purge.obs.drop_reason = Some(7);
        let mut drop = purge.clone();
        drop.obs.drop_reason = Some(8);
        let benign = [7];
        assert_eq!(
            verdict(std::slice::from_ref(&tx), &benign),
            Verdict::Forwarded
        );
        assert_eq!(
            verdict(&[tx.clone(), rx_host.clone()], &benign),
            Verdict::Delivered(DeliveredTo::Stack)
        );
        assert_eq!(
            verdict(&[tx.clone(), rx_other.clone()], &benign),
            Verdict::Unknown
        );
        assert_eq!(
            verdict(&[tx.clone(), rx_host.clone(), purge], &benign),
            Verdict::Delivered(DeliveredTo::SocketUnread { hop: 2 })
        );
        assert_eq!(verdict(&[tx, rx_host, drop], &benign), Verdict::Dropped);
        assert_eq!(verdict(&[], &benign), Verdict::Unknown);
    }

    #[test]
    fn the_same_hook_twice_starts_a_new_journey() {
        let mut b = Builder::new(100 * MS, 10);
        let mut out = vec![];
        b.packet(0, obs(1, 1, 10, 1), &mut out);
        b.packet(0, obs(1, 2, 20, 1), &mut out);
        b.packet(0, obs(1, 1, 30, 1), &mut out); // retransmit
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].hops.len(), 2);
        b.flush(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].hops.len(), 1);
        assert_eq!(out[1].end, End::Shutdown);
    }

    #[test]
    fn the_same_hook_on_another_device_is_a_new_hop() {
        let mut b = Builder::new(100 * MS, 10);
        let mut out = vec![];
        b.packet(0, obs(1, 1, 10, 1), &mut out);
        b.packet(0, obs(1, 1, 20, 2), &mut out);
        b.flush(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].hops.len(), 2);
    }

    #[test]
    fn beyond_the_limit_the_oldest_is_evicted() {
        let mut b = Builder::new(100 * MS, 2);
        let mut out = vec![];
        b.packet(0, obs(1, 1, 10, 1), &mut out);
        b.packet(0, obs(2, 1, 10, 1), &mut out);
        b.packet(0, obs(1, 2, 11, 1), &mut out); // 1 is now the freshest
        b.packet(0, obs(3, 1, 10, 1), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].pkt_id, 2);
        assert_eq!(out[0].end, End::Evicted);
        assert_eq!(b.in_flight(), 2);
        assert_eq!(b.stats().evicted, 1);
    }

    #[test]
    fn intervals_join_journeys_by_cpu_and_time() {
        let mut b = Builder::new(100, 10);
        let mut out = vec![];
        b.interval(
            1,
            IntervalObservation {
                cpu: 0,
                start_ns: 150,
                end_ns: 180,
                detail: 2,
                ..Default::default()
            },
        );
        b.interval(
            1,
            IntervalObservation {
                cpu: 1,
                start_ns: 150,
                end_ns: 180,
                ..Default::default()
            },
        );
        b.interval(
            1,
            IntervalObservation {
                cpu: 0,
                start_ns: 500,
                end_ns: 600,
                ..Default::default()
            },
        );
        let mut h1 = obs(1, 1, 100, 1);
        h1.cpu = 0;
        let mut h2 = obs(1, 2, 200, 1);
        h2.cpu = 0;
        b.packet(0, h1, &mut out);
        b.packet(0, h2, &mut out);
        b.flush(&mut out);
        assert_eq!(out[0].intervals.len(), 1);
        assert_eq!(out[0].intervals[0].1.detail, 2);
    }

    /// Regression (issues 11 and 12): host B's drop, read from veth's ring
    /// buffer before the overlay plugin's older decapsulation hop of the same
    /// packet, and OVS's datapath hop read after veth's drop, each split the
    /// packet in two.
    #[test]
    fn another_plugins_older_hops_read_after_a_drop_join_its_journey() {
        let mut b = Builder::new(100 * MS, 10).with_several_rings(true);
        let mut out = vec![];
        let mut d = obs(1, 4, 30, 1);
        d.drop_reason = Some(2);
        b.packet(0, obs(1, 3, 20, 1), &mut out);
        b.packet(0, d, &mut out);
        assert_eq!(b.in_flight(), 0);
        assert!(
            out.is_empty(),
            "waits for every plugin to read up to its end"
        );
        // The other plugin's hops, older than the drop, read after it.
        b.packet(1, obs(1, 1, 10, 2), &mut out);
        b.packet(1, obs(1, 2, 25, 2), &mut out);
        // A copy of the packet after the drop starts a journey of its own.
        b.packet(1, obs(1, 1, 40, 2), &mut out);
        b.expire(30, &mut out);
        assert!(out.is_empty(), "an event at 30 may still be unread");
        b.expire(31, &mut out);
        assert_eq!(
            out.len(),
            1,
            "out once the watermark passed the drop: {out:?}"
        );
        let ts: Vec<u64> = out[0].hops.iter().map(|h| h.obs.ts_ns).collect();
        assert_eq!(ts, [10, 20, 25, 30]);
        assert_eq!(out[0].end, End::Dropped);
        assert_eq!(out[0].verdict, Verdict::Dropped);
        assert_eq!(b.stats().late_joined, 2);
        b.flush(&mut out);
        assert_eq!(out.len(), 2);

        // With one plugin (one ring buffer) a drop is out at once, and a
        // later copy of the packet is a journey of its own.
        let mut b = Builder::new(100 * MS, 10);
        let mut out = vec![];
        let mut d = obs(1, 4, 30, 1);
        d.drop_reason = Some(2);
        b.packet(0, d, &mut out);
        assert_eq!(out.len(), 1);
        b.packet(1, obs(1, 1, 10, 2), &mut out);
        b.flush(&mut out);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn a_late_hop_that_turns_the_verdict_recounts_it() {
        let mut b = Builder::new(100 * MS, 10)
            .with_several_rings(true)
            .with_benign_drops(vec![]);
        let mut out = vec![];
        let mut d = obs(7, 4, 30, 1);
        d.drop_reason = Some(2);
        b.packet(0, d, &mut out);
        assert_eq!(b.stats().verdict_dropped, 1);
        b.packet(1, obs(7, 1, 10, 2), &mut out);
        b.expire(31, &mut out);
        let s = b.stats();
        assert_eq!(
            s.delivered + s.forwarded + s.verdict_dropped + s.unknown,
            1,
            "one journey, one verdict: {s:?}"
        );
    }

    #[test]
    fn substeps_do_not_count_as_repeats() {
        let mut b = Builder::new(100, 10);
        let mut out = vec![];
        b.packet(0, obs(1, 1, 10, 1), &mut out);
        let mut s = obs(1, 1, 12, 1);
        s.substep = Some((1, 15));
        b.packet(0, s, &mut out);
        b.flush(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].hops.len(), 2);
        assert_eq!(out[0].span_ns(), (10, 15));
    }

    /// Regression (a VM test saw 2001 journeys for 2000 datagrams): a reader
    /// behind a flood by more than the idle timeout read a packet's first hop,
    /// then its later hops only after an expiry on the arrival clock had
    /// already ended the journey, cutting it in two. Expiry by the events'
    /// watermark keeps it whole: the watermark is where the reader is, not
    /// where the clock is.
    #[test]
    fn a_reader_behind_by_more_than_the_idle_timeout_does_not_split_journeys() {
        let mut b = Builder::new(100 * MS, 10);
        let mut out = vec![];
        // Packet 1: two hops 10 us apart at t = 1 s, read in two batches.
        b.packet(0, obs(1, 1, 1_000 * MS, 1), &mut out);
        // The loop ticks between the batches; the reader is 500 ms behind
        // the clock (2 s), so the watermark is the last event read, 1 s.
        b.expire(1_000 * MS, &mut out);
        assert!(out.is_empty(), "cut in two behind a backlog");
        b.packet(0, obs(1, 2, 1_000 * MS + 10_000, 2), &mut out);
        b.expire(1_000 * MS + 100 * MS + 10_000, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].hops.len(), 2);
        assert_eq!(b.stats().journeys(), 1);
    }

    /// A hop that arrives after a newer one of its journey (another CPU's
    /// batch) keeps the newer deadline.
    #[test]
    fn a_late_older_hop_does_not_shorten_the_deadline() {
        let mut b = Builder::new(10, 10);
        let mut out = vec![];
        b.packet(0, obs(1, 1, 100, 1), &mut out);
        b.packet(0, obs(1, 2, 50, 1), &mut out);
        b.expire(100, &mut out);
        assert!(out.is_empty());
        b.expire(110, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].hops[0].obs.ts_ns, 50);
    }

    /// Issue 13: the deadline list grew with rate x idle timeout (one entry
    /// per hop, stale ones kept until their deadline), not with the open
    /// journeys. A long-lived flow's hops at a long idle timeout: the list
    /// stays within 2 x open + the slack.
    #[test]
    fn the_deadline_list_is_bounded_by_the_open_journeys() {
        let mut b = Builder::new(3_600_000 * MS, 100);
        let mut out = vec![];
        for i in 0..1_000_000u64 {
            // 10 packets, each seen again and again on alternating devices.
            b.packet(0, obs(i % 10, 1, i, (i % 7) as u32), &mut out);
            assert!(b.deadline_entries() <= 2 * b.in_flight() + COMPACT_SLACK + 1);
        }
        b.flush(&mut out);
        assert_eq!(b.stats().journeys(), out.len() as u64);
    }
}

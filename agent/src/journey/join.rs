//! Joining observations that carry no packet id to the journey of their
//! packet, by flow and TCP sequence number (docs/adr/013-open-observations.md).
//!
//! A TCP retransmission seen at `tcp:tcp_retransmit_skb` has the queued skb,
//! which lacks the headers the packet id hashes (IP id, TSval). The segment
//! it resends crossed the device hooks with the same flow and first sequence
//! number, and those hooks computed its id: index (flow, seq) -> id from
//! them, and look the retransmission up there.

use std::collections::{HashMap, VecDeque};

use foldhash::fast::RandomState;
use vnt_plugin_api::{Flow, PacketObservation};

/// Index entries kept: the newest packets' (flow, seq). Enough for the
/// segments in flight of many connections; the oldest are forgotten first.
const INDEX_MAX: usize = 65_536;
/// Observations waiting for their packet, at most.
const PARKED_MAX: usize = 4_096;
/// A join takes a packet seen within this much of the observation (event
/// time, the kernel's clock): a retransmission fires right after its
/// segment was handed to the device, while the segment's earlier
/// transmission (same flow and sequence number) is at least a
/// retransmission timeout (200 ms) older.
const JOIN_WINDOW_NS: u64 = 20_000_000;

type Key = (Flow, u32);

/// Packet ids by (flow, first TCP sequence number), and observations
/// waiting for theirs.
#[derive(Default)]
pub struct SeqIndex {
    /// Key -> (packet id, generation, event time of its newest hop).
    ids: HashMap<Key, (u64, u64, u64), RandomState>,
    /// Keys in insertion order with their generation, to forget the oldest.
    order: VecDeque<(Key, u64)>,
    gen: u64,
    parked: HashMap<Key, Vec<(u16, PacketObservation, u64)>, RandomState>,
    parked_len: usize,
}

impl SeqIndex {
    /// The packet id of the newest packet of `flow` starting at `seq`, if
    /// one of its hops is within [`JOIN_WINDOW_NS`] of `ts_ns`.
    pub fn lookup(&self, flow: &Flow, seq: u32, ts_ns: u64) -> Option<u64> {
        self.ids
            .get(&(*flow, seq))
            .filter(|&&(_, _, seen)| seen.abs_diff(ts_ns) <= JOIN_WINDOW_NS)
            .map(|&(id, _, _)| id)
    }

    /// Remember that packet `id` of `flow` starts at `seq`, seen at
    /// `ts_ns`; returns the parked observations that waited for it.
    pub fn index(
        &mut self,
        flow: Flow,
        seq: u32,
        id: u64,
        ts_ns: u64,
    ) -> Vec<(u16, PacketObservation)> {
        let key = (flow, seq);
        self.gen += 1;
        self.ids.insert(key, (id, self.gen, ts_ns));
        self.order.push_back((key, self.gen));
        while self.order.len() > INDEX_MAX {
            if let Some((old, gen)) = self.order.pop_front() {
                if self.ids.get(&old).is_some_and(|&(_, g, _)| g == gen) {
                    self.ids.remove(&old);
                }
            }
        }
        if self.parked.is_empty() {
            return Vec::new();
        }
        match self.parked.remove(&key) {
            Some(v) => {
                self.parked_len -= v.len();
                v.into_iter().map(|(p, o, _)| (p, o)).collect()
            }
            None => Vec::new(),
        }
    }

    /// Keep `obs` until its packet is indexed or `deadline`; false when
    /// there is no room (the caller counts it as unjoined).
    pub fn park(&mut self, plugin: u16, obs: PacketObservation, deadline: u64) -> bool {
        if self.parked_len >= PARKED_MAX {
            return false;
        }
        let key = (obs.flow, obs.tcp_seq.unwrap_or(0));
        self.parked
            .entry(key)
            .or_default()
            .push((plugin, obs, deadline));
        self.parked_len += 1;
        true
    }

    /// Forget parked observations past their deadline; returns how many.
    pub fn expire(&mut self, now_ns: u64) -> u64 {
        if self.parked_len == 0 {
            return 0;
        }
        let mut gone = 0u64;
        self.parked.retain(|_, v| {
            let before = v.len();
            v.retain(|(_, _, d)| *d > now_ns);
            gone += (before - v.len()) as u64;
            !v.is_empty()
        });
        self.parked_len -= gone as usize;
        gone
    }
}

//! The per-CPU counters every vnt eBPF object keeps (`enum vnt_stat`).

use aya::maps::{MapData, PerCpuArray};
use serde::Serialize;

/// Counter slots, mirror of `enum vnt_stat`.
const SEEN: u32 = 0;
const FILTERED: u32 = 1;
const UNSAMPLED: u32 = 2;
const EMITTED: u32 = 3;
const LOST: u32 = 4;
const NOT_IP: u32 = 5;
const LOST_GAP: u32 = 6;
const LOST_FOLLOW: u32 = 7;
/// Slots in objects built with this header (older objects have fewer; the
/// missing ones read as 0).
const SLOTS: u32 = 8;

/// Counter totals over all CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatTotals {
    /// Hook invocations: the sum of every outcome below, plus the runs of
    /// programs outside the packet pipeline (slot 0, which each of those
    /// counts itself).
    pub seen: u64,
    /// Rejected by the filter.
    pub filtered: u64,
    /// Passed the filter, not sampled.
    pub unsampled: u64,
    /// Records written to the ring buffer.
    pub emitted: u64,
    /// Records not written because the ring buffer was full: the sum of
    /// the three below.
    pub lost: u64,
    /// Not IPv4/IPv6, or headers unreadable.
    pub not_ip: u64,
    /// Packets lost whole: the ring was full at their first hop on a CPU, so
    /// they make no journey (their later hops write nothing, `lost_follow`).
    pub lost_packets: u64,
    /// Hops lost mid-path: the ring was full at a later hop of a packet whose
    /// earlier hops were written; its journey has a gap.
    pub lost_gaps: u64,
    /// Later hops of packets lost whole, not written.
    pub lost_follow: u64,
}

impl std::ops::AddAssign for StatTotals {
    fn add_assign(&mut self, o: StatTotals) {
        self.seen += o.seen;
        self.filtered += o.filtered;
        self.unsampled += o.unsampled;
        self.emitted += o.emitted;
        self.lost += o.lost;
        self.not_ip += o.not_ip;
        self.lost_packets += o.lost_packets;
        self.lost_gaps += o.lost_gaps;
        self.lost_follow += o.lost_follow;
    }
}

/// A plugin object's counters map.
pub struct KernelStats {
    map: PerCpuArray<MapData, u64>,
}

impl KernelStats {
    /// Wrap the `vnt_stats` map.
    pub fn new(map: PerCpuArray<MapData, u64>) -> KernelStats {
        KernelStats { map }
    }

    /// Read every counter of every CPU, then sum over the CPUs.
    pub fn read(&self) -> StatTotals {
        let mut t = StatTotals::default();
        for c in self.read_per_cpu() {
            t += c;
        }
        t
    }

    /// Read every counter, per CPU (index = CPU number).
    pub fn read_per_cpu(&self) -> Vec<StatTotals> {
        let mut slots: Vec<Vec<u64>> = Vec::with_capacity(SLOTS as usize);
        for slot in 0..SLOTS {
            slots.push(
                self.map
                    .get(&slot, 0)
                    .map(|v| v.iter().copied().collect())
                    .unwrap_or_default(),
            );
        }
        let cpus = slots.iter().map(Vec::len).max().unwrap_or(0);
        (0..cpus)
            .map(|cpu| totals(|slot| slots[slot as usize].get(cpu).copied().unwrap_or(0)))
            .collect()
    }
}

/// One CPU's (or a sum's) totals from its slot values. A run increments
/// exactly one slot (ebpf/include/vnt/common.h), so the runs are the sum of
/// the slots.
fn totals(slot: impl Fn(u32) -> u64) -> StatTotals {
    let (lost_packets, lost_gaps, lost_follow) = (slot(LOST), slot(LOST_GAP), slot(LOST_FOLLOW));
    let mut t = StatTotals {
        seen: 0,
        filtered: slot(FILTERED),
        unsampled: slot(UNSAMPLED),
        emitted: slot(EMITTED),
        lost: lost_packets + lost_gaps + lost_follow,
        not_ip: slot(NOT_IP),
        lost_packets,
        lost_gaps,
        lost_follow,
    };
    t.seen = slot(SEEN) + t.filtered + t.unsampled + t.emitted + t.lost + t.not_ip;
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_run_counts_once_and_losses_add_up() {
        let vals = [5u64, 1, 2, 3, 4, 6, 7, 8];
        let t = totals(|s| vals[s as usize]);
        assert_eq!(t.lost, 4 + 7 + 8);
        assert_eq!((t.lost_packets, t.lost_gaps, t.lost_follow), (4, 7, 8));
        assert_eq!(t.seen, vals.iter().sum::<u64>());
    }
}

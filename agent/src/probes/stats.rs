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
    /// Records lost: ring buffer full.
    pub lost: u64,
    /// Not IPv4/IPv6, or headers unreadable.
    pub not_ip: u64,
}

impl std::ops::AddAssign for StatTotals {
    fn add_assign(&mut self, o: StatTotals) {
        self.seen += o.seen;
        self.filtered += o.filtered;
        self.unsampled += o.unsampled;
        self.emitted += o.emitted;
        self.lost += o.lost;
        self.not_ip += o.not_ip;
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

    fn sum(&self, slot: u32) -> u64 {
        self.map.get(&slot, 0).map(|v| v.iter().sum()).unwrap_or(0)
    }

    /// Read and sum every counter.
    pub fn read(&self) -> StatTotals {
        // A run increments exactly one slot (ebpf/include/vnt/common.h), so
        // the runs are the sum of the slots.
        let mut t = StatTotals {
            seen: 0,
            filtered: self.sum(FILTERED),
            unsampled: self.sum(UNSAMPLED),
            emitted: self.sum(EMITTED),
            lost: self.sum(LOST),
            not_ip: self.sum(NOT_IP),
        };
        t.seen = self.sum(SEEN) + t.filtered + t.unsampled + t.emitted + t.lost + t.not_ip;
        t
    }
}

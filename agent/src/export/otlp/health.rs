//! The agent's own health counters: written by the main loop and the export
//! thread, read by the health metrics (`vnt.agent.*`) and the exit summary.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::export::view::Summary;
use crate::probes::stats::StatTotals;

/// Counters shared between threads; every field only grows.
#[derive(Debug, Default)]
pub struct Health {
    /// Ring-buffer records read.
    pub events_received: AtomicU64,
    /// Records the kernel could not write (ring buffer full).
    pub events_lost: AtomicU64,
    /// Packets lost whole: the ring buffer was full at their first hop.
    pub packets_lost: AtomicU64,
    /// Hops lost mid-path (ring buffer full): journeys with a gap.
    pub hops_lost_mid_path: AtomicU64,
    /// Records decoders rejected.
    pub decode_errors: AtomicU64,
    /// Journeys ended, for any reason.
    pub journeys_completed: AtomicU64,
    /// Of which ended by the idle timeout.
    pub journeys_timed_out: AtomicU64,
    /// Of which ended early because too many were open.
    pub journeys_evicted: AtomicU64,
    /// Journeys and records not written to the output: stdout did not keep up.
    pub output_dropped: AtomicU64,
    /// Spans accepted into the export queue.
    pub spans_queued: AtomicU64,
    /// Spans the collector accepted.
    pub spans_exported: AtomicU64,
    /// Spans dropped because the queue was full.
    pub spans_dropped_queue_full: AtomicU64,
    /// Spans dropped because their export request failed.
    pub spans_dropped_export_failed: AtomicU64,
    /// Spans still queued when the shutdown timeout ran out.
    pub spans_dropped_shutdown: AtomicU64,
    /// Failed span export requests.
    pub trace_export_errors: AtomicU64,
    /// Successful metric export requests.
    pub metric_exports: AtomicU64,
    /// Failed metric export requests.
    pub metric_export_errors: AtomicU64,
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

impl Health {
    /// Add `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Read a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        get(counter)
    }

    /// Copy the main loop's counters from the summary as it stands (called
    /// periodically and at exit) and the kernel's counters, summed over the
    /// plugins, as they stand.
    pub fn update_from(&self, s: &Summary, kernel: StatTotals) {
        self.events_received.store(s.records, Ordering::Relaxed);
        self.events_lost.store(kernel.lost, Ordering::Relaxed);
        self.packets_lost
            .store(kernel.lost_packets, Ordering::Relaxed);
        self.hops_lost_mid_path
            .store(kernel.lost_gaps, Ordering::Relaxed);
        self.decode_errors.store(s.decode_errors, Ordering::Relaxed);
        self.journeys_completed.store(s.journeys, Ordering::Relaxed);
        self.journeys_timed_out
            .store(s.journeys_idle, Ordering::Relaxed);
        self.journeys_evicted
            .store(s.journeys_evicted, Ordering::Relaxed);
        self.output_dropped
            .store(s.output_dropped, Ordering::Relaxed);
    }

    /// All dropped spans.
    pub fn spans_dropped(&self) -> u64 {
        get(&self.spans_dropped_queue_full)
            + get(&self.spans_dropped_export_failed)
            + get(&self.spans_dropped_shutdown)
    }
}

//! Journey memory is bounded by configuration whatever the traffic (issue 13,
//! acceptance 2): a million distinct flows at a one-hour idle timeout, none
//! of which ever ends on its own, keep the builder's heap under
//! `max_in_flight` x `journey::bytes_per_open_journey()`. It used to grow
//! with rate x idle timeout: one deadline entry per hop, kept until its
//! deadline.
//!
//! The heap is measured with a counting allocator (this test binary's only),
//! which sees every byte the builder holds; RSS is printed beside it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use vnt_agent::journey::{bytes_per_open_journey, Builder, COMPACT_SLACK};
use vnt_plugin_api::{Flow, PacketObservation};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

// SAFETY: delegates to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let n = LIVE.fetch_add(l.size() as isize, Ordering::Relaxed) + l.size() as isize;
        PEAK.fetch_max(n, Ordering::Relaxed);
        // SAFETY: the caller's layout, passed on.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: `p` came from `alloc` with this layout.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn a_million_flows_at_a_long_idle_timeout_stay_under_the_configured_bound() {
    const FLOWS: u64 = 1_000_000;
    const HOPS: u64 = 3;
    // The agent's default journey.max_in_flight.
    let max_in_flight = 65_536;
    let idle_ns = 3_600 * 1_000_000_000;
    let rss0 = rss_kib();
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let mut b = Builder::new(idle_ns, max_in_flight);
    let mut out = Vec::new();
    let mut ended = 0u64;
    let mut ts = 1_000_000_000u64;
    for f in 0..FLOWS {
        // A distinct flow per packet: 10.x.y.z:port -> 10.0.0.1:80.
        let flow = Flow {
            family: 4,
            proto: 17,
            sport: (f % 60_000) as u16 + 1024,
            dport: 80,
            ..Default::default()
        };
        for h in 0..HOPS {
            ts += 1_000;
            b.packet(
                0,
                PacketObservation {
                    hook: h as u16 + 1,
                    ts_ns: ts,
                    pkt_id: f.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
                    ifindex: h as u32 + 1,
                    flow,
                    ..Default::default()
                },
                &mut out,
            );
        }
        // The loop's tick: nothing is idle an hour before the newest event.
        if f % 4096 == 0 {
            b.expire(ts, &mut out);
        }
        ended += out.len() as u64;
        out.clear();
        assert!(b.in_flight() <= max_in_flight);
        assert!(b.deadline_entries() <= 2 * b.in_flight() + COMPACT_SLACK + 1);
    }
    let peak = (PEAK.load(Ordering::Relaxed) - base) as usize;
    // Plus constants: the compaction slack, and 1 MiB for what the test
    // itself and the harness allocate meanwhile.
    let bound = max_in_flight * bytes_per_open_journey() + 2 * COMPACT_SLACK * 24 + (1 << 20);
    let rss1 = rss_kib();
    eprintln!(
        "{FLOWS} flows x {HOPS} hops, max_in_flight {max_in_flight}: builder heap peak {:.1} MiB, \
         bound {:.1} MiB ({} B per open journey); RSS {} -> {} KiB; {} evicted",
        peak as f64 / 1048576.0,
        bound as f64 / 1048576.0,
        bytes_per_open_journey(),
        rss0,
        rss1,
        b.stats().evicted
    );
    assert!(
        peak <= bound,
        "the builder held {peak} B, more than the configured bound {bound} B"
    );
    assert_eq!(
        ended,
        FLOWS - max_in_flight as u64,
        "every flow beyond the bound evicted"
    );
    assert_eq!(b.stats().evicted, ended);
    b.flush(&mut out);
    assert_eq!(out.len(), max_in_flight);
}

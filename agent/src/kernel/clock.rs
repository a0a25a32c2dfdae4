//! Kernel timestamps (`bpf_ktime_get_ns`, CLOCK_MONOTONIC) to wall-clock time.

/// Nanoseconds of a clock.
fn now(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime has no other effects.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CLOCK_MONOTONIC now, the clock of eBPF timestamps.
pub fn monotonic_ns() -> u64 {
    now(libc::CLOCK_MONOTONIC)
}

/// TEST ONLY: `VNT_TEST_CLOCK_OFFSET_NS` (signed nanoseconds) is added to
/// every wall-clock time this agent reports, as if its host's clock were
/// that far off. The clock-alignment test (tests/tests/clock_alignment.rs)
/// gives one of two agents a skew this way; it is in no help text and
/// every run that sets it says so in its log.
pub const TEST_OFFSET_ENV: &str = "VNT_TEST_CLOCK_OFFSET_NS";

/// The injected test offset, if `VNT_TEST_CLOCK_OFFSET_NS` is set to a number.
pub fn test_offset_ns() -> Option<i64> {
    std::env::var(TEST_OFFSET_ENV).ok()?.trim().parse().ok()
}

/// Offset between CLOCK_REALTIME and CLOCK_MONOTONIC.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    offset_ns: i128,
}

impl WallClock {
    /// Measure the offset: of several (mono, real, mono) triples, keep the
    /// one whose monotonic reads are closest together.
    pub fn measure() -> WallClock {
        let mut best: Option<(u64, i128)> = None;
        for _ in 0..9 {
            let a = monotonic_ns();
            let r = now(libc::CLOCK_REALTIME);
            let b = monotonic_ns();
            let gap = b.saturating_sub(a);
            let offset = r as i128 - (a as i128 + gap as i128 / 2);
            if best.is_none_or(|(g, _)| gap < g) {
                best = Some((gap, offset));
            }
        }
        WallClock {
            offset_ns: best.map_or(0, |(_, o)| o) + i128::from(test_offset_ns().unwrap_or(0)),
        }
    }

    /// A fixed offset (tests).
    pub fn with_offset(offset_ns: i128) -> WallClock {
        WallClock { offset_ns }
    }

    /// Unix nanoseconds of a monotonic timestamp.
    pub fn unix_ns(&self, mono_ns: u64) -> u64 {
        (mono_ns as i128 + self.offset_ns).max(0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_time_of_now_is_now() {
        let c = WallClock::measure();
        let real = now(libc::CLOCK_REALTIME);
        let derived = c.unix_ns(monotonic_ns());
        assert!(derived.abs_diff(real) < 50_000_000, "{derived} vs {real}");
    }
}

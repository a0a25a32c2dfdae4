//! The offset between two hosts' clocks, from packets seen in both
//! directions, filtered by minimum delay as NTP does.
//!
//! A packet from host X to host Y is last seen on X at `tx` (X's clock) and
//! first seen on Y at `ty` (Y's clock). With `theta` the amount Y's clock is
//! ahead of X's and `delay` the true time between the two sightings,
//! `d_xy = ty - tx = delay + theta`; the other way, `d_yx = delay' - theta`.
//! Delays are never negative, so `-min d_yx <= theta <= min d_xy`: the
//! estimate is the middle of that interval, `(min d_xy - min d_yx) / 2`, and
//! its uncertainty half its width, `(min d_xy + min d_yx) / 2`. Taking the
//! minimum over a window keeps the packets that waited least (queues only
//! ever add delay), which is why a few samples each way suffice on a quiet
//! link. Without samples in both directions there is no interval: no
//! estimate, and the caller says "unaligned" rather than guess.

use std::collections::{HashMap, VecDeque};

/// An estimate of how far one host's clock is ahead of another's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offset {
    /// Nanoseconds the host's clock is ahead of the reference's.
    pub offset_ns: i64,
    /// Half the width of the interval the true offset lies in.
    pub uncertainty_ns: u64,
    /// Samples in the window, reference to host.
    pub samples_forward: usize,
    /// Samples in the window, host to reference.
    pub samples_reverse: usize,
}

/// The minimum of the samples of the last `window` nanoseconds (at most
/// `max` samples), in O(1) amortized per sample: a deque of candidates with
/// increasing values (a sample that a later, smaller one outlives can never
/// be the minimum again).
#[derive(Debug, Default)]
struct WindowMin {
    /// (sequence number, time seen, value), values increasing.
    candidates: VecDeque<(u64, u64, i64)>,
    /// Samples ever pushed.
    seq: u64,
    /// Time of each sample still in the window (for its count).
    times: VecDeque<u64>,
}

impl WindowMin {
    fn push(&mut self, now: u64, value: i64) {
        while self.candidates.back().is_some_and(|&(_, _, v)| v >= value) {
            self.candidates.pop_back();
        }
        self.candidates.push_back((self.seq, now, value));
        self.times.push_back(now);
        self.seq += 1;
    }

    fn expire(&mut self, now: u64, window: u64, max: usize) {
        while self.times.len() > max
            || self
                .times
                .front()
                .is_some_and(|&t| now.saturating_sub(t) > window)
        {
            self.times.pop_front();
        }
        let oldest = self.seq - self.times.len() as u64;
        while self.candidates.front().is_some_and(|&(s, _, _)| s < oldest) {
            self.candidates.pop_front();
        }
    }

    fn min(&self) -> Option<i64> {
        self.candidates.front().map(|&(_, _, v)| v)
    }

    fn len(&self) -> usize {
        self.times.len()
    }
}

/// Offsets between every pair of hosts seen exchanging packets.
#[derive(Debug)]
pub struct Clocks {
    /// Samples `d_xy` per ordered pair (x, y): packets from x to y.
    pairs: HashMap<(String, String), WindowMin>,
    window_ns: u64,
    max_samples: usize,
    resolution_ns: u64,
}

impl Clocks {
    /// Estimates over the last `window_ns` nanoseconds, at most
    /// `max_samples` samples per direction, from times known to within
    /// `resolution_ns` (added to every uncertainty: the exported spans'
    /// boundaries are whole microseconds).
    pub fn new(window_ns: u64, max_samples: usize, resolution_ns: u64) -> Clocks {
        Clocks {
            pairs: HashMap::new(),
            window_ns,
            max_samples: max_samples.max(1),
            resolution_ns,
        }
    }

    /// A packet from `from` to `to`: last seen on `from` at `sent` (its
    /// clock), first seen on `to` at `received` (its clock); `now` is the
    /// aligner's own monotonic time, for the window.
    pub fn sample(&mut self, from: &str, to: &str, sent: u64, received: u64, now: u64) {
        let d = (i128::from(received) - i128::from(sent))
            .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
        let (window, max) = (self.window_ns, self.max_samples);
        let w = self
            .pairs
            .entry((from.to_owned(), to.to_owned()))
            .or_default();
        w.push(now, d);
        w.expire(now, window, max);
    }

    /// How far `host`'s clock is ahead of `reference`'s, when packets went
    /// both ways between them within the window.
    pub fn offset(&mut self, reference: &str, host: &str, now: u64) -> Option<Offset> {
        let (window, max, resolution) = (self.window_ns, self.max_samples, self.resolution_ns);
        let mut side = |a: &str, b: &str| {
            let w = self.pairs.get_mut(&(a.to_owned(), b.to_owned()))?;
            w.expire(now, window, max);
            Some((w.min()?, w.len()))
        };
        let (forward, n_forward) = side(reference, host)?;
        let (reverse, n_reverse) = side(host, reference)?;
        let (f, r) = (i128::from(forward), i128::from(reverse));
        Some(Offset {
            offset_ns: ((f - r) / 2) as i64,
            uncertainty_ns: ((f + r) / 2).max(0) as u64 + resolution,
            samples_forward: n_forward,
            samples_reverse: n_reverse,
        })
    }

    /// Every ordered pair with samples, for the summary.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.keys().map(|(a, b)| (a.as_str(), b.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn offset_from_minimum_delays_both_ways() {
        let mut c = Clocks::new(60 * S, 1000, 0);
        let theta = 7_300_000i64; // B is 7.3 ms ahead of A
        for (i, (delay_ab, delay_ba)) in [(40_000, 30_000), (12_000, 90_000), (500_000, 11_000)]
            .into_iter()
            .enumerate()
        {
            let t = 1_000 * S + i as u64 * S;
            c.sample("a", "b", t, (t as i64 + delay_ab + theta) as u64, t);
            c.sample("b", "a", (t as i64 + theta) as u64, t + delay_ba as u64, t);
        }
        let o = c.offset("a", "b", 1_003 * S).unwrap();
        // min d_ab = 12 us + theta, min d_ba = 11 us - theta.
        assert_eq!(o.offset_ns, theta + (12_000 - 11_000) / 2);
        assert_eq!(o.uncertainty_ns, (12_000 + 11_000) / 2);
        assert_eq!((o.samples_forward, o.samples_reverse), (3, 3));
        let back = c.offset("b", "a", 1_003 * S).unwrap();
        assert_eq!(back.offset_ns, -o.offset_ns);
        assert_eq!(back.uncertainty_ns, o.uncertainty_ns);
    }

    #[test]
    fn one_way_traffic_gives_no_estimate() {
        let mut c = Clocks::new(60 * S, 1000, 0);
        c.sample("a", "b", 100, 7_300_200, 0);
        assert_eq!(c.offset("a", "b", 0), None);
        assert_eq!(c.offset("b", "a", 0), None);
    }

    #[test]
    fn samples_leave_the_window_by_age_and_by_count() {
        let mut c = Clocks::new(10 * S, 3, 0);
        c.sample("a", "b", 0, 5, 0); // the smallest, but old
        c.sample("b", "a", 0, 5, 0);
        for i in 1..=4u64 {
            c.sample("a", "b", 0, 100 + i, 20 * S + i);
            c.sample("b", "a", 0, 100 + i, 20 * S + i);
        }
        let o = c.offset("a", "b", 20 * S + 4).unwrap();
        // The 5 expired by age; of 101..104 only the last 3 remain: min 102.
        assert_eq!((o.offset_ns, o.uncertainty_ns), (0, 102));
        assert_eq!(o.samples_forward, 3);
        assert_eq!(c.offset("a", "b", 40 * S), None, "all expired");
    }

    #[test]
    fn window_min_matches_a_scan() {
        let mut w = WindowMin::default();
        let mut all: Vec<(u64, i64)> = vec![];
        let mut x: u64 = 12345;
        for t in 0..2000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let v = (x >> 40) as i64 - 5000;
            w.push(t, v);
            all.push((t, v));
            w.expire(t, 300, 100);
            let live: Vec<i64> = all
                .iter()
                .rev()
                .take(100)
                .filter(|(ts, _)| t - ts <= 300)
                .map(|&(_, v)| v)
                .collect();
            assert_eq!(w.min(), live.iter().copied().min(), "at {t}");
            assert_eq!(w.len(), live.len());
        }
    }
}

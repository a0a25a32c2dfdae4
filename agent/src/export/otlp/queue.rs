//! The bounded export queue between the main loop and the export thread.
//!
//! It holds finished journeys (their views, about half a kilobyte per span;
//! spans are built on the export thread) and is bounded in **spans**: a
//! journey that does not fit is refused whole, so a trace is never cut, and
//! the caller counts it as dropped. Pushing never blocks and never allocates
//! beyond the bound, so a slow or absent collector cannot slow tracing down
//! or grow memory (docs/otel.md, "Memory bound").

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::export::view::JourneyView;

/// A journey waiting for export, with the number of spans it will become.
#[derive(Debug)]
pub struct Queued {
    /// The journey.
    pub view: JourneyView,
    /// Its span count.
    pub spans: usize,
}

#[derive(Debug, Default)]
struct Inner {
    items: VecDeque<Queued>,
    spans: usize,
}

/// Bounded FIFO of journeys, measured in spans.
#[derive(Debug)]
pub struct SpanQueue {
    inner: Mutex<Inner>,
    capacity: usize,
    batch: usize,
    notify: Notify,
}

impl SpanQueue {
    /// A queue holding at most `capacity` spans, waking the consumer when
    /// `batch` spans are waiting.
    pub fn new(capacity: usize, batch: usize) -> SpanQueue {
        SpanQueue {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
            batch: batch.clamp(1, capacity.max(1)),
            notify: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves consistent data
        // (every update is a single push or pop); keep going.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue a journey of `spans` spans; `false` (and the journey dropped)
    /// when it does not fit.
    #[must_use]
    pub fn push(&self, view: JourneyView, spans: usize) -> bool {
        let wake = {
            let mut q = self.lock();
            if q.spans + spans > self.capacity {
                return false;
            }
            let before = q.spans;
            q.spans += spans;
            q.items.push_back(Queued { view, spans });
            before < self.batch && q.spans >= self.batch
        };
        if wake {
            self.notify.notify_one();
        }
        true
    }

    /// Move whole journeys into `out` while their spans add up to at most
    /// `max_spans` (always at least one journey when any is queued); returns
    /// the number of spans moved.
    pub fn pop_batch(&self, max_spans: usize, out: &mut Vec<Queued>) -> usize {
        let mut q = self.lock();
        let mut taken = 0;
        while let Some(front) = q.items.front() {
            if taken > 0 && taken + front.spans > max_spans {
                break;
            }
            let Some(item) = q.items.pop_front() else {
                break;
            };
            taken += item.spans;
            q.spans -= item.spans;
            out.push(item);
        }
        taken
    }

    /// Empty the queue; returns the number of spans removed.
    pub fn clear(&self) -> usize {
        let mut q = self.lock();
        let n = q.spans;
        q.items.clear();
        q.spans = 0;
        n
    }

    /// Spans waiting.
    pub fn len_spans(&self) -> usize {
        self.lock().spans
    }

    /// The bound, in spans.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Resolves when a full batch is waiting (a wake-up that happened while
    /// nobody waited is kept for the next call).
    pub async fn batch_ready(&self) {
        self.notify.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(n: u64) -> JourneyView {
        JourneyView {
            kind: "journey",
            trace_id: String::new(),
            pkt_id: String::new(),
            id: n,
            end: "unknown",
            delivered_to: None,
            process: None,
            closed: "idle",
            flow: crate::export::view::FlowView {
                src: String::new(),
                dst: String::new(),
                sport: 0,
                dport: 0,
                proto: "".into(),
                family: 4,
            },
            len: 0,
            start_unix_nano: 0,
            duration_ns: 0,
            hops: vec![],
            cpu_intervals: vec![],
        }
    }

    #[test]
    fn bounded_in_spans_and_refuses_whole_journeys() {
        let q = SpanQueue::new(10, 4);
        assert!(q.push(view(1), 4));
        assert!(q.push(view(2), 4));
        assert!(!q.push(view(3), 4), "refused whole");
        assert!(q.push(view(4), 2), "a smaller one still fits");
        assert_eq!(q.len_spans(), 10);
        assert!(!q.push(view(5), 11), "larger than the queue: never fits");
        let mut out = vec![];
        q.pop_batch(100, &mut out);
        assert_eq!(out.iter().map(|q| q.view.id).collect::<Vec<_>>(), [1, 2, 4]);
    }

    #[test]
    fn batches_are_whole_journeys_in_order() {
        let q = SpanQueue::new(100, 10);
        for (i, n) in [3usize, 3, 3, 3, 20].into_iter().enumerate() {
            assert!(q.push(view(i as u64), n));
        }
        let mut out = vec![];
        assert_eq!(q.pop_batch(10, &mut out), 9);
        assert_eq!(out.iter().map(|q| q.view.id).collect::<Vec<_>>(), [0, 1, 2]);
        out.clear();
        assert_eq!(q.pop_batch(10, &mut out), 3);
        out.clear();
        assert_eq!(
            q.pop_batch(10, &mut out),
            20,
            "an oversized journey goes alone"
        );
        out.clear();
        assert_eq!(q.pop_batch(10, &mut out), 0);
        assert_eq!(q.len_spans(), 0);
    }

    #[test]
    fn clear_reports_what_it_removed() {
        let q = SpanQueue::new(100, 10);
        assert!(q.push(view(1), 7));
        assert!(q.push(view(2), 5));
        assert_eq!(q.clear(), 12);
        assert_eq!(q.len_spans(), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_batch_wakes_the_consumer_even_if_it_was_not_waiting() {
        let q = SpanQueue::new(100, 4);
        assert!(q.push(view(1), 2));
        assert!(q.push(view(2), 2)); // crosses the batch size: stores a wake-up
        tokio::time::timeout(std::time::Duration::from_secs(1), q.batch_ready())
            .await
            .expect("woken");
    }
}

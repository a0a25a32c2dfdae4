//! The output writer thread: `--output` lines go to stdout from here, so a
//! reader that stops reading (a stalled pipe, a paused terminal) blocks this
//! thread only. The main loop hands it formatted chunks through a queue
//! bounded in bytes; a chunk that does not fit is dropped and counted by the
//! caller (docs/adr/015-stalls-and-decoder-watchdog.md).

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// Bytes the queue to the writer holds at most.
pub const QUEUE_BYTES: usize = 8 << 20;

/// The handle on the writer thread.
pub struct Writer {
    tx: Option<mpsc::Sender<(Vec<u8>, u64)>>,
    queued: Arc<AtomicUsize>,
    /// Items (journeys, records) in the queued chunks, or being written.
    items: Arc<AtomicU64>,
    broken: Arc<AtomicBool>,
    done: mpsc::Receiver<()>,
    max_bytes: usize,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("queued", &self.queued.load(Ordering::Relaxed))
            .finish()
    }
}

impl Writer {
    /// Start a thread writing to `out`, queueing at most `max_bytes`.
    pub fn spawn(mut out: Box<dyn Write + Send>, max_bytes: usize) -> std::io::Result<Writer> {
        let (tx, rx) = mpsc::channel::<(Vec<u8>, u64)>();
        let (done_tx, done) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let items = Arc::new(AtomicU64::new(0));
        let broken = Arc::new(AtomicBool::new(false));
        let (q, i, b) = (queued.clone(), items.clone(), broken.clone());
        std::thread::Builder::new()
            .name("output".into())
            .spawn(move || {
                for (chunk, n) in rx {
                    let ok = !b.load(Ordering::Relaxed)
                        && out.write_all(&chunk).and_then(|_| out.flush()).is_ok();
                    if !ok {
                        // Closed (EPIPE): the main loop sees it and stops;
                        // later chunks are only taken off the queue.
                        b.store(true, Ordering::Relaxed);
                    }
                    // Written (or thrown away after a failure) only now: a
                    // chunk half written when the process ends counts as not.
                    i.fetch_sub(n, Ordering::Relaxed);
                    q.fetch_sub(chunk.len(), Ordering::Relaxed);
                }
                let _ = done_tx.send(());
            })?;
        Ok(Writer {
            tx: Some(tx),
            queued,
            items,
            broken,
            done,
            max_bytes,
        })
    }

    /// Queue `chunk` of `items` journeys or records; `false` if it would
    /// overflow the queue (nothing queued).
    pub fn send(&self, chunk: Vec<u8>, items: u64) -> bool {
        if chunk.is_empty() {
            return true;
        }
        let len = chunk.len();
        let before = self.queued.fetch_add(len, Ordering::Relaxed);
        if before + len > self.max_bytes && before > 0 {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        self.items.fetch_add(items, Ordering::Relaxed);
        match &self.tx {
            Some(tx) if tx.send((chunk, items)).is_ok() => true,
            _ => {
                self.items.fetch_sub(items, Ordering::Relaxed);
                self.queued.fetch_sub(len, Ordering::Relaxed);
                false
            }
        }
    }

    /// The output was closed (a write failed).
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    /// Bytes waiting to be written.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Journeys and records queued and not yet written.
    pub fn unwritten(&self) -> u64 {
        self.items.load(Ordering::Relaxed)
    }

    /// Wait up to `timeout` for everything queued to be written; `false`
    /// if the output did not take it in time.
    pub fn drain(&self, timeout: Duration) -> bool {
        let t0 = std::time::Instant::now();
        while self.queued() > 0 && !self.is_broken() {
            if t0.elapsed() >= timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Close the queue and wait up to `timeout` for the thread to write and
    /// flush everything. `false`: the output did not take it in time (the
    /// thread stays blocked and goes with the process).
    pub fn finish(mut self, timeout: Duration) -> bool {
        drop(self.tx.take());
        self.done.recv_timeout(timeout).is_ok() && !self.is_broken()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A `Write` that blocks until released, then collects.
    #[derive(Clone, Default)]
    struct Gate {
        open: Arc<(Mutex<bool>, std::sync::Condvar)>,
        got: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Gate {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let (m, c) = &*self.open;
            let mut open = m.lock().unwrap();
            while !*open {
                open = c.wait(open).unwrap();
            }
            self.got.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_blocked_output_costs_refused_chunks_not_a_blocked_caller() {
        let gate = Gate::default();
        let w = Writer::spawn(Box::new(gate.clone()), 100).unwrap();
        assert!(w.send(vec![b'a'; 60], 1));
        // The thread is blocked on the first chunk (maybe not yet taken it
        // off the count): the queue is full either way at 160.
        assert!(w.send(vec![b'b'; 40], 1));
        assert!(
            !w.send(vec![b'c'; 10], 1),
            "over the bound: refused at once"
        );
        assert!(!w.drain(Duration::from_millis(50)), "still blocked");
        assert_eq!(w.unwritten(), 2);
        assert!(!w.finish(Duration::from_millis(50)), "still blocked");
        let (m, c) = &*gate.open;
        *m.lock().unwrap() = true;
        c.notify_all();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(gate.got.lock().unwrap().len(), 100);
    }

    #[test]
    fn finish_waits_for_everything_written() {
        let gate = Gate::default();
        *gate.open.0.lock().unwrap() = true;
        let w = Writer::spawn(Box::new(gate.clone()), 1 << 20).unwrap();
        for _ in 0..100 {
            assert!(w.send(vec![b'x'; 1000], 1));
        }
        assert!(w.finish(Duration::from_secs(5)));
        assert_eq!(gate.got.lock().unwrap().len(), 100_000);
    }

    #[test]
    fn a_closed_output_is_reported() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let w = Writer::spawn(Box::new(Closed), 1 << 20).unwrap();
        assert!(w.send(b"line\n".to_vec(), 1));
        let t = std::time::Instant::now();
        while !w.is_broken() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(w.is_broken());
    }
}

//! One thread per plugin reads its ring buffer and calls its decoder; a
//! watchdog on the main loop disables a plugin whose decoder call does not
//! return (docs/adr/015-stalls-and-decoder-watchdog.md).
//!
//! A decoder is plugin code: it can loop, block or flood. On its own thread
//! a hung call costs that plugin only: the main loop keeps building and
//! writing the other plugins' journeys, sees the call last longer than
//! [`HANG_TIMEOUT`], detaches the plugin's programs (it owns their `Ebpf`)
//! and abandons the thread, which can neither be killed nor joined. A call
//! that emits more than [`MAX_OBSERVATIONS_PER_RECORD`] observations is a
//! flood: the thread reports it and ends.
//!
//! The watchdog costs the decoder two relaxed stores per record: a sequence
//! number that is odd while a call runs. The main loop's tick reads it; the
//! same odd number on ticks spanning [`HANG_TIMEOUT`] is a hung call.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aya::maps::{MapData, RingBuf};
use tokio::sync::mpsc;
use vnt_plugin_api::Observation;

use crate::kernel::clock::monotonic_ns;
use crate::plugin_host::{DecodeOutcome, LoadedPlugin, MAX_OBSERVATIONS_PER_RECORD};
use crate::probes::ringbuf::wait_readable;

/// How long one decoder call may take before its plugin is disabled. A
/// decode is microseconds of work on one record; a second is a hang.
pub const HANG_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a reader sleeps when no wakeup comes: the drain interval of
/// records submitted without a wakeup.
const DRAIN_INTERVAL: Duration = Duration::from_millis(10);

/// Records decoded into one batch at most.
const BATCH_MAX: usize = 4096;

/// What decoder threads send to the main loop.
#[derive(Debug)]
pub enum Batch {
    /// Observations of `records` records.
    Observations {
        /// Plugin index.
        plugin: u16,
        /// Decoded.
        obs: Vec<Observation>,
        /// Records read.
        records: u64,
        /// Records (or observations) the decoder rejected.
        decode_errors: u64,
        /// Every event of this plugin up to this time (CLOCK_MONOTONIC) has
        /// been read, up to this batch included (see [`Reader::run`]).
        watermark: u64,
    },
    /// Nothing to read: every event up to `watermark` has been read.
    Watermark {
        /// Plugin index.
        plugin: u16,
        /// CLOCK_MONOTONIC ns.
        watermark: u64,
    },
    /// The plugin must be disabled (its decoder panicked or flooded); the
    /// thread has ended and dropped the plugin.
    Disabled {
        /// Plugin index.
        plugin: u16,
        /// Why.
        reason: String,
    },
    /// The thread drained what was left after a stop and ended.
    Finished {
        /// Plugin index.
        plugin: u16,
    },
}

/// The main loop's handle on one decoder thread.
pub struct Decoder {
    /// Plugin index.
    pub plugin: u16,
    /// Plugin name.
    pub name: String,
    seq: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Sequence number at the last tick, and since when it has not moved.
    last_seq: u64,
    since: Instant,
    /// No more batches will come: finished, disabled or abandoned.
    pub ended: bool,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("plugin", &self.name)
            .field("ended", &self.ended)
            .finish()
    }
}

impl Decoder {
    /// Start the thread reading `ring` and decoding with `plugin`.
    pub fn spawn(
        idx: u16,
        plugin: LoadedPlugin,
        ring: RingBuf<MapData>,
        tx: mpsc::Sender<Batch>,
    ) -> std::io::Result<Decoder> {
        let name = plugin.meta.name.clone();
        let seq = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = Reader {
            idx,
            plugin,
            ring,
            tx,
            seq: seq.clone(),
            stop: stop.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("decode-{name}"))
            .spawn(move || reader.run())?;
        Ok(Decoder {
            plugin: idx,
            name,
            seq,
            stop,
            thread: Some(thread),
            last_seq: 0,
            since: Instant::now(),
            ended: false,
        })
    }

    /// Ask the thread to drain what is left and end.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// The watchdog, called on every tick: how long the current decoder call
    /// has been running, if one has been running since the previous tick.
    pub fn stuck_for(&mut self, now: Instant) -> Option<Duration> {
        if self.ended {
            return None;
        }
        let seq = self.seq.load(Ordering::Acquire);
        if seq != self.last_seq || seq % 2 == 0 {
            self.last_seq = seq;
            self.since = now;
            return None;
        }
        Some(now.saturating_duration_since(self.since))
    }

    /// The thread is finished (or disabled itself): join it.
    pub fn ended(&mut self) {
        self.ended = true;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Give up on a thread stuck in its plugin: it is never joined (a hung
    /// call cannot be cancelled); the plugin and its library stay loaded and
    /// go with the process. If the call ever returns, the thread ends.
    pub fn abandon(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.ended = true;
        drop(self.thread.take());
    }
}

struct Reader {
    idx: u16,
    plugin: LoadedPlugin,
    ring: RingBuf<MapData>,
    tx: mpsc::Sender<Batch>,
    seq: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Reader {
    /// Ends this plugin's instance here, on its own thread: the plugin is
    /// dropped (its programs detached) before the host hears why.
    fn disable(self, reason: String) {
        let Reader {
            idx, tx, plugin, ..
        } = self;
        drop(plugin);
        let _ = tx.blocking_send(Batch::Disabled {
            plugin: idx,
            reason,
        });
    }

    /// The watermark: a drain that empties the ring read every event
    /// stamped before the clock read that started it (a program stamps its
    /// event before reserving it; the few in the middle of being written are
    /// microseconds old, far inside any idle timeout). A drain that stops on
    /// a full batch has read up to its newest event.
    fn run(mut self) {
        let name = self.plugin.meta.name.clone();
        let mut obs = Vec::with_capacity(BATCH_MAX);
        let mut seq = 0u64;
        let mut error_logged = false;
        let mut watermark = 0u64;
        // The plugin's own timer (ABI 1.3), for plugins that poll.
        let tick_every = (self.plugin.meta.tick_interval_ms > 0)
            .then(|| Duration::from_millis(u64::from(self.plugin.meta.tick_interval_ms)));
        let mut last_tick = std::time::Instant::now();
        loop {
            if let Some(every) = tick_every {
                if last_tick.elapsed() >= every {
                    last_tick = std::time::Instant::now();
                    // Watched like a decode call: odd while it runs.
                    seq += 1;
                    self.seq.store(seq, Ordering::Release);
                    let (outcome, malformed) =
                        self.plugin.tick(&mut obs).unwrap_or((DecodeOutcome::Ok, 0));
                    seq += 1;
                    self.seq.store(seq, Ordering::Release);
                    let disabled = match outcome {
                        DecodeOutcome::Ok => None,
                        DecodeOutcome::Error(e) => {
                            tracing::warn!(plugin = %name, error = %e, "timer callback failed");
                            None
                        }
                        DecodeOutcome::Panicked(e) => Some(format!("timer callback panicked: {e}")),
                        DecodeOutcome::Flooded(n) => Some(format!(
                            "timer callback flooded: {n} observations from one call (at most {MAX_OBSERVATIONS_PER_RECORD})"
                        )),
                    };
                    if disabled.is_some() {
                        obs.clear();
                    }
                    let batch = Batch::Observations {
                        plugin: self.idx,
                        obs: std::mem::replace(&mut obs, Vec::with_capacity(BATCH_MAX)),
                        records: 0,
                        decode_errors: malformed,
                        watermark,
                    };
                    if self.tx.blocking_send(batch).is_err() {
                        return;
                    }
                    if let Some(reason) = disabled {
                        return self.disable(reason);
                    }
                }
            }
            let stopping = self.stop.load(Ordering::Acquire);
            if !stopping {
                if let Err(e) = wait_readable(&self.ring, DRAIN_INTERVAL) {
                    return self.disable(format!("cannot poll the ring buffer: {e}"));
                }
            }
            // Drain everything available, also once more when stopping.
            loop {
                let mut records = 0u64;
                let mut decode_errors = 0u64;
                let mut disabled = None;
                let started = monotonic_ns();
                let mut emptied = false;
                while obs.len() < BATCH_MAX {
                    let Some(item) = self.ring.next() else {
                        emptied = true;
                        break;
                    };
                    records += 1;
                    seq += 1;
                    self.seq.store(seq, Ordering::Release);
                    let kept = obs.len();
                    let (outcome, malformed) = self.plugin.decode(&item, &mut obs);
                    seq += 1;
                    self.seq.store(seq, Ordering::Release);
                    decode_errors += malformed;
                    match outcome {
                        DecodeOutcome::Ok => {}
                        DecodeOutcome::Error(e) => {
                            decode_errors += 1;
                            if !error_logged {
                                tracing::warn!(plugin = %name, error = %e, "decoder rejected a record (counted; further ones only counted)");
                                error_logged = true;
                            }
                        }
                        // What a failing call emitted is not trusted.
                        DecodeOutcome::Panicked(e) => {
                            obs.truncate(kept);
                            disabled = Some(format!("decoder panicked: {e}"));
                            break;
                        }
                        DecodeOutcome::Flooded(n) => {
                            obs.truncate(kept);
                            disabled = Some(format!(
                                "decoder flooded: {n} observations from one record (at most {MAX_OBSERVATIONS_PER_RECORD})"
                            ));
                            break;
                        }
                    }
                }
                watermark = watermark.max(if emptied { started } else { newest(&obs) });
                if records == 0 && disabled.is_none() {
                    let _ = self.tx.blocking_send(Batch::Watermark {
                        plugin: self.idx,
                        watermark,
                    });
                    break;
                }
                let batch = Batch::Observations {
                    plugin: self.idx,
                    obs: std::mem::replace(&mut obs, Vec::with_capacity(BATCH_MAX)),
                    records,
                    decode_errors,
                    watermark,
                };
                if self.tx.blocking_send(batch).is_err() {
                    return;
                }
                if let Some(reason) = disabled {
                    return self.disable(reason);
                }
            }
            if stopping {
                let _ = self.tx.blocking_send(Batch::Finished { plugin: self.idx });
                return;
            }
        }
    }
}

/// The newest packet timestamp among `obs` (0 if none).
fn newest(obs: &[Observation]) -> u64 {
    obs.iter()
        .filter_map(|o| match o {
            Observation::Packet(p) => Some(p.ts_ns),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

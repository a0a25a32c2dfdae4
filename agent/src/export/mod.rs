//! Journeys to the outside world: JSON lines, the terminal, and OTLP traces
//! and metrics (`otlp`, docs/otel.md). No `unsafe` here.

pub mod ids;
mod json;
pub mod otlp;
pub mod plugin_metrics;
mod pretty;
pub mod view;
pub mod writer;

use std::io::{self, Write};
use std::time::Duration;

pub use view::{JourneyView, Names, OtlpSummary, Summary};
pub use writer::Writer;

use crate::config::OutputFormat;

/// How long the stop waits for the output to take what is queued (the
/// summary included) before it gives up on it.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Where journeys and the summary go: formatted here, written by the
/// [`Writer`] thread, so that a stalled stdout costs counted drops
/// ([`Output::dropped`]) and never blocks the caller.
pub struct Output {
    format: OutputFormat,
    writer: Writer,
    /// Formatted lines not yet handed to the writer.
    buf: Vec<u8>,
    /// A JSON line being written, reused.
    line: Vec<u8>,
    /// Items (journeys, connection records) in `buf`.
    pending: u64,
    /// Items dropped because the writer's queue was full.
    dropped: u64,
}

/// Where the summary went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SummaryWritten {
    /// To its usual place: stdout in JSON mode, stderr otherwise.
    Usual,
    /// stdout did not take the output within [`DRAIN_TIMEOUT`]: the JSON
    /// summary line went to stderr instead.
    Stderr,
}

impl Output {
    /// Write to `out` in `format`, through a writer thread.
    pub fn new(format: OutputFormat, out: Box<dyn Write + Send>) -> io::Result<Output> {
        Ok(Output {
            format,
            writer: Writer::spawn(out, writer::QUEUE_BYTES)?,
            buf: Vec::new(),
            line: Vec::new(),
            pending: 0,
            dropped: 0,
        })
    }

    /// One journey.
    pub fn journey(&mut self, j: &JourneyView) {
        let r = match self.format {
            OutputFormat::Json => json::journey(&mut self.buf, &mut self.line, j),
            OutputFormat::Pretty => pretty::journey(&mut self.buf, j),
            OutputFormat::None => return,
        };
        debug_assert!(r.is_ok(), "formatting into memory cannot fail");
        self.pending += 1;
    }

    /// Connection counters from a plugin.
    pub fn connection(&mut self, c: &serde_json::Value) {
        let r = match self.format {
            OutputFormat::Json => json::value(&mut self.buf, c),
            OutputFormat::Pretty => writeln!(self.buf, "connection {c}"),
            OutputFormat::None => return,
        };
        debug_assert!(r.is_ok(), "formatting into memory cannot fail");
        self.pending += 1;
    }

    /// Hand what is formatted to the writer; if its queue is full, it is
    /// dropped and counted.
    pub fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let chunk = std::mem::take(&mut self.buf);
        if !self.writer.send(chunk, self.pending) {
            self.dropped += self.pending;
        }
        self.pending = 0;
    }

    /// Journeys and connection records dropped so far: the output did not
    /// keep up (its queue of [`writer::QUEUE_BYTES`] was full), or did not
    /// take them within the stop's [`DRAIN_TIMEOUT`] ([`Output::drain`]).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The output was closed (a write failed, e.g. the reader of a pipe left).
    pub fn is_broken(&self) -> bool {
        self.writer.is_broken()
    }

    /// At the stop: wait up to `timeout` for everything queued to be
    /// written. What is still unwritten then is counted as dropped;
    /// `false` if there was any.
    pub fn drain(&mut self, timeout: Duration) -> bool {
        self.flush();
        if self.writer.drain(timeout) {
            return true;
        }
        self.dropped += self.writer.unwritten();
        false
    }

    /// Write the exit summary: the JSON line on stdout in JSON mode, text on
    /// stderr otherwise. When stdout did not take the output ([`Output::drain`]
    /// returned `false`, `drained`) or does not take the summary within
    /// `timeout`, the JSON line goes to stderr instead, and the writer is left
    /// behind, blocked (it ends with the process).
    pub fn summary(self, s: &Summary, drained: bool, timeout: Duration) -> SummaryWritten {
        if !matches!(self.format, OutputFormat::Json) {
            let _ = self.writer.finish(timeout);
            let _ = pretty::summary(&mut io::stderr(), s);
            return SummaryWritten::Usual;
        }
        let mut line = Vec::new();
        let _ = json::summary(&mut line, s);
        if self.writer.is_broken() {
            return SummaryWritten::Usual;
        }
        if drained && self.writer.send(line.clone(), 0) && self.writer.finish(timeout) {
            return SummaryWritten::Usual;
        }
        let _ = io::stderr().write_all(&line);
        SummaryWritten::Stderr
    }
}

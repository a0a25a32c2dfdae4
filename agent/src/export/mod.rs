//! Journeys to the outside world: JSON lines, the terminal, and OTLP traces
//! and metrics (`otlp`, docs/otel.md). No `unsafe` here.

pub mod ids;
mod json;
pub mod otlp;
pub mod plugin_metrics;
mod pretty;
pub mod view;

use std::io::{self, Write};

pub use view::{JourneyView, Names, OtlpSummary, Summary};

use crate::config::OutputFormat;

/// Where journeys and the summary go.
pub struct Output {
    format: OutputFormat,
    out: Box<dyn Write>,
    /// A JSON line being written, reused.
    line: Vec<u8>,
}

impl Output {
    /// Write to `out` in `format`.
    pub fn new(format: OutputFormat, out: Box<dyn Write>) -> Output {
        Output {
            format,
            out,
            line: Vec::new(),
        }
    }

    /// One journey.
    pub fn journey(&mut self, j: &JourneyView) -> io::Result<()> {
        match self.format {
            OutputFormat::Json => json::journey(&mut self.out, &mut self.line, j),
            OutputFormat::Pretty => pretty::journey(&mut self.out, j),
            OutputFormat::None => Ok(()),
        }
    }

    /// Connection counters from a plugin.
    pub fn connection(&mut self, c: &serde_json::Value) -> io::Result<()> {
        match self.format {
            OutputFormat::Json => json::value(&mut self.out, c),
            OutputFormat::Pretty => writeln!(self.out, "connection {c}"),
            OutputFormat::None => Ok(()),
        }
    }

    /// The exit summary: a JSON line on stdout in JSON mode, text on stderr
    /// otherwise.
    pub fn summary(&mut self, s: &Summary) -> io::Result<()> {
        match self.format {
            OutputFormat::Json => json::summary(&mut self.out, s),
            OutputFormat::Pretty | OutputFormat::None => pretty::summary(&mut io::stderr(), s),
        }
    }

    /// Flush buffered lines.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

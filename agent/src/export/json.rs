//! `--output json`: one object per line, documented in docs/output.md.

use std::io::{self, Write};

use super::view::{JourneyView, Summary};

/// One journey's line. It is serialised into `line` (kept by the caller from
/// journey to journey) and written with one call: serde_json writing through
/// `dyn Write` makes a call per token, which cost more than the JSON itself.
pub fn journey(out: &mut dyn Write, line: &mut Vec<u8>, j: &JourneyView) -> io::Result<()> {
    line.clear();
    serde_json::to_writer(&mut *line, j)?;
    line.push(b'\n');
    out.write_all(line)
}

pub fn value(out: &mut dyn Write, v: &serde_json::Value) -> io::Result<()> {
    serde_json::to_writer(&mut *out, v)?;
    out.write_all(b"\n")
}

pub fn summary(out: &mut dyn Write, s: &Summary) -> io::Result<()> {
    serde_json::to_writer(&mut *out, s)?;
    out.write_all(b"\n")
}

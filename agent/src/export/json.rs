//! `--output json`: one object per line, documented in docs/output.md.

use std::io::{self, Write};

use super::view::{JourneyView, Summary};

pub fn journey(out: &mut dyn Write, j: &JourneyView) -> io::Result<()> {
    serde_json::to_writer(&mut *out, j)?;
    out.write_all(b"\n")
}

pub fn value(out: &mut dyn Write, v: &serde_json::Value) -> io::Result<()> {
    serde_json::to_writer(&mut *out, v)?;
    out.write_all(b"\n")
}

pub fn summary(out: &mut dyn Write, s: &Summary) -> io::Result<()> {
    serde_json::to_writer(&mut *out, s)?;
    out.write_all(b"\n")
}

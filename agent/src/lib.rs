//! vnt-agent: loads plugins, attaches their eBPF probes, follows each sampled
//! packet across the hooks and writes its journey. See docs/architecture.md.

pub mod align;
pub mod check;
pub mod config;
pub mod containers;
pub mod decoder;
pub mod export;
pub mod journey;
pub mod kernel;
pub mod plugin_host;
pub mod probes;
pub mod run;
pub mod signals;

#[cfg(test)]
mod testing;

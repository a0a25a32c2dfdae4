//! The contract between `vnt-agent` and its plugins.
//!
//! A plugin is a shared library that owns one component of a virtual network
//! path (veth pairs, Open vSwitch, a VXLAN overlay, ...). It hands the agent
//! an eBPF object, a table of probes with hook alternatives, and a decoder
//! that turns the records its programs write into [`Observation`]s.
//!
//! Plugin authors implement [`Plugin`] and write one line:
//!
//! ```text
//! vnt_plugin_api::export_plugin!(MyPlugin);
//! ```
//!
//! Everything that crosses the library boundary is in [`abi`]: `#[repr(C)]`
//! data and `extern "C"` function pointers, versioned by
//! [`abi::ABI_MAJOR`]/[`abi::ABI_MINOR`]. The only `unsafe` on the plugin side
//! is in `export.rs`; the host's is in the agent's `plugin_host`.
//!
//! [`wire`] mirrors the C event layout in `ebpf/include/vnt/event.h` that the
//! decoders read.

pub mod abi;
pub mod conformance;
pub mod declare;
mod export;
mod observation;
mod plugin;
pub mod wire;

pub use export::{build_table, entry, entry_error, Exported};
pub use observation::{
    raw_values, value_from_raw, ConnectionObservation, Direction, FieldValue, Flow, IfName,
    IntervalObservation, MetricPoint, Observation, PacketObservation, Value, PACKET_HOST,
};
pub use plugin::{
    Cardinality, DecodeError, FieldKind, FieldSpec, HookKind, HookSpec, HostLog, InitContext,
    KProbeTarget, LogLevel, MetricKind, MetricSpec, Plugin, PluginError, PluginInfo,
    ProbeAlternative, ProbeSpec, TargetError, TcDirection, TcTarget,
};

/// The `zerocopy` this crate reads records with, for plugins that mirror
/// their own C records the same way.
pub use zerocopy;

/// The symbol every plugin exports; it returns `*const abi::PluginTable`,
/// or null when the plugin cannot build its table.
pub const ENTRY_SYMBOL: &str = "vnt_plugin_entry";

/// Optional symbol (since ABI 1.2), `extern "C" fn() -> abi::Str`: why
/// [`ENTRY_SYMBOL`] returned null. `export_plugin!` exports it.
pub const ENTRY_ERROR_SYMBOL: &str = "vnt_plugin_entry_error";

/// Export a [`Plugin`] implementation as this library's plugin table.
///
/// Use exactly once per `cdylib`.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        /// Entry point read by vnt-agent: the plugin's versioned table, or
        /// null when building it panicked (`vnt_plugin_entry_error` says why).
        #[no_mangle]
        pub extern "C" fn vnt_plugin_entry() -> *const $crate::abi::PluginTable {
            static TABLE: ::std::sync::OnceLock<$crate::Exported> = ::std::sync::OnceLock::new();
            $crate::entry::<$plugin>(&TABLE)
        }

        /// Why `vnt_plugin_entry` returned null.
        #[no_mangle]
        pub extern "C" fn vnt_plugin_entry_error() -> $crate::abi::Str {
            $crate::entry_error()
        }
    };
}

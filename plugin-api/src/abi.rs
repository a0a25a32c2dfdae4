//! The C ABI: what crosses between `vnt-agent` and a plugin library.
//!
//! Rules (Falco's plugin rules, which have held for years):
//! - the host reads [`PluginTable::abi_major`], [`PluginTable::abi_minor`]
//!   and [`PluginTable::struct_size`] before anything else, and accepts a
//!   plugin only when the majors are equal and the plugin's minor is not newer
//!   than the host's;
//! - fields are only ever appended, and every append bumps [`ABI_MINOR`];
//! - only `#[repr(C)]` data and `extern "C"` function pointers cross: no
//!   `String`, `Vec`, `Result` or trait objects. Configuration crosses as
//!   JSON bytes, logs as a host callback;
//! - every function the plugin exports catches panics and returns a
//!   [`Status`]; after [`Status::Panicked`] the host disables the plugin.
//!   The entry symbol returns null when building the table panicked, and
//!   [`crate::ENTRY_ERROR_SYMBOL`] then says why (since 1.2);
//! - no `bool` crosses: flags are `u8`/`u32` bits, and every byte a plugin
//!   writes there is a valid value (unknown bits are ignored).
//!
//! # Compatibility: what "older minors keep working" means
//!
//! The host reads `min(plugin's size, host's size)` bytes of every table and
//! record a plugin hands it, and zero-fills the rest; a field appended in
//! minor N is read only from plugins that declare a minor >= N. Sizes come
//! from [`PluginTable::struct_size`], [`Observation::struct_size`], and for
//! the arrays (whose stride is the element size) from
//! [`PluginTable::probe_size`], [`PluginTable::alternative_size`] and
//! [`PluginTable::hook_size`] (since 1.2; a plugin older than 1.2 has the 1.0
//! element sizes, [`PROBE_SIZE_1_0`] and friends). Anything smaller than its
//! 1.0 size is refused.
//!
//! Nothing a plugin hands over is trusted as given: a null pointer with a
//! non-zero length, a string longer than [`MAX_STR_LEN`] or not UTF-8, more
//! than [`MAX_PROBES`] probes, [`MAX_HOOKS`] hooks or [`MAX_ALTERNATIVES`]
//! alternatives per probe, or an eBPF object over [`MAX_BPF_OBJECT_LEN`]
//! disables that plugin with an error naming the field.

use std::ffi::c_void;

/// Major version of this ABI. A plugin with another major is refused.
pub const ABI_MAJOR: u16 = 1;
/// Minor version of this ABI. A plugin with a newer minor is refused.
///
/// - 1.0: first release.
/// - 1.1: [`Probe::flags`] (was `required: bool`, same size and place) gains
///   [`probe_flags::OPT_IN`]. A 1.0 plugin's `required` byte reads as
///   [`probe_flags::REQUIRED`] or nothing, so 1.0 plugins keep working.
/// - 1.2: [`Hook::flags`] (was `terminal: bool`, same size and place; 1 is
///   [`hook_flags::TERMINAL`]); the element sizes [`PluginTable::probe_size`],
///   [`PluginTable::alternative_size`], [`PluginTable::hook_size`] appended
///   to the table, so that probes and hooks can grow too; [`PluginTable::flags`]
///   ([`plugin_flags::TEST_FIXTURE`]);
///   [`crate::ENTRY_ERROR_SYMBOL`]. The host reads short tables and
///   observations of older minors (see the module docs).
/// - 1.3: open observations. A plugin declares its fields
///   ([`PluginTable::fields`], [`FieldSpec`]) and metrics
///   ([`PluginTable::metrics`], [`MetricSpec`]) and may poll on a timer
///   ([`PluginTable::tick`]); an observation carries typed values of its
///   fields ([`Observation::values`]), a TCP sequence number to join by
///   ([`Observation::tcp_seq`], [`observation_flags::HAS_TCP_SEQ`]), and
///   a metric point is an observation of kind [`observation_kind::METRIC`].
pub const ABI_MINOR: u16 = 3;

/// Longest string the host accepts from a plugin (64 KiB).
pub const MAX_STR_LEN: usize = 64 * 1024;
/// Largest eBPF object the host accepts from a plugin (64 MiB).
pub const MAX_BPF_OBJECT_LEN: usize = 64 * 1024 * 1024;
/// Most probes a plugin may declare.
pub const MAX_PROBES: usize = 1024;
/// Most hooks a plugin may declare.
pub const MAX_HOOKS: usize = 1024;
/// Most alternatives one probe may declare.
pub const MAX_ALTERNATIVES: usize = 64;
/// Largest `struct_size` or element size the host accepts (a table of a
/// later minor may be larger than the host's, but not absurdly so).
pub const MAX_STRUCT_SIZE: usize = 64 * 1024;

/// Size of [`PluginTable`] in ABI 1.0 and 1.1: every field up to
/// [`PluginTable::last_error`]. The smallest table the host accepts.
pub const TABLE_SIZE_1_0: usize = 136;
/// Size of [`Probe`] in ABI 1.0 (the stride of a 1.0 or 1.1 probe array).
pub const PROBE_SIZE_1_0: usize = 40;
/// Size of [`ProbeAlternative`] in ABI 1.0.
pub const ALTERNATIVE_SIZE_1_0: usize = 40;
/// Size of [`Hook`] in ABI 1.0.
pub const HOOK_SIZE_1_0: usize = 40;
/// Size of [`Observation`] in ABI 1.0: the smallest the host accepts.
pub const OBSERVATION_SIZE_1_0: usize = 184;
/// Size of [`PluginTable`] in ABI 1.2 (the 1.3 fields follow it).
pub const TABLE_SIZE_1_2: usize = 152;
/// Most fields a plugin may declare.
pub const MAX_FIELDS: usize = 256;
/// Most metrics a plugin may declare.
pub const MAX_METRICS: usize = 256;
/// Most values one observation may carry.
pub const MAX_VALUES: usize = 64;
/// Most labels one metric may have.
pub const MAX_LABELS: usize = 8;
/// Most histogram bucket bounds one metric may have.
pub const MAX_BUCKETS: usize = 64;
/// Longest text value the host takes (longer values make the observation
/// malformed): a field is an attribute, not a payload.
pub const MAX_TEXT_VALUE: usize = 1024;

/// Return code of every exported plugin function.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// The call failed; [`PluginTable::last_error`] says why. The plugin
    /// stays usable (a malformed record, say).
    Error = 1,
    /// The plugin panicked. The host disables it.
    Panicked = 2,
}

impl Status {
    /// Interpret a raw return code; unknown codes are treated as errors.
    pub fn from_raw(code: i32) -> Status {
        match code {
            0 => Status::Ok,
            2 => Status::Panicked,
            _ => Status::Error,
        }
    }
}

/// A borrowed UTF-8 string: pointer and length, not NUL-terminated.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Str {
    /// First byte; may be null when `len` is 0.
    pub ptr: *const u8,
    /// Length in bytes.
    pub len: usize,
}

impl Str {
    /// The empty string.
    pub const EMPTY: Str = Str {
        ptr: std::ptr::null(),
        len: 0,
    };

    /// Borrow a Rust string. The caller keeps `s` alive while the `Str` is used.
    pub fn new(s: &str) -> Str {
        Str {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }
}

/// Borrowed bytes: pointer and length.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Bytes {
    /// First byte; may be null when `len` is 0.
    pub ptr: *const u8,
    /// Length in bytes.
    pub len: usize,
}

impl Bytes {
    /// Borrow a byte slice. The caller keeps `b` alive while the `Bytes` is used.
    pub fn new(b: &[u8]) -> Bytes {
        Bytes {
            ptr: b.as_ptr(),
            len: b.len(),
        }
    }
}

/// Hook kinds a probe alternative can use, in the order the agent usually
/// prefers them.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawHookKind {
    /// BTF-typed raw tracepoint (`tp_btf/<name>`); target: tracepoint name.
    TpBtf = 1,
    /// Raw tracepoint (`raw_tp/<name>`); target: tracepoint name.
    RawTp = 2,
    /// fentry on a kernel function; target: function name.
    FEntry = 3,
    /// kprobe on a kernel function; target: function name.
    KProbe = 4,
    /// TC classifier (clsact); target: `ingress` or `egress`.
    Tc = 5,
    /// uprobe or USDT; target: `binary:symbol`.
    UProbe = 6,
    /// Classic tracepoint; target: `category:name`.
    TracePoint = 7,
}

/// One way to attach a probe.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ProbeAlternative {
    /// A [`RawHookKind`] value.
    pub kind: u32,
    /// Name of the program in the plugin's eBPF object.
    pub program: Str,
    /// What to attach to; its meaning depends on `kind`.
    pub target: Str,
}

/// [`Probe::flags`] bits.
pub mod probe_flags {
    /// The plugin cannot work unless one alternative attaches.
    pub const REQUIRED: u8 = 1 << 0;
    /// Not attached unless the user asks for it by name (`--probes`): a
    /// probe that adds detail at a cost the default set should not pay.
    /// Since ABI 1.1.
    pub const OPT_IN: u8 = 1 << 1;
}

/// A probe: one observation point, with alternatives in preference order.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    /// Probe name, unique within the plugin (`veth_xmit`).
    pub name: Str,
    /// [`probe_flags`] bits; unknown bits are ignored. A `u8`, not a `bool`:
    /// any byte a plugin writes is a valid value here.
    pub flags: u8,
    /// First alternative.
    pub alternatives: *const ProbeAlternative,
    /// Number of alternatives.
    pub alternatives_len: usize,
}

/// [`Hook::flags`] bits.
pub mod hook_flags {
    /// An observation at this hook ends the packet's journey. (1.0 and 1.1
    /// had `terminal: bool` in this byte: `true` is this bit.)
    pub const TERMINAL: u8 = 1 << 0;
}

/// A hook id that appears in the plugin's records and observations.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Hook {
    /// Id carried in `vnt_event_hdr.hook` and [`Observation::hook`].
    pub id: u16,
    /// [`hook_flags`] bits; unknown bits are ignored. A `u8`, not a `bool`
    /// (it was `terminal: bool` before 1.2, same size and place).
    pub flags: u8,
    /// Kernel name of the hook point (`net:net_dev_start_xmit`).
    pub name: Str,
    /// Short label for people (`xmit`).
    pub label: Str,
}

/// Services the host offers a plugin instance. Valid until `destroy`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Host {
    /// `size_of::<Host>()` as the host built it.
    pub struct_size: u32,
    /// Opaque host pointer passed back to the callbacks.
    pub ctx: *mut c_void,
    /// Log a message. `level`: 1 error, 2 warn, 3 info, 4 debug, 5 trace.
    pub log: extern "C" fn(ctx: *mut c_void, level: u32, message: Str),
}

/// Where a decoder delivers observations. Valid during one `decode` call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Sink {
    /// Opaque host pointer passed back to `emit`.
    pub ctx: *mut c_void,
    /// Take one observation; the pointer is valid only during the call.
    pub emit: extern "C" fn(ctx: *mut c_void, observation: *const Observation),
}

/// [`Observation::kind`] values.
pub mod observation_kind {
    /// A packet seen at a hook (a hop).
    pub const PACKET: u32 = 1;
    /// A step nested inside a hop, with a start and an end.
    pub const SUBSTEP: u32 = 2;
    /// A CPU interval not tied to a packet (a vCPU descheduled from t1 to t2).
    pub const INTERVAL: u32 = 3;
    /// Per-connection counters.
    pub const CONNECTION: u32 = 4;
    /// A point of a plugin-declared metric (since 1.3):
    /// [`Observation::metric`], [`Observation::metric_value`], label values
    /// in [`Observation::values`].
    pub const METRIC: u32 = 5;
}

/// [`Observation::flags`] bits (since 1.3).
pub mod observation_flags {
    /// [`super::Observation::tcp_seq`] holds the first sequence number of the
    /// TCP segment. A packet observation with packet id 0 and this flag is
    /// joined to the journey of the packet of the same flow and sequence
    /// number (a retransmission seen where the packet id cannot be computed).
    pub const HAS_TCP_SEQ: u32 = 1 << 0;
}

/// [`FieldSpec::kind`] and [`FieldValue::kind`] values (since 1.3).
pub mod field_kind {
    /// Unsigned integer, in [`super::FieldValue::num`].
    pub const U64: u8 = 1;
    /// Signed integer, two's complement in [`super::FieldValue::num`].
    pub const I64: u8 = 2;
    /// IEEE double, its bits in [`super::FieldValue::num`].
    pub const F64: u8 = 3;
    /// UTF-8 text, in [`super::FieldValue::text`].
    pub const STR: u8 = 4;
}

/// [`FieldSpec::cardinality`] values (since 1.3).
pub mod cardinality {
    /// Few distinct values (a state, a reason, a device kind): may label a
    /// metric.
    pub const LOW: u8 = 1;
    /// Many distinct values (a sequence number, an address): never a
    /// metric label.
    pub const HIGH: u8 = 2;
}

/// A field a plugin's observations may carry (since 1.3). Its id is its
/// index in [`PluginTable::fields`].
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct FieldSpec {
    /// Name, unique within the plugin: lowercase ASCII letters, digits, `_`
    /// and `.` (`tcp.state`).
    pub name: Str,
    /// Unit (UCUM, as OpenTelemetry uses: `By`, `ns`, `{segment}`), or empty.
    pub unit: Str,
    /// OpenTelemetry semantic-convention attribute key when one exists
    /// (`network.transport`), else empty: the key is then
    /// `vnt.<plugin>.<name>`.
    pub otel_key: Str,
    /// One line for people.
    pub description: Str,
    /// A [`field_kind`] value.
    pub kind: u8,
    /// A [`cardinality`] value.
    pub cardinality: u8,
    /// Zero.
    pub _reserved: [u8; 6],
}

/// [`MetricSpec::kind`] values (since 1.3).
pub mod metric_kind {
    /// A monotonic sum: points are increments.
    pub const COUNTER: u8 = 1;
    /// The latest value.
    pub const GAUGE: u8 = 2;
    /// A distribution: points are samples.
    pub const HISTOGRAM: u8 = 3;
}

/// A metric a plugin records (since 1.3). Its id is its index in
/// [`PluginTable::metrics`]. Exported as `vnt.<plugin>.<name>`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct MetricSpec {
    /// Name, unique within the plugin (same alphabet as field names).
    pub name: Str,
    /// Unit (UCUM), or empty.
    pub unit: Str,
    /// One line for people.
    pub description: Str,
    /// A [`metric_kind`] value.
    pub kind: u8,
    /// Zero.
    pub _reserved: [u8; 7],
    /// Field ids whose values label the metric; each must be a
    /// [`cardinality::LOW`] field.
    pub labels: *const u16,
    /// Number of labels, at most [`MAX_LABELS`].
    pub labels_len: usize,
    /// Histograms: bucket upper bounds, strictly increasing; empty for the
    /// host's default bounds.
    pub buckets: *const f64,
    /// Number of bounds, at most [`MAX_BUCKETS`].
    pub buckets_len: usize,
}

/// A typed value of a declared field (since 1.3). Valid during the `emit`
/// call that carries it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct FieldValue {
    /// Field id (index in [`PluginTable::fields`]).
    pub field: u16,
    /// A [`field_kind`] value; must equal the field's declared kind.
    pub kind: u8,
    /// Zero.
    pub _reserved: [u8; 5],
    /// The number, for the numeric kinds.
    pub num: u64,
    /// The text, for [`field_kind::STR`].
    pub text: Str,
}

/// One observation, flattened for the boundary: `kind` says which fields
/// mean something; the others are zero. No pointers, so the host copies it
/// without trusting the plugin's memory beyond the call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Observation {
    /// `size_of::<Observation>()` as the plugin built it.
    pub struct_size: u32,
    /// An [`observation_kind`] value.
    pub kind: u32,
    /// Hook id (see [`Hook`]).
    pub hook: u16,
    /// For a substep: the hook id of the hop it is nested in.
    pub parent_hook: u16,
    /// CPU the event happened on.
    pub cpu: u32,
    /// Start, CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    /// End for substeps and intervals, CLOCK_MONOTONIC nanoseconds; else 0.
    pub end_ns: u64,
    /// Packet id (hash of the packet's invariant header fields).
    pub pkt_id: u64,
    /// skb address: a hint, meaningful on one host only.
    pub skb: u64,
    /// Source address, network order; IPv4 in the first 4 bytes.
    pub saddr: [u8; 16],
    /// Destination address, network order.
    pub daddr: [u8; 16],
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// 4, 6, or 0 when not IP.
    pub family: u8,
    /// IP protocol number.
    pub proto: u8,
    /// 0 none, 1 transmit, 2 receive.
    pub direction: u8,
    /// 1 when a packet observation ends the journey.
    pub terminal: u8,
    /// Interface index.
    pub ifindex: u32,
    /// Network namespace inode.
    pub netns: u32,
    /// Interface name, NUL-padded.
    pub ifname: [u8; 16],
    /// Packet length in bytes (skb->len).
    pub len: u32,
    /// Kernel drop reason (`enum skb_drop_reason`); 0 when not dropped.
    pub drop_reason: u32,
    /// Process id, where the plugin knows one.
    pub pid: u32,
    /// Reserved, zero.
    pub _reserved: u32,
    /// Connection: bytes sent.
    pub bytes_sent: u64,
    /// Connection: bytes received.
    pub bytes_received: u64,
    /// Connection: segments sent.
    pub packets_sent: u64,
    /// Connection: segments received.
    pub packets_received: u64,
    /// Connection: retransmitted segments.
    pub retransmits: u64,
    /// Connection: smoothed RTT, microseconds.
    pub srtt_us: u32,
    /// Connection: RTT variance, microseconds.
    pub rttvar_us: u32,
    /// A plugin-defined code refining the kind (interval: 1 run-queue wait,
    /// 2 steal; substep: plugin's own).
    pub detail: u32,
    /// Reserved, zero.
    pub _reserved2: u32,
    /// Values of declared fields (since 1.3); for a metric point, its label
    /// values. Valid during the `emit` call.
    pub values: *const FieldValue,
    /// Number of values, at most [`MAX_VALUES`].
    pub values_len: usize,
    /// First TCP sequence number of the segment, with
    /// [`observation_flags::HAS_TCP_SEQ`] (since 1.3).
    pub tcp_seq: u32,
    /// [`observation_flags`] bits (since 1.3).
    pub flags: u32,
    /// Metric points: the metric id (index in [`PluginTable::metrics`]).
    pub metric: u16,
    /// Zero.
    pub _reserved3: [u8; 6],
    /// Metric points: the value (an increment, a gauge reading, a sample).
    pub metric_value: f64,
}

impl Default for Observation {
    fn default() -> Observation {
        Observation {
            struct_size: 0,
            kind: 0,
            hook: 0,
            parent_hook: 0,
            cpu: 0,
            ts_ns: 0,
            end_ns: 0,
            pkt_id: 0,
            skb: 0,
            saddr: [0; 16],
            daddr: [0; 16],
            sport: 0,
            dport: 0,
            family: 0,
            proto: 0,
            direction: 0,
            terminal: 0,
            ifindex: 0,
            netns: 0,
            ifname: [0; 16],
            len: 0,
            drop_reason: 0,
            pid: 0,
            _reserved: 0,
            bytes_sent: 0,
            bytes_received: 0,
            packets_sent: 0,
            packets_received: 0,
            retransmits: 0,
            srtt_us: 0,
            rttvar_us: 0,
            detail: 0,
            _reserved2: 0,
            values: std::ptr::null(),
            values_len: 0,
            tcp_seq: 0,
            flags: 0,
            metric: 0,
            _reserved3: [0; 6],
            metric_value: 0.0,
        }
    }
}

/// The table a plugin's [`crate::ENTRY_SYMBOL`] returns. Static for the
/// library's lifetime.
#[repr(C)]
#[derive(Debug)]
pub struct PluginTable {
    /// Must equal the host's [`ABI_MAJOR`].
    pub abi_major: u16,
    /// Must not be newer than the host's [`ABI_MINOR`].
    pub abi_minor: u16,
    /// `size_of::<PluginTable>()` as the plugin built it.
    pub struct_size: u32,
    /// Plugin name (`veth`), as used in `--plugins`.
    pub name: Str,
    /// Plugin version (semver).
    pub version: Str,
    /// One line for `vnt-agent plugins` and errors.
    pub description: Str,
    /// The eBPF ELF object (clang-built, CO-RE).
    pub bpf_object: Bytes,
    /// First probe.
    pub probes: *const Probe,
    /// Number of probes.
    pub probes_len: usize,
    /// First hook id description.
    pub hooks: *const Hook,
    /// Number of hooks.
    pub hooks_len: usize,
    /// Create an instance from JSON config; writes it to `*out`.
    pub create: extern "C" fn(config_json: Bytes, host: *const Host, out: *mut *mut c_void) -> i32,
    /// Decode one ring-buffer record into zero or more observations.
    pub decode: extern "C" fn(instance: *mut c_void, record: Bytes, sink: *const Sink) -> i32,
    /// Destroy an instance made by `create`.
    pub destroy: extern "C" fn(instance: *mut c_void),
    /// The last error of `instance` (or of `create` when null). Valid until
    /// the next call on that instance.
    pub last_error: extern "C" fn(instance: *mut c_void) -> Str,
    /// `size_of::<Probe>()` as the plugin built it: the stride of `probes`.
    /// Since 1.2; older plugins have [`PROBE_SIZE_1_0`].
    pub probe_size: u32,
    /// `size_of::<ProbeAlternative>()` as the plugin built it. Since 1.2;
    /// older plugins have [`ALTERNATIVE_SIZE_1_0`].
    pub alternative_size: u32,
    /// `size_of::<Hook>()` as the plugin built it. Since 1.2; older plugins
    /// have [`HOOK_SIZE_1_0`].
    pub hook_size: u32,
    /// [`plugin_flags`] bits. Since 1.2; unknown bits are ignored.
    pub flags: u32,
    /// First declared field (since 1.3).
    pub fields: *const FieldSpec,
    /// Number of fields, at most [`MAX_FIELDS`].
    pub fields_len: usize,
    /// First declared metric (since 1.3).
    pub metrics: *const MetricSpec,
    /// Number of metrics, at most [`MAX_METRICS`].
    pub metrics_len: usize,
    /// `size_of::<FieldSpec>()` as the plugin built it (since 1.3).
    pub field_size: u32,
    /// `size_of::<MetricSpec>()` as the plugin built it (since 1.3).
    pub metric_size: u32,
    /// Called every [`PluginTable::tick_interval_ms`] on the thread that
    /// decodes, for plugins that poll (connection tables, per-CPU
    /// counters); emits through `sink` like `decode`. Null: no timer.
    pub tick: Option<extern "C" fn(instance: *mut c_void, sink: *const Sink) -> i32>,
    /// Period of `tick` in milliseconds (since 1.3); 0: no timer.
    pub tick_interval_ms: u32,
    /// Zero.
    pub _reserved: u32,
}

/// [`PluginTable::flags`] bits.
pub mod plugin_flags {
    /// A test fixture, not a product: `vnt-agent plugins` and `check` list it
    /// only with `--all`; it loads when asked for like any plugin.
    pub const TEST_FIXTURE: u32 = 1 << 0;
    /// The plugin emits observations joined by TCP sequence number
    /// ([`super::observation_flags::HAS_TCP_SEQ`] with packet id 0): the
    /// host then indexes packets by flow and sequence number, which it
    /// does not do otherwise (it costs every TCP hop). Since 1.3.
    pub const JOINS_BY_TCP_SEQ: u32 = 1 << 1;
}

/// Size of the fixed header every version of the table starts with.
pub const TABLE_HEADER_SIZE: usize = 8;

/// Check a plugin's declared ABI against this host's.
pub fn check_abi(major: u16, minor: u16) -> Result<(), String> {
    if major != ABI_MAJOR {
        return Err(format!(
            "plugin ABI {major}.{minor} is incompatible with the agent's ABI {ABI_MAJOR}.{ABI_MINOR} (majors differ)"
        ));
    }
    if minor > ABI_MINOR {
        return Err(format!(
            "plugin ABI {major}.{minor} is newer than the agent's ABI {ABI_MAJOR}.{ABI_MINOR}; upgrade the agent"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_major_older_or_equal_minor_is_accepted() {
        assert!(check_abi(ABI_MAJOR, ABI_MINOR).is_ok());
        // An older minor (a plugin built against an earlier 1.x) is accepted.
        assert!(check_abi(ABI_MAJOR, ABI_MINOR.saturating_sub(1)).is_ok());
        assert!(check_abi(ABI_MAJOR, 0).is_ok());
    }

    #[test]
    fn other_major_is_refused_naming_both_versions() {
        let err = check_abi(ABI_MAJOR + 1, 0).unwrap_err();
        assert!(err.contains(&format!("{}.0", ABI_MAJOR + 1)), "{err}");
        assert!(err.contains(&format!("{ABI_MAJOR}.{ABI_MINOR}")), "{err}");
        assert!(check_abi(0, 0).is_err());
    }

    #[test]
    fn newer_minor_is_refused() {
        let err = check_abi(ABI_MAJOR, ABI_MINOR + 1).unwrap_err();
        assert!(err.contains("newer"), "{err}");
    }

    /// ABI 1.1 turned 1.0's `required: bool` into `flags: u8` in place: a 1.0
    /// plugin's probe table must read the same (true = 1 = REQUIRED).
    #[test]
    fn probe_flags_sit_where_1_0_had_required() {
        assert_eq!(std::mem::offset_of!(Probe, flags), 16);
        assert_eq!(std::mem::size_of::<Probe>(), 40);
        assert_eq!(true as u8, probe_flags::REQUIRED);
        assert_eq!(false as u8 & probe_flags::OPT_IN, 0);
    }

    /// The 1.0 sizes the host falls back to must be what 1.0 really was:
    /// the current layouts only ever append to them.
    #[test]
    fn sizes_of_1_0_are_prefixes_of_today() {
        assert_eq!(
            std::mem::offset_of!(PluginTable, probe_size),
            TABLE_SIZE_1_0
        );
        assert_eq!(std::mem::offset_of!(PluginTable, fields), TABLE_SIZE_1_2);
        assert_eq!(TABLE_SIZE_1_2, TABLE_SIZE_1_0 + 16);
        assert_eq!(
            std::mem::offset_of!(Observation, values),
            OBSERVATION_SIZE_1_0
        );
        assert_eq!(
            std::mem::size_of::<ProbeAlternative>(),
            ALTERNATIVE_SIZE_1_0
        );
        assert_eq!(std::mem::size_of::<Hook>(), HOOK_SIZE_1_0);
        assert_eq!(
            std::mem::size_of::<Observation>(),
            OBSERVATION_SIZE_1_0 + 40
        );
        assert_eq!(std::mem::size_of::<FieldValue>(), 32);
        assert_eq!(std::mem::offset_of!(Hook, flags), 2);
        assert_eq!(true as u8, hook_flags::TERMINAL);
    }

    #[test]
    fn table_header_is_stable() {
        assert_eq!(std::mem::offset_of!(PluginTable, abi_major), 0);
        assert_eq!(std::mem::offset_of!(PluginTable, abi_minor), 2);
        assert_eq!(std::mem::offset_of!(PluginTable, struct_size), 4);
        assert_eq!(std::mem::offset_of!(PluginTable, name), TABLE_HEADER_SIZE);
    }
}

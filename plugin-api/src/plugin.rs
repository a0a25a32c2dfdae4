//! The safe side a plugin author implements.

use std::ffi::c_void;
use std::fmt;

use crate::abi;
use crate::observation::Observation;

/// How a probe alternative attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    /// BTF-typed raw tracepoint; target is the tracepoint name (`net_dev_start_xmit`).
    TpBtf,
    /// Raw tracepoint; target is the tracepoint name.
    RawTp,
    /// fentry; target is a kernel function.
    FEntry,
    /// kprobe; target is a kernel function.
    KProbe,
    /// TC clsact classifier; target is `ingress` or `egress`.
    Tc,
    /// uprobe or USDT; target is `binary:symbol`.
    UProbe,
    /// Classic tracepoint; target is `category:name`.
    TracePoint,
}

impl HookKind {
    /// The raw value used in [`abi::ProbeAlternative::kind`].
    pub fn to_raw(self) -> u32 {
        (match self {
            HookKind::TpBtf => abi::RawHookKind::TpBtf,
            HookKind::RawTp => abi::RawHookKind::RawTp,
            HookKind::FEntry => abi::RawHookKind::FEntry,
            HookKind::KProbe => abi::RawHookKind::KProbe,
            HookKind::Tc => abi::RawHookKind::Tc,
            HookKind::UProbe => abi::RawHookKind::UProbe,
            HookKind::TracePoint => abi::RawHookKind::TracePoint,
        }) as u32
    }

    /// Parse a raw kind; `None` for kinds this ABI does not know.
    pub fn from_raw(v: u32) -> Option<HookKind> {
        Some(match v {
            1 => HookKind::TpBtf,
            2 => HookKind::RawTp,
            3 => HookKind::FEntry,
            4 => HookKind::KProbe,
            5 => HookKind::Tc,
            6 => HookKind::UProbe,
            7 => HookKind::TracePoint,
            _ => return None,
        })
    }

    /// Name as in ELF section prefixes (`tp_btf`, `raw_tp`, `fentry`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::TpBtf => "tp_btf",
            HookKind::RawTp => "raw_tp",
            HookKind::FEntry => "fentry",
            HookKind::KProbe => "kprobe",
            HookKind::Tc => "tc",
            HookKind::UProbe => "uprobe",
            HookKind::TracePoint => "tracepoint",
        }
    }
}

impl fmt::Display for HookKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One way to attach a probe: a program of the plugin's object and its target.
#[derive(Debug, Clone, Copy)]
pub struct ProbeAlternative {
    /// Hook kind.
    pub kind: HookKind,
    /// Program name in the eBPF object.
    pub program: &'static str,
    /// Attach target; meaning depends on `kind`.
    pub target: &'static str,
}

/// A probe: alternatives in preference order; the agent uses the first one
/// the running kernel supports.
#[derive(Debug, Clone, Copy)]
pub struct ProbeSpec {
    /// Unique within the plugin.
    pub name: &'static str,
    /// The plugin is useless without it: failing to attach it fails the plugin.
    pub required: bool,
    /// Attached only when the user names it (`--probes NAME` or `all`): for
    /// probes that add detail at a cost the default set should not pay. The
    /// default set must still give whole journeys.
    pub opt_in: bool,
    /// In preference order.
    pub alternatives: &'static [ProbeAlternative],
}

/// A hook id that appears in the plugin's records.
#[derive(Debug, Clone, Copy)]
pub struct HookSpec {
    /// The id in `vnt_event_hdr.hook`.
    pub id: u16,
    /// Kernel name of the hook point (`net:net_dev_start_xmit`).
    pub name: &'static str,
    /// Short label for terminals and span names (`xmit`).
    pub label: &'static str,
    /// An observation here ends the journey.
    pub terminal: bool,
}

/// Type of a declared field's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// Unsigned integer.
    U64,
    /// Signed integer.
    I64,
    /// Floating point.
    F64,
    /// Text.
    Str,
}

impl FieldKind {
    /// The raw value ([`abi::field_kind`]).
    pub fn to_raw(self) -> u8 {
        match self {
            FieldKind::U64 => abi::field_kind::U64,
            FieldKind::I64 => abi::field_kind::I64,
            FieldKind::F64 => abi::field_kind::F64,
            FieldKind::Str => abi::field_kind::STR,
        }
    }

    /// Parse a raw kind; `None` for kinds this ABI does not know.
    pub fn from_raw(v: u8) -> Option<FieldKind> {
        Some(match v {
            abi::field_kind::U64 => FieldKind::U64,
            abi::field_kind::I64 => FieldKind::I64,
            abi::field_kind::F64 => FieldKind::F64,
            abi::field_kind::STR => FieldKind::Str,
            _ => return None,
        })
    }
}

/// How many distinct values a field takes: only low-cardinality fields may
/// label a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cardinality {
    /// Few distinct values (a state, a reason).
    #[default]
    Low,
    /// Many (a sequence number, an address).
    High,
}

/// A field the plugin's observations may carry. Its id is its index in
/// [`PluginInfo::fields`].
#[derive(Debug, Clone, Copy)]
pub struct FieldSpec {
    /// Unique within the plugin: lowercase ASCII letters, digits, `_`, `.`.
    pub name: &'static str,
    /// Value type.
    pub kind: FieldKind,
    /// UCUM unit (`By`, `ns`, `{segment}`), or "".
    pub unit: &'static str,
    /// OpenTelemetry semantic-convention key, or "" for `vnt.<plugin>.<name>`.
    pub otel_key: &'static str,
    /// Low fields may label metrics.
    pub cardinality: Cardinality,
    /// One line for people.
    pub description: &'static str,
}

/// Kind of a declared metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Monotonic sum; points are increments.
    Counter,
    /// Latest value.
    Gauge,
    /// Distribution; points are samples.
    Histogram,
}

impl MetricKind {
    /// The raw value ([`abi::metric_kind`]).
    pub fn to_raw(self) -> u8 {
        match self {
            MetricKind::Counter => abi::metric_kind::COUNTER,
            MetricKind::Gauge => abi::metric_kind::GAUGE,
            MetricKind::Histogram => abi::metric_kind::HISTOGRAM,
        }
    }

    /// Parse a raw kind; `None` for kinds this ABI does not know.
    pub fn from_raw(v: u8) -> Option<MetricKind> {
        Some(match v {
            abi::metric_kind::COUNTER => MetricKind::Counter,
            abi::metric_kind::GAUGE => MetricKind::Gauge,
            abi::metric_kind::HISTOGRAM => MetricKind::Histogram,
            _ => return None,
        })
    }
}

/// A metric the plugin records, exported as `vnt.<plugin>.<name>`. Its id
/// is its index in [`PluginInfo::metrics`].
#[derive(Debug, Clone, Copy)]
pub struct MetricSpec {
    /// Unique within the plugin (same alphabet as field names).
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// UCUM unit, or "".
    pub unit: &'static str,
    /// One line for people.
    pub description: &'static str,
    /// Ids of the low-cardinality fields whose values label it.
    pub labels: &'static [u16],
    /// Histogram bucket bounds, strictly increasing ("" for the host's).
    pub buckets: &'static [f64],
}

/// Static facts about a plugin.
#[derive(Debug, Clone, Copy, Default)]
pub struct PluginInfo {
    /// Name used in `--plugins` (`veth`).
    pub name: &'static str,
    /// Semver of the plugin.
    pub version: &'static str,
    /// One line.
    pub description: &'static str,
    /// The clang-built eBPF object.
    pub bpf_object: &'static [u8],
    /// Probes.
    pub probes: &'static [ProbeSpec],
    /// Hook ids.
    pub hooks: &'static [HookSpec],
    /// Fields its observations carry (ids are indexes).
    pub fields: &'static [FieldSpec],
    /// Metrics it records (ids are indexes).
    pub metrics: &'static [MetricSpec],
    /// Call [`Plugin::tick`] this often (milliseconds); 0 never.
    pub tick_interval_ms: u32,
    /// It emits packet observations without a packet id but with a TCP
    /// sequence number, to be joined to their packet's journey: the agent
    /// indexes packets by flow and sequence number only when a loaded
    /// plugin says so.
    pub joins_by_tcp_seq: bool,
}

/// Log levels of the host callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Something failed.
    Error = 1,
    /// Something looks wrong.
    Warn = 2,
    /// Lifecycle facts.
    Info = 3,
    /// Details.
    Debug = 4,
    /// Per-event details.
    Trace = 5,
}

/// Logs through the host. Cheap to copy; valid for the instance's lifetime.
#[derive(Debug, Clone, Copy)]
pub struct HostLog {
    pub(crate) ctx: *mut c_void,
    pub(crate) log: Option<extern "C" fn(*mut c_void, u32, abi::Str)>,
}

// SAFETY: the host guarantees its log callback and context may be used from
// any thread for the instance's lifetime (documented on `abi::Host`).
unsafe impl Send for HostLog {}

impl HostLog {
    /// A logger that drops everything (unit tests).
    pub fn discard() -> HostLog {
        HostLog {
            ctx: std::ptr::null_mut(),
            log: None,
        }
    }

    /// Log one message.
    pub fn log(&self, level: LogLevel, message: &str) {
        if let Some(log) = self.log {
            log(self.ctx, level as u32, abi::Str::new(message));
        }
    }
}

/// What `Plugin::new` receives.
#[derive(Debug)]
pub struct InitContext {
    /// The plugin's table from the agent's config, `[plugin.<name>]` (singular;
    /// `[plugins.<name>]` is refused, naming this spelling), or null.
    pub config: serde_json::Value,
    /// Logs through the host.
    pub log: HostLog,
}

/// A plugin could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginError(pub String);

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PluginError {}

/// A record could not be decoded. The host counts it and goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

/// A vnt plugin. Implement it, then `export_plugin!(YourType);`.
pub trait Plugin: Sized + Send + 'static {
    /// A test fixture, not a product: `vnt-agent plugins` and `check` list it
    /// only with `--all`. Leave it `false` in a real plugin.
    const TEST_FIXTURE: bool = false;

    /// Static description, eBPF object, probes and hooks.
    fn info() -> PluginInfo;

    /// Create an instance. `ctx.config` is the plugin's config table.
    fn new(ctx: InitContext) -> Result<Self, PluginError>;

    /// Decode one ring-buffer record, calling `emit` for each observation.
    /// Must not panic on malformed input: return a [`DecodeError`].
    fn decode(
        &mut self,
        record: &[u8],
        emit: &mut dyn FnMut(&Observation),
    ) -> Result<(), DecodeError>;

    /// Called every [`PluginInfo::tick_interval_ms`], on the decoding
    /// thread, for plugins that poll (connection tables, per-CPU counters).
    fn tick(&mut self, emit: &mut dyn FnMut(&Observation)) -> Result<(), DecodeError> {
        let _ = emit;
        Ok(())
    }
}

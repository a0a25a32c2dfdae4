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
    /// kprobe; target is a kernel function, or `MODULE:function` for a
    /// function of a loadable module (`vxlan:vxlan_xmit`,
    /// `openvswitch:ovs_vport_receive`; see [`KProbeTarget`]). With the
    /// module named, a module that is not loaded yet is waited for: the
    /// probe attaches when it loads, and again after a reload.
    KProbe,
    /// TC classifier (tcx link, or a netlink filter on a `clsact` qdisc);
    /// target is a direction, optionally followed by the devices the plugin
    /// chooses (grammar and meaning in [`TcTarget`], docs/attach-points.md):
    ///
    /// - `ingress` / `egress`: the interfaces the user's `dev` filter names;
    /// - `ingress kind=vxlan`: every device of that kind (`IFLA_INFO_KIND`),
    ///   also those created after the agent started, in every network
    ///   namespace the filter covers; released when the device goes;
    /// - `egress name=flannel.1`, `ingress name=vx*`: devices by name or glob;
    /// - `ingress kind=veth name=cali*`: both must hold.
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
    /// Attach target; meaning depends on `kind` (see each [`HookKind`]).
    /// For [`HookKind::Tc`] it is a [`TcTarget`]: `ingress` or `egress`, then
    /// optional `kind=KIND` and `name=PATTERN` selectors, e.g.
    /// `"ingress kind=vxlan"`. The host parses it with [`TcTarget::parse`]
    /// and refuses a malformed one with that function's error.
    pub target: &'static str,
}

/// Direction of a TC program on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcDirection {
    /// Packets the device receives (`clsact` ingress, `BPF_TCX_INGRESS`).
    Ingress,
    /// Packets the device transmits (`clsact` egress, `BPF_TCX_EGRESS`).
    Egress,
}

impl TcDirection {
    /// `ingress` or `egress`.
    pub fn as_str(self) -> &'static str {
        match self {
            TcDirection::Ingress => "ingress",
            TcDirection::Egress => "egress",
        }
    }
}

/// A [`HookKind::Tc`] alternative's target, parsed.
///
/// ```text
/// target   = direction *( " " selector )
/// direction = "ingress" | "egress"
/// selector = "kind=" KIND          ; the device's IFLA_INFO_KIND: vxlan, veth, bridge,
///                                  ; openvswitch, geneve, tun, ...
///          | "name=" PATTERN       ; an interface name; `*` matches any run of
///                                  ; characters and `?` one character
/// ```
///
/// Without selectors the program goes on the interfaces named by the user's
/// `dev` filter (as before ABI 1.3, so old plugins keep their meaning). With
/// selectors the plugin chooses its devices: the host attaches the program to
/// every device that matches all selectors (and the `dev` filter, when the
/// user gives one), in every network namespace the user's filter covers,
/// including devices and named namespaces that appear while the agent runs,
/// and releases it when the device goes. Each key may appear once.
///
/// ```
/// use vnt_plugin_api::{TcDirection, TcTarget};
/// let t = TcTarget::parse("ingress kind=vxlan").unwrap();
/// assert_eq!(t.direction, TcDirection::Ingress);
/// assert!(t.matches("vx0", Some("vxlan")) && !t.matches("eth0", Some("veth")));
/// assert!(TcTarget::parse("ingress kind=").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcTarget {
    /// Ingress or egress.
    pub direction: TcDirection,
    /// Only devices of this kind (`IFLA_INFO_KIND`; devices without one,
    /// such as `lo` or a physical NIC, never match a kind).
    pub kind: Option<String>,
    /// Only devices whose name matches this pattern (`*`, `?` wildcards).
    pub name: Option<String>,
}

/// A malformed [`TcTarget`] or [`KProbeTarget`]: the message names the target and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetError(pub String);

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TargetError {}

/// Longest interface name (`IFNAMSIZ` - 1).
const IFNAME_MAX: usize = 15;

impl TcTarget {
    /// Parse a target (grammar in the type's docs).
    pub fn parse(text: &str) -> Result<TcTarget, TargetError> {
        let bad = |why: String| {
            TargetError(format!(
                "TC target `{text}`: {why} (expected `ingress` or `egress`, then optional \
                 `kind=KIND` and `name=PATTERN`, e.g. `ingress kind=vxlan`)"
            ))
        };
        let mut words = text.split_whitespace();
        let direction = match words.next() {
            Some("ingress") => TcDirection::Ingress,
            Some("egress") => TcDirection::Egress,
            Some(other) => return Err(bad(format!("`{other}` is not a direction"))),
            None => return Err(bad("empty".into())),
        };
        let mut t = TcTarget {
            direction,
            kind: None,
            name: None,
        };
        for word in words {
            let Some((key, value)) = word.split_once('=') else {
                return Err(bad(format!("`{word}` is not KEY=VALUE")));
            };
            let slot = match key {
                "kind" => {
                    if value.is_empty()
                        || !value
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                    {
                        return Err(bad(format!(
                            "`{value}` is not a device kind (letters, digits, `_`, `-`)"
                        )));
                    }
                    &mut t.kind
                }
                "name" => {
                    let wild = value.contains(['*', '?']);
                    if value.is_empty()
                        || value.contains(['/', ':', '='])
                        || (!wild && value.len() > IFNAME_MAX)
                    {
                        return Err(bad(format!(
                            "`{value}` is not an interface name or pattern (at most \
                             {IFNAME_MAX} bytes, no `/`, `:` or `=`)"
                        )));
                    }
                    &mut t.name
                }
                other => {
                    return Err(bad(format!(
                        "unknown selector `{other}=` (known: `kind=`, `name=`)"
                    )))
                }
            };
            if slot.is_some() {
                return Err(bad(format!("`{key}=` given twice")));
            }
            *slot = Some(value.to_string());
        }
        Ok(t)
    }

    /// Whether the plugin chooses its devices (any selector), rather than
    /// taking those of the user's `dev` filter.
    pub fn chooses_devices(&self) -> bool {
        self.kind.is_some() || self.name.is_some()
    }

    /// Whether a device with this name and kind (`None`: no
    /// `IFLA_INFO_KIND`) is one of this target's devices.
    pub fn matches(&self, ifname: &str, kind: Option<&str>) -> bool {
        self.kind.as_deref().is_none_or(|k| kind == Some(k))
            && self
                .name
                .as_deref()
                .is_none_or(|p| glob(p.as_bytes(), ifname.as_bytes()))
    }
}

impl fmt::Display for TcTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.direction.as_str())?;
        if let Some(k) = &self.kind {
            write!(f, " kind={k}")?;
        }
        if let Some(n) = &self.name {
            write!(f, " name={n}")?;
        }
        Ok(())
    }
}

/// A [`HookKind::KProbe`] alternative's target, parsed: `function` or
/// `MODULE:function`.
///
/// Naming the module says where the function lives when it is not in the
/// running kernel yet: the host then waits for the module (kobject uevents)
/// instead of failing, reports that in `vnt-agent check`, and relocates the
/// object's CO-RE reads against that module's BTF as well as vmlinux's
/// (docs/attach-points.md).
///
/// ```
/// use vnt_plugin_api::KProbeTarget;
/// let t = KProbeTarget::parse("vxlan:vxlan_xmit").unwrap();
/// assert_eq!((t.module.as_deref(), t.function.as_str()), (Some("vxlan"), "vxlan_xmit"));
/// assert_eq!(KProbeTarget::parse("veth_xmit").unwrap().module, None);
/// assert!(KProbeTarget::parse("vxlan:").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KProbeTarget {
    /// The module the function is in (`None`: vmlinux, or unknown).
    pub module: Option<String>,
    /// The function.
    pub function: String,
}

impl KProbeTarget {
    /// Parse `function` or `MODULE:function`.
    pub fn parse(text: &str) -> Result<KProbeTarget, TargetError> {
        let ident = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        };
        let (module, function) = match text.split_once(':') {
            Some((m, f)) => (Some(m), f),
            None => (None, text),
        };
        if !ident(function) || module.is_some_and(|m| !ident(m)) {
            return Err(TargetError(format!(
                "kprobe target `{text}` is not `function` or `MODULE:function` \
                 (e.g. `veth_xmit`, `vxlan:vxlan_xmit`)"
            )));
        }
        Ok(KProbeTarget {
            module: module.map(str::to_string),
            function: function.to_string(),
        })
    }
}

/// `*` matches any run of bytes, `?` one byte, anything else itself.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and the text position it currently covers up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_direction_takes_the_dev_filters_interfaces() {
        let t = TcTarget::parse("egress").unwrap();
        assert_eq!(t.direction, TcDirection::Egress);
        assert!(!t.chooses_devices());
        assert_eq!(t.to_string(), "egress");
    }

    #[test]
    fn selectors_choose_devices_by_kind_and_name() {
        let t = TcTarget::parse("ingress  kind=vxlan name=vx*").unwrap();
        assert!(t.chooses_devices());
        assert!(t.matches("vx0", Some("vxlan")));
        assert!(!t.matches("vx0", Some("veth")));
        assert!(!t.matches("flannel.1", Some("vxlan")));
        assert!(!t.matches("vx0", None));
        assert_eq!(t.to_string(), "ingress kind=vxlan name=vx*");
        let n = TcTarget::parse("egress name=flannel.1").unwrap();
        assert!(n.matches("flannel.1", Some("vxlan")) && n.matches("flannel.1", None));
        assert!(!n.matches("flannel.10", None));
    }

    #[test]
    fn name_patterns_are_globs() {
        for (p, t, want) in [
            ("*", "", true),
            ("veth*", "veth0", true),
            ("veth*", "vet", false),
            ("*-h?", "vd7060-h1", true),
            ("*-h?", "vd7060-h12", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("flannel.1", "flannel.1", true),
        ] {
            assert_eq!(glob(p.as_bytes(), t.as_bytes()), want, "{p} vs {t}");
        }
    }

    #[test]
    fn bad_targets_say_what_is_wrong() {
        for (target, says) in [
            ("", "empty"),
            ("sideways", "`sideways` is not a direction"),
            ("ingress vxlan", "`vxlan` is not KEY=VALUE"),
            ("ingress kind=", "is not a device kind"),
            ("ingress kind=vx lan", "`lan` is not KEY=VALUE"),
            ("ingress type=vxlan", "unknown selector `type=`"),
            ("ingress kind=vxlan kind=veth", "`kind=` given twice"),
            ("ingress name=a/b", "not an interface name"),
            ("ingress name=abcdefghijklmnop", "at most 15 bytes"),
        ] {
            let e = TcTarget::parse(target).unwrap_err().to_string();
            assert!(e.contains(says), "{target:?}: {e}");
            assert!(e.contains("e.g. `ingress kind=vxlan`"), "{e}");
        }
    }
}

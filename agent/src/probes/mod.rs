//! Loading a plugin's eBPF object with aya, picking for each probe the first
//! hook alternative the running kernel accepts, attaching it, and reading the
//! object's ring buffer and counters.
//!
//! `VNT_DENY_HOOKS=fentry,kprobe` makes the agent skip alternatives of those
//! kinds, as if the kernel refused them: to compare variants on one kernel, or
//! to keep kprobes off a production host (docs/kernels.md).

pub mod filter;
pub mod id_key;
pub mod kprobe;
pub mod ringbuf;
pub mod stats;
pub mod tc;
pub mod tunnels;

use std::fmt;
use std::path::Path;
use std::sync::Once;

use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::programs::{BtfTracePoint, FEntry, KProbe, RawTracePoint, SchedClassifier, TracePoint};
use aya::{Btf, Ebpf, EbpfLoader};
use serde::Serialize;
use thiserror::Error;
use vnt_plugin_api::HookKind;
use zerocopy::IntoBytes;

use crate::plugin_host::{PluginMeta, ProbeAltInfo};
use filter::KernelFilter;
use id_key::{IdKey, ID_KEY_GLOBAL};
pub use stats::KernelStats;
use tunnels::{Tunnels, TUNNELS_GLOBAL};

/// Map and global names every vnt object shares (`ebpf/include/vnt/common.h`).
pub const EVENTS_MAP: &str = "vnt_events";
/// Per-CPU counters.
pub const STATS_MAP: &str = "vnt_stats";
/// Filter and sampling global.
pub const FILTER_GLOBAL: &str = "vnt_filter";

/// Failures while loading or attaching a plugin's programs.
#[derive(Debug, Error)]
pub enum ProbeError {
    /// The kernel refused for lack of privilege.
    #[error("permission denied loading eBPF for plugin `{plugin}`: run vnt-agent as root, or with CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (kernel said: {detail})")]
    Permission {
        /// Plugin.
        plugin: String,
        /// Kernel's words.
        detail: String,
    },
    /// The object did not load.
    #[error("failed to load the eBPF object of plugin `{plugin}`: {detail}")]
    Load {
        /// Plugin.
        plugin: String,
        /// Cause.
        detail: String,
    },
    /// A map every vnt object must have is missing.
    #[error("plugin `{plugin}`'s eBPF object has no `{map}` map (include vnt/common.h)")]
    MissingMap {
        /// Plugin.
        plugin: String,
        /// Map name.
        map: &'static str,
    },
    /// A required probe could not attach with any alternative.
    #[error("plugin `{plugin}`: required probe `{probe}` could not attach; tried:\n{tried}")]
    Required {
        /// Plugin.
        plugin: String,
        /// Probe.
        probe: String,
        /// One line per alternative with its error.
        tried: String,
    },
    /// `VNT_DENY_HOOKS` names something that is not a hook kind.
    #[error("{DENY_HOOKS_ENV}: {0}")]
    DenyList(String),
}

/// Environment variable listing hook kinds the agent must not use.
pub const DENY_HOOKS_ENV: &str = "VNT_DENY_HOOKS";

const KINDS: [HookKind; 7] = [
    HookKind::TpBtf,
    HookKind::RawTp,
    HookKind::FEntry,
    HookKind::KProbe,
    HookKind::Tc,
    HookKind::UProbe,
    HookKind::TracePoint,
];

/// Parse a deny list: hook kind names (`fentry`, `kprobe`, `tp_btf`, ...)
/// separated by commas.
pub fn parse_deny_list(text: &str) -> Result<Vec<HookKind>, String> {
    let mut out = Vec::new();
    for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let kind = KINDS
            .iter()
            .copied()
            .find(|k| k.as_str() == word)
            .ok_or_else(|| {
                format!(
                    "`{word}` is not a hook kind; expected some of: {}",
                    KINDS.map(HookKind::as_str).join(", ")
                )
            })?;
        out.push(kind);
    }
    Ok(out)
}

/// The hook kinds `VNT_DENY_HOOKS` denies (none when unset).
pub fn denied_kinds() -> Result<Vec<HookKind>, ProbeError> {
    match std::env::var(DENY_HOOKS_ENV) {
        Ok(v) => parse_deny_list(&v).map_err(ProbeError::DenyList),
        Err(_) => Ok(vec![]),
    }
}

/// One alternative that was not used, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AltFailure {
    /// `kind:target`, e.g. `fentry:veth_xmit`.
    pub hook: String,
    /// Program name in the object.
    pub program: String,
    /// Why it was not used.
    pub error: String,
}

impl fmt::Display for AltFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.hook, self.program, self.error)
    }
}

/// Which opt-in probes to attach (`--probes`, config key `probes`): probes
/// a plugin marks opt-in are left out unless named here. Probes that are not
/// opt-in are always attached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OptIn {
    /// Every opt-in probe (`--probes all`).
    pub all: bool,
    /// Opt-in probes by name (`veth_rx`).
    pub names: Vec<String>,
}

impl OptIn {
    /// Every probe, opt-in or not (what `check` tries).
    pub fn all() -> OptIn {
        OptIn {
            all: true,
            names: vec![],
        }
    }

    /// Whether `probe` is attached under this selection.
    pub fn wants(&self, probe: &crate::plugin_host::ProbeInfo) -> bool {
        !probe.opt_in || self.all || self.names.contains(&probe.name)
    }
}

/// What happened to one probe.
#[derive(Debug, Clone)]
pub struct ProbeChoice {
    /// Probe name.
    pub probe: String,
    /// Whether the plugin declared it required.
    pub required: bool,
    /// Whether the plugin declared it opt-in.
    pub opt_in: bool,
    /// False for an opt-in probe nobody asked for: nothing was tried.
    pub enabled: bool,
    /// The alternative in use: kind and target.
    pub chosen: Option<(HookKind, String)>,
    /// The program of the alternative in use.
    pub program: Option<String>,
    /// Where it attached, when that says more than the target (TC interfaces).
    pub detail: Option<String>,
    /// Alternatives tried before (or instead of) the chosen one, with errors.
    pub failures: Vec<AltFailure>,
}

impl fmt::Display for ProbeChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.chosen {
            Some((k, t)) => write!(f, "{k}:{t}"),
            None if !self.enabled => f.write_str("off (opt-in)"),
            None => f.write_str("not attached"),
        }
    }
}

/// A plugin's programs, attached. Dropping it detaches them.
pub struct Attached {
    /// Keeps programs (and their links) alive.
    pub ebpf: Ebpf,
    /// The object's ring buffer.
    pub ringbuf: RingBuf<MapData>,
    /// The object's counters (kept readable after the programs are gone).
    pub stats: KernelStats,
    /// Per-probe outcome.
    pub choices: Vec<ProbeChoice>,
}

/// Effective capabilities of this process (`CapEff` in /proc/self/status).
pub fn effective_capabilities() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Capability numbers (linux/capability.h).
pub mod cap {
    /// CAP_NET_ADMIN.
    pub const NET_ADMIN: u32 = 12;
    /// CAP_SYS_ADMIN.
    pub const SYS_ADMIN: u32 = 21;
    /// CAP_SYS_RESOURCE.
    pub const SYS_RESOURCE: u32 = 24;
    /// CAP_PERFMON.
    pub const PERFMON: u32 = 38;
    /// CAP_BPF.
    pub const BPF: u32 = 39;
}

/// Whether this process may load tracing programs (so an EPERM is the
/// kernel's refusal, not missing privileges).
fn privileged() -> bool {
    effective_capabilities().is_some_and(|c| {
        let has = |n: u32| c & (1 << n) != 0;
        has(cap::SYS_ADMIN) || (has(cap::BPF) && has(cap::PERFMON))
    })
}

/// The module a kernel function lives in, from /proc/kallsyms (`None`: in
/// vmlinux, or not found).
fn module_of(func: &str) -> Option<String> {
    let syms = std::fs::read_to_string("/proc/kallsyms").ok()?;
    syms.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        let (_addr, _kind, name, module) = (w.next()?, w.next()?, w.next()?, w.next()?);
        (name == func).then(|| module.trim_matches(['[', ']']).to_string())
    })
}

use kprobe::function_exists;

/// Error text of an aya error with its causes, the verifier log cut to its last lines.
pub(crate) fn describe(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        let c = cause.to_string();
        // aya often repeats its cause in its own message.
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        src = cause.source();
    }
    let lines: Vec<&str> = s.lines().collect();
    if lines.len() > 8 {
        let mut short = lines[..2].join("\n");
        short.push_str("\n  ...\n");
        short.push_str(&lines[lines.len() - 5..].join("\n"));
        return short;
    }
    s
}

fn is_permission(e: &dyn std::error::Error) -> bool {
    let text = describe(e);
    text.contains("Operation not permitted")
        || text.contains("os error 1)")
        || text.contains("EPERM")
}

/// aya wants 8-byte aligned ELF data; a `Vec<u8>` from FFI may not be.
fn aligned(bytes: &[u8]) -> Vec<u64> {
    let mut v = vec![0u64; bytes.len().div_ceil(8)];
    for (dst, chunk) in v.iter_mut().zip(bytes.chunks(8)) {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        *dst = u64::from_ne_bytes(b);
    }
    v
}

/// A clearer reason for the commonest refusals, appended to aya's text.
/// Where a kernel with kprobes publishes their perf event source.
const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe";

fn hint(kind: HookKind, target: &str, error: &str) -> Option<String> {
    match kind {
        HookKind::KProbe if !Path::new(KPROBE_PMU).exists() => Some(
            "this kernel has no kprobes (no kprobe PMU in /sys/bus/event_source/devices: \
             CONFIG_KPROBES / CONFIG_KPROBE_EVENTS are off)"
                .into(),
        ),
        HookKind::KProbe if !function_exists(target) => Some(format!(
            "no function `{target}` in /proc/kallsyms (not in this kernel, or its module is not loaded)"
        )),
        HookKind::FEntry
            if error.to_lowercase().contains("unknown btf type") || error.contains("not found") =>
        {
            Some(match module_of(target) {
                Some(m) => format!(
                    "`{target}` is in module `{m}`, not vmlinux; fentry on module functions needs \
                     module BTF, which this agent's aya 0.14 cannot use"
                ),
                None => format!("no function `{target}` in the kernel's BTF"),
            })
        }
        HookKind::TpBtf if error.to_lowercase().contains("unknown btf type") => Some(format!(
            "no tracepoint `{target}` in the kernel's BTF (no `btf_trace_{target}`)"
        )),
        HookKind::RawTp if error.contains("No such file or directory") => Some(format!(
            "no tracepoint `{target}` in this kernel (not built in, or its module is not loaded)"
        )),
        HookKind::FEntry | HookKind::TpBtf
            if (error.contains("Operation not permitted") || error.contains("os error 1)"))
                && privileged() =>
        {
            Some(format!(
                "this kernel refuses {kind} programs even to a process holding CAP_BPF and \
                 CAP_SYS_ADMIN (EPERM: a kernel or security-module policy, not missing privileges)"
            ))
        }
        _ => None,
    }
}

/// Load and attach one alternative. `Ok` carries where a TC program went.
fn attach_one(
    ebpf: &mut Ebpf,
    alt: &ProbeAltInfo,
    btf: &Btf,
    placement: tc::Placement<'_>,
) -> Result<Option<String>, String> {
    let kind = alt
        .kind
        .ok_or_else(|| format!("hook kind {} is unknown to this agent", alt.raw_kind))?;
    let prog = ebpf
        .program_mut(&alt.program)
        .ok_or_else(|| format!("program `{}` is not in the object", alt.program))?;
    // Loading runs the verifier (tens of ms for a packet program) before the
    // attach could fail: on a kernel without the kprobe PMU, do not load.
    if kind == HookKind::KProbe && !Path::new(KPROBE_PMU).exists() {
        let why = hint(kind, &alt.target, "").unwrap_or_default();
        return Err(format!("{why}: not loaded"));
    }
    let err = |e: &dyn std::error::Error| {
        let text = describe(e);
        // aya appends the verifier log, empty when the kernel refused before verifying.
        let text = text
            .trim_end()
            .trim_end_matches("Verifier output:")
            .trim_end_matches(['.', ' '])
            .to_string();
        match hint(kind, &alt.target, &text) {
            Some(h) => format!("{h}: {text}"),
            None => text,
        }
    };
    match kind {
        HookKind::TpBtf => {
            let p: &mut BtfTracePoint = prog.try_into().map_err(|e| err(&e))?;
            p.load(&alt.target, btf).map_err(|e| err(&e))?;
            p.attach().map_err(|e| err(&e))?;
        }
        HookKind::RawTp => {
            let p: &mut RawTracePoint = prog.try_into().map_err(|e| err(&e))?;
            p.load().map_err(|e| err(&e))?;
            p.attach(&alt.target).map_err(|e| err(&e))?;
        }
        HookKind::FEntry => {
            let p: &mut FEntry = prog.try_into().map_err(|e| err(&e))?;
            p.load(&alt.target, btf).map_err(|e| err(&e))?;
            p.attach().map_err(|e| err(&e))?;
        }
        HookKind::KProbe => {
            let target = kprobe::parse_target(&alt.target)?;
            let p: &mut KProbe = prog.try_into().map_err(|e| err(&e))?;
            p.load().map_err(|e| err(&e))?;
            let trial = matches!(placement, tc::Placement::Trial);
            return kprobe::attach(p, &alt.program, &target, trial).map_err(|e| {
                match hint(kind, &target.function, &e) {
                    Some(h) if target.module.is_none() => format!("{h}: {e}"),
                    _ => e,
                }
            });
        }
        HookKind::TracePoint => {
            let (cat, name) = alt.target.split_once(':').ok_or_else(|| {
                format!("tracepoint target `{}` is not category:name", alt.target)
            })?;
            let p: &mut TracePoint = prog.try_into().map_err(|e| err(&e))?;
            p.load().map_err(|e| err(&e))?;
            p.attach(cat, name).map_err(|e| err(&e))?;
        }
        HookKind::Tc => {
            let p: &mut SchedClassifier = prog.try_into().map_err(|e| err(&e))?;
            p.load().map_err(|e| err(&e))?;
            return tc::attach(p, &alt.program, &alt.target, placement).map(Some);
        }
        HookKind::UProbe => {
            return Err(format!(
                "{kind} hooks are not supported by this agent version yet"
            ));
        }
    }
    Ok(None)
}

/// Load `meta`'s object with the filter, the packet-id key, the tunnel
/// ports and the ring buffer size, without attaching anything.
pub fn load_object(
    meta: &PluginMeta,
    btf: &Btf,
    filter: &KernelFilter,
    id_key: &IdKey,
    tunnels: &Tunnels,
    ringbuf_bytes: u32,
) -> Result<Ebpf, ProbeError> {
    let plugin = &meta.name;
    let words = aligned(&meta.bpf_object);
    let bytes = &words.as_bytes()[..meta.bpf_object.len()];
    EbpfLoader::new()
        .btf(Some(btf))
        .override_global(FILTER_GLOBAL, filter, false)
        .override_global(ID_KEY_GLOBAL, id_key, false)
        .override_global(TUNNELS_GLOBAL, &tunnels.0, false)
        .map_max_entries(EVENTS_MAP, ringbuf_bytes)
        .load(bytes)
        .map_err(|e| {
            if is_permission(&e) {
                ProbeError::Permission {
                    plugin: plugin.clone(),
                    detail: describe(&e),
                }
            } else {
                ProbeError::Load {
                    plugin: plugin.clone(),
                    detail: describe(&e),
                }
            }
        })
}

/// For every probe of `meta`, try its alternatives in order and keep the
/// first that loads and attaches. Never fails: a probe without a working
/// alternative has `chosen: None` and every reason in `failures`.
pub fn attach_probes(
    ebpf: &mut Ebpf,
    meta: &PluginMeta,
    btf: &Btf,
    placement: tc::Placement<'_>,
    deny: &[HookKind],
    opt_in: &OptIn,
) -> Vec<ProbeChoice> {
    let plugin = &meta.name;
    let mut choices = Vec::with_capacity(meta.probes.len());
    for probe in &meta.probes {
        let mut choice = ProbeChoice {
            probe: probe.name.clone(),
            required: probe.required,
            opt_in: probe.opt_in,
            enabled: opt_in.wants(probe),
            chosen: None,
            program: None,
            detail: None,
            failures: vec![],
        };
        if !choice.enabled {
            tracing::debug!(plugin = %plugin, probe = %probe.name, "opt-in probe not asked for (--probes)");
            choices.push(choice);
            continue;
        }
        for alt in &probe.alternatives {
            let hook = format!(
                "{}:{}",
                alt.kind
                    .map(|k| k.as_str().to_string())
                    .unwrap_or_else(|| alt.raw_kind.to_string()),
                alt.target
            );
            let result = match alt.kind {
                Some(k) if deny.contains(&k) => Err(format!(
                    "not tried: `{k}` hooks are denied by {DENY_HOOKS_ENV}"
                )),
                _ => attach_one(ebpf, alt, btf, placement),
            };
            match result {
                Ok(detail) => {
                    tracing::info!(
                        plugin = %plugin,
                        probe = %probe.name,
                        hook = %hook,
                        program = %alt.program,
                        skipped = choice.failures.len(),
                        detail = detail.as_deref().unwrap_or(""),
                        "probe attached"
                    );
                    choice.chosen = alt.kind.map(|k| (k, alt.target.clone()));
                    choice.program = Some(alt.program.clone());
                    choice.detail = detail;
                    break;
                }
                Err(e) => {
                    tracing::debug!(plugin = %plugin, probe = %probe.name, alternative = %hook, error = %e, "alternative failed");
                    choice.failures.push(AltFailure {
                        hook,
                        program: alt.program.clone(),
                        error: e,
                    });
                }
            }
        }
        choices.push(choice);
    }
    choices
}

/// The modules whose types `meta`'s object reads: those its kprobe targets
/// name (`vxlan:vxlan_xmit` -> `vxlan`), and those named by the CO-RE flavor
/// of a type it declares (`struct vxlan_dev___mod_vxlan` -> `vxlan`, see
/// [`modules_in_object`]).
pub fn modules_of(meta: &PluginMeta) -> Vec<String> {
    let mut out: Vec<String> = meta
        .probes
        .iter()
        .flat_map(|p| &p.alternatives)
        .filter(|a| a.kind == Some(HookKind::KProbe))
        .filter_map(|a| kprobe::parse_target(&a.target).ok()?.module)
        .collect();
    out.extend(modules_in_object(&meta.bpf_object));
    out.sort();
    out.dedup();
    out
}

/// The modules an eBPF object names through the flavor of its CO-RE types:
/// a type `<name>___mod_<module>` (libbpf's flavor rule: matched as `<name>`)
/// says "`<name>` is a type of `<module>`", for a plugin that reads a module's
/// type from a tracepoint (no kprobe names the module). Found in the object's
/// BTF string table, as a NUL-terminated identifier.
pub fn modules_in_object(object: &[u8]) -> Vec<String> {
    const TAG: &[u8] = b"___mod_";
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = object[from..]
        .windows(TAG.len())
        .position(|w| w == TAG)
        .map(|i| from + i)
    {
        let start = at + TAG.len();
        let len = object[start..].iter().take_while(|&&c| ident(c)).count();
        let named = at > 0 && ident(object[at - 1]);
        if named && len > 0 && object.get(start + len) == Some(&0) {
            if let Ok(m) = std::str::from_utf8(&object[start..start + len]) {
                out.push(m.to_owned());
            }
        }
        from = start;
    }
    out.sort();
    out.dedup();
    out
}

/// For a plugin whose kprobes name modules: the kernel's BTF with those
/// modules' BTF appended, so that CO-RE reads of module types relocate
/// (`kernel::btf::merge_split`, docs/adr/016-attach-points-and-module-btf.md).
/// `None` when it names none, or none is loaded, or the kernel publishes no
/// BTF of its own (`--btf`): then vmlinux's BTF alone is used.
pub fn module_btf(meta: &PluginMeta) -> Option<crate::kernel::btf::KernelBtf> {
    let modules = modules_of(meta);
    if modules.is_empty() || !Path::new(crate::kernel::btf::SYS_BTF).exists() {
        return None;
    }
    let started = std::time::Instant::now();
    let merged =
        crate::kernel::btf::KernelBtf::read(None).and_then(|base| base.with_modules(&modules));
    match merged {
        Ok((btf, missing)) if missing.len() < modules.len() => {
            tracing::info!(
                plugin = %meta.name,
                modules = %modules.join(","),
                not_loaded = %missing.join(","),
                ms = started.elapsed().as_millis() as u64,
                "CO-RE relocations use vmlinux and module BTF"
            );
            Some(btf)
        }
        Ok((_, missing)) => {
            tracing::info!(plugin = %meta.name, modules = %missing.join(","), "no module BTF (modules built in, or not loaded yet): CO-RE reads of their types are relocated against vmlinux only; reads of a module loaded later stay unavailable until restart");
            None
        }
        Err(e) => {
            tracing::warn!(plugin = %meta.name, error = %e, "cannot read module BTF: CO-RE reads of module types are relocated against vmlinux only");
            None
        }
    }
}

/// Remove, once per process, the TC filters of agents that were killed.
fn clean_start() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let cleaned = tc::remove_stale();
        for r in &cleaned.removed {
            tracing::info!(filter = %r, "removed a stale TC filter left by a killed agent");
        }
        for k in &cleaned.kept {
            tracing::debug!(filter = %k, "recorded TC filter left alone");
        }
    });
}

/// Load `meta`'s object with the filter and attach every probe.
pub fn load_and_attach(
    meta: &PluginMeta,
    btf: &Btf,
    filter: &KernelFilter,
    id_key: &IdKey,
    tunnels: &Tunnels,
    ringbuf_bytes: u32,
    opt_in: &OptIn,
) -> Result<Attached, ProbeError> {
    clean_start();
    let plugin = meta.name.clone();
    let deny = denied_kinds()?;
    let merged = module_btf(meta);
    let btf = merged.as_ref().map_or(btf, |m| m.aya());
    let mut ebpf = load_object(meta, btf, filter, id_key, tunnels, ringbuf_bytes)?;
    let choices = attach_probes(
        &mut ebpf,
        meta,
        btf,
        tc::Placement::Filter(filter),
        &deny,
        opt_in,
    );
    for choice in &choices {
        if choice.chosen.is_some() || !choice.enabled {
            continue;
        }
        let tried: Vec<String> = choice.failures.iter().map(|f| format!("  {f}")).collect();
        if choice.required {
            // EPERM from every alternative, without the privileges to load
            // tracing programs: that is the user's to fix, not the kernel's.
            if !privileged()
                && choice
                    .failures
                    .iter()
                    .all(|f| f.error.contains("Operation not permitted"))
            {
                return Err(ProbeError::Permission {
                    plugin,
                    detail: tried.join("\n"),
                });
            }
            return Err(ProbeError::Required {
                plugin,
                probe: choice.probe.clone(),
                tried: tried.join("\n"),
            });
        }
        tracing::warn!(plugin = %plugin, probe = %choice.probe, tried = %tried.join(";"), "optional probe not attached");
    }

    let ringbuf_map = ebpf.take_map(EVENTS_MAP).ok_or(ProbeError::MissingMap {
        plugin: plugin.clone(),
        map: EVENTS_MAP,
    })?;
    let ringbuf = RingBuf::try_from(ringbuf_map).map_err(|e| ProbeError::Load {
        plugin: plugin.clone(),
        detail: describe(&e),
    })?;
    let stats_map = ebpf.take_map(STATS_MAP).ok_or(ProbeError::MissingMap {
        plugin: plugin.clone(),
        map: STATS_MAP,
    })?;
    let stats = PerCpuArray::try_from(stats_map).map_err(|e| ProbeError::Load {
        plugin: plugin.clone(),
        detail: describe(&e),
    })?;
    Ok(Attached {
        ebpf,
        ringbuf,
        stats: KernelStats::new(stats),
        choices,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_names_modules_by_the_flavor_of_its_types() {
        let strings = b"\0vxlan_dev___mod_vxlan\0cfg\0x___mod_\0___mod_nf\0dp___mod_openvswitch\0vni___mod_vxlan\0tail___mod_cut";
        assert_eq!(modules_in_object(strings), ["openvswitch", "vxlan"]);
        assert!(modules_in_object(b"no flavors here\0").is_empty());
    }

    #[test]
    fn deny_lists_name_hook_kinds() {
        assert_eq!(
            parse_deny_list("fentry, kprobe").unwrap(),
            [HookKind::FEntry, HookKind::KProbe]
        );
        assert_eq!(parse_deny_list("").unwrap(), []);
        let e = parse_deny_list("fentry,kprobes").unwrap_err();
        assert!(e.contains("`kprobes`") && e.contains("kprobe"), "{e}");
    }

    #[test]
    fn alternative_failures_read_as_one_line() {
        let f = AltFailure {
            hook: "kprobe:veth_xmit".into(),
            program: "veth_xmit_kprobe".into(),
            error: "no kprobes".into(),
        };
        assert_eq!(
            f.to_string(),
            "kprobe:veth_xmit (veth_xmit_kprobe): no kprobes"
        );
    }
}

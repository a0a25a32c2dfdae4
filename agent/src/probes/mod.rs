//! Loading a plugin's eBPF object with aya, picking for each probe the first
//! hook alternative the running kernel accepts, attaching it, and reading the
//! object's ring buffer and counters.

pub mod filter;
pub mod stats;

use std::fmt;

use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::programs::{BtfTracePoint, FEntry, KProbe, RawTracePoint, TracePoint};
use aya::{Btf, Ebpf, EbpfLoader};
use thiserror::Error;
use vnt_plugin_api::HookKind;
use zerocopy::IntoBytes;

use crate::plugin_host::{PluginMeta, ProbeAltInfo};
use filter::KernelFilter;
pub use stats::KernelStats;

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
}

/// What happened to one probe.
#[derive(Debug, Clone)]
pub struct ProbeChoice {
    /// Probe name.
    pub probe: String,
    /// The alternative in use: kind and target.
    pub chosen: Option<(HookKind, String)>,
    /// Alternatives tried before (or instead of) the chosen one, with errors.
    pub failures: Vec<String>,
}

impl fmt::Display for ProbeChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.chosen {
            Some((k, t)) => write!(f, "{k}:{t}"),
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

/// The running kernel's BTF, from `--btf` or `/sys/kernel/btf/vmlinux`.
pub fn kernel_btf(path: Option<&std::path::Path>) -> Result<Btf, String> {
    match path {
        Some(p) => Btf::parse_file(p, aya::Endianness::default())
            .map_err(|e| format!("cannot read BTF from {}: {e}", p.display())),
        None => Btf::from_sys_fs().map_err(|e| {
            format!("cannot read kernel BTF from /sys/kernel/btf/vmlinux ({e}); this kernel needs CONFIG_DEBUG_INFO_BTF=y, or pass --btf PATH")
        }),
    }
}

/// Error text of an aya error with its causes, the verifier log cut to its last lines.
fn describe(e: &dyn std::error::Error) -> String {
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

fn attach_one(ebpf: &mut Ebpf, alt: &ProbeAltInfo, btf: &Btf) -> Result<(), String> {
    let kind = alt
        .kind
        .ok_or_else(|| format!("hook kind {} is unknown to this agent", alt.raw_kind))?;
    let prog = ebpf
        .program_mut(&alt.program)
        .ok_or_else(|| format!("program `{}` is not in the object", alt.program))?;
    let err = |e: &dyn std::error::Error| describe(e);
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
            let p: &mut KProbe = prog.try_into().map_err(|e| err(&e))?;
            p.load().map_err(|e| err(&e))?;
            p.attach(&alt.target, 0).map_err(|e| err(&e))?;
        }
        HookKind::TracePoint => {
            let (cat, name) = alt.target.split_once(':').ok_or_else(|| {
                format!("tracepoint target `{}` is not category:name", alt.target)
            })?;
            let p: &mut TracePoint = prog.try_into().map_err(|e| err(&e))?;
            p.load().map_err(|e| err(&e))?;
            p.attach(cat, name).map_err(|e| err(&e))?;
        }
        HookKind::Tc | HookKind::UProbe => {
            return Err(format!(
                "{kind} hooks are not supported by this agent version yet"
            ));
        }
    }
    Ok(())
}

/// Load `meta`'s object with the filter and attach every probe.
pub fn load_and_attach(
    meta: &PluginMeta,
    btf: &Btf,
    filter: &KernelFilter,
    ringbuf_bytes: u32,
) -> Result<Attached, ProbeError> {
    let plugin = meta.name.clone();
    let words = aligned(&meta.bpf_object);
    let bytes = &words.as_bytes()[..meta.bpf_object.len()];
    let mut ebpf = EbpfLoader::new()
        .btf(Some(btf))
        .override_global(FILTER_GLOBAL, filter, false)
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
        })?;

    let mut choices = Vec::with_capacity(meta.probes.len());
    for probe in &meta.probes {
        let mut choice = ProbeChoice {
            probe: probe.name.clone(),
            chosen: None,
            failures: vec![],
        };
        for alt in &probe.alternatives {
            match attach_one(&mut ebpf, alt, btf) {
                Ok(()) => {
                    tracing::info!(
                        plugin = %plugin,
                        probe = %probe.name,
                        hook = %format!("{}:{}", alt.kind.map(|k| k.as_str()).unwrap_or("?"), alt.target),
                        program = %alt.program,
                        "probe attached"
                    );
                    choice.chosen = alt.kind.map(|k| (k, alt.target.clone()));
                    break;
                }
                Err(e) => {
                    let kind = alt
                        .kind
                        .map(|k| k.to_string())
                        .unwrap_or_else(|| alt.raw_kind.to_string());
                    tracing::debug!(plugin = %plugin, probe = %probe.name, alternative = %kind, error = %e, "alternative failed");
                    choice
                        .failures
                        .push(format!("  {kind}:{} ({}): {e}", alt.target, alt.program));
                }
            }
        }
        if choice.chosen.is_none() {
            if probe.required {
                let tried = choice.failures.join("\n");
                if choice
                    .failures
                    .iter()
                    .any(|f| f.contains("Operation not permitted"))
                {
                    return Err(ProbeError::Permission {
                        plugin,
                        detail: tried,
                    });
                }
                return Err(ProbeError::Required {
                    plugin,
                    probe: probe.name.clone(),
                    tried,
                });
            }
            tracing::warn!(plugin = %plugin, probe = %probe.name, tried = %choice.failures.join("; "), "optional probe not attached");
        }
        choices.push(choice);
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

//! The serialisable shape of a journey and of the exit summary, shared by
//! every output. Field names are documented in docs/output.md.

use std::collections::BTreeMap;

use serde::Serialize;

use super::ids;
use crate::journey::{BuilderStats, Journey};
use crate::kernel::clock::WallClock;
use crate::kernel::drop_reason::DropReasons;
use crate::kernel::netns::NetnsResolver;
use crate::plugin_host::PluginMeta;
use crate::probes::stats::StatTotals;

/// What turns ids into names.
pub struct Names<'a> {
    /// Loaded plugins, by index.
    pub plugins: &'a [PluginMeta],
    /// Drop reason names.
    pub drops: &'a DropReasons,
    /// Netns owners.
    pub netns: &'a mut NetnsResolver,
    /// Monotonic to wall clock.
    pub clock: WallClock,
}

/// Flow of a journey.
#[derive(Debug, Serialize)]
pub struct FlowView {
    /// Source address.
    pub src: String,
    /// Destination address.
    pub dst: String,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Protocol name.
    pub proto: String,
    /// 4 or 6.
    pub family: u8,
}

/// Drop details.
#[derive(Debug, Serialize)]
pub struct DropView {
    /// Kernel drop reason name (`NETFILTER_DROP`).
    pub reason: String,
    /// Its numeric value on this kernel.
    pub code: u32,
}

/// The process that owns a namespace.
#[derive(Debug, Serialize)]
pub struct OwnerView {
    /// Pid.
    pub pid: u32,
    /// Command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// cgroup v2 path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
}

/// One hop.
#[derive(Debug, Serialize)]
pub struct HopView {
    /// Kernel hook name.
    pub hook: String,
    /// Short label.
    pub label: String,
    /// Plugin name.
    pub plugin: String,
    /// Interface name.
    pub interface: String,
    /// Interface index.
    pub ifindex: u32,
    /// Netns inode.
    pub netns: u32,
    /// `ip netns` name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns_name: Option<String>,
    /// A process in that netns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns_owner: Option<OwnerView>,
    /// `tx`, `rx` or `-`.
    pub direction: &'static str,
    /// CPU.
    pub cpu: u32,
    /// Bytes.
    pub len: u32,
    /// Wall-clock time.
    pub ts_unix_nano: u64,
    /// Time since the previous hop (0 for the first).
    pub latency_ns: u64,
    /// Set on the hop where a dropped packet ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop: Option<DropView>,
    /// Substeps only: hook of the hop they are nested in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_hook: Option<String>,
    /// Substeps only: their duration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ns: Option<u64>,
}

/// A CPU interval joined to the journey.
#[derive(Debug, Serialize)]
pub struct IntervalView {
    /// Plugin name.
    pub plugin: String,
    /// Hook name.
    pub hook: String,
    /// CPU.
    pub cpu: u32,
    /// Start, wall clock.
    pub start_unix_nano: u64,
    /// Length.
    pub duration_ns: u64,
    /// Plugin's refinement code.
    pub detail: u32,
}

/// One journey, as output.
#[derive(Debug, Serialize)]
pub struct JourneyView {
    /// Always `journey`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// 32 hex digits, derived from the packet id.
    pub trace_id: String,
    /// 16 hex digits.
    pub pkt_id: String,
    /// The packet id as a number (for span ids; not serialised).
    #[serde(skip)]
    pub id: u64,
    /// `idle`, `dropped`, `terminal`, `evicted`, `shutdown`.
    pub end: &'static str,
    /// Addresses, ports, protocol.
    pub flow: FlowView,
    /// Bytes at the first hop.
    pub len: u32,
    /// Wall clock of the first hop.
    pub start_unix_nano: u64,
    /// First hop to last.
    pub duration_ns: u64,
    /// In time order.
    pub hops: Vec<HopView>,
    /// CPU intervals that overlapped.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cpu_intervals: Vec<IntervalView>,
}

impl JourneyView {
    /// Build the view of `j`.
    pub fn new(j: &Journey, names: &mut Names<'_>) -> JourneyView {
        let flow = j.flow();
        let (start, end) = j.span_ns();
        let mut hops = Vec::with_capacity(j.hops.len());
        let mut prev: Option<u64> = None;
        for h in &j.hops {
            let meta = names.plugins.get(h.plugin as usize);
            let hook = meta.and_then(|m| m.hook(h.obs.hook));
            let ns = names.netns.lookup(h.obs.netns).cloned();
            let is_sub = h.obs.substep.is_some();
            let latency = if is_sub {
                0
            } else {
                let l = prev.map_or(0, |p| h.obs.ts_ns.saturating_sub(p));
                prev = Some(h.obs.ts_ns);
                l
            };
            hops.push(HopView {
                hook: hook.map_or_else(|| format!("hook-{}", h.obs.hook), |k| k.name.clone()),
                label: hook.map_or_else(String::new, |k| k.label.clone()),
                plugin: meta.map_or_else(|| "?".into(), |m| m.name.clone()),
                interface: h.obs.ifname.to_str().into_owned(),
                ifindex: h.obs.ifindex,
                netns: h.obs.netns,
                netns_name: ns.as_ref().and_then(|n| n.name.clone()),
                netns_owner: ns.and_then(|n| {
                    n.pid.map(|pid| OwnerView {
                        pid,
                        comm: n.comm,
                        cgroup: n.cgroup,
                    })
                }),
                direction: h.obs.direction.as_str(),
                cpu: h.obs.cpu,
                len: h.obs.len,
                ts_unix_nano: names.clock.unix_ns(h.obs.ts_ns),
                latency_ns: latency,
                drop: h.obs.drop_reason.map(|code| DropView {
                    reason: names.drops.name(code),
                    code,
                }),
                parent_hook: h.obs.substep.map(|(parent, _)| {
                    meta.and_then(|m| m.hook(parent))
                        .map_or_else(|| format!("hook-{parent}"), |k| k.name.clone())
                }),
                duration_ns: h.obs.substep.map(|(_, e)| e.saturating_sub(h.obs.ts_ns)),
            });
        }
        let cpu_intervals = j
            .intervals
            .iter()
            .map(|(p, i)| {
                let meta = names.plugins.get(*p as usize);
                IntervalView {
                    plugin: meta.map_or_else(|| "?".into(), |m| m.name.clone()),
                    hook: meta
                        .and_then(|m| m.hook(i.hook))
                        .map_or_else(|| format!("hook-{}", i.hook), |k| k.name.clone()),
                    cpu: i.cpu,
                    start_unix_nano: names.clock.unix_ns(i.start_ns),
                    duration_ns: i.end_ns.saturating_sub(i.start_ns),
                    detail: i.detail,
                }
            })
            .collect();
        JourneyView {
            kind: "journey",
            trace_id: ids::hex(&ids::trace_id(j.pkt_id)),
            pkt_id: format!("{:016x}", j.pkt_id),
            id: j.pkt_id,
            end: j.end.as_str(),
            flow: FlowView {
                src: flow.src().map(|a| a.to_string()).unwrap_or_default(),
                dst: flow.dst().map(|a| a.to_string()).unwrap_or_default(),
                sport: flow.sport,
                dport: flow.dport,
                proto: flow.proto_name().into_owned(),
                family: flow.family,
            },
            len: j.hops.first().map_or(0, |h| h.obs.len),
            start_unix_nano: names.clock.unix_ns(start),
            duration_ns: end.saturating_sub(start),
            hops,
            cpu_intervals,
        }
    }
}

/// Per-plugin part of the summary.
#[derive(Debug, Serialize, Clone, Default)]
pub struct PluginSummary {
    /// Disabled while running (after a panic).
    pub disabled: bool,
    /// Why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// Probe -> `kind:target` in use.
    pub probes: BTreeMap<String, String>,
    /// The plugin's kernel counters.
    pub kernel: StatTotals,
    /// Records read from its ring buffer.
    pub records: u64,
    /// Records its decoder rejected.
    pub decode_errors: u64,
}

/// The exit summary.
#[derive(Debug, Serialize, Clone, Default)]
pub struct Summary {
    /// Always `summary`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Journeys output.
    pub journeys: u64,
    /// Of which dropped.
    pub journeys_dropped: u64,
    /// Of which ended idle.
    pub journeys_idle: u64,
    /// Of which ended at a terminal hook.
    pub journeys_terminal: u64,
    /// Of which evicted early.
    pub journeys_evicted: u64,
    /// Of which ended by shutdown.
    pub journeys_shutdown: u64,
    /// Observations decoded.
    pub observations: u64,
    /// Ring-buffer records read.
    pub records: u64,
    /// Records decoders rejected.
    pub decode_errors: u64,
    /// Records lost in the kernel (ring buffer full).
    pub events_lost: u64,
    /// All plugins' kernel counters.
    pub kernel: StatTotals,
    /// Per plugin.
    pub plugins: BTreeMap<String, PluginSummary>,
    /// Spans delivered to the OTLP collector (0 without OTLP).
    pub spans_exported: u64,
    /// Spans not delivered: export queue full, export failed, or still queued
    /// when the shutdown timeout ran out (0 without OTLP).
    pub spans_dropped: u64,
    /// OTLP export details, when OTLP is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp: Option<OtlpSummary>,
}

/// The OTLP part of the summary (docs/otel.md).
#[derive(Debug, Serialize, Clone, Default)]
pub struct OtlpSummary {
    /// Collector URL.
    pub endpoint: String,
    /// `grpc` or `http/protobuf`.
    pub protocol: &'static str,
    /// Spans accepted into the export queue.
    pub spans_queued: u64,
    /// Of the dropped spans: the queue was full (collector slow or down).
    pub spans_dropped_queue_full: u64,
    /// Of the dropped spans: their export request failed after retries.
    pub spans_dropped_export_failed: u64,
    /// Of the dropped spans: still queued when the shutdown timeout ran out.
    pub spans_dropped_shutdown: u64,
    /// Span export requests that failed.
    pub trace_export_errors: u64,
    /// Metric export requests that succeeded.
    pub metric_exports: u64,
    /// Metric export requests that failed.
    pub metric_export_errors: u64,
}

impl Summary {
    /// Fill the journey counters from the builder's.
    pub fn set_builder(&mut self, b: BuilderStats) {
        self.journeys = b.journeys();
        self.journeys_dropped = b.dropped;
        self.journeys_idle = b.idle;
        self.journeys_terminal = b.terminal;
        self.journeys_evicted = b.evicted;
        self.journeys_shutdown = b.shutdown;
        self.observations = b.observations + b.intervals;
    }

    /// Fill the OTLP counters from the exporter's report.
    pub fn set_otlp(&mut self, o: OtlpSummary, spans_exported: u64) {
        self.spans_exported = spans_exported;
        self.spans_dropped =
            o.spans_dropped_queue_full + o.spans_dropped_export_failed + o.spans_dropped_shutdown;
        self.otlp = Some(o);
    }
}

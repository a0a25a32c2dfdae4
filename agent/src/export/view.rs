//! The serialisable shape of a journey and of the exit summary, shared by
//! every output. Field names are documented in docs/output.md.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde::Serialize;
use vnt_plugin_api::Value;

use super::ids;
use crate::containers::{ContainerInfo, Containers};
use crate::journey::{BuilderStats, DeliveredTo, Hop, Journey, Verdict};
use crate::kernel::clock::WallClock;
use crate::kernel::drop_reason::DropReasons;
use crate::kernel::netns::NetnsResolver;
use crate::kernel::process::ProcessNames;
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
    /// Names of the processes hooks reported.
    pub procs: &'a ProcessNames,
    /// Containers, by network namespace, from the runtime.
    pub containers: &'a mut Containers,
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
    pub proto: Cow<'static, str>,
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
    pub comm: Option<Arc<str>>,
    /// cgroup v2 path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<Arc<str>>,
}

/// A process a hook named: the sender at a transmit, the reader at a
/// socket read.
#[derive(Debug, Serialize, Clone)]
pub struct ProcessView {
    /// Pid (the thread group id).
    pub pid: u32,
    /// Command, when /proc still had it as the observation arrived.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<Arc<str>>,
}

/// One hop. Names that many hops share (hooks, plugins, namespaces and
/// their owners) are shared strings: building a view copies none of them.
#[derive(Debug, Serialize)]
pub struct HopView {
    /// Kernel hook name.
    pub hook: Arc<str>,
    /// Short label.
    pub label: Arc<str>,
    /// Plugin name.
    pub plugin: Arc<str>,
    /// Interface name.
    pub interface: String,
    /// Interface index.
    pub ifindex: u32,
    /// Netns inode.
    pub netns: u32,
    /// `ip netns` name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns_name: Option<Arc<str>>,
    /// A process in that netns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns_owner: Option<OwnerView>,
    /// The container whose netns it is, as its runtime names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<Arc<ContainerInfo>>,
    /// The process the hook ran for, where it knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessView>,
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
    pub parent_hook: Option<Arc<str>>,
    /// Substeps only: the index in `hops` of the hop (or substep) they are
    /// nested in; `None` when the journey has no hop of `parent_hook`
    /// (the substep then hangs under the journey). See [`nest`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<usize>,
    /// How deep it is nested: 0 for hops, 1 for a substep of a hop, 2 for
    /// a substep of a substep, ...
    #[serde(skip_serializing_if = "is_zero_u8")]
    pub depth: u8,
    /// Substeps only: their duration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ns: Option<u64>,
    /// Values of the plugin's declared fields, by attribute key.
    #[serde(skip_serializing_if = "Attrs::is_empty")]
    pub attrs: Attrs,
}

/// A hop's plugin-declared attributes in the order the plugin gave them,
/// keyed by their attribute key (`vnt.<plugin>.<field>` or the field's
/// semantic-convention key). Serialised as a JSON object.
#[derive(Debug, Default, Clone)]
pub struct Attrs(pub Vec<(Arc<str>, Value)>);

impl Attrs {
    /// No attributes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The values of `values` under their keys; values of undeclared
    /// fields (the host dropped those observations) cannot occur here.
    fn of(meta: Option<&PluginMeta>, values: &[vnt_plugin_api::FieldValue]) -> Attrs {
        let Some(meta) = meta else {
            return Attrs::default();
        };
        Attrs(
            values
                .iter()
                .filter_map(|v| {
                    let f = meta.fields.get(usize::from(v.field))?;
                    Some((f.key.clone(), v.value.clone()))
                })
                .collect(),
        )
    }
}

impl Serialize for Attrs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            match v {
                Value::U64(n) => m.serialize_entry(&**k, n)?,
                Value::I64(n) => m.serialize_entry(&**k, n)?,
                Value::F64(n) => m.serialize_entry(&**k, n)?,
                Value::Str(t) => m.serialize_entry(&**k, t)?,
            }
        }
        m.end()
    }
}

/// A CPU interval joined to the journey.
#[derive(Debug, Serialize)]
pub struct IntervalView {
    /// Plugin name.
    pub plugin: Arc<str>,
    /// Hook name.
    pub hook: Arc<str>,
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
    /// The verdict: `delivered`, `forwarded`, `dropped`, `unknown`.
    pub end: &'static str,
    /// Delivered only: `socket` (a process read it), `socket-unread` (its
    /// socket closed before reading it), `stack` (up the local stack, no
    /// read seen).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered_to: Option<&'static str>,
    /// Delivered to a socket: the process that read it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessView>,
    /// What closed the journey record: `idle` (no hop for the idle
    /// timeout), `dropped`, `terminal`, `evicted`, `shutdown`.
    pub closed: &'static str,
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

/// Distinct names kept for sharing; past this, names are copied (a plugin
/// reporting ever new hook ids cannot grow the table without bound).
const SHARED_MAX: usize = 4096;

/// The one shared copy of a hook, label or plugin name. A run shows a few
/// dozen of them on millions of hops; cloning an `Arc<str>` copies nothing.
fn shared(name: &str) -> Arc<str> {
    thread_local! {
        static SHARED: RefCell<HashSet<Arc<str>, foldhash::fast::RandomState>> =
            RefCell::default();
    }
    SHARED.with_borrow_mut(|set| {
        if let Some(s) = set.get(name) {
            return s.clone();
        }
        let s: Arc<str> = name.into();
        if set.len() < SHARED_MAX {
            set.insert(s.clone());
        }
        s
    })
}

/// `hook`'s name in `meta`'s table, or `hook-<id>`.
fn hook_name(meta: Option<&PluginMeta>, hook: u16) -> Arc<str> {
    match meta.and_then(|m| m.hook(hook)) {
        Some(k) => shared(&k.name),
        None => shared(&format!("hook-{hook}")),
    }
}

fn plugin_name(meta: Option<&PluginMeta>) -> Arc<str> {
    shared(meta.map_or("?", |m| m.name.as_str()))
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
            let ns = names.netns.lookup(h.obs.netns);
            let is_sub = h.obs.substep.is_some();
            let latency = if is_sub {
                0
            } else {
                let l = prev.map_or(0, |p| h.obs.ts_ns.saturating_sub(p));
                prev = Some(h.obs.ts_ns);
                l
            };
            hops.push(HopView {
                hook: hook_name(meta, h.obs.hook),
                label: shared(hook.map_or("", |k| k.label.as_str())),
                plugin: plugin_name(meta),
                interface: h.obs.ifname.to_str().into_owned(),
                ifindex: h.obs.ifindex,
                netns: h.obs.netns,
                netns_name: ns.and_then(|n| n.name.clone()),
                netns_owner: ns.and_then(|n| {
                    n.pid.map(|pid| OwnerView {
                        pid,
                        comm: n.comm.clone(),
                        cgroup: n.cgroup.clone(),
                    })
                }),
                container: names.containers.lookup(h.obs.netns),
                process: (h.obs.pid != 0).then(|| ProcessView {
                    pid: h.obs.pid,
                    comm: names.procs.name(h.obs.pid),
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
                parent_hook: h.obs.substep.map(|(parent, _)| hook_name(meta, parent)),
                parent: None,
                depth: 0,
                duration_ns: h.obs.substep.map(|(_, e)| e.saturating_sub(h.obs.ts_ns)),
                attrs: Attrs::of(meta, &h.obs.values),
            });
        }
        nest(j, &mut hops);
        let cpu_intervals = j
            .intervals
            .iter()
            .map(|(p, i)| {
                let meta = names.plugins.get(*p as usize);
                IntervalView {
                    plugin: plugin_name(meta),
                    hook: hook_name(meta, i.hook),
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
            pkt_id: ids::hex(&j.pkt_id.to_be_bytes()),
            id: j.pkt_id,
            end: j.verdict.as_str(),
            delivered_to: match j.verdict {
                Verdict::Delivered(DeliveredTo::Socket { .. }) => Some("socket"),
                Verdict::Delivered(DeliveredTo::SocketUnread { .. }) => Some("socket-unread"),
                Verdict::Delivered(DeliveredTo::Stack) => Some("stack"),
                _ => None,
            },
            process: match j.verdict {
                Verdict::Delivered(DeliveredTo::Socket { hop }) => {
                    hops.get(hop).and_then(|h| h.process.clone())
                }
                _ => None,
            },
            closed: j.end.as_str(),
            flow: FlowView {
                src: flow.src().map(|a| a.to_string()).unwrap_or_default(),
                dst: flow.dst().map(|a| a.to_string()).unwrap_or_default(),
                sport: flow.sport,
                dport: flow.dport,
                proto: flow.proto_name(),
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

fn is_zero_u8(n: &u8) -> bool {
    *n == 0
}

/// Where each substep of `j` nests: sets `hops[i].parent` and `.depth`
/// from [`parents`].
fn nest(j: &Journey, hops: &mut [HopView]) {
    for (h, (parent, depth)) in hops.iter_mut().zip(parents(&j.hops)) {
        h.parent = parent;
        h.depth = depth;
    }
}

/// For each hop of a journey, the index of the hop its substep nests in and
/// its depth (0 for hops, 1 under a hop, 2 under a substep, ...).
///
/// A substep names its parent by hook (`substep = (parent hook, end)`), and a
/// journey can pass the same hook more than once (two bridges, two OVS
/// datapaths), so the parent is the hop of that plugin and hook nearest in
/// time: one that came before the substep started, or one that came after it
/// ended (a slow path ends before its hop: an OVS upcall before the
/// re-injected packet is executed; the outer packet arrives before its
/// decapsulation). Ties go to the earlier hop. A parent may itself be a
/// substep, so steps nest inside steps. A chain that loops back (substeps
/// naming each other's hooks) is cut: the substep closing it hangs under
/// the journey (no parent), as does one whose parent hook never came.
pub fn parents(hops: &[Hop]) -> Vec<(Option<usize>, u8)> {
    let mut out: Vec<(Option<usize>, u8)> = hops
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let Some((parent_hook, end)) = h.obs.substep else {
                return (None, 0);
            };
            let mut best: Option<(u64, usize)> = None;
            for (k, c) in hops.iter().enumerate() {
                if k == i || c.plugin != h.plugin || c.obs.hook != parent_hook {
                    continue;
                }
                let distance = if k < i {
                    h.obs.ts_ns.saturating_sub(c.obs.ts_ns)
                } else {
                    c.obs.ts_ns.saturating_sub(end.max(h.obs.ts_ns))
                };
                if best.is_none_or(|(d, _)| distance < d) {
                    best = Some((distance, k));
                }
            }
            (best.map(|(_, k)| k), 1)
        })
        .collect();
    let n = hops.len();
    for i in 0..n {
        if hops[i].obs.substep.is_none() {
            continue;
        }
        // Walk up to a hop; more steps than there are hops is a loop.
        let mut steps = 0usize;
        let mut at = out[i].0;
        while let Some(k) = at {
            steps += 1;
            if steps > n {
                break;
            }
            at = out[k].0;
        }
        if steps > n {
            out[i] = (None, 1);
        } else {
            // steps counts the parent hop itself, which is depth 0.
            out[i].1 = u8::try_from(steps.max(1)).unwrap_or(u8::MAX);
        }
    }
    out
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
    /// The same, per CPU (index = CPU number).
    pub kernel_per_cpu: Vec<StatTotals>,
    /// Records read from its ring buffer.
    pub records: u64,
    /// Records its decoder rejected.
    pub decode_errors: u64,
    /// Its declared metrics (ABI 1.3): one entry per label set.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<super::plugin_metrics::SeriesSummary>,
    /// Points of its metrics past `otlp.max_series_per_metric` label sets.
    #[serde(skip_serializing_if = "is_zero")]
    pub metric_overflow: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The exit summary.
#[derive(Debug, Serialize, Clone, Default)]
pub struct Summary {
    /// Always `summary`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Journeys output.
    pub journeys: u64,
    /// By verdict: delivered.
    pub journeys_delivered: u64,
    /// Forwarded out of this host's watched devices.
    pub journeys_forwarded: u64,
    /// Dropped.
    pub journeys_dropped: u64,
    /// Nothing says.
    pub journeys_unknown: u64,
    /// Closed by the idle timeout (any verdict): no hop for
    /// `journey.idle_timeout_ms`.
    pub journeys_idle: u64,
    /// Closed early (any verdict): too many in flight.
    pub journeys_evicted: u64,
    /// Closed early (any verdict): the agent stopped.
    pub journeys_shutdown: u64,
    /// Socket reads of packets whose journey had already ended.
    pub late_reads: u64,
    /// Hops read from one plugin's ring buffer after another plugin's drop
    /// or terminal hop had ended their journey, older than that end: joined
    /// to it (several plugins only).
    #[serde(skip_serializing_if = "is_zero")]
    pub late_joined: u64,
    /// Observations without a packet id (a TCP retransmission) joined to
    /// their packet's journey by flow and TCP sequence number.
    pub joined: u64,
    /// Of those, ones whose packet was never seen (not sampled, filtered, or
    /// read too late): counted, not output.
    pub unjoined: u64,
    /// Observations decoded.
    pub observations: u64,
    /// Ring-buffer records read.
    pub records: u64,
    /// Records decoders rejected.
    pub decode_errors: u64,
    /// Records lost in the kernel (ring buffer full).
    pub events_lost: u64,
    /// Packets that matched the filter and were sampled but make no journey:
    /// the ring buffer was full at their first hop (`kernel.lost_packets`).
    /// With `journeys`, it accounts for every such packet; `kernel.lost_gaps`
    /// counts the hops lost mid-path (journeys with a gap).
    pub packets_lost: u64,
    /// All plugins' kernel counters.
    pub kernel: StatTotals,
    /// Per plugin.
    pub plugins: BTreeMap<String, PluginSummary>,
    /// Journeys and connection records not written because the output
    /// (stdout) did not keep up: its writer's queue was full.
    pub output_dropped: u64,
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
        self.journeys_delivered = b.delivered;
        self.journeys_forwarded = b.forwarded;
        self.journeys_dropped = b.verdict_dropped;
        self.journeys_unknown = b.unknown;
        self.journeys_idle = b.idle;
        self.journeys_evicted = b.evicted;
        self.journeys_shutdown = b.shutdown;
        self.late_reads = b.late_terminal;
        self.late_joined = b.late_joined;
        self.joined = b.joined;
        self.unjoined = b.unjoined;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journey::{End, Hop};
    use crate::plugin_host::HookInfo;
    use vnt_plugin_api::{Direction, Flow, PacketObservation};

    fn step(plugin: u16, hook: u16, ts: u64, substep: Option<(u16, u64)>) -> Hop {
        Hop {
            plugin,
            obs: PacketObservation {
                hook,
                ts_ns: ts,
                substep,
                ..Default::default()
            },
        }
    }

    #[test]
    fn a_substep_nests_under_the_nearest_hop_of_its_hook_before_or_after_it() {
        let hops = [
            step(0, 1, 100, None),              // 0: first datapath
            step(0, 9, 150, Some((1, 900))),    // 1: slow path of the second
            step(0, 10, 200, Some((9, 300))),   // 2: a step inside it
            step(0, 1, 910, None),              // 3: second datapath, after it
            step(1, 1, 950, None),              // 4: another plugin's hook 1
            step(1, 7, 990, Some((1, 995))),    // 5: under plugin 1's hook 1
            step(0, 11, 999, Some((42, 1000))), // 6: parent never came
        ];
        let p = parents(&hops);
        assert_eq!(p[0], (None, 0));
        assert_eq!(
            p[1],
            (Some(3), 1),
            "10 ns after it ended beats 50 ns before"
        );
        assert_eq!(p[2], (Some(1), 2), "a step inside a step");
        assert_eq!(p[3], (None, 0));
        assert_eq!(p[5], (Some(4), 1), "only its own plugin's hooks");
        assert_eq!(p[6], (None, 1), "no such hook: under the journey");
    }

    #[test]
    fn substeps_naming_each_other_do_not_loop() {
        let hops = [
            step(0, 1, 100, Some((2, 110))),
            step(0, 2, 105, Some((1, 110))),
        ];
        let p = parents(&hops);
        assert!(
            p.iter().any(|(parent, _)| parent.is_none()),
            "the loop is cut: {p:?}"
        );
        assert!(p.iter().all(|(_, d)| *d >= 1));
    }

    fn meta() -> PluginMeta {
        let hook = |id, name: &str, label: &str| HookInfo {
            id,
            terminal: false,
            name: name.into(),
            label: label.into(),
        };
        PluginMeta {
            abi_major: 1,
            abi_minor: 0,
            name: "veth".into(),
            version: "0.1.0".into(),
            description: String::new(),
            test_fixture: false,
            bpf_object: vec![],
            probes: vec![],
            hooks: vec![
                hook(1, "net:net_dev_start_xmit", "xmit"),
                hook(4, "skb:kfree_skb", "drop"),
            ],
            fields: vec![],
            metrics: vec![],
            tick_interval_ms: 0,
            joins_by_tcp_seq: false,
        }
    }

    fn hop(hook: u16, ts_ns: u64, netns: u32) -> Hop {
        Hop {
            plugin: 0,
            obs: PacketObservation {
                hook,
                ts_ns,
                cpu: 1,
                pkt_id: 0xabc,
                flow: Flow {
                    family: 4,
                    proto: 17,
                    saddr: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                    daddr: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                    sport: 1000,
                    dport: 53,
                },
                ifindex: 3,
                ifname: "veth-a".into(),
                netns,
                len: 64,
                direction: Direction::Tx,
                ..Default::default()
            },
        }
    }

    #[test]
    fn views_read_as_documented_and_share_their_names() {
        let dir = crate::testing::TempDir::new();
        let pid = dir.path().join("proc/42");
        std::fs::create_dir_all(pid.join("ns")).unwrap();
        std::os::unix::fs::symlink("net:[777]", pid.join("ns/net")).unwrap();
        std::fs::write(pid.join("comm"), "nginx\n").unwrap();
        std::fs::write(pid.join("cgroup"), "0::/c1\n").unwrap();
        let mut netns = NetnsResolver::new(dir.path().join("proc"), dir.path().join("none"));
        let metas = [meta()];
        let drops = DropReasons::from_pairs(&[(2, "NOT_SPECIFIED")]);
        let mut names = Names {
            plugins: &metas,
            drops: &drops,
            netns: &mut netns,
            procs: &ProcessNames::new(dir.path().join("none")),
            containers: &mut Containers::fixed([(
                777,
                ContainerInfo {
                    id: "c0ffee".into(),
                    name: "web".into(),
                    pod: Some("web-5d".into()),
                    pod_namespace: Some("shop".into()),
                },
            )]),
            clock: WallClock::with_offset(1_000_000_000),
        };
        let mut dropped = hop(4, 150, 0);
        dropped.obs.drop_reason = Some(2);
        dropped.obs.direction = Direction::None;
        let j = Journey {
            pkt_id: 0xabc,
            hops: vec![hop(1, 100, 777), hop(9, 120, 777), dropped],
            end: End::Dropped,
            verdict: Verdict::Dropped,
            intervals: vec![],
        };
        let a = JourneyView::new(&j, &mut names);
        let b = JourneyView::new(&j, &mut names);
        assert!(Arc::ptr_eq(&a.hops[0].hook, &b.hops[0].hook));
        assert!(Arc::ptr_eq(&a.hops[0].plugin, &a.hops[2].plugin));
        assert!(Arc::ptr_eq(
            a.hops[0]
                .netns_owner
                .as_ref()
                .unwrap()
                .comm
                .as_ref()
                .unwrap(),
            a.hops[1]
                .netns_owner
                .as_ref()
                .unwrap()
                .comm
                .as_ref()
                .unwrap(),
        ));
        // Pinned: the JSON of docs/output.md, field for field.
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            concat!(
                r#"{"type":"journey","trace_id":""#,
                "TRACE",
                r#"","pkt_id":"0000000000000abc","end":"dropped","closed":"dropped","#,
                r#""flow":{"src":"10.0.0.1","dst":"10.0.0.2","sport":1000,"dport":53,"proto":"udp","family":4},"#,
                r#""len":64,"start_unix_nano":1000000100,"duration_ns":50,"hops":["#,
                r#"{"hook":"net:net_dev_start_xmit","label":"xmit","plugin":"veth","interface":"veth-a","ifindex":3,"netns":777,"netns_owner":{"pid":42,"comm":"nginx","cgroup":"/c1"},"container":{"id":"c0ffee","name":"web","pod":"web-5d","pod_namespace":"shop"},"direction":"tx","cpu":1,"len":64,"ts_unix_nano":1000000100,"latency_ns":0},"#,
                r#"{"hook":"hook-9","label":"","plugin":"veth","interface":"veth-a","ifindex":3,"netns":777,"netns_owner":{"pid":42,"comm":"nginx","cgroup":"/c1"},"container":{"id":"c0ffee","name":"web","pod":"web-5d","pod_namespace":"shop"},"direction":"tx","cpu":1,"len":64,"ts_unix_nano":1000000120,"latency_ns":20},"#,
                r#"{"hook":"skb:kfree_skb","label":"drop","plugin":"veth","interface":"veth-a","ifindex":3,"netns":0,"direction":"-","cpu":1,"len":64,"ts_unix_nano":1000000150,"latency_ns":30,"drop":{"reason":"NOT_SPECIFIED","code":2}}"#,
                "]}"
            )
            .replace("TRACE", &ids::hex(&ids::trace_id(0xabc)))
        );
    }
}

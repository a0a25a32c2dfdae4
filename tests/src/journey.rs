//! The agent's JSON output (`--output json`, one object per line), and checks
//! of a journey against the hops a topology predicts.
//!
//! Unknown fields are ignored so the format may grow.

use crate::topology::Link;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

/// Hook names as the agent reports them (`hop.hook`).
pub mod hooks {
    /// A device starts transmitting (the sender's veth, a bridge port).
    pub const XMIT: &str = "net:net_dev_start_xmit";
    /// A veth's peer queues the packet to the backlog.
    pub const RX: &str = "net:netif_rx";
    /// The stack (or the bridge) takes the packet from a device.
    pub const RECEIVE: &str = "net:netif_receive_skb";
    /// The packet is freed with a drop reason.
    pub const DROP: &str = "skb:kfree_skb";
    /// A process reads the packet from its socket (the journey's end).
    pub const DELIVER: &str = "skb:skb_copy_datagram_iovec";
}

/// The verdict of a journey: what became of the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JourneyEnd {
    /// It reached a socket or the local stack.
    Delivered,
    /// It left through the last device seen.
    Forwarded,
    /// The packet was dropped (the last hop carries `drop`).
    Dropped,
    /// Nothing says.
    Unknown,
    /// A value this harness does not know yet.
    #[serde(other)]
    Other,
}

/// A process a hook named.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Process {
    pub pid: u32,
    #[serde(default)]
    pub comm: Option<String>,
}

/// The process owning a hop's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NetnsOwner {
    pub pid: u32,
    #[serde(default)]
    pub comm: Option<String>,
}

/// The container whose namespace a hop happened in, as its runtime names it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HopContainer {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub pod: Option<String>,
    #[serde(default)]
    pub pod_namespace: Option<String>,
}

/// The packet's 5-tuple.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    #[serde(default)]
    pub sport: u16,
    #[serde(default)]
    pub dport: u16,
    pub proto: String,
    pub family: u8,
}

/// Why a packet was dropped, on the hop where its journey ended.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HopDrop {
    /// The kernel's `enum skb_drop_reason` name without its prefix, e.g. `NETFILTER_DROP`.
    pub reason: String,
    #[serde(default)]
    pub code: u32,
}

/// One observation of the packet.
#[derive(Debug, Clone, Deserialize)]
pub struct Hop {
    pub hook: String,
    #[serde(default)]
    pub label: String,
    #[serde(default)]
    pub plugin: String,
    #[serde(default)]
    pub interface: String,
    #[serde(default)]
    pub ifindex: u32,
    #[serde(default)]
    pub netns: u64,
    #[serde(default)]
    pub netns_name: Option<String>,
    #[serde(default)]
    pub netns_owner: Option<NetnsOwner>,
    #[serde(default)]
    pub container: Option<HopContainer>,
    #[serde(default)]
    pub process: Option<Process>,
    #[serde(default)]
    pub len: u32,
    #[serde(default)]
    pub direction: Option<String>,
    #[serde(default)]
    pub cpu: u32,
    pub ts_unix_nano: u64,
    #[serde(default)]
    pub latency_ns: u64,
    #[serde(default)]
    pub drop: Option<HopDrop>,
    /// For a substep: the hook of the hop it is nested in.
    #[serde(default)]
    pub parent_hook: Option<String>,
    /// Values of the plugin's declared fields, by attribute key.
    #[serde(default)]
    pub attrs: BTreeMap<String, serde_json::Value>,
    /// For a step nested in a hop: how long it took.
    #[serde(default)]
    pub duration_ns: Option<u64>,
}

/// A `{"type":"journey",...}` line.
#[derive(Debug, Clone, Deserialize)]
pub struct Journey {
    pub trace_id: String,
    pub pkt_id: String,
    pub end: JourneyEnd,
    #[serde(default)]
    pub delivered_to: Option<String>,
    #[serde(default)]
    pub process: Option<Process>,
    #[serde(default)]
    pub closed: String,
    pub flow: Flow,
    #[serde(default)]
    pub len: u32,
    #[serde(default)]
    pub start_unix_nano: u64,
    #[serde(default)]
    pub duration_ns: u64,
    pub hops: Vec<Hop>,
}

/// Counters kept by the eBPF side.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct KernelCounters {
    pub seen: u64,
    pub filtered: u64,
    pub unsampled: u64,
    pub emitted: u64,
    pub lost: u64,
    pub not_ip: u64,
    /// Packets lost whole (ring full at their first hop): no journey.
    pub lost_packets: u64,
    /// Hops lost mid-path: journeys with a gap.
    pub lost_gaps: u64,
    /// Later hops of packets lost whole.
    pub lost_follow: u64,
}

/// One plugin's state in the summary.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PluginSummary {
    pub disabled: bool,
    /// Why the plugin was disabled (a decoder panic), when it was.
    pub disabled_reason: Option<String>,
    /// Program name -> the hook it was attached as, e.g. `tp_btf:net_dev_start_xmit`.
    pub probes: BTreeMap<String, String>,
    /// Its kernel counters, and the same per CPU.
    pub kernel: KernelCounters,
    pub kernel_per_cpu: Vec<KernelCounters>,
    /// Ring-buffer records read.
    pub records: u64,
    /// Its declared metrics: one entry per label set.
    #[serde(default)]
    pub metrics: Vec<MetricSeries>,
    #[serde(default)]
    pub metric_overflow: u64,
}

/// One series of a plugin metric in the summary.
#[derive(Debug, Clone, Deserialize)]
pub struct MetricSeries {
    pub metric: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    pub points: u64,
}

/// The `{"type":"summary",...}` line the agent prints last.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Summary {
    pub journeys: u64,
    pub journeys_delivered: u64,
    pub journeys_forwarded: u64,
    pub journeys_dropped: u64,
    pub journeys_unknown: u64,
    pub journeys_idle: u64,
    pub journeys_evicted: u64,
    pub late_reads: u64,
    pub joined: u64,
    pub unjoined: u64,
    pub observations: u64,
    pub decode_errors: u64,
    pub events_lost: u64,
    /// Packets lost whole in the kernel (`kernel.lost_packets`).
    pub packets_lost: u64,
    pub kernel: KernelCounters,
    pub plugins: BTreeMap<String, PluginSummary>,
    /// Ring-buffer records read.
    pub records: u64,
    /// Journeys and connection records not written: stdout did not keep up.
    pub output_dropped: u64,
    /// Spans delivered over OTLP (0 without OTLP).
    pub spans_exported: u64,
    /// Spans not delivered over OTLP.
    pub spans_dropped: u64,
    /// OTLP details (`spans_dropped_queue_full`, ...), when OTLP is on.
    pub otlp: Option<serde_json::Value>,
}

/// A hop a packet must take: hook, interface and namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedHop {
    pub hook: &'static str,
    pub interface: String,
    pub ifindex: u32,
    pub netns: u64,
}

impl ExpectedHop {
    /// `hook` on `link`.
    pub fn at(hook: &'static str, link: &Link) -> ExpectedHop {
        ExpectedHop {
            hook,
            interface: link.name.clone(),
            ifindex: link.ifindex,
            netns: link.netns_inode,
        }
    }

    /// Whether `hop` is this hop.
    pub fn matches(&self, hop: &Hop) -> bool {
        hop.hook == self.hook
            && hop.interface == self.interface
            && hop.ifindex == self.ifindex
            && hop.netns == self.netns
    }
}

impl Journey {
    /// Whether the journey's flow is `proto` from `src` to `dst:dport`.
    pub fn is_flow(&self, src: IpAddr, dst: IpAddr, proto: &str, dport: u16) -> bool {
        self.flow.src == src
            && self.flow.dst == dst
            && self.flow.proto == proto
            && self.flow.dport == dport
    }

    /// Whether either port of the flow is `port`.
    pub fn has_port(&self, port: u16) -> bool {
        self.flow.sport == port || self.flow.dport == port
    }

    /// The hops at devices: without a final socket read (`deliver`), which
    /// ends the journey wherever the packet was read.
    pub fn device_hops(&self) -> &[Hop] {
        match self.hops.split_last() {
            Some((last, rest)) if last.hook == hooks::DELIVER => rest,
            _ => &self.hops,
        }
    }

    /// Checks that the device hops ([`Self::device_hops`]) are exactly
    /// `expected`, in order (hook, interface, ifindex, netns inode), that
    /// timestamps never decrease and that every hop after the first has a
    /// positive latency. The error describes the journey.
    pub fn check_hops(&self, expected: &[ExpectedHop]) -> Result<(), String> {
        let mut problems = Vec::new();
        let hops = self.device_hops();
        if hops.len() != expected.len() {
            problems.push(format!("{} hops, expected {}", hops.len(), expected.len()));
        }
        for (i, (hop, want)) in hops.iter().zip(expected).enumerate() {
            if !want.matches(hop) {
                problems.push(format!(
                    "hop {i} is {} on {}#{} netns {}, expected {} on {}#{} netns {}",
                    hop.hook,
                    hop.interface,
                    hop.ifindex,
                    hop.netns,
                    want.hook,
                    want.interface,
                    want.ifindex,
                    want.netns
                ));
            }
        }
        for (i, pair) in self.hops.windows(2).enumerate() {
            if pair[1].ts_unix_nano < pair[0].ts_unix_nano {
                problems.push(format!("hop {} is earlier than hop {i}", i + 1));
            }
            if pair[1].latency_ns == 0 {
                problems.push(format!("hop {} has latency_ns 0", i + 1));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("{}: {}", problems.join("; "), self.describe()))
        }
    }

    /// Checks that `expected` occur among the hops in this order (other
    /// hops may come between them). The error describes the journey.
    pub fn check_hops_in_order(&self, expected: &[ExpectedHop]) -> Result<(), String> {
        let mut next = 0;
        for want in expected {
            match self.hops[next..].iter().position(|h| want.matches(h)) {
                Some(i) => next += i + 1,
                None => {
                    return Err(format!(
                        "no {} on {}#{} netns {} in order: {}",
                        want.hook,
                        want.interface,
                        want.ifindex,
                        want.netns,
                        self.describe()
                    ))
                }
            }
        }
        Ok(())
    }

    /// The first hop matching `want`.
    pub fn hop(&self, want: &ExpectedHop) -> Option<&Hop> {
        self.hops.iter().find(|h| want.matches(h))
    }

    /// Nanoseconds from the first hop matching `from` to the first later hop
    /// matching `to` (timestamp difference).
    pub fn ns_between(&self, from: &ExpectedHop, to: &ExpectedHop) -> Option<u64> {
        let i = self.hops.iter().position(|h| from.matches(h))?;
        let j = i + 1 + self.hops[i + 1..].iter().position(|h| to.matches(h))?;
        self.hops[j]
            .ts_unix_nano
            .checked_sub(self.hops[i].ts_unix_nano)
    }

    /// The last hop, if any.
    pub fn last_hop(&self) -> Option<&Hop> {
        self.hops.last()
    }

    /// One line for messages: flow, end and `hook@interface(+latency)` per hop.
    pub fn describe(&self) -> String {
        let f = &self.flow;
        let mut s = format!(
            "journey {} {} {}:{} -> {}:{} end={:?} hops=[",
            self.pkt_id, f.proto, f.src, f.sport, f.dst, f.dport, self.end
        );
        for (i, h) in self.hops.iter().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            let _ = write!(
                s,
                "{}@{}#{}/ns{} +{}ns",
                h.hook, h.interface, h.ifindex, h.netns, h.latency_ns
            );
            if let Some(d) = &h.drop {
                let _ = write!(s, " drop={}({})", d.reason, d.code);
            }
        }
        s.push(']');
        s
    }
}

/// The median of a list of numbers (the upper middle for even lengths).
pub fn median(values: &mut [u64]) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    Some(values[values.len() / 2])
}

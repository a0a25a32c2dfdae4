//! A journey as OpenTelemetry spans (the span model of docs/otel.md), as
//! the SDK's `SpanData`. The export thread does not build these: it writes
//! the same spans straight as protobuf (`encode.rs`, held to these byte for
//! byte by its tests); this is the model's readable definition.
//!
//! One trace per packet: the trace id comes from the packet id alone
//! (`ids::trace_id`), so every agent that sees the packet writes into the same
//! trace without talking to the others. Per agent and journey there is one
//! root span, named after the flow (`udp 10.0.0.1 -> 10.0.0.2:53`: no source
//! port, which would make every name unique), and one child span per hop,
//! named after its hook and device (`xmit veth1`, `deliver ping`).
//!
//! Hops are strictly ordered: each hop's span starts where the previous one
//! ended and ends at the hop's own time, laid out on whole microseconds
//! because Jaeger orders and shows spans by whole microseconds
//! ([`HopClock`]); the exact time since the previous hop is in
//! `vnt.latency_ns` and the order in `vnt.hop.index`. Substeps (an OVS
//! upcall) are children of the hop they are nested in; CPU intervals are
//! children of the root.
//!
//! A drop sets the error status on the dropping hop only (one error per
//! dropped journey), with the kernel's reason in `error.type` and in a
//! `packet dropped` event placed inside that span. The root carries the
//! verdict (`vnt.journey.end`) and, when dropped, `error.type` as a plain
//! attribute for searches.
//!
//! Span ids are deterministic too: the root's from the packet id, the host
//! identity and the journey's start, the hops' from the root's and their
//! index; so two hosts never collide while sharing the packet's trace.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    Event, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use crate::export::ids;
use crate::export::view::{HopView, JourneyView};
use vnt_plugin_api::Value;

const US: u64 = 1_000;

fn floor_us(ns: u64) -> u64 {
    ns - ns % US
}

fn ceil_us(ns: u64) -> u64 {
    floor_us(ns.saturating_add(US - 1))
}

/// Where each hop's span starts and ends. Jaeger keeps and orders spans by
/// whole microseconds: two hops in one microsecond would tie and be listed
/// in any order, and truncated starts and durations would leave gaps. So
/// hop spans are laid out on whole microseconds: the first starts at its
/// hop's microsecond, each next one starts where the previous ended, and
/// each ends at its hop's time rounded up to a microsecond, at least 1 us
/// after it started. A boundary moves by less than 1 us unless hops come
/// less than 1 us apart; the exact time since the previous hop is the
/// span's `vnt.latency_ns`. Substeps keep their own times.
#[derive(Debug, Default)]
pub struct HopClock {
    prev_end: Option<u64>,
}

impl HopClock {
    /// (start, end) of `h`'s span; call for every hop in order.
    pub fn next(&mut self, h: &HopView) -> (u64, u64) {
        if h.parent_hook.is_some() {
            let start = h.ts_unix_nano;
            let end = start.saturating_add(h.duration_ns.unwrap_or(0));
            return (start, end.max(start.saturating_add(1)));
        }
        let start = self.prev_end.unwrap_or(floor_us(h.ts_unix_nano));
        let end = ceil_us(h.ts_unix_nano).max(start.saturating_add(US));
        self.prev_end = Some(end);
        (start, end)
    }
}

/// The root span's (start, end): from the first hop span's start to the
/// last one's end ([`HopClock`]).
pub fn root_bounds(j: &JourneyView) -> (u64, u64) {
    let mut clock = HopClock::default();
    let start = floor_us(j.start_unix_nano);
    let mut end = j.start_unix_nano.saturating_add(j.duration_ns);
    for h in &j.hops {
        end = end.max(clock.next(h).1);
    }
    (start, end.max(start.saturating_add(1)))
}

/// When a drop event is placed: 1 ns before its span ends, which in
/// Jaeger's microseconds is inside the span and before the trace's end (an
/// event past the end hides behind "show all").
pub fn drop_event_time(span_start: u64, span_end: u64) -> u64 {
    span_end.saturating_sub(1).max(span_start)
}

/// The root span's name: `<proto> <src> -> <dst>[:<dport>]`.
pub fn root_name(j: &JourneyView, out: &mut String) {
    use std::fmt::Write;
    let f = &j.flow;
    out.clear();
    let _ = write!(out, "{} {} -> ", f.proto, f.src);
    match (f.family, f.dport) {
        (_, 0) => out.push_str(&f.dst),
        (6, p) => {
            let _ = write!(out, "[{}]:{p}", f.dst);
        }
        (_, p) => {
            let _ = write!(out, "{}:{p}", f.dst);
        }
    }
}

/// A hop span's name: its label (or hook) and device, or the process for a
/// hook without a device (a socket read: `deliver ping`).
pub fn hop_name(h: &HopView, out: &mut String) {
    out.clear();
    out.push_str(if h.label.is_empty() {
        &h.hook
    } else {
        &h.label
    });
    let what: Option<&str> = if !h.interface.is_empty() {
        Some(&h.interface)
    } else {
        h.process.as_ref().and_then(|p| p.comm.as_deref())
    };
    if let Some(w) = what {
        out.push(' ');
        out.push_str(w);
    }
}

/// Number of spans `j` becomes.
pub fn span_count(j: &JourneyView) -> usize {
    1 + j.hops.len() + j.cpu_intervals.len()
}

fn time(unix_ns: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(unix_ns)
}

/// `container.id` from a cgroup path: the 64-hex-digit id that docker,
/// containerd, CRI-O and podman put in their scopes
/// (`/system.slice/docker-<id>.scope`, `/kubepods/.../cri-containerd-<id>.scope`).
pub fn container_id(cgroup: &str) -> Option<&str> {
    cgroup
        .split(['/', '-', '.', ':'])
        .find(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The container attributes of a hop, by OpenTelemetry's semantic
/// conventions: `container.id` and `container.name` from the runtime
/// (`crate::containers`), with `k8s.pod.name` and `k8s.namespace.name` where
/// its labels carry them; without the runtime, `container.id` alone from the
/// namespace owner's cgroup path.
pub fn container_attributes(h: &HopView) -> [Option<(&'static str, &str)>; 4] {
    match &h.container {
        Some(c) => [
            Some(("container.id", &c.id)),
            Some(("container.name", &c.name)),
            c.pod.as_deref().map(|p| ("k8s.pod.name", p)),
            c.pod_namespace
                .as_deref()
                .map(|n| ("k8s.namespace.name", n)),
        ],
        None => [
            h.netns_owner
                .as_ref()
                .and_then(|o| o.cgroup.as_deref())
                .and_then(container_id)
                .map(|id| ("container.id", id)),
            None,
            None,
            None,
        ],
    }
}

fn hop_attributes(h: &HopView, index: Option<u32>) -> Vec<KeyValue> {
    let mut a = Vec::with_capacity(16);
    if let Some(i) = index {
        a.push(KeyValue::new("vnt.hop.index", i64::from(i)));
    }
    a.push(KeyValue::new("vnt.hook", h.hook.clone()));
    a.push(KeyValue::new("vnt.hook.label", h.label.clone()));
    a.push(KeyValue::new("vnt.plugin", h.plugin.clone()));
    a.push(KeyValue::new("network.interface.name", h.interface.clone()));
    a.push(KeyValue::new("vnt.ifindex", i64::from(h.ifindex)));
    a.push(KeyValue::new("vnt.netns", i64::from(h.netns)));
    if let Some(n) = &h.netns_name {
        a.push(KeyValue::new("vnt.netns.name", n.clone()));
    }
    if let Some(o) = &h.netns_owner {
        a.push(KeyValue::new("vnt.netns.pid", i64::from(o.pid)));
        if let Some(c) = &o.comm {
            a.push(KeyValue::new("vnt.netns.comm", c.clone()));
        }
        if let Some(cg) = &o.cgroup {
            a.push(KeyValue::new("vnt.netns.cgroup", cg.clone()));
        }
    }
    for (key, value) in container_attributes(h).into_iter().flatten() {
        a.push(KeyValue::new(key, value.to_string()));
    }
    if let Some(p) = &h.process {
        a.push(KeyValue::new("process.pid", i64::from(p.pid)));
        if let Some(c) = &p.comm {
            a.push(KeyValue::new("process.executable.name", c.clone()));
        }
    }
    a.push(KeyValue::new("vnt.direction", h.direction));
    match h.direction {
        "tx" => a.push(KeyValue::new("network.io.direction", "transmit")),
        "rx" => a.push(KeyValue::new("network.io.direction", "receive")),
        _ => {}
    }
    a.push(KeyValue::new("cpu.logical_number", i64::from(h.cpu)));
    a.push(KeyValue::new("vnt.packet.length", i64::from(h.len)));
    a.push(KeyValue::new("vnt.latency_ns", h.latency_ns as i64));
    if let Some(d) = &h.drop {
        a.push(KeyValue::new("error.type", d.reason.clone()));
        a.push(KeyValue::new("vnt.drop.reason", d.reason.clone()));
        a.push(KeyValue::new("vnt.drop.code", i64::from(d.code)));
    }
    for (k, v) in &h.attrs.0 {
        a.push(attr_value(k, v));
    }
    a
}

/// A plugin field's value as an attribute, as encode.rs writes it.
fn attr_value(key: &Arc<str>, value: &Value) -> KeyValue {
    let key = opentelemetry::Key::new(key.to_string());
    match value {
        Value::U64(n) => match i64::try_from(*n) {
            Ok(i) => KeyValue::new(key, i),
            Err(_) => KeyValue::new(key, n.to_string()),
        },
        Value::I64(n) => KeyValue::new(key, *n),
        Value::F64(n) => KeyValue::new(key, *n),
        Value::Str(t) => KeyValue::new(key, t.to_string()),
    }
}

fn root_attributes(j: &JourneyView) -> Vec<KeyValue> {
    let f = &j.flow;
    let mut a = Vec::with_capacity(14);
    a.push(KeyValue::new("network.transport", f.proto.clone()));
    a.push(KeyValue::new(
        "network.type",
        if f.family == 6 { "ipv6" } else { "ipv4" },
    ));
    a.push(KeyValue::new("source.address", f.src.clone()));
    if f.sport != 0 {
        a.push(KeyValue::new("source.port", i64::from(f.sport)));
    }
    a.push(KeyValue::new("destination.address", f.dst.clone()));
    if f.dport != 0 {
        a.push(KeyValue::new("destination.port", i64::from(f.dport)));
    }
    a.push(KeyValue::new("vnt.packet.id", j.pkt_id.clone()));
    a.push(KeyValue::new("vnt.packet.length", i64::from(j.len)));
    a.push(KeyValue::new("vnt.journey.end", j.end));
    if let Some(to) = j.delivered_to {
        a.push(KeyValue::new("vnt.delivered.to", to));
    }
    if let Some(p) = &j.process {
        a.push(KeyValue::new("process.pid", i64::from(p.pid)));
        if let Some(c) = &p.comm {
            a.push(KeyValue::new("process.executable.name", c.clone()));
        }
    }
    a.push(KeyValue::new("vnt.journey.closed", j.closed));
    let hops = j.hops.iter().filter(|h| h.parent_hook.is_none()).count();
    a.push(KeyValue::new("vnt.journey.hops", hops as i64));
    if let Some(first) = j.hops.first() {
        a.push(KeyValue::new("vnt.plugin", first.plugin.clone()));
    }
    if let Some(d) = j.hops.iter().rev().find_map(|h| h.drop.as_ref()) {
        a.push(KeyValue::new("error.type", d.reason.clone()));
    }
    a
}

#[allow(clippy::too_many_arguments)]
fn span(
    trace: TraceId,
    id: [u8; 8],
    parent: SpanId,
    name: Cow<'static, str>,
    start: u64,
    end: u64,
    attributes: Vec<KeyValue>,
    events: Vec<Event>,
    status: Status,
    scope: &InstrumentationScope,
) -> SpanData {
    let mut span_events = SpanEvents::default();
    span_events.events = events;
    SpanData {
        span_context: SpanContext::new(
            trace,
            SpanId::from_bytes(id),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        ),
        parent_span_id: parent,
        parent_span_is_remote: false,
        span_kind: SpanKind::Internal,
        name,
        start_time: time(start),
        // Backends treat zero-length spans as broken (Jaeger rewrites them
        // with a warning): a hop with no time since the previous one (the
        // first hop) lasts 1 ns. `vnt.latency_ns` keeps the exact value.
        end_time: time(end.max(start + 1)),
        attributes,
        dropped_attributes_count: 0,
        events: span_events,
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    }
}

/// Append the spans of `j`, seen by the host whose key is `host`, to `out`
/// (root first, then hops in time order, then CPU intervals).
pub fn journey_spans(
    j: &JourneyView,
    host: u64,
    scope: &InstrumentationScope,
    out: &mut Vec<SpanData>,
) {
    let trace = TraceId::from_bytes(ids::trace_id(j.id));
    let root_id = ids::root_span_id(j.id, host, j.start_unix_nano);
    let root = SpanId::from_bytes(root_id);
    let (root_start, root_end) = root_bounds(j);
    let mut name = String::new();
    root_name(j, &mut name);
    out.push(span(
        trace,
        root_id,
        SpanId::INVALID,
        name.into(),
        root_start,
        root_end,
        root_attributes(j),
        vec![],
        Status::Unset,
        scope,
    ));

    let mut clock = HopClock::default();
    let mut index = 0u32;
    for (i, h) in j.hops.iter().enumerate() {
        let id = ids::child_span_id(root_id, i as u32 + 1);
        let mut name = String::new();
        hop_name(h, &mut name);
        let (start, end) = clock.next(h);
        // A substep under the hop (or substep) the view nested it in.
        let parent = h.parent.map_or(root, |k| {
            SpanId::from_bytes(ids::child_span_id(root_id, k as u32 + 1))
        });
        let hop_index = h.parent_hook.is_none().then(|| {
            index += 1;
            index
        });
        let (status, events) = match &h.drop {
            Some(d) => (
                Status::Error {
                    description: d.reason.clone().into(),
                },
                vec![Event::new(
                    "packet dropped",
                    time(drop_event_time(start, end)),
                    vec![
                        KeyValue::new("vnt.drop.reason", d.reason.clone()),
                        KeyValue::new("vnt.drop.code", i64::from(d.code)),
                        KeyValue::new("network.interface.name", h.interface.clone()),
                    ],
                    0,
                )],
            ),
            None => (Status::Unset, vec![]),
        };
        out.push(span(
            trace,
            id,
            parent,
            name.into(),
            start,
            end,
            hop_attributes(h, hop_index),
            events,
            status,
            scope,
        ));
    }

    let base = j.hops.len() as u32 + 1;
    for (k, iv) in j.cpu_intervals.iter().enumerate() {
        out.push(span(
            trace,
            ids::child_span_id(root_id, base + k as u32),
            root,
            format!("{} cpu {}", iv.plugin, iv.hook).into(),
            iv.start_unix_nano,
            iv.start_unix_nano.saturating_add(iv.duration_ns),
            vec![
                KeyValue::new("vnt.plugin", iv.plugin.clone()),
                KeyValue::new("vnt.hook", iv.hook.clone()),
                KeyValue::new("cpu.logical_number", i64::from(iv.cpu)),
                KeyValue::new("vnt.interval.detail", i64::from(iv.detail)),
            ],
            vec![],
            Status::Unset,
            scope,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::view::{DropView, FlowView, IntervalView, OwnerView};
    use opentelemetry::Value;

    fn hop(hook: &str, label: &str, iface: &str, ts: u64, latency: u64) -> HopView {
        HopView {
            hook: hook.into(),
            label: label.into(),
            plugin: "veth".into(),
            interface: iface.into(),
            ifindex: 7,
            netns: 4026532000,
            netns_name: Some("c1".into()),
            netns_owner: Some(OwnerView {
                pid: 42,
                comm: Some("nginx".into()),
                cgroup: Some(format!("/system.slice/docker-{}.scope", "ab".repeat(32)).into()),
            }),
            container: None,
            direction: "tx",
            process: None,
            cpu: 1,
            len: 100,
            ts_unix_nano: ts,
            latency_ns: latency,
            drop: None,
            parent_hook: None,
            parent: None,
            depth: 0,
            duration_ns: None,
            attrs: Default::default(),
        }
    }

    fn journey() -> JourneyView {
        let mut drop = hop("skb:kfree_skb", "drop", "h2", 1_000_900, 400);
        drop.drop = Some(DropView {
            reason: "NETFILTER_DROP".into(),
            code: 12,
        });
        let mut sub = hop("ovs:upcall", "upcall", "h1", 1_000_200, 0);
        sub.parent_hook = Some("net:netif_rx".into());
        sub.parent = Some(1);
        sub.depth = 1;
        sub.duration_ns = Some(50);
        JourneyView {
            kind: "journey",
            trace_id: ids::hex(&ids::trace_id(99)),
            pkt_id: format!("{:016x}", 99),
            id: 99,
            end: "dropped",
            delivered_to: None,
            process: None,
            closed: "dropped",
            flow: FlowView {
                src: "10.0.0.1".into(),
                dst: "10.0.0.2".into(),
                sport: 4000,
                dport: 53,
                proto: "udp".into(),
                family: 4,
            },
            len: 100,
            start_unix_nano: 1_000_000,
            duration_ns: 900,
            hops: vec![
                hop("net:net_dev_start_xmit", "xmit", "c1", 1_000_000, 0),
                hop("net:netif_rx", "backlog", "h1", 1_000_100, 100),
                sub,
                hop("net:netif_receive_skb", "receive", "h1", 1_000_500, 400),
                drop,
            ],
            cpu_intervals: vec![IntervalView {
                plugin: "xen-sched".into(),
                hook: "steal".into(),
                cpu: 1,
                start_unix_nano: 1_000_010,
                duration_ns: 20,
                detail: 2,
            }],
        }
    }

    fn attr<'a>(s: &'a SpanData, key: &str) -> Option<&'a Value> {
        s.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    fn ns(t: SystemTime) -> u64 {
        t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64
    }

    #[test]
    fn one_root_and_one_span_per_hop_timed_by_hop_latency() {
        let j = journey();
        let scope = InstrumentationScope::builder("vnt-agent").build();
        let mut out = vec![];
        journey_spans(&j, 5, &scope, &mut out);
        assert_eq!(out.len(), span_count(&j));
        let trace = TraceId::from_bytes(ids::trace_id(99));
        assert!(out.iter().all(|s| s.span_context.trace_id() == trace));
        let root = &out[0];
        assert_eq!(root.parent_span_id, SpanId::INVALID);
        assert_eq!(root.name, "udp 10.0.0.1 -> 10.0.0.2:53");
        assert_eq!(ns(root.start_time), 1_000_000);
        assert_eq!(ns(root.end_time), 1_004_000, "4 hops, 1 us each at least");
        let root_id = root.span_context.span_id();
        // hops: parent is the root; each starts where the previous ended
        // and ends at its own time, so they sort in path order.
        let mut prev_end = None;
        let mut index = 0;
        for (s, h) in out[1..].iter().zip(&j.hops) {
            if h.parent_hook.is_some() {
                continue;
            }
            index += 1;
            assert_eq!(s.parent_span_id, root_id);
            assert_eq!(attr(s, "vnt.hop.index"), Some(&Value::from(index)));
            assert!(ns(s.end_time) >= h.ts_unix_nano);
            assert!(ns(s.end_time) - ns(s.start_time) >= 1_000);
            assert_eq!(ns(s.start_time) % 1_000, 0, "whole microseconds");
            assert_eq!(ns(s.end_time) % 1_000, 0, "whole microseconds");
            if let Some(p) = prev_end {
                assert_eq!(
                    ns(s.start_time),
                    p,
                    "{} starts where the last ended",
                    s.name
                );
                assert!(ns(s.start_time) < ns(s.end_time));
            }
            prev_end = Some(ns(s.end_time));
            assert_eq!(
                attr(s, "network.interface.name"),
                Some(&Value::from(h.interface.clone()))
            );
            assert_eq!(attr(s, "vnt.hook"), Some(&Value::from(h.hook.clone())));
            assert_eq!(attr(s, "vnt.plugin"), Some(&Value::from("veth")));
            assert_eq!(attr(s, "vnt.netns"), Some(&Value::from(4026532000i64)));
        }
        assert_eq!(out[1].name, "xmit c1");
        assert_eq!(out[2].name, "backlog h1");
        assert_eq!(ns(out[1].start_time), 1_000_000);
        assert_eq!(ns(out[1].end_time), 1_001_000, "first hop: 1 us, not 0");
        assert_eq!(ns(out[2].start_time), 1_001_000, "strictly after the first");
        // the substep nests under the netif_rx hop and lasts its duration
        assert_eq!(out[3].parent_span_id, out[2].span_context.span_id());
        assert_eq!(ns(out[3].end_time) - ns(out[3].start_time), 50);
        // the CPU interval hangs off the root
        assert_eq!(out[6].parent_span_id, root_id);
        // ids are unique within the trace
        let ids: std::collections::HashSet<_> =
            out.iter().map(|s| s.span_context.span_id()).collect();
        assert_eq!(ids.len(), out.len());
        assert_eq!(
            attr(&out[1], "container.id"),
            Some(&Value::from("ab".repeat(32)))
        );
        let mut named = hop("net:netif_receive_skb", "receive", "eth0", 5, 0);
        named.container = Some(std::sync::Arc::new(crate::containers::ContainerInfo {
            id: "cd".repeat(32).into(),
            name: "web".into(),
            pod: Some("web-5d".into()),
            pod_namespace: None,
        }));
        let keys: Vec<(&str, &str)> = container_attributes(&named).into_iter().flatten().collect();
        let id = "cd".repeat(32);
        assert_eq!(
            keys,
            [
                ("container.id", id.as_str()),
                ("container.name", "web"),
                ("k8s.pod.name", "web-5d")
            ],
            "the runtime's id wins over the cgroup's"
        );
        assert_eq!(
            attr(&out[1], "network.io.direction"),
            Some(&Value::from("transmit"))
        );
        assert_eq!(attr(root, "destination.port"), Some(&Value::from(53i64)));
    }

    #[test]
    fn a_drop_is_an_error_with_the_reason_in_an_event() {
        let j = journey();
        let scope = InstrumentationScope::builder("vnt-agent").build();
        let mut out = vec![];
        journey_spans(&j, 5, &scope, &mut out);
        let drop = &out[5];
        assert_eq!(
            drop.status,
            Status::Error {
                description: "NETFILTER_DROP".into()
            }
        );
        assert_eq!(
            attr(drop, "error.type"),
            Some(&Value::from("NETFILTER_DROP"))
        );
        let ev = &drop.events.events[0];
        assert_eq!(ev.name, "packet dropped");
        assert!(ev
            .attributes
            .iter()
            .any(|kv| kv.key.as_str() == "vnt.drop.reason"
                && kv.value == Value::from("NETFILTER_DROP")));
        // Inside its span, at least 1 us before the trace ends.
        assert!(ns(ev.timestamp) >= ns(drop.start_time) && ns(ev.timestamp) < ns(drop.end_time));
        assert!(ns(ev.timestamp) < ns(out[0].end_time));
        // One error per dropped journey: the root and the other hops are not.
        let errors = out
            .iter()
            .filter(|s| matches!(s.status, Status::Error { .. }))
            .count();
        assert_eq!(errors, 1);
        assert_eq!(
            attr(&out[0], "error.type"),
            Some(&Value::from("NETFILTER_DROP"))
        );
    }

    #[test]
    fn two_hosts_share_the_trace_but_no_span_id() {
        let j = journey();
        let scope = InstrumentationScope::builder("vnt-agent").build();
        let (mut a, mut b) = (vec![], vec![]);
        journey_spans(&j, ids::host_key(&["a"]), &scope, &mut a);
        journey_spans(&j, ids::host_key(&["b"]), &scope, &mut b);
        assert_eq!(a[0].span_context.trace_id(), b[0].span_context.trace_id());
        let ids_a: std::collections::HashSet<_> =
            a.iter().map(|s| s.span_context.span_id()).collect();
        assert!(b.iter().all(|s| !ids_a.contains(&s.span_context.span_id())));
    }

    #[test]
    fn container_ids_from_cgroup_paths() {
        let id = "0123456789abcdef".repeat(4);
        for path in [
            format!("/system.slice/docker-{id}.scope"),
            format!("/kubepods/besteffort/pod1/cri-containerd-{id}.scope"),
            format!("/docker/{id}"),
            format!("/machine.slice/libpod-{id}.scope/container"),
        ] {
            assert_eq!(container_id(&path), Some(id.as_str()), "{path}");
        }
        assert_eq!(
            container_id("/user.slice/user-0.slice/session-1.scope"),
            None
        );
    }
}

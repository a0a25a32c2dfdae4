//! Journeys written straight into an OTLP `ExportTraceServiceRequest`
//! (protobuf), one batch at a time, without building spans as objects.
//!
//! The spans are exactly those of [`super::spans::journey_spans`] (the span
//! model of docs/otel.md), and the bytes exactly those opentelemetry-otlp
//! would send for them: a test holds the two byte for byte. Going through
//! `SpanData` cost about 20 allocations per span (the span's strings and
//! attributes, a copy of the batch for retries, the protobuf structs it is
//! converted to), which made the export thread the agent's busiest part;
//! here a batch is one buffer, written front to back (BENCHMARKS.md, "User
//! space: decode, journeys, OTLP export").
//!
//! The resource and the instrumentation scope are the same for every
//! request, so they are encoded once, by opentelemetry-proto and prost.

use bytes::Bytes;
use opentelemetry::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource as ProtoResource;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_sdk::Resource;
use prost::Message;

use super::spans::{
    container_attributes, drop_event_time, hop_name, root_bounds, root_name, HopClock,
};
use crate::export::ids;
use crate::export::view::{HopView, JourneyView, ProcessView};
use vnt_plugin_api::Value;

/// Protobuf wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

/// `SPAN_KIND_INTERNAL`.
const SPAN_KIND_INTERNAL: u64 = 1;
/// `STATUS_CODE_ERROR`.
const STATUS_CODE_ERROR: u64 = 2;
/// `SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK` with the W3C sampled flag, as
/// opentelemetry-proto sets them for a local parent.
const SPAN_FLAGS: u32 = 0x100 | 0x01;

/// Bytes reserved for the length of a nested message before its size is
/// known: enough for 2 MiB; a longer one is moved once to make room.
const LEN_RESERVE: usize = 3;

fn varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    // 1 byte per 7 bits, at least one.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn tag(buf: &mut Vec<u8>, field: u32, wire: u32) {
    varint(buf, u64::from(field << 3 | wire));
}

/// A length-delimited field, written even when empty (a oneof member).
fn bytes_always(buf: &mut Vec<u8>, field: u32, b: &[u8]) {
    tag(buf, field, LEN);
    varint(buf, b.len() as u64);
    buf.extend_from_slice(b);
}

/// A proto3 `string`/`bytes` field: omitted when empty.
fn bytes(buf: &mut Vec<u8>, field: u32, b: &[u8]) {
    if !b.is_empty() {
        bytes_always(buf, field, b);
    }
}

fn fixed64(buf: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        tag(buf, field, FIXED64);
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

fn uint(buf: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        tag(buf, field, VARINT);
        varint(buf, v);
    }
}

/// A nested message written by `f`; its length goes in front once known.
fn nested(buf: &mut Vec<u8>, field: u32, f: impl FnOnce(&mut Vec<u8>)) {
    tag(buf, field, LEN);
    let at = buf.len();
    buf.extend_from_slice(&[0; LEN_RESERVE]);
    f(buf);
    let len = buf.len() - at - LEN_RESERVE;
    let n = varint_len(len as u64);
    if n <= LEN_RESERVE {
        buf.copy_within(at + LEN_RESERVE.., at + n);
        buf.truncate(buf.len() - (LEN_RESERVE - n));
    } else {
        buf.splice(at..at, std::iter::repeat_n(0, n - LEN_RESERVE));
    }
    let mut v = len as u64;
    for b in &mut buf[at..at + n] {
        *b = (v as u8 & 0x7f) | if v >= 0x80 { 0x80 } else { 0 };
        v >>= 7;
    }
}

/// `KeyValue { key, value: AnyValue {` as field `field`, up to the
/// `AnyValue`'s one field, whose encoding is `any` bytes long.
fn attr_head(buf: &mut Vec<u8>, field: u32, key: &str, any: usize) {
    let kv = 1 + varint_len(key.len() as u64) + key.len() + 1 + varint_len(any as u64) + any;
    tag(buf, field, LEN);
    varint(buf, kv as u64);
    bytes(buf, 1, key.as_bytes());
    tag(buf, 2, LEN);
    varint(buf, any as u64);
}

/// `KeyValue { key, value: AnyValue { string_value } }` as field `field`.
fn attr_str(buf: &mut Vec<u8>, field: u32, key: &str, value: &str) {
    attr_head(
        buf,
        field,
        key,
        1 + varint_len(value.len() as u64) + value.len(),
    );
    bytes_always(buf, 1, value.as_bytes());
}

/// `KeyValue { key, value: AnyValue { int_value } }` as field `field`.
fn attr_int(buf: &mut Vec<u8>, field: u32, key: &str, value: i64) {
    attr_head(buf, field, key, 1 + varint_len(value as u64));
    tag(buf, 3, VARINT);
    varint(buf, value as u64);
}

/// `KeyValue { key, value: AnyValue { double_value } }` as field `field`.
fn attr_double(buf: &mut Vec<u8>, field: u32, key: &str, value: f64) {
    attr_head(buf, field, key, 1 + 8);
    tag(buf, 4, FIXED64);
    buf.extend_from_slice(&value.to_le_bytes());
}

/// A plugin field's value as an attribute: integers as int (an unsigned
/// one above `i64::MAX` as its decimal text), doubles, text.
fn attr_value(buf: &mut Vec<u8>, field: u32, key: &str, value: &Value) {
    match value {
        Value::U64(n) => match i64::try_from(*n) {
            Ok(i) => attr_int(buf, field, key, i),
            Err(_) => attr_str(buf, field, key, &n.to_string()),
        },
        Value::I64(n) => attr_int(buf, field, key, *n),
        Value::F64(n) => attr_double(buf, field, key, *n),
        Value::Str(t) => attr_str(buf, field, key, t),
    }
}

/// Span attributes are field 9, event attributes field 3.
const SPAN_ATTR: u32 = 9;
const EVENT_ATTR: u32 = 3;

/// What every span of a journey has in common.
struct Ids {
    trace: [u8; 16],
    root: [u8; 8],
}

/// The fields of a span before its attributes (1 to 8), in field order.
fn span_head(buf: &mut Vec<u8>, ids: &Ids, id: &[u8; 8], parent: Option<&[u8; 8]>, name: &str) {
    bytes(buf, 1, &ids.trace);
    bytes(buf, 2, id);
    if let Some(p) = parent {
        bytes(buf, 4, p);
    }
    bytes(buf, 5, name.as_bytes());
    uint(buf, 6, SPAN_KIND_INTERNAL);
}

fn times(buf: &mut Vec<u8>, start: u64, end: u64) {
    fixed64(buf, 7, start);
    // Zero-length spans are rejected by backends: at least 1 ns (spans.rs).
    fixed64(buf, 8, end.max(start.wrapping_add(1)));
}

/// Status (field 15, always present) and flags (16): the fields after events.
fn span_tail(buf: &mut Vec<u8>, error: Option<&[&str]>) {
    nested(buf, 15, |b| {
        if let Some(parts) = error {
            let len = parts.iter().map(|p| p.len()).sum::<usize>();
            if len > 0 {
                tag(b, 2, LEN);
                varint(b, len as u64);
                for p in parts {
                    b.extend_from_slice(p.as_bytes());
                }
            }
            uint(b, 3, STATUS_CODE_ERROR);
        }
    });
    tag(buf, 16, FIXED32);
    buf.extend_from_slice(&SPAN_FLAGS.to_le_bytes());
}

fn root_span(buf: &mut Vec<u8>, j: &JourneyView, ids: &Ids, name: &mut String) {
    let f = &j.flow;
    root_name(j, name);
    span_head(buf, ids, &ids.root, None, name);
    let (start, end) = root_bounds(j);
    times(buf, start, end);
    attr_str(buf, SPAN_ATTR, "network.transport", &f.proto);
    attr_str(
        buf,
        SPAN_ATTR,
        "network.type",
        if f.family == 6 { "ipv6" } else { "ipv4" },
    );
    attr_str(buf, SPAN_ATTR, "source.address", &f.src);
    if f.sport != 0 {
        attr_int(buf, SPAN_ATTR, "source.port", i64::from(f.sport));
    }
    attr_str(buf, SPAN_ATTR, "destination.address", &f.dst);
    if f.dport != 0 {
        attr_int(buf, SPAN_ATTR, "destination.port", i64::from(f.dport));
    }
    attr_str(buf, SPAN_ATTR, "vnt.packet.id", &j.pkt_id);
    attr_int(buf, SPAN_ATTR, "vnt.packet.length", i64::from(j.len));
    attr_str(buf, SPAN_ATTR, "vnt.journey.end", j.end);
    if let Some(to) = j.delivered_to {
        attr_str(buf, SPAN_ATTR, "vnt.delivered.to", to);
    }
    if let Some(p) = &j.process {
        process_attributes(buf, p);
    }
    attr_str(buf, SPAN_ATTR, "vnt.journey.closed", j.closed);
    let hops = j.hops.iter().filter(|h| h.parent_hook.is_none()).count();
    attr_int(buf, SPAN_ATTR, "vnt.journey.hops", hops as i64);
    if let Some(first) = j.hops.first() {
        attr_str(buf, SPAN_ATTR, "vnt.plugin", &first.plugin);
    }
    let drop_hop = j.hops.iter().rev().find(|h| h.drop.is_some());
    if let Some(d) = drop_hop.and_then(|h| h.drop.as_ref()) {
        attr_str(buf, SPAN_ATTR, "error.type", &d.reason);
    }
    span_tail(buf, None);
}

fn process_attributes(buf: &mut Vec<u8>, p: &ProcessView) {
    attr_int(buf, SPAN_ATTR, "process.pid", i64::from(p.pid));
    if let Some(c) = &p.comm {
        attr_str(buf, SPAN_ATTR, "process.executable.name", c);
    }
}

fn hop_attributes(buf: &mut Vec<u8>, h: &HopView, index: Option<u32>) {
    if let Some(i) = index {
        attr_int(buf, SPAN_ATTR, "vnt.hop.index", i64::from(i));
    }
    attr_str(buf, SPAN_ATTR, "vnt.hook", &h.hook);
    attr_str(buf, SPAN_ATTR, "vnt.hook.label", &h.label);
    attr_str(buf, SPAN_ATTR, "vnt.plugin", &h.plugin);
    attr_str(buf, SPAN_ATTR, "network.interface.name", &h.interface);
    attr_int(buf, SPAN_ATTR, "vnt.ifindex", i64::from(h.ifindex));
    attr_int(buf, SPAN_ATTR, "vnt.netns", i64::from(h.netns));
    if let Some(n) = &h.netns_name {
        attr_str(buf, SPAN_ATTR, "vnt.netns.name", n);
    }
    if let Some(o) = &h.netns_owner {
        attr_int(buf, SPAN_ATTR, "vnt.netns.pid", i64::from(o.pid));
        if let Some(c) = &o.comm {
            attr_str(buf, SPAN_ATTR, "vnt.netns.comm", c);
        }
        if let Some(cg) = &o.cgroup {
            attr_str(buf, SPAN_ATTR, "vnt.netns.cgroup", cg);
        }
    }
    for (key, value) in container_attributes(h).into_iter().flatten() {
        attr_str(buf, SPAN_ATTR, key, value);
    }
    if let Some(p) = &h.process {
        process_attributes(buf, p);
    }
    attr_str(buf, SPAN_ATTR, "vnt.direction", h.direction);
    match h.direction {
        "tx" => attr_str(buf, SPAN_ATTR, "network.io.direction", "transmit"),
        "rx" => attr_str(buf, SPAN_ATTR, "network.io.direction", "receive"),
        _ => {}
    }
    attr_int(buf, SPAN_ATTR, "cpu.logical_number", i64::from(h.cpu));
    attr_int(buf, SPAN_ATTR, "vnt.packet.length", i64::from(h.len));
    attr_int(buf, SPAN_ATTR, "vnt.latency_ns", h.latency_ns as i64);
    if let Some(d) = &h.drop {
        attr_str(buf, SPAN_ATTR, "error.type", &d.reason);
        attr_str(buf, SPAN_ATTR, "vnt.drop.reason", &d.reason);
        attr_int(buf, SPAN_ATTR, "vnt.drop.code", i64::from(d.code));
    }
    for (k, v) in &h.attrs.0 {
        attr_value(buf, SPAN_ATTR, k, v);
    }
}

/// Append the `Span` messages of `j` (field 2 of `ScopeSpans` each) to `buf`.
fn journey(buf: &mut Vec<u8>, j: &JourneyView, host: u64, scratch: &mut Scratch) {
    let ids = Ids {
        trace: ids::trace_id(j.id),
        root: ids::root_span_id(j.id, host, j.start_unix_nano),
    };
    nested(buf, 2, |b| root_span(b, j, &ids, &mut scratch.name));

    let mut clock = HopClock::default();
    let mut index = 0u32;
    for (i, h) in j.hops.iter().enumerate() {
        let id = ids::child_span_id(ids.root, i as u32 + 1);
        let name = &mut scratch.name;
        hop_name(h, name);
        let (start, end) = clock.next(h);
        // A substep under the hop (or substep) the view nested it in.
        let parent = h
            .parent
            .map_or(ids.root, |k| ids::child_span_id(ids.root, k as u32 + 1));
        let hop_index = h.parent_hook.is_none().then(|| {
            index += 1;
            index
        });
        nested(buf, 2, |b| {
            span_head(b, &ids, &id, Some(&parent), name);
            times(b, start, end);
            hop_attributes(b, h, hop_index);
            if let Some(d) = &h.drop {
                nested(b, 11, |e| {
                    fixed64(e, 1, drop_event_time(start, end));
                    bytes(e, 2, b"packet dropped");
                    attr_str(e, EVENT_ATTR, "vnt.drop.reason", &d.reason);
                    attr_int(e, EVENT_ATTR, "vnt.drop.code", i64::from(d.code));
                    attr_str(e, EVENT_ATTR, "network.interface.name", &h.interface);
                });
                span_tail(b, Some(&[&d.reason]));
            } else {
                span_tail(b, None);
            }
        });
    }

    let base = j.hops.len() as u32 + 1;
    for (k, iv) in j.cpu_intervals.iter().enumerate() {
        let id = ids::child_span_id(ids.root, base + k as u32);
        let name = &mut scratch.name;
        name.clear();
        name.push_str(&iv.plugin);
        name.push_str(" cpu ");
        name.push_str(&iv.hook);
        nested(buf, 2, |b| {
            span_head(b, &ids, &id, Some(&ids.root), name);
            times(
                b,
                iv.start_unix_nano,
                iv.start_unix_nano.saturating_add(iv.duration_ns),
            );
            attr_str(b, SPAN_ATTR, "vnt.plugin", &iv.plugin);
            attr_str(b, SPAN_ATTR, "vnt.hook", &iv.hook);
            attr_int(b, SPAN_ATTR, "cpu.logical_number", i64::from(iv.cpu));
            attr_int(b, SPAN_ATTR, "vnt.interval.detail", i64::from(iv.detail));
            span_tail(b, None);
        });
    }
}

/// Buffers reused from journey to journey.
#[derive(Debug, Default)]
struct Scratch {
    name: String,
}

/// Writes export requests for one agent: its resource, scope and host key.
#[derive(Debug)]
pub struct TraceEncoder {
    /// `ResourceSpans.resource` (field 1), tag and length included.
    resource: Vec<u8>,
    /// `ScopeSpans.scope` (field 1), tag and length included.
    scope: Vec<u8>,
    /// `ResourceSpans.schema_url` (field 3), or nothing.
    schema_url: Vec<u8>,
    /// `ScopeSpans.schema_url` (field 3), or nothing.
    scope_schema_url: Vec<u8>,
    host: u64,
    scratch: Scratch,
    /// Size of the last request, to size the next one's buffer.
    last_len: usize,
}

impl TraceEncoder {
    /// An encoder for spans of `resource`, `scope`, seen by the host whose
    /// key is `host` (`ids::host_key`).
    pub fn new(resource: &Resource, scope: &InstrumentationScope, host: u64) -> TraceEncoder {
        let r = ResourceAttributesWithSchema::from(resource);
        let mut out = TraceEncoder {
            resource: Vec::new(),
            scope: Vec::new(),
            schema_url: Vec::new(),
            scope_schema_url: Vec::new(),
            host,
            scratch: Scratch::default(),
            last_len: 0,
        };
        let res = ProtoResource {
            attributes: r.attributes.0,
            dropped_attributes_count: 0,
            entity_refs: vec![],
        };
        res.encode_length_delimited(&mut out.resource)
            .expect("a Vec grows");
        out.resource.insert(0, (1 << 3 | LEN) as u8);
        let s = opentelemetry_proto::tonic::common::v1::InstrumentationScope::from((scope, None));
        s.encode_length_delimited(&mut out.scope)
            .expect("a Vec grows");
        out.scope.insert(0, (1 << 3 | LEN) as u8);
        bytes(
            &mut out.schema_url,
            3,
            r.schema_url.unwrap_or_default().as_bytes(),
        );
        bytes(
            &mut out.scope_schema_url,
            3,
            scope.schema_url().unwrap_or_default().as_bytes(),
        );
        out
    }

    /// The `ExportTraceServiceRequest` for `journeys`, in order.
    pub fn request<'a>(&mut self, journeys: impl IntoIterator<Item = &'a JourneyView>) -> Bytes {
        // Room in front for the envelope: the request's, the resource spans'
        // and the scope spans' tags and lengths, the resource and the scope.
        let head = 3 * 6 + self.resource.len() + self.scope.len();
        let mut buf = Vec::with_capacity(head + self.last_len.max(4096));
        buf.resize(head, 0);
        for j in journeys {
            journey(&mut buf, j, self.host, &mut self.scratch);
        }
        buf.extend_from_slice(&self.scope_schema_url);
        let spans_and_schema = buf.len() - head;
        let scope_spans = self.scope.len() + spans_and_schema;
        let resource_spans = self.resource.len()
            + 1
            + varint_len(scope_spans as u64)
            + scope_spans
            + self.schema_url.len();
        buf.extend_from_slice(&self.schema_url);
        let mut env = Vec::with_capacity(head);
        tag(&mut env, 1, LEN);
        varint(&mut env, resource_spans as u64);
        env.extend_from_slice(&self.resource);
        tag(&mut env, 2, LEN);
        varint(&mut env, scope_spans as u64);
        env.extend_from_slice(&self.scope);
        let start = head - env.len();
        buf[start..head].copy_from_slice(&env);
        self.last_len = buf.len();
        Bytes::from(buf).slice(start..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::otlp::spans;
    use crate::export::view::{Attrs, DropView, FlowView, IntervalView, OwnerView};
    use opentelemetry::KeyValue;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;

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
            // Every kind of plugin value, and a u64 beyond i64.
            attrs: Attrs(vec![
                ("vnt.t.state".into(), Value::Str("ESTABLISHED".into())),
                ("vnt.t.seq".into(), Value::U64(u64::MAX)),
                ("vnt.t.small".into(), Value::U64(7)),
                ("vnt.t.delta".into(), Value::I64(-2)),
                ("vnt.t.ratio".into(), Value::F64(0.5)),
            ]),
        }
    }

    fn flow(proto: &'static str, family: u8, sport: u16, dport: u16) -> FlowView {
        FlowView {
            src: if family == 6 { "fd00::1" } else { "10.0.0.1" }.into(),
            dst: if family == 6 { "fd00::2" } else { "10.0.0.2" }.into(),
            sport,
            dport,
            proto: proto.into(),
            family,
        }
    }

    /// Journeys that between them take every branch of the span model.
    fn journeys() -> Vec<JourneyView> {
        let mut drop = hop("skb:kfree_skb", "drop", "h2", 1_000_900, 400);
        drop.direction = "-";
        drop.drop = Some(DropView {
            reason: "NETFILTER_DROP".into(),
            code: 12,
        });
        let mut sub = hop("ovs:upcall", "upcall", "h1", 1_000_200, 0);
        sub.parent_hook = Some("net:netif_rx".into());
        sub.parent = Some(1);
        sub.depth = 1;
        sub.duration_ns = Some(50);
        let mut orphan = hop("ovs:upcall", "", "h1", 1_000_300, 0);
        orphan.parent_hook = Some("net:nowhere".into());
        orphan.depth = 1;
        let mut bare = hop("net:netif_rx", "backlog", "veth-with-a-long", 5, 3);
        bare.direction = "rx";
        bare.netns_name = None;
        bare.netns_owner = Some(OwnerView {
            pid: 1,
            comm: None,
            cgroup: Some("/user.slice".into()),
        });
        let mut named = hop("net:netif_receive_skb", "receive", "eth0", 1_000_600, 100);
        named.container = Some(std::sync::Arc::new(crate::containers::ContainerInfo {
            id: "cd".repeat(32).into(),
            name: "web".into(),
            pod: Some("web-5d".into()),
            pod_namespace: Some("shop".into()),
        }));
        let mut nobody = hop("net:netif_receive_skb", "", "", u64::MAX, u64::MAX);
        nobody.netns_owner = None;
        nobody.latency_ns = 1 << 63;
        let dropped = JourneyView {
            kind: "journey",
            trace_id: ids::hex(&ids::trace_id(99)),
            pkt_id: format!("{:016x}", 99),
            id: 99,
            end: "dropped",
            delivered_to: None,
            process: None,
            closed: "dropped",
            flow: flow("udp", 4, 4000, 53),
            len: 100,
            start_unix_nano: 1_000_000,
            duration_ns: 900,
            hops: vec![
                hop("net:net_dev_start_xmit", "xmit", "c1", 1_000_000, 0),
                hop("net:netif_rx", "backlog", "h1", 1_000_100, 100),
                sub,
                orphan,
                hop("net:netif_receive_skb", "receive", "h1", 1_000_500, 400),
                named,
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
        };
        let plain = |id: u64, start: u64, hops: Vec<HopView>, f: FlowView| JourneyView {
            kind: "journey",
            trace_id: String::new(),
            pkt_id: format!("{id:016x}"),
            id,
            end: "unknown",
            delivered_to: None,
            process: None,
            closed: "idle",
            flow: f,
            len: 1500,
            start_unix_nano: start,
            duration_ns: 0,
            hops,
            cpu_intervals: vec![],
        };
        vec![
            dropped,
            plain(0, 0, vec![], flow("", 0, 0, 0)),
            plain(u64::MAX, 7, vec![bare, nobody], flow("tcp", 6, 0, 443)),
            plain(
                1,
                u64::MAX - 1,
                vec![hop("a", "b", "c", 0, 0)],
                flow("icmp", 4, 0, 0),
            ),
        ]
    }

    /// What opentelemetry-otlp sends for the same journeys: `journey_spans`,
    /// then its conversion to protobuf, encoded by prost.
    fn sdk_request(js: &[JourneyView], resource: &Resource, host: u64) -> Vec<u8> {
        let scope = scope();
        let mut batch = vec![];
        for j in js {
            spans::journey_spans(j, host, &scope, &mut batch);
        }
        let rs = group_spans_by_resource_and_scope(batch, &resource.into());
        assert_eq!(rs.len(), 1);
        ExportTraceServiceRequest { resource_spans: rs }.encode_to_vec()
    }

    fn scope() -> InstrumentationScope {
        InstrumentationScope::builder("vnt-agent")
            .with_version("0.1.0")
            .build()
    }

    fn resource() -> Resource {
        Resource::builder_empty()
            .with_attributes([
                KeyValue::new("service.name", "vnt-agent"),
                KeyValue::new("host.name", "node-a"),
                KeyValue::new("vnt.test.int", 7i64),
                KeyValue::new("vnt.test.bool", true),
            ])
            .with_schema_url(
                Vec::<KeyValue>::new(),
                "https://opentelemetry.io/schemas/1.0",
            )
            .build()
    }

    #[test]
    fn bytes_are_those_of_the_sdk_path() {
        let resource = resource();
        let host = ids::host_key(&["node-a"]);
        let mut enc = TraceEncoder::new(&resource, &scope(), host);
        let js = journeys();
        let bytes = enc.request(&js);
        assert_eq!(bytes.as_ref(), sdk_request(&js, &resource, host).as_slice());
        let decoded = ExportTraceServiceRequest::decode(bytes).unwrap();
        let spans = &decoded.resource_spans[0].scope_spans[0].spans;
        assert_eq!(
            spans.len(),
            js.iter().map(spans::span_count).sum::<usize>(),
            "every span is there"
        );
        assert_eq!(spans[0].name, "udp 10.0.0.1 -> 10.0.0.2:53");
        let errors = spans[..spans::span_count(&js[0])]
            .iter()
            .filter(|s| s.status.as_ref().is_some_and(|st| st.code == 2))
            .count();
        assert_eq!(errors, 1, "one error per dropped journey");
        // Each journey alone, and the buffer sized from the last request.
        for j in &js {
            assert_eq!(
                enc.request([j]).as_ref(),
                sdk_request(std::slice::from_ref(j), &resource, host).as_slice()
            );
        }
        // A resource without a schema URL.
        let plain = Resource::builder_empty()
            .with_attribute(KeyValue::new("service.name", "x"))
            .build();
        let mut enc = TraceEncoder::new(&plain, &scope(), 1);
        assert_eq!(
            enc.request(&js).as_ref(),
            sdk_request(&js, &plain, 1).as_slice()
        );
    }

    #[test]
    fn long_values_need_longer_lengths() {
        // A span past 2 MiB takes a 4-byte length: the reserved 3 grow.
        let mut h = hop("net:netif_rx", "backlog", "eth0", 10, 1);
        h.netns_name = Some("n".repeat(3 << 20).into());
        let mut j = journeys().remove(0);
        j.hops = vec![h];
        let resource = resource();
        let mut enc = TraceEncoder::new(&resource, &scope(), 5);
        assert_eq!(
            enc.request([&j]).as_ref(),
            sdk_request(std::slice::from_ref(&j), &resource, 5).as_slice()
        );
    }

    #[test]
    fn varint_lengths() {
        for v in [0u64, 1, 127, 128, 16383, 16384, 1 << 35, u64::MAX] {
            let mut b = vec![];
            varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
        }
    }
}

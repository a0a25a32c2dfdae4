//! Spans held per trace until every agent's share has arrived, then put on
//! one timebase: the packet's origin host's (pure: times come in as
//! arguments, spans in and out as OTLP protobuf messages).
//!
//! A trace id is derived from the packet alone (`export::ids`), so the spans
//! of one packet from every agent that saw it meet here under one id, each
//! agent's tagged with its `host.name` resource attribute. When a trace
//! holds two hosts, the origin is the one whose first hop is not a receive
//! (the packet starts there, leaving a pod or a socket) and the other
//! received it: the time from the origin's last hop to the receiver's first
//! is one sample of `delay + offset` for that direction ([`Clocks`]). With
//! samples both ways the receiver's spans are moved onto the origin's clock
//! and say by how much (`vnt.clock.offset_ns`), how sure
//! (`vnt.clock.uncertainty_ns`) and to whose clock (`vnt.clock.reference`);
//! without, they are left as they are and say `vnt.clock.aligned = false`.

use std::collections::{HashMap, HashSet, VecDeque};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

use super::clock::{Clocks, Offset};

/// Attribute: whether the span's times are on the reference host's clock.
pub const ALIGNED: &str = "vnt.clock.aligned";
/// Attribute: nanoseconds this host's clock was found ahead of the reference's and taken off.
pub const OFFSET: &str = "vnt.clock.offset_ns";
/// Attribute: half the width of the interval the true offset lies in.
pub const UNCERTAINTY: &str = "vnt.clock.uncertainty_ns";
/// Attribute: the `host.name` whose clock the trace is on.
pub const REFERENCE: &str = "vnt.clock.reference";
/// Attribute, on the receiving host's first hop: the time from the origin's
/// last hop to it, on one clock.
pub const CROSS_HOST_LATENCY: &str = "vnt.clock.cross_host_latency_ns";

const HOP_INDEX: &str = "vnt.hop.index";
const DIRECTION: &str = "vnt.direction";
const US: i64 = 1_000;

/// Settings of the aligner.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How long a trace waits for the other hosts' spans, in nanoseconds.
    pub hold_ns: u64,
    /// Spans held at most; beyond, the oldest traces go out early.
    pub max_spans: usize,
    /// The window offsets are estimated over, in nanoseconds.
    pub window_ns: u64,
    /// Samples per direction and host pair at most.
    pub max_samples: usize,
}

/// What happened to the traces and spans so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Spans received.
    pub spans_in: u64,
    /// Spans released to be forwarded.
    pub spans_out: u64,
    /// Traces released.
    pub traces: u64,
    /// Traces with spans from more than one host.
    pub cross_host: u64,
    /// Cross-host traces whose later hosts were moved onto the origin's clock.
    pub aligned: u64,
    /// Cross-host traces left unaligned: no estimate yet (no traffic back).
    pub unaligned: u64,
    /// Cross-host traces whose origin could not be told (no hops, or no
    /// single host whose first hop is not a receive): left unaligned.
    pub ambiguous: u64,
    /// Traces released before their hold was over, to keep within `max_spans`.
    pub released_early: u64,
    /// Traces whose spans came after the trace had been released (a host's
    /// spans later than the hold): sent on marked unaligned, not learned from.
    pub late: u64,
}

#[derive(Debug)]
struct Host {
    name: String,
    resource: Option<Resource>,
    scope: Option<InstrumentationScope>,
    schema_url: String,
}

#[derive(Debug)]
struct Pending {
    spans: Vec<(usize, Span)>,
}

/// The offset applied to one host of one trace, for the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The origin host.
    pub reference: String,
    /// The host moved onto its clock.
    pub host: String,
    /// The estimate used.
    pub offset: Offset,
}

/// The aligner's state: held traces, hosts seen, clock estimates.
#[derive(Debug)]
pub struct Aligner {
    settings: Settings,
    hosts: Vec<Host>,
    host_index: HashMap<String, usize>,
    pending: HashMap<Vec<u8>, Pending>,
    /// Trace ids in the order their first span came, with that time.
    order: VecDeque<(u64, Vec<u8>)>,
    held_spans: usize,
    clocks: Clocks,
    counts: Counts,
    /// The last estimate applied per (reference, host).
    last: HashMap<(String, String), Offset>,
    /// Ids of the last [`RECENT`] traces released, to tell late spans.
    released: VecDeque<u128>,
    released_set: HashSet<u128>,
}

/// Trace ids remembered after their release (16 B each, twice).
const RECENT: usize = 65_536;

fn id128(trace_id: &[u8]) -> Option<u128> {
    Some(u128::from_be_bytes(trace_id.try_into().ok()?))
}

/// Hosts at most: a host beyond is folded into the last (they come from
/// resource attributes, which a client chooses).
const MAX_HOSTS: usize = 4096;

impl Aligner {
    /// An empty aligner.
    pub fn new(settings: Settings) -> Aligner {
        Aligner {
            settings,
            hosts: Vec::new(),
            host_index: HashMap::new(),
            pending: HashMap::new(),
            order: VecDeque::new(),
            held_spans: 0,
            clocks: Clocks::new(settings.window_ns, settings.max_samples, US as u64),
            counts: Counts::default(),
            last: HashMap::new(),
            released: VecDeque::new(),
            released_set: HashSet::new(),
        }
    }

    /// Counts so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Spans held now.
    pub fn held_spans(&self) -> usize {
        self.held_spans
    }

    /// The last estimate applied per (reference, host).
    pub fn estimates(&self) -> Vec<Applied> {
        let mut v: Vec<Applied> = self
            .last
            .iter()
            .map(|((r, h), o)| Applied {
                reference: r.clone(),
                host: h.clone(),
                offset: *o,
            })
            .collect();
        v.sort_by(|a, b| (&a.reference, &a.host).cmp(&(&b.reference, &b.host)));
        v
    }

    /// Ordered pairs of hosts with samples.
    pub fn sampled_pairs(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .clocks
            .pairs()
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect();
        v.sort();
        v
    }

    fn host(&mut self, resource: Option<Resource>) -> usize {
        let attr = |k: &str| {
            resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == k))
                .and_then(|a| str_value(a.value.as_ref()))
                .map(str::to_owned)
        };
        let name = attr("host.name")
            .or_else(|| attr("service.instance.id"))
            .unwrap_or_default();
        if let Some(&i) = self.host_index.get(&name) {
            if resource.is_some() {
                self.hosts[i].resource = resource;
            }
            return i;
        }
        if self.hosts.len() >= MAX_HOSTS {
            return self.hosts.len() - 1;
        }
        self.hosts.push(Host {
            name: name.clone(),
            resource,
            scope: None,
            schema_url: String::new(),
        });
        self.host_index.insert(name, self.hosts.len() - 1);
        self.hosts.len() - 1
    }

    /// Takes the spans of one export request; `now` is the aligner's
    /// monotonic time in nanoseconds.
    pub fn ingest(&mut self, request: ExportTraceServiceRequest, now: u64) {
        for rs in request.resource_spans {
            let h = self.host(rs.resource);
            if self.hosts[h].schema_url.is_empty() {
                self.hosts[h].schema_url = rs.schema_url;
            }
            for ss in rs.scope_spans {
                if self.hosts[h].scope.is_none() {
                    self.hosts[h].scope = ss.scope;
                }
                for span in ss.spans {
                    self.counts.spans_in += 1;
                    self.held_spans += 1;
                    let p = match self.pending.get_mut(&span.trace_id) {
                        Some(p) => p,
                        None => {
                            self.order.push_back((now, span.trace_id.clone()));
                            self.pending
                                .entry(span.trace_id.clone())
                                .or_insert(Pending { spans: Vec::new() })
                        }
                    };
                    p.spans.push((h, span));
                }
            }
        }
    }

    /// Releases the traces whose hold is over (or all with `all`, or the
    /// oldest while over `max_spans`), aligned, as export requests of at
    /// most `batch` spans each.
    pub fn release(&mut self, now: u64, all: bool, batch: usize) -> Vec<ExportTraceServiceRequest> {
        let mut out: Vec<Vec<Span>> = (0..self.hosts.len()).map(|_| Vec::new()).collect();
        let mut requests = Vec::new();
        let mut in_out = 0usize;
        while let Some((since, _)) = self.order.front() {
            let due = now.saturating_sub(*since) >= self.settings.hold_ns;
            let over = self.held_spans > self.settings.max_spans;
            if !(all || due || over) {
                break;
            }
            let (_, id) = self.order.pop_front().expect("front exists");
            let Some(mut p) = self.pending.remove(&id) else {
                continue;
            };
            if !(all || due) {
                self.counts.released_early += 1;
            }
            self.held_spans -= p.spans.len();
            let key = id128(&id);
            if key.is_some_and(|k| self.released_set.contains(&k)) {
                // The rest of this trace went out already, on whatever clock
                // it was put on: these spans cannot be placed against it.
                self.counts.late += 1;
                for (_, s) in p.spans.iter_mut() {
                    set_attr(s, ALIGNED, any_value::Value::BoolValue(false));
                }
            } else {
                self.align(&mut p.spans, now);
                if let Some(k) = key {
                    self.remember(k);
                }
            }
            self.counts.traces += 1;
            self.counts.spans_out += p.spans.len() as u64;
            in_out += p.spans.len();
            for (h, s) in p.spans {
                out[h].push(s);
            }
            if in_out >= batch {
                requests.push(self.request(&mut out));
                in_out = 0;
            }
        }
        if in_out > 0 {
            requests.push(self.request(&mut out));
        }
        requests
    }

    fn remember(&mut self, id: u128) {
        if self.released.len() >= RECENT {
            if let Some(old) = self.released.pop_front() {
                self.released_set.remove(&old);
            }
        }
        self.released.push_back(id);
        self.released_set.insert(id);
    }

    fn request(&self, out: &mut [Vec<Span>]) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: out
                .iter_mut()
                .enumerate()
                .filter(|(_, spans)| !spans.is_empty())
                .map(|(h, spans)| ResourceSpans {
                    resource: self.hosts[h].resource.clone(),
                    scope_spans: vec![ScopeSpans {
                        scope: self.hosts[h].scope.clone(),
                        spans: std::mem::take(spans),
                        schema_url: String::new(),
                    }],
                    schema_url: self.hosts[h].schema_url.clone(),
                })
                .collect(),
        }
    }

    /// Puts one trace's spans on its origin host's clock.
    fn align(&mut self, spans: &mut [(usize, Span)], now: u64) {
        let mut ends: Vec<(usize, Ends)> = Vec::new();
        for (h, s) in spans.iter() {
            let e = match ends.iter_mut().find(|(host, _)| host == h) {
                Some((_, e)) => e,
                None => {
                    ends.push((*h, Ends::default()));
                    &mut ends.last_mut().expect("just pushed").1
                }
            };
            e.add(s);
        }
        if ends.len() < 2 {
            return;
        }
        self.counts.cross_host += 1;
        let origins: Vec<usize> = ends
            .iter()
            .filter(|(_, e)| e.first.as_ref().is_some_and(|f| f.2 != "rx"))
            .map(|(h, _)| *h)
            .collect();
        let complete = ends
            .iter()
            .all(|(_, e)| e.first.is_some() && e.last.is_some());
        let [origin] = origins[..] else {
            self.counts.ambiguous += 1;
            for (_, s) in spans.iter_mut() {
                set_attr(s, ALIGNED, any_value::Value::BoolValue(false));
            }
            return;
        };
        if !complete {
            self.counts.ambiguous += 1;
            for (_, s) in spans.iter_mut() {
                set_attr(s, ALIGNED, any_value::Value::BoolValue(false));
            }
            return;
        }
        let sent = ends
            .iter()
            .find(|(h, _)| *h == origin)
            .and_then(|(_, e)| e.last)
            .map_or(0, |(_, end)| end);
        let reference = self.hosts[origin].name.clone();
        if ends.len() == 2 {
            let (other, e) = ends.iter().find(|(h, _)| *h != origin).expect("two hosts");
            let received = e.first.as_ref().map_or(0, |f| f.1);
            let name = &self.hosts[*other].name;
            self.clocks.sample(&reference, name, sent, received, now);
        }
        let mut any_unaligned = false;
        for (h, e) in &ends {
            if *h == origin {
                continue;
            }
            let name = self.hosts[*h].name.clone();
            let estimate = self.clocks.offset(&reference, &name, now);
            // Shifted by whole microseconds: the agents lay spans out on
            // whole microseconds for Jaeger, and a shift keeps that true.
            let shift = estimate.map(|o| round_us(o.offset_ns));
            if let Some(o) = estimate {
                self.last.insert((reference.clone(), name.clone()), o);
            } else {
                any_unaligned = true;
            }
            let first = e.first.as_ref().map(|f| f.0);
            for (host, s) in spans.iter_mut() {
                if host != h {
                    continue;
                }
                set_attr(
                    s,
                    REFERENCE,
                    any_value::Value::StringValue(reference.clone()),
                );
                match (estimate, shift) {
                    (Some(o), Some(shift)) => {
                        shift_span(s, shift);
                        set_attr(s, ALIGNED, any_value::Value::BoolValue(true));
                        set_attr(s, OFFSET, any_value::Value::IntValue(shift));
                        set_attr(
                            s,
                            UNCERTAINTY,
                            any_value::Value::IntValue(o.uncertainty_ns.min(i64::MAX as u64) as i64),
                        );
                        if first == Some(hop_index(s)) && hop_index(s).is_some() {
                            let latency = s.end_time_unix_nano as i64 - sent as i64;
                            set_attr(s, CROSS_HOST_LATENCY, any_value::Value::IntValue(latency));
                        }
                    }
                    _ => set_attr(s, ALIGNED, any_value::Value::BoolValue(false)),
                }
            }
        }
        if any_unaligned {
            self.counts.unaligned += 1;
        } else {
            self.counts.aligned += 1;
        }
    }
}

/// The first and last hop of one host's share of a trace: (index, end
/// time, direction) and (index, end time). A hop's time is its span's end
/// (docs/otel.md: each hop span ends at the hop).
#[derive(Debug, Default)]
struct Ends {
    first: Option<(Option<i64>, u64, String)>,
    last: Option<(Option<i64>, u64)>,
}

impl Ends {
    fn add(&mut self, s: &Span) {
        let Some(i) = hop_index(s) else {
            return;
        };
        if self.first.as_ref().is_none_or(|f| Some(i) < f.0) {
            let dir = attr(s, DIRECTION)
                .and_then(|v| str_value(Some(v)))
                .unwrap_or_default()
                .to_owned();
            self.first = Some((Some(i), s.end_time_unix_nano, dir));
        }
        if self.last.is_none_or(|l| Some(i) > l.0) {
            self.last = Some((Some(i), s.end_time_unix_nano));
        }
    }
}

fn round_us(ns: i64) -> i64 {
    (ns as f64 / US as f64).round() as i64 * US
}

fn shift_span(s: &mut Span, by: i64) {
    let move_ = |t: &mut u64| *t = (*t as i64).saturating_sub(by).max(0) as u64;
    move_(&mut s.start_time_unix_nano);
    move_(&mut s.end_time_unix_nano);
    for e in &mut s.events {
        move_(&mut e.time_unix_nano);
    }
}

fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a AnyValue> {
    s.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
}

fn hop_index(s: &Span) -> Option<i64> {
    match attr(s, HOP_INDEX)?.value.as_ref()? {
        any_value::Value::IntValue(i) => Some(*i),
        _ => None,
    }
}

fn str_value(v: Option<&AnyValue>) -> Option<&str> {
    match v?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s),
        _ => None,
    }
}

fn set_attr(s: &mut Span, key: &str, value: any_value::Value) {
    let value = Some(AnyValue { value: Some(value) });
    match s.attributes.iter_mut().find(|a| a.key == key) {
        Some(a) => a.value = value,
        None => s.attributes.push(KeyValue {
            key: key.to_owned(),
            value,
            ..Default::default()
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;

    fn kv(key: &str, v: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    fn resource(host: &str) -> Resource {
        Resource {
            attributes: vec![kv("host.name", any_value::Value::StringValue(host.into()))],
            ..Default::default()
        }
    }

    /// One host's share of a packet's trace: a root and hops ending at
    /// `times` (microseconds on that host's clock), with directions.
    fn share(host: &str, trace: u8, hops: &[(u64, &str)]) -> ResourceSpans {
        let mut spans = vec![Span {
            trace_id: vec![trace; 16],
            span_id: vec![1; 8],
            start_time_unix_nano: hops[0].0 - 1_000,
            end_time_unix_nano: hops[hops.len() - 1].0,
            ..Default::default()
        }];
        let mut prev = hops[0].0 - 1_000;
        for (i, (t, dir)) in hops.iter().enumerate() {
            spans.push(Span {
                trace_id: vec![trace; 16],
                span_id: vec![i as u8 + 2; 8],
                parent_span_id: vec![1; 8],
                start_time_unix_nano: prev,
                end_time_unix_nano: *t,
                attributes: vec![
                    kv(HOP_INDEX, any_value::Value::IntValue(i as i64 + 1)),
                    kv(DIRECTION, any_value::Value::StringValue((*dir).into())),
                ],
                ..Default::default()
            });
            prev = *t;
        }
        ResourceSpans {
            resource: Some(resource(host)),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: String::new(),
        }
    }

    fn settings() -> Settings {
        Settings {
            hold_ns: S,
            max_spans: 10_000,
            window_ns: 60 * S,
            max_samples: 100,
        }
    }

    fn spans_of<'a>(reqs: &'a [ExportTraceServiceRequest], host: &str) -> Vec<&'a Span> {
        reqs.iter()
            .flat_map(|r| &r.resource_spans)
            .filter(|rs| {
                rs.resource
                    .as_ref()
                    .and_then(|r| str_value(r.attributes[0].value.as_ref()))
                    == Some(host)
            })
            .flat_map(|rs| rs.scope_spans.iter().flat_map(|ss| &ss.spans))
            .collect()
    }

    fn int(s: &Span, key: &str) -> Option<i64> {
        match attr(s, key)?.value.as_ref()? {
            any_value::Value::IntValue(i) => Some(*i),
            _ => None,
        }
    }

    fn boolean(s: &Span, key: &str) -> Option<bool> {
        match attr(s, key)?.value.as_ref()? {
            any_value::Value::BoolValue(b) => Some(*b),
            _ => None,
        }
    }

    /// B's clock is 7.3 ms ahead; packets take 2 us on the wire each way.
    const THETA: u64 = 7_300 * 1_000;

    pub(crate) fn packet_a_to_b(al: &mut Aligner, trace: u8, t: u64, now: u64) {
        let a = share(
            "a",
            trace,
            &[(t, "tx"), (t + 3_000, "rx"), (t + 5_000, "tx")],
        );
        let b = share(
            "b",
            trace,
            &[(t + 7_000 + THETA, "rx"), (t + 9_000 + THETA, "rx")],
        );
        al.ingest(
            ExportTraceServiceRequest {
                resource_spans: vec![b],
            },
            now,
        );
        al.ingest(
            ExportTraceServiceRequest {
                resource_spans: vec![a],
            },
            now,
        );
    }

    pub(crate) fn packet_b_to_a(al: &mut Aligner, trace: u8, t: u64, now: u64) {
        let b = share("b", trace, &[(t + THETA, "tx"), (t + 2_000 + THETA, "tx")]);
        let a = share("a", trace, &[(t + 4_000, "rx"), (t + 6_000, "rx")]);
        al.ingest(
            ExportTraceServiceRequest {
                resource_spans: vec![a, b],
            },
            now,
        );
    }

    #[test]
    fn both_directions_align_the_receiver_onto_the_origin() {
        let mut al = Aligner::new(settings());
        packet_a_to_b(&mut al, 1, 1_000 * S, 0);
        packet_b_to_a(&mut al, 2, 1_001 * S, 0);
        assert!(al.release(S / 2, false, 100).is_empty(), "held for 1 s");
        let out = al.release(S, false, 100);
        let c = al.counts();
        assert_eq!(
            (c.traces, c.cross_host, c.aligned, c.unaligned),
            (2, 2, 1, 1)
        );
        // Trace 1 came before any traffic back: unaligned, not shifted.
        let b1: Vec<&Span> = spans_of(&out, "b")
            .into_iter()
            .filter(|s| s.trace_id[0] == 1)
            .collect();
        assert!(b1.iter().all(|s| boolean(s, ALIGNED) == Some(false)));
        assert!(b1
            .iter()
            .any(|s| s.end_time_unix_nano == 1_000 * S + 7_000 + THETA));
        // Trace 2 (B -> A): A received it, A is moved onto B's clock.
        let a2: Vec<&Span> = spans_of(&out, "a")
            .into_iter()
            .filter(|s| s.trace_id[0] == 2)
            .collect();
        assert_eq!(a2.len(), 3);
        for s in &a2 {
            assert_eq!(boolean(s, ALIGNED), Some(true));
            assert_eq!(int(s, OFFSET), Some(-(THETA as i64)), "A is behind B");
            assert_eq!(int(s, UNCERTAINTY), Some(2_000 + 1_000));
        }
        let first = a2.iter().find(|s| int(s, HOP_INDEX) == Some(1)).unwrap();
        assert_eq!(first.end_time_unix_nano, 1_001 * S + 4_000 + THETA);
        assert_eq!(int(first, CROSS_HOST_LATENCY), Some(2_000));
        // The origin's spans are untouched.
        let b2: Vec<&Span> = spans_of(&out, "b")
            .into_iter()
            .filter(|s| s.trace_id[0] == 2)
            .collect();
        assert!(b2.iter().all(|s| attr(s, ALIGNED).is_none()));
        let e = al.estimates();
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].reference.as_str(), e[0].host.as_str()), ("b", "a"));
    }

    #[test]
    fn later_traces_are_aligned_once_both_directions_are_known() {
        let mut al = Aligner::new(settings());
        packet_b_to_a(&mut al, 1, 1_000 * S, 0);
        packet_a_to_b(&mut al, 2, 1_001 * S, MS);
        al.release(0, true, 100);
        packet_a_to_b(&mut al, 3, 1_002 * S, 2 * MS);
        let out = al.release(2 * MS, true, 100);
        let b3 = spans_of(&out, "b");
        assert_eq!(b3.len(), 3);
        for s in &b3 {
            assert_eq!(int(s, OFFSET), Some(THETA as i64));
            assert_eq!(
                s.end_time_unix_nano.saturating_sub(1_002 * S),
                match int(s, HOP_INDEX) {
                    Some(1) => 7_000,
                    Some(2) => 9_000,
                    _ => 9_000, // the root ends at the last hop
                }
            );
        }
    }

    #[test]
    fn one_way_traffic_stays_unaligned_and_unshifted() {
        let mut al = Aligner::new(settings());
        for i in 0..10 {
            packet_a_to_b(&mut al, i, 1_000 * S + u64::from(i) * MS, 0);
        }
        let out = al.release(0, true, 4);
        assert!(out.len() >= 2, "batches of about 4 spans");
        let c = al.counts();
        assert_eq!((c.cross_host, c.aligned, c.unaligned), (10, 0, 10));
        for s in spans_of(&out, "b") {
            assert_eq!(boolean(s, ALIGNED), Some(false));
            assert!(s.end_time_unix_nano >= 1_000 * S + THETA, "not shifted");
        }
        assert_eq!(c.spans_in, c.spans_out);
    }

    #[test]
    fn memory_is_bounded_by_releasing_the_oldest() {
        let mut al = Aligner::new(Settings {
            max_spans: 20,
            ..settings()
        });
        for i in 0..10 {
            packet_a_to_b(&mut al, i, 1_000 * S, 0);
            al.release(0, false, 100);
            assert!(al.held_spans() <= 20);
        }
        assert!(al.counts().released_early > 0);
    }

    /// The aligner's own cost, without the network (BENCHMARKS.md):
    /// `cargo test --release -p vnt-agent --lib align::traces::tests::cost -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement, not a check"]
    fn cost() {
        fn rss() -> u64 {
            let s = std::fs::read_to_string("/proc/self/status").unwrap();
            let l = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
            l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
        }
        // A packet as the two-host test makes it: 5 + 6 spans, with the
        // agents' ~25 attributes per hop span.
        let pad = |mut rs: ResourceSpans| {
            for s in &mut rs.scope_spans[0].spans {
                for k in 0..23 {
                    s.attributes.push(kv(
                        &format!("vnt.attribute.{k}"),
                        any_value::Value::StringValue("veth-0123456789".into()),
                    ));
                }
                s.name = "xmit vh1234x0aw".into();
            }
            rs
        };
        let packets = 20_000u64;
        // Encoded one at a time: no freed request memory for the held spans to reuse.
        let wire: Vec<Vec<u8>> = (0..packets)
            .map(|i| {
                let t = 1_000 * S + i * MS;
                let id = |s: &mut ResourceSpans| {
                    for sp in &mut s.scope_spans[0].spans {
                        sp.trace_id[..8].copy_from_slice(&i.to_be_bytes());
                    }
                };
                let (mut a, mut b) = if i % 2 == 0 {
                    (
                        share("a", 0, &[(t, "tx"), (t + 3_000, "rx"), (t + 5_000, "tx")]),
                        share(
                            "b",
                            0,
                            &[(t + 7_000 + THETA, "rx"), (t + 9_000 + THETA, "rx")],
                        ),
                    )
                } else {
                    (
                        share("a", 0, &[(t + 4_000, "rx"), (t + 6_000, "rx")]),
                        share("b", 0, &[(t + THETA, "tx"), (t + 2_000 + THETA, "tx")]),
                    )
                };
                id(&mut a);
                id(&mut b);
                prost::Message::encode_to_vec(&ExportTraceServiceRequest {
                    resource_spans: vec![pad(a), pad(b)],
                })
            })
            .collect();
        let spans = packets * 7;
        let mut al = Aligner::new(Settings {
            max_spans: 1 << 30,
            ..settings()
        });
        let before = rss();
        let t0 = std::time::Instant::now();
        for w in &wire {
            let r = <ExportTraceServiceRequest as prost::Message>::decode(&w[..]).unwrap();
            al.ingest(r, 0);
        }
        let ingest = t0.elapsed();
        let held = rss().saturating_sub(before);
        let t1 = std::time::Instant::now();
        let out: Vec<Vec<u8>> = al
            .release(S, false, 512)
            .iter()
            .map(prost::Message::encode_to_vec)
            .collect();
        let release = t1.elapsed();
        assert_eq!(al.counts().aligned, packets - 1);
        println!(
            "{spans} spans: decode+ingest {:.0} ns/span, align+encode {:.0} ns/span ({:.0} spans/s in all), \
             held {} B/span (RSS, decoded protobuf with 25 attributes), {} requests out",
            ingest.as_nanos() as f64 / spans as f64,
            release.as_nanos() as f64 / spans as f64,
            spans as f64 / (ingest + release).as_secs_f64(),
            held / spans,
            out.len()
        );
    }

    /// A host's spans that come after their trace went out are marked
    /// unaligned and counted (the hold was too short for them).
    #[test]
    fn late_spans_are_marked_unaligned() {
        let mut al = Aligner::new(settings());
        let t = 1_000 * S;
        let a = share("a", 4, &[(t, "tx"), (t + 5_000, "tx")]);
        al.ingest(
            ExportTraceServiceRequest {
                resource_spans: vec![a],
            },
            0,
        );
        let first = al.release(S, false, 100);
        assert!(spans_of(&first, "a")
            .iter()
            .all(|s| attr(s, ALIGNED).is_none()));
        let b = share("b", 4, &[(t + 7_000 + THETA, "rx")]);
        al.ingest(
            ExportTraceServiceRequest {
                resource_spans: vec![b],
            },
            2 * S,
        );
        let late = al.release(3 * S, false, 100);
        let b = spans_of(&late, "b");
        assert_eq!(b.len(), 2);
        assert!(b.iter().all(|s| boolean(s, ALIGNED) == Some(false)));
        let c = al.counts();
        assert_eq!((c.traces, c.late, c.cross_host), (2, 1, 0));
        assert!(al.sampled_pairs().is_empty(), "nothing learned from it");
    }

    #[test]
    fn single_host_traces_pass_through() {
        let mut al = Aligner::new(settings());
        al.ingest(
            ExportTraceServiceRequest {
                resource_spans: vec![share("a", 9, &[(5 * S, "tx")])],
            },
            0,
        );
        let out = al.release(0, true, 100);
        let a = spans_of(&out, "a");
        assert_eq!(a.len(), 2);
        assert!(a.iter().all(|s| s
            .attributes
            .iter()
            .all(|kv| !kv.key.starts_with("vnt.clock"))));
        assert_eq!(al.counts().cross_host, 0);
    }
}

//! Metrics over OTLP: per-hop latency, packets and drops by interface and
//! reason, journeys by end, and the agent's health (docs/otel.md, "Metrics").
//!
//! Label values are bounded: hooks come from the plugins' hook tables, drop
//! reasons from the kernel's enum, journey ends from a fixed set, and
//! interface names are capped at `otlp.max_interfaces` distinct values, the
//! rest folded into `other`. Never a packet id, an skb address or an address.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use opentelemetry::metrics::{Counter, Histogram, Meter};
use opentelemetry::KeyValue;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{InstrumentKind, ManualReader, Pipeline, Temporality};

use super::health::Health;
use super::queue::SpanQueue;
use crate::export::view::JourneyView;

/// Bucket bounds of the latency histograms, in seconds: 1 µs to 1 s.
pub const LATENCY_BOUNDS_S: &[f64] = &[
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2,
    5e-2, 0.1, 0.25, 0.5, 1.0,
];

/// The label value for interfaces beyond the cap.
pub const OTHER: &str = "other";

/// Interns label values of one key, admitting at most `max` distinct ones;
/// later values map to [`OTHER`].
#[derive(Debug)]
pub struct LabelCap {
    key: &'static str,
    max: usize,
    /// Looked up for every hop: hashed with foldhash, not SipHash.
    known: HashMap<String, KeyValue, foldhash::fast::RandomState>,
    other: KeyValue,
}

impl LabelCap {
    /// A cap of `max` values for `key`.
    pub fn new(key: &'static str, max: usize) -> LabelCap {
        LabelCap {
            key,
            max,
            known: HashMap::default(),
            other: KeyValue::new(key, OTHER),
        }
    }

    /// The label for `value` (cheap to clone: the string is shared).
    pub fn get(&mut self, value: &str) -> KeyValue {
        if let Some(kv) = self.known.get(value) {
            return kv.clone();
        }
        if self.known.len() >= self.max {
            return self.other.clone();
        }
        let kv = KeyValue::new(self.key, Arc::<str>::from(value));
        self.known.insert(value.to_string(), kv.clone());
        kv
    }

    /// Distinct values admitted so far.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    /// No value admitted yet.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }
}

/// Instruments fed from finished journeys, on the main loop's thread.
#[derive(Debug)]
pub struct JourneyMetrics {
    hop_latency: Histogram<f64>,
    journey_duration: Histogram<f64>,
    packets: Counter<u64>,
    drops: Counter<u64>,
    journeys: Counter<u64>,
    interfaces: LabelCap,
    hooks: LabelCap,
    reasons: LabelCap,
    ends: LabelCap,
}

impl JourneyMetrics {
    /// Create the instruments on `meter`.
    pub fn new(meter: &Meter, max_interfaces: usize) -> JourneyMetrics {
        JourneyMetrics {
            hop_latency: meter
                .f64_histogram("vnt.hop.latency")
                .with_unit("s")
                .with_description("Time from the previous hop of a packet to this hop, by hook and interface")
                .with_boundaries(LATENCY_BOUNDS_S.to_vec())
                .build(),
            journey_duration: meter
                .f64_histogram("vnt.journey.duration")
                .with_unit("s")
                .with_description("Time from a packet's first hop to its last on this host, by how the journey ended")
                .with_boundaries(LATENCY_BOUNDS_S.to_vec())
                .build(),
            packets: meter
                .u64_counter("vnt.packets")
                .with_unit("{packet}")
                .with_description("Packets seen at a hook, by hook and interface")
                .build(),
            drops: meter
                .u64_counter("vnt.drops")
                .with_unit("{packet}")
                .with_description("Packets dropped, by interface and kernel drop reason")
                .build(),
            journeys: meter
                .u64_counter("vnt.journeys")
                .with_unit("{journey}")
                .with_description("Journeys completed, by how they ended")
                .build(),
            interfaces: LabelCap::new("network.interface.name", max_interfaces),
            // Bounded by the plugins' hook tables and the kernel's drop reasons;
            // capped anyway so a misbehaving plugin cannot explode cardinality.
            hooks: LabelCap::new("vnt.hook", 256),
            reasons: LabelCap::new("vnt.drop.reason", 512),
            ends: LabelCap::new("vnt.journey.end", 16),
        }
    }

    /// Record one finished journey.
    pub fn record(&mut self, j: &JourneyView) {
        for (i, h) in j.hops.iter().enumerate() {
            if h.parent_hook.is_some() {
                continue;
            }
            let labels = [self.hooks.get(&h.hook), self.interfaces.get(&h.interface)];
            self.packets.add(1, &labels);
            if i > 0 {
                self.hop_latency.record(h.latency_ns as f64 * 1e-9, &labels);
            }
            if let Some(d) = &h.drop {
                let labels = [labels[1].clone(), self.reasons.get(&d.reason)];
                self.drops.add(1, &labels);
            }
        }
        let end = [self.ends.get(j.end)];
        self.journeys.add(1, &end);
        self.journey_duration
            .record(j.duration_ns as f64 * 1e-9, &end);
    }
}

/// Register the health instruments (`vnt.agent.*`), read from `health` and
/// `queue` whenever metrics are collected.
pub fn register_health(meter: &Meter, health: &Arc<Health>, queue: &Arc<SpanQueue>) {
    let counter = |name: &'static str,
                   unit: &'static str,
                   description: &'static str,
                   read: fn(&Health) -> u64| {
        let h = health.clone();
        // The SDK keeps the callback registered for the meter provider's
        // life; the handle need not be kept.
        let _ = meter
            .u64_observable_counter(name)
            .with_unit(unit)
            .with_description(description)
            .with_callback(move |o| o.observe(read(&h), &[]))
            .build();
    };
    counter(
        "vnt.agent.events.received",
        "{event}",
        "Ring-buffer records read from the plugins' eBPF programs",
        |h| Health::get(&h.events_received),
    );
    counter(
        "vnt.agent.events.lost",
        "{event}",
        "Records the kernel could not write because a ring buffer was full",
        |h| Health::get(&h.events_lost),
    );
    counter(
        "vnt.agent.packets.lost",
        "{packet}",
        "Packets that matched the filter and were sampled but make no journey: a ring buffer was full at their first hop",
        |h| Health::get(&h.packets_lost),
    );
    counter(
        "vnt.agent.hops.lost",
        "{hop}",
        "Hops lost mid-path because a ring buffer was full: each leaves a gap in its journey",
        |h| Health::get(&h.hops_lost_mid_path),
    );
    counter(
        "vnt.agent.decode.errors",
        "{event}",
        "Records the plugins' decoders rejected",
        |h| Health::get(&h.decode_errors),
    );
    counter(
        "vnt.agent.journeys.completed",
        "{journey}",
        "Journeys ended, for any reason",
        |h| Health::get(&h.journeys_completed),
    );
    counter(
        "vnt.agent.journeys.timed_out",
        "{journey}",
        "Journeys ended because no hook saw the packet for journey.idle_timeout_ms",
        |h| Health::get(&h.journeys_timed_out),
    );
    counter(
        "vnt.agent.journeys.evicted",
        "{journey}",
        "Journeys ended early because journey.max_in_flight were open",
        |h| Health::get(&h.journeys_evicted),
    );
    counter(
        "vnt.agent.output.dropped",
        "{journey}",
        "Journeys and connection records not written to --output: stdout did not keep up",
        |h| Health::get(&h.output_dropped),
    );
    counter(
        "vnt.agent.spans.exported",
        "{span}",
        "Spans the collector accepted",
        |h| Health::get(&h.spans_exported),
    );
    {
        let h = health.clone();
        let _ = meter
            .u64_observable_counter("vnt.agent.spans.dropped")
            .with_unit("{span}")
            .with_description("Spans not delivered, by reason: queue_full (collector slow or down), export_failed, shutdown")
            .with_callback(move |o| {
                o.observe(
                    Health::get(&h.spans_dropped_queue_full),
                    &[KeyValue::new("reason", "queue_full")],
                );
                o.observe(
                    Health::get(&h.spans_dropped_export_failed),
                    &[KeyValue::new("reason", "export_failed")],
                );
                o.observe(
                    Health::get(&h.spans_dropped_shutdown),
                    &[KeyValue::new("reason", "shutdown")],
                );
            })
            .build();
    }
    {
        let h = health.clone();
        let _ = meter
            .u64_observable_counter("vnt.agent.export.errors")
            .with_unit("{request}")
            .with_description("Failed OTLP export requests, by signal")
            .with_callback(move |o| {
                o.observe(
                    Health::get(&h.trace_export_errors),
                    &[KeyValue::new("signal", "traces")],
                );
                o.observe(
                    Health::get(&h.metric_export_errors),
                    &[KeyValue::new("signal", "metrics")],
                );
            })
            .build();
    }
    {
        let q = queue.clone();
        let _ = meter
            .u64_observable_gauge("vnt.agent.export.queue.length")
            .with_unit("{span}")
            .with_description("Spans waiting in the export queue")
            .with_callback(move |o| o.observe(q.len_spans() as u64, &[]))
            .build();
    }
    {
        let q = queue.clone();
        let _ = meter
            .u64_observable_gauge("vnt.agent.export.queue.capacity")
            .with_unit("{span}")
            .with_description("Bound of the export queue (otlp.queue_spans)")
            .with_callback(move |o| o.observe(q.capacity() as u64, &[]))
            .build();
    }
    let _ = meter
        .u64_observable_gauge("vnt.agent.memory.rss")
        .with_unit("By")
        .with_description("Resident set size of the agent")
        .with_callback(|o| {
            if let Some(rss) = rss_bytes() {
                o.observe(rss, &[]);
            }
        })
        .build();
}

/// The process's resident set size (`VmRSS` in /proc/self/status).
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A [`ManualReader`] the meter provider and the export thread share: the
/// provider registers its pipeline, the export thread collects.
#[derive(Debug, Clone)]
pub struct SharedReader(pub Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline)
    }

    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_labels_are_capped_and_the_rest_is_other() {
        let mut cap = LabelCap::new("network.interface.name", 2);
        assert_eq!(cap.get("veth1").value.as_str(), "veth1");
        assert_eq!(cap.get("veth2").value.as_str(), "veth2");
        assert_eq!(cap.get("veth3").value.as_str(), OTHER);
        assert_eq!(
            cap.get("veth1").value.as_str(),
            "veth1",
            "known values stay"
        );
        for i in 0..1000 {
            assert_eq!(cap.get(&format!("x{i}")).value.as_str(), OTHER);
        }
        assert_eq!(cap.len(), 2);
    }
}

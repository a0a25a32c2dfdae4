//! The aligner's own metrics, sent to the collector as the agent sends its
//! own (`[otlp]` metrics settings): spans in and out, traces by what was
//! done to them, spans held, and per pair of hosts the offset and its
//! uncertainty last applied (labelled `vnt.clock.reference` and
//! `vnt.clock.host`: `host.name` is the aligner's own, in its resource).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::MetricExporter;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{ManualReader, SdkMeterProvider, Temporality};

use super::traces::{Aligner, Counts};
use super::Stats;
use crate::config::OtlpConfig;
use crate::export::otlp::metrics::SharedReader;
use crate::export::otlp::{resource, transport, OtlpError};

/// Host pairs reported at most (a label set each).
const MAX_PAIRS: usize = 256;

/// The meter, its reader and the exporter toward the collector.
pub struct Metrics {
    _provider: SdkMeterProvider,
    reader: Arc<ManualReader>,
    exporter: MetricExporter,
    interval: Duration,
    timeout: Duration,
}

fn register(meter: &Meter, aligner: &Arc<Mutex<Aligner>>, stats: &Arc<Stats>) {
    let counts = {
        let a = aligner.clone();
        move || a.lock().unwrap_or_else(|p| p.into_inner()).counts()
    };
    let c = counts.clone();
    let s = stats.clone();
    let _ = meter
        .u64_observable_counter("vnt.align.spans")
        .with_unit("{span}")
        .with_description("Spans the aligner received from agents, and forwarded to the collector")
        .with_callback(move |o| {
            o.observe(
                c().spans_in,
                &[KeyValue::new("vnt.align.stage", "received")],
            );
            o.observe(
                s.forwarded.load(Ordering::Relaxed),
                &[KeyValue::new("vnt.align.stage", "forwarded")],
            );
        })
        .build();
    let c = counts.clone();
    let _ = meter
        .u64_observable_counter("vnt.align.traces")
        .with_unit("{trace}")
        .with_description(
            "Traces released, by what was done to their clocks (aligned, unaligned: no traffic \
             back, ambiguous: no single origin, late: spans after the trace went out, one_host)",
        )
        .with_callback(move |o| {
            let k: Counts = c();
            for (result, n) in [
                ("aligned", k.aligned),
                ("unaligned", k.unaligned),
                ("ambiguous", k.ambiguous),
                ("late", k.late),
                (
                    "one_host",
                    k.traces.saturating_sub(k.cross_host).saturating_sub(k.late),
                ),
            ] {
                o.observe(n, &[KeyValue::new("vnt.clock.result", result)]);
            }
        })
        .build();
    let a = aligner.clone();
    let _ = meter
        .u64_observable_gauge("vnt.align.held_spans")
        .with_unit("{span}")
        .with_description("Spans held, waiting for the other hosts' spans of their trace")
        .with_callback(move |o| {
            let held = a.lock().unwrap_or_else(|p| p.into_inner()).held_spans();
            o.observe(held as u64, &[]);
        })
        .build();
    let s = stats.clone();
    let _ = meter
        .u64_observable_counter("vnt.align.requests.rejected")
        .with_unit("{request}")
        .with_description("Export requests refused: not decodable, too large, wrong content type")
        .with_callback(move |o| o.observe(s.rejected.load(Ordering::Relaxed), &[]))
        .build();
    for (name, description, uncertainty) in [
        (
            "vnt.align.clock.offset",
            "How far vnt.clock.host's clock was found ahead of vnt.clock.reference's, last applied",
            false,
        ),
        (
            "vnt.align.clock.uncertainty",
            "The true offset is within this of vnt.align.clock.offset",
            true,
        ),
    ] {
        let a = aligner.clone();
        let _ = meter
            .i64_observable_gauge(name)
            .with_unit("ns")
            .with_description(description)
            .with_callback(move |o| {
                let est = a.lock().unwrap_or_else(|p| p.into_inner()).estimates();
                for e in est.into_iter().take(MAX_PAIRS) {
                    let v = if uncertainty {
                        e.offset.uncertainty_ns.min(i64::MAX as u64) as i64
                    } else {
                        e.offset.offset_ns
                    };
                    o.observe(
                        v,
                        &[
                            KeyValue::new("vnt.clock.reference", e.reference),
                            KeyValue::new("vnt.clock.host", e.host),
                        ],
                    );
                }
            })
            .build();
    }
}

impl Metrics {
    /// The aligner's metrics, when `[otlp]` has metrics on.
    pub(super) fn start(
        cfg: &OtlpConfig,
        aligner: &Arc<Mutex<Aligner>>,
        stats: &Arc<Stats>,
    ) -> Result<Option<Metrics>, OtlpError> {
        if !cfg.metrics {
            return Ok(None);
        }
        let reader = Arc::new(
            ManualReader::builder()
                .with_temporality(Temporality::Cumulative)
                .build(),
        );
        let provider = SdkMeterProvider::builder()
            .with_reader(SharedReader(reader.clone()))
            .with_resource(resource::identity(cfg).resource)
            .build();
        let meter = provider.meter_with_scope(
            InstrumentationScope::builder("vnt-agent align")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        );
        register(&meter, aligner, stats);
        Ok(Some(Metrics {
            _provider: provider,
            reader,
            exporter: transport::metric_exporter(cfg)?,
            interval: cfg.metrics_interval,
            timeout: cfg.timeout,
        }))
    }

    /// How often to export.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Collect and send once.
    pub async fn export(&self) {
        let mut rm = ResourceMetrics::default();
        if let Err(e) = self.reader.collect(&mut rm) {
            tracing::debug!(error = %e, "cannot collect the aligner's metrics");
            return;
        }
        match tokio::time::timeout(self.timeout, self.exporter.export(&rm)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the aligner's metrics were not taken"),
            Err(_) => tracing::warn!("the collector did not answer the aligner's metrics"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::align::traces::Settings;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

    #[test]
    fn every_instrument_is_collected() {
        let aligner = Arc::new(Mutex::new(Aligner::new(Settings {
            hold_ns: 0,
            max_spans: 10,
            window_ns: 1_000_000_000,
            max_samples: 10,
        })));
        {
            let mut a = aligner.lock().unwrap();
            a.ingest(ExportTraceServiceRequest::default(), 0);
            crate::align::traces::tests::packet_a_to_b(&mut a, 1, 1_000_000_000_000, 0);
            crate::align::traces::tests::packet_b_to_a(&mut a, 2, 1_001_000_000_000, 0);
            a.release(0, true, 100);
        }
        let reader = Arc::new(ManualReader::builder().build());
        let provider = SdkMeterProvider::builder()
            .with_reader(SharedReader(reader.clone()))
            .build();
        register(&provider.meter("t"), &aligner, &Arc::new(Stats::default()));
        let mut rm = ResourceMetrics::default();
        reader.collect(&mut rm).unwrap();
        let names: Vec<String> = rm
            .scope_metrics()
            .flat_map(|s| s.metrics())
            .map(|m| m.name().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "vnt.align.spans",
                "vnt.align.traces",
                "vnt.align.held_spans",
                "vnt.align.requests.rejected",
                "vnt.align.clock.offset",
                "vnt.align.clock.uncertainty"
            ]
        );
    }
}

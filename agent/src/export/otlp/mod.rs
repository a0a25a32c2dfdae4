//! Journeys as OpenTelemetry: one trace per packet, a root span per journey
//! and a child span per hop, plus metrics (per-hop latency, packets and drops
//! by interface and reason, the agent's health), sent over OTLP/gRPC or
//! OTLP/HTTP. The span model, attributes, metrics and the memory bound are
//! written down in docs/otel.md.
//!
//! The main loop calls [`Otlp::journey`] for each finished journey: metrics
//! are recorded there and the journey goes into a bounded queue
//! ([`queue::SpanQueue`], measured in spans). A thread of its own
//! (`worker.rs`) writes each batch's spans (with ids and times dictated by
//! the packet, so no tracer is involved) straight into an OTLP export
//! request (`encode.rs`, byte for byte what opentelemetry-otlp would send for
//! the spans of `spans.rs`) and sends it (`transport.rs`); metrics go through
//! opentelemetry-otlp. When the collector is slow or down, the queue fills,
//! journeys that do not fit are dropped and counted, and tracing goes on.

pub mod encode;
pub mod health;
pub mod metrics;
pub mod queue;
pub mod resource;
pub mod spans;
pub mod transport;
mod worker;

use std::path::PathBuf;
use std::sync::Arc;

use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::metrics::{ManualReader, SdkMeterProvider, Temporality};
use thiserror::Error;
use tokio::sync::watch;

use self::health::Health;
use self::metrics::{JourneyMetrics, SharedReader};
use self::queue::SpanQueue;
use crate::config::OtlpConfig;
use crate::export::view::{JourneyView, OtlpSummary};

/// OTLP export could not be set up.
#[derive(Debug, Error)]
pub enum OtlpError {
    /// A TLS file could not be read.
    #[error("cannot read otlp.tls.{what} file {path}: {source}")]
    TlsFile {
        /// `ca`, `cert` or `key`.
        what: &'static str,
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A TLS file is not usable PEM.
    #[error("invalid PEM in otlp.tls.{what}: {message}")]
    TlsPem {
        /// Which file(s).
        what: &'static str,
        /// Cause.
        message: String,
    },
    /// opentelemetry-otlp refused the exporter configuration.
    #[error("cannot set up the OTLP {signal} exporter for {endpoint}: {message}")]
    Exporter {
        /// `traces` or `metrics`.
        signal: &'static str,
        /// URL.
        endpoint: String,
        /// Cause.
        message: String,
    },
    /// The export thread could not start.
    #[error("cannot start the OTLP export thread: {0}")]
    Thread(String),
}

/// OTLP export, owned by the main loop.
#[derive(Debug)]
pub struct Otlp {
    endpoint: String,
    protocol: &'static str,
    traces: bool,
    queue: Arc<SpanQueue>,
    health: Arc<Health>,
    metrics: Option<JourneyMetrics>,
    meter: Option<opentelemetry::metrics::Meter>,
    provider: Option<SdkMeterProvider>,
    stop: watch::Sender<bool>,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl Otlp {
    /// Set up the exporters and start the export thread. Nothing is sent
    /// yet; a collector that is not there is not an error (export starts
    /// when it answers).
    pub fn start(cfg: &OtlpConfig) -> Result<Otlp, OtlpError> {
        let identity = resource::identity(cfg);
        let health = Arc::new(Health::default());
        let queue = Arc::new(SpanQueue::new(cfg.queue_spans, cfg.batch_spans));
        let (metrics, provider, reader) = if cfg.metrics {
            let reader = Arc::new(
                ManualReader::builder()
                    .with_temporality(Temporality::Cumulative)
                    .build(),
            );
            let provider = SdkMeterProvider::builder()
                .with_reader(SharedReader(reader.clone()))
                .with_resource(identity.resource.clone())
                .build();
            let meter = provider.meter_with_scope(
                InstrumentationScope::builder("vnt-agent")
                    .with_version(env!("CARGO_PKG_VERSION"))
                    .build(),
            );
            let jm = JourneyMetrics::new(&meter, cfg.max_interfaces);
            metrics::register_health(&meter, &health, &queue);
            (Some((jm, meter)), Some(provider), Some(reader))
        } else {
            (None, None, None)
        };
        let (metrics, meter) = metrics.unzip();
        let (stop, stop_rx) = watch::channel(false);
        let host_name = identity.host_name.clone();
        let worker = worker::spawn(worker::Worker {
            cfg: cfg.clone(),
            identity,
            queue: queue.clone(),
            health: health.clone(),
            reader,
            stop: stop_rx,
        })?;
        tracing::info!(
            endpoint = %cfg.endpoint,
            protocol = cfg.protocol.as_str(),
            traces = cfg.traces,
            metrics = cfg.metrics,
            host.name = %host_name,
            queue_spans = cfg.queue_spans,
            "OTLP export on"
        );
        Ok(Otlp {
            endpoint: cfg.endpoint.clone(),
            protocol: cfg.protocol.as_str(),
            traces: cfg.traces,
            queue,
            health,
            metrics,
            meter,
            provider,
            stop,
            worker: Some(worker),
        })
    }

    /// Take a finished journey: record its metrics and queue its spans (or
    /// count them as dropped when the queue is full). Never blocks.
    pub fn journey(&mut self, view: JourneyView) {
        if let Some(m) = &mut self.metrics {
            m.record(&view);
        }
        if !self.traces {
            return;
        }
        let n = spans::span_count(&view);
        if self.queue.push(view, n) {
            Health::add(&self.health.spans_queued, n as u64);
        } else {
            Health::add(&self.health.spans_dropped_queue_full, n as u64);
        }
    }

    /// The meter of the agent's metrics, when metrics export is on (for
    /// the plugins' declared metrics).
    pub fn meter(&self) -> Option<&opentelemetry::metrics::Meter> {
        self.meter.as_ref()
    }

    /// The health counters, for the main loop to update.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Spans waiting in the queue.
    pub fn queued_spans(&self) -> usize {
        self.queue.len_spans()
    }

    /// Export what is queued (within `otlp.shutdown_timeout_ms`), send the
    /// final metrics, stop the thread, and report: the details and the number
    /// of spans exported.
    pub fn shutdown(mut self) -> (OtlpSummary, u64) {
        self.stop_worker();
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
        let h = &self.health;
        let summary = OtlpSummary {
            endpoint: self.endpoint.clone(),
            protocol: self.protocol,
            spans_queued: Health::get(&h.spans_queued),
            spans_dropped_queue_full: Health::get(&h.spans_dropped_queue_full),
            spans_dropped_export_failed: Health::get(&h.spans_dropped_export_failed),
            spans_dropped_shutdown: Health::get(&h.spans_dropped_shutdown),
            trace_export_errors: Health::get(&h.trace_export_errors),
            metric_exports: Health::get(&h.metric_exports),
            metric_export_errors: Health::get(&h.metric_export_errors),
        };
        (summary, Health::get(&h.spans_exported))
    }

    fn stop_worker(&mut self) {
        if let Some(w) = self.worker.take() {
            let _ = self.stop.send(true);
            if w.join().is_err() {
                tracing::error!("the OTLP export thread panicked");
            }
        }
    }
}

impl Drop for Otlp {
    fn drop(&mut self) {
        self.stop_worker();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OtlpProtocol;
    use crate::export::view::{FlowView, HopView};
    use std::time::{Duration, Instant};

    fn cfg(endpoint: String, queue: usize, shutdown: Duration) -> OtlpConfig {
        OtlpConfig {
            endpoint,
            protocol: OtlpProtocol::Grpc,
            headers: vec![],
            timeout: Duration::from_secs(10),
            service_name: None,
            resource: vec![],
            traces: true,
            metrics: true,
            metrics_interval: Duration::from_secs(60),
            queue_spans: queue,
            batch_spans: 8,
            batch_delay: Duration::from_millis(20),
            max_interfaces: 4,
            max_series_per_metric: 10,
            exclude_own_traffic: true,
            shutdown_timeout: shutdown,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
        }
    }

    fn journey(n: u64) -> JourneyView {
        let hop = |ts: u64, latency: u64| HopView {
            hook: "net:netif_rx".into(),
            label: "backlog".into(),
            plugin: "veth".into(),
            interface: format!("veth{}", n % 10),
            ifindex: 2,
            netns: 1,
            netns_name: None,
            netns_owner: None,
            container: None,
            direction: "rx",
            process: None,
            cpu: 0,
            len: 64,
            ts_unix_nano: ts,
            latency_ns: latency,
            drop: None,
            parent_hook: None,
            parent: None,
            depth: 0,
            duration_ns: None,
            attrs: Default::default(),
        };
        JourneyView {
            kind: "journey",
            trace_id: String::new(),
            pkt_id: format!("{n:016x}"),
            id: n,
            end: "unknown",
            delivered_to: None,
            process: None,
            closed: "idle",
            flow: FlowView {
                src: "10.0.0.1".into(),
                dst: "10.0.0.2".into(),
                sport: 1,
                dport: 2,
                proto: "udp".into(),
                family: 4,
            },
            len: 64,
            start_unix_nano: 1_000,
            duration_ns: 500,
            hops: vec![hop(1_000, 0), hop(1_500, 500)],
            cpu_intervals: vec![],
        }
    }

    #[test]
    fn nothing_listening_drops_and_counts_and_stays_bounded() {
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut otlp = Otlp::start(&cfg(
            format!("http://127.0.0.1:{port}"),
            30,
            Duration::from_millis(200),
        ))
        .expect("a collector that is not there is not an error");
        for n in 0..1000 {
            otlp.journey(journey(n));
            assert!(otlp.queued_spans() <= 30, "the queue is bounded");
        }
        let (s, exported) = otlp.shutdown();
        assert_eq!(exported, 0);
        assert!(s.spans_dropped_queue_full > 0, "{s:?}");
        assert_eq!(
            s.spans_queued + s.spans_dropped_queue_full,
            3000,
            "every span is queued or counted: {s:?}"
        );
        assert_eq!(
            s.spans_queued,
            s.spans_dropped_export_failed + s.spans_dropped_shutdown,
            "what was queued failed or was left at shutdown: {s:?}"
        );
    }

    #[test]
    fn exit_is_bounded_when_the_collector_never_answers() {
        // Accepts connections, never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut held = vec![];
            while let Ok((c, _)) = listener.accept() {
                held.push(c);
            }
        });
        let mut otlp = Otlp::start(&cfg(
            format!("http://127.0.0.1:{port}"),
            1000,
            Duration::from_millis(500),
        ))
        .unwrap();
        for n in 0..20 {
            otlp.journey(journey(n));
        }
        std::thread::sleep(Duration::from_millis(200)); // a request is in flight
        let t = Instant::now();
        let (s, exported) = otlp.shutdown();
        let took = t.elapsed();
        assert!(
            took < Duration::from_millis(2500),
            "shutdown took {took:?} (timeout 500 ms + 1 s for metrics)"
        );
        assert_eq!(exported, 0);
        assert_eq!(
            s.spans_dropped_shutdown + s.spans_dropped_export_failed,
            60,
            "{s:?}"
        );
    }
}

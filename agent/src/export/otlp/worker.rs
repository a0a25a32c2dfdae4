//! The export thread: its own single-threaded Tokio runtime, so a slow
//! collector never delays the main loop. It takes batches from the queue,
//! writes their spans into an export request (`encode.rs`), sends it, and
//! collects and sends metrics on an interval.
//!
//! A failed span export (after the exporter's own retries) drops that batch,
//! counts it, and backs off (250 ms doubling to 5 s) before the next
//! attempt; meanwhile the queue fills and further journeys are refused and
//! counted. The gRPC channel and the HTTP client reconnect on the next
//! request, so export resumes by itself when the collector is back.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::InstrumentationScope;
use opentelemetry_otlp::MetricExporter;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::ManualReader;
use tokio::sync::watch;
use tokio::time::Instant;

use super::encode::TraceEncoder;
use super::health::Health;
use super::queue::{Queued, SpanQueue};
use super::resource::Identity;
use super::transport::TraceClient;
use super::{transport, OtlpError};
use crate::config::OtlpConfig;

const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What the export thread works with.
pub(super) struct Worker {
    pub cfg: OtlpConfig,
    pub identity: Identity,
    pub queue: Arc<SpanQueue>,
    pub health: Arc<Health>,
    pub reader: Option<Arc<ManualReader>>,
    pub stop: watch::Receiver<bool>,
}

/// Start the thread; returns once its exporters are set up (or failed to).
pub(super) fn spawn(w: Worker) -> Result<std::thread::JoinHandle<()>, OtlpError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Result<(), OtlpError>>(1);
    let handle = std::thread::Builder::new()
        .name("vnt-otlp".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(OtlpError::Thread(e.to_string())));
                    return;
                }
            };
            rt.block_on(run(w, ready_tx));
        })
        .map_err(|e| OtlpError::Thread(e.to_string()))?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => {
            let _ = handle.join();
            Err(e)
        }
        Err(_) => {
            let _ = handle.join();
            Err(OtlpError::Thread(
                "the export thread ended before it was ready".into(),
            ))
        }
    }
}

async fn run(w: Worker, ready: std::sync::mpsc::SyncSender<Result<(), OtlpError>>) {
    let trace_client = if w.cfg.traces {
        match TraceClient::new(&w.cfg) {
            Ok(c) => Some(c),
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        }
    } else {
        None
    };
    let metric_exporter = match &w.reader {
        Some(reader) => match transport::metric_exporter(&w.cfg) {
            Ok(e) => Some((e, reader.clone())),
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        },
        None => None,
    };
    let _ = ready.send(Ok(()));

    let traces = async {
        match &trace_client {
            Some(c) => span_loop(c, &w, w.stop.clone()).await,
            None => None,
        }
    };
    let metrics = async {
        if let Some((e, reader)) = &metric_exporter {
            metric_loop(e, reader, &w, w.stop.clone()).await;
        }
    };
    let (deadline, ()) = tokio::join!(traces, metrics);
    // Last, so the final numbers include the spans drained at shutdown; within
    // what is left of the shutdown timeout (at least 1 s, at most one request
    // timeout), so that the agent exits within shutdown_timeout + 1 s.
    if let Some((e, reader)) = &metric_exporter {
        let left = deadline.map_or(w.cfg.shutdown_timeout, |d| {
            d.saturating_duration_since(Instant::now())
        });
        let limit = left.max(Duration::from_secs(1)).min(w.cfg.timeout);
        if !w.cfg.shutdown_timeout.is_zero() {
            export_metrics(e, reader, &w, limit, &mut false).await;
        }
    }
}

fn stop_requested(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

/// Returns the shutdown deadline it worked to.
async fn span_loop(
    client: &TraceClient,
    w: &Worker,
    mut stop: watch::Receiver<bool>,
) -> Option<Instant> {
    let cfg = &w.cfg;
    let scope = InstrumentationScope::builder("vnt-agent")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    let mut encoder = TraceEncoder::new(&w.identity.resource, &scope, w.identity.host_key);
    let mut taken: Vec<Queued> = Vec::new();
    let mut failures = 0u64;
    let mut backoff = Duration::ZERO;
    let mut deadline: Option<Instant> = None;
    // One export request may take the exporter's retries: bound it anyway.
    let request_limit = cfg.timeout * 4 + Duration::from_secs(5);
    loop {
        if deadline.is_none() && stop_requested(&stop) {
            deadline = Some(Instant::now() + cfg.shutdown_timeout);
        }
        match deadline {
            Some(d) => {
                if w.queue.len_spans() == 0 || Instant::now() >= d {
                    break;
                }
            }
            None => {
                if w.queue.len_spans() < cfg.batch_spans {
                    tokio::select! {
                        _ = w.queue.batch_ready() => {}
                        _ = tokio::time::sleep(cfg.batch_delay) => {}
                        _ = stop.changed() => continue,
                    }
                }
            }
        }
        taken.clear();
        let n = w.queue.pop_batch(cfg.batch_spans, &mut taken) as u64;
        if n == 0 {
            continue;
        }
        let body = encoder.request(taken.iter().map(|q| &q.view));
        taken.clear();
        // Bounded by the request limit, and cut short by the shutdown
        // deadline: a collector that accepts connections but never answers
        // must not hold the agent's exit.
        let export = tokio::time::timeout(request_limit, client.export(body));
        tokio::pin!(export);
        let outcome = loop {
            let until = deadline.unwrap_or_else(|| Instant::now() + request_limit);
            tokio::select! {
                r = &mut export => break Some(r),
                _ = stop.changed(), if deadline.is_none() => {
                    deadline = Some(Instant::now() + cfg.shutdown_timeout);
                }
                _ = tokio::time::sleep_until(until), if deadline.is_some() => break None,
            }
        };
        let error = match outcome {
            Some(Ok(Ok(()))) => None,
            Some(Ok(Err(e))) => Some(e),
            Some(Err(_)) => Some(format!("no answer within {request_limit:?}")),
            None => {
                Health::add(&w.health.spans_dropped_shutdown, n);
                break;
            }
        };
        match error {
            None => {
                Health::add(&w.health.spans_exported, n);
                if failures > 0 {
                    tracing::info!(endpoint = %cfg.endpoint, failed_requests = failures, "OTLP trace export works again");
                }
                failures = 0;
                backoff = Duration::ZERO;
            }
            Some(e) => {
                Health::add(&w.health.spans_dropped_export_failed, n);
                Health::add(&w.health.trace_export_errors, 1);
                if failures == 0 {
                    tracing::warn!(endpoint = %cfg.endpoint, error = %e, "OTLP trace export failed; spans are dropped and counted until the collector answers again (tracing goes on)");
                } else {
                    tracing::debug!(endpoint = %cfg.endpoint, error = %e, "OTLP trace export failed again");
                }
                failures += 1;
                backoff = (backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
                if deadline.is_none() {
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        }
    }
    let left = w.queue.clear() as u64;
    if left > 0 {
        Health::add(&w.health.spans_dropped_shutdown, left);
        tracing::warn!(
            spans = left,
            "OTLP: spans still queued at the shutdown timeout were dropped"
        );
    }
    deadline
}

async fn metric_loop(
    exporter: &MetricExporter,
    reader: &ManualReader,
    w: &Worker,
    mut stop: watch::Receiver<bool>,
) {
    let interval = w.cfg.metrics_interval;
    let mut tick = tokio::time::interval_at(Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let limit = w.cfg.timeout * 4 + Duration::from_secs(5);
    let mut failing = false;
    loop {
        if stop_requested(&stop) {
            return;
        }
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        // A request in flight when the agent stops is abandoned: the final
        // export after the spans carries the same (cumulative) numbers.
        tokio::select! {
            _ = export_metrics(exporter, reader, w, limit, &mut failing) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn export_metrics(
    exporter: &MetricExporter,
    reader: &ManualReader,
    w: &Worker,
    limit: Duration,
    failing: &mut bool,
) {
    let mut rm = ResourceMetrics::default();
    if let Err(e) = reader.collect(&mut rm) {
        tracing::debug!(error = %e, "cannot collect metrics");
        return;
    }
    let error = match tokio::time::timeout(limit, exporter.export(&rm)).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("no answer within {limit:?}")),
    };
    match error {
        None => {
            Health::add(&w.health.metric_exports, 1);
            if *failing {
                tracing::info!(endpoint = %w.cfg.endpoint, "OTLP metric export works again");
            }
            *failing = false;
        }
        Some(e) => {
            Health::add(&w.health.metric_export_errors, 1);
            if !*failing {
                let hint = if e.contains("Unimplemented") || e.contains("404") {
                    " (the collector has no metrics pipeline: Jaeger alone takes traces only; send to an OpenTelemetry Collector, or set otlp.metrics = false / OTEL_METRICS_EXPORTER=none)"
                } else {
                    ""
                };
                tracing::warn!(endpoint = %w.cfg.endpoint, error = %e, "OTLP metric export failed; will retry at the next interval{hint}");
            }
            *failing = true;
        }
    }
}

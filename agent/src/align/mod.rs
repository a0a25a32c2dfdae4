//! `vnt-agent align`: clocks between hosts, where their spans meet.
//!
//! Each agent stamps its spans with its own host's clock, and one packet's
//! trace holds spans from every host it crossed; when the clocks differ by
//! more than the wire's delay, the cross-host step of the trace lies (it can
//! even run backwards). An agent alone cannot tell: it never sees the other
//! host's times. They meet in the spans, so the aligner stands in the export
//! path: agents send it their OTLP (gRPC or HTTP/protobuf, on one port), it
//! holds each trace until every host's share has come ([`traces`]), learns
//! each pair of hosts' offset from packets that went both ways between them
//! ([`clock`], minimum-delay filtering as NTP does), moves the receiving
//! host's spans onto the origin's clock, marks what it did, and sends
//! everything on to the collector with the agent's own OTLP client
//! (`[otlp]`, `--otlp-endpoint`). See docs/adr/019-clock-alignment.md.
//!
//! Agents' metrics, sent to the same address, are passed through unchanged;
//! the aligner's own ([`metrics`]) go with them.
//!
//! Memory is bounded by `max_spans` (the oldest traces go out early beyond
//! it) and by a queue of export requests toward the collector (full, a
//! request is dropped and its spans counted).

pub mod clock;
mod metrics;
pub mod traces;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use serde::Serialize;
use thiserror::Error;
use tokio::sync::mpsc;
use tonic::codegen::Service as _;

use self::traces::{Aligner, Settings};
use crate::config::OtlpConfig;
use crate::export::otlp::transport::TraceClient;
use crate::export::otlp::OtlpError;
use crate::signals::Signals;

/// The largest export request accepted, in bytes.
const MAX_REQUEST: usize = 16 << 20;
/// Spans per request sent on.
const BATCH_SPANS: usize = 512;
/// Requests waiting for the collector at most.
const QUEUE_REQUESTS: usize = 64;
/// The gRPC path prefix of OTLP metrics, passed through.
const METRICS_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/";
/// How often held traces are checked for release.
const TICK: Duration = Duration::from_millis(50);

/// How the aligner runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where to receive OTLP.
    pub listen: SocketAddr,
    /// How long a trace waits for every host's spans.
    pub hold: Duration,
    /// The window offsets are estimated over.
    pub window: Duration,
    /// Spans held at most.
    pub max_spans: usize,
    /// Written (JSON: pid, listen address) once listening; removed at exit.
    pub ready_file: Option<PathBuf>,
    /// Stop after this long.
    pub duration: Option<Duration>,
}

/// The aligner could not run.
#[derive(Debug, Error)]
pub enum AlignError {
    /// No collector to send to.
    #[error("align needs a collector to send to: --otlp-endpoint URL (or [otlp] endpoint)")]
    NoEndpoint,
    /// The OTLP client could not be set up.
    #[error(transparent)]
    Otlp(#[from] OtlpError),
    /// The listening address could not be bound.
    #[error("failed to listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// Signals, the ready file.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// One pair's estimate in the summary.
#[derive(Debug, Clone, Serialize)]
pub struct PairSummary {
    /// The host whose clock the other is put on.
    pub reference: String,
    /// The host moved.
    pub host: String,
    /// How far `host`'s clock is ahead of `reference`'s.
    pub offset_ns: i64,
    /// Half the width of the interval the true offset lies in.
    pub uncertainty_ns: u64,
    /// Samples in the window, reference to host.
    pub samples_forward: usize,
    /// Samples in the window, host to reference.
    pub samples_reverse: usize,
}

/// What the aligner did, written as JSON on stdout at exit.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Spans received from agents.
    pub spans_received: u64,
    /// Spans the collector accepted.
    pub spans_forwarded: u64,
    /// Spans dropped: the queue toward the collector was full, or it refused them.
    pub spans_dropped: u64,
    /// Export requests refused (not decodable, too large, wrong content type).
    pub requests_rejected: u64,
    /// Metrics export requests passed through to the collector.
    pub metrics_requests_forwarded: u64,
    /// Metrics export requests dropped (queue full, or the collector refused them).
    pub metrics_requests_dropped: u64,
    /// Traces released.
    pub traces: u64,
    /// Traces with spans from more than one host.
    pub cross_host_traces: u64,
    /// Cross-host traces put on their origin's clock.
    pub aligned_traces: u64,
    /// Cross-host traces left unaligned (no traffic back yet).
    pub unaligned_traces: u64,
    /// Cross-host traces whose origin could not be told.
    pub ambiguous_traces: u64,
    /// Traces released before their hold was over (the `max_spans` bound).
    pub released_early: u64,
    /// Traces whose spans came after the trace went out (raise `--hold-ms`): marked unaligned.
    pub late_traces: u64,
    /// Spans held at most.
    pub max_spans: usize,
    /// The last estimate applied per (reference, host).
    pub offsets: Vec<PairSummary>,
    /// Ordered (from, to) host pairs with packets seen.
    pub directions: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct Stats {
    forwarded: AtomicU64,
    rejected: AtomicU64,
    metrics_forwarded: AtomicU64,
    metrics_dropped: AtomicU64,
}

/// What the forwarding task is given.
enum Forward {
    /// An encoded export request and its number of spans.
    Spans(Bytes, u64),
    /// An encoded metrics export request, passed through as it came.
    Metrics(Bytes),
    /// Nothing more: stop (connections still open may hold senders).
    Done,
}

/// The state every connection feeds.
#[derive(Clone)]
struct Sink {
    aligner: Arc<Mutex<Aligner>>,
    epoch: Instant,
    queue: mpsc::Sender<Forward>,
    stats: Arc<Stats>,
}

impl Sink {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64
    }

    fn take(&self, request: ExportTraceServiceRequest) {
        let now = self.now();
        let out = {
            let mut a = self.aligner.lock().unwrap_or_else(|p| p.into_inner());
            a.ingest(request, now);
            a.release(now, false, BATCH_SPANS)
        };
        self.send(out);
    }

    fn release(&self, all: bool) -> Vec<ExportTraceServiceRequest> {
        let now = self.now();
        let mut a = self.aligner.lock().unwrap_or_else(|p| p.into_inner());
        a.release(now, all, BATCH_SPANS)
    }

    fn send(&self, requests: Vec<ExportTraceServiceRequest>) {
        for r in requests {
            let n = span_count(&r);
            if self
                .queue
                .try_send(Forward::Spans(r.encode_to_vec().into(), n))
                .is_err()
            {
                tracing::debug!(
                    spans = n,
                    "the queue toward the collector is full: spans dropped"
                );
            }
        }
    }
}

impl Sink {
    fn metrics(&self, body: Bytes) {
        if self.queue.try_send(Forward::Metrics(body)).is_err() {
            self.stats.metrics_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn span_count(r: &ExportTraceServiceRequest) -> u64 {
    r.resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len() as u64)
        .sum()
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.take(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.metrics(request.into_inner().encode_to_vec().into());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

fn http_answer(status: StatusCode, body: Bytes, content_type: &str) -> Response<tonic::body::Body> {
    let mut r = Response::new(tonic::body::Body::new(Full::new(body)));
    *r.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

/// OTLP/HTTP with protobuf bodies: `POST /v1/traces`, `POST /v1/metrics`.
async fn http_export(sink: &Sink, req: Request<Incoming>) -> Response<tonic::body::Body> {
    let text = |status, msg: &str| http_answer(status, Bytes::from(msg.to_owned()), "text/plain");
    let metrics = match req.uri().path() {
        "/v1/traces" => false,
        "/v1/metrics" => true,
        _ => {
            return text(
                StatusCode::NOT_FOUND,
                "only /v1/traces and /v1/metrics are served",
            )
        }
    };
    if req.method() != http::Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "POST only");
    }
    let protobuf = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-protobuf"));
    if !protobuf {
        sink.stats.rejected.fetch_add(1, Ordering::Relaxed);
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "application/x-protobuf only (OTLP/HTTP JSON is not served)",
        );
    }
    let body = match Limited::new(req.into_body(), MAX_REQUEST).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            sink.stats.rejected.fetch_add(1, Ordering::Relaxed);
            return text(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the body: {e}"),
            );
        }
    };
    if metrics {
        sink.metrics(body);
        return http_answer(
            StatusCode::OK,
            ExportMetricsServiceResponse::default()
                .encode_to_vec()
                .into(),
            "application/x-protobuf",
        );
    }
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            sink.take(request);
            http_answer(
                StatusCode::OK,
                ExportTraceServiceResponse::default().encode_to_vec().into(),
                "application/x-protobuf",
            )
        }
        Err(e) => {
            sink.stats.rejected.fetch_add(1, Ordering::Relaxed);
            text(
                StatusCode::BAD_REQUEST,
                &format!("not an export request: {e}"),
            )
        }
    }
}

async fn serve(listener: tokio::net::TcpListener, sink: Sink) {
    let grpc = TraceServiceServer::new(sink.clone()).max_decoding_message_size(MAX_REQUEST);
    let grpc_metrics =
        MetricsServiceServer::new(sink.clone()).max_decoding_message_size(MAX_REQUEST);
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (grpc, grpc_metrics, sink) = (grpc.clone(), grpc_metrics.clone(), sink.clone());
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let (mut grpc, mut grpc_metrics, sink) =
                (grpc.clone(), grpc_metrics.clone(), sink.clone());
            async move {
                let is_grpc = req
                    .headers()
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("application/grpc"));
                if is_grpc && req.uri().path().starts_with(METRICS_PATH) {
                    grpc_metrics.call(req).await
                } else if is_grpc {
                    grpc.call(req).await
                } else {
                    Ok::<_, Infallible>(http_export(&sink, req).await)
                }
            }
        });
        tokio::spawn(async move {
            let conn = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = conn.serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!(error = %e, "connection ended");
            }
        });
    }
}

async fn forward(client: TraceClient, mut queue: mpsc::Receiver<Forward>, stats: Arc<Stats>) {
    loop {
        match queue.recv().await {
            Some(Forward::Spans(body, n)) => match client.export(body).await {
                Ok(()) => {
                    stats.forwarded.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(spans = n, error = %e, "the collector did not take spans");
                }
            },
            Some(Forward::Metrics(body)) => match client.export_metrics(body).await {
                Ok(()) => {
                    stats.metrics_forwarded.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    stats.metrics_dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "the collector did not take metrics");
                }
            },
            Some(Forward::Done) | None => break,
        }
    }
}

/// Runs the aligner until SIGINT/SIGTERM or `duration`; then releases every
/// held trace, sends it on, and returns what it did.
pub async fn run(opts: Options, otlp: Option<&OtlpConfig>) -> Result<Summary, AlignError> {
    let otlp = otlp.ok_or(AlignError::NoEndpoint)?;
    let mut signals = Signals::install()?;
    let client = TraceClient::new(otlp)?;
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| AlignError::Listen {
            addr: opts.listen,
            source,
        })?;
    let listen = listener.local_addr()?;
    let settings = Settings {
        hold_ns: opts.hold.as_nanos().min(u128::from(u64::MAX)) as u64,
        max_spans: opts.max_spans.max(1),
        window_ns: opts.window.as_nanos().min(u128::from(u64::MAX)) as u64,
        max_samples: 4096,
    };
    let (tx, rx) = mpsc::channel(QUEUE_REQUESTS);
    let stats = Arc::new(Stats::default());
    let sink = Sink {
        aligner: Arc::new(Mutex::new(Aligner::new(settings))),
        epoch: Instant::now(),
        queue: tx,
        stats: stats.clone(),
    };
    let metrics = metrics::Metrics::start(otlp, &sink.aligner, &stats)?.map(Arc::new);
    let metrics_task = metrics.clone().map(|m| {
        tokio::spawn(async move {
            let mut every = tokio::time::interval(m.interval());
            every.tick().await;
            loop {
                every.tick().await;
                m.export().await;
            }
        })
    });
    let forwarder = tokio::spawn(forward(client, rx, stats.clone()));
    let server = tokio::spawn(serve(listener, sink.clone()));
    tracing::info!(%listen, endpoint = %otlp.endpoint, hold_ms = opts.hold.as_millis() as u64,
        window_s = opts.window.as_secs(), max_spans = settings.max_spans, "aligning clocks");
    if let Some(path) = &opts.ready_file {
        let ready = serde_json::json!({ "pid": std::process::id(), "listen": listen.to_string() });
        std::fs::write(path, ready.to_string())?;
    }

    let deadline = async {
        match opts.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            s = signals.stop() => {
                tracing::info!("{s}: stopping");
                break;
            }
            () = &mut deadline => break,
            _ = tick.tick() => sink.send(sink.release(false)),
        }
    }
    server.abort();
    let _ = server.await;
    for r in sink.release(true) {
        let n = span_count(&r);
        let _ = sink
            .queue
            .send(Forward::Spans(r.encode_to_vec().into(), n))
            .await;
    }
    let _ = sink.queue.send(Forward::Done).await;
    let aligner = sink.aligner;
    if tokio::time::timeout(otlp.shutdown_timeout, forwarder)
        .await
        .is_err()
    {
        tracing::warn!("the collector took too long: spans still queued are lost");
    }
    if let Some(task) = metrics_task {
        task.abort();
        let _ = task.await;
    }
    if let Some(m) = &metrics {
        m.export().await;
    }
    if let Some(path) = &opts.ready_file {
        let _ = std::fs::remove_file(path);
    }
    let a = aligner.lock().unwrap_or_else(|p| p.into_inner());
    let c = a.counts();
    let forwarded = stats.forwarded.load(Ordering::Relaxed);
    let summary = Summary {
        spans_received: c.spans_in,
        spans_forwarded: forwarded,
        spans_dropped: c.spans_in.saturating_sub(forwarded),
        requests_rejected: stats.rejected.load(Ordering::Relaxed),
        metrics_requests_forwarded: stats.metrics_forwarded.load(Ordering::Relaxed),
        metrics_requests_dropped: stats.metrics_dropped.load(Ordering::Relaxed),
        traces: c.traces,
        cross_host_traces: c.cross_host,
        aligned_traces: c.aligned,
        unaligned_traces: c.unaligned,
        ambiguous_traces: c.ambiguous,
        released_early: c.released_early,
        late_traces: c.late,
        max_spans: settings.max_spans,
        offsets: a
            .estimates()
            .into_iter()
            .map(|e| PairSummary {
                reference: e.reference,
                host: e.host,
                offset_ns: e.offset.offset_ns,
                uncertainty_ns: e.offset.uncertainty_ns,
                samples_forward: e.offset.samples_forward,
                samples_reverse: e.offset.samples_reverse,
            })
            .collect(),
        directions: a.sampled_pairs(),
    };
    for p in &summary.offsets {
        tracing::info!(reference = %p.reference, host = %p.host, offset_ns = p.offset_ns,
            uncertainty_ns = p.uncertainty_ns, "clock offset");
    }
    tracing::info!(
        received = summary.spans_received,
        forwarded = summary.spans_forwarded,
        dropped = summary.spans_dropped,
        aligned = summary.aligned_traces,
        unaligned = summary.unaligned_traces,
        "aligner stopped"
    );
    Ok(summary)
}

//! Sending OTLP, set up from `[otlp]`: gRPC (tonic) or HTTP/protobuf
//! (reqwest), headers, TLS (rustls on ring), timeout. Metrics go through
//! opentelemetry-otlp's exporter; traces, already encoded by `encode.rs`,
//! through [`TraceClient`], which sends them the way that exporter would
//! (same request, headers, TLS, timeout and retries) without converting
//! spans.
//!
//! `otlp.endpoint` is the collector's base URL for both protocols, as
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is: gRPC sends to it directly, HTTP appends
//! `/v1/traces` and `/v1/metrics`. Build these inside a Tokio runtime (the
//! gRPC channel spawns its connection task there).

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use opentelemetry_otlp::{
    MetricExporter, Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_sdk::metrics::Temporality;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataMap;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use super::OtlpError;
use crate::config::{OtlpConfig, OtlpProtocol};

/// Which signal an exporter is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Traces.
    Traces,
    /// Metrics.
    Metrics,
}

impl Signal {
    fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
        }
    }

    fn http_path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Metrics => "/v1/metrics",
        }
    }
}

/// The URL a signal is sent to.
pub fn signal_url(cfg: &OtlpConfig, signal: Signal) -> String {
    match cfg.protocol {
        OtlpProtocol::Grpc => cfg.endpoint.clone(),
        OtlpProtocol::HttpProtobuf => format!("{}{}", cfg.endpoint, signal.http_path()),
    }
}

fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>, OtlpError> {
    std::fs::read(path).map_err(|source| OtlpError::TlsFile {
        what,
        path: path.to_path_buf(),
        source,
    })
}

struct TlsFiles {
    ca: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

fn tls_files(cfg: &OtlpConfig) -> Result<TlsFiles, OtlpError> {
    let ca = cfg
        .tls_ca
        .as_deref()
        .map(|p| read_pem("ca", p))
        .transpose()?;
    let identity = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(c), Some(k)) => Some((read_pem("cert", c)?, read_pem("key", k)?)),
        _ => None,
    };
    Ok(TlsFiles { ca, identity })
}

fn exporter_error(cfg: &OtlpConfig, signal: Signal, e: impl std::fmt::Display) -> OtlpError {
    OtlpError::Exporter {
        signal: signal.as_str(),
        endpoint: signal_url(cfg, signal),
        message: e.to_string(),
    }
}

fn grpc_tls(cfg: &OtlpConfig) -> Result<Option<ClientTlsConfig>, OtlpError> {
    let files = tls_files(cfg)?;
    if !cfg.endpoint.starts_with("https://") {
        if files.ca.is_some() || files.identity.is_some() {
            tracing::warn!(endpoint = %cfg.endpoint, "otlp.tls is set but the endpoint is http://: TLS is not used");
        }
        return Ok(None);
    }
    let mut tls = ClientTlsConfig::new();
    tls = match files.ca {
        Some(ca) => tls.ca_certificate(Certificate::from_pem(ca)),
        None => tls.with_enabled_roots(),
    };
    if let Some((cert, key)) = files.identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Ok(Some(tls))
}

fn grpc_metadata(cfg: &OtlpConfig, signal: Signal) -> Result<MetadataMap, OtlpError> {
    let mut headers = http::HeaderMap::new();
    for (k, v) in &cfg.headers {
        let name = http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| exporter_error(cfg, signal, format!("header `{k}`: {e}")))?;
        let value = http::HeaderValue::from_str(v)
            .map_err(|e| exporter_error(cfg, signal, format!("header `{k}`: {e}")))?;
        headers.append(name, value);
    }
    Ok(MetadataMap::from_headers(headers))
}

fn http_client(cfg: &OtlpConfig, signal: Signal) -> Result<reqwest::Client, OtlpError> {
    let files = tls_files(cfg)?;
    let mut b = reqwest::Client::builder().timeout(cfg.timeout);
    if let Some(ca) = files.ca {
        let certs = reqwest::Certificate::from_pem_bundle(&ca).map_err(|e| OtlpError::TlsPem {
            what: "ca",
            message: e.to_string(),
        })?;
        b = b.tls_certs_only(certs);
    }
    if let Some((mut cert, key)) = files.identity {
        cert.push(b'\n');
        cert.extend_from_slice(&key);
        let id = reqwest::Identity::from_pem(&cert).map_err(|e| OtlpError::TlsPem {
            what: "cert/key",
            message: e.to_string(),
        })?;
        b = b.identity(id);
    }
    b.build().map_err(|e| exporter_error(cfg, signal, e))
}

fn install_crypto_provider() {
    // reqwest is built without a default provider (no aws-lc); tonic uses ring
    // explicitly. Installing twice is harmless: the first one stays.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The metric exporter for `cfg` (cumulative temporality, as Prometheus wants).
pub fn metric_exporter(cfg: &OtlpConfig) -> Result<MetricExporter, OtlpError> {
    install_crypto_provider();
    let s = Signal::Metrics;
    let built = match cfg.protocol {
        OtlpProtocol::Grpc => {
            let mut b = MetricExporter::builder()
                .with_tonic()
                .with_temporality(Temporality::Cumulative)
                .with_endpoint(signal_url(cfg, s))
                .with_timeout(cfg.timeout)
                .with_metadata(grpc_metadata(cfg, s)?);
            if let Some(tls) = grpc_tls(cfg)? {
                b = b.with_tls_config(tls);
            }
            b.build()
        }
        OtlpProtocol::HttpProtobuf => MetricExporter::builder()
            .with_http()
            .with_temporality(Temporality::Cumulative)
            .with_endpoint(signal_url(cfg, s))
            .with_protocol(Protocol::HttpBinary)
            .with_timeout(cfg.timeout)
            .with_headers(cfg.headers.iter().cloned().collect::<HashMap<_, _>>())
            .with_http_client(http_client(cfg, s)?)
            .build(),
    };
    built.map_err(|e| exporter_error(cfg, s, e))
}

/// The gRPC method OTLP traces are sent to.
const TRACE_SERVICE: &str = "opentelemetry.proto.collector.trace.v1.TraceService";
const TRACE_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const METRICS_SERVICE: &str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
const METRICS_EXPORT: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

/// How a failed request is retried.
#[derive(Debug, Clone, Copy)]
struct RetryPolicy {
    retries: u32,
    delay: Duration,
    delay_max: Duration,
    jitter_ms: u64,
}

/// opentelemetry-otlp's recommended policy: 3 retries, 100 ms doubling to
/// 1.6 s plus up to 100 ms of jitter, all within one `otlp.timeout_ms`; a
/// throttling answer's delay is honoured (capped at 30 s).
const RETRIES: RetryPolicy = RetryPolicy {
    retries: 3,
    delay: Duration::from_millis(100),
    delay_max: Duration::from_millis(1600),
    jitter_ms: 100,
};
const THROTTLE_MAX: Duration = Duration::from_secs(30);

/// Whether a failed request may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    No,
    Yes,
    /// After (at least) this long, as the collector asked.
    After(Duration),
}

/// What went wrong with one request: the text for the log, and whether to retry.
#[derive(Debug)]
struct Failure {
    message: String,
    retry: Retry,
}

/// The OTLP/gRPC failure rules: `UNAVAILABLE` and the transient codes are
/// retried, `RESOURCE_EXHAUSTED` only when the collector says when.
fn grpc_retry(code: Code, delay: Option<Duration>) -> Retry {
    match code {
        Code::ResourceExhausted => delay.map_or(Retry::No, Retry::After),
        Code::Unavailable => match delay.filter(|d| !d.is_zero()) {
            Some(d) => Retry::After(d),
            None => Retry::Yes,
        },
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::DataLoss => Retry::Yes,
        _ => Retry::No,
    }
}

/// The OTLP/HTTP failure rules: 429 and 503 (honouring `Retry-After`
/// seconds), 502, 504 and no answer at all are retried.
fn http_retry(status: Option<u16>, retry_after: Option<&str>) -> Retry {
    match status {
        None | Some(502 | 504) => Retry::Yes,
        Some(429 | 503) => retry_after
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map_or(Retry::Yes, |s| {
                Retry::After(Duration::from_secs(s.min(600)))
            }),
        Some(_) => Retry::No,
    }
}

/// Up to `max_ms` milliseconds, from the clock's nanoseconds.
fn jitter(max_ms: u64) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    Duration::from_millis(u64::from(nanos) % (max_ms + 1))
}

/// Run `attempt` until it succeeds, fails for good, or `deadline` (from now)
/// would pass before the next try.
async fn with_retries<F, Fut>(
    policy: RetryPolicy,
    deadline: Duration,
    mut attempt: F,
) -> Result<Bytes, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Bytes, Failure>>,
{
    let start = Instant::now();
    let mut delay = policy.delay;
    let mut cap = policy.delay_max;
    let mut retries = 0;
    loop {
        let f = match attempt().await {
            Ok(body) => return Ok(body),
            Err(f) => f,
        };
        if retries >= policy.retries || start.elapsed() >= deadline {
            return Err(f.message);
        }
        match f.retry {
            Retry::No => return Err(f.message),
            Retry::Yes => {}
            Retry::After(asked) => {
                let asked = asked.min(THROTTLE_MAX);
                if asked > cap {
                    cap = THROTTLE_MAX;
                }
                delay = delay.max(asked);
            }
        }
        retries += 1;
        let sleep = delay.saturating_add(jitter(policy.jitter_ms)).min(cap);
        if sleep >= deadline.saturating_sub(start.elapsed()) {
            return Err(f.message);
        }
        tokio::time::sleep(sleep).await;
        delay = delay.saturating_mul(2).min(cap);
    }
}

/// Hands tonic the request as it is (already protobuf) and the answer as bytes.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// The text of a failed gRPC request: its code, and for failures of the
/// connection itself their causes. The collector's message is left out, as
/// opentelemetry-otlp leaves it out (it may echo credentials back).
fn grpc_failure(status: &Status) -> Failure {
    let delay = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay);
    let mut message = format!("gRPC status {:?}", status.code());
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    Failure {
        message,
        retry: grpc_retry(status.code(), delay),
    }
}

/// Sends encoded trace export requests (`encode.rs`) to the collector.
#[derive(Debug)]
pub enum TraceClient {
    /// OTLP/gRPC.
    Grpc {
        /// The channel (it reconnects by itself).
        grpc: tonic::client::Grpc<Channel>,
        /// `otlp.headers` as gRPC metadata.
        metadata: MetadataMap,
        /// `otlp.timeout_ms`.
        timeout: Duration,
    },
    /// OTLP/HTTP with protobuf bodies.
    Http {
        /// The client (timeout and TLS set).
        client: reqwest::Client,
        /// `<endpoint>/v1/traces`.
        url: String,
        /// `otlp.headers`.
        headers: http::HeaderMap,
        /// `otlp.timeout_ms`.
        timeout: Duration,
    },
}

impl TraceClient {
    /// The client for `cfg`; nothing is connected yet.
    pub fn new(cfg: &OtlpConfig) -> Result<TraceClient, OtlpError> {
        install_crypto_provider();
        let s = Signal::Traces;
        match cfg.protocol {
            OtlpProtocol::Grpc => {
                let mut endpoint = Endpoint::from_shared(signal_url(cfg, s))
                    .map_err(|e| exporter_error(cfg, s, format!("invalid endpoint: {e}")))?;
                if let Some(tls) = grpc_tls(cfg)? {
                    endpoint = endpoint
                        .tls_config(tls)
                        .map_err(|e| exporter_error(cfg, s, e))?;
                }
                let channel = endpoint.timeout(cfg.timeout).connect_lazy();
                Ok(TraceClient::Grpc {
                    grpc: tonic::client::Grpc::new(channel),
                    metadata: grpc_metadata(cfg, s)?,
                    timeout: cfg.timeout,
                })
            }
            OtlpProtocol::HttpProtobuf => {
                let mut headers = http::HeaderMap::new();
                for (k, v) in &cfg.headers {
                    let name = http::HeaderName::from_bytes(k.as_bytes())
                        .map_err(|e| exporter_error(cfg, s, format!("header `{k}`: {e}")))?;
                    let value = http::HeaderValue::from_str(v)
                        .map_err(|e| exporter_error(cfg, s, format!("header `{k}`: {e}")))?;
                    headers.insert(name, value);
                }
                Ok(TraceClient::Http {
                    client: http_client(cfg, s)?,
                    url: signal_url(cfg, s),
                    headers,
                    timeout: cfg.timeout,
                })
            }
        }
    }

    /// Send one request, with retries; `Err` carries the last failure.
    pub async fn export(&self, body: Bytes) -> Result<(), String> {
        let answer = self.send(Signal::Traces, body).await?;
        if let Ok(r) = ExportTraceServiceResponse::decode(answer) {
            if let Some(p) = r.partial_success.filter(|p| p.rejected_spans > 0) {
                tracing::debug!(rejected_spans = p.rejected_spans, message = %p.error_message, "the collector rejected some spans");
            }
        }
        Ok(())
    }

    /// Send an encoded metrics export request as it is, to the same
    /// collector (the clock aligner passes agents' metrics through).
    pub async fn export_metrics(&self, body: Bytes) -> Result<(), String> {
        self.send(Signal::Metrics, body).await.map(drop)
    }

    async fn send(&self, signal: Signal, body: Bytes) -> Result<Bytes, String> {
        let (service, export) = match signal {
            Signal::Traces => (TRACE_SERVICE, TRACE_EXPORT),
            Signal::Metrics => (METRICS_SERVICE, METRICS_EXPORT),
        };
        let answer = match self {
            TraceClient::Grpc {
                grpc,
                metadata,
                timeout,
            } => {
                with_retries(RETRIES, *timeout, || async {
                    let mut grpc = grpc.clone();
                    grpc.ready().await.map_err(|e| Failure {
                        message: format!("the gRPC channel is not ready: {e}"),
                        retry: Retry::Yes,
                    })?;
                    let mut req = tonic::Request::new(body.clone());
                    *req.metadata_mut() = metadata.clone();
                    req.extensions_mut()
                        .insert(tonic::GrpcMethod::new(service, "Export"));
                    let path = http::uri::PathAndQuery::from_static(export);
                    grpc.unary(req, path, RawCodec)
                        .await
                        .map(tonic::Response::into_inner)
                        .map_err(|s| grpc_failure(&s))
                })
                .await?
            }
            TraceClient::Http {
                client,
                url,
                headers,
                timeout,
            } => {
                let url = match signal {
                    Signal::Traces => url.clone(),
                    Signal::Metrics => format!(
                        "{}{}",
                        url.strip_suffix(Signal::Traces.http_path()).unwrap_or(url),
                        Signal::Metrics.http_path()
                    ),
                };
                with_retries(RETRIES, *timeout, || async {
                    let sent = client
                        .post(url.as_str())
                        .header(http::header::CONTENT_TYPE, "application/x-protobuf")
                        .headers(headers.clone())
                        .body(body.clone())
                        .send()
                        .await;
                    let resp = sent.map_err(|e| Failure {
                        message: crate::probes::describe(&e),
                        retry: http_retry(None, None),
                    })?;
                    let status = resp.status();
                    if !status.is_success() {
                        let after = resp
                            .headers()
                            .get(http::header::RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string);
                        return Err(Failure {
                            message: format!("the collector answered HTTP {status}"),
                            retry: http_retry(Some(status.as_u16()), after.as_deref()),
                        });
                    }
                    resp.bytes().await.map_err(|e| Failure {
                        message: format!("reading the answer: {}", crate::probes::describe(&e)),
                        retry: http_retry(None, None),
                    })
                })
                .await?
            }
        };
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_retried_as_the_otlp_specification_says() {
        assert_eq!(grpc_retry(Code::Unavailable, None), Retry::Yes);
        assert_eq!(
            grpc_retry(Code::Unavailable, Some(Duration::from_secs(2))),
            Retry::After(Duration::from_secs(2))
        );
        assert_eq!(grpc_retry(Code::ResourceExhausted, None), Retry::No);
        assert_eq!(grpc_retry(Code::Unauthenticated, None), Retry::No);
        assert_eq!(grpc_retry(Code::DeadlineExceeded, None), Retry::Yes);
        assert_eq!(http_retry(None, None), Retry::Yes);
        assert_eq!(
            http_retry(Some(429), Some("3")),
            Retry::After(Duration::from_secs(3))
        );
        assert_eq!(http_retry(Some(503), Some("soon")), Retry::Yes);
        assert_eq!(http_retry(Some(401), None), Retry::No);
        assert_eq!(http_retry(Some(502), None), Retry::Yes);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn retries_stop_after_three_and_at_the_deadline() {
        let fast = RetryPolicy {
            retries: 3,
            delay: Duration::from_millis(10),
            delay_max: Duration::from_millis(160),
            jitter_ms: 0,
        };
        let tries = std::cell::Cell::new(0);
        let fail = |retry| {
            tries.set(tries.get() + 1);
            std::future::ready(Err::<Bytes, _>(Failure {
                message: "no".into(),
                retry,
            }))
        };
        assert!(
            with_retries(fast, Duration::from_secs(10), || fail(Retry::Yes))
                .await
                .is_err()
        );
        assert_eq!(tries.replace(0), 4, "one try and three retries");
        assert!(
            with_retries(fast, Duration::from_secs(10), || fail(Retry::No))
                .await
                .is_err()
        );
        assert_eq!(tries.replace(0), 1);
        // 10 ms, then 20 ms: the third wait (40 ms) would pass 50 ms.
        assert!(
            with_retries(fast, Duration::from_millis(50), || fail(Retry::Yes))
                .await
                .is_err()
        );
        assert_eq!(tries.get(), 3);
    }
}

//! The OTLP exporters of opentelemetry-otlp, set up from `[otlp]`: gRPC
//! (tonic) or HTTP/protobuf (reqwest), headers, TLS (rustls on ring), timeout.
//!
//! `otlp.endpoint` is the collector's base URL for both protocols, as
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is: gRPC sends to it directly, HTTP appends
//! `/v1/traces` and `/v1/metrics`. Build these inside a Tokio runtime (the
//! gRPC channel spawns its connection task there).

use std::collections::HashMap;
use std::path::Path;

use opentelemetry_otlp::tonic_types::metadata::MetadataMap;
use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig, Identity};
use opentelemetry_otlp::{
    MetricExporter, Protocol, SpanExporter, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::metrics::Temporality;

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

/// The span exporter for `cfg`.
pub fn span_exporter(cfg: &OtlpConfig) -> Result<SpanExporter, OtlpError> {
    install_crypto_provider();
    let s = Signal::Traces;
    let built = match cfg.protocol {
        OtlpProtocol::Grpc => {
            let mut b = SpanExporter::builder()
                .with_tonic()
                .with_endpoint(signal_url(cfg, s))
                .with_timeout(cfg.timeout)
                .with_metadata(grpc_metadata(cfg, s)?);
            if let Some(tls) = grpc_tls(cfg)? {
                b = b.with_tls_config(tls);
            }
            b.build()
        }
        OtlpProtocol::HttpProtobuf => SpanExporter::builder()
            .with_http()
            .with_endpoint(signal_url(cfg, s))
            .with_protocol(Protocol::HttpBinary)
            .with_timeout(cfg.timeout)
            .with_headers(cfg.headers.iter().cloned().collect::<HashMap<_, _>>())
            .with_http_client(http_client(cfg, s)?)
            .build(),
    };
    built.map_err(|e| exporter_error(cfg, s, e))
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

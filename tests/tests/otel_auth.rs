//! TLS and headers for authenticated collectors (issue #3, "What to build"):
//! a collector that takes OTLP only over TLS with HTTP basic authentication
//! (`otel-collector/otelcol-tls-auth.yaml`, run by the Jaeger binary, with a
//! CA and server certificate made by openssl for the test) gets the agent's
//! traces over gRPC and over HTTP/protobuf when the agent trusts the CA and
//! sends the `authorization` header (configured by the `[otlp]` table and by
//! the standard OTEL_* variables), and refuses them with a wrong password:
//! the agent then counts the failures and still exits cleanly.
//!
//! Privileged (the agent loads eBPF); traffic is UDP on loopback.

use anyhow::{ensure, Context, Result};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use vnt_tests::otel::{self, config_file, free_port, Collector, Jaeger};
use vnt_tests::{unique_port, Agent, AgentOutput};

const USER: &str = "vnt";
const PASSWORD: &str = "s3cret-pw";

/// A throwaway CA and a server certificate for localhost/127.0.0.1.
fn make_certs(dir: &Path) -> Result<()> {
    let sh = format!(
        "set -e; cd '{}'; \
         openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj '/CN=vnt test CA'; \
         openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj '/CN=localhost'; \
         printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > ext; \
         openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile ext",
        dir.display()
    );
    vnt_tests::run(Command::new("sh").args(["-c", &sh]))
        .context("openssl must make the test certificates")?;
    Ok(())
}

fn basic(user: &str, password: &str) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{user}:{password}");
    let bytes = input.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Basic {out}")
}

/// Runs an agent (built by `build`) while a few datagrams cross loopback.
fn run_agent(build: impl FnOnce(u16) -> Result<Agent>) -> Result<(AgentOutput, u16)> {
    let port = unique_port();
    let agent = build(port)?;
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    for i in 0..5u8 {
        sock.send_to(&[i; 32], ("127.0.0.1", port))?;
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    Ok((agent.stop()?, port))
}

fn all_in_jaeger(jaeger: &Jaeger, out: &AgentOutput, port: u16) -> Result<usize> {
    let journeys: Vec<_> = out.journeys.iter().filter(|j| j.has_port(port)).collect();
    ensure!(
        journeys.len() >= 5,
        "{} journeys for 5 datagrams",
        journeys.len()
    );
    for j in &journeys {
        jaeger.wait_trace(&j.trace_id, 1 + j.hops.len(), Duration::from_secs(15))?;
    }
    Ok(journeys.len())
}

#[test]
fn tls_and_basic_auth_collector() -> Result<()> {
    let _serial = vnt_tests::serial();
    vnt_tests::require_root();
    let dir: PathBuf = std::env::temp_dir().join(format!("vnt-otel-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let _cleanup = scopeguard(dir.clone());
    make_certs(&dir)?;
    let jaeger = Jaeger::start().context("Jaeger must start")?;
    let (grpc, http, health) = (free_port(), free_port(), free_port());
    let a = |p: u16| format!("127.0.0.1:{p}");
    let _collector = Collector::start(
        &config_file("otelcol-tls-auth.yaml"),
        &[
            ("OTELCOL_OTLP_GRPC_ENDPOINT", a(grpc)),
            ("OTELCOL_OTLP_HTTP_ENDPOINT", a(http)),
            ("OTELCOL_PROMETHEUS_ENDPOINT", a(free_port())),
            ("OTELCOL_HEALTH_ENDPOINT", a(health)),
            ("OTELCOL_METRICS_HOST", "127.0.0.1".into()),
            ("OTELCOL_METRICS_PORT", free_port().to_string()),
            (
                "OTELCOL_TLS_CERT",
                dir.join("server.pem").display().to_string(),
            ),
            (
                "OTELCOL_TLS_KEY",
                dir.join("server.key").display().to_string(),
            ),
            ("OTELCOL_BASIC_AUTH", format!("{USER}:{PASSWORD}")),
            ("JAEGER_OTLP_ENDPOINT", a(jaeger.ports.otlp_grpc)),
        ],
        health,
    )
    .context("the TLS collector must start")?;
    let ca = dir.join("ca.pem");
    let auth = basic(USER, PASSWORD);

    // gRPC over TLS, configured by the [otlp] table.
    let (out, port) = run_agent(|port| {
        let cfg = otel::temp_file(
            "tls.toml",
            &format!(
                "[otlp]\nendpoint = \"https://localhost:{grpc}\"\nprotocol = \"grpc\"\nbatch_delay_ms = 200\n\
                 [otlp.headers]\nauthorization = \"{auth}\"\n[otlp.tls]\nca = \"{}\"\n",
                ca.display()
            ),
        )?;
        Agent::builder()
            .filter(format!("port {port}"))
            .arg("--config")
            .arg(cfg)
            .start()
    })?;
    ensure!(
        out.summary.spans_dropped == 0 && out.summary.spans_exported > 0,
        "gRPC+TLS: {:?}\n{}",
        out.summary,
        out.stderr
    );
    let n = all_in_jaeger(&jaeger, &out, port).context("gRPC over TLS with basic auth")?;

    // HTTP/protobuf over TLS, configured by the standard variables.
    let (out, port) = run_agent(|port| {
        otel::with_env(
            Agent::builder().filter(format!("port {port}")),
            &[
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    &format!("https://127.0.0.1:{http}"),
                ),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                (
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    &format!("authorization={}", auth.replace(' ', "%20")),
                ),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca.display().to_string()),
                ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ],
        )?
        .start()
    })?;
    ensure!(
        out.summary.spans_dropped == 0 && out.summary.spans_exported > 0,
        "HTTP+TLS: {:?}\n{}",
        out.summary,
        out.stderr
    );
    let m = all_in_jaeger(&jaeger, &out, port).context("HTTP/protobuf over TLS with basic auth")?;

    // A wrong password: refused, counted, and the agent still exits cleanly.
    let (out, port) = run_agent(|port| {
        Agent::builder()
            .filter(format!("port {port}"))
            .arg("--otlp-endpoint")
            .arg(format!("https://localhost:{grpc}"))
            .arg("--otlp-header")
            .arg(format!("authorization={}", basic(USER, "wrong")))
            .arg("--config")
            .arg(otel::temp_file(
                "tls-ca.toml",
                &format!("[otlp]\nbatch_delay_ms = 200\nshutdown_timeout_ms = 3000\n[otlp.tls]\nca = \"{}\"\n", ca.display()),
            )?)
            .start()
    })?;
    let o = out.summary.otlp.as_ref().context("no otlp summary")?;
    ensure!(
        out.summary.spans_exported == 0
            && out.summary.spans_dropped > 0
            && o["trace_export_errors"].as_u64().unwrap_or(0) > 0,
        "a wrong password must be refused and counted: {:?}",
        out.summary
    );
    let refused: Vec<_> = out.journeys.iter().filter(|j| j.has_port(port)).collect();
    ensure!(!refused.is_empty(), "no journeys in the refused run");
    for j in refused {
        ensure!(
            jaeger.trace(&j.trace_id)?.is_none(),
            "a refused trace reached Jaeger"
        );
    }
    eprintln!("TLS + basic auth: {n} traces over gRPC, {m} over HTTP/protobuf; a wrong password refused and counted");
    Ok(())
}

/// Removes the certificate directory when dropped.
fn scopeguard(dir: PathBuf) -> impl Drop {
    struct Rm(PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    Rm(dir)
}

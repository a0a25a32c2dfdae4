//! OpenTelemetry end to end: a real Jaeger v2 (built from its Go module by
//! `scripts/ensure-jaeger.sh` and cached), run natively with the config files
//! users run from `otel-collector/`, on free loopback ports; its HTTP query
//! API (`/api/traces`, `/api/v3/traces/{id}`); Prometheus text scraped from a
//! collector; and agents started with extra environment variables.
//!
//! Nothing here skips: when Jaeger cannot be built or started, the test fails
//! with the reason.

use crate::agent::{signal, wait_timeout, AgentBuilder};
use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a collector may take to become healthy.
pub const COLLECTOR_START_TIMEOUT: Duration = Duration::from_secs(60);

/// The Jaeger v2 binary: `$VNT_JAEGER_BIN`, else whatever
/// `scripts/ensure-jaeger.sh` prints (it builds Jaeger the first time).
///
/// # Panics
/// When Jaeger can neither be found nor built; the message says why.
pub fn jaeger_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("VNT_JAEGER_BIN") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "$VNT_JAEGER_BIN points to {}, which is not a file",
            p.display()
        );
        return p;
    }
    let script = crate::workspace_root().join("scripts/ensure-jaeger.sh");
    let out = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed ({}): Jaeger is required for the OpenTelemetry tests (they never skip)",
        script.display(),
        out.status
    );
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        path.is_file(),
        "{} printed {}, which is not a file",
        script.display(),
        path.display()
    );
    path
}

/// A config file users run, from `otel-collector/`.
pub fn config_file(name: &str) -> PathBuf {
    crate::workspace_root().join("otel-collector").join(name)
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local address").port()
}

/// A response of [`http_get`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

/// A plain HTTP/1.1 GET to `127.0.0.1:port` (no TLS, chunked bodies decoded).
pub fn http_get(port: u16, path: &str) -> Result<HttpResponse> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("cannot connect to 127.0.0.1:{port}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )?;
    let mut r = BufReader::new(s);
    let mut status_line = String::new();
    r.read_line(&mut status_line)?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("bad status line from :{port}{path}: {status_line:?}"))?;
    let mut chunked = false;
    let mut length: Option<usize> = None;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else if k == "content-length" {
                length = v.parse().ok();
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .with_context(|| format!("bad chunk size {size:?}"))?;
            if n == 0 {
                break;
            }
            let mut chunk = vec![0u8; n + 2];
            r.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(HttpResponse {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A collector process (the Jaeger binary) running a config file from
/// `otel-collector/` with the given environment. Dropping it kills it.
#[derive(Debug)]
pub struct Collector {
    child: Option<Child>,
    what: String,
    log: Arc<Mutex<String>>,
    health_port: u16,
}

impl Collector {
    /// Starts `jaeger --config <config>` with `env` and waits until the
    /// health endpoint on `health_port` answers 200.
    pub fn start(config: &Path, env: &[(&str, String)], health_port: u16) -> Result<Collector> {
        let bin = jaeger_bin();
        let mut cmd = Command::new(&bin);
        cmd.arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self::spawn(
            cmd,
            format!("{} --config {}", bin.display(), config.display()),
            health_port,
        )
    }

    /// Like [`Collector::start`] with extra `--set key=value` overrides.
    pub fn start_with(
        config: &Path,
        env: &[(&str, String)],
        health_port: u16,
        sets: &[&str],
    ) -> Result<Collector> {
        let bin = jaeger_bin();
        let mut cmd = Command::new(&bin);
        cmd.arg("--config").arg(config);
        for s in sets {
            cmd.arg(format!("--set={s}"));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self::spawn(
            cmd,
            format!("{} --config {} {sets:?}", bin.display(), config.display()),
            health_port,
        )
    }

    fn spawn(mut cmd: Command, what: String, health_port: u16) -> Result<Collector> {
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{what}`"))?;
        let log = Arc::new(Mutex::new(String::new()));
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let _ = crate::agent::collect_text(pipe, log.clone());
        }
        let mut c = Collector {
            child: Some(child),
            what,
            log,
            health_port,
        };
        c.wait_healthy()?;
        Ok(c)
    }

    fn wait_healthy(&mut self) -> Result<()> {
        let deadline = Instant::now() + COLLECTOR_START_TIMEOUT;
        loop {
            if let Ok(r) = http_get(self.health_port, "/status") {
                if r.status == 200 {
                    return Ok(());
                }
            }
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!(
                        "`{}` exited with {status} before it was healthy\n{}",
                        self.what,
                        self.log()
                    );
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "`{}` not healthy on :{} after {COLLECTOR_START_TIMEOUT:?}\n{}",
                    self.what,
                    self.health_port,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, libc::SIGTERM);
            if !matches!(
                wait_timeout(&mut child, Duration::from_secs(10)),
                Ok(Some(_))
            ) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The ports of a Jaeger all-in-one started from `otel-collector/jaeger.yaml`.
#[derive(Debug, Clone, Copy)]
pub struct JaegerPorts {
    pub otlp_grpc: u16,
    pub otlp_http: u16,
    pub query_http: u16,
    pub query_grpc: u16,
    pub health: u16,
    pub metrics: u16,
}

impl JaegerPorts {
    /// Fresh free ports.
    pub fn free() -> JaegerPorts {
        JaegerPorts {
            otlp_grpc: free_port(),
            otlp_http: free_port(),
            query_http: free_port(),
            query_grpc: free_port(),
            health: free_port(),
            metrics: free_port(),
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let a = |p: u16| format!("127.0.0.1:{p}");
        vec![
            ("JAEGER_OTLP_GRPC_ENDPOINT", a(self.otlp_grpc)),
            ("JAEGER_OTLP_HTTP_ENDPOINT", a(self.otlp_http)),
            ("JAEGER_QUERY_HTTP_ENDPOINT", a(self.query_http)),
            ("JAEGER_QUERY_GRPC_ENDPOINT", a(self.query_grpc)),
            ("JAEGER_HEALTH_ENDPOINT", a(self.health)),
            ("JAEGER_METRICS_HOST", "127.0.0.1".into()),
            ("JAEGER_METRICS_PORT", self.metrics.to_string()),
        ]
    }
}

/// A running Jaeger all-in-one (`otel-collector/jaeger.yaml`, in-memory).
#[derive(Debug)]
pub struct Jaeger {
    pub ports: JaegerPorts,
    pub collector: Collector,
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        let hold = std::env::var("VNT_TEST_JAEGER_HOLD_SECS")
            .ok()
            .and_then(|s| s.parse::<u64>().ok());
        if let Some(secs) = hold {
            eprintln!(
                "jaeger: held {secs} s at http://127.0.0.1:{} (VNT_TEST_JAEGER_HOLD_SECS)",
                self.ports.query_http
            );
            std::thread::sleep(Duration::from_secs(secs));
        }
    }
}

impl Jaeger {
    /// Starts Jaeger on fresh free loopback ports.
    pub fn start() -> Result<Jaeger> {
        Jaeger::start_on(JaegerPorts::free())
    }

    /// Starts Jaeger on the given ports.
    ///
    /// To look at a test's traces as a person would (developers, not CI):
    /// `VNT_TEST_JAEGER_CONFIG` names another Jaeger config to run instead,
    /// such as one that serves a locally built Jaeger UI on the query port,
    /// and `VNT_TEST_JAEGER_HOLD_SECS` keeps each Jaeger up that long after
    /// its test is done, printing where to look.
    pub fn start_on(ports: JaegerPorts) -> Result<Jaeger> {
        let config = std::env::var_os("VNT_TEST_JAEGER_CONFIG")
            .map_or_else(|| config_file("jaeger.yaml"), PathBuf::from);
        let collector = Collector::start(&config, &ports.env(), ports.health)?;
        Ok(Jaeger { ports, collector })
    }

    /// `http://127.0.0.1:<otlp grpc>`.
    pub fn otlp_grpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.otlp_grpc)
    }

    /// `http://127.0.0.1:<otlp http>`.
    pub fn otlp_http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.otlp_http)
    }

    fn get_json<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<Option<T>> {
        let r = http_get(self.ports.query_http, path)?;
        if r.status == 404 {
            return Ok(None);
        }
        ensure!(
            r.status == 200,
            "GET {path} answered {}: {}",
            r.status,
            r.body
        );
        serde_json::from_str(&r.body)
            .map(Some)
            .with_context(|| format!("GET {path}: unexpected body {}", r.body))
    }

    /// `/api/traces?service=...`: the traces of a service in the last hour.
    pub fn search(&self, service: &str, limit: usize) -> Result<Vec<JTrace>> {
        let path = format!("/api/traces?service={service}&limit={limit}&lookback=1h");
        Ok(self
            .get_json::<JData<Vec<JTrace>>>(&path)?
            .map(|d| d.data)
            .unwrap_or_default())
    }

    /// `/api/traces/{id}` (v1 model: microseconds, tags, logs).
    pub fn trace(&self, trace_id: &str) -> Result<Option<JTrace>> {
        let path = format!("/api/traces/{trace_id}");
        Ok(self
            .get_json::<JData<Vec<JTrace>>>(&path)?
            .and_then(|d| d.data.into_iter().next()))
    }

    /// `/api/v3/traces/{id}` (OTLP JSON: nanoseconds, attributes, events,
    /// resources), flattened to spans.
    pub fn trace_otlp(&self, trace_id: &str) -> Result<Vec<OSpan>> {
        let path = format!("/api/v3/traces/{trace_id}");
        let Some(r) = self.get_json::<OResult>(&path)? else {
            return Ok(vec![]);
        };
        let mut out = Vec::new();
        for rs in r.result.resource_spans {
            let resource = attrs_to_map(&rs.resource.attributes);
            for ss in rs.scope_spans {
                for mut s in ss.spans {
                    s.resource = resource.clone();
                    out.push(s);
                }
            }
        }
        Ok(out)
    }

    /// Waits until `/api/traces/{id}` returns a trace with at least
    /// `min_spans` spans (the collector batches), up to `timeout`.
    pub fn wait_trace(
        &self,
        trace_id: &str,
        min_spans: usize,
        timeout: Duration,
    ) -> Result<JTrace> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(t) = self.trace(trace_id)? {
                if t.spans.len() >= min_spans {
                    return Ok(t);
                }
            }
            if Instant::now() >= deadline {
                bail!("trace {trace_id} with >= {min_spans} spans not in Jaeger after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// The ports of an OpenTelemetry Collector started from
/// `otel-collector/otelcol.yaml` (run by the Jaeger binary, a Collector
/// distribution with the components that file uses).
#[derive(Debug, Clone, Copy)]
pub struct OtelColPorts {
    pub otlp_grpc: u16,
    pub otlp_http: u16,
    pub prometheus: u16,
    pub health: u16,
    pub metrics: u16,
}

impl OtelColPorts {
    /// Fresh free ports.
    pub fn free() -> OtelColPorts {
        OtelColPorts {
            otlp_grpc: free_port(),
            otlp_http: free_port(),
            prometheus: free_port(),
            health: free_port(),
            metrics: free_port(),
        }
    }
}

/// A running collector: OTLP in, traces to a Jaeger, metrics on a
/// Prometheus endpoint.
#[derive(Debug)]
pub struct OtelCol {
    pub ports: OtelColPorts,
    pub collector: Collector,
}

impl OtelCol {
    /// Starts `otelcol.yaml` on `ports`, sending traces to the Jaeger whose
    /// OTLP/gRPC port is `jaeger_otlp_grpc` (the compose file's Tempo
    /// exporter is left out of the pipeline: there is no Tempo here).
    pub fn start_on(ports: OtelColPorts, jaeger_otlp_grpc: u16) -> Result<OtelCol> {
        let a = |p: u16| format!("127.0.0.1:{p}");
        let env = [
            ("OTELCOL_OTLP_GRPC_ENDPOINT", a(ports.otlp_grpc)),
            ("OTELCOL_OTLP_HTTP_ENDPOINT", a(ports.otlp_http)),
            ("OTELCOL_PROMETHEUS_ENDPOINT", a(ports.prometheus)),
            ("OTELCOL_HEALTH_ENDPOINT", a(ports.health)),
            ("OTELCOL_METRICS_HOST", "127.0.0.1".into()),
            ("OTELCOL_METRICS_PORT", ports.metrics.to_string()),
            ("JAEGER_OTLP_ENDPOINT", a(jaeger_otlp_grpc)),
            ("TEMPO_OTLP_ENDPOINT", "127.0.0.1:9".into()),
        ];
        let collector = Collector::start_with(
            &config_file("otelcol.yaml"),
            &env,
            ports.health,
            &["service.pipelines.traces.exporters=[otlp/jaeger]"],
        )?;
        Ok(OtelCol { ports, collector })
    }

    /// Starts it on fresh ports.
    pub fn start(jaeger_otlp_grpc: u16) -> Result<OtelCol> {
        OtelCol::start_on(OtelColPorts::free(), jaeger_otlp_grpc)
    }

    /// `http://127.0.0.1:<otlp grpc>`.
    pub fn otlp_grpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.otlp_grpc)
    }

    /// The metrics on its Prometheus endpoint.
    pub fn scrape(&self) -> Result<Vec<Sample>> {
        scrape(self.ports.prometheus)
    }
}

#[derive(Debug, Deserialize)]
struct JData<T> {
    data: T,
}

/// A trace in Jaeger's v1 JSON model.
#[derive(Debug, Clone, Deserialize)]
pub struct JTrace {
    #[serde(rename = "traceID")]
    pub trace_id: String,
    pub spans: Vec<JSpan>,
    #[serde(default)]
    pub processes: BTreeMap<String, JProcess>,
    #[serde(default)]
    pub warnings: Option<Vec<String>>,
}

/// A span in Jaeger's v1 JSON model (times in microseconds).
#[derive(Debug, Clone, Deserialize)]
pub struct JSpan {
    #[serde(rename = "spanID")]
    pub span_id: String,
    #[serde(rename = "operationName")]
    pub operation_name: String,
    #[serde(default)]
    pub references: Vec<JRef>,
    #[serde(rename = "startTime")]
    pub start_time: u64,
    pub duration: u64,
    #[serde(default)]
    pub tags: Vec<JTag>,
    #[serde(default)]
    pub logs: Vec<JLog>,
    #[serde(rename = "processID")]
    pub process_id: String,
    #[serde(default)]
    pub warnings: Option<Vec<String>>,
}

/// A parent reference.
#[derive(Debug, Clone, Deserialize)]
pub struct JRef {
    #[serde(rename = "refType")]
    pub ref_type: String,
    #[serde(rename = "spanID")]
    pub span_id: String,
}

/// A tag.
#[derive(Debug, Clone, Deserialize)]
pub struct JTag {
    pub key: String,
    pub value: serde_json::Value,
}

/// A span log (an OpenTelemetry event).
#[derive(Debug, Clone, Deserialize)]
pub struct JLog {
    pub timestamp: u64,
    #[serde(default)]
    pub fields: Vec<JTag>,
}

/// A process (an OpenTelemetry resource).
#[derive(Debug, Clone, Deserialize)]
pub struct JProcess {
    #[serde(rename = "serviceName")]
    pub service_name: String,
    #[serde(default)]
    pub tags: Vec<JTag>,
}

impl JSpan {
    /// A tag's value.
    pub fn tag(&self, key: &str) -> Option<&serde_json::Value> {
        self.tags.iter().find(|t| t.key == key).map(|t| &t.value)
    }

    /// A string tag's value.
    pub fn tag_str(&self, key: &str) -> Option<&str> {
        self.tag(key).and_then(|v| v.as_str())
    }

    /// The parent span id, if any.
    pub fn parent(&self) -> Option<&str> {
        self.references
            .iter()
            .find(|r| r.ref_type == "CHILD_OF")
            .map(|r| r.span_id.as_str())
    }
}

impl JProcess {
    /// A string tag's value.
    pub fn tag_str(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|t| t.key == key)
            .and_then(|t| t.value.as_str())
    }
}

impl JTrace {
    /// The trace as Jaeger's UI lists it: depth first from the root, the
    /// children of a span ordered by start time in whole microseconds (a
    /// stable sort, as the UI's, so ties keep the API's order), with the
    /// depth of each row.
    pub fn ui_rows(&self) -> Vec<(usize, &JSpan)> {
        fn walk<'a>(
            t: &'a JTrace,
            parent: Option<&str>,
            depth: usize,
            out: &mut Vec<(usize, &'a JSpan)>,
        ) {
            let mut children: Vec<&JSpan> =
                t.spans.iter().filter(|s| s.parent() == parent).collect();
            children.sort_by_key(|s| s.start_time);
            for c in children {
                out.push((depth, c));
                walk(t, Some(&c.span_id), depth + 1, out);
            }
        }
        let mut out = vec![];
        walk(self, None, 0, &mut out);
        out
    }

    /// [`Self::ui_rows`] as text: one line per span, indented by depth,
    /// with its duration in microseconds and `ERROR` on errors.
    pub fn render(&self) -> String {
        self.ui_rows()
            .iter()
            .map(|(d, s)| {
                format!(
                    "{}{} {}us{}\n",
                    "  ".repeat(*d),
                    s.operation_name,
                    s.duration,
                    if s.tag("error") == Some(&serde_json::Value::Bool(true)) {
                        "  ERROR"
                    } else {
                        ""
                    }
                )
            })
            .collect()
    }

    /// The `host.name` of the process that reported `span`.
    pub fn host_of(&self, span: &JSpan) -> Option<&str> {
        self.processes
            .get(&span.process_id)
            .and_then(|p| p.tag_str("host.name"))
    }
}

#[derive(Debug, Deserialize)]
struct OResult {
    result: OTraces,
}

#[derive(Debug, Deserialize)]
struct OTraces {
    #[serde(rename = "resourceSpans", default)]
    resource_spans: Vec<OResourceSpans>,
}

#[derive(Debug, Deserialize)]
struct OResourceSpans {
    #[serde(default)]
    resource: OResource,
    #[serde(rename = "scopeSpans", default)]
    scope_spans: Vec<OScopeSpans>,
}

#[derive(Debug, Default, Deserialize)]
struct OResource {
    #[serde(default)]
    attributes: Vec<OKeyValue>,
}

#[derive(Debug, Deserialize)]
struct OScopeSpans {
    #[serde(default)]
    spans: Vec<OSpan>,
}

/// An attribute in OTLP JSON.
#[derive(Debug, Clone, Deserialize)]
pub struct OKeyValue {
    pub key: String,
    pub value: serde_json::Value,
}

/// An event in OTLP JSON.
#[derive(Debug, Clone, Deserialize)]
pub struct OEvent {
    pub name: String,
    #[serde(default)]
    pub attributes: Vec<OKeyValue>,
}

/// A status in OTLP JSON (`code` 2 is error).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct OStatus {
    #[serde(default)]
    pub code: u32,
    #[serde(default)]
    pub message: String,
}

/// A span in OTLP JSON (Jaeger's api/v3), times in nanoseconds.
#[derive(Debug, Clone, Deserialize)]
pub struct OSpan {
    #[serde(rename = "traceId")]
    pub trace_id: String,
    #[serde(rename = "spanId")]
    pub span_id: String,
    #[serde(rename = "parentSpanId", default)]
    pub parent_span_id: String,
    pub name: String,
    #[serde(rename = "startTimeUnixNano", deserialize_with = "de_u64_str")]
    pub start_ns: u64,
    #[serde(rename = "endTimeUnixNano", deserialize_with = "de_u64_str")]
    pub end_ns: u64,
    #[serde(default)]
    pub attributes: Vec<OKeyValue>,
    #[serde(default)]
    pub events: Vec<OEvent>,
    #[serde(default)]
    pub status: OStatus,
    /// Resource attributes of the reporting agent (filled in by [`Jaeger::trace_otlp`]).
    #[serde(skip)]
    pub resource: BTreeMap<String, String>,
}

fn de_u64_str<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    match &v {
        serde_json::Value::String(s) => s.parse().map_err(serde::de::Error::custom),
        serde_json::Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| serde::de::Error::custom("not a u64")),
        _ => Err(serde::de::Error::custom("not a number")),
    }
}

/// An OTLP JSON `AnyValue` as text (strings as they are, numbers in decimal).
pub fn any_value_text(v: &serde_json::Value) -> String {
    for k in ["stringValue", "intValue", "boolValue", "doubleValue"] {
        if let Some(x) = v.get(k) {
            return match x {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
        }
    }
    v.to_string()
}

fn attrs_to_map(attrs: &[OKeyValue]) -> BTreeMap<String, String> {
    attrs
        .iter()
        .map(|kv| (kv.key.clone(), any_value_text(&kv.value)))
        .collect()
}

impl OSpan {
    /// An attribute as text.
    pub fn attr(&self, key: &str) -> Option<String> {
        self.attributes
            .iter()
            .find(|kv| kv.key == key)
            .map(|kv| any_value_text(&kv.value))
    }

    /// Duration in nanoseconds.
    pub fn duration_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }

    /// Whether it has no parent.
    pub fn is_root(&self) -> bool {
        self.parent_span_id.is_empty()
    }
}

impl OEvent {
    /// An attribute as text.
    pub fn attr(&self, key: &str) -> Option<String> {
        self.attributes
            .iter()
            .find(|kv| kv.key == key)
            .map(|kv| any_value_text(&kv.value))
    }
}

/// Whether two hex trace ids are the same number (Jaeger may drop leading zeros).
pub fn same_trace_id(a: &str, b: &str) -> bool {
    let n = |s: &str| u128::from_str_radix(s, 16).ok();
    n(a).is_some() && n(a) == n(b)
}

/// One sample of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the Prometheus text exposition format (comments skipped).
pub fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name_labels, rest) = match line.find('{') {
            Some(i) => match line[i..].find('}') {
                Some(j) => (&line[..i + j + 1], line[i + j + 1..].trim()),
                None => continue,
            },
            None => match line.split_once(' ') {
                Some((n, r)) => (n, r.trim()),
                None => continue,
            },
        };
        let value = rest.split_whitespace().next().unwrap_or("");
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match name_labels.split_once('{') {
            Some((n, l)) => (n, parse_labels(l.trim_end_matches('}'))),
            None => (name_labels, BTreeMap::new()),
        };
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_string();
        let after = &rest[eq + 1..];
        let Some(after) = after.strip_prefix('"') else {
            break;
        };
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(match n {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key, value);
        rest = &after[end..];
    }
    out
}

/// Scrapes `http://127.0.0.1:<port>/metrics`.
pub fn scrape(port: u16) -> Result<Vec<Sample>> {
    let r = http_get(port, "/metrics")?;
    ensure!(r.status == 200, "GET :{port}/metrics answered {}", r.status);
    Ok(parse_prometheus(&r.body))
}

/// The sum of the samples named `name` whose labels include all of `with`.
pub fn metric_sum(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> Option<f64> {
    let mut found = false;
    let mut sum = 0.0;
    for s in samples.iter().filter(|s| s.name == name) {
        if with
            .iter()
            .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        {
            found = true;
            sum += s.value;
        }
    }
    found.then_some(sum)
}

/// An agent builder whose process gets `env` in its environment: the agent is
/// started through a small wrapper script that sets them and `exec`s it, so
/// the pid, signals and output are the agent's own.
pub fn with_env(builder: AgentBuilder, env: &[(&str, &str)]) -> Result<AgentBuilder> {
    let agent = crate::locate_binary("vnt-agent", "VNT_AGENT_BIN");
    let path = crate::temp_path("agent-env.sh");
    let mut script = String::from("#!/bin/sh\n");
    for (k, v) in env {
        ensure!(
            k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "bad variable name {k}"
        );
        script.push_str(&format!("export {k}='{}'\n", v.replace('\'', "'\\''")));
    }
    script.push_str(&format!("exec '{}' \"$@\"\n", agent.display()));
    std::fs::write(&path, script).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(builder.bin(path))
}

/// Resident set size of a process in bytes (`VmRSS`), if it runs.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|k| k * 1024)
}

/// Writes `text` to a fresh temporary file (an agent config, say).
pub fn temp_file(what: &str, text: &str) -> Result<PathBuf> {
    let path = crate::temp_path(what);
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_is_parsed() {
        let text = "# HELP x y\n# TYPE vnt_hop_latency_seconds histogram\n\
            vnt_hop_latency_seconds_bucket{network_interface_name=\"a\\\"b\",le=\"1e-06\"} 3\n\
            vnt_agent_events_received_total{job=\"vnt-agent\"} 1.2e+03 1700000000\n\
            up 1\n";
        let s = parse_prometheus(text);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].labels["network_interface_name"], "a\"b");
        assert_eq!(s[0].labels["le"], "1e-06");
        assert_eq!(s[1].value, 1200.0);
        assert_eq!(metric_sum(&s, "up", &[]), Some(1.0));
        assert_eq!(
            metric_sum(
                &s,
                "vnt_agent_events_received_total",
                &[("job", "vnt-agent")]
            ),
            Some(1200.0)
        );
        assert_eq!(metric_sum(&s, "nope", &[]), None);
    }

    #[test]
    fn trace_ids_compare_as_numbers() {
        assert!(same_trace_id(
            "00bf4f15095d278dd142b27455076c7f",
            "bf4f15095d278dd142b27455076c7f"
        ));
        assert!(!same_trace_id("01", "02"));
    }
}

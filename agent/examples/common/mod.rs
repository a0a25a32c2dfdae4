//! Helpers shared by the benchmark examples (`otlp_bench`, `pipeline_bench`).

#![allow(dead_code)] // each example uses a different subset

use std::time::Duration;

use vnt_agent::config::{OtlpConfig, OtlpProtocol};

/// The value after `name` in `args`.
pub fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// `--protocol` as the agent's config value.
pub fn protocol(args: &[String]) -> Result<OtlpProtocol, String> {
    match arg(args, "--protocol").as_deref().unwrap_or("grpc") {
        "grpc" => Ok(OtlpProtocol::Grpc),
        "http/protobuf" => Ok(OtlpProtocol::HttpProtobuf),
        p => Err(format!("unknown protocol {p}")),
    }
}

/// The agent's OTLP config with the given endpoint, queue and batching.
pub fn config(
    endpoint: &str,
    protocol: OtlpProtocol,
    queue: usize,
    batch: usize,
    delay: Duration,
) -> OtlpConfig {
    OtlpConfig {
        endpoint: endpoint.into(),
        protocol,
        headers: vec![],
        timeout: Duration::from_secs(10),
        service_name: Some("vnt-otlp-bench".into()),
        resource: vec![("host.name".into(), "bench".into())],
        traces: true,
        metrics: true,
        metrics_interval: Duration::from_secs(10),
        queue_spans: queue,
        batch_spans: batch,
        batch_delay: delay,
        max_interfaces: 64,
        max_series_per_metric: 1_000,
        exclude_own_traffic: true,
        shutdown_timeout: Duration::from_secs(10),
        tls_ca: None,
        tls_cert: None,
        tls_key: None,
    }
}

/// utime + stime of a process (`/proc/<pid>/stat`) or a thread
/// (`/proc/self/task/<tid>/stat`), in seconds.
pub fn cpu_seconds(stat_path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The stat file of this process's thread named `name`.
pub fn thread_stat(name: &str) -> Option<String> {
    for e in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            return Some(e.path().join("stat").to_string_lossy().into_owned());
        }
    }
    None
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime has no other effects.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU time of the calling thread, nanoseconds (precise, unlike /proc ticks).
pub fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time of the whole process, all threads, nanoseconds.
pub fn process_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// `n` per second of `ns`, formatted without decimals.
pub fn per_s(n: f64, ns: u64) -> String {
    if ns == 0 {
        return "-".into();
    }
    format!("{:.0}", n / (ns as f64 * 1e-9))
}

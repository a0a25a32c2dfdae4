//! Acceptance 4 of issue #3: the collector is down. The agent starts with
//! nothing listening at its OTLP endpoint, traffic runs for 60 s, then the
//! collector starts. The agent never exits, its resident memory stays under
//! the bound docs/otel.md gives ("Memory bound": OTLP adds at most
//! `otlp.queue_spans` x 640 B + 16 MiB), what it could not send is counted in
//! its health metrics and its exit summary, and export resumes by itself.
//!
//! The collector is `otel-collector/otelcol.yaml` (run by the Jaeger binary)
//! in front of a Jaeger that runs all along. Privileged (real eBPF, namespaces).

use anyhow::{bail, ensure, Context, Result};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use vnt_tests::otel::{self, metric_sum, Jaeger, OtelCol, OtelColPorts};
use vnt_tests::{unique_port, Agent, Family, Journey, Side, Topology, Traffic, UdpSend};

/// docs/otel.md: bytes a queued span may cost, and the fixed cost of export.
const BYTES_PER_QUEUED_SPAN: u64 = 640;
const FIXED_OTLP_BYTES: u64 = 16 << 20;
/// The default `otlp.queue_spans`.
const QUEUE_SPANS: u64 = 32_768;
const DOWN: Duration = Duration::from_secs(60);
const RATE: u64 = 200;

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| {
            !s.lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
        })
        .unwrap_or(false)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[test]
fn collector_down_for_60s_then_up() -> Result<()> {
    let _serial = vnt_tests::serial();
    vnt_tests::require_root();
    let topo = Topology::new()?;
    let traffic = Traffic::new(env!("CARGO_BIN_EXE_vnt-traffic"));
    let jaeger = Jaeger::start().context("Jaeger must start")?;
    let col_ports = OtelColPorts::free();
    let port = unique_port();
    let host = format!("{}-down", topo.prefix);
    let agent = otel::with_env(
        Agent::builder()
            .filter(format!("port {port}"))
            .arg("--otlp-endpoint")
            .arg(format!("http://127.0.0.1:{}", col_ports.otlp_grpc)),
        &[
            ("OTEL_RESOURCE_ATTRIBUTES", &format!("host.name={host}")),
            ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
        ],
    )?
    .start()
    .context("the agent must start although nothing listens at its endpoint")?;
    let pid = agent.pid().context("agent pid")?;
    let rss_ready = otel::rss_bytes(pid).context("agent RSS")?;

    // 60 s of traffic into the void, sampling the agent all along.
    let dst = topo.addr(Side::C2, Family::V4);
    let total = RATE * (DOWN.as_secs() + 20);
    let recv = traffic.udp_recv(
        &topo.c2.netns.name,
        dst,
        port,
        total,
        DOWN + Duration::from_secs(40),
    )?;
    let sender = {
        let traffic = traffic.clone();
        let ns = topo.c1.netns.name.clone();
        std::thread::spawn(move || {
            traffic.udp_send(
                &ns,
                &UdpSend {
                    count: total,
                    rate: RATE,
                    ..UdpSend::to(dst, port)
                },
            )
        })
    };
    let start = Instant::now();
    let mut rss_max = rss_ready;
    let sample = |rss_max: &mut u64| -> Result<()> {
        ensure!(
            alive(pid),
            "the agent exited while the collector was down\n{}",
            agent.stderr()
        );
        if let Some(r) = otel::rss_bytes(pid) {
            *rss_max = (*rss_max).max(r);
        }
        Ok(())
    };
    while start.elapsed() < DOWN {
        sample(&mut rss_max)?;
        std::thread::sleep(Duration::from_millis(500));
    }
    // Everything so far was refused or failed: nothing exported yet.
    let up_at = now_ns();
    let col =
        OtelCol::start_on(col_ports, jaeger.ports.otlp_grpc).context("the collector must start")?;
    // Traffic goes on for 20 s more; export must resume by itself.
    while !sender.is_finished() {
        sample(&mut rss_max)?;
        std::thread::sleep(Duration::from_millis(500));
    }
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))??;
    ensure!(
        recv.wait()? == total,
        "datagrams lost without the agent's help"
    );
    sample(&mut rss_max)?;
    // Health metrics, while the agent still runs: drops counted, export on.
    let h = [("host_name", host.as_str())];
    let live = {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let m = col.scrape()?;
            if metric_sum(&m, "vnt_agent_spans_exported_total", &h).unwrap_or(0.0) > 0.0 {
                break m;
            }
            if Instant::now() > deadline {
                bail!(
                    "no vnt_agent_spans_exported_total > 0 for {host} 15 s after the traffic\n{}",
                    agent.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    let queue_full = metric_sum(
        &live,
        "vnt_agent_spans_dropped_total",
        &[("host_name", host.as_str()), ("reason", "queue_full")],
    )
    .unwrap_or(0.0);
    ensure!(
        queue_full > 0.0,
        "the health metrics count no dropped spans"
    );
    let failed_requests = metric_sum(
        &live,
        "vnt_agent_export_errors_total",
        &[("host_name", host.as_str()), ("signal", "traces")],
    )
    .unwrap_or(0.0);
    ensure!(
        failed_requests > 0.0,
        "the health metrics count no failed export requests"
    );

    let out = agent
        .stop()
        .context("the agent must stop cleanly after the outage")?;
    let s = &out.summary;
    let o = s.otlp.as_ref().context("no otlp block in the summary")?;
    let field = |k: &str| o.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
    ensure!(
        s.spans_dropped > 0
            && field("spans_dropped_queue_full") > 0
            && s.spans_dropped
                == field("spans_dropped_queue_full")
                    + field("spans_dropped_export_failed")
                    + field("spans_dropped_shutdown")
            && s.spans_exported > 0,
        "summary: {s:?}"
    );

    // Resumed by itself: every journey that started 10 s after the collector
    // came up (reconnect backoff <= 5 s, then the backlog) is in Jaeger.
    let late: Vec<&Journey> = out
        .journeys
        .iter()
        .filter(|j| j.has_port(port) && j.start_unix_nano > up_at + 10_000_000_000)
        .collect();
    ensure!(
        late.len() as u64 >= RATE * 5,
        "only {} journeys in the last seconds",
        late.len()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut missing = late.clone();
    while !missing.is_empty() && Instant::now() < deadline {
        let mut still = vec![];
        for j in missing {
            if jaeger
                .trace(&j.trace_id)?
                .is_none_or(|t| t.spans.len() < 1 + j.hops.len())
            {
                still.push(j);
            }
        }
        missing = still;
        if !missing.is_empty() {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    ensure!(
        missing.is_empty(),
        "{} of {} journeys after the recovery are not in Jaeger",
        missing.len(),
        late.len()
    );

    // The final metrics (sent at exit) match the summary.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = col.scrape()?;
        let dropped = metric_sum(&m, "vnt_agent_spans_dropped_total", &h).unwrap_or(-1.0);
        let exported = metric_sum(&m, "vnt_agent_spans_exported_total", &h).unwrap_or(-1.0);
        if dropped == s.spans_dropped as f64 && exported == s.spans_exported as f64 {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "health metrics say {dropped} dropped / {exported} exported, the summary {} / {}",
                s.spans_dropped,
                s.spans_exported
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }

    let bound = QUEUE_SPANS * BYTES_PER_QUEUED_SPAN + FIXED_OTLP_BYTES;
    eprintln!(
        "collector down {DOWN:?}: RSS {:.1} MiB at start, {:.1} MiB at most (+{:.1} MiB, bound +{:.1} MiB); \
         {} spans exported, {} dropped ({} queue full, {} export failed, {} at shutdown); {} late journeys all in Jaeger",
        rss_ready as f64 / 1048576.0,
        rss_max as f64 / 1048576.0,
        (rss_max - rss_ready) as f64 / 1048576.0,
        bound as f64 / 1048576.0,
        s.spans_exported,
        s.spans_dropped,
        field("spans_dropped_queue_full"),
        field("spans_dropped_export_failed"),
        field("spans_dropped_shutdown"),
        late.len()
    );
    ensure!(
        rss_max - rss_ready <= bound,
        "RSS grew by {} bytes, more than the documented bound of {bound}",
        rss_max - rss_ready
    );
    Ok(())
}

//! OTLP export benchmark (BENCHMARKS.md, "OTLP export"; run it with
//! `scripts/bench-otlp.sh`, which starts a local Jaeger for it).
//!
//! ```text
//! otlp_bench throughput --endpoint http://127.0.0.1:4317 --protocol grpc --seconds 20 [--collector-pid PID]
//! otlp_bench memory [--spans 400000] [--hold queue|spandata]
//! ```
//!
//! `throughput` feeds synthetic journeys (6 hops, realistic names) through
//! the agent's own OTLP path (`export::otlp::Otlp`: metrics, bounded queue,
//! export thread, span building, opentelemetry-otlp) into a real collector
//! as fast as the queue takes them, and reports spans exported per second
//! of wall time and per second of CPU (the agent's whole process, and the
//! export thread alone), with the collector's CPU beside them.
//!
//! `memory` measures what a queued span costs: it fills the export queue
//! (nothing listening, so nothing drains it) with N spans and reports the
//! growth of the resident set per span, at two fill levels so that fixed
//! costs cancel; `--hold spandata` measures, for comparison, the same
//! journeys held as built `SpanData` (what queueing spans would cost).

mod common;

use std::time::{Duration, Instant};

use common::{arg, config, cpu_seconds, thread_stat};
use opentelemetry::InstrumentationScope;
use vnt_agent::config::OtlpProtocol;
use vnt_agent::export::otlp::health::Health;
use vnt_agent::export::otlp::metrics::rss_bytes;
use vnt_agent::export::otlp::{spans, Otlp};
use vnt_agent::export::view::{FlowView, HopView, JourneyView, OwnerView};

/// A six-hop journey like the veth/bridge path of the tests, packet `n`.
fn journey(n: u64, t0: u64) -> JourneyView {
    let cgroup = format!("/system.slice/docker-{:064x}.scope", n % 16);
    let hops = [
        ("net:net_dev_start_xmit", "xmit", "vethc1a2b3c4", "tx"),
        ("net:netif_rx", "backlog", "vethh1a2b3c4", "rx"),
        ("net:netif_receive_skb", "receive", "vethh1a2b3c4", "rx"),
        ("net:net_dev_start_xmit", "xmit", "vethh5e6f7a8", "tx"),
        ("net:netif_rx", "backlog", "vethc5e6f7a8", "rx"),
        ("net:netif_receive_skb", "receive", "vethc5e6f7a8", "rx"),
    ];
    let mut ts = t0;
    let hops = hops
        .iter()
        .enumerate()
        .map(|(i, (hook, label, ifname, dir))| {
            let latency = if i == 0 {
                0
            } else {
                800 + (n * 7 + i as u64 * 131) % 4000
            };
            ts += latency;
            HopView {
                hook: (*hook).into(),
                label: (*label).into(),
                plugin: "veth".into(),
                interface: (*ifname).into(),
                ifindex: 4 + i as u32,
                netns: 4026532000 + (i as u32 / 3),
                netns_name: Some(format!("container-{}", i / 3).into()),
                netns_owner: Some(OwnerView {
                    pid: 1000 + i as u32,
                    comm: Some("nginx".into()),
                    cgroup: Some(cgroup.as_str().into()),
                }),
                container: None,
                direction: if *dir == "tx" { "tx" } else { "rx" },
                process: None,
                cpu: (n % 2) as u32,
                len: 128,
                ts_unix_nano: ts,
                latency_ns: latency,
                drop: None,
                parent_hook: None,
                parent: None,
                depth: 0,
                duration_ns: None,
                attrs: Default::default(),
            }
        })
        .collect::<Vec<_>>();
    let id = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    JourneyView {
        kind: "journey",
        trace_id: vnt_agent::export::ids::hex(&vnt_agent::export::ids::trace_id(id)),
        pkt_id: format!("{id:016x}"),
        id,
        end: "delivered",
        delivered_to: Some("stack"),
        process: None,
        closed: "idle",
        flow: FlowView {
            src: "10.1.2.1".into(),
            dst: "10.1.2.2".into(),
            sport: 40000 + (n % 1000) as u16,
            dport: 8080,
            proto: "udp".into(),
            family: 4,
        },
        len: 128,
        start_unix_nano: t0,
        duration_ns: ts - t0,
        hops,
        cpu_intervals: vec![],
    }
}

fn now_unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn throughput(args: &[String]) -> Result<(), String> {
    let endpoint = arg(args, "--endpoint").ok_or("--endpoint URL is required")?;
    let protocol = common::protocol(args)?;
    let seconds: u64 = arg(args, "--seconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let collector = arg(args, "--collector-pid");
    let cfg = config(&endpoint, protocol, 32_768, 512, Duration::from_millis(200));
    let mut otlp = Otlp::start(&cfg).map_err(|e| e.to_string())?;
    let export_stat = thread_stat("vnt-otlp").ok_or("no vnt-otlp thread")?;
    // Warm up (connection, allocator), then measure.
    let mut n = 0u64;
    let feed = |otlp: &mut Otlp, n: &mut u64, until: Instant| {
        while Instant::now() < until {
            // Never more than the queue takes: this measures export, not
            // refusals (the agent would drop and count them).
            if otlp.queued_spans() + 7 > cfg.queue_spans {
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
            otlp.journey(journey(*n, now_unix_ns()));
            *n += 1;
        }
    };
    feed(&mut otlp, &mut n, Instant::now() + Duration::from_secs(2));
    let exported0 = Health::get(&otlp.health().spans_exported);
    let cpu0 = cpu_seconds("/proc/self/stat").unwrap_or(0.0);
    let exp_cpu0 = cpu_seconds(&export_stat).unwrap_or(0.0);
    let col0 = collector
        .as_ref()
        .and_then(|p| cpu_seconds(&format!("/proc/{p}/stat")));
    let t0 = Instant::now();
    feed(&mut otlp, &mut n, t0 + Duration::from_secs(seconds));
    let wall = t0.elapsed().as_secs_f64();
    let exported = (Health::get(&otlp.health().spans_exported) - exported0) as f64;
    let cpu = cpu_seconds("/proc/self/stat").unwrap_or(0.0) - cpu0;
    let exp_cpu = cpu_seconds(&export_stat).unwrap_or(0.0) - exp_cpu0;
    let col_cpu = collector
        .as_ref()
        .and_then(|p| cpu_seconds(&format!("/proc/{p}/stat")))
        .zip(col0)
        .map(|(b, a)| b - a);
    let dropped = otlp.health().spans_dropped();
    let (summary, _) = otlp.shutdown();
    println!(
        "| {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {} | {} |",
        cfg.protocol.as_str(),
        exported / wall,
        exported / cpu.max(1e-9),
        exported / exp_cpu.max(1e-9),
        cpu / wall,
        exp_cpu / wall,
        col_cpu.map_or("-".into(), |c| format!("{:.2}", c / wall)),
        dropped + summary.spans_dropped_shutdown,
    );
    Ok(())
}

fn memory(args: &[String]) -> Result<(), String> {
    let total: usize = arg(args, "--spans")
        .and_then(|s| s.parse().ok())
        .unwrap_or(400_000);
    let hold = arg(args, "--hold").unwrap_or_else(|| "queue".into());
    let per = spans::span_count(&journey(0, 0));
    let t0 = 1_700_000_000_000_000_000u64;
    let (rss0, points, queued, dropped) = match hold.as_str() {
        // The agent's way: journeys in the bounded export queue. Nothing
        // listens on port 9 (discard) here, and a batch is the whole queue
        // with a 10-minute delay, so nothing drains it.
        "queue" => {
            let cap = total + 1_000;
            let cfg = config(
                "http://127.0.0.1:9",
                OtlpProtocol::Grpc,
                cap,
                cap,
                Duration::from_secs(600),
            );
            let mut otlp = Otlp::start(&cfg).map_err(|e| e.to_string())?;
            let rss0 = rss_bytes().ok_or("no VmRSS")?;
            let mut n = 0u64;
            let mut points = vec![];
            for target in [total / 4, total] {
                while (n as usize) * per < target {
                    otlp.journey(journey(n, t0 + n * 10_000));
                    n += 1;
                }
                points.push((otlp.queued_spans(), rss_bytes().ok_or("no VmRSS")?));
            }
            let (queued, dropped) = (otlp.queued_spans(), otlp.health().spans_dropped());
            drop(otlp);
            (rss0, points, queued, dropped)
        }
        // For comparison: the same journeys held as built spans (SpanData),
        // what queueing spans instead of journeys would cost.
        "spandata" => {
            let scope = InstrumentationScope::builder("vnt-agent").build();
            let rss0 = rss_bytes().ok_or("no VmRSS")?;
            let mut built = Vec::with_capacity(total + per);
            let mut n = 0u64;
            let mut points = vec![];
            for target in [total / 4, total] {
                while built.len() < target {
                    spans::journey_spans(&journey(n, t0 + n * 10_000), 1, &scope, &mut built);
                    n += 1;
                }
                points.push((built.len(), rss_bytes().ok_or("no VmRSS")?));
            }
            (rss0, points, built.len(), 0)
        }
        other => return Err(format!("--hold {other}: use queue or spandata")),
    };
    let ((s1, r1), (s2, r2)) = (points[0], points[1]);
    let slope = (r2 as f64 - r1 as f64) / (s2 as f64 - s1 as f64);
    println!(
        "| {hold} | {queued} | {:.1} | {:.1} | {:.0} | {:.0} | {dropped} |",
        rss0 as f64 / 1048576.0,
        r2 as f64 / 1048576.0,
        (r2 as f64 - rss0 as f64) / s2 as f64,
        slope,
    );
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("throughput") => throughput(&args),
        Some("memory") => memory(&args),
        _ => Err("usage: otlp_bench throughput --endpoint URL [--protocol grpc|http/protobuf] [--seconds N] [--collector-pid PID]\n       otlp_bench memory [--spans N] [--hold queue|spandata]".into()),
    };
    if let Err(e) = result {
        eprintln!("otlp_bench: {e}");
        std::process::exit(1);
    }
}

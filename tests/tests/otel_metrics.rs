//! Acceptance 3 of issue #3: the agent's metrics reach a real collector and
//! read back with plausible values: the per-hop latency histogram (whose sum
//! equals the sum of the hop latencies the agent printed), packets by
//! interface, and the health counters (equal to the exit summary's).
//!
//! The collector is `otel-collector/otelcol.yaml`, the config docker-compose
//! runs, run natively by the Jaeger v2 binary (a Collector distribution with
//! the components it uses): OTLP in, traces on to a Jaeger, metrics out on a
//! Prometheus endpoint that the test scrapes. The Grafana dashboard's queries
//! are checked against the metric names found there.
//!
//! Privileged (real eBPF, namespaces).

use anyhow::{ensure, Context, Result};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use vnt_tests::otel::{self, metric_sum, Jaeger, OtelCol, Sample};
use vnt_tests::{hooks, unique_port, Agent, Family, Journey, Side, Topology, Traffic, UdpSend};

/// Waits until `cond` holds on a scrape, up to `timeout`; returns that scrape.
fn scrape_until(
    col: &OtelCol,
    timeout: Duration,
    what: &str,
    cond: impl Fn(&[Sample]) -> bool,
) -> Result<Vec<Sample>> {
    let deadline = Instant::now() + timeout;
    loop {
        let s = col.scrape()?;
        if cond(&s) {
            return Ok(s);
        }
        if Instant::now() >= deadline {
            let names: BTreeSet<&str> = s.iter().map(|x| x.name.as_str()).collect();
            anyhow::bail!("{what}: not seen within {timeout:?}; metrics present: {names:?}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn metrics_reach_a_collector_with_plausible_values() -> Result<()> {
    let _serial = vnt_tests::serial();
    vnt_tests::require_root();
    let topo = Topology::new()?;
    let traffic = Traffic::new(env!("CARGO_BIN_EXE_vnt-traffic"));
    let jaeger = Jaeger::start().context("Jaeger must start")?;
    let col = OtelCol::start(jaeger.ports.otlp_grpc).context("the collector must start")?;
    let host = format!("{}-metrics", topo.prefix);
    // The [otlp] table of a config file this time.
    let config = otel::temp_file(
        "otlp.toml",
        &format!(
            "[otlp]\nendpoint = \"{}\"\nprotocol = \"grpc\"\nmetrics_interval_ms = 500\nbatch_delay_ms = 200\n\
             [otlp.resource]\n\"host.name\" = \"{host}\"\n\"deployment.environment.name\" = \"test\"\n",
            col.otlp_grpc_url()
        ),
    )?;
    let (port, dropped_port) = (unique_port(), unique_port());
    // Datagrams from `port` to `dropped_port` die in the host's bridge: drops
    // by interface and reason.
    let _rule = topo.nft_drop_udp(dropped_port)?;
    let agent = Agent::builder()
        .filter(format!("port {port}"))
        .arg("--config")
        .arg(&config)
        .start()
        .context("the agent must start")?;

    let count = 200;
    let dst = topo.addr(Side::C2, Family::V4);
    let recv = traffic.udp_recv(
        &topo.c2.netns.name,
        dst,
        port,
        count,
        Duration::from_secs(10),
    )?;
    traffic.udp_send(
        &topo.c1.netns.name,
        &UdpSend {
            count,
            rate: 400,
            ..UdpSend::to(dst, port)
        },
    )?;
    ensure!(recv.wait()? == count, "datagrams lost");
    let drops = 50;
    traffic.udp_send(
        &topo.c1.netns.name,
        &UdpSend {
            count: drops,
            rate: 400,
            sport: Some(port),
            ..UdpSend::to(dst, dropped_port)
        },
    )?;

    // While the agent runs: the histogram and the health counters arrive.
    let rx_peer = [
        ("vnt_hook", hooks::RX),
        ("network_interface_name", topo.c1.peer.name.as_str()),
    ];
    let live = scrape_until(
        &col,
        Duration::from_secs(15),
        "hop latency histogram",
        |s| {
            metric_sum(s, "vnt_hop_latency_seconds_count", &rx_peer).unwrap_or(0.0)
                >= count as f64 * 0.99
        },
    )?;
    for name in [
        "vnt_agent_events_received_total",
        "vnt_agent_events_lost_total",
        "vnt_agent_decode_errors_total",
        "vnt_agent_journeys_completed_total",
        "vnt_agent_journeys_timed_out_total",
        "vnt_agent_spans_exported_total",
        "vnt_agent_spans_dropped_total",
        "vnt_agent_export_queue_length",
        "vnt_agent_export_queue_capacity",
        "vnt_agent_memory_rss_bytes",
    ] {
        ensure!(
            metric_sum(&live, name, &[("host_name", host.as_str())]).is_some(),
            "{name} missing for host {host}"
        );
    }
    let queue_cap = metric_sum(&live, "vnt_agent_export_queue_capacity", &[]).unwrap_or(0.0);
    let queue_len = metric_sum(&live, "vnt_agent_export_queue_length", &[]).unwrap_or(-1.0);
    ensure!(
        queue_cap == 32768.0 && (0.0..=queue_cap).contains(&queue_len),
        "export queue {queue_len} of {queue_cap}"
    );

    std::thread::sleep(Duration::from_millis(300));
    let out = agent.stop()?;
    let journeys: Vec<&Journey> = out.journeys.iter().filter(|j| j.has_port(port)).collect();
    ensure!(
        journeys.len() as u64 >= (count + drops) * 99 / 100,
        "{} journeys for {} datagrams",
        journeys.len(),
        count + drops
    );
    let s = &out.summary;

    // After the agent stopped, its final export carries the final counts:
    // they equal the exit summary's.
    let h = [("host_name", host.as_str())];
    let fin = scrape_until(
        &col,
        Duration::from_secs(15),
        "final health counters",
        |m| {
            metric_sum(m, "vnt_agent_journeys_completed_total", &h) == Some(s.journeys as f64)
                && metric_sum(m, "vnt_agent_spans_exported_total", &h)
                    == Some(s.spans_exported as f64)
        },
    )?;
    let get = |name: &str, with: &[(&str, &str)]| {
        let mut w = with.to_vec();
        w.push(("host_name", host.as_str()));
        metric_sum(&fin, name, &w).unwrap_or(-1.0)
    };
    let checks = [
        ("vnt_agent_events_received_total", s.records as f64),
        ("vnt_agent_journeys_completed_total", s.journeys as f64),
        ("vnt_agent_journeys_timed_out_total", s.journeys_idle as f64),
        ("vnt_agent_events_lost_total", s.events_lost as f64),
        ("vnt_agent_decode_errors_total", s.decode_errors as f64),
        ("vnt_agent_spans_exported_total", s.spans_exported as f64),
        ("vnt_agent_spans_dropped_total", s.spans_dropped as f64),
    ];
    for (name, want) in checks {
        ensure!(
            get(name, &[]) == want,
            "{name} = {}, the exit summary says {want}",
            get(name, &[])
        );
    }
    let hops: usize = journeys.iter().map(|j| j.hops.len()).sum();
    ensure!(
        get("vnt_agent_events_received_total", &[]) >= hops as f64,
        "events received {} for {} hops",
        get("vnt_agent_events_received_total", &[]),
        hops
    );
    // Drops by interface and reason: the bridge drops on the port toward c2.
    let dropped_journeys = journeys
        .iter()
        .filter(|j| {
            j.hops
                .last()
                .and_then(|h| h.drop.as_ref())
                .is_some_and(|d| d.reason == "NETFILTER_DROP")
        })
        .count();
    ensure!(
        dropped_journeys as u64 >= drops * 99 / 100,
        "{dropped_journeys} dropped journeys for {drops}"
    );
    let d = get(
        "vnt_drops_total",
        &[
            ("network_interface_name", topo.c2.peer.name.as_str()),
            ("vnt_drop_reason", "NETFILTER_DROP"),
        ],
    );
    ensure!(
        d == dropped_journeys as f64,
        "vnt_drops_total = {d}, {dropped_journeys} journeys were dropped"
    );
    ensure!(s.events_lost == 0 && s.decode_errors == 0, "{s:?}");
    ensure!(
        s.spans_exported
            >= journeys
                .iter()
                .map(|j| 1 + j.hops.len() as u64)
                .sum::<u64>(),
        "{s:?}"
    );

    // The hop latency histogram of every hop after the first equals what the
    // agent printed: count, sum (to float rounding), and each bucket.
    let path = topo.path(Side::C1);
    for hop in &path[1..] {
        let labels = [
            ("vnt_hook", hop.hook),
            ("network_interface_name", hop.interface.as_str()),
        ];
        let latencies: Vec<u64> = journeys
            .iter()
            .flat_map(|j| j.hops.iter().skip(1))
            .filter(|h| hop.matches(h))
            .map(|h| h.latency_ns)
            .collect();
        let n = get("vnt_hop_latency_seconds_count", &labels);
        let sum = get("vnt_hop_latency_seconds_sum", &labels);
        let want_sum: f64 = latencies.iter().map(|&l| l as f64 * 1e-9).sum();
        ensure!(
            n == latencies.len() as f64 && (sum - want_sum).abs() <= want_sum * 1e-9 + 1e-12,
            "{} on {}: histogram count {n} sum {sum}, --output json has {} hops summing to {want_sum}",
            hop.hook,
            hop.interface,
            latencies.len()
        );
        let mean = sum / n;
        ensure!(
            (50e-9..10e-3).contains(&mean),
            "{} on {}: mean hop latency {mean} s is implausible",
            hop.hook,
            hop.interface
        );
        let mut buckets: Vec<(f64, f64)> = fin
            .iter()
            .filter(|x| {
                x.name == "vnt_hop_latency_seconds_bucket"
                    && labels
                        .iter()
                        .chain(h.iter())
                        .all(|(k, v)| x.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|x| {
                let le = x.labels.get("le").map(String::as_str).unwrap_or("");
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::NAN)
                };
                (le, x.value)
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        ensure!(buckets.len() >= 10, "{} buckets", buckets.len());
        for (le, cum) in &buckets {
            let want = latencies
                .iter()
                .filter(|&&l| l as f64 * 1e-9 <= *le)
                .count() as f64;
            ensure!(
                *cum == want,
                "{} on {}: bucket le={le} holds {cum}, --output json says {want}",
                hop.hook,
                hop.interface
            );
        }
        // packets by interface
        ensure!(
            get("vnt_packets_total", &labels) == latencies.len() as f64,
            "vnt_packets_total for {} on {}",
            hop.hook,
            hop.interface
        );
    }
    for (end, want) in [
        ("delivered", s.journeys_delivered),
        ("dropped", s.journeys_dropped),
    ] {
        let got = get("vnt_journeys_total", &[("vnt_journey_end", end)]).max(0.0);
        ensure!(
            got == want as f64,
            "vnt_journeys_total{{vnt_journey_end={end}}} = {got}, the summary says {want}"
        );
    }

    // Traces went through the collector to Jaeger.
    jaeger
        .wait_trace(&journeys[0].trace_id, 7, Duration::from_secs(15))
        .context("a journey's trace must reach Jaeger through the collector")?;

    // Every metric the Grafana dashboard queries exists.
    let dashboard = std::fs::read_to_string(otel::config_file("grafana/dashboards/vnt.json"))?;
    // Metric names and label names both appear in the queries.
    let present: BTreeSet<&str> = fin
        .iter()
        .flat_map(|x| std::iter::once(x.name.as_str()).chain(x.labels.keys().map(String::as_str)))
        .collect();
    let mut queried = BTreeSet::new();
    for word in dashboard.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("vnt_") && !word.ends_with('_') {
            queried.insert(word.to_string());
        }
    }
    ensure!(queried.len() >= 10, "dashboard queries only {queried:?}");
    let missing: Vec<&String> = queried
        .iter()
        .filter(|q| !present.contains(q.as_str()))
        .collect();
    ensure!(
        missing.is_empty(),
        "the dashboard queries metrics or labels that do not exist: {missing:?}"
    );
    eprintln!(
        "metrics: {} journeys; {} series scraped; summary and counters agree; dashboard's {} metrics exist",
        journeys.len(),
        fin.len(),
        queried.len()
    );
    Ok(())
}

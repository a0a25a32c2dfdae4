//! Acceptance 1 of issue #3: journeys reach a real Jaeger v2 over OTLP, as
//! one trace per journey (a root span and one child span per hop, in time
//! order), with span durations equal to the hop latencies the agent prints
//! with `--output json`, attributes naming interface, namespace, hook and
//! plugin, and drops as errors carrying the kernel's reason. Over gRPC and
//! over HTTP/protobuf.
//!
//! Privileged (real eBPF, namespaces). Jaeger is built by
//! `scripts/ensure-jaeger.sh` on first use and started natively with
//! `otel-collector/jaeger.yaml` on free loopback ports; the test asserts
//! through Jaeger's HTTP query API (`/api/traces?service=vnt-agent`,
//! `/api/traces/{id}`, and `/api/v3/traces/{id}` for nanosecond times).

use anyhow::{ensure, Context, Result};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use vnt_tests::otel::{self, same_trace_id, Jaeger, OSpan};
use vnt_tests::{
    unique_port, Agent, Family, Journey, JourneyEnd, Side, Topology, Traffic, UdpSend,
};

const SETTLE: Duration = Duration::from_millis(500);

fn journeys_reach_jaeger(protocol: &str) -> Result<()> {
    let _serial = vnt_tests::serial();
    vnt_tests::require_root();
    let topo = Topology::new()?;
    let traffic = Traffic::new(env!("CARGO_BIN_EXE_vnt-traffic"));
    let jaeger = Jaeger::start().context("Jaeger must start")?;
    let endpoint = match protocol {
        "grpc" => jaeger.otlp_grpc_url(),
        _ => jaeger.otlp_http_url(),
    };

    let (dropped, passed) = (unique_port(), unique_port());
    let _rule = topo.nft_drop_udp(dropped)?;
    let count = 40;
    // Standard OTEL_* variables on the agent: Jaeger takes no metrics, and
    // batches go out every 200 ms.
    let agent = otel::with_env(
        Agent::builder()
            .filter(format!("port {dropped}"))
            .arg("--otlp-endpoint")
            .arg(&endpoint)
            .arg("--otlp-protocol")
            .arg(protocol),
        &[
            ("OTEL_METRICS_EXPORTER", "none"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    )?
    .start()
    .context("the agent must start with OTLP export on")?;

    let (c1, c2) = (&topo.c1.netns.name, &topo.c2.netns.name);
    let dst = topo.addr(Side::C2, Family::V4);
    traffic.udp_send(
        c1,
        &UdpSend {
            count,
            rate: 200,
            ..UdpSend::to(dst, dropped)
        },
    )?;
    let recv = traffic.udp_recv(c2, dst, passed, count, Duration::from_secs(10))?;
    traffic.udp_send(
        c1,
        &UdpSend {
            count,
            rate: 200,
            sport: Some(dropped),
            ..UdpSend::to(dst, passed)
        },
    )?;
    ensure!(recv.wait()? == count, "the passing flow lost datagrams");
    std::thread::sleep(SETTLE);
    let out = agent.stop()?;

    let journeys: Vec<&Journey> = out
        .journeys
        .iter()
        .filter(|j| j.has_port(dropped))
        .collect();
    let n_dropped = journeys
        .iter()
        .filter(|j| j.end == JourneyEnd::Dropped)
        .count();
    ensure!(
        journeys.len() as u64 >= count * 2 * 99 / 100 && n_dropped as u64 >= count * 99 / 100,
        "expected ~{} journeys ({count} dropped), got {} ({n_dropped} dropped)",
        count * 2,
        journeys.len()
    );
    let spans_expected: u64 = journeys.iter().map(|j| 1 + j.hops.len() as u64).sum();
    ensure!(
        out.summary.spans_dropped == 0 && out.summary.spans_exported >= spans_expected,
        "every span must be exported: expected >= {spans_expected}, summary {:?}",
        out.summary
    );

    // One trace per journey for service vnt-agent (Jaeger batches: wait).
    let deadline = Instant::now() + Duration::from_secs(20);
    let traces = loop {
        let traces = jaeger.search("vnt-agent", 2000)?;
        if traces.len() >= journeys.len() || Instant::now() > deadline {
            break traces;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let ids: BTreeSet<u128> = journeys
        .iter()
        .map(|j| u128::from_str_radix(&j.trace_id, 16).unwrap_or_default())
        .collect();
    ensure!(ids.len() == journeys.len(), "journeys share trace ids");
    let found: BTreeSet<u128> = traces
        .iter()
        .filter_map(|t| u128::from_str_radix(&t.trace_id, 16).ok())
        .collect();
    ensure!(
        found == ids,
        "Jaeger has {} traces for vnt-agent, the agent printed {} journeys; missing {:?}, extra {:?}",
        found.len(),
        ids.len(),
        ids.difference(&found).take(3).collect::<Vec<_>>(),
        found.difference(&ids).take(3).collect::<Vec<_>>()
    );

    for j in &journeys {
        check_trace(&jaeger, j).with_context(|| format!("trace of {}", j.describe()))?;
    }
    if let Some(j) = journeys.iter().find(|j| j.end == JourneyEnd::Dropped) {
        if let Some(t) = jaeger.trace(&j.trace_id)? {
            eprintln!("a dropped journey as Jaeger's UI lists it:\n{}", t.render());
        }
    }
    eprintln!(
        "{protocol}: {} journeys ({n_dropped} dropped) = {} traces in Jaeger, {} spans, durations equal to hop latencies",
        journeys.len(),
        found.len(),
        spans_expected
    );
    Ok(())
}

/// The trace of `j` in Jaeger: root + one span per hop, in order, durations
/// equal to the hop latencies (ns, via api/v3), attributes, and the drop.
fn check_trace(jaeger: &Jaeger, j: &Journey) -> Result<()> {
    let spans = jaeger.trace_otlp(&j.trace_id)?;
    ensure!(
        spans.len() == 1 + j.hops.len(),
        "{} spans in Jaeger, expected 1 + {} hops",
        spans.len(),
        j.hops.len()
    );
    let roots: Vec<&OSpan> = spans.iter().filter(|s| s.is_root()).collect();
    ensure!(roots.len() == 1, "{} root spans", roots.len());
    let root = roots[0];
    let want_root = format!("udp {} -> {}:{}", j.flow.src, j.flow.dst, j.flow.dport);
    ensure!(
        root.name == want_root,
        "root span is `{}`, expected `{want_root}`",
        root.name
    );
    // Spans lie on whole microseconds (Jaeger's unit), each hop at least
    // 1 us: the root from the first hop's microsecond to past the last.
    let last_ts = j.hops.last().map_or(0, |h| h.ts_unix_nano);
    ensure!(
        root.start_ns == j.start_unix_nano - j.start_unix_nano % 1_000
            && root.end_ns >= last_ts
            && root.end_ns <= last_ts + 1_000 * j.hops.len() as u64,
        "root span {}..{} ns, journey {}+{} ns",
        root.start_ns,
        root.end_ns,
        j.start_unix_nano,
        j.duration_ns
    );
    ensure!(
        root.resource.get("service.name").map(String::as_str) == Some("vnt-agent"),
        "resource {:?}",
        root.resource
    );
    for key in ["os.version", "service.instance.id"] {
        ensure!(
            root.resource.get(key).is_some_and(|v| !v.is_empty()),
            "resource lacks {key}: {:?}",
            root.resource
        );
    }
    let mut children: Vec<&OSpan> = spans.iter().filter(|s| !s.is_root()).collect();
    ensure!(
        children.iter().all(|s| s.parent_span_id == root.span_id),
        "hop spans must be children of the root"
    );
    // Strictly ordered: by start time alone the spans come in path order.
    children.sort_by_key(|s| s.start_ns);
    let mut prev_end: Option<u64> = None;
    for (i, (s, h)) in children.iter().zip(&j.hops).enumerate() {
        let want = [
            ("vnt.hook", h.hook.clone()),
            ("vnt.plugin", h.plugin.clone()),
            ("network.interface.name", h.interface.clone()),
            ("vnt.ifindex", h.ifindex.to_string()),
            ("vnt.netns", h.netns.to_string()),
            ("vnt.hop.index", (i + 1).to_string()),
        ];
        for (k, v) in want {
            ensure!(
                s.attr(k).as_deref() == Some(v.as_str()),
                "hop {i} span `{}`: {k} = {:?}, expected {v}",
                s.name,
                s.attr(k)
            );
        }
        if let Some(name) = &h.netns_name {
            ensure!(
                s.attr("vnt.netns.name").as_deref() == Some(name.as_str()),
                "hop {i}: vnt.netns.name {:?}, expected {name}",
                s.attr("vnt.netns.name")
            );
        }
        ensure!(
            s.name == format!("{} {}", h.label, h.interface),
            "hop {i} span named `{}`, expected `{} {}`",
            s.name,
            h.label,
            h.interface
        );
        // Each span starts where the previous ended and ends at its hop,
        // rounded up to a whole microsecond, at least 1 us after its start.
        ensure!(
            s.end_ns == (h.ts_unix_nano.div_ceil(1_000) * 1_000).max(s.start_ns + 1_000)
                && prev_end.is_none_or(|p| s.start_ns == p),
            "hop {i} ({}) span {}..{}, previous ended at {prev_end:?}, hop at {}",
            h.hook,
            s.start_ns,
            s.end_ns,
            h.ts_unix_nano
        );
        prev_end = Some(s.end_ns);
        ensure!(
            s.attr("vnt.latency_ns").as_deref() == Some(h.latency_ns.to_string().as_str()),
            "hop {i}: vnt.latency_ns {:?}",
            s.attr("vnt.latency_ns")
        );
        match &h.drop {
            Some(d) => {
                ensure!(
                    s.status.code == 2 && s.status.message == d.reason,
                    "drop hop status {:?}, expected error {}",
                    s.status,
                    d.reason
                );
                let ev = s.events.iter().find(|e| e.name == "packet dropped");
                ensure!(
                    ev.and_then(|e| e.attr("vnt.drop.reason")).as_deref()
                        == Some(d.reason.as_str()),
                    "drop hop events {:?}",
                    s.events
                );
                ensure!(
                    root.attr("error.type").as_deref() == Some(d.reason.as_str()),
                    "root error.type {:?}",
                    root.attr("error.type")
                );
            }
            None => ensure!(s.status.code != 2, "hop {i} is an error: {:?}", s.status),
        }
    }
    let errors = spans.iter().filter(|s| s.status.code == 2).count();
    let want_errors = usize::from(j.end == JourneyEnd::Dropped);
    ensure!(
        errors == want_errors,
        "{errors} error spans, expected {want_errors} (one per dropped journey)"
    );

    // The v1 API (what the Jaeger UI reads) shows the same trace: one
    // process, the drop as an error tag with its reason in a log.
    let t = jaeger
        .trace(&j.trace_id)?
        .context("not found through /api/traces/{id}")?;
    ensure!(
        same_trace_id(&t.trace_id, &j.trace_id),
        "trace id {}",
        t.trace_id
    );
    ensure!(
        t.spans.len() == spans.len(),
        "v1 has {} spans",
        t.spans.len()
    );
    for s in &t.spans {
        ensure!(
            s.warnings.as_ref().is_none_or(|w| w.is_empty()),
            "Jaeger warns about span `{}`: {:?}",
            s.operation_name,
            s.warnings
        );
    }
    // As the UI shows it: the root, then the hops in path order with
    // distinct names, one error when dropped, the reason in the drop's log.
    let rows = t.ui_rows();
    let picture = t.render();
    let names: Vec<&str> = rows
        .iter()
        .map(|(_, s)| s.operation_name.as_str())
        .collect();
    let mut want_names = vec![want_root.clone()];
    want_names.extend(
        j.hops
            .iter()
            .map(|h| format!("{} {}", h.label, h.interface)),
    );
    ensure!(
        names == want_names.iter().map(String::as_str).collect::<Vec<_>>(),
        "the UI lists\n{picture}expected {want_names:?}"
    );
    let distinct: BTreeSet<&str> = names.iter().copied().collect();
    ensure!(
        distinct.len() == names.len(),
        "repeated span names:\n{picture}"
    );
    let ui_errors = picture.matches("ERROR").count();
    ensure!(
        ui_errors == want_errors,
        "the UI shows {ui_errors} errors, expected {want_errors}:\n{picture}"
    );
    if let Some(d) = j.hops.last().and_then(|h| h.drop.as_ref()) {
        let drop_span = t
            .spans
            .iter()
            .find(|s| s.tag_str("vnt.hook") == Some("skb:kfree_skb"))
            .context("no drop span in v1")?;
        ensure!(
            drop_span.tag("error") == Some(&serde_json::Value::Bool(true)),
            "v1 drop span tags {:?}",
            drop_span.tags
        );
        ensure!(
            drop_span.logs.iter().any(|l| {
                l.fields.iter().any(|f| {
                    f.key == "vnt.drop.reason" && f.value.as_str() == Some(d.reason.as_str())
                })
            }),
            "v1 drop span logs {:?}",
            drop_span.logs
        );
        // In view without "show all": the log lies inside its span and
        // before the trace's end, in the UI's microseconds.
        let trace_end = rows
            .iter()
            .map(|(_, s)| s.start_time + s.duration)
            .max()
            .unwrap_or(0);
        ensure!(
            drop_span
                .logs
                .iter()
                .all(|l| l.timestamp >= drop_span.start_time
                    && l.timestamp <= drop_span.start_time + drop_span.duration
                    && l.timestamp <= trace_end),
            "drop log outside its span or the trace: {:?}\n{picture}",
            drop_span.logs
        );
    }
    Ok(())
}

#[test]
fn journeys_reach_jaeger_over_grpc() -> Result<()> {
    journeys_reach_jaeger("grpc")
}

#[test]
fn journeys_reach_jaeger_over_http_protobuf() -> Result<()> {
    journeys_reach_jaeger("http/protobuf")
}

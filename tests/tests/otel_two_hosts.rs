//! Acceptance 2 of issue #3: two agents on one machine, each restricted to
//! one "host" (its own network namespaces, joined to the other host's by a
//! veth wire), trace traffic from host A to host B into the same Jaeger.
//! Each packet becomes one trace holding the spans of both agents, told
//! apart by their `host.name`; the agents share nothing but the collector
//! address and the deployment's packet-id key (each derives the trace id
//! from the packet and the key alone).
//!
//! Privileged (real eBPF, namespaces); Jaeger as in otel_jaeger.rs.

use anyhow::{ensure, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use vnt_tests::otel::{self, Jaeger, OSpan};
use vnt_tests::two_hosts::{Host, TwoHosts};
use vnt_tests::{unique_port, Agent, AgentOutput, Journey, Traffic, UdpSend};

/// The packet-id key both agents share, as a deployment would set it.
const DEPLOYMENT_KEY: &str = "5f0c3e9a1b7d24c8e6a0f1b2c3d4e5f6";

fn agent_for(host: &Host, name: &str, port: u16, jaeger: &Jaeger) -> Result<Agent> {
    otel::with_env(
        Agent::builder()
            .filter(format!("{} and port {port}", host.netns_filter()))
            .arg("--otlp-endpoint")
            .arg(jaeger.otlp_grpc_url()),
        &[
            ("OTEL_RESOURCE_ATTRIBUTES", &format!("host.name={name}")),
            ("OTEL_METRICS_EXPORTER", "none"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            // A deployment's own key, the same on both (issue 13): keyed ids still join.
            ("VNT_PACKET_ID__KEY", DEPLOYMENT_KEY),
        ],
    )?
    .start()
    .with_context(|| format!("agent for {name} must start"))
}

fn flow_journeys(out: &AgentOutput, port: u16) -> BTreeMap<String, &Journey> {
    out.journeys
        .iter()
        .filter(|j| j.flow.dport == port)
        .map(|j| (j.trace_id.clone(), j))
        .collect()
}

#[test]
fn one_trace_per_packet_with_spans_from_both_hosts() -> Result<()> {
    let _serial = vnt_tests::serial();
    vnt_tests::require_root();
    let hosts = TwoHosts::new()?;
    let traffic = Traffic::new(env!("CARGO_BIN_EXE_vnt-traffic"));
    let jaeger = Jaeger::start().context("Jaeger must start")?;
    let port = unique_port();
    let (name_a, name_b) = (
        format!("{}-node-a", hosts.prefix),
        format!("{}-node-b", hosts.prefix),
    );
    let agent_a = agent_for(&hosts.a, &name_a, port, &jaeger)?;
    let agent_b = agent_for(&hosts.b, &name_b, port, &jaeger)?;

    let count = 50;
    let recv = traffic.udp_recv(
        &hosts.b.container.name,
        hosts.b.addr(),
        port,
        count,
        Duration::from_secs(10),
    )?;
    traffic.udp_send(
        &hosts.a.container.name,
        &UdpSend {
            count,
            rate: 200,
            ..UdpSend::to(hosts.b.addr(), port)
        },
    )?;
    ensure!(recv.wait()? == count, "datagrams lost between the hosts");
    std::thread::sleep(Duration::from_millis(500));
    let (out_a, out_b) = (agent_a.stop()?, agent_b.stop()?);

    // Each agent saw its own half of the path, and only that.
    let (path_a, path_b) = hosts.path_a_to_b();
    let (ja, jb) = (flow_journeys(&out_a, port), flow_journeys(&out_b, port));
    for (what, journeys, path) in [("host A", &ja, &path_a), ("host B", &jb, &path_b)] {
        ensure!(
            journeys.len() as u64 >= count * 99 / 100,
            "{what}: {} journeys for {count} datagrams",
            journeys.len()
        );
        for j in journeys.values() {
            j.check_hops(path)
                .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
        }
    }
    // Same packets, same trace ids: derived from the packet alone.
    let ids_a: BTreeSet<&String> = ja.keys().collect();
    let ids_b: BTreeSet<&String> = jb.keys().collect();
    ensure!(
        ids_a == ids_b,
        "the agents disagree on trace ids: {} only on A, {} only on B",
        ids_a.difference(&ids_b).count(),
        ids_b.difference(&ids_a).count()
    );

    // One trace per packet in Jaeger, not one per agent.
    let deadline = Instant::now() + Duration::from_secs(20);
    let traces = loop {
        let t = jaeger.search("vnt-agent", 2000)?;
        if t.len() >= ids_a.len() || Instant::now() > deadline {
            break t;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    ensure!(
        traces.len() == ids_a.len(),
        "{} traces in Jaeger for {} packets",
        traces.len(),
        ids_a.len()
    );

    for (id, a) in &ja {
        let b = jb[id];
        let spans = jaeger.trace_otlp(id)?;
        let by_host = |name: &str| -> Vec<&OSpan> {
            spans
                .iter()
                .filter(|s| s.resource.get("host.name").map(String::as_str) == Some(name))
                .collect()
        };
        let (sa, sb) = (by_host(&name_a), by_host(&name_b));
        ensure!(
            sa.len() == 1 + a.hops.len() && sb.len() == 1 + b.hops.len() && spans.len() == sa.len() + sb.len(),
            "trace {id}: {} spans from {name_a}, {} from {name_b}, {} in all; expected 1+{} and 1+{}",
            sa.len(),
            sb.len(),
            spans.len(),
            a.hops.len(),
            b.hops.len()
        );
        let unique: BTreeSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
        ensure!(
            unique.len() == spans.len(),
            "trace {id}: span ids collide between the hosts"
        );
        for (host_spans, journey, name) in [(&sa, *a, &name_a), (&sb, b, &name_b)] {
            let roots: Vec<&&OSpan> = host_spans.iter().filter(|s| s.is_root()).collect();
            ensure!(
                roots.len() == 1,
                "trace {id}: {} roots from {name}",
                roots.len()
            );
            let root = roots[0];
            ensure!(
                host_spans
                    .iter()
                    .filter(|s| !s.is_root())
                    .all(|s| s.parent_span_id == root.span_id),
                "trace {id}: {name}'s hop spans must hang off {name}'s root"
            );
            let ifaces: BTreeSet<String> = host_spans
                .iter()
                .filter_map(|s| s.attr("network.interface.name"))
                .collect();
            let want: BTreeSet<String> = journey.hops.iter().map(|h| h.interface.clone()).collect();
            ensure!(
                ifaces == want,
                "trace {id}: {name} spans on {ifaces:?}, journey on {want:?}"
            );
        }
        // The v1 API (the UI) shows two processes, told apart by host.name.
        let t = jaeger
            .trace(id)?
            .context("trace not found through /api/traces/{id}")?;
        let hosts_seen: BTreeSet<&str> = t.spans.iter().filter_map(|s| t.host_of(s)).collect();
        ensure!(
            hosts_seen == BTreeSet::from([name_a.as_str(), name_b.as_str()]),
            "trace {id}: hosts {hosts_seen:?}"
        );
    }
    eprintln!(
        "{} packets -> {} traces, each with {} spans from {name_a} and {} from {name_b}",
        count,
        traces.len(),
        1 + path_a.len(),
        1 + path_b.len()
    );
    Ok(())
}

//! Event accounting that closes (issue 13, acceptance 1): with the smallest
//! ring buffer (`ringbuf.bytes` = one page) under a UDP flood, every packet
//! that matched the filter is in a journey or counted as lost
//! (`packets_lost`, the kernel's `lost_packets`: the ring was full at its
//! first hop; `output_dropped`: its journey was built but stdout's queue was
//! full), within 0.1 % of what the traffic generator sent. Hops lost
//! mid-path are counted apart (`lost_gaps`), per plugin and per CPU. The
//! same losses reach a collector as the health metrics
//! `vnt.agent.packets.lost` and `vnt.agent.hops.lost`.

use std::net::IpAddr;
use std::time::Duration;

use vnt_tests::otel::{self, metric_sum, Jaeger, OtelCol};
use vnt_tests::topology::{Family, Side, Topology};
use vnt_tests::traffic::{Traffic, UdpSend};
use vnt_tests::{require_root, serial, unique_port, Agent};

/// Datagrams of the flood, all matching the filter.
const SENT: u64 = 100_000;

#[test]
fn journeys_plus_lost_packets_equal_the_packets_sent_with_the_smallest_ring() {
    accounting_closes(4096);
}

/// A ring that holds a few hundred packets: most make journeys, some do not.
#[test]
fn journeys_plus_lost_packets_equal_the_packets_sent_with_a_partial_loss() {
    accounting_closes(256 << 10);
}

fn accounting_closes(ring_bytes: u32) {
    require_root();
    let _guard = serial();
    let topo = Topology::new().expect("topology");
    let port = unique_port();
    let jaeger = Jaeger::start().expect("Jaeger must start");
    let col = OtelCol::start(jaeger.ports.otlp_grpc).expect("the collector must start");
    let host = format!("{}-accounting", topo.prefix);
    let config = otel::temp_file(
        "accounting.toml",
        &format!(
            "[ringbuf]\nbytes = {ring_bytes}\n[otlp]\nendpoint = \"{}\"\nprotocol = \"grpc\"\n\
             metrics_interval_ms = 500\n[otlp.resource]\n\"host.name\" = \"{host}\"\n",
            col.otlp_grpc_url()
        ),
    )
    .expect("config");
    let agent = Agent::builder()
        .filter(format!("port {port}"))
        .arg("--config")
        .arg(&config)
        .start();
    let _ = std::fs::remove_file(&config);
    let agent = agent.expect("agent starts with a one-page ring buffer");
    let traffic = Traffic::new(env!("CARGO_BIN_EXE_vnt-traffic"));
    let dst: IpAddr = topo.addr(Side::C2, Family::V4);
    let rx = traffic
        .udp_recv(
            &topo.c2.netns.name,
            dst,
            port,
            SENT,
            Duration::from_secs(15),
        )
        .expect("receiver");
    traffic
        .udp_send(
            &topo.c1.netns.name,
            &UdpSend {
                count: SENT,
                rate: 0,
                ..UdpSend::to(dst, port)
            },
        )
        .expect("flood");
    let received = rx.wait().expect("receiver");
    std::thread::sleep(Duration::from_millis(500));
    let out = agent.stop().expect("agent stops cleanly");

    let journeys = out.journeys.iter().filter(|j| j.has_port(port)).count() as u64;
    let s = &out.summary;
    let veth = &s.plugins["veth"];
    let k = &veth.kernel;
    eprintln!(
        "ring {ring_bytes} B: sent {SENT}, received {received}; journeys {journeys}, packets lost {} (kernel: lost_packets {}, \
         lost_gaps {}, lost_follow {}, emitted {}); evicted {}, output dropped {}",
        s.packets_lost, k.lost_packets, k.lost_gaps, k.lost_follow, k.emitted,
        s.journeys_evicted, s.output_dropped
    );
    assert!(
        k.lost_packets > 0,
        "a {ring_bytes}-byte ring under a flood lost nothing: the test proves nothing"
    );
    assert_eq!(s.packets_lost, s.kernel.lost_packets);
    // Journeys built but not written (the reader of stdout fell behind)
    // are counted in output_dropped: the user-space queue was full.
    assert_eq!(
        s.journeys,
        out.journeys.len() as u64 + s.output_dropped,
        "journeys built = written + dropped at the output"
    );
    let accounted = journeys + s.output_dropped + s.packets_lost;
    let diff = accounted.abs_diff(SENT);
    assert!(
        diff * 1000 <= SENT,
        "journeys {journeys} + output dropped {} + packets lost {} = {accounted}, {diff} off the {SENT} sent (more than 0.1 %)",
        s.output_dropped,
        s.packets_lost
    );
    // Per CPU: the CPUs' counters add up to the plugin's.
    let mut per_cpu = (0u64, 0u64, 0u64);
    for c in &veth.kernel_per_cpu {
        per_cpu.0 += c.lost_packets;
        per_cpu.1 += c.lost_gaps;
        per_cpu.2 += c.emitted;
    }
    assert_eq!(per_cpu, (k.lost_packets, k.lost_gaps, k.emitted));
    assert_eq!(k.lost, k.lost_packets + k.lost_gaps + k.lost_follow);
    assert_eq!(s.events_lost, s.kernel.lost);

    // The health metrics carry the same counts (the final export at exit).
    let h = [("host_name", host.as_str())];
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let (lost, gaps) = loop {
        let m = col.scrape().expect("scrape the collector");
        let lost = metric_sum(&m, "vnt_agent_packets_lost_total", &h);
        let gaps = metric_sum(&m, "vnt_agent_hops_lost_total", &h);
        if lost == Some(s.packets_lost as f64) || std::time::Instant::now() >= deadline {
            break (lost, gaps);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(
        lost,
        Some(s.packets_lost as f64),
        "vnt_agent_packets_lost_total against the summary's packets_lost"
    );
    assert_eq!(gaps, Some(k.lost_gaps as f64), "vnt_agent_hops_lost_total");
}

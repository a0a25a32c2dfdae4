//! A plugin whose decoder panics is disabled with an error, its probes are
//! detached, and tracing goes on with the others (issue #2, acceptance 7).

use std::net::IpAddr;
use std::time::Duration;

use vnt_tests::topology::{Family, Side, Topology};
use vnt_tests::traffic::{Traffic, UdpSend};
use vnt_tests::{bpftool, require_root, serial, unique_port, Agent};

/// Ids of loaded programs whose name starts with `prefix`.
fn programs(prefix: &str) -> Vec<u64> {
    bpftool::ids("prog", |p| {
        p["name"].as_str().is_some_and(|n| n.starts_with(prefix))
    })
}

#[test]
fn panicking_decoder_disables_only_that_plugin() {
    require_root();
    let _guard = serial();
    let topo = Topology::new().expect("topology");
    let port = unique_port();
    let before = programs("panicky_");

    let agent = Agent::builder()
        .plugins("veth,panicky")
        .filter(format!("port {port}"))
        .start()
        .expect("agent starts with both plugins");
    // The panicky program fires on any received packet; send some to be sure.
    let traffic = Traffic::new(env!("CARGO_BIN_EXE_vnt-traffic"));
    let dst: IpAddr = topo.addr(Side::C2, Family::V4);
    let rx = traffic
        .udp_recv(&topo.c2.netns.name, dst, port, 200, Duration::from_secs(20))
        .expect("receiver");
    traffic
        .udp_send(
            &topo.c1.netns.name,
            &UdpSend {
                count: 20,
                rate: 100,
                ..UdpSend::to(dst, port)
            },
        )
        .expect("first traffic");
    // Wait for the disable to be logged.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !agent.stderr().contains("plugin disabled") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let stderr = agent.stderr();
    assert!(
        stderr.contains("plugin disabled"),
        "no disable message:\n{stderr}"
    );
    assert!(
        stderr.contains("decoder panics on purpose"),
        "the panic message is not reported:\n{stderr}"
    );
    // Its programs are gone while the agent lives on.
    std::thread::sleep(Duration::from_millis(300));
    let left: Vec<u64> = programs("panicky_")
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    assert!(
        left.is_empty(),
        "panicky programs still loaded after disable: {left:?}"
    );

    // Tracing goes on with veth: traffic after the disable makes full journeys.
    traffic
        .udp_send(
            &topo.c1.netns.name,
            &UdpSend {
                count: 100,
                rate: 200,
                ..UdpSend::to(dst, port)
            },
        )
        .expect("second traffic");
    assert_eq!(rx.wait().expect("receiver"), 120);
    std::thread::sleep(Duration::from_millis(300));
    let out = agent
        .stop()
        .expect("agent stops cleanly after a plugin panicked");

    let p = &out.summary.plugins["panicky"];
    assert!(p.disabled, "panicky not marked disabled: {:?}", out.summary);
    assert!(
        p.disabled_reason
            .as_deref()
            .unwrap_or("")
            .contains("decoder panics on purpose"),
        "{p:?}"
    );
    assert!(!out.summary.plugins["veth"].disabled);
    let path = topo.path(Side::C1);
    let complete = out
        .journeys
        .iter()
        .filter(|j| j.has_port(port) && j.flow.family == 4 && j.check_hops(&path).is_ok())
        .count();
    assert!(
        complete >= 118,
        "only {complete} of 120 datagrams made complete journeys"
    );
    assert!(out
        .journeys
        .iter()
        .all(|j| j.hops.iter().all(|h| h.plugin == "veth")));
}

//! Journeys that tell the truth (issue #10): what became of each packet,
//! who sent and read it, and no journeys of the agent's own export.
//!
//! Privileged: real eBPF, real namespaces, the veth plugin with its default
//! probes, real `ping`, TCP and UDP. These tests fail, never skip, when they
//! are not root or the agent cannot load its eBPF programs.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use vnt_tests::otel::{self, Jaeger};
use vnt_tests::verdicts::{check_answered_pings, check_only_real_drops, describe_all, reader};
use vnt_tests::{
    unique_port, Agent, Family, Journey, JourneyEnd, Side, TcpSend, Topology, Traffic, UdpSend,
};

/// Time for the last events to reach the agent before it is stopped.
const SETTLE: Duration = Duration::from_millis(500);

fn ping(ns: &str, dst: std::net::IpAddr, count: u32) -> Result<()> {
    let out = Command::new("ip")
        .args([
            "netns", "exec", ns, "ping", "-q", "-i", "0.2", "-W", "2", "-c",
        ])
        .arg(count.to_string())
        .arg(dst.to_string())
        .output()
        .context("ping")?;
    ensure!(
        out.status.success(),
        "ping {dst} from {ns} failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(())
}

/// A process that lives in `ns` until dropped.
struct Sleeper(Child);

impl Sleeper {
    fn start(ns: &str) -> Result<Sleeper> {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "sleep", "60"])
            .stdout(Stdio::null())
            .spawn()
            .context("sleep in the namespace")?;
        Ok(Sleeper(child))
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Answered pings, a TCP connection opened, used and closed: delivered, no
/// journey dropped. A UDP datagram to a closed port and one an nftables rule
/// drops: dropped, with their reasons. The old agent reported every echo
/// reply as a NO_SOCKET drop (ping's raw socket had its copy).
#[test]
fn answered_pings_and_a_tcp_close_are_delivered_real_drops_are_dropped() -> Result<()> {
    let _serial = vnt_tests::serial();
    vnt_tests::require_root();
    let topo = Topology::new()?;
    let traffic = Traffic::new(env!("CARGO_BIN_EXE_vnt-traffic"));
    let (c1, c2) = (&topo.c1.netns.name, &topo.c2.netns.name);
    let (a1, a2) = (
        topo.addr(Side::C1, Family::V4),
        topo.addr(Side::C2, Family::V4),
    );
    let (tcp_port, closed_port, nft_port) = (unique_port(), unique_port(), unique_port());
    let _rule = topo.nft_drop_udp(nft_port)?;

    let agent = Agent::builder()
        .default_probes()
        .filter(format!("host {a2}"))
        .start()?;
    ping(c1, a2, 3)?;
    let rx = traffic.tcp_recv(c2, a2, tcp_port)?;
    traffic.tcp_send(
        c1,
        &TcpSend {
            dst: a2,
            port: tcp_port,
            bytes: 20_000,
            chunk: 1000,
            rate: 200,
        },
    )?;
    ensure!(rx.wait()? == 20_000, "the TCP receiver lost bytes");
    // One datagram per sender: the port unreachable answering the first
    // would fail the next send on the same connected socket.
    for port in [
        closed_port,
        closed_port,
        closed_port,
        nft_port,
        nft_port,
        nft_port,
    ] {
        traffic.udp_send(
            c1,
            &UdpSend {
                count: 1,
                rate: 50,
                ..UdpSend::to(a2, port)
            },
        )?;
    }
    std::thread::sleep(SETTLE);
    let out = agent.stop()?;

    check_answered_pings(&out, a1, a2)?;

    let tcp: Vec<&Journey> = out
        .journeys
        .iter()
        .filter(|j| j.flow.proto == "tcp" && j.has_port(tcp_port))
        .collect();
    ensure!(tcp.len() >= 20, "only {} TCP journeys", tcp.len());
    ensure!(
        tcp.iter().all(|j| j.end != JourneyEnd::Dropped),
        "a TCP connection's open, data and close are not drops:\n{}",
        describe_all(&tcp)
    );
    ensure!(
        tcp.iter().any(
            |j| j.delivered_to.as_deref() == Some("socket") && reader(j) == Some("vnt-traffic")
        ),
        "no TCP segment delivered to the reading vnt-traffic:\n{}",
        describe_all(&tcp)
    );

    check_only_real_drops(&out, closed_port, nft_port)?;
    ensure!(
        out.summary.journeys_delivered > 0,
        "nothing delivered: {:?}",
        out.summary
    );
    Ok(())
}

/// The first process in a namespace (ping) exits, another one (sleep) lives
/// there, and a third (vnt-traffic) sends: the sender is vnt-traffic, the
/// namespace's owner is sleep, never the ping that left. The old agent named
/// the namespace after whatever it found first, for good.
#[test]
fn sender_and_namespace_owner_are_who_is_there_now() -> Result<()> {
    let _serial = vnt_tests::serial();
    vnt_tests::require_root();
    let topo = Topology::new()?;
    let traffic = Traffic::new(env!("CARGO_BIN_EXE_vnt-traffic"));
    let c1 = &topo.c1.netns.name;
    let (a1, a2) = (
        topo.addr(Side::C1, Family::V4),
        topo.addr(Side::C2, Family::V4),
    );
    let port = unique_port();

    let agent = Agent::builder()
        .default_probes()
        .filter(format!("host {a2}"))
        .start()?;
    // ping, alone in c1 for a second: its journeys end (idle timeout) and
    // name it the owner while it lives. Then it exits, sleep moves in, and
    // the owner check is due again (once a second).
    ping(c1, a2, 5)?;
    std::thread::sleep(Duration::from_millis(1200));
    let _sleeper = Sleeper::start(c1)?;
    std::thread::sleep(Duration::from_millis(200));
    let recv = traffic.udp_recv(&topo.c2.netns.name, a2, port, 5, Duration::from_secs(10))?;
    traffic.udp_send(
        c1,
        &UdpSend {
            count: 5,
            rate: 20,
            ..UdpSend::to(a2, port)
        },
    )?;
    ensure!(recv.wait()? == 5, "the receiver lost datagrams");
    std::thread::sleep(SETTLE);
    let out = agent.stop()?;

    let pings: Vec<&Journey> = out
        .journeys
        .iter()
        .filter(|j| j.flow.proto == "icmp" && j.flow.src == a1)
        .collect();
    let first = pings
        .first()
        .and_then(|j| j.hops.first())
        .context("no journey of the ping")?;
    ensure!(
        first.netns_owner.as_ref().and_then(|o| o.comm.as_deref()) == Some("ping"),
        "while ping was the only process in {c1}, it owned it: {:?}",
        first.netns_owner
    );
    let udp: Vec<&Journey> = out
        .journeys
        .iter()
        .filter(|j| j.flow.proto == "udp" && j.flow.dport == port)
        .collect();
    ensure!(udp.len() == 5, "{} UDP journeys", udp.len());
    for j in &udp {
        let h = j.hops.first().context("no hops")?;
        let sender = h.process.as_ref().and_then(|p| p.comm.as_deref());
        let owner = h.netns_owner.as_ref().and_then(|o| o.comm.as_deref());
        ensure!(
            sender == Some("vnt-traffic") && owner == Some("sleep"),
            "first hop in {c1}: sender {sender:?} (want vnt-traffic), namespace owner {owner:?} (want sleep, not the ping that exited): {}",
            j.describe()
        );
        ensure!(
            j.end == JourneyEnd::Delivered,
            "a received datagram is delivered: {}",
            j.describe()
        );
    }
    // The same packet, the same length at every hop (from the IP header on).
    for j in udp.iter().chain(pings.iter()) {
        let lens: Vec<u32> = j.hops.iter().map(|h| h.len).collect();
        ensure!(
            lens.windows(2).all(|w| w[0] == w[1]),
            "lengths differ along the path: {lens:?} {}",
            j.describe()
        );
    }
    Ok(())
}

/// With no filter, every packet kept and OTLP export on, the agent's own
/// export to the collector never becomes a journey; with
/// `otlp.exclude_own_traffic = false` it does (the control: the test can fail).
#[test]
fn the_agent_does_not_trace_its_own_export() -> Result<()> {
    let _serial = vnt_tests::serial();
    vnt_tests::require_root();
    let topo = Topology::new()?;
    let traffic = Traffic::new(env!("CARGO_BIN_EXE_vnt-traffic"));
    let jaeger = Jaeger::start().context("Jaeger must start")?;
    let endpoint = jaeger.otlp_grpc_url();
    let collector_port: u16 = endpoint
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .context("collector port")?;
    let a2 = topo.addr(Side::C2, Family::V4);

    let mut own = vec![];
    for exclude in [true, false] {
        let agent = otel::with_env(
            Agent::builder()
                .sample(1, 1)
                .arg("--otlp-endpoint")
                .arg(&endpoint),
            &[
                ("OTEL_METRICS_EXPORTER", "none"),
                ("OTEL_BSP_SCHEDULE_DELAY", "200"),
                (
                    "VNT_OTLP__EXCLUDE_OWN_TRAFFIC",
                    if exclude { "true" } else { "false" },
                ),
            ],
        )?
        .start()?;
        let port = unique_port();
        let recv = traffic.udp_recv(&topo.c2.netns.name, a2, port, 40, Duration::from_secs(10))?;
        traffic.udp_send(
            &topo.c1.netns.name,
            &UdpSend {
                count: 40,
                rate: 20,
                ..UdpSend::to(a2, port)
            },
        )?;
        ensure!(recv.wait()? == 40, "the receiver lost datagrams");
        std::thread::sleep(SETTLE);
        let out = agent.stop()?;
        ensure!(
            out.summary.spans_exported > 0,
            "nothing was exported: {:?}",
            out.summary
        );
        let n = out
            .journeys
            .iter()
            .filter(|j| j.has_port(collector_port))
            .count();
        if exclude {
            ensure!(
                out.stderr
                    .contains("not tracing the agent's own export traffic"),
                "the agent must say it leaves its export out:\n{}",
                out.stderr
            );
        }
        own.push(n);
    }
    ensure!(
        own[0] == 0,
        "{} journeys of the agent's own export to port {collector_port}",
        own[0]
    );
    ensure!(
        own[1] > 0,
        "control: with otlp.exclude_own_traffic = false the export must show up (got none)"
    );
    eprintln!(
        "own export journeys: {} excluded, {} when traced",
        own[0], own[1]
    );
    Ok(())
}

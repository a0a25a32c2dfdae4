//! The agent against real packets: a topology of two containers and a host,
//! the veth plugin, traffic through the bridge, and the journeys it prints.
//!
//! Privileged: run as root after `cargo build --release` (the agent binary
//! is `$VNT_AGENT_BIN`, else `target/release/vnt-agent`, else
//! `target/debug/vnt-agent`). These tests fail, never skip, when they are
//! not root or the agent cannot load its eBPF programs.
//!
//! Each scenario reads as data: set up, make traffic, expect.

use anyhow::{bail, ensure, Context, Result};
use std::net::IpAddr;
use std::sync::MutexGuard;
use std::time::Duration;
use vnt_tests::{
    bpftrace, hooks, median, unique_port, Agent, AgentOutput, ExpectedHop, Family, Journey,
    JourneyEnd, Side, TcpSend, Topology, Traffic, UdpSend,
};

/// Time for the last events to reach the agent before it is stopped.
const SETTLE: Duration = Duration::from_millis(500);

struct Scenario {
    topo: Topology,
    traffic: Traffic,
    _serial: MutexGuard<'static, ()>,
}

fn scenario() -> Result<Scenario> {
    let serial = vnt_tests::serial();
    vnt_tests::require_root();
    Ok(Scenario {
        topo: Topology::new()?,
        traffic: Traffic::new(env!("CARGO_BIN_EXE_vnt-traffic")),
        _serial: serial,
    })
}

impl Scenario {
    fn ns(&self, side: Side) -> &str {
        &self.topo.container(side).netns.name
    }

    /// Sends `send` from `from` to the other container, which must receive all of it.
    fn udp(&self, from: Side, send: &UdpSend) -> Result<()> {
        let to = from.other();
        let recv = self.traffic.udp_recv(
            self.ns(to),
            send.dst,
            send.port,
            send.count,
            Duration::from_secs(send.count / send.rate.max(1) + 5),
        )?;
        self.traffic.udp_send(self.ns(from), send)?;
        let got = recv.wait()?;
        ensure!(
            got == send.count,
            "{from:?} -> {to:?} {}: received {got} of {} datagrams without the agent's help",
            send.dst,
            send.count
        );
        Ok(())
    }

    fn stop(&self, agent: Agent) -> Result<AgentOutput> {
        std::thread::sleep(SETTLE);
        let out = agent.stop()?;
        let veth = out.summary.plugins.get("veth");
        ensure!(
            veth.is_some_and(|p| !p.disabled),
            "the veth plugin is missing or disabled: {:?}\nstderr:\n{}",
            out.summary,
            out.stderr
        );
        eprintln!(
            "agent: {} journeys, summary {:?}",
            out.journeys.len(),
            out.summary
        );
        Ok(out)
    }
}

fn start_agent(filter: String, one_in: u32) -> Result<Agent> {
    Agent::start(filter, one_in).context("the agent must start and attach its eBPF programs")
}

fn udp_journeys(out: &AgentOutput, src: IpAddr, dst: IpAddr, dport: u16) -> Vec<&Journey> {
    out.journeys
        .iter()
        .filter(|j| j.is_flow(src, dst, "udp", dport))
        .collect()
}

/// Every journey has exactly the `expected` hops; reports the first few that do not.
fn check_each(what: &str, journeys: &[&Journey], expected: &[ExpectedHop]) -> Result<()> {
    let failures: Vec<String> = journeys
        .iter()
        .filter_map(|j| j.check_hops(expected).err())
        .collect();
    if !failures.is_empty() {
        bail!(
            "{what}: {} of {} journeys do not follow the expected path {:?}; first ones:\n{}",
            failures.len(),
            journeys.len(),
            expected,
            failures
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    Ok(())
}

/// Every journey ends dropped with `reason` on its last hop, and no earlier
/// hop carries a drop.
fn check_dropped_with(journeys: &[&Journey], reason: &str) -> Result<()> {
    for j in journeys {
        let last = j
            .last_hop()
            .and_then(|h| h.drop.as_ref())
            .map(|d| d.reason.as_str());
        ensure!(
            j.end == JourneyEnd::Dropped && last == Some(reason),
            "expected a {reason} drop at the end: {}",
            j.describe()
        );
        ensure!(
            j.hops[..j.hops.len() - 1].iter().all(|h| h.drop.is_none()),
            "only the last hop may carry a drop: {}",
            j.describe()
        );
    }
    Ok(())
}

/// At least 99% of `sent` packets have a journey, and none has two.
fn check_share(what: &str, journeys: usize, sent: u64) -> Result<()> {
    let needed = (sent * 99).div_ceil(100);
    ensure!(
        journeys as u64 >= needed,
        "{what}: {journeys} journeys for {sent} datagrams, expected at least {needed}"
    );
    ensure!(
        journeys as u64 <= sent,
        "{what}: {journeys} journeys for only {sent} datagrams"
    );
    Ok(())
}

#[test]
fn udp_ipv4_ipv6_both_directions_all_journeys_complete() -> Result<()> {
    let s = scenario()?;
    let port = unique_port();
    let count = 300;
    let agent = start_agent(format!("port {port}"), 1)?;
    let runs: Vec<(Family, Side)> = [Family::V4, Family::V6]
        .into_iter()
        .flat_map(|f| [(f, Side::C1), (f, Side::C2)])
        .collect();
    for &(family, from) in &runs {
        let send = UdpSend {
            count,
            rate: 200,
            size: 64,
            ..UdpSend::to(s.topo.addr(from.other(), family), port)
        };
        s.udp(from, &send)?;
    }
    let out = s.stop(agent)?;

    for (family, from) in runs {
        let (src, dst) = (s.topo.addr(from, family), s.topo.addr(from.other(), family));
        let what = format!("{family:?} {from:?} -> {:?}", from.other());
        let journeys = udp_journeys(&out, src, dst, port);
        check_share(&what, journeys.len(), count)?;
        check_each(&what, &journeys, &s.topo.path(from))?;
        for j in &journeys {
            ensure!(j.end != JourneyEnd::Dropped, "{what}: {}", j.describe());
            ensure!(j.flow.family == family.number(), "{what}: {}", j.describe());
        }
    }
    Ok(())
}

#[test]
fn tcp_segments_seen_at_first_hop_complete() -> Result<()> {
    let s = scenario()?;
    let port = unique_port();
    let bytes = 2u64 << 20;
    let agent = start_agent(format!("port {port}"), 1)?;
    for family in [Family::V4, Family::V6] {
        let dst = s.topo.addr(Side::C2, family);
        let recv = s.traffic.tcp_recv(s.ns(Side::C2), dst, port)?;
        let send = TcpSend {
            dst,
            port,
            bytes,
            chunk: 16 << 10,
            rate: 100,
        };
        s.traffic.tcp_send(s.ns(Side::C1), &send)?;
        let got = recv.wait()?;
        ensure!(got == bytes, "{family:?}: received {got} of {bytes} bytes");
    }
    let out = s.stop(agent)?;

    for family in [Family::V4, Family::V6] {
        // Data flows c1 -> c2, ACKs c2 -> c1.
        for from in [Side::C1, Side::C2] {
            let (src, dst) = (s.topo.addr(from, family), s.topo.addr(from.other(), family));
            let what = format!("{family:?} TCP {from:?} -> {:?}", from.other());
            let path = s.topo.path(from);
            let flow: Vec<&Journey> = out
                .journeys
                .iter()
                .filter(|j| {
                    j.flow.proto == "tcp"
                        && j.flow.src == src
                        && j.flow.dst == dst
                        && j.has_port(port)
                })
                .collect();
            let from_sender: Vec<&Journey> = flow
                .iter()
                .copied()
                .filter(|j| j.hops.first().is_some_and(|h| path[0].matches(h)))
                .collect();
            eprintln!(
                "{what}: {} journeys, {} start at the sender's xmit",
                flow.len(),
                from_sender.len()
            );
            check_each(&what, &from_sender, &path)?;
            // A segment is at most 64 KiB (no BIG TCP), so the data needs at least this many.
            let at_least = if from == Side::C1 { bytes / 65536 } else { 1 };
            ensure!(
                from_sender.len() as u64 >= at_least,
                "{what}: {} complete journeys, expected at least {at_least}",
                from_sender.len()
            );
        }
    }
    Ok(())
}

#[test]
fn sampling_share_is_within_bounds() -> Result<()> {
    let s = scenario()?;
    let port = unique_port();
    let (count, one_in) = (2000u64, 8u32);
    let agent = start_agent(format!("port {port}"), one_in)?;
    let dst = s.topo.addr(Side::C2, Family::V4);
    let send = UdpSend {
        count,
        rate: 1000,
        ..UdpSend::to(dst, port)
    };
    s.udp(Side::C1, &send)?;
    let out = s.stop(agent)?;

    let journeys = udp_journeys(&out, s.topo.addr(Side::C1, Family::V4), dst, port);
    let p = 1.0 / f64::from(one_in);
    let mean = count as f64 * p;
    let sigma = (count as f64 * p * (1.0 - p)).sqrt();
    let n = journeys.len() as f64;
    eprintln!(
        "sampled {n} of {count} at 1/{one_in}: expected {mean} +- {:.1} (5 sigma)",
        5.0 * sigma
    );
    ensure!(
        (n - mean).abs() <= 5.0 * sigma,
        "{n} journeys for {count} datagrams sampled 1/{one_in}: outside {mean} +- {:.1}",
        5.0 * sigma
    );
    check_each("sampled", &journeys, &s.topo.path(Side::C1))
}

#[test]
fn bpftrace_agrees_on_the_c1_to_bridge_hop() -> Result<()> {
    let s = scenario()?;
    let port = unique_port();
    let count = 300;
    let (c1, h1) = (&s.topo.c1.veth, &s.topo.c1.peer);
    let agent = start_agent(format!("port {port}"), 1)?;
    let script = bpftrace::hop_latency_script(
        hooks::XMIT,
        &c1.name,
        hooks::RECEIVE,
        &h1.name,
        Some(0x0800), // IPv4 only, like the traffic: not the containers' MLD reports
    );
    let dst = s.topo.addr(Side::C2, Family::V4);
    let ((), lines) = bpftrace::trace_during(&script, || {
        s.udp(
            Side::C1,
            &UdpSend {
                count,
                rate: 200,
                ..UdpSend::to(dst, port)
            },
        )
    })?;
    let out = s.stop(agent)?;

    let mut theirs = bpftrace::numbers(&lines);
    ensure!(
        theirs.len() as u64 >= count,
        "bpftrace measured {} hops for {count} datagrams",
        theirs.len()
    );
    let (xmit, receive) = (
        ExpectedHop::at(hooks::XMIT, c1),
        ExpectedHop::at(hooks::RECEIVE, h1),
    );
    let journeys = udp_journeys(&out, s.topo.addr(Side::C1, Family::V4), dst, port);
    check_share("agent", journeys.len(), count)?;
    let mut ours: Vec<u64> = journeys
        .iter()
        .filter_map(|j| j.ns_between(&xmit, &receive))
        .collect();
    check_share("agent, xmit to receive", ours.len(), count)?;

    let theirs = median(&mut theirs).unwrap_or_default();
    let ours = median(&mut ours).unwrap_or_default();
    let diff = ours.abs_diff(theirs);
    let allowed = (theirs / 5).max(2_000);
    eprintln!(
        "{} -> {}: median agent {ours} ns, bpftrace {theirs} ns (difference {diff} ns, allowed {allowed} ns)",
        c1.name, h1.name
    );
    ensure!(
        diff <= allowed,
        "agent median {ours} ns and bpftrace median {theirs} ns differ by {diff} ns (> {allowed} ns)"
    );
    Ok(())
}

#[test]
fn nft_drop_shows_on_the_right_hop_with_reason() -> Result<()> {
    let s = scenario()?;
    let (dropped, passed) = (unique_port(), unique_port());
    let count = 100;
    let _rule = s.topo.nft_drop_udp(dropped)?;
    // One filter port for both flows: the dropped one goes to `dropped`, the
    // passing one comes from it (the rule matches destination ports only).
    let agent = start_agent(format!("port {dropped}"), 1)?;
    let (src, dst) = (
        s.topo.addr(Side::C1, Family::V4),
        s.topo.addr(Side::C2, Family::V4),
    );
    s.traffic.udp_send(
        s.ns(Side::C1),
        &UdpSend {
            count,
            rate: 200,
            ..UdpSend::to(dst, dropped)
        },
    )?;
    s.udp(
        Side::C1,
        &UdpSend {
            count,
            rate: 200,
            sport: Some(dropped),
            ..UdpSend::to(dst, passed)
        },
    )?;
    let out = s.stop(agent)?;

    // Up to the bridge the packet goes as usual, then the bridge's forward
    // hook drops it. The kernel frees it in __br_forward() after setting
    // skb->dev to the egress port, so kfree_skb sees the device <p>h2 (seen
    // with bpftrace on 6.18: `((struct sk_buff *)args->skbaddr)->dev->name`).
    let mut expected = s.topo.path(Side::C1)[..3].to_vec();
    expected.push(ExpectedHop::at(hooks::DROP, &s.topo.c2.peer));

    let journeys = udp_journeys(&out, src, dst, dropped);
    check_share("dropped flow", journeys.len(), count)?;
    check_each("dropped flow", &journeys, &expected)?;
    check_dropped_with(&journeys, "NETFILTER_DROP")?;
    ensure!(
        out.summary.journeys_dropped >= journeys.len() as u64,
        "{:?}",
        out.summary
    );

    let passing = udp_journeys(&out, src, dst, passed);
    check_share("passing flow", passing.len(), count)?;
    check_each("passing flow", &passing, &s.topo.path(Side::C1))?;
    for j in &passing {
        ensure!(
            j.end != JourneyEnd::Dropped && j.hops.iter().all(|h| h.drop.is_none()),
            "not dropped, yet: {}",
            j.describe()
        );
    }
    Ok(())
}

#[test]
fn filtered_traffic_produces_no_events() -> Result<()> {
    let s = scenario()?;
    let (watched, other) = (unique_port(), unique_port());
    let agent = start_agent(format!("port {watched}"), 1)?;
    let dst = s.topo.addr(Side::C2, Family::V4);
    s.udp(
        Side::C1,
        &UdpSend {
            count: 200,
            rate: 400,
            ..UdpSend::to(dst, other)
        },
    )?;
    let out = s.stop(agent)?;

    let k = &out.summary.kernel;
    ensure!(
        out.journeys.is_empty(),
        "{} journeys, the first: {}",
        out.journeys.len(),
        out.journeys[0].describe()
    );
    ensure!(
        k.emitted == 0,
        "kernel emitted {} events: {:?}",
        k.emitted,
        k
    );
    ensure!(k.filtered > 0, "kernel filtered nothing: {:?}", k);
    Ok(())
}

/// Regression (issue 7): veth's kfree_skb program took the literal 1 for
/// SKB_CONSUMED, which on 6.0 and 6.1 is SKB_DROP_REASON_NOT_SPECIFIED, so
/// every plain `kfree_skb()` drop vanished there. A veth frees a frame too
/// big for its peer's MTU with a plain `kfree_skb()` (`__dev_forward_skb`),
/// on 6.1 as on 6.18. Run on this host and in the 6.1 and 6.12 guests (VM tier).
#[test]
fn drop_without_a_specific_reason_is_reported() -> Result<()> {
    let s = scenario()?;
    let port = unique_port();
    let count = 20;
    let c1 = &s.topo.c1;
    vnt_tests::run(std::process::Command::new("ip").args([
        "-n",
        &s.topo.host.name,
        "link",
        "set",
        &c1.peer.name,
        "mtu",
        "1000",
    ]))?;

    let agent = start_agent(format!("port {port}"), 1)?;
    let (src, dst) = (c1.addr(Family::V4), s.topo.addr(Side::C2, Family::V4));
    s.traffic.udp_send(
        s.ns(Side::C1),
        &UdpSend {
            count,
            rate: 100,
            size: 1200,
            ..UdpSend::to(dst, port)
        },
    )?;
    let out = s.stop(agent)?;

    let what = "datagrams too big for the peer's MTU";
    let journeys = udp_journeys(&out, src, dst, port);
    check_share(what, journeys.len(), count)?;
    let expected = [
        ExpectedHop::at(hooks::XMIT, &c1.veth),
        ExpectedHop::at(hooks::DROP, &c1.veth),
    ];
    check_each(what, &journeys, &expected)?;
    check_dropped_with(&journeys, "NOT_SPECIFIED")
}

/// The default probe set (no `--probes`) is the smallest that still gives
/// whole journeys: every device crossing (xmit, receive) and drops, without
/// the opt-in backlog hop, which costs a third more program runs per packet.
#[test]
fn default_probes_give_whole_journeys_without_the_backlog_hop() -> Result<()> {
    let s = scenario()?;
    let port = unique_port();
    let count = 50;
    let agent = Agent::builder()
        .filter(format!("port {port}"))
        .default_probes()
        .start()?;
    let (src, dst) = (
        s.topo.addr(Side::C1, Family::V4),
        s.topo.addr(Side::C2, Family::V4),
    );
    s.udp(
        Side::C1,
        &UdpSend {
            count,
            rate: 200,
            ..UdpSend::to(dst, port)
        },
    )?;
    let out = s.stop(agent)?;

    let probes = &out.summary.plugins["veth"].probes;
    ensure!(
        probes.get("veth_rx").map(String::as_str) == Some("off (opt-in)"),
        "veth_rx should be off by default: {probes:?}"
    );
    let journeys = udp_journeys(&out, src, dst, port);
    check_share("default probes", journeys.len(), count)?;
    check_each("default probes", &journeys, &s.topo.default_path(Side::C1))?;
    Ok(())
}

/// The identity memo (ebpf/include/vnt/pipeline.h) lets a packet's later
/// hops on one CPU reuse its id; it must never hand one packet's id to
/// another. Two ways it could, both exercised here:
/// - skb reuse: a flood of distinct datagrams, where the kernel hands each
///   freed skb (and often its data) to the next one at the same address:
///   every datagram must have its own journey with exactly its own hops;
/// - a packet changed between hops: the bridge rewrites the destination port,
///   so from there on it is another identity (ADR 002): the hops before and
///   after must fall in two journeys, each under its own flow.
#[test]
fn identity_reuse_never_joins_two_packets() -> Result<()> {
    let s = scenario()?;
    let (flood, before, after) = (unique_port(), unique_port(), unique_port());
    let _rewrite = s.topo.nft_rewrite_udp_dport(before, after)?;
    let (src, dst) = (
        s.topo.addr(Side::C1, Family::V4),
        s.topo.addr(Side::C2, Family::V4),
    );
    let agent = start_agent(format!("src {src} and proto udp"), 1)?;
    let count = 2000;
    s.udp(
        Side::C1,
        &UdpSend {
            count,
            rate: 4000,
            ..UdpSend::to(dst, flood)
        },
    )?;
    let rewritten = 50;
    let recv = s.traffic.udp_recv(
        s.ns(Side::C2),
        dst,
        after,
        rewritten,
        Duration::from_secs(10),
    )?;
    s.traffic.udp_send(
        s.ns(Side::C1),
        &UdpSend {
            count: rewritten,
            rate: 200,
            ..UdpSend::to(dst, before)
        },
    )?;
    ensure!(
        recv.wait()? == rewritten,
        "the rewritten datagrams did not all arrive"
    );
    let out = s.stop(agent)?;

    let journeys = udp_journeys(&out, src, dst, flood);
    check_share("flood of distinct datagrams", journeys.len(), count)?;
    check_each(
        "flood of distinct datagrams",
        &journeys,
        &s.topo.path(Side::C1),
    )?;

    let path = s.topo.path(Side::C1);
    let head = udp_journeys(&out, src, dst, before);
    check_share("before the rewrite", head.len(), rewritten)?;
    check_each("before the rewrite", &head, &path[..3])?;
    let tail = udp_journeys(&out, src, dst, after);
    check_share("after the rewrite", tail.len(), rewritten)?;
    check_each("after the rewrite", &tail, &path[3..])?;
    Ok(())
}

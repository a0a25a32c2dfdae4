//! The harness itself, for real (root): a topology passes ping, UDP and TCP
//! both ways over IPv4 and IPv6, the nft drop rule drops only its port,
//! bpftrace sees the hops, and nothing of the topology survives its drop,
//! even when the test panics.

use anyhow::{ensure, Context, Result};
use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use vnt_tests::{
    bpftrace, exec_in, hooks, run, unique_port, Family, Side, TcpSend, Topology, Traffic, UdpSend,
};

fn traffic() -> Traffic {
    Traffic::new(env!("CARGO_BIN_EXE_vnt-traffic"))
}

/// Everything a topology owns that must be gone after it drops.
struct Footprint {
    prefix: String,
    netns: Vec<String>,
    inodes: Vec<u64>,
}

impl Footprint {
    fn of(topo: &Topology) -> Footprint {
        Footprint {
            prefix: topo.prefix.clone(),
            netns: topo.netns_names().iter().map(|s| s.to_string()).collect(),
            inodes: vec![topo.c1.netns.inode, topo.c2.netns.inode, topo.host.inode],
        }
    }

    fn assert_gone(&self) -> Result<()> {
        let listed = run(Command::new("ip").args(["netns", "list"]))?;
        for ns in &self.netns {
            ensure!(
                !Path::new("/run/netns").join(ns).exists(),
                "/run/netns/{ns} still exists"
            );
            ensure!(
                !listed.split_whitespace().any(|w| w == ns),
                "`ip netns list` still shows {ns}"
            );
        }
        // Links live inside the namespaces; none may have leaked into ours.
        let links = run(Command::new("ip").args(["-o", "link"]))?;
        ensure!(
            !links.contains(&self.prefix),
            "a link named {}* is in the root namespace:\n{links}",
            self.prefix
        );
        // No process holds one of the namespaces alive (lsns lists namespaces
        // by the processes in them).
        let lsns = run(Command::new("lsns").args(["-n", "-t", "net", "-o", "NS"]))?;
        let alive: HashSet<u64> = lsns
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            .collect();
        for inode in &self.inodes {
            ensure!(
                !alive.contains(inode),
                "netns inode {inode} is still held by a process"
            );
        }
        Ok(())
    }
}

fn ping(topo: &Topology, from: Side, family: Family) -> Result<()> {
    let dst = topo.addr(from.other(), family).to_string();
    let ns = &topo.container(from).netns.name;
    run(&mut exec_in(ns, "ping", ["-c1", "-W1", &dst]))
        .with_context(|| format!("ping {dst} from {ns} (is iputils-ping installed?)"))?;
    Ok(())
}

#[test]
fn topology_carries_traffic_and_leaves_nothing_behind() -> Result<()> {
    let _serial = vnt_tests::serial();
    vnt_tests::require_root();
    let topo = Topology::new()?;
    let footprint = Footprint::of(&topo);
    eprintln!("topology {topo:#?}");

    // Names, indexes and namespaces are what the agent will report.
    for link in [
        &topo.c1.veth,
        &topo.c1.peer,
        &topo.c2.veth,
        &topo.c2.peer,
        &topo.bridge,
    ] {
        ensure!(
            link.name.len() <= 15,
            "interface name {} too long",
            link.name
        );
        ensure!(
            link.ifindex > 1,
            "{} has ifindex {}",
            link.name,
            link.ifindex
        );
        let stat = run(Command::new("stat").args([
            "-L",
            "-c",
            "%i",
            &format!("/run/netns/{}", link.netns),
        ]))?;
        ensure!(
            stat.trim() == link.netns_inode.to_string(),
            "inode of {} is {stat}",
            link.netns
        );
    }
    let inodes: HashSet<u64> = footprint.inodes.iter().copied().collect();
    ensure!(
        inodes.len() == 3,
        "namespace inodes are not distinct: {inodes:?}"
    );
    ensure!(topo.c1.peer.netns == topo.host.name && topo.c2.peer.netns == topo.host.name);

    for family in [Family::V4, Family::V6] {
        for from in [Side::C1, Side::C2] {
            ping(&topo, from, family)?;
        }
    }

    // UDP both ways, both families: every datagram arrives.
    let tr = traffic();
    let port = unique_port();
    for family in [Family::V4, Family::V6] {
        for from in [Side::C1, Side::C2] {
            let to = from.other();
            let recv = tr.udp_recv(
                &topo.container(to).netns.name,
                topo.addr(to, family),
                port,
                200,
                Duration::from_secs(10),
            )?;
            let send = UdpSend {
                count: 200,
                rate: 2000,
                size: 100,
                ..UdpSend::to(topo.addr(to, family), port)
            };
            tr.udp_send(&topo.container(from).netns.name, &send)?;
            let got = recv.wait()?;
            ensure!(
                got == 200,
                "{family:?} {from:?}->{to:?}: received {got} of 200 datagrams"
            );
        }
    }

    // TCP: all bytes arrive; the sender returns only after the receiver has read them.
    for family in [Family::V4, Family::V6] {
        let recv = tr.tcp_recv(&topo.c2.netns.name, topo.addr(Side::C2, family), port)?;
        let send = TcpSend {
            dst: topo.addr(Side::C2, family),
            port,
            bytes: 1 << 20,
            chunk: 32 << 10,
            rate: 0,
        };
        tr.tcp_send(&topo.c1.netns.name, &send)?;
        let got = recv.wait()?;
        ensure!(
            got == 1 << 20,
            "{family:?} TCP: received {got} of {} bytes",
            1 << 20
        );
    }

    // A receiver left running is killed by the cleanup, not leaked.
    let _forgotten = vnt_tests::spawn_in(&topo.c2.netns.name, "sleep", ["600"])?;

    drop(topo);
    footprint.assert_gone()
}

#[test]
fn nft_drop_rule_drops_only_its_port() -> Result<()> {
    let _serial = vnt_tests::serial();
    vnt_tests::require_root();
    let topo = Topology::new()?;
    let tr = traffic();
    let (dropped, passed) = (unique_port(), unique_port());
    let dst: IpAddr = topo.addr(Side::C2, Family::V4);
    {
        let rule = topo.nft_drop_udp(dropped)?;
        let listing = rule.list()?;
        ensure!(
            listing.contains(&format!("udp dport {dropped} drop")),
            "{listing}"
        );
        for (port, want) in [(dropped, 0), (passed, 50)] {
            let recv = tr.udp_recv(&topo.c2.netns.name, dst, port, 50, Duration::from_secs(2))?;
            // From source port `dropped`: the rule matches destination ports only.
            let send = UdpSend {
                count: 50,
                rate: 1000,
                sport: Some(dropped),
                ..UdpSend::to(dst, port)
            };
            tr.udp_send(&topo.c1.netns.name, &send)?;
            let got = recv.wait()?;
            ensure!(got == want, "port {port}: received {got}, expected {want}");
        }
    }
    // The guard deleted its table.
    let ruleset = run(&mut exec_in(&topo.host.name, "nft", ["list", "ruleset"]))?;
    ensure!(
        !ruleset.contains("table bridge"),
        "table left behind:\n{ruleset}"
    );
    Ok(())
}

#[test]
fn bpftrace_sees_the_c1_to_bridge_hop() -> Result<()> {
    let _serial = vnt_tests::serial();
    vnt_tests::require_root();
    let topo = Topology::new()?;
    let tr = traffic();
    let port = unique_port();
    let dst = topo.addr(Side::C2, Family::V4);
    let script = bpftrace::hop_latency_script(
        hooks::XMIT,
        &topo.c1.veth.name,
        hooks::RECEIVE,
        &topo.c1.peer.name,
        Some(0x0800), // IPv4 only: not the containers' MLD reports
    );
    let (got, lines) = bpftrace::trace_during(&script, || {
        let recv = tr.udp_recv(&topo.c2.netns.name, dst, port, 100, Duration::from_secs(5))?;
        tr.udp_send(
            &topo.c1.netns.name,
            &UdpSend {
                rate: 500,
                ..UdpSend::to(dst, port)
            },
        )?;
        recv.wait()
    })?;
    ensure!(got == 100, "received {got} of 100");
    let mut deltas = bpftrace::numbers(&lines);
    ensure!(
        deltas.len() == 100,
        "bpftrace measured {} of 100 datagrams: {lines:?}",
        deltas.len()
    );
    let median = vnt_tests::median(&mut deltas).unwrap_or_default();
    eprintln!(
        "bpftrace: median {median} ns from xmit on {} to receive on {}",
        topo.c1.veth.name, topo.c1.peer.name
    );
    ensure!(
        median > 0 && median < 1_000_000,
        "implausible median {median} ns"
    );
    Ok(())
}

#[test]
fn topology_is_removed_when_a_test_panics() -> Result<()> {
    let _serial = vnt_tests::serial();
    vnt_tests::require_root();
    let (tx, rx) = std::sync::mpsc::channel();
    let panicked = std::thread::spawn(move || {
        let topo = Topology::new().expect("topology");
        tx.send(Footprint::of(&topo)).expect("send");
        panic!("deliberate panic with a live topology");
    })
    .join()
    .is_err();
    ensure!(panicked, "the thread should have panicked");
    rx.recv()?.assert_gone()
}

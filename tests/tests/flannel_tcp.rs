//! Issue 12, acceptance 3: TCP bulk through flannel's VXLAN overlay with
//! segmentation offload on the sender and GRO on the receiver's underlay.
//! Measures what share of host A's sampled data segments (their journeys)
//! reach host B's agent under the same trace id, in two set-ups:
//!
//! - `offloaded`: the defaults. The pod's TCP sends super-packets (TSO/GSO);
//!   nothing on the way needs them cut (veth and VXLAN carry GSO packets), so
//!   the same super-packet, with the same headers, arrives on host B.
//! - `segmented`: the sender's underlay device cannot carry GSO packets
//!   (`ethtool -K <underlay> gso off tso off tx-udp_tnl-segmentation off`):
//!   the stack cuts each super-packet into MTU-sized segments there, and
//!   host B's underlay merges them again with GRO (`gro on`), not
//!   necessarily along the same boundaries.
//!
//! Measured on the 6.18 machine (2 cores): offloaded, 58 of 58 sampled data
//! journeys of host A on host B (100%); segmented, 46 of 46 (100%): GRO on B
//! merged the segments of each super-packet back into one packet with the
//! super-packet's headers (same first sequence number, length, IP id, flags),
//! so it has the same id. The segments themselves, on A's underlay, are
//! packets with ids of their own (1575 sampled journeys of one `outer xmit`
//! each): they are not joined to their super-packet's journey (no
//! sequence-range join, docs/adr/018-flannel-tunnels.md). Where GRO merges
//! along other boundaries than the sender's, the merged packet's id differs
//! and it makes a trace of its own on host B.
//!
//! Privileged (real eBPF, namespaces).

use anyhow::{ensure, Result};
use std::collections::BTreeSet;
use vnt_tests::flannel::scenario::Setup;
use vnt_tests::flannel::Flannel;
use vnt_tests::netns::run;
use vnt_tests::{unique_port, Agent, TcpSend, Traffic};

fn ethtool(ns: &str, dev: &str, settings: &[&str]) -> Result<()> {
    run(std::process::Command::new("ip")
        .args(["netns", "exec", ns, "ethtool", "-K", dev])
        .args(settings))
    .map(drop)
}

/// What one bulk transfer gave.
struct Shares {
    /// Host A's sampled data journeys of the pod's packets (with `encap`).
    sent: usize,
    /// How many of them host B saw too (same trace id).
    joined: usize,
    /// Host A's journeys of the outer packet alone (segments cut after encap).
    outer_only: usize,
}

fn bulk(segmented: bool) -> Result<Shares> {
    let s = Setup::new(
        Flannel::vxlan()?,
        Traffic::new(env!("CARGO_BIN_EXE_vnt-traffic")),
    )?;
    let (a, b) = (&s.net.a, &s.net.b);
    ethtool(&b.host.name, &b.underlay.name, &["gro", "on"])?;
    if segmented {
        ethtool(
            &a.host.name,
            &a.underlay.name,
            &["gso", "off", "tso", "off", "tx-udp_tnl-segmentation", "off"],
        )?;
    }
    let port = unique_port();
    let agent = |node: &vnt_tests::flannel::Node| {
        Agent::builder()
            .plugins("veth,flannel")
            .sample(1, 8)
            .filter(format!(
                "{} and proto tcp and port {port}",
                node.netns_filter()
            ))
            .start()
    };
    let (agent_a, agent_b) = (agent(a)?, agent(b)?);
    let recv = s.traffic.tcp_recv(&b.pod.name, b.addr(), port)?;
    s.traffic.tcp_send(
        &a.pod.name,
        &TcpSend {
            dst: b.addr(),
            port,
            bytes: 16 << 20,
            chunk: 1 << 16,
            rate: 0,
        },
    )?;
    recv.wait()?;
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (out_a, out_b) = (agent_a.stop()?, agent_b.stop()?);
    // Data segments from A to B (not the pure ACKs of the other way).
    let data = |j: &&vnt_tests::Journey| j.flow.dport == port && j.hops.iter().any(|h| h.len > 100);
    let at_a: Vec<&String> = out_a
        .journeys
        .iter()
        .filter(data)
        .filter(|j| j.hops.iter().any(|h| h.hook == "flannel:encap"))
        .map(|j| &j.trace_id)
        .collect();
    let at_b: BTreeSet<&String> = out_b
        .journeys
        .iter()
        .filter(data)
        .map(|j| &j.trace_id)
        .collect();
    let joined = at_a.iter().filter(|id| at_b.contains(*id)).count();
    let outer_only = out_a
        .journeys
        .iter()
        .filter(data)
        .filter(|j| j.hops.iter().all(|h| h.hook == "flannel:outer_xmit"))
        .count();
    let lens = |out: &vnt_tests::AgentOutput| {
        let mut l: Vec<u32> = out
            .journeys
            .iter()
            .filter(data)
            .filter_map(|j| j.hops.iter().map(|h| h.len).max())
            .collect();
        l.sort_unstable();
        (
            l.len(),
            l.get(l.len() / 2).copied().unwrap_or(0),
            l.last().copied().unwrap_or(0),
        )
    };
    eprintln!(
        "{}: host A {} sampled data journeys, {} of them on host B too ({:.1}%), \
         {outer_only} of the outer packet alone; journeys (count, median, max IP length): \
         A {:?}, B {:?}",
        if segmented { "segmented" } else { "offloaded" },
        at_a.len(),
        joined,
        100.0 * joined as f64 / at_a.len().max(1) as f64,
        lens(&out_a),
        lens(&out_b)
    );
    ensure!(!at_a.is_empty(), "no data journeys on host A");
    Ok(Shares {
        sent: at_a.len(),
        joined,
        outer_only,
    })
}

#[test]
fn tcp_bulk_with_offloads_joins_across_hosts() -> Result<()> {
    let _serial = vnt_tests::serial();
    vnt_tests::require_root();
    // Offloaded: the super-packet crosses whole, every journey joins.
    let o = bulk(false)?;
    ensure!(
        o.joined * 100 >= o.sent * 95 && o.outer_only == 0,
        "offloaded: {} of {} data journeys joined across the hosts, {} outer-only",
        o.joined,
        o.sent,
        o.outer_only
    );
    // Segmented on A, GRO on B: B's merged packets still carry the
    // super-packets' ids as long as GRO merges along the same boundaries
    // (it did for every one here); the segments are journeys of their own.
    let s = bulk(true)?;
    ensure!(
        s.joined * 100 >= s.sent * 80,
        "segmented: {} of {} data journeys joined across the hosts",
        s.joined,
        s.sent
    );
    ensure!(
        s.outer_only > s.sent,
        "segmented: the underlay should carry more segments ({}) than super-packets ({})",
        s.outer_only,
        s.sent
    );
    Ok(())
}

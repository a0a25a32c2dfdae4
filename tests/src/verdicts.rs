//! Checks shared by the verdict scenarios (issue #10), between network
//! namespaces (`tests/tests/verdicts.rs`) and between Docker containers
//! (`tests/tests/docker_verdicts.rs`): the same traffic, the same verdicts.

use std::net::IpAddr;

use anyhow::{ensure, Result};

use crate::{AgentOutput, Journey, JourneyEnd};

/// One line per journey: its delivery, reader and hops.
pub fn describe_all(js: &[&Journey]) -> String {
    js.iter()
        .map(|j| format!("  {:?} {:?} {}", j.delivered_to, j.process, j.describe()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The reading process's name of a journey delivered to a socket.
pub fn reader(j: &Journey) -> Option<&str> {
    j.process.as_ref().and_then(|p| p.comm.as_deref())
}

/// The drop reason on a journey's last hop.
pub fn drop_reason(j: &Journey) -> Option<&str> {
    j.hops
        .last()
        .and_then(|h| h.drop.as_ref())
        .map(|d| d.reason.as_str())
}

/// Three answered pings from `a` to `b`: every ICMP journey is delivered
/// (the requests, the replies, the port unreachables `b` sends back), and
/// the three echo replies (84 bytes: ping's 56-byte payload) are delivered
/// to ping's socket. Returns (every ICMP journey, the echo replies).
pub fn check_answered_pings(
    out: &AgentOutput,
    a: IpAddr,
    b: IpAddr,
) -> Result<(Vec<&Journey>, Vec<&Journey>)> {
    let icmp: Vec<&Journey> = out
        .journeys
        .iter()
        .filter(|j| j.flow.proto == "icmp")
        .collect();
    let replies: Vec<&Journey> = icmp
        .iter()
        .copied()
        .filter(|j| j.flow.src == b && j.flow.dst == a && j.len == 84)
        .collect();
    ensure!(
        replies.len() == 3,
        "expected the 3 echo replies, got {} ICMP journeys:\n{}",
        icmp.len(),
        describe_all(&icmp)
    );
    for j in &icmp {
        ensure!(
            j.end == JourneyEnd::Delivered,
            "an answered ping is not {:?}:\n{}",
            j.end,
            describe_all(&icmp)
        );
    }
    for j in &replies {
        ensure!(
            j.delivered_to.as_deref() == Some("socket") && reader(j) == Some("ping"),
            "an echo reply must be delivered to ping's socket: {:?} {:?} {}\nall ICMP:\n{}",
            j.delivered_to,
            reader(j),
            j.describe(),
            describe_all(&icmp)
        );
    }
    Ok((icmp, replies))
}

/// Three UDP datagrams to `closed_port` dropped with `NO_SOCKET`, three to
/// `nft_port` dropped with `NETFILTER_DROP`, and no other drop; the verdict
/// counts add up to the journeys.
pub fn check_only_real_drops(out: &AgentOutput, closed_port: u16, nft_port: u16) -> Result<()> {
    for (port, reason) in [(closed_port, "NO_SOCKET"), (nft_port, "NETFILTER_DROP")] {
        let js: Vec<&Journey> = out
            .journeys
            .iter()
            .filter(|j| j.flow.proto == "udp" && j.flow.dport == port)
            .collect();
        ensure!(
            js.len() == 3
                && js
                    .iter()
                    .all(|j| j.end == JourneyEnd::Dropped && drop_reason(j) == Some(reason)),
            "3 datagrams to port {port} must be dropped with {reason}:\n{}",
            describe_all(&js)
        );
    }
    let dropped = out
        .journeys
        .iter()
        .filter(|j| j.end == JourneyEnd::Dropped)
        .count() as u64;
    ensure!(
        dropped == 6 && out.summary.journeys_dropped == 6,
        "exactly the 6 real drops: {dropped} dropped journeys, summary {:?}",
        out.summary
    );
    ensure!(
        out.summary.journeys
            == out.summary.journeys_delivered
                + out.summary.journeys_forwarded
                + out.summary.journeys_dropped
                + out.summary.journeys_unknown,
        "the verdict counts add up to the journeys: {:?}",
        out.summary
    );
    Ok(())
}

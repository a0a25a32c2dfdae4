//! Issue 12, acceptance 1 and 5: two "hosts" joined by flannel's VXLAN
//! backend (tests/src/flannel.rs), one agent per host with the veth and
//! flannel plugins, both exporting to one Jaeger.
//!
//! 1. Each datagram from pod A to pod B is one trace holding both hosts'
//!    spans: pod A's veth, the bridge, the encapsulation with the outer
//!    packet on the underlay nested in it, and on host B the outer packet
//!    nested in the decapsulation, the bridge and pod B's veth.
//! 5. A datagram dropped on host B, by a VXLAN FDB miss (B forwards it into
//!    its overlay toward a subnet whose VTEP it has no FDB entry for) or by
//!    an nftables rule, shows the drop and its reason on the trace that
//!    started on host A.
//!
//! Privileged (real eBPF, namespaces); Jaeger as in otel_jaeger.rs.

use anyhow::{ensure, Context, Result};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};
use vnt_tests::flannel::scenario::{journeys_to, one_trace_per_packet, Setup};
use vnt_tests::flannel::Flannel;
use vnt_tests::journey::ExpectedHop;
use vnt_tests::netns::run;
use vnt_tests::otel::{metric_sum, OtelCol};
use vnt_tests::{unique_port, Traffic, UdpSend};

fn setup() -> Result<Setup> {
    Setup::new(
        Flannel::vxlan()?,
        Traffic::new(env!("CARGO_BIN_EXE_vnt-traffic")),
    )
}

/// The reasons a VXLAN FDB miss may carry here: the name moved, VXLAN_NO_REMOTE
/// (6.10) then NO_TX_TARGET (6.18), and a kernel with neither in its
/// `enum skb_drop_reason` (Debian's 6.1) says NOT_SPECIFIED.
fn fdb_miss_reasons() -> Vec<&'static str> {
    let btf = std::fs::read("/sys/kernel/btf/vmlinux").unwrap_or_default();
    let known = |n: &str| {
        let n = format!("SKB_DROP_REASON_{n}\0");
        btf.windows(n.len()).any(|w| w == n.as_bytes())
    };
    let mut r: Vec<&str> = ["VXLAN_NO_REMOTE", "NO_TX_TARGET"]
        .into_iter()
        .filter(|n| known(n))
        .collect();
    if r.is_empty() {
        r.push("NOT_SPECIFIED");
    }
    r
}

#[test]
fn one_trace_per_packet_through_the_vxlan_overlay() -> Result<()> {
    let _serial = vnt_tests::serial();
    vnt_tests::require_root();
    one_trace_per_packet(&setup()?, 50)
}

/// A datagram that host B cannot deliver: `cause` makes B drop it, and the
/// drop must show on the trace that started on host A, with `reason`, and
/// be counted in flannel's `drops` on B's overlay device, VNI 1 (both
/// drops here free the inner packet while it is on B's VXLAN device: on
/// its transmit for the FDB miss, in the forward hook after it came out of
/// the device for the firewall).
fn dropped_on_b(
    s: &Setup,
    to: Ipv4Addr,
    reasons: &[&str],
    cause: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let (a, b) = (&s.net.a, &s.net.b);
    let port = unique_port();
    cause()?;
    let col = OtelCol::start(s.jaeger.ports.otlp_grpc).context("the Collector must start")?;
    let (agent_a, agent_b) = s.agents_via(port, Some(&col))?;
    let count = 10;
    s.traffic.udp_send(
        &a.pod.name,
        &UdpSend {
            count,
            rate: 100,
            ..UdpSend::to(IpAddr::V4(to), port)
        },
    )?;
    std::thread::sleep(Duration::from_millis(500));
    let (out_a, out_b) = (agent_a.stop()?, agent_b.stop()?);
    let (ja, jb) = (journeys_to(&out_a, port), journeys_to(&out_b, port));
    ensure!(
        ja.len() as u64 == count,
        "host A: {} journeys for {count} datagrams",
        ja.len()
    );
    for (id, j) in &jb {
        ensure!(ja.contains_key(id), "host B's journey {id} is not host A's");
        let d = j.hops.last().and_then(|h| h.drop.as_ref());
        ensure!(
            d.is_some_and(|d| reasons.contains(&d.reason.as_str())),
            "host B: the datagram should end dropped with {reasons:?}: {}",
            j.describe()
        );
        j.check_hops_in_order(&[
            ExpectedHop::at("flannel:outer_receive", &b.underlay),
            ExpectedHop::at("flannel:decap", &b.overlay),
        ])
        .map_err(|e| anyhow::anyhow!("host B: {e}"))?;
    }
    ensure!(
        jb.len() as u64 == count,
        "host B: {} journeys for {count} datagrams",
        jb.len()
    );
    let want = ja.len();
    ensure!(s.wait_traces(want)? >= want, "traces missing in Jaeger");
    // Through the Collector's batches, one host's spans may land after the
    // other's: wait for both (the checks below say which is missing).
    let deadline = Instant::now() + Duration::from_secs(15);
    for id in ja.keys() {
        let both = |spans: &[vnt_tests::otel::OSpan]| {
            let on = |x: &vnt_tests::otel::OSpan, host: &String| {
                x.resource.get("host.name") == Some(host)
            };
            spans.iter().any(|x| on(x, &s.name_a))
                && spans.iter().any(|x| {
                    on(x, &s.name_b) && x.events.iter().any(|e| e.name == "packet dropped")
                })
        };
        let mut spans = s.jaeger.trace_otlp(id)?;
        while !both(&spans) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(250));
            spans = s.jaeger.trace_otlp(id)?;
        }
        let from_a = spans
            .iter()
            .any(|x| x.resource.get("host.name") == Some(&s.name_a));
        let drop = spans
            .iter()
            .filter(|x| x.resource.get("host.name") == Some(&s.name_b))
            .find(|x| x.events.iter().any(|e| e.name == "packet dropped"))
            .with_context(|| format!("trace {id}: no drop from host B"))?;
        ensure!(from_a, "trace {id}: no spans from host A");
        let ev = drop
            .events
            .iter()
            .find(|e| e.name == "packet dropped")
            .expect("found above");
        ensure!(
            ev.attr("vnt.drop.reason")
                .is_some_and(|r| reasons.contains(&r.as_str())),
            "trace {id}: drop event {:?}",
            ev
        );
    }

    // The agents stopped: their last export holds the final counts.
    let want = [
        ("host_name", s.name_b.as_str()),
        ("vnt_flannel_device", b.overlay.name.as_str()),
        ("vnt_flannel_vni", "1"),
    ];
    let deadline = Instant::now() + Duration::from_secs(15);
    let counted = loop {
        let samples = col.scrape()?;
        let v = metric_sum(&samples, "vnt_flannel_drops_total", &want);
        if v == Some(count as f64) || Instant::now() > deadline {
            let all: Vec<_> = samples
                .into_iter()
                .filter(|x| x.name == "vnt_flannel_drops_total")
                .map(|x| (x.labels, x.value))
                .collect();
            break (v, all);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    ensure!(
        counted.0 == Some(count as f64),
        "flannel drops on host B {want:?}: {:?}; every series: {:?}",
        counted.0,
        counted.1
    );
    eprintln!(
        "{count} datagrams dropped on host B ({reasons:?}), each on its trace from host A, \
         counted in vnt.flannel.drops for {} VNI 1",
        b.overlay.name
    );
    Ok(())
}

#[test]
fn drops_on_the_far_host_show_on_the_senders_trace() -> Result<()> {
    let _serial = vnt_tests::serial();
    vnt_tests::require_root();
    let s = setup()?;
    let (a, b) = (&s.net.a, &s.net.b);

    // A VXLAN FDB miss on host B: a third host's subnet that A routes via B
    // and B routes into its overlay, with the neighbour entry flannel would
    // install but no FDB entry (the third host's lease vanished).
    let o = b.subnet.octets();
    let gone = Ipv4Addr::new(o[0], o[1], o[2] ^ 0x80, 0);
    let target = Ipv4Addr::new(o[0], o[1], o[2] ^ 0x80, 2);
    dropped_on_b(&s, target, &fdb_miss_reasons(), || {
        let ah = a.host.name.as_str();
        let bh = b.host.name.as_str();
        let net = format!("{gone}/24");
        let ip = |args: &[&str]| run(std::process::Command::new("ip").args(args)).map(drop);
        ip(&[
            "-n",
            ah,
            "route",
            "add",
            &net,
            "via",
            &b.subnet.to_string(),
            "dev",
            &a.overlay.name,
            "onlink",
        ])?;
        ip(&[
            "-n",
            bh,
            "route",
            "add",
            &net,
            "via",
            &gone.to_string(),
            "dev",
            &b.overlay.name,
            "onlink",
        ])?;
        ip(&[
            "-n",
            bh,
            "neigh",
            "add",
            &gone.to_string(),
            "lladdr",
            "02:00:00:00:00:99",
            "dev",
            &b.overlay.name,
            "nud",
            "permanent",
        ])
    })?;

    // A firewall on host B: nftables drops the pods' datagrams it forwards.
    let table = format!("{}drop", s.net.prefix);
    dropped_on_b(&s, b.pod_ip, &["NETFILTER_DROP"], || {
        let bh = b.host.name.as_str();
        let nft = |args: &[&str]| {
            run(std::process::Command::new("ip")
                .args(["netns", "exec", bh, "nft"])
                .args(args))
            .map(drop)
        };
        nft(&["add", "table", "inet", &table])?;
        nft(&[
            "add",
            "chain",
            "inet",
            &table,
            "vntfwd",
            "{ type filter hook forward priority 0; }",
        ])?;
        nft(&[
            "add",
            "rule",
            "inet",
            &table,
            "vntfwd",
            "ip",
            "daddr",
            &b.pod_ip.to_string(),
            "drop",
        ])
    })?;
    Ok(())
}

/// `[tunnels]` reaches the kernel: with no VXLAN port configured, the outer
/// packet is a packet of its own (UDP to 8472, outside the `port` filter),
/// so host A's journeys of the pod's datagrams have no outer hop; with the
/// default, every one has.
#[test]
fn tunnel_ports_are_the_agents_setting() -> Result<()> {
    let _serial = vnt_tests::serial();
    vnt_tests::require_root();
    let net = Flannel::vxlan()?;
    let traffic = Traffic::new(env!("CARGO_BIN_EXE_vnt-traffic"));
    let (a, b) = (&net.a, &net.b);
    for (vxlan_ports, want_outer) in [("", false), ("8472", true)] {
        let port = unique_port();
        let agent = vnt_tests::otel::with_env(
            vnt_tests::Agent::builder()
                .plugins("veth,flannel")
                .filter(format!("{} and port {port}", a.netns_filter())),
            &[("VNT_TUNNELS__VXLAN", vxlan_ports)],
        )?
        .start()?;
        let count = 10;
        let recv = traffic.udp_recv(&b.pod.name, b.addr(), port, count, Duration::from_secs(10))?;
        traffic.udp_send(
            &a.pod.name,
            &UdpSend {
                count,
                rate: 100,
                ..UdpSend::to(b.addr(), port)
            },
        )?;
        ensure!(recv.wait()? == count, "datagrams lost in the overlay");
        std::thread::sleep(Duration::from_millis(300));
        let out = agent.stop()?;
        let js = journeys_to(&out, port);
        ensure!(
            js.len() as u64 == count,
            "tunnels.vxlan = {vxlan_ports:?}: {} journeys for {count} datagrams",
            js.len()
        );
        let outer = ExpectedHop::at("flannel:outer_xmit", &a.underlay);
        for j in js.values() {
            ensure!(
                j.hop(&outer).is_some() == want_outer,
                "tunnels.vxlan = {vxlan_ports:?}: {}",
                j.describe()
            );
        }
    }
    Ok(())
}

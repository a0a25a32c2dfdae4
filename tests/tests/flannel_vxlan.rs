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

use anyhow::{bail, ensure, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};
use vnt_tests::flannel::{Flannel, Node, Overlay, VXLAN_PORT};
use vnt_tests::journey::ExpectedHop;
use vnt_tests::netns::run;
use vnt_tests::otel::{self, Jaeger, OSpan};
use vnt_tests::{unique_port, Agent, AgentOutput, Journey, Traffic, UdpSend};

fn agent_for(node: &Node, name: &str, port: u16, jaeger: &Jaeger) -> Result<Agent> {
    otel::with_env(
        Agent::builder()
            .plugins("veth,flannel")
            .filter(format!("{} and port {port}", node.netns_filter()))
            .arg("--otlp-endpoint")
            .arg(jaeger.otlp_grpc_url()),
        &[
            ("OTEL_RESOURCE_ATTRIBUTES", &format!("host.name={name}")),
            ("OTEL_METRICS_EXPORTER", "none"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    )?
    .start()
    .with_context(|| format!("agent for {name} must start"))
}

fn journeys_to(out: &AgentOutput, port: u16) -> BTreeMap<String, &Journey> {
    out.journeys
        .iter()
        .filter(|j| j.flow.dport == port)
        .map(|j| (j.trace_id.clone(), j))
        .collect()
}

/// Spans of one trace by their `vnt.hook` attribute, for one host.
fn spans_of<'a>(spans: &'a [OSpan], host: &str, hook: &str) -> Vec<&'a OSpan> {
    spans
        .iter()
        .filter(|s| s.resource.get("host.name").map(String::as_str) == Some(host))
        .filter(|s| s.attr("vnt.hook").as_deref() == Some(hook))
        .collect()
}

/// The one span of `hook` from `host` in a trace.
fn one_span<'a>(spans: &'a [OSpan], id: &str, host: &str, hook: &str) -> Result<&'a OSpan> {
    match spans_of(spans, host, hook)[..] {
        [s] => Ok(s),
        ref other => bail!("trace {id}: {} `{hook}` spans from {host}", other.len()),
    }
}

struct Setup {
    net: Flannel,
    traffic: Traffic,
    jaeger: Jaeger,
    name_a: String,
    name_b: String,
}

impl Setup {
    fn new() -> Result<Setup> {
        let net = Flannel::new(Overlay::Vxlan)?;
        let jaeger = Jaeger::start().context("Jaeger must start")?;
        Ok(Setup {
            name_a: format!("{}-node-a", net.prefix),
            name_b: format!("{}-node-b", net.prefix),
            net,
            traffic: Traffic::new(env!("CARGO_BIN_EXE_vnt-traffic")),
            jaeger,
        })
    }

    fn agents(&self, port: u16) -> Result<(Agent, Agent)> {
        Ok((
            agent_for(&self.net.a, &self.name_a, port, &self.jaeger)?,
            agent_for(&self.net.b, &self.name_b, port, &self.jaeger)?,
        ))
    }

    /// Waits until Jaeger holds `want` traces of the agents (20 s at most).
    fn wait_traces(&self, want: usize) -> Result<usize> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let t = self.jaeger.search("vnt-agent", 2000)?;
            if t.len() >= want || Instant::now() > deadline {
                return Ok(t.len());
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

#[test]
fn one_trace_per_packet_through_the_vxlan_overlay() -> Result<()> {
    let _serial = vnt_tests::serial();
    vnt_tests::require_root();
    let s = Setup::new()?;
    let (a, b) = (&s.net.a, &s.net.b);
    let port = unique_port();
    let (agent_a, agent_b) = s.agents(port)?;

    let count = 50;
    let recv = s
        .traffic
        .udp_recv(&b.pod.name, b.addr(), port, count, Duration::from_secs(10))?;
    s.traffic.udp_send(
        &a.pod.name,
        &UdpSend {
            count,
            rate: 200,
            ..UdpSend::to(b.addr(), port)
        },
    )?;
    ensure!(recv.wait()? == count, "datagrams lost in the overlay");
    std::thread::sleep(Duration::from_millis(500));
    let (out_a, out_b) = (agent_a.stop()?, agent_b.stop()?);

    let (path_a, path_b) = s.net.path_a_to_b();
    let (ja, jb) = (journeys_to(&out_a, port), journeys_to(&out_b, port));
    let encap = ExpectedHop::at("flannel:outer_xmit", &a.underlay);
    let decap = ExpectedHop::at("flannel:outer_receive", &b.underlay);
    for (what, journeys, path, outer, parent, node, peer) in [
        ("host A", &ja, &path_a, &encap, "flannel:encap", a, b),
        ("host B", &jb, &path_b, &decap, "flannel:decap", b, a),
    ] {
        ensure!(
            journeys.len() as u64 >= count * 99 / 100,
            "{what}: {} journeys for {count} datagrams",
            journeys.len()
        );
        for j in journeys.values() {
            j.check_hops_in_order(path)
                .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
            ensure!(
                j.flow.src == a.addr() && j.flow.dst == b.addr(),
                "{what}: the journey's flow is the inner packet's: {}",
                j.describe()
            );
            // The outer packet: a substep of the overlay hop, with its own
            // addresses, port and VNI.
            let o = j.hop(outer).context("no outer hop")?;
            ensure!(
                o.parent_hook.as_deref() == Some(parent),
                "{what}: the outer packet's hop nests in {:?}, not {parent}",
                o.parent_hook
            );
            let attr = |k: &str| o.attrs.get(k).cloned().unwrap_or_default();
            let (src, dst) = if what == "host A" {
                (node.underlay_ip, peer.underlay_ip)
            } else {
                (peer.underlay_ip, node.underlay_ip)
            };
            ensure!(
                attr("vnt.flannel.vni") == 1
                    && attr("vnt.flannel.outer.destination.port") == u64::from(VXLAN_PORT)
                    && attr("vnt.flannel.outer.source.address") == src.to_string()
                    && attr("vnt.flannel.outer.destination.address") == dst.to_string(),
                "{what}: outer hop attributes {:?}",
                o.attrs
            );
        }
    }
    let ids_a: BTreeSet<&String> = ja.keys().collect();
    let ids_b: BTreeSet<&String> = jb.keys().collect();
    ensure!(
        ids_a == ids_b,
        "the agents disagree on trace ids through the overlay: {} only on A, {} only on B",
        ids_a.difference(&ids_b).count(),
        ids_b.difference(&ids_a).count()
    );

    let traces = s.wait_traces(ids_a.len())?;
    ensure!(
        traces == ids_a.len(),
        "{traces} traces in Jaeger for {} packets",
        ids_a.len()
    );
    for id in &ids_a {
        let spans = s.jaeger.trace_otlp(id)?;
        for (host, overlay_hook, outer_hook) in [
            (&s.name_a, "flannel:encap", "flannel:outer_xmit"),
            (&s.name_b, "flannel:decap", "flannel:outer_receive"),
        ] {
            let overlay = one_span(&spans, id, host, overlay_hook)?;
            let outer = one_span(&spans, id, host, outer_hook)?;
            ensure!(
                outer.parent_span_id == overlay.span_id,
                "trace {id}: {host}'s `{}` is a child of {}, not of `{}` ({})",
                outer.name,
                outer.parent_span_id,
                overlay.name,
                overlay.span_id
            );
            ensure!(
                !overlay.is_root() && !outer.is_root(),
                "trace {id}: {host}'s overlay spans are hops under the root"
            );
        }
        for host in [&s.name_a, &s.name_b] {
            let roots = spans
                .iter()
                .filter(|x| x.resource.get("host.name") == Some(host) && x.is_root())
                .count();
            ensure!(roots == 1, "trace {id}: {roots} roots from {host}");
        }
    }
    eprintln!(
        "{count} datagrams -> {traces} traces with encap/decap and the outer packet nested on both hosts"
    );
    Ok(())
}

/// A datagram that host B cannot deliver: `cause` makes B drop it, and the
/// drop must show on the trace that started on host A, with `reason`.
fn dropped_on_b(
    s: &Setup,
    to: Ipv4Addr,
    reasons: &[&str],
    cause: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let (a, b) = (&s.net.a, &s.net.b);
    let port = unique_port();
    cause()?;
    let (agent_a, agent_b) = s.agents(port)?;
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
    for id in ja.keys() {
        let spans = s.jaeger.trace_otlp(id)?;
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
    eprintln!("{count} datagrams dropped on host B ({reasons:?}), each on its trace from host A");
    Ok(())
}

#[test]
fn drops_on_the_far_host_show_on_the_senders_trace() -> Result<()> {
    let _serial = vnt_tests::serial();
    vnt_tests::require_root();
    let s = Setup::new()?;
    let (a, b) = (&s.net.a, &s.net.b);

    // A VXLAN FDB miss on host B: a third host's subnet that A routes via B
    // and B routes into its overlay, with the neighbour entry flannel would
    // install but no FDB entry (the third host's lease vanished).
    let o = b.subnet.octets();
    let gone = Ipv4Addr::new(o[0], o[1], o[2] ^ 0x80, 0);
    let target = Ipv4Addr::new(o[0], o[1], o[2] ^ 0x80, 2);
    // The reason's name moved: VXLAN_NO_REMOTE (6.10), NO_TX_TARGET (6.18).
    dropped_on_b(&s, target, &["VXLAN_NO_REMOTE", "NO_TX_TARGET"], || {
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

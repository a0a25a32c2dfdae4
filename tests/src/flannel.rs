//! Two "hosts" joined the way flannel joins Kubernetes nodes: each host has
//! a pod on a bridge (`cni0`) and an overlay device, and the hosts share an
//! underlay link. Between them, pod packets travel inside outer UDP packets.
//!
//! ```text
//!        host A (<p>-ah)                                   host B (<p>-bh)
//!  <p>-ap                                                                   <p>-bp
//!  <p>ap ─veth─ <p>ah ─[<p>abr]  <p>av (overlay)     (overlay) <p>bv  [<p>bbr]─ <p>bh ─veth─ <p>bp
//!  10.x.A.2         10.x.A.1/24  10.x.A.0/32            10.x.B.0/32  10.x.B.1/24        10.x.B.2
//!                                 <p>aw ═══ underlay 172.31.y.1 ⇄ .2 ═══ <p>bw
//! ```
//!
//! [`Overlay::Vxlan`] is flannel's `vxlan` backend: `<p>av` is a VXLAN
//! device (VNI 1, port 8472, no learning) with flannel's static entries: a
//! /24 route to the other pod subnet via the other host's VTEP address
//! (`onlink`), a permanent neighbour entry for that address, and an FDB
//! entry sending that MAC to the other host's underlay address.
//! [`Overlay::Udp`] is its `udp` backend: `<p>av` is a TUN device, and a
//! forwarder in the test ([`crate::tun_forwarder`]) reads each packet from
//! it and sends it as a UDP datagram from and to port 8285, and writes what
//! it receives into its TUN device (`src/bin/vnt-tun-forwarder.rs`).
//!
//! Quiet (static neighbours, IPv6 off) and deleted on drop.

use crate::journey::ExpectedHop;
use crate::netns::ip;
use crate::topology::{Link, Netns};
use crate::two_hosts::{link, netns, sysctl, Cleanup};
use anyhow::Result;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};

/// flannel's VXLAN port.
pub const VXLAN_PORT: u16 = 8472;
/// flannel's UDP backend port.
pub const UDP_PORT: u16 = 8285;

/// Which flannel backend joins the hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlay {
    /// `vxlan`: a VXLAN device per host.
    Vxlan,
    /// `udp`: a TUN device per host and a forwarder.
    Udp,
}

/// One flannel host.
#[derive(Debug, Clone)]
pub struct Node {
    /// The pod's namespace.
    pub pod: Netns,
    /// The host's namespace (bridge, overlay device, underlay link).
    pub host: Netns,
    /// The pod's veth.
    pub pod_veth: Link,
    /// Its peer, a port of the bridge.
    pub peer: Link,
    /// The bridge (`cni0`).
    pub bridge: Link,
    /// The overlay device (`flannel.1` / `flannel0`).
    pub overlay: Link,
    /// The underlay link toward the other host.
    pub underlay: Link,
    /// The pod's address.
    pub pod_ip: Ipv4Addr,
    /// The host's underlay address.
    pub underlay_ip: Ipv4Addr,
    /// The host's pod subnet, `10.x.s.0`/24.
    pub subnet: Ipv4Addr,
}

impl Node {
    /// `netns <pod>,<host>`: an agent restricted to this host.
    pub fn netns_filter(&self) -> String {
        format!("netns {},{}", self.pod.inode, self.host.inode)
    }

    /// The pod's address.
    pub fn addr(&self) -> IpAddr {
        IpAddr::V4(self.pod_ip)
    }
}

/// Two flannel hosts. Dropping it deletes everything.
#[derive(Debug)]
pub struct Flannel {
    /// Unique prefix of every name.
    pub prefix: String,
    /// The backend.
    pub overlay: Overlay,
    pub a: Node,
    pub b: Node,
    /// The UDP backend's forwarders, one per host.
    forwarders: Vec<Child>,
    _cleanup: Cleanup,
}

impl Drop for Flannel {
    fn drop(&mut self) {
        for f in &mut self.forwarders {
            let _ = f.kill();
            let _ = f.wait();
        }
    }
}

impl Flannel {
    /// Two hosts joined by flannel's VXLAN backend.
    pub fn vxlan() -> Result<Flannel> {
        Flannel::new(Overlay::Vxlan, None)
    }

    /// Two hosts joined by flannel's UDP backend, `forwarder` being the
    /// `vnt-tun-forwarder` binary (`env!("CARGO_BIN_EXE_vnt-tun-forwarder")`).
    pub fn udp(forwarder: &Path) -> Result<Flannel> {
        Flannel::new(Overlay::Udp, Some(forwarder))
    }

    fn new(overlay: Overlay, forwarder: Option<&Path>) -> Result<Flannel> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        let (prefix, n) = loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let prefix = format!("vf{pid:x}x{n:x}");
            let taken = ["ap", "ah", "bh", "bp"].iter().any(|s| {
                Path::new("/run/netns")
                    .join(format!("{prefix}-{s}"))
                    .exists()
            });
            if !taken {
                break (prefix, n);
            }
        };
        assert!(prefix.len() + 3 <= 15, "prefix {prefix} too long");
        let x = 150 + (pid % 50) as u8;
        let y = (n % 128) as u8;
        let mut net = build(prefix, overlay, x, y)?;
        if let Some(bin) = forwarder {
            let runs: Vec<(String, [String; 3])> = [(&net.a, &net.b), (&net.b, &net.a)]
                .iter()
                .map(|(me, peer)| {
                    (
                        me.host.name.clone(),
                        [
                            me.overlay.name.clone(),
                            me.underlay_ip.to_string(),
                            peer.underlay_ip.to_string(),
                        ],
                    )
                })
                .collect();
            for (ns, args) in runs {
                let mut child = crate::netns::spawn_in(&ns, bin, args)?;
                // It prints `ready` once attached and bound.
                let mut line = String::new();
                let stdout = child.stdout.take().expect("stdout is piped");
                std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
                net.forwarders.push(child);
                anyhow::ensure!(
                    line.trim() == "ready",
                    "vnt-tun-forwarder in {ns} did not start"
                );
            }
        }
        Ok(net)
    }

    /// What a packet from A's pod to B's pod crosses, as (host A's hops,
    /// host B's hops), the overlay's included; each side's outer-packet
    /// substeps are checked apart (they nest under encap and decap).
    pub fn path_a_to_b(&self) -> (Vec<ExpectedHop>, Vec<ExpectedHop>) {
        let (a, b) = (&self.a, &self.b);
        (
            vec![
                ExpectedHop::at("net:net_dev_start_xmit", &a.pod_veth),
                ExpectedHop::at("net:netif_receive_skb", &a.peer),
                ExpectedHop::at("flannel:encap", &a.overlay),
                ExpectedHop::at("flannel:outer_xmit", &a.underlay),
            ],
            vec![
                ExpectedHop::at("flannel:outer_receive", &b.underlay),
                ExpectedHop::at("flannel:decap", &b.overlay),
                ExpectedHop::at("net:net_dev_start_xmit", &b.peer),
                ExpectedHop::at("net:netif_receive_skb", &b.pod_veth),
            ],
        )
    }
}

fn build(prefix: String, overlay: Overlay, x: u8, y: u8) -> Result<Flannel> {
    let mut cleanup = Cleanup::default();
    let name = |s: &str| format!("{prefix}{s}");
    let ns_name = |s: &str| format!("{prefix}-{s}");
    for s in ["ap", "ah", "bh", "bp"] {
        ip(["netns", "add", ns_name(s).as_str()])?;
        cleanup.namespaces.push(ns_name(s));
        sysctl(
            &ns_name(s),
            &[
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
        )?;
        ip(["-n", ns_name(s).as_str(), "link", "set", "lo", "up"])?;
    }
    for s in ["ah", "bh"] {
        sysctl(
            &ns_name(s),
            &[
                "net.ipv4.ip_forward=1",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
            ],
        )?;
    }
    let subnet = |side: &str| Ipv4Addr::new(10, x, 2 * y + u8::from(side == "b"), 0);
    let with_host = |net: Ipv4Addr, h: u8| {
        let o = net.octets();
        Ipv4Addr::new(o[0], o[1], o[2], h)
    };
    let underlay_ip = |side: &str| Ipv4Addr::new(172, 31, y, if side == "a" { 1 } else { 2 });

    // The underlay: one veth pair between the host namespaces.
    ip([
        "-n",
        &ns_name("ah"),
        "link",
        "add",
        &name("aw"),
        "type",
        "veth",
        "peer",
        "name",
        &name("bw"),
        "netns",
        &ns_name("bh"),
    ])?;
    for side in ["a", "b"] {
        let h = ns_name(&format!("{side}h"));
        let p = ns_name(&format!("{side}p"));
        let (br, port, pod, w, ov) = (
            name(&format!("{side}br")),
            name(&format!("{side}h")),
            name(&format!("{side}p")),
            name(&format!("{side}w")),
            name(&format!("{side}v")),
        );
        ip(["-n", &h, "link", "add", &br, "type", "bridge"])?;
        ip([
            "-n", &h, "link", "add", &port, "type", "veth", "peer", "name", &pod, "netns", &p,
        ])?;
        ip(["-n", &h, "link", "set", &port, "master", &br])?;
        let net = subnet(side);
        ip([
            "-n",
            &h,
            "addr",
            "add",
            &format!("{}/24", with_host(net, 1)),
            "dev",
            &br,
        ])?;
        ip([
            "-n",
            &h,
            "addr",
            "add",
            &format!("{}/24", underlay_ip(side)),
            "dev",
            &w,
        ])?;
        match overlay {
            Overlay::Vxlan => ip([
                "-n",
                &h,
                "link",
                "add",
                &ov,
                "type",
                "vxlan",
                "id",
                "1",
                "local",
                &underlay_ip(side).to_string(),
                "dev",
                &w,
                "dstport",
                &VXLAN_PORT.to_string(),
                "nolearning",
            ])?,
            Overlay::Udp => ip(["-n", &h, "tuntap", "add", "dev", &ov, "mode", "tun"])?,
        };
        // flannel gives the overlay device the subnet's address 0 as a /32.
        ip(["-n", &h, "addr", "add", &format!("{net}/32"), "dev", &ov])?;
        for dev in [&br, &port, &w, &ov] {
            ip(["-n", &h, "link", "set", dev, "up"])?;
        }
        // The pod: its address, the bridge as its gateway. The overlay's
        // MTU (1450 for VXLAN over 1500) is the pod's, as flannel sets it.
        ip([
            "-n",
            &p,
            "addr",
            "add",
            &format!("{}/24", with_host(net, 2)),
            "dev",
            &pod,
        ])?;
        ip(["-n", &p, "link", "set", &pod, "mtu", "1400", "up"])?;
        ip([
            "-n",
            &p,
            "route",
            "add",
            "default",
            "via",
            &with_host(net, 1).to_string(),
        ])?;
    }
    let (nap, nah, nbh, nbp) = (
        netns(&ns_name("ap"))?,
        netns(&ns_name("ah"))?,
        netns(&ns_name("bh"))?,
        netns(&ns_name("bp"))?,
    );
    let node = |side: &str, pod: Netns, host: Netns| -> Result<Node> {
        Ok(Node {
            pod_veth: link(&pod, &name(&format!("{side}p")))?,
            peer: link(&host, &name(&format!("{side}h")))?,
            bridge: link(&host, &name(&format!("{side}br")))?,
            overlay: link(&host, &name(&format!("{side}v")))?,
            underlay: link(&host, &name(&format!("{side}w")))?,
            pod,
            host,
            pod_ip: with_host(subnet(side), 2),
            underlay_ip: underlay_ip(side),
            subnet: subnet(side),
        })
    };
    let a = node("a", nap, nah)?;
    let b = node("b", nbp, nbh)?;

    for (me, peer) in [(&a, &b), (&b, &a)] {
        let h = me.host.name.as_str();
        // Static neighbours: no ARP anywhere.
        ip([
            "-n",
            me.pod.name.as_str(),
            "neigh",
            "add",
            &with_host(me.subnet, 1).to_string(),
            "lladdr",
            &me.bridge.mac,
            "dev",
            &me.pod_veth.name,
            "nud",
            "permanent",
        ])?;
        ip([
            "-n",
            h,
            "neigh",
            "add",
            &me.pod_ip.to_string(),
            "lladdr",
            &me.pod_veth.mac,
            "dev",
            &me.bridge.name,
            "nud",
            "permanent",
        ])?;
        ip([
            "-n",
            h,
            "neigh",
            "add",
            &peer.underlay_ip.to_string(),
            "lladdr",
            &peer.underlay.mac,
            "dev",
            &me.underlay.name,
            "nud",
            "permanent",
        ])?;
        crate::netns::run(Command::new("bridge").args([
            "-n",
            h,
            "fdb",
            "replace",
            &me.pod_veth.mac,
            "dev",
            &me.peer.name,
            "master",
            "static",
        ]))?;
        // flannel's entries for the other host's subnet.
        let peer_net = format!("{}/24", peer.subnet);
        match overlay {
            Overlay::Vxlan => {
                ip([
                    "-n",
                    h,
                    "route",
                    "add",
                    &peer_net,
                    "via",
                    &peer.subnet.to_string(),
                    "dev",
                    &me.overlay.name,
                    "onlink",
                ])?;
                ip([
                    "-n",
                    h,
                    "neigh",
                    "add",
                    &peer.subnet.to_string(),
                    "lladdr",
                    &peer.overlay.mac,
                    "dev",
                    &me.overlay.name,
                    "nud",
                    "permanent",
                ])?;
                crate::netns::run(Command::new("bridge").args([
                    "-n",
                    h,
                    "fdb",
                    "append",
                    &peer.overlay.mac,
                    "dev",
                    &me.overlay.name,
                    "dst",
                    &peer.underlay_ip.to_string(),
                ]))?;
            }
            Overlay::Udp => {
                ip(["-n", h, "route", "add", &peer_net, "dev", &me.overlay.name])?;
            }
        }
    }
    Ok(Flannel {
        prefix,
        overlay,
        a,
        b,
        forwarders: Vec::new(),
        _cleanup: cleanup,
    })
}

/// The scenarios of tests/tests/flannel_*.rs: the hosts, a Jaeger, and one
/// agent per host (veth and flannel plugins) exporting to it.
pub mod scenario {
    use super::{Flannel, Node, Overlay, UDP_PORT, VXLAN_PORT};
    use crate::journey::ExpectedHop;
    use crate::otel::{self, Jaeger, OSpan, OtelCol};
    use crate::{unique_port, Agent, AgentOutput, Journey, Traffic, UdpSend};
    use anyhow::{bail, ensure, Context, Result};
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::{Duration, Instant};

    /// The hosts, the traffic generator and Jaeger.
    #[derive(Debug)]
    pub struct Setup {
        pub net: Flannel,
        pub traffic: Traffic,
        pub jaeger: Jaeger,
        /// `host.name` of host A's agent.
        pub name_a: String,
        /// `host.name` of host B's agent.
        pub name_b: String,
    }

    impl Setup {
        /// `traffic`: the `vnt-traffic` binary.
        pub fn new(net: Flannel, traffic: Traffic) -> Result<Setup> {
            let jaeger = Jaeger::start().context("Jaeger must start")?;
            Ok(Setup {
                name_a: format!("{}-node-a", net.prefix),
                name_b: format!("{}-node-b", net.prefix),
                net,
                traffic,
                jaeger,
            })
        }

        fn agent_for(
            &self,
            node: &Node,
            name: &str,
            port: u16,
            col: Option<&OtelCol>,
        ) -> Result<Agent> {
            // Through a Collector: traces on to Jaeger, metrics kept for a
            // scrape. Straight to Jaeger: traces only (it takes no metrics).
            let (endpoint, metrics) = match col {
                Some(c) => (c.otlp_grpc_url(), "otlp"),
                None => (self.jaeger.otlp_grpc_url(), "none"),
            };
            otel::with_env(
                Agent::builder()
                    .plugins("veth,flannel")
                    .filter(format!("{} and port {port}", node.netns_filter()))
                    .arg("--otlp-endpoint")
                    .arg(endpoint),
                &[
                    ("OTEL_RESOURCE_ATTRIBUTES", &format!("host.name={name}")),
                    ("OTEL_METRICS_EXPORTER", metrics),
                    ("OTEL_METRIC_EXPORT_INTERVAL", "500"),
                    ("OTEL_BSP_SCHEDULE_DELAY", "200"),
                ],
            )?
            .start()
            .with_context(|| format!("agent for {name} must start"))
        }

        /// One agent per host, both tracing the pods' traffic to `port`.
        pub fn agents(&self, port: u16) -> Result<(Agent, Agent)> {
            self.agents_via(port, None)
        }

        /// [`Setup::agents`], exporting through `col` (a Collector sending
        /// traces to this Jaeger) with their metrics, when given.
        pub fn agents_via(&self, port: u16, col: Option<&OtelCol>) -> Result<(Agent, Agent)> {
            Ok((
                self.agent_for(&self.net.a, &self.name_a, port, col)?,
                self.agent_for(&self.net.b, &self.name_b, port, col)?,
            ))
        }

        /// Waits until Jaeger holds `want` traces of the agents (20 s at most).
        pub fn wait_traces(&self, want: usize) -> Result<usize> {
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

    /// An agent's journeys of packets to `port`, by trace id.
    pub fn journeys_to(out: &AgentOutput, port: u16) -> BTreeMap<String, &Journey> {
        out.journeys
            .iter()
            .filter(|j| j.flow.dport == port)
            .map(|j| (j.trace_id.clone(), j))
            .collect()
    }

    /// The one span of `hook` (its `vnt.hook`) from `host` in a trace.
    pub fn one_span<'a>(spans: &'a [OSpan], id: &str, host: &str, hook: &str) -> Result<&'a OSpan> {
        let found: Vec<&OSpan> = spans
            .iter()
            .filter(|s| s.resource.get("host.name").map(String::as_str) == Some(host))
            .filter(|s| s.attr("vnt.hook").as_deref() == Some(hook))
            .collect();
        match found[..] {
            [s] => Ok(s),
            _ => bail!("trace {id}: {} `{hook}` spans from {host}", found.len()),
        }
    }

    /// Acceptance 1 (VXLAN) and 2 (UDP): `count` datagrams from pod A to
    /// pod B, each one trace with both hosts' spans, the outer packet's hop
    /// nested in the encapsulation (A) and the decapsulation (B), with the
    /// outer addresses and port (and the VNI for VXLAN).
    pub fn one_trace_per_packet(s: &Setup, count: u64) -> Result<()> {
        let (a, b) = (&s.net.a, &s.net.b);
        let port = unique_port();
        let (agent_a, agent_b) = s.agents(port)?;
        let recv =
            s.traffic
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
        let outer_a = ExpectedHop::at("flannel:outer_xmit", &a.underlay);
        let outer_b = ExpectedHop::at("flannel:outer_receive", &b.underlay);
        let (overlay, tunnel_port) = match s.net.overlay {
            Overlay::Vxlan => ("vxlan", VXLAN_PORT),
            Overlay::Udp => ("udp", UDP_PORT),
        };
        for (what, journeys, path, outer, parent) in [
            ("host A", &ja, &path_a, &outer_a, "flannel:encap"),
            ("host B", &jb, &path_b, &outer_b, "flannel:decap"),
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
                // The outer packet: a substep of the overlay hop, with its
                // own addresses and port.
                let o = j.hop(outer).context("no outer hop")?;
                ensure!(
                    o.parent_hook.as_deref() == Some(parent),
                    "{what}: the outer packet's hop nests in {:?}, not {parent}",
                    o.parent_hook
                );
                let attr = |k: &str| o.attrs.get(k).cloned().unwrap_or_default();
                ensure!(
                    attr("vnt.flannel.overlay") == overlay
                        && attr("vnt.flannel.outer.destination.port") == u64::from(tunnel_port)
                        && attr("vnt.flannel.outer.source.address") == a.underlay_ip.to_string()
                        && attr("vnt.flannel.outer.destination.address")
                            == b.underlay_ip.to_string(),
                    "{what}: outer hop attributes {:?}",
                    o.attrs
                );
                if s.net.overlay == Overlay::Vxlan {
                    ensure!(attr("vnt.flannel.vni") == 1, "{what}: VNI {:?}", o.attrs);
                }
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
                    !overlay.is_root(),
                    "trace {id}: {host}'s overlay span is a hop under the root"
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
            "{count} datagrams -> {traces} traces with encap/decap and the outer packet \
             nested on both hosts ({overlay})"
        );
        Ok(())
    }
}

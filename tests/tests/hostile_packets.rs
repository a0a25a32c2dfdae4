//! Hostile and unusual packets (issue 13, acceptance 4): truncated transport
//! headers with trailing bytes that look like ports, IPv6 extension headers,
//! IPv4 and IPv6 fragments. Each is crafted byte by byte and sent with
//! `AF_PACKET` from one container through the bridge to the other, while
//! three agents watch: one without a filter (what does it report?), one with
//! `port N` and one with `proto udp` (what gets through?).
//!
//! The rules checked (docs/adr/010-hostile-packets.md):
//! - no transport field is read past the IP datagram or the packet's data: a
//!   truncated header gives "no ports", never bytes from beyond it;
//! - IPv6 extension headers are walked to the transport header;
//! - a non-first fragment has no ports: `port` filters never match it,
//!   `proto` filters match every fragment.
//!
//! Privileged: run as root after `cargo build --release`.

use anyhow::{ensure, Context, Result};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;
use vnt_tests::packet::{
    self, ext_frag, ext_opts, mac, port_bytes, proto, tcp, udp, Eth, Ipv4, Ipv6,
};
use vnt_tests::{unique_port, Agent, AgentOutput, Topology, Traffic};

/// One crafted packet and what the agent must make of it.
struct Case {
    name: &'static str,
    /// Unique per case: journeys are told apart by their source address.
    src: IpAddr,
    frame: Vec<u8>,
    /// Expected `flow.proto`, `flow.sport`, `flow.dport`.
    proto: &'static str,
    sport: u16,
    dport: u16,
    /// Whether `--filter 'port N'` lets it through.
    port_filter: bool,
    /// Whether `--filter 'proto udp'` lets it through.
    udp_filter: bool,
}

fn v4(topo: &Topology, last: u8) -> Ipv4Addr {
    let o = topo.c1.ipv4.octets();
    Ipv4Addr::new(o[0], o[1], o[2], last)
}

fn v6(topo: &Topology, last: u16) -> Ipv6Addr {
    let mut s = topo.c1.ipv6.segments();
    s[7] = last;
    Ipv6Addr::from(s)
}

fn cases(topo: &Topology, n: u16) -> Vec<Case> {
    let eth = Eth {
        src: mac(&topo.c1.veth.mac),
        dst: mac(&topo.c2.veth.mac),
    };
    let dst4 = topo.c2.ipv4;
    let dst6 = topo.c2.ipv6;
    let mut out = Vec::new();
    let mut add = |name, src: IpAddr, frame, proto, sport, dport, port_filter, udp_filter| {
        out.push(Case {
            name,
            src,
            frame,
            proto,
            sport,
            dport,
            port_filter,
            udp_filter,
        })
    };

    // IPv4, whole UDP datagram: the control.
    let s = v4(topo, 100);
    let p = Ipv4::new(s, dst4, proto::UDP, 100, udp(4000, n, b"hostile-control!"));
    add(
        "v4 udp",
        s.into(),
        p.frame(&eth),
        "udp",
        4000,
        n,
        true,
        true,
    );

    // IPv4 whose total length ends 2 bytes into the UDP header; the frame
    // goes on with bytes that read as port N (padding, or a lie).
    let s = v4(topo, 101);
    let mut p = Ipv4::new(s, dst4, proto::UDP, 101, 4001u16.to_be_bytes().to_vec());
    p.trailer = port_bytes(n, 26);
    add(
        "v4 udp header cut by total length, port-like trailer",
        s.into(),
        p.frame(&eth),
        "udp",
        0,
        0,
        false,
        true,
    );

    // IPv4 UDP header cut by the end of the frame itself.
    let s = v4(topo, 102);
    let mut body = 4002u16.to_be_bytes().to_vec();
    body.extend_from_slice(&n.to_be_bytes());
    let p = Ipv4::new(s, dst4, proto::UDP, 102, body);
    add(
        "v4 udp header cut by the frame",
        s.into(),
        p.frame(&eth),
        "udp",
        0,
        0,
        false,
        true,
    );

    // IPv4 TCP: the datagram holds 12 bytes of the 20-byte header; zero
    // padding follows in the frame.
    let s = v4(topo, 103);
    let mut p = Ipv4::new(
        s,
        dst4,
        proto::TCP,
        103,
        tcp(4003, n, 7, b"")[..12].to_vec(),
    );
    p.trailer = vec![0; 20];
    add(
        "v4 tcp header cut by total length",
        s.into(),
        p.frame(&eth),
        "tcp",
        0,
        0,
        false,
        false,
    );

    // IPv4 first fragment (more fragments, offset 0): a real UDP header.
    let s = v4(topo, 104);
    let mut p = Ipv4::new(s, dst4, proto::UDP, 104, udp(4004, n, &[0x11; 24]));
    p.frag = 0x2000;
    add(
        "v4 first fragment",
        s.into(),
        p.frame(&eth),
        "udp",
        4004,
        n,
        true,
        true,
    );

    // IPv4 non-first fragment (offset 32 bytes) whose bytes look like a UDP
    // header to port N: no transport header, no ports.
    let s = v4(topo, 105);
    let mut p = Ipv4::new(s, dst4, proto::UDP, 105, port_bytes(n, 24));
    p.frag = 4;
    add(
        "v4 non-first fragment",
        s.into(),
        p.frame(&eth),
        "udp",
        0,
        0,
        false,
        true,
    );

    // IPv6: hop-by-hop and destination options before UDP.
    let s = v6(topo, 0x100);
    let mut p = Ipv6::new(s, dst6, proto::HOPOPTS, udp(4006, n, b"behind-ext-hdrs!"));
    p.ext = [ext_opts(proto::DSTOPTS, 0), ext_opts(proto::UDP, 1)].concat();
    add(
        "v6 hop-by-hop + destination options + udp",
        s.into(),
        p.frame(&eth),
        "udp",
        4006,
        n,
        true,
        true,
    );

    // IPv6 first fragment.
    let s = v6(topo, 0x101);
    let mut p = Ipv6::new(s, dst6, proto::FRAGMENT, udp(4007, n, &[0x22; 24]));
    p.ext = ext_frag(proto::UDP, 0, true, 0x1234);
    add(
        "v6 first fragment",
        s.into(),
        p.frame(&eth),
        "udp",
        4007,
        n,
        true,
        true,
    );

    // IPv6 non-first fragment, bytes looking like a UDP header to port N.
    let s = v6(topo, 0x102);
    let mut p = Ipv6::new(s, dst6, proto::FRAGMENT, port_bytes(n, 24));
    p.ext = ext_frag(proto::UDP, 4, false, 0x1234);
    add(
        "v6 non-first fragment",
        s.into(),
        p.frame(&eth),
        "udp",
        0,
        0,
        false,
        true,
    );

    // IPv6 whose payload length ends 2 bytes into the UDP header.
    let s = v6(topo, 0x103);
    let mut p = Ipv6::new(s, dst6, proto::UDP, 4008u16.to_be_bytes().to_vec());
    p.trailer = port_bytes(n, 26);
    add(
        "v6 udp header cut by payload length, port-like trailer",
        s.into(),
        p.frame(&eth),
        "udp",
        0,
        0,
        false,
        true,
    );

    // IPv6 hop-by-hop header claiming 2 KiB: the walk stops there.
    let s = v6(topo, 0x104);
    let mut p = Ipv6::new(s, dst6, proto::HOPOPTS, port_bytes(n, 32));
    p.ext = vec![proto::UDP, 255, 1, 4, 0, 0, 0, 0];
    add(
        "v6 hop-by-hop longer than the packet",
        s.into(),
        p.frame(&eth),
        "0",
        0,
        0,
        false,
        false,
    );

    // Seven destination options headers before UDP: more than the walk's bound.
    let s = v6(topo, 0x105);
    let mut p = Ipv6::new(s, dst6, proto::DSTOPTS, udp(4009, n, b""));
    p.ext = (0..7)
        .flat_map(|i| ext_opts(if i == 6 { proto::UDP } else { proto::DSTOPTS }, 0))
        .collect();
    add(
        "v6 seven extension headers",
        s.into(),
        p.frame(&eth),
        "60",
        0,
        0,
        false,
        false,
    );
    out
}

fn agent(filter: Option<String>) -> Result<Agent> {
    let mut b = Agent::builder().default_probes().sample(1, 1);
    if let Some(f) = filter {
        b = b.filter(f);
    }
    b.start().context("the agent must start and attach")
}

fn seen(out: &AgentOutput, src: IpAddr) -> Vec<&vnt_tests::Journey> {
    out.journeys.iter().filter(|j| j.flow.src == src).collect()
}

#[test]
fn hostile_headers_parse_safely_and_filter_correctly() -> Result<()> {
    let _serial = vnt_tests::serial();
    vnt_tests::require_root();
    let topo = Topology::new()?;
    let traffic = Traffic::new(env!("CARGO_BIN_EXE_vnt-traffic"));
    let n = unique_port();
    let cases = cases(&topo, n);

    let all = agent(None)?;
    let by_port = agent(Some(format!("port {n}")))?;
    let by_udp = agent(Some("proto udp".into()))?;
    let frames: Vec<Vec<u8>> = cases.iter().map(|c| c.frame.clone()).collect();
    traffic.raw_send(&topo.c1.netns.name, &topo.c1.veth.name, &frames)?;
    std::thread::sleep(Duration::from_millis(500));
    let all = all.stop()?;
    let by_port = by_port.stop()?;
    let by_udp = by_udp.stop()?;

    let mut problems = Vec::new();
    for c in &cases {
        let js = seen(&all, c.src);
        if js.is_empty() {
            problems.push(format!("{}: no journey without a filter", c.name));
        }
        for j in &js {
            let f = &j.flow;
            if (f.proto.as_str(), f.sport, f.dport) != (c.proto, c.sport, c.dport) {
                problems.push(format!(
                    "{}: reported proto {} ports {}->{}, expected proto {} ports {}->{}",
                    c.name, f.proto, f.sport, f.dport, c.proto, c.sport, c.dport
                ));
            }
        }
        for (what, out, want) in [
            ("port", &by_port, c.port_filter),
            ("proto udp", &by_udp, c.udp_filter),
        ] {
            let got = !seen(out, c.src).is_empty();
            if got != want {
                problems.push(format!(
                    "{}: the `{what}` filter {} it, expected it to {}",
                    c.name,
                    if got { "let through" } else { "stopped" },
                    if want { "let it through" } else { "stop it" }
                ));
            }
        }
    }
    ensure!(
        problems.is_empty(),
        "{} problem(s):\n{}\nkernel counters without a filter: {:?}",
        problems.len(),
        problems.join("\n"),
        all.summary.kernel
    );
    // The parse helpers themselves.
    assert_eq!(packet::checksum(&[0xff, 0xff]), 0);
    Ok(())
}

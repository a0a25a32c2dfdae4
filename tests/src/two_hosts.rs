//! Two "hosts" on one machine: each is its own set of network namespaces (a
//! container and the host namespace with a bridge), and a veth pair is the
//! wire between the two bridges.
//!
//! ```text
//!            host A                                            host B
//!   <p>-ac          <p>-ah                            <p>-bh          <p>-bc
//!   <p>ac ─veth─ <p>ah ─[ <p>abr ]─ <p>aw ══wire══ <p>bw ─[ <p>bbr ]─ <p>bh ─veth─ <p>bc
//!   10.x.y.1/24                                                          10.x.y.2/24
//! ```
//!
//! An agent restricted to host A's namespaces (`--filter "netns A1,A2"`)
//! sees a datagram from `<p>ac` to `<p>bc` leave the container, cross A's
//! bridge and go onto the wire; an agent restricted to host B's sees it come
//! off the wire, cross B's bridge and reach the container. Like
//! [`crate::Topology`], the network is quiet (static neighbours and FDB
//! entries, IPv6 off) and everything is deleted on drop.

use crate::journey::{hooks, ExpectedHop};
use crate::netns::{exec_in, ip, run};
use crate::topology::{Link, Netns};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// One host: its container namespace and its host namespace.
#[derive(Debug, Clone)]
pub struct Host {
    /// `<p>-ac` / `<p>-bc`.
    pub container: Netns,
    /// `<p>-ah` / `<p>-bh`.
    pub host: Netns,
    /// The container's veth (`<p>ac` / `<p>bc`).
    pub veth: Link,
    /// Its peer, a bridge port in the host namespace (`<p>ah` / `<p>bh`).
    pub peer: Link,
    /// The bridge port toward the other host (`<p>aw` / `<p>bw`).
    pub wire: Link,
    /// The bridge.
    pub bridge: Link,
    /// The container's address.
    pub ipv4: Ipv4Addr,
}

impl Host {
    /// `netns <container inode>,<host inode>`: the filter restricting an agent to this host.
    pub fn netns_filter(&self) -> String {
        format!("netns {},{}", self.container.inode, self.host.inode)
    }

    /// The container's address.
    pub fn addr(&self) -> IpAddr {
        IpAddr::V4(self.ipv4)
    }
}

/// Two hosts joined by a wire. Dropping it deletes everything.
#[derive(Debug)]
pub struct TwoHosts {
    /// Unique prefix of every name.
    pub prefix: String,
    pub a: Host,
    pub b: Host,
    _cleanup: Cleanup,
}

impl TwoHosts {
    /// Builds a fresh pair of hosts with unique names and a unique subnet.
    pub fn new() -> Result<TwoHosts> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        let (prefix, n) = loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let prefix = format!("vh{pid:x}x{n:x}");
            let taken = ["ac", "ah", "bh", "bc"].iter().any(|s| {
                Path::new("/run/netns")
                    .join(format!("{prefix}-{s}"))
                    .exists()
            });
            if !taken {
                break (prefix, n);
            }
        };
        assert!(prefix.len() + 3 <= 15, "prefix {prefix} too long");
        // 10.<200..249>.<n>.0/24: apart from Topology's 10.<1..254>.<n> only by
        // chance, and these namespaces share no routes with it anyway.
        let (x, y) = (200 + (pid % 50) as u8, (n % 256) as u8);
        build(prefix, x, y)
    }

    /// The hops a datagram from A's container to B's takes, as (seen on host
    /// A, seen on host B).
    pub fn path_a_to_b(&self) -> (Vec<ExpectedHop>, Vec<ExpectedHop>) {
        let (a, b) = (&self.a, &self.b);
        (
            vec![
                ExpectedHop::at(hooks::XMIT, &a.veth),
                ExpectedHop::at(hooks::RX, &a.peer),
                ExpectedHop::at(hooks::RECEIVE, &a.peer),
                ExpectedHop::at(hooks::XMIT, &a.wire),
            ],
            vec![
                ExpectedHop::at(hooks::RX, &b.wire),
                ExpectedHop::at(hooks::RECEIVE, &b.wire),
                ExpectedHop::at(hooks::XMIT, &b.peer),
                ExpectedHop::at(hooks::RX, &b.veth),
                ExpectedHop::at(hooks::RECEIVE, &b.veth),
            ],
        )
    }
}

#[derive(Debug, Default)]
pub(crate) struct Cleanup {
    pub(crate) namespaces: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            if let Ok(pids) = ip(["netns", "pids", ns.as_str()]) {
                for pid in pids
                    .split_whitespace()
                    .filter_map(|p| p.parse::<libc::pid_t>().ok())
                {
                    // SAFETY: kill has no memory-safety preconditions; the pid
                    // runs inside a namespace this fixture created.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        // Deleting a namespace deletes its interfaces, and a veth goes with
        // either end, so this removes every link too.
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = ip(["netns", "del", ns.as_str()]) {
                eprintln!("vnt-tests: could not delete netns {ns}: {e:#}");
            }
        }
    }
}

pub(crate) fn sysctl(ns: &str, settings: &[&str]) -> Result<()> {
    let mut args = vec!["-q", "-w"];
    args.extend_from_slice(settings);
    run(&mut exec_in(ns, "sysctl", args)).map(drop)
}

pub(crate) fn netns(name: &str) -> Result<Netns> {
    let path = Path::new("/run/netns").join(name);
    let inode = std::fs::metadata(&path)
        .with_context(|| format!("failed to stat {}", path.display()))?
        .ino();
    Ok(Netns {
        name: name.to_owned(),
        inode,
    })
}

#[derive(Deserialize)]
struct IpLink {
    ifindex: u32,
    ifname: String,
    #[serde(default)]
    address: String,
}

pub(crate) fn link(ns: &Netns, name: &str) -> Result<Link> {
    let json = ip(["-n", ns.name.as_str(), "-j", "link", "show", "dev", name])?;
    let links: Vec<IpLink> = serde_json::from_str(&json)
        .with_context(|| format!("unexpected `ip -j link` output: {json}"))?;
    let Some(l) = links.into_iter().find(|l| l.ifname == name) else {
        bail!("link {name} not found in netns {}", ns.name);
    };
    Ok(Link {
        name: l.ifname,
        ifindex: l.ifindex,
        mac: l.address,
        netns: ns.name.clone(),
        netns_inode: ns.inode,
    })
}

fn build(prefix: String, x: u8, y: u8) -> Result<TwoHosts> {
    let mut cleanup = Cleanup::default();
    let name = |s: &str| format!("{prefix}{s}");
    let ns_name = |s: &str| format!("{prefix}-{s}");
    for s in ["ac", "ah", "bh", "bc"] {
        ip(["netns", "add", ns_name(s).as_str()])?;
        cleanup.namespaces.push(ns_name(s));
    }
    for s in ["ah", "bh"] {
        sysctl(
            &ns_name(s),
            &[
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
        )?;
    }
    for s in ["ac", "bc"] {
        sysctl(
            &ns_name(s),
            &[
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
        )?;
    }
    for side in ["a", "b"] {
        let h = ns_name(&format!("{side}h"));
        let c = ns_name(&format!("{side}c"));
        let br = name(&format!("{side}br"));
        ip(["-n", &h, "link", "add", &br, "type", "bridge"])?;
        ip([
            "-n",
            &h,
            "link",
            "add",
            &name(&format!("{side}h")),
            "type",
            "veth",
            "peer",
            "name",
            &name(&format!("{side}c")),
            "netns",
            &c,
        ])?;
        ip([
            "-n",
            &h,
            "link",
            "set",
            &name(&format!("{side}h")),
            "master",
            &br,
        ])?;
    }
    // The wire: one veth pair, one end in each host namespace.
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
    ip([
        "-n",
        &ns_name("ah"),
        "link",
        "set",
        &name("aw"),
        "master",
        &name("abr"),
    ])?;
    ip([
        "-n",
        &ns_name("bh"),
        "link",
        "set",
        &name("bw"),
        "master",
        &name("bbr"),
    ])?;
    for s in ["ac", "ah", "bh", "bc"] {
        ip(["-n", ns_name(s).as_str(), "link", "set", "lo", "up"])?;
    }
    for side in ["a", "b"] {
        let h = ns_name(&format!("{side}h"));
        for dev in ["br", "h", "w"] {
            ip([
                "-n",
                &h,
                "link",
                "set",
                &name(&format!("{side}{dev}")),
                "up",
            ])?;
        }
    }
    let ipv4 = |host: u8| Ipv4Addr::new(10, x, y, host);
    for (side, host) in [("a", 1u8), ("b", 2u8)] {
        let c = ns_name(&format!("{side}c"));
        let dev = name(&format!("{side}c"));
        let addr = format!("{}/24", ipv4(host));
        ip(["-n", &c, "addr", "add", &addr, "dev", &dev])?;
        ip(["-n", &c, "link", "set", &dev, "up"])?;
    }

    let (nac, nah, nbh, nbc) = (
        netns(&ns_name("ac"))?,
        netns(&ns_name("ah"))?,
        netns(&ns_name("bh"))?,
        netns(&ns_name("bc"))?,
    );
    let a = Host {
        veth: link(&nac, &name("ac"))?,
        peer: link(&nah, &name("ah"))?,
        wire: link(&nah, &name("aw"))?,
        bridge: link(&nah, &name("abr"))?,
        container: nac,
        host: nah,
        ipv4: ipv4(1),
    };
    let b = Host {
        veth: link(&nbc, &name("bc"))?,
        peer: link(&nbh, &name("bh"))?,
        wire: link(&nbh, &name("bw"))?,
        bridge: link(&nbh, &name("bbr"))?,
        container: nbc,
        host: nbh,
        ipv4: ipv4(2),
    };
    // Static neighbours: no ARP.
    for (me, peer) in [(&a, &b), (&b, &a)] {
        ip([
            "-n",
            me.container.name.as_str(),
            "neigh",
            "add",
            &peer.ipv4.to_string(),
            "lladdr",
            &peer.veth.mac,
            "dev",
            &me.veth.name,
            "nud",
            "permanent",
        ])?;
    }
    // Static FDB entries: each bridge knows where both containers are, so
    // nothing is ever flooded.
    for (h, local, remote) in [(&a, &a, &b), (&b, &b, &a)] {
        for (mac, port) in [
            (&local.veth.mac, &h.peer.name),
            (&remote.veth.mac, &h.wire.name),
        ] {
            run(Command::new("bridge").args([
                "-n",
                h.host.name.as_str(),
                "fdb",
                "replace",
                mac,
                "dev",
                port,
                "master",
                "static",
            ]))?;
        }
    }
    Ok(TwoHosts {
        prefix,
        a,
        b,
        _cleanup: cleanup,
    })
}

//! "Two containers and a host": three network namespaces, a bridge in the
//! host, and a veth pair from each container to a bridge port.
//!
//! ```text
//!   <p>-c1                     <p>-h                        <p>-c2
//!   <p>c1 ---veth--- <p>h1 --[ <p>br ]-- <p>h2 ---veth--- <p>c2
//!   10.a.b.1/24                                            10.a.b.2/24
//!   fd00:a:b::1/64                                         fd00:a:b::2/64
//! ```
//!
//! Every name starts with a prefix unique to this process and topology, so
//! topologies never collide and cleanup only ever deletes what was created.
//! The network is made quiet on purpose: static neighbour entries (no ARP or
//! neighbour discovery), static bridge FDB entries (no flooding), no IPv6 in
//! the host namespace and no link-local addresses in the containers (no
//! router solicitations, no MLD from link-local sources).

use crate::journey::{hooks, ExpectedHop};
use crate::netns::{exec_in, ip, run};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// One of the two containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    C1,
    C2,
}

impl Side {
    /// The other container.
    pub fn other(self) -> Side {
        match self {
            Side::C1 => Side::C2,
            Side::C2 => Side::C1,
        }
    }
}

/// IP version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// 4 or 6, as in the agent's `flow.family`.
    pub fn number(self) -> u8 {
        match self {
            Family::V4 => 4,
            Family::V6 => 6,
        }
    }
}

/// A named network namespace and its nsfs inode (what the kernel calls
/// `net->ns.inum`, and what the agent reports as `netns`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netns {
    pub name: String,
    pub inode: u64,
}

/// A network interface as seen inside its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub ifindex: u32,
    pub mac: String,
    /// Name of the namespace the interface lives in.
    pub netns: String,
    /// Inode of that namespace.
    pub netns_inode: u64,
}

/// A container: its namespace, its veth, the veth's peer (a bridge port in
/// the host namespace) and its addresses.
#[derive(Debug, Clone)]
pub struct Container {
    pub netns: Netns,
    /// `<p>c1` / `<p>c2`, inside the container.
    pub veth: Link,
    /// `<p>h1` / `<p>h2`, in the host namespace, enslaved to the bridge.
    pub peer: Link,
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
}

impl Container {
    /// The container's address of the given family.
    pub fn addr(&self, family: Family) -> IpAddr {
        match family {
            Family::V4 => IpAddr::V4(self.ipv4),
            Family::V6 => IpAddr::V6(self.ipv6),
        }
    }
}

/// A built topology. Dropping it deletes its links and namespaces (also while
/// a test panics), killing any process still running inside them.
#[derive(Debug)]
pub struct Topology {
    /// Unique prefix of every name, e.g. `vt3f2a1x0`.
    pub prefix: String,
    pub c1: Container,
    pub c2: Container,
    /// The host namespace `<p>-h`.
    pub host: Netns,
    /// The bridge `<p>br` in the host namespace.
    pub bridge: Link,
    _cleanup: Cleanup,
}

impl Topology {
    /// Builds a fresh topology with unique names and a unique subnet.
    pub fn new() -> Result<Topology> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        let (prefix, n) = loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let prefix = format!("vt{pid:x}x{n:x}");
            // Names from a crashed earlier process with the same pid may
            // linger; they are not ours, so step over them.
            let taken = ["c1", "c2", "h"].iter().any(|s| {
                Path::new("/run/netns")
                    .join(format!("{prefix}-{s}"))
                    .exists()
            });
            if !taken {
                break (prefix, n);
            }
        };
        // Interface names are `<prefix>c1`, `<prefix>br`: IFNAMSIZ is 16 with the NUL.
        assert!(prefix.len() + 2 <= 15, "prefix {prefix} too long");
        let (a, b) = ((pid % 254 + 1) as u8, (n % 256) as u8);
        build(prefix, a, b)
    }

    /// A container by side.
    pub fn container(&self, side: Side) -> &Container {
        match side {
            Side::C1 => &self.c1,
            Side::C2 => &self.c2,
        }
    }

    /// The address of a container.
    pub fn addr(&self, side: Side, family: Family) -> IpAddr {
        self.container(side).addr(family)
    }

    /// Names of the three namespaces: c1, c2, host.
    pub fn netns_names(&self) -> [&str; 3] {
        [&self.c1.netns.name, &self.c2.netns.name, &self.host.name]
    }

    /// The six hops a packet from `from` to the other container takes, in
    /// order: xmit on the sender's veth, backlog and receive on its peer,
    /// xmit on the other bridge port, backlog and receive on the receiver's
    /// veth.
    pub fn path(&self, from: Side) -> Vec<ExpectedHop> {
        let src = self.container(from);
        let dst = self.container(from.other());
        vec![
            ExpectedHop::at(hooks::XMIT, &src.veth),
            ExpectedHop::at(hooks::RX, &src.peer),
            ExpectedHop::at(hooks::RECEIVE, &src.peer),
            ExpectedHop::at(hooks::XMIT, &dst.peer),
            ExpectedHop::at(hooks::RX, &dst.veth),
            ExpectedHop::at(hooks::RECEIVE, &dst.veth),
        ]
    }

    /// [`Topology::path`] as the default probe set sees it: the backlog hops
    /// (`veth_rx`) are opt-in, so each veth pair is one xmit and one receive.
    pub fn default_path(&self, from: Side) -> Vec<ExpectedHop> {
        self.path(from)
            .into_iter()
            .filter(|h| h.hook != hooks::RX)
            .collect()
    }

    /// Installs a bridge-family nftables rule in the host namespace that drops
    /// UDP datagrams to `dport` as the bridge forwards them. The table is
    /// deleted when the returned guard drops (and with the namespace anyway).
    pub fn nft_drop_udp(&self, dport: u16) -> Result<NftDrop<'_>> {
        self.nft_forward_rule(&format!("drop{dport}"), &format!("udp dport {dport} drop"))
    }

    /// Installs a bridge-family nftables rule in the host namespace that
    /// rewrites the destination port of UDP datagrams to `from` into `to` as
    /// the bridge forwards them: the packet changes between hops.
    pub fn nft_rewrite_udp_dport(&self, from: u16, to: u16) -> Result<NftDrop<'_>> {
        self.nft_forward_rule(
            &format!("rw{from}"),
            &format!("udp dport {from} udp dport set {to}"),
        )
    }

    /// One rule in the bridge's forward hook, in a table of its own.
    fn nft_forward_rule(&self, tag: &str, rule: &str) -> Result<NftDrop<'_>> {
        let table = format!("{}{tag}", self.prefix);
        // `fwd` is an nft keyword (the fwd statement), so the chain is `forward`.
        let ruleset = format!(
            "table bridge {table} {{\n  chain forward {{\n    type filter hook forward priority 0;\n    {rule};\n  }}\n}}\n"
        );
        let file = crate::temp_path("nft");
        std::fs::write(&file, &ruleset)
            .with_context(|| format!("failed to write {}", file.display()))?;
        let result = run(&mut exec_in(
            &self.host.name,
            "nft",
            [std::ffi::OsStr::new("-f"), file.as_os_str()],
        ));
        let _ = std::fs::remove_file(&file);
        result.with_context(|| format!("failed to install nft ruleset:\n{ruleset}"))?;
        Ok(NftDrop {
            topology: self,
            table,
        })
    }
}

/// A bridge-family nftables table in the host namespace; deleted on drop.
#[derive(Debug)]
pub struct NftDrop<'a> {
    topology: &'a Topology,
    table: String,
}

impl NftDrop<'_> {
    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The table's current ruleset, with counters if any.
    pub fn list(&self) -> Result<String> {
        run(&mut exec_in(
            &self.topology.host.name,
            "nft",
            ["list", "table", "bridge", &self.table],
        ))
    }
}

impl Drop for NftDrop<'_> {
    fn drop(&mut self) {
        let ns = &self.topology.host.name;
        if let Err(e) = run(&mut exec_in(
            ns,
            "nft",
            ["delete", "table", "bridge", &self.table],
        )) {
            eprintln!(
                "vnt-tests: could not delete nft table {} in {ns}: {e:#}",
                self.table
            );
        }
    }
}

/// What was created, in creation order; deleted in reverse on drop.
#[derive(Debug, Default)]
struct Cleanup {
    /// (namespace, link) pairs created by `ip link add`.
    links: Vec<(String, String)>,
    namespaces: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            kill_processes_in(ns);
        }
        // Deleting one end of a veth deletes both; the bridge goes last.
        for (ns, link) in self.links.iter().rev() {
            if let Err(e) = ip(["-n", ns.as_str(), "link", "del", link.as_str()]) {
                eprintln!("vnt-tests: could not delete link {link} in {ns}: {e:#}");
            }
        }
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = ip(["netns", "del", ns.as_str()]) {
                eprintln!("vnt-tests: could not delete netns {ns}: {e:#}");
            }
        }
    }
}

/// Kills what still runs inside one of our namespaces (a receiver a test
/// forgot, say); otherwise the namespace would outlive its name.
fn kill_processes_in(ns: &str) {
    let Ok(pids) = ip(["netns", "pids", ns]) else {
        return;
    };
    for pid in pids
        .split_whitespace()
        .filter_map(|p| p.parse::<libc::pid_t>().ok())
    {
        // SAFETY: kill has no memory-safety preconditions; the pid was
        // listed as running inside a namespace this topology created.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

fn build(prefix: String, a: u8, b: u8) -> Result<Topology> {
    let mut cleanup = Cleanup::default();
    let ns_c1 = format!("{prefix}-c1");
    let ns_c2 = format!("{prefix}-c2");
    let ns_h = format!("{prefix}-h");
    let (if_c1, if_c2) = (format!("{prefix}c1"), format!("{prefix}c2"));
    let (if_h1, if_h2) = (format!("{prefix}h1"), format!("{prefix}h2"));
    let br = format!("{prefix}br");

    for ns in [&ns_c1, &ns_c2, &ns_h] {
        ip(["netns", "add", ns.as_str()])?;
        cleanup.namespaces.push(ns.clone());
    }
    // `default.*` applies to interfaces created in (or moved into) the
    // namespace afterwards, so set it before the links exist.
    sysctl(
        &ns_h,
        &[
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ],
    )?;
    for ns in [&ns_c1, &ns_c2] {
        sysctl(
            ns,
            &[
                "net.ipv6.conf.all.accept_ra=0",
                "net.ipv6.conf.default.accept_ra=0",
                "net.ipv6.conf.default.router_solicitations=0",
                // 1 = none: no link-local address, so no DAD/RS/MLD from it.
                "net.ipv6.conf.default.addr_gen_mode=1",
            ],
        )?;
    }

    ip(["-n", &ns_h, "link", "add", &br, "type", "bridge"])?;
    cleanup.links.push((ns_h.clone(), br.clone()));
    for (host_end, cont_end, cont_ns) in [(&if_h1, &if_c1, &ns_c1), (&if_h2, &if_c2, &ns_c2)] {
        ip([
            "-n", &ns_h, "link", "add", host_end, "type", "veth", "peer", "name", cont_end,
            "netns", cont_ns,
        ])?;
        cleanup.links.push((ns_h.clone(), host_end.clone()));
        ip(["-n", &ns_h, "link", "set", host_end, "master", &br])?;
    }
    for ns in [&ns_c1, &ns_c2, &ns_h] {
        ip(["-n", ns.as_str(), "link", "set", "lo", "up"])?;
    }
    for dev in [&br, &if_h1, &if_h2] {
        ip(["-n", &ns_h, "link", "set", dev, "up"])?;
    }

    let ipv4 = |host: u8| Ipv4Addr::new(10, a, b, host);
    let ipv6 = |host: u16| Ipv6Addr::new(0xfd00, a.into(), b.into(), 0, 0, 0, 0, host);
    for (ns, dev, host) in [(&ns_c1, &if_c1, 1u8), (&ns_c2, &if_c2, 2u8)] {
        let v4 = format!("{}/24", ipv4(host));
        let v6 = format!("{}/64", ipv6(host.into()));
        ip(["-n", ns.as_str(), "addr", "add", &v4, "dev", dev.as_str()])?;
        ip([
            "-n",
            ns.as_str(),
            "addr",
            "add",
            &v6,
            "dev",
            dev.as_str(),
            "nodad",
        ])?;
        ip(["-n", ns.as_str(), "link", "set", dev.as_str(), "up"])?;
    }

    let host = netns(&ns_h)?;
    let c1_ns = netns(&ns_c1)?;
    let c2_ns = netns(&ns_c2)?;
    let c1_veth = link(&c1_ns, &if_c1)?;
    let c2_veth = link(&c2_ns, &if_c2)?;
    let h1 = link(&host, &if_h1)?;
    let h2 = link(&host, &if_h2)?;
    let bridge = link(&host, &br)?;

    // Static neighbours both ways, v4 and v6: no ARP, no neighbour discovery.
    for (ns, dev, peer_v4, peer_v6, peer_mac) in [
        (&ns_c1, &if_c1, ipv4(2), ipv6(2), &c2_veth.mac),
        (&ns_c2, &if_c2, ipv4(1), ipv6(1), &c1_veth.mac),
    ] {
        for addr in [peer_v4.to_string(), peer_v6.to_string()] {
            ip([
                "-n",
                ns.as_str(),
                "neigh",
                "add",
                &addr,
                "lladdr",
                peer_mac,
                "dev",
                dev.as_str(),
                "nud",
                "permanent",
            ])?;
        }
    }
    // Static FDB entries: the bridge never floods unicast to an unknown MAC,
    // even when one direction stays silent (one-way UDP).
    for (mac, port) in [(&c1_veth.mac, &if_h1), (&c2_veth.mac, &if_h2)] {
        run(Command::new("bridge").args([
            "-n", &ns_h, "fdb", "replace", mac, "dev", port, "master", "static",
        ]))?;
    }

    Ok(Topology {
        c1: Container {
            netns: c1_ns,
            veth: c1_veth,
            peer: h1,
            ipv4: ipv4(1),
            ipv6: ipv6(1),
        },
        c2: Container {
            netns: c2_ns,
            veth: c2_veth,
            peer: h2,
            ipv4: ipv4(2),
            ipv6: ipv6(2),
        },
        host,
        bridge,
        prefix,
        _cleanup: cleanup,
    })
}

fn sysctl(ns: &str, settings: &[&str]) -> Result<()> {
    let mut args = vec!["-q", "-w"];
    args.extend_from_slice(settings);
    run(&mut exec_in(ns, "sysctl", args)).map(drop)
}

/// The namespace's inode, as `stat -L -c %i /run/netns/<name>` prints it.
fn netns(name: &str) -> Result<Netns> {
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

fn link(ns: &Netns, name: &str) -> Result<Link> {
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

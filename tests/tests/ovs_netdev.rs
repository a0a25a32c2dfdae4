//! Issue 11, acceptance 5: on a kernel without the openvswitch module (this
//! project's host), ovs-vswitchd's userspace datapath (`datapath_type=netdev`)
//! between two namespaces: `vnt-agent --plugins veth,ovs` shows the OVS hop
//! between the bridge's ports, saying on the hop what it cannot see, and
//! `check` says which hooks attach here and why the others do not.
//!
//! The userspace datapath reads each packet from the rx port's AF_PACKET
//! socket and writes it to the tx port's; the kernel sees the packet arrive
//! on one port and, later, an AF_PACKET transmit by ovs-vswitchd of the same
//! headers (the same packet id) on the other.
//!
//! Privileged: run as root after `cargo build --release --workspace`; needs
//! Debian's openvswitch-switch (scripts/install-deps.sh).

use anyhow::{ensure, Context, Result};
use std::net::IpAddr;
use std::time::Duration;
use vnt_tests::ovs::{Datapath, OvsSwitch};
use vnt_tests::{kernel, locate_binary, require_root, Agent, Traffic, UdpSend};

#[test]
fn userspace_datapath_shows_the_ovs_hop_between_its_ports() -> Result<()> {
    let _serial = vnt_tests::serial();
    require_root();
    let sw = OvsSwitch::start("n", 234, Datapath::Netdev)?;
    sw.wait_ready(Duration::from_secs(60))?;
    let dst: IpAddr = sw.addrs[1].parse()?;
    let port = vnt_tests::unique_port();
    let traffic = Traffic::locate();
    let cfg = vnt_tests::temp_path("ovs-netdev.toml");
    std::fs::write(&cfg, "[journey]\nidle_timeout_ms = 1000\n")?;
    let agent = Agent::builder()
        .plugins("veth,ovs")
        .filter(format!("host {dst} and port {port}"))
        .arg("--config")
        .arg(&cfg)
        .start()?;
    let rx = traffic.udp_recv(&sw.ns[1], dst, port, 4, Duration::from_secs(20))?;
    traffic.udp_send(
        &sw.ns[0],
        &UdpSend {
            count: 4,
            rate: 4,
            sport: Some(port),
            ..UdpSend::to(dst, port)
        },
    )?;
    let got = rx.wait()?;
    ensure!(
        got == 4,
        "the receiver got {got} of 4 datagrams across the bridge"
    );
    std::thread::sleep(Duration::from_millis(300));
    let out = agent.stop()?;
    ensure!(
        out.stderr.contains("no flow, actions or upcalls"),
        "the plugin must say what it cannot see:\n{}",
        out.stderr
    );
    let js: Vec<_> = out
        .journeys
        .iter()
        .filter(|j| j.flow.dport == port && j.flow.proto == "udp")
        .collect();
    let delivered: Vec<_> = js
        .iter()
        .filter(|j| j.end == vnt_tests::JourneyEnd::Delivered)
        .collect();
    ensure!(
        delivered.len() == 4,
        "four delivered journeys expected:\n{}",
        js.iter()
            .map(|j| j.describe())
            .collect::<Vec<_>>()
            .join("\n")
    );
    for j in delivered {
        let at = |pred: &dyn Fn(&vnt_tests::Hop) -> bool| j.hops.iter().position(pred);
        let rx_port = at(&|h| h.label == "receive" && h.interface == sw.ports[0]);
        let ovs = at(&|h| h.plugin == "ovs" && h.label == "ovs");
        let tx_port =
            at(&|h| h.label == "xmit" && h.interface == sw.ports[1] && h.plugin == "veth");
        ensure!(
            rx_port.is_some() && ovs.is_some() && tx_port.is_some() && rx_port < ovs,
            "the OVS hop must come between the ports ({rx_port:?} < {ovs:?}, {tx_port:?}):\n{}",
            j.describe()
        );
        let hop = &j.hops[ovs.context("ovs hop")?];
        let attr = |k: &str| hop.attrs.get(k).and_then(|v| v.as_str()).unwrap_or("");
        ensure!(
            hop.interface == sw.ports[1]
                && attr("vnt.ovs.datapath") == "netdev"
                && attr("vnt.ovs.path") == "userspace"
                && attr("vnt.ovs.unavailable").contains("upcalls"),
            "the hop must be the userspace datapath's, out of {}, saying what it cannot see: {hop:?}",
            sw.ports[1]
        );
    }
    Ok(())
}

/// `check --plugins ovs` on this kernel: which hooks attach and why the
/// others do not. The kernel datapath's hooks need the openvswitch module
/// (raw_tp) or kprobes; the userspace datapath's hook attaches.
#[test]
fn check_says_which_ovs_hooks_attach_here_and_why_not() -> Result<()> {
    let _serial = vnt_tests::serial();
    require_root();
    let agent = locate_binary("vnt-agent", "VNT_AGENT_BIN");
    let run = kernel::check(&agent, &["--plugins", "ovs"])?;
    let r: serde_json::Value = serde_json::from_str(&run.json)?;
    let probes = r["plugins"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "ovs"))
        .and_then(|p| p["probes"].as_array())
        .context("no ovs plugin in the check report")?
        .clone();
    let probe = |n: &str| {
        probes
            .iter()
            .find(|p| p["name"] == n)
            .cloned()
            .unwrap_or_default()
    };
    ensure!(
        probe("ovs_netdev")["hook"].as_str().is_some(),
        "the userspace datapath's hook must attach: {}",
        probe("ovs_netdev")
    );
    let module_loaded = std::path::Path::new("/sys/module/openvswitch").exists();
    let kprobes = kernel::kprobes_expected();
    for (name, needs_kprobes) in [
        ("ovs_execute", false),
        ("ovs_upcall", false),
        ("ovs_flow_new", true),
        ("ovs_pkt_exec", true),
        ("ovs_drop", true),
        ("ovs_queued", true),
    ] {
        let p = probe(name);
        let tried = p["tried"].to_string();
        if module_loaded && kprobes {
            ensure!(p["hook"].as_str().is_some(), "{name} must attach here: {p}");
        } else if needs_kprobes && !kprobes {
            ensure!(
                p["hook"].is_null() && tried.contains("no kprobes"),
                "check must say {name} cannot attach for want of kprobes: {p}"
            );
        } else if !needs_kprobes && !module_loaded {
            ensure!(
                p["hook"].is_null() && tried.contains("its module is not loaded"),
                "check must say {name} cannot attach while the module is not loaded: {p}"
            );
        }
    }
    Ok(())
}

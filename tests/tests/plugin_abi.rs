//! The plugin ABI's promises, checked with real libraries and the real agent
//! (issue 9, acceptance 1):
//! - a plugin frozen at the ABI 1.0 layout (shorter table, `bool` flags, no
//!   element sizes) loads, attaches and adds hops to journeys;
//! - a newer minor and another major are refused naming both versions;
//! - a plugin whose `info()` panics, or whose table reports an absurd
//!   length, is disabled with an error naming it and the field, while veth
//!   goes on producing whole journeys.

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use vnt_tests::topology::{Family, Side, Topology};
use vnt_tests::traffic::{Traffic, UdpSend};
use vnt_tests::{
    fixture_plugin, locate_binary, require_root, serial, unique_port, Agent, AgentOutput,
};

/// Runs the agent with veth and `fixture`, sends `count` datagrams through
/// the veth topology, stops it and returns its output and the port used.
fn run_with_veth(fixture: &Path, count: u64) -> (AgentOutput, Topology, u16) {
    let topo = Topology::new().expect("topology");
    let port = unique_port();
    let agent = Agent::builder()
        .plugins(format!("veth,{}", fixture.display()))
        .filter(format!("port {port}"))
        .start()
        .expect("the agent starts with veth and the fixture");
    let traffic = Traffic::new(env!("CARGO_BIN_EXE_vnt-traffic"));
    let dst: IpAddr = topo.addr(Side::C2, Family::V4);
    let rx = traffic
        .udp_recv(
            &topo.c2.netns.name,
            dst,
            port,
            count,
            Duration::from_secs(20),
        )
        .expect("receiver");
    traffic
        .udp_send(
            &topo.c1.netns.name,
            &UdpSend {
                count,
                rate: 200,
                ..UdpSend::to(dst, port)
            },
        )
        .expect("traffic");
    assert_eq!(rx.wait().expect("receiver"), count);
    std::thread::sleep(Duration::from_millis(300));
    let out = agent.stop().expect("the agent stops cleanly");
    (out, topo, port)
}

/// Journeys of our datagrams that cross the whole veth path.
fn complete_journeys(out: &AgentOutput, topo: &Topology, port: u16) -> usize {
    let path = topo.path(Side::C1);
    out.journeys
        .iter()
        .filter(|j| j.has_port(port) && j.flow.family == 4 && j.check_hops(&path).is_ok())
        .count()
}

#[test]
fn plugin_frozen_at_abi_1_0_loads_and_adds_hops() {
    require_root();
    let _guard = serial();
    let (out, _topo, port) = run_with_veth(&fixture_plugin("abi10"), 50);
    let p = &out.summary.plugins["abi10"];
    assert!(
        !p.disabled,
        "the 1.0 plugin was disabled: {p:?}\n{}",
        out.stderr
    );
    assert_eq!(
        p.probes.get("abi10_receive").map(String::as_str),
        Some("tp_btf:netif_receive_skb"),
        "{p:?}"
    );
    // Its hops join the veth journeys of the same datagrams (same packet id).
    let joined = out
        .journeys
        .iter()
        .filter(|j| j.has_port(port))
        .filter(|j| j.hops.iter().any(|h| h.plugin == "veth"))
        .filter(|j| {
            j.hops
                .iter()
                .any(|h| h.plugin == "abi10" && h.label == "abi10-receive")
        })
        .count();
    assert!(
        joined >= 48,
        "only {joined} of 50 journeys carry the 1.0 plugin's hops\n{}",
        out.stderr
    );
}

#[test]
fn info_panic_disables_only_that_plugin() {
    require_root();
    let _guard = serial();
    let (out, topo, port) = run_with_veth(&fixture_plugin("panic_info"), 50);
    let p = &out.summary.plugins["panic-info"];
    assert!(p.disabled, "{:?}", out.summary);
    let reason = p.disabled_reason.as_deref().unwrap_or("");
    assert!(
        reason.contains("vnt_plugin_entry") && reason.contains("info() panics on purpose"),
        "{reason}"
    );
    assert!(
        out.stderr.contains("plugin disabled") && out.stderr.contains("info() panics on purpose"),
        "{}",
        out.stderr
    );
    assert!(!out.summary.plugins["veth"].disabled);
    let complete = complete_journeys(&out, &topo, port);
    assert!(
        complete >= 48,
        "only {complete} of 50 complete journeys; {} journeys; {:?}",
        out.journeys.len(),
        out.summary
    );
}

#[test]
fn absurd_length_disables_only_that_plugin() {
    require_root();
    let _guard = serial();
    let (out, topo, port) = run_with_veth(&fixture_plugin("absurd"), 50);
    let p = &out.summary.plugins["absurd"];
    assert!(p.disabled, "{:?}", out.summary);
    let reason = p.disabled_reason.as_deref().unwrap_or("");
    assert!(
        reason.contains("`absurd`")
            && reason.contains("`probes[0].alternatives_len`")
            && reason.contains("1073741824"),
        "{reason}"
    );
    assert!(!out.summary.plugins["veth"].disabled);
    let complete = complete_journeys(&out, &topo, port);
    assert!(
        complete >= 48,
        "only {complete} of 50 complete journeys; {} journeys; {:?}",
        out.journeys.len(),
        out.summary
    );
}

/// Exit code and stderr of the agent with these arguments.
fn agent(args: &[&str]) -> (i32, String) {
    let out = Command::new(locate_binary("vnt-agent", "VNT_AGENT_BIN"))
        .args(args)
        .env("VNT_LOG", "warn")
        .output()
        .expect("run vnt-agent");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), stderr)
}

#[test]
fn newer_minor_is_refused_naming_both_versions() {
    let so = fixture_plugin("abi_newer");
    let (code, err) = agent(&["--plugins", so.to_str().unwrap(), "--duration", "1"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("plugin ABI 1.999"), "{err}");
    assert!(err.contains("agent's ABI 1."), "{err}");
    assert!(err.contains("upgrade the agent"), "{err}");
}

/// Alone, a plugin at fault is still fatal: there is nothing to trace with.
#[test]
fn a_plugin_at_fault_alone_is_a_plugin_error() {
    for (fixture, says) in [
        ("panic_info", "info() panics on purpose"),
        ("absurd", "probes[0].alternatives_len"),
    ] {
        let so = fixture_plugin(fixture);
        let (code, err) = agent(&["--plugins", so.to_str().unwrap(), "--duration", "1"]);
        assert_eq!(code, 3, "{fixture}: {err}");
        assert!(err.contains(says), "{fixture}: {err}");
        assert!(!err.contains("SIGSEGV"), "{fixture}: {err}");
    }
}

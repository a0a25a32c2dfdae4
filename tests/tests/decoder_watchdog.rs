//! A decoder that hangs or floods costs its own plugin only (issue 9,
//! acceptance 5): the `hangy` fixture's decoder stops returning (or emits
//! 100 000 observations for one record) after a few records; the agent
//! disables it within a bounded time, detaches its programs, and veth goes
//! on making whole journeys; SIGTERM during the hang exits 0 with the summary.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use vnt_tests::topology::{Family, Side, Topology};
use vnt_tests::traffic::{Traffic, UdpSend};
use vnt_tests::{bpftool, require_root, serial, unique_port, Agent};

/// The agent's decoder::HANG_TIMEOUT (1 s) plus its tick and a loaded
/// machine's slack: the bound this test holds the watchdog to.
const DISABLED_WITHIN: Duration = Duration::from_secs(4);

/// Ids of loaded programs whose name starts with `prefix`.
fn programs(prefix: &str) -> Vec<u64> {
    bpftool::ids("prog", |p| {
        p["name"].as_str().is_some_and(|n| n.starts_with(prefix))
    })
}

/// A config file with `[plugin.hangy]` set to `mode`, removed on drop.
struct HangyConfig(std::path::PathBuf);

impl HangyConfig {
    fn new(mode: &str) -> HangyConfig {
        let p =
            std::env::temp_dir().join(format!("vnt-watchdog-{}-{mode}.toml", std::process::id()));
        std::fs::write(
            &p,
            format!("[plugin.hangy]\nmode = \"{mode}\"\nafter = 5\n"),
        )
        .expect("write config");
        HangyConfig(p)
    }
}

impl Drop for HangyConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Waits for `text` on the agent's stderr; how long it took.
fn wait_stderr(agent: &Agent, text: &str, limit: Duration) -> Duration {
    let t0 = Instant::now();
    while !agent.stderr().contains(text) && t0.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(20));
    }
    let stderr = agent.stderr();
    assert!(
        stderr.contains(text),
        "no `{text}` on stderr within {limit:?}:\n{stderr}"
    );
    t0.elapsed()
}

/// Runs veth and hangy in `mode`; the first datagrams trip hangy (its
/// program sees every received packet), the later ones must still make
/// whole veth journeys.
fn misbehaving_decoder_is_disabled(mode: &str, reason: &str) {
    require_root();
    let _guard = serial();
    let topo = Topology::new().expect("topology");
    let port = unique_port();
    let before = programs("hangy_");
    let config = HangyConfig::new(mode);
    let agent = Agent::builder()
        .plugins("veth,hangy")
        .filter(format!("port {port}"))
        .arg("--config")
        .arg(&config.0)
        .start()
        .expect("agent starts with both plugins");
    let traffic = Traffic::new(env!("CARGO_BIN_EXE_vnt-traffic"));
    let dst: IpAddr = topo.addr(Side::C2, Family::V4);
    let rx = traffic
        .udp_recv(&topo.c2.netns.name, dst, port, 120, Duration::from_secs(30))
        .expect("receiver");
    traffic
        .udp_send(
            &topo.c1.netns.name,
            &UdpSend {
                count: 20,
                rate: 200,
                ..UdpSend::to(dst, port)
            },
        )
        .expect("first traffic");
    // Sent in 0.1 s: the sixth record arrived by then.
    let took = wait_stderr(&agent, reason, DISABLED_WITHIN);
    eprintln!("hangy ({mode}) disabled {took:?} after the first traffic ended");
    std::thread::sleep(Duration::from_millis(200));
    let left: Vec<u64> = programs("hangy_")
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    assert!(
        left.is_empty(),
        "hangy programs still loaded after it was disabled: {left:?}"
    );

    traffic
        .udp_send(
            &topo.c1.netns.name,
            &UdpSend {
                count: 100,
                rate: 200,
                ..UdpSend::to(dst, port)
            },
        )
        .expect("second traffic");
    assert_eq!(rx.wait().expect("receiver"), 120);
    std::thread::sleep(Duration::from_millis(300));
    let out = agent
        .stop()
        .expect("agent exits 0 with a summary after a decoder misbehaved");
    let p = &out.summary.plugins["hangy"];
    assert!(p.disabled, "hangy not disabled: {:?}", out.summary);
    assert!(
        p.disabled_reason.as_deref().unwrap_or("").contains(reason),
        "{p:?}"
    );
    assert!(!out.summary.plugins["veth"].disabled);
    let path = topo.path(Side::C1);
    let complete = out
        .journeys
        .iter()
        .filter(|j| j.has_port(port) && j.flow.family == 4 && j.check_hops(&path).is_ok())
        .count();
    assert!(
        complete >= 118,
        "only {complete} of 120 datagrams made complete veth journeys"
    );
    assert!(
        out.journeys
            .iter()
            .all(|j| j.hops.iter().all(|h| h.plugin == "veth")),
        "a hangy observation made it into a journey"
    );
}

#[test]
fn hung_decoder_is_disabled_and_veth_goes_on() {
    misbehaving_decoder_is_disabled("hang", "decoder hung");
}

#[test]
fn flooding_decoder_is_disabled_and_veth_goes_on() {
    misbehaving_decoder_is_disabled("flood", "decoder flooded");
}

/// SIGTERM while the decoder is stuck, before the watchdog has given up on
/// it: the stop waits for the watchdog (not for the call), then exits 0 with
/// the summary, which says why hangy was disabled.
#[test]
fn sigterm_during_a_hang_exits_0_with_the_summary() {
    require_root();
    let _guard = serial();
    let topo = Topology::new().expect("topology");
    let port = unique_port();
    let config = HangyConfig::new("hang");
    let agent = Agent::builder()
        .plugins("veth,hangy")
        .filter(format!("port {port}"))
        .arg("--config")
        .arg(&config.0)
        .start()
        .expect("agent starts");
    let traffic = Traffic::new(env!("CARGO_BIN_EXE_vnt-traffic"));
    let dst: IpAddr = topo.addr(Side::C2, Family::V4);
    let rx = traffic
        .udp_recv(&topo.c2.netns.name, dst, port, 20, Duration::from_secs(20))
        .expect("receiver");
    traffic
        .udp_send(
            &topo.c1.netns.name,
            &UdpSend {
                count: 20,
                rate: 1000,
                ..UdpSend::to(dst, port)
            },
        )
        .expect("traffic");
    assert_eq!(rx.wait().expect("receiver"), 20);
    // The call hangs now; stop well before HANG_TIMEOUT. (Other packets on
    // the machine may have tripped it earlier: the stop is during a hang
    // either way, the thread stays stuck.)
    std::thread::sleep(Duration::from_millis(200));
    eprintln!(
        "watchdog fired before the SIGTERM: {}",
        agent.stderr().contains("decoder hung")
    );
    let t0 = Instant::now();
    let out = agent.stop().expect("exit 0 with a summary during a hang");
    let took = t0.elapsed();
    eprintln!("SIGTERM to exit during the hang: {took:?}");
    assert!(
        took < Duration::from_secs(6),
        "the stop took {took:?}: it waited for the hung call, not the watchdog"
    );
    let p = &out.summary.plugins["hangy"];
    assert!(p.disabled, "{:?}", out.summary);
    assert!(
        p.disabled_reason
            .as_deref()
            .unwrap_or("")
            .contains("decoder hung"),
        "{p:?}"
    );
    assert!(
        out.journeys.iter().filter(|j| j.has_port(port)).count() >= 19,
        "veth's journeys of the 20 datagrams are missing: {}",
        out.journeys.len()
    );
}

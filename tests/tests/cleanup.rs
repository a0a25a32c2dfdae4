//! After SIGTERM, and after SIGKILL followed by a restart, none of the
//! agent's programs, links or TC filters remain attached (issue #2,
//! acceptance 8). Checked with bpftool and tc, by the ids the agent's own
//! process held while it ran, so other agents on the machine do not matter.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use vnt_tests::bpftool::{self, held_by};
use vnt_tests::topology::Topology;
use vnt_tests::{require_root, serial, unique_port, Agent};

/// Ids of `kind` objects that still exist.
fn existing(kind: &str) -> BTreeSet<u64> {
    bpftool::ids(kind, |_| true).into_iter().collect()
}

/// Wait (the kernel frees programs after an RCU grace period) until none of
/// `ids` exists; return the ones left.
fn gone(kind: &str, ids: &BTreeSet<u64>) -> BTreeSet<u64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: BTreeSet<u64> = existing(kind).intersection(ids).copied().collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// TC filters on every link of the topology (ingress and egress).
fn tc_filters(topo: &Topology) -> String {
    let mut all = String::new();
    for link in [
        &topo.c1.veth,
        &topo.c1.peer,
        &topo.c2.veth,
        &topo.c2.peer,
        &topo.bridge,
    ] {
        for dir in ["ingress", "egress"] {
            let out = std::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &link.netns,
                    "tc",
                    "filter",
                    "show",
                    "dev",
                    &link.name,
                    dir,
                ])
                .output()
                .expect("tc");
            all.push_str(&String::from_utf8_lossy(&out.stdout));
        }
    }
    all
}

fn start(port: u16) -> (Agent, u32, BTreeSet<u64>, BTreeSet<u64>) {
    let agent = Agent::builder()
        .filter(format!("port {port}"))
        .start()
        .expect("agent starts");
    let pid = agent.pid().expect("pid");
    let progs = held_by("prog", pid);
    let links = held_by("link", pid);
    assert!(
        progs.len() >= 4,
        "expected the veth programs to be loaded by pid {pid}, found {progs:?}"
    );
    assert!(
        links.len() >= 4,
        "expected one link per probe held by pid {pid}, found {links:?}"
    );
    // bpftool sees the same objects the agent holds.
    assert!(progs.is_subset(&existing("prog")) && links.is_subset(&existing("link")));
    (agent, pid, progs, links)
}

#[test]
fn sigterm_leaves_nothing_attached() {
    require_root();
    let _guard = serial();
    let topo = Topology::new().expect("topology");
    let (agent, _pid, progs, links) = start(unique_port());
    agent.stop().expect("clean stop");
    assert_eq!(
        gone("link", &links),
        BTreeSet::new(),
        "links left after SIGTERM"
    );
    assert_eq!(
        gone("prog", &progs),
        BTreeSet::new(),
        "programs left after SIGTERM"
    );
    assert_eq!(tc_filters(&topo), "", "TC filters left after SIGTERM");
}

#[test]
fn sigkill_then_restart_leaves_nothing_attached() {
    require_root();
    let _guard = serial();
    let topo = Topology::new().expect("topology");
    let port = unique_port();
    let (agent, pid, progs, links) = start(port);
    drop(agent); // SIGKILL: no chance to clean up
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "agent {pid} still alive"
    );
    assert_eq!(
        gone("link", &links),
        BTreeSet::new(),
        "links left after SIGKILL"
    );
    assert_eq!(
        gone("prog", &progs),
        BTreeSet::new(),
        "programs left after SIGKILL"
    );
    assert_eq!(tc_filters(&topo), "", "TC filters left after SIGKILL");

    // A restart works and its own stop leaves nothing either.
    let (agent, _pid, progs2, links2) = start(port);
    assert!(
        progs2.is_disjoint(&progs),
        "restart reuses the dead agent's programs?"
    );
    agent.stop().expect("clean stop after restart");
    assert_eq!(gone("link", &links2), BTreeSet::new());
    assert_eq!(gone("prog", &progs2), BTreeSet::new());
    assert_eq!(tc_filters(&topo), "", "TC filters left after restart");
}

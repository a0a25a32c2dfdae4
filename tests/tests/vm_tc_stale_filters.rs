//! A clean start after SIGKILL where TC programs are netlink filters (issue
//! #4, acceptance 4): the agent removes the filters a killed agent left, and
//! only those.
//!
//! On an interface of a topology (the bridge port `<p>h1` in the host
//! namespace) there are, before any agent: a `u32` filter and a bpf filter
//! loaded by `tc` itself from the fixture's object (same program, not ours).
//! Agent A attaches the `tcwatch` fixture's TC probe there and keeps running;
//! agent B does the same and is SIGKILLed. With netlink filters B's filter
//! stays (and keeps its program loaded); agent C starts and must remove it,
//! while A's live filter, the `u32` filter and tc's bpf filter stay exactly as
//! they were. After C and A stop, only the two foreign filters remain.
//!
//! Linux 6.1 has only netlink filters: the VM tier runs this in its 6.1 guest.
//! Newer kernels attach tcx links (file descriptors, gone with a killed
//! process); there the same scenario runs twice: as is (tcx) and with
//! `VNT_TC_MODE=netlink`, which makes the agent use netlink filters anyway.
//!
//! Privileged: run as root after `cargo build --release --workspace`.

use anyhow::{ensure, Context, Result};
use std::process::Command;
use std::time::{Duration, Instant};
use vnt_tests::kernel::{self, TcFilter};
use vnt_tests::{exec_in, locate_binary, require_root, run, vm, Agent, Topology};

const PROGRAM: &str = "tcwatch_ingress";

fn ours(filters: &[TcFilter]) -> Vec<TcFilter> {
    filters
        .iter()
        .filter(|f| f.kind == "bpf" && f.bpf_name.as_deref() == Some(PROGRAM))
        .cloned()
        .collect()
}

fn foreign(filters: &[TcFilter]) -> Vec<TcFilter> {
    filters
        .iter()
        .filter(|f| !(f.kind == "bpf" && f.bpf_name.as_deref() == Some(PROGRAM)))
        .cloned()
        .collect()
}

fn start(mode: Option<&str>, dev: &str) -> Result<Agent> {
    match mode {
        Some(m) => std::env::set_var("VNT_TC_MODE", m),
        None => std::env::remove_var("VNT_TC_MODE"),
    }
    let a = Agent::builder()
        .plugins("tcwatch")
        .filter(format!("dev {dev}"))
        .start();
    std::env::remove_var("VNT_TC_MODE");
    a.context("the agent must attach the tcwatch TC probe")
}

/// Waits until the process is gone (SIGKILL is asynchronous; the zombie is
/// reaped by the harness's Child on drop).
fn wait_gone(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.is_empty() || stat.split(") ").nth(1).is_some_and(|s| s.starts_with('Z')) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The programs named `tcwatch_ingress` once they equal `want` (a released
/// program is freed asynchronously, so give the kernel a moment), or the last
/// list seen after 5 s.
fn programs_settle(want: impl Fn(&[u64]) -> bool) -> Result<Vec<u64>> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = kernel::programs_named(PROGRAM)?;
        if want(&now) || Instant::now() > deadline {
            return Ok(now);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Returns the TC mode the agents used (`netlink` or `tcx`).
fn scenario(forced: Option<&str>) -> Result<&'static str> {
    let topo = Topology::new()?;
    let (ns, dev) = (topo.host.name.as_str(), topo.c1.peer.name.as_str());

    // Filters that are not ours: a u32 filter, and a bpf filter tc loads from
    // the fixture's own object file (same program name inside).
    run(&mut exec_in(
        ns,
        "tc",
        ["qdisc", "add", "dev", dev, "clsact"],
    ))?;
    run(&mut exec_in(
        ns,
        "tc",
        [
            "filter", "add", "dev", dev, "ingress", "pref", "10", "u32", "match", "u32", "0", "0",
        ],
    ))?;
    let obj = kernel::built_object("vnt-fixture-plugin-tc", "tcwatch.bpf.o")?;
    run(&mut exec_in(
        ns,
        "tc",
        [
            "filter",
            "add",
            "dev",
            dev,
            "ingress",
            "pref",
            "20",
            "bpf",
            "da",
            "obj",
            obj.to_str().context("utf-8 path")?,
            "sec",
            "classifier",
        ],
    ))?;
    let before = kernel::tc_ingress_filters(ns, dev)?;
    ensure!(
        before.len() == 2 && ours(&before).is_empty(),
        "unexpected filters before any agent: {before:?}"
    );
    let programs_before = kernel::programs_named(PROGRAM)?;

    let a = start(forced, dev)?;
    let after_a = kernel::tc_ingress_filters(ns, dev)?;
    let mode = if ours(&after_a).len() == 1 {
        "netlink"
    } else {
        "tcx"
    };
    ensure!(
        ours(&after_a).len() <= 1 && foreign(&after_a) == before,
        "after agent A: {after_a:?}"
    );
    let programs_a = kernel::programs_named(PROGRAM)?;
    ensure!(
        programs_a.len() == programs_before.len() + 1,
        "agent A must have loaded one {PROGRAM}: {programs_before:?} -> {programs_a:?}"
    );

    let b = start(forced, dev)?;
    let b_pid = b.pid().context("agent B pid")?;
    let after_b = kernel::tc_ingress_filters(ns, dev)?;
    let b_filters: Vec<TcFilter> = ours(&after_b)
        .into_iter()
        .filter(|f| !ours(&after_a).contains(f))
        .collect();
    // SAFETY: kill(2) on the agent's pid; `b` has not been reaped yet.
    unsafe { libc::kill(b_pid as libc::pid_t, libc::SIGKILL) };
    wait_gone(b_pid);
    drop(b);
    let after_kill = kernel::tc_ingress_filters(ns, dev)?;
    let programs_after_kill = if mode == "netlink" {
        kernel::programs_named(PROGRAM)?
    } else {
        programs_settle(|p| p == programs_a.as_slice())?
    };
    eprintln!(
        "mode {mode}: before {before:?}\n  with A {:?}\n  with B {b_filters:?}\n  after SIGKILL of B {:?}",
        ours(&after_a),
        ours(&after_kill)
    );
    if mode == "netlink" {
        ensure!(
            b_filters.len() == 1,
            "agent B must have added one netlink filter: {after_b:?}"
        );
        ensure!(
            ours(&after_kill).contains(&b_filters[0]),
            "a killed agent's netlink filter stays (that is what the start-up cleaning is for): {after_kill:?}"
        );
        ensure!(
            programs_after_kill.len() == programs_a.len() + 1,
            "B's program stays loaded with its filter: {programs_after_kill:?}"
        );
    } else {
        ensure!(
            programs_after_kill == programs_a,
            "tcx: B's program must be gone with B: {programs_a:?} -> {programs_after_kill:?}"
        );
    }

    let c = start(forced, dev)?;
    let with_c = kernel::tc_ingress_filters(ns, dev)?;
    let programs_c = programs_settle(|p| p.len() == programs_a.len() + 1)?;
    ensure!(
        foreign(&with_c) == before,
        "filters that are not ours changed: {before:?} -> {with_c:?}"
    );
    ensure!(
        b_filters.iter().all(|f| !with_c.contains(f)),
        "the killed agent's filter {b_filters:?} is still there: {with_c:?}"
    );
    ensure!(
        ours(&after_a).iter().all(|f| with_c.contains(f)),
        "the live agent A's filter was removed: {:?} -> {with_c:?}",
        ours(&after_a)
    );
    ensure!(
        programs_c.len() == programs_a.len() + 1,
        "exactly A's and C's programs (and tc's) must be loaded: {programs_c:?}"
    );
    if mode == "netlink" {
        ensure!(ours(&with_c).len() == 2, "A's and C's filters: {with_c:?}");
    }

    let c_out = c.stop()?;
    let a_out = a.stop()?;
    ensure!(
        c_out.stderr.contains("removed a stale TC filter") == (mode == "netlink"),
        "agent C must log the removal (netlink only):\n{}",
        c_out.stderr
    );
    let end = kernel::tc_ingress_filters(ns, dev)?;
    ensure!(
        end == before,
        "after A and C stopped only the foreign filters may remain: {end:?}"
    );
    let programs_end = programs_settle(|p| p == programs_before.as_slice())?;
    ensure!(
        programs_end == programs_before,
        "programs left loaded: {programs_before:?} -> {programs_end:?}"
    );
    ensure!(
        a_out
            .summary
            .plugins
            .get("tcwatch")
            .is_some_and(|p| !p.disabled),
        "{:?}",
        a_out.summary
    );
    // tc's own bpf filter goes with the topology; delete the u32 one explicitly.
    let _ = run(Command::new("ip").args([
        "netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "clsact",
    ]));
    Ok(mode)
}

#[test]
fn a_killed_agents_stale_filters_are_removed_and_only_those() -> Result<()> {
    let _serial = vnt_tests::serial();
    require_root();
    locate_binary("vnt-agent", "VNT_AGENT_BIN");
    let native = scenario(None)?;
    let release = kernel::release();
    let mut modes = vec![native];
    if native == "tcx" {
        modes.push(scenario(Some("netlink"))?);
    }
    ensure!(
        modes.contains(&"netlink"),
        "the netlink path was not exercised: {modes:?}"
    );
    let line = format!(
        "TC on {release}: agents attach as {native} by default; stale-filter cleaning checked with {modes:?}"
    );
    vm::progress(&line);
    vm::write_report(
        "tc",
        &serde_json::json!({ "kernel": release, "native_mode": native, "modes": modes }),
    )?;
    Ok(())
}

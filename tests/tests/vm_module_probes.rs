//! Issue 9, acceptance 4: a kprobe on a module function and a read of a
//! module type through module BTF, on Debian's 6.1 and 6.12 kernels (the VM
//! tier, tests/tests/vm_kernels.rs, runs this in both guests), with the
//! fixture `kmod` (kprobe `vxlan:vxlan_xmit`, reading `struct vxlan_dev`).
//!
//! In a guest, where vxlan is a module:
//! 1. With the module unloaded, `check` says the probe waits for module
//!    `vxlan`; a run starts anyway, says so, and attaches the kprobe when the
//!    module loads (creating a vxlan device loads it); the probe then runs
//!    (`kernel.seen`).
//! 2. With the module loaded at start, the agent relocates the program
//!    against vmlinux and vxlan's BTF merged: the program reads the device's
//!    VNI from `struct vxlan_dev` (a type vmlinux's BTF lacks there), and
//!    the value equals the VNI the device was created with.
//! 3. Open vSwitch's own drop reasons (`enum ovs_drop_reason`, openvswitch
//!    module BTF, Linux >= 6.4) are named by `check` once the module is loaded.
//!
//! On a kernel without kprobes (this project's host), `check` must say the
//! probe cannot attach and why; the guest reports which branch ran, and
//! vm_kernels.rs requires the full one.
//!
//! Privileged: run as root after `cargo build --release --workspace`.

use anyhow::{bail, ensure, Context, Result};
use std::process::Command;
use std::time::{Duration, Instant};
use vnt_tests::{exec_in, kernel, locate_binary, require_root, run, vm, Agent};

const PLUGIN: &str = "kmod";
const PROBE: &str = "kmod_vxlan_xmit";
const VNI: u32 = 4242;

fn module_loaded(m: &str) -> bool {
    std::fs::read_to_string("/proc/modules")
        .is_ok_and(|s| s.lines().any(|l| l.split(' ').next() == Some(m)))
}

/// A network namespace with a vxlan device (VNI 4242) that has an address
/// and is up; deleted on drop.
struct VxlanNs {
    ns: String,
    dev: String,
}

impl VxlanNs {
    fn new(tag: &str) -> Result<VxlanNs> {
        let ns = format!("v9k{tag}{}", std::process::id() % 100_000);
        run(Command::new("ip").args(["netns", "add", &ns]))?;
        let me = VxlanNs {
            dev: "vxk0".into(),
            ns,
        };
        run(&mut exec_in(
            &me.ns,
            "ip",
            [
                "link",
                "add",
                &me.dev,
                "type",
                "vxlan",
                "id",
                "4242",
                "dstport",
                "4789",
                "local",
                "127.0.0.1",
            ],
        ))?;
        run(&mut exec_in(
            &me.ns,
            "ip",
            ["addr", "add", "10.209.78.1/24", "dev", &me.dev],
        ))?;
        run(&mut exec_in(&me.ns, "ip", ["link", "set", &me.dev, "up"]))?;
        run(&mut exec_in(&me.ns, "ip", ["link", "set", "lo", "up"]))?;
        Ok(me)
    }

    /// ARP requests and pings out of the vxlan device: vxlan_xmit runs.
    fn traffic(&self) -> Result<()> {
        exec_in(
            &self.ns,
            "ping",
            ["-c", "3", "-i", "0.2", "-W", "1", "10.209.78.2"],
        )
        .output()
        .context("ping")
        .map(drop)
    }
}

impl Drop for VxlanNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

fn wait_stderr(agent: &Agent, needle: &str, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if agent.stderr().contains(needle) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "the agent did not log `{needle}` within {within:?}:\n{}",
        agent.stderr()
    )
}

/// The value in the fixture's `kmod_vni` map (bpftool, with or without BTF formatting).
fn vni_in_map() -> Result<u32> {
    let json = run(Command::new("bpftool").args(["-j", "map", "dump", "name", "kmod_vni"]))?;
    let v: serde_json::Value = serde_json::from_str(&json)?;
    let entry = &v[0];
    if let Some(n) = entry["formatted"]["value"].as_u64() {
        return Ok(n as u32);
    }
    let bytes: Vec<u8> = entry["value"]
        .as_array()
        .with_context(|| format!("unexpected bpftool output: {json}"))?
        .iter()
        .map(|b| {
            b.as_str()
                .and_then(|s| u8::from_str_radix(s.trim_start_matches("0x"), 16).ok())
                .unwrap_or(0)
        })
        .collect();
    ensure!(bytes.len() == 4, "unexpected value {json}");
    Ok(u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// (major, minor) of the running kernel.
fn version() -> (u32, u32) {
    let r = kernel::release();
    let mut it = r.split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

#[test]
fn a_kprobe_on_a_module_function_waits_for_the_module_and_reads_module_types() -> Result<()> {
    let _serial = vnt_tests::serial();
    require_root();
    let agent_bin = locate_binary("vnt-agent", "VNT_AGENT_BIN");
    let release = kernel::release();

    if !kernel::kprobes_expected() {
        // This kernel has no kprobes: check must say so for the module kprobe.
        let c = kernel::check(&agent_bin, &["--plugins", PLUGIN])?;
        let p = c.report.probe(PLUGIN, PROBE);
        ensure!(
            p.hook.is_none() && p.tried.iter().any(|t| t.error.contains("no kprobes")),
            "without kprobes the probe cannot attach, and check must say why: {p:?}"
        );
        vm::write_report(
            "module_probes",
            &serde_json::json!({"kernel": release, "kprobes": false}),
        )?;
        return Ok(());
    }

    // 1. The module is not loaded: the probe waits for it.
    if module_loaded("vxlan") {
        run(Command::new("modprobe").args(["-r", "vxlan"]))
            .context("vxlan must be a module that can be unloaded in the guest")?;
    }
    ensure!(!module_loaded("vxlan"), "vxlan still loaded");
    let c = kernel::check(&agent_bin, &["--plugins", PLUGIN])?;
    let p = c.report.probe(PLUGIN, PROBE);
    ensure!(
        p.hook.as_deref() == Some("kprobe:vxlan:vxlan_xmit")
            && p.detail
                .as_deref()
                .is_some_and(|d| d.contains("module `vxlan` is not loaded")),
        "check must say the probe waits for module vxlan: {p:?}"
    );
    let agent = Agent::builder()
        .plugins(PLUGIN)
        .start()
        .context("the agent must start while the module is not loaded")?;
    ensure!(
        agent.stderr().contains("kprobe waits for its module"),
        "the agent must say it waits for the module:\n{}",
        agent.stderr()
    );
    let started = Instant::now();
    let late = VxlanNs::new("a")?; // `ip link add ... type vxlan` loads the module
    ensure!(
        module_loaded("vxlan"),
        "creating a vxlan device did not load vxlan"
    );
    wait_stderr(
        &agent,
        "module loaded: kprobe attached",
        Duration::from_secs(10),
    )?;
    let attach_ms = started.elapsed().as_millis();
    late.traffic()?;
    let out = agent.stop()?;
    ensure!(
        out.summary.kernel.seen > 0,
        "the kprobe attached after the module loaded must run: {:?}",
        out.summary.kernel
    );
    let seen_late = out.summary.kernel.seen;

    // 2. The module is loaded at start: CO-RE reads of its types relocate.
    let agent = Agent::builder()
        .plugins(PLUGIN)
        .start()
        .context("the agent must start with the module loaded")?;
    ensure!(
        agent
            .stderr()
            .contains("CO-RE relocations use vmlinux and module BTF"),
        "the agent must relocate against module BTF:\n{}",
        agent.stderr()
    );
    // How long reading and merging the module BTF took (the agent logs it).
    let merge_ms: Option<u64> = agent
        .stderr()
        .lines()
        .find(|l| l.contains("CO-RE relocations use vmlinux and module BTF"))
        .and_then(|l| l.split(" ms=").nth(1))
        .and_then(|v| v.split_whitespace().next()?.parse().ok());
    late.traffic()?;
    let vni = vni_in_map()?;
    let out = agent.stop()?;
    ensure!(
        vni == VNI,
        "the program read VNI {vni} from struct vxlan_dev, the device has {VNI}"
    );
    ensure!(out.summary.kernel.seen > 0, "{:?}", out.summary.kernel);
    drop(late);

    // 3. Open vSwitch's drop reasons from its module BTF.
    run(Command::new("modprobe").arg("openvswitch"))?;
    let c = kernel::check(&agent_bin, &["--plugins", PLUGIN])?;
    let reasons = c.report.feature("drop_reasons").detail.clone();
    let ovs_expected = version() >= (6, 4);
    ensure!(
        reasons.contains("OVS_DROP_LAST_ACTION") == ovs_expected,
        "{release}: OVS drop reasons expected from module BTF: {ovs_expected}; check says: {reasons}"
    );
    vm::write_report(
        "module_probes",
        &serde_json::json!({
            "kernel": release,
            "kprobes": true,
            "attach_after_device_created_ms": attach_ms,
            "module_btf_merge_ms": merge_ms,
            "seen_after_late_attach": seen_late,
            "vni": vni,
            "drop_reasons": reasons,
        }),
    )?;
    eprintln!("{release}: late attach {attach_ms} ms after the device was created (module load included), module BTF merged in {merge_ms:?} ms, VNI {vni} read through module BTF; {reasons}");
    Ok(())
}

//! The VM tier (issue #4): the privileged scenarios inside Debian's stock
//! 6.1 and 6.12 kernels, booted under virtme-ng with software emulation,
//! running the binaries this workspace just built.
//!
//! Each test boots one kernel and runs these test binaries inside, as root:
//! `check_kernel` (the `check` report against the kernel), `check_required_probe`,
//! `check_btf`, `vm_hook_variants` (journeys equal across kprobe, fentry,
//! tp_btf and raw_tp), `vm_veth_variant_aware`, `vm_tc_stale_filters` (SIGKILL
//! and restart with netlink TC filters), `tc_device_watch` (TC probes on
//! devices chosen by kind, netlink filters on 6.1), `vm_module_probes` (a kprobe on a
//! module function, attached when the module loads, and a CO-RE read of a
//! module type through module BTF), `vm_ovs` (the ovs plugin on Open vSwitch's
//! kernel datapath), `flannel_vxlan` (the flannel plugin through Debian's
//! verifiers) and `veth_e2e`. Two veth_e2e tests
//! are skipped by name in the guests and replaced by their variant-aware
//! versions in `vm_veth_variant_aware` (see that file for why). Then the
//! reports the guest tests left are checked against what Debian's kernels are
//! known to offer (kprobes and fentry available, veth built as a module, so
//! `veth_xmit` uses its kprobe and `veth_rx` its fentry variant; netlink TC on
//! 6.1, tcx on 6.12), and a table of the variant each probe used on each
//! kernel, this host's included, is printed with the tier's duration.
//!
//! Nothing skips: without virtme-ng, qemu or the kernels (scripts/install-vm-deps.sh)
//! or when a guest does not boot, the test fails. Run by scripts/vm-test.sh
//! (part of scripts/test.sh); by hand:
//! `cargo test --release -p vnt-tests --test vm_kernels -- --test-threads=1`.

use anyhow::{bail, ensure, Context, Result};
use std::time::Instant;
use vnt_tests::kernel;
use vnt_tests::vm::{self, progress, Guest, Kernel, Step};
use vnt_tests::{locate_binary, require_root};

/// Test binaries run in every guest, in order, with their arguments.
const STEPS: [(&str, &str); 11] = [
    ("check_kernel", ""),
    ("check_required_probe", ""),
    ("check_btf", ""),
    ("vm_hook_variants", ""),
    ("vm_veth_variant_aware", ""),
    ("vm_tc_stale_filters", ""),
    ("tc_device_watch", ""),
    ("vm_module_probes", ""),
    ("vm_ovs", ""),
    // flannel's programs through Debian's verifiers (6.1 and 6.12 count a
    // call chain's stack more coarsely than the host's kernel).
    ("flannel_vxlan", ""),
    (
        "veth_e2e",
        "--skip bpftrace_agrees_on_the_c1_to_bridge_hop --skip tcp_segments_seen_at_first_hop_complete",
    ),
];

fn variants_line(kernel: &str, r: &serde_json::Value) -> String {
    let mut s = format!("  {kernel:<30}");
    for probe in ["veth_xmit", "veth_rx", "veth_receive", "veth_drop"] {
        let hook = r["plugins"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == "veth"))
            .and_then(|p| p["probes"].as_array())
            .and_then(|ps| ps.iter().find(|q| q["name"] == probe))
            .and_then(|q| q["hook"].as_str())
            .unwrap_or("NONE");
        s += &format!(" {hook:<27}");
    }
    s
}

fn tier(series: &str) -> Result<()> {
    let _serial = vnt_tests::serial();
    require_root();
    let start = Instant::now();
    let agent = locate_binary("vnt-agent", "VNT_AGENT_BIN");
    let k = Kernel::fetch(series)?;
    // VNT_VM_STEPS=a,b runs only those steps (while working on them); the
    // checks below then only look at what those steps report.
    let only: Option<Vec<String>> = std::env::var("VNT_VM_STEPS")
        .ok()
        .map(|s| s.split(',').map(str::to_owned).collect());
    let wanted = |n: &str| only.as_ref().is_none_or(|o| o.iter().any(|w| w == n));
    let names: Vec<&str> = STEPS
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| wanted(n))
        .collect();
    let bins = vm::test_binaries(&names)?;
    let steps: Vec<Step> = STEPS
        .iter()
        .filter(|(n, _)| wanted(n))
        .map(|(name, args)| Step {
            name: (*name).to_owned(),
            command: format!(
                "{} --test-threads=1 --nocapture {args}",
                bins[*name].display()
            ),
        })
        .collect();
    let env = [
        ("VNT_AGENT_BIN", agent.display().to_string()),
        ("VNT_KERNEL_CONFIG", k.config.display().to_string()),
        ("CI", std::env::var("CI").unwrap_or_else(|_| "true".into())),
        ("RUST_BACKTRACE", "1".to_owned()),
    ];
    let run = Guest::new(&k).run(&steps, &env)?;

    let mut failed = Vec::new();
    for s in &run.steps {
        match s.code {
            Some(0) => {}
            code => failed.push(format!(
                "--- {} exited with {code:?} in the {} guest; last lines:\n{}",
                s.name,
                k.release,
                s.tail(60)
            )),
        }
    }
    ensure!(
        failed.is_empty(),
        "{} of {} steps failed in {} (logs in {}):\n{}",
        failed.len(),
        run.steps.len(),
        k.release,
        run.out_dir.display(),
        failed.join("\n")
    );

    // A kprobe on a module function and a module-BTF read (issue 9, acceptance 4).
    if wanted("vm_module_probes") {
        let m = vm::read_report(&run, "module_probes")?;
        ensure!(
            m["kprobes"] == true
                && m["vni"] == 4242
                && m["seen_after_late_attach"].as_u64() > Some(0),
            "{}: the module kprobe scenario did not run in full: {m}",
            k.release
        );
        progress(&format!(
            "vm {series}: module kprobe attached {} ms after the vxlan device was created (module load included); module BTF merged in {} ms; VNI {} read through module BTF; drop reasons: {}",
            m["attach_after_device_created_ms"], m["module_btf_merge_ms"], m["vni"], m["drop_reasons"]
        ));
    }
    if only.is_some() {
        progress(&format!("vm {series}: only {names:?} ran (VNT_VM_STEPS)"));
        return Ok(());
    }

    // What Debian's kernels offer, as the guest's own check reported it.
    let check = vm::read_report(&run, "check")?;
    for f in ["kprobes", "fentry", "btf", "ringbuf", "tc"] {
        ensure!(
            check["features"][f]["available"] == true,
            "{}: `{f}` must be available on Debian's kernel: {}",
            k.release,
            check["features"][f]
        );
    }
    let want_tc = if series == "6.1" { "netlink" } else { "tcx" };
    ensure!(
        check["tc_mode"] == want_tc,
        "{}: tc mode {}, expected {want_tc}",
        k.release,
        check["tc_mode"]
    );
    let veth_module = !k.config_is_y("CONFIG_VETH");
    let want_xmit = if veth_module {
        "kprobe:veth_xmit"
    } else {
        "fentry:veth_xmit"
    };
    let line = variants_line(&k.release, &check);
    ensure!(
        line.contains(want_xmit) && line.contains("fentry:__netif_rx"),
        "{}: expected veth_xmit on {want_xmit} and veth_rx on fentry:__netif_rx:\n{line}",
        k.release
    );

    let variants = vm::read_report(&run, "hook_variants")?;
    let runs = variants["runs"].as_array().context("hook_variants.runs")?;
    let used: Vec<String> = runs
        .iter()
        .map(|r| {
            format!(
                "{}+{}",
                r["probes"]["veth_xmit"].as_str().unwrap_or("?"),
                r["probes"]["veth_rx"].as_str().unwrap_or("?")
            )
        })
        .collect();
    ensure!(
        runs.len() >= 4,
        "{}: expected kprobe/fentry, kprobe, tp_btf and raw_tp runs, got {used:?}",
        k.release
    );
    let tc = vm::read_report(&run, "tc")?;
    ensure!(
        tc["native_mode"] == want_tc,
        "{}: the TC scenario ran as {}, expected {want_tc}",
        k.release,
        tc["native_mode"]
    );

    // The table: this host and the guest, side by side.
    let host = kernel::check(&agent, &["--plugins", "veth"])?;
    let host_json: serde_json::Value = serde_json::from_str(&host.json)?;
    let mut table = format!(
        "hook variant per probe (vnt-agent check):\n  {:<30} {:<27} {:<27} {:<27} {:<27}\n",
        "kernel", "veth_xmit", "veth_rx", "veth_receive", "veth_drop"
    );
    table += &variants_line(
        &format!("{} (host)", host.report.kernel.release),
        &host_json,
    );
    table.push('\n');
    table += &variants_line(&format!("{} (guest)", k.release), &check);
    table += &format!(
        "\n  journeys compared in the guest across: {}\n",
        used.join(", ")
    );
    progress(&table);
    let secs = start.elapsed().as_secs_f64();
    progress(&format!(
        "vm {series}: {} passed {} steps in {:.0} s (guest {:.0} s); logs in {}",
        k.release,
        run.steps.len(),
        secs,
        run.duration.as_secs_f64(),
        run.out_dir.display()
    ));
    if secs > 30.0 * 60.0 {
        bail!("the {series} guest took {secs:.0} s, more than the 30 min budget of one kernel");
    }
    Ok(())
}

#[test]
fn vm_tier_debian_6_1() -> Result<()> {
    tier("6.1")
}

#[test]
fn vm_tier_debian_6_12() -> Result<()> {
    tier("6.12")
}

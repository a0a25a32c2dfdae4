//! `vnt-agent check` on the running kernel (issue #4, acceptance 2): the
//! features it reports must match what the kernel really has, found out
//! without the agent (tracefs, bpftrace, the kernel's configuration), and the
//! variant it names for each veth probe must be the one those features allow.
//!
//! On the project's machines (no kprobes, no fentry) this shows the
//! tracepoint variants; the VM tier (tests/tests/vm_kernels.rs) runs the same
//! test inside Debian 6.1 and 6.12 guests, where kprobes and fentry are
//! available, and reads the report this test leaves in `$VNT_REPORT_DIR`.
//!
//! Privileged: run as root after `cargo build --release`.

use anyhow::{ensure, Result};
use std::path::PathBuf;
use vnt_tests::kernel::{self, CheckReport};
use vnt_tests::{locate_binary, require_root};

fn agent() -> PathBuf {
    locate_binary("vnt-agent", "VNT_AGENT_BIN")
}

/// The variant a veth probe must use given what the kernel offers.
fn expected_xmit(fentry: bool, kprobes: bool, veth_module: Option<&str>) -> &'static str {
    match (fentry, kprobes) {
        // fentry on a module function needs module BTF (not in aya 0.14).
        (true, _) if veth_module.is_none() => "fentry:veth_xmit",
        (_, true) => "kprobe:veth_xmit",
        _ => "tp_btf:net_dev_start_xmit",
    }
}

fn expected_rx(fentry: bool, kprobes: bool) -> &'static str {
    match (fentry, kprobes) {
        (true, _) => "fentry:__netif_rx",
        (_, true) => "kprobe:__netif_rx",
        _ => "tp_btf:netif_rx",
    }
}

fn table(r: &CheckReport) -> String {
    let mut s = format!("check on {} (tc: {}):\n", r.kernel.release, r.tc_mode);
    for (name, f) in &r.features {
        s += &format!(
            "  {name:<13} {:<3} {}\n",
            if f.available { "yes" } else { "no" },
            f.detail
        );
    }
    for p in &r.plugins {
        for q in &p.probes {
            s += &format!(
                "  {}/{:<14} -> {}\n",
                p.name,
                q.name,
                q.hook.as_deref().unwrap_or("NONE")
            );
        }
    }
    s
}

#[test]
fn check_matches_the_kernel_and_names_the_variants_in_use() -> Result<()> {
    require_root();
    // kprobe:veth_xmit needs veth_xmit in the kernel: load the module first.
    kernel::ensure_function("veth_xmit", "veth")?;
    let run = kernel::check(&agent(), &["--plugins", "veth"])?;
    let r = &run.report;
    eprintln!("{}", table(r));
    ensure!(
        run.code == 0 && r.ok,
        "check failed (exit {}): {:?}\n{}",
        run.code,
        r.problems,
        run.stderr
    );

    let kprobes = kernel::kprobes_expected();
    let fentry = kernel::fentry_expected()?;
    let veth_module = kernel::module_of("veth_xmit");
    eprintln!(
        "independently: kprobes {kprobes} (tracefs kprobe_events), fentry {fentry} (bpftrace \
         --info kfunc), veth_xmit in {}",
        veth_module.as_deref().unwrap_or("vmlinux")
    );
    ensure!(
        r.feature("kprobes").available == kprobes,
        "check says kprobes available={}, the kernel says {kprobes}: {}",
        r.feature("kprobes").available,
        r.feature("kprobes").detail
    );
    ensure!(
        r.feature("fentry").available == fentry,
        "check says fentry available={}, bpftrace says {fentry}: {}",
        r.feature("fentry").available,
        r.feature("fentry").detail
    );
    for name in [
        "btf",
        "ringbuf",
        "raw_tp",
        "tracefs",
        "bpffs",
        "tc",
        "lockdown",
        "capabilities",
    ] {
        ensure!(
            r.feature(name).available,
            "{name} must be available to run these tests: {}",
            r.feature(name).detail
        );
    }
    let old_kernel = {
        let rel = kernel::release();
        let mut it = rel.split(['.', '-']).map(|n| n.parse::<u32>().unwrap_or(0));
        (it.next().unwrap_or(0), it.next().unwrap_or(0)) < (6, 6)
    };
    ensure!(
        r.tc_mode == if old_kernel { "netlink" } else { "tcx" },
        "tc mode {} on {}",
        r.tc_mode,
        r.kernel.release
    );

    let xmit = r.probe("veth", "veth_xmit");
    let rx = r.probe("veth", "veth_rx");
    let want_xmit = expected_xmit(fentry, kprobes, veth_module.as_deref());
    let want_rx = expected_rx(fentry, kprobes);
    ensure!(
        xmit.hook.as_deref() == Some(want_xmit),
        "veth_xmit uses {:?}, expected {want_xmit}; tried: {:?}",
        xmit.hook,
        xmit.tried
    );
    ensure!(
        rx.hook.as_deref() == Some(want_rx),
        "veth_rx uses {:?}, expected {want_rx}; tried: {:?}",
        rx.hook,
        rx.tried
    );
    for (probe, want) in [
        ("veth_receive", "tp_btf:netif_receive_skb"),
        ("veth_drop", "tp_btf:kfree_skb"),
    ] {
        let p = r.probe("veth", probe);
        ensure!(p.hook.as_deref() == Some(want), "{probe}: {:?}", p.hook);
        ensure!(p.tried.is_empty(), "{probe}: {:?}", p.tried);
    }
    // Every variant passed over is named with its reason.
    for (probe, skipped) in [(xmit, want_xmit), (rx, want_rx)] {
        let order = ["fentry", "kprobe", "tp_btf"];
        let used = order
            .iter()
            .position(|k| skipped.starts_with(k))
            .unwrap_or(0);
        ensure!(
            probe.tried.len() == used,
            "{}: {} alternatives reported as tried before {skipped}: {:?}",
            probe.name,
            probe.tried.len(),
            probe.tried
        );
        for t in &probe.tried {
            ensure!(
                !t.error.is_empty(),
                "{}: no reason for {}",
                probe.name,
                t.hook
            );
        }
        if !kprobes {
            let k = probe.tried.iter().find(|t| t.hook.starts_with("kprobe:"));
            ensure!(
                k.is_some_and(|t| t.error.contains("no kprobes")),
                "{}: the kprobe variant's reason must say the kernel has no kprobes: {:?}",
                probe.name,
                probe.tried
            );
        }
        if veth_module.is_some() && fentry && probe.name == "veth_xmit" {
            let f = &probe.tried[0];
            ensure!(
                f.hook == "fentry:veth_xmit" && f.error.contains("module `veth`"),
                "fentry on veth_xmit must be refused for living in module veth: {f:?}"
            );
        }
    }

    if let Some(dir) = std::env::var_os("VNT_REPORT_DIR") {
        std::fs::write(PathBuf::from(dir).join("check.json"), &run.json)?;
    }
    Ok(())
}

#[test]
fn denied_hook_kinds_make_check_name_the_tracepoint_variants() -> Result<()> {
    require_root();
    kernel::ensure_function("veth_xmit", "veth")?;
    let out = std::process::Command::new(agent())
        .args(["check", "--output", "json", "--plugins", "veth"])
        .env("VNT_DENY_HOOKS", "fentry,kprobe")
        .output()?;
    let r: CheckReport = serde_json::from_slice(&out.stdout)?;
    let xmit = r.probe("veth", "veth_xmit");
    ensure!(
        xmit.hook.as_deref() == Some("tp_btf:net_dev_start_xmit"),
        "{xmit:?}"
    );
    ensure!(
        xmit.tried.len() == 2
            && xmit
                .tried
                .iter()
                .all(|t| t.error.contains("denied by VNT_DENY_HOOKS")),
        "{:?}",
        xmit.tried
    );
    Ok(())
}

#[test]
fn pretty_check_output_lists_features_and_probes() -> Result<()> {
    require_root();
    let out = std::process::Command::new(agent())
        .args(["check", "--plugins", "veth"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "{text}");
    for word in [
        "kernel ",
        "btf",
        "ringbuf",
        "fentry",
        "kprobes",
        "uprobes",
        "tracefs",
        "bpffs",
        "tc ",
        "lockdown",
        "capabilities",
        "plugin veth",
        "veth_xmit",
        "veth_receive",
        "ok: every required probe can attach",
    ] {
        ensure!(text.contains(word), "`{word}` missing from:\n{text}");
    }
    Ok(())
}

#[test]
fn unmounted_tracefs_and_bpffs_are_reported_mountable() -> Result<()> {
    require_root();
    // Unmount every bpffs and tracefs (debugfs may carry one at
    // /sys/kernel/debug/tracing) in a private mount namespace of the agent alone.
    let script = format!(
        "awk '$3 == \"bpf\" || $3 == \"tracefs\" {{ print $2 }}' /proc/mounts | sort -r | \
         while read -r m; do umount \"$m\"; done; \
         exec '{}' check --plugins veth --output json",
        agent().display()
    );
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()?;
    let r: CheckReport = serde_json::from_slice(&out.stdout)?;
    for f in ["tracefs", "bpffs"] {
        let feat = r.feature(f);
        ensure!(
            feat.available && feat.detail.starts_with("not mounted, mountable"),
            "{f}: {feat:?}"
        );
    }
    // ... and still mounted for everybody else.
    let mounts = std::fs::read_to_string("/proc/mounts")?;
    ensure!(
        mounts.contains(" /sys/fs/bpf bpf ") && mounts.contains(" /sys/kernel/tracing tracefs "),
        "the host's mounts changed:\n{mounts}"
    );
    Ok(())
}

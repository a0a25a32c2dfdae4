//! A plugin whose required probe cannot attach on the running kernel (issue
//! #4, acceptance 3): the agent refuses to start and its message names the
//! probe, every alternative it tried and why each one failed; `vnt-agent
//! check` reports the same and exits non-zero.
//!
//! The fixture (tests/fixtures/plugin-missing-hook, plugin `missinghook`)
//! aims one variant of each kind (fentry, kprobe, tp_btf, raw_tp) at a
//! function or tracepoint no kernel has, so this holds on every kernel: the
//! host's and the VM tier's guests.
//!
//! Privileged: run as root after `cargo build --release --workspace`.

use anyhow::{ensure, Context, Result};
use std::path::PathBuf;
use std::process::Command;
use vnt_tests::{kernel, locate_binary, require_root};

fn agent() -> PathBuf {
    locate_binary("vnt-agent", "VNT_AGENT_BIN")
}

/// The four variants of `missinghook_gone`, as `kind:target (program)`.
const TRIED: [&str; 4] = [
    "fentry:vnt_no_such_function (missinghook_fentry): ",
    "kprobe:vnt_no_such_function (missinghook_kprobe): ",
    "tp_btf:vnt_no_such_tracepoint (missinghook_btf): ",
    "raw_tp:vnt_no_such_tracepoint (missinghook_raw): ",
];

#[test]
fn a_required_probe_that_cannot_attach_fails_naming_every_alternative_and_why() -> Result<()> {
    require_root();
    let out = Command::new(agent())
        .args(["--plugins", "missinghook", "--duration", "5"])
        .output()
        .context("failed to run the agent")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    ensure!(
        out.status.code() == Some(4),
        "expected exit 4 (kernel/eBPF error), got {}",
        out.status
    );
    ensure!(
        stderr.contains(
            "plugin `missinghook`: required probe `missinghook_gone` could not attach; tried:"
        ),
        "the message must name the plugin and the probe:\n{stderr}"
    );
    // One line per alternative, in the order tried, each with a reason.
    let mut at = 0;
    for t in TRIED {
        let i = stderr[at..]
            .find(t)
            .map(|i| i + at)
            .with_context(|| format!("`{t}` missing (or out of order) in:\n{stderr}"))?;
        let reason = stderr[i + t.len()..].lines().next().unwrap_or_default();
        ensure!(reason.len() > 10, "no reason after `{t}`: {reason:?}");
        at = i + t.len();
    }
    // The reasons say what was missing, not just an errno.
    let line = |kind: &str| {
        stderr
            .lines()
            .find(|l| l.trim_start().starts_with(kind))
            .unwrap_or_default()
            .to_owned()
    };
    ensure!(
        line("fentry:").contains("vnt_no_such_function"),
        "{}",
        line("fentry:")
    );
    ensure!(
        line("tp_btf:").contains("vnt_no_such_tracepoint"),
        "{}",
        line("tp_btf:")
    );
    ensure!(
        line("raw_tp:").contains("no tracepoint `vnt_no_such_tracepoint`"),
        "{}",
        line("raw_tp:")
    );
    let kprobe = line("kprobe:");
    ensure!(
        kprobe.contains("no kprobes") || kprobe.contains("no function `vnt_no_such_function`"),
        "{kprobe}"
    );
    // The optional probe that attached does not count: the failure is the
    // required one's.
    ensure!(
        !stderr.contains("missinghook_present` could not attach"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn check_reports_the_probe_that_cannot_attach_and_exits_non_zero() -> Result<()> {
    require_root();
    let run = kernel::check(&agent(), &["--plugins", "missinghook,veth"])?;
    let r = &run.report;
    ensure!(
        run.code == 4,
        "exit {} (expected 4): {}",
        run.code,
        run.json
    );
    ensure!(!r.ok, "{}", run.json);
    let gone = r.probe("missinghook", "missinghook_gone");
    ensure!(gone.required && gone.hook.is_none(), "{gone:?}");
    let tried: Vec<&str> = gone.tried.iter().map(|t| t.hook.as_str()).collect();
    ensure!(
        tried
            == [
                "fentry:vnt_no_such_function",
                "kprobe:vnt_no_such_function",
                "tp_btf:vnt_no_such_tracepoint",
                "raw_tp:vnt_no_such_tracepoint"
            ],
        "{tried:?}"
    );
    ensure!(
        gone.tried.iter().all(|t| t.error.len() > 10),
        "{:?}",
        gone.tried
    );
    let present = r.probe("missinghook", "missinghook_present");
    ensure!(
        present.hook.as_deref() == Some("raw_tp:netif_receive_skb"),
        "{present:?}"
    );
    ensure!(
        r.problems
            == ["plugin `missinghook`: required probe `missinghook_gone` cannot attach (4 alternative(s) tried)"],
        "only the missing probe is a problem (veth is fine): {:?}",
        r.problems
    );
    Ok(())
}

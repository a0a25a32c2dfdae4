//! What the running kernel can do, found out without the agent (its
//! configuration, tracefs, bpftrace), so tests can hold the agent's own
//! `check` report against it; and `vnt-agent check` itself, run and parsed.
//! Also the instruments the TC tests use: `tc` filter listings and the BPF
//! programs loaded in the kernel.

use crate::netns::{exec_in, run};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `uname -r`.
pub fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The running kernel's build configuration, from `$VNT_KERNEL_CONFIG` (the VM
/// tier points it at the unpacked package's config), `/proc/config.gz` or
/// `/boot/config-$(uname -r)`; `None` when none is readable.
pub fn config() -> Option<HashMap<String, String>> {
    let text = if let Some(p) = std::env::var_os("VNT_KERNEL_CONFIG") {
        std::fs::read_to_string(p).ok()?
    } else if Path::new("/proc/config.gz").exists() {
        let out = Command::new("zcat").arg("/proc/config.gz").output().ok()?;
        String::from_utf8(out.stdout).ok()?
    } else {
        std::fs::read_to_string(format!("/boot/config-{}", release())).ok()?
    };
    Some(
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    )
}

/// Whether the kernel can attach kprobes: tracefs has `kprobe_events`
/// (CONFIG_KPROBE_EVENTS), else the configuration says CONFIG_KPROBES=y.
pub fn kprobes_expected() -> bool {
    for dir in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if Path::new(dir).join("available_events").exists() {
            return Path::new(dir).join("kprobe_events").exists();
        }
    }
    config().is_some_and(|c| c.get("CONFIG_KPROBES").is_some_and(|v| v == "y"))
}

/// Whether bpftrace, probing on its own, finds fentry (`kfunc`) usable.
pub fn fentry_expected() -> Result<bool> {
    let out = Command::new("bpftrace")
        .arg("--info")
        .output()
        .context("failed to run `bpftrace --info` (is bpftrace installed?)")?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    for line in text.lines() {
        if let Some(v) = line.trim().strip_prefix("kfunc:") {
            return Ok(v.trim() == "yes");
        }
    }
    bail!("`bpftrace --info` has no `kfunc:` line:\n{text}")
}

/// The kernel module a function lives in (`None`: vmlinux, or not loaded).
pub fn module_of(func: &str) -> Option<String> {
    let syms = std::fs::read_to_string("/proc/kallsyms").ok()?;
    syms.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        let (_, _, name, module) = (w.next()?, w.next()?, w.next()?, w.next()?);
        (name == func).then(|| module.trim_matches(['[', ']']).to_owned())
    })
}

/// Whether /proc/kallsyms lists `func` (in vmlinux or a loaded module).
pub fn has_function(func: &str) -> bool {
    std::fs::read_to_string("/proc/kallsyms")
        .is_ok_and(|s| s.lines().any(|l| l.split_whitespace().nth(2) == Some(func)))
}

/// Makes sure `func` is in the kernel, loading `module` when it is not
/// (kernels with the module built in may have no /lib/modules at all).
pub fn ensure_function(func: &str, module: &str) -> Result<()> {
    if !has_function(func) {
        run(Command::new("modprobe").arg(module))?;
    }
    if !has_function(func) {
        bail!("`{func}` is not in /proc/kallsyms even after `modprobe {module}`");
    }
    Ok(())
}

// ---- vnt-agent check ----------------------------------------------------------------

/// One feature of a check report.
#[derive(Debug, Clone, Deserialize)]
pub struct CheckFeature {
    pub available: bool,
    pub detail: String,
}

/// An alternative that was not used.
#[derive(Debug, Clone, Deserialize)]
pub struct CheckTried {
    pub hook: String,
    pub program: String,
    pub error: String,
}

/// One probe of a check report.
#[derive(Debug, Clone, Deserialize)]
pub struct CheckProbe {
    pub name: String,
    pub required: bool,
    pub hook: Option<String>,
    pub kind: Option<String>,
    pub program: Option<String>,
    pub detail: Option<String>,
    pub tried: Vec<CheckTried>,
}

/// One plugin of a check report.
#[derive(Debug, Clone, Deserialize)]
pub struct CheckPlugin {
    pub name: String,
    pub error: Option<String>,
    pub probes: Vec<CheckProbe>,
}

/// The kernel of a check report.
#[derive(Debug, Clone, Deserialize)]
pub struct CheckKernel {
    pub release: String,
}

/// `vnt-agent check --output json`.
#[derive(Debug, Clone, Deserialize)]
pub struct CheckReport {
    pub kernel: CheckKernel,
    pub features: BTreeMap<String, CheckFeature>,
    pub tc_mode: String,
    pub plugins: Vec<CheckPlugin>,
    pub problems: Vec<String>,
    pub ok: bool,
}

impl CheckReport {
    /// A feature by name; panics with the report when it is missing.
    pub fn feature(&self, name: &str) -> &CheckFeature {
        self.features
            .get(name)
            .unwrap_or_else(|| panic!("no feature `{name}` in the check report: {self:?}"))
    }

    /// A probe by plugin and name; panics with the report when it is missing.
    pub fn probe(&self, plugin: &str, probe: &str) -> &CheckProbe {
        self.plugins
            .iter()
            .find(|p| p.name == plugin)
            .and_then(|p| p.probes.iter().find(|q| q.name == probe))
            .unwrap_or_else(|| panic!("no probe {plugin}/{probe} in the check report: {self:?}"))
    }
}

/// What one `vnt-agent check` run produced.
#[derive(Debug)]
pub struct CheckRun {
    pub report: CheckReport,
    /// The JSON line as printed.
    pub json: String,
    pub stderr: String,
    pub code: i32,
}

/// Runs `agent check --output json <args>` and parses the report.
pub fn check(agent: &Path, args: &[&str]) -> Result<CheckRun> {
    let mut cmd = Command::new(agent);
    cmd.args(["check", "--output", "json"]).args(args);
    let out: Output = cmd
        .output()
        .with_context(|| format!("failed to run {} check", agent.display()))?;
    let json = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_str(&json)
        .with_context(|| format!("`check` printed no report:\n{json}\nstderr:\n{stderr}"))?;
    Ok(CheckRun {
        report,
        json,
        stderr,
        code: out.status.code().unwrap_or(-1),
    })
}

// ---- TC filters and BPF programs ----------------------------------------------------

/// One line of `tc -j filter show dev X ingress` (the entries with a handle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcFilter {
    pub kind: String,
    pub pref: u32,
    /// `0x1` for bpf, `800::800` for u32.
    pub handle: String,
    /// For bpf filters: the filter's name (the program name when the agent attached it).
    pub bpf_name: Option<String>,
    /// For bpf filters: the program id.
    pub prog_id: Option<u64>,
}

/// The TC filters at the ingress of `dev` in namespace `ns`.
pub fn tc_ingress_filters(ns: &str, dev: &str) -> Result<Vec<TcFilter>> {
    tc_filters(ns, dev, "ingress")
}

/// The TC filters of `dev` in namespace `ns` at `hook` (`ingress`, `egress`).
pub fn tc_filters(ns: &str, dev: &str, hook: &str) -> Result<Vec<TcFilter>> {
    let json = run(&mut exec_in(
        ns,
        "tc",
        ["-j", "filter", "show", "dev", dev, hook],
    ))?;
    let list: Vec<serde_json::Value> = if json.trim().is_empty() {
        vec![]
    } else {
        serde_json::from_str(&json).with_context(|| format!("unexpected tc -j output: {json}"))?
    };
    let mut out = Vec::new();
    for f in list {
        let opts = f.get("options");
        let handle = opts
            .and_then(|o| o.get("handle").or_else(|| o.get("fh")))
            .and_then(|h| h.as_str())
            .map(str::to_owned);
        let Some(handle) = handle else {
            continue; // the chain head of a priority
        };
        if f["kind"] == "u32" && handle.ends_with(':') {
            continue; // u32's hash table entry, not a filter
        }
        out.push(TcFilter {
            kind: f["kind"].as_str().unwrap_or_default().to_owned(),
            pref: f["pref"].as_u64().unwrap_or_default() as u32,
            handle,
            bpf_name: opts
                .and_then(|o| o.get("bpf_name"))
                .and_then(|n| n.as_str())
                .map(str::to_owned),
            prog_id: opts
                .and_then(|o| o.get("prog"))
                .and_then(|p| p.get("id"))
                .and_then(|i| i.as_u64()),
        });
    }
    Ok(out)
}

/// Ids of the BPF programs named `name` loaded in the kernel (`bpftool prog`).
pub fn programs_named(name: &str) -> Result<Vec<u64>> {
    let json = run(Command::new("bpftool").args(["-j", "prog", "show"]))?;
    let list: Vec<serde_json::Value> = serde_json::from_str(&json)
        .with_context(|| format!("unexpected bpftool output: {json}"))?;
    let mut ids: Vec<u64> = list
        .iter()
        .filter(|p| p["name"] == name)
        .filter_map(|p| p["id"].as_u64())
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// `BPF_LINK_TYPE_TCX` (uapi bpf.h); bpftool 7.1 prints it as a number.
const LINK_TYPE_TCX: u64 = 11;

/// The tcx links in the kernel whose program is one of `programs`, as
/// `(link id, program id)`, sorted. A tcx link lives as long as a file
/// descriptor holds it, also after its device is gone.
pub fn tcx_links_of(programs: &[u64]) -> Result<Vec<(u64, u64)>> {
    let json = run(Command::new("bpftool").args(["-j", "link", "show"]))?;
    let list: Vec<serde_json::Value> = serde_json::from_str(&json)
        .with_context(|| format!("unexpected bpftool output: {json}"))?;
    let mut out: Vec<(u64, u64)> = list
        .iter()
        .filter(|l| l["type"] == "tcx" || l["type"].as_u64() == Some(LINK_TYPE_TCX))
        .filter_map(|l| Some((l["id"].as_u64()?, l["prog_id"].as_u64()?)))
        .filter(|(_, p)| programs.contains(p))
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// The newest copy of a fixture's compiled eBPF object under the build
/// directory (`target/<profile>/build/<crate>-*/out/<file>`).
pub fn built_object(krate: &str, file: &str) -> Result<PathBuf> {
    let target = crate::workspace_root().join("target");
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for profile in ["release", "debug"] {
        let Ok(dir) = std::fs::read_dir(target.join(profile).join("build")) else {
            continue;
        };
        for e in dir.flatten() {
            if !e
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("{krate}-"))
            {
                continue;
            }
            let p = e.path().join("out").join(file);
            if let Ok(m) = std::fs::metadata(&p).and_then(|m| m.modified()) {
                if best.as_ref().is_none_or(|(t, _)| m > *t) {
                    best = Some((m, p));
                }
            }
        }
    }
    best.map(|(_, p)| p).with_context(|| {
        format!(
            "no {file} of crate {krate} under {}: build the workspace first",
            target.display()
        )
    })
}

//! The agent's documented capability sets (README "Privileges",
//! docs/adr/014-operability.md) and running a program with exactly one of
//! them: `capsh` drops every other capability from the bounding set, so the
//! program, exec'd as root, holds that set and nothing else.

use anyhow::{bail, Context, Result};
use std::ffi::OsStr;
use std::process::Command;

/// Linux >= 5.8.
pub const MODERN: &[&str] = &["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN", "CAP_SYS_PTRACE"];
/// Older kernels, and engines that cannot grant CAP_BPF (Docker 20.10).
pub const LEGACY: &[&str] = &["CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_SYS_PTRACE"];

/// Every capability this kernel knows, lowercase (`cap_bpf`), from
/// `capsh --print`'s bounding set of this (root) process.
fn all_capabilities() -> Result<Vec<String>> {
    let out = Command::new("capsh")
        .arg("--print")
        .output()
        .context("failed to run `capsh --print`: install libcap2-bin (scripts/install-deps.sh)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(line) = text.lines().find_map(|l| l.strip_prefix("Bounding set =")) else {
        bail!("`capsh --print` shows no bounding set:\n{text}");
    };
    Ok(line.trim().split(',').map(str::to_owned).collect())
}

/// `program args...` run through `capsh` with only `caps` (names like
/// `CAP_BPF`) left in the bounding set.
pub fn with_only<I, S>(caps: &[&str], program: impl AsRef<OsStr>, args: I) -> Result<Command>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let keep: Vec<String> = caps.iter().map(|c| c.to_ascii_lowercase()).collect();
    let all = all_capabilities()?;
    for k in &keep {
        if !all.contains(k) {
            bail!("this kernel has no {k} (bounding set: {})", all.join(","));
        }
    }
    let drop: Vec<&str> = all
        .iter()
        .filter(|c| !keep.contains(c))
        .map(String::as_str)
        .collect();
    let mut cmd = Command::new("capsh");
    cmd.arg(format!("--drop={}", drop.join(",")))
        .arg("--")
        .arg("-c")
        .arg(r#"exec "$0" "$@""#)
        .arg(program)
        .args(args);
    Ok(cmd)
}

/// A process's effective capabilities, as a mask.
pub fn effective_of(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .context("no CapEff line")?;
    Ok(u64::from_str_radix(hex.trim(), 16)?)
}

/// The mask of capability names (`CAP_BPF`, ...).
pub fn mask_of(caps: &[&str]) -> Result<u64> {
    let mut mask = 0u64;
    for c in caps {
        let n = number(c).with_context(|| format!("unknown capability {c}"))?;
        mask |= 1 << n;
    }
    Ok(mask)
}

/// linux/capability.h's number of the capabilities the agent's sets use.
fn number(cap: &str) -> Option<u32> {
    Some(match cap {
        "CAP_NET_ADMIN" => 12,
        "CAP_SYS_PTRACE" => 19,
        "CAP_SYS_ADMIN" => 21,
        "CAP_PERFMON" => 38,
        "CAP_BPF" => 39,
        _ => return None,
    })
}

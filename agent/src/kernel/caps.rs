//! The capabilities the agent runs with: one documented set per kernel
//! generation (README "Privileges", docs/adr/014-operability.md), checked at
//! start so that a missing one is named with what it is needed for, rather
//! than surfacing later as an `EPERM` from somewhere inside a load.
//!
//! - Linux >= 5.8 (CAP_BPF and CAP_PERFMON exist): [`MODERN`].
//! - Older kernels, and engines that cannot grant CAP_BPF (Docker 20.10):
//!   [`LEGACY`], CAP_SYS_ADMIN in place of CAP_BPF and CAP_PERFMON. It works
//!   on every kernel; it is broader, so prefer [`MODERN`] where it can be
//!   granted.
//!
//! Every capability in a set is used by every run: none is "just in case".

use std::fmt::Write;

/// A capability and what the agent does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// Its number (linux/capability.h).
    pub number: u32,
    /// `CAP_BPF`.
    pub name: &'static str,
    /// What it is needed for, completing "needed ...".
    pub why: &'static str,
}

const BPF: Need = Need {
    number: 39,
    name: "CAP_BPF",
    why: "to create eBPF maps and load the plugins' programs",
};
const PERFMON: Need = Need {
    number: 38,
    name: "CAP_PERFMON",
    why: "to load tracing programs (tp_btf, raw_tp, kprobe, fentry) that read kernel memory and attach them",
};
const SYS_ADMIN: Need = Need {
    number: 21,
    name: "CAP_SYS_ADMIN",
    why: "to load and attach eBPF tracing programs on kernels before 5.8, which have no CAP_BPF or CAP_PERFMON",
};
const NET_ADMIN: Need = Need {
    number: 12,
    name: "CAP_NET_ADMIN",
    why: "to attach TC programs and to remove the TC filters a killed agent left behind (checked at every start)",
};
const SYS_PTRACE: Need = Need {
    number: 19,
    name: "CAP_SYS_PTRACE",
    why: "to read other processes' /proc/PID/ns/net, which tells which process and container own the namespace of each hop",
};

/// The set for kernels >= 5.8.
pub const MODERN: &[Need] = &[BPF, PERFMON, NET_ADMIN, SYS_PTRACE];
/// The set for older kernels and engines without CAP_BPF.
pub const LEGACY: &[Need] = &[SYS_ADMIN, NET_ADMIN, SYS_PTRACE];

/// Whether a kernel release (`uname -r`, `6.1.0-26-amd64`) is 5.8 or newer;
/// `None` if it does not parse.
pub fn has_bpf_caps(release: &str) -> Option<bool> {
    let mut parts = release.split(['.', '-']);
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts
        .next()?
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()?;
    Some((major, minor) >= (5, 8))
}

/// The documented set for a kernel release.
pub fn documented_set(release: &str) -> &'static [Need] {
    if has_bpf_caps(release).unwrap_or(true) {
        MODERN
    } else {
        LEGACY
    }
}

fn held(effective: u64, n: &Need) -> bool {
    n.number < 64 && effective & (1 << n.number) != 0
}

/// What `effective` lacks of the set for `release`: empty when it holds
/// [`MODERN`] (on a kernel that has it) or [`LEGACY`].
pub fn missing(effective: u64, release: &str) -> Vec<Need> {
    let all = |set: &[Need]| set.iter().all(|n| held(effective, n));
    if all(LEGACY) || (documented_set(release) == MODERN && all(MODERN)) {
        return vec![];
    }
    // CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON: someone who
    // holds it lacks only what LEGACY lacks.
    let set = if held(effective, &SYS_ADMIN) {
        LEGACY
    } else {
        documented_set(release)
    };
    set.iter()
        .copied()
        .filter(|n| !held(effective, n))
        .collect()
}

/// The error text for `missing`: each capability and why it is needed,
/// then the documented sets.
pub fn describe_missing(missing: &[Need], release: &str) -> String {
    let mut s = String::from("missing capabilities: ");
    for (i, n) in missing.iter().enumerate() {
        if i > 0 {
            s.push_str("; ");
        }
        let _ = write!(s, "{} (needed {})", n.name, n.why);
    }
    let names = |set: &[Need]| set.iter().map(|n| n.name).collect::<Vec<_>>().join(" ");
    let _ = write!(
        s,
        ". Run vnt-agent as root, or with {} on this kernel ({release}){}; README \"Privileges\" lists them",
        names(documented_set(release)),
        if documented_set(release) == MODERN {
            format!(" (or {}, where CAP_BPF cannot be granted)", names(LEGACY))
        } else {
            String::new()
        }
    );
    s
}

/// This process's effective capabilities (`CapEff` of /proc/self/status).
pub fn effective() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// This kernel's release.
pub fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The start-up check: `Err` with [`describe_missing`]'s text when the
/// process lacks part of its documented set.
pub fn check() -> Result<(), String> {
    let release = release();
    let Some(eff) = effective() else {
        return Err("cannot read CapEff from /proc/self/status to check capabilities".into());
    };
    let m = missing(eff, &release);
    if m.is_empty() {
        Ok(())
    } else {
        Err(describe_missing(&m, &release))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(set: &[Need]) -> u64 {
        set.iter().fold(0, |a, n| a | 1 << n.number)
    }

    #[test]
    fn kernel_generations() {
        assert_eq!(has_bpf_caps("6.18.44-fc-v595"), Some(true));
        assert_eq!(has_bpf_caps("5.8.0"), Some(true));
        assert_eq!(has_bpf_caps("5.10.0-32-amd64"), Some(true));
        assert_eq!(has_bpf_caps("5.4.0-150-generic"), Some(false));
        assert_eq!(has_bpf_caps("4.19.0"), Some(false));
        assert_eq!(has_bpf_caps("garbage"), None);
        assert_eq!(documented_set("4.19.0"), LEGACY);
        assert_eq!(documented_set("6.1.0-26-amd64"), MODERN);
    }

    #[test]
    fn each_missing_capability_is_named_with_its_reason() {
        let k = "6.1.0";
        assert!(missing(caps(MODERN), k).is_empty());
        assert!(missing(caps(LEGACY), k).is_empty());
        assert!(missing(u64::MAX, k).is_empty(), "root");
        assert_eq!(missing(caps(MODERN), "5.4.0"), vec![SYS_ADMIN]);
        for n in MODERN {
            let without = caps(MODERN) & !(1 << n.number);
            assert_eq!(missing(without, k), vec![*n]);
            let text = describe_missing(&missing(without, k), k);
            assert!(text.contains(n.name) && text.contains(n.why), "{text}");
        }
        for n in LEGACY {
            let without = caps(LEGACY) & !(1 << n.number);
            let m = missing(without, "4.19.0");
            assert_eq!(m, vec![*n]);
        }
        // SYS_ADMIN without NET_ADMIN: only NET_ADMIN is missing.
        assert_eq!(
            missing(caps(LEGACY) & !(1 << NET_ADMIN.number), k),
            vec![NET_ADMIN]
        );
        assert_eq!(missing(0, k), MODERN.to_vec());
        let text = describe_missing(&missing(0, k), k);
        assert!(
            text.contains("CAP_SYS_ADMIN CAP_NET_ADMIN CAP_SYS_PTRACE"),
            "{text}"
        );
    }
}

//! `vnt-agent check`: what the running kernel offers the agent, and for every
//! probe of the requested plugins the hook variant a run would use, or why
//! none can.
//!
//! Nothing is guessed where it can be tried: the ring buffer map is created,
//! an fentry program is loaded and attached (aya's probe, on
//! `bpf_fentry_test1`), tracefs and bpffs are test-mounted in a private mount
//! namespace when they are not mounted, and every probe goes through the same
//! code as a run ([`probes::attach_probes`]): each alternative is loaded and
//! attached in preference order, then everything is detached. TC probes are
//! attached to `lo` in a throwaway network namespace. Exit status: 0 when
//! every required probe has a variant, 4 when one has none (or there is no
//! BTF), 3 when a plugin cannot be opened.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use aya::maps::MapType;
use aya::programs::ProgramType;
use serde::Serialize;
use vnt_plugin_api::HookKind;

use crate::config::{Config, OutputFormat};
use crate::kernel::btf::{KernelBtf, SYS_BTF};
use crate::plugin_host;
use crate::probes::filter::FilterSpec;
use crate::probes::{self, tc, AltFailure};

/// One kernel feature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Feature {
    /// Usable by the agent.
    pub available: bool,
    /// What was found or tried, and what failed.
    pub detail: String,
}

impl Feature {
    fn yes(detail: impl Into<String>) -> Feature {
        Feature {
            available: true,
            detail: detail.into(),
        }
    }

    fn no(detail: impl Into<String>) -> Feature {
        Feature {
            available: false,
            detail: detail.into(),
        }
    }
}

/// Feature names, in the order they are printed.
pub const FEATURES: [&str; 12] = [
    "btf",
    "ringbuf",
    "raw_tp",
    "fentry",
    "kprobes",
    "uprobes",
    "tracefs",
    "bpffs",
    "tc",
    "drop_reasons",
    "lockdown",
    "capabilities",
];

/// The running kernel.
#[derive(Debug, Clone, Serialize)]
pub struct KernelInfo {
    /// `uname -r`.
    pub release: String,
    /// `uname -m`.
    pub machine: String,
}

/// One probe's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    /// Probe name.
    pub name: String,
    /// The plugin cannot work without it.
    pub required: bool,
    /// Attached only when asked for (`--probes`).
    pub opt_in: bool,
    /// Whether a run with this configuration attaches it (false: an opt-in
    /// probe nobody asked for). `check` tries it either way.
    pub runs: bool,
    /// `kind:target` of the variant a run would use, when one attaches.
    pub hook: Option<String>,
    /// Its kind (`tp_btf`, `fentry`, ...).
    pub kind: Option<String>,
    /// Its program.
    pub program: Option<String>,
    /// Where a TC program would attach.
    pub detail: Option<String>,
    /// The alternatives before it (or all of them) with why each failed.
    pub tried: Vec<AltFailure>,
}

/// One plugin's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct PluginReport {
    /// Name as requested.
    pub name: String,
    /// Library path, when found.
    pub path: Option<String>,
    /// Plugin version.
    pub version: Option<String>,
    /// Why the plugin could not be opened or its object not loaded.
    pub error: Option<String>,
    /// Its probes.
    pub probes: Vec<ProbeReport>,
    /// The library could not be found or opened (exit status 3, not 4).
    #[serde(skip)]
    pub open_failed: bool,
}

/// The whole report (`--output json` prints it as one object).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Always `check`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Kernel release and machine.
    pub kernel: KernelInfo,
    /// Feature name -> availability.
    pub features: BTreeMap<&'static str, Feature>,
    /// `tcx` or `netlink`: how TC probes attach here.
    pub tc_mode: &'static str,
    /// Hook kinds denied by `VNT_DENY_HOOKS`.
    pub denied: Vec<String>,
    /// Per plugin.
    pub plugins: Vec<PluginReport>,
    /// Everything that makes a run fail; empty when `ok`.
    pub problems: Vec<String>,
    /// No problems.
    pub ok: bool,
}

// ---- kernel features ----------------------------------------------------------------

fn uname() -> KernelInfo {
    // SAFETY: utsname is plain old data; uname(2) fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable utsname.
    let ok = unsafe { libc::uname(&mut u) } == 0;
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    if !ok {
        return KernelInfo {
            release: "unknown".into(),
            machine: "unknown".into(),
        };
    }
    KernelInfo {
        release: field(&u.release),
        machine: field(&u.machine),
    }
}

fn btf_feature(path: Option<&Path>, btf: &Result<KernelBtf, String>) -> Feature {
    let shown = path.unwrap_or(Path::new(SYS_BTF));
    match btf {
        Ok(_) => Feature::yes(format!(
            "{}{} ({} KiB)",
            shown.display(),
            if path.is_some() { " (--btf)" } else { "" },
            std::fs::metadata(shown)
                .map(|m| m.len() / 1024)
                .unwrap_or(0)
        )),
        Err(e) => Feature::no(e.clone()),
    }
}

fn supported(what: &str, r: Result<bool, impl std::error::Error>) -> Feature {
    match r {
        Ok(true) => Feature::yes(what.to_string()),
        Ok(false) => Feature::no(format!("{what}: the kernel does not know it")),
        Err(e) => Feature::no(format!("{what}: {}", probes::describe(&e))),
    }
}

fn pmu(name: &str, config: &str) -> Feature {
    let path = format!("/sys/bus/event_source/devices/{name}/type");
    match std::fs::read_to_string(&path) {
        Ok(t) => Feature::yes(format!(
            "perf {name} PMU present (type {}); each probe below is really attached",
            t.trim()
        )),
        Err(_) => Feature::no(format!(
            "no perf {name} PMU ({path} is missing): the kernel was built without {config}"
        )),
    }
}

fn mount_point(fstype: &str) -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        let (_dev, dir, ty) = (w.next()?, w.next()?, w.next()?);
        (ty == fstype).then(|| dir.to_string())
    })
}

fn c(s: &str) -> CString {
    CString::new(s).expect("no NUL in a constant path")
}

/// Run `f` on a thread with a private mount namespace (its mounts vanish
/// with the thread).
fn in_private_mounts<T: Send>(f: impl FnOnce() -> Result<T, String> + Send) -> Result<T, String> {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: unshare(2) of the mount namespace (and with it the fs
            // attributes) affects this thread alone.
            if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
                return Err(format!(
                    "cannot create a private mount namespace: {}",
                    std::io::Error::last_os_error()
                ));
            }
            let root = c("/");
            // SAFETY: valid NUL-terminated paths; null source/type/data are
            // allowed for a propagation change.
            let rc = unsafe {
                libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                )
            };
            if rc != 0 {
                return Err(format!(
                    "cannot make mounts private: {}",
                    std::io::Error::last_os_error()
                ));
            }
            f()
        })
        .join()
        .unwrap_or_else(|_| Err("the probing thread panicked".into()))
    })
}

fn try_mount(fstype: &str, dir: &str) -> Result<(), String> {
    let (t, d) = (c(fstype), c(dir));
    // SAFETY: valid NUL-terminated strings; no data.
    let rc = unsafe { libc::mount(t.as_ptr(), d.as_ptr(), t.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    // SAFETY: unmount what was just mounted, in this private namespace.
    unsafe { libc::umount2(d.as_ptr(), libc::MNT_DETACH) };
    Ok(())
}

fn fs_feature(fstype: &str, dir: &str) -> Feature {
    if let Some(at) = mount_point(fstype) {
        return Feature::yes(format!("mounted at {at}"));
    }
    match in_private_mounts(|| try_mount(fstype, dir)) {
        Ok(()) => Feature::yes(format!(
            "not mounted, mountable (a test mount in a private namespace worked): mount -t {fstype} {fstype} {dir}"
        )),
        Err(e) => Feature::no(format!("not mounted, and mounting it failed: {e}")),
    }
}

fn lockdown_feature() -> Feature {
    const FILE: &str = "/sys/kernel/security/lockdown";
    let read = || std::fs::read_to_string(FILE).map_err(|e| e.to_string());
    let text = read().or_else(|_| {
        in_private_mounts(|| {
            try_mount_keep("securityfs", "/sys/kernel/security")?;
            read()
        })
    });
    match text {
        Ok(t) => {
            let mode = t
                .split_whitespace()
                .find(|w| w.starts_with('['))
                .map(|w| w.trim_matches(['[', ']']).to_string())
                .unwrap_or_else(|| t.trim().to_string());
            if mode == "confidentiality" {
                Feature::no(format!(
                    "{mode}: the kernel forbids reading its memory from eBPF, kprobes and tracefs"
                ))
            } else {
                Feature::yes(mode)
            }
        }
        Err(_) => Feature::yes("no lockdown LSM (no /sys/kernel/security/lockdown)"),
    }
}

fn try_mount_keep(fstype: &str, dir: &str) -> Result<(), String> {
    let (t, d) = (c(fstype), c(dir));
    // SAFETY: valid NUL-terminated strings; no data. Only called inside a
    // private mount namespace, so the mount is never seen outside it.
    let rc = unsafe { libc::mount(t.as_ptr(), d.as_ptr(), t.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    Ok(())
}

fn caps_feature() -> Feature {
    use crate::kernel::caps;
    let Some(eff) = caps::effective() else {
        return Feature::no("cannot read CapEff from /proc/self/status");
    };
    let release = caps::release();
    let held: Vec<&str> = caps::MODERN
        .iter()
        .chain(caps::LEGACY)
        .filter(|n| eff & (1 << n.number) != 0)
        .map(|n| n.name)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let detail = format!(
        "held: {}",
        if held.is_empty() {
            "none".into()
        } else {
            held.join(" ")
        }
    );
    let missing = caps::missing(eff, &release);
    if missing.is_empty() {
        Feature::yes(detail)
    } else {
        Feature::no(format!(
            "{detail}; {}",
            caps::describe_missing(&missing, &release)
        ))
    }
}

/// Whether the kernel BTF's `enum bpf_attach_type` has `BPF_TCX_INGRESS`.
fn btf_has_tcx(btf: &KernelBtf) -> Option<bool> {
    let members = btf.enum_members("bpf_attach_type").ok()?;
    (!members.is_empty()).then(|| members.iter().any(|(n, _)| n == "BPF_TCX_INGRESS"))
}

fn tc_feature(btf: Option<&KernelBtf>) -> Feature {
    let clsact = tc::clsact_works();
    let mode = tc::mode();
    let tcx_btf = btf.and_then(btf_has_tcx);
    let mut detail = match mode {
        tc::TcMode::Tcx => "tcx links (kernel >= 6.6): detached when the agent exits".to_string(),
        tc::TcMode::Netlink => "netlink filters on a clsact qdisc (kernel < 6.6): they outlive a killed agent, which removes its own stale ones at start-up".to_string(),
    };
    match tcx_btf {
        Some(true) => detail.push_str("; BTF lists BPF_TCX_INGRESS"),
        Some(false) => detail.push_str("; BTF has no BPF_TCX_INGRESS"),
        None => {}
    }
    match clsact {
        Ok(()) => {
            detail.push_str("; a clsact qdisc was created on lo in a scratch netns");
            Feature::yes(detail)
        }
        Err(e) => Feature::no(format!("{detail}; but: {e}")),
    }
}

/// Drop reasons the agent can name: vmlinux's, and those of modules' BTF
/// (Open vSwitch's `enum ovs_drop_reason`, when the module is loaded).
fn drop_reasons_feature(btf: Option<&KernelBtf>) -> Feature {
    let Some(btf) = btf else {
        return Feature::no("no kernel BTF");
    };
    match crate::kernel::drop_reason::DropReasons::from_btf(btf) {
        Ok(r) => {
            let from_modules = r.from_modules();
            let modules = if from_modules.is_empty() {
                "none from module BTF (openvswitch: not loaded, or no `enum ovs_drop_reason` before Linux 6.4)".to_string()
            } else {
                format!(
                    "{} from module BTF: {}",
                    from_modules.len(),
                    from_modules.join(" ")
                )
            };
            Feature::yes(format!("enum skb_drop_reason from vmlinux BTF; {modules}"))
        }
        Err(e) => Feature::no(e),
    }
}

/// Probe every feature; `btf` is what reading the BTF at `btf_path` (`--btf`,
/// or the kernel's own) gave.
pub fn features(
    btf_path: Option<&Path>,
    btf: &Result<KernelBtf, String>,
) -> BTreeMap<&'static str, Feature> {
    let mut f = BTreeMap::new();
    f.insert("btf", btf_feature(btf_path, btf));
    f.insert(
        "ringbuf",
        supported(
            "BPF_MAP_TYPE_RINGBUF map created",
            aya::sys::is_map_supported(MapType::RingBuf),
        ),
    );
    f.insert(
        "raw_tp",
        supported(
            "raw tracepoint program loaded",
            aya::sys::is_program_supported(ProgramType::RawTracePoint),
        ),
    );
    f.insert(
        "fentry",
        supported(
            "fentry program on bpf_fentry_test1 loaded and attached",
            aya::sys::is_program_supported(ProgramType::Tracing),
        ),
    );
    f.insert(
        "kprobes",
        pmu("kprobe", "CONFIG_KPROBES/CONFIG_KPROBE_EVENTS"),
    );
    f.insert(
        "uprobes",
        pmu("uprobe", "CONFIG_UPROBES/CONFIG_UPROBE_EVENTS"),
    );
    f.insert("tracefs", fs_feature("tracefs", "/sys/kernel/tracing"));
    f.insert("bpffs", fs_feature("bpf", "/sys/fs/bpf"));
    f.insert("tc", tc_feature(btf.as_ref().ok()));
    f.insert("drop_reasons", drop_reasons_feature(btf.as_ref().ok()));
    f.insert("lockdown", lockdown_feature());
    f.insert("capabilities", caps_feature());
    f
}

// ---- plugins ------------------------------------------------------------------------

fn check_plugin(
    entry: &str,
    dirs: &[PathBuf],
    btf: Option<&aya::Btf>,
    cfg: &Config,
    filter: &FilterSpec,
    deny: &[HookKind],
) -> PluginReport {
    let mut report = PluginReport {
        name: entry.to_string(),
        path: None,
        version: None,
        error: None,
        probes: vec![],
        open_failed: false,
    };
    let meta = match plugin_host::resolve(entry, dirs).and_then(|p| {
        report.path = Some(p.display().to_string());
        plugin_host::inspect(&p, cfg.plugin_trust)
    }) {
        Ok(m) => m,
        Err(e) => {
            report.error = Some(e.to_string());
            report.open_failed = true;
            return report;
        }
    };
    report.name = meta.name.clone();
    report.version = Some(meta.version.clone());
    let Some(btf) = btf else {
        report.error = Some("not loaded: no kernel BTF (see `btf` above)".into());
        return report;
    };
    let filter = filter.to_kernel(cfg.sample_n);
    let merged = probes::module_btf(&meta);
    let btf = merged.as_ref().map_or(btf, |m| m.aya());
    let mut ebpf = match probes::load_object(
        &meta,
        btf,
        &filter,
        &cfg.packet_id_key,
        &cfg.tunnels,
        cfg.ringbuf_bytes,
    ) {
        Ok(e) => e,
        Err(e) => {
            report.error = Some(e.to_string());
            return report;
        }
    };
    // Try every probe, opt-in or not, and say which a run would attach.
    let choices = probes::attach_probes(
        &mut ebpf,
        &meta,
        btf,
        tc::Placement::Trial,
        deny,
        &probes::OptIn::all(),
    );
    for (c, info) in choices.into_iter().zip(&meta.probes) {
        let mut p = ProbeReport {
            runs: cfg.probes.wants(info),
            name: c.probe,
            required: c.required,
            opt_in: c.opt_in,
            hook: c.chosen.as_ref().map(|(k, t)| format!("{k}:{t}")),
            kind: c.chosen.as_ref().map(|(k, _)| k.to_string()),
            program: c.program,
            detail: c.detail,
            tried: c.failures,
        };
        // A TC program that attaches still needs interfaces at run time:
        // those of the `dev` filter, or those its target chooses.
        let chooses = c.chosen.as_ref().and_then(|(k, t)| {
            (*k == HookKind::Tc)
                .then(|| tc::parse_target(t).ok())
                .flatten()
                .filter(|t| t.chooses_devices())
        });
        if let Some(target) = chooses {
            p.detail = Some(format!(
                "{}; a run attaches it to every device matching `{target}` in the namespaces the filter covers, also those created later",
                p.detail.unwrap_or_default()
            ));
        } else if c.chosen.as_ref().is_some_and(|(k, _)| *k == HookKind::Tc) {
            match tc::targets(&filter) {
                Ok(t) => {
                    let on: Vec<String> = t.iter().map(|t| t.ifname.clone()).collect();
                    p.detail = Some(format!(
                        "{}; a run attaches it to {} interface(s) named {}",
                        p.detail.unwrap_or_default(),
                        on.len(),
                        on.first().cloned().unwrap_or_default()
                    ));
                }
                Err(e) => {
                    p.tried.push(AltFailure {
                        hook: p.hook.take().unwrap_or_default(),
                        program: p.program.take().unwrap_or_default(),
                        error: format!("attaches, but a run cannot: {e}"),
                    });
                    p.kind = None;
                    p.detail = None;
                }
            }
        }
        report.probes.push(p);
    }
    // Dropping the object detaches every program it attached.
    drop(ebpf);
    report
}

/// For `vnt-agent plugins`: every probe of each plugin file tried on this
/// kernel as `check` does (loaded, attached, detached), BTF read once.
pub fn probe_reports(cfg: &Config, paths: &[PathBuf]) -> Vec<PluginReport> {
    let btf = KernelBtf::read(cfg.btf.as_deref()).ok();
    let deny = probes::denied_kinds().unwrap_or_default();
    paths
        .iter()
        .map(|p| {
            check_plugin(
                &p.display().to_string(),
                &[],
                btf.as_ref().map(KernelBtf::aya),
                cfg,
                &cfg.filter,
                &deny,
            )
        })
        .collect()
}

/// Build the report: features, then every plugin's probes.
/// `--plugins`, `--filter`, `--btf` and `--plugin-dir` come with `cfg`, as for
/// a run; without plugins there, every plugin found is checked.
pub fn report(cfg: &Config) -> Report {
    let btf_path = cfg.btf.as_deref();
    // Read and parsed once, for the features and every plugin's probes.
    let btf = KernelBtf::read(btf_path);
    let features = features(btf_path, &btf);
    let btf = btf.ok();
    let dirs = plugin_host::search_path(&cfg.plugin_dirs);
    let mut problems = Vec::new();
    let deny = match probes::denied_kinds() {
        Ok(d) => d,
        Err(e) => {
            problems.push(e.to_string());
            vec![]
        }
    };
    let filter = &cfg.filter;
    let entries: Vec<String> = if cfg.plugins.is_empty() {
        plugin_host::discover(&dirs).into_keys().collect()
    } else {
        cfg.plugins.clone()
    };
    if let Some(f) = features.get("btf").filter(|f| !f.available) {
        problems.push(format!("no kernel BTF: {}", f.detail));
    }
    if entries.is_empty() {
        problems.push("no plugins found on the search path".into());
    }
    let plugins: Vec<PluginReport> = entries
        .iter()
        .map(|e| {
            check_plugin(
                e,
                &dirs,
                btf.as_ref().map(KernelBtf::aya),
                cfg,
                filter,
                &deny,
            )
        })
        .collect();
    for p in &plugins {
        if let Some(e) = &p.error {
            problems.push(format!("plugin `{}`: {e}", p.name));
        }
        for probe in p.probes.iter().filter(|p| p.required && p.hook.is_none()) {
            problems.push(format!(
                "plugin `{}`: required probe `{}` cannot attach ({} alternative(s) tried)",
                p.name,
                probe.name,
                probe.tried.len()
            ));
        }
    }
    Report {
        kind: "check",
        kernel: uname(),
        features,
        tc_mode: tc::mode().as_str(),
        denied: deny.iter().map(|k| k.to_string()).collect(),
        plugins,
        ok: problems.is_empty(),
        problems,
    }
}

/// The report as people read it.
pub fn pretty(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "kernel {} ({})", r.kernel.release, r.kernel.machine);
    for name in FEATURES {
        if let Some(f) = r.features.get(name) {
            let _ = writeln!(
                s,
                "  {name:<13} {:<3}  {}",
                if f.available { "yes" } else { "no" },
                f.detail
            );
        }
    }
    if !r.denied.is_empty() {
        let _ = writeln!(
            s,
            "  denied by {}: {}",
            probes::DENY_HOOKS_ENV,
            r.denied.join(", ")
        );
    }
    for p in &r.plugins {
        let _ = writeln!(
            s,
            "\nplugin {} {}",
            p.name,
            p.version.as_deref().unwrap_or("")
        );
        if let Some(e) = &p.error {
            let _ = writeln!(s, "  unusable: {e}");
        }
        for probe in &p.probes {
            let req = if probe.required {
                "required"
            } else if probe.opt_in {
                "opt-in"
            } else {
                "optional"
            };
            match &probe.hook {
                Some(h) => {
                    let _ = writeln!(
                        s,
                        "  {:<18} {req:<8}  {} {h} ({})",
                        probe.name,
                        if probe.runs { "uses" } else { "off; would use" },
                        probe.program.as_deref().unwrap_or("")
                    );
                    if !probe.runs {
                        let _ = writeln!(
                            s,
                            "  {:<28}  opt-in: attached with --probes {} (or all)",
                            "", probe.name
                        );
                    }
                    if let Some(d) = &probe.detail {
                        let _ = writeln!(s, "  {:<28}  {d}", "");
                    }
                }
                None => {
                    let _ = writeln!(s, "  {:<18} {req:<8}  CANNOT ATTACH", probe.name);
                }
            }
            for t in &probe.tried {
                let first = t.error.lines().next().unwrap_or_default();
                let _ = writeln!(s, "  {:<28}  not {}: {first}", "", t.hook);
            }
        }
    }
    if r.ok {
        let _ = writeln!(s, "\nok: every required probe can attach");
    } else {
        let _ = writeln!(s, "\nFAILED:");
        for p in &r.problems {
            let _ = writeln!(s, "  {p}");
        }
    }
    s
}

/// Exit status for a report (see the module docs).
pub fn exit_code(r: &Report) -> u8 {
    if r.ok {
        0
    } else if r.plugins.iter().any(|p| p.open_failed) {
        3
    } else {
        4
    }
}

/// Run `vnt-agent check`: JSON with `--output json` (or `output = "json"`),
/// else for people.
pub fn main(cfg: &Config) -> ExitCode {
    let r = report(cfg);
    let text = match cfg.output {
        OutputFormat::Json => serde_json::to_string(&r).unwrap_or_default() + "\n",
        OutputFormat::Pretty | OutputFormat::None => pretty(&r),
    };
    let mut out = std::io::stdout().lock();
    if out
        .write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .is_err()
    {
        return ExitCode::from(1);
    }
    ExitCode::from(exit_code(&r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uname_names_this_kernel() {
        let k = uname();
        assert!(!k.release.is_empty() && k.release != "unknown");
        assert_eq!(k.machine, std::env::consts::ARCH);
    }

    #[test]
    fn every_feature_is_printed_in_order() {
        let r = Report {
            kind: "check",
            kernel: KernelInfo {
                release: "6.1.0-test".into(),
                machine: "x86_64".into(),
            },
            features: FEATURES
                .iter()
                .map(|n| (*n, Feature::no(format!("{n} detail"))))
                .collect(),
            tc_mode: "netlink",
            denied: vec!["fentry".into()],
            plugins: vec![PluginReport {
                name: "veth".into(),
                path: Some("/x/libvnt_plugin_veth.so".into()),
                version: Some("0.1.0".into()),
                error: None,
                probes: vec![ProbeReport {
                    name: "veth_xmit".into(),
                    required: true,
                    opt_in: false,
                    runs: true,
                    hook: None,
                    kind: None,
                    program: None,
                    detail: None,
                    tried: vec![AltFailure {
                        hook: "fentry:veth_xmit".into(),
                        program: "veth_xmit_fentry".into(),
                        error: "not tried: denied\nsecond line".into(),
                    }],
                }],
                open_failed: false,
            }],
            problems: vec!["plugin `veth`: required probe `veth_xmit` cannot attach".into()],
            ok: false,
        };
        let text = pretty(&r);
        let mut at = 0;
        for n in FEATURES {
            let i = text[at..].find(&format!("{n} detail")).expect(n) + at;
            at = i;
        }
        assert!(
            text.contains("veth_xmit          required  CANNOT ATTACH"),
            "{text}"
        );
        assert!(
            text.contains("not fentry:veth_xmit: not tried: denied\n"),
            "{text}"
        );
        assert!(text.contains("FAILED:"), "{text}");
        assert_eq!(exit_code(&r), 4);
        let json: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(json["type"], "check");
        assert_eq!(json["features"]["kprobes"]["available"], false);
    }
}

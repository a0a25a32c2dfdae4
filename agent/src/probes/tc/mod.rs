//! TC classifier probes (`HookKind::Tc`; target grammar in
//! `vnt_plugin_api::TcTarget` and docs/attach-points.md).
//!
//! **Where.** A TC program attaches to interfaces, not to the kernel as a
//! whole. A bare target (`ingress`, `egress`) attaches to every interface
//! named by the `dev` filter (`--filter 'dev IFNAME'`): in its own network
//! namespace and in every named one (`/run/netns/*`, what `ip netns`
//! creates), or, with a `netns` filter, only in the listed namespaces (also
//! found through `/proc/*/ns/net`); without a `dev` filter it cannot attach,
//! and says so. A target with selectors (`ingress kind=vxlan`) chooses its own
//! devices, also those that appear later: see [`watch`].
//!
//! **How.** On kernels >= 6.6 the program is attached as a tcx link: a file
//! descriptor, gone when the agent is, however it exits. Older kernels (6.1)
//! only have netlink filters on a `clsact` qdisc, which outlive a killed
//! process. For those the agent:
//! - records every filter it creates (namespace, interface, parent, priority,
//!   handle, program name and id) in `/run/vnt/tc/<pid>.json`;
//! - removes them itself at exit, inside their namespace (aya would detach
//!   them in whatever namespace the dropping thread is in);
//! - at start-up removes the filters of every recorded agent that is no
//!   longer running (pid gone, or reused by a process that started later),
//!   and only a filter that still has the recorded priority, handle, `bpf`
//!   kind, program name *and* program id: filters of other tools, and of
//!   agents that are still running, are never touched.
//!
//! The `clsact` qdisc the agent may add is left in place (removing it would
//! remove every other filter on it).
//!
//! Known limit: the netlink filters of a plugin disabled at run time (a
//! decoder panic) stay attached until the agent exits.

pub mod netlink;
pub mod watch;

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};

use aya::programs::links::Link;
use aya::programs::tc::{NlOptions, SchedClassifierLink, TcAttachOptions};
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType};
use aya::util::KernelVersion;
use serde::{Deserialize, Serialize};
use vnt_plugin_api::{TcDirection, TcTarget};

use super::filter::KernelFilter;

/// Where the agent records the netlink filters it owns.
pub const STATE_DIR: &str = "/run/vnt/tc";

/// How TC programs attach on this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcMode {
    /// tcx links (Linux >= 6.6): file descriptors, detached when closed.
    Tcx,
    /// Netlink filters on a `clsact` qdisc: they stay until deleted.
    Netlink,
}

impl TcMode {
    /// `tcx` or `netlink`.
    pub fn as_str(self) -> &'static str {
        match self {
            TcMode::Tcx => "tcx",
            TcMode::Netlink => "netlink",
        }
    }
}

/// Forces a mode (`tcx` or `netlink`) on kernels that have both, to exercise
/// the netlink path on a new kernel (tests, diagnostics).
pub const MODE_ENV: &str = "VNT_TC_MODE";

/// The mode aya uses for ingress/egress on the running kernel (its own rule:
/// tcx from 6.6 on), unless `VNT_TC_MODE=netlink` asks for netlink filters.
pub fn mode() -> TcMode {
    if std::env::var(MODE_ENV).is_ok_and(|m| m == "netlink") {
        return TcMode::Netlink;
    }
    match KernelVersion::current() {
        Ok(v) if v >= KernelVersion::new(6, 6, 0) => TcMode::Tcx,
        _ => TcMode::Netlink,
    }
}

/// Which interfaces a TC probe attaches to.
#[derive(Debug, Clone, Copy)]
pub enum Placement<'a> {
    /// The interfaces named by the filter's `dev` (see the module docs).
    Filter(&'a KernelFilter),
    /// `lo` of a throwaway network namespace, detached at once: proves the
    /// program attaches without touching any real interface (`vnt-agent check`).
    Trial,
}

/// Parse a TC alternative's target; the error says what is wrong and what
/// a target looks like.
pub fn parse_target(target: &str) -> Result<TcTarget, String> {
    TcTarget::parse(target).map_err(|e| e.to_string())
}

fn attach_type(t: &TcTarget) -> TcAttachType {
    match t.direction {
        TcDirection::Ingress => TcAttachType::Ingress,
        TcDirection::Egress => TcAttachType::Egress,
    }
}

fn parent(t: TcAttachType) -> u32 {
    // TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS / TC_H_MIN_EGRESS)
    match t {
        TcAttachType::Ingress => 0xffff_fff2,
        TcAttachType::Egress => 0xffff_fff3,
        TcAttachType::Custom(p) => p,
    }
}

// ---- network namespaces ---------------------------------------------------------

/// A network namespace: a path that opens it, and its inode (to know that the
/// path still names the same namespace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetnsRef {
    /// `/run/netns/NAME`, `/proc/PID/ns/net`, or `/proc/self/ns/net`.
    pub path: PathBuf,
    /// nsfs inode (`net->ns.inum`).
    pub inode: u64,
}

impl NetnsRef {
    fn describe(&self) -> String {
        match self.path.strip_prefix("/run/netns") {
            Ok(name) => format!("netns {}", name.display()),
            Err(_) if self.path == Path::new("/proc/self/ns/net") => "the agent's netns".into(),
            Err(_) => format!("netns {} ({})", self.inode, self.path.display()),
        }
    }
}

fn inode_of(path: &Path) -> io::Result<u64> {
    std::fs::metadata(path).map(|m| m.ino())
}

/// The calling thread is in another network namespace until this drops.
struct InNetns {
    back: OwnedFd,
}

impl InNetns {
    fn setns(fd: &impl AsRawFd) -> io::Result<()> {
        // SAFETY: setns(2) on an open nsfs descriptor; it only changes the
        // calling thread's network namespace.
        if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Enter `ns` when it is not the thread's current one (`None` then).
    fn enter(ns: &NetnsRef) -> io::Result<Option<InNetns>> {
        let target = File::open(&ns.path)?;
        let inode = target.metadata()?.ino();
        if inode != ns.inode {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{} is now namespace {inode}, not {}",
                    ns.path.display(),
                    ns.inode
                ),
            ));
        }
        if inode_of(Path::new("/proc/thread-self/ns/net"))? == inode {
            return Ok(None);
        }
        let back = File::open("/proc/thread-self/ns/net")?;
        Self::setns(&target)?;
        Ok(Some(InNetns { back: back.into() }))
    }

    /// Enter a new, empty network namespace; it vanishes once left and unused.
    fn scratch() -> io::Result<InNetns> {
        let back = File::open("/proc/thread-self/ns/net")?;
        // SAFETY: unshare(2) with CLONE_NEWNET only; it affects the calling
        // thread alone.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(InNetns { back: back.into() })
    }
}

impl Drop for InNetns {
    fn drop(&mut self) {
        if let Err(e) = Self::setns(&self.back) {
            // Going on in the wrong namespace would attach and detach the
            // wrong interfaces: stop here.
            eprintln!("vnt-agent: cannot return to the original network namespace: {e}");
            std::process::abort();
        }
    }
}

fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string for the call's duration.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// Every network namespace a TC probe may attach in: the agent's own, the
/// named ones, and (with a `netns` filter) only those listed. With
/// `every_process`, also the namespaces of every process (containers that
/// `ip netns` does not name) when no `netns` filter limits them.
fn namespaces(only: &[u32], every_process: bool) -> Vec<NetnsRef> {
    let mut out: Vec<NetnsRef> = Vec::new();
    let mut push = |path: PathBuf| {
        if let Ok(inode) = inode_of(&path) {
            if !out.iter().any(|n| n.inode == inode)
                && (only.is_empty() || only.contains(&(inode as u32)))
            {
                out.push(NetnsRef { path, inode });
            }
        }
    };
    push(PathBuf::from("/proc/self/ns/net"));
    if let Ok(dir) = std::fs::read_dir("/run/netns") {
        let mut names: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        names.sort();
        names.into_iter().for_each(&mut push);
    }
    if every_process || !only.is_empty() {
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for p in procs.flatten() {
                if p.file_name().to_string_lossy().parse::<u32>().is_ok() {
                    push(p.path().join("ns/net"));
                }
            }
        }
    }
    out
}

/// An interface a TC probe attaches to.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its namespace.
    pub netns: NetnsRef,
    /// Its name.
    pub ifname: String,
}

/// The interfaces the filter's `dev` names, in the namespaces it allows.
pub fn targets(filter: &KernelFilter) -> Result<Vec<Target>, String> {
    let Some(dev) = filter.dev() else {
        return Err(
            "a TC probe attaches to interfaces: name one with --filter 'dev IFNAME'".into(),
        );
    };
    let mut out = Vec::new();
    for ns in namespaces(filter.netns(), false) {
        let found = match InNetns::enter(&ns) {
            Ok(_guard) => ifindex(&dev).is_some(),
            Err(e) => {
                tracing::debug!(netns = %ns.path.display(), error = %e, "cannot enter namespace");
                false
            }
        };
        if found {
            out.push(Target {
                netns: ns,
                ifname: dev.clone(),
            });
        }
    }
    if out.is_empty() {
        return Err(format!(
            "no interface named `{dev}` in the agent's network namespace or in /run/netns/*{}",
            if filter.netns().is_empty() {
                ""
            } else {
                " (limited to the `netns` filter's namespaces)"
            }
        ));
    }
    Ok(out)
}

/// Whether a clsact qdisc can be created here: tried on `lo` in a scratch
/// network namespace (netlink TC needs it; tcx does not).
pub fn clsact_works() -> Result<(), String> {
    let _scratch = InNetns::scratch()
        .map_err(|e| format!("cannot create a scratch network namespace: {e}"))?;
    aya::programs::tc::qdisc_add_clsact("lo")
        .map_err(|e| format!("cannot add a clsact qdisc: {}", super::describe(&e)))
}

// ---- the filters this process owns ----------------------------------------------

/// One netlink filter, as recorded in the state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterRecord {
    /// Its namespace.
    pub netns: NetnsRef,
    /// Interface name and index in that namespace.
    pub ifname: String,
    /// Interface index.
    pub ifindex: u32,
    /// clsact parent (ingress or egress).
    pub parent: u32,
    /// Filter priority.
    pub priority: u16,
    /// Filter handle.
    pub handle: u32,
    /// Program name (the filter's `bpf name`).
    pub program: String,
    /// Kernel program id.
    pub prog_id: u32,
}

/// `/run/vnt/tc/<pid>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StateFile {
    pid: u32,
    /// Process start time (clock ticks after boot, /proc/PID/stat field 22):
    /// tells a reused pid from the agent that wrote the file.
    start_time: u64,
    filters: Vec<FilterRecord>,
}

struct Owned {
    record: FilterRecord,
    link: SchedClassifierLink,
}

static OWNED: Mutex<Vec<Owned>> = Mutex::new(Vec::new());
static AT_EXIT: Once = Once::new();

fn state_dir() -> PathBuf {
    std::env::var_os("VNT_TC_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(STATE_DIR))
}

fn state_path(pid: u32) -> PathBuf {
    state_dir().join(format!("{pid}.json"))
}

/// Start time of `pid`, or `None` when no such process runs (a zombie,
/// killed but not yet reaped, does not run).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything; fields
    // after it start at field 3 (state). starttime is field 22.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    if matches!(fields.next()?, "Z" | "X" | "x") {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

fn write_state(owned: &[Owned]) {
    let pid = std::process::id();
    let path = state_path(pid);
    if owned.is_empty() {
        let _ = std::fs::remove_file(&path);
        return;
    }
    let state = StateFile {
        pid,
        start_time: start_time(pid).unwrap_or(0),
        filters: owned.iter().map(|o| o.record.clone()).collect(),
    };
    let write = || -> io::Result<()> {
        std::fs::create_dir_all(state_dir())?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&state)?)?;
        std::fs::rename(&tmp, &path)
    };
    if let Err(e) = write() {
        tracing::warn!(path = %path.display(), error = %e, "cannot record TC filters; if the agent is killed they stay until removed by hand (tc filter del)");
    }
}

/// Detach one owned filter inside its namespace (never in another one).
fn detach(o: Owned) -> Result<(), String> {
    let Owned { record, link } = o;
    match InNetns::enter(&record.netns) {
        Ok(_guard) => link.detach().map_err(|e| super::describe(&e)),
        Err(e) => {
            // The namespace is gone, and the filter with it. Dropping the link
            // here would make aya detach it in *this* namespace: forget it.
            std::mem::forget(link);
            Err(format!("{}: {e}", record.netns.path.display()))
        }
    }
}

/// Stop owning the netlink filter of `program` at `parent` of `ifindex` in
/// the namespace `inode`: detach it while its device is still there, forget
/// it when the device (and the filter with it) is gone.
fn release(inode: u64, ifindex: u32, parent: u32, program: &str, device_gone: bool) {
    let mut owned = OWNED.lock().unwrap_or_else(|p| p.into_inner());
    let Some(i) = owned.iter().position(|o| {
        o.record.netns.inode == inode
            && o.record.ifindex == ifindex
            && o.record.parent == parent
            && o.record.program == program
    }) else {
        return;
    };
    let o = owned.remove(i);
    write_state(&owned);
    drop(owned);
    if device_gone {
        std::mem::forget(o.link);
    } else if let Err(e) = detach(o) {
        tracing::debug!(program, ifindex, error = %e, "TC filter not detached");
    }
}

extern "C" fn detach_all_at_exit() {
    let _ = std::panic::catch_unwind(detach_all);
}

/// Detach every netlink filter this process attached and forget the state file.
pub fn detach_all() {
    watch::stop();
    let owned = std::mem::take(&mut *OWNED.lock().unwrap_or_else(|p| p.into_inner()));
    for o in owned {
        let what = format!("{} on {}", o.record.program, o.record.ifname);
        if let Err(e) = detach(o) {
            tracing::debug!(filter = %what, error = %e, "TC filter not detached");
        }
    }
    write_state(&[]);
}

fn own(record: FilterRecord, link: SchedClassifierLink) {
    AT_EXIT.call_once(|| {
        // SAFETY: registers a plain extern "C" function with no arguments;
        // it catches panics itself.
        unsafe { libc::atexit(detach_all_at_exit) };
    });
    let mut owned = OWNED.lock().unwrap_or_else(|p| p.into_inner());
    owned.push(Owned { record, link });
    write_state(&owned);
}

// ---- attach ---------------------------------------------------------------------------

fn add_clsact(ifname: &str) -> Result<(), String> {
    match aya::programs::tc::qdisc_add_clsact(ifname) {
        Ok(()) => Ok(()),
        Err(e) => {
            let text = super::describe(&e);
            if text.contains("File exists") || text.contains("already") {
                Ok(())
            } else {
                Err(format!("cannot add the clsact qdisc to {ifname}: {text}"))
            }
        }
    }
}

/// A netlink filter just attached: its link (taken out of aya) and where it is.
struct NlAttached {
    link: SchedClassifierLink,
    priority: u16,
    handle: u32,
}

/// Attach a loaded classifier on one interface of the current namespace.
/// A tcx link stays with the program in aya (closing it detaches it, in any
/// namespace); a netlink filter's link is taken out and returned, because
/// aya would detach it in whatever namespace the dropping thread is in.
fn attach_here(
    prog: &mut SchedClassifier,
    ifname: &str,
    at: TcAttachType,
    mode: TcMode,
    take_tcx: bool,
) -> Result<Option<NlAttached>, String> {
    let options = match mode {
        TcMode::Tcx => TcAttachOptions::TcxOrder(LinkOrder::default()),
        TcMode::Netlink => {
            add_clsact(ifname)?;
            TcAttachOptions::Netlink(NlOptions::default())
        }
    };
    let id = prog
        .attach_with_options(ifname, at, options)
        .map_err(|e| super::describe(&e))?;
    if mode == TcMode::Tcx && !take_tcx {
        return Ok(None);
    }
    let link = prog.take_link(id).map_err(|e| super::describe(&e))?;
    if mode == TcMode::Tcx {
        drop(link); // closes the link: detached
        return Ok(None);
    }
    Ok(Some(NlAttached {
        priority: link.priority().map_err(|e| super::describe(&e))?,
        handle: link.handle().map_err(|e| super::describe(&e))?.into(),
        link,
    }))
}

/// Attach `prog` (loaded) for a probe whose target is `target`; returns where.
///
/// tcx links stay with the program in aya (detached with it). Netlink
/// filters are owned by this module (see the module docs).
pub fn attach(
    prog: &mut SchedClassifier,
    program: &str,
    target: &str,
    placement: Placement<'_>,
) -> Result<String, String> {
    let parsed = parse_target(target)?;
    let at = attach_type(&parsed);
    let mode = mode();
    match placement {
        Placement::Filter(filter) if parsed.chooses_devices() => {
            watch::register(prog, program, parsed, filter)
        }
        Placement::Trial => {
            let _scratch = InNetns::scratch()
                .map_err(|e| format!("cannot create a scratch network namespace: {e}"))?;
            // Detach inside the scratch namespace, before it is left.
            if let Some(nl) = attach_here(prog, "lo", at, mode, true)? {
                nl.link.detach().map_err(|e| super::describe(&e))?;
            }
            Ok(match mode {
                TcMode::Tcx => format!("{target} as a tcx link (tried on lo in a scratch netns)"),
                TcMode::Netlink => format!(
                    "{target} as a netlink filter on clsact (tried on lo in a scratch netns)"
                ),
            })
        }
        Placement::Filter(filter) => {
            let targets = targets(filter)?;
            let prog_id = prog.info().map(|i| i.id()).unwrap_or(0);
            let mut done = Vec::new();
            for t in &targets {
                let guard = InNetns::enter(&t.netns)
                    .map_err(|e| format!("cannot enter {}: {e}", t.netns.path.display()))?;
                let nl = attach_here(prog, &t.ifname, at, mode, false)
                    .map_err(|e| format!("{} in {}: {e}", t.ifname, t.netns.describe()))?;
                let ifindex = ifindex(&t.ifname).unwrap_or(0);
                drop(guard);
                match nl {
                    None => done.push(format!("{} in {} (tcx)", t.ifname, t.netns.describe())),
                    Some(NlAttached {
                        link,
                        priority,
                        handle,
                    }) => {
                        done.push(format!(
                            "{} in {} (netlink filter pref {priority} handle {handle:#x})",
                            t.ifname,
                            t.netns.describe()
                        ));
                        own(
                            FilterRecord {
                                netns: t.netns.clone(),
                                ifname: t.ifname.clone(),
                                ifindex,
                                parent: parent(at),
                                priority,
                                handle,
                                program: program.to_string(),
                                prog_id,
                            },
                            link,
                        );
                    }
                }
            }
            Ok(format!("{target} on {}", done.join(", ")))
        }
    }
}

// ---- stale filters ---------------------------------------------------------------------

/// What start-up cleaning did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cleaned {
    /// Filters removed, described.
    pub removed: Vec<String>,
    /// Recorded filters left alone (gone already, or no longer ours), described.
    pub kept: Vec<String>,
}

/// Remove the filters recorded by agents that no longer run. Never fails:
/// problems are reported in [`Cleaned::kept`].
pub fn remove_stale() -> Cleaned {
    let mut cleaned = Cleaned::default();
    let Ok(dir) = std::fs::read_dir(state_dir()) else {
        return cleaned;
    };
    let me = std::process::id();
    for entry in dir.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let state: StateFile = match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(s) => s,
            Err(e) => {
                cleaned
                    .kept
                    .push(format!("{}: unreadable ({e})", path.display()));
                continue;
            }
        };
        if state.pid == me {
            continue;
        }
        if start_time(state.pid).is_some_and(|t| t == state.start_time) {
            continue; // that agent is still running: its filters are live
        }
        for r in &state.filters {
            match remove_one(r) {
                Ok(true) => cleaned.removed.push(describe_record(r)),
                Ok(false) => cleaned
                    .kept
                    .push(format!("{}: gone or no longer ours", describe_record(r))),
                Err(e) => cleaned.kept.push(format!("{}: {e}", describe_record(r))),
            }
        }
        let _ = std::fs::remove_file(&path);
    }
    cleaned
}

fn describe_record(r: &FilterRecord) -> String {
    format!(
        "`{}` (prog id {}) on {} in {}, pref {} handle {:#x}",
        r.program,
        r.prog_id,
        r.ifname,
        r.netns.describe(),
        r.priority,
        r.handle
    )
}

/// Delete the recorded filter if it is still exactly ours; `Ok(false)` when
/// there is nothing (left) to delete.
fn remove_one(r: &FilterRecord) -> Result<bool, String> {
    let _guard = match InNetns::enter(&r.netns) {
        Ok(g) => g,
        Err(_) => return Ok(false), // the namespace is gone, its filters too
    };
    if ifindex(&r.ifname) != Some(r.ifindex) {
        return Ok(false); // interface gone (or renamed): its filters went with it
    }
    let filters = netlink::filters(r.ifindex as i32, r.parent).map_err(|e| e.to_string())?;
    let ours = filters.iter().any(|f| {
        f.priority == r.priority
            && f.handle == r.handle
            && f.kind == "bpf"
            && f.bpf_name.as_deref() == Some(r.program.as_str())
            && f.bpf_id == Some(r.prog_id)
    });
    if !ours {
        return Ok(false);
    }
    netlink::delete(r.ifindex as i32, r.parent, r.priority, r.handle)
        .map(|()| true)
        .map_err(|e| format!("cannot delete: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_a_direction_and_maybe_devices() {
        let at = |t: &str| attach_type(&parse_target(t).unwrap());
        assert!(matches!(at("ingress"), TcAttachType::Ingress));
        assert!(matches!(at("egress kind=vxlan"), TcAttachType::Egress));
        assert!(parse_target("sideways").unwrap_err().contains("sideways"));
        let e = parse_target("ingress knd=vxlan").unwrap_err();
        assert!(e.contains("unknown selector `knd=`"), "{e}");
    }

    #[test]
    fn start_time_reads_past_a_command_with_parentheses() {
        let me = start_time(std::process::id()).expect("own start time");
        assert!(me > 0);
        assert_eq!(start_time(u32::MAX), None);
    }

    #[test]
    fn a_tc_probe_without_a_dev_filter_says_what_to_do() {
        let f = KernelFilter::default();
        let e = targets(&f).unwrap_err();
        assert!(e.contains("--filter 'dev IFNAME'"), "{e}");
    }

    #[test]
    fn state_files_round_trip() {
        let s = StateFile {
            pid: 7,
            start_time: 99,
            filters: vec![FilterRecord {
                netns: NetnsRef {
                    path: "/run/netns/x".into(),
                    inode: 4026532000,
                },
                ifname: "veth0".into(),
                ifindex: 3,
                parent: 0xffff_fff2,
                priority: 49152,
                handle: 1,
                program: "tcfix_ingress".into(),
                prog_id: 12,
            }],
        };
        let back: StateFile = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
        assert_eq!(back.filters, s.filters);
        assert_eq!((back.pid, back.start_time), (7, 99));
        assert_eq!(
            describe_record(&s.filters[0]),
            "`tcfix_ingress` (prog id 12) on veth0 in netns x, pref 49152 handle 0x1"
        );
    }
}

//! kprobes, also on functions of loadable modules (`HookKind::KProbe`, target
//! `function` or `MODULE:function`, `vnt_plugin_api::KProbeTarget`).
//!
//! A function of a module that is loaded attaches like any other (aya's
//! kprobe PMU attach resolves module symbols through kallsyms). When the
//! target names a module that is not loaded, the probe does not fail: the
//! agent says which module it waits for (`vnt-agent check` too) and attaches
//! the probe when the module loads. It learns that from the kernel's kobject
//! uevents (`add@/module/NAME`, a netlink multicast, no polling); the module's
//! symbols are in kallsyms by then, but attaching is retried for a short
//! while in case the module is still being set up. When the module is
//! unloaded (`remove@/module/NAME`) the probe is detached, and attached again
//! at the next load.
//!
//! The watcher has its own handle on each waiting program
//! (`KProbe::from_program_info`), so it lives as long as the agent.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Mutex, Once};
use std::time::Duration;

use aya::programs::kprobe::KProbeLinkId;
use aya::programs::KProbe;
use vnt_plugin_api::KProbeTarget;

/// `NETLINK_KOBJECT_UEVENT`.
const NETLINK_KOBJECT_UEVENT: i32 = 15;
/// The kernel's uevent multicast group.
const UEVENT_GROUP: u32 = 1;
/// How long to keep trying after a module appeared.
const ATTACH_RETRIES: u32 = 50;
const ATTACH_RETRY: Duration = Duration::from_millis(100);

/// Parse a kprobe target; the error shows the grammar.
pub fn parse_target(target: &str) -> Result<KProbeTarget, String> {
    KProbeTarget::parse(target).map_err(|e| e.to_string())
}

/// Whether `function` is in the running kernel now (vmlinux or a loaded module).
pub fn function_exists(function: &str) -> bool {
    std::fs::read_to_string("/proc/kallsyms").is_ok_and(|s| {
        s.lines()
            .any(|l| l.split_whitespace().nth(2) == Some(function))
    })
}

/// Whether `module` is loaded (listed in /proc/modules).
pub fn module_loaded(module: &str) -> bool {
    std::fs::read_to_string("/proc/modules")
        .is_ok_and(|s| s.lines().any(|l| l.split(' ').next() == Some(module)))
}

/// A kprobe waiting for (or attached to) a function of a module.
struct Waiting {
    module: String,
    function: String,
    program: String,
    prog: KProbe,
    link: Option<KProbeLinkId>,
}

impl Waiting {
    /// Attach, retrying for a moment (a module that just appeared may still
    /// be setting up). True once attached.
    fn attach(&mut self) -> bool {
        let mut last = String::new();
        for _ in 0..ATTACH_RETRIES {
            match self.prog.attach(&self.function, 0) {
                Ok(id) => {
                    self.link = Some(id);
                    tracing::info!(program = %self.program, function = %self.function, module = %self.module, "module loaded: kprobe attached");
                    return true;
                }
                Err(e) => last = super::describe(&e),
            }
            std::thread::sleep(ATTACH_RETRY);
        }
        tracing::warn!(program = %self.program, function = %self.function, module = %self.module, error = %last, "module loaded, but the kprobe does not attach");
        false
    }

    fn detach(&mut self) {
        if let Some(id) = self.link.take() {
            let _ = self.prog.detach(id);
            tracing::info!(program = %self.program, function = %self.function, module = %self.module, "module unloaded: kprobe released; it attaches again when the module loads");
        }
    }
}

static WAITING: Mutex<Vec<Waiting>> = Mutex::new(Vec::new());
static THREAD: Once = Once::new();
static SOCKET: Mutex<Option<OwnedFd>> = Mutex::new(None);

fn waiting() -> std::sync::MutexGuard<'static, Vec<Waiting>> {
    WAITING.lock().unwrap_or_else(|p| p.into_inner())
}

/// Attach `p` (loaded) to its target. `Ok(Some(..))` says it waits for a
/// module; `trial` (`vnt-agent check`) only reports that, a run waits.
pub fn attach(
    p: &mut KProbe,
    program: &str,
    target: &KProbeTarget,
    trial: bool,
) -> Result<Option<String>, String> {
    let function = &target.function;
    let module = match &target.module {
        Some(m) if !function_exists(function) => m,
        _ => {
            p.attach(function, 0).map_err(|e| super::describe(&e))?;
            return Ok(None);
        }
    };
    if module_loaded(module) {
        return Err(format!(
            "module `{module}` is loaded but has no function `{function}` in /proc/kallsyms"
        ));
    }
    let waits = format!(
        "module `{module}` is not loaded: `{function}` is attached when it loads (modprobe {module})"
    );
    if trial {
        return Ok(Some(waits));
    }
    // Subscribe before looking again, so a load in between is not missed.
    subscribe().map_err(|e| format!("{waits}, but the agent cannot follow module loads: {e}"))?;
    let info = p.info().map_err(|e| super::describe(&e))?;
    // SAFETY: `info` describes `p`, a program of this object's kprobe
    // section loaded as a KProbe of kind `p.kind()`; the new handle is the
    // same program with the same kind.
    let prog = unsafe { KProbe::from_program_info(info, program.to_string().into(), p.kind()) }
        .map_err(|e| super::describe(&e))?;
    let mut w = Waiting {
        module: module.clone(),
        function: function.clone(),
        program: program.to_string(),
        prog,
        link: None,
    };
    let mut list = waiting();
    if function_exists(function) && w.attach() {
        list.push(w);
        return Ok(Some(format!(
            "module `{module}` loaded meanwhile: attached"
        )));
    }
    tracing::warn!(program, function = %function, module = %module, "kprobe waits for its module, which is not loaded");
    list.push(w);
    Ok(Some(waits))
}

/// Open the uevent socket and start the thread that reads it, once.
fn subscribe() -> io::Result<()> {
    let mut sock = SOCKET.lock().unwrap_or_else(|p| p.into_inner());
    if sock.is_none() {
        *sock = Some(uevent_socket()?);
    }
    let fd = sock
        .as_ref()
        .map(|s| s.try_clone())
        .transpose()?
        .expect("socket opened above");
    drop(sock);
    let mut spawn_error = None;
    THREAD.call_once(|| {
        if let Err(e) = std::thread::Builder::new()
            .name("vnt-kmod-watch".into())
            .spawn(move || run(fd))
        {
            spawn_error = Some(e);
        }
    });
    spawn_error.map_or(Ok(()), Err)
}

fn uevent_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the result is checked
    // before it is owned by exactly one OwnedFd.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_KOBJECT_UEVENT,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: all-zero is a valid sockaddr_nl.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_groups = UEVENT_GROUP;
    // SAFETY: `addr` is a sockaddr_nl of the size passed; the fd is open.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            std::ptr::addr_of!(addr).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// `add@/module/vxlan` -> (`add`, `vxlan`); other uevents -> None.
fn module_event(msg: &[u8]) -> Option<(&str, &str)> {
    let head = msg.split(|&b| b == 0).next()?;
    let head = std::str::from_utf8(head).ok()?;
    let (action, path) = head.split_once('@')?;
    let module = path.strip_prefix("/module/")?;
    (!module.contains('/')).then_some((action, module))
}

fn run(fd: OwnedFd) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // SAFETY: `buf` is writable for its length; the fd is open (owned here).
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                // Overrun: some uevents were lost; look at every waiting probe.
                Some(libc::ENOBUFS) => {
                    for w in waiting().iter_mut() {
                        if w.link.is_none() && function_exists(&w.function) {
                            w.attach();
                        }
                    }
                    continue;
                }
                _ => {
                    tracing::warn!(error = %e, "cannot read kernel uevents: kprobes of modules loaded from now on are not attached");
                    return;
                }
            }
        }
        let Some((action, module)) = module_event(&buf[..n as usize]) else {
            continue;
        };
        let mut list = waiting();
        for w in list.iter_mut().filter(|w| w.module == module) {
            match action {
                "add" if w.link.is_none() => {
                    w.attach();
                }
                "remove" => w.detach(),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_uevents_are_told_from_the_others() {
        assert_eq!(
            module_event(b"add@/module/vxlan\0ACTION=add\0DEVPATH=/module/vxlan\0"),
            Some(("add", "vxlan"))
        );
        assert_eq!(
            module_event(b"remove@/module/openvswitch\0ACTION=remove\0"),
            Some(("remove", "openvswitch"))
        );
        assert_eq!(module_event(b"add@/module/vxlan/holders\0"), None);
        assert_eq!(module_event(b"add@/devices/virtual/net/vx0\0"), None);
        assert_eq!(module_event(b"libudev\0\xfe\xed"), None);
    }

    #[test]
    fn targets_name_a_function_and_maybe_its_module() {
        let t = parse_target("openvswitch:ovs_vport_receive").unwrap();
        assert_eq!(t.module.as_deref(), Some("openvswitch"));
        assert!(parse_target("a:b:c")
            .unwrap_err()
            .contains("MODULE:function"));
        assert!(function_exists("schedule"));
        assert!(!module_loaded("vnt_no_such_module"));
    }
}

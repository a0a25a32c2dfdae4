//! TC programs on the devices a plugin chooses (`ingress kind=vxlan`,
//! `egress name=flannel.1`): attached to every matching device there is when
//! the probe is registered, then to every one that appears, and released when
//! it goes; in every network namespace the user's filter covers.
//!
//! **Links: notified.** For each namespace the watcher holds one rtnetlink
//! socket subscribed to `RTNLGRP_LINK` ([`LinkMonitor`]), opened
//! inside it; subscribing before listing the links means none is missed. A
//! new (or renamed) link that matches a rule is attached at once; a deleted
//! one is released: its tcx link fd is closed (the kernel has already cut the
//! link from the device, but the link object lives as long as its fd), its
//! netlink filter is forgotten (it went with the device). A notification
//! overrun (`ENOBUFS`) re-lists the namespace's links.
//!
//! **Namespaces: rescanned.** Linux has no notification for a new network
//! namespace, so once a second the watcher looks for namespaces (`/run/netns/*`,
//! `/proc/*/ns/net`, limited by a `netns` filter) it does not follow yet, and
//! follows them. A socket keeps its namespace alive, so a namespace that no
//! process and no `/run/netns` entry holds any more is let go at the same scan
//! (its links are released first), and the kernel can free it.
//!
//! **Lifetime.** The watcher has its own handle on each loaded program
//! (`SchedClassifier::from_program_info`), so it lives as long as the agent:
//! a plugin disabled at run time keeps its chosen devices until exit (as its
//! netlink filters do, see the parent module). At exit [`stop`] makes it attach
//! nothing more; tcx links close with the process, netlink filters are
//! detached with the others (`detach_all`) or removed by the next start.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use aya::programs::tc::SchedClassifierLink;
use aya::programs::{SchedClassifier, TcAttachType};
use vnt_plugin_api::TcTarget;

use super::netlink::{LinkEvent, LinkMonitor};
use super::{
    add_clsact, attach_type, ifindex, mode, namespaces, own, parent, release, FilterRecord,
    InNetns, NetnsRef, TcMode,
};
use crate::probes::filter::KernelFilter;

/// How often the watcher looks for network namespaces it does not follow yet.
pub const RESCAN: Duration = Duration::from_secs(1);

/// Which devices a rule is for: its target's selectors and the user's filter.
#[derive(Debug, Clone)]
struct Selection {
    target: TcTarget,
    /// The user's `dev` filter, when given: devices must match it too.
    dev: Option<String>,
    /// The user's `netns` filter (empty: every namespace).
    netns: Vec<u32>,
}

impl Selection {
    fn covers(&self, inode: u64) -> bool {
        self.netns.is_empty() || self.netns.contains(&(inode as u32))
    }

    fn wants(&self, inode: u64, dev: &Device) -> bool {
        self.covers(inode)
            && self.target.matches(&dev.name, dev.kind.as_deref())
            && self.dev.as_deref().is_none_or(|d| d == dev.name)
    }
}

/// One TC probe whose target chooses devices.
struct Rule {
    sel: Selection,
    at: TcAttachType,
    program: String,
    /// The watcher's own handle on the loaded program; its links are taken out.
    prog: SchedClassifier,
    prog_id: u32,
}

#[derive(Debug, Clone)]
struct Device {
    name: String,
    kind: Option<String>,
}

/// What keeps one program on one device.
enum Held {
    /// A tcx link: closing it detaches.
    Tcx(SchedClassifierLink),
    /// A netlink filter, owned (and recorded) by the parent module.
    Netlink,
}

/// A followed network namespace.
struct Space {
    ns: NetnsRef,
    monitor: LinkMonitor,
    devices: HashMap<u32, Device>,
    /// (rule, ifindex) -> attachment.
    held: HashMap<(usize, u32), Held>,
}

#[derive(Default)]
struct Watch {
    rules: Vec<Rule>,
    spaces: BTreeMap<u64, Space>,
}

static WATCH: Mutex<Option<Watch>> = Mutex::new(None);
static STOPPED: AtomicBool = AtomicBool::new(false);
static THREAD: Once = Once::new();

fn lock() -> std::sync::MutexGuard<'static, Option<Watch>> {
    WATCH.lock().unwrap_or_else(|p| p.into_inner())
}

/// Attach nothing more (agent exit); returns once the watcher is between
/// two rounds.
pub fn stop() {
    STOPPED.store(true, Ordering::SeqCst);
    drop(lock());
}

/// Follow `target`'s devices with `prog` (loaded): attach it to those there
/// are now, and keep it on exactly the matching devices until the agent
/// exits. Returns where it is now.
pub fn register(
    prog: &SchedClassifier,
    program: &str,
    target: TcTarget,
    filter: &KernelFilter,
) -> Result<String, String> {
    let info = prog.info().map_err(|e| crate::probes::describe(&e))?;
    let prog_id = info.id();
    let own_handle =
        SchedClassifier::from_program_info(info, program.to_string().into()).map_err(|e| {
            format!(
                "cannot take a second handle on `{program}`: {}",
                crate::probes::describe(&e)
            )
        })?;
    let rule = Rule {
        at: attach_type(&target),
        sel: Selection {
            target,
            dev: filter.dev(),
            netns: filter.netns().to_vec(),
        },
        program: program.to_string(),
        prog: own_handle,
        prog_id,
    };
    let mut guard = lock();
    let w = guard.get_or_insert_with(Watch::default);
    w.rules.push(rule);
    let r = w.rules.len() - 1;
    // Follow the namespaces there are (the first rule opens them), then put
    // the new rule on the devices already known.
    w.rescan();
    let inodes: Vec<u64> = w.spaces.keys().copied().collect();
    for inode in &inodes {
        let ifindexes: Vec<u32> = w.spaces[inode].devices.keys().copied().collect();
        for i in ifindexes {
            w.apply(*inode, r, i);
        }
    }
    if !w.spaces.contains_key(&own_inode().unwrap_or(0)) && w.rules[r].sel.netns.is_empty() {
        return Err("cannot follow the links of the agent's own network namespace".into());
    }
    let rule = &w.rules[r];
    let now: Vec<String> = w
        .spaces
        .values()
        .flat_map(|s| {
            s.held
                .keys()
                .filter(|(ri, _)| *ri == r)
                .filter_map(|(_, i)| s.devices.get(i))
                .map(|d| format!("{} in {}", d.name, s.ns.describe()))
        })
        .collect();
    let detail = format!(
        "{} as {} on matching devices as they come and go, in {} network namespace(s) followed; now on {}",
        rule.sel.target,
        match mode() {
            TcMode::Tcx => "tcx links",
            TcMode::Netlink => "netlink filters",
        },
        w.spaces.len(),
        if now.is_empty() {
            "none yet".to_string()
        } else {
            now.join(", ")
        }
    );
    drop(guard);
    THREAD.call_once(|| {
        if let Err(e) = std::thread::Builder::new()
            .name("vnt-tc-watch".into())
            .spawn(run)
        {
            tracing::error!(error = %e, "cannot start the TC device watcher: devices that appear later get no TC program");
        }
    });
    Ok(detail)
}

fn own_inode() -> Option<u64> {
    std::fs::metadata("/proc/self/ns/net")
        .ok()
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
}

/// The watcher thread: wait for link notifications, rescan namespaces.
fn run() {
    let mut next_scan = Instant::now() + RESCAN;
    loop {
        let fds: Vec<(u64, RawFd)> = match lock().as_ref() {
            Some(w) => w
                .spaces
                .iter()
                .map(|(i, s)| (*i, s.monitor.fd().as_raw_fd()))
                .collect(),
            None => vec![],
        };
        let mut pollfds: Vec<libc::pollfd> = fds
            .iter()
            .map(|(_, fd)| libc::pollfd {
                fd: *fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let wait = next_scan.saturating_duration_since(Instant::now());
        // SAFETY: `pollfds` is a valid array of its length. Only this thread
        // closes the sockets (when it drops a Space), so every fd is open.
        let n = unsafe {
            libc::poll(
                pollfds.as_mut_ptr(),
                pollfds.len() as libc::nfds_t,
                wait.as_millis().min(i32::MAX as u128) as i32,
            )
        };
        if STOPPED.load(Ordering::SeqCst) {
            return;
        }
        let mut guard = lock();
        let Some(w) = guard.as_mut() else { continue };
        if n > 0 {
            for (p, (inode, _)) in pollfds.iter().zip(&fds) {
                if p.revents != 0 {
                    w.pump(*inode);
                }
            }
        }
        if Instant::now() >= next_scan {
            w.rescan();
            next_scan = Instant::now() + RESCAN;
        }
    }
}

impl Watch {
    fn covered(&self, inode: u64) -> bool {
        self.rules.iter().any(|r| r.sel.covers(inode))
    }

    /// Follow new namespaces, let go of those nobody holds any more, and
    /// keep paths fresh (a `/proc/PID` path dies with its process).
    fn rescan(&mut self) {
        let every: Vec<u32> = if self.rules.iter().any(|r| r.sel.netns.is_empty()) {
            vec![]
        } else {
            self.rules
                .iter()
                .flat_map(|r| r.sel.netns.clone())
                .collect()
        };
        let seen = namespaces(&every, true);
        for ns in &seen {
            if let Some(s) = self.spaces.get_mut(&ns.inode) {
                if s.ns.path != ns.path {
                    // The old path may have died with its process: devices an
                    // attach missed through it get another try.
                    s.ns = ns.clone();
                    let ifindexes: Vec<u32> = s.devices.keys().copied().collect();
                    for r in 0..self.rules.len() {
                        for &i in &ifindexes {
                            self.apply(ns.inode, r, i);
                        }
                    }
                }
            } else if self.covered(ns.inode) {
                self.follow(ns.clone());
            }
        }
        let gone: Vec<u64> = self
            .spaces
            .keys()
            .filter(|i| !seen.iter().any(|n| n.inode == **i))
            .copied()
            .collect();
        for inode in gone {
            if let Some(s) = self.spaces.remove(&inode) {
                tracing::debug!(netns = inode, "network namespace gone: no longer followed");
                self.let_go(inode, s);
            }
        }
    }

    fn follow(&mut self, ns: NetnsRef) {
        let opened = InNetns::enter(&ns).and_then(|_guard| LinkMonitor::open());
        let (monitor, links) = match opened {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(netns = %ns.path.display(), error = %e, "cannot follow the links of a network namespace");
                return;
            }
        };
        let inode = ns.inode;
        tracing::debug!(netns = %ns.describe(), links = links.len(), "following links");
        self.spaces.insert(
            inode,
            Space {
                ns,
                monitor,
                devices: HashMap::new(),
                held: HashMap::new(),
            },
        );
        self.handle(inode, links);
    }

    /// Read a namespace's notifications; re-list its links after an overrun.
    fn pump(&mut self, inode: u64) {
        let Some(s) = self.spaces.get_mut(&inode) else {
            return;
        };
        let events = match s.monitor.drain() {
            Ok(ev) => ev,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                tracing::info!(netns = %s.ns.describe(), "link notifications overran: listing the links again");
                match s.monitor.dump() {
                    Ok(links) => {
                        // What the listing lacks was deleted meanwhile.
                        let listed: Vec<u32> = links
                            .iter()
                            .filter_map(|l| match l {
                                LinkEvent::New { ifindex, .. } => Some(*ifindex),
                                LinkEvent::Del { .. } => None,
                            })
                            .collect();
                        let mut ev: Vec<LinkEvent> = s
                            .devices
                            .keys()
                            .filter(|i| !listed.contains(i))
                            .map(|&ifindex| LinkEvent::Del { ifindex })
                            .collect();
                        ev.extend(links);
                        ev
                    }
                    Err(e) => {
                        tracing::warn!(netns = %s.ns.describe(), error = %e, "cannot list links");
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(netns = %s.ns.describe(), error = %e, "cannot read link notifications");
                return;
            }
        };
        self.handle(inode, events);
    }

    fn handle(&mut self, inode: u64, events: Vec<LinkEvent>) {
        for ev in events {
            let Some(s) = self.spaces.get_mut(&inode) else {
                return;
            };
            match ev {
                LinkEvent::New {
                    ifindex,
                    name,
                    kind,
                } => {
                    s.devices.insert(ifindex, Device { name, kind });
                    for r in 0..self.rules.len() {
                        self.apply(inode, r, ifindex);
                    }
                }
                LinkEvent::Del { ifindex } => {
                    let dev = s.devices.remove(&ifindex);
                    for r in 0..self.rules.len() {
                        if let Some(h) = s.held.remove(&(r, ifindex)) {
                            let rule = &self.rules[r];
                            tracing::info!(
                                program = %rule.program,
                                target = %rule.sel.target,
                                device = dev.as_ref().map(|d| d.name.as_str()).unwrap_or("?"),
                                netns = %s.ns.describe(),
                                "device deleted: TC program released"
                            );
                            drop_held(h, inode, ifindex, rule, true);
                        }
                    }
                }
            }
        }
    }

    /// Put rule `r` on device `ifindex` of namespace `inode` if it wants it,
    /// take it off if it no longer does (renamed).
    fn apply(&mut self, inode: u64, r: usize, ifindex: u32) {
        let Some(s) = self.spaces.get_mut(&inode) else {
            return;
        };
        let Some(dev) = s.devices.get(&ifindex).cloned() else {
            return;
        };
        let rule = &mut self.rules[r];
        let wants = rule.sel.wants(inode, &dev);
        let holds = s.held.contains_key(&(r, ifindex));
        if wants && !holds && !STOPPED.load(Ordering::SeqCst) {
            match attach_dev(rule, &s.ns, ifindex, &dev.name) {
                Ok(h) => {
                    tracing::info!(
                        program = %rule.program,
                        target = %rule.sel.target,
                        device = %dev.name,
                        ifindex,
                        netns = %s.ns.describe(),
                        "TC program attached to a matching device"
                    );
                    s.held.insert((r, ifindex), h);
                }
                Err(e) => tracing::warn!(
                    program = %rule.program,
                    device = %dev.name,
                    netns = %s.ns.describe(),
                    error = %e,
                    "cannot attach a TC program to a matching device"
                ),
            }
        } else if !wants && holds {
            if let Some(h) = s.held.remove(&(r, ifindex)) {
                tracing::info!(program = %rule.program, device = %dev.name, "device no longer matches: TC program detached");
                drop_held(h, inode, ifindex, rule, false);
            }
        }
    }

    /// Release everything held in a namespace that is going away.
    fn let_go(&self, inode: u64, s: Space) {
        let Space { held, monitor, .. } = s;
        for ((r, ifindex), h) in held {
            // Its devices go with it (or already went): forget, do not detach.
            drop_held(h, inode, ifindex, &self.rules[r], true);
        }
        drop(monitor);
    }
}

fn drop_held(h: Held, inode: u64, ifindex: u32, rule: &Rule, device_gone: bool) {
    match h {
        Held::Tcx(link) => drop(link),
        Held::Netlink => release(inode, ifindex, parent(rule.at), &rule.program, device_gone),
    }
}

/// Attach `rule`'s program to one device of `ns`.
fn attach_dev(
    rule: &mut Rule,
    ns: &NetnsRef,
    ifindex_want: u32,
    name: &str,
) -> Result<Held, String> {
    use aya::programs::tc::{NlOptions, TcAttachOptions};
    use aya::programs::LinkOrder;
    let mode = mode();
    let _guard = InNetns::enter(ns).map_err(|e| format!("cannot enter {}: {e}", ns.describe()))?;
    // The name may already be another device's (deleted, then reused).
    if ifindex(name) != Some(ifindex_want) {
        return Err(format!("{name} is no longer ifindex {ifindex_want}"));
    }
    let options = match mode {
        TcMode::Tcx => TcAttachOptions::TcxOrder(LinkOrder::default()),
        TcMode::Netlink => {
            add_clsact(name)?;
            TcAttachOptions::Netlink(NlOptions::default())
        }
    };
    let id = rule
        .prog
        .attach_with_options(name, rule.at, options)
        .map_err(|e| crate::probes::describe(&e))?;
    let link = rule
        .prog
        .take_link(id)
        .map_err(|e| crate::probes::describe(&e))?;
    match mode {
        TcMode::Tcx => Ok(Held::Tcx(link)),
        TcMode::Netlink => {
            let record = FilterRecord {
                netns: ns.clone(),
                ifname: name.to_string(),
                ifindex: ifindex_want,
                parent: parent(rule.at),
                priority: link.priority().map_err(|e| crate::probes::describe(&e))?,
                handle: link
                    .handle()
                    .map_err(|e| crate::probes::describe(&e))?
                    .into(),
                program: rule.program.clone(),
                prog_id: rule.prog_id,
            };
            own(record, link);
            Ok(Held::Netlink)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_wants_its_devices_in_its_namespaces_within_the_dev_filter() {
        let sel = |target: &str, dev: Option<&str>, netns: Vec<u32>| Selection {
            target: TcTarget::parse(target).unwrap(),
            dev: dev.map(String::from),
            netns,
        };
        let dev = |name: &str, kind: Option<&str>| Device {
            name: name.into(),
            kind: kind.map(Into::into),
        };
        let vx0 = dev("vx0", Some("vxlan"));
        assert!(sel("ingress kind=vxlan", None, vec![]).wants(5, &vx0));
        assert!(sel("ingress kind=vxlan", None, vec![5]).wants(5, &vx0));
        assert!(!sel("ingress kind=vxlan", None, vec![7]).wants(5, &vx0));
        assert!(!sel("ingress kind=vxlan", Some("vx1"), vec![]).wants(5, &vx0));
        assert!(sel("ingress kind=vxlan", Some("vx0"), vec![]).wants(5, &vx0));
        assert!(!sel("ingress kind=vxlan", None, vec![]).wants(5, &dev("v0", Some("veth"))));
        assert!(!sel("ingress kind=vxlan", None, vec![]).wants(5, &dev("lo", None)));
        assert!(
            sel("egress name=flannel.*", None, vec![]).wants(5, &dev("flannel.1", Some("vxlan")))
        );
    }
}

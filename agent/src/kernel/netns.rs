//! Who owns a network namespace: its `ip netns` name and a process in it
//! (pid, command, cgroup), found by inode number. Containers are processes
//! in a namespace, so this names the container a hop happened in.
//!
//! The owner is the lowest pid in the namespace (usually its oldest
//! process: a container's init). Owners exit: the first lookup of a
//! namespace in each batch of views ([`NetnsResolver::new_batch`], every
//! tick of the main loop) checks that its owner still lives there; a gone
//! or moved owner makes the table be read again, or, within 100 ms of the
//! last reading, leaves the namespace without an owner until the next one:
//! no owner is shown rather than one that left. The host's own namespace
//! (pid 1's) is named `host` and has no owner: every host process lives
//! there.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What is known about one namespace. The strings are shared: every hop in
/// the namespace shows them, and a view clones them without copying.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetnsInfo {
    /// Name under /run/netns, if any.
    pub name: Option<Arc<str>>,
    /// Lowest pid whose network namespace it is.
    pub pid: Option<u32>,
    /// That process's command name.
    pub comm: Option<Arc<str>>,
    /// That process's cgroup (v2 path).
    pub cgroup: Option<Arc<str>>,
}

/// How soon after the last reading of /proc an owner that left makes the
/// table be read again.
const OWNER_RESCAN: Duration = Duration::from_millis(100);

/// Inode -> info, rescanned at most once per `min_rescan` when asked about an
/// unknown inode, and once per [`OWNER_RESCAN`] when an owner left.
#[derive(Debug)]
pub struct NetnsResolver {
    known: HashMap<u32, NetnsInfo>,
    /// The batch in which each namespace's owner was last confirmed.
    checked: HashMap<u32, u64>,
    /// The current batch of views.
    batch: u64,
    /// The host's namespace (pid 1's), which has no owner by design.
    host: Option<u32>,
    last_scan: Option<Instant>,
    min_rescan: Duration,
    proc_root: std::path::PathBuf,
    run_netns: std::path::PathBuf,
}

impl Default for NetnsResolver {
    fn default() -> Self {
        NetnsResolver::new("/proc", "/run/netns")
    }
}

fn read_trim(p: &Path) -> Option<Arc<str>> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().into())
}

impl NetnsResolver {
    /// Resolver over the given /proc and /run/netns (tests pass fakes).
    pub fn new(
        proc_root: impl Into<std::path::PathBuf>,
        run_netns: impl Into<std::path::PathBuf>,
    ) -> Self {
        NetnsResolver {
            known: HashMap::new(),
            checked: HashMap::new(),
            batch: 0,
            host: None,
            last_scan: None,
            min_rescan: Duration::from_secs(1),
            proc_root: proc_root.into(),
            run_netns: run_netns.into(),
        }
    }

    /// Info for `inode`, rescanning if it is unknown and the last scan is old.
    pub fn lookup(&mut self, inode: u32) -> Option<&NetnsInfo> {
        if inode == 0 {
            return None;
        }
        let may_scan = self
            .last_scan
            .is_none_or(|t| t.elapsed() >= self.min_rescan);
        // An owner that left is worth a reading sooner than an unknown
        // inode (which may be a namespace already gone): at most every
        // OWNER_RESCAN, so a namespace of short-lived processes cannot make
        // every tick read all of /proc.
        let may_rescan_owner = self
            .last_scan
            .is_none_or(|t| t.elapsed() >= self.min_rescan.min(OWNER_RESCAN));
        let host = self.host;
        let (owner_left, ownerless) = match self.known.get(&inode) {
            None => {
                if may_scan {
                    self.scan();
                    // Just read: its owner counts as checked in this batch.
                    self.checked.insert(inode, self.batch);
                }
                (false, false)
            }
            Some(info) => {
                let due = self.checked.get(&inode) != Some(&self.batch);
                if due {
                    self.checked.insert(inode, self.batch);
                }
                match info.pid {
                    Some(pid) => (due && self.netns_of(pid) != Some(inode), false),
                    None => (false, due && Some(inode) != host),
                }
            }
        };
        if owner_left || ownerless {
            let rescan = if owner_left {
                may_rescan_owner
            } else {
                may_scan
            };
            if rescan {
                self.scan();
                self.checked.insert(inode, self.batch);
            } else if let Some(info) = self.known.get_mut(&inode) {
                info.pid = None;
                info.comm = None;
                info.cgroup = None;
            }
        }
        self.known.get(&inode)
    }

    /// Start a batch of views: the next lookup of each namespace checks its
    /// owner again.
    pub fn new_batch(&mut self) {
        self.batch += 1;
    }

    /// The network namespace inode of `pid`, if it is alive.
    fn netns_of(&self, pid: u32) -> Option<u32> {
        let link = std::fs::read_link(self.proc_root.join(pid.to_string()).join("ns/net")).ok()?;
        link.to_str()?
            .strip_prefix("net:[")?
            .strip_suffix(']')?
            .parse()
            .ok()
    }

    /// Rebuild the table from /run/netns and /proc/*/ns/net.
    pub fn scan(&mut self) {
        self.last_scan = Some(Instant::now());
        self.checked.clear();
        let host = self.netns_of(1);
        self.host = host;
        let mut known: HashMap<u32, NetnsInfo> = HashMap::new();
        if let Ok(entries) = std::fs::read_dir(&self.run_netns) {
            for e in entries.flatten() {
                if let (Ok(meta), Some(name)) =
                    (std::fs::metadata(e.path()), e.file_name().to_str())
                {
                    known.entry(meta.ino() as u32).or_default().name = Some(name.into());
                }
            }
        }
        let mut pids: Vec<u32> = std::fs::read_dir(&self.proc_root)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                    .collect()
            })
            .unwrap_or_default();
        pids.sort_unstable();
        for pid in pids {
            let dir = self.proc_root.join(pid.to_string());
            let Ok(link) = std::fs::read_link(dir.join("ns/net")) else {
                continue;
            };
            let Some(inode) = link
                .to_str()
                .and_then(|s| s.strip_prefix("net:["))
                .and_then(|s| s.strip_suffix(']'))
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let info = known.entry(inode).or_default();
            if Some(inode) == host {
                continue;
            }
            if info.pid.is_none() {
                info.pid = Some(pid);
                info.comm = read_trim(&dir.join("comm"));
                info.cgroup = read_trim(&dir.join("cgroup"))
                    .and_then(|c| c.lines().find_map(|l| l.strip_prefix("0::").map(Arc::from)));
            }
        }
        if let Some(host) = host {
            let info = known.entry(host).or_default();
            if info.name.is_none() {
                info.name = Some("host".into());
            }
        }
        self.known = known;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_namespace_is_found() {
        let inode = std::fs::metadata("/proc/self/ns/net").unwrap().ino() as u32;
        let mut r = NetnsResolver::default();
        let info = r.lookup(inode).expect("own netns");
        let host = std::fs::metadata("/proc/1/ns/net").map(|m| m.ino() as u32);
        if host.ok() == Some(inode) {
            assert_eq!(info.name.as_deref(), Some("host"));
            assert_eq!(info.pid, None, "the host namespace has no owner");
        } else {
            assert!(info.pid.is_some());
            assert!(info.comm.is_some());
        }
    }

    fn fake_process(proc_root: &Path, pid: u32, netns: u32, comm: &str) {
        let p = proc_root.join(pid.to_string());
        std::fs::create_dir_all(p.join("ns")).unwrap();
        std::os::unix::fs::symlink(format!("net:[{netns}]"), p.join("ns/net")).unwrap();
        std::fs::write(p.join("comm"), format!("{comm}\n")).unwrap();
    }

    #[test]
    fn an_owner_that_exits_is_replaced_and_the_host_is_named() {
        let dir = crate::testing::TempDir::new();
        let proc_root = dir.path().join("proc");
        fake_process(&proc_root, 1, 500, "init");
        fake_process(&proc_root, 2, 500, "kthreadd");
        fake_process(&proc_root, 40, 777, "ping");
        fake_process(&proc_root, 41, 777, "vnt-traffic");
        let mut r = NetnsResolver::new(&proc_root, dir.path().join("none"));
        r.min_rescan = Duration::ZERO;
        assert_eq!(r.lookup(777).unwrap().comm.as_deref(), Some("ping"));
        let host = r.lookup(500).unwrap().clone();
        assert_eq!((host.name.as_deref(), host.pid), (Some("host"), None));
        std::fs::remove_dir_all(proc_root.join("40")).unwrap();
        assert_eq!(
            r.lookup(777).unwrap().comm.as_deref(),
            Some("ping"),
            "checked once per batch"
        );
        r.new_batch();
        let info = r.lookup(777).unwrap();
        assert_eq!(
            (info.pid, info.comm.as_deref()),
            (Some(41), Some("vnt-traffic"))
        );
        // Within a second of the last reading: no owner rather than a gone one.
        r.min_rescan = Duration::from_secs(3600);
        std::fs::remove_dir_all(proc_root.join("41")).unwrap();
        r.new_batch();
        assert_eq!(r.lookup(777).unwrap().pid, None);
    }

    #[test]
    fn fake_proc_and_run_netns() {
        let dir = crate::testing::TempDir::new();
        let proc_root = dir.path().join("proc");
        let p = proc_root.join("42");
        std::fs::create_dir_all(p.join("ns")).unwrap();
        std::os::unix::fs::symlink("net:[777]", p.join("ns/net")).unwrap();
        std::fs::write(p.join("comm"), "nginx\n").unwrap();
        std::fs::write(p.join("cgroup"), "0::/kubepods/pod1/c1\n").unwrap();
        let mut r = NetnsResolver::new(&proc_root, dir.path().join("none"));
        let info = r.lookup(777).unwrap().clone();
        assert_eq!(info.pid, Some(42));
        assert_eq!(info.comm.as_deref(), Some("nginx"));
        assert_eq!(info.cgroup.as_deref(), Some("/kubepods/pod1/c1"));
        assert!(r.lookup(778).is_none());
        assert!(r.lookup(0).is_none());
    }
}

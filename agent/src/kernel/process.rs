//! Process names for the pids hooks report (the sender at a transmit, the
//! reader at a socket read), read from /proc when the observation arrives:
//! a sender that exits right after sending is still named in a journey
//! that ends later.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use foldhash::fast::RandomState;

/// How long a pid's name is trusted before /proc is read again (a pid can
/// be reused by another process).
const FRESH: Duration = Duration::from_secs(2);
/// At most this many names kept; past it the table is cleared (a burst of
/// short-lived senders cannot grow it without bound).
const MAX_KNOWN: usize = 8192;

/// pid -> command name, as /proc/PID/comm said when last read.
#[derive(Debug)]
pub struct ProcessNames {
    proc_root: PathBuf,
    known: HashMap<u32, (Option<Arc<str>>, Instant), RandomState>,
}

impl Default for ProcessNames {
    fn default() -> Self {
        ProcessNames::new("/proc")
    }
}

impl ProcessNames {
    /// Names read from `proc_root` (tests pass a fake).
    pub fn new(proc_root: impl Into<PathBuf>) -> ProcessNames {
        ProcessNames {
            proc_root: proc_root.into(),
            known: HashMap::default(),
        }
    }

    /// Read `pid`'s name now unless it was read recently. pid 0 is "unknown".
    pub fn note(&mut self, pid: u32) {
        if pid == 0 {
            return;
        }
        if self
            .known
            .get(&pid)
            .is_some_and(|(_, at)| at.elapsed() < FRESH)
        {
            return;
        }
        if self.known.len() >= MAX_KNOWN {
            self.known.clear();
        }
        let comm = std::fs::read_to_string(self.proc_root.join(pid.to_string()).join("comm"))
            .ok()
            .map(|s| Arc::from(s.trim_end_matches('\n')));
        self.known.insert(pid, (comm, Instant::now()));
    }

    /// The name noted for `pid`, if it could be read.
    pub fn name(&self, pid: u32) -> Option<Arc<str>> {
        self.known.get(&pid).and_then(|(c, _)| c.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_outlive_their_process() {
        let dir = crate::testing::TempDir::new();
        let p = dir.path().join("42");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("comm"), "vnt-traffic\n").unwrap();
        let mut n = ProcessNames::new(dir.path());
        n.note(42);
        n.note(0);
        n.note(43);
        std::fs::remove_dir_all(&p).unwrap();
        n.note(42); // fresh: not read again
        assert_eq!(n.name(42).as_deref(), Some("vnt-traffic"));
        assert_eq!(n.name(43), None);
        assert_eq!(n.name(0), None);
    }
}

//! Scenario harness for vnt: real topologies in network namespaces, the agent
//! as a child process, a traffic generator and bpftrace as an independent
//! instrument.
//!
//! A scenario reads as data: build a [`Topology`], start an [`Agent`], make
//! traffic with [`Traffic`], stop the agent and compare its [`Journey`]s with
//! the hops the topology says a packet must take ([`Topology::path`]).
//!
//! Everything here needs root. Privileged tests call [`require_root`] and fail
//! (never skip) when they cannot do their job.

pub mod agent;
pub mod bpftool;
pub mod bpftrace;
pub mod docker;
pub mod flannel;
pub mod journey;
pub mod kernel;
pub mod netns;
pub mod otel;
pub mod ovs;
pub mod packet;
pub mod privileges;
pub mod topology;
pub mod traffic;
pub mod two_hosts;
pub mod verdicts;
pub mod vm;

pub use agent::{Agent, AgentBuilder, AgentOutput};
pub use journey::{
    hooks, median, ExpectedHop, Flow, Hop, HopDrop, Journey, JourneyEnd, KernelCounters,
    PluginSummary, Summary,
};
pub use netns::{exec_in, run, spawn_in};
pub use topology::{Container, Family, Link, Netns, NftDrop, Side, Topology};
pub use traffic::{Receiver, TcpSend, Traffic, UdpSend};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};

/// The workspace root (the directory holding the workspace `Cargo.toml`).
pub fn workspace_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Finds a binary built by this workspace: `$<env_var>` if set, else
/// `target/release/<name>` if it exists, else `target/debug/<name>`.
///
/// # Panics
/// When none of them exists, with a message saying how to build it.
pub fn locate_binary(name: &str, env_var: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "${env_var} points to {}, which is not a file",
            path.display()
        );
        return path;
    }
    let target = workspace_root().join("target");
    for profile in ["release", "debug"] {
        let path = target.join(profile).join(name);
        if path.is_file() {
            return path;
        }
    }
    panic!(
        "`{name}` not found: run `cargo build --release` in {} first (looked in {}/release and \
         {}/debug), or set ${env_var} to its path",
        workspace_root().display(),
        target.display(),
        target.display()
    );
}

/// A fixture plugin library built by this workspace, `libvnt_fixture_<name>.so`
/// next to the agent (cargo puts every cdylib there). Fixture libraries are
/// never found by name on the search path: pass this path to `--plugins`.
///
/// # Panics
/// When the file does not exist, with a message saying how to build it.
pub fn fixture_plugin(name: &str) -> PathBuf {
    let agent = locate_binary("vnt-agent", "VNT_AGENT_BIN");
    let p = agent
        .parent()
        .expect("agent dir")
        .join(format!("libvnt_fixture_{name}.so"));
    assert!(
        p.exists(),
        "{} missing: build the workspace (cargo build --release --workspace)",
        p.display()
    );
    p
}

/// Fails the calling test unless it runs as root. Privileged tests never skip.
///
/// # Panics
/// When the effective user is not root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this is a privileged test: it must run as root (it fails rather than skips)"
    );
}

/// Serialises privileged scenarios within one test binary.
///
/// Every agent sees every packet on the machine, and two cores are easily
/// saturated, so scenarios that measure counts or latencies run one at a
/// time. A panicking holder does not poison the lock for the next test.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A port no other process running this harness is likely to use:
/// 40 ports per process, spread by pid over 20000..60000.
pub fn unique_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 40;
    let base = 20_000 + (std::process::id() % 1000) * 40;
    u16::try_from(base + n).expect("port below 60000")
}

/// A per-process unique path in the temporary directory, for ready files
/// and the like. The file is not created.
pub fn temp_path(what: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("vnt-tests-{}-{n}-{what}", std::process::id()))
}

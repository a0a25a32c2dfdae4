//! `--btf PATH` for kernels without `/sys/kernel/btf/vmlinux` (issue #4):
//! with the kernel's own BTF hidden, the agent fails with a clear error when
//! no `--btf` is given, and with `--btf` pointing at a copy of that BTF it
//! works end to end: CO-RE relocations, tp_btf/fentry targets and the drop
//! reason names all come from the file.
//!
//! The kernel's BTF is hidden from the agent alone: it runs in a private
//! mount namespace with an empty tmpfs over /sys/kernel/btf (`unshare -m`),
//! which is what a kernel built without CONFIG_DEBUG_INFO_BTF looks like.
//!
//! Privileged: run as root after `cargo build --release --workspace`.

use anyhow::{ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use vnt_tests::{
    hooks, kernel, locate_binary, require_root, unique_port, Agent, ExpectedHop, Family,
    JourneyEnd, Side, Topology, Traffic, UdpSend,
};

fn agent() -> PathBuf {
    locate_binary("vnt-agent", "VNT_AGENT_BIN")
}

/// A temporary directory with a copy of the kernel's BTF and a wrapper that
/// runs the agent with /sys/kernel/btf hidden. Removed on drop.
struct NoSysBtf {
    dir: PathBuf,
}

impl NoSysBtf {
    fn new() -> Result<NoSysBtf> {
        // One directory per instance: tests of this file run in parallel in
        // one process, and each removes its directory when done.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("vnt-nobtf-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        std::fs::copy("/sys/kernel/btf/vmlinux", dir.join("vmlinux.btf"))
            .context("copying the kernel's BTF")?;
        let script = format!(
            "#!/bin/sh\n\
             # vnt-agent with /sys/kernel/btf hidden (private mount namespace)\n\
             exec unshare --mount --propagation private sh -c \
             'mount -t tmpfs -o size=64k vnt-no-btf /sys/kernel/btf && exec \"$0\" \"$@\"' \
             '{}' \"$@\"\n",
            agent().display()
        );
        let wrapper = dir.join("vnt-agent-no-sys-btf");
        std::fs::write(&wrapper, script)?;
        std::fs::set_permissions(
            &wrapper,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        Ok(NoSysBtf { dir })
    }

    fn wrapper(&self) -> PathBuf {
        self.dir.join("vnt-agent-no-sys-btf")
    }

    fn btf(&self) -> PathBuf {
        self.dir.join("vmlinux.btf")
    }
}

impl Drop for NoSysBtf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(bin: &Path, args: &[&str]) -> Result<(i32, String, String)> {
    let out = Command::new(bin).args(args).output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn a_kernel_without_btf_and_no_btf_flag_is_a_clear_error() -> Result<()> {
    require_root();
    let hidden = NoSysBtf::new()?;
    let (code, _, err) = run(&hidden.wrapper(), &["--plugins", "veth", "--duration", "2"])?;
    eprintln!("{err}");
    ensure!(code == 4, "exit {code}, expected 4:\n{err}");
    ensure!(
        err.contains("publishes no BTF (/sys/kernel/btf/vmlinux is missing")
            && err.contains("CONFIG_DEBUG_INFO_BTF")
            && err.contains("--btf"),
        "the error must say that BTF is missing and how to pass it:\n{err}"
    );

    let (code, out, err) = run(
        &hidden.wrapper(),
        &["check", "--plugins", "veth", "--output", "json"],
    )?;
    ensure!(code == 4, "check exit {code}, expected 4:\n{out}\n{err}");
    let r: kernel::CheckReport = serde_json::from_str(&out)?;
    ensure!(!r.feature("btf").available, "{out}");
    ensure!(
        r.problems.iter().any(|p| p.starts_with("no kernel BTF")),
        "{:?}",
        r.problems
    );
    Ok(())
}

#[test]
fn an_unreadable_btf_file_is_named() -> Result<()> {
    require_root();
    let (code, _, err) = run(
        &agent(),
        &[
            "--plugins",
            "veth",
            "--btf",
            "/nonexistent/vmlinux",
            "--duration",
            "1",
        ],
    )?;
    ensure!(code == 4, "exit {code}:\n{err}");
    ensure!(
        err.contains("cannot read BTF from /nonexistent/vmlinux (--btf)"),
        "{err}"
    );
    Ok(())
}

#[test]
fn btf_from_a_file_drives_the_probes_and_the_drop_reason_names() -> Result<()> {
    let _serial = vnt_tests::serial();
    require_root();
    let hidden = NoSysBtf::new()?;
    let btf = hidden.btf();
    let btf_arg = btf.to_str().context("utf-8 path")?;

    let (code, out, err) = run(
        &hidden.wrapper(),
        &[
            "check",
            "--plugins",
            "veth",
            "--output",
            "json",
            "--btf",
            btf_arg,
        ],
    )?;
    ensure!(code == 0, "check with --btf: exit {code}\n{out}\n{err}");
    let r: kernel::CheckReport = serde_json::from_str(&out)?;
    ensure!(
        r.feature("btf").available && r.feature("btf").detail.contains("(--btf)"),
        "{:?}",
        r.feature("btf")
    );

    let topo = Topology::new()?;
    let traffic = Traffic::new(env!("CARGO_BIN_EXE_vnt-traffic"));
    let (dropped, passed) = (unique_port(), unique_port());
    let _rule = topo.nft_drop_udp(dropped)?;
    let agent = Agent::builder()
        .bin(hidden.wrapper())
        .filter(format!("port {dropped}"))
        .arg("--btf")
        .arg(&btf)
        .start()
        .context("the agent must start with --btf and no /sys/kernel/btf")?;
    let (src, dst) = (
        topo.addr(Side::C1, Family::V4),
        topo.addr(Side::C2, Family::V4),
    );
    let ns = |s: Side| topo.container(s).netns.name.clone();
    let count = 50;
    traffic.udp_send(
        &ns(Side::C1),
        &UdpSend {
            count,
            rate: 100,
            ..UdpSend::to(dst, dropped)
        },
    )?;
    let recv = traffic.udp_recv(&ns(Side::C2), dst, passed, count, Duration::from_secs(30))?;
    traffic.udp_send(
        &ns(Side::C1),
        &UdpSend {
            count,
            rate: 100,
            sport: Some(dropped),
            ..UdpSend::to(dst, passed)
        },
    )?;
    ensure!(recv.wait()? == count, "the passing flow lost datagrams");
    std::thread::sleep(Duration::from_millis(500));
    let out = agent.stop()?;

    let drops: Vec<_> = out
        .journeys
        .iter()
        .filter(|j| j.is_flow(src, dst, "udp", dropped))
        .collect();
    let passing: Vec<_> = out
        .journeys
        .iter()
        .filter(|j| j.is_flow(src, dst, "udp", passed))
        .collect();
    eprintln!(
        "with --btf {}: {} dropped and {} passing journeys; probes {:?}",
        btf.display(),
        drops.len(),
        passing.len(),
        out.summary.plugins.get("veth").map(|p| &p.probes)
    );
    ensure!(
        drops.len() as u64 >= count * 99 / 100,
        "{} dropped journeys",
        drops.len()
    );
    let mut expected = topo.path(Side::C1)[..3].to_vec();
    expected.push(ExpectedHop::at(hooks::DROP, &topo.c2.peer));
    for j in &drops {
        j.check_hops(&expected).map_err(anyhow::Error::msg)?;
        let reason = j.last_hop().and_then(|h| h.drop.as_ref());
        ensure!(
            j.end == JourneyEnd::Dropped && reason.is_some_and(|d| d.reason == "NETFILTER_DROP"),
            "the drop reason must be named from the --btf file: {}",
            j.describe()
        );
    }
    ensure!(
        passing.len() as u64 >= count * 99 / 100,
        "{} passing journeys",
        passing.len()
    );
    for j in &passing {
        j.check_hops(&topo.path(Side::C1))
            .map_err(anyhow::Error::msg)?;
    }
    Ok(())
}

//! A plugin runs inside the agent as root, so a plugin file that someone
//! else could write is refused before it is opened (issue 9, acceptance 6):
//! group-writable, owned by another user, in a writable directory, or
//! reached through a symlink to such a file. Each refusal says which path,
//! why, and how to override; the override loads and traces.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use vnt_tests::topology::{Family, Side, Topology};
use vnt_tests::traffic::{Traffic, UdpSend};
use vnt_tests::{locate_binary, require_root, serial, unique_port, Agent};

const OVERRIDE: &str = "--allow-unsafe-plugin-files";

/// A private directory (root, 0755) holding a copy of the veth plugin (0755).
struct PluginCopy {
    dir: PathBuf,
    file: PathBuf,
}

impl PluginCopy {
    fn new(what: &str) -> PluginCopy {
        let dir = std::env::temp_dir().join(format!("vnt-trust-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        chmod(&dir, 0o755);
        let agent = locate_binary("vnt-agent", "VNT_AGENT_BIN");
        let file = dir.join("libvnt_plugin_veth.so");
        std::fs::copy(agent.with_file_name("libvnt_plugin_veth.so"), &file).unwrap();
        chmod(&file, 0o755);
        PluginCopy { dir, file }
    }
}

impl Drop for PluginCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(p: &Path, uid: u32) {
    std::os::unix::fs::chown(p, Some(uid), None).unwrap();
}

/// Exit code and stderr of a one-second run with this plugin file.
fn run(plugin: &Path, extra: &[&str]) -> (i32, String) {
    let out = Command::new(locate_binary("vnt-agent", "VNT_AGENT_BIN"))
        .args(["--plugins", plugin.to_str().unwrap(), "--duration", "1"])
        .args(extra)
        .env("VNT_LOG", "warn")
        .output()
        .expect("run vnt-agent");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Refused with exit 3, naming `culprit` and saying why and how to override.
fn assert_refused(plugin: &Path, culprit: &Path, why: &str) {
    let (code, err) = run(plugin, &[]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("refusing plugin file"), "{err}");
    assert!(
        err.contains(&format!("{} {why}", culprit.display())),
        "expected `{} {why}`:\n{err}",
        culprit.display()
    );
    assert!(err.contains(OVERRIDE), "no override named:\n{err}");
    assert!(err.contains("VNT_ALLOW_UNSAFE_PLUGIN_FILES"), "{err}");
}

#[test]
fn group_writable_plugin_file_is_refused() {
    require_root();
    let p = PluginCopy::new("group");
    chmod(&p.file, 0o775);
    assert_refused(
        &p.file,
        &p.file,
        "is a file writable by its group (mode 0775",
    );
}

#[test]
fn plugin_file_owned_by_another_user_is_refused() {
    require_root();
    let p = PluginCopy::new("owner");
    chown(&p.file, 65534);
    assert_refused(&p.file, &p.file, "is a file owned by uid 65534");
}

#[test]
fn plugin_in_a_writable_directory_is_refused() {
    require_root();
    let p = PluginCopy::new("dir");
    chmod(&p.dir, 0o777);
    assert_refused(
        &p.file,
        &p.dir,
        "is a directory writable by group and others",
    );
}

#[test]
fn symlink_to_a_writable_plugin_file_is_refused() {
    require_root();
    let real = PluginCopy::new("target");
    chmod(&real.file, 0o757);
    let links = PluginCopy::new("links");
    std::fs::remove_file(&links.file).unwrap();
    std::os::unix::fs::symlink(&real.file, &links.file).unwrap();
    assert_refused(&links.file, &real.file, "is a file writable by others");
    // The same link to a safe file is fine.
    chmod(&real.file, 0o755);
    let (code, err) = run(&links.file, &[]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn override_loads_an_unsafe_plugin_file_and_traces() {
    require_root();
    let _guard = serial();
    let p = PluginCopy::new("override");
    chmod(&p.file, 0o777);
    chown(&p.file, 65534);
    let topo = Topology::new().expect("topology");
    let port = unique_port();
    let agent = Agent::builder()
        .plugins(p.file.display().to_string())
        .filter(format!("port {port}"))
        .arg(OVERRIDE)
        .start()
        .expect("the agent starts with the override");
    let traffic = Traffic::new(env!("CARGO_BIN_EXE_vnt-traffic"));
    let dst: IpAddr = topo.addr(Side::C2, Family::V4);
    let rx = traffic
        .udp_recv(&topo.c2.netns.name, dst, port, 20, Duration::from_secs(20))
        .expect("receiver");
    traffic
        .udp_send(
            &topo.c1.netns.name,
            &UdpSend {
                count: 20,
                rate: 100,
                ..UdpSend::to(dst, port)
            },
        )
        .expect("traffic");
    assert_eq!(rx.wait().expect("receiver"), 20);
    std::thread::sleep(Duration::from_millis(300));
    let out = agent.stop().expect("the agent stops cleanly");
    let path = topo.path(Side::C1);
    let complete = out
        .journeys
        .iter()
        .filter(|j| j.has_port(port) && j.check_hops(&path).is_ok())
        .count();
    assert!(complete >= 19, "only {complete} of 20 complete journeys");
}

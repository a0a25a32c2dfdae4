//! An Open vSwitch bridge with two namespaces on veth ports, run by an
//! ovsdb-server and an ovs-vswitchd of its own (private database, sockets,
//! pid and log files in a temporary directory: nothing global is touched).
//! Everything it creates goes on drop: the daemons (by their pid files,
//! ovs-vswitchd with `exit --cleanup`, which removes its datapath ports),
//! the namespaces and the directory.
//!
//! `Datapath::Kernel` needs the openvswitch module (the VM tier's guests);
//! `Datapath::Netdev` is ovs-vswitchd's userspace datapath, which runs on
//! any kernel (packets cross it through AF_PACKET sockets).

use crate::netns::{exec_in, run};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Which datapath the bridge uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datapath {
    /// The kernel module (`datapath_type=system`).
    Kernel,
    /// ovs-vswitchd's userspace datapath (`datapath_type=netdev`).
    Netdev,
}

/// A running switch; see the module docs.
#[derive(Debug)]
pub struct OvsSwitch {
    pub dir: PathBuf,
    pub bridge: String,
    /// The two namespaces, `[0]` with 10.N.0.1 and `[1]` with 10.N.0.2.
    pub ns: [String; 2],
    /// The bridge ports (host side of each veth).
    pub ports: [String; 2],
    /// The namespace side of each veth.
    pub inner: [String; 2],
    pub addrs: [String; 2],
    db: String,
    vswitchd_pid: Option<u32>,
    ovsdb_pid: Option<u32>,
}

fn tool(dir: &Path, program: &str) -> Command {
    let mut c = Command::new(program);
    c.env("OVS_RUNDIR", dir)
        .env("OVS_DBDIR", dir)
        .env("OVS_LOGDIR", dir)
        .env("OVS_SYSCONFDIR", dir);
    c
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn mac_of(ns: &str, dev: &str) -> Result<String> {
    let out = run(&mut exec_in(ns, "ip", ["-j", "link", "show", dev]))?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    v[0]["address"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no address for {dev} in {ns}: {out}"))
}

impl OvsSwitch {
    /// Starts the daemons and builds the bridge; `tag` (a few letters)
    /// and the process id make the names unique. `subnet` is the second
    /// octet of the namespaces' 10.x.0.0/24.
    pub fn start(tag: &str, subnet: u8, datapath: Datapath) -> Result<OvsSwitch> {
        if datapath == Datapath::Kernel {
            run(Command::new("modprobe").arg("openvswitch"))
                .context("the kernel datapath needs the openvswitch module")?;
        }
        let id = std::process::id() % 100_000;
        let dir = crate::temp_path(&format!("ovs-{tag}"));
        std::fs::create_dir_all(&dir)?;
        let db = format!("unix:{}", dir.join("db.sock").display());
        let mut me = OvsSwitch {
            bridge: format!("vb{tag}{id}"),
            ns: [format!("vo{tag}{id}a"), format!("vo{tag}{id}b")],
            ports: [format!("vp{tag}{id}a"), format!("vp{tag}{id}b")],
            inner: ["eth0".into(), "eth0".into()],
            addrs: [format!("10.{subnet}.0.1"), format!("10.{subnet}.0.2")],
            dir,
            db,
            vswitchd_pid: None,
            ovsdb_pid: None,
        };
        for n in &me.ports {
            if n.len() > 15 {
                bail!("port name {n} is longer than IFNAMSIZ");
            }
        }
        let d = me.dir.clone();
        run(tool(&d, "ovsdb-tool").args([
            "create",
            &d.join("conf.db").display().to_string(),
            "/usr/share/openvswitch/vswitch.ovsschema",
        ]))?;
        run(tool(&d, "ovsdb-server").args([
            &d.join("conf.db").display().to_string(),
            &format!("--remote=punix:{}", d.join("db.sock").display()),
            &format!("--pidfile={}", d.join("ovsdb-server.pid").display()),
            &format!("--log-file={}", d.join("ovsdb-server.log").display()),
            "--detach",
        ]))?;
        me.ovsdb_pid = read_pid(&d.join("ovsdb-server.pid"));
        me.vsctl(&["--no-wait", "init"])?;
        run(tool(&d, "ovs-vswitchd").args([
            &me.db,
            &format!("--pidfile={}", d.join("ovs-vswitchd.pid").display()),
            &format!("--log-file={}", d.join("ovs-vswitchd.log").display()),
            "--detach",
        ]))?;
        me.vswitchd_pid = read_pid(&d.join("ovs-vswitchd.pid"));
        let dp_type = match datapath {
            Datapath::Kernel => "system",
            Datapath::Netdev => "netdev",
        };
        me.vsctl(&[
            "add-br",
            &me.bridge.clone(),
            "--",
            "set",
            "bridge",
            &me.bridge.clone(),
            &format!("datapath_type={dp_type}"),
        ])?;
        for i in 0..2 {
            let (ns, port, inner) = (me.ns[i].clone(), me.ports[i].clone(), me.inner[i].clone());
            run(Command::new("ip").args(["netns", "add", &ns]))?;
            run(Command::new("ip").args([
                "link", "add", &port, "type", "veth", "peer", "name", &inner, "netns", &ns,
            ]))?;
            run(Command::new("ip").args(["link", "set", &port, "up"]))?;
            me.vsctl(&["add-port", &me.bridge.clone(), &port])?;
            run(&mut exec_in(
                &ns,
                "ip",
                ["addr", "add", &format!("{}/24", me.addrs[i]), "dev", &inner],
            ))?;
            run(&mut exec_in(&ns, "ip", ["link", "set", &inner, "up"]))?;
            run(&mut exec_in(&ns, "ip", ["link", "set", "lo", "up"]))?;
            // No offloads: the userspace datapath sees each packet as sent.
            let _ = exec_in(&ns, "ethtool", ["-K", &inner, "tx", "off"]).output();
        }
        // Static neighbours: the first packet of a flow is the test's own.
        for (i, j) in [(0, 1), (1, 0)] {
            let mac = mac_of(&me.ns[j], &me.inner[j])?;
            run(&mut exec_in(
                &me.ns[i],
                "ip",
                [
                    "neigh",
                    "replace",
                    &me.addrs[j],
                    "lladdr",
                    &mac,
                    "dev",
                    &me.inner[i],
                ],
            ))?;
        }
        Ok(me)
    }

    /// `ovs-vsctl --db=... ARGS`.
    pub fn vsctl(&self, args: &[&str]) -> Result<String> {
        run(tool(&self.dir, "ovs-vsctl")
            .arg(format!("--db={}", self.db))
            .arg("--timeout=30")
            .args(args))
    }

    /// `ovs-appctl -t <this ovs-vswitchd> ARGS`.
    pub fn appctl(&self, args: &[&str]) -> Result<String> {
        let pid = self.vswitchd_pid.context("ovs-vswitchd has no pid")?;
        let ctl = self.dir.join(format!("ovs-vswitchd.{pid}.ctl"));
        run(tool(&self.dir, "ovs-appctl")
            .arg("-t")
            .arg(ctl)
            .arg("--timeout=30")
            .args(args))
    }

    /// `ovs-ofctl ARGS` on the bridge (`add-flow`, ...): `args[0]` is the command.
    pub fn ofctl(&self, cmd: &str, rest: &[&str]) -> Result<String> {
        let mgmt = format!(
            "unix:{}",
            self.dir.join(format!("{}.mgmt", self.bridge)).display()
        );
        run(tool(&self.dir, "ovs-ofctl").arg(cmd).arg(mgmt).args(rest))
    }

    /// `dpctl/dump-flows -m`: every datapath flow with its UFID and port names.
    pub fn dump_flows(&self) -> Result<Vec<DpFlow>> {
        Ok(self
            .appctl(&["dpctl/dump-flows", "-m"])?
            .lines()
            .filter_map(DpFlow::parse)
            .collect())
    }

    /// Waits until ovs-vswitchd has the bridge's ports in its datapath.
    pub fn wait_ready(&self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let show = self.appctl(&["dpctl/show"]).unwrap_or_default();
            if self.ports.iter().all(|p| show.contains(p.as_str())) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("ovs-vswitchd did not add the ports within {within:?}:\n{show}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The pid of ovs-vswitchd.
    pub fn vswitchd_pid(&self) -> Option<u32> {
        self.vswitchd_pid
    }
}

/// One line of `dpctl/dump-flows -m`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpFlow {
    /// `57660793-e7b0-4d90-b86e-3ab2330605d6`.
    pub ufid: String,
    /// The match, as printed (`recirc_id(0),...,in_port(ox1),...`).
    pub key: String,
    /// The in port's name.
    pub in_port: String,
    pub packets: u64,
    /// The actions, as printed (`ox2`, `drop`, `brx,ox2`).
    pub actions: String,
}

impl DpFlow {
    /// Parses `ufid:U, KEY, packets:N, bytes:N, used:T, dp:ovs, actions:A`.
    pub fn parse(line: &str) -> Option<DpFlow> {
        let rest = line.trim().strip_prefix("ufid:")?;
        let (ufid, rest) = rest.split_once(", ")?;
        let (key, stats) = rest.split_once(", packets:")?;
        let packets = stats.split(',').next()?.trim().parse().ok()?;
        let actions = stats.split_once("actions:")?.1.trim().to_owned();
        let in_port = key.split_once("in_port(")?.1.split(')').next()?.to_owned();
        Some(DpFlow {
            ufid: ufid.to_owned(),
            key: key.to_owned(),
            in_port,
            packets,
            actions,
        })
    }
}

impl Drop for OvsSwitch {
    fn drop(&mut self) {
        let _ = self.vsctl(&["--if-exists", "del-br", &self.bridge.clone()]);
        if self.vswitchd_pid.is_some() {
            let _ = self.appctl(&["exit", "--cleanup"]);
        }
        for ns in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        for port in &self.ports {
            // Usually gone with its peer's namespace already.
            let _ = Command::new("ip").args(["link", "del", port]).output();
        }
        for pid in [self.vswitchd_pid, self.ovsdb_pid].into_iter().flatten() {
            // SAFETY: kill(2) on a pid this switch started (its pid file).
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_flows_lines_parse() {
        let l = "ufid:bf7f825f-671c-4e30-bda1-08de64fc8b33, recirc_id(0),dp_hash(0/0),skb_priority(0/0),in_port(ox1),skb_mark(0/0),eth(src=4a:14:f9:49:98:86,dst=7e:b6:0a:dd:b7:c8),eth_type(0x0800),ipv4(src=0.0.0.0/0.0.0.0,frag=no), packets:5, bytes:382, used:0.628s, dp:ovs, actions:ox2";
        let f = DpFlow::parse(l).unwrap();
        assert_eq!(f.ufid, "bf7f825f-671c-4e30-bda1-08de64fc8b33");
        assert_eq!(f.in_port, "ox1");
        assert_eq!(f.packets, 5);
        assert_eq!(f.actions, "ox2");
        assert!(DpFlow::parse("recirc_id(0),in_port(2), packets:1").is_none());
    }
}

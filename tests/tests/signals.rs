//! Signals (issue 7): the agent used to install its handlers only after every
//! probe was attached and the ready file written, so a SIGTERM while it was
//! starting killed it with no summary and no flush, and SIGHUP killed it at
//! any time. Now SIGINT/SIGTERM stop it cleanly whenever they come, and
//! SIGHUP is logged and ignored.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use vnt_tests::{locate_binary, require_root, serial, unique_port, Agent, Side, Topology};
use vnt_tests::{Family, Traffic, UdpSend};

/// An agent started by hand, to signal it before it is ready; its stderr
/// lines arrive on `stderr`.
struct Starting {
    child: Child,
    stderr: mpsc::Receiver<String>,
    seen: Vec<String>,
    ready_file: PathBuf,
}

impl Starting {
    fn spawn(port: u16) -> Result<Starting> {
        let ready_file =
            std::env::temp_dir().join(format!("vnt-signals-{}-{port}.ready", std::process::id()));
        let _ = std::fs::remove_file(&ready_file);
        let mut child = Command::new(locate_binary("vnt-agent", "VNT_AGENT_BIN"))
            .args(["--plugins", "veth", "--output", "json", "--sample", "1/1"])
            .args(["--filter", &format!("port {port}")])
            .arg("--ready-file")
            .arg(&ready_file)
            .env("VNT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("start vnt-agent")?;
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Starting {
            child,
            stderr: rx,
            seen: Vec::new(),
            ready_file,
        })
    }

    /// Waits for a stderr line containing `text`.
    fn wait_for(&mut self, text: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match self.stderr.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let found = line.contains(text);
                    self.seen.push(line);
                    if found {
                        return Ok(());
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        bail!(
            "no `{text}` on the agent's stderr:\n{}",
            self.seen.join("\n")
        )
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill has no memory-safety preconditions; the child is not
        // reaped yet, so the pid still names it.
        unsafe { libc::kill(pid, sig) };
    }

    /// Waits for the exit; returns stdout and every stderr line.
    fn finish(mut self) -> Result<(std::process::ExitStatus, String, String)> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("agent did not exit within 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stdout = String::new();
        std::io::Read::read_to_string(self.child.stdout.as_mut().expect("piped"), &mut stdout)?;
        self.seen.extend(self.stderr.try_iter());
        Ok((status, stdout, self.seen.join("\n")))
    }

    fn ready_file(&self) -> &Path {
        &self.ready_file
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.ready_file);
    }
}

#[test]
fn sigterm_while_attaching_exits_cleanly_with_a_summary() -> Result<()> {
    require_root();
    let _serial = serial();
    let mut agent = Starting::spawn(unique_port())?;
    // Logged once the plugin is loaded, before anything is attached.
    agent.wait_for("plugin loaded")?;
    agent.signal(libc::SIGTERM);
    let ready_file = agent.ready_file().to_path_buf();
    let (status, stdout, stderr) = agent.finish()?;
    ensure!(
        status.success(),
        "SIGTERM while attaching: {status}, expected exit 0\nstderr:\n{stderr}"
    );
    ensure!(
        stdout.lines().any(|l| l.contains(r#""type":"summary""#)),
        "no summary line on stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    ensure!(
        stderr.contains("SIGTERM"),
        "the stop is not logged:\n{stderr}"
    );
    ensure!(
        !ready_file.exists(),
        "a ready file was left by an agent stopped before it was ready"
    );
    Ok(())
}

#[test]
fn sighup_while_attaching_does_not_kill_the_agent() -> Result<()> {
    require_root();
    let _serial = serial();
    let mut agent = Starting::spawn(unique_port())?;
    agent.wait_for("plugin loaded")?;
    agent.signal(libc::SIGHUP);
    agent.wait_for(" tracing filter=")?; // the agent went on to attach and trace
    ensure!(agent.ready_file().exists(), "tracing but no ready file");
    agent.signal(libc::SIGTERM);
    let (status, stdout, stderr) = agent.finish()?;
    ensure!(
        status.success(),
        "SIGHUP then SIGTERM: {status}, expected exit 0\nstderr:\n{stderr}"
    );
    ensure!(
        stderr.contains("SIGHUP ignored"),
        "SIGHUP not logged:\n{stderr}"
    );
    ensure!(
        stdout.lines().any(|l| l.contains(r#""type":"summary""#)),
        "no summary line on stdout:\n{stdout}"
    );
    Ok(())
}

#[test]
fn sighup_while_tracing_is_ignored_and_tracing_goes_on() -> Result<()> {
    require_root();
    let _serial = serial();
    let topo = Topology::new()?;
    let traffic = Traffic::new(env!("CARGO_BIN_EXE_vnt-traffic"));
    let port = unique_port();
    let agent = Agent::start(format!("port {port}"), 1)?;
    let pid = libc::pid_t::try_from(agent.pid().expect("running")).expect("pid fits pid_t");
    // SAFETY: kill has no memory-safety preconditions; `agent` owns the
    // unreaped child, so the pid still names it.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(300));

    let dst = topo.addr(Side::C2, Family::V4);
    let send = UdpSend {
        count: 5,
        rate: 50,
        ..UdpSend::to(dst, port)
    };
    let recv = traffic.udp_recv(
        &topo.container(Side::C2).netns.name,
        dst,
        port,
        send.count,
        Duration::from_secs(5),
    )?;
    traffic.udp_send(&topo.container(Side::C1).netns.name, &send)?;
    ensure!(recv.wait()? == send.count, "the datagrams did not arrive");
    std::thread::sleep(Duration::from_millis(500));

    // stop() fails unless the agent is still alive and exits 0 with a summary.
    let out = agent.stop().context("the agent must survive SIGHUP")?;
    ensure!(
        out.stderr.contains("SIGHUP ignored"),
        "SIGHUP not logged:\n{}",
        out.stderr
    );
    let journeys = out
        .journeys
        .iter()
        .filter(|j| j.is_flow(topo.addr(Side::C1, Family::V4), dst, "udp", port))
        .count();
    ensure!(
        journeys as u64 == send.count,
        "{journeys} journeys for {} datagrams sent after SIGHUP",
        send.count
    );
    Ok(())
}

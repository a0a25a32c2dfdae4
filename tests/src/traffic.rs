//! Traffic from inside a namespace with the `vnt-traffic` binary of this
//! crate (see `src/bin/vnt-traffic.rs` for the protocol).
//!
//! Integration tests of this crate get the binary's path at compile time:
//! `Traffic::new(env!("CARGO_BIN_EXE_vnt-traffic"))`.

use crate::agent::{signal, wait_timeout};
use crate::netns::{describe, exec_in, run};
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Read};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a receiver may take to bind its socket.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// The traffic generator.
#[derive(Debug, Clone)]
pub struct Traffic {
    bin: PathBuf,
}

/// `vnt-traffic udp-send`: `count` datagrams of `size` bytes at `rate` per
/// second (0: as fast as possible), each starting with its big-endian u64
/// sequence number.
#[derive(Debug, Clone)]
pub struct UdpSend {
    pub dst: IpAddr,
    pub port: u16,
    pub count: u64,
    pub rate: u64,
    pub size: usize,
    pub sport: Option<u16>,
}

impl UdpSend {
    /// 100 datagrams of 64 bytes at 100/s to `dst:port`.
    pub fn to(dst: IpAddr, port: u16) -> UdpSend {
        UdpSend {
            dst,
            port,
            count: 100,
            rate: 100,
            size: 64,
            sport: None,
        }
    }
}

/// `vnt-traffic tcp-send`: `bytes` in writes of `chunk` bytes, `rate` writes
/// per second (0: as fast as possible).
#[derive(Debug, Clone)]
pub struct TcpSend {
    pub dst: IpAddr,
    pub port: u16,
    pub bytes: u64,
    pub chunk: usize,
    pub rate: u64,
}

impl Traffic {
    /// The generator at `bin`.
    pub fn new(bin: impl Into<PathBuf>) -> Traffic {
        Traffic { bin: bin.into() }
    }

    /// `$VNT_TRAFFIC_BIN`, else the workspace's release or debug build.
    pub fn locate() -> Traffic {
        Traffic::new(crate::locate_binary("vnt-traffic", "VNT_TRAFFIC_BIN"))
    }

    /// The binary's path.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// Sends datagrams from namespace `ns` and waits until all are sent.
    pub fn udp_send(&self, ns: &str, s: &UdpSend) -> Result<()> {
        let mut args = vec![
            "udp-send".to_owned(),
            "--dst".into(),
            s.dst.to_string(),
            "--port".into(),
            s.port.to_string(),
            "--count".into(),
            s.count.to_string(),
            "--rate".into(),
            s.rate.to_string(),
            "--size".into(),
            s.size.to_string(),
        ];
        if let Some(sport) = s.sport {
            args.extend(["--sport".into(), sport.to_string()]);
        }
        run(&mut exec_in(ns, &self.bin, args)).map(drop)
    }

    /// Starts a receiver in `ns` that counts up to `count` datagrams on
    /// `bind:port` for at most `timeout`; returns once it is bound.
    pub fn udp_recv(
        &self,
        ns: &str,
        bind: IpAddr,
        port: u16,
        count: u64,
        timeout: Duration,
    ) -> Result<Receiver> {
        let secs = timeout.as_secs().max(1);
        let args = [
            "udp-recv".to_owned(),
            "--bind".into(),
            bind.to_string(),
            "--port".into(),
            port.to_string(),
            "--count".into(),
            count.to_string(),
            "--timeout".into(),
            secs.to_string(),
        ];
        Receiver::start(self, ns, &args, Duration::from_secs(secs + 10))
    }

    /// Starts a receiver in `ns` that accepts one TCP connection on
    /// `bind:port` and reads it to the end; returns once it listens.
    pub fn tcp_recv(&self, ns: &str, bind: IpAddr, port: u16) -> Result<Receiver> {
        let args = [
            "tcp-recv".to_owned(),
            "--bind".into(),
            bind.to_string(),
            "--port".into(),
            port.to_string(),
        ];
        Receiver::start(self, ns, &args, Duration::from_secs(120))
    }

    /// Sends raw Ethernet `frames` out of interface `dev` in namespace `ns`
    /// (`AF_PACKET`), 1 ms apart, as they are: see [`crate::packet`].
    pub fn raw_send(&self, ns: &str, dev: &str, frames: &[Vec<u8>]) -> Result<()> {
        let hex: Vec<String> = frames
            .iter()
            .map(|f| f.iter().map(|b| format!("{b:02x}")).collect())
            .collect();
        let args = [
            "raw-send".to_owned(),
            "--dev".into(),
            dev.into(),
            "--frames".into(),
            hex.join(","),
        ];
        run(&mut exec_in(ns, &self.bin, args)).map(drop)
    }

    /// Connects from `ns`, sends, closes, and waits until the receiver has
    /// read everything.
    pub fn tcp_send(&self, ns: &str, s: &TcpSend) -> Result<()> {
        let args = [
            "tcp-send".to_owned(),
            "--dst".into(),
            s.dst.to_string(),
            "--port".into(),
            s.port.to_string(),
            "--bytes".into(),
            s.bytes.to_string(),
            "--chunk".into(),
            s.chunk.to_string(),
            "--rate".into(),
            s.rate.to_string(),
        ];
        run(&mut exec_in(ns, &self.bin, args)).map(drop)
    }
}

/// A running `udp-recv` or `tcp-recv`. Dropping it kills it.
#[derive(Debug)]
pub struct Receiver {
    child: Option<Child>,
    command_line: String,
    max_runtime: Duration,
    stderr: Arc<Mutex<String>>,
    stderr_thread: Option<JoinHandle<()>>,
}

impl Receiver {
    fn start(
        traffic: &Traffic,
        ns: &str,
        args: &[String],
        max_runtime: Duration,
    ) -> Result<Receiver> {
        let mut cmd = exec_in(ns, &traffic.bin, args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let command_line = describe(&cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("failed to spawn `{command_line}`"))?;

        // The receiver says `listening ...` on stderr once bound.
        let (tx, rx) = mpsc::channel();
        let stderr = Arc::new(Mutex::new(String::new()));
        let text = stderr.clone();
        let pipe = child.stderr.take().expect("stderr is piped");
        let stderr_thread = std::thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut line = String::new();
            while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
                if line.starts_with("listening") {
                    let _ = tx.send(());
                }
                text.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_str(&line);
                line.clear();
            }
        });
        let mut receiver = Receiver {
            child: Some(child),
            command_line,
            max_runtime,
            stderr,
            stderr_thread: Some(stderr_thread),
        };
        if rx.recv_timeout(LISTEN_TIMEOUT).is_err() {
            receiver.kill();
            bail!(
                "receiver did not start listening within {LISTEN_TIMEOUT:?}: {}\nstderr:\n{}",
                receiver.command_line,
                receiver.stderr_text()
            );
        }
        Ok(receiver)
    }

    /// Waits for the receiver to finish and returns the number it printed
    /// (datagrams for UDP, bytes for TCP).
    pub fn wait(mut self) -> Result<u64> {
        let mut child = self.child.take().expect("receiver is running");
        let Some(status) = wait_timeout(&mut child, self.max_runtime)? else {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "receiver still running after {:?} (killed): {}",
                self.max_runtime,
                self.command_line
            );
        };
        let mut out = String::new();
        if let Some(mut stdout) = child.stdout.take() {
            stdout.read_to_string(&mut out)?;
        }
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
        if !status.success() {
            bail!(
                "`{}` exited with {status}\nstderr:\n{}",
                self.command_line,
                self.stderr_text()
            );
        }
        let last = out
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        last.trim()
            .parse()
            .with_context(|| format!("`{}` printed {out:?}, not a number", self.command_line))
    }

    /// Stops the receiver early (SIGTERM) without reading its result.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, libc::SIGTERM);
            if !matches!(
                wait_timeout(&mut child, Duration::from_secs(2)),
                Ok(Some(_))
            ) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    fn stderr_text(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.kill();
    }
}

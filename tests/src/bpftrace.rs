//! bpftrace as an independent instrument: run a script while a closure makes
//! traffic, and get what it printed.

use crate::agent::{collect_text, signal, wait_timeout};
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long bpftrace may take to compile and attach a script.
pub const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);

const READY: &str = "__vnt_bpftrace_ready__";

/// Runs `script` with bpftrace for the duration of `during` and returns the
/// closure's value and the lines bpftrace printed to stdout (without its
/// "Attaching N probes..." banner).
///
/// The closure starts only once every probe is attached: the helper adds a
/// `BEGIN` probe that announces it, so `script` must not have its own. Maps
/// still holding values at exit are printed by bpftrace; clear them in an
/// `END` probe if they are not wanted.
pub fn trace_during<T>(
    script: &str,
    during: impl FnOnce() -> Result<T>,
) -> Result<(T, Vec<String>)> {
    if script.contains("BEGIN") {
        bail!("the bpftrace script must not have a BEGIN probe (the helper adds one)");
    }
    let full = format!("BEGIN {{ printf(\"{READY}\\n\"); }}\n{script}");
    let mut child = Command::new("bpftrace")
        .args(["-B", "line", "-e", &full])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("failed to start bpftrace (is it installed?)")?;
    let mut guard = KillOnDrop(Some(&mut child));

    let (tx, rx) = mpsc::channel::<String>();
    let stdout = guard.child().stdout.take().expect("stdout is piped");
    let stdout_thread = std::thread::spawn(move || {
        for line in BufReader::new(stdout)
            .lines()
            .map_while(std::io::Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let stderr = Arc::new(Mutex::new(String::new()));
    let stderr_thread = collect_text(
        guard.child().stderr.take().expect("stderr is piped"),
        stderr.clone(),
    );
    let stderr_text = || stderr.lock().unwrap_or_else(|p| p.into_inner()).clone();

    // Wait for the BEGIN probe's line; a closed channel means bpftrace exited.
    let mut lines = Vec::new();
    loop {
        match rx.recv_timeout(ATTACH_TIMEOUT) {
            Ok(line) if line == READY => break,
            Ok(line) => lines.push(line),
            Err(_) => {
                drop(guard);
                let _ = stderr_thread.join();
                bail!(
                    "bpftrace did not attach within {ATTACH_TIMEOUT:?} (or exited)\nscript:\n{full}\nstderr:\n{}",
                    stderr_text()
                );
            }
        }
    }

    let value = during()?;

    signal(guard.child(), libc::SIGINT);
    let status = wait_timeout(guard.child(), Duration::from_secs(20))?;
    drop(guard);
    let _ = stdout_thread.join();
    let _ = stderr_thread.join();
    lines.extend(rx.try_iter());
    match status {
        Some(s) if s.success() => {}
        Some(s) => bail!("bpftrace exited with {s}\nstderr:\n{}", stderr_text()),
        None => bail!("bpftrace did not exit within 20 s of SIGINT (killed)"),
    }
    lines.retain(|l| !(l.starts_with("Attaching ") && l.ends_with(" probes...")));
    Ok((value, lines))
}

/// Kills and reaps the child unless it has already exited.
struct KillOnDrop<'a>(Option<&'a mut Child>);

impl KillOnDrop<'_> {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("child present")
    }
}

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(child) = self.0.take() {
            if !matches!(child.try_wait(), Ok(Some(_))) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A script printing, one per line, the nanoseconds from tracepoint
/// `from_tp` on device `from_dev` to tracepoint `to_tp` on device `to_dev`
/// for the same skb (keyed by `args->skbaddr`). Tracepoints are
/// `category:name` (e.g. `net:net_dev_start_xmit`) and must carry `name` and
/// `skbaddr`, as the `net` device tracepoints do. With `ethertype` (e.g.
/// `0x0800`), timing starts only for such packets, which needs a `from_tp`
/// with a `protocol` field (`net_dev_start_xmit`, `net_dev_queue`); that
/// keeps the containers' own MLD reports out of an IPv4 measurement.
pub fn hop_latency_script(
    from_tp: &str,
    from_dev: &str,
    to_tp: &str,
    to_dev: &str,
    ethertype: Option<u16>,
) -> String {
    let only = ethertype.map_or(String::new(), |t| format!(" && args->protocol == {t:#06x}"));
    format!(
        r#"tracepoint:{from_tp} /str(args->name) == "{from_dev}"{only}/ {{ @vnt_start[args->skbaddr] = nsecs; }}
tracepoint:{to_tp} /str(args->name) == "{to_dev}" && @vnt_start[args->skbaddr]/ {{
  printf("%llu\n", nsecs - @vnt_start[args->skbaddr]);
  delete(@vnt_start[args->skbaddr]);
}}
END {{ clear(@vnt_start); }}
"#
    )
}

/// The lines of bpftrace output that are plain unsigned numbers.
pub fn numbers(lines: &[String]) -> Vec<u64> {
    lines.iter().filter_map(|l| l.trim().parse().ok()).collect()
}

//! A stalled stdout costs counted drops, never a frozen agent (issue 13,
//! acceptance 5): the agent's stdout is a pipe nobody reads while a flood
//! makes far more journeys than the pipe and the writer's queue hold. Every
//! journey is still built; those that stdout did not take are counted in
//! `output_dropped`; SIGTERM during the stall exits 0, and the summary line,
//! which stdout cannot take, is on stderr (docs/output.md, "A slow or
//! stalled stdout").

use std::io::{BufRead, BufReader, Read};
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vnt_tests::journey::Summary;
use vnt_tests::topology::{Family, Side, Topology};
use vnt_tests::traffic::{Traffic, UdpSend};
use vnt_tests::{locate_binary, require_root, serial, unique_port};

/// Datagrams of the flood: about 2 KB of JSON each, 20 MB in all, more than
/// twice the writer's queue (8 MiB) and the pipe (64 KiB).
const DATAGRAMS: u64 = 10_000;

/// Kills the agent if the test fails half-way.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn stalled_stdout_costs_counted_drops_and_sigterm_exits_0_with_the_summary() {
    require_root();
    let _guard = serial();
    let topo = Topology::new().expect("topology");
    let port = unique_port();
    let ready = std::env::temp_dir().join(format!("vnt-stall-{}.ready", std::process::id()));
    let _ = std::fs::remove_file(&ready);
    let mut child = Child(
        Command::new(locate_binary("vnt-agent", "VNT_AGENT_BIN"))
            .args(["--plugins", "veth", "--output", "json", "--sample", "1/1"])
            .args(["--filter", &format!("port {port}")])
            .arg("--ready-file")
            .arg(&ready)
            .env("VNT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start vnt-agent"),
    );
    // stdout is never read while the agent runs: the stall.
    let mut stdout = child.0.stdout.take().expect("piped");
    let stderr = Arc::new(Mutex::new(String::new()));
    let collector = {
        let stderr = stderr.clone();
        let pipe = child.0.stderr.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = stderr.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        })
    };
    let t0 = Instant::now();
    while !ready.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "agent not ready:\n{}",
            stderr.lock().unwrap()
        );
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "agent exited:\n{}",
            stderr.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let traffic = Traffic::new(env!("CARGO_BIN_EXE_vnt-traffic"));
    let dst: IpAddr = topo.addr(Side::C2, Family::V4);
    let rx = traffic
        .udp_recv(
            &topo.c2.netns.name,
            dst,
            port,
            DATAGRAMS,
            Duration::from_secs(60),
        )
        .expect("receiver");
    traffic
        .udp_send(
            &topo.c1.netns.name,
            &UdpSend {
                count: DATAGRAMS,
                rate: 5_000,
                ..UdpSend::to(dst, port)
            },
        )
        .expect("flood");
    assert_eq!(rx.wait().expect("receiver"), DATAGRAMS);
    // The journeys close after the idle timeout (100 ms).
    std::thread::sleep(Duration::from_millis(500));

    let sigterm = Instant::now();
    let pid = libc::pid_t::try_from(child.0.id()).expect("pid");
    // SAFETY: kill has no memory-safety preconditions; the child is not yet
    // reaped, so the pid still names it.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            sigterm.elapsed() < Duration::from_secs(15),
            "agent frozen: no exit 15 s after SIGTERM with a stalled stdout\n{}",
            stderr.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = sigterm.elapsed();
    collector.join().unwrap();
    let stderr = stderr.lock().unwrap().clone();
    assert!(status.success(), "exit {status}\n{stderr}");
    eprintln!("SIGTERM to exit with stdout stalled: {took:?}");

    // What stdout did take: read now that the agent is gone.
    let mut taken = String::new();
    stdout.read_to_string(&mut taken).expect("read stdout");
    let written = taken
        .lines()
        .filter(|l| l.starts_with(r#"{"type":"journey""#) && l.ends_with('}'))
        .count() as u64;
    assert!(
        !taken.contains(r#""type":"summary""#),
        "the summary went to the stalled stdout"
    );

    let line = stderr
        .lines()
        .find(|l| l.starts_with(r#"{"type":"summary""#))
        .unwrap_or_else(|| panic!("no summary line on stderr:\n{stderr}"));
    let s: Summary = serde_json::from_str(line).expect("summary JSON");
    eprintln!(
        "journeys {} output_dropped {} written to the pipe {written} events_lost {}",
        s.journeys, s.output_dropped, s.events_lost
    );
    assert!(
        stderr.contains("the summary line went to stderr"),
        "no warning about where the summary went:\n{stderr}"
    );
    // Every journey was built while stdout was stalled.
    assert!(
        s.journeys >= DATAGRAMS - DATAGRAMS / 1000,
        "only {} journeys of {DATAGRAMS} datagrams were built: the agent stalled",
        s.journeys
    );
    assert!(s.output_dropped > 0, "nothing counted as dropped: {s:?}");
    // Nothing lost unseen: what stdout took plus what was counted covers
    // every journey (a chunk cut off half-written counts as dropped).
    assert!(
        written + s.output_dropped >= s.journeys,
        "{written} written + {} dropped < {} journeys",
        s.output_dropped,
        s.journeys
    );
    assert!(written < s.journeys);
    let _ = std::fs::remove_file(&ready);
}

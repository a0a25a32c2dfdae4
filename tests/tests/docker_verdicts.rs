//! Issue #14: every hop in either container's namespace names that container
//! (id and name, from Docker's API socket), and B's hops the Kubernetes pod
//! and namespace of its labels.
//!
//! Issue #10, "the same between two Docker containers": the verdicts of
//! `verdicts.rs` (answered pings and a TCP close are delivered, a datagram to
//! a closed port and one an nftables rule drops are dropped, with their
//! reasons) between two real containers on Docker's default bridge.
//!
//! Privileged and self-contained: it uses the running Docker engine or starts
//! `dockerd` itself (and stops it after), builds its image locally from the
//! static busybox (no registry), and removes its containers, image and nft
//! table even when it fails. It fails, never skips, when it is not root,
//! `dockerd` is missing (the message says how to install it) or the agent
//! cannot load its eBPF programs.
//!
//! Learnt while writing it:
//! - busybox's `ping` (1.35) opens a raw socket (`SOCK_RAW`, proto 1; Docker
//!   grants `CAP_NET_RAW` by default), not an ICMP datagram socket; its
//!   process is named `ping` (`/proc/PID/comm`, from the applet's symlink).
//!   This is the case the old agent got wrong: the echo reply, after the raw
//!   socket took its clone, was freed as a `NO_SOCKET` "drop".
//! - Debian's busybox has the small `nc`: no `-u`, so no UDP. The datagrams
//!   come from this crate's `vnt-traffic`, copied into the image with the
//!   shared libraries `ldd` lists, and run inside container A.
//! - busybox `nc` shuts its sending side down at the end of its stdin and
//!   exits at the end of the connection's: a listener whose stdin is
//!   /dev/null (as under `docker exec`) sends its FIN at once, the client
//!   exits on it mid-send, and 6 of 20 KiB arrive (the other way round, 1
//!   KiB). So the client sends and the listener's stdin is a FIFO it holds
//!   open itself (`<>`), which never ends.
//! - The agent names a reader by reading /proc/PID/comm when the read's
//!   event reaches user space (every 10 ms tick), and the event carries no
//!   name of its own. busybox's nc reads 20 KB and exits within a
//!   millisecond, before that: every segment it read named its pid with no
//!   name. So A sends in two halves half a second apart; the name read
//!   while nc lives is kept for the later reads of the same pid. A reader
//!   that lives less than a tick stays nameless (a limit of the agent, not
//!   of this test).
//! - dockerd sets the root namespace's iptables FORWARD policy to DROP and
//!   leaves it so when it stops; the harness puts the old policy back when it
//!   started the daemon.

use std::io::Read;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use vnt_tests::docker::{check_container_names, Container, Engine, Image, NetnsNft};
use vnt_tests::verdicts::{check_answered_pings, check_only_real_drops, describe_all, reader};
use vnt_tests::{unique_port, Agent, Journey, JourneyEnd};

/// Time for the last events to reach the agent before it is stopped.
const SETTLE: Duration = Duration::from_millis(500);
/// TCP bytes container A sends to B's listener.
const TCP_BYTES: usize = 20_000;

/// Waits for `child` up to `timeout`; its stdout if it succeeded.
fn finish(mut child: Child, what: &str, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut out, mut err) = (String::new(), String::new());
    if let Some(mut s) = child.stdout.take() {
        s.read_to_string(&mut out)?;
    }
    if let Some(mut s) = child.stderr.take() {
        s.read_to_string(&mut err)?;
    }
    ensure!(status.success(), "{what} failed ({status}): {err}");
    Ok(out)
}

#[test]
fn docker_answered_pings_and_a_tcp_close_are_delivered_real_drops_are_dropped() -> Result<()> {
    let _serial = vnt_tests::serial();
    vnt_tests::require_root();
    let started = Instant::now();
    // Dropped in reverse order: nft table, containers, image, engine.
    let engine = Engine::ensure().context("a Docker engine must run for this test")?;
    let id = std::process::id();
    let traffic_bin = std::path::Path::new(env!("CARGO_BIN_EXE_vnt-traffic"));
    let image = Image::busybox(&format!("vnt-test-busybox:{id}"), &[traffic_bin])?;
    let a = Container::run(&image, &format!("vnt-test-{id}-a"), &["sleep", "300"])?;
    // B carries the labels Kubernetes puts on a pod's containers: its hops
    // must name that pod and namespace too.
    let b = Container::run_labelled(
        &image,
        &format!("vnt-test-{id}-b"),
        &[
            &format!("io.kubernetes.pod.name=vnt-test-pod-{id}"),
            "io.kubernetes.pod.namespace=vnt-test",
        ],
        &["sleep", "300"],
    )?;
    let (ip_a, ip_b) = (a.ip, b.ip);
    let (tcp_port, closed_port, nft_port) = (unique_port(), unique_port(), unique_port());
    let _rule = NetnsNft::drop_udp_input(&b, &format!("vnt_test_{id}"), nft_port)?;
    // B's nc reads until A's nc closes, then exits: the bytes it read. Its
    // stdin is a FIFO it holds open itself, which never ends (see above).
    let listener = b.spawn_sh(&format!(
        "mkfifo /tmp/in && nc -l -p {tcp_port} <>/tmp/in | wc -c"
    ))?;
    b.wait_tcp_listen(tcp_port, Duration::from_secs(10))?;
    let ready = started.elapsed();

    let agent = Agent::builder()
        .default_probes()
        .filter(format!("host {ip_b}"))
        .start()?;
    a.sh(&format!("ping -q -c 3 -i 0.2 -W 2 {ip_b}"))
        .context("ping from A to B")?;
    // Two halves, half a second apart, so B's nc is still alive when the
    // agent looks up its name (see above).
    let half = TCP_BYTES / 2;
    a.sh(&format!(
        "{{ head -c {half} /dev/zero; sleep 0.5; head -c {half} /dev/zero; }} | nc {ip_b} {tcp_port}"
    ))
    .context("TCP from A to B's nc")?;
    let got = finish(listener, "B's nc listener", Duration::from_secs(10))?;
    ensure!(
        got.trim() == TCP_BYTES.to_string(),
        "B's nc read {} bytes, not {TCP_BYTES}",
        got.trim()
    );
    // One datagram per sender: the port unreachable answering the first
    // would fail the next send on the same connected socket.
    for port in [
        closed_port,
        closed_port,
        closed_port,
        nft_port,
        nft_port,
        nft_port,
    ] {
        a.sh(&format!(
            "vnt-traffic udp-send --dst {ip_b} --port {port} --count 1 --rate 50 --size 64"
        ))
        .with_context(|| format!("a datagram from A to {ip_b}:{port}"))?;
    }
    std::thread::sleep(SETTLE);
    let out = agent.stop()?;

    let (icmp, replies) = check_answered_pings(&out, ip_a, ip_b)?;
    // The journeys crossed Docker's bridge: a hop on docker0 or one of the
    // host-side veths Docker plugs into it.
    ensure!(
        replies.iter().all(|j| j
            .hops
            .iter()
            .any(|h| h.interface == "docker0" || h.interface.starts_with("veth"))),
        "the echo replies did not cross docker0:\n{}",
        describe_all(&icmp)
    );

    // Issue #14: every hop in a container's namespace carries that
    // container's id and name, as Docker reports them.
    let named = check_container_names(&icmp, &[&a, &b])?;
    let pod = format!("vnt-test-pod-{id}");
    ensure!(
        icmp.iter()
            .flat_map(|j| &j.hops)
            .any(|h| h
                .container
                .as_ref()
                .is_some_and(|c| c.pod.as_deref() == Some(pod.as_str())
                    && c.pod_namespace.as_deref() == Some("vnt-test"))),
        "no hop names B's pod vnt-test/{pod}:\n{}",
        describe_all(&icmp)
    );

    let tcp: Vec<&Journey> = out
        .journeys
        .iter()
        .filter(|j| j.flow.proto == "tcp" && j.has_port(tcp_port))
        .collect();
    ensure!(tcp.len() >= 10, "only {} TCP journeys", tcp.len());
    ensure!(
        tcp.iter().all(|j| j.end != JourneyEnd::Dropped),
        "a TCP connection's open, data and close are not drops:\n{}",
        describe_all(&tcp)
    );
    let read: Vec<&Journey> = tcp
        .iter()
        .copied()
        .filter(|j| j.delivered_to.as_deref() == Some("socket"))
        .collect();
    ensure!(
        !read.is_empty() && read.iter().all(|j| reader(j) == Some("nc")),
        "the TCP segments delivered to a socket must name B's reading nc:\n{}",
        describe_all(&tcp)
    );

    check_only_real_drops(&out, closed_port, nft_port)?;
    eprintln!(
        "docker verdicts ({} engine, ready in {:.1} s, {:.1} s in all): {} ICMP journeys delivered \
         (3 echo replies to ping's socket), {named} hops named after their container, {} TCP journeys none dropped, 3 NO_SOCKET + 3 \
         NETFILTER_DROP drops; summary: {} journeys, {} delivered, {} forwarded, {} dropped, {} unknown",
        if engine.started_here() { "started dockerd" } else { "running" },
        ready.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        icmp.len(),
        tcp.len(),
        out.summary.journeys,
        out.summary.journeys_delivered,
        out.summary.journeys_forwarded,
        out.summary.journeys_dropped,
        out.summary.journeys_unknown,
    );
    Ok(())
}

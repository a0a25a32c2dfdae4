//! Issue 12, acceptance 4: clocks between hosts. Two agents on the two-host
//! topology (tests/src/two_hosts.rs), agent B with its clock 7.3 ms ahead
//! (the test-only `VNT_TEST_CLOCK_OFFSET_NS`, 7 312 345 ns), both exporting through
//! `vnt-agent align` (A over gRPC, B over HTTP) to one Jaeger (behind a Collector
//! in the first case, which also shows that the agents' metrics pass through).
//!
//! - Datagrams both ways: the aligner's estimate of B's offset is within
//!   100 us of the injected one, and B's spans in Jaeger are moved onto A's
//!   clock (the receiver's first hop after the sender's last, by a small
//!   positive latency) and carry the estimate and its uncertainty.
//! - Datagrams one way only, through a fresh aligner: B's spans say
//!   `vnt.clock.aligned = false` and keep B's clock, so the cross-host step
//!   shows the injected offset (which is also what proves the first case
//!   could fail: the agents' own output has B's times 7.3 ms off).
//!
//! Privileged (real eBPF, namespaces); Jaeger as in otel_jaeger.rs.

use anyhow::{bail, ensure, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vnt_tests::otel::{self, Jaeger, OSpan, OtelCol};
use vnt_tests::two_hosts::{Host, TwoHosts};
use vnt_tests::{unique_port, Agent, AgentOutput, Journey, Traffic, UdpSend};

/// How far B's clock is ahead of A's (7.3 ms, not on a whole microsecond).
const INJECTED_NS: i64 = 7_312_345;
/// How close the estimate must come.
const TOLERANCE_NS: i64 = 100_000;
/// The packet-id key both agents share, as a deployment would set it.
const DEPLOYMENT_KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// `vnt-agent align` as a child process, stopped with SIGTERM.
struct AlignerProcess {
    child: Child,
    port: u16,
    stdout: Option<std::thread::JoinHandle<Vec<String>>>,
    stderr: Option<std::thread::JoinHandle<String>>,
    ready: PathBuf,
}

impl AlignerProcess {
    /// Sends on to `endpoint` (OTLP/gRPC), with its own metrics or not
    /// (Jaeger alone takes none).
    fn start(endpoint: &str, metrics: bool) -> Result<AlignerProcess> {
        let bin = vnt_tests::locate_binary("vnt-agent", "VNT_AGENT_BIN");
        let port = otel::free_port();
        let ready = vnt_tests::temp_path("aligner-ready");
        let mut child = Command::new(bin)
            .args(["align", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--hold-ms", "1500", "--otlp-endpoint", endpoint])
            // Its own metrics every second (with a Collector behind it).
            .env("OTEL_METRIC_EXPORT_INTERVAL", "1000")
            .env(
                "OTEL_METRICS_EXPORTER",
                if metrics { "otlp" } else { "none" },
            )
            .arg("--ready-file")
            .arg(&ready)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("failed to start vnt-agent align")?;
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        let mut p = AlignerProcess {
            child,
            port,
            stdout: Some(std::thread::spawn(move || {
                BufReader::new(out)
                    .lines()
                    .map_while(std::io::Result::ok)
                    .collect()
            })),
            stderr: Some(std::thread::spawn(move || {
                let mut s = String::new();
                let _ = BufReader::new(err).read_to_string(&mut s);
                s
            })),
            ready,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !p.ready.exists() {
            if let Some(status) = p.child.try_wait()? {
                let log = p.stderr.take().map(|h| h.join().unwrap_or_default());
                bail!("the aligner exited ({status}) before listening: {log:?}");
            }
            ensure!(Instant::now() < deadline, "the aligner did not get ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(p)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGTERM, then its JSON summary (`{"aligner": {...}}`).
    fn stop(mut self) -> Result<serde_json::Value> {
        // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child.try_wait()? {
                break s;
            }
            ensure!(Instant::now() < deadline, "the aligner did not stop");
            std::thread::sleep(Duration::from_millis(50));
        };
        let lines = self.stdout.take().expect("once").join().unwrap_or_default();
        let log = self.stderr.take().expect("once").join().unwrap_or_default();
        ensure!(status.success(), "the aligner failed ({status}): {log}");
        let last = lines
            .last()
            .with_context(|| format!("no summary from the aligner; its log: {log}"))?;
        let v: serde_json::Value =
            serde_json::from_str(last).with_context(|| format!("summary is not JSON: {last}"))?;
        eprintln!("aligner log:\n{log}");
        Ok(v["aligner"].clone())
    }
}

impl Drop for AlignerProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.ready);
    }
}

/// How an agent exports to the aligner.
struct Export<'a> {
    endpoint: &'a str,
    /// `grpc` or `http/protobuf`.
    protocol: &'a str,
    /// Metrics too (every second), else traces only.
    metrics: bool,
}

fn agent_for(host: &Host, name: &str, port: u16, export: &Export, offset_ns: i64) -> Result<Agent> {
    let offset = offset_ns.to_string();
    otel::with_env(
        Agent::builder()
            .filter(format!("{} and port {port}", host.netns_filter()))
            .arg("--otlp-endpoint")
            .arg(export.endpoint)
            .arg("--otlp-protocol")
            .arg(export.protocol),
        &[
            ("OTEL_RESOURCE_ATTRIBUTES", &format!("host.name={name}")),
            (
                "OTEL_METRICS_EXPORTER",
                if export.metrics { "otlp" } else { "none" },
            ),
            ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("VNT_PACKET_ID__KEY", DEPLOYMENT_KEY),
            ("VNT_TEST_CLOCK_OFFSET_NS", &offset),
        ],
    )?
    .start()
    .with_context(|| format!("agent for {name} must start"))
}

fn journeys_to(out: &AgentOutput, port: u16, dst: std::net::IpAddr) -> BTreeMap<String, &Journey> {
    out.journeys
        .iter()
        .filter(|j| j.flow.dport == port && j.flow.dst == dst)
        .map(|j| (j.trace_id.clone(), j))
        .collect()
}

/// The raw step from the sender's last hop to the receiver's first, as the
/// agents themselves report it (each on its own clock).
fn raw_steps(
    sender: &BTreeMap<String, &Journey>,
    receiver: &BTreeMap<String, &Journey>,
) -> Vec<i64> {
    sender
        .iter()
        .filter_map(|(id, s)| {
            let r = receiver.get(id)?;
            Some(r.hops.first()?.ts_unix_nano as i64 - s.hops.last()?.ts_unix_nano as i64)
        })
        .collect()
}

fn median(mut v: Vec<i64>) -> i64 {
    v.sort_unstable();
    v[v.len() / 2]
}

struct Hosts {
    hosts: TwoHosts,
    name_a: String,
    name_b: String,
}

impl Hosts {
    fn new() -> Result<Hosts> {
        let hosts = TwoHosts::new()?;
        let (name_a, name_b) = (
            format!("{}-node-a", hosts.prefix),
            format!("{}-node-b", hosts.prefix),
        );
        Ok(Hosts {
            hosts,
            name_a,
            name_b,
        })
    }
}

/// The spans of one trace by host: (the sender's, the receiver's).
fn split<'a>(spans: &'a [OSpan], sender: &str, receiver: &str) -> (Vec<&'a OSpan>, Vec<&'a OSpan>) {
    let of = |name: &str| -> Vec<&OSpan> {
        spans
            .iter()
            .filter(|s| s.resource.get("host.name").map(String::as_str) == Some(name))
            .collect()
    };
    (of(sender), of(receiver))
}

fn hop(spans: &[&OSpan], last: bool) -> Option<(i64, OSpan)> {
    let mut hops: Vec<(i64, &OSpan)> = spans
        .iter()
        .filter_map(|s| Some((s.attr("vnt.hop.index")?.parse().ok()?, *s)))
        .collect();
    hops.sort_by_key(|(i, _)| *i);
    let (i, s) = if last { hops.last()? } else { hops.first()? };
    Some((*i, (*s).clone()))
}

fn wait_traces(jaeger: &Jaeger, want: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = jaeger.search("vnt-agent", 5000)?.len();
        if n >= want {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{n} traces in Jaeger, {want} expected"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn offset_is_estimated_and_cross_host_spans_are_corrected() -> Result<()> {
    let _serial = vnt_tests::serial();
    vnt_tests::require_root();
    let h = Hosts::new()?;
    let (a, b) = (&h.hosts.a, &h.hosts.b);
    let traffic = Traffic::new(env!("CARGO_BIN_EXE_vnt-traffic"));
    let jaeger = Jaeger::start().context("Jaeger must start")?;
    // Aligner -> Collector (traces to Jaeger, metrics to its Prometheus endpoint).
    let collector = OtelCol::start(jaeger.ports.otlp_grpc).context("the Collector must start")?;
    let aligner = AlignerProcess::start(&collector.otlp_grpc_url(), true)?;
    let port = unique_port();
    // Both receivers of the aligner: A over gRPC, B over HTTP; metrics pass through.
    let url = aligner.url();
    let via = |protocol| Export {
        endpoint: &url,
        protocol,
        metrics: true,
    };
    let agent_a = agent_for(a, &h.name_a, port, &via("grpc"), 0)?;
    let agent_b = agent_for(b, &h.name_b, port, &via("http/protobuf"), INJECTED_NS)?;

    // Datagrams both ways at once, to the same port on either side.
    let count = 100;
    let recv_b = traffic.udp_recv(
        &b.container.name,
        b.addr(),
        port,
        count,
        Duration::from_secs(15),
    )?;
    let recv_a = traffic.udp_recv(
        &a.container.name,
        a.addr(),
        port,
        count,
        Duration::from_secs(15),
    )?;
    let send = |to: &Host| UdpSend {
        count,
        rate: 100,
        ..UdpSend::to(to.addr(), port)
    };
    let (from_b, to_a) = (b.container.name.clone(), send(a));
    let bin = traffic.bin().to_path_buf();
    let back = std::thread::spawn(move || Traffic::new(bin).udp_send(&from_b, &to_a));
    traffic.udp_send(&a.container.name, &send(b))?;
    back.join().expect("sender thread")?;
    ensure!(recv_b.wait()? == count, "datagrams lost from A to B");
    ensure!(recv_a.wait()? == count, "datagrams lost from B to A");
    // Both agents' metrics came through the aligner.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let samples = collector.scrape()?;
        let hosts: BTreeSet<&str> = samples
            .iter()
            .filter(|x| x.name.starts_with("vnt_"))
            .filter_map(|x| x.labels.get("host_name").map(String::as_str))
            .collect();
        if hosts.contains(h.name_a.as_str()) && hosts.contains(h.name_b.as_str()) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the agents' metrics did not come through the aligner: hosts seen {hosts:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let (out_a, out_b) = (agent_a.stop()?, agent_b.stop()?);

    // The agents' own times: B's are off by the injected offset.
    let (a_to_b_on_a, a_to_b_on_b) = (
        journeys_to(&out_a, port, b.addr()),
        journeys_to(&out_b, port, b.addr()),
    );
    let (b_to_a_on_b, b_to_a_on_a) = (
        journeys_to(&out_b, port, a.addr()),
        journeys_to(&out_a, port, a.addr()),
    );
    let raw_ab = median(raw_steps(&a_to_b_on_a, &a_to_b_on_b));
    let raw_ba = median(raw_steps(&b_to_a_on_b, &b_to_a_on_a));
    eprintln!("raw steps as the agents report them: A->B {raw_ab} ns, B->A {raw_ba} ns");
    ensure!(
        (raw_ab - INJECTED_NS).abs() < TOLERANCE_NS && (raw_ba + INJECTED_NS).abs() < TOLERANCE_NS,
        "the injected offset does not show in the agents' raw times: A->B {raw_ab}, B->A {raw_ba}"
    );

    let summary = aligner.stop()?;
    eprintln!("aligner summary: {summary}");
    // The estimate, whichever host it took for reference.
    let offsets = summary["offsets"].as_array().context("offsets")?;
    ensure!(!offsets.is_empty(), "no offset estimated: {summary}");
    for o in offsets {
        let est = o["offset_ns"].as_i64().context("offset_ns")?;
        let want = match (o["reference"].as_str(), o["host"].as_str()) {
            (Some(r), Some(x)) if r == h.name_a && x == h.name_b => INJECTED_NS,
            (Some(r), Some(x)) if r == h.name_b && x == h.name_a => -INJECTED_NS,
            _ => bail!("an estimate between unknown hosts: {o}"),
        };
        ensure!(
            (est - want).abs() < TOLERANCE_NS,
            "estimated {est} ns, injected {want} ns: off by more than {TOLERANCE_NS} ns"
        );
        let u = o["uncertainty_ns"].as_u64().context("uncertainty_ns")?;
        ensure!(u < TOLERANCE_NS as u64, "uncertainty {u} ns");
    }
    ensure!(
        summary["spans_dropped"] == 0
            && summary["ambiguous_traces"] == 0
            && summary["requests_rejected"] == 0
            && summary["late_traces"] == 0
            && summary["metrics_requests_dropped"] == 0
            && summary["metrics_requests_forwarded"].as_u64() > Some(0),
        "{summary}"
    );

    // The aligner's own metrics: its estimate, as the summary says (its last
    // export, at exit, goes through the Collector's batching first).
    let deadline = Instant::now() + Duration::from_secs(15);
    let (samples, offset_metric) = loop {
        let samples = collector.scrape()?;
        let found = samples
            .iter()
            .find(|x| {
                x.name.starts_with("vnt_align_clock_offset")
                    && x.labels.get("vnt_clock_reference") == Some(&h.name_a)
                    && x.labels.get("vnt_clock_host") == Some(&h.name_b)
            })
            .cloned();
        if let Some(m) = found {
            break (samples, m);
        }
        if Instant::now() > deadline {
            let names: BTreeSet<&str> = samples.iter().map(|x| x.name.as_str()).collect();
            bail!("no vnt_align_clock_offset for B against A; metrics: {names:?}");
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    ensure!(
        (offset_metric.value as i64 - INJECTED_NS).abs() < TOLERANCE_NS,
        "the aligner's offset metric says {}",
        offset_metric.value
    );
    ensure!(
        samples
            .iter()
            .any(|x| x.name.starts_with("vnt_align_traces")
                && x.labels.get("vnt_clock_result").map(String::as_str) == Some("aligned")
                && x.value >= 1.0),
        "no vnt_align_traces{{vnt_clock_result=aligned}}"
    );

    // In Jaeger: each cross-host trace's receiver is on the sender's clock.
    wait_traces(&jaeger, a_to_b_on_a.len() + b_to_a_on_b.len())?;
    let (mut aligned, mut total, mut latencies) = (0, 0, vec![]);
    for (flows, sender, receiver, want) in [
        (&a_to_b_on_a, &h.name_a, &h.name_b, INJECTED_NS),
        (&b_to_a_on_b, &h.name_b, &h.name_a, -INJECTED_NS),
    ] {
        for id in flows.keys() {
            let spans = jaeger.trace_otlp(id)?;
            let (ss, rs) = split(&spans, sender, receiver);
            ensure!(
                !ss.is_empty() && !rs.is_empty(),
                "trace {id}: spans from one host only"
            );
            total += 1;
            ensure!(
                ss.iter().all(|s| s.attr("vnt.clock.aligned").is_none()),
                "trace {id}: the sender's spans are the reference and stay as they are"
            );
            let flags: Vec<Option<String>> =
                rs.iter().map(|s| s.attr("vnt.clock.aligned")).collect();
            ensure!(
                flags.iter().all(|f| f == &flags[0]) && flags[0].is_some(),
                "trace {id}: {receiver}'s spans disagree on alignment: {flags:?}"
            );
            if flags[0].as_deref() != Some("true") {
                continue;
            }
            aligned += 1;
            for s in &rs {
                let off: i64 = s.attr("vnt.clock.offset_ns").context("offset")?.parse()?;
                ensure!(
                    (off - want).abs() < TOLERANCE_NS,
                    "trace {id}: offset {off}, injected {want}"
                );
                ensure!(
                    s.attr("vnt.clock.uncertainty_ns").is_some(),
                    "trace {id}: no uncertainty"
                );
                ensure!(
                    s.attr("vnt.clock.reference").as_ref() == Some(sender),
                    "trace {id}: reference"
                );
            }
            let (_, last) = hop(&ss, true).context("sender's last hop")?;
            let (_, first) = hop(&rs, false).context("receiver's first hop")?;
            let latency = first.end_ns as i64 - last.end_ns as i64;
            let said: i64 = first
                .attr("vnt.clock.cross_host_latency_ns")
                .context("cross-host latency on the receiver's first hop")?
                .parse()?;
            ensure!(
                said == latency,
                "trace {id}: latency attribute {said}, spans say {latency}"
            );
            // Hop spans end on whole microseconds (docs/otel.md), so on one
            // clock a step shorter than that can round to -1 us at worst; a
            // single packet may wait (a preempted vCPU), but never as long as
            // the offset: 1 ms is far from 7.3 ms either way.
            ensure!(
                (-1_000..1_000_000).contains(&latency),
                "trace {id}: {receiver}'s first hop {latency} ns after {sender}'s last"
            );
            latencies.push(latency);
        }
    }
    eprintln!(
        "{aligned} of {total} cross-host traces aligned; corrected cross-host step: median {} ns, min {} ns, max {} ns",
        median(latencies.clone()),
        latencies.iter().min().copied().unwrap_or_default(),
        latencies.iter().max().copied().unwrap_or_default()
    );
    let typical = median(latencies.clone());
    ensure!(
        (0..TOLERANCE_NS).contains(&typical),
        "the corrected cross-host step is {typical} ns in the median: not small and positive"
    );
    // Only the packets before the first one back can lack an estimate.
    ensure!(
        aligned * 10 >= total * 9,
        "only {aligned} of {total} cross-host traces aligned"
    );
    Ok(())
}

#[test]
fn one_way_traffic_is_marked_unaligned_and_not_shifted() -> Result<()> {
    let _serial = vnt_tests::serial();
    vnt_tests::require_root();
    let h = Hosts::new()?;
    let (a, b) = (&h.hosts.a, &h.hosts.b);
    let traffic = Traffic::new(env!("CARGO_BIN_EXE_vnt-traffic"));
    let jaeger = Jaeger::start().context("Jaeger must start")?;
    let aligner = AlignerProcess::start(&jaeger.otlp_grpc_url(), false)?;
    let port = unique_port();
    let url = aligner.url();
    let export = Export {
        endpoint: &url,
        protocol: "grpc",
        metrics: false,
    };
    let agent_a = agent_for(a, &h.name_a, port, &export, 0)?;
    let agent_b = agent_for(b, &h.name_b, port, &export, INJECTED_NS)?;
    let count = 50;
    let recv = traffic.udp_recv(
        &b.container.name,
        b.addr(),
        port,
        count,
        Duration::from_secs(10),
    )?;
    traffic.udp_send(
        &a.container.name,
        &UdpSend {
            count,
            rate: 200,
            ..UdpSend::to(b.addr(), port)
        },
    )?;
    ensure!(recv.wait()? == count, "datagrams lost from A to B");
    std::thread::sleep(Duration::from_millis(500));
    let (out_a, _out_b) = (agent_a.stop()?, agent_b.stop()?);
    let summary = aligner.stop()?;
    eprintln!("aligner summary: {summary}");
    let sent = journeys_to(&out_a, port, b.addr());
    ensure!(
        sent.len() as u64 >= count * 99 / 100,
        "{} journeys on A",
        sent.len()
    );
    let cross = summary["cross_host_traces"].as_u64().unwrap_or(0);
    ensure!(
        cross >= count * 99 / 100
            && summary["aligned_traces"] == 0
            && summary["unaligned_traces"].as_u64() == Some(cross)
            && summary["offsets"].as_array().is_some_and(Vec::is_empty),
        "one-way traffic must leave every trace unaligned: {summary}"
    );
    wait_traces(&jaeger, sent.len())?;
    let mut steps = vec![];
    for id in sent.keys() {
        let spans = jaeger.trace_otlp(id)?;
        let (sa, sb) = split(&spans, &h.name_a, &h.name_b);
        ensure!(
            sb.iter()
                .all(|s| s.attr("vnt.clock.aligned").as_deref() == Some("false")
                    && s.attr("vnt.clock.offset_ns").is_none()
                    && s.attr("vnt.clock.reference").as_ref() == Some(&h.name_a)),
            "trace {id}: B's spans must say unaligned (and carry no offset)"
        );
        let (_, last) = hop(&sa, true).context("A's last hop")?;
        let (_, first) = hop(&sb, false).context("B's first hop")?;
        steps.push(first.end_ns as i64 - last.end_ns as i64);
    }
    let step = median(steps);
    eprintln!(
        "unaligned cross-host step in Jaeger: median {step} ns (B's clock {INJECTED_NS} ns ahead)"
    );
    ensure!(
        (step - INJECTED_NS).abs() < TOLERANCE_NS,
        "B's spans were shifted: the step is {step} ns, B's clock is {INJECTED_NS} ns ahead"
    );
    Ok(())
}

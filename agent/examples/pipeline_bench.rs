//! User-space pipeline benchmark (BENCHMARKS.md, "User space: decode,
//! journeys, OTLP export"; run it with `scripts/bench-pipeline.sh`, which
//! starts a local Jaeger for it).
//!
//! ```text
//! pipeline_bench [--seconds 20] [--plugin target/release/libvnt_plugin_veth.so] [--rate 1000000]
//!                [--tcp [--tcp-flags] [--seq-joins]]
//!                [--json] [--endpoint http://127.0.0.1:4317 --protocol grpc|http/protobuf [--collector-pid PID]]
//! ```
//!
//! Synthetic ring-buffer records, byte for byte what the veth programs write
//! (`struct vnt_packet_event`, ebpf/include/vnt/event.h), go through the
//! agent's own code as `run.rs` drives it: the veth plugin's decoder, loaded
//! with dlopen through the plugin host and called over the C ABI; the
//! journey builder (`journey::Builder`, idle timeout 100 ms on the real
//! clock, as the agent's default); the journey views (names of hooks,
//! plugins, drop reasons from the kernel's BTF, namespace owners from a fake
//! /proc); with `--json`, the `--output json` writer (into a sink); and with
//! `--endpoint`, `export::otlp::Otlp` (metrics, queue, export thread, the
//! export request, gRPC or HTTP) into a real collector.
//!
//! Each packet crosses the veth/bridge path of the tests: six hops over three
//! namespaces (a container, the host, another container); one packet in 100
//! is then dropped (a seventh, `kfree_skb` record). Records are generated in
//! batches of 4096, the reader's batch size.
//!
//! Every stage is timed with the main thread's CPU clock, so time the thread
//! spends waiting (for the export queue to drain) counts nowhere; the export
//! thread and the whole process are timed from /proc and
//! CLOCK_PROCESS_CPUTIME_ID. After 2 s of warm-up (open journeys reach their
//! steady number), `--seconds` are measured. Output: one Markdown table row.
//! Without `--endpoint`, it measures decode, journeys and views alone, as
//! fast as they go. `--tcp` makes the packets TCP segments; `--tcp-flags`
//! turns on veth's `tcp.flags` field (a plugin field on every hop) and
//! `--seq-joins` the builder's index by TCP sequence number (what a loaded
//! plugin that joins by sequence number turns on).

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{arg, config, cpu_seconds, per_s, process_cpu_ns, thread_cpu_ns, thread_stat};
use vnt_agent::config::OutputFormat;
use vnt_agent::export::otlp::health::Health;
use vnt_agent::export::otlp::Otlp;
use vnt_agent::export::{JourneyView, Names, Output};
use vnt_agent::journey::{Builder, Journey};
use vnt_agent::kernel::btf::KernelBtf;
use vnt_agent::kernel::clock::{monotonic_ns, WallClock};
use vnt_agent::kernel::drop_reason::DropReasons;
use vnt_agent::kernel::netns::NetnsResolver;
use vnt_agent::plugin_host::{self, DecodeOutcome};
use vnt_plugin_api::{wire, Observation};

/// The reader's batch (run.rs `BATCH_MAX`).
const BATCH: usize = 4096;
const RECORD: usize = std::mem::size_of::<wire::PacketEvent>();
/// One packet in this many is dropped after its six hops.
const DROP_EVERY: u64 = 100;

/// veth hook ids (plugins/veth/src/lib.rs).
const XMIT: u16 = 1;
const RX: u16 = 2;
const RECEIVE: u16 = 3;
const DROP: u16 = 4;

/// A fake /proc and /run/netns with three namespaces: two containers (named,
/// owned by nginx in a docker cgroup) and the host's (owned by dockerd).
struct FakeHost {
    _dir: ScratchDir,
    proc_root: PathBuf,
    run_netns: PathBuf,
    /// netns inodes: container 0, host, container 1.
    netns: [u32; 3],
}

/// A directory under the system's temporary directory, removed on drop (the
/// agent has no tempfile dependency: see agent/src/testing.rs for why).
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> std::io::Result<ScratchDir> {
        let path = std::env::temp_dir().join(format!("vnt-pipeline-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)?;
        Ok(ScratchDir(path))
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fake_host() -> std::io::Result<FakeHost> {
    let dir = ScratchDir::new()?;
    let proc_root = dir.path().join("proc");
    let run_netns = dir.path().join("netns");
    std::fs::create_dir_all(&run_netns)?;
    let mut netns = [0u32; 3];
    let owners = [
        (
            "container-0",
            101,
            "nginx",
            format!("/system.slice/docker-{}.scope", "0a1b2c3d".repeat(8)),
        ),
        ("", 1, "dockerd", "/system.slice/docker.service".to_string()),
        (
            "container-1",
            102,
            "nginx",
            format!("/system.slice/docker-{}.scope", "4e5f6a7b".repeat(8)),
        ),
    ];
    for (i, (name, pid, comm, cgroup)) in owners.iter().enumerate() {
        // A named namespace's inode is its file's under /run/netns; the
        // host's is any unused number.
        netns[i] = if name.is_empty() {
            4026531840
        } else {
            let f = run_netns.join(name);
            std::fs::write(&f, b"")?;
            std::fs::metadata(&f)?.ino() as u32
        };
        let p = proc_root.join(pid.to_string());
        std::fs::create_dir_all(p.join("ns"))?;
        std::os::unix::fs::symlink(format!("net:[{}]", netns[i]), p.join("ns/net"))?;
        std::fs::write(p.join("comm"), format!("{comm}\n"))?;
        std::fs::write(p.join("cgroup"), format!("0::{cgroup}\n"))?;
    }
    Ok(FakeHost {
        _dir: dir,
        proc_root,
        run_netns,
        netns,
    })
}

/// Writes packets' records as the veth programs would.
struct Generator {
    packet: u64,
    /// Hop of the current packet.
    hop: usize,
    netns: [u32; 3],
    /// Kernel time of the next record.
    ts: u64,
    /// Kernel time between records (the synthetic arrival rate).
    step_ns: u64,
    /// IP protocol of the packets: 17 (UDP) or, with `--tcp`, 6 (TCP
    /// segments, whose hops carry veth's `tcp.flags` attribute).
    proto: u8,
}

impl Generator {
    /// (hook, interface, ifindex, namespace index, direction)
    const PATH: [(u16, &'static str, u32, usize, u8); 7] = [
        (XMIT, "eth0", 2, 0, 1),
        (RX, "vethh1a2b3c4", 7, 1, 2),
        (RECEIVE, "vethh1a2b3c4", 7, 1, 2),
        (XMIT, "vethh5e6f7a8", 9, 1, 1),
        (RX, "eth0", 2, 2, 2),
        (RECEIVE, "eth0", 2, 2, 2),
        (DROP, "eth0", 2, 2, 0),
    ];

    fn hops(packet: u64) -> usize {
        if packet % DROP_EVERY == DROP_EVERY - 1 {
            7
        } else {
            6
        }
    }

    /// Fill `buf` with records; returns the kernel time of the last one.
    fn fill(&mut self, buf: &mut [u8]) -> u64 {
        for r in buf.chunks_exact_mut(RECORD) {
            let n = self.packet;
            let (hook, ifname, ifindex, ns, dir) = Self::PATH[self.hop];
            let id = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let ts = self.ts;
            self.ts += self.step_ns;
            let drop = hook == DROP;
            r.fill(0);
            r[0..8].copy_from_slice(&ts.to_ne_bytes());
            let kind = if drop {
                wire::kind::DROP
            } else {
                wire::kind::PACKET
            };
            r[8..10].copy_from_slice(&kind.to_ne_bytes());
            r[10..12].copy_from_slice(&hook.to_ne_bytes());
            r[12..16].copy_from_slice(&((n % 2) as u32).to_ne_bytes());
            r[16..20].copy_from_slice(&(RECORD as u32).to_ne_bytes());
            r[20..24].copy_from_slice(&wire::WIRE_VERSION.to_ne_bytes());
            r[24..32].copy_from_slice(&id.to_ne_bytes());
            r[32..40].copy_from_slice(&(0xffff_8880_0000_0000 + (n % 4096) * 256).to_ne_bytes());
            r[40..44].copy_from_slice(&[10, 1, 2, 1]);
            r[56..60].copy_from_slice(&[10, 1, 2, 2]);
            r[72..74].copy_from_slice(&(40000 + (n % 1000) as u16).to_ne_bytes());
            r[74..76].copy_from_slice(&8080u16.to_ne_bytes());
            r[76] = 4;
            r[77] = self.proto;
            r[104] = 0x18; // PSH,ACK (read for TCP only)
            r[80..84].copy_from_slice(&ifindex.to_ne_bytes());
            r[84..88].copy_from_slice(&self.netns[ns].to_ne_bytes());
            r[88..92].copy_from_slice(&128u32.to_ne_bytes());
            if drop {
                r[92..96].copy_from_slice(&2u32.to_ne_bytes()); // NOT_SPECIFIED
            }
            r[105] = dir;
            r[108..112].copy_from_slice(&((n & 0xffff) as u32).to_ne_bytes());
            r[112..112 + ifname.len()].copy_from_slice(ifname.as_bytes());
            self.hop += 1;
            if self.hop == Self::hops(n) {
                self.hop = 0;
                self.packet += 1;
            }
        }
        self.ts - self.step_ns
    }
}

/// CPU nanoseconds of the main thread per stage, and what went through.
#[derive(Default, Clone, Copy)]
struct Stages {
    generate: u64,
    decode: u64,
    build: u64,
    view: u64,
    json: u64,
    otlp: u64,
    records: u64,
    journeys: u64,
}

impl std::ops::Sub for Stages {
    type Output = Stages;
    fn sub(self, o: Stages) -> Stages {
        Stages {
            generate: self.generate - o.generate,
            decode: self.decode - o.decode,
            build: self.build - o.build,
            view: self.view - o.view,
            json: self.json - o.json,
            otlp: self.otlp - o.otlp,
            records: self.records - o.records,
            journeys: self.journeys - o.journeys,
        }
    }
}

/// Everything the agent's main loop holds, driven as `run.rs` drives it.
struct Pipeline {
    gen: Generator,
    buf: Vec<u8>,
    plugin: plugin_host::LoadedPlugin,
    metas: Vec<plugin_host::PluginMeta>,
    drops: DropReasons,
    netns: NetnsResolver,
    containers: vnt_agent::containers::Containers,
    procs: vnt_agent::kernel::process::ProcessNames,
    clock: WallClock,
    builder: Builder,
    obs: Vec<Observation>,
    done: Vec<Journey>,
    views: Vec<JourneyView>,
    json: Option<Output>,
    otlp: Option<Otlp>,
    queue_spans: usize,
    stages: Stages,
    decode_errors: u64,
}

impl Pipeline {
    /// Feed batches until `until`.
    fn feed(&mut self, until: Instant) {
        while Instant::now() < until {
            // Never more than the export queue takes: this measures the
            // pipeline, not refusals (the agent would drop and count them).
            if let Some(o) = &self.otlp {
                if o.queued_spans() + BATCH * 2 > self.queue_spans {
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                }
            }
            let t0 = thread_cpu_ns();
            let now = self.gen.fill(&mut self.buf);
            let t1 = thread_cpu_ns();
            for rec in self.buf.chunks_exact(RECORD) {
                let (outcome, malformed) = self.plugin.decode(rec, &mut self.obs);
                self.decode_errors += malformed;
                if !matches!(outcome, DecodeOutcome::Ok) {
                    self.decode_errors += 1;
                }
            }
            let t2 = thread_cpu_ns();
            // As run.rs: the batch, then the expiry of its tick; the clock
            // is the records' (see `--rate`).
            for o in self.obs.drain(..) {
                if let Observation::Packet(p) = o {
                    self.procs.note(p.pid);
                    self.builder.packet(0, p, &mut self.done);
                }
            }
            self.builder.expire(now, &mut self.done);
            let t3 = thread_cpu_ns();
            let mut names = Names {
                plugins: &self.metas,
                drops: &self.drops,
                netns: &mut self.netns,
                procs: &self.procs,
                containers: &mut self.containers,
                clock: self.clock,
            };
            self.views
                .extend(self.done.iter().map(|j| JourneyView::new(j, &mut names)));
            self.stages.journeys += self.done.len() as u64;
            self.done.clear();
            let t4 = thread_cpu_ns();
            if let Some(out) = self.json.as_mut() {
                for v in &self.views {
                    out.journey(v);
                }
                out.flush();
            }
            let t4b = thread_cpu_ns();
            match self.otlp.as_mut() {
                Some(o) => self.views.drain(..).for_each(|v| o.journey(v)),
                None => self.views.clear(),
            }
            let t5 = thread_cpu_ns();
            let s = &mut self.stages;
            s.generate += t1 - t0;
            s.decode += t2 - t1;
            s.build += t3 - t2;
            s.view += t4 - t3;
            s.json += t4b - t4;
            s.otlp += t5 - t4b;
            s.records += BATCH as u64;
        }
    }

    fn spans_exported(&self) -> u64 {
        self.otlp
            .as_ref()
            .map_or(0, |o| Health::get(&o.health().spans_exported))
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let seconds: u64 = arg(args, "--seconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let plugin_path = PathBuf::from(
        arg(args, "--plugin").unwrap_or_else(|| "target/release/libvnt_plugin_veth.so".into()),
    );
    let endpoint = arg(args, "--endpoint");
    let protocol = common::protocol(args)?;
    let collector = arg(args, "--collector-pid");
    let rate: u64 = arg(args, "--rate")
        .and_then(|s| s.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(1_000_000);

    let flag = |name: &str| args.iter().any(|a| a == name);
    let plugin = plugin_host::load(
        &plugin_path,
        &if flag("--tcp-flags") {
            serde_json::json!({"tcp_flags": true})
        } else {
            serde_json::Value::Null
        },
        plugin_host::Trust::default(),
    )
    .map_err(|e| format!("{}: {e}", plugin_path.display()))?;
    let drops = KernelBtf::read(None)
        .and_then(|b| DropReasons::from_btf(&b))
        .unwrap_or_else(|e| {
            eprintln!("pipeline_bench: drop reasons as numbers: {e}");
            DropReasons::default()
        });
    let host = fake_host().map_err(|e| format!("fake /proc: {e}"))?;
    let cfg = endpoint
        .as_deref()
        .map(|e| config(e, protocol, 32_768, 512, Duration::from_millis(200)));
    let otlp = cfg
        .as_ref()
        .map(Otlp::start)
        .transpose()
        .map_err(|e| e.to_string())?;
    let export_stat = match &otlp {
        Some(_) => Some(thread_stat("vnt-otlp").ok_or("no vnt-otlp thread")?),
        None => None,
    };
    let mut p = Pipeline {
        gen: Generator {
            packet: 0,
            hop: 0,
            netns: host.netns,
            ts: monotonic_ns(),
            step_ns: (1_000_000_000 / rate).max(1),
            proto: if args.iter().any(|a| a == "--tcp") {
                6
            } else {
                17
            },
        },
        buf: vec![0u8; BATCH * RECORD],
        metas: vec![plugin.meta.clone()],
        plugin,
        drops,
        netns: NetnsResolver::new(&host.proc_root, &host.run_netns),
        containers: vnt_agent::containers::Containers::none(),
        procs: vnt_agent::kernel::process::ProcessNames::new(&host.proc_root),
        clock: WallClock::measure(),
        // The agent's defaults: journey.idle_timeout_ms 100, max_in_flight 65536.
        builder: if flag("--seq-joins") {
            Builder::new(100_000_000, 65_536).with_seq_joins(50_000_000)
        } else {
            Builder::new(100_000_000, 65_536)
        },
        obs: Vec::with_capacity(BATCH),
        done: Vec::new(),
        views: Vec::new(),
        json: args.iter().any(|a| a == "--json").then(|| {
            Output::new(
                OutputFormat::Json,
                Box::new(std::io::BufWriter::new(std::io::sink())),
            )
            .expect("output thread")
        }),
        otlp,
        queue_spans: cfg.as_ref().map_or(0, |c| c.queue_spans),
        stages: Stages::default(),
        decode_errors: 0,
    };

    p.feed(Instant::now() + Duration::from_secs(2));
    let s0 = p.stages;
    let exported0 = p.spans_exported();
    let cpu0 = process_cpu_ns();
    let exp0 = export_stat.as_deref().and_then(cpu_seconds).unwrap_or(0.0);
    let col0 = collector
        .as_ref()
        .and_then(|c| cpu_seconds(&format!("/proc/{c}/stat")));
    let t0 = Instant::now();
    p.feed(t0 + Duration::from_secs(seconds));
    let wall = t0.elapsed().as_secs_f64();
    let s = p.stages - s0;
    let cpu = process_cpu_ns() - cpu0;
    let exp_cpu = export_stat.as_deref().and_then(cpu_seconds).unwrap_or(0.0) - exp0;
    let col_cpu = collector
        .as_ref()
        .and_then(|c| cpu_seconds(&format!("/proc/{c}/stat")))
        .zip(col0)
        .map(|(b, a)| b - a);
    let exported = (p.spans_exported() - exported0) as f64;
    let in_flight = p.builder.in_flight();
    let (proto, dropped) = match p.otlp.take() {
        Some(o) => {
            let d = o.health().spans_dropped();
            let (summary, _) = o.shutdown();
            (
                summary.protocol,
                (d + summary.spans_dropped_shutdown).to_string(),
            )
        }
        None if p.json.is_some() => ("json", "-".into()),
        None => ("none", "-".into()),
    };
    let otlp = cfg.is_some();
    let or_dash = |on: bool, v: String| if on { v } else { "-".into() };
    let rec = s.records as f64;
    println!(
        "| {proto} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {} | {in_flight} | {dropped} | {} |",
        rec / wall,
        per_s(rec, s.decode),
        per_s(rec, s.build),
        per_s(rec, s.decode + s.build),
        per_s(s.journeys as f64, s.view),
        or_dash(p.json.is_some(), per_s(s.journeys as f64, s.json)),
        or_dash(otlp, per_s(s.journeys as f64, s.otlp)),
        or_dash(otlp, format!("{:.0}", exported / exp_cpu.max(1e-9))),
        or_dash(otlp, per_s(exported, cpu)),
        or_dash(otlp, format!("{:.0}", exported / wall)),
        cpu as f64 * 1e-9 / wall,
        col_cpu.map_or("-".into(), |c| format!("{:.2}", c / wall)),
        p.decode_errors,
    );
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        eprintln!("usage: pipeline_bench [--seconds N] [--plugin PATH] [--endpoint URL [--protocol grpc|http/protobuf] [--collector-pid PID]]");
        return;
    }
    if !Path::new("/proc/self/task").exists() {
        eprintln!("pipeline_bench: needs Linux /proc");
        std::process::exit(1);
    }
    if let Err(e) = run(&args) {
        eprintln!("pipeline_bench: {e}");
        std::process::exit(1);
    }
}

//! Issue #14, the compose stack for real: `docker compose up` of the shipped
//! otel-collector/docker-compose.yml, unchanged, on a Docker engine of
//! Debian 12 (20.10), with two traced containers on Docker's own bridge.
//! Traces reach Jaeger through the Collector (Jaeger's query API, each hop
//! named after its container), per-hop latency and drop metrics reach
//! Prometheus (its HTTP API), and `docker compose down` leaves nothing running
//! or attached: no container or network of the project, no eBPF program the
//! agent loaded, nothing of it on any interface.
//!
//! No registry is reachable here, so the images the file names are local
//! stand-ins, tagged with exactly those names (and only when the engine does
//! not have them already; ours are removed after):
//! - the agent, `vnt-agent:0.1.0`: built by deploy/Dockerfile, as users do,
//!   from target/release; its base `debian:bookworm-slim` is a root file
//!   system of the agent's own shared libraries (`docker import`);
//! - the Collector: the Jaeger v2 binary built from its Go module (a
//!   Collector distribution with every component otelcol.yaml uses);
//! - Jaeger: the same binary, as upstream's image runs it;
//! - Prometheus: the server built from its Go module (no web UI; the API);
//! - Tempo cannot be built from its module (see docs/otel.md): its stand-in
//!   accepts OTLP and discards it (the Jaeger binary with a sink config), so
//!   the Collector's Tempo exporter has a peer; Grafana is not started.
//!
//! Privileged (root, dockerd, eBPF), fails, never skips; it needs the stack's
//! published ports (4317, 4318, 16686, 3200, 9090) free.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use vnt_tests::docker::{docker, Container, Engine, Image, ImageFile, NetnsNft};
use vnt_tests::otel::{self, http_get};
use vnt_tests::unique_port;

const PORTS: &[u16] = &[4317, 4318, 16686, 3200, 9090];
const AGENT_IMAGE: &str = "vnt-agent:0.1.0";
/// Time for the stack to start, the agent to attach, and a trace or metric
/// to travel (metrics: 10 s export, 1 s batch, 10 s scrape).
const STACK_TIMEOUT: Duration = Duration::from_secs(120);

/// The tempo stand-in's config: OTLP in, nothing out.
const SINK_CONFIG: &str = "\
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 0.0.0.0:4317
      http:
        endpoint: 0.0.0.0:4318
exporters:
  nop:
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [nop]
  telemetry:
    metrics:
      level: none
";

fn ensure_tool(script: &str) -> Result<PathBuf> {
    let path = vnt_tests::workspace_root().join("scripts").join(script);
    let out = Command::new(&path)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", path.display()))?;
    ensure!(
        out.status.success(),
        "{} failed ({}); this test needs it (it never skips)",
        path.display(),
        out.status
    );
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// The compose file's image names, by service.
fn compose_images(file: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(file)?;
    let docs = yaml_rust2::YamlLoader::load_from_str(&text)?;
    let services = docs[0]["services"]
        .as_hash()
        .context("the compose file has no services")?;
    Ok(services
        .iter()
        .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v["image"].as_str()?.to_owned())))
        .collect())
}

/// A stand-in for `tag` unless the engine has that image; `None` if it has.
fn stand_in(tag: &str, build: impl FnOnce(&str) -> Result<Image>) -> Result<Option<Image>> {
    if Image::exists(tag) {
        eprintln!("using the engine's own {tag}");
        return Ok(None);
    }
    build(tag).map(Some)
}

/// A compose project of this test: `down -v` on drop.
struct Project {
    name: String,
    file: PathBuf,
    docker_config: PathBuf,
    env: Vec<(&'static str, String)>,
}

impl Project {
    fn compose(&self) -> Command {
        let mut cmd = Command::new("docker");
        cmd.env("DOCKER_CONFIG", &self.docker_config)
            .envs(self.env.iter().map(|(k, v)| (*k, v)))
            .args(["compose", "-p", &self.name, "-f"])
            .arg(&self.file);
        cmd
    }

    fn run(&self, args: &[&str]) -> Result<String> {
        let mut cmd = self.compose();
        cmd.args(args);
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run docker compose {args:?}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(
            out.status.success(),
            "docker compose {args:?} failed ({}):\n{text}",
            out.status
        );
        Ok(text)
    }

    fn logs(&self, service: &str) -> String {
        self.run(&["logs", "--no-color", service])
            .unwrap_or_else(|e| format!("{e:#}"))
    }

    /// Containers of the project, running or not.
    fn containers(&self) -> Result<Vec<String>> {
        let out = docker([
            "ps",
            "-a",
            "-q",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.name),
        ])?;
        Ok(out.split_whitespace().map(str::to_owned).collect())
    }

    fn networks(&self) -> Result<Vec<String>> {
        let out = docker([
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.name),
        ])?;
        Ok(out.split_whitespace().map(str::to_owned).collect())
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if let Err(e) = self.run(&["down", "-v", "--remove-orphans", "--timeout", "20"]) {
            eprintln!(
                "failed to take the compose project {} down: {e:#}",
                self.name
            );
        }
    }
}

/// Polls `f` until it gives `Some`, up to `timeout`.
fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        match f() {
            Ok(Some(t)) => return Ok(t),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() >= deadline {
            bail!("{what}: not within {timeout:?} (last error: {last})");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn get_json(port: u16, path: &str) -> Result<Value> {
    let r = http_get(port, path)?;
    ensure!(
        r.status == 200,
        "GET :{port}{path}: {} {}",
        r.status,
        r.body
    );
    Ok(serde_json::from_str(&r.body)?)
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// eBPF programs a process holds, by id: the `prog_id` of each of its
/// `bpf-prog` and `bpf_link` file descriptors (/proc/PID/fdinfo).
fn programs_of(pid: u32) -> Result<Vec<u64>> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("cannot list the fds of pid {pid}"))?;
    let mut ids = Vec::new();
    for fd in fds.flatten() {
        let Ok(target) = std::fs::read_link(fd.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        if target != "anon_inode:bpf-prog" && target != "anon_inode:bpf_link" {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        ids.extend(
            info.lines()
                .filter_map(|l| l.strip_prefix("prog_id:"))
                .filter_map(|v| v.trim().parse::<u64>().ok()),
        );
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

fn program_ids() -> Result<Vec<u64>> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()?;
    let progs: Value = serde_json::from_slice(&out.stdout)?;
    Ok(progs
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["id"].as_u64())
        .collect())
}

/// Program ids attached to any interface (XDP, TC, tcx), from `bpftool net`.
fn attached_to_interfaces() -> Result<Vec<u64>> {
    let out = Command::new("bpftool")
        .args(["-j", "net", "show"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut ids = Vec::new();
    // Every attachment kind lists its program as "id": N.
    for part in text.split("\"id\":").skip(1) {
        if let Ok(n) = part
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap_or_default()
            .parse()
        {
            ids.push(n);
        }
    }
    Ok(ids)
}

#[test]
fn compose_up_traces_reach_jaeger_metrics_reach_prometheus_and_down_leaves_nothing() -> Result<()> {
    let _serial = vnt_tests::serial();
    vnt_tests::require_root();
    let started = Instant::now();
    for port in PORTS {
        ensure!(
            std::net::TcpListener::bind(("0.0.0.0", *port)).is_ok(),
            "port {port} is in use: the compose stack publishes it"
        );
    }
    let root = vnt_tests::workspace_root().canonicalize()?;
    let file = root.join("otel-collector/docker-compose.yml");
    let docker_config = ensure_tool("ensure-compose.sh")?;
    let prometheus = ensure_tool("ensure-prometheus.sh")?;
    let jaeger = otel::jaeger_bin();
    let agent_bin = vnt_tests::locate_binary("vnt-agent", "VNT_AGENT_BIN");
    let veth_so = agent_bin.with_file_name("libvnt_plugin_veth.so");
    let packed = ["veth", "ovs", "flannel"]
        .map(|p| agent_bin.with_file_name(format!("libvnt_plugin_{p}.so")));
    ensure!(
        agent_bin.starts_with(root.join("target/release")) && packed.iter().all(|so| so.is_file()),
        "deploy/Dockerfile packs target/release/vnt-agent and the veth, ovs and flannel plugins: \
         build them with `cargo build --release` ({} given)",
        agent_bin.display()
    );

    // Dropped last: the engine, then the images, after the project is down.
    let engine = Engine::ensure().context("a Docker engine must run for this test")?;
    let images = compose_images(&file)?;
    let image_of = |service: &str| {
        images
            .iter()
            .find(|(s, _)| s == service)
            .map(|(_, i)| i.clone())
            .with_context(|| format!("no image for service {service}"))
    };
    let sink = vnt_tests::temp_path("tempo-stand-in.yaml");
    std::fs::write(&sink, SINK_CONFIG)?;
    let mut stand_ins: Vec<Image> = Vec::new();
    let base = stand_in("debian:bookworm-slim", |tag| {
        Image::from_files(
            tag,
            &[
                ImageFile {
                    from: &agent_bin,
                    to: "/usr/local/bin/vnt-agent",
                },
                ImageFile {
                    from: &veth_so,
                    to: "/usr/local/lib/vnt/plugins/libvnt_plugin_veth.so",
                },
            ],
            &[],
            &[],
        )
    })?;
    for (service, build) in [
        ("otel-collector", "collector"),
        ("jaeger", "jaeger"),
        ("tempo", "tempo"),
        ("prometheus", "prometheus"),
    ] {
        let tag = image_of(service)?;
        let image = stand_in(&tag, |tag| match build {
            "collector" => Image::from_files(
                tag,
                &[ImageFile {
                    from: &jaeger,
                    to: "/otelcol-contrib",
                }],
                &[],
                &[r#"ENTRYPOINT ["/otelcol-contrib"]"#],
            ),
            "jaeger" => Image::from_files(
                tag,
                &[ImageFile {
                    from: &jaeger,
                    to: "/cmd/jaeger/jaeger-linux",
                }],
                &[],
                &[r#"ENTRYPOINT ["/cmd/jaeger/jaeger-linux"]"#],
            ),
            "tempo" => Image::from_files(
                tag,
                &[
                    ImageFile {
                        from: &jaeger,
                        to: "/jaeger",
                    },
                    ImageFile {
                        from: &sink,
                        to: "/etc/tempo-stand-in.yaml",
                    },
                ],
                &[],
                // Tempo's flags (compose's `command`) land in $0.. and are ignored.
                &[
                    r#"ENTRYPOINT ["/bin/sh", "-c", "exec /jaeger --config /etc/tempo-stand-in.yaml", "tempo-stand-in"]"#,
                ],
            ),
            _ => Image::from_files(
                tag,
                &[ImageFile {
                    from: &prometheus,
                    to: "/bin/prometheus",
                }],
                &["/prometheus"],
                &["WORKDIR /prometheus", r#"ENTRYPOINT ["/bin/prometheus"]"#],
            ),
        })?;
        stand_ins.extend(image);
    }
    let _ = std::fs::remove_file(&sink);
    // The agent's image, built as a user builds it (the legacy builder: no
    // BuildKit on Debian's 20.10 without the buildx plugin).
    ensure!(
        image_of("vnt-agent")? == AGENT_IMAGE,
        "the compose file's agent image"
    );
    let agent_image_existed = Image::exists(AGENT_IMAGE);
    let build = Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args([
            "build",
            "-q",
            "-f",
            "deploy/Dockerfile",
            "-t",
            AGENT_IMAGE,
            ".",
        ])
        .current_dir(&root)
        .stdin(Stdio::null())
        .output()?;
    let _agent_image = (!agent_image_existed).then(|| Image {
        tag: AGENT_IMAGE.to_owned(),
    });
    ensure!(
        build.status.success(),
        "docker build -f deploy/Dockerfile failed:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    // The image ships every plugin of the workspace, not veth alone.
    let ls = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--entrypoint",
            "/bin/ls",
            AGENT_IMAGE,
            "/usr/local/lib/vnt/plugins",
        ])
        .stdin(Stdio::null())
        .output()?;
    let listed = String::from_utf8_lossy(&ls.stdout);
    for so in [
        "libvnt_plugin_veth.so",
        "libvnt_plugin_ovs.so",
        "libvnt_plugin_flannel.so",
    ] {
        ensure!(
            listed.lines().any(|l| l == so),
            "the agent image has no {so} in /usr/local/lib/vnt/plugins: {listed:?} {}",
            String::from_utf8_lossy(&ls.stderr)
        );
    }
    drop(base);

    // Two traced containers on Docker's bridge; B drops one UDP port.
    let id = std::process::id();
    let traffic_bin = Path::new(env!("CARGO_BIN_EXE_vnt-traffic"));
    let busybox = Image::busybox(&format!("vnt-test-busybox-compose:{id}"), &[traffic_bin])?;
    let a = Container::run(
        &busybox,
        &format!("vnt-test-{id}-compose-a"),
        &["sleep", "600"],
    )?;
    let b = Container::run(
        &busybox,
        &format!("vnt-test-{id}-compose-b"),
        &["sleep", "600"],
    )?;
    let drop_port = unique_port();
    let _rule = NetnsNft::drop_udp_input(&b, &format!("vnt_test_compose_{id}"), drop_port)?;
    let ready = started.elapsed();

    let project = Project {
        name: format!("vnt-test-{id}"),
        file: file.clone(),
        docker_config,
        env: vec![
            ("VNT_FILTER", format!("host {}", b.ip)),
            ("VNT_SAMPLE", "1/1".to_owned()),
            ("VNT_HOST_NAME", format!("vnt-test-{id}")),
        ],
    };
    // Everything but Grafana, which cannot be built here.
    project.run(&[
        "up",
        "-d",
        "--no-build",
        "vnt-agent",
        "otel-collector",
        "jaeger",
        "tempo",
        "prometheus",
    ])?;
    let agent_pid: u32 = wait_for("the agent attaching its probes", STACK_TIMEOUT, || {
        let logs = project.logs("vnt-agent");
        if logs.contains("vnt-agent: ") && !logs.contains("INFO tracing ") {
            bail!("the agent failed:\n{logs}");
        }
        if !logs.contains("INFO tracing ") {
            return Ok(None);
        }
        let cid = project.run(&["ps", "-q", "vnt-agent"])?;
        let pid = docker(["inspect", "-f", "{{.State.Pid}}", cid.trim()])?;
        Ok(Some(pid.trim().parse()?))
    })
    .with_context(|| project.logs("vnt-agent"))?;
    let programs = programs_of(agent_pid)?;
    ensure!(
        !programs.is_empty(),
        "the agent (pid {agent_pid}, {:?}) holds no eBPF program; fds {:?}; its log:\n{}",
        std::fs::read_to_string(format!("/proc/{agent_pid}/cmdline")).unwrap_or_default(),
        std::fs::read_dir(format!("/proc/{agent_pid}/fd"))
            .map(|d| d
                .flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .collect::<Vec<_>>())
            .unwrap_or_default(),
        project.logs("vnt-agent")
    );
    let caps = vnt_tests::privileges::effective_of(agent_pid)?;
    ensure!(
        caps == vnt_tests::privileges::mask_of(vnt_tests::privileges::LEGACY)?,
        "the compose agent must hold exactly {:?}: CapEff {caps:016x}",
        vnt_tests::privileges::LEGACY
    );
    wait_for("Jaeger's query API", STACK_TIMEOUT, || {
        Ok(http_get(16686, "/api/services")
            .ok()
            .filter(|r| r.status == 200))
    })?;

    a.sh(&format!("ping -q -c 3 -i 0.2 -W 2 {}", b.ip))
        .context("ping from A to B")?;
    for _ in 0..3 {
        a.sh(&format!(
            "vnt-traffic udp-send --dst {} --port {drop_port} --count 1 --rate 50 --size 64",
            b.ip
        ))?;
    }

    // Traces in Jaeger, through the Collector: a journey whose hops name
    // both containers, and the nftables drop with its reason.
    let traces = wait_for("journeys in Jaeger", STACK_TIMEOUT, || {
        let v = get_json(16686, "/api/traces?service=vnt-agent&limit=200&lookback=1h")?;
        let traces = v["data"].as_array().cloned().unwrap_or_default();
        let has = |key: &str, value: &str| {
            traces.iter().any(|t| {
                t["spans"].as_array().into_iter().flatten().any(|s| {
                    s["tags"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|tag| tag["key"] == key && tag["value"] == value)
                })
            })
        };
        let named = has("container.name", &a.name) && has("container.name", &b.name);
        let dropped = has("error.type", "NETFILTER_DROP");
        Ok((named && dropped).then_some(traces.len()))
    })
    .with_context(|| project.logs("otel-collector"))?;

    // Metrics in Prometheus, scraped from the Collector.
    let query = |q: &str| -> Result<f64> {
        let v = get_json(9090, &format!("/api/v1/query?query={}", enc(q)))?;
        Ok(v["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["value"][1].as_str()?.parse::<f64>().ok())
            .sum())
    };
    let (hops, drops) = wait_for(
        "per-hop latency and drops in Prometheus",
        STACK_TIMEOUT,
        || {
            let hops = query("sum(vnt_hop_latency_seconds_count)")?;
            let drops = query(r#"sum(vnt_drops_total{vnt_drop_reason="NETFILTER_DROP"})"#)?;
            Ok((hops > 0.0 && drops >= 3.0).then_some((hops, drops)))
        },
    )
    .with_context(|| project.logs("prometheus"))?;

    // Down: nothing of the project left, nothing of the agent in the kernel.
    project.run(&["down", "-v", "--timeout", "20"])?;
    ensure!(
        project.containers()?.is_empty(),
        "containers left: {:?}",
        project.containers()?
    );
    ensure!(
        project.networks()?.is_empty(),
        "networks left: {:?}",
        project.networks()?
    );
    let left: Vec<u64> = program_ids()?
        .into_iter()
        .filter(|p| programs.contains(p))
        .collect();
    ensure!(
        left.is_empty(),
        "eBPF programs of the agent still loaded: {left:?}"
    );
    let attached: Vec<u64> = attached_to_interfaces()?
        .into_iter()
        .filter(|p| programs.contains(p))
        .collect();
    ensure!(
        attached.is_empty(),
        "programs of the agent still on interfaces: {attached:?}"
    );
    eprintln!(
        "compose stack ({} engine, {} stand-in images, ready in {:.0} s, {:.0} s in all): \
         {traces} traces in Jaeger naming {} and {}, {hops} hop latencies and {drops} \
         NETFILTER_DROP drops in Prometheus; down left no container, network, program or filter",
        if engine.started_here() {
            "started dockerd"
        } else {
            "running"
        },
        stand_ins.len(),
        ready.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        a.name,
        b.name,
    );
    Ok(())
}

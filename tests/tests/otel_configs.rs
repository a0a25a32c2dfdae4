//! Acceptance 5 of issue #3: every config file in `otel-collector/` is
//! checked by the real program that reads it, where that program can run
//! here, and the README's "See journeys in Jaeger" section works as written.
//!
//! - `jaeger.yaml`, `otelcol.yaml`, `otelcol-tls-auth.yaml`: `jaeger validate
//!   --config` (the Jaeger v2 binary is an OpenTelemetry Collector
//!   distribution with every component they use; each also runs for real in
//!   otel_jaeger.rs, otel_metrics.rs and otel_auth.rs).
//! - `docker-compose.yml`: `docker compose config` (Compose v2 built from its
//!   Go module by `scripts/ensure-compose.sh`; it needs no Docker engine).
//! - `prometheus.yml`: `promtool check config` (built by
//!   `scripts/ensure-promtool.sh`).
//! - Grafana and Tempo cannot run here (no binaries from a registry; Tempo's
//!   Go module cannot be fetched by version): their files are parsed and
//!   cross-checked against the compose file and each other (otel_metrics.rs
//!   checks the dashboard's queries against real metric names).
//!
//! Each validator is also shown a broken file, which it must reject, so a
//! validator that accepts anything cannot pass this test.

use anyhow::{bail, ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use vnt_tests::otel::{self, config_file};
use yaml_rust2::{Yaml, YamlLoader};

fn run(cmd: &mut Command) -> Result<(bool, String)> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

/// Runs one of the scripts/ensure-*.sh builders and returns what it prints.
fn ensure_tool(script: &str) -> PathBuf {
    let path = vnt_tests::workspace_root().join("scripts").join(script);
    let out = Command::new(&path)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    assert!(
        out.status.success(),
        "{} failed ({}); the config checks need it (they never skip)",
        path.display(),
        out.status
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A copy of `file` with `from` replaced by `to`, beside it (same relative paths).
fn broken_copy(file: &Path, from: &str, to: &str) -> Result<PathBuf> {
    let text = std::fs::read_to_string(file)?;
    ensure!(
        text.contains(from),
        "{} has no `{from}` to break",
        file.display()
    );
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("f");
    let copy = file.with_file_name(format!(".broken-{}-{name}", std::process::id()));
    std::fs::write(&copy, text.replacen(from, to, 1))?;
    Ok(copy)
}

fn yaml(path: &Path) -> Result<Yaml> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let mut docs = YamlLoader::load_from_str(&text)
        .with_context(|| format!("{} is not YAML", path.display()))?;
    ensure!(
        docs.len() == 1,
        "{}: {} YAML documents",
        path.display(),
        docs.len()
    );
    Ok(docs.remove(0))
}

#[test]
fn collector_and_jaeger_configs_pass_jaeger_validate() -> Result<()> {
    let jaeger = otel::jaeger_bin();
    // otelcol-tls-auth.yaml takes its certificate, key and password from the
    // environment (it has no sensible defaults for them).
    let env = [
        ("OTELCOL_TLS_CERT", "/etc/otelcol/server.pem"),
        ("OTELCOL_TLS_KEY", "/etc/otelcol/server.key"),
        ("OTELCOL_BASIC_AUTH", "user:password"),
    ];
    let validate = |file: &Path| {
        let mut cmd = Command::new(&jaeger);
        cmd.arg("validate").arg("--config").arg(file).envs(env);
        run(&mut cmd)
    };
    for name in ["jaeger.yaml", "otelcol.yaml", "otelcol-tls-auth.yaml"] {
        let file = config_file(name);
        let (ok, text) = validate(&file)?;
        ensure!(ok, "jaeger validate rejects {name}:\n{text}");
        // The validator must not accept anything: an unknown component fails.
        let bad = broken_copy(&file, "batch:", "batchx:")?;
        let (ok, text) = validate(&bad)?;
        let _ = std::fs::remove_file(&bad);
        ensure!(!ok, "jaeger validate accepts a broken {name}:\n{text}");
    }
    Ok(())
}

#[test]
fn compose_file_passes_docker_compose_config() -> Result<()> {
    let docker_config = ensure_tool("ensure-compose.sh");
    let compose = |file: &Path, extra: &[&str]| {
        run(Command::new("docker")
            .env("DOCKER_CONFIG", &docker_config)
            .args(["compose", "-f"])
            .arg(file)
            .arg("config")
            .args(extra))
    };
    let file = config_file("docker-compose.yml");
    let (ok, text) = compose(&file, &["-q"])?;
    ensure!(
        ok,
        "docker compose config rejects docker-compose.yml:\n{text}"
    );
    let bad = broken_copy(&file, "    image: otel/", "    imagee: otel/")?;
    let (ok, text) = compose(&bad, &["-q"])?;
    let _ = std::fs::remove_file(&bad);
    ensure!(!ok, "docker compose config accepts a broken file:\n{text}");

    // What it resolved: the six services, and every file it mounts exists.
    let (ok, text) = compose(&file, &["--format", "json"])?;
    ensure!(ok, "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&text).context("compose config --format json")?;
    let services = json["services"].as_object().context("no services")?;
    for s in [
        "vnt-agent",
        "otel-collector",
        "jaeger",
        "tempo",
        "prometheus",
        "grafana",
    ] {
        ensure!(services.contains_key(s), "service {s} missing");
    }
    let root = vnt_tests::workspace_root().canonicalize()?;
    for (name, svc) in services {
        for v in svc["volumes"].as_array().into_iter().flatten() {
            if v["type"] != "bind" {
                continue;
            }
            let source = PathBuf::from(v["source"].as_str().unwrap_or_default());
            // Files of this repository must exist (target/release after a build);
            // host paths (/run/netns) are the host's business.
            if source.starts_with(root.join("otel-collector")) {
                ensure!(
                    source.exists(),
                    "{name} mounts {}, which does not exist",
                    source.display()
                );
            }
        }
    }
    let agent = &services["vnt-agent"];
    let caps: Vec<&str> = agent["cap_add"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str())
        .collect();
    // The set Docker 20.10 can grant (README "Privileges"; deploy.rs checks
    // it is exactly that).
    for cap in ["SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE"] {
        ensure!(
            caps.iter().any(|c| c.trim_start_matches("CAP_") == cap),
            "vnt-agent lacks CAP_{cap}: {caps:?}"
        );
    }
    ensure!(
        agent["pid"] == "host",
        "vnt-agent needs the host's pid namespace"
    );
    ensure!(
        agent["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4317",
        "vnt-agent must send to the collector"
    );
    Ok(())
}

#[test]
fn prometheus_config_passes_promtool() -> Result<()> {
    let promtool = ensure_tool("ensure-promtool.sh");
    let file = config_file("prometheus.yml");
    let (ok, text) = run(Command::new(&promtool).args(["check", "config"]).arg(&file))?;
    ensure!(ok, "promtool rejects prometheus.yml:\n{text}");
    let bad = broken_copy(&file, "scrape_interval: 10s", "scrape_interval: often")?;
    let (ok, text) = run(Command::new(&promtool).args(["check", "config"]).arg(&bad))?;
    let _ = std::fs::remove_file(&bad);
    ensure!(!ok, "promtool accepts a broken prometheus.yml:\n{text}");
    // It scrapes the collector's Prometheus exporter, where the agent's metrics are.
    let prom = yaml(&file)?;
    let otelcol = yaml(&config_file("otelcol.yaml"))?;
    let exporter = otelcol["exporters"]["prometheus"]["endpoint"]
        .as_str()
        .unwrap_or_default();
    let port = exporter
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .trim_end_matches('}');
    let targets: Vec<String> = prom["scrape_configs"]
        .as_vec()
        .into_iter()
        .flatten()
        .flat_map(|j| j["static_configs"].as_vec().cloned().unwrap_or_default())
        .flat_map(|s| s["targets"].as_vec().cloned().unwrap_or_default())
        .filter_map(|t| t.as_str().map(String::from))
        .collect();
    ensure!(
        targets
            .iter()
            .any(|t| t == &format!("otel-collector:{port}")),
        "prometheus.yml scrapes {targets:?}, the collector exports on {exporter}"
    );
    Ok(())
}

#[test]
fn grafana_and_tempo_files_agree_with_the_stack() -> Result<()> {
    // Data sources: Prometheus, Tempo and Jaeger at the compose services' ports.
    let ds = yaml(&config_file(
        "grafana/provisioning/datasources/datasources.yaml",
    ))?;
    let sources = ds["datasources"].as_vec().context("no datasources")?;
    let uid_url: Vec<(String, String, String)> = sources
        .iter()
        .map(|d| {
            (
                d["uid"].as_str().unwrap_or_default().to_string(),
                d["type"].as_str().unwrap_or_default().to_string(),
                d["url"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for (uid, ty, url) in [
        ("prometheus", "prometheus", "http://prometheus:9090"),
        ("tempo", "tempo", "http://tempo:3200"),
        ("jaeger", "jaeger", "http://jaeger:16686"),
    ] {
        ensure!(
            uid_url.contains(&(uid.into(), ty.into(), url.into())),
            "no {ty} data source {uid} at {url}: {uid_url:?}"
        );
    }
    // Dashboards provider: the directory the compose file mounts.
    let dp = yaml(&config_file(
        "grafana/provisioning/dashboards/dashboards.yaml",
    ))?;
    ensure!(
        dp["providers"][0]["options"]["path"].as_str() == Some("/var/lib/grafana/dashboards"),
        "dashboards provider path"
    );
    // The dashboard: valid JSON, every panel and target on a provisioned data source,
    // per-hop latency and drops panels present.
    let text = std::fs::read_to_string(config_file("grafana/dashboards/vnt.json"))?;
    let dash: serde_json::Value = serde_json::from_str(&text).context("vnt.json is not JSON")?;
    let uids: Vec<&str> = uid_url.iter().map(|(u, _, _)| u.as_str()).collect();
    let panels = dash["panels"].as_array().context("no panels")?;
    let mut titles = vec![];
    for p in panels {
        titles.push(p["title"].as_str().unwrap_or_default().to_string());
        if p["type"] == "row" {
            continue;
        }
        let uid = p["datasource"]["uid"].as_str().unwrap_or_default();
        ensure!(
            uids.contains(&uid),
            "panel {} uses data source {uid}",
            p["title"]
        );
        let targets = p["targets"].as_array().context("panel without targets")?;
        ensure!(!targets.is_empty(), "panel {} has no queries", p["title"]);
        for t in targets {
            ensure!(
                t["expr"].as_str().is_some_and(|e| e.contains("vnt_")),
                "panel {}: {t}",
                p["title"]
            );
        }
    }
    for want in [
        "Hop latency p99 by hook and interface",
        "Drops by interface and reason",
    ] {
        ensure!(
            titles.iter().any(|t| t == want),
            "no panel `{want}` in {titles:?}"
        );
    }

    // Tempo: receives OTLP/gRPC where the collector sends it, serves Grafana on 3200.
    let tempo = yaml(&config_file("tempo.yaml"))?;
    let grpc = tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
        .as_str()
        .unwrap_or_default();
    ensure!(
        grpc.ends_with(":4317"),
        "Tempo's OTLP/gRPC receiver is on {grpc}"
    );
    let otelcol = yaml(&config_file("otelcol.yaml"))?;
    let to_tempo = otelcol["exporters"]["otlp/tempo"]["endpoint"]
        .as_str()
        .unwrap_or_default();
    ensure!(
        to_tempo.contains("tempo:4317"),
        "the collector sends to Tempo at {to_tempo}"
    );
    ensure!(
        tempo["server"]["http_listen_port"].as_i64() == Some(3200),
        "Tempo's HTTP port"
    );
    ensure!(
        tempo["storage"]["trace"]["backend"].as_str() == Some("local"),
        "Tempo's storage backend"
    );
    Ok(())
}

/// Runs the fenced `sh` block of the README's "See journeys in Jaeger"
/// section with bash, line for line except `cargo build` (the test harness
/// has built those binaries; a nested cargo would wait on this one's lock),
/// in a fresh network namespace so that its fixed ports (4317, 16686) clash
/// with nothing. Its last line prints the number of traces Jaeger holds.
#[test]
fn readme_jaeger_section_works_as_written() -> Result<()> {
    let _serial = vnt_tests::serial();
    vnt_tests::require_root();
    let _ = otel::jaeger_bin(); // build Jaeger first, outside the block's timing
    let readme = std::fs::read_to_string(vnt_tests::workspace_root().join("README.md"))?;
    let section = readme
        .split("\n## See journeys in Jaeger\n")
        .nth(1)
        .context("README has no `## See journeys in Jaeger` section")?;
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .context("the section has no ```sh block")?;
    let script: String = block
        .lines()
        .filter(|l| !l.trim_start().starts_with("cargo build"))
        .map(|l| format!("{l}\n"))
        .collect();
    ensure!(
        script.contains("--otlp-endpoint"),
        "the block does not run the agent with OTLP:\n{script}"
    );

    let ns = format!("vnt-readme-{}", std::process::id());
    vnt_tests::run(Command::new("ip").args(["netns", "add", &ns]))?;
    let result = (|| -> Result<String> {
        vnt_tests::run(Command::new("ip").args(["-n", &ns, "link", "set", "lo", "up"]))?;
        let mut cmd = vnt_tests::exec_in(&ns, "bash", ["-euo", "pipefail", "-c", &script]);
        // The block runs scripts/demo.sh, whose own `cargo build` must be the
        // no-op it is in a user's shell: cargo's variables for this test
        // process would make build scripts rerun and rebuild the agent that
        // other tests of this run execute.
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("CARGO") || k == "OUT_DIR" || k.starts_with("RUSTC") {
                cmd.env_remove(&key);
            }
        }
        let mut child = cmd
            .current_dir(vnt_tests::workspace_root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while child.try_wait()?.is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                bail!("the README block ran for more than 120 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let out = child.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        ensure!(
            out.status.success(),
            "the README block failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(stdout)
    })();
    // Whatever the block left running (Jaeger) goes with the namespace.
    if let Ok(pids) = vnt_tests::run(Command::new("ip").args(["netns", "pids", &ns])) {
        for pid in pids.split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let _ = vnt_tests::run(Command::new("ip").args(["netns", "del", &ns]));
    let _ = std::fs::remove_file("/tmp/jaeger.log");
    let stdout = result?;
    let traces: u64 = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| l.trim().parse().ok())
        .with_context(|| format!("the block's last line is not a number of traces:\n{stdout}"))?;
    ensure!(
        traces >= 3,
        "Jaeger holds {traces} traces after the README's HTTP request (a TCP handshake alone is 3)"
    );
    eprintln!("README block: Jaeger holds {traces} traces");
    Ok(())
}

//! Issue #14, deployment: the systemd unit and the Kubernetes DaemonSet pass
//! their validators, and every place that states the agent's capabilities
//! (README "Privileges", the unit, the DaemonSet, the compose file) states
//! the sets of `vnt_tests::privileges` (which least_privilege.rs runs the
//! agent with).
//!
//! - The unit: `systemd-analyze verify` (unknown keys, bad values, a missing
//!   binary: any complaint fails), and `systemd-analyze security --offline`
//!   under an exposure threshold.
//! - The DaemonSet: decoded strictly against the Kubernetes API types by
//!   deploy/kubernetes/validate (k8s.io/api, sigs.k8s.io/json; built from Go
//!   modules by scripts/ensure-k8s-validate.sh, no network schemas), then its
//!   host network and pid, mounts, capabilities and OTLP endpoint checked.
//!
//! Each validator is also shown a broken copy, which it must refuse.
//! Unprivileged: nothing here touches the kernel.

use anyhow::{bail, ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use vnt_tests::privileges::{LEGACY, MODERN};
use yaml_rust2::{Yaml, YamlLoader};

/// The unit's exposure score must stay at or below 5.0 of 10 (0 safest; it is
/// 4.3, eBPF needs capabilities that weigh). `--threshold` counts in tenths.
const SECURITY_THRESHOLD: &str = "50";

fn root() -> &'static Path {
    vnt_tests::workspace_root()
}

fn unit_file() -> PathBuf {
    root().join("deploy/systemd/vnt-agent.service")
}

fn daemonset_file() -> PathBuf {
    root().join("deploy/kubernetes/vnt-agent.yaml")
}

fn output(cmd: &mut Command) -> Result<(bool, String, String)> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// A directory of this test's own, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("vnt-deploy-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The unit's `Key=` values (space-separated words), in order.
fn unit_values(text: &str, key: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.split_whitespace().map(str::to_owned).collect())
        .collect()
}

fn words(set: &[&str]) -> Vec<String> {
    set.iter().map(|s| (*s).to_owned()).collect()
}

/// `systemd-analyze verify` of the unit, its ExecStart pointing at the built
/// agent (verify checks the binary exists): success and silence.
fn verify(unit_text: &str, dir: &Path) -> Result<(bool, String)> {
    let agent = vnt_tests::locate_binary("vnt-agent", "VNT_AGENT_BIN");
    let text = unit_text.replace("/usr/local/bin/vnt-agent", &agent.display().to_string());
    let path = dir.join("vnt-agent.service");
    std::fs::write(&path, text)?;
    let (ok, out, err) = output(Command::new("systemd-analyze").arg("verify").arg(&path))?;
    Ok((
        ok && out.trim().is_empty() && err.trim().is_empty(),
        format!("{out}{err}"),
    ))
}

#[test]
fn systemd_unit_passes_systemd_analyze_with_the_documented_capabilities() -> Result<()> {
    let text = std::fs::read_to_string(unit_file())?;
    let scratch = Scratch::new("unit")?;
    let (ok, said) = verify(&text, &scratch.0)?;
    ensure!(
        ok,
        "systemd-analyze verify complains about the unit:\n{said}"
    );
    for (from, to) in [
        ("ProtectClock=yes", "ProtectClok=yes"),
        ("NoNewPrivileges=yes", "NoNewPrivileges=perhaps"),
    ] {
        ensure!(text.contains(from), "the unit has no `{from}`");
        let (ok, said) = verify(&text.replacen(from, to, 1), &scratch.0)?;
        ensure!(!ok, "systemd-analyze verify accepts `{to}`:\n{said}");
    }
    let (ok, out, err) = output(
        Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(format!("--threshold={SECURITY_THRESHOLD}"))
            .arg(scratch.0.join("vnt-agent.service")),
    )?;
    let score = out
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or("no score")
        .to_owned();
    ensure!(
        ok,
        "the unit's exposure is above {SECURITY_THRESHOLD} tenths: {score}\n{out}{err}"
    );
    eprintln!("systemd-analyze security: {score}");

    for key in ["CapabilityBoundingSet", "AmbientCapabilities"] {
        let values = unit_values(&text, key);
        ensure!(
            values == [words(MODERN)],
            "{key} must be exactly {MODERN:?} (once), the unit has {values:?}"
        );
    }
    ensure!(
        unit_values(&text, "NoNewPrivileges") == [vec!["yes".to_owned()]],
        "NoNewPrivileges=yes"
    );
    Ok(())
}

/// Runs the validator over `file`: the decoded objects, or its complaint.
fn k8s_validate(file: &Path) -> Result<std::result::Result<Vec<serde_json::Value>, String>> {
    let script = root().join("scripts/ensure-k8s-validate.sh");
    let (ok, out, err) = output(&mut Command::new(&script))?;
    ensure!(
        ok,
        "{} failed (the check never skips):\n{err}",
        script.display()
    );
    let (ok, out, err) = output(Command::new(out.trim()).arg(file))?;
    if !ok {
        return Ok(Err(err));
    }
    Ok(Ok(out
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?))
}

#[test]
fn daemonset_decodes_strictly_against_the_kubernetes_api_types() -> Result<()> {
    let file = daemonset_file();
    let objects = match k8s_validate(&file)? {
        Ok(o) => o,
        Err(e) => bail!("{} does not decode strictly:\n{e}", file.display()),
    };
    let text = std::fs::read_to_string(&file)?;
    let scratch = Scratch::new("k8s")?;
    for (from, to) in [
        ("hostPID: true", "hostPid: true"),
        ("readOnly: true", "readOnly: yes please"),
        ("kind: DaemonSet", "kind: DaemonSett"),
    ] {
        ensure!(text.contains(from), "the manifest has no `{from}`");
        let bad = scratch.0.join("bad.yaml");
        std::fs::write(&bad, text.replacen(from, to, 1))?;
        ensure!(k8s_validate(&bad)?.is_err(), "the validator accepts `{to}`");
    }

    let of = |kind: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == kind)
            .map(|o| &o["object"])
            .with_context(|| format!("no {kind} in {}", file.display()))
    };
    let ds = of("DaemonSet")?;
    let pod = &ds["spec"]["template"]["spec"];
    ensure!(pod["hostNetwork"] == true, "hostNetwork: true");
    ensure!(pod["hostPID"] == true, "hostPID: true");
    let containers = pod["containers"].as_array().context("containers")?;
    ensure!(containers.len() == 1, "one container");
    let c = &containers[0];
    let sc = &c["securityContext"];
    ensure!(sc["privileged"] != true, "not privileged");
    ensure!(
        sc["allowPrivilegeEscalation"] == false,
        "allowPrivilegeEscalation: false"
    );
    ensure!(
        sc["capabilities"]["drop"] == serde_json::json!(["ALL"]),
        "capabilities.drop: [ALL], has {}",
        sc["capabilities"]["drop"]
    );
    let add: Vec<String> = sc["capabilities"]["add"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str().map(|c| format!("CAP_{c}")))
        .collect();
    ensure!(
        add == words(MODERN),
        "capabilities.add must be {MODERN:?}, is {add:?}"
    );
    // bpffs, tracefs and BTF from the host, each where the kernel has it.
    let volumes = pod["volumes"].as_array().context("volumes")?;
    for path in ["/sys/fs/bpf", "/sys/kernel/tracing", "/sys/kernel/btf"] {
        let v = volumes
            .iter()
            .find(|v| v["hostPath"]["path"] == path)
            .with_context(|| format!("no hostPath volume of {path}"))?;
        let mounted = c["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["name"] == v["name"] && m["mountPath"] == path);
        ensure!(mounted, "{path} is not mounted at {path}");
    }
    // OTLP to the Collector Service the file defines.
    let svc = of("Service")?;
    let endpoint = c["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == "OTEL_EXPORTER_OTLP_ENDPOINT")
        .and_then(|e| e["value"].as_str())
        .context("no OTEL_EXPORTER_OTLP_ENDPOINT")?;
    let host = format!(
        "http://{}.{}.svc.cluster.local:4317",
        svc["metadata"]["name"].as_str().unwrap_or_default(),
        svc["metadata"]["namespace"].as_str().unwrap_or_default()
    );
    ensure!(
        endpoint == host,
        "the agent sends to {endpoint}, the Service is {host}"
    );
    ensure!(
        svc["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["port"] == 4317),
        "the Service has no OTLP/gRPC port"
    );
    ensure!(
        pod["dnsPolicy"] == "ClusterFirstWithHostNet",
        "with hostNetwork, the Service name resolves only with dnsPolicy ClusterFirstWithHostNet"
    );
    Ok(())
}

fn yaml(path: &Path) -> Result<Yaml> {
    let text = std::fs::read_to_string(path)?;
    let mut docs = YamlLoader::load_from_str(&text)?;
    ensure!(docs.len() == 1, "{}: one document", path.display());
    Ok(docs.remove(0))
}

/// The sets of the README's "Privileges" table, in its order.
fn readme_sets() -> Result<Vec<Vec<String>>> {
    let text = std::fs::read_to_string(root().join("README.md"))?;
    let section = text
        .split("\n## Privileges\n")
        .nth(1)
        .context("README has no \"## Privileges\" section")?;
    let section = section.split("\n## ").next().unwrap_or_default();
    Ok(section
        .lines()
        .filter(|l| l.starts_with('|'))
        .filter_map(|l| {
            let cell = l.split('`').nth(1)?;
            Some(cell.split_whitespace().map(str::to_owned).collect())
        })
        .collect())
}

#[test]
fn every_place_states_the_same_capability_sets() -> Result<()> {
    ensure!(
        readme_sets()? == [words(MODERN), words(LEGACY)],
        "README \"Privileges\" must list {MODERN:?} then {LEGACY:?}, it lists {:?}",
        readme_sets()?
    );
    let unit = std::fs::read_to_string(unit_file())?;
    ensure!(
        unit_values(&unit, "CapabilityBoundingSet") == [words(MODERN)],
        "the systemd unit"
    );
    let ds = std::fs::read_to_string(daemonset_file())?;
    let docs = YamlLoader::load_from_str(&ds)?;
    let add: Vec<String> = docs
        .iter()
        .filter(|d| d["kind"].as_str() == Some("DaemonSet"))
        .flat_map(|d| {
            d["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["add"]
                .as_vec()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|c| c.as_str().map(|c| format!("CAP_{c}")))
        .collect();
    ensure!(add == words(MODERN), "the DaemonSet adds {add:?}");
    // Compose: Docker 20.10 cannot grant CAP_BPF, so the file users run with
    // the Docker they have holds the second set, and nothing else.
    let compose = yaml(&root().join("otel-collector/docker-compose.yml"))?;
    let agent = &compose["services"]["vnt-agent"];
    let list = |key: &str| -> Vec<String> {
        agent[key]
            .as_vec()
            .into_iter()
            .flatten()
            .filter_map(|c| c.as_str().map(|c| format!("CAP_{c}")))
            .collect()
    };
    ensure!(
        list("cap_add") == words(LEGACY),
        "compose cap_add must be {LEGACY:?}, is {:?}",
        list("cap_add")
    );
    ensure!(
        list("cap_drop") == ["CAP_ALL"],
        "compose must drop every other capability (cap_drop: [ALL]), has {:?}",
        list("cap_drop")
    );
    ensure!(
        agent["privileged"].as_bool() != Some(true),
        "compose: not privileged"
    );
    Ok(())
}

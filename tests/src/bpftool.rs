//! What the kernel has loaded, as bpftool sees it.

/// `bpftool -j <kind> show` (kind: `prog`, `link`, `map`) as JSON objects.
/// Panics with bpftool's stderr when it fails: the privileged tests need it.
pub fn show(kind: &str) -> Vec<serde_json::Value> {
    let out = std::process::Command::new("bpftool")
        .args(["-j", kind, "show"])
        .output()
        .expect("run bpftool (scripts/install-deps.sh installs it)");
    assert!(
        out.status.success(),
        "bpftool {kind} show failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout).expect("bpftool json") {
        serde_json::Value::Array(v) => v,
        other => panic!("bpftool {kind} show: expected a JSON array, got {other}"),
    }
}

/// Ids of the `kind` objects for which `keep` holds.
pub fn ids(kind: &str, keep: impl Fn(&serde_json::Value) -> bool) -> Vec<u64> {
    show(kind)
        .iter()
        .filter(|o| keep(o))
        .filter_map(|o| o["id"].as_u64())
        .collect()
}

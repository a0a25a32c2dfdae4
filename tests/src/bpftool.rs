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

/// Ids of BPF objects (`prog` or `link`) held open by `pid`, from the
/// `prog_id:` / `link_id:` lines of its /proc fdinfo (Debian's bpftool
/// cannot list the pids holding an object).
pub fn held_by(kind: &str, pid: u32) -> std::collections::BTreeSet<u64> {
    let key = format!("{kind}_id:");
    let dir = format!("/proc/{pid}/fdinfo");
    let mut ids = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {dir}: {e}"))
        .flatten()
    {
        let Ok(info) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        // A link's fdinfo names its program too; count a prog only from prog fds.
        let is_link = info.lines().any(|l| l.starts_with("link_id:"));
        if kind == "prog" && is_link {
            continue;
        }
        for line in info.lines() {
            if let Some(v) = line.strip_prefix(&key) {
                if let Ok(id) = v.trim().parse() {
                    ids.insert(id);
                }
            }
        }
    }
    ids
}

//! The README's build (`cargo build --release -p vnt-agent -p vnt-plugin-veth`)
//! and the demo's must be no-ops after scripts/test.sh built the workspace
//! (`cargo build --workspace --release --all-targets`), and the other way
//! round (issue 7). Cargo unifies the features of every crate over all that
//! one build compiles, dev-dependencies included when tests are built; when
//! the two builds resolve a crate the agent uses with different features,
//! each rebuilds the agent and replaces `target/release/vnt-agent`, also under
//! a test run that is executing it. The agent's dev-dependencies once did
//! this: figment's `test` feature and tempfile turned on rustix's `fs`, and
//! clap (through terminal_size) and the agent were rebuilt.
//!
//! Checked with `cargo tree`, which resolves features as those builds do
//! without building anything: every crate of the narrow builds must have
//! the same features as in the workspace build.

use std::collections::BTreeSet;
use std::process::Command;

use vnt_tests::workspace_root;

/// `package version|features` of every crate the packages `args` select
/// build (twice for a crate built both for the host and the target with
/// different features).
fn features(args: &[&str]) -> BTreeSet<String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(&cargo)
        .arg("tree")
        .args(args)
        .args(["--prefix", "none", "--format", "{p}|{f}"])
        .current_dir(workspace_root())
        .output()
        .expect("run cargo tree");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo tree {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .filter(|l| l.contains('|'))
        // ` (*)` marks a subtree already shown.
        .map(|l| l.trim().trim_end_matches(" (*)").to_string())
        .collect()
}

#[test]
fn readme_and_demo_builds_resolve_features_like_the_workspace_build() {
    // scripts/test.sh: `cargo build --workspace --release --all-targets`.
    let workspace = features(&["--workspace", "-e", "normal,build,dev"]);
    let narrow_builds: [&[&str]; 2] = [
        // README
        &["-p", "vnt-agent", "-p", "vnt-plugin-veth"],
        // scripts/demo.sh
        &[
            "-p",
            "vnt-agent",
            "-p",
            "vnt-plugin-veth",
            "-p",
            "vnt-tests",
        ],
    ];
    for packages in narrow_builds {
        let mut args = packages.to_vec();
        args.extend(["-e", "normal,build"]);
        let narrow = features(&args);
        assert!(
            narrow.iter().any(|p| p.starts_with("vnt-agent ")),
            "cargo tree {args:?} lists no vnt-agent: {narrow:?}"
        );
        let differ: Vec<String> = narrow
            .difference(&workspace)
            .map(|here| {
                let package = here.split('|').next().unwrap_or_default();
                let there: Vec<&str> = workspace
                    .iter()
                    .filter(|w| w.split('|').next() == Some(package))
                    .filter_map(|w| w.split('|').nth(1))
                    .collect();
                format!(
                    "{package}: [{}] here, {} in the workspace build",
                    here.split('|').nth(1).unwrap_or_default(),
                    if there.is_empty() {
                        "absent".to_string()
                    } else {
                        format!("[{}]", there.join("] or ["))
                    }
                )
            })
            .collect();
        assert!(
            differ.is_empty(),
            "`cargo build {}` resolves these crates differently from the workspace build, so \
             each build recompiles them and the agent and replaces target/release/vnt-agent \
             (a dev-dependency turning on features of a crate the agent uses?); see \
             `cargo tree -e features -i CRATE`:\n  {}",
            packages.join(" "),
            differ.join("\n  ")
        );
    }
}

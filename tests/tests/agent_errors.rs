//! Bad input gets a short clear error and a non-zero exit, never a panic
//! (issue #2, acceptance 6): unknown plugin, missing plugin file, a plugin
//! built for another ABI major, malformed configuration, no permission to
//! load eBPF; and (issue 7) a huge duration, a header or log level that
//! cannot be used, flags given after the subcommand.

use std::path::PathBuf;
use std::process::{Command, Output};

use vnt_tests::{locate_binary, require_root};

fn agent() -> PathBuf {
    locate_binary("vnt-agent", "VNT_AGENT_BIN")
}

/// A fixture plugin built next to the agent (cargo puts every cdylib there).
fn fixture(file: &str) -> PathBuf {
    let p = agent().parent().expect("agent dir").join(file);
    assert!(
        p.exists(),
        "{} missing: build the workspace (cargo build --release --workspace)",
        p.display()
    );
    p
}

fn run(args: &[&str]) -> (i32, String) {
    run_env(args, &[("VNT_LOG", "warn")])
}

fn run_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let (code, _, stderr) = run_full(args, env);
    (code, stderr)
}

/// Exit code, stdout and stderr; a panic fails the test.
fn run_full(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out: Output = Command::new(agent())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run vnt-agent");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !stderr.contains("panicked"),
        "the agent panicked:\n{stderr}"
    );
    assert!(
        !stderr.contains("RUST_BACKTRACE"),
        "the agent panicked:\n{stderr}"
    );
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

#[test]
fn unknown_plugin_lists_the_available_ones() {
    let (code, err) = run(&["--plugins", "no-such-plugin", "--duration", "1"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("unknown plugin `no-such-plugin`"), "{err}");
    assert!(err.contains("available: ") && err.contains("veth"), "{err}");
    assert!(err.contains("searched: "), "{err}");
    assert!(err.lines().count() <= 3, "short error expected:\n{err}");
}

#[test]
fn missing_plugin_file_is_named() {
    let (code, err) = run(&[
        "--plugins",
        "/nonexistent/dir/libvnt_plugin_x.so",
        "--duration",
        "1",
    ]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("plugin file not found: /nonexistent/dir/libvnt_plugin_x.so"),
        "{err}"
    );
}

#[test]
fn plugin_for_another_abi_major_is_refused_with_both_versions() {
    let so = fixture("libvnt_fixture_abi2.so");
    let (code, err) = run(&["--plugins", so.to_str().unwrap(), "--duration", "1"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("plugin ABI 2.0"), "{err}");
    // The agent's own version, whatever 1.x minor it is at.
    assert!(err.contains("agent's ABI 1."), "{err}");
    assert!(err.contains(&so.display().to_string()), "{err}");
}

#[test]
fn malformed_config_names_the_key_and_the_file() {
    let dir = std::env::temp_dir().join(format!("vnt-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let bad_type = dir.join("bad-type.toml");
    std::fs::write(
        &bad_type,
        "plugins = [\"veth\"]\n[journey]\nidle_timeout_ms = \"soon\"\n",
    )
    .unwrap();
    let (code, err) = run(&["--config", bad_type.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("journey.idle_timeout_ms"), "{err}");
    assert!(err.contains("bad-type.toml"), "{err}");

    let typo = dir.join("typo.toml");
    std::fs::write(&typo, "plugins = [\"veth\"]\nsampel = \"1/10\"\n").unwrap();
    let (code, err) = run(&["--config", typo.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("sampel") && err.contains("typo.toml"), "{err}");

    let bad_value = dir.join("bad-value.toml");
    std::fs::write(
        &bad_value,
        "plugins = [\"veth\"]\nfilter = \"port 99999\"\n",
    )
    .unwrap();
    let (code, err) = run(&["--config", bad_value.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("`filter`") && err.contains("bad-value.toml"),
        "{err}"
    );

    let (code, err) = run(&["--config", dir.join("absent.toml").to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("absent.toml"), "{err}");

    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_flags_are_refused_before_anything_is_loaded() {
    let (code, err) = run(&["--plugins", "veth", "--sample", "1/0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`sample`"), "{err}");
    let (code, err) = run(&["--plugins", "veth", "--filter", "port 1 or port 2"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("only `and`"), "{err}");
    let (code, err) = run(&[]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("no plugins requested"), "{err}");
}

/// Issue 7: a huge `--duration` (or `duration`, `VNT_DURATION`) was accepted,
/// and the agent panicked once its probes were attached (exit 101).
#[test]
fn huge_duration_is_refused_before_anything_is_loaded() {
    let (code, err) = run(&["--plugins", "veth", "--duration", "18446744073709551615"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`duration` (from the command line)"), "{err}");
    let (code, err) = run_env(
        &["--plugins", "veth"],
        &[("VNT_LOG", "warn"), ("VNT_DURATION", "9223372036854775807")],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`duration`") && err.contains("VNT_"), "{err}");
}

/// Issue 13: size settings had no upper bound (`ringbuf.bytes` accepted
/// 2 GiB per plugin, `journey.max_in_flight` anything); the error names the
/// key, the bound and where the value came from, before anything is loaded.
#[test]
fn size_settings_beyond_their_bounds_are_refused() {
    let dir = std::env::temp_dir().join(format!("vnt-bounds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("big-ringbuf.toml");
    std::fs::write(
        &cfg,
        "plugins = [\"veth\"]\n[ringbuf]\nbytes = 2147483648\n",
    )
    .unwrap();
    let (code, err) = run(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("`ringbuf.bytes`")
            && err.contains("268435456")
            && err.contains("big-ringbuf.toml"),
        "{err}"
    );
    let (code, err) = run_env(
        &["--plugins", "veth"],
        &[
            ("VNT_LOG", "warn"),
            ("VNT_JOURNEY__MAX_IN_FLIGHT", "1000000000"),
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("`journey.max_in_flight`") && err.contains("1048576") && err.contains("VNT_"),
        "{err}"
    );
    let (code, err) = run(&["--plugins", "veth", "--packet-id-key", "abc"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("`packet_id.key`") && err.contains("32 hex"),
        "{err}"
    );
    let (code, out, _) = run_full(&["--help"], &[]);
    assert_eq!(code, 0);
    assert!(
        out.contains("max_in_flight (1..=1048576)") && out.contains("4096..=268435456"),
        "--help documents the bounds:\n{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 7: `--otlp-header novalue` was accepted silently (sent as an empty header).
#[test]
fn otlp_header_without_a_value_is_refused() {
    for bad in ["novalue", "=value"] {
        let (code, err) = run(&[
            "--plugins",
            "veth",
            "--otlp-endpoint",
            "http://127.0.0.1:4317",
            "--otlp-header",
            bad,
            "--duration",
            "1",
        ]);
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(
            err.contains("--otlp-header") && err.contains(bad) && err.contains("KEY=VALUE"),
            "{err}"
        );
    }
}

/// Issue 7: an unknown `--log-level` or `VNT_LOG` silently fell back to `info`.
#[test]
fn unknown_log_level_is_refused_listing_the_levels() {
    let (code, err) = run(&[
        "--plugins",
        "veth",
        "--log-level",
        "verbose",
        "--duration",
        "1",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--log-level") && err.contains("verbose"),
        "{err}"
    );
    assert!(
        err.contains("error, warn, info, debug, trace, off"),
        "{err}"
    );
    let (code, err) = run_env(
        &["--plugins", "veth", "--duration", "1"],
        &[("VNT_LOG", "debgu")],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("debgu") && err.contains("error, warn, info"),
        "{err}"
    );
}

/// Issue 7: `vnt-agent plugins --plugin-dir DIR` was refused ("unexpected
/// argument"); only `vnt-agent --plugin-dir DIR plugins` worked.
#[test]
fn flags_work_after_the_subcommand() {
    let dir = std::env::temp_dir().join(format!("vnt-gflags-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        fixture("libvnt_plugin_veth.so"),
        dir.join("libvnt_plugin_gflags.so"),
    )
    .unwrap();
    let d = dir.to_str().unwrap();
    for args in [
        ["plugins", "--plugin-dir", d],
        ["--plugin-dir", d, "plugins"],
    ] {
        let (code, out, err) = run_full(&args, &[("VNT_LOG", "warn")]);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(
            out.lines().any(|l| l.starts_with("gflags ")),
            "{args:?}: the plugin in --plugin-dir is not listed:\n{out}"
        );
    }
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "sampel = 1\n").unwrap();
    let (code, err) = run(&["plugins", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("sampel"),
        "--config after the subcommand: {err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn no_permission_to_load_ebpf_is_a_clear_error() {
    require_root(); // to drop privileges we must have them
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(agent())
        .args(["--plugins", "veth", "--duration", "1"])
        .env("VNT_LOG", "warn")
        .output()
        .expect("run setpriv (util-linux)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("missing capabilities"), "{err}");
    assert!(err.contains("CAP_BPF"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Issue 9: `[plugins.NAME]` (the spelling `InitContext`'s docs had) was
/// silently ignored; only `[plugin.NAME]` reaches the plugin. It is refused,
/// naming the right spelling; a table for a plugin that does not exist is a
/// typo, refused like an unknown key; one for a plugin that exists but is not
/// loaded in this run is only a warning.
#[test]
fn plugin_config_table_is_spelt_plugin_name() {
    let dir = std::env::temp_dir().join(format!("vnt-plugtab-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plural = dir.join("plural.toml");
    std::fs::write(&plural, "[plugins.veth]\nsnaplen = 64\n").unwrap();
    let (code, err) = run(&[
        "--config",
        plural.to_str().unwrap(),
        "--plugins",
        "veth",
        "--duration",
        "1",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("`[plugins.veth]`") && err.contains("write `[plugin.veth]`"),
        "{err}"
    );
    assert!(err.contains("plural.toml"), "{err}");

    let typo = dir.join("typo.toml");
    std::fs::write(&typo, "plugins = [\"veth\"]\n[plugin.vteh]\nsnaplen = 64\n").unwrap();
    let (code, err) = run(&["--config", typo.to_str().unwrap(), "--duration", "1"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("`[plugin.vteh]`: there is no plugin `vteh`") && err.contains("veth"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn table_of_a_plugin_not_loaded_is_a_warning() {
    require_root();
    let dir = std::env::temp_dir().join(format!("vnt-plugtab2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let unused = dir.join("unused.toml");
    std::fs::write(&unused, "[plugin.floor]\nx = 1\n").unwrap();
    let (code, err) = run(&[
        "--config",
        unused.to_str().unwrap(),
        "--plugins",
        "veth",
        "--duration",
        "1",
        "--output",
        "none",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("`[plugin.floor]` is not used: plugin `floor` is not loaded"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

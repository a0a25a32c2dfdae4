//! `vnt-agent plugins` lists products, not the repository's test fixtures
//! (issue 9): for each plugin its version, ABI and probes, and whether each
//! probe can attach on this kernel; fixtures only with `--all`.

use std::process::Command;

use vnt_tests::{locate_binary, require_root};

fn plugins(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(locate_binary("vnt-agent", "VNT_AGENT_BIN"))
        .arg("plugins")
        .args(args)
        .env("VNT_LOG", "warn")
        .output()
        .expect("run vnt-agent plugins");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn plugins_lists_products_with_abi_and_what_attaches_here() {
    require_root();
    let (code, out, err) = plugins(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("veth ") && l.contains("(ABI 1.")),
        "veth with its ABI:\n{out}"
    );
    assert!(
        out.contains("  probe veth_receive (required): tp_btf:netif_receive_skb")
            && out.contains("    here: attaches as tp_btf:netif_receive_skb"),
        "{out}"
    );
    // Declared fields, under the key every output uses.
    assert!(
        out.contains("  field vnt.veth.tcp.flags (Str): TCP flags"),
        "{out}"
    );
    for fixture in [
        "panicky",
        "hangy",
        "floor",
        "missinghook",
        "tcwatch",
        "tcvxlan",
        "abi2",
        "absurd",
    ] {
        assert!(
            !out.contains(fixture),
            "test fixture `{fixture}` listed as a product:\n{out}"
        );
    }
    assert!(!out.contains("unusable"), "{out}");
    assert!(err.contains("`vnt-agent plugins --all`"), "{err}");
}

#[test]
fn plugins_all_marks_fixtures_and_says_what_cannot_attach() {
    require_root();
    let (code, out, err) = plugins(&["--all"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("missinghook ") && l.contains("(test fixture)")),
        "{out}"
    );
    assert!(
        out.contains("  probe missinghook_gone (required)")
            && out.contains("    here: CANNOT ATTACH (fentry:vnt_no_such_function"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("veth ") && !l.contains("test fixture")),
        "{out}"
    );
}

//! Build helper for vnt plugins: compiles a plugin's `bpf/<name>.bpf.c`
//! with clang against the shared headers in `ebpf/include` and the
//! committed `ebpf/vmlinux/<arch>/vmlinux.h`.
//!
//! In a plugin's `build.rs`:
//!
//! ```no_run
//! vnt_ebpf::compile("bpf/veth.bpf.c").unwrap_or_else(|e| panic!("{e}"));
//! ```
//!
//! The object lands in `$OUT_DIR/<name>.bpf.o`; embed it with
//! `include_bytes!(concat!(env!("OUT_DIR"), "/veth.bpf.o"))`.
//!
//! Next to it, `$OUT_DIR/<name>.bpf.programs.rs` declares one
//! `vnt_plugin_api::ProbeAlternative` per program whose ELF section says
//! where it attaches (`tp_btf/X`, `raw_tp/X`, `fentry/X`, `kprobe/X`,
//! `tracepoint/C/N`), named after the program in upper case: the C section
//! name is the one place that says so. TC and uprobe programs, whose
//! sections do not name their target, are left to the plugin's table.
//!
//! ```text
//! mod programs {
//!     include!(concat!(env!("OUT_DIR"), "/veth.bpf.programs.rs"));
//! }
//! static RECEIVE: [ProbeAlternative; 2] = [programs::VETH_RECEIVE_BTF, programs::VETH_RECEIVE_RAW];
//! ```

mod records;

use std::env;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Compilers tried in order unless `VNT_CLANG` names one.
const CLANGS: &[&str] = &["clang-19", "clang-18", "clang-17", "clang-16", "clang"];

/// Why a compile failed.
#[derive(Debug)]
pub enum BuildError {
    /// No usable clang on PATH.
    NoClang,
    /// The libbpf headers (`bpf/bpf_helpers.h`) are missing.
    NoLibbpfHeaders,
    /// The target architecture has no committed vmlinux.h.
    NoVmlinux(PathBuf),
    /// clang ran and failed.
    Compile {
        /// Source file.
        source: PathBuf,
        /// clang's stderr.
        stderr: String,
    },
    /// Anything else (I/O, missing env vars).
    Other(String),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::NoClang => write!(
                f,
                "no clang found (tried VNT_CLANG, {}); install the Debian package `clang-19` \
                 (or run scripts/install-deps.sh)",
                CLANGS.join(", ")
            ),
            BuildError::NoLibbpfHeaders => write!(
                f,
                "libbpf headers not found (/usr/include/bpf/bpf_helpers.h); install the Debian \
                 package `libbpf-dev` (or run scripts/install-deps.sh)"
            ),
            BuildError::NoVmlinux(p) => write!(
                f,
                "no vmlinux.h at {}; generate it with ebpf/vmlinux/gen.sh",
                p.display()
            ),
            BuildError::Compile { source, stderr } => {
                write!(f, "clang failed on {}:\n{stderr}", source.display())
            }
            BuildError::Other(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for BuildError {}

/// Directory of the shared C headers (`vnt/event.h`, `vnt/common.h`, `vnt/parse.h`, `vnt/pipeline.h`).
pub fn include_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("include")
}

fn find_clang() -> Result<String, BuildError> {
    if let Ok(c) = env::var("VNT_CLANG") {
        return Ok(c);
    }
    for c in CLANGS {
        if Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Ok((*c).to_string());
        }
    }
    Err(BuildError::NoClang)
}

fn bpf_arch(target_arch: &str) -> Result<(&'static str, &'static str), BuildError> {
    // (__TARGET_ARCH_ value, vmlinux directory)
    match target_arch {
        "x86_64" => Ok(("x86", "x86_64")),
        "aarch64" => Ok(("arm64", "aarch64")),
        other => Err(BuildError::Other(format!(
            "target architecture `{other}` has no eBPF build support yet"
        ))),
    }
}

/// Compile `source` (relative to the calling crate) to `$OUT_DIR/<stem>.o`
/// and tell cargo to rerun when it or the shared headers change.
pub fn compile(source: impl AsRef<Path>) -> Result<PathBuf, BuildError> {
    compile_with_records(source, &[])
}

/// [`compile`], and declare the plugin's own records in Rust: for each C
/// struct named in `records` (and the structs it contains), a
/// `#[repr(C)]` zerocopy struct in `$OUT_DIR/<stem>.records.rs`, generated
/// from the object's BTF with its size and every offset asserted. The C
/// is the one declaration:
///
/// ```text
/// // build.rs
/// vnt_ebpf::compile_with_records("bpf/tcpretrans.bpf.c", &["tcpretrans_event"])
/// // src/lib.rs
/// mod records { include!(concat!(env!("OUT_DIR"), "/tcpretrans.bpf.records.rs")); }
/// let (e, _) = records::TcpretransEvent::read_from_prefix(record)?;
/// ```
pub fn compile_with_records(
    source: impl AsRef<Path>,
    records: &[&str],
) -> Result<PathBuf, BuildError> {
    let manifest = env::var("CARGO_MANIFEST_DIR").map_err(|e| BuildError::Other(e.to_string()))?;
    let out_dir = env::var("OUT_DIR").map_err(|e| BuildError::Other(e.to_string()))?;
    let target_arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    let source = Path::new(&manifest).join(source.as_ref());
    let stem = source
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".c"))
        .ok_or_else(|| BuildError::Other(format!("{} is not a .c file", source.display())))?;
    let out = Path::new(&out_dir).join(format!("{stem}.o"));
    let (arch_define, vmlinux_dir) = bpf_arch(&target_arch)?;
    let ebpf_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let vmlinux = ebpf_dir.join("vmlinux").join(vmlinux_dir);
    if !vmlinux.join("vmlinux.h").exists() {
        return Err(BuildError::NoVmlinux(vmlinux.join("vmlinux.h")));
    }
    let libbpf_inc = env::var("VNT_LIBBPF_INCLUDE").unwrap_or_else(|_| "/usr/include".into());
    if !Path::new(&libbpf_inc).join("bpf/bpf_helpers.h").exists() {
        return Err(BuildError::NoLibbpfHeaders);
    }
    let clang = find_clang()?;

    println!("cargo:rerun-if-changed={}", source.display());
    println!("cargo:rerun-if-changed={}", include_dir().display());
    println!("cargo:rerun-if-env-changed=VNT_CLANG");

    let output = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-D__TARGET_ARCH_{arch_define}"))
        .arg("-I")
        .arg(&vmlinux)
        .arg("-I")
        .arg(include_dir())
        .arg("-I")
        .arg(&libbpf_inc)
        .arg("-c")
        .arg(&source)
        .arg("-o")
        .arg(&out)
        .output()
        .map_err(|e| BuildError::Other(format!("failed to run {clang}: {e}")))?;
    if !output.status.success() {
        return Err(BuildError::Compile {
            source,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    let object = std::fs::read(&out)
        .map_err(|e| BuildError::Other(format!("cannot read {}: {e}", out.display())))?;
    let programs = programs_rs(&object)?;
    let programs_out = Path::new(&out_dir).join(format!("{stem}.programs.rs"));
    std::fs::write(&programs_out, programs)
        .map_err(|e| BuildError::Other(format!("cannot write {}: {e}", programs_out.display())))?;
    if !records.is_empty() {
        let rs = records::records_rs(&btf_section(&object)?, records)
            .map_err(|e| BuildError::Other(format!("{}: {e}", source.display())))?;
        let records_out = Path::new(&out_dir).join(format!("{stem}.records.rs"));
        std::fs::write(&records_out, rs).map_err(|e| {
            BuildError::Other(format!("cannot write {}: {e}", records_out.display()))
        })?;
    }
    Ok(out)
}

/// The `.BTF` section of a compiled object.
fn btf_section(object: &[u8]) -> Result<Vec<u8>, BuildError> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(object)
        .map_err(|e| BuildError::Other(format!("the compiled object is not ELF: {e}")))?;
    let section = file
        .section_by_name(".BTF")
        .ok_or_else(|| BuildError::Other("the compiled object has no .BTF section".into()))?;
    section
        .data()
        .map(<[u8]>::to_vec)
        .map_err(|e| BuildError::Other(format!(".BTF unreadable: {e}")))
}

/// Hook kind (a `vnt_plugin_api::HookKind` variant) and target of a program
/// in ELF section `section`, when the section name says both.
pub fn kind_and_target(section: &str) -> Option<(&'static str, String)> {
    let (prefix, rest) = section.split_once('/')?;
    if rest.is_empty() {
        return None;
    }
    Some(match prefix {
        "tp_btf" => ("TpBtf", rest.to_string()),
        "raw_tp" | "raw_tracepoint" => ("RawTp", rest.to_string()),
        "fentry" => ("FEntry", rest.to_string()),
        "kprobe" => ("KProbe", rest.to_string()),
        "tracepoint" => ("TracePoint", rest.replacen('/', ":", 1)),
        _ => return None,
    })
}

/// The Rust source declaring a `ProbeAlternative` per program of `object`
/// whose section names its hook.
pub fn programs_rs(object: &[u8]) -> Result<String, BuildError> {
    use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};
    let file = object::File::parse(object)
        .map_err(|e| BuildError::Other(format!("the compiled object is not ELF: {e}")))?;
    let mut programs: Vec<(String, &'static str, String, String)> = Vec::new();
    for sym in file.symbols() {
        if sym.kind() != SymbolKind::Text {
            continue;
        }
        let (Ok(name), Some(index)) = (sym.name(), sym.section_index()) else {
            continue;
        };
        let Ok(section) = file.section_by_index(index) else {
            continue;
        };
        let Ok(section_name) = section.name() else {
            continue;
        };
        if let Some((kind, target)) = kind_and_target(section_name) {
            programs.push((name.to_string(), kind, target, section_name.to_string()));
        }
    }
    programs.sort();
    let mut rs = String::from(
        "// Generated by vnt_ebpf::compile from the object's ELF sections. Do not edit.\n",
    );
    for (name, kind, target, section) in programs {
        rs.push_str(&format!(
            "/// Program `{name}`, section `{section}`.\n\
             #[allow(dead_code)]\n\
             pub const {}: ::vnt_plugin_api::ProbeAlternative = ::vnt_plugin_api::ProbeAlternative {{ \
             kind: ::vnt_plugin_api::HookKind::{kind}, program: {name:?}, target: {target:?} }};\n",
            name.to_uppercase()
        ));
    }
    Ok(rs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_name_kind_and_target() {
        assert_eq!(
            kind_and_target("tp_btf/netif_rx"),
            Some(("TpBtf", "netif_rx".into()))
        );
        assert_eq!(
            kind_and_target("raw_tp/kfree_skb"),
            Some(("RawTp", "kfree_skb".into()))
        );
        assert_eq!(
            kind_and_target("tracepoint/net/netif_rx"),
            Some(("TracePoint", "net:netif_rx".into()))
        );
        assert_eq!(
            kind_and_target("kprobe/veth_xmit"),
            Some(("KProbe", "veth_xmit".into()))
        );
        assert_eq!(kind_and_target("tc"), None);
        assert_eq!(kind_and_target("license"), None);
        assert_eq!(kind_and_target(".text"), None);
    }
}

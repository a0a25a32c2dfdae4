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
    Ok(out)
}

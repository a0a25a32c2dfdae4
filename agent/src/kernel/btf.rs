//! The running kernel's BTF, read from disk once per start.
//!
//! aya needs the whole type graph to relocate and attach programs (CO-RE,
//! tp_btf, fentry); the agent itself needs only a few enums by name (the
//! drop reasons, `bpf_attach_type` for `check`). Parsing the file a second
//! time with another BTF library for those cost more start-up time than
//! loading and verifying every program, and its type tables raised the peak
//! resident set by ~15 MiB (BENCHMARKS.md, "Start-up"). So the file is read
//! into memory once, aya parses that buffer, and the enums are found by a
//! linear walk over the same bytes that allocates nothing but the result.
//!
//! Format: `include/uapi/linux/btf.h` and Documentation/bpf/btf.rst.

use std::path::Path;

use aya::{Btf, Endianness};

/// Where the kernel publishes its own BTF.
pub const SYS_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The kernel's BTF: aya's parse of it, and the raw bytes for enum lookups.
/// Drop it once the programs are attached; nothing needs it afterwards.
pub struct KernelBtf {
    btf: Btf,
    raw: Vec<u8>,
}

impl std::fmt::Debug for KernelBtf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelBtf")
            .field("bytes", &self.raw.len())
            .finish()
    }
}

impl KernelBtf {
    /// The running kernel's BTF, from `--btf` or `/sys/kernel/btf/vmlinux`.
    pub fn read(path: Option<&Path>) -> Result<KernelBtf, String> {
        let (p, what) = match path {
            Some(p) => (p, format!("cannot read BTF from {} (--btf)", p.display())),
            None if !Path::new(SYS_BTF).exists() => {
                return Err(format!(
                    "this kernel publishes no BTF ({SYS_BTF} is missing: it was built without \
                     CONFIG_DEBUG_INFO_BTF=y) and no --btf PATH was given; pass the kernel's BTF \
                     with --btf (e.g. from the distribution's debug package, or \
                     `pahole --btf_encode_detached FILE vmlinux`)"
                ))
            }
            None => (
                Path::new(SYS_BTF),
                format!("cannot read kernel BTF from {SYS_BTF}"),
            ),
        };
        let raw = std::fs::read(p).map_err(|e| format!("{what}: {e}"))?;
        let btf = Btf::parse(&raw, Endianness::default())
            .map_err(|e| format!("{what}: {}", crate::probes::describe(&e)))?;
        Ok(KernelBtf { btf, raw })
    }

    /// aya's parsed BTF, for loading and attaching programs.
    pub fn aya(&self) -> &Btf {
        &self.btf
    }

    /// The members (name, value) of every `enum NAME` (or 64-bit enum), in
    /// declaration order.
    pub fn enum_members(&self, name: &str) -> Result<Vec<(String, u64)>, String> {
        enum_members(&self.raw, name)
    }
}

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;

/// `BTF_KIND_*`.
mod kind {
    pub const INT: u32 = 1;
    pub const ARRAY: u32 = 3;
    pub const STRUCT: u32 = 4;
    pub const UNION: u32 = 5;
    pub const ENUM: u32 = 6;
    pub const FUNC_PROTO: u32 = 13;
    pub const VAR: u32 = 14;
    pub const DATASEC: u32 = 15;
    pub const DECL_TAG: u32 = 17;
    pub const ENUM64: u32 = 19;
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

/// The NUL-terminated string at `off` of the string section.
fn str_at(strings: &[u8], off: u32) -> Option<&[u8]> {
    let s = strings.get(off as usize..)?;
    Some(&s[..s.iter().position(|&b| b == 0)?])
}

/// Bytes that follow `struct btf_type` for a type of `kind` with `vlen` members.
fn trailing_len(kind: u32, vlen: usize) -> Result<usize, String> {
    Ok(match kind {
        kind::INT | kind::VAR | kind::DECL_TAG => 4,
        kind::ARRAY => 12,
        kind::STRUCT | kind::UNION | kind::DATASEC | kind::ENUM64 => 12 * vlen,
        kind::ENUM | kind::FUNC_PROTO => 8 * vlen,
        // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
        2 | 7..=12 | 16 | 18 => 0,
        k => return Err(format!("unknown BTF kind {k}")),
    })
}

/// Walk the type section of raw BTF for enums named `name`.
fn enum_members(raw: &[u8], name: &str) -> Result<Vec<(String, u64)>, String> {
    let bad = |what: &str| format!("malformed BTF: {what}");
    if raw.len() < HEADER_LEN {
        return Err(bad("shorter than its header"));
    }
    let magic = u16::from_ne_bytes([raw[0], raw[1]]);
    if magic != MAGIC {
        return Err(bad(&format!(
            "magic {magic:#06x}, expected {MAGIC:#06x} (native byte order)"
        )));
    }
    let field = |i: usize| u32_at(raw, 4 + 4 * i).map(|v| v as usize);
    let (hdr_len, type_off, type_len, str_off, str_len) = (
        field(0).ok_or_else(|| bad("header"))?,
        field(1).ok_or_else(|| bad("header"))?,
        field(2).ok_or_else(|| bad("header"))?,
        field(3).ok_or_else(|| bad("header"))?,
        field(4).ok_or_else(|| bad("header"))?,
    );
    let types = raw
        .get(hdr_len + type_off..hdr_len + type_off + type_len)
        .ok_or_else(|| bad("type section out of bounds"))?;
    let strings = raw
        .get(hdr_len + str_off..hdr_len + str_off + str_len)
        .ok_or_else(|| bad("string section out of bounds"))?;
    let wanted = name.as_bytes();
    let mut out = Vec::new();
    let mut off = 0;
    while off < types.len() {
        let (name_off, info) = u32_at(types, off)
            .zip(u32_at(types, off + 4))
            .ok_or_else(|| bad("truncated type"))?;
        let (k, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
        let members = off + 12;
        let next = members + trailing_len(k, vlen)?;
        if next > types.len() {
            return Err(bad("truncated type"));
        }
        if (k == kind::ENUM || k == kind::ENUM64) && str_at(strings, name_off) == Some(wanted) {
            let size = if k == kind::ENUM { 8 } else { 12 };
            for m in types[members..next].chunks_exact(size) {
                let name = str_at(strings, u32_at(m, 0).unwrap_or(0))
                    .ok_or_else(|| bad("enum member name out of bounds"))?;
                let lo = u64::from(u32_at(m, 4).unwrap_or(0));
                let value = if k == kind::ENUM {
                    lo
                } else {
                    lo | u64::from(u32_at(m, 8).unwrap_or(0)) << 32
                };
                out.push((String::from_utf8_lossy(name).into_owned(), value));
            }
        }
        off = next;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Raw BTF with the given types (already encoded) and strings.
    fn btf(types: &[u8], strings: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&MAGIC.to_ne_bytes());
        b.extend_from_slice(&[1, 0]);
        for v in [HEADER_LEN as u32, 0, types.len() as u32, types.len() as u32] {
            b.extend_from_slice(&v.to_ne_bytes());
        }
        b.extend_from_slice(&(strings.len() as u32).to_ne_bytes());
        b.extend_from_slice(types);
        b.extend_from_slice(strings);
        b
    }

    fn words(w: &[u32]) -> Vec<u8> {
        w.iter().flat_map(|v| v.to_ne_bytes()).collect()
    }

    #[test]
    fn enums_are_found_by_name_past_other_kinds() {
        // strings: 0 "", 1 "e", 3 "A", 5 "B", 7 "s", 9 "x"
        let strings = b"\0e\0A\0B\0s\0x\0";
        let mut t = vec![];
        // struct s { int x; } (one member), then an int, then enum e { A = 1, B = -1 },
        // then a 64-bit enum e { A = 1 << 40 }.
        t.extend(words(&[7, (kind::STRUCT << 24) | 1, 4, 9, 2, 0]));
        t.extend(words(&[0, kind::INT << 24, 4, 32]));
        t.extend(words(&[1, (kind::ENUM << 24) | 2, 4, 3, 1, 5, u32::MAX]));
        t.extend(words(&[1, (kind::ENUM64 << 24) | 1, 8, 3, 0, 1 << 8]));
        let raw = btf(&t, strings);
        assert_eq!(
            enum_members(&raw, "e").unwrap(),
            [
                ("A".to_string(), 1),
                ("B".to_string(), u64::from(u32::MAX)),
                ("A".to_string(), 1 << 40),
            ]
        );
        assert_eq!(enum_members(&raw, "s").unwrap(), []);
    }

    #[test]
    fn truncated_and_foreign_data_are_errors_not_panics() {
        let raw = btf(&words(&[1, (kind::ENUM << 24) | 5, 4, 3, 1]), b"\0e\0A\0");
        assert!(enum_members(&raw, "e").unwrap_err().contains("truncated"));
        assert!(enum_members(&raw[..10], "e").is_err());
        let mut swapped = raw.clone();
        swapped.swap(0, 1);
        assert!(enum_members(&swapped, "e").unwrap_err().contains("magic"));
        let unknown = btf(&words(&[0, 31 << 24, 0]), b"\0");
        assert!(enum_members(&unknown, "e").unwrap_err().contains("kind 31"));
    }

    #[test]
    fn the_running_kernel_has_its_drop_reasons() {
        // vnt requires kernel BTF; a machine without it fails here, loudly.
        let btf = KernelBtf::read(None).unwrap();
        let m = btf.enum_members("skb_drop_reason").unwrap();
        assert!(m
            .iter()
            .any(|(n, v)| n == "SKB_DROP_REASON_NOT_SPECIFIED" && *v == 2));
        let attach = btf.enum_members("bpf_attach_type").unwrap();
        assert!(attach.iter().any(|(n, _)| n == "BPF_CGROUP_INET_INGRESS"));
    }

    #[test]
    fn missing_btf_file_is_named() {
        let e = KernelBtf::read(Some(Path::new("/nonexistent/vmlinux"))).unwrap_err();
        assert!(
            e.contains("/nonexistent/vmlinux") && e.contains("--btf"),
            "{e}"
        );
    }
}

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

/// Where the kernel publishes each loaded module's BTF (`/sys/kernel/btf/<module>`).
pub const SYS_BTF_DIR: &str = "/sys/kernel/btf";

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

    /// The members of `enum NAME` in the BTF of `module` (which refers to
    /// this BTF for its strings); `Ok(None)` when the module is not loaded.
    pub fn module_enum_members(
        &self,
        module: &str,
        name: &str,
    ) -> Result<Option<Vec<(String, u64)>>, String> {
        let path = Path::new(SYS_BTF_DIR).join(module);
        let Ok(split) = std::fs::read(&path) else {
            return Ok(None);
        };
        let merged = merge_split(&self.raw, &split)
            .map_err(|e| format!("BTF of module `{module}` ({}): {e}", path.display()))?;
        enum_members(&merged, name).map(Some)
    }

    /// This BTF with the BTF of each of `modules` that is loaded appended
    /// (see [`merge_split`]): what CO-RE relocations against module types
    /// and module enums need. Modules that are not loaded are returned apart.
    pub fn with_modules(&self, modules: &[String]) -> Result<(KernelBtf, Vec<String>), String> {
        let mut raw = self.raw.clone();
        let mut missing = Vec::new();
        for m in modules {
            let path = Path::new(SYS_BTF_DIR).join(m);
            match std::fs::read(&path) {
                Ok(split) => {
                    raw = merge_split(&raw, &split)
                        .map_err(|e| format!("BTF of module `{m}` ({}): {e}", path.display()))?
                }
                Err(_) => missing.push(m.clone()),
            }
        }
        let btf = Btf::parse(&raw, Endianness::default())
            .map_err(|e| format!("merged module BTF: {}", crate::probes::describe(&e)))?;
        Ok((KernelBtf { btf, raw }, missing))
    }
}

/// The header fields of raw BTF: (hdr_len, type_off, type_len, str_off, str_len).
fn header(raw: &[u8]) -> Result<[usize; 5], String> {
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
    let mut h = [0usize; 5];
    for (i, v) in h.iter_mut().enumerate() {
        *v = u32_at(raw, 4 + 4 * i).ok_or_else(|| bad("header"))? as usize;
    }
    let [hdr_len, type_off, type_len, str_off, str_len] = h;
    if raw.len() < hdr_len + type_off + type_len || raw.len() < hdr_len + str_off + str_len {
        return Err(bad("sections out of bounds"));
    }
    Ok(h)
}

/// One standalone BTF from a base (vmlinux) and a split BTF built on it (a
/// module's `/sys/kernel/btf/<module>`).
///
/// Split BTF numbers its types from the base's last id + 1 and refers to
/// base types by their ids; its string offsets start at the base's string
/// section length (offsets below point into the base's strings). So the base's
/// types followed by the split's, and the base's strings followed by the
/// split's, are a valid BTF in which every id and offset of both keeps its
/// meaning. aya (which reads one BTF without a base) can then relocate CO-RE
/// reads of module types, and enum lookups see module enums.
pub fn merge_split(base: &[u8], split: &[u8]) -> Result<Vec<u8>, String> {
    let [bh, bto, btl, bso, bsl] = header(base)?;
    let [sh, sto, stl, sso, ssl] = header(split)?;
    let mut out = Vec::with_capacity(HEADER_LEN + btl + stl + bsl + ssl);
    out.extend_from_slice(&base[..8]); // magic, version, flags, hdr_len
    out[4..8].copy_from_slice(&(HEADER_LEN as u32).to_ne_bytes());
    let type_len = btl + stl;
    for v in [0, type_len, type_len, bsl + ssl] {
        let v = u32::try_from(v).map_err(|_| "merged BTF larger than 4 GiB".to_string())?;
        out.extend_from_slice(&v.to_ne_bytes());
    }
    out.extend_from_slice(&base[bh + bto..bh + bto + btl]);
    out.extend_from_slice(&split[sh + sto..sh + sto + stl]);
    out.extend_from_slice(&base[bh + bso..bh + bso + bsl]);
    out.extend_from_slice(&split[sh + sso..sh + sso + ssl]);
    Ok(out)
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
    let [hdr_len, type_off, type_len, str_off, str_len] = header(raw)?;
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
    fn a_split_btf_merged_onto_its_base_keeps_ids_and_offsets() {
        // base: strings "\0int\0", one INT (id 1). split: strings "\0m\0"
        // at base offset 5, one enum `m` (id 2) of one member named `int` (a
        // base string) = 7, and a pointer to the base's int.
        let base = btf(&words(&[1, kind::INT << 24, 4, 32]), b"\0int\0");
        let mut split_types = words(&[5 + 1, (kind::ENUM << 24) | 1, 4, 1, 7]);
        split_types.extend(words(&[0, 2 << 24, 1]));
        let split = btf(&split_types, b"\0m\0");
        let merged = merge_split(&base, &split).unwrap();
        assert_eq!(
            enum_members(&merged, "m").unwrap(),
            [("int".to_string(), 7)]
        );
        let [_, _, type_len, _, str_len] = header(&merged).unwrap();
        assert_eq!((type_len, str_len), (16 + 20 + 12, 5 + 3));
        assert!(merge_split(&base, &split[..10]).is_err());
    }

    #[test]
    fn the_running_kernel_merges_with_its_modules_btf() {
        let btf = KernelBtf::read(None).unwrap();
        let (merged, missing) = btf
            .with_modules(&["vnt_no_such_module".to_string()])
            .unwrap();
        assert_eq!(missing, ["vnt_no_such_module"]);
        assert!(!merged.enum_members("skb_drop_reason").unwrap().is_empty());
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

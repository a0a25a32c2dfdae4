//! A plugin's own records, declared once, in C: the Rust mirror is
//! generated from the compiled object's BTF (the layout clang actually
//! produced), with every field's offset and the size asserted at compile
//! time. No hand-kept copy of a C struct can drift from it.
//!
//! Only what records need is supported: integers, arrays of them, nested
//! structs, typedefs and qualifiers. A pointer, union, bitfield or float in
//! a requested struct is a build error naming it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

const BTF_MAGIC: u16 = 0xeb9f;

#[derive(Debug, Clone)]
enum Ty {
    Int {
        size: u32,
        signed: bool,
    },
    Array {
        elem: u32,
        len: u32,
    },
    Struct {
        name: String,
        size: u32,
        members: Vec<Member>,
    },
    Alias(u32),
    Other(&'static str),
}

#[derive(Debug, Clone)]
struct Member {
    name: String,
    ty: u32,
    bit_offset: u32,
    bitfield: bool,
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, String> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| format!("BTF truncated at byte {off}"))
}

fn name_at(strings: &[u8], off: u32) -> Result<String, String> {
    let rest = strings
        .get(off as usize..)
        .ok_or_else(|| format!("BTF string offset {off} out of range"))?;
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    String::from_utf8(rest[..end].to_vec()).map_err(|e| e.to_string())
}

/// Parse the `.BTF` section (little-endian, as clang writes for bpfel).
fn parse(btf: &[u8]) -> Result<Vec<Ty>, String> {
    if btf.len() < 24 || u16::from_le_bytes([btf[0], btf[1]]) != BTF_MAGIC {
        return Err("no little-endian BTF in the object (compile with -g)".into());
    }
    let hdr_len = u32_at(btf, 4)? as usize;
    let (type_off, type_len) = (u32_at(btf, 8)? as usize, u32_at(btf, 12)? as usize);
    let (str_off, str_len) = (u32_at(btf, 16)? as usize, u32_at(btf, 20)? as usize);
    let types = btf
        .get(hdr_len + type_off..hdr_len + type_off + type_len)
        .ok_or("BTF type section out of range")?;
    let strings = btf
        .get(hdr_len + str_off..hdr_len + str_off + str_len)
        .ok_or("BTF string section out of range")?;
    // Type id 0 is void.
    let mut out = vec![Ty::Other("void")];
    let mut at = 0;
    while at < types.len() {
        let name_off = u32_at(types, at)?;
        let info = u32_at(types, at + 4)?;
        let size_or_type = u32_at(types, at + 8)?;
        let vlen = (info & 0xffff) as usize;
        let kind = (info >> 24) & 0x1f;
        let kind_flag = info >> 31 == 1;
        at += 12;
        let ty = match kind {
            1 => {
                let enc = u32_at(types, at)?;
                at += 4;
                Ty::Int {
                    size: size_or_type,
                    signed: (enc >> 24) & 1 == 1,
                }
            }
            2 => Ty::Other("pointer"),
            3 => {
                let elem = u32_at(types, at)?;
                let len = u32_at(types, at + 8)?;
                at += 12;
                Ty::Array { elem, len }
            }
            4 | 5 => {
                let mut members = Vec::with_capacity(vlen);
                for i in 0..vlen {
                    let m = at + i * 12;
                    let off = u32_at(types, m + 8)?;
                    members.push(Member {
                        name: name_at(strings, u32_at(types, m)?)?,
                        ty: u32_at(types, m + 4)?,
                        bit_offset: if kind_flag { off & 0xff_ffff } else { off },
                        bitfield: kind_flag && off >> 24 != 0,
                    });
                }
                at += vlen * 12;
                if kind == 5 {
                    Ty::Other("union")
                } else {
                    Ty::Struct {
                        name: name_at(strings, name_off)?,
                        size: size_or_type,
                        members,
                    }
                }
            }
            6 => {
                at += vlen * 8;
                Ty::Other("enum")
            }
            19 => {
                at += vlen * 12;
                Ty::Other("enum")
            }
            7 => Ty::Other("forward declaration"),
            8..=11 | 18 => Ty::Alias(size_or_type),
            12 => Ty::Other("function"),
            13 => {
                at += vlen * 8;
                Ty::Other("function prototype")
            }
            14 | 17 => {
                at += 4;
                Ty::Other("variable")
            }
            15 => {
                at += vlen * 12;
                Ty::Other("data section")
            }
            16 => Ty::Other("float"),
            k => return Err(format!("unknown BTF kind {k}")),
        };
        out.push(ty);
    }
    Ok(out)
}

/// A C member name as a Rust field name (`in` -> `r#in`).
fn ident(name: &str) -> String {
    const KEYWORDS: &[&str] = &[
        "as", "break", "const", "continue", "crate", "else", "enum", "extern", "false", "fn",
        "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref",
        "return", "self", "static", "struct", "super", "trait", "true", "type", "unsafe", "use",
        "where", "while", "async", "await", "dyn", "abstract", "become", "box", "do", "final",
        "macro", "override", "priv", "typeof", "unsized", "virtual", "yield", "try", "gen",
    ];
    if KEYWORDS.contains(&name) {
        format!("r#{name}")
    } else {
        name.to_string()
    }
}

/// `tcpretrans_event` -> `TcpretransEvent`.
pub fn rust_name(c: &str) -> String {
    c.split('_')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut cs = p.chars();
            cs.next()
                .map(|f| f.to_ascii_uppercase().to_string() + cs.as_str())
                .unwrap_or_default()
        })
        .collect()
}

struct Gen<'a> {
    types: &'a [Ty],
    done: BTreeMap<String, String>,
}

impl Gen<'_> {
    fn resolve(&self, mut id: u32) -> Result<&Ty, String> {
        for _ in 0..32 {
            match self.types.get(id as usize) {
                Some(Ty::Alias(t)) => id = *t,
                Some(t) => return Ok(t),
                None => return Err(format!("BTF type id {id} out of range")),
            }
        }
        Err("BTF typedef chain too long".into())
    }

    fn size_of(&self, id: u32) -> Result<u32, String> {
        Ok(match self.resolve(id)? {
            Ty::Int { size, .. } => *size,
            Ty::Array { elem, len } => self.size_of(*elem)? * len,
            Ty::Struct { size, .. } => *size,
            Ty::Alias(_) => unreachable!(),
            Ty::Other(what) => return Err(format!("a {what} has no record size")),
        })
    }

    /// The Rust type of BTF type `id`, generating nested structs.
    fn rust_type(&mut self, id: u32, path: &str) -> Result<String, String> {
        let ty = self.resolve(id)?.clone();
        Ok(match ty {
            Ty::Int { size, signed } => {
                let bits = match size {
                    1 | 2 | 4 | 8 => size * 8,
                    n => return Err(format!("{path}: a {n}-byte integer")),
                };
                format!("{}{bits}", if signed && size > 1 { "i" } else { "u" })
            }
            Ty::Array { elem, len } => format!("[{}; {len}]", self.rust_type(elem, path)?),
            Ty::Struct { name, .. } => {
                if name.is_empty() {
                    return Err(format!("{path}: an anonymous struct; name it"));
                }
                self.record(&name)?;
                rust_name(&name)
            }
            Ty::Alias(_) => unreachable!(),
            Ty::Other(what) => {
                return Err(format!(
                    "{path} is a {what}: a record holds only integers, arrays and structs"
                ))
            }
        })
    }

    /// Generate struct `name` (and what it contains) once.
    fn record(&mut self, name: &str) -> Result<(), String> {
        if self.done.contains_key(name) {
            return Ok(());
        }
        let (size, members) = self
            .types
            .iter()
            .find_map(|t| match t {
                Ty::Struct {
                    name: n,
                    size,
                    members,
                } if n == name => Some((*size, members.clone())),
                _ => None,
            })
            .ok_or_else(|| {
                format!(
                    "struct {name} is not in the object's BTF: declare it in the C and use it \
                     (a record the program writes is)"
                )
            })?;
        self.done.insert(name.to_string(), String::new());
        let rs = rust_name(name);
        let mut fields = String::new();
        let mut asserts = String::new();
        let mut at = 0u32;
        let mut pad = 0;
        for m in &members {
            let path = format!("struct {name}.{}", m.name);
            if m.bitfield || m.bit_offset % 8 != 0 {
                return Err(format!("{path} is a bitfield: use whole integers"));
            }
            let off = m.bit_offset / 8;
            if off > at {
                let _ = writeln!(fields, "    pub _pad_{pad}: [u8; {}],", off - at);
                pad += 1;
            }
            let ty = self.rust_type(m.ty, &path)?;
            let field = if m.name.is_empty() {
                return Err(format!("{path}: an anonymous member; name it"));
            } else {
                ident(&m.name)
            };
            let _ = writeln!(fields, "    pub {field}: {ty},");
            let _ = writeln!(
                asserts,
                "    assert!(::core::mem::offset_of!({rs}, {field}) == {off});"
            );
            at = off + self.size_of(m.ty)?;
        }
        if size > at {
            let _ = writeln!(fields, "    pub _pad_{pad}: [u8; {}],", size - at);
        }
        let code = format!(
            "/// `struct {name}` of the C, {size} bytes, generated from the object's BTF.\n\
             #[repr(C)]\n\
             #[derive(Debug, Clone, Copy, ::vnt_plugin_api::zerocopy::FromBytes, \
             ::vnt_plugin_api::zerocopy::KnownLayout, ::vnt_plugin_api::zerocopy::Immutable)]\n\
             #[zerocopy(crate = \"::vnt_plugin_api::zerocopy\")]\n\
             pub struct {rs} {{\n{fields}}}\n\
             const _: () = {{\n    assert!(::core::mem::size_of::<{rs}>() == {size});\n{asserts}}};\n"
        );
        self.done.insert(name.to_string(), code);
        Ok(())
    }
}

/// Rust source declaring `structs` (C names) of the `.BTF` section `btf`
/// and every struct they contain.
pub fn records_rs(btf: &[u8], structs: &[&str]) -> Result<String, String> {
    let types = parse(btf)?;
    let mut g = Gen {
        types: &types,
        done: BTreeMap::new(),
    };
    for s in structs {
        g.record(s)?;
    }
    let mut out = String::from("// Generated by vnt_ebpf from the object's BTF. Do not edit.\n");
    for code in g.done.values() {
        out.push_str(code);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BTF of: struct inner { unsigned char a; }; typedef unsigned int u32;
    /// struct rec { u32 x; struct inner in; unsigned short y[3]; } (size 16).
    fn sample() -> Vec<u8> {
        let strings = b"\0inner\0a\0u32\0rec\0x\0in\0y\0uchar\0uint\0ushort\0".to_vec();
        let s = |name: &str| {
            let pos = strings
                .windows(name.len() + 2)
                .position(|w| {
                    w[0] == 0 && &w[1..=name.len()] == name.as_bytes() && w[name.len() + 1] == 0
                })
                .unwrap();
            (pos + 1) as u32
        };
        let mut t: Vec<u32> = Vec::new();
        // 1: int uchar, 1 byte
        t.extend([s("uchar"), 1 << 24, 1, 8]);
        // 2: int uint, 4 bytes
        t.extend([s("uint"), 1 << 24, 4, 32]);
        // 3: int ushort, 2 bytes
        t.extend([s("ushort"), 1 << 24, 2, 16]);
        // 4: struct inner { uchar a @0 } size 1
        t.extend([s("inner"), (4 << 24) | 1, 1, s("a"), 1, 0]);
        // 5: typedef u32 -> 2
        t.extend([s("u32"), 8 << 24, 2]);
        // 6: array of ushort x3
        t.extend([0, 3 << 24, 0, 3, 2, 3]);
        // 7: struct rec { u32 x @0; inner in @32; ushort y[3] @64 } size 16
        t.extend([
            s("rec"),
            (4 << 24) | 3,
            16,
            s("x"),
            5,
            0,
            s("in"),
            4,
            32,
            s("y"),
            6,
            64,
        ]);
        let types: Vec<u8> = t.iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut b = Vec::new();
        b.extend(BTF_MAGIC.to_le_bytes());
        b.extend([1u8, 0]);
        for w in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            b.extend(w.to_le_bytes());
        }
        b.extend(types);
        b.extend(strings);
        b
    }

    #[test]
    fn structs_become_rust_with_padding_and_asserts() {
        let rs = records_rs(&sample(), &["rec"]).unwrap();
        assert!(rs.contains("pub struct Rec {"), "{rs}");
        assert!(rs.contains("pub x: u32,"), "{rs}");
        assert!(rs.contains("pub r#in: Inner,"), "{rs}");
        assert!(rs.contains("pub _pad_0: [u8; 3],"), "{rs}");
        assert!(rs.contains("pub y: [u16; 3],"), "{rs}");
        assert!(rs.contains("pub _pad_1: [u8; 2],"), "{rs}");
        assert!(rs.contains("size_of::<Rec>() == 16"), "{rs}");
        assert!(rs.contains("offset_of!(Rec, y) == 8"), "{rs}");
        assert!(rs.contains("pub struct Inner {"), "{rs}");
    }

    #[test]
    fn missing_structs_and_bad_data_are_errors() {
        let err = records_rs(&sample(), &["nope"]).unwrap_err();
        assert!(
            err.contains("struct nope is not in the object's BTF"),
            "{err}"
        );
        assert!(records_rs(b"junk", &["rec"]).is_err());
        assert_eq!(rust_name("tcpretrans_event"), "TcpretransEvent");
    }
}

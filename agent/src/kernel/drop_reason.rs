//! Names of `enum skb_drop_reason` values, read from the kernel's own BTF so
//! they match the running kernel (the values move between versions).

use std::collections::HashMap;
use std::path::Path;

use btf_rs::{Btf, Type};

const PREFIX: &str = "SKB_DROP_REASON_";

/// Value -> name (`NETFILTER_DROP`).
#[derive(Debug, Clone, Default)]
pub struct DropReasons {
    names: HashMap<u32, String>,
}

impl DropReasons {
    /// Read the enum from a BTF file (usually /sys/kernel/btf/vmlinux).
    pub fn from_btf(path: &Path) -> Result<DropReasons, String> {
        let btf = Btf::from_file(path)
            .map_err(|e| format!("cannot parse BTF {}: {e}", path.display()))?;
        let types = btf
            .resolve_types_by_name("skb_drop_reason")
            .map_err(|e| format!("no `enum skb_drop_reason` in {}: {e}", path.display()))?;
        let mut names = HashMap::new();
        for t in types {
            if let Type::Enum(e) = t {
                for m in &e.members {
                    if let Ok(name) = btf.resolve_name(m) {
                        let short = name.strip_prefix(PREFIX).unwrap_or(&name);
                        let short = match short {
                            "SKB_NOT_DROPPED_YET" => "NOT_DROPPED_YET",
                            "SKB_CONSUMED" => "CONSUMED",
                            s => s,
                        };
                        names.insert(m.val(), short.to_string());
                    }
                }
            }
        }
        if names.is_empty() {
            return Err(format!(
                "`enum skb_drop_reason` in {} has no members",
                path.display()
            ));
        }
        Ok(DropReasons { names })
    }

    /// From a fixed table (tests).
    pub fn from_pairs(pairs: &[(u32, &str)]) -> DropReasons {
        DropReasons {
            names: pairs.iter().map(|(v, n)| (*v, n.to_string())).collect(),
        }
    }

    /// The name of `value`, or `UNKNOWN_<n>` when this kernel does not list it.
    pub fn name(&self, value: u32) -> String {
        self.names
            .get(&value)
            .cloned()
            .unwrap_or_else(|| format!("UNKNOWN_{value}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_running_kernel() {
        // vnt requires kernel BTF; a machine without it fails here, loudly.
        let path = Path::new("/sys/kernel/btf/vmlinux");
        let r = DropReasons::from_btf(path).unwrap();
        assert_eq!(r.name(2), "NOT_SPECIFIED");
        assert!(r.names.values().any(|n| n == "NETFILTER_DROP"));
    }

    #[test]
    fn unknown_values_are_named_by_number() {
        let r = DropReasons::from_pairs(&[(2, "NOT_SPECIFIED")]);
        assert_eq!(r.name(9999), "UNKNOWN_9999");
    }
}

//! Names of `enum skb_drop_reason` values, read from the kernel's own BTF so
//! they match the running kernel (the values move between versions).

use std::collections::HashMap;

use super::btf::KernelBtf;

const PREFIX: &str = "SKB_DROP_REASON_";

/// Drop-reason subsystems whose reasons live in a module's BTF, not vmlinux's:
/// (module, enum). Their values already carry the subsystem in their high
/// bits (`SKB_DROP_REASON_SUBSYS_SHIFT`), so they never clash with the core's.
const MODULE_REASONS: &[(&str, &str)] = &[("openvswitch", "ovs_drop_reason")];

/// Value -> name (`NETFILTER_DROP`).
#[derive(Debug, Clone, Default)]
pub struct DropReasons {
    names: HashMap<u32, String>,
    /// The names that came from module BTF.
    from_modules: Vec<String>,
}

impl DropReasons {
    /// Read `enum skb_drop_reason` from the kernel's BTF.
    pub fn from_btf(btf: &KernelBtf) -> Result<DropReasons, String> {
        let members = btf
            .enum_members("skb_drop_reason")
            .map_err(|e| format!("cannot read `enum skb_drop_reason` from the kernel BTF: {e}"))?;
        let mut names = HashMap::new();
        for (name, value) in members {
            let Ok(value) = u32::try_from(value) else {
                continue;
            };
            let short = name.strip_prefix(PREFIX).unwrap_or(&name);
            let short = match short {
                "SKB_NOT_DROPPED_YET" => "NOT_DROPPED_YET",
                "SKB_CONSUMED" => "CONSUMED",
                s => s,
            };
            names.insert(value, short.to_string());
        }
        if names.is_empty() {
            return Err(
                "the kernel BTF has no `enum skb_drop_reason` (or it has no members)".into(),
            );
        }
        let mut from_modules = Vec::new();
        for (module, enum_name) in MODULE_REASONS {
            match btf.module_enum_members(module, enum_name) {
                Ok(Some(members)) => {
                    let before = names.len();
                    for (name, value) in members {
                        // `__OVS_DROP_REASON` marks the subsystem's base, `OVS_DROP_MAX` its end.
                        if let (Ok(v), false) = (u32::try_from(value), name.starts_with("__")) {
                            if !name.ends_with("_MAX") {
                                from_modules.push(name.clone());
                                names.insert(v, name);
                            }
                        }
                    }
                    tracing::debug!(
                        module,
                        added = names.len() - before,
                        "drop reasons from module BTF"
                    );
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(module, error = %e, "cannot read the module's drop reasons")
                }
            }
        }
        from_modules.sort();
        Ok(DropReasons {
            names,
            from_modules,
        })
    }

    /// Names of the reasons a module's BTF added (`OVS_DROP_*`), sorted (`check`).
    pub fn from_modules(&self) -> &[String] {
        &self.from_modules
    }

    /// From a fixed table (tests).
    pub fn from_pairs(pairs: &[(u32, &str)]) -> DropReasons {
        DropReasons {
            names: pairs.iter().map(|(v, n)| (*v, n.to_string())).collect(),
            from_modules: vec![],
        }
    }

    /// The name of `value`, or `UNKNOWN_<n>` when this kernel does not list it.
    /// Codes of the reasons that mean "discarded by its socket's owner", not
    /// a network drop: `QUEUE_PURGE`, data that reached a socket and was
    /// freed unread when the socket closed (a TCP connection's close).
    pub fn benign(&self) -> Vec<u32> {
        const BENIGN: &[&str] = &["QUEUE_PURGE"];
        let mut codes: Vec<u32> = self
            .names
            .iter()
            .filter(|(_, n)| BENIGN.contains(&n.as_str()))
            .map(|(v, _)| *v)
            .collect();
        codes.sort_unstable();
        codes
    }

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
        let r = DropReasons::from_btf(&KernelBtf::read(None).unwrap()).unwrap();
        assert_eq!(r.name(2), "NOT_SPECIFIED");
        assert!(r.names.values().any(|n| n == "NETFILTER_DROP"));
    }

    #[test]
    fn unknown_values_are_named_by_number() {
        let r = DropReasons::from_pairs(&[(2, "NOT_SPECIFIED")]);
        assert_eq!(r.name(9999), "UNKNOWN_9999");
    }
}

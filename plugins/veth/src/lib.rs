//! veth: packets crossing veth pairs, bridges and container network
//! namespaces, and where they are dropped.
//!
//! Hooks (see `bpf/veth.bpf.c`): the device transmit
//! (`net:net_dev_start_xmit`), the peer queueing it to its backlog
//! (`net:netif_rx`), the stack or bridge taking it (`net:netif_receive_skb`),
//! drops with the kernel's reason (`skb:kfree_skb`), and the process reading
//! it from its socket (`skb:skb_copy_datagram_iovec`). Each has a tp_btf and
//! a raw_tp program; the transmit and the backlog hop also have fentry and
//! kprobe programs on the functions veth runs (`veth_xmit`, `__netif_rx`),
//! preferred because they fire for veth traffic only. The agent picks the
//! first alternative the kernel supports; every variant of a hook reports the
//! same hook id (docs/adr/005-hook-variants.md).

use std::borrow::Cow;

use vnt_plugin_api::{
    export_plugin, wire, Cardinality, DecodeError, FieldKind, FieldSpec, FieldValue, HookSpec,
    InitContext, LogLevel, Observation, Plugin, PluginError, PluginInfo, ProbeAlternative,
    ProbeSpec, Value,
};

static BPF_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/veth.bpf.o"));

/// Hook ids, as `enum veth_hook` in the C.
pub mod hook {
    /// `net:net_dev_start_xmit` (or `veth_xmit`, which runs right after it).
    pub const XMIT: u16 = 1;
    /// `net:netif_rx` (or `__netif_rx`, which it fires in).
    pub const RX: u16 = 2;
    /// `net:netif_receive_skb`.
    pub const RECEIVE: u16 = 3;
    /// `skb:kfree_skb`.
    pub const DROP: u16 = 4;
    /// `skb:skb_copy_datagram_iovec`: a process reads the packet.
    pub const DELIVER: u16 = 5;
}

/// One `ProbeAlternative` per program, kind and target read from its C
/// section name at build time (vnt_ebpf::compile).
mod programs {
    include!(concat!(env!("OUT_DIR"), "/veth.bpf.programs.rs"));
}
use programs::*;

// In preference order: the function veth runs (fentry, then kprobe), then
// the tracepoint (tp_btf, then raw_tp).
static XMIT: [ProbeAlternative; 4] = [
    VETH_XMIT_FENTRY,
    VETH_XMIT_KPROBE,
    VETH_XMIT_BTF,
    VETH_XMIT_RAW,
];
static RX: [ProbeAlternative; 4] = [VETH_RX_FENTRY, VETH_RX_KPROBE, VETH_RX_BTF, VETH_RX_RAW];
static RECEIVE: [ProbeAlternative; 2] = [VETH_RECEIVE_BTF, VETH_RECEIVE_RAW];
static DROP: [ProbeAlternative; 2] = [VETH_DROP_BTF, VETH_DROP_RAW];
static DELIVER: [ProbeAlternative; 2] = [VETH_DELIVER_BTF, VETH_DELIVER_RAW];

static PROBES: [ProbeSpec; 5] = [
    ProbeSpec {
        name: "veth_xmit",
        required: true,
        opt_in: false,
        alternatives: &XMIT,
    },
    ProbeSpec {
        name: "veth_rx",
        required: false,
        // Opt-in: xmit and receive already give every device crossing; the
        // backlog hop splits the peer's receive into queueing and processing
        // at the cost of a third more program runs per packet (BENCHMARKS.md).
        opt_in: true,
        alternatives: &RX,
    },
    ProbeSpec {
        name: "veth_receive",
        required: true,
        opt_in: false,
        alternatives: &RECEIVE,
    },
    ProbeSpec {
        name: "veth_drop",
        required: false,
        opt_in: false,
        alternatives: &DROP,
    },
    ProbeSpec {
        // Not required: without it, journeys that reach a socket end as
        // delivered to the stack (or unknown) instead of delivered to the
        // reading process.
        name: "veth_deliver",
        required: false,
        opt_in: false,
        alternatives: &DELIVER,
    },
];

static HOOKS: [HookSpec; 5] = [
    HookSpec {
        id: hook::XMIT,
        name: "net:net_dev_start_xmit",
        label: "xmit",
        terminal: false,
    },
    HookSpec {
        id: hook::RX,
        name: "net:netif_rx",
        label: "backlog",
        terminal: false,
    },
    HookSpec {
        id: hook::RECEIVE,
        name: "net:netif_receive_skb",
        label: "receive",
        terminal: false,
    },
    HookSpec {
        id: hook::DROP,
        name: "skb:kfree_skb",
        label: "drop",
        terminal: true,
    },
    HookSpec {
        id: hook::DELIVER,
        name: "skb:skb_copy_datagram_iovec",
        label: "deliver",
        terminal: true,
    },
];

/// Field ids, indexes in [`FIELDS`].
pub mod field {
    /// TCP flags of the segment (`SYN,ACK`).
    pub const TCP_FLAGS: u16 = 0;
}

/// What veth hops carry besides the common hop attributes.
static FIELDS: [FieldSpec; 1] = [FieldSpec {
    name: "tcp.flags",
    kind: FieldKind::Str,
    unit: "",
    otel_key: "",
    cardinality: Cardinality::Low,
    description: "TCP flags of the segment at this hop (SYN, ACK, FIN, RST, PSH, URG, ECE, CWR)",
}];

/// `SYN,ACK` for the flag bits of a TCP header's 14th byte: the common
/// combinations as static text (no allocation per hop), others built.
fn tcp_flags(bits: u8) -> Cow<'static, str> {
    match bits {
        0x02 => "SYN".into(),
        0x10 => "ACK".into(),
        0x12 => "SYN,ACK".into(),
        0x18 => "PSH,ACK".into(),
        0x11 => "FIN,ACK".into(),
        0x19 => "FIN,PSH,ACK".into(),
        0x04 => "RST".into(),
        0x14 => "RST,ACK".into(),
        _ => {
            const NAMES: [&str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];
            let names: Vec<&str> = (0..8)
                .filter(|i| bits & (1 << i) != 0)
                .map(|i| NAMES[i])
                .collect();
            names.join(",").into()
        }
    }
}

/// The veth plugin. Configuration (`[plugin.veth]`): `tcp_flags = true`
/// puts each TCP segment's flags on its hops (`vnt.veth.tcp.flags`); off by
/// default, since it about doubles the agent's decoding time per TCP hop
/// (BENCHMARKS.md, "Plugin fields").
#[derive(Debug, Default)]
pub struct Veth {
    tcp_flags: bool,
}

impl Plugin for Veth {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "veth",
            version: env!("CARGO_PKG_VERSION"),
            description:
                "veth pairs, bridges and container network namespaces: per-hop latency and drops",
            bpf_object: BPF_OBJECT,
            probes: &PROBES,
            hooks: &HOOKS,
            fields: &FIELDS,
            ..Default::default()
        }
    }

    fn new(ctx: InitContext) -> Result<Self, PluginError> {
        let mut veth = Veth::default();
        match &ctx.config {
            serde_json::Value::Null => {}
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("tcp_flags", serde_json::Value::Bool(b)) => veth.tcp_flags = *b,
                        ("tcp_flags", other) => {
                            return Err(PluginError(format!(
                                "plugin.veth.tcp_flags must be true or false, got {other}"
                            )))
                        }
                        (other, _) => {
                            return Err(PluginError(format!(
                                "plugin.veth.{other} is not a veth setting; known: tcp_flags"
                            )))
                        }
                    }
                }
            }
            other => {
                return Err(PluginError(format!(
                    "[plugin.veth] must be a table, got {other}"
                )))
            }
        }
        ctx.log.log(LogLevel::Debug, "veth decoder ready");
        Ok(veth)
    }

    fn decode(
        &mut self,
        record: &[u8],
        emit: &mut dyn FnMut(&Observation),
    ) -> Result<(), DecodeError> {
        let hdr = wire::header(record)?;
        if !(hook::XMIT..=hook::DELIVER).contains(&hdr.hook) {
            return Err(DecodeError(format!("unknown veth hook id {}", hdr.hook)));
        }
        let mut p = wire::packet(record, hdr.hook == hook::DELIVER)?;
        if self.tcp_flags && p.flow.proto == 6 && hdr.hook != hook::DELIVER {
            let flags = wire::tcp_flags(record);
            p.values = Box::new([FieldValue::new(
                field::TCP_FLAGS,
                Value::Str(tcp_flags(flags)),
            )]);
        }
        emit(&Observation::Packet(p));
        Ok(())
    }
}

export_plugin!(Veth);

#[cfg(test)]
mod tests {
    use super::*;
    use vnt_plugin_api::{HookKind, HostLog};

    fn decode_one(record: &[u8]) -> Result<Vec<Observation>, DecodeError> {
        let mut v = Veth::new(InitContext {
            config: serde_json::json!({"tcp_flags": true}),
            log: HostLog::discard(),
        })
        .unwrap();
        let mut out = vec![];
        v.decode(record, &mut |o| out.push(o.clone()))?;
        Ok(out)
    }

    #[test]
    fn xmit_record_becomes_one_hop() {
        let r =
            wire::fixture::packet_record(wire::kind::PACKET, hook::XMIT, 5, 9, "veth-a", 3, 77, 0);
        let out = decode_one(&r).unwrap();
        assert_eq!(out.len(), 1);
        let Observation::Packet(p) = &out[0] else {
            panic!("not a packet")
        };
        assert_eq!(
            (p.hook, p.pkt_id, &*p.ifname.to_str(), p.netns),
            (hook::XMIT, 9, "veth-a", 77)
        );
    }

    #[test]
    fn drop_record_keeps_the_reason() {
        let r =
            wire::fixture::packet_record(wire::kind::DROP, hook::DROP, 5, 9, "veth-a", 3, 77, 12);
        let out = decode_one(&r).unwrap();
        let Observation::Packet(p) = &out[0] else {
            panic!("not a packet")
        };
        assert_eq!(p.drop_reason, Some(12));
    }

    #[test]
    fn unknown_hook_and_garbage_are_errors() {
        let r = wire::fixture::packet_record(wire::kind::PACKET, 42, 5, 9, "x", 3, 77, 0);
        assert!(decode_one(&r).is_err());
        assert!(decode_one(&[1, 2, 3]).is_err());
    }

    /// The kit every plugin runs: every program in the section its table
    /// says, declarations valid, decode safe on arbitrary bytes.
    #[test]
    fn conforms() {
        let xmit =
            wire::fixture::packet_record(wire::kind::PACKET, hook::XMIT, 5, 9, "veth-a", 3, 77, 0);
        let drop =
            wire::fixture::packet_record(wire::kind::DROP, hook::DROP, 5, 9, "veth-a", 3, 77, 12);
        vnt_plugin_api::conformance::check::<Veth>(&[&xmit, &drop]).unwrap();
    }

    #[test]
    fn function_variants_come_before_the_tracepoints() {
        for p in [&PROBES[0], &PROBES[1]] {
            let kinds: Vec<HookKind> = p.alternatives.iter().map(|a| a.kind).collect();
            assert_eq!(
                kinds,
                [
                    HookKind::FEntry,
                    HookKind::KProbe,
                    HookKind::TpBtf,
                    HookKind::RawTp
                ],
                "{}",
                p.name
            );
        }
    }

    #[test]
    fn tcp_flags_are_named() {
        assert_eq!(tcp_flags(0x12), "SYN,ACK");
        assert_eq!(tcp_flags(0x11), "FIN,ACK");
        assert_eq!(tcp_flags(0), "");
        assert_eq!(tcp_flags(0x03), "FIN,SYN");
        assert_eq!(tcp_flags(0xd2), "SYN,ACK,ECE,CWR");
    }

    #[test]
    fn config_is_rejected_when_unexpected() {
        let err = Veth::new(InitContext {
            config: serde_json::json!({"nope": 1}),
            log: HostLog::discard(),
        })
        .unwrap_err();
        assert!(
            err.0.contains("plugin.veth.nope is not a veth setting"),
            "{err}"
        );
        let err = Veth::new(InitContext {
            config: serde_json::json!({"tcp_flags": "yes"}),
            log: HostLog::discard(),
        })
        .unwrap_err();
        assert!(err.0.contains("true or false"), "{err}");
        let v = Veth::new(InitContext {
            config: serde_json::json!({"tcp_flags": true}),
            log: HostLog::discard(),
        })
        .unwrap();
        assert!(v.tcp_flags);
    }
}

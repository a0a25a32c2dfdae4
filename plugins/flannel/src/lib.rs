//! flannel: the overlay between hosts, as flannel builds it.
//!
//! A pod's packet is routed into the overlay device (`flannel.1`, a VXLAN
//! device, VNI 1, UDP port 8472; or `flannel0`, the TUN device of flannel's
//! UDP backend, whose daemon sends each packet as the payload of a UDP
//! datagram to port 8285), travels inside an outer packet over the underlay
//! and comes out of the overlay device on the other host.
//!
//! Hooks (see `bpf/flannel.bpf.c`), tracepoints filtered in the kernel:
//! - `encap`: the inner packet enters a VXLAN or TUN device's transmit
//!   (`net:net_dev_start_xmit`), with the device's VNI;
//! - `outer xmit`: the outer packet leaves through an underlay device,
//!   nested as a substep under the inner packet's `encap` hop, with the
//!   outer addresses, ports and VNI;
//! - `outer receive`: the outer packet arrives on the other host's underlay
//!   device (`net:netif_receive_skb`), nested under the `decap` hop that
//!   follows it;
//! - `decap`: the inner packet emerges from the VXLAN or TUN device;
//! - `daemon read`: the UDP backend's daemon reads the inner packet from its
//!   TUN device (`skb:skb_copy_datagram_iovec`), named as the hop's process;
//! - `drop` (`skb:kfree_skb`): an outer packet dropped anywhere, or an inner
//!   packet dropped on an overlay device (a VXLAN FDB miss), counted per VNI
//!   and device in `drops`. Not a hop: the journey's drop is the veth
//!   plugin's (one free, one hop), with the kernel's reason.
//!
//! The outer packet carries the inner packet's id: the shared pipeline
//! identifies a tunnel's outer packet by its inner headers
//! (docs/adr/018-flannel-tunnels.md), so both hosts' agents put every hop
//! of the packet, outer ones included, in one trace without talking to each
//! other.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use vnt_plugin_api::zerocopy::FromBytes;
use vnt_plugin_api::{
    export_plugin, wire, Cardinality, DecodeError, FieldKind, FieldSpec, FieldValue, HookSpec,
    InitContext, LogLevel, MetricKind, MetricPoint, MetricSpec, Observation, PacketObservation,
    Plugin, PluginError, PluginInfo, ProbeAlternative, ProbeSpec, Value,
};

static BPF_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/flannel.bpf.o"));

mod programs {
    include!(concat!(env!("OUT_DIR"), "/flannel.bpf.programs.rs"));
}
use programs::*;

mod records {
    include!(concat!(env!("OUT_DIR"), "/flannel.bpf.records.rs"));
}
use records::FlannelTail as Tail;

/// Hook ids, as `enum flannel_hook` in the C.
pub mod hook {
    /// The inner packet enters the overlay device's transmit.
    pub const ENCAP: u16 = 1;
    /// The outer packet leaves through an underlay device (a substep of ENCAP).
    pub const OUTER_XMIT: u16 = 2;
    /// The outer packet arrives on an underlay device (a substep of DECAP).
    pub const OUTER_RECEIVE: u16 = 3;
    /// The inner packet emerges from the overlay device.
    pub const DECAP: u16 = 4;
    /// The UDP backend's daemon reads the inner packet from its TUN device.
    pub const DAEMON_READ: u16 = 5;
    /// A drop in the overlay: counted, not a hop (see the crate's doc).
    pub const DROP: u16 = 6;
}

/// `enum flannel_overlay`.
mod overlay {
    pub const VXLAN: u8 = 1;
    pub const TUN: u8 = 2;
}

static XMIT: [ProbeAlternative; 2] = [FLANNEL_XMIT_BTF, FLANNEL_XMIT_RAW];
static RECEIVE: [ProbeAlternative; 2] = [FLANNEL_RECEIVE_BTF, FLANNEL_RECEIVE_RAW];
static DAEMON_READ: [ProbeAlternative; 2] = [FLANNEL_DAEMON_READ_BTF, FLANNEL_DAEMON_READ_RAW];
static DROP: [ProbeAlternative; 2] = [FLANNEL_DROP_BTF, FLANNEL_DROP_RAW];

// One program per tracepoint: `xmit` is the encap hop on overlay devices and
// the outer xmit elsewhere, `receive` the decap and the outer receive (every
// packet crosses them on every device: one run, not two).
static PROBES: [ProbeSpec; 4] = [
    ProbeSpec {
        name: "flannel_xmit",
        required: true,
        opt_in: false,
        alternatives: &XMIT,
    },
    ProbeSpec {
        name: "flannel_receive",
        required: true,
        opt_in: false,
        alternatives: &RECEIVE,
    },
    ProbeSpec {
        name: "flannel_daemon_read",
        required: false,
        opt_in: false,
        alternatives: &DAEMON_READ,
    },
    ProbeSpec {
        name: "flannel_drop",
        required: false,
        opt_in: false,
        alternatives: &DROP,
    },
];

static HOOKS: [HookSpec; 6] = [
    HookSpec {
        id: hook::ENCAP,
        name: "flannel:encap",
        label: "encap",
        terminal: false,
    },
    HookSpec {
        id: hook::OUTER_XMIT,
        name: "flannel:outer_xmit",
        label: "outer xmit",
        terminal: false,
    },
    HookSpec {
        id: hook::OUTER_RECEIVE,
        name: "flannel:outer_receive",
        label: "outer receive",
        terminal: false,
    },
    HookSpec {
        id: hook::DECAP,
        name: "flannel:decap",
        label: "decap",
        terminal: false,
    },
    HookSpec {
        id: hook::DAEMON_READ,
        name: "flannel:daemon_read",
        label: "daemon read",
        terminal: false,
    },
    HookSpec {
        id: hook::DROP,
        name: "flannel:drop",
        label: "drop",
        terminal: false,
    },
];

/// Field ids, indexes in [`FIELDS`].
pub mod field {
    /// VXLAN network identifier.
    pub const VNI: u16 = 0;
    /// `vxlan` or `udp`.
    pub const OVERLAY: u16 = 1;
    /// Outer source address.
    pub const OUTER_SRC_ADDR: u16 = 2;
    /// Outer destination address.
    pub const OUTER_DST_ADDR: u16 = 3;
    /// Outer source port.
    pub const OUTER_SRC_PORT: u16 = 4;
    /// Outer destination port.
    pub const OUTER_DST_PORT: u16 = 5;
    /// The device (metric label): the overlay device, or for an outer
    /// packet's drop the device it was freed on.
    pub const DEVICE: u16 = 6;
}

static FIELDS: [FieldSpec; 7] = [
    FieldSpec {
        name: "vni",
        kind: FieldKind::U64,
        unit: "",
        otel_key: "",
        cardinality: Cardinality::Low,
        description: "VXLAN network identifier of the overlay (flannel: 1)",
    },
    FieldSpec {
        name: "overlay",
        kind: FieldKind::Str,
        unit: "",
        otel_key: "",
        cardinality: Cardinality::Low,
        description: "the overlay's encapsulation: vxlan, or udp (a TUN device and a daemon)",
    },
    FieldSpec {
        name: "outer.source.address",
        kind: FieldKind::Str,
        unit: "",
        otel_key: "",
        cardinality: Cardinality::High,
        description: "source address of the outer packet: the sending host's underlay address",
    },
    FieldSpec {
        name: "outer.destination.address",
        kind: FieldKind::Str,
        unit: "",
        otel_key: "",
        cardinality: Cardinality::High,
        description:
            "destination address of the outer packet: the receiving host's underlay address",
    },
    FieldSpec {
        name: "outer.source.port",
        kind: FieldKind::U64,
        unit: "",
        otel_key: "",
        cardinality: Cardinality::High,
        description: "UDP source port of the outer packet (VXLAN: a hash of the inner flow)",
    },
    FieldSpec {
        name: "outer.destination.port",
        kind: FieldKind::U64,
        unit: "",
        otel_key: "",
        cardinality: Cardinality::Low,
        description: "UDP destination port of the outer packet (flannel: 8472 VXLAN, 8285 UDP)",
    },
    FieldSpec {
        name: "device",
        kind: FieldKind::Str,
        unit: "",
        otel_key: "",
        cardinality: Cardinality::Low,
        description: "the overlay device (flannel.1, flannel0); for a drop of an outer packet, \
                      the device it was freed on (the underlay's, or none)",
    },
];

/// Metric ids, indexes in [`METRICS`].
pub mod metric {
    /// Packets encapsulated.
    pub const ENCAP_PACKETS: u16 = 0;
    /// Packets decapsulated.
    pub const DECAP_PACKETS: u16 = 1;
    /// Packets dropped in the overlay.
    pub const DROPS: u16 = 2;
}

static METRICS: [MetricSpec; 3] = [
    MetricSpec {
        name: "encap.packets",
        kind: MetricKind::Counter,
        unit: "{packet}",
        description: "packets that entered an overlay device to be encapsulated, per VNI and \
                      device (sampled packets that passed the filter: scale by the sampling rate)",
        labels: &[field::VNI, field::DEVICE],
        buckets: &[],
    },
    MetricSpec {
        name: "decap.packets",
        kind: MetricKind::Counter,
        unit: "{packet}",
        description: "packets that emerged from an overlay device, decapsulated, per VNI and \
                      device (sampled packets that passed the filter: scale by the sampling rate)",
        labels: &[field::VNI, field::DEVICE],
        buckets: &[],
    },
    MetricSpec {
        name: "drops",
        kind: MetricKind::Counter,
        unit: "{packet}",
        description: "packets dropped in the overlay, per VNI and device: outer packets dropped \
                      anywhere, inner packets dropped on an overlay device (a VXLAN FDB miss); \
                      the reasons are in vnt.drops and on the trace (sampled packets that passed \
                      the filter: scale by the sampling rate)",
        labels: &[field::VNI, field::DEVICE],
        buckets: &[],
    },
];

fn addr(family: u8, bytes: &[u8; 16]) -> Option<IpAddr> {
    match family {
        4 => Some(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        6 => Some(IpAddr::V6(Ipv6Addr::from(*bytes))),
        _ => None,
    }
}

fn overlay_name(overlay: u8) -> Option<&'static str> {
    match overlay {
        overlay::VXLAN => Some("vxlan"),
        overlay::TUN => Some("udp"),
        _ => None,
    }
}

/// One packet more on `metric`, for the VNI and device of a record (no VNI
/// label when the record has none: a TUN device, or a VXLAN device whose
/// module's types were not known at load, docs/adr/018-flannel-tunnels.md).
fn count(metric: u16, t: &Tail, p: &PacketObservation) -> MetricPoint {
    let mut labels = Vec::with_capacity(2);
    if t.has_vni != 0 {
        labels.push(FieldValue::new(field::VNI, Value::U64(u64::from(t.vni))));
    }
    labels.push(FieldValue::new(
        field::DEVICE,
        Value::Str(p.ifname.to_str().into_owned().into()),
    ));
    MetricPoint {
        metric,
        value: 1.0,
        labels,
    }
}

/// The flannel plugin. No settings: the tunnel ports are the agent's
/// (`tunnels`, docs/adr/018-flannel-tunnels.md).
#[derive(Debug, Default)]
pub struct Flannel;

impl Plugin for Flannel {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "flannel",
            version: env!("CARGO_PKG_VERSION"),
            description: "flannel's overlays between hosts: encapsulation, the outer packet on \
                          the underlay, decapsulation (VXLAN, and the UDP backend's TUN device)",
            bpf_object: BPF_OBJECT,
            probes: &PROBES,
            hooks: &HOOKS,
            fields: &FIELDS,
            metrics: &METRICS,
            ..Default::default()
        }
    }

    fn new(ctx: InitContext) -> Result<Self, PluginError> {
        match &ctx.config {
            serde_json::Value::Null => {}
            serde_json::Value::Object(m) if m.is_empty() => {}
            serde_json::Value::Object(m) => {
                let keys: Vec<&String> = m.keys().collect();
                return Err(PluginError(format!(
                    "[plugin.flannel] has no settings, got {keys:?} (the tunnel ports are the \
                     agent's `tunnels` setting)"
                )));
            }
            other => {
                return Err(PluginError(format!(
                    "[plugin.flannel] must be a table, got {other}"
                )))
            }
        }
        ctx.log.log(LogLevel::Debug, "flannel decoder ready");
        Ok(Flannel)
    }

    fn decode(
        &mut self,
        record: &[u8],
        emit: &mut dyn FnMut(&Observation),
    ) -> Result<(), DecodeError> {
        let hdr = wire::header(record)?;
        if !(hook::ENCAP..=hook::DROP).contains(&hdr.hook) {
            return Err(DecodeError(format!("unknown flannel hook id {}", hdr.hook)));
        }
        let mut p = wire::packet(record, hdr.hook == hook::DROP)?;
        let (t, _) = Tail::read_from_prefix(wire::packet_tail(record)).map_err(|_| {
            DecodeError(format!(
                "flannel record of {} bytes has no flannel tail",
                record.len()
            ))
        })?;
        if hdr.hook == hook::DROP {
            // Counted only: the veth plugin's drop hook shows the free
            // as the journey's drop, with its reason.
            emit(&Observation::Metric(count(metric::DROPS, &t, &p)));
            return Ok(());
        }
        let mut values = Vec::with_capacity(6);
        if t.has_vni != 0 {
            values.push(FieldValue::new(field::VNI, Value::U64(u64::from(t.vni))));
        }
        if let Some(name) = overlay_name(t.overlay) {
            values.push(FieldValue::new(field::OVERLAY, Value::Str(name.into())));
        }
        match hdr.hook {
            hook::OUTER_XMIT | hook::OUTER_RECEIVE => {
                let parent = if hdr.hook == hook::OUTER_XMIT {
                    hook::ENCAP
                } else {
                    hook::DECAP
                };
                // An instant inside the overlay hop: the outer packet
                // crossing this underlay device.
                p.substep = Some((parent, p.ts_ns));
                if let (Some(src), Some(dst)) = (
                    addr(t.outer_family, &t.outer_saddr),
                    addr(t.outer_family, &t.outer_daddr),
                ) {
                    values.push(FieldValue::new(
                        field::OUTER_SRC_ADDR,
                        Value::Str(src.to_string().into()),
                    ));
                    values.push(FieldValue::new(
                        field::OUTER_DST_ADDR,
                        Value::Str(dst.to_string().into()),
                    ));
                    values.push(FieldValue::new(
                        field::OUTER_SRC_PORT,
                        Value::U64(u64::from(t.outer_sport)),
                    ));
                    values.push(FieldValue::new(
                        field::OUTER_DST_PORT,
                        Value::U64(u64::from(t.outer_dport)),
                    ));
                }
            }
            hook::DAEMON_READ => {}
            _ => {
                let metric = if hdr.hook == hook::ENCAP {
                    metric::ENCAP_PACKETS
                } else {
                    metric::DECAP_PACKETS
                };
                emit(&Observation::Metric(count(metric, &t, &p)));
            }
        }
        p.values = values.into_boxed_slice();
        emit(&Observation::Packet(p));
        Ok(())
    }
}

export_plugin!(Flannel);

#[cfg(test)]
mod tests {
    use super::*;
    use vnt_plugin_api::HostLog;

    fn record(hook: u16, tail: &[u8]) -> Vec<u8> {
        if hook == self::hook::DROP {
            return record_of(wire::kind::DROP, hook, 12, tail);
        }
        record_of(wire::kind::PACKET, hook, 0, tail)
    }

    fn record_of(kind: u16, hook: u16, reason: u32, tail: &[u8]) -> Vec<u8> {
        let mut r = wire::fixture::packet_record(kind, hook, 5, 9, "flannel.1", 3, 77, reason);
        r.extend_from_slice(tail);
        let len = r.len() as u32;
        r[16..20].copy_from_slice(&len.to_ne_bytes());
        r
    }

    fn outer_tail() -> Vec<u8> {
        let mut t = vec![0u8; std::mem::size_of::<Tail>()];
        t[..4].copy_from_slice(&[192, 168, 7, 1]);
        t[16..20].copy_from_slice(&[192, 168, 7, 2]);
        t[32..34].copy_from_slice(&40000u16.to_ne_bytes());
        t[34..36].copy_from_slice(&8472u16.to_ne_bytes());
        t[36] = 4;
        t[37] = overlay::VXLAN;
        t[38] = 1;
        t[40..44].copy_from_slice(&1u32.to_ne_bytes());
        t
    }

    fn decode(r: &[u8]) -> Vec<Observation> {
        let mut f = Flannel::new(InitContext {
            config: serde_json::Value::Null,
            log: HostLog::discard(),
        })
        .unwrap();
        let mut out = vec![];
        f.decode(r, &mut |o| out.push(o.clone())).unwrap();
        out
    }

    #[test]
    fn outer_packets_nest_under_their_overlay_hop() {
        for (h, parent) in [
            (hook::OUTER_XMIT, hook::ENCAP),
            (hook::OUTER_RECEIVE, hook::DECAP),
        ] {
            let out = decode(&record(h, &outer_tail()));
            let [Observation::Packet(p)] = &out[..] else {
                panic!("{out:?}")
            };
            assert_eq!(p.substep, Some((parent, 5)));
            let v: Vec<(u16, Value)> = p
                .values
                .iter()
                .map(|v| (v.field, v.value.clone()))
                .collect();
            assert!(v.contains(&(field::VNI, Value::U64(1))), "{v:?}");
            assert!(
                v.contains(&(field::OUTER_DST_ADDR, Value::Str("192.168.7.2".into()))),
                "{v:?}"
            );
            assert!(
                v.contains(&(field::OUTER_DST_PORT, Value::U64(8472))),
                "{v:?}"
            );
        }
    }

    #[test]
    fn overlay_hops_are_hops_and_counted() {
        let mut t = vec![0u8; std::mem::size_of::<Tail>()];
        t[37] = overlay::VXLAN;
        t[38] = 1;
        t[40..44].copy_from_slice(&1u32.to_ne_bytes());
        let out = decode(&record(hook::ENCAP, &t));
        assert!(matches!(&out[0], Observation::Metric(m) if m.metric == metric::ENCAP_PACKETS));
        let Observation::Packet(p) = &out[1] else {
            panic!("{out:?}")
        };
        assert_eq!(p.substep, None);
    }

    #[test]
    fn drops_are_counted_per_vni_and_device_not_hops() {
        let out = decode(&record(hook::DROP, &outer_tail()));
        let [Observation::Metric(m)] = &out[..] else {
            panic!("{out:?}")
        };
        assert_eq!(m.metric, metric::DROPS);
        assert_eq!(
            m.labels,
            vec![
                FieldValue::new(field::VNI, Value::U64(1)),
                FieldValue::new(field::DEVICE, Value::Str("flannel.1".into())),
            ]
        );
    }

    #[test]
    fn conforms() {
        let encap = record(hook::ENCAP, &outer_tail());
        let outer = record(hook::OUTER_XMIT, &outer_tail());
        let drop = record(hook::DROP, &outer_tail());
        vnt_plugin_api::conformance::check::<Flannel>(&[&encap, &outer, &drop]).unwrap();
    }
}

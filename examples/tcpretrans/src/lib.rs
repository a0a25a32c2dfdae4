//! tcpretrans: a vnt plugin template. Every TCP retransmission becomes a hop
//! on the journey of the segment it resends (with veth), carrying the
//! connection's state and the sequence range, and counts in the metric
//! `vnt.tcpretrans.retransmits` by state.
//!
//! Everything a plugin has is here: a probe with two alternatives (the C
//! section names say where they attach), a hook, declared fields and a
//! metric, a decoder from the C record to observations, and the
//! conformance kit in the tests. docs/plugin-guide.md explains each part.

use vnt_plugin_api::zerocopy::FromBytes;
use vnt_plugin_api::{
    export_plugin, wire, Cardinality, DecodeError, FieldKind, FieldSpec, FieldValue, Flow,
    HookSpec, InitContext, MetricKind, MetricPoint, MetricSpec, Observation, PacketObservation,
    Plugin, PluginError, PluginInfo, ProbeSpec, Value,
};

/// The compiled probe, embedded in the library.
static BPF_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/tcpretrans.bpf.o"));

/// Hook ids, as in the C.
pub mod hook {
    /// `tcp:tcp_retransmit_skb`.
    pub const RETRANSMIT: u16 = 1;
}

/// `hdr.kind` of this plugin's record (the C's `TCPRETRANS_KIND`).
const KIND: u16 = 16;

/// `struct tcpretrans_event` (and the `vnt_event_hdr` and `vnt_flow` in
/// it), generated from the compiled object's BTF with every offset
/// asserted: declared once, in the C.
mod records {
    include!(concat!(env!("OUT_DIR"), "/tcpretrans.bpf.records.rs"));
}
use records::TcpretransEvent as Event;

/// One `ProbeAlternative` per program of the object, kind and target read
/// from its C section name at build time (`SEC("tp_btf/tcp_retransmit_skb")`).
mod programs {
    include!(concat!(env!("OUT_DIR"), "/tcpretrans.bpf.programs.rs"));
}

static PROBES: [ProbeSpec; 1] = [ProbeSpec {
    name: "tcpretrans",
    required: true,
    opt_in: false,
    // In preference order: typed arguments first.
    alternatives: &[programs::TCPRETRANS_BTF, programs::TCPRETRANS_RAW],
}];

static HOOKS: [HookSpec; 1] = [HookSpec {
    id: hook::RETRANSMIT,
    name: "tcp:tcp_retransmit_skb",
    label: "retransmit",
    terminal: false,
}];

/// Field ids: indexes in [`FIELDS`].
pub mod field {
    /// TCP state of the connection.
    pub const STATE: u16 = 0;
    /// First sequence number resent.
    pub const SEQ: u16 = 1;
    /// One past the last.
    pub const END_SEQ: u16 = 2;
    /// Bytes resent.
    pub const BYTES: u16 = 3;
}

static FIELDS: [FieldSpec; 4] = [
    FieldSpec {
        name: "state",
        kind: FieldKind::Str,
        unit: "",
        otel_key: "",
        cardinality: Cardinality::Low,
        description: "TCP state of the connection when it retransmitted",
    },
    FieldSpec {
        name: "seq",
        kind: FieldKind::U64,
        unit: "",
        otel_key: "",
        cardinality: Cardinality::High,
        description: "First sequence number resent",
    },
    FieldSpec {
        name: "end_seq",
        kind: FieldKind::U64,
        unit: "",
        otel_key: "",
        cardinality: Cardinality::High,
        description: "One past the last sequence number resent",
    },
    FieldSpec {
        name: "bytes",
        kind: FieldKind::U64,
        unit: "By",
        otel_key: "",
        cardinality: Cardinality::High,
        description: "Bytes resent (end_seq - seq)",
    },
];

/// Metric ids: indexes in [`METRICS`].
pub mod metric {
    /// Retransmitted segments by state.
    pub const RETRANSMITS: u16 = 0;
}

static METRICS: [MetricSpec; 1] = [MetricSpec {
    name: "retransmits",
    kind: MetricKind::Counter,
    unit: "{segment}",
    description: "TCP segments retransmitted, by connection state",
    labels: &[field::STATE],
    buckets: &[],
}];

/// `TCP_ESTABLISHED` ... as the kernel numbers them.
fn state_name(s: u8) -> &'static str {
    match s {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

/// The plugin: no configuration, no state.
#[derive(Debug)]
pub struct TcpRetrans;

impl Plugin for TcpRetrans {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "tcpretrans",
            version: env!("CARGO_PKG_VERSION"),
            description: "TCP retransmissions, joined to the journey of the segment they resend",
            bpf_object: BPF_OBJECT,
            probes: &PROBES,
            hooks: &HOOKS,
            fields: &FIELDS,
            metrics: &METRICS,
            tick_interval_ms: 0,
            // Its records join the resent segment's journey by sequence number.
            joins_by_tcp_seq: true,
        }
    }

    fn new(ctx: InitContext) -> Result<Self, PluginError> {
        match &ctx.config {
            serde_json::Value::Null => Ok(TcpRetrans),
            serde_json::Value::Object(m) if m.is_empty() => Ok(TcpRetrans),
            other => Err(PluginError(format!(
                "tcpretrans takes no configuration, got {other}"
            ))),
        }
    }

    fn decode(
        &mut self,
        record: &[u8],
        emit: &mut dyn FnMut(&Observation),
    ) -> Result<(), DecodeError> {
        let hdr = wire::header(record)?;
        if hdr.kind != KIND || hdr.hook != hook::RETRANSMIT {
            return Err(DecodeError(format!(
                "unexpected record kind {} hook {}",
                hdr.kind, hdr.hook
            )));
        }
        let (e, _) = Event::read_from_prefix(record).map_err(|_| {
            DecodeError(format!(
                "record of {} bytes is shorter than {}",
                record.len(),
                std::mem::size_of::<Event>()
            ))
        })?;
        let state = state_name(e.state);
        let f = &e.flow;
        let flow = Flow {
            family: f.family,
            proto: f.proto,
            saddr: f.saddr,
            daddr: f.daddr,
            sport: f.sport,
            dport: f.dport,
        };
        emit(&Observation::Packet(PacketObservation {
            hook: hook::RETRANSMIT,
            ts_ns: e.hdr.ts_ns,
            cpu: e.hdr.cpu,
            // No packet id: the host joins it by flow and sequence number.
            pkt_id: 0,
            tcp_seq: Some(e.seq),
            flow,
            netns: e.netns,
            len: e.end_seq.wrapping_sub(e.seq),
            values: vec![
                FieldValue::new(field::STATE, Value::Str(state.into())),
                FieldValue::new(field::SEQ, Value::U64(e.seq.into())),
                FieldValue::new(field::END_SEQ, Value::U64(e.end_seq.into())),
                FieldValue::new(
                    field::BYTES,
                    Value::U64(e.end_seq.wrapping_sub(e.seq).into()),
                ),
            ]
            .into(),
            ..Default::default()
        }));
        emit(&Observation::Metric(MetricPoint {
            metric: metric::RETRANSMITS,
            value: 1.0,
            labels: vec![FieldValue::new(field::STATE, Value::Str(state.into()))],
        }));
        Ok(())
    }
}

export_plugin!(TcpRetrans);

#[cfg(test)]
mod tests {
    use super::*;

    /// The kit every plugin runs: programs present, declarations valid,
    /// decode never panics on arbitrary bytes.
    #[test]
    fn conforms() {
        vnt_plugin_api::conformance::check::<TcpRetrans>(&[]).unwrap();
    }
}

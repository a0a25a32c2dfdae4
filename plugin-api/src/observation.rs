//! What decoders produce: safe, owned observations, and their flat
//! `#[repr(C)]` form for the boundary ([`crate::abi::Observation`]).

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use crate::abi::{self, observation_kind};

/// A packet's flow: addresses, ports, protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flow {
    /// 4, 6, or 0 when not IP.
    pub family: u8,
    /// IP protocol number.
    pub proto: u8,
    /// Source address, network order; IPv4 in the first 4 bytes.
    pub saddr: [u8; 16],
    /// Destination address, network order.
    pub daddr: [u8; 16],
    /// Source port (0 when the protocol has none).
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
}

impl Flow {
    fn addr(&self, raw: &[u8; 16]) -> Option<IpAddr> {
        match self.family {
            4 => Some(IpAddr::from([raw[0], raw[1], raw[2], raw[3]])),
            6 => Some(IpAddr::from(*raw)),
            _ => None,
        }
    }

    /// Source address, when the packet is IP.
    pub fn src(&self) -> Option<IpAddr> {
        self.addr(&self.saddr)
    }

    /// Destination address, when the packet is IP.
    pub fn dst(&self) -> Option<IpAddr> {
        self.addr(&self.daddr)
    }

    /// Protocol name (`tcp`, `udp`, `icmp`, `icmpv6`) or its number.
    pub fn proto_name(&self) -> Cow<'static, str> {
        match self.proto {
            1 => "icmp".into(),
            6 => "tcp".into(),
            17 => "udp".into(),
            58 => "icmpv6".into(),
            n => n.to_string().into(),
        }
    }
}

/// Direction of a packet at a device hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Not tied to a device direction (a drop, a socket).
    #[default]
    None,
    /// The device transmits.
    Tx,
    /// The device receives.
    Rx,
}

impl Direction {
    fn from_raw(v: u8) -> Direction {
        match v {
            1 => Direction::Tx,
            2 => Direction::Rx,
            _ => Direction::None,
        }
    }

    fn to_raw(self) -> u8 {
        match self {
            Direction::None => 0,
            Direction::Tx => 1,
            Direction::Rx => 2,
        }
    }

    /// `tx`, `rx` or `-`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::None => "-",
            Direction::Tx => "tx",
            Direction::Rx => "rx",
        }
    }
}

/// A packet seen at a hook: one hop of its journey, or a step nested in one.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PacketObservation {
    /// Hook id, see [`crate::HookSpec`].
    pub hook: u16,
    /// CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    /// CPU.
    pub cpu: u32,
    /// Packet id: the hash of its invariant header fields.
    pub pkt_id: u64,
    /// skb address, meaningful on this host only.
    pub skb: u64,
    /// Addresses, ports, protocol.
    pub flow: Flow,
    /// Interface index (0 when unknown).
    pub ifindex: u32,
    /// Interface name.
    pub ifname: IfName,
    /// Network namespace inode (0 when unknown).
    pub netns: u32,
    /// Bytes from the network header on (the IP packet), the same at every
    /// hook: skb->len counts the link header at transmit and none at receive.
    pub len: u32,
    /// Transmit or receive.
    pub direction: Direction,
    /// Kernel drop reason when the packet was dropped here.
    pub drop_reason: Option<u32>,
    /// This hook ends the journey (delivery to a socket, say).
    pub terminal: bool,
    /// For a substep nested in a hop: (parent hook id, end timestamp).
    pub substep: Option<(u16, u64)>,
    /// The process the hook ran for, where it knows it (0 when not): the
    /// reader at a socket read, the sender at a transmit in its context.
    pub pid: u32,
    /// `skb->pkt_type` (`PACKET_HOST` 0, `PACKET_OTHERHOST` 3, ...), when
    /// the hook reports it. A receive addressed to this host
    /// (`PACKET_HOST`) that nothing dropped went up the local stack.
    pub pkt_type: Option<u8>,
    /// First TCP sequence number of the segment, where the hook knows it.
    /// With `pkt_id` 0 it is how the host joins the observation to its
    /// journey: the packet of the same flow and sequence number (a
    /// retransmission, seen where the packet id cannot be computed).
    pub tcp_seq: Option<u32>,
    /// Values of the plugin's declared fields ([`crate::FieldSpec`]):
    /// attributes of the hop in every output (`vec![...].into()`). Empty
    /// allocates nothing. A boxed slice, not a `Vec`: the 8 bytes matter,
    /// journeys hold six hops in one allocation under 1 KiB.
    pub values: Box<[FieldValue]>,
}

/// A value of a declared field.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Unsigned integer.
    U64(u64),
    /// Signed integer.
    I64(i64),
    /// Floating point.
    F64(f64),
    /// Text (at most [`abi::MAX_TEXT_VALUE`] bytes cross the boundary). A
    /// `&'static str` (`"ESTABLISHED".into()`) costs no allocation; the
    /// host keeps the distinct values of low-cardinality fields once.
    Str(Cow<'static, str>),
}

impl Value {
    /// Its [`crate::FieldKind`].
    pub fn kind(&self) -> crate::FieldKind {
        match self {
            Value::U64(_) => crate::FieldKind::U64,
            Value::I64(_) => crate::FieldKind::I64,
            Value::F64(_) => crate::FieldKind::F64,
            Value::Str(_) => crate::FieldKind::Str,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::U64(v) => write!(f, "{v}"),
            Value::I64(v) => write!(f, "{v}"),
            Value::F64(v) => write!(f, "{v}"),
            Value::Str(v) => f.write_str(v),
        }
    }
}

/// One field's value on an observation.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldValue {
    /// Field id: its index in [`crate::PluginInfo::fields`].
    pub field: u16,
    /// The value; its kind must be the field's.
    pub value: Value,
}

impl FieldValue {
    /// `field` = `value`.
    pub fn new(field: u16, value: Value) -> FieldValue {
        FieldValue { field, value }
    }
}

/// A point of a declared metric ([`crate::MetricSpec`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetricPoint {
    /// Metric id: its index in [`crate::PluginInfo::metrics`].
    pub metric: u16,
    /// Counter: the increment; gauge: the reading; histogram: the sample.
    pub value: f64,
    /// Values of the metric's label fields.
    pub labels: Vec<FieldValue>,
}

/// `skb->pkt_type` of a frame addressed to this host.
pub const PACKET_HOST: u8 = 0;

/// A CPU interval not tied to a packet, joined to journeys by CPU and time.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IntervalObservation {
    /// Hook id.
    pub hook: u16,
    /// CPU the interval happened on.
    pub cpu: u32,
    /// Start, CLOCK_MONOTONIC nanoseconds.
    pub start_ns: u64,
    /// End, CLOCK_MONOTONIC nanoseconds.
    pub end_ns: u64,
    /// Task involved, if any.
    pub pid: u32,
    /// Plugin-defined refinement (1 run-queue wait, 2 steal).
    pub detail: u32,
}

/// Counters of one connection at a point in time.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConnectionObservation {
    /// Hook id.
    pub hook: u16,
    /// CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    /// Addresses and ports.
    pub flow: Flow,
    /// Network namespace inode.
    pub netns: u32,
    /// Owning process.
    pub pid: u32,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Segments sent.
    pub packets_sent: u64,
    /// Segments received.
    pub packets_received: u64,
    /// Retransmitted segments.
    pub retransmits: u64,
    /// Smoothed RTT, microseconds.
    pub srtt_us: u32,
    /// RTT variance, microseconds.
    pub rttvar_us: u32,
}

/// Everything a decoder can report.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// A packet at a hook (a hop, or a substep inside one).
    Packet(PacketObservation),
    /// A CPU interval.
    Interval(IntervalObservation),
    /// Connection counters.
    Connection(ConnectionObservation),
    /// A point of a declared metric (since ABI 1.3).
    Metric(MetricPoint),
}

/// An interface name as the kernel keeps it (`IFNAMSIZ`, 16 bytes,
/// NUL-padded), held inline: a packet observation owns no heap memory, so
/// decoding one allocates nothing.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct IfName([u8; 16]);

impl IfName {
    /// From the kernel's bytes: up to the first NUL, at most 16 bytes.
    pub fn from_bytes(raw: &[u8]) -> IfName {
        let end = raw
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(raw.len())
            .min(16);
        let mut out = [0u8; 16];
        out[..end].copy_from_slice(&raw[..end]);
        IfName(out)
    }

    /// The name's bytes, without the padding.
    pub fn as_bytes(&self) -> &[u8] {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(16);
        &self.0[..end]
    }

    /// The name as text (bytes that are not UTF-8 become U+FFFD).
    pub fn to_str(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(self.as_bytes())
    }

    /// No name.
    pub fn is_empty(&self) -> bool {
        self.0[0] == 0
    }
}

impl From<&str> for IfName {
    /// The first 15 bytes of `name`, as the kernel would keep them.
    fn from(name: &str) -> IfName {
        IfName::from_bytes(&name.as_bytes()[..name.len().min(15)])
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_str())
    }
}

impl fmt::Debug for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.to_str(), f)
    }
}

impl PartialEq<str> for IfName {
    fn eq(&self, other: &str) -> bool {
        *self.to_str() == *other
    }
}

impl PartialEq<&str> for IfName {
    fn eq(&self, other: &&str) -> bool {
        *self.to_str() == **other
    }
}

/// The 16 bytes of the boundary's `ifname`: at most 15 of the name, NUL-padded.
fn name_bytes(name: &IfName) -> [u8; 16] {
    let mut out = [0u8; 16];
    let b = name.as_bytes();
    let n = b.len().min(15);
    out[..n].copy_from_slice(&b[..n]);
    out
}

impl From<&Observation> for abi::Observation {
    /// The flat form, without [`abi::Observation::values`] (see
    /// [`raw_values`]: they point into the observation).
    fn from(o: &Observation) -> abi::Observation {
        let mut r = abi::Observation {
            struct_size: std::mem::size_of::<abi::Observation>() as u32,
            ..Default::default()
        };
        let set_flow = |r: &mut abi::Observation, f: &Flow| {
            r.family = f.family;
            r.proto = f.proto;
            r.saddr = f.saddr;
            r.daddr = f.daddr;
            r.sport = f.sport;
            r.dport = f.dport;
        };
        match o {
            Observation::Packet(p) => {
                r.kind = if p.substep.is_some() {
                    observation_kind::SUBSTEP
                } else {
                    observation_kind::PACKET
                };
                r.hook = p.hook;
                r.ts_ns = p.ts_ns;
                r.cpu = p.cpu;
                r.pkt_id = p.pkt_id;
                r.skb = p.skb;
                set_flow(&mut r, &p.flow);
                r.ifindex = p.ifindex;
                r.ifname = name_bytes(&p.ifname);
                r.netns = p.netns;
                r.len = p.len;
                r.direction = p.direction.to_raw();
                r.drop_reason = p.drop_reason.unwrap_or(0);
                r.terminal = u8::from(p.terminal);
                r.pid = p.pid;
                r.detail = p.pkt_type.map_or(0, |t| u32::from(t) + 1);
                if let Some(seq) = p.tcp_seq {
                    r.tcp_seq = seq;
                    r.flags |= abi::observation_flags::HAS_TCP_SEQ;
                }
                if let Some((parent, end)) = p.substep {
                    r.parent_hook = parent;
                    r.end_ns = end;
                }
            }
            Observation::Interval(i) => {
                r.kind = observation_kind::INTERVAL;
                r.hook = i.hook;
                r.cpu = i.cpu;
                r.ts_ns = i.start_ns;
                r.end_ns = i.end_ns;
                r.pid = i.pid;
                r.detail = i.detail;
            }
            Observation::Connection(c) => {
                r.kind = observation_kind::CONNECTION;
                r.hook = c.hook;
                r.ts_ns = c.ts_ns;
                set_flow(&mut r, &c.flow);
                r.netns = c.netns;
                r.pid = c.pid;
                r.bytes_sent = c.bytes_sent;
                r.bytes_received = c.bytes_received;
                r.packets_sent = c.packets_sent;
                r.packets_received = c.packets_received;
                r.retransmits = c.retransmits;
                r.srtt_us = c.srtt_us;
                r.rttvar_us = c.rttvar_us;
            }
            Observation::Metric(m) => {
                r.kind = observation_kind::METRIC;
                r.metric = m.metric;
                r.metric_value = m.value;
            }
        }
        r
    }
}

/// The observation's field values (label values of a metric point).
pub fn values_of(o: &Observation) -> &[FieldValue] {
    match o {
        Observation::Packet(p) => &p.values[..],
        Observation::Metric(m) => &m.labels,
        _ => &[],
    }
}

/// A value in its flat form, pointing into `v` (its text): valid while `v`
/// lives.
pub fn flat_value(v: &FieldValue) -> abi::FieldValue {
    let (num, text) = match &v.value {
        Value::U64(n) => (*n, abi::Str::EMPTY),
        Value::I64(n) => (*n as u64, abi::Str::EMPTY),
        Value::F64(n) => (n.to_bits(), abi::Str::EMPTY),
        Value::Str(s) => (0, abi::Str::new(s)),
    };
    abi::FieldValue {
        field: v.field,
        kind: v.value.kind().to_raw(),
        _reserved: [0; 5],
        num,
        text,
    }
}

/// The observation's field values in their flat form, pointing into `o`
/// (its strings): valid while `o` lives. Empty for kinds without values.
pub fn raw_values(o: &Observation) -> Vec<abi::FieldValue> {
    values_of(o).iter().map(flat_value).collect()
}

/// A flat value back as a [`FieldValue`]; `text` is the value's text, which
/// the host copied (and checked) from the plugin's memory.
pub fn value_from_raw(
    v: &abi::FieldValue,
    text: Option<Cow<'static, str>>,
) -> Result<FieldValue, String> {
    let value = match (crate::FieldKind::from_raw(v.kind), text) {
        (Some(crate::FieldKind::U64), _) => Value::U64(v.num),
        (Some(crate::FieldKind::I64), _) => Value::I64(v.num as i64),
        (Some(crate::FieldKind::F64), _) => Value::F64(f64::from_bits(v.num)),
        (Some(crate::FieldKind::Str), Some(t)) => Value::Str(t),
        (Some(crate::FieldKind::Str), None) => Value::Str(Cow::Borrowed("")),
        (None, _) => return Err(format!("field {}: unknown value kind {}", v.field, v.kind)),
    };
    Ok(FieldValue {
        field: v.field,
        value,
    })
}

impl Observation {
    /// The observation from its flat form and its values (copied by the
    /// host from [`abi::Observation::values`]; empty before ABI 1.3).
    pub fn from_raw(r: &abi::Observation, values: Vec<FieldValue>) -> Result<Observation, String> {
        let flow = Flow {
            family: r.family,
            proto: r.proto,
            saddr: r.saddr,
            daddr: r.daddr,
            sport: r.sport,
            dport: r.dport,
        };
        Ok(match r.kind {
            observation_kind::PACKET | observation_kind::SUBSTEP => {
                Observation::Packet(PacketObservation {
                    hook: r.hook,
                    ts_ns: r.ts_ns,
                    cpu: r.cpu,
                    pkt_id: r.pkt_id,
                    skb: r.skb,
                    flow,
                    ifindex: r.ifindex,
                    ifname: IfName::from_bytes(&r.ifname),
                    netns: r.netns,
                    len: r.len,
                    direction: Direction::from_raw(r.direction),
                    drop_reason: (r.drop_reason != 0).then_some(r.drop_reason),
                    terminal: r.terminal != 0,
                    substep: (r.kind == observation_kind::SUBSTEP)
                        .then_some((r.parent_hook, r.end_ns)),
                    pid: r.pid,
                    pkt_type: r.detail.checked_sub(1).and_then(|t| u8::try_from(t).ok()),
                    tcp_seq: (r.flags & abi::observation_flags::HAS_TCP_SEQ != 0)
                        .then_some(r.tcp_seq),
                    values: values.into(),
                })
            }
            observation_kind::INTERVAL => Observation::Interval(IntervalObservation {
                hook: r.hook,
                cpu: r.cpu,
                start_ns: r.ts_ns,
                end_ns: r.end_ns,
                pid: r.pid,
                detail: r.detail,
            }),
            observation_kind::CONNECTION => Observation::Connection(ConnectionObservation {
                hook: r.hook,
                ts_ns: r.ts_ns,
                flow,
                netns: r.netns,
                pid: r.pid,
                bytes_sent: r.bytes_sent,
                bytes_received: r.bytes_received,
                packets_sent: r.packets_sent,
                packets_received: r.packets_received,
                retransmits: r.retransmits,
                srtt_us: r.srtt_us,
                rttvar_us: r.rttvar_us,
            }),
            observation_kind::METRIC => Observation::Metric(MetricPoint {
                metric: r.metric,
                value: r.metric_value,
                labels: values,
            }),
            other => return Err(format!("unknown observation kind {other}")),
        })
    }
}

impl TryFrom<&abi::Observation> for Observation {
    type Error = String;

    /// The observation without values (as a plugin before ABI 1.3 sends).
    fn try_from(r: &abi::Observation) -> Result<Observation, String> {
        Observation::from_raw(r, Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(o: Observation) {
        let raw = abi::Observation::from(&o);
        assert_eq!(Observation::try_from(&raw).unwrap(), o);
    }

    #[test]
    fn every_kind_survives_the_boundary() {
        roundtrip(Observation::Packet(PacketObservation {
            hook: 3,
            ts_ns: 42,
            cpu: 1,
            pkt_id: 0xdead_beef,
            skb: 0xffff_8880_0000_1000,
            flow: Flow {
                family: 4,
                proto: 17,
                saddr: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                daddr: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                sport: 1000,
                dport: 2000,
            },
            ifindex: 7,
            ifname: "veth0".into(),
            netns: 4026531840,
            len: 128,
            direction: Direction::Tx,
            drop_reason: Some(12),
            terminal: false,
            substep: None,
            pid: 4242,
            pkt_type: Some(PACKET_HOST),
            tcp_seq: Some(7),
            values: Box::default(),
        }));
        roundtrip(Observation::Metric(MetricPoint {
            metric: 2,
            value: 1.5,
            labels: Vec::new(),
        }));
        roundtrip(Observation::Packet(PacketObservation {
            hook: 9,
            substep: Some((2, 99)),
            ..Default::default()
        }));
        roundtrip(Observation::Interval(IntervalObservation {
            hook: 1,
            cpu: 1,
            start_ns: 10,
            end_ns: 20,
            pid: 5,
            detail: 2,
        }));
        roundtrip(Observation::Connection(ConnectionObservation {
            hook: 1,
            ts_ns: 5,
            bytes_sent: 1,
            bytes_received: 2,
            packets_sent: 3,
            packets_received: 4,
            retransmits: 5,
            srtt_us: 6,
            rttvar_us: 7,
            ..Default::default()
        }));
    }

    #[test]
    fn values_survive_the_boundary() {
        let o = Observation::Packet(PacketObservation {
            values: vec![
                FieldValue::new(0, Value::U64(u64::MAX)),
                FieldValue::new(1, Value::I64(-3)),
                FieldValue::new(2, Value::F64(0.25)),
                FieldValue::new(3, Value::Str("ESTABLISHED".into())),
            ]
            .into(),
            ..Default::default()
        });
        let raw = abi::Observation::from(&o);
        let flat = raw_values(&o);
        let back: Vec<FieldValue> = flat
            .iter()
            .map(|v| {
                let text = (v.kind == abi::field_kind::STR).then(|| {
                    // SAFETY: the text points into `o`, alive here.
                    let b = unsafe { std::slice::from_raw_parts(v.text.ptr, v.text.len) };
                    Cow::Owned(String::from_utf8(b.to_vec()).unwrap())
                });
                value_from_raw(v, text).unwrap()
            })
            .collect();
        assert_eq!(Observation::from_raw(&raw, back).unwrap(), o);
    }

    #[test]
    fn unknown_kind_is_an_error_not_a_panic() {
        let raw = abi::Observation {
            kind: 99,
            ..Default::default()
        };
        assert!(Observation::try_from(&raw).is_err());
    }

    #[test]
    fn long_interface_names_are_truncated_to_kernel_size() {
        let raw = name_bytes(&IfName::from_bytes(b"a-very-long-interface-name"));
        assert_eq!(IfName::from_bytes(&raw), "a-very-long-int");
        assert_eq!(
            IfName::from("a-very-long-interface-name"),
            "a-very-long-int"
        );
        assert_eq!(IfName::from_bytes(b"eth0\0\0junk"), "eth0");
        let odd = IfName::from_bytes(b"v\xffx");
        assert_eq!(odd.as_bytes(), b"v\xffx");
        assert_eq!(odd.to_string(), "v\u{fffd}x");
        assert!(IfName::default().is_empty());
    }
}

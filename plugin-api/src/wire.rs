//! Rust mirror of `ebpf/include/vnt/event.h`: the records eBPF programs
//! write to their `vnt_events` ring buffer.
//!
//! Sizes and offsets are asserted at compile time here and with
//! `_Static_assert` in the C header, against the same numbers.

use std::mem::{offset_of, size_of};

use zerocopy::{FromBytes, Immutable, KnownLayout};

use crate::observation::{Direction, Flow, IfName, PacketObservation};
use crate::plugin::DecodeError;

/// `VNT_WIRE_VERSION`.
pub const WIRE_VERSION: u32 = 2;

/// The oldest wire version decoders still read: version 1 records are the
/// 128 bytes before `pid` was appended (read as pid 0).
pub const WIRE_VERSION_MIN: u32 = 1;

/// `enum vnt_event_kind`.
pub mod kind {
    /// A packet at a hook.
    pub const PACKET: u16 = 1;
    /// A packet freed with a drop reason.
    pub const DROP: u16 = 2;
    /// A step nested inside a hop.
    pub const SUBSTEP: u16 = 3;
    /// A CPU interval.
    pub const INTERVAL: u16 = 4;
    /// Connection counters.
    pub const CONN: u16 = 5;
}

/// `enum vnt_encap`: which tunnel a packet record's outer packet belongs to
/// ([`PacketEvent::encap`]).
pub mod encap {
    /// A plain packet.
    pub const NONE: u8 = 0;
    /// A VXLAN outer packet (8-byte header, then an Ethernet frame).
    pub const VXLAN: u8 = 1;
    /// A bare IP packet as UDP payload (flannel's UDP backend).
    pub const UDP: u8 = 2;
}

/// `struct vnt_event_hdr`.
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, KnownLayout, Immutable)]
pub struct EventHdr {
    /// CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    /// A [`kind`] value.
    pub kind: u16,
    /// Plugin-defined hook id.
    pub hook: u16,
    /// CPU.
    pub cpu: u32,
    /// Whole record length.
    pub len: u32,
    /// [`WIRE_VERSION`] of the program that wrote it.
    pub wire_version: u32,
}

/// `struct vnt_flow`.
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, KnownLayout, Immutable)]
pub struct WireFlow {
    /// Source address, network order.
    pub saddr: [u8; 16],
    /// Destination address, network order.
    pub daddr: [u8; 16],
    /// Source port, host order.
    pub sport: u16,
    /// Destination port, host order.
    pub dport: u16,
    /// 4, 6 or 0.
    pub family: u8,
    /// IP protocol.
    pub proto: u8,
    /// Padding.
    pub _pad: u16,
}

/// `struct vnt_packet_event`.
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, KnownLayout, Immutable)]
pub struct PacketEvent {
    /// Common header.
    pub hdr: EventHdr,
    /// Packet id.
    pub pkt_id: u64,
    /// skb address.
    pub skb: u64,
    /// Flow.
    pub flow: WireFlow,
    /// Interface index.
    pub ifindex: u32,
    /// Network namespace inode.
    pub netns: u32,
    /// Bytes from the network header on: the IP packet, whatever the hook
    /// (skb->len adjusted for where skb->data points).
    pub skb_len: u32,
    /// Drop reason (DROP records).
    pub drop_reason: u32,
    /// TCP sequence number.
    pub tcp_seq: u32,
    /// TCP acknowledgment number.
    pub tcp_ack: u32,
    /// TCP flags byte.
    pub tcp_flags: u8,
    /// `enum vnt_direction`.
    pub direction: u8,
    /// skb->pkt_type.
    pub pkt_type: u8,
    /// The tunnel this packet was the outer packet of ([`encap`]): 0 for a
    /// plain packet. Its id and flow are then the inner packet's.
    pub encap: u8,
    /// IPv4 id or IPv6 flow label.
    pub ip_ident: u32,
    /// Interface name, NUL-padded.
    pub ifname: [u8; 16],
    /// The process the hook ran for, or 0 (appended in wire version 2).
    pub pid: u32,
    /// Padding.
    pub _pad1: u32,
}

/// Size of a version 1 packet record, before `pid`.
const PACKET_V1_SIZE: usize = 128;

const _: () = {
    assert!(size_of::<EventHdr>() == 24);
    assert!(size_of::<WireFlow>() == 40);
    assert!(size_of::<PacketEvent>() == 136);
    assert!(offset_of!(PacketEvent, pid) == PACKET_V1_SIZE);
    assert!(offset_of!(PacketEvent, flow) == 40);
    assert!(offset_of!(PacketEvent, ifindex) == 80);
    assert!(offset_of!(PacketEvent, ifname) == 112);
};

impl From<WireFlow> for Flow {
    fn from(f: WireFlow) -> Flow {
        Flow {
            family: f.family,
            proto: f.proto,
            saddr: f.saddr,
            daddr: f.daddr,
            sport: f.sport,
            dport: f.dport,
        }
    }
}

/// Read the common header of a record.
pub fn header(record: &[u8]) -> Result<EventHdr, DecodeError> {
    let (hdr, _) = EventHdr::read_from_prefix(record).map_err(|_| {
        DecodeError(format!(
            "record of {} bytes is shorter than the {}-byte event header",
            record.len(),
            size_of::<EventHdr>()
        ))
    })?;
    if !(WIRE_VERSION_MIN..=WIRE_VERSION).contains(&hdr.wire_version) {
        return Err(DecodeError(format!(
            "record has wire version {}, this decoder reads {WIRE_VERSION_MIN} to {WIRE_VERSION}",
            hdr.wire_version
        )));
    }
    Ok(hdr)
}

/// Decode a `struct vnt_packet_event` (kind PACKET or DROP) into a packet
/// observation. `terminal` comes from the plugin's hook table.
pub fn packet(record: &[u8], terminal: bool) -> Result<PacketObservation, DecodeError> {
    let hdr = header(record)?;
    let need = if hdr.wire_version == 1 {
        PACKET_V1_SIZE
    } else {
        size_of::<PacketEvent>()
    };
    if record.len() < need {
        return Err(DecodeError(format!(
            "packet record of {} bytes is shorter than {need}",
            record.len()
        )));
    }
    // A version 1 record lacks the trailing pid: read it as zero.
    let mut buf = [0u8; size_of::<PacketEvent>()];
    buf[..need].copy_from_slice(&record[..need]);
    let (e, _) = PacketEvent::read_from_prefix(&buf[..])
        .map_err(|_| DecodeError("packet record layout".to_string()))?;
    let drop = e.hdr.kind == kind::DROP;
    if !drop && e.hdr.kind != kind::PACKET {
        return Err(DecodeError(format!(
            "record kind {} is not a packet record",
            e.hdr.kind
        )));
    }
    Ok(PacketObservation {
        hook: e.hdr.hook,
        ts_ns: e.hdr.ts_ns,
        cpu: e.hdr.cpu,
        pkt_id: e.pkt_id,
        skb: e.skb,
        flow: e.flow.into(),
        ifindex: e.ifindex,
        ifname: IfName::from_bytes(&e.ifname),
        netns: e.netns,
        len: e.skb_len,
        direction: match e.direction {
            1 => Direction::Tx,
            2 => Direction::Rx,
            _ => Direction::None,
        },
        drop_reason: drop.then_some(e.drop_reason),
        terminal: terminal || drop,
        substep: None,
        pid: e.pid,
        pkt_type: Some(e.pkt_type),
        // Host order (the C reads it with vnt_be32); a join key for
        // observations that cannot compute the packet id.
        tcp_seq: (e.flow.proto == 6).then_some(e.tcp_seq),
        values: Box::default(),
    })
}

/// The bytes a plugin appended after the packet event of a record written
/// with `vnt_packet_reserve(skb, dev, c, sizeof(struct vnt_packet_event) +
/// sizeof(its own tail))` (ebpf/include/vnt/pipeline.h): its own fields,
/// read with its generated record type. Empty when there are none, or for a
/// version 1 record (which had no room for them).
pub fn packet_tail(record: &[u8]) -> &[u8] {
    match header(record) {
        Ok(h) if h.wire_version >= 2 => record.get(size_of::<PacketEvent>()..).unwrap_or(&[]),
        _ => &[],
    }
}

/// The TCP flags byte of a packet record (0 when the record is too short).
pub fn tcp_flags(record: &[u8]) -> u8 {
    record
        .get(offset_of!(PacketEvent, tcp_flags))
        .copied()
        .unwrap_or(0)
}

/// Build a packet record byte-for-byte as the kernel would (tests, fixtures).
pub mod fixture {
    use super::*;

    /// Serialise a record with the given fields; the rest are zero.
    #[allow(clippy::too_many_arguments)]
    pub fn packet_record(
        kind: u16,
        hook: u16,
        ts_ns: u64,
        pkt_id: u64,
        ifname: &str,
        ifindex: u32,
        netns: u32,
        drop_reason: u32,
    ) -> Vec<u8> {
        let mut b = vec![0u8; size_of::<PacketEvent>()];
        b[0..8].copy_from_slice(&ts_ns.to_ne_bytes());
        b[8..10].copy_from_slice(&kind.to_ne_bytes());
        b[10..12].copy_from_slice(&hook.to_ne_bytes());
        b[16..20].copy_from_slice(&(size_of::<PacketEvent>() as u32).to_ne_bytes());
        b[20..24].copy_from_slice(&WIRE_VERSION.to_ne_bytes());
        b[24..32].copy_from_slice(&pkt_id.to_ne_bytes());
        // flow: 10.0.0.1 -> 10.0.0.2 udp 1000 -> 2000
        b[40..44].copy_from_slice(&[10, 0, 0, 1]);
        b[56..60].copy_from_slice(&[10, 0, 0, 2]);
        b[72..74].copy_from_slice(&1000u16.to_ne_bytes());
        b[74..76].copy_from_slice(&2000u16.to_ne_bytes());
        b[76] = 4;
        b[77] = 17;
        b[80..84].copy_from_slice(&ifindex.to_ne_bytes());
        b[84..88].copy_from_slice(&netns.to_ne_bytes());
        b[92..96].copy_from_slice(&drop_reason.to_ne_bytes());
        let n = ifname.len().min(15);
        b[112..112 + n].copy_from_slice(&ifname.as_bytes()[..n]);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_record_decodes() {
        let r = fixture::packet_record(kind::PACKET, 1, 1000, 77, "veth0", 5, 4026531840, 0);
        let p = packet(&r, false).unwrap();
        assert_eq!(p.hook, 1);
        assert_eq!(p.ts_ns, 1000);
        assert_eq!(p.pkt_id, 77);
        assert_eq!(p.ifname, "veth0");
        assert_eq!(p.ifindex, 5);
        assert_eq!(p.netns, 4026531840);
        assert_eq!(p.flow.src().unwrap().to_string(), "10.0.0.1");
        assert_eq!(p.flow.dst().unwrap().to_string(), "10.0.0.2");
        assert_eq!((p.flow.sport, p.flow.dport), (1000, 2000));
        assert_eq!(p.drop_reason, None);
        assert!(!p.terminal);
    }

    #[test]
    fn drop_record_carries_reason_and_ends_the_journey() {
        let r = fixture::packet_record(kind::DROP, 4, 1000, 77, "veth0", 5, 1, 12);
        let p = packet(&r, false).unwrap();
        assert_eq!(p.drop_reason, Some(12));
        assert!(p.terminal);
    }

    #[test]
    fn a_plugins_tail_follows_the_packet_event() {
        let mut r = fixture::packet_record(kind::PACKET, 1, 5, 9, "veth0", 3, 77, 0);
        assert!(packet_tail(&r).is_empty());
        r.extend_from_slice(&[1, 2, 3, 4]);
        let len = r.len() as u32;
        r[16..20].copy_from_slice(&len.to_ne_bytes());
        assert_eq!(packet_tail(&r), &[1, 2, 3, 4]);
        // The packet event itself decodes as before.
        assert_eq!(packet(&r, false).unwrap().pkt_id, 9);
    }

    #[test]
    fn short_record_is_an_error() {
        let r = fixture::packet_record(kind::PACKET, 1, 1, 1, "x", 1, 1, 0);
        assert!(packet(&r[..100], false).is_err());
        assert!(packet(&r[..10], false).is_err());
        assert!(packet(&[], false).is_err());
    }

    #[test]
    fn wrong_wire_version_is_an_error() {
        let mut r = fixture::packet_record(kind::PACKET, 1, 1, 1, "x", 1, 1, 0);
        r[20] = 9;
        let err = packet(&r, false).unwrap_err();
        assert!(err.0.contains("wire version 9"), "{err}");
    }

    #[test]
    fn version_1_records_decode_without_a_pid() {
        let mut r = fixture::packet_record(kind::PACKET, 1, 1, 1, "x", 1, 1, 0);
        r[128..132].copy_from_slice(&4242u32.to_ne_bytes());
        assert_eq!(packet(&r, false).unwrap().pid, 4242);
        r[20..24].copy_from_slice(&1u32.to_ne_bytes());
        r.truncate(PACKET_V1_SIZE);
        let p = packet(&r, false).unwrap();
        assert_eq!((p.pid, p.ifname.to_str().as_ref()), (0, "x"));
        assert!(packet(&r[..PACKET_V1_SIZE - 1], false).is_err());
    }

    #[test]
    fn non_packet_kind_is_an_error() {
        let r = fixture::packet_record(kind::INTERVAL, 1, 1, 1, "x", 1, 1, 0);
        assert!(packet(&r, false).is_err());
    }
}

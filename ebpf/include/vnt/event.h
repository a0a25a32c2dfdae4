/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * The one wire format between vnt's eBPF programs and their decoders.
 *
 * Every record a program writes to its `vnt_events` ring buffer starts with
 * `struct vnt_event_hdr`. Packet plugins (veth, ovs, flannel, stack) write a
 * whole `struct vnt_packet_event`; other plugins append their own body after
 * the header and set `hdr.len` to the full record size.
 *
 * The Rust mirror lives in plugin-api/src/wire.rs and asserts every size and
 * offset below at compile time. Change both together, append only, and bump
 * VNT_WIRE_VERSION.
 */
#ifndef VNT_EVENT_H
#define VNT_EVENT_H

#define VNT_WIRE_VERSION 2

/* hdr.kind */
enum vnt_event_kind {
	VNT_EV_PACKET = 1,   /* a packet seen at a hook */
	VNT_EV_DROP = 2,     /* a packet freed with a drop reason */
	VNT_EV_SUBSTEP = 3,  /* a step nested inside a hop (OVS upcall) */
	VNT_EV_INTERVAL = 4, /* a CPU-bound interval not tied to a packet */
	VNT_EV_CONN = 5,     /* per-connection counters */
};

/* packet.direction */
enum vnt_direction {
	VNT_DIR_NONE = 0,
	VNT_DIR_TX = 1,
	VNT_DIR_RX = 2,
};

/*
 * packet.encap: the tunnel a packet was identified through. A hook that sees
 * a tunnel's outer packet (UDP to a configured tunnel port, see `vnt_tunnels`
 * in common.h) reports the INNER packet's identity and flow, so the outer
 * packet joins the inner packet's journey; this byte says it was the outer one.
 */
enum vnt_encap {
	VNT_ENCAP_NONE = 0,
	VNT_ENCAP_VXLAN = 1, /* VXLAN: 8-byte header, then an Ethernet frame */
	VNT_ENCAP_UDP = 2,   /* a bare IP packet as UDP payload (flannel's UDP backend) */
};

/* 24 bytes */
struct vnt_event_hdr {
	__u64 ts_ns; /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u16 kind;  /* enum vnt_event_kind */
	__u16 hook;  /* plugin-defined hook id, see the plugin's probe table */
	__u32 cpu;
	__u32 len;   /* size of the whole record in bytes */
	__u32 wire_version;
};

/* 40 bytes. Addresses in network order, IPv4 in the first 4 bytes. */
struct vnt_flow {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport; /* host order; 0 when the protocol has no ports */
	__u16 dport;
	__u8 family; /* 4 or 6; 0 when the packet is not IP */
	__u8 proto;  /* IPPROTO_* */
	__u16 _pad;
};

/*
 * The invariant header fields that identify one packet on every hop and on
 * every host without touching it. Its hash is the packet id; see
 * docs/adr/002-packet-identity-and-sampling.md. 80 bytes.
 */
struct vnt_pkt_key {
	struct vnt_flow flow;
	__u32 ip_ident; /* IPv4 identification, or IPv6 flow label */
	__u32 l4_len;   /* transport header + payload length from the IP header */
	__u32 w0;       /* TCP seq | UDP length | ICMP type<<8|code */
	__u32 w1;       /* TCP ack | ICMP echo id<<16|seq */
	__u32 w2;       /* TCP timestamp value (TSval) */
	__u32 w3;       /* TCP flags */
	__u8 payload[16]; /* first payload bytes of UDP/ICMP, zero-padded */
};

/* 136 bytes (128 before the `pid` was appended; decoders accept both) */
struct vnt_packet_event {
	struct vnt_event_hdr hdr;
	__u64 pkt_id;  /* hash of struct vnt_pkt_key */
	__u64 skb;     /* skb address: a hint that only means something on one host */
	struct vnt_flow flow;
	__u32 ifindex;
	__u32 netns;   /* network namespace inode number */
	__u32 skb_len; /* bytes from the network header on (IP header + payload) */
	__u32 drop_reason; /* enum skb_drop_reason, VNT_EV_DROP only */
	__u32 tcp_seq;
	__u32 tcp_ack;
	__u8 tcp_flags;
	__u8 direction; /* enum vnt_direction */
	__u8 pkt_type;  /* skb->pkt_type (PACKET_HOST, PACKET_OTHERHOST, ...) */
	__u8 encap;     /* enum vnt_encap: 0, or the outer packet of this tunnel */
	__u32 ip_ident;
	char ifname[16];
	/*
	 * The process the hook ran for, where the hook knows it (0 when not):
	 * the reader at a socket read, the sender at a transmit that runs in
	 * the sending task's context. Appended in wire version 2.
	 */
	__u32 pid;
	__u32 _pad1;
};

/* The Rust mirror (plugin-api/src/wire.rs) asserts the same numbers. */
_Static_assert(sizeof(struct vnt_event_hdr) == 24, "vnt_event_hdr size");
_Static_assert(sizeof(struct vnt_flow) == 40, "vnt_flow size");
_Static_assert(sizeof(struct vnt_pkt_key) == 80, "vnt_pkt_key size");
_Static_assert(sizeof(struct vnt_packet_event) == 136, "vnt_packet_event size");
_Static_assert(__builtin_offsetof(struct vnt_packet_event, pid) == 128, "pid offset");
_Static_assert(__builtin_offsetof(struct vnt_packet_event, flow) == 40, "flow offset");
_Static_assert(__builtin_offsetof(struct vnt_packet_event, ifindex) == 80, "ifindex offset");
_Static_assert(__builtin_offsetof(struct vnt_packet_event, ifname) == 112, "ifname offset");

#endif /* VNT_EVENT_H */

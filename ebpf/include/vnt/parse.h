/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Packet header parsing for tracing programs (tp_btf, raw_tp, fentry,
 * kprobe): the skb's bytes are read with bpf_probe_read_kernel, so the same
 * code works at every hook that hands us a `struct sk_buff *`.
 *
 * Parsed: Ethernet, 802.1Q/802.1ad VLAN tags, IPv4 (options skipped,
 * fragments reported without ports), IPv6 (no extension headers), TCP
 * (timestamps option), UDP, ICMP, ICMPv6. `vnt_parse_l3` is the entry point
 * once the network header is known; `vnt_parse_eth` finds it from a frame.
 * Encapsulations (VXLAN) call `vnt_parse_l3` again on the inner frame.
 */
#ifndef VNT_PARSE_H
#define VNT_PARSE_H

#include "event.h"

#define VNT_ETH_P_IP 0x0800
#define VNT_ETH_P_IPV6 0x86DD
#define VNT_ETH_P_8021Q 0x8100
#define VNT_ETH_P_8021AD 0x88A8
#define VNT_IPPROTO_ICMP 1
#define VNT_IPPROTO_TCP 6
#define VNT_IPPROTO_UDP 17
#define VNT_IPPROTO_ICMPV6 58
#define VNT_NO_HEADER 0xffff /* skb->*_header when unset */

struct vnt_parsed {
	struct vnt_pkt_key key;
	__u32 tcp_seq;
	__u32 tcp_ack;
	__u8 tcp_flags;
};

/* Minimal on-the-wire layouts, so parsing does not depend on kernel headers. */
struct vnt_vlan_hdr {
	__be16 tci;
	__be16 proto;
};

struct vnt_tcp_fixed {
	__be16 source;
	__be16 dest;
	__be32 seq;
	__be32 ack_seq;
	__u8 doff_res; /* data offset in the high nibble */
	__u8 flags;
	__be16 window;
	__sum16 check;
	__be16 urg_ptr;
};

/*
 * Follow an Ethernet header and up to two VLAN tags starting at `l2`.
 * Returns the L3 pointer and sets *eth_proto (host order), or NULL.
 */
static __always_inline const void *vnt_parse_eth(const void *l2, __u16 *eth_proto)
{
	__be16 proto;

	if (bpf_probe_read_kernel(&proto, sizeof(proto), l2 + 12))
		return 0;
	const void *p = l2 + 14;

	for (int i = 0; i < 2; i++) {
		if (proto != bpf_htons(VNT_ETH_P_8021Q) && proto != bpf_htons(VNT_ETH_P_8021AD))
			break;
		struct vnt_vlan_hdr vh;

		if (bpf_probe_read_kernel(&vh, sizeof(vh), p))
			return 0;
		proto = vh.proto;
		p += sizeof(vh);
	}
	*eth_proto = bpf_ntohs(proto);
	return p;
}

/* TCP: ports, seq/ack, flags and the TSval of the timestamps option. */
static __always_inline void vnt_parse_tcp(const void *l4, struct vnt_parsed *out)
{
	struct vnt_tcp_fixed th;

	if (bpf_probe_read_kernel(&th, sizeof(th), l4))
		return;
	out->key.flow.sport = bpf_ntohs(th.source);
	out->key.flow.dport = bpf_ntohs(th.dest);
	out->tcp_seq = bpf_ntohl(th.seq);
	out->tcp_ack = bpf_ntohl(th.ack_seq);
	out->tcp_flags = th.flags;
	out->key.w0 = out->tcp_seq;
	out->key.w1 = out->tcp_ack;
	out->key.w3 = th.flags;

	__u32 optlen = ((th.doff_res >> 4) * 4);

	if (optlen <= sizeof(th))
		return;
	optlen -= sizeof(th);
	__u8 opts[64] = {};

	if (bpf_probe_read_kernel(opts, 40, l4 + sizeof(th)))
		return;
	__u32 off = 0;

	for (int n = 0; n < 10; n++) {
		if (off >= optlen || off >= 38)
			break;
		__u32 i = off;

		barrier_var(i); /* keep the masks below: the verifier needs them */
		__u8 kind = opts[i & 63];

		if (kind == 0)
			break;
		if (kind == 1) {
			off++;
			continue;
		}
		__u8 len = opts[(i + 1) & 63];

		if (kind == 8 && len == 10) {
			__u32 ts;

			ts = (__u32)opts[(i + 2) & 63] << 24 | (__u32)opts[(i + 3) & 63] << 16 |
			     (__u32)opts[(i + 4) & 63] << 8 | opts[(i + 5) & 63];
			out->key.w2 = ts;
			break;
		}
		if (len < 2)
			break;
		off += len;
	}
}

/*
 * Copy up to 16 payload bytes into the identity key, never past the end of
 * the linear data (`avail` bytes from `payload`) nor past the datagram.
 */
static __always_inline void vnt_key_payload(struct vnt_parsed *out, const void *payload, __s64 avail, __s64 datagram_left)
{
	__s64 n = avail < datagram_left ? avail : datagram_left;

	if (n <= 0)
		return;
	if (n >= 16)
		bpf_probe_read_kernel(out->key.payload, 16, payload);
	else
		bpf_probe_read_kernel(out->key.payload, n & 15, payload);
}

/*
 * Parse from the network header. `l3_end` is the end of the skb's linear
 * data (skb->head + skb->tail) and bounds the payload bytes we read.
 * Returns 0 when the packet is IPv4 or IPv6, -1 otherwise.
 */
static __always_inline int vnt_parse_l3(const void *l3, __u16 eth_proto, const void *l3_end, struct vnt_parsed *out)
{
	const void *l4;
	__u32 l4_len;
	bool first_fragment = true;

	if (eth_proto == VNT_ETH_P_IP) {
		struct iphdr ip;

		if (bpf_probe_read_kernel(&ip, sizeof(ip), l3))
			return -1;
		if (ip.version != 4 || ip.ihl < 5)
			return -1;
		out->key.flow.family = 4;
		out->key.flow.proto = ip.protocol;
		__builtin_memcpy(out->key.flow.saddr, &ip.saddr, 4);
		__builtin_memcpy(out->key.flow.daddr, &ip.daddr, 4);
		out->key.ip_ident = bpf_ntohs(ip.id);
		__u32 hlen = ip.ihl * 4;
		__u32 tot = bpf_ntohs(ip.tot_len);

		l4_len = tot > hlen ? tot - hlen : 0;
		l4 = l3 + hlen;
		if (bpf_ntohs(ip.frag_off) & 0x1fff)
			first_fragment = false;
	} else if (eth_proto == VNT_ETH_P_IPV6) {
		struct ipv6hdr ip6;

		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), l3))
			return -1;
		if (ip6.version != 6)
			return -1;
		out->key.flow.family = 6;
		out->key.flow.proto = ip6.nexthdr;
		__builtin_memcpy(out->key.flow.saddr, &ip6.saddr, 16);
		__builtin_memcpy(out->key.flow.daddr, &ip6.daddr, 16);
		out->key.ip_ident = ((__u32)(ip6.flow_lbl[0] & 0x0f) << 16) | ((__u32)ip6.flow_lbl[1] << 8) | ip6.flow_lbl[2];
		l4_len = bpf_ntohs(ip6.payload_len);
		l4 = l3 + sizeof(ip6);
	} else {
		return -1;
	}
	out->key.l4_len = l4_len;
	if (!first_fragment)
		return 0;

	__s64 avail = (__s64)(l3_end - l4);

	switch (out->key.flow.proto) {
	case VNT_IPPROTO_TCP:
		vnt_parse_tcp(l4, out);
		break;
	case VNT_IPPROTO_UDP: {
		struct udphdr uh;

		if (bpf_probe_read_kernel(&uh, sizeof(uh), l4))
			break;
		out->key.flow.sport = bpf_ntohs(uh.source);
		out->key.flow.dport = bpf_ntohs(uh.dest);
		out->key.w0 = bpf_ntohs(uh.len);
		vnt_key_payload(out, l4 + 8, avail - 8, (__s64)l4_len - 8);
		break;
	}
	case VNT_IPPROTO_ICMP:
	case VNT_IPPROTO_ICMPV6: {
		__u8 ih[8];

		if (bpf_probe_read_kernel(ih, sizeof(ih), l4))
			break;
		out->key.w0 = ((__u32)ih[0] << 8) | ih[1];
		out->key.w1 = ((__u32)ih[4] << 24) | ((__u32)ih[5] << 16) | ((__u32)ih[6] << 8) | ih[7];
		vnt_key_payload(out, l4 + 8, avail - 8, (__s64)l4_len - 8);
		break;
	}
	default:
		break;
	}
	return 0;
}

/*
 * Where is the network header of this skb? Hooks on the receive side before
 * __netif_receive_skb_core (netif_rx, netif_receive_skb) have skb->data at
 * L3; elsewhere skb->network_header is set by the IP layer on transmit and by
 * the receive path for forwarded and bridged packets. With neither, a frame
 * at skb->data is parsed as Ethernet.
 */
static __always_inline int vnt_parse_skb(struct sk_buff *skb, bool data_is_l3, struct vnt_parsed *out)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	unsigned char *data = BPF_CORE_READ(skb, data);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u16 proto = bpf_ntohs(BPF_CORE_READ(skb, protocol));
	const void *end = head + BPF_CORE_READ(skb, tail);
	const void *l3;

	if (data_is_l3)
		l3 = data;
	else if (nh != VNT_NO_HEADER)
		l3 = head + nh;
	else if (!(l3 = vnt_parse_eth(data, &proto)))
		return -1;
	if (proto == VNT_ETH_P_8021Q || proto == VNT_ETH_P_8021AD)
		return -1;
	return vnt_parse_l3(l3, proto, end, out);
}

#endif /* VNT_PARSE_H */

/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Packet header parsing for tracing programs (tp_btf, raw_tp, fentry,
 * kprobe). A packet's headers are copied out of the skb ONCE, with a single
 * bpf_probe_read_kernel bounded by the skb's linear data, into a buffer on
 * the stack, and parsed from there: one helper call per hook instead of one
 * per header (docs/adr/007-fast-packet-pipeline.md).
 *
 * Parsed: Ethernet, 802.1Q/802.1ad VLAN tags (up to two), IPv4 (options
 * skipped, non-first fragments reported without ports), IPv6 (no extension
 * headers), TCP (timestamps option), UDP, ICMP, ICMPv6. Nothing is read past
 * what was copied, and nothing is copied past the skb's linear data: a header
 * cut short leaves its fields zero.
 *
 * `vnt_parse_buf` parses a copy that starts at L2 or L3; `vnt_headers_copy`
 * makes that copy from an skb. Encapsulations (VXLAN) parse the inner frame
 * by calling `vnt_parse_buf` on a copy that starts past the outer headers.
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

/*
 * Bytes copied per packet. Covers the longest header stack parsed here:
 * 2 VLAN tags + Ethernet (22) + IPv4 with options (60) + TCP with options
 * (60) = 142 would not fit, but the fields read stop earlier: TCP options
 * are read up to byte 118 of the copy (an L3 start) and the payload bytes of
 * the identity up to byte 106. A copy that starts at L2 reads up to 22 bytes
 * less of TCP options, which only matters for IPv4 options + TCP options.
 */
#define VNT_HDR_COPY 128
#define VNT_HDR_MASK (VNT_HDR_COPY - 1)

struct vnt_parsed {
	struct vnt_pkt_key key;
	__u32 tcp_seq;
	__u32 tcp_ack;
	__u8 tcp_flags;
};

/* A packet's first bytes, copied once. `len` bytes are valid, the rest zero. */
struct vnt_hdr_buf {
	union {
		__u8 b[VNT_HDR_COPY];
		__u64 w[VNT_HDR_COPY / 8];
	};
	__u32 len;
};

/* Big-endian reads from the copy; offsets are masked so the verifier can
 * bound them, and callers check them against `len` first. */
static __always_inline __u16 vnt_be16(const struct vnt_hdr_buf *h, __u32 off)
{
	return (__u16)h->b[off & VNT_HDR_MASK] << 8 | h->b[(off + 1) & VNT_HDR_MASK];
}

static __always_inline __u32 vnt_be32(const struct vnt_hdr_buf *h, __u32 off)
{
	return (__u32)vnt_be16(h, off) << 16 | vnt_be16(h, off + 2);
}

/* TCP: ports, seq/ack, flags and the TSval of the timestamps option. */
static __always_inline void vnt_parse_tcp(const struct vnt_hdr_buf *h, __u32 l4, struct vnt_parsed *out)
{
	if (l4 + 20 > h->len)
		return;
	out->key.flow.sport = vnt_be16(h, l4);
	out->key.flow.dport = vnt_be16(h, l4 + 2);
	out->tcp_seq = vnt_be32(h, l4 + 4);
	out->tcp_ack = vnt_be32(h, l4 + 8);
	out->tcp_flags = h->b[(l4 + 13) & VNT_HDR_MASK];
	out->key.w0 = out->tcp_seq;
	out->key.w1 = out->tcp_ack;
	out->key.w3 = out->tcp_flags;

	__u32 doff = (h->b[(l4 + 12) & VNT_HDR_MASK] >> 4) * 4;
	__u32 end = l4 + doff; /* end of the options */

	if (end > h->len)
		end = h->len;
	__u32 off = l4 + 20;

	for (int n = 0; n < 10; n++) {
		if (off + 1 >= end)
			break;
		__u8 kind = h->b[off & VNT_HDR_MASK];

		if (kind == 0)
			break;
		if (kind == 1) {
			off++;
			continue;
		}
		__u8 len = h->b[(off + 1) & VNT_HDR_MASK];

		if (kind == 8 && len == 10) {
			if (off + 6 <= end)
				out->key.w2 = vnt_be32(h, off + 2);
			break;
		}
		if (len < 2)
			break;
		off += len;
	}
}

/*
 * Copy up to 16 payload bytes into the identity key: never past what was
 * copied nor past the datagram (`datagram_end`, an offset in the copy), so
 * link-layer padding and bytes beyond the linear data never enter the id.
 */
static __always_inline void vnt_key_payload(struct vnt_parsed *out, const struct vnt_hdr_buf *h, __u32 off,
					    __u32 datagram_end)
{
	__u32 end = datagram_end < h->len ? datagram_end : h->len;

	for (int i = 0; i < 16; i++) {
		if (off + i >= end)
			break;
		out->key.payload[i] = h->b[(off + i) & VNT_HDR_MASK];
	}
}

/*
 * Parse the copy from offset `l3` (an L3 header of type `eth_proto`, host
 * order). Returns 0 when the packet is IPv4 or IPv6, -1 otherwise.
 */
static __always_inline int vnt_parse_l3(const struct vnt_hdr_buf *h, __u32 l3, __u16 eth_proto, struct vnt_parsed *out)
{
	__u32 l4, l4_len;
	bool first_fragment = true;

	l3 &= 31; /* at most 22: Ethernet and two VLAN tags */
	if (eth_proto == VNT_ETH_P_IP) {
		if (l3 + 20 > h->len)
			return -1;
		__u8 vihl = h->b[l3];

		if ((vihl >> 4) != 4 || (vihl & 0xf) < 5)
			return -1;
		__u32 hlen = (vihl & 0xf) * 4;
		__u32 tot = vnt_be16(h, l3 + 2);

		out->key.flow.family = 4;
		out->key.flow.proto = h->b[l3 + 9];
		for (int i = 0; i < 4; i++) {
			out->key.flow.saddr[i] = h->b[l3 + 12 + i];
			out->key.flow.daddr[i] = h->b[l3 + 16 + i];
		}
		out->key.ip_ident = vnt_be16(h, l3 + 4);
		l4_len = tot > hlen ? tot - hlen : 0;
		l4 = l3 + hlen;
		if (vnt_be16(h, l3 + 6) & 0x1fff)
			first_fragment = false;
	} else if (eth_proto == VNT_ETH_P_IPV6) {
		if (l3 + 40 > h->len)
			return -1;
		if ((h->b[l3] >> 4) != 6)
			return -1;
		out->key.flow.family = 6;
		out->key.flow.proto = h->b[l3 + 6];
		for (int i = 0; i < 16; i++) {
			out->key.flow.saddr[i] = h->b[l3 + 8 + i];
			out->key.flow.daddr[i] = h->b[l3 + 24 + i];
		}
		out->key.ip_ident = ((__u32)(h->b[l3 + 1] & 0x0f) << 16) | ((__u32)h->b[l3 + 2] << 8) | h->b[l3 + 3];
		l4_len = vnt_be16(h, l3 + 4);
		l4 = l3 + 40;
	} else {
		return -1;
	}
	out->key.l4_len = l4_len;
	if (!first_fragment)
		return 0;

	__u32 datagram_end = l4 + l4_len;

	switch (out->key.flow.proto) {
	case VNT_IPPROTO_TCP:
		vnt_parse_tcp(h, l4, out);
		break;
	case VNT_IPPROTO_UDP:
		if (l4 + 8 > h->len)
			break;
		out->key.flow.sport = vnt_be16(h, l4);
		out->key.flow.dport = vnt_be16(h, l4 + 2);
		out->key.w0 = vnt_be16(h, l4 + 4);
		vnt_key_payload(out, h, l4 + 8, datagram_end);
		break;
	case VNT_IPPROTO_ICMP:
	case VNT_IPPROTO_ICMPV6:
		if (l4 + 8 > h->len)
			break;
		out->key.w0 = vnt_be16(h, l4);
		out->key.w1 = vnt_be32(h, l4 + 4);
		vnt_key_payload(out, h, l4 + 8, datagram_end);
		break;
	default:
		break;
	}
	return 0;
}

/*
 * Parse a copy that starts at an Ethernet header: skip up to two VLAN tags,
 * then parse L3. Returns 0 for IPv4/IPv6, -1 otherwise.
 */
static __always_inline int vnt_parse_eth(const struct vnt_hdr_buf *h, struct vnt_parsed *out)
{
	__u32 off = 14;

	if (h->len < 14)
		return -1;
	__u16 proto = vnt_be16(h, 12);

	for (int i = 0; i < 2; i++) {
		if (proto != VNT_ETH_P_8021Q && proto != VNT_ETH_P_8021AD)
			break;
		if (off + 4 > h->len)
			return -1;
		proto = vnt_be16(h, off + 2);
		off += 4;
	}
	return vnt_parse_l3(h, off, proto, out);
}

/*
 * Copy up to VNT_HDR_COPY bytes from `from`, never past `end` (the end of
 * the skb's linear data). Returns the number of bytes copied (0: nothing
 * readable). One helper call.
 */
static __always_inline __u32 vnt_headers_copy(struct vnt_hdr_buf *h, const void *from, const void *end)
{
	__s64 avail = (__s64)(end - from);
	__u32 n;

	if (avail <= 0)
		return 0;
	n = avail < VNT_HDR_COPY ? (__u32)avail : VNT_HDR_COPY;
	n &= 0xff;
	if (n > VNT_HDR_COPY)
		return 0;
	if (bpf_probe_read_kernel(h->b, n, from))
		return 0;
	h->len = n;
	return n;
}

#endif /* VNT_PARSE_H */

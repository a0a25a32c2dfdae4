/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Packet header parsing for tracing programs (tp_btf, raw_tp, fentry,
 * kprobe). A packet's headers are copied out of the skb ONCE, with a single
 * bpf_probe_read_kernel bounded by the skb's linear data, into a buffer on
 * the stack, and parsed from there: one helper call per hook instead of one
 * per header (docs/adr/007-fast-packet-pipeline.md).
 *
 * Parsed: Ethernet, 802.1Q/802.1ad VLAN tags (up to two), IPv4 (options
 * skipped, non-first fragments reported without ports), IPv6 (up to
 * VNT_IPV6_MAX_EXT extension headers walked, fragments as for IPv4), TCP
 * (timestamps option), UDP, ICMP, ICMPv6. Nothing is read past what was
 * copied, nothing is copied past the skb's linear data, and no transport
 * field is read past the IP datagram's own length: a header cut short leaves
 * its fields zero.
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
	/* A TCP header left for vnt_parse_tcp: its offset in the copy and where
	 * the copy or the datagram ends (0: none). See vnt_parse_l3. */
	__u8 tcp_off;
	__u8 tcp_end;
	/* A UDP header's offset in the copy (0: none): where a tunnel's
	 * header starts past it. See vnt_parse_tunnel. */
	__u8 udp_off;
	/* Which tunnel the packet was identified through (enum vnt_encap):
	 * 0 for a plain packet, else the copy was an outer packet and every
	 * field above is its inner packet's. */
	__u8 encap;
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

/*
 * TCP: ports, seq/ack, flags and the TSval of the timestamps option. `end`
 * is where the copy or the datagram ends, whichever is first. A header cut
 * short, or one whose data offset is below 5 words, gives no ports.
 *
 * A global function: the verifier checks its option loop once, not once per
 * path of the IPv6 extension-header walk that leads to it. Callers call it
 * after vnt_parse_l3/vnt_parse_eth, when those left `tcp_off` set, and not
 * from inside another global function: the verifier limits the stack of a
 * whole call chain to 512 bytes (kernel 6.1 refused main + 2 levels).
 */
__noinline int vnt_parse_tcp(const struct vnt_hdr_buf *h, __u32 l4, __u32 lim, struct vnt_parsed *out)
{
	if (!h || !out)
		return 0;
	if (l4 + 20 > lim || (h->b[(l4 + 12) & VNT_HDR_MASK] >> 4) < 5)
		return 0;
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

	if (end > lim)
		end = lim;
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
	return 0;
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

#define VNT_IPPROTO_HOPOPTS 0
#define VNT_IPPROTO_ROUTING 43
#define VNT_IPPROTO_FRAGMENT 44
#define VNT_IPPROTO_AH 51
#define VNT_IPPROTO_DSTOPTS 60

/* IPv6 extension headers walked before giving up on finding the transport. */
#define VNT_IPV6_MAX_EXT 6

/*
 * Walk IPv6 extension headers (hop-by-hop, routing, destination options,
 * fragment, AH; at most VNT_IPV6_MAX_EXT) from offset *l4 with next header
 * *proto. On return *proto is the upper-layer protocol and *l4 its offset,
 * or *proto is the extension header the walk stopped at (cut short by the
 * copy, longer than the datagram, or one too many) and the return value is
 * false: no transport header. `end` is where the copy or the datagram ends,
 * whichever is first; `dgram_end` where the datagram ends. An extension
 * header that ends past the copy but inside the datagram gives its next
 * header as the protocol, with no ports (they are beyond the copy). A
 * fragment header with a non-zero offset also returns false, with *proto its
 * next header: a non-first fragment has no transport header. `*frag` is set
 * to the fragment header's offset/flags word (raw, bit 16 set) and
 * `*frag_id` to its identification when one is met.
 */
static __always_inline bool vnt_ipv6_ext(const struct vnt_hdr_buf *h, __u32 *l4, __u8 *proto, __u32 end,
					 __u32 dgram_end, __u32 *frag, __u32 *frag_id)
{
	for (int i = 0; i < VNT_IPV6_MAX_EXT; i++) {
		__u8 nh = *proto;
		__u32 off = *l4;
		__u32 hlen;

		if (nh != VNT_IPPROTO_HOPOPTS && nh != VNT_IPPROTO_ROUTING && nh != VNT_IPPROTO_DSTOPTS &&
		    nh != VNT_IPPROTO_FRAGMENT && nh != VNT_IPPROTO_AH)
			return true;
		if (nh == VNT_IPPROTO_FRAGMENT) {
			if (off + 8 > end)
				return false;
			__u16 fo = vnt_be16(h, off + 2);

			*frag = fo | 0x10000; /* bit 16: a fragment header was seen */
			*frag_id = vnt_be32(h, off + 4);
			*proto = h->b[off & VNT_HDR_MASK];
			*l4 = off + 8;
			if (fo & 0xfff8)
				return false; /* offset != 0: no transport header here */
			continue;
		}
		if (off + 2 > end)
			return false;
		if (nh == VNT_IPPROTO_AH)
			hlen = ((__u32)h->b[(off + 1) & VNT_HDR_MASK] + 2) * 4;
		else
			hlen = ((__u32)h->b[(off + 1) & VNT_HDR_MASK] + 1) * 8;
		if (off + hlen > dgram_end)
			return false; /* longer than the datagram: malformed */
		*proto = h->b[off & VNT_HDR_MASK];
		*l4 = off + hlen;
	}
	/* Still an extension header after VNT_IPV6_MAX_EXT of them. */
	__u8 nh = *proto;

	return nh != VNT_IPPROTO_HOPOPTS && nh != VNT_IPPROTO_ROUTING && nh != VNT_IPPROTO_DSTOPTS &&
	       nh != VNT_IPPROTO_FRAGMENT && nh != VNT_IPPROTO_AH;
}

/*
 * Parse the copy from offset `l3` (an L3 header of type `eth_proto`, host
 * order). Returns 0 when the packet is IPv4 or IPv6, -1 otherwise.
 *
 * Every transport field is read only when it lies inside both the copy
 * (`h->len`, itself bounded by the skb's linear data) and the IP datagram
 * (IPv4 total length, IPv6 payload length): link-layer padding, trailers and
 * bytes past a truncated header never become ports, flags or payload. A
 * header cut short leaves the ports zero ("no ports"). An IP length of 0
 * (BIG TCP / jumbograms) bounds by the copy only.
 *
 * Fragments: a non-first fragment (IPv4 offset != 0, or an IPv6 fragment
 * header with offset != 0) has no transport header. It is reported with the
 * IP protocol of the datagram (`proto`: the IPv4 protocol, or the fragment
 * header's next header) and no ports, so `proto` filters match every
 * fragment and `port`/`sport`/`dport` filters match only the first one
 * (docs/adr/010-hostile-packets.md). Its identity takes the fragment offset and
 * its first bytes instead of transport fields.
 *
 * TCP is parsed in two steps: this sets `tcp_off`/`tcp_end`, then the caller
 * runs vnt_parse_tcp(h, out->tcp_off, out->tcp_end, out) (ports, seq, ack,
 * flags, TSval).
 */
static __always_inline int vnt_parse_l3(const struct vnt_hdr_buf *h, __u32 l3, __u16 eth_proto, struct vnt_parsed *out)
{
	__u32 l4, l4_len, dgram_len;
	__u32 frag = 0, frag_id = 0;
	bool has_transport = true, nonfirst = false;

	/* At most 22 for an outer packet (Ethernet and two VLAN tags), further
	 * for a tunnel's inner packet; every read below is masked into the copy
	 * and checked against `len` first. */
	l3 &= VNT_HDR_MASK;
	if (eth_proto == VNT_ETH_P_IP) {
		if (l3 + 20 > h->len)
			return -1;
		__u8 vihl = h->b[l3 & VNT_HDR_MASK];

		if ((vihl >> 4) != 4 || (vihl & 0xf) < 5)
			return -1;
		__u32 hlen = (vihl & 0xf) * 4;
		__u32 tot = vnt_be16(h, l3 + 2);

		out->key.flow.family = 4;
		out->key.flow.proto = h->b[(l3 + 9) & VNT_HDR_MASK];
		for (int i = 0; i < 4; i++) {
			out->key.flow.saddr[i] = h->b[(l3 + 12 + i) & VNT_HDR_MASK];
			out->key.flow.daddr[i] = h->b[(l3 + 16 + i) & VNT_HDR_MASK];
		}
		out->key.ip_ident = vnt_be16(h, l3 + 4);
		l4_len = tot > hlen ? tot - hlen : 0;
		dgram_len = tot ? tot : VNT_HDR_COPY;
		l4 = l3 + hlen;
		if (tot && tot < hlen)
			has_transport = false; /* total length inside the header */
		__u16 fo = vnt_be16(h, l3 + 6);

		if (fo & 0x1fff) {
			frag = fo | 0x10000;
			has_transport = false;
			nonfirst = true;
		}
	} else if (eth_proto == VNT_ETH_P_IPV6) {
		if (l3 + 40 > h->len)
			return -1;
		if ((h->b[l3 & VNT_HDR_MASK] >> 4) != 6)
			return -1;
		__u8 nh = h->b[(l3 + 6) & VNT_HDR_MASK];
		__u32 plen = vnt_be16(h, l3 + 4);

		out->key.flow.family = 6;
		for (int i = 0; i < 16; i++) {
			out->key.flow.saddr[i] = h->b[(l3 + 8 + i) & VNT_HDR_MASK];
			out->key.flow.daddr[i] = h->b[(l3 + 24 + i) & VNT_HDR_MASK];
		}
		out->key.ip_ident = ((__u32)(h->b[(l3 + 1) & VNT_HDR_MASK] & 0x0f) << 16) |
				    ((__u32)h->b[(l3 + 2) & VNT_HDR_MASK] << 8) | h->b[(l3 + 3) & VNT_HDR_MASK];
		l4_len = plen;
		dgram_len = plen ? 40 + plen : VNT_HDR_COPY;
		l4 = l3 + 40;
		__u32 end = l3 + dgram_len < h->len ? l3 + dgram_len : h->len;

		has_transport = vnt_ipv6_ext(h, &l4, &nh, end, l3 + dgram_len, &frag, &frag_id);
		nonfirst = (frag & 0x1fff8) > 0x10000; /* a fragment header with offset != 0 */
		out->key.flow.proto = nh;
		/* Transport length: what follows the extension headers. */
		if (plen)
			l4_len = l4 - l3 < dgram_len ? dgram_len - (l4 - l3) : 0;
		if (frag) /* the datagram's fragments share its identification */
			out->key.ip_ident ^= frag_id;
	} else {
		return -1;
	}
	out->key.l4_len = l4_len;

	/* The end of what may be parsed: the copy and the datagram, whichever ends first. */
	__u32 end = l3 + dgram_len < h->len ? l3 + dgram_len : h->len;

	if (!has_transport) {
		if (nonfirst) {
			/* No transport header: the fragment is identified by its
			 * offset/flags and its first bytes. */
			out->key.w0 = frag;
			vnt_key_payload(out, h, l4, end);
		}
		return 0;
	}

	switch (out->key.flow.proto) {
	case VNT_IPPROTO_TCP:
		/* Left to vnt_parse_tcp, called by the pipeline beside this parse
		 * rather than inside it (see there). Only a header that fits. */
		if (l4 + 20 <= end) {
			out->tcp_off = l4;
			out->tcp_end = end;
		}
		break;
	case VNT_IPPROTO_UDP:
		if (l4 + 8 > end)
			break;
		out->key.flow.sport = vnt_be16(h, l4);
		out->key.flow.dport = vnt_be16(h, l4 + 2);
		out->key.w0 = vnt_be16(h, l4 + 4);
		out->udp_off = l4;
		vnt_key_payload(out, h, l4 + 8, end);
		break;
	case VNT_IPPROTO_ICMP:
	case VNT_IPPROTO_ICMPV6:
		if (l4 + 8 > end)
			break;
		out->key.w0 = vnt_be16(h, l4);
		out->key.w1 = vnt_be32(h, l4 + 4);
		vnt_key_payload(out, h, l4 + 8, end);
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

/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * The shared per-packet pipeline every packet plugin runs at its hooks:
 *
 *   device/netns filter -> copy headers once -> parse -> flow filter ->
 *   packet id -> sampled? -> reserve -> fill -> submit
 *
 * cheapest rejection first, nothing reserved until the end, and exactly one
 * counter incremented per run (the outcome; the agent adds them up for
 * "seen"). Include it after vmlinux.h and the libbpf headers; it includes
 * common.h and parse.h.
 *
 * `typed` is a compile-time constant per program: true in tp_btf and fentry
 * programs, whose `struct sk_buff *` arguments the verifier lets us
 * dereference directly (a plain load, a few times cheaper than a
 * bpf_probe_read_kernel call); false in raw_tp and kprobe programs, which
 * must read through BPF_CORE_READ. Both are CO-RE relocated; the compiler
 * drops the branch not taken (docs/adr/007-fast-packet-pipeline.md).
 */
#ifndef VNT_PIPELINE_H
#define VNT_PIPELINE_H

#include "common.h"
#include "parse.h"

/* Read src->a->b... directly (typed) or through bpf_probe_read_kernel. */
#define VNT_READ(typed, src, a, ...) ((typed) ? ___arrow(src, a, ##__VA_ARGS__) : BPF_CORE_READ(src, a, ##__VA_ARGS__))

/* What a packet hook reports about the packet it sees. */
struct vnt_hook_ctx {
	__u16 hook;       /* plugin's hook id */
	__u16 kind;       /* VNT_EV_PACKET or VNT_EV_DROP */
	__u8 direction;   /* enum vnt_direction */
	bool typed;       /* tp_btf / fentry: direct reads */
	bool data_is_l3;  /* skb->data points at the network header here */
	__u32 drop_reason;
};

static __always_inline __u32 vnt_dev_netns(const struct net_device *dev, bool typed)
{
	if (!dev)
		return 0;
	return VNT_READ(typed, dev, nd_net.net, ns.inum);
}

/*
 * Copy the packet's first bytes: from the network header when it is known
 * (or when skb->data is there), else from skb->data as an Ethernet frame.
 * Returns -1 when nothing could be parsed as IP.
 */
static __always_inline int vnt_parse_skb(struct sk_buff *skb, const struct vnt_hook_ctx c, struct vnt_parsed *p)
{
	unsigned char *head = VNT_READ(c.typed, skb, head);
	unsigned char *data = VNT_READ(c.typed, skb, data);
	const void *end = head + VNT_READ(c.typed, skb, tail);
	struct vnt_hdr_buf h = {};

	if (c.data_is_l3) {
		if (!vnt_headers_copy(&h, data, end))
			return -1;
		return vnt_parse_l3(&h, 0, bpf_ntohs(VNT_READ(c.typed, skb, protocol)), p);
	}
	__u16 nh = VNT_READ(c.typed, skb, network_header);

	if (nh != VNT_NO_HEADER) {
		if (!vnt_headers_copy(&h, head + nh, end))
			return -1;
		return vnt_parse_l3(&h, 0, bpf_ntohs(VNT_READ(c.typed, skb, protocol)), p);
	}
	if (!vnt_headers_copy(&h, data, end))
		return -1;
	return vnt_parse_eth(&h, p);
}

/*
 * Run the pipeline for one packet at one hook; emit a struct
 * vnt_packet_event when it passes the filter and is sampled.
 */
static __always_inline int vnt_packet_observe(struct sk_buff *skb, const struct net_device *dev,
					      const struct vnt_hook_ctx c)
{
	__u32 netns = 0;

	/* 1. Device and namespace filter: no packet byte read yet. */
	if (vnt_filter.flags & (VNT_F_DEV | VNT_F_NETNS)) {
		char name[16] = {};

		if (dev) {
			if (c.typed)
				__builtin_memcpy(name, dev->name, sizeof(name));
			else
				BPF_CORE_READ_STR_INTO(&name, dev, name);
		}
		netns = vnt_dev_netns(dev, c.typed);
		if (!vnt_dev_wanted(name, netns)) {
			vnt_count(VNT_STAT_FILTERED);
			return 0;
		}
	}

	/* 2. Headers: one copy, parsed on the stack. */
	struct vnt_parsed p = {};

	if (vnt_parse_skb(skb, c, &p)) {
		vnt_count(VNT_STAT_NOT_IP);
		return 0;
	}
	/* 3. Flow filter, 4. identity, 5. sampling. */
	if (!vnt_flow_wanted(&p.key.flow)) {
		vnt_count(VNT_STAT_FILTERED);
		return 0;
	}
	__u64 id = vnt_pkt_hash(&p.key);

	if (!vnt_sampled(id)) {
		vnt_count(VNT_STAT_UNSAMPLED);
		return 0;
	}

	/* 6. Emit. */
	struct vnt_packet_event *e = vnt_reserve(sizeof(*e));

	if (!e)
		return 0;
	vnt_fill_hdr(&e->hdr, c.kind, c.hook, sizeof(*e));
	e->pkt_id = id;
	e->skb = (__u64)skb;
	e->flow = p.key.flow;
	if (dev) {
		if (c.typed) {
			__builtin_memcpy(e->ifname, dev->name, sizeof(e->ifname));
			e->ifindex = dev->ifindex;
		} else {
			__builtin_memset(e->ifname, 0, sizeof(e->ifname));
			BPF_CORE_READ_STR_INTO(&e->ifname, dev, name);
			e->ifindex = BPF_CORE_READ(dev, ifindex);
		}
		e->netns = netns ? netns : vnt_dev_netns(dev, c.typed);
	} else {
		__builtin_memset(e->ifname, 0, sizeof(e->ifname));
		e->ifindex = 0;
		e->netns = 0;
	}
	e->skb_len = VNT_READ(c.typed, skb, len);
	e->drop_reason = c.drop_reason;
	e->tcp_seq = p.tcp_seq;
	e->tcp_ack = p.tcp_ack;
	e->tcp_flags = p.tcp_flags;
	e->direction = c.direction;
	if (c.typed)
		e->pkt_type = BPF_CORE_READ_BITFIELD(skb, pkt_type);
	else
		e->pkt_type = BPF_CORE_READ_BITFIELD_PROBED(skb, pkt_type);
	e->_pad0 = 0;
	e->ip_ident = p.key.ip_ident;
	vnt_submit(e);
	return 0;
}

#endif /* VNT_PIPELINE_H */

// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * flannel: the overlay between hosts. A pod's packet enters the overlay
 * device (flannel.1, a VXLAN device; or flannel0, the TUN device of
 * flannel's UDP backend) and is encapsulated into an outer UDP packet that
 * crosses the underlay; on the other host the outer packet arrives on the
 * underlay and the inner packet emerges from the overlay device.
 *
 * The shared pipeline identifies a tunnel's outer packet by its inner
 * headers (vnt_parse_tunnel in vnt/pipeline.h), so the outer packet's hooks
 * here report the inner packet's id: the decoder nests them, as substeps,
 * under the inner packet's encapsulation hop (sender) and decapsulation hop
 * (receiver). Each hop appends a `struct flannel_tail` to the packet record:
 * the VNI and, for outer packets, the outer addresses and ports.
 *
 * Tracepoints only (tp_btf, raw_tp): the kernel's VXLAN and UDP-tunnel
 * transmit paths (vxlan_xmit_one, udp_tunnel_xmit_skb, iptunnel_xmit) have
 * no tracepoints and kprobes are not everywhere. net_dev_start_xmit and
 * netif_receive_skb fire for every device: the overlay hooks keep those of
 * VXLAN and TUN devices (rtnl_link_ops->kind), the outer hooks those packets
 * the pipeline found to be a tunnel's outer ones.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

#include "vnt/pipeline.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Hook ids: the decoder in src/lib.rs names them. */
enum flannel_hook {
	FLANNEL_HOOK_ENCAP = 1,         /* the inner packet enters the overlay device's transmit */
	FLANNEL_HOOK_OUTER_XMIT = 2,    /* the outer packet leaves through an underlay device */
	FLANNEL_HOOK_OUTER_RECEIVE = 3, /* the outer packet arrives on an underlay device */
	FLANNEL_HOOK_DECAP = 4,         /* the inner packet emerges from the overlay device */
	FLANNEL_HOOK_DAEMON_READ = 5,   /* the UDP backend's daemon reads it from the TUN device */
	FLANNEL_HOOK_DROP = 6,          /* freed with a drop reason: an outer packet, or on an overlay device */
};

/* flannel_tail.overlay */
enum flannel_overlay {
	FLANNEL_OVERLAY_NONE = 0,
	FLANNEL_OVERLAY_VXLAN = 1,
	FLANNEL_OVERLAY_TUN = 2,
};

/* What a flannel hop adds after its struct vnt_packet_event. */
struct flannel_tail {
	__u8 outer_saddr[16]; /* outer packet: network order, IPv4 in the first 4 bytes */
	__u8 outer_daddr[16];
	__u16 outer_sport; /* host order */
	__u16 outer_dport;
	__u8 outer_family; /* 4 or 6; 0 on the inner packet's hops */
	__u8 overlay;      /* enum flannel_overlay: the device's kind, or the outer packet's tunnel */
	__u8 has_vni;
	__u8 _pad;
	__u32 vni;
};

VNT_RECORD(flannel_tail);

struct flannel_record {
	struct vnt_packet_event e;
	struct flannel_tail t;
};

/* The overlay kind of a device: VXLAN, TUN, or neither. */
static __always_inline __u8 flannel_overlay_of(const struct net_device *dev, bool typed)
{
	char k[8];

	vnt_dev_kind(dev, typed, k);
	if (k[0] == 'v' && k[1] == 'x' && k[2] == 'l' && k[3] == 'a' && k[4] == 'n' && k[5] == 0)
		return FLANNEL_OVERLAY_VXLAN;
	if (k[0] == 't' && k[1] == 'u' && k[2] == 'n' && k[3] == 0)
		return FLANNEL_OVERLAY_TUN;
	return FLANNEL_OVERLAY_NONE;
}

/*
 * struct vxlan_dev is the vxlan module's type where VXLAN is a module (Debian,
 * most distributions): the flavor `___mod_vxlan` tells the agent to relocate
 * against that module's BTF too (agent/src/probes/mod.rs, modules_in_object).
 * Where the module's BTF was not there at load (the module not loaded yet, no
 * module BTF), the type does not exist, the read is poisoned, and it must be
 * unreachable: a function that is not inlined, called behind
 * bpf_core_type_exists() (as in ovs.bpf.c); the hop then carries no VNI.
 */
struct vxlan_config___mod_vxlan {
	__be32 vni;
} __attribute__((preserve_access_index));

struct vxlan_dev___mod_vxlan {
	struct vxlan_config___mod_vxlan cfg;
} __attribute__((preserve_access_index));

static __noinline __u32 flannel_vni_read(const void *dev)
{
	__u64 priv = ((__u64)bpf_core_type_size(struct net_device) + 31) & ~31ULL;
	const struct vxlan_dev___mod_vxlan *vx = dev + priv;

	return bpf_ntohl(BPF_CORE_READ(vx, cfg.vni));
}

/* The VNI of a VXLAN device (its private area, netdev_priv, is a struct
 * vxlan_dev) into t; nothing when the type is unknown here. */
static __always_inline void flannel_dev_vni(const struct net_device *dev, struct flannel_tail *t)
{
	if (bpf_core_type_exists(struct vxlan_dev___mod_vxlan)) {
		t->vni = flannel_vni_read(dev);
		t->has_vni = 1;
	}
}

/* An overlay device's hop: the inner packet enters it (encap) or emerges (decap). */
static __always_inline int flannel_overlay_hop(struct sk_buff *skb, const struct net_device *dev, __u8 overlay,
					       enum flannel_hook hook, bool typed, bool data_is_l3, __u8 direction)
{
	struct vnt_hook_ctx c = {
		.hook = hook,
		.kind = VNT_EV_PACKET,
		.direction = direction,
		.typed = typed,
		.data_is_l3 = data_is_l3,
		.outer = VNT_OUTER_SKIP,
	};
	struct flannel_record *r = (void *)vnt_packet_reserve(skb, dev, c, sizeof(*r));

	if (!r)
		return 0;
	__builtin_memset(&r->t, 0, sizeof(r->t));
	r->t.overlay = overlay;
	if (overlay == FLANNEL_OVERLAY_VXLAN)
		flannel_dev_vni(dev, &r->t);
	vnt_submit(r);
	return 0;
}

/* Outer headers, from the network header: IP, UDP, and VXLAN's VNI. */
static __always_inline void flannel_outer(struct sk_buff *skb, bool typed, struct flannel_tail *t, __u8 encap)
{
	unsigned char *head = VNT_READ(typed, skb, head);
	__u16 nh = VNT_READ(typed, skb, network_header);
	__u8 b[64] = {};

	if (nh == VNT_NO_HEADER || bpf_probe_read_kernel(b, sizeof(b), head + nh))
		return;
	__u32 l4;

	if ((b[0] >> 4) == 4) {
		t->outer_family = 4;
		__builtin_memcpy(t->outer_saddr, &b[12], 4);
		__builtin_memcpy(t->outer_daddr, &b[16], 4);
		l4 = (b[0] & 0xf) * 4;
	} else if ((b[0] >> 4) == 6) {
		t->outer_family = 6;
		__builtin_memcpy(t->outer_saddr, &b[8], 16);
		__builtin_memcpy(t->outer_daddr, &b[24], 16);
		l4 = 40;
	} else {
		return;
	}
	if (l4 + 16 > sizeof(b))
		return;
	t->outer_sport = (__u16)b[l4 & 63] << 8 | b[(l4 + 1) & 63];
	t->outer_dport = (__u16)b[(l4 + 2) & 63] << 8 | b[(l4 + 3) & 63];
	if (encap == VNT_ENCAP_VXLAN) {
		t->vni = (__u32)b[(l4 + 12) & 63] << 16 | (__u32)b[(l4 + 13) & 63] << 8 | b[(l4 + 14) & 63];
		t->has_vni = 1;
	}
}

/* The outer packet of a tunnel on an underlay device. */
static __always_inline int flannel_outer_hop(struct sk_buff *skb, const struct net_device *dev,
					     enum flannel_hook hook, bool typed, bool data_is_l3, __u8 direction)
{
	struct vnt_hook_ctx c = {
		.hook = hook,
		.kind = VNT_EV_PACKET,
		.direction = direction,
		.typed = typed,
		.data_is_l3 = data_is_l3,
		.outer = VNT_OUTER_ONLY,
	};
	struct flannel_record *r = (void *)vnt_packet_reserve(skb, dev, c, sizeof(*r));

	if (!r)
		return 0;
	__builtin_memset(&r->t, 0, sizeof(r->t));
	r->t.overlay = r->e.encap == VNT_ENCAP_VXLAN ? FLANNEL_OVERLAY_VXLAN : FLANNEL_OVERLAY_TUN;
	flannel_outer(skb, typed, &r->t, r->e.encap);
	vnt_submit(r);
	return 0;
}

#define SKB_DEV(typed, skb) VNT_READ(typed, skb, dev)

/*
 * The UDP backend's daemon reads the inner packet from the TUN device
 * (skb_copy_datagram_iter in tun_do_read), in its own context: the hop
 * names the daemon. Never a packet's first hop.
 */
static __always_inline int flannel_daemon_read(struct sk_buff *skb, bool typed)
{
	const struct net_device *dev = SKB_DEV(typed, skb);

	if (flannel_overlay_of(dev, typed) != FLANNEL_OVERLAY_TUN) {
		vnt_count(VNT_STAT_FILTERED);
		return 0;
	}
	struct vnt_hook_ctx c = {
		.hook = FLANNEL_HOOK_DAEMON_READ,
		.kind = VNT_EV_PACKET,
		.direction = VNT_DIR_NONE,
		.typed = typed,
		.task = VNT_TASK_CURRENT,
		.later = true,
		.outer = VNT_OUTER_SKIP,
	};
	struct flannel_record *r = (void *)vnt_packet_reserve(skb, (struct net_device *)dev, c, sizeof(*r));

	if (!r)
		return 0;
	__builtin_memset(&r->t, 0, sizeof(r->t));
	r->t.overlay = FLANNEL_OVERLAY_TUN;
	vnt_submit(r);
	return 0;
}

/*
 * A drop in the overlay: an outer packet dropped anywhere (on the underlay,
 * by a firewall, by a socket-less port), or an inner packet freed on a VXLAN
 * or TUN device (an FDB miss, no route to the remote VTEP). Counted per VNI
 * and device by the decoder; the journey's drop hop is the veth plugin's
 * (one free, one hop), so this record becomes a metric point, not a hop.
 * Which frees are drops: vnt_skb_dropped, as for veth's drop hook.
 */
static __always_inline int flannel_drop(struct sk_buff *skb, __u32 reason, bool typed)
{
	if (!vnt_skb_dropped(skb, &reason, typed))
		return 0;
	const struct net_device *dev = SKB_DEV(typed, skb);
	__u8 overlay = flannel_overlay_of(dev, typed); /* NONE without a device */
	struct vnt_hook_ctx c = {
		.hook = FLANNEL_HOOK_DROP,
		.kind = VNT_EV_DROP,
		.direction = VNT_DIR_NONE,
		.typed = typed,
		.drop_reason = reason,
		/* On an overlay device, the inner packet too; elsewhere only
		 * a tunnel's outer packets are the overlay's. */
		.outer = overlay ? VNT_OUTER_ALSO : VNT_OUTER_ONLY,
	};
	struct flannel_record *r = (void *)vnt_packet_reserve(skb, dev, c, sizeof(*r));

	if (!r)
		return 0;
	__builtin_memset(&r->t, 0, sizeof(r->t));
	if (r->e.encap) {
		r->t.overlay = r->e.encap == VNT_ENCAP_VXLAN ? FLANNEL_OVERLAY_VXLAN : FLANNEL_OVERLAY_TUN;
		flannel_outer(skb, typed, &r->t, r->e.encap);
	} else {
		r->t.overlay = overlay;
		if (overlay == FLANNEL_OVERLAY_VXLAN)
			flannel_dev_vni(dev, &r->t);
	}
	vnt_submit(r);
	return 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(flannel_drop_btf, struct sk_buff *skb, void *location, int reason)
{
	return flannel_drop(skb, reason, true);
}

SEC("raw_tp/kfree_skb")
int BPF_PROG(flannel_drop_raw, struct sk_buff *skb, void *location, int reason)
{
	return flannel_drop(skb, reason, false);
}

SEC("tp_btf/skb_copy_datagram_iovec")
int BPF_PROG(flannel_daemon_read_btf, const struct sk_buff *skb, int len)
{
	return flannel_daemon_read((struct sk_buff *)skb, true);
}

SEC("raw_tp/skb_copy_datagram_iovec")
int BPF_PROG(flannel_daemon_read_raw, const struct sk_buff *skb, int len)
{
	return flannel_daemon_read((struct sk_buff *)skb, false);
}

/*
 * One program per tracepoint for both kinds of hop: on an overlay device the
 * inner packet's (encap at transmit, decap at receive), on any other device
 * a tunnel's outer packet (outer xmit, outer receive). Every packet crosses
 * these tracepoints on every device it passes, so one run instead of two is
 * what the overlay costs the path (BENCHMARKS.md, "The flannel plugin"). A
 * tunnel nested in a tunnel (an outer packet sent through another overlay
 * device) shows as that device's encap only.
 */
static __always_inline int flannel_dev_hop(struct sk_buff *skb, const struct net_device *dev, bool typed,
					   bool receive)
{
	__u8 overlay = flannel_overlay_of(dev, typed);

	if (receive) {
		if (overlay)
			return flannel_overlay_hop(skb, dev, overlay, FLANNEL_HOOK_DECAP, typed, true, VNT_DIR_RX);
		return flannel_outer_hop(skb, dev, FLANNEL_HOOK_OUTER_RECEIVE, typed, true, VNT_DIR_RX);
	}
	if (overlay)
		return flannel_overlay_hop(skb, dev, overlay, FLANNEL_HOOK_ENCAP, typed, false, VNT_DIR_TX);
	return flannel_outer_hop(skb, dev, FLANNEL_HOOK_OUTER_XMIT, typed, false, VNT_DIR_TX);
}

/* ---- tp_btf ------------------------------------------------------------- */

SEC("tp_btf/net_dev_start_xmit")
int BPF_PROG(flannel_xmit_btf, struct sk_buff *skb, struct net_device *dev)
{
	return flannel_dev_hop(skb, dev, true, false);
}

SEC("tp_btf/netif_receive_skb")
int BPF_PROG(flannel_receive_btf, struct sk_buff *skb)
{
	return flannel_dev_hop(skb, SKB_DEV(true, skb), true, true);
}

/* ---- raw_tp --------------------------------------------------------------- */

SEC("raw_tp/net_dev_start_xmit")
int BPF_PROG(flannel_xmit_raw, struct sk_buff *skb, struct net_device *dev)
{
	return flannel_dev_hop(skb, dev, false, false);
}

SEC("raw_tp/netif_receive_skb")
int BPF_PROG(flannel_receive_raw, struct sk_buff *skb)
{
	return flannel_dev_hop(skb, SKB_DEV(false, skb), false, true);
}

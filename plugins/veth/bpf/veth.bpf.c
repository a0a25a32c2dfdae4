// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * veth: a packet leaving a container through its veth, arriving on the peer,
 * crossing the bridge and entering the other container; and where it is
 * dropped on the way, with the kernel's reason.
 *
 * Each hook is compiled twice from one body: as tp_btf (typed arguments,
 * preferred) and as raw_tp (for kernels whose BTF lacks the tracepoint's
 * typedef). The transmit and the peer's receive have fentry and kprobe
 * variants too, on the functions veth itself runs (veth_xmit, __netif_rx):
 * they fire for veth traffic only, where the tracepoints fire for every
 * device. All variants of a hook report the same hook id, so journeys are the
 * same whichever one the kernel allows (docs/adr/005-hook-variants.md). The
 * probe table in src/lib.rs lists them in preference order.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

#include "vnt/common.h"
#include "vnt/parse.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Hook ids: the decoder in src/lib.rs names them. */
enum veth_hook {
	VETH_HOOK_XMIT = 1,    /* net:net_dev_start_xmit, the device transmits */
	VETH_HOOK_RX = 2,      /* net:netif_rx, the peer queues it to its backlog */
	VETH_HOOK_RECEIVE = 3, /* net:netif_receive_skb, the stack/bridge takes it */
	VETH_HOOK_DROP = 4,    /* skb:kfree_skb, freed with a drop reason */
};

#define SKB_CONSUMED_REASON 1 /* SKB_CONSUMED: not a drop */

static __always_inline int veth_observe(struct sk_buff *skb, const struct net_device *dev, enum veth_hook hook,
					bool data_is_l3, __u8 direction, __u32 reason)
{
	char name[16] = {};
	__u32 netns = 0;

	vnt_count(VNT_STAT_SEEN);
	if (dev) {
		BPF_CORE_READ_STR_INTO(&name, dev, name);
		netns = BPF_CORE_READ(dev, nd_net.net, ns.inum);
	}
	if (!vnt_dev_wanted(name, netns)) {
		vnt_count(VNT_STAT_FILTERED);
		return 0;
	}

	struct vnt_parsed p = {};

	if (vnt_parse_skb(skb, data_is_l3, &p)) {
		vnt_count(VNT_STAT_NOT_IP);
		return 0;
	}
	if (!vnt_flow_wanted(&p.key.flow)) {
		vnt_count(VNT_STAT_FILTERED);
		return 0;
	}
	__u64 id = vnt_pkt_hash(&p.key);

	if (!vnt_sampled(id)) {
		vnt_count(VNT_STAT_UNSAMPLED);
		return 0;
	}

	struct vnt_packet_event *e = vnt_reserve(sizeof(*e));

	if (!e)
		return 0;
	vnt_fill_hdr(&e->hdr, reason ? VNT_EV_DROP : VNT_EV_PACKET, hook, sizeof(*e));
	e->pkt_id = id;
	e->skb = (__u64)skb;
	e->flow = p.key.flow;
	e->ifindex = dev ? BPF_CORE_READ(dev, ifindex) : 0;
	e->netns = netns;
	e->skb_len = BPF_CORE_READ(skb, len);
	e->drop_reason = reason;
	e->tcp_seq = p.tcp_seq;
	e->tcp_ack = p.tcp_ack;
	e->tcp_flags = p.tcp_flags;
	e->direction = direction;
	e->pkt_type = BPF_CORE_READ_BITFIELD_PROBED(skb, pkt_type);
	e->_pad0 = 0;
	e->ip_ident = p.key.ip_ident;
	__builtin_memcpy(e->ifname, name, sizeof(name));
	vnt_submit(e);
	return 0;
}

static __always_inline int veth_drop(struct sk_buff *skb, __u32 reason)
{
	if (reason == SKB_CONSUMED_REASON)
		return 0;
	if (reason == 0)
		reason = 2; /* SKB_DROP_REASON_NOT_SPECIFIED on kernels without reasons */
	return veth_observe(skb, BPF_CORE_READ(skb, dev), VETH_HOOK_DROP, false, VNT_DIR_NONE, reason);
}

/* ---- tp_btf ------------------------------------------------------------- */

SEC("tp_btf/net_dev_start_xmit")
int BPF_PROG(veth_xmit_btf, struct sk_buff *skb, struct net_device *dev)
{
	return veth_observe(skb, dev, VETH_HOOK_XMIT, false, VNT_DIR_TX, 0);
}

SEC("tp_btf/netif_rx")
int BPF_PROG(veth_rx_btf, struct sk_buff *skb)
{
	return veth_observe(skb, BPF_CORE_READ(skb, dev), VETH_HOOK_RX, true, VNT_DIR_RX, 0);
}

SEC("tp_btf/netif_receive_skb")
int BPF_PROG(veth_receive_btf, struct sk_buff *skb)
{
	return veth_observe(skb, BPF_CORE_READ(skb, dev), VETH_HOOK_RECEIVE, true, VNT_DIR_RX, 0);
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(veth_drop_btf, struct sk_buff *skb, void *location, int reason)
{
	return veth_drop(skb, reason);
}

/* ---- raw_tp --------------------------------------------------------------- */

SEC("raw_tp/net_dev_start_xmit")
int BPF_PROG(veth_xmit_raw, struct sk_buff *skb, struct net_device *dev)
{
	return veth_observe(skb, dev, VETH_HOOK_XMIT, false, VNT_DIR_TX, 0);
}

SEC("raw_tp/netif_rx")
int BPF_PROG(veth_rx_raw, struct sk_buff *skb)
{
	return veth_observe(skb, BPF_CORE_READ(skb, dev), VETH_HOOK_RX, true, VNT_DIR_RX, 0);
}

SEC("raw_tp/netif_receive_skb")
int BPF_PROG(veth_receive_raw, struct sk_buff *skb)
{
	return veth_observe(skb, BPF_CORE_READ(skb, dev), VETH_HOOK_RECEIVE, true, VNT_DIR_RX, 0);
}

SEC("raw_tp/kfree_skb")
int BPF_PROG(veth_drop_raw, struct sk_buff *skb, void *location, int reason)
{
	return veth_drop(skb, reason);
}

/* ---- fentry / kprobe -------------------------------------------------------
 *
 * veth_xmit(skb, dev) is the veth's ndo_start_xmit: the tracepoint
 * net_dev_start_xmit fires just before it, with the same skb (data at the
 * Ethernet header) and device. __netif_rx(skb) is where veth_forward_skb()
 * queues the packet to the peer's backlog, after eth_type_trans() set
 * skb->dev to the peer and pulled the Ethernet header; the tracepoint
 * netif_rx fires inside it. veth_xmit lives in the veth module on distro
 * kernels, so fentry there needs module BTF (not supported by the agent's
 * aya 0.14): the kprobe variant takes over.
 */

SEC("fentry/veth_xmit")
int BPF_PROG(veth_xmit_fentry, struct sk_buff *skb, struct net_device *dev)
{
	return veth_observe(skb, dev, VETH_HOOK_XMIT, false, VNT_DIR_TX, 0);
}

SEC("kprobe/veth_xmit")
int BPF_KPROBE(veth_xmit_kprobe, struct sk_buff *skb, struct net_device *dev)
{
	return veth_observe(skb, dev, VETH_HOOK_XMIT, false, VNT_DIR_TX, 0);
}

SEC("fentry/__netif_rx")
int BPF_PROG(veth_rx_fentry, struct sk_buff *skb)
{
	return veth_observe(skb, BPF_CORE_READ(skb, dev), VETH_HOOK_RX, true, VNT_DIR_RX, 0);
}

SEC("kprobe/__netif_rx")
int BPF_KPROBE(veth_rx_kprobe, struct sk_buff *skb)
{
	return veth_observe(skb, BPF_CORE_READ(skb, dev), VETH_HOOK_RX, true, VNT_DIR_RX, 0);
}

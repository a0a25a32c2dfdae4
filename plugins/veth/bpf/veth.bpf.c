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

#include "vnt/pipeline.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Hook ids: the decoder in src/lib.rs names them. */
enum veth_hook {
	VETH_HOOK_XMIT = 1,    /* net:net_dev_start_xmit, the device transmits */
	VETH_HOOK_RX = 2,      /* net:netif_rx, the peer queues it to its backlog */
	VETH_HOOK_RECEIVE = 3, /* net:netif_receive_skb, the stack/bridge takes it */
	VETH_HOOK_DROP = 4,    /* skb:kfree_skb, freed with a drop reason */
	VETH_HOOK_DELIVER = 5, /* skb:skb_copy_datagram_iovec, a process reads it */
};

/*
 * Sampled packets that reached the stack, by data buffer (skb->head): what
 * the socket read (veth_deliver) looks up before it pays for an identity. The read runs
 * in the reader's task, long after the packet's other hops, when the per-CPU
 * identity memo has moved on: computing every read's keyed id cost ~740 ns
 * per read, sampled or not. The receive hook (netif_receive_skb, the last
 * hop before a socket) records the buffers of the packets it emitted; a
 * read of a buffer not recorded is not sampled and costs a lookup. The data
 * buffer, not the skb: a ping or raw socket reads its own clone of the
 * packet, which shares the buffer (so does a TCP segment, itself the clone
 * the sender keeps for retransmission). A recorded buffer is only a hint (it
 * may have been freed and reused): a hit runs the whole pipeline, which
 * computes the packet's own id and sampling. LRU: entries of packets that
 * were forwarded or dropped instead of read age out.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u8);
} veth_sampled_skbs SEC(".maps");

/* One hop: `typed` is true in tp_btf and fentry programs (direct reads). */
static __always_inline int veth_hop(struct sk_buff *skb, const struct net_device *dev, enum veth_hook hook,
				    bool typed, bool data_is_l3, __u8 direction)
{
	struct vnt_hook_ctx c = {
		.hook = hook,
		.kind = VNT_EV_PACKET,
		.direction = direction,
		.typed = typed,
		.data_is_l3 = data_is_l3,
		/* A transmit may run in the sender's own context. */
		.task = direction == VNT_DIR_TX ? VNT_TASK_SENDER : VNT_TASK_NONE,
		/* A tunnel's outer packet is the overlay plugin's to show,
		 * nested in its encapsulation hop (docs/adr/018). */
		.outer = VNT_OUTER_SKIP,
	};
	struct vnt_packet_event *e = vnt_packet_reserve(skb, dev, c, sizeof(*e));

	if (!e)
		return 0;
	vnt_submit(e);
	if (hook == VETH_HOOK_RECEIVE) {
		__u64 key = (__u64)VNT_READ(typed, skb, head);
		__u8 one = 1;

		bpf_map_update_elem(&veth_sampled_skbs, &key, &one, BPF_ANY);
	}
	return 0;
}

/* The receiving device of an skb: the peer after veth's eth_type_trans(). */
#define SKB_DEV(typed, skb) VNT_READ(typed, skb, dev)

/* A packet freed with a drop reason (vnt_skb_dropped says which frees are). */
static __always_inline int veth_drop(struct sk_buff *skb, __u32 reason, bool typed)
{
	if (!vnt_skb_dropped(skb, &reason, typed))
		return 0;

	struct vnt_hook_ctx c = {
		.hook = VETH_HOOK_DROP,
		.kind = VNT_EV_DROP,
		.direction = VNT_DIR_NONE,
		.typed = typed,
		.drop_reason = reason,
		/* A dropped outer packet is the death of its inner one: it
		 * ends the inner packet's journey. */
		.outer = VNT_OUTER_ALSO,
	};

	return vnt_packet_observe(skb, SKB_DEV(typed, skb), c);
}

/* ---- tp_btf ------------------------------------------------------------- */

SEC("tp_btf/net_dev_start_xmit")
int BPF_PROG(veth_xmit_btf, struct sk_buff *skb, struct net_device *dev)
{
	return veth_hop(skb, dev, VETH_HOOK_XMIT, true, false, VNT_DIR_TX);
}

SEC("tp_btf/netif_rx")
int BPF_PROG(veth_rx_btf, struct sk_buff *skb)
{
	return veth_hop(skb, SKB_DEV(true, skb), VETH_HOOK_RX, true, true, VNT_DIR_RX);
}

SEC("tp_btf/netif_receive_skb")
int BPF_PROG(veth_receive_btf, struct sk_buff *skb)
{
	return veth_hop(skb, SKB_DEV(true, skb), VETH_HOOK_RECEIVE, true, true, VNT_DIR_RX);
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(veth_drop_btf, struct sk_buff *skb, void *location, int reason)
{
	return veth_drop(skb, reason, true);
}

/*
 * A process reads the packet from its socket: skb_copy_datagram_iter() runs
 * in recvmsg(), in the reader's own context, for UDP, ICMP (ping sockets),
 * raw sockets and TCP. The skb has no device any more; the namespace comes
 * from its socket and the headers from its network header offset. Terminal:
 * the journey ends as delivered, to this process.
 */
static __always_inline int veth_deliver(struct sk_buff *skb, bool typed)
{
	/* Only packets the receive hook sampled (veth_sampled_skbs): the
	 * lookup first, it is all most reads pay. */
	__u64 key = (__u64)VNT_READ(typed, skb, head);

	if (!bpf_map_lookup_elem(&veth_sampled_skbs, &key)) {
		vnt_count(VNT_STAT_SEEN);
		return 0;
	}

	/* A packet socket (a capture tool reading without a ring) reads a
	 * copy of a packet that goes on: not a delivery. */
	struct sock *sk = VNT_READ(typed, skb, sk);

	if (sk && BPF_CORE_READ(sk, __sk_common.skc_family) == 17 /* AF_PACKET */)
		return 0;
	/* A TUN device's reader is a daemon (flannel's UDP backend, a VPN)
	 * that sends the packet on: not where it ends. */
	if (vnt_dev_is_tun(SKB_DEV(typed, skb), typed)) {
		vnt_count(VNT_STAT_FILTERED);
		return 0;
	}
	/* Read once: a stream read in parts is one delivery. */
	bpf_map_delete_elem(&veth_sampled_skbs, &key);

	struct vnt_hook_ctx c = {
		.hook = VETH_HOOK_DELIVER,
		.kind = VNT_EV_PACKET,
		.direction = VNT_DIR_NONE,
		.typed = typed,
		.task = VNT_TASK_CURRENT,
		.later = true,
		/* A tunnel daemon reading the outer packet (flannel's UDP
		 * backend) is not where the inner packet ends. */
		.outer = VNT_OUTER_SKIP,
	};

	return vnt_packet_observe(skb, SKB_DEV(typed, skb), c);
}

SEC("tp_btf/skb_copy_datagram_iovec")
int BPF_PROG(veth_deliver_btf, const struct sk_buff *skb, int len)
{
	return veth_deliver((struct sk_buff *)skb, true);
}

/* ---- raw_tp --------------------------------------------------------------- */

SEC("raw_tp/net_dev_start_xmit")
int BPF_PROG(veth_xmit_raw, struct sk_buff *skb, struct net_device *dev)
{
	return veth_hop(skb, dev, VETH_HOOK_XMIT, false, false, VNT_DIR_TX);
}

SEC("raw_tp/netif_rx")
int BPF_PROG(veth_rx_raw, struct sk_buff *skb)
{
	return veth_hop(skb, SKB_DEV(false, skb), VETH_HOOK_RX, false, true, VNT_DIR_RX);
}

SEC("raw_tp/netif_receive_skb")
int BPF_PROG(veth_receive_raw, struct sk_buff *skb)
{
	return veth_hop(skb, SKB_DEV(false, skb), VETH_HOOK_RECEIVE, false, true, VNT_DIR_RX);
}

SEC("raw_tp/kfree_skb")
int BPF_PROG(veth_drop_raw, struct sk_buff *skb, void *location, int reason)
{
	return veth_drop(skb, reason, false);
}

SEC("raw_tp/skb_copy_datagram_iovec")
int BPF_PROG(veth_deliver_raw, const struct sk_buff *skb, int len)
{
	return veth_deliver((struct sk_buff *)skb, false);
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
	return veth_hop(skb, dev, VETH_HOOK_XMIT, true, false, VNT_DIR_TX);
}

SEC("kprobe/veth_xmit")
int BPF_KPROBE(veth_xmit_kprobe, struct sk_buff *skb, struct net_device *dev)
{
	return veth_hop(skb, dev, VETH_HOOK_XMIT, false, false, VNT_DIR_TX);
}

SEC("fentry/__netif_rx")
int BPF_PROG(veth_rx_fentry, struct sk_buff *skb)
{
	return veth_hop(skb, SKB_DEV(true, skb), VETH_HOOK_RX, true, true, VNT_DIR_RX);
}

SEC("kprobe/__netif_rx")
int BPF_KPROBE(veth_rx_kprobe, struct sk_buff *skb)
{
	return veth_hop(skb, SKB_DEV(false, skb), VETH_HOOK_RX, false, true, VNT_DIR_RX);
}

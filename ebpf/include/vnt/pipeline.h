/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * The shared per-packet pipeline every packet plugin runs at its hooks:
 *
 *   device/netns filter -> copy headers once -> [identity memo] -> parse ->
 *   flow filter -> packet id -> sampled? -> reserve -> fill -> submit
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

/* Which process a hook attributes the packet to (vnt_hook_ctx.task). */
enum vnt_task {
	VNT_TASK_NONE = 0,
	/* The current task, always: hooks that run in the process's own
	 * context, such as a socket read (skb:skb_copy_datagram_iovec). */
	VNT_TASK_CURRENT = 1,
	/* The current task when it is the sender: see vnt_sender_pid(). */
	VNT_TASK_SENDER = 2,
};

/* What a hook does with a tunnel's outer packet (vnt_hook_ctx.outer). */
enum vnt_outer {
	/* Report it, as its inner packet with `encap` set. */
	VNT_OUTER_ALSO = 0,
	/* Leave it out (counted as filtered): the hook reports inner packets
	 * only and lets an overlay plugin nest the outer one. */
	VNT_OUTER_SKIP = 1,
	/* Report outer packets only. */
	VNT_OUTER_ONLY = 2,
};

/* What a packet hook reports about the packet it sees. */
struct vnt_hook_ctx {
	__u16 hook;       /* plugin's hook id */
	__u16 kind;       /* VNT_EV_PACKET or VNT_EV_DROP */
	__u8 direction;   /* enum vnt_direction */
	bool typed;       /* tp_btf / fentry: direct reads */
	bool data_is_l3;  /* skb->data points at the network header here */
	__u8 task;        /* enum vnt_task */
	bool later;       /* never a packet's first hop (a socket read): a loss
			   * here is a gap in a journey, not a lost packet */
	__u8 outer;       /* enum vnt_outer */
	__u32 drop_reason;
};

#ifndef PF_KTHREAD
#define PF_KTHREAD 0x00200000
#endif

static __always_inline __u32 vnt_dev_netns(const struct net_device *dev, bool typed)
{
	if (!dev)
		return 0;
	return VNT_READ(typed, dev, nd_net.net, ns.inum);
}

/* The namespace of the hook: its device's, else (a socket read, where the
 * skb has no device any more) the owning socket's. */
static __always_inline __u32 vnt_hook_netns(struct sk_buff *skb, const struct net_device *dev, bool typed)
{
	if (dev)
		return vnt_dev_netns(dev, typed);
	struct sock *sk = VNT_READ(typed, skb, sk);

	if (!sk)
		return 0;
	return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

/*
 * The kind of a device as `ip link` names it (rtnl_link_ops->kind: "veth",
 * "vxlan", "tun", "bridge", ...), NUL-terminated in `kind`, up to 7 bytes;
 * empty when the device has none (a physical NIC).
 */
static __always_inline void vnt_dev_kind(const struct net_device *dev, bool typed, char kind[8])
{
	__builtin_memset(kind, 0, 8);
	if (!dev)
		return;
	const struct rtnl_link_ops *ops = VNT_READ(typed, dev, rtnl_link_ops);

	if (!ops)
		return;
	const char *name = BPF_CORE_READ(ops, kind);

	if (name)
		bpf_probe_read_kernel_str(kind, 8, name);
}

/* Whether a device is a TUN device (its reader is a user-space daemon). */
static __always_inline bool vnt_dev_is_tun(const struct net_device *dev, bool typed)
{
	char k[8];

	vnt_dev_kind(dev, typed, k);
	return k[0] == 't' && k[1] == 'u' && k[2] == 'n' && k[3] == 0;
}

/*
 * The sending process of a packet at a transmit hook, or 0 when the hook
 * cannot know it. The skb must belong to a user-space socket (a kernel
 * socket sends ICMP errors and TCP resets) of the current task's network
 * namespace, the current task must not be a kernel thread, and the packet
 * must not be TCP: UDP, ICMP and raw sockets transmit inside sendmsg(), in
 * the sender's own context, but TCP also transmits from softirq (ACKs,
 * data released by an incoming ACK) and timers (retransmits), in whatever
 * task the CPU happened to run.
 */
static __always_inline __u32 vnt_sender_pid(struct sk_buff *skb, bool typed, __u8 proto)
{
	if (proto == VNT_IPPROTO_TCP)
		return 0;
	struct sock *sk = VNT_READ(typed, skb, sk);

	if (!sk)
		return 0;
	struct socket *sock = BPF_CORE_READ(sk, sk_socket);

	if (!sock || !BPF_CORE_READ(sock, file))
		return 0;
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();

	if (BPF_CORE_READ(t, flags) & PF_KTHREAD)
		return 0;
	if (BPF_CORE_READ(t, nsproxy, net_ns, ns.inum) != BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum))
		return 0;
	return bpf_get_current_pid_tgid() >> 32;
}

/*
 * True when another copy of the skb's data is still alive: the skb was
 * cloned and the data's reference count is above one. A raw socket (ping)
 * gets a clone of every ICMP packet before the protocol handler runs, and
 * the handler then frees the original, with NO_SOCKET when no ping socket
 * wanted an echo reply: the packet did not die, its copy waits in the raw
 * socket.
 */
static __always_inline bool vnt_skb_data_shared(struct sk_buff *skb, bool typed)
{
	__u8 cloned = typed ? BPF_CORE_READ_BITFIELD(skb, cloned) : BPF_CORE_READ_BITFIELD_PROBED(skb, cloned);

	if (!cloned)
		return false;
	unsigned char *head = VNT_READ(typed, skb, head);
	__u32 end = VNT_READ(typed, skb, end);
	struct skb_shared_info *sh = (struct skb_shared_info *)(head + end);
	int dataref = 0;

	bpf_probe_read_kernel(&dataref, sizeof(dataref), &sh->dataref.counter);
	/* The low 16 bits count every reference to the data (SKB_DATAREF_MASK). */
	return (dataref & 0xffff) > 1;
}

/*
 * Whether skb:kfree_skb(skb, *reason) is a packet's death, for every plugin's
 * drop hook; *reason becomes the reason to report. The tracepoint fires for
 * drops and, since 6.2, also for frees that are not drops (reason
 * SKB_CONSUMED). Enum values move between releases (on 6.0 and 6.1 the value
 * 1 is SKB_DROP_REASON_NOT_SPECIFIED, not SKB_CONSUMED), so they come from
 * the running kernel's BTF, never from a literal. A kernel without drop
 * reasons passes 0: reported as NOT_SPECIFIED. One copy freed while another
 * lives on (the clone a raw socket such as ping's got) is no death either.
 */
static __always_inline bool vnt_skb_dropped(struct sk_buff *skb, __u32 *reason, bool typed)
{
	if (bpf_core_enum_value_exists(enum skb_drop_reason, SKB_CONSUMED) &&
	    *reason == bpf_core_enum_value(enum skb_drop_reason, SKB_CONSUMED))
		return false;
	if (*reason == 0 && bpf_core_enum_value_exists(enum skb_drop_reason, SKB_DROP_REASON_NOT_SPECIFIED))
		*reason = bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_NOT_SPECIFIED);
	return !vnt_skb_data_shared(skb, typed);
}

/*
 * Copy the packet's first bytes into `h`: from the network header when it is
 * known (or when skb->data is there), else from skb->data as an Ethernet
 * frame (*from_l2 = 1). Sets *proto to skb->protocol (host order). Returns
 * -1 when nothing could be copied.
 */
static __always_inline int vnt_copy_headers(struct sk_buff *skb, const struct vnt_hook_ctx c, struct vnt_hdr_buf *h,
					    __u16 *proto, __u8 *from_l2, __s32 *l3_adjust)
{
	unsigned char *head = VNT_READ(c.typed, skb, head);
	unsigned char *data = VNT_READ(c.typed, skb, data);
	const void *end = head + VNT_READ(c.typed, skb, tail);
	const void *from = data;

	*proto = bpf_ntohs(VNT_READ(c.typed, skb, protocol));
	*from_l2 = 0;
	if (!c.data_is_l3) {
		__u16 nh = VNT_READ(c.typed, skb, network_header);

		if (nh != VNT_NO_HEADER)
			from = head + nh;
		else
			*from_l2 = 1;
	}
	/* skb->len counts from skb->data: the link header at transmit, the
	 * transport payload once a protocol pulled its headers. Reported
	 * lengths count from the network header: *l3_adjust is what to add. */
	if (*from_l2)
		*l3_adjust = -14; /* ETH_HLEN */
	else
		*l3_adjust = (__s32)((const unsigned char *)data - (const unsigned char *)from);
	return vnt_headers_copy(h, from, end) ? 0 : -1;
}

/*
 * The identity memo: what the last packet parsed on this CPU turned out to
 * be (its id, parsed fields and the pipeline's verdict), kept beside the
 * exact bytes it was computed from. A packet's hops through veth pairs and
 * a bridge run back to back on one CPU, so the next hop usually copies the
 * very same bytes and skips parsing, hashing, filtering and sampling.
 *
 * Keyed by content, not by skb address: the id is a pure function of the
 * copied bytes (and where the copy starts), so equal bytes give the id a
 * fresh computation would give. A reused skb, a clone or a packet changed
 * between hops carries other bytes and misses (docs/adr/007).
 *
 * Programs on one CPU can nest (a softirq hook interrupting a task-context
 * hook), so the memo is a per-CPU seqlock: `seq` is odd while it is written,
 * a reader that sees it change retries as a miss, and a writer that finds it
 * odd (it interrupted another writer) leaves it alone.
 */
struct vnt_id_memo {
	__u64 seq;
	__u64 w[VNT_HDR_COPY / 8];
	__u32 len;
	__u16 proto;
	__u8 from_l2;
	__u8 outcome; /* enum vnt_stat: NOT_IP, FILTERED, UNSAMPLED, EMITTED or LOST */
	__u64 id;
	struct vnt_parsed p;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct vnt_id_memo);
} vnt_id_memo SEC(".maps");

#define VNT_COMPILER_BARRIER() asm volatile("" ::: "memory")
#define VNT_MEMO_NONE 0xff

/* The verdict remembered for exactly these bytes, or VNT_MEMO_NONE. */
static __always_inline __u32 vnt_memo_find(struct vnt_id_memo *m, const struct vnt_hdr_buf *h, __u16 proto, __u8 from_l2,
					   __u64 *id, struct vnt_parsed *p)
{
	__u64 seq = *(volatile __u64 *)&m->seq;

	if (seq & 1)
		return VNT_MEMO_NONE;
	VNT_COMPILER_BARRIER();
	if (m->len != h->len || m->proto != proto || m->from_l2 != from_l2)
		return VNT_MEMO_NONE;
	for (int i = 0; i < VNT_HDR_COPY / 8; i++) {
		if (m->w[i] != h->w[i])
			return VNT_MEMO_NONE;
	}
	__u32 outcome = m->outcome;

	*id = m->id;
	if (outcome == VNT_STAT_EMITTED)
		*p = m->p;
	VNT_COMPILER_BARRIER();
	if (*(volatile __u64 *)&m->seq != seq)
		return VNT_MEMO_NONE;
	return outcome;
}

static __always_inline void vnt_memo_put(struct vnt_id_memo *m, const struct vnt_hdr_buf *h, __u16 proto, __u8 from_l2,
					 __u32 outcome, __u64 id, const struct vnt_parsed *p)
{
	__u64 seq = *(volatile __u64 *)&m->seq;

	if (seq & 1)
		return;
	*(volatile __u64 *)&m->seq = seq + 1;
	VNT_COMPILER_BARRIER();
	for (int i = 0; i < VNT_HDR_COPY / 8; i++)
		m->w[i] = h->w[i];
	m->len = h->len;
	m->proto = proto;
	m->from_l2 = from_l2;
	m->outcome = outcome;
	m->id = id;
	m->p = *p;
	VNT_COMPILER_BARRIER();
	*(volatile __u64 *)&m->seq = seq + 2;
}

/*
 * Parse, filter, identify, sample: the verdict for one copy of headers, in
 * three global (not inlined) functions. The verifier checks a global
 * function once, on its own, with its pointer arguments as plain memory,
 * instead of once per path through the caller: header parsing has many
 * paths (IPv6 extension headers, TCP options), and inlined, each of them
 * multiplied the rest of the pipeline beyond the verifier's budget. They
 * are called one after the other from the program, never from each other,
 * because the verifier limits the stack of a call chain to 512 bytes.
 */
__noinline int vnt_parse_headers(const struct vnt_hdr_buf *h, __u32 proto, __u32 from_l2, struct vnt_parsed *p)
{
	if (!h || !p)
		return -1;
	return from_l2 ? vnt_parse_eth(h, p) : vnt_parse_l3(h, 0, proto, p);
}

/*
 * A tunnel's outer packet (UDP to a port of `vnt_tunnels`) takes the identity
 * of its inner packet: every field of `p` is replaced by the inner packet's,
 * and `p->encap` says which tunnel it came through. Then the outer packet on
 * the underlay, on any host, gets the same id as the inner one before
 * encapsulation and after decapsulation, with no coordination. The inner
 * headers lie inside the one copy: from an L2 start, Ethernet + IPv4 + UDP +
 * VXLAN + inner Ethernet end at byte 64, leaving 64 bytes for the inner IP and
 * transport headers the identity reads (docs/adr/018-flannel-tunnels.md).
 * An outer packet whose inner one is not IP keeps its own identity (returns
 * 0, `p` untouched); 1 when `p` now describes the inner packet; -1 when the
 * inner headers were cut short and `p` is clobbered: the caller parses the
 * outer packet again. The inner packet is parsed straight into `p`, not
 * into a copy: a second struct vnt_parsed on this function's stack took
 * the program and this call past the 512 bytes of stack the verifiers of
 * 6.1 and 6.12 allow a call chain (6.18 counts more finely and let it be).
 */
/* Whether `port` is one of `vnt_tunnels`: inlined, so that a UDP packet to
 * any other port (most of them) pays a few compares, not a call. */
static __always_inline bool vnt_tunnel_port(__u16 port)
{
	for (int i = 0; i < VNT_MAX_TUNNEL_PORTS; i++) {
		if (vnt_tunnels.ports[i].port && vnt_tunnels.ports[i].port == port)
			return true;
	}
	return false;
}

__noinline int vnt_parse_tunnel(const struct vnt_hdr_buf *h, struct vnt_parsed *p)
{
	if (!h || !p)
		return 0;
	if (p->key.flow.proto != VNT_IPPROTO_UDP || !p->udp_off)
		return 0;
	__u8 encap = VNT_ENCAP_NONE;

	for (int i = 0; i < VNT_MAX_TUNNEL_PORTS; i++) {
		__u16 port = vnt_tunnels.ports[i].port;

		if (port && port == p->key.flow.dport) {
			encap = vnt_tunnels.ports[i].encap;
			break;
		}
	}
	__u32 off = (__u32)p->udp_off + 8;
	__u16 eth_proto;

	if (encap == VNT_ENCAP_VXLAN) {
		/* The I flag says the VNI is valid; then the inner frame. */
		if (off + 8 + 14 > h->len || !(h->b[off & VNT_HDR_MASK] & 0x08))
			return 0;
		eth_proto = vnt_be16(h, off + 8 + 12);
		off += 8 + 14;
	} else if (encap == VNT_ENCAP_UDP) {
		if (off + 1 > h->len)
			return 0;
		__u8 version = h->b[off & VNT_HDR_MASK] >> 4;

		eth_proto = version == 4 ? VNT_ETH_P_IP : version == 6 ? VNT_ETH_P_IPV6 : 0;
	} else {
		return 0;
	}
	if (eth_proto != VNT_ETH_P_IP && eth_proto != VNT_ETH_P_IPV6)
		return 0;
	__builtin_memset(p, 0, sizeof(*p));
	if (vnt_parse_l3(h, off, eth_proto, p))
		return -1;
	p->encap = encap;
	return 1;
}

/* Filter, id, sampling for parsed headers: a VNT_STAT_* outcome. */
__noinline int vnt_verdict(const struct vnt_parsed *p, __u64 *id)
{
	if (!p || !id)
		return VNT_STAT_NOT_IP;
	if (!vnt_flow_wanted(&p->key.flow))
		return VNT_STAT_FILTERED;
	*id = vnt_pkt_hash(&p->key);
	if (!vnt_sampled(*id))
		return VNT_STAT_UNSAMPLED;
	return VNT_STAT_EMITTED;
}

static __always_inline __u32 vnt_classify(const struct vnt_hdr_buf *h, __u16 proto, __u8 from_l2, __u64 *id,
					  struct vnt_parsed *p)
{
	if (vnt_parse_headers(h, proto, from_l2, p))
		return VNT_STAT_NOT_IP;
	if (p->udp_off && vnt_tunnel_port(p->key.flow.dport) && vnt_parse_tunnel(h, p) < 0) {
		/* Inner headers cut short: the outer packet is what it is. */
		__builtin_memset(p, 0, sizeof(*p));
		if (vnt_parse_headers(h, proto, from_l2, p))
			return VNT_STAT_NOT_IP;
	}
	if (p->tcp_off)
		vnt_parse_tcp(h, p->tcp_off, p->tcp_end, p);
	return vnt_verdict(p, id);
}

/*
 * Run the pipeline for one packet at one hook. When it passes the filter and
 * is sampled, reserve a record of `size` bytes (at least a struct
 * vnt_packet_event, a compile-time constant), fill the packet event at its
 * start and return it: the caller fills the `size - sizeof(struct
 * vnt_packet_event)` bytes after it (its own fields: the ring buffer is not
 * zeroed, write every byte) and calls vnt_submit(). NULL when nothing is to
 * be emitted (the outcome is counted either way).
 */
static __always_inline struct vnt_packet_event *vnt_packet_reserve(struct sk_buff *skb,
								   const struct net_device *dev,
								   const struct vnt_hook_ctx c, __u32 size)
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
		netns = vnt_hook_netns(skb, dev, c.typed);
		if (!vnt_dev_wanted(name, netns)) {
			vnt_count(VNT_STAT_FILTERED);
			return 0;
		}
	}

	/* 2. Headers: one copy. */
	struct vnt_hdr_buf h = {};
	__u16 proto;
	__u8 from_l2;
	__s32 l3_adjust = 0;

	if (vnt_copy_headers(skb, c, &h, &proto, &from_l2, &l3_adjust)) {
		vnt_count(VNT_STAT_NOT_IP);
		return 0;
	}

	/* 3. Parse, flow filter, identity, sampling: remembered per CPU by content. */
	struct vnt_parsed p = {};
	__u64 id = 0;
	__u32 zero = 0;
	struct vnt_id_memo *m = bpf_map_lookup_elem(&vnt_id_memo, &zero);
	__u32 outcome = m ? vnt_memo_find(m, &h, proto, from_l2, &id, &p) : VNT_MEMO_NONE;

	bool first = false;

	if (outcome == VNT_MEMO_NONE) {
		outcome = vnt_classify(&h, proto, from_l2, &id, &p);
		if (m)
			vnt_memo_put(m, &h, proto, from_l2, outcome, id, &p);
		first = true;
	}
	if (outcome == VNT_STAT_LOST) {
		/* A later hop of a packet lost at its first: nothing written. */
		vnt_count(VNT_STAT_LOST_FOLLOW);
		return 0;
	}
	if (outcome != VNT_STAT_EMITTED) {
		vnt_count(outcome);
		return 0;
	}
	if ((c.outer == VNT_OUTER_SKIP && p.encap) || (c.outer == VNT_OUTER_ONLY && !p.encap)) {
		vnt_count(VNT_STAT_FILTERED);
		return 0;
	}

	/* 4. Emit. On the packet's first hop on this CPU, a record that cannot
	 * be reserved loses the packet whole: the memo says so to its later
	 * hops, which then write nothing (a journey is whole or absent, never
	 * headless). Later, a loss leaves a gap in the journey. */
	bool loses_packet = first && !c.later;
	struct vnt_packet_event *e = vnt_reserve_or(size, loses_packet ? VNT_STAT_LOST : VNT_STAT_LOST_GAP);

	if (!e) {
		if (loses_packet && m)
			vnt_memo_put(m, &h, proto, from_l2, VNT_STAT_LOST, id, &p);
		return 0;
	}
	vnt_fill_hdr(&e->hdr, c.kind, c.hook, size);
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
	} else {
		__builtin_memset(e->ifname, 0, sizeof(e->ifname));
		e->ifindex = 0;
	}
	e->netns = netns ? netns : vnt_hook_netns(skb, dev, c.typed);
	__s64 len = (__s64)VNT_READ(c.typed, skb, len) + l3_adjust;

	e->skb_len = len > 0 ? (__u32)len : 0;
	e->drop_reason = c.drop_reason;
	e->tcp_seq = p.tcp_seq;
	e->tcp_ack = p.tcp_ack;
	e->tcp_flags = p.tcp_flags;
	e->direction = c.direction;
	if (c.typed)
		e->pkt_type = BPF_CORE_READ_BITFIELD(skb, pkt_type);
	else
		e->pkt_type = BPF_CORE_READ_BITFIELD_PROBED(skb, pkt_type);
	e->encap = p.encap;
	e->ip_ident = p.key.ip_ident;
	if (c.task == VNT_TASK_CURRENT)
		e->pid = bpf_get_current_pid_tgid() >> 32;
	else if (c.task == VNT_TASK_SENDER)
		e->pid = vnt_sender_pid(skb, c.typed, p.key.flow.proto);
	else
		e->pid = 0;
	e->_pad1 = 0;
	return e;
}

/*
 * Run the pipeline for one packet at one hook; emit a struct
 * vnt_packet_event when it passes the filter and is sampled.
 */
static __always_inline int vnt_packet_observe(struct sk_buff *skb, const struct net_device *dev,
					      const struct vnt_hook_ctx c)
{
	struct vnt_packet_event *e = vnt_packet_reserve(skb, dev, c, sizeof(*e));

	if (e)
		vnt_submit(e);
	return 0;
}

#endif /* VNT_PIPELINE_H */

// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * tcpretrans: every TCP retransmission, with the connection's state and the
 * sequence range resent. The record has no packet id (the queued skb lacks
 * the IP id and TSval the id hashes): it carries the flow and the first
 * sequence number, and the agent joins it to the journey of the segment it
 * resends (ABI 1.3, observation_flags::HAS_TCP_SEQ).
 *
 * One body, two programs: tp_btf (typed arguments) and raw_tp (for kernels
 * whose BTF lacks the tracepoint's type). src/lib.rs lists them in that
 * order; the agent attaches the first the kernel supports.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

#include "vnt/common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define TCPRETRANS_HOOK 1 /* src/lib.rs: hook::RETRANSMIT */
#define TCPRETRANS_KIND 16 /* hdr.kind of this plugin's own record */

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

/* The record. Its Rust declaration is generated from this object's BTF
 * (build.rs: vnt_ebpf::compile_with_records). */
struct tcpretrans_event {
	struct vnt_event_hdr hdr; /* 24 */
	struct vnt_flow flow;     /* 40 */
	__u32 netns;
	__u32 seq;     /* first sequence number resent */
	__u32 end_seq; /* one past the last */
	__u8 state;    /* TCP_ESTABLISHED, ... */
	__u8 _pad[3];
};
VNT_RECORD(tcpretrans_event);

static __always_inline int on_retransmit(const struct sock *sk, const struct sk_buff *skb)
{
	struct vnt_flow f = {};
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	if (family == AF_INET) {
		__be32 s = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__be32 d = BPF_CORE_READ(sk, __sk_common.skc_daddr);

		f.family = 4;
		__builtin_memcpy(f.saddr, &s, 4);
		__builtin_memcpy(f.daddr, &d, 4);
	} else if (family == AF_INET6) {
		f.family = 6;
		BPF_CORE_READ_INTO(&f.saddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&f.daddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	} else {
		vnt_count(VNT_STAT_NOT_IP);
		return 0;
	}
	f.proto = IPPROTO_TCP;
	f.sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	f.dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	/* The agent's filter (addresses, ports, its own export); there is no
	 * packet id, so no sampling: a retransmission of an unsampled segment
	 * finds no journey and is counted as unjoined. */
	if (!vnt_flow_wanted(&f)) {
		vnt_count(VNT_STAT_FILTERED);
		return 0;
	}

	/* TCP keeps its per-skb state in skb->cb (struct tcp_skb_cb). */
	const struct tcp_skb_cb *cb = (const void *)skb + bpf_core_field_offset(struct sk_buff, cb);

	struct tcpretrans_event *e = vnt_reserve(sizeof(*e));
	if (!e)
		return 0;
	vnt_fill_hdr(&e->hdr, TCPRETRANS_KIND, TCPRETRANS_HOOK, sizeof(*e));
	e->flow = f;
	e->netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	e->seq = BPF_CORE_READ(cb, seq);
	e->end_seq = BPF_CORE_READ(cb, end_seq);
	e->state = BPF_CORE_READ(sk, __sk_common.skc_state);
	e->_pad[0] = e->_pad[1] = e->_pad[2] = 0;
	vnt_submit(e);
	return 0;
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tcpretrans_btf, const struct sock *sk, const struct sk_buff *skb)
{
	return on_retransmit(sk, skb);
}

/* BPF_PROG reads the arguments from the context's u64 array: no BTF of the
 * tracepoint needed. Every read in on_retransmit() is a probe read. */
SEC("raw_tp/tcp_retransmit_skb")
int BPF_PROG(tcpretrans_raw, const struct sock *sk, const struct sk_buff *skb)
{
	return on_retransmit(sk, skb);
}

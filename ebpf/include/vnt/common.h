/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * What every vnt eBPF object shares: the ring buffer, the per-CPU counters,
 * the filter and sampling settings the agent writes before loading, and the
 * decision "does this packet get an event". Include it once per object,
 * after vmlinux.h and the libbpf headers.
 *
 * Order of work per packet (cheapest first, nothing reserved until the end):
 *   device and namespace filter -> header parse -> flow filter -> packet id ->
 *   sampling -> bpf_ringbuf_reserve.
 */
#ifndef VNT_COMMON_H
#define VNT_COMMON_H

#include "event.h"

#ifndef VNT_RINGBUF_BYTES
#define VNT_RINGBUF_BYTES (4 * 1024 * 1024) /* the agent may resize it */
#endif

#define VNT_MAX_NETNS 8

/* vnt_filter.flags */
#define VNT_F_FAMILY (1u << 0)
#define VNT_F_PROTO (1u << 1)
#define VNT_F_HOST (1u << 2)
#define VNT_F_SRC (1u << 3)
#define VNT_F_DST (1u << 4)
#define VNT_F_PORT (1u << 5)
#define VNT_F_SPORT (1u << 6)
#define VNT_F_DPORT (1u << 7)
#define VNT_F_DEV (1u << 8)
#define VNT_F_NETNS (1u << 9)
#define VNT_F_EXCLUDE (1u << 10)

#define VNT_MAX_EXCLUDE 4

/* An address and port whose traffic is left out: the agent's own export. */
struct vnt_endpoint {
	__u8 addr[16];
	__u16 port; /* host order */
	__u8 family; /* 4 or 6 */
	__u8 _pad;
};

struct vnt_cidr {
	__u8 addr[16];
	__u8 family; /* 4 or 6 */
	__u8 prefix_len;
	__u16 _pad;
};

/*
 * Written by the agent into `.rodata` before load (aya override_global), so
 * the verifier sees constants and prunes the checks that are switched off.
 * Mirrored in agent/src/probes/filter.rs.
 */
struct vnt_filter {
	__u32 sample_n; /* keep packets whose id % sample_n == 0; 0 and 1 keep all */
	__u32 flags;    /* VNT_F_* */
	__u8 family;
	__u8 proto;
	__u16 port;
	__u16 sport;
	__u16 dport;
	struct vnt_cidr host;
	struct vnt_cidr src;
	struct vnt_cidr dst;
	char dev[16];
	__u32 netns_count;
	__u32 netns[VNT_MAX_NETNS];
	/* Packets to or from these endpoints are not traced (VNT_F_EXCLUDE):
	 * the agent's own OTLP export, which would otherwise feed itself. */
	__u32 exclude_count;
	struct vnt_endpoint exclude[VNT_MAX_EXCLUDE];
};

_Static_assert(sizeof(struct vnt_filter) == 212, "vnt_filter size: see agent/src/probes/filter.rs");

const volatile struct vnt_filter vnt_filter = {};

#define VNT_MAX_TUNNEL_PORTS 4

/* UDP packets to `port` are a tunnel's outer packets, of kind `encap`. */
struct vnt_tunnel_port {
	__u16 port;  /* host order; 0: unused slot */
	__u8 encap;  /* enum vnt_encap */
	__u8 _pad;
};

/*
 * The tunnel ports (config `tunnels`), written by the agent into `.rodata`
 * before load like vnt_filter; mirrored in agent/src/probes/tunnels.rs. The
 * defaults here are flannel's VXLAN port, IANA's, and flannel's UDP backend,
 * for loaders that write nothing.
 */
struct vnt_tunnels {
	struct vnt_tunnel_port ports[VNT_MAX_TUNNEL_PORTS];
};

_Static_assert(sizeof(struct vnt_tunnels) == 16, "vnt_tunnels size: see agent/src/probes/tunnels.rs");

const volatile struct vnt_tunnels vnt_tunnels = {
	.ports = {
		{ .port = 8472, .encap = VNT_ENCAP_VXLAN },
		{ .port = 4789, .encap = VNT_ENCAP_VXLAN },
		{ .port = 8285, .encap = VNT_ENCAP_UDP },
	},
};

/*
 * VNT_RECORD(name): make `struct name`, a plugin's own record, part of the
 * object's BTF (clang keeps the types of globals, not of locals), so that
 * vnt_ebpf::compile_with_records generates its Rust declaration. Costs one
 * pointer in .rodata, never read.
 */
#define VNT_RECORD(name) const volatile struct name *vnt_record_##name __attribute__((unused)) = 0

/*
 * The deployment's packet-id key (128 bits), written by the agent into
 * `.rodata` before load like vnt_filter (config `packet_id.key`). Every
 * agent of a deployment must use the same key, or their ids never match.
 * Mirrored in agent/src/probes/id_key.rs.
 */
struct vnt_id_key {
	__u64 k0;
	__u64 k1;
};

const volatile struct vnt_id_key vnt_id_key = {};

/*
 * Counters, one slot per enum value, summed over CPUs by the agent. A
 * program run increments exactly one slot, its outcome; the agent reports
 * "seen" as the sum of all slots. VNT_STAT_SEEN is the outcome of runs that
 * do not go through the packet pipeline (they only count themselves).
 *
 * The packet pipeline loses a packet whole or not at all on a CPU
 * (vnt/pipeline.h): the hop whose record could not be reserved counts LOST
 * when it is the packet's first hop parsed on this CPU (the packet makes no
 * journey), LOST_GAP when earlier hops were written (its journey has a
 * gap); the later hops of a lost packet count LOST_FOLLOW and write nothing.
 */
enum vnt_stat {
	VNT_STAT_SEEN = 0,        /* runs with no other outcome */
	VNT_STAT_FILTERED = 1,    /* rejected by the filter */
	VNT_STAT_UNSAMPLED = 2,   /* passed the filter, not in the sample */
	VNT_STAT_EMITTED = 3,     /* records written to the ring buffer */
	VNT_STAT_LOST = 4,        /* ring buffer full: record (of a packet's first hop) lost */
	VNT_STAT_NOT_IP = 5,      /* not IPv4/IPv6, or headers unreadable */
	VNT_STAT_LOST_GAP = 6,    /* ring buffer full at a later hop: a journey with a gap */
	VNT_STAT_LOST_FOLLOW = 7, /* a later hop of a packet lost at its first hop */
	VNT_STAT__MAX = 8,
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, VNT_RINGBUF_BYTES);
} vnt_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, VNT_STAT__MAX);
	__type(key, __u32);
	__type(value, __u64);
} vnt_stats SEC(".maps");

/*
 * Atomic: per-CPU does not mean one writer. A program that sleeps or is
 * preempted mid-increment (task context) or is interrupted by a softirq hook
 * of the same object on the same CPU would otherwise lose the other's count.
 */
static __always_inline void vnt_count(enum vnt_stat stat)
{
	__u32 key = stat;
	__u64 *v = bpf_map_lookup_elem(&vnt_stats, &key);

	if (v)
		__sync_fetch_and_add(v, 1);
}

/* Reserve a record, counting `lost` when the buffer is full. */
static __always_inline void *vnt_reserve_or(__u32 size, enum vnt_stat lost)
{
	void *e = bpf_ringbuf_reserve(&vnt_events, size, 0);

	if (!e) {
		vnt_count(lost);
		return 0;
	}
	vnt_count(VNT_STAT_EMITTED);
	return e;
}

/* Reserve a record, counting the loss when the buffer is full. */
static __always_inline void *vnt_reserve(__u32 size)
{
	return vnt_reserve_or(size, VNT_STAT_LOST);
}

/*
 * Wake the agent only every VNT_WAKEUP_EVERY records per CPU. A wakeup per
 * record would make the agent runnable on the CPU that is forwarding the
 * packet, and the scheduler may switch to it right there, adding tens of
 * microseconds to the very path we measure. Asking the ring buffer how full
 * it is (bpf_ringbuf_query) would read a cache line the consumer writes, on
 * every record. The agent also drains every ring buffer on a 10 ms timer,
 * so nothing waits longer than that.
 */
#ifndef VNT_WAKEUP_EVERY
#define VNT_WAKEUP_EVERY 256 /* power of two */
#endif

static __always_inline void vnt_submit(void *e)
{
	__u32 key = VNT_STAT_EMITTED;
	__u64 *emitted = bpf_map_lookup_elem(&vnt_stats, &key);
	bool wake = emitted && (*emitted & (VNT_WAKEUP_EVERY - 1)) == 0;

	bpf_ringbuf_submit(e, wake ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

static __always_inline void vnt_fill_hdr(struct vnt_event_hdr *h, __u16 kind, __u16 hook, __u32 len)
{
	h->ts_ns = bpf_ktime_get_ns();
	h->kind = kind;
	h->hook = hook;
	h->cpu = bpf_get_smp_processor_id();
	h->len = len;
	h->wire_version = VNT_WIRE_VERSION;
}

/* ---- filter ------------------------------------------------------------ */

static __always_inline bool vnt_dev_wanted(const char name[16], __u32 netns)
{
	if (vnt_filter.flags & VNT_F_DEV) {
		for (int i = 0; i < 16; i++) {
			if (name[i] != vnt_filter.dev[i])
				return false;
			if (name[i] == 0)
				break;
		}
	}
	if (vnt_filter.flags & VNT_F_NETNS) {
		bool hit = false;

		for (int i = 0; i < VNT_MAX_NETNS; i++) {
			if (i < vnt_filter.netns_count && vnt_filter.netns[i] == netns)
				hit = true;
		}
		if (!hit)
			return false;
	}
	return true;
}

static __always_inline bool vnt_cidr_match(const volatile struct vnt_cidr *c, const __u8 addr[16], __u8 family)
{
	if (c->family != family)
		return false;
	__u32 bits = c->prefix_len;

	for (int i = 0; i < 16; i++) {
		if (bits == 0)
			return true;
		__u8 mask = bits >= 8 ? 0xff : (__u8)(0xff << (8 - bits));

		if ((addr[i] & mask) != (c->addr[i] & mask))
			return false;
		bits = bits >= 8 ? bits - 8 : 0;
	}
	return true;
}

static __always_inline bool vnt_endpoint_is(const volatile struct vnt_endpoint *e, const __u8 *addr, __u16 port, __u8 family)
{
	if (e->family != family || e->port != port)
		return false;
	int n = family == 6 ? 16 : 4;

	for (int i = 0; i < 16; i++) {
		if (i < n && e->addr[i] != addr[i])
			return false;
	}
	return true;
}

static __always_inline bool vnt_flow_excluded(const struct vnt_flow *f)
{
	for (int i = 0; i < VNT_MAX_EXCLUDE; i++) {
		if (i >= vnt_filter.exclude_count)
			break;
		const volatile struct vnt_endpoint *e = &vnt_filter.exclude[i];

		if (vnt_endpoint_is(e, f->saddr, f->sport, f->family) || vnt_endpoint_is(e, f->daddr, f->dport, f->family))
			return true;
	}
	return false;
}

static __always_inline bool vnt_flow_wanted(const struct vnt_flow *f)
{
	__u32 fl = vnt_filter.flags;

	if ((fl & VNT_F_EXCLUDE) && vnt_flow_excluded(f))
		return false;
	if ((fl & VNT_F_FAMILY) && f->family != vnt_filter.family)
		return false;
	if ((fl & VNT_F_PROTO) && f->proto != vnt_filter.proto)
		return false;
	if ((fl & VNT_F_HOST) && !vnt_cidr_match(&vnt_filter.host, f->saddr, f->family) &&
	    !vnt_cidr_match(&vnt_filter.host, f->daddr, f->family))
		return false;
	if ((fl & VNT_F_SRC) && !vnt_cidr_match(&vnt_filter.src, f->saddr, f->family))
		return false;
	if ((fl & VNT_F_DST) && !vnt_cidr_match(&vnt_filter.dst, f->daddr, f->family))
		return false;
	if ((fl & VNT_F_PORT) && f->sport != vnt_filter.port && f->dport != vnt_filter.port)
		return false;
	if ((fl & VNT_F_SPORT) && f->sport != vnt_filter.sport)
		return false;
	if ((fl & VNT_F_DPORT) && f->dport != vnt_filter.dport)
		return false;
	return true;
}

/* ---- packet id and sampling ------------------------------------------- */

/*
 * The packet id: SipHash-1-3 of the identity key (its ten 64-bit words,
 * little-endian as laid out in memory) under the deployment's key
 * vnt_id_key (docs/adr/011-keyed-packet-id.md). Keyed, so that a sender who
 * does not know the key can neither choose payload bytes that force its
 * packets into the sample (`id % N == 0`) or make them collide with another
 * packet's id, nor read payload bytes back from an exported id. Every agent
 * with the same key computes the same id. Mirrored in Rust by
 * agent/src/probes/id_key.rs (`packet_id`) for tests.
 */
#define VNT_ROTL64(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define VNT_SIPROUND(v0, v1, v2, v3)                                                                                   \
	do {                                                                                                           \
		v0 += v1;                                                                                              \
		v1 = VNT_ROTL64(v1, 13);                                                                               \
		v1 ^= v0;                                                                                              \
		v0 = VNT_ROTL64(v0, 32);                                                                               \
		v2 += v3;                                                                                              \
		v3 = VNT_ROTL64(v3, 16);                                                                               \
		v3 ^= v2;                                                                                              \
		v0 += v3;                                                                                              \
		v3 = VNT_ROTL64(v3, 21);                                                                               \
		v3 ^= v0;                                                                                              \
		v2 += v1;                                                                                              \
		v1 = VNT_ROTL64(v1, 17);                                                                               \
		v1 ^= v2;                                                                                              \
		v2 = VNT_ROTL64(v2, 32);                                                                               \
	} while (0)

static __always_inline __u64 vnt_pkt_hash(const struct vnt_pkt_key *k)
{
	const __u64 *w = (const __u64 *)k;
	__u64 k0 = vnt_id_key.k0, k1 = vnt_id_key.k1;
	__u64 v0 = k0 ^ 0x736f6d6570736575ULL;
	__u64 v1 = k1 ^ 0x646f72616e646f6dULL;
	__u64 v2 = k0 ^ 0x6c7967656e657261ULL;
	__u64 v3 = k1 ^ 0x7465646279746573ULL;

	for (int i = 0; i < (int)(sizeof(*k) / 8); i++) {
		v3 ^= w[i];
		VNT_SIPROUND(v0, v1, v2, v3);
		v0 ^= w[i];
	}
	/* The last block: the message length in bytes in the top byte. */
	__u64 b = (__u64)sizeof(*k) << 56;

	v3 ^= b;
	VNT_SIPROUND(v0, v1, v2, v3);
	v0 ^= b;
	v2 ^= 0xff;
	VNT_SIPROUND(v0, v1, v2, v3);
	VNT_SIPROUND(v0, v1, v2, v3);
	VNT_SIPROUND(v0, v1, v2, v3);
	return v0 ^ v1 ^ v2 ^ v3;
}

static __always_inline bool vnt_sampled(__u64 pkt_id)
{
	__u32 n = vnt_filter.sample_n;

	return n <= 1 || pkt_id % n == 0;
}

#endif /* VNT_COMMON_H */

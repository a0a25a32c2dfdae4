// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * ovs: Open vSwitch's kernel datapath. One packet crossing an OVS bridge is
 * one OVS hop (the actions the datapath executed on it); a packet that
 * missed the flow table also has its slow path: queued to user space,
 * picked up by an ovs-vswitchd handler thread, the flow installed, the
 * packet executed and re-injected (the re-injected packet has the same
 * content, so the same packet id: it continues the same journey).
 *
 * Hooks (docs/adr/017-ovs-plugin.md):
 *   openvswitch:ovs_do_execute_action  raw_tp, every action of every packet;
 *                                      the hop is written at the last action
 *                                      with the whole list
 *   openvswitch:ovs_execute_actions    kprobe, only to see an empty action
 *                                      list (a drop: no action runs, so the
 *                                      tracepoint above never fires)
 *   openvswitch:ovs_dp_upcall          raw_tp, a flow miss queued to user space
 *   netlink_unicast                    kprobe, the upcall's netlink message
 *                                      handed to the handler's socket
 *   skb:skb_copy_datagram_iovec        raw_tp, a handler thread reads it
 *   openvswitch:ovs_flow_cmd_new       kprobe, the handler installs a flow
 *   openvswitch:ovs_packet_cmd_execute kprobe, the handler sends the packet back
 *
 * The module's types (struct datapath, struct vport) are not in vmlinux.h:
 * they are declared below with only the members read, and relocated by
 * CO-RE against the module's BTF (the agent merges it, ADR 016).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

#include "vnt/pipeline.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Hook ids: the decoder in src/lib.rs names them. */
enum ovs_hook {
	OVS_HOOK_EXECUTE = 1,   /* the datapath executes a packet's actions: the OVS hop */
	OVS_HOOK_UPCALL = 2,    /* a flow miss goes up to ovs-vswitchd */
	OVS_HOOK_QUEUED = 3,    /* the upcall message is queued to a handler socket */
	OVS_HOOK_HANDLER = 4,   /* a handler thread reads it */
	OVS_HOOK_FLOW_NEW = 5,  /* a handler installs a flow */
	OVS_HOOK_PKT_EXEC = 6,  /* a handler sends the packet back to execute */
	OVS_HOOK_NETDEV = 7,    /* the userspace datapath sends it out of a port */
};

#define OVS_KIND 16 /* hdr.kind of this plugin's own record (struct ovs_event) */

/* Actions kept per hop; a longer list is cut (ovs_tail.n_actions says how long it was). */
#define OVS_MAX_ACTIONS 6

/* uapi (include/uapi/linux/openvswitch.h): values fixed by the ABI with ovs-vswitchd. */
#define OVS_ACTION_ATTR_OUTPUT 1
#define OVS_FLOW_ATTR_UFID 9
#define OVSP_LOCAL 0
#define DP_VPORT_HASH_BUCKETS 1024
#define NLA_TYPE_MASK 0x3fff

/* What the OVS hop and the upcall carry after the packet event. */
struct ovs_tail {
	char datapath[16];                  /* the datapath's name (its local port's device) */
	char out_port[16];                  /* the first output action's port, "" when none */
	__u32 n_actions;                    /* actions executed (0: none, a drop) */
	__u32 upcall_port;                  /* upcall: the Netlink port id of the handler's socket */
	__u16 act_type[OVS_MAX_ACTIONS];    /* enum ovs_action_attr */
	__u32 act_arg[OVS_MAX_ACTIONS];     /* OUTPUT: the port number; else 0 */
	__u32 tid;                          /* the thread that ran it */
	__u8 upcall_cmd;                    /* upcall: OVS_PACKET_CMD_MISS (1), _ACTION (2) */
	__u8 _pad[3];
	char comm[16];                      /* that thread's name */
	__u64 first_ts;                     /* taken first in the program: the upcall's start, the first action's time */
};
VNT_RECORD(ovs_tail);

/* A step of the slow path that is not a packet (a Netlink message, a handler's call). */
struct ovs_event {
	struct vnt_event_hdr hdr;
	__u64 pkt_id;     /* the packet, where known (QUEUED, HANDLER), else 0 */
	__u64 upcall_ts;  /* QUEUED, HANDLER: when its upcall began */
	__u32 tid;
	__u32 arg;        /* QUEUED: the Netlink port id */
	char comm[16];
	__u8 ufid[16];    /* FLOW_NEW: the flow's unique id, when ovs-vswitchd gave one */
	__u8 has_ufid;
	__u8 _pad[7];
};
VNT_RECORD(ovs_event);

/* ---- The module's types, as much as is read ---------------------------- */

struct vport___ovs {
	struct net_device *dev;
	__u16 port_no;
	struct hlist_node dp_hash_node;
} __attribute__((preserve_access_index));

struct datapath___ovs {
	struct hlist_head *ports;
} __attribute__((preserve_access_index));

struct dp_upcall_info___ovs {
	__u32 portid;
	__u8 cmd;
} __attribute__((preserve_access_index));

struct sw_flow_actions___ovs {
	__u32 actions_len;
} __attribute__((preserve_access_index));

/*
 * The module's types exist only when the module's BTF was there at load
 * time; a CO-RE read of a missing type is poisoned, and the verifier rejects
 * the program unless that code is unreachable. Each read sits in a
 * function that is not inlined, called behind bpf_core_type_exists(): clang
 * cannot hoist the poisoned relocation above the check.
 */

/* The device name of port `port_no` of `dp` (ovs_lookup_vport()). */
static __noinline void ovs_port_name_read(const struct datapath___ovs *dp, __u32 port_no, char *name)
{
	struct hlist_head *ports = BPF_CORE_READ(dp, ports);

	if (!ports || !name)
		return;
	struct hlist_node *n = BPF_CORE_READ(&ports[port_no & (DP_VPORT_HASH_BUCKETS - 1)], first);
	__u32 off = bpf_core_field_offset(struct vport___ovs, dp_hash_node);

	for (int i = 0; i < 4 && n; i++) {
		const struct vport___ovs *v = (const void *)n - off;

		if (BPF_CORE_READ(v, port_no) == port_no) {
			struct net_device *dev = BPF_CORE_READ(v, dev);

			bpf_probe_read_kernel_str(name, 16, &dev->name);
			return;
		}
		n = BPF_CORE_READ(n, next);
	}
}

static __always_inline void ovs_port_name(const void *dp, __u32 port_no, char name[16])
{
	if (bpf_core_type_exists(struct datapath___ovs) && bpf_core_type_exists(struct vport___ovs) && dp)
		ovs_port_name_read(dp, port_no, name);
}

static __noinline __u32 ovs_actions_len(const struct sw_flow_actions___ovs *acts)
{
	return BPF_CORE_READ(acts, actions_len);
}

static __noinline void ovs_upcall_info(const struct dp_upcall_info___ovs *ui, struct ovs_tail *t)
{
	if (!t)
		return;
	t->upcall_cmd = BPF_CORE_READ(ui, cmd);
	t->upcall_port = BPF_CORE_READ(ui, portid);
}

static __always_inline void ovs_thread(__u32 *tid, char comm[16])
{
	*tid = (__u32)bpf_get_current_pid_tgid();
	bpf_get_current_comm(comm, 16);
}

/* ---- The OVS hop -----------------------------------------------------------
 *
 * ovs_do_execute_action fires once per action, with the action's attribute
 * and what remains of the list. The actions of one execution are gathered
 * per CPU (keyed by skb and flow key: an execution runs to its end on one
 * CPU, with bottom halves off) and the hop is written at the last one.
 */
struct ovs_pending {
	__u64 skb;
	__u64 key;
	__u64 first_ts;
	__u32 n;
	__u16 act_type[OVS_MAX_ACTIONS];
	__u32 act_arg[OVS_MAX_ACTIONS];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ovs_pending);
} ovs_actions SEC(".maps");

static __always_inline void ovs_fill_tail(struct ovs_tail *t, const void *dp)
{
	__builtin_memset(t, 0, sizeof(*t));
	ovs_port_name(dp, OVSP_LOCAL, t->datapath);
	ovs_thread(&t->tid, t->comm);
}

static __always_inline int ovs_hop(struct sk_buff *skb, const void *dp, struct ovs_pending *pa, __u16 kind,
				   __u32 reason)
{
	struct vnt_hook_ctx c = {
		.hook = OVS_HOOK_EXECUTE,
		.kind = kind,
		.direction = VNT_DIR_NONE,
		.typed = false,
		.data_is_l3 = false,
		.drop_reason = reason,
	};
	struct vnt_packet_event *e =
		vnt_packet_reserve(skb, BPF_CORE_READ(skb, dev), c, sizeof(*e) + sizeof(struct ovs_tail));

	if (!e)
		return 0;
	struct ovs_tail *t = (void *)(e + 1);

	ovs_fill_tail(t, dp);
	if (pa) {
		__u32 n = pa->n;

		t->n_actions = n;
		t->first_ts = pa->first_ts;
		for (int i = 0; i < OVS_MAX_ACTIONS; i++) {
			t->act_type[i] = pa->act_type[i];
			t->act_arg[i] = pa->act_arg[i];
			if (i < n && pa->act_type[i] == OVS_ACTION_ATTR_OUTPUT && !t->out_port[0])
				ovs_port_name(dp, pa->act_arg[i], t->out_port);
		}
	} else {
		t->first_ts = e->hdr.ts_ns;
	}
	vnt_submit(e);
	return 0;
}

SEC("raw_tp/ovs_do_execute_action")
int BPF_PROG(ovs_execute_raw, void *dp, struct sk_buff *skb, void *key, const struct nlattr *a, int rem)
{
	__u32 zero = 0;
	struct ovs_pending *pa = bpf_map_lookup_elem(&ovs_actions, &zero);

	if (!pa)
		return 0;
	if (pa->skb != (__u64)skb || pa->key != (__u64)key) {
		__builtin_memset(pa, 0, sizeof(*pa));
		pa->skb = (__u64)skb;
		pa->key = (__u64)key;
		pa->first_ts = bpf_ktime_get_ns();
	}
	__u16 len = BPF_CORE_READ(a, nla_len);
	__u16 type = BPF_CORE_READ(a, nla_type) & NLA_TYPE_MASK;
	__u32 n = pa->n;

	if (n < OVS_MAX_ACTIONS) {
		pa->act_type[n] = type;
		if (type == OVS_ACTION_ATTR_OUTPUT) {
			__u32 port = 0;

			bpf_probe_read_kernel(&port, sizeof(port), (const void *)a + 4);
			pa->act_arg[n] = port;
		}
	}
	pa->n = n + 1;
	/* nla_is_last(): this attribute fills what remains. */
	if (len < rem)
		return 0;
	ovs_hop(skb, dp, pa, VNT_EV_PACKET, 0);
	pa->skb = 0;
	return 0;
}

/*
 * An empty action list: the datapath drops the packet without running any
 * action, so ovs_do_execute_action never fires; the hop is written here, with
 * the actions `drop`. Linux 6.4+ then frees the skb with OVS's own reason
 * (OVS_DROP_LAST_ACTION) at skb:kfree_skb, the drop hook that reports every
 * drop with the kernel's reason (the veth plugin's): there the hop is a plain
 * OVS hop, and the drop right after it carries the reason. Older kernels
 * consume the skb as if it were not dropped at all: there the OVS hop is the
 * drop, with the generic reason "not specified".
 */
SEC("kprobe/ovs_execute_actions")
int BPF_KPROBE(ovs_drop_kprobe, void *dp, struct sk_buff *skb, const struct sw_flow_actions___ovs *acts)
{
	if (!bpf_core_type_exists(struct sw_flow_actions___ovs) || ovs_actions_len(acts) != 0)
		return 0;
	/* Kernels whose drop reasons have an openvswitch subsystem (6.4+). */
	if (bpf_core_enum_value_exists(enum skb_drop_reason_subsys, SKB_DROP_REASON_SUBSYS_OPENVSWITCH))
		return ovs_hop(skb, dp, 0, VNT_EV_PACKET, 0);
	__u32 reason = 0;

	if (bpf_core_enum_value_exists(enum skb_drop_reason, SKB_DROP_REASON_NOT_SPECIFIED))
		reason = bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_NOT_SPECIFIED);
	return ovs_hop(skb, dp, 0, VNT_EV_DROP, reason);
}

/* ---- The slow path ---------------------------------------------------------
 *
 * The upcall tracepoint fires in ovs_dp_upcall(), before
 * queue_userspace_packet() builds the Netlink message and hands it to
 * netlink_unicast(), in the same thread on the same CPU. A per-CPU note
 * "inside the upcall of packet X" lets the kprobe on netlink_unicast learn
 * the message's skb; the handler thread's read of that skb
 * (skb_copy_datagram_iovec) is then the pickup.
 */
struct ovs_in_upcall {
	__u64 pkt_id;
	__u64 ts;
	__u64 pid_tgid;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ovs_in_upcall);
} ovs_in_upcall SEC(".maps");

/* Upcall messages in flight: Netlink skb -> its packet. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct ovs_in_upcall);
} ovs_upcall_msgs SEC(".maps");

SEC("raw_tp/ovs_dp_upcall")
int BPF_PROG(ovs_upcall_raw, void *dp, struct sk_buff *skb, void *key, const void *upcall_info)
{
	/* The upcall's start: before this program's own work (the pipeline). */
	__u64 start = bpf_ktime_get_ns();
	struct vnt_hook_ctx c = {
		.hook = OVS_HOOK_UPCALL,
		.kind = VNT_EV_PACKET,
		.direction = VNT_DIR_NONE,
		.typed = false,
		.data_is_l3 = false,
	};
	struct vnt_packet_event *e =
		vnt_packet_reserve(skb, BPF_CORE_READ(skb, dev), c, sizeof(*e) + sizeof(struct ovs_tail));

	if (!e)
		return 0;
	struct ovs_tail *t = (void *)(e + 1);

	ovs_fill_tail(t, dp);
	t->first_ts = start;
	if (bpf_core_type_exists(struct dp_upcall_info___ovs))
		ovs_upcall_info(upcall_info, t);

	__u32 zero = 0;
	struct ovs_in_upcall *u = bpf_map_lookup_elem(&ovs_in_upcall, &zero);

	if (u) {
		u->pkt_id = e->pkt_id;
		u->ts = start;
		u->pid_tgid = bpf_get_current_pid_tgid();
	}
	vnt_submit(e);
	return 0;
}

static __always_inline struct ovs_event *ovs_event_reserve(__u16 hook)
{
	struct ovs_event *e = vnt_reserve(sizeof(*e));

	if (!e)
		return 0;
	__builtin_memset((void *)e + sizeof(e->hdr), 0, sizeof(*e) - sizeof(e->hdr));
	vnt_fill_hdr(&e->hdr, OVS_KIND, hook, sizeof(*e));
	ovs_thread(&e->tid, e->comm);
	return e;
}

SEC("kprobe/netlink_unicast")
int BPF_KPROBE(ovs_queued_kprobe, struct sock *ssk, struct sk_buff *skb, __u32 portid)
{
	__u32 zero = 0;
	struct ovs_in_upcall *u = bpf_map_lookup_elem(&ovs_in_upcall, &zero);

	if (!u || !u->pkt_id || u->pid_tgid != bpf_get_current_pid_tgid())
		return 0;
	struct ovs_in_upcall note = *u;

	u->pkt_id = 0;
	__u64 msg = (__u64)skb;

	bpf_map_update_elem(&ovs_upcall_msgs, &msg, &note, BPF_ANY);
	struct ovs_event *e = ovs_event_reserve(OVS_HOOK_QUEUED);

	if (!e)
		return 0;
	e->pkt_id = note.pkt_id;
	e->upcall_ts = note.ts;
	e->arg = portid;
	vnt_submit(e);
	return 0;
}

static __always_inline int ovs_handler_read(const struct sk_buff *skb)
{
	__u64 msg = (__u64)skb;
	struct ovs_in_upcall *u = bpf_map_lookup_elem(&ovs_upcall_msgs, &msg);

	if (!u)
		return 0;
	struct ovs_in_upcall note = *u;

	bpf_map_delete_elem(&ovs_upcall_msgs, &msg);
	struct ovs_event *e = ovs_event_reserve(OVS_HOOK_HANDLER);

	if (!e)
		return 0;
	e->pkt_id = note.pkt_id;
	e->upcall_ts = note.ts;
	vnt_submit(e);
	return 0;
}

SEC("tp_btf/skb_copy_datagram_iovec")
int BPF_PROG(ovs_handler_btf, const struct sk_buff *skb, int len)
{
	return ovs_handler_read(skb);
}

SEC("raw_tp/skb_copy_datagram_iovec")
int BPF_PROG(ovs_handler_raw, const struct sk_buff *skb, int len)
{
	return ovs_handler_read(skb);
}

/* ovs_flow_cmd_new(skb, info): the flow's UFID is info->attrs[OVS_FLOW_ATTR_UFID]. */
SEC("kprobe/ovs_flow_cmd_new")
int BPF_KPROBE(ovs_flow_new_kprobe, struct sk_buff *skb, struct genl_info *info)
{
	struct ovs_event *e = ovs_event_reserve(OVS_HOOK_FLOW_NEW);

	if (!e)
		return 0;
	struct nlattr **attrs = BPF_CORE_READ(info, attrs);
	struct nlattr *ufid = 0;

	if (attrs)
		bpf_probe_read_kernel(&ufid, sizeof(ufid), &attrs[OVS_FLOW_ATTR_UFID]);
	if (ufid && BPF_CORE_READ(ufid, nla_len) >= 4 + 16) {
		bpf_probe_read_kernel(e->ufid, 16, (const void *)ufid + 4);
		e->has_ufid = 1;
	}
	vnt_submit(e);
	return 0;
}

SEC("kprobe/ovs_packet_cmd_execute")
int BPF_KPROBE(ovs_pkt_exec_kprobe, struct sk_buff *skb, struct genl_info *info)
{
	struct ovs_event *e = ovs_event_reserve(OVS_HOOK_PKT_EXEC);

	if (e)
		vnt_submit(e);
	return 0;
}

/* ---- The userspace datapath (datapath_type=netdev) -------------------------
 *
 * ovs-vswitchd reads each packet from its rx port's AF_PACKET socket and
 * writes it to the tx port's: the kernel sees a transmit from an AF_PACKET
 * socket, in an ovs-vswitchd thread, of a packet with the same headers (the
 * same packet id). That transmit is the OVS hop; nothing of the flow, the
 * actions or the upcalls crosses the kernel (and Debian's ovs-vswitchd has
 * no USDT probes), so the hop carries only the datapath, out port and thread.
 */
#define AF_PACKET 17

static __always_inline bool ovs_is_vswitchd(void)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	char comm[16] = {};

	BPF_CORE_READ_STR_INTO(&comm, t, group_leader, comm);
	const char want[] = "ovs-vswitchd";

	for (int i = 0; i < sizeof(want); i++) {
		if (comm[i] != want[i])
			return false;
	}
	return true;
}

static __always_inline int ovs_netdev_tx(struct sk_buff *skb, struct net_device *dev, bool typed)
{
	struct sock *sk = VNT_READ(typed, skb, sk);

	if (!sk || BPF_CORE_READ(sk, __sk_common.skc_family) != AF_PACKET || !ovs_is_vswitchd())
		return 0;
	struct vnt_hook_ctx c = {
		.hook = OVS_HOOK_NETDEV,
		.kind = VNT_EV_PACKET,
		.direction = VNT_DIR_NONE,
		.typed = typed,
		.data_is_l3 = false,
	};
	struct vnt_packet_event *e = vnt_packet_reserve(skb, dev, c, sizeof(*e) + sizeof(struct ovs_tail));

	if (!e)
		return 0;
	struct ovs_tail *t = (void *)(e + 1);

	__builtin_memset(t, 0, sizeof(*t));
	__builtin_memcpy(t->datapath, "netdev", 7);
	BPF_CORE_READ_STR_INTO(&t->out_port, dev, name);
	ovs_thread(&t->tid, t->comm);
	t->first_ts = e->hdr.ts_ns;
	vnt_submit(e);
	return 0;
}

SEC("tp_btf/net_dev_start_xmit")
int BPF_PROG(ovs_netdev_btf, struct sk_buff *skb, struct net_device *dev)
{
	return ovs_netdev_tx(skb, dev, true);
}

SEC("raw_tp/net_dev_start_xmit")
int BPF_PROG(ovs_netdev_raw, struct sk_buff *skb, struct net_device *dev)
{
	return ovs_netdev_tx(skb, dev, false);
}

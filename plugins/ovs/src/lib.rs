//! ovs: Open vSwitch's kernel datapath as hops of packet journeys.
//!
//! A packet crossing an OVS bridge gets one OVS hop (`ovs`): the actions the
//! datapath executed on it (`vnt.ovs.actions`, written like `ovs-appctl
//! dpctl/dump-flows` writes them), its datapath, in and out ports, and
//! whether it took the fast path (a flow matched in the kernel) or the slow
//! path. A packet that missed the flow table carries its slow path as steps
//! nested in that hop: the upcall, and within it the Netlink message queued
//! to a handler socket, the handler thread reading it, the flow installed
//! (its UFID, as `dpctl/dump-flows -m` shows it) and the packet sent back
//! to execute. The re-injected packet has the same headers, so the same
//! packet id: its OVS hop and every hop after it continue the journey.
//!
//! The kernel side (`bpf/ovs.bpf.c`) writes what each hook sees; the decoder
//! here pairs them: the handler-side steps carry no packet (ovs-vswitchd
//! sends its own Netlink messages), so they go to the upcall the same
//! handler thread picked up before. Decisions: docs/adr/017-ovs-plugin.md.

use std::collections::{HashMap, VecDeque};

use vnt_plugin_api::zerocopy::FromBytes;
use vnt_plugin_api::{
    export_plugin, wire, Cardinality, DecodeError, FieldKind, FieldSpec, FieldValue, HookKind,
    HookSpec, InitContext, LogLevel, MetricKind, MetricPoint, MetricSpec, Observation,
    PacketObservation, Plugin, PluginError, PluginInfo, ProbeAlternative, ProbeSpec, Value,
};

static BPF_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ovs.bpf.o"));

/// Hook ids, as `enum ovs_hook` in the C.
pub mod hook {
    /// `openvswitch:ovs_do_execute_action`: the OVS hop.
    pub const EXECUTE: u16 = 1;
    /// `openvswitch:ovs_dp_upcall`: a flow miss goes up to ovs-vswitchd.
    pub const UPCALL: u16 = 2;
    /// `netlink_unicast`: the upcall message is queued to a handler socket.
    pub const QUEUED: u16 = 3;
    /// `skb:skb_copy_datagram_iovec`: a handler thread reads it.
    pub const HANDLER: u16 = 4;
    /// `ovs_flow_cmd_new`: a handler installs a flow.
    pub const FLOW_NEW: u16 = 5;
    /// `ovs_packet_cmd_execute`: a handler sends the packet back.
    pub const PKT_EXEC: u16 = 6;
    /// `net:net_dev_start_xmit` from an AF_PACKET socket of ovs-vswitchd:
    /// the userspace datapath's OVS hop.
    pub const NETDEV: u16 = 7;
}

/// `hdr.kind` of the plugin's own record (`OVS_KIND` in the C).
const KIND: u16 = 16;

/// The parent of the upcall's own steps: the upcall (the exporter nests a
/// step under the nearest hop or step of its parent hook).
const STEP_PARENT: u16 = hook::UPCALL;

mod records {
    include!(concat!(env!("OUT_DIR"), "/ovs.bpf.records.rs"));
}
use records::{OvsEvent, OvsTail};

mod programs {
    include!(concat!(env!("OUT_DIR"), "/ovs.bpf.programs.rs"));
}
use programs::*;

/// A kprobe on a function of the openvswitch module: attached when the
/// module loads (the agent waits for it).
const fn module_kprobe(program: &'static str, target: &'static str) -> ProbeAlternative {
    ProbeAlternative {
        kind: HookKind::KProbe,
        program,
        target,
    }
}

static EXECUTE: [ProbeAlternative; 1] = [OVS_EXECUTE_RAW];
static DROP: [ProbeAlternative; 1] = [module_kprobe(
    "ovs_drop_kprobe",
    "openvswitch:ovs_execute_actions",
)];
static UPCALL: [ProbeAlternative; 1] = [OVS_UPCALL_RAW];
static QUEUED: [ProbeAlternative; 1] = [OVS_QUEUED_KPROBE];
static HANDLER: [ProbeAlternative; 2] = [OVS_HANDLER_BTF, OVS_HANDLER_RAW];
static FLOW_NEW: [ProbeAlternative; 1] = [module_kprobe(
    "ovs_flow_new_kprobe",
    "openvswitch:ovs_flow_cmd_new",
)];
static PKT_EXEC: [ProbeAlternative; 1] = [module_kprobe(
    "ovs_pkt_exec_kprobe",
    "openvswitch:ovs_packet_cmd_execute",
)];

// None is required: on a host without the openvswitch module the plugin
// attaches nothing and says why (`vnt-agent check --plugins ovs`); the
// journeys then come from the other plugins alone.
static NETDEV: [ProbeAlternative; 2] = [OVS_NETDEV_BTF, OVS_NETDEV_RAW];

static PROBES: [ProbeSpec; 8] = [
    ProbeSpec {
        name: "ovs_execute",
        required: false,
        opt_in: false,
        alternatives: &EXECUTE,
    },
    ProbeSpec {
        name: "ovs_drop",
        required: false,
        opt_in: false,
        alternatives: &DROP,
    },
    ProbeSpec {
        name: "ovs_upcall",
        required: false,
        opt_in: false,
        alternatives: &UPCALL,
    },
    ProbeSpec {
        name: "ovs_queued",
        required: false,
        opt_in: false,
        alternatives: &QUEUED,
    },
    ProbeSpec {
        name: "ovs_handler",
        required: false,
        opt_in: false,
        alternatives: &HANDLER,
    },
    ProbeSpec {
        name: "ovs_flow_new",
        required: false,
        opt_in: false,
        alternatives: &FLOW_NEW,
    },
    ProbeSpec {
        name: "ovs_pkt_exec",
        required: false,
        opt_in: false,
        alternatives: &PKT_EXEC,
    },
    ProbeSpec {
        // The userspace datapath: runs on every kernel, sees only the hop.
        name: "ovs_netdev",
        required: false,
        opt_in: false,
        alternatives: &NETDEV,
    },
];

static HOOKS: [HookSpec; 7] = [
    HookSpec {
        id: hook::EXECUTE,
        name: "openvswitch:ovs_do_execute_action",
        label: "ovs",
        terminal: false,
    },
    HookSpec {
        id: hook::UPCALL,
        name: "openvswitch:ovs_dp_upcall",
        label: "upcall",
        terminal: false,
    },
    HookSpec {
        id: hook::QUEUED,
        name: "netlink_unicast",
        label: "upcall-queued",
        terminal: false,
    },
    HookSpec {
        id: hook::HANDLER,
        name: "skb:skb_copy_datagram_iovec",
        label: "handler-read",
        terminal: false,
    },
    HookSpec {
        id: hook::FLOW_NEW,
        name: "ovs_flow_cmd_new",
        label: "flow-install",
        terminal: false,
    },
    HookSpec {
        id: hook::PKT_EXEC,
        name: "ovs_packet_cmd_execute",
        label: "packet-execute",
        terminal: false,
    },
    HookSpec {
        id: hook::NETDEV,
        name: "net:net_dev_start_xmit",
        label: "ovs",
        terminal: false,
    },
];

/// Field ids, indexes in [`FIELDS`].
pub mod field {
    /// The datapath (`ovs-system`).
    pub const DATAPATH: u16 = 0;
    /// The port the packet came in on.
    pub const IN_PORT: u16 = 1;
    /// The first output action's port.
    pub const OUT_PORT: u16 = 2;
    /// The actions executed, as dpctl/dump-flows writes them.
    pub const ACTIONS: u16 = 3;
    /// `fast` or `slow`.
    pub const PATH: u16 = 4;
    /// The UFID of the flow the handler installed.
    pub const UFID: u16 = 5;
    /// `miss` or `action`.
    pub const UPCALL_CMD: u16 = 6;
    /// The Netlink port id the upcall was queued to.
    pub const UPCALL_PORT: u16 = 7;
    /// The thread's name.
    pub const THREAD_NAME: u16 = 8;
    /// The thread's id.
    pub const THREAD_ID: u16 = 9;
    /// What the hop cannot show.
    pub const UNAVAILABLE: u16 = 10;
}

/// What a hop of the userspace datapath cannot show, and why.
pub const NETDEV_UNAVAILABLE: &str = "flow, actions, in port, upcalls: the userspace datapath (netdev) runs them inside ovs-vswitchd, out of the kernel's sight, and this ovs-vswitchd has no USDT probes";

static FIELDS: [FieldSpec; 11] = [
    FieldSpec {
        name: "datapath",
        kind: FieldKind::Str,
        unit: "",
        otel_key: "",
        cardinality: Cardinality::Low,
        description: "the kernel datapath (ovs-system: every bridge of the kernel datapath shares it)",
    },
    FieldSpec {
        name: "in_port",
        kind: FieldKind::Str,
        unit: "",
        otel_key: "",
        cardinality: Cardinality::Low,
        description: "the datapath port the packet came in on (its device's name)",
    },
    FieldSpec {
        name: "out_port",
        kind: FieldKind::Str,
        unit: "",
        otel_key: "",
        cardinality: Cardinality::Low,
        description: "the port of the first output action",
    },
    FieldSpec {
        name: "actions",
        kind: FieldKind::Str,
        unit: "",
        otel_key: "",
        cardinality: Cardinality::High,
        description: "the actions the datapath executed, as `ovs-appctl dpctl/dump-flows -m` writes them (`drop` for none)",
    },
    FieldSpec {
        name: "path",
        kind: FieldKind::Str,
        unit: "",
        otel_key: "",
        cardinality: Cardinality::Low,
        description: "fast: a kernel flow matched; slow: the packet went up to ovs-vswitchd (an upcall) first",
    },
    FieldSpec {
        name: "ufid",
        kind: FieldKind::Str,
        unit: "",
        otel_key: "",
        cardinality: Cardinality::High,
        description: "the unique id of the datapath flow the handler installed, as dpctl/dump-flows -m shows it",
    },
    FieldSpec {
        name: "upcall.cmd",
        kind: FieldKind::Str,
        unit: "",
        otel_key: "",
        cardinality: Cardinality::Low,
        description: "why the packet went up: miss (no flow matched) or action (a userspace action)",
    },
    FieldSpec {
        name: "upcall.port",
        kind: FieldKind::U64,
        unit: "",
        otel_key: "",
        cardinality: Cardinality::High,
        description: "the Netlink port id of the handler socket the upcall was queued to",
    },
    FieldSpec {
        name: "thread.name",
        kind: FieldKind::Str,
        unit: "",
        otel_key: "thread.name",
        cardinality: Cardinality::Low,
        description: "the thread that ran the step (an ovs-vswitchd handler)",
    },
    FieldSpec {
        name: "thread.id",
        kind: FieldKind::U64,
        unit: "",
        otel_key: "thread.id",
        cardinality: Cardinality::High,
        description: "the id of that thread",
    },
    FieldSpec {
        name: "unavailable",
        kind: FieldKind::Str,
        unit: "",
        otel_key: "",
        cardinality: Cardinality::Low,
        description: "what this hop cannot show, and why (the userspace datapath)",
    },
];

/// Metric ids, indexes in [`METRICS`].
pub mod metric {
    /// Upcall latency histogram.
    pub const UPCALL_LATENCY: u16 = 0;
    /// Packets by path and in port.
    pub const PACKETS: u16 = 1;
    /// Drops by in port.
    pub const DROPS: u16 = 2;
    /// Upcalls no handler read.
    pub const UPCALL_FAILURES: u16 = 3;
}

static METRICS: [MetricSpec; 4] = [
    MetricSpec {
        name: "upcall.latency",
        kind: MetricKind::Histogram,
        unit: "s",
        description: "from the upcall to the packet's execution of the installed flow's actions (sampled packets)",
        labels: &[],
        buckets: &[
            0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
            0.25, 1.0,
        ],
    },
    MetricSpec {
        name: "packets",
        kind: MetricKind::Counter,
        unit: "{packet}",
        description: "packets the datapath executed, by path (fast, slow) and in port (sampled packets)",
        labels: &[field::PATH, field::IN_PORT],
        buckets: &[],
    },
    MetricSpec {
        name: "drops",
        kind: MetricKind::Counter,
        unit: "{packet}",
        description: "packets the datapath dropped (a flow with no actions), by in port (sampled packets)",
        labels: &[field::IN_PORT],
        buckets: &[],
    },
    MetricSpec {
        name: "upcall.failures",
        kind: MetricKind::Counter,
        unit: "{upcall}",
        description: "upcalls no handler thread read within 2 s (queue full, handler gone)",
        labels: &[],
        buckets: &[],
    },
];

/// How long an upcall waits for its handler and execution before it is given up.
const UPCALL_WAIT_NS: u64 = 2_000_000_000;

/// `enum ovs_action_attr` (uapi), as dpctl names the actions.
fn action_name(t: u16) -> Option<&'static str> {
    Some(match t {
        2 => "userspace",
        3 => "set",
        4 => "push_vlan",
        5 => "pop_vlan",
        6 => "sample",
        7 => "recirc",
        8 => "hash",
        9 => "push_mpls",
        10 => "pop_mpls",
        11 => "set_masked",
        12 => "ct",
        13 => "trunc",
        14 => "push_eth",
        15 => "pop_eth",
        16 => "ct_clear",
        17 => "push_nsh",
        18 => "pop_nsh",
        19 => "meter",
        20 => "clone",
        21 => "check_pkt_len",
        22 => "add_mpls",
        23 => "dec_ttl",
        24 => "drop",
        25 => "psample",
        _ => return None,
    })
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// The action list as dpctl writes it: output ports by name (the first,
/// whose name the kernel side looked up) or number, other actions by name.
fn actions(t: &OvsTail) -> String {
    let n = t.n_actions as usize;
    if n == 0 {
        return "drop".into();
    }
    let out_name = cstr(&t.out_port);
    let mut named_first = false;
    let mut parts: Vec<String> = Vec::with_capacity(n);
    for i in 0..n.min(t.act_type.len()) {
        let ty = t.act_type[i];
        parts.push(if ty == 1 {
            if !named_first && !out_name.is_empty() {
                named_first = true;
                out_name.clone()
            } else {
                t.act_arg[i].to_string()
            }
        } else {
            action_name(ty).map_or_else(|| format!("action{ty}"), str::to_owned)
        });
    }
    if n > t.act_type.len() {
        parts.push("...".into());
    }
    parts.join(",")
}

/// A UFID as dpctl/dump-flows -m prints it (`57660793-e7b0-4d90-b86e-3ab2330605d6`):
/// four 32-bit words in host order, then split 8-4-4-4-12.
fn ufid(b: &[u8; 16]) -> String {
    let w = |i: usize| u32::from_ne_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
    let (a, b2, c, d) = (w(0), w(1), w(2), w(3));
    format!(
        "{a:08x}-{:04x}-{:04x}-{:04x}-{:04x}{d:08x}",
        b2 >> 16,
        b2 & 0xffff,
        c >> 16,
        c & 0xffff
    )
}

/// An upcall on its way through ovs-vswitchd.
#[derive(Debug)]
struct Upcall {
    /// The upcall hook's own observation (the packet, at its in port).
    obs: PacketObservation,
    cmd: u8,
    port: u32,
    queued: Option<u64>,
    handler: Option<(u64, u32, String)>,
    flow: Option<(u64, Option<String>)>,
    exec: Option<u64>,
}

/// The ovs plugin's decoder: it keeps the upcalls in flight.
#[derive(Debug, Default)]
pub struct Ovs {
    upcalls: HashMap<u64, Upcall>,
    /// Per handler thread, the packets of the upcalls it read, oldest first.
    by_thread: HashMap<u32, VecDeque<u64>>,
    /// The newest record's time.
    now: u64,
}

fn str_value(field: u16, s: String) -> FieldValue {
    FieldValue::new(field, Value::Str(s.into()))
}

fn step(
    obs: &PacketObservation,
    hook: u16,
    parent: u16,
    start: u64,
    end: u64,
) -> PacketObservation {
    PacketObservation {
        hook,
        ts_ns: start,
        substep: Some((parent, end.max(start))),
        drop_reason: None,
        terminal: false,
        values: Box::new([]),
        ..obs.clone()
    }
}

impl Ovs {
    fn packet(
        &mut self,
        record: &[u8],
        hook: u16,
        emit: &mut dyn FnMut(&Observation),
    ) -> Result<(), DecodeError> {
        let mut p = wire::packet(record, false)?;
        let (t, _) = OvsTail::read_from_prefix(wire::packet_tail(record))
            .map_err(|_| DecodeError("ovs record without its tail".into()))?;
        let in_port = p.ifname.to_str().into_owned();
        // The hook's time: taken first thing in the program (the record's
        // header is stamped after the pipeline ran).
        p.ts_ns = t.first_ts.min(p.ts_ns).max(1);
        if hook == hook::UPCALL {
            self.upcalls.insert(
                p.pkt_id,
                Upcall {
                    obs: p,
                    cmd: t.upcall_cmd,
                    port: t.upcall_port,
                    queued: None,
                    handler: None,
                    flow: None,
                    exec: None,
                },
            );
            return Ok(());
        }
        let slow = self.upcalls.remove(&p.pkt_id);
        let path = if slow.is_some() { "slow" } else { "fast" };
        let mut values = vec![
            str_value(field::DATAPATH, cstr(&t.datapath)),
            str_value(field::IN_PORT, in_port.clone()),
            str_value(field::ACTIONS, actions(&t)),
            str_value(field::PATH, path.into()),
        ];
        if t.out_port[0] != 0 {
            values.push(str_value(field::OUT_PORT, cstr(&t.out_port)));
        }
        if let Some(u) = slow {
            self.forget(p.pkt_id);
            self.emit_slow_path(&u, &p, &t, emit);
        }
        p.values = values.into();
        // An empty action list is a drop, whether or not the kernel reports it as one.
        let dropped = p.drop_reason.is_some() || t.n_actions == 0;
        emit(&Observation::Packet(p));
        emit(&Observation::Metric(MetricPoint {
            metric: metric::PACKETS,
            value: 1.0,
            labels: vec![
                str_value(field::PATH, path.into()),
                str_value(field::IN_PORT, in_port.clone()),
            ],
        }));
        if dropped {
            emit(&Observation::Metric(MetricPoint {
                metric: metric::DROPS,
                value: 1.0,
                labels: vec![str_value(field::IN_PORT, in_port)],
            }));
        }
        Ok(())
    }

    /// The upcall and its steps, nested in the OVS hop `hop` that ended it.
    fn emit_slow_path(
        &self,
        u: &Upcall,
        hop: &PacketObservation,
        t: &OvsTail,
        emit: &mut dyn FnMut(&Observation),
    ) {
        let start = u.obs.ts_ns;
        let end = hop.ts_ns;
        let mut upcall = step(&u.obs, hook::UPCALL, hook::EXECUTE, start, end);
        let mut values = vec![
            str_value(
                field::UPCALL_CMD,
                match u.cmd {
                    1 => "miss".into(),
                    2 => "action".into(),
                    c => format!("cmd{c}"),
                },
            ),
            FieldValue::new(field::UPCALL_PORT, Value::U64(u.port.into())),
        ];
        if let Some((_, tid, name)) = &u.handler {
            values.push(str_value(field::THREAD_NAME, name.clone()));
            values.push(FieldValue::new(field::THREAD_ID, Value::U64((*tid).into())));
        }
        if let Some((_, Some(id))) = &u.flow {
            values.push(str_value(field::UFID, id.clone()));
        }
        upcall.values = values.into();
        emit(&Observation::Packet(upcall));
        let mut at = start;
        if let Some(q) = u.queued {
            emit(&Observation::Packet(step(
                &u.obs,
                hook::QUEUED,
                STEP_PARENT,
                at,
                q,
            )));
            at = q;
        }
        if let Some((h, tid, name)) = &u.handler {
            let mut s = step(&u.obs, hook::HANDLER, STEP_PARENT, at, *h);
            s.values = vec![
                str_value(field::THREAD_NAME, name.clone()),
                FieldValue::new(field::THREAD_ID, Value::U64((*tid).into())),
            ]
            .into();
            emit(&Observation::Packet(s));
            at = *h;
        }
        if let Some((f, id)) = &u.flow {
            let mut s = step(&u.obs, hook::FLOW_NEW, STEP_PARENT, at, *f);
            if let Some(id) = id {
                s.values = vec![str_value(field::UFID, id.clone())].into();
            }
            emit(&Observation::Packet(s));
            at = *f;
        }
        let exec_start = u.exec.unwrap_or(at);
        let mut s = step(&u.obs, hook::PKT_EXEC, STEP_PARENT, exec_start, end);
        s.values = vec![
            str_value(field::THREAD_NAME, cstr(&t.comm)),
            FieldValue::new(field::THREAD_ID, Value::U64(t.tid.into())),
        ]
        .into();
        emit(&Observation::Packet(s));
        emit(&Observation::Metric(MetricPoint {
            metric: metric::UPCALL_LATENCY,
            value: end.saturating_sub(start) as f64 / 1e9,
            labels: vec![],
        }));
    }

    fn forget(&mut self, pkt_id: u64) {
        for q in self.by_thread.values_mut() {
            q.retain(|&id| id != pkt_id);
        }
        self.by_thread.retain(|_, q| !q.is_empty());
    }

    /// The oldest upcall handler thread `tid` read that `want` still lacks.
    fn upcall_of_thread(&mut self, tid: u32, want: fn(&Upcall) -> bool) -> Option<&mut Upcall> {
        let id = self
            .by_thread
            .get(&tid)?
            .iter()
            .copied()
            .find(|id| self.upcalls.get(id).is_some_and(want))?;
        self.upcalls.get_mut(&id)
    }

    fn event(
        &mut self,
        record: &[u8],
        emit: &mut dyn FnMut(&Observation),
    ) -> Result<(), DecodeError> {
        let (e, _) = OvsEvent::read_from_prefix(record).map_err(|_| {
            DecodeError(format!("ovs record of {} bytes is too short", record.len()))
        })?;
        let ts = e.hdr.ts_ns;
        match e.hdr.hook {
            hook::QUEUED => {
                if let Some(u) = self.upcalls.get_mut(&e.pkt_id) {
                    u.queued = Some(ts);
                    u.port = e.arg;
                }
            }
            hook::HANDLER => {
                if let Some(u) = self.upcalls.get_mut(&e.pkt_id) {
                    u.handler = Some((ts, e.tid, cstr(&e.comm)));
                    self.by_thread.entry(e.tid).or_default().push_back(e.pkt_id);
                }
            }
            hook::FLOW_NEW => {
                let id = (e.has_ufid != 0).then(|| ufid(&e.ufid));
                if let Some(u) = self.upcall_of_thread(e.tid, |u| u.flow.is_none()) {
                    u.flow = Some((ts, id));
                }
            }
            hook::PKT_EXEC => {
                if let Some(u) = self.upcall_of_thread(e.tid, |u| u.exec.is_none()) {
                    u.exec = Some(ts);
                }
            }
            other => return Err(DecodeError(format!("unknown ovs hook id {other}"))),
        }
        self.expire(emit);
        Ok(())
    }

    /// Give up upcalls that waited too long: never read by a handler (a
    /// failure), or read but never executed (a flow that drops).
    fn expire(&mut self, emit: &mut dyn FnMut(&Observation)) {
        let now = self.now;
        let old: Vec<u64> = self
            .upcalls
            .iter()
            .filter(|(_, u)| u.obs.ts_ns.saturating_add(UPCALL_WAIT_NS) < now)
            .map(|(id, _)| *id)
            .collect();
        for id in old {
            if let Some(u) = self.upcalls.remove(&id) {
                if u.handler.is_none() {
                    emit(&Observation::Metric(MetricPoint {
                        metric: metric::UPCALL_FAILURES,
                        value: 1.0,
                        labels: vec![],
                    }));
                }
            }
            self.forget(id);
        }
    }
}

/// The userspace datapath's hop: ovs-vswitchd sent the packet out of a port.
fn netdev(record: &[u8], emit: &mut dyn FnMut(&Observation)) -> Result<(), DecodeError> {
    let mut p = wire::packet(record, false)?;
    let (t, _) = OvsTail::read_from_prefix(wire::packet_tail(record))
        .map_err(|_| DecodeError("ovs record without its tail".into()))?;
    p.values = vec![
        str_value(field::DATAPATH, cstr(&t.datapath)),
        str_value(field::OUT_PORT, cstr(&t.out_port)),
        str_value(field::PATH, "userspace".into()),
        str_value(field::THREAD_NAME, cstr(&t.comm)),
        FieldValue::new(field::THREAD_ID, Value::U64(t.tid.into())),
        str_value(field::UNAVAILABLE, NETDEV_UNAVAILABLE.into()),
    ]
    .into();
    emit(&Observation::Packet(p));
    Ok(())
}

impl Plugin for Ovs {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "ovs",
            version: env!("CARGO_PKG_VERSION"),
            description: "Open vSwitch kernel datapath: the OVS hop, fast or slow path, upcalls through ovs-vswitchd, drops",
            bpf_object: BPF_OBJECT,
            probes: &PROBES,
            hooks: &HOOKS,
            fields: &FIELDS,
            metrics: &METRICS,
            tick_interval_ms: 1000,
            ..Default::default()
        }
    }

    fn new(ctx: InitContext) -> Result<Self, PluginError> {
        match &ctx.config {
            serde_json::Value::Null => {}
            serde_json::Value::Object(m) if m.is_empty() => {}
            other => {
                return Err(PluginError(format!(
                    "[plugin.ovs] takes no settings, got {other}"
                )))
            }
        }
        ctx.log.log(
            LogLevel::Info,
            "ovs: the kernel datapath's hooks attach where the openvswitch module is loaded; on the userspace datapath (netdev) only the OVS hop between ports is seen (no flow, actions or upcalls: no kernel hooks, no USDT probes in ovs-vswitchd)",
        );
        Ok(Ovs::default())
    }

    fn decode(
        &mut self,
        record: &[u8],
        emit: &mut dyn FnMut(&Observation),
    ) -> Result<(), DecodeError> {
        let hdr = wire::header(record)?;
        self.now = self.now.max(hdr.ts_ns);
        match (hdr.kind, hdr.hook) {
            (wire::kind::PACKET, hook::EXECUTE | hook::UPCALL)
            | (wire::kind::DROP, hook::EXECUTE) => self.packet(record, hdr.hook, emit),
            (wire::kind::PACKET, hook::NETDEV) => netdev(record, emit),
            (KIND, _) => self.event(record, emit),
            (kind, hook) => Err(DecodeError(format!(
                "unknown ovs record kind {kind} hook {hook}"
            ))),
        }
    }

    fn tick(&mut self, emit: &mut dyn FnMut(&Observation)) -> Result<(), DecodeError> {
        self.expire(emit);
        Ok(())
    }
}

export_plugin!(Ovs);

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;
    use vnt_plugin_api::HostLog;

    fn put(b: &mut [u8], at: usize, v: &[u8]) {
        b[at..at + v.len()].copy_from_slice(v);
    }

    /// The bytes the C writes for `t`.
    fn tail_bytes(t: &OvsTail) -> Vec<u8> {
        let mut b = vec![0u8; size_of::<OvsTail>()];
        put(&mut b, offset_of!(OvsTail, datapath), &t.datapath);
        put(&mut b, offset_of!(OvsTail, out_port), &t.out_port);
        put(
            &mut b,
            offset_of!(OvsTail, n_actions),
            &t.n_actions.to_ne_bytes(),
        );
        for i in 0..t.act_type.len() {
            put(
                &mut b,
                offset_of!(OvsTail, act_type) + 2 * i,
                &t.act_type[i].to_ne_bytes(),
            );
            put(
                &mut b,
                offset_of!(OvsTail, act_arg) + 4 * i,
                &t.act_arg[i].to_ne_bytes(),
            );
        }
        put(&mut b, offset_of!(OvsTail, tid), &t.tid.to_ne_bytes());
        put(&mut b, offset_of!(OvsTail, comm), &t.comm);
        put(
            &mut b,
            offset_of!(OvsTail, first_ts),
            &t.first_ts.to_ne_bytes(),
        );
        b
    }

    fn tail(n: u32, types: &[u16], args: &[u32], out: &str) -> OvsTail {
        let mut t = OvsTail::read_from_bytes(&[0u8; size_of::<OvsTail>()][..]).unwrap();
        t.datapath[..10].copy_from_slice(b"ovs-system");
        t.out_port[..out.len()].copy_from_slice(out.as_bytes());
        t.n_actions = n;
        t.act_type[..types.len()].copy_from_slice(types);
        t.act_arg[..args.len()].copy_from_slice(args);
        t.first_ts = 100;
        t
    }

    fn packet(kind: u16, hook: u16, ts: u64, t: &OvsTail) -> Vec<u8> {
        let reason = if kind == wire::kind::DROP { 2 } else { 0 };
        let mut r = wire::fixture::packet_record(kind, hook, ts, 9, "ox1", 3, 77, reason);
        r.extend_from_slice(&tail_bytes(t));
        let len = r.len() as u32;
        r[16..20].copy_from_slice(&len.to_ne_bytes());
        r
    }

    const UFID: [u8; 16] = [
        0x93, 0x07, 0x66, 0x57, 0x90, 0x4d, 0xb0, 0xe7, 0xb2, 0x3a, 0x6e, 0xb8, 0xd6, 0x05, 0x06,
        0x33,
    ];

    fn event(hook: u16, ts: u64, pkt_id: u64, tid: u32) -> Vec<u8> {
        let mut b = vec![0u8; size_of::<OvsEvent>()];
        put(&mut b, 0, &ts.to_ne_bytes());
        put(&mut b, 8, &KIND.to_ne_bytes());
        put(&mut b, 10, &hook.to_ne_bytes());
        put(&mut b, 16, &(size_of::<OvsEvent>() as u32).to_ne_bytes());
        put(&mut b, 20, &wire::WIRE_VERSION.to_ne_bytes());
        put(&mut b, offset_of!(OvsEvent, pkt_id), &pkt_id.to_ne_bytes());
        put(&mut b, offset_of!(OvsEvent, tid), &tid.to_ne_bytes());
        put(&mut b, offset_of!(OvsEvent, comm), b"handler1");
        put(&mut b, offset_of!(OvsEvent, ufid), &UFID);
        put(&mut b, offset_of!(OvsEvent, has_ufid), &[1]);
        b
    }

    fn decode_all(records: &[Vec<u8>]) -> Vec<Observation> {
        let mut o = Ovs::new(InitContext {
            config: serde_json::Value::Null,
            log: HostLog::discard(),
        })
        .unwrap();
        let mut out = vec![];
        for r in records {
            o.decode(r, &mut |x| out.push(x.clone())).unwrap();
        }
        out
    }

    fn value(p: &PacketObservation, f: u16) -> Option<&Value> {
        p.values.iter().find(|v| v.field == f).map(|v| &v.value)
    }

    #[test]
    fn ufid_reads_like_dpctl() {
        assert_eq!(ufid(&UFID), "57660793-e7b0-4d90-b86e-3ab2330605d6");
    }

    #[test]
    fn a_fast_path_packet_is_one_hop_with_its_actions() {
        let t = tail(2, &[1, 1], &[1, 3], "brx");
        let out = decode_all(&[packet(wire::kind::PACKET, hook::EXECUTE, 150, &t)]);
        let Observation::Packet(p) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!((p.hook, p.ts_ns, p.substep), (hook::EXECUTE, 100, None));
        assert_eq!(value(p, field::ACTIONS), Some(&Value::Str("brx,3".into())));
        assert_eq!(value(p, field::PATH), Some(&Value::Str("fast".into())));
        assert_eq!(value(p, field::OUT_PORT), Some(&Value::Str("brx".into())));
        assert_eq!(
            value(p, field::DATAPATH),
            Some(&Value::Str("ovs-system".into()))
        );
    }

    #[test]
    fn an_upcall_nests_its_steps_in_the_hop_that_ends_it() {
        let up = tail(0, &[], &[], "");
        let mut hop = tail(1, &[1], &[3], "ox2");
        hop.first_ts = 900;
        hop.tid = 300;
        let out = decode_all(&[
            packet(wire::kind::PACKET, hook::UPCALL, 100, &up),
            event(hook::QUEUED, 120, 9, 55),
            event(hook::HANDLER, 400, 9, 300),
            event(hook::FLOW_NEW, 600, 0, 300),
            event(hook::PKT_EXEC, 700, 0, 300),
            packet(wire::kind::PACKET, hook::EXECUTE, 950, &hop),
        ]);
        let packets: Vec<&PacketObservation> = out
            .iter()
            .filter_map(|o| match o {
                Observation::Packet(p) => Some(p),
                _ => None,
            })
            .collect();
        type Step = (u16, u64, Option<(u16, u64)>);
        let steps: Vec<Step> = packets
            .iter()
            .map(|p| (p.hook, p.ts_ns, p.substep))
            .collect();
        assert_eq!(
            steps,
            [
                (hook::UPCALL, 100, Some((hook::EXECUTE, 900))),
                (hook::QUEUED, 100, Some((STEP_PARENT, 120))),
                (hook::HANDLER, 120, Some((STEP_PARENT, 400))),
                (hook::FLOW_NEW, 400, Some((STEP_PARENT, 600))),
                (hook::PKT_EXEC, 700, Some((STEP_PARENT, 900))),
                (hook::EXECUTE, 900, None),
            ]
        );
        assert_eq!(
            value(packets[0], field::UFID),
            Some(&Value::Str("57660793-e7b0-4d90-b86e-3ab2330605d6".into()))
        );
        assert_eq!(
            value(packets[5], field::PATH),
            Some(&Value::Str("slow".into()))
        );
        assert!(out.iter().any(|o| matches!(o, Observation::Metric(m)
            if m.metric == metric::UPCALL_LATENCY && (m.value - 800e-9).abs() < 1e-12)));
    }

    #[test]
    fn an_empty_action_list_is_a_drop_at_the_ovs_hop() {
        let t = tail(0, &[], &[], "");
        let r = packet(wire::kind::DROP, hook::EXECUTE, 150, &t);
        let out = decode_all(&[r]);
        let Observation::Packet(p) = &out[0] else {
            panic!()
        };
        assert!(p.drop_reason.is_some());
        assert_eq!(value(p, field::ACTIONS), Some(&Value::Str("drop".into())));
        assert!(out
            .iter()
            .any(|o| matches!(o, Observation::Metric(m) if m.metric == metric::DROPS)));
    }

    #[test]
    fn a_userspace_datapath_hop_says_what_it_cannot_see() {
        let mut t = tail(0, &[], &[], "ox2");
        t.datapath = *b"netdev\0\0\0\0\0\0\0\0\0\0";
        let out = decode_all(&[packet(wire::kind::PACKET, hook::NETDEV, 150, &t)]);
        let Observation::Packet(p) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(p.hook, hook::NETDEV);
        assert_eq!(value(p, field::PATH), Some(&Value::Str("userspace".into())));
        assert_eq!(value(p, field::OUT_PORT), Some(&Value::Str("ox2".into())));
        assert!(
            matches!(value(p, field::UNAVAILABLE), Some(Value::Str(s)) if s.contains("upcalls"))
        );
    }

    #[test]
    fn conforms() {
        let t = tail(1, &[1], &[3], "ox2");
        let hop = packet(wire::kind::PACKET, hook::EXECUTE, 150, &t);
        let up = packet(wire::kind::PACKET, hook::UPCALL, 100, &t);
        let ev = event(hook::HANDLER, 120, 9, 300);
        vnt_plugin_api::conformance::check::<Ovs>(&[&up, &ev, &hop]).unwrap();
    }
}

#!/usr/bin/env bash
# What tracing costs the path it watches, side by side in one run (BENCHMARKS.md,
# "Overhead on the demo path").
#
# Topology, created fresh with names unique to this run and removed on exit:
#   bridge (default): the demo's shape, every packet crosses two veth pairs and a bridge:
#     netns c1 (10.X.Y.1) -- veth -- bridge in netns host -- veth -- netns c2 (10.X.Y.2)
#   vxlan: flannel's VXLAN backend between two namespace hosts (VNI 1, port 8472):
#     pod c1 -- veth -- bridge -- flannel.1 (VXLAN) -- underlay veth -- flannel.1 -- bridge -- veth -- pod c2
#     each packet crosses two pod veth pairs, two bridges, two VXLAN devices and,
#     encapsulated, the underlay; both hosts share this kernel, so one agent sees both.
#
# Configurations, interleaved in every round (the order rotates per round):
#   none      no tracing: the baseline every ratio divides by
#   floor     the agent with the `floor` fixture: empty tp_btf programs on the
#             hooks veth attaches, i.e. what being called at all costs
#   default   vnt-agent --plugins veth (no filter: sampling auto = 1/100)
#   all       vnt-agent --plugins veth --sample 1/1: every packet traced
#   bpftrace  the seeds' method: bpftrace on 3 net tracepoints with a per-skb
#             hash map (the per-packet peer)
#   flannel   vnt-agent --plugins veth,flannel (sampling auto = 1/100)
#   flannel-all  vnt-agent --plugins veth,flannel --sample 1/1
#   before    default, with the plugins of --before-plugins DIR (another build,
#             e.g. a commit before a change): the change's cost side by side
# Each configuration is measured with: iperf3 TCP throughput, iperf3 64-byte UDP
# packet rate (received), sockperf UDP request/response latency (p50, p99), and
# then, with kernel.bpf_stats_enabled=1 during a separate 64-byte UDP flood, the
# ns per run of each of its eBPF programs (bpf_stats adds a little cost of its
# own, so the throughput runs are measured with it off). Agents write JSON to
# /dev/null, so their user-space work (decode, journeys, JSON) competes for the
# same two CPUs as the traffic.
#
# Usage: scripts/bench-overhead.sh [options]
#   -r, --rounds K       rounds (default 3)
#   -t, --time T         seconds per measurement (default 5)
#   -c, --configs LIST   comma-separated subset (default none,floor,default,all,bpftrace;
#                        with --topology vxlan: none,default,flannel,flannel-all)
#       --topology T     bridge (default) or vxlan
#       --before-plugins DIR  where the `before` configuration's plugins are
#       --no-build       use the existing binaries
#       --out-dir DIR    keep raw results (iperf3/sockperf output, agent logs) in DIR
#   -h, --help
# Must run as root (network namespaces, eBPF). Prints a table per round, the medians
# and ratios, and a Markdown block for BENCHMARKS.md.
set -euo pipefail

ROUNDS=3
SECS=5
CONFIGS=""
TOPOLOGY=bridge
BEFORE_DIR=""
BUILD=true
OUT_DIR=""

usage() { sed -n '2,44p' "$0" | sed 's/^# \{0,1\}//'; }
say() { printf 'bench-overhead: %s\n' "$*" >&2; }
die() {
	printf 'bench-overhead: error: %s\n' "$*" >&2
	exit 1
}
need_uint() { [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "$1 needs a whole number >= 1, got '$2'"; }

while (($# > 0)); do
	case "$1" in
	-r | --rounds) ROUNDS="${2:?}"; shift 2 ;;
	-t | --time) SECS="${2:?}"; shift 2 ;;
	-c | --configs) CONFIGS="${2:?}"; shift 2 ;;
	--topology) TOPOLOGY="${2:?}"; shift 2 ;;
	--before-plugins) BEFORE_DIR="${2:?}"; shift 2 ;;
	--no-build) BUILD=false; shift ;;
	--out-dir) OUT_DIR="${2:?}"; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	*) die "unknown argument '$1' (try --help)" ;;
	esac
done
need_uint --rounds "$ROUNDS"
need_uint --time "$SECS"
case "$TOPOLOGY" in
bridge) : "${CONFIGS:=none,floor,default,all,bpftrace}" ;;
vxlan) : "${CONFIGS:=none,default,flannel,flannel-all}" ;;
*) die "unknown topology '$TOPOLOGY' (bridge, vxlan)" ;;
esac
IFS=, read -r -a CONFIG_LIST <<<"$CONFIGS"
for c in "${CONFIG_LIST[@]}"; do
	case "$c" in none | floor | default | all | bpftrace | flannel | flannel-all | before) ;; *) die "unknown configuration '$c' (none, floor, default, all, bpftrace, flannel, flannel-all, before)" ;; esac
	[[ "$c" != before || -e "$BEFORE_DIR/libvnt_plugin_veth.so" ]] || die "configuration 'before' needs --before-plugins DIR with a libvnt_plugin_veth.so in it"
done

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
AGENT="$TARGET_DIR/release/vnt-agent"

[[ $EUID -eq 0 ]] || die "run as root (network namespaces and eBPF)"
for tool in ip iperf3 sockperf jq awk bpftool sysctl; do
	command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found; run scripts/install-deps.sh"
done
[[ " ${CONFIG_LIST[*]} " != *" bpftrace "* ]] || command -v bpftrace >/dev/null || die "bpftrace not found; run scripts/install-deps.sh"

if $BUILD; then
	say "building: cargo build --release -p vnt-agent -p vnt-plugin-veth -p vnt-plugin-flannel -p vnt-fixture-plugin-floor"
	(cd "$REPO" && cargo build --release -q -p vnt-agent -p vnt-plugin-veth -p vnt-plugin-flannel -p vnt-fixture-plugin-floor) || die "cargo build failed"
fi
for f in "$AGENT" "$TARGET_DIR/release/libvnt_plugin_veth.so" "$TARGET_DIR/release/libvnt_plugin_flannel.so" "$TARGET_DIR/release/libvnt_plugin_floor.so"; do
	[[ -e "$f" ]] || die "$f is missing (build it, or drop --no-build)"
done

# ---- scratch space, topology, cleanup ---------------------------------------------
RUN_ID="vnto$(printf '%x' $$ | tail -c 5)"
NS_C1="$RUN_ID-c1" NS_C2="$RUN_ID-c2" NS_H="$RUN_ID-h" NS_HB="$RUN_ID-hb"
NET="10.$(($$ % 200 + 20)).$((($$ >> 8) % 250 + 1))"
if [[ "$TOPOLOGY" == vxlan ]]; then
	# Pod subnets 10.X.Y.0/24 (host A) and 10.X.(Y^128).0/24 (host B), flannel-style.
	Y="${NET##*.}" NETB="${NET%.*}.$((${NET##*.} ^ 128))"
	IP1="$NET.2" IP2="$NETB.2" UNDER="192.168.$Y"
else
	IP1="$NET.1" IP2="$NET.2"
fi
if [[ -n "$OUT_DIR" ]]; then
	mkdir -p "$OUT_DIR"
	WORK="$(cd "$OUT_DIR" && pwd)"
else
	WORK="$(mktemp -d "${TMPDIR:-/tmp}/$RUN_ID.XXXXXX")"
fi
TRACER_PID=""
SERVER_PIDS=()
STATS_WAS="$(sysctl -n kernel.bpf_stats_enabled)"

stop_tracer() {
	[[ -n "$TRACER_PID" ]] || return 0
	kill -INT "$TRACER_PID" 2>/dev/null || true
	for _ in $(seq 100); do kill -0 "$TRACER_PID" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$TRACER_PID" 2>/dev/null || true
	wait "$TRACER_PID" 2>/dev/null || true
	TRACER_PID=""
}
cleanup() {
	local rc=$?
	set +e
	stop_tracer
	sysctl -qw kernel.bpf_stats_enabled="$STATS_WAS"
	for p in "${SERVER_PIDS[@]}"; do kill "$p" 2>/dev/null; done
	for ns in "$NS_C1" "$NS_C2" "$NS_H" "$NS_HB"; do
		ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null
		ip netns del "$ns" 2>/dev/null
	done
	if [[ -z "$OUT_DIR" ]]; then
		if ((rc == 0)); then rm -rf "$WORK"; else say "failed; raw results kept in $WORK"; fi
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mac() { ip -n "$1" -j link show "$2" | jq -r '.[0].address'; }
if [[ "$TOPOLOGY" == bridge ]]; then
	say "run $RUN_ID: $NS_C1 ($IP1) -- bridge in $NS_H -- $NS_C2 ($IP2); $ROUNDS rounds x ${SECS}s; configs ${CONFIG_LIST[*]}"
	for ns in "$NS_H" "$NS_C1" "$NS_C2"; do
		ip netns add "$ns"
		ip -n "$ns" link set lo up
		ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
	done
	ip -n "$NS_H" link add br0 type bridge stp_state 0
	i=0
	for ns in "$NS_C1" "$NS_C2"; do
		i=$((i + 1))
		ip -n "$NS_H" link add "veth-c$i" type veth peer name eth0 netns "$ns"
		ip -n "$NS_H" link set "veth-c$i" master br0 up
		ip -n "$ns" link set eth0 up
	done
	ip -n "$NS_H" link set br0 up
	ip -n "$NS_C1" addr add "$IP1/24" dev eth0
	ip -n "$NS_C2" addr add "$IP2/24" dev eth0
	# Static neighbours: no ARP on the measured path.
	ip -n "$NS_C1" neigh add "$IP2" lladdr "$(mac "$NS_C2" eth0)" dev eth0
	ip -n "$NS_C2" neigh add "$IP1" lladdr "$(mac "$NS_C1" eth0)" dev eth0
else
	# flannel's VXLAN backend, as tests/src/flannel.rs builds it: per host a
	# bridge (cni0) with the pod's veth, a VXLAN device (flannel.1: VNI 1, port
	# 8472, the subnet's .0/32), a /24 route to the other subnet through it,
	# flannel's static neighbour and FDB entries; an underlay veth between hosts.
	say "run $RUN_ID: $NS_C1 ($IP1) -- cni0 -- flannel.1 in $NS_H -- underlay -- flannel.1 -- cni0 in $NS_HB -- $NS_C2 ($IP2); $ROUNDS rounds x ${SECS}s; configs ${CONFIG_LIST[*]}"
	for ns in "$NS_H" "$NS_HB" "$NS_C1" "$NS_C2"; do
		ip netns add "$ns"
		ip -n "$ns" link set lo up
		ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
	done
	ip -n "$NS_H" link add underlay type veth peer name underlay netns "$NS_HB"
	declare -A HOST=([a]="$NS_H" [b]="$NS_HB") POD=([a]="$NS_C1" [b]="$NS_C2") SUB=([a]="$NET" [b]="$NETB") UIP=([a]="$UNDER.1" [b]="$UNDER.2")
	for s in a b; do
		h=${HOST[$s]} p=${POD[$s]} sub=${SUB[$s]}
		ip netns exec "$h" sysctl -qw net.ipv4.ip_forward=1
		ip -n "$h" addr add "${UIP[$s]}/24" dev underlay
		ip -n "$h" link set underlay up
		ip -n "$h" link add cni0 type bridge stp_state 0
		ip -n "$h" addr add "$sub.1/24" dev cni0
		ip -n "$h" link add veth-pod type veth peer name eth0 netns "$p"
		ip -n "$h" link set veth-pod master cni0 up
		ip -n "$h" link set cni0 up
		ip -n "$h" link add flannel.1 type vxlan id 1 local "${UIP[$s]}" dev underlay dstport 8472 nolearning
		ip -n "$h" addr add "$sub.0/32" dev flannel.1
		ip -n "$h" link set flannel.1 mtu 1450 up
		ip -n "$p" addr add "$sub.2/24" dev eth0
		ip -n "$p" link set eth0 mtu 1450 up
		ip -n "$p" route add default via "$sub.1"
	done
	for s in a b; do
		o=b
		[[ $s == b ]] && o=a
		h=${HOST[$s]} p=${POD[$s]} osub=${SUB[$o]}
		# Static neighbours: no ARP on the measured path.
		ip -n "$p" neigh add "${SUB[$s]}.1" lladdr "$(mac "$h" cni0)" dev eth0 nud permanent
		ip -n "$h" neigh add "${SUB[$s]}.2" lladdr "$(mac "$p" eth0)" dev cni0 nud permanent
		ip -n "$h" neigh add "${UIP[$o]}" lladdr "$(mac "${HOST[$o]}" underlay)" dev underlay nud permanent
		ip -n "$h" route add "$osub.0/24" via "$osub.0" dev flannel.1 onlink
		ip -n "$h" neigh add "$osub.0" lladdr "$(mac "${HOST[$o]}" flannel.1)" dev flannel.1 nud permanent
		bridge -n "$h" fdb append "$(mac "${HOST[$o]}" flannel.1)" dev flannel.1 dst "${UIP[$o]}"
	done
	ip netns exec "$NS_C1" ping -c 1 -W 2 "$IP2" >/dev/null || die "the overlay does not carry a ping from $IP1 to $IP2"
fi

ip netns exec "$NS_C2" iperf3 -s -B "$IP2" -p 5201 >"$WORK/iperf3-server.log" 2>&1 &
SERVER_PIDS+=($!)
ip netns exec "$NS_C2" sockperf server -i "$IP2" -p 11111 >"$WORK/sockperf-server.log" 2>&1 &
SERVER_PIDS+=($!)
sleep 1
for p in "${SERVER_PIDS[@]}"; do kill -0 "$p" 2>/dev/null || die "a server did not start: $(cat "$WORK"/*-server.log)"; done

# ---- tracers ------------------------------------------------------------------------
BPFTRACE_SCRIPT='
tracepoint:net:net_dev_start_xmit { @ts[args->skbaddr] = nsecs; }
tracepoint:net:netif_rx { if (@ts[args->skbaddr]) { @backlog = hist(nsecs - @ts[args->skbaddr]); } @ts[args->skbaddr] = nsecs; }
tracepoint:net:netif_receive_skb { if (@ts[args->skbaddr]) { @receive = hist(nsecs - @ts[args->skbaddr]); delete(@ts[args->skbaddr]); } }
'
# start_tracer CONFIG ROUND: starts it and waits until its probes are attached.
start_tracer() {
	local cfg=$1 log="$WORK/$1-r$2.log" ready="$WORK/ready-$1-r$2"
	case "$cfg" in
	none) return 0 ;;
	bpftrace)
		bpftrace -e "$BPFTRACE_SCRIPT" >"$log" 2>&1 &
		TRACER_PID=$!
		for _ in $(seq 300); do grep -q '^Attaching' "$log" 2>/dev/null && break; sleep 0.1; done
		grep -q '^Attaching' "$log" || die "bpftrace did not attach: $(cat "$log")"
		sleep 1 # "Attaching" is printed before the last attach completes
		return 0
		;;
	floor) set -- --plugins floor ;;
	default) set -- --plugins veth ;;
	all) set -- --plugins veth --sample 1/1 ;;
	before) set -- --plugins veth --plugin-dir "$BEFORE_DIR" ;;
	flannel) set -- --plugins veth,flannel ;;
	flannel-all) set -- --plugins veth,flannel --sample 1/1 ;;
	esac
	"$AGENT" "$@" --output json --ready-file "$ready" >/dev/null 2>"$log" &
	TRACER_PID=$!
	for _ in $(seq 300); do [[ -e "$ready" ]] && break; kill -0 "$TRACER_PID" 2>/dev/null || break; sleep 0.1; done
	[[ -e "$ready" ]] || die "the agent ($cfg) did not get ready: $(tail -n 20 "$log")"
}

# prog_ids PID: the eBPF programs a process holds (its fds on programs and links).
prog_ids() {
	grep -h '^prog_id:' /proc/"$1"/fdinfo/* 2>/dev/null | awk '{ print $2 }' | sort -un
}
# prog_stats IDS...: "id name run_time_ns run_cnt" per program.
prog_stats() {
	local id
	for id in "$@"; do
		bpftool -j prog show id "$id" 2>/dev/null | jq -r '"\(.id) \(.name) \(.run_time_ns // 0) \(.run_cnt // 0)"'
	done
}

CLK_TCK="$(getconf CLK_TCK)"
cpu_ticks() { awk '{ print $14 + $15 }' <<<"$(sed 's/^.*) //; s/^/x x /' "/proc/$1/stat")"; }

# ---- one configuration -------------------------------------------------------------
ROWS="$WORK/rows.tsv"  # round config tcp_bps udp_pps rr_p50_us rr_p99_us cpu_pct hwm_mib
NSROWS="$WORK/ns.tsv"  # round config program ns_per_run runs
: >"$ROWS"
: >"$NSROWS"

measure() {
	local cfg=$1 r=$2 base="$WORK/$1-r$2"
	start_tracer "$cfg" "$r"
	local t0 c0=0
	t0=$(date +%s%N)
	[[ -z "$TRACER_PID" ]] || c0=$(cpu_ticks "$TRACER_PID")

	ip netns exec "$NS_C1" iperf3 -c "$IP2" -p 5201 -t "$SECS" -O 1 -J >"$base-tcp.json" 2>&1 ||
		die "iperf3 TCP ($cfg) failed: $(jq -r '.error // empty' "$base-tcp.json")"
	local tcp
	tcp=$(jq -r '.end.sum_received.bits_per_second' "$base-tcp.json")

	ip netns exec "$NS_C1" iperf3 -c "$IP2" -p 5201 -u -b 0 -l 64 -t "$SECS" -J >"$base-udp.json" 2>&1 ||
		die "iperf3 UDP ($cfg) failed: $(jq -r '.error // empty' "$base-udp.json")"
	local pps
	pps=$(jq -r '.end.sum | (.packets - .lost_packets) / .seconds' "$base-udp.json")

	ip netns exec "$NS_C1" sockperf ping-pong -i "$IP2" -p 11111 -m 64 -t "$SECS" >"$base-rr.txt" 2>&1 ||
		die "sockperf ($cfg) failed: $(tail -n 5 "$base-rr.txt")"
	local p50 p99
	p50=$(awk '/percentile 50.000 =/ { print $NF }' "$base-rr.txt")
	p99=$(awk '/percentile 99.000 =/ { print $NF }' "$base-rr.txt")
	[[ -n "$p50" && -n "$p99" ]] || die "no percentiles in sockperf's output: $base-rr.txt"

	local cpu="-" hwm="-"
	if [[ -n "$TRACER_PID" ]]; then
		kill -0 "$TRACER_PID" 2>/dev/null || die "the tracer ($cfg) died: $(tail -n 20 "$WORK/$cfg-r$r.log")"
		local c1 t1
		c1=$(cpu_ticks "$TRACER_PID")
		t1=$(date +%s%N)
		cpu=$(awk -v d="$((c1 - c0))" -v hz="$CLK_TCK" -v ns="$((t1 - t0))" 'BEGIN { printf "%.1f", 100 * (d / hz) / (ns / 1e9) }')
		hwm=$(awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$TRACER_PID/status")

		# ns per program run, under a 64-byte UDP flood with bpf_stats on.
		local ids before after
		mapfile -t ids < <(prog_ids "$TRACER_PID")
		sysctl -qw kernel.bpf_stats_enabled=1
		before=$(prog_stats "${ids[@]}")
		ip netns exec "$NS_C1" iperf3 -c "$IP2" -p 5201 -u -b 0 -l 64 -t 2 -J >"$base-stats.json" 2>&1 || true
		after=$(prog_stats "${ids[@]}")
		sysctl -qw kernel.bpf_stats_enabled=0
		join <(sort <<<"$before") <(sort <<<"$after") |
			awk -v r="$r" -v c="$cfg" '{ runs = $7 - $4; if (runs > 0) printf "%s\t%s\t%s\t%.0f\t%d\n", r, c, $2, ($6 - $3) / runs, runs }' >>"$NSROWS"
	fi
	stop_tracer
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$cfg" "$tcp" "$pps" "$p50" "$p99" "$cpu" "$hwm" >>"$ROWS"
	printf '%-5s %-9s %10.2f %10.1f %9.1f %9.1f %7s %8s\n' "$r" "$cfg" "$(awk -v b="$tcp" 'BEGIN { print b / 1e9 }')" \
		"$(awk -v p="$pps" 'BEGIN { print p / 1e3 }')" "$p50" "$p99" "$cpu" "$hwm" >&2
	sleep 1
}

printf '\n%-5s %-9s %10s %10s %9s %9s %7s %8s\n' round config "TCP Gb/s" "UDP kpps" "RR p50us" "RR p99us" "CPU %" "RSS MiB" >&2
n=${#CONFIG_LIST[@]}
for r in $(seq "$ROUNDS"); do
	for k in $(seq 0 $((n - 1))); do
		measure "${CONFIG_LIST[$(((k + r - 1) % n))]}" "$r"
	done
done

# ---- summary ---------------------------------------------------------------------------
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# ratio_med CONFIG COLUMN: median over rounds of (CONFIG / none in the same round)
ratio_med() {
	awk -F'\t' -v c="$1" -v k="$2" '$2 == "none" { a[$1] = $k } $2 == c { b[$1] = $k } END { for (r in b) if (r in a && a[r] > 0) print b[r] / a[r] }' "$ROWS" | median
}
col_med() { awk -F'\t' -v c="$1" -v k="$2" '$2 == c { print $k }' "$ROWS" | median; }
ns_med() {
	local p out=""
	while read -r p; do
		out+="$p $(awk -F'\t' -v c="$1" -v p="$p" '$2 == c && $3 == p { print $4 }' "$NSROWS" | median) ns, "
	done < <(awk -F'\t' -v c="$1" '$2 == c { print $3 }' "$NSROWS" | sort -u)
	printf '%s' "${out%, }"
}

commit="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
git -C "$REPO" diff --quiet HEAD 2>/dev/null || commit="$commit (dirty)"
cpu_model="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
has_none=false
[[ " ${CONFIG_LIST[*]} " == *" none "* ]] && has_none=true

echo
echo "Measured $(date -u +%Y-%m-%d) on $(nproc) CPUs (${cpu_model:-unknown CPU}), kernel $(uname -r), commit $commit, load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo '```'
echo "scripts/bench-overhead.sh --topology $TOPOLOGY --rounds $ROUNDS --time $SECS --configs $CONFIGS${BEFORE_DIR:+ --before-plugins $BEFORE_DIR}"
echo '```'
echo
echo "| config | TCP Gbit/s | ratio | UDP 64 B kpps | ratio | RR p50 us | RR p99 us | p99 ratio | tracer CPU % | RSS MiB | ns per program run (bpf_stats, UDP flood) |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
for c in "${CONFIG_LIST[@]}"; do
	tcp=$(col_med "$c" 3) pps=$(col_med "$c" 4) p50=$(col_med "$c" 5) p99=$(col_med "$c" 6)
	if $has_none; then
		rt=$(ratio_med "$c" 3) ru=$(ratio_med "$c" 4) rl=$(ratio_med "$c" 6)
	else
		rt=nan ru=nan rl=nan
	fi
	cpu=$(col_med "$c" 7) hwm=$(col_med "$c" 8)
	[[ "$c" == none ]] && cpu="-" hwm="-"
	printf '| %s | %.2f | %.3f | %.1f | %.3f | %.1f | %.1f | %.3f | %s | %s | %s |\n' "$c" \
		"$(awk -v b="$tcp" 'BEGIN { print b / 1e9 }')" "$rt" "$(awk -v p="$pps" 'BEGIN { print p / 1e3 }')" "$ru" \
		"$p50" "$p99" "$rl" "$cpu" "$hwm" "$(ns_med "$c")"
done
echo
echo "Ratios are medians over rounds of (config / none in the same round); absolute values are medians."

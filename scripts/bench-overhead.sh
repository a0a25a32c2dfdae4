#!/usr/bin/env bash
# Overhead of vnt-agent on the path it watches, as a ratio measured side by side
# in one run (see BENCHMARKS.md, "Overhead: iperf3 TCP across the veth/bridge
# demo topology").
#
# Topology, created fresh with names unique to this run and removed on exit:
#
#   netns <run>-c1 (eth0 10.X.Y.1/24) -- veth -- br0 in netns <run>-host -- veth -- netns <run>-c2 (eth0 10.X.Y.2/24)
#
# `iperf3 -s` runs in c2. Each round measures iperf3 TCP c1 -> c2 for T seconds
# twice, interleaved: first without the agent, then with
# `vnt-agent --plugins veth --output json --ready-file F > /dev/null` (default
# sampling), started before the measured run (iperf3 starts once F exists) and
# stopped with SIGTERM after it. The result is the median over rounds of
# (throughput with agent / throughput without), for iperf3's sender and receiver
# figures, plus the agent's CPU time and peak RSS in each agent round.
#
# Usage: scripts/bench-overhead.sh [options] [-- extra vnt-agent args]
#   -r, --rounds K         rounds (default 5)
#   -t, --time T           seconds per iperf3 run (default 5)
#       --omit S           seconds of TCP ramp-up iperf3 leaves out (default 1)
#       --no-agent         A/A run: the "agent" slot runs without the agent too.
#                          Tests the harness and shows the noise floor; no build.
#       --no-build         do not run cargo build; use the existing binary
#       --agent PATH       agent binary (default ${CARGO_TARGET_DIR:-target}/release/vnt-agent)
#       --ready-timeout S  how long to wait for the agent's ready file (default 60)
#       --out-dir DIR      keep iperf3 JSON and agent logs in DIR (default: a temp dir, removed)
#   -h, --help
# Must run as root (network namespaces, eBPF).
set -euo pipefail

ROUNDS=5
RUN_SECONDS=5
OMIT=1
WITH_AGENT=true
BUILD=true
AGENT=""
READY_TIMEOUT=60
OUT_DIR=""
AGENT_EXTRA=()

usage() { sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; }
say() { printf 'bench-overhead: %s\n' "$*" >&2; }
die() {
	printf 'bench-overhead: error: %s\n' "$*" >&2
	exit 1
}
need_uint() { [[ "$2" =~ ^[0-9]+$ ]] || die "$1 needs a whole number, got '$2'"; }

while (($# > 0)); do
	case "$1" in
	-r | --rounds) ROUNDS="${2:?}"; shift 2 ;;
	-t | --time) RUN_SECONDS="${2:?}"; shift 2 ;;
	--omit) OMIT="${2:?}"; shift 2 ;;
	--no-agent) WITH_AGENT=false; shift ;;
	--no-build) BUILD=false; shift ;;
	--agent) AGENT="${2:?}"; shift 2 ;;
	--ready-timeout) READY_TIMEOUT="${2:?}"; shift 2 ;;
	--out-dir) OUT_DIR="${2:?}"; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	--) shift; AGENT_EXTRA=("$@"); break ;;
	*) die "unknown argument '$1' (try --help)" ;;
	esac
done
need_uint --rounds "$ROUNDS"
need_uint --time "$RUN_SECONDS"
need_uint --omit "$OMIT"
need_uint --ready-timeout "$READY_TIMEOUT"
((ROUNDS >= 1)) || die "--rounds must be at least 1"
((RUN_SECONDS >= 1)) || die "--time must be at least 1"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
[[ -n "$AGENT" ]] || AGENT="$TARGET_DIR/release/vnt-agent"

[[ $EUID -eq 0 ]] || die "run as root (network namespaces and eBPF)"
for tool in ip iperf3 jq awk sort ss; do
	command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found; run scripts/install-deps.sh"
done

# ---- the agent binary -----------------------------------------------------------
if $WITH_AGENT; then
	if $BUILD; then
		command -v cargo >/dev/null 2>&1 || die "cargo not found (install Rust with rustup, or pass --no-build)"
		say "building: cargo build --release -p vnt-agent -p vnt-plugin-veth"
		(cd "$REPO" && cargo build --release -p vnt-agent -p vnt-plugin-veth) ||
			die "cargo build failed; the overhead cannot be measured without the agent (--no-agent runs the A/A harness only)"
	fi
	[[ -x "$AGENT" ]] || die "agent binary $AGENT does not exist or is not executable (build it, or pass --agent PATH)"
	if [[ "$AGENT" == "$TARGET_DIR/release/vnt-agent" && ! -e "$TARGET_DIR/release/libvnt_plugin_veth.so" ]]; then
		die "$TARGET_DIR/release/libvnt_plugin_veth.so is missing: cargo build --release -p vnt-plugin-veth"
	fi
fi

# ---- scratch space and cleanup ---------------------------------------------------
RUN_ID="vntb$$$(printf '%04x' $((RANDOM)))"
NS_C1="$RUN_ID-c1"
NS_C2="$RUN_ID-c2"
NS_HOST="$RUN_ID-host"
SUBNET_B=$((($$ >> 8) % 250 + 1)) # 10.B.C.0/24; namespaces are private, so any 10/8 works
SUBNET_C=$(($$ % 250 + 1))
IP1="10.$SUBNET_B.$SUBNET_C.1"
IP2="10.$SUBNET_B.$SUBNET_C.2"

if [[ -n "$OUT_DIR" ]]; then
	mkdir -p "$OUT_DIR"
	WORK="$(cd "$OUT_DIR" && pwd)"
	KEEP_WORK=true
else
	WORK="$(mktemp -d "${TMPDIR:-/tmp}/$RUN_ID.XXXXXX")"
	KEEP_WORK=false
fi

AGENT_PID=""
SERVER_PID=""

stop_agent() {
	# stop_agent -> sets AGENT_RC; SIGTERM, then SIGKILL after 10 s.
	AGENT_RC=0
	[[ -n "$AGENT_PID" ]] || return 0
	kill -TERM "$AGENT_PID" 2>/dev/null || true
	for _ in $(seq 100); do
		kill -0 "$AGENT_PID" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$AGENT_PID" 2>/dev/null; then
		say "warning: agent (pid $AGENT_PID) ignored SIGTERM for 10 s; sending SIGKILL"
		kill -KILL "$AGENT_PID" 2>/dev/null || true
	fi
	wait "$AGENT_PID" 2>/dev/null || AGENT_RC=$?
	AGENT_PID=""
}

cleanup() {
	local rc=$?
	set +e
	stop_agent
	if [[ -n "$SERVER_PID" ]]; then
		kill -TERM "$SERVER_PID" 2>/dev/null
		wait "$SERVER_PID" 2>/dev/null
	fi
	for ns in "$NS_C1" "$NS_C2" "$NS_HOST"; do
		ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null
		ip netns del "$ns" 2>/dev/null
	done
	if $KEEP_WORK; then
		say "raw results kept in $WORK"
	elif ((rc != 0)); then
		say "failed; iperf3 JSON and agent logs kept in $WORK"
	else
		rm -rf "$WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- topology -------------------------------------------------------------------
say "run $RUN_ID: namespaces $NS_C1, $NS_C2, $NS_HOST; $IP1 -> $IP2"
ip netns add "$NS_HOST"
ip netns add "$NS_C1"
ip netns add "$NS_C2"
for ns in "$NS_HOST" "$NS_C1" "$NS_C2"; do
	ip -n "$ns" link set lo up
	# No IPv6 autoconfiguration chatter on the measured path.
	ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
done
ip -n "$NS_HOST" link add br0 type bridge stp_state 0
i=0
for ns in "$NS_C1" "$NS_C2"; do
	i=$((i + 1))
	ip -n "$NS_HOST" link add "veth-c$i" type veth peer name eth0 netns "$ns"
	ip -n "$NS_HOST" link set "veth-c$i" master br0 up
done
ip -n "$NS_HOST" link set br0 up
ip -n "$NS_C1" addr add "$IP1/24" dev eth0
ip -n "$NS_C2" addr add "$IP2/24" dev eth0
ip -n "$NS_C1" link set eth0 up
ip -n "$NS_C2" link set eth0 up

ip netns exec "$NS_C2" iperf3 -s -B "$IP2" -p 5201 >"$WORK/iperf3-server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do
	ip netns exec "$NS_C2" ss -Hltn "sport = :5201" | grep -q . && break
	kill -0 "$SERVER_PID" 2>/dev/null || die "iperf3 server exited: $(cat "$WORK/iperf3-server.log")"
	sleep 0.1
done
ip netns exec "$NS_C2" ss -Hltn "sport = :5201" | grep -q . || die "iperf3 server is not listening after 10 s"

# ---- one measured run ------------------------------------------------------------
# iperf_run NAME -> sets RUN_SND RUN_RCV (bits/s) and RUN_RTX (retransmits).
# Runs in the calling shell (not in $(...)) so that a failure stops the script.
iperf_run() {
	local json="$WORK/$1.json"
	if ! ip netns exec "$NS_C1" iperf3 -c "$IP2" -p 5201 -t "$RUN_SECONDS" -O "$OMIT" -J >"$json" 2>"$WORK/$1.stderr"; then
		die "iperf3 run $1 failed: $(jq -r '.error // empty' "$json" 2>/dev/null) $(cat "$WORK/$1.stderr")"
	fi
	read -r RUN_SND RUN_RCV RUN_RTX < <(jq -r '[.end.sum_sent.bits_per_second, .end.sum_received.bits_per_second, (.end.sum_sent.retransmits // 0)] | @tsv' "$json")
	[[ "$RUN_SND" =~ ^[0-9.e+]+$ && "$RUN_RCV" =~ ^[0-9.e+]+$ ]] || die "iperf3 run $1: no bits_per_second in $json"
}

CLK_TCK="$(getconf CLK_TCK)"
# cpu_ticks PID -> utime+stime of the whole process (all threads), in clock ticks
cpu_ticks() {
	local stat
	stat="$(cat "/proc/$1/stat")" || return 1
	# Field 2 (comm) may hold spaces: cut after its closing parenthesis.
	# What is left starts at field 3 (state); utime and stime are fields 14 and 15.
	awk '{ print $12 + $13 }' <<<"${stat##*) }"
}
# vm_hwm_kib PID -> peak resident set size in KiB
vm_hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }

start_agent() {
	local ready="$WORK/ready-$1" log="$WORK/agent-$1.log"
	rm -f "$ready"
	(cd "$REPO" && exec "$AGENT" --plugins veth --output json --ready-file "$ready" ${AGENT_EXTRA[@]+"${AGENT_EXTRA[@]}"}) >/dev/null 2>"$log" &
	AGENT_PID=$!
	local waited=0
	while [[ ! -e "$ready" ]]; do
		if ! kill -0 "$AGENT_PID" 2>/dev/null; then
			wait "$AGENT_PID" 2>/dev/null || true
			AGENT_PID=""
			say "agent log ($log):"
			tail -n 20 "$log" >&2
			die "the agent exited before writing its ready file"
		fi
		if ((waited >= READY_TIMEOUT * 10)); then
			say "agent log ($log):"
			tail -n 20 "$log" >&2
			die "the agent wrote no ready file within ${READY_TIMEOUT}s"
		fi
		sleep 0.1
		waited=$((waited + 1))
	done
}

# ---- rounds ----------------------------------------------------------------------
if $WITH_AGENT; then B_LABEL="agent"; else B_LABEL="baseline2"; fi
ROWS="$WORK/rows.tsv" # round slot sender receiver retrans cpu_s cpu_pct hwm_mib
: >"$ROWS"

mbit() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.4f", a / b; else print "nan" }'; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.4f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

printf '\n%-5s %-9s %14s %16s %7s %11s %11s %13s\n' round slot "sender Mbit/s" "receiver Mbit/s" retrans "agent CPU s" "agent CPU %" "agent RSS MiB"
for r in $(seq "$ROUNDS"); do
	iperf_run "round$r-baseline"
	a_snd=$RUN_SND a_rcv=$RUN_RCV a_rtx=$RUN_RTX
	printf '%-5s %-9s %14s %16s %7s %11s %11s %13s\n' "$r" baseline "$(mbit "$a_snd")" "$(mbit "$a_rcv")" "$a_rtx" - - -
	printf '%s\tbaseline\t%s\t%s\t%s\t-\t-\t-\n' "$r" "$a_snd" "$a_rcv" "$a_rtx" >>"$ROWS"
	sleep 1

	cpu_s="-" cpu_pct="-" hwm="-"
	if $WITH_AGENT; then
		start_agent "round$r"
		t0_ticks="$(cpu_ticks "$AGENT_PID")"
		t0_ns="$(date +%s%N)"
	fi
	iperf_run "round$r-$B_LABEL"
	b_snd=$RUN_SND b_rcv=$RUN_RCV b_rtx=$RUN_RTX
	if $WITH_AGENT; then
		kill -0 "$AGENT_PID" 2>/dev/null || die "the agent died during round $r (log: $WORK/agent-round$r.log)"
		t1_ticks="$(cpu_ticks "$AGENT_PID")"
		t1_ns="$(date +%s%N)"
		hwm_kib="$(vm_hwm_kib "$AGENT_PID")"
		stop_agent
		((AGENT_RC == 0)) || say "warning: agent exited with status $AGENT_RC after SIGTERM in round $r (log: $WORK/agent-round$r.log)"
		cpu_s="$(awk -v d="$((t1_ticks - t0_ticks))" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", d / hz }')"
		cpu_pct="$(awk -v d="$((t1_ticks - t0_ticks))" -v hz="$CLK_TCK" -v ns="$((t1_ns - t0_ns))" 'BEGIN { printf "%.1f", 100 * (d / hz) / (ns / 1e9) }')"
		hwm="$(awk -v k="$hwm_kib" 'BEGIN { printf "%.1f", k / 1024 }')"
	fi
	printf '%-5s %-9s %14s %16s %7s %11s %11s %13s\n' "$r" "$B_LABEL" "$(mbit "$b_snd")" "$(mbit "$b_rcv")" "$b_rtx" "$cpu_s" "$cpu_pct" "$hwm"
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$B_LABEL" "$b_snd" "$b_rcv" "$b_rtx" "$cpu_s" "$cpu_pct" "$hwm" >>"$ROWS"
	printf '%-5s %-9s %14s %16s\n' "$r" ratio "$(ratio "$b_snd" "$a_snd")" "$(ratio "$b_rcv" "$a_rcv")"
	sleep 1
done

# ---- summary ---------------------------------------------------------------------
# Per-round ratios, then their median (each ratio compares two runs one second apart).
snd_ratio="$(awk -F'\t' '$2 == "baseline" { a[$1] = $3 } $2 != "baseline" { b[$1] = $3 } END { for (r in a) print b[r] / a[r] }' "$ROWS" | median)"
rcv_ratio="$(awk -F'\t' '$2 == "baseline" { a[$1] = $4 } $2 != "baseline" { b[$1] = $4 } END { for (r in a) print b[r] / a[r] }' "$ROWS" | median)"
med_a="$(awk -F'\t' '$2 == "baseline" { print $4 }' "$ROWS" | median)"
med_b="$(awk -F'\t' '$2 != "baseline" { print $4 }' "$ROWS" | median)"
min_r="$(awk -F'\t' '$2 == "baseline" { a[$1] = $4 } $2 != "baseline" { b[$1] = $4 } END { for (r in a) print b[r] / a[r] }' "$ROWS" | sort -g | head -n1)"
max_r="$(awk -F'\t' '$2 == "baseline" { a[$1] = $4 } $2 != "baseline" { b[$1] = $4 } END { for (r in a) print b[r] / a[r] }' "$ROWS" | sort -g | tail -n1)"
if $WITH_AGENT; then
	med_cpu="$(awk -F'\t' '$2 == "agent" { print $7 }' "$ROWS" | median | xargs printf '%.1f')"
	max_hwm="$(awk -F'\t' '$2 == "agent" && $8 > m { m = $8 } END { print m + 0 }' "$ROWS")"
fi

fmt_ratio() { awk -v r="$1" 'BEGIN { printf "%.3f (%+.1f%%)", r, (r - 1) * 100 }'; }
echo
echo "median ratio ($B_LABEL / baseline) over $ROUNDS rounds:"
echo "  receiver throughput: $(fmt_ratio "$rcv_ratio")   [per-round range $(printf '%.3f' "$min_r")..$(printf '%.3f' "$max_r")]"
echo "  sender throughput:   $(fmt_ratio "$snd_ratio")"
echo "  median receiver Mbit/s: baseline $(mbit "$med_a"), $B_LABEL $(mbit "$med_b")"
if $WITH_AGENT; then
	echo "  agent CPU during the measured run (median): ${med_cpu}% of one core; peak RSS (max VmHWM): ${max_hwm} MiB"
else
	echo "  --no-agent: both slots ran without the agent; this is the harness's noise floor, not the overhead"
fi

# ---- Markdown for BENCHMARKS.md ----------------------------------------------------
cmd="scripts/bench-overhead.sh --rounds $ROUNDS --time $RUN_SECONDS --omit $OMIT"
$WITH_AGENT || cmd="$cmd --no-agent"
[[ "$AGENT" == "$TARGET_DIR/release/vnt-agent" ]] || cmd="$cmd --agent $AGENT"
((${#AGENT_EXTRA[@]} == 0)) || cmd="$cmd -- ${AGENT_EXTRA[*]}"
commit="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
git -C "$REPO" diff --quiet HEAD 2>/dev/null || commit="$commit (dirty)"
cpu_model="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"

echo
echo "---- Markdown ----"
echo "Measured $(date -u +%Y-%m-%d) on $(nproc) CPUs (${cpu_model:-unknown CPU}), kernel $(uname -r), commit $commit:"
echo
echo '```'
echo "$cmd"
echo '```'
echo
echo "| round | baseline Mbit/s (receiver) | $B_LABEL Mbit/s (receiver) | ratio | agent CPU % | agent peak RSS MiB |"
echo "|---:|---:|---:|---:|---:|---:|"
awk -F'\t' '
	$2 == "baseline" { a[$1] = $4; next }
	{ b[$1] = $4; cpu[$1] = $7; rss[$1] = $8 }
	END {
		for (r = 1; r in a; r++)
			printf "| %d | %.1f | %.1f | %.3f | %s | %s |\n", r, a[r] / 1e6, b[r] / 1e6, b[r] / a[r], cpu[r], rss[r]
	}' "$ROWS"
echo
echo "Median ratio ($B_LABEL / baseline): receiver $(fmt_ratio "$rcv_ratio"), sender $(fmt_ratio "$snd_ratio")."
if $WITH_AGENT; then
	echo "Agent: median ${med_cpu}% of one core during the run, peak RSS ${max_hwm} MiB."
fi
echo "---- end ----"

#!/usr/bin/env bash
# The main job, end to end on this machine: install what is missing, build,
# create a demo virtual network (two "containers" in their own network
# namespaces, veth pairs into a bridge in a "host" namespace), run
# `vnt-agent --plugins veth` while traffic flows, and print the journeys.
# One flow is dropped by an nftables rule on the bridge to show a drop with
# the kernel's reason. Everything created is removed at exit, also on failure.
#
#   scripts/demo.sh (as root) [--json] [--seconds N] [-- extra vnt-agent flags]
set -euo pipefail
cd "$(dirname "$0")/.."

output=pretty
seconds=6
extra=()
while [ $# -gt 0 ]; do
	case "$1" in
	--json) output=json ;;
	--seconds) seconds=$2; shift ;;
	--) shift; extra=("$@"); break ;;
	-h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "demo.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
	shift
done
[ "$(id -u)" = 0 ] || { echo "demo.sh: needs root (eBPF, network namespaces)" >&2; exit 1; }

scripts/install-deps.sh
echo "==> building vnt-agent, the veth plugin and the traffic generator"
cargo build --release -q -p vnt-agent -p vnt-plugin-veth -p vnt-tests --bin vnt-traffic
agent=target/release/vnt-agent
traffic=$PWD/target/release/vnt-traffic

p="vd$(printf '%x' $$ | tail -c 5)"   # unique per run, short enough for interface names
c1=$p-c1 c2=$p-c2 h=$p-h
net4=10.213.$(( $$ % 250 ))
net6=fd00:213:$(( $$ % 250 ))
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	for ns in "$c1" "$c2" "$h"; do ip netns del "$ns" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

echo "==> demo network $p: $c1 ($net4.1, $net6::1) -- bridge in $h -- $c2 ($net4.2, $net6::2)"
for ns in "$c1" "$c2" "$h"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip -n "$h" link add "${p}br" type bridge
ip -n "$h" link set "${p}br" up
for i in 1 2; do
	ip link add "${p}c$i" netns "$p-c$i" type veth peer name "${p}h$i" netns "$h"
	ip -n "$h" link set "${p}h$i" master "${p}br" up
	ip -n "$p-c$i" addr add "$net4.$i/24" dev "${p}c$i"
	ip -n "$p-c$i" addr add "$net6::$i/64" dev "${p}c$i" nodad
	ip -n "$p-c$i" link set "${p}c$i" up
done
# A bridge-level firewall in the "host" that drops one UDP port.
ip netns exec "$h" nft -f - <<NFT
table bridge ${p}fw {
	chain forward { type filter hook forward priority 0; udp dport 9999 drop; }
}
NFT

ready=$(mktemp -u "/tmp/$p-ready.XXXX")
echo "==> starting: $agent --plugins veth --filter 'host $net4.0/24' --sample 1/1 --duration $seconds ${extra[*]}"
"$agent" --plugins veth --filter "host $net4.0/24" --sample 1/1 --output "$output" \
	--duration "$seconds" --ready-file "$ready" "${extra[@]}" &
agent_pid=$!
for _ in $(seq 300); do [ -e "$ready" ] && break; kill -0 $agent_pid 2>/dev/null || break; sleep 0.1; done
[ -e "$ready" ] || { echo "demo.sh: the agent did not start (see its error above)" >&2; exit 1; }

echo "==> traffic: ping, UDP to a listener, UDP to the firewalled port"
ip netns exec "$c2" "$traffic" udp-recv --bind "$net4.2" --port 7777 --count 5 --timeout "$seconds" >/dev/null &
pids+=($!)
sleep 0.3
ip netns exec "$c1" ping -c 2 -i 0.3 -q "$net4.2" >/dev/null
ip netns exec "$c1" "$traffic" udp-send --dst "$net4.2" --port 7777 --count 5 --rate 10 --size 64
ip netns exec "$c1" "$traffic" udp-send --dst "$net4.2" --port 9999 --count 2 --rate 10 --size 64

wait $agent_pid
echo "==> done; the network $p is removed on exit"

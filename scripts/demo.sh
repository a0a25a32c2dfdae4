#!/usr/bin/env bash
# The main job, end to end on this machine: install what is missing, build,
# create a demo virtual network (two "containers" in their own network
# namespaces, veth pairs into a bridge in a "host" namespace), run
# `vnt-agent --plugins veth` while traffic flows, and print the journeys.
# One flow is dropped by an nftables rule on the bridge to show a drop with
# the kernel's reason. Everything created is removed at exit, also on failure.
#
#   scripts/demo.sh (as root) [--json] [--seconds N] [-- extra vnt-agent flags]
#
#   --json        journeys as JSON lines instead of the pretty form
#   --seconds N   how long the agent traces (default 6; scripts/test.sh uses 4)
#
# The build line says how many crates it compiled: "nothing compiled" after a
# `cargo build --workspace --release --all-targets` (scripts/test.sh checks it).
set -euo pipefail
cd "$(dirname "$0")/.."

# The comment block at the top of this file, without its `#`s.
usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; }
die() { echo "demo.sh: $*" >&2; exit 1; }

output=pretty
seconds=6
extra=()
while [ $# -gt 0 ]; do
	case "$1" in
	--json) output=json ;;
	--seconds)
		[[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || { echo "demo.sh: --seconds needs a whole number >= 1" >&2; exit 2; }
		seconds=$2; shift ;;
	--) shift; extra=("$@"); break ;;
	-h | --help) usage; exit 0 ;;
	*) echo "demo.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
	shift
done
[ "$(id -u)" = 0 ] || die "needs root (eBPF, network namespaces)"

scripts/install-deps.sh
echo "==> building vnt-agent, the veth plugin and the traffic generator"
# Whole packages, no target filter: `--bin` would filter every -p package
# and build neither the agent nor the plugin. Each file's path comes from
# cargo's own report of this build, so the demo never runs a stale binary
# that happens to lie in target/.
build=$(cargo build --release -p vnt-agent -p vnt-plugin-veth -p vnt-tests \
	--message-format=json-render-diagnostics) || die "the build failed (see above)"
# artifact TARGET KIND SUFFIX: the file of that target this build produced or found up to date.
artifact() {
	jq -r --arg t "$1" --arg k "$2" --arg s "$3" '
		select(.reason == "compiler-artifact" and .target.name == $t and (.target.kind | index($k)))
		| .filenames[] | select(endswith($s))' <<<"$build" | tail -n 1
}
agent=$(artifact vnt-agent bin vnt-agent)
plugin=$(artifact vnt_plugin_veth cdylib .so)
traffic=$(artifact vnt-traffic bin vnt-traffic)
if [ -z "$agent" ] || [ ! -x "$agent" ]; then die "the build produced no vnt-agent executable (${agent:-none reported})"; fi
if [ -z "$traffic" ] || [ ! -x "$traffic" ]; then die "the build produced no vnt-traffic executable (${traffic:-none reported})"; fi
if [ -z "$plugin" ] || [ ! -f "$plugin" ]; then die "the build produced no libvnt_plugin_veth.so (${plugin:-none reported})"; fi
compiled=$(jq -s '[.[] | select(.reason == "compiler-artifact" and .fresh == false)] | length' <<<"$build")
if [ "$compiled" = 0 ]; then
	echo "==> build: nothing compiled, everything was up to date"
else
	echo "==> build: $compiled crate(s) compiled"
fi

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
plugin_dir=$(dirname "$plugin")
echo "==> starting: $agent --plugins veth --plugin-dir $plugin_dir --filter 'host $net4.0/24' --sample 1/1 --duration $seconds ${extra[*]}"
"$agent" --plugins veth --plugin-dir "$plugin_dir" --filter "host $net4.0/24" --sample 1/1 \
	--output "$output" --duration "$seconds" --ready-file "$ready" "${extra[@]}" &
agent_pid=$!
for _ in $(seq 300); do [ -e "$ready" ] && break; kill -0 $agent_pid 2>/dev/null || break; sleep 0.1; done
[ -e "$ready" ] || die "the agent did not start (see its error above)"

echo "==> traffic: ping, UDP to a listener, UDP to the firewalled port"
ip netns exec "$c2" "$traffic" udp-recv --bind "$net4.2" --port 7777 --count 5 --timeout "$seconds" >/dev/null &
pids+=($!)
sleep 0.3
ip netns exec "$c1" ping -c 2 -i 0.3 -q "$net4.2" >/dev/null
ip netns exec "$c1" "$traffic" udp-send --dst "$net4.2" --port 7777 --count 5 --rate 10 --size 64
ip netns exec "$c1" "$traffic" udp-send --dst "$net4.2" --port 9999 --count 2 --rate 10 --size 64

wait $agent_pid
echo "==> done; the network $p is removed on exit"

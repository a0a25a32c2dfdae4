#!/usr/bin/env bash
# What the socket-read hook (veth_deliver) costs per run under a TCP bulk
# transfer, for two builds of the veth plugin alternated in one sitting
# (BENCHMARKS.md, "The socket-read hook"). The UDP flood of bench-overhead.sh
# does not exercise it: UDP reads over veth checksum the copy and take a path
# without the tracepoint.
#
#   scripts/bench-deliver.sh OLD.so NEW.so [agent options]
#
# Two namespaces joined by a veth pair (names unique to this run, removed on
# exit); the agent runs `--plugins veth` with the given options; iperf3 TCP
# for 4 s with kernel.bpf_stats_enabled=1; prints Gbit/s and ns per run of
# each veth program. Needs root and a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -ge 2 ]] || { sed -n '2,14p' "$0" >&2; exit 2; }
old=$1 new=$2
shift 2
keep=$(mktemp -d)
cp target/release/libvnt_plugin_veth.so "$keep/current.so"
p=vd$$
ip netns add ${p}a; ip netns add ${p}b
trap 'ip netns del ${p}a; ip netns del ${p}b; sysctl -q kernel.bpf_stats_enabled=0; cp "$keep/current.so" target/release/libvnt_plugin_veth.so; rm -rf "$keep"' EXIT
ip link add ${p}x netns ${p}a type veth peer name ${p}y netns ${p}b
ip -n ${p}a addr add 10.77.0.1/24 dev ${p}x; ip -n ${p}b addr add 10.77.0.2/24 dev ${p}y
ip -n ${p}a link set ${p}x up; ip -n ${p}b link set ${p}y up
for v in old new old new; do
  if [[ $v == old ]]; then so=$old; else so=$new; fi
  cp "$so" target/release/libvnt_plugin_veth.so
  rm -f "$keep/ready"
  target/release/vnt-agent --plugins veth "$@" --output json --ready-file "$keep/ready" >/dev/null 2>"$keep/agent.log" &
  ag=$!
  for _ in $(seq 100); do [[ -e $keep/ready ]] && break; sleep 0.1; done
  ip netns exec ${p}b iperf3 -s -1 -D -p 5299; sleep 0.3
  sysctl -q kernel.bpf_stats_enabled=1
  r=$(ip netns exec ${p}a iperf3 -c 10.77.0.2 -p 5299 -t 4 -J | jq '.end.sum_received.bits_per_second/1e9')
  st=$(bpftool -j prog show | jq -r '.[] | select(.name|test("veth_")) | select(.run_cnt>0) | "\(.name) \(.run_time_ns/.run_cnt|floor)ns n=\(.run_cnt)"' | tr '\n' ' ')
  sysctl -q kernel.bpf_stats_enabled=0
  kill -INT $ag; wait $ag
  echo "$v tcp=${r}Gbit/s $st"
done

#!/usr/bin/env bash
# How fast a vxlan device created after start gets the TC program of a probe whose target
# chooses devices (fixture tcvxlan: `ingress kind=vxlan`), and what the idle device watcher
# costs (docs/adr/016-attach-points-and-module-btf.md). As root, after
# `cargo build --release --workspace`; on shared machines under `flock /tmp/vnt-priv.lock`.
set -euo pipefail
cd "$(dirname "$0")/.."
ns="v9b$$"
work=$(mktemp -d /tmp/vnt-bench-tc-watch.XXXXXX)
apid=""
cleanup() {
	[[ -n "$apid" ]] && kill "$apid" 2>/dev/null && wait "$apid" 2>/dev/null
	ip netns del "$ns" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$ns"
target/release/vnt-agent --plugins tcvxlan --output none 2>"$work/agent.log" &
apid=$!
sleep 2
for i in $(seq 1 20); do
	echo "vxb$i $(date +%s.%N)" >>"$work/t0"
	ip -n "$ns" link add "vxb$i" type vxlan id $((500 + i)) dstport 4789 local 127.0.0.1
	sleep 0.3
	ip -n "$ns" link del "vxb$i"
	sleep 0.1
done
tid=$(dirname "$(grep -l vnt-tc-watch /proc/"$apid"/task/*/comm | head -1)")
a=$(cut -d' ' -f1 "$tid/schedstat")
sleep 30
b=$(cut -d' ' -f1 "$tid/schedstat")
echo "watcher thread on CPU over 30 s idle: $(((b - a) / 1000)) us; processes on the host: $(ls -d /proc/[0-9]* | wc -l)"
python3 - "$work" <<'PY'
import datetime, statistics, sys
work = sys.argv[1]
t0 = {l.split()[0]: float(l.split()[1]) for l in open(f"{work}/t0")}
lat = []
for l in open(f"{work}/agent.log"):
    if "TC program attached to a matching device" in l and "tcvxlan_ingress" in l:
        ts = datetime.datetime.fromisoformat(l.split()[0].replace("Z", "+00:00")).timestamp()
        dev = [w for w in l.split() if w.startswith("device=")][0][len("device="):]
        if dev in t0:
            lat.append((ts - t0[dev]) * 1000)
print(f"device created -> ingress attached: n={len(lat)} median {statistics.median(lat):.1f} ms, "
      f"max {max(lat):.1f} ms (`ip link add` included)")
PY

#!/usr/bin/env bash
# What the ovs plugin costs the OVS fast path (BENCHMARKS.md, "ovs plugin"):
# boots a Debian guest (scripts/vm-kernel.sh, virtme-ng, TCG) and runs
# scripts/lib/bench-ovs-guest.sh inside: iperf3 TCP through an OVS bridge on
# the kernel datapath, interleaved per round without the agent (none), with
# `--plugins ovs` at its default sampling of 1/100 (default) and at 1/1 (all),
# then the ns per run of each ovs program (kernel.bpf_stats_enabled) with
# every packet traced. Ratios are of medians over the rounds. Needs root.
#
#   scripts/bench-ovs.sh [6.1|6.12] [ROUNDS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
series=${1:-6.12} rounds=${2:-3} secs=${3:-5}
[[ $EUID -eq 0 ]] || { echo "bench-ovs: needs root" >&2; exit 1; }
cargo build --release -p vnt-agent -p vnt-plugin-ovs -q
kdir=$(scripts/vm-kernel.sh "$series")
release=$(cat "$kdir/release")
out=$(mktemp -d /tmp/vnt-bench-ovs.XXXXXX)
chmod 777 "$out"
vng=${VNT_VNG:-${VNT_CACHE_DIR:-$HOME/.cache/vnt}/virtme-ng/bin/vng}
PATH="$(dirname "$vng"):$PATH" "$vng" --run "$kdir/root/boot/vmlinuz-$release" \
	--disable-kvm --disable-microvm --force-9p --verbose --memory 2G --cpus 2 --rwdir "$out" \
	--exec "sh $PWD/scripts/lib/bench-ovs-guest.sh $out $rounds $secs $PWD/target/release/vnt-agent" \
	>"$out/console.log" 2>&1 </dev/null
grep -q '^done' "$out/results.txt" || { echo "bench-ovs: the guest did not finish (see $out)" >&2; exit 1; }
echo "kernel $release, $rounds rounds of $secs s, iperf3 TCP through the OVS bridge (Gbit/s):"
cat "$out/results.txt"
median() { awk -v c="$1" '$1 == "round" && $3 == c { print $4 }' "$out/results.txt" | sort -g |
	awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
base=$(median none)
for c in none default all; do
	m=$(median "$c")
	awk -v c="$c" -v m="$m" -v b="$base" 'BEGIN { printf "median %-8s %.3f Gbit/s  ratio %.3f\n", c, m, m / b }'
done
echo "raw results: $out"

#!/bin/sh
# Runs inside a virtme-ng guest that tests/src/vm.rs boots: the steps of
# OUT/plan, one per line as NAME<TAB>COMMAND, each with the variables of
# OUT/env exported and $VNT_REPORT_DIR set to OUT. A step's output goes to
# OUT/NAME.log, its exit code to OUT/NAME.rc. OUT is the host directory shared
# writable into the guest (vng --rwdir); everything else of the host is
# read-only here. Progress lines start with "vnt-guest: " on the console.
#
#   sh tests/vm/guest.sh OUT
set -u
out="$1"
uname -r >"$out/booted"

# The agent needs bpffs and tracefs; virtme-ng mounts tracefs and debugfs.
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing

# shellcheck disable=SC1091
. "$out/env"
export VNT_REPORT_DIR="$out"
export VNT_VM_GUEST=1 # tests may change global settings of this disposable guest

echo "vnt-guest: kernel $(uname -r), $(nproc) vCPUs, $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) MiB"
tab=$(printf '\t')
while IFS="$tab" read -r name cmd; do
	[ -n "$name" ] || continue
	start=$(date +%s)
	echo "vnt-guest: $name: running"
	sh -c "$cmd" >"$out/$name.log" 2>&1
	rc=$?
	echo "$rc" >"$out/$name.rc"
	echo "vnt-guest: $name: exit $rc after $(($(date +%s) - start)) s"
done <"$out/plan"
touch "$out/done"
sync
echo "vnt-guest: done"

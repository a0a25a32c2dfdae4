#!/usr/bin/env bash
# The VM tier: the privileged scenarios inside Debian's stock 6.1 and 6.12
# kernels under virtme-ng with software emulation (docs/kernels.md). Installs
# what it needs (scripts/install-vm-deps.sh: qemu, virtme-ng, the kernels,
# downloaded once and cached), builds the workspace, runs
# tests/tests/vm_kernels.rs and prints how long the tier took. Needs root.
# Nothing skips: a guest that cannot boot fails the tier.
#
#   scripts/vm-test.sh            both kernels
#   scripts/vm-test.sh 6.1        one kernel (6.1 or 6.12)
set -euo pipefail
cd "$(dirname "$0")/.."

filter=""
case "${1:-}" in
"") ;;
6.1) filter="vm_tier_debian_6_1" ;;
6.12) filter="vm_tier_debian_6_12" ;;
*)
	echo "usage: $0 [6.1|6.12]" >&2
	exit 2
	;;
esac

start=$(date +%s)
if [[ $EUID -ne 0 ]]; then
	echo "vm-test: FAIL: the VM tier needs root (eBPF and namespaces inside the guests, apt-get)" >&2
	exit 1
fi
scripts/install-vm-deps.sh

# Every test binary the guests run must be fresh: build them all, then hand
# the guests their exact paths.
cargo build --workspace --release --all-targets -q
bins=$(cargo test -p vnt-tests --release --no-run --message-format=json -q 2>/dev/null |
	jq -r 'select(.reason == "compiler-artifact" and (.target.kind | index("test")) and .executable != null)
	       | "\(.target.name)=\(.executable)"' | paste -sd, -)
[[ -n "$bins" ]] || {
	echo "vm-test: FAIL: cargo listed no test binaries" >&2
	exit 1
}
driver=$(tr ',' '\n' <<<"$bins" | sed -n 's/^vm_kernels=//p')

VNT_VM_TEST_BINS="$bins" VNT_AGENT_BIN="$PWD/target/release/vnt-agent" CI="${CI:-true}" \
	"$driver" --test-threads=1 ${filter:+--exact "$filter"}

echo "vm-test: VM tier passed in $(($(date +%s) - start)) s"

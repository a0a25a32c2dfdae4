#!/usr/bin/env bash
# Run every test: unit, plugin conformance, privileged end-to-end on real eBPF
# and real namespaces. Needs root (eBPF, namespaces). With CI=true nothing may
# skip: a machine that cannot load eBPF fails here, loudly.
#   scripts/test.sh            all tiers
#   scripts/test.sh --quick    unit tests only (no root needed)
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
[ "${1:-}" = "--quick" ] && quick=1

step() { printf '\n==> %s\n' "$*"; }
start=$(date +%s)

step "installing dependencies"
scripts/install-deps.sh

step "format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --release -q -- -D warnings

step "building release binaries, plugins and test fixtures"
cargo build --workspace --release --all-targets -q

step "unit and conformance tests"
cargo test --workspace --release --exclude vnt-tests

if [ "$quick" = 1 ]; then
  echo "quick run: privileged tiers not run (scripts/test.sh without --quick runs them)"
  exit 0
fi

step "privileged preflight"
if [ "$(id -u)" != 0 ]; then
  echo "FAIL: the privileged tests need root (eBPF, network namespaces); run it as root" >&2
  exit 1
fi
if [ ! -r /sys/kernel/btf/vmlinux ]; then
  echo "FAIL: kernel BTF missing (/sys/kernel/btf/vmlinux); vnt needs CONFIG_DEBUG_INFO_BTF=y" >&2
  exit 1
fi

step "privileged end-to-end tests (real eBPF, real namespaces)"
VNT_AGENT_BIN="$PWD/target/release/vnt-agent" \
  cargo test -p vnt-tests --release -- --test-threads=1

echo
echo "all tiers passed in $(( $(date +%s) - start )) s"

#!/usr/bin/env bash
# Run every test: unit, plugin conformance, privileged end-to-end on real eBPF
# and real namespaces, then the same inside Debian's 6.1 and 6.12 kernels in VMs
# (scripts/vm-test.sh). Needs root (eBPF, namespaces). With CI=true nothing may
# skip: a machine that cannot load eBPF, or a guest that cannot boot, fails here, loudly.
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
(cd examples/tcpretrans && cargo fmt --check)   # the template plugin: its own workspace
cargo clippy --workspace --all-targets --release -q -- -D warnings

step "building release binaries, plugins and test fixtures"
cargo build --workspace --release --all-targets -q

step "unit and conformance tests"
cargo test --workspace --release --exclude vnt-tests

step "SDK: plugin-api and vnt-ebpf package and build as published (third-party plugins depend on them alone)"
CARGO_TARGET_DIR="$PWD/target/package" cargo package -q -p vnt-plugin-api -p vnt-ebpf --allow-dirty

if [ "$quick" = 1 ]; then
  echo "quick run: privileged tiers not run (scripts/test.sh without --quick runs them)"
  exit 0
fi

step "fuzzing: decoders, filter parser, config (scripts/fuzz.sh, ${VNT_FUZZ_SECONDS:-60} s per target)"
scripts/fuzz.sh

step "privileged preflight"
if [ "$(id -u)" != 0 ]; then
  echo "FAIL: the privileged tests need root (eBPF, network namespaces); run it as root" >&2
  exit 1
fi
if [ ! -r /sys/kernel/btf/vmlinux ]; then
  echo "FAIL: kernel BTF missing (/sys/kernel/btf/vmlinux); vnt needs CONFIG_DEBUG_INFO_BTF=y" >&2
  exit 1
fi

step "demo: scripts/demo.sh --seconds 4 (the README's first command)"
# Run as a user would run it, after the build above: its own build must
# compile nothing (the same artifacts as the workspace build), and it must
# print journeys of its UDP flow and the drop by its nftables rule.
demo_log=$(mktemp /tmp/vnt-demo.XXXXXX)
scripts/demo.sh --seconds 4 2>&1 | tee "$demo_log"
demo_fail() { echo "FAIL: demo: $* (its output is above and in $demo_log)" >&2; exit 1; }
grep -q '^==> build: nothing compiled' "$demo_log" ||
  demo_fail "its build recompiled what the workspace build had built (tests/tests/build_features.rs says which crates resolve differently)"
grep -Eq '^udp [0-9.]+:[0-9]+ -> [0-9.]+:7777 .* hops' "$demo_log" ||
  demo_fail "no journey of the UDP flow to port 7777"
if ! grep -Eq '^udp [0-9.]+:[0-9]+ -> [0-9.]+:9999 .* dropped' "$demo_log" ||
  ! grep -Eq '^  DROPPED at .*: NETFILTER_DROP' "$demo_log"; then
  demo_fail "no drop of the UDP flow to port 9999 by the nftables rule (NETFILTER_DROP)"
fi
rm -f "$demo_log"
echo "demo ok: journeys and the nftables drop printed, nothing rebuilt"

step "OpenTelemetry and deployment tools: Jaeger v2, docker compose, promtool, Prometheus, the manifest validator (built from Go modules once, cached)"
# The OTLP tests (tests/tests/otel_*.rs) run these natively; the first build
# of Jaeger takes several minutes on 2 cores, later runs find it cached.
if ! command -v go >/dev/null 2>&1; then
  echo "FAIL: Go is needed to build Jaeger, Compose and promtool for the OpenTelemetry tests (install Go >= 1.24)" >&2
  exit 1
fi
tools_start=$(date +%s)
VNT_JAEGER_BIN=$(scripts/ensure-jaeger.sh)
export VNT_JAEGER_BIN
scripts/ensure-compose.sh >/dev/null
scripts/ensure-promtool.sh >/dev/null
scripts/ensure-prometheus.sh >/dev/null   # the compose stack's Prometheus stand-in (compose_stack.rs)
scripts/ensure-k8s-validate.sh >/dev/null # strict Kubernetes manifest decoding (deploy.rs)
echo "OpenTelemetry tools ready in $(( $(date +%s) - tools_start )) s"

step "privileged end-to-end tests (real eBPF, real namespaces)"
# The VM tier's driver (tests/tests/vm_kernels.rs) runs in its own step below.
VNT_AGENT_BIN="$PWD/target/release/vnt-agent" \
  cargo test -p vnt-tests --release --no-fail-fast -- --test-threads=1 --skip vm_tier_

step "VM tier: the privileged tests inside Debian 6.1 and 6.12 kernels (virtme-ng, TCG)"
vm_start=$(date +%s)
scripts/vm-test.sh
echo "VM tier took $(( $(date +%s) - vm_start )) s"

echo
echo "all tiers passed in $(( $(date +%s) - start )) s"

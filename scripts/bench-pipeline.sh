#!/usr/bin/env bash
# User-space pipeline benchmark (BENCHMARKS.md, "User space: decode, journeys,
# OTLP export"): synthetic veth ring-buffer records through the real plugin
# decoder (dlopen of libvnt_plugin_veth.so over the C ABI), the journey
# builder, the journey views and OTLP export into a real local collector
# (Jaeger v2, built by scripts/ensure-jaeger.sh), with CPU time per stage.
# Each round runs without export (decode, journeys and views as fast as they
# go), then with the --output json writer (into a sink), then with OTLP over
# gRPC, then over HTTP/protobuf.
#
#   scripts/bench-pipeline.sh                 3 rounds x 20 s
#   scripts/bench-pipeline.sh -r 5 -t 30
#   scripts/bench-pipeline.sh --bench OTHER   also run OTHER (an older build of
#                                             the example), interleaved: before/after;
#                                             it decodes with its own build's
#                                             libvnt_plugin_veth.so (next to it, or in
#                                             the directory above examples/)
# No root needed. Prints a Markdown table to paste into BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=3 seconds=20 benches=()
while [ $# -gt 0 ]; do
	case $1 in
	-r) rounds=$2; shift 2 ;;
	-t) seconds=$2; shift 2 ;;
	--bench) benches+=("$2"); shift 2 ;;
	*) echo "usage: $0 [-r ROUNDS] [-t SECONDS] [--bench PATH]..." >&2; exit 2 ;;
	esac
done

# shellcheck source=scripts/lib/jaeger.sh
. scripts/lib/jaeger.sh

cargo build --release -q -p vnt-agent -p vnt-plugin-veth --lib --example pipeline_bench
benches=(target/release/examples/pipeline_bench "${benches[@]}")
start_jaeger

echo "Machine: $(nproc) CPUs, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); load average $(cut -d' ' -f1-3 /proc/loadavg); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "Collector: Jaeger $(basename "$(dirname "$jaeger")") (otel-collector/jaeger.yaml, in-memory), same machine"
echo "Records: veth, 6 hops per packet over 3 namespaces, 1 packet in 100 dropped after them (a 7th record); 1 M records/s of kernel time"
echo
echo "### $rounds rounds x $seconds s"
echo
echo "| bench | export | events/s (wall) | decode: events per CPU-s | journeys: events per CPU-s | decode + journeys: events per CPU-s | views: journeys per CPU-s | JSON: journeys per CPU-s | OTLP metrics + queue: journeys per CPU-s | export thread: spans per CPU-s | process: spans per CPU-s | spans/s (wall) | process CPUs busy | collector CPUs busy | open journeys | spans dropped | decode errors |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for _ in $(seq "$rounds"); do
	for proto in none json grpc http/protobuf; do
		for b in "${benches[@]}"; do
			case $proto in
			none) set -- ;;
			json) set -- --json ;;
			grpc) set -- --endpoint "http://127.0.0.1:$grpc" --protocol grpc --collector-pid "$jaeger_pid" ;;
			*) set -- --endpoint "http://127.0.0.1:$http" --protocol "$proto" --collector-pid "$jaeger_pid" ;;
			esac
			# The plugin of the same build: next to the bench, or in the
			# release directory above examples/.
			plugin=$(dirname "$b")/libvnt_plugin_veth.so
			[ -e "$plugin" ] || plugin=$(dirname "$b")/../libvnt_plugin_veth.so
			[ -e "$plugin" ] || plugin=target/release/libvnt_plugin_veth.so
			echo -n "| $b "
			"$b" --seconds "$seconds" --plugin "$plugin" "$@"
			sleep 1
		done
	done
done

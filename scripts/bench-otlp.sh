#!/usr/bin/env bash
# OTLP export benchmark (BENCHMARKS.md, "OTLP export"): spans per second per
# core from synthetic journeys into a real local collector (Jaeger v2, built
# by scripts/ensure-jaeger.sh), over gRPC and HTTP/protobuf side by side, and
# the memory a queued span costs (journeys in the export queue, and for
# comparison the same journeys as built SpanData).
#
#   scripts/bench-otlp.sh              3 rounds x 20 s per protocol
#   scripts/bench-otlp.sh -r 5 -t 30
#   scripts/bench-otlp.sh --bench OTHER   also run OTHER (an older build of
#                                         otlp_bench), interleaved: before/after
# No root needed. Prints Markdown tables to paste into BENCHMARKS.md.
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

cargo build --release -q -p vnt-agent --example otlp_bench
bench=target/release/examples/otlp_bench
benches=("$bench" "${benches[@]}")
start_jaeger

echo "Machine: $(nproc) CPUs, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "Collector: Jaeger $(basename "$(dirname "$jaeger")") (otel-collector/jaeger.yaml, in-memory), same machine"
echo
echo "### Throughput ($rounds rounds x $seconds s per protocol, 6-hop journeys = 7 spans each)"
echo
echo "| bench | protocol | spans/s (wall) | spans per agent CPU-second | spans per export-thread CPU-second | agent CPUs busy | export thread CPUs busy | collector CPUs busy | spans dropped |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
for _ in $(seq "$rounds"); do
	for proto in grpc http/protobuf; do
		if [ "$proto" = grpc ]; then ep=http://127.0.0.1:$grpc; else ep=http://127.0.0.1:$http; fi
		for b in "${benches[@]}"; do
			echo -n "| $b "
			"$b" throughput --endpoint "$ep" --protocol "$proto" --seconds "$seconds" --collector-pid "$jaeger_pid"
			sleep 1
		done
	done
done
echo
echo "### Memory per queued span (collector absent; RSS growth between 25 % and 100 % of the fill)"
echo
echo "| held as | spans | RSS before MiB | RSS after MiB | bytes/span (from start) | bytes/span (slope) | dropped |"
echo "|---|---:|---:|---:|---:|---:|---:|"
"$bench" memory --spans 400000 --hold queue
"$bench" memory --spans 400000 --hold spandata

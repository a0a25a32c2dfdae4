# shellcheck shell=bash
# A local Jaeger v2 (otel-collector/jaeger.yaml, in-memory storage, built by
# scripts/ensure-jaeger.sh) on free loopback ports, for the benchmarks.
# Source it from the repository root, then call start_jaeger: it sets
# jaeger (the binary), jaeger_pid, grpc and http (OTLP ports), and stops
# Jaeger on exit.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_jaeger() {
	local health log
	jaeger=$(scripts/ensure-jaeger.sh)
	grpc=$(free_port) http=$(free_port) health=$(free_port)
	log=$(mktemp)
	JAEGER_OTLP_GRPC_ENDPOINT=127.0.0.1:$grpc JAEGER_OTLP_HTTP_ENDPOINT=127.0.0.1:$http \
		JAEGER_QUERY_HTTP_ENDPOINT=127.0.0.1:$(free_port) JAEGER_QUERY_GRPC_ENDPOINT=127.0.0.1:$(free_port) \
		JAEGER_HEALTH_ENDPOINT=127.0.0.1:$health JAEGER_METRICS_HOST=127.0.0.1 JAEGER_METRICS_PORT=$(free_port) \
		JAEGER_MAX_TRACES=20000 \
		"$jaeger" --config otel-collector/jaeger.yaml >"$log" 2>&1 &
	jaeger_pid=$!
	# shellcheck disable=SC2064 # expand now: the values are fixed
	trap "kill $jaeger_pid 2>/dev/null || true; wait $jaeger_pid 2>/dev/null || true; rm -f '$log'" EXIT
	for _ in $(seq 100); do
		curl -sf "http://127.0.0.1:$health/status" >/dev/null 2>&1 && break
		sleep 0.2
	done
	curl -sf "http://127.0.0.1:$health/status" >/dev/null || { cat "$log" >&2; echo "Jaeger did not start" >&2; exit 1; }
}

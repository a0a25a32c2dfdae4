#!/usr/bin/env bash
# Build the Prometheus server from its Go module once, cache it, and print its
# path. tests/tests/compose_stack.rs packs it into the local stand-in for the
# compose file's prom/prometheus image (no registry is reachable in tests).
# This build has no web UI assets (they come from npm); its HTTP API works.
#   PROMETHEUS_VERSION  default v0.307.3 (Prometheus 3.7.3, as in docker-compose.yml)
set -euo pipefail
exec "$(dirname "$0")/ensure-go-binary.sh" prometheus github.com/prometheus/prometheus "${PROMETHEUS_VERSION:-v0.307.3}" ./cmd/prometheus

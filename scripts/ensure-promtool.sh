#!/usr/bin/env bash
# Build Prometheus's promtool from its Go module once, cache it, and print its
# path. Used to validate otel-collector/prometheus.yml:
#   $(scripts/ensure-promtool.sh) check config otel-collector/prometheus.yml
#   PROMETHEUS_VERSION  default v0.307.3 (Prometheus 3.7.3; the Go module is tagged v0.3xx)
set -euo pipefail
exec "$(dirname "$0")/ensure-go-binary.sh" promtool github.com/prometheus/prometheus "${PROMETHEUS_VERSION:-v0.307.3}" ./cmd/promtool

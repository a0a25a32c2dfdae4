#!/usr/bin/env bash
# Build the Jaeger v2 all-in-one binary from its Go module once, cache it, and
# print its path on stdout (everything else goes to stderr). The first build
# takes several minutes on 2 cores; later calls return at once. Concurrent
# callers wait for the one build in progress (see ensure-go-binary.sh).
#
#   JAEGER_VERSION  default v1.76.0. Jaeger tags each v2 release with a paired
#                   v1.x tag of the same commit, and only the v1.x tags resolve
#                   through the Go module proxy (the module path has no /v2
#                   suffix); cmd/jaeger at that tag is the v2 binary. Its
#                   go.mod has a replace directive, which is why it is built
#                   from a module copy rather than with `go install`.
#   VNT_CACHE_DIR   default ${XDG_CACHE_HOME:-~/.cache}/vnt
set -euo pipefail
version=${JAEGER_VERSION:-v1.76.0}
exec "$(dirname "$0")/ensure-go-binary.sh" jaeger github.com/jaegertracing/jaeger "$version" ./cmd/jaeger

#!/usr/bin/env bash
# Build deploy/kubernetes/validate (strict decoding of manifests against the
# Kubernetes API types, k8s.io/api) once per version of its sources, cache it,
# and print its path on stdout (everything else goes to stderr):
#   $(scripts/ensure-k8s-validate.sh) deploy/kubernetes/vnt-agent.yaml
#   VNT_CACHE_DIR  default ${XDG_CACHE_HOME:-~/.cache}/vnt
set -euo pipefail
src="$(cd "$(dirname "$0")/../deploy/kubernetes/validate" && pwd)"
cache=${VNT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vnt}
hash=$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-16)
dir="$cache/k8s-validate-$hash"
bin="$dir/k8s-validate"
if [ -x "$bin" ]; then
	echo "$bin"
	exit 0
fi
command -v go >/dev/null || {
	echo "ensure-k8s-validate.sh: Go is required to build the manifest validator" >&2
	exit 1
}
mkdir -p "$dir" "$cache/gopath"
exec 9>"$dir/.build.lock"
flock 9
if [ ! -x "$bin" ]; then
	echo "ensure-k8s-validate.sh: building the manifest validator into $dir (first time only)" >&2
	export GOPATH="$cache/gopath" GOMODCACHE="$cache/gopath/pkg/mod" CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=readonly
	(cd "$src" && go build -trimpath -o "$bin.tmp" .) >&2
	mv "$bin.tmp" "$bin"
fi
echo "$bin"

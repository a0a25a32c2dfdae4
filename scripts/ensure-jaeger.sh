#!/usr/bin/env bash
# Build the Jaeger v2 all-in-one binary from its Go module once, cache it, and
# print its path on stdout (everything else goes to stderr). The first build
# takes several minutes on 2 cores; later calls return at once. Concurrent
# callers wait for the one build in progress (flock) instead of starting
# another.
#
#   JAEGER_VERSION  default v1.76.0. Jaeger tags each v2 release with a paired
#                   v1.x tag of the same commit, and only the v1.x tags resolve
#                   through the Go module proxy (the module path has no /v2
#                   suffix); cmd/jaeger at that tag is the v2 binary.
#   VNT_CACHE_DIR   default ${XDG_CACHE_HOME:-~/.cache}/vnt
set -euo pipefail
version=${JAEGER_VERSION:-v1.76.0}
cache=${VNT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vnt}
dir="$cache/jaeger-$version"
bin="$dir/jaeger"
if [ -x "$bin" ]; then
	echo "$bin"
	exit 0
fi
command -v go >/dev/null || {
	echo "ensure-jaeger.sh: Go is required to build Jaeger (scripts/install-deps.sh installs it)" >&2
	exit 1
}
mkdir -p "$dir" "$cache/gopath"
exec 9>"$dir/.build.lock"
if ! flock -n 9; then
	echo "ensure-jaeger.sh: another build of jaeger $version is running; waiting for it" >&2
	flock 9
fi
# The build we waited for may have produced the binary.
if [ -x "$bin" ]; then
	echo "$bin"
	exit 0
fi
echo "ensure-jaeger.sh: building jaeger $version into $dir (first time only, several minutes)" >&2
start=$(date +%s)
export GOPATH="$cache/gopath" GOMODCACHE="$cache/gopath/pkg/mod" CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local
# `go install module@version` refuses modules whose go.mod has replace
# directives (Jaeger's has one), so build from a writable copy of the module,
# where its go.mod is the main module's and the replace applies.
src=$(go mod download -json "github.com/jaegertracing/jaeger@$version" |
	sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$src" ] || {
	echo "ensure-jaeger.sh: could not download github.com/jaegertracing/jaeger@$version" >&2
	exit 1
}
work=$(mktemp -d)
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
cp -r "$src/." "$work/"
chmod -R u+w "$work"
(cd "$work" && go build -trimpath -o "$bin.tmp" ./cmd/jaeger) >&2
mv "$bin.tmp" "$bin"
[ -x "$bin" ] || {
	echo "ensure-jaeger.sh: the build finished but $bin is missing" >&2
	exit 1
}
echo "ensure-jaeger.sh: built in $(($(date +%s) - start)) s" >&2
echo "$bin"

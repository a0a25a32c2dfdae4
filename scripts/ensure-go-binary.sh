#!/usr/bin/env bash
# Build one command of a Go module once, cache it, and print the binary's
# path on stdout (everything else goes to stderr). Concurrent callers wait
# for the build in progress (flock). Used by ensure-compose.sh and
# ensure-promtool.sh; ensure-jaeger.sh does the same for Jaeger.
#
#   scripts/ensure-go-binary.sh NAME MODULE VERSION PACKAGE_DIR
#   e.g. scripts/ensure-go-binary.sh promtool github.com/prometheus/prometheus v0.307.3 ./cmd/promtool
#
# The binary goes to $VNT_CACHE_DIR/NAME-VERSION/NAME (VNT_CACHE_DIR defaults
# to ${XDG_CACHE_HOME:-~/.cache}/vnt). It is built from a writable copy of the
# module, because `go install module@version` refuses modules whose go.mod
# has replace or exclude directives.
set -euo pipefail
[ $# -eq 4 ] || { echo "usage: $0 NAME MODULE VERSION PACKAGE_DIR" >&2; exit 2; }
name=$1 module=$2 version=$3 pkg=$4
cache=${VNT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vnt}
dir="$cache/$name-$version"
bin="$dir/$name"
if [ -x "$bin" ]; then
	echo "$bin"
	exit 0
fi
command -v go >/dev/null || {
	echo "ensure-go-binary.sh: Go is required to build $name (scripts/install-deps.sh installs it)" >&2
	exit 1
}
mkdir -p "$dir" "$cache/gopath"
exec 9>"$dir/.build.lock"
if ! flock -n 9; then
	echo "ensure-go-binary.sh: another build of $name $version is running; waiting for it" >&2
	flock 9
fi
if [ -x "$bin" ]; then
	echo "$bin"
	exit 0
fi
echo "ensure-go-binary.sh: building $name ($module@$version $pkg) into $dir (first time only)" >&2
start=$(date +%s)
export GOPATH="$cache/gopath" GOMODCACHE="$cache/gopath/pkg/mod" CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local
src=$(go mod download -json "$module@$version" |
	sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$src" ] || {
	echo "ensure-go-binary.sh: could not download $module@$version" >&2
	exit 1
}
work=$(mktemp -d)
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
cp -r "$src/." "$work/"
chmod -R u+w "$work"
(cd "$work" && go build -trimpath -o "$bin.tmp" "$pkg") >&2
mv "$bin.tmp" "$bin"
echo "ensure-go-binary.sh: built $name in $(($(date +%s) - start)) s" >&2
echo "$bin"

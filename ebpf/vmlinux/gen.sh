#!/usr/bin/env bash
# Regenerate ebpf/vmlinux/<arch>/vmlinux.h from a kernel's BTF.
# CO-RE relocations make the result usable on other kernels: the header only
# has to name the types and fields our programs read, not match their layout.
#   ebpf/vmlinux/gen.sh [BTF_FILE]   (default: /sys/kernel/btf/vmlinux)
set -euo pipefail
btf=${1:-/sys/kernel/btf/vmlinux}
arch=$(uname -m)
here=$(cd "$(dirname "$0")" && pwd)
command -v bpftool >/dev/null || { echo "gen.sh: bpftool not found; install Debian package 'bpftool'" >&2; exit 1; }
mkdir -p "$here/$arch"
bpftool btf dump file "$btf" format c > "$here/$arch/vmlinux.h.tmp"
mv "$here/$arch/vmlinux.h.tmp" "$here/$arch/vmlinux.h"
echo "wrote $here/$arch/vmlinux.h from $btf ($(uname -r))"

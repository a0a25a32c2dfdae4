#!/usr/bin/env bash
# Fetch one of Debian's stock kernels for the VM tier, once, and print the
# directory it was unpacked into.
#
#   scripts/vm-kernel.sh 6.1            newest linux-image-6.1.0-N-amd64
#   scripts/vm-kernel.sh 6.12           newest linux-image-6.12.N+deb12-amd64
#   scripts/vm-kernel.sh --cached 6.1   print the cached one; exit 1 if there is none
#
# The package is downloaded with `apt-get download` and unpacked with
# `dpkg-deb -x` into ${VNT_CACHE_DIR:-$HOME/.cache/vnt}/kernels/<package>/root;
# `depmod -b` indexes its modules there. Nothing is installed on the host: no
# /boot, no /lib/modules (virtme-ng mounts the unpacked modules inside the
# guest). Once a series is cached, `kernels/<series>` points at it and no
# network is used again; delete that link to move to a newer package.
#
# The printed directory holds: vmlinuz (the image), release (`uname -r` in the
# guest), package (the Debian package name and version), config (the kernel's
# .config) and root/ (the unpacked package).
set -euo pipefail

cached_only=false
if [[ "${1:-}" == "--cached" ]]; then
	cached_only=true
	shift
fi
series="${1:-}"
case "$series" in
6.1) pattern='^linux-image-6\.1\.0-[0-9]+-amd64$' ;;
6.12) pattern='^linux-image-6\.12\.[0-9]+\+deb12-amd64$' ;;
*)
	echo "usage: $0 [--cached] 6.1|6.12" >&2
	exit 2
	;;
esac

cache="${VNT_CACHE_DIR:-$HOME/.cache/vnt}/kernels"
say() { printf 'vm-kernel: %s\n' "$*" >&2; }
die() {
	printf 'vm-kernel: error: %s\n' "$*" >&2
	exit 1
}

complete() { [[ -f "$1/.complete" && -e "$1/vmlinuz" && -s "$1/release" ]]; }

if complete "$cache/$series"; then
	readlink -f "$cache/$series"
	exit 0
fi
$cached_only && die "no $series kernel in $cache (run: scripts/vm-kernel.sh $series)"

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
# Another process may have fetched it while we waited for the lock.
if complete "$cache/$series"; then
	readlink -f "$cache/$series"
	exit 0
fi

newest() { apt-cache search --names-only '^linux-image-6' | awk '{print $1}' | grep -E "$pattern" | sort -V | tail -n1; }
pkg=$(newest || true)
if [[ -z "$pkg" ]]; then
	[[ $EUID -eq 0 ]] || die "no package matches $pattern and only root can run apt-get update"
	say "no package matches $pattern; running apt-get update"
	apt-get -o DPkg::Lock::Timeout=300 update >&2
	pkg=$(newest || true)
	[[ -n "$pkg" ]] || die "no package matches $pattern in the apt sources (Debian 12 bookworm, main and updates, carry both series)"
fi

dir="$cache/$pkg"
if ! complete "$dir"; then
	say "downloading $pkg"
	rm -rf "$dir"
	tmp=$(mktemp -d "$cache/.fetch.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	(cd "$tmp" && apt-get -o APT::Sandbox::User=root download "$pkg" >&2) || die "apt-get download $pkg failed"
	deb=$(ls "$tmp"/*.deb)
	dpkg-deb -x "$deb" "$tmp/root"
	version=$(dpkg-deb -f "$deb" Version)
	release=$(ls "$tmp/root/lib/modules" 2>/dev/null | head -n1)
	[[ -n "$release" && -f "$tmp/root/boot/vmlinuz-$release" ]] || die "$pkg has no boot/vmlinuz-<release> and lib/modules/<release>"
	# Debian ships no modules.dep (its postinst runs depmod); index them where they are.
	depmod -b "$tmp/root" "$release"
	rm -f "$deb"
	ln -s "root/boot/vmlinuz-$release" "$tmp/vmlinuz"
	ln -s "root/boot/config-$release" "$tmp/config"
	echo "$release" >"$tmp/release"
	echo "$pkg $version" >"$tmp/package"
	touch "$tmp/.complete"
	mv "$tmp" "$dir"
	trap - EXIT
	say "unpacked $pkg $version ($release) into $dir"
fi
ln -sfn "$pkg" "$cache/$series"
readlink -f "$cache/$series"

#!/usr/bin/env bash
# Install what the VM tier needs (tests that boot Debian's stock kernels under
# virtme-ng with software emulation, see docs/kernels.md), on top of
# scripts/install-deps.sh. Idempotent: what is present is left alone, so a rerun
# takes about a second.
#
#   scripts/install-vm-deps.sh           install what is missing, fetch the kernels
#   scripts/install-vm-deps.sh --check   only report; exit 1 if anything is missing
#
# What it installs:
#   - Debian packages: qemu-system-x86 (the emulator), kmod (depmod/modprobe for the
#     guest kernel's modules), busybox-static (virtme's fallback init tools), file
#     (virtme reads the kernel version with it);
#   - virtme-ng (pinned) from PyPI into a venv under the cache directory, so the
#     system Python is not touched;
#   - the guest kernels (scripts/vm-kernel.sh 6.1 and 6.12): downloaded once with
#     `apt-get download`, unpacked with `dpkg-deb -x` under the cache directory.
#     Nothing is installed into the host's /boot or /lib/modules: virtme-ng
#     mounts the unpacked modules inside the guest.
#
# Cache directory: ${VNT_CACHE_DIR:-$HOME/.cache/vnt} (kernels/, virtme-ng/).
# Run as root (apt-get).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
	qemu-system-x86 # qemu-system-x86_64, run with TCG (KVM guests hang on these machines)
	kmod            # depmod for the unpacked kernels' modules, modprobe in the guest
	busybox-static  # virtme-ng's fallback guest tools
	file            # virtme-ng reads the kernel version of a bzImage with file(1)
	python3-venv    # the venv virtme-ng is installed into
)

VIRTME_NG_VERSION="1.42"
KERNEL_SERIES=(6.1 6.12)

CACHE="${VNT_CACHE_DIR:-$HOME/.cache/vnt}"
VENV="$CACHE/virtme-ng"

check_only=false
case "${1:-}" in
"") ;;
--check) check_only=true ;;
-h | --help)
	sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'
	exit 0
	;;
*)
	echo "install-vm-deps: unknown argument '$1' (try --help)" >&2
	exit 2
	;;
esac

say() { printf 'install-vm-deps: %s\n' "$*"; }
die() {
	printf 'install-vm-deps: error: %s\n' "$*" >&2
	exit 1
}

if ! $check_only && [[ $EUID -ne 0 ]]; then
	die "run as root (it installs packages with apt-get)"
fi
missing_total=0

# ---- packages -----------------------------------------------------------------
# shellcheck source-path=SCRIPTDIR source=lib/apt.sh
source "$(dirname "$0")/lib/apt.sh"
apt_ensure "${PACKAGES[@]}"

# ---- virtme-ng ------------------------------------------------------------------
vng_version() { "$VENV/bin/vng" --version 2>/dev/null | awk '{print $NF}'; }
if [[ -x "$VENV/bin/vng" && "$(vng_version)" == "$VIRTME_NG_VERSION" ]]; then
	say "ok       virtme-ng $VIRTME_NG_VERSION ($VENV/bin/vng)"
elif $check_only; then
	say "missing  virtme-ng $VIRTME_NG_VERSION in $VENV"
	missing_total=$((missing_total + 1))
else
	say "installing virtme-ng $VIRTME_NG_VERSION into $VENV"
	mkdir -p "$CACHE"
	rm -rf "$VENV"
	# Debian's python3 (python3-venv), not whatever python3 comes first on PATH.
	/usr/bin/python3 -m venv "$VENV"
	"$VENV/bin/pip" install --quiet --disable-pip-version-check "virtme-ng==$VIRTME_NG_VERSION"
	[[ "$(vng_version)" == "$VIRTME_NG_VERSION" ]] || die "virtme-ng did not install: $("$VENV/bin/vng" --version 2>&1 || true)"
	say "installed virtme-ng $(vng_version)"
fi

# ---- kernels --------------------------------------------------------------------
for series in "${KERNEL_SERIES[@]}"; do
	if $check_only; then
		if dir=$(scripts/vm-kernel.sh --cached "$series" 2>/dev/null); then
			say "ok       kernel $series ($dir)"
		else
			say "missing  kernel $series (scripts/vm-kernel.sh $series)"
			missing_total=$((missing_total + 1))
		fi
	else
		dir=$(scripts/vm-kernel.sh "$series") || die "could not fetch the $series kernel"
		say "ok       kernel $series ($dir)"
	fi
done

if $check_only && ((missing_total > 0)); then
	say "$missing_total thing(s) missing; run $0 without --check as root"
	exit 1
fi
say "done"

#!/usr/bin/env bash
# Install what vnt needs to build and test on a fresh Debian 12 (bookworm) machine,
# and mount the file systems eBPF and tracing use. Idempotent: packages already
# installed are skipped (checked with dpkg-query), mounted file systems are left
# alone, so a rerun takes about a second.
#
#   scripts/install-deps.sh           install what is missing, mount bpffs and tracefs
#   scripts/install-deps.sh --check   only report; exit 1 if anything is missing
#
# Run as root. Rust is not installed from Debian (bookworm's rustc is too old for
# this workspace): install it with rustup (https://rustup.rs).
set -euo pipefail

# Package -> why. Keep the list in one place; the order is the order printed.
PACKAGES=(
	clang-19     # compiles plugins' bpf/*.bpf.c (ebpf/src/lib.rs looks for clang-19 first)
	llvm-19      # llvm-objdump/llvm-strip for looking inside .bpf.o files
	libbpf-dev   # bpf/bpf_helpers.h, bpf_core_read.h, bpf_tracing.h
	bpftool      # vmlinux.h generation (ebpf/vmlinux/gen.sh), inspecting loaded programs
	bpftrace     # independent instrument to cross-check the agent's latencies
	iperf3       # traffic for tests and scripts/bench-overhead.sh
	openvswitch-switch # the ovs plugin's tests: ovs-vswitchd (userspace datapath here, kernel datapath in the VM guests)
	sockperf     # UDP request/response latency in scripts/bench-overhead.sh
	nftables     # drop scenarios (a rule that drops packets on the path)
	iproute2     # ip netns / ip link: the test topologies
	iputils-ping # ICMP traffic in scenarios
	procps       # ps, pgrep for tests and benchmarks
	jq           # reading iperf3 -J and the agent's JSON output in scripts
	kmod         # modprobe (veth/bridge/vxlan are modules on distro kernels, VM tier)
	util-linux   # mount, mountpoint, nsenter, unshare
	docker.io    # dockerd + containerd: tests/tests/docker_verdicts.rs starts its own engine
	busybox-static # the static /usr/bin/busybox that test packs into its local image
	libcap2-bin  # capsh: tests/tests/least_privilege.rs runs the agent with exactly its documented capabilities
	systemd      # systemd-analyze verify: tests/tests/deploy.rs checks deploy/systemd/vnt-agent.service
	gcc          # linker driver for cargo
	libc6-dev    # C runtime files the linker needs
	pkg-config   # build scripts of some crates look for it
	ca-certificates # cargo fetching crates over https
)

# Pseudo file systems: mount point -> type.
MOUNTS=(
	"/sys/fs/bpf bpf"
	"/sys/kernel/tracing tracefs"
)

MIN_RUST="1.85" # workspace rust-version in Cargo.toml

check_only=false
case "${1:-}" in
"") ;;
--check) check_only=true ;;
-h | --help)
	sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
	exit 0
	;;
*)
	echo "install-deps: unknown argument '$1' (try --help)" >&2
	exit 2
	;;
esac

say() { printf 'install-deps: %s\n' "$*"; }
die() {
	printf 'install-deps: error: %s\n' "$*" >&2
	exit 1
}

if [[ ! -r /etc/debian_version ]]; then
	die "this script installs with apt-get and expects Debian 12 (bookworm); install the packages listed in $0 by hand"
fi
if ! $check_only && [[ $EUID -ne 0 ]]; then
	die "run as root (it installs packages and mounts /sys/fs/bpf and /sys/kernel/tracing)"
fi

missing_total=0

# ---- packages ---------------------------------------------------------------
# shellcheck source-path=SCRIPTDIR source=lib/apt.sh
source "$(dirname "$0")/lib/apt.sh"
apt_ensure "${PACKAGES[@]}"

# ---- file systems -------------------------------------------------------------
is_mounted_as() {
	# /proc/mounts: device mountpoint fstype ...
	awk -v m="$1" -v t="$2" '$2 == m && $3 == t { found = 1 } END { exit !found }' /proc/mounts
}

for entry in "${MOUNTS[@]}"; do
	read -r dir fstype <<<"$entry"
	if is_mounted_as "$dir" "$fstype"; then
		say "ok       $fstype mounted on $dir"
	elif $check_only; then
		say "missing  $fstype on $dir (mount -t $fstype $fstype $dir)"
		missing_total=$((missing_total + 1))
	else
		say "running: mount -t $fstype $fstype $dir"
		mkdir -p "$dir"
		mount -t "$fstype" "$fstype" "$dir" ||
			die "could not mount $fstype on $dir (a container without CAP_SYS_ADMIN? the kernel without CONFIG_BPF_SYSCALL/CONFIG_TRACING?)"
		is_mounted_as "$dir" "$fstype" || die "mount reported success but $dir is not $fstype"
	fi
done

if [[ ! -e /sys/kernel/btf/vmlinux ]]; then
	say "warning: /sys/kernel/btf/vmlinux is missing: this kernel has no BTF, so tp_btf probes and CO-RE cannot work here"
fi

# ---- Rust ---------------------------------------------------------------------
# rustup installs into ~/.cargo/bin, which a fresh root shell may not have on PATH.
if ! command -v cargo >/dev/null 2>&1 && [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]]; then
	PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
	say "note: cargo found in ${CARGO_HOME:-$HOME/.cargo}/bin, which is not on your PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
	cat >&2 <<EOF
install-deps: error: cargo not found. vnt needs Rust $MIN_RUST or newer, installed with rustup
(Debian 12's own rustc is too old). Install it with:

    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt
    . "\$HOME/.cargo/env"

then run this script again.
EOF
	exit 1
fi
rust_version="$(rustc --version 2>/dev/null | awk '{print $2}')"
if [[ -z "$rust_version" ]]; then
	die "cargo is on PATH but rustc is not; reinstall Rust with rustup"
fi
if [[ "$(printf '%s\n%s\n' "$MIN_RUST" "${rust_version%%-*}" | sort -V | head -n1)" != "$MIN_RUST" ]]; then
	die "rustc $rust_version is older than $MIN_RUST (the workspace's rust-version); run: rustup update"
fi
say "ok       rust $rust_version ($(command -v cargo))"

if $check_only && ((missing_total > 0)); then
	say "$missing_total thing(s) missing; run $0 without --check as root"
	exit 1
fi
say "done"

# shellcheck shell=bash
# Debian package installation shared by install-deps.sh and install-vm-deps.sh.
# Source it after defining say(), die() and check_only; it adds to missing_total.
# shellcheck disable=SC2154 # check_only is set by the sourcing script

is_installed() {
	# "install ok installed" only; a removed package keeps a dpkg record.
	[[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

# apt_ensure PACKAGE...: report each package; install the missing ones (one
# apt-get update, then one install), or with check_only only count them.
apt_ensure() {
	local p missing=()
	for p in "$@"; do
		if is_installed "$p"; then
			say "ok       $p $(dpkg-query -W -f='${Version}' "$p")"
		else
			say "missing  $p"
			missing+=("$p")
		fi
	done
	if ((${#missing[@]} == 0)); then
		say "all $# packages already installed; apt-get not run"
		return 0
	fi
	if $check_only; then
		missing_total=$((missing_total + ${#missing[@]}))
		return 0
	fi
	export DEBIAN_FRONTEND=noninteractive
	say "running: apt-get update"
	apt-get -o DPkg::Lock::Timeout=300 update
	say "running: apt-get install -y --no-install-recommends ${missing[*]}"
	apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends "${missing[@]}"
	for p in "${missing[@]}"; do
		is_installed "$p" || die "apt-get reported success but $p is not installed"
	done
	say "installed ${#missing[@]} package(s)"
}

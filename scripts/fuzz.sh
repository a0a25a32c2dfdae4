#!/usr/bin/env bash
# Fuzz what vnt reads from outside, each target for a bounded time (issue 13):
#   wire_decode   ring-buffer records through vnt_plugin_api::wire
#   veth_decode   the veth plugin's decoder
#   filter_parse  --filter expressions (agent/src/probes/filter.rs)
#   config_load   TOML configuration through the layered loader (agent/src/config.rs)
# libFuzzer through cargo-fuzz on the nightly toolchain, without a sanitizer
# (`-s none`): the code fuzzed is safe Rust, whose failures are panics, and
# coverage-guided runs without ASan are several times faster. A crash fails the
# run and leaves its input in fuzz/artifacts/<target>/; reproduce it with
#   cargo +nightly fuzz run <target> -s none fuzz/artifacts/<target>/crash-...
# (from fuzz/), fix it, and pin it with a unit test named after the bug.
#
#   scripts/fuzz.sh                 every target, $VNT_FUZZ_SECONDS (default 60) s each
#   scripts/fuzz.sh filter_parse    one target
# cargo-fuzz is installed from crates.io when missing. The nightly toolchain must be
# there already (rustup toolchain list); with CI=true its absence fails the run.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

secs="${VNT_FUZZ_SECONDS:-60}"
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(wire_decode veth_decode filter_parse config_load)

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
	echo "fuzz: no nightly toolchain (rustup toolchain list); cargo-fuzz needs one" >&2
	exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
	echo "fuzz: installing cargo-fuzz from crates.io"
	cargo install cargo-fuzz --locked
fi

cargo +nightly fuzz build -s none
failed=()
for t in "${targets[@]}"; do
	mkdir -p "corpus/$t"
	echo "fuzz: $t for ${secs}s"
	if ! cargo +nightly fuzz run "$t" -s none "corpus/$t" -- -max_total_time="$secs" 2>"/tmp/vnt-fuzz-$t.log"; then
		tail -n 30 "/tmp/vnt-fuzz-$t.log" >&2
		failed+=("$t")
	else
		grep -E '^Done ' "/tmp/vnt-fuzz-$t.log" || true
	fi
done
if [ ${#failed[@]} -gt 0 ]; then
	echo "FAIL: fuzz targets crashed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
	exit 1
fi
echo "fuzz: ${#targets[@]} passed, 0 failed"

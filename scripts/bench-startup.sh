#!/usr/bin/env bash
# Start-up benchmark (BENCHMARKS.md, "Start-up: attach time and memory"): how
# long `vnt-agent --plugins veth` takes from exec until every probe is attached
# (its --ready-file exists), and its memory: peak (VmHWM) and resident (VmRSS)
# at that moment and one second later, idle (no traffic is made).
#
#   scripts/bench-startup.sh                      build, then 9 runs of target/release/vnt-agent
#   scripts/bench-startup.sh -n 15 --no-build A B runs agents A and B interleaved (before/after)
#   scripts/bench-startup.sh -- --plugins veth --sample 1/1   other agent flags after --
#
# Each AGENT is a vnt-agent binary with libvnt_plugin_veth.so next to it (the
# agent looks in its own directory). Runs of several agents alternate, so load
# from other jobs hits them alike; the table gives medians and ranges. Needs
# root (it loads eBPF).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=9 build=1 agents=() flags=(--plugins veth)
while [ $# -gt 0 ]; do
	case $1 in
	-n) runs=$2; shift 2 ;;
	--no-build) build=0; shift ;;
	--) shift; flags=("$@"); break ;;
	-*) echo "usage: $0 [-n RUNS] [--no-build] [AGENT...] [-- AGENT-FLAGS...]" >&2; exit 2 ;;
	*) agents+=("$1"); shift ;;
	esac
done
[ ${#agents[@]} -gt 0 ] || agents=(target/release/vnt-agent)
if [ "$build" = 1 ]; then
	cargo build --release -q -p vnt-agent -p vnt-plugin-veth
fi
[ "$(id -u)" = 0 ] || { echo "run as root: the agent loads eBPF" >&2; exit 1; }

echo "Machine: $(nproc) CPUs, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); load average $(cut -d' ' -f1-3 /proc/loadavg); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "Agent flags: ${flags[*]} --output none --ready-file F; $runs runs per agent, interleaved"
echo
python3 - "$runs" "${#agents[@]}" "${agents[@]}" "${flags[@]}" <<'EOF'
import os, signal, statistics, subprocess, sys, tempfile, time

runs, n = int(sys.argv[1]), int(sys.argv[2])
agents, flags = sys.argv[3:3 + n], sys.argv[3 + n:]
tmp = tempfile.mkdtemp(prefix="vnt-startup-")

def status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS"):
                out[k] = int(v.split()[0]) / 1024
    return out

def once(agent):
    ready = os.path.join(tmp, "ready")
    if os.path.exists(ready):
        os.unlink(ready)
    t0 = time.monotonic()
    p = subprocess.Popen([agent, *flags, "--output", "none", "--ready-file", ready],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while not os.path.exists(ready):
        if p.poll() is not None:
            sys.exit(f"{agent} exited with {p.returncode}: {p.stderr.read().decode()}")
        if time.monotonic() - t0 > 30:
            p.kill()
            sys.exit(f"{agent} not ready after 30 s")
        time.sleep(0.0005)
    ms = (time.monotonic() - t0) * 1000
    s0 = status(p.pid)
    time.sleep(1)
    s1 = status(p.pid)
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=30)
    return ms, s0["VmHWM"], s0["VmRSS"], s1["VmRSS"], max(s0["VmHWM"], s1["VmHWM"])

results = {a: [] for a in agents}
for _ in range(runs):
    for a in agents:
        results[a].append(once(a))

def cell(xs, fmt):
    return f"{fmt.format(statistics.median(xs))} ({fmt.format(min(xs))}–{fmt.format(max(xs))})"

print("| agent | ready ms | peak RSS (VmHWM) MiB | RSS at ready MiB | RSS 1 s later MiB |")
print("|---|---:|---:|---:|---:|")
for a in agents:
    cols = list(zip(*results[a]))
    print(f"| {a} | {cell(cols[0], '{:.0f}')} | {cell(cols[4], '{:.1f}')} | {cell(cols[2], '{:.1f}')} | {cell(cols[3], '{:.1f}')} |")
print()
print("Median (min–max) over the runs.")
EOF

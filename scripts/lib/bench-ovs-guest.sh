#!/bin/sh
# Runs inside a VM guest booted by scripts/bench-ovs.sh: an OVS bridge on the
# kernel datapath between two namespaces, iperf3 TCP through it with and
# without the agent, then each ovs program's ns per run (bpf_stats).
#   sh scripts/lib/bench-ovs-guest.sh OUT ROUNDS SECONDS AGENT
set -u
out=$1 rounds=$2 secs=$3 agent=$4
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing
modprobe openvswitch || exit 1
d=$(mktemp -d)
export OVS_RUNDIR=$d OVS_DBDIR=$d OVS_LOGDIR=$d
ovsdb-tool create "$d/conf.db" /usr/share/openvswitch/vswitch.ovsschema
ovsdb-server "$d/conf.db" --remote="punix:$d/db.sock" --pidfile="$d/ovsdb.pid" --log-file="$d/ovsdb.log" --detach
db="unix:$d/db.sock"
ovs-vsctl --db="$db" --no-wait init
ovs-vswitchd "$db" --pidfile="$d/vswitchd.pid" --log-file="$d/vswitchd.log" --detach
ovs-vsctl --db="$db" add-br benchbr
for i in 1 2; do
	ip netns add bench$i
	ip link add benchp$i type veth peer name eth0 netns bench$i
	ip link set benchp$i up
	ovs-vsctl --db="$db" add-port benchbr benchp$i
	ip -n bench$i addr add 10.236.0.$i/24 dev eth0
	ip -n bench$i link set eth0 up
	ip -n bench$i link set lo up
done
sleep 2
ip netns exec bench1 ping -c 2 -W 1 10.236.0.2 >/dev/null

tput() { # Gbit/s of one iperf3 TCP run
	ip netns exec bench2 iperf3 -s -1 -D >/dev/null 2>&1
	sleep 0.5
	ip netns exec bench1 iperf3 -c 10.236.0.2 -t "$secs" -J 2>/dev/null |
		jq -r '.end.sum_received.bits_per_second / 1e9'
}

agent_start() { # $1: sampling
	"$agent" --plugins ovs --sample "$1" --output none --ready-file "$d/ready" >"$out/agent.log" 2>&1 &
	apid=$!
	i=0
	while [ ! -f "$d/ready" ] && [ $i -lt 120 ]; do sleep 0.5; i=$((i + 1)); done
	rm -f "$d/ready"
}
agent_stop() { kill "$apid"; wait "$apid" 2>/dev/null; }

: >"$out/results.txt"
r=1
while [ $r -le "$rounds" ]; do
	for cfg in none default all; do
		case $cfg in
		none) v=$(tput) ;;
		default) agent_start 1/100; v=$(tput); agent_stop ;;
		all) agent_start 1/1; v=$(tput); agent_stop ;;
		esac
		echo "round $r $cfg $v" | tee -a "$out/results.txt"
	done
	r=$((r + 1))
done

# ns per run of each program, every packet traced, under the same TCP flow.
agent_start 1/1
sysctl -q kernel.bpf_stats_enabled=1
tput >/dev/null
bpftool -j prog show | jq -r '.[] | select(.name | startswith("ovs_")) | select(.run_cnt > 0) |
	"prog \(.name) \(.run_cnt) runs \(.run_time_ns / .run_cnt | floor) ns/run"' | tee -a "$out/results.txt"
sysctl -q kernel.bpf_stats_enabled=0
agent_stop

ovs-appctl -t "$d/ovs-vswitchd.$(cat "$d/vswitchd.pid").ctl" exit --cleanup
kill "$(cat "$d/ovsdb.pid")"
ip netns del bench1
ip netns del bench2
echo done >>"$out/results.txt"

#!/usr/bin/env bash
# Datapath benchmark: builds its own namespace topology and measures, in one
# run, raw underlay, a hand-built kernel VXLAN bridge (the ceiling), meshnet
# fastdp, meshnet sleeve (--no-fastdp) and meshnet encrypted sleeve
# (--password): iperf3 single-stream throughput (median of several runs), ping
# RTT, and the routers' CPU time during the iperf runs, each as a ratio of the
# hand-built VXLAN.
#
# Usage (root): benches/datapath/bench.sh
#   RUNS=5 SECS=5 PINGS=50 benches/datapath/bench.sh   # the defaults
#   MESHNET_BIN=path/to/meshnet ...                    # skip the release build
#
# Topology, one separate copy per configuration (all built first, so none
# inherits another's state and the iperf runs can be interleaved):
#   [c1] --veth MTU 1376-- [h1] ==veth underlay MTU 1500, 192.0.2.0/24== [h2] --veth-- [c2]
# Containers c1/c2 are 10.2.1.1/24 and 10.2.1.2/24. The iperf runs go round
# robin over the configurations (run 1 of each, then run 2 of each, ...), so a
# change in the load of a shared machine hits every configuration alike.
# Everything lives in namespaces named mnb-<pid>-<config>-*; an EXIT/INT/TERM
# trap kills what runs in them and deletes them, so Ctrl-C or a failure leaves
# nothing behind.
set -euo pipefail

RUNS=${RUNS:-5}
SECS=${SECS:-5}
PINGS=${PINGS:-50}
PREFIX="mnb-$$"
UNDERLAY_MTU=1500
CONTAINER_MTU=1376
H1_ADDR=192.0.2.1
H2_ADDR=192.0.2.2
C1_ADDR=10.2.1.1
C2_ADDR=10.2.1.2
# A port other than meshnet's 6784, so the hand-built VXLAN is clearly ours.
HAND_VXLAN_PORT=4789
PASSWORD="benchmark-password"

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/meshnet-bench-XXXXXX")
RESULTS="$WORK/results"
NAMESPACES=()

die() { echo "bench: $*" >&2; exit 1; }

remove_namespaces() {
    local ns pid
    for ns in "${NAMESPACES[@]}"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill -9 "$pid" 2>/dev/null || true
        done
    done
    # Processes must be gone before their namespace can really disappear.
    sleep 0.2
    for ns in "${NAMESPACES[@]}"; do
        ip netns del "$ns" 2>/dev/null || true
    done
    NAMESPACES=()
}

cleanup() {
    remove_namespaces
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" = 0 ] || die "run as root (it creates network namespaces)"
for tool in ip iperf3 ping awk; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done

if [ -z "${MESHNET_BIN:-}" ]; then
    echo "building meshnet (release) ..." >&2
    (cd "$ROOT" && cargo build --release -p meshnet --quiet)
    MESHNET_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/meshnet"
fi
[ -x "$MESHNET_BIN" ] || die "no meshnet binary at $MESHNET_BIN"

# The configuration being built or measured; namespaces and dirs are per config.
CFG=none
ns() { echo "$PREFIX-$CFG-$1"; }
in_ns() { local n=$1; shift; ip netns exec "$(ns "$n")" "$@"; }

new_ns() {
    ip netns add "$(ns "$1")"
    NAMESPACES+=("$(ns "$1")")
    ip -n "$(ns "$1")" link set lo up
}

# h1, h2, c1, c2 of configuration $CFG with the underlay between h1 and h2; containers not yet wired.
topology() {
    for n in h1 h2 c1 c2; do new_ns "$n"; done
    ip -n "$(ns h1)" link add uplink mtu $UNDERLAY_MTU type veth peer name uplink netns "$(ns h2)" mtu $UNDERLAY_MTU
    ip -n "$(ns h1)" addr add $H1_ADDR/24 dev uplink
    ip -n "$(ns h2)" addr add $H2_ADDR/24 dev uplink
    ip -n "$(ns h1)" link set uplink up
    ip -n "$(ns h2)" link set uplink up
}

# The hand-built ceiling: bridge + VXLAN (nolearning, all-zeros FDB entry to
# the other host) in each host, a veth into each container.
hand_vxlan() {
    local h c me other ip
    for pair in "h1 c1 $H1_ADDR $H2_ADDR $C1_ADDR" "h2 c2 $H2_ADDR $H1_ADDR $C2_ADDR"; do
        read -r h c me other ip <<<"$pair"
        local n; n=$(ns "$h")
        ip -n "$n" link add br0 mtu $CONTAINER_MTU type bridge
        ip -n "$n" link add vx0 type vxlan id 42 dstport $HAND_VXLAN_PORT local "$me" dev uplink nolearning
        ip -n "$n" link set vx0 mtu $CONTAINER_MTU master br0 up
        bridge -n "$n" fdb append 00:00:00:00:00:00 dev vx0 dst "$other"
        ip -n "$n" link add vc type veth peer name ethwe netns "$(ns "$c")"
        ip -n "$n" link set vc mtu $CONTAINER_MTU master br0 up
        ip -n "$n" link set br0 up
        ip -n "$(ns "$c")" link set ethwe mtu $CONTAINER_MTU
        ip -n "$(ns "$c")" addr add "$ip/24" dev ethwe
        ip -n "$(ns "$c")" link set ethwe up
    done
}

meshnet_in() {
    local h=$1; shift
    mkdir -p "$WORK/$CFG/$h/run" "$WORK/$CFG/$h/data"
    MESHNET_RUN_DIR="$WORK/$CFG/$h/run" MESHNET_DATA_DIR="$WORK/$CFG/$h/data" \
        MESHNET_HTTP_ADDR=127.0.0.1:6784 in_ns "$h" "$MESHNET_BIN" "$@"
}

# Launches meshnet on both hosts with the given flags, waits until the
# connection shows overlay $1, attaches the containers.
meshnet_mesh() {
    local overlay=$1; shift
    meshnet_in h1 launch --nickname h1 "$@" >/dev/null
    meshnet_in h2 launch --nickname h2 "$@" $H1_ADDR:6783 >/dev/null
    local i
    for i in $(seq 1 120); do
        if meshnet_in h1 status connections 2>/dev/null | grep -q "established.* $overlay " &&
            meshnet_in h2 status connections 2>/dev/null | grep -q "established.* $overlay "; then
            break
        fi
        [ "$i" = 120 ] && { meshnet_in h1 status connections >&2; die "no $overlay connection after 60 s"; }
        sleep 0.5
    done
    meshnet_in h1 attach $C1_ADDR/24 "netns:$(ns c1)" >/dev/null
    meshnet_in h2 attach $C2_ADDR/24 "netns:$(ns c2)" >/dev/null
}

router_pids() {
    local h
    for h in "$@"; do cat "$WORK/$CFG/$h/run/router.pid"; done
}

# utime+stime (clock ticks) summed over pids.
cpu_ticks() {
    local total=0 pid t
    for pid in "$@"; do
        # Fields after the `(comm)`: state is 1st, utime 12th, stime 13th.
        t=$(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')
        total=$((total + t))
    done
    echo "$total"
}

median() { sort -g | awk '{a[NR]=$1} END{ if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }

# Configurations: name, client ns, server ns, server address, router hosts.
CONFIGS=(
    "raw-underlay h1 h2 $H2_ADDR"
    "hand-vxlan c1 c2 $C2_ADDR"
    "meshnet-fastdp c1 c2 $C2_ADDR h1 h2"
    "meshnet-sleeve c1 c2 $C2_ADDR h1 h2"
    "meshnet-encrypted c1 c2 $C2_ADDR h1 h2"
)

echo "building the five topologies ..." >&2
CFG=raw-underlay topology
CFG=hand-vxlan topology
CFG=hand-vxlan hand_vxlan
CFG=meshnet-fastdp topology
CFG=meshnet-fastdp meshnet_mesh fastdp
CFG=meshnet-sleeve topology
CFG=meshnet-sleeve meshnet_mesh sleeve --no-fastdp
CFG=meshnet-encrypted topology
CFG=meshnet-encrypted meshnet_mesh sleeve --password "$PASSWORD"

declare -A RTT TPUT TICKS SPENT
HZ=$(getconf CLK_TCK)
for cfg in "${CONFIGS[@]}"; do
    read -r name cns sns addr _ <<<"$cfg"
    CFG=$name
    in_ns "$cns" ping -c 3 -W 2 "$addr" >/dev/null || die "$name: $addr does not answer pings"
    RTT[$name]=$(in_ns "$cns" ping -q -n -c "$PINGS" -i 0.02 "$addr" | awk -F/ '/^rtt/{print $5}')
    in_ns "$sns" iperf3 -s -B "$addr" >"$WORK/iperf3-$name.log" 2>&1 &
    TPUT[$name]=""
    TICKS[$name]=0
    SPENT[$name]=0
done
sleep 0.5

for r in $(seq 1 "$RUNS"); do
    echo "iperf round $r of $RUNS ..." >&2
    for cfg in "${CONFIGS[@]}"; do
        read -r name cns sns addr hosts <<<"$cfg"
        CFG=$name
        pids=()
        for h in $hosts; do pids+=("$(router_pids "$h")"); done
        t0=$( [ ${#pids[@]} -gt 0 ] && cpu_ticks "${pids[@]}" || echo 0 )
        start=$(date +%s.%N)
        mbps=$(in_ns "$cns" iperf3 -c "$addr" -t "$SECS" -f m |
            awk '/receiver/{for (i = 1; i <= NF; i++) if ($i == "Mbits/sec") print $(i-1)}')
        end=$(date +%s.%N)
        t1=$( [ ${#pids[@]} -gt 0 ] && cpu_ticks "${pids[@]}" || echo 0 )
        [ -n "$mbps" ] || die "$name: iperf3 run $r gave no result"
        TPUT[$name]="${TPUT[$name]} $mbps"
        TICKS[$name]=$((TICKS[$name] + t1 - t0))
        SPENT[$name]=$(awk -v a="${SPENT[$name]}" -v s="$start" -v e="$end" 'BEGIN{print a + e - s}')
    done
done

: >"$RESULTS"
for cfg in "${CONFIGS[@]}"; do
    read -r name _ _ _ hosts <<<"$cfg"
    mbps=$(printf '%s\n' ${TPUT[$name]} | median)
    cpu=$(awk -v d="${TICKS[$name]}" -v hz="$HZ" -v t="${SPENT[$name]}" 'BEGIN{printf "%.0f", 100 * d / hz / t}')
    [ -n "$hosts" ] || cpu="-"
    echo "$name: $mbps Mbit/s (runs:${TPUT[$name]}), RTT ${RTT[$name]} ms, router CPU $cpu%" >&2
    echo "$name $mbps ${RTT[$name]} $cpu" >>"$RESULTS"
done

read -r _ VX_MBPS VX_RTT _ < <(grep '^hand-vxlan ' "$RESULTS")
echo
echo "Datapath benchmark: $(nproc) vCPU, Linux $(uname -r), iperf3 single stream (median of $RUNS x ${SECS}s), ping avg of $PINGS"
echo "underlay veth MTU $UNDERLAY_MTU, containers MTU $CONTAINER_MTU; ratios (x) are against the hand-built VXLAN"
echo "router CPU: both routers' user+sys time during the iperf runs, % of one core (the kernel-only rows have no router)"
printf '%-18s %8s %6s %8s %6s %11s\n' configuration "Mbit/s" "x" "RTT ms" "x" "router CPU%"
while read -r name mbps rtt cpu; do
    awk -v n="$name" -v m="$mbps" -v r="$rtt" -v c="$cpu" -v vm="$VX_MBPS" -v vr="$VX_RTT" 'BEGIN{
        printf "%-18s %8.0f %6.2f %8.3f %6.2f %11s\n", n, m, m / vm, r, r / vr, c
    }'
done <"$RESULTS"

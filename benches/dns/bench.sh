#!/usr/bin/env bash
# DNS benchmark: queries per second that meshnet's DNS server answers from
# its name table, side by side with the same queries to a local dnsmasq
# holding the same names (dnsperf, Debian's package, drives both).
#
# Usage (root): benches/dns/bench.sh
#   NAMES=50 SECS=10 CLIENTS=4 benches/dns/bench.sh   # the defaults
#   MESHNET_BIN=path/to/meshnet ...                    # skip the release build
#
# Everything runs in one network namespace mnbdns-<pid> (loopback only):
# meshnet on 127.0.0.1:53 (--no-fastdp, no IPAM, no peers), dnsmasq on
# 127.0.0.2:53 with --no-resolv --no-hosts and one --host-record per name.
# The query file asks A for every name in turn. An EXIT trap kills both and
# deletes the namespace.
set -euo pipefail

NAMES=${NAMES:-50}
SECS=${SECS:-10}
CLIENTS=${CLIENTS:-4}
NS="mnbdns-$$"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/meshnet-dnsbench-XXXXXX")

die() { echo "benches/dns/bench.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (it creates a network namespace)"
command -v dnsperf >/dev/null || die "dnsperf is missing: apt-get install dnsperf"
command -v dnsmasq >/dev/null || die "dnsmasq is missing: apt-get install dnsmasq-base"
if [ -z "${MESHNET_BIN:-}" ]; then
    (cd "$ROOT" && cargo build --release -q -p meshnet --bin meshnet)
    MESHNET_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/meshnet"
fi
[ -x "$MESHNET_BIN" ] || die "no meshnet binary at $MESHNET_BIN"

cleanup() {
    if [ -n "${DNSMASQ_PID:-}" ]; then kill "$DNSMASQ_PID" 2>/dev/null || true; fi
    if ip netns pids "$NS" >/dev/null 2>&1; then
        ip netns pids "$NS" | xargs -r kill 2>/dev/null || true
        sleep 0.5
        ip netns pids "$NS" | xargs -r kill -9 2>/dev/null || true
        ip netns del "$NS" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" addr add 127.0.0.2/8 dev lo 2>/dev/null || true

mn() {
    MESHNET_RUN_DIR="$WORK/run" MESHNET_DATA_DIR="$WORK/data" MESHNET_HTTP_ADDR=127.0.0.1:6784 \
        ip netns exec "$NS" "$MESHNET_BIN" "$@"
}
printf '# no upstream\n' > "$WORK/resolv.conf"
mn launch --no-fastdp --ipalloc-range= --status-addr= --proxy=false --plugin=false \
    --dns-listen-address=127.0.0.1:53 --resolv-conf="$WORK/resolv.conf" >/dev/null

records=()
: > "$WORK/queries"
for i in $(seq 1 "$NAMES"); do
    addr="10.32.$((i / 250)).$((i % 250 + 1))"
    mn dns-add "$addr" -h "svc$i"
    records+=("--host-record=svc$i.weave.local,$addr")
    echo "svc$i.weave.local A" >> "$WORK/queries"
done
ip netns exec "$NS" dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces \
    --listen-address=127.0.0.2 --port=53 --pid-file= --cache-size=10000 "${records[@]}" &
DNSMASQ_PID=$!
sleep 1

run() {
    ip netns exec "$NS" dnsperf -q 1000 -c "$CLIENTS" -T "$CLIENTS" -s "$1" -d "$WORK/queries" -l "$SECS" \
        | awk '/Queries per second/ {print $4} /Queries lost/ {lost=$3} END {}'
}
check() {
    local got
    got=$(ip netns exec "$NS" dig +short @"$1" svc1.weave.local)
    [ "$got" = "10.32.0.2" ] || die "$2 answered svc1.weave.local with '$got'"
}
check 127.0.0.1 meshnet
check 127.0.0.2 dnsmasq

# Interleaved, twice each, so load drift on a shared machine hits both.
declare -a mq dq
for round in 1 2; do
    mq+=("$(run 127.0.0.1)")
    dq+=("$(run 127.0.0.2)")
done
best() { printf '%s\n' "$@" | sort -g | tail -1; }
m=$(best "${mq[@]}")
d=$(best "${dq[@]}")
echo "names=$NAMES secs=$SECS clients=$CLIENTS"
echo "meshnet  qps: ${mq[*]} (best $m)"
echo "dnsmasq  qps: ${dq[*]} (best $d)"
awk -v m="$m" -v d="$d" 'BEGIN { printf "ratio meshnet/dnsmasq: %.2f\n", m / d }'
mn stop >/dev/null 2>&1 || true

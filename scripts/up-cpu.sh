#!/usr/bin/env bash
# Cores that `bimride up` uses at its default demo load (80 drivers, 2 bookings a second):
# the BimRide process, and with --brokers the Apache Kafka nodes of scripts/kafka.sh's
# cluster beside it. It starts `up`, lets it warm up, then reads the processes' CPU time from
# /proc over a window, in three windows, and prints each and their median.
#
#   scripts/up-cpu.sh [--brokers BOOTSTRAP] [--warmup SECS] [--window SECS] [--binary PATH]
#
# Build first: cargo build --release -p bimride. Extra arguments after `--` go to `bimride up`.
set -euo pipefail
cd "$(dirname "$0")/.."

brokers="" warmup=40 window=30 binary=target/release/bimride
while [[ $# -gt 0 ]]; do
    case "$1" in
        --brokers) brokers="$2"; shift 2 ;;
        --warmup) warmup="$2"; shift 2 ;;
        --window) window="$2"; shift 2 ;;
        --binary) binary="$2"; shift 2 ;;
        --) shift; break ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
[[ -x "$binary" ]] || { echo "no $binary: cargo build --release -p bimride" >&2; exit 1; }

data="$(mktemp -d -t bimride-up-cpu-XXXXXX)"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
run=(up --data-dir "$data" --http "127.0.0.1:$port")
if [[ -n "$brokers" ]]; then
    # A namespace of its own, so that an earlier run's backlog is not read again.
    ns="cpu$(date +%s)"
    run+=(--brokers "$brokers" --namespace "$ns" --registry-topic "$ns-schemas")
fi
"$binary" "${run[@]}" "$@" >"$data/up.log" 2>&1 &
up=$!
trap 'kill $up 2>/dev/null; wait $up 2>/dev/null; rm -rf "$data"' EXIT

broker_pids=()
if [[ -n "$brokers" ]]; then
    for node in 1 2 3; do
        broker_pids+=("$(scripts/kafka.sh pid "$node")")
    done
fi

ticks() { # total CPU ticks of the given processes
    local sum=0
    for pid in "$@"; do
        read -r -a stat <"/proc/$pid/stat"
        sum=$((sum + stat[13] + stat[14]))
    done
    echo "$sum"
}

sleep "$warmup"
kill -0 "$up" 2>/dev/null || { echo "bimride up stopped:" >&2; tail -20 "$data/up.log" >&2; exit 1; }
hz="$(getconf CLK_TCK)"
ours=() theirs=()
for trial in 1 2 3; do
    a="$(ticks "$up")"; b="$(ticks "${broker_pids[@]}")"
    sleep "$window"
    c="$(ticks "$up")"; d="$(ticks "${broker_pids[@]}")"
    ours+=("$(python3 -c "print(round(($c - $a) / $hz / $window, 3))")")
    theirs+=("$(python3 -c "print(round(($d - $b) / $hz / $window, 3))")")
    echo "window $trial: bimride ${ours[-1]} cores${brokers:+, brokers ${theirs[-1]} cores}"
done
median() { printf '%s\n' "$@" | sort -n | sed -n 2p; }
echo "median over ${window} s windows: bimride $(median "${ours[@]}") cores${brokers:+, brokers $(median "${theirs[@]}") cores}"

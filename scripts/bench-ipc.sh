#!/usr/bin/env bash
# IPC round-trip latency (p50/p99 over 10 000 Status requests on one
# connection) and the idle RSS of a release lanspreadd on the sample
# library. Prints one JSON object. Leaves nothing running.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --locked --release --bins --example ipc_bench
work=$(mktemp -d /tmp/lanspread-bench.XXXXXX)
daemon_pid=
cleanup() {
    [[ -n "$daemon_pid" ]] && kill -TERM "$daemon_pid" 2>/dev/null && wait "$daemon_pid" || true
    rm -rf "$work"
}
trap cleanup EXIT
scripts/sample-library.sh "$work/games"
socket="$work/lanspreadd.sock"
target/release/lanspreadd --game-dir "$work/games" --state-dir "$work/state" --socket "$socket" \
    2> "$work/log" &
daemon_pid=$!
for _ in $(seq 100); do [[ -S "$socket" ]] && break; sleep 0.1; done
[[ -S "$socket" ]] || { cat "$work/log"; exit 1; }
sleep 2
rss_start_kib=$(awk '/^VmRSS/ {print $2}' "/proc/$daemon_pid/status")
latency=$(target/release/examples/ipc_bench "$socket" 10000)
cpu_before=$(awk '{print $14 + $15}' "/proc/$daemon_pid/stat")
sleep 10
cpu_after=$(awk '{print $14 + $15}' "/proc/$daemon_pid/stat")
rss_idle_kib=$(awk '/^VmRSS/ {print $2}' "/proc/$daemon_pid/status")
ticks=$(getconf CLK_TCK)
idle_cpu_pct=$(awk -v a="$cpu_before" -v b="$cpu_after" -v t="$ticks" 'BEGIN {printf "%.2f", (b - a) / t / 10 * 100}')
echo "{\"ipc\":$latency,\"rss_at_start_kib\":$rss_start_kib,\"rss_idle_after_bench_kib\":$rss_idle_kib,\"idle_cpu_percent_10s\":$idle_cpu_pct}"

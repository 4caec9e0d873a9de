#!/usr/bin/env bash
# The README's first command: builds both binaries, starts lanspreadd on a
# sample library in a scratch directory, drives it with lanspreadctl, and
# stops it again (SIGTERM, by pid). Leaves nothing running.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --locked --bins
bin=target/debug
work=$(mktemp -d /tmp/lanspread-demo.XXXXXX)
daemon_pid=
cleanup() {
    if [[ -n "$daemon_pid" ]] && kill -0 "$daemon_pid" 2>/dev/null; then
        kill -TERM "$daemon_pid"
        wait "$daemon_pid" || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

scripts/sample-library.sh "$work/games"
socket="$work/lanspreadd.sock"
"$bin/lanspreadd" --game-dir "$work/games" --state-dir "$work/state" --socket "$socket" \
    --name demo 2> "$work/lanspreadd.log" &
daemon_pid=$!
for _ in $(seq 100); do
    [[ -S "$socket" ]] && break
    sleep 0.1
done
[[ -S "$socket" ]] || { cat "$work/lanspreadd.log"; echo "lanspreadd did not start" >&2; exit 1; }

run() { echo; echo "\$ lanspreadctl $*"; "$bin/lanspreadctl" --socket "$socket" "$@"; }
run status
run games
run --json games
run peers
echo
echo "(homebrew-mod is on disk but not in the catalog, so it is not listed)"
kill -TERM "$daemon_pid"
wait "$daemon_pid"
daemon_pid=
echo
echo "daemon log:"
cat "$work/lanspreadd.log"

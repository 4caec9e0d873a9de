#!/usr/bin/env bash
# The README's first command (root): builds both binaries, starts a network
# lab of two hosts, seeds the sample library on one, and on the other lets
# lanspreadctl find the game, download it (with progress) and install it,
# then lists the installed files. Everything it started is ended (by pid,
# through the lab) when it exits.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) == 0 ]] || { echo "the demo builds a network lab and needs root" >&2; exit 1; }
cargo build --quiet --locked --bins
bin=$PWD/target/debug
work=$(mktemp -d /tmp/lanspread-demo.XXXXXX)
cleanup() {
    scripts/lab.sh down --id demo > /dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
scripts/lab.sh down --id demo > /dev/null 2>&1 || true
scripts/lab.sh up 2 --id demo

scripts/sample-library.sh "$work/seed-games"
mkdir -p "$work/player-games"
start() { # host name game-dir
    scripts/lab.sh run "$1" --id demo "$bin/lanspreadd" --name "$2" --game-dir "$3" \
        --state-dir "$work/$2-state" --socket "$work/$2.sock" 2> "$work/$2.log" &
}
start h1 seed "$work/seed-games"
start h2 player "$work/player-games"
for sock in seed player; do
    for _ in $(seq 100); do [[ -S $work/$sock.sock ]] && break; sleep 0.1; done
    [[ -S $work/$sock.sock ]] || { cat "$work/$sock.log"; echo "lanspreadd ($sock) did not start" >&2; exit 1; }
done
ctl() { echo; echo "\$ lanspreadctl $*"; "$bin/lanspreadctl" --socket "$work/player.sock" "$@"; }
echo "waiting for the player to find the seed over mDNS..."
for _ in $(seq 100); do
    [[ $("$bin/lanspreadctl" --socket "$work/player.sock" --json status | python3 -c 'import json,sys; print(json.load(sys.stdin)["peer_count"])') -ge 1 ]] && break
    sleep 0.2
done
ctl peers
ctl games
ctl get openarena
ctl download openarena
echo
echo "waiting for the automatic install..."
for _ in $(seq 150); do
    "$bin/lanspreadctl" --socket "$work/player.sock" --json games \
        | python3 -c 'import json,sys; sys.exit(0 if any(g["id"]=="openarena" and g["installed"] for g in json.load(sys.stdin)) else 1)' && break
    sleep 0.2
done
ctl games
echo
echo "installed files (player's openarena/local):"
(cd "$work/player-games/openarena/local" && find . -type f | sort | sed 's|^\./|  |')

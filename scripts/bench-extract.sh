#!/usr/bin/env bash
# Extraction throughput: lanspread's unpacker (release build) against
# `bsdtar -xf` on the same zip (over 200 MiB, 256 MiB extracted), built here, in the same run, three
# rounds each (median reported). The unpacker also fsyncs every file it
# writes (an install must be durable); bsdtar does not.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v bsdtar > /dev/null || { echo "bsdtar missing (apt-get install libarchive-tools)" >&2; exit 1; }
cargo build --quiet --locked --release --example extract_bench
work=$(mktemp -d /tmp/lanspread-extract.XXXXXX)
trap 'rm -rf "$work"' EXIT
python3 - "$work/game.zip" <<'PY'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as z:
    for i in range(16):
        # Mostly incompressible with some compressible data, like game data:
    # the archive itself is over 200 MiB.
        z.writestr(f"data/pak{i:02}.pk3", os.urandom(13 << 20) + bytes(range(256)) * (3 << 12))
PY
ls -l "$work/game.zip" | awk '{print "archive bytes: " $5}'
ours=() theirs=()
for round in 1 2 3; do
    rm -rf "$work/a" "$work/b"; mkdir -p "$work/a" "$work/b"; sync
    ours+=("$(target/release/examples/extract_bench "$work/game.zip" "$work/a" | python3 -c 'import json,sys; print(json.load(sys.stdin)["seconds"])')")
    sync
    start=$(date +%s.%N); bsdtar -xf "$work/game.zip" -C "$work/b"; sync; end=$(date +%s.%N)
    theirs+=("$(python3 -c "print(round($end - $start, 3))")")
done
python3 - "$(du -sb "$work/a" | cut -f1)" "${ours[@]}" "${theirs[@]}" <<'PY'
import json, statistics, sys
size = int(sys.argv[1]); ours = list(map(float, sys.argv[2:5])); theirs = list(map(float, sys.argv[5:8]))
mib = size / (1 << 20)
print(json.dumps({
    "extracted_mib": round(mib, 1),
    "lanspread_s": {"median": statistics.median(ours), "min": min(ours), "max": max(ours)},
    "bsdtar_s": {"median": statistics.median(theirs), "min": min(theirs), "max": max(theirs)},
    "lanspread_mib_per_s": round(mib / statistics.median(ours), 1),
    "bsdtar_mib_per_s": round(mib / statistics.median(theirs), 1),
}))
PY

#!/usr/bin/env bash
# Creates the embedded sample game directory in "$1": OpenArena as a real
# archive (so it installs), Quake III downloaded but not installed, a game
# without version.ini (a partial download), and one root the bundled
# catalog does not know (left out of the library).
set -euo pipefail
dir=${1:?usage: sample-library.sh DIR}
mkdir -p "$dir"
cd "$dir"
mkdir -p openarena quake3/baseq3 teeworlds homebrew-mod
python3 - openarena/openarena.zip <<'PY'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("openarena.sh", "#!/bin/sh\necho 'fragging'\n")
    z.writestr("baseoa/pak0.pk3", os.urandom(6 << 20))
    z.writestr("baseoa/maps/dm1.bsp", b"map" * 100000)
    z.writestr("README.txt", "OpenArena sample for the lanspread demo\n")
PY
printf 'version=0.8.8\n' > openarena/version.ini
printf '[game]\nversion=1.32c\n' > quake3/version.ini
head -c 1200000 /dev/urandom > quake3/baseq3/pak0.pk3
head -c 1000 /dev/urandom > teeworlds/partial.eti
printf '1.0\n' > homebrew-mod/version.ini

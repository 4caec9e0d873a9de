#!/usr/bin/env bash
# Creates the embedded sample game directory in "$1": two cataloged games
# (one installed), a game without version.ini, and one root the bundled
# catalog does not know (left out of the library).
set -euo pipefail
dir=${1:?usage: sample-library.sh DIR}
mkdir -p "$dir"
cd "$dir"
mkdir -p openarena/maps openarena/local quake3/baseq3 teeworlds homebrew-mod
printf 'version=0.8.8\n' > openarena/version.ini
head -c 3000000 /dev/urandom > openarena/pak0.eti
head -c 700000 /dev/urandom > openarena/maps/dm1.eti
printf '#!/bin/sh\necho fragging\n' > openarena/local/openarena.sh
printf '[game]\nversion=1.32c\n' > quake3/version.ini
head -c 1200000 /dev/urandom > quake3/baseq3/pak0.pk3
head -c 1000 /dev/urandom > teeworlds/partial.eti
printf '1.0\n' > homebrew-mod/version.ini

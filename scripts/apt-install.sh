#!/usr/bin/env bash
# Installs Debian packages that are missing, without letting their scripts
# start services: avahi-daemon may only ever run inside the network lab's
# namespaces, and nginx only inside a lab host during `just bench`.
#
#   scripts/apt-install.sh PACKAGE...
set -euo pipefail
missing=()
for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2> /dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
((${#missing[@]})) || exit 0
[[ $(id -u) == 0 ]] || { echo "missing packages: ${missing[*]} (run as root, or apt-get install them)" >&2; exit 1; }

export DEBIAN_FRONTEND=noninteractive
policy=/usr/sbin/policy-rc.d
created_policy=
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod +x "$policy"
    created_policy=1
fi
log=$(mktemp /tmp/lanspread-apt.XXXXXX)
cleanup() { [[ -n $created_policy ]] && rm -f "$policy"; rm -f "$log"; return 0; }
trap cleanup EXIT
echo "installing: ${missing[*]}" >&2
{ apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } > "$log" 2>&1 \
    || { cat "$log" >&2; exit 1; }

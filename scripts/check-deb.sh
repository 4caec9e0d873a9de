#!/usr/bin/env bash
# Builds the .deb (`just deb`), unpacks it into a scratch root (dpkg -x)
# and checks its contents: every file in place, binaries that run, man
# pages and completions that agree with --help, conffiles, and the systemd
# unit (systemd-analyze verify, exposure score at most 2.0).
set -euo pipefail
cd "$(dirname "$0")/.."
just deb > /dev/null
deb=$(ls -t target/debian/lanspread_*.deb | head -1)
root=$(mktemp -d /tmp/lanspread-deb.XXXXXX)
trap 'rm -rf "$root"' EXIT
dpkg -x "$deb" "$root"
failures=0
passed=0
ok() { passed=$((passed + 1)); }
fail() { echo "deb check FAILED: $*" >&2; failures=$((failures + 1)); }

for file in usr/bin/lanspreadd usr/bin/lanspreadctl \
    usr/lib/systemd/system/lanspreadd.service usr/lib/sysusers.d/lanspread.conf \
    usr/lib/tmpfiles.d/lanspread.conf usr/lib/sysctl.d/60-lanspread.conf \
    etc/lanspread/lanspreadd.toml \
    usr/share/bash-completion/completions/lanspreadctl \
    usr/share/zsh/vendor-completions/_lanspreadctl \
    usr/share/fish/vendor_completions.d/lanspreadctl.fish \
    usr/share/man/man1/lanspreadctl.1.gz usr/share/man/man8/lanspreadd.8.gz \
    usr/share/doc/lanspread/README.md; do
    if [[ -s $root/$file ]]; then ok; else fail "missing $file"; fi
done
for bin in lanspreadd lanspreadctl; do
    if [[ -x $root/usr/bin/$bin ]] && "$root/usr/bin/$bin" --version > /dev/null; then ok; else fail "$bin does not run"; fi
done

# Every subcommand of `lanspreadctl --help` is in the man page and the completions.
commands=$("$root/usr/bin/lanspreadctl" --help | awk '/^Commands:/ {on=1; next} /^$/ {on=0} on && /^  [a-z]/ {print $1}' | grep -v '^help$')
# roff escapes hyphens; compare plain text.
man1=$(zcat "$root/usr/share/man/man1/lanspreadctl.1.gz" | sed 's/\\-/-/g')
man8=$(zcat "$root/usr/share/man/man8/lanspreadd.8.gz" | sed 's/\\-/-/g')
[[ -n $commands ]] || fail "no subcommands found in lanspreadctl --help"
for command in $commands; do
    grep -q -- "$command" <<< "$man1" && ok || fail "man page lacks $command"
    grep -q -- "$command" "$root/usr/share/bash-completion/completions/lanspreadctl" && ok || fail "bash completion lacks $command"
    "$root/usr/bin/lanspreadctl" "$command" --help > /dev/null 2>&1 && ok || fail "lanspreadctl $command --help fails"
done
# Every flag of `lanspreadd --help` is in its man page.
for flag in $("$root/usr/bin/lanspreadd" --help | grep -oE -- '--[a-z][a-z-]+' | sort -u); do
    grep -q -- "$flag" <<< "$man8" && ok || fail "lanspreadd.8 lacks $flag"
done

# The settings file is a conffile.
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles 2> /dev/null | grep -qx /etc/lanspread/lanspreadd.toml \
    && ok || fail "/etc/lanspread/lanspreadd.toml is not a conffile"

# The unit: verify (its ExecStart pointed at the unpacked binary) and score.
command -v systemd-analyze > /dev/null || fail "systemd-analyze missing (apt-get install systemd)"
unit_dir=$(mktemp -d /tmp/lanspread-unit.XXXXXX)
sed "s|^ExecStart=/usr/bin/lanspreadd|ExecStart=$root/usr/bin/lanspreadd|" \
    "$root/usr/lib/systemd/system/lanspreadd.service" > "$unit_dir/lanspreadd.service"
systemd-analyze verify --man=no "$unit_dir/lanspreadd.service" && ok || fail "systemd-analyze verify"
score=$(systemd-analyze security --offline=true --root="$root" lanspreadd.service 2>&1 \
    | sed -n 's/.*Overall exposure level for lanspreadd.service: \([0-9.]*\).*/\1/p')
rm -rf "$unit_dir"
if [[ -n $score ]] && awk -v s="$score" 'BEGIN {exit !(s <= 2.0)}'; then ok; else fail "exposure score ${score:-unknown} above 2.0"; fi
# lintian: no errors and no warnings (it names each problem).
command -v lintian > /dev/null || fail "lintian missing (scripts/apt-install.sh lintian)"
if lintian_out=$(lintian --allow-root --fail-on error,warning "$deb" 2>&1); then ok; else fail "lintian: $lintian_out"; fi
[[ -z $lintian_out ]] || echo "$lintian_out" >&2
echo "deb check ($deb, exposure $score): $passed passed, $failures failed"
[[ $failures == 0 ]]

#!/usr/bin/env bash
# Fuzzes every decoder of outside bytes for SECONDS each (cargo-fuzz, with
# the stable toolchain through RUSTC_BOOTSTRAP). Each run first replays
# fuzz/regressions/TARGET (inputs that once crashed, and hand-made edge
# cases), then explores from fuzz/corpus/TARGET. A crash stops the run: its
# input is in fuzz/artifacts/TARGET/; fix the bug, then copy the input into
# fuzz/regressions/TARGET/ so every later run replays it.
#
#   scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-60}
cargo fuzz --version > /dev/null 2>&1 || { echo "cargo-fuzz is missing (cargo install --locked cargo-fuzz)" >&2; exit 1; }
targets=(wire_messages ipc_lines versions version_ini catalog intent_log library_index)
RUSTC_BOOTSTRAP=1 cargo fuzz build
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "regressions/$target"
    echo "fuzz: $target for ${seconds}s"
    log=$(mktemp /tmp/lanspread-fuzz.XXXXXX)
    status=0
    RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "corpus/$target" "regressions/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 > "$log" 2>&1 || status=$?
    grep -E "stat::number_of_executed_units|SUMMARY|panicked|Test unit written" "$log" || true
    if ((status != 0)); then
        tail -40 "$log" >&2
        rm -f "$log"
        echo "fuzz: $target FAILED (input in fuzz/artifacts/$target/)" >&2
        exit 1
    fi
    rm -f "$log"
done
echo "fuzz: ${#targets[@]} targets, no crashes"

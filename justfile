# Every routine task of the workspace. `just --list` shows them.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Run the whole test gate (what CI runs).
default: test

# Format the code.
fmt:
    cargo fmt --all

# Check formatting without changing files.
fmt-check:
    cargo fmt --all -- --check

# Lint; warnings are errors.
clippy:
    cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

# Formatting, lints and every test of the workspace. Some tests need root
# (a read-only mount, running the client as another user): CI runs as root.
test: fmt-check clippy
    cargo test --workspace --all-features --locked

# Start a daemon on a sample library and drive it with lanspreadctl.
demo:
    scripts/demo.sh

# IPC round-trip latency (p50/p99 over 10 000 requests) and idle RSS of a release daemon.
bench-ipc:
    scripts/bench-ipc.sh

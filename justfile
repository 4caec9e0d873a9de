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

# Tests that need root (the network lab, mounts, running the client as
# another user) are #[ignore]d with that reason for a plain `cargo test`;
# this recipe runs them all (CI runs it as root).
# Formatting, lints, every test (root and lab tiers included), the .deb check.
test: fmt-check clippy
    cargo test --workspace --all-features --locked -- --include-ignored
    scripts/check-deb.sh

# Build the .deb and check its contents, man pages, completions and unit.
test-deb:
    scripts/check-deb.sh

# Build the network lab: N hosts (h1..hN, 10.77.0.1..N) with their own Avahi.
lab-up N="2":
    scripts/lab.sh up {{N}}

# Run a command inside a lab host, e.g. `just lab-run h1 target/debug/lanspreadctl peers`.
lab-run HOST +CMD:
    scripts/lab.sh run {{HOST}} {{CMD}}

# Cut or restore a lab host's link.
lab-cut HOST:
    scripts/lab.sh cut {{HOST}}

lab-restore HOST:
    scripts/lab.sh restore {{HOST}}

# Stop everything the lab started and remove it.
lab-down:
    scripts/lab.sh down

# Build the .deb (cargo-deb): binaries, unit, sysusers/tmpfiles, settings
# file, completions and man pages. Prints the package path.
deb:
    cargo build --locked --release --bins
    target/release/lanspreadctl generate-assets target/release/assets
    target/release/lanspreadd --generate-man target/release/assets
    gzip -9nf target/release/assets/lanspreadctl.1 target/release/assets/lanspreadd.8
    cargo deb --locked --no-build --strip -p lanspreadd

# Fuzz every decoder of outside bytes for SECONDS each, after replaying
# fuzz/regressions/ (needs cargo-fuzz: `cargo install --locked cargo-fuzz`).
fuzz SECONDS="60":
    scripts/fuzz.sh {{SECONDS}}

# Regenerate the compiled-in TLS certificate and key (then rebuild).
certs:
    certs/generate.sh

# Start a daemon on a sample library and drive it with lanspreadctl.
demo:
    scripts/demo.sh

# Extraction throughput of the unpacker against bsdtar on the same archive.
bench-extract:
    scripts/bench-extract.sh

# IPC round-trip latency (p50/p99 over 10 000 requests) and idle RSS of a release daemon.
bench-ipc:
    scripts/bench-ipc.sh

# Every benchmark of docs/lab.md#benchmarks in the network lab (root, about 15 minutes):
# writes bench/results/latest.json, latest.md and multi-peer.svg, and
# compares with the previous latest.json. `just bench single,multi` runs some.
bench ONLY="":
    scripts/apt-install.sh nginx-light curl libarchive-tools rsync b3sum aria2 mktorrent opentracker avahi-daemon dbus iproute2 util-linux python3
    cargo build --quiet --locked --release --bins --examples
    python3 bench/run.py {{ if ONLY == "" { "" } else { "--only " + ONLY } }}

# The single-seeder bench (or ONLY) under perf, with a flame graph of the
# downloader and of the seeder written next to the results (flame-*.svg).
bench-profile ONLY="single":
    scripts/apt-install.sh nginx-light curl libarchive-tools rsync b3sum aria2 mktorrent opentracker avahi-daemon dbus iproute2 util-linux python3 linux-perf
    command -v inferno-flamegraph > /dev/null || cargo install --locked inferno
    cargo build --quiet --locked --release --bins --examples
    python3 bench/run.py --profile target/bench-profile --only {{ ONLY }}

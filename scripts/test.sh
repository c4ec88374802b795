#!/usr/bin/env bash
# Every check and test BimRide has. Installs what the tests need (the tansu broker, cached
# outside the clone; Chromium, promtool and playwright-core), then runs formatting, lints and
# the whole test suite. Each test starts
# its own brokers and registry, so nothing needs to be running beforehand.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/tansu.sh install
scripts/deps.sh
export BIMRIDE_TANSU_BIN="$(scripts/tansu.sh path)"

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --all-targets --locked

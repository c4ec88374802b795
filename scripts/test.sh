#!/usr/bin/env bash
# Every check and test BimRide has. Installs what the tests need (Apache Kafka's jars from
# Maven Central, cached outside the clone; PostgreSQL, Chromium, promtool and playwright-core
# from Debian and npm), starts one 3-node Apache Kafka cluster and one PostgreSQL server that
# the tests share (each under topic namespaces, or a database, of its own), then runs
# formatting, lints and the whole test suite. Tests that break brokers start
# clusters of their own; the embedded-cluster tests start theirs in process.
set -euo pipefail
cd "$(dirname "$0")/.."

# A one-off build gains nothing from incremental state, and it doubles the size of target/.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
echo "== disk: $(df -h --output=avail . | tail -1 | tr -d ' ') free here"

scripts/kafka.sh install
scripts/postgres.sh install
scripts/deps.sh

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== apache kafka and postgresql"
export BIMRIDE_KAFKA_DIR="${BIMRIDE_KAFKA_DIR:-$(mktemp -d -t bimride-kafka-XXXXXX)}"
export BIMRIDE_POSTGRES_DIR="${BIMRIDE_POSTGRES_DIR:-$(mktemp -d -t bimride-postgres-XXXXXX)}"
trap 'scripts/kafka.sh stop; scripts/postgres.sh stop; rm -rf "$BIMRIDE_KAFKA_DIR" "$BIMRIDE_POSTGRES_DIR"' EXIT
BIMRIDE_KAFKA_BROKERS="$(scripts/kafka.sh start | tail -1)"
export BIMRIDE_KAFKA_BROKERS
BIMRIDE_POSTGRES_URL="$(scripts/postgres.sh start | tail -1)"
export BIMRIDE_POSTGRES_URL

echo "== cargo test"
# One test at a time: each scenario runs a whole city (and the shared brokers run beside it),
# and two cities on two cores starve each other's simulated drivers.
# (RUST_TEST_THREADS rather than --test-threads, which the criterion benches do not take.)
RUST_TEST_THREADS=1 cargo test --workspace --all-targets --locked

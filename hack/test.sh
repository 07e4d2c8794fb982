#!/bin/sh
# test.sh: everything CI runs. Installs what the tests need, builds capsa once (static
# release binary, used by the end-to-end suite), then runs unit tests of every crate and
# the end-to-end suite (real containers, as root).
set -eu
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "test.sh: run as root (the tests run real containers)" >&2; exit 1; }
hack/deps.sh
hack/build.sh
export CAPSA_BIN="$PWD/target/release/capsa"
cargo test --locked --workspace --no-fail-fast -- --test-threads "${TEST_THREADS:-8}"

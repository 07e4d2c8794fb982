#!/bin/sh
# demo.sh: build capsa and run a real container from a busybox bundle made on the spot.
set -eu
cd "$(dirname "$0")/.."
hack/deps.sh
hack/build.sh
bundle=$(mktemp -d /tmp/capsa-demo.XXXXXX)
trap 'rm -rf "$bundle"' EXIT
hack/mkbundle.sh "$bundle" sh -c 'echo "hello from $(hostname), pid $$ in its own namespaces:"; id; ls /' >/dev/null
target/release/capsa run --bundle "$bundle" "capsa-demo-$$"

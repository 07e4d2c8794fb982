#!/bin/sh
# demo.sh: build capsa and capsactl, run a busybox container from a bundle with capsa, then
# make a busybox image the way other tools do (umoci + skopeo, `docker save` format), load it
# with capsactl and run it.
set -eu
cd "$(dirname "$0")/.."
hack/deps.sh
hack/build.sh
work=$(mktemp -d /tmp/capsa-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
bundle=$work/bundle
hack/mkbundle.sh "$bundle" sh -c 'echo "hello from $(hostname), pid $$ in its own namespaces:"; id; ls /' >/dev/null
target/release/capsa run --bundle "$bundle" "capsa-demo-$$"

# busybox.tar: an OCI image made by umoci from the same rootfs, saved by skopeo as docker-archive.
tar -C "$bundle/rootfs" -cf "$work/layer.tar" .
umoci init --layout "$work/oci" && umoci new --image "$work/oci:busybox"
umoci raw add-layer --image "$work/oci:busybox" "$work/layer.tar"
umoci config --image "$work/oci:busybox" --config.cmd sh
skopeo copy -q "oci:$work/oci:busybox" "docker-archive:$work/busybox.tar:busybox:latest"
cd "$work"
export CAPSA_ROOT="$work/store" PATH="$OLDPWD/target/release:$PATH"
set -x
capsactl load -i busybox.tar && capsactl run --rm busybox echo hi
capsactl images

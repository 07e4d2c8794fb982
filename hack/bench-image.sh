#!/bin/sh
# bench-image.sh: capsactl against its peers, side by side in one run, medians and ratios.
#   1. load + unpack of a Debian-sized image (debootstrap minbase bookworm, ~200 MB unpacked,
#      4 layers) from one docker-archive (`docker save` format, plain layers, as skopeo
#      writes it): `capsactl load`, `podman load`, `ctr images import` (unpacks to overlayfs
#      snapshots), and `umoci unpack` of the same image as umoci's own OCI layout directory
#      (gzip layers: umoci 0.4 unpacks no other kind; blobs already in place, so umoci is
#      spared the ingest); capsactl also loads that layout. Fresh, private stores each run.
#   2. `capsactl run --rm IMAGE /bin/true` vs `podman run --rm --runtime runc` (crun refuses
#      this host's hybrid cgroups; nofile/nproc limits of 1024, as root here cannot raise
#      podman's defaults) on the
#      busybox image, and `capsa run` of a prepared bundle (hack/mkbundle.sh).
#   3. A second container of an unpacked image copies no layer byte: store usage before and
#      after, the upper dir of a running container, and the inode seen inside.
# Every peer runs on private roots (own podman --root/--runroot, own containerd), in a temp
# dir removed at the end. The Debian rootfs is made once by debootstrap (Debian's mirror)
# and kept in /var/cache/capsa-bench.
#
# Usage (root): hack/bench-image.sh [RUNS (default 5)] [RUN_RUNS (default 20)]
set -eu
cd "$(dirname "$0")/.."
. hack/lib.sh
RUNS=${1:-5}
RUN_RUNS=${2:-20}
[ "$(id -u)" = 0 ] || { echo "bench-image.sh: run as root" >&2; exit 1; }
for c in umoci skopeo podman containerd ctr debootstrap busybox; do
	command -v "$c" >/dev/null || { echo "bench-image.sh: $c missing (hack/deps.sh)" >&2; exit 1; }
done
hack/build.sh
CTL="$PWD/target/release/capsactl"
CAPSA="$PWD/target/release/capsa"

R=$(debian_rootfs)

bench_workdir image

ms() { awk '{printf "%.1f", $1 / 1e6}'; }

# once FILE PREPARE CMD: one timed run of CMD (ns appended to FILE), PREPARE untimed before.
once() {
	f=$1; prep=$2; shift 2
	sh -c "$prep" >/dev/null 2>&1
	t0=$(date +%s%N)
	"$@" >/dev/null 2>"$W/last.err" || { echo "bench-image.sh: $* failed:" >&2; cat "$W/last.err" >&2; exit 1; }
	t1=$(date +%s%N)
	echo $((t1 - t0)) >>"$f"
}

# --- The image: 4 layers of the Debian rootfs, as umoci's OCI layout, then skopeo's
# docker-archive (plain layers) and an OCI layout with plain layers for umoci.
echo "building the Debian image (4 layers)..." >&2
mkdir -p "$W/layers"
tar --numeric-owner -C "$R" -cf "$W/layers/1.tar" --exclude=./usr --exclude=./var .
tar --numeric-owner -C "$R" -cf "$W/layers/2.tar" ./usr/lib
tar --numeric-owner -C "$R" -cf "$W/layers/3.tar" --exclude=./usr/lib ./usr
tar --numeric-owner -C "$R" -cf "$W/layers/4.tar" ./var
umoci init --layout "$W/build" && umoci new --image "$W/build:debian"
for i in 1 2 3 4; do umoci raw add-layer --image "$W/build:debian" "$W/layers/$i.tar"; done
umoci config --image "$W/build:debian" --config.cmd /bin/bash --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
skopeo copy -q "oci:$W/build:debian" "docker-archive:$W/debian.tar:bench/debian:latest"
rm -rf "$W/layers"
SIZE=$(du -sm "$R" | cut -f1)
ARCHIVE=$(du -m "$W/debian.tar" | cut -f1)

# A private containerd (own root, state, socket) in $1; CTR is its client.
start_ctd() {
	d=$1; mkdir -p "$d"
	containerd_config "$d"
	containerd --config "$d/config.toml" >"$d.log" 2>&1 &
	CTD_PID=$!
	PIDS="$PIDS $CTD_PID"
	wait_containerd "$d" ""
	CTR="ctr -a $d/c.sock -n $NS"
}
stop_ctd() {
	kill "$CTD_PID"
	while kill -0 "$CTD_PID" 2>/dev/null; do sleep 0.05; done
}
# podman's default ulimits ask for more than root may raise here (no CAP_SYS_RESOURCE).
printf '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "none"\n' >"$W/containers.conf"
export CONTAINERS_CONF="$W/containers.conf"
PM="podman --storage-driver overlay --cgroup-manager cgroupfs --events-backend none"

echo "1. load + unpack: ${SIZE} MB unpacked, 4 layers, ${ARCHIVE} MB archive; $RUNS runs each" >&2
# The tools take turns, run after run, so that the load of this shared machine drifts on
# all of them alike. Each run unpacks into a directory of its own and nothing is deleted
# until all runs are done: ext4 is slow to allocate inodes next to ones deleted a moment
# ago (find_inode_bit/recently_deleted), which would charge one tool for another's cleanup.
i=0
while [ $i -lt "$RUNS" ]; do
	once "$W/t_ctl" true "$CTL" --root "$W/capsa.$i" load -q -i "$W/debian.tar"
	once "$W/t_umoci" true umoci unpack --image "$W/build:debian" "$W/umoci.$i"
	PMI="$PM --root $W/pm.$i/root --runroot $W/pm.$i/run"
	once "$W/t_podman" true $PMI load -q -i "$W/debian.tar"
	start_ctd "$W/ctd.$i"
	once "$W/t_ctr" true $CTR images import "$W/debian.tar"
	stop_ctd
	once "$W/t_ctl_gz" true "$CTL" --root "$W/capsa-gz.$i" load -q -i "$W/build"
	i=$((i + 1))
done
t_ctl=$(median <"$W/t_ctl")
t_umoci=$(median <"$W/t_umoci")
t_podman=$(median <"$W/t_podman")
t_ctr=$(median <"$W/t_ctr")
t_ctl_gz=$(median <"$W/t_ctl_gz")
# Check what was unpacked: the same file count everywhere.
n_ctl=$(find "$W/capsa.0/snapshots" -mindepth 2 | wc -l)  # includes one fs/ per layer
n_umoci=$(find "$W/umoci.0/rootfs" | wc -l)
rm -rf "$W"/capsa.* "$W"/capsa-gz.* "$W"/umoci.* "$W"/pm.* "$W"/ctd.*
printf '\n| median | capsactl | umoci unpack | podman load | ctr images import |\n|---|---|---|---|---|\n'
printf '| load + unpack (%s MB, 4 layers) | %s ms | %s ms | %s ms | %s ms |\n' "$SIZE" "$(echo "$t_ctl" | ms)" "$(echo "$t_umoci" | ms)" "$(echo "$t_podman" | ms)" "$(echo "$t_ctr" | ms)"
fastest=$(printf '%s\n%s\n%s\n' "$t_umoci" "$t_podman" "$t_ctr" | sort -n | head -1)
printf '| ratio capsactl / peer | | %s | %s | %s |\n' \
	"$(echo "$t_ctl $t_umoci" | awk '{printf "%.2f", $1/$2}')" "$(echo "$t_ctl $t_podman" | awk '{printf "%.2f", $1/$2}')" "$(echo "$t_ctl $t_ctr" | awk '{printf "%.2f", $1/$2}')"
echo "capsactl / fastest peer: $(echo "$t_ctl $fastest" | awk '{printf "%.2f", $1/$2}') (files unpacked: capsactl $n_ctl, umoci $n_umoci)"
echo "the gzip OCI layout umoci unpacks: capsactl load $(echo "$t_ctl_gz" | ms) ms vs umoci unpack $(echo "$t_umoci" | ms) ms: $(echo "$t_ctl_gz $t_umoci" | awk '{printf "%.2f", $1/$2}')"

# --- run --rm /bin/true
echo "2. run --rm /bin/true: busybox; $RUN_RUNS runs each" >&2
hack/mkbundle.sh "$W/bundle" /bin/true >/dev/null
tar --numeric-owner -C "$W/bundle/rootfs" -cf "$W/bb-layer.tar" .
umoci init --layout "$W/bb" && umoci new --image "$W/bb:latest"
umoci raw add-layer --image "$W/bb:latest" "$W/bb-layer.tar"
umoci config --image "$W/bb:latest" --config.cmd sh
skopeo copy -q "oci:$W/bb:latest" "docker-archive:$W/busybox.tar:busybox:latest"
PM="$PM --root $W/pm-run/root --runroot $W/pm-run/run"
"$CTL" --root "$W/capsa-run" load -q -i "$W/busybox.tar" >/dev/null
$PM load -q -i "$W/busybox.tar" >/dev/null
"$CTL" --root "$W/capsa-run" run --rm --network none busybox /bin/true
$PM run --rm --network none --runtime runc busybox /bin/true
i=0
while [ $i -lt "$RUN_RUNS" ]; do
	once "$W/r_ctl" true "$CTL" --root "$W/capsa-run" run --rm --network none busybox /bin/true
	once "$W/r_podman" true $PM run --rm --network none --runtime runc busybox /bin/true
	once "$W/r_capsa" true "$CAPSA" --root "$W/capsa-state" run -b "$W/bundle" bench-$$
	i=$((i + 1))
done
r_ctl=$(median <"$W/r_ctl")
r_podman=$(median <"$W/r_podman")
r_capsa=$(median <"$W/r_capsa")
printf '\n| median | capsactl run --rm | podman run --rm | capsa run (bundle) |\n|---|---|---|---|\n'
printf '| /bin/true | %s ms | %s ms | %s ms |\n' "$(echo "$r_ctl" | ms)" "$(echo "$r_podman" | ms)" "$(echo "$r_capsa" | ms)"
echo "capsactl / podman: $(echo "$r_ctl $r_podman" | awk '{printf "%.2f", $1/$2}'); capsactl - capsa run: $(echo "$r_ctl $r_capsa" | awk '{printf "%.1f", ($1-$2)/1e6}') ms"

# --- no layer byte copied
S="$W/capsa-run"
usage() { du -s --block-size=1 "$S/snapshots" "$S/blobs" | awk '{s += $1} END {print s}'; }
u0=$(usage)
"$CTL" --root "$S" run --rm busybox sh -c 'sleep 2' &
sleep 1
c=$(ls "$S/containers" | head -1)
upper=$(du -s --block-size=1 "$S/containers/$c/upper" | cut -f1)
rootfs=$(du -s --block-size=1 "$S/containers/$c/rootfs" | cut -f1)
lower=$(grep " $S/containers/$c/rootfs " /proc/self/mountinfo | sed 's/.*lowerdir=\([^,]*\).*/\1/')
wait
inside=$("$CTL" --root "$S" run --rm busybox stat -c %i /bin/busybox)
snap=$(stat -c %i "$S"/snapshots/*/fs/bin/busybox)
u1=$(usage)

printf '\nsecond container: store (snapshots + blobs) %s -> %s bytes; upper dir of a running container %s bytes, its rootfs %s bytes via lowerdir=%s; /bin/busybox inode inside %s = snapshot %s\n' \
	"$u0" "$u1" "$upper" "$rootfs" "$lower" "$inside" "$snap"

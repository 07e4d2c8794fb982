#!/bin/sh
# bench-registry.sh: capsactl pull and push against their peers, side by side in one run,
# medians and ratios. Everything talks to a private docker-registry on 127.0.0.1 (plain
# HTTP, no auth), started here.
#   1. pull = download + unpack, ready to run, of a Debian image (debootstrap minbase,
#      ~206 MB unpacked, 4 gzip layers) into empty stores: `capsactl pull`, `podman pull`,
#      `skopeo copy` to an OCI directory + `umoci unpack`, and containerd's `ctr images pull`
#      (unpacks into overlayfs snapshots; a private containerd per run).
#   2. push of the same image to an empty registry (a fresh one per run, so nothing is
#      skipped or mounted): `capsactl push` (from its store), `skopeo copy` (from an OCI
#      directory with the same gzip layers) and `podman push` (from its store; podman keeps
#      layers uncompressed and compresses them again to push, which is its way).
# The tools take turns, run after run; each run has directories of its own, deleted only
# at the end (ext4 allocates inodes slowly next to ones just freed). The Debian rootfs is
# made once by debootstrap (as bench-image.sh does) and kept in /var/cache/capsa-bench.
#
# Usage (root): hack/bench-registry.sh [RUNS (default 5)]
set -eu
cd "$(dirname "$0")/.."
. hack/lib.sh
RUNS=${1:-5}
[ "$(id -u)" = 0 ] || { echo "bench-registry.sh: run as root" >&2; exit 1; }
for c in docker-registry umoci skopeo podman containerd ctr debootstrap; do
	command -v "$c" >/dev/null || { echo "bench-registry.sh: $c missing (hack/deps.sh)" >&2; exit 1; }
done
hack/build.sh # capsa, capsactl and its monitor
CTL="$PWD/target/release/capsactl"

R=$(debian_rootfs)

bench_workdir registry

ms() { awk '{printf "%.0f", $1 / 1e6}'; }
ratio() { echo "$1 $2" | awk '{printf "%.2f", $1/$2}'; }

# once FILE CMD...: one timed run of CMD (ns appended to FILE).
once() {
	f=$1; shift
	t0=$(date +%s%N)
	"$@" >/dev/null 2>"$W/last.err" || { echo "bench-registry.sh: $* failed:" >&2; cat "$W/last.err" >&2; exit 1; }
	t1=$(date +%s%N)
	echo $((t1 - t0)) >>"$f"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_reg DIR: a private docker-registry; sets REG (host:port) and REG_PID.
start_reg() {
	d=$1; mkdir -p "$d"; port=$(free_port)
	printf 'version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s/data\nhttp:\n  addr: 127.0.0.1:%s\n  secret: bench\n' "$d" "$port" >"$d/config.yml"
	docker-registry serve "$d/config.yml" >"$d.log" 2>&1 &
	REG_PID=$!
	PIDS="$PIDS $REG_PID"
	REG=127.0.0.1:$port
	n=0
	until python3 -c "import socket; socket.create_connection(('127.0.0.1', $port))" 2>/dev/null; do
		n=$((n + 1)); [ $n -lt 200 ] || { echo "docker-registry did not start" >&2; exit 1; }
		sleep 0.05
	done
}
stop_reg() { kill "$REG_PID"; while kill -0 "$REG_PID" 2>/dev/null; do sleep 0.05; done; }

# A private containerd (own root, state, socket) in $1; CTR is its client.
start_ctd() {
	d=$1; mkdir -p "$d"
	cat >"$d/config.toml" <<-EOF2
	version = 2
	root = "$d/root"
	state = "$d/state"
	disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
	[grpc]
	  address = "$d/c.sock"
	[ttrpc]
	  address = "$d/c.sock.ttrpc"
	[plugins."io.containerd.internal.v1.opt"]
	  path = "$d/opt"
	EOF2
	containerd --config "$d/config.toml" >"$d.log" 2>&1 &
	CTD_PID=$!
	PIDS="$PIDS $CTD_PID"
	n=0
	until ctr -a "$d/c.sock" version >/dev/null 2>&1; do
		n=$((n + 1)); [ $n -lt 200 ] || { echo "containerd did not start" >&2; exit 1; }
		sleep 0.05
	done
	CTR="ctr -a $d/c.sock -n $NS"
}
stop_ctd() { kill "$CTD_PID"; while kill -0 "$CTD_PID" 2>/dev/null; do sleep 0.05; done; }

printf '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "none"\n' >"$W/containers.conf"
export CONTAINERS_CONF="$W/containers.conf"
PM="podman --storage-driver overlay --cgroup-manager cgroupfs --events-backend none"
# No state of the machine's own: skopeo's blob info cache (which would let it mount blobs
# it saw before) and auth files under a private HOME.
export HOME="$W/home" XDG_RUNTIME_DIR="$W/xdg" DOCKER_CONFIG="$W/docker" CAPSA_DAEMON_JSON="$W/none.json"
mkdir -p "$HOME" "$XDG_RUNTIME_DIR" "$DOCKER_CONFIG"
echo "{}" >"$DOCKER_CONFIG/config.json"

# --- The image: 4 layers of the Debian rootfs, gzip, as umoci's OCI layout, pushed once.
echo "building the Debian image (4 gzip layers)..." >&2
mkdir -p "$W/layers"
tar --numeric-owner -C "$R" -cf "$W/layers/1.tar" --exclude=./usr --exclude=./var .
tar --numeric-owner -C "$R" -cf "$W/layers/2.tar" ./usr/lib
tar --numeric-owner -C "$R" -cf "$W/layers/3.tar" --exclude=./usr/lib ./usr
tar --numeric-owner -C "$R" -cf "$W/layers/4.tar" ./var
umoci init --layout "$W/build" && umoci new --image "$W/build:debian"
for i in 1 2 3 4; do umoci raw add-layer --image "$W/build:debian" "$W/layers/$i.tar"; done
umoci config --image "$W/build:debian" --config.cmd /bin/bash --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
rm -rf "$W/layers"
start_reg "$W/reg"
SRC=$REG/bench/debian:latest
skopeo copy -q --dest-tls-verify=false "oci:$W/build:debian" "docker://$SRC"
SIZE=$(du -sm "$R" | cut -f1)
BLOBS=$(du -sm "$W/build/blobs" | cut -f1)

echo "1. pull (download + unpack) of $SRC: ${SIZE} MB unpacked, 4 layers, ${BLOBS} MB of blobs; $RUNS runs each" >&2
i=0
while [ $i -lt "$RUNS" ]; do
	once "$W/p_ctl" "$CTL" --root "$W/capsa.$i" pull -q "$SRC"
	once "$W/p_podman" $PM --root "$W/pm.$i/root" --runroot "$W/pm.$i/run" pull -q --tls-verify=false "$SRC"
	once "$W/p_skopeo" sh -c "skopeo copy -q --src-tls-verify=false docker://$SRC oci:$W/sk.$i:debian && umoci unpack --image $W/sk.$i:debian $W/sk.$i.bundle"
	start_ctd "$W/ctd.$i"
	once "$W/p_ctr" $CTR images pull --plain-http "$SRC"
	stop_ctd
	i=$((i + 1))
done
# Check: the unpacked trees hold the same files.
n_ctl=$(find "$W/capsa.0/snapshots" -mindepth 3 | wc -l)
n_umoci=$(find "$W/sk.0.bundle/rootfs" -mindepth 1 | wc -l)
"$CTL" --root "$W/capsa.0" run --rm --network none "$SRC" /bin/true

echo "2. push to an empty registry (a fresh one per run); $RUNS runs each" >&2
stop_reg
i=0
while [ $i -lt "$RUNS" ]; do
	start_reg "$W/rc.$i"
	"$CTL" --root "$W/capsa.0" tag "$SRC" "$REG/bench/debian:latest"
	once "$W/u_ctl" "$CTL" --root "$W/capsa.0" push -q "$REG/bench/debian:latest"
	stop_reg
	start_reg "$W/rs.$i"
	once "$W/u_skopeo" skopeo copy -q --dest-tls-verify=false "oci:$W/build:debian" "docker://$REG/bench/debian:latest"
	stop_reg
	start_reg "$W/rp.$i"
	once "$W/u_podman" $PM --root "$W/pm.0/root" --runroot "$W/pm.0/run" push -q --tls-verify=false "$SRC" "docker://$REG/bench/debian:latest"
	stop_reg
	i=$((i + 1))
done

p_ctl=$(median <"$W/p_ctl"); p_podman=$(median <"$W/p_podman"); p_skopeo=$(median <"$W/p_skopeo"); p_ctr=$(median <"$W/p_ctr")
u_ctl=$(median <"$W/u_ctl"); u_skopeo=$(median <"$W/u_skopeo"); u_podman=$(median <"$W/u_podman")
printf '\n| pull + unpack (%s MB, 4 layers), median | capsactl pull | podman pull | skopeo copy + umoci unpack | ctr images pull |\n|---|---|---|---|---|\n' "$SIZE"
printf '| time | %s ms | %s ms | %s ms | %s ms |\n' "$(echo "$p_ctl" | ms)" "$(echo "$p_podman" | ms)" "$(echo "$p_skopeo" | ms)" "$(echo "$p_ctr" | ms)"
printf '| capsactl / peer | | %s | %s | %s |\n' "$(ratio "$p_ctl" "$p_podman")" "$(ratio "$p_ctl" "$p_skopeo")" "$(ratio "$p_ctl" "$p_ctr")"
fastest=$(printf '%s\n%s\n%s\n' "$p_podman" "$p_skopeo" "$p_ctr" | sort -n | head -1)
echo "pull: capsactl / fastest peer = $(ratio "$p_ctl" "$fastest") (files unpacked: capsactl $n_ctl, umoci $n_umoci)"
printf '\n| push (%s MB of gzip blobs), median | capsactl push | skopeo copy | podman push |\n|---|---|---|---|\n' "$BLOBS"
printf '| time | %s ms | %s ms | %s ms |\n' "$(echo "$u_ctl" | ms)" "$(echo "$u_skopeo" | ms)" "$(echo "$u_podman" | ms)"
printf '| capsactl / peer | | %s | %s |\n' "$(ratio "$u_ctl" "$u_skopeo")" "$(ratio "$u_ctl" "$u_podman")"
fastest=$(printf '%s\n%s\n' "$u_skopeo" "$u_podman" | sort -n | head -1)
echo "push: capsactl / fastest peer = $(ratio "$u_ctl" "$fastest")"

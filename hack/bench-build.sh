#!/bin/sh
# bench-build.sh: `capsactl build` against `buildah bud --layers` and `docker build` (a private
# dockerd: BuildKit when it works there, else the classic builder), side by side in one run,
# on the same Dockerfile and context over the same busybox image; medians and ratios.
#   1. cold build (--no-cache)
#   2. fully cached rebuild
#   3. rebuild after one source file changed (the COPY of it and the RUN after it run again)
#   4. cold build of two independent stages, each a RUN of ~0.5 s, and a final stage copying
#      from both (built side by side by capsactl and BuildKit; buildah is given --jobs 2)
# Rounds are interleaved (each tool once per round). Every peer runs on private roots: buildah
# --root/--runroot with runc (crun refuses this host's hybrid cgroups); dockerd with its own
# --data-root, --exec-root, -H unix socket and --pidfile, on a private containerd, both stopped
# at the end; no system docker or containerd is touched. RUN steps use --network none.
#
# Usage (root): hack/bench-build.sh [RUNS (default 5)]
set -eu
cd "$(dirname "$0")/.."
. hack/lib.sh
RUNS=${1:-5}
[ "$(id -u)" = 0 ] || { echo "bench-build.sh: run as root" >&2; exit 1; }
bench_peers buildah runc containerd docker.io umoci skopeo
DOCKER_BIN=/usr/bin/docker # Debian's client, matching its dockerd
hack/build.sh # capsa, capsactl and its monitor
CTL_BIN="$PWD/target/release/capsactl"

bench_workdir build
ms() { awk '{printf "%.0f", $1 / 1e6}'; }
ratio() { echo "$1 $2" | awk '{printf "%.2f", $1/$2}'; }
once() {
	f=$1; shift
	t0=$(date +%s%N)
	"$@" >"$W/last.out" 2>&1 || { echo "bench-build.sh: $* failed:" >&2; tail -20 "$W/last.out" >&2; exit 1; }
	t1=$(date +%s%N)
	echo $((t1 - t0)) >>"$f"
}
quiet() { "$@" >/dev/null 2>&1 || { echo "bench-build.sh: $* failed" >&2; "$@" >&2 || true; exit 1; }; }

CTL="$CTL_BIN --root $W/capsa --state-root $W/capsa-state"
printf '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "none"\n' >"$W/containers.conf"
export CONTAINERS_CONF="$W/containers.conf"
BH="buildah --root $W/bh/root --runroot $W/bh/run --storage-driver overlay"
mkdir -p "$W/ctd" "$W/docker"
containerd_config "$W/ctd"
containerd --config "$W/ctd/config.toml" >"$W/ctd.log" 2>&1 &
PIDS="$PIDS $!"
wait_containerd "$W/ctd" "(docker's)"
dockerd --data-root "$W/docker/root" --exec-root "$W/docker/exec" -H "unix://$W/docker/d.sock" \
	--pidfile "$W/docker/d.pid" --containerd "$W/ctd/c.sock" --bridge none --iptables=false \
	--ip6tables=false --ip-masq=false --userland-proxy=false --exec-opt native.cgroupdriver=cgroupfs \
	--cgroup-parent /capsa-bench-docker --storage-driver overlay2 --log-level warn >"$W/dockerd.log" 2>&1 &
PIDS="$! $PIDS" # stopped before its containerd
DK="$DOCKER_BIN -H unix://$W/docker/d.sock"
i=0
until $DK version >/dev/null 2>&1; do
	i=$((i + 1)); [ $i -lt 300 ] || { echo "bench-build.sh: dockerd did not start:" >&2; tail "$W/dockerd.log" >&2; exit 1; }
	sleep 0.1
done
cleanup_all() {
	$DK rm -f $($DK ps -aq 2>/dev/null) >/dev/null 2>&1 || true
	$BH rm -a >/dev/null 2>&1 || true
	bench_cleanup
	# The cgroup parents (BuildKit makes capsa-bench-docker/buildkit), empty once all is down.
	for d in /sys/fs/cgroup/*/capsa-bench-docker /sys/fs/cgroup/*/capsa-bench-build; do
		[ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
	done
}
trap cleanup_all EXIT INT TERM

# --- The base image: busybox-static as a docker-archive, in each store.
hack/mkbundle.sh "$W/bundle" /bin/true >/dev/null
tar --numeric-owner -C "$W/bundle/rootfs" -cf "$W/bb-layer.tar" .
umoci init --layout "$W/bb" && umoci new --image "$W/bb:latest"
umoci raw add-layer --image "$W/bb:latest" "$W/bb-layer.tar"
umoci config --image "$W/bb:latest" --config.cmd sh --config.env PATH=/usr/sbin:/usr/bin:/sbin:/bin
skopeo copy -q "oci:$W/bb:latest" "docker-archive:$W/busybox.tar:busybox:latest"
quiet $CTL load -q -i "$W/busybox.tar"
quiet $BH pull -q "docker-archive:$W/busybox.tar"
quiet $DK load -q -i "$W/busybox.tar"
$BH tag "$($BH images -q | head -1)" busybox:latest >/dev/null 2>&1 || true

# --- The context: a small app, a tutorial-shaped Dockerfile.
C="$W/ctx"
mkdir -p "$C/src"
i=0
while [ $i -lt 50 ]; do head -c 4096 /dev/urandom | base64 >"$C/src/file$i.txt"; i=$((i + 1)); done
echo v0 >"$C/app.txt"
printf 'node_modules\n*.log\n' >"$C/.dockerignore"
cat >"$C/Dockerfile" <<'DOCKERFILE'
FROM busybox
ENV APP=/app
WORKDIR $APP
COPY src/ ./src/
RUN for i in $(seq 1 100); do echo $i > gen-$i; done && cat src/*.txt | wc -c > size
COPY app.txt .
RUN cat app.txt size > out
EXPOSE 8080
CMD ["cat", "/app/out"]
DOCKERFILE

# docker: BuildKit if this dockerd can build with it (offline, local base image), else classic.
DKB="env DOCKER_BUILDKIT=1 $DK"
if ! $DKB build -q --network none -t probe "$C" >"$W/probe.log" 2>&1; then
	DKB="env DOCKER_BUILDKIT=0 $DK"
	echo "bench-build.sh: docker BuildKit cannot build here ($(tail -1 "$W/probe.log")): the classic builder is measured" >&2
	quiet $DKB build -q --network none -t probe "$C"
fi
DOCKER_KIND=$(echo "$DKB" | grep -q BUILDKIT=1 && echo BuildKit || echo classic)

# Two independent stages of the same cost and a final one that needs both.
C2="$W/ctx2"
mkdir -p "$C2"
cat >"$C2/Dockerfile" <<'DOCKERFILE'
FROM busybox AS one
RUN sleep 0.5 && echo one > /out
FROM busybox AS two
RUN sleep 0.5 && echo two > /out
FROM busybox
COPY --from=one /out /one
COPY --from=two /out /two
CMD ["cat", "/one", "/two"]
DOCKERFILE

TOOLS="ctl buildah docker"
build_cmd() {
	case $1 in
	ctl) echo "$CTL build --network none --cgroup-parent /capsa-bench-build -q -t app" ;;
	buildah) echo "$BH bud --layers --isolation oci --runtime runc --network none -q -t app" ;;
	docker) echo "$DKB build --network none -q -t app" ;;
	esac
}
stages_cmd() {
	case $1 in
	ctl) echo "$CTL build --network none --cgroup-parent /capsa-bench-build -q -t stages" ;;
	buildah) echo "$BH bud --layers --jobs 2 --isolation oci --runtime runc --network none -q -t stages" ;;
	docker) echo "$DKB build --network none -q -t stages" ;;
	esac
}
# Warm up each tool once.
for t in $TOOLS; do quiet $(build_cmd $t) "$C"; done
echo "$RUNS rounds: cold, cached, one file changed" >&2
r=0
while [ $r -lt "$RUNS" ]; do
	echo "v$r" >"$C/app.txt"
	for t in $TOOLS; do
		once "$W/cold_$t" $(build_cmd $t) --no-cache "$C"
		once "$W/hot_$t" $(build_cmd $t) "$C"
	done
	echo "v$r changed" >"$C/app.txt"
	for t in $TOOLS; do
		once "$W/chg_$t" $(build_cmd $t) "$C"
	done
	for t in $TOOLS; do
		once "$W/par_$t" $(stages_cmd $t) --no-cache "$C2"
	done
	r=$((r + 1))
done
# The image each built runs and says the same.
got=$($CTL run --rm --network none app | head -1)
[ "$got" = "v$((RUNS - 1)) changed" ] || { echo "bench-build.sh: capsactl's image says $got" >&2; exit 1; }

got=$($CTL run --rm --network none stages | tr '\n' ' ')
[ "$got" = "one two " ] || { echo "bench-build.sh: capsactl's two-stage image says $got" >&2; exit 1; }

for f in "$W"/cold_* "$W"/hot_* "$W"/chg_* "$W"/par_*; do
	eval "$(basename "$f")=$(median <"$f")"
done
printf '\n%s rounds, medians; ratios are capsactl / peer (below 1: capsactl faster); docker: %s\n\n' "$RUNS" "$DOCKER_KIND"
printf '| build | capsactl | buildah bud --layers | docker build | vs buildah | vs docker |\n|---|---|---|---|---|---|\n'
row() {
	printf '| %s | %s ms | %s ms | %s ms | %s | %s |\n' "$1" "$(echo "$2" | ms)" "$(echo "$3" | ms)" "$(echo "$4" | ms)" \
		"$(ratio "$2" "$3")" "$(ratio "$2" "$4")"
}
row "cold (--no-cache)" "$cold_ctl" "$cold_buildah" "$cold_docker"
row "fully cached" "$hot_ctl" "$hot_buildah" "$hot_docker"
row "one source changed" "$chg_ctl" "$chg_buildah" "$chg_docker"
row "two independent stages, cold" "$par_ctl" "$par_buildah" "$par_docker"

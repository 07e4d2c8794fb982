#!/bin/sh
# bench-ctl.sh: capsactl's containers against podman (crun and runc) and docker, side by side
# in one run, on the same busybox image; medians and ratios.
#   1. `run --rm IMAGE true`
#   2. `run -d IMAGE sleep 1000`: until the command returns (the container runs); rm untimed
#   3. `exec CONTAINER true` into a running container
#   4. `ps -a` with 100 containers (created, not started)
#   5. `logs` of a 100 MB log (1 M lines of 100 bytes, written by the container beforehand)
#   6. the per-container monitor's memory: capsactl-monitor vs conmon (podman) vs
#      containerd-shim-runc-v2 (docker), Rss and Private_Dirty from /proc/PID/smaps_rollup
# Rounds are interleaved (each tool once per round), so the load of this shared machine drifts
# on all of them alike. Every peer runs on private roots: podman --root/--runroot; a private
# dockerd (Debian's docker.io: --data-root, --exec-root, its own -H unix socket, --pidfile,
# no bridge, no iptables) on a private containerd, both stopped at the end. No system docker
# or containerd is touched. All containers run with --network none. crun refuses this host's
# hybrid cgroups unless /sys/fs/cgroup/unified/cgroup.controllers is masked, so podman+crun
# runs in a private mount namespace (entered with nsenter, ~1 ms) where it is.
#
# Usage (root): hack/bench-ctl.sh [RUNS (default 15)]
set -eu
cd "$(dirname "$0")/.."
. hack/lib.sh
RUNS=${1:-15}
[ "$(id -u)" = 0 ] || { echo "bench-ctl.sh: run as root" >&2; exit 1; }
bench_peers podman crun runc conmon containerd docker.io umoci skopeo
DOCKER_BIN=/usr/bin/docker # Debian's client, matching its dockerd (not another docker on PATH)
hack/build.sh # capsa, capsactl and its monitor
CTL_BIN="$PWD/target/release/capsactl"

bench_workdir ctl
ms() { awk '{printf "%.1f", $1 / 1e6}'; }
ratio() { echo "$1 $2" | awk '{printf "%.2f", $1/$2}'; }

# once FILE CMD...: one timed run of CMD, ns appended to FILE.
once() {
	f=$1; shift
	t0=$(date +%s%N)
	"$@" >/dev/null 2>"$W/last.err" || { echo "bench-ctl.sh: $* failed:" >&2; cat "$W/last.err" >&2; exit 1; }
	t1=$(date +%s%N)
	echo $((t1 - t0)) >>"$f"
}
quiet() { "$@" >/dev/null 2>&1 || { echo "bench-ctl.sh: $* failed" >&2; "$@" >&2 || true; exit 1; }; }

# --- The tools, each on private roots.
CTL="$CTL_BIN --root $W/capsa --state-root $W/capsa-state"
printf '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "none"\n' >"$W/containers.conf"
export CONTAINERS_CONF="$W/containers.conf"
PM="podman --root $W/pm/root --runroot $W/pm/run --storage-driver overlay --cgroup-manager cgroupfs --events-backend none"
# A persistent private mount namespace for crun, with the unified hierarchy's controllers
# file masked.
mkdir -p "$W/ns" && mount --bind "$W/ns" "$W/ns" && mount --make-private "$W/ns"
touch "$W/ns/mnt"
unshare --mount="$W/ns/mnt" --propagation private sh -c 'mount --bind /dev/null /sys/fs/cgroup/unified/cgroup.controllers'
PMC="nsenter --mount=$W/ns/mnt $PM --runtime crun"
PMR="$PM --runtime runc"
# docker: a private containerd, then a private dockerd on it.
mkdir -p "$W/ctd" "$W/docker"
containerd_config "$W/ctd"
containerd --config "$W/ctd/config.toml" >"$W/ctd.log" 2>&1 &
CTD_PID=$!
PIDS="$PIDS $CTD_PID"
wait_containerd "$W/ctd" "(docker's)"
dockerd --data-root "$W/docker/root" --exec-root "$W/docker/exec" -H "unix://$W/docker/d.sock" \
	--pidfile "$W/docker/d.pid" --containerd "$W/ctd/c.sock" --bridge none --iptables=false \
	--ip6tables=false --ip-masq=false --userland-proxy=false --exec-opt native.cgroupdriver=cgroupfs \
	--cgroup-parent /capsa-bench-docker --storage-driver overlay2 --log-level warn >"$W/dockerd.log" 2>&1 &
DOCKERD_PID=$!
PIDS="$DOCKERD_PID $PIDS" # stopped before its containerd
DK="$DOCKER_BIN -H unix://$W/docker/d.sock"
i=0
until $DK version >/dev/null 2>&1; do
	i=$((i + 1)); [ $i -lt 300 ] || { echo "bench-ctl.sh: dockerd did not start:" >&2; tail "$W/dockerd.log" >&2; exit 1; }
	sleep 0.1
done
# Tear down in order: every tool's containers, dockerd, containerd, the namespace.
cleanup_all() {
	$CTL rm -f $($CTL ps -aq 2>/dev/null) >/dev/null 2>&1 || true
	$PMC rm -f -a -t 0 >/dev/null 2>&1 || true
	$PM rm -f -a -t 0 >/dev/null 2>&1 || true
	$DK rm -f $($DK ps -aq 2>/dev/null) >/dev/null 2>&1 || true
	bench_cleanup
	umount "$W/ns/mnt" 2>/dev/null || true
	# docker's cgroup parent (its own name), empty once its containers are gone.
	for d in /sys/fs/cgroup/*/capsa-bench-docker; do [ -d "$d" ] && rmdir "$d" 2>/dev/null || true; done
}
trap cleanup_all EXIT INT TERM

# --- The image: busybox-static (hack/mkbundle.sh's rootfs) as a docker-archive, in each store.
hack/mkbundle.sh "$W/bundle" /bin/true >/dev/null
tar --numeric-owner -C "$W/bundle/rootfs" -cf "$W/bb-layer.tar" .
umoci init --layout "$W/bb" && umoci new --image "$W/bb:latest"
umoci raw add-layer --image "$W/bb:latest" "$W/bb-layer.tar"
umoci config --image "$W/bb:latest" --config.cmd sh
skopeo copy -q "oci:$W/bb:latest" "docker-archive:$W/busybox.tar:busybox:latest"
quiet $CTL load -q -i "$W/busybox.tar"
quiet $PM load -q -i "$W/busybox.tar"
quiet $DK load -q -i "$W/busybox.tar"
# Warm up each path once.
quiet $CTL run --rm --network none busybox true
quiet $PMC run --rm --network none busybox true
quiet $PMR run --rm --network none busybox true
quiet $DK run --rm --network none busybox true

TOOLS="ctl crun runc docker"
cmd_of() {
	case $1 in
	ctl) echo "$CTL" ;;
	crun) echo "$PMC" ;;
	runc) echo "$PMR" ;;
	docker) echo "$DK" ;;
	esac
}

echo "1-3. run --rm, run -d, exec: $RUNS rounds" >&2
for t in $TOOLS; do
	c=$(cmd_of $t)
	quiet $c run -d --network none --name "x-$t" busybox sleep 100000
done
i=0
while [ $i -lt "$RUNS" ]; do
	for t in $TOOLS; do
		c=$(cmd_of $t)
		once "$W/rm_$t" $c run --rm --network none busybox true
		once "$W/d_$t" $c run -d --network none --name "d-$t-$i" busybox sleep 100000
		quiet $c rm -f $([ "$t" = crun ] || [ "$t" = runc ] && echo -t 0) "d-$t-$i"
		once "$W/e_$t" $c exec "x-$t" true
	done
	i=$((i + 1))
done

echo "4. ps -a with 100 containers" >&2
for t in ctl runc docker; do
	c=$(cmd_of $t)
	n=$($c ps -aq | wc -l)
	while [ "$n" -lt 100 ]; do
		quiet $c create --network none busybox true
		n=$((n + 1))
	done
done
[ "$($CTL ps -aq | wc -l)" -eq 100 ] && [ "$($PM ps -aq | wc -l)" -eq 100 ] && [ "$($DK ps -aq | wc -l)" -eq 100 ] ||
	{ echo "bench-ctl.sh: not 100 containers each" >&2; exit 1; }
i=0
while [ $i -lt "$RUNS" ]; do
	for t in ctl runc docker; do
		once "$W/ps_$t" $(cmd_of $t) ps -a
	done
	i=$((i + 1))
done

echo "6. monitor memory" >&2
rss() { awk '/^Rss:/ {r=$2} /^Private_Dirty:/ {d=$2} END {printf "%d %d", r, d}' "/proc/$1/smaps_rollup"; }
id=$($CTL inspect -f '{{.Id}}' x-ctl)
mon_ctl=$(pgrep -f "^capsactl-monitor id=$id" | head -1)
id=$($PM inspect -f '{{.Id}}' x-crun)
mon_crun=$(pgrep -f "conmon .*-c $id" | head -1)
id=$($PM inspect -f '{{.Id}}' x-runc)
mon_runc=$(pgrep -f "conmon .*-c $id" | head -1)
id=$($DK inspect -f '{{.Id}}' x-docker)
mon_docker=$(pgrep -f "containerd-shim-runc-v2 .*-id $id" | head -1)
for v in mon_ctl mon_crun mon_runc mon_docker; do
	eval "p=\$$v"
	[ -n "$p" ] || { echo "bench-ctl.sh: no $v process found" >&2; exit 1; }
done
set -- $(rss "$mon_ctl") $(rss "$mon_crun") $(rss "$mon_runc") $(rss "$mon_docker")
m_ctl=$1 pd_ctl=$2 m_crun=$3 pd_crun=$4 m_runc=$5 pd_runc=$6 m_docker=$7 pd_docker=$8

echo "5. logs of a 100 MB log" >&2
LINE=012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678
for t in ctl runc docker; do
	c=$(cmd_of $t)
	opt=""
	[ "$t" = runc ] && opt="--log-driver k8s-file"
	quiet $c run -d --network none $opt --name "log-$t" busybox sh -c "yes $LINE | head -c 104857600"
done
for t in ctl runc docker; do
	c=$(cmd_of $t)
	$c wait "log-$t" >/dev/null
	got=$($c logs "log-$t" 2>/dev/null | wc -c)
	[ "$got" -eq 104857600 ] || { echo "bench-ctl.sh: $t logs gave $got bytes, not 104857600" >&2; exit 1; }
done
LRUNS=$(( (RUNS + 2) / 3 ))
i=0
while [ $i -lt "$LRUNS" ]; do
	for t in ctl runc docker; do
		once "$W/l_$t" $(cmd_of $t) logs "log-$t"
	done
	i=$((i + 1))
done

for f in "$W"/rm_* "$W"/d_* "$W"/e_* "$W"/ps_* "$W"/l_*; do
	eval "$(basename "$f")=$(median <"$f")"
done

printf '\n%s runs each (logs: %s), medians; ratios are capsactl / peer (below 1: capsactl faster)\n\n' "$RUNS" "$LRUNS"
printf '| median | capsactl | podman (crun) | podman (runc) | docker | vs crun | vs runc | vs docker |\n|---|---|---|---|---|---|---|---|\n'
row() {
	printf '| %s | %s ms | %s ms | %s ms | %s ms | %s | %s | %s |\n' "$1" "$(echo "$2" | ms)" "$(echo "$3" | ms)" "$(echo "$4" | ms)" \
		"$(echo "$5" | ms)" "$(ratio "$2" "$3")" "$(ratio "$2" "$4")" "$(ratio "$2" "$5")"
}
row "run --rm busybox true" "$rm_ctl" "$rm_crun" "$rm_runc" "$rm_docker"
row "run -d (until it runs)" "$d_ctl" "$d_crun" "$d_runc" "$d_docker"
row "exec true" "$e_ctl" "$e_crun" "$e_runc" "$e_docker"
printf '| ps -a, 100 containers | %s ms | (podman: one store) | %s ms | %s ms | | %s | %s |\n' "$(echo "$ps_ctl" | ms)" \
	"$(echo "$ps_runc" | ms)" "$(echo "$ps_docker" | ms)" "$(ratio "$ps_ctl" "$ps_runc")" "$(ratio "$ps_ctl" "$ps_docker")"
printf '| logs, 100 MB | %s ms | (k8s-file, as runc) | %s ms | %s ms | | %s | %s |\n' "$(echo "$l_ctl" | ms)" \
	"$(echo "$l_runc" | ms)" "$(echo "$l_docker" | ms)" "$(ratio "$l_ctl" "$l_runc")" "$(ratio "$l_ctl" "$l_docker")"
printf '\n| monitor of one idle container | capsactl-monitor | conmon (crun) | conmon (runc) | containerd-shim-runc-v2 |\n|---|---|---|---|---|\n'
printf '| Rss | %s kB | %s kB | %s kB | %s kB |\n' "$m_ctl" "$m_crun" "$m_runc" "$m_docker"
printf '| Private_Dirty | %s kB | %s kB | %s kB | %s kB |\n' "$pd_ctl" "$pd_crun" "$pd_runc" "$pd_docker"
echo "Rss ratio capsactl-monitor / conmon: $(ratio "$m_ctl" "$m_runc"), / containerd-shim-runc-v2: $(ratio "$m_ctl" "$m_docker")"

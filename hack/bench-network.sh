#!/bin/sh
# bench-network.sh: the network's share of a container's start, capsactl against podman
# (netavark) and docker, side by side in one run, medians and ratios; and throughput host ->
# container over a published port against the bridge address directly (iperf3).
#   1. `run --rm -p 8080:80 IMAGE true` and `run --rm --network none IMAGE true`, taking
#      turns run after run: capsactl, podman (netavark, --runtime runc: crun refuses this
#      host's hybrid cgroups), docker (a private dockerd: own data-root, exec-root, socket,
#      pidfile, containerd and bridge, stopped at the end). The network's share = the median
#      with the bridge and a published port minus the median with none.
#   2. iperf3 from the host namespace to an iperf3 server in a capsactl container: through
#      the published port (127.0.0.1 and the host's own address) and to the container's
#      bridge address directly; 3 runs of 3 s each, taking turns, medians.
# Everything runs in a network namespace the script makes (unshare -n; the machine's network
# is never touched) and in a temp dir removed at the end; no registry is reached (the image is
# busybox-static plus iperf3 and its libraries, copied from this host).
#
# Usage (root): hack/bench-network.sh [RUNS (default 20)]
set -eu
cd "$(dirname "$0")/.."
. hack/lib.sh
RUNS=${1:-20}
[ "$(id -u)" = 0 ] || { echo "bench-network.sh: run as root" >&2; exit 1; }
if [ -z "${BENCH_NETNS:-}" ]; then
	bench_peers podman netavark containerd docker.io iperf3 jq busybox-static nftables
	hack/build.sh # capsa, capsactl and its monitor
	# Again in a network namespace of its own (same mount namespace: the temp dir and the
	# stores stay visible).
	BENCH_NETNS=1 exec unshare -n "$0" "$@"
fi
CTL="$PWD/target/release/capsactl"
ip link set lo up
# The "host's own address": on a veth link (TEST-NET-2) in this namespace (this kernel has
# no dummy links).
ip link add bench0 type veth peer name bench1
ip addr add 198.51.100.1/24 dev bench0
ip link set bench0 up
ip link set bench1 up
HOST_IP=198.51.100.1

bench_workdir network
ms() { awk '{printf "%.1f", $1 / 1e6}'; }

# once FILE CMD: one timed run of CMD (ns appended to FILE).
once() {
	f=$1; shift
	t0=$(date +%s%N)
	"$@" >/dev/null 2>"$W/last.err" || { echo "bench-network.sh: $* failed:" >&2; cat "$W/last.err" >&2; exit 1; }
	t1=$(date +%s%N)
	echo $((t1 - t0)) >>"$f"
}

# --- The image: busybox-static, and iperf3 with the libraries it links (from this host).
R="$W/rootfs"
mkdir -p "$R/bin" "$R/etc" "$R/tmp"
cp /bin/busybox "$R/bin/"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$R/bin/$a"; done
ln -s bin "$R/sbin"
for f in $(command -v iperf3) $(ldd "$(command -v iperf3)" | awk '/=>/ {print $3} /ld-linux/ {print $1}'); do
	cp -L --parents "$f" "$R"
done
echo 'root:x:0:0:root:/root:/bin/sh' >"$R/etc/passwd"
tar -C "$R" -cf "$W/image.tar" .
IMG=bench/net:1

# capsactl's private store.
C="$CTL --root $W/capsa --state-root $W/capsa-state"
$C import "$W/image.tar" "$IMG" >/dev/null

# podman: private root, runroot, network config dir, netavark.
mkdir -p "$W/pm-net"
printf '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "none"\n[network]\nnetwork_backend = "netavark"\nnetwork_config_dir = "%s"\n' "$W/pm-net" >"$W/containers.conf"
export CONTAINERS_CONF="$W/containers.conf"
PM="podman --root $W/pm/root --runroot $W/pm/run --storage-driver overlay --cgroup-manager cgroupfs --events-backend none"
$PM import -q "$W/image.tar" "$IMG" >/dev/null

# docker: a private containerd, then dockerd on its own dirs, socket, pidfile and bridge.
mkdir -p "$W/ctd"
containerd_config "$W/ctd"
containerd --config "$W/ctd/config.toml" >"$W/ctd.log" 2>&1 &
PIDS="$PIDS $!"
wait_containerd "$W/ctd" docker
ip link add dkbench0 type bridge
ip addr add 172.30.0.1/16 dev dkbench0
ip link set dkbench0 up
dockerd --data-root "$W/docker" --exec-root "$W/docker-exec" --host "unix://$W/docker.sock" --pidfile "$W/docker.pid" \
	--containerd "$W/ctd/c.sock" --bridge dkbench0 --exec-opt native.cgroupdriver=cgroupfs --userland-proxy=false \
	--storage-driver overlay2 >"$W/dockerd.log" 2>&1 &
DOCKERD=$!
PIDS="$DOCKERD $PIDS"
DK="docker -H unix://$W/docker.sock"
i=0
until $DK version >/dev/null 2>&1; do
	i=$((i + 1)); [ $i -lt 400 ] || { echo "dockerd did not start:" >&2; tail "$W/dockerd.log" >&2; exit 1; }
	sleep 0.05
done
$DK import "$W/image.tar" "$IMG" >/dev/null

# Warm up each (the first run makes the bridges and rules).
$C run --rm -p 8080:80 "$IMG" true
$PM run --rm --runtime runc -p 8080:80 "$IMG" true >/dev/null
$DK run --rm -p 8080:80 "$IMG" true

echo "1. run --rm [-p 8080:80 | --network none] IMAGE true, $RUNS runs each, taking turns" >&2
i=0
while [ "$i" -lt "$RUNS" ]; do
	once "$W/c_br" $C run --rm -p 8080:80 "$IMG" true
	once "$W/c_no" $C run --rm --network none "$IMG" true
	once "$W/p_br" $PM run --rm --runtime runc -p 8080:80 "$IMG" true
	once "$W/p_no" $PM run --rm --runtime runc --network none "$IMG" true
	once "$W/d_br" $DK run --rm -p 8080:80 "$IMG" true
	once "$W/d_no" $DK run --rm --network none "$IMG" true
	i=$((i + 1))
done
for k in c_br c_no p_br p_no d_br d_no; do eval "$k=\$(median <\"\$W/$k\")"; done
share() { echo "$1 $2" | awk '{printf "%.1f", ($1 - $2) / 1e6}'; }
c_sh=$(share "$c_br" "$c_no"); p_sh=$(share "$p_br" "$p_no"); d_sh=$(share "$d_br" "$d_no")
printf '\n| median | capsactl | podman (netavark) | docker |\n|---|---|---|---|\n'
printf '| run --rm -p 8080:80 IMAGE true | %s ms | %s ms | %s ms |\n' "$(echo "$c_br" | ms)" "$(echo "$p_br" | ms)" "$(echo "$d_br" | ms)"
printf '| run --rm --network none IMAGE true | %s ms | %s ms | %s ms |\n' "$(echo "$c_no" | ms)" "$(echo "$p_no" | ms)" "$(echo "$d_no" | ms)"
printf '| the network'"'"'s share | %s ms | %s ms | %s ms |\n' "$c_sh" "$p_sh" "$d_sh"
ratio() { echo "$1 $2" | awk '{ if ($2 > 0) printf "%.2f", $1 / $2; else print "n/a" }'; }
echo "capsactl's share / podman's: $(ratio "$c_sh" "$p_sh"); / docker's: $(ratio "$c_sh" "$d_sh")"

# docker is done: stop it (and its containerd) now.
kill "$DOCKERD"
while kill -0 "$DOCKERD" 2>/dev/null; do sleep 0.05; done

echo "2. iperf3 host -> container, 3 runs of 3 s each, taking turns" >&2
$C run -d --name iperf -p 5201:5201 "$IMG" iperf3 -s >/dev/null
CIP=$($C inspect -f '{{.NetworkSettings.IPAddress}}' iperf)
i=0
until iperf3 -c "$CIP" -t 1 >/dev/null 2>&1; do
	i=$((i + 1)); [ $i -lt 100 ] || { echo "iperf3 server did not answer" >&2; exit 1; }
	sleep 0.1
done
gbit() { iperf3 -J -t 3 -c "$1" -p 5201 | jq '.end.sum_received.bits_per_second / 1e9'; }
i=0
while [ $i -lt 3 ]; do
	gbit "$CIP" >>"$W/t_direct"
	gbit 127.0.0.1 >>"$W/t_lo"
	gbit "$HOST_IP" >>"$W/t_host"
	i=$((i + 1))
done
$C rm -f iperf >/dev/null
t_direct=$(median <"$W/t_direct"); t_lo=$(median <"$W/t_lo"); t_host=$(median <"$W/t_host")
printf '\n| iperf3, median Gbit/s | to the bridge address | published port on 127.0.0.1 | published port on the host'"'"'s address |\n|---|---|---|---|\n'
printf '| host -> container | %.2f | %.2f | %.2f |\n' "$t_direct" "$t_lo" "$t_host"
echo "published / direct: 127.0.0.1 $(ratio "$t_lo" "$t_direct"), host address $(ratio "$t_host" "$t_direct")"

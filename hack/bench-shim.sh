#!/bin/sh
# bench-shim.sh: containerd-shim-capsa-v2 against the Go containerd-shim-runc-v2 of the Debian
# containerd package, in one run, on the same busybox image and the same runtime binaries:
#   1. `ctr run --rm IMAGE ID /bin/true`, RUNS times per combination: median wall time;
#   2. RSS of the shim per sleeping container (one shim each, SLEEPERS of them): median VmRSS;
#   3. CONCURRENT containers started at once (`ctr run -d`): wall time until all are started.
# Combinations: {Go shim, capsa shim} x {runc, capsa}.
# Then through containerd's CRI plugin (Kubernetes' path: one containerd, in a network namespace
# of its own with a CNI bridge; the client is tests/integration/examples/cri_bench.rs), per
# RuntimeClass handler, runc (Go shim + runc), capsa-runc (capsa shim + runc) and capsa (capsa
# shim + capsa):
#   4. shim RSS and threads of one pod with 1, 10 and 50 containers;
#   5. PODS pods started at once (RunPodSandbox + CreateContainer + StartContainer each): wall
#      time until all run and the median per pod, median of REPS runs. Each shim runs under its own private
# containerd (own socket, root, state): the capsa shim's PATH has it as containerd-shim-runc-v2,
# so both are driven identically (`--runtime io.containerd.runc.v2 --runc-binary BIN`).
# The Go shim keeps its sockets in /run/containerd/s and runc state in /run/containerd/runc/NS
# (hard-wired); this script removes what it created there.
#
# Usage (root): hack/bench-shim.sh [RUNS (default 20)] [SLEEPERS (default 10)] [CONCURRENT (default 100)]
#                                  [PODS (default 100)] [REPS (default 3)]
# CRI_ONLY=1 runs parts 4 and 5 only.
# The capsa shim is built here (profile release-shim: release with panic=unwind; static,
# non-PIE like capsa); capsa by hack/build.sh.
set -eu
cd "$(dirname "$0")/.."
. hack/lib.sh
RUNS=${1:-20}
SLEEPERS=${2:-10}
CONCURRENT=${3:-100}
PODS=${4:-100}
REPS=${5:-3}
[ "$(id -u)" = 0 ] || { echo "bench-shim.sh: run as root" >&2; exit 1; }
for c in containerd ctr umoci containerd-shim-runc-v2 runc unshare ip jq; do
	command -v "$c" >/dev/null || { echo "bench-shim.sh: $c missing (hack/deps.sh)" >&2; exit 1; }
done
[ -x target/release/capsa ] || hack/build.sh
cargo rustc --profile release-shim --locked -q -p containerd-shim-capsa-v2 --bin containerd-shim-capsa-v2 -- -C target-feature=+crt-static -C relocation-model=static
SHIM="$PWD/target/release-shim/containerd-shim-capsa-v2"
[ -x /usr/lib/cni/bridge ] || { echo "bench-shim.sh: containernetworking-plugins missing (hack/deps.sh)" >&2; exit 1; }
cargo build --locked -q -p capsa-integration --example cri_bench
CRI_BENCH="$PWD/target/debug/examples/cri_bench"
CAPSA="$PWD/target/release/capsa"
RUNC=$(command -v runc)

W=$(mktemp -d /tmp/capsa-bench-shim.XXXXXX)
RUN_CD_EXISTED=0; [ -e /run/containerd ] && RUN_CD_EXISTED=1
NS=bench$$
PIDS=""
cleanup() {
	if [ -S "$W/cri/c.sock" ]; then # what a failed run left: tasks, containers, the pods' netns
		c="ctr -a $W/cri/c.sock -n k8s.io"
		for t in $($c task ls -q 2>/dev/null); do $c task kill -s KILL "$t" >/dev/null 2>&1 || true; done
		sleep 0.5
		for id in $($c c ls -q 2>/dev/null); do
			ns=$($c c info "$id" 2>/dev/null | jq -r '.Spec.linux.namespaces[]? | select(.type == "network") | .path // empty')
			$c task rm -f "$id" >/dev/null 2>&1 || true
			$c c rm "$id" >/dev/null 2>&1 || true
			case "$ns" in /var/run/netns/cni-*) umount "$ns" 2>/dev/null; rm -f "$ns" ;; esac
		done
	fi
	for sock in "$W"/go/c.sock "$W"/rs/c.sock; do
		[ -S "$sock" ] || continue
		for t in $(ctr -a "$sock" -n "$NS" task ls -q 2>/dev/null); do
			ctr -a "$sock" -n "$NS" task kill -s KILL "$t" >/dev/null 2>&1 || true
		done
		sleep 0.3
		for t in $(ctr -a "$sock" -n "$NS" task ls -q 2>/dev/null); do
			ctr -a "$sock" -n "$NS" task rm -f "$t" >/dev/null 2>&1 || true
		done
		for c in $(ctr -a "$sock" -n "$NS" c ls -q 2>/dev/null); do
			ctr -a "$sock" -n "$NS" c rm "$c" >/dev/null 2>&1 || true
		done
	done
	for p in $PIDS; do kill "$p" 2>/dev/null || true; done
	for p in $PIDS; do while kill -0 "$p" 2>/dev/null; do sleep 0.05; done; done
	grep " $W/" /proc/self/mountinfo | awk '{print $5}' | sort -r | while read -r m; do umount -l "$m" || true; done
	for d in /sys/fs/cgroup/*/"$NS" /sys/fs/cgroup/unified/"$NS" /sys/fs/cgroup/*/capsa-bench /sys/fs/cgroup/unified/capsa-bench; do
		[ -d "$d" ] && rmdir "$d" 2>/dev/null || true
	done
	rmdir "/run/containerd/runc/$NS" 2>/dev/null || true
	if [ $RUN_CD_EXISTED = 0 ]; then # created by the Go shim: remove it again (if empty)
		rmdir /run/containerd/runc /run/containerd/s /run/containerd 2>/dev/null || true
	fi
	rm -rf "$W"
}
trap cleanup EXIT INT TERM

# Image: busybox from /bin/busybox as an OCI layout, imported into both containerds.
mkdir -p "$W/rootfs/bin" "$W/rootfs/proc" "$W/rootfs/sys" "$W/rootfs/dev" "$W/rootfs/tmp"
cp /bin/busybox "$W/rootfs/bin/"
for a in sh true sleep; do ln -s busybox "$W/rootfs/bin/$a"; done
umoci init --layout "$W/oci" && umoci new --image "$W/oci:latest"
umoci insert --rootless --image "$W/oci:latest" "$W/rootfs" / >/dev/null
umoci config --image "$W/oci:latest" --config.cmd /bin/sh --config.env PATH=/bin
# The pods' sandbox image: a pause that exits on TERM and reaps its children.
umoci config --image "$W/oci:latest" --tag pause --config.cmd sh --config.cmd -c \
	--config.cmd "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait \$!; done"
tar -C "$W/oci" -cf "$W/img.tar" .
IMG=docker.io/library/busybox-bench:latest

start_containerd() { # $1 = name, $2 = PATH
	d="$W/$1"; mkdir -p "$d/fifo"
	containerd_config "$d"
	PATH="$2" containerd --config "$d/config.toml" >"$d/containerd.log" 2>&1 &
	PIDS="$PIDS $!"
	wait_containerd "$d" "$1"
	ctr -a "$d/c.sock" -n "$NS" images import --base-name docker.io/library/busybox-bench "$W/img.tar" >/dev/null
}

mkdir -p "$W/rsbin"
ln -s "$SHIM" "$W/rsbin/containerd-shim-runc-v2"
ln -s "$SHIM" "$W/rsbin/containerd-shim-capsa-v2"
SYS_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ms() { echo "$1" | awk '{printf "%.1f", $1 / 1e6}'; }
echo "containerd $(containerd --version | awk '{print $3}'), runc $($RUNC --version | awk 'NR==1 {print $3}'), $(nproc) cores"

if [ "${CRI_ONLY:-}" != 1 ]; then
start_containerd go "$SYS_PATH"
start_containerd rs "$W/rsbin:$SYS_PATH"

# run_rm SHIM RT: median ns of `ctr run --rm ... /bin/true`
run_rm() {
	sock="$W/$1/c.sock"; bin=$RUNC; [ "$2" = capsa ] && bin=$CAPSA
	ctr -a "$sock" -n "$NS" run --rm --fifo-dir "$W/$1/fifo" --runtime io.containerd.runc.v2 --runc-binary "$bin" "$IMG" warm-$1-$2 /bin/true >/dev/null
	i=0
	while [ $i -lt "$RUNS" ]; do
		t0=$(date +%s%N)
		ctr -a "$sock" -n "$NS" run --rm --fifo-dir "$W/$1/fifo" --runtime io.containerd.runc.v2 --runc-binary "$bin" "$IMG" rm-$1-$2-$i /bin/true >/dev/null
		t1=$(date +%s%N)
		echo $((t1 - t0))
		i=$((i + 1))
	done | median
}

# shim_rss SHIM RT: median VmRSS (kB) of the shims of SLEEPERS sleeping containers
shim_rss() {
	sock="$W/$1/c.sock"; bin=$RUNC; [ "$2" = capsa ] && bin=$CAPSA
	i=0
	while [ $i -lt "$SLEEPERS" ]; do
		ctr -a "$sock" -n "$NS" run -d --fifo-dir "$W/$1/fifo" --runtime io.containerd.runc.v2 --runc-binary "$bin" "$IMG" s-$1-$2-$i sleep 1000 >/dev/null
		i=$((i + 1))
	done
	sleep 1
	for p in $(pgrep -f "containerd-shim-[a-z]*-v2 -namespace $NS .*-address $sock"); do
		awk '/^VmRSS:/ {print $2}' "/proc/$p/status"
	done | median
	for t in $(ctr -a "$sock" -n "$NS" task ls -q); do ctr -a "$sock" -n "$NS" task kill -s KILL "$t" 2>/dev/null; done
	sleep 0.5
	for t in $(ctr -a "$sock" -n "$NS" task ls -q); do ctr -a "$sock" -n "$NS" task rm "$t" >/dev/null 2>&1; done
	for c in $(ctr -a "$sock" -n "$NS" c ls -q); do ctr -a "$sock" -n "$NS" c rm "$c"; done
}

# concurrent SHIM RT: ns until CONCURRENT `ctr run -d` all returned
concurrent() {
	sock="$W/$1/c.sock"; bin=$RUNC; [ "$2" = capsa ] && bin=$CAPSA
	t0=$(date +%s%N)
	i=0
	while [ $i -lt "$CONCURRENT" ]; do
		ctr -a "$sock" -n "$NS" run -d --fifo-dir "$W/$1/fifo" --runtime io.containerd.runc.v2 --runc-binary "$bin" "$IMG" c-$1-$2-$i sleep 1000 >/dev/null &
		i=$((i + 1))
	done
	wait
	t1=$(date +%s%N)
	n=$(ctr -a "$sock" -n "$NS" task ls | grep -c RUNNING || true)
	echo "$((t1 - t0)) $n"
	for t in $(ctr -a "$sock" -n "$NS" task ls -q); do ctr -a "$sock" -n "$NS" task kill -s KILL "$t" 2>/dev/null; done
	sleep 1
	for t in $(ctr -a "$sock" -n "$NS" task ls -q); do ctr -a "$sock" -n "$NS" task rm "$t" >/dev/null 2>&1; done
	for c in $(ctr -a "$sock" -n "$NS" c ls -q); do ctr -a "$sock" -n "$NS" c rm "$c"; done
}

echo "ctr: runs=$RUNS sleepers=$SLEEPERS concurrent=$CONCURRENT"
printf '%-24s %14s %14s %22s\n' "shim + runtime" "run --rm (ms)" "shim RSS (MB)" "$CONCURRENT concurrent (ms)"
for rt in runc capsa; do
	for s in go rs; do
		t=$(run_rm $s $rt)
		r=$(shim_rss $s $rt)
		set -- $(concurrent $s $rt)
		name="Go runc-v2"; [ $s = rs ] && name="capsa-v2"
		printf '%-24s %14s %14s %16s (%s up)\n' "$name + $rt" "$(ms "$t")" "$(echo "$r" | awk '{printf "%.2f", $1/1024}')" "$(ms "$1")" "$2"
		eval "T_${s}_$rt=$t R_${s}_$rt=$r C_${s}_$rt=$1"
	done
done
echo "ratios capsa-v2 / Go shim:"
for rt in runc capsa; do
	eval "tg=\$T_go_$rt tr=\$T_rs_$rt rg=\$R_go_$rt rr=\$R_rs_$rt cg=\$C_go_$rt cr=\$C_rs_$rt"
	echo "  on $rt: run --rm $(echo "$tr $tg" | awk '{printf "%.2f", $1/$2}')x, RSS $(echo "$rr $rg" | awk '{printf "%.2f", $1/$2}')x, $CONCURRENT concurrent $(echo "$cr $cg" | awk '{printf "%.2f", $1/$2}')x"
done
echo "capsa-v2 + capsa / Go runc-v2 + runc: run --rm $(echo "$T_rs_capsa $T_go_runc" | awk '{printf "%.2f", $1/$2}')x, RSS $(echo "$R_rs_capsa $R_go_runc" | awk '{printf "%.2f", $1/$2}')x"
fi

# --- CRI: pods through containerd's CRI plugin ----------------------------------------------------
d="$W/cri"
mkdir -p "$d/bin" "$d/cni"
ln -s "$SHIM" "$d/bin/containerd-shim-capsa-v2"
printf 'BinaryName = "%s"\n' "$CAPSA" >"$d/capsa.toml"
printf 'BinaryName = "%s"\n' "$RUNC" >"$d/capsa-runc.toml"
printf '%s\n' '{"cniVersion": "0.4.0", "name": "capsa-bench", "plugins": [{"type": "bridge", "bridge": "bench0", "isGateway": true,' \
	' "ipMasq": false, "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.89.0.0/16"}]], "dataDir": "'"$d/ipam"'"}}]}' \
	>"$d/cni/10-bench.conflist"
cri_plugin='plugins."io.containerd.grpc.v1.cri"'
containerd_config "$d" cri
cat >>"$d/config.toml" <<-CONFIG
	[$cri_plugin]
	  sandbox_image = "docker.io/library/busybox-bench:pause"
	  # Without CAP_SYS_RESOURCE (this host's root) oom_score_adj cannot go below containerd's.
	  restrict_oom_score_adj = true
	  [$cri_plugin.containerd]
	    snapshotter = "overlayfs"
	    default_runtime_name = "runc"
	    [$cri_plugin.containerd.runtimes.runc]
	      runtime_type = "io.containerd.runc.v2"
	      [$cri_plugin.containerd.runtimes.runc.options]
	        BinaryName = "$RUNC"
	    [$cri_plugin.containerd.runtimes.capsa-runc]
	      runtime_type = "io.containerd.capsa.v2"
	      [$cri_plugin.containerd.runtimes.capsa-runc.options]
	        TypeUrl = "io.containerd.capsa.v1.options"
	        ConfigPath = "$d/capsa-runc.toml"
	    [$cri_plugin.containerd.runtimes.capsa]
	      runtime_type = "io.containerd.capsa.v2"
	      [$cri_plugin.containerd.runtimes.capsa.options]
	        TypeUrl = "io.containerd.capsa.v1.options"
	        ConfigPath = "$d/capsa.toml"
	  [$cri_plugin.cni]
	    bin_dir = "/usr/lib/cni"
	    conf_dir = "$d/cni"
CONFIG
# In a network namespace of its own: the CNI bridge and the pods' veths stay there.
PATH="$d/bin:$SYS_PATH" unshare --net -- sh -c 'ip link set lo up && exec containerd --config "$0"' "$d/config.toml" >"$d/containerd.log" 2>&1 &
PIDS="$PIDS $!"
wait_containerd "$d" CRI
ctr -a "$d/c.sock" -n k8s.io images import --base-name docker.io/library/busybox-bench "$W/img.tar" >/dev/null
sleep 1 # the CRI plugin learns about imported images from containerd's events

echo
echo "CRI (containerd's CRI plugin). Handlers: runc = Go shim + runc, capsa-runc = capsa shim + runc, capsa = capsa shim + capsa"
printf '%-11s %9s %9s %9s %7s %7s %7s %16s %13s\n' handler "RSS 1" "RSS 10" "RSS 50" "thr 1" "thr 10" "thr 50" "$PODS pods (ms)" "per pod (ms)"
for h in runc capsa-runc capsa; do
	v=$(echo "$h" | tr - _)
	rss="" thr=""
	for n in 1 10 50; do
		set -- $("$CRI_BENCH" "$d/c.sock" "$h" pod "$n")
		rss="$rss $(echo "$1" | awk '{printf "%.2fMB", $1/1024}')"
		thr="$thr $2"
		eval "R_${v}_$n=$1"
	done
	tots="" pers=""
	r=0
	while [ $r -lt "$REPS" ]; do
		set -- $("$CRI_BENCH" "$d/c.sock" "$h" start "$PODS")
		tots="$tots $1" pers="$pers $2"
		r=$((r + 1))
	done
	tot=$(printf '%s\n' $tots | median)
	per=$(printf '%s\n' $pers | median)
	eval "P_$v=$tot Q_$v=$per"
	printf '%-11s %9s %9s %9s %7s %7s %7s %16s %13s\n' "$h" $rss $thr "$tot" "$per"
done
echo "ratios to the Go shim with runc:"
awk -v g1="$R_runc_1" -v g10="$R_runc_10" -v g50="$R_runc_50" -v c1="$R_capsa_1" -v c10="$R_capsa_10" -v c50="$R_capsa_50" \
	-v pg="$P_runc" -v pr="$P_capsa_runc" -v pc="$P_capsa" -v qg="$Q_runc" -v qr="$Q_capsa_runc" -v qc="$Q_capsa" -v n="$PODS" 'BEGIN {
	printf "  shim RSS per pod (capsa shim): 1 container %.2fx, 10 containers %.2fx, 50 containers %.2fx\n", c1 / g1, c10 / g10, c50 / g50
	printf "  %d pods RunPodSandbox+Create+Start: capsa shim + runc %.2fx, capsa shim + capsa %.2fx", n, pr / pg, pc / pg
	printf " (median per pod %.2fx, %.2fx)\n", qr / qg, qc / qg
}'

#!/bin/bash
# bench.sh: capsa vs runc vs crun, side by side in one run, printed as medians and ratios.
#
#   sudo hack/bench.sh [RUNS]        (default 30 runs per measurement)
#
# The capsa measured is the installed one (`capsa` on PATH, as hack/install.sh puts it), or
# CAPSA_BENCH_BIN; the first line of the report says which binary and which build it is
# (`capsa --version`: commit, static or dynamic, PIE or not), so figures can be compared.
#
# Measures, for each runtime, on the same busybox bundle:
#   1. `run` of /bin/true (create + start + wait + delete in one command);
#   2. create, start, wait until stopped, delete: four commands, as containerd drives them;
#   3. `exec` of /bin/true into a running container;
#   4. an occasional start: `run` of /bin/true after 300 ms of idleness (caches and CPU
#      frequency as a container meets them when starts are rare, not back to back);
#   5. peak RSS of `run /bin/true` (max of the runtime's process tree, /usr/bin/time %M).
# The runtimes interleave: each round measures every step once for each runtime, one runtime
# after another (the order rotating from round to round), so noise from the shared machine
# falls on all of them alike. Three unmeasured warm-up rounds come first. Times are wall
# clock from bash ($EPOCHREALTIME around the commands, which bash forks and execs the same way
# for all three). It is a benchmark, not a test: compare ratios of medians.
#
# BENCH_CGROUP=systemd runs every runtime with --systemd-cgroup (a systemd host: each container
# is a transient scope); hack/systemd-vm.sh with VM_BENCH=RUNS prints both drivers' tables.
#
# crun refuses this hybrid cgroup host unless /sys/fs/cgroup/unified/cgroup.controllers
# looks empty, so the whole benchmark runs in a private mount namespace where that file is
# masked by an empty one (the host's mounts are untouched).
set -euo pipefail
[ -n "${BENCH_TRACE:-}" ] && set -x
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
runs=${1:-30}

if [ -z "${CAPSA_BENCH_INNER:-}" ]; then
	need=""
	for c in runc crun jq busybox /usr/bin/time; do command -v "$c" >/dev/null || need=1; done
	if [ -n "$need" ]; then
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq runc crun jq busybox-static time >/dev/null
	fi
	capsa=${CAPSA_BENCH_BIN:-$(command -v capsa || true)}
	if [ -z "$capsa" ] || [ ! -x "$capsa" ]; then
		echo "bench.sh: no installed capsa on PATH: run hack/install.sh [PREFIX] (and put PREFIX/bin on PATH), or set CAPSA_BENCH_BIN" >&2
		exit 1
	fi
	export CAPSA_BENCH_BIN=$capsa
	empty=$(mktemp)
	CAPSA_BENCH_INNER=1 exec unshare -m --propagation private bash -c \
		'mount --bind "$1" /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null || true; exec "$2" "$3"' \
		bench "$empty" "$0" "$runs"
fi

capsa=$CAPSA_BENCH_BIN
# The cgroup driver: "" (cgroupfs) or --systemd-cgroup.
sd=""
if [ "${BENCH_CGROUP:-}" = systemd ]; then sd="--systemd-cgroup"; fi
work=$(mktemp -d /tmp/capsa-bench.XXXXXX)
declare -A bin=([capsa]=$capsa [runc]=runc [crun]=crun)
order=(capsa runc crun)
cleanup() {
	for r in "${order[@]}"; do
		for id in bench sleeper; do "${bin[$r]}" $sd --root "$work/root-$r" delete -f "$id" >/dev/null 2>&1 || true; done
	done
	rm -rf "$work"
}
trap cleanup EXIT
"$here/mkbundle.sh" "$work/bundle" /bin/true >/dev/null
# crun 1.8 only knows ociVersion 1.0.x; all three get the same config.
jq '.ociVersion = "1.0.2-dev"' "$work/bundle/config.json" >"$work/c" && mv "$work/c" "$work/bundle/config.json"
# A second bundle, sharing the rootfs, whose container sleeps (for exec).
mkdir -p "$work/sleeper"
jq --arg r "$work/bundle/rootfs" '.root.path = $r | .process.args = ["sleep", "1000"]' "$work/bundle/config.json" >"$work/sleeper/config.json"

# One measurement of runtime $1 (binary $2, state root $3), appended to $work/$4-$1:
#   run | cycle | exec | idle: milliseconds;  rss: peak KB.
fail() { echo "bench.sh: $1: $(cat "$work/err")" >&2; exit 1; }
measure() {
	local r=$1 b=$2 root=$3 what=$4 t0 t1
	case $what in
	run | idle)
		if [ "$what" = idle ]; then sleep 0.3; fi
		t0=$EPOCHREALTIME
		"$b" $sd --root "$root" run -b "$work/bundle" bench >/dev/null 2>"$work/err" </dev/null || fail "$r run"
		t1=$EPOCHREALTIME
		;;
	cycle)
		t0=$EPOCHREALTIME
		"$b" $sd --root "$root" create -b "$work/bundle" bench >/dev/null 2>"$work/err" </dev/null || fail "$r create"
		"$b" $sd --root "$root" start bench 2>"$work/err" || fail "$r start"
		until "$b" $sd --root "$root" state bench 2>"$work/err" | grep -q stopped; do :; done
		"$b" $sd --root "$root" delete bench 2>"$work/err" || fail "$r delete"
		t1=$EPOCHREALTIME
		;;
	exec)
		t0=$EPOCHREALTIME
		"$b" $sd --root "$root" exec sleeper /bin/true >/dev/null 2>"$work/err" </dev/null || fail "$r exec"
		t1=$EPOCHREALTIME
		;;
	rss)
		/usr/bin/time -o "$work/rss" -f %M "$b" $sd --root "$root" run -b "$work/bundle" bench >/dev/null 2>"$work/err" </dev/null || fail "$r run (rss)"
		cat "$work/rss" >>"$work/$what-$r"
		return
		;;
	esac
	awk -v a="${t0/./}" -v b="${t1/./}" 'BEGIN { printf "%.3f\n", (b - a) / 1000 }' >>"$work/$what-$r"
}
median() { # file of numbers -> median
	sort -n "$1" | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

build() { "$capsa" --version | sed -n "s/^$1: //p"; }
echo "capsa $("$capsa" --version | head -1 | awk '{print $3}') at $capsa (commit $(build commit), build $(build build))"
echo "vs $(runc --version | head -1) / $(crun --version | head -1), $runs rounds, runtimes interleaved, cgroup driver ${BENCH_CGROUP:-cgroupfs}"
for r in "${order[@]}"; do
	"${bin[$r]}" $sd --root "$work/root-$r" run -d -b "$work/sleeper" sleeper >/dev/null 2>"$work/err" </dev/null || fail "$r run -d sleeper"
done
steps=(run cycle exec idle rss)
for round in $(seq -2 "$runs"); do
	# Rotate the order each round: no runtime always comes first (or right after another).
	k=$(((round + 3) % ${#order[@]}))
	rot=("${order[@]:k}" "${order[@]:0:k}")
	for what in "${steps[@]}"; do
		for r in "${rot[@]}"; do
			measure "$r" "${bin[$r]}" "$work/root-$r" "$what"
		done
	done
	# Rounds -2..0 warm up: their figures are dropped.
	if [ "$round" -le 0 ]; then rm -f "$work"/{run,cycle,exec,idle,rss}-*; fi
done
declare -A run_ms cycle_ms exec_ms idle_ms rss_mb
for r in "${order[@]}"; do
	run_ms[$r]=$(median "$work/run-$r")
	cycle_ms[$r]=$(median "$work/cycle-$r")
	exec_ms[$r]=$(median "$work/exec-$r")
	idle_ms[$r]=$(median "$work/idle-$r")
	rss_mb[$r]=$(awk -v k="$(median "$work/rss-$r")" 'BEGIN { print k / 1024 }')
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
printf '\n%-40s %10s %10s %10s   %s\n' "median" capsa runc crun "capsa/runc capsa/crun"
row() { # label unit assoc-name
	local -n m=$3
	printf '%-40s %10.2f %10.2f %10.2f   %10s %10s\n' "$1 ($2)" "${m[capsa]}" "${m[runc]}" "${m[crun]}" \
		"$(ratio "${m[capsa]}" "${m[runc]}")" "$(ratio "${m[capsa]}" "${m[crun]}")"
}
row "run /bin/true" ms run_ms
row "create+start+wait+delete" ms cycle_ms
row "exec /bin/true" ms exec_ms
row "occasional run (after 300 ms idle)" ms idle_ms
row "peak RSS of run /bin/true" MB rss_mb

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
#   3. peak RSS of `run /bin/true` (max of the runtime's process tree, /usr/bin/time %M);
#   4. `exec` of /bin/true into a running container.
# It is a benchmark, not a test: the machine is shared and noisy; compare ratios of medians.
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
	for c in hyperfine runc crun jq busybox /usr/bin/time; do command -v "$c" >/dev/null || need=1; done
	if [ -n "$need" ]; then
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hyperfine runc crun jq busybox-static time >/dev/null
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
[ "${BENCH_CGROUP:-}" = systemd ] && sd="--systemd-cgroup"
work=$(mktemp -d /tmp/capsa-bench.XXXXXX)
cleanup() {
	for r in "$capsa" runc crun; do
		for id in bench sleeper; do "$r" $sd --root "$work/root-$(basename "$r")" delete -f "$id" >/dev/null 2>&1 || true; done
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

declare -A bin=([capsa]=$capsa [runc]=runc [crun]=crun)
order=(capsa runc crun)

median_ms() { # hyperfine json -> median in ms
	jq '.results[0].median * 1000' "$1"
}

build() { "$capsa" --version | sed -n "s/^$1: //p"; }
echo "capsa $("$capsa" --version | head -1 | awk '{print $3}') at $capsa (commit $(build commit), build $(build build))"
echo "vs $(runc --version | head -1) / $(crun --version | head -1), $runs runs each, cgroup driver ${BENCH_CGROUP:-cgroupfs}"
declare -A run_ms cycle_ms rss_kb exec_ms
for r in "${order[@]}"; do
	b=${bin[$r]}
	root="$work/root-$r"
	hyperfine -N -w 3 -r "$runs" --export-json "$work/run-$r.json" \
		"$b $sd --root $root run -b $work/bundle bench" >/dev/null 2>&1
	run_ms[$r]=$(median_ms "$work/run-$r.json")
	hyperfine -w 3 -r "$runs" --export-json "$work/cycle-$r.json" -S none \
		"sh -c 'R=\"\$0 $sd --root $root\"; \$R create -b $work/bundle bench && \$R start bench && until \$R state bench | grep -q stopped; do :; done; \$R delete bench' $b" >/dev/null 2>&1
	cycle_ms[$r]=$(median_ms "$work/cycle-$r.json")
	samples=()
	for _ in $(seq 1 9); do
		samples+=("$(/usr/bin/time -f %M "$b" $sd --root "$root" run -b "$work/bundle" bench 2>&1 >/dev/null | tail -1)")
	done
	rss_kb[$r]=$(printf '%s\n' "${samples[@]}" | sort -n | sed -n 5p)
	"$b" $sd --root "$root" run -d -b "$work/sleeper" sleeper >/dev/null 2>&1 </dev/null
	hyperfine -N -w 3 -r "$runs" --export-json "$work/exec-$r.json" \
		"$b $sd --root $root exec sleeper /bin/true" >/dev/null 2>&1
	exec_ms[$r]=$(median_ms "$work/exec-$r.json")
	"$b" $sd --root "$root" delete -f sleeper >/dev/null 2>&1 || true
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
printf '\n%-34s %10s %10s %10s   %s\n' "median" capsa runc crun "capsa/runc capsa/crun"
row() { # label unit assoc-name
	local -n m=$3
	printf '%-34s %10.2f %10.2f %10.2f   %10s %10s\n' "$1 ($2)" "${m[capsa]}" "${m[runc]}" "${m[crun]}" \
		"$(ratio "${m[capsa]}" "${m[runc]}")" "$(ratio "${m[capsa]}" "${m[crun]}")"
}
row "run /bin/true" ms run_ms
row "create+start+wait+delete" ms cycle_ms
row "exec /bin/true" ms exec_ms
declare -A rss_mb
for r in "${order[@]}"; do rss_mb[$r]=$(awk -v k="${rss_kb[$r]}" 'BEGIN { print k / 1024 }'); done
row "peak RSS of run /bin/true" MB rss_mb

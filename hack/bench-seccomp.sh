#!/bin/bash
# bench-seccomp.sh: the cost of a docker-like seccomp profile in capsa (pure-Rust BPF
# generator) vs runc and crun (libseccomp), side by side in one run, as medians and ratios.
#
#   sudo hack/bench-seccomp.sh [RUNS]        (default 30 runs per measurement)
#
# The profile is hack/seccomp-docker-default.json: moby's default profile rendered for amd64
# with docker's default capabilities (ERRNO/EPERM by default, 363 allowed names over the
# x86_64, x86 and x32 ABIs, arg conditions on socket, personality (x5), clone; clone3 -> ENOSYS).
#
# Measures, for each runtime, on the same busybox bundle, with and without the profile:
#   1. `run` of /bin/true: the difference of the medians is what compiling and loading the
#      filter costs that runtime (capsa compiles in Rust; runc and crun call libseccomp);
#   2. the per-syscall overhead of the loaded filter, from inside the container: a static C
#      loop (gcc -static -O2) times N calls of
#        - getpid(): its verdict does not depend on arguments, so the kernel's seccomp action
#          cache (5.11+) may answer without running the BPF at all;
#        - personality(0xffffffff): conditional on arg 0 in the profile, so the BPF program
#          runs on every call: this is the generated filter's own cost.
#      Figures are ns per call, median of 5 containers; "overhead" = with - without.
# It is a benchmark, not a test: the machine is shared and noisy; compare ratios of medians.
#
# crun refuses this hybrid cgroup host unless /sys/fs/cgroup/unified/cgroup.controllers
# looks empty, so the whole benchmark runs in a private mount namespace where that file is
# masked by an empty one (the host's mounts are untouched), as in hack/bench.sh.
set -euo pipefail
[ -n "${BENCH_TRACE:-}" ] && set -x
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
runs=${1:-30}
loops=${BENCH_LOOPS:-2000000}

if [ -z "${CAPSA_BENCH_INNER:-}" ]; then
	need=""
	for c in hyperfine runc crun jq busybox gcc; do command -v "$c" >/dev/null || need=1; done
	if [ -n "$need" ]; then
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hyperfine runc crun jq busybox-static gcc libc6-dev >/dev/null
	fi
	[ -x "$repo/target/release/capsa" ] || "$here/build.sh"
	empty=$(mktemp)
	CAPSA_BENCH_INNER=1 exec unshare -m --propagation private bash -c \
		'mount --bind "$1" /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null || true; exec "$2" "$3"' \
		bench "$empty" "$0" "$runs"
fi

capsa=$repo/target/release/capsa
profile=$here/seccomp-docker-default.json
work=$(mktemp -d /tmp/capsa-bench-seccomp.XXXXXX)
declare -A bin=([capsa]=$capsa [runc]=runc [crun]=crun)
order=(capsa runc crun)
cleanup() {
	for r in "${order[@]}"; do
		for id in plain sc probe plain-39 sc-39 plain-135 sc-135; do "${bin[$r]}" --root "$work/root-$r" delete -f "$id" >/dev/null 2>&1 || true; done
	done
	rm -rf "$work"
}
trap cleanup EXIT

"$here/mkbundle.sh" "$work/plain" /bin/true >/dev/null
# The syscall loop, static so it runs on the busybox rootfs.
cat >"$work/sysloop.c" <<'EOF'
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
/* sysloop N NR ARG0: N raw syscalls NR(ARG0); prints "ns-per-call last-ret errno". */
int main(int argc, char **argv) {
	if (argc != 4) return 2;
	long n = atol(argv[1]), nr = atol(argv[2]), r = 0;
	unsigned long a0 = strtoul(argv[3], 0, 0);
	struct timespec t0, t1;
	errno = 0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (long i = 0; i < n; i++) r = syscall(nr, a0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("%.1f %ld %d\n", ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / n, r, r < 0 ? errno : 0);
	return 0;
}
EOF
gcc -static -O2 -o "$work/plain/rootfs/bin/sysloop" "$work/sysloop.c"
# crun 1.8 only knows ociVersion 1.0.x; all runtimes get the same configs, on one rootfs.
jq --arg r "$work/plain/rootfs" '.ociVersion = "1.0.2-dev" | .root.path = $r' "$work/plain/config.json" >"$work/base.json"
bundle() { # NAME SECCOMP(yes|no) ARGS-JSON
	mkdir -p "$work/$1"
	if [ "$2" = yes ]; then
		jq --slurpfile p "$profile" --argjson a "$3" '.linux.seccomp = $p[0] | .process.args = $a' "$work/base.json"
	else
		jq --argjson a "$3" '.process.args = $a' "$work/base.json"
	fi >"$work/$1/config.json"
}
bundle plain no '["true"]'
bundle sc yes '["true"]'
bundle probe yes '["sysloop", "1", "272", "0"]' # unshare(0): a no-op, but not in the profile
for nr in 39 135; do
	a0=0; [ "$nr" = 135 ] && a0=0xffffffff
	bundle "plain-$nr" no "[\"sysloop\", \"$loops\", \"$nr\", \"$a0\"]"
	bundle "sc-$nr" yes "[\"sysloop\", \"$loops\", \"$nr\", \"$a0\"]"
done

median_ms() { jq '.results[0].median * 1000' "$1"; }
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
loop_ns() { # RUNTIME BUNDLE: median ns/call over 5 containers
	local i
	for i in 1 2 3 4 5; do
		"${bin[$1]}" --root "$work/root-$1" run -b "$work/$2" "$2" </dev/null | awk '{ print $1 }'
	done | median
}

echo "capsa $("$capsa" --version | head -1 | awk '{print $3}') / $(runc --version | head -1) / $(crun --version | head -1)"
echo "profile: $(jq '[.syscalls[].names | length] | add' "$profile") names, $(jq '.syscalls | length' "$profile") entries, arches $(jq -c .architectures "$profile"); $runs runs each, $loops syscalls per loop"
# Every runtime must accept the profile and enforce it before anything is timed.
for r in "${order[@]}"; do
	out=$("${bin[$r]}" --root "$work/root-$r" run -b "$work/probe" probe </dev/null 2>&1 || true)
	case "$out" in *" -1 1") ;; *) echo "$r: the profile is not enforced (unshare(0) should fail with EPERM): $out" >&2; exit 1 ;; esac
done

declare -A plain_ms sc_ms cost_ms getpid0 getpid1 pers0 pers1
for r in "${order[@]}"; do
	b=${bin[$r]}
	root="$work/root-$r"
	hyperfine -N -w 3 -r "$runs" --export-json "$work/plain-$r.json" "$b --root $root run -b $work/plain plain" >/dev/null 2>&1
	hyperfine -N -w 3 -r "$runs" --export-json "$work/sc-$r.json" "$b --root $root run -b $work/sc sc" >/dev/null 2>&1
	plain_ms[$r]=$(median_ms "$work/plain-$r.json")
	sc_ms[$r]=$(median_ms "$work/sc-$r.json")
	cost_ms[$r]=$(awk -v a="${sc_ms[$r]}" -v b="${plain_ms[$r]}" 'BEGIN { print a - b }')
	getpid0[$r]=$(loop_ns "$r" plain-39)
	getpid1[$r]=$(loop_ns "$r" sc-39)
	pers0[$r]=$(loop_ns "$r" plain-135)
	pers1[$r]=$(loop_ns "$r" sc-135)
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.2f", a / b }'; }
printf '\n%-44s %9s %9s %9s   %s\n' "median" capsa runc crun "capsa/runc capsa/crun"
row() { # label unit assoc-name
	local -n m=$3
	printf '%-44s %9.2f %9.2f %9.2f   %10s %10s\n' "$1 ($2)" "${m[capsa]}" "${m[runc]}" "${m[crun]}" \
		"$(ratio "${m[capsa]}" "${m[runc]}")" "$(ratio "${m[capsa]}" "${m[crun]}")"
}
row "run /bin/true, no seccomp" ms plain_ms
row "run /bin/true, docker profile" ms sc_ms
row "  seccomp cost (compile + load)" ms cost_ms
row "getpid, no seccomp" ns getpid0
row "getpid, docker profile" ns getpid1
declare -A getpid_d pers_d
for r in "${order[@]}"; do
	getpid_d[$r]=$(awk -v a="${getpid1[$r]}" -v b="${getpid0[$r]}" 'BEGIN { print a - b }')
	pers_d[$r]=$(awk -v a="${pers1[$r]}" -v b="${pers0[$r]}" 'BEGIN { print a - b }')
done
row "  getpid overhead" ns getpid_d
row "personality(0xffffffff), no seccomp" ns pers0
row "personality(0xffffffff), docker profile" ns pers1
row "  personality overhead (BPF runs)" ns pers_d

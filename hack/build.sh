#!/bin/sh
# build.sh: build the release `capsa` binary (and capsactl's monitor) as static, non-PIE
# executables, and capsactl as a static PIE.
#
# Measured here (peak RSS of `capsa run /bin/true`, /usr/bin/time %M):
#   dynamic glibc, PIE, opt-level s   3.9 MB
#   static glibc, PIE, opt-level s    3.6 MB   (no loader, no shared libc mapping)
#   static glibc, PIE, opt-level z    3.4 MB
#   static glibc, non-PIE, opt z      3.0 MB   (what this builds)
# Most of capsa's RSS is its own text, faulted in 64 KiB at a time, so smaller and
# position-dependent code shows directly. The price of non-PIE is that capsa's own text
# is not randomised (as with runc's Go binary); capsa is short-lived and never parses
# untrusted network input. capsa calls no NSS function (getpwnam & co.), which static
# glibc cannot serve. These flags go to the final binary only: proc-macro crates cannot
# be built with crt-static.
set -eu
cd "$(dirname "$0")/.."
cargo rustc --release --locked -q -p capsa --bin capsa -- -C target-feature=+crt-static -C relocation-model=static
# capsactl's per-container monitor, resident as long as its container runs, the same way
# (RSS of one idle monitor, /proc/PID/smaps_rollup): `capsactl __watch` 4.3 MB; the small
# capsactl-monitor dynamic PIE 2.1 MB; static non-PIE 1.1 MB. A later plain
# `cargo build --release -p capsactl` rebuilds it dynamic (it still works, just larger).
cargo rustc --release --locked -q -p capsactl --bin capsactl-monitor -- -C target-feature=+crt-static -C relocation-model=static
# capsactl itself: static, but PIE (it parses registry responses, archives and Dockerfiles, so
# its text stays randomised). `capsactl run --rm --network none busybox true`, medians of 60
# under load: dynamic PIE 28.9 ms, static PIE 26.9 ms, static non-PIE 26.7 ms (no loader, no
# relocation of shared libraries, in the command and again in the monitor it spawns). Static
# glibc 2.36 resolves registry names through /etc/hosts and DNS (nss files and dns are built
# in); NSS modules outside glibc (nss-resolve, ldap) are not loaded. Every script builds
# capsactl through this file: a plain `cargo build --release -p capsactl` rebuilds it dynamic.
cargo rustc --release --locked -q -p capsactl --bin capsactl -- -C target-feature=+crt-static

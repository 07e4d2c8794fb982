#!/bin/sh
# test.sh: everything CI runs. Installs what the tests need, builds capsa once (static
# release binary, used by the end-to-end suite), then runs unit tests of every crate and
# the end-to-end suite (real containers, as root), then the cgroup tests in a cgroup v2 VM
# and the systemd cgroup driver's tests in VMs whose PID 1 is systemd.
set -eu
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "test.sh: run as root (the tests run real containers)" >&2; exit 1; }
hack/deps.sh
# Gates: formatting (rustfmt.toml) and clippy with warnings as errors (the workspace lints,
# unwrap_used among them; clippy.toml allows unwrap in tests only).
cargo fmt --all --check
cargo clippy --locked --workspace --all-targets -q -- -D warnings
# The release binaries hack/install.sh installs (tests/install.rs runs it into a temp prefix;
# its own build steps are then no-ops): capsa static non-PIE, the shim, capsactl.
hack/build.sh
cargo build --profile release-shim --locked -q -p containerd-shim-capsa-v2 --bin containerd-shim-capsa-v2
export CAPSA_BIN="$PWD/target/release/capsa"
rc=0
# Leak gate: every cgroup the suites make is gone at the end (capsactl's shared parent /capsa
# with its last container). Compared with what was there before, in case the host has some.
cgroup_dirs() { find /sys/fs/cgroup -maxdepth 3 -type d -name 'capsa*' 2>/dev/null | sort; }
cgroups_before=$(mktemp)
cgroup_dirs >"$cgroups_before"
# The network tests work in namespaces of their own; the machine's namespace must end as it began.
net_state() { { ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//'; nft list tables 2>/dev/null; ls /run/netns 2>/dev/null; } | sort; }
net_before=$(mktemp)
net_state >"$net_before"
cargo test --locked --workspace --no-fail-fast -- --test-threads "${TEST_THREADS:-8}" || rc=1
left=$(cgroup_dirs | comm -13 "$cgroups_before" -)
rm -f "$cgroups_before"
[ -z "$left" ] || { echo "test.sh: cgroups left behind by the tests:"; echo "$left"; rc=1; } >&2
left=$(net_state | comm -13 "$net_before" -)
rm -f "$net_before"
[ -z "$left" ] || { echo "test.sh: links, nft tables or netns left in the machine's namespace by the tests:"; echo "$left"; rc=1; } >&2
# The cgroup host tests of one kind of host (v1 or hybrid: this one), ignored by default
# (the systemd ones run in hack/systemd-vm.sh).
cargo test --locked -p capsa-cgroups --lib -- --ignored --skip systemd_host_tests:: || rc=1
# The cgroup tests once more on a pure cgroup v2 kernel, in a qemu VM (this host is hybrid;
# about 40 s): the crate's tests and the end-to-end cgroups and ops suites.
VM_NO_BUILD=1 hack/cgroup2-vm.sh || rc=1
# The systemd cgroup driver in a VM with systemd as PID 1, on cgroup v2 and on hybrid v1
# (about 20 s each; the first run builds the Debian root with debootstrap, about a minute).
VM_NO_BUILD=1 VM_CGROUP=v2 hack/systemd-vm.sh || rc=1
VM_NO_BUILD=1 VM_CGROUP=hybrid hack/systemd-vm.sh || rc=1
exit $rc

#!/bin/sh
# cgroup2-vm.sh: run the cgroup tests on a pure cgroup v2 kernel.
#
# This host (and CI) has hybrid cgroups and its hierarchies must not be remounted, so the v2
# code paths are tested in a throwaway VM: Debian's kernel (linux-image-amd64) under qemu with
# TCG (KVM does not boot here), from an initramfs holding busybox, the release `capsa`, the
# test binaries and the libraries they link. The VM's /init
#
#   1. copies the initramfs to a tmpfs and switch_roots onto it: pivot_root(2), which capsa
#      uses for every container, refuses an initramfs (rootfs) root;
#   2. mounts cgroup2 alone at /sys/fs/cgroup (a pure v2 host), loads brd for a block device
#      (io.max rules need one);
#   3. runs each test binary and prints `VM-RESULT <binary> <exit code>`.
#
# The tests: the capsa-cgroups crate (unit + host tests through the v2 manager), the
# end-to-end `cgroups` and `ops` suites (tests/integration), which read the v2 files there, and
# `shim_direct` (the containerd shim's v2 Metrics and OOM events, driven over ttrpc without
# containerd, which the VM does not have).
#
# Usage: hack/cgroup2-vm.sh          (builds what it needs; prints the tests' result lines)
# Environment: VM_KERNEL (default: newest /boot/vmlinuz-*), VM_TIMEOUT seconds (default 900),
# VM_NO_BUILD=1 to use the binaries already built, VM_VERBOSE=1 to print every test line.
# Exit status: 0 when every test binary passed in the VM.
set -eu
cd "$(dirname "$0")/.."
ws=$PWD
[ "$(id -u)" = 0 ] || { echo "cgroup2-vm.sh: run as root" >&2; exit 1; }
for t in qemu-system-x86_64 cpio jq strip; do
	command -v "$t" >/dev/null || { echo "cgroup2-vm.sh: $t not found: run hack/deps.sh" >&2; exit 1; }
done
kernel=${VM_KERNEL:-$(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)}
[ -r "$kernel" ] || { echo "cgroup2-vm.sh: no kernel in /boot: apt-get install linux-image-amd64" >&2; exit 1; }
kver=${kernel#*/vmlinuz-}

out=$ws/target/cgroup2-vm
stage=$out/root
rm -rf "$stage"
mkdir -p "$stage"

# --- binaries ------------------------------------------------------------------------------
if [ "${VM_NO_BUILD:-}" != 1 ]; then
	hack/build.sh
fi
# Test executables, as cargo reports them.
tests=$( {
	cargo test --locked -q --no-run --message-format=json -p capsa-cgroups --lib
	cargo test --locked -q --no-run --message-format=json -p capsa-integration --test cgroups --test ops --test shim_direct
} | jq -r 'select(.reason == "compiler-artifact" and .executable != null and .profile.test) | .executable')
[ -n "$tests" ] || { echo "cgroup2-vm.sh: no test binaries" >&2; exit 1; }

# Copies an executable and every library it links to the same paths in the stage.
copy_bin() {
	src=$1 dst=$stage$2
	mkdir -p "$(dirname "$dst")"
	cp "$src" "$dst"
	ldd "$src" 2>/dev/null | awk '/=> \// { print $3 } /^\t\/.*ld-linux/ { print $1 }' | while read -r lib; do
		[ -e "$stage$lib" ] && continue
		mkdir -p "$stage$(dirname "$lib")"
		cp -L "$lib" "$stage$lib"
	done
}

mkdir -p "$stage/bin" "$stage/tests" "$stage/proc" "$stage/sys" "$stage/dev" "$stage/tmp" "$stage/run" "$stage/newroot"
cp /bin/busybox "$stage/bin/busybox"
for a in $(/bin/busybox --list); do
	# procps' ps: the `ps` command's table form runs `ps -ef` and needs its UID/PID header.
	[ "$a" = ps ] || [ "$a" = busybox ] || ln -s busybox "$stage/bin/$a"
done
copy_bin /usr/bin/ps /usr/bin/ps
# The shim for shim_direct (the test's profile; it finds it through CAPSA_SHIM_BIN in the VM).
cargo build --locked -q -p containerd-shim-capsa-v2
copy_bin target/debug/containerd-shim-capsa-v2 /bin/containerd-shim-capsa-v2
# The test binaries find the workspace (hack/mkbundle.sh, target/release/capsa) at the path
# they were built in.
mkdir -p "$stage$ws/tests/integration" "$stage$ws/hack" "$stage$ws/target/release"
cp hack/mkbundle.sh "$stage$ws/hack/"
cp target/release/capsa "$stage$ws/target/release/capsa"
for t in $tests; do
	name=$(basename "$t")
	copy_bin "$t" "/tests/$name"
	strip --strip-debug "$stage/tests/$name"
done
# Block drivers: brd, so io.max rules have a disk to name; loop, for the device rule tests.
for m in brd loop; do
	f=$(find "/lib/modules/$kver" -name "$m.ko" | head -n 1)
	[ -n "$f" ] && cp "$f" "$stage/$m.ko"
done
mkdir -p "$stage/etc"
echo "root:x:0:0:root:/root:/bin/sh" >"$stage/etc/passwd"
echo "root:x:0:" >"$stage/etc/group"

cat >"$stage/init" <<EOF
#!/bin/busybox sh
export PATH=/usr/bin:/bin
if [ ! -e /.tmpfs-root ]; then
	# Stage 1 on the initramfs: move everything to a tmpfs root (see the script's header).
	/bin/busybox mount -t tmpfs -o mode=755 tmpfs /newroot
	for e in /*; do
		case "\$e" in /newroot|/proc|/sys|/dev) ;; *) cp -a "\$e" /newroot/ ;; esac
	done
	mkdir -p /newroot/proc /newroot/sys /newroot/dev
	touch /newroot/.tmpfs-root
	exec switch_root /newroot /init
fi
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /dev/mqueue
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t cgroup2 cgroup2 /sys/fs/cgroup
# No tmpfs on /tmp: the root is already a tmpfs, and the workspace may live under /tmp.
mount -t tmpfs tmpfs /run
hostname capsa-vm
ip link set lo up
[ -e /brd.ko ] && insmod /brd.ko rd_nr=1 rd_size=4096
[ -e /loop.ko ] && insmod /loop.ko max_loop=2
echo "VM-INFO kernel \$(uname -r), cgroup2 controllers: \$(cat /sys/fs/cgroup/cgroup.controllers); block devices: \$(ls /sys/block | tr '\n' ' '); booted in \$(cut -d' ' -f1 /proc/uptime) s"
export CARGO_TARGET_DIR=/tmp/target RUST_BACKTRACE=1 CAPSA_SHIM_BIN=/bin/containerd-shim-capsa-v2
cd $ws
for t in /tests/*; do
	\$t --test-threads 2
	echo "VM-RESULT \$(basename \$t) \$?"
done
echo "VM-DONE at \$(cut -d' ' -f1 /proc/uptime) s"
poweroff -f
EOF
chmod +x "$stage/init"

initrd=$out/initramfs.cpio.gz
(cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1) >"$initrd"
rm -rf "$stage"

# --- boot ----------------------------------------------------------------------------------
log=$out/console.log
start=$(date +%s)
set +e
timeout "${VM_TIMEOUT:-900}" qemu-system-x86_64 \
	-machine q35 -accel tcg,thread=multi -cpu max -smp 2 -m 2048 \
	-kernel "$kernel" -initrd "$initrd" \
	-append "console=ttyS0 rdinit=/init panic=-1 quiet loglevel=3" \
	-display none -serial "file:$log" -monitor none -no-reboot -nodefaults </dev/null
qrc=$?
set -e
secs=$(($(date +%s) - start))

grep -a "^VM-INFO" "$log" || true
if [ "${VM_VERBOSE:-}" = 1 ]; then
	grep -a -E "^test |^---- |panicked|^test result" "$log" || true
else
	# Failures in full, then the summaries.
	sed -n '/^---- /,/^failures:$/p' "$log" | grep -a -v "^failures:" || true
	grep -a -E "^test .*FAILED|^test result" "$log" || true
fi
grep -a -E "^VM-RESULT|^VM-DONE" "$log" || true
echo "cgroup2-vm: ${secs}s (qemu exit $qrc), console log $log"
if ! grep -aq "^VM-DONE" "$log"; then
	echo "cgroup2-vm: the VM did not finish (timeout or crash); see $log" >&2
	exit 1
fi
if grep -a "^VM-RESULT" "$log" | tr -d '\r' | grep -vq " 0\$"; then
	exit 1
fi

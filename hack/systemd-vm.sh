#!/bin/sh
# systemd-vm.sh: the systemd cgroup driver's tests, in a VM whose PID 1 is systemd.
#
# This host has no systemd, so the driver (`capsa --systemd-cgroup`, capsa-cgroups'
# systemd/ module) is tested in a throwaway VM like hack/cgroup2-vm.sh's: Debian's kernel
# under qemu with TCG, booting a small Debian 12 root with systemd as PID 1.
#
#   1. The root (cached in target/systemd-vm/base, rebuilt when the package list or its
#      setup below changes): `debootstrap --variant=minbase` with systemd, dbus (the system
#      bus and a user bus), runc/crun/hyperfine (the benchmark), containerd and umoci (the
#      shim test), a user `capsa-user` (uid
#      1000) whose systemd manager starts at boot (lingering), timers and gettys masked, and
#      a unit that runs /capsa/run once the system is up. Needs Debian's mirror the first
#      time (about a minute); nothing after.
#   2. Per run: the root plus the release `capsa`, the test binaries and hack/mkbundle.sh
#      (at this workspace's path, where the tests look) becomes an ext4 image with
#      `mkfs.ext4 -d`; a tiny initramfs loads virtio_blk and ext4, mounts it and hands over
#      to systemd.
#   3. /capsa/run (in the VM) runs the capsa-cgroups systemd tests, the end-to-end `systemd`
#      suite and the shim suite's SystemdCgroup test under a private containerd (all
#      `#[ignore]`d elsewhere), prints `VM-RESULT <binary> <exit code>` on the second serial
#      port, and powers off.
#
# Usage: hack/systemd-vm.sh                 (builds what it needs; prints the tests' results)
# Environment: VM_CGROUP=v2 (default; systemd.unified_cgroup_hierarchy=1) or hybrid (=0: v1
#   controllers, systemd's own tree on cgroup2); VM_BENCH=RUNS to run hack/bench.sh in the VM
#   with the cgroupfs and the systemd driver instead of the tests; VM_NO_BUILD=1 to use the
#   binaries already built; VM_TEST_ARGS for every test binary (default "--test-threads 2");
#   VM_JOURNAL=1 to boot systemd with debug logging and print the journal at the end;
#   VM_CAPSA_BIN=/usr/sbin/runc to run the end-to-end suite against the VM's runc (reference);
#   VM_SH='shell commands' to run those in the VM instead (output printed);
#   VM_KERNEL, VM_TIMEOUT seconds (default 900), VM_VERBOSE=1, DEBIAN_MIRROR (default
#   http://deb.debian.org/debian).
# Exit status: 0 when every test binary passed in the VM.
set -eu
cd "$(dirname "$0")/.."
ws=$PWD
[ "$(id -u)" = 0 ] || { echo "systemd-vm.sh: run as root" >&2; exit 1; }
for t in qemu-system-x86_64 debootstrap mkfs.ext4 cpio modprobe jq strip; do
	command -v "$t" >/dev/null || { echo "systemd-vm.sh: $t not found: run hack/deps.sh" >&2; exit 1; }
done
kernel=${VM_KERNEL:-$(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)}
[ -r "$kernel" ] || { echo "systemd-vm.sh: no kernel in /boot: apt-get install linux-image-amd64" >&2; exit 1; }
kver=${kernel#*/vmlinuz-}
case "${VM_CGROUP:-v2}" in
v2) cgroup_arg="systemd.unified_cgroup_hierarchy=1" ;;
hybrid) cgroup_arg="systemd.unified_cgroup_hierarchy=0" ;;
*) echo "systemd-vm.sh: VM_CGROUP must be v2 or hybrid" >&2; exit 1 ;;
esac
out=$ws/target/systemd-vm
mkdir -p "$out"

# --- 1. the Debian root, cached ------------------------------------------------------------
# Bump base_version when the setup below changes.
base_version=1
pkgs="systemd,systemd-sysv,dbus,dbus-user-session,libpam-systemd,busybox-static,procps,iproute2,util-linux,runc,crun,hyperfine,jq,time,containerd,umoci"
stamp="$base_version $pkgs"
base=$out/base
if [ "$(cat "$base/.capsa-stamp" 2>/dev/null)" != "$stamp" ]; then
	echo "systemd-vm: building the Debian root (debootstrap, once)"
	rm -rf "$base" "$base.new"
	mkdir -p "$out/debs"
	debootstrap --variant=minbase --include="$pkgs" --cache-dir="$out/debs" \
		bookworm "$base.new" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$out/debootstrap.log" 2>&1 ||
		{ tail -n 20 "$out/debootstrap.log" >&2; echo "systemd-vm.sh: debootstrap failed (log: $out/debootstrap.log)" >&2; exit 1; }
	r=$base.new
	echo capsa-sd-vm >"$r/etc/hostname"
	echo "/dev/vda / ext4 rw,relatime 0 1" >"$r/etc/fstab"
	# Nothing that waits for a terminal, the network or the clock.
	for u in getty@tty1.service serial-getty@ttyS0.service serial-getty@ttyS1.service getty.target \
		apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer e2scrub_reap.service \
		fstrim.timer systemd-pstore.service systemd-timesyncd.service remote-fs.target; do
		ln -sf /dev/null "$r/etc/systemd/system/$u"
	done
	chroot "$r" useradd --create-home --uid 1000 --shell /bin/sh capsa-user
	# Lingering: logind starts user@1000.service (the user's manager, its bus) at boot.
	mkdir -p "$r/var/lib/systemd/linger"
	touch "$r/var/lib/systemd/linger/capsa-user"
	cat >"$r/etc/systemd/system/capsa-vm-tests.service" <<-'EOF'
		[Unit]
		Description=capsa systemd-driver tests
		After=multi-user.target user@1000.service dbus.service systemd-logind.service
		Wants=user@1000.service
		[Service]
		Type=oneshot
		ExecStart=/capsa/run
		[Install]
		WantedBy=multi-user.target
	EOF
	mkdir -p "$r/etc/systemd/system/multi-user.target.wants"
	ln -sf ../capsa-vm-tests.service "$r/etc/systemd/system/multi-user.target.wants/capsa-vm-tests.service"
	rm -rf "$r/usr/share/doc/"* "$r/usr/share/man/"* "$r/usr/share/locale/"* "$r/var/cache/apt/"* "$r/var/lib/apt/lists/"*
	echo "$stamp" >"$r/.capsa-stamp"
	mv "$r" "$base"
fi

# --- 2. the image: root + binaries ---------------------------------------------------------
if [ "${VM_NO_BUILD:-}" != 1 ]; then
	hack/build.sh
fi
tests=$( {
	cargo test --locked -q --no-run --message-format=json -p capsa-cgroups --lib
	cargo test --locked -q --no-run --message-format=json -p capsa-integration --test systemd --test shim
} | jq -r 'select(.reason == "compiler-artifact" and .executable != null and .profile.test) | .executable')
[ -n "$tests" ] || { echo "systemd-vm.sh: no test binaries" >&2; exit 1; }

stage=$out/stage
rm -rf "$stage"
# Hard links: the stage only gains new files, so the cached root is not touched.
cp -al "$base" "$stage"
# The test binaries find the workspace (hack/mkbundle.sh, target/release/capsa) at the path
# they were built in, through tests/integration/../..
mkdir -p "$stage/capsa/tests" "$stage$ws/hack" "$stage$ws/target/release" "$stage$ws/tests/integration"
cp hack/mkbundle.sh hack/bench.sh "$stage$ws/hack/"
cp target/release/capsa "$stage$ws/target/release/capsa"
# The shim (containerd-shim-capsa-v2, same profile as the tests) for the shim suite's test.
shim=$(dirname "$(echo "$tests" | head -n 1)")/../containerd-shim-capsa-v2
[ -x "$shim" ] || cargo build --locked -q -p containerd-shim-capsa-v2
cp "$shim" "$stage/capsa/containerd-shim-capsa-v2"
for t in $tests; do
	name=$(basename "$t")
	cp "$t" "$stage/capsa/tests/$name"
	strip --strip-debug "$stage/capsa/tests/$name"
done
# Kernel modules the tests load, in dependency order: brd (a block device for io limits),
# loop, overlay (containerd's snapshotter).
mkdir -p "$stage/capsa/modules"
modprobe -a --show-depends -S "$kver" brd loop overlay | awk '$1 == "insmod" && !seen[$2]++ { print $2 }' | while read -r m; do
	cp "$m" "$stage/capsa/modules/"
	basename "$m" >>"$stage/capsa/modules/order"
done
# What /capsa/run runs: test binaries with their arguments, or the benchmark.
printf 'VM_BENCH="%s"\nVM_TEST_ARGS="%s"\nVM_JOURNAL="%s"\nCAPSA_BIN="%s"\nBENCH_TRACE="%s"\n' "${VM_BENCH:-}" \
	"${VM_TEST_ARGS:---test-threads 2}" "${VM_JOURNAL:-}" "${VM_CAPSA_BIN:-}" "${BENCH_TRACE:-}" >"$stage/capsa/env"
# VM_SH: a shell script to run in the VM instead of the tests (for looking around).
printf '%s\n' "${VM_SH:-}" >"$stage/capsa/sh"
cat >"$stage/capsa/run" <<EOF
#!/bin/sh
# Runs in the VM as capsa-vm-tests.service; results on the second serial port.
exec >/dev/ttyS1 2>&1
. /capsa/env
export PATH=/usr/sbin:/usr/bin:/sbin:/bin RUST_BACKTRACE=1 HOME=/root CARGO_TARGET_DIR=/tmp/target CAPSA_BIN BENCH_TRACE
export CAPSA_SHIM_BIN=/capsa/containerd-shim-capsa-v2
# The user's manager and its bus (rootless tests).
i=0
until [ -S /run/user/1000/bus ] && systemctl is-active -q user@1000.service; do
	i=\$((i + 1)); [ \$i -gt 300 ] && { echo "VM-INFO user@1000.service did not start"; break; }
	sleep 0.1
done
echo "VM-INFO kernel \$(uname -r), systemd \$(systemctl --version | head -1 | cut -d' ' -f2), cgroup \$(stat -fc %T /sys/fs/cgroup), controllers: \$(cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null); up \$(cut -d' ' -f1 /proc/uptime) s"
for m in \$(cat /capsa/modules/order); do
	case \$m in brd.ko) args="rd_nr=1 rd_size=4096" ;; loop.ko) args="max_loop=2" ;; *) args= ;; esac
	busybox insmod /capsa/modules/\$m \$args
done
cd $ws
if [ -s /capsa/sh ] && [ -n "\$(cat /capsa/sh)" ]; then
	sh -x /capsa/sh 2>&1 | sed 's/^/VM-SH /'
elif [ -n "\$VM_BENCH" ]; then
	# The staged target/release/capsa (hack/build.sh's, the build hack/install.sh installs).
	export CAPSA_BENCH_BIN=$ws/target/release/capsa
	hack/bench.sh "\$VM_BENCH" 2>&1 | sed 's/^/VM-BENCH /'
	BENCH_CGROUP=systemd hack/bench.sh "\$VM_BENCH" 2>&1 | sed 's/^/VM-BENCH /'
else
	for t in /capsa/tests/*; do
		case "\$(basename \$t)" in
		capsa_cgroups-*) \$t --ignored systemd_host_tests:: \$VM_TEST_ARGS ;;
		*) \$t --ignored \$VM_TEST_ARGS ;;
		esac
		echo "VM-RESULT \$(basename \$t) \$?"
	done
fi
[ -n "\$VM_JOURNAL" ] && journalctl -b --no-pager -o short-monotonic | sed 's/^/VM-JOURNAL /'
echo "VM-DONE at \$(cut -d' ' -f1 /proc/uptime) s"
sync
systemctl poweroff --force --force
EOF
chmod +x "$stage/capsa/run"
img=$out/disk.img
rm -f "$img"
mkfs.ext4 -q -F -L capsa-root -d "$stage" "$img" 3G
rm -rf "$stage"

# The initramfs: busybox and the modules to mount the image, then systemd.
initrd=$out/initramfs.cpio.gz
ird=$out/initrd
rm -rf "$ird"
mkdir -p "$ird/bin" "$ird/mods" "$ird/proc" "$ird/sys" "$ird/dev" "$ird/newroot"
cp /bin/busybox "$ird/bin/busybox"
for a in sh mount umount insmod switch_root sleep; do ln -s busybox "$ird/bin/$a"; done
modprobe -a --show-depends -S "$kver" virtio_pci virtio_blk ext4 | awk '$1 == "insmod" && !seen[$2]++ { print $2 }' >"$ird/mods/order.full"
: >"$ird/mods/order"
while read -r m; do
	cp "$m" "$ird/mods/"
	basename "$m" >>"$ird/mods/order"
done <"$ird/mods/order.full"
cat >"$ird/init" <<'EOF'
#!/bin/sh
mount -t proc proc /proc
mount -t devtmpfs devtmpfs /dev
for m in $(cat /mods/order); do insmod "/mods/$m"; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
mount -t ext4 -o rw /dev/vda /newroot || { echo "initramfs: cannot mount /dev/vda"; exec sh; }
umount /dev /proc
exec switch_root /newroot /sbin/init
EOF
chmod +x "$ird/init"
(cd "$ird" && find . | cpio -o -H newc --quiet | gzip -1) >"$initrd"
rm -rf "$ird"

# --- 3. boot --------------------------------------------------------------------------------
console=$out/console.log
results=$out/results.log
rm -f "$console" "$results"
start=$(date +%s)
set +e
timeout "${VM_TIMEOUT:-900}" qemu-system-x86_64 \
	-machine q35 -accel tcg,thread=multi -cpu max -smp 2 -m 2048 \
	-kernel "$kernel" -initrd "$initrd" \
	-drive "file=$img,format=raw,if=virtio,cache=unsafe" \
	-append "console=ttyS0 rdinit=/init panic=-1 quiet loglevel=3 systemd.show_status=false $cgroup_arg ${VM_JOURNAL:+systemd.log_level=debug}" \
	-display none -serial "file:$console" -serial "file:$results" -monitor none -no-reboot -nodefaults </dev/null
qrc=$?
set -e
secs=$(($(date +%s) - start))
rm -f "$img"

grep -a "^VM-INFO" "$results" || true
if [ -n "${VM_BENCH:-}" ]; then
	sed -n 's/^VM-BENCH //p' "$results" | tr -d '\r'
elif [ -n "${VM_SH:-}" ]; then
	sed -n 's/^VM-SH //p' "$results" | tr -d '\r'
elif [ "${VM_VERBOSE:-}" = 1 ]; then
	grep -a -E "^test |^---- |panicked|^test result" "$results" || true
else
	sed -n '/^---- /,/^failures:$/p' "$results" | grep -a -v "^failures:" || true
	grep -a -E "^test .*FAILED|^test result" "$results" || true
fi
grep -a -E "^VM-RESULT|^VM-DONE" "$results" || true
echo "systemd-vm (${VM_CGROUP:-v2}): ${secs}s (qemu exit $qrc), console $console, results $results"
if ! grep -aq "^VM-DONE" "$results"; then
	echo "systemd-vm: the VM did not finish (timeout or crash); see $console and $results" >&2
	exit 1
fi
if grep -a "^VM-RESULT" "$results" | tr -d '\r' | grep -vq " 0\$"; then
	exit 1
fi

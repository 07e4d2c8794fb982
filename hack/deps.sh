#!/bin/sh
# deps.sh: the Debian packages capsa's demo, tests and benchmarks use.
#   busybox-static  the rootfs of test bundles        runc, crun   reference behaviour, bench
#   jq, hyperfine, time  bench.sh                     iproute2, util-linux, mount, passwd  tests (ip, unshare, runuser, mount, useradd)
#   containerd (containerd, ctr, Go containerd-shim-runc-v2), umoci  shim tests (also util-linux script), bench-shim.sh
#   containernetworking-plugins (bridge, host-local, loopback)  CRI tests (tests/cri.rs), bench-shim.sh
#   protobuf-compiler (protoc)  builds the CRI v1 client (k8s-cri) of the CRI tests
#   podman, conmon, netavark  podman tests (podman --runtime capsa, its stock seccomp profile)
# The Rust toolchain (cargo) is expected on PATH; Debian's own rustc is too old.
set -eu
pkgs="busybox-static runc crun jq hyperfine time iproute2 util-linux mount passwd containerd umoci"
pkgs="$pkgs containernetworking-plugins protobuf-compiler podman conmon netavark"
# cgroup2-vm.sh, the cgroup v2 VM: qemu (TCG), a Debian kernel, cpio for the initramfs,
# binutils (strip), procps (ps, for the `ps` tests inside the VM).
pkgs="$pkgs qemu-system-x86 linux-image-amd64 cpio binutils procps"
# capsa-image / capsactl tests: skopeo and umoci make and read image archives, sqlite3 checks the
# store's database; bench-image.sh: podman and containerd as peers, debootstrap for the Debian image.
pkgs="$pkgs skopeo sqlite3 debootstrap"
# capsactl cp tests: gcc builds the booby-trapped library of the CVE-2019-14271 test.
pkgs="$pkgs gcc"
# systemd-vm.sh, the systemd VM: debootstrap (its Debian root, from Debian's mirror, listed
# above), e2fsprogs (mkfs.ext4 -d), kmod (modprobe --show-depends for the initramfs).
pkgs="$pkgs e2fsprogs kmod"
# capsa-network tests: nftables (nft lists the rules the crate writes over netlink).
pkgs="$pkgs nftables"
# capsa-registry tests and bench-registry.sh: docker-registry (a real registry on 127.0.0.1), htpasswd
# (bcrypt users), openssl (a test CA, the token server's RS256 signatures).
pkgs="$pkgs docker-registry apache2-utils openssl"
# lifecycle tests: strace's fault injection kills a create at each directory it makes.
pkgs="$pkgs strace"
# capsactl build tests: libc6-dev with gcc (above): the multi-stage test's toolchain image is made
# from the host's gcc, static libc included.
pkgs="$pkgs libc6-dev"
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
command -v cargo >/dev/null || { echo "deps.sh: cargo not found: install Rust with rustup" >&2; exit 1; }

#!/bin/sh
# install.sh: build capsa as the benchmarks measure it and install it where containerd,
# podman and docker find it.
#
#   hack/install.sh [PREFIX]          (default /usr/local; run as root for a system prefix)
#
# Installs, from this checkout:
#   PREFIX/bin/capsa                      the runtime: static, non-PIE release build (hack/build.sh),
#                                         measurably faster to start than a plain `cargo build`
#   PREFIX/bin/containerd-shim-capsa-v2   containerd finds shims on its PATH: runtime name
#                                         io.containerd.capsa.v2 (ctr, CRI)
#   PREFIX/bin/capsactl                   the docker-like front end (images, containers; no daemon)
#   PREFIX/bin/capsactl-monitor           its per-container monitor (run by capsactl only)
#   SYSCONFDIR/containers/containers.conf.d/50-capsa.conf
#                                         podman (containers.conf drop-in): `podman --runtime capsa`
# and prints the docker daemon.json entry (dockerd is configured by hand: the file is its own).
#
# Environment:
#   SYSCONFDIR  where configuration goes: /etc for PREFIX /usr or /usr/local, else PREFIX/etc
#   DESTDIR     a staging root prepended to every installed path (packaging); the paths written
#               into configuration files are the final ones
#   CAPSA_INSTALL_NO_BUILD=1  install what target/release{,-shim} hold (already built by this script's
#               build step, e.g. by hack/test.sh); the capsa binary is still checked to be the
#               static non-PIE build
#
# Needs cargo on PATH (rustup). Does not take /tmp/capsa-cargo.lock: wrap it yourself where the
# team's rule applies (`flock /tmp/capsa-cargo.lock hack/install.sh /tmp/p`).
set -eu
cd "$(dirname "$0")/.."
prefix=${1:-/usr/local}
case $prefix in /*) ;; *) echo "install.sh: PREFIX must be an absolute path: $prefix" >&2; exit 1 ;; esac
prefix=${prefix%/}
case $prefix in
/usr | /usr/local) sysconfdir=${SYSCONFDIR:-/etc} ;;
*) sysconfdir=${SYSCONFDIR:-$prefix/etc} ;;
esac
dest=${DESTDIR:-}

# What gets installed: "binary:cargo-package:profile". capsa itself is built by hack/build.sh
# (static, non-PIE; capsactl static PIE, its monitor static non-PIE); the shim with its own profile release-shim (a panicking request fails alone
# instead of aborting the shim of a whole pod); the rest is a plain release build. A new binary
# is one more entry here.
binaries="capsa:capsa:release containerd-shim-capsa-v2:containerd-shim-capsa-v2:release-shim capsactl:capsactl:release"
# capsactl runs the capsactl-monitor beside it as each container's monitor (build.sh: static).
binaries="$binaries capsactl-monitor:capsactl:release"

if [ -z "${CAPSA_INSTALL_NO_BUILD:-}" ]; then
	hack/build.sh
	for entry in $binaries; do
		bin=${entry%%:*} rest=${entry#*:}
		pkg=${rest%%:*} profile=${rest#*:}
		case $bin in capsa | capsactl | capsactl-monitor) continue ;; esac
		cargo build --profile "$profile" --locked -q -p "$pkg" --bin "$bin"
	done
fi

# The binary people install must be the one the benchmarks measure.
build=$(target/release/capsa --version | sed -n 's/^build: //p')
case $build in
"static, non-PIE, release") ;;
*)
	echo "install.sh: target/release/capsa is a \"$build\" build, not the static non-PIE one: run hack/build.sh" >&2
	exit 1
	;;
esac

install -d "$dest$prefix/bin"
for entry in $binaries; do
	bin=${entry%%:*} profile=${entry##*:}
	install -m 0755 "target/$profile/$bin" "$dest$prefix/bin/$bin"
done

conf=$dest$sysconfdir/containers/containers.conf.d
install -d "$conf"
cat >"$conf/50-capsa.conf" <<EOF
# Installed by capsa's hack/install.sh: \`podman --runtime capsa ...\`, or set
# [engine] runtime = "capsa" to make it podman's default.
[engine.runtimes]
capsa = ["$prefix/bin/capsa"]
EOF

echo "installed: $("$dest$prefix/bin/capsa" --version | head -1) ($build) in $dest$prefix/bin"
echo "  capsactl:    capsactl --help"
echo "  containerd:  ctr run --runtime io.containerd.capsa.v2 ...   (shim on containerd's PATH)"
echo "  podman:      podman --runtime capsa run ...                 ($conf/50-capsa.conf)"
echo "  docker:      add to /etc/docker/daemon.json, then restart dockerd and use --runtime capsa:"
echo "               {\"runtimes\": {\"capsa\": {\"path\": \"$prefix/bin/capsa\"}}}"
case ":$PATH:" in *":$prefix/bin:"*) ;; *) echo "  note: $prefix/bin is not on PATH" ;; esac

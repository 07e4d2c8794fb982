# hack/lib.sh: shell functions the hack/ scripts share (sourced, POSIX sh).

# containerd_config DIR [cri]: writes DIR/config.toml for a private containerd (its own root,
# state, sockets and opt dir under DIR; the snapshotters and tracing this host lacks disabled).
# The CRI plugin is disabled unless the second argument is "cri"; callers append their sections.
containerd_config() {
	disabled='"io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"'
	[ "${2:-}" = cri ] || disabled="\"io.containerd.grpc.v1.cri\", $disabled"
	cat >"$1/config.toml" <<-CONFIG
	version = 2
	root = "$1/root"
	state = "$1/state"
	disabled_plugins = [$disabled]
	[grpc]
	  address = "$1/c.sock"
	[ttrpc]
	  address = "$1/c.sock.ttrpc"
	[plugins."io.containerd.internal.v1.opt"]
	  path = "$1/opt"
	CONFIG
}

# wait_containerd DIR NAME: until the containerd configured in DIR answers (10 s at most).
wait_containerd() {
	i=0
	until ctr -a "$1/c.sock" version >/dev/null 2>&1; do
		i=$((i + 1)); [ $i -lt 200 ] || { echo "containerd $2 did not start" >&2; exit 1; }
		sleep 0.05
	done
}

# median: the median of the numbers on stdin, one per line.
median() { sort -g | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2] + a[NR/2+1]) / 2}'; }

# debian_rootfs: prints the path of a Debian bookworm minbase root made by debootstrap, cached
# in /var/cache/capsa-bench (made on the first call, about a minute).
debian_rootfs() {
	cache=/var/cache/capsa-bench
	if [ ! -x "$cache/debian-rootfs/bin/true" ]; then
		mkdir -p "$cache"
		rm -rf "$cache/debian-rootfs"
		debootstrap --variant=minbase bookworm "$cache/debian-rootfs" http://deb.debian.org/debian >"$cache/debootstrap.log" 2>&1
	fi
	echo "$cache/debian-rootfs"
}

# bench_workdir NAME: sets W (a fresh dir /tmp/capsa-bench-NAME.*), NS and PIDS, and traps the
# exit to kill PIDS, unmount what is mounted under W and remove it.
bench_workdir() {
	W=$(mktemp -d "/tmp/capsa-bench-$1.XXXXXX")
	NS=bench$$
	PIDS=""
	trap bench_cleanup EXIT INT TERM
}
bench_cleanup() {
	for p in $PIDS; do kill "$p" 2>/dev/null || true; done
	for p in $PIDS; do while kill -0 "$p" 2>/dev/null; do sleep 0.05; done; done
	grep " $W/" /proc/self/mountinfo | awk '{print $5}' | sort -r | while read -r m; do umount -l "$m" || true; done
	rm -rf "$W"
}

# bench_peers PKG...: installs the Debian packages a benchmark's peers need that the tests do
# not (so they are not in deps.sh: docker.io's dockerd, say, has no place on a CI machine).
bench_peers() {
	_missing=""
	for _p in "$@"; do
		dpkg-query -W -f='${Status}' "$_p" 2>/dev/null | grep -q "ok installed" || _missing="$_missing $_p"
	done
	[ -n "$_missing" ] || return 0
	flock /tmp/capsa-apt.lock sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $_missing >/dev/null"
}

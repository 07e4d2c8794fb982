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

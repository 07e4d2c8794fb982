#!/bin/sh
# mkbundle.sh DIR [ARG...] — make an OCI bundle from busybox-static.
#
#   DIR/rootfs       bin/busybox + a symlink per applet (`busybox --list`), /etc/passwd and
#                    /etc/group (root, nobody 65534, alice 1000:1000, wheel 10), empty
#                    /tmp /proc /sys /dev /root /home/alice /mnt /etc/{hosts,resolv.conf,hostname}
#   DIR/config.json  the shape `runc spec` (runc 1.1) writes, except process.terminal=false;
#                    process.args = ARG... (default: sh)
#
# Idempotent and fast (~0.1 s): the rootfs is only touched where it differs from what it should
# be; config.json is always rewritten. Needs only a POSIX sh and busybox-static
# (`apt-get install busybox-static`), not runc or jq.
#
# Environment: BUSYBOX=/path/to/static/busybox (default /bin/busybox).
set -eu

usage() { echo "usage: $0 DIR [ARG...]" >&2; exit 2; }
[ $# -ge 1 ] || usage
case "$1" in -h|--help) usage ;; esac

dir=$1; shift
bb=${BUSYBOX:-/bin/busybox}
[ -x "$bb" ] || { echo "$0: $bb not found: apt-get install busybox-static" >&2; exit 1; }
# A dynamically linked busybox would need its libraries in the rootfs.
if command -v file >/dev/null 2>&1 && ! file -L "$bb" | grep -q 'statically linked'; then
	echo "$0: $bb is not statically linked (want the busybox-static package)" >&2
	exit 1
fi

rootfs=$dir/rootfs
mkdir -p "$rootfs"
for d in bin etc tmp proc sys dev root home/alice mnt; do
	[ -d "$rootfs/$d" ] || mkdir -p "$rootfs/$d"
done
chmod 1777 "$rootfs/tmp"
chmod 700 "$rootfs/root"

# Copy busybox only when it changed (cmp is cheap, the copy is ~2 MB).
if ! cmp -s "$bb" "$rootfs/bin/busybox" 2>/dev/null; then
	cp "$bb" "$rootfs/bin/busybox.new"
	chmod 755 "$rootfs/bin/busybox.new"
	mv -f "$rootfs/bin/busybox.new" "$rootfs/bin/busybox"
fi

# One relative symlink per applet. Run the loop in busybox's own sh: `ln` is an applet there and
# runs without an exec, which makes this ~4x faster than a loop of /bin/ln.
"$bb" sh -c '
	cd "$1/bin"
	for a in $(./busybox --list); do
		[ "$a" = busybox ] && continue
		[ -L "$a" ] || [ -e "$a" ] || ln -s busybox "$a"
	done
' mkbundle "$rootfs"
# Scripts and tests expect these absolute paths too.
[ -e "$rootfs/sbin" ] || [ -L "$rootfs/sbin" ] || ln -s bin "$rootfs/sbin"
[ -d "$rootfs/usr" ] || mkdir -p "$rootfs/usr"
[ -e "$rootfs/usr/bin" ] || [ -L "$rootfs/usr/bin" ] || ln -s ../bin "$rootfs/usr/bin"
[ -e "$rootfs/usr/sbin" ] || [ -L "$rootfs/usr/sbin" ] || ln -s ../bin "$rootfs/usr/sbin"

# write_if_changed FILE MODE: content on stdin; leaves FILE alone (mtime too) if identical.
write_if_changed() {
	tmp=$1.mkbundle.$$
	cat >"$tmp"
	if cmp -s "$tmp" "$1" 2>/dev/null; then
		rm -f "$tmp"
	else
		chmod "$2" "$tmp"
		mv -f "$tmp" "$1"
	fi
}

write_if_changed "$rootfs/etc/passwd" 644 <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
alice:x:1000:1000:alice:/home/alice:/bin/sh
EOF
write_if_changed "$rootfs/etc/group" 644 <<'EOF'
root:x:0:
wheel:x:10:alice
alice:x:1000:
nogroup:x:65534:
EOF
write_if_changed "$rootfs/etc/hosts" 644 <<'EOF'
127.0.0.1	localhost
::1	localhost ip6-localhost ip6-loopback
EOF
: | write_if_changed "$rootfs/etc/resolv.conf" 644
echo capsa | write_if_changed "$rootfs/etc/hostname" 644
chown 1000:1000 "$rootfs/home/alice" 2>/dev/null || true

# process.args as a JSON array; JSON-escape \ and " (args with control characters are not
# supported — edit config.json afterwards for those).
args=
[ $# -gt 0 ] || set -- sh
for a in "$@"; do
	esc=$(printf '%s' "$a" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')
	args="$args${args:+, }\"$esc\""
done

# Same shape and order as `runc spec` (runc 1.1.5, spec 1.0.2-dev), terminal=false.
write_if_changed "$dir/config.json" 644 <<EOF
{
	"ociVersion": "1.0.2-dev",
	"process": {
		"terminal": false,
		"user": {
			"uid": 0,
			"gid": 0
		},
		"args": [
			$args
		],
		"env": [
			"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			"TERM=xterm"
		],
		"cwd": "/",
		"capabilities": {
			"bounding": [
				"CAP_AUDIT_WRITE",
				"CAP_KILL",
				"CAP_NET_BIND_SERVICE"
			],
			"effective": [
				"CAP_AUDIT_WRITE",
				"CAP_KILL",
				"CAP_NET_BIND_SERVICE"
			],
			"permitted": [
				"CAP_AUDIT_WRITE",
				"CAP_KILL",
				"CAP_NET_BIND_SERVICE"
			],
			"ambient": [
				"CAP_AUDIT_WRITE",
				"CAP_KILL",
				"CAP_NET_BIND_SERVICE"
			]
		},
		"rlimits": [
			{
				"type": "RLIMIT_NOFILE",
				"hard": 1024,
				"soft": 1024
			}
		],
		"noNewPrivileges": true
	},
	"root": {
		"path": "rootfs",
		"readonly": true
	},
	"hostname": "runc",
	"mounts": [
		{
			"destination": "/proc",
			"type": "proc",
			"source": "proc"
		},
		{
			"destination": "/dev",
			"type": "tmpfs",
			"source": "tmpfs",
			"options": [
				"nosuid",
				"strictatime",
				"mode=755",
				"size=65536k"
			]
		},
		{
			"destination": "/dev/pts",
			"type": "devpts",
			"source": "devpts",
			"options": [
				"nosuid",
				"noexec",
				"newinstance",
				"ptmxmode=0666",
				"mode=0620",
				"gid=5"
			]
		},
		{
			"destination": "/dev/shm",
			"type": "tmpfs",
			"source": "shm",
			"options": [
				"nosuid",
				"noexec",
				"nodev",
				"mode=1777",
				"size=65536k"
			]
		},
		{
			"destination": "/dev/mqueue",
			"type": "mqueue",
			"source": "mqueue",
			"options": [
				"nosuid",
				"noexec",
				"nodev"
			]
		},
		{
			"destination": "/sys",
			"type": "sysfs",
			"source": "sysfs",
			"options": [
				"nosuid",
				"noexec",
				"nodev",
				"ro"
			]
		},
		{
			"destination": "/sys/fs/cgroup",
			"type": "cgroup",
			"source": "cgroup",
			"options": [
				"nosuid",
				"noexec",
				"nodev",
				"relatime",
				"ro"
			]
		}
	],
	"linux": {
		"resources": {
			"devices": [
				{
					"allow": false,
					"access": "rwm"
				}
			]
		},
		"namespaces": [
			{
				"type": "pid"
			},
			{
				"type": "network"
			},
			{
				"type": "ipc"
			},
			{
				"type": "uts"
			},
			{
				"type": "mount"
			}
		],
		"maskedPaths": [
			"/proc/acpi",
			"/proc/asound",
			"/proc/kcore",
			"/proc/keys",
			"/proc/latency_stats",
			"/proc/timer_list",
			"/proc/timer_stats",
			"/proc/sched_debug",
			"/sys/firmware",
			"/proc/scsi"
		],
		"readonlyPaths": [
			"/proc/bus",
			"/proc/fs",
			"/proc/irq",
			"/proc/sys",
			"/proc/sysrq-trigger"
		]
	}
}
EOF

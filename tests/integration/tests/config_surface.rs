//! The rest of the OCI config surface (issue 7): scheduling and I/O priority, CPU affinity,
//! personality, recursive mount options, idmapped mounts, and the clear refusals of what
//! this host cannot do (AppArmor, SELinux, Intel RDT).

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use capsa_integration::*;
use std::fs;
use std::os::unix::fs::MetadataExt;

/// Field `n` (1-based) of /proc/self/stat as printed by the container.
fn stat_field(stat: &str, n: usize) -> String {
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split(' ').nth(n - 3).unwrap().to_string()
}

#[test]
fn scheduler_io_priority_affinity_personality() {
    if !is_capsa() {
        return; // runc 1.1 knows none of these fields.
    }
    let mut c = Container::shared("sched");
    c.set("/process/scheduler", json!({"policy": "SCHED_BATCH", "nice": 7}));
    c.set("/process/ioPriority", json!({"class": "IOPRIO_CLASS_IDLE", "priority": 7}));
    c.set("/process/execCPUAffinity", json!({"initial": "0", "final": "0"}));
    c.set("/linux/personality", json!({"domain": "LINUX32"}));
    c.sh("cat /proc/self/stat; grep Cpus_allowed_list /proc/self/status; uname -m; ionice -p $$");
    let out = c.run(&[]).ok();
    let l: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(stat_field(l[0], 19), "7", "nice: {out}");
    assert_eq!(stat_field(l[0], 41), "3", "policy SCHED_BATCH: {out}");
    assert!(l[1].ends_with("\t0"), "affinity: {out}");
    assert_eq!(l[2], "i686", "LINUX32 personality: {out}");
    assert!(l[3].contains("idle"), "ioprio idle: {out}");
}

#[test]
fn unavailable_lsm_and_rdt_are_refused() {
    if !is_capsa() {
        return; // runc applies or ignores these depending on its build.
    }
    for (ptr, v, field) in [
        ("/process/apparmorProfile", json!("capsa-test"), "process.apparmorProfile"),
        ("/process/selinuxLabel", json!("system_u:system_r:container_t:s0"), "process.selinuxLabel"),
        ("/linux/intelRdt", json!({"closID": "capsa"}), "linux.intelRdt"),
        ("/linux/personality", json!({"domain": "LINUX", "flags": ["ADDR_NO_RANDOMIZE"]}), "linux.personality"),
        ("/process/scheduler", json!({"policy": "SCHED_FIFO", "priority": 0}), "process.scheduler.priority"),
        ("/process/execCPUAffinity", json!({"initial": "5-1"}), "process.execCPUAffinity"),
    ] {
        let mut c = Container::shared("refused");
        c.set(ptr, v);
        c.args(&["true"]);
        c.write_config();
        let out = c.create_cmd(&[]).run().fails_cleanly();
        assert!(out.stderr.contains(field), "names {field}: {out}");
        c.assert_clean();
    }
}

/// `rro` makes a recursive bind read-only all the way down; plain `ro` only the top mount.
#[test]
fn recursive_read_only() {
    if !is_capsa() {
        return; // runc 1.1 has rro too, but this checks capsa's mount_setattr path.
    }
    let mut c = Container::new("rro");
    let top = c.host_dir("top");
    let sub = top.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    let sub_src = c.host_dir("subsrc");
    // A mount below the bind source, in a private mount namespace of the test's own.
    let script = format!(
        "mount --bind {} {} && exec {} --root {} run --bundle {} {}",
        sub_src.display(),
        sub.display(),
        runtime_bin().display(),
        c.root.display(),
        c.bundle.display(),
        c.id
    );
    c.add_mount(json!({"destination": "/data", "type": "bind", "source": top.to_str(), "options": ["rbind", "rro"]}));
    c.sh("touch /data/x 2>&1; touch /data/sub/y 2>&1; echo done");
    c.write_config();
    let out = run_host_cmd(
        {
            let mut cmd = std::process::Command::new("unshare");
            cmd.args(["-m", "--propagation", "private", "sh", "-c", &script]);
            cmd
        },
        CMD_TIMEOUT,
    );
    assert!(out.stdout.contains("touch: /data/x: Read-only file system"), "{out}");
    assert!(out.stdout.contains("touch: /data/sub/y: Read-only file system"), "submount is read-only too: {out}");
}

/// `idmap` with mount uidMappings/gidMappings: root-owned files appear owned by the mapped id.
#[test]
fn idmapped_bind_mount() {
    if !is_capsa() {
        return; // runc 1.1 has no idmapped mounts.
    }
    let mut c = Container::shared("idmap");
    let data = c.host_dir("idmapped");
    std::fs::write(data.join("f"), "x").unwrap();
    assert_eq!(std::fs::metadata(data.join("f")).unwrap().uid(), 0);
    c.add_mount(json!({
        "destination": "/mnt", "type": "bind", "source": data.to_str(), "options": ["rbind", "idmap"],
        "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
        "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]
    }));
    c.sh("stat -c '%u %g' /mnt/f");
    let out = c.run(&[]).ok();
    assert_eq!(out.stdout.trim(), "1000 1000", "{out}");
    // On the host, nothing changed.
    assert_eq!(std::fs::metadata(data.join("f")).unwrap().uid(), 0);

    // The use case: a container with its own user namespace sees host-root files as its root.
    let mut u = Container::shared("idmap-userns");
    u.namespace("user", None);
    let maps = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    u.set("/linux/uidMappings", maps.clone());
    u.set("/linux/gidMappings", maps.clone());
    u.add_mount(json!({
        "destination": "/mnt", "type": "bind", "source": data.to_str(), "options": ["rbind", "ridmap"],
        "uidMappings": maps, "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}]
    }));
    u.sh("stat -c '%u %g' /mnt/f; id -u");
    let out = u.run(&[]).ok();
    assert_eq!(out.stdout, "0 0\n0\n", "{out}");
}

/// An idmap on a filesystem that cannot do it (procfs) is refused, naming the mount.
#[test]
fn idmap_refused_where_unsupported() {
    if !is_capsa() {
        return;
    }
    let mut c = Container::shared("idmap-bad");
    c.add_mount(json!({
        "destination": "/mnt", "type": "bind", "source": "/proc/sys", "options": ["bind", "idmap"],
        "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
        "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]
    }));
    c.args(&["true"]);
    c.write_config();
    let out = c.create_cmd(&[]).run().fails_cleanly();
    assert!(out.stderr.contains("mounts["), "{out}");
    c.assert_clean();
}

/// linux.netDevices moves a host interface into the container's network namespace under
/// its new name; a missing device or a shared network namespace is refused.
#[test]
fn net_devices_moved_and_renamed() {
    if !is_capsa() {
        return; // runc 1.1 has no netDevices.
    }
    let host = format!("cnd{}", std::process::id() % 100_000);
    let ip = |args: &[&str]| {
        let mut cmd = std::process::Command::new("ip");
        cmd.args(args);
        run_host_cmd(cmd, CMD_TIMEOUT)
    };
    // This kernel has no dummy driver: one end of a veth pair (the other end is destroyed
    // with it when the container's network namespace goes).
    ip(&["link", "add", &host, "type", "veth", "peer", "name", &format!("{host}p")]).ok();
    let mut c = Container::shared("netdev");
    c.set("/linux/netDevices", json!({ host.clone(): {"name": "eth7"} }));
    c.sh("ip -o link show | cut -d: -f2 | cut -d@ -f1 | tr -d ' ' | sort | tr '\\n' ' '");
    let out = c.run(&[]);
    let gone = wait_until(POLL_TIMEOUT, || !ip(&["link", "show", &host]).success());
    if !gone {
        ip(&["link", "del", &host]);
    }
    let out = out.ok();
    assert_eq!(out.stdout.trim(), "eth7 lo", "{out}");
    assert!(gone, "the device left the host");

    let mut c = Container::shared("netdev-missing");
    c.set("/linux/netDevices", json!({"capsa-nonexistent0": {}}));
    c.args(&["true"]);
    c.write_config();
    let out = c.create_cmd(&[]).run().fails_cleanly();
    assert!(out.stderr.contains("linux.netDevices"), "{out}");
    c.assert_clean();
}

/// Socket activation: with LISTEN_FDS=1 in capsa's environment, fd 3 reaches the container
/// and its environment says LISTEN_FDS=1, LISTEN_PID=1 (as runc does).
#[test]
fn listen_fds_passed_with_env() {
    let mut c = Container::shared("listen-fds");
    let data = c.dir.join("listen.txt");
    std::fs::write(&data, "activated\n").unwrap();
    c.sh("cat <&3; echo $LISTEN_FDS $LISTEN_PID");
    c.write_config();
    // LISTEN_PID must name the runtime's own pid: a shell sets it and execs the runtime.
    let script = format!(
        "LISTEN_PID=$$ LISTEN_FDS=1 exec {} --root {} run --bundle {} {}",
        runtime_bin().display(),
        c.root.display(),
        c.bundle.display(),
        c.id
    );
    let out = Cmd::new("sh", &c.dir).args(["-c", &script]).pass_fd(std::fs::File::open(&data).unwrap(), 3).run().ok();
    assert_eq!(out.stdout, "activated\n1 1\n", "{out}");
    // Without LISTEN_PID naming us, LISTEN_FDS is not ours: nothing is passed.
    let out = c.run_cmd(&[]).env("LISTEN_FDS", "1").pass_fd(std::fs::File::open(&data).unwrap(), 3).run();
    assert!(!out.stdout.contains("activated"), "{out}");
}

/// The session keyring: a new one named _ses.<id> unless --no-new-keyring.
#[test]
fn session_keyring() {
    if !is_capsa() {
        return; // runc too, but its keyring name check would need the same unmasked /proc/keys.
    }
    // /proc/keys is masked by the default config: unmask it. Root there sees every key, so
    // look for this container's own name.
    let unmasked = |c: &mut Container| {
        let masked: Vec<Value> =
            c.config["linux"]["maskedPaths"].as_array().unwrap().iter().filter(|p| *p != "/proc/keys").cloned().collect();
        c.set("/linux/maskedPaths", json!(masked));
    };
    let mut c = Container::shared("keyring");
    unmasked(&mut c);
    c.sh(&format!("grep -c '_ses.{}:' /proc/keys || true", c.id));
    assert_eq!(c.run(&[]).ok().stdout.trim(), "1");
    let mut d = Container::shared("no-keyring");
    unmasked(&mut d);
    d.sh(&format!("grep -c '_ses.{}:' /proc/keys || true", d.id));
    assert_eq!(d.run(&["--no-new-keyring"]).ok().stdout.trim(), "0");
}

/// A hook that is not absolute or not executable: clear error naming the hook, nothing left.
#[test]
fn bad_hooks_are_refused() {
    if !is_capsa() {
        return;
    }
    for (hook, field) in [
        (json!({"path": "bin/true"}), "hooks.prestart[0].path"),
        (json!({"path": "/etc/passwd"}), "hooks.prestart[0]"),
        (json!({"path": "/nonexistent/hook"}), "hooks.prestart[0]"),
    ] {
        let mut c = Container::shared("bad-hook");
        c.set("/hooks/prestart", json!([hook]));
        c.args(&["true"]);
        c.write_config();
        let out = c.create_cmd(&[]).run().fails_cleanly();
        assert!(out.stderr.contains(field), "names {field}: {out}");
        c.assert_clean();
    }
}

/// An unknown mount option (not a flag, so filesystem data the kernel rejects) and a
/// personality domain that does not exist are refused, naming the field.
#[test]
fn bad_mount_option_and_personality() {
    let mut c = Container::shared("bad-mount-opt");
    c.add_mount(json!({"destination": "/mnt", "type": "tmpfs", "source": "tmpfs", "options": ["nosuchoption=1"]}));
    c.args(&["true"]);
    c.write_config();
    let out = c.create_cmd(&[]).run();
    assert_eq!(out.code, Some(1), "{out}");
    if is_capsa() {
        assert!(out.stderr.contains("mounts["), "{out}");
    }
    c.assert_clean();
    if is_capsa() {
        let mut c = Container::shared("bad-personality");
        c.set("/linux/personality", json!({"domain": "LINUX64"}));
        c.args(&["true"]);
        c.write_config();
        let out = c.create_cmd(&[]).run().fails_cleanly();
        assert!(out.stderr.contains("linux.personality"), "{out}");
        c.assert_clean();
    }
}

/// An overlay mount from lowerdir/upperdir/workdir options: the container sees the lower
/// files and its writes land in the upper directory on the host.
#[test]
fn overlay_mount() {
    let mut c = Container::shared("overlay");
    let (lower, upper, work) = (c.host_dir("lower"), c.host_dir("upper"), c.host_dir("work"));
    std::fs::write(lower.join("from-lower"), "L\n").unwrap();
    let data = format!("lowerdir={},upperdir={},workdir={}", lower.display(), upper.display(), work.display());
    c.add_mount(json!({"destination": "/mnt", "type": "overlay", "source": "overlay", "options": [data]}));
    c.sh("cat /mnt/from-lower; echo U > /mnt/new; ls /mnt | tr '\\n' ' '");
    let out = c.run(&[]).ok();
    assert_eq!(out.stdout, "L\nfrom-lower new ", "{out}");
    assert_eq!(std::fs::read_to_string(upper.join("new")).unwrap(), "U\n");
    assert!(!lower.join("new").exists());
}

/// `linux.mountLabel` on a host without SELinux is ignored with a warning (crun's behaviour),
/// not refused: container engines set it whether or not the host has SELinux.
#[test]
fn mount_label_without_selinux_warns() {
    assert!(!std::path::Path::new("/sys/fs/selinux/enforce").exists(), "needs a host without SELinux");
    let mut c = Container::shared("mount-label");
    c.set("/linux/mountLabel", json!("system_u:object_r:container_file_t:s0:c1,c2"));
    c.sh("echo ran");
    if !is_capsa() {
        // runc 1.1.5 passes the label to tmpfs as `context=` and fails (EINVAL).
        c.write_config();
        c.run_cmd(&[]).run().fails_cleanly();
        return;
    }
    let out = c.run(&[]).ok();
    assert_eq!(out.stdout, "ran\n", "{out}");
    assert!(out.stderr.contains("level=warning") && out.stderr.contains("linux.mountLabel"), "{out}");
    c.assert_clean();
}

/// Device cgroup access strings: letters other than r, w, m are ignored with a warning (runc
/// keeps r/w/m and drops the rest), so "rwx" means "rw"; a rule left with no letter does
/// nothing (it must not become "rwm").
#[test]
fn device_access_letters_other_than_rwm_are_ignored() {
    let mut c = Container::shared("dev-access");
    c.set(
        "/linux/resources/devices",
        json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwx"},
            {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "x"}
        ]),
    );
    c.sh("echo hi > /dev/null && echo null-ok; head -c1 /dev/zero >/dev/null 2>&1 && echo zero-open || echo zero-denied");
    let out = c.run(&[]).ok();
    assert!(out.stdout.contains("null-ok"), "rwx on /dev/null grants rw: {out}");
    // /dev/zero (1:5) is in the runtime's default allow list either way; the "x" rule must not
    // have become a deny-all or an error.
    assert!(out.stdout.contains("zero-open"), "{out}");
    if is_capsa() {
        let warnings: Vec<&str> = out.stderr.lines().filter(|l| l.contains("level=warning")).collect();
        assert_eq!(warnings.len(), 2, "{out}");
        assert!(warnings[0].contains("linux.resources.devices[1].access") && warnings[0].contains("rw"), "{out}");
        assert!(warnings[1].contains("linux.resources.devices[2].access") && warnings[1].contains("ignored"), "{out}");
    }
    c.assert_clean();
}

/// A namespace type missing from linux.namespaces is the runtime's (the spec's MUST). Without
/// a mount namespace the container shares the host's mount table: capsa mounts nothing into
/// it and only chroots into the rootfs, and refuses, naming the field, what would need a
/// mount (mounts, devices, masked and read-only paths, a read-only root).
#[test]
fn missing_mount_namespace_is_inherited() {
    if !is_capsa() {
        // runc 1.1.5 cannot start it (it reads /proc/self/fd after the chroot, where the
        // rootfs has no /proc mounted), and it would mount `mounts` into the host's namespace.
        return;
    }
    let mut c = Container::new("no-mntns");
    c.no_namespace("mount");
    c.set("/mounts", json!([]));
    c.set("/linux/maskedPaths", json!([]));
    c.set("/linux/readonlyPaths", json!([]));
    c.set("/root/readonly", json!(false));
    fs::write(c.bundle.join("rootfs/marker"), "in-the-rootfs\n").unwrap();
    // With HOME set, init does not read the image's /etc/passwd, which it does through a
    // procfs (there is none in the chroot: nothing is mounted).
    c.set("/process/env", json!(["PATH=/bin:/usr/bin", "HOME=/root"]));
    c.args(&["sleep", "100"]);
    let mounts_before = host_mount_points();
    c.create_start();
    let pid = c.pid();
    assert_eq!(ns_link(&pid.to_string(), "mnt"), ns_link("self", "mnt"), "the host's mount namespace");
    assert_ne!(ns_link(&pid.to_string(), "pid"), ns_link("self", "pid"), "listed namespaces are still new");
    let root = fs::read_link(format!("/proc/{pid}/root")).unwrap();
    assert_eq!(root, c.bundle.join("rootfs").canonicalize().unwrap(), "chrooted into the rootfs");
    assert_eq!(read(format!("/proc/{pid}/root/marker")), "in-the-rootfs\n");
    assert_eq!(host_mount_points(), mounts_before, "nothing mounted on the host");
    c.kill("KILL").ok();
    c.wait_status("stopped");
    c.delete().ok();

    // What needs a mount is refused, naming the field.
    for (ptr, v, field) in [
        ("/mounts", json!([{"destination": "/proc", "type": "proc", "source": "proc"}]), "mounts"),
        ("/linux/maskedPaths", json!(["/proc/kcore"]), "linux.maskedPaths"),
        ("/linux/readonlyPaths", json!(["/proc/sys"]), "linux.readonlyPaths"),
        ("/root/readonly", json!(true), "root.readonly"),
    ] {
        let mut d = Container::new(&format!("no-mntns-{}", field.replace('.', "-")));
        d.no_namespace("mount");
        d.set("/mounts", json!([]));
        d.set("/linux/maskedPaths", json!([]));
        d.set("/linux/readonlyPaths", json!([]));
        d.set("/root/readonly", json!(false));
        d.set(ptr, v);
        d.args(&["true"]);
        d.write_config();
        let out = d.create_cmd(&[]).run().fails_cleanly();
        assert!(out.err_msg().starts_with(&format!("{field}: ")) || out.err_msg().contains(&format!(" {field}: ")), "{field}: {out}");
        assert!(out.err_msg().contains("mount namespace"), "{out}");
        d.assert_clean();
    }

    c.assert_clean();
}

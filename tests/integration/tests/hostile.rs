//! Hostile images: the attacker controls the rootfs (and, once started, the processes in the
//! container) and nothing else. Each test plants one trick, runs the runtime with an otherwise
//! ordinary config, and checks both that the trick fails cleanly (exit 1, a message naming the
//! path, nothing left behind) and that the host is untouched: the runtime binary,
//! `kernel.core_pattern`, a marker file outside the rootfs and the host's mount table
//! ([`HostWatch`]).
//!
//! Issue 10's findings, one test (or more) each: A (special destinations through symlinks),
//! B (`/proc/1/exe` of a created container's init), C (`(uid_t)-1`), D (`/dev/null`,
//! `/dev/console` and ptmx that are not what they say), E (no capsa fd reaches the
//! container, bounded locks), F (`/etc/passwd` that never ends or blocks), G (inputs that
//! crashed or hung the runtime).

#![allow(clippy::unwrap_used)] // test helpers: a failed step fails the test

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant};

use capsa_integration::*;

/// Removes the mount at `dest` from the config.
fn drop_mount(c: &mut Container, dest: &str) {
    let mounts = c.config["mounts"].as_array_mut().expect("mounts");
    mounts.retain(|m| m["destination"] != dest);
}

/// Replaces the path `p` inside the container's (private) rootfs with a symlink to `target`.
fn plant_symlink(c: &Container, p: &str, target: &str) {
    let at = c.rootfs.join(p.trim_start_matches('/'));
    if at.is_dir() && !at.is_symlink() {
        fs::remove_dir_all(&at).unwrap();
    } else {
        let _ = fs::remove_file(&at);
    }
    fs::create_dir_all(at.parent().unwrap()).unwrap();
    symlink(target, &at).unwrap();
}

/// The command fails with exit 1, its error mentions every word of `words`, and nothing is left.
fn refused(c: &Container, out: Output, words: &[&str]) {
    let out = out.fails_cleanly();
    let msg = out.err_msg();
    for w in words {
        assert!(msg.contains(w), "error should mention {w:?}: {msg}\n{out}");
    }
    c.assert_clean();
}

/// Finding A exactly as reported: `/proc -> /dev/p`, `/dev/p -> /realproc`. Before the fix procfs
/// landed at /realproc, every maskedPath and readonlyPath was skipped as "not found", and the
/// container held a read-write, unmasked procfs.
#[test]
fn a_proc_symlinked_through_dev_is_refused() {
    let mut c = Container::new("hostile-proc-dev");
    let watch = HostWatch::new(&c.dir);
    plant_symlink(&c, "/proc", "/dev/p");
    plant_symlink(&c, "/dev/p", "/realproc");
    fs::create_dir_all(c.rootfs.join("realproc")).unwrap();
    c.sh("echo '|/tmp/pwn' > /realproc/sys/kernel/core_pattern; cat /realproc/sys/kernel/core_pattern");
    let out = c.run(&[]);
    refused(&c, out, &["/proc", "symlink"]);
    watch.assert_untouched();
}

/// Every special destination, as the last component and through a parent: it must be a real
/// directory on the path exactly as config.json writes it.
#[test]
fn a_special_destinations_must_be_real_directories() {
    // (destination, mounts to drop so that the destination is the image's, path to replace, target)
    let cases: &[(&str, &[&str], &str, &str)] = &[
        ("/proc", &[], "/proc", "/xproc"),
        ("/sys", &[], "/sys", "/xsys"),
        ("/dev", &[], "/dev", "/xdev"),
        ("/dev/pts", &["/dev"], "/dev/pts", "/xpts"),
        ("/dev/shm", &["/dev"], "/dev/shm", "/xshm"),
        ("/dev/mqueue", &["/dev"], "/dev/mqueue", "/xmq"),
        ("/sys/fs/cgroup", &["/sys"], "/sys/fs/cgroup", "/xcg"),
        // A parent component: /sys/fs/cgroup through a symlinked /sys/fs.
        ("/sys/fs/cgroup", &["/sys"], "/sys/fs", "/xfs"),
    ];
    for (dest, drop, link, target) in cases {
        let mut c = Container::new(&format!("hostile-special{}", link.replace('/', "-")));
        let watch = HostWatch::new(&c.dir);
        for d in *drop {
            drop_mount(&mut c, d);
        }
        // The target exists and looks right, so only the symlink itself is wrong.
        let real = c.rootfs.join(target.trim_start_matches('/'));
        fs::create_dir_all(real.join("cgroup")).unwrap();
        plant_symlink(&c, link, target);
        c.args(&["true"]);
        let out = c.run(&[]);
        refused(&c, out, &[dest, "symlink"]);
        watch.assert_untouched();
    }
}

/// An ordinary bind destination through a symlink that points at a host path: resolved inside
/// the rootfs, so the bind lands there and the host directory is neither covered nor written.
#[test]
fn a_mount_destination_symlink_stays_inside() {
    let mut c = Container::new("hostile-bind-dest");
    let watch = HostWatch::new(&c.dir);
    let victim = c.host_dir("victim");
    fs::write(victim.join("keep"), "host").unwrap();
    let data = c.host_dir("data");
    fs::write(data.join("payload"), "from-bind").unwrap();
    plant_symlink(&c, "/mnt/evil", &format!("/../../../../../..{}", victim.display()));
    c.add_mount(json!({"destination": "/mnt/evil", "type": "bind", "source": data.to_str(), "options": ["rbind", "rw"]}));
    c.sh("cat /mnt/evil/payload; echo x > /mnt/evil/written");
    let out = c.run(&[]).ok();
    assert_eq!(out.stdout, "from-bind", "{out}");
    // The bind went to <rootfs>/<victim path>, a directory made inside the rootfs.
    assert!(c.rootfs.join(victim.strip_prefix("/").unwrap()).is_dir());
    assert_eq!(fs::read_dir(&victim).unwrap().count(), 1, "the host directory was written to");
    assert_eq!(read(victim.join("keep")), "host");
    watch.assert_untouched();
    c.assert_clean();
}

/// A read-only bind (docker `-v /host:/vol:ro`, a Kubernetes `readOnly` hostPath) whose
/// destination is an image symlink that goes *through the bind's own contents*:
/// `/vol -> /mnt/x/link/..`. Before the mount, `/mnt/x/link` does not exist, so the bind lands on
/// /mnt/x. Looked up again after the mount (to make it read-only), `link` is now the host
/// directory's symlink, which leads elsewhere in the container: `ro` went to that other mount and
/// the host directory stayed writable. runc 1.1.5 is fooled the same way. The flags must be set
/// on the mount itself, never on whatever the path resolves to afterwards.
#[test]
fn a_readonly_bind_stays_readonly_through_a_symlinked_destination() {
    for opt in ["ro", "noexec"] {
        let mut c = Container::new(&format!("hostile-bind-{opt}-relookup"));
        let watch = HostWatch::new(&c.dir);
        let data = c.host_dir("data");
        fs::write(data.join("secret"), "host").unwrap();
        fs::write(data.join("prog"), "#!/bin/sh\necho RAN\n").unwrap();
        fs::set_permissions(data.join("prog"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        // Any symlink in the host directory will do; its target is resolved in the container.
        symlink("/elsewhere", data.join("link")).unwrap();
        fs::create_dir_all(c.rootfs.join("elsewhere")).unwrap();
        plant_symlink(&c, "/vol", "/mnt/x/link/..");
        c.add_mount(json!({"destination": "/vol", "type": "bind", "source": data.to_str(), "options": ["rbind", opt]}));
        c.sh("(echo pwned > /mnt/x/secret) 2>/dev/null && echo WROTE; /mnt/x/prog 2>/dev/null; echo done");
        let out = c.run(&[]).ok();
        match opt {
            "ro" => {
                assert_eq!(read(data.join("secret")), "host", "a `ro` bind of a host directory was written: {out}");
                assert_eq!(out.stdout, "RAN\ndone\n", "{out}");
            }
            _ => assert_eq!(out.stdout, "WROTE\ndone\n", "`noexec` did not hold: {out}"),
        }
        watch.assert_untouched();
        c.assert_clean();
    }
}

/// A volume whose destination is an image symlink to `/` (`/data -> /`). The bind was stacked on
/// the container's root directory: init pivots into the directory underneath and never sees it,
/// but `capsa exec` (any setns into the mount namespace) lands on top of it, so exec'd processes
/// and the runtime's own code in them saw the volume as `/`, with whatever /proc it holds. runc
/// 1.1.5 and crun both fail on it; it is refused, and the same for a tmpcopyup tmpfs (whose copy
/// of `/` would read the container's /proc and /sys as host root).
#[test]
fn a_mount_destination_resolving_to_the_root_is_refused() {
    for typ in ["bind", "tmpfs"] {
        let mut c = Container::new(&format!("hostile-dest-root-{typ}"));
        let watch = HostWatch::new(&c.dir);
        let vol = c.host_dir("vol");
        fs::create_dir_all(vol.join("proc/sys/kernel")).unwrap();
        fs::write(vol.join("proc/sys/kernel/core_pattern"), "fake\n").unwrap();
        plant_symlink(&c, "/data", "/");
        match typ {
            "bind" => c.add_mount(json!({"destination": "/data", "type": "bind", "source": vol.to_str(), "options": ["rbind", "rw"]})),
            _ => c.add_mount(json!({"destination": "/data", "type": "tmpfs", "source": "tmpfs", "options": ["tmpcopyup", "size=16m"]})),
        };
        c.args(&["sleep", "100"]);
        let out = c.create(&[]);
        if out.success() {
            // What an exec'd process sees as /proc.
            let seen = c.rt(["exec", &c.id, "cat", "/proc/sys/kernel/core_pattern"]);
            c.delete_force().ok();
            panic!("a {typ} mount on the container's root was allowed; exec sees core_pattern {:?}", seen.stdout);
        }
        refused(&c, out, &["/data", "root"]);
        watch.assert_untouched();
    }
}

/// Binds may not cover procfs (the way runc's writes were redirected, CVE-2019-19921 and
/// CVE-2025-52881), however the destination gets there; a bind on an lxcfs-style file named
/// as such is allowed.
#[test]
fn a_nothing_but_procfs_covers_procfs() {
    {
        let mut c = Container::new("hostile-procfs-cover");
        let watch = HostWatch::new(&c.dir);
        let f = c.dir.join("file");
        fs::write(&f, "x").unwrap();
        plant_symlink(&c, "/etc/hostname", "/proc/sys/kernel/core_pattern");
        c.add_mount(json!({"destination": "/etc/hostname", "type": "bind", "source": f.to_str(), "options": ["bind", "ro"]}));
        c.args(&["true"]);
        let out = c.run(&[]);
        refused(&c, out, &["/etc/hostname", "procfs"]);
        watch.assert_untouched();
    }
    {
        let mut c = Container::shared("hostile-procfs-sys");
        c.add_mount(json!({"destination": "/proc/sys", "type": "tmpfs", "source": "tmpfs", "options": ["rw"]}));
        c.args(&["true"]);
        let out = c.run(&[]);
        refused(&c, out, &["/proc/sys", "procfs"]);
    }
    {
        let mut c = Container::shared("hostile-procfs-lxcfs");
        let f = c.dir.join("uptime");
        fs::write(&f, "42.00 42.00\n").unwrap();
        c.add_mount(json!({"destination": "/proc/uptime", "type": "bind", "source": f.to_str(), "options": ["bind", "ro"]}));
        c.args(&["cat", "/proc/uptime"]);
        let out = c.run(&[]).ok();
        assert_eq!(out.stdout, "42.00 42.00\n");
    }
}

/// maskedPaths and readonlyPaths through a symlink the image planted: refused, not followed
/// (following would hide the wrong thing and leave the real one open).
#[test]
fn a_masked_and_readonly_paths_through_symlinks_are_refused() {
    for (list, path) in [("maskedPaths", "/data/kernel"), ("readonlyPaths", "/data/kernel")] {
        let mut c = Container::new(&format!("hostile-{list}"));
        let watch = HostWatch::new(&c.dir);
        plant_symlink(&c, "/data", "/proc/sys");
        c.config["linux"][list].as_array_mut().unwrap().push(json!(path));
        c.args(&["true"]);
        let out = c.run(&[]);
        refused(&c, out, &[list, path, "symlink"]);
        watch.assert_untouched();
    }
}

/// Finding B: `capsa exec` into a *created* container reaches init while it is still the
/// runtime binary, even in a fresh pid namespace. The exec'd process gets CAP_SYS_PTRACE so the
/// ptrace check (init is non-dumpable) does not hide the binary's own protection; from the host,
/// /proc/PID/exe of init must be on a read-only mount (sealed).
#[test]
fn b_exec_into_created_container_cannot_write_init_exe() {
    let mut c = Container::shared("hostile-exe-exec");
    let watch = HostWatch::new(&c.dir);
    for set in ["bounding", "effective", "permitted"] {
        c.config["process"]["capabilities"][set].as_array_mut().unwrap().push(json!("CAP_SYS_PTRACE"));
    }
    c.args(&["sleep", "100"]);
    c.create(&[]).ok();
    let pid = c.pid();
    let st = nix::sys::statvfs::statvfs(format!("/proc/{pid}/exe").as_str()).unwrap();
    assert!(st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY), "init of a created container runs from a writable binary");
    let out = c.rt(["exec", &c.id, "sh", "-c", "if (echo pwn >> /proc/1/exe) 2>/dev/null; then echo WROTE; else echo refused; fi"]).ok();
    assert_eq!(out.stdout, "refused\n", "{out}");
    // From the host, as root: still refused, the mount is read-only.
    let e = fs::OpenOptions::new().append(true).open(format!("/proc/{pid}/exe")).unwrap_err();
    assert!(matches!(e.raw_os_error(), Some(libc::EROFS) | Some(libc::ETXTBSY)), "{e}");
    c.delete_force().ok();
    watch.assert_untouched();
    c.assert_clean();
}

/// Finding B through a startContainer hook, which runs in the container as a child of init
/// while init is still the runtime. The classic exploit: keep a read-only fd on /proc/1/exe,
/// wait until init has exec'd the user's process (the binary is no longer busy), then reopen
/// that fd for writing through /proc/self/fd.
#[test]
fn b_start_container_hook_cannot_write_init_exe() {
    // With CAP_SYS_PTRACE the hook may open init's /proc/1/exe (it is non-dumpable); then only
    // the sealed binary stands between it and the host's.
    for ptrace in [false, true] {
        let mut c = Container::new("hostile-exe-hook");
        if ptrace {
            for set in ["bounding", "effective", "permitted"] {
                c.config["process"]["capabilities"][set].as_array_mut().unwrap().push(json!("CAP_SYS_PTRACE"));
            }
        }
        let watch = HostWatch::new(&c.dir);
        let log = c.host_dir("log");
        fs::write(
            log.join("attack.sh"),
            r#"[ -e /proc/self/fd/3 ] || { echo open-refused > /log/result; exit 0; }
while ! grep -q sleep /proc/1/cmdline 2>/dev/null; do sleep 0.01; done
r=refused
for i in $(seq 1 100); do
  if (echo pwn >> /proc/self/fd/3) 2>/dev/null; then r=WROTE; break; fi
  sleep 0.01
done
echo $r > /log/result
"#,
        )
        .unwrap();
        c.add_mount(json!({"destination": "/log", "type": "bind", "source": log.to_str(), "options": ["rbind", "rw"]}));
        c.set(
            "/hooks/startContainer",
            // The hook opens the fd while init waits for it (still the runtime); the background
            // process keeps it and waits for init to exec.
            json!([{"path": "/bin/sh", "args": ["sh", "-c",
            "cat /proc/1/exe >/dev/null 2>&1 || { echo open-refused > /log/result; exit 0; }; \
             setsid sh /log/attack.sh 3</proc/1/exe </dev/null >/dev/null 2>&1 &"]}]),
        );
        c.args(&["sleep", "60"]);
        c.create_start();
        let result = poll(Duration::from_secs(10), "attack result", || fs::read_to_string(log.join("result")).ok());
        assert!(!result.contains("WROTE"), "the runtime binary was written through init's /proc/1/exe");
        if ptrace {
            assert_ne!(result.trim(), "open-refused", "with CAP_SYS_PTRACE the hook should reach /proc/1/exe");
        }
        c.delete_force().ok();
        watch.assert_untouched();
        c.assert_clean();
    }
}

/// Finding B with the classic entrypoint: a script whose interpreter is `/proc/self/exe`, so
/// the container's pid 1 *is* the runtime binary, while another process of the container keeps
/// trying to write it. (A guard: the runtime running as pid 1 is busy, so the write gets
/// ETXTBSY even without sealing; the tests above are the ones the unsealed runtime fails.)
#[test]
fn b_proc_self_exe_entrypoint() {
    let mut c = Container::new("hostile-exe-shebang");
    let watch = HostWatch::new(&c.dir);
    let log = c.host_dir("log");
    c.add_mount(json!({"destination": "/log", "type": "bind", "source": log.to_str(), "options": ["rbind", "rw"]}));
    fs::write(c.rootfs.join("evil.sh"), "#!/proc/self/exe\n").unwrap();
    fs::set_permissions(c.rootfs.join("evil.sh"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    c.args(&["/evil.sh"]);
    c.create(&[]).ok();
    let attacker = c
        .cmd([
            "exec",
            "-d",
            &c.id,
            "sh",
            "-c",
            "touch /log/started; while :; do if (echo pwn >> /proc/1/exe) 2>/dev/null; then echo WROTE >> /log/out; fi; done",
        ])
        .run();
    assert!(attacker.success(), "{attacker}");
    poll(POLL_TIMEOUT, "attacker started", || log.join("started").exists().then_some(()));
    c.start().ok();
    c.wait_status("stopped");
    assert!(!log.join("out").exists(), "the runtime binary was written from the container");
    c.delete_force().ok();
    watch.assert_untouched();
    c.assert_clean();
}

/// Finding C: 4294967295 is (uid_t)-1, "unchanged" to setresuid: the process would stay root.
/// Refused wherever an id enters; 4294967294 still works.
#[test]
fn c_uid_minus_one_is_refused_everywhere() {
    for (ptr, field) in [
        ("/process/user/uid", "process.user.uid"),
        ("/process/user/gid", "process.user.gid"),
        ("/process/user/additionalGids", "process.user.additionalGids"),
    ] {
        let mut c = Container::shared("hostile-uid");
        let v = if ptr.ends_with("Gids") { json!([4294967295u32]) } else { json!(4294967295u32) };
        c.set(ptr, v);
        c.args(&["id"]);
        let out = c.run(&[]);
        refused(&c, out, &[field, "4294967295"]);
    }
    let mut c = Container::shared("hostile-uid-max");
    c.set("/process/user/uid", json!(4294967294u32)).set("/process/user/gid", json!(4294967294u32));
    c.sh("id -u; id -g");
    let out = c.run(&[]).ok();
    assert_eq!(out.stdout, "4294967294\n4294967294\n", "{out}");

    // exec -u and a passwd entry with the bad id.
    let mut c = Container::new("hostile-uid-exec");
    let mut passwd = read(c.rootfs.join("etc/passwd"));
    passwd += "evil:x:4294967295:0::/:/bin/sh\n";
    fs::write(c.rootfs.join("etc/passwd"), passwd).unwrap();
    c.args(&["sleep", "100"]);
    c.create_start();
    for user in ["4294967295", "0:4294967295", "evil"] {
        let out = c.rt(["exec", "-u", user, &c.id, "id", "-u"]);
        assert!(!out.success(), "exec -u {user} ran: {out}");
        assert!(out.stdout.is_empty(), "{out}");
    }
    c.delete_force().ok();
    c.assert_clean();
}

/// Finding D: with /dev bound from a directory the image controls, `null -> /proc/keys` made
/// masking bind /proc/keys over the masked files (read-write). /dev/null must be char 1:3.
#[test]
fn d_dev_null_must_be_the_null_device() {
    for (variant, ok) in [("symlink", false), ("file", false), ("device", true)] {
        let mut c = Container::new(&format!("hostile-null-{variant}"));
        let watch = HostWatch::new(&c.dir);
        let dev = c.host_dir("dev");
        for d in ["pts", "shm", "mqueue"] {
            fs::create_dir_all(dev.join(d)).unwrap();
        }
        match variant {
            "symlink" => symlink("/proc/keys", dev.join("null")).unwrap(),
            "file" => fs::write(dev.join("null"), "").unwrap(),
            _ => nix::sys::stat::mknod(
                &dev.join("null"),
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o666),
                nix::sys::stat::makedev(1, 3),
            )
            .unwrap(),
        }
        drop_mount(&mut c, "/dev");
        c.add_mount(json!({"destination": "/dev", "type": "bind", "source": dev.to_str(), "options": ["rbind", "rw"]}));
        // Move it first, so /dev/pts and friends go on top of it.
        let m = c.config["mounts"].as_array_mut().unwrap();
        let last = m.pop().unwrap();
        m.insert(1, last);
        c.config["linux"]["maskedPaths"].as_array_mut().unwrap().push(json!("/etc/hostname"));
        fs::write(c.rootfs.join("etc/hostname"), "secret").unwrap();
        c.sh("cat /etc/hostname; echo .");
        let out = c.run(&[]);
        if ok {
            assert_eq!(out.ok().stdout, ".\n");
            c.assert_clean();
        } else {
            refused(&c, out, &["/dev/null", "1:3"]);
        }
        watch.assert_untouched();
    }
}

/// Finding D, the terminal: /dev/console and /dev/pts/ptmx from the image must not lead
/// anywhere else (CVE-2025-52565).
#[test]
fn d_console_and_ptmx_must_be_what_they_say() {
    for variant in ["console-symlink", "ptmx-not-devpts"] {
        let mut c = Container::new(&format!("hostile-{variant}"));
        let watch = HostWatch::new(&c.dir);
        let dev = c.host_dir("dev");
        for d in ["pts", "shm", "mqueue"] {
            fs::create_dir_all(dev.join(d)).unwrap();
        }
        for (name, minor) in [("null", 3), ("zero", 5)] {
            let mode = nix::sys::stat::Mode::from_bits_truncate(0o666);
            nix::sys::stat::mknod(&dev.join(name), nix::sys::stat::SFlag::S_IFCHR, mode, nix::sys::stat::makedev(1, minor)).unwrap();
        }
        if variant == "console-symlink" {
            symlink("/etc/hostname", dev.join("console")).unwrap();
        } else {
            // No devpts: the image's pts/ptmx and ptmx point at something that is no pty.
            drop_mount(&mut c, "/dev/pts");
            symlink("../zero", dev.join("pts/ptmx")).unwrap();
            symlink("zero", dev.join("ptmx")).unwrap();
        }
        drop_mount(&mut c, "/dev");
        c.add_mount(json!({"destination": "/dev", "type": "bind", "source": dev.to_str(), "options": ["rbind", "rw"]}));
        let m = c.config["mounts"].as_array_mut().unwrap();
        let last = m.pop().unwrap();
        m.insert(1, last);
        c.set("/process/terminal", json!(true));
        c.args(&["true"]);
        let sock = ConsoleSocket::bind(&c.dir.join("console.sock"));
        let out = c.create(&["--console-socket", sock.path.to_str().unwrap()]);
        refused(&c, out, &["terminal"]);
        assert_eq!(read(c.rootfs.join("etc/hostname")).len(), fs::read(base_rootfs().join("etc/hostname")).map(|b| b.len()).unwrap_or(0));
        watch.assert_untouched();
    }
}

/// Finding E: no runtime fd may reach a container process. Checked from the host on init of a
/// created container (the window where init is still capsa), with a user namespace (where
/// container root has CAP_SYS_PTRACE over init, so non-dumpable alone would not help): its fds
/// are stdio, exec.fifo and the sync socket, nothing under the state dir but exec.fifo. Then
/// kill and delete do not wait on anything the container holds.
#[test]
fn e_no_runtime_fd_reaches_the_container() {
    let mut c = Container::shared("hostile-fds");
    let watch = HostWatch::new(&c.dir);
    c.namespace("user", None);
    c.set("/linux/uidMappings", json!([{"containerID": 0, "hostID": 0, "size": 65536}]));
    c.set("/linux/gidMappings", json!([{"containerID": 0, "hostID": 0, "size": 65536}]));
    c.args(&["sleep", "100"]);
    c.create(&[]).ok();
    let pid = c.pid();
    let fds: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .map(|e| fs::read_link(e.path()).map(|p| p.display().to_string()).unwrap_or_default())
        .collect();
    let state_dir = c.root.join(&c.id).display().to_string();
    for f in &fds {
        if f.starts_with(&state_dir) {
            assert!(f.ends_with("/exec.fifo"), "init holds a runtime file {f}: {fds:?}");
        }
        assert!(!f.ends_with("/.lock"), "init holds the lock: {fds:?}");
    }
    // Inside: whatever the container can see of init's fds, taking a lock on any of them must
    // not block the runtime.
    let out = c.rt(["exec", &c.id, "sh", "-c", "for f in /proc/1/fd/*; do flock -n $f true 2>/dev/null; done; ls /proc/1/fd | wc -l"]).ok();
    assert!(out.stdout.trim().parse::<u32>().is_ok(), "{out}");
    let t = Instant::now();
    c.kill("KILL").ok();
    c.delete_force().ok();
    assert!(t.elapsed() < Duration::from_secs(10), "kill/delete waited {:?}", t.elapsed());
    watch.assert_untouched();
    c.assert_clean();
}

/// Finding F: the image's /etc/passwd as a weapon. `-> /dev/zero` read without bound (init
/// OOM); a FIFO hung create, and `delete --force` then hung on the lock. Read only regular
/// files, bounded. A passwd masked with /dev/null reads as empty.
#[test]
fn f_passwd_that_never_ends_or_blocks() {
    for variant in ["zero", "fifo", "huge"] {
        let mut c = Container::new(&format!("hostile-passwd-{variant}"));
        let watch = HostWatch::new(&c.dir);
        let p = c.rootfs.join("etc/passwd");
        fs::remove_file(&p).unwrap();
        match variant {
            "zero" => symlink("/dev/zero", &p).unwrap(),
            "fifo" => nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap(),
            _ => {
                let f = fs::File::create(&p).unwrap();
                f.set_len(64 << 20).unwrap();
            }
        }
        // No HOME in the environment: the runtime looks it up in /etc/passwd.
        let env: Vec<Value> =
            c.config["process"]["env"].as_array().unwrap().iter().filter(|e| !e.as_str().unwrap().starts_with("HOME=")).cloned().collect();
        c.set("/process/env", json!(env));
        c.args(&["true"]);
        let t = Instant::now();
        let out = c.run(&[]);
        assert!(t.elapsed() < Duration::from_secs(10), "took {:?}", t.elapsed());
        let words: &[&str] = if variant == "huge" { &["/etc/passwd", "larger than"] } else { &["/etc/passwd", "not a regular file"] };
        refused(&c, out, words);
        watch.assert_untouched();
    }
    // exec -u NAME with a FIFO as /etc/group.
    let mut c = Container::new("hostile-group-fifo");
    let g = c.rootfs.join("etc/group");
    fs::remove_file(&g).unwrap();
    nix::unistd::mkfifo(&g, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    c.args(&["sleep", "100"]);
    c.create_start();
    let t = Instant::now();
    let out = c.rt(["exec", "-u", "root", &c.id, "id"]);
    assert!(!out.success() && t.elapsed() < Duration::from_secs(10), "{out}");
    assert!(out.err_msg().contains("/etc/group"), "{out}");
    c.delete_force().ok();
    c.assert_clean();
}

/// Finding F, pseudo files: `/etc/passwd -> /proc/kmsg` is a "regular file" to stat. `exec -u
/// NAME` resolves the name before it drops any privilege, so it read the host's kernel log:
/// blocked until the next kernel message (exec hung) and consumed what was there, which the
/// host's syslog then never saw. (runc 1.1.5's init hangs the same way on `run`: it reads
/// /etc/passwd with full capabilities.) Files of procfs, sysfs, debugfs and tracefs are
/// refused.
#[test]
fn f_passwd_on_procfs_is_refused() {
    let mut c = Container::new("hostile-passwd-kmsg");
    let watch = HostWatch::new(&c.dir);
    let p = c.rootfs.join("etc/passwd");
    fs::remove_file(&p).unwrap();
    symlink("/proc/kmsg", &p).unwrap();
    c.args(&["sleep", "100"]);
    // HOME given: init itself does not need /etc/passwd.
    let mut env = c.config["process"]["env"].as_array().unwrap().clone();
    env.push(json!("HOME=/root"));
    c.set("/process/env", json!(env));
    c.create_start();
    let t = Instant::now();
    let out = c.rt(["exec", "-u", "alice", &c.id, "id"]);
    assert!(t.elapsed() < Duration::from_secs(10), "exec -u alice hung reading /proc/kmsg: {out}");
    assert!(!out.success(), "{out}");
    assert!(out.err_msg().contains("/etc/passwd"), "{out}");
    c.delete_force().ok();
    watch.assert_untouched();
    c.assert_clean();
}

/// Finding G: inputs that aborted or hung the runtime.
#[test]
fn g_inputs_that_crashed_or_hung() {
    // A hook timeout of i64::MAX seconds: no timeout, not an Instant overflow.
    let mut c = Container::shared("hostile-hook-timeout");
    c.set("/hooks/prestart", json!([{"path": "/bin/true", "timeout": i64::MAX}]));
    c.set("/hooks/poststop", json!([{"path": "/bin/true", "timeout": i64::MAX}]));
    c.args(&["true"]);
    c.run(&[]).ok();
    c.assert_clean();

    let mut c = Container::shared("hostile-big-args");
    c.args(&["sleep", "100"]);
    c.create_start();
    for args in [
        // Fits a Duration, not the clock: the deadline overflowed.
        vec!["events", "--interval", "3000000000000000h", c.id.as_str()],
        vec!["kill", c.id.as_str(), "RTMIN+2147483647"],
        vec!["kill", c.id.as_str(), "RTMAX-2147483647"],
    ] {
        let t = Instant::now();
        let out = c.rt(args.clone());
        assert_eq!(out.code, Some(1), "{args:?}: {out}");
        assert!(out.signal.is_none() && t.elapsed() < Duration::from_secs(10), "{args:?}: {out}");
    }
    for n in ["2147483644", "4294967295"] {
        let t = Instant::now();
        let out = c.rt(["exec", "--preserve-fds", n, &c.id, "true"]);
        assert!(!out.success() && out.signal.is_none() && t.elapsed() < Duration::from_secs(10), "--preserve-fds {n}: {out}");
        assert!(out.err_msg().contains("preserve-fds"), "{out}");
    }
    c.delete_force().ok();
    c.assert_clean();

    let mut c = Container::shared("hostile-preserve-create");
    c.args(&["true"]);
    let out = c.run(&["--preserve-fds", "2147483644"]);
    refused(&c, out, &["--preserve-fds", "open-file limit"]);

    // Joining the host's network namespace by path, then a net.* sysctl: that is the host's.
    let mut c = Container::shared("hostile-host-netns");
    c.namespace("network", Some("/proc/self/ns/net"));
    c.set("/linux/sysctl", json!({"net.ipv4.ip_forward": "1"}));
    c.args(&["true"]);
    let before = read("/proc/sys/net/ipv4/ip_forward");
    let out = c.run(&[]);
    refused(&c, out, &["net.ipv4.ip_forward", "host"]);
    assert_eq!(read("/proc/sys/net/ipv4/ip_forward"), before);
}

/// tmpcopyup (podman `--tmpfs`, `--read-only`) of an image directory holding a 1 TiB sparse
/// file, the size `useradd -u 2000000000` gives /var/log/lastlog: a few bytes in the image. The
/// copy wrote every hole out as zeros into the tmpfs, which lives in memory (half the host's RAM
/// by default, 64 MiB here so that the old behaviour only fails): the holes must stay holes.
/// runc 1.1.5 fails the same way.
#[test]
fn h_tmpcopyup_keeps_a_huge_sparse_file_sparse() {
    let mut c = Container::new("hostile-copyup-sparse");
    let watch = HostWatch::new(&c.dir);
    fs::create_dir_all(c.rootfs.join("data/log")).unwrap();
    let f = fs::File::create(c.rootfs.join("data/log/lastlog")).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"end", (1 << 40) - 3).unwrap();
    c.add_mount(json!({"destination": "/data", "type": "tmpfs", "source": "tmpfs", "options": ["tmpcopyup", "size=64m"]}));
    c.sh("stat -c %s /data/log/lastlog; tail -c 3 /data/log/lastlog; echo; df -k /data | tail -1 | awk '{print ($3 < 1024)}'");
    let out = c.run(&[]);
    assert!(out.success(), "tmpcopyup of a sparse file failed: {out}");
    assert_eq!(out.stdout, format!("{}\nend\n1\n", 1u64 << 40), "{out}");
    watch.assert_untouched();
    c.assert_clean();
}

/// The shared base rootfs is never written by any of the above (a runtime that creates
/// directories for a cwd or a destination it resolved badly would leave them there).
#[test]
fn z_base_rootfs_unchanged_by_a_magic_link_cwd() {
    let mut c = Container::shared("hostile-cwd-magic");
    let before: Vec<_> = fs::read_dir(base_rootfs()).unwrap().flatten().map(|e| e.file_name()).collect();
    c.set("/process/cwd", json!("/proc/self/fd/3/x"));
    c.args(&["true"]);
    let _ = c.run(&[]);
    let after: Vec<_> = fs::read_dir(base_rootfs()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(before, after);
    assert!(!Path::new(&base_rootfs()).join("work").exists());
}

/// /etc/passwd and /etc/group as symlinks to host paths: resolved inside the rootfs, so the
/// host's files (here: planted ones that would give HOME=/PWNED and an extra group 4242) are
/// never read.
#[test]
fn f_passwd_and_group_symlinks_stay_inside() {
    let mut c = Container::new("hostile-passwd-link");
    let watch = HostWatch::new(&c.dir);
    let host_passwd = c.dir.join("host-passwd");
    let host_group = c.dir.join("host-group");
    fs::write(&host_passwd, "root:x:0:0:root:/PWNED:/bin/sh\n").unwrap();
    fs::write(&host_group, "pwn:x:4242:root\n").unwrap();
    plant_symlink(&c, "/etc/passwd", &format!("/../../../../..{}", host_passwd.display()));
    plant_symlink(&c, "/etc/group", &format!("/../../../../..{}", host_group.display()));
    let env: Vec<Value> =
        c.config["process"]["env"].as_array().unwrap().iter().filter(|e| !e.as_str().unwrap().starts_with("HOME=")).cloned().collect();
    c.set("/process/env", json!(env));
    c.sh("echo $HOME; sleep 100");
    let out = c.create_start();
    let home = wait_file_contains(&out.stdout_path, "\n");
    assert_eq!(home, "/\n", "HOME came from a file outside the rootfs");
    // Now a real passwd, so `exec -u root` looks its groups up in the symlinked /etc/group.
    fs::remove_file(c.rootfs.join("etc/passwd")).unwrap();
    fs::copy(base_rootfs().join("etc/passwd"), c.rootfs.join("etc/passwd")).unwrap();
    let groups = c.rt(["exec", "-u", "root", &c.id, "id", "-G"]).ok();
    assert!(!groups.stdout.contains("4242"), "a group came from a file outside the rootfs: {groups}");
    c.delete_force().ok();
    watch.assert_untouched();
    c.assert_clean();
}

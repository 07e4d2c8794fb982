//! Container breakouts that runtimes have had: leaked fds / cwd (CVE-2024-21626) and overwriting
//! the runtime binary through /proc/PID/exe (CVE-2019-5736).

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use capsa_integration::*;
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

/// CVE-2024-21626: the container's process holds exactly stdio, nothing of the runtime's, and its
/// cwd is the configured one.
#[test]
fn cve_2024_21626_no_leaked_fds() {
    let mut c = Container::shared("fds");
    c.set("/process/cwd", json!("/home"));
    c.sh("ls /proc/self/fd; echo --; ls -l /proc/self/fd | tail -n +2; echo --; readlink /proc/self/cwd; \
          echo ready; exec sleep 100");
    let out = c.create_start();
    let text = wait_file_contains(&out.stdout_path, "ready");
    let parts: Vec<&str> = text.split("--\n").collect();
    let fds: BTreeSet<u32> = parts[0].split_whitespace().map(|s| s.parse().expect("fd number")).collect();
    // 0-2, plus the directory fd `ls` itself opened to read /proc/self/fd.
    assert!(fds.is_subset(&[0, 1, 2, 3].into()), "unexpected fds in the container: {fds:?}\n{text}");
    assert!(fds.is_superset(&[0, 1, 2].into()), "{text}");
    assert_eq!(parts[2].lines().next(), Some("/home"), "cwd: {text}");

    // From the host: the exec'd init holds exactly 0, 1 and 2, pointing at what we passed.
    let pid = c.pid();
    poll(POLL_TIMEOUT, "sleep exec'd", || (proc_cmdline(pid) == "sleep 100").then_some(()));
    let mut host_fds: Vec<(u32, String)> = fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .map(|e| {
            let n = e.file_name().to_string_lossy().parse().unwrap();
            (n, fs::read_link(e.path()).map(|p| p.display().to_string()).unwrap_or_default())
        })
        .collect();
    host_fds.sort();
    let want = vec![(0, "/dev/null".to_string()), (1, out.stdout_path.display().to_string()), (2, out.stderr_path.display().to_string())];
    assert_eq!(host_fds, want);
    // The host reads the path relative to the container's root mount (another mount namespace).
    assert_eq!(fs::read_link(format!("/proc/{pid}/cwd")).unwrap(), Path::new("/home"));
}

/// CVE-2024-21626: a cwd of /proc/self/fd/N (N = an fd the runtime might have leaked) must either
/// fail cleanly or land inside the container, never in a host directory. Inside is checked by
/// climbing `..` from the cwd: from inside the container it stops at the container's root.
#[test]
fn cve_2024_21626_cwd_proc_self_fd() {
    let mut c = Container::shared("cwd-fd");
    c.sh("a=$(stat -c %d:%i /); cd ../../../../../../../../..; b=$(stat -c %d:%i .); \
          if [ \"$a\" = \"$b\" ]; then echo inside; else echo ESCAPED; ls; fi");
    for fd in 3..=12 {
        c.set("/process/cwd", json!(format!("/proc/self/fd/{fd}")));
        let out = c.run(&[]);
        if out.success() {
            assert_eq!(out.stdout, "inside\n", "cwd /proc/self/fd/{fd} escaped the container:\n{out}");
        } else {
            out.fails_cleanly();
        }
        c.assert_clean();
    }
}

/// CVE-2019-5736: the runtime binary must not be writable through /proc/PID/exe of a container
/// process that is (or was) the runtime.
///
/// Container A runs an attack script and has CAP_SYS_PTRACE (so the kernel's ptrace access check
/// — runc makes its init non-dumpable — does not hide the problem; this tests the binary's own
/// protection). Container B joins A's pid namespace, so while B is "created" its init (still the
/// runtime binary, blocked before exec) is visible in A. The script
///   1. opens /proc/<B init>/exe read-only and keeps the fd (the classic exploit's handle),
///   2. tries to open /proc/<B init>/exe for writing (expected: ETXTBSY/EACCES/EROFS),
///   3. after B started (the init exec'd `sleep`), reopens its fd via /proc/self/fd/3 for writing
///      (the binary is no longer running there; a plain host binary would be writable now).
///
/// Every write must fail and the runtime binary must be unchanged.
///
/// runc 1.1.5 result: open-ro works; writes fail with "Text file busy" and then "Read-only file
/// system" (its init runs from a read-only bind-mounted copy; ETXTBSY when another runc happens to
/// run). If a runtime is vulnerable the test restores the binary before failing.
#[test]
fn cve_2019_5736_runtime_exe_not_writable() {
    let bin = runtime_bin();
    let before = fs::read(bin).expect("read runtime binary");

    // /shared needs a mount point in the rootfs: a private rootfs (kept read-only).
    let mut a = Container::new("exe-a");
    a.set("/root/readonly", json!(true));
    let shared = a.host_dir("shared");
    fs::write(
        shared.join("attack.sh"),
        r#"while [ ! -e /shared/pid ]; do sleep 0.01; done
N=$(cat /shared/pid)
exec >>/shared/log 2>&1
echo "exe: $(ls -l /proc/$N/exe 2>&1)"
if (exec 3</proc/$N/exe); then exec 3</proc/$N/exe; echo open-ro-ok; else echo open-ro-failed; fi
if (echo x >> /proc/$N/exe); then echo WRITE1-SUCCEEDED; else echo write1-failed; fi
touch /shared/phase1
while [ ! -e /shared/go2 ]; do sleep 0.01; done
if [ -e /proc/self/fd/3 ]; then
  # Retry for a while: other runtime processes of a parallel suite may be executing the same
  # binary right now, which alone gives ETXTBSY.
  r=write2-failed
  for i in $(seq 1 40); do
    if (echo x >> /proc/self/fd/3) 2>/dev/null; then r=WRITE2-SUCCEEDED; break; fi
    sleep 0.01
  done
  (echo x >> /proc/self/fd/3)
  echo $r
else
  echo write2-failed no-fd
fi
touch /shared/done
exec sleep 100
"#,
    )
    .unwrap();
    a.add_mount(json!({"destination": "/shared", "type": "bind", "source": shared.to_str(),
                       "options": ["rbind", "rw"]}));
    for set in ["bounding", "effective", "permitted"] {
        a.config["process"]["capabilities"][set].as_array_mut().unwrap().push(json!("CAP_SYS_PTRACE"));
    }
    a.args(&["sh", "/shared/attack.sh"]);
    a.create_start();
    let apid = a.pid();

    let mut b = Container::shared("exe-b");
    b.namespace("pid", Some(&format!("/proc/{apid}/ns/pid")));
    b.args(&["sleep", "100"]);
    b.create(&[]).ok();
    let bpid = b.pid();
    // B's init as seen from A's pid namespace: the last NSpid entry.
    let status = read(format!("/proc/{bpid}/status"));
    let inner = status_field(&status, "NSpid").unwrap().split_whitespace().last().unwrap().to_string();
    fs::write(shared.join("pid"), &inner).unwrap();
    wait_file_contains(&shared.join("log"), "write1-");
    poll(POLL_TIMEOUT, "phase1", || shared.join("phase1").exists().then_some(()));

    b.start().ok();
    poll(POLL_TIMEOUT, "B's init exec'd sleep", || (proc_cmdline(bpid) == "sleep 100").then_some(()));
    fs::write(shared.join("go2"), "").unwrap();
    poll(POLL_TIMEOUT, "attack script done", || shared.join("done").exists().then_some(()));
    let log = read(shared.join("log"));
    eprintln!("attack log:\n{log}");
    assert!(log.contains("write1-failed"), "{log}");
    assert!(log.contains("write2-failed"), "{log}");
    assert!(!log.contains("SUCCEEDED"), "the runtime binary was writable from a container:\n{log}");
    let after = fs::read(bin).expect("read runtime binary");
    if before != after {
        // Put it back (best effort; it may be busy) before failing.
        wait_until(POLL_TIMEOUT, || fs::write(bin, &before).is_ok());
        panic!("the runtime binary {} was modified from a container!", bin.display());
    }
    assert!(Path::new(bin).exists());
}

/// linux.seccomp: an errno rule denies the listed syscalls with the given errno; the rest is
/// allowed; the filter is in place (Seccomp: 2 in /proc/self/status) and NoNewPrivs works with it.
#[test]
fn seccomp_errno_rule() {
    let mut c = Container::shared("seccomp");
    c.tmpfs("/tmp");
    c.set(
        "/linux/seccomp",
        json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
                {"names": ["symlink", "symlinkat"], "action": "SCMP_ACT_ERRNO"}
            ]
        }),
    );
    c.sh("grep -E '^Seccomp:' /proc/$$/status; mkdir /tmp/d 2>&1; ln -s x /tmp/l 2>&1; \
          touch /tmp/f && echo touch-ok; true");
    let out = c.run(&[]).ok();
    let l: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(l[0].split_whitespace().collect::<Vec<_>>(), ["Seccomp:", "2"], "{out}");
    assert!(l[1].contains("Operation not permitted"), "mkdir must fail with EPERM: {out}");
    // Without errnoRet runc returns EPERM too.
    assert!(l[2].contains("Operation not permitted"), "symlink must fail with EPERM: {out}");
    assert_eq!(l[3], "touch-ok", "{out}");
}

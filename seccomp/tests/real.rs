//! Real kernel tests: a forked child loads a compiled filter and makes the syscalls.
//!
//! The test harness is multi-threaded, so after fork the child only makes async-signal-safe
//! calls: prctl, seccomp (Program::load does not allocate), raw syscalls, _exit. Everything
//! that allocates (profile, compile) happens in the parent before fork.

use capsa_seccomp::{Arg, Program, Seccomp, Syscall};

fn rule(names: &[&str], action: &str, errno_ret: Option<u32>) -> Syscall {
    Syscall { names: names.iter().map(|s| s.to_string()).collect(), action: action.into(), errno_ret, args: Vec::<Arg>::new() }
}

/// Forks; the child runs `child` and exits with its return value. Returns the wait status.
fn in_child(child: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the child only runs `child` (async-signal-safe calls, see module doc) and _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = child();
        // SAFETY: _exit ends the child without running the parent's atexit handlers or destructors.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child, with a valid pointer to `status`.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            return status;
        }
        assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::EINTR), "waitpid failed");
    }
}

fn set_no_new_privs() -> bool {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 }
}

fn errno() -> i32 {
    // SAFETY: reads this thread's errno; async-signal-safe.
    unsafe { *libc::__errno_location() }
}

/// `mkdir`/`mkdirat` fail with errno 38 (ENOSYS) under the filter; other syscalls work.
#[test]
fn errno_action_in_a_real_child() {
    let profile = Seccomp {
        default_action: "SCMP_ACT_ALLOW".into(),
        flags: vec!["SECCOMP_FILTER_FLAG_TSYNC".into(), "SECCOMP_FILTER_FLAG_LOG".into()],
        syscalls: vec![rule(&["mkdir", "mkdirat"], "SCMP_ACT_ERRNO", Some(38))],
        ..Default::default()
    };
    let program = Program::compile(&profile).expect("compiles");
    let path = c"/nonexistent-capsa-seccomp/dir"; // ENOENT without the filter: nothing to clean up
    let status = in_child(|| {
        if !set_no_new_privs() {
            return 10;
        }
        if program.load().is_err() {
            return 11;
        }
        // SAFETY: raw syscalls with a valid NUL-terminated path.
        let rc = unsafe { libc::syscall(libc::SYS_mkdirat, libc::AT_FDCWD, path.as_ptr(), 0o700) };
        if rc != -1 || errno() != 38 {
            return 12;
        }
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: as above.
            let rc = unsafe { libc::syscall(libc::SYS_mkdir, path.as_ptr(), 0o700) };
            if rc != -1 || errno() != 38 {
                return 13;
            }
        }
        // SAFETY: getppid has no arguments; it must still be allowed.
        if unsafe { libc::syscall(libc::SYS_getppid) } <= 0 {
            return 14;
        }
        0
    });
    assert!(libc::WIFEXITED(status), "child status {status:#x}");
    assert_eq!(libc::WEXITSTATUS(status), 0, "child exit code (10 nnp, 11 load, 12 mkdirat, 13 mkdir, 14 getppid)");
}

/// KILL_PROCESS: the child dies by SIGSYS at its first `mkdirat`.
#[test]
fn kill_process_action_in_a_real_child() {
    let profile = Seccomp {
        default_action: "SCMP_ACT_ALLOW".into(),
        syscalls: vec![rule(&["mkdirat", "mkdir"], "SCMP_ACT_KILL_PROCESS", None)],
        ..Default::default()
    };
    let program = Program::compile(&profile).expect("compiles");
    let status = in_child(|| {
        if !set_no_new_privs() {
            return 10;
        }
        if program.load().is_err() {
            return 11;
        }
        // SAFETY: raw syscall with a valid path.
        unsafe { libc::syscall(libc::SYS_mkdirat, libc::AT_FDCWD, c"/nonexistent-capsa-seccomp/dir".as_ptr(), 0o700) };
        0 // not killed
    });
    assert!(libc::WIFSIGNALED(status), "child was not killed: status {status:#x}");
    assert_eq!(libc::WTERMSIG(status), libc::SIGSYS);
}

/// NOTIFY: loading returns a listener fd (with TSYNC, which needs TSYNC_ESRCH added).
#[test]
fn notify_returns_a_listener_fd() {
    let profile = Seccomp {
        default_action: "SCMP_ACT_ALLOW".into(),
        flags: vec!["SECCOMP_FILTER_FLAG_TSYNC".into()],
        listener_path: Some("/run/never-used.sock".into()),
        syscalls: vec![rule(&["acct"], "SCMP_ACT_NOTIFY", None)],
        ..Default::default()
    };
    let program = Program::compile(&profile).expect("compiles");
    assert!(program.needs_listener());
    let status = in_child(|| {
        if !set_no_new_privs() {
            return 10;
        }
        match program.load() {
            Ok(Some(fd)) => {
                use std::os::fd::AsRawFd;
                if fd.as_raw_fd() < 0 {
                    return 12;
                }
                0 // dropping the fd closes it
            }
            Ok(None) => 13,
            Err(_) => 11,
        }
    });
    assert!(libc::WIFEXITED(status), "child status {status:#x}");
    assert_eq!(libc::WEXITSTATUS(status), 0, "child exit code (10 nnp, 11 load, 13 no fd)");
}

/// A ~1200-instruction filter whose jumps need `ja` trampolines is accepted by the kernel
/// and behaves: 300 conditional rules on getppid's first argument.
#[test]
fn long_filter_with_far_jumps_loads_and_works() {
    let syscalls = (0..300u64)
        .map(|i| Syscall {
            args: vec![Arg { index: 0, value: i, value_two: 0, op: "SCMP_CMP_EQ".into() }],
            ..rule(&["getppid"], "SCMP_ACT_ERRNO", Some(i as u32 + 1))
        })
        .collect();
    let profile = Seccomp { default_action: "SCMP_ACT_ALLOW".into(), syscalls, ..Default::default() };
    let program = Program::compile(&profile).expect("compiles");
    assert!(program.instructions().len() > 1000, "{}", program.instructions().len());
    assert!(program.instructions().iter().any(|i| i.code == 0x05), "expected ja trampolines");
    let status = in_child(|| {
        if !set_no_new_privs() {
            return 10;
        }
        if program.load().is_err() {
            return 11;
        }
        for (arg, want) in [(0i64, 1), (150, 151), (299, 300)] {
            // SAFETY: getppid ignores its (extra) argument; the filter reads it.
            let rc = unsafe { libc::syscall(libc::SYS_getppid, arg) };
            if rc != -1 || errno() != want {
                return 12;
            }
        }
        // SAFETY: as above.
        if unsafe { libc::syscall(libc::SYS_getppid, 300i64) } <= 0 {
            return 13;
        }
        0
    });
    assert!(libc::WIFEXITED(status), "child status {status:#x}");
    assert_eq!(libc::WEXITSTATUS(status), 0, "child exit code (10 nnp, 11 load, 12 errno, 13 allow)");
}

//! `linux.seccomp` end to end: every action, operator and flag, the i386/x32 ABIs, the NOTIFY
//! listener handed to an agent of ours, `exec`, and bad profiles.
//!
//! The container runs `sysprobe` (src/bin/sysprobe.rs, a static-pie bind-mounted at /mnt): it
//! makes raw syscalls and prints `RET ERRNO` per call, so each assertion is about exactly what
//! the kernel answered under the filter the runtime loaded. x86_64 numbers throughout (the
//! i386 and x32 ABIs are reached from the same 64-bit binary: `int 0x80` and the x32 bit).

#![cfg(target_arch = "x86_64")]
#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use capsa_integration::*;
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const SYS_GETPID: i64 = libc::SYS_getpid;
const SYS_MKDIR: i64 = libc::SYS_mkdir;
const SYS_ACCESS: i64 = libc::SYS_access;
const SIGSYS_EXIT: i32 = 128 + libc::SIGSYS; // 159: what `run` returns for a container killed by SIGSYS
const AUDIT_ARCH_X86_64: &str = "0xc000003e";
// i386 numbers (arch/x86/entry/syscalls/syscall_32.tbl).
const I386_GETPID: i64 = 20;
const I386_MKDIR: i64 = 39; // 39 is getpid on x86_64: the filter must not confuse them
const I386_UMASK: i64 = 60;
const I386_GETPPID: i64 = 64;

/// A container on the shared rootfs with sysprobe at /mnt, a tmpfs /tmp and `seccomp`.
fn probe_container(name: &str, seccomp: Value) -> Container {
    let mut c = Container::shared(name);
    c.tmpfs("/tmp");
    c.add_mount(json!({
        "destination": "/mnt", "type": "bind", "source": sysprobe_dir(), "options": ["rbind", "ro"]
    }));
    c.set("/linux/seccomp", seccomp);
    c
}

/// process.args = sysprobe with `script`'s steps: "83 s:/tmp/a 0o755 | 39" (see sysprobe.rs).
fn probe(c: &mut Container, script: &str) {
    let mut args = vec!["/mnt/sysprobe".to_string()];
    for (i, step) in script.split('|').enumerate() {
        if i > 0 {
            args.push("--".into());
        }
        args.extend(step.split_whitespace().map(String::from));
    }
    c.set("/process/args", json!(args));
}

fn lines(out: &Output) -> Vec<&str> {
    out.stdout.lines().collect()
}

fn allow_with(rules: Value) -> Value {
    json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"], "syscalls": rules})
}

/// The docker-like default profile the benchmark uses (hack/seccomp-docker-default.json).
fn docker_profile() -> Value {
    let text = fs::read_to_string(workspace_root().join("hack/seccomp-docker-default.json")).expect("read docker profile");
    serde_json::from_str(&text).expect("docker profile is JSON")
}

// ---------------------------------------------------------------------------------------------
// Actions
// ---------------------------------------------------------------------------------------------

/// SCMP_ACT_ERRNO returns the errno each rule asks for (EPERM without errnoRet; 4094 because
/// runc 1.1.5's libseccomp refuses 4095, which capsa and the kernel accept) and
/// the syscall does not run; other syscalls are untouched. Both load points: before the user
/// switch (noNewPrivileges false) and as init's last step (true).
#[test]
fn errno_rules_return_the_errno_asked_for() {
    for nnp in [true, false] {
        let mut c = probe_container(
            &format!("sc-errno-{nnp}"),
            allow_with(json!([
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                {"names": ["symlink"], "action": "SCMP_ACT_ERRNO", "errnoRet": 28},
                {"names": ["rmdir"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["link"], "action": "SCMP_ACT_ERRNO", "errnoRet": 4094}
            ])),
        );
        c.set("/process/noNewPrivileges", json!(nnp));
        probe(
            &mut c,
            &format!(
                "{SYS_MKDIR} s:/tmp/a 0o755 | {} -100 s:/tmp/a 0o755 | {} s:x s:/tmp/l | {} s:/tmp | {} s:/mnt/sysprobe s:/tmp/h \
             | {SYS_ACCESS} s:/tmp/a 0 | {SYS_GETPID}",
                libc::SYS_mkdirat,
                libc::SYS_symlink,
                libc::SYS_rmdir,
                libc::SYS_link
            ),
        );
        let out = c.run(&[]).ok();
        assert_eq!(
            lines(&out),
            ["-1 13", "-1 13", "-1 28", "-1 1", "-1 4094", "-1 2", "1 0"],
            "nnp={nnp}: mkdir, mkdirat, symlink, rmdir, link, access (the dir was never made), getpid:\n{out}"
        );
    }
}

/// busybox's own tools see the errno: `mkdir` reports it, `touch` is unaffected.
#[test]
fn errno_rule_seen_by_busybox() {
    let mut c = probe_container(
        "sc-errno-bb",
        allow_with(json!([
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 122}
        ])),
    );
    c.sh("mkdir /tmp/d 2>&1; echo rc=$?; touch /tmp/f && echo touch-ok");
    let out = c.run(&[]).ok();
    assert_eq!(lines(&out), ["mkdir: can't create directory '/tmp/d': Disk quota exceeded", "rc=1", "touch-ok"], "{out}");
}

/// SCMP_ACT_KILL_PROCESS kills the whole process with SIGSYS, even when another thread makes
/// the call: `run` exits 128+31 and nothing after the call runs.
#[test]
fn kill_process_kills_the_container() {
    let mut c = probe_container(
        "sc-killproc",
        allow_with(json!([
            {"names": ["mkdir"], "action": "SCMP_ACT_KILL_PROCESS"}
        ])),
    );
    probe(&mut c, &format!("{SYS_GETPID} | {SYS_MKDIR} s:/tmp/a 0o755 | {SYS_GETPID}"));
    let out = c.run(&[]).code_is(SIGSYS_EXIT);
    assert_eq!(lines(&out), ["1 0"], "{out}");

    probe(&mut c, &format!("thread {SYS_MKDIR} s:/tmp/a 0o755 | {SYS_GETPID}"));
    let out = c.run(&[]).code_is(SIGSYS_EXIT);
    assert_eq!(out.stdout, "", "the main thread dies too:\n{out}");
}

/// SCMP_ACT_KILL_THREAD and SCMP_ACT_KILL (its old name) kill only the calling thread: a
/// second thread dies, the main thread carries on; a single-threaded init dies of SIGSYS.
#[test]
fn kill_thread_kills_only_the_thread() {
    for action in ["SCMP_ACT_KILL_THREAD", "SCMP_ACT_KILL"] {
        let mut c = probe_container("sc-killthr", allow_with(json!([{"names": ["mkdir"], "action": action}])));
        probe(&mut c, &format!("thread {SYS_MKDIR} s:/tmp/a 0o755 | {SYS_GETPID} | {SYS_ACCESS} s:/tmp/a 0"));
        let out = c.run(&[]).ok();
        assert_eq!(lines(&out), ["main alive tasks=1", "1 0", "-1 2"], "{action}: the thread died before printing:\n{out}");

        probe(&mut c, &format!("{SYS_GETPID} | {SYS_MKDIR} s:/tmp/a 0o755 | {SYS_GETPID}"));
        let out = c.run(&[]).code_is(SIGSYS_EXIT);
        assert_eq!(lines(&out), ["1 0"], "{action}:\n{out}");
    }
}

/// SCMP_ACT_TRAP sends a catchable SIGSYS (si_code SYS_SECCOMP, si_syscall = the call,
/// si_arch = x86_64); uncaught, it kills with SIGSYS.
#[test]
fn trap_sends_sigsys() {
    let mut c = probe_container("sc-trap", allow_with(json!([{"names": ["mkdir"], "action": "SCMP_ACT_TRAP"}])));
    probe(&mut c, &format!("trap {SYS_MKDIR} s:/tmp/a 0o755 | {SYS_ACCESS} s:/tmp/a 0"));
    let out = c.run(&[]).ok();
    let sigsys = format!("sigsys code=1 nr={SYS_MKDIR} errno=0 arch={AUDIT_ARCH_X86_64}");
    assert_eq!(lines(&out), [sigsys.as_str(), "-1 2"], "{out}");

    probe(&mut c, &format!("{SYS_MKDIR} s:/tmp/a 0o755 | {SYS_GETPID}"));
    let out = c.run(&[]).code_is(SIGSYS_EXIT);
    assert_eq!(out.stdout, "", "{out}");
}

/// SCMP_ACT_TRACE with no tracer attached: the kernel fails the call with ENOSYS, not run.
#[test]
fn trace_without_a_tracer_is_enosys() {
    let mut c = probe_container(
        "sc-trace",
        allow_with(json!([
            {"names": ["mkdir"], "action": "SCMP_ACT_TRACE", "errnoRet": 7}
        ])),
    );
    probe(&mut c, &format!("{SYS_MKDIR} s:/tmp/a 0o755 | {SYS_ACCESS} s:/tmp/a 0 | {SYS_GETPID}"));
    let out = c.run(&[]).ok();
    assert_eq!(lines(&out), ["-1 38", "-1 2", "1 0"], "{out}");
}

/// defaultAction SCMP_ACT_ERRNO with defaultErrnoRet, and SCMP_ACT_ALLOW rules: the docker-like
/// default profile (363 names, arg conditions) with defaultErrnoRet 71. Allowed calls work,
/// unlisted ones get 71, conditional ones depend on their argument, clone3 gets its own ENOSYS.
#[test]
fn default_errno_and_allow_rules() {
    let mut profile = docker_profile();
    profile["defaultErrnoRet"] = json!(71);
    let mut c = probe_container("sc-default", profile);
    probe(
        &mut c,
        &format!(
            "{SYS_MKDIR} s:/tmp/a 0o755 | {SYS_ACCESS} s:/tmp/a 0 | {unshare} 0 | {pers} 0xffffffff | {pers} 1 \
         | {socket} 40 1 0 | {socket} 1 1 0 | {clone3} 0 0 | {SYS_GETPID}",
            unshare = libc::SYS_unshare,
            pers = libc::SYS_personality,
            socket = libc::SYS_socket,
            clone3 = libc::SYS_clone3
        ),
    );
    let out = c.run(&[]).ok();
    assert_eq!(
        lines(&out),
        ["0 0", "0 0", "-1 71", "0 0", "-1 71", "-1 71", "3 0", "-1 38", "1 0"],
        "mkdir, access: allowed; unshare: default; personality EQ 0xffffffff allowed, 1 not; \
         socket NE 40: AF_VSOCK refused, AF_UNIX allowed; clone3: its rule; getpid:\n{out}"
    );
}

/// Syscall names no architecture knows are skipped, as runc (libseccomp) skips them: podman's
/// stock profile names `syscall` and `timerfd`, which are no syscalls. The rest of the profile
/// applies, and `--debug` says what was skipped.
#[test]
fn unknown_syscall_names_are_skipped() {
    let mut c = probe_container(
        "sc-unknown-names",
        allow_with(json!([
            {"names": ["no_such_syscall", "mkdir", "syscall", "timerfd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 122}
        ])),
    );
    probe(&mut c, &format!("{SYS_MKDIR} s:/tmp/a 0o755 | {SYS_GETPID}"));
    c.write_config();
    let out = c.cmd(["--debug", "run", "--bundle", c.bundle.to_str().unwrap(), &c.id]).run().ok();
    assert_eq!(lines(&out), ["-1 122", "1 0"], "{out}");
    if is_capsa() {
        assert!(out.stderr.contains("no_such_syscall") && out.stderr.contains("ignored"), "{out}");
    }
}

/// runc's ENOSYS stub: under a profile older than the kernel (the docker-like profile without
/// the syscalls numbered 435 and up, so its newest is pidfd_open, 434) a newer syscall fails
/// with ENOSYS, not the default action, so programs fall back: glibc's pthread_create tries
/// clone3 (435) and falls back to clone only on ENOSYS. Unlisted syscalls below the newest
/// keep the default action (EPERM here).
#[test]
fn newer_syscalls_get_enosys() {
    const NEWER: [&str; 11] = [
        "clone3",
        "close_range",
        "openat2",
        "faccessat2",
        "epoll_pwait2",
        "landlock_create_ruleset",
        "landlock_add_rule",
        "landlock_restrict_self",
        "memfd_secret",
        "process_mrelease",
        "futex_waitv",
    ];
    let mut profile = docker_profile();
    for rule in profile["syscalls"].as_array_mut().unwrap() {
        let names: Vec<Value> =
            rule["names"].as_array().unwrap().iter().filter(|n| !NEWER.contains(&n.as_str().unwrap())).cloned().collect();
        rule["names"] = json!(names);
    }
    profile["syscalls"].as_array_mut().unwrap().retain(|r| !r["names"].as_array().unwrap().is_empty());
    profile.as_object_mut().unwrap().remove("defaultErrnoRet");
    let mut c = probe_container("sc-enosys", profile);
    probe(
        &mut c,
        &format!(
            "{clone3} 0 0 | {faccessat2} -100 s:/ 0 0 | 1000 | {acct} 0 | thread {SYS_GETPID} | {SYS_GETPID}",
            clone3 = libc::SYS_clone3,
            faccessat2 = libc::SYS_faccessat2,
            acct = libc::SYS_acct
        ),
    );
    let out = c.run(&[]).ok();
    let l = lines(&out);
    assert_eq!(&l[..4], ["-1 38", "-1 38", "-1 38", "-1 1"], "clone3, faccessat2, 1000: above the newest; acct: unlisted below it:\n{out}");
    // The thread was made (with clone, after clone3's ENOSYS) and ran getpid.
    assert_eq!(l[4], "1 0", "{out}");
    assert!(l[5].starts_with("main alive"), "{out}");
}

/// The same docker-like profile loaded before the user switch (noNewPrivileges false) leaves
/// the runtime's own last steps working, and busybox runs under it.
#[test]
fn docker_profile_with_busybox_and_early_load() {
    let mut c = probe_container("sc-docker-bb", docker_profile());
    c.set("/process/noNewPrivileges", json!(false));
    c.set("/process/user", json!({"uid": 1000, "gid": 1000, "additionalGids": [10]}));
    c.sh("grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; mkdir /tmp/x && ls -d /tmp/x; id -u; unshare -m true 2>&1; echo rc=$?");
    let out = c.run(&[]).ok();
    let l = lines(&out);
    assert_eq!(l[0].split_whitespace().collect::<Vec<_>>(), ["NoNewPrivs:", "0"], "{out}");
    assert_eq!(l[1].split_whitespace().collect::<Vec<_>>(), ["Seccomp:", "2"], "{out}");
    assert_eq!(&l[2..4], ["/tmp/x", "1000"], "{out}");
    assert!(l[4].contains("Operation not permitted"), "unshare is not in the profile: {out}");
    assert_eq!(l[5], "rc=1", "{out}");
}

/// SCMP_ACT_LOG: the call is allowed and, where the kernel log is readable, an audit record
/// (type=1326, code=0x7ffc0000) names our process and the syscall.
#[test]
fn log_action_allows_and_audits() {
    let mut c = probe_container("sc-log", allow_with(json!([{"names": ["getppid"], "action": "SCMP_ACT_LOG"}])));
    let comm = unique_comm("slg");
    probe(&mut c, &format!("name {comm} | {} | {SYS_GETPID}", libc::SYS_getppid));
    audited(&c, &comm, &format!("syscall={}", libc::SYS_getppid), "code=0x7ffc0000", |out| {
        assert_eq!(lines(out), ["0 0", "0 0", "1 0"], "getppid is allowed (0: init's parent is outside):\n{out}");
    });
}

/// SECCOMP_FILTER_FLAG_LOG makes the kernel audit ERRNO actions too (code=0x50000: the action
/// without its data);
/// without the flag the same filter leaves no record.
#[test]
fn filter_flag_log_audits_errno_actions() {
    if !is_capsa() {
        return; // runc 1.1.5: "seccomp flags are not yet supported by runc"
    }
    let rules = json!([{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]);
    let mut profile = allow_with(rules.clone());
    profile["flags"] = json!(["SECCOMP_FILTER_FLAG_LOG"]);
    let mut c = probe_container("sc-flaglog", profile);
    let comm = unique_comm("sfl");
    probe(&mut c, &format!("name {comm} | {SYS_MKDIR} s:/tmp/a 0o755"));
    let check = |out: &Output| assert_eq!(lines(out), ["0 0", "-1 13"], "{out}");
    audited(&c, &comm, &format!("syscall={SYS_MKDIR}"), "code=0x50000", check);
    // Control: no flag, no record. The same process then makes a call a LOG rule
    // audits: records reach the kernel log in order, so once that one is there, a
    // record of the mkdir would be there too.
    let mut rules = rules;
    rules.as_array_mut().unwrap().push(json!({"names": ["getppid"], "action": "SCMP_ACT_LOG"}));
    let mut c = probe_container("sc-flaglog0", allow_with(rules));
    let comm = unique_comm("snl");
    probe(&mut c, &format!("name {comm} | {SYS_MKDIR} s:/tmp/a 0o755 | {}", libc::SYS_getppid));
    let mut kmsg = Kmsg::open().unwrap();
    let check = |out: &Output| assert_eq!(lines(out), ["0 0", "-1 13", "0 0"], "{out}");
    audited(&c, &comm, &format!("syscall={}", libc::SYS_getppid), "code=0x7ffc0000", check);
    let log = kmsg.read_new();
    let mkdir = format!("syscall={SYS_MKDIR} ");
    assert!(!log.lines().any(|l| l.contains(&format!("comm=\"{comm}\"")) && l.contains(&mkdir)), "ERRNO audited without the flag:\n{log}");
}

// ---------------------------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------------------------

/// One rule `umask` → ERRNO 77 when `arg0 OP value [value_two]`; each case is (arg, denied).
/// umask never fails by itself, so "-1 77" can only come from the filter. Values above 32 bits
/// check that both words of the 64-bit argument are compared.
fn check_op(op: &str, value: u64, value_two: u64, cases: &[(u64, bool)]) {
    let mut c = probe_container(
        &format!("sc-op-{}", op.trim_start_matches("SCMP_CMP_").to_lowercase()),
        allow_with(json!([
            {"names": ["umask"], "action": "SCMP_ACT_ERRNO", "errnoRet": 77,
             "args": [{"index": 0, "value": value, "valueTwo": value_two, "op": op}]}
        ])),
    );
    let script: Vec<String> = cases.iter().map(|(a, _)| format!("{} {a:#x}", libc::SYS_umask)).collect();
    probe(&mut c, &script.join(" | "));
    let out = c.run(&[]).ok();
    let l = lines(&out);
    assert_eq!(l.len(), cases.len(), "{out}");
    for ((arg, denied), line) in cases.iter().zip(l) {
        if *denied {
            assert_eq!(line, "-1 77", "{op} {value:#x}/{value_two:#x}: umask({arg:#x}) must be denied:\n{out}");
        } else {
            assert!(line.ends_with(" 0") && !line.starts_with('-'), "{op} {value:#x}: umask({arg:#x}) must be allowed:\n{out}");
        }
    }
}

#[test]
fn op_eq() {
    check_op("SCMP_CMP_EQ", 0o22, 0, &[(0o22, true), (0o23, false), (0x1_0000_0012, false), (0, false)]);
}

#[test]
fn op_ne() {
    check_op("SCMP_CMP_NE", 0o22, 0, &[(0o22, false), (0o77, true), (0x1_0000_0012, true)]);
}

#[test]
fn op_lt() {
    check_op("SCMP_CMP_LT", 0o100, 0, &[(0o77, true), (0o100, false), (0o101, false), (0x1_0000_0000, false), (0, true)]);
}

#[test]
fn op_le() {
    check_op("SCMP_CMP_LE", 0o100, 0, &[(0o100, true), (0o77, true), (0o101, false), (0x1_0000_0040, false)]);
}

#[test]
fn op_gt() {
    check_op("SCMP_CMP_GT", 0o100, 0, &[(0o101, true), (0o100, false), (0, false), (0x1_0000_0000, true)]);
}

#[test]
fn op_ge() {
    check_op("SCMP_CMP_GE", 0o100, 0, &[(0o100, true), (0o77, false), (u64::MAX, true), (0x1_0000_0000, true)]);
}

#[test]
fn op_masked_eq() {
    // (arg & 0x1_0000_0700) == 0x1_0000_0700: the mask spans both words.
    check_op(
        "SCMP_CMP_MASKED_EQ",
        0x1_0000_0700,
        0x1_0000_0700,
        &[(0x1_0000_0700, true), (0x1_0000_0777, true), (0o700, false), (0x1_0000_0600, false), (0x3_0000_0700, true)],
    );
}

/// Several conditions of one rule must all hold (AND); several rules for one syscall are tried
/// in turn (OR); two conditions on the same argument in one rule are ORed (runc's rule).
/// lseek on fd 99 (never open) fails with EBADF when allowed, so every other errno is a rule's.
#[test]
fn conditions_and_rules_combine() {
    let mut c = probe_container(
        "sc-andor",
        allow_with(json!([
            {"names": ["lseek"], "action": "SCMP_ACT_ERRNO", "errnoRet": 61,
             "args": [{"index": 1, "value": 5, "op": "SCMP_CMP_EQ"}, {"index": 2, "value": 1, "op": "SCMP_CMP_EQ"}]},
            {"names": ["lseek"], "action": "SCMP_ACT_ERRNO", "errnoRet": 62, "args": [{"index": 1, "value": 7, "op": "SCMP_CMP_EQ"}]},
            {"names": ["lseek"], "action": "SCMP_ACT_ERRNO", "errnoRet": 63, "args": [{"index": 2, "value": 2, "op": "SCMP_CMP_GT"}]},
            {"names": ["dup"], "action": "SCMP_ACT_ERRNO", "errnoRet": 64,
             "args": [{"index": 0, "value": 100, "op": "SCMP_CMP_EQ"}, {"index": 0, "value": 101, "op": "SCMP_CMP_EQ"}]}
        ])),
    );
    let lseek = libc::SYS_lseek;
    let dup = libc::SYS_dup;
    let cases = [
        (format!("{lseek} 99 5 1"), "-1 61"), // both conditions of rule 1
        (format!("{lseek} 99 5 0"), "-1 9"),  // only one: rule 1 does not apply
        (format!("{lseek} 99 6 1"), "-1 9"),
        (format!("{lseek} 99 7 0"), "-1 62"), // rule 2
        (format!("{lseek} 99 7 1"), "-1 62"),
        (format!("{lseek} 99 0 3"), "-1 63"), // rule 3
        (format!("{lseek} 99 5 3"), "-1 63"),
        (format!("{dup} 100"), "-1 64"),
        (format!("{dup} 101"), "-1 64"),
        (format!("{dup} 102"), "-1 9"),
    ];
    probe(&mut c, &cases.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>().join(" | "));
    let out = c.run(&[]).ok();
    assert_eq!(lines(&out), cases.iter().map(|(_, want)| *want).collect::<Vec<_>>(), "{out}");
}

// ---------------------------------------------------------------------------------------------
// Architectures
// ---------------------------------------------------------------------------------------------

/// i386 syscalls (`int 0x80` from the same binary: the kernel runs them as ia32 calls and
/// reports AUDIT_ARCH_I386, as for a 32-bit program, which the TRAP below shows) are matched
/// against the i386 table: i386 getpid (20) gets getpid's rule, i386 mkdir (39, which is
/// getpid's number on x86_64) gets mkdir's. Without SCMP_ARCH_X86 they get libseccomp's
/// bad-arch action (KILL_THREAD): SIGSYS.
#[test]
fn i386_syscalls_use_their_own_table() {
    let rules = json!([
        {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 51},
        {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 52},
        {"names": ["getppid"], "action": "SCMP_ACT_TRAP"}
    ]);
    let mut c = probe_container(
        "sc-i386",
        json!({"defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"], "syscalls": rules}),
    );
    probe(
        &mut c,
        &format!(
            "{SYS_GETPID} | i386 {I386_GETPID} | {SYS_MKDIR} s:/tmp/a 0o755 | i386 {I386_MKDIR} s:/tmp/b 0o755 \
         | i386 {I386_UMASK} 0o27 | i386 {I386_UMASK} 0o22 | {SYS_ACCESS} s:/tmp/b 0 | trap i386 {I386_GETPPID}"
        ),
    );
    let out = c.run(&[]).ok();
    let trap = format!("sigsys code=1 nr={I386_GETPPID} errno=0 arch=0x40000003");
    assert_eq!(lines(&out), ["-1 51", "-1 51", "-1 52", "-1 52", "18 0", "23 0", "-1 2", trap.as_str()], "{out}");

    let mut c = probe_container(
        "sc-i386-no",
        json!({"defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"], "syscalls": rules}),
    );
    probe(&mut c, &format!("{SYS_ACCESS} s:/tmp 0 | i386 {I386_UMASK} 0o27 | {SYS_GETPID}"));
    let out = c.run(&[]).code_is(SIGSYS_EXIT);
    assert_eq!(lines(&out), ["0 0"], "{out}");
}

/// x32 calls (the x32 bit in the number, under AUDIT_ARCH_X86_64) use the x32 table when
/// SCMP_ARCH_X32 is listed (this kernel has no x32 ABI, so an allowed one fails with ENOSYS),
/// and are killed (SIGSYS) when it is not, never treated as x86_64 calls.
#[test]
fn x32_syscalls_use_their_own_table() {
    let rules = json!([{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 52}]);
    let mut c = probe_container(
        "sc-x32",
        json!({"defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X32"], "syscalls": rules}),
    );
    probe(&mut c, &format!("x32 {SYS_MKDIR} s:/tmp/a 0o755 | x32 {SYS_GETPID} | {SYS_MKDIR} s:/tmp/a 0o755"));
    let out = c.run(&[]).ok();
    assert_eq!(lines(&out), ["-1 52", "-1 38", "-1 52"], "{out}");

    let mut c = probe_container(
        "sc-x32-no",
        json!({"defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"], "syscalls": rules}),
    );
    probe(&mut c, &format!("{SYS_GETPID} | x32 {SYS_GETPID} | {SYS_GETPID}"));
    let out = c.run(&[]).code_is(SIGSYS_EXIT);
    assert_eq!(lines(&out), ["1 0"], "{out}");
}

// ---------------------------------------------------------------------------------------------
// Flags
// ---------------------------------------------------------------------------------------------

/// SECCOMP_FILTER_FLAG_TSYNC and SPEC_ALLOW load (the kernel refuses unknown flag bits) and
/// the filter works with them. SPEC_ALLOW's effect is visible only where the kernel forces
/// speculative store bypass mitigation on seccomp tasks; this host's CPU state is printed.
#[test]
fn filter_flags_tsync_and_spec_allow() {
    if !is_capsa() {
        return; // runc 1.1.5: "seccomp flags are not yet supported by runc"
    }
    let ssb_host = read("/sys/devices/system/cpu/vulnerabilities/spec_store_bypass");
    for flags in [json!([]), json!(["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"])] {
        let mut profile = allow_with(json!([{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]));
        profile["flags"] = flags.clone();
        let mut c = probe_container("sc-flags", profile);
        c.sh("grep -E '^(Seccomp|Seccomp_filters|Speculation_Store_Bypass):' /proc/self/status; mkdir /tmp/x 2>&1");
        let out = c.run(&[]).code_is(1);
        let text = out.stdout.replace('\t', " ");
        assert!(text.contains("Seccomp: 2\n") && text.contains("Seccomp_filters: 1\n"), "{flags}: {out}");
        assert!(text.contains("Permission denied"), "{flags}: {out}");
        let ssb = text.lines().find(|l| l.starts_with("Speculation_Store_Bypass")).unwrap_or("").to_string();
        if ssb_host.contains("seccomp") {
            // Mitigation mode "prctl and seccomp": a filter without SPEC_ALLOW forces it on.
            assert_eq!(ssb.contains("force mitigated"), flags.as_array().unwrap().is_empty(), "{flags}: {out}");
        } else {
            println!("NOTE: host spec_store_bypass is {:?}: {flags} -> {ssb:?}", ssb_host.trim());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// NOTIFY
// ---------------------------------------------------------------------------------------------

/// The agent side of `listenerPath`: a listening unix socket in the test dir.
struct Agent {
    path: PathBuf,
    listener: std::os::unix::net::UnixListener,
}

impl Agent {
    fn bind(c: &Container) -> Agent {
        let path = c.host_dir("agent").join("sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind agent socket");
        listener.set_nonblocking(true).unwrap();
        Agent { path, listener }
    }

    /// Accepts the runtime's connection; returns the seccomp state JSON and the listener fd.
    fn accept(&self) -> (Value, OwnedFd) {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        let (stream, _) = poll(POLL_TIMEOUT, "the runtime to connect to listenerPath", || self.listener.accept().ok());
        stream.set_nonblocking(false).unwrap();
        stream.set_read_timeout(Some(POLL_TIMEOUT)).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 4]);
        let msg = recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC).expect("recvmsg");
        let mut fds = vec![];
        for c in msg.cmsgs().unwrap() {
            if let ControlMessageOwned::ScmRights(v) = c {
                fds.extend(v);
            }
        }
        let n = msg.bytes;
        assert_eq!(fds.len(), 1, "one fd over listenerPath, got {fds:?}");
        // SAFETY: just received over SCM_RIGHTS; nobody else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fds[0]) };
        let state: Value = serde_json::from_slice(&buf[..n]).expect("seccomp state is JSON");
        (state, fd)
    }
}

/// One received notification.
struct Notif {
    id: u64,
    pid: u32,
    nr: i32,
    arch: u32,
    args: [u64; 6],
}

fn notif_recv(fd: &OwnedFd) -> Notif {
    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: poll on one valid pollfd.
    let rc = unsafe { libc::poll(&mut p, 1, POLL_TIMEOUT.as_millis() as i32) };
    assert_eq!(rc, 1, "no seccomp notification within {POLL_TIMEOUT:?}");
    // SAFETY: seccomp_notif is plain data; the kernel wants it zeroed.
    let mut n: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: NOTIF_RECV fills the struct we pass, valid for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut n) };
    assert_eq!(rc, 0, "SECCOMP_IOCTL_NOTIF_RECV: {}", std::io::Error::last_os_error());
    Notif { id: n.id, pid: n.pid, nr: n.data.nr, arch: n.data.arch, args: n.data.args }
}

fn notif_id_valid(fd: &OwnedFd, id: u64) -> bool {
    // SAFETY: NOTIF_ID_VALID reads one u64 through the pointer.
    unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0 }
}

/// Answers: `error` (negative errno) or success with `val`, or CONTINUE (run the real call).
fn notif_send(fd: &OwnedFd, id: u64, val: i64, error: i32, cont: bool) -> std::io::Result<()> {
    let mut r = libc::seccomp_notif_resp { id, val, error, flags: if cont { libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32 } else { 0 } };
    // SAFETY: NOTIF_SEND reads the response struct, valid for the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &mut r) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A NUL-terminated string from the notified process's memory.
fn read_string(pid: u32, addr: u64) -> String {
    let mem = fs::File::open(format!("/proc/{pid}/mem")).expect("open /proc/PID/mem");
    let mut buf = [0u8; 256];
    let n = mem.read_at(&mut buf, addr).expect("read /proc/PID/mem");
    let end = buf[..n].iter().position(|&b| b == 0).unwrap_or(n);
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn notify_profile(agent: &Agent, flags: Value) -> Value {
    let mut p = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "listenerPath": agent.path,
        "listenerMetadata": "agent-meta 42",
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
    });
    // runc 1.1.5 refuses any `flags` field, even an empty one.
    if flags.as_array().is_some_and(|f| !f.is_empty()) {
        p["flags"] = flags;
    }
    p
}

/// SCMP_ACT_NOTIFY: `create` sends the listener fd to listenerPath with the OCI seccomp state
/// ({ociVersion, fds: ["seccompFd"], pid, metadata, state}); our agent answers each mkdir
/// after reading its path from the process: an errno, a fake success, and CONTINUE (the real
/// call runs). With TSYNC too, which the kernel accepts with a listener only as TSYNC_ESRCH.
#[test]
fn notify_reaches_our_agent() {
    for flags in [json!([]), json!(["SECCOMP_FILTER_FLAG_TSYNC"])] {
        if !is_capsa() && flags != json!([]) {
            continue; // runc 1.1.5: "seccomp flags are not yet supported by runc"
        }
        let mut c = probe_container("sc-notify", json!({}));
        let agent = Agent::bind(&c);
        c.set("/linux/seccomp", notify_profile(&agent, flags.clone()));
        probe(
            &mut c,
            &format!(
                "{SYS_MKDIR} s:/tmp/a 0o755 | {SYS_MKDIR} s:/tmp/b 0o755 | {SYS_MKDIR} s:/tmp/c 0o700 \
             | {SYS_ACCESS} s:/tmp/b 0 | {SYS_ACCESS} s:/tmp/c 0"
            ),
        );
        let created = c.create(&[]).ok();
        let pid = c.pid();
        let (state, fd) = agent.accept();
        assert_eq!(state["ociVersion"].as_str().map(|v| v.starts_with("1.")), Some(true), "{state}");
        assert_eq!(state["fds"], json!(["seccompFd"]), "{state}");
        assert_eq!(state["pid"], json!(pid), "{state}");
        assert_eq!(state["metadata"], json!("agent-meta 42"), "{state}");
        assert_eq!(state["state"]["id"], json!(c.id), "{state}");
        assert_eq!(state["state"]["pid"], json!(pid), "{state}");
        assert_eq!(state["state"]["status"], json!("creating"), "{state}");
        assert_eq!(state["state"]["bundle"].as_str().map(Path::new), Some(c.bundle.as_path()), "{state}");
        let link = fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
        assert_eq!(link.to_string_lossy(), "anon_inode:seccomp notify");

        c.start().ok();
        for (path, answer) in [("/tmp/a", "exdev"), ("/tmp/b", "fake"), ("/tmp/c", "continue")] {
            let n = notif_recv(&fd);
            assert_eq!((n.pid as i32, n.nr as i64, n.arch), (pid, SYS_MKDIR, 0xc000_003e), "{flags}");
            assert_eq!(read_string(n.pid, n.args[0]), path, "{flags}");
            assert_eq!(n.args[1], if path == "/tmp/c" { 0o700 } else { 0o755 });
            assert!(notif_id_valid(&fd, n.id));
            match answer {
                "exdev" => notif_send(&fd, n.id, 0, -libc::EXDEV, false),
                "fake" => notif_send(&fd, n.id, 0, 0, false),
                _ => notif_send(&fd, n.id, 0, 0, true),
            }
            .expect("SECCOMP_IOCTL_NOTIF_SEND");
        }
        c.wait_status("stopped");
        let out = created.stdout_now();
        assert_eq!(out.lines().collect::<Vec<_>>(), ["-1 18", "0 0", "0 0", "-1 2", "0 0"], "{flags}: {out}");
        c.delete().ok();
    }
}

/// SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV: once the agent has received a notification, a
/// non-fatal signal no longer interrupts the notified call: the agent's answer still arrives.
/// Without the flag the same signal interrupts it (EINTR) and the notification goes stale.
#[test]
fn wait_killable_recv_flag() {
    let scratch = Container::shared("sc-wkr-features");
    let features = runtime_cmd(&scratch.dir, &scratch.out).arg("features").run().ok().json();
    let kernel_has = features["linux"]["seccomp"]["supportedFlags"]
        .as_array()
        .is_some_and(|f| f.contains(&json!("SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV")));
    assert!(kernel_has, "capsa features lists no SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (Linux 5.19+; this suite's kernels have it)");
    for killable in [true, false] {
        let mut c = probe_container("sc-wkr", json!({}));
        let agent = Agent::bind(&c);
        let flags = if killable { json!(["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]) } else { json!([]) };
        c.set("/linux/seccomp", notify_profile(&agent, flags));
        probe(&mut c, &format!("usr1 | {SYS_MKDIR} s:/tmp/w 0o755 | usr1count"));
        let created = c.create(&[]).ok();
        let (_, fd) = agent.accept();
        c.start().ok();
        let n = notif_recv(&fd);
        // SAFETY: kill with a pid and signal number.
        assert_eq!(unsafe { libc::kill(n.pid as i32, libc::SIGUSR1) }, 0);
        // kill(2) has queued the signal when it returns. Killable-only waits leave it pending
        // (nothing to wait for); otherwise it interrupts the wait, which ends the notification:
        // wait for that.
        if !killable {
            wait_until(POLL_TIMEOUT, || !notif_id_valid(&fd, n.id));
        }
        let out = created.stdout_now();
        let valid = notif_id_valid(&fd, n.id);
        let sent = notif_send(&fd, n.id, 0, -libc::EXDEV, false);
        c.wait_status("stopped");
        let out = format!("{out}---\n{}", created.stdout_now());
        let final_lines: Vec<String> = created.stdout_now().lines().map(String::from).collect();
        if killable {
            assert!(valid && sent.is_ok(), "killable: the notification must survive SIGUSR1 ({sent:?}):\n{out}");
            assert_eq!(final_lines, ["usr1 handler", "-1 18", "usr1=1"], "{out}");
        } else {
            assert!(!valid && sent.is_err(), "without the flag SIGUSR1 interrupts the wait:\n{out}");
            assert_eq!(final_lines, ["usr1 handler", "-1 4", "usr1=1"], "{out}");
        }
        c.delete().ok();
    }
}

// ---------------------------------------------------------------------------------------------
// exec
// ---------------------------------------------------------------------------------------------

/// `exec` into a container with a profile gets the same filter (one filter, its errno), at both
/// load points: as the last step (noNewPrivileges) and before the user switch (without it).
#[test]
fn exec_gets_the_filter() {
    for nnp in [true, false] {
        let mut c = probe_container(
            &format!("sc-exec-{nnp}"),
            allow_with(json!([
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}
            ])),
        );
        c.set("/process/noNewPrivileges", json!(nnp));
        c.set("/process/user", json!({"uid": 1000, "gid": 1000}));
        c.args(&["sleep", "100"]);
        c.create_start();
        let out = c.rt(["exec", &c.id, "/mnt/sysprobe", &SYS_MKDIR.to_string(), "s:/tmp/e", "0o755"]).ok();
        assert_eq!(out.stdout, "-1 13\n", "nnp={nnp}: {out}");
        let out = c
            .rt([
                "exec",
                &c.id,
                "sh",
                "-c",
                "grep -E '^(NoNewPrivs|Seccomp|Seccomp_filters):' /proc/self/status; id -u; mkdir /tmp/e2 2>&1",
            ])
            .code_is(1);
        let text = out.stdout.replace('\t', " ");
        let want = format!("NoNewPrivs: {}\nSeccomp: 2\nSeccomp_filters: 1\n1000\n", u8::from(nnp));
        assert!(text.starts_with(&want), "nnp={nnp}: {out}");
        assert!(text.contains("Permission denied"), "nnp={nnp}: {out}");
    }
}

/// `exec` in a NOTIFY container hands the agent a new listener for the exec'd process.
#[test]
fn exec_with_notify_sends_a_new_listener() {
    let mut c = probe_container("sc-exec-notify", json!({}));
    let agent = Agent::bind(&c);
    c.set("/linux/seccomp", notify_profile(&agent, json!([])));
    c.args(&["sleep", "100"]);
    c.create(&[]).ok();
    let (_, init_fd) = agent.accept();
    c.start().ok();
    let running = c.cmd(["exec", &c.id, "/mnt/sysprobe", &SYS_MKDIR.to_string(), "s:/tmp/x", "0o755"]).spawn();
    let (state, fd) = agent.accept();
    assert_eq!(state["metadata"], json!("agent-meta 42"), "{state}");
    assert_eq!(state["state"]["id"], json!(c.id), "{state}");
    let n = notif_recv(&fd);
    assert_eq!(state["pid"], json!(n.pid), "the state names the exec'd process: {state}");
    assert_ne!(n.pid as i32, c.pid());
    assert_eq!(read_string(n.pid, n.args[0]), "/tmp/x");
    notif_send(&fd, n.id, 0, -libc::ENOTSUP, false).unwrap();
    let out = running.wait().ok();
    assert_eq!(out.stdout, "-1 95\n", "{out}");
    drop(init_fd);
}

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

/// Each bad profile: `create` (and `run`) exit 1 with one line naming the entry, nothing left.
#[test]
fn bad_profiles_fail_cleanly() {
    let cases: Vec<(&str, Value, &[&str])> = vec![
        ("unknown-action", allow_with(json!([{"names": ["mkdir"], "action": "SCMP_ACT_FOO"}])), &["syscalls[0].action", "SCMP_ACT_FOO"]),
        ("unknown-default", json!({"defaultAction": "SCMP_ACT_NOPE"}), &["defaultAction", "SCMP_ACT_NOPE"]),
        (
            "unknown-op",
            allow_with(json!([{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO",
            "args": [{"index": 1, "value": 1, "op": "SCMP_CMP_FOO"}]}])),
            &["syscalls[0].args[0].op", "SCMP_CMP_FOO"],
        ),
        (
            "arg-index-6",
            allow_with(json!([{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO",
            "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}, {"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}])),
            &["linux.seccomp.syscalls[0].args[1].index", "6"],
        ),
        (
            "notify-no-listener",
            allow_with(json!([{"names": ["getpid"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}])),
            &["linux.seccomp.syscalls[1].action", "listenerPath"],
        ),
        // init writes and sendmsg()s the listener fd after loading the filter: NOTIFY there
        // would hang `create` (runc refuses write too).
        (
            "notify-write",
            json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/nonexistent/agent.sock",
            "syscalls": [{"names": ["getpid", "write"], "action": "SCMP_ACT_NOTIFY"}]}),
            &["linux.seccomp.syscalls[0].names[1]", "write"],
        ),
        (
            "notify-sendmsg",
            json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/nonexistent/agent.sock",
            "syscalls": [{"names": ["sendmsg"], "action": "SCMP_ACT_NOTIFY"}]}),
            &["linux.seccomp.syscalls[0].names[0]", "sendmsg"],
        ),
    ];
    for (name, profile, needles) in cases {
        if name == "notify-sendmsg" && !is_capsa() {
            continue; // runc passes the listener fd without sendmsg
        }
        let mut c = probe_container(&format!("sc-bad-{name}"), profile);
        c.args(&["true"]);
        c.write_config();
        for cmd in ["create", "run"] {
            let out = if cmd == "create" { c.create_cmd(&[]).run() } else { c.run_cmd(&[]).run() };
            let out = out.fails_cleanly();
            if is_capsa() {
                for needle in needles {
                    assert!(out.err_msg().contains(needle), "{name}: {cmd}: message must name {needle:?}:\n{out}");
                }
            }
            c.assert_clean();
        }
    }
}

/// A listenerPath nobody listens on: the container's init already exists when the fd is to be
/// sent, so this checks the failure path kills and removes it; the message is runc's.
#[test]
fn notify_listener_path_unreachable_fails_cleanly() {
    let mut c = probe_container("sc-bad-listener", json!({}));
    let path = c.host_dir("agent").join("nobody-listens");
    c.set(
        "/linux/seccomp",
        json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": path,
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}),
    );
    c.args(&["true"]);
    let out = c.create(&[]).fails_cleanly();
    assert!(out.err_msg().contains("nobody-listens"), "{out}");
    // runc's words, which its callers match on.
    assert!(out.err_msg().contains("failed to connect with seccomp agent"), "{out}");
    c.assert_clean();
}

/// `features` lists what the runtime and this kernel support.
#[test]
fn features_lists_actions_operators_archs_flags() {
    let scratch = Container::shared("sc-features");
    let features = runtime_cmd(&scratch.dir, &scratch.out).arg("features").run().ok().json();
    let sc = &features["linux"]["seccomp"];
    assert_eq!(sc["enabled"], json!(true), "{sc}");
    let has = |k: &str, v: &str| sc[k].as_array().is_some_and(|a| a.contains(&json!(v)));
    for a in [
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_TRAP",
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_TRACE",
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_LOG",
        "SCMP_ACT_NOTIFY",
    ] {
        assert!(has("actions", a), "{a}: {sc}");
    }
    for o in ["SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ"] {
        assert!(has("operators", o), "{o}: {sc}");
    }
    for a in ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"] {
        assert!(has("archs", a), "{a}: {sc}");
    }
    // runc 1.1.5 supports no seccomp flags and lists none.
    for f in ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"] {
        assert!(!is_capsa() || (has("knownFlags", f) && has("supportedFlags", f)), "{f}: {sc}");
    }
}

// ---------------------------------------------------------------------------------------------
// The kernel log
// ---------------------------------------------------------------------------------------------

/// /dev/kmsg from "now" on.
struct Kmsg(fs::File);

impl Kmsg {
    /// None when the kernel log is not readable here.
    fn open() -> Option<Kmsg> {
        use std::os::unix::fs::OpenOptionsExt;
        let f = fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open("/dev/kmsg").ok()?;
        // SAFETY: lseek on an owned fd; /dev/kmsg supports SEEK_END (skip old records).
        if unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_END) } < 0 {
            return None;
        }
        Some(Kmsg(f))
    }

    /// Records written since open / the last call.
    fn read_new(&mut self) -> String {
        use std::io::Read;
        let mut all = String::new();
        let mut buf = vec![0u8; 8192];
        loop {
            match self.0.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => all.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue, // overwritten records
                Err(_) => break,                                             // EAGAIN: no more
            }
        }
        all
    }
}

fn unique_comm(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}{}x{}", std::process::id() % 100_000, N.fetch_add(1, Ordering::Relaxed))
}

/// Runs the container (its output checked by `check`) and waits for a type=1326 audit record
/// of `comm` with `what` and `code`. The kernel rate-limits these printks (10 per 5 s here,
/// shared with every other test), so a missed record is retried after the limit's interval.
/// Returns None when /dev/kmsg is not readable (the container has run and been checked), else
/// the record.
fn audited(c: &Container, comm: &str, what: &str, code: &str, check: impl Fn(&Output)) -> String {
    // Root reads the kernel log on every host this suite runs on: an unreadable one fails.
    let mut kmsg = Kmsg::open().expect("/dev/kmsg is readable (the audit records are checked there)");
    let mut log = String::new();
    for attempt in 0..3 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_secs(5));
        }
        check(&c.run(&[]).ok());
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2) {
            log.push_str(&kmsg.read_new());
            if let Some(line) = log.lines().find(|l| l.contains(&format!("comm=\"{comm}\"")) && l.contains(what)) {
                assert!(line.contains("type=1326") && line.contains(code), "{line}");
                assert!(line.contains(&format!("arch={}", AUDIT_ARCH_X86_64.trim_start_matches("0x"))), "{line}");
                return line.to_string();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    panic!("no audit record for comm={comm} {what} {code} in /dev/kmsg:\n{log}");
}

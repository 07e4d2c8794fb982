//! Unit tests: generated programs are run through a small classic-BPF interpreter (below)
//! against synthetic `seccomp_data`, and checked the way the kernel's loader checks them.

use crate::action::ret;
use crate::arch::X32_SYSCALL_BIT;
use crate::{Arch, Arg, Error, FilterFlags, Options, Program, Seccomp, Syscall};
use libc::sock_filter;

// ---------------------------------------------------------------- interpreter

/// `struct seccomp_data` as the filter sees it.
#[derive(Clone, Copy)]
struct Data {
    nr: u32,
    arch: u32,
    args: [u64; 6],
}

/// Kernel-loader checks (bpf_check_classic + seccomp_check_filter, for the opcodes we emit).
fn check(prog: &[sock_filter]) {
    assert!(!prog.is_empty() && prog.len() <= 4096, "length {}", prog.len());
    for (pc, ins) in prog.iter().enumerate() {
        match ins.code {
            0x20 => assert!(ins.k % 4 == 0 && ins.k < 64, "pc {pc}: bad load offset {}", ins.k),
            0x54 | 0x06 => {}
            0x05 => assert!(pc + 1 + (ins.k as usize) < prog.len(), "pc {pc}: ja out of range"),
            0x15 | 0x25 | 0x35 => {
                assert!(pc + 1 + (ins.jt.max(ins.jf) as usize) < prog.len(), "pc {pc}: jump out of range")
            }
            code => panic!("pc {pc}: unexpected opcode {code:#x}"),
        }
    }
    assert_eq!(prog[prog.len() - 1].code, 0x06, "the last instruction must be a ret");
}

/// Runs `prog` on `d`; returns the filter's return value and the instructions executed.
fn run_counted(prog: &[sock_filter], d: Data) -> (u32, usize) {
    let mut mem = [0u8; 64];
    mem[0..4].copy_from_slice(&d.nr.to_le_bytes());
    mem[4..8].copy_from_slice(&d.arch.to_le_bytes());
    for (i, a) in d.args.iter().enumerate() {
        mem[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
    }
    let (mut a, mut pc, mut steps) = (0u32, 0usize, 0usize);
    loop {
        let ins = prog[pc];
        steps += 1;
        let k = ins.k;
        let cond = |c: bool| 1 + if c { ins.jt as usize } else { ins.jf as usize };
        pc += match ins.code {
            0x20 => {
                let o = k as usize;
                a = u32::from_le_bytes([mem[o], mem[o + 1], mem[o + 2], mem[o + 3]]);
                1
            }
            0x54 => {
                a &= k;
                1
            }
            0x05 => 1 + k as usize,
            0x15 => cond(a == k),
            0x25 => cond(a > k),
            0x35 => cond(a >= k),
            0x06 => return (k, steps),
            code => panic!("unexpected opcode {code:#x}"),
        };
    }
}

fn run(prog: &[sock_filter], d: Data) -> u32 {
    run_counted(prog, d).0
}

// ---------------------------------------------------------------- helpers

const ALLOW: u32 = ret::ALLOW;
const KILL_THREAD: u32 = ret::KILL_THREAD;
const fn errno(e: u32) -> u32 {
    ret::ERRNO | e
}

fn profile(default: &str, syscalls: Vec<Syscall>) -> Seccomp {
    Seccomp { default_action: default.into(), syscalls, ..Default::default() }
}

fn rule(names: &[&str], action: &str) -> Syscall {
    Syscall { names: names.iter().map(|n| n.to_string()).collect(), action: action.into(), ..Default::default() }
}

fn errno_rule(names: &[&str], errno: u32, args: Vec<Arg>) -> Syscall {
    Syscall { errno_ret: Some(errno), args, ..rule(names, "SCMP_ACT_ERRNO") }
}

fn with_args(mut s: Syscall, args: Vec<Arg>) -> Syscall {
    s.args = args;
    s
}

fn arg(index: u32, op: &str, value: u64, value_two: u64) -> Arg {
    Arg { index, op: op.into(), value, value_two }
}

fn archs(mut p: Seccomp, names: &[&str]) -> Seccomp {
    p.architectures = names.iter().map(|n| n.to_string()).collect();
    p
}

fn compile_for(p: &Seccomp, native: Arch) -> Result<Program, Error> {
    let prog = Program::compile_with(p, &Options { native: Some(native), ..Default::default() })?;
    check(prog.instructions());
    Ok(prog)
}

/// Compiles for an x86_64 host, whatever this host is.
fn x86(p: &Seccomp) -> Program {
    compile_for(p, Arch::X86_64).expect("profile compiles")
}

/// Runs syscall `name` of `arch` with `args` through `prog`.
fn call(prog: &Program, arch: Arch, name: &str, args: [u64; 6]) -> u32 {
    let nr = arch.syscall_nr(name).expect("known syscall");
    run(prog.instructions(), Data { nr, arch: arch.audit_arch(), args })
}

fn call_nr(prog: &Program, arch: Arch, nr: u32) -> u32 {
    run(prog.instructions(), Data { nr, arch: arch.audit_arch(), args: [0; 6] })
}

fn a0(v: u64) -> [u64; 6] {
    [v, 0, 0, 0, 0, 0]
}

// ---------------------------------------------------------------- operators

/// Boundary values: around 0, the 32-bit sign bit, the 32-bit edge, and pairs that differ
/// only in the high word or differ in opposite directions in the two words.
const GRID: [u64; 19] = [
    0,
    1,
    5,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fffe,
    0xffff_ffff,
    0x1_0000_0000,
    0x1_0000_0001,
    0x1_0000_0005,
    0x1_0000_0006,
    0x1_ffff_ffff,
    0x2_0000_0004,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    0xffff_ffff_0000_0000,
    0xffff_ffff_0000_0005,
    u64::MAX - 1,
    u64::MAX,
];

/// For every value in GRID: a rule `read(arg1 <op> value) -> ERRNO(7)` must match exactly the
/// args for which `expect(arg, value)` holds, on x86_64 (64-bit compare) and i386 (low words).
fn check_op(op: &str, expect: fn(u64, u64) -> bool) {
    for &value in &GRID {
        let rule = errno_rule(&["read"], 7, vec![arg(1, op, value, 0)]);
        let prog = x86(&archs(profile("SCMP_ACT_ALLOW", vec![rule]), &["SCMP_ARCH_X86"]));
        for &a in &GRID {
            let args = [0, a, 0, 0, 0, 0];
            let want = |hit: bool| if hit { errno(7) } else { ALLOW };
            assert_eq!(call(&prog, Arch::X86_64, "read", args), want(expect(a, value)), "x86_64: {a:#x} {op} {value:#x}");
            let (a32, v32) = (u64::from(a as u32), u64::from(value as u32));
            assert_eq!(call(&prog, Arch::X86, "read", args), want(expect(a32, v32)), "i386: {a:#x} {op} {value:#x}");
        }
    }
}

#[test]
fn op_eq() {
    check_op("SCMP_CMP_EQ", |a, v| a == v);
}

#[test]
fn op_ne() {
    check_op("SCMP_CMP_NE", |a, v| a != v);
}

#[test]
fn op_lt() {
    check_op("SCMP_CMP_LT", |a, v| a < v);
}

#[test]
fn op_le() {
    check_op("SCMP_CMP_LE", |a, v| a <= v);
}

#[test]
fn op_gt() {
    check_op("SCMP_CMP_GT", |a, v| a > v);
}

#[test]
fn op_ge() {
    check_op("SCMP_CMP_GE", |a, v| a >= v);
}

#[test]
fn op_masked_eq() {
    let masks = [0xff, 0xffff_0000_0000, 0x1_0000_00ff, 0x7e02_0000, u64::MAX, 0];
    let datums = [0, 5, 0x1_0000_0005, 0xffff_0000_0000, 0x1_0000_0000, 0x7e02_0000];
    for &mask in &masks {
        for &datum in &datums {
            let rule = errno_rule(&["read"], 7, vec![arg(2, "SCMP_CMP_MASKED_EQ", mask, datum)]);
            let prog = x86(&archs(profile("SCMP_ACT_ALLOW", vec![rule]), &["SCMP_ARCH_X86"]));
            for &a in &GRID {
                let args = [0, 0, a, 0, 0, 0];
                let want = |hit: bool| if hit { errno(7) } else { ALLOW };
                assert_eq!(call(&prog, Arch::X86_64, "read", args), want(a & mask == datum), "{a:#x} & {mask:#x} == {datum:#x}");
                let hit32 = (a as u32) & (mask as u32) == datum as u32;
                assert_eq!(call(&prog, Arch::X86, "read", args), want(hit32), "i386 {a:#x} & {mask:#x} == {datum:#x}");
            }
        }
    }
}

#[test]
fn every_argument_index_is_read_from_its_own_slot() {
    for index in 0..6u32 {
        let rule = errno_rule(&["read"], 9, vec![arg(index, "SCMP_CMP_EQ", 0x1_0000_0042, 0)]);
        let prog = x86(&profile("SCMP_ACT_ALLOW", vec![rule]));
        for other in 0..6usize {
            let mut args = [0u64; 6];
            args[other] = 0x1_0000_0042;
            let want = if other == index as usize { errno(9) } else { ALLOW };
            assert_eq!(call(&prog, Arch::X86_64, "read", args), want, "rule on arg{index}, value in arg{other}");
        }
    }
}

// ---------------------------------------------------------------- actions

#[test]
fn actions_return_the_kernel_values() {
    let cases: [(&str, Option<u32>, u32); 12] = [
        ("SCMP_ACT_KILL", None, ret::KILL_THREAD),
        ("SCMP_ACT_KILL_THREAD", None, ret::KILL_THREAD),
        ("SCMP_ACT_KILL_PROCESS", None, ret::KILL_PROCESS),
        ("SCMP_ACT_TRAP", None, ret::TRAP),
        ("SCMP_ACT_ERRNO", None, ret::ERRNO | libc::EPERM as u32),
        ("SCMP_ACT_ERRNO", Some(38), ret::ERRNO | 38),
        ("SCMP_ACT_TRACE", None, ret::TRACE | libc::EPERM as u32),
        ("SCMP_ACT_TRACE", Some(1234), ret::TRACE | 1234),
        ("SCMP_ACT_ALLOW", None, ret::ALLOW),
        ("SCMP_ACT_ALLOW", Some(5), ret::ALLOW), // errnoRet ignored, as runc
        ("SCMP_ACT_LOG", None, ret::LOG),
        ("SCMP_ACT_NOTIFY", None, ret::USER_NOTIF),
    ];
    for (action, errno_ret, want) in cases {
        // As a rule (the default, ERRNO(99), differs from every case).
        let mut p = profile("SCMP_ACT_ERRNO", vec![Syscall { errno_ret, ..rule(&["getpid"], action) }]);
        p.default_errno_ret = Some(99);
        p.listener_path = Some("/run/listener.sock".into());
        let prog = x86(&p);
        assert_eq!(call(&prog, Arch::X86_64, "getpid", a0(0)), want, "{action} {errno_ret:?} as a rule");
        assert_eq!(call(&prog, Arch::X86_64, "getppid", a0(0)), errno(99), "default");
        if action == "SCMP_ACT_NOTIFY" {
            continue; // refused as the default action (tested below)
        }
        // As the default action.
        let mut p = profile(action, vec![rule(&["getpid"], "SCMP_ACT_LOG")]);
        p.default_errno_ret = errno_ret;
        let prog = x86(&p);
        let want_getpid = if want == ret::LOG { want } else { ret::LOG };
        assert_eq!(call(&prog, Arch::X86_64, "getppid", a0(0)), want, "{action} {errno_ret:?} as the default");
        assert_eq!(call(&prog, Arch::X86_64, "getpid", a0(0)), want_getpid);
    }
}

// ---------------------------------------------------------------- architectures

#[test]
fn x86_64_native_uses_x86_64_numbers() {
    let prog = x86(&profile("SCMP_ACT_ERRNO", vec![rule(&["mkdir"], "SCMP_ACT_ALLOW")]));
    assert_eq!(call_nr(&prog, Arch::X86_64, 83), ALLOW); // mkdir on x86_64
    assert_eq!(call_nr(&prog, Arch::X86_64, 39), errno(1)); // 39 = getpid on x86_64
    assert_eq!(prog.arches(), [Arch::X86_64]);
}

#[test]
fn i386_uses_its_own_numbers() {
    let p = archs(profile("SCMP_ACT_ERRNO", vec![rule(&["mkdir"], "SCMP_ACT_ALLOW")]), &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]);
    let prog = x86(&p);
    assert_eq!(call_nr(&prog, Arch::X86, 39), ALLOW); // mkdir on i386
    assert_eq!(call_nr(&prog, Arch::X86, 83), errno(1)); // 83 = symlink on i386
    assert_eq!(call_nr(&prog, Arch::X86_64, 83), ALLOW);
}

#[test]
fn x32_numbers_carry_the_x32_bit() {
    let p = archs(profile("SCMP_ACT_ERRNO", vec![rule(&["mkdir"], "SCMP_ACT_ALLOW")]), &["SCMP_ARCH_X86_64", "SCMP_ARCH_X32"]);
    let prog = x86(&p);
    assert_eq!(call_nr(&prog, Arch::X32, X32_SYSCALL_BIT | 83), ALLOW);
    assert_eq!(call_nr(&prog, Arch::X32, X32_SYSCALL_BIT | 39), errno(1));
    assert_eq!(call_nr(&prog, Arch::X86_64, 83), ALLOW);
    // x32-only numbers (512..) are x32's own: rt_sigaction is 512 there.
    let p = archs(profile("SCMP_ACT_ALLOW", vec![errno_rule(&["rt_sigaction"], 3, vec![])]), &["SCMP_ARCH_X32"]);
    let prog = x86(&p);
    assert_eq!(call_nr(&prog, Arch::X32, X32_SYSCALL_BIT | 512), errno(3));
    assert_eq!(call_nr(&prog, Arch::X86_64, 13), errno(3)); // rt_sigaction on x86_64
    assert_eq!(call_nr(&prog, Arch::X32, X32_SYSCALL_BIT | 13), ALLOW); // not a syscall on x32
}

#[test]
fn x32_calls_without_x32_get_the_bad_arch_action() {
    let prog = x86(&profile("SCMP_ACT_ALLOW", vec![errno_rule(&["mkdir"], 1, vec![])]));
    assert_eq!(call_nr(&prog, Arch::X86_64, X32_SYSCALL_BIT | 83), KILL_THREAD);
    assert_eq!(call_nr(&prog, Arch::X86_64, X32_SYSCALL_BIT | 1000), KILL_THREAD);
    assert_eq!(call_nr(&prog, Arch::X86_64, u32::MAX), KILL_THREAD);
    assert_eq!(call_nr(&prog, Arch::X86_64, X32_SYSCALL_BIT - 1), ALLOW);
    assert_eq!(call_nr(&prog, Arch::X86_64, 83), errno(1));
}

#[test]
fn unlisted_arches_get_the_bad_arch_action() {
    let prog = x86(&profile("SCMP_ACT_ALLOW", vec![]));
    assert_eq!(call_nr(&prog, Arch::X86_64, 0), ALLOW);
    assert_eq!(call_nr(&prog, Arch::X86, 0), KILL_THREAD);
    assert_eq!(call_nr(&prog, Arch::Arm, 0), KILL_THREAD);
    assert_eq!(call_nr(&prog, Arch::Aarch64, 0), KILL_THREAD);
    assert_eq!(run(prog.instructions(), Data { nr: 0, arch: 0xdead_beef, args: [0; 6] }), KILL_THREAD);
}

#[test]
fn aarch64_with_arm() {
    let p = archs(profile("SCMP_ACT_ERRNO", vec![rule(&["mkdirat", "mkdir"], "SCMP_ACT_ALLOW")]), &["SCMP_ARCH_ARM"]);
    let prog = compile_for(&p, Arch::Aarch64).expect("compiles");
    assert_eq!(prog.arches(), [Arch::Aarch64, Arch::Arm]);
    assert_eq!(call_nr(&prog, Arch::Aarch64, 34), ALLOW); // mkdirat on aarch64
    assert_eq!(call_nr(&prog, Arch::Aarch64, 39), errno(1)); // 39 = umount2 there, mkdir does not exist
    assert_eq!(call_nr(&prog, Arch::Arm, 323), ALLOW); // mkdirat on arm
    assert_eq!(call_nr(&prog, Arch::Arm, 39), ALLOW); // mkdir on arm
    assert_eq!(call_nr(&prog, Arch::Arm, 34), errno(1)); // 34 = nice on arm
    assert_eq!(call_nr(&prog, Arch::X86_64, 83), KILL_THREAD);
    // aarch64 compares 64-bit arguments, arm the low words only.
    let rule = errno_rule(&["read"], 4, vec![arg(0, "SCMP_CMP_EQ", 0x1_0000_0000, 0)]);
    let prog = compile_for(&archs(profile("SCMP_ACT_ALLOW", vec![rule]), &["SCMP_ARCH_ARM"]), Arch::Aarch64).expect("compiles");
    assert_eq!(call(&prog, Arch::Aarch64, "read", a0(0)), ALLOW);
    assert_eq!(call(&prog, Arch::Aarch64, "read", a0(0x1_0000_0000)), errno(4));
    assert_eq!(call(&prog, Arch::Arm, "read", a0(0)), errno(4));
}

#[test]
fn foreign_arches_are_skipped_and_unknown_ones_refused() {
    let p = archs(profile("SCMP_ACT_ALLOW", vec![]), &["SCMP_ARCH_S390X", "SCMP_ARCH_AARCH64", "SCMP_ARCH_X86", "SCMP_ARCH_X86"]);
    assert_eq!(x86(&p).arches(), [Arch::X86_64, Arch::X86]);
    let p = archs(profile("SCMP_ACT_ALLOW", vec![]), &["SCMP_ARCH_X86", "SCMP_ARCH_Z80"]);
    let err = compile_for(&p, Arch::X86_64).expect_err("unknown arch");
    assert_eq!(err.to_string(), r#"linux.seccomp.architectures[1] = "SCMP_ARCH_Z80": unknown architecture"#);
}

// ---------------------------------------------------------------- names

#[test]
fn names_unknown_on_one_arch_are_skipped_there() {
    // socketcall exists on i386 (102) only; 102 is getuid on x86_64.
    let p = archs(profile("SCMP_ACT_ALLOW", vec![errno_rule(&["socketcall", "getuid"], 5, vec![])]), &["SCMP_ARCH_X86"]);
    let prog = x86(&p);
    assert_eq!(call_nr(&prog, Arch::X86, 102), errno(5)); // socketcall
    assert_eq!(call_nr(&prog, Arch::X86, 24), errno(5)); // getuid on i386
    assert_eq!(call_nr(&prog, Arch::X86_64, 102), errno(5)); // getuid on x86_64
    let prog = x86(&archs(profile("SCMP_ACT_ALLOW", vec![errno_rule(&["socketcall", "arch_prctl"], 5, vec![])]), &["SCMP_ARCH_X86"]));
    assert_eq!(call_nr(&prog, Arch::X86_64, 102), ALLOW);
    assert_eq!(call_nr(&prog, Arch::X86_64, 158), errno(5)); // arch_prctl
}

#[test]
fn names_unknown_on_every_arch_are_an_error_unless_ignored() {
    let p = archs(
        profile(
            "SCMP_ACT_ERRNO",
            vec![rule(&["read"], "SCMP_ACT_ALLOW"), rule(&["write", "socketcall", "no_such_call"], "SCMP_ACT_ALLOW")],
        ),
        &["SCMP_ARCH_X86"],
    );
    let err = compile_for(&p, Arch::X86_64).expect_err("unknown name");
    assert_eq!(
        err.to_string(),
        r#"linux.seccomp.syscalls[1].names[2] = "no_such_call": no architecture has a syscall of this name (filter: SCMP_ARCH_X86_64, SCMP_ARCH_X86)"#
    );
    let p = profile("SCMP_ACT_ERRNO", vec![rule(&["read", "no_such_call"], "SCMP_ACT_ALLOW")]);
    let lenient = Options { native: Some(Arch::X86_64), ignore_unknown_syscalls: true, ..Default::default() };
    let prog = Program::compile_with(&p, &lenient).expect("ignored");
    check(prog.instructions());
    assert_eq!(call_nr(&prog, Arch::X86_64, 0), ALLOW);
    assert_eq!(call_nr(&prog, Arch::X86_64, 102), errno(1));
    assert_eq!(prog.skipped_names(), ["no_such_call"]);
}

// ---------------------------------------------------------------- the ENOSYS stub

fn runc_x86(p: &Seccomp) -> Program {
    let prog = Program::compile_with(p, &Options { native: Some(Arch::X86_64), ..Options::runc() }).expect("profile compiles");
    check(prog.instructions());
    prog
}

const ENOSYS: u32 = errno(libc::ENOSYS as u32);

/// Numbers above the newest named syscall get ENOSYS on each ABI; holes below it and numbers
/// of other ABIs keep their default / bad-arch action; a rule repeating the default still
/// counts as "named".
#[test]
fn enosys_stub_above_the_newest_named_syscall() {
    let p = archs(
        profile(
            "SCMP_ACT_ERRNO",
            vec![
                rule(&["read", "write"], "SCMP_ACT_ALLOW"),
                // openat2 is 437 on x86_64 and i386, 437|x32 on x32; ERRNO repeats the default.
                rule(&["openat2"], "SCMP_ACT_ERRNO"),
                rule(&["getpid"], "SCMP_ACT_KILL_PROCESS"),
            ],
        ),
        &["SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    );
    let prog = runc_x86(&p);
    for arch in [Arch::X86_64, Arch::X86, Arch::X32] {
        let base = if arch == Arch::X32 { X32_SYSCALL_BIT } else { 0 };
        assert_eq!(call(&prog, arch, "read", [0; 6]), ALLOW, "{arch:?}");
        assert_eq!(call(&prog, arch, "getpid", [0; 6]), ret::KILL_PROCESS, "{arch:?}");
        assert_eq!(call(&prog, arch, "openat2", [0; 6]), errno(1), "{arch:?} openat2 itself");
        assert_eq!(call_nr(&prog, arch, base + 300), errno(1), "{arch:?} a hole below the newest");
        assert_eq!(call_nr(&prog, arch, base + 438), ENOSYS, "{arch:?} above the newest");
        assert_eq!(call_nr(&prog, arch, base + 1000), ENOSYS, "{arch:?}");
    }
    // x86_64 numbers just below the x32 bit are x86_64's; x32's reach the top of the space.
    assert_eq!(call_nr(&prog, Arch::X86_64, X32_SYSCALL_BIT - 1), ENOSYS);
    assert_eq!(call_nr(&prog, Arch::X32, u32::MAX), ENOSYS);
    assert_eq!(call_nr(&prog, Arch::Aarch64, 0), KILL_THREAD, "other ABIs: bad arch");
    let above: Vec<_> = prog.enosys_above().to_vec();
    assert_eq!(above, [(Arch::X86_64, 437), (Arch::X86, 437), (Arch::X32, X32_SYSCALL_BIT + 437)]);
}

/// Without x32 in the profile, x32 numbers still get the bad-arch action, not ENOSYS; the
/// stub's limit is per ABI (i386 names only what the profile names for it).
#[test]
fn enosys_stub_keeps_bad_arch_and_per_abi_limits() {
    let p = archs(profile("SCMP_ACT_KILL_PROCESS", vec![rule(&["read", "close_range"], "SCMP_ACT_ALLOW")]), &["SCMP_ARCH_X86"]);
    let prog = runc_x86(&p);
    let cr = Arch::X86_64.syscall_nr("close_range").unwrap();
    assert_eq!(call_nr(&prog, Arch::X86_64, cr + 1), ENOSYS);
    assert_eq!(call_nr(&prog, Arch::X86_64, cr - 1), ret::KILL_PROCESS);
    assert_eq!(call_nr(&prog, Arch::X86_64, X32_SYSCALL_BIT), KILL_THREAD, "x32 call: bad arch");
    assert_eq!(call_nr(&prog, Arch::X86_64, X32_SYSCALL_BIT + 1), KILL_THREAD);
    let cr32 = Arch::X86.syscall_nr("close_range").unwrap();
    assert_eq!(call_nr(&prog, Arch::X86, cr32 + 1), ENOSYS);
}

/// No stub when the default already lets calls through (ALLOW, LOG, TRACE), nor when the
/// option is off; an empty profile has no newest syscall, so no stub either.
#[test]
fn enosys_stub_only_under_a_blocking_default() {
    for default in ["SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_TRACE"] {
        let p = profile(default, vec![rule(&["read"], "SCMP_ACT_KILL")]);
        let prog = runc_x86(&p);
        assert!(prog.enosys_above().is_empty(), "{default}");
        assert_ne!(call_nr(&prog, Arch::X86_64, 400), ENOSYS, "{default}");
    }
    let p = profile("SCMP_ACT_ERRNO", vec![rule(&["read"], "SCMP_ACT_ALLOW")]);
    assert_eq!(call_nr(&x86(&p), Arch::X86_64, 400), errno(1), "option off");
    assert_eq!(call_nr(&runc_x86(&p), Arch::X86_64, 400), ENOSYS);
    let empty = runc_x86(&profile("SCMP_ACT_ERRNO", vec![]));
    assert_eq!(call_nr(&empty, Arch::X86_64, 400), errno(1));
}

/// Names another ABI has are skipped, not refused, even when no ABI of the filter has them:
/// docker's default profile lists `recv`/`send` (ARM only) for every arch, and its
/// arch-specific entries name s390/ppc/riscv calls.
#[test]
fn names_of_other_arches_are_skipped() {
    // Without SCMP_ARCH_X86, socketcall (i386 only) is skipped: 102 stays getuid's.
    let p = profile("SCMP_ACT_ALLOW", vec![errno_rule(&["socketcall", "recv", "send"], 5, vec![])]);
    let prog = x86(&p);
    assert_eq!(call_nr(&prog, Arch::X86_64, 102), ALLOW);
    let names = [
        "recv",
        "send",
        "sync_file_range2",
        "swapcontext",
        "arm_fadvise64_64",
        "arm_sync_file_range",
        "breakpoint",
        "cacheflush",
        "set_tls",
        "s390_pci_mmio_read",
        "s390_pci_mmio_write",
        "s390_runtime_instr",
        "riscv_flush_icache",
        "mkdir",
    ];
    let p = archs(profile("SCMP_ACT_ALLOW", vec![errno_rule(&names, 5, vec![])]), &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]);
    let prog = x86(&p);
    assert_eq!(call(&prog, Arch::X86_64, "mkdir", a0(0)), errno(5));
    assert_eq!(call(&prog, Arch::X86_64, "read", a0(0)), ALLOW);
    // The same names on aarch64 + arm: the ARM ones are matched there.
    let p = archs(profile("SCMP_ACT_ALLOW", vec![errno_rule(&names, 5, vec![])]), &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]);
    let prog = compile_for(&p, Arch::Aarch64).expect("compiles");
    assert_eq!(call(&prog, Arch::Arm, "recv", a0(0)), errno(5));
    assert_eq!(call(&prog, Arch::Arm, "cacheflush", a0(0)), errno(5));
}

// ---------------------------------------------------------------- conditions and precedence

#[test]
fn conditions_of_one_rule_are_anded() {
    let allow = with_args(
        rule(&["write"], "SCMP_ACT_ALLOW"),
        vec![arg(0, "SCMP_CMP_EQ", 1, 0), arg(2, "SCMP_CMP_GT", 10, 0), arg(5, "SCMP_CMP_MASKED_EQ", 0xf0, 0x20)],
    );
    let prog = x86(&profile("SCMP_ACT_ERRNO", vec![allow]));
    assert_eq!(call(&prog, Arch::X86_64, "write", [1, 0, 11, 0, 0, 0x2f]), ALLOW);
    assert_eq!(call(&prog, Arch::X86_64, "write", [2, 0, 11, 0, 0, 0x2f]), errno(1));
    assert_eq!(call(&prog, Arch::X86_64, "write", [1, 0, 10, 0, 0, 0x2f]), errno(1));
    assert_eq!(call(&prog, Arch::X86_64, "write", [1, 0, 11, 0, 0, 0x3f]), errno(1));
    assert_eq!(call(&prog, Arch::X86_64, "read", [1, 0, 11, 0, 0, 0x2f]), errno(1));
}

#[test]
fn rules_for_one_syscall_are_ored() {
    let prog = x86(&profile(
        "SCMP_ACT_ERRNO",
        vec![
            with_args(rule(&["personality"], "SCMP_ACT_ALLOW"), vec![arg(0, "SCMP_CMP_EQ", 0, 0)]),
            with_args(rule(&["personality"], "SCMP_ACT_ALLOW"), vec![arg(0, "SCMP_CMP_EQ", 8, 0)]),
            with_args(rule(&["personality"], "SCMP_ACT_ALLOW"), vec![arg(0, "SCMP_CMP_EQ", 0xffff_ffff, 0)]),
        ],
    ));
    for (a, want) in [(0, ALLOW), (8, ALLOW), (0xffff_ffff, ALLOW), (1, errno(1)), (0x1_ffff_ffff, errno(1))] {
        assert_eq!(call(&prog, Arch::X86_64, "personality", a0(a)), want, "personality({a:#x})");
    }
}

#[test]
fn conditions_on_the_same_index_are_ored_like_runc() {
    let allow = with_args(rule(&["socket"], "SCMP_ACT_ALLOW"), vec![arg(0, "SCMP_CMP_EQ", 1, 0), arg(0, "SCMP_CMP_EQ", 2, 0)]);
    let prog = x86(&profile("SCMP_ACT_ERRNO", vec![allow]));
    assert_eq!(call(&prog, Arch::X86_64, "socket", a0(1)), ALLOW);
    assert_eq!(call(&prog, Arch::X86_64, "socket", a0(2)), ALLOW);
    assert_eq!(call(&prog, Arch::X86_64, "socket", a0(3)), errno(1));
}

#[test]
fn precedence_between_rules() {
    // An unconditional rule beats conditional ones, wherever it is.
    let prog = x86(&profile(
        "SCMP_ACT_ERRNO",
        vec![
            errno_rule(&["kill"], 3, vec![arg(1, "SCMP_CMP_EQ", 9, 0)]),
            rule(&["kill"], "SCMP_ACT_ALLOW"),
            errno_rule(&["kill"], 4, vec![]),
        ],
    ));
    assert_eq!(call(&prog, Arch::X86_64, "kill", [0, 9, 0, 0, 0, 0]), ALLOW);
    assert_eq!(call(&prog, Arch::X86_64, "kill", [0, 1, 0, 0, 0, 0]), ALLOW);
    // Among conditional rules, the first that matches (profile order).
    let prog = x86(&profile(
        "SCMP_ACT_ALLOW",
        vec![errno_rule(&["kill"], 3, vec![arg(1, "SCMP_CMP_GE", 9, 0)]), errno_rule(&["kill"], 4, vec![arg(1, "SCMP_CMP_LE", 9, 0)])],
    ));
    assert_eq!(call(&prog, Arch::X86_64, "kill", [0, 9, 0, 0, 0, 0]), errno(3));
    assert_eq!(call(&prog, Arch::X86_64, "kill", [0, 8, 0, 0, 0, 0]), errno(4));
    assert_eq!(call(&prog, Arch::X86_64, "kill", [0, 10, 0, 0, 0, 0]), errno(3));
    // Rules with the default action are dropped (runc), so they cannot shadow others.
    let prog = x86(&profile(
        "SCMP_ACT_ERRNO",
        vec![errno_rule(&["kill"], 1, vec![]), with_args(rule(&["kill"], "SCMP_ACT_ALLOW"), vec![arg(1, "SCMP_CMP_EQ", 0, 0)])],
    ));
    assert_eq!(call(&prog, Arch::X86_64, "kill", [0, 0, 0, 0, 0, 0]), ALLOW);
    assert_eq!(call(&prog, Arch::X86_64, "kill", [0, 1, 0, 0, 0, 0]), errno(1));
    // ...but the same action with another errno is not the default action.
    let prog = x86(&profile("SCMP_ACT_ERRNO", vec![errno_rule(&["kill"], 2, vec![])]));
    assert_eq!(call(&prog, Arch::X86_64, "kill", a0(0)), errno(2));
}

// ---------------------------------------------------------------- size and jumps

/// Every x86_64 syscall with its own errno, and a conditional rule each: sections far
/// larger than a conditional jump's 255-instruction reach.
#[test]
fn long_profiles_keep_every_jump_in_range() {
    let names: Vec<&str> = crate::syscalls::X86_64.iter().map(|(n, _)| *n).collect();
    let rules = names.iter().enumerate().map(|(i, n)| errno_rule(&[n], i as u32 + 1, vec![arg(0, "SCMP_CMP_EQ", i as u64, 0)])).collect();
    let p = profile("SCMP_ACT_ALLOW", rules);
    let prog = x86(&p);
    assert!(prog.instructions().len() > 1000, "{} instructions", prog.instructions().len());
    assert!(prog.instructions().iter().any(|i| i.code == 0x05), "expected long jumps (ja)");
    for (i, name) in names.iter().enumerate() {
        assert_eq!(call(&prog, Arch::X86_64, name, a0(i as u64)), errno(i as u32 + 1), "{name}");
        assert_eq!(call(&prog, Arch::X86_64, name, a0(i as u64 + 1)), ALLOW, "{name}");
    }
    // Unconditional, distinct actions for every syscall on all three x86 ABIs.
    let rules = names.iter().enumerate().map(|(i, n)| errno_rule(&[n], i as u32 + 1, vec![])).collect();
    let p = archs(profile("SCMP_ACT_ALLOW", rules), &["SCMP_ARCH_X86", "SCMP_ARCH_X32"]);
    let prog = x86(&p);
    for (i, name) in names.iter().enumerate() {
        for arch in [Arch::X86_64, Arch::X86, Arch::X32] {
            if arch.syscall_nr(name).is_some() {
                assert_eq!(call(&prog, arch, name, a0(0)), errno(i as u32 + 1), "{arch:?} {name}");
            }
        }
    }
}

#[test]
fn programs_over_4096_instructions_are_an_error() {
    let rules = (0..1100u64).map(|i| with_args(rule(&["read"], "SCMP_ACT_ALLOW"), vec![arg(0, "SCMP_CMP_EQ", i, 0)])).collect();
    let err = compile_for(&archs(profile("SCMP_ACT_ERRNO", rules), &["SCMP_ARCH_X86"]), Arch::X86_64).expect_err("too long");
    assert!(matches!(err, Error::TooLong { len } if len > 4096), "{err}");
    assert!(err.to_string().starts_with("linux.seccomp: the filter needs "), "{err}");
}

/// A docker-like default profile: ERRNO by default, ~350 allowed names, a few conditions.
pub(crate) fn docker_like() -> Seccomp {
    let skip = [
        "acct",
        "add_key",
        "bpf",
        "clock_adjtime",
        "clock_settime",
        "create_module",
        "delete_module",
        "finit_module",
        "get_kernel_syms",
        "get_mempolicy",
        "init_module",
        "ioperm",
        "iopl",
        "kcmp",
        "kexec_file_load",
        "kexec_load",
        "keyctl",
        "lookup_dcookie",
        "mbind",
        "mount",
        "move_pages",
        "name_to_handle_at",
        "nfsservctl",
        "open_by_handle_at",
        "perf_event_open",
        "personality",
        "pivot_root",
        "process_vm_readv",
        "process_vm_writev",
        "ptrace",
        "query_module",
        "quotactl",
        "reboot",
        "request_key",
        "set_mempolicy",
        "setns",
        "settimeofday",
        "stime",
        "swapon",
        "swapoff",
        "sysfs",
        "_sysctl",
        "umount",
        "umount2",
        "unshare",
        "uselib",
        "userfaultfd",
        "ustat",
        "vm86",
        "vm86old",
        "clone",
        "clone3",
    ];
    let mut names: Vec<&str> = crate::syscalls::X86_64.iter().map(|(n, _)| *n).filter(|n| !skip.contains(n)).collect();
    names.extend(["_llseek", "_newselect", "socketcall", "ugetrlimit", "waitpid", "sigreturn", "ipc"]);
    let mut syscalls = vec![rule(&names, "SCMP_ACT_ALLOW")];
    for v in [0u64, 8, 0x20000, 0x20008, 0xffff_ffff] {
        syscalls.push(with_args(rule(&["personality"], "SCMP_ACT_ALLOW"), vec![arg(0, "SCMP_CMP_EQ", v, 0)]));
    }
    syscalls.push(with_args(rule(&["clone"], "SCMP_ACT_ALLOW"), vec![arg(0, "SCMP_CMP_MASKED_EQ", 0x7e02_0000, 0)]));
    syscalls.push(errno_rule(&["clone3"], 38, vec![]));
    let mut p = archs(profile("SCMP_ACT_ERRNO", syscalls), &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]);
    p.default_errno_ret = Some(1);
    p
}

#[test]
fn docker_like_profile_is_compact_and_correct() {
    let prog = x86(&docker_like());
    let len = prog.instructions().len();
    assert!(len < 400, "{len} instructions");
    // Hot path: a handful of instructions per syscall.
    let (r, steps) = run_counted(prog.instructions(), Data { nr: 0, arch: Arch::X86_64.audit_arch(), args: [0; 6] });
    assert_eq!(r, ALLOW);
    assert!(steps <= 14, "read takes {steps} instructions");
    assert_eq!(call(&prog, Arch::X86_64, "read", a0(0)), ALLOW);
    assert_eq!(call(&prog, Arch::X86_64, "mount", a0(0)), errno(1));
    assert_eq!(call(&prog, Arch::X86_64, "clone3", a0(0)), errno(38));
    assert_eq!(call(&prog, Arch::X86_64, "clone", a0(libc::SIGCHLD as u64)), ALLOW);
    assert_eq!(call(&prog, Arch::X86_64, "clone", a0(libc::CLONE_NEWNS as u64)), errno(1));
    assert_eq!(call(&prog, Arch::X86_64, "personality", a0(8)), ALLOW);
    assert_eq!(call(&prog, Arch::X86_64, "personality", a0(1)), errno(1));
    assert_eq!(call(&prog, Arch::X86, "socketcall", a0(0)), ALLOW);
    assert_eq!(call(&prog, Arch::X86, "mount", a0(0)), errno(1));
    assert_eq!(call(&prog, Arch::X32, "read", a0(0)), ALLOW);
    assert_eq!(call(&prog, Arch::X32, "mount", a0(0)), errno(1));
}

// ---------------------------------------------------------------- errors, flags, serde

#[test]
fn errors_name_the_entry() {
    let with = |s: Syscall| {
        let mut p = profile("SCMP_ACT_ALLOW", vec![rule(&["read"], "SCMP_ACT_ERRNO"); 3]);
        p.syscalls.push(s);
        compile_for(&p, Arch::X86_64).expect_err("invalid").to_string()
    };
    assert_eq!(
        with(with_args(rule(&["read"], "SCMP_ACT_ERRNO"), vec![arg(7, "SCMP_CMP_EQ", 0, 0)])),
        "linux.seccomp.syscalls[3].args[0].index = 7: must be 0..5"
    );
    assert_eq!(
        with(with_args(rule(&["read"], "SCMP_ACT_ERRNO"), vec![arg(0, "SCMP_CMP_EQ", 0, 0), arg(1, "SCMP_CMP_LIKE", 0, 0)])),
        r#"linux.seccomp.syscalls[3].args[1].op = "SCMP_CMP_LIKE": unknown operator"#
    );
    assert_eq!(with(rule(&["read"], "SCMP_ACT_PANIC")), r#"linux.seccomp.syscalls[3].action = "SCMP_ACT_PANIC": unknown action"#);
    assert_eq!(
        with(rule(&["read"], "SCMP_ACT_NOTIFY")),
        r#"linux.seccomp.syscalls[3].action = "SCMP_ACT_NOTIFY": needs linux.seccomp.listenerPath"#
    );
    assert_eq!(with(errno_rule(&["read"], 70000, vec![])), "linux.seccomp.syscalls[3].errnoRet = 70000: must be 0..65535");
    assert_eq!(with(rule(&["read", ""], "SCMP_ACT_ERRNO")), r#"linux.seccomp.syscalls[3].names[1] = "": empty syscall name"#);

    let mut p = profile("SCMP_ACT_ALLOW", vec![]);
    p.flags = vec!["SECCOMP_FILTER_FLAG_LOG".into(), "SECCOMP_FILTER_FLAG_FAST".into()];
    assert_eq!(
        compile_for(&p, Arch::X86_64).expect_err("flag").to_string(),
        r#"linux.seccomp.flags[1] = "SECCOMP_FILTER_FLAG_FAST": unknown flag"#
    );
    let p = profile("SCMP_ACT_ALOW", vec![]);
    assert_eq!(
        compile_for(&p, Arch::X86_64).expect_err("action").to_string(),
        r#"linux.seccomp.defaultAction = "SCMP_ACT_ALOW": unknown action"#
    );
    let mut p = profile("SCMP_ACT_NOTIFY", vec![]);
    p.listener_path = Some("/run/l.sock".into());
    assert_eq!(compile_for(&p, Arch::X86_64).expect_err("notify"), Error::NotifyDefault);
}

#[test]
fn flags_and_listener() {
    let mut p = profile("SCMP_ACT_ALLOW", vec![]);
    p.flags = vec!["SECCOMP_FILTER_FLAG_TSYNC".into(), "SECCOMP_FILTER_FLAG_LOG".into(), "SECCOMP_FILTER_FLAG_SPEC_ALLOW".into()];
    let prog = x86(&p);
    assert_eq!(prog.flags().bits(), 0b111);
    assert!(!prog.needs_listener());
    p.syscalls.push(rule(&["mkdir"], "SCMP_ACT_NOTIFY"));
    p.listener_path = Some("/run/l.sock".into());
    p.flags.push("SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV".into());
    let prog = x86(&p);
    assert!(prog.needs_listener());
    assert!(prog.flags().contains(FilterFlags::NEW_LISTENER | FilterFlags::WAIT_KILLABLE_RECV | FilterFlags::TSYNC));
}

#[test]
fn deserializes_oci_json() {
    let json = r#"{
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 38,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "flags": null,
        "listenerPath": "/run/seccomp-agent.sock",
        "listenerMetadata": "meta",
        "syscalls": [
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "args": null},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"},
            {"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}
        ]
    }"#;
    let p: Seccomp = serde_json::from_str(json).expect("valid OCI JSON");
    assert_eq!(p.default_errno_ret, Some(38));
    assert_eq!(p.syscalls[2].args[0].value, 2114060288);
    assert_eq!(p.listener_metadata.as_deref(), Some("meta"));
    let prog = x86(&p);
    assert!(prog.needs_listener());
    assert_eq!(call(&prog, Arch::X86_64, "mount", a0(0)), errno(38));
    assert_eq!(call(&prog, Arch::X86_64, "chmod", a0(0)), errno(13));
    assert_eq!(call(&prog, Arch::X86_64, "mkdir", a0(0)), ret::USER_NOTIF);
    assert_eq!(call(&prog, Arch::X86, "personality", a0(8)), ALLOW);
    // Round trip.
    let back: Seccomp = serde_json::from_str(&serde_json::to_string(&p).expect("serializes")).expect("parses");
    assert_eq!(back, p);
}

#[test]
fn features_describe_this_host() {
    let f = crate::features();
    assert_eq!(f.actions.len(), 9);
    assert_eq!(f.operators.len(), 7);
    assert_eq!(f.known_flags.len(), 4);
    assert!(f.kernel_actions.contains(&"SCMP_ACT_ALLOW"), "{f:?}");
    assert!(f.supported_flags.contains(&"SECCOMP_FILTER_FLAG_TSYNC"), "{f:?}");
    if cfg!(target_arch = "x86_64") {
        assert_eq!(f.archs, ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]);
    }
    let json = serde_json::to_value(&f).expect("serializes");
    assert!(json.get("knownFlags").is_some() && json.get("supportedFlags").is_some() && json.get("kernelActions").is_none());
}

#[test]
fn syscall_tables_are_sorted_and_plausible() {
    for (arch, table) in [
        (Arch::X86_64, crate::syscalls::X86_64),
        (Arch::X86, crate::syscalls::X86),
        (Arch::X32, crate::syscalls::X32),
        (Arch::Aarch64, crate::syscalls::AARCH64),
        (Arch::Arm, crate::syscalls::ARM),
    ] {
        assert!(table.windows(2).all(|w| w[0].0 < w[1].0), "{arch:?} not sorted");
        assert!(table.len() > 300, "{arch:?}");
        assert_eq!(arch.syscall_nr("mseal"), Some(462 | if arch == Arch::X32 { X32_SYSCALL_BIT } else { 0 }));
    }
    assert_eq!(Arch::X86_64.syscall_nr("openat"), Some(257));
    assert_eq!(Arch::X86.syscall_nr("openat"), Some(295));
    assert_eq!(Arch::Aarch64.syscall_nr("openat"), Some(56));
    assert_eq!(Arch::Arm.syscall_nr("openat"), Some(322));
    assert_eq!(Arch::Arm.syscall_nr("cacheflush"), Some(0x0f_0002));
    assert_eq!(Arch::X32.syscall_nr("execve"), Some(X32_SYSCALL_BIT | 520));
}

/// Not a check: prints how long compiling the docker-like profile takes. Run with
/// `cargo test -p capsa-seccomp --release --lib -- --ignored --nocapture measure`.
#[test]
#[ignore = "a measurement, not a check: run by hand with --release"]
fn measure_compile_time() {
    let p = docker_like();
    let names: usize = p.syscalls.iter().map(|s| s.names.len()).sum();
    let rounds = 2000;
    let start = std::time::Instant::now();
    let mut len = 0;
    for _ in 0..rounds {
        len = std::hint::black_box(x86(std::hint::black_box(&p))).instructions().len();
    }
    let per = start.elapsed() / rounds;
    println!("{names} names, 3 arches: {len} instructions, {per:?} per compile");
}

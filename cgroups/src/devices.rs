//! cgroup v2 device control: v2 has no `devices.allow`/`devices.deny`; instead an eBPF
//! program of type `BPF_PROG_TYPE_CGROUP_DEVICE` attached to the cgroup decides every
//! open/mknod of a device node. This file turns the OCI device rules into such a program,
//! the way runc's `devicefilter` does, and loads and attaches it.
//!
//! 1. [`Emulator`] replays the rules with cgroup v1 semantics (an `a` rule resets the
//!    default; the other rules add or remove exceptions to it), so v1 and v2 hosts end up
//!    allowing exactly the same devices.
//! 2. [`program`] emits, for each exception (last first), a block that compares type,
//!    access, major and minor and returns the exception's verdict on a match, and ends with
//!    the default verdict.
//! 3. [`attach`] loads it with bpf(BPF_PROG_LOAD) and attaches it to the cgroup directory
//!    with bpf(BPF_PROG_ATTACH, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI).
//!
//! Written by hand (about 150 lines of instruction encoding) rather than with an eBPF
//! crate: the program is ~10 instructions per rule, and aya/libbpf-rs bring an ELF loader,
//! BTF and a build dependency on clang for what is a fixed pattern.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use crate::error::{Error, Result};
use crate::resources::DeviceRule;

/// Access bits of `struct bpf_cgroup_dev_ctx.access_type >> 16` (linux/bpf.h).
const ACC_MKNOD: u32 = 1;
const ACC_READ: u32 = 2;
const ACC_WRITE: u32 = 4;
/// Device types in the low 16 bits of `access_type`.
const DEV_BLOCK: u32 = 1;
const DEV_CHAR: u32 = 2;

/// One exception in the emulated v1 list: type (`b`/`c`, or `a` for both), major/minor
/// (`None` = any), access bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Exception {
    pub kind: char,
    pub major: Option<i64>,
    pub minor: Option<i64>,
    pub access: u32,
}

fn access_bits(s: &str) -> u32 {
    s.chars().fold(0, |a, c| {
        a | match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => 0,
        }
    })
}

/// The access letters of `bits`, in `rwm` order (what `access_bits` parsed).
pub(crate) fn access_string(bits: u32) -> String {
    [(ACC_READ, 'r'), (ACC_WRITE, 'w'), (ACC_MKNOD, 'm')].iter().filter(|(b, _)| bits & b != 0).map(|(_, c)| *c).collect()
}

/// cgroup v1's device list, replayed in user space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Emulator {
    /// Default verdict for devices no exception matches. A new cgroup allows everything.
    pub default_allow: bool,
    /// Exceptions, whose verdict is the opposite of the default.
    pub exceptions: Vec<Exception>,
}

impl Default for Emulator {
    fn default() -> Self {
        Emulator { default_allow: true, exceptions: Vec::new() }
    }
}

impl Emulator {
    /// Applies one rule as the v1 kernel would.
    pub fn apply(&mut self, r: &DeviceRule) {
        let major = r.major.filter(|m| *m >= 0);
        let minor = r.minor.filter(|m| *m >= 0);
        // `a` (any type, any numbers): resets the list, as writing "a" to devices.allow or
        // devices.deny does.
        if r.kind == 'a' && major.is_none() && minor.is_none() {
            self.default_allow = r.allow;
            self.exceptions.clear();
            return;
        }
        let e = Exception { kind: r.kind, major, minor, access: access_bits(&r.access) };
        if r.allow != self.default_allow {
            // Adds an exception (or widens an identical one).
            if let Some(x) = self.exceptions.iter_mut().find(|x| x.kind == e.kind && x.major == e.major && x.minor == e.minor) {
                x.access |= e.access;
            } else {
                self.exceptions.push(e);
            }
        } else {
            // Takes access away from exceptions this rule covers, as the kernel does.
            let covers = |x: &Exception| {
                (e.kind == 'a' || e.kind == x.kind)
                    && (e.major.is_none() || e.major == x.major)
                    && (e.minor.is_none() || e.minor == x.minor)
            };
            for x in self.exceptions.iter_mut().filter(|x| covers(x)) {
                x.access &= !e.access;
            }
            self.exceptions.retain(|x| x.access != 0);
        }
    }

    /// The list after `rules`, starting from "allow everything".
    pub fn from_rules(rules: &[DeviceRule]) -> Emulator {
        let mut e = Emulator::default();
        for r in rules {
            e.apply(r);
        }
        e
    }
}

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    pub code: u8,
    /// dst_reg in the low nibble, src_reg in the high nibble.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

// Opcodes (linux/bpf_common.h, linux/bpf.h).
pub(crate) const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
pub(crate) const ALU32_AND_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
pub(crate) const ALU32_RSH_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
pub(crate) const ALU32_MOV_K: u8 = 0xb4; // BPF_ALU | BPF_MOV | BPF_K
pub(crate) const ALU32_MOV_X: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X
pub(crate) const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
pub(crate) const JNE_X: u8 = 0x5d; // BPF_JMP | BPF_JNE | BPF_X
pub(crate) const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: (src << 4) | (dst & 0xf), off, imm }
}

/// The program for `rules` (OCI order, v1 semantics). Registers after the prologue:
/// R2 = device type, R3 = requested access, R4 = major, R5 = minor.
pub(crate) fn program(rules: &[DeviceRule]) -> Vec<Insn> {
    let emu = Emulator::from_rules(rules);
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU32_AND_K, 2, 0, 0, 0xffff),
        insn(LDX_MEM_W, 3, 1, 0, 0),
        insn(ALU32_RSH_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    let verdict = i32::from(!emu.default_allow);
    // Later rules take precedence in v1; exceptions never overlap in verdict, but checking
    // the last first keeps runc's order.
    for e in emu.exceptions.iter().rev() {
        let mut block: Vec<Insn> = Vec::new();
        // Each condition jumps past the block on mismatch; offsets are patched below.
        match e.kind {
            'b' => block.push(insn(JNE_K, 2, 0, 0, DEV_BLOCK as i32)),
            'c' => block.push(insn(JNE_K, 2, 0, 0, DEV_CHAR as i32)),
            _ => {}
        }
        if e.access != (ACC_READ | ACC_WRITE | ACC_MKNOD) {
            // if (R3 & access) != R3: the request asks for more than this rule grants.
            block.push(insn(ALU32_MOV_X, 1, 3, 0, 0));
            block.push(insn(ALU32_AND_K, 1, 0, 0, e.access as i32));
            block.push(insn(JNE_X, 1, 3, 0, 0));
        }
        if let Some(m) = e.major {
            block.push(insn(JNE_K, 4, 0, 0, m as i32));
        }
        if let Some(m) = e.minor {
            block.push(insn(JNE_K, 5, 0, 0, m as i32));
        }
        block.push(insn(ALU32_MOV_K, 0, 0, 0, verdict));
        block.push(insn(EXIT, 0, 0, 0, 0));
        let len = block.len();
        for (i, ins) in block.iter_mut().enumerate() {
            if ins.code == JNE_K || ins.code == JNE_X {
                // Jump to the first instruction after the block.
                ins.off = (len - i - 1) as i16;
            }
        }
        p.extend(block);
    }
    p.push(insn(ALU32_MOV_K, 0, 0, 0, i32::from(emu.default_allow)));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

/// `union bpf_attr` as BPF_PROG_LOAD reads it (the prefix we use; the kernel zero-fills the
/// rest up to the size we pass).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
}

/// `union bpf_attr` as BPF_PROG_ATTACH reads it.
#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// Loads the program for `rules` and attaches it to the cgroup2 directory `dir`. The
/// attachment keeps the program alive until the cgroup is removed.
pub(crate) fn attach(dir: &Path, rules: &[DeviceRule]) -> Result<()> {
    let insns = program(rules);
    let license = c"Apache";
    // Without a verifier log first (a log that overflows its buffer fails the load with
    // ENOSPC even for a good program); with one only to explain a refusal.
    let load = |log: &mut [u8]| {
        let attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: u32::from(!log.is_empty()),
            log_size: log.len() as u32,
            log_buf: if log.is_empty() { 0 } else { log.as_mut_ptr() as u64 },
            ..Default::default()
        };
        // SAFETY: bpf(2) reads `attr` (size given) and the instruction array and license
        // string it points to, and writes at most `log_size` bytes to the log buffer; all of
        // them live until the call returns.
        unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, &attr as *const ProgLoadAttr, std::mem::size_of::<ProgLoadAttr>()) }
    };
    let prog = load(&mut []);
    if prog < 0 {
        let err = std::io::Error::last_os_error();
        let mut log = vec![0u8; 256 * 1024];
        let _ = load(&mut log);
        let end = log.iter().position(|b| *b == 0).unwrap_or(0);
        let text = String::from_utf8_lossy(&log[..end]).split_whitespace().collect::<Vec<_>>().join(" ");
        // The verifier's conclusion is at the end of its log; keep the message one short line.
        let tail: String = text.chars().rev().take(300).collect::<Vec<_>>().into_iter().rev().collect();
        let why = if tail.is_empty() { String::new() } else { format!(" (verifier: ...{tail})") };
        let errno = err.raw_os_error().map_or_else(|| err.to_string(), |n| nix::errno::Errno::from_raw(n).desc().to_string());
        return Err(Error::Msg(format!("load the eBPF device program ({} instructions): {errno}{why}", insns.len())));
    }
    // SAFETY: the kernel returned a new fd that nothing else owns.
    let prog = unsafe { OwnedFd::from_raw_fd(prog as i32) };
    let cg = std::fs::File::open(dir).map_err(|e| Error::io("open", dir, e))?;
    let attr = ProgAttachAttr {
        target_fd: cg.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
    };
    // SAFETY: bpf(2) reads `attr` of the given size; both fds are open for the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_ATTACH, &attr as *const ProgAttachAttr, std::mem::size_of::<ProgAttachAttr>()) };
    if r < 0 {
        return Err(Error::io("attach the eBPF device program to", dir, std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn rule(allow: bool, kind: char, major: Option<i64>, minor: Option<i64>, access: &str) -> DeviceRule {
        DeviceRule { allow, kind, major, minor, access: access.into() }
    }

    /// Runs `prog` the way the kernel would for one request: a tiny interpreter of the
    /// instructions [`program`] emits.
    pub(crate) fn run(prog: &[Insn], typ: u32, access: u32, major: u32, minor: u32) -> u32 {
        let ctx = [(access << 16) | typ, major, minor];
        let mut r = [0u32; 11];
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_MEM_W => r[dst] = ctx[(i.off / 4) as usize],
                ALU32_AND_K => r[dst] &= i.imm as u32,
                ALU32_RSH_K => r[dst] >>= i.imm as u32,
                ALU32_MOV_K => r[dst] = i.imm as u32,
                ALU32_MOV_X => r[dst] = r[src],
                JNE_K => {
                    if r[dst] != i.imm as u32 {
                        pc += i.off as usize
                    }
                }
                JNE_X => {
                    if r[dst] != r[src] {
                        pc += i.off as usize
                    }
                }
                EXIT => return r[0],
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn emulator_follows_v1_semantics() {
        // Deny all, then allow c 1:3 rw and all of major 136: a whitelist of two.
        let e = Emulator::from_rules(&[
            rule(false, 'a', None, None, "rwm"),
            rule(true, 'c', Some(1), Some(3), "rw"),
            rule(true, 'c', Some(136), None, "rwm"),
        ]);
        assert!(!e.default_allow);
        assert_eq!(e.exceptions.len(), 2);
        // A deny of part of an allowed device takes away just that access.
        let e2 = Emulator::from_rules(&[
            rule(false, 'a', None, None, "rwm"),
            rule(true, 'c', Some(1), Some(3), "rwm"),
            rule(false, 'c', Some(1), Some(3), "w"),
        ]);
        assert_eq!(e2.exceptions, vec![Exception { kind: 'c', major: Some(1), minor: Some(3), access: ACC_READ | ACC_MKNOD }]);
        // No rules: allow everything, as a new cgroup does.
        assert!(Emulator::from_rules(&[]).default_allow);
    }

    #[test]
    fn program_decisions() {
        let p = program(&[
            rule(false, 'a', None, None, "rwm"),
            rule(true, 'c', None, None, "m"),
            rule(true, 'c', Some(1), Some(3), "rwm"),
            rule(true, 'b', Some(7), Some(0), "r"),
            rule(true, 'c', Some(136), None, "rwm"),
        ]);
        let (r, w, m) = (ACC_READ, ACC_WRITE, ACC_MKNOD);
        assert_eq!(run(&p, DEV_CHAR, r | w, 1, 3), 1, "/dev/null rw");
        assert_eq!(run(&p, DEV_CHAR, r, 1, 5), 0, "/dev/zero is not allowed");
        assert_eq!(run(&p, DEV_CHAR, m, 1, 5), 1, "mknod of any char device");
        assert_eq!(run(&p, DEV_BLOCK, r, 7, 0), 1, "loop0 read");
        assert_eq!(run(&p, DEV_BLOCK, r | w, 7, 0), 0, "loop0 write is not allowed");
        assert_eq!(run(&p, DEV_BLOCK, r, 7, 1), 0, "loop1");
        assert_eq!(run(&p, DEV_CHAR, r | w, 136, 42), 1, "any pty");
        assert_eq!(run(&p, DEV_BLOCK, m, 136, 42), 0, "block 136 is not a pty");
        // A blacklist: allow all but /dev/null writes.
        let p = program(&[rule(false, 'c', Some(1), Some(3), "w")]);
        assert_eq!(run(&p, DEV_CHAR, r, 1, 3), 1);
        assert_eq!(run(&p, DEV_CHAR, w, 1, 3), 0);
        assert_eq!(run(&p, DEV_BLOCK, w, 8, 0), 1);
    }
}

//! The code generator: per-architecture syscall decisions → a classic BPF program.
//!
//! Input ([`Section`]): for each audit arch, the syscalls that do not take the default action,
//! sorted by number, each with a [`Leaf`]: a plain return value, or a chain of conditional
//! rules. compile.rs decides *what* happens; this file only decides *where the jumps go*.
//!
//! Program layout:
//! ```text
//!     ld   [arch]                    seccomp_data.arch
//!     jeq  AUDIT_ARCH_native → A     one check per section, native first
//!     jeq  AUDIT_ARCH_other  → B
//!     ret  BAD_ARCH
//! A:  ld   [nr]                      seccomp_data.nr
//!     jge  n4 → …                    binary search over ranges of syscall numbers:
//!     jge  n2 → …                    ~log2(ranges) compares, whatever the profile size
//!     ret  ALLOW                     leaf: a shared `ret`, or
//!     ld   [args[1] hi] / jeq …      leaf: rule chain (see `cond`), ending in the default
//! B:  …
//! ```
//! Ranges: consecutive numbers with the same return value (including the default for numbers
//! the profile does not name) form one range, so a 350-syscall allowlist needs a few dozen
//! compares per arch, not 350.
//!
//! Jumps: classic BPF only jumps forward, and a conditional jump reaches at most 255
//! instructions. So the program is emitted *backwards*, last instruction first: when a jump
//! is emitted, everything it can jump to already exists and its exact distance is known. A
//! target farther than 255 gets a `ja` (32-bit offset) trampoline placed right after the jump;
//! a `ret` target reuses the nearest identical `ret` if it is in reach, else gets a fresh one.
//! Every jump names both of its targets explicitly, so inserting trampolines or `ret`s right
//! after a jump never changes what falls through where. A non-jump (`ld`, `and`) is always
//! emitted immediately after (= placed immediately before) the instruction it falls into.

use crate::action::Op;
use crate::arch::X32_SYSCALL_BIT;
use libc::sock_filter;

// Opcodes (linux/filter.h, linux/bpf_common.h).
const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS: A = seccomp_data[k..k+4]
const AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K: A &= k
const JA: u16 = 0x05; // BPF_JMP | BPF_JA: pc += k
const JEQ: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K: pc += (A == k) ? jt : jf
const JGT: u16 = 0x25; // BPF_JMP | BPF_JGT | BPF_K (unsigned)
const JGE: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K (unsigned)
const RET_K: u16 = 0x06; // BPF_RET | BPF_K: return k

// struct seccomp_data { int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]; }
const NR_OFFSET: u32 = 0;
const ARCH_OFFSET: u32 = 4;
const ARGS_OFFSET: u32 = 16;

/// `SECCOMP_RET_ERRNO | ENOSYS`: what the ENOSYS stub returns.
const ENOSYS_RET: u32 = 0x0005_0000 | libc::ENOSYS as u32;

/// Longest distance a conditional jump can express.
const MAX_JUMP: usize = 255;

/// One argument comparison (already validated: index <= 5).
#[derive(Debug, Clone)]
pub(crate) struct Cond {
    pub index: u8,
    pub op: Op,
    pub value: u64,
    pub value_two: u64,
}

/// Conditions (ANDed) and the return value when they all hold.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub conds: Vec<Cond>,
    pub ret: u32,
}

/// What happens to one syscall number.
#[derive(Debug)]
pub(crate) enum Leaf<'r> {
    /// Always this return value.
    Ret(u32),
    /// First rule whose conditions hold, else the default. `wide`: compare 64-bit arguments.
    Chain { rules: Vec<&'r Rule>, wide: bool },
}

/// The filter for one `seccomp_data.arch` value.
#[derive(Debug)]
pub(crate) struct Section<'r> {
    pub audit_arch: u32,
    /// Sorted by number, no duplicates.
    pub syscalls: Vec<(u32, Leaf<'r>)>,
    /// x86_64 without x32: numbers with the x32 bit get the bad-arch action.
    pub reject_x32: bool,
    /// Sorted, disjoint `start..end` intervals (end exclusive, at most 2^32) of numbers that no
    /// rule names and that return ENOSYS instead of the default (runc's stub).
    pub enosys: Vec<(u64, u64)>,
}

/// Builds the whole program. The caller checks the length against the kernel's limit.
pub(crate) fn generate(sections: &[Section], default_ret: u32, bad_arch_ret: u32) -> Vec<sock_filter> {
    let mut b = Builder { rev: Vec::with_capacity(512), rets: Vec::new(), default_ret };
    // Sections last-to-first (they are placed after the arch checks, in order).
    let mut entries = Vec::with_capacity(sections.len());
    for s in sections.iter().rev() {
        let ranges = ranges(s, default_ret, bad_arch_ret);
        let tree = b.tree(&ranges);
        b.enter(tree);
        entries.push((s.audit_arch, b.load(NR_OFFSET)));
    }
    let mut next = Target::Ret(bad_arch_ret);
    for (audit_arch, section) in entries {
        next = Target::At(b.jump(JEQ, audit_arch, Target::At(section), next));
    }
    b.enter(next);
    b.load(ARCH_OFFSET);
    b.finish()
}

/// What a range of syscall numbers leads to.
#[derive(Clone, Copy)]
enum Slot<'a, 'r> {
    Ret(u32),
    Chain(&'a [&'r Rule], bool),
}

/// Cuts the 32-bit number space into ranges `(first number, slot)`, each running up to the
/// next range's start; neighbours with the same return value are merged.
fn ranges<'a, 'r>(s: &'a Section<'r>, default_ret: u32, bad_arch_ret: u32) -> Vec<(u32, Slot<'a, 'r>)> {
    fn push<'a, 'r>(out: &mut Vec<(u32, Slot<'a, 'r>)>, start: u32, slot: Slot<'a, 'r>) {
        if let (Some((_, Slot::Ret(last))), Slot::Ret(new)) = (out.last(), slot) {
            if *last == new {
                return;
            }
        }
        out.push((start, slot));
    }
    // Numbers `from..to` that no rule names: the default, or ENOSYS inside a stub interval.
    fn gap<'a, 'r>(out: &mut Vec<(u32, Slot<'a, 'r>)>, from: u64, to: u64, default_ret: u32, enosys: &[(u64, u64)]) {
        let mut at = from;
        for &(lo, hi) in enosys {
            let (lo, hi) = (lo.max(at), hi.min(to));
            if lo >= hi {
                continue;
            }
            if at < lo {
                push(out, at as u32, Slot::Ret(default_ret));
            }
            push(out, lo as u32, Slot::Ret(ENOSYS_RET));
            at = hi;
        }
        if at < to {
            push(out, at as u32, Slot::Ret(default_ret));
        }
    }
    let mut out = Vec::with_capacity(2 * s.syscalls.len() + 4);
    let mut next: u64 = 0; // first number not covered yet
    for (nr, leaf) in &s.syscalls {
        if u64::from(*nr) > next {
            gap(&mut out, next, u64::from(*nr), default_ret, &s.enosys);
        }
        let slot = match leaf {
            Leaf::Ret(v) => Slot::Ret(*v),
            Leaf::Chain { rules, wide } => Slot::Chain(rules, *wide),
        };
        push(&mut out, *nr, slot);
        next = u64::from(*nr) + 1;
    }
    if s.reject_x32 {
        debug_assert!(next <= u64::from(X32_SYSCALL_BIT));
        gap(&mut out, next, u64::from(X32_SYSCALL_BIT), default_ret, &s.enosys);
        push(&mut out, X32_SYSCALL_BIT, Slot::Ret(bad_arch_ret));
    } else {
        gap(&mut out, next, 1 << 32, default_ret, &s.enosys);
    }
    out
}

/// Where a jump goes: an instruction already emitted, or "return this value".
#[derive(Clone, Copy)]
enum Target {
    /// Index into `Builder::rev`.
    At(usize),
    Ret(u32),
}

/// Emits instructions backwards (see module comment). A label is an index into `rev`; the
/// forward distance from the instruction at label `j` to label `t` (`t < j`) is `j - t - 1`.
struct Builder {
    /// The program in reverse: `rev[0]` is its last instruction.
    rev: Vec<sock_filter>,
    /// Most recent `ret` emitted for each return value: (value, label).
    rets: Vec<(u32, usize)>,
    default_ret: u32,
}

impl Builder {
    fn push(&mut self, code: u16, jt: u8, jf: u8, k: u32) -> usize {
        self.rev.push(sock_filter { code, jt, jf, k });
        self.rev.len() - 1
    }

    /// `A = seccomp_data[offset..offset + 4]`, falling into the last emitted instruction.
    fn load(&mut self, offset: u32) -> usize {
        self.push(LD_W_ABS, 0, 0, offset)
    }

    fn and(&mut self, k: u32) -> usize {
        self.push(AND_K, 0, 0, k)
    }

    /// Distance from a jump emitted after `pending` more instructions to `label`.
    fn reach(&self, label: usize, pending: usize) -> usize {
        self.rev.len() + pending - label - 1
    }

    /// A label returning `value`: the nearest existing `ret` if a jump emitted soon can
    /// still reach it (`jump` emits at most 3 instructions before itself), else a new one.
    fn ret(&mut self, value: u32) -> usize {
        if let Some(&(_, label)) = self.rets.iter().find(|(v, _)| *v == value) {
            if self.reach(label, 4) <= MAX_JUMP {
                return label;
            }
        }
        self.new_ret(value)
    }

    fn new_ret(&mut self, value: u32) -> usize {
        let label = self.push(RET_K, 0, 0, value);
        match self.rets.iter_mut().find(|(v, _)| *v == value) {
            Some(entry) => entry.1 = label,
            None => self.rets.push((value, label)),
        }
        label
    }

    fn resolve(&mut self, t: Target) -> usize {
        match t {
            Target::At(label) => label,
            Target::Ret(value) => self.ret(value),
        }
    }

    /// `ja` to `label`: a 32-bit jump, for targets out of a conditional jump's reach.
    fn trampoline(&mut self, label: usize) -> usize {
        let distance = self.reach(label, 0) as u32; // < 4096 + a few: fits
        self.push(JA, 0, 0, distance)
    }

    /// `if A <code> k goto yes else goto no`. Returns the jump's label.
    fn jump(&mut self, code: u16, k: u32, yes: Target, no: Target) -> usize {
        let mut t = self.resolve(yes);
        let mut f = self.resolve(no);
        // Up to two trampolines may go between the jump and its targets: check with margin.
        if self.reach(t, 2) > MAX_JUMP {
            t = self.trampoline(t);
        }
        if self.reach(f, 1) > MAX_JUMP {
            f = self.trampoline(f);
        }
        let jt = self.reach(t, 0) as u8; // both <= MAX_JUMP, checked above
        let jf = self.reach(f, 0) as u8;
        self.push(code, jt, jf, k)
    }

    /// Makes `t` the next instruction, so that a non-jump emitted now falls into it.
    fn enter(&mut self, t: Target) {
        match t {
            Target::At(label) if label + 1 == self.rev.len() => {}
            Target::At(label) => {
                self.trampoline(label);
            }
            Target::Ret(value) => {
                self.new_ret(value);
            }
        }
    }

    /// Binary search over `ranges` (the first one starts at 0). Expects A = syscall number.
    fn tree(&mut self, ranges: &[(u32, Slot)]) -> Target {
        if let [(_, slot)] = ranges {
            return match *slot {
                Slot::Ret(value) => Target::Ret(value),
                Slot::Chain(rules, wide) => self.chain(rules, wide),
            };
        }
        let mid = ranges.len() / 2;
        let high = self.tree(&ranges[mid..]);
        let low = self.tree(&ranges[..mid]);
        Target::At(self.jump(JGE, ranges[mid].0, high, low))
    }

    /// Rules tried in order, the first whose conditions all hold wins; else the default.
    fn chain(&mut self, rules: &[&Rule], wide: bool) -> Target {
        let mut next = Target::Ret(self.default_ret);
        for rule in rules.iter().rev() {
            let mut ok = Target::Ret(rule.ret);
            for cond in rule.conds.iter().rev() {
                ok = Target::At(self.cond(cond, wide, ok, next));
            }
            next = ok;
        }
        next
    }

    /// One argument comparison, unsigned. On 64-bit ABIs the high words decide unless they
    /// are equal, then the low words do; on 32-bit ABIs only the low words are compared.
    fn cond(&mut self, c: &Cond, wide: bool, yes: Target, no: Target) -> usize {
        let lo = ARGS_OFFSET + 8 * u32::from(c.index); // little-endian: low word first
        let hi = lo + 4;
        let (v_hi, v_lo) = ((c.value >> 32) as u32, c.value as u32);
        match c.op {
            Op::Eq => self.equal(wide, lo, hi, v_hi, v_lo, yes, no),
            Op::Ne => self.equal(wide, lo, hi, v_hi, v_lo, no, yes),
            Op::Gt => self.greater(JGT, wide, lo, hi, v_hi, v_lo, yes, no),
            Op::Ge => self.greater(JGE, wide, lo, hi, v_hi, v_lo, yes, no),
            Op::Lt => self.greater(JGE, wide, lo, hi, v_hi, v_lo, no, yes), // a < v  <=>  !(a >= v)
            Op::Le => self.greater(JGT, wide, lo, hi, v_hi, v_lo, no, yes), // a <= v <=>  !(a > v)
            Op::MaskedEq => {
                // (a & mask) == datum
                let (m_hi, m_lo) = ((c.value >> 32) as u32, c.value as u32);
                let (d_hi, d_lo) = ((c.value_two >> 32) as u32, c.value_two as u32);
                self.jump(JEQ, d_lo, yes, no);
                self.and(m_lo);
                let low = self.load(lo);
                if !wide || (m_hi == 0 && d_hi == 0) {
                    return low; // high half trivially equal (0 == 0)
                }
                self.jump(JEQ, d_hi, Target::At(low), no);
                self.and(m_hi);
                self.load(hi)
            }
        }
    }

    /// `ld hi; jeq v_hi ? next : no; next: ld lo; jeq v_lo ? yes : no`.
    #[allow(clippy::too_many_arguments)]
    fn equal(&mut self, wide: bool, lo: u32, hi: u32, v_hi: u32, v_lo: u32, yes: Target, no: Target) -> usize {
        self.jump(JEQ, v_lo, yes, no);
        let low = self.load(lo);
        if !wide {
            return low;
        }
        self.jump(JEQ, v_hi, Target::At(low), no);
        self.load(hi)
    }

    /// `a > v` (JGT) or `a >= v` (JGE):
    /// `ld hi; jgt v_hi ? yes : eq; eq: jeq v_hi ? next : no; next: ld lo; j<code> v_lo ? yes : no`.
    #[allow(clippy::too_many_arguments)]
    fn greater(&mut self, code: u16, wide: bool, lo: u32, hi: u32, v_hi: u32, v_lo: u32, yes: Target, no: Target) -> usize {
        self.jump(code, v_lo, yes, no);
        let low = self.load(lo);
        if !wide {
            return low;
        }
        let high_equal = self.jump(JEQ, v_hi, Target::At(low), no);
        self.jump(JGT, v_hi, yes, Target::At(high_equal));
        self.load(hi)
    }

    fn finish(mut self) -> Vec<sock_filter> {
        // The first instruction emitted is always a `ret` (every jump's targets exist before
        // it), so the program ends with one, as the kernel's checker requires.
        debug_assert!(self.rev.first().is_some_and(|i| i.code == RET_K));
        self.rev.reverse();
        self.rev
    }
}

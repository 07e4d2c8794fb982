//! capsa-seccomp: OCI `linux.seccomp` → classic BPF, and loading it with seccomp(2).
//!
//! ```text
//! config.json linux.seccomp ──serde──▶ Seccomp        (profile.rs: the OCI JSON, as written)
//!        Program::compile ──────────▶ checks + rules  (compile.rs: names → numbers per arch,
//!                                                      precedence, every error names its entry)
//!                         ──────────▶ Vec<sock_filter> (bpf.rs: the code generator)
//!        Program::load ─────────────▶ seccomp(SECCOMP_SET_MODE_FILTER) (load.rs)
//! ```
//!
//! The runtime deserializes (or converts from oci-spec) a [`Seccomp`], calls
//! [`Program::compile`] in the parent, and calls [`Program::load`] in the container's init:
//! `load` does not allocate, so it is safe between clone and exec.
//!
//! # Why not seccompiler or libseccomp
//! No C library may be linked, and seccompiler (rust-vmm) only builds single-architecture
//! filters for the native arch, with no x32/i386/arm sections, no NOTIFY/TRACE/LOG actions and
//! no 4096-instruction planning. A runc-compatible runtime needs all of those, so the ~400
//! lines of generator here are written by hand, following libseccomp's observable behaviour.
//!
//! # Semantics (what a profile means), matching runc + libseccomp
//! * **Actions**: `SCMP_ACT_KILL` = `KILL_THREAD`; `ERRNO` returns `errnoRet` (default EPERM);
//!   `TRACE` passes `errnoRet` as the tracer's data (default EPERM, as runc). `errnoRet` on any
//!   other action is ignored (runc ignores it too). NOTIFY needs `listenerPath` and cannot be
//!   the default action (runc refuses it: the runtime's own syscalls would block on a listener
//!   that does not have the fd yet).
//! * **Conditions**: the `args` of one rule are ANDed. Exception kept from runc: if two
//!   conditions of one rule use the same `index`, each condition becomes its own rule (ORed).
//!   Comparisons are unsigned 64-bit (high word, then low word); on 32-bit ABIs (x86, arm,
//!   x32) only the low 32 bits of the argument and of the value are compared, as libseccomp.
//! * **Precedence** for one syscall, when several rules name it:
//!   1. rules whose action equals the default action are dropped (runc does this);
//!   2. if any remaining rule is unconditional, the first unconditional rule decides every
//!      call (libseccomp lets an unconditional rule replace all conditional ones);
//!   3. otherwise the conditional rules are tried in profile order and the first whose
//!      conditions all hold decides; if none holds, the default action applies. (libseccomp
//!      orders conditional rules by its own decision tree instead of profile order; the two
//!      differ only when conditional rules with *different* actions match the same call.)
//! * **Architectures**: the native arch is always filtered; `architectures` adds the other ABIs
//!   this kernel can run: x86_64 hosts know `SCMP_ARCH_X86_64`, `SCMP_ARCH_X86`, `SCMP_ARCH_X32`;
//!   aarch64 hosts `SCMP_ARCH_AARCH64`, `SCMP_ARCH_ARM`. Other valid OCI arches (mips, ppc,
//!   s390, riscv, …, or aarch64 on an x86 host) are accepted and skipped: no process of that
//!   arch can run here, so its section could never match. A syscall from an arch the profile
//!   does not list (including x32 calls, `nr | 0x4000_0000` under AUDIT_ARCH_X86_64, when
//!   `SCMP_ARCH_X32` is absent) gets libseccomp's bad-arch action: `SECCOMP_RET_KILL_THREAD`
//!   ([`BAD_ARCH_ACTION`]).
//! * **Names**: a name unknown on one arch is skipped for that arch (as libseccomp), also when
//!   no arch of the filter has it (`recv` on x86_64: docker's default profile names it, ARM
//!   has it). A name that no architecture has at all (the five tables here, plus the
//!   ppc/s390/mips/riscv/m68k/parisc-only names of [`Arch::knows_anywhere`]) is an error,
//!   unless [`Options::ignore_unknown_syscalls`] (runc's behaviour: it logs and skips).
//!   i386 socketcall/ipc multiplexing is not expanded: a rule for `connect` covers the direct
//!   i386 syscall, not `socketcall(SYS_CONNECT, …)`.
//! * **ENOSYS stub** ([`Options::enosys_for_newer_syscalls`], runc's patchbpf): per ABI,
//!   numbers above the highest one the profile names return ENOSYS instead of a blocking
//!   default action, so programs fall back from syscalls newer than the profile. It is part of
//!   the number ranges of each section (bpf.rs), not a separate prefix: no extra instructions
//!   on the path of a named syscall.
//! * Not done here (runtime's job): sending the listener fd to `listenerPath`, refusing
//!   NOTIFY on the syscalls the runtime needs to hand the listener over (`write`, `sendmsg`
//!   in capsa).

mod action;
mod arch;
mod bpf;
mod compile;
mod error;
mod load;
mod profile;
mod syscalls;

#[cfg(test)]
mod tests;

pub use action::{Action, Op};
pub use arch::Arch;
pub use compile::{Options, Program, BAD_ARCH_ACTION, MAX_INSTRUCTIONS};
pub use error::{Error, LoadError};
pub use load::{features, load, Features, FilterFlags};
pub use profile::{Arg, Seccomp, Syscall};

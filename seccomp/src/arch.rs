//! Architectures: OCI names, the `AUDIT_ARCH_*` value the kernel puts in
//! `seccomp_data.arch`, and the syscall-number tables (src/syscalls.rs, generated).

use crate::syscalls;

/// The x32 ABI runs under AUDIT_ARCH_X86_64 with this bit set in the syscall number.
pub(crate) const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// An ABI this crate can build a filter section for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    X86_64,
    /// i386 (ia32 compat on x86_64).
    X86,
    /// x32: x86_64 registers, 32-bit pointers, numbers | 0x4000_0000.
    X32,
    Aarch64,
    /// 32-bit ARM EABI (compat on aarch64).
    Arm,
}

/// Valid OCI/libseccomp arch names we accept but never build a section for: no process of
/// those ABIs can run on an x86_64 or aarch64 kernel.
const FOREIGN: &[&str] = &[
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64",
    "SCMP_ARCH_RISCV64",
    "SCMP_ARCH_LOONGARCH64",
    "SCMP_ARCH_M68K",
    "SCMP_ARCH_SH",
    "SCMP_ARCH_SHEB",
];

/// Syscalls that exist only on architectures this crate has no table for (from the kernel's
/// powerpc, s390, mips, riscv, m68k and parisc syscall tables), as they appear in
/// container engines' default profiles; accepted and skipped, never matched here.
const OTHER_ARCH_SYSCALLS: &[&str] = &[
    // powerpc
    "multiplexer",
    "rtas",
    "spu_create",
    "spu_run",
    "subpage_prot",
    "swapcontext",
    "switch_endian",
    "sys_debug_setcontext",
    // s390
    "s390_guarded_storage",
    "s390_pci_mmio_read",
    "s390_pci_mmio_write",
    "s390_runtime_instr",
    "s390_sthyi",
    // mips
    "cachectl",
    "sysmips",
    // riscv
    "riscv_flush_icache",
    "riscv_hwprobe",
    // m68k
    "atomic_barrier",
    "atomic_cmpxchg_32",
    // mips, m68k, sh, parisc (ARM's private one is in the ARM table)
    "cacheflush",
];

impl Arch {
    pub const ALL: [Arch; 5] = [Arch::X86_64, Arch::X86, Arch::X32, Arch::Aarch64, Arch::Arm];

    /// The architecture this crate was built for, if it can filter for it.
    pub fn native() -> Option<Arch> {
        if cfg!(target_arch = "x86_64") {
            Some(Arch::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Arch::Aarch64)
        } else {
            None
        }
    }

    /// The ABIs a kernel of this (native) arch can run, native first.
    pub fn family(self) -> &'static [Arch] {
        match self {
            Arch::X86_64 | Arch::X86 | Arch::X32 => &[Arch::X86_64, Arch::X86, Arch::X32],
            Arch::Aarch64 | Arch::Arm => &[Arch::Aarch64, Arch::Arm],
        }
    }

    pub fn oci_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "SCMP_ARCH_X86_64",
            Arch::X86 => "SCMP_ARCH_X86",
            Arch::X32 => "SCMP_ARCH_X32",
            Arch::Aarch64 => "SCMP_ARCH_AARCH64",
            Arch::Arm => "SCMP_ARCH_ARM",
        }
    }

    pub fn from_oci(name: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.oci_name() == name)
    }

    /// A valid OCI arch name this crate skips (see [`FOREIGN`]).
    pub(crate) fn is_foreign_oci_name(name: &str) -> bool {
        FOREIGN.contains(&name)
    }

    /// Whether `name` is a syscall on any architecture: the five tables of this crate, or
    /// `OTHER_ARCH_SYSCALLS`. Used to tell a typo from a name of another ABI.
    pub fn knows_anywhere(name: &str) -> bool {
        Arch::ALL.iter().any(|a| a.syscall_nr(name).is_some()) || OTHER_ARCH_SYSCALLS.contains(&name)
    }

    /// `seccomp_data.arch` for this ABI (linux/audit.h: EM_* | 64BIT | LE).
    pub fn audit_arch(self) -> u32 {
        match self {
            Arch::X86_64 | Arch::X32 => 0xc000_003e, // AUDIT_ARCH_X86_64
            Arch::X86 => 0x4000_0003,                // AUDIT_ARCH_I386
            Arch::Aarch64 => 0xc000_00b7,            // AUDIT_ARCH_AARCH64
            Arch::Arm => 0x4000_0028,                // AUDIT_ARCH_ARM
        }
    }

    /// Whether syscall arguments are compared on 64 bits. libseccomp treats x32 as a
    /// 32-bit ABI too: only the low words are compared.
    pub(crate) fn wide_args(self) -> bool {
        matches!(self, Arch::X86_64 | Arch::Aarch64)
    }

    /// The number `seccomp_data.nr` holds for `name` on this ABI (x32 includes the x32 bit).
    pub fn syscall_nr(self, name: &str) -> Option<u32> {
        let table = match self {
            Arch::X86_64 => syscalls::X86_64,
            Arch::X86 => syscalls::X86,
            Arch::X32 => syscalls::X32,
            Arch::Aarch64 => syscalls::AARCH64,
            Arch::Arm => syscalls::ARM,
        };
        let i = table.binary_search_by(|(n, _)| (*n).cmp(name)).ok()?;
        Some(table[i].1)
    }
}

//! From a profile to the code generator's input: validation (every error names its entry),
//! syscall names → numbers per architecture, and precedence between rules (see lib.rs).

use crate::action::{Action, Op};
use crate::arch::{Arch, X32_SYSCALL_BIT};
use crate::bpf::{self, Cond, Leaf, Rule, Section};
use crate::error::{Error, LoadError};
use crate::load::FilterFlags;
use crate::profile::Seccomp;
use libc::sock_filter;
use std::fmt;
use std::os::fd::OwnedFd;

/// The kernel's limit on a filter's length (BPF_MAXINSNS).
pub const MAX_INSTRUCTIONS: usize = 4096;

/// What a syscall from an ABI the filter does not cover gets: libseccomp's default bad-arch
/// action, `SCMP_ACT_KILL` (= `SECCOMP_RET_KILL_THREAD`), which runc keeps.
pub const BAD_ARCH_ACTION: Action = Action::KillThread;

/// Compile options. `Options::default()` is strict (unknown names are errors, no ENOSYS
/// stub); a runc-compatible runtime wants [`Options::runc`].
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The host architecture; `None` = the one this crate was built for. Tests build aarch64
    /// filters on x86_64 with `Some(Arch::Aarch64)`.
    pub native: Option<Arch>,
    /// Skip syscall names that no architecture knows at all (runc's behaviour: it logs and
    /// skips them) instead of failing with [`Error::UnknownSyscall`]. Names that exist on
    /// some architecture but not on this filter's are skipped either way.
    pub ignore_unknown_syscalls: bool,
    /// runc's ENOSYS stub: on each ABI of the filter, syscall numbers above the highest one the
    /// profile names (in any rule, whatever its action) fail with ENOSYS instead of taking the
    /// default action, so a program's fallback for a syscall newer than the profile (glibc's
    /// clone3 → clone, statx → fstatat, ...) works under an old allowlist. Not applied when the
    /// default action allows the call anyway (ALLOW, LOG, TRACE: a tracer handles new
    /// syscalls itself), as runc.
    pub enosys_for_newer_syscalls: bool,
}

impl Options {
    /// What runc (with libseccomp) does: skip unknown names, add the ENOSYS stub.
    pub fn runc() -> Options {
        Options { native: None, ignore_unknown_syscalls: true, enosys_for_newer_syscalls: true }
    }
}

/// A compiled filter, ready to load.
#[derive(Clone)]
pub struct Program {
    filter: Vec<sock_filter>,
    flags: FilterFlags,
    arches: Vec<Arch>,
    /// Names skipped because no architecture knows them ([`Options::ignore_unknown_syscalls`]).
    skipped: Vec<String>,
    /// Per ABI of the filter, the number above which the ENOSYS stub answers.
    enosys_above: Vec<(Arch, u32)>,
}

impl fmt::Debug for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Program")
            .field("instructions", &self.filter.len())
            .field("flags", &self.flags)
            .field("arches", &self.arches)
            .field("skipped", &self.skipped)
            .field("enosys_above", &self.enosys_above)
            .finish()
    }
}

impl Program {
    /// Compiles `linux.seccomp` for this host.
    pub fn compile(profile: &Seccomp) -> Result<Program, Error> {
        Program::compile_with(profile, &Options::default())
    }

    pub fn compile_with(profile: &Seccomp, options: &Options) -> Result<Program, Error> {
        let native = options.native.or_else(Arch::native).ok_or(Error::UnsupportedHost(std::env::consts::ARCH))?.family()[0];

        let default =
            action(&profile.default_action, profile.default_errno_ret, "linux.seccomp.defaultAction", "linux.seccomp.defaultErrnoRet")?;
        if default == Action::Notify {
            return Err(Error::NotifyDefault);
        }

        let mut flags = FilterFlags::empty();
        for (i, name) in profile.flags.iter().enumerate() {
            let flag = FilterFlags::from_oci(name)
                .ok_or_else(|| Error::UnknownFlag { field: format!("linux.seccomp.flags[{i}]"), value: name.clone() })?;
            flags = flags | flag;
        }

        // The native ABI, then the listed ones this kernel can run (others are skipped).
        let mut arches = vec![native];
        for (i, name) in profile.architectures.iter().enumerate() {
            match Arch::from_oci(name) {
                Some(arch) if native.family().contains(&arch) => {
                    if !arches.contains(&arch) {
                        arches.push(arch);
                    }
                }
                Some(_) => {}
                None if Arch::is_foreign_oci_name(name) => {}
                None => return Err(Error::UnknownArch { field: format!("linux.seccomp.architectures[{i}]"), value: name.clone() }),
            }
        }

        // Rules in profile order, and per arch the (syscall number, rule index) pairs.
        let has_listener = profile.listener_path.as_deref().is_some_and(|p| !p.is_empty());
        let mut notify = false;
        let mut rules: Vec<Rule> = Vec::with_capacity(profile.syscalls.len());
        let mut hits: Vec<Vec<(u32, u32)>> = arches.iter().map(|_| Vec::with_capacity(512)).collect();
        // Highest number named per arch (every rule counts, also one repeating the default).
        let mut newest: Vec<Option<u32>> = arches.iter().map(|_| None).collect();
        let mut skipped = Vec::new();
        for (i, entry) in profile.syscalls.iter().enumerate() {
            let field = |rest: String| format!("linux.seccomp.syscalls[{i}]{rest}");
            let act = action(&entry.action, entry.errno_ret, &field(".action".into()), &field(".errnoRet".into()))?;
            if act == Action::Notify {
                if !has_listener {
                    return Err(Error::NotifyWithoutListener { field: field(".action".into()) });
                }
                notify = true;
            }
            let mut conds = Vec::with_capacity(entry.args.len());
            for (j, arg) in entry.args.iter().enumerate() {
                let op = Op::from_oci(&arg.op)
                    .ok_or_else(|| Error::UnknownOperator { field: field(format!(".args[{j}].op")), value: arg.op.clone() })?;
                let index = match u8::try_from(arg.index) {
                    Ok(index) if index <= 5 => index,
                    _ => return Err(Error::ArgIndex { field: field(format!(".args[{j}].index")), index: arg.index }),
                };
                conds.push(Cond { index, op, value: arg.value, value_two: arg.value_two });
            }

            let first = rules.len();
            // runc drops rules that repeat the default action (libseccomp refuses them).
            if act != default {
                let ret = act.ret();
                if repeats_an_index(&conds) {
                    // runc: conditions on the same argument are each a rule of their own (OR).
                    rules.extend(conds.into_iter().map(|c| Rule { conds: vec![c], ret }));
                } else {
                    rules.push(Rule { conds, ret });
                }
            }
            let made = first as u32..rules.len() as u32;

            for (j, name) in entry.names.iter().enumerate() {
                if name.is_empty() {
                    return Err(Error::EmptyName { field: field(format!(".names[{j}]")) });
                }
                let mut known = false;
                for ((arch, hits), newest) in arches.iter().zip(hits.iter_mut()).zip(newest.iter_mut()) {
                    if let Some(nr) = arch.syscall_nr(name) {
                        known = true;
                        hits.extend(made.clone().map(|r| (nr, r)));
                        *newest = Some(newest.map_or(nr, |n| n.max(nr)));
                    }
                }
                // Unknown on this filter's ABIs but a real syscall elsewhere (docker's default
                // profile lists `recv` and `send`, which only ARM has): skipped, as libseccomp
                // and runc skip it. Known on no architecture at all: a typo, refused.
                if !known && !Arch::knows_anywhere(name) {
                    if !options.ignore_unknown_syscalls {
                        let archs = arches.iter().map(|a| a.oci_name()).collect::<Vec<_>>().join(", ");
                        return Err(Error::UnknownSyscall { field: field(format!(".names[{j}]")), name: name.clone(), archs });
                    }
                    if !skipped.contains(name) {
                        skipped.push(name.clone());
                    }
                }
            }
        }

        // runc's ENOSYS stub, unless the default lets every call through anyway.
        let stub = options.enosys_for_newer_syscalls && !matches!(default, Action::Allow | Action::Log | Action::Trace(_));
        let mut enosys_above = Vec::new();

        // One section per audit arch; x32 shares x86_64's (its numbers carry the x32 bit).
        let mut sections: Vec<Section> = Vec::with_capacity(arches.len());
        for ((arch, hits), newest) in arches.iter().zip(hits.iter_mut()).zip(newest) {
            hits.sort_unstable();
            hits.dedup();
            let decided = decide(hits, &rules, arch.wide_args());
            // The ENOSYS interval: above the newest named number, up to the end of this ABI's
            // part of the number space (x86_64 stops where the x32 bit starts).
            let enosys = match newest.filter(|_| stub) {
                Some(n) => {
                    enosys_above.push((*arch, n));
                    let end = if *arch == Arch::X86_64 { u64::from(X32_SYSCALL_BIT) } else { 1 << 32 };
                    vec![(u64::from(n) + 1, end)]
                }
                None => Vec::new(),
            };
            match sections.iter_mut().find(|s| s.audit_arch == arch.audit_arch()) {
                Some(section) => {
                    section.syscalls.extend(decided);
                    section.syscalls.sort_by_key(|(nr, _)| *nr);
                    section.enosys.extend(enosys);
                    section.enosys.sort_unstable();
                }
                None => sections.push(Section { audit_arch: arch.audit_arch(), syscalls: decided, reject_x32: false, enosys }),
            }
        }
        if !arches.contains(&Arch::X32) {
            for s in sections.iter_mut().filter(|s| s.audit_arch == Arch::X86_64.audit_arch()) {
                s.reject_x32 = true;
            }
        }

        let filter = bpf::generate(&sections, default.ret(), BAD_ARCH_ACTION.ret());
        if filter.len() > MAX_INSTRUCTIONS {
            return Err(Error::TooLong { len: filter.len() });
        }
        if notify {
            flags = flags | FilterFlags::NEW_LISTENER;
        }
        Ok(Program { filter, flags, arches, skipped, enosys_above })
    }

    /// The BPF program.
    pub fn instructions(&self) -> &[sock_filter] {
        &self.filter
    }

    /// The profile's flags, plus `NEW_LISTENER` when a rule uses `SCMP_ACT_NOTIFY`.
    pub fn flags(&self) -> FilterFlags {
        self.flags
    }

    /// The ABIs the filter has a section for, native first.
    pub fn arches(&self) -> &[Arch] {
        &self.arches
    }

    /// Syscall names no architecture knows, skipped under [`Options::ignore_unknown_syscalls`]
    /// (runc logs them at debug level).
    pub fn skipped_names(&self) -> &[String] {
        &self.skipped
    }

    /// With [`Options::enosys_for_newer_syscalls`]: per ABI, the highest syscall number the
    /// profile names; higher numbers get ENOSYS. Empty when the stub does not apply.
    pub fn enosys_above(&self) -> &[(Arch, u32)] {
        &self.enosys_above
    }

    /// Whether [`Program::load`] returns a NOTIFY listener fd.
    pub fn needs_listener(&self) -> bool {
        self.flags.contains(FilterFlags::NEW_LISTENER)
    }

    /// Installs the filter on the calling thread (all threads with TSYNC) with the program's
    /// flags; returns the listener fd when a rule uses NOTIFY. Does not allocate: safe to call
    /// between fork/clone and exec. The caller must have set no_new_privs or hold
    /// CAP_SYS_ADMIN (else EACCES); see [`crate::load`].
    pub fn load(&self) -> Result<Option<OwnedFd>, LoadError> {
        crate::load::load(&self.filter, self.flags)
    }
}

/// Parses an action; `errno_ret` only matters (and is only range-checked) for ERRNO/TRACE.
fn action(name: &str, errno_ret: Option<u32>, field: &str, errno_field: &str) -> Result<Action, Error> {
    let uses_errno = matches!(name, "SCMP_ACT_ERRNO" | "SCMP_ACT_TRACE");
    let errno = match errno_ret {
        Some(value) if uses_errno => Some(u16::try_from(value).map_err(|_| Error::ErrnoRange { field: errno_field.to_string(), value })?),
        _ => None,
    };
    Action::from_oci(name, errno).ok_or_else(|| Error::UnknownAction { field: field.to_string(), value: name.to_string() })
}

fn repeats_an_index(conds: &[Cond]) -> bool {
    conds.iter().enumerate().any(|(i, c)| conds[..i].iter().any(|d| d.index == c.index))
}

/// Applies the precedence rules to sorted `(nr, rule)` pairs: the first unconditional rule
/// wins outright; otherwise the conditional rules form a chain in profile order.
fn decide<'r>(hits: &[(u32, u32)], rules: &'r [Rule], wide: bool) -> Vec<(u32, Leaf<'r>)> {
    let mut out = Vec::with_capacity(hits.len());
    for group in hits.chunk_by(|a, b| a.0 == b.0) {
        let nr = group[0].0;
        let group_rules = group.iter().map(|&(_, r)| &rules[r as usize]);
        let leaf = match group_rules.clone().find(|r| r.conds.is_empty()) {
            Some(rule) => Leaf::Ret(rule.ret),
            None => Leaf::Chain { rules: group_rules.collect(), wide },
        };
        out.push((nr, leaf));
    }
    out
}

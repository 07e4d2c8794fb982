//! sysprobe: makes raw syscalls inside a test container and prints what the kernel answered,
//! so the seccomp tests can see exactly which errno, signal or result a filter produced.
//!
//! Built by the suite with plain `rustc -C target-feature=+crt-static` (a static-pie, so it runs
//! on the busybox rootfs); it uses std only, no crates, for that reason. x86_64 only where the
//! i386/x32 ABIs are involved.
//!
//! ```text
//! sysprobe STEP [-- STEP]...
//!   NR ARG...          syscall(NR, ARG...) on the native ABI        -> "RET ERRNO" (ERRNO 0 = success)
//!   i386 NR ARG...     the same through `int 0x80` (ia32 ABI, seccomp sees AUDIT_ARCH_I386;
//!                      s: strings are copied below 4 GiB)           -> "RET ERRNO"
//!   x32 NR ARG...      syscall(NR | 0x40000000, ARG...)             -> "RET ERRNO"
//!   thread NR ARG...   the call in a second thread, then the main thread reports
//!                      -> "RET ERRNO" from the thread (if it lived), then "main alive tasks=N"
//!   trap [i386] NR ARG...  with a SIGSYS handler: "sigsys code=C nr=N errno=E arch=0xA" if
//!                      SIGSYS arrived, else "RET ERRNO"; `i386`: the call goes through int 0x80
//!   usr1               install a SIGUSR1 handler (no SA_RESTART)    -> "usr1 handler"
//!   usr1count          how many SIGUSR1 arrived                     -> "usr1=N"
//!   name COMM          prctl(PR_SET_NAME, COMM)                      -> "RET ERRNO"
//!   sleep MS           sleep                                        -> "slept"
//!   loop N             N getpid calls                               -> "ns_per_call X"
//! ARG: decimal (may be negative), 0x hex, 0o octal, or s:TEXT (pointer to "TEXT\0").
//! ```
//! Every line is flushed as it is printed: a step may kill the process.

use std::ffi::CString;
use std::io::Write;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

type CLong = i64;

extern "C" {
    fn syscall(nr: CLong, ...) -> CLong;
    fn __errno_location() -> *mut i32;
    fn sigaction(sig: i32, act: *const SigAction, old: *mut SigAction) -> i32;
    fn mmap(addr: *mut u8, len: usize, prot: i32, flags: i32, fd: i32, off: i64) -> *mut u8;
}

/// glibc's `struct sigaction` on x86_64 and aarch64.
#[repr(C)]
struct SigAction {
    handler: usize,
    mask: [u64; 16],
    flags: i32,
    restorer: usize,
}

const SA_SIGINFO: i32 = 4;
const SIGUSR1: i32 = 10;
const SIGSYS: i32 = 31;
const X32_BIT: CLong = 0x4000_0000;
#[cfg(target_arch = "x86_64")]
const SYS_GETPID: CLong = 39;
#[cfg(target_arch = "x86_64")]
const SYS_PRCTL: CLong = 157;
#[cfg(target_arch = "aarch64")]
const SYS_GETPID: CLong = 172;
#[cfg(target_arch = "aarch64")]
const SYS_PRCTL: CLong = 167;

static SIGSYS_SEEN: AtomicU32 = AtomicU32::new(0);
static SIGSYS_CODE: AtomicI32 = AtomicI32::new(0);
static SIGSYS_ERRNO: AtomicI32 = AtomicI32::new(0);
static SIGSYS_NR: AtomicI32 = AtomicI32::new(0);
static SIGSYS_ARCH: AtomicU32 = AtomicU32::new(0);
static USR1: AtomicU64 = AtomicU64::new(0);

fn errno() -> i32 {
    // SAFETY: glibc's per-thread errno location is always valid for the calling thread.
    unsafe { *__errno_location() }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// One parsed argument; strings are kept alive (and, for i386, copied below 4 GiB).
fn parse_arg(a: &str, keep: &mut Vec<CString>, low: bool) -> Result<CLong, String> {
    if let Some(text) = a.strip_prefix("s:") {
        let c = CString::new(text).map_err(|_| format!("NUL in {a:?}"))?;
        if low {
            return copy_low(c.as_bytes_with_nul());
        }
        let p = c.as_ptr() as CLong;
        keep.push(c);
        return Ok(p);
    }
    let (neg, digits) = match a.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, a),
    };
    let v = if let Some(h) = digits.strip_prefix("0x") {
        u64::from_str_radix(h, 16)
    } else if let Some(o) = digits.strip_prefix("0o") {
        u64::from_str_radix(o, 8)
    } else {
        digits.parse::<u64>()
    }
    .map_err(|e| format!("bad number {a:?}: {e}"))?;
    Ok(if neg { (v as CLong).wrapping_neg() } else { v as CLong })
}

/// Copies bytes into a fresh mapping below 4 GiB (MAP_32BIT), for pointers passed through the
/// 32-bit ABI. The mapping is never unmapped: the process is short-lived.
fn copy_low(bytes: &[u8]) -> Result<CLong, String> {
    const PROT_RW: i32 = 0x1 | 0x2;
    const MAP_PRIVATE_ANON_32BIT: i32 = 0x02 | 0x20 | 0x40;
    // SAFETY: a new anonymous mapping; no existing memory is touched.
    let p = unsafe { mmap(std::ptr::null_mut(), 4096, PROT_RW, MAP_PRIVATE_ANON_32BIT, -1, 0) };
    if p as isize == -1 || bytes.len() > 4096 {
        return Err(format!("mmap MAP_32BIT: errno {}", errno()));
    }
    // SAFETY: `p` is a fresh writable mapping of 4096 bytes and bytes.len() <= 4096.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len()) };
    Ok(p as CLong)
}

fn args6(v: &[CLong]) -> [CLong; 6] {
    let mut a = [0; 6];
    for (d, s) in a.iter_mut().zip(v) {
        *d = *s;
    }
    a
}

/// syscall(2) through glibc; returns (ret, errno).
fn native(nr: CLong, a: [CLong; 6]) -> (CLong, i32) {
    // SAFETY: the test chooses the syscall and its arguments; pointers passed are kept alive
    // by the caller for the duration of the call.
    let r = unsafe { syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
    (r, if r == -1 { errno() } else { 0 })
}

/// A syscall through `int 0x80`: the kernel runs it as an ia32 (i386) syscall.
#[cfg(target_arch = "x86_64")]
fn i386(nr: CLong, a: [CLong; 6]) -> (CLong, i32) {
    let ret: i32;
    // SAFETY: int 0x80 enters the kernel's ia32 entry; rbx cannot be an asm operand, so arg0 is
    // swapped into it around the trap; the kernel may clobber r8-r11, which are declared.
    unsafe {
        std::arch::asm!(
            "xchg {b}, rbx",
            "int 0x80",
            "xchg {b}, rbx",
            b = inout(reg) a[0] as u64 => _,
            inlateout("eax") nr as i32 => ret,
            in("ecx") a[1] as u32,
            in("edx") a[2] as u32,
            in("esi") a[3] as u32,
            in("edi") a[4] as u32,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
        );
    }
    if (-4095..0).contains(&ret) {
        (-1, -ret)
    } else {
        (CLong::from(ret), 0)
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn i386(_nr: CLong, _a: [CLong; 6]) -> (CLong, i32) {
    eprintln!("sysprobe: the i386 ABI exists only on x86_64");
    std::process::exit(2)
}

extern "C" fn on_sigsys(_sig: i32, info: *mut u8, _ctx: *mut u8) {
    // SAFETY: the kernel passes a valid siginfo_t; for SIGSYS the union holds
    // {void *call_addr; int syscall; unsigned arch} at offset 16 (x86_64/aarch64 layout).
    unsafe {
        SIGSYS_ERRNO.store(*(info.add(4) as *const i32), Ordering::SeqCst);
        SIGSYS_CODE.store(*(info.add(8) as *const i32), Ordering::SeqCst);
        SIGSYS_NR.store(*(info.add(24) as *const i32), Ordering::SeqCst);
        SIGSYS_ARCH.store(*(info.add(28) as *const u32), Ordering::SeqCst);
    }
    SIGSYS_SEEN.store(1, Ordering::SeqCst);
}

extern "C" fn on_usr1(_sig: i32, _info: *mut u8, _ctx: *mut u8) {
    USR1.fetch_add(1, Ordering::SeqCst);
}

fn install(sig: i32, handler: extern "C" fn(i32, *mut u8, *mut u8)) -> Result<(), String> {
    let act = SigAction { handler: handler as usize, mask: [0; 16], flags: SA_SIGINFO, restorer: 0 };
    // SAFETY: `act` is a valid sigaction for the call; glibc supplies the restorer.
    if unsafe { sigaction(sig, &act, std::ptr::null_mut()) } != 0 {
        return Err(format!("sigaction {sig}: errno {}", errno()));
    }
    Ok(())
}

fn tasks() -> usize {
    std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0)
}

fn step(words: &[String]) -> Result<(), String> {
    let (kind, rest) = match words.first().map(String::as_str) {
        Some(k @ ("i386" | "x32" | "thread" | "trap" | "name" | "sleep" | "loop" | "usr1" | "usr1count")) => (k, &words[1..]),
        Some(_) => ("native", words),
        None => return Err("empty step".into()),
    };
    match kind {
        "usr1" => {
            install(SIGUSR1, on_usr1)?;
            say("usr1 handler");
            return Ok(());
        }
        "usr1count" => {
            say(&format!("usr1={}", USR1.load(Ordering::SeqCst)));
            return Ok(());
        }
        "sleep" => {
            let ms: u64 = rest.first().and_then(|s| s.parse().ok()).ok_or("sleep MS")?;
            std::thread::sleep(std::time::Duration::from_millis(ms));
            say("slept");
            return Ok(());
        }
        "loop" => {
            let n: u64 = rest.first().and_then(|s| s.parse().ok()).ok_or("loop N")?;
            let start = std::time::Instant::now();
            for _ in 0..n {
                native(SYS_GETPID, [0; 6]);
            }
            say(&format!("ns_per_call {}", start.elapsed().as_nanos() / u128::from(n.max(1))));
            return Ok(());
        }
        "name" => {
            let name = CString::new(rest.first().ok_or("name COMM")?.as_str()).map_err(|_| "NUL in name")?;
            const PR_SET_NAME: CLong = 15;
            let (r, e) = native(SYS_PRCTL, args6(&[PR_SET_NAME, name.as_ptr() as CLong]));
            say(&format!("{r} {e}"));
            return Ok(());
        }
        _ => {}
    }
    let trap_i386 = kind == "trap" && rest.first().is_some_and(|w| w == "i386");
    let rest = if trap_i386 { &rest[1..] } else { rest };
    let mut keep = vec![];
    let nr = parse_arg(rest.first().ok_or("missing syscall number")?, &mut keep, false)?;
    let mut vals = vec![];
    for a in &rest[1..] {
        vals.push(parse_arg(a, &mut keep, kind == "i386" || trap_i386)?);
    }
    let a = args6(&vals);
    match kind {
        "native" => {
            let (r, e) = native(nr, a);
            say(&format!("{r} {e}"));
        }
        "x32" => {
            let (r, e) = native(nr | X32_BIT, a);
            say(&format!("{r} {e}"));
        }
        "i386" => {
            let (r, e) = i386(nr, a);
            say(&format!("{r} {e}"));
        }
        "trap" => {
            install(SIGSYS, on_sigsys)?;
            let (r, e) = if trap_i386 { i386(nr, a) } else { native(nr, a) };
            if SIGSYS_SEEN.load(Ordering::SeqCst) == 1 {
                say(&format!(
                    "sigsys code={} nr={} errno={} arch={:#x}",
                    SIGSYS_CODE.load(Ordering::SeqCst),
                    SIGSYS_NR.load(Ordering::SeqCst),
                    SIGSYS_ERRNO.load(Ordering::SeqCst),
                    SIGSYS_ARCH.load(Ordering::SeqCst)
                ));
            } else {
                say(&format!("{r} {e}"));
            }
        }
        "thread" => {
            let done = std::sync::Arc::new(AtomicU32::new(0));
            let d = done.clone();
            // Not joined: a thread killed by seccomp never finishes its JoinHandle's packet.
            std::thread::spawn(move || {
                let (r, e) = native(nr, a);
                say(&format!("{r} {e}"));
                d.store(1, Ordering::SeqCst);
                drop(keep);
            });
            let start = std::time::Instant::now();
            while done.load(Ordering::SeqCst) == 0 && start.elapsed() < std::time::Duration::from_secs(3) {
                if tasks() == 1 && start.elapsed() > std::time::Duration::from_millis(50) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            say(&format!("main alive tasks={}", tasks()));
        }
        _ => unreachable!("kinds are matched above"),
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        eprintln!("usage: sysprobe STEP [-- STEP]... (see the source)");
        std::process::exit(2);
    }
    for words in args.split(|a| a == "--") {
        if let Err(e) = step(words) {
            eprintln!("sysprobe: {e}");
            std::process::exit(2);
        }
    }
}

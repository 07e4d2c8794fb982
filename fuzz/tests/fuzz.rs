//! Fuzz targets for everything capsa parses from its callers: config.json → the plan init
//! would carry out, state.json, `exec --process`, `update --resources`. Zero panics, zero
//! hangs: every input must give `Ok` or a clean error within [`HANG`].
//!
//! Inputs are the seeds in `fuzz/corpus/<target>/` with structured edits applied (a value
//! anywhere in the document replaced by an extreme number, a hostile string, a known OCI key
//! or value, or removed) plus plain random bytes. Under `cargo test` (stable) bolero
//! generates inputs for `CAPSA_FUZZ_SECS` seconds per target (default 5); with `cargo bolero
//! test -p capsa-fuzz <target>` (nightly, libFuzzer) the same targets run coverage-guided.
//! A failing input is printed; add it to the corpus once fixed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bolero::{check, TypeGenerator};
use serde_json::Value;

/// Longest any single input may take.
const HANG: Duration = Duration::from_secs(5);

fn budget() -> Duration {
    Duration::from_secs(std::env::var("CAPSA_FUZZ_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5))
}

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target)
}

fn seeds(target: &str) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir(target)).expect("corpus dir").flatten().map(|e| e.path()).collect();
    files.sort();
    files.iter().map(|f| serde_json::from_slice(&std::fs::read(f).expect("read seed")).expect("seed is JSON")).collect()
}

/// Aborts the process (so the test fails loudly) when one input runs longer than [`HANG`].
struct Watchdog {
    started_ms: Arc<AtomicU64>,
    epoch: Instant,
}

impl Watchdog {
    fn new(name: &'static str) -> Watchdog {
        let started_ms = Arc::new(AtomicU64::new(0));
        let epoch = Instant::now();
        let s = started_ms.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(200));
            let t = s.load(Ordering::SeqCst);
            if t != 0 && epoch.elapsed().as_millis() as u64 > t + HANG.as_millis() as u64 {
                eprintln!("fuzz target {name}: an input ran for more than {HANG:?} (see the last input printed above)");
                std::process::abort();
            }
        });
        Watchdog { started_ms, epoch }
    }

    fn run(&self, f: impl FnOnce()) {
        self.started_ms.store(self.epoch.elapsed().as_millis() as u64 + 1, Ordering::SeqCst);
        f();
        self.started_ms.store(0, Ordering::SeqCst);
    }
}

// ---- structured edits -------------------------------------------------------------------

#[derive(Debug, Clone, TypeGenerator)]
enum Num {
    Zero,
    One,
    MinusOne,
    I32Max,
    I32Min,
    U32Max,
    U32MaxMinus1,
    I64Max,
    I64Min,
    U64Max,
    Huge,
    Fraction,
    Any(i64),
}

impl Num {
    fn value(&self) -> Value {
        match self {
            Num::Zero => Value::from(0),
            Num::One => Value::from(1),
            Num::MinusOne => Value::from(-1),
            Num::I32Max => Value::from(i32::MAX),
            Num::I32Min => Value::from(i32::MIN),
            Num::U32Max => Value::from(u32::MAX),
            Num::U32MaxMinus1 => Value::from(u32::MAX - 1),
            Num::I64Max => Value::from(i64::MAX),
            Num::I64Min => Value::from(i64::MIN),
            Num::U64Max => Value::from(u64::MAX),
            Num::Huge => serde_json::json!(1e300),
            Num::Fraction => serde_json::json!(0.5),
            Num::Any(n) => Value::from(*n),
        }
    }
}

/// Words that mean something somewhere in the OCI config, so edits reach deep code.
const WORDS: &[&str] = &[
    "proc",
    "sysfs",
    "tmpfs",
    "bind",
    "rbind",
    "cgroup",
    "cgroup2",
    "devpts",
    "mqueue",
    "ro",
    "rw",
    "rro",
    "idmap",
    "ridmap",
    "tmpcopyup",
    "rshared",
    "runbindable",
    "private",
    "nosuid",
    "mode=755",
    "size=1",
    "/",
    "/proc",
    "/dev",
    "/dev/null",
    "/sys/fs/cgroup",
    "..",
    "../../..",
    "/proc/self/fd/3",
    "/proc/self/ns/net",
    "a",
    "c",
    "b",
    "u",
    "p",
    "rwm",
    "rwx",
    "mount",
    "network",
    "pid",
    "user",
    "uts",
    "ipc",
    "time",
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_KILL",
    "SCMP_ACT_NOTIFY",
    "SCMP_ACT_ERRNO",
    "SCMP_ARCH_X86_64",
    "SCMP_CMP_MASKED_EQ",
    "SCMP_CMP_GT",
    "CAP_SYS_ADMIN",
    "CAP_NOPE",
    "RLIMIT_NOFILE",
    "RLIMIT_BOGUS",
    "SCHED_FIFO",
    "SCHED_DEADLINE",
    "IOPRIO_CLASS_RT",
    "LINUX32",
    "0-1",
    "0,1",
    "1-0",
    "4294967295",
    "-1",
    "max",
    "2MB",
    "1GB",
    "net.ipv4.ip_forward",
    "kernel.shmmax",
    "kernel.core_pattern",
    "monotonic",
    "boottime",
    "1.0.0",
    "2.0.0",
    "",
];

#[derive(Debug, Clone, TypeGenerator)]
enum Str {
    Word(u8),
    Nul,
    Long(u16),
    Unicode,
    Bytes(Vec<u8>),
}

impl Str {
    fn value(&self) -> Value {
        Value::from(match self {
            Str::Word(i) => WORDS[*i as usize % WORDS.len()].to_string(),
            Str::Nul => "a\0b".to_string(),
            Str::Long(n) => "x".repeat(*n as usize),
            Str::Unicode => "\u{202e}ä\u{1F600}/..".to_string(),
            Str::Bytes(b) => String::from_utf8_lossy(&b[..b.len().min(64)]).into_owned(),
        })
    }
}

#[derive(Debug, Clone, TypeGenerator)]
enum New {
    Null,
    Bool(bool),
    Num(Num),
    Str(Str),
    Array(Vec<Str>),
    EmptyObject,
}

impl New {
    fn value(&self) -> Value {
        match self {
            New::Null => Value::Null,
            New::Bool(b) => Value::Bool(*b),
            New::Num(n) => n.value(),
            New::Str(s) => s.value(),
            New::Array(v) => Value::Array(v.iter().take(8).map(Str::value).collect()),
            New::EmptyObject => Value::Object(Default::default()),
        }
    }
}

/// One change to a seed document; `at` picks a node (modulo the number of nodes). Most
/// edits keep the node's JSON type, so the document still parses and the edit reaches the
/// code behind the parser.
#[derive(Debug, Clone, TypeGenerator)]
enum Edit {
    SameType {
        at: u16,
        num: Num,
        s: Str,
    },
    SameType2 {
        at: u16,
        num: Num,
        s: Str,
    },
    SameType3 {
        at: u16,
        num: Num,
        s: Str,
    },
    Replace {
        at: u16,
        with: New,
    },
    Remove {
        at: u16,
    },
    /// Adds `key` (a word) with a value to an object node, or appends to an array node.
    Add {
        at: u16,
        key: u8,
        with: New,
    },
    /// Copies one node over another.
    Copy {
        from: u16,
        to: u16,
    },
}

#[derive(Debug, Clone, TypeGenerator)]
struct Input {
    seed: u8,
    edits: Vec<Edit>,
}

/// JSON pointers of every node of `v`, in document order.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                pointers(x, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                pointers(x, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn apply(seed: &Value, edits: &[Edit]) -> Value {
    let mut doc = seed.clone();
    for e in edits.iter().take(3) {
        let mut ptrs = Vec::new();
        pointers(&doc, String::new(), &mut ptrs);
        let pick = |i: u16| ptrs[i as usize % ptrs.len()].clone();
        match e {
            Edit::SameType { at, num, s } | Edit::SameType2 { at, num, s } | Edit::SameType3 { at, num, s } => {
                if let Some(n) = doc.pointer_mut(&pick(*at)) {
                    match n {
                        Value::Number(_) => *n = num.value(),
                        Value::String(_) => *n = s.value(),
                        Value::Bool(b) => *b = !*b,
                        Value::Array(a) if !a.is_empty() => {
                            let first = a[0].clone();
                            a.push(first);
                        }
                        _ => {}
                    }
                }
            }
            Edit::Replace { at, with } => {
                if let Some(n) = doc.pointer_mut(&pick(*at)) {
                    *n = with.value();
                }
            }
            Edit::Remove { at } => {
                let p = pick(*at);
                if let Some((parent, last)) = p.rsplit_once('/') {
                    match doc.pointer_mut(parent) {
                        Some(Value::Object(m)) => {
                            m.remove(&last.replace("~1", "/").replace("~0", "~"));
                        }
                        Some(Value::Array(a)) => {
                            if let Ok(i) = last.parse::<usize>() {
                                if i < a.len() {
                                    a.remove(i);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            Edit::Add { at, key, with } => match doc.pointer_mut(&pick(*at)) {
                Some(Value::Object(m)) => {
                    m.insert(WORDS[*key as usize % WORDS.len()].to_string(), with.value());
                }
                Some(Value::Array(a)) => a.push(with.value()),
                _ => {}
            },
            Edit::Copy { from, to } => {
                let v = doc.pointer(&pick(*from)).cloned();
                if let (Some(v), Some(n)) = (v, doc.pointer_mut(&pick(*to))) {
                    *n = v;
                }
            }
        }
    }
    doc
}

// ---- the code under test ------------------------------------------------------------------

/// A bundle dir with an empty rootfs, for validation to get past `root.path`.
fn bundle() -> &'static Path {
    static B: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    B.get_or_init(|| {
        // Under cargo's scratch dir for integration tests (target/tmp), not the machine's /tmp:
        // a static lives on past the last test, so nothing removes it; one for every run.
        let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("capsa-fuzz-bundle");
        std::fs::create_dir_all(d.join("rootfs")).expect("bundle dir");
        d
    })
}

/// How far inputs got: (runs, parsed, got through validation to the deepest step).
static RUNS: AtomicU64 = AtomicU64::new(0);
static PARSED: AtomicU64 = AtomicU64::new(0);
static DEEP: AtomicU64 = AtomicU64::new(0);

fn count(parsed: bool, deep: bool) {
    RUNS.fetch_add(1, Ordering::Relaxed);
    PARSED.fetch_add(parsed as u64, Ordering::Relaxed);
    DEEP.fetch_add(deep as u64, Ordering::Relaxed);
}

/// config.json → parse → validate → the init plan and the cgroup resources, as `create`
/// computes them before it forks (nothing here mounts, forks or writes).
fn config_target(bytes: &[u8]) {
    let Ok(spec) = capsa::config::parse(bytes) else { return count(false, false) };
    let Ok(rootfs) = capsa::config::validate(&spec, bundle()) else { return count(true, false) };
    let opts = capsa::process::plan::CreateOpts::default();
    let plan = capsa::process::plan::InitPlan::build(&spec, bundle(), &rootfs, &opts, Default::default());
    count(true, plan.is_ok());
    if let Some(linux) = spec.linux() {
        let _ = capsa::cgroup::resources(linux).validate();
    }
}

fn state_target(bytes: &[u8]) {
    let Ok(state) = serde_json::from_slice::<capsa::container::State>(bytes) else { return count(false, false) };
    count(true, true);
    let _ = serde_json::to_vec(&state);
    let _ = capsa::container::status_of(&state, bundle());
    let _ = state.hook_json("running", Some(state.pid));
}

fn process_target(bytes: &[u8]) {
    let Ok(p) = serde_json::from_slice::<oci_spec::runtime::Process>(bytes) else { return count(false, false) };
    count(true, capsa::process::plan::ProcessPlan::from_spec(&p).is_ok());
    let _ = capsa::scheduling::check_lsm(&p);
}

fn resources_target(bytes: &[u8]) {
    let Ok(r) = capsa::container::update::parse_resources(bytes) else { return count(false, false) };
    count(true, capsa::cgroup::resources_from(&r).validate().is_ok());
}

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 4] =
    [("config", config_target), ("state", state_target), ("process", process_target), ("resources", resources_target)];

fn fuzz_structured(name: &'static str, target: Target) {
    let seeds = seeds(name);
    let dog = Watchdog::new(name);
    check!().with_type::<Input>().with_test_time(budget()).for_each(|input: &Input| {
        let doc = apply(&seeds[input.seed as usize % seeds.len()], &input.edits);
        let bytes = serde_json::to_vec(&doc).unwrap_or_default();
        dog.run(|| target(&bytes));
    });
    // Tests of one binary share the counters; the figures are rough but show the depth.
    eprintln!(
        "fuzz {name}: {} inputs, {} parsed, {} reached the deepest step",
        RUNS.load(Ordering::Relaxed),
        PARSED.load(Ordering::Relaxed),
        DEEP.load(Ordering::Relaxed)
    );
}

#[test]
fn corpus_replays() {
    for (name, target) in TARGETS {
        let dog = Watchdog::new(name);
        for f in std::fs::read_dir(corpus_dir(name)).expect("corpus").flatten() {
            let bytes = std::fs::read(f.path()).expect("read");
            dog.run(|| target(&bytes));
            // Every truncation of every seed, too.
            for cut in (0..bytes.len()).step_by(7) {
                dog.run(|| target(&bytes[..cut]));
            }
        }
    }
}

#[test]
fn config() {
    fuzz_structured("config", config_target);
}

#[test]
fn state() {
    fuzz_structured("state", state_target);
}

#[test]
fn process() {
    fuzz_structured("process", process_target);
}

#[test]
fn resources() {
    fuzz_structured("resources", resources_target);
}

#[test]
fn raw_bytes() {
    let dog = Watchdog::new("raw_bytes");
    check!().with_test_time(budget()).for_each(|bytes: &[u8]| {
        for (_, target) in TARGETS {
            dog.run(|| target(bytes));
        }
    });
}

use std::io::Read;
use std::path::PathBuf;

use capsa::container::update::{parse_bytes, parse_resources};
use capsa::{Error, Result};
use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxPids, LinuxResources};

use super::Cli;

/// runc's `update` flags. Memory sizes take units (`64m`, `1g`); `-1` is unlimited.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Read a linux.resources JSON document from FILE, or stdin for `-`; the other flags
    /// are ignored then.
    #[arg(short = 'r', long, value_name = "FILE")]
    pub resources: Option<PathBuf>,
    /// Block I/O weight, 10-1000.
    #[arg(long = "blkio-weight")]
    pub blkio_weight: Option<u16>,
    /// CPU CFS period in µs.
    #[arg(long = "cpu-period")]
    pub cpu_period: Option<u64>,
    /// CPU CFS quota in µs (-1 unlimited).
    #[arg(long = "cpu-quota", allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// CPU CFS burst in µs.
    #[arg(long = "cpu-burst")]
    pub cpu_burst: Option<u64>,
    /// CPU shares (relative weight).
    #[arg(long = "cpu-share")]
    pub cpu_share: Option<u64>,
    /// CPU realtime period in µs.
    #[arg(long = "cpu-rt-period")]
    pub cpu_rt_period: Option<u64>,
    /// CPU realtime runtime in µs.
    #[arg(long = "cpu-rt-runtime", allow_hyphen_values = true)]
    pub cpu_rt_runtime: Option<i64>,
    /// CPUs to use (0-3, 0,1).
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes to use.
    #[arg(long = "cpuset-mems")]
    pub cpuset_mems: Option<String>,
    /// SCHED_IDLE for the cgroup: 1 or 0.
    #[arg(long = "cpu-idle")]
    pub cpu_idle: Option<i64>,
    /// Kernel memory limit (deprecated; ignored where the kernel has none).
    #[arg(long = "kernel-memory", allow_hyphen_values = true)]
    pub kernel_memory: Option<String>,
    /// Kernel TCP buffer memory limit.
    #[arg(long = "kernel-memory-tcp", allow_hyphen_values = true)]
    pub kernel_memory_tcp: Option<String>,
    /// Memory limit.
    #[arg(long, allow_hyphen_values = true)]
    pub memory: Option<String>,
    /// Memory soft limit.
    #[arg(long = "memory-reservation", allow_hyphen_values = true)]
    pub memory_reservation: Option<String>,
    /// Memory plus swap limit.
    #[arg(long = "memory-swap", allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// Maximum number of pids (0: unchanged, -1: unlimited).
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Intel RDT L3 cache schema (not supported).
    #[arg(long = "l3-cache-schema")]
    pub l3_cache_schema: Option<String>,
    /// Intel RDT memory bandwidth schema (not supported).
    #[arg(long = "mem-bw-schema")]
    pub mem_bw_schema: Option<String>,
    pub id: String,
}

fn bytes(flag: &str, v: &Option<String>) -> Result<Option<i64>> {
    v.as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| parse_bytes(s).map_err(|e| Error::new(format!("invalid value for {flag}: {e}"))))
        .transpose()
}

/// The flags as a LinuxResources (the `--resources` shape), runc's way.
fn from_flags(a: &Args) -> Result<LinuxResources> {
    if a.l3_cache_schema.is_some() || a.mem_bw_schema.is_some() {
        return Err(Error::new("--l3-cache-schema/--mem-bw-schema: Intel RDT is not supported by capsa"));
    }
    let mut mem = LinuxMemory::default();
    mem.set_limit(bytes("memory", &a.memory)?);
    mem.set_reservation(bytes("memory-reservation", &a.memory_reservation)?);
    mem.set_swap(bytes("memory-swap", &a.memory_swap)?);
    mem.set_kernel(bytes("kernel-memory", &a.kernel_memory)?);
    mem.set_kernel_tcp(bytes("kernel-memory-tcp", &a.kernel_memory_tcp)?);
    let mut cpu = LinuxCpu::default();
    cpu.set_shares(a.cpu_share);
    cpu.set_quota(a.cpu_quota);
    cpu.set_burst(a.cpu_burst);
    cpu.set_period(a.cpu_period);
    cpu.set_realtime_period(a.cpu_rt_period);
    cpu.set_realtime_runtime(a.cpu_rt_runtime);
    cpu.set_cpus(a.cpuset_cpus.clone());
    cpu.set_mems(a.cpuset_mems.clone());
    cpu.set_idle(a.cpu_idle);
    let mut blkio = LinuxBlockIo::default();
    blkio.set_weight(a.blkio_weight);
    let mut pids = LinuxPids::default();
    pids.set_limit(a.pids_limit.unwrap_or(0));
    let mut r = LinuxResources::default();
    r.set_memory(Some(mem)).set_cpu(Some(cpu)).set_block_io(Some(blkio)).set_pids(Some(pids));
    Ok(r)
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    let res = match &a.resources {
        Some(p) => {
            let mut buf = Vec::new();
            if p.as_os_str() == "-" {
                std::io::stdin().read_to_end(&mut buf).map_err(|e| Error::from(e).context("--resources: read stdin"))?;
            } else {
                buf = std::fs::read(p).map_err(|e| Error::from(e).context(format!("--resources {}", p.display())))?;
            }
            parse_resources(&buf)?
        }
        None => from_flags(a)?,
    };
    capsa::container::update(&cli.root, &a.id, &res)?;
    Ok(0)
}

//! `stats [--no-stream] [-a] [--format F] [CONTAINER...]`: CPU %, memory, network and
//! block I/O, pids, from each container's cgroups (capsa's stats) and /proc; CPU % over
//! the interval between two samples, as docker computes it.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use serde_json::{json, Value};

use super::{Cli, Result};
use crate::container::{self, stop, Record};
use crate::format;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Show all containers (default shows just running).
    #[arg(short, long)]
    pub all: bool,
    /// Disable streaming stats and only pull the first result.
    #[arg(long = "no-stream")]
    pub no_stream: bool,
    /// Do not truncate output.
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Format output using a Go template subset.
    #[arg(long)]
    pub format: Option<String>,
    pub containers: Vec<String>,
}

#[derive(Default, Clone, Copy)]
struct Sample {
    cpu: u64,
    system: u64,
}

fn system_cpu() -> u64 {
    // /proc/stat's first line, in clock ticks → nanoseconds (docker's systemUsage).
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let total: u64 =
        s.lines().next().map(|l| l.split_whitespace().skip(1).take(7).filter_map(|v| v.parse::<u64>().ok()).sum()).unwrap_or(0);
    // SAFETY: sysconf with a constant name.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    total * (1_000_000_000 / hz)
}

fn net_io(pid: i32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap_or_default();
    let mut rx = 0;
    let mut tx = 0;
    for l in s.lines().skip(2) {
        let Some((name, rest)) = l.split_once(':') else { continue };
        if name.trim() == "lo" {
            continue;
        }
        let v: Vec<u64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        if v.len() >= 9 {
            rx += v[0];
            tx += v[8];
        }
    }
    (rx, tx)
}

fn host_memory() -> u64 {
    let s = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn binary(n: u64) -> String {
    // docker's BytesSize: binary units with 3 significant digits (KiB, MiB, GiB).
    const U: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    let s = if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
    format!("{s}{}", U[i])
}

fn row(
    state_root: &std::path::Path,
    r: &Record,
    prev: &BTreeMap<String, Sample>,
    now: &mut BTreeMap<String, Sample>,
    ncpu: f64,
    trunc: bool,
) -> BTreeMap<String, Value> {
    let mut o = BTreeMap::new();
    o.insert("ID".to_string(), json!(if trunc { r.short_id() } else { r.id.as_str() }));
    o.insert("Container".to_string(), json!(if trunc { r.short_id() } else { r.id.as_str() }));
    o.insert("Name".to_string(), json!(r.name));
    let running = stop::runtime_status(state_root, &r.id);
    let st = running
        .and_then(|_| capsa::container::Container::peek(state_root, &r.id).ok())
        .and_then(|s| capsa::cgroup::stats_paths(&s.cgroup_paths).ok());
    let Some(st) = st else {
        for k in ["CPUPerc", "MemPerc"] {
            o.insert(k.into(), json!("0.00%"));
        }
        for k in ["MemUsage", "NetIO", "BlockIO"] {
            o.insert(k.into(), json!("0B / 0B"));
        }
        o.insert("PIDs".into(), json!("0"));
        return o;
    };
    let sample = Sample { cpu: st.cpu.total, system: system_cpu() };
    now.insert(r.id.clone(), sample);
    let cpu = match prev.get(&r.id) {
        Some(p) if sample.system > p.system && sample.cpu >= p.cpu => {
            (sample.cpu - p.cpu) as f64 / (sample.system - p.system) as f64 * ncpu * 100.0
        }
        _ => 0.0,
    };
    // docker (cgroup v1): usage minus inactive file cache.
    let inactive = st.memory.raw.get("total_inactive_file").or(st.memory.raw.get("inactive_file")).copied().unwrap_or(0);
    let usage = st.memory.usage.usage.saturating_sub(inactive);
    let mut limit = st.memory.usage.limit;
    let host = host_memory();
    if limit == 0 || limit > host {
        limit = host;
    }
    let (rx, tx) = running.map(|(pid, _)| net_io(pid)).unwrap_or((0, 0));
    let (mut rd, mut wr) = (0u64, 0u64);
    for e in &st.blkio.io_service_bytes_recursive {
        match e.op.as_str() {
            "Read" | "read" => rd += e.value,
            "Write" | "write" => wr += e.value,
            _ => {}
        }
    }
    o.insert("CPUPerc".into(), json!(format!("{cpu:.2}%")));
    o.insert("MemUsage".into(), json!(format!("{} / {}", binary(usage), binary(limit))));
    o.insert("MemPerc".into(), json!(format!("{:.2}%", if limit > 0 { usage as f64 / limit as f64 * 100.0 } else { 0.0 })));
    o.insert("NetIO".into(), json!(format!("{} / {}", format::size(rx), format::size(tx))));
    o.insert("BlockIO".into(), json!(format!("{} / {}", format::size(rd), format::size(wr))));
    o.insert("PIDs".into(), json!(st.pids.current.to_string()));
    o
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    let mut store = cli.store()?;
    container::reconcile::all(cli, &mut store);
    let recs: Vec<Record> = if a.containers.is_empty() {
        container::list(&store)?.into_iter().filter(|r| a.all || r.is_active()).collect()
    } else {
        a.containers.iter().map(|n| container::find(&store, n)).collect::<Result<_>>()?
    };
    drop(store);
    let ncpu = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    let template = a.format.as_deref().map(format::Template::parse).transpose()?;
    let headers: BTreeMap<&str, &str> = [
        ("ID", "CONTAINER ID"),
        ("Container", "CONTAINER"),
        ("Name", "NAME"),
        ("CPUPerc", "CPU %"),
        ("MemUsage", "MEM USAGE / LIMIT"),
        ("MemPerc", "MEM %"),
        ("NetIO", "NET I/O"),
        ("BlockIO", "BLOCK I/O"),
        ("PIDs", "PIDS"),
    ]
    .into_iter()
    .collect();
    let mut prev = BTreeMap::new();
    let mut first = true;
    loop {
        let mut now = BTreeMap::new();
        let rows: Vec<BTreeMap<String, Value>> = recs.iter().map(|r| row(&cli.state_root, r, &prev, &mut now, ncpu, !a.no_trunc)).collect();
        prev = now;
        if first {
            // CPU % needs two samples.
            first = false;
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        let text = match &template {
            Some(t) => format::with_template(t, &headers, &rows)?,
            None => {
                let cols = ["ID", "Name", "CPUPerc", "MemUsage", "MemPerc", "NetIO", "BlockIO", "PIDs"];
                let h: Vec<&str> = cols.iter().map(|c| headers[c]).collect();
                let cells: Vec<Vec<String>> = rows
                    .iter()
                    .map(|r| cols.iter().map(|c| r.get(*c).and_then(Value::as_str).unwrap_or("").to_string()).collect())
                    .collect();
                format::table(&h, &cells)
            }
        };
        let mut out = std::io::stdout().lock();
        if !a.no_stream {
            let _ = out.write_all(b"\x1b[2J\x1b[H");
        }
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
        if a.no_stream {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(1000));
    }
}

//! `info` / `system info`: docker's system-wide summary (no daemon: the store and host).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{Cli, Result};
use crate::container;
use crate::format;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Format output using a Go template subset ({{json .}}, {{.Containers}}, ...).
    #[arg(short, long)]
    pub format: Option<String>,
}

fn kernel() -> String {
    nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default()
}

fn os_name() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string())))
        .unwrap_or_else(|| "Linux".into())
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    let mut store = cli.store()?;
    container::reconcile::all(cli, &mut store);
    let ctrs = container::list(&store)?;
    let running = ctrs.iter().filter(|c| matches!(c.state.as_str(), "running" | "starting" | "restarting")).count();
    let paused = ctrs.iter().filter(|c| c.state == "paused").count();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("MemTotal:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()))
        })
        .unwrap_or(0)
        * 1024;
    let cgroup_version = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() { "2" } else { "1" };
    let ncpu = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let arch = std::env::consts::ARCH;
    let info = json!({
        "ID": "",
        "Containers": ctrs.len(),
        "ContainersRunning": running,
        "ContainersPaused": paused,
        "ContainersStopped": ctrs.len() - running - paused,
        "Images": store.images()?.len(),
        "Driver": "overlay2",
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": cgroup_version,
        "KernelVersion": kernel(),
        "OperatingSystem": os_name(),
        "OSType": "linux",
        "Architecture": arch,
        "NCPU": ncpu,
        "MemTotal": mem,
        "DockerRootDir": store.root.display().to_string(),
        "ServerVersion": env!("CARGO_PKG_VERSION"),
        "DefaultRuntime": "capsa",
        "Runtimes": {"capsa": {"path": "capsa (library)"}},
        "SecurityOptions": ["name=seccomp,profile=builtin"],
        "Name": nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default(),
    });
    if let Some(f) = &a.format {
        let t = format::Template::parse(f)?;
        let obj: BTreeMap<String, Value> = serde_json::from_value(info).unwrap_or_default();
        println!("{}", t.render(&obj)?);
        return Ok(0);
    }
    let g = |k: &str| match &info[k] {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    println!(
        "Client:\n Version:    {}\n Context:    default (no daemon: capsactl works on the store directly)\n",
        env!("CARGO_PKG_VERSION")
    );
    println!("Server:");
    println!(" Containers: {}", g("Containers"));
    println!("  Running: {}", g("ContainersRunning"));
    println!("  Paused: {}", g("ContainersPaused"));
    println!("  Stopped: {}", g("ContainersStopped"));
    println!(" Images: {}", g("Images"));
    println!(" Server Version: {}", g("ServerVersion"));
    println!(" Storage Driver: overlay2");
    println!(" Logging Driver: json-file");
    println!(" Cgroup Driver: cgroupfs");
    println!(" Cgroup Version: {cgroup_version}");
    println!(" Runtimes: capsa");
    println!(" Default Runtime: capsa");
    println!(" Security Options:\n  seccomp\n   Profile: builtin");
    println!(" Kernel Version: {}", g("KernelVersion"));
    println!(" Operating System: {}", g("OperatingSystem"));
    println!(" OSType: linux");
    println!(" Architecture: {arch}");
    println!(" CPUs: {ncpu}");
    println!(" Total Memory: {:.2}GiB", mem as f64 / (1u64 << 30) as f64);
    println!(" Name: {}", g("Name"));
    println!(" Docker Root Dir: {}", g("DockerRootDir"));
    Ok(0)
}

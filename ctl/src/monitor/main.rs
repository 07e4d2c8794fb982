//! `capsactl-monitor`: the monitor's steady state (see watch.rs) as a binary of its own.
//!
//! The monitor lives as long as its container, one per container, so its memory counts
//! many times over. Exec'ing the whole `capsactl` for it (`capsactl __watch`) kept about
//! 4.3 MB resident, measured with /proc/PID/smaps_rollup: 2.2 MB of capsactl's own pages
//! (the loader relocating a 7 MB PIE touches its relocation table and .data.rel.ro, 300 kB
//! of that dirty), 1.9 MB of libc, libm, libgcc_s and ld.so, 0.5 MB anonymous. This binary
//! holds only the watcher, the log writer and the socket protocol; hack/build.sh links it
//! static and non-PIE (no loader, no relocations, only the libc it calls). Figures in
//! hack/bench-ctl.sh's table.
//!
//! Usage (by capsactl's monitor only): `capsactl-monitor key=value...`, as `__watch`.

#[allow(dead_code)]
#[path = "../logs/write.rs"]
mod log_write;
#[allow(dead_code)] // the parts of the protocol only capsactl's commands use
#[path = "proto.rs"]
mod proto;
#[allow(dead_code)]
#[path = "watch.rs"]
mod watch;
/// watch.rs's `crate::logs::write`.
mod logs {
    pub(crate) use super::log_write as write;
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match watch::Args::parse(&args) {
        Ok(a) => std::process::exit(watch::run(a)),
        Err(e) => {
            eprintln!("capsactl-monitor: {e}");
            std::process::exit(125);
        }
    }
}

//! `logs [-f] [--tail N] [--since T] [--until T] [-t] CONTAINER`: the container's
//! json-file log, stdout to stdout and stderr to stderr; `-f` follows until it stops.

use super::{fail, Cli, Result};
use crate::container;
use crate::logs::read;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Follow log output.
    #[arg(short, long)]
    pub follow: bool,
    /// Number of lines to show from the end of the logs ("all" for all).
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// Show logs since timestamp (e.g. 2013-01-02T13:23:37Z) or relative (e.g. 42m).
    #[arg(long)]
    pub since: Option<String>,
    /// Show logs before a timestamp or relative time.
    #[arg(long)]
    pub until: Option<String>,
    /// Show timestamps.
    #[arg(short, long)]
    pub timestamps: bool,
    /// Show extra details provided to logs.
    #[arg(long)]
    pub details: bool,
    pub container: String,
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    let mut store = cli.store()?;
    let rec = container::find(&store, &a.container)?;
    let rec =
        container::reconcile::one(&mut store, &cli.state_root, &rec)?.ok_or_else(|| fail(format!("No such container: {}", a.container)))?;
    if a.details {
        return Err(fail("logs --details: not implemented yet"));
    }
    if rec.stored.host.log_config.typ == "none" {
        return Err(fail("configured logging driver does not support reading"));
    }
    let tail = match a.tail.as_str() {
        "all" | "-1" => None,
        n => Some(n.parse::<usize>().map_err(|_| fail(format!("--tail {n}: want a number or \"all\"")))?),
    };
    let when = |s: &Option<String>, what: &str| s.as_deref().map(read::parse_when).transpose().map_err(|e| fail(format!("--{what}: {e}")));
    let opts = read::Opts { tail, since: when(&a.since, "since")?, until: when(&a.until, "until")?, timestamps: a.timestamps };
    let path = container::log_path(&container::dir(&store, &rec.id), &rec.id);
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let mut o = std::io::BufWriter::with_capacity(256 * 1024, stdout.lock());
    let mut e = std::io::BufWriter::with_capacity(64 * 1024, stderr.lock());
    let mut out = read::Out { stdout: &mut o, stderr: &mut e };
    let last = read::print(&path, &opts, &mut out).map_err(|e| fail(format!("read log: {e}")))?;
    if a.follow && rec.is_active() {
        out.stdout.flush()?;
        out.stderr.flush()?;
        // The monitor answers `wait` when the container stops; its socket closing says
        // the same (killed monitor).
        let dir = container::dir(&store, &rec.id);
        drop(store);
        if let Ok(sock) = crate::monitor::client::connect(&dir) {
            use std::os::fd::AsFd;
            crate::monitor::proto::send(sock.as_fd(), "wait", &[])?;
            read::follow(&path, last, &opts, &mut out, &sock).map_err(|e| fail(format!("follow log: {e}")))?;
        }
    }
    let _ = out.stdout.flush();
    let _ = out.stderr.flush();
    Ok(0)
}

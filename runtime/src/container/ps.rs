//! `ps`: the container's processes, as runc lists them: every pid in its cgroup (and
//! sub-cgroups), and for the table form the lines of `ps -ef` (or the caller's `ps`
//! arguments) whose PID column is one of them.

use std::path::Path;

use super::Container;
use crate::error::{Context, Error, Result};

/// Host pids of every process in the container's cgroup, sorted.
pub fn pids(root: &Path, id: &str) -> Result<Vec<i32>> {
    let c = Container::load(root, id)?;
    crate::cgroup::pids(&c.state.cgroup_paths)
}

/// Runs `ps ARGS` (`-ef` when empty) and keeps the header and the lines of `pids`.
pub fn table(pids: &[i32], ps_args: &[String]) -> Result<String> {
    let args: Vec<&str> = if ps_args.is_empty() { vec!["-ef"] } else { ps_args.iter().map(String::as_str).collect() };
    let out = std::process::Command::new("ps").args(&args).output().ctx("run ps")?;
    if !out.status.success() {
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        return Err(Error::new(format!("ps {}: {}: {}", args.join(" "), out.status, text.trim())));
    }
    filter(&String::from_utf8_lossy(&out.stdout), pids)
}

/// The filtering part of [`table`], as runc's: header, then lines whose PID field is in `pids`.
pub fn filter(output: &str, pids: &[i32]) -> Result<String> {
    let mut lines = output.lines();
    let header = lines.next().unwrap_or_default();
    let idx = header.split_whitespace().position(|f| f == "PID").ok_or_else(|| Error::new("couldn't find PID field in ps output"))?;
    let mut s = format!("{header}\n");
    for line in lines.filter(|l| !l.is_empty()) {
        let field = line.split_whitespace().nth(idx).unwrap_or_default();
        let p: i32 = field.parse().map_err(|_| Error::new(format!("unable to parse pid: {field:?}")))?;
        if pids.contains(&p) {
            s.push_str(line);
            s.push('\n');
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_by_pid_column() {
        let out = "UID PID PPID C STIME TTY TIME CMD\nroot 1 0 0 10:00 ? 00:00:01 init\nroot 42 1 0 10:00 ? 00:00:00 sleep 1\n";
        assert_eq!(filter(out, &[42]).ok().as_deref(), Some("UID PID PPID C STIME TTY TIME CMD\nroot 42 1 0 10:00 ? 00:00:00 sleep 1\n"));
        assert!(filter("USER X\n", &[1]).is_err());
        assert!(filter("PID\nabc\n", &[1]).is_err());
    }
}

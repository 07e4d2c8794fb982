//! Small cgroupfs helpers shared by the v1, v2 and hybrid managers: read/write a control
//! file with an error naming the file, create/remove directories (and remember which ones a
//! manager made), list and signal member processes, freeze and thaw.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::resources::field;

/// How long `rmdir` retries EBUSY: tasks that were just killed linger in the cgroup until the
/// kernel has finished tearing them down.
const RMDIR_TIMEOUT: Duration = Duration::from_secs(1);
/// How long freeze/thaw wait for the kernel to report the new state.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(2);

/// Reads a control file, trimmed of the trailing newline.
pub(crate) fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map(|s| s.trim_end().to_string()).map_err(|e| Error::io("read", path, e))
}

/// Writes `value` to an existing control file in a single `write(2)` (cgroupfs parses each
/// write on its own). Never creates the file.
pub(crate) fn write(path: &Path, value: &str) -> Result<()> {
    let mut f = fs::OpenOptions::new().write(true).open(path).map_err(|e| Error::io("write", path, e))?;
    f.write_all(value.as_bytes()).map_err(|e| Error::io("write", path, e))
}

/// Parses a control file holding one integer.
pub(crate) fn read_i128(path: &Path) -> Result<i128> {
    let s = read(path)?;
    s.parse().map_err(|_| Error::Msg(format!("read {}: unexpected content {s:?}", path.display())))
}

/// Creates `leaf` and any missing parents below `mount` (mode 0755), appending every
/// directory it actually created to `created`, parents first. Existing directories are fine.
/// A shared parent another container's delete removes at the wrong moment (it was empty
/// between our mkdir of it and of the next level) is made again: a few rounds, then the error.
pub(crate) fn mkdir_all(mount: &Path, leaf: &Path, created: &mut Vec<PathBuf>) -> Result<()> {
    let rel = leaf.strip_prefix(mount).map_err(|_| Error::Msg(format!("{} is not inside {}", leaf.display(), mount.display())))?;
    let mut round = 0;
    'again: loop {
        let mut dir = mount.to_path_buf();
        for part in rel.components() {
            dir.push(part);
            match fs::DirBuilder::new().mode(0o755).create(&dir) {
                Ok(()) => created.push(dir.clone()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound && round < 10 => {
                    round += 1;
                    continue 'again;
                }
                Err(e) => return Err(Error::io("mkdir", &dir, e)),
            }
        }
        return Ok(());
    }
}

/// Removes the cgroup `dir` and every cgroup below it, deepest first. A missing directory is
/// success. EBUSY (tasks still leaving) is retried for up to [`RMDIR_TIMEOUT`].
pub(crate) fn remove_tree(dir: &Path) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("open", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read", dir, e))?;
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_tree(&entry.path())?;
        }
    }
    let deadline = Instant::now() + RMDIR_TIMEOUT;
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => sleep(Duration::from_millis(10)),
            Err(e) => {
                let err = Error::io("rmdir", dir, e);
                return Err(match procs_in(dir) {
                    Ok(p) if !p.is_empty() => err.with_note(format!("cgroup still has processes {p:?}")),
                    _ => err,
                });
            }
        }
    }
}

/// One `rmdir` attempt, for parent directories we created: if another container now lives
/// below it (EBUSY) or it is gone, leave it.
pub(crate) fn rmdir_if_unused(dir: &Path) {
    let _ = fs::remove_dir(dir);
}

/// The directories one manager instance created, parents first: `create` records them, and
/// `destroy` removes those that nothing else uses (a manager rebuilt from paths in another
/// process has none, so it removes the leaf only).
#[derive(Debug, Default)]
pub(crate) struct Created(Mutex<Vec<PathBuf>>);

impl Created {
    /// Runs `make`, which pushes every directory it creates. On failure those are removed
    /// again, deepest first, and the error returned: a failed create leaves nothing behind.
    pub(crate) fn record(&self, make: impl FnOnce(&mut Vec<PathBuf>) -> Result<()>) -> Result<()> {
        let mut made = Vec::new();
        if let Err(e) = make(&mut made) {
            for d in made.iter().rev() {
                rmdir_if_unused(d);
            }
            return Err(e);
        }
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend(made);
        Ok(())
    }

    /// The recorded directories, parents first.
    pub(crate) fn list(&self) -> Vec<PathBuf> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Takes over directories another instance recorded (a container's state, for `delete`
    /// in another process). Each must be one of `dirs` (the manager's own: mount point and
    /// leaf) or a parent of one, strictly below that hierarchy's mount point; anything else
    /// is refused, naming it, and nothing is taken.
    pub(crate) fn adopt(&self, recorded: &[PathBuf], dirs: &[(&Path, &Path)]) -> Result<()> {
        for d in recorded {
            let clean = d.is_absolute() && d.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
            let ours = dirs.iter().any(|(mount, leaf)| d.starts_with(mount) && d != mount && leaf.starts_with(d));
            if !clean || !ours {
                return Err(Error::Msg(format!(
                    "created cgroup directory {}: not the container's cgroup or one of its parents below a hierarchy's mount point",
                    d.display()
                )));
            }
        }
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend(recorded.iter().cloned());
        Ok(())
    }

    /// Removes every recorded directory that is unused now, deepest first, and forgets them.
    pub(crate) fn remove_unused(&self) {
        let made = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        for d in made.iter().rev() {
            rmdir_if_unused(d);
        }
    }
}

/// `checkBeforeUpdate`: refuses `limit` below the usage in `usage_file` (v1
/// `memory.usage_in_bytes`, v2 `memory.current`).
pub(crate) fn check_usage(usage_file: &Path, limit: i64) -> Result<()> {
    let usage = read_i128(usage_file).map_err(|e| e.field(field::MEMORY_LIMIT, limit))?;
    if i128::from(limit) < usage {
        return Err(
            Error::Msg(format!("below the current usage of {usage} bytes (checkBeforeUpdate is set)")).field(field::MEMORY_LIMIT, limit)
        );
    }
    Ok(())
}

/// Parses `cgroup.procs` text. Zeros (processes of another pid namespace) are dropped: a 0
/// would make kill(2) signal our own process group.
pub(crate) fn parse_procs(text: &str) -> Vec<i32> {
    text.lines().filter_map(|l| l.trim().parse::<i32>().ok()).filter(|p| *p > 0).collect()
}

/// Processes directly in `dir` (its `cgroup.procs`).
pub(crate) fn procs_in(dir: &Path) -> Result<Vec<i32>> {
    Ok(parse_procs(&read(&dir.join("cgroup.procs"))?))
}

/// Processes in `dir` and every cgroup below it, sorted, without duplicates.
pub(crate) fn procs_recursive(dir: &Path) -> Result<Vec<i32>> {
    let mut pids = procs_in(dir)?;
    let entries = fs::read_dir(dir).map_err(|e| Error::io("open", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read", dir, e))?;
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            match procs_recursive(&entry.path()) {
                Ok(p) => pids.extend(p),
                // A child cgroup removed while we walk is not an error.
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
    }
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

/// The freezer of a cgroup: v1 `freezer.state` or v2 `cgroup.freeze`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Freezer {
    /// Directory in the v1 freezer hierarchy.
    V1(PathBuf),
    /// Directory in a cgroup2 hierarchy.
    V2(PathBuf),
}

impl Freezer {
    /// Freezes every task and waits until the kernel reports the cgroup frozen. On timeout
    /// the cgroup is thawed again and an error returned.
    pub(crate) fn freeze(&self) -> Result<()> {
        let deadline = Instant::now() + FREEZE_TIMEOUT;
        match self {
            Freezer::V1(dir) => {
                let state = dir.join("freezer.state");
                loop {
                    // Writing FROZEN again makes the kernel retry tasks that were busy
                    // (e.g. in vfork) the first time, as runc does.
                    write(&state, "FROZEN")?;
                    if read(&state)? == "FROZEN" {
                        return Ok(());
                    }
                    if Instant::now() >= deadline {
                        let _ = write(&state, "THAWED");
                        return Err(Error::Msg(format!(
                            "freeze {}: still FREEZING after {FREEZE_TIMEOUT:?}; thawed it again",
                            dir.display()
                        )));
                    }
                    sleep(Duration::from_millis(1));
                }
            }
            Freezer::V2(dir) => {
                write(&dir.join("cgroup.freeze"), "1")?;
                if wait_events_frozen(dir, true, deadline)? {
                    return Ok(());
                }
                let _ = write(&dir.join("cgroup.freeze"), "0");
                Err(Error::Msg(format!(
                    "freeze {}: cgroup.events did not report frozen after {FREEZE_TIMEOUT:?}; thawed it again",
                    dir.display()
                )))
            }
        }
    }

    /// Thaws every task and waits until the kernel reports it.
    pub(crate) fn thaw(&self) -> Result<()> {
        let deadline = Instant::now() + FREEZE_TIMEOUT;
        let ok = match self {
            Freezer::V1(dir) => {
                let state = dir.join("freezer.state");
                loop {
                    write(&state, "THAWED")?;
                    if read(&state)? == "THAWED" {
                        break true;
                    }
                    if Instant::now() >= deadline {
                        break false;
                    }
                    sleep(Duration::from_millis(1));
                }
            }
            Freezer::V2(dir) => {
                write(&dir.join("cgroup.freeze"), "0")?;
                wait_events_frozen(dir, false, deadline)?
            }
        };
        if ok {
            Ok(())
        } else {
            Err(Error::Msg(format!("thaw {}: not thawed after {FREEZE_TIMEOUT:?}", self.dir().display())))
        }
    }

    /// Whether the cgroup is (being) frozen: v1 `freezer.state` is FROZEN (or FREEZING, a
    /// freeze in progress); v2 `cgroup.freeze` is 1 (the requested state, as runc reads it).
    pub(crate) fn is_frozen(&self) -> Result<bool> {
        Ok(match self {
            Freezer::V1(dir) => read(&dir.join("freezer.state"))? != "THAWED",
            Freezer::V2(dir) => read(&dir.join("cgroup.freeze"))? == "1",
        })
    }

    fn dir(&self) -> &Path {
        match self {
            Freezer::V1(d) | Freezer::V2(d) => d,
        }
    }
}

/// Polls `cgroup.events` until its `frozen` key equals `want`; false on timeout.
fn wait_events_frozen(dir: &Path, want: bool, deadline: Instant) -> Result<bool> {
    let events = dir.join("cgroup.events");
    let want = if want { "frozen 1" } else { "frozen 0" };
    loop {
        if read(&events)?.lines().any(|l| l.trim() == want) {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        sleep(Duration::from_millis(1));
    }
}

/// Sends `sig` to every process of the cgroup tree at `procs_dir`, the way runc does:
///
/// 1. For SIGKILL, if `kill_dir` (a cgroup2 directory) has `cgroup.kill`, write 1 to it: the
///    kernel kills every task atomically, including ones being forked. Done.
/// 2. Otherwise freeze (best effort) so no process can fork a new one between listing and
///    signalling, signal every pid (ESRCH ignored), and thaw again. A cgroup that was already
///    frozen (a paused container) stays frozen unless the signal is SIGKILL, which needs the
///    tasks thawed to die.
pub(crate) fn kill_all(procs_dir: &Path, kill_dir: Option<&Path>, freezer: Option<&Freezer>, sig: i32) -> Result<()> {
    if sig == libc::SIGKILL {
        if let Some(dir) = kill_dir {
            match write(&dir.join("cgroup.kill"), "1") {
                Ok(()) => return Ok(()),
                Err(e) if e.is_not_found() && dir.exists() => {} // kernel < 5.14: fall back
                Err(e) => return Err(e),
            }
        }
    }
    let was_frozen = freezer.map(|f| f.is_frozen().unwrap_or(false)).unwrap_or(false);
    // Freezing is an optimisation against fork races; signalling still works without it.
    let froze = !was_frozen && freezer.is_some_and(|f| f.freeze().is_ok());
    let result = procs_recursive(procs_dir).and_then(|pids| {
        for pid in pids {
            // SAFETY: kill(2) only takes two integers and touches no memory; pid > 0 is
            // guaranteed by parse_procs, so this never targets a process group.
            if unsafe { libc::kill(pid, sig) } != 0 {
                let err = io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::ESRCH) {
                    return Err(Error::Msg(format!("kill {pid} with signal {sig}: {err}")));
                }
            }
        }
        Ok(())
    });
    if froze || (was_frozen && sig == libc::SIGKILL) {
        if let Some(f) = freezer {
            f.thaw()?;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn procs_parsing_drops_zero_and_garbage() {
        assert_eq!(parse_procs("12\n0\n\n 7 \nx\n-3\n"), vec![12, 7]);
    }

    #[test]
    fn mkdir_all_records_only_new_dirs_and_remove_tree_is_deepest_first() {
        let base = std::env::temp_dir().join(format!("capsa-cgroups-fs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(base.join("a")).ok();
        let mut created = Vec::new();
        let r = mkdir_all(&base, &base.join("a/b/c"), &mut created);
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(created, vec![base.join("a/b"), base.join("a/b/c")]);
        // Idempotent: nothing new the second time.
        let mut again = Vec::new();
        assert!(mkdir_all(&base, &base.join("a/b/c"), &mut again).is_ok());
        assert!(again.is_empty());
        fs::create_dir_all(base.join("a/b/c/nested/deeper")).ok();
        assert!(remove_tree(&base.join("a/b")).is_ok());
        assert!(!base.join("a/b").exists());
        assert!(base.join("a").exists());
        assert!(remove_tree(&base.join("a/b")).is_ok(), "missing is fine");
        assert!(mkdir_all(&base, Path::new("/elsewhere"), &mut again).is_err());
        let _ = fs::remove_dir_all(&base);
        assert!(!base.exists());
    }
}

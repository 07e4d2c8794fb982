//! `exec [-d] [-i] [-t] [-u USER] [-w DIR] [-e K=V] CONTAINER COMMAND...`: one more
//! process in a running container, through the capsa library (this process is its
//! parent, as `capsa exec` is): stdio passed straight through, or with `-t` a pty that we
//! proxy (raw mode, window size), the exit code passed back.

use std::os::fd::AsFd;

use nix::sys::signal::SigmaskHow;

use capsa::container::{foreground, ExecArgs};

use super::{fail, Cli, Failure, Result};
use crate::container::{self, start::start_failure, stop};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Detached mode: run command in the background.
    #[arg(short, long)]
    pub detach: bool,
    /// Keep STDIN open even if not attached.
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY.
    #[arg(short, long)]
    pub tty: bool,
    /// Username or UID (format: <name|uid>[:<group|gid>]).
    #[arg(short, long)]
    pub user: Option<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Set environment variables.
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Read in a file of environment variables.
    #[arg(long = "env-file")]
    pub env_file: Vec<std::path::PathBuf>,
    /// Give extended privileges to the command.
    #[arg(long)]
    pub privileged: bool,
    pub container: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<String>,
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    let mut store = cli.store()?;
    let rec = container::find(&store, &a.container)?;
    let rec =
        container::reconcile::one(&mut store, &cli.state_root, &rec)?.ok_or_else(|| fail(format!("No such container: {}", a.container)))?;
    drop(store);
    match stop::runtime_status(&cli.state_root, &rec.id) {
        None => return Err(fail(format!("container {} is not running", rec.id))),
        Some((_, capsa::container::Status::Paused)) => {
            return Err(fail(format!("Container {} is paused, unpause the container before exec", rec.id)))
        }
        _ => {}
    }
    if a.detach && a.tty {
        return Err(fail("exec -d -t: a detached terminal is not supported (use -d without -t)"));
    }
    let mut p = capsa::container::container_process(&cli.state_root, &rec.id)?;
    p.set_args(Some(a.command.clone()));
    if let Some(w) = &a.workdir {
        if !w.starts_with('/') {
            return Err(fail(format!("exec -w {w}: the working directory must be an absolute path")));
        }
        p.set_cwd(w.into());
    }
    let mut env = p.env().clone().unwrap_or_default();
    let mut extra = Vec::new();
    for f in &a.env_file {
        let text = std::fs::read_to_string(f).map_err(|e| fail(format!("--env-file {}: {e}", f.display())))?;
        extra.extend(text.lines().map(str::trim_start).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string));
    }
    extra.extend(a.env.iter().cloned());
    for e in extra {
        let (k, v) = match e.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (e.clone(), std::env::var(&e).ok()),
        };
        env.retain(|x| x.split_once('=').map(|(n, _)| n) != Some(k.as_str()));
        if let Some(v) = v {
            env.push(format!("{k}={v}"));
        }
    }
    if a.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    p.set_env(Some(env));
    p.set_terminal(Some(a.tty));
    // The pty starts at our terminal's size (the process may ask before any resize).
    let size = crate::monitor::client::term_size().filter(|_| a.tty);
    p.set_console_size(
        size.map(|(h, w)| oci_spec::runtime::BoxBuilder::default().height(h as u64).width(w as u64).build())
            .transpose()
            .map_err(|e| fail(format!("console size: {e}")))?,
    );
    if a.privileged {
        let all: Vec<String> = container::spec::capabilities(true, &[], &[]);
        let caps: std::collections::HashSet<oci_spec::runtime::Capability> =
            all.iter().filter_map(|c| serde_json::from_value(serde_json::Value::String(c.clone())).ok()).collect();
        let mut c = p.capabilities().clone().unwrap_or_default();
        c.set_bounding(Some(caps.clone()));
        c.set_effective(Some(caps.clone()));
        c.set_permitted(Some(caps));
        p.set_capabilities(Some(c));
    }
    if let Some(u) = &a.user {
        // Resolved in the container's own /etc/passwd and /etc/group (read inside its
        // rootfs by capsa_sys::Root), as `run -u` is.
        let rootfs = container::dir(&cli.store()?, &rec.id).join("rootfs");
        let root = capsa_sys::Root::open(&rootfs).map_err(|e| fail(format!("rootfs {}: {e}", rootfs.display())))?;
        let r = capsa_image::runspec::resolve_user(&root, u).map_err(|e| fail(format!("exec -u: {e}")))?;
        let mut usr = p.user().clone();
        usr.set_uid(r.uid);
        usr.set_gid(r.gid);
        usr.set_additional_gids((!r.additional_gids.is_empty()).then_some(r.additional_gids));
        p.set_user(usr);
    }
    let sigs = foreground::forwarded();
    if !a.detach {
        // SAFETY: prctl with integer arguments only: we wait for a grandchild.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&sigs), None).map_err(|e| fail(format!("block signals: {e}")))?;
    }
    // Without -i the process gets an empty stdin; detached, no stdio of ours at all.
    let null = std::fs::File::options().read(true).write(true).open("/dev/null")?;
    let saved_err = std::io::stderr().as_fd().try_clone_to_owned().ok();
    if !a.interactive || a.detach {
        let _ = nix::unistd::dup2_stdin(&null);
    }
    if a.detach {
        let _ = nix::unistd::dup2_stdout(&null);
        let _ = nix::unistd::dup2_stderr(&null);
    }
    let (ours, theirs) = if a.tty {
        let (x, y) = capsa::tty::socketpair()?;
        (Some(x), Some(y))
    } else {
        (None, None)
    };
    // Single-threaded for the fork (a reconcile above may have torn a network down).
    capsa_network::nftnl::settle();
    let pid = capsa::container::exec(ExecArgs {
        root: &cli.state_root,
        id: &rec.id,
        process: p,
        named_user: None,
        console_socket: None,
        console_fd: theirs,
        pid_file: None,
        preserve_fds: 0,
        ignore_paused: false,
        sub_cgroups: &[],
    });
    if a.detach {
        if let Some(e) = &saved_err {
            let _ = nix::unistd::dup2_stderr(e);
        }
    }
    let pid = pid.map_err(|e| {
        let f = start_failure(e.to_string());
        Failure {
            msg: format!("OCI runtime exec failed: {}", f.msg.trim_start_matches("exec: ")),
            code: if f.code == 125 { 126 } else { f.code },
        }
    })?;
    if a.detach {
        return Ok(0);
    }
    let master = match &ours {
        Some(s) => Some(capsa::tty::recv_fd(s.as_fd())?),
        None => None,
    };
    Ok(foreground::wait(pid, &sigs, master)?)
}

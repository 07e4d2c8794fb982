//! `exec`: a process spec from `--process FILE` (containerd's way) or from the container's
//! own process settings plus runc's flags; then detach or wait in the foreground.

use std::path::PathBuf;

use nix::sys::signal::SigmaskHow;

use capsa::container::{self, ExecArgs};
use capsa::error::Context;
use capsa::process::exec::NamedUser;
use capsa::{bail, Result};

use super::Cli;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// JSON file with the process to run (an OCI `process` object).
    #[arg(short = 'p', long, value_name = "FILE")]
    pub process: Option<PathBuf>,
    /// Unix socket that receives the pty master when a terminal is used.
    #[arg(long = "console-socket", value_name = "PATH")]
    pub console_socket: Option<PathBuf>,
    /// Working directory inside the container.
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Extra environment variable KEY=VALUE (repeatable).
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Allocate a pseudo-TTY.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// User: uid[:gid] or name[:group] (looked up in the container).
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Additional group ids (repeatable).
    #[arg(short = 'g', long = "additional-gids")]
    pub additional_gids: Vec<u32>,
    /// SELinux label for the process.
    #[arg(long = "process-label")]
    pub process_label: Option<String>,
    /// AppArmor profile for the process.
    #[arg(long)]
    pub apparmor: Option<String>,
    /// Do not wait for the process.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// File to write the process's pid to.
    #[arg(long = "pid-file", value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
    /// Set no_new_privs for the process.
    #[arg(long = "no-new-privs")]
    pub no_new_privs: bool,
    /// Add a capability (repeatable), e.g. CAP_NET_ADMIN.
    #[arg(short = 'c', long = "cap")]
    pub cap: Vec<String>,
    /// Pass N extra fds (3..3+N) to the process.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    /// Run the process in an (existing) sub-cgroup(s). Format is [<controller>:]<cgroup> (repeatable).
    #[arg(long)]
    pub cgroup: Vec<String>,
    /// Allow exec in a paused container.
    #[arg(long = "ignore-paused")]
    pub ignore_paused: bool,
    pub id: String,
    /// The command and its arguments (without --process).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

fn read_process(path: &std::path::Path) -> Result<oci_spec::runtime::Process> {
    let text = std::fs::read(path).with_ctx(|| format!("--process {}", path.display()))?;
    let mut v: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| capsa::Error::new(format!("--process {}: {e}", path.display())))?;
    // runc's process.json may leave `user` out: uid 0, gid 0.
    if let Some(obj) = v.as_object_mut() {
        obj.entry("user").or_insert_with(|| serde_json::json!({"uid": 0, "gid": 0}));
    }
    serde_path_to_error::deserialize(v).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        if field.is_empty() || field == "." {
            capsa::Error::new(format!("--process {}: {inner}", path.display()))
        } else {
            capsa::Error::new(format!("--process {}: process.{field}: {inner}", path.display()))
        }
    })
}

/// runc's exec: the container's process, with the flags applied on top.
fn inline_process(cli: &Cli, a: &Args) -> Result<(oci_spec::runtime::Process, Option<NamedUser>)> {
    let mut p = container::container_process(&cli.root, &a.id)?;
    p.set_args(Some(a.command.clone()));
    if let Some(cwd) = &a.cwd {
        p.set_cwd(cwd.clone());
    }
    let mut env = p.env().clone().unwrap_or_default();
    env.extend(a.env.iter().cloned());
    p.set_env(Some(env));
    p.set_terminal(Some(a.tty));
    if a.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    let mut named = None;
    if let Some(u) = &a.user {
        let (user, group) = match u.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (u.as_str(), None),
        };
        let mut usr = p.user().clone();
        match user.parse::<u32>() {
            Ok(uid) => {
                usr.set_uid(uid);
                if let Some(g) = group {
                    match g.parse::<u32>() {
                        Ok(gid) => {
                            usr.set_gid(gid);
                        }
                        Err(_) => named = Some(NamedUser { user: uid.to_string(), group: Some(g.to_string()) }),
                    }
                }
            }
            Err(_) => named = Some(NamedUser { user: user.to_string(), group: group.map(str::to_string) }),
        }
        p.set_user(usr);
    }
    if !a.additional_gids.is_empty() {
        let mut usr = p.user().clone();
        usr.set_additional_gids(Some(a.additional_gids.clone()));
        p.set_user(usr);
    }
    if !a.cap.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        for name in &a.cap {
            let full = if name.to_ascii_uppercase().starts_with("CAP_") {
                name.to_ascii_uppercase()
            } else {
                format!("CAP_{}", name.to_ascii_uppercase())
            };
            let cap: oci_spec::runtime::Capability = serde_json::from_value(serde_json::Value::String(full.clone()))
                .map_err(|_| capsa::Error::new(format!("--cap {name:?}: unknown capability")))?;
            let with = |set: &Option<oci_spec::runtime::Capabilities>| {
                let mut s = set.clone().unwrap_or_default();
                s.insert(cap);
                Some(s)
            };
            let (b, e, p) = (with(caps.bounding()), with(caps.effective()), with(caps.permitted()));
            caps.set_bounding(b);
            caps.set_effective(e);
            caps.set_permitted(p);
            // Ambient needs the capability in inheritable; runc only adds it when the
            // process already has inheritable capabilities.
            if caps.inheritable().as_ref().is_some_and(|i| !i.is_empty()) {
                let mut amb = caps.ambient().clone().unwrap_or_default();
                amb.insert(cap);
                caps.set_ambient(Some(amb));
            }
        }
        p.set_capabilities(Some(caps));
    }
    Ok((p, named))
}

/// runc's exit codes: 1 for a bad command line, 255 for a failure of exec itself (no such
/// container, a paused one, a missing binary, an unwritable pid file), so a caller cannot
/// mistake it for the exit code of the process.
pub fn run(cli: &Cli, a: &Args) -> super::Outcome {
    if a.process.is_some() && !a.command.is_empty() {
        return Err(capsa::Error::new("exec: give either --process FILE or a command, not both").into());
    }
    if a.process.is_none() && a.command.is_empty() {
        return Err(capsa::Error::new("exec: a command is required (or --process FILE)").into());
    }
    exec(cli, a).map_err(|e| super::Failure { code: 255, error: e.context("exec failed") })
}

fn exec(cli: &Cli, a: &Args) -> Result<i32> {
    let (mut process, named_user) = match &a.process {
        Some(f) => (read_process(f)?, None),
        None => inline_process(cli, a)?,
    };
    if let Some(p) = &a.apparmor {
        process.set_apparmor_profile(Some(p.clone()));
    }
    if let Some(l) = &a.process_label {
        process.set_selinux_label(Some(l.clone()));
    }
    let terminal = process.terminal().unwrap_or(false);
    let own_tty = terminal && a.console_socket.is_none() && !a.detach;
    if terminal && a.detach && a.console_socket.is_none() {
        bail!("exec: --tty with --detach needs --console-socket");
    }
    let sigs = super::foreground::forwarded();
    if !a.detach {
        // We wait for a grandchild: become its reaper, and hold signals until we forward them.
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&sigs), None).ctx("block signals")?;
    }
    let (ours, theirs) = if own_tty {
        let (x, y) = capsa::tty::socketpair()?;
        (Some(x), Some(y))
    } else {
        (None, None)
    };
    let pid = container::exec(ExecArgs {
        root: &cli.root,
        id: &a.id,
        process,
        named_user,
        console_socket: a.console_socket.as_deref(),
        console_fd: theirs,
        pid_file: a.pid_file.as_deref(),
        preserve_fds: i32::try_from(a.preserve_fds).unwrap_or(i32::MAX),
        ignore_paused: a.ignore_paused,
        sub_cgroups: &a.cgroup,
    })?;
    log::debug!("exec into container {}: pid {pid}", a.id);
    if a.detach {
        return Ok(0);
    }
    let master = match &ours {
        Some(s) => Some(capsa::tty::recv_fd(std::os::fd::AsFd::as_fd(s))?),
        None => None,
    };
    super::foreground::wait(pid, &sigs, master)
}

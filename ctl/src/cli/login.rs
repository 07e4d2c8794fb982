//! `login [-u USER] [-p PASS | --password-stdin] [SERVER]`: checks the credentials against
//! the registry (Basic: `/v2/` with them; Bearer: a token asked for with them) and stores
//! them in docker's config.json (or its credential helper), so docker and capsactl share
//! them. SERVER defaults to docker.io.

use std::io::{BufRead, IsTerminal, Read, Write};

use capsa_registry::auth::{server_key, Credentials, DockerConfig};
use capsa_registry::client::Client;
use capsa_registry::Settings;

use super::{fail, Cli, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password (visible to other users of this machine: prefer --password-stdin).
    #[arg(short, long)]
    pub password: Option<String>,
    /// Take the password from STDIN.
    #[arg(long = "password-stdin")]
    pub password_stdin: bool,
    /// The registry (`host[:port]`); default docker.io.
    pub server: Option<String>,
}

/// `https://reg:5000/v1/` → `reg:5000` (docker accepts URLs); none → docker.io.
pub fn server_domain(server: Option<&str>) -> String {
    let s = server.unwrap_or("docker.io");
    let s = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://")).unwrap_or(s);
    let host = s.split('/').next().unwrap_or(s);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "" => "docker.io".to_string(),
        h => h.to_string(),
    }
}

pub fn run(_cli: &Cli, a: &Args) -> Result<i32> {
    let domain = server_domain(a.server.as_deref());
    let stdin_tty = std::io::stdin().is_terminal();
    if a.password.is_some() && a.password_stdin {
        return Err(fail("--password and --password-stdin are mutually exclusive"));
    }
    let username = match &a.username {
        Some(u) => u.clone(),
        None if a.password_stdin => return Err(fail("Must provide --username with --password-stdin")),
        None if stdin_tty => prompt("Username: ")?,
        None => return Err(fail("Cannot perform an interactive login from a non TTY device: use -u and --password-stdin")),
    };
    let password = if let Some(p) = &a.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p.clone()
    } else if a.password_stdin {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s.trim_end_matches(['\n', '\r']).to_string()
    } else if stdin_tty {
        prompt_hidden("Password: ")?
    } else {
        return Err(fail("Cannot perform an interactive login from a non TTY device: use -u and --password-stdin"));
    };
    if username.is_empty() || password.is_empty() {
        return Err(fail("Error: Username and password are required"));
    }
    let creds = Credentials { username, password };
    let settings = Settings::from_env()?;
    let ep = settings.push_endpoint(&domain);
    let c = Client::connect(&settings, &ep, Vec::new(), Some(creds.clone()))?;
    c.check_login().map_err(|e| fail(format!("login to {domain}: {e}")))?;
    let key = server_key(&domain);
    let mut cfg = DockerConfig::load(&settings.docker_config)?;
    cfg.store(&key, &creds)?;
    let raw = std::fs::read_to_string(&settings.docker_config).unwrap_or_default();
    if raw.contains(&key) {
        eprintln!("WARNING! Your password will be stored unencrypted in {}.", settings.docker_config.display());
    }
    println!("Login Succeeded");
    Ok(0)
}

fn prompt(what: &str) -> Result<String> {
    eprint!("{what}");
    let _ = std::io::stderr().flush();
    let mut s = String::new();
    std::io::stdin().lock().read_line(&mut s)?;
    Ok(s.trim().to_string())
}

/// Reads a line from the terminal with echo off.
fn prompt_hidden(what: &str) -> Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).map_err(|e| fail(format!("terminal: {e}")))?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet).map_err(|e| fail(format!("terminal: {e}")))?;
    let r = prompt(what);
    let _ = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
    eprintln!();
    r
}

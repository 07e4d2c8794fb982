//! runc's logging contract: `--log FILE` (default stderr) in `text` or `json` format, debug
//! lines with `--debug`. containerd reads the last `"level":"error"` line of the JSON file and
//! shows its `msg`. With a log file the error also goes to stderr as a plain line, as runc does.
//!
//! The library logs through the `log` facade (it never prints); this module is the logger the
//! binary installs. Only the process that installed it writes: a forked child (stage 1, init,
//! exec's children) inherits the logger but not the right to use it — after pivot_root the
//! log path would resolve inside the container's rootfs, and stderr is the container's.

use std::io::Write;
use std::path::PathBuf;

struct Logger {
    file: Option<PathBuf>,
    json: bool,
    /// The process that installed the logger.
    pid: u32,
}

/// `--log`, `--log-format`, `--debug`. runc opens (creates) the log file at start, whatever
/// the level; so does this. The file is reopened for each line, so no descriptor of ours is
/// held open where `--preserve-fds` or the container's init could inherit it.
pub fn init(file: Option<&std::path::Path>, format: &str, debug: bool) -> capsa::Result<()> {
    let file = file.map(|f| std::path::absolute(f).unwrap_or_else(|_| f.to_path_buf()));
    if let Some(f) = &file {
        // runc fails the command when it cannot open its log file.
        open(f).map_err(|e| capsa::Error::from(e).context(format!("--log {}", f.display())))?;
    }
    let logger = Logger { file, json: format == "json", pid: std::process::id() };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(if debug { log::LevelFilter::Debug } else { log::LevelFilter::Info });
    }
    Ok(())
}

fn open(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().create(true).append(true).mode(0o644).open(path)
}

fn now() -> String {
    capsa::timefmt::rfc3339(std::time::SystemTime::now())
}

/// logrus quotes a text value unless it is made of these characters only.
fn text_value(s: &str) -> String {
    let plain = !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-._/@^+".contains(c));
    if plain {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
    }
}

/// logrus's level names.
fn level_name(l: log::Level) -> &'static str {
    match l {
        log::Level::Error => "error",
        log::Level::Warn => "warning",
        log::Level::Info => "info",
        log::Level::Debug => "debug",
        log::Level::Trace => "trace",
    }
}

fn line(level: &str, msg: &str, json: bool) -> String {
    if json {
        let v = serde_json::json!({"level": level, "msg": msg, "time": now()});
        format!("{v}\n")
    } else {
        format!("time=\"{}\" level={level} msg={}\n", now(), text_value(msg))
    }
}

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) || std::process::id() != self.pid {
            return;
        }
        let level = level_name(r.level());
        let msg = r.args().to_string();
        match &self.file {
            Some(path) => {
                let text = line(level, &msg, self.json);
                let written = open(path).and_then(|mut f| f.write_all(text.as_bytes()));
                if r.level() == log::Level::Error || written.is_err() {
                    eprintln!("{msg}");
                }
            }
            None => {
                let _ = std::io::stderr().write_all(line(level, &msg, self.json).as_bytes());
            }
        }
    }

    fn flush(&self) {}
}

pub fn error(msg: &str) {
    if log::logger().enabled(&log::Metadata::builder().level(log::Level::Error).build()) {
        log::error!("{msg}");
    } else {
        // Before `init` (argument errors): a plain line.
        eprintln!("{msg}");
    }
}

pub fn warn(msg: &str) {
    log::warn!("{msg}");
}

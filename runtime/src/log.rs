//! runc's logging contract: `--log FILE` (default stderr) in `text` or `json` format.
//! containerd reads the last `"level":"error"` line of the JSON file and shows its `msg`.
//! With a log file the error also goes to stderr as a plain line, as runc does.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

struct Logger {
    file: Option<PathBuf>,
    json: bool,
    debug: bool,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

pub fn init(file: Option<&Path>, format: &str, debug: bool) {
    let _ = LOGGER.set(Logger { file: file.map(Path::to_path_buf), json: format == "json", debug });
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

fn line(level: &str, msg: &str, json: bool) -> String {
    if json {
        let v = serde_json::json!({"level": level, "msg": msg, "time": now()});
        format!("{v}\n")
    } else {
        format!("time=\"{}\" level={level} msg={}\n", now(), text_value(msg))
    }
}

fn write(level: &str, msg: &str) {
    let Some(l) = LOGGER.get() else {
        eprintln!("{msg}");
        return;
    };
    match &l.file {
        Some(path) => {
            let text = line(level, msg, l.json);
            let r = std::fs::OpenOptions::new().create(true).append(true).open(path).and_then(|mut f| f.write_all(text.as_bytes()));
            if level == "error" || r.is_err() {
                eprintln!("{msg}");
            }
        }
        None => {
            let _ = std::io::stderr().write_all(line(level, msg, l.json).as_bytes());
        }
    }
}

pub fn error(msg: &str) {
    write("error", msg);
}

pub fn warn(msg: &str) {
    write("warning", msg);
}

#[allow(dead_code)]
pub fn debug(msg: &str) {
    if LOGGER.get().is_some_and(|l| l.debug) {
        write("debug", msg);
    }
}

//! Logging to containerd: the `log` fifo containerd opened in the shim's working directory (the
//! bundle), one logfmt line per record as Go shims write them (`time=… level=… msg=…`);
//! containerd copies the lines into its own log.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

struct FifoLogger(Mutex<File>);

impl log::Log for FifoLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let msg = r.args().to_string().replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        let line = format!("time=\"{}\" level={} msg=\"{msg}\"\n", rfc3339_now(), r.level().as_str().to_lowercase());
        if let Ok(mut f) = self.0.lock() {
            // One write per line: a fifo keeps writes up to PIPE_BUF whole.
            let _ = f.write_all(line.as_bytes());
        }
    }

    fn flush(&self) {}
}

/// Opens `./log` (blocks until containerd, which made it, reads it) and installs the logger at
/// `$RUST_LOG` (a level name; default info), at least debug with `-debug`. Fails when there is
/// no `log` to open (a shim started by hand).
pub fn init(debug: bool) -> std::io::Result<()> {
    let f = OpenOptions::new().write(true).open("log")?;
    let level = std::env::var("RUST_LOG").ok().and_then(|l| l.parse().ok()).unwrap_or(log::LevelFilter::Info);
    log::set_max_level(if debug { level.max(log::LevelFilter::Debug) } else { level });
    // Installed once, for the life of the process.
    log::set_logger(Box::leak(Box::new(FifoLogger(Mutex::new(f))))).map_err(|e| std::io::Error::other(e.to_string()))
}

/// Now in UTC as RFC 3339 with microseconds.
fn rfc3339_now() -> String {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let (days, secs) = (d.as_secs() / 86400, d.as_secs() % 86400);
    let (y, m, day) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z", secs / 3600, secs / 60 % 60, secs % 60, d.subsec_micros())
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's algorithm: eras of 400 years starting on March 1st).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_784), (2026, 11, 27));
        assert_eq!(rfc3339_now().len(), "2026-11-27T18:00:00.000000Z".len());
    }
}

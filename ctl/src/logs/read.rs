//! Reading a json-file log for `logs`: the rotated files oldest first, then the current
//! one; `--tail` reads from the end (a 100 MB log is not read whole for 10 lines),
//! `--since`/`--until` filter on the entries' times, `-f` follows the file through
//! rotations (inotify) until the container stops.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::write::Stream;

/// One entry of the log.
pub struct Entry<'a> {
    pub log: Cow<'a, [u8]>,
    pub stream: Stream,
    pub time: &'a str,
}

/// The log files, oldest first.
pub fn files(path: &Path) -> Vec<PathBuf> {
    let mut rotated = Vec::new();
    for n in 1.. {
        let mut p = path.as_os_str().to_os_string();
        p.push(format!(".{n}"));
        let p = PathBuf::from(p);
        if !p.exists() {
            break;
        }
        rotated.push(p);
    }
    rotated.reverse();
    rotated.push(path.to_path_buf());
    rotated
}

/// A JSON string starting after its opening quote: (decoded bytes, rest after the closing quote).
fn json_str(s: &[u8]) -> Option<(Cow<'_, [u8]>, &[u8])> {
    let end = s.iter().position(|&c| c == b'"' || c == b'\\')?;
    if s[end] == b'"' {
        return Some((Cow::Borrowed(&s[..end]), &s[end + 1..]));
    }
    let mut out = s[..end].to_vec();
    let mut i = end;
    while i < s.len() {
        match s[i] {
            b'"' => return Some((Cow::Owned(out), &s[i + 1..])),
            b'\\' => {
                let c = *s.get(i + 1)?;
                i += 2;
                match c {
                    b'n' => out.push(b'\n'),
                    b't' => out.push(b'\t'),
                    b'r' => out.push(b'\r'),
                    b'b' => out.push(8),
                    b'f' => out.push(12),
                    b'/' => out.push(b'/'),
                    b'\\' => out.push(b'\\'),
                    b'"' => out.push(b'"'),
                    b'u' => {
                        let hex = std::str::from_utf8(s.get(i..i + 4)?).ok()?;
                        let mut cp = u32::from_str_radix(hex, 16).ok()?;
                        i += 4;
                        if (0xd800..0xdc00).contains(&cp) && s.get(i..i + 2) == Some(b"\\u") {
                            let lo = u32::from_str_radix(std::str::from_utf8(s.get(i + 2..i + 6)?).ok()?, 16).ok()?;
                            if (0xdc00..0xe000).contains(&lo) {
                                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                                i += 6;
                            }
                        }
                        let ch = char::from_u32(cp).unwrap_or('\u{fffd}');
                        let mut b = [0u8; 4];
                        out.extend_from_slice(ch.encode_utf8(&mut b).as_bytes());
                    }
                    _ => return None,
                }
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    None
}

/// Parses one line as the monitor writes it (`log`, `stream`, `time`, in that order);
/// other key orders (a file written by docker) go through serde_json.
pub fn parse(line: &[u8]) -> Option<Entry<'_>> {
    let fast = || -> Option<Entry<'_>> {
        let rest = line.strip_prefix(b"{\"log\":\"")?;
        let (log, rest) = json_str(rest)?;
        let rest = rest.strip_prefix(b",\"stream\":\"")?;
        let (stream, rest) = json_str(rest)?;
        let rest = rest.strip_prefix(b",\"time\":\"")?;
        let end = rest.iter().position(|&c| c == b'"')?;
        let time = std::str::from_utf8(&rest[..end]).ok()?;
        let stream = if &*stream == b"stderr" { Stream::Stderr } else { Stream::Stdout };
        Some(Entry { log, stream, time })
    };
    if let Some(e) = fast() {
        return Some(e);
    }
    #[derive(serde::Deserialize)]
    struct Slow {
        log: String,
        stream: String,
        time: String,
    }
    let s: Slow = serde_json::from_slice(line).ok()?;
    // The time must borrow from the line: find it there.
    let t = s.time.as_bytes();
    let pos = line.windows(t.len().max(1)).position(|w| w == t)?;
    let time = std::str::from_utf8(&line[pos..pos + t.len()]).ok()?;
    Some(Entry { log: Cow::Owned(s.log.into_bytes()), stream: if s.stream == "stderr" { Stream::Stderr } else { Stream::Stdout }, time })
}

/// (seconds, nanoseconds) of an RFC 3339 time.
pub fn time_of(s: &str) -> Option<(i64, u32)> {
    let secs = crate::format::parse_time(s)?;
    let nanos = s
        .split_once('.')
        .map(|(_, f)| {
            let digits: String = f.chars().take_while(char::is_ascii_digit).take(9).collect();
            format!("{digits:0<9}").parse::<u32>().unwrap_or(0)
        })
        .unwrap_or(0);
    Some((secs, nanos))
}

/// docker's `--since`/`--until`: an RFC 3339 time, a Unix timestamp (`1700000000.5`), or a
/// duration back from now (`10m`, `1h30m`, `45s`).
pub fn parse_when(s: &str) -> Result<(i64, u32), String> {
    if let Some(t) = time_of(s) {
        return Ok(t);
    }
    if let Some(date) = crate::format::parse_time(&format!("{s}T00:00:00Z")) {
        return Ok((date, 0));
    }
    if let Ok(f) = s.parse::<f64>() {
        return Ok((f.trunc() as i64, (f.fract() * 1e9) as u32));
    }
    let mut total = 0f64;
    let mut num = String::new();
    let mut saw_unit = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if c == 'm' && chars.peek() == Some(&'s') {
            unit.push('s');
            chars.next();
        }
        let v: f64 = num.parse().map_err(|_| format!("invalid time {s:?}"))?;
        num.clear();
        saw_unit = true;
        total += v * match unit.as_str() {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return Err(format!("invalid time {s:?}: unknown unit {unit:?}")),
        };
    }
    if !num.is_empty() || !saw_unit {
        return Err(format!("invalid time {s:?}: want an RFC 3339 time, a Unix timestamp or a duration like 10m"));
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let t = now.as_secs_f64() - total;
    Ok((t.trunc() as i64, (t.fract() * 1e9) as u32))
}

pub struct Opts {
    pub tail: Option<usize>,
    pub since: Option<(i64, u32)>,
    pub until: Option<(i64, u32)>,
    pub timestamps: bool,
}

/// Writes entries to stdout/stderr by stream.
pub struct Out<'a> {
    pub stdout: &'a mut dyn Write,
    pub stderr: &'a mut dyn Write,
}

/// Prints one line; returns false once past `--until` (nothing later can be printed).
fn emit(line: &[u8], o: &Opts, out: &mut Out) -> io::Result<bool> {
    let Some(e) = parse(line) else { return Ok(true) };
    if o.since.is_some() || o.until.is_some() {
        let t = time_of(e.time).unwrap_or((0, 0));
        if o.since.is_some_and(|s| t < s) {
            return Ok(true);
        }
        if o.until.is_some_and(|u| t > u) {
            return Ok(false);
        }
    }
    let w: &mut dyn Write = if e.stream == Stream::Stderr { out.stderr } else { out.stdout };
    if o.timestamps {
        w.write_all(e.time.as_bytes())?;
        w.write_all(b" ")?;
    }
    w.write_all(&e.log)?;
    Ok(true)
}

/// Offset in `f` where its last `n` lines begin (0 if it has fewer), and how many lines
/// were found after that offset.
fn tail_offset(f: &mut File, n: usize) -> io::Result<(u64, usize)> {
    let len = f.metadata()?.len();
    if n == 0 {
        return Ok((len, 0));
    }
    let mut pos = len;
    let mut found = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    // The file's last newline ends the last line: skip it.
    let mut skip_last = true;
    while pos > 0 {
        let take = buf.len().min(pos as usize);
        pos -= take as u64;
        f.seek(SeekFrom::Start(pos))?;
        f.read_exact(&mut buf[..take])?;
        for i in (0..take).rev() {
            if buf[i] == b'\n' {
                if skip_last && pos + i as u64 == len - 1 {
                    skip_last = false;
                    continue;
                }
                skip_last = false;
                found += 1;
                if found == n {
                    return Ok((pos + i as u64 + 1, n));
                }
            }
        }
        skip_last = false;
    }
    Ok((0, found + usize::from(len > 0)))
}

/// Prints the log (all its files). Returns the current file and the offset read up to,
/// for `-f`.
pub fn print(path: &Path, o: &Opts, out: &mut Out) -> io::Result<Option<(File, u64)>> {
    let all = files(path);
    // With --tail, start in the file (and at the offset) where the last N lines begin.
    let mut start = (0usize, 0u64);
    if let Some(n) = o.tail {
        let mut need = n;
        start = (all.len(), 0);
        for (i, p) in all.iter().enumerate().rev() {
            let Ok(mut f) = File::open(p) else { continue };
            let (off, found) = tail_offset(&mut f, need)?;
            start = (i, off);
            if found >= need {
                break;
            }
            need -= found;
        }
    }
    let mut last = None;
    for (i, p) in all.iter().enumerate().skip(start.0) {
        let Ok(mut f) = File::open(p) else { continue };
        let off = if i == start.0 { start.1 } else { 0 };
        f.seek(SeekFrom::Start(off))?;
        let mut r = BufReader::with_capacity(256 * 1024, &f);
        let mut line = Vec::with_capacity(256);
        let mut pos = off;
        loop {
            line.clear();
            let n = r.read_until(b'\n', &mut line)?;
            if n == 0 || line.last() != Some(&b'\n') {
                break;
            }
            pos += n as u64;
            if !emit(&line, o, out)? {
                return Ok(None);
            }
        }
        if i == all.len() - 1 {
            drop(r);
            last = Some((f, pos));
        }
    }
    Ok(last)
}

/// `-f`: goes on printing what is appended (following rotations) until `done` says the
/// container has stopped; then prints what is left and returns.
pub fn follow(path: &Path, from: Option<(File, u64)>, o: &Opts, out: &mut Out, done: &dyn std::os::fd::AsFd) -> io::Result<()> {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let dir = path.parent().unwrap_or(Path::new("/"));
    let ino = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).map_err(|e| io::Error::from_raw_os_error(e as i32))?;
    ino.add_watch(dir, AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_DELETE_SELF)
        .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
    let (mut f, mut pos) = match from {
        Some(x) => x,
        None => match File::open(path) {
            Ok(f) => (f, 0),
            Err(_) => return Ok(()),
        },
    };
    let mut pending: Vec<u8> = Vec::new();
    let mut stopping = false;
    loop {
        // Read what is there.
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            f.seek(SeekFrom::Start(pos))?;
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            pos += n as u64;
            pending.extend_from_slice(&buf[..n]);
            let mut start = 0;
            while let Some(k) = pending[start..].iter().position(|&c| c == b'\n') {
                if !emit(&pending[start..start + k + 1], o, out)? {
                    return Ok(());
                }
                start += k + 1;
            }
            pending.drain(..start);
        }
        out.stdout.flush()?;
        out.stderr.flush()?;
        // Rotated: the path names a new file; ours is complete.
        if let (Ok(now), Ok(ours)) = (std::fs::metadata(path), f.metadata()) {
            if now.ino() != ours.ino() {
                f = File::open(path)?;
                pos = 0;
                pending.clear();
                continue;
            }
        }
        if stopping {
            return Ok(());
        }
        let mut fds = [
            nix::poll::PollFd::new(ino.as_fd(), nix::poll::PollFlags::POLLIN),
            nix::poll::PollFd::new(done.as_fd(), nix::poll::PollFlags::POLLIN),
        ];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(1000u16)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(io::Error::from_raw_os_error(e as i32)),
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            // The container stopped (or its monitor went): read the rest once more.
            stopping = true;
        }
        let _ = ino.read_events();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_our_lines_and_docker_order() {
        let e = parse(br#"{"log":"a\"b\u003c\n","stream":"stderr","time":"2024-01-01T00:00:00.5Z"}"#).unwrap();
        assert_eq!(&*e.log, b"a\"b<\n");
        assert_eq!(e.stream, Stream::Stderr);
        assert_eq!(time_of(e.time), Some((1704067200, 500_000_000)));
        let e = parse(br#"{"stream":"stdout","log":"x\n","time":"2024-01-01T00:00:00Z"}"#).unwrap();
        assert_eq!(&*e.log, b"x\n");
        assert!(parse(b"garbage").is_none());
    }

    #[test]
    fn tail_reads_from_the_end() {
        let p = std::env::temp_dir().join(format!("capsactl-tail-{}", std::process::id()));
        std::fs::write(&p, "a\nb\nc\n").unwrap();
        let mut f = File::open(&p).unwrap();
        assert_eq!(tail_offset(&mut f, 2).unwrap(), (2, 2));
        assert_eq!(tail_offset(&mut f, 5).unwrap(), (0, 3));
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn when() {
        assert_eq!(parse_when("1700000000").unwrap().0, 1700000000);
        let now = crate::format::now();
        let t = parse_when("10m").unwrap().0;
        assert!((now - 600 - t).abs() <= 1);
        assert!(parse_when("1h30m").is_ok() && parse_when("soon").is_err());
    }
}

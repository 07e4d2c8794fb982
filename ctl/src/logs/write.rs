//! docker's `json-file` log, written by the monitor: one JSON object per line,
//! `{"log":"hi\n","stream":"stdout","time":"2024-05-01T10:00:00.123456789Z"}`, with the
//! strings escaped as Go's encoding/json escapes them (so the bytes match docker's), lines
//! longer than 16 KiB split as docker splits them, and size rotation (`max-size`,
//! `max-file`): `<id>-json.log` → `.1` → `.2` ...

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// docker's line buffer: a longer line becomes several entries.
const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

pub struct Writer {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    /// 0: no rotation.
    max_size: u64,
    max_file: u32,
    partial: [Vec<u8>; 2],
    line: Vec<u8>,
}

impl Writer {
    /// Appends to `path` (None: the `none` driver, nothing is written).
    pub fn open(path: Option<&Path>, max_size: u64, max_file: u32) -> io::Result<Writer> {
        let (file, size) = match path {
            Some(p) => {
                let f = std::fs::OpenOptions::new().create(true).append(true).mode(0o640).custom_flags(libc::O_CLOEXEC).open(p)?;
                let size = f.metadata()?.len();
                (Some(f), size)
            }
            None => (None, 0),
        };
        Ok(Writer {
            path: path.map(Path::to_path_buf).unwrap_or_default(),
            file,
            size,
            max_size,
            max_file: max_file.max(1),
            partial: [Vec::new(), Vec::new()],
            line: Vec::with_capacity(256),
        })
    }

    /// Output of the container: complete lines become entries at once, the rest waits for
    /// its newline (or for 16 KiB).
    pub fn write(&mut self, stream: Stream, mut data: &[u8]) {
        if self.file.is_none() {
            return;
        }
        let i = stream as usize;
        while !data.is_empty() {
            match memchr(b'\n', data) {
                Some(n) => {
                    let (line, rest) = data.split_at(n + 1);
                    if self.partial[i].is_empty() {
                        self.entry(stream, line);
                    } else {
                        let mut p = std::mem::take(&mut self.partial[i]);
                        p.extend_from_slice(line);
                        self.entry(stream, &p);
                    }
                    data = rest;
                }
                None => {
                    self.partial[i].extend_from_slice(data);
                    data = &[];
                }
            }
            while self.partial[i].len() >= MAX_LINE {
                let p: Vec<u8> = self.partial[i].drain(..MAX_LINE).collect();
                self.entry(stream, &p);
            }
        }
    }

    /// Writes out unfinished lines (the container exited).
    pub fn flush(&mut self) {
        for s in [Stream::Stdout, Stream::Stderr] {
            let p = std::mem::take(&mut self.partial[s as usize]);
            if !p.is_empty() {
                self.entry(s, &p);
            }
        }
    }

    fn entry(&mut self, stream: Stream, msg: &[u8]) {
        self.line.clear();
        self.line.extend_from_slice(b"{\"log\":\"");
        escape(msg, &mut self.line);
        self.line.extend_from_slice(b"\",\"stream\":\"");
        self.line.extend_from_slice(stream.name().as_bytes());
        self.line.extend_from_slice(b"\",\"time\":\"");
        self.line.extend_from_slice(capsa::timefmt::rfc3339_nano(std::time::SystemTime::now()).as_bytes());
        self.line.extend_from_slice(b"\"}\n");
        if self.max_size > 0 && self.size > 0 && self.size + self.line.len() as u64 > self.max_size {
            self.rotate();
        }
        if let Some(f) = &mut self.file {
            // A full disk loses log lines, never the container.
            if f.write_all(&self.line).is_ok() {
                self.size += self.line.len() as u64;
            }
        }
    }

    /// `log` → `log.1` → ... → `log.(max_file-1)`; with max-file 1 the log starts over.
    fn rotate(&mut self) {
        if self.max_file <= 1 {
            if let Some(f) = &self.file {
                let _ = f.set_len(0);
            }
            self.size = 0;
            return;
        }
        let name = |n: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        let _ = std::fs::remove_file(name(self.max_file - 1));
        for n in (1..self.max_file - 1).rev() {
            let _ = std::fs::rename(name(n), name(n + 1));
        }
        let _ = std::fs::rename(&self.path, name(1));
        match std::fs::OpenOptions::new().create(true).append(true).mode(0o640).custom_flags(libc::O_CLOEXEC).open(&self.path) {
            Ok(f) => {
                self.file = Some(f);
                self.size = 0;
            }
            Err(_) => {
                // Keep writing to the renamed file rather than lose lines.
            }
        }
    }
}

pub fn memchr(b: u8, s: &[u8]) -> Option<usize> {
    s.iter().position(|&c| c == b)
}

/// Go's encoding/json string escaping (HTML-safe), invalid UTF-8 as U+FFFD.
pub fn escape(s: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut rest = s;
    while !rest.is_empty() {
        let (valid, bad) = match std::str::from_utf8(rest) {
            Ok(v) => (v, 0),
            Err(e) => {
                let v = e.valid_up_to();
                // SAFETY: from_utf8 said the first v bytes are valid UTF-8.
                let s = unsafe { std::str::from_utf8_unchecked(&rest[..v]) };
                (s, e.error_len().unwrap_or(rest.len() - v))
            }
        };
        for ch in valid.chars() {
            match ch {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\r' => out.extend_from_slice(b"\\r"),
                '\t' => out.extend_from_slice(b"\\t"),
                '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                    let c = ch as u32;
                    out.extend_from_slice(b"\\u");
                    for shift in [12, 8, 4, 0] {
                        out.push(HEX[((c >> shift) & 0xf) as usize]);
                    }
                }
                c if (c as u32) < 0x20 => {
                    out.extend_from_slice(b"\\u00");
                    out.push(HEX[(c as u32 >> 4) as usize]);
                    out.push(HEX[(c as u32 & 0xf) as usize]);
                }
                c => {
                    let mut b = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                }
            }
        }
        let skip = valid.len() + bad;
        for _ in 0..bad.min(1) {
            out.extend_from_slice(b"\\ufffd");
        }
        rest = &rest[skip..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_go() {
        let mut o = Vec::new();
        escape(b"a\"b\\c\n<&>\x01\xff\xfez", &mut o);
        assert_eq!(String::from_utf8(o).unwrap(), r#"a\"b\\c\n\u003c\u0026\u003e\u0001\ufffd\ufffdz"#);
    }

    #[test]
    fn lines_partials_and_rotation() {
        let d = std::env::temp_dir().join(format!("capsactl-logw-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("x-json.log");
        let mut w = Writer::open(Some(&p), 400, 3).unwrap();
        w.write(Stream::Stdout, b"one\ntw");
        w.write(Stream::Stderr, b"err\n");
        w.write(Stream::Stdout, b"o\n");
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with(r#"{"log":"one\n","stream":"stdout","time":""#) && lines[0].ends_with("Z\"}"), "{}", lines[0]);
        assert!(lines[1].starts_with(r#"{"log":"err\n","stream":"stderr""#));
        assert!(lines[2].starts_with(r#"{"log":"two\n""#));
        for i in 0..40 {
            w.write(Stream::Stdout, format!("line {i}\n").as_bytes());
        }
        w.write(Stream::Stdout, b"no newline");
        w.flush();
        assert!(std::fs::metadata(&p).unwrap().len() <= 400);
        assert!(d.join("x-json.log.1").exists() && d.join("x-json.log.2").exists() && !d.join("x-json.log.3").exists());
        assert!(std::fs::read_to_string(&p).unwrap().contains(r#"{"log":"no newline","stream":"stdout""#));
        let _ = std::fs::remove_dir_all(d);
    }
}

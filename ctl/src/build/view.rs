//! The build's output on stderr: `--progress plain` lines (`#3 [stage-0 2/4] RUN make`,
//! `#3 DONE 1.2s`, the RUN output as it comes), or the `tty` view: one line per finished
//! step (`=> [stage-0 2/4] RUN make  1.2s`) and, redrawn in place below them, the steps
//! running now with the last lines of their output and their time so far. `auto`
//! (docker's default) is tty when stderr is a terminal.
//!
//! The tty view is drawn by a child process forked when the build starts, while capsactl
//! is still single-threaded (DESIGN principle 1: no thread may run while RUN forks a
//! container). The builder and its stage workers (`parallel.rs`) append events, one line
//! each, to `<scratch>/progress`; RUN output goes to each step's log file. The view
//! tails both. An `E` event (or its parent gone) ends the view: it draws the last state
//! and exits, and the builder waits for it before anything else is printed. RUN output
//! and step texts come from the Dockerfile and the image: no control character of theirs
//! reaches the terminal.
//!
//! ```text
//! S <n> <text>    step n starts          C <n>           step n was cached
//! D <n> <secs>    step n is done         L <n> <path>    step n's output goes to path
//! W <text>        a line of its own      E               the end
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How the build shows its progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Mode {
    Plain,
    Tty,
    Quiet,
}

pub struct View {
    mode: Mode,
    /// The tty view's event file (appended to).
    events: Option<File>,
    /// The view's process (the builder that started it waits for it).
    child: Option<nix::unistd::Pid>,
}

/// Lines of a running step's output shown below it (fewer when several run).
const TAIL: usize = 6;

/// Lines of a failed step's output the tty view shows.
const FAILED_TAIL: usize = 50;

impl View {
    /// Starts the view (for `Tty`, forks its process: call while single-threaded);
    /// `events` is a new file in the build's scratch directory.
    pub fn new(mode: Mode, events: &Path) -> View {
        let mut v = View { mode, events: None, child: None };
        if mode == Mode::Tty {
            match spawn(events) {
                Ok((f, pid)) => {
                    v.events = Some(f);
                    v.child = Some(pid);
                }
                // No view process (no fds, no memory): plain lines still tell the story.
                Err(_) => v.mode = Mode::Plain,
            }
        }
        v
    }

    /// A stage worker's view: its events go to the parent's view.
    pub fn join(mode: Mode, events: &Path) -> View {
        match (mode, File::options().append(true).open(events)) {
            (Mode::Tty, Ok(f)) => View { mode, events: Some(f), child: None },
            (Mode::Tty, Err(_)) => View { mode: Mode::Plain, events: None, child: None },
            _ => View { mode, events: None, child: None },
        }
    }

    /// Whether RUN output goes to a log file rather than to our stderr.
    pub fn captures_output(&self) -> bool {
        self.mode != Mode::Plain
    }

    fn send(&mut self, ev: &str) {
        if let Some(f) = &mut self.events {
            // One event per line, in one write (workers append to the same file).
            let ev = ev.replace(['\n', '\r'], " ");
            let _ = f.write_all(format!("{ev}\n").as_bytes());
        }
    }

    /// A plain line, in one write (stage workers write to the same stderr).
    fn plain(&self, s: &str) {
        let _ = std::io::stderr().lock().write_all(format!("{s}\n").as_bytes());
    }

    /// Step `n` starts: `text` is `[stage 2/4] RUN make`.
    pub fn step(&mut self, n: usize, text: &str) {
        match self.mode {
            Mode::Plain => self.plain(&format!("#{n} {text}")),
            Mode::Tty => self.send(&format!("S {n} {text}")),
            Mode::Quiet => {}
        }
    }

    /// Step `n` was found in the cache.
    pub fn cached(&mut self, n: usize) {
        match self.mode {
            Mode::Plain => self.plain(&format!("#{n} CACHED")),
            Mode::Tty => self.send(&format!("C {n}")),
            Mode::Quiet => {}
        }
    }

    /// Step `n` is done.
    pub fn done(&mut self, n: usize, secs: f64) {
        match self.mode {
            Mode::Plain => self.plain(&format!("#{n} DONE {secs:.1}s")),
            Mode::Tty => self.send(&format!("D {n} {secs:.1}")),
            Mode::Quiet => {}
        }
    }

    /// Step `n` is over, whatever it was (FROM and config-only steps say no DONE in the
    /// plain output; the tty view needs to know). After `cached`/`done` it changes nothing.
    pub fn settled(&mut self, n: usize, secs: f64) {
        if self.mode == Mode::Tty {
            self.send(&format!("D {n} {secs:.1}"));
        }
    }

    /// The file step `n`'s output goes to (tailed by the tty view).
    pub fn log(&mut self, n: usize, path: &Path) {
        self.send(&format!("L {n} {}", path.display()));
    }

    /// A line of its own (warnings, "writing image ...").
    pub fn line(&mut self, s: &str) {
        match self.mode {
            Mode::Plain => self.plain(s),
            Mode::Tty => self.send(&format!("W {s}")),
            Mode::Quiet => {}
        }
    }

    /// The output of step `n`, which failed: all of it after `-q`, its last lines in the
    /// tty view.
    pub fn failed_output(&mut self, n: usize, log: &[u8]) {
        match self.mode {
            Mode::Tty => {
                let text = String::from_utf8_lossy(log);
                let lines: Vec<&str> = text.lines().collect();
                for l in &lines[lines.len().saturating_sub(FAILED_TAIL)..] {
                    self.send(&format!("W #{n} {l}"));
                }
            }
            _ => {
                let _ = std::io::stderr().lock().write_all(log);
            }
        }
    }

    /// The build was cancelled: the tty view ends its running steps as CANCELED.
    pub fn cancelled(&mut self) {
        if self.mode == Mode::Tty {
            self.send("X");
        }
    }

    /// Ends the tty view (waits for its last drawing); what is shown after is plain.
    pub fn finish(&mut self) {
        if let Some(pid) = self.child.take() {
            self.send("E");
            let _ = nix::sys::wait::waitpid(pid, None);
            self.events = None;
            self.mode = Mode::Plain;
        }
    }
}

impl Drop for View {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Makes the event file and forks the view's process; returns the file and its pid.
fn spawn(events: &Path) -> std::io::Result<(File, nix::unistd::Pid)> {
    let f = File::options().append(true).create_new(true).open(events)?;
    let r = File::open(events)?;
    let parent = nix::unistd::getpid();
    // SAFETY: capsactl is single-threaded here (the build has not started anything); the
    // child only draws and leaves with _exit.
    match unsafe { nix::unistd::fork() }.map_err(std::io::Error::from)? {
        nix::unistd::ForkResult::Child => {
            drop(f);
            // Nothing of the parent's but stdio and the event file: a copy of a locked fd
            // (the store's and the scratch dir's locks are flock()s) must not outlive the
            // parent's.
            // SAFETY: dup2 onto fd 3, then close_range closes every fd above it.
            unsafe {
                libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&r), 3);
                libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32);
            }
            std::mem::forget(r);
            // SAFETY: fd 3 is the event file, ours alone from here on.
            let input = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(3) };
            draw(input, parent);
            // SAFETY: leaving the forked child without running the parent's destructors.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => Ok((f, child)),
    }
}

/// A step running now in the tty view.
struct Running {
    text: String,
    start: Instant,
    log: Option<(PathBuf, Option<File>)>,
    tail: VecDeque<String>,
    partial: String,
}

struct Screen {
    out: std::io::Stderr,
    start: Instant,
    /// Lines of the live part drawn last (redrawn over).
    live: usize,
    /// The live part as drawn last (not drawn again unchanged).
    shown: String,
    steps: usize,
    running: BTreeMap<usize, Running>,
    width: usize,
    /// The build was cancelled (a signal): its running steps were stopped, not failed.
    cancelled: bool,
}

/// The tty view's loop: events until `E` (or the parent is gone), a redraw every 100 ms.
fn draw(mut events: File, parent: nix::unistd::Pid) {
    let mut s = Screen {
        out: std::io::stderr(),
        start: Instant::now(),
        live: 0,
        shown: String::new(),
        steps: 0,
        running: BTreeMap::new(),
        width: width(),
        cancelled: false,
    };
    let mut buf = Vec::new();
    let mut end = false;
    while !end {
        let mut chunk = [0u8; 16 << 10];
        loop {
            match events.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let ev: Vec<u8> = buf.drain(..=i).collect();
            let ev = String::from_utf8_lossy(&ev[..ev.len() - 1]).into_owned();
            if ev == "E" {
                end = true;
            } else {
                s.event(&ev);
            }
        }
        if nix::unistd::getppid() != parent {
            end = true;
        }
        s.tail_logs();
        s.redraw(&[]);
        if !end {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // Steps still running at the end: the build failed in them (or was cancelled in them).
    let failed = !s.running.is_empty();
    let how = if s.cancelled { "CANCELED" } else { "ERROR" };
    for (_, r) in std::mem::take(&mut s.running) {
        let l = s.timed(&format!("=> {how} "), &r.text, &format!("{:.1}s", r.start.elapsed().as_secs_f64()));
        s.redraw(&[l]);
    }
    let t = s.start.elapsed().as_secs_f64();
    let end = match (failed, s.cancelled) {
        (_, true) => "CANCELED",
        (true, false) => "FAILED",
        (false, false) => "FINISHED",
    };
    let last = format!("[+] Building {t:.1}s ({} steps) {end}", s.steps);
    s.redraw(&[last]);
    s.live_clear();
}

/// `s` with every control character (escape sequences of the image's output or of a
/// Dockerfile) shown as `?`.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c == '\t' {
                ' '
            } else if c.is_control() {
                '?'
            } else {
                c
            }
        })
        .collect()
}

impl Screen {
    fn event(&mut self, ev: &str) {
        let mut it = ev.splitn(3, ' ');
        let k = it.next().unwrap_or("");
        if k == "W" {
            let text = ev.get(2..).unwrap_or("");
            self.redraw(&[clean(text)]);
            return;
        }
        if k == "X" {
            self.cancelled = true;
            return;
        }
        let Some(n) = it.next().and_then(|n| n.parse::<usize>().ok()) else { return };
        let rest = it.next().unwrap_or("");
        match k {
            "S" => {
                self.steps += 1;
                let r = Running { text: clean(rest), start: Instant::now(), log: None, tail: VecDeque::new(), partial: String::new() };
                self.running.insert(n, r);
            }
            "C" => {
                if let Some(r) = self.running.remove(&n) {
                    let l = self.timed("=> CACHED ", &r.text, "0.0s");
                    self.redraw(&[l]);
                }
            }
            "D" => {
                if let Some(r) = self.running.remove(&n) {
                    let l = self.timed("=> ", &r.text, &format!("{}s", clean(rest)));
                    self.redraw(&[l]);
                }
            }
            "L" => {
                if let Some(r) = self.running.get_mut(&n) {
                    r.log = Some((PathBuf::from(rest), None));
                }
            }
            _ => {}
        }
    }

    /// Reads what the running steps' logs gained.
    fn tail_logs(&mut self) {
        let keep = if self.running.len() > 1 { TAIL / 2 } else { TAIL };
        for r in self.running.values_mut() {
            let Some((path, file)) = &mut r.log else { continue };
            if file.is_none() {
                *file = File::open(&*path).ok();
            }
            let Some(f) = file else { continue };
            let mut chunk = vec![0u8; 64 << 10];
            // At most 1 MiB a tick: a flood of output must not stall the view.
            for _ in 0..16 {
                let n = match f.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                for ch in String::from_utf8_lossy(&chunk[..n]).chars() {
                    match ch {
                        '\n' | '\r' if !r.partial.is_empty() || ch == '\n' => r.tail.push_back(std::mem::take(&mut r.partial)),
                        '\n' | '\r' => {}
                        '\t' => r.partial.push(' '),
                        ch if ch.is_control() => r.partial.push('?'),
                        ch if r.partial.len() < 4096 => r.partial.push(ch),
                        _ => {}
                    }
                }
            }
            while r.tail.len() > keep {
                r.tail.pop_front();
            }
        }
    }

    fn fit(&self, s: &str) -> String {
        fit(s, self.width.saturating_sub(1).max(20))
    }

    /// `=> [stage 2/4] RUN make  1.2s`: the text cut to leave room for the time.
    fn timed(&self, head: &str, text: &str, time: &str) -> String {
        let room = self.width.saturating_sub(1).max(40) - head.chars().count() - time.chars().count() - 2;
        format!("{head}{}  {time}", fit(text, room))
    }

    /// Clears the live part, prints `lines` for good, draws the live part again.
    fn redraw(&mut self, lines: &[String]) {
        let t = self.start.elapsed().as_secs_f64();
        let mut live = vec![format!("[+] Building {t:.1}s ({} steps)", self.steps)];
        for r in self.running.values() {
            live.push(self.timed("=> ", &r.text, &format!("{:.1}s", r.start.elapsed().as_secs_f64())));
            for l in &r.tail {
                live.push(format!(" > {l}"));
            }
        }
        let mut shown = String::new();
        for l in &live {
            shown.push_str(&self.fit(l));
            shown.push('\n');
        }
        if lines.is_empty() && shown == self.shown {
            return;
        }
        let mut o = String::new();
        if self.live > 0 {
            // To the start of the live part's first line, and clear to the end.
            o.push_str(&format!("\x1b[{}F\x1b[J", self.live));
        }
        for l in lines {
            o.push_str(&self.fit(l));
            o.push('\n');
        }
        o.push_str(&shown);
        self.shown = shown;
        self.live = live.len();
        let _ = self.out.write_all(o.as_bytes());
        let _ = self.out.flush();
    }

    /// Removes the live part (at the end: the finished lines stay).
    fn live_clear(&mut self) {
        if self.live > 0 {
            let _ = self.out.write_all(format!("\x1b[{}F\x1b[J", self.live).as_bytes());
            self.live = 0;
        }
    }
}

/// `s` cut to `w` characters (`...` at the end when cut).
fn fit(s: &str, w: usize) -> String {
    if s.chars().count() <= w {
        s.to_string()
    } else {
        s.chars().take(w.saturating_sub(3)).chain("...".chars()).collect()
    }
}

/// The terminal's width (80 when stderr is not one).
fn width() -> usize {
    let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ fills one winsize.
    let r = unsafe { libc::ioctl(2, libc::TIOCGWINSZ, &mut ws) };
    if r == 0 && ws.ws_col > 0 {
        ws.ws_col as usize
    } else {
        80
    }
}

/// The mode `--progress` asks for, with docker's `auto`: tty when stderr is a terminal.
pub fn mode(progress: &str, quiet: bool) -> Mode {
    use std::io::IsTerminal;
    match progress {
        _ if quiet => Mode::Quiet,
        "tty" => Mode::Tty,
        "auto" if std::io::stderr().is_terminal() => Mode::Tty,
        _ => Mode::Plain,
    }
}

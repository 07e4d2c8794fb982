//! The Dockerfile language as docker documents it: parser directives (`# syntax=`,
//! `# escape=`) at the top, comments, line continuations (the escape character at the end
//! of a line; comment and empty lines inside a continued instruction are skipped),
//! heredocs (`<<EOF`, `<<-EOF`, `<<"EOF"`) for RUN, COPY and ADD, and the instructions
//! with their flags and forms. Words keep their quotes here: variable substitution
//! happens at build time ([`super::expand`]), when the values are known. Every error
//! names its line.

use std::fmt;

/// A parse error at a line (1-based).
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    pub line: usize,
    pub msg: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.msg)
    }
}

type Result<T> = std::result::Result<T, ParseError>;

fn err<T>(line: usize, msg: impl Into<String>) -> Result<T> {
    Err(ParseError { line, msg: msg.into() })
}

#[derive(Debug)]
pub struct Dockerfile {
    pub syntax: Option<String>,
    pub escape: char,
    /// ARGs before the first FROM (the global scope, usable in FROM lines).
    pub meta_args: Vec<Instruction>,
    pub stages: Vec<Stage>,
}

#[derive(Debug)]
pub struct Stage {
    /// `AS name`, lowercased.
    pub name: Option<String>,
    /// The FROM line (its `kind` is [`Kind::From`]).
    pub from: Instruction,
    pub instructions: Vec<Instruction>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Instruction {
    pub line: usize,
    /// The instruction as written (continuations joined, heredoc bodies left out).
    pub text: String,
    pub kind: Kind,
}

/// Shell form (a string for the SHELL) or exec form (a JSON array).
#[derive(Debug, Clone, PartialEq)]
pub enum Form {
    Shell(String),
    Exec(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Heredoc {
    pub name: String,
    pub content: String,
    /// The delimiter was unquoted: variables in the body are expanded.
    pub expand: bool,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Health {
    /// None: `HEALTHCHECK NONE`.
    pub test: Option<Form>,
    pub interval: Option<u64>,
    pub timeout: Option<u64>,
    pub start_period: Option<u64>,
    pub start_interval: Option<u64>,
    pub retries: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct CopyArgs {
    pub add: bool,
    /// Raw source words (or heredoc names), then the raw destination.
    pub srcs: Vec<String>,
    pub dest: String,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    /// --exclude patterns (any number).
    pub excludes: Vec<String>,
    pub link: bool,
    /// --parents: each source keeps its path (below a `/./` in it, if any) in the destination.
    pub parents: bool,
    pub heredocs: Vec<Heredoc>,
    /// Given as a JSON array (no word splitting, no quote removal needed).
    pub json: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    From {
        image: String,
        platform: Option<String>,
        name: Option<String>,
    },
    Run {
        cmd: Form,
        heredocs: Vec<Heredoc>,
        network: Option<String>,
        mounts: Vec<String>,
        security: Option<String>,
    },
    Cmd(Form),
    Entrypoint(Form),
    /// Raw (key, value) words.
    Env(Vec<(String, String)>),
    Arg(Vec<(String, Option<String>)>),
    Label(Vec<(String, String)>),
    Expose(Vec<String>),
    Workdir(String),
    User(String),
    Volume(Vec<String>),
    StopSignal(String),
    Shell(Vec<String>),
    Healthcheck(Health),
    /// The trigger's text (`RUN echo hi`) and its parse.
    Onbuild(String, Box<Instruction>),
    Copy(CopyArgs),
    Maintainer(String),
}

/// Parses a Dockerfile.
pub fn parse(text: &str) -> Result<Dockerfile> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).collect();
    let mut syntax = None;
    let mut escape = '\\';
    let mut i = 0;
    // Directives: `# key=value` lines at the very top; the first other line ends them.
    let mut seen = Vec::new();
    while i < lines.len() {
        let Some((k, v)) = directive(lines[i]) else { break };
        if seen.contains(&k) {
            return err(i + 1, format!("only one {k} parser directive can be used"));
        }
        match k.as_str() {
            "syntax" => syntax = Some(v),
            "escape" => {
                escape = match v.as_str() {
                    "\\" => '\\',
                    "`" => '`',
                    _ => return err(i + 1, format!("invalid escape token '{v}' does not match ` or \\")),
                }
            }
            "check" => {}
            _ => break,
        }
        seen.push(k);
        i += 1;
    }

    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    while i < lines.len() {
        let t = lines[i].trim();
        if t.is_empty() || t.starts_with('#') {
            i += 1;
            continue;
        }
        let start = i;
        let (joined, next) = logical_line(&lines, i, escape);
        i = next;
        let (word, rest) = split_first(&joined);
        let up = word.to_ascii_uppercase();
        let mut heredocs = Vec::new();
        if matches!(up.as_str(), "RUN" | "COPY" | "ADD") {
            let (docs, after) = read_heredocs(&lines, rest, i, escape, start + 1)?;
            heredocs = docs;
            i = after;
        }
        let ins = instruction(start + 1, &joined, heredocs, escape)?;
        match &ins.kind {
            Kind::From { name, .. } => {
                if let Some(n) = name {
                    if stages.iter().any(|s| s.name.as_deref() == Some(n)) {
                        return err(ins.line, format!("duplicate stage name {n:?}"));
                    }
                }
                stages.push(Stage { name: name.clone(), from: ins, instructions: Vec::new() });
            }
            _ => match stages.last_mut() {
                Some(s) => s.instructions.push(ins),
                None if matches!(ins.kind, Kind::Arg(_)) => meta_args.push(ins),
                None => {
                    return err(
                        ins.line,
                        format!("{up} before the first FROM: no build stage in current context (only ARG may come before FROM)"),
                    )
                }
            },
        }
    }
    if stages.is_empty() {
        return err(lines.len().max(1), "the Dockerfile has no FROM instruction (file with no instructions?)");
    }
    Ok(Dockerfile { syntax, escape, meta_args, stages })
}

/// `# key = value` (a parser directive), key lowercased.
fn directive(line: &str) -> Option<(String, String)> {
    let rest = line.trim_start().strip_prefix('#')?;
    let (k, v) = rest.split_once('=')?;
    let k = k.trim();
    if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric()) || !k.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    Some((k.to_ascii_lowercase(), v.trim().to_string()))
}

/// The line at `i` with its continuations; returns it and the index after it.
fn logical_line(lines: &[&str], mut i: usize, escape: char) -> (String, usize) {
    let mut out = String::new();
    loop {
        let l = lines[i];
        i += 1;
        match continued(l, escape) {
            Some(part) => {
                out.push_str(part);
                // Comment and empty lines inside a continuation are skipped.
                while i < lines.len() && (lines[i].trim().is_empty() || lines[i].trim_start().starts_with('#')) {
                    i += 1;
                }
                if i >= lines.len() {
                    return (out, i);
                }
            }
            None => {
                out.push_str(l);
                return (out, i);
            }
        }
    }
}

/// `l` without its continuation escape if it ends with one (before trailing blanks).
fn continued(l: &str, escape: char) -> Option<&str> {
    let t = l.trim_end_matches([' ', '\t']);
    t.strip_suffix(escape)
}

fn split_first(s: &str) -> (&str, &str) {
    let s = s.trim();
    match s.find(char::is_whitespace) {
        Some(p) => (&s[..p], s[p..].trim_start()),
        None => (s, ""),
    }
}

/// Reads the bodies of the heredocs `args` opens, from line `i` on.
fn read_heredocs(lines: &[&str], args: &str, mut i: usize, escape: char, line: usize) -> Result<(Vec<Heredoc>, usize)> {
    let mut out = Vec::new();
    for w in split_words(args, escape) {
        let Some(spec) = w.strip_prefix("<<") else { continue };
        let (strip, spec) = match spec.strip_prefix('-') {
            Some(s) => (true, s),
            None => (false, spec),
        };
        let (quoted, name) = match spec.chars().next() {
            Some(q @ ('"' | '\'')) => {
                let inner = &spec[1..];
                let end = inner.find(q).ok_or(ParseError { line, msg: format!("heredoc delimiter {w}: unmatched quote") })?;
                (true, inner[..end].to_string())
            }
            _ => (false, spec.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>()),
        };
        if name.is_empty() {
            continue;
        }
        let mut content = String::new();
        loop {
            let Some(l) = lines.get(i) else { return err(line, format!("unterminated heredoc {name}: no line {name:?} ends it")) };
            i += 1;
            let l = if strip { l.trim_start_matches('\t') } else { l };
            if l == name {
                break;
            }
            content.push_str(l);
            content.push('\n');
        }
        out.push(Heredoc { name, content, expand: !quoted });
    }
    Ok((out, i))
}

/// Splits on unquoted whitespace; quotes and escapes stay in the words.
pub fn split_words(s: &str, escape: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                cur.push(c);
                if c == q {
                    quote = None;
                } else if c == escape && q == '"' {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                }
            }
            None if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            None => {
                in_word = true;
                cur.push(c);
                if c == '"' || c == '\'' {
                    quote = Some(c);
                } else if c == escape {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                }
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

/// Leading `--name[=value]` flags of an instruction, and the rest of its arguments.
fn take_flags(args: &str, escape: char) -> (Vec<(String, Option<String>)>, &str) {
    let mut flags = Vec::new();
    let mut rest = args.trim_start();
    while rest.starts_with("--") {
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let word = &rest[2..end];
        let words = split_words(word, escape);
        let word = words.first().map(String::as_str).unwrap_or("");
        match word.split_once('=') {
            Some((k, v)) => flags.push((k.to_ascii_lowercase(), Some(v.to_string()))),
            None => flags.push((word.to_ascii_lowercase(), None)),
        }
        rest = rest[end..].trim_start();
    }
    (flags, rest)
}

fn check_flags(line: usize, instr: &str, flags: &[(String, Option<String>)], allowed: &[&str], bools: &[&str]) -> Result<()> {
    let mut seen = Vec::new();
    for (k, v) in flags {
        if !allowed.contains(&k.as_str()) && !bools.contains(&k.as_str()) {
            return err(line, format!("{instr}: unknown flag: --{k}"));
        }
        if seen.contains(&k) && k != "mount" && k != "exclude" {
            return err(line, format!("{instr}: duplicate flag specified: --{k}"));
        }
        seen.push(k);
        if allowed.contains(&k.as_str()) && v.as_deref().is_none_or(str::is_empty) {
            return err(line, format!("{instr}: --{k} needs a value (--{k}=VALUE)"));
        }
        if bools.contains(&k.as_str()) && !matches!(v.as_deref(), None | Some("true") | Some("false")) {
            return err(line, format!("{instr}: --{k} takes true or false, not {:?}", v.as_deref().unwrap_or_default()));
        }
    }
    Ok(())
}

fn flag(flags: &[(String, Option<String>)], name: &str) -> Option<String> {
    flags.iter().rev().find(|(k, _)| k == name).and_then(|(_, v)| v.clone())
}

/// A JSON array of strings, if `rest` is one.
fn json_array(rest: &str) -> Option<Vec<String>> {
    if !rest.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(rest).ok()
}

fn form(rest: &str) -> Form {
    match json_array(rest) {
        Some(v) => Form::Exec(v),
        None => Form::Shell(rest.to_string()),
    }
}

/// `k=v k2="v 2"` pairs, or the legacy `k v with spaces` single pair.
fn pairs(line: usize, instr: &str, rest: &str, escape: char) -> Result<Vec<(String, String)>> {
    let words = split_words(rest, escape);
    if words.is_empty() {
        return err(line, format!("{instr} requires at least one argument"));
    }
    if !words[0].contains('=') {
        // Legacy form: one name, the rest of the line is its value.
        let (k, v) = split_first(rest);
        if v.is_empty() {
            return err(line, format!("{instr} {k}: must have two arguments (KEY VALUE) or be KEY=VALUE"));
        }
        return Ok(vec![(k.to_string(), v.to_string())]);
    }
    let mut out = Vec::new();
    for w in words {
        match w.split_once('=') {
            Some(("", _)) => return err(line, format!("{instr} {w}: empty name")),
            Some((k, v)) => out.push((k.to_string(), v.to_string())),
            None => return err(line, format!("{instr} {w}: syntax error - can't find = in {w:?}. Must be of the form: name=value")),
        }
    }
    Ok(out)
}

/// Parses one logical line (`text`), with the heredoc bodies read after it.
fn instruction(line: usize, text: &str, heredocs: Vec<Heredoc>, escape: char) -> Result<Instruction> {
    let (word, rest) = split_first(text);
    let up = word.to_ascii_uppercase();
    let (flags, rest) = take_flags(rest, escape);
    let rest = rest.trim();
    let no_flags = |flags: &[(String, Option<String>)]| check_flags(line, &up, flags, &[], &[]);
    let need = |rest: &str| if rest.is_empty() { err(line, format!("{up} requires at least one argument")) } else { Ok(()) };
    let kind = match up.as_str() {
        "FROM" => {
            check_flags(line, &up, &flags, &["platform"], &[])?;
            let w = split_words(rest, escape);
            let name = match w.as_slice() {
                [_] => None,
                [_, as_, n] if as_.eq_ignore_ascii_case("as") => {
                    let n = n.to_ascii_lowercase();
                    let ok = n.starts_with(|c: char| c.is_ascii_alphabetic())
                        && n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
                    if !ok {
                        return err(
                            line,
                            format!("invalid name for build stage: {n:?}, name can't start with a number or contain symbols"),
                        );
                    }
                    Some(n)
                }
                [] => return err(line, "FROM requires an image (FROM image [AS name])"),
                _ => return err(line, format!("FROM requires either one or three arguments (FROM image [AS name]), got {:?}", rest)),
            };
            Kind::From { image: w[0].clone(), platform: flag(&flags, "platform"), name }
        }
        "RUN" => {
            check_flags(line, &up, &flags, &["mount", "network", "security"], &[])?;
            if rest.is_empty() {
                return err(line, "RUN requires at least one argument");
            }
            let mounts: Vec<String> = flags.iter().filter(|(k, _)| k == "mount").filter_map(|(_, v)| v.clone()).collect();
            // Checked here, so that a bad one fails before any step runs; one with variables
            // is checked once they are substituted, when its step runs.
            for m in mounts.iter().filter(|m| !m.contains('$')) {
                super::mounts::parse(m, "/", &|_, v| Ok(v.to_string())).or_else(|e| err(line, format!("RUN --mount={m}: {e}")))?;
            }
            let cmd = if heredocs.is_empty() { form(rest) } else { Form::Shell(rest.to_string()) };
            Kind::Run { cmd, heredocs, network: flag(&flags, "network"), mounts, security: flag(&flags, "security") }
        }
        "CMD" | "ENTRYPOINT" => {
            no_flags(&flags)?;
            need(rest)?;
            if up == "CMD" {
                Kind::Cmd(form(rest))
            } else {
                Kind::Entrypoint(form(rest))
            }
        }
        "ENV" => {
            no_flags(&flags)?;
            Kind::Env(pairs(line, &up, rest, escape)?)
        }
        "LABEL" => {
            no_flags(&flags)?;
            Kind::Label(pairs(line, &up, rest, escape)?)
        }
        "ARG" => {
            no_flags(&flags)?;
            let words = split_words(rest, escape);
            if words.is_empty() {
                return err(line, "ARG requires at least one argument (ARG name[=default])");
            }
            let mut out = Vec::new();
            for w in words {
                let (k, v) = match w.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (w.clone(), None),
                };
                if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return err(line, format!("ARG {w}: invalid name {k:?}"));
                }
                out.push((k, v));
            }
            Kind::Arg(out)
        }
        "EXPOSE" => {
            no_flags(&flags)?;
            need(rest)?;
            Kind::Expose(split_words(rest, escape))
        }
        "WORKDIR" => {
            no_flags(&flags)?;
            need(rest)?;
            Kind::Workdir(rest.to_string())
        }
        "USER" => {
            no_flags(&flags)?;
            need(rest)?;
            Kind::User(rest.to_string())
        }
        "VOLUME" => {
            no_flags(&flags)?;
            need(rest)?;
            let v = json_array(rest).unwrap_or_else(|| split_words(rest, escape));
            if v.iter().any(|x| x.is_empty()) {
                return err(line, "VOLUME specified can not be an empty string");
            }
            Kind::Volume(v)
        }
        "STOPSIGNAL" => {
            no_flags(&flags)?;
            let w = split_words(rest, escape);
            if w.len() != 1 {
                return err(line, "STOPSIGNAL requires exactly one argument");
            }
            Kind::StopSignal(w[0].clone())
        }
        "SHELL" => {
            no_flags(&flags)?;
            match json_array(rest) {
                Some(v) if !v.is_empty() => Kind::Shell(v),
                _ => return err(line, "SHELL requires the arguments to be in JSON form, e.g. SHELL [\"/bin/sh\", \"-c\"]"),
            }
        }
        "HEALTHCHECK" => {
            check_flags(line, &up, &flags, &["interval", "timeout", "start-period", "start-interval", "retries"], &[])?;
            let (w, cmd) = split_first(rest);
            let mut h = Health::default();
            match w.to_ascii_uppercase().as_str() {
                "NONE" => {
                    if !cmd.is_empty() || !flags.is_empty() {
                        return err(line, "HEALTHCHECK NONE takes no arguments or flags");
                    }
                }
                "CMD" => {
                    if cmd.is_empty() {
                        return err(line, "HEALTHCHECK CMD requires a command");
                    }
                    h.test = Some(form(cmd));
                    let dur = |name: &str| -> Result<Option<u64>> {
                        match flag(&flags, name) {
                            None => Ok(None),
                            Some(v) => match go_duration(&v) {
                                Some(0) => Ok(None),
                                Some(d) if d < 1_000_000 => err(line, format!("HEALTHCHECK --{name}={v}: cannot be less than 1ms")),
                                Some(d) => Ok(Some(d)),
                                None => err(line, format!("HEALTHCHECK --{name}={v}: not a duration (e.g. 30s, 1m30s)")),
                            },
                        }
                    };
                    h.interval = dur("interval")?;
                    h.timeout = dur("timeout")?;
                    h.start_period = dur("start-period")?;
                    h.start_interval = dur("start-interval")?;
                    h.retries = match flag(&flags, "retries") {
                        None => None,
                        Some(r) => match r.parse::<u32>() {
                            Ok(n) if n >= 1 => Some(n),
                            _ => return err(line, format!("HEALTHCHECK --retries={r}: must be a number of at least 1")),
                        },
                    };
                }
                _ => return err(line, format!("HEALTHCHECK: unknown type {w:?} (want CMD or NONE)")),
            }
            Kind::Healthcheck(h)
        }
        "ONBUILD" => {
            no_flags(&flags)?;
            need(rest)?;
            let (inner, _) = split_first(rest);
            match inner.to_ascii_uppercase().as_str() {
                "ONBUILD" => return err(line, "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
                "FROM" | "MAINTAINER" => return err(line, format!("{} isn't allowed as an ONBUILD trigger", inner.to_ascii_uppercase())),
                _ => {}
            }
            let ins = instruction(line, rest, Vec::new(), escape)?;
            let (iw, irest) = split_first(rest);
            Kind::Onbuild(format!("{} {irest}", iw.to_ascii_uppercase()), Box::new(ins))
        }
        "COPY" | "ADD" => {
            let add = up == "ADD";
            if add {
                check_flags(line, &up, &flags, &["chown", "chmod", "checksum", "exclude"], &["link", "keep-git-dir"])?;
            } else {
                check_flags(line, &up, &flags, &["from", "chown", "chmod", "exclude"], &["link", "parents"])?;
            }
            // Both are about remote sources (an HTTP download's digest, a git checkout's .git),
            // which this offline build does not fetch.
            for f in ["checksum", "keep-git-dir"] {
                if flags.iter().any(|(k, _)| k == f) {
                    return err(line, format!("{up} --{f}: only for remote URLs and git sources, which this offline build does not fetch"));
                }
            }
            let (words, json) = match json_array(rest) {
                Some(v) => (v, true),
                None => (split_words(rest, escape), false),
            };
            if words.len() < 2 {
                return err(
                    line,
                    format!("{up} requires at least two arguments, but only one was provided. Destination could not be determined"),
                );
            }
            let dest = words[words.len() - 1].clone();
            Kind::Copy(CopyArgs {
                add,
                srcs: words[..words.len() - 1].to_vec(),
                dest,
                from: flag(&flags, "from"),
                chown: flag(&flags, "chown"),
                chmod: flag(&flags, "chmod"),
                excludes: flags.iter().filter(|(k, _)| k == "exclude").filter_map(|(_, v)| v.clone()).collect(),
                link: flags.iter().any(|(k, v)| k == "link" && v.as_deref() != Some("false")),
                parents: flags.iter().any(|(k, v)| k == "parents" && v.as_deref() != Some("false")),
                heredocs,
                json,
            })
        }
        "MAINTAINER" => {
            no_flags(&flags)?;
            need(rest)?;
            Kind::Maintainer(rest.to_string())
        }
        "" => return err(line, "empty instruction"),
        _ => return err(line, format!("unknown instruction: {word}")),
    };
    Ok(Instruction { line, text: text.trim().to_string(), kind })
}

/// Go's time.ParseDuration: `1h2m3.5s`, `300ms`, `10us`; nanoseconds.
pub fn go_duration(s: &str) -> Option<u64> {
    if s == "0" {
        return Some(0);
    }
    let mut rest = s;
    let mut total: f64 = 0.0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if n == 0 {
            return None;
        }
        let num: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let mult = match &rest[..u] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += num * mult;
        rest = &rest[u..];
    }
    Some(total as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(src: &str) -> Instruction {
        let df = parse(&format!("FROM scratch\n{src}\n")).unwrap();
        df.stages[0].instructions[0].clone()
    }

    fn perr(src: &str) -> ParseError {
        parse(src).unwrap_err()
    }

    #[test]
    fn from_forms() {
        let df = parse("FROM busybox\nFROM --platform=linux/amd64 gcc:12 AS Build\nFROM build as final\n").unwrap();
        assert_eq!(df.stages.len(), 3);
        assert_eq!(df.stages[0].from.kind, Kind::From { image: "busybox".into(), platform: None, name: None });
        assert_eq!(
            df.stages[1].from.kind,
            Kind::From { image: "gcc:12".into(), platform: Some("linux/amd64".into()), name: Some("build".into()) }
        );
        assert_eq!(df.stages[2].name.as_deref(), Some("final"));
        assert_eq!(perr("FROM a AS 1x").line, 1);
        assert!(perr("FROM a b").msg.contains("one or three"));
        assert!(perr("FROM\n").msg.contains("requires an image"));
        assert!(perr("FROM a AS x\nFROM b AS X\n").msg.contains("duplicate stage name"));
        assert!(perr("FROM --bogus=1 a").msg.contains("unknown flag: --bogus"));
    }

    #[test]
    fn args_before_from_and_errors_before_from() {
        let df = parse("ARG BASE=busybox\nARG V\nFROM $BASE\nARG V\nRUN echo $V\n").unwrap();
        assert_eq!(df.meta_args.len(), 2);
        assert_eq!(df.meta_args[0].kind, Kind::Arg(vec![("BASE".into(), Some("busybox".into()))]));
        assert_eq!(df.stages[0].instructions.len(), 2);
        let e = perr("# hello\nRUN echo\nFROM x\n");
        assert_eq!(e.line, 2);
        assert!(e.msg.contains("no build stage"));
        assert!(perr("").msg.contains("no FROM"));
        assert!(perr("ARG x\n").msg.contains("no FROM"));
        assert!(perr("FROM a\nARG\n").msg.contains("ARG requires"));
        assert!(perr("FROM a\nARG a-b\n").msg.contains("invalid name"));
        assert_eq!(
            one("ARG a=1 b c=\"x y\"").kind,
            Kind::Arg(vec![("a".into(), Some("1".into())), ("b".into(), None), ("c".into(), Some("\"x y\"".into()))])
        );
    }

    #[test]
    fn unknown_instruction_names_its_line() {
        let e = perr("FROM a\n\n# c\nRUN x\nFOO bar\n");
        assert_eq!(e, ParseError { line: 5, msg: "unknown instruction: FOO".into() });
        assert_eq!(e.to_string(), "line 5: unknown instruction: FOO");
        assert_eq!(perr("FROM a\nRUN a \\\n b\nBAD\n").line, 4);
    }

    #[test]
    fn case_insensitive_instructions() {
        assert!(matches!(one("run echo hi").kind, Kind::Run { .. }));
        assert!(matches!(one("Workdir /x").kind, Kind::Workdir(_)));
    }

    #[test]
    fn continuations_and_comments() {
        let df = parse("FROM a\nRUN echo a \\\n  b \\\n# a comment inside\n\n  c\n# trailing\nCMD [\"x\"]\n").unwrap();
        let ins = &df.stages[0].instructions;
        assert_eq!(
            ins[0].kind,
            Kind::Run { cmd: Form::Shell("echo a   b   c".into()), heredocs: vec![], network: None, mounts: vec![], security: None }
        );
        assert_eq!(ins[0].line, 2);
        assert_eq!(ins[1].line, 8);
        // Trailing blanks after the escape still continue.
        let df = parse("FROM a\nRUN a \\  \n b\n").unwrap();
        assert_eq!(
            df.stages[0].instructions[0].kind,
            Kind::Run { cmd: Form::Shell("a  b".into()), heredocs: vec![], network: None, mounts: vec![], security: None }
        );
        // A continuation at the end of the file ends the instruction.
        assert!(parse("FROM a\nRUN a \\\n").is_ok());
        // Indented instructions and CRLF.
        let df = parse("FROM a\r\n   RUN x\r\n").unwrap();
        assert_eq!(df.stages[0].instructions[0].text, "RUN x");
    }

    #[test]
    fn directives() {
        let df = parse("# syntax=docker/dockerfile:1\n# escape=`\nFROM a\nRUN a `\n b\n").unwrap();
        assert_eq!(df.syntax.as_deref(), Some("docker/dockerfile:1"));
        assert_eq!(df.escape, '`');
        assert_eq!(
            df.stages[0].instructions[0].kind,
            Kind::Run { cmd: Form::Shell("a  b".into()), heredocs: vec![], network: None, mounts: vec![], security: None }
        );
        // After a comment, a directive is a comment.
        let df = parse("# hello\n# escape=`\nFROM a\nRUN a \\\n b\n").unwrap();
        assert_eq!(df.escape, '\\');
        // After an empty line too.
        let df = parse("\n# escape=`\nFROM a\n").unwrap();
        assert_eq!(df.escape, '\\');
        assert!(perr("# escape=x\nFROM a\n").msg.contains("invalid escape"));
        assert!(perr("# escape=`\n# escape=\\\nFROM a\n").msg.contains("only one escape"));
        // Unknown directives end the directive block.
        let df = parse("# foo=bar\n# escape=`\nFROM a\n").unwrap();
        assert_eq!(df.escape, '\\');
    }

    #[test]
    fn run_forms_and_flags() {
        assert_eq!(
            one("RUN [\"echo\", \"a b\"]").kind,
            Kind::Run {
                cmd: Form::Exec(vec!["echo".into(), "a b".into()]),
                heredocs: vec![],
                network: None,
                mounts: vec![],
                security: None
            }
        );
        // Not valid JSON: the shell form.
        assert_eq!(
            one("RUN [ -f x ] && echo y").kind,
            Kind::Run { cmd: Form::Shell("[ -f x ] && echo y".into()), heredocs: vec![], network: None, mounts: vec![], security: None }
        );
        match one("RUN --network=none --mount=type=cache,target=/c echo").kind {
            Kind::Run { network, mounts, .. } => {
                assert_eq!(network.as_deref(), Some("none"));
                assert_eq!(mounts, vec!["type=cache,target=/c".to_string()]);
            }
            k => panic!("{k:?}"),
        }
        assert!(perr("FROM a\nRUN --frob=1 x\n").msg.contains("unknown flag"));
        assert!(perr("FROM a\nRUN --network x\n").msg.contains("needs a value"));
        assert!(perr("FROM a\nRUN\n").msg.contains("requires at least one"));
    }

    #[test]
    fn heredocs() {
        let df = parse("FROM a\nRUN <<EOF\necho one\necho $HOME\nEOF\nRUN cat <<-\"END\" > /x\n\tliteral $x\n\tEND\nCMD x\n").unwrap();
        let ins = &df.stages[0].instructions;
        assert_eq!(ins.len(), 3);
        match &ins[0].kind {
            Kind::Run { cmd, heredocs, .. } => {
                assert_eq!(cmd, &Form::Shell("<<EOF".into()));
                assert_eq!(heredocs, &vec![Heredoc { name: "EOF".into(), content: "echo one\necho $HOME\n".into(), expand: true }]);
            }
            k => panic!("{k:?}"),
        }
        match &ins[1].kind {
            Kind::Run { heredocs, .. } => {
                assert_eq!(heredocs, &vec![Heredoc { name: "END".into(), content: "literal $x\n".into(), expand: false }])
            }
            k => panic!("{k:?}"),
        }
        assert_eq!(ins[2].line, 9);
        match one("COPY <<A <<B /dst/\na\nA\nb\nB").kind {
            Kind::Copy(c) => {
                assert_eq!(c.srcs, vec!["<<A", "<<B"]);
                assert_eq!(c.heredocs.len(), 2);
                assert_eq!(c.heredocs[1].content, "b\n");
            }
            k => panic!("{k:?}"),
        }
        let e = perr("FROM a\nRUN <<EOF\necho\n");
        assert_eq!(e.line, 2);
        assert!(e.msg.contains("unterminated heredoc EOF"));
    }

    #[test]
    fn env_and_label_forms() {
        assert_eq!(
            one("ENV A=1 B=\"two words\" C=a\\ b").kind,
            Kind::Env(vec![("A".into(), "1".into()), ("B".into(), "\"two words\"".into()), ("C".into(), "a\\ b".into())])
        );
        assert_eq!(one("ENV PATH /usr/bin:$PATH").kind, Kind::Env(vec![("PATH".into(), "/usr/bin:$PATH".into())]));
        assert_eq!(one("ENV MSG hello   world").kind, Kind::Env(vec![("MSG".into(), "hello   world".into())]));
        assert!(perr("FROM a\nENV A\n").msg.contains("two arguments"));
        assert!(perr("FROM a\nENV A=1 B\n").msg.contains("can't find ="));
        assert!(perr("FROM a\nENV =1\n").msg.contains("empty name"));
        assert!(perr("FROM a\nENV\n").msg.contains("at least one"));
        assert_eq!(
            one("LABEL \"com.x\"=\"a b\" v=1").kind,
            Kind::Label(vec![("\"com.x\"".into(), "\"a b\"".into()), ("v".into(), "1".into())])
        );
    }

    #[test]
    fn config_instructions() {
        assert_eq!(one("CMD echo hi").kind, Kind::Cmd(Form::Shell("echo hi".into())));
        assert_eq!(one("CMD [\"a\",\"b\"]").kind, Kind::Cmd(Form::Exec(vec!["a".into(), "b".into()])));
        assert_eq!(one("CMD []").kind, Kind::Cmd(Form::Exec(vec![])));
        assert_eq!(one("ENTRYPOINT [\"/bin/app\"]").kind, Kind::Entrypoint(Form::Exec(vec!["/bin/app".into()])));
        assert_eq!(one("EXPOSE 80 443/udp $P").kind, Kind::Expose(vec!["80".into(), "443/udp".into(), "$P".into()]));
        assert_eq!(one("WORKDIR /a b").kind, Kind::Workdir("/a b".into()));
        assert_eq!(one("USER 1000:1000").kind, Kind::User("1000:1000".into()));
        assert_eq!(one("VOLUME [\"/a\", \"/b\"]").kind, Kind::Volume(vec!["/a".into(), "/b".into()]));
        assert_eq!(one("VOLUME /a /b").kind, Kind::Volume(vec!["/a".into(), "/b".into()]));
        assert_eq!(one("STOPSIGNAL SIGINT").kind, Kind::StopSignal("SIGINT".into()));
        assert_eq!(one("SHELL [\"/bin/bash\", \"-c\"]").kind, Kind::Shell(vec!["/bin/bash".into(), "-c".into()]));
        assert_eq!(one("MAINTAINER Jo <jo@x>").kind, Kind::Maintainer("Jo <jo@x>".into()));
        assert!(perr("FROM a\nSHELL /bin/bash -c\n").msg.contains("JSON"));
        assert!(perr("FROM a\nSTOPSIGNAL A B\n").msg.contains("exactly one"));
        assert!(perr("FROM a\nVOLUME [\"\"]\n").msg.contains("empty"));
        assert!(perr("FROM a\nWORKDIR\n").msg.contains("at least one"));
        assert!(perr("FROM a\nCMD --x=1 a\n").msg.contains("unknown flag"));
    }

    #[test]
    fn healthcheck() {
        assert_eq!(one("HEALTHCHECK NONE").kind, Kind::Healthcheck(Health::default()));
        match one("HEALTHCHECK --interval=5m --timeout=3s --retries=3 --start-period=1m30s CMD curl -f http://x/ || exit 1").kind {
            Kind::Healthcheck(h) => {
                assert_eq!(h.test, Some(Form::Shell("curl -f http://x/ || exit 1".into())));
                assert_eq!(h.interval, Some(300_000_000_000));
                assert_eq!(h.timeout, Some(3_000_000_000));
                assert_eq!(h.start_period, Some(90_000_000_000));
                assert_eq!(h.retries, Some(3));
            }
            k => panic!("{k:?}"),
        }
        assert!(perr("FROM a\nHEALTHCHECK --interval=5 CMD x\n").msg.contains("not a duration"));
        assert!(perr("FROM a\nHEALTHCHECK --retries=0 CMD x\n").msg.contains("at least 1"));
        assert!(perr("FROM a\nHEALTHCHECK FOO\n").msg.contains("unknown type"));
        assert!(perr("FROM a\nHEALTHCHECK NONE x\n").msg.contains("no arguments"));
    }

    #[test]
    fn onbuild() {
        match one("ONBUILD run echo hi").kind {
            Kind::Onbuild(text, ins) => {
                assert_eq!(text, "RUN echo hi");
                assert!(matches!(ins.kind, Kind::Run { .. }));
            }
            k => panic!("{k:?}"),
        }
        assert!(perr("FROM a\nONBUILD ONBUILD RUN x\n").msg.contains("Chaining"));
        assert!(perr("FROM a\nONBUILD FROM x\n").msg.contains("isn't allowed"));
        assert!(perr("FROM a\nONBUILD BOGUS x\n").msg.contains("unknown instruction"));
    }

    #[test]
    fn copy_and_add() {
        match one("COPY --from=build --chown=1:2 --chmod=0755 /out/app \"/usr/local/bin/my app\"").kind {
            Kind::Copy(c) => {
                assert!(!c.add);
                assert_eq!(c.from.as_deref(), Some("build"));
                assert_eq!(c.chown.as_deref(), Some("1:2"));
                assert_eq!(c.chmod.as_deref(), Some("0755"));
                assert_eq!(c.srcs, vec!["/out/app"]);
                assert_eq!(c.dest, "\"/usr/local/bin/my app\"");
            }
            k => panic!("{k:?}"),
        }
        match one("ADD [\"a b\", \"c\", \"/d/\"]").kind {
            Kind::Copy(c) => {
                assert!(c.add && c.json);
                assert_eq!(c.srcs, vec!["a b", "c"]);
                assert_eq!(c.dest, "/d/");
            }
            k => panic!("{k:?}"),
        }
        match one("COPY --link *.c src/ /app/").kind {
            Kind::Copy(c) => assert!(c.link && c.srcs.len() == 2),
            k => panic!("{k:?}"),
        }
        assert!(perr("FROM a\nCOPY onlyone\n").msg.contains("at least two"));
        assert!(perr("FROM a\nADD --from=x a b\n").msg.contains("unknown flag: --from"));
        assert!(perr("FROM a\nCOPY --chown a b\n").msg.contains("needs a value"));
        assert!(perr("FROM a\nCOPY --link=maybe a b\n").msg.contains("true or false"));
        assert!(perr("FROM a\nADD --checksum=sha256:00 a b\n").msg.contains("only for remote URLs"));
        assert!(perr("FROM a\nADD --parents a b\n").msg.contains("unknown flag: --parents"));
        match one("COPY --parents a/./b/*.c /src/").kind {
            Kind::Copy(c) => assert!(c.parents),
            k => panic!("{k:?}"),
        }
        match one("COPY --exclude=*.o --exclude=**/tmp . /app/").kind {
            Kind::Copy(c) => assert_eq!(c.excludes, vec!["*.o", "**/tmp"]),
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn words() {
        assert_eq!(split_words("a  'b c' \"d \\\" e\" f\\ g", '\\'), vec!["a", "'b c'", "\"d \\\" e\"", "f\\ g"]);
        assert_eq!(split_words("", '\\'), Vec::<String>::new());
        assert_eq!(split_words(" x ", '\\'), vec!["x"]);
    }

    #[test]
    fn durations() {
        assert_eq!(go_duration("30s"), Some(30_000_000_000));
        assert_eq!(go_duration("1h2m"), Some(3_720_000_000_000));
        assert_eq!(go_duration("1.5s"), Some(1_500_000_000));
        assert_eq!(go_duration("250ms"), Some(250_000_000));
        assert_eq!(go_duration("0"), Some(0));
        assert_eq!(go_duration("5"), None);
        assert_eq!(go_duration("s"), None);
        assert_eq!(go_duration("5x"), None);
    }
}

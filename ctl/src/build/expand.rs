//! Variable substitution in Dockerfile words, as docker's builder does it for ADD, COPY,
//! ENV, ARG, EXPOSE, FROM, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR (and ONBUILD triggers
//! of those): `$VAR`, `${VAR}`, `${VAR:-word}`, `${VAR-word}`, `${VAR:+word}`,
//! `${VAR+word}`, `${VAR:?msg}`, `${VAR?msg}`, `${VAR#pat}`, `${VAR##pat}`, `${VAR%pat}`,
//! `${VAR%%pat}`; quotes are removed (`'…'` literal, `"…"` expands), the escape character
//! (`\` or the `# escape=` one) makes the next character literal (inside double quotes only
//! before `"`, `$` and itself). An unset variable expands to nothing. RUN, CMD and
//! ENTRYPOINT are not expanded here: their shell does it.

/// Expands one word. `lookup` gives a variable's value (None: unset).
pub fn expand(word: &str, escape: char, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let chars: Vec<char> = word.chars().collect();
    let mut lx = Lexer { chars: &chars, pos: 0, escape, lookup };
    let out = lx.process(None)?;
    Ok(out)
}

/// Expands a word and splits the result on whitespace outside quotes (EXPOSE, where
/// `EXPOSE $PORTS` with `PORTS="80 443"` is two ports).
pub fn expand_fields(word: &str, escape: char, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Vec<String>, String> {
    // Quoted whitespace stays inside a field: expand each raw field, then split the
    // results of unquoted expansions.
    let mut out = Vec::new();
    for raw in super::parse::split_words(word, escape) {
        let quoted = raw.contains(['"', '\'']);
        let e = expand(&raw, escape, lookup)?;
        if quoted {
            out.push(e);
        } else {
            out.extend(e.split_whitespace().map(str::to_string));
        }
    }
    Ok(out)
}

struct Lexer<'a> {
    chars: &'a [char],
    pos: usize,
    escape: char,
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    /// Processes until the end, or until `stop` (unquoted, unescaped; consumed).
    fn process(&mut self, stop: Option<char>) -> Result<String, String> {
        let mut out = String::new();
        loop {
            let Some(c) = self.next() else {
                if let Some(s) = stop {
                    return Err(format!("missing '{s}'"));
                }
                return Ok(out);
            };
            if Some(c) == stop {
                return Ok(out);
            }
            match c {
                '\'' => loop {
                    match self.next() {
                        Some('\'') => break,
                        Some(x) => out.push(x),
                        None => return Err("unexpected end of statement while looking for matching single-quote".into()),
                    }
                },
                '"' => self.double_quoted(&mut out)?,
                '$' => out.push_str(&self.dollar()?),
                c if c == self.escape => match self.next() {
                    Some(x) => out.push(x),
                    // A lone escape at the end stays (docker keeps it).
                    None => out.push(c),
                },
                c => out.push(c),
            }
        }
    }

    fn double_quoted(&mut self, out: &mut String) -> Result<(), String> {
        loop {
            match self.next() {
                Some('"') => return Ok(()),
                Some('$') => out.push_str(&self.dollar()?),
                Some(c) if c == self.escape => match self.peek() {
                    Some(x) if x == '"' || x == '$' || x == self.escape => {
                        self.pos += 1;
                        out.push(x);
                    }
                    _ => out.push(c),
                },
                Some(c) => out.push(c),
                None => return Err("unexpected end of statement while looking for matching double-quote".into()),
            }
        }
    }

    fn name(&mut self) -> String {
        let mut n = String::new();
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                n.push(c);
                self.pos += 1;
            } else {
                break;
            }
        }
        n
    }

    /// After a `$`.
    fn dollar(&mut self) -> Result<String, String> {
        match self.peek() {
            Some('{') => {
                self.pos += 1;
                self.braced()
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let n = self.name();
                Ok((self.lookup)(&n).unwrap_or_default())
            }
            // `$` before anything else is a literal `$`.
            _ => Ok("$".into()),
        }
    }

    /// After `${`.
    fn braced(&mut self) -> Result<String, String> {
        let n = self.name();
        if n.is_empty() || n.starts_with(|c: char| c.is_ascii_digit()) {
            let rest: String = self.chars[self.pos..].iter().take(20).collect();
            return Err(format!("bad substitution: ${{{n}{rest}"));
        }
        let val = (self.lookup)(&n);
        let Some(c) = self.next() else { return Err(format!("missing '}}' after ${{{n}")) };
        if c == '}' {
            return Ok(val.unwrap_or_default());
        }
        let colon = c == ':';
        let op = if colon { self.next().ok_or_else(|| format!("missing '}}' after ${{{n}:"))? } else { c };
        match op {
            '-' | '+' | '?' => {
                let word = self.process(Some('}'))?;
                let set = if colon { val.as_deref().is_some_and(|v| !v.is_empty()) } else { val.is_some() };
                Ok(match op {
                    '-' if set => val.unwrap_or_default(),
                    '-' => word,
                    '+' if set => word,
                    '+' => String::new(),
                    _ if set => val.unwrap_or_default(),
                    _ => return Err(format!("{n}: {}", if word.is_empty() { "is not allowed to be unset" } else { &word })),
                })
            }
            '#' | '%' if !colon => {
                let longest = self.peek() == Some(op);
                if longest {
                    self.pos += 1;
                }
                let pat = self.process(Some('}'))?;
                let v = val.unwrap_or_default();
                Ok(trim_pattern(&v, &pat, op == '#', longest))
            }
            other => Err(format!("unsupported modifier ({}{other}) in substitution ${{{n}", if colon { ":" } else { "" })),
        }
    }
}

/// `${v#pat}` (prefix) / `${v%pat}` (suffix), shortest or longest glob match removed.
fn trim_pattern(v: &str, pat: &str, prefix: bool, longest: bool) -> String {
    let idx: Vec<usize> = v.char_indices().map(|(i, _)| i).chain(std::iter::once(v.len())).collect();
    let cands: Box<dyn Iterator<Item = &usize>> = if longest == prefix { Box::new(idx.iter().rev()) } else { Box::new(idx.iter()) };
    for &i in cands {
        let (matched, rest) = if prefix { (&v[..i], &v[i..]) } else { (&v[i..], &v[..i]) };
        if super::glob::matches(pat, matched, false) {
            return rest.to_string();
        }
    }
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "A" => Some("a".into()),
            "B" => Some("hello world".into()),
            "E" => Some(String::new()),
            "P" => Some("/usr/local/bin".into()),
            "F" => Some("archive.tar.gz".into()),
            _ => None,
        }
    }

    fn x(w: &str) -> String {
        expand(w, '\\', &env).unwrap()
    }

    #[test]
    fn plain_and_braced() {
        assert_eq!(x("$A"), "a");
        assert_eq!(x("${A}"), "a");
        assert_eq!(x("${A}_b"), "a_b");
        assert_eq!(x("$A_b"), "", "$A_b is the variable A_b");
        assert_eq!(x("x$A/y"), "xa/y");
        assert_eq!(x("$NOPE"), "");
        assert_eq!(x("${NOPE}z"), "z");
        assert_eq!(x("cost $5"), "cost $5");
        assert_eq!(x("$"), "$");
        assert_eq!(x("a$-b"), "a$-b");
    }

    #[test]
    fn modifiers() {
        assert_eq!(x("${A:-d}"), "a");
        assert_eq!(x("${NOPE:-d}"), "d");
        assert_eq!(x("${E:-d}"), "d");
        assert_eq!(x("${E-d}"), "");
        assert_eq!(x("${NOPE-d}"), "d");
        assert_eq!(x("${A:+x}"), "x");
        assert_eq!(x("${E:+x}"), "");
        assert_eq!(x("${E+x}"), "x");
        assert_eq!(x("${NOPE:+x}"), "");
        assert_eq!(x("${NOPE:-$A}"), "a");
        assert_eq!(x("${NOPE:-${A:+yes}}"), "yes");
        assert_eq!(x("${NOPE:-a b}"), "a b");
        assert_eq!(x("${A:?must be set}"), "a");
        assert_eq!(expand("${NOPE:?must be set}", '\\', &env).unwrap_err(), "NOPE: must be set");
        assert!(expand("${E:?}", '\\', &env).is_err());
        assert_eq!(x("${E?}"), "");
    }

    #[test]
    fn patterns() {
        assert_eq!(x("${P#*/}"), "usr/local/bin");
        assert_eq!(x("${P##*/}"), "bin");
        assert_eq!(x("${P%/*}"), "/usr/local");
        assert_eq!(x("${P%%/l*}"), "/usr");
        assert_eq!(x("${F%.*}"), "archive.tar");
        assert_eq!(x("${F%%.*}"), "archive");
        assert_eq!(x("${F#nomatch}"), "archive.tar.gz");
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(x("'$A'"), "$A");
        assert_eq!(x("\"$A\""), "a");
        assert_eq!(x("\"$B\""), "hello world");
        assert_eq!(x("\\$A"), "$A");
        assert_eq!(x("\\${A}"), "${A}");
        assert_eq!(x("\"a\\\"b\""), "a\"b");
        assert_eq!(x("\"a\\nb\""), "a\\nb");
        assert_eq!(x("a\\ b"), "a b");
        assert_eq!(x("'it''s'"), "its");
        assert_eq!(x("\"x\"'y'z"), "xyz");
        assert_eq!(expand("`$A", '`', &env).unwrap(), "$A");
        assert_eq!(expand("C:\\dir", '`', &env).unwrap(), "C:\\dir");
    }

    #[test]
    fn errors() {
        assert!(expand("'abc", '\\', &env).unwrap_err().contains("single-quote"));
        assert!(expand("\"abc", '\\', &env).unwrap_err().contains("double-quote"));
        assert!(expand("${A", '\\', &env).is_err());
        assert!(expand("${A:-x", '\\', &env).unwrap_err().contains("missing '}'"));
        assert!(expand("${}", '\\', &env).unwrap_err().contains("bad substitution"));
        assert!(expand("${1}", '\\', &env).unwrap_err().contains("bad substitution"));
        assert!(expand("${A/x/y}", '\\', &env).unwrap_err().contains("unsupported modifier"));
    }

    #[test]
    fn fields() {
        let f = |w: &str| expand_fields(w, '\\', &|k| if k == "PORTS" { Some("80 443/udp".into()) } else { None }).unwrap();
        assert_eq!(f("$PORTS 22"), vec!["80", "443/udp", "22"]);
        assert_eq!(f("\"$PORTS\""), vec!["80 443/udp"]);
    }
}

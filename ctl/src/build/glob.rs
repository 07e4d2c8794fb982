//! Glob matching as docker's builder does it: Go's `filepath.Match` (`*`, `?`, `[a-z]`,
//! `[!x]`/`[^x]`, the escape `\`) for COPY/ADD sources, plus `**` (any number of path
//! components) for `.dockerignore`; with `slash = false`, `*` also matches `/` (shell
//! patterns of `${VAR#pat}`).

/// Whether `name` matches `pat`.
pub fn matches(pat: &str, name: &str, slash: bool) -> bool {
    let p: Vec<char> = pat.chars().collect();
    let n: Vec<char> = name.chars().collect();
    m(&p, &n, slash)
}

fn m(p: &[char], n: &[char], slash: bool) -> bool {
    if p.is_empty() {
        return n.is_empty();
    }
    match p[0] {
        '*' if slash && p.get(1) == Some(&'*') => {
            // `**`: any number of components; `**/` may match nothing at all.
            let rest = &p[2..];
            let rest_after_slash = rest.strip_prefix(&['/']).unwrap_or(rest);
            if m(rest_after_slash, n, slash) {
                return true;
            }
            (0..=n.len()).any(|i| m(rest, &n[i..], slash))
        }
        '*' => {
            let rest = &p[1..];
            for i in 0..=n.len() {
                if m(rest, &n[i..], slash) {
                    return true;
                }
                if i < n.len() && slash && n[i] == '/' {
                    return false;
                }
            }
            false
        }
        '?' => n.first().is_some_and(|c| !(slash && *c == '/')) && m(&p[1..], &n[1..], slash),
        '[' => {
            let Some(c) = n.first() else { return false };
            match class(&p[1..], *c) {
                Some((ok, used)) => ok && !(slash && *c == '/') && m(&p[1 + used..], &n[1..], slash),
                // A malformed class matches itself literally.
                None => *c == '[' && m(&p[1..], &n[1..], slash),
            }
        }
        '\\' if p.len() > 1 => !n.is_empty() && n[0] == p[1] && m(&p[2..], &n[1..], slash),
        c => !n.is_empty() && n[0] == c && m(&p[1..], &n[1..], slash),
    }
}

/// A `[...]` class after its `[`: (matches, chars used including `]`).
fn class(p: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 0;
    let negate = matches!(p.first(), Some('!') | Some('^'));
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    loop {
        let ch = *p.get(i)?;
        if ch == ']' && !first {
            return Some((hit != negate, i + 1));
        }
        first = false;
        let lo = if ch == '\\' {
            i += 1;
            *p.get(i)?
        } else {
            ch
        };
        i += 1;
        if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|x| *x != ']') {
            let hi = if p[i + 1] == '\\' {
                i += 1;
                *p.get(i + 1)?
            } else {
                p[i + 1]
            };
            i += 2;
            if lo <= c && c <= hi {
                hit = true;
            }
        } else if lo == c {
            hit = true;
        }
    }
}

/// Whether a pattern has glob characters at all.
pub fn has_meta(p: &str) -> bool {
    p.contains(['*', '?', '['])
}

/// `.dockerignore`: patterns (cleaned, leading `/` dropped), `!` exceptions; the last
/// matching line wins. A path is also excluded when one of its parent directories is.
#[derive(Debug, Default, Clone)]
pub struct Ignore {
    rules: Vec<(bool, String)>,
}

impl Ignore {
    pub fn parse(text: &str) -> Ignore {
        let mut rules = Vec::new();
        for line in text.lines() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let (neg, p) = match l.strip_prefix('!') {
                Some(r) => (true, r.trim()),
                None => (false, l),
            };
            let clean = clean(p);
            if clean.is_empty() {
                continue;
            }
            rules.push((neg, clean));
        }
        Ignore { rules }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether `path` (relative to the context, `/`-separated) is excluded. The context
    /// itself (`""`) never is (`*` excludes what is in it).
    pub fn excluded(&self, path: &str) -> bool {
        if path.is_empty() {
            return false;
        }
        let mut out = false;
        for (neg, pat) in &self.rules {
            // A pattern also matches everything below what it matches.
            let hit = matches(pat, path, true) || parents(path).any(|p| matches(pat, p, true));
            if hit {
                out = !neg;
            }
        }
        out
    }

    /// Whether the excluded directory `dir` is still walked: some exception names a path
    /// below it literally (`!build/keep/k.txt` or `!build/*.c` for `build`). The directory
    /// is then copied (even if nothing in it is re-included), with whatever the rules let
    /// through below it. An exception whose leading directories are globs (`!**/keep.txt`,
    /// `!*/x`) re-includes nothing under an excluded directory. This is docker 20.10's
    /// BuildKit (fsutil's walker), checked side by side.
    pub fn may_reinclude(&self, dir: &str) -> bool {
        let prefix = format!("{dir}/");
        self.rules.iter().filter(|(neg, _)| *neg).any(|(_, p)| format!("{p}/").starts_with(&prefix))
    }
}

fn parents(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

/// `./a//b/../c/` → `a/c` (Go's filepath.Clean, relative, leading `/` dropped).
pub fn clean(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_filepath_match() {
        assert!(matches("*.c", "main.c", true));
        assert!(!matches("*.c", "src/main.c", true));
        assert!(matches("src/*.c", "src/main.c", true));
        assert!(matches("?.txt", "a.txt", true));
        assert!(!matches("?.txt", "ab.txt", true));
        assert!(matches("[a-c]x", "bx", true));
        assert!(!matches("[!a-c]x", "bx", true));
        assert!(matches("[^a-c]x", "dx", true));
        assert!(matches("a\\*b", "a*b", true));
        assert!(!matches("a\\*b", "axb", true));
        assert!(matches("*", "", true));
        assert!(matches("file", "file", true));
        assert!(!matches("file", "file2", true));
        assert!(matches("*", "a/b", false));
    }

    #[test]
    fn double_star() {
        assert!(matches("**/*.o", "a/b/c.o", true));
        assert!(matches("**/*.o", "c.o", true));
        assert!(matches("a/**", "a/b/c", true));
        assert!(matches("a/**/z", "a/z", true));
        assert!(matches("a/**/z", "a/b/c/z", true));
        assert!(!matches("a/**/z", "b/z", true));
    }

    #[test]
    fn dockerignore_rules() {
        let i = Ignore::parse("# comment\n*.log\n/build\n!build/keep.txt\nnode_modules\n\n  tmp/  \n**/*.swp\n");
        assert!(i.excluded("x.log"));
        assert!(!i.excluded("d/x.log"), "*.log is for the top level only");
        assert!(i.excluded("build"));
        assert!(i.excluded("build/out.o"));
        assert!(!i.excluded("build/keep.txt"));
        assert!(i.excluded("node_modules/a/b.js"));
        assert!(i.excluded("tmp/x"));
        assert!(i.excluded("a/b/.c.swp"));
        assert!(!i.excluded("src/main.c"));
        assert!(i.may_reinclude("build"));
        assert!(!i.may_reinclude("node_modules"));
        // Only an exception naming a path below the directory literally walks into it.
        let globbed = Ignore::parse("node\nbuild\n!**/keep.txt\n!nod*/x\n!build/*.c\n");
        assert!(!globbed.may_reinclude("node"));
        assert!(globbed.may_reinclude("build"));
        assert!(!globbed.may_reinclude("buil"));
        // `*` excludes what is in the context, never the context itself.
        let star = Ignore::parse("*\n!keep.txt\n");
        assert!(!star.excluded(""));
        assert!(star.excluded("a"));
        assert!(!star.excluded("keep.txt"));
        let last_wins = Ignore::parse("!a.txt\n*.txt\n");
        assert!(last_wins.excluded("a.txt"));
        assert!(Ignore::parse("\n# only\n").is_empty());
    }

    #[test]
    fn cleaning() {
        assert_eq!(clean("./a//b/../c/"), "a/c");
        assert_eq!(clean("/abs"), "abs");
        assert_eq!(clean("../../x"), "x");
        assert_eq!(clean("."), "");
    }
}

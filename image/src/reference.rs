//! Image names as docker normalises them: `busybox` is `docker.io/library/busybox:latest`,
//! `me/app:1` is `docker.io/me/app:1`, `reg.example:5000/x` keeps its registry.

use crate::digest::Digest;
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `docker.io/library/busybox`
    pub repo: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Reference {
    /// Parses `s`; a missing tag becomes `latest` unless a digest is given.
    pub fn parse(s: &str) -> Result<Reference> {
        let bad = |why: &str| Error::new(format!("invalid reference format {s:?}: {why}"));
        if s.is_empty() || s.len() > 4096 {
            return Err(bad("empty or too long"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(Digest::parse(d)?)),
            None => (s, None),
        };
        // A tag is after the last ':' that comes after the last '/'.
        let slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[slash..].rfind(':') {
            Some(i) => (&rest[..slash + i], Some(rest[slash + i + 1..].to_string())),
            None => (rest, None),
        };
        if let Some(t) = &tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
                && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !ok {
                return Err(bad("tag: letters, digits, _ . - (at most 128, not starting with . or -)"));
            }
        }
        let mut parts: Vec<&str> = name.split('/').collect();
        let domain = if parts.len() > 1 && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost") {
            parts.remove(0).to_string()
        } else {
            "docker.io".to_string()
        };
        if domain == "docker.io" && parts.len() == 1 {
            parts.insert(0, "library");
        }
        for p in &parts {
            let ok = !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && p.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                && p.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
            if !ok {
                return Err(bad("repository name must be lowercase letters, digits and separators"));
            }
        }
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_string()),
            _ => tag,
        };
        Ok(Reference { repo: format!("{domain}/{}", parts.join("/")), tag, digest })
    }

    /// `docker.io/library/busybox:latest`: the key of the tags table.
    pub fn full(&self) -> String {
        match (&self.tag, &self.digest) {
            (Some(t), _) => format!("{}:{t}", self.repo),
            (None, Some(d)) => format!("{}@{d}", self.repo),
            (None, None) => self.repo.clone(),
        }
    }
}

/// The repository as docker shows it: `busybox`, `me/app`, `reg.example/x`.
pub fn familiar(repo: &str) -> &str {
    let r = repo.strip_prefix("docker.io/").unwrap_or(repo);
    if repo.starts_with("docker.io/") {
        r.strip_prefix("library/").unwrap_or(r)
    } else {
        r
    }
}

/// Splits a stored full tag `repo:tag` into (repo, tag).
pub fn split_tag(full: &str) -> (&str, &str) {
    let slash = full.rfind('/').map(|i| i + 1).unwrap_or(0);
    match full[slash..].rfind(':') {
        Some(i) => (&full[..slash + i], &full[slash + i + 1..]),
        None => (full, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_docker() {
        assert_eq!(Reference::parse("busybox").unwrap().full(), "docker.io/library/busybox:latest");
        assert_eq!(Reference::parse("me/app:1.0").unwrap().full(), "docker.io/me/app:1.0");
        assert_eq!(Reference::parse("localhost:5000/x").unwrap().full(), "localhost:5000/x:latest");
        assert_eq!(Reference::parse("reg.io/a/b:t").unwrap().repo, "reg.io/a/b");
        let d = format!("busybox@sha256:{}", "a".repeat(64));
        assert_eq!(Reference::parse(&d).unwrap().tag, None);
        for bad in ["Busybox", "a:", "a:-x", "/a", "a//b", "a@sha256:zz", ""] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(familiar("docker.io/library/busybox"), "busybox");
        assert_eq!(familiar("docker.io/me/app"), "me/app");
        assert_eq!(familiar("localhost:5000/x"), "localhost:5000/x");
        assert_eq!(split_tag("localhost:5000/x:1"), ("localhost:5000/x", "1"));
    }
}

//! Content digests (`sha256:<64 hex>`, `sha512:<128 hex>`), validated before they name
//! anything on disk (CVE-2024-3727: a digest from a manifest or an archive used as a path).

use std::fmt;

use sha2::Digest as _;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algo {
    Sha256,
    Sha512,
}

impl Algo {
    pub fn name(self) -> &'static str {
        match self {
            Algo::Sha256 => "sha256",
            Algo::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algo::Sha256 => 64,
            Algo::Sha512 => 128,
        }
    }
}

/// A digest whose form has been checked: a known algorithm and exactly the right number
/// of lowercase hex digits, so `algo/hex` is always a safe file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algo: Algo,
    hex: String,
}

impl Digest {
    /// Parses and validates `s` (`sha256:…`); the error quotes at most 80 characters of it.
    pub fn parse(s: &str) -> Result<Digest> {
        let bad = |why: &str| {
            let shown: String = s.chars().take(80).collect();
            Error::new(format!("invalid digest {shown:?}: {why}"))
        };
        let (algo, hex) = s.split_once(':').ok_or_else(|| bad("want ALGORITHM:HEX"))?;
        let algo = match algo {
            "sha256" => Algo::Sha256,
            "sha512" => Algo::Sha512,
            _ => return Err(bad("unsupported algorithm (sha256 or sha512)")),
        };
        if hex.len() != algo.hex_len() || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(bad(&format!("want {} lowercase hex digits", algo.hex_len())));
        }
        Ok(Digest { algo, hex: hex.to_string() })
    }

    /// The sha256 digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        let mut h = Hasher::new(Algo::Sha256);
        h.update(data);
        h.finish()
    }

    pub fn algo(&self) -> Algo {
        self.algo
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The 12-character short id docker shows.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }

    /// The chain id of a layer on top of `parent` (image-spec: `ChainID(L₀|…|Lₙ) =
    /// Digest(ChainID(L₀|…|Lₙ₋₁) + " " + DiffID(Lₙ))`).
    pub fn chain(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
        match parent {
            None => diff_id.clone(),
            Some(p) => Digest::of(format!("{p} {diff_id}").as_bytes()),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algo.name(), self.hex)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A running hash of one algorithm.
#[derive(Clone)]
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn new(algo: Algo) -> Hasher {
        match algo {
            Algo::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algo::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Digest {
        let (algo, bytes) = match self {
            Hasher::Sha256(h) => (Algo::Sha256, h.finalize().to_vec()),
            Hasher::Sha512(h) => (Algo::Sha512, h.finalize().to_vec()),
        };
        Digest { algo, hex: to_hex(&bytes) }
    }
}

pub fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// A reader that hashes what passes through it and counts the bytes.
pub struct HashReader<R> {
    inner: R,
    hasher: Hasher,
    count: u64,
}

impl<R: std::io::Read> HashReader<R> {
    pub fn new(inner: R, algo: Algo) -> Self {
        HashReader { inner, hasher: Hasher::new(algo), count: 0 }
    }

    /// Reads what is left (a tar reader stops at the end marker; the digest covers the
    /// whole stream), then returns the digest and the byte count.
    pub fn finish(mut self) -> std::io::Result<(Digest, u64)> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        Ok((self.hasher.finish(), self.count))
    }
}

impl<R: std::io::Read> std::io::Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_form() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert_eq!(Digest::parse(&good).unwrap().to_string(), good);
        assert!(Digest::parse(&format!("sha512:{}", "0".repeat(128))).is_ok());
        for bad in [
            "sha256:../../etc/passwd".to_string(),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}", "a".repeat(63)),
            format!("sha256:{}/", "a".repeat(63)),
            format!("md5:{}", "a".repeat(32)),
            "sha256".to_string(),
            format!("sha256:{}", "a".repeat(65)),
        ] {
            assert!(Digest::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hashes_and_chains() {
        assert_eq!(Digest::of(b"").hex(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        assert_eq!(Digest::chain(None, &a), a);
        assert_eq!(Digest::chain(Some(&a), &b), Digest::of(format!("{a} {b}").as_bytes()));
    }
}

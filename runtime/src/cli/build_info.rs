//! How this `capsa` binary was built, for `--version` and `features`: the commit (from
//! build.rs), the compiler, and what the running executable is — statically linked or not,
//! position-independent or not — read from its own ELF headers. `hack/build.sh` (and so
//! `hack/install.sh`) makes the static non-PIE build the benchmarks measure; a plain
//! `cargo build --release` makes a dynamic PIE one, measurably slower to start.

/// Facts about the running binary.
pub struct BuildInfo {
    pub commit: &'static str,
    pub rustc: &'static str,
    /// `static` (no ELF interpreter) or `dynamic`; `unknown` if the headers could not be read.
    pub linking: &'static str,
    /// `PIE` (ET_DYN) or `non-PIE` (ET_EXEC).
    pub pie: &'static str,
    /// `release` or `debug` (debug assertions on).
    pub profile: &'static str,
}

impl BuildInfo {
    /// `static, non-PIE, release`.
    pub fn summary(&self) -> String {
        format!("{}, {}, {}", self.linking, self.pie, self.profile)
    }

    /// The lines after `capsa version V` in `--version` (runc: commit, spec, go, libseccomp).
    /// No line but the first may contain the word "version": docker's parser takes the last
    /// line that does as the runtime's name and version.
    pub fn lines(&self) -> String {
        format!("commit: {}\nspec: {}\nrustc: {}\nbuild: {}\n", self.commit, capsa::config::OCI_VERSION, self.rustc, self.summary())
    }
}

pub fn get() -> BuildInfo {
    let (linking, pie) = elf_kind().unwrap_or(("unknown", "unknown"));
    BuildInfo {
        commit: env!("CAPSA_COMMIT"),
        rustc: env!("CAPSA_RUSTC"),
        linking,
        pie,
        profile: if cfg!(debug_assertions) { "debug" } else { "release" },
    }
}

/// Reads the ELF header and program headers of /proc/self/exe (64-bit little-endian: the
/// targets capsa supports): ET_EXEC is non-PIE, ET_DYN is PIE; a PT_INTERP header means the
/// dynamic loader is involved.
fn elf_kind() -> Option<(&'static str, &'static str)> {
    use std::io::{Read, Seek, SeekFrom};
    const ET_EXEC: u16 = 2;
    const ET_DYN: u16 = 3;
    const PT_INTERP: u32 = 3;
    let mut f = std::fs::File::open("/proc/self/exe").ok()?;
    let mut eh = [0u8; 64];
    f.read_exact(&mut eh).ok()?;
    if &eh[..4] != b"\x7fELF" || eh[4] != 2 || eh[5] != 1 {
        return None;
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let e_type = u16_at(&eh, 16);
    let phoff = u64::from_le_bytes(eh[32..40].try_into().ok()?);
    let (phentsize, phnum) = (usize::from(u16_at(&eh, 54)), usize::from(u16_at(&eh, 56)));
    if phentsize < 4 || phnum > 256 {
        return None;
    }
    let mut ph = vec![0u8; phentsize * phnum];
    f.seek(SeekFrom::Start(phoff)).ok()?;
    f.read_exact(&mut ph).ok()?;
    let interp = ph.chunks(phentsize).any(|h| u32::from_le_bytes([h[0], h[1], h[2], h[3]]) == PT_INTERP);
    let pie = match e_type {
        ET_EXEC => "non-PIE",
        ET_DYN => "PIE",
        _ => return None,
    };
    Some((if interp { "dynamic" } else { "static" }, pie))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_its_own_headers() {
        // The test binary is a normal cargo build: dynamically linked PIE on Linux.
        assert_eq!(super::elf_kind(), Some(("dynamic", "PIE")));
    }
}

//! Container names: docker's rule for what a name may be, and a random
//! `adjective_noun` when none is given (our own word lists).

use crate::cli::{fail, Failure, Result};

const ADJECTIVES: &[&str] = &[
    "amber", "brave", "calm", "clever", "cosy", "crisp", "daring", "eager", "fancy", "gentle", "glad", "happy", "hardy", "honest", "jolly",
    "keen", "kind", "lively", "lucid", "merry", "mighty", "modest", "nimble", "noble", "patient", "plucky", "polite", "proud", "quick",
    "quiet", "rapid", "ready", "silly", "sleek", "smooth", "snug", "solid", "spry", "steady", "sturdy", "sunny", "swift", "tidy", "tender",
    "vivid", "warm", "wise", "witty", "zesty", "bold",
];

const NOUNS: &[&str] = &[
    "otter", "badger", "falcon", "heron", "lynx", "marten", "osprey", "panda", "puffin", "raven", "robin", "salmon", "seal", "sparrow",
    "stoat", "swift", "tern", "thrush", "trout", "vole", "walrus", "wren", "yak", "zebra", "beaver", "bison", "camel", "crane", "dingo",
    "eagle", "ferret", "gecko", "hare", "ibis", "jackal", "koala", "lemur", "magpie", "newt", "ocelot", "pelican", "quail", "rook",
    "shrew", "tapir", "urchin", "vulture", "weasel", "kestrel", "plover",
];

fn random(n: usize) -> usize {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most 8 bytes into b.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), 8, 0) };
    (u64::from_ne_bytes(b) % n as u64) as usize
}

/// A random name; with `retry` > 0 a digit is appended, as docker does after a collision.
pub fn generate(retry: u32) -> String {
    let base = format!("{}_{}", ADJECTIVES[random(ADJECTIVES.len())], NOUNS[random(NOUNS.len())]);
    if retry == 0 {
        base
    } else {
        format!("{base}{}", random(10))
    }
}

/// docker's rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]+` (a leading `/` is accepted and dropped).
pub fn validate(name: &str) -> Result<()> {
    let n = name.strip_prefix('/').unwrap_or(name);
    let ok = n.len() >= 2
        && n.len() <= 253
        && n.as_bytes()[0].is_ascii_alphanumeric()
        && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Failure { msg: format!("Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"), code: 125 })
    }
}

pub fn in_use(name: &str, by: &str) -> Failure {
    let mut f = fail(format!(
        "Conflict. The container name \"/{name}\" is already in use by container \"{by}\". You have to remove (or rename) that container to be able to reuse that name."
    ));
    f.code = 125;
    f
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        assert!(super::validate("web").is_ok());
        assert!(super::validate("/web_1.a-b").is_ok());
        for bad in ["", "a", "-x", "a b", "a/b", "ä1"] {
            assert!(super::validate(bad).is_err(), "{bad}");
        }
        let g = super::generate(0);
        assert!(super::validate(&g).is_ok() && g.contains('_'), "{g}");
    }
}

//! Layers brought in (unpacked, downloaded) by a few threads at once: `load` and `pull`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use crate::{Digest, Error, Result};

/// Runs `work` on every job with `workers` threads and returns the results by each job's
/// `key`; the first error stops the threads (each finishes the job it is on) and is returned.
/// `what` names the operation in the error of a panicked worker.
pub fn run<J, D>(
    jobs: VecDeque<J>,
    workers: usize,
    what: &str,
    key: impl Fn(&J) -> Digest + Sync,
    work: impl Fn(&J) -> Result<D> + Sync,
) -> Result<BTreeMap<Digest, D>>
where
    J: Send,
    D: Send,
{
    let queue = Mutex::new(jobs);
    let done: Mutex<BTreeMap<Digest, D>> = Mutex::new(BTreeMap::new());
    let failed: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..workers.max(1) {
            s.spawn(|| loop {
                if failed.lock().map(|f| f.is_some()).unwrap_or(true) {
                    return;
                }
                let Some(job) = queue.lock().ok().and_then(|mut q| q.pop_front()) else { return };
                match work(&job) {
                    Ok(d) => {
                        if let Ok(mut m) = done.lock() {
                            m.insert(key(&job), d);
                        }
                    }
                    Err(e) => {
                        if let Ok(mut f) = failed.lock() {
                            f.get_or_insert(e);
                        }
                        return;
                    }
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().ok().flatten() {
        return Err(e);
    }
    done.into_inner().map_err(|_| Error::new(format!("{what}: a worker thread panicked")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Digest {
        Digest::parse(&format!("sha256:{}", format!("{n:02x}").repeat(32))).unwrap()
    }

    #[test]
    fn all_results_by_key_and_the_first_error() {
        let jobs: VecDeque<u8> = (0..20).collect();
        let out = run(jobs, 3, "t", |j| d(*j), |j| Ok(u32::from(*j) * 2)).unwrap();
        assert_eq!(out.len(), 20);
        assert_eq!(out[&d(7)], 14);
        let jobs: VecDeque<u8> = (0..20).collect();
        let err = run(jobs, 3, "t", |j| d(*j), |j| if *j == 5 { Err(Error::new("five")) } else { Ok(()) }).unwrap_err();
        assert_eq!(err.to_string(), "five");
    }
}

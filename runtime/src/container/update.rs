//! `update`: change the resource limits of a created, running or paused container.
//!
//! As in runc, a value of 0 or an absent field leaves the current limit alone, `devices`
//! are not touched, and the container must not be stopped ("container not running").
//! Everything that can be checked without the kernel is checked before the first write.

use std::path::Path;

use oci_spec::runtime::LinuxResources;

use super::{Container, Status};
use crate::bail;
use crate::error::{Error, Result};

/// Parses a `--resources` document (runc's `specs.LinuxResources` JSON), naming the
/// offending field and position on error.
pub fn parse_resources(json: &[u8]) -> Result<LinuxResources> {
    let de = &mut serde_json::Deserializer::from_slice(json);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            Error::new(format!("--resources: invalid JSON: {inner}"))
        } else {
            Error::new(format!("--resources: linux.resources.{path}: {inner}"))
        }
    })
}

/// Applies `res` to container `id`.
pub fn update(root: &Path, id: &str, res: &LinuxResources) -> Result<()> {
    let c = Container::load(root, id)?;
    if c.status() == Status::Stopped {
        bail!("container not running");
    }
    let r = crate::cgroup::resources_from(res);
    crate::cgroup::apply_paths(&c.state.cgroup_paths, c.state.systemd_unit.as_deref(), c.state.rootless, &r)
}

/// docker/go-units `RAMInBytes`, which runc uses for `update --memory` & co.: a number with
/// an optional binary unit `k`, `m`, `g`, `t`, `p` (any case, optional `b`/`ib`), e.g.
/// `64m`, `1.5G`, `1024`. `-1` is unlimited.
pub fn parse_bytes(s: &str) -> Result<i64> {
    if s == "-1" {
        return Ok(-1);
    }
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim_start().to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => bail!("invalid size: '{s}'"),
    };
    let n: f64 = num.parse().map_err(|_| Error::new(format!("invalid size: '{s}'")))?;
    let v = n * mult;
    if !v.is_finite() || v < 0.0 || v > i64::MAX as f64 {
        bail!("invalid size: '{s}'");
    }
    Ok(v as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_go_units() {
        assert_eq!(parse_bytes("1024").ok(), Some(1024));
        assert_eq!(parse_bytes("64m").ok(), Some(64 << 20));
        assert_eq!(parse_bytes("64MB").ok(), Some(64 << 20));
        assert_eq!(parse_bytes("1g").ok(), Some(1 << 30));
        assert_eq!(parse_bytes("1.5k").ok(), Some(1536));
        assert_eq!(parse_bytes("2 KiB").ok(), Some(2048));
        assert_eq!(parse_bytes("-1").ok(), Some(-1));
        for bad in ["", "x", "1x", "-5", "1..2m"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resources_json_errors_name_the_field() {
        let e = parse_resources(br#"{"memory":{"limit":"x"}}"#).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.starts_with("--resources: linux.resources.memory.limit: "), "{e}");
        assert!(parse_resources(b"{not json").is_err());
        assert!(parse_resources(br#"{"pids":{"limit":5}}"#).is_ok());
    }
}

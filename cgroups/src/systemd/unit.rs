//! Names: `linux.cgroupsPath` `slice:prefix:name` → the scope unit `prefix-name.scope` in
//! `slice`, and the slice's cgroup directory (`a-b-c.slice` is
//! `/a.slice/a-b.slice/a-b-c.slice`, as systemd nests slices).

use crate::error::{Error, Result};

use super::bus::SystemdBus;

/// The container's unit and where systemd puts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnitName {
    /// The `Slice=` of the scope, e.g. `system.slice` or `kubepods-besteffort-pod1.slice`.
    pub slice: String,
    /// `prefix-name.scope` (`name.scope` when the prefix is empty).
    pub unit: String,
}

/// Default slice when the path gives none, as runc: `system.slice` for the system manager,
/// `user.slice` for a user's manager.
fn default_slice(bus: SystemdBus) -> &'static str {
    match bus {
        SystemdBus::System => "system.slice",
        SystemdBus::User => "user.slice",
    }
}

/// Characters systemd allows in a unit name (minus `\` and `@`, which have meanings).
fn valid_chars(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || b":-_.".contains(&b))
}

/// Interprets `linux.cgroupsPath` for the systemd driver: `slice:prefix:name`, any part may
/// be empty but the name; absent or empty is `:capsa:<id>` (runc uses its own name there).
pub(crate) fn parse(cgroups_path: Option<&str>, id: &str, bus: SystemdBus) -> Result<UnitName> {
    let given = cgroups_path.filter(|p| !p.is_empty());
    let shown = given.unwrap_or_default().to_string();
    let bad = |reason: String| Error::CgroupsPath { path: shown.clone(), reason };
    let (slice, prefix, name) = match given {
        None => ("", "capsa", id),
        Some(p) => {
            let parts: Vec<&str> = p.split(':').collect();
            match parts.as_slice() {
                [s, pre, n] => (*s, *pre, *n),
                _ => return Err(bad("the systemd cgroup driver (--systemd-cgroup) expects \"slice:prefix:name\"".into())),
            }
        }
    };
    if name.is_empty() || !valid_chars(name) || !valid_chars(prefix) {
        return Err(bad(format!(
            "prefix {prefix:?} and name {name:?} must be non-empty (the name) and use only letters, digits and \":-_.\" to make a unit name"
        )));
    }
    if name.ends_with(".slice") {
        return Err(bad("a container's unit is a scope: the name must not end in \".slice\"".into()));
    }
    let slice = if slice.is_empty() { default_slice(bus).to_string() } else { slice.to_string() };
    expand_slice(&slice).map_err(|why| bad(format!("slice {slice:?}: {why}")))?;
    let unit = if prefix.is_empty() { format!("{name}.scope") } else { format!("{prefix}-{name}.scope") };
    if unit.len() > 255 {
        return Err(bad(format!("unit name {unit:?} is longer than systemd's 255 characters")));
    }
    Ok(UnitName { slice, unit })
}

/// The cgroup directory of slice `slice`, relative to the manager's root: `a-b.slice` is
/// `/a.slice/a-b.slice`; the root slice `-.slice` is `` (the root itself).
pub(crate) fn expand_slice(slice: &str) -> std::result::Result<String, String> {
    let Some(base) = slice.strip_suffix(".slice") else {
        return Err("a slice name ends in \".slice\"".into());
    };
    if base == "-" {
        return Ok(String::new());
    }
    if base.is_empty() || slice.contains('/') || !valid_chars(slice) {
        return Err("not a valid slice name".into());
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for part in base.split('-') {
        if part.is_empty() {
            return Err("empty component (a leading, trailing or doubled \"-\")".into());
        }
        path.push_str(&format!("/{prefix}{part}.slice"));
        prefix.push_str(part);
        prefix.push('-');
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_nest_by_dash() {
        assert_eq!(expand_slice("system.slice").as_deref(), Ok("/system.slice"));
        assert_eq!(expand_slice("a-b-c.slice").as_deref(), Ok("/a.slice/a-b.slice/a-b-c.slice"));
        assert_eq!(
            expand_slice("kubepods-besteffort-pod12_3.slice").as_deref(),
            Ok("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12_3.slice")
        );
        assert_eq!(expand_slice("-.slice").as_deref(), Ok(""));
        for bad in ["a", ".slice", "a--b.slice", "-a.slice", "a-.slice", "a/b.slice", "a b.slice"] {
            assert!(expand_slice(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cgroups_path_to_unit() {
        let u = |p: Option<&str>| parse(p, "c1", SystemdBus::System);
        assert_eq!(
            u(Some("system.slice:docker:abc")).ok(),
            Some(UnitName { slice: "system.slice".into(), unit: "docker-abc.scope".into() })
        );
        assert_eq!(u(Some(":cri-containerd:ab12")).ok().map(|n| n.slice), Some("system.slice".into()));
        assert_eq!(u(Some("a-b.slice::x")).ok().map(|n| n.unit), Some("x.scope".into()));
        assert_eq!(u(None).ok(), Some(UnitName { slice: "system.slice".into(), unit: "capsa-c1.scope".into() }));
        assert_eq!(parse(Some(""), "c1", SystemdBus::User).ok().map(|n| n.slice), Some("user.slice".into()));
    }

    #[test]
    fn bad_systemd_paths_name_the_field() {
        for p in ["/a/b", "a:b", "a:b:c:d", "x.slice:p:", "x.slice:p:n/m", "x.slice:p q:n", "x:p:n", "x.slice:p:n.slice"] {
            let e = parse(Some(p), "c1", SystemdBus::System).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.starts_with(&format!("linux.cgroupsPath {p:?}: ")), "{p}: {e}");
        }
        let long = format!("system.slice:p:{}", "n".repeat(300));
        assert!(parse(Some(&long), "c1", SystemdBus::System).is_err());
    }
}

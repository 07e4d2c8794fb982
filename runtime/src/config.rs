//! Reading and checking a bundle's config.json.
//!
//! Everything that can be refused by looking at the file is refused here, before any
//! process, mount or cgroup exists, with the JSON path of the offending field.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::bail;
use crate::error::{Context, Error, Result};

/// Oldest and newest ociVersion we accept (major 1, like runc).
pub const OCI_VERSION_MIN: &str = "1.0.0";
pub const OCI_VERSION_MAX: &str = "1.2.1";
/// The version we report in `state` and write with `spec`.
pub const OCI_VERSION: &str = "1.2.1";

/// A bundle's spec with its rootfs resolved to an absolute, existing path.
pub struct Bundle {
    pub dir: PathBuf,
    pub spec: Spec,
    pub rootfs: PathBuf,
    /// What the spec asks for that this host ignores, as runc or crun ignore it (for the
    /// caller to log).
    pub warnings: Vec<String>,
}

/// Loads `<bundle>/config.json` and validates it.
pub fn load(bundle_dir: &Path) -> Result<Bundle> {
    let dir = std::path::absolute(bundle_dir).with_ctx(|| format!("bundle {}", bundle_dir.display()))?;
    let file = dir.join("config.json");
    let text = std::fs::read(&file).with_ctx(|| format!("config.json: cannot read {}", file.display()))?;
    let spec = parse(&text)?;
    let rootfs = validate(&spec, &dir)?;
    let warnings = warnings(&spec);
    Ok(Bundle { dir, spec, rootfs, warnings })
}

/// Fields that are accepted but have no effect here, each with the reason.
pub fn warnings(spec: &Spec) -> Vec<String> {
    let mut w = Vec::new();
    let Some(linux) = spec.linux() else { return w };
    if let Some(label) = linux.mount_label().as_deref().filter(|l| !l.is_empty() && !selinux_enabled()) {
        // crun: a mount label on a host without SELinux is ignored with a warning.
        w.push(format!("linux.mountLabel {label:?}: ignored, SELinux is not enabled on this host"));
    }
    for (i, d) in linux.resources().as_ref().and_then(|r| r.devices().as_ref()).into_iter().flatten().enumerate() {
        if let Some(a) = d.access().as_deref().filter(|a| a.chars().any(|c| !"rwm".contains(c))) {
            // runc keeps r, w and m and drops the rest.
            let kept: String = a.chars().filter(|c| "rwm".contains(*c)).collect();
            let what = if kept.is_empty() { "the rule is ignored".to_string() } else { format!("using {kept:?}") };
            w.push(format!("linux.resources.devices[{i}].access {a:?}: letters other than r, w, m are ignored, {what}"));
        }
    }
    w
}

/// Parses config.json text, naming the JSON path of a field that does not fit.
pub fn parse(text: &[u8]) -> Result<Spec> {
    let de = &mut serde_json::Deserializer::from_slice(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            Error::new(format!("config.json: {inner}"))
        } else {
            Error::new(format!("config.json: {path}: {inner}"))
        }
    })
}

/// Checks what a runtime must refuse before doing anything, returns the rootfs path.
pub fn validate(spec: &Spec, bundle: &Path) -> Result<PathBuf> {
    check_version(spec.version())?;

    let Some(root) = spec.root() else { bail!("root: missing (the rootfs is required)") };
    let rootfs = if root.path().is_absolute() { root.path().clone() } else { bundle.join(root.path()) };
    match std::fs::metadata(&rootfs) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => bail!("root.path {:?}: {} is not a directory", root.path(), rootfs.display()),
        Err(e) => return Err(Error::from(e).context(format!("root.path {:?}: {}", root.path(), rootfs.display()))),
    }
    let rootfs = rootfs.canonicalize().with_ctx(|| format!("root.path {:?}", root.path()))?;

    let Some(process) = spec.process() else { bail!("process: missing") };
    if !process.cwd().is_absolute() {
        bail!("process.cwd {:?}: must be an absolute path", process.cwd());
    }
    match process.args() {
        Some(a) if !a.is_empty() && !a[0].is_empty() => {}
        _ => bail!("process.args: must not be empty"),
    }
    for (i, e) in process.env().iter().flatten().enumerate() {
        if !e.contains('=') {
            bail!("process.env[{i}] {e:?}: must be KEY=VALUE");
        }
    }

    crate::scheduling::check_lsm(process)?;

    let Some(linux) = spec.linux() else { bail!("linux: missing (capsa runs Linux containers)") };
    if linux.intel_rdt().is_some() {
        let why = if std::path::Path::new("/sys/fs/resctrl/info").exists() {
            "not supported by capsa yet"
        } else {
            "resctrl is not mounted on this host"
        };
        bail!("linux.intelRdt: Intel RDT {why}");
    }
    if linux.memory_policy().is_some() {
        bail!("linux.memoryPolicy: not supported by capsa yet");
    }
    if let Some(label) = linux.mount_label().as_deref().filter(|l| !l.is_empty()) {
        // Without SELinux the label means nothing: a warning (see `warnings`), as crun.
        if selinux_enabled() {
            bail!("linux.mountLabel {label:?}: SELinux labels are not supported by capsa yet");
        }
    }
    let mut seen = HashSet::new();
    let mut new_user = false;
    let mut has_user = false;
    for (i, ns) in linux.namespaces().iter().flatten().enumerate() {
        if !seen.insert(ns.typ()) {
            bail!("linux.namespaces[{i}]: namespace type \"{}\" listed twice", ns.typ());
        }
        if ns.typ() == LinuxNamespaceType::User {
            has_user = true;
            new_user = ns.path().is_none();
        }
        if let Some(p) = ns.path() {
            if !p.is_absolute() {
                bail!("linux.namespaces[{i}].path {p:?}: must be an absolute path");
            }
            std::fs::metadata(p).with_ctx(|| format!("linux.namespaces[{i}].path {p:?}"))?;
        }
    }
    if new_user {
        if linux.uid_mappings().as_ref().is_none_or(|m| m.is_empty()) {
            bail!("linux.uidMappings: required with a new user namespace");
        }
        if linux.gid_mappings().as_ref().is_none_or(|m| m.is_empty()) {
            bail!("linux.gidMappings: required with a new user namespace");
        }
    } else if !has_user && (linux.uid_mappings().is_some() || linux.gid_mappings().is_some()) {
        bail!("linux.uidMappings: mappings given but no user namespace in linux.namespaces");
    }
    if spec.hostname().as_deref().is_some_and(|h| !h.is_empty()) && !seen.contains(&LinuxNamespaceType::Uts) {
        bail!("hostname: cannot set without a private UTS namespace");
    }
    if spec.domainname().as_deref().is_some_and(|h| !h.is_empty()) && !seen.contains(&LinuxNamespaceType::Uts) {
        bail!("domainname: cannot set without a private UTS namespace");
    }
    if let Some(limit) = linux.resources().as_ref().and_then(|r| r.memory().as_ref()).and_then(|m| m.limit()) {
        if limit > 0 && limit < 4096 {
            // The kernel rounds the limit down to whole pages: this would be a limit of 0.
            bail!("linux.resources.memory.limit = {limit}: below the kernel minimum (one page, 4096 bytes)");
        }
    }
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        if m.destination().as_os_str().is_empty() {
            bail!("mounts[{i}].destination: must not be empty");
        }
        crate::rootfs::check_mount(i, m)?;
    }
    for (i, d) in linux.devices().iter().flatten().enumerate() {
        if !d.path().is_absolute() {
            bail!("linux.devices[{i}].path {:?}: must be an absolute path", d.path());
        }
    }
    if let Some(p) = linux.rootfs_propagation() {
        if crate::rootfs::propagation_flag(p).is_none() {
            bail!("linux.rootfsPropagation {p:?}: unknown (shared, slave, private, unbindable, rshared, rslave, rprivate, runbindable)");
        }
    }
    if let Some(h) = spec.hooks() {
        let lists = [
            ("prestart", h.prestart()),
            ("createRuntime", h.create_runtime()),
            ("createContainer", h.create_container()),
            ("startContainer", h.start_container()),
            ("poststart", h.poststart()),
            ("poststop", h.poststop()),
        ];
        for (kind, list) in lists {
            for (i, hook) in list.iter().flatten().enumerate() {
                if !hook.path().is_absolute() {
                    bail!("hooks.{kind}[{i}].path {:?}: must be an absolute path", hook.path());
                }
                if hook.timeout().is_some_and(|t| t <= 0) {
                    bail!("hooks.{kind}[{i}].timeout {}: must be positive", hook.timeout().unwrap_or(0));
                }
            }
        }
    }
    Ok(rootfs)
}

fn selinux_enabled() -> bool {
    std::path::Path::new("/sys/fs/selinux/enforce").exists()
}

fn check_version(v: &str) -> Result<()> {
    if v.is_empty() {
        bail!("ociVersion: missing");
    }
    let core = v.split(['-', '+']).next().unwrap_or(v);
    let parts: Vec<&str> = core.split('.').collect();
    let nums: Option<Vec<u64>> = parts.iter().map(|p| p.parse().ok()).collect();
    match nums.as_deref() {
        Some([1, _, _]) => Ok(()),
        Some([_, _, _]) => bail!("ociVersion {v:?}: unsupported, capsa supports {OCI_VERSION_MIN} to {OCI_VERSION_MAX}"),
        _ => bail!("ociVersion {v:?}: not a semantic version"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_checks() {
        assert!(check_version("1.0.2-dev").is_ok());
        assert!(check_version("1.2.0").is_ok());
        assert!(check_version("2.0.0").unwrap_err().to_string().contains("ociVersion"));
        assert!(check_version("abc").is_err());
        assert!(check_version("").is_err());
    }

    #[test]
    fn parse_names_the_field() {
        let e = parse(br#"{"ociVersion":"1.0.0","process":{"cwd":"/","user":{"uid":"x","gid":0}}}"#).unwrap_err();
        assert!(e.to_string().contains("process.user.uid"), "{e}");
        let e = parse(b"{not json").unwrap_err();
        assert!(e.to_string().starts_with("config.json: "), "{e}");
    }
}

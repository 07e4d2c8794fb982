//! The runtime settings containerd hands the shim, in either of the forms it sends them:
//!
//! - runc Options (`containerd.runc.v1.Options`): what containerd sends to a runtime of type
//!   `io.containerd.runc.v2` (and `ctr --runc-binary`), e.g. when containerd ≥ 1.6.21 runs this
//!   shim through `runtime_path`;
//! - containerd's generic runtime options (`runtimeoptions.v1.Options`: `TypeUrl`,
//!   `ConfigPath`, `ConfigBody`), what containerd's CRI sends to a runtime of any other type —
//!   ours, `io.containerd.capsa.v2` — as it does for gVisor's and Kata's shims. The settings are
//!   TOML with runc Options' key names, in the file `ConfigPath` names (every containerd line)
//!   or, with containerd ≥ 1.7 and no `ConfigPath`, in `ConfigBody`: the runtime's whole
//!   `options` table. `TypeUrl`, if set, must be [`CAPSA_OPTIONS_TYPE`].
//!
//! Unknown keys are an error naming the key, so a typo does not silently run the defaults.

use protobuf::well_known_types::any::Any;
use protobuf::{CodedInputStream, Message};
use serde::Deserialize;

use containerd_shim_protos::shim::oci::Options as RuncOptions;

/// The `TypeUrl` of capsa's settings in generic runtime options.
pub const CAPSA_OPTIONS_TYPE: &str = "io.containerd.capsa.v1.options";

/// What the shim takes from the options (runc Options' fields it uses).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub binary_name: String,
    pub root: String,
    pub systemd_cgroup: bool,
    pub no_pivot_root: bool,
    pub no_new_keyring: bool,
    pub io_uid: u32,
    pub io_gid: u32,
    pub shim_cgroup: String,
}

impl From<&RuncOptions> for Settings {
    fn from(o: &RuncOptions) -> Settings {
        Settings {
            binary_name: o.binary_name.clone(),
            root: o.root.clone(),
            systemd_cgroup: o.systemd_cgroup,
            no_pivot_root: o.no_pivot_root,
            no_new_keyring: o.no_new_keyring,
            io_uid: o.io_uid,
            io_gid: o.io_gid,
            shim_cgroup: o.shim_cgroup.clone(),
        }
    }
}

/// The settings in TOML, with runc Options' key names as containerd's config spells them.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct TomlSettings {
    #[serde(default)]
    binary_name: String,
    #[serde(default)]
    root: String,
    #[serde(default)]
    systemd_cgroup: bool,
    #[serde(default)]
    no_pivot_root: bool,
    #[serde(default)]
    no_new_keyring: bool,
    #[serde(default)]
    io_uid: u32,
    #[serde(default)]
    io_gid: u32,
    #[serde(default)]
    shim_cgroup: String,
    // Accepted for runc compatibility; checkpoint/restore is not supported on this host.
    #[serde(default)]
    #[allow(dead_code)]
    criu_image_path: String,
    #[serde(default)]
    #[allow(dead_code)]
    criu_work_path: String,
    // ConfigBody is the runtime's whole options table, these keys included.
    #[serde(default)]
    #[allow(dead_code)]
    type_url: String,
    #[serde(default)]
    #[allow(dead_code)]
    config_path: String,
}

/// containerd's generic runtime options message (three fields).
#[derive(Debug, Default, PartialEq, Eq)]
struct Generic {
    type_url: String,
    config_path: String,
    config_body: Vec<u8>,
}

/// Decodes `runtimeoptions.v1.Options` (not in containerd-shim-protos 0.11): fields 1
/// `type_url`, 2 `config_path` (strings), 3 `config_body` (bytes); others are skipped.
fn decode_generic(bytes: &[u8]) -> Result<Generic, String> {
    let mut g = Generic::default();
    let mut s = CodedInputStream::from_bytes(bytes);
    while let Some(tag) = s.read_raw_tag_or_eof().map_err(|e| e.to_string())? {
        let (field, wire) = (tag >> 3, tag & 7);
        match (field, wire) {
            (1, 2) => g.type_url = s.read_string().map_err(|e| e.to_string())?,
            (2, 2) => g.config_path = s.read_string().map_err(|e| e.to_string())?,
            (3, 2) => g.config_body = s.read_bytes().map_err(|e| e.to_string())?,
            _ => {
                let wt = protobuf::rt::WireType::new(wire).ok_or_else(|| format!("field {field}: bad wire type {wire}"))?;
                protobuf::rt::skip_field_for_tag(tag, &mut s).map_err(|e| format!("field {field} ({wt:?}): {e}"))?;
            }
        }
    }
    Ok(g)
}

fn from_toml(text: &str, what: &str) -> Result<Settings, String> {
    let t: TomlSettings = toml::from_str(text).map_err(|e| format!("{what}: {}", e.message()))?;
    Ok(Settings {
        binary_name: t.binary_name,
        root: t.root,
        systemd_cgroup: t.systemd_cgroup,
        no_pivot_root: t.no_pivot_root,
        no_new_keyring: t.no_new_keyring,
        io_uid: t.io_uid,
        io_gid: t.io_gid,
        shim_cgroup: t.shim_cgroup,
    })
}

/// The settings in `any` (the Create request's options, or what `shim start` reads on stdin);
/// `None` or an empty Any gives the defaults.
pub fn parse(any: Option<&Any>) -> Result<Settings, String> {
    let Some(any) = any else { return Ok(Settings::default()) };
    if any.value.is_empty() && any.type_url.is_empty() {
        return Ok(Settings::default());
    }
    if any.type_url.ends_with("containerd.runc.v1.Options") {
        let o = RuncOptions::parse_from_bytes(&any.value).map_err(|e| format!("options ({}): {e}", any.type_url))?;
        return Ok(Settings::from(&o));
    }
    if any.type_url.ends_with("runtimeoptions.v1.Options") {
        let g = decode_generic(&any.value).map_err(|e| format!("options ({}): {e}", any.type_url))?;
        if !g.type_url.is_empty() && g.type_url != CAPSA_OPTIONS_TYPE {
            return Err(format!("options: TypeUrl {:?} is not capsa's settings (want {CAPSA_OPTIONS_TYPE:?})", g.type_url));
        }
        if !g.config_path.is_empty() {
            let text = std::fs::read_to_string(&g.config_path).map_err(|e| format!("options: ConfigPath {:?}: {e}", g.config_path))?;
            return from_toml(&text, &format!("options: ConfigPath {:?}", g.config_path));
        }
        if !g.config_body.is_empty() {
            let text = String::from_utf8(g.config_body).map_err(|_| "options: ConfigBody is not UTF-8 text".to_string())?;
            return from_toml(&text, "options: ConfigBody");
        }
        return Ok(Settings::default());
    }
    Err(format!("options: unsupported type {:?} (want containerd.runc.v1.Options or containerd's runtimeoptions.v1.Options)", any.type_url))
}

#[cfg(test)]
mod tests {
    use super::*;
    use protobuf::CodedOutputStream;

    fn generic(type_url: &str, path: &str, body: &str) -> Any {
        let mut v = Vec::new();
        {
            let mut s = CodedOutputStream::vec(&mut v);
            if !type_url.is_empty() {
                s.write_string(1, type_url).expect("encode");
            }
            if !path.is_empty() {
                s.write_string(2, path).expect("encode");
            }
            if !body.is_empty() {
                s.write_bytes(3, body.as_bytes()).expect("encode");
            }
            s.write_string(9, "a future field").expect("encode");
            s.flush().expect("flush");
        }
        let mut a = Any::new();
        a.type_url = "runtimeoptions.v1.Options".into();
        a.value = v;
        a
    }

    #[test]
    fn defaults() {
        assert_eq!(parse(None), Ok(Settings::default()));
        assert_eq!(parse(Some(&Any::new())), Ok(Settings::default()));
        assert_eq!(parse(Some(&generic("", "", ""))), Ok(Settings::default()));
    }

    #[test]
    fn runc_options() {
        let o = RuncOptions { binary_name: "/b/capsa".into(), root: "/r".into(), systemd_cgroup: true, io_uid: 7, ..Default::default() };
        let mut a = Any::new();
        a.type_url = "containerd.runc.v1.Options".into();
        a.value = o.write_to_bytes().expect("encode");
        let s = parse(Some(&a)).expect("parse");
        assert_eq!((s.binary_name.as_str(), s.root.as_str(), s.systemd_cgroup, s.io_uid), ("/b/capsa", "/r", true, 7));
    }

    #[test]
    fn generic_body_and_path() {
        // containerd >= 1.7: ConfigBody is the whole options table.
        let body = "BinaryName = \"/opt/capsa\"\nSystemdCgroup = true\nIoGid = 5\nTypeUrl = \"io.containerd.capsa.v1.options\"\n";
        let s = parse(Some(&generic(CAPSA_OPTIONS_TYPE, "", body))).expect("body");
        assert_eq!((s.binary_name.as_str(), s.systemd_cgroup, s.io_gid), ("/opt/capsa", true, 5));
        // containerd 1.6: ConfigPath.
        let dir = std::env::temp_dir().join(format!("capsa-shim-opts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let file = dir.join("capsa.toml");
        std::fs::write(&file, "Root = \"/run/x\"\nShimCgroup = \"/pods/shim\"\n").expect("write");
        let s = parse(Some(&generic(CAPSA_OPTIONS_TYPE, file.to_str().expect("utf8"), ""))).expect("path");
        assert_eq!((s.root.as_str(), s.shim_cgroup.as_str()), ("/run/x", "/pods/shim"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_options_name_the_field() {
        let e = parse(Some(&generic("", "", "BinaryNmae = \"x\"\n"))).expect_err("typo");
        assert!(e.contains("ConfigBody") && e.contains("BinaryNmae"), "{e}");
        let e = parse(Some(&generic("io.containerd.runsc.v1.options", "", ""))).expect_err("foreign");
        assert!(e.contains("TypeUrl") && e.contains("runsc"), "{e}");
        let e = parse(Some(&generic("", "/nonexistent/capsa.toml", ""))).expect_err("missing file");
        assert!(e.contains("ConfigPath") && e.contains("/nonexistent/capsa.toml"), "{e}");
        let e = parse(Some(&generic("", "", "SystemdCgroup = \"yes\"\n"))).expect_err("type");
        assert!(e.contains("SystemdCgroup") || e.contains("bool"), "{e}");
        let mut a = Any::new();
        a.type_url = "example.Foo".into();
        a.value = vec![1];
        assert!(parse(Some(&a)).expect_err("type").contains("example.Foo"));
    }
}

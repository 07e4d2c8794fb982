//! The JSON documents of images: descriptors, manifests, indexes (OCI and Docker v2
//! schema 2), image configs; media types; and the checks made before trusting them.
//!
//! Own serde types rather than oci-spec's image module: we must see the raw document to
//! refuse ambiguous ones (a manifest that also has `manifests`, a `mediaType` that differs
//! from the descriptor that pointed at it: CVE-2021-41190), keep docker's config fields
//! that OCI does not name, and report which field was wrong.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::digest::Digest;
use crate::error::{Error, Result};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_FOREIGN_GZIP: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// Manifests, indexes and configs above this size are refused (as containerd and the
/// distribution spec do): they are read whole into memory.
pub const MAX_DOC: u64 = 4 << 20;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// From a layer media type; `None` when it is not a layer type we know.
    pub fn of_media_type(mt: &str) -> Option<Compression> {
        let base = mt.strip_suffix("+encrypted").unwrap_or(mt);
        match base {
            OCI_LAYER | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Some(Compression::None),
            OCI_LAYER_GZIP | DOCKER_LAYER_GZIP | DOCKER_FOREIGN_GZIP | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip" => {
                Some(Compression::Gzip)
            }
            OCI_LAYER_ZSTD | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// From the first bytes of the blob.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    pub fn oci_media_type(self) -> &'static str {
        match self {
            Compression::None => OCI_LAYER,
            Compression::Gzip => OCI_LAYER_GZIP,
            Compression::Zstd => OCI_LAYER_ZSTD,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(rename = "os.version", default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this program runs on, as OCI names it.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            "arm" => "arm",
            other => other,
        };
        let variant = match arch {
            "arm64" => Some("v8".to_string()),
            _ => None,
        };
        Platform { architecture: arch.to_string(), os: "linux".to_string(), os_version: None, variant }
    }

    /// Parses `os/arch[/variant]` (docker's `--platform`).
    pub fn parse(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || Error::new(format!("--platform {s:?}: want OS/ARCH[/VARIANT], e.g. linux/amd64"));
        if parts.len() < 2 || parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        let arch = match parts[1] {
            "x86_64" | "x86-64" => "amd64",
            "aarch64" => "arm64",
            a => a,
        };
        Ok(Platform {
            os: parts[0].to_string(),
            architecture: arch.to_string(),
            os_version: None,
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }

    /// Whether an index entry's platform `other` serves `self` (a missing variant on
    /// either side matches; arm64's default variant is v8).
    pub fn matches(&self, other: &Platform) -> bool {
        if self.os != other.os || self.architecture != other.architecture {
            return false;
        }
        let norm = |v: &Option<String>| match (self.architecture.as_str(), v.as_deref()) {
            ("arm64", None) => Some("v8".to_string()),
            (_, v) => v.map(str::to_string),
        };
        match (norm(&self.variant), norm(&other.variant)) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

impl Descriptor {
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Descriptor {
        Descriptor { media_type: media_type.to_string(), digest, size, urls: None, annotations: None, platform: None }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// What a document pointed at by a descriptor turned out to be.
#[derive(Debug)]
pub enum Doc {
    Manifest(Box<Manifest>),
    Index(Index),
}

pub fn is_index_type(mt: &str) -> bool {
    mt == OCI_INDEX || mt == DOCKER_LIST
}

pub fn is_manifest_type(mt: &str) -> bool {
    mt == OCI_MANIFEST || mt == DOCKER_MANIFEST
}

/// Parses a manifest or index that `desc_type` (the media type of the descriptor that
/// named it, if any) says it is, refusing the ambiguous documents of CVE-2021-41190.
pub fn parse_doc(bytes: &[u8], desc_type: Option<&str>, what: &str) -> Result<Doc> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| Error::new(format!("{what}: not valid JSON: {e}")))?;
    let obj = v.as_object().ok_or_else(|| Error::new(format!("{what}: not a JSON object")))?;
    let own = match obj.get("mediaType") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(Error::new(format!("{what}: mediaType: not a string"))),
    };
    if let (Some(own), Some(d)) = (own, desc_type) {
        if own != d {
            return Err(Error::new(format!("{what}: mediaType {own:?} does not match the descriptor's {d:?} (refused, CVE-2021-41190)")));
        }
    }
    let has_manifests = obj.contains_key("manifests");
    let has_layers = obj.contains_key("layers") || obj.contains_key("config");
    if has_manifests && has_layers {
        return Err(Error::new(format!("{what}: has both manifests and layers/config: ambiguous document (refused, CVE-2021-41190)")));
    }
    let kind = own.or(desc_type);
    if kind == Some(DOCKER_SCHEMA1) || kind == Some(DOCKER_SCHEMA1_SIGNED) || obj.get("schemaVersion") == Some(&Value::from(1)) {
        return Err(Error::new(format!(
            "{what}: Docker schema 1 manifests are not supported (deprecated; re-push the image with a current client)"
        )));
    }
    let index = match kind {
        Some(k) if is_index_type(k) => true,
        Some(k) if is_manifest_type(k) => false,
        Some(k) => return Err(Error::new(format!("{what}: mediaType {k:?} is not a manifest or an index"))),
        None => has_manifests,
    };
    if index && has_layers {
        return Err(Error::new(format!("{what}: an index with layers/config (refused, CVE-2021-41190)")));
    }
    if !index && has_manifests {
        return Err(Error::new(format!("{what}: a manifest with manifests (refused, CVE-2021-41190)")));
    }
    if index {
        let i: Index = serde_json::from_value(v).map_err(|e| Error::new(format!("{what}: index: {e}")))?;
        if i.schema_version != 2 {
            return Err(Error::new(format!("{what}: schemaVersion {}: want 2", i.schema_version)));
        }
        Ok(Doc::Index(i))
    } else {
        let m: Manifest = serde_json::from_value(v).map_err(|e| Error::new(format!("{what}: manifest: {e}")))?;
        if m.schema_version != 2 {
            return Err(Error::new(format!("{what}: schemaVersion {}: want 2", m.schema_version)));
        }
        if m.config.media_type != OCI_CONFIG && m.config.media_type != DOCKER_CONFIG {
            return Err(Error::new(format!("{what}: config.mediaType {:?} is not an image config", m.config.media_type)));
        }
        for (i, l) in m.layers.iter().enumerate() {
            if Compression::of_media_type(&l.media_type).is_none() {
                return Err(Error::new(format!("{what}: layers[{i}].mediaType {:?}: not a layer type capsa can unpack", l.media_type)));
            }
            if l.media_type.ends_with("+encrypted") {
                return Err(Error::new(format!("{what}: layers[{i}]: encrypted layers are not supported")));
            }
        }
        Ok(Doc::Manifest(Box::new(m)))
    }
}

/// The image config (OCI image-spec `config.json`, docker's superset of it). Unknown
/// fields are kept in `extra` so a saved image round-trips.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<RunConfig>,
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<History>>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct RunConfig {
    #[serde(rename = "User", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(rename = "ExposedPorts", default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, Value>>,
    #[serde(rename = "Env", default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(rename = "Entrypoint", default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Volumes", default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, Value>>,
    #[serde(rename = "WorkingDir", default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(rename = "Labels", default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "StopSignal", default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub typ: String,
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

impl ImageConfig {
    pub fn parse(bytes: &[u8], what: &str) -> Result<ImageConfig> {
        let c: ImageConfig = serde_json::from_slice(bytes).map_err(|e| Error::new(format!("{what}: {e}")))?;
        if c.rootfs.typ != "layers" {
            return Err(Error::new(format!("{what}: rootfs.type {:?}: want \"layers\"", c.rootfs.typ)));
        }
        Ok(c)
    }

    pub fn platform(&self) -> Platform {
        Platform { architecture: self.architecture.clone(), os: self.os.clone(), os_version: None, variant: self.variant.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn ambiguous_documents_are_refused() {
        let both = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{OCI_CONFIG}","digest":"{}","size":1}},"layers":[],"manifests":[]}}"#,
            d('a')
        );
        assert!(parse_doc(both.as_bytes(), None, "m").unwrap_err().to_string().contains("CVE-2021-41190"));
        let idx = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[]}}"#);
        let e = parse_doc(idx.as_bytes(), Some(OCI_MANIFEST), "m").err().unwrap().to_string();
        assert!(e.contains("does not match"), "{e}");
        assert!(matches!(parse_doc(idx.as_bytes(), Some(OCI_INDEX), "m").unwrap(), Doc::Index(_)));
        let s1 = r#"{"schemaVersion":1,"name":"x"}"#;
        assert!(parse_doc(s1.as_bytes(), None, "m").unwrap_err().to_string().contains("schema 1"));
        let bad_digest =
            format!(r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"sha256:../../x","size":1}}]}}"#);
        assert!(parse_doc(bad_digest.as_bytes(), None, "m").unwrap_err().to_string().contains("invalid digest"));
    }

    #[test]
    fn platforms() {
        let p = Platform::parse("linux/arm64").unwrap();
        assert!(p.matches(&Platform { architecture: "arm64".into(), os: "linux".into(), os_version: None, variant: Some("v8".into()) }));
        assert!(!p.matches(&Platform::parse("linux/amd64").unwrap()));
        assert!(Platform::parse("linux").is_err());
        assert_eq!(Platform::parse("linux/arm/v7").unwrap().to_string(), "linux/arm/v7");
    }
}

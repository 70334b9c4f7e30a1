//! The OCI image shapes berth reads and writes: descriptors, image manifests,
//! indexes (and their Docker schema 2 equivalents), image configs.
//!
//! Only the fields berth uses are modelled; manifests and configs are always
//! stored and served as the exact bytes received, so nothing is lost.

use crate::{Digest, Error, Result};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Media types.
pub mod media_types {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    pub const DOCKER_FOREIGN_LAYER_GZIP: &str =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
    /// Docker schema 1: not supported, named for the error message.
    pub const DOCKER_MANIFEST_V1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    pub const DOCKER_MANIFEST_V1_SIGNED: &str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";

    /// What a client sends in `Accept` when fetching a manifest.
    pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

    /// An image manifest (not an index).
    pub fn is_image_manifest(mt: &str) -> bool {
        mt == OCI_MANIFEST || mt == DOCKER_MANIFEST
    }

    /// An index or manifest list.
    pub fn is_index(mt: &str) -> bool {
        mt == OCI_INDEX || mt == DOCKER_MANIFEST_LIST
    }
}

/// Points at content by digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
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
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Self {
        Self {
            media_type: media_type.to_string(),
            digest,
            size,
            urls: None,
            annotations: None,
            platform: None,
        }
    }
}

/// An OS and CPU architecture, as in indexes and image configs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// `linux` and this machine's architecture in Go's spelling (`amd64`, `arm64`, ...).
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            "loongarch64" => "loong64",
            other => other,
        };
        Self {
            architecture: arch.to_string(),
            os: "linux".to_string(),
            variant: None,
        }
    }

    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Result<Self> {
        let mut it = s.split('/');
        match (it.next(), it.next(), it.next(), it.next()) {
            (Some(os), Some(arch), variant, None) if !os.is_empty() && !arch.is_empty() => {
                Ok(Self {
                    os: os.to_string(),
                    architecture: arch.to_string(),
                    variant: variant.filter(|v| !v.is_empty()).map(str::to_string),
                })
            }
            _ => Err(Error::Unsupported(format!(
                "platform {s:?}: expected os/arch[/variant]"
            ))),
        }
    }

    /// Whether an index entry for `other` can run as `self` (the variant only
    /// counts when `self` names one).
    pub fn matches(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && (self.variant.is_none() || self.variant == other.variant)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// An image manifest: OCI v1 or Docker schema 2 (same shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// An image index: OCI v1 or a Docker manifest list (same shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Index {
    /// The entry for `platform`: the first whose platform matches, else the
    /// only entry when it has no platform at all.
    pub fn select(&self, platform: &Platform) -> Result<&Descriptor> {
        let images = self
            .manifests
            .iter()
            .filter(|d| !d.media_type.contains("attestation"));
        if let Some(d) = images
            .clone()
            .find(|d| d.platform.as_ref().is_some_and(|p| platform.matches(p)))
        {
            return Ok(d);
        }
        let untyped: Vec<_> = images.filter(|d| d.platform.is_none()).collect();
        match untyped.as_slice() {
            [one] if self.manifests.len() == 1 => Ok(one),
            _ => Err(Error::PlatformNotFound(platform.to_string())),
        }
    }
}

/// A parsed manifest of either kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyManifest {
    Image(Manifest),
    Index(Index),
}

impl AnyManifest {
    /// Parses manifest bytes; the kind comes from the `mediaType` field, else
    /// from `content_type` (an HTTP `Content-Type`), else from the shape.
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<(Self, String)> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Probe {
            schema_version: Option<u32>,
            media_type: Option<String>,
            manifests: Option<serde_json::Value>,
            layers: Option<serde_json::Value>,
        }
        let probe: Probe = serde_json::from_slice(bytes)
            .map_err(|e| Error::ManifestInvalid(format!("not a JSON manifest: {e}")))?;
        if probe.schema_version == Some(1) {
            return Err(Error::Unsupported(
                "Docker schema 1 manifests (push the image again with a current client)".into(),
            ));
        }
        let ct = content_type
            .map(|c| c.split(';').next().unwrap_or("").trim())
            .filter(|c| media_types::is_image_manifest(c) || media_types::is_index(c));
        let media_type = match (probe.media_type, ct) {
            (Some(m), _) => m,
            (None, Some(c)) => c.to_string(),
            (None, None) if probe.manifests.is_some() => media_types::OCI_INDEX.to_string(),
            (None, None) if probe.layers.is_some() => media_types::OCI_MANIFEST.to_string(),
            (None, None) => {
                return Err(Error::ManifestInvalid(
                    "neither an image manifest nor an index".into(),
                ))
            }
        };
        let err = |e: serde_json::Error| Error::ManifestInvalid(e.to_string());
        if media_types::is_image_manifest(&media_type) {
            Ok((
                Self::Image(serde_json::from_slice(bytes).map_err(err)?),
                media_type,
            ))
        } else if media_types::is_index(&media_type) {
            Ok((
                Self::Index(serde_json::from_slice(bytes).map_err(err)?),
                media_type,
            ))
        } else if media_type == media_types::DOCKER_MANIFEST_V1
            || media_type == media_types::DOCKER_MANIFEST_V1_SIGNED
        {
            Err(Error::Unsupported("Docker schema 1 manifests".into()))
        } else {
            Err(Error::Unsupported(format!(
                "manifest media type {media_type}"
            )))
        }
    }

    /// The digests this manifest refers to (config and layers, or the index's manifests).
    pub fn references(&self) -> Vec<&Descriptor> {
        match self {
            Self::Image(m) => std::iter::once(&m.config).chain(&m.layers).collect(),
            Self::Index(i) => i.manifests.iter().collect(),
        }
    }
}

fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

fn empty_as_none<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()))
}

/// The part of an image config that says how to run it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Env", default, deserialize_with = "null_as_empty")]
    pub env: Vec<String>,
    #[serde(
        rename = "WorkingDir",
        default,
        deserialize_with = "empty_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub working_dir: Option<String>,
    #[serde(
        rename = "User",
        default,
        deserialize_with = "empty_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub user: Option<String>,
}

/// The layer list of an image config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

/// An image config file (OCI or Docker), the fields berth uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigFile {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ImageConfig>,
    #[serde(default)]
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<serde_json::Value>>,
}

impl ConfigFile {
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::ManifestInvalid(format!("image config: {e}")))
    }
}

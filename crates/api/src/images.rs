//! The image bodies of `/1.0/images/...`. An image's name goes into a path percent-encoded (`/` as `%2F`).

use serde::{Deserialize, Serialize};

/// One image of the daemon's store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Image {
    /// The full name, e.g. `docker.io/library/busybox:latest`.
    pub name: String,
    /// The config's digest (what `vessel images` shows as the id).
    pub id: String,
    /// The manifest's digest.
    pub digest: String,
    /// Manifest, config and layers, compressed, in bytes.
    pub size: u64,
    #[serde(default)]
    pub created: Option<String>,
    /// Instances made from it (an image in use cannot be removed).
    pub used_by: Vec<String>,
}

/// `GET /1.0/images/NAME`: the image with its manifest and config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImageDetail {
    #[serde(flatten)]
    pub image: Image,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub manifest: serde_json::Value,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub config: serde_json::Value,
}

/// How vesseld reaches a registry for a pull or push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RegistryAuth {
    /// Allow plain HTTP or an unverified certificate (always so for a registry on loopback, and for the
    /// registries vesseld was started with `--insecure-registry`).
    #[serde(default)]
    pub insecure: bool,
    /// A PEM file on vesseld's host with the CA(s) that sign the registry's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// OS/ARCH[/VARIANT] to pick from an index (default linux/amd64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

/// `POST /1.0/images/pull`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PullRequest {
    pub reference: String,
    #[serde(default)]
    pub registry: RegistryAuth,
}

/// `POST /1.0/images/NAME/push`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PushRequest {
    /// Where to push (default: the image's own name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    #[serde(default)]
    pub registry: RegistryAuth,
}

/// `POST /1.0/images/NAME/tag`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TagRequest {
    pub name: String,
}

/// `POST /1.0/images/prune`: what was freed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PruneResult {
    pub blobs_removed: u64,
    pub layers_removed: u64,
    pub bytes_freed: u64,
}

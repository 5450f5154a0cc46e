//! Manifests and indexes as the registry sends them: media types, parsing, validation, platform selection.
//! Parsed leniently (unknown fields ignored), but every digest and media type is checked before use.

use std::collections::HashMap;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_SCHEMA1: &[&str] = &[
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

/// The `Accept` header for manifest requests.
pub(crate) const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

const CONFIG_TYPES: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// Layer types the unpacker reads (plain, gzip or zstd tar), OCI and Docker (stored as their OCI equivalents:
/// see `convert`).
const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.zstd",
];

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub annotations: Option<HashMap<String, String>>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    pub manifests: Vec<Descriptor>,
}

/// A manifest answer, once its kind is known.
#[derive(Debug)]
pub(crate) enum Parsed {
    Manifest(Manifest),
    Index(Index),
}

/// Works out the media type of a manifest answer from the `Content-Type` header and the document's own
/// `mediaType`, then parses it. Errors are reasons ("wrong content type text/html", "invalid JSON: ...").
pub(crate) fn parse(content_type: Option<&str>, bytes: &[u8]) -> Result<(String, Parsed), String> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
    }
    let header = content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    let known = |t: &str| [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].contains(&t);
    if let Some(h) = header.as_deref() {
        if DOCKER_SCHEMA1.contains(&h) {
            return Err(format!("Docker schema 1 manifests ({h}) are not supported"));
        }
        if !known(h) && h != "application/json" && !h.is_empty() {
            return Err(format!("wrong content type {h} for a manifest"));
        }
    }
    let probe: Probe =
        serde_json::from_slice(bytes).map_err(|e| format!("the manifest is not valid JSON: {e}"))?;
    let media_type = match (header.filter(|h| known(h)), probe.media_type) {
        (Some(h), Some(own)) if own != h => {
            return Err(format!("the manifest says it is {own} but was sent as {h}"));
        }
        (Some(h), _) => h,
        (None, Some(own)) if known(&own) => own,
        (None, Some(own)) => return Err(format!("unsupported manifest media type {own}")),
        // OCI documents may leave mediaType out: an index has "manifests".
        (None, None) if probe.manifests.is_some() => OCI_INDEX.to_string(),
        (None, None) => OCI_MANIFEST.to_string(),
    };
    let parsed = if media_type == OCI_INDEX || media_type == DOCKER_LIST {
        let index: Index = serde_json::from_slice(bytes).map_err(|e| format!("invalid image index: {e}"))?;
        if index.schema_version != 2 {
            return Err(format!(
                "unsupported index schemaVersion {}",
                index.schema_version
            ));
        }
        for d in &index.manifests {
            check_digest(&d.digest)?;
        }
        Parsed::Index(index)
    } else {
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| format!("invalid image manifest: {e}"))?;
        if manifest.schema_version != 2 {
            return Err(format!(
                "unsupported manifest schemaVersion {}",
                manifest.schema_version
            ));
        }
        check_digest(&manifest.config.digest)?;
        for d in &manifest.layers {
            check_digest(&d.digest)?;
        }
        Parsed::Manifest(manifest)
    };
    Ok((media_type, parsed))
}

/// The media type that is not supported in a manifest, if any: config first, then layers. Returns
/// `(what, media type)`.
pub(crate) fn unsupported(manifest: &Manifest) -> Option<(String, String)> {
    if !CONFIG_TYPES.contains(&manifest.config.media_type.as_str()) {
        return Some(("its config".to_string(), manifest.config.media_type.clone()));
    }
    manifest
        .layers
        .iter()
        .find(|l| !LAYER_TYPES.contains(&l.media_type.as_str()))
        .map(|l| (format!("layer {}", l.digest), l.media_type.clone()))
}

/// "sha256:" and 64 lowercase hex digits: the only digests the store keeps.
pub(crate) fn check_digest(digest: &str) -> Result<(), String> {
    let ok = digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid or unsupported digest {digest:?} (only sha256 is supported)"
        ))
    }
}

pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    for b in hash {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The index entry for `os`/`arch` (`arch` may be "arm64/v8"). Without a variant asked for, an entry without
/// variant wins over one with. Attestations (`vnd.docker.reference.type`) are never picked.
pub(crate) fn select<'i>(index: &'i Index, os: &str, arch: &str) -> Result<&'i Descriptor, String> {
    let (arch, variant) = match arch.split_once('/') {
        Some((a, v)) => (a, Some(v)),
        None => (arch, None),
    };
    let candidates = index.manifests.iter().filter(|d| {
        let attestation = d
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("vnd.docker.reference.type"));
        let p = d.platform.as_ref();
        !attestation && p.is_some_and(|p| p.os == os && p.architecture == arch)
    });
    let mut best: Option<&Descriptor> = None;
    for d in candidates {
        let v = d.platform.as_ref().and_then(|p| p.variant.as_deref());
        match (variant, v) {
            (Some(want), Some(have)) if want == have => return Ok(d),
            (Some(_), _) => {}
            (None, None) => return Ok(d),
            (None, Some(_)) => best = best.or(Some(d)),
        }
    }
    best.ok_or_else(|| {
        let available: Vec<String> = index
            .manifests
            .iter()
            .filter_map(|d| d.platform.as_ref())
            .filter(|p| p.os != "unknown")
            .map(|p| match &p.variant {
                Some(v) => format!("{}/{}/{}", p.os, p.architecture, v),
                None => format!("{}/{}", p.os, p.architecture),
            })
            .collect();
        if available.is_empty() {
            "none".to_string()
        } else {
            available.join(", ")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn index_json() -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[
              {{"mediaType":"{DOCKER_MANIFEST}","digest":"{D1}","size":10,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
              {{"mediaType":"{DOCKER_MANIFEST}","digest":"{D2}","size":10,"platform":{{"os":"linux","architecture":"amd64"}}}},
              {{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":10,"platform":{{"os":"unknown","architecture":"unknown"}},
                "annotations":{{"vnd.docker.reference.type":"attestation-manifest"}}}}]}}"#
        )
    }

    #[test]
    fn parses_and_selects_platform() {
        let (mt, parsed) = parse(Some(DOCKER_LIST), index_json().as_bytes()).unwrap();
        assert_eq!(mt, DOCKER_LIST);
        let Parsed::Index(index) = parsed else {
            panic!("not an index")
        };
        assert_eq!(select(&index, "linux", "amd64").unwrap().digest, D2);
        assert_eq!(select(&index, "linux", "arm64").unwrap().digest, D1);
        assert_eq!(select(&index, "linux", "arm64/v8").unwrap().digest, D1);
        let err = select(&index, "linux", "s390x").unwrap_err();
        assert_eq!(err, "linux/arm64/v8, linux/amd64");
    }

    #[test]
    fn media_type_from_body_when_header_is_generic() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":2}},"layers":[]}}"#
        );
        let (mt, parsed) = parse(Some("application/json"), body.as_bytes()).unwrap();
        assert_eq!(mt, OCI_MANIFEST);
        let Parsed::Manifest(m) = parsed else {
            panic!("not a manifest")
        };
        assert!(unsupported(&m).is_none());
        let (mt, _) = parse(
            None,
            body.replace(&format!(r#""mediaType":"{OCI_MANIFEST}","#), "")
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(mt, OCI_MANIFEST);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse(Some("text/html"), b"<html>")
            .unwrap_err()
            .contains("wrong content type"));
        assert!(parse(Some(OCI_MANIFEST), b"{not json")
            .unwrap_err()
            .contains("not valid JSON"));
        assert!(parse(Some(DOCKER_SCHEMA1[1]), b"{}")
            .unwrap_err()
            .contains("schema 1"));
        let bad_digest =
            r#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"md5:abc","size":2},"layers":[]}"#;
        assert!(parse(Some(OCI_MANIFEST), bad_digest.as_bytes())
            .unwrap_err()
            .contains("md5:abc"));
        let lying = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[]}}"#);
        assert!(parse(Some(OCI_MANIFEST), lying.as_bytes())
            .unwrap_err()
            .contains("says it is"));
    }

    #[test]
    fn unsupported_layers() {
        let body = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":2}},
               "layers":[{{"mediaType":"application/vnd.cncf.helm.chart.content.v1.tar+gzip","digest":"{D2}","size":3}}]}}"#
        );
        let (_, Parsed::Manifest(m)) = parse(None, body.as_bytes()).unwrap() else {
            panic!("not a manifest")
        };
        let (what, mt) = unsupported(&m).unwrap();
        assert_eq!(what, format!("layer {D2}"));
        assert!(mt.contains("helm"));
    }

    #[test]
    fn digest_of_bytes() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(check_digest(D1).is_ok());
        assert!(check_digest("sha256:ABC").is_err());
    }
}

//! Docker v2 schema 2 manifests rewritten as OCI image manifests when a pull stores them: the store is an OCI
//! image layout, and tools that read it (skopeo's `oci:` transport) only see OCI-typed manifests there.
//!
//! Only media types change: the manifest's, the config's and each layer's (gzip, plain and zstd tars; foreign
//! layers become OCI non-distributable ones and keep their `urls`). Digests, sizes and every other field are
//! kept, so the blobs are the same bytes; the manifest is a new document with a new digest.

use serde_json::Value;

use super::manifest::OCI_MANIFEST;

const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// Docker layer media types and their OCI equivalents.
const LAYERS: &[(&str, &str)] = &[
    (
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.oci.image.layer.v1.tar+gzip",
    ),
    (
        "application/vnd.docker.image.rootfs.diff.tar",
        "application/vnd.oci.image.layer.v1.tar",
    ),
    (
        "application/vnd.docker.image.rootfs.diff.tar.zstd",
        "application/vnd.oci.image.layer.v1.tar+zstd",
    ),
    (
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    ),
    (
        "application/vnd.docker.image.rootfs.foreign.diff.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
    ),
    (
        "application/vnd.docker.image.rootfs.foreign.diff.tar.zstd",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    ),
];

/// The OCI media type for a layer of type `media_type` (itself when it is not a Docker type).
fn oci_layer_type(media_type: &str) -> &str {
    LAYERS
        .iter()
        .find(|(docker, _)| *docker == media_type)
        .map_or(media_type, |(_, oci)| oci)
}

/// The OCI image manifest for the Docker v2 schema 2 manifest `bytes` (already parsed and checked by
/// `manifest::parse`). Errors are reasons.
pub(crate) fn docker_to_oci(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut manifest: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the manifest is not valid JSON: {e}"))?;
    let Some(top) = manifest.as_object_mut() else {
        return Err("the manifest is not a JSON object".to_string());
    };
    top.insert("mediaType".into(), OCI_MANIFEST.into());
    let config = top
        .get_mut("config")
        .and_then(Value::as_object_mut)
        .ok_or("the manifest's config is not a descriptor")?;
    if config.get("mediaType").and_then(Value::as_str) == Some(DOCKER_CONFIG) {
        config.insert("mediaType".into(), OCI_CONFIG.into());
    }
    let layers = match top.get_mut("layers") {
        None => return serialize(&manifest),
        Some(Value::Array(layers)) => layers,
        Some(_) => return Err("the manifest's layers are not a list".to_string()),
    };
    for layer in layers {
        let layer = layer
            .as_object_mut()
            .ok_or("a layer of the manifest is not a descriptor")?;
        let media_type = layer.get("mediaType").and_then(Value::as_str).unwrap_or("");
        let oci = oci_layer_type(media_type);
        if oci != media_type {
            layer.insert("mediaType".into(), oci.to_string().into());
        }
    }
    serialize(&manifest)
}

fn serialize(manifest: &Value) -> Result<Vec<u8>, String> {
    serde_json::to_vec(manifest).map_err(|e| format!("cannot serialise the OCI manifest: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::manifest::{self, Parsed, DOCKER_MANIFEST};

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    const D3: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";

    #[test]
    fn rewrites_media_types_and_keeps_the_rest() {
        let docker = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}",
               "config":{{"mediaType":"{DOCKER_CONFIG}","digest":"{D1}","size":7}},
               "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{D2}","size":8}},
                 {{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"{D3}","size":9,
                   "urls":["https://example.com/layer"]}},
                 {{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.zstd","digest":"{D2}","size":8}},
                 {{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{D3}","size":9}}]}}"#
        );
        let oci = docker_to_oci(docker.as_bytes()).unwrap();
        let (media_type, Parsed::Manifest(m)) = manifest::parse(None, &oci).unwrap() else {
            panic!("not a manifest")
        };
        assert_eq!(media_type, OCI_MANIFEST);
        assert_eq!(
            (m.config.media_type.as_str(), m.config.digest.as_str()),
            (OCI_CONFIG, D1)
        );
        assert_eq!(m.config.size, 7);
        let layers: Vec<(&str, &str, u64)> = m
            .layers
            .iter()
            .map(|l| (l.media_type.as_str(), l.digest.as_str(), l.size))
            .collect();
        assert_eq!(
            layers,
            [
                ("application/vnd.oci.image.layer.v1.tar+gzip", D2, 8),
                (
                    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                    D3,
                    9
                ),
                ("application/vnd.oci.image.layer.v1.tar+zstd", D2, 8),
                ("application/vnd.oci.image.layer.v1.tar", D3, 9),
            ]
        );
        assert!(manifest::unsupported(&m).is_none());
        let v: Value = serde_json::from_slice(&oci).unwrap();
        assert_eq!(v["layers"][1]["urls"][0], "https://example.com/layer");
        assert_eq!(
            docker_to_oci(&oci).unwrap(),
            oci,
            "an OCI manifest stays as it is"
        );
    }

    #[test]
    fn refuses_what_is_not_a_manifest() {
        assert!(docker_to_oci(b"[]").unwrap_err().contains("not a JSON object"));
        assert!(docker_to_oci(br#"{"config":1}"#).unwrap_err().contains("config"));
        let no_layers = format!(r#"{{"config":{{"mediaType":"{DOCKER_CONFIG}"}},"layers":{{}}}}"#);
        assert!(docker_to_oci(no_layers.as_bytes())
            .unwrap_err()
            .contains("layers"));
    }
}

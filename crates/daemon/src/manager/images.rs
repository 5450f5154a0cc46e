//! The image verbs of vesseld over its image store: list, inspect, tag, remove, prune, and pull and push as
//! asynchronous operations with progress and cancel. Instances hold their image in the store (a hold per
//! instance), so removing or moving a name never takes an instance's layers away.

use std::sync::Arc;

use vessel_api::{Image, ImageDetail, Operation, PruneResult, PullRequest, PushRequest, RegistryAuth};
use vessel_image::reference::Reference;
use vessel_image::registry::{self, Progress, RegistryError, RegistryOptions};
use vessel_image::store::{ImageRecord, Store, StoreError};

use super::{Manager, ManagerError};
use crate::operations::OpHandle;

/// The image store's hold name for an instance.
pub fn holder(instance_id: &str) -> String {
    format!("instance/{instance_id}")
}

pub(super) fn store_error(e: StoreError) -> ManagerError {
    match e {
        StoreError::NotFound(n) => ManagerError::NotFound(format!("No image {n} in the image store")),
        StoreError::Ambiguous(n) => ManagerError::Invalid(format!("{n} names more than one image")),
        StoreError::Reference(_) => ManagerError::Invalid(e.to_string()),
        other => ManagerError::Internal(other.to_string()),
    }
}

fn registry_error(e: RegistryError) -> ManagerError {
    match e {
        RegistryError::NameInvalid { .. } => ManagerError::Invalid(e.to_string()),
        RegistryError::NameUnknown { .. } | RegistryError::ManifestUnknown { .. } => {
            ManagerError::NotFound(e.to_string())
        }
        RegistryError::LocalImage { .. } => ManagerError::NotFound(e.to_string()),
        RegistryError::Cancelled { .. } => ManagerError::Cancelled(e.to_string()),
        other => ManagerError::Internal(other.to_string()),
    }
}

/// Parse a reference as the registry client will use it (400 for a bad one).
pub fn parse_reference(s: &str) -> Result<Reference, ManagerError> {
    Reference::parse(s).map_err(|e| ManagerError::Invalid(format!("Invalid image reference {s:?}: {e}")))
}

/// OS/ARCH[/VARIANT] → (os, arch[/variant]).
pub fn parse_platform(p: &str) -> Result<(String, String), ManagerError> {
    match p.split_once('/') {
        Some((os, arch)) if !os.is_empty() && !arch.is_empty() && !arch.ends_with('/') => {
            Ok((os.into(), arch.into()))
        }
        _ => Err(ManagerError::Invalid(format!(
            "Bad platform {p:?}: use OS/ARCH[/VARIANT]"
        ))),
    }
}

/// What a pull request is checked for before anything is fetched.
pub fn validate_pull(req: &PullRequest) -> Result<(), ManagerError> {
    parse_reference(&req.reference)?;
    if let Some(p) = &req.registry.platform {
        parse_platform(p)?;
    }
    Ok(())
}

/// A registry on loopback is always insecure (as dockerd treats 127.0.0.0/8): plain HTTP there never
/// leaves the host.
fn is_loopback(registry: &str) -> bool {
    let host = match registry.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => registry,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Shows an operation's progress from the registry client's callbacks (which come from one thread).
struct OpProgress(OpHandle);

impl Progress for OpProgress {
    fn layer_start(&self, _digest: &str, size: u64) {
        self.0.progress(|p| {
            p.blobs_total += 1;
            p.bytes_total += size;
        });
    }
    fn layer_advance(&self, _digest: &str, bytes: u64) {
        self.0.progress(|p| p.bytes_done += bytes);
    }
    fn layer_done(&self, _digest: &str) {
        self.0.progress(|p| p.blobs_done += 1);
    }
    fn message(&self, line: &str) {
        self.0.stage(line);
    }
    fn cancelled(&self) -> bool {
        self.0.cancelled()
    }
}

impl Manager {
    pub(super) fn registry_options(
        &self,
        registry: &str,
        auth: &RegistryAuth,
    ) -> Result<RegistryOptions, ManagerError> {
        let mut o = RegistryOptions {
            insecure: auth.insecure
                || is_loopback(registry)
                || self.cfg.insecure_registries.iter().any(|r| r == registry),
            ca_file: auth.ca_file.as_ref().map(Into::into),
            username: auth.username.clone(),
            password: auth.password.clone(),
            ..Default::default()
        };
        if let Some(p) = &auth.platform {
            o.platform = parse_platform(p)?;
        }
        Ok(o)
    }

    fn to_image(&self, r: &ImageRecord) -> Image {
        to_image(r, &self.list().unwrap_or_default())
    }

    /// `GET /1.0/images`: the instances are read once for all images.
    pub fn images(&self) -> Result<Vec<Image>, ManagerError> {
        let store = self.image_store()?;
        let instances = self.list()?;
        Ok(store
            .list()
            .map_err(store_error)?
            .iter()
            .map(|r| to_image(r, &instances))
            .collect())
    }

    /// `GET /1.0/images/NAME`.
    pub fn image(&self, name: &str) -> Result<ImageDetail, ManagerError> {
        let store = self.image_store()?;
        let r = store.find(name).map_err(store_error)?;
        let json = |v: Result<serde_json::Value, StoreError>| v.map_err(store_error);
        Ok(ImageDetail {
            image: self.to_image(&r),
            manifest: json(
                store
                    .manifest(&r)
                    .map(|m| serde_json::to_value(m).unwrap_or_default()),
            )?,
            config: json(
                store
                    .config(&r)
                    .map(|c| serde_json::to_value(c).unwrap_or_default()),
            )?,
        })
    }

    /// `POST /1.0/images/NAME/tag`.
    pub async fn tag_image(self: &Arc<Self>, name: &str, new_name: &str) -> Result<Image, ManagerError> {
        let store = self.image_store()?;
        let (name, new_name) = (name.to_string(), new_name.to_string());
        let mgr = self.clone();
        blocking(move || {
            store.tag(&name, &new_name).map_err(store_error)?;
            Ok(mgr.to_image(&store.find(&new_name).map_err(store_error)?))
        })
        .await
    }

    /// `DELETE /1.0/images/NAME`: drops the name (every name, given an id). Taking the last name from an
    /// image an instance was made from is refused unless `force`, as docker does (the instance keeps the
    /// image either way, through its hold).
    pub async fn remove_image(self: &Arc<Self>, name: &str, force: bool) -> Result<(), ManagerError> {
        let store = self.image_store()?;
        let r = store.find(name).map_err(store_error)?;
        let used = self.to_image(&r).used_by;
        let names = store
            .list()
            .map_err(store_error)?
            .iter()
            .filter(|i| i.config == r.config)
            .count();
        let by_name = !is_id(name, &r);
        if !used.is_empty() && !force && (names <= 1 || !by_name) {
            return Err(ManagerError::Conflict(format!(
                "Image {name} is used by instance(s) {}: remove them first, or force",
                used.join(", ")
            )));
        }
        let name = name.to_string();
        blocking(move || store.remove(&name).map_err(store_error)).await
    }

    /// `POST /1.0/images/prune`.
    pub async fn prune_images(self: &Arc<Self>) -> Result<PruneResult, ManagerError> {
        let store = self.image_store()?;
        let r = blocking(move || store.prune().map_err(store_error)).await?;
        Ok(PruneResult {
            blobs_removed: r.blobs_removed as u64,
            layers_removed: r.layers_removed as u64,
            bytes_freed: r.bytes_freed,
        })
    }

    /// `POST /1.0/images/pull`: an operation whose result is the Image.
    pub fn pull(self: &Arc<Self>, req: PullRequest) -> Result<Operation, ManagerError> {
        validate_pull(&req)?;
        let reference = parse_reference(&req.reference)?;
        let opts = self.registry_options(&reference.registry, &req.registry)?;
        let image = reference.to_string();
        let mgr = self.clone();
        Ok(self.ops.start(
            "pull",
            format!("Pulling {image}"),
            vec![format!("/1.0/images/{}", crate::api::encode_path(&image))],
            move |h| async move {
                let record = mgr.pull_now(&reference, opts, h).await?;
                Ok(Some(
                    serde_json::to_value(mgr.to_image(&record)).unwrap_or_default(),
                ))
            },
        ))
    }

    /// Pull in this operation (also the first step of a create that needs the image).
    pub(super) async fn pull_now(
        self: &Arc<Self>,
        reference: &Reference,
        opts: RegistryOptions,
        h: OpHandle,
    ) -> Result<ImageRecord, ManagerError> {
        let store = self.image_store()?;
        let reference = reference.clone();
        blocking(move || registry::pull(&store, &reference, &opts, &OpProgress(h)).map_err(registry_error))
            .await
    }

    /// `POST /1.0/images/NAME/push`: an operation.
    pub fn push(self: &Arc<Self>, name: &str, req: PushRequest) -> Result<Operation, ManagerError> {
        let store = self.image_store()?;
        let local = store.find(name).map_err(store_error)?;
        let remote = parse_reference(req.destination.as_deref().unwrap_or(&local.name))?;
        let opts = self.registry_options(&remote.registry, &req.registry)?;
        let local_name = local.name.clone();
        Ok(self.ops.start(
            "push",
            format!("Pushing {local_name} to {remote}"),
            vec![format!("/1.0/images/{}", crate::api::encode_path(&local_name))],
            move |h| async move {
                let to = remote.to_string();
                blocking(move || {
                    registry::push(&store, &local_name, &remote, &opts, &OpProgress(h))
                        .map_err(registry_error)
                })
                .await?;
                Ok(Some(serde_json::json!({ "pushed": to })))
            },
        ))
    }

    /// Keep the image an instance is made from, whatever happens to its names.
    pub(super) fn hold_image(&self, instance_id: &str, image: &ImageRecord) -> Result<(), ManagerError> {
        self.image_store()?
            .hold(&holder(instance_id), image)
            .map_err(store_error)
    }

    /// The image an instance was made from (its hold; before holds existed, by id).
    pub(super) fn held_image(
        &self,
        store: &Store,
        instance_id: &str,
        image_id: &str,
    ) -> Result<ImageRecord, ManagerError> {
        store
            .held(&holder(instance_id))
            .or_else(|_| store.find(image_id))
            .map_err(store_error)
    }
}

/// An image as the API shows it, with the names of the instances made from it.
fn to_image(r: &ImageRecord, instances: &[vessel_api::Instance]) -> Image {
    let id = r.config.to_string();
    let used_by = instances
        .iter()
        .filter(|i| i.image_id == id)
        .map(|i| i.name.clone())
        .collect();
    Image {
        name: r.name.clone(),
        id,
        digest: r.manifest.to_string(),
        size: r.size,
        created: r.created.clone(),
        used_by,
    }
}

/// Whether `s` was taken as an id (prefix) of `r` rather than as one of its names.
fn is_id(s: &str, r: &ImageRecord) -> bool {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    !hex.is_empty() && r.config.hex().starts_with(hex) && !r.name.contains(hex)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ManagerError> + Send + 'static,
) -> Result<T, ManagerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ManagerError::Internal(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::is_loopback;

    #[test]
    fn loopback_registries_are_recognised() {
        for r in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
        ] {
            assert!(is_loopback(r), "{r}");
        }
        for r in ["docker.io", "10.0.0.1:5000", "localhost.example:5000", "[::2]:1"] {
            assert!(!is_loopback(r), "{r}");
        }
    }
}

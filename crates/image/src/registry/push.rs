//! `push`: every blob of a local image (skipped when the registry has it, mounted from the repository it was
//! pulled from when that is on the same registry, else uploaded whole or in chunks), then the manifest.

use std::path::Path;

use ureq::http::{Method, StatusCode};

use super::auth::query_escape;
use super::client::{self, Call, Client, Payload};
use super::manifest::{self, Descriptor, Parsed};
use super::parallel::{self, Reporter};
use super::{Progress, RegistryError, RegistryOptions};
use crate::reference::Reference;
use crate::store::{Digest, Store};

/// Blobs up to this size go in one PUT; larger ones in PATCH chunks of this size.
pub(crate) const CHUNK: u64 = 8 << 20;

/// Pushes the local image `local` (a name or id) to `remote`: its blobs, then its manifest under
/// `remote`'s tag ("latest" when it has none) or digest.
pub fn push(
    store: &Store,
    local: &str,
    remote: &Reference,
    opts: &RegistryOptions,
    progress: &dyn Progress,
) -> Result<(), RegistryError> {
    let image = remote.to_string();
    super::check_reference(remote)?;
    let record = store.find(local).map_err(|source| RegistryError::LocalImage {
        image: local.to_string(),
        source,
    })?;
    let damaged = |reason: String| RegistryError::LocalDamaged {
        image: local.to_string(),
        reason,
    };
    let manifest_path = store.blob_path(&record.manifest);
    let bytes = std::fs::read(&manifest_path).map_err(|e| {
        damaged(format!(
            "cannot read its manifest {}: {e}",
            manifest_path.display()
        ))
    })?;
    let (media_type, parsed) =
        manifest::parse(None, &bytes).map_err(|r| damaged(format!("its manifest: {r}")))?;
    let Parsed::Manifest(image_manifest) = parsed else {
        return Err(damaged("its manifest is an index".to_string()));
    };
    let manifest_digest = manifest::sha256_digest(&bytes);
    if let Some(wanted) = remote.digest.as_deref().filter(|d| *d != manifest_digest) {
        return Err(RegistryError::DigestMismatch {
            image,
            what: format!("the manifest of local image {local}"),
            expected: wanted.to_string(),
            actual: manifest_digest,
        });
    }

    let client = Client::connect(&remote.registry, &image, opts)?;
    let repo = remote.repository.as_str();
    let from = mount_source(&[local, &record.name], remote);
    let mut scopes = vec![format!("repository:{repo}:pull,push")];
    if let Some(from) = &from {
        scopes.push(format!("repository:{from}:pull"));
    }
    progress.message(&format!("Pushing {local} to {image}"));

    let mut blobs: Vec<Descriptor> = Vec::with_capacity(image_manifest.layers.len() + 1);
    for d in image_manifest
        .layers
        .iter()
        .chain(std::iter::once(&image_manifest.config))
    {
        if !blobs.iter().any(|b| b.digest == d.digest) {
            blobs.push(d.clone());
        }
    }
    let ctx = Ctx {
        store,
        client: &client,
        repo,
        scopes: &scopes,
        from: from.as_deref(),
        local,
    };
    let called_off = || RegistryError::Cancelled {
        image: remote.to_string(),
    };
    parallel::run(&blobs, opts.parallel, progress, called_off, |d, r| {
        upload(&ctx, d, r)
    })?;
    if progress.cancelled() {
        return Err(called_off());
    }

    let target = match (&remote.tag, &remote.digest) {
        (Some(tag), _) => tag.clone(),
        (None, Some(digest)) => digest.clone(),
        (None, None) => "latest".to_string(),
    };
    let what = format!("PUT manifest {target}");
    let call = Call::new(
        Method::PUT,
        client.url(&format!("{repo}/manifests/{target}")),
        &what,
    )
    .header("content-type", media_type)
    .body(Payload::Bytes(&bytes));
    let response = client.send(&call, &scopes)?;
    if !response.status().is_success() {
        return Err(client.fail(&what, response, repo, &target));
    }
    if let Some(theirs) = client::header(&response, "docker-content-digest").filter(|d| *d != manifest_digest)
    {
        return Err(RegistryError::DigestMismatch {
            image,
            what: "the manifest as the registry stored it".to_string(),
            expected: manifest_digest,
            actual: theirs.to_string(),
        });
    }
    progress.message(&format!("Pushed {image} (manifest {manifest_digest})"));
    Ok(())
}

/// The repository of the same registry that the local image came from, if any: blobs are mounted from it.
fn mount_source(names: &[&str], remote: &Reference) -> Option<String> {
    names
        .iter()
        .filter_map(|n| Reference::parse(n).ok())
        .find(|r| r.registry == remote.registry && r.repository != remote.repository)
        .map(|r| r.repository)
}

struct Ctx<'a> {
    store: &'a Store,
    client: &'a Client,
    repo: &'a str,
    scopes: &'a [String],
    from: Option<&'a str>,
    local: &'a str,
}

fn upload(ctx: &Ctx, desc: &Descriptor, r: &Reporter) -> Result<(), RegistryError> {
    let client = ctx.client;
    let digest: Digest = desc.digest.parse().map_err(|e| RegistryError::LocalDamaged {
        image: ctx.local.to_string(),
        reason: format!("bad digest {}: {e}", desc.digest),
    })?;
    let path = ctx.store.blob_path(&digest);
    let size = std::fs::metadata(&path)
        .map(|m| m.len())
        .map_err(|e| RegistryError::LocalDamaged {
            image: ctx.local.to_string(),
            reason: format!("blob {} is missing: {e}", desc.digest),
        })?;
    let short = super::short(&desc.digest);
    let finished = |note: String| {
        r.message(format!("{short}: {note}"));
        Ok(())
    };

    let what = format!("HEAD blob {}", desc.digest);
    let call = Call::new(
        Method::HEAD,
        client.url(&format!("{}/blobs/{}", ctx.repo, desc.digest)),
        &what,
    );
    let response = client.send(&call, ctx.scopes)?;
    match response.status() {
        StatusCode::OK => return finished(format!("already in {}", ctx.repo)),
        StatusCode::NOT_FOUND => {}
        _ => return Err(client.fail(&what, response, ctx.repo, &desc.digest)),
    }

    let (url, what) = match ctx.from {
        Some(from) => (
            client.url(&format!(
                "{}/blobs/uploads/?mount={}&from={}",
                ctx.repo,
                query_escape(&desc.digest),
                query_escape(from)
            )),
            format!("POST mount of {} from {from}", desc.digest),
        ),
        None => (
            client.url(&format!("{}/blobs/uploads/", ctx.repo)),
            format!("POST upload of {}", desc.digest),
        ),
    };
    let response = client.send(&Call::new(Method::POST, url, &what), ctx.scopes)?;
    match response.status() {
        StatusCode::CREATED if ctx.from.is_some() => {
            return finished(format!(
                "{}: mounted from {}",
                desc.digest,
                ctx.from.unwrap_or_default()
            ));
        }
        StatusCode::ACCEPTED => {}
        _ => return Err(client.fail(&what, response, ctx.repo, &desc.digest)),
    }
    let mut location = next_location(ctx, &response, &what)?;
    r.start(&desc.digest, size);

    let mut sent = |n: u64| r.advance(&desc.digest, n);
    let mut offset = 0;
    if size > CHUNK {
        while offset < size {
            let len = CHUNK.min(size - offset);
            let what = format!("PATCH chunk of {} at {offset}", desc.digest);
            let call = Call::new(Method::PATCH, location.clone(), &what)
                .header("content-type", "application/octet-stream")
                .header("content-range", format!("{offset}-{}", offset + len - 1))
                .body(Payload::File {
                    path: &path,
                    offset,
                    len,
                });
            let response = client.send_with(&call, ctx.scopes, &mut sent)?;
            if response.status() != StatusCode::ACCEPTED {
                return Err(client.fail(&what, response, ctx.repo, &desc.digest));
            }
            location = next_location(ctx, &response, &what)?;
            offset += len;
        }
    }
    let what = format!("PUT blob {}", desc.digest);
    let sep = if location.contains('?') { '&' } else { '?' };
    let url = format!("{location}{sep}digest={}", query_escape(&desc.digest));
    let body = if offset < size {
        whole(&path, size)
    } else {
        Payload::None
    };
    let mut call = Call::new(Method::PUT, url, &what).body(body);
    if offset < size {
        call = call.header("content-type", "application/octet-stream");
    }
    let response = client.send_with(&call, ctx.scopes, &mut sent)?;
    if response.status() != StatusCode::CREATED {
        return Err(client.fail(&what, response, ctx.repo, &desc.digest));
    }
    if let Some(theirs) = client::header(&response, "docker-content-digest").filter(|d| *d != desc.digest) {
        return Err(RegistryError::Upload {
            image: client.image.clone(),
            blob: desc.digest.clone(),
            reason: format!("the registry stored it as {theirs}"),
        });
    }
    r.done(&desc.digest);
    Ok(())
}

fn whole(path: &Path, size: u64) -> Payload<'_> {
    Payload::File {
        path,
        offset: 0,
        len: size,
    }
}

/// The upload URL the registry gave in `Location`.
fn next_location(
    ctx: &Ctx,
    response: &ureq::http::Response<ureq::Body>,
    what: &str,
) -> Result<String, RegistryError> {
    match client::header(response, "location") {
        Some(location) if !location.is_empty() => Ok(ctx.client.resolve(location)),
        _ => Err(ctx.client.bad(what, "no Location header in the answer")),
    }
}

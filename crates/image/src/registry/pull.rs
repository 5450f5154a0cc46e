//! `pull`: manifest (through an index when there is one), then config and layers in parallel, each verified
//! and resumable; the name is recorded last, so a failed pull leaves no image behind. A Docker v2 schema 2
//! manifest is stored as the equivalent OCI manifest (`convert`).

use std::io::{Read, Write};
use std::time::Duration;

use ureq::http::{Method, StatusCode};

use super::client::{self, Call, Client, MAX_SMALL_BODY};
use super::convert;
use super::manifest::{self, Descriptor, Parsed};
use super::parallel::{self, Reporter};
use super::{Progress, RegistryError, RegistryOptions};
use crate::reference::Reference;
use crate::store::{BlobWriter, Digest, ImageRecord, Store, StoreError};

/// How often one blob download is retried (resuming where it stopped) after a cut connection or a 5xx.
const RETRIES: u32 = 3;
const BUFFER: usize = 256 << 10;

/// Pulls `reference` into `store` and names it `reference.to_string()`. See the module documentation.
pub fn pull(
    store: &Store,
    reference: &Reference,
    opts: &RegistryOptions,
    progress: &dyn Progress,
) -> Result<ImageRecord, RegistryError> {
    let image = reference.to_string();
    super::check_reference(reference)?;
    let client = Client::connect(&reference.registry, &image, opts)?;
    let repo = reference.repository.as_str();
    let scopes = vec![format!("repository:{repo}:pull")];
    let target = match (&reference.digest, &reference.tag) {
        (Some(digest), _) => digest.clone(),
        (None, Some(tag)) => tag.clone(),
        (None, None) => "latest".to_string(),
    };
    progress.message(&format!("Pulling {image}"));

    let mut fetched = fetch_manifest(&client, repo, &target, reference.digest.as_deref(), None, &scopes)?;
    if let Parsed::Index(index) = &fetched.parsed {
        let (os, arch) = &opts.platform;
        let chosen = manifest::select(index, os, arch)
            .map_err(|available| RegistryError::NoPlatform {
                image: image.clone(),
                platform: format!("{os}/{arch}"),
                available,
            })?
            .clone();
        progress.message(&format!("Platform {os}/{arch}: manifest {}", chosen.digest));
        fetched = fetch_manifest(
            &client,
            repo,
            &chosen.digest,
            Some(&chosen.digest),
            Some(chosen.size),
            &scopes,
        )?;
    }
    let Parsed::Manifest(image_manifest) = &fetched.parsed else {
        return Err(client.bad("the platform's manifest", "an index that points to another index"));
    };
    if let Some((what, media_type)) = manifest::unsupported(image_manifest) {
        return Err(RegistryError::UnsupportedMediaType {
            image,
            what,
            media_type,
        });
    }

    let mut blobs: Vec<Descriptor> = Vec::with_capacity(image_manifest.layers.len() + 1);
    for d in std::iter::once(&image_manifest.config).chain(&image_manifest.layers) {
        if !blobs.iter().any(|b| b.digest == d.digest) {
            blobs.push(d.clone());
        }
    }
    let ctx = Ctx {
        store,
        client: &client,
        repo,
        scopes: &scopes,
    };
    let called_off = || RegistryError::Cancelled { image: image.clone() };
    if progress.cancelled() {
        return Err(called_off());
    }
    parallel::run(&blobs, opts.parallel, progress, called_off, |d, r| {
        download(&ctx, d, r)
    })?;
    check_config(&ctx, &image_manifest.config)?;
    if progress.cancelled() {
        return Err(called_off());
    }

    let (bytes, media_type, digest) = to_store(&client, fetched, progress)?;
    let stored = store
        .put_blob_bytes(&bytes)
        .map_err(|e| RegistryError::store(&image, e))?;
    if stored.to_string() != digest {
        return Err(RegistryError::DigestMismatch {
            image,
            what: "the manifest as the store wrote it".to_string(),
            expected: digest,
            actual: stored.to_string(),
        });
    }
    store
        .set_name(&image, &stored, &media_type, bytes.len() as u64)
        .map_err(|e| RegistryError::store(&image, e))?;
    let record = store.find(&image).map_err(|e| RegistryError::store(&image, e))?;
    progress.message(&format!("Pulled {image} (manifest {digest})"));
    Ok(record)
}

/// The manifest as the store keeps it: `(bytes, media type, digest)`. A Docker v2 schema 2 manifest becomes
/// an OCI one (same blobs, new manifest digest), which every reader of an OCI layout understands.
fn to_store(
    client: &Client,
    fetched: Fetched,
    progress: &dyn Progress,
) -> Result<(Vec<u8>, String, String), RegistryError> {
    if fetched.media_type != manifest::DOCKER_MANIFEST {
        return Ok((fetched.bytes, fetched.media_type, fetched.digest));
    }
    let what = format!("manifest {}", fetched.digest);
    let oci = convert::docker_to_oci(&fetched.bytes).map_err(|reason| client.bad(&what, reason))?;
    let digest = manifest::sha256_digest(&oci);
    progress.message(&format!(
        "Converted Docker manifest {} to OCI manifest {digest}",
        fetched.digest
    ));
    Ok((oci, manifest::OCI_MANIFEST.to_string(), digest))
}

struct Fetched {
    bytes: Vec<u8>,
    media_type: String,
    digest: String,
    parsed: Parsed,
}

/// GETs a manifest or index and checks it against every digest known for it.
fn fetch_manifest(
    client: &Client,
    repo: &str,
    target: &str,
    expected_digest: Option<&str>,
    expected_size: Option<u64>,
    scopes: &[String],
) -> Result<Fetched, RegistryError> {
    let what = format!("GET manifest {target}");
    if let Some(d) = expected_digest {
        manifest::check_digest(d).map_err(|reason| client.bad(&what, reason))?;
    }
    let call = Call::new(
        Method::GET,
        client.url(&format!("{repo}/manifests/{target}")),
        &what,
    )
    .header("accept", manifest::ACCEPT);
    let mut response = client.send(&call, scopes)?;
    if !response.status().is_success() {
        return Err(client.fail(&what, response, repo, target));
    }
    let content_type = client::header(&response, "content-type").map(str::to_string);
    let header_digest = client::header(&response, "docker-content-digest").map(str::to_string);
    let bytes = client::read_small(&mut response).map_err(|e| match e {
        ureq::Error::BodyExceedsLimit(_) => client.bad(
            &what,
            format!("the manifest is larger than {MAX_SMALL_BODY} bytes"),
        ),
        other => client.transport(&what, other),
    })?;
    let actual = manifest::sha256_digest(&bytes);
    let mismatch = |expected: &str, whose: &str| RegistryError::DigestMismatch {
        image: client.image.clone(),
        what: format!("manifest {target} sent by the registry{whose}"),
        expected: expected.to_string(),
        actual: actual.clone(),
    };
    if let Some(expected) = expected_digest.filter(|e| *e != actual) {
        return Err(mismatch(expected, ""));
    }
    if let Some(size) = expected_size.filter(|s| *s != bytes.len() as u64) {
        return Err(client.bad(
            &what,
            format!("the manifest has {} bytes, the index says {size}", bytes.len()),
        ));
    }
    if let Some(h) = header_digest.filter(|h| h.starts_with("sha256:") && *h != actual) {
        return Err(mismatch(&h, " (against its Docker-Content-Digest)"));
    }
    let (media_type, parsed) =
        manifest::parse(content_type.as_deref(), &bytes).map_err(|r| client.bad(&what, r))?;
    Ok(Fetched {
        bytes,
        media_type,
        digest: actual,
        parsed,
    })
}

struct Ctx<'a> {
    store: &'a Store,
    client: &'a Client,
    repo: &'a str,
    scopes: &'a [String],
}

enum Fail {
    /// Worth another try from where the blob stopped: cut connection, 5xx, 429.
    Retry(RegistryError),
    Fatal(RegistryError),
}

enum Got {
    Complete,
    /// The registry refused the range (416): start the blob over.
    StartOver,
}

fn to_digest(ctx: &Ctx, s: &str) -> Result<Digest, RegistryError> {
    s.parse::<Digest>()
        .map_err(|e| ctx.client.bad("a manifest", format!("bad digest {s}: {e}")))
}

/// Downloads one blob into the store (unless it is there), resuming a partial one, retrying cut transfers.
/// The store checks the digest on commit and deletes a partial that does not match.
fn download(ctx: &Ctx, desc: &Descriptor, r: &Reporter) -> Result<(), RegistryError> {
    let image = ctx.client.image.as_str();
    let digest = to_digest(ctx, &desc.digest)?;
    if ctx.store.has_blob(&digest) {
        r.message(format!("{}: already in the store", super::short(&desc.digest)));
        return Ok(());
    }
    r.start(&desc.digest, desc.size);
    let store_err = |e: StoreError| RegistryError::store(image, e);
    let mut writer = ctx.store.resume_blob(&digest).map_err(store_err)?;
    if writer.offset() > 0 && writer.offset() <= desc.size {
        let short = super::short(&desc.digest);
        r.message(format!(
            "{short}: resuming at byte {} of {}",
            writer.offset(),
            desc.size
        ));
        r.advance(&desc.digest, writer.offset());
    }
    let mut failures = 0;
    loop {
        if r.cancelled() {
            return Err(cancelled(image, desc, &writer));
        }
        if writer.offset() > desc.size {
            // A partial longer than the blob cannot be right: drop it.
            std::mem::replace(&mut writer, ctx.store.begin_blob().map_err(store_err)?).abort();
        }
        if writer.offset() == desc.size {
            break;
        }
        match get(ctx, desc, &mut writer, r) {
            Ok(Got::Complete) => break,
            Ok(Got::StartOver) => {
                std::mem::replace(&mut writer, ctx.store.begin_blob().map_err(store_err)?).abort();
            }
            Err(Fail::Retry(e)) if failures < RETRIES && !r.cancelled() => {
                failures += 1;
                r.message(format!("{e}; retrying from byte {}", writer.offset()));
                std::thread::sleep(Duration::from_millis(250 * u64::from(failures)));
            }
            Err(Fail::Retry(e) | Fail::Fatal(e)) => return Err(e),
        }
    }
    match writer.commit(Some(&digest)) {
        Ok(_) => {}
        Err(StoreError::DigestMismatch { expected, actual }) => {
            return Err(RegistryError::DigestMismatch {
                image: image.to_string(),
                what: "the blob sent by the registry".to_string(),
                expected,
                actual,
            })
        }
        Err(e) => return Err(store_err(e)),
    }
    r.done(&desc.digest);
    Ok(())
}

fn cancelled(image: &str, desc: &Descriptor, writer: &BlobWriter) -> RegistryError {
    RegistryError::Truncated {
        image: image.to_string(),
        blob: desc.digest.clone(),
        received: writer.offset(),
        expected: desc.size,
        reason: "stopped: another transfer failed or the pull was cancelled".to_string(),
    }
}

/// One GET of the blob from `writer.offset()` on.
fn get(ctx: &Ctx, desc: &Descriptor, writer: &mut BlobWriter, r: &Reporter) -> Result<Got, Fail> {
    let client = ctx.client;
    let image = client.image.as_str();
    let offset = writer.offset();
    let what = format!("GET blob {}", desc.digest);
    let mut call = Call::new(
        Method::GET,
        client.url(&format!("{}/blobs/{}", ctx.repo, desc.digest)),
        &what,
    );
    if offset > 0 {
        call = call.header("range", format!("bytes={offset}-"));
    }
    let response = client.send(&call, ctx.scopes).map_err(|e| match e {
        RegistryError::Unreachable { .. } => Fail::Retry(e),
        other => Fail::Fatal(other),
    })?;
    let status = response.status();
    let mut skip = 0;
    if status == StatusCode::PARTIAL_CONTENT && offset > 0 {
        let range = client::header(&response, "content-range").unwrap_or("");
        if !range.starts_with(&format!("bytes {offset}-")) {
            let reason = format!("asked for bytes {offset}- and got Content-Range {range:?}");
            return Err(Fail::Fatal(client.bad(&what, reason)));
        }
    } else if status == StatusCode::OK {
        skip = offset; // Range ignored: the whole blob comes again.
    } else if status == StatusCode::RANGE_NOT_SATISFIABLE && offset > 0 {
        return Ok(Got::StartOver);
    } else if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        return Err(Fail::Retry(client.fail(&what, response, ctx.repo, &desc.digest)));
    } else {
        return Err(Fail::Fatal(client.fail(&what, response, ctx.repo, &desc.digest)));
    }
    let truncated = |received: u64, reason: String| RegistryError::Truncated {
        image: image.to_string(),
        blob: desc.digest.clone(),
        received,
        expected: desc.size,
        reason,
    };
    let mut reader = response.into_body().into_reader();
    let mut buf = vec![0u8; BUFFER];
    loop {
        if r.cancelled() {
            return Err(Fail::Fatal(cancelled(image, desc, writer)));
        }
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Fail::Retry(truncated(writer.offset(), e.to_string()))),
        };
        let skipped = skip.min(n as u64) as usize;
        skip -= skipped as u64;
        let chunk = &buf[skipped..n];
        if writer.offset() + chunk.len() as u64 > desc.size {
            let reason = format!(
                "the blob is longer than the {} bytes the manifest says",
                desc.size
            );
            return Err(Fail::Fatal(client.bad(&what, reason)));
        }
        writer
            .write_all(chunk)
            .map_err(|e| Fail::Fatal(RegistryError::store_write(image, &desc.digest, e)))?;
        r.advance(&desc.digest, chunk.len() as u64);
    }
    if writer.offset() < desc.size {
        return Err(Fail::Retry(truncated(
            writer.offset(),
            "the connection closed early".to_string(),
        )));
    }
    Ok(Got::Complete)
}

/// The config must be a JSON object: anything else is a registry answering garbage.
fn check_config(ctx: &Ctx, config: &Descriptor) -> Result<(), RegistryError> {
    let what = format!("config {}", config.digest);
    if config.size > MAX_SMALL_BODY {
        return Err(ctx
            .client
            .bad(&what, format!("a config of {} bytes is too large", config.size)));
    }
    let digest = to_digest(ctx, &config.digest)?;
    let bytes = std::fs::read(ctx.store.blob_path(&digest))
        .map_err(|e| RegistryError::store_write(&ctx.client.image, &config.digest, e))?;
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        Ok(_) => Err(ctx.client.bad(&what, "the image config is not a JSON object")),
        Err(e) => Err(ctx
            .client
            .bad(&what, format!("the image config is not valid JSON: {e}"))),
    }
}

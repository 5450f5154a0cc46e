//! Safe application of OCI image layers (tar, gzip or zstd) onto a directory.
//!
//! Two modes, because vessel uses layers two ways:
//! - [`Mode::Overlay`] ([`unpack_layer`]): each layer is unpacked into its own empty directory, later a lower
//!   dir of an overlayfs mount. OCI whiteouts become overlayfs whiteouts: `.wh.<name>` a 0:0 character device
//!   `<name>`, `.wh..wh..opq` the xattr `trusted.overlay.opaque=y` on its directory.
//! - [`Mode::Flat`] ([`apply_layer_flat`]): layers are applied one after the other onto one directory (to
//!   build an ext4 disk): `.wh.<name>` deletes `<name>`, `.wh..wh..opq` deletes what lower layers put in its
//!   directory (entries this layer wrote stay).
//!
//! Nothing a layer says can reach outside the target: entry names are split into single components (`..` is
//! refused, a leading `/` ignored), parents are resolved with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
//! on the target's fd (so symlinks written by this or a lower layer resolve inside the target), and entries
//! are created with *at() syscalls on that parent's fd, never following the final name: an existing entry is
//! removed first (a directory with everything in it), then the new one is created with O_EXCL / mknodat /
//! symlinkat / linkat. Hard link targets are resolved the same way. Overlay xattrs in a layer are dropped.
//!
//! Ownership is applied when running as root (like tar's --same-owner); modes (setuid included) after it.
//! Directory modes and mtimes are applied at the end, so a read-only directory can still be filled.
//!
//! On error the target is left partly written: unpack into a fresh directory and rename it into place.

mod entry;
mod root;
mod stream;
mod whiteout;

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

pub use stream::{media_type_compression, sniff, Compression};
pub use whiteout::OVERLAY_OPAQUE_XATTR;

/// How whiteouts are applied; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One layer per directory, whiteouts kept as overlayfs whiteouts.
    Overlay,
    /// Layers applied in order onto one directory, whiteouts delete.
    Flat,
}

/// Mode and limits for one layer. `UnpackOptions::overlay()` / `::flat()` give the defaults.
#[derive(Clone, Debug)]
pub struct UnpackOptions {
    pub mode: Mode,
    /// Largest uncompressed tar stream accepted (default 256 GiB).
    pub max_size: u64,
    /// Most entries accepted (default 10 million).
    pub max_entries: u64,
    /// Largest extended headers (GNU long names, PAX records) before one entry, kept in memory (default 1 MiB).
    pub max_header_bytes: u64,
}

impl UnpackOptions {
    pub fn overlay() -> UnpackOptions {
        UnpackOptions {
            mode: Mode::Overlay,
            max_size: 256 << 30,
            max_entries: 10_000_000,
            max_header_bytes: 1 << 20,
        }
    }
    pub fn flat() -> UnpackOptions {
        UnpackOptions {
            mode: Mode::Flat,
            ..UnpackOptions::overlay()
        }
    }
}

/// What an unpacked layer was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unpacked {
    /// sha256 of the uncompressed tar stream ("sha256:<hex>"): compare it with the config's rootfs.diff_ids
    /// before trusting a directory keyed by diff id.
    pub diff_id: String,
    /// Bytes of the uncompressed tar stream.
    pub size: u64,
    /// Entries applied (whiteouts included).
    pub entries: u64,
    pub compression: Compression,
}

/// Why a layer could not be applied. Each message names the layer, and the entry when there is one.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("Cannot open layer {path}: {source}")]
    OpenLayer { path: PathBuf, source: io::Error },
    #[error("Cannot open unpack target {path}: {source}")]
    OpenTarget { path: PathBuf, source: io::Error },
    #[error("Unsupported layer media type {0:?}")]
    MediaType(String),
    #[error("Cannot read layer {layer} (corrupt, truncated or not a tar stream): {source}")]
    Read { layer: String, source: io::Error },
    #[error("Layer {layer} exceeds the limit on {what} ({limit})")]
    Limit {
        layer: String,
        what: &'static str,
        limit: u64,
    },
    #[error("Layer {layer}: entry {path:?}: {reason}")]
    Invalid {
        layer: String,
        path: String,
        reason: String,
    },
    #[error("Layer {layer}: entry {path:?}: cannot {op}: {source}")]
    Io {
        layer: String,
        path: String,
        op: &'static str,
        source: io::Error,
    },
}

/// Unpack one layer blob into its own directory for overlayfs (whiteouts become overlay whiteouts).
/// `media_type` is the descriptor's (gzip, zstd or plain tar; the magic bytes are checked too).
pub fn unpack_layer(blob: &Path, media_type: &str, target: &Path) -> Result<(), UnpackError> {
    unpack_layer_with(blob, media_type, target, &UnpackOptions::overlay()).map(drop)
}

/// Apply one layer blob onto `target`, which holds the layers below it (whiteouts delete).
pub fn apply_layer_flat(blob: &Path, media_type: &str, target: &Path) -> Result<(), UnpackError> {
    unpack_layer_with(blob, media_type, target, &UnpackOptions::flat()).map(drop)
}

/// [`unpack_layer`] / [`apply_layer_flat`] with explicit options, returning the diff id and sizes.
pub fn unpack_layer_with(
    blob: &Path,
    media_type: &str,
    target: &Path,
    opts: &UnpackOptions,
) -> Result<Unpacked, UnpackError> {
    let file = File::open(blob).map_err(|source| UnpackError::OpenLayer {
        path: blob.to_path_buf(),
        source,
    })?;
    apply_layer(
        io::BufReader::with_capacity(256 << 10, file),
        &blob.display().to_string(),
        media_type,
        target,
        opts,
    )
}

/// Apply a layer read from any stream; `layer` names it in errors.
pub fn apply_layer<R: Read>(
    reader: R,
    layer: &str,
    media_type: &str,
    target: &Path,
    opts: &UnpackOptions,
) -> Result<Unpacked, UnpackError> {
    media_type_compression(media_type)?;
    let root = root::Root::open(target).map_err(|source| UnpackError::OpenTarget {
        path: target.to_path_buf(),
        source,
    })?;
    let read_err = |source| UnpackError::Read {
        layer: layer.to_string(),
        source,
    };
    let (decoded, compression) = stream::decompress(reader, media_type).map_err(read_err)?;
    let (meter, state) = stream::Meter::new(decoded, opts.max_size);
    let limit_or_read = |source: io::Error| match state.exceeded() {
        Some("uncompressed size") => UnpackError::Limit {
            layer: layer.to_string(),
            what: "uncompressed size",
            limit: opts.max_size,
        },
        Some(what) => UnpackError::Limit {
            layer: layer.to_string(),
            what,
            limit: opts.max_header_bytes,
        },
        None => UnpackError::Read {
            layer: layer.to_string(),
            source,
        },
    };

    let mut archive = tar::Archive::new(meter);
    let mut unpacker = entry::Unpacker::new(&root, layer, opts);
    {
        let mut entries = archive.entries().map_err(limit_or_read)?;
        loop {
            state.begin_headers(opts.max_header_bytes);
            let next = entries.next();
            state.end_headers();
            let mut entry = match next {
                None => break,
                Some(Err(e)) => return Err(limit_or_read(e)),
                Some(Ok(entry)) => entry,
            };
            unpacker
                .apply(&mut entry)
                .map_err(|e| match (&e, state.exceeded()) {
                    (UnpackError::Read { source, .. }, Some(_)) => {
                        limit_or_read(io::Error::new(source.kind(), ""))
                    }
                    _ => e,
                })?;
        }
    }
    let entries = unpacker.finish()?;
    // Read what follows the end-of-archive blocks, so the diff id covers the whole stream and the
    // decompressor checks its trailer (a truncated gzip or zstd stream is an error).
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(limit_or_read)?;
    Ok(Unpacked {
        diff_id: state.digest(),
        size: state.total(),
        entries,
        compression,
    })
}

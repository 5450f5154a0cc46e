//! The layer as a byte stream: which media types are layers, compression detection, and a meter over the
//! decompressed tar that enforces the size limits and computes the diff id.

use std::cell::{Cell, RefCell};
use std::io::{self, Read};
use std::rc::Rc;

use sha2::{Digest as _, Sha256};

use super::UnpackError;

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Layer media types without their compression suffix.
const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.foreign.diff.tar",
    "application/x-tar",
];

/// The compression a layer media type declares; `None` for "" (unknown: the magic bytes decide).
/// Anything that is not a layer type (or is encrypted) is refused.
pub fn media_type_compression(media_type: &str) -> Result<Option<Compression>, UnpackError> {
    let mt = media_type.split(';').next().unwrap_or("").trim();
    if mt.is_empty() {
        return Ok(None);
    }
    for base in LAYER_TYPES {
        if let Some(suffix) = mt.strip_prefix(base) {
            return match suffix {
                "" => Ok(Some(Compression::None)),
                "+gzip" | ".gzip" => Ok(Some(Compression::Gzip)),
                "+zstd" => Ok(Some(Compression::Zstd)),
                _ => Err(UnpackError::MediaType(media_type.to_string())),
            };
        }
    }
    Err(UnpackError::MediaType(media_type.to_string()))
}

/// Compression from the first bytes of the blob: `Err` names a known but unsupported one.
pub fn sniff(magic: &[u8]) -> Result<Compression, &'static str> {
    if magic.starts_with(&[0x1f, 0x8b]) {
        Ok(Compression::Gzip)
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Compression::Zstd)
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Err("xz")
    } else if magic.starts_with(b"BZh") {
        Err("bzip2")
    } else {
        Ok(Compression::None)
    }
}

/// Read the first bytes, decide the compression (the magic bytes win over the media type: registries and
/// tools mislabel layers, and a wrong decoder would only fail), and return the decompressed stream.
pub(crate) fn decompress<'r, R: Read + 'r>(
    mut reader: R,
    media_type: &str,
) -> Result<(Box<dyn Read + 'r>, Compression), io::Error> {
    let mut magic = [0u8; 6];
    let mut n = 0;
    while n < magic.len() {
        match reader.read(&mut magic[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let head = io::Cursor::new(magic[..n].to_vec());
    let whole = head.chain(reader);
    let compression = match sniff(&magic[..n]) {
        Ok(c) => c,
        Err(name) => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{name} compression is not supported (layer media type {media_type:?})"),
            ))
        }
    };
    let out: Box<dyn Read + 'r> = match compression {
        Compression::None => Box::new(whole),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::new(whole))),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(whole)?),
    };
    Ok((out, compression))
}

/// Shared between the meter (inside the tar reader) and the unpacker.
pub(crate) struct MeterState {
    total: Cell<u64>,
    max_total: u64,
    /// While the tar reader reads headers (GNU long names, PAX records, which it keeps in memory), the bytes
    /// it may still read; `None` while entry data is read.
    meta_left: Cell<Option<u64>>,
    /// Which limit was hit, so that the io::Error the tar reader passes up can be told apart.
    exceeded: Cell<Option<&'static str>>,
    hasher: RefCell<Sha256>,
}

impl MeterState {
    pub(crate) fn begin_headers(&self, budget: u64) {
        self.meta_left.set(Some(budget));
    }
    pub(crate) fn end_headers(&self) {
        self.meta_left.set(None);
    }
    pub(crate) fn exceeded(&self) -> Option<&'static str> {
        self.exceeded.get()
    }
    pub(crate) fn total(&self) -> u64 {
        self.total.get()
    }
    pub(crate) fn digest(&self) -> String {
        let h = self.hasher.borrow().clone().finalize();
        let mut s = String::with_capacity(71);
        s.push_str("sha256:");
        for b in h {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

/// Counts and hashes the decompressed tar stream and fails reads past the limits.
pub(crate) struct Meter<R> {
    inner: R,
    state: Rc<MeterState>,
}

impl<R: Read> Meter<R> {
    pub(crate) fn new(inner: R, max_total: u64) -> (Meter<R>, Rc<MeterState>) {
        let state = Rc::new(MeterState {
            total: Cell::new(0),
            max_total,
            meta_left: Cell::new(None),
            exceeded: Cell::new(None),
            hasher: RefCell::new(Sha256::new()),
        });
        (
            Meter {
                inner,
                state: state.clone(),
            },
            state,
        )
    }
}

impl<R: Read> Read for Meter<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let s = &self.state;
        if let Some(what) = s.exceeded.get() {
            return Err(io::Error::other(format!("layer exceeds the limit on {what}")));
        }
        let n = self.inner.read(buf)?;
        let total = s.total.get().saturating_add(n as u64);
        s.total.set(total);
        if total > s.max_total {
            s.exceeded.set(Some("uncompressed size"));
            return Err(io::Error::other("layer exceeds the limit on uncompressed size"));
        }
        if let Some(left) = s.meta_left.get() {
            if n as u64 > left {
                s.exceeded.set(Some("header size (long names and PAX records)"));
                return Err(io::Error::other("layer exceeds the limit on header size"));
            }
            s.meta_left.set(Some(left - n as u64));
        }
        s.hasher.borrow_mut().update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        assert_eq!(
            media_type_compression("application/vnd.oci.image.layer.v1.tar+gzip").unwrap(),
            Some(Compression::Gzip)
        );
        assert_eq!(
            media_type_compression("application/vnd.docker.image.rootfs.diff.tar.gzip").unwrap(),
            Some(Compression::Gzip)
        );
        assert_eq!(
            media_type_compression("application/vnd.oci.image.layer.v1.tar+zstd").unwrap(),
            Some(Compression::Zstd)
        );
        assert_eq!(
            media_type_compression("application/vnd.oci.image.layer.v1.tar").unwrap(),
            Some(Compression::None)
        );
        assert_eq!(media_type_compression("").unwrap(), None);
        assert!(media_type_compression("application/vnd.oci.image.config.v1+json").is_err());
        assert!(media_type_compression("application/vnd.oci.image.layer.v1.tar+gzip+encrypted").is_err());
    }

    #[test]
    fn magic() {
        assert_eq!(sniff(&[0x1f, 0x8b, 8]).unwrap(), Compression::Gzip);
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd]).unwrap(), Compression::Zstd);
        assert_eq!(sniff(b"etc/").unwrap(), Compression::None);
        assert_eq!(sniff(b"").unwrap(), Compression::None);
        assert!(sniff(b"BZh91AY").is_err());
    }

    #[test]
    fn meter_limits_and_hashes() {
        let data = vec![7u8; 1000];
        let (mut m, st) = Meter::new(&data[..], 10_000);
        let mut out = Vec::new();
        m.read_to_end(&mut out).unwrap();
        assert_eq!(st.total(), 1000);
        assert!(st.digest().starts_with("sha256:") && st.digest().len() == 71);

        let (mut m, st) = Meter::new(&data[..], 999);
        assert!(m.read_to_end(&mut Vec::new()).is_err());
        assert_eq!(st.exceeded(), Some("uncompressed size"));

        let (mut m, st) = Meter::new(&data[..], 10_000);
        st.begin_headers(100);
        assert!(m.read_to_end(&mut Vec::new()).is_err());
        assert!(st.exceeded().is_some());
    }
}

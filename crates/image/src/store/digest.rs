//! Content digests (`sha256:<64 hex>`) and a writer that hashes what passes through it.

use std::fmt;
use std::io::{self, Read, Write};

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::StoreError;

/// A validated `sha256:<64 lowercase hex>` digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Digest(String);

impl Digest {
    pub fn parse(s: &str) -> Result<Digest, StoreError> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| StoreError::BadDigest(s.to_string()))?;
        if !is_hex64(hex) {
            return Err(StoreError::BadDigest(s.to_string()));
        }
        Ok(Digest(s.to_string()))
    }

    /// From the 64 hex digits alone (a blob's file name).
    pub fn from_hex(hex: &str) -> Result<Digest, StoreError> {
        Digest::parse(&format!("sha256:{hex}"))
    }

    pub fn of(data: &[u8]) -> Digest {
        Self::from_hasher(Sha256::new_with_prefix(data))
    }

    /// The digest of everything `r` yields.
    pub fn of_reader(r: &mut dyn Read) -> io::Result<(Digest, u64)> {
        let mut w = HashWriter::new(io::sink());
        let n = io::copy(r, &mut w)?;
        Ok((w.digest(), n))
    }

    pub fn from_hasher(h: Sha256) -> Digest {
        Digest(format!("sha256:{}", hex(&h.finalize())))
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub(crate) fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Digest {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Digest, StoreError> {
        Digest::parse(s)
    }
}

/// Passes writes to `inner`, hashing and counting what it accepted.
pub(crate) struct HashWriter<W: Write> {
    pub inner: W,
    hasher: Sha256,
    pub written: u64,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W) -> HashWriter<W> {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    pub fn digest(&self) -> Digest {
        Digest::from_hasher(self.hasher.clone())
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests() {
        let d = Digest::of(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
        assert_eq!(Digest::from_hex(d.hex()).unwrap(), d);
        assert_eq!(
            Digest::of_reader(&mut &b"abc"[..]).unwrap(),
            (Digest::of(b"abc"), 3)
        );
        for bad in [
            "sha256:xyz",
            "md5:00",
            &format!("sha256:{}", "A".repeat(64)),
            "sha256:",
        ] {
            let e = Digest::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("Invalid digest"), "{e}");
        }
    }
}

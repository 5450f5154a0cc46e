//! Content digests (`sha256:<64 hex>`).

use std::fmt;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Digest(String);

impl Digest {
    pub fn parse(s: &str) -> Result<Digest, StoreError> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| StoreError::BadDigest(s.to_string()))?;
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(StoreError::BadDigest(s.to_string()));
        }
        Ok(Digest(s.to_string()))
    }

    pub fn of(data: &[u8]) -> Digest {
        Self::from_hasher(Sha256::new_with_prefix(data))
    }

    pub fn from_hasher(h: Sha256) -> Digest {
        Digest(format!("sha256:{}", hex(&h.finalize())))
    }

    pub fn hex(&self) -> &str {
        &self.0[7..]
    }
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
        for bad in ["sha256:xyz", "md5:00", &format!("sha256:{}", "A".repeat(64))] {
            assert!(Digest::parse(bad).is_err());
        }
    }
}

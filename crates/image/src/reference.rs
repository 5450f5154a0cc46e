//! Image references: `[registry/]repository[:tag][@digest]`, normalised the way docker and podman do
//! (`busybox` → `docker.io/library/busybox:latest`).

use std::fmt;

pub const DEFAULT_REGISTRY: &str = "docker.io";

#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("Invalid image reference {0:?}: {1}")]
    Invalid(String, &'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

fn valid_component(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        let bad = |why| ReferenceError::Invalid(s.to_string(), why);
        if s.is_empty() || s.len() > 4096 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("empty, too long or has spaces"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                let hex = d
                    .strip_prefix("sha256:")
                    .ok_or_else(|| bad("only sha256 digests are supported"))?;
                if hex.len() != 64
                    || !hex
                        .chars()
                        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
                {
                    return Err(bad("the digest is not sha256:<64 lowercase hex>"));
                }
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        let slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[slash..].rfind(':') {
            Some(i) => (&rest[..slash + i], Some(rest[slash + i + 1..].to_string())),
            None => (rest, None),
        };
        if let Some(t) = &tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                && !t.starts_with(['.', '-']);
            if !ok {
                return Err(bad("invalid tag"));
            }
        }
        let mut parts: Vec<&str> = name.split('/').collect();
        let first = parts[0];
        let is_host = parts.len() > 1 && (first.contains('.') || first.contains(':') || first == "localhost");
        let registry = if is_host {
            parts.remove(0).to_string()
        } else {
            DEFAULT_REGISTRY.to_string()
        };
        if parts.iter().any(|p| !valid_component(p)) {
            return Err(bad(
                "repository names are lowercase letters, digits and . _ - separated by /",
            ));
        }
        let mut repository = parts.join("/");
        if registry == DEFAULT_REGISTRY && parts.len() == 1 {
            repository = format!("library/{repository}");
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_docker() {
        assert_eq!(
            Reference::parse("busybox").unwrap().to_string(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            Reference::parse("localhost:5000/a/b:t").unwrap().to_string(),
            "localhost:5000/a/b:t"
        );
        assert_eq!(
            Reference::parse("vessel/busybox").unwrap().to_string(),
            "docker.io/vessel/busybox:latest"
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("127.0.0.1:5000/x@{d}")).unwrap();
        assert_eq!(
            (r.registry.as_str(), r.tag, r.digest),
            ("127.0.0.1:5000", None, Some(d))
        );
    }

    #[test]
    fn rejects_bad_names() {
        for s in ["", "UPPER", "a b", "x:", "x@sha256:zz", "/x", "a//b"] {
            assert!(Reference::parse(s).is_err(), "{s:?} accepted");
        }
    }
}

//! Image references: `[registry/]repository[:tag][@digest]`, normalised the way docker and podman do
//! (`busybox` → `docker.io/library/busybox:latest`), following the grammar of distribution/reference.
//!
//! ```
//! use vessel_image::reference::Reference;
//! let r = Reference::parse("busybox").unwrap();
//! assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
//! let r = Reference::parse("localhost:5000/a/b:t").unwrap();
//! assert_eq!((r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()), ("localhost:5000", "a/b", Some("t")));
//! ```

use std::fmt;

/// Where names without a registry host live.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag a name without tag or digest gets.
pub const DEFAULT_TAG: &str = "latest";
/// Longest `registry/repository` accepted (as distribution/reference).
const NAME_MAX: usize = 255;

#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("Invalid image reference {0:?}: {1}")]
    Invalid(String, &'static str),
}

/// A parsed, normalised image reference. `to_string()` gives the full form
/// (`docker.io/library/busybox:latest`, `localhost:5000/a/b:t`, `quay.io/x/y@sha256:…`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
pub(crate) fn valid_path_component(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &s[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-')) {
            return false;
        }
    }
    true
}

/// A registry host: DNS labels joined by dots or an `[ipv6]`, with an optional `:port`.
fn valid_domain(s: &str) -> bool {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip, after)) if !ip.is_empty() && ip.chars().all(|c| c.is_ascii_hexdigit() || c == ':') => {
                match after {
                    "" => return true,
                    p => return p.strip_prefix(':').is_some_and(valid_port),
                }
            }
            _ => return false,
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if port.is_some_and(|p| !valid_port(p)) {
        return false;
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn valid_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|c| c.is_ascii_digit())
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`
pub(crate) fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && t.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c))
        && !t.starts_with(['.', '-'])
}

impl Reference {
    /// Parse and normalise: a missing registry is docker.io (and a one-part docker.io repository gets
    /// `library/`), a missing tag is `latest` unless a digest is given.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        let bad = |why| ReferenceError::Invalid(s.to_string(), why);
        if s.is_empty() {
            return Err(bad("the name is empty"));
        }
        if s.len() > 4096 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("the name is too long or contains spaces"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                let hex = d
                    .strip_prefix("sha256:")
                    .ok_or_else(|| bad("only sha256 digests are supported"))?;
                if hex.len() != 64
                    || !hex
                        .bytes()
                        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
                {
                    return Err(bad("the digest is not sha256:<64 lowercase hex digits>"));
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
        if tag.as_deref().is_some_and(|t| !valid_tag(t)) {
            return Err(bad(
                "a tag is 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
            ));
        }
        // The first component is a registry host when it looks like one (as docker decides it).
        let (registry, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.bytes().any(|c| c.is_ascii_uppercase()) =>
            {
                if !valid_domain(first) {
                    return Err(bad("the registry host is not a valid host[:port]"));
                }
                (first.to_string(), path)
            }
            _ => (DEFAULT_REGISTRY.to_string(), name),
        };
        let registry = if registry == "index.docker.io" {
            DEFAULT_REGISTRY.to_string()
        } else {
            registry
        };
        if !path.split('/').all(valid_path_component) {
            if path.bytes().any(|c| c.is_ascii_uppercase()) {
                return Err(bad("repository names must be lowercase"));
            }
            return Err(bad(
                "a repository is lowercase letters and digits, separated by '.', '_', '__', '-' or '/'",
            ));
        }
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        if registry.len() + 1 + repository.len() > NAME_MAX {
            return Err(bad("the name is longer than 255 characters"));
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some(DEFAULT_TAG.to_string())
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

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The short form docker prints: `busybox:latest` for `docker.io/library/busybox:latest`.
    pub fn familiar(&self) -> String {
        let mut s = if self.registry == DEFAULT_REGISTRY {
            self.repository
                .strip_prefix("library/")
                .unwrap_or(&self.repository)
                .to_string()
        } else {
            self.name()
        };
        if let Some(t) = &self.tag {
            s = format!("{s}:{t}");
        }
        if let Some(d) = &self.digest {
            s = format!("{s}@{d}");
        }
        s
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Reference, ReferenceError> {
        Reference::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(s: &str) -> String {
        Reference::parse(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .to_string()
    }

    #[test]
    fn normalises_like_docker() {
        assert_eq!(full("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(full("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(full("docker.io/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(
            full("index.docker.io/library/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(full("vessel/busybox"), "docker.io/vessel/busybox:latest");
        assert_eq!(full("localhost/x"), "localhost/x:latest");
        assert_eq!(full("localhost:5000/a/b:t"), "localhost:5000/a/b:t");
        assert_eq!(full("quay.io/a/b/c:v1.0-rc_1"), "quay.io/a/b/c:v1.0-rc_1");
        assert_eq!(full("[::1]:5000/x"), "[::1]:5000/x:latest");
        assert_eq!(full("Registry/x"), "Registry/x:latest");
        assert_eq!(full("a__b.c-d---e"), "docker.io/library/a__b.c-d---e:latest");
        let r = Reference::parse("localhost:5000/a/b:t").unwrap();
        assert_eq!(
            (
                r.registry.as_str(),
                r.repository.as_str(),
                r.tag.as_deref(),
                r.digest
            ),
            ("localhost:5000", "a/b", Some("t"), None)
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("127.0.0.1:5000/x@{d}")).unwrap();
        assert_eq!(
            (r.registry.as_str(), r.tag.clone(), r.digest.clone()),
            ("127.0.0.1:5000", None, Some(d.clone()))
        );
        assert_eq!(r.to_string(), format!("127.0.0.1:5000/x@{d}"));
        let r = Reference::parse(&format!("busybox:1@{d}")).unwrap();
        assert_eq!(r.to_string(), format!("docker.io/library/busybox:1@{d}"));
        assert_eq!(r.familiar(), format!("busybox:1@{d}"));
        assert_eq!(
            Reference::parse("localhost:5000/a").unwrap().familiar(),
            "localhost:5000/a:latest"
        );
        // A host with a port and no path is a repository with a tag, as docker reads it.
        assert_eq!(full("localhost:5000"), "docker.io/library/localhost:5000");
    }

    #[test]
    fn rejects_bad_names() {
        let long = "a".repeat(300);
        for s in [
            "",
            "UPPER",
            "a b",
            "x:",
            "x@sha256:zz",
            "/x",
            "a//b",
            "a/",
            "-a",
            "a-",
            "a..b",
            "a.-b",
            "x:-t",
            "x:.t",
            "x@md5:00",
            "bad_host:x/y",
            "h:port/x",
            &long,
        ] {
            assert!(Reference::parse(s).is_err(), "{s:?} accepted");
        }
        let upper = format!("sha256:{}", "A".repeat(64));
        assert!(Reference::parse(&format!("x@{upper}")).is_err());
        let e = Reference::parse("Foo").unwrap_err().to_string();
        assert!(e.starts_with("Invalid image reference \"Foo\""), "{e}");
    }
}

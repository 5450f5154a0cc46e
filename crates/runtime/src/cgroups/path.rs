//! From the OCI `linux.cgroupsPath` and the container id to a cgroup path inside each hierarchy.
//!
//! * absent: `/vessel/<id>` (systemd mode: `system.slice:vessel:<id>`, i.e. `/system.slice/vessel-<id>.scope`);
//! * absolute (`/a/b`): that cgroup in every hierarchy;
//! * relative (`a/b`): below the runtime's own cgroup in each hierarchy, as runc does;
//! * systemd form `slice:prefix:name`: `<expanded slice>/<prefix>-<name>.scope`, where a nested slice
//!   `a-b.slice` expands to `/a.slice/a-b.slice` (a `name` ending in `.slice` is itself a slice and expands the same
//!   way).
//!
//! Paths are cleaned lexically: `.` and `..` cannot climb above the hierarchy root (or the own cgroup).

use std::path::{Component, Path, PathBuf};

use super::error::CgroupError;

/// The cgroup a container asked for, before it is placed in the hierarchies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CgroupPath {
    /// From the root of every hierarchy, e.g. `/vessel/abc`.
    Absolute(PathBuf),
    /// Below the runtime's own cgroup in each hierarchy, e.g. `abc`.
    Relative(PathBuf),
}

/// The parent of containers created without a cgroupsPath.
pub(crate) const DEFAULT_PARENT: &str = "/vessel";
/// Slice and scope prefix used in systemd mode without a cgroupsPath.
const DEFAULT_SLICE: &str = "system.slice";
const DEFAULT_SCOPE_PREFIX: &str = "vessel";

/// Resolves `linux.cgroupsPath` for container `id`. `systemd` is the runtime's `--systemd-cgroup` flag.
pub(crate) fn resolve_path(
    cgroups_path: Option<&Path>,
    id: &str,
    systemd: bool,
) -> Result<CgroupPath, CgroupError> {
    let given = cgroups_path
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty());
    match given {
        None => {
            check_id(id)?;
            if systemd {
                systemd_path(&format!("{DEFAULT_SLICE}:{DEFAULT_SCOPE_PREFIX}:{id}"))
            } else {
                Ok(CgroupPath::Absolute(Path::new(DEFAULT_PARENT).join(id)))
            }
        }
        Some(s) if systemd || looks_like_systemd(&s) => systemd_path(&s),
        Some(s) if s.starts_with('/') => Ok(CgroupPath::Absolute(clean(&s))),
        Some(s) => {
            let cleaned = clean(&s);
            let rel = cleaned.strip_prefix("/").unwrap_or(&cleaned).to_path_buf();
            if rel.as_os_str().is_empty() {
                return Err(invalid(
                    &s,
                    "a relative path must name a cgroup below the runtime's own cgroup",
                ));
            }
            Ok(CgroupPath::Relative(rel))
        }
    }
}

fn check_id(id: &str) -> Result<(), CgroupError> {
    let reason = if id.is_empty() {
        "it is empty"
    } else if id.contains('/') {
        "it contains '/'"
    } else if id == "." || id == ".." {
        "it is '.' or '..'"
    } else if id.contains('\0') {
        "it contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(CgroupError::InvalidId {
        id: id.to_string(),
        reason,
    })
}

/// `slice:prefix:name` with no slash, where the slice part is empty or a `.slice` unit.
fn looks_like_systemd(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 3 && !s.contains('/') && (parts[0].is_empty() || parts[0].ends_with(".slice"))
}

fn systemd_path(s: &str) -> Result<CgroupPath, CgroupError> {
    let parts: Vec<&str> = s.split(':').collect();
    let [slice, prefix, name] = parts[..] else {
        return Err(invalid(s, "expected the systemd form slice:prefix:name"));
    };
    if name.is_empty() {
        return Err(invalid(s, "the name part of slice:prefix:name is empty"));
    }
    if s.contains('/') {
        return Err(invalid(
            s,
            "the systemd form slice:prefix:name cannot contain '/'",
        ));
    }
    let slice = if slice.is_empty() { DEFAULT_SLICE } else { slice };
    let parent = expand_slice(slice).map_err(|reason| invalid(s, &reason))?;
    let unit_path = if name.ends_with(".slice") {
        // A slice names its own place in the tree, whatever the parent.
        return Ok(CgroupPath::Absolute(PathBuf::from(
            expand_slice(name).map_err(|r| invalid(s, &r))?,
        )));
    } else if prefix.is_empty() {
        format!("{name}.scope")
    } else {
        format!("{prefix}-{name}.scope")
    };
    Ok(CgroupPath::Absolute(Path::new(&parent).join(unit_path)))
}

/// Expands a systemd slice unit name to its cgroup path: `a-b-c.slice` -> `/a.slice/a-b.slice/a-b-c.slice`,
/// `-.slice` (the root slice) -> `/`.
pub(crate) fn expand_slice(slice: &str) -> Result<String, String> {
    let Some(base) = slice.strip_suffix(".slice") else {
        return Err(format!("'{slice}' is not a slice: it must end in .slice"));
    };
    if base.is_empty() {
        return Err(format!("'{slice}' is not a valid slice name"));
    }
    if slice.contains('/') {
        return Err(format!("slice '{slice}' cannot contain '/'"));
    }
    if base == "-" {
        return Ok("/".to_string());
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for component in base.split('-') {
        if component.is_empty() {
            return Err(format!(
                "slice '{slice}' has an empty component (leading, trailing or doubled '-')"
            ));
        }
        path.push('/');
        path.push_str(&prefix);
        path.push_str(component);
        path.push_str(".slice");
        prefix.push_str(component);
        prefix.push('-');
    }
    Ok(path)
}

/// Lexically cleans `s` as an absolute path: `.` dropped, `..` pops but never above `/`.
fn clean(s: &str) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in Path::new(s).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

fn invalid(path: &str, reason: &str) -> CgroupError {
    CgroupError::InvalidPath {
        path: path.to_string(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn abs(s: &str) -> CgroupPath {
        CgroupPath::Absolute(PathBuf::from(s))
    }

    fn resolve(p: Option<&str>, systemd: bool) -> Result<CgroupPath, CgroupError> {
        resolve_path(p.map(Path::new), "abc", systemd)
    }

    #[test]
    fn default_paths() {
        assert_eq!(resolve(None, false).unwrap(), abs("/vessel/abc"));
        assert_eq!(resolve(Some(""), false).unwrap(), abs("/vessel/abc"));
        assert_eq!(
            resolve(None, true).unwrap(),
            abs("/system.slice/vessel-abc.scope")
        );
    }

    #[test]
    fn absolute_and_relative_paths_are_cleaned() {
        assert_eq!(resolve(Some("/a/./b/../c"), false).unwrap(), abs("/a/c"));
        assert_eq!(resolve(Some("/../../x"), false).unwrap(), abs("/x"));
        assert_eq!(
            resolve(Some("foo/bar"), false).unwrap(),
            CgroupPath::Relative("foo/bar".into())
        );
        assert_eq!(
            resolve(Some("../../foo"), false).unwrap(),
            CgroupPath::Relative("foo".into())
        );
        assert!(resolve(Some(".."), false).is_err());
    }

    #[test]
    fn systemd_form() {
        assert_eq!(
            resolve(Some("machine.slice:libpod:abc"), false).unwrap(),
            abs("/machine.slice/libpod-abc.scope")
        );
        assert_eq!(
            resolve(Some("machine.slice:libpod:abc"), true).unwrap(),
            abs("/machine.slice/libpod-abc.scope")
        );
        assert_eq!(
            resolve(Some("user-1000.slice:docker:x"), true).unwrap(),
            abs("/user.slice/user-1000.slice/docker-x.scope")
        );
        assert_eq!(
            resolve(Some(":crio:x"), false).unwrap(),
            abs("/system.slice/crio-x.scope")
        );
        assert_eq!(
            resolve(Some("system.slice::x"), true).unwrap(),
            abs("/system.slice/x.scope")
        );
        assert_eq!(resolve(Some("-.slice:p:x"), true).unwrap(), abs("/p-x.scope"));
        assert_eq!(
            resolve(Some("system.slice:p:a-b.slice"), true).unwrap(),
            abs("/a.slice/a-b.slice")
        );
    }

    #[test]
    fn systemd_mode_rejects_other_shapes() {
        let e = resolve(Some("/a/b"), true).unwrap_err().to_string();
        assert!(e.starts_with("Invalid cgroups path '/a/b'"), "{e}");
        assert!(resolve(Some("nota:p:x"), true).is_err());
        assert!(resolve(Some("a.slice:p:"), true).is_err());
        // Not systemd-shaped without the flag: a plain relative path containing colons.
        assert_eq!(
            resolve(Some("a:b:c"), false).unwrap(),
            CgroupPath::Relative("a:b:c".into())
        );
    }

    #[test]
    fn slice_expansion() {
        assert_eq!(expand_slice("a.slice").unwrap(), "/a.slice");
        assert_eq!(
            expand_slice("a-b-c.slice").unwrap(),
            "/a.slice/a-b.slice/a-b-c.slice"
        );
        assert_eq!(expand_slice("-.slice").unwrap(), "/");
        for bad in [
            "a--b.slice",
            "-a.slice",
            "a-.slice",
            ".slice",
            "a.scope",
            "a/b.slice",
        ] {
            assert!(expand_slice(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn bad_ids() {
        for id in ["", "a/b", "..", "."] {
            assert!(resolve_path(None, id, false).is_err(), "id {id:?}");
        }
    }
}

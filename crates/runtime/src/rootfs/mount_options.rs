//! fstab-style mount options → mount(2) flags, propagation changes and the data string.

use nix::mount::MsFlags;

/// A mount entry's options, split the way mount(2) needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags for the mount call itself.
    pub flags: MsFlags,
    /// Flags explicitly cleared (e.g. `rw`, `suid`): they matter when remounting a bind mount.
    pub cleared: MsFlags,
    /// Propagation changes applied after mounting, in order (MS_PRIVATE, MS_SHARED, ..., maybe with MS_REC).
    pub propagation: Vec<MsFlags>,
    /// Everything the kernel does not take as a flag, comma-joined, for the filesystem.
    pub data: String,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            flags: MsFlags::empty(),
            cleared: MsFlags::empty(),
            propagation: Vec::new(),
            data: String::new(),
        }
    }
}

impl MountOptions {
    pub fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }

    /// Flags that take a remount to apply on a bind mount (the bind itself ignores them).
    pub fn remount_flags(&self) -> MsFlags {
        self.flags - (MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT)
    }
}

/// (name, clears?, flag)
const FLAGS: &[(&str, bool, MsFlags)] = &[
    ("ro", false, MsFlags::MS_RDONLY),
    ("rw", true, MsFlags::MS_RDONLY),
    ("nosuid", false, MsFlags::MS_NOSUID),
    ("suid", true, MsFlags::MS_NOSUID),
    ("nodev", false, MsFlags::MS_NODEV),
    ("dev", true, MsFlags::MS_NODEV),
    ("noexec", false, MsFlags::MS_NOEXEC),
    ("exec", true, MsFlags::MS_NOEXEC),
    ("sync", false, MsFlags::MS_SYNCHRONOUS),
    ("async", true, MsFlags::MS_SYNCHRONOUS),
    ("dirsync", false, MsFlags::MS_DIRSYNC),
    ("remount", false, MsFlags::MS_REMOUNT),
    ("mand", false, MsFlags::MS_MANDLOCK),
    ("nomand", true, MsFlags::MS_MANDLOCK),
    ("noatime", false, MsFlags::MS_NOATIME),
    ("atime", true, MsFlags::MS_NOATIME),
    ("nodiratime", false, MsFlags::MS_NODIRATIME),
    ("diratime", true, MsFlags::MS_NODIRATIME),
    ("relatime", false, MsFlags::MS_RELATIME),
    ("norelatime", true, MsFlags::MS_RELATIME),
    ("strictatime", false, MsFlags::MS_STRICTATIME),
    ("nostrictatime", true, MsFlags::MS_STRICTATIME),
    ("lazytime", false, MsFlags::MS_LAZYTIME),
    ("nolazytime", true, MsFlags::MS_LAZYTIME),
    ("silent", false, MsFlags::MS_SILENT),
    ("loud", true, MsFlags::MS_SILENT),
    ("bind", false, MsFlags::MS_BIND),
    ("rbind", false, MsFlags::MS_BIND.union(MsFlags::MS_REC)),
];

const PROPAGATION: &[(&str, MsFlags)] = &[
    ("private", MsFlags::MS_PRIVATE),
    ("rprivate", MsFlags::MS_PRIVATE.union(MsFlags::MS_REC)),
    ("shared", MsFlags::MS_SHARED),
    ("rshared", MsFlags::MS_SHARED.union(MsFlags::MS_REC)),
    ("slave", MsFlags::MS_SLAVE),
    ("rslave", MsFlags::MS_SLAVE.union(MsFlags::MS_REC)),
    ("unbindable", MsFlags::MS_UNBINDABLE),
    ("runbindable", MsFlags::MS_UNBINDABLE.union(MsFlags::MS_REC)),
];

/// Options that other runtimes understand as hints to themselves, not to the kernel.
const RUNTIME_ONLY: &[&str] = &["tmpcopyup", "notmpcopyup", "idmap", "ridmap", "copy-symlink"];

pub fn parse<S: AsRef<str>>(options: &[S]) -> MountOptions {
    let mut out = MountOptions::default();
    let mut data: Vec<&str> = Vec::new();
    for opt in options {
        let opt = opt.as_ref();
        if let Some((_, clears, flag)) = FLAGS.iter().find(|(n, _, _)| *n == opt) {
            if *clears {
                out.flags.remove(*flag);
                out.cleared.insert(*flag);
            } else {
                out.flags.insert(*flag);
                out.cleared.remove(*flag);
            }
        } else if let Some((_, flag)) = PROPAGATION.iter().find(|(n, _)| *n == opt) {
            out.propagation.push(*flag);
        } else if !RUNTIME_ONLY.contains(&opt) {
            data.push(opt);
        }
    }
    out.data = data.join(",");
    out
}

/// The propagation flag for `linux.rootfsPropagation`.
pub fn propagation(name: &str) -> Option<MsFlags> {
    PROPAGATION.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_flags_propagation_and_data() {
        let o = parse(&["rbind", "ro", "nosuid", "rprivate", "mode=755", "size=65536k"]);
        assert_eq!(
            o.flags,
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID
        );
        assert_eq!(o.propagation, vec![MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
        assert_eq!(o.data, "mode=755,size=65536k");
        assert!(o.is_bind());
        assert_eq!(o.remount_flags(), MsFlags::MS_RDONLY | MsFlags::MS_NOSUID);
    }

    #[test]
    fn later_options_win() {
        let o = parse(&["ro", "rw", "tmpcopyup"]);
        assert!(!o.flags.contains(MsFlags::MS_RDONLY));
        assert!(o.cleared.contains(MsFlags::MS_RDONLY));
        assert_eq!(o.data, "");
    }
}

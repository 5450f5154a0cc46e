//! Helpers shared by the unpack, snapshot and ext4 tests: crafted layers (raw tar headers, so names like
//! `../x` can be written), scratch directories with a sentinel next to the target, and tree listings.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (ownership, device nodes, trusted.* xattrs, mounts)"
    );
}

/// A tar stream built entry by entry from raw headers.
pub struct Layer {
    out: Vec<u8>,
}

impl Default for Layer {
    fn default() -> Self {
        Layer::new()
    }
}

impl Layer {
    pub fn new() -> Layer {
        Layer { out: Vec::new() }
    }

    /// Append one entry; `name` and `link` go into the header bytes unchecked.
    pub fn raw(&mut self, kind: u8, name: &[u8], link: &[u8], mode: u32, data: &[u8]) -> &mut Layer {
        assert!(
            name.len() <= 100 && link.len() <= 100,
            "raw names must fit the header"
        );
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        h.set_device_major(0).unwrap();
        h.set_device_minor(0).unwrap();
        let bytes = h.as_mut_bytes();
        bytes[..100].fill(0);
        bytes[..name.len()].copy_from_slice(name);
        bytes[157..257].fill(0);
        bytes[157..157 + link.len()].copy_from_slice(link);
        h.set_cksum();
        self.header(&h, data)
    }

    pub fn header(&mut self, h: &tar::Header, data: &[u8]) -> &mut Layer {
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Layer {
        self.raw(b'0', name.as_bytes(), b"", 0o644, data)
    }
    pub fn dir(&mut self, name: &str) -> &mut Layer {
        self.raw(b'5', name.as_bytes(), b"", 0o755, b"")
    }
    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Layer {
        self.raw(b'2', name.as_bytes(), target.as_bytes(), 0o777, b"")
    }
    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Layer {
        self.raw(b'1', name.as_bytes(), target.as_bytes(), 0o644, b"")
    }

    /// A PAX extended header ('x') describing the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Layer {
        let mut body = Vec::new();
        for (k, v) in records {
            let rest = k.len() + v.len() + 3; // ' ', '=', '\n'
            let mut len = rest + 1;
            while len != rest + len.to_string().len() {
                len = rest + len.to_string().len();
            }
            body.extend_from_slice(format!("{len} {k}=").as_bytes());
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_path("PaxHeaders/x").unwrap();
        h.set_mode(0o644);
        h.set_size(body.len() as u64);
        h.set_cksum();
        self.header(&h, &body)
    }

    /// The archive with its two end-of-archive blocks.
    pub fn finish(&self) -> Vec<u8> {
        let mut v = self.out.clone();
        v.extend(std::iter::repeat_n(0u8, 1024));
        v
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// `<tmp>/vessel-<name>-<pid>-<n>/` with `target/` (empty) and `sentinel/` (a file, a subdir) next to it.
pub struct Scratch {
    pub base: PathBuf,
    pub target: PathBuf,
    pub sentinel: PathBuf,
    pub layers: PathBuf,
    before: BTreeMap<PathBuf, String>,
    passwd: (u64, u64, i64),
}

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let base = std::env::temp_dir().join(format!("vessel-{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let target = base.join("target");
        let sentinel = base.join("sentinel");
        fs::create_dir_all(&target).unwrap();
        fs::create_dir_all(sentinel.join("dir")).unwrap();
        let layers = base.join("layers");
        fs::create_dir_all(&layers).unwrap();
        fs::write(sentinel.join("file"), b"original").unwrap();
        fs::write(sentinel.join("dir/inner"), b"inner").unwrap();
        let before = listing(&base, &[&target, &layers]);
        let m = fs::metadata("/etc/passwd").unwrap();
        Scratch {
            base,
            target,
            sentinel,
            layers,
            before,
            passwd: (m.ino(), m.nlink(), m.mtime()),
        }
    }

    pub fn write_layer(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.layers.join(name);
        fs::write(&p, data).unwrap();
        p
    }

    /// Nothing next to the target changed, and /etc/passwd neither.
    pub fn assert_outside_untouched(&self) {
        let now = listing(&self.base, &[&self.target, &self.layers]);
        assert_eq!(
            self.before, now,
            "something outside the target was created or changed"
        );
        let m = fs::metadata("/etc/passwd").unwrap();
        assert_eq!(
            self.passwd,
            (m.ino(), m.nlink(), m.mtime()),
            "/etc/passwd changed"
        );
    }

    /// `rel` (which may start with '/') inside the target.
    pub fn inside(&self, rel: impl AsRef<Path>) -> PathBuf {
        let rel = rel.as_ref();
        self.target.join(rel.strip_prefix("/").unwrap_or(rel))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.base);
        }
    }
}

/// Every path under `root` (except below `skip`) with a description of what it is.
pub fn listing(root: &Path, skip: &[&Path]) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    walk(root, skip, &mut out, &|p, m| describe(p, m, true));
    out
}

/// Like `listing`, with paths relative to `root` and without the root's own entry.
pub fn tree(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    walk(root, &[], &mut out, &|p, m| describe(p, m, false));
    out.into_iter()
        .filter_map(|(p, d)| {
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            (!rel.as_os_str().is_empty()).then_some((rel, d))
        })
        .collect()
}

fn walk(
    p: &Path,
    skip: &[&Path],
    out: &mut BTreeMap<PathBuf, String>,
    f: &dyn Fn(&Path, &fs::Metadata) -> String,
) {
    if skip.contains(&p) {
        return;
    }
    let m = fs::symlink_metadata(p).unwrap();
    out.insert(p.to_path_buf(), f(p, &m));
    if m.is_dir() {
        let mut names: Vec<_> = fs::read_dir(p).unwrap().map(|e| e.unwrap().path()).collect();
        names.sort();
        for n in names {
            walk(&n, skip, out, f);
        }
    }
}

fn describe(p: &Path, m: &fs::Metadata, with_inode: bool) -> String {
    let ft = m.file_type();
    let what = if ft.is_symlink() {
        format!("symlink->{}", fs::read_link(p).unwrap().display())
    } else if ft.is_file() {
        format!("file:{}:{:x}", m.len(), content_hash(p, m))
    } else if ft.is_dir() {
        "dir".to_string()
    } else if ft.is_char_device() {
        format!("char:{:x}", m.rdev())
    } else if ft.is_block_device() {
        format!("block:{:x}", m.rdev())
    } else if ft.is_fifo() {
        "fifo".to_string()
    } else {
        "other".to_string()
    };
    let mtime = if ft.is_dir() && with_inode { 0 } else { m.mtime() };
    let ino = if with_inode {
        format!(" ino={} nlink={}", m.ino(), m.nlink())
    } else {
        String::new()
    };
    format!(
        "{what} mode={:o} owner={}:{} mtime={mtime}{ino} xattrs={:?}",
        m.mode() & 0o7777,
        m.uid(),
        m.gid(),
        xattrs(p)
    )
}

thread_local! {
    static HASHES: std::cell::RefCell<std::collections::HashMap<(u64, u64, i64, i64), u64>> = Default::default();
}

/// Hash of a file's content, once per inode and change time (busybox has hundreds of hard links to one
/// 2 MB file).
fn content_hash(p: &Path, m: &fs::Metadata) -> u64 {
    if let Some(h) = HASHES.with(|c| {
        c.borrow()
            .get(&(m.dev(), m.ino(), m.ctime(), m.ctime_nsec()))
            .copied()
    }) {
        return h;
    }
    let h = fnv(&fs::read(p).unwrap());
    HASHES.with(|c| {
        c.borrow_mut()
            .insert((m.dev(), m.ino(), m.ctime(), m.ctime_nsec()), h)
    });
    h
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

/// The user.* and trusted.* xattrs of `p` (not following a final symlink), sorted.
pub fn xattrs(p: &Path) -> Vec<(String, String)> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 65536];
    // SAFETY: c is NUL-terminated and buf's pointer and length match.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for name in buf[..n as usize].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if !(name.starts_with(b"user.") || name.starts_with(b"trusted.")) {
            continue;
        }
        let key = String::from_utf8_lossy(name).into_owned();
        if let Some(v) = get_xattr(p, &key) {
            out.push((key, String::from_utf8_lossy(&v).into_owned()));
        }
    }
    out.sort();
    out
}

pub fn get_xattr(p: &Path, key: &str) -> Option<Vec<u8>> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let k = CString::new(key).unwrap();
    let mut val = vec![0u8; 65536];
    // SAFETY: both strings are NUL-terminated and val's pointer and length match.
    let n = unsafe { libc::lgetxattr(c.as_ptr(), k.as_ptr(), val.as_mut_ptr().cast(), val.len()) };
    (n >= 0).then(|| val[..n as usize].to_vec())
}

pub fn set_xattr(p: &Path, key: &str, value: &[u8]) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let k = CString::new(key).unwrap();
    // SAFETY: both strings are NUL-terminated and value's pointer and length match.
    let r = unsafe { libc::lsetxattr(c.as_ptr(), k.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    assert_eq!(
        r,
        0,
        "setxattr {key} on {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 3).unwrap()
}

pub fn run(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A busybox root filesystem the way the busybox image lays it out: /bin/busybox and one hard link per
/// applet, /etc/passwd and group, /tmp 1777, /root 0700, plus a few entries of every kind. Needs root.
pub fn busybox_tree(dir: &Path) {
    let bb = Path::new("/bin/busybox");
    assert!(
        bb.exists(),
        "/bin/busybox missing: apt-get install busybox-static"
    );
    for d in ["bin", "etc", "tmp", "root", "var/spool/mail", "dev", "usr/sbin"] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    fs::copy(bb, dir.join("bin/busybox")).unwrap();
    let list = run(std::process::Command::new(bb).arg("--list"));
    for applet in list.lines().filter(|a| !a.is_empty() && *a != "busybox") {
        fs::hard_link(dir.join("bin/busybox"), dir.join("bin").join(applet)).unwrap();
    }
    fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n",
    )
    .unwrap();
    fs::write(dir.join("etc/group"), "root:x:0:\nnobody:x:65534:\n").unwrap();
    std::os::unix::fs::symlink("../bin/busybox", dir.join("usr/sbin/bb")).unwrap();
    std::os::unix::fs::symlink("/proc/mounts", dir.join("etc/mtab")).unwrap();
    std::os::unix::fs::chown(dir.join("var/spool/mail"), Some(8), Some(8)).unwrap();
    set_mode(&dir.join("tmp"), 0o1777);
    set_mode(&dir.join("root"), 0o700);
    set_mode(&dir.join("bin/busybox"), 0o4755);
    run(std::process::Command::new("mknod")
        .arg(dir.join("dev/null"))
        .args(["c", "1", "3"]));
    run(std::process::Command::new("mknod")
        .arg(dir.join("dev/loop9"))
        .args(["b", "7", "9"]));
    run(std::process::Command::new("mkfifo").arg(dir.join("dev/initctl")));
    set_xattr(&dir.join("etc/passwd"), "user.vessel", b"roundtrip");
    set_xattr(&dir.join("etc/passwd"), "trusted.vessel", b"t");
    // Fixed mtimes, directories last.
    run(std::process::Command::new("find").arg(dir).args([
        "-depth",
        "-exec",
        "touch",
        "-h",
        "-d",
        "@1600000000",
        "{}",
        "+",
    ]));
}

pub fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

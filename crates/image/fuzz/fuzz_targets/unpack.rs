//! Fuzz `vessel_image::unpack`: arbitrary bytes (plain, gzip or zstd, either mode) are unpacked into a
//! target directory; the target asserts that nothing escapes it.
//!
//! Input: byte 0 picks the mode (bit 0: flat / overlay) and the declared media type (bits 1-2); the rest is
//! the layer. In flat mode the target already holds a small "lower layer" with escape-prone symlinks
//! (`abs -> /`, `up -> ../../..`, `lib -> usr/lib`) for the layer to abuse.
//!
//! Escape detection, run as root: on the first input the fuzzing thread enters its own mount namespace in
//! which every mount is read-only except a tmpfs holding the target and a sentinel directory (and the fuzz
//! directory, for libFuzzer's corpus and artifacts). A write outside the target then fails with EROFS, which
//! the target turns into a crash; a write to the sentinel or next to the target is caught by comparing
//! listings after each input. Without root the read-only sandbox is skipped (said once on stderr) and only
//! the sentinel is checked.

#![no_main]

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vessel_image::unpack::{apply_layer, Mode, UnpackError, UnpackOptions};

const MEDIA_TYPES: [&str; 4] = [
    "",
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
];

struct Sandbox {
    base: PathBuf,
    target: PathBuf,
    sentinel: PathBuf,
    before: BTreeMap<PathBuf, String>,
}

static SANDBOX: OnceLock<Sandbox> = OnceLock::new();

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;

fn mount_setattr(path: &Path, flags: libc::c_uint, set: u64, clr: u64) -> std::io::Result<()> {
    let p = cstr(path);
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clr,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: p is NUL-terminated, attr is a valid mount_attr whose size is passed; both outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            p.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn mount(
    src: &str,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> std::io::Result<()> {
    let src = CString::new(src).unwrap();
    let t = cstr(target);
    let fstype = fstype.map(|f| CString::new(f).unwrap());
    let data = data.map(|d| CString::new(d).unwrap());
    // SAFETY: all strings are NUL-terminated and live across the call; null pointers where none is given.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            t.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |f| f.as_ptr()),
            flags,
            data.as_ref().map_or(std::ptr::null(), |d| d.as_ptr().cast()),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// This thread in a private mount namespace where everything but `base` (a tmpfs) and the directories
/// libFuzzer writes to is read-only.
fn confine(base: &Path) -> std::io::Result<()> {
    // SAFETY: unshare has no memory-safety preconditions; CLONE_NEWNS applies to this thread only.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    mount(
        "none",
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )?;
    mount("tmpfs", base, Some("tmpfs"), 0, Some("size=256m,mode=0755"))?;
    let mut writable = vec![base.to_path_buf()];
    for keep in [
        std::env::current_dir()?,
        PathBuf::from(env!("CARGO_MANIFEST_DIR")),
    ] {
        let keep = fs::canonicalize(keep)?;
        if keep == Path::new("/") {
            return Err(std::io::Error::other("the working directory is /"));
        }
        mount(
            keep.to_str().unwrap_or("none"),
            &keep,
            None,
            libc::MS_BIND | libc::MS_REC,
            None,
        )?;
        writable.push(keep);
    }
    mount_setattr(Path::new("/"), AT_RECURSIVE, MOUNT_ATTR_RDONLY, 0)?;
    for w in writable {
        mount_setattr(&w, 0, 0, MOUNT_ATTR_RDONLY)?;
    }
    Ok(())
}

fn listing(root: &Path, out: &mut BTreeMap<PathBuf, String>) {
    let Ok(m) = fs::symlink_metadata(root) else { return };
    let content = if m.is_file() {
        fs::read(root).unwrap_or_default()
    } else {
        Vec::new()
    };
    let link = fs::read_link(root)
        .map(|l| l.display().to_string())
        .unwrap_or_default();
    out.insert(
        root.to_path_buf(),
        format!(
            "{:o} {}:{} {} {:?} {link}",
            m.mode(),
            m.uid(),
            m.gid(),
            m.nlink(),
            content
        ),
    );
    if m.is_dir() {
        for e in fs::read_dir(root).into_iter().flatten().flatten() {
            listing(&e.path(), out);
        }
    }
}

fn outside_listing(s: &Sandbox) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    listing(&s.sentinel, &mut out);
    for e in fs::read_dir(&s.base).expect("read base").flatten() {
        out.insert(e.path(), String::new());
    }
    out
}

fn setup() -> Sandbox {
    let base = std::env::temp_dir().join(format!("vessel-fuzz-{}", std::process::id()));
    fs::create_dir_all(&base).expect("create the fuzz directory");
    match confine(&base) {
        Ok(()) => {
            // Self-check: the sandbox really refuses writes outside the tmpfs.
            let probe = base.with_file_name(format!("vessel-fuzz-probe-{}", std::process::id()));
            let e = fs::write(&probe, b"").expect_err("the read-only sandbox does not work");
            assert_eq!(
                e.raw_os_error(),
                Some(libc::EROFS),
                "probe write outside the sandbox: {e}"
            );
            eprintln!(
                "vessel fuzz: read-only sandbox in place; writable: {} and the fuzz directory",
                base.display()
            );
        }
        Err(e) => {
            eprintln!("vessel fuzz: no read-only sandbox ({e}); only the sentinel directory is checked")
        }
    }
    let sentinel = base.join("sentinel");
    fs::create_dir_all(sentinel.join("dir")).unwrap();
    fs::write(sentinel.join("file"), b"sentinel").unwrap();
    let target = base.join("target");
    let mut s = Sandbox {
        base,
        target,
        sentinel,
        before: BTreeMap::new(),
    };
    fs::create_dir_all(&s.target).unwrap();
    s.before = outside_listing(&s);
    s
}

/// A small lower layer for flat mode, with symlinks that point out of the target if followed naively.
fn lower_layer(target: &Path, sandbox: &Sandbox) {
    let _ = fs::create_dir_all(target.join("usr/lib"));
    let _ = fs::create_dir_all(target.join("etc"));
    let _ = fs::write(target.join("etc/passwd"), b"root:x:0:0::/:/bin/sh\n");
    let _ = fs::write(target.join("usr/lib/x"), b"x");
    let _ = std::os::unix::fs::symlink("usr/lib", target.join("lib"));
    let _ = std::os::unix::fs::symlink("/", target.join("abs"));
    let _ = std::os::unix::fs::symlink("../../..", target.join("up"));
    let _ = std::os::unix::fs::symlink(&sandbox.sentinel, target.join("sentinel"));
}

fn is_erofs(e: &UnpackError) -> bool {
    let io = match e {
        UnpackError::Io { source, .. } => source,
        UnpackError::Read { source, .. } => source,
        _ => return false,
    };
    io.raw_os_error() == Some(libc::EROFS)
}

fuzz_target!(|data: &[u8]| {
    let s = SANDBOX.get_or_init(setup);
    let Some((&selector, layer)) = data.split_first() else {
        return;
    };
    let mode = if selector & 1 == 0 {
        Mode::Overlay
    } else {
        Mode::Flat
    };
    let media_type = MEDIA_TYPES[usize::from((selector >> 1) & 3)];
    let _ = fs::remove_dir_all(&s.target);
    fs::create_dir_all(&s.target).expect("recreate the target");
    if mode == Mode::Flat {
        lower_layer(&s.target, s);
    }
    let mut opts = if mode == Mode::Flat {
        UnpackOptions::flat()
    } else {
        UnpackOptions::overlay()
    };
    opts.max_size = 16 << 20;
    opts.max_entries = 5000;
    opts.max_header_bytes = 64 << 10;
    let result = apply_layer(layer, "fuzz", media_type, &s.target, &opts);
    if let Err(e) = &result {
        assert!(!is_erofs(e), "the layer tried to write outside the target: {e}");
        // Every error must display as one line that names the layer.
        let msg = e.to_string();
        assert!(
            msg.contains("fuzz") || matches!(e, UnpackError::MediaType(_)),
            "{msg}"
        );
    }
    assert_eq!(
        outside_listing(s),
        s.before,
        "something outside the target changed"
    );
});

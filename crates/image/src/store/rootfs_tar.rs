//! A directory tree as a deterministic tar stream (the layer of an imported root filesystem): entries in
//! byte order of their names, numeric owners without user names, modes, mtimes, hard links as links,
//! symlinks, devices and fifos as themselves, extended attributes as PAX `SCHILY.xattr.` records. Sockets
//! are skipped, and so is what is mounted below the source (like `tar --one-file-system`). The same tree
//! gives the same bytes, hence the same diff id.

use std::collections::HashMap;
use std::ffi::{CString, OsString};
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

/// Write the tree under `src` (not `src` itself) as a tar stream into `out`, and return `out`.
pub fn write_tree<W: Write>(src: &Path, out: W) -> io::Result<W> {
    let dev = fs::metadata(src)?.dev();
    let mut w = Walker {
        b: tar::Builder::new(out),
        src,
        dev,
        links: HashMap::new(),
    };
    w.walk(Path::new(""))?;
    w.b.into_inner()
}

struct Walker<'a, W: Write> {
    b: tar::Builder<W>,
    src: &'a Path,
    dev: u64,
    /// (dev, ino) of files with several links → the first name they were archived under.
    links: HashMap<(u64, u64), PathBuf>,
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

impl<W: Write> Walker<'_, W> {
    fn walk(&mut self, rel: &Path) -> io::Result<()> {
        let dir = self.src.join(rel);
        let mut names: Vec<OsString> = fs::read_dir(&dir)
            .and_then(|d| d.map(|e| e.map(|e| e.file_name())).collect())
            .map_err(|e| with_path(e, &dir))?;
        names.sort();
        for name in names {
            let rel = rel.join(&name);
            let path = self.src.join(&rel);
            let md = fs::symlink_metadata(&path).map_err(|e| with_path(e, &path))?;
            self.entry(&rel, &path, &md).map_err(|e| with_path(e, &path))?;
            if md.is_dir() && md.dev() == self.dev {
                self.walk(&rel)?;
            }
        }
        Ok(())
    }

    fn entry(&mut self, rel: &Path, path: &Path, md: &Metadata) -> io::Result<()> {
        let ft = md.file_type();
        if ft.is_socket() {
            return Ok(());
        }
        let mut h = Header::new_gnu();
        h.set_mode(md.mode() & 0o7777);
        h.set_uid(u64::from(md.uid()));
        h.set_gid(u64::from(md.gid()));
        h.set_mtime(md.mtime().max(0) as u64);
        h.set_size(0);
        let xattrs = read_xattrs(path)?;
        if !xattrs.is_empty() {
            let records: Vec<u8> = xattrs
                .iter()
                .flat_map(|(k, v)| pax_record(&[b"SCHILY.xattr.", k.as_slice()].concat(), v))
                .collect();
            let mut x = Header::new_ustar();
            x.set_entry_type(EntryType::XHeader);
            x.set_mode(0o644);
            x.set_size(records.len() as u64);
            self.b
                .append_data(&mut x, "PaxHeaders.0/entry", records.as_slice())?;
        }
        if ft.is_file() {
            if md.nlink() > 1 {
                if let Some(first) = self.links.get(&(md.dev(), md.ino())) {
                    h.set_entry_type(EntryType::Link);
                    let first = first.clone();
                    return self.b.append_link(&mut h, rel, first);
                }
                self.links.insert((md.dev(), md.ino()), rel.to_path_buf());
            }
            h.set_entry_type(EntryType::Regular);
            h.set_size(md.len());
            let f = File::open(path)?;
            self.b.append_data(
                &mut h,
                rel,
                Exact {
                    inner: f.take(md.len()),
                    left: md.len(),
                },
            )
        } else if ft.is_dir() {
            h.set_entry_type(EntryType::Directory);
            self.b.append_data(&mut h, rel.join(""), io::empty())
        } else if ft.is_symlink() {
            h.set_entry_type(EntryType::Symlink);
            self.b.append_link(&mut h, rel, fs::read_link(path)?)
        } else {
            h.set_entry_type(if ft.is_char_device() {
                EntryType::Char
            } else if ft.is_block_device() {
                EntryType::Block
            } else {
                EntryType::Fifo
            });
            if ft.is_char_device() || ft.is_block_device() {
                let (major, minor) = dev_numbers(md.rdev());
                h.set_device_major(major)?;
                h.set_device_minor(minor)?;
            }
            self.b.append_data(&mut h, rel, io::empty())
        }
    }
}

/// glibc's gnu_dev_major / gnu_dev_minor.
fn dev_numbers(dev: u64) -> (u32, u32) {
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0fff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0x00ff);
    (major as u32, minor as u32)
}

/// Reads exactly `left` bytes: a file that shrank while archived is an error, not a corrupt archive.
struct Exact<R: Read> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was read",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// `<len> <key>=<value>\n`, where len counts the whole record, its own digits included.
fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3;
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    [format!("{len} ").as_bytes(), key, b"=", value, b"\n"].concat()
}

/// The extended attributes of `path` (not following a symlink), sorted by name.
fn read_xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::other("NUL in a file name"))?;
    let names = xattr_call(|buf, len| {
        // SAFETY: `c` is a NUL-terminated path; `buf` is valid for `len` bytes or null with `len` 0.
        unsafe { libc::llistxattr(c.as_ptr(), buf.cast(), len) }
    })?;
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).map_err(|_| io::Error::other("bad xattr name"))?;
        let value = xattr_call(|buf, len| {
            // SAFETY: `c` and `cname` are NUL-terminated; `buf` is valid for `len` bytes or null with `len` 0.
            unsafe { libc::lgetxattr(c.as_ptr(), cname.as_ptr(), buf.cast(), len) }
        });
        match value {
            Ok(v) => out.push((name.to_vec(), v)),
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
            Err(e) => return Err(e),
        }
    }
    out.sort();
    Ok(out)
}

/// Size query then read, retried if the attribute grew in between; unsupported filesystems give nothing.
fn xattr_call(f: impl Fn(*mut u8, usize) -> isize) -> io::Result<Vec<u8>> {
    for _ in 0..4 {
        let n = f(std::ptr::null_mut(), 0);
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENOTSUP) => Ok(Vec::new()),
                _ => Err(e),
            };
        }
        let mut buf = vec![0u8; n as usize];
        let m = f(buf.as_mut_ptr(), buf.len());
        if m >= 0 {
            buf.truncate(m as usize);
            return Ok(buf);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) {
            return Err(e);
        }
    }
    Err(io::Error::other("extended attributes keep changing"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records_count_their_own_length() {
        let r = pax_record(b"k", b"v");
        assert_eq!(r, b"6 k=v\n");
        let long = vec![b'x'; 95];
        let r = pax_record(b"k", &long);
        assert_eq!(
            r.len().to_string(),
            String::from_utf8_lossy(&r[..r.iter().position(|&b| b == b' ').unwrap()])
        );
    }

    #[test]
    fn device_numbers() {
        assert_eq!(dev_numbers(0x0103), (1, 3)); // /dev/null
        assert_eq!(dev_numbers((259u64 << 8) | 5 | (0x100 << 12)), (259, 0x105));
    }

    #[test]
    fn same_tree_same_bytes() {
        let dir = std::env::temp_dir().join(format!("vessel-rootfs-tar-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("b/c")).unwrap();
        for (i, name) in ["z", "a", "m", "b/c/f"].iter().enumerate() {
            fs::write(dir.join(name), vec![b'x'; i * 700]).unwrap();
        }
        fs::hard_link(dir.join("z"), dir.join("y")).unwrap();
        std::os::unix::fs::symlink("../z", dir.join("b/l")).unwrap();
        let one = write_tree(&dir, Vec::new()).unwrap();
        let two = write_tree(&dir, Vec::new()).unwrap();
        assert_eq!(one, two);
        let mut ar = tar::Archive::new(one.as_slice());
        let entries: Vec<(String, EntryType)> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path().unwrap().display().to_string(), e.header().entry_type())
            })
            .collect();
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b/", "b/c/", "b/c/f", "b/l", "m", "y", "z"]);
        assert_eq!(entries[6].1, EntryType::Regular);
        assert_eq!(entries[7].1, EntryType::Link, "second name of a hard-linked file");
        assert_eq!(entries[4].1, EntryType::Symlink);
        fs::remove_dir_all(&dir).unwrap();
    }
}

//! The disk image behind a virtio-blk device: opened, checked and locked against other VMs.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use virtio_bindings::virtio_blk::VIRTIO_BLK_ID_BYTES;

pub const SECTOR_SIZE: u64 = 512;
pub const ID_BYTES: usize = VIRTIO_BLK_ID_BYTES as usize;

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("disk {} does not exist", path.display())]
    NotFound { path: PathBuf },
    #[error("cannot open disk {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("disk {} is not a regular file or a block device", path.display())]
    NotADisk { path: PathBuf },
    #[error("disk {} is in use by another VM", path.display())]
    InUse { path: PathBuf },
    #[error("cannot lock disk {}: {source}", path.display())]
    Lock { path: PathBuf, source: io::Error },
    #[error("cannot read the size of disk {}: {source}", path.display())]
    Size { path: PathBuf, source: io::Error },
}

pub(super) struct Disk {
    pub file: File,
    pub path: PathBuf,
    pub read_only: bool,
    pub sectors: u64,
    /// GET_ID's answer: the serial, NUL-padded (not terminated when it fills all 20 bytes).
    pub id: [u8; ID_BYTES],
}

impl Disk {
    pub fn open(path: &Path, read_only: bool, id: &str) -> Result<Self, BlockError> {
        let path_buf = path.to_path_buf();
        let open_error = |source: io::Error| match source.kind() {
            io::ErrorKind::NotFound => BlockError::NotFound {
                path: path_buf.clone(),
            },
            _ => BlockError::Open {
                path: path_buf.clone(),
                source,
            },
        };
        // Checked before opening too: opening a FIFO would block until a writer comes.
        check_kind(&std::fs::metadata(path).map_err(open_error)?, path)?;
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(open_error)?;
        // And on the open file, so a path swapped meanwhile cannot slip through.
        check_kind(&file.metadata().map_err(open_error)?, path)?;
        lock(&file, read_only, path)?;
        // A block device's metadata length is 0; its end is found by seeking.
        let bytes = (&file)
            .seek(SeekFrom::End(0))
            .map_err(|source| BlockError::Size {
                path: path_buf.clone(),
                source,
            })?;
        let mut serial = [0u8; ID_BYTES];
        let n = id.len().min(ID_BYTES);
        serial[..n].copy_from_slice(&id.as_bytes()[..n]);
        Ok(Self {
            file,
            path: path_buf,
            read_only,
            sectors: bytes / SECTOR_SIZE,
            id: serial,
        })
    }
}

fn check_kind(metadata: &std::fs::Metadata, path: &Path) -> Result<(), BlockError> {
    let kind = metadata.file_type();
    if kind.is_file() || kind.is_block_device() {
        Ok(())
    } else {
        Err(BlockError::NotADisk {
            path: path.to_path_buf(),
        })
    }
}

/// Writers take the lock exclusively, readers shared: two VMs writing one image (or one
/// writing under another's page cache) would corrupt the filesystem in it. The lock lives
/// as long as the file is open.
fn lock(file: &File, read_only: bool, path: &Path) -> Result<(), BlockError> {
    let mode = if read_only { libc::LOCK_SH } else { libc::LOCK_EX };
    // SAFETY: flock only takes a descriptor we own (kept open by `file`) and flags.
    let rc = unsafe { libc::flock(file.as_raw_fd(), mode | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(());
    }
    let source = io::Error::last_os_error();
    let path = path.to_path_buf();
    if source.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Err(BlockError::InUse { path })
    } else {
        Err(BlockError::Lock { path, source })
    }
}

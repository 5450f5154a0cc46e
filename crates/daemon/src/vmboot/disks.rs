//! A VM instance's disks: the image's read-only ext4 (its layers flattened once per image, shared by every
//! VM of it: creating a VM copies no image bytes) and the instance's own writable ext4, a sparse file
//! holding only what the guest writes (overlayfs joins them in the guest).

use std::path::{Path, PathBuf};
use std::process::Command;

use vessel_image::store::{ImageRecord, Store};

use super::BootError;

/// The image's base disk under `dir`, built when missing (`shown` names the image in errors).
pub fn base_disk(store: &Store, image: &ImageRecord, dir: &Path, shown: &str) -> Result<PathBuf, BootError> {
    let name = image.config.to_string().replace(':', "-");
    let out = dir.join(format!("{name}.ext4"));
    if out.exists() {
        return Ok(out);
    }
    std::fs::create_dir_all(dir).map_err(|source| BootError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    // Room for nothing: the image's disk is never written.
    vessel_image::ext4::build_ext4(store, image, &out, 0).map_err(|e| BootError::Disk {
        image: shown.to_string(),
        why: e.to_string(),
    })?;
    Ok(out)
}

/// The instance's writable disk at `path` (`size` bytes, sparse), made empty when missing; kept across
/// restarts.
pub fn data_disk(path: &Path, size: u64) -> Result<(), BootError> {
    if path.exists() {
        return Ok(());
    }
    let io = |source| BootError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    std::fs::File::create(&tmp)
        .and_then(|f| f.set_len(size))
        .map_err(io)?;
    let out = Command::new("mkfs.ext4")
        // Lazy inode tables and journal: mkfs writes only the metadata it must, and the file stays sparse
        // (the guest's kernel initializes the rest as it goes).
        .args([
            "-q",
            "-F",
            "-m",
            "0",
            "-E",
            "root_owner=0:0,lazy_itable_init=1,lazy_journal_init=1",
            "-L",
            "vessel-data",
        ])
        .arg(&tmp)
        .output()
        .map_err(|e| BootError::Tool {
            what: "run mkfs.ext4 (install e2fsprogs)".into(),
            why: e.to_string(),
        })?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&tmp);
        return Err(BootError::Tool {
            what: format!("make the disk {}", path.display()),
            why: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_data_disk_is_sparse_ext4_and_kept() {
        let dir = std::env::temp_dir().join(format!("vessel-data-disk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let disk = dir.join("data.ext4");
        super::data_disk(&disk, 1 << 30).unwrap();
        let m = std::fs::metadata(&disk).unwrap();
        assert_eq!(m.len(), 1 << 30);
        assert!(
            m.blocks() * 512 < 64 << 20,
            "sparse: {} bytes used",
            m.blocks() * 512
        );
        let mut head = [0u8; 0x440];
        std::io::Read::read_exact(&mut std::fs::File::open(&disk).unwrap(), &mut head).unwrap();
        assert_eq!(&head[0x438..0x43a], &[0x53, 0xef], "ext4 superblock magic");
        std::fs::write(&disk, b"changed").unwrap();
        super::data_disk(&disk, 1 << 30).unwrap();
        assert_eq!(
            std::fs::read(&disk).unwrap(),
            b"changed",
            "an existing disk is kept"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! A host tap device speaking the virtio 1.x net header (IFF_VNET_HDR, 12 bytes), so frames pass
//! between the guest's rings and the tap without rewriting their headers.

use super::VNET_HDR_LEN;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_ref, ioctl_with_val};

const TUN_PATH: &str = "/dev/net/tun";
/// Interface names hold at most 15 bytes (IFNAMSIZ with its NUL).
pub const MAX_NAME_LEN: usize = libc::IFNAMSIZ - 1;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("Tap {tap:?}: {TUN_PATH} is missing (load the tun module: modprobe tun)")]
    NoTunDevice { tap: String },
    #[error("Tap {tap:?}: the name is longer than {MAX_NAME_LEN} bytes")]
    NameTooLong { tap: String },
    #[error(
        "Tap {tap:?}: not a valid interface name (empty, \".\", \"..\", or holding '/', ':' or whitespace)"
    )]
    InvalidName { tap: String },
    #[error("Tap {tap:?} is busy: another process has it open")]
    Busy { tap: String },
    #[error(
        "Tap {tap:?}: permission denied (needs CAP_NET_ADMIN, or a persistent tap this user owns: \
         ip tuntap add {tap} mode tap user $USER)"
    )]
    Permission { tap: String },
    #[error("Tap {tap:?}: an interface of that name exists and is not a single-queue tap")]
    NotATap { tap: String },
    #[error("Tap {tap:?}: {op}: {source}")]
    Io {
        tap: String,
        op: &'static str,
        source: io::Error,
    },
}

/// An open tap: non-blocking, with the 12-byte virtio header in front of every frame. Closing it
/// removes the interface unless it was made persistent (`ip tuntap add`).
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Opens (creating if absent) the tap `name`; a name with `%d` lets the kernel pick the
    /// number, and [`Tap::name`] tells which.
    pub fn open(name: &str) -> Result<Self, NetError> {
        check_name(name)?;
        let tap = || name.to_owned();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(TUN_PATH)
            .map_err(|source| match source.raw_os_error() {
                Some(libc::ENOENT | libc::ENODEV | libc::ENXIO) => NetError::NoTunDevice { tap: tap() },
                Some(libc::EACCES | libc::EPERM) => NetError::Permission { tap: tap() },
                _ => NetError::Io {
                    tap: tap(),
                    op: "opening /dev/net/tun",
                    source,
                },
            })?;

        // SAFETY: ifreq is plain old data; all zeroes is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, &src) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
            *dst = src as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
        // SAFETY: TUNSETIFF reads and fills the ifreq we own; the fd is a tun control fd.
        if unsafe { ioctl_with_mut_ref(&file, libc::TUNSETIFF as _, &mut req) } < 0 {
            let source = io::Error::last_os_error();
            return Err(match source.raw_os_error() {
                Some(libc::EBUSY) => NetError::Busy { tap: tap() },
                Some(libc::EPERM | libc::EACCES) => NetError::Permission { tap: tap() },
                Some(libc::EINVAL) => NetError::NotATap { tap: tap() },
                _ => NetError::Io {
                    tap: tap(),
                    op: "TUNSETIFF",
                    source,
                },
            });
        }
        // The kernel wrote back the final name (a `%d` pattern resolved), NUL-terminated.
        let bytes: Vec<u8> = req
            .ifr_name
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        let tap = Self {
            file,
            name: String::from_utf8_lossy(&bytes).into_owned(),
        };

        // The 1.x header carries num_buffers too, so both ends agree on 12 bytes.
        let size = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int from the reference we pass.
        if unsafe { ioctl_with_ref(&tap.file, libc::TUNSETVNETHDRSZ as _, &size) } < 0 {
            return Err(tap.error("TUNSETVNETHDRSZ", io::Error::last_os_error()));
        }
        // A persistent tap keeps the offloads of its last user: none until a guest negotiates.
        tap.set_offload(0)
            .map_err(|source| tap.error("TUNSETOFFLOAD", source))?;
        Ok(tap)
    }

    /// The interface's name (with any `%d` resolved).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Tells the kernel which offloads (`TUN_F_*`) the reader accepts: partial checksums and
    /// GSO frames are only handed over with these set.
    pub fn set_offload(&self, flags: u32) -> io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value; nothing in memory is touched.
        let rc = unsafe { ioctl_with_val(&self.file, libc::TUNSETOFFLOAD as _, flags.into()) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads one frame with its virtio header; `WouldBlock` when none is queued.
    pub fn read_frame(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Writes one frame with its virtio header (one write is one frame).
    pub fn write_frame(&self, buf: &[u8]) -> io::Result<usize> {
        (&self.file).write(buf)
    }

    /// Writes one frame, virtio header first, gathered from `pieces` with one writev(2).
    ///
    /// # Safety
    /// Every iovec must point at `iov_len` readable bytes that stay mapped for the call (guest
    /// memory held by the caller). Their contents may change meanwhile (the guest owns them); the
    /// kernel copies the header once and checks it.
    pub unsafe fn write_frame_gathered(&self, pieces: &[libc::iovec]) -> io::Result<usize> {
        let count =
            libc::c_int::try_from(pieces.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: the caller guarantees the buffers; writev only reads them and `pieces`.
        let written = unsafe { libc::writev(self.file.as_raw_fd(), pieces.as_ptr(), count) };
        usize::try_from(written).map_err(|_| io::Error::last_os_error())
    }

    fn error(&self, op: &'static str, source: io::Error) -> NetError {
        NetError::Io {
            tap: self.name.clone(),
            op,
            source,
        }
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// The kernel's own rule (dev_valid_name), checked first for a clearer message than EINVAL.
pub fn check_name(name: &str) -> Result<(), NetError> {
    if name.len() > MAX_NAME_LEN {
        return Err(NetError::NameTooLong { tap: name.to_owned() });
    }
    let bad_char = |c: char| c == '/' || c == ':' || c == '\0' || c.is_whitespace();
    if name.is_empty() || name == "." || name == ".." || name.contains(bad_char) {
        return Err(NetError::InvalidName { tap: name.to_owned() });
    }
    Ok(())
}

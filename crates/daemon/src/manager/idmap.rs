//! `userns auto`: each instance gets its own block of 65536 subordinate uids and gids, so that its root is an
//! unprivileged uid on the host (Incus's default for system containers). The blocks come from root's
//! entries in /etc/subuid and /etc/subgid, or, when there are none, from 1000000 on (1000000000 ids, as
//! Incus assumes). The image's files are shown to the instance through idmapped mounts of its layers
//! (`vessel_image::snapshot::mount_snapshot_idmapped`); nothing is copied.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use vessel_api::IdMap;

use super::ManagerError;

/// Ids per instance: a whole 16-bit range, what images expect (nobody is 65534).
pub const BLOCK: u32 = 65536;
const DEFAULT_RANGE: (u32, u32) = (1_000_000, 1_000_000_000);

/// root's first range in a subordinate id file (`root:START:COUNT`), if any.
fn root_range(text: &str) -> Option<(u32, u32)> {
    text.lines().find_map(|l| {
        let mut f = l.trim().split(':');
        let (user, start, count) = (f.next()?, f.next()?, f.next()?);
        (user == "root" || user == "0")
            .then(|| Some((start.parse().ok()?, count.parse().ok()?)))
            .flatten()
    })
}

/// The (uid range, gid range) vesseld hands blocks out of.
pub fn ranges() -> ((u32, u32), (u32, u32)) {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|t| root_range(&t))
            .unwrap_or(DEFAULT_RANGE)
    };
    (read("/etc/subuid"), read("/etc/subgid"))
}

/// The lowest block that no instance in `used` has.
pub fn allocate(used: &[IdMap]) -> Result<IdMap, ManagerError> {
    let ((ustart, ucount), (gstart, gcount)) = ranges();
    let blocks = (ucount / BLOCK).min(gcount / BLOCK);
    for k in 0..blocks {
        let (uid, gid) = (ustart + k * BLOCK, gstart + k * BLOCK);
        if !used.iter().any(|m| m.uid == uid || m.gid == gid) {
            return Ok(IdMap {
                uid,
                gid,
                size: BLOCK,
            });
        }
    }
    Err(ManagerError::Conflict(format!(
        "No free block of {BLOCK} subordinate ids left for userns auto ({blocks} in root's ranges)"
    )))
}

/// A user namespace with `m`'s mapping, held by a descriptor: what an idmapped mount needs. A forked child
/// unshares it, says so on a close-on-exec pipe and waits to be killed; it makes only raw system calls
/// between fork and its end, so forking in this multi-threaded process is safe, and nothing depends on a
/// pipe's end-of-file (another thread's fork or spawn may hold a copy of any descriptor for a while).
pub fn user_namespace(m: &IdMap) -> Result<OwnedFd, ManagerError> {
    let err = |what: &str, e: std::io::Error| ManagerError::Internal(format!("userns: {what}: {e}"));
    let (ready_r, ready_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| err("pipe", e.into()))?;
    let parent = nix::unistd::getpid();
    // SAFETY: the child calls only prctl, getppid, unshare, write, pause and _exit (async-signal-safe)
    // until it is killed.
    match unsafe { nix::unistd::fork() }.map_err(|e| err("fork", e.into()))? {
        nix::unistd::ForkResult::Child => {
            // If vesseld dies (kill -9) before it kills us, we die with it: a copy of vesseld's descriptors
            // (its root's lock among them) must not outlive it. The getppid check covers a death before
            // the prctl.
            // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and touches no memory of ours.
            let armed = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } == 0;
            if !armed || nix::unistd::getppid() != parent {
                // SAFETY: _exit ends the child at once, running nothing of the parent's.
                unsafe { libc::_exit(1) };
            }
            let ok = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).is_ok();
            let _ = nix::unistd::write(&ready_w, if ok { b"1" } else { b"0" });
            loop {
                // SAFETY: pause only waits for a signal; the parent's SIGKILL ends this process.
                unsafe { libc::pause() };
            }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(ready_w);
            let result = (|| {
                let mut b = [0u8; 1];
                std::fs::File::from(ready_r)
                    .read_exact(&mut b)
                    .map_err(|e| err("child", e))?;
                if b[0] != b'1' {
                    return Err(ManagerError::Internal(
                        "userns: the kernel refused a new user namespace".into(),
                    ));
                }
                let proc = format!("/proc/{child}");
                for (file, start) in [("uid_map", m.uid), ("gid_map", m.gid)] {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(format!("{proc}/{file}"))
                        .and_then(|mut f| f.write_all(format!("0 {start} {}\n", m.size).as_bytes()))
                        .map_err(|e| err(file, e))?;
                }
                std::fs::File::open(format!("{proc}/ns/user"))
                    .map(OwnedFd::from)
                    .map_err(|e| err("ns/user", e))
            })();
            // The namespace lives on through our descriptor.
            let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(child, None);
            result
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_handed_out_lowest_free_first() {
        assert_eq!(
            root_range("daemon:1:2\nroot:100000:655360\n"),
            Some((100000, 655360))
        );
        assert_eq!(root_range("user:1:2\n"), None);
        let first = allocate(&[]).unwrap();
        let second = allocate(&[first]).unwrap();
        assert_eq!(second.uid, first.uid + BLOCK);
        let third = allocate(&[second]).unwrap();
        assert_eq!(third, first, "a freed block is used again");
    }

    #[test]
    fn a_user_namespace_has_the_mapping_asked_for() {
        let m = IdMap {
            uid: 3_000_000,
            gid: 3_100_000,
            size: BLOCK,
        };
        let fd = user_namespace(&m).unwrap();
        let link =
            std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd))).unwrap();
        assert!(link.to_string_lossy().starts_with("user:["), "{link:?}");
        assert_ne!(
            link,
            std::fs::read_link("/proc/self/ns/user").unwrap(),
            "a new namespace"
        );
    }
}

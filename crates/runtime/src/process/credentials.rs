//! Switching to the configured user and groups while keeping the capabilities the config asks for.

use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
use oci_spec::runtime::User;

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("Cannot set additional groups {gids:?}: {source}")]
    Groups { gids: Vec<u32>, source: nix::Error },
    #[error("Cannot switch to gid {gid}: {source}")]
    Gid { gid: u32, source: nix::Error },
    #[error("Cannot switch to uid {uid}: {source}")]
    Uid { uid: u32, source: nix::Error },
    #[error("Cannot keep capabilities across the user switch: {0}")]
    KeepCaps(nix::Error),
}

/// setgroups is denied in a user namespace whose gid map was written without CAP_SETGID over it; then the
/// supplementary groups cannot be changed at all and we leave them.
fn setgroups_allowed() -> bool {
    std::fs::read_to_string("/proc/self/setgroups")
        .map(|s| s.trim() != "deny")
        .unwrap_or(true)
}

/// Switch uid/gid/groups. Capabilities survive only through PR_SET_KEEPCAPS; the caller sets them right after.
pub fn switch_user(user: &User) -> Result<(), CredentialsError> {
    set_keepcaps(true)?;
    let gids: Vec<u32> = user.additional_gids().clone().unwrap_or_default();
    if setgroups_allowed() {
        let groups: Vec<Gid> = gids.iter().map(|g| Gid::from_raw(*g)).collect();
        setgroups(&groups).map_err(|source| CredentialsError::Groups {
            gids: gids.clone(),
            source,
        })?;
    }
    let gid = Gid::from_raw(user.gid());
    setresgid(gid, gid, gid).map_err(|source| CredentialsError::Gid {
        gid: user.gid(),
        source,
    })?;
    let uid = Uid::from_raw(user.uid());
    setresuid(uid, uid, uid).map_err(|source| CredentialsError::Uid {
        uid: user.uid(),
        source,
    })?;
    set_keepcaps(false)
}

fn set_keepcaps(on: bool) -> Result<(), CredentialsError> {
    // SAFETY: prctl with integer arguments only.
    let r = unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, on as libc::c_ulong, 0, 0, 0) };
    if r != 0 {
        return Err(CredentialsError::KeepCaps(nix::Error::last()));
    }
    Ok(())
}

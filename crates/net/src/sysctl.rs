//! Network sysctls of the calling thread's namespace (/proc/sys/net is per namespace).

use crate::NetError;

pub fn write(key: &str, value: &str) -> Result<(), NetError> {
    let path = format!("/proc/sys/{key}");
    if std::fs::read_to_string(&path)
        .map(|v| v.trim() == value)
        .unwrap_or(false)
    {
        return Ok(());
    }
    std::fs::write(&path, value).map_err(|e| NetError::Sysctl {
        key: key.replace('/', "."),
        reason: e.to_string(),
    })
}

//! Instance ids (64 hex digits, random) and names (given, or made from two words and the id).

use super::ManagerError;

pub fn random_id() -> Result<String, ManagerError> {
    let mut bytes = [0u8; 32];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom")
            .map_err(|e| ManagerError::Internal(format!("Cannot open /dev/urandom: {e}")))?,
        &mut bytes,
    )
    .map_err(|e| ManagerError::Internal(format!("Cannot read /dev/urandom: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

const ADJECTIVES: &[&str] = &[
    "amber", "brisk", "calm", "deft", "eager", "fleet", "gentle", "hardy", "keen", "lucid", "mellow",
    "nimble", "quiet", "rapid", "steady", "tidy", "vivid", "wry",
];
const NOUNS: &[&str] = &[
    "anchor", "brig", "cutter", "dory", "ferry", "galley", "hull", "keel", "ketch", "mast", "punt", "raft",
    "schooner", "skiff", "sloop", "tender", "yawl",
];

/// A readable name from the id's first bytes, plus four hex digits so that it is unique in practice.
pub fn generate(id: &str) -> String {
    let n = u32::from_str_radix(&id[..8.min(id.len())], 16).unwrap_or(0) as usize;
    format!(
        "{}_{}_{}",
        ADJECTIVES[n % ADJECTIVES.len()],
        NOUNS[(n / ADJECTIVES.len()) % NOUNS.len()],
        &id[8.min(id.len())..12.min(id.len())]
    )
}

/// Names as docker allows them: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 128 characters; never a hex string
/// of 64 digits, which would read as an id.
pub fn validate(name: &str) -> Result<(), ManagerError> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && name.len() <= 128
        && !(name.len() == 64 && name.chars().all(|c| c.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(ManagerError::Invalid(format!(
            "Invalid name {name:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate("web-1.a_b").is_ok());
        assert!(validate("-x").is_err());
        assert!(validate("a/b").is_err());
        assert!(validate("").is_err());
        let id = random_id().unwrap();
        assert_eq!(id.len(), 64);
        assert!(validate(&generate(&id)).is_ok());
    }
}

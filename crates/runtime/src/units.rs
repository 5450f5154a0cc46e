//! Sizes as users write them on command lines: `1024`, `512k`, `100m`, `1g`; `-1` means unlimited.

#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    #[error("Invalid size {0:?}: use a number with an optional k, m, g or t suffix")]
    Invalid(String),
    #[error("Size {0:?} is too large")]
    TooLarge(String),
}

pub fn parse_bytes(s: &str) -> Result<i64, UnitError> {
    let t = s.trim().to_ascii_lowercase();
    if t == "-1" {
        return Ok(-1);
    }
    let t = t.trim_end_matches('b');
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: i64 = num.parse().map_err(|_| UnitError::Invalid(s.to_string()))?;
    if n < 0 {
        return Err(UnitError::Invalid(s.to_string()));
    }
    n.checked_mul(mult)
        .ok_or_else(|| UnitError::TooLarge(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("1024").unwrap(), 1024);
        assert_eq!(parse_bytes("100m").unwrap(), 100 << 20);
        assert_eq!(parse_bytes("1G").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("-1").unwrap(), -1);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("-5").is_err());
        assert!(parse_bytes("99999999999t").is_err());
    }
}

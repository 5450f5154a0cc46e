//! The names one network answers, and the reverse (PTR) names of their addresses.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The names one network answers: lowercase name without trailing dot → its addresses (v4 and v6).
#[derive(Default, Clone, Debug)]
pub struct Zone {
    names: HashMap<String, Vec<IpAddr>>,
    /// Address → the first name it was inserted under.
    reverse: HashMap<IpAddr, String>,
}

/// The key a name is kept under: ASCII-lowercased, without one trailing dot.
fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

impl Zone {
    /// An empty zone.
    pub fn new() -> Zone {
        Zone::default()
    }

    /// Adds `addr` under `name` (names are case-insensitive; a trailing dot is ignored).
    ///
    /// Adding an address a name already has does nothing; an empty name is ignored. An address keeps
    /// the first name it was added under for [`Zone::reverse`].
    pub fn insert(&mut self, name: &str, addr: IpAddr) {
        let key = normalize(name);
        if key.is_empty() {
            return;
        }
        let addrs = self.names.entry(key.clone()).or_default();
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
        self.reverse.entry(addr).or_insert(key);
    }

    /// The addresses of `name` (case-insensitive, trailing dot ignored) in the order they were added,
    /// or `None` if the zone does not hold the name.
    pub fn lookup(&self, name: &str) -> Option<&[IpAddr]> {
        self.names.get(&normalize(name)).map(Vec::as_slice)
    }

    /// The name an address belongs to (for PTR), if any.
    pub fn reverse(&self, addr: IpAddr) -> Option<&str> {
        self.reverse.get(&addr).map(String::as_str)
    }
}

/// The address a reverse name stands for: `d.c.b.a.in-addr.arpa` or the 32 nibbles of
/// `….ip6.arpa`. `name` is lowercase without its trailing dot. `None` for anything else, including
/// partial (network) reverse names.
pub(crate) fn parse_reverse_name(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let mut octets = [0u8; 4];
        let mut labels = rest.split('.');
        for slot in octets.iter_mut().rev() {
            let label = labels.next()?;
            if label.is_empty() || label.len() > 3 || !label.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            *slot = label.parse().ok()?;
        }
        if labels.next().is_some() {
            return None;
        }
        return Some(IpAddr::V4(Ipv4Addr::from(octets)));
    }
    if let Some(rest) = name.strip_suffix(".ip6.arpa") {
        let mut value: u128 = 0;
        let mut count = 0;
        // The least significant nibble comes first, so walk the labels from the end.
        for label in rest.rsplit('.') {
            let &[digit] = label.as_bytes() else {
                return None;
            };
            let nibble = char::from(digit).to_digit(16)?;
            count += 1;
            if count > 32 {
                return None;
            }
            value = (value << 4) | u128::from(nibble);
        }
        if count != 32 {
            return None;
        }
        return Some(IpAddr::V6(Ipv6Addr::from(value)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_case_insensitive_and_ignore_a_trailing_dot() {
        let mut z = Zone::new();
        let v4: IpAddr = "127.88.0.2".parse().unwrap();
        let v6: IpAddr = "fd00:88::2".parse().unwrap();
        z.insert("Web.", v4);
        z.insert("web", v6);
        z.insert("WEB", v4);
        z.insert(".", v4);
        assert_eq!(z.lookup("web"), Some(&[v4, v6][..]));
        assert_eq!(z.lookup("wEb."), Some(&[v4, v6][..]));
        assert_eq!(z.lookup("db"), None);
        assert_eq!(z.lookup(""), None);
        assert_eq!(z.reverse(v4), Some("web"));
        assert_eq!(z.reverse(v6), Some("web"));
        assert_eq!(z.reverse("127.88.0.3".parse().unwrap()), None);
    }

    #[test]
    fn an_address_keeps_its_first_name() {
        let mut z = Zone::new();
        let a: IpAddr = "127.88.0.2".parse().unwrap();
        z.insert("web", a);
        z.insert("alias", a);
        assert_eq!(z.reverse(a), Some("web"));
        assert_eq!(z.lookup("alias"), Some(&[a][..]));
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            parse_reverse_name("2.0.88.127.in-addr.arpa"),
            Some("127.88.0.2".parse().unwrap())
        );
        let v6 = "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.8.0.0.0.0.d.f.ip6.arpa";
        assert_eq!(parse_reverse_name(v6), Some("fd00:88::2".parse().unwrap()));
        for bad in [
            "88.127.in-addr.arpa",
            "1.2.0.88.127.in-addr.arpa",
            "256.0.88.127.in-addr.arpa",
            "+1.0.88.127.in-addr.arpa",
            ".0.88.127.in-addr.arpa",
            "in-addr.arpa",
            "0.0.d.f.ip6.arpa",
            "g.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.8.0.0.0.0.d.f.ip6.arpa",
            "00.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.8.0.0.0.0.d.f.ip6.arpa",
            "0.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.8.0.0.0.0.d.f.ip6.arpa",
            "web",
        ] {
            assert_eq!(parse_reverse_name(bad), None, "{bad}");
        }
    }
}

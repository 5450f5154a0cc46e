//! OCI device cgroup rules, checked and normalised once for both the v1 files and the v2 BPF filter.
//!
//! Semantics (the same on v1 and v2): everything starts denied, then the rules apply in order and, for each
//! access bit, the last rule that matches the device and names that bit decides.

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType};

use super::error::CgroupError;

/// mknod access bit (the value of BPF_DEVCG_ACC_MKNOD).
pub(crate) const ACC_MKNOD: u8 = 1;
/// read access bit (BPF_DEVCG_ACC_READ).
pub(crate) const ACC_READ: u8 = 2;
/// write access bit (BPF_DEVCG_ACC_WRITE).
pub(crate) const ACC_WRITE: u8 = 4;
/// All three access bits.
pub(crate) const ACC_ALL: u8 = ACC_MKNOD | ACC_READ | ACC_WRITE;

/// Which devices a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DevKind {
    /// Block and character devices.
    All,
    Block,
    Char,
}

/// One checked device rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeviceRule {
    pub allow: bool,
    pub kind: DevKind,
    /// `None` matches any major number.
    pub major: Option<u32>,
    /// `None` matches any minor number.
    pub minor: Option<u32>,
    /// ACC_* bits; never 0.
    pub access: u8,
}

impl DeviceRule {
    /// Checks one OCI rule. FIFO (`p`) rules are not device-cgroup matters and yield `None`; an absent or empty
    /// access means "rwm"; a missing or negative major/minor is a wildcard.
    pub(crate) fn from_oci(rule: &LinuxDeviceCgroup) -> Result<Option<DeviceRule>, CgroupError> {
        let kind = match rule.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::A => DevKind::All,
            LinuxDeviceType::B => DevKind::Block,
            LinuxDeviceType::C | LinuxDeviceType::U => DevKind::Char,
            LinuxDeviceType::P => return Ok(None),
        };
        let number = |what: &str, n: Option<i64>| -> Result<Option<u32>, CgroupError> {
            match n {
                None => Ok(None),
                Some(n) if n < 0 => Ok(None),
                // Device numbers fit in 32 bits; the BPF filter compares them as signed 32-bit immediates.
                Some(n) if n <= i32::MAX as i64 => Ok(Some(n as u32)),
                Some(n) => Err(invalid(rule, format!("{what} number {n} is out of range"))),
            }
        };
        let major = number("major", rule.major())?;
        let minor = number("minor", rule.minor())?;
        let mut access = 0;
        for c in rule.access().as_deref().unwrap_or("").chars() {
            access |= match c {
                'r' => ACC_READ,
                'w' => ACC_WRITE,
                'm' => ACC_MKNOD,
                other => {
                    return Err(invalid(
                        rule,
                        format!("unknown access '{other}' (expected a mix of r, w, m)"),
                    ))
                }
            };
        }
        if access == 0 {
            access = ACC_ALL;
        }
        Ok(Some(DeviceRule {
            allow: rule.allow(),
            kind,
            major,
            minor,
            access,
        }))
    }

    /// Checks a list of OCI rules, dropping the ones that do not concern the device cgroup.
    pub(crate) fn from_oci_list(rules: &[LinuxDeviceCgroup]) -> Result<Vec<DeviceRule>, CgroupError> {
        let mut out = Vec::with_capacity(rules.len());
        for r in rules {
            if let Some(rule) = DeviceRule::from_oci(r)? {
                out.push(rule);
            }
        }
        Ok(out)
    }

    /// Whether the rule matches every device and every access.
    pub(crate) fn is_total(&self) -> bool {
        self.kind == DevKind::All && self.major.is_none() && self.minor.is_none() && self.access == ACC_ALL
    }

    /// The access string, in v1 order "rwm".
    pub(crate) fn access_string(&self) -> String {
        let mut s = String::new();
        for (bit, c) in [(ACC_READ, 'r'), (ACC_WRITE, 'w'), (ACC_MKNOD, 'm')] {
            if self.access & bit != 0 {
                s.push(c);
            }
        }
        s
    }

    /// The lines to write to v1 devices.allow / devices.deny. The kernel reads a bare "a" as "every device, every
    /// access" (and ignores numbers after it), so a partial rule for all types is written once per type.
    pub(crate) fn v1_entries(&self) -> Vec<String> {
        if self.is_total() {
            return vec!["a".to_string()];
        }
        let num = |n: Option<u32>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
        let body = format!("{}:{} {}", num(self.major), num(self.minor), self.access_string());
        match self.kind {
            DevKind::All => vec![format!("b {body}"), format!("c {body}")],
            DevKind::Block => vec![format!("b {body}")],
            DevKind::Char => vec![format!("c {body}")],
        }
    }
}

fn invalid(rule: &LinuxDeviceCgroup, reason: String) -> CgroupError {
    CgroupError::InvalidResource {
        setting: format!("linux.resources.devices rule '{rule}'"),
        reason,
    }
}

/// The device rules runc adds to every container: mknod of any device, and use of the standard character
/// devices (null, zero, full, random, urandom, tty, console, ptmx, pts/*, net/tun). The container's list puts
/// these after the spec's own rules (the last matching rule wins), so a config cannot take them away, as in
/// runc.
pub fn default_device_rules() -> Vec<LinuxDeviceCgroup> {
    let rule = |typ, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(typ)
            .access(access.to_string());
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build()
            .expect("a device rule with every field set always builds")
    };
    use LinuxDeviceType::{B, C};
    vec![
        rule(C, None, None, "m"),
        rule(B, None, None, "m"),
        rule(C, Some(1), Some(3), "rwm"),    // /dev/null
        rule(C, Some(1), Some(5), "rwm"),    // /dev/zero
        rule(C, Some(1), Some(7), "rwm"),    // /dev/full
        rule(C, Some(1), Some(8), "rwm"),    // /dev/random
        rule(C, Some(1), Some(9), "rwm"),    // /dev/urandom
        rule(C, Some(5), Some(0), "rwm"),    // /dev/tty
        rule(C, Some(5), Some(1), "rwm"),    // /dev/console
        rule(C, Some(5), Some(2), "rwm"),    // /dev/ptmx
        rule(C, Some(136), None, "rwm"),     // /dev/pts/*
        rule(C, Some(10), Some(200), "rwm"), // /dev/net/tun
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oci(
        allow: bool,
        typ: Option<LinuxDeviceType>,
        major: Option<i64>,
        minor: Option<i64>,
        access: Option<&str>,
    ) -> LinuxDeviceCgroup {
        let mut b = LinuxDeviceCgroupBuilder::default().allow(allow);
        if let Some(t) = typ {
            b = b.typ(t);
        }
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        if let Some(a) = access {
            b = b.access(a.to_string());
        }
        b.build().unwrap()
    }

    #[test]
    fn normalises_wildcards_and_access() {
        let r = DeviceRule::from_oci(&oci(false, None, None, Some(-1), None))
            .unwrap()
            .unwrap();
        assert_eq!(
            r,
            DeviceRule {
                allow: false,
                kind: DevKind::All,
                major: None,
                minor: None,
                access: ACC_ALL
            }
        );
        assert!(r.is_total());
        assert_eq!(r.v1_entries(), ["a"]);

        let r = DeviceRule::from_oci(&oci(true, Some(LinuxDeviceType::C), Some(1), Some(3), Some("mr")))
            .unwrap()
            .unwrap();
        assert_eq!(r.access, ACC_READ | ACC_MKNOD);
        assert_eq!(r.v1_entries(), ["c 1:3 rm"]);

        let r = DeviceRule::from_oci(&oci(true, Some(LinuxDeviceType::A), Some(8), None, Some("r")))
            .unwrap()
            .unwrap();
        assert_eq!(r.v1_entries(), ["b 8:* r", "c 8:* r"]);

        let r = DeviceRule::from_oci(&oci(true, Some(LinuxDeviceType::U), None, None, Some("w")))
            .unwrap()
            .unwrap();
        assert_eq!(r.kind, DevKind::Char);
    }

    #[test]
    fn rejects_bad_rules_and_skips_fifos() {
        assert!(
            DeviceRule::from_oci(&oci(true, Some(LinuxDeviceType::C), Some(1), Some(3), Some("rx"))).is_err()
        );
        assert!(
            DeviceRule::from_oci(&oci(true, Some(LinuxDeviceType::C), Some(1 << 40), None, None)).is_err()
        );
        assert_eq!(
            DeviceRule::from_oci(&oci(true, Some(LinuxDeviceType::P), None, None, None)).unwrap(),
            None
        );
    }

    #[test]
    fn default_rules_are_valid() {
        let rules = DeviceRule::from_oci_list(&default_device_rules()).unwrap();
        assert_eq!(rules.len(), 12);
        assert!(rules.iter().all(|r| r.allow));
    }
}

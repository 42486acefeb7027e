//! DICOM unique identifiers. With the default root `2.25` a UID is `2.25.` followed by a random
//! 128-bit number in decimal (ISO/IEC 9834-8 UUID-derived UIDs, PS3.5 §B.2), unique without any
//! registration. A site with its own registered root (`--dicom-uid-root 1.2.826.0.1.3680043.10.543`)
//! gets `<root>.<random decimal>` filling the 64 characters a UID may have.

use rand::RngCore;

/// Largest UID length (PS3.5 §9.1).
pub const MAX_UID_LEN: usize = 64;
/// Random decimal digits a generated UID needs at least (≈ 66 bits): roots longer than
/// `64 - 1 - 20` characters are refused.
const MIN_RANDOM_DIGITS: usize = 20;

/// A validated UID root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UidRoot(String);

impl Default for UidRoot {
    fn default() -> Self {
        UidRoot("2.25".into())
    }
}

/// Checks UID syntax: dot-separated decimal components without leading zeros, 1–64 characters.
pub fn check_uid(uid: &str) -> Result<(), String> {
    if uid.is_empty() || uid.len() > MAX_UID_LEN {
        return Err(format!(
            "UID {uid:?} has {} characters, expected 1 to {MAX_UID_LEN}",
            uid.len()
        ));
    }
    for c in uid.split('.') {
        let ok = !c.is_empty()
            && c.bytes().all(|b| b.is_ascii_digit())
            && (c.len() == 1 || !c.starts_with('0'));
        if !ok {
            return Err(format!(
                "UID {uid:?} is not dot-separated decimal numbers without leading zeros"
            ));
        }
    }
    Ok(())
}

impl std::str::FromStr for UidRoot {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().trim_end_matches('.');
        check_uid(s)?;
        if s.len() + 1 + MIN_RANDOM_DIGITS > MAX_UID_LEN {
            return Err(format!(
                "UID root {s:?} is {} characters long; at most {} leave room for unique suffixes",
                s.len(),
                MAX_UID_LEN - 1 - MIN_RANDOM_DIGITS
            ));
        }
        Ok(UidRoot(s.to_string()))
    }
}

impl std::fmt::Display for UidRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl UidRoot {
    /// A new UID under this root: the root, a dot, and a random decimal number that fills the
    /// remaining length (at most 39 digits, a 128-bit number).
    pub fn generate(&self) -> String {
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        // A leading zero digit is impossible: the number is written without padding and is
        // forced non-zero.
        let n = u128::from_le_bytes(bytes) | 1;
        let digits = n.to_string();
        let room = MAX_UID_LEN - self.0.len() - 1;
        let mut suffix = &digits[..digits.len().min(room)];
        while suffix.len() > 1 && suffix.starts_with('0') {
            suffix = &suffix[1..];
        }
        format!("{}.{}", self.0, suffix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_uids_are_valid_and_distinct() {
        for root in [
            "2.25",
            "1.2.826.0.1.3680043.10.543",
            "1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.1",
        ] {
            let root: UidRoot = root.parse().unwrap();
            let mut seen = std::collections::HashSet::new();
            for _ in 0..1000 {
                let u = root.generate();
                check_uid(&u).unwrap();
                assert!(u.starts_with(&format!("{root}.")));
                assert!(u.len() <= MAX_UID_LEN);
                assert!(seen.insert(u));
            }
        }
    }

    #[test]
    fn bad_roots_are_refused() {
        for bad in [
            "",
            "1..2",
            "1.02",
            "a.b",
            "1.2.3.",
            "1.2.826.0.1.3680043.10.543.1234567890123456789",
        ] {
            if bad == "1.2.3." {
                assert!(
                    bad.parse::<UidRoot>().is_ok(),
                    "a trailing dot is tolerated"
                );
                continue;
            }
            let e = bad.parse::<UidRoot>().unwrap_err();
            assert!(e.contains("UID"), "{bad}: {e}");
        }
        assert!(check_uid("1.2.840.10008.5.1.4.1.1.4").is_ok());
        assert!(check_uid(&"1".repeat(65)).is_err());
    }
}

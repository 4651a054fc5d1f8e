//! Connector versions such as `1.5.3437.0`, compared part by part as numbers so that
//! `1.5.10` is newer than `1.5.9`.

use std::cmp::Ordering;
use std::fmt;

/// A dotted numeric version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    parts: Vec<u64>,
    text: String,
}

impl Version {
    /// Parses `1.5.3437.0`; `None` for anything that is not dot-separated numbers.
    pub fn parse(text: &str) -> Option<Version> {
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        let parts = text
            .split('.')
            .map(|p| p.parse::<u64>().ok())
            .collect::<Option<Vec<_>>>()?;
        Some(Version {
            parts,
            text: text.to_string(),
        })
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let n = self.parts.len().max(other.parts.len());
        for i in 0..n {
            let a = self.parts.get(i).copied().unwrap_or(0);
            let b = other.parts.get(i).copied().unwrap_or(0);
            match a.cmp(&b) {
                Ordering::Equal => continue,
                o => return o,
            }
        }
        Ordering::Equal
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_as_numbers() {
        let v = |s| Version::parse(s).expect(s);
        assert!(v("1.5.10") > v("1.5.9"));
        assert_eq!(v("1.5").cmp(&v("1.5.0")), Ordering::Equal);
        assert!(v("2.0") > v("1.99.99"));
        assert!(Version::parse("1.x").is_none());
        assert!(Version::parse("").is_none());
    }
}

//! Silences: label matchers with a time window. A silenced alert still changes state
//! but sends no notifications; a silence ends on its own at its end time.

use std::collections::BTreeMap;

/// Labels a matcher may name.
pub const MATCHABLE: [&str; 6] = [
    "alertname",
    "code",
    "severity",
    "scope",
    "group",
    "connector",
];

/// `name=value`: the alert's label `name` equals `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    /// The label.
    pub name: String,
    /// The exact value.
    pub value: String,
}

impl Matcher {
    /// Parses `name=value`, refusing labels alerts do not have, so a typo cannot make a
    /// silence that silences nothing.
    pub fn parse(text: &str) -> Result<Matcher, String> {
        let Some((name, value)) = text.split_once('=') else {
            return Err(format!(
                "`{text}` is not a matcher; write it like `code=trust-cert-expiring`"
            ));
        };
        let name = name.trim();
        let value = value.trim();
        if !MATCHABLE.contains(&name) {
            return Err(format!(
                "`{name}` is not an alert label; use one of {}",
                MATCHABLE.join(", ")
            ));
        }
        if value.is_empty() {
            return Err(format!("matcher `{text}` has no value"));
        }
        Ok(Matcher {
            name: name.to_string(),
            value: value.to_string(),
        })
    }
}

impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.name, self.value)
    }
}

/// A silence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Silence {
    /// Random id, 16 hex digits.
    pub id: String,
    /// All must match.
    pub matchers: Vec<Matcher>,
    /// When it starts.
    pub starts_ms: i64,
    /// When it ends by itself.
    pub ends_ms: i64,
    /// Why.
    pub comment: String,
    /// The operator certificate's name that created it.
    pub created_by: String,
}

impl Silence {
    /// Whether it is in force at `now`.
    pub fn is_active(&self, now_ms: i64) -> bool {
        self.starts_ms <= now_ms && now_ms < self.ends_ms
    }

    /// Whether every matcher matches `labels`.
    pub fn matches(&self, labels: &BTreeMap<&'static str, String>) -> bool {
        !self.matchers.is_empty()
            && self
                .matchers
                .iter()
                .all(|m| labels.get(m.name.as_str()) == Some(&m.value))
    }
}

/// The id of the first active silence matching `labels`.
pub fn silenced_by<'a>(
    silences: &'a [Silence],
    labels: &BTreeMap<&'static str, String>,
    now_ms: i64,
) -> Option<&'a str> {
    silences
        .iter()
        .find(|s| s.is_active(now_ms) && s.matches(labels))
        .map(|s| s.id.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&'static str, &str)]) -> BTreeMap<&'static str, String> {
        pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
    }

    #[test]
    fn matchers_parse_and_silences_match_all_within_their_window() {
        assert!(Matcher::parse("code").is_err());
        assert!(
            Matcher::parse("colour=red")
                .unwrap_err()
                .contains("alert label")
        );
        assert!(Matcher::parse("group=").is_err());
        let s = Silence {
            id: "1".into(),
            matchers: vec![
                Matcher::parse("code=trust-cert-expiring").expect("ok"),
                Matcher::parse("group = eu").expect("ok"),
            ],
            starts_ms: 100,
            ends_ms: 200,
            comment: String::new(),
            created_by: "op".into(),
        };
        let hit = labels(&[("code", "trust-cert-expiring"), ("group", "eu")]);
        let miss = labels(&[("code", "trust-cert-expiring"), ("group", "us")]);
        assert!(s.matches(&hit) && !s.matches(&miss));
        let all = [s];
        assert_eq!(silenced_by(&all, &hit, 150), Some("1"));
        assert_eq!(silenced_by(&all, &hit, 99), None);
        assert_eq!(silenced_by(&all, &hit, 200), None, "ends on its own");
    }
}

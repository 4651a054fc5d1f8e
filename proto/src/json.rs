//! JSON forms of wire fields that a JSON number cannot carry: 64-bit ids (an epoch is
//! random) are written as strings, since jq and JavaScript read numbers as doubles and
//! round any above 2^53 to a different id.

use serde::Serializer;

/// Serializes a 64-bit id as a decimal string.
pub fn u64_string<S: Serializer>(value: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

#[cfg(test)]
mod tests {
    use crate::v1::{HistoryEntry, Report};

    #[test]
    fn epochs_are_strings_that_keep_every_digit() {
        let epoch = u64::MAX - 1;
        let r = serde_json::to_value(Report {
            epoch,
            seq: 3,
            ..Default::default()
        })
        .expect("json");
        assert_eq!(r["epoch"], epoch.to_string());
        assert_eq!(r["seq"], 3, "counters stay numbers");
        let h = serde_json::to_value(HistoryEntry {
            epoch,
            ..Default::default()
        })
        .expect("json");
        assert_eq!(h["epoch"], epoch.to_string());
    }
}

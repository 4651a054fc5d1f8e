//! Property tests over untrusted input: whatever bytes arrive, decoding and validating
//! a report never panics, and validation is deterministic. They cover the same paths
//! a fuzzer would, within the test suite's time.

use connwatch_shared::identity::{Identity, validate_name};
use connwatch_shared::validate::validate_report;
use connwatch_shared::wire::Report;
use proptest::prelude::*;
use prost::Message;

proptest! {
    // 256 cases keep the suite quick; PROPTEST_CASES does not override an explicit
    // count, so a longer run edits this number.
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder_or_validation(bytes in proptest::collection::vec(any::<u8>(), 0..2048), now in any::<i64>()) {
        if let Ok(report) = Report::decode(bytes.as_slice()) {
            let first = validate_report(&report, now);
            prop_assert_eq!(first, validate_report(&report, now));
        }
    }

    #[test]
    fn mutated_valid_reports_are_judged_never_crashed(
        seq in any::<u64>(),
        at in any::<i64>(),
        group in ".{0,80}",
        version in "[a-z]{0,64}|x{4090,4100}",
        states in proptest::collection::vec(any::<i32>(), 0..300),
        flip in any::<usize>(),
    ) {
        let report = Report {
            seq,
            collected_at_ms: at,
            group,
            collector_version: version,
            services: states
                .into_iter()
                .map(|s| connwatch_shared::wire::ServiceStatus { state: s, ..Default::default() })
                .collect(),
            ..Default::default()
        };
        let _ = validate_report(&report, 1_800_000_000_000);
        let mut bytes = report.encode_to_vec();
        if !bytes.is_empty() {
            let i = flip % bytes.len();
            bytes[i] ^= 0x5a;
            bytes.truncate(bytes.len() - (flip % 7).min(bytes.len()));
            if let Ok(r) = Report::decode(bytes.as_slice()) {
                let _ = validate_report(&r, 1_800_000_000_000);
            }
        }
    }

    #[test]
    fn identity_uris_never_panic_and_valid_ones_round_trip(uri in "connwatch://[a-z]{0,12}/.{0,70}") {
        if let Ok(id) = Identity::parse_uri(&uri) {
            prop_assert!(validate_name(&id.name).is_ok());
            prop_assert_eq!(Identity::parse_uri(&id.san_uri()), Ok(id));
        }
    }
}

//! Short, stable names for the wire enums: `SERVICE_STATE_RUNNING` becomes `running`.
//! Used by the JSON output and by the human tables, so both say the same thing.

use crate::v1::{
    AckOutcome, ConnectOutcome, Health, ServiceRole, ServiceState, Severity, StartType,
};
use serde::Serializer;

/// Strips the enum's upper-case prefix and lower-cases the rest, with `-` for `_`.
fn short(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix)
        .unwrap_or(full)
        .to_ascii_lowercase()
        .replace('_', "-")
}

macro_rules! enum_name {
    ($fn_name:ident, $name_fn:ident, $ty:ty, $prefix:literal) => {
        /// The short name of a raw enum value; `unknown(N)` for values this build does not know.
        pub fn $name_fn(value: i32) -> String {
            match <$ty>::try_from(value) {
                Ok(v) => short(v.as_str_name(), $prefix),
                Err(_) => format!("unknown({value})"),
            }
        }

        /// Serializes a raw enum field as its short name.
        pub fn $fn_name<S: Serializer>(value: &i32, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&$name_fn(*value))
        }
    };
}

enum_name!(
    service_role,
    service_role_name,
    ServiceRole,
    "SERVICE_ROLE_"
);
enum_name!(
    service_state,
    service_state_name,
    ServiceState,
    "SERVICE_STATE_"
);
enum_name!(start_type, start_type_name, StartType, "START_TYPE_");
enum_name!(
    connect_outcome,
    connect_outcome_name,
    ConnectOutcome,
    "CONNECT_OUTCOME_"
);
enum_name!(ack_outcome, ack_outcome_name, AckOutcome, "ACK_OUTCOME_");
enum_name!(severity, severity_name, Severity, "SEVERITY_");
enum_name!(health, health_name, Health, "HEALTH_");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_and_lower_case() {
        assert_eq!(
            service_state_name(ServiceState::NotInstalled as i32),
            "not-installed"
        );
        assert_eq!(severity_name(Severity::Critical as i32), "critical");
        assert_eq!(connect_outcome_name(99), "unknown(99)");
    }
}

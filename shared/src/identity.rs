//! Who is on the other end of a connection. Identity lives in the client certificate, as
//! exactly one URI subject alternative name `connwatch://<role>/<name>`: a collector's
//! name is its connector id, an operator's name is a person or a tool.

use std::fmt;
use thiserror::Error;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The URI scheme of identity SANs.
pub const SAN_SCHEME: &str = "connwatch://";

/// The longest name an identity may carry.
pub const MAX_NAME_LEN: usize = 64;

/// What a certificate's holder may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Sends reports for exactly one connector; cannot query.
    Collector,
    /// Queries the aggregator; cannot send reports.
    Operator,
}

impl Role {
    /// The role as written in the SAN and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Collector => "collector",
            Role::Operator => "operator",
        }
    }

    /// Parses `collector` or `operator`.
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "collector" => Some(Role::Collector),
            "operator" => Some(Role::Operator),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated peer: its role and name, as proven by its certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// What the peer may do.
    pub role: Role,
    /// The connector id (collectors) or operator name.
    pub name: String,
}

impl Identity {
    /// The SAN URI that carries this identity.
    pub fn san_uri(&self) -> String {
        format!("{SAN_SCHEME}{}/{}", self.role, self.name)
    }

    /// Reads the identity from a DER-encoded certificate. The certificate must carry
    /// exactly one `connwatch://` URI SAN with a known role and a valid name.
    pub fn from_cert_der(der: &[u8]) -> Result<Identity, IdentityError> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| IdentityError::Unparsable(e.to_string()))?;
        let mut uris = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let GeneralName::URI(uri) = name
                    && uri.starts_with(SAN_SCHEME)
                {
                    uris.push(uri.to_string());
                }
            }
        }
        match uris.as_slice() {
            [] => Err(IdentityError::Missing),
            [one] => Identity::parse_uri(one),
            _ => Err(IdentityError::Ambiguous(uris.len())),
        }
    }

    /// Parses `connwatch://<role>/<name>`.
    pub fn parse_uri(uri: &str) -> Result<Identity, IdentityError> {
        let rest = uri
            .strip_prefix(SAN_SCHEME)
            .ok_or_else(|| IdentityError::Malformed(uri.to_string()))?;
        let (role, name) = rest
            .split_once('/')
            .ok_or_else(|| IdentityError::Malformed(uri.to_string()))?;
        let role = Role::parse(role).ok_or_else(|| IdentityError::UnknownRole(role.to_string()))?;
        validate_name(name)?;
        Ok(Identity {
            role,
            name: name.to_string(),
        })
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.role, self.name)
    }
}

/// Checks a connector id or operator name: 1 to 64 characters of `A-Z a-z 0-9 . _ -`,
/// not starting with `.` or `-`. Names end up in file names, sled keys and metric labels.
pub fn validate_name(name: &str) -> Result<(), IdentityError> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    let ok_start = !name.starts_with(['.', '-']);
    if name.is_empty() || name.len() > MAX_NAME_LEN || !ok_chars || !ok_start {
        return Err(IdentityError::BadName(name.to_string()));
    }
    Ok(())
}

/// Why a certificate does not prove an identity.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum IdentityError {
    /// The certificate could not be parsed.
    #[error("the client certificate cannot be parsed: {0}")]
    Unparsable(String),
    /// No `connwatch://` SAN.
    #[error(
        "the client certificate carries no connwatch identity (a URI SAN connwatch://<role>/<name>); issue one with `connwatch-aggregator ca issue`"
    )]
    Missing,
    /// More than one `connwatch://` SAN.
    #[error(
        "the client certificate carries {0} connwatch identities; a certificate must prove exactly one"
    )]
    Ambiguous(usize),
    /// The SAN does not have the form `connwatch://<role>/<name>`.
    #[error("`{0}` is not a connwatch identity; expected connwatch://<role>/<name>")]
    Malformed(String),
    /// The role is neither collector nor operator.
    #[error("unknown role `{0}`; expected `collector` or `operator`")]
    UnknownRole(String),
    /// The name has characters or a length that is not allowed.
    #[error(
        "`{0}` is not a valid name: use 1 to 64 characters of letters, digits, `.`, `_` and `-`, not starting with `.` or `-`"
    )]
    BadName(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip() {
        let id = Identity {
            role: Role::Collector,
            name: "conn-01.eu".into(),
        };
        assert_eq!(Identity::parse_uri(&id.san_uri()), Ok(id));
    }

    #[test]
    fn bad_uris_are_refused() {
        for (uri, want) in [
            (
                "connwatch://admin/x",
                IdentityError::UnknownRole("admin".into()),
            ),
            (
                "connwatch://collector/",
                IdentityError::BadName(String::new()),
            ),
            (
                "connwatch://collector/a/b",
                IdentityError::BadName("a/b".into()),
            ),
            (
                "connwatch://collector/-x",
                IdentityError::BadName("-x".into()),
            ),
            (
                "connwatch://collector",
                IdentityError::Malformed("connwatch://collector".into()),
            ),
        ] {
            assert_eq!(Identity::parse_uri(uri), Err(want), "{uri}");
        }
        assert!(validate_name(&"a".repeat(65)).is_err());
        assert!(validate_name(&"a".repeat(64)).is_ok());
    }
}

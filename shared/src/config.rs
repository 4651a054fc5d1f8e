//! Helpers for configuration files: TOML read into raw serde structs, then validated
//! into typed config. Every error names the file, the key and the fix.

use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

/// A configuration file that cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {file}: {error}; pass the right path with --config")]
    Read {
        /// The file.
        file: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// The file is not valid TOML for this schema (syntax, unknown key, wrong type).
    #[error("{file}: {message}")]
    Parse {
        /// The file.
        file: PathBuf,
        /// What the TOML parser said, with line and column.
        message: String,
    },
    /// A key has a value that cannot be used.
    #[error("{file}: key `{key}`: {problem}; {fix}")]
    Invalid {
        /// The file.
        file: PathBuf,
        /// The dotted key.
        key: String,
        /// What is wrong.
        problem: String,
        /// What to do.
        fix: String,
    },
}

/// Reads and parses a TOML file into `T`.
pub fn load_toml<T: DeserializeOwned>(file: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|error| ConfigError::Read {
        file: file.to_path_buf(),
        error,
    })?;
    parse_toml(file, &text)
}

/// Parses TOML text that came from `file`.
pub fn parse_toml<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        file: file.to_path_buf(),
        message: e.to_string().trim_end().replace('\n', "\n  "),
    })
}

/// Builds [`ConfigError::Invalid`].
pub fn invalid(
    file: &Path,
    key: impl Into<String>,
    problem: impl Into<String>,
    fix: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        file: file.to_path_buf(),
        key: key.into(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// Parses a duration-valued key, which must be positive.
pub fn duration(file: &Path, key: &str, text: &str) -> Result<Duration, ConfigError> {
    let d = crate::time::parse_duration(text).map_err(|e| {
        invalid(
            file,
            key,
            e,
            "durations are written like `30s`, `5m` or `7d`",
        )
    })?;
    if d.is_zero() {
        return Err(invalid(
            file,
            key,
            "must be longer than zero",
            "set a positive duration",
        ));
    }
    Ok(d)
}

/// Resolves a path from a config file relative to the file's folder.
pub fn relative_to(file: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    match file.parent() {
        Some(dir) => dir.join(path),
        None => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Raw {
        interval: String,
    }

    #[test]
    fn errors_name_file_and_key() {
        let f = Path::new("/etc/x.toml");
        let err = parse_toml::<Raw>(f, "intervall = \"3s\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/etc/x.toml") && err.contains("intervall"),
            "{err}"
        );
        let err = duration(f, "collector.interval", "0s")
            .unwrap_err()
            .to_string();
        assert!(err.contains("collector.interval"), "{err}");
    }

    #[test]
    fn relative_paths_follow_the_file() {
        assert_eq!(
            relative_to(Path::new("/etc/cw/c.toml"), Path::new("certs/a.pem")),
            PathBuf::from("/etc/cw/certs/a.pem")
        );
    }
}

//! The building blocks of config reading: [`ConfigError`], [`Secret`], and readers of single
//! fields that accept what saved Java configs hold (numbers and booleans as strings).

use std::num::NonZeroUsize;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::error::Failure;

/// A configuration problem, naming the field and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read the config file {path}: {source}")]
    Read {
        /// The path given with `--config`.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not a JSON object.
    #[error("the config file {path} is not a JSON object: {reason}")]
    NotJson {
        /// The path given with `--config`.
        path: String,
        /// What the JSON parser said.
        reason: String,
    },
    /// A field is missing or has a wrong value.
    #[error("config.{field}: {reason}")]
    Field {
        /// The field's name (dotted for nested fields).
        field: String,
        /// What is wrong and what is accepted.
        reason: String,
    },
}

impl ConfigError {
    /// The same error about a field of the nested block `block` (`topology`, `tunnel_method`): its
    /// name gets the block's path unless it has it already.
    pub fn within(self, block: &str) -> Self {
        match self {
            ConfigError::Field { field, reason }
                if field != block && !field.starts_with(&format!("{block}.")) =>
            {
                ConfigError::Field {
                    field: format!("{block}.{field}"),
                    reason,
                }
            }
            other => other,
        }
    }
}

impl From<ConfigError> for Failure {
    fn from(err: ConfigError) -> Self {
        let message = format!("Invalid configuration: {err}.");
        Failure::config(message, &err)
    }
}

/// A secret string: its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub(crate) fn new(value: String) -> Self {
        Secret(value)
    }

    /// The secret's value, for the one place that sends it to the server.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A [`ConfigError::Field`] for `name`.
pub(crate) fn field(name: &str, reason: &str) -> ConfigError {
    ConfigError::Field {
        field: name.to_string(),
        reason: reason.to_string(),
    }
}

/// A string field; absent or null is `None`. Numbers are accepted as their text.
pub(crate) fn string_field(
    map: &Map<String, Value>,
    name: &str,
) -> Result<Option<String>, ConfigError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(field(name, "must be a string")),
    }
}

/// An integer field; strings holding an integer are accepted (saved Java configs have them).
pub(crate) fn int_field(map: &Map<String, Value>, name: &str) -> Result<Option<i64>, ConfigError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| field(name, "must be a whole number")),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| field(name, "must be a whole number")),
        Some(_) => Err(field(name, "must be a whole number")),
    }
}

/// A fraction from 0 to 1 (a number, or a string holding one).
pub(crate) fn ratio_field(
    map: &Map<String, Value>,
    name: &str,
) -> Result<Option<f64>, ConfigError> {
    let bad = || field(name, "must be a number from 0 to 1 (0 turns it off)");
    let value = match map.get(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_f64().ok_or_else(bad)?,
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(None),
        Some(Value::String(s)) => s.trim().parse().map_err(|_| bad())?,
        Some(_) => return Err(bad()),
    };
    match (0.0..=1.0).contains(&value) {
        true => Ok(Some(value)),
        false => Err(bad()),
    }
}

/// A boolean field; `"true"`/`"false"` strings are accepted (saved Java configs have them).
pub(crate) fn bool_field(
    map: &Map<String, Value>,
    name: &str,
) -> Result<Option<bool>, ConfigError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(Some(true)),
            "false" | "" => Ok(Some(false)),
            _ => Err(field(name, "must be true or false")),
        },
        Some(_) => Err(field(name, "must be true or false")),
    }
}

/// A duration field in milliseconds within `range`.
pub(crate) fn millis(
    map: &Map<String, Value>,
    name: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Duration, ConfigError> {
    let value = int_field(map, name)?.unwrap_or(default as i64);
    u64::try_from(value)
        .ok()
        .filter(|v| range.contains(v))
        .map(Duration::from_millis)
        .ok_or_else(|| ConfigError::Field {
            field: name.to_string(),
            reason: format!(
                "must be between {} and {} milliseconds",
                range.start(),
                range.end()
            ),
        })
}

/// A count field within 1..=`max`.
pub(crate) fn positive(
    map: &Map<String, Value>,
    name: &str,
    default: usize,
    max: usize,
) -> Result<NonZeroUsize, ConfigError> {
    let value = int_field(map, name)?.unwrap_or(default as i64);
    usize::try_from(value)
        .ok()
        .filter(|v| *v <= max)
        .and_then(NonZeroUsize::new)
        .ok_or_else(|| ConfigError::Field {
            field: name.to_string(),
            reason: format!("must be between 1 and {max}"),
        })
}

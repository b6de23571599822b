//! Error types at the library's boundaries, and their mapping to Airbyte failure types.
//!
//! Every error that can end a command carries three things: a one-sentence message for the user that
//! says what is wrong and how to fix it, the raw cause (Airbyte's `internal_message`), and a
//! [`FailureType`]. Secrets never enter either text: config values are never formatted into errors,
//! and Redis replies do not echo credentials.

use std::fmt;

/// Airbyte's `failure_type` of a TRACE error: who has to act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureType {
    /// The user must fix the configuration, the catalog, credentials or the server's settings.
    Config,
    /// Retrying later may succeed (connection refused or lost, timeouts, LOADING, BUSY, ...).
    Transient,
    /// Bad input or a defect: neither a retry nor a config change will help.
    System,
}

impl FailureType {
    /// The protocol's spelling of this failure type.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureType::Config => "config_error",
            FailureType::Transient => "transient_error",
            FailureType::System => "system_error",
        }
    }
}

/// A failure ready to be reported: to the user as one sentence, to Airbyte with its type and cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// What the user should read: what is wrong and how to fix it.
    pub message: String,
    /// The raw cause, for Airbyte's `internal_message`.
    pub internal: String,
    /// Who has to act.
    pub failure_type: FailureType,
}

impl Failure {
    /// A failure the user fixes in the configuration or on the server.
    pub fn config(message: impl Into<String>, internal: impl fmt::Display) -> Self {
        Self::new(FailureType::Config, message, internal)
    }

    /// A failure that a retry may cure.
    pub fn transient(message: impl Into<String>, internal: impl fmt::Display) -> Self {
        Self::new(FailureType::Transient, message, internal)
    }

    /// Bad input or a defect.
    pub fn system(message: impl Into<String>, internal: impl fmt::Display) -> Self {
        Self::new(FailureType::System, message, internal)
    }

    fn new(
        failure_type: FailureType,
        message: impl Into<String>,
        internal: impl fmt::Display,
    ) -> Self {
        Failure {
            message: message.into(),
            internal: internal.to_string(),
            failure_type,
        }
    }
}

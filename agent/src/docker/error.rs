//! What a failed request answers.

use std::fmt;

use crate::store::StoreError;

/// Why a request failed, worded for the person who ran the `docker` command: Docker
/// shows the message as the command's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginError {
    /// The request itself is malformed (not JSON, a required field missing): HTTP 400.
    BadRequest(String),
    /// The request is understood but cannot be carried out: HTTP 200 with the message in
    /// the protocol's error field.
    Failed(String),
}

impl PluginError {
    pub fn failed(message: impl Into<String>) -> PluginError {
        PluginError::Failed(message.into())
    }

    pub fn bad_request(message: impl Into<String>) -> PluginError {
        PluginError::BadRequest(message.into())
    }

    pub fn message(&self) -> &str {
        match self {
            PluginError::BadRequest(m) | PluginError::Failed(m) => m,
        }
    }

    /// A datastore failure while doing `what` ("writing the endpoint").
    pub fn store(what: &str, error: StoreError) -> PluginError {
        PluginError::Failed(format!("palisade: {what}: datastore error: {error}"))
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for PluginError {}

//! Errors of optimizer configuration and construction.

use sirocco::hlo::HloError;

#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    /// A config value is missing, malformed or out of range; `path` is the field path
    /// (`optimizer.beta1`).
    #[error("{path}: {message}")]
    Config { path: String, message: String },
    /// The `type:` names no registered optimizer.
    #[error("{path}: unknown optimizer type `{name}`; registered types: {}", registered.join(", "))]
    UnknownType { path: String, name: String, registered: Vec<String> },
    /// Registering an optimizer type failed.
    #[error("optimizer registry: {0}")]
    Registry(String),
    /// A transformation could not be built (wrong state, missing hyperparameter, ...).
    #[error("optimizer: {0}")]
    Build(String),
    /// The graph builder rejected an op.
    #[error(transparent)]
    Hlo(#[from] HloError),
}

impl OptimError {
    pub fn config(path: impl Into<String>, message: impl Into<String>) -> Self {
        OptimError::Config { path: path.into(), message: message.into() }
    }
}

pub type Result<T> = std::result::Result<T, OptimError>;

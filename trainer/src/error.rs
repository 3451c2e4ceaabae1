//! Errors of the trainer library: each says what went wrong and where (file, field path,
//! tensor name, plugin) so the command line can print it as is.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    /// A config file or value is wrong; `path` is the field path (`trainer.mesh.data`).
    #[error("{file}: {path}: {message}")]
    Config { file: String, path: String, message: String },
    /// Reading or writing a file failed. The I/O error is part of the message, not a `source`,
    /// so that printing the error chain (`{:#}`) does not say it twice.
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    /// A safetensors file is malformed or lacks a tensor.
    #[error("{path}: {message}")]
    Tensors { path: PathBuf, message: String },
    /// A corpus file, tokenizer file or tokenized cache is malformed; `message` names the line
    /// where there is one.
    #[error("{path}: {message}")]
    Data { path: PathBuf, message: String },
    /// A run's metrics (`metrics.jsonl`, a TensorBoard event file, the loss plot) could not be
    /// read, written or drawn.
    #[error("{path}: {message}")]
    Metrics { path: PathBuf, message: String },
    /// A checkpoint cannot be written or read: `path` is its directory or file.
    #[error("{path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    /// A checkpoint's tensors differ from the ones the run builds.
    #[error(
        "the checkpoint of step {step} does not fit this run (was it saved with another model or \
         optimizer config?):\n  {}",
        problems.join("\n  ")
    )]
    IncompatibleCheckpoint { step: u64, problems: Vec<String> },
    #[error(transparent)]
    Optim(#[from] xla_optim::OptimError),
    #[error(transparent)]
    Program(#[from] sirocco::program::ProgramError),
    #[error(transparent)]
    Runtime(#[from] sirocco::pjrt::PjrtError),
    #[error(transparent)]
    Build(#[from] sirocco::hlo::HloError),
    #[error(transparent)]
    Tensor(#[from] sirocco::TensorError),
    /// Anything else, described.
    #[error("{0}")]
    Other(String),
}

impl TrainerError {
    pub fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        TrainerError::Io { path: path.into(), error }
    }

    pub fn checkpoint(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        TrainerError::Checkpoint { path: path.into(), message: message.into() }
    }

    pub fn tensors(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        TrainerError::Tensors { path: path.into(), message: message.into() }
    }

    pub fn data(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        TrainerError::Data { path: path.into(), message: message.into() }
    }

    pub fn metrics(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        TrainerError::Metrics { path: path.into(), message: message.into() }
    }
}

impl From<String> for TrainerError {
    fn from(message: String) -> Self {
        TrainerError::Other(message)
    }
}

pub type Result<T> = std::result::Result<T, TrainerError>;

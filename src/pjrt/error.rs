//! Errors of the PJRT runtime: every `PJRT_Error` the plugin returns, and the mistakes this layer
//! catches before calling into XLA (some of which would otherwise abort the process).

use std::fmt;
use std::path::PathBuf;

use crate::tensor::TensorError;

/// Result of every fallible call of the PJRT runtime.
pub type Result<T> = std::result::Result<T, PjrtError>;

/// What went wrong in the PJRT runtime, where, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum PjrtError {
    /// A PJRT C API call returned an error (the plugin's message is kept verbatim: for
    /// `PJRT_Client_Compile` it is the compiler's diagnostic).
    #[error("{call} failed ({code}): {message}")]
    Call { call: &'static str, code: ErrorCode, message: String },

    #[error("{}", super::plugin::not_found_message(name, searched, fetch_command))]
    PluginNotFound { name: String, searched: Vec<PathBuf>, fetch_command: String },

    #[error("cannot load PJRT plugin {}: {reason}; check that it is a PJRT plugin built for this platform (it must export GetPjrtApi)", path.display())]
    PluginLoad { path: PathBuf, reason: String },

    #[error("PJRT plugin {} implements PJRT C API {major}.{minor}, sirocco is built for major version {expected_major}; use a plugin release with the same major version", path.display())]
    ApiVersion { path: PathBuf, major: i32, minor: i32, expected_major: u32 },

    /// Options or arguments rejected before they reach XLA.
    #[error("invalid options: {0}")]
    InvalidOptions(String),

    /// The device produced an element type that [`crate::DType`] has no name for.
    #[error("{call} produced a buffer of PJRT element type {element_type}, which sirocco does not support (supported: {})", supported_dtypes())]
    UnsupportedElementType { call: &'static str, element_type: u32 },

    #[error(transparent)]
    Tensor(#[from] TensorError),

    #[error("compile cache {}: {reason}", path.display())]
    Cache { path: PathBuf, reason: String },

    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn supported_dtypes() -> String {
    crate::dtype::DType::ALL.map(|dtype| dtype.to_string()).join(", ")
}

/// The status codes of `PJRT_Error_Code` (the absl status codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    Cancelled,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
    /// `PJRT_Error_Code_UNKNOWN` (2), or a code this header version does not know.
    Unknown(i32),
}

impl ErrorCode {
    /// Maps the raw value of a `PJRT_Error_Code` (read as an integer, so that a code added by a
    /// newer plugin is not an invalid Rust enum value).
    pub(crate) fn from_raw(code: u32) -> ErrorCode {
        match code {
            1 => ErrorCode::Cancelled,
            3 => ErrorCode::InvalidArgument,
            4 => ErrorCode::DeadlineExceeded,
            5 => ErrorCode::NotFound,
            6 => ErrorCode::AlreadyExists,
            7 => ErrorCode::PermissionDenied,
            8 => ErrorCode::ResourceExhausted,
            9 => ErrorCode::FailedPrecondition,
            10 => ErrorCode::Aborted,
            11 => ErrorCode::OutOfRange,
            12 => ErrorCode::Unimplemented,
            13 => ErrorCode::Internal,
            14 => ErrorCode::Unavailable,
            15 => ErrorCode::DataLoss,
            16 => ErrorCode::Unauthenticated,
            other => ErrorCode::Unknown(i32::try_from(other).unwrap_or(i32::MAX)),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ErrorCode::Cancelled => "CANCELLED",
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::DeadlineExceeded => "DEADLINE_EXCEEDED",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::AlreadyExists => "ALREADY_EXISTS",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::ResourceExhausted => "RESOURCE_EXHAUSTED",
            ErrorCode::FailedPrecondition => "FAILED_PRECONDITION",
            ErrorCode::Aborted => "ABORTED",
            ErrorCode::OutOfRange => "OUT_OF_RANGE",
            ErrorCode::Unimplemented => "UNIMPLEMENTED",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::DataLoss => "DATA_LOSS",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::Unknown(2) => "UNKNOWN",
            ErrorCode::Unknown(code) => return write!(f, "error code {code}"),
        };
        f.write_str(name)
    }
}

impl PjrtError {
    /// The PJRT status code, for errors that came from the plugin.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            PjrtError::Call { code, .. } => Some(*code),
            _ => None,
        }
    }
}

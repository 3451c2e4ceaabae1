//! Build-time errors of the graph builder.

use std::fmt;
use std::panic::Location;

/// A mistake found while building a graph: which op, what was wrong (with the operand
/// shapes), and the line of the caller that asked for it.
#[derive(Clone, PartialEq, Eq)]
pub struct HloError {
    /// The op being built (`add`, `dot_general`, `grad`, ...).
    pub op: &'static str,
    /// What was wrong, naming the operand types.
    pub message: String,
    /// The caller's source location (`#[track_caller]`).
    pub location: &'static Location<'static>,
}

impl HloError {
    #[track_caller]
    pub fn new(op: &'static str, message: impl Into<String>) -> Self {
        HloError { op, message: message.into(), location: Location::caller() }
    }

    pub(crate) fn at(
        op: &'static str,
        message: impl Into<String>,
        location: &'static Location<'static>,
    ) -> Self {
        HloError { op, message: message.into(), location }
    }
}

impl fmt::Display for HloError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (at {}:{})", self.op, self.message, self.location.file(), self.location.line())
    }
}

impl fmt::Debug for HloError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for HloError {}

pub type Result<T> = std::result::Result<T, HloError>;

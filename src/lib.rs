//! sirocco core: a safe PJRT runtime ([`pjrt`]) and an HLO graph builder ([`hlo`]).
pub mod dtype;
pub mod hlo;
pub mod pjrt;
pub mod program;
pub mod tensor;

pub use dtype::{DType, Element};
pub use tensor::{HostTensor, TensorError};

#[cfg(doctest)]
#[doc = include_str!("../docs/hlo-builder.md")]
pub struct HloBuilderDoc;

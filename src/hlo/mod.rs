//! The HLO graph builder: typed values, shape-checked ops, StableHLO emission, reverse-mode
//! autodiff and shardings.
//!
//! ```
//! use sirocco::hlo::{Builder, TensorType};
//! use sirocco::DType;
//!
//! let b = Builder::new("affine");
//! let x = b.param("x", DType::F32, &[4, 3]);
//! let w = b.param("w", DType::F32, &[3, 2]);
//! let y = (x.matmul(&w) * 2.0).tanh();
//! let loss = y.square().sum();
//! let grads = sirocco::hlo::grad(&loss, &[w.clone()]).unwrap();
//! let function = b.build(&[loss, grads[0].clone()]).unwrap();
//! assert!(function.to_stablehlo().contains("stablehlo.dot_general"));
//! ```
//!
//! See `docs/hlo-builder.md` for the tour.

mod autodiff;
mod emit;
mod error;
mod graph;
mod op;
mod ops;
mod sharding;
mod types;
mod unshare;

pub use autodiff::{grad, value_and_grad, vjp};
pub use emit::EmitOptions;
pub use error::{HloError, Result};
pub use graph::{Builder, Function, Value};
pub use ops::control::{checkpoint, cond, fori_loop, scan, while_loop, ScanOptions};
pub use ops::dot::DotDimensions;
pub use ops::elementwise::Comparison;
pub use ops::gather::{GatherDimensions, ScatterDimensions, ScatterMode};
pub use ops::misc::{optimization_barrier, RngAlgorithm};
pub use sharding::{Mesh, Partitioner, Sharding};
pub use types::{Dims, TensorType};
pub use unshare::{is_single_pass, unshare_elementwise};

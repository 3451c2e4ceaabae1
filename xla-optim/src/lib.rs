//! Optimizers as HLO graph builder functions.
//!
//! The optax algebra — small `(init, update)` transforms ([`transforms`]), combined by
//! [`combinators`] — builds ops with the sirocco graph builder, so the whole update (clip,
//! moments, weight decay, learning-rate scale, apply) compiles into the training step as one
//! fused XLA computation with donated state. Configs follow Levanter's `OptimizerConfig`
//! ([`BaseConfig`]) and resolve by YAML `type:` through a [`registry`] that user crates extend
//! with [`register`].

pub mod combinators;
pub mod config;
mod error;
pub mod mask;
mod optimizer;
pub mod optimizers;
pub mod registry;
pub mod schedule;
pub mod transform;
pub mod transforms;

pub use config::BaseConfig;
pub use error::{OptimError, Result};
pub use optimizer::{Applied, Optimizer, UpdateFunction};
pub use registry::{describe_types, register, registered_types, OptimizerConfig, OptimizerType};
pub use schedule::Schedule;
pub use transform::{
    GradientTransformation, Hyper, ParamSpec, StateInit, StateSpec, Transform, Update, UpdateContext,
};

#[cfg(doctest)]
#[doc = include_str!("../../docs/optimizers.md")]
pub struct OptimizersDoc;

//! Combinators: transformations built from other transformations.
mod chain;
mod inject;
mod masked;
mod multi_steps;
mod multi_transform;
mod parameter_ema;
mod skip;

pub use chain::{chain, Chain};
pub use inject::{inject_hyperparams, HyperSource, InjectHyperparams};
pub use masked::{masked, Mask, Masked};
pub use multi_steps::{multi_steps, MultiSteps};
pub use multi_transform::{multi_transform, MultiTransform};
pub use parameter_ema::{parameter_ema, ParameterEma};
pub use skip::{apply_if_finite, skip_bad_steps, ApplyIfFinite, SkipBadSteps};

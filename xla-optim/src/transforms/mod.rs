//! The transforms, optax semantics (each file cites the optax function it mirrors).
mod adam;
mod adamax;
mod clip;
mod decay;
mod factored;
mod lion;
mod momentum;
mod rms;
mod scale;

pub use adam::{scale_by_adam, ScaleByAdam};
pub use adamax::{scale_by_adamax, ScaleByAdamax};
pub use clip::{clip_by_block_rms, clip_by_global_norm, ClipByBlockRms, ClipByGlobalNorm};
pub use decay::{add_decayed_weights, AddDecayedWeights};
pub use factored::{scale_by_factored_rms, ScaleByFactoredRms};
pub use lion::{scale_by_lion, ScaleByLion};
pub use momentum::{ema, ema_in, trace, Ema, Trace};
pub use rms::{scale_by_rms, ScaleByRms};
pub use scale::{scale, scale_by_learning_rate, scale_by_param_block_rms, Scale, ScaleByParamBlockRms};

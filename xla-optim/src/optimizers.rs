//! The built-in optimizer types, each a Levanter-style config whose `build` chains
//! transforms (clip, moments, masked weight decay, learning-rate scale).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sirocco::DType;

use crate::combinators::{chain, skip_bad_steps};
use crate::config::BaseConfig;
use crate::error::{OptimError, Result};
use crate::optimizer::Optimizer;
use crate::registry::{check_beta, check_positive, insert, OptimizerType};
use crate::transform::{Hyper, Transform};
use crate::transforms::{
    clip_by_block_rms, clip_by_global_norm, ema_in, scale, scale_by_adam, scale_by_adamax,
    scale_by_factored_rms, scale_by_learning_rate, scale_by_lion, scale_by_param_block_rms, scale_by_rms,
    trace,
};

pub(crate) fn register_builtins(map: &mut BTreeMap<String, super::registry::RegistryEntry>) {
    insert::<SgdConfig>(map, "sgd").expect("built-in names are distinct");
    insert::<AdamConfig>(map, "adam").expect("built-in names are distinct");
    insert::<AdamaxConfig>(map, "adamax").expect("built-in names are distinct");
    insert::<LionConfig>(map, "lion").expect("built-in names are distinct");
    insert::<AdafactorConfig>(map, "adafactor").expect("built-in names are distinct");
    insert::<RmspropConfig>(map, "rmsprop").expect("built-in names are distinct");
}

/// `[clip_by_global_norm(max_grad_norm)]` when set (Levanter: `if self.max_grad_norm`).
fn clipping(max_grad_norm: Option<f64>) -> Vec<Transform> {
    max_grad_norm.filter(|&norm| norm > 0.0).map(clip_by_global_norm).into_iter().collect()
}

/// `clip? -> moments -> masked decay? -> -learning_rate`: the components of every Levanter
/// optimizer's `build`.
fn descent_components(
    base: &BaseConfig,
    max_grad_norm: Option<f64>,
    moments: Vec<Transform>,
    weight_decay: Hyper,
) -> Result<Vec<Transform>> {
    let mut components = clipping(max_grad_norm);
    components.extend(moments);
    components.extend(base.decayed_weights(weight_decay, "optimizer")?);
    components.push(scale_by_learning_rate(Hyper::injected("learning_rate")));
    Ok(components)
}

/// The chain of [`descent_components`].
fn descent_chain(
    base: &BaseConfig,
    max_grad_norm: Option<f64>,
    moments: Vec<Transform>,
    weight_decay: Hyper,
) -> Result<Transform> {
    Ok(chain(descent_components(base, max_grad_norm, moments, weight_decay)?))
}

/// [`descent_chain`] with the base weight decay and the learning-rate schedule injected.
fn descent(
    base: &BaseConfig,
    steps: u64,
    max_grad_norm: Option<f64>,
    moments: Vec<Transform>,
) -> Result<Optimizer> {
    let transform = descent_chain(base, max_grad_norm, moments, Hyper::Constant(base.weight_decay))?;
    base.with_learning_rate_schedule(transform, steps)
}

/// `max_grad_norm` is null, 0 (both disable clipping, as Levanter's `if self.max_grad_norm`)
/// or positive.
fn check_max_grad_norm(value: Option<f64>, path: &str) -> Result<()> {
    match value {
        Some(norm) if norm != 0.0 => check_positive(norm, path, "max_grad_norm"),
        _ => Ok(()),
    }
}

/// SGD with optional (Nesterov) momentum.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SgdConfig {
    pub momentum: Option<f64>,
    pub nesterov: bool,
    pub max_grad_norm: Option<f64>,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig { momentum: Some(0.9), nesterov: false, max_grad_norm: Some(1.0) }
    }
}

impl OptimizerType for SgdConfig {
    const DOC: &'static str = "SGD: clip, momentum trace (optionally Nesterov), decoupled weight decay, -lr";

    fn field_docs() -> &'static [(&'static str, &'static str)] {
        &[
            ("momentum", "trace decay; null for plain SGD"),
            ("nesterov", "Nesterov momentum"),
            ("max_grad_norm", "global-norm clipping threshold; null or 0 disables"),
        ]
    }

    fn validate(&self, _: &BaseConfig, path: &str) -> Result<()> {
        if let Some(momentum) = self.momentum {
            check_beta(momentum, path, "momentum")?;
        }
        check_max_grad_norm(self.max_grad_norm, path)
    }

    fn build(&self, base: &BaseConfig, steps: u64) -> Result<Optimizer> {
        let moments = self.momentum.map(|m| trace(m, self.nesterov)).into_iter().collect();
        descent(base, steps, self.max_grad_norm, moments)
    }
}

/// `skip_bad_steps`: false, true (a 128-step history) or the history length.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged, expecting = "expected true, false or a history length in steps")]
pub enum SkipBadSteps {
    Enabled(bool),
    History(i64),
}

/// Levanter's `AdamConfig` (AdamW: decay applied with the learning rate).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub epsilon: f64,
    pub max_grad_norm: Option<f64>,
    pub nesterov: bool,
    pub skip_bad_steps: SkipBadSteps,
    pub decoupled_weight_decay: bool,
    pub adamc_weight_decay: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            beta1: 0.9,
            beta2: 0.95,
            epsilon: 1e-8,
            max_grad_norm: Some(1.0),
            nesterov: false,
            skip_bad_steps: SkipBadSteps::Enabled(false),
            decoupled_weight_decay: false,
            adamc_weight_decay: false,
        }
    }
}

impl OptimizerType for AdamConfig {
    const DOC: &'static str =
        "AdamW (Levanter's AdamConfig): clip, scale_by_adam, masked decay, -lr; optional skip_bad_steps";

    fn field_docs() -> &'static [(&'static str, &'static str)] {
        &[
            ("beta1", "first-moment decay"),
            ("beta2", "second-moment decay"),
            ("epsilon", "added to sqrt(v)"),
            ("max_grad_norm", "global-norm clipping threshold; null or 0 disables"),
            ("nesterov", "Nesterov first moment (NAdam)"),
            ("skip_bad_steps", "skip loss/grad-norm spikes: true (128-step history) or a history length"),
            ("decoupled_weight_decay", "divide weight_decay by the peak learning rate"),
            ("adamc_weight_decay", "scale weight_decay by lr_t / peak lr (AdamC)"),
        ]
    }

    fn validate(&self, _: &BaseConfig, path: &str) -> Result<()> {
        check_beta(self.beta1, path, "beta1")?;
        check_beta(self.beta2, path, "beta2")?;
        check_positive(self.epsilon, path, "epsilon")?;
        check_max_grad_norm(self.max_grad_norm, path)?;
        if self.decoupled_weight_decay && self.adamc_weight_decay {
            return Err(crate::error::OptimError::config(
                format!("{path}.adamc_weight_decay"),
                "choose decoupled_weight_decay or adamc_weight_decay, not both",
            ));
        }
        if let SkipBadSteps::History(length) = self.skip_bad_steps {
            if length < 4 {
                return Err(crate::error::OptimError::config(
                    format!("{path}.skip_bad_steps"),
                    "history must be >= 4 steps",
                ));
            }
        }
        Ok(())
    }

    fn build(&self, base: &BaseConfig, steps: u64) -> Result<Optimizer> {
        let peak = base.learning_rate.max(f64::MIN_POSITIVE);
        let weight_decay = if self.adamc_weight_decay {
            Hyper::injected_scaled("learning_rate", base.weight_decay / peak)
        } else if self.decoupled_weight_decay {
            Hyper::Constant(base.weight_decay / peak)
        } else {
            Hyper::Constant(base.weight_decay)
        };
        let moments = vec![scale_by_adam(self.beta1, self.beta2, self.epsilon, self.nesterov)];
        let mut optimizer = descent_chain(base, self.max_grad_norm, moments, weight_decay)?;
        let history = match self.skip_bad_steps {
            SkipBadSteps::Enabled(false) => None,
            SkipBadSteps::Enabled(true) => Some(128),
            SkipBadSteps::History(length) => Some(length),
        };
        if let Some(history) = history {
            optimizer = skip_bad_steps(optimizer, history, 6.0);
        }
        base.with_learning_rate_schedule(optimizer, steps)
    }
}

/// The seed tutorial's Adamax (`AdamaxConfig`), built in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamaxConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub epsilon: f64,
    pub max_grad_norm: Option<f64>,
}

impl Default for AdamaxConfig {
    fn default() -> Self {
        AdamaxConfig { beta1: 0.9, beta2: 0.95, epsilon: 1e-8, max_grad_norm: Some(1.0) }
    }
}

impl OptimizerType for AdamaxConfig {
    const DOC: &'static str =
        "Adamax: clip, scale_by_adamax (infinity-norm second moment), masked decay, -lr";

    fn field_docs() -> &'static [(&'static str, &'static str)] {
        &[
            ("beta1", "first-moment decay"),
            ("beta2", "infinity-norm decay"),
            ("epsilon", "added to |g| in the infinity norm"),
            ("max_grad_norm", "global-norm clipping threshold; null or 0 disables"),
        ]
    }

    fn validate(&self, _: &BaseConfig, path: &str) -> Result<()> {
        check_beta(self.beta1, path, "beta1")?;
        check_beta(self.beta2, path, "beta2")?;
        check_positive(self.epsilon, path, "epsilon")?;
        check_max_grad_norm(self.max_grad_norm, path)
    }

    fn build(&self, base: &BaseConfig, steps: u64) -> Result<Optimizer> {
        descent(base, steps, self.max_grad_norm, vec![scale_by_adamax(self.beta1, self.beta2, self.epsilon)])
    }
}

/// Levanter's `LionConfig`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LionConfig {
    pub beta1: f64,
    pub beta2: f64,
    /// Accepted for compatibility with Levanter's config; Lion does not use it.
    pub epsilon: f64,
    pub max_grad_norm: Option<f64>,
}

impl Default for LionConfig {
    fn default() -> Self {
        LionConfig { beta1: 0.9, beta2: 0.95, epsilon: 1e-8, max_grad_norm: Some(1.0) }
    }
}

impl OptimizerType for LionConfig {
    const DOC: &'static str = "Lion: clip, sign of interpolated momentum, masked decay, -lr";

    fn field_docs() -> &'static [(&'static str, &'static str)] {
        &[
            ("beta1", "interpolation of gradient and momentum for the sign"),
            ("beta2", "momentum decay"),
            ("epsilon", "unused (Levanter compatibility)"),
            ("max_grad_norm", "global-norm clipping threshold; null or 0 disables"),
        ]
    }

    fn validate(&self, _: &BaseConfig, path: &str) -> Result<()> {
        check_beta(self.beta1, path, "beta1")?;
        check_beta(self.beta2, path, "beta2")?;
        check_max_grad_norm(self.max_grad_norm, path)
    }

    fn build(&self, base: &BaseConfig, steps: u64) -> Result<Optimizer> {
        descent(base, steps, self.max_grad_norm, vec![scale_by_lion(self.beta1, self.beta2)])
    }
}

/// Adafactor as `optax.adafactor`: factored second moment, update clipping, the learning rate,
/// the relative step size (`multiply_by_parameter_scale`), optional momentum, in optax's order.
/// Levanter's base fields add what every type has: optional global-norm clipping first, and
/// the masked, learning-rate-scaled weight decay before the sign flip (`-lr * wd * p`, like
/// the other types); with `max_grad_norm: null` and `weight_decay: 0` this is exactly
/// `optax.adafactor(learning_rate=schedule, ...)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdafactorConfig {
    /// Momentum (an EMA of the updates, optax's `momentum`); null for none, as in the paper.
    pub beta1: Option<f64>,
    pub decay_rate: f64,
    pub decay_offset: i64,
    pub epsilon: f64,
    pub factored: bool,
    pub min_dim_size_to_factor: i64,
    pub clipping_threshold: Option<f64>,
    pub multiply_by_parameter_scale: bool,
    pub max_grad_norm: Option<f64>,
}

impl Default for AdafactorConfig {
    fn default() -> Self {
        AdafactorConfig {
            beta1: None,
            decay_rate: 0.8,
            decay_offset: 0,
            epsilon: 1e-30,
            factored: true,
            min_dim_size_to_factor: 128,
            clipping_threshold: Some(1.0),
            multiply_by_parameter_scale: true,
            max_grad_norm: Some(1.0),
        }
    }
}

impl OptimizerType for AdafactorConfig {
    const DOC: &'static str =
        "Adafactor (optax.adafactor): clip, scale_by_factored_rms, clip_by_block_rms, lr, \
         scale_by_param_block_rms, optional momentum, masked decay, -1";

    fn field_docs() -> &'static [(&'static str, &'static str)] {
        &[
            ("beta1", "momentum: an EMA of the scaled updates (optax's `momentum`); null disables"),
            (
                "decay_rate",
                "second-moment decay exponent: rho = 1 - (k - decay_offset)^-decay_rate at the k-th update",
            ),
            ("decay_offset", "step the second-moment decay schedule starts from (fine-tuning)"),
            ("epsilon", "added to g^2"),
            ("factored", "keep row and column second moments for large matrices"),
            ("min_dim_size_to_factor", "factor only when the two largest dimensions reach this size"),
            ("clipping_threshold", "update RMS clipping; null disables"),
            ("multiply_by_parameter_scale", "scale each update by max(rms(parameter), 1e-3)"),
            ("max_grad_norm", "global-norm clipping threshold; null or 0 disables"),
        ]
    }

    fn validate(&self, _: &BaseConfig, path: &str) -> Result<()> {
        if let Some(beta1) = self.beta1 {
            check_beta(beta1, path, "beta1")?;
        }
        check_positive(self.decay_rate, path, "decay_rate")?;
        if self.decay_offset < 0 {
            let message = format!("must be >= 0, got {}", self.decay_offset);
            return Err(OptimError::config(format!("{path}.decay_offset"), message));
        }
        check_positive(self.epsilon, path, "epsilon")?;
        check_positive(self.min_dim_size_to_factor as f64, path, "min_dim_size_to_factor")?;
        if let Some(threshold) = self.clipping_threshold {
            check_positive(threshold, path, "clipping_threshold")?;
        }
        check_max_grad_norm(self.max_grad_norm, path)
    }

    fn build(&self, base: &BaseConfig, steps: u64) -> Result<Optimizer> {
        let mut components = clipping(self.max_grad_norm);
        components.push(scale_by_factored_rms(
            self.factored,
            self.decay_rate,
            self.decay_offset,
            self.min_dim_size_to_factor,
            self.epsilon,
        ));
        components.extend(self.clipping_threshold.map(clip_by_block_rms));
        components.push(scale(Hyper::injected("learning_rate")));
        if self.multiply_by_parameter_scale {
            components.push(scale_by_param_block_rms(1e-3));
        }
        // optax.adafactor keeps the momentum in f32 (`dtype_momentum`) whatever the parameters.
        components.extend(self.beta1.map(|beta1| ema_in(beta1, false, DType::F32)));
        let weight_decay = Hyper::injected_scaled("learning_rate", base.weight_decay);
        components.extend(base.decayed_weights(weight_decay, "optimizer")?);
        components.push(scale(-1.0));
        base.with_learning_rate_schedule(chain(components), steps)
    }
}

/// RMSProp (optax's `rmsprop`, uncentered), with optional momentum. optax's `decay` is
/// `beta2` here: `decay` is the base config's learning-rate decay.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RmspropConfig {
    pub beta2: f64,
    pub epsilon: f64,
    pub initial_scale: f64,
    pub eps_in_sqrt: bool,
    pub bias_correction: bool,
    pub momentum: Option<f64>,
    pub nesterov: bool,
    pub max_grad_norm: Option<f64>,
}

impl Default for RmspropConfig {
    fn default() -> Self {
        RmspropConfig {
            beta2: 0.9,
            epsilon: 1e-8,
            initial_scale: 0.0,
            eps_in_sqrt: true,
            bias_correction: false,
            momentum: None,
            nesterov: false,
            max_grad_norm: Some(1.0),
        }
    }
}

impl OptimizerType for RmspropConfig {
    const DOC: &'static str =
        "RMSProp (optax's rmsprop): clip, scale_by_rms, masked decay, -lr, optional momentum";

    fn field_docs() -> &'static [(&'static str, &'static str)] {
        &[
            ("beta2", "second-moment decay (optax's rmsprop `decay`)"),
            ("epsilon", "stabilizer: inside the sqrt when eps_in_sqrt"),
            ("initial_scale", "initial second moment"),
            ("eps_in_sqrt", "g / sqrt(v + eps) instead of g / (sqrt(v) + eps)"),
            ("bias_correction", "debias the second moment"),
            ("momentum", "trace decay of the learning-rate-scaled updates; null disables"),
            ("nesterov", "Nesterov momentum"),
            ("max_grad_norm", "global-norm clipping threshold; null or 0 disables"),
        ]
    }

    fn validate(&self, _: &BaseConfig, path: &str) -> Result<()> {
        check_beta(self.beta2, path, "beta2")?;
        check_positive(self.epsilon, path, "epsilon")?;
        if let Some(momentum) = self.momentum {
            check_beta(momentum, path, "momentum")?;
        }
        check_max_grad_norm(self.max_grad_norm, path)
    }

    /// As optax's `rmsprop`, the momentum traces the updates after the learning-rate scale, so
    /// a scheduled rate enters the trace step by step.
    fn build(&self, base: &BaseConfig, steps: u64) -> Result<Optimizer> {
        let rms = scale_by_rms(
            self.beta2,
            self.epsilon,
            self.initial_scale,
            self.eps_in_sqrt,
            self.bias_correction,
        );
        let mut components =
            descent_components(base, self.max_grad_norm, vec![rms], Hyper::Constant(base.weight_decay))?;
        components.extend(self.momentum.map(|momentum| trace(momentum, self.nesterov)));
        base.with_learning_rate_schedule(chain(components), steps)
    }
}

//! Scaling: `optax.scale`, `optax.scale_by_learning_rate` and
//! `optax.scale_by_param_block_rms`.

use std::sync::Arc;

use sirocco::hlo::Value;

use crate::error::Result;
use crate::transform::{
    GradientTransformation, Hyper, ParamSpec, StateSpec, Transform, Update, UpdateContext,
};

/// `u * factor`. Stateless.
#[derive(Debug)]
pub struct Scale {
    pub factor: Hyper,
    /// Multiply by `-factor` instead (descent with a positive learning rate).
    pub negate: bool,
}

pub fn scale(factor: impl Into<Hyper>) -> Transform {
    Arc::new(Scale { factor: factor.into(), negate: false })
}

/// `u * -learning_rate` (optax's `scale_by_learning_rate` with `flip_sign=True`). Pass
/// `Hyper::injected("learning_rate")` to follow a schedule injected by `inject_hyperparams`.
pub fn scale_by_learning_rate(learning_rate: impl Into<Hyper>) -> Transform {
    Arc::new(Scale { factor: learning_rate.into(), negate: true })
}

impl GradientTransformation for Scale {
    fn name(&self) -> String {
        if self.negate { "scale_by_learning_rate" } else { "scale" }.into()
    }

    fn init(&self, _: &[ParamSpec]) -> Result<Vec<StateSpec>> {
        Ok(Vec::new())
    }

    fn update(&self, ctx: &UpdateContext, updates: &[Value], _: &[Value]) -> Result<Update> {
        let mut outputs = Vec::with_capacity(updates.len());
        for u in updates {
            let factor = ctx.hyper(&self.factor, u.dtype())?;
            let factor = if self.negate { -factor } else { factor };
            outputs.push(u * &factor);
        }
        Ok(Update { updates: outputs, state: Vec::new() })
    }
}

/// `u * max(rms(p), min_scale)` per tensor (Adafactor's relative step size). Stateless.
#[derive(Debug)]
pub struct ScaleByParamBlockRms {
    pub min_scale: f64,
}

pub fn scale_by_param_block_rms(min_scale: f64) -> Transform {
    Arc::new(ScaleByParamBlockRms { min_scale })
}

impl GradientTransformation for ScaleByParamBlockRms {
    fn name(&self) -> String {
        "scale_by_param_block_rms".into()
    }

    fn init(&self, _: &[ParamSpec]) -> Result<Vec<StateSpec>> {
        Ok(Vec::new())
    }

    fn update(&self, ctx: &UpdateContext, updates: &[Value], _: &[Value]) -> Result<Update> {
        let outputs = updates
            .iter()
            .zip(ctx.params)
            .map(|(u, p)| {
                let all: Vec<usize> = (0..p.rank()).collect();
                let rms = p.square().reduce_mean(&all).sqrt();
                u * &rms.max(&rms.scalar_like(self.min_scale))
            })
            .collect();
        Ok(Update { updates: outputs, state: Vec::new() })
    }
}

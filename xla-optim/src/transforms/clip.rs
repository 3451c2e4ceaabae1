//! Clipping: `optax.clip_by_global_norm` and `optax.clip_by_block_rms`.

use std::sync::Arc;

use sirocco::hlo::Value;

use crate::error::Result;
use crate::transform::{
    global_norm, GradientTransformation, ParamSpec, StateSpec, Transform, Update, UpdateContext,
};

/// Rescales all updates together so their global L2 norm is at most `max_norm`:
/// `u * max_norm / norm` when `norm >= max_norm`, unchanged otherwise. Reports `grad_norm`
/// (the norm before clipping). Stateless.
#[derive(Debug)]
pub struct ClipByGlobalNorm {
    pub max_norm: f64,
}

pub fn clip_by_global_norm(max_norm: f64) -> Transform {
    Arc::new(ClipByGlobalNorm { max_norm })
}

impl GradientTransformation for ClipByGlobalNorm {
    fn name(&self) -> String {
        "clip_by_global_norm".into()
    }

    fn init(&self, _: &[ParamSpec]) -> Result<Vec<StateSpec>> {
        Ok(Vec::new())
    }

    fn update(&self, ctx: &UpdateContext, updates: &[Value], _: &[Value]) -> Result<Update> {
        let norm = global_norm(&ctx.builder, updates);
        ctx.report("grad_norm", norm.clone());
        let max_norm = norm.scalar_like(self.max_norm);
        let clip = norm.ge(&max_norm);
        let factor = clip.select(&(&max_norm / &norm), &norm.ones_like());
        let updates = updates.iter().map(|u| u * &factor.convert(u.dtype())).collect();
        Ok(Update { updates, state: Vec::new() })
    }
}

/// Per tensor: `u / max(1, rms(u) / threshold)` (Adafactor's update clipping). Stateless.
#[derive(Debug)]
pub struct ClipByBlockRms {
    pub threshold: f64,
}

pub fn clip_by_block_rms(threshold: f64) -> Transform {
    Arc::new(ClipByBlockRms { threshold })
}

impl GradientTransformation for ClipByBlockRms {
    fn name(&self) -> String {
        "clip_by_block_rms".into()
    }

    fn init(&self, _: &[ParamSpec]) -> Result<Vec<StateSpec>> {
        Ok(Vec::new())
    }

    fn update(&self, _: &UpdateContext, updates: &[Value], _: &[Value]) -> Result<Update> {
        let updates = updates
            .iter()
            .map(|u| {
                let all: Vec<usize> = (0..u.rank()).collect();
                let rms = u.square().reduce_mean(&all).sqrt();
                let denominator = (&rms / self.threshold).max(&rms.ones_like());
                u / &denominator
            })
            .collect();
        Ok(Update { updates, state: Vec::new() })
    }
}

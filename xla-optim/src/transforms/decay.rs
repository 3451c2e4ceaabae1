//! `optax.add_decayed_weights`: `u + weight_decay * p` (decoupled weight decay when followed
//! by the learning-rate scale, as in AdamW). Use `masked` to exempt parameters.

use std::sync::Arc;

use sirocco::hlo::Value;

use crate::error::Result;
use crate::transform::{
    GradientTransformation, Hyper, ParamSpec, StateSpec, Transform, Update, UpdateContext,
};

#[derive(Debug)]
pub struct AddDecayedWeights {
    pub weight_decay: Hyper,
}

pub fn add_decayed_weights(weight_decay: impl Into<Hyper>) -> Transform {
    Arc::new(AddDecayedWeights { weight_decay: weight_decay.into() })
}

impl GradientTransformation for AddDecayedWeights {
    fn name(&self) -> String {
        "add_decayed_weights".into()
    }

    fn init(&self, _: &[ParamSpec]) -> Result<Vec<StateSpec>> {
        Ok(Vec::new())
    }

    fn update(&self, ctx: &UpdateContext, updates: &[Value], _: &[Value]) -> Result<Update> {
        let mut outputs = Vec::with_capacity(updates.len());
        for (u, p) in updates.iter().zip(ctx.params) {
            let weight_decay = ctx.hyper(&self.weight_decay, u.dtype())?;
            outputs.push(u + &(p * &weight_decay));
        }
        Ok(Update { updates: outputs, state: Vec::new() })
    }
}

//! An exponential moving average of the parameters (model averaging, as Levanter's
//! `EmaModelAveraging`): placed last in a chain, it keeps
//! `ema = decay ema + (1 - decay) (p + u)`, the average of the parameters after this update,
//! and passes the updates through unchanged. The average starts as a copy of the parameters.

use std::sync::Arc;

use sirocco::hlo::Value;

use crate::error::Result;
use crate::transform::{
    expect_state, GradientTransformation, ParamSpec, StateInit, StateSpec, Transform, Update, UpdateContext,
};

#[derive(Debug)]
pub struct ParameterEma {
    pub decay: f64,
}

pub fn parameter_ema(decay: f64) -> Transform {
    Arc::new(ParameterEma { decay })
}

impl GradientTransformation for ParameterEma {
    fn name(&self) -> String {
        "parameter_ema".into()
    }

    fn init(&self, params: &[ParamSpec]) -> Result<Vec<StateSpec>> {
        Ok(params
            .iter()
            .enumerate()
            .map(|(index, param)| StateSpec {
                name: format!("ema/{}", param.name),
                ty: param.ty.clone(),
                init: StateInit::Param(index),
            })
            .collect())
    }

    fn update(&self, ctx: &UpdateContext, updates: &[Value], state: &[Value]) -> Result<Update> {
        expect_state("parameter_ema", state, updates.len())?;
        let new_state = updates
            .iter()
            .zip(ctx.params)
            .zip(state)
            .map(|((u, p), ema)| ema * self.decay + (p + u) * (1.0 - self.decay))
            .collect();
        Ok(Update { updates: updates.to_vec(), state: new_state })
    }
}

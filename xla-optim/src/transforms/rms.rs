//! `optax.scale_by_rms` (Tieleman & Hinton, 2012): RMSProp's scaling.
//!
//! ```text
//! v = decay v + (1 - decay) g²      (v starts at initial_scale)
//! v̂ = v / (1 - decay^t) with bias correction, else v
//! u = g / sqrt(v̂ + eps)   (eps_in_sqrt)   or   g / (sqrt(v̂) + eps)
//! ```

use std::sync::Arc;

use sirocco::hlo::Value;

use crate::error::Result;
use crate::transform::{
    bias_correction_denominator, expect_state, increment, GradientTransformation, ParamSpec, StateSpec,
    Transform, Update, UpdateContext,
};

#[derive(Debug)]
pub struct ScaleByRms {
    pub decay: f64,
    pub eps: f64,
    pub initial_scale: f64,
    pub eps_in_sqrt: bool,
    pub bias_correction: bool,
}

pub fn scale_by_rms(
    decay: f64,
    eps: f64,
    initial_scale: f64,
    eps_in_sqrt: bool,
    bias_correction: bool,
) -> Transform {
    Arc::new(ScaleByRms { decay, eps, initial_scale, eps_in_sqrt, bias_correction })
}

impl GradientTransformation for ScaleByRms {
    fn name(&self) -> String {
        "scale_by_rms".into()
    }

    fn init(&self, params: &[ParamSpec]) -> Result<Vec<StateSpec>> {
        let mut state = vec![StateSpec::count()];
        state.extend(StateSpec::per_param("nu", params, self.initial_scale));
        Ok(state)
    }

    fn update(&self, _: &UpdateContext, updates: &[Value], state: &[Value]) -> Result<Update> {
        expect_state("scale_by_rms", state, 1 + updates.len())?;
        let count = increment(&state[0]);
        let mut outputs = Vec::with_capacity(updates.len());
        let mut new_state = vec![count.clone()];
        for (g, nu) in updates.iter().zip(&state[1..]) {
            let nu = nu * self.decay + g.square() * (1.0 - self.decay);
            let nu_hat = if self.bias_correction {
                &nu / bias_correction_denominator(self.decay, &count, g.dtype())
            } else {
                nu.clone()
            };
            let scaled = if self.eps_in_sqrt {
                g * (nu_hat + self.eps).rsqrt()
            } else {
                g / (nu_hat.sqrt() + self.eps)
            };
            outputs.push(scaled);
            new_state.push(nu);
        }
        Ok(Update { updates: outputs, state: new_state })
    }
}

//! Momentum: `optax.trace` (heavy ball / Nesterov) and `optax.ema` (exponential moving
//! average of updates).

use std::sync::Arc;

use sirocco::hlo::Value;

use crate::error::Result;
use crate::transform::{
    bias_correction_denominator, expect_state, increment, GradientTransformation, ParamSpec, StateSpec,
    Transform, Update, UpdateContext,
};

/// `t = g + decay t`; outputs `t`, or `g + decay t` with Nesterov.
#[derive(Debug)]
pub struct Trace {
    pub decay: f64,
    pub nesterov: bool,
}

pub fn trace(decay: f64, nesterov: bool) -> Transform {
    Arc::new(Trace { decay, nesterov })
}

impl GradientTransformation for Trace {
    fn name(&self) -> String {
        "trace".into()
    }

    fn init(&self, params: &[ParamSpec]) -> Result<Vec<StateSpec>> {
        Ok(StateSpec::per_param("trace", params, 0.0))
    }

    fn update(&self, _: &UpdateContext, updates: &[Value], state: &[Value]) -> Result<Update> {
        expect_state("trace", state, updates.len())?;
        let mut outputs = Vec::with_capacity(updates.len());
        let mut new_state = Vec::with_capacity(updates.len());
        for (g, t) in updates.iter().zip(state) {
            let new_trace = g + t * self.decay;
            outputs.push(if self.nesterov { g + &new_trace * self.decay } else { new_trace.clone() });
            new_state.push(new_trace);
        }
        Ok(Update { updates: outputs, state: new_state })
    }
}

/// `e = (1 - decay) g + decay e`; outputs `e`, or `e / (1 - decay^t)` when debiased.
#[derive(Debug)]
pub struct Ema {
    pub decay: f64,
    pub debias: bool,
}

pub fn ema(decay: f64, debias: bool) -> Transform {
    Arc::new(Ema { decay, debias })
}

impl GradientTransformation for Ema {
    fn name(&self) -> String {
        "ema".into()
    }

    fn init(&self, params: &[ParamSpec]) -> Result<Vec<StateSpec>> {
        let mut state = vec![StateSpec::count()];
        state.extend(StateSpec::per_param("ema", params, 0.0));
        Ok(state)
    }

    fn update(&self, _: &UpdateContext, updates: &[Value], state: &[Value]) -> Result<Update> {
        expect_state("ema", state, 1 + updates.len())?;
        let count = increment(&state[0]);
        let mut outputs = Vec::with_capacity(updates.len());
        let mut new_state = vec![count.clone()];
        for (g, e) in updates.iter().zip(&state[1..]) {
            let average = g * (1.0 - self.decay) + e * self.decay;
            outputs.push(if self.debias {
                &average / bias_correction_denominator(self.decay, &count, g.dtype())
            } else {
                average.clone()
            });
            new_state.push(average);
        }
        Ok(Update { updates: outputs, state: new_state })
    }
}

//! Momentum: `optax.trace` (heavy ball / Nesterov) and `optax.ema` (exponential moving
//! average of updates).

use std::sync::Arc;

use sirocco::hlo::Value;
use sirocco::DType;

use crate::error::Result;
use crate::transform::{
    bias_correction_denominator, expect_state, increment, promoted_dtype, GradientTransformation, ParamSpec,
    StateSpec, Transform, Update, UpdateContext,
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

/// `e = (1 - decay) g + decay e`; outputs `e`, or `e / (1 - decay^t)` when debiased. The
/// average is kept in `accumulator_dtype` (optax's `accumulator_dtype`; the updates' type when
/// `None`); each term is computed in its own operand's type and the sum in the wider one, as
/// JAX's type promotion does; the output is in the updates' type.
#[derive(Debug)]
pub struct Ema {
    pub decay: f64,
    pub debias: bool,
    pub accumulator_dtype: Option<DType>,
}

pub fn ema(decay: f64, debias: bool) -> Transform {
    Arc::new(Ema { decay, debias, accumulator_dtype: None })
}

/// [`ema`] keeping its average in `accumulator_dtype` (`optax.ema(..., accumulator_dtype)`).
pub fn ema_in(decay: f64, debias: bool, accumulator_dtype: DType) -> Transform {
    Arc::new(Ema { decay, debias, accumulator_dtype: Some(accumulator_dtype) })
}

impl GradientTransformation for Ema {
    fn name(&self) -> String {
        "ema".into()
    }

    fn init(&self, params: &[ParamSpec]) -> Result<Vec<StateSpec>> {
        let mut state = vec![StateSpec::count()];
        let mut averages = StateSpec::per_param("ema", params, 0.0);
        if let Some(dtype) = self.accumulator_dtype {
            for average in &mut averages {
                average.ty = average.ty.with_dtype(dtype);
            }
        }
        state.extend(averages);
        Ok(state)
    }

    fn update(&self, _: &UpdateContext, updates: &[Value], state: &[Value]) -> Result<Update> {
        expect_state("ema", state, 1 + updates.len())?;
        let count = increment(&state[0]);
        let mut outputs = Vec::with_capacity(updates.len());
        let mut new_state = vec![count.clone()];
        for (g, e) in updates.iter().zip(&state[1..]) {
            let wide = promoted_dtype(e.dtype(), g.dtype());
            // Each term in its operand's type, then the sum in the wider one: optax's
            // `(1 - decay) * g + decay * t` with a Python float `decay` (weakly typed).
            let average = (g * (1.0 - self.decay)).convert(wide) + (e * self.decay).convert(wide);
            let output = if self.debias {
                &average / bias_correction_denominator(self.decay, &count, wide)
            } else {
                average.clone()
            };
            outputs.push(output.convert(g.dtype()));
            new_state.push(average.convert(e.dtype()));
        }
        Ok(Update { updates: outputs, state: new_state })
    }
}

//! `optax.scale_by_adam` (Kingma & Ba, 2014; Nesterov variant of Dozat, 2016).
//!
//! ```text
//! m  = b1 m + (1 - b1) g            v = b2 v + (1 - b2) g²        t = count + 1
//! m̂ = m / (1 - b1^t)                (nesterov: b1 m / (1 - b1^(t+1)) + (1 - b1) g / (1 - b1^t))
//! v̂ = v / (1 - b2^t)                u = m̂ / (sqrt(v̂ + eps_root) + eps)
//! ```

use std::sync::Arc;

use sirocco::hlo::Value;

use crate::error::Result;
use crate::transform::{
    bias_correction_denominator, expect_state, increment, GradientTransformation, ParamSpec, StateSpec,
    Transform, Update, UpdateContext,
};

#[derive(Debug)]
pub struct ScaleByAdam {
    pub b1: f64,
    pub b2: f64,
    pub eps: f64,
    pub eps_root: f64,
    pub nesterov: bool,
}

pub fn scale_by_adam(b1: f64, b2: f64, eps: f64, nesterov: bool) -> Transform {
    Arc::new(ScaleByAdam { b1, b2, eps, eps_root: 0.0, nesterov })
}

impl GradientTransformation for ScaleByAdam {
    fn name(&self) -> String {
        "scale_by_adam".into()
    }

    fn init(&self, params: &[ParamSpec]) -> Result<Vec<StateSpec>> {
        let mut state = vec![StateSpec::count()];
        state.extend(StateSpec::per_param("mu", params, 0.0));
        state.extend(StateSpec::per_param("nu", params, 0.0));
        Ok(state)
    }

    fn update(&self, _: &UpdateContext, updates: &[Value], state: &[Value]) -> Result<Update> {
        let n = updates.len();
        expect_state("scale_by_adam", state, 1 + 2 * n)?;
        let count = increment(&state[0]);
        let next_count = increment(&count);
        let mut new_mu = Vec::with_capacity(n);
        let mut new_nu = Vec::with_capacity(n);
        let mut outputs = Vec::with_capacity(n);
        for (i, g) in updates.iter().enumerate() {
            let dtype = g.dtype();
            let mu = &state[1 + i] * self.b1 + g * (1.0 - self.b1);
            let nu = &state[1 + n + i] * self.b2 + g.square() * (1.0 - self.b2);
            let mu_hat = if self.nesterov {
                &mu * self.b1 / bias_correction_denominator(self.b1, &next_count, dtype)
                    + g * (1.0 - self.b1) / bias_correction_denominator(self.b1, &count, dtype)
            } else {
                &mu / bias_correction_denominator(self.b1, &count, dtype)
            };
            let nu_hat = &nu / bias_correction_denominator(self.b2, &count, dtype);
            outputs.push(mu_hat / ((nu_hat + self.eps_root).sqrt() + self.eps));
            new_mu.push(mu);
            new_nu.push(nu);
        }
        let mut new_state = vec![count];
        new_state.extend(new_mu);
        new_state.extend(new_nu);
        Ok(Update { updates: outputs, state: new_state })
    }
}

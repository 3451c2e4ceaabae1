//! `optax.scale_by_adamax` (Kingma & Ba, 2014, section 7).
//!
//! ```text
//! m = b1 m + (1 - b1) g        v = max(b2 v, |g| + eps)        u = m / (1 - b1^t) / v
//! ```

use std::sync::Arc;

use sirocco::hlo::Value;

use crate::error::Result;
use crate::transform::{
    bias_correction_denominator, expect_state, increment, GradientTransformation, ParamSpec, StateSpec,
    Transform, Update, UpdateContext,
};

#[derive(Debug)]
pub struct ScaleByAdamax {
    pub b1: f64,
    pub b2: f64,
    pub eps: f64,
}

pub fn scale_by_adamax(b1: f64, b2: f64, eps: f64) -> Transform {
    Arc::new(ScaleByAdamax { b1, b2, eps })
}

impl GradientTransformation for ScaleByAdamax {
    fn name(&self) -> String {
        "scale_by_adamax".into()
    }

    fn init(&self, params: &[ParamSpec]) -> Result<Vec<StateSpec>> {
        let mut state = vec![StateSpec::count()];
        state.extend(StateSpec::per_param("mu", params, 0.0));
        state.extend(StateSpec::per_param("nu", params, 0.0));
        Ok(state)
    }

    fn update(&self, _: &UpdateContext, updates: &[Value], state: &[Value]) -> Result<Update> {
        let n = updates.len();
        expect_state("scale_by_adamax", state, 1 + 2 * n)?;
        let count = increment(&state[0]);
        let (mut new_mu, mut new_nu, mut outputs) = (Vec::new(), Vec::new(), Vec::new());
        for (i, g) in updates.iter().enumerate() {
            let mu = &state[1 + i] * self.b1 + g * (1.0 - self.b1);
            let nu = (&state[1 + n + i] * self.b2).max(&(g.abs() + self.eps));
            outputs.push(&mu / bias_correction_denominator(self.b1, &count, g.dtype()) / &nu);
            new_mu.push(mu);
            new_nu.push(nu);
        }
        let mut new_state = vec![count];
        new_state.extend(new_mu);
        new_state.extend(new_nu);
        Ok(Update { updates: outputs, state: new_state })
    }
}

//! `optax.scale_by_lion` (Chen et al., 2023).
//!
//! ```text
//! u = sign((1 - b1) g + b1 m)        m = b2 m + (1 - b2) g
//! ```

use std::sync::Arc;

use sirocco::hlo::Value;

use crate::error::Result;
use crate::transform::{
    expect_state, increment, GradientTransformation, ParamSpec, StateSpec, Transform, Update, UpdateContext,
};

#[derive(Debug)]
pub struct ScaleByLion {
    pub b1: f64,
    pub b2: f64,
}

pub fn scale_by_lion(b1: f64, b2: f64) -> Transform {
    Arc::new(ScaleByLion { b1, b2 })
}

impl GradientTransformation for ScaleByLion {
    fn name(&self) -> String {
        "scale_by_lion".into()
    }

    fn init(&self, params: &[ParamSpec]) -> Result<Vec<StateSpec>> {
        let mut state = vec![StateSpec::count()];
        state.extend(StateSpec::per_param("mu", params, 0.0));
        Ok(state)
    }

    fn update(&self, _: &UpdateContext, updates: &[Value], state: &[Value]) -> Result<Update> {
        expect_state("scale_by_lion", state, 1 + updates.len())?;
        let mut outputs = Vec::with_capacity(updates.len());
        let mut new_state = vec![increment(&state[0])];
        for (g, mu) in updates.iter().zip(&state[1..]) {
            outputs.push((g * (1.0 - self.b1) + mu * self.b1).sign());
            new_state.push(mu * self.b2 + g * (1.0 - self.b2));
        }
        Ok(Update { updates: outputs, state: new_state })
    }
}

//! `optax.scale_by_factored_rms` (Shazeer & Stern, 2018): Adafactor's factored second moment.
//!
//! For a parameter whose two largest dimensions are both at least `min_dim_size_to_factor`,
//! keeps row and column means of `g² + eps` instead of a full second moment:
//!
//! ```text
//! ρ_t = 1 - (t + 1)^(-decay_rate)           (t = count - step_offset, before increment)
//! r = ρ r + (1 - ρ) mean(g² + eps, over d0)     c = ρ c + (1 - ρ) mean(g² + eps, over d1)
//! u = g · (r / mean(r))^(-1/2) · c^(-1/2)
//! ```
//! Other parameters keep `v = ρ v + (1 - ρ)(g² + eps)` and get `u = g v^(-1/2)`.

use std::sync::Arc;

use sirocco::hlo::{TensorType, Value};
use sirocco::DType;

use crate::error::Result;
use crate::transform::{
    expect_state, increment, GradientTransformation, ParamSpec, StateInit, StateSpec, Transform, Update,
    UpdateContext,
};

#[derive(Debug)]
pub struct ScaleByFactoredRms {
    pub factored: bool,
    pub decay_rate: f64,
    pub step_offset: i64,
    pub min_dim_size_to_factor: i64,
    pub epsilon: f64,
}

/// optax's `scale_by_factored_rms(factored, decay_rate, step_offset, min_dim_size_to_factor,
/// epsilon)`.
pub fn scale_by_factored_rms(
    factored: bool,
    decay_rate: f64,
    step_offset: i64,
    min_dim_size_to_factor: i64,
    epsilon: f64,
) -> Transform {
    Arc::new(ScaleByFactoredRms { factored, decay_rate, step_offset, min_dim_size_to_factor, epsilon })
}

impl ScaleByFactoredRms {
    /// `(d1, d0)`: the second-largest and largest dimensions, when the parameter is factored
    /// (numpy's stable argsort order on ties, as optax).
    fn factored_dims(&self, dims: &[i64]) -> Option<(usize, usize)> {
        if !self.factored || dims.len() < 2 {
            return None;
        }
        let mut order: Vec<usize> = (0..dims.len()).collect();
        order.sort_by_key(|&d| dims[d]);
        let (d1, d0) = (order[order.len() - 2], order[order.len() - 1]);
        (dims[d1] >= self.min_dim_size_to_factor).then_some((d1, d0))
    }
}

fn without(dims: &[i64], removed: usize) -> Vec<i64> {
    dims.iter().enumerate().filter(|&(d, _)| d != removed).map(|(_, &size)| size).collect()
}

impl GradientTransformation for ScaleByFactoredRms {
    fn name(&self) -> String {
        "scale_by_factored_rms".into()
    }

    /// State: count, then per parameter either `v_row/..` and `v_col/..` (factored) or
    /// `v/..` (full).
    fn init(&self, params: &[ParamSpec]) -> Result<Vec<StateSpec>> {
        let mut state = vec![StateSpec::count()];
        for param in params {
            let zeros = |name: String, dims: &[i64]| StateSpec {
                name,
                ty: TensorType::new(param.ty.dtype, dims),
                init: StateInit::Fill(0.0),
            };
            match self.factored_dims(&param.ty.dims) {
                Some((d1, d0)) => {
                    state.push(zeros(format!("v_row/{}", param.name), &without(&param.ty.dims, d0)));
                    state.push(zeros(format!("v_col/{}", param.name), &without(&param.ty.dims, d1)));
                }
                None => state.push(zeros(format!("v/{}", param.name), &param.ty.dims)),
            }
        }
        Ok(state)
    }

    fn update(&self, ctx: &UpdateContext, updates: &[Value], state: &[Value]) -> Result<Update> {
        let expected = self.init(ctx.specs)?.len();
        expect_state("scale_by_factored_rms", state, expected)?;
        let count = &state[0];
        // ρ_t = 1 - (t + 1)^(-decay_rate), in f32 as optax.
        let t = (count - count.scalar_like(self.step_offset as f64)).convert(DType::F32) + 1.0;
        let rho = 1.0 - t.pow(&t.scalar_like(-self.decay_rate));
        let mut outputs = Vec::with_capacity(updates.len());
        let mut new_state = vec![increment(count)];
        let mut slot = 1;
        for g in updates {
            let rho = rho.convert(g.dtype());
            let g_sq = g.square() + self.epsilon;
            match self.factored_dims(g.dims()) {
                Some((d1, d0)) => {
                    let v_row = &state[slot] * &rho + g_sq.reduce_mean(&[d0]) * (1.0 - &rho);
                    let v_col = &state[slot + 1] * &rho + g_sq.reduce_mean(&[d1]) * (1.0 - &rho);
                    slot += 2;
                    let reduced_d1 = if d1 > d0 { d1 - 1 } else { d1 };
                    let row_col_mean = v_row.reduce_mean(&[reduced_d1]);
                    let kept: Vec<usize> = (0..v_row.rank()).filter(|&d| d != reduced_d1).collect();
                    let row_factor = (&v_row / &row_col_mean.broadcast_in_dim(v_row.dims(), &kept)).rsqrt();
                    let col_factor = v_col.rsqrt();
                    let row_dims: Vec<usize> = (0..g.rank()).filter(|&d| d != d0).collect();
                    let col_dims: Vec<usize> = (0..g.rank()).filter(|&d| d != d1).collect();
                    outputs.push(
                        g * &row_factor.broadcast_in_dim(g.dims(), &row_dims)
                            * col_factor.broadcast_in_dim(g.dims(), &col_dims),
                    );
                    new_state.push(v_row);
                    new_state.push(v_col);
                }
                None => {
                    let v = &state[slot] * &rho + &g_sq * (1.0 - &rho);
                    slot += 1;
                    outputs.push(g * &v.rsqrt());
                    new_state.push(v);
                }
            }
        }
        Ok(Update { updates: outputs, state: new_state })
    }
}

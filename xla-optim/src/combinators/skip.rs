//! Skipping bad steps while keeping the inner state: `optax.apply_if_finite` and Levanter's
//! `skip_bad_steps` (loss or gradient-norm spikes against a rolling history).
//!
//! A skipped step outputs zero updates and leaves the inner state as it was. Both choices are
//! made with `select`, so they fuse into the update instead of adding a branch.

use std::sync::Arc;

use sirocco::hlo::{TensorType, Value};
use sirocco::DType;

use crate::error::{OptimError, Result};
use crate::transform::{
    expect_state, global_norm, increment, GradientTransformation, ParamSpec, StateInit, StateSpec, Transform,
    Update, UpdateContext,
};

/// Picks `take ? new : old` for the updates (old = zeros) and the inner state.
fn keep_or_take(take: &Value, new: Update, old_state: &[Value]) -> (Vec<Value>, Vec<Value>) {
    let updates = new.updates.iter().map(|u| take.select(u, &u.zeros_like())).collect();
    let state = new.state.iter().zip(old_state).map(|(n, o)| take.select(n, o)).collect();
    (updates, state)
}

/// True when every element of every value is finite.
fn all_finite(ctx: &UpdateContext, values: &[Value]) -> Value {
    let finite: Vec<Value> = values
        .iter()
        .map(|v| {
            let all: Vec<usize> = (0..v.rank()).collect();
            // min over {0, 1} is 1 exactly when every element is finite.
            v.is_finite().convert(DType::I32).reduce_min(&all)
        })
        .collect();
    let lowest =
        finite.into_iter().reduce(|a, b| a.min(&b)).unwrap_or_else(|| ctx.builder.scalar_of(DType::I32, 1.0));
    lowest.eq(&lowest.scalar_like(1.0))
}

/// Applies the inner transformation only when all incoming updates are finite; after more
/// than `max_consecutive_errors` non-finite steps in a row, applies it anyway (optax).
#[derive(Debug)]
pub struct ApplyIfFinite {
    pub inner: Transform,
    pub max_consecutive_errors: i64,
}

pub fn apply_if_finite(inner: Transform, max_consecutive_errors: i64) -> Transform {
    Arc::new(ApplyIfFinite { inner, max_consecutive_errors })
}

impl GradientTransformation for ApplyIfFinite {
    fn name(&self) -> String {
        "apply_if_finite".into()
    }

    /// State: notfinite_count, last_finite, total_notfinite, then the inner state.
    fn init(&self, params: &[ParamSpec]) -> Result<Vec<StateSpec>> {
        let mut state = vec![
            StateSpec { name: "notfinite_count".into(), ..StateSpec::count() },
            StateSpec {
                name: "last_finite".into(),
                ty: TensorType::scalar(DType::Pred),
                init: StateInit::Fill(1.0),
            },
            StateSpec { name: "total_notfinite".into(), ..StateSpec::count() },
        ];
        state.extend(self.inner.init(params)?.into_iter().map(|spec| spec.prefixed("inner")));
        Ok(state)
    }

    fn update(&self, ctx: &UpdateContext, updates: &[Value], state: &[Value]) -> Result<Update> {
        let inner_size = self.inner.init(ctx.specs)?.len();
        expect_state("apply_if_finite", state, 3 + inner_size)?;
        let finite = all_finite(ctx, updates);
        let zero = state[0].zeros_like();
        let notfinite_count = finite.select(&zero, &increment(&state[0]));
        let total_notfinite = finite.select(&state[2], &increment(&state[2]));
        let give_up = notfinite_count.gt(&notfinite_count.scalar_like(self.max_consecutive_errors as f64));
        let apply = finite.or(&give_up);
        let inner_state = &state[3..];
        let result = self.inner.update(ctx, updates, inner_state)?;
        let (updates, inner_state) = keep_or_take(&apply, result, inner_state);
        ctx.report("skipped_nonfinite", apply.not().convert(DType::F32));
        let mut new_state = vec![notfinite_count, finite, total_notfinite];
        new_state.extend(inner_state);
        Ok(Update { updates, state: new_state })
    }
}

/// Levanter's `SkipStepConfig`: skip the step when the loss or the gradient norm exceeds the
/// mean of the last `rolling_interval_length` steps by more than `sigma_factor` standard
/// deviations (only once half the window is filled). Needs the loss in the context.
#[derive(Debug)]
pub struct SkipBadSteps {
    pub inner: Transform,
    pub rolling_interval_length: i64,
    pub sigma_factor: f64,
}

pub fn skip_bad_steps(inner: Transform, rolling_interval_length: i64, sigma_factor: f64) -> Transform {
    Arc::new(SkipBadSteps { inner, rolling_interval_length, sigma_factor })
}

/// Mean and standard deviation (ddof 0) of `history` over its first `count` entries, with
/// Levanter's fallbacks (mean 0, std 1e-6) when there are none.
fn history_stats(history: &Value, count: &Value) -> (Value, Value) {
    let size = history.dims()[0];
    let index = history.builder().iota(&TensorType::new(DType::I32, &[size]), 0);
    let valid = index.lt(&count.broadcast_in_dim(&[size], &[])).and(&history.eq(history));
    let zeros = history.zeros_like();
    let n = valid.convert(DType::F32).sum();
    let has_data = n.gt(&n.scalar_like(0.0));
    let safe_n = has_data.select(&n, &n.ones_like());
    let mean = valid.select(history, &zeros).sum() / &safe_n;
    let centered = history - &mean.broadcast_in_dim(&[size], &[]);
    let variance = valid.select(&centered.square(), &zeros).sum() / &safe_n;
    let floor = variance.scalar_like(1e-6);
    let std = has_data.select(&variance.sqrt().max(&floor), &floor);
    (has_data.select(&mean, &mean.zeros_like()), std)
}

impl GradientTransformation for SkipBadSteps {
    fn name(&self) -> String {
        "skip_bad_steps".into()
    }

    /// State: losses and grad_norms histories (f32[L + 1]), current_idx, count, then the
    /// inner state. Levanter fills the histories with NaN; entries at or past `count` are never
    /// read (the statistics mask them), so zeros serve as well and keep the state finite for
    /// checkpoints.
    fn init(&self, params: &[ParamSpec]) -> Result<Vec<StateSpec>> {
        let history = |name: &str| StateSpec {
            name: name.into(),
            ty: TensorType::new(DType::F32, &[self.rolling_interval_length + 1]),
            init: StateInit::Fill(0.0),
        };
        let mut state = vec![
            history("losses"),
            history("grad_norms"),
            StateSpec { name: "current_idx".into(), ..StateSpec::count() },
            StateSpec::count(),
        ];
        state.extend(self.inner.init(params)?.into_iter().map(|spec| spec.prefixed("inner")));
        Ok(state)
    }

    fn update(&self, ctx: &UpdateContext, updates: &[Value], state: &[Value]) -> Result<Update> {
        let inner_size = self.inner.init(ctx.specs)?.len();
        expect_state("skip_bad_steps", state, 4 + inner_size)?;
        let loss = ctx
            .loss
            .ok_or_else(|| {
                OptimError::Build("skip_bad_steps needs the step's loss in the update context".into())
            })?
            .convert(DType::F32);
        let (losses, grad_norms, current_idx, count) = (&state[0], &state[1], &state[2], &state[3]);
        let norm = global_norm(&ctx.builder, updates).convert(DType::F32);
        let min_points = (self.rolling_interval_length / 2).max(2);
        let can_skip = count.ge(&count.scalar_like(min_points as f64));
        let (loss_mean, loss_std) = history_stats(losses, count);
        let (norm_mean, norm_std) = history_stats(grad_norms, count);
        let loss_ok = loss.le(&(loss_mean + loss_std * self.sigma_factor));
        let norm_ok = norm.le(&(norm_mean + norm_std * self.sigma_factor));
        let skip = can_skip.and(&loss_ok.and(&norm_ok).not());
        let window = self.rolling_interval_length + 1;
        let next_idx = (current_idx + 1.0).rem(&current_idx.scalar_like(window as f64));
        let next_count = (count + 1.0).min(&count.scalar_like(window as f64));
        let inner_state = &state[4..];
        let result = self.inner.update(ctx, updates, inner_state)?;
        let (updates, inner_state) = keep_or_take(&skip.not(), result, inner_state);
        ctx.report("skipped_spike", skip.convert(DType::F32));
        let mut new_state = vec![
            losses.update_axis0(&loss, current_idx),
            grad_norms.update_axis0(&norm, current_idx),
            next_idx,
            next_count,
        ];
        new_state.extend(inner_state);
        Ok(Update { updates, state: new_state })
    }
}

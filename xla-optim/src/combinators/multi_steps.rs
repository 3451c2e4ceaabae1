//! `optax.MultiSteps`: gradient accumulation over `every_k` calls. Calls 1..k-1 fold the
//! gradients into a running mean and output zeros; call k applies the inner transformation to
//! the mean and resets the accumulator. The accumulator is the only parameter-sized copy; the
//! inner update runs only on the k-th call (a `cond`), so its state is read and written once
//! per k calls. The inner transformation's metrics (e.g. `grad_norm`) are reported on the k-th
//! call and read 0 on the others.
//!
//! As optax's, the accumulator is kept in f32 by default (`accumulator_dtype`): the running
//! mean is computed in the wider of its type and the gradients', stored in its own, and handed
//! to the inner transformation in the gradients' type.

use std::cell::RefCell;
use std::sync::Arc;

use sirocco::hlo::{cond, TensorType, Value};
use sirocco::DType;

use crate::error::Result;
use crate::transform::{
    expect_state, increment, promoted_dtype, GradientTransformation, ParamSpec, StateSpec, Transform, Update,
    UpdateContext,
};

#[derive(Debug)]
pub struct MultiSteps {
    pub inner: Transform,
    pub every_k: i64,
    /// The type the running mean is stored in (optax's `accumulator_dtype`, f32 by default).
    pub accumulator_dtype: DType,
}

/// `optax.MultiSteps(inner, every_k)`, with its f32 accumulator.
pub fn multi_steps(inner: Transform, every_k: i64) -> Transform {
    Arc::new(MultiSteps { inner, every_k, accumulator_dtype: DType::F32 })
}

impl GradientTransformation for MultiSteps {
    fn name(&self) -> String {
        "multi_steps".into()
    }

    /// State: mini_step, gradient_step, `acc_grads/...`, then the inner state.
    fn init(&self, params: &[ParamSpec]) -> Result<Vec<StateSpec>> {
        let mut state = vec![
            StateSpec { name: "mini_step".into(), ..StateSpec::count() },
            StateSpec { name: "gradient_step".into(), ..StateSpec::count() },
        ];
        let mut accumulators = StateSpec::per_param("acc_grads", params, 0.0);
        for accumulator in &mut accumulators {
            accumulator.ty = accumulator.ty.with_dtype(self.accumulator_dtype);
        }
        state.extend(accumulators);
        state.extend(self.inner.init(params)?.into_iter().map(|spec| spec.prefixed("inner")));
        Ok(state)
    }

    fn update(&self, ctx: &UpdateContext, updates: &[Value], state: &[Value]) -> Result<Update> {
        let n = updates.len();
        let inner_size = self.inner.init(ctx.specs)?.len();
        expect_state("multi_steps", state, 2 + n + inner_size)?;
        let (mini_step, gradient_step) = (&state[0], &state[1]);
        // optax: `acc + (g - acc) / (mini_step + 1)`, with JAX's type promotion.
        let accumulated: Vec<Value> = updates
            .iter()
            .zip(&state[2..2 + n])
            .map(|(g, acc)| {
                let wide = promoted_dtype(acc.dtype(), g.dtype());
                let acc = acc.convert(wide);
                &acc + &((g.convert(wide) - &acc) / (mini_step + 1.0).convert(wide))
            })
            .collect();
        let means: Vec<Value> =
            accumulated.iter().zip(updates).map(|(mean, g)| mean.convert(g.dtype())).collect();
        let inner_state = &state[2 + n..];
        let is_final = mini_step.ge(&mini_step.scalar_like((self.every_k - 1) as f64));

        // Branch operands: accumulated means, inner state, parameters, mini_step (so that a
        // branch always has a value to build constants from).
        let mut operands = means;
        operands.extend(inner_state.iter().cloned());
        operands.extend(ctx.params.iter().cloned());
        operands.push(mini_step.clone());
        // The inner metrics are computed inside the branch: they leave it as outputs, and the
        // other branch outputs zeros of the same types.
        let metric_types: RefCell<Vec<(String, TensorType)>> = RefCell::new(Vec::new());
        let mut failure = None;
        let outputs = cond(
            &is_final,
            &operands,
            |locals| {
                let (grads, rest) = locals.split_at(n);
                let (inner, rest) = rest.split_at(inner_size);
                let params = &rest[..ctx.params.len()];
                let sub = ctx.subset(params, ctx.specs);
                match self.inner.update(&sub, grads, inner) {
                    Ok(result) => {
                        let metrics = sub.metrics.into_inner();
                        *metric_types.borrow_mut() =
                            metrics.iter().map(|(name, value)| (name.clone(), value.ty().clone())).collect();
                        let mut outputs = result.updates;
                        outputs.extend(result.state);
                        outputs.extend(metrics.into_iter().map(|(_, value)| value));
                        outputs
                    }
                    Err(error) => {
                        failure = Some(error);
                        let mut outputs: Vec<Value> = grads.iter().map(Value::zeros_like).collect();
                        outputs.extend(inner.iter().cloned());
                        outputs
                    }
                }
            },
            |locals| {
                let (grads, rest) = locals.split_at(n);
                let mut outputs: Vec<Value> = grads.iter().map(Value::zeros_like).collect();
                outputs.extend(rest[..inner_size].iter().cloned());
                let builder = locals[locals.len() - 1].builder();
                outputs.extend(metric_types.borrow().iter().map(|(_, ty)| builder.full(ty, 0.0)));
                outputs
            },
        );
        if let Some(error) = failure {
            return Err(error);
        }
        for ((name, _), value) in metric_types.borrow().iter().zip(&outputs[n + inner_size..]) {
            ctx.report(name.clone(), value.clone());
        }
        let zero = mini_step.zeros_like();
        let mut new_state = vec![
            is_final.select(&zero, &increment(mini_step)),
            is_final.select(&increment(gradient_step), gradient_step),
        ];
        new_state.extend(accumulated.iter().map(|acc| {
            let stored = acc.convert(self.accumulator_dtype);
            is_final.select(&stored.zeros_like(), &stored)
        }));
        new_state.extend(outputs[n..n + inner_size].iter().cloned());
        Ok(Update { updates: outputs[..n].to_vec(), state: new_state })
    }
}

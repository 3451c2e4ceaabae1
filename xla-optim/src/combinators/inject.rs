//! `optax.inject_hyperparams`: scalar hyperparameters (the learning rate above all) computed
//! in the graph from a schedule, or fed at run time, and kept in the state so the value used
//! at each step is readable (and logged).
//!
//! As in optax, a schedule is read at the count *before* this update: the first update uses
//! `schedule(0)`. A schedule built in the graph is part of the compiled step; a `Runtime`
//! hyperparameter is an input of the step, so changing it never recompiles.

use std::sync::Arc;

use sirocco::hlo::Value;
use sirocco::DType;

use crate::error::{OptimError, Result};
use crate::schedule::Schedule;
use crate::transform::{
    expect_state, increment, GradientTransformation, ParamSpec, StateSpec, Transform, Update, UpdateContext,
};

/// Where an injected hyperparameter's value comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum HyperSource {
    /// Evaluated in the graph at the pre-increment count.
    Schedule(Schedule),
    /// An f32 scalar input of the step, by the hyperparameter's name.
    Runtime,
}

#[derive(Debug)]
pub struct InjectHyperparams {
    pub inner: Transform,
    pub hyperparameters: Vec<(String, HyperSource)>,
}

pub fn inject_hyperparams(inner: Transform, hyperparameters: Vec<(String, HyperSource)>) -> Transform {
    Arc::new(InjectHyperparams { inner, hyperparameters })
}

impl GradientTransformation for InjectHyperparams {
    fn name(&self) -> String {
        "inject_hyperparams".into()
    }

    /// State: count, `hyperparams/{name}` for each hyperparameter (the value used by the last
    /// update; `schedule(0)` before the first), then the inner state under `inner/`.
    fn init(&self, params: &[ParamSpec]) -> Result<Vec<StateSpec>> {
        let mut state = vec![StateSpec::count()];
        for (name, source) in &self.hyperparameters {
            let initial = match source {
                HyperSource::Schedule(schedule) => schedule.at(0),
                HyperSource::Runtime => 0.0,
            };
            state.push(StateSpec::scalar(format!("hyperparams/{name}"), initial));
        }
        state.extend(self.inner.init(params)?.into_iter().map(|spec| spec.prefixed("inner")));
        Ok(state)
    }

    fn update(&self, ctx: &UpdateContext, updates: &[Value], state: &[Value]) -> Result<Update> {
        let hyper_count = self.hyperparameters.len();
        let inner_size = self.inner.init(ctx.specs)?.len();
        expect_state("inject_hyperparams", state, 1 + hyper_count + inner_size)?;
        let count = &state[0];
        let mut inner_ctx = ctx.subset(ctx.params, ctx.specs);
        let mut values = Vec::with_capacity(hyper_count);
        for (name, source) in &self.hyperparameters {
            let value = match source {
                HyperSource::Schedule(schedule) => schedule.build(count),
                HyperSource::Runtime => ctx
                    .runtime
                    .get(name)
                    .ok_or_else(|| {
                        OptimError::Build(format!(
                            "runtime hyperparameter `{name}` was not provided to the step"
                        ))
                    })?
                    .convert(DType::F32),
            };
            inner_ctx.hyperparameters.insert(name.clone(), value.clone());
            values.push(value);
        }
        let result = self.inner.update(&inner_ctx, updates, &state[1 + hyper_count..])?;
        ctx.absorb(inner_ctx);
        for ((name, _), value) in self.hyperparameters.iter().zip(&values) {
            ctx.report(name.clone(), value.clone());
        }
        let mut new_state = vec![increment(count)];
        new_state.extend(values);
        new_state.extend(result.state);
        Ok(Update { updates: result.updates, state: new_state })
    }
}

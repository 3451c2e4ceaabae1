//! `optax.masked`: apply the inner transformation to the parameters a mask selects; the
//! others pass through unchanged and get no state.

use std::fmt;
use std::sync::Arc;

use sirocco::hlo::Value;

use crate::error::Result;
use crate::transform::{GradientTransformation, ParamSpec, StateSpec, Transform, Update, UpdateContext};

/// Selects parameters by their spec (usually by dotted path).
#[derive(Clone)]
pub struct Mask {
    description: String,
    predicate: Arc<dyn Fn(&ParamSpec) -> bool + Send + Sync>,
}

impl Mask {
    pub fn new(
        description: impl Into<String>,
        predicate: impl Fn(&ParamSpec) -> bool + Send + Sync + 'static,
    ) -> Mask {
        Mask { description: description.into(), predicate: Arc::new(predicate) }
    }

    pub fn includes(&self, param: &ParamSpec) -> bool {
        (self.predicate)(param)
    }

    /// The indices of the selected parameters.
    pub fn select(&self, params: &[ParamSpec]) -> Vec<usize> {
        (0..params.len()).filter(|&i| self.includes(&params[i])).collect()
    }
}

impl fmt::Debug for Mask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mask({})", self.description)
    }
}

#[derive(Debug)]
pub struct Masked {
    pub inner: Transform,
    pub mask: Mask,
}

pub fn masked(inner: Transform, mask: Mask) -> Transform {
    Arc::new(Masked { inner, mask })
}

/// Runs `transform` on the parameters at `indices`, writing its updates into `updates`.
pub(crate) fn update_subset(
    transform: &Transform,
    ctx: &UpdateContext,
    indices: &[usize],
    updates: &mut [Value],
    state: &[Value],
) -> Result<Vec<Value>> {
    let params: Vec<Value> = indices.iter().map(|&i| ctx.params[i].clone()).collect();
    let specs: Vec<ParamSpec> = indices.iter().map(|&i| ctx.specs[i].clone()).collect();
    let selected: Vec<Value> = indices.iter().map(|&i| updates[i].clone()).collect();
    let sub = ctx.subset(&params, &specs);
    let result = transform.update(&sub, &selected, state)?;
    ctx.absorb(sub);
    for (&index, update) in indices.iter().zip(result.updates) {
        updates[index] = update;
    }
    Ok(result.state)
}

impl GradientTransformation for Masked {
    fn name(&self) -> String {
        format!("masked_{}", self.inner.name())
    }

    fn init(&self, params: &[ParamSpec]) -> Result<Vec<StateSpec>> {
        let selected: Vec<ParamSpec> =
            self.mask.select(params).into_iter().map(|i| params[i].clone()).collect();
        self.inner.init(&selected)
    }

    fn update(&self, ctx: &UpdateContext, updates: &[Value], state: &[Value]) -> Result<Update> {
        let indices = self.mask.select(ctx.specs);
        let mut updates = updates.to_vec();
        let state = update_subset(&self.inner, ctx, &indices, &mut updates, state)?;
        Ok(Update { updates, state })
    }
}

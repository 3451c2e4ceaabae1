//! `optax.multi_transform`: a label per parameter picks the transformation that updates it
//! (e.g. one optimizer for 2-D hidden matrices, another for embeddings, norms and biases).

use std::fmt;
use std::sync::Arc;

use sirocco::hlo::Value;

use crate::error::{OptimError, Result};
use crate::transform::{GradientTransformation, ParamSpec, StateSpec, Transform, Update, UpdateContext};

pub struct MultiTransform {
    /// (label, transformation), in a fixed order that also orders the state.
    pub transforms: Vec<(String, Transform)>,
    pub label: Arc<dyn Fn(&ParamSpec) -> String + Send + Sync>,
}

impl fmt::Debug for MultiTransform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MultiTransform").field("transforms", &self.transforms).finish()
    }
}

pub fn multi_transform(
    transforms: Vec<(String, Transform)>,
    label: impl Fn(&ParamSpec) -> String + Send + Sync + 'static,
) -> Transform {
    Arc::new(MultiTransform { transforms, label: Arc::new(label) })
}

impl MultiTransform {
    /// For each transformation, the indices of the parameters labelled for it; an error for a
    /// label without a transformation.
    fn partition(&self, params: &[ParamSpec]) -> Result<Vec<Vec<usize>>> {
        let mut groups = vec![Vec::new(); self.transforms.len()];
        for (index, param) in params.iter().enumerate() {
            let label = (self.label)(param);
            let group = self.transforms.iter().position(|(name, _)| *name == label).ok_or_else(|| {
                let known: Vec<&str> = self.transforms.iter().map(|(name, _)| name.as_str()).collect();
                OptimError::Build(format!(
                    "multi_transform: parameter `{}` has label `{label}`, not one of {known:?}",
                    param.name
                ))
            })?;
            groups[group].push(index);
        }
        Ok(groups)
    }
}

impl GradientTransformation for MultiTransform {
    fn name(&self) -> String {
        "multi_transform".into()
    }

    fn init(&self, params: &[ParamSpec]) -> Result<Vec<StateSpec>> {
        let mut state = Vec::new();
        for ((label, transform), indices) in self.transforms.iter().zip(self.partition(params)?) {
            let selected: Vec<ParamSpec> = indices.iter().map(|&i| params[i].clone()).collect();
            state.extend(transform.init(&selected)?.into_iter().map(|spec| spec.prefixed(label)));
        }
        Ok(state)
    }

    fn update(&self, ctx: &UpdateContext, updates: &[Value], state: &[Value]) -> Result<Update> {
        let mut updates = updates.to_vec();
        let mut new_state = Vec::with_capacity(state.len());
        let mut offset = 0;
        for ((_, transform), indices) in self.transforms.iter().zip(self.partition(ctx.specs)?) {
            let selected: Vec<ParamSpec> = indices.iter().map(|&i| ctx.specs[i].clone()).collect();
            let size = transform.init(&selected)?.len();
            let own = &state[offset..offset + size];
            new_state.extend(super::masked::update_subset(transform, ctx, &indices, &mut updates, own)?);
            offset += size;
        }
        Ok(Update { updates, state: new_state })
    }
}

//! `optax.chain`: apply transformations in sequence; the state is theirs, concatenated, each
//! entry named `{index}.{transform}/{entry}`.

use std::sync::Arc;

use sirocco::hlo::Value;

use crate::error::Result;
use crate::transform::{GradientTransformation, ParamSpec, StateSpec, Transform, Update, UpdateContext};

#[derive(Debug)]
pub struct Chain {
    pub transforms: Vec<Transform>,
}

pub fn chain(transforms: Vec<Transform>) -> Transform {
    Arc::new(Chain { transforms })
}

impl GradientTransformation for Chain {
    fn name(&self) -> String {
        "chain".into()
    }

    fn init(&self, params: &[ParamSpec]) -> Result<Vec<StateSpec>> {
        let mut state = Vec::new();
        for (index, transform) in self.transforms.iter().enumerate() {
            let prefix = format!("{index}.{}", transform.name());
            state.extend(transform.init(params)?.into_iter().map(|spec| spec.prefixed(&prefix)));
        }
        Ok(state)
    }

    fn update(&self, ctx: &UpdateContext, updates: &[Value], state: &[Value]) -> Result<Update> {
        let mut updates = updates.to_vec();
        let mut new_state = Vec::with_capacity(state.len());
        let mut offset = 0;
        for transform in &self.transforms {
            let size = transform.init(ctx.specs)?.len();
            let own = state.get(offset..offset + size).ok_or_else(|| {
                crate::error::OptimError::Build(format!("chain: state too short for {}", transform.name()))
            })?;
            let result = transform.update(ctx, &updates, own)?;
            updates = result.updates;
            new_state.extend(result.state);
            offset += size;
        }
        Ok(Update { updates, state: new_state })
    }
}

//! A built optimizer: its transformation, the schedules it injects, and the fused update
//! (every parameter's clip, moments, decay, learning-rate scale and apply in one function,
//! with parameters and state donated).

use std::collections::BTreeMap;

use sirocco::hlo::{Builder, Function, TensorType, Value};
use sirocco::{DType, HostTensor};

use crate::combinators::{inject_hyperparams, HyperSource};
use crate::error::{OptimError, Result};
use crate::schedule::Schedule;
use crate::transform::{ParamSpec, StateInit, StateSpec, Transform, UpdateContext};

/// An optimizer ready to build updates.
#[derive(Clone, Debug)]
pub struct Optimizer {
    inner: Transform,
    schedules: Vec<(String, Schedule)>,
    runtime_hyperparameters: bool,
}

/// The result of [`Optimizer::apply`]: new parameters, new state, and reported metrics.
pub struct Applied {
    pub params: Vec<Value>,
    pub state: Vec<Value>,
    pub metrics: Vec<(String, Value)>,
    /// Whether each parameter's update can be one pass over memory (see
    /// `sirocco::hlo::is_single_pass`); false for Adafactor, whose update is scaled by its own
    /// RMS.
    pub single_pass: bool,
}

/// The fused update as a function, and how its inputs and outputs are laid out:
/// `(params, state, grads, runtime hyperparameters) -> (params, state, metrics)`, with
/// parameters and state donated to their outputs.
pub struct UpdateFunction {
    pub function: Function,
    pub params: Vec<ParamSpec>,
    pub state: Vec<StateSpec>,
    pub runtime_inputs: Vec<String>,
    pub metrics: Vec<String>,
    /// See [`Applied::single_pass`].
    pub single_pass: bool,
}

impl Optimizer {
    /// An optimizer from a bare transformation (no injected schedule).
    pub fn new(transform: Transform) -> Optimizer {
        Optimizer { inner: transform, schedules: Vec::new(), runtime_hyperparameters: false }
    }

    /// Injects hyperparameter `name` following `schedule` (read by transforms as
    /// `Hyper::injected(name)`).
    pub fn with_schedule(mut self, name: &str, schedule: Schedule) -> Optimizer {
        self.schedules.push((name.to_string(), schedule));
        self
    }

    /// Feeds the injected hyperparameters as inputs of the step instead of computing them in
    /// the graph: changing a schedule then never recompiles. The caller evaluates
    /// [`Optimizer::schedules`] on the host (see [`Optimizer::runtime_values`]).
    pub fn with_runtime_hyperparameters(mut self) -> Optimizer {
        self.runtime_hyperparameters = true;
        self
    }

    pub fn schedules(&self) -> &[(String, Schedule)] {
        &self.schedules
    }

    /// Names of the scalar inputs the step needs (runtime hyperparameters).
    pub fn runtime_inputs(&self) -> Vec<String> {
        if self.runtime_hyperparameters {
            self.schedules.iter().map(|(name, _)| name.clone()).collect()
        } else {
            Vec::new()
        }
    }

    /// Values of the runtime inputs for the update at 0-based `update_index` (the count
    /// before this update, as `inject_hyperparams` reads it).
    pub fn runtime_values(&self, update_index: i64) -> Vec<f32> {
        if !self.runtime_hyperparameters {
            return Vec::new();
        }
        self.schedules.iter().map(|(_, schedule)| schedule.at(update_index) as f32).collect()
    }

    /// The whole transformation (the inner one wrapped in `inject_hyperparams` when it has
    /// schedules).
    pub fn transform(&self) -> Transform {
        if self.schedules.is_empty() {
            return self.inner.clone();
        }
        let sources = self
            .schedules
            .iter()
            .map(|(name, schedule)| {
                let source = if self.runtime_hyperparameters {
                    HyperSource::Runtime
                } else {
                    HyperSource::Schedule(schedule.clone())
                };
                (name.clone(), source)
            })
            .collect();
        inject_hyperparams(self.inner.clone(), sources)
    }

    /// The optimizer state for `params`.
    pub fn state_specs(&self, params: &[ParamSpec]) -> Result<Vec<StateSpec>> {
        let specs = self.transform().init(params)?;
        let mut seen = std::collections::HashSet::new();
        for spec in &specs {
            if !seen.insert(spec.name.as_str()) {
                return Err(OptimError::Build(format!("two state tensors are named `{}`", spec.name)));
            }
        }
        Ok(specs)
    }

    /// The initial state on the host.
    pub fn initial_state(&self, specs: &[StateSpec], params: &[HostTensor]) -> Result<Vec<HostTensor>> {
        specs
            .iter()
            .map(|spec| match &spec.init {
                StateInit::Fill(value) => Ok(filled(&spec.ty, *value)),
                StateInit::Param(index) => params.get(*index).cloned().ok_or_else(|| {
                    OptimError::Build(format!("state `{}` copies missing parameter {index}", spec.name))
                }),
            })
            .collect()
    }

    /// The initial state built in the graph from parameter values (so a large state is
    /// created on the devices, not copied from the host).
    pub fn initial_state_values(
        &self,
        builder: &Builder,
        specs: &[StateSpec],
        params: &[Value],
    ) -> Result<Vec<Value>> {
        specs
            .iter()
            .map(|spec| match &spec.init {
                StateInit::Fill(value) => Ok(builder.full(&spec.ty, *value)),
                StateInit::Param(index) => params.get(*index).cloned().ok_or_else(|| {
                    OptimError::Build(format!("state `{}` copies missing parameter {index}", spec.name))
                }),
            })
            .collect()
    }

    /// Builds the update into the caller's graph: `p + u` for every parameter, the new state
    /// and the metrics the transforms reported (e.g. `grad_norm`, `learning_rate`).
    pub fn apply(&self, ctx: &UpdateContext, grads: &[Value], state: &[Value]) -> Result<Applied> {
        if grads.len() != ctx.params.len() {
            return Err(OptimError::Build(format!(
                "{} gradients for {} parameters",
                grads.len(),
                ctx.params.len()
            )));
        }
        for ((grad, param), spec) in grads.iter().zip(ctx.params).zip(ctx.specs) {
            if grad.ty() != param.ty() || param.ty() != &spec.ty {
                return Err(OptimError::Build(format!(
                    "parameter `{}`: spec {:?}, value {:?}, gradient {:?}",
                    spec.name,
                    spec.ty,
                    param.ty(),
                    grad.ty()
                )));
            }
        }
        let result = self.transform().update(ctx, grads, state)?;
        let mut outputs: Vec<Value> = ctx.params.iter().zip(&result.updates).map(|(p, u)| p + u).collect();
        outputs.extend(result.state);
        // Each new parameter and state tensor gets its own copy of the elementwise update, so
        // that XLA can fuse all of a parameter's writes into one pass (see
        // `unshare_elementwise`) — when the update can be one pass and the fusion that makes it
        // one is on: otherwise the copies would only be recomputed in separate loops.
        let single_pass = sirocco::hlo::is_single_pass(&outputs);
        let mut params = if single_pass && sirocco::pjrt::multi_output_fusion_wanted() {
            sirocco::hlo::unshare_elementwise(&outputs)
        } else {
            outputs
        };
        let state = params.split_off(ctx.params.len());
        let metrics = ctx.metrics.borrow().clone();
        if let Some(error) = ctx.builder.error() {
            return Err(error.into());
        }
        Ok(Applied { params, state, metrics, single_pass })
    }

    /// Inputs of a standalone update on `builder`: parameters, state, gradients and the
    /// runtime hyperparameters by name.
    fn standalone_inputs(
        &self,
        builder: &Builder,
        params: &[ParamSpec],
        state_specs: &[StateSpec],
    ) -> (Vec<Value>, Vec<Value>, Vec<Value>, BTreeMap<String, Value>) {
        let param_values =
            params.iter().map(|p| builder.parameter(format!("params/{}", p.name), p.ty.clone())).collect();
        let state_values = state_specs
            .iter()
            .map(|s| builder.parameter(format!("state/{}", s.name), s.ty.clone()))
            .collect();
        let grad_values =
            params.iter().map(|p| builder.parameter(format!("grads/{}", p.name), p.ty.clone())).collect();
        let runtime = self
            .runtime_inputs()
            .into_iter()
            .map(|name| (name.clone(), builder.parameter(name, TensorType::scalar(DType::F32))))
            .collect();
        (param_values, state_values, grad_values, runtime)
    }

    /// Whether the update of `params` can be one pass over memory ([`Applied::single_pass`]),
    /// found by building it (with a loss, for transforms that read one) without compiling: a
    /// caller decides from it, before opening a CPU plugin, whether XLA's multi-output fusion
    /// serves this update.
    pub fn single_pass(&self, params: &[ParamSpec]) -> Result<bool> {
        let state_specs = self.state_specs(params)?;
        let builder = Builder::new("single_pass");
        let (param_values, state_values, grad_values, runtime) =
            self.standalone_inputs(&builder, params, &state_specs);
        let loss = builder.parameter("loss", TensorType::scalar(DType::F32));
        let mut ctx = UpdateContext::new(&builder, &param_values, params, &runtime);
        ctx.loss = Some(&loss);
        Ok(self.apply(&ctx, &grad_values, &state_values)?.single_pass)
    }

    /// The fused update as a standalone function (for `optim replay` and benchmarks).
    pub fn update_function(&self, params: &[ParamSpec]) -> Result<UpdateFunction> {
        let state_specs = self.state_specs(params)?;
        let builder = Builder::new("optimizer_update");
        let (param_values, state_values, grad_values, runtime) =
            self.standalone_inputs(&builder, params, &state_specs);
        let runtime_inputs = self.runtime_inputs();
        let ctx = UpdateContext::new(&builder, &param_values, params, &runtime);
        let applied = self.apply(&ctx, &grad_values, &state_values)?;
        let mut outputs = applied.params;
        outputs.extend(applied.state);
        let metric_names: Vec<String> = applied.metrics.iter().map(|(name, _)| name.clone()).collect();
        let single_pass = applied.single_pass;
        outputs.extend(applied.metrics.iter().map(|(_, value)| value.convert(DType::F32)));
        let mut function = builder.build(&outputs)?;
        let donated = params.len() + state_specs.len();
        function.donate_matching(0..donated, 0..donated)?;
        Ok(UpdateFunction {
            function,
            params: params.to_vec(),
            state: state_specs,
            runtime_inputs,
            metrics: metric_names,
            single_pass,
        })
    }
}

fn filled(ty: &TensorType, value: f64) -> HostTensor {
    HostTensor::full(ty.dtype, &ty.dims, value).expect("a state type has non-negative dimensions")
}

//! The optax algebra in graph-builder form.
//!
//! A [`GradientTransformation`] is a pair of small functions, like optax's `(init, update)`:
//! `init` describes the state tensors it needs for a set of parameters, `update` builds the
//! ops that turn incoming updates (gradients, at first) and the current state into outgoing
//! updates and the next state. Updates follow optax's sign convention: the optimizer's final
//! updates are *added* to the parameters (`apply_updates`), so descent transforms end in a
//! negative scale.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use sirocco::hlo::{Builder, TensorType, Value};
use sirocco::DType;

use crate::error::{OptimError, Result};

/// A parameter as the optimizer sees it: its dotted path and its type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    pub name: String,
    pub ty: TensorType,
}

impl ParamSpec {
    pub fn new(name: impl Into<String>, dtype: DType, dims: &[i64]) -> Self {
        ParamSpec { name: name.into(), ty: TensorType::new(dtype, dims) }
    }
}

/// The initial value of a state tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum StateInit {
    /// Every element equal to this value (0 for moments, NaN for empty history slots).
    Fill(f64),
    /// A copy of the parameter with this index (e.g. a parameter average).
    Param(usize),
}

/// One state tensor: its name (unique within the optimizer), type and initial value.
#[derive(Clone, Debug, PartialEq)]
pub struct StateSpec {
    pub name: String,
    pub ty: TensorType,
    pub init: StateInit,
}

impl StateSpec {
    /// A step counter (i32 scalar, starting at 0), as optax keeps one per stateful transform.
    pub fn count() -> StateSpec {
        StateSpec { name: "count".into(), ty: TensorType::scalar(DType::I32), init: StateInit::Fill(0.0) }
    }

    /// One tensor per parameter named `{prefix}/{parameter}`, of the parameter's type, filled
    /// with `value`.
    pub fn per_param(prefix: &str, params: &[ParamSpec], value: f64) -> Vec<StateSpec> {
        params
            .iter()
            .map(|param| StateSpec {
                name: format!("{prefix}/{}", param.name),
                ty: param.ty.clone(),
                init: StateInit::Fill(value),
            })
            .collect()
    }

    /// A scalar f32 slot named `name` (hyperparameter values kept for logging).
    pub fn scalar(name: impl Into<String>, value: f64) -> StateSpec {
        StateSpec { name: name.into(), ty: TensorType::scalar(DType::F32), init: StateInit::Fill(value) }
    }

    /// The same spec under `prefix/`.
    pub fn prefixed(mut self, prefix: &str) -> StateSpec {
        self.name = format!("{prefix}/{}", self.name);
        self
    }
}

/// Everything an update can read besides updates and its own state.
pub struct UpdateContext<'a> {
    /// The builder of the step being built.
    pub builder: Builder,
    /// Current parameter values, in the order of `specs`.
    pub params: &'a [Value],
    pub specs: &'a [ParamSpec],
    /// Scalar hyperparameters provided by an enclosing `inject_hyperparams` (f32 scalars).
    pub hyperparameters: BTreeMap<String, Value>,
    /// Scalars fed to the step at run time (f32), by name.
    pub runtime: &'a BTreeMap<String, Value>,
    /// The loss of this step, for transforms that look at it (skip-bad-steps).
    pub loss: Option<&'a Value>,
    /// Scalar metrics reported by transforms (e.g. `grad_norm`), appended in order.
    pub metrics: std::cell::RefCell<Vec<(String, Value)>>,
}

impl<'a> UpdateContext<'a> {
    pub fn new(
        builder: &Builder,
        params: &'a [Value],
        specs: &'a [ParamSpec],
        runtime: &'a BTreeMap<String, Value>,
    ) -> Self {
        UpdateContext {
            builder: builder.clone(),
            params,
            specs,
            hyperparameters: BTreeMap::new(),
            runtime,
            loss: None,
            metrics: std::cell::RefCell::new(Vec::new()),
        }
    }

    /// The same context restricted to the parameters at `indices` (for `masked` and
    /// `multi_transform`).
    pub fn subset<'b>(&'b self, params: &'b [Value], specs: &'b [ParamSpec]) -> UpdateContext<'b> {
        UpdateContext {
            builder: self.builder.clone(),
            params,
            specs,
            hyperparameters: self.hyperparameters.clone(),
            runtime: self.runtime,
            loss: self.loss,
            metrics: std::cell::RefCell::new(Vec::new()),
        }
    }

    /// Reports a scalar metric (logged by the trainer).
    pub fn report(&self, name: impl Into<String>, value: Value) {
        self.metrics.borrow_mut().push((name.into(), value));
    }

    /// Takes the metrics a sub-context collected into this one.
    pub fn absorb(&self, other: UpdateContext<'_>) {
        self.metrics.borrow_mut().extend(other.metrics.into_inner());
    }

    /// The value of a hyperparameter as a scalar of `dtype`.
    pub fn hyper(&self, hyper: &Hyper, dtype: DType) -> Result<Value> {
        match hyper {
            Hyper::Constant(value) => Ok(self.builder.scalar_of(dtype, *value)),
            Hyper::Injected { name, scale } => {
                let value =
                    self.hyperparameters.get(name).or_else(|| self.runtime.get(name)).ok_or_else(|| {
                        OptimError::Build(format!(
                        "hyperparameter `{name}` is not injected: wrap the optimizer in inject_hyperparams"
                    ))
                    })?;
                let value = value.convert(dtype);
                Ok(if *scale == 1.0 { value } else { value * *scale })
            }
        }
    }
}

/// A scalar hyperparameter: a constant, or a value injected by `inject_hyperparams` (a
/// schedule evaluated in the graph, or a runtime input), times a constant.
#[derive(Clone, Debug, PartialEq)]
pub enum Hyper {
    Constant(f64),
    Injected { name: String, scale: f64 },
}

impl Hyper {
    /// The injected hyperparameter `name` (`learning_rate`, usually).
    pub fn injected(name: &str) -> Hyper {
        Hyper::Injected { name: name.to_string(), scale: 1.0 }
    }

    /// The injected hyperparameter `name` times `scale`.
    pub fn injected_scaled(name: &str, scale: f64) -> Hyper {
        Hyper::Injected { name: name.to_string(), scale }
    }
}

impl From<f64> for Hyper {
    fn from(value: f64) -> Self {
        Hyper::Constant(value)
    }
}

/// Outgoing updates and the next state.
pub struct Update {
    pub updates: Vec<Value>,
    pub state: Vec<Value>,
}

/// A gradient transformation: `init` describes its state, `update` builds its ops.
pub trait GradientTransformation: fmt::Debug + Send + Sync {
    /// A short name, used to prefix state names (`scale_by_adam`).
    fn name(&self) -> String;

    /// The state tensors this transform keeps for `params`.
    fn init(&self, params: &[ParamSpec]) -> Result<Vec<StateSpec>>;

    /// Builds the update. `updates` and `ctx.params` follow `ctx.specs`; `state` follows
    /// `init(ctx.specs)`.
    fn update(&self, ctx: &UpdateContext, updates: &[Value], state: &[Value]) -> Result<Update>;
}

/// Shared handle to a transformation.
pub type Transform = Arc<dyn GradientTransformation>;

/// The float type wide enough for reductions over `values`: f64 if any is f64, else f32.
pub fn accumulation_dtype(values: &[Value]) -> DType {
    if values.iter().any(|v| v.dtype() == DType::F64) {
        DType::F64
    } else {
        DType::F32
    }
}

/// The float type JAX promotes two float operands to: the wider one (f32 and f64 give f64,
/// bf16 and f32 give f32). What optax's accumulators with an `accumulator_dtype` compute in.
pub fn promoted_dtype(a: DType, b: DType) -> DType {
    if a.size_in_bytes() > b.size_in_bytes() {
        a
    } else {
        b
    }
}

/// Slices a large tensor is folded into before its squares are summed.
const FOLD: i64 = 16;

/// `sum(v * v)` in `dtype`.
///
/// On one device a large tensor is first folded: viewed as `FOLD` contiguous slices whose
/// squares are added elementwise, then summed. XLA:CPU reads the tensor once in one fused,
/// multi-threaded loop and writes a temporary of a sixteenth of its size (the few elements
/// past a multiple of `FOLD` are summed on their own), where a plain
/// `sum(v * v)` materializes every square first (12 bytes of traffic per element instead of
/// 4.5; 16 ms instead of 53 ms over 400 MB here). The sum is the same up to summation order.
/// Under a mesh the plain form keeps sharded tensors where they are.
pub fn sum_of_squares(value: &Value, dtype: DType) -> Value {
    let value = value.convert(dtype);
    let count = value.ty().element_count();
    if value.builder().mesh().is_some() || count < FOLD * 4096 {
        return value.square().sum();
    }
    let flat = value.reshape(&[count]);
    let width = count / FOLD;
    let folded = (0..FOLD)
        .map(|slice| flat.slice_axis(0, slice * width, (slice + 1) * width).square())
        .reduce(|sum, square| sum + square)
        .expect("FOLD > 0")
        .sum();
    if count % FOLD == 0 {
        folded
    } else {
        folded + flat.slice_axis(0, FOLD * width, count).square().sum()
    }
}

/// The L2 norm of all `values` together (optax's `global_norm`), as a scalar of
/// [`accumulation_dtype`].
pub fn global_norm(builder: &Builder, values: &[Value]) -> Value {
    let dtype = accumulation_dtype(values);
    let total = values
        .iter()
        .map(|v| sum_of_squares(v, dtype))
        .reduce(|sum, s| sum + s)
        .unwrap_or_else(|| builder.scalar_of(dtype, 0.0));
    total.sqrt()
}

/// `1 - decay^count` as a scalar of `dtype`, with `count` an i32 scalar (optax's bias
/// correction denominator). Computed in f64 for f64 moments (optax under `jax_enable_x64`)
/// and in f32 otherwise (optax's default; narrower types would round `decay^t` to 1). In f32,
/// `1 - 0.999^1` is already off by ~3e-5 relative, too coarse for f64 parameters.
pub fn bias_correction_denominator(decay: f64, count: &Value, dtype: DType) -> Value {
    let compute = if dtype == DType::F64 { DType::F64 } else { DType::F32 };
    let decay = count.builder().scalar_of(compute, decay);
    let power = decay.pow(&count.convert(compute));
    (1.0 - power).convert(dtype)
}

/// `count + 1`, saturating at i32::MAX (optax's `safe_increment`).
pub fn increment(count: &Value) -> Value {
    let limit = count.scalar_like(f64::from(i32::MAX));
    count.lt(&limit).select(&(count + 1.0), &limit)
}

/// Checks that `state` has the length `init` promised; a bug otherwise.
pub(crate) fn expect_state(name: &str, state: &[Value], expected: usize) -> Result<()> {
    if state.len() == expected {
        Ok(())
    } else {
        Err(OptimError::Build(format!("{name}: expected {expected} state tensors, got {}", state.len())))
    }
}

//! Helpers of the optimizer tests: a CPU client, a compiled update function stepped from the
//! host, seeded random numbers, host tensors and tolerance checks. The f64 host reference of
//! the optimizers lives in [`reference`].
#![allow(dead_code)]

pub mod optax_golden;
pub mod reference;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use sirocco::hlo::Function;
use sirocco::pjrt::{Client, ClientOptions, Plugin};
use sirocco::program::Program;
use sirocco::{DType, HostTensor};
use xla_optim::{Optimizer, ParamSpec, StateSpec, UpdateFunction};

pub use reference::Tensor;

/// One CPU client per test binary.
pub fn client() -> &'static Client {
    static CLIENT: OnceLock<Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let plugin = Plugin::load("cpu").unwrap_or_else(|error| panic!("{error}"));
        Client::new(&plugin, &ClientOptions::default()).unwrap_or_else(|error| panic!("{error}"))
    })
}

/// Compiles `function`; panics with the emitted text when XLA refuses it.
pub fn compile(function: &Function) -> Program {
    Program::compile(client(), function)
        .unwrap_or_else(|error| panic!("{error}\n{}", function.to_stablehlo()))
}

/// Runs a compiled program on host `inputs`.
pub fn execute(program: &Program, inputs: &[HostTensor]) -> Vec<HostTensor> {
    program.run(inputs).unwrap_or_else(|error| panic!("{error}"))
}

/// SplitMix64: small, seedable, good enough for test data.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded from `SEED` or the clock; the seed is printed so that a failure can
    /// be replayed with `SEED=...`.
    pub fn from_env(test: &str) -> Rng {
        let seed = std::env::var("SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        });
        eprintln!("{test}: SEED={seed}");
        Rng(seed)
    }

    pub fn seeded(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [low, high).
    pub fn uniform(&mut self, low: f64, high: f64) -> f64 {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        low + (high - low) * unit
    }

    /// A tensor of `dims` with elements uniform in [low, high).
    pub fn tensor(&mut self, dims: &[i64], low: f64, high: f64) -> Tensor {
        let count = dims.iter().product::<i64>() as usize;
        Tensor::new(dims, (0..count).map(|_| self.uniform(low, high)).collect())
    }
}

/// `values` as a host tensor of `dtype` (rounded to nearest).
pub fn host(dtype: DType, dims: &[i64], values: &[f64]) -> HostTensor {
    let bytes = values.iter().flat_map(|&value| dtype.encode_f64(value)).collect();
    HostTensor::from_bytes(dtype, dims, bytes).unwrap()
}

pub fn host_tensor(dtype: DType, tensor: &Tensor) -> HostTensor {
    host(dtype, &tensor.dims, &tensor.data)
}

pub fn from_host(tensor: &HostTensor) -> Tensor {
    Tensor::new(tensor.dims(), tensor.to_f64_vec())
}

/// Rounds every element to `dtype` (so that host and device start from the same values).
pub fn rounded(tensor: &Tensor, dtype: DType) -> Tensor {
    from_host(&host_tensor(dtype, tensor))
}

/// The error of `actual` against `expected`: `|a - e| / max(|e|, floor)`, the largest over
/// all elements (two NaNs count as equal, one NaN as infinitely wrong).
pub fn relative_error(actual: &[f64], expected: &[f64], floor: f64) -> f64 {
    assert_eq!(actual.len(), expected.len(), "lengths differ");
    actual
        .iter()
        .zip(expected)
        .map(|(&a, &e)| {
            if a == e || (a.is_nan() && e.is_nan()) {
                0.0
            } else {
                let error = (a - e).abs() / e.abs().max(floor);
                if error.is_nan() {
                    f64::INFINITY
                } else {
                    error
                }
            }
        })
        .fold(0.0, f64::max)
}

/// Asserts `actual` within `tolerance` of `expected` (see [`relative_error`]); returns the
/// error.
#[track_caller]
pub fn assert_close(actual: &[f64], expected: &[f64], tolerance: f64, floor: f64, what: &str) -> f64 {
    let error = relative_error(actual, expected, floor);
    assert!(
        error <= tolerance,
        "{what}: relative error {error:e} over {tolerance:e}\n  got      {actual:?}\n  expected {expected:?}"
    );
    error
}

/// A named parameter with its initial value.
#[derive(Clone)]
pub struct Param {
    pub name: &'static str,
    pub value: Tensor,
}

/// The parameters of the [`optax_golden`] runs: `mlp.weight` (`w`, decayed by the default
/// mask) and `mlp.bias` (`b`, not decayed).
pub fn golden_params() -> Vec<Param> {
    let (w, b) = optax_golden::initial();
    vec![
        Param { name: "mlp.weight", value: Tensor::new(&[4, 3], w) },
        Param { name: "mlp.bias", value: Tensor::new(&[3], b) },
    ]
}

/// The gradients of step `k` of the [`optax_golden`] runs, times `scale`.
pub fn golden_gradients(k: usize, scale: f64) -> Vec<Tensor> {
    let (w, b) = optax_golden::gradients(k);
    vec![Tensor::new(&[4, 3], w).map(|x| x * scale), Tensor::new(&[3], b).map(|x| x * scale)]
}

pub fn specs(params: &[Param], dtype: DType) -> Vec<ParamSpec> {
    params.iter().map(|p| ParamSpec::new(p.name, dtype, &p.value.dims)).collect()
}

/// An optimizer's update function, compiled once, with its parameters and state on the host.
pub struct Stepper {
    pub update: UpdateFunction,
    program: Program,
    pub dtype: DType,
    pub params: Vec<HostTensor>,
    pub state: Vec<HostTensor>,
}

/// What one step reported.
pub struct Reported {
    pub metrics: BTreeMap<String, f64>,
}

impl Reported {
    #[track_caller]
    pub fn metric(&self, name: &str) -> f64 {
        *self.metrics.get(name).unwrap_or_else(|| panic!("no metric `{name}` in {:?}", self.metrics))
    }
}

impl Stepper {
    /// Builds and compiles `optimizer`'s update for `params` in `dtype`.
    pub fn new(optimizer: &Optimizer, params: &[Param], dtype: DType) -> Stepper {
        let update =
            optimizer.update_function(&specs(params, dtype)).unwrap_or_else(|error| panic!("{error}"));
        let program = compile(&update.function);
        let params: Vec<HostTensor> = params.iter().map(|p| host_tensor(dtype, &p.value)).collect();
        let state = optimizer.initial_state(&update.state, &params).unwrap();
        Stepper { update, program, dtype, params, state }
    }

    /// One update with `grads` (and the runtime hyperparameters, in `update.runtime_inputs`
    /// order).
    pub fn step(&mut self, grads: &[Tensor], runtime: &[f32]) -> Reported {
        let mut inputs = self.params.clone();
        inputs.extend(self.state.iter().cloned());
        inputs.extend(grads.iter().map(|g| host_tensor(self.dtype, g)));
        inputs.extend(runtime.iter().map(|&value| HostTensor::scalar(value)));
        let mut outputs = execute(&self.program, &inputs);
        let metrics = outputs.split_off(self.params.len() + self.state.len());
        self.state = outputs.split_off(self.params.len());
        self.params = outputs;
        let metrics =
            self.update.metrics.iter().cloned().zip(metrics.iter().map(|m| m.to_f64_vec()[0])).collect();
        Reported { metrics }
    }

    pub fn param(&self, index: usize) -> Tensor {
        from_host(&self.params[index])
    }

    /// The state tensor named `name`.
    #[track_caller]
    pub fn state(&self, name: &str) -> Tensor {
        let index = state_index(&self.update.state, name);
        from_host(&self.state[index])
    }

    pub fn state_names(&self) -> Vec<String> {
        self.update.state.iter().map(|spec| spec.name.clone()).collect()
    }
}

#[track_caller]
pub fn state_index(specs: &[StateSpec], name: &str) -> usize {
    specs.iter().position(|spec| spec.name == name).unwrap_or_else(|| {
        let names: Vec<&str> = specs.iter().map(|spec| spec.name.as_str()).collect();
        panic!("no state `{name}` in {names:?}")
    })
}

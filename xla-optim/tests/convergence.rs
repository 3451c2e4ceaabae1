//! As optax's own tests (`alias_test.py`): each built-in type minimizes a quadratic and the
//! 2-D Rosenbrock function within a fixed number of steps. The loss and its gradient are
//! built in the graph (`sirocco::hlo::grad`) and compiled with the optimizer's update into one
//! step function, looped on the host.

mod support;

use std::collections::BTreeMap;

use sirocco::hlo::{grad, Builder, Value};
use sirocco::program::Program;
use sirocco::{DType, HostTensor};
use xla_optim::{Optimizer, OptimizerConfig, ParamSpec, StateSpec, UpdateContext};

/// A problem: its parameter's start, the loss, and what "converged" means.
struct Problem {
    name: &'static str,
    start: Vec<f64>,
    loss: fn(&Value) -> Value,
    steps: i64,
    /// The final loss must be below this (and far below the initial loss).
    threshold: f64,
}

/// optax's parabola: `sum((x - [1, -1, 1])^2)` from `[-1, 10, 1]` (initial loss 125).
fn quadratic() -> Problem {
    Problem {
        name: "quadratic",
        start: vec![-1.0, 10.0, 1.0],
        loss: |x| {
            let target = x.builder().constant(&HostTensor::from_slice(&[3], &[1.0f32, -1.0, 1.0]).unwrap());
            (x - &target).square().sum()
        },
        steps: 300,
        threshold: 1e-4,
    }
}

/// optax's Rosenbrock: `(1 - x0)^2 + 100 (x1 - x0^2)^2` from `[0, 0]` (initial loss 1),
/// minimum 0 at `[1, 1]`.
fn rosenbrock() -> Problem {
    Problem {
        name: "rosenbrock",
        start: vec![0.0, 0.0],
        loss: |x| {
            let x0 = x.slice_axis(0, 0, 1).reshape(&[]);
            let x1 = x.slice_axis(0, 1, 2).reshape(&[]);
            (1.0 - &x0).square() + (x1 - x0.square()).square() * 100.0
        },
        steps: 2000,
        threshold: 1e-4,
    }
}

/// The step `(x, state) -> (x, state, loss before the update)`, compiled once.
struct Step {
    program: Program,
    state: Vec<StateSpec>,
}

impl Step {
    fn new(optimizer: &Optimizer, problem: &Problem) -> Step {
        let specs = [ParamSpec::new("x", DType::F32, &[problem.start.len() as i64])];
        let state = optimizer.state_specs(&specs).unwrap();
        let builder = Builder::new(format!("{}_step", problem.name));
        let x = builder.parameter("x", specs[0].ty.clone());
        let state_values: Vec<Value> =
            state.iter().map(|s| builder.parameter(s.name.clone(), s.ty.clone())).collect();
        let loss = (problem.loss)(&x);
        let params = [x];
        let gradient = grad(&loss, &params).unwrap();
        let runtime = BTreeMap::new();
        let ctx = UpdateContext::new(&builder, &params, &specs, &runtime);
        let applied =
            optimizer.apply(&ctx, &gradient, &state_values).unwrap_or_else(|error| panic!("{error}"));
        let mut outputs = applied.params;
        outputs.extend(applied.state);
        outputs.push(loss);
        Step { program: support::compile(&builder.build(&outputs).unwrap()), state }
    }
}

/// Runs `yaml`'s optimizer on `problem`; returns (initial loss, final loss).
fn minimize(yaml: &str, problem: &Problem) -> (f64, f64) {
    let config = OptimizerConfig::from_yaml_str(yaml, "optimizer").unwrap_or_else(|error| panic!("{error}"));
    let optimizer = config.build(problem.steps as u64, "optimizer").unwrap_or_else(|error| panic!("{error}"));
    let step = Step::new(&optimizer, problem);
    let dims = [problem.start.len() as i64];
    let mut x = support::host(DType::F32, &dims, &problem.start);
    let mut state = optimizer.initial_state(&step.state, std::slice::from_ref(&x)).unwrap();
    let mut initial = None;
    for _ in 0..problem.steps {
        let mut inputs = vec![x];
        inputs.append(&mut state);
        let mut outputs = support::execute(&step.program, &inputs);
        let loss = outputs.pop().unwrap().to_f64_vec()[0];
        initial.get_or_insert(loss);
        x = outputs.remove(0);
        state = outputs;
    }
    let mut inputs = vec![x];
    inputs.append(&mut state);
    let final_loss = support::execute(&step.program, &inputs).pop().unwrap().to_f64_vec()[0];
    (initial.unwrap(), final_loss)
}

/// Minimizes `problem` with the built-in type `name` configured by `fields`, on top of no
/// weight decay (which would move the minimum) and a cosine decay to 0 without warmup.
fn converges(name: &str, problem: Problem, fields: &str) {
    let yaml = format!("type: {name}\nweight_decay: 0\nwarmup: 0\nmin_lr_ratio: 0\n{fields}");
    let (initial, last) = minimize(&yaml, &problem);
    eprintln!("{name} on {}: loss {initial:e} -> {last:e} in {} steps", problem.name, problem.steps);
    assert!(
        last < problem.threshold && last < initial * 1e-2,
        "{name} on {}: loss {initial:e} -> {last:e}, not below {:e}",
        problem.name,
        problem.threshold
    );
}

#[test]
fn sgd() {
    converges("sgd", quadratic(), "learning_rate: 0.02\nmomentum: 0.9\nmax_grad_norm: null\n");
    converges("sgd", rosenbrock(), "learning_rate: 0.002\nmomentum: 0.9\nmax_grad_norm: null\n");
}

#[test]
fn adam() {
    // Clipped at the default max_grad_norm of 1: Adam's steps do not depend on the scale.
    converges("adam", quadratic(), "learning_rate: 0.5\n");
    converges("adam", rosenbrock(), "learning_rate: 0.05\nmax_grad_norm: null\n");
}

#[test]
fn adamax() {
    converges("adamax", quadratic(), "learning_rate: 0.5\nmax_grad_norm: null\n");
    converges("adamax", rosenbrock(), "learning_rate: 0.05\nmax_grad_norm: null\n");
}

#[test]
fn lion() {
    converges("lion", quadratic(), "learning_rate: 0.1\nmax_grad_norm: null\n");
    converges("lion", rosenbrock(), "learning_rate: 0.01\nmax_grad_norm: null\n");
}

#[test]
fn adafactor() {
    converges("adafactor", quadratic(), "learning_rate: 0.5\nmax_grad_norm: null\n");
    converges("adafactor", rosenbrock(), "learning_rate: 0.1\nbeta1: 0.9\nmax_grad_norm: null\n");
}

#[test]
fn rmsprop() {
    converges("rmsprop", quadratic(), "learning_rate: 0.3\nmax_grad_norm: null\n");
    converges("rmsprop", rosenbrock(), "learning_rate: 0.001\nmomentum: 0.9\nmax_grad_norm: null\n");
}

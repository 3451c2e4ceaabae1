//! The combinators, compiled, against the f64 host reference and against each other: masked,
//! multi_transform, inject_hyperparams (in-graph schedule vs runtime inputs),
//! apply_if_finite, skip_bad_steps, multi_steps and parameter_ema.

mod support;

use std::collections::BTreeMap;

use sirocco::hlo::{Builder, Value};
use sirocco::program::Program;
use sirocco::{DType, HostTensor};
use support::reference::{self, Rate, Scale};
use support::{
    assert_close, from_host, golden_gradients, golden_params, host_tensor, optax_golden, Param, Rng, Stepper,
    Tensor,
};
use xla_optim::combinators::{
    apply_if_finite, chain, masked, multi_steps, multi_transform, parameter_ema, skip_bad_steps, Mask,
    MultiSteps,
};
use xla_optim::transforms::{scale, scale_by_adam, trace};
use xla_optim::{Optimizer, OptimizerConfig, ParamSpec, StateSpec, Transform, UpdateContext};

/// f64 transforms against the f64 reference: only rounding differs.
const TOLERANCE: f64 = 1e-12;

fn parameters(rng: &mut Rng) -> Vec<Param> {
    vec![
        Param { name: "a.weight", value: rng.tensor(&[3, 2], -1.0, 1.0) },
        Param { name: "b.bias", value: rng.tensor(&[2], -1.0, 1.0) },
        Param { name: "c.weight", value: rng.tensor(&[4], -1.0, 1.0) },
    ]
}

fn names(params: &[Param]) -> Vec<String> {
    params.iter().map(|p| p.name.to_string()).collect()
}

fn gradients(rng: &mut Rng, params: &[Param], scale: f64) -> Vec<Tensor> {
    params.iter().map(|p| rng.tensor(&p.value.dims, -scale, scale)).collect()
}

fn values(params: &[Param]) -> Vec<Tensor> {
    params.iter().map(|p| p.value.clone()).collect()
}

/// `scale_by_adam(0.9, 0.99, 1e-8)` then `scale(-0.1)`.
fn adam() -> Transform {
    chain(vec![scale_by_adam(0.9, 0.99, 1e-8, false), scale(-0.1)])
}

fn adam_reference() -> Box<dyn reference::Transform> {
    reference::chain(vec![
        reference::scale_by_adam(0.9, 0.99, 1e-8, false),
        Box::new(Scale(Rate::Constant(-0.1))),
    ])
}

fn is_weight(name: &str) -> bool {
    name.ends_with("weight")
}

#[track_caller]
fn assert_params(stepper: &Stepper, expected: &[Tensor], what: &str) {
    for (index, value) in expected.iter().enumerate() {
        let name = &stepper.update.params[index].name;
        assert_close(&stepper.param(index).data, &value.data, TOLERANCE, 1.0, &format!("{what}: {name}"));
    }
}

#[test]
fn masked_updates_only_the_selected_parameters() {
    let mut rng = Rng::from_env("masked");
    let params = parameters(&mut rng);
    let optimizer = Optimizer::new(masked(adam(), Mask::new("weights", |p: &ParamSpec| is_weight(&p.name))));
    let mut stepper = Stepper::new(&optimizer, &params, DType::F64);
    // State only for the masked parameters.
    let state = stepper.state_names();
    assert_eq!(state.len(), 1 + 2 * 2, "{state:?}");
    assert!(state.iter().all(|name| !name.contains("b.bias")), "{state:?}");
    let mut reference = reference::Optimizer::unscheduled(
        reference::masked(adam_reference(), is_weight),
        &["a.weight", "b.bias", "c.weight"],
    );
    let mut expected = values(&params);
    for step in 0..10 {
        let grads = gradients(&mut rng, &params, 1.0);
        stepper.step(&grads, &[]);
        reference.step(&mut expected, &grads, 0.0);
        assert_params(&stepper, &expected, &format!("step {step}"));
    }
    // The bias's updates passed through: it moved by the sum of its gradients.
    assert_ne!(stepper.param(1), params[1].value);
}

#[test]
fn multi_transform_equals_each_optimizer_on_its_subset() {
    let mut rng = Rng::from_env("multi_transform");
    let params = parameters(&mut rng);
    let momentum = || chain(vec![trace(0.9, true), scale(-0.05)]);
    let label = |p: &ParamSpec| if is_weight(&p.name) { "adam".to_string() } else { "momentum".to_string() };
    let both = Optimizer::new(multi_transform(
        vec![("adam".into(), adam()), ("momentum".into(), momentum())],
        label,
    ));
    let mut stepper = Stepper::new(&both, &params, DType::F64);
    let (weights, others): (Vec<Param>, Vec<Param>) = params.iter().cloned().partition(|p| is_weight(p.name));
    let mut adam_alone = Stepper::new(&Optimizer::new(adam()), &weights, DType::F64);
    let mut momentum_alone = Stepper::new(&Optimizer::new(momentum()), &others, DType::F64);
    for step in 0..10 {
        // In parameter order: a.weight, b.bias, c.weight.
        let grads = gradients(&mut rng, &params, 1.0);
        stepper.step(&grads, &[]);
        adam_alone.step(&[grads[0].clone(), grads[2].clone()], &[]);
        momentum_alone.step(&[grads[1].clone()], &[]);
        let expected = [adam_alone.param(0), momentum_alone.param(0), adam_alone.param(1)];
        assert_params(&stepper, &expected, &format!("step {step}"));
    }
    for name in adam_alone.state_names() {
        assert_eq!(stepper.state(&format!("adam/{name}")), adam_alone.state(&name), "{name}");
    }
    for name in momentum_alone.state_names() {
        assert_eq!(stepper.state(&format!("momentum/{name}")), momentum_alone.state(&name), "{name}");
    }
}

/// Runs `yaml`'s optimizer with its schedule in the graph and with the schedule fed at run
/// time side by side; returns how far apart their trajectories end (largest relative error).
fn in_graph_against_runtime(test: &str, yaml: &str, steps: i64) -> f64 {
    let mut rng = Rng::from_env(test);
    let params = parameters(&mut rng);
    let config = OptimizerConfig::from_yaml_str(yaml, "optimizer").unwrap();
    let in_graph = config.build(steps as u64, "optimizer").unwrap();
    let runtime = in_graph.clone().with_runtime_hyperparameters();
    assert!(in_graph.runtime_inputs().is_empty());
    assert_eq!(runtime.runtime_inputs(), ["learning_rate"]);
    let mut scheduled = Stepper::new(&in_graph, &params, DType::F64);
    let mut fed = Stepper::new(&runtime, &params, DType::F64);
    let schedule = in_graph.schedules()[0].1.clone();
    // Before the first update the state holds schedule(0).
    assert_eq!(scheduled.state("hyperparams/learning_rate").data, [schedule.at(0) as f32 as f64]);
    let mut max_difference = 0.0f64;
    for step in 0..steps {
        let grads = gradients(&mut rng, &params, 0.2);
        let values = runtime.runtime_values(step);
        let from_graph = scheduled.step(&grads, &[]).metric("learning_rate");
        let from_host = fed.step(&grads, &values).metric("learning_rate");
        let at = |what: &str| format!("{test}: step {step}, {what}");
        // The value used by this step (the schedule at the pre-increment count) is the one
        // logged and the one kept in the state.
        assert_eq!(from_host, f64::from(values[0]), "{}", at("fed"));
        assert_eq!(scheduled.state("hyperparams/learning_rate").data, [from_graph], "{}", at("state"));
        assert_eq!(fed.state("hyperparams/learning_rate").data, [from_host], "{}", at("state"));
        assert_close(&[from_graph], &[schedule.at(step)], 1e-6, 1e-9, &at("learning rate in the graph"));
        assert_close(&[from_host], &[schedule.at(step)], 1e-7, 1e-9, &at("learning rate fed"));
        for index in 0..params.len() {
            let error = support::relative_error(&scheduled.param(index).data, &fed.param(index).data, 1.0);
            max_difference = max_difference.max(error);
        }
    }
    eprintln!("{test}: in-graph and runtime trajectories differ by at most {max_difference:e}");
    max_difference
}

/// A schedule exact in f32 (a linear warmup to 0.5 over 8 steps): identical trajectories.
#[test]
fn injected_and_runtime_hyperparameters_are_identical() {
    let yaml = "type: adam\nlearning_rate: 0.5\nwarmup: 8\nlr_schedule: constant\n";
    assert_eq!(in_graph_against_runtime("inject_exact", yaml, 16), 0.0);
}

/// Cosine cycles: the graph's f32 arithmetic and the host's f64 value rounded to f32 differ
/// by a few ulps (`1 + cos` loses bits near the end of a decay), and so do the trajectories.
#[test]
fn injected_and_runtime_hyperparameters_agree() {
    let yaml = "type: adam\nlearning_rate: 0.01\nwarmup: 5\ncycles: 2\nrewarmup: 0.2\n";
    let difference = in_graph_against_runtime("inject_cosine", yaml, 30);
    assert!(difference < 1e-7, "trajectories differ by {difference:e}");
}

#[test]
fn apply_if_finite_skips_non_finite_steps_then_gives_up() {
    let mut rng = Rng::from_env("apply_if_finite");
    let params = parameters(&mut rng);
    let optimizer = Optimizer::new(apply_if_finite(adam(), 2));
    let mut stepper = Stepper::new(&optimizer, &params, DType::F64);
    let inner: Vec<String> =
        stepper.state_names().into_iter().filter(|name| name.starts_with("inner/")).collect();
    assert!(!inner.is_empty());
    let mut reference = reference::ApplyIfFinite {
        inner: adam_reference(),
        max_consecutive_errors: 2,
        notfinite_count: 0,
        total_notfinite: 0,
    };
    let names = names(&params);
    let mut expected = values(&params);
    // (poison, skipped, notfinite_count, total_notfinite): the third bad step in a row is
    // more than max_consecutive_errors = 2, so it is applied.
    let plan = [
        (None, false, 0, 0),
        (Some(f64::NAN), true, 1, 1),
        (None, false, 0, 1),
        (Some(f64::INFINITY), true, 1, 2),
        (Some(f64::NAN), true, 2, 3),
        (Some(f64::NAN), false, 3, 4),
    ];
    for (step, (poison, skipped, notfinite, total)) in plan.into_iter().enumerate() {
        let mut grads = gradients(&mut rng, &params, 1.0);
        if let Some(value) = poison {
            grads[1].data[0] = value;
        }
        let (params_before, inner_before) =
            (stepper.params.clone(), inner.iter().map(|n| stepper.state(n)).collect::<Vec<_>>());
        let reported = stepper.step(&grads, &[]);
        reference::apply(&mut reference, &names, &mut expected, &grads, 0.0, 0.0);
        let at = format!("step {step}");
        assert_eq!(reported.metric("skipped_nonfinite"), f64::from(u8::from(skipped)), "{at}");
        assert_eq!(stepper.state("notfinite_count").data, [f64::from(notfinite)], "{at}");
        assert_eq!(stepper.state("total_notfinite").data, [f64::from(total)], "{at}");
        assert_eq!(stepper.state("last_finite").data, [f64::from(u8::from(poison.is_none()))], "{at}");
        assert_eq!((reference.notfinite_count, reference.total_notfinite), (notfinite, total), "{at}");
        if skipped {
            // Zero updates, inner state as it was.
            assert_eq!(stepper.params, params_before, "{at}");
            for (name, before) in inner.iter().zip(&inner_before) {
                assert_eq!(&stepper.state(name), before, "{at}: {name}");
            }
        }
        assert_params(&stepper, &expected, &at);
    }
    assert!(stepper.param(1).data[0].is_nan(), "the last step gave up and applied the NaN");
}

/// A step `(params, state, grads, loss) -> (params, state, metrics)` built with
/// `Optimizer::apply` and the loss in the update context.
struct LossStep {
    program: Program,
    state: Vec<StateSpec>,
    metrics: Vec<String>,
}

impl LossStep {
    fn new(optimizer: &Optimizer, specs: &[ParamSpec]) -> LossStep {
        let state = optimizer.state_specs(specs).unwrap();
        let builder = Builder::new("step_with_loss");
        let params: Vec<Value> =
            specs.iter().map(|p| builder.parameter(format!("params/{}", p.name), p.ty.clone())).collect();
        let state_values: Vec<Value> =
            state.iter().map(|s| builder.parameter(s.name.clone(), s.ty.clone())).collect();
        let grads: Vec<Value> =
            specs.iter().map(|p| builder.parameter(format!("grads/{}", p.name), p.ty.clone())).collect();
        let loss = builder.param("loss", DType::F32, &[]);
        let runtime = BTreeMap::new();
        let mut ctx = UpdateContext::new(&builder, &params, specs, &runtime);
        ctx.loss = Some(&loss);
        let applied = optimizer.apply(&ctx, &grads, &state_values).unwrap_or_else(|error| panic!("{error}"));
        let mut outputs = applied.params;
        outputs.extend(applied.state);
        outputs.extend(applied.metrics.iter().map(|(_, value)| value.convert(DType::F32)));
        let metrics = applied.metrics.iter().map(|(name, _)| name.clone()).collect();
        LossStep { program: support::compile(&builder.build(&outputs).unwrap()), state, metrics }
    }

    /// Runs a step; updates `params` and `state` in place, returns the metrics.
    fn run(
        &self,
        params: &mut Vec<HostTensor>,
        state: &mut Vec<HostTensor>,
        grads: &[Tensor],
        loss: f32,
    ) -> BTreeMap<String, f64> {
        let mut inputs = params.clone();
        inputs.extend(state.iter().cloned());
        inputs.extend(grads.iter().map(|g| host_tensor(DType::F64, g)));
        inputs.push(HostTensor::scalar(loss));
        let mut outputs = support::execute(&self.program, &inputs);
        let metrics = outputs.split_off(params.len() + state.len());
        *state = outputs.split_off(params.len());
        *params = outputs;
        self.metrics.iter().cloned().zip(metrics.iter().map(|m| m.to_f64_vec()[0])).collect()
    }
}

#[test]
fn skip_bad_steps_skips_spikes_and_keeps_the_inner_state() {
    let mut rng = Rng::from_env("skip_bad_steps");
    let params = parameters(&mut rng);
    let specs = support::specs(&params, DType::F64);
    let optimizer = Optimizer::new(skip_bad_steps(adam(), 8, 6.0));
    let step = LossStep::new(&optimizer, &specs);
    let mut device_params: Vec<HostTensor> =
        params.iter().map(|p| host_tensor(DType::F64, &p.value)).collect();
    let mut state = optimizer.initial_state(&step.state, &device_params).unwrap();
    let inner: Vec<usize> =
        (0..step.state.len()).filter(|&i| step.state[i].name.starts_with("inner/")).collect();
    let mut reference = reference::skip_bad_steps(adam_reference(), 8, 6.0);
    let names = names(&params);
    let mut expected = values(&params);
    // Step 2 spikes before the history holds max(2, 8 / 2) = 4 points: not skipped. Its loss
    // leaves the 9-entry history at step 11. Step 14 spikes the loss, step 16 the gradients.
    for index in 0..18 {
        let spike_loss = index == 2 || index == 14;
        let loss = if spike_loss { 50.0 } else { 2.0 + rng.uniform(-0.01, 0.01) as f32 };
        let grads = gradients(&mut rng, &params, if index == 16 { 100.0 } else { 1.0 });
        let (params_before, inner_before) =
            (device_params.clone(), inner.iter().map(|&i| state[i].clone()).collect::<Vec<_>>());
        let metrics = step.run(&mut device_params, &mut state, &grads, loss);
        reference::apply(&mut reference, &names, &mut expected, &grads, 0.0, f64::from(loss));
        let skipped = metrics["skipped_spike"] == 1.0;
        let at = format!("step {index}");
        // Levanter's decision; a normal step may be skipped too when the few points in the
        // history happen to have a tiny spread.
        assert_eq!(skipped, reference.skipped, "{at}: skipped, against the reference");
        if index == 2 {
            assert!(!skipped, "{at}: the history is too short to skip");
        }
        if index == 14 || index == 16 {
            assert!(skipped, "{at}: the spike was applied");
        }
        if skipped {
            assert_eq!(device_params, params_before, "{at}: parameters moved");
            for (&i, before) in inner.iter().zip(&inner_before) {
                assert_eq!(&state[i], before, "{at}: {} changed", step.state[i].name);
            }
        } else {
            assert_ne!(device_params, params_before, "{at}: parameters did not move");
        }
        for (index, value) in expected.iter().enumerate() {
            assert_close(
                &from_host(&device_params[index]).data,
                &value.data,
                TOLERANCE,
                1.0,
                &format!("{at}: {}", names[index]),
            );
        }
    }
}

/// Around a built-in optimizer (clipping, Adam, masked decay, scheduled learning rate): its
/// metrics are computed inside the k-th call's branch (regression: they escaped it and the
/// update did not build).
#[test]
fn multi_steps_applies_the_mean_of_every_three_gradients() {
    let mut rng = Rng::from_env("multi_steps");
    let params = parameters(&mut rng);
    let yaml = "type: adam\nlearning_rate: 0.05\nwarmup: 2\nmax_grad_norm: 0.5\n";
    let adam = OptimizerConfig::from_yaml_str(yaml, "optimizer").unwrap().build(3, "optimizer").unwrap();
    // An f64 accumulator, so that the mean is the host's to rounding (the default f32 one,
    // optax's, is checked against optax below).
    let accumulate = MultiSteps { inner: adam.transform(), every_k: 3, accumulator_dtype: DType::F64 };
    let mut accumulating =
        Stepper::new(&Optimizer::new(std::sync::Arc::new(accumulate)), &params, DType::F64);
    let mut plain = Stepper::new(&adam, &params, DType::F64);
    let mut window = Vec::new();
    for call in 0..9 {
        let grads = gradients(&mut rng, &params, 1.0);
        let before = accumulating.params.clone();
        let reported = accumulating.step(&grads, &[]);
        window.push(grads);
        let at = format!("call {call}");
        if window.len() < 3 {
            assert_eq!(accumulating.params, before, "{at}: intermediate calls output zeros");
            assert_eq!(accumulating.state("mini_step").data, [window.len() as f64], "{at}");
            assert_eq!(reported.metrics.values().copied().collect::<Vec<_>>(), [0.0, 0.0], "{at}");
            continue;
        }
        let mean: Vec<Tensor> = (0..params.len())
            .map(|i| window[0][i].zip(&window[1][i], |a, b| a + b).zip(&window[2][i], |s, c| (s + c) / 3.0))
            .collect();
        let expected_metrics = plain.step(&mean, &[]).metrics;
        window.clear();
        let expected: Vec<Tensor> = (0..params.len()).map(|i| plain.param(i)).collect();
        assert_params(&accumulating, &expected, &at);
        for (name, value) in &expected_metrics {
            assert_close(&[reported.metric(name)], &[*value], 1e-6, 1e-9, &format!("{at}: {name}"));
        }
        assert_eq!(accumulating.state("mini_step").data, [0.0], "{at}");
        assert_eq!(accumulating.state("gradient_step").data, [f64::from(call / 3 + 1)], "{at}");
    }
}

#[test]
fn parameter_ema_matches_the_host_average() {
    let mut rng = Rng::from_env("parameter_ema");
    let params = parameters(&mut rng);
    let optimizer = Optimizer::new(chain(vec![trace(0.5, false), scale(-0.1), parameter_ema(0.9)]));
    let mut stepper = Stepper::new(&optimizer, &params, DType::F64);
    let momentum =
        reference::chain(vec![reference::trace(0.5, false), Box::new(Scale(Rate::Constant(-0.1)))]);
    let mut reference = reference::Optimizer::unscheduled(momentum, &["a.weight", "b.bias", "c.weight"]);
    let mut expected = values(&params);
    // Levanter's EmaModelAveraging: starts at the parameters, then
    // `ema = decay ema + (1 - decay) new_params`.
    let mut average = values(&params);
    for step in 0..10 {
        let grads = gradients(&mut rng, &params, 1.0);
        stepper.step(&grads, &[]);
        reference.step(&mut expected, &grads, 0.0);
        // The updates pass through.
        assert_params(&stepper, &expected, &format!("step {step}"));
        average = average.iter().zip(&expected).map(|(a, p)| a.zip(p, |a, p| 0.9 * a + 0.1 * p)).collect();
        for (param, average) in params.iter().zip(&average) {
            let state = stepper.state(&format!("2.parameter_ema/ema/{}", param.name));
            assert_close(
                &state.data,
                &average.data,
                TOLERANCE,
                1.0,
                &format!("step {step}: ema of {}", param.name),
            );
        }
    }
}

/// `multi_steps` and `apply_if_finite` against optax's own `MultiSteps` and `apply_if_finite`
/// (optax 0.2.8 in f64), NaN for NaN where a bad step was let through.
#[test]
fn multi_steps_and_apply_if_finite_match_optax() {
    let params = golden_params();
    let cases: [(&str, Transform, &optax_golden::Run); 2] = [
        ("multi_steps", multi_steps(adam(), 3), &optax_golden::MULTI_STEPS),
        ("apply_if_finite", apply_if_finite(adam(), 2), &optax_golden::APPLY_IF_FINITE),
    ];
    for (what, transform, golden) in cases {
        let mut stepper = Stepper::new(&Optimizer::new(transform), &params, DType::F64);
        for (call, (w, b)) in golden.iter().enumerate() {
            let mut grads = golden_gradients(call, 1.0);
            if what == "apply_if_finite" {
                if let Some(poison) = optax_golden::APPLY_IF_FINITE_POISON[call] {
                    grads[1].data[1] = poison;
                }
            }
            stepper.step(&grads, &[]);
            for (index, expected) in [&w[..], &b[..]].into_iter().enumerate() {
                let actual = stepper.param(index).data;
                let nan_alike = actual.iter().zip(expected).all(|(a, e)| a.is_nan() == e.is_nan());
                assert!(nan_alike, "{what}, call {call}: {actual:?}\n  optax {expected:?}");
                let finite = |values: &[f64]| {
                    values.iter().map(|v| if v.is_nan() { 0.0 } else { *v }).collect::<Vec<_>>()
                };
                // At most 1e-14 off on the small values: Adam's first step is ±1 up to rounding,
                // and `0.1 - 0.1 u` cancels to ~5e-8, where a few ulps of `u` show at 1e-15.
                let at = format!("{what}, call {call}");
                assert_close(&finite(&actual), &finite(expected), 1e-12, 1e-2, &at);
            }
        }
    }
}

/// `skip_bad_steps` against Levanter's own `SkipStepConfig` around optax's Adam: the same steps
/// skipped, the same parameters after every step.
#[test]
fn skip_bad_steps_matches_levanter() {
    let params = golden_params();
    let specs = support::specs(&params, DType::F64);
    let optimizer = Optimizer::new(skip_bad_steps(adam(), 8, 6.0));
    let step = LossStep::new(&optimizer, &specs);
    let mut device_params: Vec<HostTensor> =
        params.iter().map(|p| host_tensor(DType::F64, &p.value)).collect();
    let mut state = optimizer.initial_state(&step.state, &device_params).unwrap();
    for (k, (w, b)) in optax_golden::SKIP_BAD_STEPS.iter().enumerate() {
        let grads = golden_gradients(k, if k == 16 { 100.0 } else { 1.0 });
        let metrics = step.run(&mut device_params, &mut state, &grads, optax_golden::skip_loss(k));
        let skipped = metrics["skipped_spike"] == 1.0;
        assert_eq!(skipped, optax_golden::SKIP_BAD_STEPS_SKIPPED[k], "step {k}: skipped");
        assert_close(&from_host(&device_params[0]).data, w, 1e-12, 1e-2, &format!("step {k}: w"));
        assert_close(&from_host(&device_params[1]).data, b, 1e-12, 1e-2, &format!("step {k}: b"));
    }
}

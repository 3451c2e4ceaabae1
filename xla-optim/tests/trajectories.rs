//! Every built-in optimizer type, configured from YAML, against the f64 host reference of
//! optax and Levanter: 100 compiled updates of f64 parameters on random gradients (some large
//! enough to be clipped), every parameter and the reported learning rate compared after every
//! step.

mod support;

use sirocco::DType;
use support::reference::{self, global_norm};
use support::{assert_close, golden_gradients, golden_params, optax_golden, Param, Rng, Stepper, Tensor};
use xla_optim::OptimizerConfig;

const STEPS: i64 = 100;

/// `(tolerance, floor)` of the parameters in `dtype`: the relative error allowed, measured
/// against `max(|expected|, floor)` (parameters start at O(1)).
///
/// f64: the reference steps at the learning rate the compiled update reports (an f32 scalar,
/// as optax's injected hyperparameters, itself checked against the reference schedule), so
/// everything else must agree to f64 rounding: far below the 1e-5 users compare at, and tight
/// enough to catch an f32 intermediate (an f32 bias correction `1 - 0.99^t` alone is off by
/// ~1e-5). f32: 100 steps of f32 rounding, ~1e-7 a step.
fn tolerance(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F64 => (1e-9, 1e-3),
        DType::F32 => (1e-4, 1e-2),
        other => panic!("no tolerance for {other:?}"),
    }
}

/// Parameters whose names exercise the default decay mask: only the MLP weight decays.
fn parameters(rng: &mut Rng) -> Vec<Param> {
    vec![
        Param { name: "layers.0.mlp.weight", value: rng.tensor(&[4, 3], -1.0, 1.0) },
        Param { name: "layers.0.attention_norm.weight", value: rng.tensor(&[3], 0.5, 1.5) },
        Param { name: "embed.weight", value: rng.tensor(&[5, 2], -1.0, 1.0) },
        Param { name: "head.bias", value: rng.tensor(&[2], -1.0, 1.0) },
    ]
}

/// Gradients of global norm about 0.5, and about 4 on every seventh step (clipped by a
/// `max_grad_norm` of 1 or 2).
fn gradients(rng: &mut Rng, params: &[Param], step: i64) -> Vec<Tensor> {
    let count: i64 = params.iter().map(|p| p.value.data.len() as i64).sum();
    let scale = 0.5 * (3.0 / count as f64).sqrt() * if step % 7 == 3 { 8.0 } else { 1.0 };
    params.iter().map(|p| rng.tensor(&p.value.dims, -scale, scale)).collect()
}

/// Runs `yaml`'s optimizer and its reference side by side on `params` in `dtype`; returns the
/// largest relative error of any parameter at any step (asserted within [`tolerance`]).
fn compare(test: &str, yaml: &str, mut rng: Rng, params: Vec<Param>, dtype: DType) -> f64 {
    let (tolerance, floor) = tolerance(dtype);
    let config = OptimizerConfig::from_yaml_str(yaml, "optimizer").unwrap_or_else(|error| panic!("{error}"));
    let optimizer = config.build(STEPS as u64, "optimizer").unwrap_or_else(|error| panic!("{error}"));
    let max_grad_norm = config.to_yaml().get("max_grad_norm").and_then(|norm| norm.as_f64());
    let params: Vec<Param> = params
        .into_iter()
        .map(|p| Param { name: p.name, value: support::rounded(&p.value, dtype) })
        .collect();
    let names: Vec<&str> = params.iter().map(|p| p.name).collect();
    let mut stepper = Stepper::new(&optimizer, &params, dtype);
    let mut reference = reference::from_yaml(yaml, STEPS, &names);
    let mut expected: Vec<Tensor> = params.iter().map(|p| p.value.clone()).collect();
    let (mut clipped, mut max_error) = (0, 0.0f64);
    for step in 0..STEPS {
        let grads: Vec<Tensor> =
            gradients(&mut rng, &params, step).iter().map(|g| support::rounded(g, dtype)).collect();
        let norm = global_norm(&grads);
        let reported = stepper.step(&grads, &[]);
        let at = |what: &str| format!("{test}: step {step}, {what}");
        let learning_rate = reported.metric("learning_rate");
        assert_close(&[learning_rate], &[reference.schedule.at(step)], 1e-6, 1e-9, &at("learning_rate"));
        reference.step_at(&mut expected, &grads, 0.0, learning_rate);
        if let Some(max_norm) = max_grad_norm {
            assert_close(&[reported.metric("grad_norm")], &[norm], 1e-5, 1e-9, &at("grad_norm"));
            clipped += i32::from(norm >= max_norm);
        }
        for (index, value) in expected.iter().enumerate() {
            let actual = stepper.param(index);
            max_error =
                max_error.max(assert_close(&actual.data, &value.data, tolerance, floor, &at(names[index])));
        }
    }
    if max_grad_norm.is_some() {
        assert!(0 < clipped && clipped < STEPS as i32, "{test}: {clipped} of {STEPS} steps clipped");
    }
    let moved = expected
        .iter()
        .zip(&params)
        .any(|(e, p)| support::relative_error(&e.data, &p.value.data, 1.0) > 1e-2);
    assert!(moved, "{test}: the parameters hardly moved");
    eprintln!("{test}: max relative error {max_error:e}");
    max_error
}

fn check(test: &str, yaml: &str) {
    let mut rng = Rng::from_env(test);
    let params = parameters(&mut rng);
    compare(test, yaml, rng, params, DType::F64);
}

#[test]
fn sgd() {
    check("sgd", "type: sgd\nlearning_rate: 0.05\nmomentum: null\nwarmup: 10\nweight_decay: 0.05\n");
}

#[test]
fn sgd_momentum_wsd() {
    check(
        "sgd_momentum_wsd",
        "type: sgd\nlr: 0.02\nmomentum: 0.9\nwarmup: 0.1\ndecay: 0.3\nlr_schedule: linear\n",
    );
}

#[test]
fn sgd_nesterov() {
    let yaml = "type: sgd\nlearning_rate: 0.02\nmomentum: 0.8\nnesterov: true\nwarmup: 5\nlr_schedule: constant\nmax_grad_norm: 2.0\n";
    check("sgd_nesterov", yaml);
}

#[test]
fn adam_cycles() {
    check("adam_cycles", "type: adam\nlearning_rate: 0.01\nwarmup: 0.1\ncycles: 2\nrewarmup: 0.2\n");
}

#[test]
fn adam_nesterov_without_type() {
    check(
        "adam_nesterov",
        "learning_rate: 0.01\nnesterov: true\nbeta2: 0.99\nwarmup: 10\nlr_schedule: inv_sqrt\n",
    );
}

#[test]
fn adam_decoupled_weight_decay() {
    let yaml = "type: adam\nlearning_rate: 0.01\ndecoupled_weight_decay: true\nweight_decay: 0.001\nwarmup: 10\nlr_schedule: inv\nmin_lr_ratio: 0.2\n";
    check("adam_decoupled", yaml);
}

#[test]
fn adam_adamc_weight_decay() {
    let yaml = "type: adam\nlearning_rate: 0.01\nadamc_weight_decay: true\nweight_decay: 0.5\nwarmup: 20\nepsilon: 1e-6\n";
    check("adam_adamc", yaml);
}

/// optax's default beta2 0.999, from the first step: its bias correction `1 - 0.999^t`, if
/// computed in f32 for f64 parameters, is off by ~3e-5 relative (regression).
#[test]
fn adam_bias_correction_in_f64() {
    check(
        "adam_bias_correction",
        "type: adam\nlearning_rate: 0.01\nbeta2: 0.999\nwarmup: 0\nlr_schedule: constant\n",
    );
}

#[test]
fn adamax() {
    check("adamax", "type: adamax\nlr: 0.01\nbeta2: 0.99\nwarmup: 10\nlr_schedule: linear\n");
}

/// Adamax in f32 against the f64 reference (from the same f32-representable inputs): the
/// precision lost over 100 steps.
#[test]
fn adamax_f32() {
    let mut rng = Rng::from_env("adamax_f32");
    let params = parameters(&mut rng);
    let yaml = "type: adamax\nlr: 0.01\nbeta2: 0.99\nwarmup: 10\nlr_schedule: linear\n";
    let error = compare("adamax_f32", yaml, rng, params, DType::F32);
    eprintln!("adamax_f32: max relative error of f32 against the f64 reference {error:e}");
}

#[test]
fn lion() {
    check("lion", "type: lion\nlearning_rate: 0.001\nweight_decay: 0.3\nwarmup: 10\n");
}

/// A [128, 160] matrix has its second moment factored (default min_dim_size_to_factor 128);
/// the small parameters keep full second moments.
#[test]
fn adafactor_factored() {
    let mut rng = Rng::from_env("adafactor_factored");
    let mut params = parameters(&mut rng);
    params.push(Param { name: "layers.0.mlp.up.weight", value: rng.tensor(&[128, 160], -0.1, 0.1) });
    let yaml = "type: adafactor\nlearning_rate: 0.01\nbeta1: 0.9\nwarmup: 10\n";
    compare("adafactor_factored", yaml, rng, params, DType::F64);
}

/// With min_dim_size_to_factor 3, the [4, 3] and [2, 5, 4] weights are factored (the latter
/// with its second-largest dimension after the largest), [5, 2] is not.
#[test]
fn adafactor_small_factored() {
    let mut rng = Rng::from_env("adafactor_small_factored");
    let mut params = parameters(&mut rng);
    params.push(Param { name: "layers.1.attention.qkv.weight", value: rng.tensor(&[2, 5, 4], -1.0, 1.0) });
    let yaml = "type: adafactor\nlearning_rate: 0.01\nmin_dim_size_to_factor: 3\nclipping_threshold: null\ndecay_rate: 0.7\nwarmup: 0.05\nlr_schedule: linear\nmax_grad_norm: 1.5\n";
    compare("adafactor_small_factored", yaml, rng, params, DType::F64);
}

/// The flagship `adamax` type, and every other type in the same chain, against optax itself:
/// clipping, moments, masked decay and the learning rate, with a constant schedule (Levanter's
/// schedules are checked separately).
#[test]
fn adamax_and_the_other_levanter_types_match_optax() {
    let cases = [
        ("type: adamax\n", &optax_golden::ADAMAX),
        ("type: adam\n", &optax_golden::ADAM),
        ("type: lion\n", &optax_golden::LION),
        ("type: sgd\nmomentum: 0.9\n", &optax_golden::SGD),
        ("type: rmsprop\n", &optax_golden::RMSPROP),
    ];
    for (fields, golden) in cases {
        let mut stepper =
            optax_stepper(&format!("{fields}learning_rate: 0.01\nlr_schedule: constant\nwarmup: 0\n"));
        for (k, (w, b)) in golden.iter().enumerate() {
            let scale = optax_golden::chain_gradient_scale(k);
            stepper.step(&golden_gradients(k, scale), &[]);
            let what = |name: &str| format!("{}: {name} after step {k}", fields.trim());
            assert_close(&stepper.param(0).data, w, 1e-12, 1e-3, &what("w"));
            assert_close(&stepper.param(1).data, b, 1e-12, 1e-3, &what("b"));
        }
    }
}

/// The `adafactor` type against optax itself (not only against the reference above): the
/// same numbers as `optax.adafactor` when Levanter's extras (global clipping, weight decay, a
/// schedule) are off.
#[test]
fn adafactor_matches_optax() {
    let yaml = "type: adafactor\nlearning_rate: 0.01\nlr_schedule: constant\nwarmup: 0\nweight_decay: 0\nmax_grad_norm: null\nmin_dim_size_to_factor: 2\nbeta1: 0.9\n";
    let mut stepper = optax_stepper(yaml);
    for (k, (w, b)) in optax_golden::ADAFACTOR.iter().enumerate() {
        stepper.step(&golden_gradients(k, 1.0), &[]);
        // The learning rate is an f32 scalar in the step, hence float32(0.01) for optax.
        assert_close(&stepper.param(0).data, w, 1e-12, 1e-3, &format!("w after step {k}"));
        assert_close(&stepper.param(1).data, b, 1e-12, 1e-3, &format!("b after step {k}"));
    }
}

/// `yaml`'s optimizer stepping the f64 parameters of [`optax_golden`].
fn optax_stepper(yaml: &str) -> Stepper {
    let config = OptimizerConfig::from_yaml_str(yaml, "optimizer").unwrap_or_else(|error| panic!("{error}"));
    let optimizer = config.build(5, "optimizer").unwrap_or_else(|error| panic!("{error}"));
    Stepper::new(&optimizer, &golden_params(), DType::F64)
}

/// Parameters with an RMS under 1e-3 at first: the relative step size uses its floor
/// (`max(rms(p), 1e-3)`) until the updates grow them past it.
#[test]
fn adafactor_tiny_parameters() {
    let test = "adafactor_tiny_parameters";
    let mut rng = Rng::from_env(test);
    let params: Vec<Param> = parameters(&mut rng)
        .into_iter()
        .map(|p| Param { name: p.name, value: p.value.map(|x| x * 1e-4) })
        .collect();
    let yaml = "type: adafactor\nlearning_rate: 1.0\nweight_decay: 0\nmin_dim_size_to_factor: 3\n";
    compare(test, yaml, rng, params, DType::F64);
}

/// Without the relative step size and without factoring, with a larger weight decay: the
/// other branches of optax.adafactor's chain.
#[test]
fn adafactor_unscaled_full() {
    let yaml = "type: adafactor\nlearning_rate: 0.05\nmultiply_by_parameter_scale: false\nfactored: false\nweight_decay: 0.3\nbeta1: 0.5\n";
    check("adafactor_unscaled_full", yaml);
}

#[test]
fn rmsprop() {
    check("rmsprop", "type: rmsprop\nlearning_rate: 0.01\nwarmup: 10\n");
}

/// Momentum after the learning-rate scale (optax's `rmsprop`), so the schedule's changes go
/// through the trace; `decay` is the base config's schedule decay.
#[test]
fn rmsprop_bias_correction_momentum() {
    let yaml = "type: rmsprop\nlearning_rate: 0.01\nbeta2: 0.95\nbias_correction: true\nmomentum: 0.9\nnesterov: true\neps_in_sqrt: false\ninitial_scale: 0.1\nwarmup: 10\ndecay: 0.5\nlr_schedule: linear\n";
    check("rmsprop_momentum", yaml);
}

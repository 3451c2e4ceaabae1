//! Optimizer configs: YAML errors name the field at fault before anything compiles, Levanter's
//! schedules (host and in-graph), the YAML round trip, and the `type:` registry.

mod support;

use serde::{Deserialize, Serialize};
use sirocco::hlo::Builder;
use sirocco::{DType, HostTensor};
use support::reference::LrSchedule;
use support::{assert_close, Param, Rng, Stepper, Tensor};
use xla_optim::combinators::chain;
use xla_optim::transforms::{scale, scale_by_learning_rate};
use xla_optim::{
    register, BaseConfig, Hyper, OptimError, Optimizer, OptimizerConfig, OptimizerType, Schedule,
};

const BUILT_IN: [&str; 6] = ["adafactor", "adam", "adamax", "lion", "rmsprop", "sgd"];

fn parse(yaml: &str) -> xla_optim::Result<OptimizerConfig> {
    OptimizerConfig::from_yaml_str(yaml, "optimizer")
}

/// The error of reading and building `yaml` for a 100-step run (where it fails first).
fn error_of(yaml: &str) -> OptimError {
    match parse(yaml) {
        Err(error) => error,
        Ok(config) => {
            let error = config.build(100, "optimizer").expect_err(yaml);
            // Build reports what validation finds, before any update is built.
            assert_eq!(config.validate(100, "optimizer").unwrap_err().to_string(), error.to_string());
            error
        }
    }
}

/// Asserts `yaml` fails with a config error at `path`; returns its message.
#[track_caller]
fn assert_config_error(yaml: &str, path: &str) -> String {
    match error_of(yaml) {
        OptimError::Config { path: actual, message } => {
            assert_eq!(actual, path, "{yaml}: {message}");
            message
        }
        other => panic!("{yaml}: expected a config error at {path}, got {other}"),
    }
}

#[test]
fn unknown_type_lists_the_registered_types() {
    let error = parse("type: adamw\n").unwrap_err();
    let OptimError::UnknownType { ref path, ref name, ref registered } = error else {
        panic!("expected an unknown type, got {error}");
    };
    assert_eq!((path.as_str(), name.as_str()), ("optimizer.type", "adamw"));
    for built_in in BUILT_IN {
        assert!(registered.iter().any(|name| name == built_in), "{registered:?}");
    }
    let message = error.to_string();
    assert!(message.starts_with("optimizer.type: unknown optimizer type `adamw`"), "{message}");
    assert!(message.contains("adafactor, adam, adamax"), "{message}");
}

#[test]
fn unknown_and_mistyped_fields_are_named() {
    let message = assert_config_error("type: adam\nbeta3: 0.9\n", "optimizer.beta3");
    assert!(
        message.contains("unknown field for optimizer type `adam`") && message.contains("beta2"),
        "{message}"
    );
    // A field of another type is unknown here.
    assert_config_error("type: lion\nnesterov: true\n", "optimizer.nesterov");
    let message = assert_config_error("type: adam\nbeta1: high\n", "optimizer.beta1");
    assert!(message.contains("high"), "{message}");
    assert_config_error("type: sgd\nwarmup: soon\n", "optimizer.warmup");
    assert_config_error("type: sgd\nnesterov: 3\n", "optimizer.nesterov");
    assert_config_error("[1, 2]", "optimizer");
    assert_config_error("type: 3\n", "optimizer.type");
}

#[test]
fn lr_is_an_alias_of_learning_rate() {
    let config = parse("type: adamax\nlr: 0.003\n").unwrap();
    assert_eq!(config.base().learning_rate, 0.003);
    let message = assert_config_error("lr: 0.1\nlearning_rate: 0.1\n", "optimizer.lr");
    assert!(message.contains("both `lr` and `learning_rate`"), "{message}");
}

#[test]
fn no_type_means_adam_with_levanter_defaults() {
    for yaml in ["learning_rate: 0.01\n", "", "null\n"] {
        assert_eq!(parse(yaml).unwrap().type_name(), "adam", "{yaml:?}");
    }
    let base = parse("").unwrap().base().clone();
    assert_eq!(base, BaseConfig::default());
    // Levanter's OptimizerConfig and AdamConfig defaults (levanter/optim/config.py).
    assert_eq!(
        (base.learning_rate, base.weight_decay, base.min_lr_ratio, base.warmup, base.lr_schedule.as_str()),
        (6e-4, 0.1, 0.1, 0.01, "cosine")
    );
    let yaml = parse("").unwrap().to_yaml();
    let field = |name: &str| yaml.get(name).unwrap_or_else(|| panic!("no {name}")).clone();
    assert_eq!(field("beta1").as_f64(), Some(0.9));
    assert_eq!(field("beta2").as_f64(), Some(0.95));
    assert_eq!(field("epsilon").as_f64(), Some(1e-8));
    assert_eq!(field("max_grad_norm").as_f64(), Some(1.0));
}

#[test]
fn out_of_range_values_are_named_before_anything_compiles() {
    let cases = [
        ("type: adam\nbeta1: 1.0\n", "optimizer.beta1"),
        ("type: adam\nbeta2: -0.1\n", "optimizer.beta2"),
        ("type: adamax\nbeta1: 1.5\n", "optimizer.beta1"),
        ("type: lion\nbeta2: 1.0\n", "optimizer.beta2"),
        ("type: rmsprop\nbeta2: 1.0\n", "optimizer.beta2"),
        ("type: sgd\nmomentum: 1.0\n", "optimizer.momentum"),
        ("type: adafactor\nbeta1: -0.5\n", "optimizer.beta1"),
        ("type: adam\nlearning_rate: -0.001\n", "optimizer.learning_rate"),
        // An error about the learning rate names the key the YAML used.
        ("type: sgd\nlr: -0.001\n", "optimizer.lr"),
        ("type: sgd\nlr: fast\n", "optimizer.lr"),
        ("type: adam\nepsilon: 0.0\n", "optimizer.epsilon"),
        ("type: adamax\nepsilon: -1e-8\n", "optimizer.epsilon"),
        ("type: rmsprop\nepsilon: 0\n", "optimizer.epsilon"),
        ("type: adafactor\nepsilon: 0\n", "optimizer.epsilon"),
        ("type: adafactor\ndecay_offset: -1\n", "optimizer.decay_offset"),
        ("type: adafactor\nmultiply_by_parameter_scale: maybe\n", "optimizer.multiply_by_parameter_scale"),
        ("type: adam\nmax_grad_norm: -1.0\n", "optimizer.max_grad_norm"),
        ("type: adam\nweight_decay: -0.1\n", "optimizer.weight_decay"),
        ("type: adam\nmin_lr_ratio: 1.5\n", "optimizer.min_lr_ratio"),
        ("type: adam\nwarmup: 60\ndecay: 50\n", "optimizer.decay"),
        ("type: adam\nwarmup: 0.7\ndecay: 0.4\n", "optimizer.decay"),
        ("type: adam\nlr_schedule: exponential\n", "optimizer.lr_schedule"),
        ("type: adam\nwarmup: 1.5\n", "optimizer.warmup"),
        // optax's cosine_decay_schedule needs a positive decay length.
        ("type: adam\nwarmup: 1.0\n", "optimizer.warmup"),
        ("type: adam\nwarmup: 0.1\ndecay: 0\n", "optimizer.decay"),
        ("type: adam\nwarmup: 0.1\ncycles: 2\nrewarmup: 1.0\n", "optimizer.rewarmup"),
        ("type: adam\ndecay: 2.5\n", "optimizer.decay"),
        ("type: adam\nwarmup: -0.1\n", "optimizer.warmup"),
        ("type: adam\ncycles: 0\n", "optimizer.cycles"),
        // Non-finite values are refused, not run into NaN parameters.
        ("type: adam\nlr: .inf\n", "optimizer.lr"),
        ("type: adam\nweight_decay: .inf\n", "optimizer.weight_decay"),
        ("type: adam\nepsilon: .inf\n", "optimizer.epsilon"),
        ("type: adam\nwarmup: .nan\n", "optimizer.warmup"),
        ("type: adam\ncycles: 2\nrewarmup: .nan\n", "optimizer.rewarmup"),
        // The run is 100 steps: a longer cooldown and decreasing `haps` name their own fields.
        ("type: adam\ncooldown: 100\n", "optimizer.cooldown"),
        ("type: adam\nhaps: [50, 20]\n", "optimizer.haps"),
        ("type: adam\nskip_bad_steps: maybe\n", "optimizer.skip_bad_steps"),
        (
            "type: adam\ndecoupled_weight_decay: true\nadamc_weight_decay: true\n",
            "optimizer.adamc_weight_decay",
        ),
    ];
    for (yaml, path) in cases {
        assert_config_error(yaml, path);
    }
    let message = assert_config_error("type: adam\nwarmup: 60\ndecay: 50\n", "optimizer.decay");
    assert!(
        message.contains("warmup (60 steps) + decay (50 steps)") && message.contains("100 steps"),
        "{message}"
    );
    // Without a cosine decay, a warmup over the whole run is fine.
    for yaml in ["warmup: 1.0\nlr_schedule: constant\n", "warmup: 1.0\nlr_schedule: linear\n"] {
        parse(yaml).unwrap().build(100, "optimizer").unwrap_or_else(|error| panic!("{yaml}: {error}"));
    }
    let message = assert_config_error("type: adam\nlr_schedule: exponential\n", "optimizer.lr_schedule");
    assert!(message.contains("constant, cosine, linear, inv_sqrt, inv"), "{message}");
}

/// Levanter clips `if self.max_grad_norm`: 0 disables clipping as null does (regression: 0
/// was rejected).
#[test]
fn zero_max_grad_norm_disables_clipping() {
    let params = [xla_optim::ParamSpec::new("w", DType::F32, &[2])];
    let metrics = |yaml: &str| {
        let optimizer =
            parse(yaml).unwrap().build(10, "optimizer").unwrap_or_else(|error| panic!("{yaml}: {error}"));
        optimizer.update_function(&params).unwrap().metrics
    };
    assert_eq!(metrics("type: adam\n"), ["grad_norm", "learning_rate"]);
    for yaml in [
        "type: adam\nmax_grad_norm: 0\n",
        "type: adam\nmax_grad_norm: null\n",
        "type: lion\nmax_grad_norm: 0.0\n",
    ] {
        assert_eq!(metrics(yaml), ["learning_rate"], "{yaml}");
    }
}

/// Learning-rate schedules from base configs, covering every `lr_schedule`, WSD and cycles.
fn schedule_configs() -> Vec<(&'static str, u64)> {
    vec![
        ("learning_rate: 0.01\nwarmup: 0.1\n", 1000),
        ("learning_rate: 0.01\nwarmup: 10\nlr_schedule: constant\n", 100),
        ("learning_rate: 0.01\nwarmup: 0\nlr_schedule: linear\nmin_lr_ratio: 0.0\n", 100),
        ("learning_rate: 0.01\nwarmup: 0.2\ndecay: 0.3\nlr_schedule: linear\n", 100),
        ("learning_rate: 0.02\nwarmup: 10\nlr_schedule: inv_sqrt\n", 100),
        ("learning_rate: 0.02\nwarmup: 5\nlr_schedule: inv\nmin_lr_ratio: 0.05\n", 100),
        ("learning_rate: 0.01\nwarmup: 0.1\ncycles: 3\nrewarmup: 0.2\n", 100),
        ("learning_rate: 0.01\nwarmup: 7\ncycles: 2\ndecay: 0.5\nlr_schedule: linear\n", 101),
        ("learning_rate: 1.0\nwarmup: 0.0\nlr_schedule: cosine\nmin_lr_ratio: 0.0\n", 64),
    ]
}

/// The Levanter reference of the fields in `yaml` (Levanter's defaults for the others).
fn reference_schedule(yaml: &str, steps: u64) -> LrSchedule {
    support::reference::from_yaml(yaml, steps as i64, &[]).schedule
}

#[test]
fn levanter_golden_schedule() {
    // DESIGN.md, from Levanter: learning_rate 1e-2, warmup 0.1, 1000 steps, cosine.
    let config = parse("learning_rate: 1e-2\nwarmup: 0.1\n").unwrap();
    let schedule = config.base().learning_rate_schedule(1000, "optimizer").unwrap();
    assert_eq!(schedule.at(0), 0.0);
    assert_close(&[schedule.at(50)], &[5e-3], 1e-12, 0.0, "s(50)");
    assert_close(&[schedule.at(100)], &[1e-2], 1e-12, 0.0, "s(100)");
    assert_close(&[schedule.at(999)], &[1e-3], 1e-4, 0.0, "s(999)");
    let graph = in_graph(&[schedule], &[50, 100, 999]);
    assert_close(&[graph[0][0], graph[1][0]], &[5e-3, 1e-2], 1e-6, 0.0, "s(50), s(100) in the graph");
    assert_close(&[graph[2][0]], &[1e-3], 1e-4, 0.0, "s(999) in the graph");
}

#[test]
fn schedules_match_the_levanter_reference() {
    for (yaml, steps) in schedule_configs() {
        let schedule = parse(yaml).unwrap().base().learning_rate_schedule(steps, "optimizer").unwrap();
        let reference = reference_schedule(yaml, steps);
        let all: Vec<i64> = (0..steps as i64 + 10).collect();
        let actual: Vec<f64> = all.iter().map(|&step| schedule.at(step)).collect();
        let expected: Vec<f64> = all.iter().map(|&step| reference.at(step)).collect();
        assert_close(&actual, &expected, 1e-12, 1e-12, yaml);
    }
}

/// Values of `schedules` (one f32 output each) at every step of `steps`, computed by one
/// compiled function: `result[step_index][schedule]`.
fn in_graph(schedules: &[Schedule], steps: &[i64]) -> Vec<Vec<f64>> {
    let builder = Builder::new("schedules");
    let step = builder.param("step", DType::I32, &[]);
    let outputs: Vec<_> = schedules.iter().map(|schedule| schedule.build(&step)).collect();
    let program = support::compile(&builder.build(&outputs).unwrap());
    steps
        .iter()
        .map(|&step| {
            let outputs = support::execute(&program, &[HostTensor::scalar(step as i32)]);
            outputs.iter().map(|value| value.to_f64_vec()[0]).collect()
        })
        .collect()
}

#[test]
fn schedules_in_the_graph_match_the_host() {
    let mut schedules: Vec<(String, Schedule, f64)> = schedule_configs()
        .into_iter()
        .map(|(yaml, steps)| {
            let config = parse(yaml).unwrap();
            let schedule = config.base().learning_rate_schedule(steps, "optimizer").unwrap();
            (yaml.to_string(), schedule, config.base().learning_rate)
        })
        .collect();
    let extra = [
        Schedule::Cosine { init: 2.0, decay_steps: 90, alpha: 0.1, exponent: 2.0 },
        Schedule::Linear { init: 1.0, end: 3.0, steps: 0 },
        Schedule::Join {
            schedules: vec![Schedule::Constant(0.5), Schedule::Linear { init: 0.5, end: 0.0, steps: 30 }],
            boundaries: vec![40],
        },
    ];
    schedules.extend(extra.into_iter().map(|schedule| (format!("{schedule:?}"), schedule, 3.0)));
    let steps: Vec<i64> = (0..1010).step_by(3).chain([49, 50, 99, 100, 101, 999]).collect();
    let all: Vec<Schedule> = schedules.iter().map(|(_, schedule, _)| schedule.clone()).collect();
    let values = in_graph(&all, &steps);
    for (index, (name, schedule, peak)) in schedules.iter().enumerate() {
        let actual: Vec<f64> = values.iter().map(|row| row[index]).collect();
        let expected: Vec<f64> = steps.iter().map(|&step| schedule.at(step)).collect();
        // f32 in the graph: relative 1e-5, absolute 1e-7 of the peak rate near zero.
        assert_close(&actual, &expected, 1e-5, 1e-2 * peak, name);
    }
}

/// A config per built-in type with fields away from their defaults.
fn non_default_configs() -> Vec<&'static str> {
    vec![
        "type: sgd\nlr: 0.1\nmomentum: null\nnesterov: true\nmax_grad_norm: null\nweight_decay: 0\n",
        "type: adam\nbeta1: 0.8\nnesterov: true\nskip_bad_steps: 16\ncycles: 2\nweight_decay_modules: [mlp]\n",
        "type: adam\nskip_bad_steps: true\ndecay: 0.2\nlr_schedule: linear\ndefault_weight_decay_mask: false\n",
        "type: adamax\nbeta2: 0.99\nepsilon: 1e-6\nwarmup: 5\n",
        "type: lion\nbeta1: 0.95\nbeta2: 0.98\ncycle_length: 0.5\nrewarmup: 0.1\n",
        "type: adafactor\nbeta1: 0.9\nclipping_threshold: null\nmin_dim_size_to_factor: 2\ncooldown: 0.1\n",
        "type: rmsprop\nbeta2: 0.99\nmomentum: 0.9\nbias_correction: true\nweight_decay_modules: '.*weight'\n",
    ]
}

#[test]
fn to_yaml_round_trips() {
    let params = [
        xla_optim::ParamSpec::new("layers.0.mlp.weight", DType::F32, &[4, 3]),
        xla_optim::ParamSpec::new("layers.0.attention_norm.weight", DType::F32, &[3]),
    ];
    for yaml in non_default_configs() {
        let config = parse(yaml).unwrap_or_else(|error| panic!("{yaml}: {error}"));
        let written = config.to_yaml();
        let again = OptimizerConfig::from_yaml(&written, "optimizer")
            .unwrap_or_else(|error| panic!("{yaml}: {error}"));
        assert_eq!(again.to_yaml(), written, "{yaml}");
        assert_eq!(again.base(), config.base(), "{yaml}");
        assert_eq!(again.type_name(), config.type_name());
        // Debug text: the NaN-filled histories of skip_bad_steps are not `==` to themselves.
        let state = |config: &OptimizerConfig| {
            format!("{:?}", config.build(100, "optimizer").unwrap().state_specs(&params).unwrap())
        };
        assert_eq!(state(&again), state(&config), "{yaml}");
        // Every field is written, defaults included.
        let fields = written.as_mapping().unwrap();
        for field in ["type", "learning_rate", "warmup", "lr_schedule", "max_grad_norm"] {
            assert!(fields.contains_key(field), "{yaml}: no {field} in {written:?}");
        }
    }
}

/// A user-defined type: `-learning_rate * factor * g`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ScaledSgd {
    factor: f64,
}

impl Default for ScaledSgd {
    fn default() -> Self {
        ScaledSgd { factor: 2.0 }
    }
}

impl OptimizerType for ScaledSgd {
    const DOC: &'static str = "SGD with a constant factor (test)";

    fn validate(&self, _: &BaseConfig, path: &str) -> xla_optim::Result<()> {
        xla_optim::registry::check_positive(self.factor, path, "factor")
    }

    fn build(&self, base: &BaseConfig, steps: u64) -> xla_optim::Result<Optimizer> {
        let transform =
            chain(vec![scale(self.factor), scale_by_learning_rate(Hyper::injected("learning_rate"))]);
        base.with_learning_rate_schedule(transform, steps)
    }
}

/// Another type, to register under a taken name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct OtherSgd {
    factor: f64,
}

impl OptimizerType for OtherSgd {
    const DOC: &'static str = "another type (test)";

    fn build(&self, base: &BaseConfig, steps: u64) -> xla_optim::Result<Optimizer> {
        base.with_learning_rate_schedule(scale_by_learning_rate(Hyper::injected("learning_rate")), steps)
    }
}

/// A type with a field named like a base field (`warmup`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ShadowingSgd {
    warmup: f64,
}

impl OptimizerType for ShadowingSgd {
    const DOC: &'static str = "shadows a base field (test)";

    fn build(&self, base: &BaseConfig, steps: u64) -> xla_optim::Result<Optimizer> {
        base.with_learning_rate_schedule(scale_by_learning_rate(Hyper::injected("learning_rate")), steps)
    }
}

#[test]
fn registering_the_same_type_twice_is_harmless_another_is_an_error() {
    register::<ScaledSgd>("test_scaled_sgd").unwrap();
    register::<ScaledSgd>("test_scaled_sgd").unwrap();
    let error = register::<OtherSgd>("test_scaled_sgd").unwrap_err();
    assert!(matches!(error, OptimError::Registry(_)), "{error}");
    assert!(
        error.to_string().contains("already registered as") && error.to_string().contains("ScaledSgd"),
        "{error}"
    );
    let error = register::<OtherSgd>("adam").unwrap_err();
    assert!(error.to_string().contains("`adam` is already registered"), "{error}");
    assert!(register::<OtherSgd>("not a name").is_err());
    assert_eq!(parse("type: adam\n").unwrap().type_name(), "adam");
}

/// Regression: a type field named like a base field made the base field unreachable for the
/// type (YAML keys go to the type first); registering one is an error.
#[test]
fn a_type_may_not_shadow_base_fields() {
    let error = register::<ShadowingSgd>("test_shadowing_sgd").unwrap_err();
    assert!(error.to_string().contains("field `warmup`"), "{error}");
    assert!(parse("type: test_shadowing_sgd\n").is_err());
}

#[test]
fn a_user_type_resolves_from_yaml_and_builds() {
    register::<ScaledSgd>("test_user_sgd").unwrap();
    let config =
        parse("type: test_user_sgd\nfactor: 3.0\nlr: 0.5\nwarmup: 0\nlr_schedule: constant\n").unwrap();
    assert_eq!(config.type_name(), "test_user_sgd");
    assert_config_error("type: test_user_sgd\nfactor: -1.0\n", "optimizer.factor");
    assert_config_error("type: test_user_sgd\nmomentum: 0.9\n", "optimizer.momentum");
    assert!(xla_optim::registered_types().contains(&"test_user_sgd".to_string()));
    let optimizer = config.build(10, "optimizer").unwrap();
    let mut rng = Rng::seeded(7);
    let params = vec![Param { name: "w", value: rng.tensor(&[3], -1.0, 1.0) }];
    let grads = vec![rng.tensor(&[3], -1.0, 1.0)];
    let mut stepper = Stepper::new(&optimizer, &params, DType::F64);
    stepper.step(&grads, &[]);
    let expected: Tensor = params[0].value.zip(&grads[0], |p, g| p - 0.5 * 3.0 * g);
    assert_close(&stepper.param(0).data, &expected.data, 1e-12, 1.0, "one step of the user type");
}

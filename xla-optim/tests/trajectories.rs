//! Every built-in optimizer type, configured from YAML, against the f64 host reference of
//! optax and Levanter: 100 compiled updates of f64 parameters on random gradients (some large
//! enough to be clipped), every parameter and the reported learning rate compared after every
//! step.

mod support;

use sirocco::DType;
use support::reference::{self, global_norm};
use support::{assert_close, Param, Rng, Stepper, Tensor};
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

/// Parameters after each of 5 updates by the seed's Adamax chain written with optax 0.2.8 in f64
/// (`jax_enable_x64`): `chain(clip_by_global_norm(1.0), scale_by_adamax(0.9, 0.95, 1e-8),
/// add_decayed_weights(0.1, mask={w: True, b: False}), scale(-float32(0.01)))`, from the
/// parameters of [`OPTAX_ADAFACTOR`], with its gradients times 1 on even steps (clipped) and 0.1
/// on odd ones (not clipped).
const OPTAX_ADAMAX: [([f64; 12], [f64; 3]); 5] = [
    (
        [
            -0.4995000000111759,
            -0.409599999493905,
            -0.30969999951341476,
            -0.20979999804268662,
            -0.08990000054988495,
            0.009999999520670733,
            0.10989999890079873,
            0.18980000060136548,
            0.28970000047816574,
            0.3896000008276855,
            0.5094999993367492,
            0.6093999995445871,
        ],
        [0.2900000026765588, -0.1900000061181689, 0.10999999602361023],
    ),
    (
        [
            -0.5042636571739545,
            -0.41564511859410347,
            -0.31458736528207776,
            -0.20792776539232816,
            -0.083101965616281,
            0.015372147735789703,
            0.11158078518766446,
            0.18257748968066667,
            0.28385804705587697,
            0.3860182474109294,
            0.516474736706798,
            0.6145059726007251,
        ],
        [0.28427956970393387, -0.18178080655956882, 0.11439636635311207],
    ),
    (
        [
            -0.508187857322341,
            -0.42021680307118203,
            -0.3142504313824404,
            -0.2038308845930731,
            -0.07702208945151752,
            0.01607167760426927,
            0.10807610385120826,
            0.17510523742998038,
            0.28218169804762094,
            0.38854984008282784,
            0.5241036423888499,
            0.6159337204668259,
        ],
        [0.28221715581839113, -0.17501834211425887, 0.11246358125544392],
    ),
    (
        [
            -0.5110998546154846,
            -0.42277160478562065,
            -0.31304213320568836,
            -0.20050948029156315,
            -0.07319043595993015,
            0.01573094897719166,
            0.10512857811126608,
            0.17017696958175235,
            0.2817008587281234,
            0.39073403762951403,
            0.5290845433452355,
            0.6160182683546366,
        ],
        [0.2815011040397231, -0.17028901574106417, 0.11044322313592182],
    ),
    (
        [
            -0.5111589985848234,
            -0.4216418355833173,
            -0.3111194919814496,
            -0.1995991784031747,
            -0.07365048891372807,
            0.014200552848406515,
            0.10418540107077898,
            0.17037341723359972,
            0.2828465713768313,
            0.3913043411113305,
            0.5283552428683819,
            0.6140585051721217,
        ],
        [0.28284225264504276, -0.17031054263065135, 0.10922745325829081],
    ),
];

/// The flagship `adamax` type against optax itself: clipping, moments, masked decay and the
/// learning rate, with a constant schedule (Levanter's schedules are checked separately).
#[test]
fn adamax_matches_optax() {
    let yaml = "type: adamax\nlearning_rate: 0.01\nlr_schedule: constant\nwarmup: 0\n";
    let mut stepper = optax_stepper(yaml);
    for (k, (w, b)) in OPTAX_ADAMAX.iter().enumerate() {
        let scale = if k % 2 == 0 { 1.0 } else { 0.1 };
        let grads: Vec<Tensor> = optax_gradients(k).iter().map(|g| g.map(|x| x * scale)).collect();
        stepper.step(&grads, &[]);
        assert_close(&stepper.param(0).data, w, 1e-12, 1e-3, &format!("w after step {k}"));
        assert_close(&stepper.param(1).data, b, 1e-12, 1e-3, &format!("b after step {k}"));
    }
}

/// Parameters after each of 5 updates by `optax.adafactor(learning_rate=float32(0.01),
/// min_dim_size_to_factor=2, momentum=0.9)` in f64 (`jax_enable_x64`, optax 0.2.8, whose
/// momentum is kept in f32 as `dtype_momentum` defaults), from
/// `w = arange(12).reshape(4, 3) / 10 - 0.5`, `b = [0.3, -0.2, 0.1]`, with gradients
/// `sin(arange(12).reshape(4, 3) + k)` and `0.1 cos(2 arange(3) + k)` at step k.
const OPTAX_ADAFACTOR: [([f64; 12], [f64; 3]); 5] = [
    (
        [
            -0.5,
            -0.40040863256703113,
            -0.3003242302076688,
            -0.20018906644417964,
            -0.09962973637786644,
            0.00034448196088142125,
            0.10037731290724156,
            0.19967602588829017,
            0.29964177073919496,
            0.39943918693961433,
            0.5002703425483571,
            0.6003648783362836,
        ],
        [0.2997839753148816, -0.19978397531488162, 0.10021602468511841],
    ),
    (
        [
            -0.5005106225119741,
            -0.40113539758836486,
            -0.30068589329448075,
            -0.19989987399170928,
            -0.09891782110001021,
            0.0007928620328432874,
            0.10031756302921163,
            0.1989932003090521,
            0.29911502463111433,
            0.39926594713926944,
            0.5009100889838735,
            0.6009599790896566,
        ],
        [0.2994381174330569, -0.1993216821732696, 0.10028221410930714],
    ),
    (
        [
            -0.501390641095091,
            -0.40185960105382984,
            -0.3006086065435189,
            -0.19919673189973125,
            -0.09813843888115448,
            0.0008471676632569698,
            0.09980744840635891,
            0.19817440741467995,
            0.29892977005142707,
            0.39957069995666744,
            0.5017514599479146,
            0.601272784175498,
        ],
        [0.2992654762511316, -0.1987155404377241, 0.1000536539361647],
    ),
    (
        [
            -0.5022577138334595,
            -0.4021199586834396,
            -0.300111020883797,
            -0.19841502695739627,
            -0.09777740563853347,
            0.0004536365230190707,
            0.09912839863514147,
            0.1977198390478794,
            0.2992109411868114,
            0.4001317394885691,
            0.5022903281509472,
            0.6011100001664081,
        ],
        [0.29938435360611193, -0.19826719730882664, 0.09962570836519186],
    ),
    (
        [
            -0.502626821332911,
            -0.401920786844405,
            -0.2995262568162383,
            -0.19806864422684747,
            -0.09789989693945102,
            -0.00010259055016711716,
            0.09881324805529945,
            0.19776334353544017,
            0.29972728538193105,
            0.4004077788428657,
            0.5023263730063346,
            0.600644001995687,
        ],
        [0.2996800750780011, -0.19814472085761775, 0.09929055241641731],
    ),
];

/// The `adafactor` type against optax itself (not only against the reference above): the
/// same numbers as `optax.adafactor` when Levanter's extras (global clipping, weight decay, a
/// schedule) are off.
#[test]
fn adafactor_matches_optax() {
    let yaml = "type: adafactor\nlearning_rate: 0.01\nlr_schedule: constant\nwarmup: 0\nweight_decay: 0\nmax_grad_norm: null\nmin_dim_size_to_factor: 2\nbeta1: 0.9\n";
    let mut stepper = optax_stepper(yaml);
    for (k, (w, b)) in OPTAX_ADAFACTOR.iter().enumerate() {
        stepper.step(&optax_gradients(k), &[]);
        // The learning rate is an f32 scalar in the step, hence float32(0.01) for optax.
        assert_close(&stepper.param(0).data, w, 1e-12, 1e-3, &format!("w after step {k}"));
        assert_close(&stepper.param(1).data, b, 1e-12, 1e-3, &format!("b after step {k}"));
    }
}

/// `yaml`'s optimizer stepping f64 parameters `mlp.weight` = `arange(12).reshape(4, 3) / 10 -
/// 0.5` (decayed by the default mask) and `mlp.bias` = `[0.3, -0.2, 0.1]` (not decayed).
fn optax_stepper(yaml: &str) -> Stepper {
    let config = OptimizerConfig::from_yaml_str(yaml, "optimizer").unwrap_or_else(|error| panic!("{error}"));
    let optimizer = config.build(5, "optimizer").unwrap_or_else(|error| panic!("{error}"));
    let w: Vec<f64> = (0..12).map(|i| f64::from(i) / 10.0 - 0.5).collect();
    let params = vec![
        Param { name: "mlp.weight", value: Tensor::new(&[4, 3], w) },
        Param { name: "mlp.bias", value: Tensor::new(&[3], vec![0.3, -0.2, 0.1]) },
    ];
    Stepper::new(&optimizer, &params, DType::F64)
}

/// The gradients of step `k` in the optax golden tests.
fn optax_gradients(k: usize) -> Vec<Tensor> {
    vec![
        Tensor::new(&[4, 3], (0..12).map(|i| (f64::from(i) + k as f64).sin()).collect()),
        Tensor::new(&[3], (0..3).map(|i| 0.1 * (2.0 * f64::from(i) + k as f64).cos()).collect()),
    ]
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

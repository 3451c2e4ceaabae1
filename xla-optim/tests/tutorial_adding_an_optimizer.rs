//! The code of docs/adding-an-optimizer.md, run as a test so that the tutorial cannot rot.
//!
//! This file is user-side code: it uses only xla-optim's public API, as a crate of your own
//! would. Each ```rust block of the tutorial is a verbatim excerpt of this file, in order;
//! `the_tutorial_shows_this_code` checks that, and the other tests run it.

use std::sync::Arc;

use sirocco::hlo::Value;
use xla_optim::transform::{bias_correction_denominator, increment};
use xla_optim::{GradientTransformation, OptimError, ParamSpec, StateSpec, Transform, Update, UpdateContext};

/// Adamax (Kingma & Ba, 2014, section 7), as optax's `scale_by_adamax`:
///
/// ```text
/// m = b1 m + (1 - b1) g        v = max(b2 v, |g| + eps)        u = m / (1 - b1^t) / v
/// ```
#[derive(Debug)]
pub struct MyAdamax {
    pub b1: f64,
    pub b2: f64,
    pub eps: f64,
}

pub fn my_adamax(b1: f64, b2: f64, eps: f64) -> Transform {
    Arc::new(MyAdamax { b1, b2, eps })
}

impl GradientTransformation for MyAdamax {
    fn name(&self) -> String {
        "my_adamax".into()
    }

    /// A step count, then `mu/<param>` and `nu/<param>` for every parameter, all zeros.
    fn init(&self, params: &[ParamSpec]) -> xla_optim::Result<Vec<StateSpec>> {
        let mut state = vec![StateSpec::count()];
        state.extend(StateSpec::per_param("mu", params, 0.0));
        state.extend(StateSpec::per_param("nu", params, 0.0));
        Ok(state)
    }

    /// `grads` and `state` follow the order of `ctx.specs` and of `init(ctx.specs)`.
    fn update(&self, _ctx: &UpdateContext, grads: &[Value], state: &[Value]) -> xla_optim::Result<Update> {
        let n = grads.len();
        if state.len() != 1 + 2 * n {
            return Err(OptimError::Build(format!("my_adamax: got {} state tensors", state.len())));
        }
        let (count, mu, nu) = (&state[0], &state[1..1 + n], &state[1 + n..]);
        let t = increment(count); // t = count + 1: the first update is t = 1
        let mut updates = Vec::with_capacity(n);
        let (mut new_mu, mut new_nu) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for (i, g) in grads.iter().enumerate() {
            let m = &mu[i] * self.b1 + g * (1.0 - self.b1);
            let v = (&nu[i] * self.b2).max(&(g.abs() + self.eps));
            updates.push(&m / bias_correction_denominator(self.b1, &t, g.dtype()) / &v);
            new_mu.push(m);
            new_nu.push(v);
        }
        let mut new_state = vec![t];
        new_state.extend(new_mu);
        new_state.extend(new_nu);
        Ok(Update { updates, state: new_state })
    }
}
use serde::{Deserialize, Serialize};
use xla_optim::combinators::chain;
use xla_optim::registry::{check_beta, check_positive};
use xla_optim::transforms::{clip_by_global_norm, scale_by_learning_rate};
use xla_optim::{BaseConfig, Hyper, Optimizer, OptimizerType};

/// The seed tutorial's `AdamaxConfig`: only the fields of its own. The shared ones
/// (learning_rate, weight_decay, warmup, lr_schedule, ...) live in `BaseConfig`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MyAdamaxConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub epsilon: f64,
    pub max_grad_norm: Option<f64>,
}

impl Default for MyAdamaxConfig {
    fn default() -> Self {
        MyAdamaxConfig { beta1: 0.9, beta2: 0.95, epsilon: 1e-8, max_grad_norm: Some(1.0) }
    }
}

impl OptimizerType for MyAdamaxConfig {
    const DOC: &'static str = "Adamax from my crate: clip, my_adamax, masked weight decay, -lr";

    fn field_docs() -> &'static [(&'static str, &'static str)] {
        &[
            ("beta1", "first-moment decay"),
            ("beta2", "infinity-norm decay"),
            ("epsilon", "added to |g| in the infinity norm"),
            ("max_grad_norm", "global-norm clipping threshold; null disables"),
        ]
    }

    fn validate(&self, _base: &BaseConfig, path: &str) -> xla_optim::Result<()> {
        check_beta(self.beta1, path, "beta1")?;
        check_beta(self.beta2, path, "beta2")?;
        check_positive(self.epsilon, path, "epsilon")?;
        match self.max_grad_norm {
            Some(max_norm) => check_positive(max_norm, path, "max_grad_norm"),
            None => Ok(()),
        }
    }

    fn build(&self, base: &BaseConfig, num_train_steps: u64) -> xla_optim::Result<Optimizer> {
        let mut components = Vec::new();
        if let Some(max_norm) = self.max_grad_norm {
            components.push(clip_by_global_norm(max_norm));
        }
        components.push(my_adamax(self.beta1, self.beta2, self.epsilon));
        // add_decayed_weights on the parameters the mask selects; None when weight_decay is 0.
        components.extend(base.decayed_weights(Hyper::Constant(base.weight_decay), "optimizer")?);
        components.push(scale_by_learning_rate(Hyper::injected("learning_rate")));
        // inject_hyperparams: the learning-rate schedule, evaluated in the graph at each step.
        base.with_learning_rate_schedule(chain(components), num_train_steps)
    }
}
use sirocco::pjrt::{Client, ClientOptions, Plugin};
use sirocco::program::Program;
use sirocco::{DType, HostTensor};
use xla_optim::OptimizerConfig;

const MY_ADAMAX: &str = "
type: my_adamax
lr: 1e-3
weight_decay: 0.1
warmup: 0.1
lr_schedule: cosine
beta1: 0.9
beta2: 0.95
epsilon: 1e-8
max_grad_norm: 1.0
";

/// Runs `steps` updates of the optimizer `yaml` describes on three parameters (one of them a
/// bias, exempt from weight decay) and returns the parameters after each update.
fn trajectory(yaml: &str, steps: usize) -> Result<Vec<Vec<Vec<f32>>>, Box<dyn std::error::Error>> {
    let optimizer = OptimizerConfig::from_yaml_str(yaml, "optimizer")?.build(steps as u64, "optimizer")?;
    let params = [
        ParamSpec::new("layers.0.mlp.weight", DType::F32, &[4, 3]),
        ParamSpec::new("layers.0.mlp.bias", DType::F32, &[3]),
        ParamSpec::new("norm.weight", DType::F32, &[3]),
    ];
    // (params, state, grads) -> (params, state, metrics), params and state donated.
    let update = optimizer.update_function(&params)?;
    let plugin = Plugin::load("cpu")?;
    let client = Client::new(&plugin, &ClientOptions::default())?;
    let program = Program::compile(&client, &update.function)?;

    let mut values: Vec<HostTensor> = params
        .iter()
        .map(|p| HostTensor::from_slice(&p.ty.dims, &vec![0.5f32; p.ty.element_count() as usize]))
        .collect::<Result<_, _>>()?;
    let mut state = optimizer.initial_state(&update.state, &values)?;
    let mut trajectory = Vec::new();
    for step in 0..steps {
        let grads: Vec<HostTensor> = params
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let count = p.ty.element_count() as usize;
                let g: Vec<f32> = (0..count).map(|j| ((step * 7 + i * 5 + j) as f32).sin()).collect();
                HostTensor::from_slice(&p.ty.dims, &g)
            })
            .collect::<Result<_, _>>()?;
        let inputs: Vec<HostTensor> = values.iter().chain(&state).chain(&grads).cloned().collect();
        let mut outputs = program.run(&inputs)?;
        let _metrics = outputs.split_off(params.len() + state.len()); // grad_norm, learning_rate
        state = outputs.split_off(params.len());
        values = outputs;
        trajectory.push(values.iter().map(|v| v.to_vec::<f32>()).collect::<Result<_, _>>()?);
    }
    Ok(trajectory)
}

#[test]
fn my_adamax_matches_the_built_in_adamax() -> Result<(), Box<dyn std::error::Error>> {
    xla_optim::register::<MyAdamaxConfig>("my_adamax")?;
    // Registering again is harmless; another type under a taken name is an error.
    xla_optim::register::<MyAdamaxConfig>("my_adamax")?;
    assert!(xla_optim::register::<MyAdamaxConfig>("adamax").is_err());
    let mine = trajectory(MY_ADAMAX, 20)?;
    let built_in = trajectory(&MY_ADAMAX.replace("type: my_adamax", "type: adamax"), 20)?;
    assert_eq!(mine, built_in);
    Ok(())
}
/// The code blocks of the tutorial with the info string `language`: the lines between a line
/// "```language" and the next line "```".
fn code_blocks(markdown: &str, language: &str) -> Vec<String> {
    let (opening, mut blocks, mut current) = (format!("```{language}"), Vec::new(), None);
    for line in markdown.lines() {
        match current.as_mut() {
            None if line == opening => current = Some(String::new()),
            None => {}
            Some(_) if line == "```" => blocks.extend(current.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    blocks
}

/// Every ```rust block of the tutorial is in this file, in order, and every ```yaml block
/// that uses `my_adamax` builds.
#[test]
fn the_tutorial_shows_this_code() -> Result<(), Box<dyn std::error::Error>> {
    let tutorial = include_str!("../../docs/adding-an-optimizer.md");
    let mut rest = include_str!("tutorial_adding_an_optimizer.rs");
    let rust = code_blocks(tutorial, "rust");
    assert_eq!(rust.len(), 3, "the tutorial's rust blocks: transform, config, check");
    for code in rust {
        let at = rest.find(&code).unwrap_or_else(|| panic!("not in this file, or out of order:\n{code}"));
        rest = &rest[at + code.len()..];
    }
    xla_optim::register::<MyAdamaxConfig>("my_adamax")?;
    let yaml: Vec<String> =
        code_blocks(tutorial, "yaml").into_iter().filter(|b| b.contains("my_adamax")).collect();
    assert!(!yaml.is_empty(), "the tutorial shows no my_adamax YAML");
    for text in yaml {
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text)?;
        let optimizer = yaml.get("optimizer").unwrap_or(&yaml);
        OptimizerConfig::from_yaml(optimizer, "optimizer")?.build(1000, "optimizer")?;
    }
    Ok(())
}

//! `sirocco optimizers` and `sirocco optim replay`: inspect the registered optimizer types and
//! run an optimizer on recorded gradients (to check it against a reference implementation).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sirocco::pjrt::{Client, ClientOptions, Plugin};
use sirocco::program::{Program, ShardedArray};
use sirocco::{DType, HostTensor};
use xla_optim::{describe_types, Optimizer, OptimizerConfig, ParamSpec, UpdateFunction};

use crate::error::{Result, TrainerError};
use crate::tensors;

/// The text `sirocco optimizers` prints: every registered type, its doc, fields and defaults.
pub fn list_optimizers() -> String {
    let mut text = String::new();
    let base = serde_yaml::to_value(xla_optim::BaseConfig::default()).unwrap_or(serde_yaml::Value::Null);
    writeln!(
        text,
        "Fields shared by every type (Levanter's OptimizerConfig; `lr` is an alias of learning_rate):"
    )
    .expect("writing to a String cannot fail");
    if let serde_yaml::Value::Mapping(fields) = base {
        for (name, value) in fields {
            writeln!(
                text,
                "  {:<28}{}",
                name.as_str().unwrap_or_default(),
                xla_optim::registry::yaml_inline(&value)
            )
            .expect("writing to a String cannot fail");
        }
    }
    for info in describe_types() {
        writeln!(text, "\n{}: {}", info.name, info.doc).expect("writing to a String cannot fail");
        for (name, default, doc) in info.fields {
            writeln!(text, "  {name:<28}{default:<12}{doc}").expect("writing to a String cannot fail");
        }
    }
    text
}

/// Arguments of `sirocco optim replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// YAML file with the optimizer's fields (`type: adamax`, `learning_rate: ...`).
    #[arg(long)]
    pub optimizer: PathBuf,
    /// Safetensors with f32 `params/<name>` (initial values) and `grads/<k>/<name>` for k in 0..steps.
    #[arg(long)]
    pub input: PathBuf,
    /// Number of updates (also the run length the schedule is built for).
    #[arg(long)]
    pub steps: usize,
    /// Output safetensors: `params/<k>/<name>` after k updates (k = 1..steps) and `lr` (f32[steps]).
    #[arg(long)]
    pub out: PathBuf,
    /// PJRT plugin (name or path).
    #[arg(long, default_value = "cpu")]
    pub plugin: String,
}

/// XLA:CPU's multi-output fusion, which sirocco turns on when it opens the CPU plugin, makes an
/// update that can be one pass over memory one pass, but slows one that cannot (Adafactor, whose
/// update is scaled by its own RMS: 1.7-1.8x). Unless `SIROCCO_CPU_MULTI_OUTPUT_FUSION` is set,
/// it is left off for such an update. XLA reads its flags once per process, so this runs before
/// the plugin is opened (a process that already opened it keeps its first choice).
pub fn choose_multi_output_fusion(single_pass: bool) -> Result<()> {
    if !single_pass && sirocco::pjrt::multi_output_fusion_setting()?.is_none() {
        tracing::info!(
            "XLA:CPU multi-output fusion left off: this optimizer's update is not a single pass \
             (set {}=1 to turn it on)",
            sirocco::pjrt::MULTI_OUTPUT_FUSION_ENV
        );
        std::env::set_var(sirocco::pjrt::MULTI_OUTPUT_FUSION_ENV, "0");
    }
    Ok(())
}

/// A client of the plugin `plugin` (a pinned name or a path) for the standalone update `update`,
/// with XLA:CPU's multi-output fusion chosen for it first (see [`choose_multi_output_fusion`]).
pub fn update_client(update: &UpdateFunction, plugin: &str) -> Result<Client> {
    choose_multi_output_fusion(update.single_pass)?;
    let plugin = Plugin::load(plugin)?;
    Ok(Client::new(&plugin, &ClientOptions::default())?)
}

/// Reads an optimizer YAML file and builds it for `steps` updates.
pub fn load_optimizer(path: &Path, steps: u64) -> Result<(OptimizerConfig, Optimizer)> {
    let text = std::fs::read_to_string(path).map_err(|error| TrainerError::io(path, error))?;
    let label = format!("{}: optimizer", path.display());
    let config = OptimizerConfig::from_yaml_str(&text, &label)?;
    let optimizer = config.build(steps, &label)?;
    Ok((config, optimizer))
}

/// Every tensor of a replay input is `params/<name>` or `grads/<k>/<name>` of one of those
/// parameters, and the last step asked for has its gradients (checked before anything is sized
/// by `--steps`). Non-finite values are reported, not refused: replaying a bad step is how
/// `apply_if_finite` and `skip_bad_steps` are checked.
fn check_replay_names(
    args: &ReplayArgs,
    input: &[(String, HostTensor)],
    params: &[(String, HostTensor)],
) -> Result<()> {
    let is_param = |name: &str| params.iter().any(|(param, _)| param == name);
    for (name, tensor) in input {
        if let Some(rest) = name.strip_prefix("grads/") {
            let (step, param) = rest.split_once('/').unwrap_or((rest, ""));
            if step.parse::<usize>().is_err() || !is_param(param) {
                return Err(TrainerError::tensors(
                    &args.input,
                    format!("`{name}` is not `grads/<k>/<name>` of a parameter `params/<name>`"),
                ));
            }
        } else if !name.starts_with("params/") {
            return Err(TrainerError::tensors(
                &args.input,
                format!(
                    "unexpected tensor `{name}`: a replay input holds `params/<name>` and `grads/<k>/<name>`"
                ),
            ));
        }
        if let Some((index, value)) = tensors::first_non_finite(tensor) {
            tracing::warn!("{}: `{name}` holds {value} at flat index {index}", args.input.display());
        }
    }
    let last = format!("grads/{}/{}", args.steps - 1, params[0].0);
    if !input.iter().any(|(name, _)| *name == last) {
        return Err(TrainerError::tensors(
            &args.input,
            format!(
                "missing tensor `{last}`: --steps {} needs gradients for steps 0..{}",
                args.steps,
                args.steps - 1
            ),
        ));
    }
    Ok(())
}

/// Runs the replay; returns the number of parameters and steps done.
pub fn replay(args: &ReplayArgs) -> Result<(usize, usize)> {
    if args.steps == 0 {
        return Err(TrainerError::Other("--steps must be at least 1".into()));
    }
    let input = tensors::read(&args.input)?;
    let params: Vec<(String, HostTensor)> = input
        .iter()
        .filter_map(|(name, tensor)| name.strip_prefix("params/").map(|n| (n.to_string(), tensor.clone())))
        .collect();
    if params.is_empty() {
        return Err(TrainerError::tensors(&args.input, "holds no `params/<name>` tensors"));
    }
    check_replay_names(args, &input, &params)?;
    let (_, optimizer) = load_optimizer(&args.optimizer, args.steps as u64)?;
    let gradient = |step: usize, name: &str, like: &HostTensor| -> Result<HostTensor> {
        let key = format!("grads/{step}/{name}");
        let tensor = input
            .iter()
            .find(|(n, _)| *n == key)
            .map(|(_, t)| t.clone())
            .ok_or_else(|| TrainerError::tensors(&args.input, format!("missing tensor `{key}`")))?;
        if tensor.dims() != like.dims() || tensor.dtype() != like.dtype() {
            return Err(TrainerError::tensors(
                &args.input,
                format!(
                    "`{key}` is {}{:?}, parameter `{name}` is {}{:?}",
                    tensor.dtype(),
                    tensor.dims(),
                    like.dtype(),
                    like.dims()
                ),
            ));
        }
        Ok(tensor)
    };
    for (name, tensor) in &params {
        if tensor.dtype() != DType::F32 {
            return Err(TrainerError::tensors(
                &args.input,
                format!("`params/{name}` must be f32, is {}", tensor.dtype()),
            ));
        }
    }
    let specs: Vec<ParamSpec> =
        params.iter().map(|(name, t)| ParamSpec::new(name.clone(), t.dtype(), t.dims())).collect();
    let update = optimizer.update_function(&specs)?;
    let client = update_client(&update, &args.plugin)?;
    let program = Program::compile(&client, &update.function)?;
    let host_params: Vec<HostTensor> = params.iter().map(|(_, t)| t.clone()).collect();
    let initial_state = optimizer.initial_state(&update.state, &host_params)?;
    let put_all = |offset: usize, values: &[HostTensor]| -> Result<Vec<ShardedArray>> {
        values.iter().enumerate().map(|(i, t)| Ok(program.put(offset + i, t)?)).collect()
    };
    let n = specs.len();
    let mut param_arrays = put_all(0, &host_params)?;
    let mut state_arrays = put_all(n, &initial_state)?;
    let lr_index = update.metrics.iter().position(|name| name == "learning_rate");
    let mut learning_rates = Vec::with_capacity(args.steps);
    let mut output = Vec::new();
    for step in 0..args.steps {
        let grads: Vec<HostTensor> =
            params.iter().map(|(name, like)| gradient(step, name, like)).collect::<Result<_>>()?;
        let grad_arrays = put_all(n + update.state.len(), &grads)?;
        let mut arguments: Vec<&ShardedArray> =
            param_arrays.iter().chain(&state_arrays).chain(&grad_arrays).collect();
        let runtime: Vec<ShardedArray> = optimizer
            .runtime_values(step as i64)
            .into_iter()
            .enumerate()
            .map(|(i, value)| program.put(2 * n + update.state.len() + i, &HostTensor::scalar(value)))
            .collect::<std::result::Result<_, _>>()?;
        arguments.extend(&runtime);
        let mut results = program.execute(&arguments)?;
        let metrics = results.split_off(n + update.state.len());
        state_arrays = results.split_off(n);
        param_arrays = results;
        for ((name, _), array) in params.iter().zip(&param_arrays) {
            output.push((format!("params/{}/{name}", step + 1), array.to_host()?));
        }
        let lr = match lr_index {
            Some(index) => metrics[index].to_host()?.to_vec::<f32>()?[0],
            None => f32::NAN,
        };
        learning_rates.push(lr);
    }
    output.push(("lr".into(), HostTensor::from_slice(&[args.steps as i64], &learning_rates)?));
    tensors::write(&args.out, &output)?;
    Ok((n, args.steps))
}

//! The compiled functions of a run: parameter init, optimizer-state init, the train step
//! (forward, loss, gradient, optimizer update and metrics in one executable, parameters and
//! state donated, microbatches accumulated in the graph) and the eval step.

use std::collections::BTreeMap;

use sirocco::hlo::{grad, scan, Builder, Function, Mesh, ScanOptions, Sharding, TensorType, Value};
use sirocco::DType;
use xla_optim::{Optimizer, ParamSpec, StateSpec, UpdateContext};

use crate::config::Precision;
use crate::error::Result;
use crate::model::layers::token_losses;
use crate::model::{Axis, Init, LanguageModel, Parameter};

/// The device mesh of a run: `data` x `model` devices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunMesh {
    pub data: usize,
    pub model: usize,
}

impl RunMesh {
    /// Resolves the configured sizes (-1 = the remaining devices) against `devices`.
    pub fn resolve(data: i64, model: i64, devices: usize) -> std::result::Result<RunMesh, String> {
        let (data, model) = match (data, model) {
            (-1, -1) => return Err("at most one mesh axis can be -1".into()),
            (-1, model) => {
                let model = model as usize;
                if devices % model != 0 {
                    return Err(format!("model = {model} does not divide the {devices} devices"));
                }
                (devices / model, model)
            }
            (data, -1) => {
                let data = data as usize;
                if devices % data != 0 {
                    return Err(format!("data = {data} does not divide the {devices} devices"));
                }
                (data, devices / data)
            }
            (data, model) => (data as usize, model as usize),
        };
        if data * model > devices {
            return Err(format!("data x model = {} is more than the {devices} devices", data * model));
        }
        Ok(RunMesh { data, model })
    }

    pub fn devices(&self) -> usize {
        self.data * self.model
    }

    pub fn mesh(&self) -> Mesh {
        Mesh::new(&[("data", self.data), ("model", self.model)]).expect("positive axis sizes")
    }

    /// FSDP over `data` on the embedding dimension, tensor parallelism over `model` on heads,
    /// MLP and vocabulary; a dimension not divisible by its axis stays whole.
    pub fn parameter_sharding(&self, parameter: &Parameter) -> Sharding {
        let mut used_data = false;
        let mut used_model = false;
        let per_dimension: Vec<Option<&str>> = parameter
            .axes
            .iter()
            .zip(&parameter.dims)
            .map(|(axis, &size)| {
                let (name, count, used) = match axis {
                    Axis::Embed => ("data", self.data, &mut used_data),
                    Axis::Heads | Axis::KvHeads | Axis::Mlp | Axis::Vocab => {
                        ("model", self.model, &mut used_model)
                    }
                    Axis::Layers | Axis::Position => return None,
                };
                if count > 1 && !*used && size % count as i64 == 0 {
                    *used = true;
                    Some(name)
                } else {
                    None
                }
            })
            .collect();
        if per_dimension.iter().all(Option::is_none) {
            Sharding::Replicated
        } else {
            Sharding::axes(&per_dimension)
        }
    }

    /// Parameters as used by the forward pass of a microbatch: gathered over `data` (FSDP
    /// gathers them once per step), still split over `model`.
    fn compute_sharding(&self, parameter: &Parameter) -> Sharding {
        match self.parameter_sharding(parameter) {
            Sharding::Split(per_dimension) => {
                let kept: Vec<Vec<String>> = per_dimension
                    .into_iter()
                    .map(|axes| axes.into_iter().filter(|a| a != "data").collect())
                    .collect();
                if kept.iter().all(Vec::is_empty) {
                    Sharding::Replicated
                } else {
                    Sharding::Split(kept)
                }
            }
            replicated => replicated,
        }
    }

    /// The batch split over `data`.
    pub fn batch_sharding(&self, rank: usize) -> Sharding {
        if self.data == 1 {
            return Sharding::Replicated;
        }
        let mut per_dimension = vec![None; rank];
        per_dimension[0] = Some("data");
        Sharding::axes(&per_dimension)
    }
}

/// The parameters as the optimizer sees them.
pub fn parameter_specs(model: &dyn LanguageModel, precision: Precision) -> Vec<ParamSpec> {
    model.parameters().iter().map(|p| ParamSpec::new(p.name.clone(), precision.params, &p.dims)).collect()
}

/// The sharding of each optimizer state tensor: that of the parameter it belongs to (same
/// shape and its name ends in the parameter's name), replicated otherwise.
pub fn state_shardings(mesh: &RunMesh, model: &dyn LanguageModel, state: &[StateSpec]) -> Vec<Sharding> {
    state
        .iter()
        .map(|spec| {
            model
                .parameters()
                .iter()
                .find(|p| {
                    spec.ty.dims.as_slice() == p.dims.as_slice()
                        && spec.name.ends_with(&format!("/{}", p.name))
                })
                .map_or(Sharding::Replicated, |p| mesh.parameter_sharding(p))
        })
        .collect()
}

fn attach_mesh(builder: &Builder, mesh: &RunMesh) {
    if mesh.devices() > 1 {
        builder.set_mesh(mesh.mesh());
    }
}

fn shard(
    function: &mut Function,
    mesh: &RunMesh,
    parameters: &[(usize, Sharding)],
    outputs: &[(usize, Sharding)],
) -> Result<()> {
    if mesh.devices() == 1 {
        return Ok(());
    }
    for (index, sharding) in parameters {
        function.shard_parameter(*index, sharding.clone())?;
    }
    for (index, sharding) in outputs {
        function.shard_output(*index, sharding.clone())?;
    }
    Ok(())
}

/// `init(key: u64[2]) -> params`: each parameter drawn on the devices from its own stream of
/// the key. The random draws are computed replicated so every mesh gives the same values.
pub fn init_function(model: &dyn LanguageModel, precision: Precision, mesh: &RunMesh) -> Result<Function> {
    let builder = Builder::new("init_params");
    attach_mesh(&builder, mesh);
    let key = builder.param("key", DType::U64, &[2]);
    let mut outputs = Vec::new();
    for (index, parameter) in model.parameters().iter().enumerate() {
        let ty = TensorType::new(precision.params, &parameter.dims);
        let value = match parameter.init {
            Init::Ones => builder.ones(&ty),
            Init::Zeros => builder.zeros(&ty),
            Init::Normal(std) => {
                let stream = &key
                    + &builder.constant(&sirocco::HostTensor::from_slice(&[2], &[0u64, index as u64 + 1])?);
                let (_, normal) = stream.random_normal(&ty.with_dtype(DType::F32));
                let normal =
                    if mesh.devices() > 1 { normal.with_sharding(&Sharding::Replicated) } else { normal };
                (normal * std).convert(precision.params)
            }
        };
        outputs.push(value);
    }
    let mut function = builder.build(&outputs)?;
    let shardings: Vec<(usize, Sharding)> =
        model.parameters().iter().enumerate().map(|(i, p)| (i, mesh.parameter_sharding(p))).collect();
    shard(&mut function, mesh, &[(0, Sharding::Replicated)], &shardings)?;
    Ok(function)
}

/// `init_state(params) -> state`, created on the devices.
pub fn state_init_function(
    model: &dyn LanguageModel,
    optimizer: &Optimizer,
    precision: Precision,
    mesh: &RunMesh,
) -> Result<(Function, Vec<StateSpec>)> {
    let specs = parameter_specs(model, precision);
    let state = optimizer.state_specs(&specs)?;
    let builder = Builder::new("init_state");
    attach_mesh(&builder, mesh);
    let params: Vec<Value> = specs.iter().map(|s| builder.parameter(s.name.clone(), s.ty.clone())).collect();
    let values = optimizer.initial_state_values(&builder, &state, &params)?;
    let mut function = builder.build(&values)?;
    let parameter_shardings: Vec<(usize, Sharding)> =
        model.parameters().iter().enumerate().map(|(i, p)| (i, mesh.parameter_sharding(p))).collect();
    let output_shardings: Vec<(usize, Sharding)> =
        state_shardings(mesh, model, &state).into_iter().enumerate().collect();
    shard(&mut function, mesh, &parameter_shardings, &output_shardings)?;
    Ok((function, state))
}

/// Shapes of one train step.
#[derive(Clone, Debug)]
pub struct StepShape {
    /// Sequences per optimizer step.
    pub batch: i64,
    pub seq_len: i64,
    /// Microbatches accumulated per step (1 = none).
    pub microbatches: i64,
    pub z_loss_weight: f64,
}

impl StepShape {
    /// Splits `batch` over the data devices and into microbatches of at most
    /// `per_device_parallelism` sequences per device.
    pub fn new(
        batch: i64,
        seq_len: i64,
        per_device_parallelism: i64,
        mesh: &RunMesh,
        z_loss_weight: f64,
    ) -> std::result::Result<StepShape, String> {
        let data = mesh.data as i64;
        if batch % data != 0 {
            return Err(format!("train_batch_size {batch} is not divisible by the {data} data devices"));
        }
        let per_device = batch / data;
        let parallel =
            if per_device_parallelism == -1 { per_device } else { per_device_parallelism.min(per_device) };
        if per_device % parallel != 0 {
            return Err(format!(
                "per_device_parallelism {parallel} does not divide the {per_device} sequences per device"
            ));
        }
        Ok(StepShape { batch, seq_len, microbatches: per_device / parallel, z_loss_weight })
    }
}

/// What the train step returns after parameters and state: scalar metrics by name.
#[derive(Clone, Debug)]
pub struct TrainStep {
    pub function: Function,
    pub params: Vec<ParamSpec>,
    pub state: Vec<StateSpec>,
    pub runtime_inputs: Vec<String>,
    /// Names of the scalar outputs after params and state: `loss`, `skipped`, `grad_norm`, then
    /// the optimizer's other metrics (`learning_rate`, ...).
    pub metrics: Vec<String>,
}

/// Mean token loss of `tokens: [batch, seq + 1]` (inputs and next-token targets).
fn mean_loss(
    model: &dyn LanguageModel,
    params: &[Value],
    tokens: &Value,
    compute: DType,
    z_loss_weight: f64,
) -> Value {
    let [batch, width] = [tokens.dims()[0], tokens.dims()[1]];
    let inputs = tokens.slice_axis(1, 0, width - 1);
    let targets = tokens.slice_axis(1, 1, width);
    let logits = model.logits(params, &inputs, compute);
    let losses = token_losses(&logits, &targets, z_loss_weight);
    losses.sum() / (batch * (width - 1)) as f64
}

/// `step(params, state, tokens: i32[batch, seq + 1], runtime...) -> (params, state, metrics...)`.
/// A step whose loss or gradient norm is not finite leaves parameters and state unchanged
/// (`skipped` = 1).
pub fn train_step_function(
    model: &dyn LanguageModel,
    optimizer: &Optimizer,
    precision: Precision,
    mesh: &RunMesh,
    shape: &StepShape,
) -> Result<TrainStep> {
    let specs = parameter_specs(model, precision);
    let state_specs = optimizer.state_specs(&specs)?;
    let builder = Builder::new("train_step");
    attach_mesh(&builder, mesh);
    let params: Vec<Value> =
        specs.iter().map(|s| builder.parameter(format!("params/{}", s.name), s.ty.clone())).collect();
    let state: Vec<Value> =
        state_specs.iter().map(|s| builder.parameter(format!("state/{}", s.name), s.ty.clone())).collect();
    let tokens = builder.param("tokens", DType::I32, &[shape.batch, shape.seq_len + 1]);
    let runtime_inputs = optimizer.runtime_inputs();
    let runtime: BTreeMap<String, Value> = runtime_inputs
        .iter()
        .map(|name| (name.clone(), builder.parameter(name.clone(), TensorType::scalar(DType::F32))))
        .collect();

    let (loss, grads) = if shape.microbatches == 1 {
        let loss = mean_loss(model, &params, &tokens, precision.compute, shape.z_loss_weight);
        let grads = grad(&loss, &params)?;
        (loss, grads)
    } else {
        accumulate_microbatches(model, &params, &tokens, precision, mesh, shape)?
    };

    let ctx = UpdateContext::new(&builder, &params, &specs, &runtime);
    let ctx = UpdateContext { loss: Some(&loss), ..ctx };
    let applied = optimizer.apply(&ctx, &grads, &state)?;
    // The same ops as the clipping's norm, so the graph shares them (no extra pass).
    let grad_norm = xla_optim::transform::global_norm(&builder, &grads);
    let finite = loss.is_finite().and(&grad_norm.is_finite());
    let mut outputs: Vec<Value> =
        params.iter().zip(&applied.params).map(|(old, new)| finite.select(new, old)).collect();
    outputs.extend(state.iter().zip(&applied.state).map(|(old, new)| finite.select(new, old)));
    let mut metrics = vec!["loss".to_string(), "skipped".to_string(), "grad_norm".to_string()];
    outputs.push(loss.convert(DType::F32));
    outputs.push(finite.not().convert(DType::F32));
    outputs.push(grad_norm.convert(DType::F32));
    for (name, value) in &applied.metrics {
        if !metrics.contains(name) {
            metrics.push(name.clone());
            outputs.push(value.convert(DType::F32));
        }
    }
    let mut function = builder.build(&outputs)?;
    let donated = specs.len() + state_specs.len();
    function.donate_matching(0..donated, 0..donated)?;

    let param_shardings: Vec<Sharding> =
        model.parameters().iter().map(|p| mesh.parameter_sharding(p)).collect();
    let state_sharding = state_shardings(mesh, model, &state_specs);
    let mut inputs: Vec<(usize, Sharding)> =
        param_shardings.iter().cloned().chain(state_sharding.iter().cloned()).enumerate().collect();
    inputs.push((donated, mesh.batch_sharding(2)));
    for index in 0..runtime_inputs.len() {
        inputs.push((donated + 1 + index, Sharding::Replicated));
    }
    let mut outputs: Vec<(usize, Sharding)> =
        param_shardings.into_iter().chain(state_sharding).enumerate().collect();
    for index in 0..metrics.len() {
        outputs.push((donated + index, Sharding::Replicated));
    }
    shard(&mut function, mesh, &inputs, &outputs)?;
    Ok(TrainStep { function, params: specs, state: state_specs, runtime_inputs, metrics })
}

/// Loss and gradients averaged over microbatches by a scan in the graph. Each microbatch
/// takes rows from every data shard; parameters are gathered over `data` once, before the
/// loop, rather than in every microbatch.
fn accumulate_microbatches(
    model: &dyn LanguageModel,
    params: &[Value],
    tokens: &Value,
    precision: Precision,
    mesh: &RunMesh,
    shape: &StepShape,
) -> Result<(Value, Vec<Value>)> {
    let k = shape.microbatches;
    let data = mesh.data as i64;
    let per_micro = shape.batch / data / k;
    let width = shape.seq_len + 1;
    // [batch, width] = [data, k, per_micro, width] -> [k, data * per_micro, width]
    let micro = tokens.reshape(&[data, k, per_micro, width]).transpose(&[1, 0, 2, 3]).reshape(&[
        k,
        data * per_micro,
        width,
    ]);
    let gathered: Vec<Value> = params
        .iter()
        .zip(model.parameters())
        .map(|(value, parameter)| {
            if mesh.devices() > 1 {
                value.with_sharding(&mesh.compute_sharding(parameter))
            } else {
                value.clone()
            }
        })
        .collect();
    let mut init: Vec<Value> = vec![tokens.builder().scalar_of(DType::F32, 0.0)];
    init.extend(gathered.iter().map(|p| p.zeros_like().convert(DType::F32)));
    let mut failure = None;
    let (carry, _) = scan(&init, &[micro], ScanOptions::default(), |carry, batch| {
        let body = batch[0].builder();
        let local: Vec<Value> = gathered.iter().map(|p| body.local(p)).collect();
        let loss = mean_loss(model, &local, &batch[0], precision.compute, shape.z_loss_weight);
        match grad(&loss, &local) {
            Ok(grads) => {
                let mut next = vec![&carry[0] + &loss];
                next.extend(carry[1..].iter().zip(&grads).map(|(sum, g)| sum + &g.convert(DType::F32)));
                (next, Vec::new())
            }
            Err(error) => {
                failure = Some(error);
                (carry.to_vec(), Vec::new())
            }
        }
    });
    if let Some(error) = failure {
        return Err(error.into());
    }
    let scale = 1.0 / k as f64;
    let loss = &carry[0] * scale;
    let grads = carry[1..].iter().zip(params).map(|(sum, p)| (sum * scale).convert(p.dtype())).collect();
    Ok((loss, grads))
}

/// `eval(params, tokens) -> (loss_sum, tokens, bytes)`: summed token losses (no z-loss), the
/// number of target tokens, and the UTF-8 bytes they stand for (for bits per byte).
pub fn eval_function(
    model: &dyn LanguageModel,
    precision: Precision,
    mesh: &RunMesh,
    batch: i64,
    seq_len: i64,
    token_bytes: &[u32],
) -> Result<Function> {
    let specs = parameter_specs(model, precision);
    let builder = Builder::new("eval_step");
    attach_mesh(&builder, mesh);
    let params: Vec<Value> =
        specs.iter().map(|s| builder.parameter(format!("params/{}", s.name), s.ty.clone())).collect();
    let tokens = builder.param("tokens", DType::I32, &[batch, seq_len + 1]);
    let inputs = tokens.slice_axis(1, 0, seq_len);
    let targets = tokens.slice_axis(1, 1, seq_len + 1);
    let logits = model.logits(&params, &inputs, precision.compute);
    let loss_sum = token_losses(&logits, &targets, 0.0).sum();
    let lengths: Vec<f32> = token_bytes.iter().map(|&b| b as f32).collect();
    let table = builder.constant(&sirocco::HostTensor::from_slice(&[lengths.len() as i64], &lengths)?);
    let bytes = table.take(&targets).sum();
    let count = builder.scalar_of(DType::F32, (batch * seq_len) as f64);
    let mut function = builder.build(&[loss_sum, count, bytes])?;
    let mut inputs: Vec<(usize, Sharding)> =
        model.parameters().iter().enumerate().map(|(i, p)| (i, mesh.parameter_sharding(p))).collect();
    inputs.push((specs.len(), mesh.batch_sharding(2)));
    let outputs: Vec<(usize, Sharding)> = (0..3).map(|i| (i, Sharding::Replicated)).collect();
    shard(&mut function, mesh, &inputs, &outputs)?;
    Ok(function)
}

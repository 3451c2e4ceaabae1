//! `sirocco bench …`: the measurements behind docs/benchmarks.md.
//!
//! Timings are medians of repeated runs after warm-up; memory throughput is compared with the
//! machine's copy bandwidth measured in the same process.

use std::path::PathBuf;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use serde::Serialize;
use sirocco::hlo::Builder;
use sirocco::program::{Program, ShardedArray};
use sirocco::{DType, HostTensor};
use xla_optim::ParamSpec;

use crate::error::{Result, TrainerError};
use crate::optim_tools::{load_optimizer, update_client};

/// Median of `values` (which it sorts).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let middle = values.len() / 2;
    if values.len() % 2 == 0 {
        (values[middle - 1] + values[middle]) / 2.0
    } else {
        values[middle]
    }
}

/// Bytes per second of a large memory copy using every core (read + write counted), the
/// roofline for memory-bound updates.
pub fn copy_bandwidth(bytes: usize, repeats: usize) -> f64 {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let source = vec![1u8; bytes];
    let mut target = vec![0u8; bytes];
    let chunk = bytes.div_ceil(threads);
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let start = Instant::now();
        std::thread::scope(|scope| {
            for (from, to) in source.chunks(chunk).zip(target.chunks_mut(chunk)) {
                scope.spawn(move || to.copy_from_slice(from));
            }
        });
        times.push(start.elapsed().as_secs_f64());
        std::hint::black_box(&target);
    }
    2.0 * bytes as f64 / median(&mut times)
}

/// Arguments of `sirocco bench optimizer`.
#[derive(Debug, Clone, clap::Args)]
pub struct OptimizerBenchArgs {
    /// YAML file of the optimizer.
    #[arg(long)]
    pub optimizer: PathBuf,
    /// Total number of f32 parameters.
    #[arg(long)]
    pub params: u64,
    /// Number of tensors the parameters are split into.
    #[arg(long, default_value_t = 32)]
    pub tensors: u64,
    /// Timed steps (after 3 warm-up steps).
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    #[arg(long, default_value = "cpu")]
    pub plugin: String,
    /// Where the learning-rate schedule is computed: `runtime` (on the host, fed to the step,
    /// as `sirocco train` does by default) or `graph`.
    #[arg(long, value_enum, default_value_t = crate::config::HyperparameterSource::Runtime)]
    pub hyperparameters: crate::config::HyperparameterSource,
}

/// What `sirocco bench optimizer` measures.
#[derive(Debug, Clone, Serialize)]
pub struct OptimizerBenchReport {
    pub optimizer: String,
    pub params: u64,
    pub tensors: u64,
    pub steps: usize,
    pub median_step_s: f64,
    pub min_step_s: f64,
    /// Bytes the update must move per parameter: every parameter-sized input read once,
    /// every output written once, and the gradients read once more for a global norm.
    pub bytes_per_param: f64,
    /// XLA's cost analysis "bytes accessed" per parameter, when the plugin reports it.
    pub xla_bytes_accessed_per_param: Option<f64>,
    pub achieved_gb_s: f64,
    pub copy_bandwidth_gb_s: f64,
    /// achieved / copy bandwidth.
    pub roofline_fraction: f64,
    pub compile_s: f64,
}

/// The most tensors `bench optimizer` takes: XLA's compile time grows faster than their number
/// (about a minute for 2,000).
const MAX_BENCH_TENSORS: u64 = 4_096;
/// The most timed steps `bench optimizer` takes.
const MAX_BENCH_STEPS: usize = 1_000_000;

/// `MemAvailable` of `/proc/meminfo`, in bytes (`None` where there is no such file).
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|line| line.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// K tensor shapes totalling `params` elements (2-D where the size allows).
fn tensor_dims(params: u64, tensors: u64) -> Vec<Vec<i64>> {
    let base = params / tensors;
    (0..tensors)
        .map(|i| {
            let size = if i == tensors - 1 { params - base * (tensors - 1) } else { base } as i64;
            if size % 1024 == 0 {
                vec![size / 1024, 1024]
            } else {
                vec![size]
            }
        })
        .collect()
}

pub fn optimizer(args: &OptimizerBenchArgs) -> Result<OptimizerBenchReport> {
    if args.params == 0 || args.tensors == 0 || args.tensors > args.params || args.steps == 0 {
        return Err(TrainerError::Other(
            "--params, --tensors and --steps must be positive, tensors <= params".into(),
        ));
    }
    if args.tensors > MAX_BENCH_TENSORS || args.steps > MAX_BENCH_STEPS {
        return Err(TrainerError::Other(format!(
            "--tensors must be at most {MAX_BENCH_TENSORS} and --steps at most {MAX_BENCH_STEPS}"
        )));
    }
    // Parameters, gradients and up to two moments live in host memory (the CPU plugin's device
    // memory is host memory too), plus what the update writes: refuse what cannot fit.
    let needed = args.params.saturating_mul(4 * 5);
    if let Some(available) = available_memory() {
        if needed > available {
            return Err(TrainerError::Other(format!(
                "--params {} needs about {:.1} GB (parameters, gradients, state and their updates), \
                 more than the {:.1} GB of memory available",
                args.params,
                needed as f64 / 1e9,
                available as f64 / 1e9
            )));
        }
    }
    let warmup = 3;
    let (config, optimizer) = load_optimizer(&args.optimizer, (args.steps + warmup) as u64)?;
    let optimizer = match args.hyperparameters {
        crate::config::HyperparameterSource::Runtime => optimizer.with_runtime_hyperparameters(),
        crate::config::HyperparameterSource::Graph => optimizer,
    };
    let specs: Vec<ParamSpec> = tensor_dims(args.params, args.tensors)
        .iter()
        .enumerate()
        .map(|(i, dims)| ParamSpec::new(format!("blocks.{i}.weight"), DType::F32, dims))
        .collect();
    let update = optimizer.update_function(&specs)?;
    let client = update_client(&update, &args.plugin)?;
    let compile_start = Instant::now();
    let program = Program::compile(&client, &update.function)?;
    let compile_s = compile_start.elapsed().as_secs_f64();

    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut random = |dims: &[i64], scale: f32| -> Result<HostTensor> {
        let count: i64 = dims.iter().product();
        let values: Vec<f32> = (0..count).map(|_| rng.gen_range(-scale..scale)).collect();
        Ok(HostTensor::from_slice(dims, &values)?)
    };
    let n = specs.len();
    let host_params: Vec<HostTensor> =
        specs.iter().map(|s| random(&s.ty.dims, 1.0)).collect::<Result<_>>()?;
    let host_state = optimizer.initial_state(&update.state, &host_params)?;
    let mut params: Vec<ShardedArray> = host_params
        .iter()
        .enumerate()
        .map(|(i, t)| program.put(i, t))
        .collect::<std::result::Result<_, _>>()?;
    drop(host_params);
    let mut state: Vec<ShardedArray> = host_state
        .iter()
        .enumerate()
        .map(|(i, t)| program.put(n + i, t))
        .collect::<std::result::Result<_, _>>()?;
    drop(host_state);
    let grads: Vec<ShardedArray> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| Ok(program.put(n + update.state.len() + i, &random(&s.ty.dims, 1e-3)?)?))
        .collect::<Result<_>>()?;

    let mut times = Vec::with_capacity(args.steps);
    for step in 0..warmup + args.steps {
        let runtime: Vec<ShardedArray> = optimizer
            .runtime_values(step as i64)
            .into_iter()
            .enumerate()
            .map(|(i, v)| program.put(2 * n + update.state.len() + i, &HostTensor::scalar(v)))
            .collect::<std::result::Result<_, _>>()?;
        let arguments: Vec<&ShardedArray> =
            params.iter().chain(&state).chain(&grads).chain(&runtime).collect();
        let start = Instant::now();
        let mut outputs = program.execute(&arguments)?;
        for output in &outputs {
            for shard in output.shards() {
                shard.ready()?.wait()?;
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        if step >= warmup {
            times.push(elapsed);
        }
        outputs.truncate(n + update.state.len());
        state = outputs.split_off(n);
        params = outputs;
    }

    let param_bytes: u64 = specs.iter().map(|s| s.ty.element_count() as u64 * 4).sum();
    let big = |ty: &sirocco::hlo::TensorType| ty.element_count() as u64 * ty.dtype.size_in_bytes() as u64;
    let inputs: u64 = program.parameter_types().iter().map(big).sum();
    let outputs: u64 = program.output_types().iter().map(big).sum();
    let norm_read = if update.metrics.iter().any(|m| m == "grad_norm") { param_bytes } else { 0 };
    let bytes = (inputs + outputs + norm_read) as f64;
    let min_step_s = times.iter().copied().fold(f64::INFINITY, f64::min);
    let median_step_s = median(&mut times);
    let copy = copy_bandwidth(512 << 20, 5);
    let achieved = bytes / median_step_s;
    Ok(OptimizerBenchReport {
        optimizer: config.type_name().to_string(),
        params: args.params,
        tensors: args.tensors,
        steps: args.steps,
        median_step_s,
        min_step_s,
        bytes_per_param: bytes / args.params as f64,
        xla_bytes_accessed_per_param: program
            .executable()
            .cost("bytes accessed")
            .map(|b| b / args.params as f64),
        achieved_gb_s: achieved / 1e9,
        copy_bandwidth_gb_s: copy / 1e9,
        roofline_fraction: achieved / copy,
        compile_s,
    })
}

impl std::fmt::Display for OptimizerBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "optimizer        {} ({} f32 parameters in {} tensors)",
            self.optimizer, self.params, self.tensors
        )?;
        writeln!(
            f,
            "step time        median {:.2} ms, min {:.2} ms over {} steps",
            self.median_step_s * 1e3,
            self.min_step_s * 1e3,
            self.steps
        )?;
        writeln!(f, "bytes moved      {:.1} per parameter", self.bytes_per_param)?;
        if let Some(xla) = self.xla_bytes_accessed_per_param {
            writeln!(f, "XLA estimate     {xla:.1} bytes accessed per parameter")?;
        }
        writeln!(f, "throughput       {:.2} GB/s", self.achieved_gb_s)?;
        writeln!(
            f,
            "copy bandwidth   {:.2} GB/s ({:.0}% of it)",
            self.copy_bandwidth_gb_s,
            self.roofline_fraction * 100.0
        )?;
        write!(f, "compile          {:.2} s", self.compile_s)
    }
}

/// Arguments of `sirocco bench emit`.
#[derive(Debug, Clone, clap::Args)]
pub struct EmitBenchArgs {
    /// Size of the graph: --ops / 2 rounds of two elementwise ops, with their constants (the
    /// report gives the exact count of live ops, about 1.25x this).
    #[arg(long, default_value_t = 100_000)]
    pub ops: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct EmitBenchReport {
    pub ops: usize,
    pub build_s: f64,
    pub emit_s: f64,
    pub text_bytes: usize,
}

/// Builds a graph of `ops` elementwise and reduction ops over a few inputs and times its
/// StableHLO emission (median of 3).
pub fn emit(args: &EmitBenchArgs) -> Result<EmitBenchReport> {
    let start = Instant::now();
    let builder = Builder::new("emit_bench");
    let x = builder.param("x", DType::F32, &[8, 16]);
    let y = builder.param("y", DType::F32, &[8, 16]);
    let mut current = x.clone();
    for i in 0..args.ops / 2 {
        let mixed = match i % 4 {
            0 => &current * &y,
            1 => &current + (i as f64),
            2 => current.tanh(),
            _ => &current - &x,
        };
        current = mixed.max(&y);
    }
    let function = builder.build(&[current.sum()])?;
    let build_s = start.elapsed().as_secs_f64();
    let mut times = Vec::new();
    let mut text_bytes = 0;
    for _ in 0..3 {
        let start = Instant::now();
        let text = function.to_stablehlo();
        times.push(start.elapsed().as_secs_f64());
        text_bytes = text.len();
    }
    Ok(EmitBenchReport { ops: function.live_node_count(), build_s, emit_s: median(&mut times), text_bytes })
}

impl std::fmt::Display for EmitBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "ops              {}", self.ops)?;
        writeln!(f, "build            {:.3} s", self.build_s)?;
        writeln!(f, "emit             {:.3} s (median of 3)", self.emit_s)?;
        write!(f, "text             {} bytes", self.text_bytes)
    }
}

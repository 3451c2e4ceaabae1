//! `sirocco train`: the run. Loads and checks the job config, tokenizes (once, cached),
//! compiles the step, initializes or resumes, then loops: next batch from the prefetcher,
//! one executable per step, metrics read one step late so the device never waits for the
//! host, evals, checkpoints on a background thread, clean stop on SIGTERM/SIGINT.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sirocco::hlo::{Builder, DotDimensions, Function, Sharding, TensorType};
use sirocco::pjrt::{Client, CompileCache, Plugin};
use sirocco::program::{Program, ShardedArray};
use sirocco::{DType, HostTensor};
use tokio::sync::oneshot;
use xla_optim::{Optimizer, OptimizerConfig};

use crate::checkpoint::{self, CheckpointContents, Checkpointer};
use crate::config::{HyperparameterSource, JobConfig, NanPolicy, Precision};
use crate::data::{eval_batches, tokenize_split, BatchIter, DataPosition, Dataset, Prefetcher, Tokenizer};
use crate::error::{Result, TrainerError};
use crate::metrics::Tracker;
use crate::model::{self, LanguageModel};
use crate::progress::Progress;
use crate::signals;
use crate::step::{self, RunMesh, StepShape, TrainStep};

/// The job a command works on: `sirocco train` takes only this; `sirocco hlo` and
/// `sirocco bench train` flatten it into their own arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct JobArgs {
    /// The job's YAML file; repeat to layer files (later ones override: e.g. a job, then a
    /// model size from configs/models/).
    #[arg(long, required = true)]
    pub config: Vec<PathBuf>,
    /// Override a field: `--set trainer.num_train_steps=100` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

/// What a finished (or stopped) run reports.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    pub run_dir: PathBuf,
    /// The step the run is at: the step it resumed from plus `trained_steps`.
    pub steps_done: u64,
    /// Steps this call ran, skipped ones included.
    pub trained_steps: u64,
    /// The checkpoint the run resumed from, if any.
    pub resumed_from: Option<PathBuf>,
    /// The checkpoint was already at `trainer.num_train_steps` (or past it): nothing was trained.
    pub already_done: bool,
    /// The loss of the first step whose update was applied.
    pub first_loss: Option<f64>,
    /// The loss of the last step whose update was applied: the last finite one.
    pub last_loss: Option<f64>,
    pub last_eval_loss: Option<f64>,
    /// Steps whose update was thrown away for a non-finite loss or gradients
    /// (`trainer.on_nan: skip`).
    pub skipped_steps: u64,
    pub stopped_early: bool,
    pub tokens_per_second: f64,
}

impl TrainSummary {
    /// A run in `run_dir` at step `steps_done`, resumed from the checkpoint `resumed_from`,
    /// nothing measured yet.
    fn at(run_dir: PathBuf, steps_done: u64, resumed_from: Option<PathBuf>) -> TrainSummary {
        TrainSummary {
            run_dir,
            steps_done,
            trained_steps: 0,
            resumed_from,
            already_done: false,
            first_loss: None,
            last_loss: None,
            last_eval_loss: None,
            skipped_steps: 0,
            stopped_early: false,
            tokens_per_second: 0.0,
        }
    }
}

/// The RNG state saved with checkpoints: the seed the parameters were drawn from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
struct RngState {
    seed: u64,
}

/// Everything compiled and loaded for a run.
pub struct Session {
    pub job: JobConfig,
    pub optimizer_config: OptimizerConfig,
    pub optimizer: Optimizer,
    pub precision: Precision,
    pub client: Client,
    pub mesh: RunMesh,
    pub model: Box<dyn LanguageModel>,
    pub tokenizer: Tokenizer,
    pub shape: StepShape,
}

impl Session {
    /// Reads and checks everything that needs no compilation: config, optimizer, plugin,
    /// mesh, tokenizer and model.
    pub fn open(config: &[PathBuf], overrides: &[String]) -> Result<Session> {
        let job = JobConfig::load(config, overrides)?;
        let optimizer_path = format!("{}: optimizer", job.source);
        let optimizer_config = OptimizerConfig::from_yaml(&job.optimizer, &optimizer_path)?;
        let optimizer = optimizer_config.build(job.trainer.num_train_steps, &optimizer_path)?;
        let optimizer = match job.trainer.hyperparameters {
            HyperparameterSource::Runtime => optimizer.with_runtime_hyperparameters(),
            HyperparameterSource::Graph => optimizer,
        };
        let precision =
            Precision::parse(&job.trainer.mp).map_err(|message| job.error("trainer.mp", message))?;
        let tokenizer = Tokenizer::load(&job.data.tokenizer)?;
        let model = model::build(&job.model, tokenizer.vocab_size());
        // Before the plugin is opened: whether XLA:CPU's multi-output fusion serves this update.
        let single_pass = optimizer.single_pass(&step::parameter_specs(model.as_ref(), precision))?;
        crate::optim_tools::choose_multi_output_fusion(single_pass)?;
        let runtime = &job.trainer.runtime;
        let plugin = Plugin::load(&runtime.plugin)
            .map_err(|error| job.error("trainer.runtime.plugin", error.to_string()))?;
        let cache_dir = runtime.compile_cache.clone().unwrap_or_else(CompileCache::default_dir);
        let compile_cache = CompileCache::new(cache_dir)
            .map_err(|error| job.error("trainer.runtime.compile_cache", error.to_string()))?;
        let client = Client::new(&plugin, &runtime.client_options())
            .map_err(|error| job.error("trainer.runtime", error.to_string()))?
            .with_compile_cache(compile_cache);
        let mesh = RunMesh::resolve(
            job.trainer.mesh.data,
            job.trainer.mesh.model,
            client.addressable_devices().len(),
        )
        .map_err(|message| job.error("trainer.mesh", message))?;
        let available = client.addressable_devices().len();
        if mesh.devices() < available {
            tracing::warn!(
                "the mesh (data {} x model {}) uses {} of the {available} devices",
                mesh.data,
                mesh.model,
                mesh.devices()
            );
        }
        let shape = StepShape::new(
            job.trainer.train_batch_size,
            job.model.seq_len,
            job.trainer.per_device_parallelism,
            &mesh,
            job.trainer.z_loss_weight,
        )
        .map_err(|message| job.error("trainer.train_batch_size", message))?;
        Ok(Session { job, optimizer_config, optimizer, precision, client, mesh, model, tokenizer, shape })
    }

    pub fn train_step(&self) -> Result<TrainStep> {
        step::train_step_function(
            self.model.as_ref(),
            &self.optimizer,
            self.precision,
            &self.mesh,
            &self.shape,
        )
    }

    fn compile(&self, function: &Function, what: &str) -> Result<Program> {
        let start = Instant::now();
        let program = Program::compile(&self.client, function)?;
        tracing::info!("compiled {what} in {:.2} s", start.elapsed().as_secs_f64());
        Ok(program)
    }
}

/// Peak FLOP/s of the run's devices together, measured with a data-parallel f32 matmul.
fn measure_peak_flops(session: &Session) -> Result<f64> {
    let devices = session.mesh.devices() as i64;
    let (m, k, n) = (512 * devices, 1024, 1024);
    let builder = Builder::new("peak_flops");
    if devices > 1 {
        builder.set_mesh(session.mesh.mesh());
    }
    let a = builder.param("a", DType::F32, &[m, k]);
    let b = builder.param("b", DType::F32, &[k, n]);
    let product = a.dot_general(&b, &DotDimensions::matmul(2));
    let mut function = builder.build(&[product.sum()])?;
    if devices > 1 {
        function.shard_parameter(0, session.mesh.batch_sharding(2))?;
        function.shard_parameter(1, Sharding::Replicated)?;
        function.shard_output(0, Sharding::Replicated)?;
    }
    let program = Program::compile(&session.client, &function)?;
    let a = program.put(0, &HostTensor::full(DType::F32, &[m, k], 0.5)?)?;
    let b = program.put(1, &HostTensor::full(DType::F32, &[k, n], 0.5)?)?;
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let start = Instant::now();
        let out = program.execute(&[&a, &b])?;
        out[0].to_host()?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok(2.0 * (m * k * n) as f64 / best)
}

/// Tokenizes (or reuses the cache of) the `train` or `validation` files and packs them, checking
/// their ids against the model's vocabulary; errors name the config field as well as the file:
/// `data.cache_dir` for a file in the cache (or the cache directory itself), `data.train_urls`
/// (or `data.validation_urls`) otherwise.
fn open_split(session: &Session, split: &str) -> Result<Dataset> {
    let job = &session.job;
    let (urls, field) = if split == "train" {
        (&job.data.train_urls, "data.train_urls")
    } else {
        (&job.data.validation_urls, "data.validation_urls")
    };
    tokenize_split(&job.data, urls, split, &session.tokenizer)
        .and_then(|tokenized| {
            Dataset::open_for_model(&tokenized, job.model.seq_len, session.tokenizer.vocab_size())
        })
        .map_err(|error| {
            let in_cache = match &error {
                TrainerError::Io { path, .. } | TrainerError::Data { path, .. } => {
                    in_split_cache(path, &job.data.cache_dir, split)
                }
                _ => false,
            };
            job.error(if in_cache { "data.cache_dir" } else { field }, error.to_string())
        })
}

/// Whether `path` is the cache directory of `split` (`cache_dir/<split>-<key>`) or inside it.
fn in_split_cache(path: &Path, cache_dir: &Path, split: &str) -> bool {
    let first = path.strip_prefix(cache_dir).ok().and_then(|rest| rest.components().next());
    first.is_some_and(|name| name.as_os_str().to_string_lossy().starts_with(&format!("{split}-")))
}

/// Creates the directory `path` (and its parents) that the config field `field` names; the
/// error names the field.
fn create_directory(job: &JobConfig, field: &str, path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|error| {
        let problem = if path.exists() && !path.is_dir() {
            "exists and is not a directory".to_string()
        } else if error.kind() == std::io::ErrorKind::NotADirectory {
            format!("a parent directory is a file ({error})")
        } else {
            error.to_string()
        };
        job.error(field, format!("{}: {problem}", path.display()))
    })
}

/// Device arrays of the model state.
struct State {
    params: Vec<ShardedArray>,
    opt_state: Vec<ShardedArray>,
}

/// Launches one train step: `state` is donated, the new state and the metric outputs
/// returned. `hyperparameters` are the runtime inputs (the learning rate) for this update.
fn launch_step(
    program: &Program,
    state: State,
    tokens: &ShardedArray,
    hyperparameters: &[f32],
) -> Result<(State, Vec<ShardedArray>)> {
    let (n_params, n_state) = (state.params.len(), state.opt_state.len());
    let runtime: Vec<ShardedArray> = hyperparameters
        .iter()
        .enumerate()
        .map(|(i, value)| program.put(n_params + n_state + 1 + i, &HostTensor::scalar(*value)))
        .collect::<std::result::Result<_, _>>()?;
    let mut arguments: Vec<&ShardedArray> = state.params.iter().chain(&state.opt_state).collect();
    arguments.push(tokens);
    arguments.extend(&runtime);
    let mut outputs = program.execute(&arguments)?;
    let metrics = outputs.split_off(n_params + n_state);
    let opt_state = outputs.split_off(n_params);
    Ok((State { params: outputs, opt_state }, metrics))
}

fn host_tensors(
    names: impl Iterator<Item = String>,
    arrays: &[ShardedArray],
) -> Result<Vec<(String, HostTensor)>> {
    names.zip(arrays).map(|(name, array)| Ok((name, array.to_host()?))).collect()
}

/// Metrics of a launched step, read once the next step is launched.
struct Pending {
    step: u64,
    metrics: Vec<ShardedArray>,
    data_wait: Duration,
    /// When the step's iteration began (before waiting for its batch).
    started: Instant,
    /// When the step's outputs were computed, read in the plugin's ready callback. The loop
    /// itself notices later (after launching the next step, or while reading the previous
    /// step's metrics), and a thread woken to wait would add its own scheduling delay.
    finished: oneshot::Receiver<sirocco::pjrt::Result<Instant>>,
}

impl Pending {
    fn launched(
        step: u64,
        metrics: Vec<ShardedArray>,
        data_wait: Duration,
        started: Instant,
    ) -> Result<Pending> {
        let (sender, finished) = oneshot::channel();
        metrics[0].shards()[0].ready()?.on_ready(move |status| {
            // Nobody waits any more when the run failed meanwhile.
            let _ = sender.send(status.map(|()| Instant::now()));
        })?;
        Ok(Pending { step, metrics, data_wait, started, finished })
    }
}

/// The checkpoint a run resumes from: read, verified and checked against the run's tensors.
struct Resume {
    dir: PathBuf,
    contents: CheckpointContents,
    position: DataPosition,
}

/// Finds, verifies and checks the latest checkpoint before anything is compiled, so that a run
/// which cannot resume fails at once.
fn find_resume(job: &JobConfig, checkpointer: &Checkpointer, step: &TrainStep) -> Result<Option<Resume>> {
    let Some(dir) = checkpointer.latest()? else { return Ok(None) };
    let contents = checkpoint::load(&dir)?;
    let param_types: Vec<(String, TensorType)> =
        step.params.iter().map(|p| (p.name.clone(), p.ty.clone())).collect();
    let state_types: Vec<(String, TensorType)> =
        step.state.iter().map(|s| (s.name.clone(), s.ty.clone())).collect();
    checkpoint::check_compatible(&contents, &param_types, &state_types)
        .map_err(|error| TrainerError::Other(format!("{}: {error}", dir.display())))?;
    let position: DataPosition = serde_json::from_value(contents.data_position.clone())
        .map_err(|error| TrainerError::Other(format!("{}: data position: {error}", dir.display())))?;
    check_data_layout(job, &dir, &contents.config, position)?;
    Ok(Some(Resume { dir, contents, position }))
}

/// Refuses a checkpoint saved with another `trainer.train_batch_size` or `model.seq_len` (read
/// from the config saved with it): its data position counts batches of that many sequences of
/// that length, so in this run it would point at other data. (A `model.seq_len` that changes
/// the parameters' shapes is also caught by [`checkpoint::check_compatible`].)
fn check_data_layout(
    job: &JobConfig,
    dir: &Path,
    saved_config: &serde_yaml::Value,
    position: DataPosition,
) -> Result<()> {
    let fields = [
        ("trainer", "train_batch_size", job.trainer.train_batch_size, "batches of that many sequences"),
        ("model", "seq_len", job.model.seq_len, "sequences of that length"),
    ];
    for (section, name, current, unit) in fields {
        let saved = saved_config.get(section).and_then(|fields| fields.get(name));
        if saved.and_then(serde_yaml::Value::as_i64) == Some(current) {
            continue;
        }
        let Some(saved) = saved else {
            return Err(job.error(
                format!("{section}.{name}"),
                format!(
                    "the config saved with the checkpoint {} has no {section}.{name}, so its data \
                     position cannot be checked against this run's {current}; start a new run \
                     (another trainer.run_dir or trainer.checkpointer.base_path)",
                    dir.display()
                ),
            ));
        };
        let saved = serde_yaml::to_string(saved).unwrap_or_default().trim().to_string();
        return Err(job.error(
            format!("{section}.{name}"),
            format!(
                "is {current}, but the checkpoint {} was saved with {saved}: its data position \
                 (epoch {}, batch {}) counts {unit}, so this run would resume on other data; set \
                 it back to {saved} to resume, or start a new run (another trainer.run_dir or \
                 trainer.checkpointer.base_path)",
                dir.display(),
                position.epoch,
                position.index
            ),
        ));
    }
    // These change which data the resumed run sees, not how its position is counted: allowed
    // (a new data mix on purpose), but said.
    let changes = [
        ("trainer", "seed", serde_yaml::to_value(job.trainer.seed), "the shuffle differs"),
        ("data", "train_urls", serde_yaml::to_value(&job.data.train_urls), "the corpus differs"),
        ("data", "tokenizer", serde_yaml::to_value(&job.data.tokenizer), "the token ids differ"),
    ];
    for (section, name, current, what) in changes {
        let saved = saved_config.get(section).and_then(|fields| fields.get(name));
        if let (Some(saved), Ok(current)) = (saved, current) {
            if *saved != current {
                let show = |value: &serde_yaml::Value| {
                    serde_yaml::to_string(value).unwrap_or_default().trim().replace('\n', " ")
                };
                tracing::warn!(
                    "{}: {section}.{name} is {}, but the checkpoint {} was saved with {}: {what}, so \
                     the resumed run does not see the data an uninterrupted one would have",
                    job.source,
                    show(&current),
                    dir.display(),
                    show(saved)
                );
            }
        }
    }
    Ok(())
}

/// Puts checkpoint tensors on the devices as arguments `first..` of `program`, in the order of
/// `names` (the run's), whatever their order in the checkpoint (sorted by name).
fn put_by_name<'a>(
    program: &Program,
    first: usize,
    tensors: &[(String, HostTensor)],
    names: impl Iterator<Item = &'a str>,
) -> Result<Vec<ShardedArray>> {
    let by_name: HashMap<&str, &HostTensor> = tensors.iter().map(|(name, t)| (name.as_str(), t)).collect();
    names
        .enumerate()
        .map(|(index, name)| {
            let tensor = by_name
                .get(name)
                .ok_or_else(|| TrainerError::Other(format!("the checkpoint has no tensor `{name}`")))?;
            Ok(program.put(first + index, tensor)?)
        })
        .collect()
}

pub async fn train(args: &JobArgs) -> Result<TrainSummary> {
    // Installed first, so a SIGTERM during tokenization or compilation stops the run cleanly
    // before its first step instead of killing it.
    let stop = signals::stop_requested()?;
    let session = Session::open(&args.config, &args.overrides)?;
    let job = &session.job;
    let trainer = &job.trainer;
    let run_dir = trainer.run_dir.clone();
    create_directory(job, "trainer.run_dir", &run_dir)?;
    // Created now, so that a path that cannot hold checkpoints fails before anything is
    // compiled, naming its field, rather than at the first save.
    let checkpoints = job.checkpointer();
    create_directory(job, "trainer.checkpointer.base_path", &checkpoints.base_path)?;

    // Data: tokenized once into the cache, reused by later runs.
    let train_data = Arc::new(open_split(&session, "train")?);
    let validation =
        if job.data.validation_urls.is_empty() { None } else { Some(open_split(&session, "validation")?) };
    tracing::info!(
        "train corpus: {} tokens, {} sequences of {}",
        train_data.num_tokens(),
        train_data.num_sequences(),
        job.model.seq_len
    );

    // The checkpoint to resume from, checked against the step's tensors (built, not compiled).
    let step = session.train_step()?;
    let mut checkpointer = Checkpointer::new(&checkpoints);
    let resume = find_resume(job, &checkpointer, &step)?;
    if let Some(resume) = resume.as_ref().filter(|r| r.contents.step >= trainer.num_train_steps) {
        tracing::info!(
            "{} is at step {}: the run of {} steps is already done (raise trainer.num_train_steps to go on)",
            resume.dir.display(),
            resume.contents.step,
            trainer.num_train_steps
        );
        let summary = TrainSummary::at(run_dir, resume.contents.step, Some(resume.dir.clone()));
        return Ok(TrainSummary { already_done: true, ..summary });
    }

    // Programs.
    let step_program = session.compile(&step.function, "train step")?;
    let eval_batch = session.shape.batch;
    let eval_program = match &validation {
        Some(_) => Some(session.compile(
            &step::eval_function(
                session.model.as_ref(),
                session.precision,
                &session.mesh,
                eval_batch,
                job.model.seq_len,
                &session.tokenizer.token_byte_lengths(),
            )?,
            "eval step",
        )?),
        None => None,
    };
    let eval_data: Vec<HostTensor> = match &validation {
        Some(dataset) => eval_batches(dataset, eval_batch, trainer.max_eval_batches),
        None => Vec::new(),
    };

    // Resume from the latest checkpoint, or initialize on the devices.
    let n_params = step.params.len();
    let n_state = step.state.len();
    let resumed_from = resume.as_ref().map(|resume| resume.dir.clone());
    let (mut state, start_step, position) = match resume {
        Some(Resume { dir, contents, position }) => {
            let params =
                put_by_name(&step_program, 0, &contents.params, step.params.iter().map(|p| p.name.as_str()))?;
            let opt_state = put_by_name(
                &step_program,
                n_params,
                &contents.opt_state,
                step.state.iter().map(|s| s.name.as_str()),
            )?;
            tracing::info!("resumed from {} at step {}", dir.display(), contents.step);
            (State { params, opt_state }, contents.step, position)
        }
        None => {
            let model = session.model.as_ref();
            let init_program =
                session.compile(&step::init_function(model, session.precision, &session.mesh)?, "init")?;
            let (state_function, _) =
                step::state_init_function(model, &session.optimizer, session.precision, &session.mesh)?;
            let state_program = session.compile(&state_function, "optimizer init")?;
            let key = init_program.put(0, &HostTensor::from_slice(&[2], &[trainer.seed, 0u64])?)?;
            let params = init_program.execute(&[&key])?;
            let references: Vec<&ShardedArray> = params.iter().collect();
            let opt_state = state_program.execute(&references)?;
            (State { params, opt_state }, 0, DataPosition::default())
        }
    };

    let resolved = job.to_yaml(session.optimizer_config.to_yaml());
    let mut tracker = Tracker::open(&run_dir, &trainer.tracker, (start_step > 0).then_some(start_step))?;
    tracker.log_config(&serde_yaml::to_string(&resolved).unwrap_or_default())?;
    let peak_flops = match trainer.device_flops {
        Some(per_device) => per_device * session.mesh.devices() as f64,
        None => measure_peak_flops(&session)?,
    };
    let tokens_per_step = (session.shape.batch * job.model.seq_len) as f64;
    let mut log = StepLog {
        tracker,
        progress: Progress::new(trainer.num_train_steps, start_step),
        summary: TrainSummary::at(run_dir.clone(), start_step, resumed_from.clone()),
        throughput: Vec::new(),
        last_done: Instant::now(),
        recent_spans: VecDeque::with_capacity(STEP_TIME_WINDOW),
        tokens_per_step,
        flops_per_step: session.model.flops_per_token() * tokens_per_step,
        peak_flops,
        names: step.metrics.clone(),
        on_nan: trainer.on_nan,
        stop_at: None,
    };
    let mut prefetcher = Prefetcher::spawn(
        BatchIter::new(train_data.clone(), session.shape.batch, trainer.seed, position)?,
        3,
    );
    let mut pending: Option<Pending> = None;
    let mut position_after = position;
    // The step of the newest checkpoint, so that none is written twice.
    let mut saved_step = resumed_from.is_some().then_some(start_step);

    let run_eval =
        |params: &[ShardedArray], tracker: &mut Tracker, step_number: u64| -> Result<Option<f64>> {
            let Some(program) = &eval_program else { return Ok(None) };
            if eval_data.is_empty() {
                return Ok(None);
            }
            let (mut loss, mut tokens, mut bytes) = (0.0, 0.0, 0.0);
            for batch in &eval_data {
                let tokens_array = program.put(params.len(), batch)?;
                let mut arguments: Vec<&ShardedArray> = params.iter().collect();
                arguments.push(&tokens_array);
                let out = program.execute(&arguments)?;
                loss += f64::from(out[0].to_host()?.to_vec::<f32>()?[0]);
                tokens += f64::from(out[1].to_host()?.to_vec::<f32>()?[0]);
                bytes += f64::from(out[2].to_host()?.to_vec::<f32>()?[0]);
            }
            let eval_loss = loss / tokens;
            let eval_bpb = loss / (bytes.max(1.0) * std::f64::consts::LN_2);
            tracker.log(step_number, &[("eval_loss", eval_loss), ("eval_bpb", eval_bpb)])?;
            Ok(Some(eval_loss))
        };

    let mut step_number = start_step;
    while step_number < trainer.num_train_steps && !stop.is_set() && log.stop_at.is_none() {
        let started = Instant::now();
        let (batch, data_wait) = prefetcher.next().await?;
        let tokens = step_program.put(n_params + n_state, &batch.tokens)?;
        let hyperparameters = session.optimizer.runtime_values(step_number as i64);
        let (next, metrics) = launch_step(&step_program, state, &tokens, &hyperparameters)?;
        state = next;
        step_number += 1;
        position_after = batch.position;

        // Read the previous step's metrics while this one runs.
        let launched = Pending::launched(step_number, metrics, data_wait, started)?;
        if let Some(previous) = pending.replace(launched) {
            log.record(previous).await?;
        }

        let at_eval = trainer.steps_per_eval > 0
            && step_number % trainer.steps_per_eval == 0
            && step_number < trainer.num_train_steps;
        let at_checkpoint = checkpointer.due(step_number) && step_number < trainer.num_train_steps;
        if at_eval || at_checkpoint {
            // Settle this step's metrics first, so a non-finite step is never checkpointed.
            if let Some(current) = pending.take() {
                log.record(current).await?;
            }
            if at_eval {
                log.summary.last_eval_loss =
                    run_eval(&state.params, &mut log.tracker, step_number)?.or(log.summary.last_eval_loss);
            }
            if at_checkpoint && log.stop_at.is_none() {
                save(&mut checkpointer, &step, &state, step_number, position_after, trainer.seed, &resolved)?;
                saved_step = Some(step_number);
            }
        }
    }
    if let Some(last) = pending.take() {
        log.record(last).await?;
    }
    drop(prefetcher);
    log.summary.steps_done = step_number;
    log.summary.trained_steps = step_number - start_step;
    log.summary.stopped_early = step_number < trainer.num_train_steps;
    if log.stop_at.is_none() {
        if !log.summary.stopped_early {
            log.summary.last_eval_loss =
                run_eval(&state.params, &mut log.tracker, step_number)?.or(log.summary.last_eval_loss);
        }
        // A run stopped before its first step has nothing new to save.
        if saved_step != Some(step_number) && step_number > start_step {
            save(&mut checkpointer, &step, &state, step_number, position_after, trainer.seed, &resolved)?;
        }
    }
    checkpointer.wait()?;
    if log.summary.stopped_early {
        log.progress.stopped();
    } else {
        log.progress.finish();
    }
    log.tracker.finish()?;
    let StepLog { mut summary, mut throughput, stop_at, .. } = log;
    summary.tokens_per_second =
        if throughput.is_empty() { 0.0 } else { crate::bench::median(&mut throughput) };
    if let Some(bad_step) = stop_at {
        let kept = match checkpointer.latest()? {
            Some(dir) => format!("the last good checkpoint, {}, is kept", dir.display()),
            None => {
                format!("no checkpoint was saved before it (in {})", checkpoints.base_path.display())
            }
        };
        return Err(TrainerError::Other(format!(
            "stopped: step {bad_step} had a non-finite loss or gradients (trainer.on_nan: stop); {kept}"
        )));
    }
    Ok(summary)
}

/// Steps whose mean span is the logged step time (and tokens per second, MFU).
const STEP_TIME_WINDOW: usize = 4;

/// Turns finished steps into metrics records, and keeps what the run reports: progress, the
/// summary, the non-finite step that stops the run.
struct StepLog {
    tracker: Tracker,
    progress: Progress,
    summary: TrainSummary,
    /// Tokens per second of each finite step.
    throughput: Vec<f64>,
    /// When the previous step finished.
    last_done: Instant,
    /// The spans of the last steps (at most [`STEP_TIME_WINDOW`]).
    recent_spans: VecDeque<Duration>,
    tokens_per_step: f64,
    flops_per_step: f64,
    peak_flops: f64,
    /// Names of the step's metric outputs (`loss`, `skipped`, `grad_norm`, the optimizer's).
    names: Vec<String>,
    on_nan: NanPolicy,
    /// The first non-finite step, once `on_nan: stop` stops the run.
    stop_at: Option<u64>,
}

impl StepLog {
    /// Waits for a step to finish, reads its metrics and logs them.
    async fn record(&mut self, pending: Pending) -> Result<()> {
        let Pending { step, metrics, data_wait, started, finished } = pending;
        let finished = finished.await.map_err(|_| {
            TrainerError::Other(format!("step {step}: the plugin dropped the step's ready callback"))
        })??;
        let read: Vec<f64> = metrics
            .iter()
            .map(|metric| Ok(f64::from(metric.to_host()?.to_vec::<f32>()?[0])))
            .collect::<Result<_>>()?;
        let value = |name: &str| self.names.iter().position(|n| n == name).map(|i| read[i]);
        let loss = value("loss").unwrap_or(f64::NAN);
        let skipped = value("skipped").unwrap_or(0.0) > 0.5;
        // The step's span runs from when it could start (the previous step finished, or its own
        // iteration began, whichever is later: evals and checkpoints in between don't count,
        // waiting for data does) to when it finished. The spans tile the run, but the boundary
        // between two steps is not always seen where it is: XLA:CPU sometimes reports a step
        // done only after the next one computed, which would leave that one no time at all.
        // So the step time logged is the mean span of the last few steps, which such a shift
        // barely moves.
        let span = finished.duration_since(self.last_done.max(started));
        self.last_done = finished;
        if self.recent_spans.len() == STEP_TIME_WINDOW {
            self.recent_spans.pop_front();
        }
        self.recent_spans.push_back(span);
        let step_time =
            self.recent_spans.iter().sum::<Duration>().as_secs_f64() / self.recent_spans.len() as f64;
        let tokens_per_second = self.tokens_per_step / step_time;
        let mut values = vec![("loss", loss)];
        // The optimizer's metrics: the learning rate (logged as `lr`), `grad_norm`, and any a
        // transform reports (e.g. `skipped_spike`).
        for (name, metric) in self.names.iter().zip(&read) {
            match name.as_str() {
                "loss" | "skipped" => {}
                "learning_rate" => values.push(("lr", *metric)),
                other => values.push((other, *metric)),
            }
        }
        values.extend([
            ("tokens_per_second", tokens_per_second),
            ("mfu", self.flops_per_step / step_time / self.peak_flops),
            ("step_time_s", step_time),
            ("data_wait_s", data_wait.as_secs_f64()),
            ("skipped", if skipped { 1.0 } else { 0.0 }),
        ]);
        self.tracker.log(step, &values)?;
        if skipped {
            self.summary.skipped_steps += 1;
            self.progress
                .skipped(step, &format!("step {step}: non-finite loss or gradients; update skipped"));
            if self.on_nan == NanPolicy::Stop {
                self.stop_at.get_or_insert(step);
            }
            return Ok(());
        }
        self.summary.first_loss.get_or_insert(loss);
        self.summary.last_loss = Some(loss);
        self.throughput.push(tokens_per_second);
        self.progress.update(step, loss, tokens_per_second);
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
fn save(
    checkpointer: &mut Checkpointer,
    step: &TrainStep,
    state: &State,
    step_number: u64,
    position: DataPosition,
    seed: u64,
    config: &serde_yaml::Value,
) -> Result<()> {
    let contents = CheckpointContents {
        step: step_number,
        params: host_tensors(step.params.iter().map(|p| p.name.clone()), &state.params)?,
        opt_state: host_tensors(step.state.iter().map(|s| s.name.clone()), &state.opt_state)?,
        data_position: serde_json::to_value(position)
            .map_err(|error| TrainerError::Other(error.to_string()))?,
        rng: serde_json::to_value(RngState { seed })
            .map_err(|error| TrainerError::Other(error.to_string()))?,
        config: config.clone(),
    };
    checkpointer.save_in_background(contents)
}

/// Arguments of `sirocco hlo`.
#[derive(Debug, Clone, clap::Args)]
pub struct HloArgs {
    #[command(flatten)]
    pub job: JobArgs,
    /// Output directory: `train_step.mlir` (our StableHLO) and `xla/` (XLA's dumps, with the
    /// optimized HLO in `*after_optimizations.txt`).
    #[arg(long)]
    pub out: PathBuf,
}

/// Writes the train step's StableHLO and has XLA dump its optimized HLO. Must run before
/// any plugin is loaded in the process (XLA reads its flags once).
pub fn dump_hlo(args: &HloArgs) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(&args.out).map_err(|error| TrainerError::io(&args.out, error))?;
    let xla_dir = args.out.join("xla");
    let dump = format!("--xla_dump_to={} --xla_dump_hlo_as_text", xla_dir.display());
    let existing = std::env::var("XLA_FLAGS").unwrap_or_default();
    let flags = sirocco::pjrt::with_xla_flags(&existing, &dump).ok_or_else(|| {
        TrainerError::Other(format!(
            "XLA_FLAGS names a file of flags ({existing}): `sirocco hlo` adds `{dump}` to XLA_FLAGS, \
             so unset it or put its flags in the variable itself"
        ))
    })?;
    std::env::set_var("XLA_FLAGS", flags);
    let session = Session::open(&args.job.config, &args.job.overrides)?;
    let step = session.train_step()?;
    let text = step.function.to_stablehlo();
    let mlir = args.out.join("train_step.mlir");
    crate::files::write_atomically(&mlir, text.as_bytes())?;
    // Compile without the persistent cache, so XLA runs (and dumps) its pipeline.
    Program::compile(&session.client.without_compile_cache(), &step.function)?;
    let mut files = vec![mlir];
    if let Ok(entries) = std::fs::read_dir(&xla_dir) {
        let mut optimized: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.to_string_lossy().ends_with("after_optimizations.txt"))
            .collect();
        optimized.sort();
        files.extend(optimized);
    }
    Ok(files)
}

/// Arguments of `sirocco bench train`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainBenchArgs {
    #[command(flatten)]
    pub job: JobArgs,
    /// Timed steps of each kind (after 2 warm-up steps).
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What `sirocco bench train` measures.
#[derive(Debug, Clone, Serialize)]
pub struct TrainBenchReport {
    pub model: String,
    pub parameters: i64,
    pub layers: i64,
    pub batch: i64,
    pub seq_len: i64,
    pub devices: usize,
    /// Emission and compilation of the train step (compile cache bypassed).
    pub compile_s: f64,
    /// Median step time with the batch already on the devices.
    pub step_s_resident: f64,
    /// Median step time with batches from the live pipeline (prefetch + transfer).
    pub step_s_pipeline: f64,
    pub pipeline_overhead: f64,
    pub tokens_per_second: f64,
    pub mfu: f64,
}

impl std::fmt::Display for TrainBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "model            {} ({} parameters, {} layers), batch {} x {} on {} devices",
            self.model, self.parameters, self.layers, self.batch, self.seq_len, self.devices
        )?;
        writeln!(f, "compile          {:.2} s", self.compile_s)?;
        writeln!(
            f,
            "step             {:.1} ms with the batch on device, {:.1} ms with the live pipeline ({:+.1}%)",
            self.step_s_resident * 1e3,
            self.step_s_pipeline * 1e3,
            self.pipeline_overhead * 100.0
        )?;
        write!(f, "throughput       {:.0} tokens/s, MFU {:.1}%", self.tokens_per_second, self.mfu * 100.0)
    }
}

/// Times the train step: compile, steps on a device-resident batch, steps fed by the
/// prefetching pipeline. Uses random parameters; checkpoints and metrics are not touched.
pub async fn benchmark(args: &TrainBenchArgs) -> Result<TrainBenchReport> {
    if !(1..=100_000).contains(&args.steps) {
        return Err(TrainerError::Other(format!("--steps must be in 1..=100000, got {}", args.steps)));
    }
    let session = Session::open(&args.job.config, &args.job.overrides)?;
    let job = &session.job;
    let dataset = Arc::new(open_split(&session, "train")?);
    // A client without the persistent compile cache, so compilation is timed for real.
    let client = session.client.without_compile_cache();
    let compile_start = Instant::now();
    let step = session.train_step()?;
    let program = Program::compile(&client, &step.function)?;
    let compile_s = compile_start.elapsed().as_secs_f64();
    let init = Program::compile(
        &client,
        &step::init_function(session.model.as_ref(), session.precision, &session.mesh)?,
    )?;
    let (state_function, _) = step::state_init_function(
        session.model.as_ref(),
        &session.optimizer,
        session.precision,
        &session.mesh,
    )?;
    let state_init = Program::compile(&client, &state_function)?;
    let key = init.put(0, &HostTensor::from_slice(&[2], &[job.trainer.seed, 0u64])?)?;
    let params = init.execute(&[&key])?;
    let references: Vec<&ShardedArray> = params.iter().collect();
    let opt_state = state_init.execute(&references)?;
    let mut state = State { params, opt_state };
    let (n_params, n_state) = (step.params.len(), step.state.len());
    let mut iter =
        BatchIter::new(dataset.clone(), session.shape.batch, job.trainer.seed, DataPosition::default())?;
    let resident = program.put(n_params + n_state, &iter.next_batch()?.tokens)?;
    let warmup = 2;
    let hyperparameters = session.optimizer.runtime_values(0);
    let run = |state: State, tokens: &ShardedArray| -> Result<(State, f64)> {
        let start = Instant::now();
        let (state, metrics) = launch_step(&program, state, tokens, &hyperparameters)?;
        metrics[0].to_host()?;
        Ok((state, start.elapsed().as_secs_f64()))
    };
    let mut resident_times = Vec::new();
    for i in 0..warmup + args.steps {
        let (next, time) = run(state, &resident)?;
        state = next;
        if i >= warmup {
            resident_times.push(time);
        }
    }
    let mut prefetcher = Prefetcher::spawn(iter, 3);
    let mut pipeline_times = Vec::new();
    for i in 0..warmup + args.steps {
        let start = Instant::now();
        let (batch, _) = prefetcher.next().await?;
        let tokens = program.put(n_params + n_state, &batch.tokens)?;
        let (next, _) = run(state, &tokens)?;
        state = next;
        if i >= warmup {
            pipeline_times.push(start.elapsed().as_secs_f64());
        }
    }
    let step_s_resident = crate::bench::median(&mut resident_times);
    let step_s_pipeline = crate::bench::median(&mut pipeline_times);
    let tokens = (session.shape.batch * job.model.seq_len) as f64;
    let peak = match job.trainer.device_flops {
        Some(per_device) => per_device * session.mesh.devices() as f64,
        None => measure_peak_flops(&session)?,
    };
    Ok(TrainBenchReport {
        model: format!("{:?}", job.model.model_type).to_lowercase(),
        parameters: session.model.parameters().iter().map(|p| p.element_count()).sum(),
        layers: job.model.num_layers,
        batch: session.shape.batch,
        seq_len: job.model.seq_len,
        devices: session.mesh.devices(),
        compile_s,
        step_s_resident,
        step_s_pipeline,
        pipeline_overhead: step_s_pipeline / step_s_resident - 1.0,
        tokens_per_second: tokens / step_s_resident,
        mfu: session.model.flops_per_token() * tokens / step_s_resident / peak,
    })
}

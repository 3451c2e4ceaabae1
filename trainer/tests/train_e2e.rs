//! `sirocco train` and `sirocco hlo` end to end, as a user runs them: a tiny Llama (and GPT-2) on a
//! few KB of English sentences, through the real binary, checked on what it leaves behind: exit
//! codes, stdout and stderr, `metrics.jsonl`, checkpoints, plots. Each test works in its own
//! temporary directory, the compile cache included, so runs of one test share compilations.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Map, Value as Json};
use sirocco::DType;
use tempfile::TempDir;
use trainer::checkpoint::{self, CheckpointContents};
use trainer::train::{train, JobArgs};

/// Tokens of a training step: `train_batch_size` x `seq_len` of [`job_yaml`].
const TOKENS_PER_STEP: f64 = 8.0 * 32.0;

/// `ln(257)`: the loss of a uniform guess over the byte vocabulary (256 bytes + end of text).
const UNIFORM_LOSS: f64 = 5.549_076;

/// Plain English sentences from a fixed generator: varied enough that a model has something to
/// learn, regular enough that a tiny one learns it in a few steps.
fn sentences(count: usize, seed: u64) -> Vec<String> {
    const SUBJECTS: [&str; 8] = [
        "The cat",
        "A small dog",
        "My neighbour",
        "The old sailor",
        "Every child",
        "The river",
        "A quiet engineer",
        "The wind",
    ];
    const VERBS: [&str; 8] =
        ["watches", "finds", "carries", "remembers", "follows", "paints", "builds", "hears"];
    const OBJECTS: [&str; 8] = [
        "the morning light",
        "a red kite",
        "the distant hills",
        "an empty boat",
        "the bright stars",
        "a wooden box",
        "the long road",
        "a paper map",
    ];
    const ENDINGS: [&str; 8] = [
        "before dinner.",
        "in the rain.",
        "every summer.",
        "with great care.",
        "near the harbour.",
        "at dawn.",
        "without a word.",
        "for a while.",
    ];
    // Knuth's MMIX linear congruential generator.
    let mut state = seed;
    let mut pick = |words: &[&'static str; 8]| -> &'static str {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        words[(state >> 61) as usize]
    };
    (0..count)
        .map(|_| {
            let (subject, verb, object, ending) =
                (pick(&SUBJECTS), pick(&VERBS), pick(&OBJECTS), pick(&ENDINGS));
            format!("{subject} {verb} {object} {ending}")
        })
        .collect()
}

/// `train.txt` (one document), `train.jsonl` and `validation.jsonl` (a document a line): about
/// 8 KB of training text and 1.5 KB of validation text.
fn write_corpus(dir: &Path) {
    let text = sentences(120, 1).join("\n") + "\n";
    std::fs::write(dir.join("train.txt"), text).unwrap();
    let jsonl = |sentences: Vec<String>| -> String {
        sentences
            .chunks(2)
            .map(|pair| serde_json::json!({ "text": pair.join(" ") }).to_string() + "\n")
            .collect()
    };
    std::fs::write(dir.join("train.jsonl"), jsonl(sentences(50, 2))).unwrap();
    std::fs::write(dir.join("validation.jsonl"), jsonl(sentences(30, 3))).unwrap();
}

/// A path as a YAML scalar (JSON strings are YAML).
fn yaml_path(path: &Path) -> String {
    serde_json::to_string(&path.display().to_string()).unwrap()
}

/// The job every test starts from: a 2-layer Llama with grouped-query attention (4 heads, 2 kv
/// heads), batches of 8 sequences of 32 bytes, Adam with warmup and a cosine schedule.
fn job_yaml(dir: &Path) -> String {
    let path = |name: &str| yaml_path(&dir.join(name));
    format!(
        "data:
  train_urls: [{train_txt}, {train_jsonl}]
  validation_urls: [{validation}]
  text_key: text
  tokenizer: byte
  cache_dir: {cache}
model:
  type: llama
  seq_len: 32
  hidden_dim: 32
  intermediate_dim: 64
  num_layers: 2
  num_heads: 4
  num_kv_heads: 2
trainer:
  seed: 0
  num_train_steps: 30
  train_batch_size: 8
  steps_per_eval: 10
  max_eval_batches: 2
  runtime: {{plugin: cpu, cpu_device_count: 1, compile_cache: {compile}}}
  checkpointer: {{base_path: {checkpoints}, save_interval_steps: 10, save_interval_minutes: 0, keep: 3}}
  tracker: [json, tensorboard]
  run_dir: {run}
  device_flops: 1.0e11
optimizer:
  type: adam
  lr: 1.0e-2
  warmup: 0.1
  lr_schedule: cosine
  min_lr_ratio: 0.1
  max_grad_norm: 1.0
",
        train_txt = path("train.txt"),
        train_jsonl = path("train.jsonl"),
        validation = path("validation.jsonl"),
        cache = path("tokenized"),
        compile = path("compile-cache"),
        checkpoints = path("run/checkpoints"),
        run = path("run"),
    )
}

/// One metrics.jsonl record.
type Record = Map<String, Json>;

/// A test's directory: corpus, `job.yaml`, compile cache and the runs (`run` by default, others
/// by name).
struct Job {
    dir: TempDir,
}

impl Job {
    fn new() -> Job {
        let dir = tempfile::tempdir().unwrap();
        write_corpus(dir.path());
        std::fs::write(dir.path().join("job.yaml"), job_yaml(dir.path())).unwrap();
        Job { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self) -> PathBuf {
        self.path("job.yaml")
    }

    fn run_dir(&self, run: &str) -> PathBuf {
        self.path(run)
    }

    fn checkpoints(&self, run: &str) -> PathBuf {
        self.run_dir(run).join("checkpoints")
    }

    /// The overrides that put a run in its own directory, checkpoints included.
    fn run_overrides(&self, run: &str) -> Vec<String> {
        vec![
            format!("trainer.run_dir={}", yaml_path(&self.run_dir(run))),
            format!("trainer.checkpointer.base_path={}", yaml_path(&self.checkpoints(run))),
        ]
    }

    /// `sirocco train --config job.yaml --set ...` for run `run`, with the default log filter.
    fn command(&self, run: &str, overrides: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sirocco"));
        command.arg("train").arg("--config").arg(self.config()).env_remove("RUST_LOG");
        for assignment in self.run_overrides(run).iter().map(String::as_str).chain(overrides.iter().copied())
        {
            command.arg("--set").arg(assignment);
        }
        command
    }

    fn train(&self, run: &str, overrides: &[&str]) -> Outcome {
        Outcome::of(self.command(run, overrides).output().expect("the sirocco binary runs"))
    }

    /// Starts the run, sends `signal` once metrics.jsonl holds step `after_step`, and waits.
    fn train_until_signal(&self, run: &str, overrides: &[&str], signal: i32, after_step: u64) -> Outcome {
        let metrics = self.run_dir(run).join("metrics.jsonl");
        let mut child = self
            .command(run, overrides)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the sirocco binary starts");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let logged = std::fs::read_to_string(&metrics).map(|text| last_train_step(&text)).unwrap_or(0);
            if logged >= after_step {
                break;
            }
            if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                let outcome = Outcome::of(child.wait_with_output().unwrap());
                panic!("the run ended or hung before step {after_step}:\n{outcome}");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let pid = libc::pid_t::try_from(child.id()).unwrap();
        // SAFETY: kill(2) only sends a signal; `pid` is our child, not yet waited for, so the id
        // cannot have been reused by another process.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "{}", std::io::Error::last_os_error());
        Outcome::of(child.wait_with_output().unwrap())
    }

    fn records(&self, run: &str) -> Vec<Record> {
        read_records(&self.run_dir(run).join("metrics.jsonl"))
    }

    /// The step directories under the run's checkpoints, sorted.
    fn checkpoint_steps(&self, run: &str) -> Vec<u64> {
        let mut steps: Vec<u64> = std::fs::read_dir(self.checkpoints(run))
            .map(|entries| {
                entries
                    .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                    .filter_map(|name| name.strip_prefix("step-").and_then(|step| step.parse().ok()))
                    .collect()
            })
            .unwrap_or_default();
        steps.sort_unstable();
        steps
    }

    fn checkpoint_dir(&self, run: &str, step: u64) -> PathBuf {
        self.checkpoints(run).join(format!("step-{step:08}"))
    }

    /// Loads (verifying sizes and sha256) the checkpoint of `step`.
    fn load_checkpoint(&self, run: &str, step: u64) -> CheckpointContents {
        let dir = self.checkpoint_dir(run, step);
        checkpoint::load(&dir).unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
    }
}

/// What a finished command left: exit status and its output as text.
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn of(output: Output) -> Outcome {
        Outcome {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    fn assert_success(&self) -> &Outcome {
        assert_eq!(self.code, Some(0), "{self}");
        assert!(!self.stderr.contains("panicked"), "{self}");
        self
    }

    /// Exit status 1, no panic, and an `error: ` line that holds each of `expected`.
    fn assert_error(&self, expected: &[&str]) -> &str {
        assert_eq!(self.code, Some(1), "{self}");
        assert!(!self.stderr.contains("panicked"), "{self}");
        let (_, message) =
            self.stderr.split_once("error: ").unwrap_or_else(|| panic!("no `error: `:\n{self}"));
        for text in expected {
            assert!(message.contains(text), "the error lacks {text:?}:\n{self}");
        }
        message
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {:?}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

fn read_records(path: &Path) -> Vec<Record> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    text.lines()
        .map(|line| match serde_json::from_str(line) {
            Ok(Json::Object(record)) => record,
            _ => panic!("{}: not a JSON object: {line}", path.display()),
        })
        .collect()
}

/// The step of the last training record of a metrics.jsonl being written (0 when none; a line
/// still being written is skipped).
fn last_train_step(text: &str) -> u64 {
    text.lines()
        .filter_map(|line| serde_json::from_str::<Record>(line).ok())
        .filter(|record| record.contains_key("loss"))
        .filter_map(|record| record["step"].as_u64())
        .max()
        .unwrap_or(0)
}

fn step_of(record: &Record) -> u64 {
    record["step"].as_u64().unwrap()
}

/// A number of a record; `None` for null (a non-finite value).
fn number(record: &Record, name: &str) -> Option<f64> {
    match &record[name] {
        Json::Null => None,
        value => Some(value.as_f64().unwrap_or_else(|| panic!("{name} is not a number: {record:?}"))),
    }
}

fn train_records(records: &[Record]) -> Vec<&Record> {
    records.iter().filter(|record| record.contains_key("loss")).collect()
}

fn eval_records(records: &[Record]) -> Vec<&Record> {
    records.iter().filter(|record| record.contains_key("eval_loss")).collect()
}

fn losses(records: &[Record]) -> Vec<f64> {
    train_records(records).iter().map(|record| number(record, "loss").unwrap()).collect()
}

fn assert_steps(records: &[&Record], expected: std::ops::RangeInclusive<u64>) {
    let steps: Vec<u64> = records.iter().map(|record| step_of(record)).collect();
    assert_eq!(steps, expected.collect::<Vec<_>>());
}

fn assert_close(actual: &[f64], expected: &[f64], relative: f64) {
    assert_eq!(actual.len(), expected.len(), "{actual:?}\n{expected:?}");
    for (a, e) in actual.iter().zip(expected) {
        assert!((a - e).abs() <= relative * e.abs(), "{a} vs {e}:\n{actual:?}\n{expected:?}");
    }
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

fn assert_finite(contents: &CheckpointContents) {
    for (name, tensor) in contents.params.iter().chain(&contents.opt_state) {
        if tensor.dtype().is_float() {
            assert!(tensor.to_f64_vec().iter().all(|v| v.is_finite()), "{name} is not finite");
        }
    }
}

fn assert_same_state(a: &CheckpointContents, b: &CheckpointContents) {
    assert_eq!(a.step, b.step);
    for (group, (x, y)) in [("params", (&a.params, &b.params)), ("opt_state", (&a.opt_state, &b.opt_state))] {
        assert_eq!(x.len(), y.len(), "{group}");
        for ((name, left), (other, right)) in x.iter().zip(y) {
            assert_eq!(name, other, "{group}");
            assert!(left == right, "{group} `{name}` differs");
        }
    }
}

#[test]
fn loss_falls_and_every_output_is_written() {
    let job = Job::new();
    let started = Instant::now();
    // device_flops null: MFU against the peak measured at start-up.
    let outcome = job.train("run", &["trainer.device_flops=null"]);
    let wall = started.elapsed().as_secs_f64();
    outcome.assert_success();
    let records = job.records("run");
    let steps = train_records(&records);
    assert_steps(&steps, 1..=30);

    let fields =
        ["loss", "lr", "grad_norm", "tokens_per_second", "mfu", "step_time_s", "data_wait_s", "skipped"];
    let mut step_times = Vec::new();
    for record in &steps {
        let value = |name: &str| number(record, name).unwrap_or_else(|| panic!("{name} is null: {record:?}"));
        let mut names: Vec<&str> = record.keys().map(String::as_str).filter(|&name| name != "step").collect();
        names.sort_unstable();
        let mut expected = fields.to_vec();
        expected.sort_unstable();
        assert_eq!(names, expected, "{record:?}");
        assert_eq!(value("skipped"), 0.0, "{record:?}");
        assert!(value("grad_norm") > 0.0 && value("data_wait_s") >= 0.0, "{record:?}");
        let step_time = value("step_time_s");
        assert!(step_time > 0.0, "{record:?}");
        let rate = TOKENS_PER_STEP / step_time;
        assert!((value("tokens_per_second") - rate).abs() <= 1e-9 * rate, "{record:?}");
        // The peak is a matmul on the same devices: a tiny model's step cannot beat it.
        assert!(value("mfu") > 0.0 && value("mfu") < 1.0, "{record:?}");
        step_times.push(step_time);
    }
    // Every step does the same work: none is logged at a tenth of the median (as a step whose
    // start was placed where the host happened to notice the previous step's end once was).
    let mut sorted = step_times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    for (step, time) in step_times.iter().enumerate() {
        assert!(*time > 0.1 * median, "step {}: {time} s, median {median} s: {step_times:?}", step + 1);
    }
    assert!(step_times.iter().sum::<f64>() < wall, "{step_times:?} in {wall} s");

    // Levanter's warmup: the first update uses lr 0, the peak comes after warmup (0.1 x 30 = 3
    // steps), and cosine decays it towards min_lr_ratio x lr at the last step.
    let lr: Vec<f64> = steps.iter().map(|record| number(record, "lr").unwrap()).collect();
    assert_eq!(lr[0], 0.0, "{lr:?}");
    assert_close(&lr[1..4], &[1e-2 / 3.0, 2e-2 / 3.0, 1e-2], 1e-6);
    assert!(lr[3..].windows(2).all(|pair| pair[1] <= pair[0]), "{lr:?}");
    assert!(lr[29] > 1e-3 && lr[29] < 1.1e-3, "{lr:?}");

    let loss = losses(&records);
    assert!((loss[0] - UNIFORM_LOSS).abs() < 0.1, "a fresh model guesses about uniformly: {loss:?}");
    assert!(mean(&loss[27..]) < loss[0] - 2.0, "{loss:?}");

    // Evals every 10 steps; bits per byte = nats per token / ln 2 x tokens per byte, where a
    // byte token is one byte and the end-of-text token none.
    let evals = eval_records(&records);
    let eval_steps: Vec<u64> = evals.iter().map(|record| step_of(record)).collect();
    assert_eq!(eval_steps, [10, 20, 30]);
    for record in &evals {
        let (eval_loss, bpb) = (number(record, "eval_loss").unwrap(), number(record, "eval_bpb").unwrap());
        let ratio = bpb / (eval_loss / std::f64::consts::LN_2);
        assert!((1.0..1.05).contains(&ratio), "{record:?}");
    }
    let eval_losses: Vec<f64> = evals.iter().map(|record| number(record, "eval_loss").unwrap()).collect();
    assert!(eval_losses[2] < eval_losses[0] && eval_losses[0] < UNIFORM_LOSS - 1.0, "{eval_losses:?}");

    let summary = format!(
        "trained 30 steps: loss {:.4} -> {:.4}, eval loss {:.4}, ",
        loss[0], loss[29], eval_losses[2]
    );
    assert!(outcome.stdout.starts_with(&summary), "{summary}\n{outcome}");

    let run_dir = job.run_dir("run");
    let png = std::fs::read(run_dir.join("loss.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000, "{} bytes", png.len());
    let config: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(run_dir.join("config.yaml")).unwrap()).unwrap();
    assert_eq!(config["trainer"]["num_train_steps"].as_u64(), Some(30));
    assert_eq!(config["trainer"]["on_nan"].as_str(), Some("skip"), "defaults are filled in");
    assert_eq!(config["optimizer"]["type"].as_str(), Some("adam"));
    let events: Vec<PathBuf> = std::fs::read_dir(run_dir.join("tensorboard"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.file_name().unwrap().to_string_lossy().starts_with("events.out.tfevents."))
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(std::fs::metadata(&events[0]).unwrap().len() > 1000);

    assert_eq!(job.checkpoint_steps("run"), [10, 20, 30]);
    for step in [10, 20, 30] {
        let contents = job.load_checkpoint("run", step);
        assert_eq!(contents.step, step);
        assert_finite(&contents);
    }
}

/// Adam at a constant rate: the schedule does not depend on `num_train_steps`, so a finished
/// run can be extended.
const CONSTANT_RATE: [&str; 3] =
    ["optimizer.lr_schedule=constant", "optimizer.warmup=0", "trainer.steps_per_eval=0"];

#[test]
fn extending_a_finished_run_matches_an_uninterrupted_run_exactly() {
    let job = Job::new();
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        CONSTANT_RATE.iter().chain(extra).copied().collect()
    };

    // The reference, through the library as an embedding program would call it.
    let mut overrides: Vec<String> = job.run_overrides("reference");
    overrides.extend(with(&["trainer.num_train_steps=12"]).iter().map(|s| s.to_string()));
    let args = JobArgs { config: vec![job.config()], overrides };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let summary = runtime.block_on(train(&args)).unwrap_or_else(|error| panic!("{error}"));
    let reference = job.records("reference");
    let reference_losses = losses(&reference);
    assert_eq!((summary.steps_done, summary.trained_steps, summary.skipped_steps), (12, 12, 0));
    assert!(!summary.stopped_early && !summary.already_done && summary.resumed_from.is_none());
    assert_eq!(summary.first_loss, Some(reference_losses[0]));
    assert_eq!(summary.last_loss, Some(reference_losses[11]));
    assert_eq!(summary.last_eval_loss, number(eval_records(&reference)[0], "eval_loss"));

    job.train("extended", &with(&["trainer.num_train_steps=6"])).assert_success();
    assert_eq!(job.checkpoint_steps("extended"), [6]);
    // Run again as it was, or with fewer steps: nothing to train, and the summary says so.
    for steps in ["trainer.num_train_steps=6", "trainer.num_train_steps=3"] {
        let outcome = job.train("extended", &with(&[steps]));
        outcome.assert_success();
        let done = format!(
            "already done at step 6 (checkpoint {}): nothing trained (raise trainer.num_train_steps to go on)",
            job.checkpoint_dir("extended", 6).display()
        );
        assert!(outcome.stdout.starts_with(&done), "{steps}:\n{outcome}");
        assert!(!outcome.stderr.contains("compiled"), "{steps}:\n{outcome}");
    }
    // Another seed reshuffles the data: allowed, with a warning naming the field.
    let outcome = job.train("extended", &with(&["trainer.num_train_steps=6", "trainer.seed=5"]));
    outcome.assert_success();
    assert!(outcome.stderr.contains("WARN") && outcome.stderr.contains("trainer.seed is 5"), "{outcome}");
    assert_steps(&train_records(&job.records("extended")), 1..=6);
    assert_eq!(job.checkpoint_steps("extended"), [6]);
    let outcome = job.train("extended", &with(&["trainer.num_train_steps=12"]));
    outcome.assert_success();
    let resumed_from = format!("resumed from {} at step 6", job.checkpoint_dir("extended", 6).display());
    assert!(outcome.stderr.contains(&resumed_from), "{outcome}");

    let extended = job.records("extended");
    assert_steps(&train_records(&extended), 1..=12);
    // Bit for bit: the same f32 values, printed the same way.
    for (ours, theirs) in train_records(&extended).iter().zip(train_records(&reference)) {
        for name in ["loss", "lr", "grad_norm"] {
            assert_eq!(ours[name], theirs[name], "step {}: {name}", step_of(ours));
        }
    }
    assert_same_state(&job.load_checkpoint("extended", 12), &job.load_checkpoint("reference", 12));
}

#[test]
fn sigterm_and_sigint_stop_with_a_checkpoint_and_the_resumed_run_matches_exactly() {
    let job = Job::new();
    // Many short steps, so the run is still going when the signal comes; warmup and cosine
    // decay over the whole run, so the resumed steps must pick the schedule up where it was.
    let overrides = [
        "trainer.num_train_steps=1000",
        "trainer.steps_per_eval=0",
        "trainer.checkpointer.save_interval_steps=300",
        "trainer.checkpointer.keep=2",
    ];
    job.train("reference", &overrides).assert_success();
    let reference = job.records("reference");
    assert_steps(&train_records(&reference), 1..=1000);

    let mut stops = Vec::new();
    for (signal, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        let after = stops.last().copied().unwrap_or(0) + 3;
        let outcome = job.train_until_signal("interrupted", &overrides, signal, after);
        outcome.assert_success();
        assert!(
            outcome.stdout.contains("stopped early on request; the checkpoint is saved"),
            "{name}:\n{outcome}"
        );
        let records = job.records("interrupted");
        let steps = train_records(&records);
        let stopped_at = step_of(steps.last().unwrap());
        assert!(stopped_at >= after && stopped_at < 1000, "{name}: stopped at {stopped_at}");
        assert_steps(&steps, 1..=stopped_at);
        assert_eq!(job.checkpoint_steps("interrupted").last(), Some(&stopped_at), "{name}");
        let saved = format!("saved checkpoint {}", job.checkpoint_dir("interrupted", stopped_at).display());
        assert_eq!(outcome.stderr.matches(&saved).count(), 1, "{name}: saved once:\n{outcome}");
        if let Some(&previous) = stops.last() {
            let resumed = format!(
                "resumed from {} at step {previous}",
                job.checkpoint_dir("interrupted", previous).display()
            );
            assert!(outcome.stderr.contains(&resumed), "{name}:\n{outcome}");
        }
        let contents = job.load_checkpoint("interrupted", stopped_at);
        assert_eq!(contents.step, stopped_at);
        assert_finite(&contents);
        stops.push(stopped_at);
    }

    let outcome = job.train("interrupted", &overrides);
    outcome.assert_success();
    assert!(outcome.stdout.starts_with("trained 1000 steps"), "{outcome}");
    assert!(!outcome.stdout.contains("stopped early"), "{outcome}");
    let interrupted = job.records("interrupted");
    // The resumed runs appended from the checkpoint step + 1: every step once, in order.
    assert_steps(&train_records(&interrupted), 1..=1000);
    for (ours, theirs) in train_records(&interrupted).iter().zip(train_records(&reference)) {
        for name in ["loss", "lr", "grad_norm"] {
            assert_eq!(ours[name], theirs[name], "step {}: {name} (stopped at {stops:?})", step_of(ours));
        }
    }
    let final_eval =
        |records: &[Record]| eval_records(records).last().map(|record| record["eval_loss"].clone());
    assert_eq!(final_eval(&interrupted), final_eval(&reference));
    assert_same_state(&job.load_checkpoint("interrupted", 1000), &job.load_checkpoint("reference", 1000));
}

/// An absurd learning rate with no clipping: the first update throws the parameters to about
/// 1e30, and from the second step on the logits overflow.
const DIVERGING: [&str; 6] = [
    "optimizer.lr=1e30",
    "optimizer.warmup=0",
    "optimizer.lr_schedule=constant",
    "optimizer.max_grad_norm=null",
    "trainer.num_train_steps=6",
    "trainer.steps_per_eval=0",
];

#[test]
fn non_finite_steps_are_skipped_or_stop_the_run_and_no_checkpoint_holds_them() {
    let job = Job::new();
    let with =
        |extra: &[&'static str]| -> Vec<&'static str> { DIVERGING.iter().chain(extra).copied().collect() };
    let every_step = ["trainer.checkpointer.save_interval_steps=1", "trainer.checkpointer.keep=10"];

    let outcome = job.train("skip", &with(&[&every_step[..], &["trainer.on_nan=skip"]].concat()));
    outcome.assert_success();
    let records = job.records("skip");
    let steps = train_records(&records);
    assert_steps(&steps, 1..=6);
    let skipped: Vec<f64> = steps.iter().map(|record| number(record, "skipped").unwrap()).collect();
    assert_eq!(skipped, [0.0, 1.0, 1.0, 1.0, 1.0, 1.0], "{records:?}");
    assert!(number(steps[0], "loss").is_some_and(f64::is_finite));
    for step in 2..=6 {
        let warning = format!("step {step}: non-finite loss or gradients; update skipped");
        let line = outcome.stderr.lines().find(|line| line.contains(&warning));
        assert!(line.is_some_and(|line| line.contains("WARN")), "{warning}:\n{outcome}");
    }
    assert!(outcome.stderr.contains("finished at step 6/6"), "{outcome}");
    // The summary shows the last finite loss as such, and counts the skipped steps.
    let first_loss = number(steps[0], "loss").unwrap();
    let summary =
        format!("trained 6 steps: loss {first_loss:.4} -> {first_loss:.4} (last finite step), eval loss");
    assert!(outcome.stdout.starts_with(&summary), "{summary}\n{outcome}");
    assert!(
        outcome.stdout.contains(", 5 of 6 steps skipped (non-finite loss or gradients); outputs in"),
        "{outcome}"
    );
    assert_eq!(job.checkpoint_steps("skip"), [1, 2, 3, 4, 5, 6]);
    let first = job.load_checkpoint("skip", 1);
    for step in 1..=6 {
        let contents = job.load_checkpoint("skip", step);
        assert_finite(&contents);
        // A skipped update leaves parameters and optimizer state as they were.
        assert_same_state(&CheckpointContents { step: 1, ..contents }, &first);
    }

    let outcome = job.train("stop", &with(&[&every_step[..], &["trainer.on_nan=stop"]].concat()));
    let message = outcome.assert_error(&["step 2", "non-finite", "trainer.on_nan: stop"]);
    let kept = job.checkpoint_dir("stop", 1);
    assert!(message.contains(&format!("the last good checkpoint, {}, is kept", kept.display())), "{outcome}");
    assert_eq!(job.checkpoint_steps("stop"), [1]);
    assert_finite(&job.load_checkpoint("stop", 1));
    assert_eq!(number(train_records(&job.records("stop"))[1], "skipped"), Some(1.0));

    // No checkpoint before the bad step: the message says so rather than pointing at none.
    let outcome = job.train("stop-early", &with(&["trainer.on_nan=stop"]));
    outcome.assert_error(&["step 2", "no checkpoint was saved"]);
    assert!(job.checkpoint_steps("stop-early").is_empty());
}

#[test]
fn bad_configs_are_errors_naming_the_file_and_field() {
    let job = Job::new();
    let file = job.config().display().to_string();
    let missing = job.path("missing.txt");
    let missing_name = missing.display().to_string();
    let missing_urls = format!("data.train_urls=[{}]", yaml_path(&missing));
    let cache_file = job.path("train.txt");
    let cache_file_name = cache_file.display().to_string();
    let cache_in_a_file = format!("data.cache_dir={}", yaml_path(&cache_file));
    let run_dir_a_file = format!("trainer.run_dir={}", yaml_path(&cache_file));
    let base_path_a_file = format!("trainer.checkpointer.base_path={}", yaml_path(&cache_file));
    let base_path_in_a_file =
        format!("trainer.checkpointer.base_path={}", yaml_path(&cache_file.join("checkpoints")));
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["trainer.num_train_step=3"],
            vec![&file, "trainer.num_train_step: unknown field", "num_train_steps"],
        ),
        (vec!["optimizer.beta3=0.5"], vec![&file, "optimizer.beta3: unknown field", "beta2"]),
        (vec!["model.hidden=64"], vec![&file, "model.hidden: unknown field", "hidden_dim"]),
        (vec!["trainer.runtime.plugins=cpu"], vec![&file, "trainer.runtime", "plugins"]),
        (
            vec!["optimizer.type=adamw"],
            vec![&file, "optimizer.type", "`adamw`", "registered types", "adamax", "sgd"],
        ),
        (vec!["trainer.foo.bar=1"], vec![&file, "trainer.foo: unknown field"]),
        (vec!["nonsense=1"], vec![&file, "nonsense: unknown section"]),
        (vec!["trainer.seed"], vec![&file, "trainer.seed", "section.field=value"]),
        (vec!["model.num_heads=5"], vec![&file, "model.num_heads", "must divide hidden_dim 32"]),
        (vec![&missing_urls], vec![&missing_name, "no such file"]),
        (vec![&cache_in_a_file], vec![&file, "data.cache_dir: ", &cache_file_name, "Not a directory"]),
        (
            vec!["trainer.runtime.cpu_device_count=4", "trainer.mesh.model=3"],
            vec![&file, "trainer.mesh", "model = 3 does not divide the 4 devices"],
        ),
        (
            vec!["trainer.runtime.cpu_device_count=2", "trainer.mesh.data=4"],
            vec![&file, "trainer.mesh", "4 is more than the 2 devices"],
        ),
        (
            vec!["trainer.runtime.cpu_device_count=3"],
            vec![&file, "trainer.train_batch_size", "not divisible by the 3 data devices"],
        ),
        (vec!["trainer.runtime.plugin=rocm"], vec![&file, "trainer.runtime.plugin: ", "`rocm` not found"]),
        (
            vec![&run_dir_a_file],
            vec![&file, "trainer.run_dir: ", &cache_file_name, "exists and is not a directory"],
        ),
        (
            vec![&base_path_a_file],
            vec![
                &file,
                "trainer.checkpointer.base_path: ",
                &cache_file_name,
                "exists and is not a directory",
            ],
        ),
        (
            vec![&base_path_in_a_file],
            vec![&file, "trainer.checkpointer.base_path: ", &cache_file_name, "a parent directory is a file"],
        ),
    ];
    for (overrides, expected) in &cases {
        let outcome = job.train("run", overrides);
        outcome.assert_error(expected);
        assert!(!job.run_dir("run").join("metrics.jsonl").exists(), "{overrides:?}");
    }

    let malformed = job.path("malformed.yaml");
    std::fs::write(&malformed, "data:\n  train_urls: [a.txt\nmodel: {\n").unwrap();
    let run = |config: &Path| {
        Outcome::of(
            Command::new(env!("CARGO_BIN_EXE_sirocco"))
                .arg("train")
                .arg("--config")
                .arg(config)
                .output()
                .unwrap(),
        )
    };
    run(&malformed).assert_error(&[&malformed.display().to_string(), "line 3"]);
    let absent = job.path("absent.yaml");
    let message =
        run(&absent).assert_error(&[&absent.display().to_string(), "No such file or directory"]).to_string();
    assert_eq!(message.matches("No such file or directory").count(), 1, "said once: {message}");
}

#[test]
fn a_corrupt_or_mismatched_checkpoint_is_an_error_never_skipped() {
    let job = Job::new();
    let short = ["trainer.num_train_steps=4", "trainer.checkpointer.save_interval_steps=2"];
    job.train("run", &short).assert_success();
    assert_eq!(job.checkpoint_steps("run"), [2, 4]);
    let longer = ["trainer.num_train_steps=8", "trainer.checkpointer.save_interval_steps=2"];

    // A flipped byte in the latest checkpoint: an error naming the file, not a resume from the
    // older step 2 (nor a fresh start).
    let params = job.checkpoint_dir("run", 4).join("params.safetensors");
    let original = std::fs::read(&params).unwrap();
    let mut corrupt = original.clone();
    let last = corrupt.len() - 5;
    corrupt[last] ^= 0xff;
    std::fs::write(&params, &corrupt).unwrap();
    job.train("run", &longer).assert_error(&[&params.display().to_string(), "sha256 mismatch"]);
    assert_steps(&train_records(&job.records("run")), 1..=4);
    assert_eq!(job.checkpoint_steps("run"), [2, 4]);
    std::fs::write(&params, &original).unwrap();

    // Another model size: every tensor named with both shapes, before anything is compiled.
    let outcome =
        job.train("run", &[&longer[..], &["model.hidden_dim=48", "model.intermediate_dim=96"]].concat());
    outcome.assert_error(&[
        "checkpoint of step 4",
        "params `embed_tokens.weight`: the checkpoint has tensor<257x32xf32>, the run expects tensor<257x48xf32>",
        "params `layers.mlp.down_proj.weight`: the checkpoint has tensor<2x64x32xf32>, the run expects tensor<2x96x48xf32>",
    ]);
    assert!(!outcome.stderr.contains("compiled train step"), "{outcome}");
    assert_eq!(job.checkpoint_steps("run"), [2, 4]);

    // Another batch size or sequence length fits the tensors, but the saved data position counts
    // batches of the old ones: an error naming the field and both values, before compiling.
    let file = job.config().display().to_string();
    let checkpoint = job.checkpoint_dir("run", 4).display().to_string();
    for (change, now, saved) in [
        ("trainer.train_batch_size=4", "trainer.train_batch_size: is 4, but the checkpoint ", 8),
        ("model.seq_len=16", "model.seq_len: is 16, but the checkpoint ", 32),
    ] {
        let outcome = job.train("run", &[&longer[..], &[change]].concat());
        let saved_with = format!("{checkpoint} was saved with {saved}: its data position");
        outcome.assert_error(&[&format!("{file}: {now}"), &saved_with, &format!("set it back to {saved}")]);
        assert!(!outcome.stderr.contains("compiled train step"), "{outcome}");
        assert_eq!(job.checkpoint_steps("run"), [2, 4]);
    }

    // Untouched, it resumes.
    let outcome = job.train("run", &longer);
    outcome.assert_success();
    assert_steps(&train_records(&job.records("run")), 1..=8);

    // A cached id outside the model's vocabulary is an error naming the shard, not an
    // out-of-range embedding lookup.
    let train_cache = std::fs::read_dir(job.path("tokenized"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.file_name().unwrap().to_string_lossy().starts_with("train-"))
        .unwrap();
    let shard = train_cache.join("shard-00000.bin");
    let mut tokens = std::fs::read(&shard).unwrap();
    tokens[..2].copy_from_slice(&0xffffu16.to_le_bytes());
    std::fs::write(&shard, &tokens).unwrap();
    let further = ["trainer.num_train_steps=10", "trainer.checkpointer.save_interval_steps=2"];
    job.train("run", &further).assert_error(&[
        &format!("{file}: data.cache_dir: {}: ", shard.display()),
        "its token at index 0 is id 65535, outside the vocabulary of 257 ids",
    ]);
    assert_eq!(job.checkpoint_steps("run"), [4, 6, 8]);
}

#[test]
fn data_parallel_and_microbatched_runs_match_one_device() {
    let job = Job::new();
    let base = ["trainer.num_train_steps=10", "trainer.steps_per_eval=0"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> { base.iter().chain(extra).copied().collect() };
    job.train("one", &base).assert_success();
    let one = losses(&job.records("one"));
    assert_eq!(one.len(), 10);

    // Four CPU devices, the batch split over them and the parameters sharded (FSDP).
    job.train("four", &with(&["trainer.runtime.cpu_device_count=4", "trainer.mesh.data=4"])).assert_success();
    assert_close(&losses(&job.records("four")), &one, 1e-5);

    // Four microbatches of 2 sequences accumulated in the step.
    job.train("micro", &with(&["trainer.per_device_parallelism=2"])).assert_success();
    assert_close(&losses(&job.records("micro")), &one, 1e-5);
}

#[test]
fn bfloat16_compute_and_gpt2_train() {
    let job = Job::new();
    let base = ["trainer.num_train_steps=20", "trainer.steps_per_eval=0"];
    for (run, extra) in [
        ("bfloat16", ["trainer.mp=p=f32,c=bfloat16", "model.type=llama"]),
        ("gpt2", ["model.type=gpt2", "model.num_kv_heads=4"]),
    ] {
        job.train(run, &[&base[..], &extra[..]].concat()).assert_success();
        let loss = losses(&job.records(run));
        assert_eq!(loss.len(), 20, "{run}");
        assert!((loss[0] - UNIFORM_LOSS).abs() < 0.2, "{run}: {loss:?}");
        assert!(mean(&loss[17..]) < loss[0] - 1.5, "{run}: {loss:?}");
        // Parameters stay f32 (p=f32) whatever the compute type.
        let contents = job.load_checkpoint(run, 20);
        assert!(contents.params.iter().all(|(_, tensor)| tensor.dtype() == DType::F32), "{run}");
        assert_finite(&contents);
    }
}

#[test]
fn hlo_writes_our_stablehlo_and_xla_optimized_hlo() {
    let job = Job::new();
    let out = job.path("hlo");
    let output = Command::new(env!("CARGO_BIN_EXE_sirocco"))
        .arg("hlo")
        .arg("--config")
        .arg(job.config())
        .arg("--out")
        .arg(&out)
        .env_remove("XLA_FLAGS")
        .output()
        .unwrap();
    let outcome = Outcome::of(output);
    outcome.assert_success();
    let mlir_path = out.join("train_step.mlir");
    let mlir = std::fs::read_to_string(&mlir_path).unwrap();
    assert!(mlir.contains("func.func public @main"), "{}", &mlir[..mlir.len().min(2000)]);
    assert!(mlir.contains("stablehlo.while"), "the layers are a scan");
    let listed: Vec<&str> = outcome.stdout.lines().collect();
    assert_eq!(listed.first(), Some(&mlir_path.to_str().unwrap()), "{outcome}");
    let optimized: Vec<&&str> =
        listed.iter().filter(|line| line.ends_with("after_optimizations.txt")).collect();
    assert!(!optimized.is_empty(), "{outcome}");
    for path in optimized {
        assert!(Path::new(path).starts_with(out.join("xla")), "{path}");
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.starts_with("HloModule"), "{path}: {}", &text[..text.len().min(200)]);
    }
    // Nothing trained.
    assert!(!job.run_dir("run").exists());
}

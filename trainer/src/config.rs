//! Job configs: YAML shaped like Levanter's `train_lm` configs (`data`, `model`, `trainer`,
//! `optimizer`), with dotted `--set a.b=c` overrides. Every struct denies unknown fields, and
//! every error names the file, the field path and what is allowed.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value as Yaml};

use crate::error::{Result, TrainerError};

/// Where the training and validation text comes from, and how it is tokenized.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Files, directories or globs of `.txt`, `.jsonl` and `.jsonl.gz` files.
    pub train_urls: Vec<String>,
    pub validation_urls: Vec<String>,
    /// The JSONL field holding the text.
    pub text_key: String,
    /// `byte` (UTF-8 bytes, vocabulary 256 + end of text) or the path of a HuggingFace
    /// `tokenizer.json`.
    pub tokenizer: String,
    /// Where tokenized corpora are cached (reused by later runs).
    pub cache_dir: PathBuf,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            train_urls: Vec::new(),
            validation_urls: Vec::new(),
            text_key: "text".into(),
            tokenizer: "byte".into(),
            cache_dir: PathBuf::from("data-cache/tokenized"),
        }
    }
}

/// The model families.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelType {
    Llama,
    Gpt2,
}

/// Transformer hyperparameters (Levanter's / Hugging Face's names).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    #[serde(rename = "type")]
    pub model_type: ModelType,
    pub seq_len: i64,
    pub hidden_dim: i64,
    pub intermediate_dim: i64,
    pub num_layers: i64,
    pub num_heads: i64,
    pub num_kv_heads: i64,
    pub tie_word_embeddings: bool,
    pub rope_theta: f64,
    pub layer_norm_epsilon: f64,
    pub initializer_range: f64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            model_type: ModelType::Llama,
            seq_len: 1024,
            hidden_dim: 768,
            intermediate_dim: 2048,
            num_layers: 12,
            num_heads: 12,
            num_kv_heads: 12,
            tie_word_embeddings: false,
            rope_theta: 10000.0,
            layer_norm_epsilon: 1e-5,
            initializer_range: 0.02,
        }
    }
}

impl ModelConfig {
    pub fn head_dim(&self) -> i64 {
        self.hidden_dim / self.num_heads.max(1)
    }
}

/// Device mesh axis sizes; -1 takes the remaining devices.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeshConfig {
    pub data: i64,
    pub model: i64,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig { data: -1, model: 1 }
    }
}

/// The PJRT plugin and its client options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// `cpu`, `cuda`, `tpu` or the path of a plugin `.so`.
    pub plugin: String,
    /// Virtual devices of the CPU plugin.
    pub cpu_device_count: Option<usize>,
    /// Persistent compile cache directory; null uses the default (`~/.cache/sirocco/compile`).
    pub compile_cache: Option<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig { plugin: "cpu".into(), cpu_device_count: None, compile_cache: None }
    }
}

impl RuntimeConfig {
    /// The PJRT client options this runtime section asks for.
    pub fn client_options(&self) -> sirocco::pjrt::ClientOptions {
        sirocco::pjrt::ClientOptions { cpu_device_count: self.cpu_device_count, ..Default::default() }
    }
}

/// When and where checkpoints are written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointerConfig {
    /// Directory of the checkpoints (`step-N/` inside); a relative path is relative to
    /// `trainer.run_dir`.
    pub base_path: PathBuf,
    /// Save every this many steps (0: never by steps).
    pub save_interval_steps: u64,
    /// Save when this many minutes passed since the last save (0: never by time).
    pub save_interval_minutes: f64,
    /// How many checkpoints to keep (the newest).
    pub keep: usize,
}

impl Default for CheckpointerConfig {
    fn default() -> Self {
        CheckpointerConfig {
            base_path: PathBuf::from("checkpoints"),
            save_interval_steps: 1000,
            save_interval_minutes: 15.0,
            keep: 2,
        }
    }
}

/// Where metrics go besides `run_dir/metrics.jsonl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackerKind {
    Json,
    Tensorboard,
}

/// What to do when a step's loss or gradients are not finite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NanPolicy {
    /// Skip the update (parameters and optimizer state kept) and go on.
    Skip,
    /// Stop the run; the last good checkpoint stays the latest.
    Stop,
}

/// Where the optimizer's scheduled hyperparameters (the learning rate) are computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum HyperparameterSource {
    /// On the host each step, fed to the step as inputs: changing the learning rate or the
    /// schedule never recompiles (the compile cache hits).
    Runtime,
    /// In the graph from the optimizer's step counter (optax's `inject_hyperparams`).
    Graph,
}

/// The largest model size (`hidden_dim`, `seq_len`, ...) and batch a config may give (2^32).
const MAX_DIMENSION: i64 = 1 << 32;

/// The longest run `trainer.num_train_steps` may ask for (2^53: exact in f64).
const MAX_TRAIN_STEPS: u64 = 1 << 53;

/// How training runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainerConfig {
    pub seed: u64,
    pub num_train_steps: u64,
    /// Sequences per optimizer step (over all devices).
    pub train_batch_size: i64,
    /// Sequences per device per forward/backward pass; -1 = the whole per-device batch.
    /// Smaller values accumulate microbatches inside the step.
    pub per_device_parallelism: i64,
    /// Mixed precision, as jmp policies: `p=f32,c=bfloat16` (parameters f32, compute bf16).
    pub mp: String,
    /// Evaluate every this many steps (0: only at the end).
    pub steps_per_eval: u64,
    pub max_eval_batches: usize,
    pub mesh: MeshConfig,
    pub runtime: RuntimeConfig,
    pub checkpointer: CheckpointerConfig,
    pub tracker: Vec<TrackerKind>,
    /// Where metrics, plots and checkpoints of the run go (a relative
    /// `checkpointer.base_path` is inside it).
    pub run_dir: PathBuf,
    /// Weight of the z-loss (`log(Z)^2`) added to the cross-entropy; 0 disables it.
    pub z_loss_weight: f64,
    pub on_nan: NanPolicy,
    /// Peak FLOP/s of one device for MFU; null measures a matmul at start-up.
    pub device_flops: Option<f64>,
    /// `runtime` (default: schedules evaluated on the host, never recompiling) or `graph`.
    pub hyperparameters: HyperparameterSource,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        TrainerConfig {
            seed: 0,
            num_train_steps: 1000,
            train_batch_size: 32,
            per_device_parallelism: -1,
            mp: "p=f32,c=f32".into(),
            steps_per_eval: 1000,
            max_eval_batches: 8,
            mesh: MeshConfig::default(),
            runtime: RuntimeConfig::default(),
            checkpointer: CheckpointerConfig::default(),
            tracker: vec![TrackerKind::Json],
            run_dir: PathBuf::from("runs/default"),
            z_loss_weight: 0.0,
            on_nan: NanPolicy::Skip,
            device_flops: None,
            hyperparameters: HyperparameterSource::Runtime,
        }
    }
}

/// A whole job: the four sections, the optimizer kept as YAML for `xla_optim`'s registry.
#[derive(Clone, Debug)]
pub struct JobConfig {
    pub data: DataConfig,
    pub model: ModelConfig,
    pub trainer: TrainerConfig,
    pub optimizer: Yaml,
    /// The file it came from (for messages).
    pub source: String,
}

const SECTIONS: [&str; 4] = ["data", "model", "trainer", "optimizer"];

fn config_error(file: &str, path: impl Into<String>, message: impl Into<String>) -> TrainerError {
    TrainerError::Config { file: file.to_string(), path: path.into(), message: message.into() }
}

/// Applies `a.b.c=value` overrides to a YAML tree (the value parsed as YAML).
pub fn apply_overrides(root: &mut Yaml, overrides: &[String], file: &str) -> Result<()> {
    for assignment in overrides {
        let (path, text) = assignment
            .split_once('=')
            .ok_or_else(|| config_error(file, assignment.as_str(), "an override is `section.field=value`"))?;
        let value: Yaml = serde_yaml::from_str(text).map_err(|error| {
            config_error(file, path, format!("cannot read override value `{text}`: {error}"))
        })?;
        let keys: Vec<&str> = path.split('.').collect();
        if keys.iter().any(|key| key.is_empty()) {
            return Err(config_error(file, path, "empty key in override path"));
        }
        let mut node = &mut *root;
        for (depth, key) in keys.iter().enumerate() {
            if node.is_null() {
                *node = Yaml::Mapping(Mapping::new());
            }
            let Yaml::Mapping(mapping) = node else {
                return Err(config_error(
                    file,
                    keys[..depth].join("."),
                    "is not a mapping, cannot set a field inside it",
                ));
            };
            let key = Yaml::from(key.to_string());
            if depth == keys.len() - 1 {
                mapping.insert(key, value.clone());
                break;
            }
            node = mapping.entry(key).or_insert(Yaml::Null);
        }
    }
    Ok(())
}

/// The field names a serde struct accepts (from its serialized default).
pub fn field_names<T: Serialize + Default>() -> Vec<String> {
    match serde_yaml::to_value(T::default()) {
        Ok(Yaml::Mapping(mapping)) => mapping.keys().filter_map(|k| k.as_str().map(str::to_string)).collect(),
        _ => Vec::new(),
    }
}

/// Deserializes one section, naming the offending field on failure.
fn section<T: serde::de::DeserializeOwned + Serialize + Default>(
    value: Option<&Yaml>,
    name: &str,
    file: &str,
) -> Result<T> {
    let Some(value) = value else { return Ok(T::default()) };
    if value.is_null() {
        return Ok(T::default());
    }
    let Yaml::Mapping(mapping) = value else {
        return Err(config_error(file, name, "expected a mapping"));
    };
    check_fields::<T>(mapping, name, file)?;
    serde_yaml::from_value(value.clone()).map_err(|error| config_error(file, name, error.to_string()))
}

/// Rejects unknown keys with the allowed ones listed, then finds the field whose value is
/// malformed (deserializing field by field, recursing into nested sections).
fn check_fields<T: serde::de::DeserializeOwned + Serialize + Default>(
    mapping: &Mapping,
    path: &str,
    file: &str,
) -> Result<()> {
    let allowed = field_names::<T>();
    for (key, value) in mapping {
        let Some(name) = key.as_str() else {
            return Err(config_error(file, path, "field names must be strings"));
        };
        if !allowed.iter().any(|field| field == name) {
            return Err(config_error(
                file,
                format!("{path}.{name}"),
                format!("unknown field; allowed: {}", allowed.join(", ")),
            ));
        }
        if let Some((keys, message)) = failing_field::<T>(std::slice::from_ref(key), value) {
            return Err(config_error(file, format!("{path}.{}", keys.join(".")), message));
        }
    }
    Ok(())
}

/// The deepest field at `keys` (a path into a `T`, ending at `value`) whose value alone does not
/// deserialize, and the error: `trainer.mesh.data`, not `trainer.mesh`.
fn failing_field<T: serde::de::DeserializeOwned>(
    keys: &[Yaml],
    value: &Yaml,
) -> Option<(Vec<String>, String)> {
    let wrapped = keys.iter().rev().fold(value.clone(), |inner, key| {
        let mut mapping = Mapping::new();
        mapping.insert(key.clone(), inner);
        Yaml::Mapping(mapping)
    });
    let error = serde_yaml::from_value::<T>(wrapped).err()?;
    if let Yaml::Mapping(fields) = value {
        for (key, inner) in fields {
            let deeper: Vec<Yaml> = keys.iter().cloned().chain([key.clone()]).collect();
            if let Some(found) = failing_field::<T>(&deeper, inner) {
                return Some(found);
            }
        }
    }
    let names =
        keys.iter().map(|key| key.as_str().map_or_else(|| format!("{key:?}"), str::to_owned)).collect();
    Some((names, error.to_string()))
}

/// Merges `layer` into `base`: mappings key by key (recursively), anything else replaced.
fn merge(base: &mut Yaml, layer: Yaml) {
    match (base, layer) {
        (Yaml::Mapping(base), Yaml::Mapping(layer)) => {
            for (key, value) in layer {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, layer) => *base = layer,
    }
}

impl JobConfig {
    /// Reads `paths` (later files override earlier ones, mapping by mapping: e.g. a job, then a
    /// model size from `configs/models/`), applies `overrides`, and checks every section.
    pub fn load(paths: &[PathBuf], overrides: &[String]) -> Result<JobConfig> {
        let Some(first) = paths.first() else {
            return Err(TrainerError::Other("no config file given (--config FILE)".into()));
        };
        let mut root = Yaml::Null;
        for path in paths {
            let file = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|error| TrainerError::io(path, error))?;
            let layer: Yaml = serde_yaml::from_str(&text)
                .map_err(|error| config_error(&file, "(document)", error.to_string()))?;
            // An empty (or comment-only) file adds nothing.
            if layer.is_null() {
                continue;
            }
            if !layer.is_mapping() {
                return Err(config_error(
                    &file,
                    "(document)",
                    "expected a mapping with data, model, trainer, optimizer",
                ));
            }
            merge(&mut root, layer);
        }
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        let file = if paths.len() == 1 { first.display().to_string() } else { names.join(" + ") };
        Self::from_yaml(root, &file, overrides)
    }

    pub fn from_yaml_str(text: &str, file: &str, overrides: &[String]) -> Result<JobConfig> {
        let root: Yaml = serde_yaml::from_str(text)
            .map_err(|error| config_error(file, "(document)", error.to_string()))?;
        Self::from_yaml(root, file, overrides)
    }

    fn from_yaml(mut root: Yaml, file: &str, overrides: &[String]) -> Result<JobConfig> {
        if root.is_null() {
            root = Yaml::Mapping(Mapping::new());
        }
        apply_overrides(&mut root, overrides, file)?;
        let Yaml::Mapping(mapping) = &root else {
            return Err(config_error(
                file,
                "(document)",
                "expected a mapping with data, model, trainer, optimizer",
            ));
        };
        for key in mapping.keys() {
            let name = key.as_str().unwrap_or("?");
            if !SECTIONS.contains(&name) {
                return Err(config_error(
                    file,
                    name,
                    format!("unknown section; allowed: {}", SECTIONS.join(", ")),
                ));
            }
        }
        let config = JobConfig {
            data: section(mapping.get("data"), "data", file)?,
            model: section(mapping.get("model"), "model", file)?,
            trainer: section(mapping.get("trainer"), "trainer", file)?,
            optimizer: mapping.get("optimizer").cloned().unwrap_or(Yaml::Null),
            source: file.to_string(),
        };
        config.validate()?;
        Ok(config)
    }

    /// The checkpointer's settings with `base_path` resolved: a relative path is inside
    /// `trainer.run_dir`. (The config itself keeps the path as written, so the resolved config
    /// saved with a run can be run again.)
    pub fn checkpointer(&self) -> CheckpointerConfig {
        let mut checkpointer = self.trainer.checkpointer.clone();
        if checkpointer.base_path.is_relative() {
            checkpointer.base_path = self.trainer.run_dir.join(&checkpointer.base_path);
        }
        checkpointer
    }

    /// A config error at `path` (`trainer.mesh`) of this job's file(s).
    pub(crate) fn error(&self, path: impl Into<String>, message: impl Into<String>) -> TrainerError {
        config_error(&self.source, path, message)
    }

    /// Range and consistency checks that need no devices.
    pub fn validate(&self) -> Result<()> {
        let m = &self.model;
        let positive = [
            ("model.seq_len", m.seq_len),
            ("model.hidden_dim", m.hidden_dim),
            ("model.intermediate_dim", m.intermediate_dim),
            ("model.num_layers", m.num_layers),
            ("model.num_heads", m.num_heads),
            ("model.num_kv_heads", m.num_kv_heads),
            ("trainer.train_batch_size", self.trainer.train_batch_size),
        ];
        for (path, value) in positive {
            if value < 1 {
                return Err(self.error(path, format!("must be at least 1, got {value}")));
            }
            // Sizes are multiplied together (and by one more for shifted tokens) in i64; a model
            // too large to hold is refused when its graph is built.
            if value > MAX_DIMENSION {
                return Err(self.error(path, format!("must be at most {MAX_DIMENSION}, got {value}")));
            }
        }
        if m.hidden_dim % m.num_heads != 0 {
            return Err(self.error(
                "model.num_heads",
                format!("must divide hidden_dim {}, got {}", m.hidden_dim, m.num_heads),
            ));
        }
        if m.num_heads % m.num_kv_heads != 0 {
            return Err(self.error(
                "model.num_kv_heads",
                format!("must divide num_heads {}, got {}", m.num_heads, m.num_kv_heads),
            ));
        }
        if m.model_type == ModelType::Llama && m.head_dim() % 2 != 0 {
            return Err(
                self.error("model.hidden_dim", "hidden_dim / num_heads must be even for rotary embeddings")
            );
        }
        if m.model_type == ModelType::Gpt2 && m.num_kv_heads != m.num_heads {
            return Err(
                self.error("model.num_kv_heads", "gpt2 has no grouped-query attention: set it to num_heads")
            );
        }
        for (path, value) in [
            ("model.layer_norm_epsilon", m.layer_norm_epsilon),
            ("model.initializer_range", m.initializer_range),
            ("model.rope_theta", m.rope_theta),
        ] {
            if !(value > 0.0 && value.is_finite()) {
                return Err(self.error(path, format!("must be a number > 0, got {value}")));
            }
        }
        if self.trainer.num_train_steps == 0 {
            return Err(self.error("trainer.num_train_steps", "must be at least 1"));
        }
        // Step counts are i64 in the graph (and exact in the f64 schedules).
        if self.trainer.num_train_steps > MAX_TRAIN_STEPS {
            return Err(self.error("trainer.num_train_steps", format!("must be at most {MAX_TRAIN_STEPS}")));
        }
        if self.trainer.per_device_parallelism == 0 || self.trainer.per_device_parallelism < -1 {
            return Err(self.error("trainer.per_device_parallelism", "must be -1 or at least 1"));
        }
        for (path, value) in
            [("trainer.mesh.data", self.trainer.mesh.data), ("trainer.mesh.model", self.trainer.mesh.model)]
        {
            if value == 0 || value < -1 {
                return Err(self
                    .error(path, format!("must be -1 (the remaining devices) or at least 1, got {value}")));
            }
        }
        if self.trainer.mesh.data == -1 && self.trainer.mesh.model == -1 {
            return Err(self.error("trainer.mesh", "at most one axis can be -1"));
        }
        Precision::parse(&self.trainer.mp).map_err(|message| self.error("trainer.mp", message))?;
        if self.data.train_urls.is_empty() {
            return Err(self.error("data.train_urls", "needs at least one file, directory or glob"));
        }
        let checkpointer = &self.trainer.checkpointer;
        if checkpointer.keep == 0 {
            return Err(self.error("trainer.checkpointer.keep", "must be at least 1"));
        }
        if !(checkpointer.save_interval_minutes >= 0.0 && checkpointer.save_interval_minutes.is_finite()) {
            return Err(self.error("trainer.checkpointer.save_interval_minutes", "must be a number >= 0"));
        }
        if !(self.trainer.z_loss_weight >= 0.0 && self.trainer.z_loss_weight.is_finite()) {
            return Err(self.error("trainer.z_loss_weight", "must be a number >= 0"));
        }
        if let Some(flops) = self.trainer.device_flops {
            if !(flops > 0.0 && flops.is_finite()) {
                return Err(self.error("trainer.device_flops", format!("must be a number > 0, got {flops}")));
            }
        }
        let runtime = &self.trainer.runtime;
        if let Some(count) = runtime.cpu_device_count {
            if count == 0 || count as i64 > sirocco::pjrt::MAX_CPU_DEVICES {
                return Err(self.error(
                    "trainer.runtime.cpu_device_count",
                    format!("must be in 1..={}, got {count}", sirocco::pjrt::MAX_CPU_DEVICES),
                ));
            }
        }
        if matches!(runtime.plugin.as_str(), "cuda" | "tpu") && runtime.cpu_device_count.is_some() {
            return Err(self.error(
                "trainer.runtime.cpu_device_count",
                format!(
                    "only the CPU plugin has virtual devices; remove it (or set it to null) for plugin `{}`",
                    runtime.plugin
                ),
            ));
        }
        Ok(())
    }

    /// The resolved config as YAML (every default filled in), saved with checkpoints.
    pub fn to_yaml(&self, optimizer: Yaml) -> Yaml {
        let mut mapping = Mapping::new();
        mapping.insert("data".into(), serde_yaml::to_value(&self.data).unwrap_or(Yaml::Null));
        mapping.insert("model".into(), serde_yaml::to_value(&self.model).unwrap_or(Yaml::Null));
        mapping.insert("trainer".into(), serde_yaml::to_value(&self.trainer).unwrap_or(Yaml::Null));
        mapping.insert("optimizer".into(), optimizer);
        Yaml::Mapping(mapping)
    }
}

/// Parameter and compute dtypes from a jmp policy string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Precision {
    pub params: sirocco::DType,
    pub compute: sirocco::DType,
}

impl Precision {
    /// Reads `p=f32,c=bfloat16` (keys `p`/`params`, `c`/`compute`; `o`/`output` accepted and
    /// ignored: outputs follow the compute type).
    pub fn parse(text: &str) -> std::result::Result<Precision, String> {
        let mut precision = Precision { params: sirocco::DType::F32, compute: sirocco::DType::F32 };
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').ok_or_else(|| format!("`{part}` is not key=dtype"))?;
            let dtype = sirocco::DType::parse(value.trim())
                .filter(|d| d.is_float())
                .ok_or_else(|| format!("`{value}` is not a float dtype (f32, bfloat16, f16, f64)"))?;
            match key.trim() {
                "p" | "params" => precision.params = dtype,
                "c" | "compute" => precision.compute = dtype,
                "o" | "output" => {}
                other => return Err(format!("unknown key `{other}`; use p=..., c=...")),
            }
        }
        Ok(precision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "data:\n  train_urls: [a.txt]\n";

    #[test]
    fn fills_defaults_and_applies_overrides() {
        let config = JobConfig::from_yaml_str(
            MINIMAL,
            "job.yaml",
            &["trainer.num_train_steps=7".into(), "model.num_layers=2".into()],
        )
        .unwrap();
        assert_eq!(config.trainer.num_train_steps, 7);
        assert_eq!(config.model.num_layers, 2);
        assert_eq!(config.model.hidden_dim, 768);
        assert_eq!(config.data.tokenizer, "byte");
    }

    #[test]
    fn out_of_range_numbers_are_named() {
        let cases = [
            ("trainer.z_loss_weight=.nan", "trainer.z_loss_weight"),
            ("trainer.device_flops=-1", "trainer.device_flops"),
            ("trainer.runtime.cpu_device_count=0", "trainer.runtime.cpu_device_count"),
            ("trainer.runtime.cpu_device_count=100000", "trainer.runtime.cpu_device_count"),
            ("trainer.num_train_steps=18446744073709551615", "trainer.num_train_steps"),
            ("model.seq_len=9223372036854775807", "model.seq_len"),
            ("model.hidden_dim=36028797018963968", "model.hidden_dim"),
            ("model.rope_theta=.inf", "model.rope_theta"),
            ("model.layer_norm_epsilon=-1", "model.layer_norm_epsilon"),
        ];
        for (set, path) in cases {
            let error = JobConfig::from_yaml_str(MINIMAL, "job.yaml", &[set.into()]).unwrap_err();
            assert!(error.to_string().starts_with(&format!("job.yaml: {path}: ")), "{set}: {error}");
        }
    }

    #[test]
    fn errors_name_file_and_field() {
        let error = JobConfig::from_yaml_str(
            "data:\n  train_urls: [a]\ntrainer:\n  num_train_step: 3\n",
            "job.yaml",
            &[],
        )
        .unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with("job.yaml: trainer.num_train_step: unknown field; allowed: seed,"),
            "{text}"
        );
        let error =
            JobConfig::from_yaml_str(MINIMAL, "job.yaml", &["trainer.mesh.data=abc".into()]).unwrap_err();
        assert!(error.to_string().starts_with("job.yaml: trainer.mesh.data: invalid type"), "{error}");
        let error =
            JobConfig::from_yaml_str(MINIMAL, "job.yaml", &["trainer.runtime.gpu=1".into()]).unwrap_err();
        assert!(error.to_string().starts_with("job.yaml: trainer.runtime.gpu: unknown field"), "{error}");
        let error = JobConfig::from_yaml_str(MINIMAL, "job.yaml", &["model.num_heads=5".into()]).unwrap_err();
        assert!(error.to_string().contains("model.num_heads: must divide hidden_dim 768"), "{error}");
        let error = JobConfig::from_yaml_str("datum: {}\n", "job.yaml", &[]).unwrap_err();
        assert!(error.to_string().contains("datum: unknown section"), "{error}");
        let error =
            JobConfig::from_yaml_str(MINIMAL, "job.yaml", &["trainer.mp=p=f32,c=int8".into()]).unwrap_err();
        assert!(error.to_string().contains("trainer.mp"), "{error}");
        let overrides = ["trainer.runtime.plugin=cuda".into(), "trainer.runtime.cpu_device_count=2".into()];
        let error = JobConfig::from_yaml_str(MINIMAL, "job.yaml", &overrides).unwrap_err();
        assert!(
            error.to_string().starts_with("job.yaml: trainer.runtime.cpu_device_count: only the CPU plugin"),
            "{error}"
        );
    }

    #[test]
    fn parses_precision_policies() {
        let p = Precision::parse("p=f32,c=bfloat16").unwrap();
        assert_eq!((p.params, p.compute), (sirocco::DType::F32, sirocco::DType::BF16));
        assert!(Precision::parse("p=f32,x=bf16").is_err());
    }
}

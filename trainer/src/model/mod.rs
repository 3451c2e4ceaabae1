//! Model families: their parameters (names, shapes, logical axes, initializers) and forward
//! pass. Layers are stacked on a leading `layers` dimension and run by `scan`, so compile time
//! barely grows with depth.

mod gpt2;
pub mod layers;
mod llama;

use sirocco::hlo::{TensorType, Value};
use sirocco::DType;

use crate::config::{ModelConfig, ModelType};

/// Logical axes of parameter dimensions, mapped to mesh axes by the sharding rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Axis {
    Layers,
    Embed,
    Heads,
    KvHeads,
    Mlp,
    Vocab,
    Position,
}

/// How a parameter starts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Normal(0, std).
    Normal(f64),
    Ones,
    Zeros,
}

/// One parameter of a model.
#[derive(Clone, Debug)]
pub struct Parameter {
    pub name: String,
    pub dims: Vec<i64>,
    pub axes: Vec<Axis>,
    pub init: Init,
}

impl Parameter {
    fn new(name: &str, dims: &[i64], axes: &[Axis], init: Init) -> Self {
        Parameter { name: name.to_string(), dims: dims.to_vec(), axes: axes.to_vec(), init }
    }

    pub fn element_count(&self) -> i64 {
        self.dims.iter().product()
    }
}

/// A model: its parameters and how to run them.
pub trait LanguageModel: Send + Sync {
    fn parameters(&self) -> &[Parameter];

    /// Logits `[batch, seq, vocab]` (compute dtype) of integer `tokens: [batch, seq]`, with
    /// `params` in the order of [`LanguageModel::parameters`].
    fn logits(&self, params: &[Value], tokens: &Value, compute: DType) -> Value;

    /// Model FLOPs of one token of a forward and backward pass (6 per parameter touched by a
    /// matmul, plus attention), as speedrun reports count them.
    fn flops_per_token(&self) -> f64;
}

/// Builds the model of `config` for a tokenizer of `vocab_size`.
pub fn build(config: &ModelConfig, vocab_size: i64) -> Box<dyn LanguageModel> {
    match config.model_type {
        ModelType::Llama => Box::new(llama::Llama::new(config, vocab_size)),
        ModelType::Gpt2 => Box::new(gpt2::Gpt2::new(config, vocab_size)),
    }
}

/// Parameter types in `dtype`.
pub fn parameter_types(model: &dyn LanguageModel, dtype: DType) -> Vec<(String, TensorType)> {
    model.parameters().iter().map(|p| (p.name.clone(), TensorType::new(dtype, &p.dims))).collect()
}

/// Attention FLOPs per token for a forward and backward pass: `QK^T` and `AV` over the
/// causal half of the sequence on average, times 3 (forward + backward).
pub(crate) fn attention_flops_per_token(num_layers: i64, seq_len: i64, attention_dim: i64) -> f64 {
    // 2 matmuls x 2 flops per multiply-add x seq_len keys (half masked, but computed) x 3.
    12.0 * num_layers as f64 * seq_len as f64 * attention_dim as f64
}

/// Slices stacked layer weights inside a scan body: the body receives one slice of each.
pub(crate) fn run_layers(x: &Value, stacked: &[Value], layer: impl Fn(&Value, &[Value]) -> Value) -> Value {
    let (carry, _) = sirocco::hlo::scan(
        std::slice::from_ref(x),
        stacked,
        sirocco::hlo::ScanOptions::default(),
        |carry, weights| (vec![layer(&carry[0], weights)], Vec::new()),
    );
    carry[0].clone()
}

//! GPT-2 (Hugging Face conventions): learned positions, pre-LayerNorm blocks with biases,
//! GELU (tanh approximation) MLP, embeddings tied to the output unless configured otherwise.

use sirocco::hlo::Value;
use sirocco::DType;

use super::layers::{causal_attention, gelu_tanh, layer_norm, linear};
use super::{attention_flops_per_token, run_layers, Axis, Init, LanguageModel, Parameter};
use crate::config::ModelConfig;

pub struct Gpt2 {
    config: ModelConfig,
    vocab_size: i64,
    parameters: Vec<Parameter>,
}

const WTE: usize = 0;
const WPE: usize = 1;
const LAYERS: std::ops::Range<usize> = 2..14;
const LN_F: usize = 14;
const LM_HEAD: usize = 16;

impl Gpt2 {
    pub fn new(config: &ModelConfig, vocab_size: i64) -> Gpt2 {
        let (l, d, i, t) = (config.num_layers, config.hidden_dim, config.intermediate_dim, config.seq_len);
        let normal = Init::Normal(config.initializer_range);
        use Axis::*;
        let mut parameters = vec![
            Parameter::new("wte.weight", &[vocab_size, d], &[Vocab, Embed], normal),
            Parameter::new("wpe.weight", &[t, d], &[Position, Embed], normal),
            Parameter::new("h.ln_1.weight", &[l, d], &[Layers, Embed], Init::Ones),
            Parameter::new("h.ln_1.bias", &[l, d], &[Layers, Embed], Init::Zeros),
            Parameter::new("h.attn.c_attn.weight", &[l, d, 3 * d], &[Layers, Embed, Heads], normal),
            Parameter::new("h.attn.c_attn.bias", &[l, 3 * d], &[Layers, Heads], Init::Zeros),
            Parameter::new("h.attn.c_proj.weight", &[l, d, d], &[Layers, Heads, Embed], normal),
            Parameter::new("h.attn.c_proj.bias", &[l, d], &[Layers, Embed], Init::Zeros),
            Parameter::new("h.ln_2.weight", &[l, d], &[Layers, Embed], Init::Ones),
            Parameter::new("h.ln_2.bias", &[l, d], &[Layers, Embed], Init::Zeros),
            Parameter::new("h.mlp.c_fc.weight", &[l, d, i], &[Layers, Embed, Mlp], normal),
            Parameter::new("h.mlp.c_fc.bias", &[l, i], &[Layers, Mlp], Init::Zeros),
            Parameter::new("h.mlp.c_proj.weight", &[l, i, d], &[Layers, Mlp, Embed], normal),
            Parameter::new("h.mlp.c_proj.bias", &[l, d], &[Layers, Embed], Init::Zeros),
            Parameter::new("ln_f.weight", &[d], &[Embed], Init::Ones),
            Parameter::new("ln_f.bias", &[d], &[Embed], Init::Zeros),
        ];
        if !config.tie_word_embeddings {
            parameters.push(Parameter::new("lm_head.weight", &[d, vocab_size], &[Embed, Vocab], normal));
        }
        Gpt2 { config: config.clone(), vocab_size, parameters }
    }

    fn layer(&self, x: &Value, w: &[Value]) -> Value {
        let c = &self.config;
        let [batch, seq, d] = [x.dims()[0], x.dims()[1], x.dims()[2]];
        let heads = c.num_heads;
        let head_dim = c.head_dim();
        let bias = |b: &Value, width: i64| b.convert(x.dtype()).broadcast_in_dim(&[batch, seq, width], &[2]);
        let h = layer_norm(x, &w[0], &w[1], c.layer_norm_epsilon);
        let qkv = linear(&h, &w[2]) + bias(&w[3], 3 * d);
        let split =
            |part: i64| qkv.slice_axis(2, part * d, (part + 1) * d).reshape(&[batch, seq, heads, head_dim]);
        let attention = causal_attention(&split(0), &split(1), &split(2));
        let x = x + &(linear(&attention, &w[4]) + bias(&w[5], d));
        let h = layer_norm(&x, &w[6], &w[7], c.layer_norm_epsilon);
        let hidden = gelu_tanh(&(linear(&h, &w[8]) + bias(&w[9], c.intermediate_dim)));
        &x + &(linear(&hidden, &w[10]) + bias(&w[11], d))
    }
}

impl LanguageModel for Gpt2 {
    fn parameters(&self) -> &[Parameter] {
        &self.parameters
    }

    fn logits(&self, params: &[Value], tokens: &Value, compute: DType) -> Value {
        let seq = tokens.dims()[1];
        let batch = tokens.dims()[0];
        let d = self.config.hidden_dim;
        let positions = params[WPE].slice_axis(0, 0, seq).broadcast_in_dim(&[batch, seq, d], &[1, 2]);
        let x = (params[WTE].take(tokens) + positions).convert(compute);
        let x = run_layers(&x, &params[LAYERS], |x, w| self.layer(x, w));
        let x = layer_norm(&x, &params[LN_F], &params[LN_F + 1], self.config.layer_norm_epsilon);
        if self.config.tie_word_embeddings {
            linear(&x, &params[WTE].transpose(&[1, 0]))
        } else {
            linear(&x, &params[LM_HEAD])
        }
    }

    fn flops_per_token(&self) -> f64 {
        let c = &self.config;
        let (d, i) = (c.hidden_dim as f64, c.intermediate_dim as f64);
        let per_layer = 4.0 * d * d + 2.0 * d * i;
        let matmul_params = c.num_layers as f64 * per_layer + d * self.vocab_size as f64;
        6.0 * matmul_params + attention_flops_per_token(c.num_layers, c.seq_len, c.hidden_dim)
    }
}

//! Llama (Levanter / Hugging Face conventions): RMSNorm, rotary embeddings in the "rotate
//! half" layout, grouped-query attention, SwiGLU MLP, optionally tied embeddings.

use sirocco::hlo::Value;
use sirocco::DType;

use super::layers::{causal_attention, linear, rms_norm, rotary, silu};
use super::{attention_flops_per_token, run_layers, Axis, Init, LanguageModel, Parameter};
use crate::config::ModelConfig;

pub struct Llama {
    config: ModelConfig,
    vocab_size: i64,
    parameters: Vec<Parameter>,
}

/// Indices into the parameter list.
const EMBED: usize = 0;
const LAYERS: std::ops::Range<usize> = 1..10;
const FINAL_NORM: usize = 10;
const LM_HEAD: usize = 11;

impl Llama {
    pub fn new(config: &ModelConfig, vocab_size: i64) -> Llama {
        let (l, d, i) = (config.num_layers, config.hidden_dim, config.intermediate_dim);
        let q = config.num_heads * config.head_dim();
        let kv = config.num_kv_heads * config.head_dim();
        let normal = Init::Normal(config.initializer_range);
        use Axis::*;
        let mut parameters = vec![
            Parameter::new("embed_tokens.weight", &[vocab_size, d], &[Vocab, Embed], normal),
            Parameter::new("layers.input_layernorm.weight", &[l, d], &[Layers, Embed], Init::Ones),
            Parameter::new("layers.self_attn.q_proj.weight", &[l, d, q], &[Layers, Embed, Heads], normal),
            Parameter::new("layers.self_attn.k_proj.weight", &[l, d, kv], &[Layers, Embed, KvHeads], normal),
            Parameter::new("layers.self_attn.v_proj.weight", &[l, d, kv], &[Layers, Embed, KvHeads], normal),
            Parameter::new("layers.self_attn.o_proj.weight", &[l, q, d], &[Layers, Heads, Embed], normal),
            Parameter::new("layers.post_attention_layernorm.weight", &[l, d], &[Layers, Embed], Init::Ones),
            Parameter::new("layers.mlp.gate_proj.weight", &[l, d, i], &[Layers, Embed, Mlp], normal),
            Parameter::new("layers.mlp.up_proj.weight", &[l, d, i], &[Layers, Embed, Mlp], normal),
            Parameter::new("layers.mlp.down_proj.weight", &[l, i, d], &[Layers, Mlp, Embed], normal),
            Parameter::new("norm.weight", &[d], &[Embed], Init::Ones),
        ];
        if !config.tie_word_embeddings {
            parameters.push(Parameter::new("lm_head.weight", &[d, vocab_size], &[Embed, Vocab], normal));
        }
        Llama { config: config.clone(), vocab_size, parameters }
    }

    fn layer(&self, x: &Value, w: &[Value]) -> Value {
        let c = &self.config;
        let [batch, seq] = [x.dims()[0], x.dims()[1]];
        let head_dim = c.head_dim();
        let h = rms_norm(x, &w[0], c.layer_norm_epsilon);
        let q = linear(&h, &w[1]).reshape(&[batch, seq, c.num_heads, head_dim]);
        let k = linear(&h, &w[2]).reshape(&[batch, seq, c.num_kv_heads, head_dim]);
        let v = linear(&h, &w[3]).reshape(&[batch, seq, c.num_kv_heads, head_dim]);
        let attention = causal_attention(&rotary(&q, c.rope_theta), &rotary(&k, c.rope_theta), &v);
        let x = x + &linear(&attention, &w[4]);
        let h = rms_norm(&x, &w[5], c.layer_norm_epsilon);
        let mlp = linear(&(silu(&linear(&h, &w[6])) * linear(&h, &w[7])), &w[8]);
        &x + &mlp
    }
}

impl LanguageModel for Llama {
    fn parameters(&self) -> &[Parameter] {
        &self.parameters
    }

    fn logits(&self, params: &[Value], tokens: &Value, compute: DType) -> Value {
        let x = params[EMBED].take(tokens).convert(compute);
        let x = run_layers(&x, &params[LAYERS], |x, w| self.layer(x, w));
        let x = rms_norm(&x, &params[FINAL_NORM], self.config.layer_norm_epsilon);
        if self.config.tie_word_embeddings {
            linear(&x, &params[EMBED].transpose(&[1, 0]))
        } else {
            linear(&x, &params[LM_HEAD])
        }
    }

    fn flops_per_token(&self) -> f64 {
        let c = &self.config;
        let (d, i) = (c.hidden_dim as f64, c.intermediate_dim as f64);
        let q = (c.num_heads * c.head_dim()) as f64;
        let kv = (c.num_kv_heads * c.head_dim()) as f64;
        let per_layer = d * q * 2.0 + d * kv * 2.0 + 3.0 * d * i;
        let matmul_params = c.num_layers as f64 * per_layer + d * self.vocab_size as f64;
        6.0 * matmul_params + attention_flops_per_token(c.num_layers, c.seq_len, c.num_heads * c.head_dim())
    }
}

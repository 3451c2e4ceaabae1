//! Building blocks shared by the model families, composed from builder primitives: norms,
//! rotary embeddings, causal attention with grouped-query heads, and the LM loss.

use sirocco::hlo::{DotDimensions, TensorType, Value};
use sirocco::DType;

/// `x @ w` over the last dimension of `x` (any leading dimensions) with `w: [in, out]`,
/// computed in `x`'s dtype.
pub fn linear(x: &Value, w: &Value) -> Value {
    x.matmul(&w.convert(x.dtype()))
}

/// Mean over the last dimension, kept as a size-1 dimension broadcastable back.
fn mean_last(x: &Value) -> Value {
    let last = x.rank() - 1;
    let kept: Vec<usize> = (0..last).collect();
    x.reduce_mean(&[last]).broadcast_in_dim(x.dims(), &kept)
}

/// RMSNorm (computed in f32): `x / sqrt(mean(x^2) + eps) * weight`, returned in `x`'s dtype.
pub fn rms_norm(x: &Value, weight: &Value, epsilon: f64) -> Value {
    let x32 = x.convert(DType::F32);
    let normalized = &x32 * &(mean_last(&x32.square()) + epsilon).rsqrt();
    let scale = weight.convert(DType::F32).broadcast_to(x.dims());
    (normalized * scale).convert(x.dtype())
}

/// LayerNorm with weight and bias (computed in f32), returned in `x`'s dtype.
pub fn layer_norm(x: &Value, weight: &Value, bias: &Value, epsilon: f64) -> Value {
    let x32 = x.convert(DType::F32);
    let centered = &x32 - &mean_last(&x32);
    let normalized = &centered * &(mean_last(&centered.square()) + epsilon).rsqrt();
    let scaled = normalized * weight.convert(DType::F32).broadcast_to(x.dims())
        + bias.convert(DType::F32).broadcast_to(x.dims());
    scaled.convert(x.dtype())
}

/// `x * sigmoid(x)`.
pub fn silu(x: &Value) -> Value {
    x * &x.logistic()
}

/// GELU, tanh approximation (GPT-2's `gelu_new`).
pub fn gelu_tanh(x: &Value) -> Value {
    let inner = (x + &(x * &x.square() * 0.044715)) * (2.0 / std::f64::consts::PI).sqrt();
    x * &((inner.tanh() + 1.0) * 0.5)
}

/// Rotary position embedding, "rotate half" layout (dimension i pairs with i + head_dim/2),
/// for `x: [batch, seq, heads, head_dim]` at positions 0..seq.
pub fn rotary(x: &Value, theta: f64) -> Value {
    let dims = x.dims().to_vec();
    let (seq, head_dim) = (dims[1], dims[3]);
    let half = head_dim / 2;
    let builder = x.builder();
    // inv_freq[i] = theta^(-2i / head_dim), angle[t, i] = t * inv_freq[i].
    let index = builder.iota(&TensorType::new(DType::F32, &[half]), 0);
    let inv_freq = (index * (-2.0 * theta.ln() / head_dim as f64)).exp();
    let positions = builder.iota(&TensorType::new(DType::F32, &[seq]), 0);
    let angles =
        positions.broadcast_in_dim(&[seq, half], &[0]) * inv_freq.broadcast_in_dim(&[seq, half], &[1]);
    let full = [dims[0], seq, dims[2], half];
    let cos = angles.cos().broadcast_in_dim(&full, &[1, 3]);
    let sin = angles.sin().broadcast_in_dim(&full, &[1, 3]);
    let x32 = x.convert(DType::F32);
    let first = x32.slice_axis(3, 0, half);
    let second = x32.slice_axis(3, half, head_dim);
    let rotated_first = &first * &cos - &second * &sin;
    let rotated_second = &second * &cos + &first * &sin;
    Value::concatenate(&[rotated_first, rotated_second], 3).convert(x.dtype())
}

/// Causal self-attention. `q: [batch, seq, heads, head_dim]`, `k`, `v:
/// [batch, seq, kv_heads, head_dim]`; query head `h` reads kv head `h / (heads / kv_heads)`.
/// Scores are scaled by `1/sqrt(head_dim)`, masked to the dtype's minimum above the diagonal,
/// and normalized in f32. Returns `[batch, seq, heads * head_dim]`.
pub fn causal_attention(q: &Value, k: &Value, v: &Value) -> Value {
    let [batch, seq, heads, head_dim] = [q.dims()[0], q.dims()[1], q.dims()[2], q.dims()[3]];
    let kv_heads = k.dims()[2];
    let group = heads / kv_heads;
    let dtype = q.dtype();
    // [b, s, kv, g, d] so one kv head serves its group of query heads.
    let q = q.reshape(&[batch, seq, kv_heads, group, head_dim]);
    // scores[b, kv, g, q, k] = sum_d q[b, q, kv, g, d] * k[b, k, kv, d]
    let scores = q.dot_general(
        k,
        &DotDimensions {
            lhs_batch: vec![0, 2],
            rhs_batch: vec![0, 2],
            lhs_contracting: vec![4],
            rhs_contracting: vec![3],
        },
    );
    // dot_general output: [b, kv, q(seq), g, k(seq)] -> [b, kv, g, q, k]
    let scores = scores.transpose(&[0, 1, 3, 2, 4]).convert(DType::F32) * (1.0 / (head_dim as f64).sqrt());
    let builder = scores.builder();
    let shape = TensorType::new(DType::I32, &[seq, seq]);
    let causal = builder.iota(&shape, 0).ge(&builder.iota(&shape, 1));
    let full = scores.dims().to_vec();
    let mask = causal.broadcast_in_dim(&full, &[3, 4]);
    let masked = mask.select(&scores, &scores.full_like(f64::from(f32::MIN)));
    let max = masked.reduce_max(&[4]).stop_gradient();
    let shifted = &masked - &max.broadcast_in_dim(&full, &[0, 1, 2, 3]);
    let exp = shifted.exp();
    let weights = &exp / &exp.reduce_sum(&[4]).broadcast_in_dim(&full, &[0, 1, 2, 3]);
    // out[b, kv, g, q, d] = sum_k weights[b, kv, g, q, k] * v[b, k, kv, d]
    let out = weights.convert(dtype).dot_general(
        v,
        &DotDimensions {
            lhs_batch: vec![0, 1],
            rhs_batch: vec![0, 2],
            lhs_contracting: vec![4],
            rhs_contracting: vec![1],
        },
    );
    // [b, kv, g, q, d] -> [b, q, kv, g, d] -> [b, q, heads * d]
    out.transpose(&[0, 3, 1, 2, 4]).reshape(&[batch, seq, heads * head_dim])
}

/// Token cross-entropy of `logits: [batch, seq, vocab]` against integer `targets:
/// [batch, seq]`: per-token `logsumexp(logits) - logits[target]` in f32, plus
/// `z_loss_weight * logsumexp^2` when positive. Returns the per-token losses `[batch, seq]`.
pub fn token_losses(logits: &Value, targets: &Value, z_loss_weight: f64) -> Value {
    let logits = logits.convert(DType::F32);
    let dims = logits.dims().to_vec();
    let last = dims.len() - 1;
    let leading: Vec<usize> = (0..last).collect();
    let max = logits.reduce_max(&[last]).stop_gradient();
    let shifted = &logits - &max.broadcast_in_dim(&dims, &leading);
    let log_z = shifted.exp().reduce_sum(&[last]).log() + &max;
    let builder = logits.builder();
    let vocab = builder.iota(&TensorType::new(targets.dtype(), &dims), last);
    let hit = vocab.eq(&targets.broadcast_in_dim(&dims, &leading));
    let target_logit = hit.select(&logits, &logits.zeros_like()).reduce_sum(&[last]);
    let loss = &log_z - &target_logit;
    if z_loss_weight > 0.0 {
        loss + log_z.square() * z_loss_weight
    } else {
        loss
    }
}

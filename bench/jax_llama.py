#!/usr/bin/env python3
"""The JAX + optax peer of `sirocco bench train`: the same Llama and the same optimizer step.

Llama as sirocco builds it (RMSNorm eps 1e-5, rotary "rotate half", grouped-query attention,
SwiGLU, untied head, layers stacked and run by lax.scan, f32), cross-entropy over the next
token, and the Adamax chain (clip_by_global_norm -> scale_by_adamax -> add_decayed_weights on
non-norm/non-embedding parameters -> -lr from warmup+cosine via inject_hyperparams), jit with
parameters and optimizer state donated. The batch stays on the device (as sirocco's
"resident" step time). Prints median step time and tokens/s (JSON with --json).

Usage: python bench/jax_llama.py --hidden 256 --intermediate 704 --layers 4 --heads 4 \
         --kv-heads 2 --seq-len 128 --batch 32 --vocab 257 --steps 10 [--plugin PATH] [--json]
"""
import argparse
import json
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    for name, default in [("hidden", 256), ("intermediate", 704), ("layers", 4), ("heads", 4), ("kv-heads", 2),
                          ("seq-len", 128), ("batch", 32), ("vocab", 257), ("steps", 10)]:
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--plugin", help="run on a PJRT plugin .so instead of jaxlib's CPU backend")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import jax

    if args.plugin:
        from jax._src import xla_bridge

        xla_bridge.register_plugin("pjrt_plugin", library_path=args.plugin)
        jax.config.update("jax_platforms", "pjrt_plugin")
    import jax.numpy as jnp
    import optax

    d, i, n_layers = args.hidden, args.intermediate, args.layers
    heads, kv_heads, seq, vocab = args.heads, args.kv_heads, args.seq_len, args.vocab
    head_dim = d // heads
    total_steps = args.steps + 3

    key = jax.random.PRNGKey(0)
    keys = jax.random.split(key, 8)
    normal = lambda k, shape: 0.02 * jax.random.normal(k, shape, jnp.float32)  # noqa: E731
    params = {
        "embed_tokens.weight": normal(keys[0], (vocab, d)),
        "layers.input_layernorm.weight": jnp.ones((n_layers, d)),
        "layers.self_attn.q_proj.weight": normal(keys[1], (n_layers, d, heads * head_dim)),
        "layers.self_attn.k_proj.weight": normal(keys[2], (n_layers, d, kv_heads * head_dim)),
        "layers.self_attn.v_proj.weight": normal(keys[3], (n_layers, d, kv_heads * head_dim)),
        "layers.self_attn.o_proj.weight": normal(keys[4], (n_layers, heads * head_dim, d)),
        "layers.post_attention_layernorm.weight": jnp.ones((n_layers, d)),
        "layers.mlp.gate_proj.weight": normal(keys[5], (n_layers, d, i)),
        "layers.mlp.up_proj.weight": normal(keys[6], (n_layers, d, i)),
        "layers.mlp.down_proj.weight": normal(keys[7], (n_layers, i, d)),
        "norm.weight": jnp.ones((d,)),
        "lm_head.weight": normal(jax.random.PRNGKey(1), (d, vocab)),
    }
    layer_names = [name for name in params if name.startswith("layers.")]

    def rms_norm(x, w):
        return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + 1e-5) * w

    def rotary(x):
        inv_freq = 10000.0 ** (-jnp.arange(0, head_dim // 2, dtype=jnp.float32) * 2 / head_dim)
        angles = jnp.arange(seq, dtype=jnp.float32)[:, None] * inv_freq[None, :]
        cos, sin = jnp.cos(angles)[None, :, None, :], jnp.sin(angles)[None, :, None, :]
        first, second = x[..., : head_dim // 2], x[..., head_dim // 2:]
        return jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)

    def layer(x, w):
        b = x.shape[0]
        h = rms_norm(x, w["layers.input_layernorm.weight"])
        q = (h @ w["layers.self_attn.q_proj.weight"]).reshape(b, seq, kv_heads, heads // kv_heads, head_dim)
        k = (h @ w["layers.self_attn.k_proj.weight"]).reshape(b, seq, kv_heads, head_dim)
        v = (h @ w["layers.self_attn.v_proj.weight"]).reshape(b, seq, kv_heads, head_dim)
        q = rotary(q.reshape(b, seq, heads, head_dim)).reshape(b, seq, kv_heads, heads // kv_heads, head_dim)
        k = rotary(k)
        scores = jnp.einsum("bqkgd,bskd->bkgqs", q, k) / jnp.sqrt(head_dim)
        mask = jnp.tril(jnp.ones((seq, seq), bool))
        scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(scores, axis=-1)
        attention = jnp.einsum("bkgqs,bskd->bqkgd", weights, v).reshape(b, seq, heads * head_dim)
        x = x + attention @ w["layers.self_attn.o_proj.weight"]
        h = rms_norm(x, w["layers.post_attention_layernorm.weight"])
        mlp = (jax.nn.silu(h @ w["layers.mlp.gate_proj.weight"]) * (h @ w["layers.mlp.up_proj.weight"]))
        return x + mlp @ w["layers.mlp.down_proj.weight"], None

    def loss_fn(params, tokens):
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        x = params["embed_tokens.weight"][inputs]
        x, _ = jax.lax.scan(layer, x, {name: params[name] for name in layer_names})
        logits = rms_norm(x, params["norm.weight"]) @ params["lm_head.weight"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    warmup = max(1, int(0.05 * total_steps))
    schedule = optax.join_schedules(
        [optax.linear_schedule(0.0, 3e-3, warmup), optax.cosine_decay_schedule(3e-3, total_steps - warmup, 0.1)],
        [warmup],
    )
    decay_mask = {name: not ("norm" in name.lower() or "embed" in name) for name in params}

    def make(learning_rate):
        return optax.chain(
            optax.clip_by_global_norm(1.0),
            optax.scale_by_adamax(0.9, 0.95, 1e-8),
            optax.add_decayed_weights(0.1, mask=decay_mask),
            optax.scale(-learning_rate),
        )

    optimizer = optax.inject_hyperparams(make)(learning_rate=schedule)
    opt_state = optimizer.init(params)

    def step(params, opt_state, tokens):
        loss, grads = jax.value_and_grad(loss_fn)(params, tokens)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    tokens = jax.random.randint(jax.random.PRNGKey(2), (args.batch, seq + 1), 0, vocab, jnp.int32)
    start = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, opt_state, tokens).compile()
    compile_s = time.perf_counter() - start
    times = []
    for index in range(3 + args.steps):
        start = time.perf_counter()
        params, opt_state, loss = compiled(params, opt_state, tokens)
        loss.block_until_ready()
        if index >= 3:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    report = {
        "peer": "jax+optax",
        "jax": jax.__version__,
        "backend": jax.devices()[0].platform + (" (plugin)" if args.plugin else ""),
        "layers": n_layers,
        "batch": args.batch,
        "seq_len": seq,
        "compile_s": compile_s,
        "step_s": median,
        "tokens_per_second": args.batch * seq / median,
        "final_loss": float(loss),
    }
    if args.json:
        print(json.dumps(report))
    else:
        for name, value in report.items():
            print(f"{name:<20}{value}")


if __name__ == "__main__":
    main()

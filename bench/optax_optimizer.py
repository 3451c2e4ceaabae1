#!/usr/bin/env python3
"""The optax peer of `sirocco bench optimizer`: the same Adamax chain on the same problem.

K f32 tensors totalling N parameters (shaped as sirocco's bench: [size/1024, 1024] when
divisible), chain = clip_by_global_norm -> scale_by_adamax -> add_decayed_weights (masked)
-> -learning_rate from a Levanter-style warmup+cosine schedule via inject_hyperparams,
jit-compiled with params and optimizer state donated. Prints the median step time
(JSON with --json).

Usage: python bench/optax_optimizer.py --params 100000000 --tensors 32 --steps 20 [--json]
       [--plugin PATH]   run on a PJRT plugin .so (e.g. sirocco's pinned xla-cpu-pjrt)
"""
import argparse
import json
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--params", type=int, required=True)
    parser.add_argument("--tensors", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--warmup", type=float, default=0.1)
    parser.add_argument("--plugin", help="path of a PJRT plugin to run on instead of jaxlib's CPU")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import jax

    if args.plugin:
        from jax._src import xla_bridge

        xla_bridge.register_plugin("pjrt_plugin", library_path=args.plugin)
        jax.config.update("jax_platforms", "pjrt_plugin")
    import jax.numpy as jnp
    import optax

    warmup = 3
    total_steps = args.steps + warmup
    warmup_steps = int(args.warmup * total_steps) if args.warmup <= 1 else int(args.warmup)
    schedule = optax.join_schedules(
        [
            optax.linear_schedule(0.0, args.learning_rate, warmup_steps),
            optax.cosine_decay_schedule(args.learning_rate, total_steps - warmup_steps, 0.1),
        ],
        [warmup_steps],
    )

    def make(learning_rate):
        return optax.chain(
            optax.clip_by_global_norm(1.0),
            optax.scale_by_adamax(0.9, 0.95, 1e-8),
            optax.add_decayed_weights(args.weight_decay, mask=lambda p: jax.tree_util.tree_map(lambda _: True, p)),
            optax.scale(-learning_rate),
        )

    optimizer = optax.inject_hyperparams(make)(learning_rate=schedule)

    base = args.params // args.tensors
    sizes = [base] * (args.tensors - 1) + [args.params - base * (args.tensors - 1)]
    key = jax.random.PRNGKey(0)
    params, grads = {}, {}
    for i, size in enumerate(sizes):
        shape = (size // 1024, 1024) if size % 1024 == 0 else (size,)
        key, k1, k2 = jax.random.split(key, 3)
        params[f"blocks.{i}.weight"] = jax.random.uniform(k1, shape, jnp.float32, -1.0, 1.0)
        grads[f"blocks.{i}.weight"] = jax.random.uniform(k2, shape, jnp.float32, -1e-3, 1e-3)
    state = optimizer.init(params)

    def step(params, state, grads):
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    compile_start = time.perf_counter()
    step = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, grads).compile()
    compile_s = time.perf_counter() - compile_start

    times = []
    for i in range(warmup + args.steps):
        start = time.perf_counter()
        params, state = step(params, state, grads)
        jax.block_until_ready((params, state))
        if i >= warmup:
            times.append(time.perf_counter() - start)
    cost = step.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    report = {
        "peer": "optax",
        "jax": jax.__version__,
        "optax": optax.__version__,
        "backend": jax.devices()[0].platform + (" (plugin)" if args.plugin else ""),
        "params": args.params,
        "tensors": args.tensors,
        "steps": args.steps,
        "median_step_s": statistics.median(times),
        "min_step_s": min(times),
        "xla_bytes_accessed_per_param": (cost or {}).get("bytes accessed", float("nan")) / args.params,
        "compile_s": compile_s,
    }
    if args.json:
        print(json.dumps(report))
    else:
        for name, value in report.items():
            print(f"{name:<30}{value}")


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# Runs every benchmark of docs/benchmarks.md in one go, sirocco and its peers (optax/JAX)
# back to back on the same machine, and writes JSON lines to bench/results/<date>.jsonl.
#
#   bench/run.sh            # full sizes (100M-parameter optimizer, quickstart model)
#   QUICK=1 bench/run.sh    # small sizes, to check the scripts
#
# Needs: a release build (cargo build --release -p trainer), the fortunes corpus
# (scripts/fetch_quickstart_data.sh) and a Python venv with jax and optax in bench/.venv
# (python3 -m venv bench/.venv && bench/.venv/bin/pip install jax optax).
set -euo pipefail
cd "$(dirname "$0")/.."
sirocco=target/release/sirocco
python=bench/.venv/bin/python
plugin=$PWD/third_party/cache/cpu/xla_plugins/xla_cpu_pjrt/xla_cpu_pjrt.so
mkdir -p bench/results
out=bench/results/$(date +%Y-%m-%d).jsonl
: > "$out"

params=100000000
steps=20
train_steps=10
if [ "${QUICK:-}" = 1 ]; then params=4000000; steps=3; train_steps=3; fi

record() { # name, command...
    local name=$1; shift
    echo "== $name" >&2
    local line
    line=$("$@" | tail -n 1)
    echo "{\"bench\": \"$name\", \"result\": $line}" | tee -a "$out"
}

machine=$(printf '{"cpu": "%s", "cores": %s, "memory_gb": %s, "kernel": "%s"}' \
    "$(lscpu | sed -n 's/^Model name: *//p')" "$(nproc)" \
    "$(awk '/MemTotal/ {printf "%.0f", $2/1048576}' /proc/meminfo)" "$(uname -r)")
echo "{\"bench\": \"machine\", \"result\": $machine}" | tee -a "$out"

# Optimizer: Adamax with clipping, decay and cosine, 32 tensors.
record optimizer/sirocco $sirocco bench optimizer --optimizer configs/optimizers/adamax.yaml \
    --params $params --tensors 32 --steps $steps --json
record optimizer/optax-jaxlib $python bench/optax_optimizer.py --params $params --tensors 32 --steps $steps --json
record optimizer/optax-plugin $python bench/optax_optimizer.py --params $params --tensors 32 --steps $steps \
    --plugin "$plugin" --json
# Ablations: optax on the plugin with the multi-output fusion sirocco turns on, and sirocco
# without it.
mof=--xla_backend_extra_options=xla_cpu_use_multi_output_fusion
record optimizer/optax-plugin-mof env XLA_FLAGS=$mof $python bench/optax_optimizer.py --params $params \
    --tensors 32 --steps $steps --plugin "$plugin" --json
record optimizer/sirocco-no-mof env SIROCCO_CPU_MULTI_OUTPUT_FUSION=0 $sirocco bench optimizer \
    --optimizer configs/optimizers/adamax.yaml --params $params --tensors 32 --steps $steps --json

# The same step hand-written in C (one OpenMP pass): what the memory roofline allows in practice.
if gcc -O3 -march=native -ffast-math -fopenmp -o target/fused_adamax bench/fused_adamax.c -lm; then
    record optimizer/fused-c env OMP_NUM_THREADS="$(nproc)" target/fused_adamax $params $steps
fi

# Emission of a 100k-op graph.
record emit/sirocco $sirocco bench emit --ops 100000 --json

# Training: the quickstart model, one CPU device (both cores per matmul).
quickstart=(--config configs/quickstart.yaml --set trainer.runtime.cpu_device_count=1)
record train/sirocco $sirocco bench train "${quickstart[@]}" --steps $train_steps --json
peer=(--hidden 256 --intermediate 704 --layers 4 --heads 4 --kv-heads 2 --seq-len 128 --batch 32 --vocab 257)
record train/jax-jaxlib $python bench/jax_llama.py "${peer[@]}" --steps $train_steps --json
record train/jax-plugin $python bench/jax_llama.py "${peer[@]}" --steps $train_steps --plugin "$plugin" --json
record train/jax-plugin-mof env XLA_FLAGS=$mof $python bench/jax_llama.py "${peer[@]}" --steps $train_steps \
    --plugin "$plugin" --json
record train/sirocco-no-mof env SIROCCO_CPU_MULTI_OUTPUT_FUSION=0 $sirocco bench train "${quickstart[@]}" \
    --steps $train_steps --json

# Compile time against depth: the layer scan keeps it nearly flat.
for layers in 2 12; do
    record compile/sirocco-$layers-layers $sirocco bench train "${quickstart[@]}" \
        --set model.num_layers=$layers --steps 1 --json
done
echo "results in $out" >&2

#!/usr/bin/env bash
# The optimizer benchmark for every built-in type, with XLA:CPU's multi-output fusion as sirocco
# chooses it, forced off and forced on, on 10M f32 parameters in 8 matrices of [1220, 1024] and
# in 8 vectors.
# Writes JSON lines to bench/results/<date>-types.jsonl (see docs/benchmarks.md).
#
#   bench/optimizer_types.sh            # needs a release build (cargo build --release -p trainer)
set -euo pipefail
cd "$(dirname "$0")/.."
sirocco=target/release/sirocco
out=bench/results/$(date +%Y-%m-%d)-types.jsonl
: > "$out"
configs=$(mktemp -d)
trap 'rm -rf "$configs"' EXIT
for type in adamax adam sgd lion rmsprop adafactor; do
    extra=""
    [ "$type" = sgd ] && extra="momentum: 0.9"
    printf 'type: %s\nlr: 1e-3\nweight_decay: 0.1\nwarmup: 0.1\nmax_grad_norm: 1.0\n%s\n' "$type" "$extra" \
        > "$configs/$type.yaml"
    # 8 matrices (the size is a multiple of 1024) and 8 vectors of about 10M parameters in all.
    for params in 9994240 10000000; do
        for fusion in chosen off on; do
            env=()
            [ "$fusion" = off ] && env=(SIROCCO_CPU_MULTI_OUTPUT_FUSION=0)
            [ "$fusion" = on ] && env=(SIROCCO_CPU_MULTI_OUTPUT_FUSION=1)
            line=$(env ${env[@]+"${env[@]}"} "$sirocco" bench optimizer --optimizer "$configs/$type.yaml" \
                --params $params --tensors 8 --steps 20 --json | tail -n 1)
            echo "{\"bench\": \"optimizer-types/$type/$params/$fusion\", \"result\": $line}" | tee -a "$out"
        done
    done
done
echo "results in $out" >&2

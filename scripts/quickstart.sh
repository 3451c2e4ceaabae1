#!/usr/bin/env bash
# The main job: set-up (libclang, the CPU plugin, the fortunes corpus), then the quickstart
# training of configs/quickstart.yaml on the CPU plugin. Metrics, loss.png, TensorBoard events
# and checkpoints land in runs/quickstart/; running it again resumes from the last checkpoint
# (delete runs/quickstart to start over).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/fetch_quickstart_data.sh
cargo run --release -p trainer --bin sirocco -- train --config configs/quickstart.yaml "$@"

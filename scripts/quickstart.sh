#!/usr/bin/env bash
# The main job: set-up, then the quickstart on the CPU PJRT plugin.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo run --release -p trainer --bin sirocco -- devices --cpu-device-count 4

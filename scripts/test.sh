#!/usr/bin/env bash
# The test command: set-up, then every test of the workspace (release build, CPU plugin).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --workspace --release "$@"

#!/usr/bin/env bash
# Installs what building sirocco needs on a fresh Debian/Ubuntu machine with Rust and Python:
# libclang (for bindgen) and pip (to fetch the pinned CPU PJRT plugin), then fetches the plugin.
# Idempotent: a second run does nothing it does not need to.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
    local missing=()
    for package in "$@"; do
        dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "setup: installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

if command -v apt-get >/dev/null 2>&1; then
    apt_install libclang-dev
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
fi
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo not found; install Rust from https://rustup.rs" >&2; exit 1; }
python3 third_party/fetch.py cpu

#!/usr/bin/env bash
# Runs the holdfast demo: two built-in backends and the gateway in front of them, no config
# needed. Installs what is missing first. Extra arguments go to `holdfast demo` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/prereqs.sh
cargo build --release --bin holdfast
exec ./target/release/holdfast demo "$@"

#!/usr/bin/env bash
# The soak on its own: random faults on random backends under load for SECONDS (default 1800,
# half an hour), with the release build; prints failed requests and the gateway's RSS over time.
# Needs root (network namespaces, iptables). Replay a run with HOLDFAST_SOAK_SEED=<printed seed>.
#   tests/faults/soak.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/prereqs.sh
cargo build --release --workspace --locked --bins
HOLDFAST_SOAK_SECONDS=${1:-1800} \
  cargo test --release --locked -p holdfast-tests --test faults soak_random_faults -- --ignored --nocapture

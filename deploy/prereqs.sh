#!/usr/bin/env bash
# Installs what building holdfast needs and is missing: a C toolchain, cmake, pkg-config and
# OpenSSL's headers (for Pingora). As root it runs `apt-get update` once and `apt-get install`;
# otherwise it stops and says exactly what to install. Sourced by demo.sh and tests/run.sh.
set -euo pipefail

need=()
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v c++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
if ! pkg-config --exists openssl 2>/dev/null; then need+=(libssl-dev); fi

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "holdfast: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "holdfast: missing build prerequisites: ${need[*]}" >&2
    echo "install them first, e.g.: sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "holdfast: cargo is missing: install the Rust toolchain named in rust-toolchain.toml (https://rustup.rs)" >&2
  exit 1
fi

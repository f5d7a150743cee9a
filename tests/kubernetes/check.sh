#!/usr/bin/env bash
# Checks deploy/kubernetes offline: renders it as `kubectl apply -k` would (the resources, the
# ConfigMap made from holdfast.toml, the namespace and labels), validates every object against
# the schemas of Kubernetes 1.30 and 1.37 (PyPI's kubernetes-validate, which ships them), checks
# that the parts agree (selectors, ports, probes, grace periods against the config's
# shutdown_delay and grace_period), and runs `holdfast check` on the rendered config.
#   tests/kubernetes/check.sh [HOLDFAST_BINARY]
# kubernetes-validate and PyYAML go into target/kubernetes-venv (from PyPI) when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=target/kubernetes-venv
if ! "$venv/bin/python" -c 'import kubernetes_validate, yaml' 2>/dev/null; then
  echo "holdfast: installing kubernetes-validate into $venv (PyPI)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet 'kubernetes-validate==1.37.0' 'PyYAML>=6'
fi
exec "$venv/bin/python" tests/kubernetes/check.py "${1:-target/debug/holdfast}"

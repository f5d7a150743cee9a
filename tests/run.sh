#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, then formatting, lints, every
# shipped config through `holdfast check`, unit tests and the end-to-end tests (which start the
# real binary in front of real backends on loopback), then the fuzz targets for a bounded time.
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/prereqs.sh

# The fault-matrix tests (tests/tests/faults.rs) need `ip` and `iptables` and root; the HTTP/2
# tests with independent clients need `nghttp` and `curl`; the alert rules and the dashboard
# are checked with `promtool` (Debian's prometheus package); the status page in a real browser,
# headless chromium under its WebDriver (chromium-driver); doctor's firewall tests, `nft`
# (nftables) and a real fail2ban; the install paths, lintian (the Debian package) and podman
# with runc (the container image). As root they are installed when
# missing; elsewhere those tests skip and say why (under CI a missing client fails its test).
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  missing=()
  command -v ip >/dev/null 2>&1 || missing+=(iproute2)
  command -v iptables >/dev/null 2>&1 || missing+=(iptables)
  command -v nghttp >/dev/null 2>&1 || missing+=(nghttp2-client)
  command -v curl >/dev/null 2>&1 || missing+=(curl ca-certificates)
  command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
  command -v chromedriver >/dev/null 2>&1 || missing+=(chromium chromium-driver)
  command -v nft >/dev/null 2>&1 || missing+=(nftables)
  command -v lintian >/dev/null 2>&1 || missing+=(lintian)
  command -v podman >/dev/null 2>&1 || missing+=(podman)
  command -v runc >/dev/null 2>&1 || missing+=(runc)
  command -v man >/dev/null 2>&1 || missing+=(man-db)
  fail2ban_new=false
  command -v fail2ban-client >/dev/null 2>&1 || { missing+=(fail2ban); fail2ban_new=true; }
  if [ ${#missing[@]} -gt 0 ]; then
    echo "holdfast: installing ${missing[*]} for the tests that use them" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # The package may start its own server; only its promtool is used.
    service prometheus stop >/dev/null 2>&1 || true
    # Doctor's test runs its own fail2ban in a namespace; the package's service is not wanted.
    if $fail2ban_new; then service fail2ban stop >/dev/null 2>&1 || true; fi
  fi
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== build"
cargo build --workspace --locked --bins

echo "== holdfast check on every shipped config"
for f in deploy/*.toml deploy/deb/holdfast.toml deploy/container/holdfast.toml; do
  ./target/debug/holdfast check --config "$f"
done

echo "== alert rules and dashboard (promtool)"
tests/prometheus/check.sh

echo "== Kubernetes manifests (offline: kubernetes-validate, holdfast check)"
tests/kubernetes/check.sh target/debug/holdfast

echo "== systemd-analyze verify deploy/holdfast.service"
if ! command -v systemd-analyze >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "holdfast: installing systemd (for systemd-analyze)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null; }
fi
if command -v systemd-analyze >/dev/null 2>&1; then
  # The unit names the installed binary; verify it against the one just built.
  unit_dir=$(mktemp -d)
  sed "s#/usr/local/bin/holdfast#$PWD/target/debug/holdfast#g" deploy/holdfast.service > "$unit_dir/holdfast.service"
  systemd-analyze verify "$unit_dir/holdfast.service"
  rm -rf "$unit_dir"
else
  echo "skipped: systemd-analyze is missing (install Debian's systemd package)"
fi

echo "== tests"
cargo test --workspace --locked

# The fault matrix is #[ignore]d for plain `cargo test` (it needs root); here it runs as root.
echo "== fault matrix"
if [ "$(id -u)" -eq 0 ]; then
  cargo test --locked -p holdfast-tests --test faults -- --ignored --test-threads 1
else
  echo "skipped: the fault matrix needs root (network namespaces, iptables); CI runs it as root"
fi

# The install paths install and run what they build (dpkg, podman): root only, one at a time.
echo "== install paths: the Debian package and the container image"
if [ "$(id -u)" -eq 0 ]; then
  cargo test --locked -p holdfast-tests --test install -- --ignored --test-threads 1 --nocapture
else
  echo "skipped: installing the package and running the image need root; CI runs them as root"
fi

echo "== fuzz: the HTTP/1.1 wire rules, ${HOLDFAST_FUZZ_SECONDS:-20} s per target"
tests/fuzz/run.sh "${HOLDFAST_FUZZ_SECONDS:-20}"

#!/usr/bin/env bash
# Builds holdfast's Debian package: target/debian/holdfast_VERSION-1_ARCH.deb.
#   deploy/deb/build.sh [--deb-version V]   (extra arguments go to cargo-deb)
# Installs cargo-deb (from crates.io) when it is missing. The package: /usr/bin/holdfast (the
# release build), its systemd unit (deploy/holdfast.service with that path), the config the
# package ships (deploy/deb/holdfast.toml) as /etc/holdfast/holdfast.toml, the annotated example,
# logrotate, man pages, and the maintainer scripts of deploy/deb/.
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/prereqs.sh

if ! command -v cargo-deb >/dev/null 2>&1; then
  echo "holdfast: installing cargo-deb (cargo install cargo-deb --locked)" >&2
  cargo install --quiet --locked cargo-deb
fi

# The unit, with the binary where the package puts it.
mkdir -p target/deb/units
sed 's#/usr/local/bin/holdfast#/usr/bin/holdfast#g' deploy/holdfast.service > target/deb/units/holdfast.service

# The man pages, from the command line's definitions.
rm -rf target/deb/man
cargo run --quiet --locked -p holdfast --example manpages -- target/deb/man
gzip -9n target/deb/man/*.1

cargo deb --locked -p holdfast "$@"

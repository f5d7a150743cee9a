#!/usr/bin/env bash
# Builds holdfast's container image, with no image registry: the release binary, the shared
# libraries it links and the CA certificates are staged as a root file system
# (target/container/context), and deploy/container/Containerfile makes the image FROM scratch.
#   deploy/container/build.sh [TAG]     (default: holdfast:VERSION)
# Builds with podman, else buildah, else docker ($CONTAINER_BUILDER names one). podman and
# buildah write the Docker image format: the OCI format has no HEALTHCHECK.
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/prereqs.sh

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
tag=${1:-holdfast:$version}
builder=${CONTAINER_BUILDER:-}
if [ -z "$builder" ]; then
  for b in podman buildah docker; do
    if command -v "$b" >/dev/null 2>&1; then builder=$b; break; fi
  done
fi
if [ -z "$builder" ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "holdfast: installing podman" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends podman >/dev/null
    builder=podman
  else
    echo "holdfast: no container builder: install one, e.g. sudo apt-get install -y podman" >&2
    exit 1
  fi
fi

cargo build --release --locked -p holdfast --bin holdfast
bin=target/release/holdfast

ctx=target/container/context
rm -rf "$ctx"
root=$ctx/rootfs
mkdir -p "$root/usr/bin" "$root/etc/ssl/certs" "$root/etc/holdfast" "$ctx/run/holdfast"
install -m 0755 "$bin" "$root/usr/bin/holdfast"
strip --strip-debug "$root/usr/bin/holdfast"
# Each library the binary links, and the dynamic loader, at the paths ldd names.
for lib in $(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nholdfast:x:65532:65532:holdfast:/nonexistent:/usr/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\nholdfast:x:65532:\n' > "$root/etc/group"
printf 'passwd: files\ngroup: files\nhosts: files dns\n' > "$root/etc/nsswitch.conf"
install -m 0644 deploy/container/holdfast.toml "$root/etc/holdfast/holdfast.toml"
chmod 0700 "$ctx/run/holdfast"

revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
args=(--build-arg "VERSION=$version" --build-arg "REVISION=$revision" -f deploy/container/Containerfile -t "$tag")
case "$builder" in
  podman) podman build --format docker "${args[@]}" "$ctx" ;;
  buildah) buildah bud --format docker "${args[@]}" "$ctx" ;;
  *) "$builder" build "${args[@]}" "$ctx" ;;
esac
echo "holdfast: built $tag with $builder"

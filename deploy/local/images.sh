#!/usr/bin/env bash
# `make images`: the five service images, built with podman from the release binaries,
# offline. The runtime base is RUNTIME_BASE when set; else distroless cc when a registry
# answers; else a base made here from Debian's packages (mmdebstrap: glibc, libgcc,
# zlib, OpenSSL, CA certificates, tzdata; imported once as localhost/orders-base:bookworm-<hash>).
#
# Usage: deploy/local/images.sh build|check
#   build  build the release binaries and the images, print their sizes
#   check  run each image read-only as a non-root user: `--help` must answer (its
#          libraries are there) and the user must not be root
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STATE=${ORDERS_LOCAL_DIR:-$ROOT/.local}
SERVICES=(command-service outbox-relay projector order-processor stats-aggregator)
REPOSITORY=${IMAGE_REPOSITORY:-localhost/orders-platform}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/services/projector/Cargo.toml" | head -n 1)
# The runtime's libraries: glibc, libgcc, zlib, OpenSSL (librdkafka's and PostgreSQL's TLS)
# and the CA certificates, time zones, /etc/services. The base's tag follows the list.
BASE_PACKAGES=libc6,libgcc-s1,zlib1g,libssl3,ca-certificates,tzdata,netbase
LOCAL_BASE=localhost/orders-base:bookworm-$(printf '%s' "$BASE_PACKAGES" | md5sum | cut -c1-8)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$ROOT/deploy/containers/containers.conf}

log() { printf '[images] %s\n' "$*" >&2; }
die() {
  printf '[images] ERROR: %s\n' "$*" >&2
  exit 1
}
# shellcheck source=deploy/local/apt.sh
. "$ROOT/deploy/local/apt.sh"

ensure_tools() {
  local missing=()
  command -v podman >/dev/null || missing+=(podman runc catatonit uidmap)
  command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
  if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi
}

# The runtime base: RUNTIME_BASE, distroless when it can be pulled, else the local one.
runtime_base() {
  if [ -n "${RUNTIME_BASE:-}" ]; then
    echo "$RUNTIME_BASE"
    return
  fi
  local distroless=gcr.io/distroless/cc-debian12:nonroot
  if podman image exists "$distroless" || timeout 20 podman pull -q "$distroless" >/dev/null 2>&1; then
    echo "$distroless"
    return
  fi
  if ! podman image exists "$LOCAL_BASE"; then
    log "no registry answers: making $LOCAL_BASE from Debian's packages (mmdebstrap)"
    local tar=$STATE/images/base.tar
    mkdir -p "$STATE/images"
    mmdebstrap --quiet --variant=extract --include="$BASE_PACKAGES" bookworm "$tar" >&2
    podman import --change 'USER 65532:65532' "$tar" "$LOCAL_BASE" >/dev/null
    rm -f "$tar"
  fi
  echo "$LOCAL_BASE"
}

build() {
  ensure_tools
  local target_dir base revision
  target_dir=$("$ROOT/deploy/local/target-dir.sh")
  log "building the release binaries"
  (cd "$ROOT" && CARGO_TARGET_DIR=$target_dir cargo build --release --locked --bins)
  base=$(runtime_base)
  revision=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  for service in "${SERVICES[@]}"; do
    local context=$STATE/images/$service
    rm -rf "$context" && mkdir -p "$context"
    strip -o "$context/$service" "$target_dir/release/$service"
    podman build -q --target prebuilt \
      --build-arg "SERVICE=$service" --build-arg "RUNTIME_BASE=$base" \
      --build-arg "VERSION=$VERSION" --build-arg "REVISION=$revision" \
      -f "$ROOT/deploy/containers/Containerfile" -t "$REPOSITORY/$service:$VERSION" "$context" >/dev/null
    rm -rf "$context"
  done
  log "images on $base:"
  podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep "^$REPOSITORY/" | sort >&2
}

check() {
  for service in "${SERVICES[@]}"; do
    local image=$REPOSITORY/$service:$VERSION user
    podman run --rm --read-only --cap-drop=ALL --security-opt=no-new-privileges "$image" --help >/dev/null ||
      die "$image does not answer --help"
    user=$(podman image inspect --format '{{.Config.User}}' "$image")
    [ -n "$user" ] && [ "${user%%:*}" != 0 ] && [ "${user%%:*}" != root ] || die "$image runs as root ($user)"
    log "$image: runs read-only as $user"
  done
}

case "${1:-}" in
  build) build ;;
  check) check ;;
  *) die "usage: $0 build|check" ;;
esac

#!/usr/bin/env bash
# Tools the chart's checks need, installed on first use into a cache outside the clone
# (so fresh clones reuse them), from the package registries only:
#   helm     the Helm CLI, built with `go install` from the Go module proxy;
#   compose-check
#            deploy/compose/check (compose-go, the loader of Docker Compose), built with
#            `go build` from the Go module proxy, rebuilt when its sources change;
#   promtool Prometheus' rule checker, taken out of Debian's `prometheus` package
#            (downloaded and unpacked, not installed: no Prometheus server is set up);
#   python   a virtualenv with the pinned Python test tools of
#            deploy/local/requirements-test.txt (kubernetes-validate, pytest, PyYAML, openapi-spec-validator, Schemathesis),
#            rebuilt when that file changes.
#
# Usage: deploy/local/tools.sh helm|compose-check|promtool|python
# Prints the path of the tool's executable (for python: the virtualenv's bin directory)
# on stdout; progress goes to stderr.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TOOLS=${ORDERS_TOOLS_DIR:-$HOME/.cache/orders-platform/tools}
HELM_VERSION=v3.22.0
REQUIREMENTS=$ROOT/deploy/local/requirements-test.txt

log() { printf '[tools] %s\n' "$*" >&2; }
die() {
  printf '[tools] ERROR: %s\n' "$*" >&2
  exit 1
}
# shellcheck source=deploy/local/apt.sh
. "$ROOT/deploy/local/apt.sh"

helm_path() {
  local bin=$TOOLS/helm-$HELM_VERSION/helm
  if [ ! -x "$bin" ]; then
    ensure_go helm
    log "building helm $HELM_VERSION with go install (once; a few minutes)"
    mkdir -p "$TOOLS/helm-$HELM_VERSION"
    GOBIN="$TOOLS/helm-$HELM_VERSION" go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2 ||
      die "go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION failed"
  fi
  echo "$bin"
}

# Go 1.24 or later (helm 3.22 and compose-go need it). Debian 12's own golang-go is 1.19:
# installed when there is no Go at all, it is refused with the same message as any old Go.
ensure_go() {
  command -v go >/dev/null || apt_install golang-go ca-certificates
  local version
  version=$(go env GOVERSION 2>/dev/null | sed 's/^go//') || version=
  [ -n "$version" ] && printf '%s\n1.24\n' "$version" | sort -V -C -r ||
    die "building $1 needs Go 1.24 or later (found: ${version:-none}); install it from https://go.dev/dl and put it on PATH"
}

compose_check_path() {
  local src=$ROOT/deploy/compose/check bin
  bin=$TOOLS/compose-check-$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | md5sum | cut -c1-12)/compose-check
  if [ ! -x "$bin" ]; then
    ensure_go compose-check
    log "building compose-check (once; about a minute)"
    (cd "$src" && go build -o "$bin" .) >&2 || die "go build of deploy/compose/check failed"
  fi
  echo "$bin"
}

promtool_path() {
  local bin=$TOOLS/promtool/usr/bin/promtool
  if [ ! -x "$bin" ]; then
    log "unpacking promtool from Debian's prometheus package (once)"
    local tmp
    tmp=$(mktemp -d)
    trap "rm -rf '$tmp'" EXIT
    if ! (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1); then
      # A machine whose package lists were never fetched.
      as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
      (cd "$tmp" && apt-get download prometheus >&2) || die "apt-get download prometheus failed"
    fi
    rm -rf "$TOOLS/promtool" && mkdir -p "$TOOLS/promtool"
    dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root"
    mkdir -p "$TOOLS/promtool/usr/bin" && mv "$tmp/root/usr/bin/promtool" "$bin"
    rm -rf "$tmp"
  fi
  echo "$bin"
}

python_path() {
  # Keyed by the requirements' content: editing them builds a fresh virtualenv.
  local venv
  venv=$TOOLS/venv-$(md5sum <"$REQUIREMENTS" | cut -c1-12)
  if [ ! -x "$venv/bin/pytest" ]; then
    command -v python3 >/dev/null || apt_install python3
    # Debian splits venv (ensurepip) off into its own package.
    python3 -c 'import ensurepip' 2>/dev/null || apt_install python3-venv
    log "creating the Python test tools' virtualenv in $venv"
    rm -rf "$venv"
    python3 -m venv "$venv" || die "python3 -m venv failed (apt-get install python3-venv)"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$REQUIREMENTS" >&2 || die "pip install failed"
  fi
  echo "$venv/bin"
}

case "${1:-}" in
  helm) helm_path ;;
  compose-check) compose_check_path ;;
  promtool) promtool_path ;;
  python) python_path ;;
  *) die "usage: $0 helm|compose-check|promtool|python" ;;
esac

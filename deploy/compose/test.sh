#!/usr/bin/env bash
# compose.yaml's checks (make compose-test, part of make test), offline:
#   1. compose-check (deploy/compose/check: compose-go, the loader of Docker Compose) loads
#      it: the Compose Specification's schema (unknown keys are errors), merges, variables,
#      dependencies on defined services; the resolved project goes to .local/compose;
#   2. its promises (deploy/compose/tests, pytest): the five services built from the
#      Containerfile, unprivileged and read-only, a grace period above the drain, the
#      chart's ports and databases, each after its topics and its database's migration.
# The containers are not run here: their images need registries this machine cannot
# reach (make k8s-test runs the same service images through the Helm chart instead).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${ORDERS_LOCAL_DIR:-$ROOT/.local}/compose
CHECK=$("$ROOT/deploy/local/tools.sh" compose-check)
PYBIN=$("$ROOT/deploy/local/tools.sh" python)
mkdir -p "$OUT"

sh -n "$ROOT/deploy/compose/topics.sh"
echo "[compose] loading compose.yaml as Docker Compose does"
(cd "$ROOT" && "$CHECK" compose.yaml) >"$OUT/project.json"
echo "[compose] its promises (deploy/compose/tests)"
PROJECT="$OUT/project.json" "$PYBIN/pytest" -q -p no:cacheprovider "$ROOT/deploy/compose/tests"
